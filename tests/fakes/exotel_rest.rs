//! Fake Exotel Connect Voice AI API on 127.0.0.1 (`specs/telephony.md` §3.6 B):
//! `POST /v1/Accounts/{sid}/Calls/connect.json`, and the Call Details lookup
//! `GET /v1/Accounts/{sid}/Calls/{CallSid}.json` (§3.6) of the calls it placed.
//!
//! Checks like the real API: HTTP Basic auth with the API key and token (401 with a
//! `RestException`), the path's account (404), a form body, `From` and `CallerId` present and
//! phone numbers, `CallerId` one of the account's ExoPhones, `StreamUrl` a `ws(s)://` URL
//! under 600 characters, `StreamType=bidirectional`, no `Url` beside `StreamUrl`,
//! `StatusCallbackEvents[n]` values (`answered`, `terminal`, `ringing`), `CustomField` at most
//! 128 characters, `TimeLimit` at most 14400. Unknown parameters are refused (a misspelt name is
//! a bug in the client). Answers `{"Call":{…}}` — with capitalised or lowercase keys, as set —
//! or `{"RestException":{"Status","Message","Code"}}`. A lookup of an unknown call is 404
//! with a `RestException`; a placed call's status and duration are set by the test. Faults:
//! 429 (with `Retry-After`), 500 after placing the call, or a stall after placing it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::twilio_rest::decode_form;

/// The fake's account.
pub const ACCOUNT_SID: &str = "acme1";
/// Its API key.
pub const API_KEY: &str = "exo-key";
/// Its API token.
pub const API_TOKEN: &str = "exo-token";
/// Its ExoPhone.
pub const EXOPHONE: &str = "08012345678";

/// A failure injected into the next request that passes the auth check.
#[derive(Debug, Clone)]
pub enum ExotelFault {
    /// 429 `RATE_LIMIT_EXCEEDED` before acting.
    TooManyRequests,
    /// Places the call, then answers 500.
    ServerErrorAfterActing,
    /// Places the call, then waits this long before answering.
    StallAfterActing(Duration),
}

/// One request received.
#[derive(Debug, Clone)]
pub struct ExotelRequest {
    /// Path.
    pub path: String,
    /// The Basic auth pair, decoded.
    pub basic: Option<String>,
    /// The form fields in order.
    pub form: Vec<(String, String)>,
    /// Status answered.
    pub status: u16,
}

impl ExotelRequest {
    /// The first value of `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A call the fake placed, as Call Details reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExotelFakeCall {
    /// The number called.
    pub from: String,
    /// `in-progress`, `completed`, `busy`, `no-answer`, `failed`.
    pub status: String,
    /// Seconds, once over.
    pub duration: Option<u64>,
}

struct Inner {
    lowercase: bool,
    faults: Mutex<VecDeque<ExotelFault>>,
    log: Mutex<Vec<ExotelRequest>>,
    placed: Mutex<Vec<String>>,
    calls: Mutex<HashMap<String, ExotelFakeCall>>,
}

/// The running fake; stops when dropped.
pub struct FakeExotelRest {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for FakeExotelRest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeExotelRest {
    /// Starts the fake; with `lowercase`, answers use the developer guide's lowercase keys.
    pub async fn start(lowercase: bool) -> FakeExotelRest {
        let inner = Arc::new(Inner {
            lowercase,
            faults: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            placed: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeExotelRest { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a fault.
    pub fn push_fault(&self, fault: ExotelFault) {
        self.inner.faults.lock().unwrap().push_back(fault);
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<ExotelRequest> {
        self.inner.log.lock().unwrap().clone()
    }

    /// Sets a placed call's status and duration, as Call Details will report them.
    pub fn set_call(&self, sid: &str, status: &str, duration: Option<u64>) {
        if let Some(call) = self.inner.calls.lock().unwrap().get_mut(sid) {
            call.status = status.to_owned();
            call.duration = duration;
        }
    }

    /// The call ids placed so far, in order.
    pub fn placed_sids(&self) -> Vec<String> {
        (1..=self.inner.placed.lock().unwrap().len())
            .map(placed_sid)
            .collect()
    }

    /// Numbers called so far (one per call placed).
    pub fn placed(&self) -> Vec<String> {
        self.inner.placed.lock().unwrap().clone()
    }
}

fn exception(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"RestException": {"Status": status, "Message": message, "Code": code}})),
    )
        .into_response()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form {
        std::str::from_utf8(&body).ok().and_then(decode_form)
    } else {
        None
    };
    let (response, delay) = respond(
        &inner,
        &method,
        uri.path(),
        basic.as_deref(),
        form.as_deref(),
    );
    inner.log.lock().unwrap().push(ExotelRequest {
        path: uri.path().to_owned(),
        basic,
        form: form.unwrap_or_default(),
        status: response.status().as_u16(),
    });
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    response
}

fn phone(number: &str) -> bool {
    let digits = number.strip_prefix('+').unwrap_or(number);
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

fn respond(
    inner: &Inner,
    method: &Method,
    path: &str,
    basic: Option<&str>,
    form: Option<&[(String, String)]>,
) -> (Response, Option<Duration>) {
    let refuse = |status, code: &str, message: &str| (exception(status, code, message), None);
    if basic != Some(&format!("{API_KEY}:{API_TOKEN}")) {
        return refuse(401, "AUTHENTICATION_FAILED", "Authentication is required");
    }
    if method == Method::GET {
        return (call_details(inner, path), None);
    }
    if path != format!("/v1/Accounts/{ACCOUNT_SID}/Calls/connect.json") {
        return refuse(404, "NOT_FOUND", "Resource not found");
    }
    if method != Method::POST {
        return refuse(405, "METHOD_NOT_ALLOWED", "Method not allowed");
    }
    let fault = inner.faults.lock().unwrap().pop_front();
    if matches!(fault, Some(ExotelFault::TooManyRequests)) {
        let mut response = exception(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, "0".parse().unwrap());
        return (response, None);
    }
    let Some(form) = form else {
        return refuse(
            400,
            "BAD_REQUEST",
            "fake: the body must be a urlencoded form",
        );
    };
    const ALLOWED: &[&str] = &[
        "From",
        "CallerId",
        "StreamUrl",
        "StreamType",
        "StreamName",
        "StatusCallback",
        "CustomField",
        "TimeLimit",
        "TimeOut",
        "Record",
        "RecordingChannels",
    ];
    for (i, (name, value)) in form.iter().enumerate() {
        let event = name
            .strip_prefix("StatusCallbackEvents[")
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|n| n.parse::<u8>().is_ok());
        if event {
            if !matches!(value.as_str(), "answered" | "terminal" | "ringing") {
                return refuse(400, "BAD_REQUEST", &format!("fake: bad {name}={value}"));
            }
        } else if !ALLOWED.contains(&name.as_str()) {
            return refuse(
                400,
                "BAD_REQUEST",
                &format!("fake: unknown parameter {name:?}"),
            );
        }
        if form[..i].iter().any(|(n, _)| n == name) {
            return refuse(400, "BAD_REQUEST", &format!("fake: {name} given twice"));
        }
    }
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(from) = get("From").filter(|f| phone(f)) else {
        return refuse(
            400,
            "INVALID_PARAMETER",
            "From is missing or not a phone number",
        );
    };
    if get("CallerId") != Some(EXOPHONE) {
        return refuse(
            400,
            "INVALID_PARAMETER",
            "CallerId is not an ExoPhone of this account",
        );
    }
    let stream_url = get("StreamUrl").unwrap_or_default();
    if !(stream_url.starts_with("ws://") || stream_url.starts_with("wss://"))
        || stream_url.chars().count() >= 600
    {
        return refuse(
            400,
            "INVALID_PARAMETER",
            "StreamUrl must be a ws(s) URL under 600 characters",
        );
    }
    if get("StreamType") != Some("bidirectional") {
        return refuse(400, "INVALID_PARAMETER", "StreamType must be bidirectional");
    }
    if get("CustomField").is_some_and(|c| c.chars().count() > 128) {
        return refuse(
            400,
            "INVALID_PARAMETER",
            "CustomField is over 128 characters",
        );
    }
    if get("TimeLimit").is_some_and(|t| !t.parse::<u32>().is_ok_and(|t| (1..=14_400).contains(&t)))
    {
        return refuse(400, "INVALID_PARAMETER", "TimeLimit must be 1–14400");
    }
    if let Some(callback) = get("StatusCallback")
        && !(callback.starts_with("http://") || callback.starts_with("https://"))
    {
        return refuse(400, "INVALID_PARAMETER", "StatusCallback is not a URL");
    }
    let mut placed = inner.placed.lock().unwrap();
    placed.push(from.to_owned());
    let sid = placed_sid(placed.len());
    drop(placed);
    inner.calls.lock().unwrap().insert(
        sid.clone(),
        ExotelFakeCall {
            from: from.to_owned(),
            status: "in-progress".to_owned(),
            duration: None,
        },
    );
    let call: Value = if inner.lowercase {
        json!({"call": {"sid": sid, "status": "in-progress", "from": from, "direction": "outbound-api"}})
    } else {
        json!({"Call": {"Sid": sid, "ParentCallSid": null, "Status": "in-progress", "From": from,
            "PhoneNumberSid": EXOPHONE, "Direction": "outbound-api", "AnsweredBy": null,
            "DateCreated": "2017-03-03 12:30:24", "RecordingUrl": null}})
    };
    match fault {
        Some(ExotelFault::ServerErrorAfterActing) => {
            refuse(500, "INTERNAL_ERROR", "Internal server error")
        }
        Some(ExotelFault::StallAfterActing(delay)) => (
            (StatusCode::OK, axum::Json(call)).into_response(),
            Some(delay),
        ),
        _ => ((StatusCode::OK, axum::Json(call)).into_response(), None),
    }
}

/// The id of the `n`th call placed (from 1).
fn placed_sid(n: usize) -> String {
    format!("{:032x}", 0xe0_0000 + n)
}

/// `GET /v1/Accounts/{sid}/Calls/{CallSid}.json`: the call, or 404.
fn call_details(inner: &Inner, path: &str) -> Response {
    let prefix = format!("/v1/Accounts/{ACCOUNT_SID}/Calls/");
    let Some(sid) = path
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(".json"))
        .filter(|sid| !sid.is_empty() && !sid.contains('/'))
    else {
        return exception(404, "NOT_FOUND", "Resource not found");
    };
    let Some(call) = inner.calls.lock().unwrap().get(sid).cloned() else {
        return exception(404, "NOT_FOUND", &format!("Call {sid} not found"));
    };
    let over = !matches!(call.status.as_str(), "queued" | "in-progress" | "ringing");
    let body = if inner.lowercase {
        json!({"call": {"sid": sid, "status": call.status, "from": call.from,
            "duration": call.duration.map(|d| d.to_string()), "direction": "outbound-api"}})
    } else {
        json!({"Call": {"Sid": sid, "ParentCallSid": null, "DateCreated": "2017-03-03 12:30:24",
            "DateUpdated": "2017-03-03 12:31:00", "AccountSid": ACCOUNT_SID, "To": EXOPHONE,
            "From": call.from, "PhoneNumberSid": EXOPHONE, "Status": call.status,
            "StartTime": "2017-03-03 12:30:27",
            "EndTime": if over { json!("2017-03-03 12:31:00") } else { Value::Null },
            "Duration": call.duration.map(|d| d.to_string()), "Price": null,
            "Direction": "outbound-api", "AnsweredBy": "NA", "ForwardedFrom": null,
            "CallerName": null, "RecordingUrl": null,
            "Uri": format!("/v1/Accounts/{ACCOUNT_SID}/Calls/{sid}.json")}})
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}
