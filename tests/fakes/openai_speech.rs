//! Fake OpenAI speech endpoint: `POST /v1/audio/speech` on 127.0.0.1.
//!
//! Checks like the real API: `Authorization: Bearer <key>` (401 with OpenAI's error JSON),
//! a JSON body with `model`, `input` (non-empty, at most 4096 characters), `voice`, optional
//! `response_format` (mp3/opus/aac/flac/wav/pcm), `speed` (0.25–4.0) and `instructions` (not
//! with `tts-1`/`tts-1-hd`), and no unknown fields (400 with `param`). The audio is
//! [`speech::synthesize`] of the input at 24 kHz: `pcm` streams raw 16-bit LE in chunks of
//! `chunk_bytes` (odd by default, so samples straddle chunks), `wav` adds a 44-byte header;
//! other formats are refused (this fake has no encoder for them). Faults: the next request
//! answers with a status (429/500/…), or stalls after its headers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::speech;

/// The rate of `pcm` output.
pub const PCM_RATE: u32 = 24_000;
/// Models the fake accepts.
pub const MODELS: &[&str] = &["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];
/// Voices the fake accepts.
pub const VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
    "marin", "cedar",
];
/// `response_format` values of the API.
pub const FORMATS: &[&str] = &["mp3", "opus", "aac", "flac", "wav", "pcm"];

/// Settings of the fake.
#[derive(Debug, Clone)]
pub struct FakeOpenAiSpeechConfig {
    /// The key it accepts.
    pub api_key: String,
    /// Delay before the first body chunk.
    pub first_byte_delay_ms: u64,
    /// Bytes per body chunk.
    pub chunk_bytes: usize,
    /// Pause between chunks.
    pub chunk_interval_ms: u64,
}

impl Default for FakeOpenAiSpeechConfig {
    fn default() -> Self {
        FakeOpenAiSpeechConfig {
            api_key: "sk-test-key".to_owned(),
            first_byte_delay_ms: 0,
            chunk_bytes: 4801,
            chunk_interval_ms: 0,
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct SpeechRequestLog {
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body, parsed (or `{"_raw": text}`).
    pub body: Value,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct Faults {
    status: Option<u16>,
    stall: bool,
}

struct Inner {
    config: Mutex<FakeOpenAiSpeechConfig>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<SpeechRequestLog>>,
}

/// A running fake; stops when dropped.
pub struct FakeOpenAiSpeech {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for FakeOpenAiSpeech {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOpenAiSpeech {
    /// Starts the fake on 127.0.0.1 with a random port.
    pub async fn start(config: FakeOpenAiSpeechConfig) -> FakeOpenAiSpeech {
        let inner = Arc::new(Inner {
            config: Mutex::new(config),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/audio/speech", post(speech_handler))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOpenAiSpeech { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The next request is answered with `status` (429 and 500 with OpenAI's bodies).
    pub fn fail_next(&self, status: u16) {
        self.inner.faults.lock().unwrap().status = Some(status);
    }

    /// The next request gets 200 and headers, then no body bytes.
    pub fn stall_next(&self) {
        self.inner.faults.lock().unwrap().stall = true;
    }

    /// Sets the delay before the first body chunk.
    pub fn set_first_byte_delay_ms(&self, ms: u64) {
        self.inner.config.lock().unwrap().first_byte_delay_ms = ms;
    }

    /// Sets the pause between body chunks.
    pub fn set_chunk_interval_ms(&self, ms: u64) {
        self.inner.config.lock().unwrap().chunk_interval_ms = ms;
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<SpeechRequestLog> {
        self.inner.log.lock().unwrap().clone()
    }

    /// The 24 kHz PCM the fake produces for `input`.
    pub fn pcm_for(input: &str) -> Vec<i16> {
        speech::synthesize(input, PCM_RATE)
    }
}

/// OpenAI's error response.
fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": param, "code": code}})),
    )
        .into_response()
}

fn bad_request(message: &str, param: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        Some(param),
        None,
    )
}

/// Checks the request; the error response if it is not acceptable, `None` if it is.
fn check(cfg: &FakeOpenAiSpeechConfig, headers: &HeaderMap, body: &Value) -> Option<Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth {
        None => {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
                None,
            ));
        }
        Some(a) if a != format!("Bearer {}", cfg.api_key) => {
            let shown: String = a.trim_start_matches("Bearer ").chars().take(6).collect();
            return Some(error(
                StatusCode::UNAUTHORIZED,
                &format!("Incorrect API key provided: {shown}***."),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ));
        }
        Some(_) => {}
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let Some(obj) = body.as_object().filter(|_| json_type) else {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            "invalid_request_error",
            None,
            None,
        ));
    };
    const ALLOWED: &[&str] = &[
        "model",
        "input",
        "voice",
        "response_format",
        "speed",
        "instructions",
        "stream_format",
    ];
    if let Some(k) = obj.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Some(bad_request(
            &format!("Unrecognized request argument supplied: {k}"),
            k,
        ));
    }
    let model = obj.get("model").and_then(Value::as_str);
    match model {
        None => return Some(bad_request("you must provide a model parameter", "model")),
        Some(m) if !MODELS.contains(&m) => {
            return Some(bad_request(&format!("Invalid model: {m}"), "model"));
        }
        _ => {}
    }
    match obj.get("input").and_then(Value::as_str) {
        None => return Some(bad_request("Missing required parameter: 'input'.", "input")),
        Some("") => {
            return Some(bad_request(
                "Invalid 'input': string too short. Expected a string with minimum length 1, but got an empty string instead.",
                "input",
            ));
        }
        Some(s) if s.chars().count() > 4096 => {
            return Some(bad_request(
                &format!(
                    "Invalid 'input': string too long. Expected a string with maximum length 4096, but got a string with length {} instead.",
                    s.chars().count()
                ),
                "input",
            ));
        }
        _ => {}
    }
    match obj.get("voice").and_then(Value::as_str) {
        Some(v) if VOICES.contains(&v) => {}
        _ => {
            return Some(bad_request(
                &format!(
                    "Invalid value for 'voice': {}.",
                    obj.get("voice").unwrap_or(&Value::Null)
                ),
                "voice",
            ));
        }
    }
    if let Some(f) = obj.get("response_format")
        && !f.as_str().is_some_and(|f| FORMATS.contains(&f))
    {
        return Some(bad_request(
            &format!(
                "Invalid value: {f}. Supported values are: 'mp3', 'opus', 'aac', 'flac', 'wav', and 'pcm'."
            ),
            "response_format",
        ));
    }
    if let Some(s) = obj.get("speed")
        && !s.as_f64().is_some_and(|s| (0.25..=4.0).contains(&s))
    {
        return Some(bad_request(
            &format!("Invalid 'speed': {s}. Expected a value between 0.25 and 4.0."),
            "speed",
        ));
    }
    if let Some(i) = obj.get("instructions") {
        if !i.is_string() {
            return Some(bad_request(
                "'instructions' must be a string.",
                "instructions",
            ));
        }
        if matches!(model, Some("tts-1" | "tts-1-hd")) {
            return Some(bad_request(
                "Instructions are not supported for this model.",
                "instructions",
            ));
        }
    }
    None
}

async fn speech_handler(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let value: Value = serde_json::from_str(&text).unwrap_or(json!({ "_raw": text }));
    let cfg = inner.config.lock().unwrap().clone();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = respond(&inner, &cfg, &headers, &value);
    inner.log.lock().unwrap().push(SpeechRequestLog {
        authorization,
        body: value,
        status: response.status().as_u16(),
    });
    response
}

fn respond(
    inner: &Inner,
    cfg: &FakeOpenAiSpeechConfig,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    if let Some(resp) = check(cfg, headers, body) {
        return resp;
    }
    let faults = std::mem::take(&mut *inner.faults.lock().unwrap());
    if let Some(status) = faults.status {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = match status {
            429 => error(
                code,
                "Rate limit reached for gpt-4o-mini-tts in organization org-fake on requests per min (RPM): Limit 50, Used 50, Requested 1. Please try again in 1.2s.",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            ),
            500 => error(
                code,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                None,
            ),
            _ => error(code, "Fake failure.", "server_error", None, None),
        };
        if status == 429 {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("2"));
        }
        return resp;
    }
    let input = body["input"].as_str().unwrap_or_default();
    let format = body["response_format"].as_str().unwrap_or("mp3");
    let mut bytes = Vec::new();
    voicegw::audio::Encoding::Linear16
        .encode_into(&speech::synthesize(input, PCM_RATE), &mut bytes);
    let content_type = match format {
        "pcm" => "audio/pcm",
        "wav" => {
            bytes = wav(&bytes);
            "audio/wav"
        }
        other => {
            return bad_request(
                &format!("This fake produces only 'pcm' and 'wav', not '{other}'."),
                "response_format",
            );
        }
    };
    let body = if faults.stall {
        Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>())
    } else {
        let first = Duration::from_millis(cfg.first_byte_delay_ms);
        let gap = Duration::from_millis(cfg.chunk_interval_ms);
        let chunks: Vec<Bytes> = bytes
            .chunks(cfg.chunk_bytes.max(1))
            .map(Bytes::copy_from_slice)
            .collect();
        let stream = futures::stream::unfold(
            (chunks.into_iter(), true),
            move |(mut it, first_chunk)| async move {
                let chunk = it.next()?;
                let wait = if first_chunk { first } else { gap };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Some((Ok::<_, std::io::Error>(chunk), (it, false)))
            },
        );
        Body::from_stream(stream)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header("x-request-id", "req_fake")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A 44-byte WAV header (24 kHz mono 16-bit) before `pcm`.
fn wav(pcm: &[u8]) -> Vec<u8> {
    let len = pcm.len() as u32;
    let mut out = Vec::with_capacity(44 + pcm.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&PCM_RATE.to_le_bytes());
    out.extend_from_slice(&(PCM_RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(pcm);
    out
}
