//! Answering-machine detection on the call audio: tells a human from a machine after an
//! outbound call is answered, then finds the moment to leave a voicemail.
//!
//! [`AmdDetector`] is fed 20 ms frames of the caller's audio with the VAD's voiced flag for each
//! frame, and runs a [`BeepDetector`] on the same audio. Times below are audio time since the
//! detector was created (its clock counts samples, never the wall clock).
//!
//! The *greeting* is the far end's first stretch of speech: from the first voiced frame to the
//! last one, with pauses shorter than [`AmdConfig::human_silence_ms`] counted as part of it.
//!
//! - **Human**: the greeting lasted at most [`AmdConfig::max_human_greeting_ms`] ("Hello?") and
//!   was followed by [`AmdConfig::human_silence_ms`] of silence: someone waiting for us.
//! - **Machine**: the greeting ran past [`AmdConfig::machine_speech_ms`], or a beep was heard.
//! - **Unknown**: nobody spoke for [`AmdConfig::no_speech_timeout_ms`] (the human who does not
//!   speak; the dialer then greets anyway), or a greeting too long for a human and too short for a
//!   machine ended in silence.
//! - After **Machine**, **ReadyForMessage** once a beep ends; without a beep once the greeting is
//!   followed by [`AmdConfig::machine_end_silence_ms`] of silence, or at the latest
//!   [`AmdConfig::max_message_wait_ms`] after the machine was recognised.
//!
//! A voiced run shorter than [`AmdConfig::min_speech_ms`] followed by silence is treated as a
//! click, not a greeting. Decisions are final: one of Human, Machine or Unknown is reported once,
//! and ReadyForMessage at most once, only after Machine.

use serde::{Deserialize, Serialize};

use crate::audio::beep::{BeepConfig, BeepDetector, BeepEnded, BeepError};

/// AMD thresholds (serde; every field optional, defaults below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmdConfig {
    /// Longest greeting still taken for a human ("Hello?"), ms; default 1500.
    pub max_human_greeting_ms: u32,
    /// Silence after a greeting that ends it (a human waiting for us), ms; default 800.
    pub human_silence_ms: u32,
    /// Greeting longer than this is a machine, ms; default 2500.
    pub machine_speech_ms: u32,
    /// No speech at all for this long gives Unknown, ms; default 5000.
    pub no_speech_timeout_ms: u32,
    /// Voiced time a greeting needs to count (shorter runs are clicks), ms; default 100.
    pub min_speech_ms: u32,
    /// After a machine's greeting, silence that means "speak now" when no beep came, ms;
    /// default 1000.
    pub machine_end_silence_ms: u32,
    /// Longest wait from Machine to ReadyForMessage, ms; default 30000.
    pub max_message_wait_ms: u32,
    /// The beep detector's settings.
    pub beep: BeepConfig,
}

impl Default for AmdConfig {
    fn default() -> Self {
        Self {
            max_human_greeting_ms: 1500,
            human_silence_ms: 800,
            machine_speech_ms: 2500,
            no_speech_timeout_ms: 5000,
            min_speech_ms: 100,
            machine_end_silence_ms: 1000,
            max_message_wait_ms: 30_000,
            beep: BeepConfig::default(),
        }
    }
}

/// Why an [`AmdDetector`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AmdError {
    /// A duration is zero or the human/machine thresholds overlap.
    #[error("invalid AMD setting {name} = {value} ms: {reason}")]
    InvalidSetting {
        /// Field name.
        name: &'static str,
        /// Offending value.
        value: u32,
        /// What it must satisfy.
        reason: &'static str,
    },
    /// The beep settings (or the sample rate) are invalid.
    #[error("AMD beep detector: {0}")]
    Beep(#[from] BeepError),
}

impl AmdConfig {
    /// Checks the settings for a stream at `sample_rate` Hz.
    pub fn validate(&self, sample_rate: u32) -> Result<(), AmdError> {
        let positive = [
            ("max_human_greeting_ms", self.max_human_greeting_ms),
            ("human_silence_ms", self.human_silence_ms),
            ("machine_speech_ms", self.machine_speech_ms),
            ("no_speech_timeout_ms", self.no_speech_timeout_ms),
            ("machine_end_silence_ms", self.machine_end_silence_ms),
            ("max_message_wait_ms", self.max_message_wait_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(AmdError::InvalidSetting {
                    name,
                    value,
                    reason: "must be above zero",
                });
            }
        }
        if self.machine_speech_ms <= self.max_human_greeting_ms {
            return Err(AmdError::InvalidSetting {
                name: "machine_speech_ms",
                value: self.machine_speech_ms,
                reason: "must exceed max_human_greeting_ms",
            });
        }
        if self.min_speech_ms > self.max_human_greeting_ms {
            return Err(AmdError::InvalidSetting {
                name: "min_speech_ms",
                value: self.min_speech_ms,
                reason: "must not exceed max_human_greeting_ms",
            });
        }
        self.beep.validate(sample_rate)?;
        Ok(())
    }
}

/// Why the far end was taken for a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineReason {
    /// The greeting ran past `machine_speech_ms`.
    LongGreeting,
    /// A beep was heard.
    Beep,
}

/// What an [`AmdDetector`] reports; `at_ms` is the audio time of the decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AmdEvent {
    /// A person answered and is waiting for us to speak.
    Human {
        /// Decision time, ms.
        at_ms: u64,
    },
    /// An answering machine or voicemail greeting.
    Machine {
        /// Decision time, ms.
        at_ms: u64,
        /// What gave it away.
        reason: MachineReason,
    },
    /// No decision could be made (nobody spoke, or an ambiguous greeting).
    Unknown {
        /// Decision time, ms.
        at_ms: u64,
    },
    /// The machine is recording: start the voicemail now.
    ReadyForMessage {
        /// Decision time, ms.
        at_ms: u64,
        /// The beep that ended, if it was a beep that gave the cue.
        beep: Option<BeepEnded>,
    },
}

/// The detector's verdict so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmdVerdict {
    /// Still listening.
    Listening,
    /// Decided: a person.
    Human,
    /// Decided: a machine; waiting for the moment to speak.
    Machine,
    /// Decided: a machine, and it is recording.
    ReadyForMessage,
    /// Decided: unknown.
    Unknown,
}

/// Streaming answering-machine detector for one answered call.
pub struct AmdDetector {
    config: AmdConfig,
    sample_rate: u32,
    beep: BeepDetector,
    beeps: Vec<BeepEnded>,
    verdict: AmdVerdict,
    /// Samples pushed so far.
    samples: u64,
    /// Start of the current greeting, ms.
    onset_ms: Option<u64>,
    /// End of the last voiced frame, ms.
    last_voiced_ms: Option<u64>,
    /// Voiced time in the current greeting, ms.
    voiced_ms: u64,
    /// When Machine was decided, ms.
    machine_at_ms: u64,
}

impl AmdDetector {
    /// Creates a detector for 8000 or 16000 Hz mono audio.
    pub fn new(sample_rate: u32, config: &AmdConfig) -> Result<Self, AmdError> {
        config.validate(sample_rate)?;
        Ok(Self {
            config: config.clone(),
            sample_rate,
            beep: BeepDetector::new(sample_rate, &config.beep)?,
            beeps: Vec::new(),
            verdict: AmdVerdict::Listening,
            samples: 0,
            onset_ms: None,
            last_voiced_ms: None,
            voiced_ms: 0,
            machine_at_ms: 0,
        })
    }

    /// The verdict so far.
    pub fn verdict(&self) -> AmdVerdict {
        self.verdict
    }

    /// Feeds one frame of audio (normally 20 ms) and the VAD's voiced flag for it; appends any
    /// decisions to `out` (at most two: Machine then ReadyForMessage when a beep decides both).
    pub fn push_frame(&mut self, pcm: &[i16], voiced: bool, out: &mut Vec<AmdEvent>) {
        let start_ms = self.now_ms();
        self.samples += pcm.len() as u64;
        let end_ms = self.now_ms();
        if matches!(
            self.verdict,
            AmdVerdict::Human | AmdVerdict::Unknown | AmdVerdict::ReadyForMessage
        ) {
            return;
        }
        self.beeps.clear();
        self.beep.push(pcm, &mut self.beeps);
        if let Some(&beep) = self.beeps.first() {
            if self.verdict == AmdVerdict::Listening {
                out.push(AmdEvent::Machine {
                    at_ms: end_ms,
                    reason: MachineReason::Beep,
                });
            }
            self.verdict = AmdVerdict::ReadyForMessage;
            out.push(AmdEvent::ReadyForMessage {
                at_ms: end_ms,
                beep: Some(beep),
            });
            return;
        }
        if voiced {
            let onset = *self.onset_ms.get_or_insert(start_ms);
            self.last_voiced_ms = Some(end_ms);
            self.voiced_ms += end_ms - start_ms;
            if self.verdict == AmdVerdict::Listening
                && end_ms - onset > u64::from(self.config.machine_speech_ms)
            {
                self.decide_machine(end_ms, out);
            }
        }
        match self.verdict {
            AmdVerdict::Listening if !voiced => self.listen_silence(end_ms, out),
            AmdVerdict::Machine => self.wait_for_message(end_ms, out),
            _ => {}
        }
    }

    /// Audio time pushed so far, ms.
    fn now_ms(&self) -> u64 {
        self.samples * 1000 / u64::from(self.sample_rate)
    }

    fn decide_machine(&mut self, at_ms: u64, out: &mut Vec<AmdEvent>) {
        self.verdict = AmdVerdict::Machine;
        self.machine_at_ms = at_ms;
        out.push(AmdEvent::Machine {
            at_ms,
            reason: MachineReason::LongGreeting,
        });
    }

    /// An unvoiced frame while still listening.
    fn listen_silence(&mut self, now: u64, out: &mut Vec<AmdEvent>) {
        let (Some(onset), Some(last)) = (self.onset_ms, self.last_voiced_ms) else {
            if now >= u64::from(self.config.no_speech_timeout_ms) {
                self.verdict = AmdVerdict::Unknown;
                out.push(AmdEvent::Unknown { at_ms: now });
            }
            return;
        };
        if now - last < u64::from(self.config.human_silence_ms) {
            return;
        }
        if self.voiced_ms < u64::from(self.config.min_speech_ms) {
            // A click or a burst of noise: forget it and keep waiting.
            self.onset_ms = None;
            self.last_voiced_ms = None;
            self.voiced_ms = 0;
            self.listen_silence(now, out);
            return;
        }
        if last - onset <= u64::from(self.config.max_human_greeting_ms) {
            self.verdict = AmdVerdict::Human;
            out.push(AmdEvent::Human { at_ms: now });
        } else {
            self.verdict = AmdVerdict::Unknown;
            out.push(AmdEvent::Unknown { at_ms: now });
        }
    }

    /// A frame after Machine: look for the end of the greeting or the time-out.
    fn wait_for_message(&mut self, now: u64, out: &mut Vec<AmdEvent>) {
        let silent_for = self.last_voiced_ms.map_or(0, |last| now - last);
        let waited = now - self.machine_at_ms;
        if silent_for >= u64::from(self.config.machine_end_silence_ms)
            || waited >= u64::from(self.config.max_message_wait_ms)
        {
            self.verdict = AmdVerdict::ReadyForMessage;
            out.push(AmdEvent::ReadyForMessage {
                at_ms: now,
                beep: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::vad::{Vad, VadConfig};
    use proptest::prelude::*;
    use std::f64::consts::PI;

    fn wav(name: &str) -> Vec<i16> {
        let path = format!("{}/fixtures/audio/{name}", env!("CARGO_MANIFEST_DIR"));
        hound::WavReader::open(&path)
            .unwrap()
            .samples::<i16>()
            .map(Result::unwrap)
            .collect()
    }

    /// Runs the VAD and AMD over `audio` in 20 ms frames at 8 kHz.
    fn run(audio: &[i16]) -> Vec<AmdEvent> {
        let mut vad = Vad::new(&VadConfig::default(), 8000).unwrap();
        let mut amd = AmdDetector::new(8000, &AmdConfig::default()).unwrap();
        let (mut frames, mut out) = (Vec::new(), Vec::new());
        for frame in audio.chunks(160) {
            frames.clear();
            vad.push(frame, &mut frames);
            let voiced = frames.iter().any(|f| f.voiced);
            amd.push_frame(frame, voiced, &mut out);
        }
        out
    }

    #[test]
    fn voicemail_fixture_is_machine_then_ready_right_after_the_beep() {
        let audio = wav("voicemail_greeting_beep.wav");
        let beep_end_ms = (audio.iter().rposition(|&s| s != 0).unwrap() as u64 + 1) / 8;
        let events = run(&audio);
        assert_eq!(events.len(), 2, "{events:?}");
        let AmdEvent::Machine { at_ms, reason } = events[0] else {
            panic!("{events:?}");
        };
        // The greeting (from ~100 ms) runs past 2.5 s before the beep.
        assert_eq!(reason, MachineReason::LongGreeting);
        assert!(at_ms > 2500 && at_ms < beep_end_ms - 500, "{events:?}");
        let AmdEvent::ReadyForMessage { at_ms, beep } = events[1] else {
            panic!("{events:?}");
        };
        let beep = beep.unwrap();
        assert!((beep.freq_hz - 1000.0).abs() < 10.0, "{beep:?}");
        // Within two frames of the beep's end.
        assert!(
            at_ms >= beep_end_ms && at_ms - beep_end_ms <= 40,
            "{at_ms} vs {beep_end_ms}"
        );
    }

    #[test]
    fn human_fixture_is_human_after_the_hello_and_a_pause() {
        let events = run(&wav("human_answer.wav"));
        assert_eq!(events.len(), 1, "{events:?}");
        let AmdEvent::Human { at_ms } = events[0] else {
            panic!("{events:?}");
        };
        // "Hello?" ends well before 1.5 s; 800 ms of silence later we know.
        assert!((900..=2400).contains(&at_ms), "{at_ms}");
    }

    #[test]
    fn silence_and_line_noise_give_unknown_at_the_time_out() {
        for name in ["silence_2s.wav", "line_noise_3s.wav"] {
            let one = wav(name);
            let audio: Vec<i16> = one.iter().cycle().take(6 * 8000).copied().collect();
            assert_eq!(run(&audio), [AmdEvent::Unknown { at_ms: 5000 }], "{name}");
        }
    }

    #[test]
    fn long_caller_speech_is_machine_and_short_answers_human() {
        // A 4 s sentence with no beep: machine, then ready once 1 s of silence follows.
        let mut audio = wav("caller_hello.wav");
        audio.extend(vec![0; 16000]);
        let events = run(&audio);
        assert!(
            matches!(
                events[..],
                [
                    AmdEvent::Machine {
                        reason: MachineReason::LongGreeting,
                        ..
                    },
                    AmdEvent::ReadyForMessage { beep: None, .. }
                ]
            ),
            "{events:?}"
        );
        let mut audio = wav("backchannel_okay.wav");
        audio.extend(vec![0; 8000]);
        assert!(matches!(run(&audio)[..], [AmdEvent::Human { .. }]));
    }

    /// Drives the state machine with flags only (silent audio, so no beep).
    fn flags(pattern: &[(bool, u32)]) -> Vec<AmdEvent> {
        let mut amd = AmdDetector::new(8000, &AmdConfig::default()).unwrap();
        let mut out = Vec::new();
        for &(voiced, ms) in pattern {
            for _ in 0..ms / 20 {
                amd.push_frame(&[0; 160], voiced, &mut out);
            }
        }
        out
    }

    #[test]
    fn thresholds_from_the_flags() {
        // 1.4 s greeting then 0.8 s silence: human, decided 800 ms after the greeting.
        assert_eq!(
            flags(&[(false, 200), (true, 1400), (false, 1000)]),
            [AmdEvent::Human { at_ms: 2400 }]
        );
        // 2 s greeting then silence: neither.
        assert_eq!(
            flags(&[(true, 2000), (false, 1000)]),
            [AmdEvent::Unknown { at_ms: 2800 }]
        );
        // Speech with short pauses adds up to a machine at 2.5 s.
        let events = flags(&[(true, 1000), (false, 500), (true, 1100), (false, 2000)]);
        assert_eq!(
            events,
            [
                AmdEvent::Machine {
                    at_ms: 2520,
                    reason: MachineReason::LongGreeting
                },
                AmdEvent::ReadyForMessage {
                    at_ms: 3600,
                    beep: None
                },
            ]
        );
        // A 40 ms click is not a greeting.
        assert_eq!(
            flags(&[(true, 40), (false, 6000)]),
            [AmdEvent::Unknown { at_ms: 5000 }]
        );
        // A machine that never pauses: ready at the wait limit.
        let events = flags(&[(true, 40_000)]);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            AmdEvent::ReadyForMessage {
                at_ms: 32_520,
                beep: None
            }
        );
    }

    #[test]
    fn a_beep_decides_machine_at_once() {
        let mut amd = AmdDetector::new(8000, &AmdConfig::default()).unwrap();
        let mut out = Vec::new();
        let tone: Vec<i16> = (0..4000)
            .map(|i| (16000.0 * (2.0 * PI * 850.0 * f64::from(i) / 8000.0).sin()) as i16)
            .collect();
        let mut audio = vec![0i16; 1600];
        audio.extend(tone);
        audio.extend(vec![0; 1600]);
        for frame in audio.chunks(160) {
            amd.push_frame(frame, frame.iter().any(|&s| s != 0), &mut out);
        }
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(
                out[0],
                AmdEvent::Machine {
                    reason: MachineReason::Beep,
                    at_ms: 740
                }
            ),
            "{out:?}"
        );
        assert!(
            matches!(
                out[1],
                AmdEvent::ReadyForMessage {
                    at_ms: 740,
                    beep: Some(_)
                }
            ),
            "{out:?}"
        );
        assert_eq!(amd.verdict(), AmdVerdict::ReadyForMessage);
    }

    #[test]
    fn config_is_validated_and_deserialised() {
        let ok = AmdConfig::default();
        assert!(AmdDetector::new(16000, &ok).is_ok());
        assert!(matches!(
            AmdDetector::new(11025, &ok),
            Err(AmdError::Beep(BeepError::UnsupportedRate(11025)))
        ));
        let bad = AmdConfig {
            machine_speech_ms: 1500,
            ..ok.clone()
        };
        assert!(matches!(
            bad.validate(8000),
            Err(AmdError::InvalidSetting {
                name: "machine_speech_ms",
                ..
            })
        ));
        let bad = AmdConfig {
            human_silence_ms: 0,
            ..ok.clone()
        };
        assert!(matches!(
            bad.validate(8000),
            Err(AmdError::InvalidSetting {
                name: "human_silence_ms",
                ..
            })
        ));
        let parsed: AmdConfig = serde_json::from_str(
            r#"{"machine_speech_ms": 3000, "beep": {"min_duration_ms": 100}}"#,
        )
        .unwrap();
        assert_eq!(parsed.machine_speech_ms, 3000);
        assert_eq!(parsed.beep.min_duration_ms, 100);
        assert_eq!(parsed.human_silence_ms, 800);
        assert!(serde_json::from_str::<AmdConfig>(r#"{"bogus": 1}"#).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn never_panics_and_decisions_are_final(
            steps in proptest::collection::vec((any::<bool>(), 0u8..4, 1usize..400), 0..400),
        ) {
            let mut amd = AmdDetector::new(8000, &AmdConfig::default()).unwrap();
            let mut out = Vec::new();
            let mut verdicts = vec![amd.verdict()];
            let mut t = 0usize;
            for (voiced, kind, len) in steps {
                // Silence, a 1 kHz tone, loud square-ish noise, or full-scale extremes.
                let frame: Vec<i16> = (0..len).map(|i| {
                    let n = t + i;
                    match kind {
                        0 => 0,
                        1 => (12000.0 * (2.0 * PI * 1000.0 * n as f64 / 8000.0).sin()) as i16,
                        2 => (n.wrapping_mul(2_654_435_761) >> 7) as i16,
                        _ => if n.is_multiple_of(2) { i16::MIN } else { i16::MAX },
                    }
                }).collect();
                t += len;
                amd.push_frame(&frame, voiced, &mut out);
                verdicts.push(amd.verdict());
            }
            // At most one classification, and it is the first event.
            let classes = out.iter().filter(|e| !matches!(e, AmdEvent::ReadyForMessage { .. })).count();
            prop_assert!(classes <= 1, "{:?}", out);
            if let Some(first) = out.first() {
                prop_assert!(!matches!(first, AmdEvent::ReadyForMessage { .. }), "{:?}", out);
            }
            // ReadyForMessage at most once, only after Machine, and last.
            let ready: Vec<usize> = out.iter().enumerate().filter(|(_, e)| matches!(e, AmdEvent::ReadyForMessage { .. })).map(|(i, _)| i).collect();
            prop_assert!(ready.len() <= 1);
            if let Some(&i) = ready.first() {
                prop_assert!(i == 1 && matches!(out[0], AmdEvent::Machine { .. }), "{:?}", out);
            }
            // Verdicts only move forward: Listening → (Machine →) final.
            let rank = |v: AmdVerdict| match v {
                AmdVerdict::Listening => 0,
                AmdVerdict::Machine => 1,
                _ => 2,
            };
            for w in verdicts.windows(2) {
                prop_assert!(rank(w[0]) <= rank(w[1]), "{:?}", verdicts);
                if rank(w[0]) == 2 {
                    prop_assert_eq!(w[0], w[1]);
                }
                if w[0] == AmdVerdict::Machine {
                    prop_assert!(matches!(w[1], AmdVerdict::Machine | AmdVerdict::ReadyForMessage));
                }
            }
            // Event times never go backwards.
            let at = |e: &AmdEvent| match *e {
                AmdEvent::Human { at_ms } | AmdEvent::Unknown { at_ms } | AmdEvent::Machine { at_ms, .. } | AmdEvent::ReadyForMessage { at_ms, .. } => at_ms,
            };
            prop_assert!(out.windows(2).all(|w| at(&w[0]) <= at(&w[1])));
        }
    }
}
