//! One simulated call: a carrier media stream on a socket, driven by its scenario.
//!
//! The call runs on a steady 20 ms clock. Every tick sends one 20 ms frame of caller audio
//! (silence unless the caller speaks; Exotel batches frames into `chunk_ms` messages), plays
//! the bot's audio back in real time (echoing marks once the audio before them has played),
//! and advances the scenario. Everything seen is stamped on the call's [`Timeline`].
//!
//! Playback is kept as a time: the moment the audio received so far ends playing. A `media`
//! message starts playing on arrival when nothing is queued, or where the queued audio ends;
//! a mark is echoed when the audio before it has played; `clear` drops the rest and echoes
//! the pending marks at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use percent_encoding::percent_decode_str;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::carrier::{self, CarrierKind, CarrierStream, GatewayMessage};
use super::clip::{Clip, FRAME_SAMPLES_8K};
use super::persona::{PersonaHandle, PersonaInput, PersonaOutput, Transcript};
use super::results::LiveCounters;
use super::scenario::{Scenario, Step};
use super::timeline::{Event, Timeline};

/// Longest a `wait_for_bot` step lets a bot answer that has begun play on past its timeout.
pub const WAIT_FOR_BOT_CAP: Duration = Duration::from_secs(60);

/// What one call does and where.
#[derive(Debug)]
pub struct CallPlan {
    /// The call's index in the run.
    pub index: u32,
    /// The stream URL (Exotel credentials may ride in its userinfo).
    pub url: String,
    /// The carrier played.
    pub carrier: CarrierKind,
    /// The scenario followed.
    pub scenario: Arc<Scenario>,
    /// Extra custom parameters (the persona pair's agent).
    pub parameters: BTreeMap<String, String>,
    /// The persona, when the scenario hands the call to one.
    pub persona: Option<PersonaHandle>,
    /// Sign the upgrade with `X-Twilio-Signature` with this token.
    pub twilio_auth_token: Option<String>,
    /// Hang up at the latest then.
    pub hang_up_at: tokio::time::Instant,
    /// Live counts for the progress bar.
    pub live: Arc<LiveCounters>,
}

/// Settings shared by the calls of a run; [`Default`] gives the harness's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// Audio per Exotel `media` message, in ms (20 to 100, whole 20 ms frames).
    pub exotel_chunk_ms: u32,
    /// The bot is quiet when its audio has played and none came for this long.
    pub turn_gap: Duration,
    /// Longest wait for the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Keep one tick lateness sample in this many ticks.
    pub tick_sample_every: u32,
    /// Longest wait for the persona's transcript after the call ends.
    pub transcript_timeout: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            exotel_chunk_ms: 20,
            turn_gap: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
            tick_sample_every: 10,
            transcript_timeout: Duration::from_secs(5),
        }
    }
}

/// What one call saw.
#[derive(Debug)]
pub struct CallOutcome {
    /// The call's index in the run.
    pub index: u32,
    /// When connecting began (the timeline's zero).
    pub started: tokio::time::Instant,
    /// Everything that happened.
    pub timeline: Timeline,
    /// `media` messages sent.
    pub frames_sent: u64,
    /// Marks echoed.
    pub marks_echoed: u64,
    /// How late the 20 ms ticks fired, ms (sampled).
    pub tick_late_ms: Vec<f64>,
    /// The persona's transcript, when the call had a persona.
    pub transcript: Option<Transcript>,
    /// Bot audio the persona could not take in time (its queue was full), in messages.
    pub persona_audio_dropped: u64,
}

/// Runs one call to its end, with the default [`CallOptions`].
pub async fn run_call(plan: CallPlan) -> CallOutcome {
    run_call_with(plan, CallOptions::default()).await
}

/// Runs one call to its end.
pub async fn run_call_with(plan: CallPlan, options: CallOptions) -> CallOutcome {
    let started = Instant::now();
    LiveCounters::bump(&plan.live.calls_started);
    let CallPlan {
        index,
        url,
        carrier,
        scenario,
        parameters,
        persona,
        twilio_auth_token,
        hang_up_at,
        live,
    } = plan;
    let (persona_link, persona_task) = match persona {
        Some(handle) => (
            Some(PersonaLink {
                input: handle.input,
                output: handle.output,
            }),
            Some(handle.task),
        ),
        None => (None, None),
    };
    let mut outcome = CallOutcome {
        index,
        started,
        timeline: Timeline::default(),
        frames_sent: 0,
        marks_echoed: 0,
        tick_late_ms: Vec::new(),
        transcript: None,
        persona_audio_dropped: 0,
    };
    let stream = match CarrierStream::new(carrier, index, options.exotel_chunk_ms) {
        Ok(stream) => stream,
        Err(error) => {
            outcome.timeline.push(
                started.elapsed(),
                Event::ConnectFailed {
                    reason: error.to_string(),
                },
            );
            LiveCounters::bump(&live.errors);
            return finish_persona(outcome, persona_link, persona_task, options).await;
        }
    };
    let mut caller = Caller::new(
        stream,
        scenario,
        parameters,
        persona_link,
        live.clone(),
        options,
    );
    let socket = match connect(
        &url,
        carrier,
        twilio_auth_token.as_deref(),
        started,
        hang_up_at,
        options,
    )
    .await
    {
        Ok(socket) => socket,
        Err(reason) => {
            caller.push(started.elapsed(), Event::ConnectFailed { reason });
            LiveCounters::bump(&live.errors);
            return caller.finish(outcome, persona_task).await;
        }
    };
    caller.push(started.elapsed(), Event::Connected);
    LiveCounters::bump(&live.calls_up);
    drive(&mut caller, socket, started, hang_up_at, &mut outcome).await;
    LiveCounters::drop_one(&live.calls_up);
    caller.finish(outcome, persona_task).await
}

/// Ends a call that never got a caller: tells the persona and collects its transcript.
async fn finish_persona(
    mut outcome: CallOutcome,
    link: Option<PersonaLink>,
    task: Option<tokio::task::JoinHandle<Transcript>>,
    options: CallOptions,
) -> CallOutcome {
    if let Some(link) = link {
        let _ = tokio::time::timeout(
            options.transcript_timeout,
            link.input.send(PersonaInput::CallEnded),
        )
        .await;
    }
    outcome.transcript = collect_transcript(task, options.transcript_timeout).await;
    outcome
}

/// Waits (bounded) for the persona's transcript; aborts the persona when it is late.
async fn collect_transcript(
    task: Option<tokio::task::JoinHandle<Transcript>>,
    limit: Duration,
) -> Option<Transcript> {
    let mut task = task?;
    match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(transcript)) => Some(transcript),
        Ok(Err(error)) => {
            tracing::warn!(%error, "persona task failed");
            None
        }
        Err(_) => {
            task.abort();
            tracing::warn!("persona did not end in time; aborted");
            None
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Splits `scheme://user:pass@host/…` into the URL without its userinfo and the userinfo
/// as written (still percent-encoded; see [`basic_credentials`]).
pub fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => (
            format!("{scheme}://{}{tail}", &authority[at + 1..]),
            Some(authority[..at].to_string()),
        ),
        None => (url.to_string(), None),
    }
}

/// The `user:pass` bytes a Basic `Authorization` header carries for a URL's userinfo: the
/// user and the password are percent-decoded apart, so an encoded `%3A` stays in its part.
pub fn basic_credentials(userinfo: &str) -> Vec<u8> {
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let mut credentials: Vec<u8> = percent_decode_str(user).collect();
    credentials.push(b':');
    if let Some(password) = password {
        credentials.extend(percent_decode_str(password));
    }
    credentials
}

/// The URL Twilio signs for a stream: the dialled URL with scheme `wss`, without fragment.
pub fn twilio_signed_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split('#').next().unwrap_or(rest);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if path.starts_with('/') {
        format!("wss://{authority}{path}")
    } else {
        format!("wss://{authority}/{path}")
    }
}

/// Opens the stream's socket, as the carrier does (credentials in the upgrade).
async fn connect(
    url: &str,
    carrier: CarrierKind,
    twilio_auth_token: Option<&str>,
    started: Instant,
    hang_up_at: Instant,
    options: CallOptions,
) -> Result<Socket, String> {
    let (bare, userinfo) = split_userinfo(url);
    let mut request = bare
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad stream URL: {e}"))?;
    if let Some(userinfo) = userinfo {
        let value = HeaderValue::from_str(&format!(
            "Basic {}",
            B64.encode(basic_credentials(&userinfo))
        ))
        .map_err(|e| format!("bad credentials in the URL: {e}"))?;
        request.headers_mut().insert("authorization", value);
    }
    if carrier == CarrierKind::Twilio
        && let Some(token) = twilio_auth_token
    {
        let signature =
            crate::carrier::signature::twilio_signature(token, &twilio_signed_url(&bare), &[]);
        let value =
            HeaderValue::from_str(&signature).map_err(|e| format!("bad signature header: {e}"))?;
        request.headers_mut().insert("x-twilio-signature", value);
    }
    let deadline = (started + options.connect_timeout).min(hang_up_at);
    match tokio::time::timeout_at(deadline, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no handshake within {} ms",
            deadline.saturating_duration_since(started).as_millis()
        )),
    }
}

/// The socket loop: ticks, gateway messages, hang-up.
async fn drive(
    caller: &mut Caller,
    socket: Socket,
    started: Instant,
    hang_up_at: Instant,
    outcome: &mut CallOutcome,
) {
    let (mut sink, mut source) = socket.split();
    let mut out = Vec::new();
    caller.open(&mut out);
    if let Err(reason) = send_until(&mut sink, &mut out, hang_up_at).await {
        caller.dropped(started.elapsed(), format!("send: {reason}"));
        return;
    }
    caller.push(started.elapsed(), Event::StreamStarted);
    let mut ticker = tokio::time::interval(Duration::from_millis(u64::from(carrier::FRAME_MS)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut ticks: u64 = 0;
    let sample_every = u64::from(caller.options.tick_sample_every.max(1));
    loop {
        tokio::select! {
            scheduled = ticker.tick() => {
                let fired = Instant::now();
                if ticks.is_multiple_of(sample_every) {
                    let late = fired.saturating_duration_since(scheduled);
                    outcome.tick_late_ms.push(late.as_secs_f64() * 1_000.0);
                }
                ticks += 1;
                let now = fired.saturating_duration_since(started);
                let hang_up = fired >= hang_up_at || caller.tick(now, &mut out) == Flow::HangUp;
                if hang_up {
                    caller.stop_messages(&mut out);
                    let sent = tokio::time::timeout(Duration::from_secs(1), send_all(&mut sink, &mut out)).await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                    match sent {
                        Ok(Ok(())) | Err(_) => caller.push(started.elapsed(), Event::HungUp),
                        Ok(Err(reason)) => caller.dropped(started.elapsed(), format!("send: {reason}")),
                    }
                    return;
                }
                if let Err(reason) = send_until(&mut sink, &mut out, hang_up_at).await {
                    caller.dropped(started.elapsed(), format!("send: {reason}"));
                    return;
                }
            }
            message = source.next() => {
                let now = started.elapsed();
                match message {
                    Some(Ok(Message::Text(text))) => caller.on_text(now, text.as_str(), &mut out),
                    Some(Ok(Message::Binary(bytes))) => caller.violation(now, carrier::binary_violation(bytes.len()).0),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        let reason = match frame {
                            Some(f) => format!("closed by the gateway: {} {}", u16::from(f.code), f.reason),
                            None => "closed by the gateway".to_string(),
                        };
                        caller.dropped(now, reason);
                        return;
                    }
                    Some(Err(error)) => {
                        caller.dropped(now, format!("receive: {error}"));
                        return;
                    }
                    None => {
                        caller.dropped(now, "connection ended".to_string());
                        return;
                    }
                }
                if let Err(reason) = send_until(&mut sink, &mut out, hang_up_at).await {
                    caller.dropped(started.elapsed(), format!("send: {reason}"));
                    return;
                }
            }
        }
    }
}

/// [`send_all`], giving up at `limit` (a gateway that stops reading must not hold the
/// call past the end of the run).
async fn send_until<S>(sink: &mut S, out: &mut Vec<String>, limit: Instant) -> Result<(), String>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    match tokio::time::timeout_at(
        limit.max(Instant::now() + Duration::from_secs(1)),
        send_all(sink, out),
    )
    .await
    {
        Ok(sent) => sent,
        Err(_) => Err("the gateway stopped reading (send blocked past the hang-up time)".into()),
    }
}

/// Sends every message in `out` (emptying it), flushing once.
async fn send_all<S>(sink: &mut S, out: &mut Vec<String>) -> Result<(), String>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    if out.is_empty() {
        return Ok(());
    }
    for text in out.drain(..) {
        sink.feed(Message::text(text))
            .await
            .map_err(|e| e.to_string())?;
    }
    sink.flush().await.map_err(|e| e.to_string())
}

/// The caller's two channels to its persona.
#[derive(Debug)]
pub struct PersonaLink {
    /// To the persona.
    pub input: tokio::sync::mpsc::Sender<PersonaInput>,
    /// From the persona.
    pub output: tokio::sync::mpsc::Receiver<PersonaOutput>,
}

/// Whether the call goes on after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    HangUp,
}

/// An utterance being sent, frame by frame.
#[derive(Debug)]
struct Speech {
    clip: Arc<Clip>,
    frame: usize,
    turn: u32,
    barge_in: bool,
    expect_reply: bool,
}

/// What the caller is doing now.
#[derive(Debug)]
enum Activity {
    /// Take the next step.
    Next,
    /// Waiting for the bot to finish speaking.
    Wait { deadline: Duration },
    /// Speaking a scenario clip.
    Speak(Speech),
    /// Waiting for bot audio to cut into.
    BargeWait {
        clip: Arc<Clip>,
        after: Duration,
        deadline: Duration,
    },
    /// Silent until then.
    Pause { until: Duration },
    /// Pressing keys.
    Dtmf {
        digits: Vec<char>,
        next: usize,
        next_at: Duration,
        gap: Duration,
        expect_reply: bool,
        turn: u32,
    },
    /// The persona has the caller's side.
    Persona {
        replies: u32,
        max_turns: u32,
        speech: Option<Speech>,
    },
}

/// Bot audio kept for the persona until it has played.
#[derive(Debug)]
struct Played {
    start: Duration,
    end: Duration,
    pcm: Vec<i16>,
    sent: usize,
}

/// One call's state between socket events (no I/O: messages go to an outbox).
struct Caller {
    stream: CarrierStream,
    scenario: Arc<Scenario>,
    /// Custom parameters for `start`: the scenario's, then the plan's.
    parameters: BTreeMap<String, String>,
    options: CallOptions,
    live: Arc<LiveCounters>,
    timeline: Timeline,
    step: usize,
    activity: Activity,
    /// Caller actions so far (utterances and DTMF).
    turn: u32,
    /// When the bot audio received so far ends playing.
    play_end: Duration,
    /// Audio is queued or playing (a drain is due when it ends).
    playing: bool,
    /// When the current run of bot playback began.
    run_start: Duration,
    /// Marks waiting for their audio: (when it has played, name).
    marks: VecDeque<(Duration, String)>,
    /// When the last bot `media` arrived.
    last_media_at: Option<Duration>,
    /// The bot has spoken since the current wait began (audio still playing when it began,
    /// or received after the caller's last action, counts).
    spoke: bool,
    /// When the caller's last action ended.
    last_action_at: Duration,
    /// When the turn waiting for its first bot audio opened (for the live counts).
    awaiting_answer: Option<Duration>,
    /// Speech events waiting for the message that carries their frame: (frame in message,
    /// event).
    pending_events: Vec<(usize, Event)>,
    persona: Option<PersonaLink>,
    persona_played: VecDeque<Played>,
    persona_quiet_sent: bool,
    persona_dropped: u64,
    frames_sent: u64,
    marks_echoed: u64,
    silence: [i16; FRAME_SAMPLES_8K],
}

impl Caller {
    fn new(
        stream: CarrierStream,
        scenario: Arc<Scenario>,
        parameters: BTreeMap<String, String>,
        persona: Option<PersonaLink>,
        live: Arc<LiveCounters>,
        options: CallOptions,
    ) -> Caller {
        let mut all = scenario.parameters.clone();
        all.extend(parameters);
        Caller {
            stream,
            scenario,
            parameters: all,
            options,
            live,
            timeline: Timeline::default(),
            step: 0,
            activity: Activity::Next,
            turn: 0,
            play_end: Duration::ZERO,
            playing: false,
            run_start: Duration::ZERO,
            marks: VecDeque::new(),
            last_media_at: None,
            spoke: false,
            last_action_at: Duration::ZERO,
            awaiting_answer: None,
            pending_events: Vec::new(),
            persona,
            persona_played: VecDeque::new(),
            persona_quiet_sent: true,
            persona_dropped: 0,
            frames_sent: 0,
            marks_echoed: 0,
            silence: [0; FRAME_SAMPLES_8K],
        }
    }

    /// Records `event` at `at`, keeping the timeline in time order.
    fn push(&mut self, at: Duration, event: Event) {
        let at_us = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
        let events = &mut self.timeline.events;
        if events.last().is_none_or(|last| last.at_us <= at_us) {
            self.timeline.push(at, event);
        } else {
            let index = events.partition_point(|e| e.at_us <= at_us);
            events.insert(index, super::timeline::Stamped { at_us, event });
        }
    }

    fn violation(&mut self, at: Duration, what: String) {
        tracing::debug!(%what, "protocol violation");
        self.push(at, Event::Violation { what });
        LiveCounters::bump(&self.live.errors);
    }

    fn dropped(&mut self, at: Duration, reason: String) {
        self.push(at, Event::Dropped { reason });
        LiveCounters::bump(&self.live.errors);
    }

    /// The opening messages.
    fn open(&mut self, out: &mut Vec<String>) {
        out.push(self.stream.connected());
        let scenario = Arc::clone(&self.scenario);
        out.push(
            self.stream
                .start(&self.parameters, &scenario.from, &scenario.to),
        );
    }

    /// What the carrier sends at hang-up: audio left in a part-filled batch, then `stop`.
    fn stop_messages(&mut self, out: &mut Vec<String>) {
        out.extend(self.stream.flush_media());
        out.push(self.stream.stop());
    }

    fn echo(&mut self, name: &str, out: &mut Vec<String>) {
        out.push(self.stream.mark(name));
        self.marks_echoed += 1;
    }

    /// Plays bot audio up to `now`: echoes marks whose audio has played, records the drain,
    /// feeds the persona what has played and tells it when the bot is quiet.
    fn settle(&mut self, now: Duration, out: &mut Vec<String>) {
        if self
            .awaiting_answer
            .is_some_and(|since| now.saturating_sub(since) > self.scenario.answer_timeout)
        {
            self.awaiting_answer = None;
            LiveCounters::bump(&self.live.errors);
        }
        while self.marks.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, name)) = self.marks.pop_front() {
                self.echo(&name, out);
            }
        }
        if self.playing && self.play_end <= now {
            self.playing = false;
            self.push(self.play_end, Event::PlaybackDrained);
        }
        if self.persona.is_none() {
            return;
        }
        while let Some(front) = self.persona_played.front_mut() {
            let span = front.end.saturating_sub(front.start).as_micros().max(1);
            let done = now.saturating_sub(front.start).as_micros().min(span);
            let due = usize::try_from(front.pcm.len() as u128 * done / span).unwrap_or(usize::MAX);
            let due = due.min(front.pcm.len());
            if due > front.sent {
                let chunk = front.pcm[front.sent..due].to_vec();
                front.sent = due;
                if let Some(link) = &self.persona {
                    self.persona_dropped +=
                        full(link.input.try_send(PersonaInput::BotAudio(chunk)));
                }
            }
            if front.end <= now {
                self.persona_played.pop_front();
            } else {
                break;
            }
        }
        if !self.persona_quiet_sent && self.bot_quiet(now) {
            self.persona_quiet_sent = true;
            if let Some(link) = &self.persona {
                self.persona_dropped += full(link.input.try_send(PersonaInput::BotQuiet));
            }
        }
    }

    /// Playback has drained and no bot audio came for the turn gap.
    fn bot_quiet(&self, now: Duration) -> bool {
        !self.playing
            && self
                .last_media_at
                .is_some_and(|at| now.saturating_sub(at) >= self.options.turn_gap)
    }

    /// One message from the gateway.
    fn on_text(&mut self, now: Duration, text: &str, out: &mut Vec<String>) {
        self.settle(now, out);
        match self.stream.read_text(text) {
            Err(violation) => self.violation(now, violation.0),
            Ok(GatewayMessage::Media(audio)) => {
                let queued = self.play_end.saturating_sub(now);
                if !self.playing {
                    self.run_start = now;
                }
                let start = self.play_end.max(now);
                let end = start + Duration::from_micros(u64::from(audio.audio_us));
                self.play_end = end;
                self.playing = true;
                self.last_media_at = Some(now);
                self.spoke = true;
                self.persona_quiet_sent = false;
                if self.awaiting_answer.take().is_some() {
                    LiveCounters::bump(&self.live.turns);
                }
                self.push(
                    now,
                    Event::BotMedia {
                        audio_us: audio.audio_us,
                        voiced_offset_us: audio.voiced_offset_us,
                        queued_us: u32::try_from(queued.as_micros()).unwrap_or(u32::MAX),
                    },
                );
                if self.persona.is_some() {
                    self.persona_played.push_back(Played {
                        start,
                        end,
                        pcm: audio.pcm_8k,
                        sent: 0,
                    });
                }
            }
            Ok(GatewayMessage::Mark { name }) => {
                self.push(now, Event::BotMark { name: name.clone() });
                if self.playing {
                    self.marks.push_back((self.play_end, name));
                } else {
                    self.echo(&name, out);
                }
            }
            Ok(GatewayMessage::Clear) => {
                let dropped = self.play_end.saturating_sub(now);
                self.play_end = now;
                self.playing = false;
                // The persona hears only what played before the clear.
                self.persona_played.retain(|p| p.start < now);
                if let Some(last) = self.persona_played.back_mut()
                    && last.end > now
                {
                    let span = last.end.saturating_sub(last.start).as_micros().max(1);
                    let played = now.saturating_sub(last.start).as_micros();
                    let keep = usize::try_from(last.pcm.len() as u128 * played / span)
                        .unwrap_or(usize::MAX);
                    last.pcm.truncate(keep.max(last.sent));
                    last.end = now;
                }
                self.push(
                    now,
                    Event::BotClear {
                        dropped_us: u32::try_from(dropped.as_micros()).unwrap_or(u32::MAX),
                    },
                );
                while let Some((_, name)) = self.marks.pop_front() {
                    self.echo(&name, out);
                }
            }
        }
    }

    /// One 20 ms tick at `now`: playback, the scenario, one frame of caller audio.
    fn tick(&mut self, now: Duration, out: &mut Vec<String>) -> Flow {
        self.settle(now, out);
        // Steps that take no time run in the same tick; a bound keeps a scenario of only
        // such steps from spinning.
        let mut budget = self.scenario.steps.len() + 2;
        let speech = loop {
            match self.advance(now, out) {
                Ok(Some(speech)) => break Some(speech),
                Ok(None) => {}
                Err(Flow::HangUp) => return Flow::HangUp,
                Err(Flow::Continue) => break None,
            }
            budget -= 1;
            if budget == 0 {
                break None;
            }
        };
        self.send_frame(now, speech, out);
        Flow::Continue
    }

    /// Advances the activity at `now`. `Ok(Some)`: a speech frame to send; `Ok(None)`: the
    /// activity changed, look again; `Err(Continue)`: send silence this tick;
    /// `Err(HangUp)`: hang up.
    fn advance(
        &mut self,
        now: Duration,
        out: &mut Vec<String>,
    ) -> Result<Option<SpeechFrame>, Flow> {
        let bot_quiet = self.bot_quiet(now);
        match &mut self.activity {
            Activity::Next => self.begin_step(now).map(|()| None),
            Activity::Wait { deadline } => {
                // The timeout bounds the wait for the bot to begin; once it has spoken, its
                // answer plays out (up to `WAIT_FOR_BOT_CAP` more) before the caller goes on.
                let done = if self.spoke {
                    bot_quiet || now >= *deadline + WAIT_FOR_BOT_CAP
                } else {
                    now >= *deadline
                };
                if done {
                    self.activity = Activity::Next;
                    Ok(None)
                } else {
                    Err(Flow::Continue)
                }
            }
            Activity::Pause { until } => {
                if now >= *until {
                    self.activity = Activity::Next;
                    Ok(None)
                } else {
                    Err(Flow::Continue)
                }
            }
            Activity::Speak(speech) => match next_frame(speech) {
                Some(frame) => Ok(Some(frame)),
                None => {
                    self.activity = Activity::Next;
                    Ok(None)
                }
            },
            Activity::BargeWait {
                clip,
                after,
                deadline,
            } => {
                if self.playing && now >= self.run_start + *after {
                    let clip = Arc::clone(clip);
                    self.turn += 1;
                    self.activity = Activity::Speak(Speech {
                        clip,
                        frame: 0,
                        turn: self.turn,
                        barge_in: true,
                        expect_reply: true,
                    });
                    Ok(None)
                } else if !self.playing && now >= *deadline {
                    tracing::debug!("no bot audio to barge into; step skipped");
                    self.activity = Activity::Next;
                    Ok(None)
                } else {
                    Err(Flow::Continue)
                }
            }
            Activity::Dtmf {
                digits,
                next,
                next_at,
                gap,
                expect_reply,
                turn,
            } => {
                if *next < digits.len() && now >= *next_at {
                    let digit = digits[*next];
                    *next += 1;
                    *next_at = now + *gap;
                    match self.stream.dtmf(digit) {
                        Ok(text) => out.push(text),
                        Err(error) => tracing::warn!(%error, "DTMF digit skipped"),
                    }
                }
                if *next >= digits.len() {
                    let event = Event::DtmfSent {
                        turn: *turn,
                        digits: digits.iter().collect(),
                        expect_reply: *expect_reply,
                    };
                    let expect = *expect_reply;
                    self.activity = Activity::Next;
                    self.action_done(now, expect);
                    self.push(now, event);
                    return Ok(None);
                }
                Err(Flow::Continue)
            }
            Activity::Persona {
                replies,
                max_turns,
                speech,
            } => {
                if let Some(s) = speech {
                    if let Some(frame) = next_frame(s) {
                        return Ok(Some(frame));
                    }
                    *speech = None;
                }
                if *replies >= *max_turns {
                    self.activity = Activity::Next;
                    return Ok(None);
                }
                let Some(link) = self.persona.as_mut() else {
                    self.activity = Activity::Next;
                    return Ok(None);
                };
                match link.output.try_recv() {
                    Ok(PersonaOutput::Say { clip, .. }) => {
                        *replies += 1;
                        self.turn += 1;
                        *speech = Some(Speech {
                            clip,
                            frame: 0,
                            turn: self.turn,
                            barge_in: false,
                            expect_reply: true,
                        });
                        Ok(None)
                    }
                    Ok(PersonaOutput::HangUp { reason }) => {
                        tracing::debug!(%reason, "persona hung up");
                        Err(Flow::HangUp)
                    }
                    Err(TryRecvError::Empty) => Err(Flow::Continue),
                    Err(TryRecvError::Disconnected) => {
                        self.activity = Activity::Next;
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Starts the next scenario step.
    fn begin_step(&mut self, now: Duration) -> Result<(), Flow> {
        if self.step >= self.scenario.steps.len() {
            if self.scenario.repeat && !self.scenario.steps.is_empty() {
                self.step = 0;
            } else {
                return Err(Flow::HangUp);
            }
        }
        let scenario = Arc::clone(&self.scenario);
        let Some(step) = scenario.steps.get(self.step) else {
            return Err(Flow::HangUp);
        };
        self.step += 1;
        self.activity = match step {
            Step::WaitForBot { timeout } => {
                self.spoke = self.playing
                    || self
                        .last_media_at
                        .is_some_and(|at| at >= self.last_action_at);
                Activity::Wait {
                    deadline: now + *timeout,
                }
            }
            Step::Say { clip, expect_reply } => {
                self.turn += 1;
                Activity::Speak(Speech {
                    clip: Arc::clone(clip),
                    frame: 0,
                    turn: self.turn,
                    barge_in: false,
                    expect_reply: *expect_reply,
                })
            }
            Step::BargeIn { clip, after } => Activity::BargeWait {
                clip: Arc::clone(clip),
                after: *after,
                deadline: now + self.scenario.answer_timeout,
            },
            Step::Pause(length) => Activity::Pause {
                until: now + *length,
            },
            Step::Dtmf {
                digits,
                gap,
                expect_reply,
            } => {
                self.turn += 1;
                Activity::Dtmf {
                    digits: digits.chars().collect(),
                    next: 0,
                    next_at: now,
                    gap: *gap,
                    expect_reply: *expect_reply,
                    turn: self.turn,
                }
            }
            Step::Persona { max_turns } => Activity::Persona {
                replies: 0,
                max_turns: *max_turns,
                speech: None,
            },
            Step::Hangup => return Err(Flow::HangUp),
        };
        Ok(())
    }

    /// A caller action (utterance or digits) ended at `now`.
    fn action_done(&mut self, now: Duration, expect_reply: bool) {
        self.last_action_at = now;
        if expect_reply {
            self.awaiting_answer = Some(now);
        }
    }

    /// Adds this tick's frame to the stream; stamps speech events when their message goes.
    fn send_frame(&mut self, now: Duration, speech: Option<SpeechFrame>, out: &mut Vec<String>) {
        let position = self.stream.pending_frames();
        let message = match &speech {
            Some(s) => {
                if s.frame == s.clip.onset_frame {
                    self.pending_events.push((
                        position,
                        Event::SpeechStart {
                            turn: s.turn,
                            barge_in: s.barge_in,
                        },
                    ));
                }
                if s.frame == s.clip.end_frame {
                    self.pending_events.push((
                        position,
                        Event::SpeechEnd {
                            turn: s.turn,
                            barge_in: s.barge_in,
                            expect_reply: s.expect_reply,
                        },
                    ));
                }
                self.stream.media(s.clip.frame(s.frame))
            }
            None => {
                let silence = self.silence;
                self.stream.media(&silence)
            }
        };
        let Some(text) = message else {
            return;
        };
        out.push(text);
        self.frames_sent += 1;
        let frame = Duration::from_millis(u64::from(carrier::FRAME_MS));
        for (position, event) in std::mem::take(&mut self.pending_events) {
            match event {
                Event::SpeechStart { .. } => {
                    let before = frame * u32::try_from(position).unwrap_or(0);
                    self.push(now.saturating_sub(before), event);
                }
                Event::SpeechEnd { expect_reply, .. } => {
                    self.action_done(now, expect_reply);
                    self.push(now, event);
                }
                other => self.push(now, other),
            }
        }
    }

    /// Ends the call's bookkeeping: tells the persona, collects its transcript.
    async fn finish(
        mut self,
        mut outcome: CallOutcome,
        task: Option<tokio::task::JoinHandle<Transcript>>,
    ) -> CallOutcome {
        outcome.timeline = std::mem::take(&mut self.timeline);
        outcome.frames_sent = self.frames_sent;
        outcome.marks_echoed = self.marks_echoed;
        outcome.persona_audio_dropped = self.persona_dropped;
        finish_persona(outcome, self.persona.take(), task, self.options).await
    }
}

/// 1 when a message to the persona was dropped because its queue was full (a persona that
/// has ended is not counted).
fn full(sent: Result<(), TrySendError<PersonaInput>>) -> u64 {
    u64::from(matches!(sent, Err(TrySendError::Full(_))))
}

/// The next frame of `speech`, advancing it; `None` when it is over.
fn next_frame(speech: &mut Speech) -> Option<SpeechFrame> {
    if speech.frame >= speech.clip.frames() {
        return None;
    }
    let frame = speech.frame;
    speech.frame += 1;
    Some(SpeechFrame {
        clip: Arc::clone(&speech.clip),
        frame,
        turn: speech.turn,
        barge_in: speech.barge_in,
        expect_reply: speech.expect_reply,
    })
}

/// One frame of an utterance, with what the timeline needs to know about it.
#[derive(Debug)]
struct SpeechFrame {
    clip: Arc<Clip>,
    frame: usize,
    turn: u32,
    barge_in: bool,
    expect_reply: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn tone(samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| (8000.0 * (i as f32 * 0.5).sin()) as i16)
            .collect()
    }

    /// `lead` frames of silence, `voiced` frames of tone, `tail` frames of silence.
    fn clip(lead: usize, voiced: usize, tail: usize) -> Arc<Clip> {
        let mut pcm = vec![0; lead * 160];
        pcm.extend(tone(voiced * 160));
        pcm.extend(vec![0; tail * 160]);
        Arc::new(Clip::from_pcm("c", pcm).expect("clip"))
    }

    fn scenario(steps: Vec<Step>, repeat: bool) -> Arc<Scenario> {
        Arc::new(Scenario {
            name: "t".into(),
            parameters: BTreeMap::new(),
            from: String::new(),
            to: String::new(),
            steps,
            repeat,
            answer_timeout: ms(1_000),
            personas: None,
        })
    }

    fn caller(kind: CarrierKind, chunk_ms: u32, steps: Vec<Step>, repeat: bool) -> Caller {
        let stream = CarrierStream::new(kind, 1, chunk_ms).expect("stream");
        Caller::new(
            stream,
            scenario(steps, repeat),
            BTreeMap::new(),
            None,
            Arc::new(LiveCounters::default()),
            CallOptions::default(),
        )
    }

    fn tick(c: &mut Caller, at_ms: u64) -> (Flow, Vec<Value>) {
        let mut out = Vec::new();
        let flow = c.tick(ms(at_ms), &mut out);
        (flow, parsed(out))
    }

    fn parsed(out: Vec<String>) -> Vec<Value> {
        out.iter()
            .map(|t| serde_json::from_str(t).expect("JSON"))
            .collect()
    }

    fn gateway(c: &mut Caller, at_ms: u64, message: Value) -> Vec<Value> {
        let mut out = Vec::new();
        c.on_text(ms(at_ms), &message.to_string(), &mut out);
        parsed(out)
    }

    /// The stream id of call 1 (every caller here).
    fn sid() -> String {
        CarrierStream::new(CarrierKind::Twilio, 1, 20)
            .expect("stream")
            .stream_sid()
            .to_string()
    }

    fn media(audio_ms: usize) -> Value {
        let bytes = vec![0xFFu8; audio_ms * 8];
        json!({"event":"media","streamSid":sid(),"media":{"payload":B64.encode(bytes)}})
    }

    fn mark(name: &str) -> Value {
        json!({"event":"mark","streamSid":sid(),"mark":{"name":name}})
    }

    fn echoed(out: &[Value]) -> Vec<String> {
        out.iter()
            .filter(|m| m["event"] == "mark")
            .map(|m| m["mark"]["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn events(c: &Caller) -> Vec<(u64, Event)> {
        c.timeline
            .events
            .iter()
            .map(|e| (e.at_us, e.event.clone()))
            .collect()
    }

    #[test]
    fn exotel_batches_stamp_speech_at_its_frame() {
        let kind = CarrierKind::Exotel { sample_rate: 8_000 };
        let steps = vec![
            Step::Say {
                clip: clip(7, 10, 3),
                expect_reply: true,
            },
            Step::Hangup,
        ];
        let mut c = caller(kind, 100, steps, false);
        let mut sent = Vec::new();
        for k in 1..=20 {
            let (flow, out) = tick(&mut c, 20 * k);
            assert_eq!(flow, Flow::Continue);
            sent.extend(out.into_iter().map(|m| (k, m)));
        }
        // Four 100 ms messages, on ticks 5, 10, 15, 20.
        assert_eq!(
            sent.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [5, 10, 15, 20]
        );
        assert_eq!(c.frames_sent, 4);
        // Onset (frame 7) is the third frame of the message sent at 200 ms: 200 − 40 ms.
        // The last voiced frame (16) goes in the message sent at 400 ms.
        assert_eq!(
            events(&c),
            [
                (
                    160_000,
                    Event::SpeechStart {
                        turn: 1,
                        barge_in: false
                    }
                ),
                (
                    400_000,
                    Event::SpeechEnd {
                        turn: 1,
                        barge_in: false,
                        expect_reply: true
                    }
                ),
            ]
        );
        assert_eq!(c.awaiting_answer, Some(ms(400)));
        assert_eq!(tick(&mut c, 420).0, Flow::HangUp);
    }

    #[test]
    fn playback_echoes_marks_when_played_and_clear_flushes_them() {
        let mut c = caller(
            CarrierKind::Twilio,
            20,
            vec![Step::Pause(ms(10_000))],
            false,
        );
        tick(&mut c, 0);
        assert!(gateway(&mut c, 10, media(100)).is_empty());
        assert!(gateway(&mut c, 10, mark("m1")).is_empty());
        assert!(gateway(&mut c, 15, media(100)).is_empty());
        assert!(gateway(&mut c, 15, mark("m2")).is_empty());
        assert!(echoed(&tick(&mut c, 100).1).is_empty());
        assert_eq!(echoed(&tick(&mut c, 120).1), ["m1"]);
        assert!(echoed(&tick(&mut c, 200).1).is_empty());
        assert_eq!(
            echoed(&gateway(
                &mut c,
                205,
                json!({"event":"clear","streamSid":sid()})
            )),
            ["m2"]
        );
        // A mark with nothing queued is echoed at once.
        assert_eq!(echoed(&gateway(&mut c, 250, mark("m3"))), ["m3"]);
        // 40 ms of audio at 300 ms drains at 340 ms (recorded at that time, found later).
        gateway(&mut c, 300, media(40));
        tick(&mut c, 360);
        let voiced = None;
        assert_eq!(
            events(&c),
            [
                (
                    10_000,
                    Event::BotMedia {
                        audio_us: 100_000,
                        voiced_offset_us: voiced,
                        queued_us: 0
                    }
                ),
                (10_000, Event::BotMark { name: "m1".into() }),
                (
                    15_000,
                    Event::BotMedia {
                        audio_us: 100_000,
                        voiced_offset_us: voiced,
                        queued_us: 95_000
                    }
                ),
                (15_000, Event::BotMark { name: "m2".into() }),
                (205_000, Event::BotClear { dropped_us: 5_000 }),
                (250_000, Event::BotMark { name: "m3".into() }),
                (
                    300_000,
                    Event::BotMedia {
                        audio_us: 40_000,
                        voiced_offset_us: voiced,
                        queued_us: 0
                    }
                ),
                (340_000, Event::PlaybackDrained),
            ]
        );
        assert_eq!(c.marks_echoed, 3);
        // Echoes are numbered after the media frames.
        let (_, out) = tick(&mut c, 380);
        assert_eq!(out[0]["sequenceNumber"], "9");
    }

    #[test]
    fn drain_is_recorded_before_later_audio() {
        let mut c = caller(
            CarrierKind::Twilio,
            20,
            vec![Step::Pause(ms(10_000))],
            false,
        );
        gateway(&mut c, 0, media(20));
        gateway(&mut c, 30, media(20));
        let kinds: Vec<(u64, bool)> = events(&c)
            .into_iter()
            .map(|(at, e)| (at, e == Event::PlaybackDrained))
            .collect();
        assert_eq!(kinds, [(0, false), (20_000, true), (30_000, false)]);
    }

    #[test]
    fn wait_for_bot_ends_when_the_bot_is_quiet() {
        let steps = vec![
            Step::WaitForBot { timeout: ms(5_000) },
            Step::Dtmf {
                digits: "12".into(),
                gap: ms(40),
                expect_reply: true,
            },
            Step::Hangup,
        ];
        let mut c = caller(CarrierKind::Twilio, 20, steps, false);
        tick(&mut c, 0);
        gateway(&mut c, 100, media(200));
        // Played until 300 ms; quiet 500 ms after the last audio arrived (600 ms).
        let mut first_digit = None;
        for k in 1..=40 {
            let (_, out) = tick(&mut c, 20 * k);
            if out.iter().any(|m| m["event"] == "dtmf") && first_digit.is_none() {
                first_digit = Some(20 * k);
            }
        }
        assert_eq!(first_digit, Some(600));
        let dtmf: Vec<(u64, Event)> = events(&c)
            .into_iter()
            .filter(|(_, e)| matches!(e, Event::DtmfSent { .. }))
            .collect();
        assert_eq!(
            dtmf,
            [(
                640_000,
                Event::DtmfSent {
                    turn: 1,
                    digits: "12".into(),
                    expect_reply: true
                }
            )]
        );
    }

    #[test]
    fn wait_for_bot_gives_up_at_its_timeout() {
        let steps = vec![Step::WaitForBot { timeout: ms(100) }, Step::Hangup];
        let mut c = caller(CarrierKind::Twilio, 20, steps, false);
        assert_eq!(tick(&mut c, 0).0, Flow::Continue);
        assert_eq!(tick(&mut c, 80).0, Flow::Continue);
        assert_eq!(tick(&mut c, 100).0, Flow::HangUp);
    }

    #[test]
    fn barge_in_cuts_in_after_the_bot_has_played_a_while() {
        let steps = vec![
            Step::BargeIn {
                clip: clip(0, 2, 0),
                after: ms(60),
            },
            Step::Hangup,
        ];
        let mut c = caller(CarrierKind::Twilio, 20, steps, false);
        tick(&mut c, 0);
        tick(&mut c, 20);
        gateway(&mut c, 30, media(500));
        for k in 2..=5 {
            tick(&mut c, 20 * k);
        }
        let (flow, _) = tick(&mut c, 120);
        assert_eq!(flow, Flow::Continue);
        let speech: Vec<(u64, Event)> = events(&c)
            .into_iter()
            .filter(|(_, e)| matches!(e, Event::SpeechStart { .. } | Event::SpeechEnd { .. }))
            .collect();
        // Playing since 30 ms; at the 100 ms tick 70 ms had played: the clip starts there.
        assert_eq!(
            speech,
            [
                (
                    100_000,
                    Event::SpeechStart {
                        turn: 1,
                        barge_in: true
                    }
                ),
                (
                    120_000,
                    Event::SpeechEnd {
                        turn: 1,
                        barge_in: true,
                        expect_reply: true
                    }
                ),
            ]
        );
    }

    #[test]
    fn barge_in_without_bot_audio_is_skipped() {
        let steps = vec![
            Step::BargeIn {
                clip: clip(0, 2, 0),
                after: ms(60),
            },
            Step::Hangup,
        ];
        let mut c = caller(CarrierKind::Twilio, 20, steps, false);
        assert_eq!(tick(&mut c, 0).0, Flow::Continue);
        assert_eq!(tick(&mut c, 980).0, Flow::Continue);
        assert_eq!(tick(&mut c, 1_000).0, Flow::HangUp);
        assert!(events(&c).is_empty());
    }

    #[test]
    fn steps_repeat_or_end() {
        let mut once = caller(CarrierKind::Twilio, 20, vec![Step::Pause(ms(40))], false);
        assert_eq!(tick(&mut once, 0).0, Flow::Continue);
        assert_eq!(tick(&mut once, 40).0, Flow::HangUp);
        let mut again = caller(CarrierKind::Twilio, 20, vec![Step::Pause(ms(40))], true);
        for k in 0..10 {
            assert_eq!(tick(&mut again, 20 * k).0, Flow::Continue);
        }
        // Steps that take no time do not spin: the frame still goes out.
        let mut instant = caller(
            CarrierKind::Twilio,
            20,
            vec![Step::WaitForBot {
                timeout: Duration::ZERO,
            }],
            true,
        );
        let (flow, out) = tick(&mut instant, 0);
        assert_eq!(flow, Flow::Continue);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["event"], "media");
        // No steps at all: hang up.
        let mut empty = caller(CarrierKind::Twilio, 20, vec![], true);
        assert_eq!(tick(&mut empty, 0).0, Flow::HangUp);
    }

    #[test]
    fn persona_hears_the_bot_and_speaks_its_lines() {
        let (input_tx, mut input_rx) = tokio::sync::mpsc::channel(64);
        let (output_tx, output_rx) = tokio::sync::mpsc::channel(8);
        let stream = CarrierStream::new(CarrierKind::Twilio, 1, 20).expect("stream");
        let mut c = Caller::new(
            stream,
            scenario(vec![Step::Persona { max_turns: 1 }, Step::Hangup], false),
            BTreeMap::new(),
            Some(PersonaLink {
                input: input_tx,
                output: output_rx,
            }),
            Arc::new(LiveCounters::default()),
            CallOptions::default(),
        );
        tick(&mut c, 0);
        gateway(&mut c, 0, media(100));
        for k in 1..=5 {
            tick(&mut c, 20 * k);
        }
        let mut heard = 0;
        while let Ok(PersonaInput::BotAudio(pcm)) = input_rx.try_recv() {
            heard += pcm.len();
        }
        assert_eq!(heard, 800);
        // Quiet 500 ms after the audio arrived.
        tick(&mut c, 480);
        assert!(input_rx.try_recv().is_err());
        tick(&mut c, 500);
        assert_eq!(input_rx.try_recv(), Ok(PersonaInput::BotQuiet));
        output_tx
            .try_send(PersonaOutput::Say {
                clip: clip(1, 2, 1),
                text: "hello".into(),
            })
            .expect("say");
        for k in 26..=29 {
            assert_eq!(tick(&mut c, 20 * k).0, Flow::Continue);
        }
        // One reply of the allowed one: the step ends, the scenario hangs up.
        assert_eq!(tick(&mut c, 600).0, Flow::HangUp);
        let speech: Vec<Event> = events(&c)
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| matches!(e, Event::SpeechStart { .. } | Event::SpeechEnd { .. }))
            .collect();
        assert_eq!(
            speech,
            [
                Event::SpeechStart {
                    turn: 1,
                    barge_in: false
                },
                Event::SpeechEnd {
                    turn: 1,
                    barge_in: false,
                    expect_reply: true
                }
            ]
        );
    }

    #[test]
    fn persona_hears_only_what_played_before_a_clear() {
        let (input_tx, mut input_rx) = tokio::sync::mpsc::channel(64);
        let (_output_tx, output_rx) = tokio::sync::mpsc::channel(8);
        let stream = CarrierStream::new(CarrierKind::Twilio, 1, 20).expect("stream");
        let mut c = Caller::new(
            stream,
            scenario(vec![Step::Pause(ms(10_000))], false),
            BTreeMap::new(),
            Some(PersonaLink {
                input: input_tx,
                output: output_rx,
            }),
            Arc::new(LiveCounters::default()),
            CallOptions::default(),
        );
        gateway(&mut c, 0, media(100));
        gateway(&mut c, 0, media(100));
        tick(&mut c, 20);
        gateway(&mut c, 50, json!({"event":"clear","streamSid":sid()}));
        for k in 3..=15 {
            tick(&mut c, 20 * k);
        }
        let mut heard = 0;
        while let Ok(input) = input_rx.try_recv() {
            if let PersonaInput::BotAudio(pcm) = input {
                heard += pcm.len();
            }
        }
        // 50 ms of the 200 ms played: 400 samples at 8 kHz.
        assert_eq!(heard, 400);
        assert_eq!(c.persona_dropped, 0);
    }

    #[test]
    fn persona_hang_up_ends_the_call() {
        let (input_tx, _input_rx) = tokio::sync::mpsc::channel(1);
        let (output_tx, output_rx) = tokio::sync::mpsc::channel(8);
        let stream = CarrierStream::new(CarrierKind::Twilio, 1, 20).expect("stream");
        let mut c = Caller::new(
            stream,
            scenario(vec![Step::Persona { max_turns: 5 }], false),
            BTreeMap::new(),
            Some(PersonaLink {
                input: input_tx,
                output: output_rx,
            }),
            Arc::new(LiveCounters::default()),
            CallOptions::default(),
        );
        assert_eq!(tick(&mut c, 0).0, Flow::Continue);
        // The persona's queue holds one message: the rest of the bot's audio is dropped,
        // never waited for.
        gateway(&mut c, 0, media(200));
        for k in 1..=10 {
            tick(&mut c, 20 * k);
        }
        assert!(c.persona_dropped > 0);
        output_tx
            .try_send(PersonaOutput::HangUp {
                reason: "patience".into(),
            })
            .expect("hang up");
        assert_eq!(tick(&mut c, 220).0, Flow::HangUp);
    }

    #[test]
    fn live_counts_answered_and_unanswered_turns() {
        let steps = vec![
            Step::Dtmf {
                digits: "1".into(),
                gap: ms(20),
                expect_reply: true,
            },
            Step::Pause(ms(1_500)),
            Step::Dtmf {
                digits: "2".into(),
                gap: ms(20),
                expect_reply: true,
            },
            Step::Pause(ms(5_000)),
        ];
        let mut c = caller(CarrierKind::Twilio, 20, steps, false);
        tick(&mut c, 0);
        gateway(&mut c, 100, media(20));
        gateway(&mut c, 120, media(20));
        assert_eq!(c.live.turns.load(std::sync::atomic::Ordering::Relaxed), 1);
        // The second digit at 1.5 s gets no answer; after the 1 s answer timeout it counts as
        // an error.
        tick(&mut c, 1_500);
        tick(&mut c, 2_500);
        assert_eq!(c.live.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
        tick(&mut c, 2_520);
        assert_eq!(c.live.errors.load(std::sync::atomic::Ordering::Relaxed), 1);
        tick(&mut c, 3_000);
        assert_eq!(c.live.errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn urls_are_split_and_signed_as_carriers_do() {
        assert_eq!(
            split_userinfo("wss://KEY:TOK@gw.example.com:8443/stream/exotel?sample-rate=16000"),
            (
                "wss://gw.example.com:8443/stream/exotel?sample-rate=16000".to_string(),
                Some("KEY:TOK".to_string())
            )
        );
        assert_eq!(
            split_userinfo("ws://127.0.0.1:9/s"),
            ("ws://127.0.0.1:9/s".to_string(), None)
        );
        assert_eq!(split_userinfo("nonsense"), ("nonsense".to_string(), None));
        assert_eq!(basic_credentials("KEY:TOK"), b"KEY:TOK");
        assert_eq!(basic_credentials("a%40b%3Ac:p%2Fq%3A%25"), b"a@b:c:p/q:%");
        assert_eq!(basic_credentials("KEY"), b"KEY:");
        assert_eq!(
            basic_credentials("%ZZ:%"),
            b"%ZZ:%",
            "bad escapes stay as written"
        );
        assert_eq!(
            twilio_signed_url("ws://127.0.0.1:9/stream/twilio#x"),
            "wss://127.0.0.1:9/stream/twilio"
        );
        assert_eq!(twilio_signed_url("ws://h"), "wss://h/");
        assert_eq!(twilio_signed_url("ws://h?a=1"), "wss://h/?a=1");
    }
}
