//! The caller's input in a script node: keys, words, sounds without words, barge-in, and
//! what happens when nothing matched or nothing came.

use super::*;

impl ScriptAgent {
    // ---- Input ----

    pub(super) fn record_input(
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

    pub(super) fn on_dtmf(&mut self, ctx: &mut AgentContext, digit: char, source: DtmfSource) {
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

    pub(super) fn on_dtmf_step(&mut self, ctx: &mut AgentContext, step: DtmfStep) {
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

    pub(super) fn on_turn(&mut self, ctx: &mut AgentContext, turn: UserTurn) {
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
    pub(super) fn always(&self) -> Option<usize> {
        self.flow
            .nodes
            .get(self.node)
            .and_then(|n| find(n, |t| matches!(t, Trigger::Always)))
    }

    /// A sound without words: the silence goes on.
    pub(super) fn on_noise(&mut self, ctx: &mut AgentContext) {
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

    pub(super) fn on_barge_in(&mut self, ctx: &mut AgentContext, heard: Heard) {
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

    pub(super) fn no_match(&mut self, ctx: &mut AgentContext) {
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

    pub(super) fn no_input(&mut self, ctx: &mut AgentContext, after: Duration) {
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
}
