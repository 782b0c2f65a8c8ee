//! System prompt templates: text with `{{ name }}` and `{{ name | fallback text }}` slots.
//!
//! A template is parsed once (at configuration time, so mistakes are reported with their line
//! and column) and rendered per call with that call's variables (caller number, business name,
//! today's date …). Rendering never fails: a variable that is missing or blank takes its
//! fallback, or becomes empty text when it has none.

use std::collections::HashMap;

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("prompt template line {line}, column {column}: {message}")]
pub struct PromptError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Literal text.
    Text(String),
    /// A variable slot.
    Slot {
        /// The variable's name.
        name: String,
        /// Text used when the variable is missing or blank.
        fallback: Option<String>,
    },
}

/// A parsed prompt template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    pieces: Vec<Piece>,
}

impl PromptTemplate {
    /// Parses `source`; errors point at the offending `{{` or name.
    pub fn parse(source: &str) -> Result<PromptTemplate, PromptError> {
        let mut pieces = Vec::new();
        let mut rest = source;
        let mut offset = 0usize;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let slot_start = offset + open;
            let inner_start = slot_start + 2;
            let after = &source[inner_start..];
            let Some(close) = after.find("}}") else {
                return Err(error_at(
                    source,
                    slot_start,
                    "unclosed `{{` (no matching `}}`)",
                ));
            };
            let inner = &after[..close];
            pieces.push(parse_slot(source, inner_start, inner)?);
            offset = inner_start + close + 2;
            rest = &source[offset..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(PromptTemplate { pieces })
    }

    /// The variables the template uses, each once, in order of first use.
    pub fn variables(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for piece in &self.pieces {
            if let Piece::Slot { name, .. } = piece
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }

    /// The text with every slot filled: the variable's value, else its fallback, else nothing.
    pub fn render(&self, vars: &HashMap<String, String>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Slot { name, fallback } => {
                    match vars.get(name).filter(|v| !v.trim().is_empty()) {
                        Some(value) => out.push_str(value),
                        None => out.push_str(fallback.as_deref().unwrap_or("")),
                    }
                }
            }
        }
        out
    }
}

/// Parses the inside of a `{{ … }}` that starts at byte `start` of `source`.
fn parse_slot(source: &str, start: usize, inner: &str) -> Result<Piece, PromptError> {
    let (name_part, fallback) = match inner.find('|') {
        Some(bar) => (&inner[..bar], Some(inner[bar + 1..].trim().to_string())),
        None => (inner, None),
    };
    let name = name_part.trim();
    let name_at = start + (name_part.len() - name_part.trim_start().len());
    if name.is_empty() {
        return Err(error_at(
            source,
            start.saturating_sub(2),
            "empty variable name in `{{ }}`",
        ));
    }
    if let Some((i, c)) = name.char_indices().find(|&(i, c)| {
        !(c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '.' || c == '-')))
    }) {
        return Err(error_at(
            source,
            name_at + i,
            format!(
                "bad character {c:?} in variable name `{name}` (use letters, digits, `_`, `.`, `-`)"
            ),
        ));
    }
    Ok(Piece::Slot {
        name: name.to_string(),
        fallback,
    })
}

/// An error at byte `at` of `source`, with its 1-based line and column.
fn error_at(source: &str, at: usize, message: impl Into<String>) -> PromptError {
    let before = &source[..at.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    PromptError {
        line,
        column,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_values_and_fallbacks() {
        let t = PromptTemplate::parse(
            "You answer for {{business}}. The caller is {{ caller_name | a customer }}.\nToday is {{today}}{{missing}}.",
        )
        .unwrap();
        assert_eq!(
            t.variables(),
            ["business", "caller_name", "today", "missing"]
        );
        let out = t.render(&vars(&[("business", "Acme Dental"), ("today", "Monday")]));
        assert_eq!(
            out,
            "You answer for Acme Dental. The caller is a customer.\nToday is Monday."
        );
        let out = t.render(&vars(&[("caller_name", "Priya"), ("caller_name_x", "no")]));
        assert_eq!(out, "You answer for . The caller is Priya.\nToday is .");
        // Blank values take the fallback too.
        let out = t.render(&vars(&[("caller_name", "  ")]));
        assert!(out.contains("The caller is a customer."));
    }

    #[test]
    fn variables_are_listed_once() {
        let t = PromptTemplate::parse("{{a}} {{ b }} {{a|x}} {{c.d}} {{e-f}}").unwrap();
        assert_eq!(t.variables(), ["a", "b", "c.d", "e-f"]);
    }

    #[test]
    fn fallback_may_be_empty_or_hold_spaces() {
        let t = PromptTemplate::parse("[{{ a | }}][{{ b |  two words  }}]").unwrap();
        assert_eq!(t.render(&HashMap::new()), "[][two words]");
    }

    #[test]
    fn unclosed_slot_points_at_its_opening() {
        let e = PromptTemplate::parse("line one\n  hello {{ name").unwrap_err();
        assert_eq!((e.line, e.column), (2, 9));
        assert!(e.message.contains("unclosed"), "{e}");
    }

    #[test]
    fn empty_name_is_an_error() {
        let e = PromptTemplate::parse("a {{  }} b").unwrap_err();
        assert_eq!((e.line, e.column), (1, 3));
        assert!(e.message.contains("empty"));
        let e = PromptTemplate::parse("{{ | fallback }}").unwrap_err();
        assert!(e.message.contains("empty"));
    }

    #[test]
    fn bad_characters_point_at_the_character() {
        let e = PromptTemplate::parse("x\n\nab {{ first name }}").unwrap_err();
        assert_eq!((e.line, e.column), (3, 12));
        assert!(e.message.contains("' '"), "{e}");
        let e = PromptTemplate::parse("{{ .x }}").unwrap_err();
        assert_eq!((e.line, e.column), (1, 4));
        let e = PromptTemplate::parse("{{ naïve }}").unwrap_err();
        assert_eq!((e.line, e.column), (1, 6));
    }

    #[test]
    fn lone_braces_are_text() {
        let t = PromptTemplate::parse("a } b }} c { d").unwrap();
        assert!(t.variables().is_empty());
        assert_eq!(t.render(&HashMap::new()), "a } b }} c { d");
    }

    proptest! {
        #[test]
        fn never_panics(source in "\\PC{0,200}|[{}|a-z \\n]{0,200}") {
            if let Ok(t) = PromptTemplate::parse(&source) {
                let _ = t.render(&HashMap::new());
                let _ = t.variables();
            }
        }

        #[test]
        fn text_without_slots_renders_to_itself(source in "\\PC{0,300}") {
            prop_assume!(!source.contains("{{"));
            let t = PromptTemplate::parse(&source).unwrap();
            prop_assert_eq!(t.render(&vars(&[("a", "b")])), source);
        }
    }
}
