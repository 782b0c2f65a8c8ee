//! A local Deepgram live speech-to-text server: `ws://127.0.0.1:PORT/v1/listen` (plus
//! `GET /v1/projects` for the credential check).
//!
//! It checks requests like the real API: `Authorization: Token <key>` (else HTTP 401), known
//! query parameters only (else 400 `INVALID_QUERY_PARAMETER`), `encoding` one of `mulaw`,
//! `alaw`, `linear16` with `sample_rate`, `utterance_end_ms` ≥ 1000 and only with
//! `interim_results=true`, `endpointing` an integer or a boolean, `keyterm` only for Nova-3
//! models. Refused upgrades get Deepgram's JSON body
//! `{"err_code","err_msg","request_id"}` and a `dg-error` header; accepted ones a
//! `dg-request-id` header. (The fake only handles raw mono audio: a missing `encoding` or
//! `channels` other than 1 is refused too.)
//!
//! Recognition is scripted. An energy VAD on 20 ms windows (default threshold −40 dBFS) finds
//! speech in the audio **received**; gaps shorter than the endpointing time are bridged. Each
//! speech segment is given the next transcript of the call's script. During speech it sends
//! interim `Results` every `interim_every_ms` of audio with a growing prefix of the words (one
//! word per `ms_per_word` of speech heard); after `endpointing` ms of received silence a final
//! (`is_final`, `speech_final`) with the whole transcript and word times spread over the
//! segment; `UtteranceEnd` once `utterance_end_ms` of audio passed after the last word.
//! `Finalize` closes an open segment (`from_finalize:true`) or answers with an empty final.
//! `CloseStream` flushes, sends `Metadata` and closes 1000. A zero-length binary frame closes
//! 1002 `DATA-0000`; no message for `idle_timeout` closes 1011 `NET-0001`; any other text
//! message gets an `Error` frame and a 1008 close.
//!
//! Scripts: the call is the `extra=call_id:<id>` parameter (a connection without one is its
//! own call). The first connection of a call takes the next script queued with
//! [`FakeListen::push_script`], else [`ListenConfig::default_script`]. The segment counter is
//! per call and counts finals actually **delivered**, so after a reconnect a replayed segment
//! that was never finalized gets the same transcript. **Segments past the end of the script
//! are transcribed as `""`** (like noise: empty interims and an empty final).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::audio::Encoding;
use crate::audio::linear16::{dbfs, rms};

/// Query parameters `/v1/listen` accepts.
const KNOWN_PARAMS: &[&str] = &[
    "model",
    "version",
    "language",
    "encoding",
    "sample_rate",
    "channels",
    "multichannel",
    "interim_results",
    "endpointing",
    "utterance_end_ms",
    "vad_events",
    "punctuate",
    "smart_format",
    "no_delay",
    "keyterm",
    "keywords",
    "diarize",
    "diarize_model",
    "numerals",
    "profanity_filter",
    "redact",
    "replace",
    "search",
    "dictation",
    "detect_entities",
    "filler_words",
    "tag",
    "extra",
    "mip_opt_out",
    "callback",
    "callback_method",
];
/// Parameters that may be repeated.
const REPEATABLE: &[&str] = &[
    "keyterm", "keywords", "redact", "replace", "search", "tag", "extra",
];
/// Boolean parameters.
const BOOLEANS: &[&str] = &[
    "multichannel",
    "interim_results",
    "vad_events",
    "punctuate",
    "smart_format",
    "no_delay",
    "diarize",
    "numerals",
    "profanity_filter",
    "dictation",
    "detect_entities",
    "filler_words",
    "mip_opt_out",
];
/// Deepgram's endpointing when `endpointing=true` (its default).
const DEFAULT_ENDPOINTING_MS: u64 = 10;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The one API key accepted.
    pub api_key: String,
    /// Transcripts for calls without a queued script.
    pub default_script: Vec<String>,
    /// RMS level (dBFS) of a 20 ms window above which it counts as speech.
    pub vad_threshold_dbfs: f32,
    /// Audio (ms) between interim results during speech.
    pub interim_every_ms: u64,
    /// Speech (ms) per word revealed in interims.
    pub ms_per_word: u64,
    /// Wall-clock delay (ms) before each result message is sent.
    pub processing_delay_ms: u64,
    /// Close 1011 `NET-0001` after this long without any client message.
    pub idle_timeout: Duration,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            api_key: "test-key".to_string(),
            default_script: Vec::new(),
            vad_threshold_dbfs: -40.0,
            interim_every_ms: 250,
            ms_per_word: 250,
            processing_delay_ms: 0,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// What one accepted connection did.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLog {
    /// 0-based, in accept order.
    pub index: usize,
    /// The `extra=call_id:<id>` value, if sent.
    pub call_id: Option<String>,
    /// Query pairs in order.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header.
    pub auth: Option<String>,
    /// The `dg-request-id` given.
    pub request_id: String,
    /// Audio bytes received.
    pub audio_bytes: u64,
    /// Binary frames received.
    pub audio_frames: u64,
    /// Audio received, in ms.
    pub audio_ms: u64,
    /// `KeepAlive` messages.
    pub keepalives: u32,
    /// `Finalize` messages.
    pub finalizes: u32,
    /// `CloseStream` messages.
    pub close_streams: u32,
    /// The client sent `CloseStream` or a close frame.
    pub closed_by_client: bool,
    /// Cut by [`FakeListen::drop_after_audio_ms`] (no close frame).
    pub dropped: bool,
    /// The close frame the server sent (code, reason).
    pub server_close: Option<(u16, String)>,
    /// Every JSON message sent, in order.
    pub sent: Vec<Value>,
    /// The connection is over.
    pub ended: bool,
}

impl ConnectionLog {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of query parameter `key`.
    pub fn params(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Sent messages of this `type`.
    pub fn sent_of(&self, kind: &str) -> Vec<&Value> {
        self.sent.iter().filter(|m| m["type"] == kind).collect()
    }

    /// Final `Results` sent.
    pub fn finals(&self) -> Vec<&Value> {
        self.sent_of("Results")
            .into_iter()
            .filter(|m| m["is_final"] == true)
            .collect()
    }
}

/// An upgrade the fake refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// `err_code` of the body.
    pub err_code: String,
    /// `err_msg` of the body.
    pub err_msg: String,
    /// The raw query.
    pub query: String,
}

#[derive(Debug)]
struct CallState {
    script: Vec<String>,
    delivered: usize,
}

#[derive(Debug)]
struct Shared {
    config: ListenConfig,
    scripts: VecDeque<Vec<String>>,
    calls: HashMap<String, CallState>,
    drop_after_ms: Option<u64>,
    refusals: VecDeque<u16>,
    connections: Vec<ConnectionLog>,
    rejections: Vec<Rejection>,
    credential_checks: Vec<Option<String>>,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(shared: &SharedRef) -> MutexGuard<'_, Shared> {
    // A panicking test thread must not hide the log from the others.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running fake. Dropping it stops the server.
pub struct FakeListen {
    addr: SocketAddr,
    shared: SharedRef,
    task: JoinHandle<()>,
}

impl Drop for FakeListen {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeListen {
    /// Starts the server on 127.0.0.1 with a random port.
    pub async fn start(config: ListenConfig) -> Result<FakeListen, std::io::Error> {
        let shared = Arc::new(Mutex::new(Shared {
            config,
            scripts: VecDeque::new(),
            calls: HashMap::new(),
            drop_after_ms: None,
            refusals: VecDeque::new(),
            connections: Vec::new(),
            rejections: Vec::new(),
            credential_checks: Vec::new(),
        }));
        let router = Router::new()
            .route("/v1/listen", get(listen))
            .route("/v1/projects", get(projects))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeListen { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`, the base URL for the client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT/v1/listen`.
    pub fn listen_url(&self) -> String {
        format!("ws://{}/v1/listen", self.addr)
    }

    /// Queues the script for the next new call.
    pub fn push_script<S: Into<String>>(&self, script: impl IntoIterator<Item = S>) {
        let script = script.into_iter().map(Into::into).collect();
        lock(&self.shared).scripts.push_back(script);
    }

    /// One-shot: the next connection that has received `ms` of audio is cut with no close frame.
    pub fn drop_after_audio_ms(&self, ms: u64) {
        lock(&self.shared).drop_after_ms = Some(ms);
    }

    /// One-shot: refuse the next upgrade with this HTTP status.
    pub fn refuse_next(&self, status: u16) {
        self.refuse_next_n(status, 1);
    }

    /// Refuse the next `n` upgrades with this HTTP status.
    pub fn refuse_next_n(&self, status: u16, n: usize) {
        let mut s = lock(&self.shared);
        s.refusals.extend(std::iter::repeat_n(status, n));
    }

    /// Changes the idle timeout for new connections.
    pub fn set_idle_timeout(&self, timeout: Duration) {
        lock(&self.shared).config.idle_timeout = timeout;
    }

    /// Changes the delay before each result message, for new connections.
    pub fn set_processing_delay_ms(&self, ms: u64) {
        lock(&self.shared).config.processing_delay_ms = ms;
    }

    /// Every accepted connection so far.
    pub fn connections(&self) -> Vec<ConnectionLog> {
        lock(&self.shared).connections.clone()
    }

    /// Every refused upgrade so far.
    pub fn rejections(&self) -> Vec<Rejection> {
        lock(&self.shared).rejections.clone()
    }

    /// `Authorization` headers of the `GET /v1/projects` requests.
    pub fn credential_checks(&self) -> Vec<Option<String>> {
        lock(&self.shared).credential_checks.clone()
    }

    /// Waits until `done` holds for the connection log (polling); false on timeout.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ConnectionLog]) -> bool,
    ) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if done(&lock(&self.shared).connections) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A Deepgram-style error response.
fn error_response(status: u16, err_code: &str, err_msg: &str, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"err_code": err_code, "err_msg": err_msg, "request_id": request_id});
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("dg-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(err_msg) {
        headers.insert("dg-error", v);
    }
    response
}

fn parse_query(raw: &str) -> Vec<(String, String)> {
    match reqwest::Url::parse(&format!("http://fake/?{raw}")) {
        Ok(url) => url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What the connection needs from the query.
#[derive(Debug, Clone)]
struct Params {
    model: String,
    encoding: Encoding,
    sample_rate: u32,
    interim_results: bool,
    vad_events: bool,
    endpointing_ms: Option<u64>,
    utterance_end_ms: Option<u64>,
    extra: HashMap<String, String>,
}

fn check_query(pairs: &[(String, String)]) -> Result<Params, String> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    let mut extra = HashMap::new();
    for (k, v) in pairs {
        if !KNOWN_PARAMS.contains(&k.as_str()) {
            return Err(format!("Unknown query parameter: {k}"));
        }
        if seen.insert(k.as_str(), v.as_str()).is_some() && !REPEATABLE.contains(&k.as_str()) {
            return Err(format!("Query parameter {k} given more than once"));
        }
        if BOOLEANS.contains(&k.as_str()) && v != "true" && v != "false" {
            return Err(format!(
                "Invalid value for {k}: {v:?} (expected true or false)"
            ));
        }
        if k == "extra" {
            let Some((key, value)) = v.split_once(':') else {
                return Err(format!("Invalid extra {v:?}: expected key:value"));
            };
            extra.insert(key.to_string(), value.to_string());
        }
    }
    let model = seen
        .get("model")
        .copied()
        .unwrap_or("base-general")
        .to_string();
    if model.is_empty() {
        return Err("Invalid model: empty".into());
    }
    let encoding = match seen.get("encoding").copied() {
        Some("mulaw") => Encoding::Mulaw,
        Some("alaw") => Encoding::Alaw,
        Some("linear16") => Encoding::Linear16,
        Some(other) => return Err(format!("Unsupported encoding: {other}")),
        None => return Err("encoding is required for raw audio".into()),
    };
    let sample_rate: u32 = match seen.get("sample_rate") {
        None => return Err("sample_rate is required when encoding is set".into()),
        Some(v) => v
            .parse()
            .ok()
            .filter(|r| (4000..=48_000).contains(r))
            .ok_or_else(|| format!("Invalid sample_rate: {v:?}"))?,
    };
    if let Some(ch) = seen.get("channels")
        && *ch != "1"
    {
        return Err(format!(
            "Invalid channels: {ch:?} (this server handles mono)"
        ));
    }
    let interim_results = seen.get("interim_results") == Some(&"true");
    let vad_events = seen.get("vad_events") == Some(&"true");
    let endpointing_ms = match seen.get("endpointing").copied() {
        None | Some("true") => Some(DEFAULT_ENDPOINTING_MS),
        Some("false") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| format!("Invalid endpointing: {v:?}"))?,
        ),
    };
    let utterance_end_ms = match seen.get("utterance_end_ms") {
        None => None,
        Some(v) => {
            let ms: u64 = v
                .parse()
                .map_err(|_| format!("Invalid utterance_end_ms: {v:?}"))?;
            if ms < 1000 {
                return Err("utterance_end_ms must be at least 1000".into());
            }
            if !interim_results {
                return Err("utterance_end_ms requires interim_results=true".into());
            }
            Some(ms)
        }
    };
    if seen.contains_key("keyterm") && !model.starts_with("nova-3") {
        return Err("keyterm is only supported with Nova-3 models".into());
    }
    Ok(Params {
        model,
        encoding,
        sample_rate,
        interim_results,
        vad_events,
        endpointing_ms,
        utterance_end_ms,
        extra,
    })
}

fn refusal_code(status: u16) -> &'static str {
    match status {
        400 => "INVALID_QUERY_PARAMETER",
        401 => "INVALID_AUTH",
        402 => "ASR_PAYMENT_REQUIRED",
        403 => "INSUFFICIENT_PERMISSIONS",
        429 => "TOO_MANY_REQUESTS",
        _ => "SERVICE_UNAVAILABLE",
    }
}

async fn projects(State(shared): State<SharedRef>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let request_id = uuid::Uuid::new_v4().to_string();
    let expected = {
        let mut s = lock(&shared);
        s.credential_checks.push(auth.clone());
        format!("Token {}", s.config.api_key)
    };
    if auth.as_deref() != Some(expected.as_str()) {
        return error_response(401, "INVALID_AUTH", "Invalid credentials.", &request_id);
    }
    let body = json!({"projects": [{"project_id": "3f4e8b7a-0000-4000-8000-000000000001", "name": "voicegw test"}]});
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn listen(
    State(shared): State<SharedRef>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let raw = raw.unwrap_or_default();
    let request_id = uuid::Uuid::new_v4().to_string();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let pairs = parse_query(&raw);
    let refuse = |status: u16, code: &str, msg: &str| {
        lock(&shared).rejections.push(Rejection {
            status,
            err_code: code.to_string(),
            err_msg: msg.to_string(),
            query: raw.clone(),
        });
        error_response(status, code, msg, &request_id)
    };
    let (refusal, expected) = {
        let mut s = lock(&shared);
        (
            s.refusals.pop_front(),
            format!("Token {}", s.config.api_key),
        )
    };
    if let Some(status) = refusal {
        return refuse(
            status,
            refusal_code(status),
            "Refused by test fault injection",
        );
    }
    if auth.as_deref() != Some(expected.as_str()) {
        return refuse(401, "INVALID_AUTH", "Invalid credentials.");
    }
    let params = match check_query(&pairs) {
        Ok(p) => p,
        Err(msg) => return refuse(400, "INVALID_QUERY_PARAMETER", &msg),
    };
    let Ok(ws) = ws else {
        return refuse(400, "BAD_REQUEST", "Expected a WebSocket upgrade");
    };
    let (index, conn) = {
        let mut s = lock(&shared);
        let index = s.connections.len();
        let call_key = params
            .extra
            .get("call_id")
            .cloned()
            .unwrap_or_else(|| format!("connection-{index}"));
        if !s.calls.contains_key(&call_key) {
            let script = match s.scripts.pop_front() {
                Some(script) => script,
                None => s.config.default_script.clone(),
            };
            s.calls.insert(
                call_key.clone(),
                CallState {
                    script,
                    delivered: 0,
                },
            );
        }
        let call = &s.calls[&call_key];
        let conn = Conn::new(
            index,
            call_key,
            call.script.clone(),
            call.delivered,
            params.clone(),
            &s.config,
            request_id.clone(),
        );
        s.connections.push(ConnectionLog {
            index,
            call_id: params.extra.get("call_id").cloned(),
            query: pairs.clone(),
            auth: auth.clone(),
            request_id: request_id.clone(),
            ..ConnectionLog::default()
        });
        (index, conn)
    };
    let shared2 = Arc::clone(&shared);
    let mut response = ws.on_upgrade(move |socket| async move {
        conn.run(socket, &shared2).await;
        lock(&shared2).connections[index].ended = true;
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("dg-request-id", v);
    }
    response
}

/// An open speech segment.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    last_voiced_end: u64,
    last_interim: u64,
    script_index: usize,
}

/// Something queued to send, with what to record once it is on the wire.
#[derive(Debug)]
enum Out {
    Json {
        message: Value,
        /// A final for this script index: the call's delivered count moves past it.
        delivers: Option<usize>,
    },
    Close(u16, String),
}

/// One connection's recognizer state.
struct Conn {
    index: usize,
    call_key: String,
    script: Vec<String>,
    base: usize,
    local_finals: usize,
    params: Params,
    request_id: String,
    threshold_dbfs: f32,
    interim_every: u64,
    per_word: u64,
    delay: Duration,
    idle_timeout: Duration,
    window: usize,
    pending: Vec<i16>,
    odd_byte: Option<u8>,
    pos: u64,
    cursor: u64,
    segment: Option<Segment>,
    last_word_end: Option<u64>,
    utterance_end_sent: bool,
    out: VecDeque<(Instant, Out)>,
}

impl Conn {
    fn new(
        index: usize,
        call_key: String,
        script: Vec<String>,
        base: usize,
        params: Params,
        config: &ListenConfig,
        request_id: String,
    ) -> Conn {
        let rate = u64::from(params.sample_rate);
        Conn {
            index,
            call_key,
            script,
            base,
            local_finals: 0,
            window: (params.sample_rate / 50) as usize,
            request_id,
            threshold_dbfs: config.vad_threshold_dbfs,
            interim_every: config.interim_every_ms * rate / 1000,
            per_word: (config.ms_per_word * rate / 1000).max(1),
            delay: Duration::from_millis(config.processing_delay_ms),
            idle_timeout: config.idle_timeout,
            params,
            pending: Vec::new(),
            odd_byte: None,
            pos: 0,
            cursor: 0,
            segment: None,
            last_word_end: None,
            utterance_end_sent: false,
            out: VecDeque::new(),
        }
    }

    fn rate(&self) -> u64 {
        u64::from(self.params.sample_rate)
    }

    fn secs(&self, samples: u64) -> f64 {
        (samples as f64 / self.rate() as f64 * 1000.0).round() / 1000.0
    }

    fn queue(&mut self, message: Value, delivers: Option<usize>) {
        self.out
            .push_back((Instant::now() + self.delay, Out::Json { message, delivers }));
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        self.out.push_back((
            Instant::now() + self.delay,
            Out::Close(code, reason.to_string()),
        ));
    }

    fn metadata(&self) -> Value {
        let mut m = json!({
            "request_id": self.request_id,
            "model_info": {"name": format!("general-{}", self.params.model), "version": "2025-01-01.0", "arch": self.params.model},
            "model_uuid": "6b28e919-8427-4f32-9847-492e2efd7daf",
        });
        if !self.params.extra.is_empty() {
            m["extra"] = json!(self.params.extra);
        }
        m
    }

    fn transcript(&self, script_index: usize) -> String {
        self.script.get(script_index).cloned().unwrap_or_default()
    }

    /// Words of `text` (first `count`) spread evenly over [from, to] samples.
    fn words(&self, text: &str, count: usize, from: u64, to: u64) -> Vec<Value> {
        let all: Vec<&str> = text.split_whitespace().collect();
        let n = all.len().max(1) as u64;
        let span = to.saturating_sub(from);
        all.iter()
            .take(count)
            .enumerate()
            .map(|(i, w)| {
                let start = from + span * i as u64 / n;
                let end = from + span * (i as u64 + 1) / n;
                let bare: String = w
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'' || *c == '-')
                    .collect::<String>()
                    .to_lowercase();
                json!({"word": bare, "start": self.secs(start), "end": self.secs(end),
                       "confidence": 0.99, "punctuated_word": w})
            })
            .collect()
    }

    fn results(
        &self,
        transcript: &str,
        words: Vec<Value>,
        until: u64,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> Value {
        json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": self.secs(until.saturating_sub(self.cursor)),
            "start": self.secs(self.cursor),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.98, "words": words}]},
            "metadata": self.metadata(),
        })
    }

    /// Closes the open segment with a final up to `until`.
    fn finalize_segment(&mut self, until: u64, speech_final: bool, from_finalize: bool) {
        let Some(seg) = self.segment.take() else {
            return;
        };
        let text = self.transcript(seg.script_index);
        let words = self.words(&text, usize::MAX, seg.start, seg.last_voiced_end);
        let message = self.results(&text, words, until, true, speech_final, from_finalize);
        if !text.trim().is_empty() {
            self.last_word_end = Some(seg.last_voiced_end);
            self.utterance_end_sent = false;
        }
        self.queue(message, Some(seg.script_index));
        self.cursor = until;
        self.local_finals += 1;
    }

    /// One 20 ms window of received audio.
    fn window(&mut self, samples: &[i16]) {
        let start = self.pos;
        let end = start + samples.len() as u64;
        self.pos = end;
        let voiced = dbfs(rms(samples)) >= self.threshold_dbfs;
        if voiced {
            if self.segment.is_none() {
                self.segment = Some(Segment {
                    start,
                    last_voiced_end: end,
                    last_interim: start,
                    script_index: self.base + self.local_finals,
                });
                if self.params.vad_events {
                    let ts = self.secs(start);
                    self.queue(
                        json!({"type": "SpeechStarted", "channel": [0, 1], "timestamp": ts}),
                        None,
                    );
                }
            }
            if let Some(seg) = &mut self.segment {
                seg.last_voiced_end = end;
            }
        }
        if let Some(seg) = self.segment.clone() {
            let endpoint = self.params.endpointing_ms.map(|ms| ms * self.rate() / 1000);
            if !voiced && endpoint.is_some_and(|e| end - seg.last_voiced_end >= e) {
                self.finalize_segment(end, true, false);
            } else if self.params.interim_results && end - seg.last_interim >= self.interim_every {
                let text = self.transcript(seg.script_index);
                let total = text.split_whitespace().count();
                let heard = (end - seg.start) / self.per_word;
                let count = (heard as usize).clamp(1, total.max(1)).min(total);
                let words = self.words(&text, count, seg.start, end);
                let shown: Vec<&str> = text.split_whitespace().take(count).collect();
                let message = self.results(&shown.join(" "), words, end, false, false, false);
                self.queue(message, None);
                if let Some(s) = &mut self.segment {
                    s.last_interim = end;
                }
            }
        }
        if self.segment.is_none()
            && !self.utterance_end_sent
            && let (Some(lwe), Some(ue)) = (self.last_word_end, self.params.utterance_end_ms)
            && end >= lwe + ue * self.rate() / 1000
        {
            let t = self.secs(lwe);
            self.queue(
                json!({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": t}),
                None,
            );
            self.utterance_end_sent = true;
        }
    }

    fn audio(&mut self, bytes: &[u8]) {
        let mut pcm = Vec::new();
        match self.params.encoding {
            Encoding::Linear16 => {
                let mut data = Vec::with_capacity(bytes.len() + 1);
                data.extend(self.odd_byte.take());
                data.extend_from_slice(bytes);
                if data.len() % 2 == 1 {
                    self.odd_byte = data.pop();
                }
                Encoding::Linear16.decode_into(&data, &mut pcm);
            }
            enc => enc.decode_into(bytes, &mut pcm),
        }
        self.pending.extend_from_slice(&pcm);
        while self.pending.len() >= self.window {
            let rest = self.pending.split_off(self.window);
            let win = std::mem::replace(&mut self.pending, rest);
            self.window(&win);
        }
    }

    fn received_ms(&self) -> u64 {
        (self.pos + self.pending.len() as u64) * 1000 / self.rate()
    }

    fn log<R>(&self, shared: &SharedRef, f: impl FnOnce(&mut ConnectionLog) -> R) -> R {
        f(&mut lock(shared).connections[self.index])
    }

    async fn run(mut self, mut socket: WebSocket, shared: &SharedRef) {
        let mut last_in = Instant::now();
        let mut closing = false;
        loop {
            let next_out = self.out.front().map(|(t, _)| *t);
            let idle_at = last_in + self.idle_timeout;
            tokio::select! {
                message = socket.recv(), if !closing => {
                    last_in = Instant::now();
                    match message {
                        Some(Ok(Message::Binary(bytes))) => {
                            if bytes.is_empty() {
                                self.out.clear();
                                self.queue_close(1002, "DATA-0000");
                                closing = true;
                                continue;
                            }
                            self.audio(&bytes);
                            let ms = self.received_ms();
                            let cut = {
                                let mut s = lock(shared);
                                let log = &mut s.connections[self.index];
                                log.audio_bytes += bytes.len() as u64;
                                log.audio_frames += 1;
                                log.audio_ms = ms;
                                if s.drop_after_ms.is_some_and(|limit| ms >= limit) {
                                    s.drop_after_ms = None;
                                    s.connections[self.index].dropped = true;
                                    true
                                } else {
                                    false
                                }
                            };
                            if cut {
                                // Abrupt: no close frame, queued results are lost.
                                return;
                            }
                        }
                        Some(Ok(Message::Text(text))) => {
                            let kind = serde_json::from_str::<Value>(&text)
                                .ok()
                                .and_then(|v| v.get("type").and_then(Value::as_str).map(String::from));
                            match kind.as_deref() {
                                Some("KeepAlive") => self.log(shared, |l| l.keepalives += 1),
                                Some("Finalize") => {
                                    self.log(shared, |l| l.finalizes += 1);
                                    if self.segment.is_some() {
                                        self.finalize_segment(self.pos, false, true);
                                    } else {
                                        let message = self.results("", Vec::new(), self.pos, true, false, true);
                                        self.queue(message, None);
                                        self.cursor = self.pos;
                                    }
                                }
                                Some("CloseStream") => {
                                    self.log(shared, |l| {
                                        l.close_streams += 1;
                                        l.closed_by_client = true;
                                    });
                                    self.finalize_segment(self.pos, false, false);
                                    let created = chrono::Utc::now()
                                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                                    let mut meta = json!({
                                        "type": "Metadata", "transaction_key": "deprecated",
                                        "request_id": self.request_id,
                                        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                                        "created": created, "duration": self.secs(self.pos), "channels": 1,
                                    });
                                    if !self.params.extra.is_empty() {
                                        meta["extra"] = json!(self.params.extra);
                                    }
                                    self.queue(meta, None);
                                    self.queue_close(1000, "");
                                    closing = true;
                                }
                                _ => {
                                    let error = json!({"type": "Error", "variant": "SchemaError",
                                        "description": format!("Unknown message: {text}"),
                                        "message": "Unknown or malformed control message"});
                                    self.queue(error, None);
                                    self.queue_close(1008, "INVALID-MESSAGE");
                                    closing = true;
                                }
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            self.log(shared, |l| l.closed_by_client = true);
                            return;
                        }
                        Some(Ok(_)) => {}
                    }
                }
                _ = tokio::time::sleep_until(next_out.unwrap_or(idle_at)), if next_out.is_some() => {
                    let Some((_, out)) = self.out.pop_front() else { continue };
                    match out {
                        Out::Json { message, delivers } => {
                            if socket.send(Message::Text(message.to_string().into())).await.is_err() {
                                return;
                            }
                            let mut s = lock(shared);
                            s.connections[self.index].sent.push(message);
                            if let Some(idx) = delivers
                                && let Some(call) = s.calls.get_mut(&self.call_key)
                            {
                                call.delivered = call.delivered.max(idx + 1);
                            }
                        }
                        Out::Close(code, reason) => {
                            self.log(shared, |l| l.server_close = Some((code, reason.clone())));
                            let _ = socket
                                .send(Message::Close(Some(CloseFrame { code, reason: reason.into() })))
                                .await;
                            // Let the client answer the close, briefly.
                            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                                while let Some(Ok(m)) = socket.recv().await {
                                    if matches!(m, Message::Close(_)) {
                                        break;
                                    }
                                }
                            })
                            .await;
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep_until(idle_at), if !closing => {
                    self.queue_close(1011, "NET-0001");
                    closing = true;
                }
            }
        }
    }
}
