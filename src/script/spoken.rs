//! The texts a flow speaks: every node's prompt and reprompt and the flow's `@goodbye`, with
//! where each comes from. The prompt cache synthesizes the ones without variables ahead of
//! time; a call renders the others once its variables are known.

use serde::{Deserialize, Serialize};

use super::flow::{Flow, Target, Template, TemplatePart};

/// Which part of a flow a spoken text is.
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
    /// The kind as written in manifests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptKind::Prompt => "prompt",
            PromptKind::Reprompt => "reprompt",
            PromptKind::Goodbye => "goodbye",
        }
    }
}

/// One spoken template of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spoken<'a> {
    /// The node it belongs to; `None` for the flow-wide `@goodbye`.
    pub node: Option<&'a str>,
    /// Which part it is.
    pub kind: PromptKind,
    /// The text, possibly with variables.
    pub template: &'a Template,
}

/// Every spoken template of `flow`: node by node in file order (prompt, then reprompt), then
/// the `@goodbye`.
pub fn spoken(flow: &Flow) -> Vec<Spoken<'_>> {
    let mut out = Vec::new();
    for node in &flow.nodes {
        for (kind, template) in [
            (PromptKind::Prompt, &node.prompt),
            (PromptKind::Reprompt, &node.reprompt),
        ] {
            if let Some(template) = template {
                out.push(Spoken {
                    node: Some(&node.name),
                    kind,
                    template,
                });
            }
        }
    }
    out.push(Spoken {
        node: None,
        kind: PromptKind::Goodbye,
        template: &flow.settings.goodbye,
    });
    out
}

/// The text of a template without variables; `None` when it has variables or says nothing
/// (only blanks).
pub fn static_text(template: &Template) -> Option<String> {
    let mut text = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Text(piece) => text.push_str(piece),
            TemplatePart::Var { .. } => return None,
        }
    }
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

/// The distinct texts without variables that `flow` speaks, in first-use order.
pub fn static_texts(flow: &Flow) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    for spoken in spoken(flow) {
        if let Some(text) = static_text(spoken.template)
            && !texts.contains(&text)
        {
            texts.push(text);
        }
    }
    texts
}

/// Whether any part of `flow` hands the call to the language model (an agent node or an
/// `agent` target, also behind `transfer … else` or `sms … then`).
pub fn uses_llm(flow: &Flow) -> bool {
    fn leads_to_agent(target: &Target) -> bool {
        match target {
            Target::Agent => true,
            Target::Node { .. } | Target::End => false,
            Target::Transfer { otherwise, .. } => otherwise.as_deref().is_some_and(leads_to_agent),
            Target::Sms { then, .. } => leads_to_agent(then),
        }
    }
    flow.nodes.iter().any(|node| {
        node.is_agent() || node.transitions.iter().any(|t| leads_to_agent(&t.target))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::flow::{Node, Settings, Transition, Trigger};

    fn var(name: &str, fallback: Option<&str>) -> TemplatePart {
        TemplatePart::Var {
            name: name.into(),
            fallback: fallback.map(str::to_owned),
        }
    }

    fn node(name: &str, prompt: Option<Template>, reprompt: Option<Template>) -> Node {
        Node {
            name: name.into(),
            prompt,
            reprompt,
            agent: None,
            transitions: vec![Transition {
                trigger: Trigger::Always,
                target: Target::End,
            }],
        }
    }

    fn flow(nodes: Vec<Node>) -> Flow {
        Flow {
            settings: Settings::default(),
            nodes,
        }
    }

    #[test]
    fn spoken_lists_prompts_reprompts_then_goodbye_in_file_order() {
        let f = flow(vec![
            node(
                "start",
                Some(Template::text("Hello.")),
                Some(Template::text("Again?")),
            ),
            node("bye", Some(Template::text("Bye.")), None),
            node("silent", None, None),
        ]);
        let got: Vec<(Option<&str>, PromptKind)> =
            spoken(&f).iter().map(|s| (s.node, s.kind)).collect();
        assert_eq!(
            got,
            vec![
                (Some("start"), PromptKind::Prompt),
                (Some("start"), PromptKind::Reprompt),
                (Some("bye"), PromptKind::Prompt),
                (None, PromptKind::Goodbye),
            ]
        );
    }

    #[test]
    fn static_texts_skip_variables_blanks_and_repeats() {
        let with_var = Template {
            parts: vec![
                TemplatePart::Text("Hi ".into()),
                var("name", Some("there")),
                TemplatePart::Text(".".into()),
            ],
        };
        let joined = Template {
            parts: vec![
                TemplatePart::Text("Press 1".into()),
                TemplatePart::Text(" now.".into()),
            ],
        };
        let f = flow(vec![
            node("start", Some(with_var), Some(Template::text("Bye."))),
            node("a", Some(joined), Some(Template::text("   "))),
            node("b", Some(Template::text("Bye.")), None),
        ]);
        assert_eq!(
            static_texts(&f),
            vec![
                "Bye.".to_owned(),
                "Press 1 now.".to_owned(),
                "Sorry, I couldn't understand. Goodbye.".to_owned(),
            ]
        );
    }

    #[test]
    fn uses_llm_finds_agent_nodes_and_nested_agent_targets() {
        let plain = flow(vec![node("start", Some(Template::text("Hi.")), None)]);
        assert!(!uses_llm(&plain));

        let mut agent_node = plain.clone();
        agent_node.nodes[0].agent = Some(Template::text("Help them."));
        assert!(uses_llm(&agent_node));

        for target in [
            Target::Agent,
            Target::Transfer {
                to: "+14155550100".into(),
                otherwise: Some(Box::new(Target::Agent)),
            },
            Target::Sms {
                text: Template::text("Link"),
                then: Box::new(Target::Agent),
            },
        ] {
            let mut f = plain.clone();
            f.nodes[0].transitions[0].target = target.clone();
            assert!(uses_llm(&f), "{target:?}");
        }

        let mut no_agent = plain.clone();
        no_agent.nodes[0].transitions[0].target = Target::Transfer {
            to: "+14155550100".into(),
            otherwise: Some(Box::new(Target::End)),
        };
        assert!(!uses_llm(&no_agent));
    }
}
