//! The `llm` agent: a phone conversation with a language model.
//!
//! It keeps the call's history (system prompt rendered with the call's `{{variables}}`),
//! answers each caller turn with a [`reply`](super::reply) task (model → clauses → speech),
//! and keeps the history true to what was *heard*: an answer cut off by a barge-in is trimmed
//! to the words the caller heard, known from the egress ledger's marks.
//!
//! Speculation: when the session says the turn has probably ended, the agent starts the
//! answer at once but holds its audio; the final transcript either matches (the audio is
//! released, ahead of time) or not (the held answer is dropped unheard and a new one starts).
//!
//! Hand-over: a scripted call can give its conversation to the model part-way through
//! ([`ConversationAgent::handover`]): the agent starts from the history it is given (no
//! greeting), may answer the caller's last turn at once, and — for a script node with
//! outcomes — has a `route` tool; once the words that came with the model's choice have
//! played, [`ConversationAgent::take_route`] hands the choice back to the script.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use super::CallInfo;
use super::agent::{
    Agent, AgentAction, AgentContext, AgentEvent, Heard, Speech, UserTurn, UtteranceId,
};
use super::events::CallEventKind;
use super::reply::{
    FallbackAudio, ReplyDone, ReplyJob, ReplyOutcome, ReplySource, SharedVoice, run_reply,
};
use super::turn::normalize_transcript;
use crate::llm::clause::ClauseRules;
use crate::llm::prompt::PromptTemplate;
use crate::llm::tools::Toolbox;
use crate::llm::{ChatMessage, ChatModel};
use crate::tts::TtsProvider;

/// Conversation settings (the `[conversation]` section).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationConfig {
    /// The system prompt; `{{ name }}` takes a call variable (`from`, `to`, `call_sid`,
    /// `carrier`, `date`, `time`, and every custom parameter of the stream).
    pub system_prompt: String,
    /// Said when the call starts (a template too); empty for none.
    pub greeting: String,
    /// Said when the model cannot answer in time.
    pub fallback_line: String,
    /// Said when the model ends the call without a goodbye.
    pub goodbye_line: String,
    /// Said when the model transfers the call without a word.
    pub transfer_line: String,
    /// Time the model may take for an answer, retries included (ms).
    pub latency_budget_ms: u64,
    /// Most model rounds per answer (tool results add rounds).
    pub max_tool_rounds: u32,
    /// Most messages kept in the history (the system prompt is always kept).
    pub max_history: usize,
    /// Characters before the first clause may be cut (speech starts sooner).
    pub first_clause_min_chars: usize,
    /// Characters before later clauses may be cut.
    pub clause_min_chars: usize,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        ConversationConfig {
            system_prompt: "You are a friendly, efficient phone assistant. Callers hear your \
                words spoken aloud: answer in one or two short sentences, no lists, no \
                markdown, no emojis. Ask one question at a time. Use the tools when they help."
                .to_owned(),
            greeting: "Hello! How can I help you today?".to_owned(),
            fallback_line: "Sorry, I'm having a little trouble right now. Could you say that \
                again?"
                .to_owned(),
            goodbye_line: "Thank you for calling. Goodbye!".to_owned(),
            transfer_line: "Please hold while I transfer your call.".to_owned(),
            latency_budget_ms: 3_000,
            max_tool_rounds: 3,
            max_history: 60,
            first_clause_min_chars: 12,
            clause_min_chars: 40,
        }
    }
}

/// What every `llm` agent of a gateway shares.
pub struct ConversationDeps {
    /// Settings.
    pub config: ConversationConfig,
    /// The parsed system prompt.
    pub prompt: PromptTemplate,
    /// The parsed greeting, if any.
    pub greeting: Option<PromptTemplate>,
    /// The language model.
    pub model: Arc<dyn ChatModel>,
    /// The synthesizer.
    pub tts: Arc<dyn TtsProvider>,
    /// The tools.
    pub toolbox: Arc<Toolbox>,
    /// Pre-synthesized fallback line.
    pub fallback_audio: Arc<FallbackAudio>,
}

impl std::fmt::Debug for ConversationDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationDeps")
            .field("model", &self.model.name())
            .field("tts", &self.tts.name())
            .finish_non_exhaustive()
    }
}

/// Longest the voicemail message may take to synthesize.
const VOICEMAIL_SYNTH_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The answer being prepared or spoken.
#[derive(Debug)]
struct ActiveReply {
    utterance: UtteranceId,
    cancel: CancellationToken,
    release: watch::Sender<bool>,
    /// For a held (speculative) reply: the normalized transcript it answers.
    speculative_for: Option<String>,
    /// The caller's words it answers (pushed to the history when it is released).
    user_text: Option<String>,
    started: Instant,
    /// Held back because the caller started speaking again before any of it was heard.
    held_for_caller: bool,
}

/// The `llm` agent of one call.
pub struct ConversationAgent {
    deps: Arc<ConversationDeps>,
    history: Vec<ChatMessage>,
    voice: Option<SharedVoice>,
    sample_rate: u32,
    reply: Option<ActiveReply>,
    /// Caller words not yet answered (an answer to them was dropped unheard).
    unanswered: Vec<String>,
    /// Where each finished reply's last assistant text sits in the history.
    assistant_at: HashMap<UtteranceId, usize>,
    /// Replies cut by a barge-in before they reported back: the words heard.
    interrupted: HashMap<UtteranceId, Heard>,
    finished: HashSet<UtteranceId>,
    /// Utterances whose first audio has been sent.
    audible: HashSet<UtteranceId>,
    end_after: Option<(UtteranceId, String)>,
    transfer_after: Option<(UtteranceId, String)>,
    /// The tools this conversation offers (the gateway's, plus `route` after a hand-over with
    /// outcomes).
    toolbox: Arc<Toolbox>,
    /// An outcome the model chose, waiting for the utterance that announced it to play.
    route_after: Option<(UtteranceId, String)>,
    /// An outcome the model chose whose words have played: the script takes over again.
    routed: Option<String>,
    /// Answer the history's last caller turn as soon as the conversation is taken over.
    answer_on_take_over: bool,
}

/// A conversation the model takes over part-way through a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    /// The system prompt, then the conversation so far (what the caller heard and said).
    pub history: Vec<ChatMessage>,
    /// Outcomes the model may choose with the `route` tool; none offers no `route` tool.
    pub outcomes: Vec<String>,
    /// Answer the caller's last turn (the history's last message) at once.
    pub answer_now: bool,
}

/// The variables of a call for templates: every custom parameter of the stream, plus `from`,
/// `to`, `call_sid`, `carrier`, `date` and `time` (UTC).
pub fn call_variables(info: &CallInfo) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = info.custom_parameters.clone().into_iter().collect();
    vars.insert("from".into(), info.from.clone().unwrap_or_default());
    vars.insert("to".into(), info.to.clone().unwrap_or_default());
    vars.insert("call_sid".into(), info.call_sid.clone());
    vars.insert("carrier".into(), info.carrier.as_str().to_owned());
    let now = chrono::Utc::now();
    vars.insert("date".into(), now.format("%A %-d %B %Y").to_string());
    vars.insert("time".into(), now.format("%H:%M UTC").to_string());
    vars
}

impl std::fmt::Debug for ConversationAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationAgent")
            .field("history", &self.history.len())
            .field("reply", &self.reply)
            .finish_non_exhaustive()
    }
}

impl ConversationAgent {
    /// A fresh agent.
    pub fn new(deps: Arc<ConversationDeps>) -> Self {
        ConversationAgent {
            toolbox: deps.toolbox.clone(),
            deps,
            history: Vec::new(),
            voice: None,
            sample_rate: 8000,
            reply: None,
            unanswered: Vec::new(),
            assistant_at: HashMap::new(),
            interrupted: HashMap::new(),
            finished: HashSet::new(),
            audible: HashSet::new(),
            end_after: None,
            transfer_after: None,
            route_after: None,
            routed: None,
            answer_on_take_over: false,
        }
    }

    /// An agent that continues a conversation begun by a script; start it with
    /// [`ConversationAgent::take_over`] (not `CallStarted`: the call is already running).
    pub fn handover(deps: Arc<ConversationDeps>, handover: Handover) -> Self {
        let mut agent = ConversationAgent::new(deps);
        if !handover.outcomes.is_empty() {
            agent.toolbox = Arc::new(agent.deps.toolbox.with_route(&handover.outcomes));
        }
        agent.answer_on_take_over = handover.answer_now
            && matches!(handover.history.last(), Some(ChatMessage::User { .. }));
        agent.history = handover.history;
        agent
    }

    /// Takes the call over now: opens the call's synthesizer and, when asked to, answers the
    /// caller's last turn at once.
    pub fn take_over(&mut self, ctx: &mut AgentContext) {
        self.sample_rate = ctx.info().media_format.sample_rate;
        self.voice = Some(Arc::new(Mutex::new(self.deps.tts.voice(self.sample_rate))));
        if std::mem::take(&mut self.answer_on_take_over)
            && let Some(ChatMessage::User { content }) = self.history.last()
        {
            let user_text = content.clone();
            let messages = self.trimmed_history();
            self.start_reply(
                ctx,
                ReplySource::Model { messages },
                Some(user_text),
                None,
                true,
            );
        }
    }

    /// The outcome the model chose with `route`, once the words that came with it have played
    /// (or the caller cut them off); taken once.
    pub fn take_route(&mut self) -> Option<String> {
        self.routed.take()
    }

    /// Stops everything in flight (the answer being prepared, the synthesizer); the agent
    /// says nothing more.
    pub fn finish(&mut self) {
        if let Some(reply) = self.reply.take() {
            reply.cancel.cancel();
        }
        if let Some(voice) = self.voice.take() {
            tokio::spawn(async move {
                voice.lock().await.close().await;
            });
        }
    }

    /// The conversation so far (for tests and inspection).
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    fn variables(ctx: &AgentContext) -> HashMap<String, String> {
        call_variables(ctx.info())
    }

    fn start_call(&mut self, ctx: &mut AgentContext) {
        self.sample_rate = ctx.info().media_format.sample_rate;
        self.voice = Some(Arc::new(Mutex::new(self.deps.tts.voice(self.sample_rate))));
        let vars = Self::variables(ctx);
        self.history.push(ChatMessage::System {
            content: self.deps.prompt.render(&vars),
        });
        if let Some(greeting) = &self.deps.greeting {
            let text = greeting.render(&vars);
            if !text.trim().is_empty() {
                self.start_reply(ctx, ReplySource::Fixed(text), None, None, true);
            }
        }
    }

    /// Spawns a reply; `held` replies keep their audio until released.
    fn start_reply(
        &mut self,
        ctx: &mut AgentContext,
        source: ReplySource,
        user_text: Option<String>,
        speculative_for: Option<String>,
        released: bool,
    ) {
        let Some(voice) = self.voice.clone() else {
            return;
        };
        let utterance = ctx.new_utterance();
        let cancel = CancellationToken::new();
        let (release_tx, release_rx) = watch::channel(released);
        let config = &self.deps.config;
        let job = ReplyJob {
            utterance,
            source,
            model: self.deps.model.clone(),
            toolbox: self.toolbox.clone(),
            voice,
            tts_name: self.deps.tts.name(),
            sample_rate: self.sample_rate,
            clause_rules: ClauseRules {
                first_min_chars: config.first_clause_min_chars,
                min_chars: config.clause_min_chars,
                ..ClauseRules::default()
            },
            latency_budget: Duration::from_millis(config.latency_budget_ms),
            max_rounds: config.max_tool_rounds,
            fallback_line: config.fallback_line.clone(),
            goodbye_line: config.goodbye_line.clone(),
            transfer_line: config.transfer_line.clone(),
            fallback_audio: self.deps.fallback_audio.clone(),
            port: ctx.port(),
            cancel: cancel.clone(),
            release: release_rx,
            started: Instant::now(),
        };
        tokio::spawn(run_reply(job));
        self.reply = Some(ActiveReply {
            utterance,
            cancel,
            release: release_tx,
            speculative_for,
            user_text,
            started: Instant::now(),
            held_for_caller: false,
        });
    }

    /// The messages for a model request answering `user_text`.
    fn request_messages(&self, user_text: &str) -> Vec<ChatMessage> {
        let mut messages = self.trimmed_history();
        messages.push(ChatMessage::User {
            content: user_text.to_owned(),
        });
        messages
    }

    /// The history capped at `max_history` messages (system prompt kept; never starting on a
    /// tool result whose call was cut off).
    fn trimmed_history(&self) -> Vec<ChatMessage> {
        let max = self.deps.config.max_history.max(2);
        if self.history.len() <= max {
            return self.history.clone();
        }
        let mut start = self.history.len() - (max - 1);
        while start < self.history.len() && matches!(self.history[start], ChatMessage::Tool { .. })
        {
            start += 1;
        }
        let mut out = vec![self.history[0].clone()];
        out.extend_from_slice(&self.history[start..]);
        out
    }

    /// Drops the active reply; if it was never heard, its caller words stay unanswered.
    fn cancel_reply(&mut self, ctx: &mut AgentContext, heard: bool) {
        if let Some(reply) = self.reply.take() {
            reply.cancel.cancel();
            if !heard {
                ctx.act(AgentAction::Cancel {
                    utterance: reply.utterance,
                });
                if let Some(text) = reply.user_text
                    && reply.speculative_for.is_none()
                {
                    // Its question goes back to the unanswered pile, out of the history.
                    if let Some(ChatMessage::User { content }) = self.history.last()
                        && *content == text
                    {
                        self.history.pop();
                    }
                    self.unanswered.push(text);
                }
            }
        }
    }

    fn on_turn(&mut self, ctx: &mut AgentContext, turn: UserTurn) {
        let Some(transcript) = turn.transcript.filter(|t| !t.trim().is_empty()) else {
            // No words (the recognizer is gone): keep the caller talking to something.
            if self.reply.is_none() {
                let line = self.deps.config.fallback_line.clone();
                self.start_reply(ctx, ReplySource::Fixed(line), None, None, true);
            }
            return;
        };
        let transcript = transcript.trim().to_owned();
        if let Some(reply) = self.reply.as_mut()
            && let Some(speculated) = reply.speculative_for.clone()
        {
            let mut parts = self.unanswered.clone();
            parts.push(transcript.clone());
            let user_text = parts.join(" ");
            if speculated == normalize_transcript(&user_text) {
                let head_start = reply.started.elapsed();
                reply.speculative_for = None;
                reply.user_text = Some(user_text.clone());
                let _ = reply.release.send(true);
                self.unanswered.clear();
                self.history.push(ChatMessage::User { content: user_text });
                ctx.act(AgentAction::Record(CallEventKind::SpeculationUsed {
                    head_start_ms: head_start.as_millis() as u64,
                }));
                return;
            }
            ctx.act(AgentAction::Record(CallEventKind::SpeculationDiscarded {
                reason: "transcript_changed",
            }));
            self.cancel_reply(ctx, false);
        } else if self
            .reply
            .as_ref()
            .is_some_and(|r| !self.finished.contains(&r.utterance))
        {
            // The caller spoke again before the last answer was heard: answer both at once.
            self.cancel_reply(ctx, false);
        }
        let mut parts = std::mem::take(&mut self.unanswered);
        parts.push(transcript);
        let user_text = parts.join(" ");
        let messages = self.request_messages(&user_text);
        self.history.push(ChatMessage::User {
            content: user_text.clone(),
        });
        self.start_reply(
            ctx,
            ReplySource::Model { messages },
            Some(user_text),
            None,
            true,
        );
    }

    fn on_likely_end(&mut self, ctx: &mut AgentContext, transcript: String) {
        if self.reply.is_some() {
            return;
        }
        let mut parts = self.unanswered.clone();
        parts.push(transcript.trim().to_owned());
        let user_text = parts.join(" ");
        let messages = self.request_messages(&user_text);
        let wanted = normalize_transcript(&user_text);
        self.start_reply(
            ctx,
            ReplySource::Model { messages },
            None,
            Some(wanted),
            false,
        );
    }

    fn on_barge_in(&mut self, ctx: &mut AgentContext, heard: Heard) {
        let utterance = heard.utterance;
        let active = self
            .reply
            .as_ref()
            .is_some_and(|r| r.utterance == heard.utterance);
        if active {
            if let Some(reply) = self.reply.take() {
                reply.cancel.cancel();
            }
            self.interrupted.insert(heard.utterance, heard);
        } else if let Some(&index) = self.assistant_at.get(&heard.utterance) {
            self.trim_assistant(ctx, index, &heard);
        }
        // The caller cut off the words that came with a choice: the choice stands.
        if self
            .route_after
            .as_ref()
            .is_some_and(|(id, _)| *id == utterance)
            && let Some((_, outcome)) = self.route_after.take()
        {
            self.routed = Some(outcome);
        }
    }

    /// Cuts the assistant message at `index` to the words heard.
    fn trim_assistant(&mut self, ctx: &mut AgentContext, index: usize, heard: &Heard) {
        let heard_text = heard.heard_text.clone().unwrap_or_default();
        if let Some(ChatMessage::Assistant { content, .. }) = self.history.get_mut(index) {
            let before = content.as_deref().map(str::len).unwrap_or(0);
            let kept = if heard_text.trim().is_empty() {
                None
            } else {
                Some(format!("{heard_text}…"))
            };
            *content = kept;
            ctx.act(AgentAction::Record(CallEventKind::HistoryTrimmed {
                heard_text: heard_text.clone(),
                dropped_chars: before.saturating_sub(heard_text.len()),
            }));
        }
    }

    fn on_reply_done(&mut self, ctx: &mut AgentContext, done: ReplyDone) {
        let current = self
            .reply
            .as_ref()
            .is_some_and(|r| r.utterance == done.utterance);
        if current {
            self.reply = None;
        }
        let interrupted = self.interrupted.remove(&done.utterance);
        if done.outcome == ReplyOutcome::Cancelled && interrupted.is_none() {
            // Dropped unheard (discarded speculation, superseded answer): no history.
            return;
        }
        let mut last_assistant = None;
        for message in done.messages {
            if matches!(message, ChatMessage::Assistant { .. }) {
                last_assistant = Some(self.history.len());
            }
            self.history.push(message);
        }
        if let Some(index) = last_assistant {
            self.assistant_at.insert(done.utterance, index);
            if let Some(heard) = interrupted {
                self.trim_assistant(ctx, index, &heard);
                return;
            }
        }
        if let Some(reason) = done.end_call {
            self.end_after = Some((done.utterance, reason));
        }
        if let Some(to) = done.transfer {
            self.transfer_after = Some((done.utterance, to));
        }
        if let Some(outcome) = done.route {
            self.route_after = Some((done.utterance, outcome));
        }
        self.after_speech(ctx, None);
    }

    /// Ends or transfers the call once the utterance that announced it has played.
    fn after_speech(&mut self, ctx: &mut AgentContext, finished: Option<UtteranceId>) {
        if let Some(id) = finished {
            self.finished.insert(id);
        }
        if let Some((id, _)) = &self.end_after
            && self.finished.contains(id)
            && let Some((_, reason)) = self.end_after.take()
        {
            ctx.hangup(format!("end_call: {reason}"));
            return;
        }
        if let Some((id, _)) = &self.transfer_after
            && self.finished.contains(id)
            && let Some((_, to)) = self.transfer_after.take()
        {
            ctx.act(AgentAction::Transfer { to });
            return;
        }
        if let Some((id, _)) = &self.route_after
            && self.finished.contains(id)
            && let Some((_, outcome)) = self.route_after.take()
        {
            self.routed = Some(outcome);
        }
    }
}

impl Agent for ConversationAgent {
    /// Synthesizes the call's voicemail message (the model has no message of its own) with
    /// a voice of its own, in the background.
    fn prepare_voicemail(&mut self, message: Option<&str>, ctx: &mut AgentContext) -> bool {
        let Some(text) = message.map(str::trim).filter(|t| !t.is_empty()) else {
            return false;
        };
        let text = text.to_owned();
        let rate = ctx.info().media_format.sample_rate;
        let mut voice = self.deps.tts.voice(rate);
        let port = ctx.port();
        tokio::spawn(async move {
            let result =
                crate::script::synth::synthesize_clip(&mut *voice, &text, VOICEMAIL_SYNTH_LIMIT)
                    .await
                    .map(|clip| Speech {
                        pcm: clip.pcm,
                        sample_rate: rate,
                        text: Some(text.clone()),
                    })
                    .map_err(|e| e.to_string());
            voice.close().await;
            let _ = port.send(AgentAction::VoicemailReady(result)).await;
        });
        true
    }

    fn on_event(&mut self, event: AgentEvent, ctx: &mut AgentContext) {
        match event {
            AgentEvent::CallStarted => self.start_call(ctx),
            AgentEvent::TurnLikelyEnded { transcript } => self.on_likely_end(ctx, transcript),
            AgentEvent::UserSpeechResumed => {
                if self
                    .reply
                    .as_ref()
                    .is_some_and(|r| r.speculative_for.is_some())
                {
                    self.cancel_reply(ctx, false);
                }
            }
            AgentEvent::UserTurnEnded(turn) => self.on_turn(ctx, turn),
            AgentEvent::BargeIn(heard) => self.on_barge_in(ctx, heard),
            AgentEvent::SpeechFinished { utterance } => self.after_speech(ctx, Some(utterance)),
            AgentEvent::Dtmf { digit, .. } => {
                let turn = UserTurn {
                    audio: Vec::new(),
                    transcript: Some(format!("(The caller pressed the {digit} key.)")),
                    speech_end: Instant::now(),
                    decided: Instant::now(),
                };
                self.on_turn(ctx, turn);
            }
            AgentEvent::TransferFailed { .. } => {
                // The model hears of it as a note in the caller's turn and answers (apology,
                // message taking) in its own words.
                let turn = UserTurn {
                    audio: Vec::new(),
                    transcript: Some(
                        "(System note: the call transfer did not go through; the caller is \
                         still on the line.)"
                            .to_owned(),
                    ),
                    speech_end: Instant::now(),
                    decided: Instant::now(),
                };
                self.on_turn(ctx, turn);
            }
            AgentEvent::Wake(message) => {
                if let Ok(done) = message.downcast::<ReplyDone>() {
                    self.on_reply_done(ctx, *done);
                }
            }
            AgentEvent::CallEnding => self.finish(),
            AgentEvent::UserSpeechStarted => {
                // The caller speaks again before the answer was heard: hold it back (it is
                // dropped and merged if this becomes a turn, released if it was noise).
                if let Some(reply) = self.reply.as_mut()
                    && reply.speculative_for.is_none()
                    && !self.audible.contains(&reply.utterance)
                    && !self.finished.contains(&reply.utterance)
                {
                    reply.held_for_caller = true;
                    let _ = reply.release.send(false);
                }
            }
            AgentEvent::UserNoise => {
                if let Some(reply) = self.reply.as_mut()
                    && reply.held_for_caller
                {
                    reply.held_for_caller = false;
                    let _ = reply.release.send(true);
                }
            }
            AgentEvent::SpeechStarted { utterance } => {
                self.audible.insert(utterance);
            }
        }
    }

    fn wants_transcripts(&self) -> bool {
        true
    }
}
