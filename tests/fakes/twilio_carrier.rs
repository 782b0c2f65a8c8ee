//! A fake Twilio that plays the carrier end to end (`specs/telephony.md` §1 and §2): its REST
//! API ([`FakeTwilioRest`], with call creation) places each created call by a script set per
//! `To` number ([`Outcome`]), and inbound calls start with [`FakeCarrier::inbound`].
//!
//! Like Twilio, for every call it:
//! - POSTs **signed** (`X-Twilio-Signature`) status callbacks to the call's `StatusCallback`,
//!   for the events the create request asked for (`completed` always), in order, with
//!   `SequenceNumber` from 0 and `CallDuration` on the final one;
//! - on answer POSTs (signed) to the call's `Url` (inbound: `{gateway}/twilio/voice`) with
//!   `CallSid`, `AccountSid`, `From`, `To`, `CallStatus`, `Direction`, `ApiVersion` (and
//!   `AnsweredBy` with synchronous machine detection; with `AsyncAmd` the verdict is POSTed to
//!   `AsyncAmdStatusCallback`), and runs the TwiML it gets back: `<Connect><Stream>` opens the
//!   media WebSocket, and once the gateway closes it the verbs after `</Connect>` run
//!   (`<Hangup/>`, or the end of the document, ends the call);
//! - on the WebSocket (upgrade signed over the `wss://` URL, as Twilio does) sends `connected`,
//!   `start` (the `<Parameter>`s as `customParameters`), then a 20 ms `media` frame (160 bytes
//!   of μ-law) every 20 ms with `sequenceNumber`, `chunk` and `timestamp`, and `dtmf` where the
//!   script says; it plays the gateway's audio at real-time speed and echoes each `mark` once
//!   the audio before it has played; `clear` drops the unplayed audio and echoes every pending
//!   mark at once;
//! - a REST `Status=completed` (or `canceled` while ringing) ends the call: the stream gets
//!   `stop` and the final callback follows.
//!
//! Everything is recorded per call ([`CallRecord`]): the create form, callbacks and the
//! gateway's answers, TwiML fetched, every stream message received, media bytes, marks, and
//! any breach of the protocol the gateway committed ([`CallRecord::violations`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use voicegw::carrier::signature::twilio_signature;
use voicegw::carrier::twilio_api::encode_form;

use super::twilio_rest::xml::{self, Element, Node};
#[allow(unused_imports)]
pub use super::twilio_rest::{
    ACCOUNT_SID, AUTH_TOKEN, FakeCall, FakeTwilioConfig, FakeTwilioRest, Fault, OUR_NUMBER,
    RestEvent,
};

/// Bytes of μ-law in one 20 ms frame.
pub const FRAME_BYTES: usize = 160;
/// μ-law silence.
const SILENCE: u8 = 0xFF;

/// What the called person (or their phone) does once the call is answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// μ-law audio the caller speaks from the first frame on; silence after it.
    pub audio: Vec<u8>,
    /// DTMF digits sent, each after the media frame with the given number (1-based).
    pub dtmf: Vec<(u32, char)>,
    /// The caller hangs up after this many frames; `None`: they stay until the gateway (or
    /// the REST API) ends the call, at most [`Behaviour::max_frames`].
    pub hangup_after_frames: Option<u32>,
    /// Frames after which the caller hangs up whatever happens (a bound for tests).
    pub max_frames: u32,
}

impl Behaviour {
    /// Silence until the gateway ends the call (at most 60 s).
    pub fn silence() -> Behaviour {
        Behaviour {
            audio: Vec::new(),
            dtmf: Vec::new(),
            hangup_after_frames: None,
            max_frames: 3_000,
        }
    }

    /// Says `mulaw` (μ-law 8 kHz), then silence.
    pub fn mulaw(mulaw: Vec<u8>) -> Behaviour {
        Behaviour {
            audio: mulaw,
            ..Behaviour::silence()
        }
    }

    /// Says a fixture WAV (`fixtures/audio/NAME`, 8 kHz mono 16-bit) from `offset_ms` on.
    pub fn wav(name: &str, offset_ms: u32) -> Behaviour {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/audio")
            .join(name);
        let mut reader = hound::WavReader::open(&path)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        let spec = reader.spec();
        assert_eq!(
            (spec.sample_rate, spec.channels, spec.bits_per_sample),
            (8_000, 1, 16),
            "fixture {name} is not 8 kHz mono 16-bit"
        );
        let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
        let skip = (offset_ms as usize * 8).min(samples.len());
        let mut mulaw = Vec::new();
        voicegw::audio::g711::encode_mulaw_into(&samples[skip..], &mut mulaw);
        Behaviour::mulaw(mulaw)
    }

    /// Adds a DTMF digit after frame `frame`.
    pub fn with_dtmf(mut self, frame: u32, digit: char) -> Behaviour {
        self.dtmf.push((frame, digit));
        self
    }

    /// The caller hangs up after `frames` frames.
    pub fn hang_up_after(mut self, frames: u32) -> Behaviour {
        self.hangup_after_frames = Some(frames);
        self
    }
}

/// How an outbound call to a number goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A person answers and behaves so.
    Answer(Behaviour),
    /// The line is busy.
    Busy,
    /// Nobody answers.
    NoAnswer,
    /// The call cannot be placed (SIP 503).
    Failed,
    /// An answering machine answers; detection reports `answered_by` (`machine_start`,
    /// `machine_end_beep`, …) when the call asked for it.
    Machine {
        /// The `AnsweredBy` value.
        answered_by: String,
        /// What the machine "says".
        behaviour: Behaviour,
    },
}

/// The outcomes a campaign test cycles through, by contact position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixed {
    /// A person answers.
    Answer,
    /// Busy.
    Busy,
    /// No answer.
    NoAnswer,
    /// The call fails.
    Failed,
    /// An answering machine answers (`machine_start`).
    Machine,
}

impl Mixed {
    /// The contact at `position`: answer, busy, no-answer, failed, machine, in turn.
    pub fn at(position: usize) -> Mixed {
        match position % 5 {
            0 => Mixed::Answer,
            1 => Mixed::Busy,
            2 => Mixed::NoAnswer,
            3 => Mixed::Failed,
            _ => Mixed::Machine,
        }
    }

    /// How the call goes at the carrier: answered calls (by a person or a machine) hang up
    /// after half a second.
    pub fn outcome(self) -> Outcome {
        let talk = Behaviour::silence().hang_up_after(25);
        match self {
            Mixed::Answer => Outcome::Answer(talk),
            Mixed::Busy => Outcome::Busy,
            Mixed::NoAnswer => Outcome::NoAnswer,
            Mixed::Failed => Outcome::Failed,
            Mixed::Machine => Outcome::Machine {
                answered_by: "machine_start".to_owned(),
                behaviour: talk,
            },
        }
    }
}

/// Settings of the carrier fake.
#[derive(Debug, Clone)]
pub struct CarrierConfig {
    /// The REST API's account, token and numbers.
    pub rest: FakeTwilioConfig,
    /// Time between call progress steps (initiated → ringing → answer).
    pub step_delay: Duration,
    /// How an outbound call goes when no script names its `To`.
    pub default_outcome: Outcome,
    /// Path on the gateway that inbound calls' status callbacks go to (as a number's status
    /// callback URL would be configured); `None`: no callbacks for inbound calls.
    pub inbound_status_path: Option<String>,
    /// Longest the fake waits for one HTTP answer from the gateway.
    pub http_timeout: Duration,
}

impl Default for CarrierConfig {
    fn default() -> Self {
        CarrierConfig {
            rest: FakeTwilioConfig::default(),
            step_delay: Duration::from_millis(20),
            default_outcome: Outcome::Answer(Behaviour::silence()),
            inbound_status_path: Some("/twilio/status".to_owned()),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// A signed request the fake made to the gateway, and the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    /// The URL requested.
    pub url: String,
    /// The form sent, in order.
    pub params: Vec<(String, String)>,
    /// The `X-Twilio-Signature` sent.
    pub signature: String,
    /// The gateway's status; `None` when the request failed.
    pub status: Option<u16>,
    /// The gateway's `Content-Type`.
    pub content_type: Option<String>,
    /// The gateway's body.
    pub body: String,
}

impl Posted {
    /// The first value of `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The TwiML ran out or said `<Hangup/>` (after the gateway closed the stream).
    Twiml,
    /// The caller hung up.
    Caller,
    /// A REST `Status=completed` / `canceled`.
    Api,
    /// Busy, no answer, or failed.
    NotAnswered,
    /// The TwiML could not be fetched or read.
    Error,
}

/// A media stream as the fake saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamRecord {
    /// The `<Stream url>`.
    pub url: String,
    /// The `MZ…` stream SID.
    pub stream_sid: String,
    /// The `<Parameter>`s, sent as `customParameters`.
    pub custom_parameters: BTreeMap<String, String>,
    /// Whether the WebSocket upgrade succeeded.
    pub connected: bool,
    /// Every message the gateway sent, parsed.
    pub received: Vec<Value>,
    /// The gateway's audio (μ-law), concatenated.
    pub media: Vec<u8>,
    /// The gateway's audio that was "played" before the stream ended or a clear.
    pub played_bytes: usize,
    /// Marks the gateway sent, in order.
    pub marks: Vec<String>,
    /// Marks echoed back, in order.
    pub marks_echoed: Vec<String>,
    /// `clear`s received.
    pub clears: usize,
    /// Media frames sent.
    pub frames_sent: u32,
    /// Media frames the fake had sent when the gateway's first audio arrived (so where in
    /// the callee's audio the gateway started speaking).
    pub first_media_at_frame: Option<u32>,
    /// DTMF digits sent.
    pub dtmf_sent: Vec<char>,
    /// The gateway closed the socket (rather than the fake ending the stream).
    pub closed_by_gateway: bool,
}

/// Everything about one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// `CA…`.
    pub sid: String,
    /// `outbound-api` or `inbound`.
    pub direction: String,
    /// Called number.
    pub to: String,
    /// Calling number.
    pub from: String,
    /// The create request's form (outbound calls).
    pub create_form: Vec<(String, String)>,
    /// Status callbacks posted, in order.
    pub callbacks: Vec<Posted>,
    /// Asynchronous AMD callbacks posted.
    pub amd_callbacks: Vec<Posted>,
    /// TwiML requests (voice webhook / `Url`).
    pub twiml_fetches: Vec<Posted>,
    /// TwiML verbs run, by name, in order (`Connect`, `Say`, `Hangup`, …).
    pub verbs: Vec<String>,
    /// The media stream, when one ran.
    pub stream: Option<StreamRecord>,
    /// The final status (`completed`, `busy`, …).
    pub final_status: Option<String>,
    /// How it ended.
    pub ended_by: Option<EndedBy>,
    /// What the gateway did that Twilio would flag (bad TwiML, bad stream messages, …).
    pub violations: Vec<String>,
    /// The call is over and its last callback was posted.
    pub finished: bool,
}

impl CallRecord {
    fn new(call: &FakeCall) -> CallRecord {
        CallRecord {
            sid: call.sid.clone(),
            direction: call.direction.clone(),
            to: call.to.clone(),
            from: call.from.clone(),
            create_form: call.create_form.clone(),
            callbacks: Vec::new(),
            amd_callbacks: Vec::new(),
            twiml_fetches: Vec::new(),
            verbs: Vec::new(),
            stream: None,
            final_status: None,
            ended_by: None,
            violations: Vec::new(),
            finished: false,
        }
    }

    /// The `CallStatus` of each status callback, in order.
    pub fn callback_statuses(&self) -> Vec<String> {
        self.callbacks
            .iter()
            .filter_map(|c| c.param("CallStatus").map(str::to_owned))
            .collect()
    }

    fn form_value(&self, name: &str) -> Option<&str> {
        self.create_form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Commands from the REST side to a running call.
#[derive(Debug)]
enum Control {
    /// `Status=completed` or `canceled`.
    End(String),
}

struct Shared {
    config: CarrierConfig,
    rest: FakeTwilioRest,
    calls: Mutex<HashMap<String, CallRecord>>,
    order: Mutex<Vec<String>>,
    scripts: Mutex<HashMap<String, Outcome>>,
    controls: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    http: reqwest::Client,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn update(&self, sid: &str, f: impl FnOnce(&mut CallRecord)) {
        if let Some(call) = self.calls.lock().unwrap().get_mut(sid) {
            f(call);
        }
    }

    fn violation(&self, sid: &str, what: impl Into<String>) {
        let what = what.into();
        self.update(sid, |c| c.violations.push(what));
    }

    fn add(&self, call: &FakeCall) -> mpsc::UnboundedReceiver<Control> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.calls
            .lock()
            .unwrap()
            .insert(call.sid.clone(), CallRecord::new(call));
        self.order.lock().unwrap().push(call.sid.clone());
        self.controls.lock().unwrap().insert(call.sid.clone(), tx);
        rx
    }

    /// POSTs `params` to `url`, signed with the auth token.
    async fn post(&self, url: &str, params: &[(String, String)]) -> Posted {
        let refs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let signature = twilio_signature(&self.config.rest.auth_token, url, &refs);
        let result = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", &signature)
            .header("user-agent", "TwilioProxy/1.1")
            .timeout(self.config.http_timeout)
            .body(encode_form(&refs))
            .send()
            .await;
        let mut posted = Posted {
            url: url.to_owned(),
            params: params.to_vec(),
            signature,
            status: None,
            content_type: None,
            body: String::new(),
        };
        match result {
            Ok(response) => {
                posted.status = Some(response.status().as_u16());
                posted.content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                posted.body = response.text().await.unwrap_or_default();
            }
            Err(e) => posted.body = format!("request failed: {e}"),
        }
        posted
    }
}

/// The running carrier fake; stops its tasks when dropped.
pub struct FakeCarrier {
    shared: Arc<Shared>,
    dispatcher: JoinHandle<()>,
}

impl Drop for FakeCarrier {
    fn drop(&mut self) {
        self.dispatcher.abort();
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl FakeCarrier {
    /// Starts the REST API and the carrier behind it.
    pub async fn start(config: CarrierConfig) -> FakeCarrier {
        let rest = FakeTwilioRest::start(config.rest.clone()).await;
        let mut events = rest.subscribe();
        let shared = Arc::new(Shared {
            config,
            rest,
            calls: Mutex::new(HashMap::new()),
            order: Mutex::new(Vec::new()),
            scripts: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            http: reqwest::Client::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let dispatch = shared.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    RestEvent::Created(call) => {
                        let outcome = dispatch
                            .scripts
                            .lock()
                            .unwrap()
                            .get(&call.to)
                            .cloned()
                            .unwrap_or_else(|| dispatch.config.default_outcome.clone());
                        let control = dispatch.add(&call);
                        let task =
                            tokio::spawn(run_outbound(dispatch.clone(), call, outcome, control));
                        dispatch.tasks.lock().unwrap().push(task);
                    }
                    RestEvent::StatusSet { sid, status } => {
                        if let Some(tx) = dispatch.controls.lock().unwrap().get(&sid) {
                            let _ = tx.send(Control::End(status));
                        }
                    }
                }
            }
        });
        FakeCarrier { shared, dispatcher }
    }

    /// The REST API (base URL, requests, faults).
    pub fn rest(&self) -> &FakeTwilioRest {
        &self.shared.rest
    }

    /// The account SID.
    pub fn account_sid(&self) -> &str {
        &self.shared.config.rest.account_sid
    }

    /// The auth token (signs every request and the stream upgrade).
    pub fn auth_token(&self) -> &str {
        &self.shared.config.rest.auth_token
    }

    /// Sets how calls to `to` go.
    pub fn script(&self, to: &str, outcome: Outcome) {
        self.shared
            .scripts
            .lock()
            .unwrap()
            .insert(to.to_owned(), outcome);
    }

    /// A call to `to` from `from` reaches the gateway at `gateway` (`http://127.0.0.1:PORT`):
    /// the voice webhook is POSTed to `{gateway}/twilio/voice` and its TwiML runs, the caller
    /// behaving as `behaviour`. Returns the call SID at once.
    pub fn inbound(&self, gateway: &str, to: &str, from: &str, behaviour: Behaviour) -> String {
        let call = FakeCall {
            sid: self.shared.rest.next_call_sid(),
            account_sid: self.shared.config.rest.account_sid.clone(),
            status: "ringing".to_owned(),
            redirects: Vec::new(),
            dialed: Vec::new(),
            redirect_urls: Vec::new(),
            to: to.to_owned(),
            from: from.to_owned(),
            direction: "inbound".to_owned(),
            create_form: Vec::new(),
        };
        self.shared.rest.insert_call(call.clone());
        let control = self.shared.add(&call);
        let sid = call.sid.clone();
        let gateway = gateway.trim_end_matches('/').to_owned();
        let task = tokio::spawn(run_inbound(
            self.shared.clone(),
            call,
            gateway,
            behaviour,
            control,
        ));
        self.shared.tasks.lock().unwrap().push(task);
        sid
    }

    /// Every call so far, in the order they started.
    pub fn calls(&self) -> Vec<CallRecord> {
        let order = self.shared.order.lock().unwrap().clone();
        let calls = self.shared.calls.lock().unwrap();
        order
            .iter()
            .filter_map(|sid| calls.get(sid).cloned())
            .collect()
    }

    /// One call.
    pub fn call(&self, sid: &str) -> Option<CallRecord> {
        self.shared.calls.lock().unwrap().get(sid).cloned()
    }

    /// Waits up to `limit` for the call to finish; the record as it is then.
    pub async fn wait_finished(&self, sid: &str, limit: Duration) -> Option<CallRecord> {
        self.wait(limit, || self.call(sid).filter(|c| c.finished))
            .await
            .or_else(|| self.call(sid))
    }

    /// Waits up to `limit` for a call to `to` to start; its SID.
    pub async fn wait_call_to(&self, to: &str, limit: Duration) -> Option<String> {
        self.wait(limit, || {
            self.calls().into_iter().find(|c| c.to == to).map(|c| c.sid)
        })
        .await
    }

    /// Waits up to `limit` until `check` holds for the call; the record as it is then.
    pub async fn wait_until(
        &self,
        sid: &str,
        limit: Duration,
        check: impl Fn(&CallRecord) -> bool,
    ) -> Option<CallRecord> {
        self.wait(limit, || self.call(sid).filter(|c| check(c)))
            .await
            .or_else(|| self.call(sid))
    }

    async fn wait<T>(&self, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(found) = probe() {
                return Some(found);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The status callback state of one call: where, which events, the next sequence number.
struct Callbacks {
    url: Option<String>,
    events: Vec<String>,
    sequence: u64,
}

impl Callbacks {
    async fn post(
        &mut self,
        shared: &Shared,
        call: &FakeCall,
        status: &str,
        extra: &[(&str, String)],
    ) {
        let event = match status {
            "initiated" => "initiated",
            "ringing" => "ringing",
            "in-progress" => "answered",
            _ => "completed",
        };
        let Some(url) = self.url.clone() else { return };
        if event != "completed" && !self.events.iter().any(|e| e == event) {
            return;
        }
        let mut params = common_params(shared, call, status);
        params.push(("CallbackSource".into(), "call-progress-events".into()));
        params.push(("SequenceNumber".into(), self.sequence.to_string()));
        params.push(("Timestamp".into(), rfc2822_now()));
        for (k, v) in extra {
            params.push(((*k).to_owned(), v.clone()));
        }
        self.sequence += 1;
        let posted = shared.post(&url, &params).await;
        shared.update(&call.sid, |c| c.callbacks.push(posted));
    }
}

fn rfc2822_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// The parameters of every voice webhook (§2.6).
fn common_params(shared: &Shared, call: &FakeCall, status: &str) -> Vec<(String, String)> {
    vec![
        ("AccountSid".into(), shared.config.rest.account_sid.clone()),
        ("ApiVersion".into(), "2010-04-01".into()),
        ("CallSid".into(), call.sid.clone()),
        ("CallStatus".into(), status.into()),
        ("Called".into(), call.to.clone()),
        ("Caller".into(), call.from.clone()),
        ("Direction".into(), call.direction.clone()),
        ("From".into(), call.from.clone()),
        ("To".into(), call.to.clone()),
    ]
}

/// Waits `delay` unless the REST API ends the call first (its new status).
async fn pause(delay: Duration, control: &mut mpsc::UnboundedReceiver<Control>) -> Option<String> {
    tokio::select! {
        _ = tokio::time::sleep(delay) => None,
        command = control.recv() => command.map(|Control::End(status)| status),
    }
}

async fn run_outbound(
    shared: Arc<Shared>,
    call: FakeCall,
    outcome: Outcome,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let record = CallRecord::new(&call);
    let mut callbacks = Callbacks {
        url: record.form_value("StatusCallback").map(str::to_owned),
        events: record
            .create_form
            .iter()
            .filter(|(k, _)| k == "StatusCallbackEvent")
            .map(|(_, v)| v.clone())
            .collect(),
        sequence: 0,
    };
    let step = shared.config.step_delay;
    callbacks.post(&shared, &call, "initiated", &[]).await;
    if let Some(status) = pause(step, &mut control).await {
        return finish_unanswered(
            &shared,
            &call,
            &mut callbacks,
            &canceled(&status),
            EndedBy::Api,
        )
        .await;
    }
    shared.rest.set_call_status(&call.sid, "ringing");
    callbacks.post(&shared, &call, "ringing", &[]).await;
    if let Some(status) = pause(step, &mut control).await {
        return finish_unanswered(
            &shared,
            &call,
            &mut callbacks,
            &canceled(&status),
            EndedBy::Api,
        )
        .await;
    }
    let (behaviour, machine) = match outcome {
        Outcome::Busy => {
            return finish_unanswered(&shared, &call, &mut callbacks, "busy", EndedBy::NotAnswered)
                .await;
        }
        Outcome::NoAnswer => {
            return finish_unanswered(
                &shared,
                &call,
                &mut callbacks,
                "no-answer",
                EndedBy::NotAnswered,
            )
            .await;
        }
        Outcome::Failed => {
            return finish_unanswered(
                &shared,
                &call,
                &mut callbacks,
                "failed",
                EndedBy::NotAnswered,
            )
            .await;
        }
        Outcome::Answer(behaviour) => (behaviour, None),
        Outcome::Machine {
            answered_by,
            behaviour,
        } => (behaviour, Some(answered_by)),
    };
    shared.rest.set_call_status(&call.sid, "in-progress");
    let answered_at = tokio::time::Instant::now();
    callbacks.post(&shared, &call, "in-progress", &[]).await;
    let detection = record.form_value("MachineDetection").is_some();
    let answered_by = detection.then(|| machine.clone().unwrap_or_else(|| "human".to_owned()));
    if let Some(verdict) = &answered_by {
        shared.rest.set_call_answered_by(&call.sid, verdict);
    }
    let async_amd = record.form_value("AsyncAmd") == Some("true");
    let mut params = common_params(&shared, &call, "in-progress");
    if let (Some(verdict), false) = (&answered_by, async_amd) {
        params.push(("AnsweredBy".into(), verdict.clone()));
    }
    if let (Some(verdict), true) = (answered_by, async_amd)
        && let Some(url) = record
            .form_value("AsyncAmdStatusCallback")
            .map(str::to_owned)
    {
        {
            let amd = shared.clone();
            let sid = call.sid.clone();
            let task = tokio::spawn(async move {
                tokio::time::sleep(amd.config.step_delay * 5).await;
                let params = vec![
                    ("AccountSid".to_owned(), amd.config.rest.account_sid.clone()),
                    ("AnsweredBy".to_owned(), verdict),
                    ("CallSid".to_owned(), sid.clone()),
                    ("MachineDetectionDuration".to_owned(), "2310".to_owned()),
                ];
                let posted = amd.post(&url, &params).await;
                amd.update(&sid, |c| c.amd_callbacks.push(posted));
            });
            shared.tasks.lock().unwrap().push(task);
        }
    }
    let url = record.form_value("Url").unwrap_or_default().to_owned();
    let ended = fetch_and_run(&shared, &call, &url, params, behaviour, &mut control).await;
    let duration = answered_at.elapsed().as_secs_f64().ceil() as u64;
    shared.rest.set_call_duration(&call.sid, duration);
    shared.rest.set_call_status(&call.sid, "completed");
    callbacks
        .post(
            &shared,
            &call,
            "completed",
            &[("CallDuration", duration.to_string())],
        )
        .await;
    shared.update(&call.sid, |c| {
        c.final_status = Some("completed".into());
        c.ended_by = Some(ended);
        c.finished = true;
    });
}

/// The final status of a call ended through the REST API before it was answered: `canceled`
/// (a `Status=completed` on a ringing call cancels it too).
fn canceled(_status: &str) -> String {
    "canceled".to_owned()
}

async fn finish_unanswered(
    shared: &Shared,
    call: &FakeCall,
    callbacks: &mut Callbacks,
    status: &str,
    ended: EndedBy,
) {
    shared.rest.set_call_duration(&call.sid, 0);
    shared.rest.set_call_status(&call.sid, status);
    let mut extra = vec![("CallDuration", "0".to_owned())];
    if status == "failed" {
        extra.push(("SipResponseCode", "503".to_owned()));
    }
    callbacks.post(shared, call, status, &extra).await;
    shared.update(&call.sid, |c| {
        c.final_status = Some(status.to_owned());
        c.ended_by = Some(ended);
        c.finished = true;
    });
}

async fn run_inbound(
    shared: Arc<Shared>,
    call: FakeCall,
    gateway: String,
    behaviour: Behaviour,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let started = tokio::time::Instant::now();
    let params = common_params(&shared, &call, "ringing");
    let url = format!("{gateway}/twilio/voice");
    let ended = fetch_and_run(&shared, &call, &url, params, behaviour, &mut control).await;
    let duration = started.elapsed().as_secs_f64().ceil() as u64;
    shared.rest.set_call_status(&call.sid, "completed");
    let mut callbacks = Callbacks {
        url: shared
            .config
            .inbound_status_path
            .as_ref()
            .map(|path| format!("{gateway}{path}")),
        events: Vec::new(),
        sequence: 0,
    };
    callbacks
        .post(
            &shared,
            &call,
            "completed",
            &[("CallDuration", duration.to_string())],
        )
        .await;
    shared.update(&call.sid, |c| {
        c.final_status = Some("completed".into());
        c.ended_by = Some(ended);
        c.finished = true;
    });
}

/// Fetches the call's TwiML and runs it; how the call ended.
async fn fetch_and_run(
    shared: &Arc<Shared>,
    call: &FakeCall,
    url: &str,
    params: Vec<(String, String)>,
    behaviour: Behaviour,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> EndedBy {
    let posted = shared.post(url, &params).await;
    let answer = posted.clone();
    shared.update(&call.sid, |c| c.twiml_fetches.push(posted));
    if answer.status != Some(200) {
        shared.violation(
            &call.sid,
            format!(
                "the TwiML request answered {:?}: {}",
                answer.status, answer.body
            ),
        );
        return EndedBy::Error;
    }
    if !answer
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("text/xml") || c.starts_with("application/xml"))
    {
        shared.violation(
            &call.sid,
            format!("TwiML served as {:?}, not text/xml", answer.content_type),
        );
    }
    let root = match xml::parse(&answer.body) {
        Ok(root) if root.name == "Response" => root,
        Ok(root) => {
            shared.violation(&call.sid, format!("the TwiML root is <{}>", root.name));
            return EndedBy::Error;
        }
        Err(why) => {
            shared.violation(&call.sid, format!("the TwiML is not well-formed: {why}"));
            return EndedBy::Error;
        }
    };
    for verb in root.children.iter().filter_map(|n| match n {
        Node::Element(e) => Some(e),
        Node::Text(_) => None,
    }) {
        shared.update(&call.sid, |c| c.verbs.push(verb.name.clone()));
        match verb.name.as_str() {
            "Connect" => {
                let Some(stream) = verb.children_named("Stream").next() else {
                    shared.violation(&call.sid, "<Connect> without <Stream>");
                    return EndedBy::Error;
                };
                match run_stream(shared, call, stream, &behaviour, control).await {
                    StreamEnd::GatewayClosed => {}
                    StreamEnd::Caller => return EndedBy::Caller,
                    StreamEnd::Api => return EndedBy::Api,
                    StreamEnd::Failed => return EndedBy::Error,
                }
            }
            "Hangup" => return EndedBy::Twiml,
            "Say" | "Pause" | "Play" => {}
            other => {
                shared.violation(&call.sid, format!("the fake does not run <{other}>"));
                return EndedBy::Error;
            }
        }
    }
    EndedBy::Twiml
}

/// How a stream ended.
enum StreamEnd {
    /// The gateway closed the socket: the TwiML goes on.
    GatewayClosed,
    /// The caller hung up.
    Caller,
    /// REST `Status=completed`.
    Api,
    /// The socket could not be opened.
    Failed,
}

/// What is queued for playback on the caller's side.
enum Queued {
    Audio(usize),
    Mark(String),
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Stream<'a> {
    shared: &'a Shared,
    sid: String,
    stream_sid: String,
    ws: Ws,
    sequence: u64,
    queue: VecDeque<Queued>,
}

impl Stream<'_> {
    async fn send(&mut self, mut message: Value, numbered: bool) -> bool {
        if numbered {
            self.sequence += 1;
            message["sequenceNumber"] = json!(self.sequence.to_string());
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .is_ok()
    }

    async fn echo_mark(&mut self, name: String) -> bool {
        let message =
            json!({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}});
        self.shared.update(&self.sid, |c| {
            if let Some(s) = c.stream.as_mut() {
                s.marks_echoed.push(name.clone());
            }
        });
        self.send(message, true).await
    }

    /// Plays up to one frame of queued audio and echoes the marks it reaches.
    async fn play_frame(&mut self) -> bool {
        let mut budget = FRAME_BYTES;
        loop {
            match self.queue.front_mut() {
                Some(Queued::Mark(name)) => {
                    let name = std::mem::take(name);
                    self.queue.pop_front();
                    if !self.echo_mark(name).await {
                        return false;
                    }
                }
                Some(Queued::Audio(left)) if budget > 0 => {
                    let take = (*left).min(budget);
                    *left -= take;
                    budget -= take;
                    self.shared.update(&self.sid, |c| {
                        if let Some(s) = c.stream.as_mut() {
                            s.played_bytes += take;
                        }
                    });
                    if *left == 0 {
                        self.queue.pop_front();
                    }
                }
                _ => return true,
            }
        }
    }

    /// Records and acts on a message from the gateway; `false` when the socket is done.
    async fn receive(&mut self, message: Message) -> bool {
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Close(_) => return false,
            Message::Binary(_) => {
                self.shared
                    .violation(&self.sid, "a binary frame (Twilio warning 31950)");
                return true;
            }
            _ => return true,
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            self.shared
                .violation(&self.sid, format!("not JSON (31951): {text}"));
            return true;
        };
        self.shared.update(&self.sid, |c| {
            if let Some(s) = c.stream.as_mut() {
                s.received.push(value.clone());
            }
        });
        if value["streamSid"] != json!(self.stream_sid) {
            self.shared.violation(
                &self.sid,
                format!("wrong or missing streamSid (31951): {text}"),
            );
        }
        let allowed: &[&str] = match value["event"].as_str() {
            Some("media") => &["event", "streamSid", "media"],
            Some("mark") => &["event", "streamSid", "mark"],
            Some("clear") => &["event", "streamSid"],
            _ => {
                self.shared
                    .violation(&self.sid, format!("unknown event (31951): {text}"));
                return true;
            }
        };
        if let Some(object) = value.as_object()
            && let Some(extra) = object.keys().find(|k| !allowed.contains(&k.as_str()))
        {
            self.shared
                .violation(&self.sid, format!("extra field {extra:?} (31951): {text}"));
        }
        match value["event"].as_str() {
            Some("media") => {
                let payload = value["media"]["payload"].as_str().unwrap_or_default();
                match B64.decode(payload) {
                    Ok(bytes) if !bytes.is_empty() => {
                        self.queue.push_back(Queued::Audio(bytes.len()));
                        self.shared.update(&self.sid, |c| {
                            if let Some(s) = c.stream.as_mut() {
                                s.first_media_at_frame.get_or_insert(s.frames_sent);
                                s.media.extend_from_slice(&bytes);
                            }
                        });
                    }
                    _ => self
                        .shared
                        .violation(&self.sid, format!("bad media payload (31951): {text}")),
                }
            }
            Some("mark") => match value["mark"]["name"].as_str() {
                Some(name) => {
                    let name = name.to_owned();
                    self.shared.update(&self.sid, |c| {
                        if let Some(s) = c.stream.as_mut() {
                            s.marks.push(name.clone());
                        }
                    });
                    self.queue.push_back(Queued::Mark(name));
                }
                None => self
                    .shared
                    .violation(&self.sid, format!("a mark without a name (31951): {text}")),
            },
            _ => {
                // clear: drop unplayed audio, echo every pending mark.
                self.shared.update(&self.sid, |c| {
                    if let Some(s) = c.stream.as_mut() {
                        s.clears += 1;
                    }
                });
                let pending: Vec<String> = self
                    .queue
                    .drain(..)
                    .filter_map(|q| match q {
                        Queued::Mark(name) => Some(name),
                        Queued::Audio(_) => None,
                    })
                    .collect();
                for name in pending {
                    if !self.echo_mark(name).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Sends `stop` and closes the socket (the call ended on Twilio's side).
    async fn stop(&mut self) {
        let message = json!({
            "event": "stop",
            "streamSid": self.stream_sid,
            "stop": {"accountSid": self.shared.config.rest.account_sid, "callSid": self.sid},
        });
        self.send(message, true).await;
        let _ = self.ws.close(None).await;
    }
}

async fn run_stream(
    shared: &Arc<Shared>,
    call: &FakeCall,
    element: &Element,
    behaviour: &Behaviour,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> StreamEnd {
    let url = element.attribute("url").unwrap_or_default().to_owned();
    let parameters: BTreeMap<String, String> = element
        .children_named("Parameter")
        .filter_map(|p| {
            Some((
                p.attribute("name")?.to_owned(),
                p.attribute("value")?.to_owned(),
            ))
        })
        .collect();
    let stream_sid = format!(
        "MZ{:032x}",
        u128::from_str_radix(&call.sid[2..], 16).unwrap_or(0) ^ 0x5a5a
    );
    shared.update(&call.sid, |c| {
        c.stream = Some(StreamRecord {
            url: url.clone(),
            stream_sid: stream_sid.clone(),
            custom_parameters: parameters.clone(),
            ..StreamRecord::default()
        });
    });
    if !url.starts_with("wss://") {
        shared.violation(
            &call.sid,
            format!("the stream URL {url:?} is not wss:// (31910)"),
        );
    }
    if url.contains('?') {
        shared.violation(
            &call.sid,
            format!("the stream URL {url:?} has a query string"),
        );
    }
    // Twilio signs the wss:// URL; locally the gateway speaks plain ws://.
    let signed = url.replacen("ws://", "wss://", 1);
    let plain = signed.replacen("wss://", "ws://", 1);
    let signature = twilio_signature(&shared.config.rest.auth_token, &signed, &[]);
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let Ok(mut request) = plain.as_str().into_client_request() else {
        shared.violation(&call.sid, format!("the stream URL {url:?} is not a URL"));
        return StreamEnd::Failed;
    };
    if let Ok(value) = signature.parse() {
        request.headers_mut().insert("x-twilio-signature", value);
    }
    let ws = match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            shared.violation(&call.sid, format!("the stream upgrade failed (31920): {e}"));
            return StreamEnd::Failed;
        }
    };
    shared.update(&call.sid, |c| {
        if let Some(s) = c.stream.as_mut() {
            s.connected = true;
        }
    });
    let mut stream = Stream {
        shared,
        sid: call.sid.clone(),
        stream_sid: stream_sid.clone(),
        ws,
        sequence: 0,
        queue: VecDeque::new(),
    };
    stream
        .send(
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            false,
        )
        .await;
    stream
        .send(
            json!({
                "event": "start",
                "streamSid": stream_sid,
                "start": {
                    "accountSid": shared.config.rest.account_sid,
                    "streamSid": stream_sid,
                    "callSid": call.sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": parameters,
                },
            }),
            true,
        )
        .await;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut chunk: u32 = 0;
    let limit = behaviour
        .hangup_after_frames
        .unwrap_or(behaviour.max_frames)
        .min(behaviour.max_frames);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if chunk >= limit {
                    stream.stop().await;
                    return StreamEnd::Caller;
                }
                chunk += 1;
                let start = (chunk as usize - 1) * FRAME_BYTES;
                let mut frame: Vec<u8> = behaviour.audio.get(start..).unwrap_or_default().iter().take(FRAME_BYTES).copied().collect();
                frame.resize(FRAME_BYTES, SILENCE);
                let media = json!({
                    "event": "media",
                    "streamSid": stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": chunk.to_string(),
                        "timestamp": ((chunk - 1) * 20).to_string(),
                        "payload": B64.encode(&frame),
                    },
                });
                if !stream.send(media, true).await {
                    return StreamEnd::GatewayClosed;
                }
                shared.update(&call.sid, |c| if let Some(s) = c.stream.as_mut() { s.frames_sent = chunk; });
                for digit in behaviour.dtmf.iter().filter(|(f, _)| *f == chunk).map(|(_, d)| *d) {
                    let dtmf = json!({"event": "dtmf", "streamSid": stream_sid, "dtmf": {"track": "inbound_track", "digit": digit.to_string()}});
                    stream.send(dtmf, true).await;
                    shared.update(&call.sid, |c| if let Some(s) = c.stream.as_mut() { s.dtmf_sent.push(digit); });
                }
                if !stream.play_frame().await {
                    return StreamEnd::GatewayClosed;
                }
            }
            message = stream.ws.next() => {
                let open = match message {
                    Some(Ok(message)) => stream.receive(message).await,
                    _ => false,
                };
                if !open {
                    shared.update(&call.sid, |c| if let Some(s) = c.stream.as_mut() { s.closed_by_gateway = true; });
                    let _ = stream.ws.close(None).await;
                    return StreamEnd::GatewayClosed;
                }
            }
            command = control.recv() => {
                if command.is_some() {
                    stream.stop().await;
                    return StreamEnd::Api;
                }
            }
        }
    }
}
