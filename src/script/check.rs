//! `voicegw script check`: a script's diagnostics as `FILE:line:col: message` lines, and a
//! readable summary of the flow it defines (or the flow as JSON).

use std::fmt::Write as _;

use super::diag::{Diagnostic, SourceMap};
use super::flow::{Flow, Settings};
use super::lexer::format_duration;
use super::parse::parse;
use super::print::{script_hash, template_text, transition_text};

/// What `script check` prints, and whether the script loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutput {
    /// One line per error and warning (`FILE:line:col: message`, warnings prefixed with
    /// `warning: `), by position.
    pub diagnostics: Vec<String>,
    /// The summary (or JSON) of the flow; empty when the script has errors.
    pub report: String,
    /// Whether the script has no errors.
    pub ok: bool,
}

/// Checks `source`, read from `label` (the path shown before each diagnostic).
pub fn check(label: &str, source: &str, json: bool) -> CheckOutput {
    let (diagnostics, parsed) = match parse(source) {
        Ok(parsed) => (parsed.warnings.clone(), Some(parsed)),
        Err(diagnostics) => (diagnostics.into_vec(), None),
    };
    let lines = diagnostics
        .iter()
        .map(|d| diagnostic_line(label, d))
        .collect();
    let Some(parsed) = parsed else {
        return CheckOutput {
            diagnostics: lines,
            report: String::new(),
            ok: false,
        };
    };
    let report = if json {
        match serde_json::to_string_pretty(&parsed.flow) {
            Ok(mut text) => {
                text.push('\n');
                text
            }
            Err(error) => format!("cannot write the flow as JSON: {error}\n"),
        }
    } else {
        summary(&parsed.flow, &parsed.spans)
    };
    CheckOutput {
        diagnostics: lines,
        report,
        ok: true,
    }
}

/// `FILE:line:col: message`, with `warning: ` in front of a warning.
pub fn diagnostic_line(label: &str, diagnostic: &Diagnostic) -> String {
    let prefix = if diagnostic.is_error() {
        ""
    } else {
        "warning: "
    };
    format!("{prefix}{label}:{diagnostic}")
}

/// A readable account of a flow: settings, required variables, hash, then every node with
/// its line, texts and transitions.
pub fn summary(flow: &Flow, spans: &SourceMap) -> String {
    let mut out = String::new();
    let defaults = Settings::default();
    let s = &flow.settings;
    let _ = writeln!(
        out,
        "{} nodes, hash {}",
        flow.nodes.len(),
        script_hash(flow)
    );
    let _ = writeln!(
        out,
        "voice: {}; timeout: {}; reprompts: {}; digit timeout: {}",
        s.voice.as_deref().unwrap_or("(provider default)"),
        format_duration(s.no_input_timeout_ms),
        s.max_reprompts,
        format_duration(s.digit_timeout_ms),
    );
    let default_mark = if s.goodbye == defaults.goodbye {
        " (default)"
    } else {
        ""
    };
    let _ = writeln!(out, "goodbye: {}{default_mark}", template_text(&s.goodbye));
    let required: Vec<String> = flow.required_variables().into_iter().collect();
    let required = if required.is_empty() {
        "(none)".to_owned()
    } else {
        required.join(", ")
    };
    let _ = writeln!(out, "required variables: {required}");
    for node in &flow.nodes {
        let line = spans
            .node(&node.name)
            .map(|n| format!("  (line {})", n.header.line))
            .unwrap_or_default();
        let kind = if node.is_agent() { "  agent node" } else { "" };
        let _ = writeln!(out, "\n[{}]{line}{kind}", node.name);
        for (label, text) in [
            ("prompt", &node.prompt),
            ("reprompt", &node.reprompt),
            ("agent", &node.agent),
        ] {
            if let Some(text) = text {
                let _ = writeln!(out, "  {label}: {}", template_text(text));
            }
        }
        for transition in &node.transitions {
            let _ = writeln!(out, "  {}", transition_text(transition));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_script_gets_a_summary() {
        let out = check(
            "a.dsc",
            "@voice v\n[start]\nHi {{ name }}.\n-> 1: next\n-> 2: END\n[next]\n-> END\n[lost]\nHi.\n-> END\n",
            false,
        );
        assert!(out.ok);
        assert_eq!(
            out.diagnostics,
            ["warning: a.dsc:8:1: node `lost` is never reached from [start]"]
        );
        let flow = parse("@voice v\n[start]\nHi {{ name }}.\n-> 1: next\n-> 2: END\n[next]\n-> END\n[lost]\nHi.\n-> END\n")
            .unwrap()
            .flow;
        let expected = format!(
            "3 nodes, hash {}\nvoice: v; timeout: 6s; reprompts: 2; digit timeout: 3s\n\
             goodbye: Sorry, I couldn't understand. Goodbye. (default)\nrequired variables: name\n\
             \n[start]  (line 2)\n  prompt: Hi {{{{ name }}}}.\n  -> 1: next\n  -> 2: END\n\
             \n[next]  (line 6)\n  -> END\n\
             \n[lost]  (line 8)\n  prompt: Hi.\n  -> END\n",
            script_hash(&flow)
        );
        assert_eq!(out.report, expected);
    }

    #[test]
    fn a_broken_script_gets_its_diagnostics_only() {
        let out = check(
            "b.dsc",
            "[start]\n-> nxt\n[next]\n-> END\n[old]\n-> END\n",
            false,
        );
        assert!(!out.ok);
        assert_eq!(out.report, "");
        assert_eq!(
            out.diagnostics,
            [
                "b.dsc:2:4: unknown node `nxt` (did you mean `next`?)",
                "warning: b.dsc:5:1: node `old` is never reached from [start]",
            ]
        );
    }

    #[test]
    fn json_is_the_flow() {
        let source = "[start]\nagent: Help {{ who | them }}.\n-> \"done\": END\n";
        let out = check("c.dsc", source, true);
        assert!(out.ok);
        let back: Flow = serde_json::from_str(&out.report).unwrap();
        assert_eq!(back, parse(source).unwrap().flow);
    }
}
