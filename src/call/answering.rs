//! Who answered an outbound call: the gate that holds the agent's greeting while the callee
//! is listened to ([`AmdDetector`] on the callee's audio, and the carrier's verdict when it
//! comes first), then greets a person or leaves a voicemail on a machine.
//!
//! [`AnswerGate`] is pure: the session feeds it the callee's VAD frames, the carrier's
//! `AnsweredBy` verdicts and the voicemail audio once it is ready, and carries out the
//! [`GateStep`]s it returns. Times are the call's audio time (ms since the stream started).
//!
//! - A person (a short "Hello?" then silence), nobody speaking for
//!   [`OutboundPlan::greet_after_silence_ms`], or an ambiguous greeting: [`GateStep::Greet`].
//! - A machine: [`GateStep::Machine`], then once it records (its beep ended, or its greeting
//!   ended without a beep, or the carrier said `machine_end_*`) [`GateStep::Ready`] and
//!   [`GateStep::Leave`] with the message, as soon as its audio is ready. With no message (or
//!   a fax) [`GateStep::HangUp`] at once.

use super::agent::Speech;
use super::registry::OutboundPlan;
use crate::dialer::amd::{AmdConfig, AmdDetector, AmdError, AmdEvent};

/// Who gave a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictBy {
    /// The gateway's own detector.
    Gateway,
    /// The carrier's answering-machine detection.
    Carrier,
}

/// What the session must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum GateStep {
    /// A person (or nobody said anything): start the agent now.
    Greet {
        /// `human` or `unknown`.
        verdict: String,
        /// Who decided.
        by: VerdictBy,
        /// When, ms.
        at_ms: u64,
    },
    /// A machine answered; its greeting is still playing.
    Machine {
        /// `machine_start` or the carrier's verdict.
        verdict: String,
        /// Who decided.
        by: VerdictBy,
        /// When, ms.
        at_ms: u64,
    },
    /// The machine is recording now.
    Ready {
        /// `machine_end_beep`, `machine_end_silence` or the carrier's `machine_end_*`.
        verdict: String,
        /// Who decided.
        by: VerdictBy,
        /// When, ms.
        at_ms: u64,
    },
    /// Play the voicemail now, then hang up.
    Leave {
        /// The message.
        speech: Speech,
        /// The cue was a beep.
        beep: bool,
        /// When the machine was ready, ms.
        ready_ms: u64,
    },
    /// A machine with nothing to leave on it: hang up now.
    HangUp {
        /// Why there is no message, when one was meant to be left.
        error: Option<String>,
    },
}

/// Where the gate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Still listening: person or machine?
    Listening,
    /// A machine; waiting for it to record.
    Machine,
    /// The message is playing.
    Leaving,
    /// Decided and done (greeted or hung up).
    Done,
}

/// The voicemail message's audio.
#[derive(Debug)]
enum Message {
    /// Being synthesized.
    Preparing,
    /// Ready to play.
    Ready(Speech),
    /// There is none (or it could not be made: why).
    Missing(Option<String>),
}

/// Holds an outbound call's greeting until it is known who answered.
pub struct AnswerGate {
    detector: AmdDetector,
    events: Vec<AmdEvent>,
    phase: Phase,
    message: Message,
    /// The machine is ready for the message (beep?, when) but its audio is not.
    cue: Option<(bool, u64)>,
}

impl std::fmt::Debug for AnswerGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerGate")
            .field("phase", &self.phase)
            .field("message", &self.message)
            .field("cue", &self.cue)
            .finish_non_exhaustive()
    }
}

impl AnswerGate {
    /// A gate for a call at `sample_rate` Hz following `plan`; `has_message` says whether a
    /// voicemail is being prepared (see [`AnswerGate::message_ready`]).
    pub fn new(sample_rate: u32, plan: &OutboundPlan, has_message: bool) -> Result<Self, AmdError> {
        let config = AmdConfig {
            no_speech_timeout_ms: plan.greet_after_silence_ms,
            ..AmdConfig::default()
        };
        Ok(AnswerGate {
            detector: AmdDetector::new(sample_rate, &config)?,
            events: Vec::with_capacity(2),
            phase: Phase::Listening,
            message: if has_message {
                Message::Preparing
            } else {
                Message::Missing(None)
            },
            cue: None,
        })
    }

    /// Whether the agent must still wait (the callee's audio is the gate's, not the agent's).
    pub fn holds(&self) -> bool {
        matches!(
            self.phase,
            Phase::Listening | Phase::Machine | Phase::Leaving
        )
    }

    /// One frame of the callee's audio and the VAD's voiced flag for it.
    pub fn push_frame(&mut self, pcm: &[i16], voiced: bool, out: &mut Vec<GateStep>) {
        if !matches!(self.phase, Phase::Listening | Phase::Machine) {
            return;
        }
        self.events.clear();
        self.detector.push_frame(pcm, voiced, &mut self.events);
        for i in 0..self.events.len() {
            match self.events[i] {
                AmdEvent::Human { at_ms } => self.greet("human", VerdictBy::Gateway, at_ms, out),
                AmdEvent::Unknown { at_ms } => {
                    self.greet("unknown", VerdictBy::Gateway, at_ms, out)
                }
                AmdEvent::Machine { at_ms, .. } => {
                    self.machine("machine_start", VerdictBy::Gateway, at_ms, out)
                }
                AmdEvent::ReadyForMessage { at_ms, beep } => {
                    let verdict = if beep.is_some() {
                        "machine_end_beep"
                    } else {
                        "machine_end_silence"
                    };
                    self.ready(verdict, beep.is_some(), VerdictBy::Gateway, at_ms, out)
                }
            }
        }
    }

    /// The carrier's `AnsweredBy` verdict, arriving at `at_ms`. `unknown` (or anything not
    /// understood) leaves the decision to the gateway's detector.
    pub fn carrier_verdict(&mut self, verdict: &str, at_ms: u64, out: &mut Vec<GateStep>) {
        let by = VerdictBy::Carrier;
        match verdict {
            "human" => self.greet(verdict, by, at_ms, out),
            "machine_start" => self.machine(verdict, by, at_ms, out),
            "machine_end_beep" => self.ready(verdict, true, by, at_ms, out),
            "machine_end_silence" | "machine_end_other" => {
                self.ready(verdict, false, by, at_ms, out)
            }
            "fax" => {
                if matches!(self.phase, Phase::Listening | Phase::Machine) {
                    out.push(GateStep::Machine {
                        verdict: verdict.to_owned(),
                        by,
                        at_ms,
                    });
                    out.push(GateStep::HangUp { error: None });
                    self.phase = Phase::Done;
                }
            }
            _ => {}
        }
    }

    /// The voicemail's audio (or why it could not be made).
    pub fn message_ready(&mut self, result: Result<Speech, String>, out: &mut Vec<GateStep>) {
        if !matches!(self.message, Message::Preparing) {
            return;
        }
        self.message = match result {
            Ok(speech) => Message::Ready(speech),
            Err(error) => Message::Missing(Some(error)),
        };
        if let Some((beep, ready_ms)) = self.cue.take() {
            self.leave(beep, ready_ms, out);
        }
    }

    fn greet(&mut self, verdict: &str, by: VerdictBy, at_ms: u64, out: &mut Vec<GateStep>) {
        if self.phase != Phase::Listening {
            return;
        }
        self.phase = Phase::Done;
        out.push(GateStep::Greet {
            verdict: verdict.to_owned(),
            by,
            at_ms,
        });
    }

    fn machine(&mut self, verdict: &str, by: VerdictBy, at_ms: u64, out: &mut Vec<GateStep>) {
        if self.phase != Phase::Listening {
            return;
        }
        self.phase = Phase::Machine;
        out.push(GateStep::Machine {
            verdict: verdict.to_owned(),
            by,
            at_ms,
        });
        if let Message::Missing(error) = &self.message {
            out.push(GateStep::HangUp {
                error: error.clone(),
            });
            self.phase = Phase::Done;
        }
    }

    fn ready(
        &mut self,
        verdict: &str,
        beep: bool,
        by: VerdictBy,
        at_ms: u64,
        out: &mut Vec<GateStep>,
    ) {
        if !matches!(self.phase, Phase::Listening | Phase::Machine) || self.cue.is_some() {
            return;
        }
        self.phase = Phase::Machine;
        out.push(GateStep::Ready {
            verdict: verdict.to_owned(),
            by,
            at_ms,
        });
        self.leave(beep, at_ms, out);
    }

    /// Leaves the message now if its audio is ready, hangs up if there is none, else waits.
    fn leave(&mut self, beep: bool, ready_ms: u64, out: &mut Vec<GateStep>) {
        match std::mem::replace(&mut self.message, Message::Missing(None)) {
            Message::Ready(speech) => {
                self.phase = Phase::Leaving;
                out.push(GateStep::Leave {
                    speech,
                    beep,
                    ready_ms,
                });
            }
            Message::Missing(error) => {
                self.phase = Phase::Done;
                out.push(GateStep::HangUp { error });
            }
            Message::Preparing => {
                self.message = Message::Preparing;
                self.cue = Some((beep, ready_ms));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::vad::{Vad, VadConfig};

    const RATE: u32 = 8_000;
    const FRAME: usize = 160;

    fn plan() -> OutboundPlan {
        OutboundPlan::detect(Some("Please call back.".into()))
    }

    fn speech() -> Speech {
        Speech::pcm(vec![100; 800], RATE)
    }

    fn wav(name: &str) -> Vec<i16> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/audio")
            .join(name);
        hound::WavReader::open(path)
            .unwrap()
            .samples::<i16>()
            .map(|s| s.unwrap())
            .collect()
    }

    /// Runs `audio` through the VAD and the gate in 20 ms frames.
    fn run(gate: &mut AnswerGate, audio: &[i16]) -> Vec<GateStep> {
        let mut vad = Vad::new(&VadConfig::default(), RATE).unwrap();
        let (mut frames, mut out) = (Vec::new(), Vec::new());
        for frame in audio.chunks(FRAME) {
            frames.clear();
            vad.push(frame, &mut frames);
            let voiced = frames.iter().any(|f| f.voiced);
            gate.push_frame(frame, voiced, &mut out);
        }
        out
    }

    #[test]
    fn a_machine_gets_the_message_right_after_its_beep() {
        let mut gate = AnswerGate::new(RATE, &plan(), true).unwrap();
        let mut out = Vec::new();
        gate.message_ready(Ok(speech()), &mut out);
        assert!(out.is_empty());
        let steps = run(&mut gate, &wav("voicemail_greeting_beep.wav"));
        let kinds: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                GateStep::Greet { .. } => "greet",
                GateStep::Machine { .. } => "machine",
                GateStep::Ready { .. } => "ready",
                GateStep::Leave { .. } => "leave",
                GateStep::HangUp { .. } => "hang_up",
            })
            .collect();
        assert_eq!(kinds, ["machine", "ready", "leave"], "{steps:?}");
        let GateStep::Leave { beep, ready_ms, .. } = &steps[2] else {
            unreachable!()
        };
        assert!(*beep);
        // The fixture's beep ends about 4.04 s in.
        assert!((3_900..=4_300).contains(ready_ms), "ready at {ready_ms} ms");
        assert!(!gate.holds() || gate.phase == Phase::Leaving);
    }

    #[test]
    fn a_person_saying_hello_is_greeted_and_silence_is_greeted_after_the_wait() {
        let mut gate = AnswerGate::new(RATE, &plan(), true).unwrap();
        let steps = run(&mut gate, &wav("human_answer.wav"));
        assert!(
            matches!(&steps[..], [GateStep::Greet { verdict, by: VerdictBy::Gateway, at_ms }]
                if verdict == "human" && *at_ms < 2_000),
            "{steps:?}"
        );
        assert!(!gate.holds());

        let mut quiet = AnswerGate::new(RATE, &plan(), true).unwrap();
        let steps = run(&mut quiet, &vec![0; RATE as usize * 4]);
        assert!(
            matches!(&steps[..], [GateStep::Greet { verdict, at_ms, .. }]
                if verdict == "unknown" && (2_480..=2_540).contains(at_ms)),
            "{steps:?}"
        );
    }

    #[test]
    fn no_message_hangs_up_on_the_machine_at_once() {
        let mut gate = AnswerGate::new(RATE, &plan(), false).unwrap();
        let steps = run(&mut gate, &wav("voicemail_greeting_beep.wav"));
        assert!(
            matches!(
                &steps[..],
                [GateStep::Machine { .. }, GateStep::HangUp { error: None }]
            ),
            "{steps:?}"
        );
        assert!(!gate.holds());
    }

    #[test]
    fn the_carriers_verdict_wins_when_it_comes_first() {
        let mut gate = AnswerGate::new(RATE, &plan(), true).unwrap();
        let mut out = Vec::new();
        gate.carrier_verdict("unknown", 50, &mut out);
        assert!(out.is_empty(), "unknown leaves it to the gateway");
        gate.carrier_verdict("machine_end_beep", 100, &mut out);
        assert!(
            matches!(&out[..], [GateStep::Ready { verdict, by: VerdictBy::Carrier, .. }]
                if verdict == "machine_end_beep"),
            "{out:?}"
        );
        out.clear();
        // The message comes later: it is left then.
        gate.message_ready(Ok(speech()), &mut out);
        assert!(
            matches!(
                &out[..],
                [GateStep::Leave {
                    beep: true,
                    ready_ms: 100,
                    ..
                }]
            ),
            "{out:?}"
        );
        out.clear();
        gate.carrier_verdict("human", 200, &mut out);
        assert!(run(&mut gate, &wav("human_answer.wav")).is_empty());
        assert!(out.is_empty());

        let mut person = AnswerGate::new(RATE, &plan(), true).unwrap();
        person.carrier_verdict("human", 80, &mut out);
        assert!(matches!(
            &out[..],
            [GateStep::Greet {
                by: VerdictBy::Carrier,
                ..
            }]
        ));
    }

    #[test]
    fn a_failed_message_or_a_fax_hangs_up() {
        let mut gate = AnswerGate::new(RATE, &plan(), true).unwrap();
        let mut out = Vec::new();
        gate.carrier_verdict("machine_start", 10, &mut out);
        gate.message_ready(Err("no voice".into()), &mut out);
        gate.carrier_verdict("machine_end_silence", 900, &mut out);
        assert!(
            matches!(&out[..], [GateStep::Machine { .. }, GateStep::Ready { .. },
                GateStep::HangUp { error: Some(e) }] if e == "no voice"),
            "{out:?}"
        );

        let mut fax = AnswerGate::new(RATE, &plan(), true).unwrap();
        out.clear();
        fax.carrier_verdict("fax", 10, &mut out);
        assert!(matches!(
            &out[..],
            [GateStep::Machine { .. }, GateStep::HangUp { .. }]
        ));
    }

    #[test]
    fn a_zero_silence_wait_is_refused() {
        let mut plan = plan();
        plan.greet_after_silence_ms = 0;
        assert!(AnswerGate::new(RATE, &plan, true).is_err());
    }
}
