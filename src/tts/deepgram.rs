//! Deepgram Aura text-to-speech: one streaming `/v1/speak` WebSocket per call, with the REST
//! endpoint as a fallback.
//!
//! A [`DeepgramTts`] hands each call a voice that opens its socket in the background at once,
//! so the first segment does not pay the handshake, and reuses it for every segment of the
//! call. Each segment is `Speak{text}` + `Flush`; binary audio is decoded (μ-law at 8 kHz,
//! 16-bit PCM otherwise) and forwarded until `Flushed`. Barge-in sends `Clear` and the late
//! audio is dropped until `Cleared`.
//!
//! When the socket is unusable for a segment (refused, dropped mid-audio, no first byte in
//! time, flush limit reached), the segment is synthesized over REST (`POST /v1/speak`,
//! `container=none`, chunked body) and a new socket is opened in the background for the next
//! one. A segment that dropped mid-audio is re-synthesized whole over REST and the samples the
//! caller already received are skipped, so nothing is played twice.
//!
//! The WebSocket side uses the `deepgram` crate's streaming TTS handle. The REST side (and the
//! credential check) use reqwest directly: the crate's `speak_to_stream` ends the audio stream
//! silently when the body fails mid-transfer (it only prints the error to stderr), so a
//! truncated segment would look complete; reading the body ourselves turns that into an error.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deepgram::speak::options::{Encoding as DgEncoding, Model};
use deepgram::speak::websocket::{SpeakResponse, SpeakStreamEvents, SpeakStreamSender};
use deepgram::{Deepgram, DeepgramError, TungsteniteError};
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::convert::PcmConverter;
use super::{SynthesisStats, TtsError, TtsProvider, TtsVoice};
use crate::audio::Encoding;
use crate::metrics::Metrics;

/// Provider name in errors and events.
const PROVIDER: &str = "deepgram";
/// Provider label of this client's metrics.
const METRIC: &str = "deepgram_tts";

/// Flushes Deepgram allows per socket within [`FLUSH_WINDOW`] (spec §2.2).
pub const FLUSH_LIMIT: usize = 20;
/// The sliding window of the flush limit.
pub const FLUSH_WINDOW: Duration = Duration::from_secs(60);

/// Longest wait for `Cleared` after a `Clear` before the socket is replaced.
const CLEAR_WAIT: Duration = Duration::from_millis(1500);
/// Longest wait for the server to finish after `Close`.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Shortest allowed gap between two audio pieces once audio has started (the first-byte
/// timeout is used when it is longer).
const MIN_AUDIO_GAP: Duration = Duration::from_secs(5);
/// Time a background connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a REST request may take to answer, and between body chunks (or the first-byte
/// timeout when it is longer).
const MIN_REST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the credential check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an error body kept for the message.
const ERROR_BODY_LIMIT: usize = 16 * 1024;
/// Rates the streaming endpoint serves 16-bit PCM at.
const WS_LINEAR16_RATES: [u32; 5] = [8000, 16000, 24000, 32000, 48000];
/// The rate asked for when the call's rate is not served (then resampled).
const FALLBACK_WIRE_RATE: u32 = 24_000;
/// The `speed` range the streaming endpoint accepts.
const SPEED_RANGE: std::ops::RangeInclusive<f32> = 0.7..=1.5;

/// Settings of the Deepgram Aura client (`[tts.deepgram]`-style table).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeepgramTtsConfig {
    /// API root, `https://api.deepgram.com` (or a self-hosted / test server; `http://` gives
    /// plaintext `ws://`).
    pub base_url: String,
    /// API key, sent as `Authorization: Token <key>`.
    pub api_key: String,
    /// Aura voice model, e.g. `aura-2-thalia-en`.
    pub model: String,
    /// Speaking-rate multiplier (0.7–1.5); the model's default when unset.
    pub speed: Option<f32>,
    /// Milliseconds from a segment's request to its first audio byte before the socket is
    /// considered failed.
    pub first_byte_timeout_ms: u64,
    /// Whether a segment the socket could not produce (refused, dropped, timed out) is
    /// synthesized over REST instead. A segment over the flush limit always goes over REST.
    pub rest_fallback: bool,
}

impl Default for DeepgramTtsConfig {
    fn default() -> Self {
        DeepgramTtsConfig {
            base_url: "https://api.deepgram.com".to_owned(),
            api_key: String::new(),
            model: "aura-2-thalia-en".to_owned(),
            speed: None,
            first_byte_timeout_ms: 2000,
            rest_fallback: true,
        }
    }
}

impl fmt::Debug for DeepgramTtsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeepgramTtsConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &crate::config::redacted(&self.api_key))
            .field("model", &self.model)
            .field("speed", &self.speed)
            .field("first_byte_timeout_ms", &self.first_byte_timeout_ms)
            .field("rest_fallback", &self.rest_fallback)
            .finish()
    }
}

impl DeepgramTtsConfig {
    /// Checks every setting, naming the first bad key.
    pub fn validate(&self) -> Result<(), TtsError> {
        let bad =
            |key: &str, why: String| Err(TtsError::Config(format!("deepgram tts `{key}`: {why}")));
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                if url.query().is_some() || url.fragment().is_some() {
                    return bad(
                        "base_url",
                        format!("{:?} must not have a query or fragment", self.base_url),
                    );
                }
            }
            Ok(_) => {
                return bad(
                    "base_url",
                    format!(
                        "{:?} must be an http:// or https:// URL with a host",
                        self.base_url
                    ),
                );
            }
            Err(err) => {
                return bad(
                    "base_url",
                    format!("{:?} is not a URL: {err}", self.base_url),
                );
            }
        }
        if self.api_key.trim().is_empty() {
            return bad("api_key", "is empty".to_owned());
        }
        if self
            .api_key
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return bad(
                "api_key",
                "contains whitespace or non-ASCII characters".to_owned(),
            );
        }
        let voice_part = self
            .model
            .strip_prefix("aura-")
            .map(|rest| rest.strip_prefix("2-").unwrap_or(rest));
        match voice_part {
            Some(rest)
                if rest.len() > 1
                    && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {}
            _ => {
                return bad(
                    "model",
                    format!(
                        "{:?} is not an Aura model (aura-2-<voice>-<lang>)",
                        self.model
                    ),
                );
            }
        }
        if let Some(speed) = self.speed
            && (!speed.is_finite() || !SPEED_RANGE.contains(&speed))
        {
            return bad(
                "speed",
                format!(
                    "{speed} is outside {}..={}",
                    SPEED_RANGE.start(),
                    SPEED_RANGE.end()
                ),
            );
        }
        if !(1..=60_000).contains(&self.first_byte_timeout_ms) {
            return bad(
                "first_byte_timeout_ms",
                format!("{} is outside 1..=60000", self.first_byte_timeout_ms),
            );
        }
        Ok(())
    }
}

/// Deepgram Aura text-to-speech ([`TtsProvider`] `"deepgram"`).
#[derive(Clone)]
pub struct DeepgramTts {
    shared: Arc<Shared>,
    flush_limit: usize,
    flush_window: Duration,
}

impl fmt::Debug for DeepgramTts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeepgramTts")
            .field("config", &self.shared.config)
            .field("flush_limit", &self.flush_limit)
            .field("flush_window", &self.flush_window)
            .finish()
    }
}

/// What every voice of one provider shares.
struct Shared {
    config: DeepgramTtsConfig,
    /// The API root without a trailing slash.
    base: String,
    dg: Deepgram,
    http: reqwest::Client,
    metrics: Metrics,
}

impl DeepgramTts {
    /// Validates `config` and builds the clients (nothing is contacted yet).
    pub fn new(config: DeepgramTtsConfig, metrics: Metrics) -> Result<DeepgramTts, TtsError> {
        config.validate()?;
        let base = config.base_url.trim_end_matches('/').to_owned();
        // The crate joins `v1/speak` onto the base; a trailing slash keeps any path prefix.
        let dg = Deepgram::with_base_url_and_api_key(format!("{base}/").as_str(), &config.api_key)
            .map_err(|err| TtsError::Config(format!("deepgram tts `base_url`: {err}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|err| TtsError::Config(format!("deepgram tts HTTP client: {err}")))?;
        Ok(DeepgramTts {
            shared: Arc::new(Shared {
                config,
                base,
                dg,
                http,
                metrics,
            }),
            flush_limit: FLUSH_LIMIT,
            flush_window: FLUSH_WINDOW,
        })
    }

    /// Overrides the flush limit ([`FLUSH_LIMIT`] per [`FLUSH_WINDOW`] by default), for a
    /// server with a different limit or for tests.
    pub fn with_flush_limit(mut self, limit: usize, window: Duration) -> DeepgramTts {
        self.flush_limit = limit;
        self.flush_window = window;
        self
    }

    /// Checks the key with `GET {base}/v1/projects` (401/403 → [`TtsError::Refused`]).
    pub async fn check_credentials(&self) -> Result<(), TtsError> {
        let url = format!("{}/v1/projects", self.shared.base);
        let request = self
            .shared
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, self.shared.auth_header())
            .send();
        let response = tokio::time::timeout(CHECK_TIMEOUT, request)
            .await
            .map_err(|_| TtsError::Timeout {
                provider: PROVIDER,
                waited_ms: millis(CHECK_TIMEOUT),
            })?
            .map_err(|err| transport(format!("credential check: {err}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let reason = error_reason(status.as_u16(), response).await;
        if matches!(status.as_u16(), 401 | 403) {
            Err(TtsError::Refused {
                provider: PROVIDER,
                reason,
            })
        } else {
            Err(transport(format!("credential check: {reason}")))
        }
    }
}

impl Shared {
    fn auth_header(&self) -> String {
        format!("Token {}", self.config.api_key)
    }

    fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.config.first_byte_timeout_ms)
    }
}

impl TtsProvider for DeepgramTts {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn voice(&self, sample_rate: u32) -> Box<dyn TtsVoice> {
        let format = WireFormat::for_rate(sample_rate);
        let converter =
            PcmConverter::new(format.encoding, format.rate, sample_rate).map_err(|err| {
                TtsError::Config(format!(
                    "deepgram tts cannot produce {sample_rate} Hz from {} Hz: {err}",
                    format.rate
                ))
            });
        let ready = converter.is_ok();
        let mut voice = DeepgramVoice {
            shared: Arc::clone(&self.shared),
            format,
            converter,
            link: Link::Idle,
            pending_clear: false,
            flushes: VecDeque::new(),
            flush_limit: self.flush_limit,
            flush_window: self.flush_window,
        };
        if ready {
            voice.start_connect();
        }
        Box::new(voice)
    }
}

/// The audio format asked of Deepgram for one call rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WireFormat {
    encoding: Encoding,
    rate: u32,
}

impl WireFormat {
    /// μ-law at 8 kHz (what the phone wants), 16-bit PCM at any other rate the socket serves,
    /// else 16-bit PCM at 24 kHz to be resampled.
    fn for_rate(rate: u32) -> WireFormat {
        if rate == 8000 {
            WireFormat {
                encoding: Encoding::Mulaw,
                rate,
            }
        } else if WS_LINEAR16_RATES.contains(&rate) {
            WireFormat {
                encoding: Encoding::Linear16,
                rate,
            }
        } else {
            WireFormat {
                encoding: Encoding::Linear16,
                rate: FALLBACK_WIRE_RATE,
            }
        }
    }

    fn dg_encoding(self) -> DgEncoding {
        match self.encoding {
            Encoding::Mulaw => DgEncoding::Mulaw,
            Encoding::Alaw => DgEncoding::Alaw,
            Encoding::Linear16 => DgEncoding::Linear16,
        }
    }

    fn query_name(self) -> &'static str {
        match self.encoding {
            Encoding::Mulaw => "mulaw",
            Encoding::Alaw => "alaw",
            Encoding::Linear16 => "linear16",
        }
    }
}

/// One open streaming session.
struct Socket {
    tx: SpeakStreamSender,
    events: SpeakStreamEvents,
}

/// The state of a voice's socket.
enum Link {
    /// No socket and none being opened.
    Idle,
    /// Being opened in the background.
    Connecting(JoinHandle<Result<Socket, TtsError>>),
    /// Open and idle between segments.
    Open(Socket),
}

/// How a segment over the socket ended.
enum WsOutcome {
    /// All its audio was forwarded.
    Done,
    /// `cancel` fired (or the reader went away).
    Cancelled,
}

/// Whether one piece of PCM reached the caller.
enum Forward {
    Sent,
    Cancelled,
}

/// A voice for one call: its socket, flush history and decoder.
struct DeepgramVoice {
    shared: Arc<Shared>,
    format: WireFormat,
    converter: Result<PcmConverter, TtsError>,
    link: Link,
    /// A `Clear` was sent and its `Cleared` not yet seen: late audio must be dropped first.
    pending_clear: bool,
    /// When the recent flushes were sent on this voice.
    flushes: VecDeque<Instant>,
    flush_limit: usize,
    flush_window: Duration,
}

impl Drop for DeepgramVoice {
    fn drop(&mut self) {
        if let Link::Connecting(handle) = &self.link {
            handle.abort();
        }
    }
}

/// Opens one streaming session.
async fn connect(
    dg: Deepgram,
    model: String,
    format: WireFormat,
    speed: Option<f32>,
) -> Result<Socket, TtsError> {
    let mut builder = dg
        .text_to_speech()
        .speak_stream()
        .model(Model::CustomId(model))
        .encoding(format.dg_encoding())
        .sample_rate(format.rate);
    if let Some(speed) = speed {
        builder = builder.speed(speed);
    }
    let handle = tokio::time::timeout(CONNECT_TIMEOUT, builder.handle())
        .await
        .map_err(|_| TtsError::Timeout {
            provider: PROVIDER,
            waited_ms: millis(CONNECT_TIMEOUT),
        })?
        .map_err(connect_error)?;
    let (tx, events) = handle.split();
    Ok(Socket { tx, events })
}

/// Maps a failed WebSocket connect to a [`TtsError`], keeping the HTTP status and Deepgram's
/// reason of a refused upgrade.
fn connect_error(err: DeepgramError) -> TtsError {
    match err {
        DeepgramError::WsError(inner) => match *inner {
            TungsteniteError::Http(response) => {
                let status = response.status().as_u16();
                let header = response
                    .headers()
                    .get("dg-error")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.body().as_deref().map(|b| {
                    String::from_utf8_lossy(&b[..b.len().min(ERROR_BODY_LIMIT)]).into_owned()
                });
                let detail = body
                    .as_deref()
                    .and_then(json_error_message)
                    .or(header)
                    .or(body)
                    .unwrap_or_default();
                TtsError::Refused {
                    provider: PROVIDER,
                    reason: format!("WebSocket upgrade answered {status}: {detail}"),
                }
            }
            other => transport(format!("WebSocket connect: {other}")),
        },
        DeepgramError::InvalidOptions(message) => TtsError::Config(message),
        other => transport(format!("WebSocket connect: {other}")),
    }
}

impl DeepgramVoice {
    /// Starts opening a socket in the background (when a runtime is running; otherwise the
    /// first segment opens it).
    fn start_connect(&mut self) {
        if let Link::Connecting(handle) = &self.link {
            handle.abort();
        }
        self.link = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Link::Connecting(runtime.spawn(connect(
                self.shared.dg.clone(),
                self.shared.config.model.clone(),
                self.format,
                self.shared.config.speed,
            ))),
            Err(_) => Link::Idle,
        };
    }

    /// Drops the current socket (if any) and opens a new one in the background.
    fn reconnect(&mut self, why: &TtsError) {
        tracing::info!(error = %why, "deepgram tts socket failed; reconnecting in the background");
        self.shared.metrics.provider(METRIC, "reconnect");
        self.pending_clear = false;
        self.start_connect();
    }

    /// Forgets flushes older than the window and says whether one more is allowed.
    fn flush_allowed(&mut self, now: Instant) -> bool {
        while let Some(&sent) = self.flushes.front() {
            if now.duration_since(sent) >= self.flush_window {
                self.flushes.pop_front();
            } else {
                break;
            }
        }
        self.flushes.len() < self.flush_limit
    }

    /// Decodes provider bytes to PCM at the call rate, dropping the first `skip` samples.
    fn decode(&mut self, bytes: &[u8], skip: &mut u64) -> Vec<i16> {
        let mut pcm = Vec::new();
        if let Ok(converter) = self.converter.as_mut() {
            converter.push(bytes, &mut pcm);
        }
        skip_samples(pcm, skip)
    }

    /// The decoder's tail at the end of a segment, minus what is still to be skipped.
    fn finish_decoding(&mut self, skip: &mut u64) -> Vec<i16> {
        let mut pcm = Vec::new();
        if let Ok(converter) = self.converter.as_mut() {
            converter.finish(&mut pcm);
        }
        skip_samples(pcm, skip)
    }

    fn reset_decoder(&mut self) {
        if let Ok(converter) = self.converter.as_mut() {
            converter.reset();
        }
    }

    /// Takes the socket for a segment, waiting for a background connect until `deadline`.
    /// `Ok(None)` means `cancel` fired while waiting.
    async fn take_socket(
        &mut self,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Option<Socket>, TtsError> {
        if matches!(self.link, Link::Idle) {
            self.start_connect();
        }
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Open(socket) => Ok(Some(socket)),
            Link::Idle => Err(transport("no runtime to open the socket on".to_owned())),
            Link::Connecting(mut handle) => {
                let waited = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        self.link = Link::Connecting(handle);
                        return Ok(None);
                    }
                    joined = tokio::time::timeout_at(deadline.into(), &mut handle) => joined,
                };
                match waited {
                    Err(_elapsed) => {
                        // Still connecting: keep it for the next segment.
                        self.link = Link::Connecting(handle);
                        Err(TtsError::Timeout {
                            provider: PROVIDER,
                            waited_ms: millis(self.shared.first_byte_timeout()),
                        })
                    }
                    Ok(Ok(Ok(socket))) => Ok(Some(socket)),
                    Ok(Ok(Err(err))) => {
                        self.reconnect(&err);
                        Err(err)
                    }
                    Ok(Err(join)) => {
                        let err = transport(format!("connect task failed: {join}"));
                        self.reconnect(&err);
                        Err(err)
                    }
                }
            }
        }
    }

    /// Before a new segment: waits out a pending `Cleared` (bounded) and drops anything the
    /// socket delivered since the last segment. An error means the socket is unusable.
    async fn settle(&mut self, socket: &mut Socket) -> Result<(), TtsError> {
        if self.pending_clear {
            let until = tokio::time::Instant::now() + CLEAR_WAIT;
            loop {
                match tokio::time::timeout_at(until, socket.events.next()).await {
                    Ok(Some(Ok(SpeakResponse::Cleared { .. }))) => break,
                    Ok(Some(Ok(_late))) => continue,
                    Ok(Some(Err(err))) => return Err(transport(format!("socket failed: {err}"))),
                    Ok(None) => return Err(transport("socket closed by the server".to_owned())),
                    Err(_) => {
                        return Err(TtsError::Timeout {
                            provider: PROVIDER,
                            waited_ms: millis(CLEAR_WAIT),
                        });
                    }
                }
            }
            self.pending_clear = false;
        }
        while let Some(item) = socket.events.next().now_or_never() {
            match item {
                None => return Err(transport("socket closed by the server".to_owned())),
                Some(Err(err)) => return Err(transport(format!("socket failed: {err}"))),
                Some(Ok(SpeakResponse::Audio(bytes))) => {
                    tracing::debug!(bytes = bytes.len(), "deepgram tts: dropping stale audio");
                }
                Some(Ok(other)) => log_event(&other),
            }
        }
        Ok(())
    }

    /// Synthesizes one segment over the socket. On `Err` the socket has been replaced and
    /// `stats.samples` says how much audio already reached the caller.
    async fn ws_segment(
        &mut self,
        text: &str,
        started: Instant,
        out: &mpsc::Sender<Vec<i16>>,
        cancel: &CancellationToken,
        stats: &mut SynthesisStats,
    ) -> Result<WsOutcome, TtsError> {
        let first_byte_timeout = self.shared.first_byte_timeout();
        let deadline = started + first_byte_timeout;
        let Some(mut socket) = self.take_socket(deadline, cancel).await? else {
            stats.cancelled = true;
            return Ok(WsOutcome::Cancelled);
        };
        if let Err(err) = self.settle(&mut socket).await {
            self.reconnect(&err);
            return Err(err);
        }
        let sent = async {
            socket.tx.speak(text).await?;
            socket.tx.flush().await
        };
        if let Err(err) = sent.await {
            let err = transport(format!("sending text: {err}"));
            self.reconnect(&err);
            return Err(err);
        }
        self.flushes.push_back(Instant::now());
        self.reset_decoder();
        let gap = first_byte_timeout.max(MIN_AUDIO_GAP);
        let mut no_skip = 0u64;
        loop {
            let until = if stats.first_byte.is_none() {
                deadline
            } else {
                Instant::now() + gap
            };
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(self.cancel_socket(socket, stats).await),
                event = tokio::time::timeout_at(until.into(), socket.events.next()) => event,
            };
            let response = match event {
                Err(_elapsed) => {
                    let waited = if stats.first_byte.is_none() {
                        first_byte_timeout
                    } else {
                        gap
                    };
                    let err = TtsError::Timeout {
                        provider: PROVIDER,
                        waited_ms: millis(waited),
                    };
                    // The session's state is unknown: drop it (its worker sends Close).
                    drop(socket);
                    self.reconnect(&err);
                    return Err(err);
                }
                Ok(None) => {
                    let err = transport("socket closed mid-segment".to_owned());
                    self.reconnect(&err);
                    return Err(err);
                }
                Ok(Some(Err(err))) => {
                    let err = transport(format!("socket failed mid-segment: {err}"));
                    self.reconnect(&err);
                    return Err(err);
                }
                Ok(Some(Ok(response))) => response,
            };
            match response {
                SpeakResponse::Audio(bytes) => {
                    if stats.first_byte.is_none() {
                        let elapsed = started.elapsed();
                        stats.first_byte = Some(elapsed);
                    }
                    let pcm = self.decode(&bytes, &mut no_skip);
                    if let Forward::Cancelled = forward(out, pcm, cancel, stats).await {
                        return Ok(self.cancel_socket(socket, stats).await);
                    }
                }
                SpeakResponse::Flushed { .. } => {
                    let tail = self.finish_decoding(&mut no_skip);
                    self.link = Link::Open(socket);
                    if let Forward::Cancelled = forward(out, tail, cancel, stats).await {
                        stats.cancelled = true;
                        return Ok(WsOutcome::Cancelled);
                    }
                    return Ok(WsOutcome::Done);
                }
                SpeakResponse::Warning {
                    description, code, ..
                } if stats.first_byte.is_none() && is_flush_limit(&description, &code) => {
                    // The server ignored this flush but kept the text buffered: clear it so
                    // it is not spoken with the next segment. The socket itself is fine.
                    match socket.tx.clear().await {
                        Ok(()) => {
                            self.pending_clear = true;
                            self.link = Link::Open(socket);
                        }
                        Err(err) => self.reconnect(&transport(format!("sending Clear: {err}"))),
                    }
                    return Err(TtsError::Refused {
                        provider: PROVIDER,
                        reason: format!(
                            "flush ignored: {}",
                            description.or(code).unwrap_or_default()
                        ),
                    });
                }
                other => log_event(&other),
            }
        }
    }

    /// Stops the segment after `cancel`: sends `Clear` and keeps the socket, with its late
    /// audio to be dropped until `Cleared` before the next segment.
    async fn cancel_socket(&mut self, socket: Socket, stats: &mut SynthesisStats) -> WsOutcome {
        stats.cancelled = true;
        self.reset_decoder();
        match socket.tx.clear().await {
            Ok(()) => {
                self.pending_clear = true;
                self.link = Link::Open(socket);
            }
            Err(err) => {
                let err = transport(format!("sending Clear: {err}"));
                self.reconnect(&err);
            }
        }
        WsOutcome::Cancelled
    }

    /// Synthesizes `text` over REST, skipping the first `skip` samples (already played).
    async fn rest_segment(
        &mut self,
        text: &str,
        skip: u64,
        started: Instant,
        out: &mpsc::Sender<Vec<i16>>,
        cancel: &CancellationToken,
        stats: &mut SynthesisStats,
    ) -> Result<(), TtsError> {
        let timeout = self.shared.first_byte_timeout().max(MIN_REST_TIMEOUT);
        let mut query: Vec<(&str, String)> = vec![
            ("model", self.shared.config.model.clone()),
            ("encoding", self.format.query_name().to_owned()),
            ("sample_rate", self.format.rate.to_string()),
            ("container", "none".to_owned()),
        ];
        if let Some(speed) = self.shared.config.speed {
            query.push(("speed", speed.to_string()));
        }
        let request = self
            .shared
            .http
            .post(format!("{}/v1/speak", self.shared.base))
            .query(&query)
            .header(reqwest::header::AUTHORIZATION, self.shared.auth_header())
            .json(&serde_json::json!({ "text": text }))
            .send();
        let response = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                stats.cancelled = true;
                return Ok(());
            }
            response = tokio::time::timeout(timeout, request) => response,
        };
        let mut response = response
            .map_err(|_| TtsError::Timeout {
                provider: PROVIDER,
                waited_ms: millis(timeout),
            })?
            .map_err(|err| transport(format!("REST request: {err}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TtsError::Refused {
                provider: PROVIDER,
                reason: format!("REST {}", error_reason(status.as_u16(), response).await),
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("application/json") || content_type.starts_with("text/") {
            return Err(TtsError::Protocol {
                provider: PROVIDER,
                reason: format!("REST answered {content_type} instead of audio"),
            });
        }
        self.reset_decoder();
        let mut skip = skip;
        loop {
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.reset_decoder();
                    stats.cancelled = true;
                    return Ok(());
                }
                chunk = tokio::time::timeout(timeout, response.chunk()) => chunk,
            };
            let chunk = chunk
                .map_err(|_| TtsError::Timeout {
                    provider: PROVIDER,
                    waited_ms: millis(timeout),
                })?
                .map_err(|err| transport(format!("REST body: {err}")))?;
            let Some(bytes) = chunk else { break };
            if bytes.is_empty() {
                continue;
            }
            if stats.first_byte.is_none() {
                let elapsed = started.elapsed();
                stats.first_byte = Some(elapsed);
            }
            let pcm = self.decode(&bytes, &mut skip);
            if let Forward::Cancelled = forward(out, pcm, cancel, stats).await {
                self.reset_decoder();
                return Ok(());
            }
        }
        let tail = self.finish_decoding(&mut skip);
        let _ = forward(out, tail, cancel, stats).await;
        Ok(())
    }

    /// The REST path of a segment, with its metrics.
    async fn fall_back(
        &mut self,
        text: &str,
        started: Instant,
        out: &mpsc::Sender<Vec<i16>>,
        cancel: &CancellationToken,
        mut stats: SynthesisStats,
    ) -> Result<SynthesisStats, TtsError> {
        stats.fallback = true;
        let skip = stats.samples;
        match self
            .rest_segment(text, skip, started, out, cancel, &mut stats)
            .await
        {
            Ok(()) => {
                self.shared.metrics.provider(METRIC, "fallback");
                Ok(stats)
            }
            Err(err) => {
                tracing::warn!(error = %err, "deepgram tts REST synthesis failed");
                self.shared.metrics.provider(METRIC, "error");
                Err(err)
            }
        }
    }
}

#[async_trait::async_trait]
impl TtsVoice for DeepgramVoice {
    async fn synthesize(
        &mut self,
        text: &str,
        out: &mpsc::Sender<Vec<i16>>,
        cancel: &CancellationToken,
    ) -> Result<SynthesisStats, TtsError> {
        if let Err(err) = &self.converter {
            return Err(err.clone());
        }
        let mut stats = SynthesisStats::default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(stats);
        }
        if cancel.is_cancelled() {
            stats.cancelled = true;
            return Ok(stats);
        }
        let started = Instant::now();
        if !self.flush_allowed(started) {
            tracing::debug!("deepgram tts flush limit reached; segment goes over REST");
            return self.fall_back(text, started, out, cancel, stats).await;
        }
        match self
            .ws_segment(text, started, out, cancel, &mut stats)
            .await
        {
            Ok(WsOutcome::Done) => {
                self.shared.metrics.provider(METRIC, "ok");
                Ok(stats)
            }
            Ok(WsOutcome::Cancelled) => Ok(stats),
            Err(err) if self.shared.config.rest_fallback => {
                tracing::warn!(error = %err, forwarded = stats.samples, "deepgram tts socket failed; segment goes over REST");
                self.fall_back(text, started, out, cancel, stats).await
            }
            Err(err) => {
                self.shared.metrics.provider(METRIC, "error");
                Err(err)
            }
        }
    }

    async fn close(&mut self) {
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Open(mut socket) => {
                if socket.tx.close().await.is_ok() {
                    let drained = async { while socket.events.next().await.is_some() {} };
                    if tokio::time::timeout(CLOSE_WAIT, drained).await.is_err() {
                        tracing::debug!("deepgram tts socket did not finish closing in time");
                    }
                }
            }
            Link::Connecting(handle) => handle.abort(),
            Link::Idle => {}
        }
        self.pending_clear = false;
    }
}

/// Sends one piece of PCM to the caller unless `cancel` fires first; a reader that went away
/// counts as a cancel.
async fn forward(
    out: &mpsc::Sender<Vec<i16>>,
    pcm: Vec<i16>,
    cancel: &CancellationToken,
    stats: &mut SynthesisStats,
) -> Forward {
    if pcm.is_empty() {
        return Forward::Sent;
    }
    let samples = pcm.len() as u64;
    let sent = tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        sent = out.send(pcm) => sent.is_ok(),
    };
    if sent {
        stats.samples += samples;
        Forward::Sent
    } else {
        stats.cancelled = true;
        Forward::Cancelled
    }
}

/// Drops the first `*skip` samples of `pcm`, counting them off.
fn skip_samples(mut pcm: Vec<i16>, skip: &mut u64) -> Vec<i16> {
    if *skip == 0 {
        return pcm;
    }
    let n = usize::try_from(*skip).unwrap_or(usize::MAX).min(pcm.len());
    pcm.drain(..n);
    *skip -= n as u64;
    pcm
}

/// Whether a `Warning` says the flush was refused for the flush limit.
fn is_flush_limit(description: &Option<String>, code: &Option<String>) -> bool {
    [description, code]
        .into_iter()
        .flatten()
        .any(|s| s.to_ascii_lowercase().contains("flush"))
}

/// Logs a control event that needs no action.
fn log_event(event: &SpeakResponse) {
    match event {
        SpeakResponse::Warning {
            description, code, ..
        } => {
            tracing::warn!(?description, ?code, "deepgram tts warning");
        }
        SpeakResponse::Unknown(raw) => tracing::debug!(%raw, "deepgram tts: unknown message"),
        other => tracing::trace!(?other, "deepgram tts event"),
    }
}

/// `status` plus Deepgram's `err_msg` (or the start of the body) of a failed HTTP response.
async fn error_reason(status: u16, mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_LIMIT {
        match tokio::time::timeout(MIN_REST_TIMEOUT, response.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_LIMIT);
    let text = String::from_utf8_lossy(&body);
    match json_error_message(&text) {
        Some(message) => format!("{status}: {message}"),
        None if text.trim().is_empty() => format!("{status}"),
        None => format!("{status}: {}", text.trim()),
    }
}

/// `err_code: err_msg` from Deepgram's JSON error body, if it is one.
fn json_error_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let message = value.get("err_msg").and_then(|m| m.as_str());
    let code = value.get("err_code").and_then(|c| c.as_str());
    match (code, message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (None, Some(message)) => Some(message.to_owned()),
        (Some(code), None) => Some(code.to_owned()),
        (None, None) => None,
    }
}

fn transport(reason: String) -> TtsError {
    TtsError::Transport {
        provider: PROVIDER,
        reason,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DeepgramTtsConfig {
        DeepgramTtsConfig {
            api_key: "k".to_owned(),
            ..DeepgramTtsConfig::default()
        }
    }

    #[test]
    fn validate_names_the_bad_key() {
        assert!(config().validate().is_ok());
        let cases: Vec<(DeepgramTtsConfig, &str)> = vec![
            (DeepgramTtsConfig::default(), "api_key"),
            (
                DeepgramTtsConfig {
                    base_url: "ftp://x".into(),
                    ..config()
                },
                "base_url",
            ),
            (
                DeepgramTtsConfig {
                    model: "nova-3".into(),
                    ..config()
                },
                "model",
            ),
            (
                DeepgramTtsConfig {
                    speed: Some(2.0),
                    ..config()
                },
                "speed",
            ),
            (
                DeepgramTtsConfig {
                    first_byte_timeout_ms: 0,
                    ..config()
                },
                "first_byte_timeout_ms",
            ),
        ];
        for (cfg, key) in cases {
            match cfg.validate() {
                Err(TtsError::Config(msg)) => assert!(msg.contains(key), "{key}: {msg}"),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let cfg = DeepgramTtsConfig {
            api_key: "secret-key-123".into(),
            ..config()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("secret-key-123"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let err = serde_json::from_str::<DeepgramTtsConfig>(r#"{"api_key":"k","voice":"x"}"#);
        assert!(err.is_err());
        let ok: DeepgramTtsConfig = serde_json::from_str(r#"{"api_key":"k"}"#).unwrap();
        assert_eq!(ok.model, "aura-2-thalia-en");
        assert_eq!(ok.first_byte_timeout_ms, 2000);
        assert!(ok.rest_fallback);
    }

    #[test]
    fn wire_format_per_rate() {
        assert_eq!(WireFormat::for_rate(8000).encoding, Encoding::Mulaw);
        assert_eq!(WireFormat::for_rate(16000).encoding, Encoding::Linear16);
        assert_eq!(WireFormat::for_rate(48000).rate, 48000);
        assert_eq!(WireFormat::for_rate(44100).rate, FALLBACK_WIRE_RATE);
    }

    #[test]
    fn skip_counts_down_across_pieces() {
        let mut skip = 5;
        assert_eq!(skip_samples(vec![1, 2, 3], &mut skip), Vec::<i16>::new());
        assert_eq!(skip_samples(vec![4, 5, 6, 7], &mut skip), vec![6, 7]);
        assert_eq!(skip, 0);
    }

    #[test]
    fn json_error_bodies_are_read() {
        assert_eq!(
            json_error_message(r#"{"err_code":"INVALID_QUERY_PARAMETER","err_msg":"bad rate"}"#)
                .as_deref(),
            Some("INVALID_QUERY_PARAMETER: bad rate")
        );
        assert_eq!(json_error_message("not json"), None);
    }
}
