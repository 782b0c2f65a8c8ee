//! Test harness: a gateway on a loopback port, and a carrier simulator that plays the carrier
//! side of a call over a real WebSocket — sending caller audio at the 20 ms clock, playing the
//! bot's audio back in real time, echoing marks when played, honouring `clear`, and (on demand)
//! returning the bot's audio attenuated and delayed like a speakerphone.
#![allow(dead_code)]

pub mod calls;
pub mod control;
pub mod db;
pub mod tenants;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use voicegw::audio::{Encoding, g711};
use voicegw::call::events::{CallEvent, EventSink};
use voicegw::config::Config;
use voicegw::metrics::Metrics;
use voicegw::pipeline::Pipeline;
use voicegw::server::{Gateway, ServeError};

/// A gateway serving on an ephemeral loopback port.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    /// Every CallEvent the gateway recorded.
    pub events: tokio::sync::mpsc::Receiver<CallEvent>,
    /// The Twilio auth token the gateway checks stream signatures with, if any: the carrier
    /// simulator signs its upgrades with it.
    pub twilio_auth_token: Option<String>,
    seen: Vec<CallEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestGateway {
    /// Starts a gateway with `config` (its `listen` is ignored).
    pub async fn start(config: Config) -> TestGateway {
        Self::start_with_pipeline(config, |_, _| {}).await
    }

    /// Starts a gateway with `config` whose pipeline `customize` may change first (e.g. to
    /// register more agents or pick the default); it gets the gateway's metrics too.
    pub async fn start_with_pipeline(
        config: Config,
        customize: impl FnOnce(&mut Pipeline, &Metrics),
    ) -> TestGateway {
        let (events_tx, events) = tokio::sync::mpsc::channel(100_000);
        Self::start_full(
            config,
            customize,
            |metrics| EventSink::new(events_tx, Some(metrics.clone())),
            events,
            |gateway| gateway,
        )
        .await
    }

    /// Starts a gateway whose CallEvents go to the sink `sink` makes (`events` then receives
    /// nothing unless that sink feeds it), and which `finish` may extend (e.g. with the
    /// control plane) before it serves.
    pub async fn start_full(
        config: Config,
        customize: impl FnOnce(&mut Pipeline, &Metrics),
        sink: impl FnOnce(&Metrics) -> EventSink,
        events: tokio::sync::mpsc::Receiver<CallEvent>,
        finish: impl FnOnce(Gateway) -> Gateway,
    ) -> TestGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_full_on(listener, config, customize, sink, events, finish).await
    }

    /// [`TestGateway::start_full`] on a listener bound beforehand (so the config may name
    /// its address, e.g. as the public URL carriers call back).
    pub async fn start_full_on(
        listener: tokio::net::TcpListener,
        config: Config,
        customize: impl FnOnce(&mut Pipeline, &Metrics),
        sink: impl FnOnce(&Metrics) -> EventSink,
        events: tokio::sync::mpsc::Receiver<CallEvent>,
        finish: impl FnOnce(Gateway) -> Gateway,
    ) -> TestGateway {
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new().unwrap();
        let mut pipeline = Pipeline::build(&config, &metrics).unwrap();
        customize(&mut pipeline, &metrics);
        let events_sink = sink(&metrics);
        let gateway = Gateway::with_pipeline(&config, metrics, events_sink, pipeline).unwrap();
        let gateway = finish(gateway);
        let (stop, stopped) = oneshot::channel::<()>();
        let runner = gateway.clone();
        let grace = config.shutdown_grace();
        let task = tokio::spawn(async move {
            runner
                .run(listener, grace, async move {
                    let _ = stopped.await;
                })
                .await
        });
        TestGateway {
            addr,
            gateway,
            events,
            twilio_auth_token: config.auth.twilio_auth_token.clone(),
            seen: Vec::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Every CallEvent recorded so far (kept across calls).
    pub fn events(&mut self) -> &[CallEvent] {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        &self.seen
    }

    /// Events of one kind (by their serialized `type`).
    pub fn events_of(&mut self, kind: &str) -> Vec<serde_json::Value> {
        self.events()
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .filter(|v| v["type"] == kind)
            .collect()
    }

    /// Waits up to `limit` for an event of `kind`.
    pub async fn wait_event(&mut self, kind: &str, limit: Duration) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(found) = self.events_of(kind).into_iter().next() {
                return Some(found);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `ws://127.0.0.1:PORT/stream/{carrier}`.
    pub fn stream_url(&self, carrier: &str) -> String {
        format!("ws://{}/stream/{carrier}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown (like SIGTERM) and returns the server task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<Result<(), ServeError>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("shutdown once")
    }
}

/// Default config for tests: no scripts are loaded (the repository's `scripts/` is not read),
/// so with no provider keys the default agent is `echo`, and `llm` with them.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.script.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/no-scripts");
    config
}

/// Loads a fixture WAV (8 kHz mono PCM16) as samples.
pub fn wav(name: &str) -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audio")
        .join(name);
    let mut reader =
        hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(reader.spec().sample_rate, 8000, "{name}");
    reader.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// Naive linear-interpolation upsampling for test input at 16/24 kHz.
pub fn upsample(pcm: &[i16], factor: usize) -> Vec<i16> {
    let mut out = Vec::with_capacity(pcm.len() * factor);
    for i in 0..pcm.len() {
        let a = f32::from(pcm[i]);
        let b = f32::from(*pcm.get(i + 1).unwrap_or(&pcm[i]));
        for k in 0..factor {
            out.push((a + (b - a) * k as f32 / factor as f32) as i16);
        }
    }
    out
}

/// A raw WebSocket client, for bad-input tests.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a raw WebSocket to the gateway.
pub async fn connect(url: &str) -> Ws {
    connect_async(url).await.unwrap().0
}

/// Opens a WebSocket to a gateway's Twilio endpoint with `X-Twilio-Signature` computed as
/// Twilio does: over `wss://HOST/PATH` with no parameters.
pub async fn connect_signed(url: &str, auth_token: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let signed_url = url.replacen("ws://", "wss://", 1);
    let signature = voicegw::carrier::signature::twilio_signature(auth_token, &signed_url, &[]);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-twilio-signature", signature.parse().unwrap());
    connect_async(request).await.unwrap().0
}

/// Reads until the gateway closes; returns the close code and reason and every text frame.
pub async fn read_until_close(ws: &mut Ws, limit: Duration) -> (Option<(u16, String)>, Vec<Value>) {
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next {
            Err(_) => return (None, texts),
            Ok(None) => return (None, texts),
            Ok(Some(Err(_))) => return (None, texts),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    texts,
                );
            }
            Ok(Some(Ok(Message::Text(t)))) => texts.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Which carrier the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Twilio,
    Exotel,
}

/// Simulator settings.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub carrier: Carrier,
    /// Stream rate (Twilio: 8000).
    pub sample_rate: u32,
    /// Inbound media message length in ms (Twilio 20; Exotel often 100).
    pub chunk_ms: u32,
    /// Speakerphone echo: (delay ms, attenuation dB).
    pub echo: Option<(u32, f32)>,
}

impl SimConfig {
    pub fn twilio() -> Self {
        SimConfig {
            carrier: Carrier::Twilio,
            sample_rate: 8000,
            chunk_ms: 20,
            echo: None,
        }
    }

    pub fn exotel(sample_rate: u32) -> Self {
        SimConfig {
            carrier: Carrier::Exotel,
            sample_rate,
            chunk_ms: 100,
            echo: None,
        }
    }
}

/// Something the gateway sent, with the simulator's clock (ms of caller audio sent) at arrival.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Media { at_ms: u64, samples: usize },
    Mark { at_ms: u64, name: String },
    Clear { at_ms: u64 },
}

/// One item of the simulated carrier's playback queue.
enum Queued {
    Audio(Vec<i16>),
    Mark(String),
}

/// The carrier side of one call.
pub struct CarrierSim {
    pub config: SimConfig,
    ws: Ws,
    pub stream_sid: String,
    /// Caller audio still to send, by sample position.
    caller: Vec<(u64, Vec<i16>)>,
    /// Samples of caller audio sent so far (the clock).
    pub sent_samples: u64,
    seq: u64,
    chunk: u64,
    playback: VecDeque<Queued>,
    /// Everything the bot's audio the caller has heard, sample-aligned with `sent_samples`.
    pub played: Vec<i16>,
    /// Samples of bot audio received in total.
    pub bot_samples_received: u64,
    /// The most bot audio (samples) ever waiting in the playback buffer.
    pub max_buffered_samples: usize,
    pub received: Vec<Received>,
    pub marks_echoed: Vec<String>,
    pub violations: Vec<String>,
    pub close: Option<(u16, String)>,
    pub closed: bool,
    /// The 20/100 ms media clock, kept across `run_*` calls so the sim stays in real time.
    ticker: Option<tokio::time::Interval>,
}

impl CarrierSim {
    /// Connects and sends `connected` and `start`.
    pub async fn connect(gw: &TestGateway, config: SimConfig) -> CarrierSim {
        Self::connect_with(gw, config, serde_json::Map::new()).await
    }

    /// Like [`connect`], with custom parameters in `start`.
    pub async fn connect_with(
        gw: &TestGateway,
        config: SimConfig,
        params: serde_json::Map<String, Value>,
    ) -> CarrierSim {
        let (path, stream_sid) = match config.carrier {
            Carrier::Twilio => (
                "twilio",
                format!("MZ{}", "18ad3ab5a668481ce02b83e7395059f0"),
            ),
            Carrier::Exotel => ("exotel", "c8f1d0a2b3e4f5a6b7c8d9e0f1a2b3c4".to_string()),
        };
        let ws = match (&gw.twilio_auth_token, config.carrier) {
            (Some(token), Carrier::Twilio) => connect_signed(&gw.stream_url(path), token).await,
            _ => connect(&gw.stream_url(path)).await,
        };
        let mut sim = CarrierSim {
            config,
            ws,
            stream_sid,
            caller: Vec::new(),
            sent_samples: 0,
            seq: 0,
            chunk: 0,
            playback: VecDeque::new(),
            played: Vec::new(),
            bot_samples_received: 0,
            max_buffered_samples: 0,
            received: Vec::new(),
            marks_echoed: Vec::new(),
            violations: Vec::new(),
            close: None,
            closed: false,
            ticker: None,
        };
        let (connected, start) = sim.opening(params);
        sim.send_json(connected).await;
        sim.send_json(start).await;
        sim
    }

    fn opening(&mut self, params: serde_json::Map<String, Value>) -> (Value, Value) {
        self.seq += 1;
        match self.config.carrier {
            Carrier::Twilio => (
                json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                json!({
                    "event": "start",
                    "sequenceNumber": self.seq.to_string(),
                    "start": {
                        "accountSid": "AC0123456789abcdef0123456789abcdef",
                        "streamSid": self.stream_sid,
                        "callSid": "CA0123456789abcdef0123456789abcdef",
                        "tracks": ["inbound"],
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        "customParameters": params,
                    },
                    "streamSid": self.stream_sid,
                }),
            ),
            Carrier::Exotel => (
                json!({"event": "connected"}),
                json!({
                    "event": "start",
                    "sequence_number": self.seq.to_string(),
                    "stream_sid": self.stream_sid,
                    "start": {
                        "stream_sid": self.stream_sid,
                        "call_sid": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
                        "account_sid": "exotel-account",
                        "from": "+919876543210",
                        "to": "+918047491899",
                        "custom_parameters": params,
                        "media_format": {"encoding": "audio/x-raw", "sample_rate": self.config.sample_rate.to_string(), "bit_rate": "16"},
                    },
                }),
            ),
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.ws.send(message).await;
    }

    /// Schedules caller audio (at the stream's rate) to start `at_ms` from now.
    pub fn say_in(&mut self, in_ms: u64, pcm: Vec<i16>) {
        let at = self.sent_samples + in_ms * u64::from(self.config.sample_rate) / 1000;
        self.caller.push((at, pcm));
    }

    /// Milliseconds of caller audio sent: the simulator's clock.
    pub fn now_ms(&self) -> u64 {
        self.sent_samples * 1000 / u64::from(self.config.sample_rate)
    }

    fn next_inbound(&mut self, n: usize) -> Vec<i16> {
        let start = self.sent_samples;
        let mut frame = vec![0i32; n];
        for (at, pcm) in &self.caller {
            for (i, slot) in frame.iter_mut().enumerate() {
                let pos = start + i as u64;
                if pos >= *at && ((pos - at) as usize) < pcm.len() {
                    *slot += i32::from(pcm[(pos - at) as usize]);
                }
            }
        }
        if let Some((delay_ms, atten_db)) = self.config.echo {
            let delay = u64::from(delay_ms) * u64::from(self.config.sample_rate) / 1000;
            let gain = 10f32.powf(-atten_db / 20.0);
            for (i, slot) in frame.iter_mut().enumerate() {
                let pos = start + i as u64;
                if pos >= delay
                    && let Some(s) = self.played.get((pos - delay) as usize)
                {
                    *slot += (f32::from(*s) * gain) as i32;
                }
            }
        }
        let end = start + n as u64;
        self.caller.retain(|(at, pcm)| at + pcm.len() as u64 > end);
        frame
            .into_iter()
            .map(|s| s.clamp(-32768, 32767) as i16)
            .collect()
    }

    fn encode(&self, pcm: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        match self.config.carrier {
            Carrier::Twilio => Encoding::Mulaw.encode_into(pcm, &mut out),
            Carrier::Exotel => Encoding::Linear16.encode_into(pcm, &mut out),
        }
        out
    }

    fn media_message(&mut self, payload: &[u8]) -> Value {
        self.seq += 1;
        self.chunk += 1;
        let timestamp = self.now_ms();
        let payload = B64.encode(payload);
        match self.config.carrier {
            Carrier::Twilio => json!({
                "event": "media", "sequenceNumber": self.seq.to_string(), "streamSid": self.stream_sid,
                "media": {"track": "inbound", "chunk": self.chunk.to_string(), "timestamp": timestamp.to_string(), "payload": payload},
            }),
            Carrier::Exotel => json!({
                "event": "media", "sequence_number": self.seq.to_string(), "stream_sid": self.stream_sid,
                "media": {"chunk": self.chunk.to_string(), "timestamp": timestamp.to_string(), "payload": payload},
            }),
        }
    }

    fn mark_message(&mut self, name: &str) -> Value {
        self.seq += 1;
        match self.config.carrier {
            Carrier::Twilio => {
                json!({"event": "mark", "sequenceNumber": self.seq.to_string(), "streamSid": self.stream_sid, "mark": {"name": name}})
            }
            Carrier::Exotel => {
                json!({"event": "mark", "sequence_number": self.seq.to_string(), "stream_sid": self.stream_sid, "mark": {"name": name}})
            }
        }
    }

    /// Sends a DTMF event.
    pub async fn press(&mut self, digit: char) {
        self.seq += 1;
        let message = match self.config.carrier {
            Carrier::Twilio => {
                json!({"event": "dtmf", "sequenceNumber": self.seq.to_string(), "streamSid": self.stream_sid, "dtmf": {"track": "inbound_track", "digit": digit.to_string()}})
            }
            Carrier::Exotel => {
                json!({"event": "dtmf", "sequence_number": self.seq.to_string(), "stream_sid": self.stream_sid, "dtmf": {"digit": digit.to_string(), "duration": "100"}})
            }
        };
        self.send_json(message).await;
    }

    /// Sends `stop`, as when the caller hangs up.
    pub async fn stop(&mut self) {
        self.seq += 1;
        let message = match self.config.carrier {
            Carrier::Twilio => {
                json!({"event": "stop", "sequenceNumber": self.seq.to_string(), "streamSid": self.stream_sid, "stop": {"accountSid": "AC0123456789abcdef0123456789abcdef", "callSid": "CA0123456789abcdef0123456789abcdef"}})
            }
            Carrier::Exotel => {
                json!({"event": "stop", "sequence_number": self.seq.to_string(), "stream_sid": self.stream_sid, "stop": {"call_sid": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", "account_sid": "exotel-account", "reason": "callended"}})
            }
        };
        self.send_json(message).await;
    }

    /// Plays `n` samples of the playback queue (bot audio) and echoes marks passed.
    async fn play(&mut self, mut n: usize) {
        let mut marks = Vec::new();
        while n > 0 {
            match self.playback.front_mut() {
                None => {
                    self.played.extend(std::iter::repeat_n(0, n));
                    n = 0;
                }
                Some(Queued::Mark(_)) => {
                    if let Some(Queued::Mark(name)) = self.playback.pop_front() {
                        marks.push(name);
                    }
                }
                Some(Queued::Audio(samples)) => {
                    let take = n.min(samples.len());
                    self.played.extend(samples.drain(..take));
                    n -= take;
                    if samples.is_empty() {
                        self.playback.pop_front();
                    }
                }
            }
        }
        // Marks right at the head are due now too.
        while let Some(Queued::Mark(_)) = self.playback.front() {
            if let Some(Queued::Mark(name)) = self.playback.pop_front() {
                marks.push(name);
            }
        }
        for name in marks {
            let message = self.mark_message(&name);
            self.marks_echoed.push(name);
            self.send_json(message).await;
        }
    }

    fn check_fields(&mut self, value: &Value, allowed: &[&str]) {
        let Some(object) = value.as_object() else {
            self.violations.push(format!("not an object: {value}"));
            return;
        };
        for key in object.keys() {
            if !allowed.contains(&key.as_str()) {
                self.violations
                    .push(format!("unexpected field {key:?} in {value}"));
            }
        }
    }

    /// Handles one message from the gateway, validating it as the carrier would.
    async fn on_message(&mut self, message: Message) {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                self.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                self.closed = true;
                return;
            }
            Message::Binary(_) => {
                self.violations.push("binary frame from the gateway".into());
                return;
            }
            _ => return,
        };
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                self.violations.push(format!("not JSON: {e}"));
                return;
            }
        };
        let sid_key = match self.config.carrier {
            Carrier::Twilio => "streamSid",
            Carrier::Exotel => "stream_sid",
        };
        if value[sid_key] != Value::String(self.stream_sid.clone()) {
            self.violations
                .push(format!("wrong or missing {sid_key}: {value}"));
        }
        let at_ms = self.now_ms();
        match value["event"].as_str() {
            Some("media") => {
                self.check_fields(&value, &["event", sid_key, "media"]);
                self.check_fields(&value["media"], &["payload"]);
                let Some(payload) = value["media"]["payload"].as_str() else {
                    self.violations
                        .push(format!("media without payload: {value}"));
                    return;
                };
                let bytes = match B64.decode(payload) {
                    Ok(b) => b,
                    Err(e) => {
                        self.violations.push(format!("bad base64: {e}"));
                        return;
                    }
                };
                let pcm: Vec<i16> = match self.config.carrier {
                    Carrier::Twilio => bytes.iter().map(|b| g711::mulaw_decode(*b)).collect(),
                    Carrier::Exotel => {
                        if !bytes.len().is_multiple_of(320)
                            || bytes.len() < 3200
                            || bytes.len() > 100_000
                        {
                            self.violations.push(format!("Exotel chunk of {} bytes breaks the 320-multiple/3200-minimum rule", bytes.len()));
                        }
                        bytes
                            .chunks_exact(2)
                            .map(|p| i16::from_le_bytes([p[0], p[1]]))
                            .collect()
                    }
                };
                self.bot_samples_received += pcm.len() as u64;
                self.received.push(Received::Media {
                    at_ms,
                    samples: pcm.len(),
                });
                self.playback.push_back(Queued::Audio(pcm));
                let buffered = self
                    .playback
                    .iter()
                    .map(|q| match q {
                        Queued::Audio(a) => a.len(),
                        Queued::Mark(_) => 0,
                    })
                    .sum();
                self.max_buffered_samples = self.max_buffered_samples.max(buffered);
            }
            Some("mark") => {
                self.check_fields(&value, &["event", sid_key, "mark"]);
                self.check_fields(&value["mark"], &["name"]);
                let name = value["mark"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.received.push(Received::Mark {
                    at_ms,
                    name: name.clone(),
                });
                self.playback.push_back(Queued::Mark(name));
            }
            Some("clear") => {
                self.check_fields(&value, &["event", sid_key]);
                self.received.push(Received::Clear { at_ms });
                // Twilio: unplayed audio is dropped and every pending mark comes back at once.
                let pending: Vec<String> = self
                    .playback
                    .drain(..)
                    .filter_map(|q| match q {
                        Queued::Mark(name) => Some(name),
                        Queued::Audio(_) => None,
                    })
                    .collect();
                for name in pending {
                    let message = self.mark_message(&name);
                    self.send_json(message).await;
                }
            }
            _ => self.violations.push(format!("unknown event: {value}")),
        }
    }

    /// Runs the call in real time for `ms` (or until the gateway closes).
    pub async fn run_for(&mut self, ms: u64) {
        self.run_until(ms, |_| false).await;
    }

    /// Runs in real time until `done` holds, the gateway closes, or `max_ms` passes; returns
    /// whether `done` held.
    pub async fn run_until(&mut self, max_ms: u64, done: impl Fn(&CarrierSim) -> bool) -> bool {
        let rate = u64::from(self.config.sample_rate);
        let chunk = (u64::from(self.config.chunk_ms) * rate / 1000) as usize;
        let period = Duration::from_millis(u64::from(self.config.chunk_ms));
        let mut ticker = self.ticker.take().unwrap_or_else(|| {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        });
        let end = self.sent_samples + max_ms * rate / 1000;
        while self.sent_samples < end && !self.closed {
            if done(self) {
                self.ticker = Some(ticker);
                return true;
            }
            tokio::select! {
                _ = ticker.tick() => {
                    let pcm = self.next_inbound(chunk);
                    let payload = self.encode(&pcm);
                    let message = self.media_message(&payload);
                    if self.ws.send(Message::Text(message.to_string().into())).await.is_err() {
                        self.closed = true;
                        break;
                    }
                    self.sent_samples += chunk as u64;
                    self.play(chunk).await;
                }
                message = self.ws.next() => match message {
                    Some(Ok(message)) => self.on_message(message).await,
                    _ => { self.closed = true; }
                },
            }
        }
        self.ticker = Some(ticker);
        done(self)
    }

    /// Waits (without sending audio) for the gateway to close, up to `limit`.
    pub async fn wait_close(&mut self, limit: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.closed {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(message))) => self.on_message(message).await,
                _ => break,
            }
        }
        self.close.clone()
    }

    pub fn clears(&self) -> usize {
        self.received
            .iter()
            .filter(|r| matches!(r, Received::Clear { .. }))
            .count()
    }

    pub fn media_count(&self) -> usize {
        self.received
            .iter()
            .filter(|r| matches!(r, Received::Media { .. }))
            .count()
    }

    /// Time (sim clock, ms) of the first bot audio received.
    pub fn first_media_ms(&self) -> Option<u64> {
        self.received.iter().find_map(|r| match r {
            Received::Media { at_ms, .. } => Some(*at_ms),
            _ => None,
        })
    }
}

/// The normal close code.
pub fn normal() -> u16 {
    u16::from(CloseCode::Normal)
}

/// Reads a metric's value from `/metrics` text.
pub fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// GET a URL, returning status and body.
pub async fn http_get(url: &str) -> (u16, String) {
    let url = url.strip_prefix("http://").unwrap();
    let (host, path) = url.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
