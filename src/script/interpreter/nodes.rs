//! Nodes, prompts and targets: entering a node, saying its prompt, taking a transition, and
//! the ways a call ends (goodbye, failure, hang-up, a failed transfer).

use super::*;

impl ScriptAgent {
    // ---- Nodes and prompts ----

    pub(super) fn enter(&mut self, ctx: &mut AgentContext, node: usize, arrival: Arrival) {
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
    pub(super) fn play(
        &mut self,
        ctx: &mut AgentContext,
        text: TextId,
        kind: ScriptPromptKind,
        then: Then,
    ) {
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
    pub(super) fn stream(
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
    pub(super) fn cancel_own_prompt(&mut self, ctx: &mut AgentContext) -> Option<Then> {
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
    pub(super) fn prompt_played(&mut self, ctx: &mut AgentContext, then: Then) {
        match then {
            Then::Listen => self.listen(ctx),
            Then::StartAgent => self.start_agent(ctx, Some(self.node), false),
            Then::Hangup(reason) => self.hangup(ctx, reason),
        }
    }

    /// After the node's prompt: its unconditional transition, or wait for input.
    pub(super) fn listen(&mut self, ctx: &mut AgentContext) {
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
    pub(super) fn timeout_of(&self, node: &Node) -> Duration {
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
    pub(super) fn take(&mut self, ctx: &mut AgentContext, index: usize, arrival: Arrival) {
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

    pub(super) fn go(&mut self, ctx: &mut AgentContext, target: &Target, arrival: Arrival) {
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

    // ---- Endings ----

    pub(super) fn on_transfer_failed(&mut self, ctx: &mut AgentContext, to: String, error: String) {
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
    pub(super) fn say_goodbye(
        &mut self,
        ctx: &mut AgentContext,
        reason: String,
        cached_only: bool,
    ) {
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
    pub(super) fn fail(&mut self, ctx: &mut AgentContext, reason: String) {
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

    pub(super) fn hangup(&mut self, ctx: &mut AgentContext, reason: String) {
        if self.hung_up {
            return;
        }
        self.hung_up = true;
        self.mode = Mode::Ending;
        self.timers.shutdown();
        ctx.hangup(reason);
    }
}
