//! The conversation logic of a call, behind one trait.
//!
//! The session calls [`Agent::on_event`] for everything the agent needs to know (call started,
//! the caller finished a turn, a key was pressed, the caller barged in, the bot finished
//! speaking). The agent answers through its [`AgentContext`]: synchronous actions are queued
//! in the context; an agent that must wait on a provider spawns a task and sends
//! [`AgentAction`]s back through [`AgentContext::port`]. `on_event` must never block: it runs
//! inside the session's loop, on the media path.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use super::CallInfo;
use crate::carrier::StreamStart;

/// Identifies one bot utterance in a call; barge-in cancels by id (a generation counter, so a
/// late mark or a late agent action for an old utterance is recognised and ignored).
pub type UtteranceId = u64;

/// Hands out a call's utterance ids (1, 2, …), shared by the session and the agent's tasks so
/// an agent can name an utterance before its audio exists.
#[derive(Debug, Clone, Default)]
pub struct UtteranceIds(Arc<AtomicU64>);

impl UtteranceIds {
    /// The next unused id.
    pub fn next(&self) -> UtteranceId {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether `id` has been handed out.
    pub fn issued(&self, id: UtteranceId) -> bool {
        id >= 1 && id <= self.0.load(Ordering::Relaxed)
    }
}

/// Audio for the bot to say, in 16-bit PCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech {
    /// Samples, mono.
    pub pcm: Vec<i16>,
    /// Their rate; resampled to the call's rate if it differs.
    pub sample_rate: u32,
    /// The words, where known (an echo has none).
    pub text: Option<String>,
}

impl Speech {
    /// Speech from PCM with no text.
    pub fn pcm(pcm: Vec<i16>, sample_rate: u32) -> Self {
        Speech {
            pcm,
            sample_rate,
            text: None,
        }
    }

    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        if self.sample_rate == 0 {
            return 0;
        }
        self.pcm.len() as u64 * 1000 / u64::from(self.sample_rate)
    }
}

/// How much of an interrupted utterance the caller heard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heard {
    /// The utterance cut off.
    pub utterance: UtteranceId,
    /// Milliseconds the caller heard (confirmed by marks, plus the estimated part of the chunk
    /// that was playing).
    pub heard_ms: u64,
    /// Milliseconds sent to the carrier before the cut.
    pub sent_ms: u64,
    /// Milliseconds the whole utterance would have lasted (so far, if still streaming).
    pub total_ms: u64,
    /// The words the caller heard, where the utterance has text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heard_text: Option<String>,
    /// The utterance's whole text (so far), where it has text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Where a DTMF digit was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DtmfSource {
    /// A `dtmf` event from the carrier.
    Carrier,
    /// Tones detected in the caller's audio.
    InBand,
}

/// A caller turn, as the session hands it to the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct UserTurn {
    /// The utterance at the call's rate, preroll included, trailing silence trimmed.
    pub audio: Vec<i16>,
    /// What the recognizer heard (all final segments of the turn), when the call has one.
    pub transcript: Option<String>,
    /// When the caller stopped speaking (the last voiced frame arrived).
    pub speech_end: Instant,
    /// When the turn was judged complete (≥ `speech_end`).
    pub decided: Instant,
}

/// Something the agent should know about.
#[derive(Debug)]
pub enum AgentEvent {
    /// The stream started; the agent may speak first.
    CallStarted,
    /// The caller started speaking (not echo).
    UserSpeechStarted,
    /// The caller finished a turn.
    UserTurnEnded(UserTurn),
    /// The caller has gone quiet and the transcript is stable: the turn has probably ended.
    /// An agent may start preparing its answer now (speculatively: nothing may be heard until
    /// `UserTurnEnded` confirms the same words).
    TurnLikelyEnded {
        /// The transcript so far.
        transcript: String,
    },
    /// The caller went on speaking after `TurnLikelyEnded`: drop what was prepared.
    UserSpeechResumed,
    /// A sound that started like speech ended without words (noise, a cough).
    UserNoise,
    /// The first audio of an utterance was sent to the carrier.
    SpeechStarted {
        /// Which one.
        utterance: UtteranceId,
    },
    /// A key press.
    Dtmf {
        /// `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
        /// Carrier event or in-band tones.
        source: DtmfSource,
    },
    /// The caller interrupted the bot; the utterance was cleared.
    BargeIn(Heard),
    /// The carrier could not transfer the call; it goes on.
    TransferFailed {
        /// The number asked for.
        to: String,
        /// Why.
        error: String,
    },
    /// An utterance finished playing to the end.
    SpeechFinished {
        /// Which one.
        utterance: UtteranceId,
    },
    /// The call is ending; no action taken after this is carried out.
    CallEnding,
    /// A message from one of the agent's own tasks, sent with [`AgentAction::Wake`].
    Wake(Box<dyn Any + Send>),
}

/// A piece of a streamed utterance.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechPart {
    /// More audio.
    Audio {
        /// Samples, mono.
        pcm: Vec<i16>,
        /// Their rate.
        sample_rate: u32,
    },
    /// The audio that follows says this text.
    Text(String),
    /// No more audio will come.
    End,
}

/// Something the agent wants done.
#[derive(Debug)]
pub enum AgentAction {
    /// Queue speech after whatever is already queued.
    Say(Speech),
    /// Stream utterance `utterance` (an id from [`AgentContext::new_utterance`]): the first
    /// part queues it after whatever is queued; parts for a cleared utterance are dropped.
    Stream {
        /// Which utterance.
        utterance: UtteranceId,
        /// The part.
        part: SpeechPart,
    },
    /// Drop a streamed utterance that has not started playing (e.g. a discarded answer).
    Cancel {
        /// Which utterance.
        utterance: UtteranceId,
    },
    /// Record a CallEvent.
    Record(super::events::CallEventKind),
    /// Observe a conversation-stage latency on `/metrics`.
    Stage {
        /// The stage (`llm_first_token`, `tts_first_byte`, …).
        stage: &'static str,
        /// How long it took.
        elapsed: std::time::Duration,
    },
    /// Hand the agent a message from one of its tasks (comes back as [`AgentEvent::Wake`]).
    Wake(Box<dyn Any + Send>),
    /// Ask the carrier to transfer the call to `to` (E.164). On success the stream ends; on
    /// failure the agent hears [`AgentEvent::TransferFailed`] and the call goes on.
    Transfer {
        /// Target number.
        to: String,
    },
    /// The outcome of a transfer the session asked the carrier for (sent by the session's own
    /// transfer task, not by agents).
    TransferDone {
        /// Target number.
        to: String,
        /// What the carrier said.
        result: Result<(), super::control::ControlError>,
    },
    /// Text the caller (or `to`, when given) from the call's number; the outcome is recorded.
    Sms {
        /// Recipient (E.164); the call's remote party when `None`.
        to: Option<String>,
        /// The message.
        body: String,
    },
    /// The voicemail asked for with [`Agent::prepare_voicemail`]: its audio, or why it could
    /// not be made.
    VoicemailReady(Result<Speech, String>),
    /// Stop the current speech (as on barge-in, but at the agent's wish).
    StopSpeaking,
    /// End the call, with a reason for the record.
    Hangup {
        /// Why the agent ended the call.
        reason: String,
    },
}

/// A clonable sender of actions, for tasks an agent spawns.
#[derive(Debug, Clone)]
pub struct AgentPort {
    sender: mpsc::Sender<AgentAction>,
    ids: UtteranceIds,
}

impl AgentPort {
    /// Wraps the session's action channel and the call's utterance ids.
    pub fn new(sender: mpsc::Sender<AgentAction>, ids: UtteranceIds) -> Self {
        AgentPort { sender, ids }
    }

    /// A fresh utterance id.
    pub fn new_utterance(&self) -> UtteranceId {
        self.ids.next()
    }

    /// Sends an action, waiting for room; an error means the call has ended.
    pub async fn send(&self, action: AgentAction) -> Result<(), AgentAction> {
        self.sender.send(action).await.map_err(|e| e.0)
    }
}

/// The agent's view of its call while it handles one event.
#[derive(Debug)]
pub struct AgentContext {
    info: Arc<CallInfo>,
    actions: Vec<AgentAction>,
    port: AgentPort,
}

impl AgentContext {
    /// A context for the given call; `port` reaches the session from other tasks.
    pub fn new(info: Arc<CallInfo>, port: AgentPort) -> Self {
        AgentContext {
            info,
            actions: Vec::new(),
            port,
        }
    }

    /// The call.
    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// Queues speech.
    pub fn say(&mut self, speech: Speech) {
        self.actions.push(AgentAction::Say(speech));
    }

    /// Stops the current speech.
    pub fn stop_speaking(&mut self) {
        self.actions.push(AgentAction::StopSpeaking);
    }

    /// Ends the call.
    pub fn hangup(&mut self, reason: impl Into<String>) {
        self.actions.push(AgentAction::Hangup {
            reason: reason.into(),
        });
    }

    /// A fresh utterance id, for [`AgentAction::Stream`].
    pub fn new_utterance(&self) -> UtteranceId {
        self.port.new_utterance()
    }

    /// Queues any action.
    pub fn act(&mut self, action: AgentAction) {
        self.actions.push(action);
    }

    /// A sender for actions from spawned tasks.
    pub fn port(&self) -> AgentPort {
        self.port.clone()
    }

    /// Takes the queued actions (the session calls this after each event).
    pub fn take_actions(&mut self) -> Vec<AgentAction> {
        std::mem::take(&mut self.actions)
    }
}

/// The conversation logic of one call.
pub trait Agent: Send + 'static {
    /// Reacts to one event; must not block.
    fn on_event(&mut self, event: AgentEvent, ctx: &mut AgentContext);

    /// Whether the call should run a recognizer and hand this agent transcripts.
    fn wants_transcripts(&self) -> bool {
        false
    }

    /// Whether `transcript`, said over the bot, answers what the bot is asking (a scripted
    /// menu's "yeah" or "okay"), so it is a turn even where it would otherwise pass for a
    /// backchannel. Must not block.
    fn answers(&self, _transcript: &str) -> bool {
        false
    }

    /// An answering machine may answer this call: prepare the voicemail, `message` (already
    /// rendered) or, when `None`, the agent's own (a script's `[voicemail]` node), and send
    /// its audio with [`AgentAction::VoicemailReady`] once it is ready (the session plays it
    /// after the beep). Called before [`AgentEvent::CallStarted`], maybe never followed by
    /// it. Returns false when there is nothing to leave (the call then hangs up on a
    /// machine). Must not block. Agents that cannot speak text leave nothing.
    fn prepare_voicemail(&mut self, _message: Option<&str>, _ctx: &mut AgentContext) -> bool {
        false
    }
}

/// Why no agent could be made for a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The name matches no agent this gateway knows.
    #[error("unknown agent {0:?}")]
    Unknown(String),
    /// The agent exists but cannot serve this stream.
    #[error("agent {agent:?} cannot serve this stream: {reason}")]
    Unsuitable {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
}

/// Makes an agent for a stream.
pub type AgentFactory =
    Arc<dyn Fn(&StreamStart) -> Result<Box<dyn Agent>, AgentError> + Send + Sync>;

/// The agents this gateway can run, by name, and which one is the default.
#[derive(Clone)]
pub struct AgentCatalog {
    factories: HashMap<String, AgentFactory>,
    default: String,
}

impl std::fmt::Debug for AgentCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCatalog")
            .field("agents", &self.names())
            .field("default", &self.default)
            .finish()
    }
}

impl AgentCatalog {
    /// The built-in agents (`echo`), with `default` as the default; an unknown default is an
    /// error, so a typo in `--agent` stops start-up.
    pub fn builtin(default: &str) -> Result<Self, AgentError> {
        let mut catalog = AgentCatalog {
            factories: HashMap::new(),
            default: default.to_owned(),
        };
        catalog.register(
            "echo",
            Arc::new(|_start: &StreamStart| {
                Ok(Box::new(super::echo_agent::EchoAgent::new()) as Box<dyn Agent>)
            }),
        );
        if !catalog.factories.contains_key(default) {
            return Err(AgentError::Unknown(default.to_owned()));
        }
        Ok(catalog)
    }

    /// Adds (or replaces) an agent.
    pub fn register(&mut self, name: &str, factory: AgentFactory) {
        self.factories.insert(name.to_owned(), factory);
    }

    /// Makes `name` the default; an unknown name is an error.
    pub fn set_default(&mut self, name: &str) -> Result<(), AgentError> {
        if !self.factories.contains_key(name) {
            return Err(AgentError::Unknown(name.to_owned()));
        }
        name.clone_into(&mut self.default);
        Ok(())
    }

    /// The default agent's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Agent names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.factories.keys().cloned().collect();
        names.sort();
        names
    }

    /// Makes the agent called `name` for this stream.
    pub fn create(&self, name: &str, start: &StreamStart) -> Result<Box<dyn Agent>, AgentError> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| AgentError::Unknown(name.to_owned()))?;
        factory(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_default_agent_is_rejected() {
        assert_eq!(
            AgentCatalog::builtin("llm").unwrap_err(),
            AgentError::Unknown("llm".into())
        );
        let catalog = AgentCatalog::builtin("echo").unwrap();
        assert_eq!(catalog.names(), vec!["echo".to_string()]);
        assert_eq!(catalog.default_name(), "echo");
    }

    #[test]
    fn speech_duration() {
        assert_eq!(Speech::pcm(vec![0; 8000], 8000).duration_ms(), 1000);
        assert_eq!(Speech::pcm(vec![0; 8000], 16000).duration_ms(), 500);
        assert_eq!(Speech::pcm(vec![0; 10], 0).duration_ms(), 0);
    }
}
