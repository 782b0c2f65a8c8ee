//! A local fake of OpenAI's Chat Completions (`POST /v1/chat/completions`, streaming only) and
//! `GET /v1/models`, on 127.0.0.1.
//!
//! It checks requests like the real API — Bearer key, JSON shape, message roles and content,
//! tool messages answering an earlier assistant `tool_calls` id, tool definitions (names,
//! strict schemas), `stream`/`stream_options`, `max_completion_tokens`, `temperature` — and
//! refuses with OpenAI's error JSON `{"error":{"message","type","param","code"}}`. Answers are
//! scripted ([`Rule`]s matched on the last user message) and streamed as Server-Sent Events
//! chunk by chunk, the way `../shared/specs/providers.md` §3.2 shows. Faults are queued and
//! consumed one per accepted request.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the fake answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A text answer; `{user}` is replaced by the last user message.
    Text(String),
    /// One tool call; once the tool's result comes back (the last message is a `tool`
    /// message), the answer is `then` with `{result}` replaced by that message's content.
    Tool {
        /// Function name.
        name: String,
        /// Arguments (sent as JSON text, in fragments).
        arguments: Value,
        /// The answer after the result.
        then: String,
    },
    /// Several tool calls in one turn (indices 0, 1, …), then `then` as for [`Reply::Tool`].
    Tools {
        /// (name, arguments) of each call.
        calls: Vec<(String, Value)>,
        /// The answer after the results.
        then: String,
    },
}

/// Answer `reply` when the last user message contains `user_contains` (case-insensitive).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Text to look for.
    pub user_contains: String,
    /// The answer.
    pub reply: Reply,
}

/// A failure injected into one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status (429 `rate_limit_exceeded`, 500 `server_error`, 503, …) and
    /// optionally a `retry-after` header.
    Status {
        /// HTTP status.
        status: u16,
        /// `retry-after` seconds.
        retry_after_secs: Option<u64>,
    },
    /// 429 with `insufficient_quota` (not worth retrying).
    Quota,
    /// 200 and the SSE headers, then nothing, ever.
    Stall,
    /// Send this many chunks, then end the body without `[DONE]`.
    DropAfter {
        /// Chunks sent (the role chunk counts).
        chunks: usize,
    },
    /// Send the role chunk and two tokens, then a `data: {"error": …}` event, then end.
    MidStreamError,
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct ChatFakeConfig {
    /// The key clients must send as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Delay before the first content or tool-call chunk (the role chunk goes at once).
    pub first_token_delay_ms: u64,
    /// Delay between later chunks.
    pub token_delay_ms: u64,
    /// Scripted answers, first match wins.
    pub rules: Vec<Rule>,
    /// The answer when no rule matches.
    pub default_reply: Reply,
}

impl Default for ChatFakeConfig {
    fn default() -> Self {
        ChatFakeConfig {
            api_key: "sk-test-key".to_string(),
            first_token_delay_ms: 0,
            token_delay_ms: 2,
            rules: Vec::new(),
            default_reply: Reply::Text("You said: {user}.".to_string()),
        }
    }
}

/// State shared with the handlers.
struct Shared {
    config: ChatFakeConfig,
    faults: Mutex<VecDeque<Fault>>,
    log: Mutex<Vec<Value>>,
    count: AtomicUsize,
    down: AtomicBool,
    next_id: AtomicU64,
}

/// A running fake; the server stops when this is dropped.
pub struct ChatFake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ChatFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ChatFake {
    /// Starts the fake on a random port of 127.0.0.1.
    pub async fn start(config: ChatFakeConfig) -> Result<ChatFake, std::io::Error> {
        let shared = Arc::new(Shared {
            config,
            faults: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ChatFake {
            addr,
            shared,
            server,
        })
    }

    /// The fake's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base to configure: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The key the fake accepts.
    pub fn api_key(&self) -> &str {
        &self.shared.config.api_key
    }

    /// Queues a fault for a later request (one per accepted request, in order).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// While down, every request gets 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Bodies of the chat completion requests, as received (JSON, or a string if not JSON).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.log).clone()
    }

    /// How many chat completion requests arrived (accepted or not).
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A response carrying OpenAI's error JSON.
fn api_error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: impl Into<String>,
    request_id: &str,
) -> Response {
    let body =
        json!({"error": {"message": message.into(), "type": kind, "param": param, "code": code}});
    respond(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        request_id,
        &[],
        Body::from(body.to_string()),
    )
}

/// A 400 `invalid_request_error`.
fn invalid(param: Option<&str>, message: impl Into<String>, request_id: &str) -> Response {
    api_error(
        400,
        "invalid_request_error",
        None,
        param,
        message,
        request_id,
    )
}

/// The auth check: `None` when the Bearer key is right.
fn check_auth(shared: &Shared, headers: &HeaderMap, request_id: &str) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let expected = format!("Bearer {}", shared.config.api_key);
    match given {
        Some(v) if v == expected => None,
        Some(v) => {
            let key = v.strip_prefix("Bearer ").unwrap_or(v);
            let shown: String = key.chars().take(6).collect();
            Some(api_error(
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
                None,
                format!(
                    "Incorrect API key provided: {shown}***. You can find your API key at https://platform.openai.com/account/api-keys."
                ),
                request_id,
            ))
        }
        None => Some(api_error(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            request_id,
        )),
    }
}

fn request_id(shared: &Shared) -> String {
    format!(
        "req_fake{:06}",
        shared.next_id.fetch_add(1, Ordering::SeqCst)
    )
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let rid = request_id(&shared);
    if shared.down.load(Ordering::SeqCst) {
        return overloaded(&rid);
    }
    if let Some(refusal) = check_auth(&shared, &headers, &rid) {
        return refusal;
    }
    let body = json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
    ]});
    respond(
        StatusCode::OK,
        "application/json",
        &rid,
        &[],
        Body::from(body.to_string()),
    )
}

fn overloaded(rid: &str) -> Response {
    api_error(
        503,
        "server_error",
        None,
        None,
        "The engine is currently overloaded, please try again later.",
        rid,
    )
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&shared);
    shared.count.fetch_add(1, Ordering::SeqCst);
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    lock(&shared.log).push(match &parsed {
        Ok(v) => v.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    });
    if shared.down.load(Ordering::SeqCst) {
        return overloaded(&rid);
    }
    if let Some(refusal) = check_auth(&shared, &headers, &rid) {
        return refusal;
    }
    let Ok(body) = parsed else {
        return invalid(
            None,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            &rid,
        );
    };
    let request = match validate(&body) {
        Ok(r) => r,
        Err((param, message)) => return invalid(param.as_deref(), message, &rid),
    };
    let fault = lock(&shared.faults).pop_front();
    let events = plan(&shared, &request);
    let config = &shared.config;
    let first = Duration::from_millis(config.first_token_delay_ms);
    let step = Duration::from_millis(config.token_delay_ms);
    let timed = |events: Vec<String>| -> VecDeque<(Duration, String)> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let delay = match i {
                    0 => Duration::ZERO,
                    1 => first,
                    _ => step,
                };
                (delay, e)
            })
            .collect()
    };
    let (events, done) = match fault {
        None => (timed(events), true),
        Some(Fault::Status {
            status,
            retry_after_secs,
        }) => {
            let mut response = match status {
                429 => api_error(
                    429,
                    "requests",
                    Some("rate_limit_exceeded"),
                    None,
                    format!(
                        "Rate limit reached for {} in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
                        request.model
                    ),
                    &rid,
                ),
                500 => api_error(
                    500,
                    "server_error",
                    None,
                    None,
                    "The server had an error while processing your request. Sorry about that!",
                    &rid,
                ),
                503 => overloaded(&rid),
                other => api_error(
                    other,
                    "api_error",
                    None,
                    None,
                    format!("injected status {other}"),
                    &rid,
                ),
            };
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
            }
            return response;
        }
        Some(Fault::Quota) => {
            return api_error(
                429,
                "insufficient_quota",
                Some("insufficient_quota"),
                None,
                "You exceeded your current quota, please check your plan and billing details.",
                &rid,
            );
        }
        Some(Fault::Stall) => {
            let pending = futures::stream::pending::<Result<Bytes, Infallible>>();
            return sse_response(Body::from_stream(pending), &rid);
        }
        Some(Fault::DropAfter { chunks }) => {
            let mut events = timed(events);
            events.truncate(chunks);
            (events, false)
        }
        Some(Fault::MidStreamError) => {
            let mut events = timed(events);
            events.truncate(3);
            let error = json!({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}});
            events.push_back((step, error.to_string()));
            (events, false)
        }
    };
    let mut frames: VecDeque<(Duration, Bytes)> = events
        .into_iter()
        .map(|(d, e)| (d, Bytes::from(format!("data: {e}\n\n"))))
        .collect();
    if done {
        frames.push_back((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
    }
    let stream = futures::stream::unfold(frames, |mut frames| async move {
        let (delay, frame) = frames.pop_front()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<Bytes, Infallible>(frame), frames))
    });
    sse_response(Body::from_stream(stream), &rid)
}

fn sse_response(body: Body, rid: &str) -> Response {
    respond(
        StatusCode::OK,
        "text/event-stream; charset=utf-8",
        rid,
        &[
            (header::CACHE_CONTROL.as_str(), "no-cache"),
            ("openai-processing-ms", "12"),
        ],
        body,
    )
}

/// A response with `status`, a `content-type`, the request id (left out if it is not a valid
/// header value) and extra static headers.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    rid: &str,
    extra: &[(&'static str, &'static str)],
    body: Body,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(rid) {
        headers.insert("x-request-id", value);
    }
    for (name, value) in extra {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    response
}

/// What the fake needs from a valid request.
struct Checked {
    model: String,
    include_usage: bool,
    /// The last user message's text.
    last_user: String,
    /// The content of the last message if it is a `tool` message.
    tool_result: Option<String>,
    /// Rough prompt size.
    prompt_words: usize,
}

type Invalid = (Option<String>, String);

fn bad(param: impl Into<String>, message: impl Into<String>) -> Invalid {
    (Some(param.into()), message.into())
}

/// Top-level parameters the Chat Completions API knows.
const KNOWN_PARAMS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "n",
    "stop",
    "user",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "store",
    "metadata",
    "service_tier",
    "prediction",
    "modalities",
    "audio",
    "reasoning_effort",
    "verbosity",
    "web_search_options",
    "safety_identifier",
    "prompt_cache_key",
];

/// Checks a request body like the real API (stricter on `stream`: it must be true).
fn validate(body: &Value) -> Result<Checked, Invalid> {
    let Some(obj) = body.as_object() else {
        return Err((None, "The request body must be a JSON object.".to_string()));
    };
    if let Some(unknown) = obj.keys().find(|k| !KNOWN_PARAMS.contains(&k.as_str())) {
        return Err((
            None,
            format!("Unrecognized request argument supplied: {unknown}"),
        ));
    }
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(bad(
                "model",
                "Invalid type for 'model': expected a non-empty string.",
            ));
        }
        None => return Err(bad("model", "you must provide a model parameter")),
    };
    if obj.contains_key("stream_options") && obj.get("stream") != Some(&Value::Bool(true)) {
        return Err(bad(
            "stream_options",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ));
    }
    match obj.get("stream") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) | None => {
            return Err(bad(
                "stream",
                "This server only serves streaming completions: 'stream' must be true.",
            ));
        }
        Some(_) => {
            return Err(bad(
                "stream",
                "Invalid type for 'stream': expected a boolean.",
            ));
        }
    }
    let mut include_usage = false;
    if let Some(options) = obj.get("stream_options") {
        let Some(options) = options.as_object() else {
            return Err(bad(
                "stream_options",
                "Invalid type for 'stream_options': expected an object.",
            ));
        };
        for (k, v) in options {
            match (k.as_str(), v) {
                ("include_usage", Value::Bool(b)) => include_usage = *b,
                ("include_obfuscation", Value::Bool(_)) => {}
                ("include_usage" | "include_obfuscation", _) => {
                    return Err(bad(
                        format!("stream_options.{k}"),
                        format!("Invalid type for 'stream_options.{k}': expected a boolean."),
                    ));
                }
                _ => {
                    return Err(bad(
                        format!("stream_options.{k}"),
                        format!("Unrecognized stream option: {k}"),
                    ));
                }
            }
        }
    }
    if let Some(v) = obj.get("max_completion_tokens") {
        match v.as_u64() {
            Some(n) if n >= 1 => {}
            _ => {
                return Err(bad(
                    "max_completion_tokens",
                    format!(
                        "Invalid 'max_completion_tokens': expected a positive integer, got {v}."
                    ),
                ));
            }
        }
    }
    if let Some(v) = obj.get("temperature") {
        match v.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => {}
            _ => {
                return Err(bad(
                    "temperature",
                    format!(
                        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {v} instead."
                    ),
                ));
            }
        }
    }
    validate_tools(obj)?;
    let (last_user, tool_result, prompt_words) = validate_messages(obj.get("messages"))?;
    Ok(Checked {
        model,
        include_usage,
        last_user,
        tool_result,
        prompt_words,
    })
}

/// Checks `tools`, `tool_choice` and `parallel_tool_calls`; returns the tool names.
fn validate_tools(obj: &serde_json::Map<String, Value>) -> Result<Vec<String>, Invalid> {
    let mut names = Vec::new();
    if let Some(tools) = obj.get("tools") {
        let Some(tools) = tools.as_array() else {
            return Err(bad("tools", "Invalid type for 'tools': expected an array."));
        };
        for (i, tool) in tools.iter().enumerate() {
            let p = format!("tools[{i}]");
            if tool.get("type") != Some(&json!("function")) {
                return Err(bad(
                    format!("{p}.type"),
                    format!("Invalid value for '{p}.type': expected 'function'."),
                ));
            }
            let Some(function) = tool.get("function").and_then(Value::as_object) else {
                return Err(bad(
                    format!("{p}.function"),
                    format!("Missing required parameter: '{p}.function'."),
                ));
            };
            let name = function.get("name").and_then(Value::as_str).unwrap_or("");
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(bad(
                    format!("{p}.function.name"),
                    format!(
                        "Invalid '{p}.function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$'."
                    ),
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(bad("tools", format!("Duplicate tool name: '{name}'.")));
            }
            if !function.get("description").is_some_and(Value::is_string) {
                return Err(bad(
                    format!("{p}.function.description"),
                    format!("Missing '{p}.function.description' (a string)."),
                ));
            }
            let Some(parameters) = function.get("parameters").filter(|v| v.is_object()) else {
                return Err(bad(
                    format!("{p}.function.parameters"),
                    format!("Invalid '{p}.function.parameters': expected a JSON Schema object."),
                ));
            };
            if parameters.get("type") != Some(&json!("object")) {
                return Err(bad(
                    format!("{p}.function.parameters"),
                    format!(
                        "Invalid schema for function '{name}': schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{}\"'.",
                        parameters.get("type").unwrap_or(&Value::Null)
                    ),
                ));
            }
            match function.get("strict") {
                None | Some(Value::Bool(false)) => {}
                Some(Value::Bool(true)) => check_strict(name, parameters, "()")
                    .map_err(|m| bad(format!("{p}.function.parameters"), m))?,
                Some(_) => {
                    return Err(bad(
                        format!("{p}.function.strict"),
                        "Invalid type for 'strict': expected a boolean.",
                    ));
                }
            }
            if let Some(extra) = function
                .keys()
                .find(|k| !["name", "description", "parameters", "strict"].contains(&k.as_str()))
            {
                return Err(bad(
                    format!("{p}.function.{extra}"),
                    format!("Unknown parameter: '{p}.function.{extra}'."),
                ));
            }
            names.push(name.to_string());
        }
    }
    if let Some(choice) = obj.get("tool_choice") {
        if names.is_empty() {
            return Err(bad(
                "tool_choice",
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            ));
        }
        let ok = match choice {
            Value::String(s) => ["none", "auto", "required"].contains(&s.as_str()),
            Value::Object(o) => {
                o.get("type") == Some(&json!("function"))
                    && o.get("function")
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .is_some_and(|n| names.iter().any(|t| t == n))
            }
            _ => false,
        };
        if !ok {
            return Err(bad(
                "tool_choice",
                format!("Invalid value for 'tool_choice': {choice}."),
            ));
        }
    }
    if let Some(parallel) = obj.get("parallel_tool_calls") {
        if names.is_empty() {
            return Err(bad(
                "parallel_tool_calls",
                "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are specified.",
            ));
        }
        if !parallel.is_boolean() {
            return Err(bad(
                "parallel_tool_calls",
                "Invalid type for 'parallel_tool_calls': expected a boolean.",
            ));
        }
    }
    Ok(names)
}

/// Strict structured-output rules: every object has `additionalProperties: false` and lists
/// every property in `required`.
fn check_strict(name: &str, schema: &Value, context: &str) -> Result<(), String> {
    let is_object = match schema.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    if is_object {
        if schema.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(format!(
                "Invalid schema for function '{name}': In context={context}, 'additionalProperties' is required to be supplied and to be false."
            ));
        }
        let props = schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required: HashSet<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = props.keys().find(|k| !required.contains(k.as_str())) {
            return Err(format!(
                "Invalid schema for function '{name}': In context={context}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing}'."
            ));
        }
        for (key, sub) in &props {
            check_strict(name, sub, &format!("('properties', '{key}')"))?;
        }
    }
    if let Some(items) = schema.get("items") {
        check_strict(name, items, &format!("{context}, 'items'"))?;
    }
    Ok(())
}

/// The text of a `content` (string or array of text parts) or an error.
fn content_text(content: &Value, param: &str, allowed_parts: &[&str]) -> Result<String, Invalid> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                if !allowed_parts.contains(&kind) {
                    return Err(bad(
                        format!("{param}[{i}].type"),
                        format!(
                            "Invalid value: '{kind}'. Supported values are: {}.",
                            allowed_parts
                                .iter()
                                .map(|p| format!("'{p}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                match kind {
                    "text" => match part.get("text").and_then(Value::as_str) {
                        Some(t) => text.push_str(t),
                        None => {
                            return Err(bad(
                                format!("{param}[{i}].text"),
                                format!("Missing required parameter: '{param}[{i}].text'."),
                            ));
                        }
                    },
                    "refusal" if !part.get("refusal").is_some_and(Value::is_string) => {
                        return Err(bad(
                            format!("{param}[{i}].refusal"),
                            format!("Missing required parameter: '{param}[{i}].refusal'."),
                        ));
                    }
                    _ => {}
                }
            }
            Ok(text)
        }
        other => Err(bad(
            param,
            format!(
                "Invalid type for '{param}': expected one of a string or array of objects, but got {} instead.",
                json_type(other)
            ),
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the messages; returns the last user text, the last tool result (if the conversation
/// ends with one) and a word count.
fn validate_messages(messages: Option<&Value>) -> Result<(String, Option<String>, usize), Invalid> {
    let Some(messages) = messages else {
        return Err(bad("messages", "Missing required parameter: 'messages'."));
    };
    let Some(messages) = messages.as_array() else {
        return Err(bad(
            "messages",
            "Invalid type for 'messages': expected an array of objects.",
        ));
    };
    if messages.is_empty() {
        return Err(bad(
            "messages",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ));
    }
    let mut last_user = String::new();
    let mut tool_result = None;
    let mut words = 0usize;
    // Ids of the latest assistant tool calls not yet answered, and all ids seen.
    let mut unanswered: Vec<String> = Vec::new();
    let mut answered_block = false;
    for (i, m) in messages.iter().enumerate() {
        let p = format!("messages[{i}]");
        let Some(obj) = m.as_object() else {
            return Err(bad(
                p.clone(),
                format!("Invalid type for '{p}': expected an object."),
            ));
        };
        let role = obj.get("role").and_then(Value::as_str).unwrap_or("");
        let allowed: &[&str] = match role {
            "system" | "developer" | "user" => &["role", "content", "name"],
            "assistant" => &[
                "role",
                "content",
                "name",
                "tool_calls",
                "refusal",
                "audio",
                "function_call",
            ],
            "tool" => &["role", "content", "tool_call_id"],
            _ => {
                return Err(bad(
                    format!("{p}.role"),
                    format!(
                        "Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."
                    ),
                ));
            }
        };
        if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(
                format!("{p}.{extra}"),
                format!("Additional properties are not allowed ('{extra}' was unexpected) - '{p}'"),
            ));
        }
        if role != "tool" && !unanswered.is_empty() {
            return Err(bad(
                "messages",
                format!(
                    "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                    unanswered.join(", ")
                ),
            ));
        }
        tool_result = None;
        match role {
            "system" | "developer" | "user" => {
                let Some(content) = obj.get("content") else {
                    return Err(bad(
                        format!("{p}.content"),
                        format!("Missing required parameter: '{p}.content'."),
                    ));
                };
                let parts: &[&str] = if role == "user" {
                    &["text", "image_url", "input_audio", "file"]
                } else {
                    &["text"]
                };
                let text = content_text(content, &format!("{p}.content"), parts)?;
                words += text.split_whitespace().count();
                if role == "user" {
                    last_user = text;
                }
                answered_block = false;
            }
            "assistant" => {
                let calls = obj.get("tool_calls");
                match obj.get("content") {
                    None | Some(Value::Null) => {
                        if calls.is_none() {
                            return Err(bad(
                                format!("{p}.content"),
                                format!(
                                    "Missing required parameter: '{p}.content' (required unless 'tool_calls' is given)."
                                ),
                            ));
                        }
                    }
                    Some(content) => {
                        let text =
                            content_text(content, &format!("{p}.content"), &["text", "refusal"])?;
                        words += text.split_whitespace().count();
                    }
                }
                if let Some(calls) = calls {
                    let Some(calls) = calls.as_array().filter(|c| !c.is_empty()) else {
                        return Err(bad(
                            format!("{p}.tool_calls"),
                            format!("Invalid '{p}.tool_calls': expected a non-empty array."),
                        ));
                    };
                    for (j, call) in calls.iter().enumerate() {
                        let cp = format!("{p}.tool_calls[{j}]");
                        let id = call.get("id").and_then(Value::as_str).unwrap_or("");
                        if id.is_empty() {
                            return Err(bad(
                                format!("{cp}.id"),
                                format!("Missing required parameter: '{cp}.id'."),
                            ));
                        }
                        if call.get("type") != Some(&json!("function")) {
                            return Err(bad(
                                format!("{cp}.type"),
                                format!("Missing required parameter: '{cp}.type' ('function')."),
                            ));
                        }
                        let function = call.get("function");
                        let name = function
                            .and_then(|f| f.get("name"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if name.is_empty() {
                            return Err(bad(
                                format!("{cp}.function.name"),
                                format!("Missing required parameter: '{cp}.function.name'."),
                            ));
                        }
                        if !function
                            .and_then(|f| f.get("arguments"))
                            .is_some_and(Value::is_string)
                        {
                            return Err(bad(
                                format!("{cp}.function.arguments"),
                                format!(
                                    "Invalid type for '{cp}.function.arguments': expected a string."
                                ),
                            ));
                        }
                        unanswered.push(id.to_string());
                    }
                    answered_block = true;
                } else {
                    answered_block = false;
                }
            }
            _ => {
                let id = obj
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some(pos) = unanswered
                    .iter()
                    .position(|u| u == id)
                    .filter(|_| answered_block)
                else {
                    return Err(bad(
                        format!("{p}.role"),
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                    ));
                };
                unanswered.remove(pos);
                let Some(content) = obj.get("content") else {
                    return Err(bad(
                        format!("{p}.content"),
                        format!("Missing required parameter: '{p}.content'."),
                    ));
                };
                let text = content_text(content, &format!("{p}.content"), &["text"])?;
                words += text.split_whitespace().count();
                tool_result = Some(text);
            }
        }
    }
    if !unanswered.is_empty() {
        return Err(bad(
            "messages",
            format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                unanswered.join(", ")
            ),
        ));
    }
    Ok((last_user, tool_result, words))
}

/// The chunks (JSON texts) of the answer to `request`.
fn plan(shared: &Shared, request: &Checked) -> Vec<String> {
    let config = &shared.config;
    let needle = request.last_user.to_lowercase();
    let matched = config
        .rules
        .iter()
        .find(|r| needle.contains(&r.user_contains.to_lowercase()))
        .map(|r| &r.reply);
    let reply = match (&request.tool_result, matched) {
        (Some(result), Some(Reply::Tool { then, .. } | Reply::Tools { then, .. })) => {
            Reply::Text(then.replace("{result}", result))
        }
        (Some(_), _) => config.default_reply.clone(),
        (None, Some(reply)) => reply.clone(),
        (None, None) => config.default_reply.clone(),
    };
    let n = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let id = format!("chatcmpl-fake{n}");
    let usage_field = request.include_usage;
    let chunk = |choices: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": 1731000000u32,
            "model": format!("{}-2024-07-18", request.model),
            "system_fingerprint": "fp_fake", "choices": choices,
        });
        if usage_field {
            c["usage"] = Value::Null;
        }
        c.to_string()
    };
    let mut out = Vec::new();
    let completion_tokens;
    match reply {
        Reply::Text(text) => {
            let text = text.replace("{user}", &request.last_user);
            out.push(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}])));
            let tokens = tokenize(&text);
            completion_tokens = tokens.len();
            for t in tokens {
                out.push(chunk(json!([{"index": 0, "delta": {"content": t}, "logprobs": null, "finish_reason": null}])));
            }
            out.push(chunk(
                json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
            ));
        }
        Reply::Tool {
            name, arguments, ..
        } => {
            completion_tokens = tool_chunks(&mut out, &chunk, &[(name, arguments)], n);
        }
        Reply::Tools { calls, .. } => {
            completion_tokens = tool_chunks(&mut out, &chunk, &calls, n);
        }
    }
    if request.include_usage {
        let usage = json!({
            "id": id, "object": "chat.completion.chunk", "created": 1731000000u32,
            "model": format!("{}-2024-07-18", request.model), "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": {
                "prompt_tokens": request.prompt_words + 8, "completion_tokens": completion_tokens,
                "total_tokens": request.prompt_words + 8 + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
            }
        });
        out.push(usage.to_string());
    }
    out
}

/// Pushes the chunks of tool calls (id and name on the first fragment of each, arguments in
/// several fragments); returns a token count.
fn tool_chunks(
    out: &mut Vec<String>,
    chunk: &dyn Fn(Value) -> String,
    calls: &[(String, Value)],
    n: u64,
) -> usize {
    out.push(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": null}, "logprobs": null, "finish_reason": null}])));
    let mut tokens = 0;
    for (index, (name, arguments)) in calls.iter().enumerate() {
        let id = format!("call_fake{n}x{index}");
        out.push(chunk(json!([{"index": 0, "delta": {"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}, "logprobs": null, "finish_reason": null}])));
        let text = arguments.to_string();
        let chars: Vec<char> = text.chars().collect();
        let size = (chars.len() / 3).max(1);
        for piece in chars.chunks(size) {
            let piece: String = piece.iter().collect();
            tokens += 1;
            out.push(chunk(json!([{"index": 0, "delta": {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, "logprobs": null, "finish_reason": null}])));
        }
    }
    out.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]),
    ));
    tokens
}

/// Splits text into model-like tokens: words with their leading space, punctuation apart.
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        let starts_new = !current.is_empty()
            && ((c.is_whitespace() && !current.trim().is_empty())
                || matches!(c, ',' | '.' | '!' | '?' | ';' | ':'));
        if starts_new {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}
