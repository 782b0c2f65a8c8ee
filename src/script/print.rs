//! The canonical form of a flow: [`print()`] writes a [`Flow`] back as Destiny-Script (comments
//! gone, blanks normalized, settings only when not default, one line per prompt), so that
//! parsing the output gives the same flow; [`script_hash`] is the SHA-256 of that form.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::flow::{Flow, Key, Node, Settings, Target, Template, TemplatePart, Transition, Trigger};
use super::lexer::{format_duration, needs_escape};

/// Tags the canonical form in [`script_hash`]; changes when the form (or its meaning) does.
pub const HASH_VERSION: &str = "destiny-script/1";

/// Writes `flow` in canonical form. For every valid, normalized flow (all templates
/// [`Template::is_canonical`], all keys [`Key::is_canonical`], names and numbers valid),
/// `parse(&print(flow))` gives `flow` back.
pub fn print(flow: &Flow) -> String {
    let mut out = String::new();
    print_settings(&flow.settings, &mut out);
    for node in &flow.nodes {
        if !out.is_empty() {
            out.push('\n');
        }
        print_node(node, &mut out);
    }
    out
}

/// Hex SHA-256 of [`HASH_VERSION`] and the canonical form: reformatting a script or editing
/// its comments keeps it, any change of meaning changes it.
pub fn script_hash(flow: &Flow) -> String {
    let mut hasher = Sha256::new();
    hasher.update(HASH_VERSION.as_bytes());
    hasher.update(b"\n");
    hasher.update(print(flow).as_bytes());
    hex::encode(hasher.finalize())
}

fn print_settings(settings: &Settings, out: &mut String) {
    let default = Settings::default();
    if let Some(voice) = &settings.voice {
        let _ = writeln!(out, "@voice {voice}");
    }
    if settings.no_input_timeout_ms != default.no_input_timeout_ms {
        let _ = writeln!(
            out,
            "@timeout {}",
            format_duration(settings.no_input_timeout_ms)
        );
    }
    if settings.max_reprompts != default.max_reprompts {
        let _ = writeln!(out, "@reprompts {}", settings.max_reprompts);
    }
    if settings.digit_timeout_ms != default.digit_timeout_ms {
        let _ = writeln!(
            out,
            "@digit_timeout {}",
            format_duration(settings.digit_timeout_ms)
        );
    }
    if settings.goodbye != default.goodbye {
        let _ = writeln!(out, "@goodbye {}", template_text(&settings.goodbye));
    }
}

fn print_node(node: &Node, out: &mut String) {
    let _ = writeln!(out, "[{}]", node.name);
    if let Some(prompt) = &node.prompt {
        let text = template_text(prompt);
        if needs_escape(&text) {
            out.push('\\');
        }
        let _ = writeln!(out, "{text}");
    }
    if let Some(reprompt) = &node.reprompt {
        let _ = writeln!(out, "reprompt: {}", template_text(reprompt));
    }
    if let Some(agent) = &node.agent {
        let _ = writeln!(out, "agent: {}", template_text(agent));
    }
    for transition in &node.transitions {
        let _ = writeln!(out, "{}", transition_text(transition));
    }
}

/// One `->` line, without its line ending.
pub fn transition_text(transition: &Transition) -> String {
    let target = target_text(&transition.target);
    match &transition.trigger {
        Trigger::Always => format!("-> {target}"),
        Trigger::Keys { keys } => {
            let keys: Vec<String> = keys.iter().map(key_text).collect();
            format!("-> {}: {target}", keys.join(", "))
        }
        Trigger::Any => format!("-> any: {target}"),
        Trigger::Timeout { after_ms: None } => format!("-> timeout: {target}"),
        Trigger::Timeout { after_ms: Some(ms) } => {
            format!("-> timeout {}: {target}", format_duration(*ms))
        }
        Trigger::NoMatch => format!("-> nomatch: {target}"),
    }
}

/// A key as written: bare DTMF keys, or a phrase in quotes.
pub fn key_text(key: &Key) -> String {
    match key {
        Key::Digits(digits) => digits.clone(),
        Key::Phrase(phrase) => quote(phrase),
    }
}

/// A target as written after `:`.
pub fn target_text(target: &Target) -> String {
    match target {
        Target::Node { name } => name.clone(),
        Target::End => "END".to_owned(),
        Target::Agent => "agent".to_owned(),
        Target::Transfer { to, otherwise } => match otherwise {
            Some(next) => format!("transfer {to} else {}", target_text(next)),
            None => format!("transfer {to}"),
        },
        Target::Sms { text, then } => match then.as_ref() {
            Target::End => format!("sms {}", quote(&template_text(text))),
            next => format!(
                "sms {} then {}",
                quote(&template_text(text)),
                target_text(next)
            ),
        },
    }
}

/// A template as written in a script: text, `{{ name }}` and `{{ name | fallback }}`.
pub fn template_text(template: &Template) -> String {
    let mut out = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Text(text) => out.push_str(text),
            TemplatePart::Var {
                name,
                fallback: None,
            } => {
                let _ = write!(out, "{{{{ {name} }}}}");
            }
            TemplatePart::Var {
                name,
                fallback: Some(fallback),
            } if fallback.is_empty() => {
                let _ = write!(out, "{{{{ {name} | }}}}");
            }
            TemplatePart::Var {
                name,
                fallback: Some(fallback),
            } => {
                let _ = write!(out, "{{{{ {name} | {fallback} }}}}");
            }
        }
    }
    out
}

/// `text` in double quotes, with `"` and `\` escaped.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
#[path = "print_tests.rs"]
mod tests;
