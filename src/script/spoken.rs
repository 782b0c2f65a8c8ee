//! The texts of a flow the prompt cache prepares: prompts, reprompts and the `@goodbye` that
//! have no variables (sms texts are texted, not spoken), and whether a flow needs the language
//! model.

use serde::{Deserialize, Serialize};

use super::flow::{Flow, Target};
use super::render::TextKind;

/// Which spoken part of a flow a prompt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    /// A node's prompt (its text lines).
    Prompt,
    /// A node's `reprompt:`.
    Reprompt,
    /// The flow's `@goodbye`.
    Goodbye,
}

impl PromptKind {
    /// The spoken kind of a flow text; `None` for a texted one (sms).
    pub fn of(kind: TextKind) -> Option<PromptKind> {
        match kind {
            TextKind::Prompt => Some(PromptKind::Prompt),
            TextKind::Reprompt => Some(PromptKind::Reprompt),
            TextKind::Goodbye => Some(PromptKind::Goodbye),
            TextKind::Sms => None,
        }
    }

    /// The kind as written in manifests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptKind::Prompt => "prompt",
            PromptKind::Reprompt => "reprompt",
            PromptKind::Goodbye => "goodbye",
        }
    }
}

/// A spoken text of a flow that has no variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpokenText {
    /// The node it belongs to; `None` for the `@goodbye`.
    pub node: Option<String>,
    /// Which part it is.
    pub kind: PromptKind,
    /// The text.
    pub text: String,
}

/// Every spoken text of `flow` without variables, in flow order (the `@goodbye` first).
pub fn spoken_texts(flow: &Flow) -> Vec<SpokenText> {
    flow.static_texts()
        .into_iter()
        .filter(|s| !s.text.trim().is_empty())
        .filter_map(|s| {
            Some(SpokenText {
                kind: PromptKind::of(s.kind)?,
                node: s.node,
                text: s.text,
            })
        })
        .collect()
}

/// The distinct spoken texts of `flow` without variables, in first-use order.
pub fn distinct_texts(flow: &Flow) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    for spoken in spoken_texts(flow) {
        if !texts.contains(&spoken.text) {
            texts.push(spoken.text);
        }
    }
    texts
}

/// The nodes of `flow` that hand the call to the language model: agent nodes, and nodes with
/// an `agent` target (also behind `transfer … else` or `sms … then`). In flow order.
pub fn llm_nodes(flow: &Flow) -> Vec<&str> {
    fn leads_to_agent(target: &Target) -> bool {
        match target {
            Target::Agent => true,
            Target::Node { .. } | Target::End => false,
            Target::Transfer { otherwise, .. } => otherwise.as_deref().is_some_and(leads_to_agent),
            Target::Sms { then, .. } => leads_to_agent(then),
        }
    }
    flow.nodes
        .iter()
        .filter(|node| {
            node.is_agent() || node.transitions.iter().any(|t| leads_to_agent(&t.target))
        })
        .map(|node| node.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parse;

    const SCRIPT: &str = r#"@goodbye Bye for now.
[start]
Hi {{ name | there }}.
reprompt: Press 1.
-> 1: menu
-> 2: sms "Link for {{ name | you }}" then menu
-> 3: sms "Static text" then END

[menu]
Press 1.
-> 1: transfer +14155550100 else agent
-> 2: helper
-> 3: END

[helper]
agent: Help them.
-> "done": END
"#;

    #[test]
    fn spoken_texts_are_static_prompts_reprompts_and_goodbye_but_not_sms() {
        let flow = parse(SCRIPT).unwrap().flow;
        let texts = spoken_texts(&flow);
        let got: Vec<(Option<&str>, PromptKind, &str)> = texts
            .iter()
            .map(|s| (s.node.as_deref(), s.kind, s.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, PromptKind::Goodbye, "Bye for now."),
                (Some("start"), PromptKind::Reprompt, "Press 1."),
                (Some("menu"), PromptKind::Prompt, "Press 1."),
            ]
        );
        assert_eq!(distinct_texts(&flow), vec!["Bye for now.", "Press 1."]);
    }

    #[test]
    fn llm_nodes_are_agent_nodes_and_nodes_leading_to_the_model() {
        let flow = parse(SCRIPT).unwrap().flow;
        assert_eq!(llm_nodes(&flow), vec!["menu", "helper"]);
        let plain =
            parse("[start]\nHi.\n-> 1: transfer +14155550100 else END\n-> 2: sms \"x\" then END\n")
                .unwrap()
                .flow;
        assert!(llm_nodes(&plain).is_empty());
        let via_sms = parse("[start]\nHi.\n-> 1: sms \"x\" then agent\n")
            .unwrap()
            .flow;
        assert_eq!(llm_nodes(&via_sms), vec!["start"]);
    }

    #[test]
    fn kinds_map_from_flow_text_kinds() {
        assert_eq!(PromptKind::of(TextKind::Sms), None);
        assert_eq!(PromptKind::of(TextKind::Goodbye), Some(PromptKind::Goodbye));
        assert_eq!(PromptKind::Reprompt.as_str(), "reprompt");
    }
}
