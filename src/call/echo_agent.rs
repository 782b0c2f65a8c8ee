//! The `echo` agent: plays each of the caller's utterances back when the caller's turn ends.
//!
//! Like a carrier's echo test number, it proves the whole media path (decode, VAD, turn-taking,
//! egress, marks, barge-in) with no provider behind it, and it is the test bed for the plane.

use super::agent::{Agent, AgentContext, AgentEvent, Speech, UserTurn};

/// Echoes the caller.
#[derive(Debug, Default)]
pub struct EchoAgent {
    turns_echoed: u64,
}

impl EchoAgent {
    /// A fresh echo agent.
    pub fn new() -> Self {
        EchoAgent::default()
    }

    /// How many utterances it has played back.
    pub fn turns_echoed(&self) -> u64 {
        self.turns_echoed
    }
}

impl Agent for EchoAgent {
    fn on_event(&mut self, event: AgentEvent, ctx: &mut AgentContext) {
        if let AgentEvent::UserTurnEnded(UserTurn { audio, .. }) = event {
            if audio.is_empty() {
                return;
            }
            let rate = ctx.info().media_format.sample_rate;
            self.turns_echoed += 1;
            ctx.say(Speech::pcm(audio, rate));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audio::Encoding;
    use crate::call::agent::{AgentAction, AgentPort};
    use crate::call::{CallId, CallInfo};
    use crate::carrier::{CarrierKind, MediaFormat};

    fn ctx(rate: u32) -> AgentContext {
        let info = CallInfo {
            call_id: CallId::new(),
            carrier: CarrierKind::Exotel,
            stream_sid: "s".into(),
            call_sid: "c".into(),
            account_sid: "a".into(),
            from: None,
            to: None,
            custom_parameters: Default::default(),
            media_format: MediaFormat {
                encoding: Encoding::Linear16,
                sample_rate: rate,
                channels: 1,
            },
            agent: "echo".into(),
            started_at: std::time::SystemTime::now(),
        };
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        AgentContext::new(
            Arc::new(info),
            AgentPort::new(tx, crate::call::agent::UtteranceIds::default()),
        )
    }

    #[test]
    fn echoes_each_turn_at_the_call_rate_and_nothing_else() {
        let mut agent = EchoAgent::new();
        let mut ctx = ctx(16_000);
        agent.on_event(AgentEvent::CallStarted, &mut ctx);
        agent.on_event(AgentEvent::UserSpeechStarted, &mut ctx);
        agent.on_event(
            AgentEvent::Dtmf {
                digit: '5',
                source: crate::call::agent::DtmfSource::Carrier,
            },
            &mut ctx,
        );
        assert!(ctx.take_actions().is_empty());
        let turn = |audio: Vec<i16>| {
            AgentEvent::UserTurnEnded(UserTurn {
                audio,
                transcript: None,
                speech_end: std::time::Instant::now(),
                decided: std::time::Instant::now(),
            })
        };
        agent.on_event(turn(vec![7; 320]), &mut ctx);
        agent.on_event(turn(vec![]), &mut ctx);
        let actions = ctx.take_actions();
        assert_eq!(actions.len(), 1);
        assert!(
            matches!(&actions[0], AgentAction::Say(s) if *s == Speech::pcm(vec![7; 320], 16_000))
        );
        assert_eq!(agent.turns_echoed(), 1);
    }
}
