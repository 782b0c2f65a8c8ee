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
    SpeechPart, UserTurn, UtteranceId,
};
use crate::call::conversation::{ConversationAgent, Handover};
use crate::call::events::{CallEventKind, ScriptInputSource, ScriptPromptKind};
use crate::call::mask_number;
use crate::carrier::StreamStart;
use crate::llm::ChatMessage;

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

/// The outcomes of an agent node: its quoted keys, in file order.
fn outcomes_of(node: &Node) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for transition in &node.transitions {
        if let Trigger::Keys { keys } = &transition.trigger {
            for key in keys {
                if let Key::Phrase(phrase) = key
                    && !out.contains(phrase)
                {
                    out.push(phrase.clone());
                }
            }
        }
    }
    out
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

    // ---- Nodes and prompts ----

    fn enter(&mut self, ctx: &mut AgentContext, node: usize, arrival: Arrival) {
        self.hops += 1;
        if self.hops > self.flow.nodes.len() {
            let reason = format!(
                "the script goes round from [{}] without saying anything or waiting for the caller",
                self.node_name()
            );
            return self.fail(ctx, reason);
        }
        self.cancel_own_prompt(ctx);
        self.timers.stop_all();
        self.node = node;
        self.no_matches = 0;
        self.entry.clear();
        self.skip_on_turn = false;
        let flow = self.flow.clone();
        let Some(n) = flow.nodes.get(node) else {
            return;
        };
        Self::record(
            ctx,
            CallEventKind::ScriptNodeEntered {
                node: n.name.clone(),
            },
        );
        let prompt = self.texts.get(node).and_then(|t| t.prompt);
        if n.is_agent() {
            Self::record(
                ctx,
                CallEventKind::ScriptHandoff {
                    node: n.name.clone(),
                    outcomes: outcomes_of(n),
                },
            );
            match prompt {
                Some(text) => self.play(ctx, text, ScriptPromptKind::Prompt, Then::StartAgent),
                None => self.start_agent(ctx, Some(node), arrival != Arrival::Flow),
            }
            return;
        }
        match arrival {
            Arrival::Carried(Carried::Key(key)) => match self.entry.press(key, &n.transitions) {
                DtmfStep::NoMatch { entry } => {
                    // Keys meant for the prompt the caller skipped: not a no-match here.
                    self.history.caller_pressed(&entry);
                    self.record_input(ctx, ScriptInputSource::Dtmf, entry, None);
                }
                step @ DtmfStep::Match { .. } => return self.on_dtmf_step(ctx, step),
                DtmfStep::Wait => self.on_dtmf_step(ctx, DtmfStep::Wait),
            },
            Arrival::Carried(Carried::Speech(transcript)) => {
                if let Some(found) = matcher::match_transcript(&n.transitions, &transcript) {
                    self.record_input(
                        ctx,
                        ScriptInputSource::Speech,
                        transcript,
                        Some((found.transition, found.key.label())),
                    );
                    return self.take(ctx, found.transition, Arrival::Input);
                }
            }
            Arrival::Flow | Arrival::Input => {}
        }
        match prompt {
            Some(text) => self.play(ctx, text, ScriptPromptKind::Prompt, Then::Listen),
            None => self.listen(ctx),
        }
    }

    /// Says a prompt: at once from memory, or when its synthesis is done.
    fn play(&mut self, ctx: &mut AgentContext, text: TextId, kind: ScriptPromptKind, then: Then) {
        self.hops = 0;
        self.cancel_own_prompt(ctx);
        match self.prompts.ready(text) {
            Some((clip, cached)) => self.stream(ctx, text, clip, cached, kind, then),
            None => {
                self.prompts
                    .request(text, &ctx.port(), self.timers.call_token());
                self.speaking = Some(OwnPrompt {
                    text,
                    kind,
                    then,
                    playing: None,
                });
            }
        }
    }

    /// Hands a prompt's audio to the session as one utterance.
    fn stream(
        &mut self,
        ctx: &mut AgentContext,
        text: TextId,
        clip: PromptClip,
        cached: bool,
        kind: ScriptPromptKind,
        then: Then,
    ) {
        let utterance = ctx.new_utterance();
        let words = self.prompts.text(text).to_owned();
        let total_ms = clip.len() as u64 * 1000 / u64::from(PROMPT_RATE);
        for part in [
            SpeechPart::Text(words.clone()),
            SpeechPart::Audio {
                pcm: clip.to_vec(),
                sample_rate: PROMPT_RATE,
            },
            SpeechPart::End,
        ] {
            ctx.act(AgentAction::Stream { utterance, part });
        }
        Self::record(
            ctx,
            CallEventKind::ScriptPrompt {
                node: self.node_name(),
                kind,
                cached,
                chars: None,
            },
        );
        let history_at = self.history.said(&words);
        self.speaking = Some(OwnPrompt {
            text,
            kind,
            then,
            playing: Some(Playing {
                utterance,
                started: None,
                total_ms,
                history_at,
            }),
        });
    }

    /// Stops the script's prompt, if one is being said (the history keeps what was heard);
    /// returns what was to follow it.
    fn cancel_own_prompt(&mut self, ctx: &mut AgentContext) -> Option<Then> {
        let prompt = self.speaking.take()?;
        if let Some(playing) = prompt.playing {
            ctx.act(AgentAction::Cancel {
                utterance: playing.utterance,
            });
            let heard = playing.started.map(|started| {
                heard_part(
                    self.prompts.text(prompt.text),
                    started.elapsed().as_millis() as u64,
                    playing.total_ms,
                )
            });
            self.history.cut(playing.history_at, heard.as_deref());
        }
        Some(prompt.then)
    }

    /// The script's prompt has played to its end.
    fn prompt_played(&mut self, ctx: &mut AgentContext, then: Then) {
        match then {
            Then::Listen => self.listen(ctx),
            Then::StartAgent => self.start_agent(ctx, Some(self.node), false),
            Then::Hangup(reason) => self.hangup(ctx, reason),
        }
    }

    /// After the node's prompt: its unconditional transition, or wait for input.
    fn listen(&mut self, ctx: &mut AgentContext) {
        let flow = self.flow.clone();
        let Some(node) = flow.nodes.get(self.node) else {
            return;
        };
        if let Some(index) = find(node, |t| matches!(t, Trigger::Always)) {
            return self.take(ctx, index, Arrival::Flow);
        }
        if node.transitions.is_empty() {
            let reason = format!("script ended at [{}]", node.name);
            return self.hangup(ctx, reason);
        }
        self.hops = 0;
        let after = self.timeout_of(node);
        self.timers.start_no_input(&ctx.port(), after);
    }

    /// How long the node waits for input.
    fn timeout_of(&self, node: &Node) -> Duration {
        let own = node.transitions.iter().find_map(|t| match t.trigger {
            Trigger::Timeout { after_ms } => Some(after_ms),
            _ => None,
        });
        Duration::from_millis(
            own.flatten()
                .unwrap_or(self.flow.settings.no_input_timeout_ms),
        )
    }

    // ---- Transitions and targets ----

    /// Takes transition `index` of the current node.
    fn take(&mut self, ctx: &mut AgentContext, index: usize, arrival: Arrival) {
        let flow = self.flow.clone();
        let Some(transition) = flow
            .nodes
            .get(self.node)
            .and_then(|n| n.transitions.get(index))
        else {
            return;
        };
        self.go(ctx, &transition.target, arrival);
    }

    fn go(&mut self, ctx: &mut AgentContext, target: &Target, arrival: Arrival) {
        match target {
            Target::Node { name } => match self.index.get(name) {
                Some(&node) => self.enter(ctx, node, arrival),
                None => self.fail(ctx, format!("the script has no node `{name}`")),
            },
            Target::End => {
                let reason = format!("script ended at [{}]", self.node_name());
                match &mut self.speaking {
                    Some(prompt) if prompt.playing.is_some() => prompt.then = Then::Hangup(reason),
                    _ => {
                        self.speaking = None;
                        self.hangup(ctx, reason);
                    }
                }
            }
            Target::Transfer { to, otherwise } => {
                self.cancel_own_prompt(ctx);
                self.timers.stop_all();
                self.mode = Mode::Transferring {
                    otherwise: otherwise.as_deref().cloned(),
                };
                ctx.act(AgentAction::Transfer { to: to.clone() });
            }
            Target::Agent => {
                Self::record(
                    ctx,
                    CallEventKind::ScriptHandoff {
                        node: self.node_name(),
                        outcomes: Vec::new(),
                    },
                );
                self.start_agent(ctx, None, arrival != Arrival::Flow);
            }
            Target::Sms { text, then } => {
                match text.render(&self.vars) {
                    Ok(body) => {
                        Self::record(
                            ctx,
                            CallEventKind::ScriptPrompt {
                                node: self.node_name(),
                                kind: ScriptPromptKind::Sms,
                                cached: false,
                                chars: Some(body.chars().count()),
                            },
                        );
                        ctx.act(AgentAction::Sms { to: None, body });
                    }
                    Err(missing) => Self::record(
                        ctx,
                        CallEventKind::ScriptFailed {
                            reason: format!("text message not sent: {missing}"),
                            missing: vec![missing.name],
                        },
                    ),
                }
                self.go(ctx, then, arrival);
            }
        }
    }

    // ---- Input ----

    fn record_input(
        &self,
        ctx: &mut AgentContext,
        source: ScriptInputSource,
        input: String,
        matched: Option<(usize, String)>,
    ) {
        let (transition, key) = match matched {
            Some((t, k)) => (Some(t), Some(k)),
            None => (None, None),
        };
        Self::record(
            ctx,
            CallEventKind::ScriptInput {
                node: self.node_name(),
                source,
                input,
                transition,
                key,
            },
        );
    }

    fn on_dtmf(&mut self, ctx: &mut AgentContext, digit: char, source: DtmfSource) {
        match &self.mode {
            Mode::Agent(run) => {
                if run.node.is_some() {
                    self.timers.stop_no_input();
                }
                return self.forward(ctx, AgentEvent::Dtmf { digit, source });
            }
            Mode::Transferring { .. } | Mode::Ending => return,
            Mode::Script => {}
        }
        let always = self.always();
        if let Some(prompt) = &self.speaking {
            match prompt.then {
                Then::Hangup(_) => return,
                Then::StartAgent => {
                    self.cancel_own_prompt(ctx);
                    self.start_agent(ctx, Some(self.node), false);
                    return self.forward(ctx, AgentEvent::Dtmf { digit, source });
                }
                Then::Listen => {
                    // A key press stops the prompt at once.
                    self.cancel_own_prompt(ctx);
                    if let Some(index) = always {
                        return self.take(ctx, index, Arrival::Carried(Carried::Key(digit)));
                    }
                }
            }
        }
        if self.skip_on_turn
            && let Some(index) = always
        {
            self.skip_on_turn = false;
            return self.take(ctx, index, Arrival::Carried(Carried::Key(digit)));
        }
        self.timers.stop_no_input();
        let flow = self.flow.clone();
        let Some(node) = flow.nodes.get(self.node) else {
            return;
        };
        let step = self.entry.press(digit, &node.transitions);
        self.on_dtmf_step(ctx, step);
    }

    fn on_dtmf_step(&mut self, ctx: &mut AgentContext, step: DtmfStep) {
        match step {
            DtmfStep::Wait => {
                let after = Duration::from_millis(self.flow.settings.digit_timeout_ms);
                self.timers.start_digit(&ctx.port(), after);
            }
            DtmfStep::Match { found, entry } => {
                self.timers.stop_digit();
                self.history.caller_pressed(&entry);
                self.record_input(
                    ctx,
                    ScriptInputSource::Dtmf,
                    entry,
                    Some((found.transition, found.key.label())),
                );
                self.take(ctx, found.transition, Arrival::Input);
            }
            DtmfStep::NoMatch { entry } => {
                self.timers.stop_digit();
                self.history.caller_pressed(&entry);
                self.record_input(ctx, ScriptInputSource::Dtmf, entry, None);
                self.no_match(ctx);
            }
        }
    }

    fn on_turn(&mut self, ctx: &mut AgentContext, turn: UserTurn) {
        match &self.mode {
            Mode::Agent(run) => {
                if run.node.is_some() {
                    self.timers.stop_no_input();
                }
                return self.forward(ctx, AgentEvent::UserTurnEnded(turn));
            }
            Mode::Transferring { .. } | Mode::Ending => return,
            Mode::Script => {}
        }
        let transcript = turn.transcript.unwrap_or_default().trim().to_owned();
        if !matcher::has_words(&transcript) {
            // Nothing to match: like noise, the silence goes on.
            return self.on_noise(ctx);
        }
        if matches!(
            &self.speaking,
            Some(OwnPrompt {
                then: Then::Hangup(_),
                ..
            })
        ) {
            return;
        }
        self.history.caller_said(&transcript);
        let always = self.always();
        if let Some(then) = self.cancel_own_prompt(ctx) {
            if then == Then::StartAgent {
                return self.start_agent(ctx, Some(self.node), true);
            }
            if let Some(index) = always {
                return self.take(ctx, index, Arrival::Carried(Carried::Speech(transcript)));
            }
        }
        if self.skip_on_turn
            && let Some(index) = always
        {
            self.skip_on_turn = false;
            return self.take(ctx, index, Arrival::Carried(Carried::Speech(transcript)));
        }
        self.timers.stop_all();
        self.entry.clear();
        let flow = self.flow.clone();
        let Some(node) = flow.nodes.get(self.node) else {
            return;
        };
        match matcher::match_transcript(&node.transitions, &transcript) {
            Some(found) => {
                self.record_input(
                    ctx,
                    ScriptInputSource::Speech,
                    transcript,
                    Some((found.transition, found.key.label())),
                );
                self.take(ctx, found.transition, Arrival::Input);
            }
            None => {
                self.record_input(ctx, ScriptInputSource::Speech, transcript, None);
                self.no_match(ctx);
            }
        }
    }

    /// The current node's unconditional transition.
    fn always(&self) -> Option<usize> {
        self.flow
            .nodes
            .get(self.node)
            .and_then(|n| find(n, |t| matches!(t, Trigger::Always)))
    }

    /// A sound without words: the silence goes on.
    fn on_noise(&mut self, ctx: &mut AgentContext) {
        match &self.mode {
            Mode::Agent(_) => {
                self.timers.resume_no_input(&ctx.port());
                return self.forward(ctx, AgentEvent::UserNoise);
            }
            Mode::Transferring { .. } | Mode::Ending => return,
            Mode::Script => {}
        }
        if self.skip_on_turn
            && let Some(index) = self.always()
        {
            self.skip_on_turn = false;
            return self.take(ctx, index, Arrival::Flow);
        }
        if self.speaking.is_some() || !self.entry.pending().is_empty() {
            return;
        }
        let port = ctx.port();
        if !self.timers.resume_no_input(&port) && self.timers.no_input_off() {
            // The prompt was cut off, so its timer never started: start it now.
            let flow = self.flow.clone();
            if let Some(node) = flow.nodes.get(self.node) {
                let after = self.timeout_of(node);
                self.timers.start_no_input(&port, after);
            }
        }
    }

    fn on_barge_in(&mut self, ctx: &mut AgentContext, heard: Heard) {
        let ours = self
            .speaking
            .as_ref()
            .and_then(|p| p.playing.as_ref())
            .is_some_and(|p| p.utterance == heard.utterance);
        if !ours {
            return self.forward(ctx, AgentEvent::BargeIn(heard));
        }
        let Some(prompt) = self.speaking.take() else {
            return;
        };
        if let Some(playing) = &prompt.playing {
            self.history
                .cut(playing.history_at, heard.heard_text.as_deref());
        }
        match prompt.then {
            Then::Listen => {
                if self.always().is_some() {
                    self.skip_on_turn = true;
                }
                // Otherwise the caller is answering: their turn (or noise) comes next.
            }
            Then::StartAgent => self.start_agent(ctx, Some(self.node), false),
            Then::Hangup(reason) => self.hangup(ctx, reason),
        }
    }

    fn no_match(&mut self, ctx: &mut AgentContext) {
        self.no_matches += 1;
        Self::record(
            ctx,
            CallEventKind::ScriptNoMatch {
                node: self.node_name(),
                count: self.no_matches,
            },
        );
        if self.no_matches <= self.flow.settings.max_reprompts {
            let texts = self.texts.get(self.node);
            match texts.and_then(|t| t.reprompt.or(t.prompt)) {
                Some(text) => self.play(ctx, text, ScriptPromptKind::Reprompt, Then::Listen),
                None => self.listen(ctx),
            }
            return;
        }
        let flow = self.flow.clone();
        let Some(node) = flow.nodes.get(self.node) else {
            return;
        };
        match find(node, |t| matches!(t, Trigger::NoMatch)) {
            Some(index) => self.take(ctx, index, Arrival::Flow),
            None => {
                let reason = format!("no match at [{}]", node.name);
                self.say_goodbye(ctx, reason, false);
            }
        }
    }

    fn no_input(&mut self, ctx: &mut AgentContext, after: Duration) {
        let flow = self.flow.clone();
        let Some(node) = flow.nodes.get(self.node) else {
            return;
        };
        Self::record(
            ctx,
            CallEventKind::ScriptNoInput {
                node: node.name.clone(),
                after_ms: after.as_millis() as u64,
            },
        );
        match find(node, |t| matches!(t, Trigger::Timeout { .. })) {
            Some(index) => {
                self.leave_agent();
                self.take(ctx, index, Arrival::Flow);
            }
            None if matches!(self.mode, Mode::Script) => self.no_match(ctx),
            None => {}
        }
    }

    // ---- The language model ----

    /// Gives the conversation to the model: for the agent node `node`, or for good.
    fn start_agent(&mut self, ctx: &mut AgentContext, node: Option<usize>, answer_now: bool) {
        let Some(deps) = self.script.conversation.clone() else {
            return self.fail(
                ctx,
                "the script hands the call to the language model, and none is configured"
                    .to_owned(),
            );
        };
        self.leave_agent();
        self.timers.stop_all();
        let mut system = deps.prompt.render(&self.vars);
        if let Some(instructions) = node
            .and_then(|n| self.texts.get(n))
            .and_then(|t| t.instructions.as_ref())
        {
            system.push_str("\n\n");
            system.push_str(instructions);
        }
        let outcomes = node
            .and_then(|n| self.flow.nodes.get(n))
            .map(outcomes_of)
            .unwrap_or_default();
        let mut history = vec![ChatMessage::System { content: system }];
        history.extend(self.history.messages().iter().cloned());
        let mut agent = ConversationAgent::handover(
            deps,
            Handover {
                history,
                outcomes,
                answer_now,
            },
        );
        agent.take_over(ctx);
        self.hops = 0;
        self.mode = Mode::Agent(Box::new(AgentRun { agent, node }));
        if !answer_now {
            self.start_agent_timer(ctx);
        }
    }

    /// Starts the agent node's no-input timer, if it has a `timeout` transition.
    fn start_agent_timer(&mut self, ctx: &mut AgentContext) {
        let Mode::Agent(run) = &self.mode else {
            return;
        };
        let Some(node) = run.node.and_then(|n| self.flow.nodes.get(n)) else {
            return;
        };
        if find(node, |t| matches!(t, Trigger::Timeout { .. })).is_some() {
            let after = self.timeout_of(node);
            self.timers.start_no_input(&ctx.port(), after);
        }
    }

    /// Ends the model's part, taking its conversation back.
    fn leave_agent(&mut self) {
        if let Mode::Agent(mut run) = std::mem::replace(&mut self.mode, Mode::Script) {
            let model_history = run.agent.history();
            self.history
                .take_back(model_history.get(1..).unwrap_or_default());
            run.agent.finish();
        }
    }

    /// Passes an event to the model, if it has the conversation, then follows its choice.
    fn forward(&mut self, ctx: &mut AgentContext, event: AgentEvent) {
        let Mode::Agent(run) = &mut self.mode else {
            return;
        };
        run.agent.on_event(event, ctx);
        let Some(node) = run.node else {
            return;
        };
        let Some(outcome) = run.agent.take_route() else {
            return;
        };
        let flow = self.flow.clone();
        let Some(n) = flow.nodes.get(node) else {
            return;
        };
        let Some(index) = n.transitions.iter().position(|t| match &t.trigger {
            Trigger::Keys { keys } => keys.iter().any(|k| *k == Key::Phrase(outcome.clone())),
            _ => false,
        }) else {
            tracing::warn!(%outcome, node = %n.name, "the model chose an outcome the node does not have");
            return;
        };
        Self::record(
            ctx,
            CallEventKind::ScriptRoute {
                node: n.name.clone(),
                outcome,
                target: target_text(&n.transitions[index].target),
            },
        );
        self.leave_agent();
        self.take(ctx, index, Arrival::Flow);
    }

    // ---- Endings ----

    fn on_transfer_failed(&mut self, ctx: &mut AgentContext, to: String, error: String) {
        match std::mem::replace(&mut self.mode, Mode::Script) {
            Mode::Transferring { otherwise } => match otherwise {
                Some(target) => self.go(ctx, &target, Arrival::Flow),
                None => {
                    let reason = format!("transfer to {} failed: {error}", mask_number(&to));
                    self.say_goodbye(ctx, reason, false);
                }
            },
            mode @ Mode::Agent(_) => {
                self.mode = mode;
                self.forward(ctx, AgentEvent::TransferFailed { to, error });
            }
            mode => self.mode = mode,
        }
    }

    /// Says `@goodbye` (only from memory when `cached_only`), then hangs up.
    fn say_goodbye(&mut self, ctx: &mut AgentContext, reason: String, cached_only: bool) {
        self.cancel_own_prompt(ctx);
        self.leave_agent();
        self.timers.stop_all();
        self.mode = Mode::Ending;
        if let Some(text) = self.goodbye {
            if let Some((clip, cached)) = self.prompts.ready(text) {
                let then = Then::Hangup(reason);
                return self.stream(ctx, text, clip, cached, ScriptPromptKind::Goodbye, then);
            }
            if !cached_only {
                return self.play(ctx, text, ScriptPromptKind::Goodbye, Then::Hangup(reason));
            }
        }
        self.hangup(ctx, reason);
    }

    /// The script cannot go on: record why, say the goodbye if it is in memory, hang up.
    fn fail(&mut self, ctx: &mut AgentContext, reason: String) {
        tracing::warn!(%reason, script = %self.script.name, "scripted call failed");
        Self::record(
            ctx,
            CallEventKind::ScriptFailed {
                reason: reason.clone(),
                missing: Vec::new(),
            },
        );
        self.say_goodbye(ctx, reason, true);
    }

    fn hangup(&mut self, ctx: &mut AgentContext, reason: String) {
        if self.hung_up {
            return;
        }
        self.hung_up = true;
        self.mode = Mode::Ending;
        self.timers.shutdown();
        ctx.hangup(reason);
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
}

#[cfg(test)]
#[path = "interpreter_tests.rs"]
mod tests;
