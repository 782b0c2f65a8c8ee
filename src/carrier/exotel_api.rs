//! Exotel's Connect Voice AI API (`specs/telephony.md` §3.6 B): places an outbound call whose
//! audio Exotel streams straight to the gateway's WebSocket, no call flow in between.
//!
//! `POST {base}/v1/Accounts/{sid}/Calls/connect.json`, form-encoded, HTTP Basic auth (API key :
//! API token). The answer's keys come capitalised or lowercase (`Call`/`call`, `Sid`/`sid`), so
//! they are read case-insensitively; an error body is `{"RestException":{…}}`. A call is never
//! placed twice: only a refused connection and 429 (Exotel did not act) are retried; a timeout,
//! a broken exchange or a 5xx after the request went out is [`ExotelApiError::OutcomeUnknown`].
//! The API token never appears in `Debug` output or errors. A placed call can be looked up by
//! its id (Call Details, [`ExotelRest::fetch_call`]).

use std::time::Duration;

use super::rest::{Answer, Failure, FormPost, post_form, with_retries};
use super::twilio_api::{RetryPolicy, encode_form};

/// Exotel's API host (Singapore cluster; Mumbai is `https://api.in.exotel.com`).
pub const DEFAULT_BASE_URL: &str = "https://api.exotel.com";
/// Longest `StreamUrl` Exotel takes (characters, query included).
pub const MAX_STREAM_URL_CHARS: usize = 599;
/// Longest `CustomField` (characters).
pub const MAX_CUSTOM_FIELD_CHARS: usize = 128;
/// Longest call Exotel allows (`TimeLimit`, seconds: 4 hours).
pub const MAX_TIME_LIMIT_SECS: u32 = 14_400;
/// Most of Exotel's message kept in an error (characters).
const MAX_MESSAGE_CHARS: usize = 300;

/// Why an Exotel request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExotelApiError {
    /// The request was not sent: an argument is unusable.
    #[error("{0}")]
    Invalid(String),
    /// Exotel refused the request (4xx, or a 5xx it certainly did not act on).
    #[error("HTTP {status}{}: {message}", code.as_ref().map(|c| format!(", code {c}")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// Exotel's code (a number or a name such as `RATE_LIMIT_EXCEEDED`), where given.
        code: Option<String>,
        /// Exotel's message (or the start of the body).
        message: String,
    },
    /// Exotel could not be reached; the request was not sent.
    #[error("{0}")]
    Transport(String),
    /// The request went out but no answer says whether Exotel placed the call.
    #[error("the outcome is unknown ({0})")]
    OutcomeUnknown(String),
    /// Exotel answered success with a body that is not a call.
    #[error("unexpected response: {0}")]
    Response(String),
}

/// Everything the client needs.
#[derive(Clone, PartialEq, Eq)]
pub struct ExotelRestConfig {
    /// The account SID (in the path).
    pub account_sid: String,
    /// API key, Basic auth user.
    pub api_key: String,
    /// API token, Basic auth password.
    pub api_token: String,
    /// `https://api.exotel.com`, or a test server.
    pub base_url: String,
    /// Longest one request may take.
    pub request_timeout: Duration,
    /// How requests Exotel did not act on are retried.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for ExotelRestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExotelRestConfig")
            .field("account_sid", &self.account_sid)
            .field("api_key", &self.api_key)
            .field("api_token", &crate::config::redacted(&self.api_token))
            .field("base_url", &self.base_url)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// A Connect Voice AI call to place: Exotel calls `from` showing `caller_id`, and on answer
/// streams the call to `stream_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExotelConnect {
    /// The person called (E.164, or an Indian number with its STD code).
    pub from: String,
    /// The account's ExoPhone shown to them.
    pub caller_id: String,
    /// `ws://` or `wss://` URL of the gateway's stream (query included, under 600 chars).
    pub stream_url: String,
    /// Where Exotel POSTs the call's progress (`answered`, `terminal`), http(s).
    pub status_callback: Option<String>,
    /// Echoed in the status callback (≤ 128 chars).
    pub custom_field: Option<String>,
    /// Longest the call may last (1–14400 s).
    pub time_limit_secs: Option<u32>,
    /// Ring time (s).
    pub timeout_secs: Option<u32>,
}

impl ExotelConnect {
    /// The form Exotel receives, in order.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form: Vec<(&'static str, String)> = vec![
            ("From", self.from.clone()),
            ("CallerId", self.caller_id.clone()),
            ("StreamUrl", self.stream_url.clone()),
            ("StreamType", "bidirectional".to_owned()),
        ];
        if let Some(callback) = &self.status_callback {
            form.push(("StatusCallback", callback.clone()));
            form.push(("StatusCallbackEvents[0]", "answered".to_owned()));
            form.push(("StatusCallbackEvents[1]", "terminal".to_owned()));
        }
        if let Some(custom) = &self.custom_field {
            form.push(("CustomField", custom.clone()));
        }
        if let Some(secs) = self.time_limit_secs {
            form.push(("TimeLimit", secs.to_string()));
        }
        if let Some(secs) = self.timeout_secs {
            form.push(("TimeOut", secs.to_string()));
        }
        form
    }

    fn check(&self) -> Result<(), ExotelApiError> {
        let phone = |what: &str, n: &str| {
            let digits = n.strip_prefix('+').unwrap_or(n);
            if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
                Ok(())
            } else {
                Err(ExotelApiError::Invalid(format!(
                    "{what} is not a phone number"
                )))
            }
        };
        phone("the number to call", &self.from)?;
        phone("the caller id", &self.caller_id)?;
        let stream = reqwest::Url::parse(&self.stream_url).ok();
        if !stream
            .as_ref()
            .is_some_and(|u| matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some())
        {
            return Err(ExotelApiError::Invalid(
                "the stream URL is not a ws(s) URL".into(),
            ));
        }
        if self.stream_url.chars().count() > MAX_STREAM_URL_CHARS {
            return Err(ExotelApiError::Invalid(format!(
                "the stream URL is over {MAX_STREAM_URL_CHARS} characters"
            )));
        }
        if let Some(callback) = &self.status_callback
            && !reqwest::Url::parse(callback)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        {
            return Err(ExotelApiError::Invalid(
                "the status callback is not an http(s) URL".into(),
            ));
        }
        if let Some(custom) = &self.custom_field
            && custom.chars().count() > MAX_CUSTOM_FIELD_CHARS
        {
            return Err(ExotelApiError::Invalid(format!(
                "the custom field is over {MAX_CUSTOM_FIELD_CHARS} characters"
            )));
        }
        if let Some(secs) = self.time_limit_secs
            && !(1..=MAX_TIME_LIMIT_SECS).contains(&secs)
        {
            return Err(ExotelApiError::Invalid(format!(
                "time limit {secs} s is not 1–{MAX_TIME_LIMIT_SECS} s"
            )));
        }
        if let Some(secs) = self.timeout_secs
            && !(1..=600).contains(&secs)
        {
            return Err(ExotelApiError::Invalid(format!(
                "ring timeout {secs} s is not 1–600 s"
            )));
        }
        Ok(())
    }
}

/// A call as Exotel reports it once accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExotelCall {
    /// Exotel's call id.
    pub sid: String,
    /// `queued`, `in-progress`, … as sent.
    pub status: Option<String>,
    /// The number called, as Exotel formats it.
    pub from: Option<String>,
    /// `outbound-api`.
    pub direction: Option<String>,
}

/// The value of `key` in `object`, the key matched case-insensitively.
fn get_ci<'a>(object: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    object
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn text_ci(object: &serde_json::Value, key: &str) -> Option<String> {
    match get_ci(object, key)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a success body: `{"Call":{"Sid":…}}` in any key case.
pub fn parse_call(body: &str) -> Result<ExotelCall, ExotelApiError> {
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| ExotelApiError::Response(format!("not JSON: {e}")))?;
    let call = get_ci(&value, "Call")
        .filter(|c| c.is_object())
        .ok_or_else(|| ExotelApiError::Response("no Call object".into()))?;
    let sid = text_ci(call, "Sid").ok_or_else(|| ExotelApiError::Response("no call Sid".into()))?;
    Ok(ExotelCall {
        sid,
        status: text_ci(call, "Status"),
        from: text_ci(call, "From"),
        direction: text_ci(call, "Direction"),
    })
}

/// The error for an HTTP error status and its body (`{"RestException":{Status,Message,Code}}`,
/// in any key case; other bodies give their start or the reason phrase).
pub fn parse_error(status: u16, body: &str) -> ExotelApiError {
    let value = serde_json::from_str::<serde_json::Value>(body).ok();
    let exception = value.as_ref().and_then(|v| get_ci(v, "RestException"));
    let code = exception.and_then(|e| text_ci(e, "Code"));
    let message = exception
        .and_then(|e| text_ci(e, "Message"))
        .unwrap_or_else(|| {
            let text = body.trim();
            if text.is_empty() || text.starts_with('{') {
                reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("error")
                    .to_owned()
            } else {
                text.to_owned()
            }
        });
    let message = match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message,
    };
    ExotelApiError::Api {
        status,
        code,
        message,
    }
}

/// An Exotel REST client: one connection pool, shared by every call.
#[derive(Clone)]
pub struct ExotelRest {
    config: ExotelRestConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for ExotelRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExotelRest")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ExotelRest {
    /// A client for `config` (checked here: SID, key and token, base URL).
    pub fn new(config: ExotelRestConfig) -> Result<ExotelRest, ExotelApiError> {
        let id_like = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !id_like(&config.account_sid) {
            return Err(ExotelApiError::Invalid(
                "the account SID is empty or not a plain identifier".into(),
            ));
        }
        for (what, value) in [
            ("API key", &config.api_key),
            ("API token", &config.api_token),
        ] {
            if value.is_empty() || value.chars().any(|c| c.is_control() || c == ':') {
                return Err(ExotelApiError::Invalid(format!(
                    "the {what} is empty or has characters Basic auth cannot carry"
                )));
            }
        }
        if !reqwest::Url::parse(&config.base_url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        {
            return Err(ExotelApiError::Invalid(format!(
                "base URL {:?} is not an http(s) URL",
                config.base_url
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ExotelApiError::Invalid(format!("HTTP client: {e}")))?;
        Ok(ExotelRest { config, http })
    }

    /// Places a Connect Voice AI call (§3.6 B). Retried only when Exotel certainly did not act
    /// (a refused connection, 429); a timeout, broken exchange or 5xx is
    /// [`ExotelApiError::OutcomeUnknown`].
    pub async fn connect(&self, call: &ExotelConnect) -> Result<ExotelCall, ExotelApiError> {
        call.check()?;
        let form = call.form();
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = encode_form(&pairs);
        let url = format!(
            "{}/v1/Accounts/{}/Calls/connect.json",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid
        );
        let text = with_retries(
            &self.config.retry,
            || self.attempt(&url, &body),
            |attempts, delay, error| {
                tracing::info!(attempts, delay_ms = delay.as_millis() as u64, error = %error, "exotel connect failed; retrying");
            },
            |attempts, error| tracing::warn!(attempts, error = %error, "exotel connect failed"),
        )
        .await?;
        parse_call(&text)
    }

    async fn attempt(&self, url: &str, body: &str) -> Result<String, Failure<ExotelApiError>> {
        let timeout_ms = self.config.request_timeout.as_millis() as u64;
        let transport = |e: reqwest::Error| {
            if e.is_connect() {
                Failure {
                    error: ExotelApiError::Transport(e.to_string()),
                    retryable: true,
                    retry_after: None,
                }
            } else {
                let reason = if e.is_timeout() {
                    format!("no answer within {timeout_ms} ms")
                } else {
                    e.to_string()
                };
                Failure {
                    error: ExotelApiError::OutcomeUnknown(reason),
                    retryable: false,
                    retry_after: None,
                }
            }
        };
        let Answer {
            status,
            retry_after,
            body: text,
        } = post_form(
            &self.http,
            FormPost {
                url,
                user: &self.config.api_key,
                password: &self.config.api_token,
                form: body.to_owned(),
                timeout: self.config.request_timeout,
            },
        )
        .await
        .map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let error = parse_error(status, &text);
        if status >= 500 {
            return Err(Failure {
                error: ExotelApiError::OutcomeUnknown(error.to_string()),
                retryable: false,
                retry_after: None,
            });
        }
        Err(Failure {
            retryable: status == 429,
            error,
            retry_after,
        })
    }
}

/// A call as Exotel's Call Details API reports it (`GET /v1/Accounts/{sid}/Calls/{CallSid}.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExotelCallDetails {
    /// Exotel's call id.
    pub sid: String,
    /// Exotel's status (`queued`, `in-progress`, `completed`, `failed`, `busy`, `no-answer`).
    pub status: Option<String>,
    /// Seconds the call lasted, once over.
    pub duration_secs: Option<i64>,
    /// Who answered, where Exotel says (`NA` is left out).
    pub answered_by: Option<String>,
}

impl ExotelCallDetails {
    /// The stored status for Exotel's; `None` when missing or unknown.
    pub fn call_status(&self) -> Option<crate::store::calls::CallStatus> {
        self.status
            .as_deref()
            .and_then(super::webhook::parse_exotel_status)
    }
}

/// Reads a Call Details body: `{"Call":{"Sid":…,"Status":…,"Duration":…}}` in any key case.
pub fn parse_call_details(body: &str) -> Result<ExotelCallDetails, ExotelApiError> {
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| ExotelApiError::Response(format!("not JSON: {e}")))?;
    let call = get_ci(&value, "Call")
        .filter(|c| c.is_object())
        .ok_or_else(|| ExotelApiError::Response("no Call object".into()))?;
    let sid = text_ci(call, "Sid").ok_or_else(|| ExotelApiError::Response("no call Sid".into()))?;
    Ok(ExotelCallDetails {
        sid,
        status: text_ci(call, "Status"),
        duration_secs: text_ci(call, "Duration").and_then(|d| d.trim().parse().ok()),
        answered_by: text_ci(call, "AnsweredBy")
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| !a.is_empty() && a != "na"),
    })
}

impl ExotelRest {
    /// Looks one call up (Call Details, §3.6); `None` when Exotel has no such call (404).
    /// Reads are repeated on a refused connection, 429 and 5xx.
    pub async fn fetch_call(
        &self,
        call_sid: &str,
    ) -> Result<Option<ExotelCallDetails>, ExotelApiError> {
        if call_sid.is_empty()
            || call_sid.len() > 128
            || !call_sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ExotelApiError::Invalid(
                "the call id is empty or not a plain identifier".into(),
            ));
        }
        let url = format!(
            "{}/v1/Accounts/{}/Calls/{call_sid}.json",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid
        );
        let attempt = || async {
            let answer = super::rest::get_json(
                &self.http,
                &url,
                &self.config.api_key,
                &self.config.api_token,
                self.config.request_timeout,
            )
            .await
            .map_err(|e| Failure {
                retryable: e.is_connect(),
                error: ExotelApiError::Transport(e.to_string()),
                retry_after: None,
            })?;
            if (200..300).contains(&answer.status) {
                return Ok(Some(answer.body));
            }
            if answer.status == 404 {
                return Ok(None);
            }
            Err(Failure {
                retryable: answer.status == 429 || answer.status >= 500,
                error: parse_error(answer.status, &answer.body),
                retry_after: answer.retry_after,
            })
        };
        let text = with_retries(
            &self.config.retry,
            attempt,
            |attempts, delay, error| {
                tracing::info!(attempts, delay_ms = delay.as_millis() as u64, error = %error, "exotel call lookup failed; retrying");
            },
            |attempts, error| tracing::warn!(attempts, error = %error, "exotel call lookup failed"),
        )
        .await?;
        text.as_deref().map(parse_call_details).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse_in_either_key_case() {
        let upper = r#"{"Call": {"Sid": "a1b2", "Status": "in-progress", "From": "09876543210", "Direction": "outbound-api", "AnsweredBy": null}}"#;
        assert_eq!(
            parse_call(upper).unwrap(),
            ExotelCall {
                sid: "a1b2".into(),
                status: Some("in-progress".into()),
                from: Some("09876543210".into()),
                direction: Some("outbound-api".into()),
            }
        );
        let lower = r#"{"call": {"sid": "c3", "status": "queued"}}"#;
        assert_eq!(parse_call(lower).unwrap().sid, "c3");
        assert!(matches!(
            parse_call(r#"{"Call": {"Status": "queued"}}"#),
            Err(ExotelApiError::Response(m)) if m.contains("Sid")
        ));
        assert!(matches!(
            parse_call("<xml/>"),
            Err(ExotelApiError::Response(_))
        ));
        assert!(matches!(
            parse_call(r#"{"Call": "x"}"#),
            Err(ExotelApiError::Response(_))
        ));
    }

    #[test]
    fn rest_exceptions_keep_code_and_message() {
        assert_eq!(
            parse_error(
                429,
                r#"{"RestException":{"Status":429,"Message":"Rate limit exceeded","Code":"RATE_LIMIT_EXCEEDED"}}"#
            ),
            ExotelApiError::Api {
                status: 429,
                code: Some("RATE_LIMIT_EXCEEDED".into()),
                message: "Rate limit exceeded".into(),
            }
        );
        assert_eq!(
            parse_error(
                400,
                r#"{"restexception":{"code":34001,"message":"Invalid From"}}"#
            )
            .to_string(),
            "HTTP 400, code 34001: Invalid From"
        );
        assert_eq!(parse_error(403, "").to_string(), "HTTP 403: Forbidden");
        assert_eq!(
            parse_error(401, "Unauthorized access").to_string(),
            "HTTP 401: Unauthorized access"
        );
    }

    fn connect() -> ExotelConnect {
        ExotelConnect {
            from: "+919876543210".into(),
            caller_id: "08012345678".into(),
            stream_url: "wss://gw.example.com/stream/exotel?call=1".into(),
            status_callback: Some("https://gw.example.com/exotel/status".into()),
            custom_field: Some("call=1".into()),
            time_limit_secs: Some(600),
            timeout_secs: Some(30),
        }
    }

    #[test]
    fn the_form_names_every_parameter() {
        let form = connect().form();
        let names: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "From",
                "CallerId",
                "StreamUrl",
                "StreamType",
                "StatusCallback",
                "StatusCallbackEvents[0]",
                "StatusCallbackEvents[1]",
                "CustomField",
                "TimeLimit",
                "TimeOut"
            ]
        );
        assert_eq!(form[3].1, "bidirectional");
    }

    #[test]
    fn bad_calls_are_refused_before_sending() {
        let bad = |edit: fn(&mut ExotelConnect)| {
            let mut c = connect();
            edit(&mut c);
            c.check().unwrap_err()
        };
        bad(|c| c.from = "not a number".into());
        bad(|c| c.caller_id = String::new());
        bad(|c| c.stream_url = "https://gw/stream".into());
        bad(|c| c.stream_url = format!("wss://gw/{}", "a".repeat(600)));
        bad(|c| c.status_callback = Some("ftp://x".into()));
        bad(|c| c.custom_field = Some("x".repeat(129)));
        bad(|c| c.time_limit_secs = Some(14_401));
        bad(|c| c.timeout_secs = Some(0));
        assert!(connect().check().is_ok());
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let client = ExotelRest::new(ExotelRestConfig {
            account_sid: "acme1".into(),
            api_key: "key".into(),
            api_token: "s3cret".into(),
            base_url: "http://127.0.0.1:9".into(),
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy {
                max_attempts: 1,
                initial_backoff: Duration::from_millis(10),
                budget: Duration::ZERO,
            },
        })
        .unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
    }
}
