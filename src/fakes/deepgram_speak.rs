//! A fake Deepgram Aura text-to-speech server: the streaming WebSocket `GET /v1/speak`, the
//! REST `POST /v1/speak` and `GET /v1/projects` (credential checks), on 127.0.0.1.
//!
//! It checks requests as the real API does (`Authorization: Token <key>`, the model name,
//! `encoding` / `sample_rate` / `container` combinations, unknown query parameters, the JSON
//! body and the JSON text frames) and rejects them with Deepgram's error format: HTTP 400/401
//! with `{"err_code","err_msg","request_id"}` and a `dg-error` header. Audio is the synthetic
//! speech of [`super::speech`] at the requested rate and encoding, so tests can predict it
//! sample for sample. Faults are one-shot and queued; delays are configurable.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::speech;

/// Rates the streaming endpoint serves 16-bit PCM at.
pub const LINEAR16_RATES: [u32; 5] = [8000, 16000, 24000, 32000, 48000];
/// Rates μ-law and A-law are served at.
pub const G711_RATES: [u32; 2] = [8000, 16000];
/// Query parameters the WebSocket accepts.
const WS_PARAMS: [&str; 5] = ["model", "encoding", "sample_rate", "speed", "mip_opt_out"];
/// Query parameters the REST endpoint accepts.
const REST_PARAMS: [&str; 10] = [
    "model",
    "encoding",
    "sample_rate",
    "container",
    "bit_rate",
    "speed",
    "callback",
    "callback_method",
    "tag",
    "mip_opt_out",
];

/// Behaviour of the fake.
#[derive(Debug, Clone)]
pub struct FakeSpeakConfig {
    /// The key `Authorization: Token <key>` must carry.
    pub api_key: String,
    /// Delay from a `Flush` (or REST request) to the first audio byte.
    pub first_byte_delay_ms: u64,
    /// Audio per binary frame (and REST body chunk unless `rest_chunk_ms` is set).
    pub chunk_ms: u64,
    /// Audio per REST body chunk; 0 means `chunk_ms`.
    pub rest_chunk_ms: u64,
    /// Pacing: 1.0 sends audio in real time, 2.0 twice as fast; 0 sends it as fast as possible.
    pub realtime_factor: f64,
    /// How long audio keeps flowing after a `Clear` before it takes effect and `Cleared` is
    /// sent (audio that was already in flight on a real network).
    pub clear_delay_ms: u64,
    /// Flushes allowed per `flush_window` on one socket.
    pub flush_limit: usize,
    /// The window of `flush_limit`.
    pub flush_window: Duration,
}

impl Default for FakeSpeakConfig {
    fn default() -> Self {
        FakeSpeakConfig {
            api_key: "test-key".to_owned(),
            first_byte_delay_ms: 20,
            chunk_ms: 100,
            rest_chunk_ms: 0,
            realtime_factor: 0.0,
            clear_delay_ms: 0,
            flush_limit: 20,
            flush_window: Duration::from_secs(60),
        }
    }
}

/// One REST request as received.
#[derive(Debug, Clone)]
pub struct RestRequest {
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// The `Authorization` header.
    pub auth: Option<String>,
    /// The raw body.
    pub body: String,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct Log {
    ws_messages: Vec<Value>,
    spoken: Vec<String>,
    rest: Vec<RestRequest>,
    ws_attempts: usize,
    ws_connections: usize,
    ws_queries: Vec<HashMap<String, String>>,
    auth_headers: Vec<Option<String>>,
    warnings: usize,
    closes: Vec<(u16, String)>,
}

#[derive(Default)]
struct Faults {
    refuse_ws: VecDeque<u16>,
    drop_mid_audio: usize,
    stall: usize,
    rest_error: VecDeque<u16>,
}

struct Shared {
    config: Mutex<FakeSpeakConfig>,
    log: Mutex<Log>,
    faults: Mutex<Faults>,
    ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn config(&self) -> FakeSpeakConfig {
        lock(&self.config).clone()
    }

    fn request_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

/// The fake server; stops when dropped.
pub struct FakeDeepgramSpeak {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeDeepgramSpeak {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDeepgramSpeak {
    /// Starts with the default configuration (key `test-key`).
    pub async fn start() -> Result<FakeDeepgramSpeak, std::io::Error> {
        Self::start_with(FakeSpeakConfig::default()).await
    }

    /// Starts with `config` on a random loopback port.
    pub async fn start_with(config: FakeSpeakConfig) -> Result<FakeDeepgramSpeak, std::io::Error> {
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            log: Mutex::new(Log::default()),
            faults: Mutex::new(Faults::default()),
            ids: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/v1/speak", get(speak_ws).post(speak_rest))
            .route("/v1/projects", get(projects))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeDeepgramSpeak { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>` (what the client's `base_url` should be).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the delay before the first audio byte of each flush / REST request.
    pub fn set_first_byte_delay_ms(&self, ms: u64) {
        lock(&self.shared.config).first_byte_delay_ms = ms;
    }

    /// Changes the pacing (see [`FakeSpeakConfig::realtime_factor`]).
    pub fn set_realtime_factor(&self, factor: f64) {
        lock(&self.shared.config).realtime_factor = factor;
    }

    /// The next WebSocket upgrade is refused with `status` (after the auth/param checks pass).
    pub fn refuse_ws_next(&self, status: u16) {
        lock(&self.shared.faults).refuse_ws.push_back(status);
    }

    /// The next flush that has audio sends its first audio frame and then cuts the TCP
    /// connection without a close frame.
    pub fn drop_ws_mid_audio(&self) {
        lock(&self.shared.faults).drop_mid_audio += 1;
    }

    /// The next flush is never answered (no audio, no `Flushed`).
    pub fn stall_next(&self) {
        lock(&self.shared.faults).stall += 1;
    }

    /// The next valid REST request is answered with `status` and a JSON error.
    pub fn rest_error_next(&self, status: u16) {
        lock(&self.shared.faults).rest_error.push_back(status);
    }

    /// Every text frame received on any socket, parsed (a frame that is not JSON is kept as a
    /// JSON string).
    pub fn ws_messages(&self) -> Vec<Value> {
        lock(&self.shared.log).ws_messages.clone()
    }

    /// The `type` of every text frame received, in order.
    pub fn ws_message_types(&self) -> Vec<String> {
        self.ws_messages()
            .iter()
            .map(|m| {
                m.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    }

    /// Texts synthesized, in order (socket flushes, stalled ones included, and REST requests).
    pub fn spoken_texts(&self) -> Vec<String> {
        lock(&self.shared.log).spoken.clone()
    }

    /// Every REST `POST /v1/speak` received.
    pub fn rest_requests(&self) -> Vec<RestRequest> {
        lock(&self.shared.log).rest.clone()
    }

    /// WebSocket upgrade requests received (accepted or not).
    pub fn ws_attempts(&self) -> usize {
        lock(&self.shared.log).ws_attempts
    }

    /// WebSocket sessions accepted.
    pub fn ws_connections(&self) -> usize {
        lock(&self.shared.log).ws_connections
    }

    /// The query parameters of every WebSocket upgrade request.
    pub fn ws_queries(&self) -> Vec<HashMap<String, String>> {
        lock(&self.shared.log).ws_queries.clone()
    }

    /// The `Authorization` header of every request, in order.
    pub fn auth_headers(&self) -> Vec<Option<String>> {
        lock(&self.shared.log).auth_headers.clone()
    }

    /// `Warning`s sent for the flush limit.
    pub fn flush_warnings(&self) -> usize {
        lock(&self.shared.log).warnings
    }

    /// Close frames the fake sent for protocol violations (code, reason).
    pub fn protocol_closes(&self) -> Vec<(u16, String)> {
        lock(&self.shared.log).closes.clone()
    }
}

/// Deepgram's error answer.
fn dg_error(shared: &Shared, status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = shared.request_id();
    let body = json!({"err_code": code, "err_msg": message, "request_id": request_id});
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(message) {
        headers.insert("dg-error", v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("dg-request-id", v);
    }
    response
}

/// A request the fake refuses: status, Deepgram `err_code` and `err_msg`.
struct Reject {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Reject {
        Reject {
            status,
            code,
            message: message.into(),
        }
    }

    fn into_response(self, shared: &Shared) -> Response {
        dg_error(shared, self.status, self.code, &self.message)
    }
}

fn check_auth(shared: &Shared, headers: &HeaderMap) -> Result<(), Reject> {
    let expected = format!("Token {}", shared.config().api_key);
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(got) if got == expected => Ok(()),
        _ => Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTH",
            "Invalid credentials.",
        )),
    }
}

fn record_auth(shared: &Shared, headers: &HeaderMap) {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&shared.log).auth_headers.push(auth);
}

/// The requested audio format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Linear16,
    Mulaw,
    Alaw,
    Compressed(&'static str),
}

#[derive(Debug, Clone)]
struct Format {
    model: String,
    codec: Codec,
    rate: u32,
    wav: bool,
}

fn valid_model(model: &str) -> bool {
    let Some(rest) = model.strip_prefix("aura-") else {
        return false;
    };
    let rest = rest.strip_prefix("2-").unwrap_or(rest);
    match rest.strip_suffix("-en") {
        Some(voice) => !voice.is_empty() && voice.chars().all(|c| c.is_ascii_lowercase()),
        None => false,
    }
}

/// Checks query parameters like the real endpoint (`rest` selects the REST rules).
fn check_params(params: &[(String, String)], rest: bool) -> Result<Format, String> {
    let allowed: &[&str] = if rest { &REST_PARAMS } else { &WS_PARAMS };
    let unknown: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !allowed.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!("Unknown query parameters: {}", unknown.join(", ")));
    }
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let model = get("model").unwrap_or("aura-asteria-en").to_owned();
    if !valid_model(&model) {
        return Err(format!("No such model: {model}"));
    }
    let codec = match get("encoding").unwrap_or("linear16") {
        "linear16" => Codec::Linear16,
        "mulaw" => Codec::Mulaw,
        "alaw" => Codec::Alaw,
        c @ ("mp3" | "opus" | "flac" | "aac") if rest => Codec::Compressed(match c {
            "mp3" => "mp3",
            "opus" => "opus",
            "flac" => "flac",
            _ => "aac",
        }),
        other => return Err(format!("Unsupported encoding: {other}")),
    };
    let rate = match get("sample_rate") {
        None => match codec {
            Codec::Mulaw | Codec::Alaw => 8000,
            _ => 24000,
        },
        Some(raw) => {
            if matches!(codec, Codec::Compressed(_)) {
                return Err("sample_rate is not configurable for this encoding".to_owned());
            }
            let rate: u32 = raw
                .parse()
                .map_err(|_| format!("Invalid sample_rate: {raw}"))?;
            let ok = match codec {
                Codec::Mulaw | Codec::Alaw => G711_RATES.contains(&rate),
                _ => LINEAR16_RATES.contains(&rate),
            };
            if !ok {
                return Err(format!("Unsupported sample_rate {rate} for this encoding"));
            }
            rate
        }
    };
    // `container` is not a WebSocket parameter (rejected above as unknown there).
    let wav = match get("container") {
        _ if !rest => false,
        None => !matches!(codec, Codec::Compressed(_)),
        Some("none") => false,
        Some("wav") if !matches!(codec, Codec::Compressed(_)) => true,
        Some("ogg") if codec == Codec::Compressed("opus") => false,
        Some(other) => return Err(format!("Unsupported container: {other}")),
    };
    if let Some(raw) = get("speed") {
        match raw.parse::<f32>() {
            Ok(s) if (0.7..=1.5).contains(&s) => {}
            _ => return Err(format!("Invalid speed: {raw}")),
        }
    }
    if let Some(raw) = get("mip_opt_out")
        && raw != "true"
        && raw != "false"
    {
        return Err(format!("Invalid mip_opt_out: {raw}"));
    }
    Ok(Format {
        model,
        codec,
        rate,
        wav,
    })
}

/// The synthetic speech for `text` in `format` (compressed codecs get raw 24 kHz PCM: the fake
/// has no encoders).
fn audio_bytes(text: &str, format: &Format) -> Vec<u8> {
    match format.codec {
        Codec::Mulaw => speech::synthesize_mulaw(text, format.rate),
        Codec::Linear16 => speech::synthesize_linear16(text, format.rate),
        Codec::Alaw => {
            let pcm = speech::synthesize(text, format.rate);
            let mut out = Vec::with_capacity(pcm.len());
            crate::audio::Encoding::Alaw.encode_into(&pcm, &mut out);
            out
        }
        Codec::Compressed(_) => speech::synthesize_linear16(text, 24000),
    }
}

fn bytes_per_sample(codec: Codec) -> usize {
    match codec {
        Codec::Mulaw | Codec::Alaw => 1,
        _ => 2,
    }
}

fn chunk_bytes(chunk_ms: u64, format: &Format) -> usize {
    let samples = (chunk_ms.max(1) * u64::from(format.rate) / 1000).max(1) as usize;
    samples * bytes_per_sample(format.codec)
}

fn pace(config: &FakeSpeakConfig) -> Duration {
    if config.realtime_factor > 0.0 {
        Duration::from_secs_f64(config.chunk_ms as f64 / 1000.0 / config.realtime_factor)
    } else {
        Duration::ZERO
    }
}

fn wav_header(format: &Format) -> Vec<u8> {
    let (tag, bits): (u16, u16) = match format.codec {
        Codec::Mulaw => (7, 8),
        Codec::Alaw => (6, 8),
        _ => (1, 16),
    };
    let block = bits / 8;
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&tag.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&format.rate.to_le_bytes());
    h.extend_from_slice(&(format.rate * u32::from(block)).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h
}

fn query_map(params: &[(String, String)]) -> HashMap<String, String> {
    params.iter().cloned().collect()
}

async fn projects(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    record_auth(&shared, &headers);
    if let Err(reject) = check_auth(&shared, &headers) {
        return reject.into_response(&shared);
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({"projects": [{"project_id": "fake-project", "name": "Fake project"}]}).to_string(),
    )
        .into_response()
}

async fn speak_rest(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record_auth(&shared, &headers);
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let outcome = rest_checks(&shared, &params, &headers, &body);
    let status = match &outcome {
        Ok(_) => 200,
        Err(reject) => reject.status.as_u16(),
    };
    lock(&shared.log).rest.push(RestRequest {
        query: query_map(&params),
        auth: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body_text,
        status,
    });
    let (format, text) = match outcome {
        Ok(ok) => ok,
        Err(reject) => return reject.into_response(&shared),
    };
    lock(&shared.log).spoken.push(text.clone());
    let config = shared.config();
    let mut audio = Vec::new();
    if format.wav {
        audio.extend(wav_header(&format));
    }
    audio.extend(audio_bytes(&text, &format));
    let rest_ms = if config.rest_chunk_ms > 0 {
        config.rest_chunk_ms
    } else {
        config.chunk_ms
    };
    let size = chunk_bytes(rest_ms, &format);
    let chunks: VecDeque<Bytes> = audio.chunks(size).map(Bytes::copy_from_slice).collect();
    let first = Duration::from_millis(config.first_byte_delay_ms);
    let gap = pace(&config);
    let stream =
        futures::stream::unfold((chunks, true), move |(mut chunks, is_first)| async move {
            let next = chunks.pop_front()?;
            tokio::time::sleep(if is_first { first } else { gap }).await;
            Some((Ok::<Bytes, Infallible>(next), (chunks, false)))
        });
    let content_type = match (format.wav, format.codec) {
        (true, _) => "audio/wav",
        (false, Codec::Mulaw) => "audio/mulaw",
        (false, Codec::Alaw) => "audio/alaw",
        (false, Codec::Linear16) => "audio/l16",
        (false, Codec::Compressed("mp3")) => "audio/mpeg",
        (false, Codec::Compressed("opus")) => "audio/ogg",
        (false, Codec::Compressed("flac")) => "audio/flac",
        (false, Codec::Compressed(_)) => "audio/aac",
    };
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&shared.request_id()) {
        h.insert("dg-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&text.chars().count().to_string()) {
        h.insert("dg-char-count", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format.model) {
        h.insert("dg-model-name", v);
    }
    h.insert(
        "dg-model-uuid",
        HeaderValue::from_static("00000000-0000-4000-8000-00000000aaaa"),
    );
    response
}

fn rest_checks(
    shared: &Shared,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Format, String), Reject> {
    check_auth(shared, headers)?;
    let format = check_params(params, true).map_err(|message| {
        Reject::new(StatusCode::BAD_REQUEST, "INVALID_QUERY_PARAMETER", message)
    })?;
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("text").and_then(Value::as_str).map(str::to_owned));
    let text = match text {
        Some(t) if !t.trim().is_empty() => t,
        Some(_) => {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BODY",
                "Text must not be empty.",
            ));
        }
        None => {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BODY",
                "Body must be JSON with a \"text\" string.",
            ));
        }
    };
    if let Some(status) = lock(&shared.faults).rest_error.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(Reject::new(
            status,
            "INJECTED_FAILURE",
            "The fake was told to fail this request.",
        ));
    }
    Ok((format, text))
}

async fn speak_ws(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    record_auth(&shared, &headers);
    {
        let mut log = lock(&shared.log);
        log.ws_attempts += 1;
        log.ws_queries.push(query_map(&params));
    }
    if let Err(reject) = check_auth(&shared, &headers) {
        return reject.into_response(&shared);
    }
    let format = match check_params(&params, false) {
        Ok(format) => format,
        Err(message) => {
            return dg_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_PARAMETER",
                &message,
            );
        }
    };
    if let Some(status) = lock(&shared.faults).refuse_ws.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return dg_error(
            &shared,
            status,
            "INJECTED_FAILURE",
            "The fake was told to refuse this connection.",
        );
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    lock(&shared.log).ws_connections += 1;
    let request_id = shared.request_id();
    let mut response = upgrade.on_upgrade(move |socket| session(socket, shared, format));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("dg-request-id", v);
    }
    response
}

/// What a session has queued to send.
enum Out {
    /// One audio frame; `cut` drops the connection right after it.
    Audio { bytes: Vec<u8>, cut: bool },
    /// The end of one flush.
    Flushed(u32),
}

async fn send_json(socket: &mut WebSocket, value: Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

/// Closes the session for a protocol violation, logging it.
async fn violation(socket: &mut WebSocket, shared: &Shared, reason: String) {
    lock(&shared.log).closes.push((1008, reason.clone()));
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: reason.into(),
        })))
        .await;
}

async fn session(mut socket: WebSocket, shared: Arc<Shared>, format: Format) {
    let metadata = json!({
        "type": "Metadata",
        "request_id": shared.request_id(),
        "model_name": format.model,
        "model_version": "2025-04-07.0",
        "model_uuid": "00000000-0000-4000-8000-00000000aaaa",
        "additional_model_uuids": [],
    });
    if !send_json(&mut socket, metadata).await {
        return;
    }
    let mut buffer = String::new();
    let mut pending: VecDeque<Out> = VecDeque::new();
    let mut next_at = Instant::now();
    let mut sequence: u32 = 0;
    let mut flushes: VecDeque<Instant> = VecDeque::new();
    let mut closing = false;
    // A `Clear` taking effect later: when, and its sequence id.
    let mut clear_at: Option<(Instant, u32)> = None;
    loop {
        if closing && pending.is_empty() {
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
            // Let the client answer the close, briefly.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(_)) = socket.recv().await {}
            })
            .await;
            return;
        }
        tokio::select! {
            incoming = socket.recv(), if !closing => {
                let text = match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        violation(&mut socket, &shared, "DATA-0000: binary messages are not accepted".into()).await;
                        return;
                    }
                    Some(Ok(_)) => continue,
                };
                let parsed: Option<Value> = serde_json::from_str(text.as_str()).ok();
                lock(&shared.log)
                    .ws_messages
                    .push(parsed.clone().unwrap_or_else(|| Value::String(text.to_string())));
                let Some(message) = parsed else {
                    violation(&mut socket, &shared, "DATA-0000: message is not valid JSON".into()).await;
                    return;
                };
                match message.get("type").and_then(Value::as_str) {
                    Some("Speak") => match message.get("text").and_then(Value::as_str) {
                        Some(t) => buffer.push_str(t),
                        None => {
                            violation(&mut socket, &shared, "DATA-0000: Speak needs a text string".into()).await;
                            return;
                        }
                    },
                    Some("Flush") => {
                        let config = shared.config();
                        let now = Instant::now();
                        while flushes.front().is_some_and(|t| now.duration_since(*t) >= config.flush_window) {
                            flushes.pop_front();
                        }
                        if flushes.len() >= config.flush_limit {
                            lock(&shared.log).warnings += 1;
                            let warning = json!({
                                "type": "Warning",
                                "description": "Flush limit exceeded; flush ignored",
                                "code": "FLUSH_LIMIT_EXCEEDED",
                            });
                            if !send_json(&mut socket, warning).await {
                                return;
                            }
                            continue;
                        }
                        flushes.push_back(now);
                        let text = std::mem::take(&mut buffer);
                        let id = sequence;
                        sequence += 1;
                        if !text.trim().is_empty() {
                            lock(&shared.log).spoken.push(text.clone());
                        }
                        let stall = {
                            let mut faults = lock(&shared.faults);
                            if faults.stall > 0 {
                                faults.stall -= 1;
                                true
                            } else {
                                false
                            }
                        };
                        if stall {
                            continue;
                        }
                        let audio = audio_bytes(&text, &format);
                        let mut cut = !audio.is_empty() && {
                            let mut faults = lock(&shared.faults);
                            if faults.drop_mid_audio > 0 {
                                faults.drop_mid_audio -= 1;
                                true
                            } else {
                                false
                            }
                        };
                        if pending.is_empty() {
                            next_at = now + Duration::from_millis(config.first_byte_delay_ms);
                        }
                        for piece in audio.chunks(chunk_bytes(config.chunk_ms, &format)) {
                            pending.push_back(Out::Audio { bytes: piece.to_vec(), cut });
                            cut = false;
                        }
                        pending.push_back(Out::Flushed(id));
                    }
                    Some("Clear") => {
                        let id = sequence;
                        sequence += 1;
                        let delay = Duration::from_millis(shared.config().clear_delay_ms);
                        if delay.is_zero() {
                            pending.clear();
                            buffer.clear();
                            if !send_json(&mut socket, json!({"type": "Cleared", "sequence_id": id})).await {
                                return;
                            }
                        } else {
                            clear_at = Some((Instant::now() + delay, id));
                        }
                    }
                    Some("Close") => closing = true,
                    Some(other) => {
                        violation(&mut socket, &shared, format!("DATA-0000: unknown message type {other}")).await;
                        return;
                    }
                    None => {
                        violation(&mut socket, &shared, "DATA-0000: message has no type".into()).await;
                        return;
                    }
                }
            }
            _ = tokio::time::sleep_until(clear_at.map_or(next_at, |(at, _)| at)), if clear_at.is_some() => {
                let Some((_, id)) = clear_at.take() else { continue };
                pending.clear();
                buffer.clear();
                if !send_json(&mut socket, json!({"type": "Cleared", "sequence_id": id})).await {
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_at), if !pending.is_empty() => {
                let Some(out) = pending.pop_front() else { continue };
                match out {
                    Out::Audio { bytes, cut } => {
                        if socket.send(Message::Binary(bytes.into())).await.is_err() {
                            return;
                        }
                        if cut {
                            // Abrupt: drop the socket without a close frame.
                            return;
                        }
                        next_at = Instant::now() + pace(&shared.config());
                    }
                    Out::Flushed(id) => {
                        if !send_json(&mut socket, json!({"type": "Flushed", "sequence_id": id})).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}
