//! The session: the one task that owns a call's state.
//!
//! It parses the carrier's frames with the call's protocol core, decodes each media frame once,
//! runs in-band DTMF detection, VAD, the echo guard and turn-taking, drives the agent, and
//! plays the agent's speech through the egress ledger — all in one `select!` loop, with no
//! lock and no wait on anything but its own channels. Everything it notices becomes a
//! CallEvent (off the hot path, through the event sink) and a metric.
//!
//! At `start`, a `call_id` custom parameter naming a call the control plane created makes the
//! stream that call: its id (for events and the registry), agent and variables. Only this
//! set-up may wait on something else (the call directory, bounded), before any media is
//! handled.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::agent::{
    Agent, AgentAction, AgentCatalog, AgentContext, AgentEvent, AgentPort, DtmfSource, Heard,
    SpeechPart, UserTurn, UtteranceId, UtteranceIds,
};
use super::answering::{AnswerGate, GateStep};
use super::control::{CarrierControl, remote_party};
use super::directory::{CallDirectory, RESOLVE_TIMEOUT};
use super::egress::{Egress, EgressConfig, MarkOutcome};
use super::events::{CallEventKind, CallRecorder, EventSink};
use super::registry::{CallHandle, Control, ExpectedCall, OutboundPlan, Registry};
use super::transport::{InboundFrame, OutboundFrame};
use super::turn::{
    JudgedFrame, Judgement, TurnConfig, TurnEvent, TurnJudge, TurnTaker, is_backchannel,
    normalize_transcript,
};
use super::{CallId, CallInfo, mask_number};
use crate::audio::dtmf::{DtmfDetector, DtmfDigit};
use crate::audio::echo::{EchoConfig, EchoGuard};
use crate::audio::vad::{Vad, VadConfig, VadFrame};
use crate::audio::{Encoding, linear16};
use crate::carrier::{
    CarrierEvent, CarrierKind, CarrierProtocol, FrameError, MediaFrame, Outbound, StreamStart,
};
use crate::config::{Config, StreamLimits, SttGateConfig};
use crate::metrics::{CallMetrics, Metrics};
use crate::stt::{SttAudioFormat, SttEncoding, SttEvent, SttProvider, SttStream};

/// How often a live call checks that the carrier is still sending.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Control requests queued to one call.
const CONTROL_QUEUE: usize = 16;
/// Agent actions queued from an agent's own tasks.
const ACTION_QUEUE: usize = 64;
/// A carrier `dtmf` event this close (ms) after the same digit was heard in-band is the same
/// key press.
const DTMF_DEDUP_MS: u64 = 600;

/// The per-call settings, derived once from [`Config`].
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// VAD model and thresholds.
    pub vad: VadConfig,
    /// Turn-taking.
    pub turn: TurnConfig,
    /// Egress pacing.
    pub egress: EgressConfig,
    /// Echo guard.
    pub echo: EchoConfig,
    /// Connection limits.
    pub limits: StreamLimits,
    /// Run in-band DTMF detection until the carrier shows it sends `dtmf` events.
    pub inband_dtmf: bool,
    /// Which caller audio goes to the recognizer.
    pub stt_gate: SttGateConfig,
}

impl CallSettings {
    /// Derives the settings from a validated config.
    pub fn from_config(config: &Config) -> Result<Self, crate::config::ConfigError> {
        Ok(CallSettings {
            vad: config.vad_config()?,
            turn: config.turn.clone(),
            egress: config.egress,
            echo: config.echo,
            limits: config.limits.clone(),
            inband_dtmf: config.inband_dtmf,
            stt_gate: config.stt.gate,
        })
    }
}

/// What every session shares.
#[derive(Clone)]
pub struct SessionDeps {
    /// Per-call settings.
    pub settings: Arc<CallSettings>,
    /// The agents, and the default.
    pub agents: Arc<AgentCatalog>,
    /// Live calls.
    pub registry: Arc<Registry>,
    /// Metric families.
    pub metrics: Metrics,
    /// The event record.
    pub events: EventSink,
    /// Cancelled when live calls must end now (shutdown deadline).
    pub hangup_all: CancellationToken,
    /// The recognizer for agents that want transcripts, if one is configured.
    pub stt: Option<Arc<dyn SttProvider>>,
    /// Carrier REST actions (transfer, SMS).
    pub control: Arc<dyn CarrierControl>,
    /// Where calls created on other gateway instances are looked up (`None`: only calls
    /// expected in this instance's registry are linked).
    pub directory: Option<Arc<dyn CallDirectory>>,
}

impl std::fmt::Debug for SessionDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionDeps")
            .field("agents", &self.agents)
            .field("stt", &self.stt.as_ref().map(|s| s.name()))
            .field("directory", &self.directory.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The carrier sent `stop`.
    CarrierStop,
    /// The carrier closed the socket (or it failed) without `stop`.
    PeerClosed,
    /// No `start` within the limit.
    NoStart,
    /// Too many malformed frames.
    BadFrames,
    /// A message over the size limit.
    TooLarge,
    /// The stream cannot be served (format, agent).
    Unsupported(String),
    /// The control plane hung up.
    Hangup(String),
    /// The agent hung up.
    AgentHangup(String),
    /// The gateway is shutting down.
    Shutdown,
    /// The carrier stopped reading our frames.
    WriterStalled,
    /// The carrier sent nothing for the idle limit.
    Idle,
    /// The agent handed the call to another number.
    Transfer(String),
    /// An answering machine answered and the voicemail message was left.
    Voicemail,
    /// An answering machine answered and there was no message to leave.
    MachineNoMessage,
}

impl EndReason {
    /// Stable label for metrics and events.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::CarrierStop => "carrier_stop",
            EndReason::PeerClosed => "peer_closed",
            EndReason::NoStart => "no_start",
            EndReason::BadFrames => "bad_frames",
            EndReason::TooLarge => "too_large",
            EndReason::Unsupported(_) => "unsupported",
            EndReason::Hangup(_) => "hangup",
            EndReason::AgentHangup(_) => "agent_hangup",
            EndReason::Shutdown => "shutdown",
            EndReason::WriterStalled => "writer_stalled",
            EndReason::Idle => "idle",
            EndReason::Transfer(_) => "transfer",
            EndReason::Voicemail => "voicemail",
            EndReason::MachineNoMessage => "machine_no_message",
        }
    }

    /// The close frame to send, if the socket is still ours to close.
    fn close_frame(&self, limits: &StreamLimits) -> Option<(u16, String)> {
        match self {
            EndReason::CarrierStop => Some((1000, "stream stopped".into())),
            EndReason::PeerClosed | EndReason::WriterStalled => None,
            EndReason::NoStart => Some((
                1008,
                format!("no start event within {} s", limits.start_timeout_secs),
            )),
            EndReason::BadFrames => Some((
                1008,
                format!(
                    "too many malformed frames (over {} in {} s)",
                    limits.bad_frame_limit, limits.bad_frame_window_secs
                ),
            )),
            EndReason::TooLarge => Some((
                1009,
                format!("message over {} bytes", limits.max_message_bytes),
            )),
            EndReason::Unsupported(why) => Some((1003, why.clone())),
            EndReason::Hangup(why) => Some((1000, format!("hangup: {why}"))),
            EndReason::AgentHangup(why) => Some((1000, format!("agent hangup: {why}"))),
            EndReason::Shutdown => Some((1001, "gateway shutting down".into())),
            EndReason::Idle => Some((
                1008,
                format!("no frames for {} s", limits.idle_timeout_secs),
            )),
            EndReason::Transfer(to) => Some((1000, format!("transfer to {}", mask_number(to)))),
            EndReason::Voicemail => Some((1000, "voicemail left".into())),
            EndReason::MachineNoMessage => {
                Some((1000, "answering machine: no message to leave".into()))
            }
        }
    }
}

/// Counts malformed frames in a sliding window.
#[derive(Debug)]
struct BadFrameWindow {
    times: VecDeque<Instant>,
    limit: usize,
    window: Duration,
}

impl BadFrameWindow {
    fn new(limits: &StreamLimits) -> Self {
        BadFrameWindow {
            times: VecDeque::new(),
            limit: limits.bad_frame_limit as usize,
            window: Duration::from_secs(limits.bad_frame_window_secs),
        }
    }

    /// Counts one; true when the limit is exceeded.
    fn hit(&mut self, now: Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() > self.limit
    }
}

/// The live part of a call, set up at `start`.
struct Live {
    info: Arc<CallInfo>,
    encoding: Encoding,
    agent: Box<dyn Agent>,
    ctx: AgentContext,
    actions: mpsc::Receiver<AgentAction>,
    control: mpsc::Receiver<Control>,
    vad: Vad,
    dtmf: Option<DtmfDetector>,
    egress: Egress,
    echo: EchoGuard,
    turn: TurnTaker,
    metrics: CallMetrics,
    /// Samples of caller audio received: the call's clock.
    inbound_samples: u64,
    /// Scratch buffers reused for every frame.
    pcm: Vec<i16>,
    frame_pcm: Vec<i16>,
    vad_frames: Vec<VadFrame>,
    digits: Vec<DtmfDigit>,
    turn_events: Vec<TurnEvent>,
    judgements: Vec<Judgement>,
    last_inband_digit: Option<(char, u64)>,
    /// Utterance ids shared with the agent.
    ids: UtteranceIds,
    /// Streamed utterances that ended (closed, cleared, cancelled): late parts are dropped.
    ended_streams: HashSet<UtteranceId>,
    /// End-of-turn decisions from VAD and the recognizer.
    judge: TurnJudge,
    /// The recognizer and what it is fed.
    stt: Option<SttFeed>,
    /// A barge-in that paused the bot and may still be undone.
    barge: Option<PendingBargeIn>,
    /// A transfer asked of the carrier and not yet answered: a `stop` meanwhile is the carrier
    /// carrying it out (Twilio ends the stream when it redirects the call).
    transfer_pending: Option<String>,
    /// The agent was told the turn probably ended and may be preparing an answer.
    speculating: Option<Instant>,
    /// End of the caller's last turn, until the first audio of the answer is sent.
    awaiting_response: Option<Instant>,
    /// When the last media frame arrived (maps inbound samples to wall time).
    last_frame_at: Instant,
    /// Backchannel words (from the turn config).
    backchannels: Arc<[String]>,
    barge_in_confirm_samples: u64,
    /// An outbound call's start plan and a carrier verdict that came before the stream, until
    /// the live loop opens the gate.
    outbound: Option<(OutboundPlan, Option<String>)>,
    /// Holds the greeting while it is found out who answered.
    gate: Option<AnswerGate>,
    /// The voicemail message being left.
    voicemail: Option<LeftMessage>,
}

/// A voicemail message playing on an answering machine.
#[derive(Debug, Clone, Copy)]
struct LeftMessage {
    utterance: UtteranceId,
    beep: bool,
    started_ms: u64,
    duration_ms: u64,
}

/// A barge-in that paused playback and may still turn out to be noise or a backchannel.
#[derive(Debug, Clone)]
struct PendingBargeIn {
    onset_sample: u64,
    heard: Heard,
}

/// The caller audio sent to the recognizer: everything, or (gated) only speech with a preroll
/// before it and a hangover after, so silences cost nothing and `KeepAlive` covers them.
struct SttFeed {
    stream: SttStream,
    config: SttGateConfig,
    rate: u32,
    preroll: VecDeque<(u64, Bytes, usize)>,
    preroll_samples: usize,
    last_speech: Option<u64>,
    open: bool,
    dropped: u64,
}

impl SttFeed {
    fn new(stream: SttStream, config: SttGateConfig, rate: u32) -> Self {
        SttFeed {
            stream,
            config,
            rate,
            preroll: VecDeque::new(),
            preroll_samples: 0,
            last_speech: None,
            open: false,
            dropped: 0,
        }
    }

    fn samples(&self, ms: u32) -> u64 {
        u64::from(ms) * u64::from(self.rate) / 1000
    }

    /// Feeds one carrier frame that starts at sample `start` and holds `samples` samples.
    fn push(&mut self, start: u64, bytes: Bytes, samples: usize, speech: bool) {
        let at_ms = start * 1000 / u64::from(self.rate.max(1));
        if self.config.send_silence {
            self.send(at_ms, bytes);
            return;
        }
        let end = start + samples as u64;
        if speech {
            self.last_speech = Some(end);
        }
        let hangover = self.samples(self.config.hangover_ms);
        let open = self.last_speech.is_some_and(|t| end <= t + hangover);
        if open {
            if !self.open {
                while let Some((at, chunk, n)) = self.preroll.pop_front() {
                    self.preroll_samples -= n;
                    self.send(at, chunk);
                }
            }
            self.send(at_ms, bytes);
        } else {
            self.preroll.push_back((at_ms, bytes, samples));
            self.preroll_samples += samples;
            let cap = self.samples(self.config.preroll_ms) as usize;
            while self.preroll_samples > cap {
                match self.preroll.pop_front() {
                    Some((_, _, n)) => self.preroll_samples -= n,
                    None => break,
                }
            }
        }
        self.open = open;
    }

    /// Keeps the gate open (a turn is waiting for its final words).
    fn hold_open(&mut self, now: u64) {
        self.last_speech = Some(self.last_speech.map_or(now, |t| t.max(now)));
    }

    fn send(&mut self, at_ms: u64, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if !self.stream.push_audio(at_ms, bytes) {
            self.dropped += 1;
        }
    }
}

/// One call's session.
pub struct Session {
    call_id: CallId,
    carrier: CarrierKind,
    deps: Arc<SessionDeps>,
    protocol: CarrierProtocol,
    frames: mpsc::Receiver<InboundFrame>,
    out: mpsc::Sender<OutboundFrame>,
    recorder: CallRecorder,
    bad_frames: BadFrameWindow,
    started: Instant,
}

impl Session {
    /// A session for a new connection; `frames` come from the reader, `out` goes to the writer.
    pub fn new(
        call_id: CallId,
        carrier: CarrierKind,
        deps: Arc<SessionDeps>,
        frames: mpsc::Receiver<InboundFrame>,
        out: mpsc::Sender<OutboundFrame>,
    ) -> Self {
        let bad_frames = BadFrameWindow::new(&deps.settings.limits);
        Session {
            call_id,
            carrier,
            recorder: CallRecorder::new(call_id, deps.events.clone()),
            protocol: CarrierProtocol::new(carrier),
            deps,
            frames,
            out,
            bad_frames,
            started: Instant::now(),
        }
    }

    /// Runs the call to its end and returns why it ended.
    pub async fn run(mut self) -> EndReason {
        let reason = match self.await_start().await {
            Ok(start) => match self.find_expected(&start).await {
                Ok(expected) => match self.go_live(&start, expected) {
                    Ok(mut live) => {
                        let reason = self.run_live(&mut live).await;
                        self.finish_live(&mut live, &reason);
                        reason
                    }
                    Err(reason) => reason,
                },
                Err(reason) => reason,
            },
            Err(reason) => reason,
        };
        self.end(&reason);
        reason
    }

    /// Waits for `start`, rejecting everything else, within the start timeout.
    async fn await_start(&mut self) -> Result<StreamStart, EndReason> {
        let limits = &self.deps.settings.limits;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(limits.start_timeout_secs);
        let hangup_all = self.deps.hangup_all.clone();
        loop {
            let frame = tokio::select! {
                frame = self.frames.recv() => frame,
                _ = tokio::time::sleep_until(deadline) => return Err(EndReason::NoStart),
                _ = hangup_all.cancelled() => return Err(EndReason::Shutdown),
            };
            match self.parse(frame)? {
                Some(CarrierEvent::Start(start)) => return Ok(*start),
                Some(CarrierEvent::Stop { reason }) => {
                    self.recorder
                        .record(CallEventKind::StreamStopped { reason });
                    return Err(EndReason::CarrierStop);
                }
                // `connected`; media/dtmf/mark before start are rejected by the core.
                Some(_) | None => {}
            }
        }
    }

    /// Turns a reader frame into a carrier event; `Ok(None)` for a frame that was skipped,
    /// `Err` when the call must end.
    fn parse(&mut self, frame: Option<InboundFrame>) -> Result<Option<CarrierEvent>, EndReason> {
        match frame {
            None | Some(InboundFrame::Closed(_)) => Err(EndReason::PeerClosed),
            Some(InboundFrame::Failed(error)) => {
                tracing::info!(%error, "carrier connection failed");
                Err(EndReason::PeerClosed)
            }
            Some(InboundFrame::TooLarge) => {
                self.deps.metrics.bad_frame(self.carrier, "too_large");
                self.recorder.record(CallEventKind::BadFrame {
                    kind: "too_large",
                    message: format!(
                        "message over {} bytes",
                        self.deps.settings.limits.max_message_bytes
                    ),
                });
                Err(EndReason::TooLarge)
            }
            Some(InboundFrame::Binary(len)) => {
                self.bad_frame(
                    "binary",
                    format!("binary frame of {len} bytes: the protocol is JSON text"),
                )?;
                Ok(None)
            }
            Some(InboundFrame::Text(text)) => match self.protocol.parse(text.as_str()) {
                Ok(event) => Ok(Some(event)),
                Err(FrameError::UnsupportedFormat(why)) => {
                    self.deps
                        .metrics
                        .bad_frame(self.carrier, "unsupported_format");
                    let message = format!("unsupported media format: {why}");
                    self.recorder.record(CallEventKind::BadFrame {
                        kind: "unsupported_format",
                        message: message.clone(),
                    });
                    Err(EndReason::Unsupported(message))
                }
                Err(error) => {
                    self.bad_frame(error.kind(), error.to_string())?;
                    Ok(None)
                }
            },
        }
    }

    /// Counts, records and skips a malformed frame; `Err` when they come as a flood.
    fn bad_frame(&mut self, kind: &'static str, message: String) -> Result<(), EndReason> {
        tracing::debug!(kind, %message, "malformed frame skipped");
        self.deps.metrics.bad_frame(self.carrier, kind);
        self.recorder
            .record(CallEventKind::BadFrame { kind, message });
        if self.bad_frames.hit(Instant::now()) {
            tracing::warn!("closing: too many malformed frames");
            return Err(EndReason::BadFrames);
        }
        Ok(())
    }

    /// The call the stream's `call_id` custom parameter names: expected in this instance's
    /// registry, or else found through the directory (bounded by [`RESOLVE_TIMEOUT`]; frames
    /// arriving meanwhile wait in the reader's queue, and once it is full the reader stops
    /// reading, so the socket pushes back and nothing is lost). A `call_id` that names no call
    /// is logged and recorded, and the stream is served as a call of its own; only a shutdown
    /// meanwhile ends it.
    async fn find_expected(
        &mut self,
        start: &StreamStart,
    ) -> Result<Option<ExpectedCall>, EndReason> {
        let Some(wanted) = start.custom_parameters.get("call_id") else {
            return Ok(None);
        };
        let found = match self.deps.registry.take_expected(wanted) {
            Some(expected) => Ok(expected),
            None => match self.deps.directory.clone() {
                None => Err("not_expected"),
                Some(directory) => {
                    let hangup_all = self.deps.hangup_all.clone();
                    tokio::select! {
                        found = tokio::time::timeout(RESOLVE_TIMEOUT, directory.resolve(wanted)) => {
                            match found {
                                Ok(Some(expected)) => Ok(expected),
                                Ok(None) => Err("not_found"),
                                Err(_) => Err("directory_timeout"),
                            }
                        }
                        _ = hangup_all.cancelled() => return Err(EndReason::Shutdown),
                    }
                }
            },
        };
        let found = found.and_then(|expected| {
            if self.deps.registry.contains(expected.call_id) {
                Err("already_live")
            } else {
                Ok(expected)
            }
        });
        match found {
            Ok(expected) => Ok(Some(expected)),
            Err(reason) => {
                tracing::warn!(
                    call_id = %wanted,
                    reason,
                    "the stream names a call that is not expected; serving it with the default agent"
                );
                self.recorder.record(CallEventKind::CallNotLinked {
                    requested_id: wanted.clone(),
                    reason,
                });
                Ok(None)
            }
        }
    }

    /// Sets the call up once `start` has arrived; an expected call gives it its id, agent,
    /// tenant and variables.
    fn go_live(
        &mut self,
        start: &StreamStart,
        expected: Option<ExpectedCall>,
    ) -> Result<Live, EndReason> {
        let settings = &self.deps.settings;
        let mut outbound = None;
        let (agent_name, factory, tenant_id, start) = match expected {
            Some(expected) => {
                outbound = expected
                    .outbound
                    .map(|plan| (plan, expected.answered_by.clone()));
                tracing::info!(
                    stream_call_id = %self.call_id,
                    call_id = %expected.call_id,
                    agent = %expected.agent,
                    "stream linked to its call"
                );
                self.call_id = expected.call_id;
                self.recorder.rekey(expected.call_id);
                (
                    expected.agent,
                    expected.factory,
                    expected.tenant_id,
                    with_variables(start, &expected.variables),
                )
            }
            None => (
                self.deps.agents.default_name().to_owned(),
                None,
                None,
                Cow::Borrowed(start),
            ),
        };
        let start = start.as_ref();
        let agent = match &factory {
            Some(factory) => factory(start),
            None => self.deps.agents.create(&agent_name, start),
        }
        .map_err(|e| EndReason::Unsupported(e.to_string()))?;
        let format = start.media_format;
        let rules = self
            .protocol
            .chunk_rules()
            .ok_or_else(|| EndReason::Unsupported("no chunk rules after start".into()))?;
        let vad = Vad::new(&settings.vad, format.sample_rate)
            .map_err(|e| EndReason::Unsupported(format!("VAD: {e}")))?;
        let dtmf = if settings.inband_dtmf {
            DtmfDetector::new(format.sample_rate)
                .map_err(|e| tracing::info!(error = %e, "in-band DTMF off for this call"))
                .ok()
        } else {
            None
        };
        let info = Arc::new(CallInfo::from_start(
            self.call_id,
            self.carrier,
            start,
            &agent_name,
        ));
        let stt = match (&self.deps.stt, agent.wants_transcripts()) {
            (Some(provider), true) => {
                let encoding = match format.encoding {
                    Encoding::Mulaw => Some(SttEncoding::Mulaw),
                    Encoding::Linear16 => Some(SttEncoding::Linear16),
                    Encoding::Alaw => None,
                };
                encoding.map(|encoding| {
                    let stream = provider.open(
                        self.call_id,
                        SttAudioFormat {
                            encoding,
                            sample_rate: format.sample_rate,
                        },
                    );
                    SttFeed::new(stream, settings.stt_gate, format.sample_rate)
                })
            }
            _ => None,
        };
        let (action_tx, actions) = mpsc::channel(ACTION_QUEUE);
        let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
        self.deps
            .registry
            .insert(CallHandle::new(info.clone(), control_tx).with_tenant(tenant_id));
        self.deps.metrics.live_calls.inc();
        tracing::info!(
            stream_sid = %start.stream_sid,
            call_sid = %start.call_sid,
            from = %start.from.as_deref().map(mask_number).unwrap_or_default(),
            to = %start.to.as_deref().map(mask_number).unwrap_or_default(),
            encoding = format.encoding.as_str(),
            sample_rate = format.sample_rate,
            agent = %agent_name,
            "stream started"
        );
        self.recorder.record(CallEventKind::StreamStarted {
            carrier: self.carrier.as_str(),
            stream_sid: start.stream_sid.clone(),
            call_sid: start.call_sid.clone(),
            encoding: format.encoding.as_str(),
            sample_rate: format.sample_rate,
            agent: agent_name,
        });
        let ids = UtteranceIds::default();
        let mut live = Live {
            ctx: AgentContext::new(info.clone(), AgentPort::new(action_tx, ids.clone())),
            info,
            encoding: format.encoding,
            agent,
            actions,
            control,
            vad,
            dtmf,
            egress: Egress::new(format, rules, settings.egress, ids.clone()),
            echo: EchoGuard::new(format.sample_rate, settings.echo),
            turn: TurnTaker::new(format.sample_rate, settings.turn.clone()),
            judge: TurnJudge::new(format.sample_rate, &settings.turn, stt.is_some()),
            stt,
            ids,
            ended_streams: HashSet::new(),
            barge: None,
            transfer_pending: None,
            speculating: None,
            awaiting_response: None,
            last_frame_at: Instant::now(),
            backchannels: settings.turn.backchannels.clone().into(),
            barge_in_confirm_samples: u64::from(settings.turn.barge_in_confirm_ms)
                * u64::from(format.sample_rate)
                / 1000,
            judgements: Vec::new(),
            metrics: self.deps.metrics.for_call(self.carrier),
            inbound_samples: 0,
            pcm: Vec::with_capacity(format.sample_rate as usize / 5),
            frame_pcm: Vec::with_capacity(format.sample_rate as usize / 5),
            vad_frames: Vec::with_capacity(8),
            digits: Vec::new(),
            turn_events: Vec::new(),
            last_inband_digit: None,
            gate: None,
            voicemail: None,
            outbound,
        };
        if live.outbound.is_none() {
            self.agent_event(&mut live, AgentEvent::CallStarted)?;
        }
        Ok(live)
    }

    /// The live loop: frames, control requests, agent actions, shutdown.
    async fn run_live(&mut self, live: &mut Live) -> EndReason {
        let hangup_all = self.deps.hangup_all.clone();
        let idle_limit = Duration::from_secs(self.deps.settings.limits.idle_timeout_secs);
        let mut watchdog = tokio::time::interval(IDLE_CHECK);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_frame = Instant::now();
        if let Err(reason) = self.open_gate(live) {
            return reason;
        }
        loop {
            let step = tokio::select! {
                biased;
                _ = hangup_all.cancelled() => Err(EndReason::Shutdown),
                Some(control) = live.control.recv() => self.on_control(live, control),
                Some(action) = live.actions.recv() => self.apply(live, action),
                stt_event = next_stt(&mut live.stt) => self.on_stt(live, stt_event),
                frame = self.frames.recv() => {
                    last_frame = Instant::now();
                    match self.parse(frame) {
                        Ok(Some(event)) => self.on_event(live, event),
                        Ok(None) => Ok(()),
                        Err(reason) => Err(reason),
                    }
                }
                _ = watchdog.tick() => {
                    if last_frame.elapsed() > idle_limit {
                        Err(EndReason::Idle)
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(reason) = step {
                return reason;
            }
        }
    }

    fn on_control(&mut self, live: &mut Live, control: Control) -> Result<(), EndReason> {
        match control {
            Control::Hangup { reason } => Err(EndReason::Hangup(reason)),
            Control::Say(speech) => self.apply(live, AgentAction::Say(speech)),
            Control::AnsweredBy { verdict } => self.carrier_verdict(live, &verdict),
        }
    }

    /// Starts an outbound call's plan: with machine detection the agent prepares the
    /// voicemail and waits behind the gate; otherwise it starts at once.
    fn open_gate(&mut self, live: &mut Live) -> Result<(), EndReason> {
        let Some((plan, noted)) = live.outbound.take() else {
            return Ok(());
        };
        if !plan.detect_machine {
            return self.agent_event(live, AgentEvent::CallStarted);
        }
        let has_message = live
            .agent
            .prepare_voicemail(plan.voicemail_message.as_deref(), &mut live.ctx);
        match AnswerGate::new(live.info.media_format.sample_rate, &plan, has_message) {
            Ok(gate) => live.gate = Some(gate),
            Err(error) => {
                tracing::warn!(%error, "answering-machine detection off for this call");
                return self.agent_event(live, AgentEvent::CallStarted);
            }
        }
        for action in live.ctx.take_actions() {
            self.apply(live, action)?;
        }
        match noted {
            Some(verdict) => self.carrier_verdict(live, &verdict),
            None => Ok(()),
        }
    }

    /// The carrier's answering-machine verdict: acted on while the gate still listens.
    fn carrier_verdict(&mut self, live: &mut Live, verdict: &str) -> Result<(), EndReason> {
        let Some(gate) = live.gate.as_mut() else {
            return Ok(());
        };
        let mut steps = Vec::new();
        gate.carrier_verdict(verdict, live.turn.ms(live.inbound_samples), &mut steps);
        self.gate_steps(live, steps)
    }

    /// Carries out what the gate decided.
    fn gate_steps(&mut self, live: &mut Live, steps: Vec<GateStep>) -> Result<(), EndReason> {
        for step in steps {
            match step {
                GateStep::Greet { verdict, by, at_ms } => {
                    self.recorder.record(CallEventKind::Amd {
                        verdict,
                        by,
                        ms: at_ms,
                    });
                    live.gate = None;
                    self.agent_event(live, AgentEvent::CallStarted)?;
                }
                GateStep::Machine { verdict, by, at_ms }
                | GateStep::Ready { verdict, by, at_ms } => {
                    self.recorder.record(CallEventKind::Amd {
                        verdict,
                        by,
                        ms: at_ms,
                    });
                }
                GateStep::Leave { speech, beep, .. } => {
                    let duration_ms = speech.duration_ms();
                    let utterance = match live.egress.enqueue(speech) {
                        Ok(id) => id,
                        Err(error) => {
                            tracing::warn!(%error, "voicemail dropped: cannot convert its sample rate");
                            return Err(EndReason::MachineNoMessage);
                        }
                    };
                    live.voicemail = Some(LeftMessage {
                        utterance,
                        beep,
                        started_ms: live.turn.ms(live.inbound_samples),
                        duration_ms,
                    });
                    if live.egress.close(utterance) {
                        self.speech_finished(live, utterance)?;
                    }
                    self.pump(live)?;
                }
                GateStep::HangUp { error } => {
                    if let Some(error) = error {
                        tracing::warn!(%error, "answering machine: the voicemail could not be prepared");
                    }
                    return Err(EndReason::MachineNoMessage);
                }
            }
        }
        Ok(())
    }

    fn on_event(&mut self, live: &mut Live, event: CarrierEvent) -> Result<(), EndReason> {
        match event {
            CarrierEvent::Media(frame) => self.on_media(live, frame),
            CarrierEvent::Mark { name } => self.on_mark(live, &name),
            CarrierEvent::Dtmf { digit, .. } => {
                // The carrier reports key presses: in-band detection would only duplicate them.
                live.dtmf = None;
                let duplicate = live.last_inband_digit.is_some_and(|(d, at)| {
                    d == digit
                        && live.turn.ms(live.inbound_samples.saturating_sub(at)) < DTMF_DEDUP_MS
                });
                if duplicate {
                    return Ok(());
                }
                self.dtmf(live, digit, DtmfSource::Carrier)
            }
            CarrierEvent::Stop { reason } => {
                self.recorder
                    .record(CallEventKind::StreamStopped { reason });
                match live.transfer_pending.take() {
                    Some(to) => Err(EndReason::Transfer(to)),
                    None => Err(EndReason::CarrierStop),
                }
            }
            // A repeated `connected` is harmless; a second `start` is rejected by the core.
            CarrierEvent::Connected | CarrierEvent::Start(_) => Ok(()),
        }
    }

    /// The inbound frame path: decode once, DTMF, VAD, echo guard, turn-taking, recognizer
    /// feed, egress.
    fn on_media(&mut self, live: &mut Live, frame: MediaFrame) -> Result<(), EndReason> {
        let began = Instant::now();
        live.last_frame_at = began;
        live.pcm.clear();
        live.encoding.decode_into(&frame.payload, &mut live.pcm);

        if let Some(detector) = live.dtmf.as_mut() {
            live.digits.clear();
            detector.push(&live.pcm, &mut live.digits);
            for i in 0..live.digits.len() {
                let digit = live.digits[i].digit;
                live.last_inband_digit =
                    Some((digit, live.inbound_samples + live.pcm.len() as u64));
                self.dtmf(live, digit, DtmfSource::InBand)?;
            }
        }

        live.vad_frames.clear();
        live.vad.push(&live.pcm, &mut live.vad_frames);
        live.frame_pcm.extend_from_slice(&live.pcm);
        let frame_start = live.inbound_samples;
        live.inbound_samples += live.pcm.len() as u64;
        let frame_len = live.vad.frame_samples();
        if live.gate.as_ref().is_some_and(AnswerGate::holds) {
            // Who answered is not known yet: the callee's audio is the gate's alone.
            let mut steps = Vec::new();
            let mut consumed = 0;
            for vad_frame in &live.vad_frames {
                let Some(pcm) = live.frame_pcm.get(consumed..consumed + frame_len) else {
                    break;
                };
                consumed += frame_len;
                if let Some(gate) = live.gate.as_mut() {
                    gate.push_frame(pcm, vad_frame.voiced, &mut steps);
                }
            }
            live.frame_pcm.drain(..consumed.min(live.frame_pcm.len()));
            self.gate_steps(live, steps)?;
            self.pump(live)?;
            live.metrics.frames_in.inc();
            live.metrics
                .frame_seconds
                .observe(began.elapsed().as_secs_f64());
            return Ok(());
        }
        live.turn_events.clear();
        live.judgements.clear();
        let mut consumed = 0;
        let mut any_speech = false;
        for vad_frame in &live.vad_frames {
            let Some(pcm) = live.frame_pcm.get(consumed..consumed + frame_len) else {
                break;
            };
            consumed += frame_len;
            let echo =
                vad_frame.voiced && live.echo.explains(vad_frame.end_sample, linear16::rms(pcm));
            let speech = vad_frame.voiced && !echo;
            any_speech |= speech;
            live.turn.push(
                JudgedFrame {
                    pcm,
                    end_sample: vad_frame.end_sample,
                    voiced: vad_frame.voiced,
                    echo,
                },
                live.egress.is_speaking(),
                &mut live.turn_events,
            );
            let silence = live.turn.silence_samples(vad_frame.end_sample);
            live.judge
                .on_frame(vad_frame.end_sample, speech, silence, &mut live.judgements);
        }
        live.frame_pcm.drain(..consumed.min(live.frame_pcm.len()));

        if let Some(feed) = live.stt.as_mut() {
            let samples = live.pcm.len();
            feed.push(frame_start, Bytes::from(frame.payload), samples, any_speech);
        }

        let events = std::mem::take(&mut live.turn_events);
        for event in events.iter().cloned() {
            self.on_turn_event(live, event)?;
        }
        live.turn_events = events;
        self.run_judgements(live)?;
        self.check_barge_in(live)?;
        self.pump(live)?;
        live.metrics.frames_in.inc();
        live.metrics
            .frame_seconds
            .observe(began.elapsed().as_secs_f64());
        Ok(())
    }

    /// Wall-clock instant of inbound sample `sample` (estimated from the last frame).
    fn instant_of(live: &Live, sample: u64) -> Instant {
        let behind = live.inbound_samples.saturating_sub(sample);
        let rate = u64::from(live.info.media_format.sample_rate.max(1));
        live.last_frame_at
            .checked_sub(Duration::from_micros(behind * 1_000_000 / rate))
            .unwrap_or(live.last_frame_at)
    }

    fn on_turn_event(&mut self, live: &mut Live, event: TurnEvent) -> Result<(), EndReason> {
        match event {
            TurnEvent::BargeIn { onset_sample } => self.start_barge_in(live, onset_sample),
            TurnEvent::SpeechStarted { onset_sample } => {
                self.recorder.record(CallEventKind::UserSpeechStarted {
                    at_ms: live.turn.ms(onset_sample),
                });
                self.agent_event(live, AgentEvent::UserSpeechStarted)
            }
            ended @ TurnEvent::TurnEnded { .. } => {
                let now = live.inbound_samples;
                if let (Some(feed), TurnEvent::TurnEnded { .. }) = (live.stt.as_mut(), &ended) {
                    feed.hold_open(now);
                }
                live.judge.on_turn_ended(ended, now, &mut live.judgements);
                Ok(())
            }
        }
    }

    /// Carries out the turn judge's decisions (which may produce more).
    fn run_judgements(&mut self, live: &mut Live) -> Result<(), EndReason> {
        let mut guard = 0;
        while !live.judgements.is_empty() && guard < 16 {
            guard += 1;
            let judgements = std::mem::take(&mut live.judgements);
            for judgement in judgements {
                self.on_judgement(live, judgement)?;
            }
        }
        Ok(())
    }

    fn on_judgement(&mut self, live: &mut Live, judgement: Judgement) -> Result<(), EndReason> {
        let now = live.inbound_samples;
        match judgement {
            Judgement::Finalize => {
                if let Some(feed) = live.stt.as_mut() {
                    feed.hold_open(now);
                    feed.stream.finalize();
                }
                Ok(())
            }
            Judgement::Speculate { transcript } => {
                if live.barge.is_some() {
                    return Ok(());
                }
                live.speculating = Some(Instant::now());
                self.recorder.record(CallEventKind::SpeculationStarted {
                    transcript: transcript.clone(),
                });
                self.agent_event(live, AgentEvent::TurnLikelyEnded { transcript })
            }
            Judgement::Resumed => {
                if live.speculating.take().is_some() {
                    self.recorder.record(CallEventKind::SpeculationDiscarded {
                        reason: "caller_resumed",
                    });
                    self.agent_event(live, AgentEvent::UserSpeechResumed)?;
                }
                Ok(())
            }
            Judgement::EndTurnNow => {
                if let Some(ended) = live.turn.end_turn_now(now) {
                    live.judge.on_turn_ended(ended, now, &mut live.judgements);
                }
                Ok(())
            }
            Judgement::Noise {
                onset_sample,
                end_sample,
            } => {
                tracing::debug!(
                    at_ms = live.turn.ms(onset_sample),
                    duration_ms = live.turn.ms(end_sample.saturating_sub(onset_sample)),
                    "sound without words: not a turn"
                );
                if live.barge.is_some() {
                    self.revert_barge_in(live, None)?;
                }
                if live.speculating.take().is_some() {
                    self.agent_event(live, AgentEvent::UserSpeechResumed)?;
                }
                self.agent_event(live, AgentEvent::UserNoise)
            }
            Judgement::Complete {
                audio,
                onset_sample,
                end_sample,
                transcript,
            } => {
                if let Some(barge) = live.barge.as_ref() {
                    let undo = if live.judge_has_stt() {
                        transcript.as_deref().is_none_or(|t| {
                            is_backchannel(t, &live.backchannels) && !live.agent.answers(t)
                        })
                    } else {
                        end_sample.saturating_sub(barge.onset_sample)
                            < live.barge_in_confirm_samples
                    };
                    if undo {
                        return self.revert_barge_in(live, transcript);
                    }
                    self.confirm_barge_in(live)?;
                }
                let speech_end = Self::instant_of(live, end_sample);
                let decided = Instant::now();
                self.recorder.record(CallEventKind::UserTurnEnded {
                    at_ms: live.turn.ms(end_sample),
                    duration_ms: live.turn.ms(end_sample.saturating_sub(onset_sample)),
                    transcript: transcript.clone(),
                    decided_after_ms: decided.saturating_duration_since(speech_end).as_millis()
                        as u64,
                });
                live.speculating = None;
                live.awaiting_response = Some(speech_end);
                self.agent_event(
                    live,
                    AgentEvent::UserTurnEnded(UserTurn {
                        audio,
                        transcript,
                        speech_end,
                        decided,
                    }),
                )
            }
        }
    }

    /// Caller speech over the bot: stop playback at once (`clear`), but keep the rest of the
    /// answer until it is clear this is a real interruption.
    fn start_barge_in(&mut self, live: &mut Live, onset_sample: u64) -> Result<(), EndReason> {
        if live.barge.is_some() || !live.egress.is_speaking() || live.egress.is_paused() {
            return Ok(());
        }
        self.send(Outbound::Clear)?;
        let now = live.inbound_samples;
        live.echo.cancel_from(now);
        let Some(heard) = live.egress.pause(now) else {
            return Ok(());
        };
        self.deps.metrics.stage(
            "barge_in_clear",
            Duration::from_millis(live.turn.ms(now.saturating_sub(onset_sample))),
        );
        live.barge = Some(PendingBargeIn {
            onset_sample,
            heard,
        });
        Ok(())
    }

    /// Decides a pending barge-in as soon as the evidence allows: words that are not a
    /// backchannel confirm it; speech still going after the confirm window confirms it.
    fn check_barge_in(&mut self, live: &mut Live) -> Result<(), EndReason> {
        let Some(barge) = live.barge.as_ref() else {
            return Ok(());
        };
        let now = live.inbound_samples;
        let transcript = live.judge.transcript();
        let words = !normalize_transcript(&transcript).is_empty();
        let backchannel = words
            && is_backchannel(&transcript, &live.backchannels)
            && !live.agent.answers(&transcript);
        let elapsed = now.saturating_sub(barge.onset_sample);
        // Still voicing (not just inside the turn's end-of-turn silence).
        let voicing = live
            .turn
            .silence_samples(now)
            .is_some_and(|silence| live.turn.ms(silence) < 60);
        let confirm = (words && !backchannel)
            || (voicing
                && elapsed >= live.barge_in_confirm_samples
                && (!backchannel || elapsed >= 3 * live.barge_in_confirm_samples));
        if confirm {
            self.confirm_barge_in(live)?;
        }
        Ok(())
    }

    /// The interruption is real: drop the rest of the answer and tell the agent what the
    /// caller heard.
    fn confirm_barge_in(&mut self, live: &mut Live) -> Result<(), EndReason> {
        let Some(barge) = live.barge.take() else {
            return Ok(());
        };
        let now = live.inbound_samples;
        let heard = live.egress.clear(now).unwrap_or(barge.heard);
        live.ended_streams.insert(heard.utterance);
        live.metrics.barge_ins.inc();
        tracing::debug!(
            heard_ms = heard.heard_ms,
            total_ms = heard.total_ms,
            "barge-in"
        );
        self.recorder.record(CallEventKind::BargeIn(heard.clone()));
        self.agent_event(live, AgentEvent::BargeIn(heard))
    }

    /// The "interruption" was noise or a backchannel: play on from where it stopped.
    fn revert_barge_in(
        &mut self,
        live: &mut Live,
        transcript: Option<String>,
    ) -> Result<(), EndReason> {
        let Some(barge) = live.barge.take() else {
            return Ok(());
        };
        let now = live.inbound_samples;
        live.egress.resume(now);
        self.recorder.record(CallEventKind::BargeInReverted {
            utterance: barge.heard.utterance,
            transcript,
        });
        self.pump(live)
    }

    fn on_stt(&mut self, live: &mut Live, event: Option<SttEvent>) -> Result<(), EndReason> {
        let now = live.inbound_samples;
        let Some(event) = event else {
            // The recognizer task ended: judge on VAD alone.
            live.stt = None;
            live.judge.lose_stt(&mut live.judgements);
            return self.run_judgements(live);
        };
        match &event {
            SttEvent::Final {
                text,
                end_ms,
                speech_final,
                from_finalize,
                ..
            } => {
                let latency_ms = live
                    .turn
                    .silence_samples(now)
                    .map(|s| live.turn.ms(s))
                    .filter(|_| !text.is_empty());
                if let Some(ms) = latency_ms {
                    self.deps
                        .metrics
                        .stage("stt_final", Duration::from_millis(ms));
                }
                self.recorder.record(CallEventKind::SttFinal {
                    text: text.clone(),
                    end_ms: *end_ms,
                    speech_final: *speech_final,
                    from_finalize: *from_finalize,
                    latency_ms,
                });
            }
            SttEvent::SpeechStarted { at_ms } => {
                self.recorder.record(CallEventKind::SttSignal {
                    signal: "speech_started",
                    at_ms: *at_ms,
                });
            }
            SttEvent::UtteranceEnd { last_word_end_ms } => {
                self.recorder.record(CallEventKind::SttSignal {
                    signal: "utterance_end",
                    at_ms: *last_word_end_ms,
                });
            }
            SttEvent::Reconnected {
                attempts,
                replayed_ms,
            } => {
                self.recorder.record(CallEventKind::SttReconnected {
                    attempts: *attempts,
                    replayed_ms: *replayed_ms,
                });
            }
            SttEvent::Failed { error } => {
                tracing::warn!(%error, "recognizer failed for this call");
                self.recorder.record(CallEventKind::SttFailed {
                    error: error.clone(),
                });
                live.judge.lose_stt(&mut live.judgements);
                return self.run_judgements(live);
            }
            SttEvent::Interim { .. } => {}
        }
        let silence = live.turn.silence_samples(now);
        live.judge
            .on_stt(&event, now, silence, &mut live.judgements);
        self.run_judgements(live)?;
        self.check_barge_in(live)?;
        self.pump(live)
    }

    /// Sends `clear` and drops the bot's queued audio; returns what the caller heard.
    fn stop_speaking(&mut self, live: &mut Live) -> Result<Option<Heard>, EndReason> {
        if !live.egress.is_speaking() && !live.egress.is_paused() {
            return Ok(None);
        }
        if !live.egress.is_paused() {
            self.send(Outbound::Clear)?;
        }
        live.barge = None;
        let now = live.inbound_samples;
        live.echo.cancel_from(now);
        let heard = live.egress.clear(now);
        if let Some(heard) = &heard {
            live.ended_streams.insert(heard.utterance);
        }
        Ok(heard)
    }

    fn on_mark(&mut self, live: &mut Live, name: &str) -> Result<(), EndReason> {
        match live.egress.on_mark(name, live.inbound_samples) {
            MarkOutcome::Played {
                utterance,
                chunk,
                played_ms,
                finished,
            } => {
                self.recorder.record(CallEventKind::MarkPlayed {
                    utterance,
                    chunk,
                    played_ms,
                });
                if finished {
                    self.speech_finished(live, utterance)?;
                }
                self.pump(live)
            }
            MarkOutcome::Stale => Ok(()),
            MarkOutcome::Unknown => {
                self.bad_frame("unknown_mark", format!("mark {name:?} was never sent"))
            }
        }
    }

    fn speech_finished(&mut self, live: &mut Live, utterance: u64) -> Result<(), EndReason> {
        live.ended_streams.insert(utterance);
        self.recorder
            .record(CallEventKind::BotSpeechFinished { utterance });
        if let Some(left) = live.voicemail.filter(|m| m.utterance == utterance) {
            self.recorder.record(CallEventKind::VoicemailLeft {
                beep: left.beep,
                ms: left.started_ms,
                duration_ms: left.duration_ms,
            });
            return Err(EndReason::Voicemail);
        }
        self.agent_event(live, AgentEvent::SpeechFinished { utterance })
    }

    fn dtmf(&mut self, live: &mut Live, digit: char, source: DtmfSource) -> Result<(), EndReason> {
        self.recorder.record(CallEventKind::Dtmf { digit, source });
        if live.gate.as_ref().is_some_and(AnswerGate::holds) {
            // The agent has not started: keys pressed over a machine's greeting are not input.
            return Ok(());
        }
        self.agent_event(live, AgentEvent::Dtmf { digit, source })
    }

    /// Hands an event to the agent and carries out what it asks.
    fn agent_event(&mut self, live: &mut Live, event: AgentEvent) -> Result<(), EndReason> {
        live.agent.on_event(event, &mut live.ctx);
        for action in live.ctx.take_actions() {
            self.apply(live, action)?;
        }
        Ok(())
    }

    fn apply(&mut self, live: &mut Live, action: AgentAction) -> Result<(), EndReason> {
        match action {
            AgentAction::Say(speech) => {
                match live.egress.enqueue(speech) {
                    Ok(id) => {
                        if live.egress.close(id) {
                            self.speech_finished(live, id)?;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "speech dropped: cannot convert its sample rate");
                        return Ok(());
                    }
                }
                self.pump(live)
            }
            AgentAction::Stream { utterance, part } => self.stream_part(live, utterance, part),
            AgentAction::Cancel { utterance } => {
                live.ended_streams.insert(utterance);
                if live.egress.cancel_unstarted(utterance) || !live.egress.has(utterance) {
                    return Ok(());
                }
                if let Some(heard) = self.stop_speaking(live)? {
                    self.recorder
                        .record(CallEventKind::BotSpeechCancelled(heard));
                }
                Ok(())
            }
            AgentAction::VoicemailReady(result) => {
                let Some(gate) = live.gate.as_mut() else {
                    return Ok(());
                };
                let mut steps = Vec::new();
                gate.message_ready(result, &mut steps);
                self.gate_steps(live, steps)
            }
            AgentAction::StopSpeaking => {
                if let Some(heard) = self.stop_speaking(live)? {
                    self.recorder
                        .record(CallEventKind::BotSpeechCancelled(heard));
                }
                Ok(())
            }
            AgentAction::Record(kind) => {
                self.recorder.record(kind);
                Ok(())
            }
            AgentAction::Stage { stage, elapsed } => {
                self.deps.metrics.stage(stage, elapsed);
                Ok(())
            }
            AgentAction::Wake(message) => self.agent_event(live, AgentEvent::Wake(message)),
            AgentAction::Transfer { to } => {
                self.recorder
                    .record(CallEventKind::TransferRequested { to: to.clone() });
                live.transfer_pending = Some(to.clone());
                let control = self.deps.control.clone();
                let info = live.info.clone();
                let port = live.ctx.port();
                tokio::spawn(async move {
                    let result = control.transfer(&info, &to).await;
                    let _ = port.send(AgentAction::TransferDone { to, result }).await;
                });
                Ok(())
            }
            AgentAction::TransferDone { to, result } => match result {
                Ok(()) => Err(EndReason::Transfer(to)),
                Err(error) => {
                    live.transfer_pending = None;
                    tracing::warn!(%error, to = %mask_number(&to), "transfer failed");
                    self.recorder.record(CallEventKind::TransferFailed {
                        to: to.clone(),
                        error: error.to_string(),
                    });
                    self.agent_event(
                        live,
                        AgentEvent::TransferFailed {
                            to,
                            error: error.to_string(),
                        },
                    )
                }
            },
            AgentAction::Sms { to, body } => {
                let Some(to) = to.or_else(|| remote_party(&live.info).map(str::to_owned)) else {
                    self.recorder.record(CallEventKind::SmsFailed {
                        to: None,
                        error: "the call has no number to text".into(),
                    });
                    return Ok(());
                };
                let control = self.deps.control.clone();
                let info = live.info.clone();
                let mut recorder = self.recorder.clone();
                tokio::spawn(async move {
                    match control.send_sms(&info, &to, &body).await {
                        Ok(receipt) => recorder.record(CallEventKind::SmsSent {
                            to,
                            message_id: receipt.message_id,
                            chars: body.chars().count(),
                        }),
                        Err(error) => {
                            tracing::warn!(%error, to = %mask_number(&to), "SMS not sent");
                            recorder.record(CallEventKind::SmsFailed {
                                to: Some(to),
                                error: error.to_string(),
                            });
                        }
                    }
                });
                Ok(())
            }
            AgentAction::Hangup { reason } => Err(EndReason::AgentHangup(reason)),
        }
    }

    /// One part of a streamed utterance.
    fn stream_part(
        &mut self,
        live: &mut Live,
        utterance: UtteranceId,
        part: SpeechPart,
    ) -> Result<(), EndReason> {
        if live.ended_streams.contains(&utterance) || !live.ids.issued(utterance) {
            return Ok(());
        }
        live.egress.open(utterance);
        match part {
            SpeechPart::Audio { pcm, sample_rate } => {
                if let Err(error) = live.egress.append(utterance, &pcm, sample_rate) {
                    tracing::warn!(%error, "speech dropped: cannot convert its sample rate");
                }
            }
            SpeechPart::Text(text) => live.egress.text(utterance, &text),
            SpeechPart::End => {
                if live.egress.close(utterance) {
                    self.speech_finished(live, utterance)?;
                }
            }
        }
        self.pump(live)
    }

    /// Sends whatever audio the egress ledger releases now.
    fn pump(&mut self, live: &mut Live) -> Result<(), EndReason> {
        let now = live.inbound_samples;
        let mut chunks = Vec::new();
        let timed_out = live.egress.poll(now, &mut chunks);
        for utterance in timed_out {
            self.deps.metrics.marks_timed_out.inc();
            self.speech_finished(live, utterance)?;
        }
        let mut started = Vec::new();
        for chunk in chunks {
            self.send(Outbound::Media(&chunk.wire))?;
            self.send(Outbound::Mark(&chunk.mark))?;
            live.metrics.frames_out.inc();
            live.echo.play(chunk.play_at, &chunk.pcm);
            if chunk.first {
                started.push(chunk.utterance);
                self.recorder.record(CallEventKind::BotSpeechStarted {
                    utterance: chunk.utterance,
                    duration_ms: chunk.utterance_ms,
                    at_ms: live.turn.ms(now),
                });
                if let Some(speech_end) = live.awaiting_response.take() {
                    let latency = speech_end.elapsed();
                    self.deps.metrics.stage("response", latency);
                    self.recorder.record(CallEventKind::ResponseStarted {
                        utterance: chunk.utterance,
                        latency_ms: latency.as_millis() as u64,
                    });
                }
            }
        }
        for utterance in started {
            self.agent_event(live, AgentEvent::SpeechStarted { utterance })?;
        }
        Ok(())
    }

    /// Serializes and queues one command for the writer without waiting.
    fn send(&mut self, command: Outbound<'_>) -> Result<(), EndReason> {
        let text = match self.protocol.encode(command) {
            Ok(text) => text,
            Err(error) => {
                // The egress ledger only produces valid commands; a failure here is a bug, and
                // dropping one frame is better than dropping the call.
                tracing::error!(%error, "outbound command could not be encoded; skipped");
                return Ok(());
            }
        };
        self.out
            .try_send(OutboundFrame::Text(text))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EndReason::WriterStalled,
                mpsc::error::TrySendError::Closed(_) => EndReason::PeerClosed,
            })
    }

    fn finish_live(&mut self, live: &mut Live, reason: &EndReason) {
        live.agent.on_event(AgentEvent::CallEnding, &mut live.ctx);
        live.ctx.take_actions();
        if let Some(feed) = live.stt.take() {
            feed.stream.close();
            if feed.dropped > 0 {
                tracing::warn!(
                    frames = feed.dropped,
                    "recognizer queue was full: audio dropped"
                );
            }
        }
        self.deps.registry.remove(self.call_id);
        self.deps.metrics.live_calls.dec();
        tracing::info!(
            reason = reason.label(),
            seconds = live.turn.ms(live.inbound_samples) as f64 / 1000.0,
            agent = %live.info.agent,
            "call ended"
        );
    }

    /// Records the end, counts it and closes the socket where that is still ours to do.
    fn end(&mut self, reason: &EndReason) {
        self.deps
            .metrics
            .calls_ended
            .with_label_values(&[self.carrier.as_str(), reason.label()])
            .inc();
        self.recorder.record(CallEventKind::CallEnded {
            reason: reason.label().to_owned(),
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
        if let Some((code, reason)) = reason.close_frame(&self.deps.settings.limits) {
            let _ = self.out.try_send(OutboundFrame::Close { code, reason });
        }
    }
}

/// The stream's `start` as the call's agent sees it: the call's variables win over the
/// stream's custom parameters, except `call_id` (the stream's own link to the call).
fn with_variables<'a>(
    start: &'a StreamStart,
    variables: &BTreeMap<String, String>,
) -> Cow<'a, StreamStart> {
    if variables.is_empty() {
        return Cow::Borrowed(start);
    }
    let mut merged = start.clone();
    for (name, value) in variables {
        if name != "call_id" {
            merged.custom_parameters.insert(name.clone(), value.clone());
        }
    }
    Cow::Owned(merged)
}

/// The next recognizer event, or never when the call has no recognizer.
async fn next_stt(feed: &mut Option<SttFeed>) -> Option<SttEvent> {
    match feed {
        Some(feed) => feed.stream.recv().await,
        None => std::future::pending().await,
    }
}

impl Live {
    /// Whether end-of-turn decisions use a recognizer.
    fn judge_has_stt(&self) -> bool {
        self.stt.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frame_window_slides() {
        let limits = StreamLimits {
            bad_frame_limit: 3,
            bad_frame_window_secs: 10,
            ..StreamLimits::default()
        };
        let mut window = BadFrameWindow::new(&limits);
        let t0 = Instant::now();
        assert!(!window.hit(t0));
        assert!(!window.hit(t0));
        assert!(!window.hit(t0));
        assert!(window.hit(t0), "the fourth within 10 s exceeds 3");
        let later = t0 + Duration::from_secs(11);
        assert!(!window.hit(later), "old hits expire");
    }

    #[test]
    fn every_end_reason_closes_with_the_right_code() {
        let limits = StreamLimits::default();
        let code = |r: EndReason| r.close_frame(&limits).map(|(c, _)| c);
        assert_eq!(code(EndReason::NoStart), Some(1008));
        assert_eq!(code(EndReason::BadFrames), Some(1008));
        assert_eq!(code(EndReason::TooLarge), Some(1009));
        assert_eq!(code(EndReason::Unsupported("x".into())), Some(1003));
        assert_eq!(code(EndReason::Shutdown), Some(1001));
        assert_eq!(code(EndReason::Hangup("x".into())), Some(1000));
        assert_eq!(code(EndReason::PeerClosed), None);
        assert_eq!(code(EndReason::Idle), Some(1008));
        assert_eq!(code(EndReason::Voicemail), Some(1000));
        assert_eq!(code(EndReason::MachineNoMessage), Some(1000));
        assert_eq!(EndReason::Voicemail.label(), "voicemail");
        assert_eq!(EndReason::MachineNoMessage.label(), "machine_no_message");
        let (_, text) = EndReason::NoStart.close_frame(&limits).unwrap();
        assert_eq!(text, "no start event within 10 s");
    }

    #[test]
    fn call_variables_win_over_stream_parameters_except_call_id() {
        let start = StreamStart {
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            from: None,
            to: None,
            tracks: vec![],
            custom_parameters: [("call_id", "abc"), ("name", "stream"), ("lang", "en")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            media_format: crate::carrier::MediaFormat {
                encoding: Encoding::Mulaw,
                sample_rate: 8000,
                channels: 1,
            },
        };
        assert!(matches!(
            with_variables(&start, &BTreeMap::new()),
            Cow::Borrowed(_)
        ));
        let variables: BTreeMap<String, String> =
            [("call_id", "forged"), ("name", "Asha"), ("slot", "9am")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let merged = with_variables(&start, &variables);
        let params = &merged.custom_parameters;
        assert_eq!(params["call_id"], "abc");
        assert_eq!(params["name"], "Asha");
        assert_eq!(params["slot"], "9am");
        assert_eq!(params["lang"], "en");
    }
}
