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
