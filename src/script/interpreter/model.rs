//! The language model's part of a scripted call: agent nodes (which come back with an
//! outcome) and the `agent` target (which keeps the call).

use super::*;

/// The outcomes of an agent node: its quoted keys, in file order.
pub(super) fn outcomes_of(node: &Node) -> Vec<String> {
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

impl ScriptAgent {
    // ---- The language model ----

    /// Gives the conversation to the model: for the agent node `node`, or for good.
    pub(super) fn start_agent(
        &mut self,
        ctx: &mut AgentContext,
        node: Option<usize>,
        answer_now: bool,
    ) {
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
    pub(super) fn start_agent_timer(&mut self, ctx: &mut AgentContext) {
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
    pub(super) fn leave_agent(&mut self) {
        if let Mode::Agent(mut run) = std::mem::replace(&mut self.mode, Mode::Script) {
            let model_history = run.agent.history();
            self.history
                .take_back(model_history.get(1..).unwrap_or_default());
            run.agent.finish();
        }
    }

    /// Passes an event to the model, if it has the conversation, then follows its choice.
    pub(super) fn forward(&mut self, ctx: &mut AgentContext, event: AgentEvent) {
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
}
