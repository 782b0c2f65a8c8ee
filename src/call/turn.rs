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
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
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
    /// With a recognizer: silence after which a stable transcript is answered speculatively
    /// (0 turns speculation off).
    pub speculate_after_ms: u32,
    /// With a recognizer: how long to wait for the final transcript after our VAD ended the
    /// turn and `Finalize` was sent.
    pub finalize_timeout_ms: u32,
    /// How long a barge-in stays undoable: speech that ends within this time and is noise
    /// or a backchannel resumes the bot.
    pub barge_in_confirm_ms: u32,
    /// Words that acknowledge rather than interrupt ("uh-huh", "mm-hm").
    pub backchannels: Vec<String>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            min_speech_ms: 100,
            end_of_turn_silence_ms: 600,
            barge_in_min_ms: 100,
            preroll_ms: 200,
            max_utterance_ms: 30_000,
            speculate_after_ms: 200,
            finalize_timeout_ms: 700,
            barge_in_confirm_ms: 500,
            backchannels: [
                "uh-huh", "uh huh", "mm-hm", "mm-hmm", "mm hmm", "mhm", "hmm", "mm", "uh", "um",
                "yeah", "yep", "ok", "okay", "right", "sure", "i see", "got it", "alright",
            ]
            .map(String::from)
            .to_vec(),
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

    /// Samples of silence since the caller's last voiced frame, while mid-turn.
    pub fn silence_samples(&self, now: u64) -> Option<u64> {
        match &self.state {
            State::Speaking {
                last_voiced_end, ..
            } => Some(now.saturating_sub(*last_voiced_end)),
            State::Idle => None,
        }
    }

    /// Ends the caller's turn now (the recognizer heard the end first); `None` if idle.
    pub fn end_turn_now(&mut self, now: u64) -> Option<TurnEvent> {
        let State::Speaking {
            utterance,
            start_sample,
            onset_sample,
            last_voiced_end,
            ..
        } = &mut self.state
        else {
            return None;
        };
        let tail = TAIL_MS * u64::from(self.rate) / 1000;
        let keep_until = (*last_voiced_end + tail).min(now.max(*last_voiced_end));
        let keep = (keep_until.saturating_sub(*start_sample) as usize).min(utterance.len());
        let mut audio = std::mem::take(utterance);
        audio.truncate(keep);
        let event = TurnEvent::TurnEnded {
            audio,
            onset_sample: *onset_sample,
            end_sample: *last_voiced_end,
            truncated: false,
        };
        self.state = State::Idle;
        self.reset_run();
        Some(event)
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
        // Keep the newest `recent_cap` samples: drop the oldest first, so the ring never
        // grows past the capacity it was made with (no reallocation on the media path).
        let pcm = &frame.pcm[frame.pcm.len().saturating_sub(self.recent_cap)..];
        let excess = (self.recent.len() + pcm.len()).saturating_sub(self.recent_cap);
        self.recent.drain(..excess);
        self.recent.extend(pcm.iter().copied());
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

/// Normalizes a transcript for comparison: lower case, letters, digits and apostrophes, words
/// separated by single spaces.
///
/// ```
/// use voicegw::call::turn::normalize_transcript;
/// assert_eq!(normalize_transcript("  Yes, I'd like   THAT! "), "yes i'd like that");
/// ```
pub fn normalize_transcript(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-'))
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// Whether `transcript` says nothing but acknowledgements from `backchannels` ("uh-huh",
/// "yeah, okay"). An empty transcript is not a backchannel (it is noise).
pub fn is_backchannel(transcript: &str, backchannels: &[String]) -> bool {
    let words: Vec<String> = normalize_transcript(transcript)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| w.replace('-', " "))
        .collect();
    let words: Vec<&str> = words.iter().flat_map(|w| w.split(' ')).collect();
    if words.is_empty() {
        return false;
    }
    let phrases: Vec<Vec<String>> = backchannels
        .iter()
        .map(|p| {
            normalize_transcript(p)
                .replace('-', " ")
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|p: &Vec<String>| !p.is_empty())
        .collect();
    // Longest phrase first at each position (greedy cover).
    let mut i = 0;
    'outer: while i < words.len() {
        let mut best = 0;
        for phrase in &phrases {
            let n = phrase.len();
            if n > best
                && i + n <= words.len()
                && phrase.iter().zip(&words[i..i + n]).all(|(a, b)| a == b)
            {
                best = n;
            }
        }
        if best == 0 {
            return false;
        }
        i += best;
        continue 'outer;
    }
    true
}

/// What the turn judge decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Ask the recognizer to finalize now.
    Finalize,
    /// The caller went quiet with a stable transcript: answer it speculatively.
    Speculate {
        /// The transcript so far.
        transcript: String,
    },
    /// The caller went on (or the transcript changed): drop the speculation.
    Resumed,
    /// The recognizer heard the end first: end the VAD turn now
    /// ([`TurnTaker::end_turn_now`]) and hand its `TurnEnded` back.
    EndTurnNow,
    /// The caller's turn is over.
    Complete {
        /// The utterance (empty if our VAD never heard it).
        audio: Vec<i16>,
        /// First sample of the speech.
        onset_sample: u64,
        /// Sample after the last voiced frame.
        end_sample: u64,
        /// What the recognizer heard (`None` without a recognizer).
        transcript: Option<String>,
    },
    /// The turn had no words (noise, a cough): nothing to answer.
    Noise {
        /// First sample of the sound.
        onset_sample: u64,
        /// Its end.
        end_sample: u64,
    },
}

/// A VAD turn end waiting for the recognizer's final words.
#[derive(Debug, Clone)]
struct PendingEnd {
    audio: Vec<i16>,
    onset_sample: u64,
    end_sample: u64,
    deadline: u64,
}

/// Decides when a caller's turn is over from our VAD and the recognizer together.
///
/// Phone-tuned rules: the turn ends at the first of (a) the recognizer's `speech_final` while
/// our VAD hears silence, (b) our VAD's end of turn, after which `Finalize` is sent and the
/// `from_finalize` result (or `finalize_timeout`) closes it, (c) `UtteranceEnd` (the noise
/// backstop). When the caller has been quiet for `speculate_after` and the recognizer has
/// words, it proposes a speculative answer; any voiced frame after that withdraws it. Results
/// that end before the last completed turn belong to it and are ignored.
///
/// Pure: positions are samples on the call's inbound timeline; recognizer times are ms on the
/// same timeline.
#[derive(Debug)]
pub struct TurnJudge {
    rate: u32,
    stt: bool,
    speculate_after: u64,
    finalize_timeout: u64,
    finals: Vec<String>,
    interim: String,
    pending: Option<PendingEnd>,
    speculated: Option<String>,
    speech_final: bool,
    boundary_ms: u64,
}

impl TurnJudge {
    /// A judge for audio at `sample_rate`; `stt` says whether the call has a recognizer.
    pub fn new(sample_rate: u32, config: &TurnConfig, stt: bool) -> Self {
        let samples = |ms: u32| u64::from(ms) * u64::from(sample_rate) / 1000;
        TurnJudge {
            rate: sample_rate.max(1),
            stt,
            speculate_after: samples(config.speculate_after_ms),
            finalize_timeout: samples(config.finalize_timeout_ms),
            finals: Vec::new(),
            interim: String::new(),
            pending: None,
            speculated: None,
            speech_final: false,
            boundary_ms: 0,
        }
    }

    fn ms(&self, sample: u64) -> u64 {
        sample * 1000 / u64::from(self.rate)
    }

    /// The words of the current turn so far: its final segments, then the latest interim.
    pub fn transcript(&self) -> String {
        let mut out = self.finals.join(" ");
        if !self.interim.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&self.interim);
        }
        out
    }

    /// Whether a speculative answer is out.
    pub fn speculating(&self) -> bool {
        self.speculated.is_some()
    }

    /// One judged frame ending at `now`: `speech` if voiced and not echo; `silence` is the
    /// taker's [`TurnTaker::silence_samples`] (`None` when the caller is not mid-turn).
    pub fn on_frame(
        &mut self,
        now: u64,
        speech: bool,
        silence: Option<u64>,
        out: &mut Vec<Judgement>,
    ) {
        if speech && self.speculated.take().is_some() {
            out.push(Judgement::Resumed);
        }
        if let Some(silence) = silence
            && self.stt
            && self.speculate_after > 0
            && self.speculated.is_none()
            && !speech
            && silence >= self.speculate_after
        {
            let transcript = self.transcript();
            if !normalize_transcript(&transcript).is_empty() {
                self.speculated = Some(normalize_transcript(&transcript));
                out.push(Judgement::Speculate { transcript });
            }
        }
        if self.pending.as_ref().is_some_and(|p| now >= p.deadline) {
            self.complete_pending(out);
        }
    }

    /// Our VAD ended the caller's turn at `now` (a `TurnEnded` from the taker).
    pub fn on_turn_ended(&mut self, event: TurnEvent, now: u64, out: &mut Vec<Judgement>) {
        let TurnEvent::TurnEnded {
            audio,
            onset_sample,
            end_sample,
            ..
        } = event
        else {
            return;
        };
        if !self.stt {
            out.push(Judgement::Complete {
                audio,
                onset_sample,
                end_sample,
                transcript: None,
            });
            return;
        }
        self.pending = Some(PendingEnd {
            audio,
            onset_sample,
            end_sample,
            deadline: now + self.finalize_timeout,
        });
        if self.speech_final {
            self.complete_pending(out);
        } else {
            out.push(Judgement::Finalize);
        }
    }

    /// A recognizer event at `now`; `silence` as in [`on_frame`](Self::on_frame).
    pub fn on_stt(
        &mut self,
        event: &crate::stt::SttEvent,
        now: u64,
        silence: Option<u64>,
        out: &mut Vec<Judgement>,
    ) {
        use crate::stt::SttEvent;
        let quiet_mid_turn = silence.is_some_and(|s| s > 0);
        match event {
            SttEvent::Interim { text, end_ms, .. } => {
                if *end_ms < self.boundary_ms {
                    return;
                }
                let before = normalize_transcript(&self.transcript());
                self.interim = text.trim().to_owned();
                let after = normalize_transcript(&self.transcript());
                if after != before && self.speculated.as_ref().is_some_and(|s| *s != after) {
                    self.speculated = None;
                    out.push(Judgement::Resumed);
                }
            }
            SttEvent::Final {
                text,
                end_ms,
                speech_final,
                from_finalize,
                ..
            } => {
                if *end_ms < self.boundary_ms && !text.trim().is_empty() {
                    return;
                }
                let before = normalize_transcript(&self.transcript());
                self.interim.clear();
                if !text.trim().is_empty() {
                    self.finals.push(text.trim().to_owned());
                }
                let after = normalize_transcript(&self.transcript());
                if after != before && self.speculated.as_ref().is_some_and(|s| *s != after) {
                    self.speculated = None;
                    out.push(Judgement::Resumed);
                }
                if self.pending.is_some() {
                    if *from_finalize || *speech_final {
                        self.complete_pending(out);
                    }
                } else if *speech_final {
                    if quiet_mid_turn {
                        self.speech_final = true;
                        out.push(Judgement::EndTurnNow);
                    } else if silence.is_none() && !after.is_empty() {
                        // Words our VAD never heard as a turn (soft speech): still a turn.
                        let end_sample = end_ms * u64::from(self.rate) / 1000;
                        self.pending = Some(PendingEnd {
                            audio: Vec::new(),
                            onset_sample: end_sample,
                            end_sample,
                            deadline: now,
                        });
                        self.complete_pending(out);
                    } else {
                        // The caller is still voicing: the turn goes on.
                        self.speech_final = false;
                    }
                }
            }
            SttEvent::UtteranceEnd { .. } => {
                if self.pending.is_some() {
                    self.complete_pending(out);
                } else if quiet_mid_turn && !self.transcript().trim().is_empty() {
                    self.speech_final = true;
                    out.push(Judgement::EndTurnNow);
                }
            }
            SttEvent::SpeechStarted { .. }
            | SttEvent::Reconnected { .. }
            | SttEvent::Failed { .. } => {}
        }
    }

    /// The recognizer is gone: judge on VAD alone from now on.
    pub fn lose_stt(&mut self, out: &mut Vec<Judgement>) {
        self.stt = false;
        if self.pending.is_some() {
            self.complete_pending(out);
        }
    }

    fn complete_pending(&mut self, out: &mut Vec<Judgement>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let transcript = self.transcript();
        self.finals.clear();
        self.interim.clear();
        self.speculated = None;
        self.speech_final = false;
        self.boundary_ms = self.ms(pending.end_sample) + 100;
        if normalize_transcript(&transcript).is_empty() && self.stt {
            out.push(Judgement::Noise {
                onset_sample: pending.onset_sample,
                end_sample: pending.end_sample,
            });
            return;
        }
        out.push(Judgement::Complete {
            audio: pending.audio,
            onset_sample: pending.onset_sample,
            end_sample: pending.end_sample,
            transcript: Some(transcript).filter(|t| !t.trim().is_empty()),
        });
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
    fn the_idle_ring_keeps_the_newest_samples_without_growing() {
        let mut taker = TurnTaker::new(RATE, TurnConfig::default());
        let cap = taker.recent_cap;
        let capacity = taker.recent.capacity();
        let mut out = Vec::new();
        let mut next = 0i16;
        // Odd-sized frames, and one longer than the whole ring.
        for len in [7usize, 160, 3, 320, 1, cap + 5, 160, 11, 160, 90] {
            let pcm: Vec<i16> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            let before: Vec<i16> = taker.recent.iter().copied().collect();
            taker.push(
                JudgedFrame {
                    pcm: &pcm,
                    end_sample: 0,
                    voiced: false,
                    echo: false,
                },
                false,
                &mut out,
            );
            let mut expected = before;
            expected.extend_from_slice(&pcm);
            let expected = &expected[expected.len().saturating_sub(cap)..];
            assert!(
                taker.recent.iter().eq(expected.iter()),
                "after a {len}-sample frame"
            );
            assert_eq!(taker.recent.capacity(), capacity, "the ring reallocated");
        }
        assert!(out.is_empty());
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
        let mut taker = TurnTaker::new(RATE, config.clone());
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
        let mut taker = TurnTaker::new(RATE, config.clone());
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

    mod judge {
        use super::super::*;
        use crate::stt::SttEvent;

        const RATE: u32 = 8000;

        fn config() -> TurnConfig {
            TurnConfig::default()
        }

        fn ended(end_sample: u64) -> TurnEvent {
            TurnEvent::TurnEnded {
                audio: vec![1; 800],
                onset_sample: 800,
                end_sample,
                truncated: false,
            }
        }

        fn final_(text: &str, end_ms: u64, speech_final: bool, from_finalize: bool) -> SttEvent {
            SttEvent::Final {
                text: text.into(),
                start_ms: 100,
                end_ms,
                speech_final,
                from_finalize,
            }
        }

        fn interim(text: &str, end_ms: u64) -> SttEvent {
            SttEvent::Interim {
                text: text.into(),
                start_ms: 100,
                end_ms,
            }
        }

        #[test]
        fn without_a_recognizer_the_vad_turn_is_the_turn() {
            let mut judge = TurnJudge::new(RATE, &config(), false);
            let mut out = Vec::new();
            judge.on_turn_ended(ended(8000), 12_800, &mut out);
            assert!(matches!(
                &out[..],
                [Judgement::Complete {
                    transcript: None,
                    end_sample: 8000,
                    ..
                }]
            ));
        }

        #[test]
        fn speech_final_in_silence_ends_the_turn_before_the_vad_does() {
            let mut judge = TurnJudge::new(RATE, &config(), true);
            let mut out = Vec::new();
            judge.on_stt(&interim("book a", 900), 7200, Some(0), &mut out);
            assert!(out.is_empty());
            // Still voicing: speech_final is ignored.
            judge.on_stt(
                &final_("book a table", 1000, true, false),
                8000,
                Some(0),
                &mut out,
            );
            assert!(out.is_empty(), "{out:?}");
            // Quiet for 300 ms: the recognizer's end of speech ends the turn.
            judge.on_stt(
                &final_("for two", 1300, true, false),
                10_400,
                Some(2400),
                &mut out,
            );
            assert_eq!(out, vec![Judgement::EndTurnNow]);
            out.clear();
            judge.on_turn_ended(ended(8000), 10_400, &mut out);
            match &out[..] {
                [Judgement::Complete { transcript, .. }] => {
                    assert_eq!(transcript.as_deref(), Some("book a table for two"));
                }
                other => panic!("{other:?}"),
            }
            // A late result of that turn is ignored.
            out.clear();
            judge.on_stt(
                &final_("table for two", 1050, false, true),
                11_000,
                None,
                &mut out,
            );
            assert_eq!(judge.transcript(), "");
        }

        #[test]
        fn vad_end_sends_finalize_and_the_finalized_result_completes() {
            let mut judge = TurnJudge::new(RATE, &config(), true);
            let mut out = Vec::new();
            judge.on_stt(&interim("hello there", 1000), 8000, Some(0), &mut out);
            judge.on_turn_ended(ended(8800), 13_600, &mut out);
            assert_eq!(out, vec![Judgement::Finalize]);
            out.clear();
            judge.on_stt(
                &final_("hello there", 1100, false, true),
                14_000,
                None,
                &mut out,
            );
            match &out[..] {
                [Judgement::Complete { transcript, .. }] => {
                    assert_eq!(transcript.as_deref(), Some("hello there"))
                }
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn finalize_timeout_completes_with_the_interim_and_no_words_is_noise() {
            let mut judge = TurnJudge::new(RATE, &config(), true);
            let mut out = Vec::new();
            judge.on_stt(&interim("maybe", 1000), 8000, Some(0), &mut out);
            judge.on_turn_ended(ended(8800), 13_600, &mut out);
            out.clear();
            judge.on_frame(13_600 + 5_599, false, None, &mut out);
            assert!(out.is_empty(), "700 ms not yet over");
            judge.on_frame(13_600 + 5_600, false, None, &mut out);
            assert!(
                matches!(&out[..], [Judgement::Complete { transcript: Some(t), .. }] if t == "maybe")
            );
            out.clear();
            // A cough: the VAD saw a turn, the recognizer no words.
            judge.on_turn_ended(ended(30_000), 34_800, &mut out);
            out.clear();
            judge.on_stt(&final_("", 3900, false, true), 35_000, None, &mut out);
            assert!(matches!(&out[..], [Judgement::Noise { .. }]), "{out:?}");
        }

        #[test]
        fn speculation_after_quiet_and_withdrawn_when_the_caller_goes_on() {
            let mut judge = TurnJudge::new(RATE, &config(), true);
            let mut out = Vec::new();
            judge.on_stt(
                &interim("what time do you open", 1000),
                8000,
                Some(0),
                &mut out,
            );
            judge.on_frame(8000 + 800, false, Some(800), &mut out);
            assert!(out.is_empty(), "100 ms of quiet is too soon");
            judge.on_frame(8000 + 1600, false, Some(1600), &mut out);
            assert_eq!(
                out,
                vec![Judgement::Speculate {
                    transcript: "what time do you open".into()
                }]
            );
            assert!(judge.speculating());
            out.clear();
            judge.on_frame(8000 + 1760, true, Some(0), &mut out);
            assert_eq!(out, vec![Judgement::Resumed]);
            out.clear();
            // A changed transcript also withdraws it.
            judge.on_frame(8000 + 4000, false, Some(1600), &mut out);
            assert!(matches!(&out[..], [Judgement::Speculate { .. }]));
            out.clear();
            judge.on_stt(
                &interim("what time do you open on sunday", 1500),
                12_000,
                Some(1600),
                &mut out,
            );
            assert_eq!(out, vec![Judgement::Resumed]);
        }

        #[test]
        fn no_speculation_without_words_or_when_turned_off() {
            let mut judge = TurnJudge::new(RATE, &config(), true);
            let mut out = Vec::new();
            judge.on_frame(10_000, false, Some(4000), &mut out);
            assert!(out.is_empty());
            let off = TurnConfig {
                speculate_after_ms: 0,
                ..config()
            };
            let mut judge = TurnJudge::new(RATE, &off, true);
            judge.on_stt(&interim("hi", 500), 4000, Some(0), &mut out);
            judge.on_frame(10_000, false, Some(4000), &mut out);
            assert!(out.is_empty());
        }

        #[test]
        fn utterance_end_is_the_noise_backstop() {
            let mut judge = TurnJudge::new(RATE, &config(), true);
            let mut out = Vec::new();
            judge.on_stt(
                &final_("i said yes", 1200, false, false),
                9000,
                Some(80),
                &mut out,
            );
            assert!(out.is_empty());
            judge.on_stt(
                &SttEvent::UtteranceEnd {
                    last_word_end_ms: 1200,
                },
                17_000,
                Some(160),
                &mut out,
            );
            assert_eq!(out, vec![Judgement::EndTurnNow]);
        }

        #[test]
        fn losing_the_recognizer_completes_a_waiting_turn() {
            let mut judge = TurnJudge::new(RATE, &config(), true);
            let mut out = Vec::new();
            judge.on_turn_ended(ended(8800), 13_600, &mut out);
            out.clear();
            judge.lose_stt(&mut out);
            assert!(matches!(
                &out[..],
                [Judgement::Complete {
                    transcript: None,
                    ..
                }]
            ));
        }

        #[test]
        fn backchannels_are_recognised_and_real_words_are_not() {
            let words = config().backchannels;
            for yes in [
                "uh-huh",
                "Mm-hm.",
                "yeah, okay",
                "Right right",
                "Uh huh, got it",
            ] {
                assert!(is_backchannel(yes, &words), "{yes}");
            }
            for no in [
                "",
                "wait",
                "no stop",
                "yeah but what about tuesday",
                "okay cancel it",
            ] {
                assert!(!is_backchannel(no, &words), "{no}");
            }
        }
    }
}
