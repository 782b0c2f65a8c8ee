//! Filling templates with a call's variables, and what a flow needs: the variables it cannot
//! do without, and the texts that need none (for the prompt cache).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use super::flow::{Flow, Target, Template, TemplatePart, collapse_blanks};

/// A variable a template needs that has no value and no fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the variable `{name}` has no value and no fallback")]
pub struct MissingVariable {
    /// The variable's name.
    pub name: String,
}

/// One variable a flow needs that the call does not give, and where it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingUse {
    /// The variable's name.
    pub name: String,
    /// The nodes that need it (`@goodbye` for the goodbye setting), in flow order.
    pub needed_by: Vec<String>,
}

/// Every variable a flow needs that the call does not give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MissingVariables {
    /// By variable name.
    pub missing: Vec<MissingUse>,
}

impl fmt::Display for MissingVariables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing variables: ")?;
        for (i, m) in self.missing.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "`{}` (needed by {})", m.name, m.needed_by.join(", "))?;
        }
        Ok(())
    }
}

/// What a text is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    /// A node's prompt.
    Prompt,
    /// A node's `reprompt:`.
    Reprompt,
    /// The `@goodbye` setting.
    Goodbye,
    /// The text of an `sms` target.
    Sms,
}

/// A text of the flow that depends on no variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticText {
    /// The node it belongs to; `None` for `@goodbye`.
    pub node: Option<String>,
    /// What it is.
    pub kind: TextKind,
    /// The text.
    pub text: String,
}

impl Template {
    /// The text with every variable filled in: its value, or its fallback when the value is
    /// missing or blank. Blanks are normalized (runs made one space, none at the ends).
    pub fn render(&self, vars: &HashMap<String, String>) -> Result<String, MissingVariable> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Var { name, fallback } => {
                    match vars.get(name).filter(|v| !v.trim().is_empty()) {
                        Some(value) => out.push_str(value),
                        None => match fallback {
                            Some(fallback) => out.push_str(fallback),
                            None => return Err(MissingVariable { name: name.clone() }),
                        },
                    }
                }
            }
        }
        Ok(collapse_blanks(&out))
    }

    /// The variables used without a fallback.
    pub fn required_variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Var {
                name,
                fallback: None,
            } => Some(name.as_str()),
            _ => None,
        })
    }

    /// The text, when the template has no variables.
    pub fn static_text(&self) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Var { .. } => return None,
            }
        }
        Some(out)
    }
}

impl Flow {
    /// Every template of the flow with where it is: `(node, kind, template)`, node `None` for
    /// `@goodbye`; `kind` `None` for `agent:` instructions. In flow order.
    fn templates(&self) -> Vec<(Option<&str>, Option<TextKind>, &Template)> {
        let mut out = vec![(None, Some(TextKind::Goodbye), &self.settings.goodbye)];
        for node in &self.nodes {
            let name = Some(node.name.as_str());
            if let Some(t) = &node.prompt {
                out.push((name, Some(TextKind::Prompt), t));
            }
            if let Some(t) = &node.reprompt {
                out.push((name, Some(TextKind::Reprompt), t));
            }
            if let Some(t) = &node.agent {
                out.push((name, None, t));
            }
            for transition in &node.transitions {
                let mut target = Some(&transition.target);
                while let Some(t) = target {
                    target = match t {
                        Target::Sms { text, then } => {
                            out.push((name, Some(TextKind::Sms), text));
                            Some(then.as_ref())
                        }
                        Target::Transfer { otherwise, .. } => otherwise.as_deref(),
                        Target::Node { .. } | Target::End | Target::Agent => None,
                    };
                }
            }
        }
        out
    }

    /// The variables used somewhere without a fallback: a call must give them all.
    pub fn required_variables(&self) -> BTreeSet<String> {
        self.templates()
            .into_iter()
            .flat_map(|(_, _, t)| t.required_variables())
            .map(str::to_owned)
            .collect()
    }

    /// Checks that `vars` gives (non-blank) every required variable; the error lists each one
    /// missing with the nodes that need it.
    pub fn check_variables(&self, vars: &HashMap<String, String>) -> Result<(), MissingVariables> {
        let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (node, _, template) in self.templates() {
            for name in template.required_variables() {
                if vars.get(name).is_some_and(|v| !v.trim().is_empty()) {
                    continue;
                }
                let place = node.unwrap_or("@goodbye").to_owned();
                let places = missing.entry(name).or_default();
                if !places.contains(&place) {
                    places.push(place);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(MissingVariables {
            missing: missing
                .into_iter()
                .map(|(name, needed_by)| MissingUse {
                    name: name.to_owned(),
                    needed_by,
                })
                .collect(),
        })
    }

    /// Every prompt, reprompt, `@goodbye` and sms text with no variables, in flow order (the
    /// `@goodbye` first): what the prompt cache can prepare ahead of any call.
    pub fn static_texts(&self) -> Vec<StaticText> {
        self.templates()
            .into_iter()
            .filter_map(|(node, kind, template)| {
                Some(StaticText {
                    node: node.map(str::to_owned),
                    kind: kind?,
                    text: template.static_text()?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parse;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn template(source_line: &str) -> Template {
        let flow = parse(&format!("[start]\n{source_line}\n-> END\n"))
            .unwrap()
            .flow;
        flow.nodes[0].prompt.clone().unwrap()
    }

    #[test]
    fn renders_values_fallbacks_and_normalizes_blanks() {
        let t = template("Hi {{ name | there }}, from {{ tenant }}.");
        assert_eq!(
            t.render(&vars(&[("name", "Ana"), ("tenant", "Acme")])),
            Ok("Hi Ana, from Acme.".to_owned())
        );
        assert_eq!(
            t.render(&vars(&[("tenant", "  Acme \n Dental ")])),
            Ok("Hi there, from Acme Dental .".to_owned())
        );
        assert_eq!(
            t.render(&vars(&[("name", "  "), ("tenant", "Acme")])),
            Ok("Hi there, from Acme.".to_owned())
        );
        assert_eq!(
            t.render(&vars(&[("name", "Ana")])),
            Err(MissingVariable {
                name: "tenant".to_owned()
            })
        );
        assert_eq!(
            t.render(&vars(&[("name", "Ana"), ("tenant", "")])),
            Err(MissingVariable {
                name: "tenant".to_owned()
            })
        );
        let empty = template("\\[{{ a | }}] and {{ b | }} end");
        assert_eq!(empty.render(&HashMap::new()), Ok("[] and end".to_owned()));
    }

    #[test]
    fn a_static_text_renders_to_itself() {
        // The prompt cache keys audio by text: what a call renders must equal what was primed.
        let flow =
            parse("@goodbye  Bye \t now.\n[start]\n  Hello,   there.\n  Second line.\n-> END\n")
                .unwrap()
                .flow;
        for static_text in flow.static_texts() {
            let template = match static_text.node {
                None => &flow.settings.goodbye,
                Some(_) => flow.nodes[0].prompt.as_ref().unwrap(),
            };
            assert_eq!(template.render(&HashMap::new()), Ok(static_text.text));
        }
        assert_eq!(flow.static_texts()[1].text, "Hello, there. Second line.");
    }

    const FLOW: &str = r#"@goodbye Bye {{ who | friend }} from {{ org }}.
[start]
Hello {{ name }}, this is {{ org }}.
reprompt: Press 1.
agent: Help {{ name }} with {{ topic | anything }}.
-> "done": next
-> timeout: transfer +14155550100 else sms "Call {{ org }} back, {{ agentName }}" then next

[next]
Thanks. Goodbye.
-> sms "Thanks from us" then sms_end

[sms_end]
-> sms "See you {{ day }}"
"#;

    #[test]
    fn required_variables_are_those_without_a_fallback_anywhere() {
        let flow = parse(FLOW).unwrap().flow;
        let required: Vec<String> = flow.required_variables().into_iter().collect();
        assert_eq!(required, ["agentName", "day", "name", "org"]);
    }

    #[test]
    fn check_variables_lists_every_missing_one_with_its_nodes() {
        let flow = parse(FLOW).unwrap().flow;
        let all = vars(&[
            ("name", "A"),
            ("org", "B"),
            ("agentName", "C"),
            ("day", "D"),
        ]);
        assert_eq!(flow.check_variables(&all), Ok(()));
        let err = flow
            .check_variables(&vars(&[("name", "A"), ("day", " ")]))
            .unwrap_err();
        assert_eq!(
            err.missing,
            vec![
                MissingUse {
                    name: "agentName".to_owned(),
                    needed_by: vec!["start".to_owned()]
                },
                MissingUse {
                    name: "day".to_owned(),
                    needed_by: vec!["sms_end".to_owned()]
                },
                MissingUse {
                    name: "org".to_owned(),
                    needed_by: vec!["@goodbye".to_owned(), "start".to_owned()]
                },
            ]
        );
        assert_eq!(
            err.to_string(),
            "missing variables: `agentName` (needed by start), `day` (needed by sms_end), `org` (needed by @goodbye, start)"
        );
    }

    #[test]
    fn static_texts_are_every_spoken_or_texted_text_without_variables() {
        let flow = parse(FLOW).unwrap().flow;
        let texts: Vec<(Option<String>, TextKind, String)> = flow
            .static_texts()
            .into_iter()
            .map(|s| (s.node, s.kind, s.text))
            .collect();
        let owned = |n: &str, k, t: &str| (Some(n.to_owned()), k, t.to_owned());
        assert_eq!(
            texts,
            vec![
                owned("start", TextKind::Reprompt, "Press 1."),
                owned("next", TextKind::Prompt, "Thanks. Goodbye."),
                owned("next", TextKind::Sms, "Thanks from us"),
            ]
        );
        let default = parse("[start]\n-> END\n").unwrap().flow;
        assert_eq!(
            default.static_texts(),
            vec![StaticText {
                node: None,
                kind: TextKind::Goodbye,
                text: "Sorry, I couldn't understand. Goodbye.".to_owned()
            }]
        );
    }
}
