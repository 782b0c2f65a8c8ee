//! Reading `{{ variable }}` and `{{ variable | fallback }}` slots out of one line of text.

use super::diag::{Position, Sink};
use super::flow::{Template, TemplatePart, collapse_blanks, is_variable_name};

/// A piece of text from one line: its characters and the column of each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineText<'a> {
    /// 1-based line number.
    pub line: usize,
    /// The characters.
    pub chars: &'a [char],
    /// The column of each character (same length as `chars`).
    pub columns: &'a [usize],
}

impl LineText<'_> {
    fn at(&self, index: usize) -> Position {
        let column = self
            .columns
            .get(index)
            .copied()
            .or_else(|| self.columns.last().map(|c| c + 1))
            .unwrap_or(1);
        Position::new(self.line, column)
    }

    fn has_at(&self, index: usize, pattern: [char; 2]) -> bool {
        self.chars.get(index) == Some(&pattern[0]) && self.chars.get(index + 1) == Some(&pattern[1])
    }

    /// The first `pattern` starting in `from..to`.
    fn find(&self, from: usize, to: usize, pattern: [char; 2]) -> Option<usize> {
        (from..to.min(self.chars.len())).find(|&i| self.has_at(i, pattern))
    }

    fn string(&self, from: usize, to: usize) -> String {
        self.chars[from..to].iter().collect()
    }
}

/// Splits one line of text into literal text and variable slots. Errors (an unclosed `{{`, a
/// bad or empty name) go to `sink`; the result is `None` when there was any.
pub(crate) fn parse_line(text: LineText<'_>, sink: &mut Sink) -> Option<Vec<TemplatePart>> {
    let before = sink.error_count();
    let mut parts = Vec::new();
    let end = text.chars.len();
    // The first `}}` after the last `{{`, kept while it is still ahead: each character is
    // scanned a bounded number of times, however many `{{` a line holds.
    let mut next_close: Option<usize> = None;
    let mut i = 0;
    while i < end {
        let Some(open) = text.find(i, end, ['{', '{']) else {
            parts.push(TemplatePart::Text(text.string(i, text.chars.len())));
            break;
        };
        if open > i {
            parts.push(TemplatePart::Text(text.string(i, open)));
        }
        let inner_start = open + 2;
        let close = match next_close {
            Some(close) if close >= inner_start => Some(close),
            _ => text.find(inner_start, end, ['}', '}']),
        };
        next_close = close;
        let Some(close) = close else {
            sink.error(
                text.at(open),
                "`{{` is not closed on this line: end the variable with `}}`",
            );
            break;
        };
        if let Some(nested) = text.find(inner_start, close, ['{', '{']) {
            sink.error(
                text.at(open),
                "`{{` is not closed before the next `{{`: end the variable with `}}`",
            );
            i = nested;
            continue;
        }
        if let Some(part) = slot(text, open, inner_start, close, sink) {
            parts.push(part);
        }
        i = close + 2;
    }
    (sink.error_count() == before).then_some(parts)
}

/// The slot whose `{{` is at `open`, inside `inner_start..close`.
fn slot(
    text: LineText<'_>,
    open: usize,
    inner_start: usize,
    close: usize,
    sink: &mut Sink,
) -> Option<TemplatePart> {
    let bar = (inner_start..close).find(|&i| text.chars[i] == '|');
    let name_end = bar.unwrap_or(close);
    let raw_name = text.string(inner_start, name_end);
    let name = raw_name.trim();
    if name.is_empty() {
        sink.error(
            text.at(open),
            "empty variable name: write `{{ name }}` or `{{ name | fallback }}`",
        );
        return None;
    }
    if !is_variable_name(name) {
        let leading = raw_name.chars().take_while(|c| c.is_whitespace()).count();
        sink.error(
            text.at(inner_start + leading),
            format!(
                "bad variable name `{name}`: use letters, digits, `_` and `.`, starting with a letter or `_`"
            ),
        );
        return None;
    }
    let fallback = bar.map(|b| collapse_blanks(&text.string(b + 1, close)));
    Some(TemplatePart::Var {
        name: name.to_owned(),
        fallback,
    })
}

/// Joins the parts of several lines with a space between lines and normalizes the result;
/// `None` when it holds nothing.
pub(crate) fn join_lines(lines: Vec<Vec<TemplatePart>>) -> Option<Template> {
    let mut parts = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        if i > 0 {
            parts.push(TemplatePart::Text(" ".to_owned()));
        }
        parts.extend(line);
    }
    let template = Template { parts }.normalized();
    (!template.parts.is_empty()).then_some(template)
}

/// Parses a template given outside a script (e.g. a voicemail message from the API): lines
/// joined with a space; the first error's message when a slot is malformed. An empty text is
/// an empty template.
pub fn parse_template(text: &str) -> Result<Template, String> {
    let mut sink = Sink::default();
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let columns: Vec<usize> = (1..=chars.len()).collect();
        let parsed = parse_line(
            LineText {
                line: index + 1,
                chars: &chars,
                columns: &columns,
            },
            &mut sink,
        );
        if let Some(parts) = parsed {
            lines.push(parts);
        }
    }
    let diagnostics = sink.finish();
    if let Some(first) = diagnostics.errors().next() {
        return Err(first.message.clone());
    }
    Ok(join_lines(lines).unwrap_or_else(|| Template::text("")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::diag::Diagnostics;

    fn parse(s: &str) -> Result<Vec<TemplatePart>, Diagnostics> {
        let chars: Vec<char> = s.chars().collect();
        let columns: Vec<usize> = (1..=chars.len()).collect();
        let mut sink = Sink::default();
        let text = LineText {
            line: 3,
            chars: &chars,
            columns: &columns,
        };
        parse_line(text, &mut sink).ok_or_else(|| sink.finish())
    }

    fn var(name: &str, fallback: Option<&str>) -> TemplatePart {
        TemplatePart::Var {
            name: name.to_owned(),
            fallback: fallback.map(str::to_owned),
        }
    }

    fn text(t: &str) -> TemplatePart {
        TemplatePart::Text(t.to_owned())
    }

    #[test]
    fn reads_text_and_slots() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(
            parse("plain { } }} text").unwrap(),
            vec![text("plain { } }} text")]
        );
        assert_eq!(
            parse("Hi {{ firstName | there }}, {{tenantName}}.").unwrap(),
            vec![
                text("Hi "),
                var("firstName", Some("there")),
                text(", "),
                var("tenantName", None),
                text(".")
            ]
        );
        assert_eq!(
            parse("{{ contact.first_name |   a   b }}{{ x | }}{{_y|c|d}}").unwrap(),
            vec![
                var("contact.first_name", Some("a b")),
                var("x", Some("")),
                var("_y", Some("c|d"))
            ]
        );
        assert_eq!(
            parse("{{ x | a} }}}").unwrap(),
            vec![var("x", Some("a}")), text("}")]
        );
    }

    #[test]
    fn unclosed_slot_is_reported_at_its_opening() {
        let e = parse("Hello {{ name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "3:7: `{{` is not closed on this line: end the variable with `}}`"
        );
        let e = parse("{{ a {{ b }}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "3:1: `{{` is not closed before the next `{{`: end the variable with `}}`"
        );
    }

    #[test]
    fn bad_and_empty_names_are_reported() {
        let e = parse("Hi {{  first name }}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "3:8: bad variable name `first name`: use letters, digits, `_` and `.`, starting with a letter or `_`"
        );
        assert_eq!(parse("{{ 1x }}").unwrap_err().all()[0].column, 4);
        assert_eq!(parse("{{ x-y }}").unwrap_err().len(), 1);
        let e = parse("a {{ | x }} b {{}}").unwrap_err();
        assert_eq!(e.len(), 2, "{e}");
        assert!(e.all()[0].message.starts_with("empty variable name"));
        assert_eq!(e.all()[1].column, 15);
    }

    #[test]
    fn joins_lines_with_one_space() {
        let t = join_lines(vec![
            vec![text("  Hi "), var("a", None)],
            vec![text("  there  ")],
            vec![],
        ])
        .unwrap();
        assert_eq!(t.parts, vec![text("Hi "), var("a", None), text(" there")]);
        assert_eq!(join_lines(vec![vec![text("  ")], vec![]]), None);
    }

    #[test]
    fn a_template_from_outside_a_script_renders_and_reports_bad_slots() {
        let t = parse_template("Hi {{ name | there }},\ncall {{ tenant }} back.").unwrap();
        let vars = std::collections::HashMap::from([("tenant".to_owned(), "Acme".to_owned())]);
        assert_eq!(t.render(&vars).unwrap(), "Hi there, call Acme back.");
        assert!(parse_template("Hi {{ name").is_err());
        assert_eq!(parse_template("").unwrap().render(&vars).unwrap(), "");
    }
}
