//! Turn-taking: when the caller starts speaking, when their turn ends, and when they interrupt
//! the bot.
//!
//! Works on 20 ms frames that the VAD has judged, with the echo guard's verdict folded in:
//! a frame counts as the caller's speech only if it is voiced **and** not explained as the
//! bot's own audio coming back. Hysteresis: speech starts after `min_speech` of such frames
//! (one unvoiced frame inside the run is bridged) — or `barge_in_min` while the bot is
//! speaking, which is a barge-in — and a turn ends after `end_of_turn_silence` without them.
//! The utterance handed on includes a preroll from before the onset (so the first syllable is
//! not cut) and is trimmed to a short tail after the last voiced frame.
//!
//! Pure: no clocks; positions are samples on the call's inbound timeline.

use std::collections::VecDeque;

/// Turn-taking tuning, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Caller speech before a turn starts.
    pub min_speech_ms: u32,
    /// Silence that ends a turn.
    pub end_of_turn_silence_ms: u32,
    /// Caller speech over the bot that interrupts it.
    pub barge_in_min_ms: u32,
    /// Audio kept from before the onset.
    pub preroll_ms: u32,
    /// Longest utterance; a longer one ends there.
    pub max_utterance_ms: u32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            min_speech_ms: 100,
            end_of_turn_silence_ms: 600,
            barge_in_min_ms: 100,
            preroll_ms: 200,
            max_utterance_ms: 30_000,
        }
    }
}

/// One judged 20 ms frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgedFrame<'a> {
    /// The frame's samples.
    pub pcm: &'a [i16],
    /// Inbound-timeline sample at the frame's end.
    pub end_sample: u64,
    /// The VAD called it speech.
    pub voiced: bool,
    /// The echo guard explained it as the bot's own audio.
    pub echo: bool,
}

/// What turn-taking noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The caller interrupted the bot (emitted just before `SpeechStarted`).
    BargeIn {
        /// First sample of the interrupting speech.
        onset_sample: u64,
    },
    /// The caller started speaking.
    SpeechStarted {
        /// First sample of the speech.
        onset_sample: u64,
    },
    /// The caller's turn ended.
    TurnEnded {
        /// The utterance, preroll included, trailing silence trimmed.
        audio: Vec<i16>,
        /// First sample of the speech.
        onset_sample: u64,
        /// Sample after the last voiced frame.
        end_sample: u64,
        /// The turn hit `max_utterance` rather than ending in silence.
        truncated: bool,
    },
}

#[derive(Debug)]
enum State {
    Idle,
    Speaking {
        utterance: Vec<i16>,
        /// Inbound sample of `utterance[0]`.
        start_sample: u64,
        onset_sample: u64,
        last_voiced_end: u64,
        silent_frames: u32,
    },
}

/// Trailing audio kept after the last voiced frame (ms).
const TAIL_MS: u64 = 120;

/// The turn-taking state machine of one call.
#[derive(Debug)]
pub struct TurnTaker {
    rate: u32,
    min_speech_frames: u32,
    barge_in_frames: u32,
    end_silence_frames: u32,
    preroll_samples: usize,
    max_utterance_samples: usize,
    /// Recent audio while idle: the preroll plus the current run.
    recent: VecDeque<i16>,
    recent_cap: usize,
    run_frames: u32,
    run_samples: u64,
    bridged: bool,
    state: State,
}

fn frames(ms: u32) -> u32 {
    ms.div_ceil(20).max(1)
}

impl TurnTaker {
    /// A turn-taker for audio at `sample_rate`.
    pub fn new(sample_rate: u32, config: TurnConfig) -> Self {
        let per_ms = |ms: u32| (u64::from(ms) * u64::from(sample_rate) / 1000) as usize;
        let preroll_samples = per_ms(config.preroll_ms);
        let longest_run = config.min_speech_ms.max(config.barge_in_min_ms) + 40;
        let recent_cap = preroll_samples + per_ms(longest_run);
        TurnTaker {
            rate: sample_rate,
            min_speech_frames: frames(config.min_speech_ms),
            barge_in_frames: frames(config.barge_in_min_ms),
            end_silence_frames: frames(config.end_of_turn_silence_ms),
            preroll_samples,
            max_utterance_samples: per_ms(config.max_utterance_ms).max(1),
            recent: VecDeque::with_capacity(recent_cap),
            recent_cap,
            run_frames: 0,
            run_samples: 0,
            bridged: false,
            state: State::Idle,
        }
    }

    /// Whether the caller is mid-turn.
    pub fn in_turn(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// Milliseconds of `samples` at this rate.
    pub fn ms(&self, samples: u64) -> u64 {
        samples * 1000 / u64::from(self.rate.max(1))
    }

    /// Feeds one judged frame; `bot_speaking` says whether the bot's audio is queued or playing.
    pub fn push(&mut self, frame: JudgedFrame<'_>, bot_speaking: bool, out: &mut Vec<TurnEvent>) {
        let speech = frame.voiced && !frame.echo;
        match &mut self.state {
            State::Idle => self.push_idle(frame, speech, bot_speaking, out),
            State::Speaking {
                utterance,
                start_sample,
                onset_sample,
                last_voiced_end,
                silent_frames,
            } => {
                utterance.extend_from_slice(frame.pcm);
                if speech {
                    *silent_frames = 0;
                    *last_voiced_end = frame.end_sample;
                } else {
                    *silent_frames += 1;
                }
                let truncated = utterance.len() >= self.max_utterance_samples;
                if *silent_frames >= self.end_silence_frames || truncated {
                    let tail = TAIL_MS * u64::from(self.rate) / 1000;
                    let keep_until = (*last_voiced_end + tail).min(frame.end_sample);
                    let keep =
                        (keep_until.saturating_sub(*start_sample) as usize).min(utterance.len());
                    let mut audio = std::mem::take(utterance);
                    audio.truncate(keep);
                    out.push(TurnEvent::TurnEnded {
                        audio,
                        onset_sample: *onset_sample,
                        end_sample: *last_voiced_end,
                        truncated,
                    });
                    self.state = State::Idle;
                    self.reset_run();
                }
            }
        }
    }

    fn push_idle(
        &mut self,
        frame: JudgedFrame<'_>,
        speech: bool,
        bot_speaking: bool,
        out: &mut Vec<TurnEvent>,
    ) {
        self.recent.extend(frame.pcm.iter().copied());
        while self.recent.len() > self.recent_cap {
            self.recent.pop_front();
        }
        if speech {
            self.run_frames += 1;
            self.run_samples += frame.pcm.len() as u64;
            self.bridged = false;
        } else if self.run_frames > 0 && !self.bridged {
            self.bridged = true;
            self.run_samples += frame.pcm.len() as u64;
        } else {
            self.reset_run();
        }
        let needed = if bot_speaking {
            self.barge_in_frames
        } else {
            self.min_speech_frames
        };
        if self.run_frames < needed {
            return;
        }
        let onset_sample = frame.end_sample.saturating_sub(self.run_samples);
        let keep = (self.run_samples as usize + self.preroll_samples).min(self.recent.len());
        let skip = self.recent.len() - keep;
        let mut utterance = Vec::with_capacity(self.rate as usize * 4);
        utterance.extend(self.recent.iter().skip(skip).copied());
        self.recent.clear();
        if bot_speaking {
            out.push(TurnEvent::BargeIn { onset_sample });
        }
        out.push(TurnEvent::SpeechStarted { onset_sample });
        self.state = State::Speaking {
            start_sample: frame.end_sample - keep as u64,
            utterance,
            onset_sample,
            last_voiced_end: frame.end_sample,
            silent_frames: 0,
        };
    }

    fn reset_run(&mut self) {
        self.run_frames = 0;
        self.run_samples = 0;
        self.bridged = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;
    const FRAME: usize = 160;

    /// Drives the taker with a pattern: 'v' voiced, '.' silent, 'e' voiced but echo.
    fn drive(
        taker: &mut TurnTaker,
        pattern: &str,
        bot_speaking: bool,
        start: &mut u64,
    ) -> Vec<TurnEvent> {
        let mut out = Vec::new();
        for c in pattern.chars() {
            let value = match c {
                'v' => 1000,
                'e' => 300,
                _ => 0,
            };
            let pcm = vec![value; FRAME];
            *start += FRAME as u64;
            taker.push(
                JudgedFrame {
                    pcm: &pcm,
                    end_sample: *start,
                    voiced: c != '.',
                    echo: c == 'e',
                },
                bot_speaking,
                &mut out,
            );
        }
        out
    }

    #[test]
    fn a_turn_starts_after_min_speech_and_ends_after_the_silence() {
        let mut taker = TurnTaker::new(RATE, TurnConfig::default());
        let mut t = 0;
        // 200 ms of silence (preroll), then 5 voiced frames (100 ms).
        assert!(drive(&mut taker, "..........vvvv", false, &mut t).is_empty());
        let events = drive(&mut taker, "v", false, &mut t);
        assert_eq!(
            events,
            vec![TurnEvent::SpeechStarted { onset_sample: 1600 }]
        );
        let pattern = format!("vvvvvv{}", ".".repeat(29));
        assert!(drive(&mut taker, &pattern, false, &mut t).is_empty());
        let events = drive(&mut taker, ".", false, &mut t);
        assert_eq!(events.len(), 1, "{events:?}");
        let TurnEvent::TurnEnded {
            audio,
            onset_sample,
            end_sample,
            truncated,
        } = &events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!(*onset_sample, 1600);
        assert_eq!(*end_sample, 1600 + 11 * 160);
        assert!(!truncated);
        // preroll 200 ms + 220 ms voiced + 120 ms tail
        assert_eq!(audio.len(), 1600 + 1760 + 960);
        assert!(audio[..1600].iter().all(|s| *s == 0));
        assert!(audio[1600..3360].iter().all(|s| *s == 1000));
        assert!(audio[3360..].iter().all(|s| *s == 0));
        assert!(!taker.in_turn());
    }

    #[test]
    fn a_short_click_is_not_speech_but_a_one_frame_gap_is_bridged() {
        let mut taker = TurnTaker::new(RATE, TurnConfig::default());
        let mut t = 0;
        assert!(drive(&mut taker, "vv..vv..v.", false, &mut t).is_empty());
        let events = drive(&mut taker, "vv.vv", false, &mut t);
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], TurnEvent::SpeechStarted { .. }));
    }

    #[test]
    fn echo_never_starts_a_turn_or_barges_in() {
        let mut taker = TurnTaker::new(RATE, TurnConfig::default());
        let mut t = 0;
        assert!(drive(&mut taker, &"e".repeat(200), true, &mut t).is_empty());
        assert!(drive(&mut taker, &"e".repeat(50), false, &mut t).is_empty());
    }

    #[test]
    fn speech_over_the_bot_is_a_barge_in() {
        let mut taker = TurnTaker::new(RATE, TurnConfig::default());
        let mut t = 0;
        let events = drive(&mut taker, "eeeeevvvvv", true, &mut t);
        assert_eq!(
            events,
            vec![
                TurnEvent::BargeIn { onset_sample: 800 },
                TurnEvent::SpeechStarted { onset_sample: 800 }
            ]
        );
    }

    #[test]
    fn echo_inside_a_turn_counts_as_silence() {
        let mut taker = TurnTaker::new(RATE, TurnConfig::default());
        let mut t = 0;
        drive(&mut taker, "vvvvv", false, &mut t);
        let events = drive(&mut taker, &"e".repeat(30), true, &mut t);
        assert!(matches!(events[..], [TurnEvent::TurnEnded { .. }]));
    }

    #[test]
    fn a_never_ending_turn_is_cut_at_max_utterance() {
        let config = TurnConfig {
            max_utterance_ms: 1000,
            ..TurnConfig::default()
        };
        let mut taker = TurnTaker::new(RATE, config);
        let mut t = 0;
        let events = drive(&mut taker, &"v".repeat(60), false, &mut t);
        let ended: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::TurnEnded {
                    audio, truncated, ..
                } => Some((audio.len(), *truncated)),
                _ => None,
            })
            .collect();
        assert_eq!(ended.len(), 1);
        assert!(ended[0].1);
        assert!(ended[0].0 <= 8000);
    }

    #[test]
    fn barge_in_threshold_applies_only_while_the_bot_speaks() {
        let config = TurnConfig {
            min_speech_ms: 60,
            barge_in_min_ms: 200,
            ..TurnConfig::default()
        };
        let mut taker = TurnTaker::new(RATE, config);
        let mut t = 0;
        assert!(
            drive(&mut taker, "vvvvvvvvv", true, &mut t).is_empty(),
            "180 ms < 200 ms"
        );
        let events = drive(&mut taker, "v", true, &mut t);
        assert!(matches!(events[0], TurnEvent::BargeIn { .. }));
        let mut taker = TurnTaker::new(RATE, config);
        let events = drive(&mut taker, "vvv", false, &mut t);
        assert!(matches!(events[0], TurnEvent::SpeechStarted { .. }));
    }
}
