//! A scripted call's variables, and its templates rendered with them.
//!
//! Values come from the script's defaults, overlaid by the stream's custom parameters and the
//! call's own facts (`from`, `to`, `call_sid`, `carrier`, `date`, `time`). A variable with a
//! fallback takes the fallback when its value is missing or blank; one without a fallback must
//! have a value, or the call cannot run (docs/script.md, "Variables").

use std::collections::HashMap;

use super::flow::{Flow, Target, Template, TemplatePart};
use crate::call::CallInfo;
use crate::call::conversation::call_variables;

/// Variables without fallback that have no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing variable{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
pub struct MissingVariables(pub Vec<String>);

/// The variables of one call: `defaults` overlaid by every non-blank value the call brings.
pub fn for_call(defaults: &HashMap<String, String>, info: &CallInfo) -> HashMap<String, String> {
    let mut vars = defaults.clone();
    for (name, value) in call_variables(info) {
        if !value.trim().is_empty() || !vars.contains_key(&name) {
            vars.insert(name, value);
        }
    }
    vars
}

/// The value a variable slot takes, if any: its value when not blank (runs of blanks made one
/// space), else its fallback.
fn value<'a>(
    vars: &'a HashMap<String, String>,
    name: &str,
    fallback: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    match vars.get(name).filter(|v| !v.trim().is_empty()) {
        Some(v) => Some(collapse_blanks(v)),
        None => fallback.map(std::borrow::Cow::Borrowed),
    }
}

/// `text` trimmed, with every run of blanks made one space.
fn collapse_blanks(text: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = text.trim();
    let clean = !trimmed
        .as_bytes()
        .windows(2)
        .any(|w| w[0].is_ascii_whitespace() && w[1].is_ascii_whitespace())
        && !trimmed.chars().any(|c| c.is_whitespace() && c != ' ');
    if clean {
        std::borrow::Cow::Borrowed(trimmed)
    } else {
        std::borrow::Cow::Owned(trimmed.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// The template's text with every slot filled; the names of the variables that have neither a
/// value nor a fallback otherwise. Literal text is kept as written, so a template without
/// variables renders to exactly the text the prompt cache was primed with.
pub fn render(
    template: &Template,
    vars: &HashMap<String, String>,
) -> Result<String, MissingVariables> {
    let mut out = String::new();
    let mut missing: Vec<String> = Vec::new();
    for part in &template.parts {
        match part {
            TemplatePart::Text(text) => out.push_str(text),
            TemplatePart::Var { name, fallback } => match value(vars, name, fallback.as_deref()) {
                Some(v) => out.push_str(&v),
                None => {
                    if !missing.contains(name) {
                        missing.push(name.clone());
                    }
                }
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(MissingVariables(missing))
    }
}

/// Every template of the flow: prompts, reprompts, agent instructions, `sms` texts and
/// `@goodbye`.
pub fn templates(flow: &Flow) -> Vec<&Template> {
    fn in_target<'a>(target: &'a Target, out: &mut Vec<&'a Template>) {
        match target {
            Target::Sms { text, then } => {
                out.push(text);
                in_target(then, out);
            }
            Target::Transfer {
                otherwise: Some(next),
                ..
            } => in_target(next, out),
            Target::Node { .. } | Target::End | Target::Agent | Target::Transfer { .. } => {}
        }
    }
    let mut out = vec![&flow.settings.goodbye];
    for node in &flow.nodes {
        out.extend(node.prompt.iter());
        out.extend(node.reprompt.iter());
        out.extend(node.agent.iter());
        for transition in &node.transitions {
            in_target(&transition.target, &mut out);
        }
    }
    out
}

/// The variables the flow needs that have neither a value nor a fallback, each once, in the
/// order the flow first uses them.
pub fn missing(flow: &Flow, vars: &HashMap<String, String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for template in templates(flow) {
        if let Err(MissingVariables(found)) = render(template, vars) {
            for name in found {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallId;
    use crate::carrier::{CarrierKind, MediaFormat, StreamStart};
    use crate::script::flow::{Node, Settings, Transition, Trigger};
    use proptest::prelude::*;

    fn var(name: &str, fallback: Option<&str>) -> TemplatePart {
        TemplatePart::Var {
            name: name.into(),
            fallback: fallback.map(str::to_owned),
        }
    }

    fn text(t: &str) -> TemplatePart {
        TemplatePart::Text(t.into())
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_values_fallbacks_and_reports_missing_names() {
        let t = Template {
            parts: vec![
                text("Hi "),
                var("firstName", Some("there")),
                text(", this is "),
                var("tenantName", None),
                text(" about "),
                var("date", None),
                text("."),
            ],
        };
        assert_eq!(
            render(&t, &vars(&[("tenantName", "Acme"), ("date", "Monday")])),
            Ok("Hi there, this is Acme about Monday.".into())
        );
        assert_eq!(
            render(
                &t,
                &vars(&[
                    ("firstName", "  Priya \n Rao "),
                    ("tenantName", "Acme"),
                    ("date", "Monday")
                ])
            ),
            Ok("Hi Priya Rao, this is Acme about Monday.".into())
        );
        // Blank counts as missing: the fallback, or an error.
        let err = render(&t, &vars(&[("firstName", " "), ("tenantName", "  ")])).unwrap_err();
        assert_eq!(err.0, vec!["tenantName".to_string(), "date".to_string()]);
        assert_eq!(err.to_string(), "missing variables: tenantName, date");
        assert_eq!(
            MissingVariables(vec!["x".into()]).to_string(),
            "missing variable: x"
        );
    }

    #[test]
    fn static_text_renders_as_written() {
        let t = Template::text("  Two  spaces stay  ");
        assert_eq!(render(&t, &HashMap::new()).unwrap(), "  Two  spaces stay  ");
    }

    fn flow() -> Flow {
        let node = |name: &str, prompt: Vec<TemplatePart>, target: Target| Node {
            name: name.into(),
            prompt: Some(Template { parts: prompt }),
            reprompt: None,
            agent: None,
            transitions: vec![Transition {
                trigger: Trigger::Always,
                target,
            }],
        };
        Flow {
            settings: Settings {
                goodbye: Template {
                    parts: vec![text("Bye "), var("agentName", Some("now"))],
                },
                ..Settings::default()
            },
            nodes: vec![
                node(
                    "start",
                    vec![text("Hi "), var("name", None)],
                    Target::Transfer {
                        to: "+14155550100".into(),
                        otherwise: Some(Box::new(Target::Sms {
                            text: Template {
                                parts: vec![text("Code "), var("code", None), var("name", None)],
                            },
                            then: Box::new(Target::End),
                        })),
                    },
                ),
                Node {
                    agent: Some(Template {
                        parts: vec![var("policy", None)],
                    }),
                    ..node("faq", vec![text("Questions?")], Target::End)
                },
            ],
        }
    }

    #[test]
    fn missing_names_come_from_every_template_in_order() {
        let f = flow();
        assert_eq!(templates(&f).len(), 5);
        assert_eq!(missing(&f, &HashMap::new()), ["name", "code", "policy"]);
        assert_eq!(
            missing(&f, &vars(&[("name", "A"), ("code", "1"), ("policy", "p")])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn call_values_overlay_defaults_but_blanks_do_not_erase_them() {
        let start = StreamStart {
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            from: Some("+14155550123".into()),
            to: None,
            tracks: Vec::new(),
            custom_parameters: [
                ("firstName".to_string(), "Priya".to_string()),
                ("tenantName".to_string(), " ".to_string()),
            ]
            .into_iter()
            .collect(),
            media_format: MediaFormat {
                encoding: crate::audio::Encoding::Mulaw,
                sample_rate: 8000,
                channels: 1,
            },
        };
        let info = CallInfo::from_start(CallId::new(), CarrierKind::Twilio, &start, "script:x");
        let defaults = vars(&[("tenantName", "Acme"), ("firstName", "Sam"), ("to", "+1")]);
        let v = for_call(&defaults, &info);
        assert_eq!(v["firstName"], "Priya");
        assert_eq!(v["tenantName"], "Acme");
        assert_eq!(v["from"], "+14155550123");
        assert_eq!(v["to"], "+1");
        assert_eq!(v["call_sid"], "CA1");
        assert_eq!(v["carrier"], "twilio");
        assert!(!v["date"].is_empty() && !v["time"].is_empty());
    }

    proptest! {
        #[test]
        fn rendering_never_panics_and_fills_every_given_value(
            parts in proptest::collection::vec(
                prop_oneof![
                    "\\PC{0,10}".prop_map(TemplatePart::Text),
                    ("[a-c]", proptest::option::of("[a-z ]{0,5}"))
                        .prop_map(|(name, fallback)| TemplatePart::Var { name, fallback }),
                ],
                0..8,
            ),
            given in proptest::collection::hash_map("[a-c]", "\\PC{0,6}", 0..3),
        ) {
            let t = Template { parts };
            match render(&t, &given) {
                Ok(_) => {}
                Err(MissingVariables(names)) => {
                    prop_assert!(!names.is_empty());
                    for name in names {
                        prop_assert!(given.get(&name).is_none_or(|v| v.trim().is_empty()));
                    }
                }
            }
        }
    }
}
