//! Fake Twilio REST API on 127.0.0.1: call creation
//! (`POST /2010-04-01/Accounts/{AccountSid}/Calls.json`), live-call updates
//! (`POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`) and text messages
//! (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`), as `specs/telephony.md` §2.1–2.5
//! describe them; and call lookups: fetch (`GET …/Calls/{CallSid}.json`) and list
//! (`GET …/Calls.json?To=&From=&StartTime>=&PageSize=&Page=&PageToken=`).
//!
//! Checks like the real API: HTTP Basic auth with the account SID and auth token (401, code
//! 20003), the path's account (the account or one of its subaccounts, else 404 20404), a
//! form-encoded body, the call SID (404 20404), `Twiml` well-formed with a `<Response>` root,
//! at most 4000 characters and never with `Url`, `Status` values, `To` and `From` in E.164,
//! `From` one of the account's numbers, the body length (1600) and opted-out recipients
//! (21610). Unknown parameters are refused too (the real API ignores them; a misspelt name here
//! is a bug in the client). Answers carry Twilio's error JSON (`code`, `message`, `more_info`,
//! `status`) or the resource JSON of §2.2/§2.4. Error codes outside the spec's table (21602,
//! 21603, 21604, 21606, 21617) are Twilio's published ones; 20001 marks the fake's own
//! refusals of malformed requests.
//!
//! The fake keeps a model of the account — live calls (added by the test), what each was
//! redirected to and dialled, the messages sent — so that it can later play the carrier's
//! side of a call (dial, status callbacks). Every request is recorded. Faults: the next
//! requests answer 429 (code 20429, `Retry-After`), 500, or a given status and code — all
//! before acting — or act and then answer 500 or stall (the client cannot know the outcome).
//! Created calls and status updates are reported to a subscriber ([`FakeTwilioRest::subscribe`]),
//! which is how the carrier fake (`twilio_carrier.rs`) learns what to dial.
//!
//! Lookups answer like the real API: the Call resource with the call's current status,
//! `answered_by`, `duration` and an RFC 2822 `date_created` (the instant the fake created the
//! call); an unknown SID is 404 20404. A list is newest first, filtered by `To`, `From` and the
//! `StartTime>=` day (UTC; the fake takes a call's creation day as its start day), paged by
//! `PageSize` (1–1000, default 50) with `next_page_uri` (`Page` + `PageToken`, as Twilio's
//! paging needs) and the other paging fields; unknown query names are refused.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, NaiveDate, Utc};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The account of the fake (the Twilio stream simulator's `accountSid`).
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// Its auth token.
pub const AUTH_TOKEN: &str = "fake-twilio-auth-token";
/// The call the Twilio stream simulator reports (`callSid`).
pub const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
/// A number the account owns.
pub const OUR_NUMBER: &str = "+18005551212";
/// Longest inline TwiML.
pub const MAX_TWIML_CHARS: usize = 4000;
/// Longest message body.
pub const MAX_BODY_CHARS: usize = 1600;

/// Settings of the fake.
#[derive(Debug, Clone)]
pub struct FakeTwilioConfig {
    /// The account; Basic auth user.
    pub account_sid: String,
    /// Basic auth password.
    pub auth_token: String,
    /// Subaccounts whose resources the account's credentials reach.
    pub subaccounts: Vec<String>,
    /// Numbers the account owns (allowed as a message's `From`).
    pub numbers: Vec<String>,
    /// Recipients who replied STOP (21610).
    pub opted_out: Vec<String>,
}

impl Default for FakeTwilioConfig {
    fn default() -> Self {
        FakeTwilioConfig {
            account_sid: ACCOUNT_SID.to_owned(),
            auth_token: AUTH_TOKEN.to_owned(),
            subaccounts: Vec::new(),
            numbers: vec![OUR_NUMBER.to_owned()],
            opted_out: Vec::new(),
        }
    }
}

/// A call the fake knows.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeCall {
    /// `CA…`.
    pub sid: String,
    /// The account it belongs to.
    pub account_sid: String,
    /// `queued`, `ringing`, `in-progress`, `completed`, ….
    pub status: String,
    /// Every TwiML document it was redirected to, in order.
    pub redirects: Vec<String>,
    /// Every number a redirect `<Dial>`ed, in order.
    pub dialed: Vec<String>,
    /// Every `Url` it was redirected to.
    pub redirect_urls: Vec<String>,
    /// The called number.
    pub to: String,
    /// The calling number.
    pub from: String,
    /// `inbound` or `outbound-api`.
    pub direction: String,
    /// The create request's form, for a call placed through the API.
    pub create_form: Vec<(String, String)>,
}

/// What the fake tells its subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum RestEvent {
    /// A call was created through `Calls.json` (the fake answered 201, or acted before a
    /// fault).
    Created(FakeCall),
    /// A call's `Status` was set (`completed` or `canceled`) through a call update.
    StatusSet {
        /// `CA…`.
        sid: String,
        /// The new status.
        status: String,
    },
}

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMessage {
    /// `SM…`.
    pub sid: String,
    /// The account.
    pub account_sid: String,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Text.
    pub body: String,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RestRequest {
    /// HTTP method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// The Basic auth user, where the header decoded.
    pub basic_user: Option<String>,
    /// Whether the Basic auth password was the auth token.
    pub password_ok: bool,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The form fields in order (empty when the body is not a form).
    pub form: Vec<(String, String)>,
    /// The query's fields in order.
    pub query: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
    /// The Twilio error code answered, if any.
    pub code: Option<u32>,
    /// When the fake took the request.
    pub at: std::time::Instant,
}

impl RestRequest {
    /// The first value of form field `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The field names in order.
    pub fn names(&self) -> Vec<&str> {
        self.form.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// A failure injected into the next request (after the auth check).
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with code 20429, and `Retry-After` when given.
    TooManyRequests {
        /// The header's value.
        retry_after: Option<String>,
    },
    /// 500 with Twilio's error JSON.
    ServerError,
    /// Acts on the request, then answers 500 (the client cannot tell it acted).
    ServerErrorAfterActing,
    /// Acts on the request, then waits this long before answering (past a client's timeout).
    StallAfterActing(Duration),
    /// Any status with any code and message.
    Error {
        /// HTTP status.
        status: u16,
        /// Twilio code.
        code: u32,
        /// Message.
        message: String,
    },
}

/// What a lookup reports beyond [`FakeCall`].
#[derive(Debug, Clone, PartialEq)]
pub struct CallFacts {
    /// When the fake created (or was given) the call.
    pub created: DateTime<Utc>,
    /// `answered_by`.
    pub answered_by: Option<String>,
    /// `duration` (s), once over.
    pub duration: Option<u64>,
}

impl CallFacts {
    fn now() -> CallFacts {
        CallFacts {
            created: Utc::now(),
            answered_by: None,
            duration: None,
        }
    }
}

#[derive(Default)]
struct Model {
    calls: HashMap<String, FakeCall>,
    facts: HashMap<String, CallFacts>,
    messages: Vec<FakeMessage>,
    next_message: u64,
    next_call: u64,
}

struct Inner {
    config: FakeTwilioConfig,
    model: Mutex<Model>,
    faults: Mutex<VecDeque<Fault>>,
    log: Mutex<Vec<RestRequest>>,
    events: Mutex<Option<tokio::sync::mpsc::UnboundedSender<RestEvent>>>,
}

impl Inner {
    fn notify(&self, event: RestEvent) {
        if let Some(tx) = self.events.lock().unwrap().as_ref() {
            let _ = tx.send(event);
        }
    }
}

/// A running fake; stops when dropped.
pub struct FakeTwilioRest {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for FakeTwilioRest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTwilioRest {
    /// Starts the fake on 127.0.0.1 with a random port; [`CALL_SID`] is live on the account.
    pub async fn start(config: FakeTwilioConfig) -> FakeTwilioRest {
        let account = config.account_sid.clone();
        let inner = Arc::new(Inner {
            config,
            model: Mutex::new(Model::default()),
            faults: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            events: Mutex::new(None),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let fake = FakeTwilioRest { addr, inner, task };
        fake.add_call(&account, CALL_SID);
        fake
    }

    /// `http://127.0.0.1:PORT` (the API's base URL, without the version).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The account SID.
    pub fn account_sid(&self) -> &str {
        &self.inner.config.account_sid
    }

    /// The auth token.
    pub fn auth_token(&self) -> &str {
        &self.inner.config.auth_token
    }

    /// Adds an in-progress call on `account_sid`.
    pub fn add_call(&self, account_sid: &str, sid: &str) {
        let mut model = self.inner.model.lock().unwrap();
        model.facts.insert(sid.to_owned(), CallFacts::now());
        model.calls.insert(
            sid.to_owned(),
            FakeCall {
                sid: sid.to_owned(),
                account_sid: account_sid.to_owned(),
                status: "in-progress".to_owned(),
                redirects: Vec::new(),
                dialed: Vec::new(),
                redirect_urls: Vec::new(),
                to: OUR_NUMBER.to_owned(),
                from: "+14155550100".to_owned(),
                direction: "inbound".to_owned(),
                create_form: Vec::new(),
            },
        );
    }

    /// Adds a call with its numbers and direction, in `status`.
    pub fn insert_call(&self, call: FakeCall) {
        let mut model = self.inner.model.lock().unwrap();
        model
            .facts
            .entry(call.sid.clone())
            .or_insert_with(CallFacts::now);
        model.calls.insert(call.sid.clone(), call);
    }

    /// Sets who answered a call (`human`, `machine_start`, …), as lookups report it.
    pub fn set_call_answered_by(&self, sid: &str, answered_by: &str) {
        if let Some(facts) = self.inner.model.lock().unwrap().facts.get_mut(sid) {
            facts.answered_by = Some(answered_by.to_owned());
        }
    }

    /// Sets a call's duration (s), as lookups report it.
    pub fn set_call_duration(&self, sid: &str, secs: u64) {
        if let Some(facts) = self.inner.model.lock().unwrap().facts.get_mut(sid) {
            facts.duration = Some(secs);
        }
    }

    /// Sets when a call was created, as lookups report it.
    pub fn set_call_created(&self, sid: &str, created: DateTime<Utc>) {
        if let Some(facts) = self.inner.model.lock().unwrap().facts.get_mut(sid) {
            facts.created = created;
        }
    }

    /// What lookups report about a call beyond [`FakeCall`].
    pub fn call_facts(&self, sid: &str) -> Option<CallFacts> {
        self.inner.model.lock().unwrap().facts.get(sid).cloned()
    }

    /// A new call SID, unused so far.
    pub fn next_call_sid(&self) -> String {
        let mut model = self.inner.model.lock().unwrap();
        model.next_call += 1;
        format!("CA{:032x}", 0x00c0_ffee_0000_u64 + model.next_call)
    }

    /// Created calls and status updates, from now on (one subscriber; a new one replaces it).
    pub fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<RestEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.inner.events.lock().unwrap() = Some(tx);
        rx
    }

    /// The calls created through the API, in order.
    pub fn created_calls(&self) -> Vec<RestRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json"))
            .collect()
    }

    /// Sets a call's status (`completed` makes redirects fail with 21220).
    pub fn set_call_status(&self, sid: &str, status: &str) {
        if let Some(call) = self.inner.model.lock().unwrap().calls.get_mut(sid) {
            call.status = status.to_owned();
        }
    }

    /// Forgets a call (updates answer 404 20404).
    pub fn remove_call(&self, sid: &str) {
        self.inner.model.lock().unwrap().calls.remove(sid);
    }

    /// A call as the fake holds it.
    pub fn call(&self, sid: &str) -> Option<FakeCall> {
        self.inner.model.lock().unwrap().calls.get(sid).cloned()
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.inner.model.lock().unwrap().messages.clone()
    }

    /// Queues a fault for the next request that passes the auth check.
    pub fn push_fault(&self, fault: Fault) {
        self.inner.faults.lock().unwrap().push_back(fault);
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<RestRequest> {
        self.inner.log.lock().unwrap().clone()
    }

    /// Waits up to `limit` for `n` requests; returns those there are.
    pub async fn wait_requests(&self, n: usize, limit: Duration) -> Vec<RestRequest> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let requests = self.requests();
            if requests.len() >= n || tokio::time::Instant::now() >= deadline {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A Twilio error response.
fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

/// What a handler decided: the response, and the error code it carries.
struct Answer {
    response: Response,
    code: Option<u32>,
    /// Wait this long before answering.
    delay: Option<Duration>,
}

fn err(status: u16, code: u32, message: &str) -> Answer {
    Answer {
        response: twilio_error(status, code, message),
        code: Some(code),
        delay: None,
    }
}

fn ok(status: StatusCode, body: Value) -> Answer {
    Answer {
        response: (status, axum::Json(body)).into_response(),
        code: None,
        delay: None,
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = std::time::Instant::now();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_form = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form {
        std::str::from_utf8(&body).ok().and_then(decode_form)
    } else {
        Some(Vec::new())
    };
    let (basic_user, password) = basic_auth(&headers);
    let password_ok = password.as_deref() == Some(inner.config.auth_token.as_str());
    let query = uri.query().map(decode_form);
    let mut answer = respond(
        &inner,
        &method,
        uri.path(),
        query.clone(),
        basic_user.as_deref(),
        password_ok,
        is_form,
        form.as_deref(),
    );
    inner.log.lock().unwrap().push(RestRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        basic_user,
        password_ok,
        content_type,
        form: form.unwrap_or_default(),
        query: query.flatten().unwrap_or_default(),
        status: answer.response.status().as_u16(),
        code: answer.code,
        at: received,
    });
    if let Some(delay) = answer.delay.take() {
        tokio::time::sleep(delay).await;
    }
    answer.response
}

/// The user and password of a Basic `Authorization` header.
fn basic_auth(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let decoded = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
        None => (None, None),
    }
}

#[allow(clippy::too_many_arguments)]
fn respond(
    inner: &Inner,
    method: &Method,
    path: &str,
    query: Option<Option<Vec<(String, String)>>>,
    user: Option<&str>,
    password_ok: bool,
    is_form: bool,
    form: Option<&[(String, String)]>,
) -> Answer {
    if user != Some(inner.config.account_sid.as_str()) || !password_ok {
        return err(401, 20003, "Authenticate");
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (account, resource) = match segments.as_slice() {
        ["2010-04-01", "Accounts", account, rest @ ..] => (*account, rest),
        _ => return not_found(path),
    };
    if account != inner.config.account_sid && !inner.config.subaccounts.iter().any(|s| s == account)
    {
        return not_found(path);
    }
    if method == Method::GET {
        if let Some(fault) = inner.faults.lock().unwrap().pop_front() {
            return fault_answer(fault);
        }
        let Some(query) = query.unwrap_or(Some(Vec::new())) else {
            return err(400, 20001, "fake: the query is not valid urlencoding");
        };
        return read(inner, account, path, resource, &query);
    }
    if method != Method::POST {
        return err(405, 20004, "Method not allowed");
    }
    let fault = inner.faults.lock().unwrap().pop_front();
    let after = match fault {
        Some(Fault::ServerErrorAfterActing) => Some(None),
        Some(Fault::StallAfterActing(delay)) => Some(Some(delay)),
        Some(fault) => return fault_answer(fault),
        None => None,
    };
    let mut answer = act(inner, account, path, resource, is_form, form);
    match after {
        Some(None) => err(500, 20500, "Internal Server Error"),
        Some(Some(delay)) => {
            answer.delay = Some(delay);
            answer
        }
        None => answer,
    }
}

fn act(
    inner: &Inner,
    account: &str,
    path: &str,
    resource: &[&str],
    is_form: bool,
    form: Option<&[(String, String)]>,
) -> Answer {
    if !is_form {
        return err(
            400,
            20001,
            "fake: the body must be application/x-www-form-urlencoded",
        );
    }
    let Some(form) = form else {
        return err(400, 20001, "fake: the form body is not valid urlencoding");
    };
    match resource {
        ["Calls.json"] => create_call(inner, account, form),
        ["Calls", file] if file.ends_with(".json") => {
            update_call(inner, account, path, &file[..file.len() - 5], form)
        }
        ["Messages.json"] => create_message(inner, account, form),
        _ => not_found(path),
    }
}

/// Names a Calls list takes (Twilio's read filters and paging).
const LIST_NAMES: &[&str] = &[
    "To",
    "From",
    "ParentCallSid",
    "Status",
    "StartTime",
    "StartTime<",
    "StartTime>",
    "EndTime",
    "EndTime<",
    "EndTime>",
    "PageSize",
    "Page",
    "PageToken",
];

/// A GET: fetch one call or list calls.
fn read(
    inner: &Inner,
    account: &str,
    path: &str,
    resource: &[&str],
    query: &[(String, String)],
) -> Answer {
    match resource {
        ["Calls.json"] => list_calls(inner, account, query),
        ["Calls", file] if file.ends_with(".json") && query.is_empty() => {
            let sid = &file[..file.len() - 5];
            let model = inner.model.lock().unwrap();
            match model.calls.get(sid).filter(|c| c.account_sid == account) {
                Some(call) => ok(StatusCode::OK, call_json(call, model.facts.get(sid))),
                None => not_found(path),
            }
        }
        ["Calls", _] => err(400, 20001, "fake: a call fetch takes no query"),
        _ => not_found(path),
    }
}

/// Form-encodes pairs (the fake's own encoder, for `next_page_uri`).
fn encode_query(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        for (j, text) in [k, v].into_iter().enumerate() {
            if j == 1 {
                out.push('=');
            }
            for b in text.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// `GET …/Calls.json`: the account's calls, newest first, filtered and paged.
fn list_calls(inner: &Inner, account: &str, query: &[(String, String)]) -> Answer {
    if let Some(answer) = check_names(query, LIST_NAMES) {
        return answer;
    }
    for name in [
        "StartTime",
        "StartTime<",
        "EndTime",
        "EndTime<",
        "EndTime>",
        "Status",
        "ParentCallSid",
    ] {
        if param(query, name).is_some() {
            return err(
                400,
                20001,
                &format!("fake: the {name} filter is not modelled"),
            );
        }
    }
    let since = match param(query, "StartTime>") {
        None => None,
        Some(day) => match NaiveDate::parse_from_str(day, "%Y-%m-%d") {
            Ok(parsed) if day_text(parsed) == day => Some(parsed),
            _ => {
                return err(
                    400,
                    20001,
                    &format!("StartTime {day:?} is not a YYYY-MM-DD date"),
                );
            }
        },
    };
    let page_size = match param(query, "PageSize").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return err(400, 20001, "PageSize must be 1–1000"),
    };
    let page = match param(query, "Page").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return err(400, 20001, "Page must be a number"),
    };
    if page > 0 && param(query, "PageToken").is_none_or(str::is_empty) {
        return err(
            400,
            20001,
            "fake: a page after the first needs its PageToken",
        );
    }
    for name in ["To", "From"] {
        if let Some(number) = param(query, name)
            && !is_e164(number)
        {
            return err(400, 20001, &format!("fake: {name} {number:?} is not E.164"));
        }
    }
    let model = inner.model.lock().unwrap();
    let mut matching: Vec<(&FakeCall, Option<&CallFacts>)> = model
        .calls
        .values()
        .filter(|c| c.account_sid == account)
        .filter(|c| param(query, "To").is_none_or(|to| c.to == to))
        .filter(|c| param(query, "From").is_none_or(|from| c.from == from))
        .map(|c| (c, model.facts.get(&c.sid)))
        .filter(|(_, f)| since.is_none_or(|day| f.is_some_and(|f| f.created.date_naive() >= day)))
        .collect();
    matching.sort_by(|a, b| {
        let created = |x: &(&FakeCall, Option<&CallFacts>)| x.1.map(|f| f.created);
        created(b)
            .cmp(&created(a))
            .then_with(|| b.0.sid.cmp(&a.0.sid))
    });
    let start = page * page_size;
    let calls: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(page_size)
        .map(|(c, f)| call_json(c, *f))
        .collect();
    let filters: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "PageSize" | "Page" | "PageToken"))
        .cloned()
        .collect();
    let base = format!("/2010-04-01/Accounts/{account}/Calls.json");
    let uri_for = |page: usize, token: Option<String>| {
        let mut pairs = filters.clone();
        pairs.push(("PageSize".into(), page_size.to_string()));
        pairs.push(("Page".into(), page.to_string()));
        if let Some(token) = token {
            pairs.push(("PageToken".into(), token));
        }
        format!("{base}?{}", encode_query(&pairs))
    };
    let more = matching.len() > start + calls.len();
    let next = more.then(|| {
        let last = &matching[start + calls.len() - 1].0.sid;
        uri_for(page + 1, Some(format!("PA{last}")))
    });
    let previous = (page > 0).then(|| uri_for(page - 1, Some("PB".to_owned())));
    let end = (start + calls.len()).saturating_sub(1);
    ok(
        StatusCode::OK,
        json!({
            "calls": calls,
            "first_page_uri": uri_for(0, None),
            "next_page_uri": next,
            "previous_page_uri": previous,
            "page": page,
            "page_size": page_size,
            "start": start,
            "end": end,
            "uri": uri_for(page, param(query, "PageToken").map(str::to_owned)),
        }),
    )
}

fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn not_found(path: &str) -> Answer {
    err(
        404,
        20404,
        &format!("The requested resource {path} was not found"),
    )
}

fn fault_answer(fault: Fault) -> Answer {
    match fault {
        Fault::TooManyRequests { retry_after } => {
            let mut answer = err(429, 20429, "Too Many Requests");
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                answer
                    .response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, value);
            }
            answer
        }
        Fault::ServerError | Fault::ServerErrorAfterActing | Fault::StallAfterActing(_) => {
            err(500, 20500, "Internal Server Error")
        }
        Fault::Error {
            status,
            code,
            message,
        } => err(status, code, &message),
    }
}

/// The refusal, if a field name is not one of `allowed` or is repeated.
fn check_names(form: &[(String, String)], allowed: &[&str]) -> Option<Answer> {
    for (i, (name, _)) in form.iter().enumerate() {
        if !allowed.contains(&name.as_str()) {
            return Some(err(
                400,
                20001,
                &format!("fake: unknown parameter {name:?}"),
            ));
        }
        if form[..i].iter().any(|(n, _)| n == name) {
            return Some(err(400, 20001, &format!("fake: {name} given twice")));
        }
    }
    None
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn update_call(
    inner: &Inner,
    account: &str,
    path: &str,
    call_sid: &str,
    form: &[(String, String)],
) -> Answer {
    const ALLOWED: &[&str] = &[
        "Twiml",
        "Url",
        "Method",
        "Status",
        "StatusCallback",
        "StatusCallbackMethod",
        "FallbackUrl",
        "FallbackMethod",
        "TimeLimit",
    ];
    if let Some(answer) = check_names(form, ALLOWED) {
        return answer;
    }
    let mut model = inner.model.lock().unwrap();
    let Some(call) = model
        .calls
        .get_mut(call_sid)
        .filter(|c| c.account_sid == account)
    else {
        return not_found(path);
    };
    let twiml = param(form, "Twiml");
    let url = param(form, "Url");
    if twiml.is_some() && url.is_some() {
        return err(
            400,
            20001,
            "fake: Twiml and Url are mutually exclusive on a call update",
        );
    }
    if let Some(method) = param(form, "Method")
        && !matches!(method, "GET" | "POST")
    {
        return err(400, 20001, "fake: Method must be GET or POST");
    }
    let live = matches!(call.status.as_str(), "queued" | "ringing" | "in-progress");
    if let Some(status) = param(form, "Status") {
        match status {
            "completed" if live => {
                call.status = "completed".to_owned();
                inner.notify(RestEvent::StatusSet {
                    sid: call.sid.clone(),
                    status: "completed".to_owned(),
                });
            }
            "canceled" if matches!(call.status.as_str(), "queued" | "ringing") => {
                call.status = "canceled".to_owned();
                inner.notify(RestEvent::StatusSet {
                    sid: call.sid.clone(),
                    status: "canceled".to_owned(),
                });
            }
            "completed" | "canceled" => {
                return err(
                    400,
                    21220,
                    "Call is not in a state that allows this update.",
                );
            }
            other => {
                return err(
                    400,
                    20001,
                    &format!("fake: Status {other:?} is not completed or canceled"),
                );
            }
        }
    } else if let Some(twiml) = twiml {
        if !live {
            return err(400, 21220, "Call is not in-progress. Cannot redirect.");
        }
        let chars = twiml.chars().count();
        if chars > MAX_TWIML_CHARS {
            return err(
                400,
                20001,
                &format!("fake: Twiml of {chars} characters is over {MAX_TWIML_CHARS}"),
            );
        }
        let root = match xml::parse(twiml) {
            Ok(root) => root,
            Err(why) => {
                return err(
                    400,
                    20001,
                    &format!("fake: Twiml is not well-formed XML: {why}"),
                );
            }
        };
        if root.name != "Response" {
            return err(
                400,
                20001,
                &format!("fake: the TwiML root is <{}>, not <Response>", root.name),
            );
        }
        let mut dialed = Vec::new();
        for dial in root.children_named("Dial") {
            let numbers: Vec<String> = dial
                .children_named("Number")
                .map(|n| n.text().trim().to_owned())
                .collect();
            let targets = if numbers.is_empty() {
                vec![dial.text().trim().to_owned()]
            } else {
                numbers
            };
            for target in targets {
                if !is_e164(&target) {
                    return err(
                        400,
                        20001,
                        &format!("fake: <Dial> target {target:?} is not E.164"),
                    );
                }
                dialed.push(target);
            }
            if let Some(id) = dial.attribute("callerId")
                && !is_e164(id)
            {
                return err(400, 20001, &format!("fake: callerId {id:?} is not E.164"));
            }
        }
        call.redirects.push(twiml.to_owned());
        call.dialed.extend(dialed);
    } else if let Some(url) = url {
        if !live {
            return err(400, 21220, "Call is not in-progress. Cannot redirect.");
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return err(400, 21205, "Url is not a valid URL.");
        }
        call.redirect_urls.push(url.to_owned());
    } else {
        return err(400, 20001, "fake: nothing to update");
    }
    let body = call_json(call, None);
    ok(StatusCode::OK, body)
}

/// Calls create (§2.2), with the checks Twilio makes.
fn create_call(inner: &Inner, account: &str, form: &[(String, String)]) -> Answer {
    const ALLOWED: &[&str] = &[
        "To",
        "From",
        "Url",
        "Method",
        "Twiml",
        "ApplicationSid",
        "FallbackUrl",
        "FallbackMethod",
        "StatusCallback",
        "StatusCallbackEvent",
        "StatusCallbackMethod",
        "Timeout",
        "TimeLimit",
        "Record",
        "SendDigits",
        "MachineDetection",
        "MachineDetectionTimeout",
        "AsyncAmd",
        "AsyncAmdStatusCallback",
        "AsyncAmdStatusCallbackMethod",
        "CallerId",
    ];
    for (i, (name, _)) in form.iter().enumerate() {
        if !ALLOWED.contains(&name.as_str()) {
            return err(400, 20001, &format!("fake: unknown parameter {name:?}"));
        }
        if name != "StatusCallbackEvent" && form[..i].iter().any(|(n, _)| n == name) {
            return err(400, 20001, &format!("fake: {name} given twice"));
        }
    }
    let Some(to) = param(form, "To") else {
        return err(400, 21201, "No 'To' number is specified");
    };
    if !is_e164(to) {
        return err(
            400,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    let Some(from) = param(form, "From") else {
        return err(400, 21213, "No 'From' number is specified");
    };
    if !is_e164(from) {
        return err(
            400,
            21212,
            &format!("The 'From' number {from} is not a valid phone number."),
        );
    }
    if !inner.config.numbers.iter().any(|n| n == from) {
        return err(
            400,
            21210,
            &format!(
                "The source phone number provided, {from}, is not yet verified for your account."
            ),
        );
    }
    if to == from {
        return err(
            400,
            21211,
            "The 'To' number cannot be the same as the 'From' number.",
        );
    }
    let sources = ["Url", "Twiml", "ApplicationSid"]
        .iter()
        .filter(|n| param(form, n).is_some())
        .count();
    if sources != 1 {
        return err(
            400,
            21205,
            "fake: exactly one of Url, Twiml and ApplicationSid is required",
        );
    }
    for name in [
        "Url",
        "StatusCallback",
        "AsyncAmdStatusCallback",
        "FallbackUrl",
    ] {
        if let Some(url) = param(form, name)
            && !valid_callback_url(url)
        {
            return err(400, 21205, &format!("{name} is not a valid URL: {url}"));
        }
    }
    for name in [
        "Method",
        "StatusCallbackMethod",
        "AsyncAmdStatusCallbackMethod",
        "FallbackMethod",
    ] {
        if let Some(method) = param(form, name)
            && !matches!(method, "GET" | "POST")
        {
            return err(400, 20001, &format!("fake: {name} must be GET or POST"));
        }
    }
    for (name, value) in form {
        if name == "StatusCallbackEvent"
            && !matches!(
                value.as_str(),
                "initiated" | "ringing" | "answered" | "completed"
            )
        {
            return err(
                400,
                20001,
                &format!("fake: StatusCallbackEvent {value:?} is not a call progress event"),
            );
        }
    }
    if let Some(timeout) = param(form, "Timeout")
        && !timeout.parse::<u32>().is_ok_and(|t| (1..=600).contains(&t))
    {
        return err(400, 20001, "fake: Timeout must be 1–600");
    }
    if let Some(limit) = param(form, "TimeLimit")
        && !limit.parse::<u32>().is_ok_and(|t| t >= 1)
    {
        return err(400, 20001, "fake: TimeLimit must be a positive number");
    }
    for name in ["Record", "AsyncAmd"] {
        if let Some(flag) = param(form, name)
            && !matches!(flag, "true" | "false")
        {
            return err(400, 20001, &format!("fake: {name} must be true or false"));
        }
    }
    if let Some(amd) = param(form, "MachineDetection")
        && !matches!(amd, "Enable" | "DetectMessageEnd")
    {
        return err(
            400,
            20001,
            "fake: MachineDetection must be Enable or DetectMessageEnd",
        );
    }
    if param(form, "AsyncAmd") == Some("true") && param(form, "MachineDetection").is_none() {
        return err(400, 20001, "fake: AsyncAmd without MachineDetection");
    }
    let mut model = inner.model.lock().unwrap();
    model.next_call += 1;
    let sid = format!("CA{:032x}", model.next_call);
    let call = FakeCall {
        sid: sid.clone(),
        account_sid: account.to_owned(),
        status: "queued".to_owned(),
        redirects: Vec::new(),
        dialed: Vec::new(),
        redirect_urls: Vec::new(),
        to: to.to_owned(),
        from: from.to_owned(),
        direction: "outbound-api".to_owned(),
        create_form: form.to_vec(),
    };
    let facts = CallFacts::now();
    let body = call_json(&call, Some(&facts));
    model.facts.insert(sid.clone(), facts);
    model.calls.insert(sid, call.clone());
    drop(model);
    inner.notify(RestEvent::Created(call));
    ok(StatusCode::CREATED, body)
}

/// An absolute http(s) URL whose host has no underscore.
fn valid_callback_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !host.is_empty() && !host.contains('_') && !host.contains(' ')
}

fn call_json(call: &FakeCall, facts: Option<&CallFacts>) -> Value {
    let rfc2822 = |d: &DateTime<Utc>| d.format("%a, %d %b %Y %H:%M:%S +0000").to_string();
    let created = facts
        .map(|f| rfc2822(&f.created))
        .unwrap_or_else(|| "Fri, 18 Oct 2019 17:00:00 +0000".to_owned());
    let started = (call.status != "queued").then(|| created.clone());
    json!({
        "sid": call.sid, "account_sid": call.account_sid, "parent_call_sid": null,
        "to": call.to, "to_formatted": call.to,
        "from": call.from, "from_formatted": call.from,
        "phone_number_sid": "PN0123456789abcdef0123456789abcdef",
        "status": call.status, "direction": call.direction,
        "answered_by": facts.and_then(|f| f.answered_by.clone()),
        "api_version": "2010-04-01", "caller_name": null, "forwarded_from": null,
        "group_sid": null, "trunk_sid": null, "queue_time": "0",
        "start_time": started, "end_time": null,
        "duration": facts.and_then(|f| f.duration).map(|d| d.to_string()),
        "price": null, "price_unit": "USD",
        "date_created": created,
        "date_updated": created,
        "uri": format!("/2010-04-01/Accounts/{}/Calls/{}.json", call.account_sid, call.sid),
        "subresource_uris": {
            "recordings": format!("/2010-04-01/Accounts/{}/Calls/{}/Recordings.json", call.account_sid, call.sid),
            "streams": format!("/2010-04-01/Accounts/{}/Calls/{}/Streams.json", call.account_sid, call.sid),
        },
    })
}

fn create_message(inner: &Inner, account: &str, form: &[(String, String)]) -> Answer {
    const ALLOWED: &[&str] = &[
        "To",
        "From",
        "MessagingServiceSid",
        "Body",
        "MediaUrl",
        "StatusCallback",
        "ValidityPeriod",
        "SendAt",
        "ScheduleType",
        "SmartEncoded",
        "ShortenUrls",
        "ContentSid",
        "ContentVariables",
    ];
    if let Some(answer) = check_names(form, ALLOWED) {
        return answer;
    }
    let Some(to) = param(form, "To") else {
        return err(400, 21604, "A 'To' phone number is required.");
    };
    if !is_e164(to) {
        return err(
            400,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    let Some(from) = param(form, "From") else {
        return err(400, 21603, "A 'From' phone number is required.");
    };
    if !is_e164(from) {
        return err(
            400,
            21212,
            &format!("The 'From' number {from} is not a valid phone number."),
        );
    }
    if !inner.config.numbers.iter().any(|n| n == from) {
        return err(
            400,
            21606,
            &format!(
                "The 'From' phone number provided ({from}) is not a valid message-capable Twilio phone number for this destination/account."
            ),
        );
    }
    let body = param(form, "Body").unwrap_or_default();
    if body.is_empty() {
        return err(400, 21602, "Message body is required.");
    }
    let chars = body.chars().count();
    if chars > MAX_BODY_CHARS {
        return err(
            400,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    if inner.config.opted_out.iter().any(|n| n == to) {
        return err(400, 21610, "Attempt to send to unsubscribed recipient");
    }
    let mut model = inner.model.lock().unwrap();
    model.next_message += 1;
    let sid = format!("SM{:032x}", model.next_message);
    model.messages.push(FakeMessage {
        sid: sid.clone(),
        account_sid: account.to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
        body: body.to_owned(),
    });
    let segments = if body.is_ascii() {
        if chars <= 160 { 1 } else { chars.div_ceil(153) }
    } else if chars <= 70 {
        1
    } else {
        chars.div_ceil(67)
    };
    ok(
        StatusCode::CREATED,
        json!({
            "sid": sid, "account_sid": account, "messaging_service_sid": null,
            "from": from, "to": to, "body": body, "status": "queued",
            "num_segments": segments.to_string(), "num_media": "0",
            "direction": "outbound-api", "price": null, "price_unit": "USD",
            "error_code": null, "error_message": null,
            "date_created": "Fri, 18 Oct 2019 17:00:00 +0000", "date_sent": null,
            "date_updated": "Fri, 18 Oct 2019 17:00:00 +0000", "api_version": "2010-04-01",
            "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
            "subresource_uris": {"media": format!("/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json")},
        }),
    )
}

/// Strict E.164: `+`, a first digit 1–9, 7 to 15 digits.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|d| {
        (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// Decodes `application/x-www-form-urlencoded` (`+` is a space, `%XX` a byte); `None` on a
/// bad escape or bytes that are not UTF-8.
pub fn decode_form(body: &str) -> Option<Vec<(String, String)>> {
    fn component(text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3)?;
                    out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((component(name)?, component(value)?))
        })
        .collect()
}

/// A small XML reader, enough to check that TwiML is well-formed and to read it: elements,
/// attributes (quoted with `"` or `'`), character data with the five named entities and
/// numeric references, comments, and an optional `<?xml …?>` declaration. No DTD, no CDATA.
pub mod xml {
    /// An element.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Element {
        /// Tag name.
        pub name: String,
        /// Attributes in order, values unescaped.
        pub attributes: Vec<(String, String)>,
        /// Child nodes.
        pub children: Vec<Node>,
    }

    /// A child of an element.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Node {
        /// A nested element.
        Element(Element),
        /// Character data, unescaped.
        Text(String),
    }

    impl Element {
        /// Child elements called `name`.
        pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
            self.children.iter().filter_map(move |c| match c {
                Node::Element(e) if e.name == name => Some(e),
                _ => None,
            })
        }

        /// The element's own character data, concatenated.
        pub fn text(&self) -> String {
            self.children
                .iter()
                .filter_map(|c| match c {
                    Node::Text(t) => Some(t.as_str()),
                    Node::Element(_) => None,
                })
                .collect()
        }

        /// An attribute's value.
        pub fn attribute(&self, name: &str) -> Option<&str> {
            self.attributes
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    struct Reader<'a> {
        text: &'a str,
        pos: usize,
    }

    /// Parses a document; the root element, or why it is not well-formed.
    pub fn parse(text: &str) -> Result<Element, String> {
        let mut r = Reader { text, pos: 0 };
        if r.rest().starts_with("<?xml") {
            let end = r.rest().find("?>").ok_or("unterminated XML declaration")?;
            r.pos += end + 2;
        }
        r.misc()?;
        if !r.rest().starts_with('<') {
            return Err("no root element".into());
        }
        let root = r.element()?;
        r.misc()?;
        if !r.rest().is_empty() {
            return Err(format!("content after the root element at byte {}", r.pos));
        }
        Ok(root)
    }

    impl<'a> Reader<'a> {
        fn rest(&self) -> &'a str {
            &self.text[self.pos..]
        }

        /// Skips whitespace and comments.
        fn misc(&mut self) -> Result<(), String> {
            loop {
                let trimmed = self.rest().trim_start();
                self.pos = self.text.len() - trimmed.len();
                if self.rest().starts_with("<!--") {
                    let end = self.rest().find("-->").ok_or("unterminated comment")?;
                    self.pos += end + 3;
                } else {
                    return Ok(());
                }
            }
        }

        fn name(&mut self) -> Result<String, String> {
            let len = self
                .rest()
                .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
                .unwrap_or(self.rest().len());
            let name = &self.rest()[..len];
            if name.is_empty()
                || name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(format!("bad name at byte {}", self.pos));
            }
            self.pos += len;
            Ok(name.to_owned())
        }

        fn skip_space(&mut self) -> bool {
            let trimmed = self.rest().trim_start();
            let skipped = self.text.len() - trimmed.len() > self.pos;
            self.pos = self.text.len() - trimmed.len();
            skipped
        }

        fn element(&mut self) -> Result<Element, String> {
            self.pos += 1; // '<'
            let name = self.name()?;
            let mut attributes: Vec<(String, String)> = Vec::new();
            loop {
                let spaced = self.skip_space();
                let rest = self.rest();
                if let Some(after) = rest.strip_prefix("/>") {
                    self.pos = self.text.len() - after.len();
                    return Ok(Element {
                        name,
                        attributes,
                        children: Vec::new(),
                    });
                }
                if rest.starts_with('>') {
                    self.pos += 1;
                    break;
                }
                if !spaced {
                    return Err(format!(
                        "expected a space before an attribute at byte {}",
                        self.pos
                    ));
                }
                let attribute = self.name()?;
                self.skip_space();
                if !self.rest().starts_with('=') {
                    return Err(format!("attribute {attribute} has no value"));
                }
                self.pos += 1;
                self.skip_space();
                let quote = self
                    .rest()
                    .chars()
                    .next()
                    .filter(|c| *c == '"' || *c == '\'')
                    .ok_or_else(|| format!("attribute {attribute} is not quoted"))?;
                self.pos += 1;
                let end = self
                    .rest()
                    .find(quote)
                    .ok_or_else(|| format!("attribute {attribute} is not closed"))?;
                let raw = &self.rest()[..end];
                if raw.contains('<') {
                    return Err(format!("'<' in attribute {attribute}"));
                }
                let value = unescape(raw)?;
                self.pos += end + 1;
                if attributes.iter().any(|(k, _)| *k == attribute) {
                    return Err(format!("attribute {attribute} given twice"));
                }
                attributes.push((attribute, value));
            }
            let mut children = Vec::new();
            loop {
                let rest = self.rest();
                if rest.is_empty() {
                    return Err(format!("<{name}> is not closed"));
                }
                if let Some(after) = rest.strip_prefix("</") {
                    self.pos = self.text.len() - after.len();
                    let closing = self.name()?;
                    if closing != name {
                        return Err(format!("</{closing}> closes <{name}>"));
                    }
                    self.skip_space();
                    if !self.rest().starts_with('>') {
                        return Err(format!("</{closing} is not closed"));
                    }
                    self.pos += 1;
                    return Ok(Element {
                        name,
                        attributes,
                        children,
                    });
                }
                if rest.starts_with("<!--") {
                    let end = rest.find("-->").ok_or("unterminated comment")?;
                    self.pos += end + 3;
                } else if rest.starts_with("<!") || rest.starts_with("<?") {
                    return Err(format!("unsupported markup at byte {}", self.pos));
                } else if rest.starts_with('<') {
                    children.push(Node::Element(self.element()?));
                } else {
                    let end = rest.find('<').unwrap_or(rest.len());
                    let raw = &rest[..end];
                    if raw.contains("]]>") {
                        return Err("']]>' in character data".into());
                    }
                    children.push(Node::Text(unescape(raw)?));
                    self.pos += end;
                }
            }
        }
    }

    /// Replaces entity and character references; a bare `&` is an error.
    fn unescape(raw: &str) -> Result<String, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = rest.find('&') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            let end = rest.find(';').ok_or("'&' without ';'")?;
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let code = if let Some(hex) = entity.strip_prefix("#x") {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = entity.strip_prefix('#') {
                        dec.parse().ok()
                    } else {
                        None
                    };
                    code.and_then(char::from_u32)
                        .ok_or_else(|| format!("unknown entity &{entity};"))?
                }
            };
            out.push(c);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        if out
            .chars()
            .any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err("a control character XML does not allow".into());
        }
        Ok(out)
    }
}
