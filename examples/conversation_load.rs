//! Conversation latency benchmark: concurrent Twilio calls talking to the `llm` agent, with
//! the providers replaced by local fakes at fixed delays, so that what is left of each
//! response is the gateway's own work.
//!
//! For every run it starts, in this process and on 127.0.0.1 only:
//!
//! - the Deepgram live STT fake (`tests/fakes/deepgram_listen.rs`): it finalizes a segment
//!   after **300 ms** of received silence (the gateway asks `endpointing=300`) and gives every
//!   speech segment the fixture's transcript;
//! - the OpenAI chat fake (`tests/fakes/openai_chat.rs`): first token after **200 ms**, then
//!   2 ms per token; any user text gets the same short two-sentence answer;
//! - the Deepgram Aura TTS fake (`tests/fakes/deepgram_speak.rs`): first audio byte
//!   **120 ms** after each `Flush`;
//!
//! then the gateway — by default as a child process (`voicegw serve --config FILE`, keys in
//! `DEEPGRAM_API_KEY` / `OPENAI_API_KEY`, `OPENAI_BASE_URL` pointing at the chat fake and the
//! two Deepgram base URLs in the config file, since `DEEPGRAM_BASE_URL` would send STT and
//! TTS to the same server), so that its CPU and RSS can be read from `/proc/PID` apart from
//! the fakes and the client; or in this process with `--in-process`. The config file turns
//! the greeting off (`[conversation] greeting = ""`) and, for the speculation-off runs, sets
//! `[turn] speculate_after_ms = 0`.
//!
//! Then `N` carrier calls (Twilio media streams, 20 ms μ-law frames sent on the clock, bot
//! audio played back in real time, marks echoed when played, `clear` honoured) are ramped up
//! over `--ramp` seconds and run for `--duration` seconds more. Each caller, in a loop, says
//! the fixture (`caller_question.wav`), waits for the answer, lets it play out, stays silent
//! 1.5 s and speaks again. With `--barge-in` every second answer is interrupted 800 ms after
//! its first audio with `caller_interrupt.wav`.
//!
//! Measured on the client, over the steady phase (after the ramp):
//!
//! - **response**: end of the caller's speech → first media message of the next bot
//!   utterance received (an utterance is known by the mark `u{N}c0` that follows its first
//!   chunk). The end of speech is the end of the fixture's voiced audio (the last 20 ms
//!   window at or above the STT fake's −40 dBFS threshold; the rest of the file is trailing
//!   silence), taken at the moment the message holding it was sent. A question during which
//!   a bot utterance starts is counted apart and not measured;
//! - **gateway share** (speculation-off runs): response − (300 + 200 + 120 ms), the fakes'
//!   fixed delays. It is an upper bound of what the gateway adds: it also holds the fakes'
//!   own work (the STT fake only sees silence once the gateway has forwarded it; a few 2 ms
//!   tokens before the first clause is complete), loopback hops and the client's own delays;
//! - **barge-in**: onset of the interrupting speech → `clear` received; then the answer to
//!   the interruption (end of its voiced audio → next bot utterance). `caller_interrupt.wav`
//!   pauses 360 ms after "Wait," so, with 300 ms endpointing, the recognizer ends a turn
//!   there and the gateway may answer while the caller goes on: such utterances are counted;
//! - calls that failed to connect or were dropped, unanswered turns, the client's tick
//!   lateness (a saturated machine shows here first), and the gateway's CPU (% of one core)
//!   and RSS when it is a child process, with this process's CPU (client + fakes) and the
//!   machine's.
//!
//! At the end of each run the gateway's `/metrics` is scraped (stage histograms: count, mean,
//! bucket bounds of p50/p95) and its log is summarized (CallEvent counts, warnings, errors).
//!
//! Each configuration runs twice, speculation on (the default) and off, unless
//! `--speculation on|off` picks one. `--calls` takes a list, so one command does the 1-call
//! and the 500-call runs:
//!
//! ```text
//! cargo build --release --bin voicegw --example conversation_load
//! # 1 call and 500 calls, speculation on and off (4 runs of about 45 + 10 s each):
//! target/release/examples/conversation_load --calls 1,500 --duration 45 --ramp 10
//! # the same with barge-in turns:
//! target/release/examples/conversation_load --calls 1,500 --duration 45 --ramp 10 --barge-in
//! # shortcuts: --scenario single (1 call), load (500), full (1 and 500)
//! target/release/examples/conversation_load --scenario full
//! # the largest count a 2-core machine carries unsaturated (client, fakes and gateway
//! # share it; 500 calls saturate it), with barge-in turns:
//! target/release/examples/conversation_load --calls 1,200 --duration 45 --ramp 10 --barge-in
//! # the gateway in this process instead of a child:
//! target/release/examples/conversation_load --scenario single --in-process
//! ```
//!
//! Watch `client tick late` and `machine busy` in the report: once the machine is saturated
//! the latencies measure the queueing for CPU, not the gateway. A single call has no ramp;
//! its first turn (and, with a ramp, the first turns of the last calls started) includes
//! opening the call's TTS socket. `--log-dir DIR` keeps the config files and gateway logs.
//!
//! With `CARGO_TARGET_DIR` set, the binaries are under that directory; `--gateway-bin`
//! defaults to the `voicegw` next to this example's own directory, else
//! `target/release/voicegw`. Loopback only; every run ends by itself after its ramp and
//! duration (plus a few seconds to start and stop the gateway).

#[path = "../tests/fakes/mod.rs"]
mod fakes;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use fakes::deepgram_listen::{FakeListen, ListenConfig};
use fakes::deepgram_speak::{FakeDeepgramSpeak, FakeSpeakConfig};
use fakes::openai_chat::{ChatFake, ChatFakeConfig, Reply};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use voicegw::audio::Encoding;
use voicegw::audio::linear16::{dbfs, rms};

/// STT fake: silence (ms) after which a segment is finalized.
const STT_ENDPOINTING_MS: u64 = 300;
/// LLM fake: delay (ms) before the first token.
const LLM_FIRST_TOKEN_MS: u64 = 200;
/// LLM fake: delay (ms) between later tokens.
const LLM_TOKEN_MS: u64 = 2;
/// TTS fake: delay (ms) from a flush to the first audio byte.
const TTS_FIRST_BYTE_MS: u64 = 120;
/// The fakes' fixed delays on the path from end of speech to first audio.
const FAKES_FLOOR_MS: i64 = (STT_ENDPOINTING_MS + LLM_FIRST_TOKEN_MS + TTS_FIRST_BYTE_MS) as i64;
/// What the model answers to anything.
const ANSWER: &str = "We open at eight tomorrow. See you then!";
/// Caller fixture used to interrupt the bot.
const INTERRUPT_FIXTURE: &str = "caller_interrupt.wav";
/// Time into the bot's answer at which the caller talks over it.
const BARGE_AFTER: Duration = Duration::from_millis(800);
/// The caller's silence after an answer has played out.
const PAUSE: Duration = Duration::from_millis(1500);
/// No bot audio for this long (and nothing left to play) ends an answer.
const ANSWER_DONE_GAP: Duration = Duration::from_millis(500);
/// A turn without any bot audio this long after the caller's audio ended is unanswered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Carrier message length (Twilio): 20 ms of 8 kHz μ-law.
const FRAME_MS: u64 = 20;
/// Samples per carrier message.
const FRAME_SAMPLES: usize = 160;
/// Twilio stream id used by every call (each call is its own connection).
const SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

/// Command-line settings.
#[derive(Debug, Clone)]
struct Args {
    /// Call counts, one set of runs each.
    calls: Vec<usize>,
    /// Steady phase after the ramp.
    duration: Duration,
    /// Time over which calls are started.
    ramp: Duration,
    /// Interrupt every second answer.
    barge_in: bool,
    /// Speculation settings to run (`true` = on).
    speculation: Vec<bool>,
    /// The gateway binary for child-process runs.
    gateway_bin: PathBuf,
    /// Run the gateway inside this process.
    in_process: bool,
    /// The caller's utterance (a file of `fixtures/audio`).
    fixture: String,
    /// What the STT fake hears in it.
    transcript: String,
    /// Where config files and gateway logs go (default: a temporary directory, removed).
    log_dir: Option<PathBuf>,
}

const USAGE: &str = "usage: conversation_load [--scenario single|load|full] [--calls N[,N…]] \
[--duration S] [--ramp S] [--barge-in] [--speculation on|off|both] [--gateway-bin PATH] \
[--in-process] [--fixture FILE.wav --transcript TEXT] [--log-dir DIR]";

fn default_gateway_bin() -> PathBuf {
    // <target>/release/examples/conversation_load → <target>/release/voicegw
    let sibling = std::env::current_exe().ok().and_then(|exe| {
        let bin = exe.parent()?.parent()?.join("voicegw");
        bin.is_file().then_some(bin)
    });
    sibling.unwrap_or_else(|| PathBuf::from("target/release/voicegw"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        calls: vec![1],
        duration: Duration::from_secs(45),
        ramp: Duration::from_secs(10),
        barge_in: false,
        speculation: vec![true, false],
        gateway_bin: default_gateway_bin(),
        in_process: false,
        fixture: "caller_question.wav".into(),
        transcript: "Can you tell me what time you open tomorrow?".into(),
        log_dir: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        match flag.as_str() {
            "--barge-in" => {
                args.barge_in = true;
                continue;
            }
            "--in-process" => {
                args.in_process = true;
                continue;
            }
            "--help" | "-h" => return Err("help".into()),
            _ => {}
        }
        let value = argv.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--scenario" => {
                args.calls = match value.as_str() {
                    "single" => vec![1],
                    "load" => vec![500],
                    "full" => vec![1, 500],
                    other => return Err(format!("--scenario: single, load or full, not {other}")),
                }
            }
            "--calls" => {
                args.calls = value
                    .split(',')
                    .map(|v| number(v).map(|n| n as usize))
                    .collect::<Result<_, _>>()?;
                if args.calls.contains(&0) {
                    return Err("--calls: counts must be at least 1".into());
                }
            }
            "--duration" => args.duration = Duration::from_secs(number(&value)?.max(1)),
            "--ramp" => args.ramp = Duration::from_secs(number(&value)?),
            "--speculation" => {
                args.speculation = match value.as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![true, false],
                    other => return Err(format!("--speculation: on, off or both, not {other}")),
                }
            }
            "--gateway-bin" => args.gateway_bin = PathBuf::from(value),
            "--fixture" => args.fixture = value,
            "--transcript" => args.transcript = value,
            "--log-dir" => args.log_dir = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// One caller utterance, pre-encoded as Twilio payloads.
struct Utterance {
    /// Base64 μ-law payload of each 20 ms message.
    frames: Vec<String>,
    /// First message with voiced audio.
    onset_frame: usize,
    /// Last message with voiced audio.
    end_frame: usize,
}

impl Utterance {
    /// Splits `pcm` into messages and finds its voiced span: 20 ms windows whose RMS is at
    /// or above `threshold_dbfs` (the STT fake's own speech test).
    fn new(pcm: &[i16], threshold_dbfs: f32) -> Result<Utterance, String> {
        let voiced: Vec<bool> = pcm
            .chunks(FRAME_SAMPLES)
            .map(|w| dbfs(rms(w)) >= threshold_dbfs)
            .collect();
        let onset_frame = voiced
            .iter()
            .position(|v| *v)
            .ok_or("the fixture has no voiced audio")?;
        let end_frame = voiced.iter().rposition(|v| *v).unwrap_or(onset_frame);
        let frames = pcm
            .chunks(FRAME_SAMPLES)
            .map(|chunk| {
                let mut padded = chunk.to_vec();
                padded.resize(FRAME_SAMPLES, 0);
                let mut bytes = Vec::with_capacity(FRAME_SAMPLES);
                Encoding::Mulaw.encode_into(&padded, &mut bytes);
                B64.encode(bytes)
            })
            .collect();
        Ok(Utterance {
            frames,
            onset_frame,
            end_frame,
        })
    }

    fn len_ms(&self) -> u64 {
        self.frames.len() as u64 * FRAME_MS
    }

    fn onset_ms(&self) -> u64 {
        self.onset_frame as u64 * FRAME_MS
    }

    fn voiced_end_ms(&self) -> u64 {
        (self.end_frame as u64 + 1) * FRAME_MS
    }
}

/// Everything the callers send.
struct Audio {
    question: Utterance,
    interrupt: Utterance,
    silence: String,
}

impl Audio {
    fn utterance(&self, kind: Kind) -> &Utterance {
        match kind {
            Kind::Question => &self.question,
            Kind::Interrupt => &self.interrupt,
        }
    }
}

fn load_fixture(name: &str) -> Result<Vec<i16>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audio")
        .join(name);
    let mut reader =
        hound::WavReader::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = reader.spec();
    if spec.sample_rate != 8000 || spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(format!(
            "{}: need 8 kHz mono 16-bit PCM, got {spec:?}",
            path.display()
        ));
    }
    reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What one caller says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The fixture: a question the bot answers.
    Question,
    /// Talking over the bot's answer.
    Interrupt,
}

/// What the simulated caller is doing.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Silent until the given time.
    Pausing(Instant),
    /// Sending message `n` of an utterance.
    Speaking(Kind, usize),
    /// The utterance is over and no answer has come yet (since when).
    Waiting(Instant),
    /// The answer plays.
    Listening,
}

/// A turn whose answer has not started yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// End of the caller's voiced audio.
    speech_end: Instant,
    kind: Kind,
    /// Inside the measurement window.
    counted: bool,
}

/// What one call saw (turn counts and samples only inside the measurement window).
#[derive(Debug, Default)]
struct CallReport {
    connect_error: Option<String>,
    dropped: Option<String>,
    frames_sent: u64,
    bot_media: u64,
    bot_utterances: u64,
    marks_echoed: u64,
    clears: u64,
    /// `clear`s that answer no interruption of ours (the gateway cancelling its own audio).
    other_clears: u64,
    violations: u64,
    /// Questions said to the end of their voiced audio.
    turns: u64,
    answered: u64,
    unanswered: u64,
    /// Questions during which a bot utterance started (not measured).
    overlapped_turns: u64,
    /// Interruptions during which, after the `clear`, a bot utterance started.
    overlapped_after_barge: u64,
    unanswered_after_barge: u64,
    /// Bot utterances that started while the caller was pausing between turns.
    unsolicited_utterances: u64,
    barge_attempts: u64,
    barge_missed: u64,
    response_ms: Vec<u32>,
    after_barge_ms: Vec<u32>,
    barge_ms: Vec<u32>,
    lateness_ms: Vec<u32>,
}

impl CallReport {
    fn merge(&mut self, other: CallReport) {
        self.frames_sent += other.frames_sent;
        self.bot_media += other.bot_media;
        self.bot_utterances += other.bot_utterances;
        self.marks_echoed += other.marks_echoed;
        self.clears += other.clears;
        self.other_clears += other.other_clears;
        self.violations += other.violations;
        self.turns += other.turns;
        self.answered += other.answered;
        self.unanswered += other.unanswered;
        self.overlapped_turns += other.overlapped_turns;
        self.overlapped_after_barge += other.overlapped_after_barge;
        self.unanswered_after_barge += other.unanswered_after_barge;
        self.unsolicited_utterances += other.unsolicited_utterances;
        self.barge_attempts += other.barge_attempts;
        self.barge_missed += other.barge_missed;
        self.response_ms.extend(other.response_ms);
        self.after_barge_ms.extend(other.after_barge_ms);
        self.barge_ms.extend(other.barge_ms);
        self.lateness_ms.extend(other.lateness_ms);
    }
}

/// Twilio's side of one media stream.
struct Twilio {
    seq: u64,
}

impl Twilio {
    fn opening(&mut self, index: usize) -> [String; 2] {
        self.seq = 1;
        [
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_string(),
            format!(
                r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"AC0123456789abcdef0123456789abcdef","streamSid":"{SID}","callSid":"CA{index:032x}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{}}}},"streamSid":"{SID}"}}"#
            ),
        ]
    }

    fn media(&mut self, payload: &str) -> String {
        self.seq += 1;
        let (chunk, ts) = (self.seq - 1, (self.seq - 2) * FRAME_MS);
        format!(
            r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{ts}","payload":"{payload}"}},"streamSid":"{SID}"}}"#,
            self.seq
        )
    }

    fn mark(&mut self, name: &str) -> String {
        self.seq += 1;
        format!(
            r#"{{"event":"mark","sequenceNumber":"{}","streamSid":"{SID}","mark":{{"name":"{name}"}}}}"#,
            self.seq
        )
    }

    fn stop(&mut self) -> String {
        self.seq += 1;
        format!(
            r#"{{"event":"stop","sequenceNumber":"{}","stop":{{"accountSid":"AC1","callSid":"CA1"}},"streamSid":"{SID}"}}"#,
            self.seq
        )
    }
}

/// The text after `key` up to the next quote (enough for the gateway's flat JSON).
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.split(key)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
}

/// When a call runs and which part of it is measured.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    until: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.until
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Whether a mark name (`u{utterance}c{chunk}`) is the first chunk of a bot utterance.
fn first_chunk_mark(name: &str) -> bool {
    name.strip_prefix('u')
        .and_then(|rest| rest.split_once('c'))
        .is_some_and(|(utterance, chunk)| {
            chunk == "0" && !utterance.is_empty() && utterance.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The simulated caller's state between messages.
struct Caller {
    phase: Phase,
    pending: Option<Pending>,
    /// Question turns started.
    turn: u64,
    /// The voiced audio of the current utterance has ended.
    speech_over: bool,
    /// The interruption in progress got its `clear`.
    cleared: bool,
    /// A bot utterance started while the caller was still speaking (not the answer being
    /// interrupted).
    overlap: bool,
    barge_at: Option<Instant>,
    barge_onset: Option<Instant>,
    last_bot_audio: Instant,
}

impl Caller {
    /// A bot utterance whose first audio arrived at `at` (its `c0` mark follows that media
    /// message on the socket).
    fn utterance_started(
        &mut self,
        at: Instant,
        barge_in: bool,
        window: Window,
        report: &mut CallReport,
    ) {
        report.bot_utterances += 1;
        if let Some(p) = self.pending.take() {
            let latency = ms(at.duration_since(p.speech_end));
            if p.counted {
                match p.kind {
                    Kind::Question => {
                        report.response_ms.push(latency);
                        report.answered += 1;
                    }
                    Kind::Interrupt => report.after_barge_ms.push(latency),
                }
            }
            // Every second answer is interrupted.
            if p.kind == Kind::Question && barge_in && self.turn.is_multiple_of(2) {
                self.barge_at = Some(at + BARGE_AFTER);
            }
            if matches!(self.phase, Phase::Waiting(_)) {
                self.phase = Phase::Listening;
            }
            return;
        }
        match self.phase {
            Phase::Speaking(kind, _)
                if !self.speech_over && (kind == Kind::Question || self.cleared) =>
            {
                self.overlap = true;
            }
            Phase::Pausing(_) if window.contains(at) => report.unsolicited_utterances += 1,
            _ => {}
        }
    }

    /// The payload for the tick at `now`, advancing the caller.
    fn tick<'a>(
        &mut self,
        now: Instant,
        audio: &'a Audio,
        playback_empty: bool,
        window: Window,
        report: &mut CallReport,
    ) -> &'a str {
        match self.phase {
            Phase::Pausing(at) => {
                if now >= at {
                    self.turn += 1;
                    self.phase = Phase::Speaking(Kind::Question, 0);
                }
                &audio.silence
            }
            Phase::Speaking(kind, n) => {
                let utterance = audio.utterance(kind);
                if n == 0 {
                    self.speech_over = false;
                    self.overlap = false;
                    self.cleared = false;
                }
                if kind == Kind::Interrupt && n == utterance.onset_frame {
                    // The message carries the 20 ms that just ended.
                    self.barge_onset = Some(now - Duration::from_millis(FRAME_MS));
                }
                if n == utterance.end_frame {
                    let counted = window.contains(now);
                    self.speech_over = true;
                    match kind {
                        Kind::Question if counted => {
                            report.turns += 1;
                            if self.overlap {
                                report.overlapped_turns += 1;
                            }
                        }
                        Kind::Interrupt if counted && self.overlap => {
                            report.overlapped_after_barge += 1;
                        }
                        _ => {}
                    }
                    // A question the bot is already answering has no response to measure;
                    // after an interruption the answer is the next utterance in any case.
                    if kind == Kind::Interrupt || !self.overlap {
                        self.pending = Some(Pending {
                            speech_end: now,
                            kind,
                            counted,
                        });
                    }
                }
                if n + 1 == utterance.frames.len() {
                    if kind == Kind::Interrupt
                        && let Some(onset) = self.barge_onset.take()
                        && window.contains(onset)
                    {
                        report.barge_missed += 1;
                    }
                    self.phase = if self.pending.is_some() {
                        Phase::Waiting(now)
                    } else {
                        Phase::Listening
                    };
                } else {
                    self.phase = Phase::Speaking(kind, n + 1);
                }
                &utterance.frames[n]
            }
            Phase::Waiting(since) => {
                if now.duration_since(since) > ANSWER_TIMEOUT {
                    match self.pending.take() {
                        Some(p) if p.counted && p.kind == Kind::Question => report.unanswered += 1,
                        Some(p) if p.counted => report.unanswered_after_barge += 1,
                        _ => {}
                    }
                    self.phase = Phase::Pausing(now + PAUSE);
                }
                &audio.silence
            }
            Phase::Listening => {
                if self.barge_at.is_some_and(|at| now >= at) {
                    self.barge_at = None;
                    if window.contains(now) {
                        report.barge_attempts += 1;
                    }
                    self.phase = Phase::Speaking(Kind::Interrupt, 0);
                } else if self.barge_at.is_none()
                    && playback_empty
                    && now.duration_since(self.last_bot_audio) > ANSWER_DONE_GAP
                {
                    self.phase = Phase::Pausing(now + PAUSE);
                }
                &audio.silence
            }
        }
    }
}

/// One carrier call, until `window.until`.
async fn call(
    index: usize,
    url: String,
    barge_in: bool,
    audio: Arc<Audio>,
    window: Window,
) -> CallReport {
    let mut report = CallReport::default();
    let ws = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((ws, _)) => ws,
        Err(error) => {
            report.connect_error = Some(error.to_string());
            return report;
        }
    };
    let (mut tx, mut rx) = ws.split();
    let mut twilio = Twilio { seq: 0 };
    for opening in twilio.opening(index) {
        if let Err(error) = tx.send(Message::Text(opening.into())).await {
            report.connect_error = Some(error.to_string());
            return report;
        }
    }
    // Spread callers over a few seconds so their turns do not all end together.
    let stagger = Duration::from_millis(500 + (index as u64 * 37) % 3000);
    let mut caller = Caller {
        phase: Phase::Pausing(Instant::now() + stagger),
        pending: None,
        turn: 0,
        speech_over: false,
        cleared: false,
        overlap: false,
        barge_at: None,
        barge_onset: None,
        last_bot_audio: Instant::now(),
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(FRAME_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // Bot audio not yet played: (samples, mark echoed once they have played).
    let mut playback: VecDeque<(usize, Option<String>)> = VecDeque::new();
    loop {
        tokio::select! {
            tick = ticker.tick() => {
                let now = Instant::now();
                if now >= window.until {
                    break;
                }
                if window.contains(now) {
                    report.lateness_ms.push(ms(tick.elapsed()));
                }
                let payload = caller.tick(now, &audio, playback.is_empty(), window, &mut report);
                let frame = twilio.media(payload);
                if let Err(error) = tx.send(Message::Text(frame.into())).await {
                    report.dropped = Some(format!("send: {error}"));
                    return report;
                }
                report.frames_sent += 1;
                // Play one message's worth of bot audio; echo the marks reached.
                let mut budget = FRAME_SAMPLES;
                let mut marks = Vec::new();
                while let Some((samples, mark)) = playback.front_mut() {
                    let take = budget.min(*samples);
                    *samples -= take;
                    budget -= take;
                    if *samples > 0 {
                        break;
                    }
                    if let Some(name) = mark.take() {
                        marks.push(name);
                    }
                    playback.pop_front();
                    if budget == 0 && playback.front().is_some_and(|(s, _)| *s > 0) {
                        break;
                    }
                }
                for name in marks {
                    let echo = twilio.mark(&name);
                    if let Err(error) = tx.send(Message::Text(echo.into())).await {
                        report.dropped = Some(format!("send: {error}"));
                        return report;
                    }
                    report.marks_echoed += 1;
                }
            }
            message = rx.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(frame))) => {
                        report.dropped = Some(match frame {
                            Some(f) => format!("closed by the gateway: {} {}", f.code, f.reason),
                            None => "closed by the gateway".into(),
                        });
                        return report;
                    }
                    Some(Ok(other)) => {
                        report.dropped = Some(format!("unexpected message {other:?}"));
                        return report;
                    }
                    Some(Err(error)) => {
                        report.dropped = Some(format!("receive: {error}"));
                        return report;
                    }
                    None => {
                        report.dropped = Some("connection ended".into());
                        return report;
                    }
                };
                let now = Instant::now();
                if text.contains(r#""event":"media""#) {
                    report.bot_media += 1;
                    let samples = B64
                        .decode(field(&text, r#""payload":""#))
                        .map(|b| b.len())
                        .unwrap_or_else(|_| {
                            report.violations += 1;
                            0
                        });
                    playback.push_back((samples, None));
                    caller.last_bot_audio = now;
                } else if text.contains(r#""event":"mark""#) {
                    let name = field(&text, r#""name":""#).to_string();
                    if first_chunk_mark(&name) {
                        let at = caller.last_bot_audio;
                        caller.utterance_started(at, barge_in, window, &mut report);
                    }
                    playback.push_back((0, Some(name)));
                } else if text.contains(r#""event":"clear""#) {
                    report.clears += 1;
                    caller.cleared = true;
                    match caller.barge_onset.take() {
                        Some(onset) => {
                            if window.contains(onset) {
                                report.barge_ms.push(ms(now.duration_since(onset)));
                            }
                        }
                        None => report.other_clears += 1,
                    }
                    // Unplayed audio is dropped; its marks come back at once.
                    let marks: Vec<String> = playback.drain(..).filter_map(|(_, m)| m).collect();
                    for name in marks {
                        let echo = twilio.mark(&name);
                        if tx.send(Message::Text(echo.into())).await.is_ok() {
                            report.marks_echoed += 1;
                        }
                    }
                } else {
                    report.violations += 1;
                }
            }
        }
    }
    let _ = tx.send(Message::Text(twilio.stop().into())).await;
    let _ = tx.close().await;
    report
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// "p50 / p95 / p99 / max (n=…)" of sorted values.
fn spread<T: Copy + Default + std::fmt::Display>(sorted: &[T]) -> String {
    if sorted.is_empty() {
        return "- (n=0)".into();
    }
    format!(
        "{} / {} / {} / {}  (n={})",
        percentile(sorted, 0.5),
        percentile(sorted, 0.95),
        percentile(sorted, 0.99),
        sorted[sorted.len() - 1],
        sorted.len()
    )
}

/// (utime + stime in clock ticks, RSS in KiB) of a process.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks, rss))
}

/// (busy, total) clock ticks of the whole machine.
fn machine_sample() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Machine CPU busy (% of all cores) between two [`machine_sample`]s.
fn busy_between(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> f64 {
    match (a, b) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * 100.0
        }
        _ => f64::NAN,
    }
}

/// A plain HTTP GET on loopback: (status line, body).
async fn http_get(addr: &str, path: &str) -> Option<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// `(labels, value)` of every sample of `name` (exact family name, no suffix).
fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
                let (labels, value) = rest.split_once('}')?;
                (labels, value)
            } else {
                ("", rest)
            };
            if !value.starts_with(' ') {
                return None;
            }
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// The value of `key` in a Prometheus label set.
fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    labels
        .split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or("")
}

/// Upper bound (ms) of the bucket holding quantile `q` of one stage histogram.
fn stage_quantile_ms(text: &str, stage: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = samples(text, "voicegw_stage_seconds_bucket")
        .into_iter()
        .filter(|(labels, _)| label(labels, "stage") == stage)
        .filter_map(|(labels, count)| {
            let le = label(labels, "le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// The stage histograms and a few counters of a `/metrics` text.
fn metrics_report(text: &str) -> String {
    let mut out = String::new();
    let counts = samples(text, "voicegw_stage_seconds_count");
    let sums = samples(text, "voicegw_stage_seconds_sum");
    if counts.is_empty() {
        out.push_str("  (no stage histograms)\n");
    }
    for (labels, count) in &counts {
        let stage = label(labels, "stage");
        let sum = sums
            .iter()
            .find(|(l, _)| label(l, "stage") == stage)
            .map_or(0.0, |(_, s)| *s);
        let mean = if *count > 0.0 {
            sum / count * 1000.0
        } else {
            f64::NAN
        };
        let _ = writeln!(
            out,
            "  stage {stage:<16} count {count:>6}  mean {mean:>7.1} ms  p50 ≤ {:>5} ms  p95 ≤ {:>5} ms",
            stage_quantile_ms(text, stage, 0.5),
            stage_quantile_ms(text, stage, 0.95),
        );
    }
    for family in [
        "voicegw_calls_ended_total",
        "voicegw_streams_rejected_total",
        "voicegw_provider_calls_total",
        "voicegw_barge_ins_total",
        "voicegw_marks_timed_out_total",
        "voicegw_events_dropped_total",
        "voicegw_bad_frames_total",
    ] {
        let values: Vec<String> = samples(text, family)
            .into_iter()
            .filter(|(_, v)| *v != 0.0)
            .map(|(labels, v)| {
                if labels.is_empty() {
                    format!("{v}")
                } else {
                    format!("{{{labels}}} {v}")
                }
            })
            .collect();
        if !values.is_empty() {
            let _ = writeln!(out, "  {family}: {}", values.join(", "));
        }
    }
    out
}

/// CallEvent counts, warnings and errors of a gateway log written with `--log-format json`.
fn log_report(log: &str) -> String {
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    let mut problems: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut unparsed = 0u64;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            unparsed += 1;
            if unparsed <= 5 {
                *problems
                    .entry(("OTHER".into(), line.chars().take(160).collect()))
                    .or_default() += 1;
            }
            continue;
        };
        let level = entry["level"].as_str().unwrap_or("?");
        let message = entry["fields"]["message"].as_str().unwrap_or("");
        if entry["target"] == "voicegw::events" {
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(message) {
                let kind = event["type"].as_str().unwrap_or("?").to_owned();
                if kind == "call_ended" {
                    let reason = event["reason"].to_string();
                    *ended.entry(reason).or_default() += 1;
                }
                *events.entry(kind).or_default() += 1;
            }
            continue;
        }
        if level == "WARN" || level == "ERROR" {
            let mut fields = entry["fields"].clone();
            if let Some(map) = fields.as_object_mut() {
                map.remove("message");
            }
            let detail: String = format!("{} {message} {fields}", entry["target"])
                .chars()
                .take(220)
                .collect();
            *problems.entry((level.to_owned(), detail)).or_default() += 1;
        }
    }
    let mut out = String::new();
    let list: Vec<String> = events.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "  events: {}", list.join(" "));
    if !ended.is_empty() {
        let list: Vec<String> = ended.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  call_ended reasons: {}", list.join(" "));
    }
    let warns: u64 = problems
        .iter()
        .filter(|((l, _), _)| l == "WARN")
        .map(|(_, n)| n)
        .sum();
    let errors: u64 = problems
        .iter()
        .filter(|((l, _), _)| l == "ERROR")
        .map(|(_, n)| n)
        .sum();
    let _ = writeln!(
        out,
        "  log: {warns} WARN, {errors} ERROR, {unparsed} non-JSON lines"
    );
    let mut top: Vec<_> = problems.into_iter().collect();
    top.sort_by_key(|b| std::cmp::Reverse(b.1));
    for ((level, detail), n) in top.into_iter().take(8) {
        let _ = writeln!(out, "    {n:>6} × {level} {detail}");
    }
    out
}

/// A gateway under test.
enum Gateway {
    /// `voicegw serve` in a child process.
    Child {
        child: tokio::process::Child,
        pid: u32,
        log: PathBuf,
    },
    /// `voicegw::server::Gateway` on this process's runtime.
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), voicegw::server::ServeError>>,
        log: PathBuf,
        log_from: u64,
    },
}

impl Gateway {
    fn pid(&self) -> Option<u32> {
        match self {
            Gateway::Child { pid, .. } => Some(*pid),
            Gateway::InProcess { .. } => None,
        }
    }

    /// Stops the gateway and returns its log of this run.
    async fn stop(self) -> String {
        match self {
            Gateway::Child {
                mut child,
                pid,
                log,
                ..
            } => {
                // SIGTERM: the gateway drains (no call is left by now) and exits.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                    Ok(Ok(status)) if !status.success() => {
                        eprintln!("conversation_load: the gateway exited with {status}");
                    }
                    Ok(_) => {}
                    Err(_) => {
                        eprintln!("conversation_load: the gateway did not stop; killing it");
                        let _ = child.kill().await;
                    }
                }
                std::fs::read_to_string(&log).unwrap_or_default()
            }
            Gateway::InProcess {
                stop,
                task,
                log,
                log_from,
            } => {
                let _ = stop.send(());
                match tokio::time::timeout(Duration::from_secs(10), task).await {
                    Ok(Ok(Err(error))) => eprintln!("conversation_load: gateway: {error}"),
                    Ok(_) => {}
                    Err(_) => eprintln!("conversation_load: the gateway did not stop in time"),
                }
                let text = std::fs::read(&log).unwrap_or_default();
                let from = usize::try_from(log_from).unwrap_or(0).min(text.len());
                String::from_utf8_lossy(&text[from..]).into_owned()
            }
        }
    }
}

/// The providers' fakes of one run.
struct Fakes {
    listen: FakeListen,
    speak: FakeDeepgramSpeak,
    chat: ChatFake,
}

impl Fakes {
    async fn start(transcript: &str) -> Fakes {
        let listen = FakeListen::start(ListenConfig {
            // One transcript per speech segment of a call, more than any run has.
            default_script: vec![transcript.to_owned(); 2_000],
            ..ListenConfig::default()
        })
        .await
        .expect("start the fake");
        let speak = FakeDeepgramSpeak::start_with(FakeSpeakConfig {
            first_byte_delay_ms: TTS_FIRST_BYTE_MS,
            ..FakeSpeakConfig::default()
        })
        .await
        .expect("start the fake");
        let chat = ChatFake::start(ChatFakeConfig {
            first_token_delay_ms: LLM_FIRST_TOKEN_MS,
            token_delay_ms: LLM_TOKEN_MS,
            rules: Vec::new(),
            default_reply: Reply::Text(ANSWER.to_owned()),
            ..ChatFakeConfig::default()
        })
        .await
        .expect("start the fake");
        Fakes {
            listen,
            speak,
            chat,
        }
    }

    fn report(&self) -> String {
        let connections = self.listen.connections();
        let stt_closes: BTreeMap<String, usize> = connections
            .iter()
            .filter_map(|c| c.server_close.as_ref())
            .fold(BTreeMap::new(), |mut m, (code, reason)| {
                *m.entry(format!("{code} {reason}")).or_default() += 1;
                m
            });
        let endpointing: Vec<&str> = connections
            .iter()
            .filter_map(|c| c.param("endpointing"))
            .take(1)
            .collect();
        format!(
            "  fake STT: {} connections (endpointing={}), {} refused, server closes {:?}\n  \
             fake TTS: {} sockets, {} texts, {} flush-limit warnings, protocol closes {:?}\n  \
             fake LLM: {} chat requests\n",
            connections.len(),
            endpointing.first().unwrap_or(&"?"),
            self.listen.rejections().len(),
            stt_closes,
            self.speak.ws_connections(),
            self.speak.spoken_texts().len(),
            self.speak.flush_warnings(),
            self.speak.protocol_closes(),
            self.chat.request_count(),
        )
    }
}

/// The gateway config of a run (TOML; keys and the chat URL come from the environment).
fn gateway_toml(listen: &str, fakes: &Fakes, speculate: bool) -> String {
    let mut toml = format!(
        "listen = \"{listen}\"\nshutdown_grace_secs = 2\n\n\
         [conversation]\ngreeting = \"\"\n\n\
         [stt.deepgram]\nbase_url = \"{}\"\nendpointing_ms = {STT_ENDPOINTING_MS}\n\n\
         [tts.deepgram]\nbase_url = \"{}\"\n",
        fakes.listen.base_url(),
        fakes.speak.base_url()
    );
    if !speculate {
        toml.push_str("\n[turn]\nspeculate_after_ms = 0\n");
    }
    toml
}

/// Environment for the gateway: the fakes' keys and the chat fake's URL.
fn gateway_env(fakes: &Fakes) -> Vec<(&'static str, String)> {
    vec![
        ("DEEPGRAM_API_KEY", ListenConfig::default().api_key),
        ("OPENAI_API_KEY", fakes.chat.api_key().to_owned()),
        ("OPENAI_BASE_URL", fakes.chat.base_url()),
    ]
}

/// Variables of the caller's environment that would change the gateway's config.
const CLEARED_ENV: &[&str] = &[
    "VOICEGW_CONFIG",
    "VOICEGW_LISTEN",
    "VOICEGW_AGENT",
    "VOICEGW_TTS_PROVIDER",
    "VOICEGW_LOG_FORMAT",
    "DEEPGRAM_BASE_URL",
    "OPENAI_MODEL",
    "TWILIO_AUTH_TOKEN",
    "VOICEGW_EXOTEL_CREDENTIALS",
    "VOICEGW_PUBLIC_URL",
    "ELEVENLABS_API_KEY",
    "ELEVENLABS_BASE_URL",
];

fn free_port() -> Result<u16, String> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits until `GET /healthz` answers 200.
async fn wait_healthy(addr: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if http_get(addr, "/healthz")
            .await
            .is_some_and(|(status, _)| status.contains(" 200"))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Starts the gateway of one run on `addr`.
async fn start_gateway(
    args: &Args,
    dir: &Path,
    name: &str,
    addr: &str,
    fakes: &Fakes,
    speculate: bool,
) -> Result<Gateway, String> {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, gateway_toml(addr, fakes, speculate))
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    if args.in_process {
        let log = dir.join("gateway-in-process.log");
        let log_from = std::fs::metadata(&log).map_or(0, |m| m.len());
        let env: BTreeMap<&str, String> = gateway_env(fakes).into_iter().collect();
        let overrides = voicegw::config::Overrides {
            deepgram_api_key: env.get("DEEPGRAM_API_KEY").cloned(),
            openai_api_key: env.get("OPENAI_API_KEY").cloned(),
            openai_base_url: env.get("OPENAI_BASE_URL").cloned(),
            ..Default::default()
        };
        let config = voicegw::config::Config::load(Some(&config_path), &overrides)
            .map_err(|e| e.to_string())?;
        let gateway = voicegw::server::Gateway::new(&config).map_err(|e| e.to_string())?;
        gateway
            .check_credentials()
            .await
            .map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("bind {}: {e}", config.listen))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let grace = config.shutdown_grace();
        let task = tokio::spawn(gateway.run(listener, grace, async move {
            let _ = stopped.await;
        }));
        if !wait_healthy(addr, Duration::from_secs(10)).await {
            return Err("the in-process gateway does not answer /healthz".into());
        }
        return Ok(Gateway::InProcess {
            stop,
            task,
            log,
            log_from,
        });
    }
    if !args.gateway_bin.is_file() {
        return Err(format!(
            "no gateway binary at {} (build it with `cargo build --release --bin voicegw`, \
             pass --gateway-bin, or use --in-process)",
            args.gateway_bin.display()
        ));
    }
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::new(&args.gateway_bin);
    command
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config_path)
        .envs(gateway_env(fakes))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true);
    for key in CLEARED_ENV {
        command.env_remove(key);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", args.gateway_bin.display()))?;
    let pid = child.id().ok_or("the gateway exited at once")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("the gateway exited with {status}:\n{text}"));
        }
        if wait_healthy(addr, Duration::from_millis(200)).await {
            return Ok(Gateway::Child { child, pid, log });
        }
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err("the gateway does not answer /healthz".into());
        }
    }
}

/// The figures of one run, for the closing table.
struct RunSummary {
    calls: usize,
    speculate: bool,
    response_ms: Vec<u32>,
    barge_ms: Vec<u32>,
    gateway_cpu: Option<f64>,
    gateway_rss_mib: Option<u64>,
    failed: usize,
    dropped: usize,
    unanswered: u64,
    machine_busy: f64,
    others: f64,
    client_late_p99: u32,
}

/// One run: fakes, gateway, `calls` callers; prints its report.
#[allow(clippy::too_many_lines)]
async fn run(
    args: &Args,
    audio: &Arc<Audio>,
    dir: &Path,
    calls: usize,
    speculate: bool,
    label_text: &str,
) -> Result<RunSummary, String> {
    // Other work on the machine skews every figure: show how busy it was before the run.
    let before = machine_sample();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy_before = busy_between(before, machine_sample());
    let fakes = Fakes::start(&args.transcript).await;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let name = format!(
        "gateway-{calls}-spec-{}",
        if speculate { "on" } else { "off" }
    );
    let gateway = start_gateway(args, dir, &name, &addr, &fakes, speculate).await?;
    let pid = gateway.pid();
    println!(
        "\n=== {label_text}: {calls} call(s), speculation {}, gateway {} ===",
        if speculate { "on" } else { "off" },
        match pid {
            Some(pid) => format!("pid {pid} ({})", args.gateway_bin.display()),
            None => "in this process".into(),
        }
    );
    let ramp = if calls > 1 { args.ramp } else { Duration::ZERO };
    let began = Instant::now();
    let window = Window {
        measure_from: began + ramp,
        until: began + ramp + args.duration,
    };
    let url = format!("ws://{addr}/stream/twilio");
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let delay = ramp.mul_f64(i as f64 / calls as f64);
        let (url, audio) = (url.clone(), audio.clone());
        let barge_in = args.barge_in;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            call(i, url, barge_in, audio, window).await
        }));
    }
    tokio::time::sleep_until(window.measure_from.into()).await;
    let self_pid = std::process::id();
    let start = (
        pid.and_then(proc_sample),
        proc_sample(self_pid),
        machine_sample(),
        Instant::now(),
    );
    let mut rss_max = 0;
    while Instant::now() + Duration::from_secs(1) < window.until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some((_, rss)) = pid.and_then(proc_sample) {
            rss_max = rss_max.max(rss);
        }
    }
    tokio::time::sleep_until(window.until.into()).await;
    let end = (
        pid.and_then(proc_sample),
        proc_sample(self_pid),
        machine_sample(),
        Instant::now(),
    );
    let mut total = CallReport::default();
    let (mut failed, mut dropped) = (0, 0);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(report) => {
                if let Some(error) = &report.connect_error {
                    failed += 1;
                    *reasons.entry(format!("connect: {error}")).or_default() += 1;
                }
                if let Some(reason) = &report.dropped {
                    dropped += 1;
                    *reasons.entry(reason.clone()).or_default() += 1;
                }
                total.merge(report);
            }
            Err(error) => {
                failed += 1;
                *reasons.entry(format!("task: {error}")).or_default() += 1;
            }
        }
    }
    // Let the gateway see the stops, then read its counters.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = http_get(&addr, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    let frames_counted: f64 = samples(&metrics, "voicegw_frames_in_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    let log = gateway.stop().await;

    let steady = end.3.duration_since(start.3).as_secs_f64().max(1e-3);
    let cpu = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
        // /proc/PID/stat counts in USER_HZ = 100 ticks per second.
        (Some((a, _)), Some((b, _))) => Some((b - a) as f64 / 100.0 / steady * 100.0),
        _ => None,
    };
    let gateway_cpu = cpu(start.0, end.0);
    let self_cpu = cpu(start.1, end.1).unwrap_or(f64::NAN);
    let machine_busy = busy_between(start.2, end.2);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // CPU of everything else on the machine, in % of one core.
    let others = (machine_busy * cores as f64 - gateway_cpu.unwrap_or(0.0) - self_cpu).max(0.0);
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    let response = sorted(std::mem::take(&mut total.response_ms));
    let after_barge = sorted(std::mem::take(&mut total.after_barge_ms));
    let barge = sorted(std::mem::take(&mut total.barge_ms));
    let late = sorted(std::mem::take(&mut total.lateness_ms));
    let share: Vec<i64> = response
        .iter()
        .map(|r| i64::from(*r) - FAKES_FLOOR_MS)
        .collect();

    let q = &audio.question;
    println!(
        "fixture                      {}: {} ms, voiced {}–{} ms (trailing {} ms), STT hears {:?}",
        args.fixture,
        q.len_ms(),
        q.onset_ms(),
        q.voiced_end_ms(),
        q.len_ms() - q.voiced_end_ms(),
        args.transcript
    );
    println!(
        "fakes                        STT endpointing {STT_ENDPOINTING_MS} ms + LLM first token \
         {LLM_FIRST_TOKEN_MS} ms ({LLM_TOKEN_MS} ms/token after) + TTS first byte \
         {TTS_FIRST_BYTE_MS} ms = {FAKES_FLOOR_MS} ms"
    );
    println!(
        "window                       {:.1} s steady after a {} s ramp",
        steady,
        ramp.as_secs()
    );
    println!(
        "calls ok / failed / dropped  {} / {failed} / {dropped}",
        calls - failed - dropped
    );
    for (reason, n) in reasons.iter().take(5) {
        println!("    {n} × {reason}");
    }
    println!(
        "turns spoken / answered / unanswered / bot started mid-question  {} / {} / {} / {}",
        total.turns, total.answered, total.unanswered, total.overlapped_turns,
    );
    println!(
        "bot utterances               {}   (started while the caller paused between turns: {}; \
         clears not caused by our interruptions: {})",
        total.bot_utterances, total.unsolicited_utterances, total.other_clears
    );
    println!("response ms p50/p95/p99/max  {}", spread(&response));
    if !speculate {
        println!(
            "gateway share ms (response − {FAKES_FLOOR_MS}) p50/p95/p99/max  {}",
            spread(&share)
        );
    }
    if args.barge_in {
        println!(
            "barge-in → clear ms p50/p95/p99/max  {}   (attempts {}, missed {})",
            spread(&barge),
            total.barge_attempts,
            total.barge_missed
        );
        println!(
            "response after barge-in ms p50/p95/p99/max  {}   (a new bot utterance started \
             while the interruption went on: {}; unanswered: {})",
            spread(&after_barge),
            total.overlapped_after_barge,
            total.unanswered_after_barge
        );
    }
    println!(
        "client tick late ms p50/p99/max  {} / {} / {}",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(0)
    );
    println!(
        "frames sent / counted        {} / {frames_counted}   (bot media {}, marks echoed {}, \
         clears {}, protocol oddities {})",
        total.frames_sent, total.bot_media, total.marks_echoed, total.clears, total.violations
    );
    match gateway_cpu {
        Some(cpu) => {
            println!(
                "gateway CPU                  {cpu:.1} % of one core ({:.3} % per call)",
                cpu / calls as f64
            );
            println!(
                "gateway RSS max / end        {} / {} MiB ({:.0} KiB per call)",
                rss_max / 1024,
                end.0.map_or(0, |(_, rss)| rss / 1024),
                rss_max as f64 / calls as f64
            );
            println!("bench process CPU            {self_cpu:.1} % of one core (client + fakes)");
        }
        None => println!(
            "process CPU                  {self_cpu:.1} % of one core (gateway + client + fakes)"
        ),
    }
    println!(
        "machine busy                 {machine_busy:.1} % of {cores} cores (before the run \
         {busy_before:.1} %; other processes during it {others:.1} % of one core)"
    );
    println!("gateway /metrics at the end:");
    print!("{}", metrics_report(&metrics));
    println!("gateway log:");
    print!("{}", log_report(&log));
    print!("{}", fakes.report());
    Ok(RunSummary {
        calls,
        speculate,
        response_ms: response,
        barge_ms: barge,
        gateway_cpu,
        gateway_rss_mib: gateway_cpu.map(|_| rss_max / 1024),
        failed,
        dropped,
        unanswered: total.unanswered,
        machine_busy,
        others,
        client_late_p99: percentile(&late, 0.99),
    })
}

fn print_summary(runs: &[RunSummary], barge_in: bool) {
    println!("\n=== summary (client-measured, ms) ===");
    println!(
        "{:>5} {:>4} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>18}  {:>16} {:>7} {:>7} {:>9} {:>6} {:>16}",
        "calls",
        "spec",
        "turns",
        "p50",
        "p95",
        "p99",
        "max",
        "share p50/p95/p99",
        "barge p50/95/99",
        "gw CPU%",
        "gw MiB",
        "fail/drop",
        "unans",
        "busy/others/late"
    );
    for r in runs {
        let share = if r.speculate || r.response_ms.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{}/{}/{}",
                i64::from(percentile(&r.response_ms, 0.5)) - FAKES_FLOOR_MS,
                i64::from(percentile(&r.response_ms, 0.95)) - FAKES_FLOOR_MS,
                i64::from(percentile(&r.response_ms, 0.99)) - FAKES_FLOOR_MS
            )
        };
        let barge = if barge_in && !r.barge_ms.is_empty() {
            format!(
                "{}/{}/{}",
                percentile(&r.barge_ms, 0.5),
                percentile(&r.barge_ms, 0.95),
                percentile(&r.barge_ms, 0.99)
            )
        } else {
            "-".to_owned()
        };
        println!(
            "{:>5} {:>4} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>18}  {:>16} {:>7} {:>7} {:>9} {:>6} {:>16}",
            r.calls,
            if r.speculate { "on" } else { "off" },
            r.response_ms.len(),
            percentile(&r.response_ms, 0.5),
            percentile(&r.response_ms, 0.95),
            percentile(&r.response_ms, 0.99),
            r.response_ms.last().copied().unwrap_or(0),
            share,
            barge,
            r.gateway_cpu.map_or("-".into(), |c| format!("{c:.1}")),
            r.gateway_rss_mib.map_or("-".into(), |m| m.to_string()),
            format!("{}/{}", r.failed, r.dropped),
            r.unanswered,
            format!(
                "{:.0}%/{:.0}%/{}",
                r.machine_busy, r.others, r.client_late_p99
            ),
        );
    }
    println!(
        "(share = response − {FAKES_FLOOR_MS} ms, speculation-off runs only; busy = machine CPU \
         over the steady phase, % of all cores; others = CPU of other processes, % of one \
         core; late = client tick lateness p99, ms)"
    );
}

/// Sends the gateway's in-process logs (JSON, like `--log-format json`) to `path`.
fn log_to_file(path: &Path) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            if error != "help" {
                eprintln!("conversation_load: {error}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let threshold = ListenConfig::default().vad_threshold_dbfs;
    let audio = match (
        load_fixture(&args.fixture).and_then(|pcm| Utterance::new(&pcm, threshold)),
        load_fixture(INTERRUPT_FIXTURE).and_then(|pcm| Utterance::new(&pcm, threshold)),
    ) {
        (Ok(question), Ok(interrupt)) => {
            let mut bytes = Vec::new();
            Encoding::Mulaw.encode_into(&[0; FRAME_SAMPLES], &mut bytes);
            Arc::new(Audio {
                question,
                interrupt,
                silence: B64.encode(bytes),
            })
        }
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("conversation_load: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Config files and gateway logs: --log-dir, else a temporary directory.
    let temp = match &args.log_dir {
        Some(_) => None,
        None => match tempfile::Builder::new()
            .prefix("conversation_load")
            .tempdir()
        {
            Ok(dir) => Some(dir),
            Err(error) => {
                eprintln!("conversation_load: temporary directory: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let dir = match (&args.log_dir, &temp) {
        (Some(dir), _) => {
            if let Err(error) = std::fs::create_dir_all(dir) {
                eprintln!("conversation_load: {}: {error}", dir.display());
                return ExitCode::FAILURE;
            }
            dir.clone()
        }
        (None, Some(temp)) => temp.path().to_path_buf(),
        (None, None) => unreachable!("a temporary directory exists without --log-dir"),
    };
    if args.in_process
        && let Err(error) = log_to_file(&dir.join("gateway-in-process.log"))
    {
        eprintln!("conversation_load: gateway log: {error}");
        return ExitCode::FAILURE;
    }
    let total = args.calls.len() * args.speculation.len();
    let mut runs = Vec::new();
    let mut n = 0;
    for &calls in &args.calls {
        for &speculate in &args.speculation {
            n += 1;
            match run(
                &args,
                &audio,
                &dir,
                calls,
                speculate,
                &format!("run {n}/{total}"),
            )
            .await
            {
                Ok(summary) => runs.push(summary),
                Err(error) => {
                    eprintln!("conversation_load: run {n}/{total} ({calls} calls): {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    print_summary(&runs, args.barge_in);
    if args.log_dir.is_some() {
        println!("configs and gateway logs in {}", dir.display());
    }
    ExitCode::SUCCESS
}
