//! Per-turn and per-call latencies from a call's timeline; the run's summary.
//!
//! Pure arithmetic on [`Timeline`]s: no clock, no I/O. The definitions, which the caller that
//! records timelines follows too:
//!
//! - **Connect time**: the `Connected` event's time (timelines start when connecting began).
//!   A call with `ConnectFailed`, or with neither event, never connected.
//! - **Playback queue**: a `BotMedia` at `t` with `queued_us` q and `audio_us` a keeps the
//!   queue busy until `t + q + a`; `BotClear` and `PlaybackDrained` empty it.
//! - **Turns**: each `SpeechEnd`/`DtmfSent` with `expect_reply` opens a turn, and so does
//!   every barge-in's `SpeechEnd` (an `AfterBargeIn` turn). A turn is **overlapped** (not
//!   measured) when bot audio was playing as it opened: the queue was busy, or a `BotMedia`
//!   arrived at most 100 ms before. Otherwise the first `BotMedia` after it answers it:
//!   `response = media.at + media.queued_us − end.at`, provided the media arrived within
//!   `answer_timeout` of `end.at`; **voiced** is the first `BotMedia` after that with a voiced
//!   window (`at + queued + voiced_offset − end.at`), looked for until the caller acts again.
//!   No media within `answer_timeout`, or the gateway dropped the call first: **unanswered**.
//!   A turn the caller itself cut short (it hung up, as planned, less than `answer_timeout`
//!   after the turn opened and before any bot audio) is no turn: the run's end, not the
//!   gateway, left it without an answer. So every turn is exactly one of answered,
//!   unanswered or overlapped.
//! - **Barge-in**: `SpeechStart{barge_in: true}` is the onset. The first `BotClear` after it,
//!   if within `clear_timeout`, gives `clear_ms`; otherwise the barge-in is missed
//!   (`clear_ms = None`). Audio after clear: the `audio_us` of the `BotMedia` after that clear
//!   and before the barge-in's own `SpeechEnd` (0 when the clear came after it).
//! - **Underrun**: a `PlaybackDrained` followed by a `BotMedia` less than `underrun_window`
//!   later, with no `SpeechStart`, `SpeechEnd`, `DtmfSent` or `BotClear` in between; the gap
//!   is `media.at − drained.at`.
//! - **Jitter**: within a bot utterance (consecutive `BotMedia` with no clear or caller
//!   action between and less than 1 s apart), for each message that arrived at least 10 ms
//!   after the one before (messages sent back to back are a burst sent ahead of playback, such
//!   as an utterance's opening lead, not pacing): `|(arrival_i − arrival_{i−1}) − audio_{i−1}|`,
//!   in ms.
//! - **End**: `ConnectFailed` → connect failed; else `Dropped` → dropped; else completed.
//!
//! [`summarize`] folds the calls into a [`Summary`]: percentiles are nearest-rank
//! ([`Percentiles::of`]); violations are counted by kind, the text before the first `:`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::results::{
    BargeSample, CallEnd, CallMetrics, FakeDelays, Percentiles, ResourceSample, Summary, TurnKind,
    TurnSample,
};
use super::timeline::{Event, Stamped, Timeline};

/// Bot media this close before a turn opens means the bot was still speaking.
const OVERLAP_WINDOW_US: u64 = 100_000;
/// Bot media further apart than this belong to different utterances (for jitter).
const UTTERANCE_GAP_US: u64 = 1_000_000;
/// Messages closer than this to the one before are a burst, not paced (no jitter sample).
const BURST_GAP_US: u64 = 10_000;

/// Measurement windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureConfig {
    /// A turn with no bot audio after this long is unanswered.
    pub answer_timeout: Duration,
    /// A barge-in with no `clear` after this long is missed.
    pub clear_timeout: Duration,
    /// Bot audio this soon after playback drained is an underrun.
    pub underrun_window: Duration,
    /// Quiet after playback drained that ends the bot's turn (used by the caller's
    /// "bot quiet"; the arithmetic here does not need it).
    pub turn_gap: Duration,
}

impl Default for MeasureConfig {
    /// 5 s answer timeout, 2 s clear timeout, 1 s underrun window, 500 ms turn gap.
    fn default() -> Self {
        MeasureConfig {
            answer_timeout: Duration::from_secs(5),
            clear_timeout: Duration::from_secs(2),
            underrun_window: Duration::from_secs(1),
            turn_gap: Duration::from_millis(500),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn seconds(started_s: f64, at_us: u64) -> f64 {
    started_s + at_us as f64 / 1e6
}

/// The caller acted (spoke, stopped speaking, pressed keys).
fn is_caller_action(event: &Event) -> bool {
    matches!(
        event,
        Event::SpeechStart { .. } | Event::SpeechEnd { .. } | Event::DtmfSent { .. }
    )
}

/// The call is over.
fn is_end(event: &Event) -> bool {
    matches!(event, Event::HungUp | Event::Dropped { .. })
}

/// The figures of one call; `frames_sent` and `marks_echoed` are left 0 (the caller's
/// counters fill them).
pub fn analyze(
    call: u32,
    started_s: f64,
    timeline: &Timeline,
    config: &MeasureConfig,
) -> CallMetrics {
    let events = &timeline.events;
    let mut metrics = CallMetrics::new(call, started_s);
    let mut failed: Option<String> = None;
    let mut dropped: Option<String> = None;
    // When the audio queued so far finishes playing.
    let mut play_end_us: u64 = 0;
    let mut last_media_us: Option<u64> = None;
    // The previous message of the current bot utterance: (arrival, audio).
    let mut previous: Option<(u64, u32)> = None;
    let mut drained_us: Option<u64> = None;
    let underrun_window = micros(config.underrun_window);

    for (index, stamped) in events.iter().enumerate() {
        let at = stamped.at_us;
        let playing = play_end_us > at
            || last_media_us.is_some_and(|m| at.saturating_sub(m) <= OVERLAP_WINDOW_US);
        match &stamped.event {
            Event::Connected => {
                if metrics.connect_ms.is_none() {
                    metrics.connect_ms = Some(ms(at));
                }
            }
            Event::ConnectFailed { reason } => {
                failed.get_or_insert_with(|| reason.clone());
            }
            Event::StreamStarted | Event::BotMark { .. } | Event::HungUp => {}
            Event::SpeechStart { barge_in, .. } => {
                previous = None;
                drained_us = None;
                if *barge_in {
                    metrics
                        .barge_ins
                        .push(barge(call, started_s, events, index, config));
                }
            }
            Event::SpeechEnd {
                turn,
                barge_in,
                expect_reply,
            } => {
                previous = None;
                drained_us = None;
                let kind = if *barge_in {
                    Some(TurnKind::AfterBargeIn)
                } else if *expect_reply {
                    Some(TurnKind::Speech)
                } else {
                    None
                };
                if let Some(kind) = kind {
                    let opened = Opened {
                        index,
                        turn: *turn,
                        kind,
                        playing,
                    };
                    metrics
                        .turns
                        .extend(answer(call, started_s, events, opened, config));
                }
            }
            Event::DtmfSent {
                turn, expect_reply, ..
            } => {
                previous = None;
                drained_us = None;
                if *expect_reply {
                    let opened = Opened {
                        index,
                        turn: *turn,
                        kind: TurnKind::Dtmf,
                        playing,
                    };
                    metrics
                        .turns
                        .extend(answer(call, started_s, events, opened, config));
                }
            }
            Event::BotMedia {
                audio_us,
                queued_us,
                ..
            } => {
                metrics.bot_media += 1;
                if let Some(drained) = drained_us.take() {
                    let gap = at.saturating_sub(drained);
                    if gap < underrun_window {
                        metrics.underruns += 1;
                        metrics.underrun_gap_ms.push(ms(gap));
                    }
                }
                if let Some((previous_at, previous_audio)) = previous {
                    let gap = at.saturating_sub(previous_at);
                    if (BURST_GAP_US..UTTERANCE_GAP_US).contains(&gap) {
                        let deviation = gap as f64 - f64::from(previous_audio);
                        metrics.jitter_ms.push(deviation.abs() / 1000.0);
                    }
                }
                previous = Some((at, *audio_us));
                play_end_us = at
                    .saturating_add(u64::from(*queued_us))
                    .saturating_add(u64::from(*audio_us));
                last_media_us = Some(at);
            }
            Event::BotClear { .. } => {
                previous = None;
                drained_us = None;
                play_end_us = at;
            }
            Event::PlaybackDrained => {
                drained_us = Some(at);
                play_end_us = at;
            }
            Event::Violation { what } => metrics.violations.push(what.clone()),
            Event::Dropped { reason } => {
                dropped.get_or_insert_with(|| reason.clone());
            }
        }
    }

    metrics.end = match (failed, dropped) {
        (Some(reason), _) => CallEnd::ConnectFailed { reason },
        (None, _) if metrics.connect_ms.is_none() => CallEnd::ConnectFailed {
            reason: "never connected".to_string(),
        },
        (None, Some(reason)) => CallEnd::Dropped { reason },
        (None, None) => CallEnd::Completed,
    };
    metrics
}

/// A turn as it opened.
struct Opened {
    index: usize,
    turn: u32,
    kind: TurnKind,
    /// Bot audio was playing then.
    playing: bool,
}

/// The measured turn that opened at `opened.index`.
fn answer(
    call: u32,
    started_s: f64,
    events: &[Stamped],
    opened: Opened,
    config: &MeasureConfig,
) -> Option<TurnSample> {
    let end_at = events.get(opened.index).map_or(0, |s| s.at_us);
    let mut sample = TurnSample {
        call,
        turn: opened.turn,
        kind: opened.kind,
        at_s: seconds(started_s, end_at),
        response_ms: None,
        voiced_ms: None,
        overlapped: opened.playing,
        unanswered: false,
    };
    if opened.playing {
        return Some(sample);
    }
    let after = events.iter().enumerate().skip(opened.index + 1);
    let mut first_media = None;
    for (index, stamped) in after {
        if is_end(&stamped.event) {
            let waited = stamped.at_us.saturating_sub(end_at);
            if stamped.event == Event::HungUp && waited < micros(config.answer_timeout) {
                // The caller hung up before the answer was due: not the gateway's miss.
                return None;
            }
            break;
        }
        if let Event::BotMedia { queued_us, .. } = stamped.event {
            if stamped.at_us.saturating_sub(end_at) <= micros(config.answer_timeout) {
                let heard = stamped.at_us.saturating_add(u64::from(queued_us));
                sample.response_ms = Some(ms(heard.saturating_sub(end_at)));
                first_media = Some(index);
            }
            break;
        }
    }
    let Some(first) = first_media else {
        sample.unanswered = true;
        return Some(sample);
    };
    for stamped in events.iter().skip(first) {
        if is_end(&stamped.event) || is_caller_action(&stamped.event) {
            break;
        }
        if let Event::BotMedia {
            queued_us,
            voiced_offset_us: Some(offset),
            ..
        } = stamped.event
        {
            let voiced = stamped
                .at_us
                .saturating_add(u64::from(queued_us))
                .saturating_add(u64::from(offset));
            sample.voiced_ms = Some(ms(voiced.saturating_sub(end_at)));
            break;
        }
    }
    Some(sample)
}

/// The barge-in whose onset is at `onset_index`.
fn barge(
    call: u32,
    started_s: f64,
    events: &[Stamped],
    onset_index: usize,
    config: &MeasureConfig,
) -> BargeSample {
    let (onset_at, turn) = match events.get(onset_index) {
        Some(Stamped {
            at_us,
            event: Event::SpeechStart { turn, .. },
        }) => (*at_us, Some(*turn)),
        Some(stamped) => (stamped.at_us, None),
        None => (0, None),
    };
    let mut sample = BargeSample {
        call,
        at_s: seconds(started_s, onset_at),
        clear_ms: None,
        audio_after_clear_ms: 0.0,
    };
    let mut clear_index = None;
    let mut speech_end_index = None;
    for (index, stamped) in events.iter().enumerate().skip(onset_index + 1) {
        match &stamped.event {
            Event::BotClear { .. } if clear_index.is_none() => {
                clear_index = Some(index);
                if stamped.at_us.saturating_sub(onset_at) <= micros(config.clear_timeout) {
                    sample.clear_ms = Some(ms(stamped.at_us.saturating_sub(onset_at)));
                }
            }
            Event::SpeechEnd { turn: t, .. } if speech_end_index.is_none() && Some(*t) == turn => {
                speech_end_index = Some(index);
            }
            event if is_end(event) => break,
            _ => {}
        }
        if clear_index.is_some() && speech_end_index.is_some() {
            break;
        }
    }
    if let (Some(_), Some(clear)) = (sample.clear_ms, clear_index) {
        let until = speech_end_index.unwrap_or(events.len());
        let audio_us: u64 = events
            .iter()
            .take(until)
            .skip(clear + 1)
            .take_while(|s| !is_end(&s.event))
            .map(|s| match s.event {
                Event::BotMedia { audio_us, .. } => u64::from(audio_us),
                _ => 0,
            })
            .sum();
        sample.audio_after_clear_ms = ms(audio_us);
    }
    sample
}

/// The kind of a violation: the text before the first `:` (all of it when there is none).
fn violation_kind(what: &str) -> String {
    what.split(':').next().unwrap_or(what).trim().to_string()
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The run's summary.
///
/// Resource figures use the samples taken at or after `steady_from_s` (the steady phase):
/// CPU is their mean; per call, the mean CPU of those with calls up divided by their mean
/// live calls; RSS per call is (their mean RSS − `baseline_rss_mib`) / their mean live calls;
/// the RSS peak is over all samples.
pub fn summarize(
    calls: &[CallMetrics],
    tick_late_ms: &[f64],
    resources: &[ResourceSample],
    fakes: Option<FakeDelays>,
    steady_from_s: f64,
    baseline_rss_mib: Option<f64>,
) -> Summary {
    let count = |f: &dyn Fn(&CallMetrics) -> bool| -> u32 {
        u32::try_from(calls.iter().filter(|c| f(c)).count()).unwrap_or(u32::MAX)
    };
    let turns = || calls.iter().flat_map(|c| c.turns.iter());
    let barges = || calls.iter().flat_map(|c| c.barge_ins.iter());
    let count_turns = |f: &dyn Fn(&TurnSample) -> bool| -> u32 {
        u32::try_from(turns().filter(|t| f(t)).count()).unwrap_or(u32::MAX)
    };
    let responses: Vec<f64> = turns().filter_map(|t| t.response_ms).collect();

    let mut violation_kinds: BTreeMap<String, u32> = BTreeMap::new();
    for what in calls.iter().flat_map(|c| c.violations.iter()) {
        *violation_kinds.entry(violation_kind(what)).or_insert(0) += 1;
    }

    let steady: Vec<&ResourceSample> = resources
        .iter()
        .filter(|r| r.t_s >= steady_from_s)
        .collect();
    let busy: Vec<&ResourceSample> = steady
        .iter()
        .copied()
        .filter(|r| r.live_calls > 0)
        .collect();
    let mean_live = mean(busy.iter().map(|r| f64::from(r.live_calls)));
    let busy_cpu = mean(busy.iter().map(|r| r.cpu_pct));
    let busy_rss = mean(busy.iter().map(|r| r.rss_mib));

    Summary {
        calls: u32::try_from(calls.len()).unwrap_or(u32::MAX),
        connected: count(&|c| c.connect_ms.is_some()),
        failed: count(&|c| matches!(c.end, CallEnd::ConnectFailed { .. })),
        dropped: count(&|c| matches!(c.end, CallEnd::Dropped { .. })),
        turns: count_turns(&|_| true),
        answered: count_turns(&|t| t.response_ms.is_some()),
        unanswered: count_turns(&|t| t.unanswered),
        overlapped: count_turns(&|t| t.overlapped),
        barge_ins: u32::try_from(barges().count()).unwrap_or(u32::MAX),
        barge_missed: u32::try_from(barges().filter(|b| b.clear_ms.is_none()).count())
            .unwrap_or(u32::MAX),
        response_ms: Percentiles::of(responses.iter().copied()),
        voiced_ms: Percentiles::of(turns().filter_map(|t| t.voiced_ms)),
        response_minus_fakes_ms: fakes
            .map(|f| Percentiles::of(responses.iter().map(|r| r - f.floor_ms()))),
        barge_clear_ms: Percentiles::of(barges().filter_map(|b| b.clear_ms)),
        audio_after_clear_ms: Percentiles::of(
            barges()
                .filter(|b| b.clear_ms.is_some())
                .map(|b| b.audio_after_clear_ms),
        ),
        connect_ms: Percentiles::of(calls.iter().filter_map(|c| c.connect_ms)),
        jitter_ms: Percentiles::of(calls.iter().flat_map(|c| c.jitter_ms.iter().copied())),
        underruns: calls.iter().map(|c| c.underruns).sum(),
        violations: u32::try_from(calls.iter().map(|c| c.violations.len()).sum::<usize>())
            .unwrap_or(u32::MAX),
        violation_kinds,
        tick_late_ms: Percentiles::of(tick_late_ms.iter().copied()),
        gateway_cpu_pct: mean(steady.iter().map(|r| r.cpu_pct)),
        gateway_cpu_pct_per_call: match (busy_cpu, mean_live) {
            (Some(cpu), Some(live)) => Some(cpu / live),
            _ => None,
        },
        gateway_rss_peak_mib: resources.iter().map(|r| r.rss_mib).reduce(f64::max),
        gateway_rss_mib_per_call: match (busy_rss, baseline_rss_mib, mean_live) {
            (Some(rss), Some(base), Some(live)) => Some((rss - base) / live),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A timeline built by hand, times in milliseconds.
    #[derive(Default)]
    struct Tl(Timeline);

    impl Tl {
        fn connected() -> Tl {
            let mut t = Tl::default();
            t.at(40, Event::Connected).at(41, Event::StreamStarted);
            t
        }
        fn at(&mut self, ms: u64, event: Event) -> &mut Tl {
            let last = self.0.events.last().map_or(0, |s| s.at_us);
            assert!(last <= ms * 1000, "hand-built timeline goes back in time");
            self.0.push(Duration::from_millis(ms), event);
            self
        }
        fn speech(&mut self, start: u64, end: u64, turn: u32, barge_in: bool) -> &mut Tl {
            self.at(start, Event::SpeechStart { turn, barge_in }).at(
                end,
                Event::SpeechEnd {
                    turn,
                    barge_in,
                    expect_reply: true,
                },
            )
        }
        /// Bot media: `audio` ms, voiced from `voiced` ms, `queued` ms already queued.
        fn media(&mut self, ms: u64, audio: u32, voiced: Option<u32>, queued: u32) -> &mut Tl {
            self.at(
                ms,
                Event::BotMedia {
                    audio_us: audio * 1000,
                    voiced_offset_us: voiced.map(|v| v * 1000),
                    queued_us: queued * 1000,
                },
            )
        }
        fn run(&self) -> CallMetrics {
            analyze(3, 10.0, &self.0, &MeasureConfig::default())
        }
    }

    #[test]
    fn plain_answered_turn() {
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false)
            .media(2700, 100, Some(0), 0)
            .at(2700, Event::BotMark { name: "m".into() })
            .media(2800, 100, Some(0), 0)
            .at(2900, Event::PlaybackDrained)
            .at(5000, Event::HungUp);
        let m = t.run();
        assert_eq!(m.call, 3);
        assert_eq!(m.connect_ms, Some(40.0));
        assert_eq!(m.end, CallEnd::Completed);
        assert_eq!(m.bot_media, 2);
        assert_eq!(
            m.turns,
            vec![TurnSample {
                call: 3,
                turn: 1,
                kind: TurnKind::Speech,
                at_s: 12.0,
                response_ms: Some(700.0),
                voiced_ms: Some(700.0),
                overlapped: false,
                unanswered: false,
            }]
        );
        assert_eq!(m.underruns, 0);
        assert!(m.barge_ins.is_empty());
        assert_eq!((m.frames_sent, m.marks_echoed), (0, 0));
    }

    #[test]
    fn voiced_offset_and_queued_audio() {
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false)
            .media(2600, 100, None, 0)
            .media(2650, 100, Some(40), 50)
            .at(2800, Event::PlaybackDrained);
        let turn = &t.run().turns[0];
        assert_eq!(turn.response_ms, Some(600.0));
        assert_eq!(turn.voiced_ms, Some(740.0));

        // Audio still queued when the first message arrived counts towards the response.
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false)
            .media(2600, 100, Some(20), 30);
        let turn = &t.run().turns[0];
        assert_eq!(turn.response_ms, Some(630.0));
        assert_eq!(turn.voiced_ms, Some(650.0));
    }

    #[test]
    fn voiced_is_not_looked_for_past_the_next_caller_action() {
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false)
            .media(2600, 100, None, 0)
            .at(2700, Event::PlaybackDrained)
            .at(
                2800,
                Event::SpeechStart {
                    turn: 2,
                    barge_in: false,
                },
            )
            .media(2900, 100, Some(0), 0);
        let turn = &t.run().turns[0];
        assert_eq!((turn.response_ms, turn.voiced_ms), (Some(600.0), None));
    }

    #[test]
    fn overlapped_turns_are_not_measured() {
        // Media 100 ms before the end of speech (boundary included).
        let mut t = Tl::connected();
        t.media(1800, 100, Some(0), 0)
            .at(
                1850,
                Event::SpeechStart {
                    turn: 1,
                    barge_in: false,
                },
            )
            .at(1900, Event::PlaybackDrained)
            .at(
                1900,
                Event::SpeechEnd {
                    turn: 1,
                    barge_in: false,
                    expect_reply: true,
                },
            )
            .media(2500, 100, Some(0), 0);
        let turn = &t.run().turns[0];
        assert!(turn.overlapped && !turn.unanswered);
        assert_eq!((turn.response_ms, turn.voiced_ms), (None, None));

        // Queue still busy: 1 s of audio received at 1.5 s plays until 2.5 s.
        let mut t = Tl::connected();
        t.media(1500, 1000, Some(0), 0)
            .speech(1600, 2000, 1, false)
            .media(2600, 100, Some(0), 0);
        assert!(t.run().turns[0].overlapped);

        // Drained and quiet for more than 100 ms: measured.
        let mut t = Tl::connected();
        t.media(1500, 100, Some(0), 0)
            .at(1600, Event::PlaybackDrained)
            .speech(1650, 1701, 1, false)
            .media(2000, 100, Some(0), 0);
        let turn = &t.run().turns[0];
        assert!(!turn.overlapped);
        assert_eq!(turn.response_ms, Some(299.0));
    }

    #[test]
    fn unanswered_by_timeout_and_by_call_end() {
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false).media(7001, 100, Some(0), 0);
        let turn = &t.run().turns[0];
        assert!(turn.unanswered && !turn.overlapped);
        assert_eq!(turn.response_ms, None);

        // Exactly the timeout still answers.
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false).media(7000, 100, Some(0), 0);
        assert_eq!(t.run().turns[0].response_ms, Some(5000.0));

        // The caller hung up 1 s after its turn: cut short by the run, not a turn.
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false)
            .at(3000, Event::HungUp)
            .media(3100, 100, Some(0), 0);
        let m = t.run();
        assert!(m.turns.is_empty());
        assert_eq!(m.end, CallEnd::Completed);

        // Hanging up after the answer was due: unanswered.
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false).at(7001, Event::HungUp);
        assert!(t.run().turns[0].unanswered);

        // The gateway dropping the call before the answer: unanswered.
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false).at(
            3000,
            Event::Dropped {
                reason: "closed".into(),
            },
        );
        let m = t.run();
        assert!(m.turns[0].unanswered);
        assert!(matches!(m.end, CallEnd::Dropped { .. }));

        // Nothing after the turn at all.
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false);
        assert!(t.run().turns[0].unanswered);
    }

    #[test]
    fn speech_without_expect_reply_is_no_turn() {
        let mut t = Tl::connected();
        t.at(
            1000,
            Event::SpeechStart {
                turn: 1,
                barge_in: false,
            },
        )
        .at(
            1500,
            Event::SpeechEnd {
                turn: 1,
                barge_in: false,
                expect_reply: false,
            },
        )
        .media(1900, 100, Some(0), 0);
        assert!(t.run().turns.is_empty());
    }

    #[test]
    fn dtmf_turn() {
        let mut t = Tl::connected();
        t.at(
            3000,
            Event::DtmfSent {
                turn: 2,
                digits: "1#".into(),
                expect_reply: true,
            },
        )
        .media(3400, 100, None, 0)
        .media(3500, 100, Some(60), 0)
        .at(3600, Event::PlaybackDrained)
        .at(
            5000,
            Event::DtmfSent {
                turn: 3,
                digits: "9".into(),
                expect_reply: false,
            },
        );
        let m = t.run();
        assert_eq!(m.turns.len(), 1);
        let turn = &m.turns[0];
        assert_eq!((turn.turn, turn.kind), (2, TurnKind::Dtmf));
        assert_eq!(turn.at_s, 13.0);
        assert_eq!(
            (turn.response_ms, turn.voiced_ms),
            (Some(400.0), Some(560.0))
        );
    }

    #[test]
    fn barge_in_with_clear_and_audio_after_it() {
        let mut t = Tl::connected();
        t.media(9500, 1000, Some(0), 0)
            .at(
                10_000,
                Event::SpeechStart {
                    turn: 3,
                    barge_in: true,
                },
            )
            .media(10_100, 100, Some(0), 400)
            .at(
                10_300,
                Event::BotClear {
                    dropped_us: 300_000,
                },
            )
            .media(10_350, 100, Some(0), 0)
            .media(10_400, 60, Some(0), 50)
            .at(10_510, Event::PlaybackDrained)
            .at(
                11_000,
                Event::SpeechEnd {
                    turn: 3,
                    barge_in: true,
                    expect_reply: true,
                },
            )
            .media(11_800, 100, Some(20), 0)
            .media(12_000, 100, Some(0), 0);
        let m = t.run();
        assert_eq!(
            m.barge_ins,
            vec![BargeSample {
                call: 3,
                at_s: 20.0,
                clear_ms: Some(300.0),
                audio_after_clear_ms: 160.0,
            }]
        );
        assert_eq!(m.turns.len(), 1);
        let turn = &m.turns[0];
        assert_eq!((turn.turn, turn.kind), (3, TurnKind::AfterBargeIn));
        assert_eq!(
            (turn.response_ms, turn.voiced_ms),
            (Some(800.0), Some(820.0))
        );
        // The drain after the clear is followed by caller speech: no underrun.
        assert_eq!(m.underruns, 0);
    }

    #[test]
    fn clear_after_the_barge_in_ended_has_no_audio_after_it() {
        let mut t = Tl::connected();
        t.media(9500, 2000, Some(0), 0)
            .speech(10_000, 10_500, 1, true)
            .media(10_600, 100, Some(0), 0)
            .at(10_900, Event::BotClear { dropped_us: 0 });
        let m = t.run();
        assert_eq!(m.barge_ins[0].clear_ms, Some(900.0));
        assert_eq!(m.barge_ins[0].audio_after_clear_ms, 0.0);
        // The bot still played as the barge-in ended: that turn is overlapped.
        assert!(m.turns[0].overlapped);
    }

    #[test]
    fn missed_barge_in() {
        let mut t = Tl::connected();
        t.media(9500, 3000, Some(0), 0)
            .speech(10_000, 11_000, 1, true)
            .at(12_001, Event::BotClear { dropped_us: 0 });
        let m = t.run();
        assert_eq!(m.barge_ins[0].clear_ms, None);
        assert_eq!(m.barge_ins[0].audio_after_clear_ms, 0.0);

        // Exactly the clear timeout is still in time.
        let mut t = Tl::connected();
        t.media(9500, 3000, Some(0), 0)
            .speech(10_000, 11_000, 1, true)
            .at(12_000, Event::BotClear { dropped_us: 0 });
        assert_eq!(t.run().barge_ins[0].clear_ms, Some(2000.0));

        // The call ended first.
        let mut t = Tl::connected();
        t.media(9500, 3000, Some(0), 0)
            .speech(10_000, 11_000, 1, true)
            .at(11_500, Event::HungUp)
            .at(11_600, Event::BotClear { dropped_us: 0 });
        assert_eq!(t.run().barge_ins[0].clear_ms, None);
    }

    #[test]
    fn underrun_versus_end_of_utterance() {
        let mut t = Tl::connected();
        t.media(1000, 100, Some(0), 0)
            .at(1100, Event::PlaybackDrained)
            .media(1400, 100, Some(0), 0) // underrun: 300 ms
            .at(1500, Event::PlaybackDrained)
            .media(2500, 100, Some(0), 0) // exactly the window: a new utterance
            .at(2600, Event::PlaybackDrained)
            .speech(3000, 3500, 1, false) // caller speech in between
            .media(3550, 100, Some(0), 0)
            .at(3650, Event::PlaybackDrained)
            .at(3700, Event::BotClear { dropped_us: 0 })
            .media(3800, 100, Some(0), 0)
            .at(3900, Event::PlaybackDrained)
            .media(3950, 100, Some(0), 0); // underrun: 50 ms
        let m = t.run();
        assert_eq!(m.underruns, 2);
        assert_eq!(m.underrun_gap_ms, vec![300.0, 50.0]);
    }

    #[test]
    fn jitter_on_paced_messages_only() {
        let mut t = Tl::connected();
        t.media(1000, 100, Some(0), 0)
            .media(1000, 100, Some(0), 100) // back to back: a burst, skipped
            .media(1001, 100, Some(0), 199) // 1 ms later: burst
            .media(1002, 100, Some(0), 298) // burst
            .media(1107, 100, Some(0), 195) // |105 − 100|
            .media(1197, 100, Some(0), 198) // |90 − 100|
            .media(2197, 100, Some(0), 0) // 1 s later: a new utterance
            .media(2300, 100, Some(0), 0) // |103 − 100|
            .at(2350, Event::BotClear { dropped_us: 50_000 })
            .media(2360, 100, Some(0), 0) // after a clear: a new utterance
            .at(
                2400,
                Event::DtmfSent {
                    turn: 1,
                    digits: "5".into(),
                    expect_reply: false,
                },
            )
            .media(2410, 100, Some(0), 0); // after a caller action: new
        let m = t.run();
        assert_eq!(m.jitter_ms, vec![5.0, 10.0, 3.0]);
    }

    #[test]
    fn connect_failure() {
        let mut t = Tl::default();
        t.at(
            3000,
            Event::ConnectFailed {
                reason: "connection refused".into(),
            },
        );
        let m = t.run();
        assert_eq!(m.connect_ms, None);
        assert_eq!(
            m.end,
            CallEnd::ConnectFailed {
                reason: "connection refused".into()
            }
        );
        let empty = Tl::default().run();
        assert_eq!(
            empty.end,
            CallEnd::ConnectFailed {
                reason: "never connected".into()
            }
        );
    }

    #[test]
    fn dropped_call() {
        let mut t = Tl::connected();
        t.speech(1000, 2000, 1, false)
            .at(
                2500,
                Event::Violation {
                    what: "binary: frame of 3 bytes".into(),
                },
            )
            .at(
                2600,
                Event::Dropped {
                    reason: "closed by the gateway".into(),
                },
            );
        let m = t.run();
        assert_eq!(
            m.end,
            CallEnd::Dropped {
                reason: "closed by the gateway".into()
            }
        );
        assert_eq!(m.violations, vec!["binary: frame of 3 bytes".to_string()]);
        assert!(m.turns[0].unanswered);
    }

    fn call_with(call: u32, responses: &[Option<f64>], end: CallEnd) -> CallMetrics {
        let mut metrics = CallMetrics::new(call, 0.0);
        metrics.connect_ms = (!matches!(end, CallEnd::ConnectFailed { .. })).then_some(20.0);
        metrics.end = end;
        metrics.turns = responses
            .iter()
            .enumerate()
            .map(|(i, r)| TurnSample {
                call,
                turn: i as u32 + 1,
                kind: TurnKind::Speech,
                at_s: 1.0,
                response_ms: *r,
                voiced_ms: r.map(|r| r + 10.0),
                overlapped: false,
                unanswered: r.is_none(),
            })
            .collect();
        metrics
    }

    fn sample(t_s: f64, cpu_pct: f64, rss_mib: f64, live_calls: u32) -> ResourceSample {
        ResourceSample {
            t_s,
            cpu_pct,
            rss_mib,
            live_calls,
        }
    }

    #[test]
    fn summarize_counts_percentiles_fakes_and_resources() {
        let mut a = call_with(0, &[Some(700.0), Some(800.0), None], CallEnd::Completed);
        a.turns[2].unanswered = false;
        a.turns[2].overlapped = true;
        a.underruns = 2;
        a.jitter_ms = vec![1.0, 3.0];
        a.violations = vec![
            "schema: media without payload".into(),
            "schema: bad sid".into(),
            "binary frame".into(),
        ];
        a.barge_ins = vec![
            BargeSample {
                call: 0,
                at_s: 2.0,
                clear_ms: Some(150.0),
                audio_after_clear_ms: 40.0,
            },
            BargeSample {
                call: 0,
                at_s: 5.0,
                clear_ms: None,
                audio_after_clear_ms: 0.0,
            },
        ];
        let b = call_with(
            1,
            &[Some(900.0), None],
            CallEnd::Dropped {
                reason: "closed".into(),
            },
        );
        let c = call_with(
            2,
            &[],
            CallEnd::ConnectFailed {
                reason: "refused".into(),
            },
        );
        let fakes = FakeDelays {
            stt_endpointing_ms: 300,
            llm_first_token_ms: 200,
            llm_token_ms: 5,
            tts_first_byte_ms: 100,
        };
        let resources = [
            sample(1.0, 90.0, 500.0, 0), // before the steady phase
            sample(10.0, 20.0, 60.0, 0), // steady, no calls up
            sample(11.0, 40.0, 110.0, 10),
            sample(12.0, 60.0, 130.0, 30),
        ];
        let s = summarize(
            &[a, b, c],
            &[0.5, 1.5],
            &resources,
            Some(fakes),
            10.0,
            Some(50.0),
        );
        assert_eq!((s.calls, s.connected, s.failed, s.dropped), (3, 2, 1, 1));
        assert_eq!(
            (s.turns, s.answered, s.unanswered, s.overlapped),
            (5, 3, 1, 1)
        );
        assert_eq!((s.barge_ins, s.barge_missed), (2, 1));
        assert_eq!(
            (s.response_ms.n, s.response_ms.p50, s.response_ms.max),
            (3, 800.0, 900.0)
        );
        assert_eq!((s.voiced_ms.n, s.voiced_ms.p50), (3, 810.0));
        let minus = s.response_minus_fakes_ms.expect("fakes given");
        assert_eq!((minus.n, minus.p50, minus.max), (3, 200.0, 300.0));
        assert_eq!((s.barge_clear_ms.n, s.barge_clear_ms.max), (1, 150.0));
        assert_eq!(
            (s.audio_after_clear_ms.n, s.audio_after_clear_ms.max),
            (1, 40.0)
        );
        assert_eq!((s.connect_ms.n, s.connect_ms.p50), (2, 20.0));
        assert_eq!((s.jitter_ms.n, s.jitter_ms.max), (2, 3.0));
        assert_eq!((s.underruns, s.violations), (2, 3));
        assert_eq!(
            s.violation_kinds,
            BTreeMap::from([("binary frame".to_string(), 1), ("schema".to_string(), 2)])
        );
        assert_eq!((s.tick_late_ms.n, s.tick_late_ms.max), (2, 1.5));
        assert_eq!(s.gateway_cpu_pct, Some(40.0));
        // (40 + 60) / 2 = 50 % over (10 + 30) / 2 = 20 calls.
        assert_eq!(s.gateway_cpu_pct_per_call, Some(2.5));
        // (110 + 130) / 2 − 50 = 70 MiB over 20 calls.
        assert_eq!(s.gateway_rss_mib_per_call, Some(3.5));
        assert_eq!(s.gateway_rss_peak_mib, Some(500.0));
    }

    #[test]
    fn summarize_without_resources_or_fakes() {
        let s = summarize(&[], &[], &[], None, 0.0, None);
        assert_eq!(s, Summary::default());
        let busy = [sample(5.0, 30.0, 100.0, 4)];
        let s = summarize(&[], &[], &busy, None, 0.0, None);
        assert_eq!(s.gateway_cpu_pct_per_call, Some(7.5));
        assert_eq!(s.gateway_rss_mib_per_call, None);
        let idle = [sample(5.0, 30.0, 100.0, 0)];
        let s = summarize(&[], &[], &idle, None, 0.0, Some(10.0));
        assert_eq!(s.gateway_cpu_pct, Some(30.0));
        assert_eq!(s.gateway_cpu_pct_per_call, None);
        assert_eq!(s.gateway_rss_mib_per_call, None);
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Connected),
            Just(Event::StreamStarted),
            Just(Event::PlaybackDrained),
            Just(Event::HungUp),
            ".{0,8}".prop_map(|reason| Event::ConnectFailed { reason }),
            ".{0,8}".prop_map(|reason| Event::Dropped { reason }),
            ".{0,12}".prop_map(|what| Event::Violation { what }),
            (0u32..4, any::<bool>())
                .prop_map(|(turn, barge_in)| Event::SpeechStart { turn, barge_in }),
            (0u32..4, any::<bool>(), any::<bool>()).prop_map(|(turn, barge_in, expect_reply)| {
                Event::SpeechEnd {
                    turn,
                    barge_in,
                    expect_reply,
                }
            }),
            (0u32..4, any::<bool>()).prop_map(|(turn, expect_reply)| Event::DtmfSent {
                turn,
                digits: "1".into(),
                expect_reply
            }),
            (
                any::<u32>(),
                proptest::option::of(any::<u32>()),
                any::<u32>()
            )
                .prop_map(|(audio_us, voiced_offset_us, queued_us)| Event::BotMedia {
                    audio_us,
                    voiced_offset_us,
                    queued_us
                }),
            any::<u32>().prop_map(|dropped_us| Event::BotClear { dropped_us }),
        ]
    }

    proptest! {
        #[test]
        fn random_timelines_never_panic_and_turns_add_up(
            steps in proptest::collection::vec((0u64..3_000_000, any_event()), 0..80),
            shuffled in any::<bool>(),
        ) {
            let mut at = 0u64;
            let events = steps
                .into_iter()
                .map(|(dt, event)| {
                    // Mostly increasing times; sometimes arbitrary, which must not panic either.
                    at = if shuffled { dt } else { at.saturating_add(dt) };
                    Stamped { at_us: at, event }
                })
                .collect();
            let timeline = Timeline { events };
            let m = analyze(0, 0.0, &timeline, &MeasureConfig::default());
            for turn in &m.turns {
                let states = [turn.response_ms.is_some(), turn.unanswered, turn.overlapped];
                prop_assert_eq!(states.iter().filter(|s| **s).count(), 1);
                prop_assert!(turn.voiced_ms.is_none() || turn.response_ms.is_some());
            }
            for barge in &m.barge_ins {
                prop_assert!(barge.clear_ms.is_none_or(|c| c <= 2000.0));
            }
            let s = summarize(std::slice::from_ref(&m), &[], &[], None, 0.0, None);
            prop_assert_eq!(s.answered + s.unanswered + s.overlapped, s.turns);
            prop_assert_eq!(s.calls, 1);
        }
    }
}
