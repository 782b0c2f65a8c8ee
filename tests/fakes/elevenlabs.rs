//! Fake ElevenLabs: the `stream-input` WebSocket and `GET /v1/user`, on 127.0.0.1.
//!
//! It checks what it receives as the real API does (spec §4.1/4.3): the `xi-api-key` header
//! (a wrong one is a 401 on the upgrade) or, without the header, the key in the BOS message;
//! `model_id`, `output_format` and `inactivity_timeout` query values; BOS first with `text`
//! exactly `" "`; later messages JSON objects with a string `text` ending in a space, boolean
//! `flush` / `try_trigger_generation`, and no `voice_settings` / `generation_config`. A
//! violation gets the provider's error message (`{"message","error","code"}`) and close 1008.
//!
//! Text is buffered; generation runs when the buffer reaches the next `chunk_length_schedule`
//! value (complete words only), on `flush`, and on EOS (`{"text":""}`), which is followed by
//! `{"isFinal":true}` and close 1000. Audio is [`speech::synthesize`] of the generated text in
//! the requested format, sent as base64 in ~`chunk_ms` messages with per-chunk alignment.
//! Word pitches continue across generations, so a socket's whole audio equals
//! `speech::synthesize(all its text)` however the text was cut. No text for
//! `inactivity_timeout` seconds (default 20) closes the socket with 1008
//! `input_timeout_exceeded`.
//!
//! Faults apply to the socket that next receives segment text (or EOS): [`refuse_next`],
//! [`drop_mid_audio_next`], [`stall_next`], [`bad_base64_next`]; plus a first-byte delay and
//! a pause between audio messages. Everything received is in [`FakeElevenLabs::log`].
//!
//! [`refuse_next`]: FakeElevenLabs::refuse_next
//! [`drop_mid_audio_next`]: FakeElevenLabs::drop_mid_audio_next
//! [`stall_next`]: FakeElevenLabs::stall_next
//! [`bad_base64_next`]: FakeElevenLabs::bad_base64_next

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::speech;

/// Models the fake accepts in `model_id`.
pub const KNOWN_MODELS: &[&str] = &[
    "eleven_flash_v2_5",
    "eleven_flash_v2",
    "eleven_turbo_v2_5",
    "eleven_turbo_v2",
    "eleven_multilingual_v2",
    "eleven_monolingual_v1",
];

/// `output_format` values of spec §4.3.
pub const OUTPUT_FORMATS: &[&str] = &[
    "mp3_22050_32",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "mp3_44100_128",
    "mp3_44100_192",
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_32000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
    "alaw_8000",
    "opus_48000_32",
    "opus_48000_64",
    "opus_48000_96",
    "opus_48000_128",
    "opus_48000_192",
];

/// The server's default schedule when BOS has no `generation_config`.
const DEFAULT_SCHEDULE: [usize; 4] = [120, 160, 250, 290];

/// Settings of the fake.
#[derive(Debug, Clone)]
pub struct FakeElevenLabsConfig {
    /// The key it accepts.
    pub api_key: String,
    /// Delay before a socket's first audio message.
    pub first_byte_delay_ms: u64,
    /// Audio per message.
    pub chunk_ms: u64,
    /// Pause between audio messages (0: as fast as the socket takes them).
    pub chunk_interval_ms: u64,
}

impl Default for FakeElevenLabsConfig {
    fn default() -> Self {
        FakeElevenLabsConfig {
            api_key: "el-test-key".to_owned(),
            first_byte_delay_ms: 0,
            chunk_ms: 100,
            chunk_interval_ms: 0,
        }
    }
}

/// One thing the fake saw or did.
#[derive(Debug, Clone, PartialEq)]
pub enum ElEvent {
    /// An upgrade request (accepted or not); `conn` numbers them from 1.
    Connected {
        conn: usize,
        voice_id: String,
        query: HashMap<String, String>,
        /// The `xi-api-key` header.
        api_key_header: Option<String>,
    },
    /// An upgrade refused with this HTTP status.
    Rejected {
        conn: usize,
        status: u16,
        reason: String,
    },
    /// A client text message (parsed; non-JSON as `{"_raw": text}`).
    Received { conn: usize, message: Value },
    /// Audio generated for this text.
    Generated { conn: usize, text: String },
    /// `{"isFinal":true}` sent.
    Final { conn: usize },
    /// The fake closed the socket with this code.
    Closed {
        conn: usize,
        code: u16,
        reason: String,
    },
    /// The fake dropped the connection without a close frame (fault).
    Dropped { conn: usize },
    /// The client closed or went away.
    ClientGone { conn: usize },
    /// `GET /v1/user`, with the key it carried.
    User { api_key_header: Option<String> },
}

/// Faults armed for the next segment.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    refuse: bool,
    drop_mid_audio: bool,
    stall: bool,
    bad_base64: bool,
}

struct Inner {
    config: Mutex<FakeElevenLabsConfig>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<ElEvent>>,
    conns: Mutex<usize>,
    /// Wakes idle sockets to close them ([`FakeElevenLabs::close_idle_sockets`]).
    kick: tokio::sync::Notify,
}

impl Inner {
    fn record(&self, e: ElEvent) {
        self.log.lock().unwrap().push(e);
    }

    fn config(&self) -> FakeElevenLabsConfig {
        self.config.lock().unwrap().clone()
    }
}

/// A running fake; stops when dropped.
pub struct FakeElevenLabs {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for FakeElevenLabs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeElevenLabs {
    /// Starts the fake on 127.0.0.1 with a random port.
    pub async fn start(config: FakeElevenLabsConfig) -> FakeElevenLabs {
        let inner = Arc::new(Inner {
            config: Mutex::new(config),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            conns: Mutex::new(0),
            kick: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route(
                "/v1/text-to-speech/{voice_id}/stream-input",
                get(stream_input),
            )
            .route("/v1/user", get(user))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeElevenLabs { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT` (the client maps it to `ws://`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The next segment gets a quota error message and close 1008.
    pub fn refuse_next(&self) {
        self.inner.faults.lock().unwrap().refuse = true;
    }

    /// The next segment's socket drops (no close frame) after part of its audio.
    pub fn drop_mid_audio_next(&self) {
        self.inner.faults.lock().unwrap().drop_mid_audio = true;
    }

    /// The next segment gets no audio at all (the socket stays open).
    pub fn stall_next(&self) {
        self.inner.faults.lock().unwrap().stall = true;
    }

    /// The next segment's first audio message carries invalid base64.
    pub fn bad_base64_next(&self) {
        self.inner.faults.lock().unwrap().bad_base64 = true;
    }

    /// Closes every open socket that has not started a segment yet (error message and close
    /// 1011), as a server restart would.
    pub fn close_idle_sockets(&self) {
        self.inner.kick.notify_waiters();
    }

    /// Sets the delay before each socket's first audio.
    pub fn set_first_byte_delay_ms(&self, ms: u64) {
        self.inner.config.lock().unwrap().first_byte_delay_ms = ms;
    }

    /// Sets the pause between audio messages.
    pub fn set_chunk_interval_ms(&self, ms: u64) {
        self.inner.config.lock().unwrap().chunk_interval_ms = ms;
    }

    /// Upgrade requests so far (accepted or not).
    pub fn connections(&self) -> usize {
        *self.inner.conns.lock().unwrap()
    }

    /// Everything seen so far.
    pub fn log(&self) -> Vec<ElEvent> {
        self.inner.log.lock().unwrap().clone()
    }

    /// The client messages of socket `conn`, in order.
    pub fn messages(&self, conn: usize) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter_map(|e| match e {
                ElEvent::Received { conn: c, message } if c == conn => Some(message),
                _ => None,
            })
            .collect()
    }

    /// The text socket `conn` generated audio for, in order.
    pub fn generated(&self, conn: usize) -> Vec<String> {
        self.log()
            .into_iter()
            .filter_map(|e| match e {
                ElEvent::Generated { conn: c, text } if c == conn => Some(text),
                _ => None,
            })
            .collect()
    }

    /// The socket whose messages include a `text` containing `needle`.
    pub fn conn_with_text(&self, needle: &str) -> Option<usize> {
        self.log().into_iter().find_map(|e| match e {
            ElEvent::Received { conn, message }
                if message["text"].as_str().is_some_and(|t| t.contains(needle)) =>
            {
                Some(conn)
            }
            _ => None,
        })
    }
}

/// The real API's error body for a refused HTTP request.
fn detail(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"detail": {"status": code, "message": message}})),
    )
        .into_response()
}

async fn user(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let key = header(&headers, "xi-api-key");
    inner.record(ElEvent::User {
        api_key_header: key.clone(),
    });
    if key.as_deref() != Some(inner.config().api_key.as_str()) {
        return detail(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid API key",
        );
    }
    Json(json!({
        "user_id": "fake-user",
        "subscription": {"tier": "starter", "character_count": 0, "character_limit": 30000}
    }))
    .into_response()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The audio a format is produced as: (encoding, rate).
fn audio_kind(format: &str) -> Option<(&'static str, u32)> {
    if format == "ulaw_8000" {
        return Some(("ulaw", 8000));
    }
    if format == "alaw_8000" {
        return Some(("alaw", 8000));
    }
    let rate = format.strip_prefix("pcm_")?.parse().ok()?;
    Some(("pcm", rate))
}

async fn stream_input(
    State(inner): State<Arc<Inner>>,
    Path(voice_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let conn = {
        let mut n = inner.conns.lock().unwrap();
        *n += 1;
        *n
    };
    let key = header(&headers, "xi-api-key");
    inner.record(ElEvent::Connected {
        conn,
        voice_id: voice_id.clone(),
        query: query.clone(),
        api_key_header: key.clone(),
    });
    let reject = |status: StatusCode, code: &str, message: String| {
        inner.record(ElEvent::Rejected {
            conn,
            status: status.as_u16(),
            reason: message.clone(),
        });
        detail(status, code, &message)
    };
    if let Some(k) = &key
        && *k != inner.config().api_key
    {
        return reject(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid API key".into(),
        );
    }
    if voice_id.is_empty()
        || voice_id.len() > 64
        || !voice_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return reject(
            StatusCode::BAD_REQUEST,
            "voice_not_found",
            format!("A voice with voice_id {voice_id} was not found."),
        );
    }
    if let Some(model) = query.get("model_id")
        && !KNOWN_MODELS.contains(&model.as_str())
    {
        return reject(
            StatusCode::BAD_REQUEST,
            "model_not_found",
            format!("A model with model_id {model} was not found."),
        );
    }
    let format = query
        .get("output_format")
        .cloned()
        .unwrap_or_else(|| "mp3_44100_128".to_owned());
    if !OUTPUT_FORMATS.contains(&format.as_str()) {
        return reject(
            StatusCode::BAD_REQUEST,
            "invalid_output_format",
            format!("Invalid output format: {format}"),
        );
    }
    let inactivity = match query.get("inactivity_timeout").map(|v| v.parse::<u64>()) {
        None => 20,
        Some(Ok(s)) if (1..=180).contains(&s) => s,
        Some(_) => {
            return reject(
                StatusCode::BAD_REQUEST,
                "invalid_inactivity_timeout",
                "inactivity_timeout must be an integer between 1 and 180".into(),
            );
        }
    };
    let header_key = key.is_some();
    upgrade.on_upgrade(move |socket| async move {
        Connection {
            inner,
            conn,
            format,
            inactivity: Duration::from_secs(inactivity),
            header_key,
        }
        .run(socket)
        .await;
    })
}

/// What the reader asks the writer to do.
#[derive(Debug)]
enum Out {
    /// Generate audio for these words; `first_word` is their index on this socket.
    Generate { text: String, first_word: usize },
    /// All audio is out: `isFinal`, close 1000.
    Final,
    /// Error message and close.
    Fail {
        message: String,
        error: &'static str,
        code: u16,
    },
}

/// One accepted socket.
struct Connection {
    inner: Arc<Inner>,
    conn: usize,
    format: String,
    inactivity: Duration,
    header_key: bool,
}

/// The reader's per-socket state.
struct Reader {
    bos_seen: bool,
    eos_seen: bool,
    failed: bool,
    buffer: String,
    schedule: Vec<usize>,
    step: usize,
    words: usize,
    /// Faults were taken from the fake for this socket's segment.
    faults_taken: bool,
    /// Faults to hand to the writer before the next command.
    pending_faults: Option<Faults>,
}

impl Connection {
    async fn run(self, socket: WebSocket) {
        let (sink, mut stream) = socket.split();
        let (tx, rx) = mpsc::channel::<Out>(64);
        let writer = Writer {
            inner: self.inner.clone(),
            conn: self.conn,
            format: self.format.clone(),
            sink,
            sent_audio: false,
        };
        let faults_slot = Arc::new(Mutex::new(None::<Faults>));
        let mut writer_task = tokio::spawn(writer.run(rx, faults_slot.clone()));
        let mut st = Reader {
            bos_seen: false,
            eos_seen: false,
            failed: false,
            buffer: String::new(),
            schedule: DEFAULT_SCHEDULE.to_vec(),
            step: 0,
            words: 0,
            faults_taken: false,
            pending_faults: None,
        };
        loop {
            let idle = if st.eos_seen || st.failed {
                Duration::from_secs(3600)
            } else {
                self.inactivity
            };
            let idle_socket = !st.faults_taken && !st.failed;
            let next = tokio::select! {
                _ = &mut writer_task => return,
                _ = self.inner.kick.notified(), if idle_socket => {
                    let _ = tx
                        .send(Out::Fail {
                            message: "Internal server error".into(),
                            error: "internal_error",
                            code: 1011,
                        })
                        .await;
                    st.failed = true;
                    continue;
                }
                r = tokio::time::timeout(idle, stream.next()) => r,
            };
            let msg = match next {
                Err(_) => {
                    let secs = self.inactivity.as_secs();
                    let _ = tx
                        .send(Out::Fail {
                            message: format!(
                                "Have not received new text for {secs} seconds. Closing connection."
                            ),
                            error: "input_timeout_exceeded",
                            code: 1008,
                        })
                        .await;
                    st.failed = true;
                    continue;
                }
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                    self.inner.record(ElEvent::ClientGone { conn: self.conn });
                    writer_task.abort();
                    return;
                }
                Ok(Some(Ok(m))) => m,
            };
            if st.eos_seen || st.failed {
                continue;
            }
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Binary(_) => {
                    let _ = tx.send(invalid("Binary messages are not supported.")).await;
                    st.failed = true;
                    continue;
                }
                _ => continue,
            };
            let value: Value = serde_json::from_str(&text).unwrap_or(json!({ "_raw": text }));
            self.inner.record(ElEvent::Received {
                conn: self.conn,
                message: value.clone(),
            });
            let commands = match self.handle(&mut st, &value) {
                Ok(c) => c,
                Err(fail) => {
                    st.failed = true;
                    vec![fail]
                }
            };
            if let Some(f) = st.pending_faults.take() {
                *faults_slot.lock().unwrap() = Some(f);
            }
            for c in commands {
                let _ = tx.send(c).await;
            }
        }
    }

    /// Applies one client message; the commands for the writer, or the error to fail with.
    fn handle(&self, st: &mut Reader, value: &Value) -> Result<Vec<Out>, Out> {
        let Some(obj) = value.as_object() else {
            return Err(invalid("Message must be a JSON object."));
        };
        const ALLOWED: &[&str] = &[
            "text",
            "flush",
            "try_trigger_generation",
            "voice_settings",
            "generation_config",
            "xi-api-key",
            "xi_api_key",
            "authorization",
            "pronunciation_dictionary_locators",
        ];
        if let Some(k) = obj.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
            return Err(invalid(&format!("Unknown field: {k}")));
        }
        let Some(text) = obj.get("text").and_then(Value::as_str) else {
            return Err(invalid("Field 'text' is required and must be a string."));
        };
        let flag = |k: &str| match obj.get(k) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(&format!("Field '{k}' must be a boolean."))),
        };
        let flush = flag("flush")?;
        flag("try_trigger_generation")?;
        if !st.bos_seen {
            if text != " " {
                return Err(invalid(
                    "The first message must be the initialisation message with text \" \".",
                ));
            }
            if !self.header_key {
                let key = obj
                    .get("xi-api-key")
                    .or_else(|| obj.get("xi_api_key"))
                    .and_then(Value::as_str);
                if key != Some(self.inner.config().api_key.as_str()) {
                    return Err(Out::Fail {
                        message: "Invalid API key".into(),
                        error: "invalid_api_key",
                        code: 1008,
                    });
                }
            }
            if let Some(vs) = obj.get("voice_settings") {
                check_voice_settings(vs)?;
            }
            if let Some(gc) = obj.get("generation_config") {
                st.schedule = check_generation_config(gc)?;
            }
            st.bos_seen = true;
            return Ok(Vec::new());
        }
        for k in [
            "voice_settings",
            "generation_config",
            "pronunciation_dictionary_locators",
        ] {
            if obj.contains_key(k) {
                return Err(invalid(&format!(
                    "'{k}' is only allowed in the first message."
                )));
            }
        }
        let segment_starts = text.is_empty() || flush || !text.trim().is_empty();
        if segment_starts && !st.faults_taken {
            st.faults_taken = true;
            st.pending_faults = Some(std::mem::take(&mut *self.inner.faults.lock().unwrap()));
        }
        if text.is_empty() {
            st.eos_seen = true;
            let mut out = generate(st, true);
            out.push(Out::Final);
            return Ok(out);
        }
        if !text.ends_with(' ') {
            return Err(invalid("Text should end with a space character."));
        }
        st.buffer.push_str(text);
        Ok(generate(st, flush))
    }
}

/// Generation commands for the buffer: everything if `all`, else complete words while the
/// buffer reaches the schedule.
fn generate(st: &mut Reader, all: bool) -> Vec<Out> {
    let mut out = Vec::new();
    loop {
        let threshold = st.schedule[st.step.min(st.schedule.len() - 1)];
        let take = if all {
            st.buffer.len()
        } else if st.buffer.chars().count() >= threshold {
            match st.buffer.rfind(char::is_whitespace) {
                Some(i) => i + 1,
                None => break,
            }
        } else {
            break;
        };
        let piece: String = st.buffer.drain(..take).collect();
        let words = piece.split_whitespace().count();
        if words > 0 {
            out.push(Out::Generate {
                text: piece.trim().to_owned(),
                first_word: st.words,
            });
            st.words += words;
            st.step += 1;
        }
        if all || st.buffer.trim().is_empty() {
            break;
        }
    }
    out
}

fn invalid(message: &str) -> Out {
    Out::Fail {
        message: message.to_owned(),
        error: "invalid_request",
        code: 1008,
    }
}

fn check_voice_settings(vs: &Value) -> Result<(), Out> {
    let Some(obj) = vs.as_object() else {
        return Err(invalid("voice_settings must be an object."));
    };
    for (k, v) in obj {
        let ok = match k.as_str() {
            "stability" | "similarity_boost" | "style" => {
                v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x))
            }
            "speed" => v.as_f64().is_some_and(|x| (0.7..=1.2).contains(&x)),
            "use_speaker_boost" => v.is_boolean(),
            _ => false,
        };
        if !ok {
            return Err(invalid(&format!("Invalid voice_settings.{k}: {v}")));
        }
    }
    Ok(())
}

fn check_generation_config(gc: &Value) -> Result<Vec<usize>, Out> {
    let schedule = gc
        .get("chunk_length_schedule")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("generation_config.chunk_length_schedule must be a list."))?;
    let values: Option<Vec<usize>> = schedule
        .iter()
        .map(|v| {
            v.as_u64()
                .filter(|x| (50..=500).contains(x))
                .map(|x| x as usize)
        })
        .collect();
    match values {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid(
            "chunk_length_schedule values must be integers between 50 and 500.",
        )),
    }
}

/// `speech::synthesize` of `text` as if its first word were word `first_word` of the stream.
pub fn synthesize_from(text: &str, rate: u32, first_word: usize) -> Vec<i16> {
    let prefix = "a ".repeat(first_word % 7);
    let skip = speech::synthesize(&prefix, rate).len();
    let mut pcm = speech::synthesize(&format!("{prefix}{text}"), rate);
    pcm.drain(..skip);
    pcm
}

/// The bytes the fake sends for `pcm` in `format`.
fn encode(format: &str, pcm: &[i16]) -> Option<Vec<u8>> {
    let (kind, _) = audio_kind(format)?;
    let mut out = Vec::new();
    let enc = match kind {
        "ulaw" => voicegw::audio::Encoding::Mulaw,
        "alaw" => voicegw::audio::Encoding::Alaw,
        _ => voicegw::audio::Encoding::Linear16,
    };
    enc.encode_into(pcm, &mut out);
    Some(out)
}

/// Alignment of the characters whose start falls in `[from_ms, to_ms)`, times relative to
/// `from_ms`.
fn alignment(text: &str, from_ms: u64, to_ms: u64) -> Value {
    let (mut chars, mut starts, mut durs) = (Vec::new(), Vec::new(), Vec::new());
    let mut t = 0u64;
    for word in text.split_whitespace() {
        for c in word.chars().chain(std::iter::once(' ')) {
            let d = if c == ' ' {
                speech::GAP_MS
            } else {
                speech::MS_PER_CHAR
            };
            if (from_ms..to_ms).contains(&t) {
                chars.push(c.to_string());
                starts.push(t - from_ms);
                durs.push(d);
            }
            t += d;
        }
    }
    json!({"chars": chars, "charStartTimesMs": starts, "charDurationsMs": durs})
}

/// Sends audio and control messages on one socket.
struct Writer {
    inner: Arc<Inner>,
    conn: usize,
    format: String,
    sink: SplitSink<WebSocket, Message>,
    sent_audio: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Out>, faults: Arc<Mutex<Option<Faults>>>) {
        while let Some(cmd) = rx.recv().await {
            let f = faults.lock().unwrap().unwrap_or_default();
            if f.refuse {
                self.fail(
                    "This request exceeds your quota of 10000. You have 3 credits remaining, while 152 credits are required for this request.",
                    "quota_exceeded",
                    1008,
                )
                .await;
                return;
            }
            if f.stall {
                continue;
            }
            match cmd {
                Out::Generate { text, first_word } => {
                    if !self.generate(&text, first_word, f).await {
                        return;
                    }
                }
                Out::Final => {
                    let _ = self
                        .sink
                        .send(Message::Text(json!({"isFinal": true}).to_string().into()))
                        .await;
                    self.inner.record(ElEvent::Final { conn: self.conn });
                    self.close(1000, "").await;
                    return;
                }
                Out::Fail {
                    message,
                    error,
                    code,
                } => {
                    self.fail(&message, error, code).await;
                    return;
                }
            }
        }
    }

    async fn fail(&mut self, message: &str, error: &str, code: u16) {
        let body = json!({"message": message, "error": error, "code": code});
        let _ = self.sink.send(Message::Text(body.to_string().into())).await;
        self.close(code, error).await;
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self
            .sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.to_owned().into(),
            })))
            .await;
        self.inner.record(ElEvent::Closed {
            conn: self.conn,
            code,
            reason: reason.to_owned(),
        });
    }

    /// Sends one generation's audio; `false` if the socket is finished.
    async fn generate(&mut self, text: &str, first_word: usize, f: Faults) -> bool {
        let Some((kind, rate)) = audio_kind(&self.format) else {
            let msg = format!(
                "This fake produces pcm/ulaw/alaw only, not {}.",
                self.format
            );
            self.fail(&msg, "unsupported_output_format", 1011).await;
            return false;
        };
        self.inner.record(ElEvent::Generated {
            conn: self.conn,
            text: text.to_owned(),
        });
        let cfg = self.inner.config();
        let pcm = synthesize_from(text, rate, first_word);
        let bytes = encode(&self.format, &pcm).unwrap_or_default();
        let per_sample = if kind == "pcm" { 2 } else { 1 };
        let chunk_samples = ((u64::from(rate) * cfg.chunk_ms / 1000) as usize).max(1);
        let chunks: Vec<&[u8]> = bytes.chunks(chunk_samples * per_sample).collect();
        let drop_after = if f.drop_mid_audio {
            Some((chunks.len() / 2).max(1))
        } else {
            None
        };
        for (i, chunk) in chunks.iter().enumerate() {
            if drop_after == Some(i) {
                self.inner.record(ElEvent::Dropped { conn: self.conn });
                return false;
            }
            if !self.sent_audio {
                self.sent_audio = true;
                if cfg.first_byte_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(cfg.first_byte_delay_ms)).await;
                }
            } else if cfg.chunk_interval_ms > 0 {
                tokio::time::sleep(Duration::from_millis(cfg.chunk_interval_ms)).await;
            }
            let audio = if f.bad_base64 && i == 0 {
                "%%not*base64%%".to_owned()
            } else {
                base64::engine::general_purpose::STANDARD.encode(chunk)
            };
            let from_ms = (i * chunk_samples) as u64 * 1000 / u64::from(rate);
            let to_ms = ((i + 1) * chunk_samples) as u64 * 1000 / u64::from(rate);
            let align = alignment(text, from_ms, to_ms);
            let msg = json!({
                "audio": audio,
                "isFinal": null,
                "normalizedAlignment": align,
                "alignment": align,
            });
            if self
                .sink
                .send(Message::Text(msg.to_string().into()))
                .await
                .is_err()
            {
                return false;
            }
        }
        if drop_after.is_some() {
            self.inner.record(ElEvent::Dropped { conn: self.conn });
            return false;
        }
        true
    }
}
