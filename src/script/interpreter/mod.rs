//! The `script:<name>` agent: runs a Destiny-Script flow on a call (docs/script.md, "How a
//! call runs").
//!
//! [`ScriptAgent`] walks the flow's nodes: it plays each node's prompt (from memory when the
//! prompt cache has it, else once the call's synthesis brings it), routes key presses and the
//! caller's words through the [`matcher`](super::matcher), reprompts on a no-match, times out
//! silences, and carries out the targets: another node, `END`, `transfer`, `sms`, and the
//! language model — for one node (an agent node, which comes back with an outcome) or for the
//! rest of the call. For the model it keeps the conversation as the caller heard it
//! ([`History`]). `on_event` never waits: synthesis and timers are spawned tasks that come
//! back as wake messages.
//!
//! This module holds the agent's state and its event dispatch; `nodes` enters nodes, says
//! prompts and carries out targets and endings, `input` handles the caller's keys, words and
//! silences, and `model` runs agent nodes and the `agent` target.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flow::{Flow, Key, Node, START_NODE, Target, Trigger};
use super::history::{History, heard_part};
use super::matcher::{self, DtmfEntry, DtmfStep};
use super::print::target_text;
use super::prompt_audio::{CallPrompts, PromptReady, TextId};
use super::prompts::{LoadedScript, PROMPT_RATE, PromptClip};
use super::timers::{Timer, TimerFired, Timers};
use super::vars;
use crate::call::agent::{
    Agent, AgentAction, AgentContext, AgentError, AgentEvent, AgentFactory, DtmfSource, Heard,
    Speech, SpeechPart, UserTurn, UtteranceId,
};
use crate::call::conversation::{ConversationAgent, Handover};
use crate::call::events::{CallEventKind, ScriptInputSource, ScriptPromptKind};
use crate::call::mask_number;
use crate::carrier::StreamStart;
use crate::llm::ChatMessage;

mod input;
mod model;
mod nodes;

use model::outcomes_of;

/// Makes the `script:<name>` agent of `script` for each call. A flow that hands calls to the
/// language model needs the script's conversation pipeline: without it every call is refused
/// with [`AgentError::Unsuitable`].
pub fn script_agent_factory(script: Arc<LoadedScript>) -> AgentFactory {
    let needs_model = needs_model(&script.flow);
    Arc::new(move |_start: &StreamStart| {
        if needs_model && script.conversation.is_none() {
            return Err(AgentError::Unsuitable {
                agent: format!("script:{}", script.name),
                reason: "the script hands calls to the language model, and none is configured"
                    .to_owned(),
            });
        }
        Ok(Box::new(ScriptAgent::new(script.clone())) as Box<dyn Agent>)
    })
}

/// Whether the flow has an agent node or an `agent` target.
pub fn needs_model(flow: &Flow) -> bool {
    flow.nodes.iter().any(|node| {
        node.is_agent()
            || node
                .transitions
                .iter()
                .any(|t| chain(&t.target).iter().any(|t| matches!(t, Target::Agent)))
    })
}

/// Whether the call needs the recognizer: the flow listens for words (a quoted key, `any`) or
/// hands calls to the model.
pub fn needs_transcripts(flow: &Flow) -> bool {
    needs_model(flow)
        || flow.nodes.iter().any(|node| {
            node.transitions.iter().any(|t| match &t.trigger {
                Trigger::Any => true,
                Trigger::Keys { keys } => keys.iter().any(|k| matches!(k, Key::Phrase(_))),
                _ => false,
            })
        })
}

/// `target` and every target it goes on to (a failed transfer's `else`, an sms's `then`).
fn chain(target: &Target) -> Vec<&Target> {
    let mut out = vec![target];
    let mut at = target;
    loop {
        match at {
            Target::Transfer {
                otherwise: Some(next),
                ..
            } => at = next,
            Target::Sms { then, .. } => at = then,
            _ => return out,
        }
        out.push(at);
    }
}

/// The index of the node's first transition with this trigger kind.
fn find(node: &Node, test: impl Fn(&Trigger) -> bool) -> Option<usize> {
    node.transitions.iter().position(|t| test(&t.trigger))
}

/// The texts of one node, rendered for the call.
#[derive(Debug, Default)]
struct NodeTexts {
    prompt: Option<TextId>,
    reprompt: Option<TextId>,
    instructions: Option<String>,
}

/// What happens once a prompt of the script has played.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Then {
    /// Listen for input (or take the node's unconditional transition).
    Listen,
    /// The model takes the agent node's conversation.
    StartAgent,
    /// Hang up, with this reason.
    Hangup(String),
}

/// A prompt of the script being said.
#[derive(Debug)]
struct OwnPrompt {
    text: TextId,
    kind: ScriptPromptKind,
    then: Then,
    /// `None` while its audio is being synthesized.
    playing: Option<Playing>,
}

/// A prompt whose audio has been handed to the session.
#[derive(Debug)]
struct Playing {
    utterance: UtteranceId,
    /// When its first audio went out.
    started: Option<Instant>,
    total_ms: u64,
    /// Where it sits in the history.
    history_at: usize,
}

/// The model running part of the call.
struct AgentRun {
    agent: ConversationAgent,
    /// The agent node (with outcomes and timeouts); `None` when the model has the call for good.
    node: Option<usize>,
}

/// What the agent is doing.
enum Mode {
    /// Running nodes.
    Script,
    /// The model has the conversation.
    Agent(Box<AgentRun>),
    /// A transfer was asked for; where to go if it fails (`None`: goodbye).
    Transferring { otherwise: Option<Target> },
    /// Saying goodbye or hung up: input is ignored.
    Ending,
}

/// How the call came into a node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arrival {
    /// The call's start, or the flow itself (unconditional, timeout, nomatch, a failed
    /// transfer, an outcome).
    Flow,
    /// The caller's input matched a transition leading here.
    Input,
    /// Input given over the previous node's unconditional prompt: tried here first.
    Carried(Carried),
}

/// Input given over an unconditional prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Carried {
    Key(char),
    Speech(String),
}

/// The `script:<name>` agent of one call.
pub struct ScriptAgent {
    script: Arc<LoadedScript>,
    flow: Arc<Flow>,
    index: HashMap<String, usize>,
    transcripts: bool,
    vars: HashMap<String, String>,
    prompts: CallPrompts,
    texts: Vec<NodeTexts>,
    goodbye: Option<TextId>,
    /// The current node.
    node: usize,
    /// No-matches in the current node.
    no_matches: u32,
    entry: DtmfEntry,
    speaking: Option<OwnPrompt>,
    /// The caller interrupted an unconditional prompt: go on once their turn is over.
    skip_on_turn: bool,
    mode: Mode,
    history: History,
    timers: Timers,
    hung_up: bool,
    /// Nodes entered since the call last said something or waited for the caller: more than
    /// the flow has means the flow goes round in silence.
    hops: usize,
    /// The voicemail text being prepared for the session.
    voicemail: Option<TextId>,
}

impl std::fmt::Debug for ScriptAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptAgent")
            .field("script", &self.script.name)
            .field("node", &self.flow.nodes.get(self.node).map(|n| &n.name))
            .field("no_matches", &self.no_matches)
            .field("speaking", &self.speaking)
            .finish_non_exhaustive()
    }
}

impl ScriptAgent {
    /// An agent for one call of `script`.
    pub fn new(script: Arc<LoadedScript>) -> Self {
        let flow = script.flow.clone();
        let index = flow
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        ScriptAgent {
            prompts: CallPrompts::new(script.prompts.clone()),
            transcripts: needs_transcripts(&flow),
            script,
            flow,
            index,
            vars: HashMap::new(),
            texts: Vec::new(),
            goodbye: None,
            node: 0,
            no_matches: 0,
            entry: DtmfEntry::new(),
            speaking: None,
            skip_on_turn: false,
            mode: Mode::Script,
            history: History::new(),
            timers: Timers::new(),
            hung_up: false,
            hops: 0,
            voicemail: None,
        }
    }

    /// The conversation so far, as the model would see it.
    pub fn history(&self) -> &[ChatMessage] {
        self.history.messages()
    }

    fn node_name(&self) -> String {
        self.flow
            .nodes
            .get(self.node)
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    fn record(ctx: &mut AgentContext, kind: CallEventKind) {
        ctx.act(AgentAction::Record(kind));
    }

    // ---- The call's start ----

    fn start(&mut self, ctx: &mut AgentContext) {
        self.vars = vars::for_call(&self.script.defaults, ctx.info());
        let goodbye = self
            .flow
            .settings
            .goodbye
            .render(&self.vars)
            .ok()
            .filter(|t| !t.trim().is_empty());
        self.goodbye = goodbye.map(|t| self.prompts.add(&t));
        if let Err(missing) = self.flow.check_variables(&self.vars) {
            let reason = format!("script {}: {missing}", self.script.name);
            tracing::warn!(%reason, "scripted call cannot start");
            let missing = missing.missing.into_iter().map(|m| m.name).collect();
            Self::record(
                ctx,
                CallEventKind::ScriptFailed {
                    reason: reason.clone(),
                    missing,
                },
            );
            self.say_goodbye(ctx, reason, true);
            return;
        }
        self.render_texts();
        let order = self.warm_up_order();
        self.prompts
            .warm_up(&order, &ctx.port(), self.timers.call_token());
        match self.index.get(START_NODE) {
            Some(&start) => self.enter(ctx, start, Arrival::Flow),
            None => self.fail(ctx, "the script has no [start] node".to_owned()),
        }
    }

    /// The voicemail to leave: `message`, else the `[voicemail]` node's prompt rendered with
    /// the call's variables; its audio goes to the session once ready.
    fn voicemail_text(&mut self, message: Option<&str>, ctx: &AgentContext) -> Option<String> {
        if let Some(message) = message {
            return Some(message.to_owned()).filter(|t| !t.trim().is_empty());
        }
        self.vars = vars::for_call(&self.script.defaults, ctx.info());
        let node = self.flow.voicemail()?;
        match node.prompt.as_ref()?.render(&self.vars) {
            Ok(text) => Some(text).filter(|t| !t.trim().is_empty()),
            Err(missing) => {
                tracing::warn!(variable = %missing.name, "the [voicemail] node cannot be rendered");
                None
            }
        }
    }

    /// A voicemail clip as speech.
    fn voicemail_speech(prompts: &CallPrompts, text: TextId, clip: &PromptClip) -> Speech {
        Speech {
            pcm: clip.to_vec(),
            sample_rate: PROMPT_RATE,
            text: Some(prompts.text(text).to_owned()),
        }
    }

    /// Renders every node's texts with the call's variables (all present: checked before).
    fn render_texts(&mut self) {
        let flow = self.flow.clone();
        let render = |t: &Option<super::flow::Template>, vars: &HashMap<String, String>| {
            t.as_ref()
                .and_then(|t| t.render(vars).ok())
                .filter(|text| !text.trim().is_empty())
        };
        self.texts = flow
            .nodes
            .iter()
            .map(|node| NodeTexts {
                prompt: render(&node.prompt, &self.vars).map(|t| self.prompts.add(&t)),
                reprompt: render(&node.reprompt, &self.vars).map(|t| self.prompts.add(&t)),
                instructions: render(&node.agent, &self.vars),
            })
            .collect();
    }

    /// The call's prompts in the order it can reach them from [start], then the goodbye.
    fn warm_up_order(&self) -> Vec<TextId> {
        let mut order = Vec::new();
        let mut seen = vec![false; self.flow.nodes.len()];
        let mut queue = VecDeque::new();
        if let Some(&start) = self.index.get(START_NODE) {
            seen[start] = true;
            queue.push_back(start);
        }
        while let Some(i) = queue.pop_front() {
            if let Some(texts) = self.texts.get(i) {
                order.extend(texts.prompt);
                order.extend(texts.reprompt);
            }
            for transition in &self.flow.nodes[i].transitions {
                for target in chain(&transition.target) {
                    if let Target::Node { name } = target
                        && let Some(&j) = self.index.get(name)
                        && !seen[j]
                    {
                        seen[j] = true;
                        queue.push_back(j);
                    }
                }
            }
        }
        order.extend(self.goodbye);
        order
    }

    // ---- Wake messages ----

    fn on_wake(&mut self, ctx: &mut AgentContext, message: Box<dyn std::any::Any + Send>) {
        let message = match message.downcast::<PromptReady>() {
            Ok(ready) => return self.on_prompt_ready(ctx, *ready),
            Err(other) => other,
        };
        let message = match message.downcast::<TimerFired>() {
            Ok(fired) => return self.on_timer(ctx, *fired),
            Err(other) => other,
        };
        self.forward(ctx, AgentEvent::Wake(message));
    }

    fn on_prompt_ready(&mut self, ctx: &mut AgentContext, ready: PromptReady) {
        self.prompts.store(&ready);
        if self.voicemail == Some(ready.text) {
            self.voicemail = None;
            let result = ready
                .result
                .as_ref()
                .map(|clip| Self::voicemail_speech(&self.prompts, ready.text, clip))
                .map_err(|e| e.to_string());
            ctx.act(AgentAction::VoicemailReady(result));
        }
        let awaited = self
            .speaking
            .as_ref()
            .is_some_and(|p| p.playing.is_none() && p.text == ready.text);
        if !awaited {
            if let Err(error) = &ready.result {
                tracing::info!(%error, "a prompt could not be prepared ahead; it is retried when needed");
            }
            return;
        }
        let Some(prompt) = self.speaking.take() else {
            return;
        };
        match ready.result {
            Ok(clip) => self.stream(ctx, prompt.text, clip, false, prompt.kind, prompt.then),
            Err(error) => match prompt.then {
                Then::Hangup(reason) => {
                    Self::record(
                        ctx,
                        CallEventKind::ScriptFailed {
                            reason: format!("cannot synthesize the goodbye: {error}"),
                            missing: Vec::new(),
                        },
                    );
                    self.hangup(ctx, reason);
                }
                Then::Listen | Then::StartAgent => {
                    let reason = format!(
                        "cannot synthesize a prompt of [{}]: {error}",
                        self.node_name()
                    );
                    self.fail(ctx, reason);
                }
            },
        }
    }

    fn on_timer(&mut self, ctx: &mut AgentContext, fired: TimerFired) {
        let Some(after) = self.timers.fired(fired) else {
            return;
        };
        match fired.timer {
            Timer::NoInput => self.no_input(ctx, after),
            Timer::Digit => {
                if !matches!(self.mode, Mode::Script) {
                    return;
                }
                let flow = self.flow.clone();
                let Some(node) = flow.nodes.get(self.node) else {
                    return;
                };
                if let Some(step) = self.entry.timeout(&node.transitions) {
                    self.on_dtmf_step(ctx, step);
                }
            }
        }
    }

    // ---- The session's speech events ----

    fn own_playing(&self, utterance: UtteranceId) -> bool {
        self.speaking
            .as_ref()
            .and_then(|p| p.playing.as_ref())
            .is_some_and(|p| p.utterance == utterance)
    }

    fn on_speech_started(&mut self, ctx: &mut AgentContext, utterance: UtteranceId) {
        if self.own_playing(utterance) {
            if let Some(playing) = self.speaking.as_mut().and_then(|p| p.playing.as_mut()) {
                playing.started = Some(Instant::now());
            }
            return;
        }
        if matches!(&self.mode, Mode::Agent(run) if run.node.is_some()) {
            self.timers.stop_no_input();
        }
        self.forward(ctx, AgentEvent::SpeechStarted { utterance });
    }

    fn on_speech_finished(&mut self, ctx: &mut AgentContext, utterance: UtteranceId) {
        if self.own_playing(utterance) {
            if let Some(prompt) = self.speaking.take() {
                self.prompt_played(ctx, prompt.then);
            }
            return;
        }
        let agent_node = matches!(&self.mode, Mode::Agent(run) if run.node.is_some());
        self.forward(ctx, AgentEvent::SpeechFinished { utterance });
        if agent_node && matches!(&self.mode, Mode::Agent(_)) {
            self.start_agent_timer(ctx);
        }
    }

    fn on_caller_speaking(&mut self, ctx: &mut AgentContext) {
        self.timers.pause_no_input();
        self.forward(ctx, AgentEvent::UserSpeechStarted);
    }

    fn on_call_ending(&mut self, ctx: &mut AgentContext) {
        self.timers.shutdown();
        if let Mode::Agent(run) = &mut self.mode {
            run.agent.on_event(AgentEvent::CallEnding, ctx);
        }
        self.mode = Mode::Ending;
    }
}

impl Agent for ScriptAgent {
    fn on_event(&mut self, event: AgentEvent, ctx: &mut AgentContext) {
        if self.hung_up {
            if matches!(event, AgentEvent::CallEnding) {
                self.on_call_ending(ctx);
            }
            return;
        }
        match event {
            AgentEvent::CallStarted => self.start(ctx),
            AgentEvent::Dtmf { digit, source } => self.on_dtmf(ctx, digit, source),
            AgentEvent::UserTurnEnded(turn) => self.on_turn(ctx, turn),
            AgentEvent::UserSpeechStarted => self.on_caller_speaking(ctx),
            AgentEvent::UserNoise => self.on_noise(ctx),
            AgentEvent::BargeIn(heard) => self.on_barge_in(ctx, heard),
            AgentEvent::SpeechStarted { utterance } => self.on_speech_started(ctx, utterance),
            AgentEvent::SpeechFinished { utterance } => self.on_speech_finished(ctx, utterance),
            AgentEvent::TransferFailed { to, error } => self.on_transfer_failed(ctx, to, error),
            AgentEvent::Wake(message) => self.on_wake(ctx, message),
            AgentEvent::CallEnding => self.on_call_ending(ctx),
            event @ (AgentEvent::TurnLikelyEnded { .. } | AgentEvent::UserSpeechResumed) => {
                self.forward(ctx, event)
            }
        }
    }

    fn wants_transcripts(&self) -> bool {
        self.transcripts
    }

    fn prepare_voicemail(&mut self, message: Option<&str>, ctx: &mut AgentContext) -> bool {
        let Some(text) = self.voicemail_text(message, ctx) else {
            return false;
        };
        let id = self.prompts.add(&text);
        match self.prompts.ready(id) {
            Some((clip, _)) => {
                let speech = Self::voicemail_speech(&self.prompts, id, &clip);
                ctx.act(AgentAction::VoicemailReady(Ok(speech)));
            }
            None => {
                self.voicemail = Some(id);
                self.prompts
                    .request(id, &ctx.port(), self.timers.call_token());
            }
        }
        true
    }

    /// Words matching a key of the node waiting for input are an answer, even when they
    /// sound like a backchannel ("yeah", "okay").
    fn answers(&self, transcript: &str) -> bool {
        if !matches!(self.mode, Mode::Script) {
            return false;
        }
        self.flow.nodes.get(self.node).is_some_and(|node| {
            !node.is_agent()
                && crate::script::matcher::match_transcript(&node.transitions, transcript)
                    .is_some_and(|m| matches!(m.key, crate::script::matcher::MatchedKey::Key(_)))
        })
    }
}

#[cfg(test)]
mod tests;
