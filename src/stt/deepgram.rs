//! Deepgram live speech-to-text (`/v1/listen`) as an [`SttProvider`].
//!
//! One task per call owns the Deepgram WebSocket (through the `deepgram` crate's low-level
//! [`WebsocketHandle`]). It forwards the caller's audio, sends `KeepAlive` while the session
//! gates silence, `Finalize` on request and `CloseStream` at the end, and turns Deepgram's
//! results into [`SttEvent`]s with times on the call's timeline ([`Timeline`]).
//!
//! If the socket drops, the task reconnects at once (backoff 0, 100, 200, 400 … ms) and first
//! replays the audio Deepgram had not yet finalized plus what arrived meanwhile, so no words
//! are lost and none are reported twice: audio is only forgotten once an `is_final` result has
//! covered it. After too many consecutive failures, or when the handshake is refused for good
//! (401, 403, other 4xx), the task reports [`SttEvent::Failed`] once and then just drains its
//! input until the session lets go. A connection that ends within a second of its handshake
//! without a single message counts as a failed attempt too, so a server that accepts and
//! closes at once cannot keep the task reconnecting forever.
//!
//! The `deepgram` crate does not hand back the close code of a connection that ended (its
//! worker returns it to nobody), so a drop is logged with the last error seen, not the code.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deepgram::common::options::{Encoding, Endpointing, Language, Model, Options};
use deepgram::common::stream_response::StreamResponse;
use deepgram::listen::websocket::WebsocketHandle;
use deepgram::{Deepgram, DeepgramError};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::timeline::Timeline;
use super::{SttAudioFormat, SttEncoding, SttEvent, SttInput, SttProvider, SttStream};
use crate::call::CallId;
use crate::metrics::Metrics;

/// Provider label in metrics.
const METRIC_PROVIDER: &str = "deepgram_stt";
/// How long to wait for the last results after `CloseStream`.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// A connection that ends sooner than this without any message counts as a failed attempt.
const FLAP_WINDOW: Duration = Duration::from_secs(1);
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long to wait for a broken connection's worker to hand back its last results.
const BROKEN_DRAIN: Duration = Duration::from_secs(1);

/// The `[stt]` configuration section for Deepgram.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeepgramSttConfig {
    /// API base URL (`https://api.deepgram.com`; `http://` or `ws://` for a local server).
    pub base_url: String,
    /// API key, sent as `Authorization: Token <key>`.
    pub api_key: String,
    /// Model (`nova-3`, `nova-2-phonecall`, …).
    pub model: String,
    /// BCP-47 language (`en-US`, `multi`, …).
    pub language: String,
    /// Silence (ms) after which Deepgram sets `speech_final`; 0 sends `endpointing=false`.
    pub endpointing_ms: u32,
    /// Word-timing gap (ms) for `UtteranceEnd`; at least 1000.
    pub utterance_end_ms: u32,
    /// Deepgram's smart formatting (numbers, punctuation).
    pub smart_format: bool,
    /// Key terms to boost (sent as repeated `keyterm`, Nova-3 models only).
    pub keyterms: Vec<String>,
    /// Seconds without audio after which a `KeepAlive` is sent (1–9; Deepgram closes at 10).
    pub keepalive_secs: u64,
    /// Consecutive failed (re)connect attempts before giving up on the call.
    pub max_reconnects: u32,
    /// Most audio (ms) kept for replay after a drop; older audio is dropped first.
    pub replay_limit_ms: u64,
    /// Time limit (ms) for one connection attempt, handshake included.
    pub connect_timeout_ms: u64,
}

impl Default for DeepgramSttConfig {
    fn default() -> Self {
        DeepgramSttConfig {
            base_url: "https://api.deepgram.com".to_string(),
            api_key: String::new(),
            model: "nova-3".to_string(),
            language: "en-US".to_string(),
            endpointing_ms: 300,
            utterance_end_ms: 1000,
            smart_format: true,
            keyterms: Vec::new(),
            keepalive_secs: 4,
            max_reconnects: 5,
            replay_limit_ms: 15_000,
            connect_timeout_ms: 3000,
        }
    }
}

impl std::fmt::Debug for DeepgramSttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepgramSttConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &crate::config::redacted(&self.api_key))
            .field("model", &self.model)
            .field("language", &self.language)
            .field("endpointing_ms", &self.endpointing_ms)
            .field("utterance_end_ms", &self.utterance_end_ms)
            .field("smart_format", &self.smart_format)
            .field("keyterms", &self.keyterms)
            .field("keepalive_secs", &self.keepalive_secs)
            .field("max_reconnects", &self.max_reconnects)
            .field("replay_limit_ms", &self.replay_limit_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

/// A bad `[stt]` setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SttConfigError {
    /// A key has a value the client cannot use.
    #[error("stt.{key} {message}")]
    Invalid {
        /// The key, without the `stt.` prefix.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> SttConfigError {
    SttConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl DeepgramSttConfig {
    /// Checks every value; the error names the offending key (`stt.utterance_end_ms …`).
    pub fn validate(&self) -> Result<(), SttConfigError> {
        let scheme_ok = ["http://", "https://", "ws://", "wss://"]
            .iter()
            .any(|s| self.base_url.starts_with(s));
        if !scheme_ok || reqwest::Url::parse(&self.base_url).is_err() {
            return Err(invalid(
                "base_url",
                format!(
                    "must be an http(s):// or ws(s):// URL, got {:?}",
                    self.base_url
                ),
            ));
        }
        if self.api_key.trim().is_empty() {
            return Err(invalid("api_key", "is missing (set the Deepgram API key)"));
        }
        if self.model.trim().is_empty() {
            return Err(invalid("model", "must not be empty"));
        }
        if self.language.trim().is_empty() {
            return Err(invalid("language", "must not be empty"));
        }
        if self.utterance_end_ms < 1000 {
            return Err(invalid("utterance_end_ms", "must be >= 1000"));
        }
        if self.utterance_end_ms > u32::from(u16::MAX) {
            return Err(invalid("utterance_end_ms", "must be <= 65535"));
        }
        if self.endpointing_ms > 10_000 {
            return Err(invalid("endpointing_ms", "must be <= 10000 (0 disables)"));
        }
        if !(1..=9).contains(&self.keepalive_secs) {
            return Err(invalid(
                "keepalive_secs",
                "must be between 1 and 9 (Deepgram closes idle sockets at 10 s)",
            ));
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > 60_000 {
            return Err(invalid("connect_timeout_ms", "must be between 1 and 60000"));
        }
        if self.replay_limit_ms > 120_000 {
            return Err(invalid("replay_limit_ms", "must be <= 120000"));
        }
        if self.keyterms.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("keyterms", "must not contain empty terms"));
        }
        Ok(())
    }

    /// The REST base (`ws://` → `http://`, `wss://` → `https://`), without a trailing slash.
    fn rest_base(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        if let Some(rest) = base.strip_prefix("wss://") {
            format!("https://{rest}")
        } else if let Some(rest) = base.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            base.to_string()
        }
    }
}

/// Why the start-up credential check failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Deepgram refused the key (HTTP 401 or 403).
    #[error("Deepgram rejected the API key (HTTP {status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Deepgram's `err_msg`, or the body.
        message: String,
    },
    /// Deepgram could not be reached (DNS, connect, TLS, timeout).
    #[error("Deepgram is unreachable: {0}")]
    Unreachable(String),
    /// Deepgram answered something else.
    #[error("Deepgram answered HTTP {status} to the credential check: {message}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// Deepgram's `err_msg`, or the body.
        message: String,
    },
}

/// Deepgram's REST/handshake error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    err_code: Option<String>,
    #[serde(default)]
    err_msg: Option<String>,
}

/// Best text for an error body: `err_code: err_msg`, else the raw body (shortened).
fn error_message(body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        match (parsed.err_code, parsed.err_msg) {
            (Some(code), Some(msg)) => return format!("{code}: {msg}"),
            (None, Some(msg)) | (Some(msg), None) => return msg,
            (None, None) => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}

/// The Deepgram speech-to-text provider.
#[derive(Debug, Clone)]
pub struct DeepgramStt {
    config: Arc<DeepgramSttConfig>,
    client: Deepgram,
    http: reqwest::Client,
    metrics: Metrics,
}

impl DeepgramStt {
    /// Validates `config` and builds the client (no network traffic yet).
    pub fn new(config: DeepgramSttConfig, metrics: Metrics) -> Result<DeepgramStt, SttConfigError> {
        config.validate()?;
        let client = Deepgram::with_base_url_and_api_key(config.base_url.as_str(), &config.api_key)
            .map_err(|e| invalid("base_url", format!("is not usable: {e}")))?;
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(connect_timeout * 2)
            .build()
            .map_err(|e| invalid("base_url", format!("HTTP client: {e}")))?;
        Ok(DeepgramStt {
            config: Arc::new(config),
            client,
            http,
            metrics,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DeepgramSttConfig {
        &self.config
    }

    /// Checks the API key once (`GET /v1/projects`), so a bad key fails at start-up.
    pub async fn check_credentials(&self) -> Result<(), CredentialError> {
        let url = format!("{}/v1/projects", self.config.rest_base());
        let response = self
            .http
            .get(&url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Token {}", self.config.api_key),
            )
            .send()
            .await
            .map_err(|e| CredentialError::Unreachable(format!("GET {url}: {e}")))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = error_message(&body);
        if status == 401 || status == 403 {
            Err(CredentialError::Rejected { status, message })
        } else {
            Err(CredentialError::Unexpected { status, message })
        }
    }
}

impl SttProvider for DeepgramStt {
    fn name(&self) -> &'static str {
        "deepgram"
    }

    fn open(&self, call: CallId, format: SttAudioFormat) -> SttStream {
        let (stream, input, events) = SttStream::channel();
        let worker = Worker {
            config: Arc::clone(&self.config),
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            call,
            format,
            input,
            events,
            timeline: Timeline::new(format.sample_rate),
            replay: Replay::new(format.sample_rate, self.config.replay_limit_ms),
            pending_finalize: false,
            close_requested: false,
            finalize_sent_at: None,
            flaps: 0,
        };
        tokio::spawn(worker.run());
        stream
    }
}

/// One chunk of caller audio kept for replay.
#[derive(Debug, Clone)]
struct Chunk {
    at_ms: u64,
    bytes: Bytes,
    samples: u64,
    /// Provider position after this chunk on the current connection; `None` if not sent yet.
    sent_end: Option<u64>,
}

/// Audio not yet covered by a final result, plus audio that arrived while disconnected.
#[derive(Debug)]
struct Replay {
    chunks: VecDeque<Chunk>,
    samples: u64,
    limit_samples: u64,
    rate: u64,
    dropped_samples: u64,
}

impl Replay {
    fn new(sample_rate: u32, limit_ms: u64) -> Self {
        let rate = u64::from(sample_rate.max(1));
        Replay {
            chunks: VecDeque::new(),
            samples: 0,
            limit_samples: limit_ms.saturating_mul(rate) / 1000,
            rate,
            dropped_samples: 0,
        }
    }

    fn push(&mut self, chunk: Chunk) {
        self.samples += chunk.samples;
        self.chunks.push_back(chunk);
        while self.samples > self.limit_samples {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.samples -= old.samples;
            self.dropped_samples += old.samples;
        }
    }

    /// Forgets audio a final result covered (provider position `end`).
    fn confirm_until(&mut self, end: u64) {
        while let Some(front) = self.chunks.front() {
            match front.sent_end {
                Some(sent_end) if sent_end <= end => {
                    self.samples -= front.samples;
                    self.chunks.pop_front();
                }
                _ => break,
            }
        }
    }

    /// The connection is gone: nothing buffered counts as sent any more.
    fn mark_unsent(&mut self) {
        for chunk in &mut self.chunks {
            chunk.sent_end = None;
        }
    }

    fn ms(&self, samples: u64) -> u64 {
        samples * 1000 / self.rate
    }
}

/// How a connection attempt series ended.
enum Connect {
    Connected {
        handle: WebsocketHandle,
        attempts: u32,
    },
    Failed(String),
    /// The session closed or dropped the stream meanwhile.
    InputClosed,
}

/// How a served connection ended.
enum Served {
    /// The call is over (Close handled, or the session went away).
    Done,
    /// The connection broke; reconnect.
    Lost(String),
}

/// The per-call task.
struct Worker {
    config: Arc<DeepgramSttConfig>,
    client: Deepgram,
    metrics: Metrics,
    call: CallId,
    format: SttAudioFormat,
    input: mpsc::Receiver<SttInput>,
    events: mpsc::Sender<SttEvent>,
    timeline: Timeline,
    replay: Replay,
    /// A `Finalize` arrived while disconnected; send it after the replay.
    pending_finalize: bool,
    /// The session asked to close while disconnected: the next connection replays the
    /// buffered audio, then sends `CloseStream` and waits for the last results.
    close_requested: bool,
    finalize_sent_at: Option<Instant>,
    /// Consecutive connections that ended quickly without a single message.
    flaps: u32,
}

impl Worker {
    async fn run(mut self) {
        let mut first = true;
        loop {
            match self.connect(first).await {
                Connect::Connected {
                    mut handle,
                    attempts,
                } => {
                    self.metrics
                        .provider(METRIC_PROVIDER, if first { "connect" } else { "reconnect" });
                    self.timeline.reset();
                    let replayed = match self.replay_into(&mut handle).await {
                        Ok(samples) => samples,
                        Err(e) => {
                            self.metrics.provider(METRIC_PROVIDER, "error");
                            tracing::warn!(call = %self.call, error = %e, "deepgram replay failed");
                            self.replay.mark_unsent();
                            first = false;
                            continue;
                        }
                    };
                    if !first {
                        let replayed_ms = self.replay.ms(replayed);
                        tracing::info!(call = %self.call, attempts, replayed_ms, "deepgram reconnected");
                        if !self
                            .emit(SttEvent::Reconnected {
                                attempts,
                                replayed_ms,
                            })
                            .await
                        {
                            let _ = handle.close_stream().await;
                            return;
                        }
                    }
                    first = false;
                    match self.serve(handle).await {
                        Served::Done => return,
                        Served::Lost(why) => {
                            self.metrics.provider(METRIC_PROVIDER, "error");
                            tracing::warn!(call = %self.call, reason = %why, "deepgram connection lost");
                            self.replay.mark_unsent();
                            // A Finalize the old connection never answered is sent again
                            // after the replay.
                            if self.finalize_sent_at.take().is_some() {
                                self.pending_finalize = true;
                            }
                        }
                    }
                }
                Connect::Failed(error) => {
                    self.metrics.provider(METRIC_PROVIDER, "failed");
                    tracing::error!(call = %self.call, %error, "deepgram speech-to-text failed");
                    if self.emit(SttEvent::Failed { error }).await && !self.close_requested {
                        self.drain().await;
                    }
                    return;
                }
                Connect::InputClosed => return,
            }
        }
    }

    /// Sends an event; false once the session is gone.
    async fn emit(&self, event: SttEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// After `Failed`: drop input until the session closes or lets go.
    async fn drain(&mut self) {
        while let Some(input) = self.input.recv().await {
            if input == SttInput::Close {
                break;
            }
        }
    }

    fn samples_in(&self, bytes: &Bytes) -> u64 {
        let per = match self.format.encoding {
            SttEncoding::Mulaw => 1,
            SttEncoding::Linear16 => 2,
        };
        (bytes.len() / per) as u64
    }

    /// Takes one input while not connected; false when the session closed the stream.
    fn buffer_input(&mut self, input: Option<SttInput>) -> bool {
        match input {
            Some(SttInput::Audio { at_ms, bytes }) => {
                let samples = self.samples_in(&bytes);
                if samples > 0 {
                    self.replay.push(Chunk {
                        at_ms,
                        bytes,
                        samples,
                        sent_end: None,
                    });
                }
                true
            }
            Some(SttInput::Finalize) => {
                self.pending_finalize = true;
                true
            }
            Some(SttInput::Close) => {
                // The caller's last words are still owed a transcript: connect, replay, close.
                self.close_requested = true;
                self.has_unconfirmed_audio()
            }
            // The stream (and with it the event receiver) is gone: nobody is listening.
            None => false,
        }
    }

    /// Whether audio is buffered that no final has covered yet.
    fn has_unconfirmed_audio(&self) -> bool {
        !self.replay.chunks.is_empty()
    }

    /// Connects, retrying with backoff while buffering the session's input.
    async fn connect(&mut self, first: bool) -> Connect {
        let client = self.client.clone();
        let config = Arc::clone(&self.config);
        let max = config.max_reconnects;
        let allowed = if first { max.max(1) } else { max };
        // Connections that dropped right after their handshake count as failed attempts.
        let mut failures = self.flaps;
        let mut attempts = 0u32;
        if self.close_requested && !self.has_unconfirmed_audio() {
            return Connect::InputClosed;
        }
        let mut last_error = if allowed == 0 {
            String::from("connection lost and reconnecting is disabled (stt.max_reconnects = 0)")
        } else {
            String::from("connections keep dropping right after the handshake")
        };
        while failures < allowed {
            let backoff = backoff(attempts);
            attempts += 1;
            if !backoff.is_zero() {
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        input = self.input.recv(), if !self.close_requested => {
                            if !self.buffer_input(input) {
                                return Connect::InputClosed;
                            }
                        }
                    }
                }
            }
            let attempt = connect_once(&client, &config, self.call, self.format);
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    result = &mut attempt => break result,
                    input = self.input.recv(), if !self.close_requested => {
                        if !self.buffer_input(input) {
                            return Connect::InputClosed;
                        }
                    }
                }
            };
            match result {
                Ok(handle) => return Connect::Connected { handle, attempts },
                Err(AttemptError::Fatal(e)) => {
                    self.metrics.provider(METRIC_PROVIDER, "error");
                    return Connect::Failed(e);
                }
                Err(AttemptError::Retry(e)) => {
                    self.metrics.provider(METRIC_PROVIDER, "error");
                    tracing::warn!(call = %self.call, attempt = attempts, error = %e, "deepgram connect failed");
                    failures += 1;
                    last_error = e;
                }
            }
        }
        Connect::Failed(format!(
            "gave up after {attempts} connection attempts: {last_error}"
        ))
    }

    /// Sends the buffered audio (and a `Finalize` asked for meanwhile) on a new connection.
    /// Returns the samples replayed.
    async fn replay_into(&mut self, handle: &mut WebsocketHandle) -> Result<u64, DeepgramError> {
        let mut replayed = 0;
        for chunk in &mut self.replay.chunks {
            let end = self.timeline.push(chunk.at_ms, chunk.samples);
            chunk.sent_end = Some(end);
            handle.send_data(chunk.bytes.to_vec()).await?;
            replayed += chunk.samples;
        }
        if self.pending_finalize {
            handle.finalize().await?;
            self.pending_finalize = false;
            self.finalize_sent_at = Some(Instant::now());
        }
        Ok(replayed)
    }

    /// Runs one live connection until the call ends or the connection breaks.
    async fn serve(&mut self, mut handle: WebsocketHandle) -> Served {
        let opened = Instant::now();
        let keepalive = Duration::from_secs(self.config.keepalive_secs);
        let mut last_sent = Instant::now();
        let mut got_message = false;
        let mut closing = false;
        let mut broken = false;
        let mut deadline: Option<Instant> = None;
        let mut last_error: Option<String> = None;
        if self.close_requested {
            if handle.close_stream().await.is_err() {
                return Served::Done;
            }
            closing = true;
            deadline = Some(Instant::now() + CLOSE_WAIT);
        }
        loop {
            let keepalive_at = last_sent + keepalive;
            let deadline_at =
                deadline.unwrap_or_else(|| opened + Duration::from_secs(86_400 * 365));
            let reading_input = !closing && !broken;
            tokio::select! {
                response = handle.receive() => match response {
                    Some(Ok(response)) => {
                        got_message = true;
                        match self.on_response(response).await {
                            Handled::Continue => {}
                            Handled::SessionGone => {
                                let _ = handle.close_stream().await;
                                return Served::Done;
                            }
                            Handled::Terminal if closing => return Served::Done,
                            Handled::Terminal => {}
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(call = %self.call, error = %e, "deepgram stream error");
                        last_error = Some(e.to_string());
                    }
                    None => {
                        if closing {
                            return Served::Done;
                        }
                        if !got_message && opened.elapsed() < FLAP_WINDOW {
                            self.flaps += 1;
                        } else {
                            self.flaps = 0;
                        }
                        return Served::Lost(
                            last_error.unwrap_or_else(|| "server closed the connection".to_string()),
                        );
                    }
                },
                input = self.input.recv(), if reading_input => match input {
                    Some(SttInput::Audio { at_ms, bytes }) => {
                        let samples = self.samples_in(&bytes);
                        if samples == 0 {
                            // Never send a zero-length frame: Deepgram treats it as a close.
                            continue;
                        }
                        let end = self.timeline.push(at_ms, samples);
                        let data = bytes.to_vec();
                        self.replay.push(Chunk { at_ms, bytes, samples, sent_end: Some(end) });
                        if let Err(e) = handle.send_data(data).await {
                            last_error = Some(e.to_string());
                            broken = true;
                            deadline = Some(Instant::now() + BROKEN_DRAIN);
                        }
                        last_sent = Instant::now();
                    }
                    Some(SttInput::Finalize) => {
                        if let Err(e) = handle.finalize().await {
                            last_error = Some(e.to_string());
                            self.pending_finalize = true;
                            broken = true;
                            deadline = Some(Instant::now() + BROKEN_DRAIN);
                        } else {
                            self.finalize_sent_at = Some(Instant::now());
                        }
                        last_sent = Instant::now();
                    }
                    Some(SttInput::Close) => {
                        self.close_requested = true;
                        if handle.close_stream().await.is_err() {
                            return Served::Done;
                        }
                        closing = true;
                        deadline = Some(Instant::now() + CLOSE_WAIT);
                    }
                    None => {
                        let _ = handle.close_stream().await;
                        return Served::Done;
                    }
                },
                _ = tokio::time::sleep_until(keepalive_at), if reading_input => {
                    if let Err(e) = handle.keep_alive().await {
                        last_error = Some(e.to_string());
                        broken = true;
                        deadline = Some(Instant::now() + BROKEN_DRAIN);
                    }
                    last_sent = Instant::now();
                }
                _ = tokio::time::sleep_until(deadline_at), if deadline.is_some() => {
                    if closing {
                        return Served::Done;
                    }
                    return Served::Lost(last_error.unwrap_or_else(|| "connection broke".to_string()));
                }
            }
        }
    }

    /// Maps one Deepgram message to events.
    async fn on_response(&mut self, response: StreamResponse) -> Handled {
        let event = match response {
            StreamResponse::TranscriptResponse {
                start,
                duration,
                is_final,
                speech_final,
                from_finalize,
                channel,
                ..
            } => {
                let text = channel
                    .alternatives
                    .into_iter()
                    .next()
                    .map(|a| a.transcript)
                    .unwrap_or_default();
                let end = start + duration.max(0.0);
                let start_ms = self.timeline.start_secs_to_call_ms(start);
                let end_ms = self.timeline.end_secs_to_call_ms(end).max(start_ms);
                if is_final {
                    self.replay
                        .confirm_until(self.timeline.seconds_to_samples(end));
                    if from_finalize && let Some(sent) = self.finalize_sent_at.take() {
                        self.metrics.stage("stt_final", sent.elapsed());
                    }
                    SttEvent::Final {
                        text,
                        start_ms,
                        end_ms,
                        speech_final,
                        from_finalize,
                    }
                } else {
                    SttEvent::Interim {
                        text,
                        start_ms,
                        end_ms,
                    }
                }
            }
            StreamResponse::SpeechStartedResponse { timestamp, .. } => SttEvent::SpeechStarted {
                at_ms: self.timeline.start_secs_to_call_ms(timestamp),
            },
            StreamResponse::UtteranceEndResponse { last_word_end, .. } => SttEvent::UtteranceEnd {
                last_word_end_ms: self.timeline.end_secs_to_call_ms(last_word_end),
            },
            StreamResponse::TerminalResponse { request_id, .. } => {
                tracing::debug!(call = %self.call, %request_id, "deepgram stream closed");
                return Handled::Terminal;
            }
            StreamResponse::Unknown(value) => {
                if value.get("type").and_then(|t| t.as_str()) == Some("Error") {
                    self.metrics.provider(METRIC_PROVIDER, "error");
                    tracing::warn!(call = %self.call, error = %value, "deepgram error message");
                } else {
                    tracing::debug!(call = %self.call, message = %value, "deepgram message ignored");
                }
                return Handled::Continue;
            }
            other => {
                tracing::debug!(call = %self.call, message = ?other, "deepgram message ignored");
                return Handled::Continue;
            }
        };
        if self.emit(event).await {
            Handled::Continue
        } else {
            Handled::SessionGone
        }
    }
}

/// What handling a message means for the connection loop.
enum Handled {
    Continue,
    /// The closing `Metadata` arrived.
    Terminal,
    /// The session dropped its end.
    SessionGone,
}

/// Why one connection attempt failed.
enum AttemptError {
    /// Worth retrying (network, timeout, 5xx, 408, 429).
    Retry(String),
    /// Retrying cannot help (bad key, bad parameters).
    Fatal(String),
}

/// Pause before attempt `n` (0-based): 0, 100, 200, 400 … ms, at most [`MAX_BACKOFF`].
fn backoff(n: u32) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1u64 << (n - 1).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

/// One handshake with Deepgram, within the connect timeout.
async fn connect_once(
    client: &Deepgram,
    config: &DeepgramSttConfig,
    call: CallId,
    format: SttAudioFormat,
) -> Result<WebsocketHandle, AttemptError> {
    let mut options = Options::builder()
        .model(Model::CustomId(config.model.clone()))
        .language(Language::Other(config.language.clone()))
        .smart_format(config.smart_format)
        .extra(HashMap::from([("call_id".to_string(), call.to_string())]));
    if config.model.starts_with("nova-3") && !config.keyterms.is_empty() {
        options = options.keyterms(config.keyterms.iter().map(String::as_str));
    }
    let encoding = match format.encoding {
        SttEncoding::Mulaw => Encoding::Mulaw,
        SttEncoding::Linear16 => Encoding::Linear16,
    };
    let endpointing = if config.endpointing_ms == 0 {
        Endpointing::Disabled
    } else {
        Endpointing::CustomDurationMs(config.endpointing_ms)
    };
    // validate() keeps utterance_end_ms within u16.
    let utterance_end_ms = u16::try_from(config.utterance_end_ms).unwrap_or(u16::MAX);
    let builder = client
        .transcription()
        .stream_request_with_options(options.build())
        .encoding(encoding)
        .sample_rate(format.sample_rate)
        .channels(1)
        .interim_results(true)
        .endpointing(endpointing)
        .utterance_end_ms(utterance_end_ms)
        .vad_events(true);
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    match tokio::time::timeout(timeout, builder.handle()).await {
        Err(_) => Err(AttemptError::Retry(format!(
            "no handshake within {} ms",
            config.connect_timeout_ms
        ))),
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(e)) => Err(classify(e)),
    }
}

/// Sorts a handshake error into retryable or not.
fn classify(error: DeepgramError) -> AttemptError {
    if let DeepgramError::WsError(ws) = &error
        && let deepgram::TungsteniteError::Http(response) = ws.as_ref()
    {
        let status = response.status().as_u16();
        let message = response
            .body()
            .as_deref()
            .map(error_message)
            .unwrap_or_default();
        let text = format!("handshake refused with HTTP {status}: {message}");
        return if (400..500).contains(&status) && status != 408 && status != 429 {
            AttemptError::Fatal(text)
        } else {
            AttemptError::Retry(text)
        };
    }
    AttemptError::Retry(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> DeepgramSttConfig {
        DeepgramSttConfig {
            api_key: "k".into(),
            ..DeepgramSttConfig::default()
        }
    }

    #[test]
    fn defaults_are_the_phone_starting_point_and_need_only_a_key() {
        let c = DeepgramSttConfig::default();
        assert_eq!(c.base_url, "https://api.deepgram.com");
        assert_eq!(c.model, "nova-3");
        assert_eq!(c.language, "en-US");
        assert_eq!((c.endpointing_ms, c.utterance_end_ms), (300, 1000));
        assert!(c.smart_format);
        assert_eq!(c.keepalive_secs, 4);
        assert_eq!(c.max_reconnects, 5);
        assert_eq!(c.replay_limit_ms, 15_000);
        assert_eq!(c.connect_timeout_ms, 3000);
        assert_eq!(
            c.validate(),
            Err(invalid("api_key", "is missing (set the Deepgram API key)"))
        );
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn each_bad_value_names_its_key() {
        type Change = Box<dyn Fn(&mut DeepgramSttConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "stt.utterance_end_ms must be >= 1000",
                Box::new(|c| c.utterance_end_ms = 999),
            ),
            (
                "stt.utterance_end_ms must be <= 65535",
                Box::new(|c| c.utterance_end_ms = 70_000),
            ),
            ("stt.keepalive_secs", Box::new(|c| c.keepalive_secs = 0)),
            ("stt.keepalive_secs", Box::new(|c| c.keepalive_secs = 10)),
            ("stt.base_url", Box::new(|c| c.base_url = "ftp://x".into())),
            ("stt.base_url", Box::new(|c| c.base_url = "http://".into())),
            ("stt.api_key", Box::new(|c| c.api_key = "  ".into())),
            ("stt.model", Box::new(|c| c.model = String::new())),
            ("stt.language", Box::new(|c| c.language = String::new())),
            (
                "stt.connect_timeout_ms",
                Box::new(|c| c.connect_timeout_ms = 0),
            ),
            (
                "stt.endpointing_ms",
                Box::new(|c| c.endpointing_ms = 20_000),
            ),
            (
                "stt.replay_limit_ms",
                Box::new(|c| c.replay_limit_ms = 500_000),
            ),
            (
                "stt.keyterms",
                Box::new(|c| c.keyterms = vec![String::new()]),
            ),
        ];
        for (want, change) in cases {
            let mut c = valid();
            change(&mut c);
            let err = c.validate().expect_err(want).to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn config_parses_from_toml_with_defaults_and_rejects_unknown_keys() {
        let c: DeepgramSttConfig =
            toml::from_str("api_key = \"abc\"\nendpointing_ms = 500\nkeyterms = [\"Acme\"]\n")
                .expect("parses");
        assert_eq!(c.api_key, "abc");
        assert_eq!(c.endpointing_ms, 500);
        assert_eq!(c.utterance_end_ms, 1000);
        assert_eq!(c.keyterms, vec!["Acme".to_string()]);
        assert!(toml::from_str::<DeepgramSttConfig>("api_kee = \"abc\"").is_err());
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let mut c = valid();
        c.api_key = "secret-key-123".into();
        let text = format!("{c:?}");
        assert!(!text.contains("secret-key-123"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn rest_base_follows_the_websocket_scheme() {
        let mut c = valid();
        c.base_url = "ws://127.0.0.1:9/".into();
        assert_eq!(c.rest_base(), "http://127.0.0.1:9");
        c.base_url = "wss://api.example".into();
        assert_eq!(c.rest_base(), "https://api.example");
        c.base_url = "https://api.deepgram.com".into();
        assert_eq!(c.rest_base(), "https://api.deepgram.com");
    }

    #[test]
    fn backoff_doubles_from_zero_and_is_capped() {
        let ms: Vec<u128> = (0..5).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(ms, [0, 100, 200, 400, 800]);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn error_bodies_read_like_deepgram_errors() {
        assert_eq!(
            error_message(
                br#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials.","request_id":"x"}"#
            ),
            "INVALID_AUTH: Invalid credentials."
        );
        assert_eq!(error_message(b"plain"), "plain");
    }

    fn chunk(at_ms: u64, sent_end: Option<u64>) -> Chunk {
        Chunk {
            at_ms,
            bytes: Bytes::from(vec![0xFFu8; 160]),
            samples: 160,
            sent_end,
        }
    }

    #[test]
    fn replay_keeps_unfinalized_audio_and_caps_the_oldest() {
        // 8 kHz, 100 ms limit = 800 samples = 5 chunks of 20 ms.
        let mut r = Replay::new(8000, 100);
        for i in 0..4 {
            r.push(chunk(i * 20, Some((i + 1) * 160)));
        }
        // A final up to provider sample 320 covers the first two chunks.
        r.confirm_until(320);
        assert_eq!(r.chunks.len(), 2);
        assert_eq!(r.chunks[0].at_ms, 40);
        // A final ending mid-chunk does not drop that chunk.
        r.confirm_until(500);
        assert_eq!(r.chunks[0].at_ms, 60);
        r.mark_unsent();
        r.confirm_until(10_000);
        assert_eq!(r.chunks.len(), 1, "unsent audio is never confirmed");
        for i in 0..6 {
            r.push(chunk(100 + i * 20, None));
        }
        assert_eq!(r.samples, 800);
        assert_eq!(r.chunks.len(), 5);
        assert_eq!(r.ms(r.dropped_samples), 40);
    }

    #[test]
    fn handshake_4xx_is_fatal_and_5xx_is_retried() {
        fn http(status: u16) -> DeepgramError {
            let response = axum::http::Response::builder()
                .status(status)
                .body(Some(br#"{"err_code":"X","err_msg":"y"}"#.to_vec()))
                .expect("response");
            DeepgramError::WsError(Box::new(deepgram::TungsteniteError::Http(Box::new(
                response,
            ))))
        }
        assert!(matches!(classify(http(401)), AttemptError::Fatal(m) if m.contains("401")));
        assert!(matches!(classify(http(400)), AttemptError::Fatal(_)));
        assert!(matches!(classify(http(429)), AttemptError::Retry(_)));
        assert!(matches!(classify(http(503)), AttemptError::Retry(_)));
        assert!(matches!(
            classify(DeepgramError::InvalidUrl),
            AttemptError::Retry(_)
        ));
    }
}
