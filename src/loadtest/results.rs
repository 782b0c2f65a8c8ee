//! The figures of a load test, as the reports show them: per-turn and per-barge-in samples,
//! per-call rows, the run's summary and the gateway's resource samples.
//!
//! [`super::measure`] fills them from the calls' timelines; [`super::report`] renders them.
//! All durations are milliseconds (`f64`), all times of day seconds since the run began.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a measured turn answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnKind {
    /// The caller spoke and waited.
    Speech,
    /// The caller pressed keys and waited.
    Dtmf,
    /// The caller interrupted the bot; the bot's next utterance answers the interruption.
    AfterBargeIn,
}

/// One caller action the bot was expected to answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnSample {
    /// The call's index in the run (0-based).
    pub call: u32,
    /// The caller's action number on the call.
    pub turn: u32,
    /// What it answers.
    pub kind: TurnKind,
    /// When the caller finished (end of speech, or the last digit), seconds since run start.
    pub at_s: f64,
    /// End of the caller's speech (or digits) → first bot audio received.
    pub response_ms: Option<f64>,
    /// End of the caller's speech (or digits) → first voiced bot audio (as played).
    pub voiced_ms: Option<f64>,
    /// The bot was already speaking when the caller finished: not measured.
    pub overlapped: bool,
    /// No bot audio came within the answer timeout, or before the call ended.
    pub unanswered: bool,
}

/// One barge-in: the caller spoke over the bot's audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BargeSample {
    /// The call's index in the run.
    pub call: u32,
    /// Onset of the interrupting speech, seconds since run start.
    pub at_s: f64,
    /// Onset of the interrupting speech → `clear` received; `None` when no `clear` came.
    pub clear_ms: Option<f64>,
    /// Bot audio received after the `clear` while the caller was still speaking.
    pub audio_after_clear_ms: f64,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum CallEnd {
    /// The caller hung up as planned (end of scenario or of the run).
    Completed,
    /// The stream never opened.
    ConnectFailed {
        /// Why.
        reason: String,
    },
    /// The stream ended before the caller hung up.
    Dropped {
        /// Why.
        reason: String,
    },
}

/// The figures of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallMetrics {
    /// The call's index in the run.
    pub call: u32,
    /// When the harness began to connect it, seconds since run start.
    pub started_s: f64,
    /// Begin of connect → WebSocket handshake done.
    pub connect_ms: Option<f64>,
    /// How it ended.
    pub end: CallEnd,
    /// Its turns.
    pub turns: Vec<TurnSample>,
    /// Its barge-ins.
    pub barge_ins: Vec<BargeSample>,
    /// Times playback ran dry inside a bot utterance (more audio of it came later).
    pub underruns: u32,
    /// How long each underrun lasted.
    pub underrun_gap_ms: Vec<f64>,
    /// Outbound (bot) message inter-arrival deviation from the audio each message holds, for
    /// messages that arrived once playback was paced (see `measure`).
    pub jitter_ms: Vec<f64>,
    /// Protocol violations by the gateway, one line each.
    pub violations: Vec<String>,
    /// `media` messages received from the gateway.
    pub bot_media: u64,
    /// `media` messages the caller sent.
    pub frames_sent: u64,
    /// Marks echoed back to the gateway.
    pub marks_echoed: u64,
}

impl CallMetrics {
    /// A call with nothing measured yet: completed, no connect time, every list empty.
    pub fn new(call: u32, started_s: f64) -> CallMetrics {
        CallMetrics {
            call,
            started_s,
            connect_ms: None,
            end: CallEnd::Completed,
            turns: Vec::new(),
            barge_ins: Vec::new(),
            underruns: 0,
            underrun_gap_ms: Vec::new(),
            jitter_ms: Vec::new(),
            violations: Vec::new(),
            bot_media: 0,
            frames_sent: 0,
            marks_echoed: 0,
        }
    }
}

/// Nearest-rank percentiles of a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (NaNs ignored); all zero when there are none.
    pub fn of(samples: impl IntoIterator<Item = f64>) -> Percentiles {
        let mut sorted: Vec<f64> = samples.into_iter().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return Percentiles::default();
        }
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let index = ((sorted.len() as f64) * p).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Percentiles {
            n: sorted.len(),
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        }
    }
}

/// One sample of the gateway's process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// Seconds since run start.
    pub t_s: f64,
    /// CPU over the last interval, percent of one core.
    pub cpu_pct: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
    /// Calls the harness had up at that moment.
    pub live_calls: u32,
}

/// The provider fakes' fixed delays in a `--with-fakes` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeDelays {
    /// Silence the STT fake waits before it finalizes a segment (the endpointing asked).
    pub stt_endpointing_ms: u64,
    /// The LLM fake's first token.
    pub llm_first_token_ms: u64,
    /// The LLM fake's delay between tokens.
    pub llm_token_ms: u64,
    /// The TTS fake's first audio byte after a flush.
    pub tts_first_byte_ms: u64,
}

impl FakeDelays {
    /// The part of each response the fakes take by design: endpointing + first token + first
    /// audio byte.
    pub fn floor_ms(&self) -> f64 {
        (self.stt_endpointing_ms + self.llm_first_token_ms + self.tts_first_byte_ms) as f64
    }
}

/// How the run was set up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The stream URL the calls opened.
    pub target: String,
    /// `twilio` or `exotel` (with its sample rate, e.g. `exotel/16000`).
    pub carrier: String,
    /// Concurrent calls asked for.
    pub calls: u32,
    /// Ramp-up, seconds.
    pub ramp_s: f64,
    /// Steady phase after the ramp, seconds.
    pub duration_s: f64,
    /// The scenario's name.
    pub scenario: String,
    /// The fakes' delays, in a `--with-fakes` run.
    pub fake_delays: Option<FakeDelays>,
    /// When the run began (RFC 3339, UTC).
    pub started_at: String,
    /// This build's version.
    pub version: String,
}

/// The run in figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Calls planned.
    pub calls: u32,
    /// Calls whose stream opened.
    pub connected: u32,
    /// Calls whose stream never opened.
    pub failed: u32,
    /// Calls that ended before the caller hung up.
    pub dropped: u32,
    /// Turns the bot was expected to answer.
    pub turns: u32,
    /// Of those, answered.
    pub answered: u32,
    /// Of those, not answered in time.
    pub unanswered: u32,
    /// Turns not measured because the bot was already speaking.
    pub overlapped: u32,
    /// Barge-ins made.
    pub barge_ins: u32,
    /// Barge-ins that got no `clear`.
    pub barge_missed: u32,
    /// End of caller speech/digits → first bot audio.
    pub response_ms: Percentiles,
    /// End of caller speech/digits → first voiced bot audio.
    pub voiced_ms: Percentiles,
    /// `response_ms` minus the fakes' floor ([`FakeDelays::floor_ms`]), in a `--with-fakes` run.
    pub response_minus_fakes_ms: Option<Percentiles>,
    /// Barge-in onset → `clear`.
    pub barge_clear_ms: Percentiles,
    /// Bot audio received after a `clear` while the caller still spoke, per barge-in.
    pub audio_after_clear_ms: Percentiles,
    /// Connect time.
    pub connect_ms: Percentiles,
    /// Outbound inter-arrival jitter.
    pub jitter_ms: Percentiles,
    /// Playback underruns, all calls.
    pub underruns: u32,
    /// Protocol violations, all calls.
    pub violations: u32,
    /// Violations by kind (the text before the first `:`), with counts.
    pub violation_kinds: BTreeMap<String, u32>,
    /// The harness's own clock: how late 20 ms ticks fired (a saturated client shows here).
    pub tick_late_ms: Percentiles,
    /// Gateway CPU (percent of one core), mean over the steady phase.
    pub gateway_cpu_pct: Option<f64>,
    /// Gateway CPU per live call (percent of one core), steady phase.
    pub gateway_cpu_pct_per_call: Option<f64>,
    /// Gateway resident memory, peak, MiB.
    pub gateway_rss_peak_mib: Option<f64>,
    /// Gateway resident memory per live call, MiB: (steady RSS − RSS before calls) / calls.
    pub gateway_rss_mib_per_call: Option<f64>,
}

/// One load test, all of it: what the JSON report holds and the HTML report draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// How it was set up.
    pub info: RunInfo,
    /// The figures.
    pub summary: Summary,
    /// Every measured turn (for the histogram, CDF and latency-over-time plots).
    pub turns: Vec<TurnSample>,
    /// Every barge-in.
    pub barge_ins: Vec<BargeSample>,
    /// The gateway's CPU and memory over time (empty without `--pid` or `--with-fakes`).
    pub resources: Vec<ResourceSample>,
    /// Per-call figures (turn and barge-in lists are in `turns` / `barge_ins`, not here).
    pub calls: Vec<CallMetrics>,
    /// Where the per-call transcripts were written (persona runs).
    pub transcripts_dir: Option<String>,
}

/// Live counts for the progress bar, updated by the callers as they go.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Calls whose stream is open now.
    pub calls_up: AtomicU64,
    /// Calls started (connect attempted).
    pub calls_started: AtomicU64,
    /// Turns answered so far.
    pub turns: AtomicU64,
    /// Failed connects, drops, unanswered turns and violations so far.
    pub errors: AtomicU64,
}

impl LiveCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one from `counter` (never below zero).
    pub fn drop_one(counter: &AtomicU64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from));
        assert_eq!(
            (p.n, p.p50, p.p95, p.p99, p.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        assert!((p.mean - 50.5).abs() < 1e-9);
        let one = Percentiles::of([7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(Percentiles::of([]), Percentiles::default());
        assert_eq!(Percentiles::of([f64::NAN, 2.0]).n, 1);
    }

    #[test]
    fn fake_floor() {
        let d = FakeDelays {
            stt_endpointing_ms: 300,
            llm_first_token_ms: 200,
            llm_token_ms: 2,
            tts_first_byte_ms: 120,
        };
        assert_eq!(d.floor_ms(), 620.0);
    }
}
