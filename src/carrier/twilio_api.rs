//! Twilio's REST API for dialing and live-call control (`specs/telephony.md` §2): place a call
//! (Calls create, §2.2), hang up or cancel it and redirect it to new TwiML (Calls update, §2.3),
//! and send a text message (Messages, §2.4); look a call up (Calls fetch and list), to learn
//! whether a call whose create went unanswered was placed after all.
//!
//! Requests are form-encoded with HTTP Basic auth (Account SID : Auth Token) and ask for JSON.
//! A Twilio error body (`code`, `message`, `more_info`, `status`, §2.5) becomes
//! [`TwilioApiError::Api`]. Retries are bounded by [`RetryPolicy`]: a request Twilio did not
//! process (connect failure, 429 / 20429) is retried; a 5xx only when repeating the request
//! is harmless (a redirect to the same TwiML), never for a text message, which could be sent
//! twice. Placing a call is never repeated once Twilio may have acted on it: a timeout, a
//! broken exchange or a 5xx after the request went out is [`TwilioApiError::OutcomeUnknown`],
//! so a caller can look the call up rather than dial the person twice. Hanging up a call that
//! has already ended (404 / 20404, or 21220 "not in a state that allows this update") is
//! [`TwilioApiError::CallNotLive`]. The auth token never appears in `Debug` output or errors.

use std::time::Duration;

use serde::Deserialize;

use super::rest::{Answer, Failure, FormPost, post_form, with_retries};

/// Twilio's API host.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// The API version in every path.
pub const API_VERSION: &str = "2010-04-01";
/// Longest text message body Twilio takes (characters).
pub const MAX_SMS_CHARS: usize = 1600;
/// Most of Twilio's error message kept in an error (characters).
const MAX_MESSAGE_CHARS: usize = 300;

/// Why a Twilio request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwilioApiError {
    /// The request was not sent: an argument is unusable.
    #[error("{0}")]
    Invalid(String),
    /// Twilio answered with an error status.
    #[error("HTTP {status}{}: {message}", code_text(*.code))]
    Api {
        /// HTTP status.
        status: u16,
        /// Twilio's error code (`20404`, `21220`, …), where the body has one.
        code: Option<u32>,
        /// Twilio's message (or the start of a non-JSON body).
        message: String,
        /// Twilio's documentation link for the code, where given.
        more_info: Option<String>,
    },
    /// Twilio could not be reached, or the exchange broke off.
    #[error("{0}")]
    Transport(String),
    /// No complete answer within the request timeout.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// Twilio answered success with a body that is not the documented resource.
    #[error("unexpected response: {0}")]
    Response(String),
    /// The request went out but no answer says whether Twilio acted on it (a timeout, a broken
    /// exchange, a 5xx). For a call create, the call may or may not have been placed.
    #[error("{operation}: the outcome is unknown ({reason})")]
    OutcomeUnknown {
        /// `calls.create`.
        operation: &'static str,
        /// What happened to the exchange.
        reason: String,
    },
    /// The call is gone or already over (404 / 20404, or 21220): nothing left to end.
    #[error("the call is not live: HTTP {status}{}: {message}", code_text(*.code))]
    CallNotLive {
        /// HTTP status.
        status: u16,
        /// Twilio's error code.
        code: Option<u32>,
        /// Twilio's message.
        message: String,
    },
}

impl TwilioApiError {
    /// A summary for logs, without Twilio's message text (it may quote phone numbers).
    pub fn log_summary(&self) -> String {
        match self {
            TwilioApiError::Invalid(_) => "invalid request".to_owned(),
            TwilioApiError::Api { status, code, .. } => {
                format!("HTTP {status}{}", code_text(*code))
            }
            TwilioApiError::Transport(message) => message.clone(),
            TwilioApiError::Timeout(ms) => format!("no answer within {ms} ms"),
            TwilioApiError::Response(_) => "unexpected response body".to_owned(),
            TwilioApiError::OutcomeUnknown { operation, .. } => {
                format!("{operation}: outcome unknown")
            }
            TwilioApiError::CallNotLive { status, code, .. } => {
                format!("call not live: HTTP {status}{}", code_text(*code))
            }
        }
    }

    /// Whether Twilio may have acted on the request although it failed (see
    /// [`TwilioApiError::OutcomeUnknown`]).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, TwilioApiError::OutcomeUnknown { .. })
    }
}

fn code_text(code: Option<u32>) -> String {
    code.map(|c| format!(", code {c}")).unwrap_or_default()
}

/// Twilio's error body (§2.5). Every field is optional: a proxy in between may answer with
/// something else entirely.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default, deserialize_with = "code_number")]
    code: Option<u32>,
    message: Option<String>,
    more_info: Option<String>,
}

/// A code given as a number or as a string of digits.
fn code_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// The error for an HTTP error status and its body.
pub fn parse_error(status: u16, body: &str) -> TwilioApiError {
    let parsed = serde_json::from_str::<ErrorBody>(body).ok();
    let (code, message, more_info) = match parsed {
        Some(e) => (e.code, e.message, e.more_info),
        None => (None, None, None),
    };
    let message = message.filter(|m| !m.trim().is_empty()).unwrap_or_else(|| {
        let text = body.trim();
        if text.is_empty() || text.starts_with('{') {
            reason_phrase(status).to_owned()
        } else {
            text.to_owned()
        }
    });
    TwilioApiError::Api {
        status,
        code,
        message: clip(&message, MAX_MESSAGE_CHARS),
        more_info,
    }
}

fn reason_phrase(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

fn clip(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `application/x-www-form-urlencoded` of `pairs`, in order (a repeated name is a repeated
/// key): `A–Z a–z 0–9 * - . _` stay, a space becomes `+`, every other UTF-8 byte is `%XX`.
pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(name, &mut out);
        out.push('=');
        encode_component(value, &mut out);
    }
    out
}

fn encode_component(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0F)]));
            }
        }
    }
}

/// Whether `sid` is a Twilio SID of the given kind: the two-letter `prefix` and 32 hex digits.
pub fn is_sid(prefix: &str, sid: &str) -> bool {
    sid.len() == prefix.len() + 32
        && sid.starts_with(prefix)
        && sid[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `number` is strict E.164: `+`, a first digit 1–9, 7 to 15 digits in all.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// How failed requests are retried: at most `max_attempts` in all, waits doubling from
/// `initial_backoff` (or Twilio's `Retry-After`, if longer), all waits together within `budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Most time spent waiting between attempts, summed.
    pub budget: Duration,
}

impl RetryPolicy {
    /// The wait before the next attempt, after `attempts` attempts failed and `waited` was
    /// spent waiting so far; `None` when the attempts or the budget are used up (a
    /// `Retry-After` longer than what is left of the budget ends the retries too).
    pub fn delay(
        &self,
        attempts: u32,
        waited: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doubling = 1u32 << attempts.saturating_sub(1).min(16);
        let backoff = self.initial_backoff.saturating_mul(doubling);
        let delay = backoff.max(retry_after.unwrap_or_default());
        (waited.saturating_add(delay) <= self.budget).then_some(delay)
    }
}

/// A `Retry-After` value in seconds (whole or fractional). An HTTP date, or anything else, is
/// `None`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && (0.0..=86_400.0).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

/// Everything the client needs.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioRestConfig {
    /// The account (`AC…`), Basic auth user.
    pub account_sid: String,
    /// The account's auth token, Basic auth password.
    pub auth_token: String,
    /// `https://api.twilio.com`, or a test server.
    pub base_url: String,
    /// Longest one request may take, connect to last body byte.
    pub request_timeout: Duration,
    /// How failed requests are retried.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for TwilioRestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioRestConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &crate::config::redacted(&self.auth_token))
            .field("base_url", &self.base_url)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// A call as Twilio reports it after an update.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CallResource {
    /// `CA…`.
    pub sid: String,
    /// `queued`, `ringing`, `in-progress`, `completed`, ….
    #[serde(default)]
    pub status: String,
}

/// A message as Twilio reports it once accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageResource {
    /// `SM…` (`MM…` for MMS).
    pub sid: String,
    /// `accepted`, `queued`, ….
    #[serde(default)]
    pub status: String,
    /// Segments the body was split into (Twilio sends a string).
    #[serde(default)]
    pub num_segments: Option<String>,
}

/// How Twilio should tell a person from an answering machine (`MachineDetection`, §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineDetection {
    /// `Enable`: the verdict as soon as Twilio knows (machines report `machine_start`).
    Enable,
    /// `DetectMessageEnd`: for a machine, wait for the end of the greeting (`machine_end_*`).
    DetectMessageEnd,
}

impl MachineDetection {
    /// The parameter value.
    pub const fn as_str(self) -> &'static str {
        match self {
            MachineDetection::Enable => "Enable",
            MachineDetection::DetectMessageEnd => "DetectMessageEnd",
        }
    }
}

/// Longest ring time Twilio takes (`Timeout`, seconds).
pub const MAX_RING_SECS: u32 = 600;
/// Longest call Twilio allows (`TimeLimit`, seconds: 24 hours).
pub const MAX_TIME_LIMIT_SECS: u32 = 86_400;

/// An outbound call to place (Calls create, §2.2). When answered, Twilio POSTs to `url` for
/// TwiML; progress (`initiated`, `ringing`, `answered`, `completed`) is POSTed to
/// `status_callback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCall {
    /// The account placing the call: the configured one or a subaccount.
    pub account_sid: String,
    /// The person called, E.164.
    pub to: String,
    /// One of the account's numbers, E.164.
    pub from: String,
    /// Where Twilio fetches the call's TwiML on answer (POST), http(s).
    pub url: String,
    /// Where Twilio POSTs call progress, http(s).
    pub status_callback: String,
    /// Ring time in seconds (1–600); `None`: Twilio's 60.
    pub timeout_secs: Option<u32>,
    /// Longest the call may last in seconds (1–86400); `None`: Twilio's default (4 h).
    pub time_limit_secs: Option<u32>,
    /// Record the call.
    pub record: bool,
    /// Answering machine detection; `None`: off.
    pub machine_detection: Option<MachineDetection>,
    /// With machine detection: run it in the background and POST the verdict here (`AsyncAmd`)
    /// instead of holding the TwiML request until it is known.
    pub async_amd_callback: Option<String>,
}

impl CreateCall {
    /// The form Twilio receives, in order; `StatusCallbackEvent` is repeated once per event.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form: Vec<(&'static str, String)> = vec![
            ("To", self.to.clone()),
            ("From", self.from.clone()),
            ("Url", self.url.clone()),
            ("Method", "POST".to_owned()),
            ("StatusCallback", self.status_callback.clone()),
        ];
        for event in ["initiated", "ringing", "answered", "completed"] {
            form.push(("StatusCallbackEvent", event.to_owned()));
        }
        form.push(("StatusCallbackMethod", "POST".to_owned()));
        if let Some(secs) = self.timeout_secs {
            form.push(("Timeout", secs.to_string()));
        }
        if let Some(secs) = self.time_limit_secs {
            form.push(("TimeLimit", secs.to_string()));
        }
        if self.record {
            form.push(("Record", "true".to_owned()));
        }
        if let Some(detection) = self.machine_detection {
            form.push(("MachineDetection", detection.as_str().to_owned()));
            if let Some(callback) = &self.async_amd_callback {
                form.push(("AsyncAmd", "true".to_owned()));
                form.push(("AsyncAmdStatusCallback", callback.clone()));
                form.push(("AsyncAmdStatusCallbackMethod", "POST".to_owned()));
            }
        }
        form
    }

    /// Why Twilio would refuse it, checked before any request.
    fn check(&self) -> Result<(), TwilioApiError> {
        check_sid("account", "AC", &self.account_sid)?;
        if !is_e164(&self.to) {
            return Err(TwilioApiError::Invalid(
                "the number to call is not an E.164 number".into(),
            ));
        }
        if !is_e164(&self.from) {
            return Err(TwilioApiError::Invalid(
                "the calling number is not an E.164 number".into(),
            ));
        }
        if self.to == self.from {
            return Err(TwilioApiError::Invalid(
                "the number to call is the calling number".into(),
            ));
        }
        check_url("Url", &self.url)?;
        check_url("StatusCallback", &self.status_callback)?;
        if let Some(callback) = &self.async_amd_callback {
            if self.machine_detection.is_none() {
                return Err(TwilioApiError::Invalid(
                    "an AMD callback needs machine detection".into(),
                ));
            }
            check_url("AsyncAmdStatusCallback", callback)?;
        }
        if let Some(secs) = self.timeout_secs
            && !(1..=MAX_RING_SECS).contains(&secs)
        {
            return Err(TwilioApiError::Invalid(format!(
                "ring timeout {secs} s is not 1–{MAX_RING_SECS} s"
            )));
        }
        if let Some(secs) = self.time_limit_secs
            && !(1..=MAX_TIME_LIMIT_SECS).contains(&secs)
        {
            return Err(TwilioApiError::Invalid(format!(
                "time limit {secs} s is not 1–{MAX_TIME_LIMIT_SECS} s"
            )));
        }
        Ok(())
    }
}

/// Whether `url` is an absolute http(s) URL with a host Twilio accepts (no underscore).
fn check_url(name: &str, url: &str) -> Result<(), TwilioApiError> {
    match reqwest::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https")
                && parsed.host_str().is_some_and(|h| !h.contains('_')) =>
        {
            Ok(())
        }
        _ => Err(TwilioApiError::Invalid(format!(
            "{name} {:?} is not an http(s) URL with a valid host",
            clip(url, 80)
        ))),
    }
}

/// A call as Twilio reports it once created (the 201 body of §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreatedCall {
    /// `CA…`.
    pub sid: String,
    /// The account it belongs to.
    #[serde(default)]
    pub account_sid: String,
    /// `queued` (usually), `ringing`, ….
    #[serde(default)]
    pub status: String,
    /// The called number.
    #[serde(default)]
    pub to: Option<String>,
    /// The calling number.
    #[serde(default)]
    pub from: Option<String>,
    /// `outbound-api`.
    #[serde(default)]
    pub direction: Option<String>,
    /// Milliseconds the call waited for the account's calls-per-second limit (a string).
    #[serde(default)]
    pub queue_time: Option<String>,
}

/// A Twilio REST client: one connection pool, shared by every call.
#[derive(Clone)]
pub struct TwilioRest {
    config: TwilioRestConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioRest")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One request, for the retry loop.
struct Request<'a> {
    /// For logs: `calls.update`, `messages.create`.
    operation: &'static str,
    /// Path after the base URL.
    path: String,
    /// The encoded form.
    form: String,
    /// Whether repeating it after Twilio may have acted on it is harmless.
    idempotent: bool,
    /// Whether a failure after the request went out is [`TwilioApiError::OutcomeUnknown`]
    /// (rather than the timeout, transport or HTTP error itself).
    unknown_outcome: bool,
    /// The account in the path (for logs).
    account_sid: &'a str,
}

impl TwilioRest {
    /// A client for `config` (checked here: SID shape, token, base URL).
    pub fn new(config: TwilioRestConfig) -> Result<TwilioRest, TwilioApiError> {
        if !is_sid("AC", &config.account_sid) {
            return Err(TwilioApiError::Invalid(format!(
                "account SID {:?} is not AC followed by 32 hex digits",
                config.account_sid
            )));
        }
        if config.auth_token.is_empty()
            || config
                .auth_token
                .chars()
                .any(|c| c.is_control() || c == ':')
        {
            return Err(TwilioApiError::Invalid(
                "the auth token is empty or has characters Basic auth cannot carry".into(),
            ));
        }
        match reqwest::Url::parse(&config.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
            _ => {
                return Err(TwilioApiError::Invalid(format!(
                    "base URL {:?} is not an http(s) URL",
                    config.base_url
                )));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| TwilioApiError::Invalid(format!("HTTP client: {e}")))?;
        Ok(TwilioRest { config, http })
    }

    /// The configured account (`AC…`).
    pub fn account_sid(&self) -> &str {
        &self.config.account_sid
    }

    /// Replaces a live call's TwiML with `twiml` (Calls update with `Twiml`, §2.3): Twilio
    /// leaves the current verb (a `<Connect><Stream>` ends) and runs the new document.
    /// `account_sid` is the call's account: the configured one or one of its subaccounts.
    pub async fn redirect_call(
        &self,
        account_sid: &str,
        call_sid: &str,
        twiml: &str,
    ) -> Result<CallResource, TwilioApiError> {
        check_sid("account", "AC", account_sid)?;
        check_sid("call", "CA", call_sid)?;
        let chars = twiml.chars().count();
        if chars > super::twiml::MAX_TWIML_CHARS {
            return Err(TwilioApiError::Invalid(format!(
                "TwiML of {chars} characters is over Twilio's {} limit",
                super::twiml::MAX_TWIML_CHARS
            )));
        }
        let body = self
            .post(Request {
                operation: "calls.update",
                path: format!("/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}.json"),
                form: encode_form(&[("Twiml", twiml)]),
                idempotent: true,
                unknown_outcome: false,
                account_sid,
            })
            .await?;
        serde_json::from_str(&body)
            .map_err(|e| TwilioApiError::Response(format!("call resource: {e}")))
    }

    /// Sends `body` to `to` from `from` (Messages create, §2.4). Both numbers are E.164;
    /// the body is 1 to 1600 characters.
    pub async fn send_sms(
        &self,
        account_sid: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> Result<MessageResource, TwilioApiError> {
        check_sid("account", "AC", account_sid)?;
        if !is_e164(to) {
            return Err(TwilioApiError::Invalid(
                "the recipient is not an E.164 number".into(),
            ));
        }
        if !is_e164(from) {
            return Err(TwilioApiError::Invalid(
                "the sending number is not an E.164 number".into(),
            ));
        }
        let chars = body.chars().count();
        if body.trim().is_empty() {
            return Err(TwilioApiError::Invalid("the message body is empty".into()));
        }
        if chars > MAX_SMS_CHARS {
            return Err(TwilioApiError::Invalid(format!(
                "the message body is {chars} characters; Twilio takes at most {MAX_SMS_CHARS}"
            )));
        }
        let response = self
            .post(Request {
                operation: "messages.create",
                path: format!("/{API_VERSION}/Accounts/{account_sid}/Messages.json"),
                form: encode_form(&[("To", to), ("From", from), ("Body", body)]),
                idempotent: false,
                unknown_outcome: false,
                account_sid,
            })
            .await?;
        serde_json::from_str(&response)
            .map_err(|e| TwilioApiError::Response(format!("message resource: {e}")))
    }

    /// Places an outbound call (Calls create, §2.2). It is never sent twice once Twilio may
    /// have acted on it: only a refused connection and 429 / 20429 are retried; a timeout, a
    /// broken exchange or a 5xx is [`TwilioApiError::OutcomeUnknown`].
    pub async fn create_call(&self, call: &CreateCall) -> Result<CreatedCall, TwilioApiError> {
        call.check()?;
        let form = call.form();
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let account_sid = call.account_sid.as_str();
        let body = self
            .post(Request {
                operation: "calls.create",
                path: format!("/{API_VERSION}/Accounts/{account_sid}/Calls.json"),
                form: encode_form(&pairs),
                idempotent: false,
                unknown_outcome: true,
                account_sid,
            })
            .await?;
        let created: CreatedCall = serde_json::from_str(&body)
            .map_err(|e| TwilioApiError::Response(format!("call resource: {e}")))?;
        if !is_sid("CA", &created.sid) {
            return Err(TwilioApiError::Response(format!(
                "call SID {:?} is not CA followed by 32 hex digits",
                clip(&created.sid, 40)
            )));
        }
        Ok(created)
    }

    /// Ends a call in any state (Calls update with `Status=completed`, §2.3). A call that is
    /// gone or already over is [`TwilioApiError::CallNotLive`].
    pub async fn hangup_call(
        &self,
        account_sid: &str,
        call_sid: &str,
    ) -> Result<CallResource, TwilioApiError> {
        self.set_status(account_sid, call_sid, "completed").await
    }

    /// Cancels a call that is still queued or ringing (Calls update with `Status=canceled`,
    /// §2.3). A call that was answered, is gone or is over is [`TwilioApiError::CallNotLive`]
    /// (an answered call needs [`TwilioRest::hangup_call`]).
    pub async fn cancel_call(
        &self,
        account_sid: &str,
        call_sid: &str,
    ) -> Result<CallResource, TwilioApiError> {
        self.set_status(account_sid, call_sid, "canceled").await
    }

    async fn set_status(
        &self,
        account_sid: &str,
        call_sid: &str,
        status: &str,
    ) -> Result<CallResource, TwilioApiError> {
        check_sid("account", "AC", account_sid)?;
        check_sid("call", "CA", call_sid)?;
        let result = self
            .post(Request {
                operation: "calls.update",
                path: format!("/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}.json"),
                form: encode_form(&[("Status", status)]),
                idempotent: true,
                unknown_outcome: false,
                account_sid,
            })
            .await;
        let body = result.map_err(|error| match error {
            TwilioApiError::Api {
                status,
                code,
                message,
                ..
            } if status == 404 || code == Some(20404) || code == Some(21220) => {
                TwilioApiError::CallNotLive {
                    status,
                    code,
                    message,
                }
            }
            other => other,
        })?;
        serde_json::from_str(&body)
            .map_err(|e| TwilioApiError::Response(format!("call resource: {e}")))
    }

    /// POSTs the form, retrying as [`RetryPolicy`] allows; the success body.
    async fn post(&self, request: Request<'_>) -> Result<String, TwilioApiError> {
        let url = format!(
            "{}{}",
            self.config.base_url.trim_end_matches('/'),
            request.path
        );
        with_retries(
            &self.config.retry,
            || self.attempt(&url, &request),
            |attempts, delay, error: &TwilioApiError| {
                tracing::info!(
                    operation = request.operation,
                    attempts,
                    delay_ms = delay.as_millis() as u64,
                    error = %error.log_summary(),
                    "twilio request failed; retrying"
                );
            },
            |attempts, error| {
                tracing::warn!(
                    operation = request.operation,
                    account_sid = request.account_sid,
                    attempts,
                    error = %error.log_summary(),
                    "twilio request failed"
                );
            },
        )
        .await
    }

    async fn attempt(
        &self,
        url: &str,
        request: &Request<'_>,
    ) -> Result<String, Failure<TwilioApiError>> {
        let timeout_ms = self.config.request_timeout.as_millis() as u64;
        let unknown = |reason: String| Failure {
            error: TwilioApiError::OutcomeUnknown {
                operation: request.operation,
                reason,
            },
            retryable: false,
            retry_after: None,
        };
        let transport = |e: reqwest::Error| {
            if request.unknown_outcome && !e.is_connect() {
                // The request may have reached Twilio: only a refused connection is certain.
                if e.is_timeout() {
                    unknown(format!("no answer within {timeout_ms} ms"))
                } else {
                    unknown(error_chain(&e))
                }
            } else if e.is_timeout() {
                Failure {
                    error: TwilioApiError::Timeout(timeout_ms),
                    retryable: false,
                    retry_after: None,
                }
            } else {
                Failure {
                    retryable: e.is_connect(),
                    error: TwilioApiError::Transport(error_chain(&e)),
                    retry_after: None,
                }
            }
        };
        let Answer {
            status,
            retry_after,
            body,
        } = post_form(
            &self.http,
            FormPost {
                url,
                user: &self.config.account_sid,
                password: &self.config.auth_token,
                form: request.form.clone(),
                timeout: self.config.request_timeout,
            },
        )
        .await
        .map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error = parse_error(status, &body);
        if request.unknown_outcome && status >= 500 {
            return Err(unknown(error.to_string()));
        }
        let too_many = status == 429
            || matches!(
                error,
                TwilioApiError::Api {
                    code: Some(20429),
                    ..
                }
            );
        Err(Failure {
            retryable: too_many || (request.idempotent && status >= 500),
            error,
            retry_after,
        })
    }
}

/// Most calls asked for per list page.
pub const LIST_PAGE_SIZE: u32 = 100;
/// Most list pages followed by one [`TwilioRest::list_calls`].
pub const MAX_LIST_PAGES: usize = 20;

/// A call as Twilio's Call resource reports it (fetch and list, §2.2's body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// `CA…`.
    pub sid: String,
    /// Twilio's status (`queued`, `ringing`, `in-progress`, `completed`, `busy`, …).
    pub status: String,
    /// The called number.
    pub to: Option<String>,
    /// The calling number.
    pub from: Option<String>,
    /// `outbound-api`, `inbound`, ….
    pub direction: Option<String>,
    /// Who answered, when detection ran (`human`, `machine_start`, …).
    pub answered_by: Option<String>,
    /// Seconds the call lasted, once over.
    pub duration_secs: Option<i64>,
    /// When Twilio created it (from the RFC 2822 `date_created`).
    pub date_created: Option<chrono::DateTime<chrono::Utc>>,
}

impl CallInfo {
    /// The stored status for Twilio's; `None` for a status Twilio does not document.
    pub fn call_status(&self) -> Option<crate::store::calls::CallStatus> {
        super::webhook::TwilioCallStatus::parse(&self.status).map(|s| s.call_status())
    }
}

/// The Call resource as it comes (every field but `sid` may be missing or null).
#[derive(Debug, Deserialize)]
struct CallBody {
    sid: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    answered_by: Option<String>,
    #[serde(default)]
    duration: Option<serde_json::Value>,
    #[serde(default)]
    date_created: Option<String>,
}

impl CallBody {
    fn into_info(self) -> Result<CallInfo, TwilioApiError> {
        if !is_sid("CA", &self.sid) {
            return Err(TwilioApiError::Response(format!(
                "call SID {:?} is not CA followed by 32 hex digits",
                clip(&self.sid, 40)
            )));
        }
        let date_created = match self.date_created.as_deref() {
            None => None,
            Some(text) => Some(parse_rfc2822(text).ok_or_else(|| {
                TwilioApiError::Response(format!(
                    "date_created {:?} is not an RFC 2822 date",
                    clip(text, 60)
                ))
            })?),
        };
        let duration_secs = match self.duration {
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        Ok(CallInfo {
            sid: self.sid,
            status: self.status.unwrap_or_default(),
            to: self.to,
            from: self.from,
            direction: self.direction,
            answered_by: self.answered_by.filter(|a| !a.is_empty()),
            duration_secs,
            date_created,
        })
    }
}

/// A page of the Calls list.
#[derive(Debug, Deserialize)]
struct CallPage {
    calls: Vec<CallBody>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

/// An RFC 2822 date (`Fri, 18 Oct 2019 17:00:00 +0000`) in UTC.
pub fn parse_rfc2822(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

impl TwilioRest {
    /// Fetches one call (`GET …/Calls/{CallSid}.json`); `None` when Twilio has no such call
    /// (404 / 20404).
    pub async fn fetch_call(
        &self,
        account_sid: &str,
        call_sid: &str,
    ) -> Result<Option<CallInfo>, TwilioApiError> {
        check_sid("account", "AC", account_sid)?;
        check_sid("call", "CA", call_sid)?;
        let path = format!("/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}.json");
        let body = match self.get("calls.fetch", &path, account_sid).await {
            Ok(body) => body,
            Err(TwilioApiError::Api { status, code, .. })
                if status == 404 && code.is_none_or(|c| c == 20404) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let call: CallBody = serde_json::from_str(&body)
            .map_err(|e| TwilioApiError::Response(format!("call resource: {e}")))?;
        call.into_info().map(Some)
    }

    /// The account's calls from `from` to `to` that started on or after `start_date` (UTC),
    /// newest first as Twilio lists them (`GET …/Calls.json?To=&From=&StartTime>=`), following
    /// `next_page_uri` for at most [`MAX_LIST_PAGES`] pages.
    pub async fn list_calls(
        &self,
        account_sid: &str,
        to: &str,
        from: &str,
        start_date: chrono::NaiveDate,
    ) -> Result<Vec<CallInfo>, TwilioApiError> {
        check_sid("account", "AC", account_sid)?;
        if !is_e164(to) || !is_e164(from) {
            return Err(TwilioApiError::Invalid(
                "calls are looked up by E.164 numbers".into(),
            ));
        }
        let query = encode_form(&[
            ("To", to),
            ("From", from),
            ("StartTime>", &start_date.format("%Y-%m-%d").to_string()),
            ("PageSize", &LIST_PAGE_SIZE.to_string()),
        ]);
        let mut path = format!("/{API_VERSION}/Accounts/{account_sid}/Calls.json?{query}");
        let mut calls = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let body = self.get("calls.list", &path, account_sid).await?;
            let page: CallPage = serde_json::from_str(&body)
                .map_err(|e| TwilioApiError::Response(format!("call list: {e}")))?;
            for call in page.calls {
                calls.push(call.into_info()?);
            }
            match page.next_page_uri.filter(|u| !u.is_empty()) {
                Some(next) if next.starts_with(&format!("/{API_VERSION}/Accounts/")) => {
                    path = next;
                }
                Some(next) => {
                    return Err(TwilioApiError::Response(format!(
                        "next_page_uri {:?} is not an account path",
                        clip(&next, 80)
                    )));
                }
                None => return Ok(calls),
            }
        }
        tracing::warn!(
            account_sid,
            pages = MAX_LIST_PAGES,
            "twilio call list longer than the page limit; the rest is not read"
        );
        Ok(calls)
    }

    /// GETs `path` (after the base URL), retrying what a repeated read cannot harm: a refused
    /// connection, 429 and 5xx.
    async fn get(
        &self,
        operation: &'static str,
        path: &str,
        account_sid: &str,
    ) -> Result<String, TwilioApiError> {
        let url = format!("{}{}", self.config.base_url.trim_end_matches('/'), path);
        let timeout_ms = self.config.request_timeout.as_millis() as u64;
        let attempt = || async {
            let answer = super::rest::get_json(
                &self.http,
                &url,
                &self.config.account_sid,
                &self.config.auth_token,
                self.config.request_timeout,
            )
            .await
            .map_err(|e| Failure {
                retryable: e.is_connect(),
                error: if e.is_timeout() {
                    TwilioApiError::Timeout(timeout_ms)
                } else {
                    TwilioApiError::Transport(error_chain(&e))
                },
                retry_after: None,
            })?;
            if (200..300).contains(&answer.status) {
                return Ok(answer.body);
            }
            Err(Failure {
                retryable: answer.status == 429 || answer.status >= 500,
                error: parse_error(answer.status, &answer.body),
                retry_after: answer.retry_after,
            })
        };
        with_retries(
            &self.config.retry,
            attempt,
            |attempts, delay, error: &TwilioApiError| {
                tracing::info!(
                    operation,
                    attempts,
                    delay_ms = delay.as_millis() as u64,
                    error = %error.log_summary(),
                    "twilio request failed; retrying"
                );
            },
            |attempts, error| {
                if !matches!(error, TwilioApiError::Api { status: 404, .. }) {
                    tracing::warn!(
                        operation,
                        account_sid,
                        attempts,
                        error = %error.log_summary(),
                        "twilio request failed"
                    );
                }
            },
        )
        .await
    }
}

fn check_sid(what: &str, prefix: &str, sid: &str) -> Result<(), TwilioApiError> {
    if is_sid(prefix, sid) {
        Ok(())
    } else {
        Err(TwilioApiError::Invalid(format!(
            "{what} SID {:?} is not {prefix} followed by 32 hex digits",
            clip(sid, 40)
        )))
    }
}

/// An error with its sources (`error sending request: connection refused`).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn forms_encode_like_browsers_do() {
        assert_eq!(
            encode_form(&[("To", "+14155550123"), ("From", "+18005551212")]),
            "To=%2B14155550123&From=%2B18005551212"
        );
        assert_eq!(
            encode_form(&[("Body", "Hi Ana, 50% off: a&b=c ~ é")]),
            "Body=Hi+Ana%2C+50%25+off%3A+a%26b%3Dc+%7E+%C3%A9"
        );
        assert_eq!(
            encode_form(&[("Twiml", "<Response><Dial>+1</Dial></Response>")]),
            "Twiml=%3CResponse%3E%3CDial%3E%2B1%3C%2FDial%3E%3C%2FResponse%3E"
        );
        assert_eq!(
            encode_form(&[("A", "x"), ("A", "y"), ("safe", "*-._")]),
            "A=x&A=y&safe=*-._"
        );
        assert_eq!(encode_form(&[]), "");
    }

    /// A reference decoder, written independently of the encoder.
    fn decode(form: &str) -> Vec<(String, String)> {
        fn component(text: &str) -> String {
            let bytes = text.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'+' => out.push(b' '),
                    b'%' => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 2;
                    }
                    b => out.push(b),
                }
                i += 1;
            }
            String::from_utf8(out).unwrap()
        }
        if form.is_empty() {
            return Vec::new();
        }
        form.split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (component(k), component(v))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn forms_round_trip(pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..5)) {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let encoded = encode_form(&refs);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"*-._+%&=".contains(&b)));
            prop_assert_eq!(decode(&encoded), pairs);
        }

        #[test]
        fn any_error_body_parses_without_panic(status in 400u16..600, body in any::<String>()) {
            let error = parse_error(status, &body);
            let is_api_with_status = matches!(error, TwilioApiError::Api { status: s, .. } if s == status);
            prop_assert!(is_api_with_status);
        }
    }

    #[test]
    fn twilio_error_bodies_keep_code_message_and_link() {
        let body = r#"{"code": 21211, "message": "The 'To' number +1555 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        assert_eq!(
            parse_error(400, body),
            TwilioApiError::Api {
                status: 400,
                code: Some(21211),
                message: "The 'To' number +1555 is not a valid phone number.".into(),
                more_info: Some("https://www.twilio.com/docs/errors/21211".into()),
            }
        );
        let error = parse_error(
            404,
            r#"{"code":"20404","message":"The requested resource was not found","status":404}"#,
        );
        assert_eq!(
            error.to_string(),
            "HTTP 404, code 20404: The requested resource was not found"
        );
    }

    #[test]
    fn log_summaries_leave_out_twilios_message() {
        let error = parse_error(
            400,
            r#"{"code": 21211, "message": "The 'To' number +14155550123 is not valid."}"#,
        );
        assert_eq!(error.log_summary(), "HTTP 400, code 21211");
        assert_eq!(
            TwilioApiError::Invalid("to +14155550123".into()).log_summary(),
            "invalid request"
        );
    }

    #[test]
    fn other_error_bodies_still_give_a_message() {
        assert_eq!(
            parse_error(502, "<html>Bad Gateway</html>").to_string(),
            "HTTP 502: <html>Bad Gateway</html>"
        );
        assert_eq!(
            parse_error(503, "").to_string(),
            "HTTP 503: Service Unavailable"
        );
        assert_eq!(
            parse_error(500, r#"{"unexpected": true}"#).to_string(),
            "HTTP 500: Internal Server Error"
        );
        assert_eq!(
            parse_error(400, r#"{"code": -1, "message": ""}"#).to_string(),
            "HTTP 400: Bad Request"
        );
        let long = "x".repeat(1000);
        let TwilioApiError::Api { message, .. } = parse_error(500, &long) else {
            panic!("not an API error");
        };
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn sids_and_numbers_are_checked_strictly() {
        assert!(is_sid("CA", "CA0123456789abcdef0123456789ABCDEF"));
        assert!(!is_sid("CA", "AC0123456789abcdef0123456789abcdef"));
        assert!(!is_sid("CA", "CA0123456789abcdef0123456789abcde"));
        assert!(!is_sid("CA", "CA0123456789abcdef0123456789abcdeg"));
        assert!(!is_sid("CA", "CA0123456789abcdef01234567/../bcd"));
        assert!(!is_sid("CA", "CA0123456789abcdef0123456789abcdé"));
        assert!(is_e164("+14155550123"));
        assert!(is_e164("+919876543210"));
        assert!(!is_e164("14155550123"));
        assert!(!is_e164("+0155550123"));
        assert!(!is_e164("+1 415 555 0123"));
        assert!(!is_e164("+123456"));
        assert!(!is_e164("+1234567890123456"));
    }

    #[test]
    fn retries_double_within_the_budget() {
        let policy = RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            budget: Duration::from_millis(500),
        };
        let ms = Duration::from_millis;
        assert_eq!(policy.delay(1, ms(0), None), Some(ms(100)));
        assert_eq!(policy.delay(2, ms(100), None), Some(ms(200)));
        assert_eq!(
            policy.delay(3, ms(300), None),
            None,
            "400 more would pass the budget"
        );
        assert_eq!(policy.delay(4, ms(0), None), None, "attempts used up");
        assert_eq!(
            policy.delay(1, ms(0), Some(ms(300))),
            Some(ms(300)),
            "a longer Retry-After is honoured"
        );
        assert_eq!(
            policy.delay(1, ms(0), Some(ms(0))),
            Some(ms(100)),
            "never sooner than the backoff"
        );
        assert_eq!(
            policy.delay(1, ms(0), Some(Duration::from_secs(2))),
            None,
            "a Retry-After past the budget ends the retries"
        );
        let once = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        assert_eq!(once.delay(1, ms(0), None), None);
    }

    #[test]
    fn retry_after_takes_seconds_only() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 0.25 "),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("1e12"), None);
    }

    fn config() -> TwilioRestConfig {
        TwilioRestConfig {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token: "s3cret-token".into(),
            base_url: "http://127.0.0.1:9".into(),
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy {
                max_attempts: 1,
                initial_backoff: Duration::from_millis(10),
                budget: Duration::ZERO,
            },
        }
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let client = TwilioRest::new(config()).unwrap();
        let text = format!("{client:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("AC0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = config();
        c.account_sid = "SK0123456789abcdef0123456789abcdef".into();
        assert!(TwilioRest::new(c).is_err());
        let mut c = config();
        c.auth_token = String::new();
        assert!(TwilioRest::new(c).is_err());
        let mut c = config();
        c.auth_token = "a:b".into();
        assert!(TwilioRest::new(c).is_err());
        let mut c = config();
        c.base_url = "api.twilio.com".into();
        assert!(TwilioRest::new(c).is_err());
    }

    #[tokio::test]
    async fn bad_arguments_fail_before_any_request() {
        // The base URL is a closed port: an argument error must come before any connection.
        let client = TwilioRest::new(config()).unwrap();
        let account = "AC0123456789abcdef0123456789abcdef";
        let call = "CA0123456789abcdef0123456789abcdef";
        fn invalid<T>(r: Result<T, TwilioApiError>) -> bool {
            matches!(r, Err(TwilioApiError::Invalid(_)))
        }
        assert!(invalid(
            client
                .redirect_call(account, "CA/../x", "<Response/>")
                .await
        ));
        assert!(invalid(
            client.redirect_call("AC1", call, "<Response/>").await
        ));
        let huge = format!("<Response><Say>{}</Say></Response>", "a".repeat(4000));
        assert!(invalid(client.redirect_call(account, call, &huge).await));
        let sms = |from: &'static str, to: &'static str, body: String| {
            let client = client.clone();
            async move { client.send_sms(account, from, to, &body).await }
        };
        assert!(invalid(
            sms("+18005551212", "4155550123", "hi".into()).await
        ));
        assert!(invalid(sms("", "+14155550123", "hi".into()).await));
        assert!(invalid(
            sms("+18005551212", "+14155550123", "  ".into()).await
        ));
        let error = sms("+18005551212", "+14155550123", "é".repeat(1601))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the message body is 1601 characters; Twilio takes at most 1600"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_a_transport_error() {
        let client = TwilioRest::new(config()).unwrap();
        let error = client
            .redirect_call(
                "AC0123456789abcdef0123456789abcdef",
                "CA0123456789abcdef0123456789abcdef",
                "<Response/>",
            )
            .await
            .unwrap_err();
        assert!(matches!(error, TwilioApiError::Transport(_)), "{error:?}");
    }
}
