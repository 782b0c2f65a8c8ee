//! ElevenLabs text-to-speech over the `stream-input` WebSocket (spec §4.1, §4.3).
//!
//! # One socket per segment, with a warm spare
//!
//! A `stream-input` socket only reports `isFinal` after end-of-stream (`{"text":""}`), and it
//! closes right after; there is no other way to learn that a segment's audio is complete. So
//! every segment gets its own socket. To keep the handshake (TCP, TLS, upgrade, BOS) off the
//! segment's path, each voice keeps one **spare** socket connected in a background task with
//! the BOS message (voice settings, chunk schedule) already sent. A segment takes the spare,
//! sends `{"text":"<segment> ","flush":true}` and EOS, and reads base64 `audio` messages until
//! `isFinal`. The moment a spare is taken the next one starts connecting, in parallel with the
//! segment's generation, so back-to-back segments never wait for a handshake. While idle, the
//! spare task sends `{"text":" "}` keep-alives well before the server's `inactivity_timeout`.
//!
//! Barge-in (`cancel`) drops the segment's socket (the endpoint has no "clear" message) and
//! returns `cancelled: true`; the spare is already connecting, so the next segment is fast.
//! `multi-stream-input` (contexts on one socket) would avoid the second socket, but its
//! per-context `isFinal` after `close_context` is less well documented than this endpoint's;
//! the spare gives the same latency with the well-known protocol.
//!
//! Calls at 8 kHz ask for `ulaw_8000` (decoded, no resampling); 16 and 24 kHz calls ask for
//! `pcm_16000` / `pcm_24000` (16-bit LE); 48 kHz calls get `pcm_24000` resampled.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::convert::PcmConverter;
use super::{SynthesisStats, TtsError, TtsProvider, TtsVoice};
use crate::audio::Encoding;
use crate::metrics::Metrics;

/// Provider name in errors and events.
const PROVIDER: &str = "elevenlabs";
/// Provider label in the `provider_calls` metric.
const METRIC: &str = "elevenlabs_tts";
/// Upper bound for one connection attempt (TCP, TLS, upgrade, BOS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive text: a single space resets the server's idle timer (an empty text is EOS).
const KEEPALIVE: &str = r#"{"text":" "}"#;
/// End of stream: the server generates what is buffered, sends `isFinal` and closes.
const EOS: &str = r#"{"text":""}"#;
/// Longest provider error text kept in an error value.
const MAX_REASON: usize = 300;

/// An open `stream-input` socket.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// ElevenLabs settings (`[tts.elevenlabs]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElevenLabsConfig {
    /// API base (`https://api.elevenlabs.io`); `http://`/`ws://` for a local server.
    pub base_url: String,
    /// The `xi-api-key`.
    pub api_key: String,
    /// Voice to speak with (required).
    pub voice_id: String,
    /// Model (`eleven_flash_v2_5`: lowest latency).
    pub model_id: String,
    /// `voice_settings.stability`, 0–1.
    pub stability: f32,
    /// `voice_settings.similarity_boost`, 0–1.
    pub similarity_boost: f32,
    /// `voice_settings.speed`, 0.7–1.2.
    pub speed: f32,
    /// Characters buffered before each successive generation, each 50–500.
    pub chunk_length_schedule: Vec<u32>,
    /// Longest wait for the first audio of a segment (and between later audio messages).
    pub first_byte_timeout_ms: u64,
    /// The socket's `inactivity_timeout` query parameter in seconds, 1–180; the idle spare
    /// socket sends a keep-alive every third of it.
    pub inactivity_timeout_secs: u32,
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        ElevenLabsConfig {
            base_url: "https://api.elevenlabs.io".to_owned(),
            api_key: String::new(),
            voice_id: String::new(),
            model_id: "eleven_flash_v2_5".to_owned(),
            stability: 0.5,
            similarity_boost: 0.8,
            speed: 1.0,
            chunk_length_schedule: vec![50, 90, 120, 150],
            first_byte_timeout_ms: 2000,
            inactivity_timeout_secs: 60,
        }
    }
}

impl std::fmt::Debug for ElevenLabsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &crate::config::redacted(&self.api_key))
            .field("voice_id", &self.voice_id)
            .field("model_id", &self.model_id)
            .field("stability", &self.stability)
            .field("similarity_boost", &self.similarity_boost)
            .field("speed", &self.speed)
            .field("chunk_length_schedule", &self.chunk_length_schedule)
            .field("first_byte_timeout_ms", &self.first_byte_timeout_ms)
            .field("inactivity_timeout_secs", &self.inactivity_timeout_secs)
            .finish()
    }
}

/// Whether `s` is non-empty and only letters, digits and `-_.` (safe in a URL path or query).
fn url_safe(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ElevenLabsConfig {
    /// Checks every field; the error names the field and the allowed values.
    pub fn validate(&self) -> Result<(), TtsError> {
        let bad = |msg: String| Err(TtsError::Config(format!("tts.elevenlabs: {msg}")));
        base_urls(&self.base_url)?;
        if self.api_key.trim().is_empty() {
            return bad("api_key is empty".into());
        }
        if HeaderValue::from_str(&self.api_key).is_err() {
            return bad("api_key has characters not allowed in a header".into());
        }
        if !url_safe(&self.voice_id) {
            return bad(format!(
                "voice_id {:?} must be non-empty letters, digits, '-', '_' or '.'",
                self.voice_id
            ));
        }
        if !url_safe(&self.model_id) {
            return bad(format!(
                "model_id {:?} must be non-empty letters, digits, '-', '_' or '.'",
                self.model_id
            ));
        }
        for (name, v) in [
            ("stability", self.stability),
            ("similarity_boost", self.similarity_boost),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} {v} is outside 0–1"));
            }
        }
        if !(0.7..=1.2).contains(&self.speed) {
            return bad(format!("speed {} is outside 0.7–1.2", self.speed));
        }
        if self.chunk_length_schedule.is_empty() {
            return bad("chunk_length_schedule is empty".into());
        }
        if let Some(v) = self
            .chunk_length_schedule
            .iter()
            .find(|v| !(50..=500).contains(*v))
        {
            return bad(format!("chunk_length_schedule value {v} is outside 50–500"));
        }
        if !(1..=60_000).contains(&self.first_byte_timeout_ms) {
            return bad(format!(
                "first_byte_timeout_ms {} is outside 1–60000",
                self.first_byte_timeout_ms
            ));
        }
        if !(1..=180).contains(&self.inactivity_timeout_secs) {
            return bad(format!(
                "inactivity_timeout_secs {} is outside 1–180",
                self.inactivity_timeout_secs
            ));
        }
        Ok(())
    }

    /// The BOS message: a single space with the voice settings and chunk schedule.
    fn bos(&self) -> String {
        serde_json::json!({
            "text": " ",
            "voice_settings": {
                "stability": self.stability,
                "similarity_boost": self.similarity_boost,
                "speed": self.speed,
            },
            "generation_config": {
                "chunk_length_schedule": self.chunk_length_schedule,
            },
        })
        .to_string()
    }
}

/// The WebSocket and HTTP forms of a base URL, without a trailing slash.
fn base_urls(base: &str) -> Result<(String, String), TtsError> {
    let base = base.trim_end_matches('/');
    let bad = || {
        TtsError::Config(format!(
            "tts.elevenlabs: base_url {base:?} must be an http(s):// or ws(s):// URL"
        ))
    };
    let url = reqwest::Url::parse(base).map_err(|_| bad())?;
    if url.host_str().is_none() {
        return Err(bad());
    }
    let (ws, http) = match url.scheme() {
        "https" | "wss" => ("wss", "https"),
        "http" | "ws" => ("ws", "http"),
        _ => return Err(bad()),
    };
    let rest = base.split_once("://").map(|(_, r)| r).ok_or_else(bad)?;
    Ok((format!("{ws}://{rest}"), format!("{http}://{rest}")))
}

/// The `output_format` asked for, and how to decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OutputFormat {
    /// The query value.
    name: &'static str,
    /// Byte encoding of the `audio` field.
    encoding: Encoding,
    /// Its sample rate.
    rate: u32,
}

/// The provider format for a call rate: μ-law at 8 kHz, 16-bit PCM otherwise.
fn output_format_for(call_rate: u32) -> Result<OutputFormat, TtsError> {
    let (name, encoding, rate) = match call_rate {
        8000 => ("ulaw_8000", Encoding::Mulaw, 8000),
        16_000 => ("pcm_16000", Encoding::Linear16, 16_000),
        24_000 | 48_000 => ("pcm_24000", Encoding::Linear16, 24_000),
        other => {
            return Err(TtsError::Config(format!(
                "elevenlabs: call rate {other} Hz is not supported (8000, 16000, 24000, 48000)"
            )));
        }
    };
    Ok(OutputFormat {
        name,
        encoding,
        rate,
    })
}

/// What every voice of one provider shares.
struct Shared {
    config: ElevenLabsConfig,
    /// `ws(s)://host[/prefix]`.
    ws_base: String,
    /// `http(s)://host[/prefix]`.
    http_base: String,
    /// The BOS text, built once.
    bos: String,
    /// Segment / connection outcomes.
    metrics: Metrics,
    /// For `check_credentials`.
    http: reqwest::Client,
}

impl Shared {
    fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.config.first_byte_timeout_ms)
    }

    fn keepalive_every(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.inactivity_timeout_secs) * 1000 / 3)
    }

    fn stream_url(&self, format: OutputFormat) -> String {
        format!(
            "{}/v1/text-to-speech/{}/stream-input?model_id={}&output_format={}&inactivity_timeout={}",
            self.ws_base,
            self.config.voice_id,
            self.config.model_id,
            format.name,
            self.config.inactivity_timeout_secs
        )
    }
}

/// The ElevenLabs text-to-speech provider.
#[derive(Clone)]
pub struct ElevenLabsTts {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ElevenLabsTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsTts")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl ElevenLabsTts {
    /// A provider for `config` (validated here), counting outcomes in `metrics`.
    pub fn new(config: ElevenLabsConfig, metrics: Metrics) -> Result<ElevenLabsTts, TtsError> {
        config.validate()?;
        let (ws_base, http_base) = base_urls(&config.base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| TtsError::Config(format!("elevenlabs: HTTP client: {e}")))?;
        Ok(ElevenLabsTts {
            shared: Arc::new(Shared {
                bos: config.bos(),
                config,
                ws_base,
                http_base,
                metrics,
                http,
            }),
        })
    }

    /// Checks the API key with `GET /v1/user` (at start-up, not per call).
    pub async fn check_credentials(&self) -> Result<(), TtsError> {
        let url = format!("{}/v1/user", self.shared.http_base);
        let resp = self
            .shared
            .http
            .get(&url)
            .header("xi-api-key", &self.shared.config.api_key)
            .send()
            .await
            .map_err(|e| transport(format!("GET /v1/user: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(http_error(status.as_u16(), &body))
    }

    /// A voice producing PCM at `sample_rate` (8, 16, 24 or 48 kHz), with its spare socket
    /// connecting in the background when called inside a tokio runtime.
    pub fn elevenlabs_voice(&self, sample_rate: u32) -> ElevenLabsVoice {
        ElevenLabsVoice::new(self.shared.clone(), sample_rate)
    }
}

impl TtsProvider for ElevenLabsTts {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn voice(&self, sample_rate: u32) -> Box<dyn TtsVoice> {
        Box::new(self.elevenlabs_voice(sample_rate))
    }
}

fn transport(reason: impl Into<String>) -> TtsError {
    TtsError::Transport {
        provider: PROVIDER,
        reason: reason.into(),
    }
}

fn protocol(reason: impl Into<String>) -> TtsError {
    TtsError::Protocol {
        provider: PROVIDER,
        reason: reason.into(),
    }
}

fn refused(reason: impl Into<String>) -> TtsError {
    TtsError::Refused {
        provider: PROVIDER,
        reason: reason.into(),
    }
}

fn clip(s: &str) -> String {
    super::clip(s, MAX_REASON)
}

/// An HTTP error status with its body (`{"detail":{"message":..}}` or text): 4xx refused,
/// 5xx a transport failure.
fn http_error(status: u16, body: &str) -> TtsError {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let d = v.get("detail")?;
            d.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
                .or_else(|| d.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| body.trim().to_owned());
    let reason = format!("HTTP {status}: {}", clip(&detail));
    if (400..500).contains(&status) {
        refused(reason)
    } else {
        transport(reason)
    }
}

/// The error a failed upgrade or socket operation means.
fn ws_error(e: tungstenite::Error) -> TtsError {
    match e {
        tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            http_error(resp.status().as_u16(), &body)
        }
        other => transport(other.to_string()),
    }
}

/// The error a close frame means, or `None` for a normal close (1000 or no status).
fn close_error(frame: Option<&CloseFrame>) -> Option<TtsError> {
    let frame = frame?;
    let reason = format!("close {}: {}", u16::from(frame.code), clip(&frame.reason));
    match frame.code {
        CloseCode::Normal => None,
        CloseCode::Policy | CloseCode::Invalid | CloseCode::Unsupported | CloseCode::Size => {
            Some(refused(reason))
        }
        _ => Some(transport(reason)),
    }
}

/// One server text message, decoded.
#[derive(Debug, Default, PartialEq)]
struct ServerMessage {
    /// Decoded audio bytes, if the message carried any.
    audio: Option<Vec<u8>>,
    /// `isFinal: true`.
    is_final: bool,
}

/// Parses a server text message: audio and final flag, or the provider's error.
fn parse_server_message(text: &str) -> Result<ServerMessage, TtsError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| protocol(format!("server message is not JSON ({e}): {}", clip(text))))?;
    let obj = value
        .as_object()
        .ok_or_else(|| protocol(format!("server message is not an object: {}", clip(text))))?;
    let audio = match obj.get("audio") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        Some(serde_json::Value::String(s)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| protocol(format!("audio is not base64: {e}")))?,
        ),
        Some(other) => {
            return Err(protocol(format!(
                "audio is not a string: {}",
                clip(&other.to_string())
            )));
        }
    };
    let is_final = matches!(obj.get("isFinal"), Some(serde_json::Value::Bool(true)));
    if audio.is_none() && !is_final {
        let field = |k: &str| match obj.get(k) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        };
        let message = field("message");
        let error = field("error");
        if message.is_some() || error.is_some() {
            let mut reason = message.or(error.clone()).unwrap_or_default();
            if let Some(code) = error.filter(|e| !reason.contains(e.as_str())) {
                reason = format!("{code}: {reason}");
            }
            if let Some(code) = field("code") {
                reason = format!("{reason} (code {code})");
            }
            return Err(refused(clip(&reason)));
        }
    }
    Ok(ServerMessage { audio, is_final })
}

/// Opens a `stream-input` socket and sends the BOS message.
async fn open_socket(shared: &Shared, format: OutputFormat) -> Result<Ws, TtsError> {
    let attempt = async {
        let mut request = shared
            .stream_url(format)
            .into_client_request()
            .map_err(|e| TtsError::Config(format!("elevenlabs: stream URL: {e}")))?;
        let key = HeaderValue::from_str(&shared.config.api_key)
            .map_err(|_| TtsError::Config("elevenlabs: api_key is not a valid header".into()))?;
        request.headers_mut().insert("xi-api-key", key);
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .map_err(ws_error)?;
        ws.send(Message::text(shared.bos.as_str()))
            .await
            .map_err(|e| transport(format!("sending BOS: {e}")))?;
        Ok(ws)
    };
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(TtsError::Timeout {
            provider: PROVIDER,
            waited_ms: CONNECT_TIMEOUT.as_millis() as u64,
        }),
    };
    if let Err(e) = &result {
        shared.metrics.provider(METRIC, "connect_error");
        tracing::warn!(error = %e, "elevenlabs connect failed");
    }
    result
}

/// Closes a socket we no longer read, off the caller's path.
fn discard(mut ws: Ws) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        });
    }
}

/// Where the spare task sends its socket (or why it has none).
type Reply = oneshot::Sender<Result<Ws, TtsError>>;

/// A background task holding one connected socket with BOS sent, until a segment takes it.
struct Spare {
    take: oneshot::Sender<Reply>,
    task: JoinHandle<()>,
}

impl Spare {
    /// Starts connecting a spare; `None` outside a tokio runtime.
    fn spawn(shared: Arc<Shared>, format: OutputFormat) -> Option<Spare> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (take, take_rx) = oneshot::channel();
        let task = handle.spawn(spare_task(shared, format, take_rx));
        Some(Spare { take, task })
    }

    /// The spare's socket, waiting for its connection if it is still being made.
    async fn take(self) -> Result<Ws, TtsError> {
        let (reply, answer) = oneshot::channel();
        if self.take.send(reply).is_err() {
            return Err(transport("spare socket task ended"));
        }
        answer
            .await
            .map_err(|_| transport("spare socket task ended"))?
    }
}

/// Connects, then holds the socket (keep-alives, watching for server errors) until taken.
async fn spare_task(
    shared: Arc<Shared>,
    format: OutputFormat,
    mut take_rx: oneshot::Receiver<Reply>,
) {
    let mut waiting: Option<Reply> = None;
    let connect = open_socket(&shared, format);
    tokio::pin!(connect);
    let opened = loop {
        tokio::select! {
            r = &mut connect => break r,
            req = &mut take_rx, if waiting.is_none() => match req {
                Ok(reply) => waiting = Some(reply),
                // The voice is gone.
                Err(_) => return,
            },
        }
    };
    let (reply, result) = match (waiting, opened) {
        (Some(reply), opened) => (reply, opened),
        (None, Ok(ws)) => match hold(ws, &mut take_rx, shared.keepalive_every()).await {
            Some(taken) => taken,
            None => return,
        },
        (None, Err(e)) => match take_rx.await {
            Ok(reply) => (reply, Err(e)),
            Err(_) => return,
        },
    };
    if let Err(Ok(ws)) = reply.send(result) {
        discard(ws);
    }
}

/// Holds an idle socket until it is asked for; `None` if the voice went away.
async fn hold(
    mut ws: Ws,
    take_rx: &mut oneshot::Receiver<Reply>,
    keepalive: Duration,
) -> Option<(Reply, Result<Ws, TtsError>)> {
    let keepalive = keepalive.max(Duration::from_millis(200));
    let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    let failure = loop {
        tokio::select! {
            req = &mut *take_rx => {
                return match req {
                    Ok(reply) => Some((reply, Ok(ws))),
                    Err(_) => {
                        discard(ws);
                        None
                    }
                };
            }
            _ = ticker.tick() => {
                if let Err(e) = ws.send(Message::text(KEEPALIVE)).await {
                    break transport(format!("keep-alive on the spare socket: {e}"));
                }
            }
            msg = ws.next() => match msg {
                None => break transport("spare socket closed"),
                Some(Err(e)) => break transport(format!("spare socket: {e}")),
                Some(Ok(Message::Close(frame))) => {
                    break close_error(frame.as_ref())
                        .unwrap_or_else(|| transport("spare socket closed by the server"));
                }
                Some(Ok(Message::Text(text))) => match parse_server_message(&text) {
                    Err(e) => break e,
                    Ok(_) => break protocol("audio on an idle socket"),
                },
                Some(Ok(Message::Binary(_))) => break protocol("binary frame on an idle socket"),
                Some(Ok(_)) => {}
            },
        }
    };
    tracing::debug!(error = %failure, "elevenlabs spare socket lost");
    // Whatever ended it, nothing was asked of this socket yet: the segment tries another.
    let lost = transport(format!("spare socket lost: {failure}"));
    match take_rx.await {
        Ok(reply) => Some((reply, Err(lost))),
        Err(_) => None,
    }
}

/// One call's ElevenLabs voice.
pub struct ElevenLabsVoice {
    shared: Arc<Shared>,
    /// The provider format, or why the call rate cannot be served.
    format: Result<OutputFormat, TtsError>,
    /// Provider bytes → call PCM (`None` iff `format` is an error).
    converter: Option<PcmConverter>,
    /// The warm socket for the next segment.
    spare: Option<Spare>,
    /// `close` was called.
    closed: bool,
}

impl std::fmt::Debug for ElevenLabsVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsVoice")
            .field("format", &self.format)
            .field("spare", &self.spare.is_some())
            .field("closed", &self.closed)
            .finish()
    }
}

/// How a segment's read loop ended early.
enum Stop {
    Cancelled,
    Failed(TtsError),
}

impl ElevenLabsVoice {
    fn new(shared: Arc<Shared>, sample_rate: u32) -> ElevenLabsVoice {
        let format = output_format_for(sample_rate);
        let (format, converter) = match format {
            Ok(f) => match PcmConverter::new(f.encoding, f.rate, sample_rate) {
                Ok(c) => (Ok(f), Some(c)),
                Err(e) => (
                    Err(TtsError::Config(format!("elevenlabs: converter: {e}"))),
                    None,
                ),
            },
            Err(e) => (Err(e), None),
        };
        let spare = match &format {
            Ok(f) => Spare::spawn(shared.clone(), *f),
            Err(_) => None,
        };
        ElevenLabsVoice {
            shared,
            format,
            converter,
            spare,
            closed: false,
        }
    }

    /// A socket for the next segment: the spare, replaced at once by a new one. If the spare
    /// was lost while idle (or failed to connect other than by a refusal), the replacement,
    /// already connecting, is taken instead.
    async fn acquire(&mut self, format: OutputFormat) -> Result<Ws, TtsError> {
        let mut last = transport("no socket");
        for _ in 0..2 {
            let current = self
                .spare
                .take()
                .or_else(|| Spare::spawn(self.shared.clone(), format));
            self.spare = Spare::spawn(self.shared.clone(), format);
            let Some(current) = current else {
                return open_socket(&self.shared, format).await;
            };
            match current.take().await {
                Ok(ws) => return Ok(ws),
                Err(e @ TtsError::Refused { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "elevenlabs spare unusable, taking the next");
                    self.shared.metrics.provider(METRIC, "reconnect");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// Sends PCM to the reader unless cancelled; a gone reader also stops the segment.
async fn deliver(
    out: &mpsc::Sender<Vec<i16>>,
    pcm: Vec<i16>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    if pcm.is_empty() {
        return Ok(());
    }
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        r = out.send(pcm) => r.map_err(|_| Stop::Cancelled),
    }
}

/// Where a segment's audio goes and what stops it.
struct SegmentIo<'a> {
    out: &'a mpsc::Sender<Vec<i16>>,
    cancel: &'a CancellationToken,
    /// When `synthesize` was called (first-byte time is measured from here).
    started: Instant,
}

/// Streams one segment on `ws`: text + flush, EOS, then audio until `isFinal`.
async fn run_segment(
    ws: &mut Ws,
    text: &str,
    shared: &Shared,
    converter: &mut PcmConverter,
    io: SegmentIo<'_>,
    stats: &mut SynthesisStats,
) -> Result<(), Stop> {
    let SegmentIo {
        out,
        cancel,
        started,
    } = io;
    let timeout = shared.first_byte_timeout();
    let deadline = started + timeout;
    let body = serde_json::json!({ "text": format!("{text} "), "flush": true }).to_string();
    for msg in [body.as_str(), EOS] {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            r = tokio::time::timeout_at(deadline, ws.send(Message::text(msg))) => match r {
                Err(_) => return Err(Stop::Failed(TtsError::Timeout {
                    provider: PROVIDER,
                    waited_ms: shared.config.first_byte_timeout_ms,
                })),
                Ok(Err(e)) => return Err(Stop::Failed(transport(format!("sending text: {e}")))),
                Ok(Ok(())) => {}
            },
        }
    }
    let mut pcm = Vec::new();
    loop {
        let until = if stats.first_byte.is_some() {
            Instant::now() + timeout
        } else {
            deadline
        };
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            r = tokio::time::timeout_at(until, ws.next()) => r,
        };
        let msg = match next {
            Err(_) => {
                return Err(Stop::Failed(TtsError::Timeout {
                    provider: PROVIDER,
                    waited_ms: shared.config.first_byte_timeout_ms,
                }));
            }
            Ok(None) => return Err(Stop::Failed(transport("connection closed before isFinal"))),
            Ok(Some(Err(e))) => return Err(Stop::Failed(transport(e.to_string()))),
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            Message::Text(text) => {
                let parsed = parse_server_message(&text).map_err(Stop::Failed)?;
                if let Some(audio) = parsed.audio {
                    if stats.first_byte.is_none() {
                        stats.first_byte = Some(started.elapsed());
                    }
                    converter.push(&audio, &mut pcm);
                    stats.samples += pcm.len() as u64;
                    deliver(out, std::mem::take(&mut pcm), cancel).await?;
                }
                if parsed.is_final {
                    break;
                }
            }
            Message::Close(frame) => match close_error(frame.as_ref()) {
                // A normal close ends the segment like isFinal.
                None => break,
                Some(e) => return Err(Stop::Failed(e)),
            },
            Message::Binary(_) => {
                return Err(Stop::Failed(protocol("unexpected binary frame")));
            }
            _ => {}
        }
    }
    converter.finish(&mut pcm);
    stats.samples += pcm.len() as u64;
    deliver(out, pcm, cancel).await
}

#[async_trait::async_trait]
impl TtsVoice for ElevenLabsVoice {
    async fn synthesize(
        &mut self,
        text: &str,
        out: &mpsc::Sender<Vec<i16>>,
        cancel: &CancellationToken,
    ) -> Result<SynthesisStats, TtsError> {
        let format = self.format.clone()?;
        if self.closed {
            return Err(TtsError::Config("elevenlabs: voice is closed".into()));
        }
        let text = text.trim();
        let mut stats = SynthesisStats::default();
        if text.is_empty() {
            return Ok(stats);
        }
        let started = Instant::now();
        let deadline = started + self.shared.first_byte_timeout();
        let acquired = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            r = tokio::time::timeout_at(deadline, self.acquire(format)) => Some(r),
        };
        let mut ws = match acquired {
            None => {
                self.shared.metrics.provider(METRIC, "cancelled");
                stats.cancelled = true;
                return Ok(stats);
            }
            Some(Err(_)) => {
                self.shared.metrics.provider(METRIC, "error");
                return Err(TtsError::Timeout {
                    provider: PROVIDER,
                    waited_ms: self.shared.config.first_byte_timeout_ms,
                });
            }
            Some(Ok(Err(e))) => {
                self.shared.metrics.provider(METRIC, "error");
                return Err(e);
            }
            Some(Ok(Ok(ws))) => ws,
        };
        let Some(converter) = self.converter.as_mut() else {
            return Err(TtsError::Config("elevenlabs: no converter".into()));
        };
        let result = run_segment(
            &mut ws,
            text,
            &self.shared,
            converter,
            SegmentIo {
                out,
                cancel,
                started,
            },
            &mut stats,
        )
        .await;
        discard(ws);
        match result {
            Ok(()) => {
                self.shared.metrics.provider(METRIC, "ok");
                Ok(stats)
            }
            Err(Stop::Cancelled) => {
                converter.reset();
                self.shared.metrics.provider(METRIC, "cancelled");
                stats.cancelled = true;
                Ok(stats)
            }
            Err(Stop::Failed(e)) => {
                converter.reset();
                self.shared.metrics.provider(METRIC, "error");
                tracing::warn!(error = %e, "elevenlabs segment failed");
                Err(e)
            }
        }
    }

    async fn close(&mut self) {
        self.closed = true;
        if let Some(spare) = self.spare.take() {
            let Spare { take, task } = spare;
            drop(take);
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ElevenLabsConfig {
        ElevenLabsConfig {
            api_key: "k".into(),
            voice_id: "21m00Tcm4TlvDq8ikWAM".into(),
            ..ElevenLabsConfig::default()
        }
    }

    #[test]
    fn defaults_need_a_voice_and_key() {
        assert!(ElevenLabsConfig::default().validate().is_err());
        assert!(config().validate().is_ok());
        let no_voice = ElevenLabsConfig {
            voice_id: String::new(),
            ..config()
        };
        assert!(no_voice.validate().is_err());
    }

    #[test]
    fn ranges_are_checked() {
        for bad in [
            ElevenLabsConfig {
                speed: 1.3,
                ..config()
            },
            ElevenLabsConfig {
                chunk_length_schedule: vec![50, 40],
                ..config()
            },
            ElevenLabsConfig {
                chunk_length_schedule: vec![],
                ..config()
            },
            ElevenLabsConfig {
                stability: 1.5,
                ..config()
            },
            ElevenLabsConfig {
                base_url: "ftp://x".into(),
                ..config()
            },
            ElevenLabsConfig {
                voice_id: "a/b".into(),
                ..config()
            },
            ElevenLabsConfig {
                inactivity_timeout_secs: 181,
                ..config()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_fields() {
        let c: ElevenLabsConfig = toml::from_str("api_key = \"k\"\nvoice_id = \"v1\"").unwrap();
        assert_eq!(c.model_id, "eleven_flash_v2_5");
        assert_eq!(c.chunk_length_schedule, [50, 90, 120, 150]);
        assert!(toml::from_str::<ElevenLabsConfig>("voice = \"v1\"").is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let c = ElevenLabsConfig {
            api_key: "sk-secret".into(),
            ..config()
        };
        assert!(!format!("{c:?}").contains("sk-secret"));
    }

    #[test]
    fn base_urls_map_schemes() {
        assert_eq!(
            base_urls("https://api.elevenlabs.io/").unwrap(),
            (
                "wss://api.elevenlabs.io".to_owned(),
                "https://api.elevenlabs.io".to_owned()
            )
        );
        assert_eq!(
            base_urls("ws://127.0.0.1:9/x").unwrap().1,
            "http://127.0.0.1:9/x"
        );
    }

    #[test]
    fn formats_follow_the_call_rate() {
        assert_eq!(output_format_for(8000).unwrap().name, "ulaw_8000");
        assert_eq!(output_format_for(16_000).unwrap().name, "pcm_16000");
        assert_eq!(output_format_for(48_000).unwrap().name, "pcm_24000");
        assert!(output_format_for(11_025).is_err());
    }

    #[test]
    fn server_messages() {
        let m = parse_server_message(r#"{"audio":"AAEC","isFinal":null}"#).unwrap();
        assert_eq!(m.audio.as_deref(), Some(&[0u8, 1, 2][..]));
        assert!(!m.is_final);
        assert!(
            parse_server_message(r#"{"isFinal":true}"#)
                .unwrap()
                .is_final
        );
        assert!(matches!(
            parse_server_message(r#"{"audio":"***"}"#),
            Err(TtsError::Protocol { .. })
        ));
        let err = parse_server_message(
            r#"{"message":"quota exceeded","error":"quota_exceeded","code":1008}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, TtsError::Refused { reason, .. } if reason.contains("quota exceeded") && reason.contains("quota_exceeded")),
            "{err:?}"
        );
        assert!(matches!(
            parse_server_message("[1]"),
            Err(TtsError::Protocol { .. })
        ));
    }

    #[test]
    fn close_codes() {
        let frame = |code: u16| CloseFrame {
            code: CloseCode::from(code),
            reason: "why".into(),
        };
        assert!(close_error(None).is_none());
        assert!(close_error(Some(&frame(1000))).is_none());
        assert!(matches!(
            close_error(Some(&frame(1008))),
            Some(TtsError::Refused { .. })
        ));
        assert!(matches!(
            close_error(Some(&frame(1011))),
            Some(TtsError::Transport { .. })
        ));
    }
}
