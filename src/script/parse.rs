//! The Destiny-Script parser: source text to a [`Flow`], with every error and warning found
//! (not just the first) and a [`SourceMap`] of where each node and transition is.
//!
//! Reading is line by line (see `docs/script.md`): settings, then nodes, each with its prompt
//! text, `reprompt:`, `agent:` and `->` lines. Each node is checked when it ends; the whole
//! flow (a `[start]` node, known targets, reachability) once the text is read.

use std::collections::HashMap;

use super::diag::{Diagnostic, Diagnostics, NodeSource, Position, SourceMap};
use super::diag::{Sink, did_you_mean};
use super::flow::{
    Flow, MAX_NODE_NAME, Node, RESERVED_WORDS, Settings, Template, TemplatePart, is_node_name,
};
use super::lexer::{LineKind, SourceLine, Token, classify, lines, parse_duration, tokenize};
use super::template::{LineText, join_lines, parse_line};
use super::transition::{ParsedTransition, parse_transition};
use super::validate::{NodeDraft, check_flow, check_node};

/// A script that parsed with no errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The flow.
    pub flow: Flow,
    /// Things that are allowed but probably not meant (e.g. a node never reached).
    pub warnings: Vec<Diagnostic>,
    /// Where each node and transition is in the source.
    pub spans: SourceMap,
}

/// Parses a Destiny-Script. On any error, returns every error and warning found, sorted by
/// position; a script with errors yields no flow.
pub fn parse(source: &str) -> Result<Parsed, Diagnostics> {
    let mut reader = Reader::default();
    for line in lines(source) {
        reader.line(&line);
    }
    reader.finish()
}

/// The settings, by name as written after `@`.
const SETTINGS: [&str; 5] = ["voice", "timeout", "reprompts", "digit_timeout", "goodbye"];

/// The most reprompts a script may ask for.
const MAX_REPROMPTS: u32 = 10;

/// The text of a `reprompt:`, `agent:` or `@goodbye` (or a prompt) while it is being read.
#[derive(Debug, Clone)]
pub(crate) struct TextField {
    /// Where it starts (the keyword, or the first text line).
    pub at: Position,
    /// Each line's parts.
    pub lines: Vec<Vec<TemplatePart>>,
    /// Whether every line parsed.
    pub ok: bool,
}

impl TextField {
    fn new(at: Position) -> Self {
        TextField {
            at,
            lines: Vec::new(),
            ok: true,
        }
    }

    /// Adds the text of `line` from index `from` (its trailing blanks do not matter).
    fn push(&mut self, line: &SourceLine, from: usize, sink: &mut Sink) {
        let from = from.min(line.chars.len());
        let chars = &line.chars[from..];
        let columns: Vec<usize> = (from + 1..=line.chars.len()).collect();
        let text = LineText {
            line: line.number,
            chars,
            columns: &columns,
        };
        match parse_line(text, sink) {
            Some(parts) => self.lines.push(parts),
            None => self.ok = false,
        }
    }

    /// The text, normalized; `None` when empty.
    pub(crate) fn template(&self) -> Option<Template> {
        join_lines(self.lines.clone())
    }
}

/// Which text the next indented line continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Goodbye,
    Reprompt,
    Agent,
}

#[derive(Debug, Default)]
struct Reader {
    sink: Sink,
    settings: Settings,
    /// Line of each setting given so far.
    setting_lines: HashMap<&'static str, usize>,
    goodbye: Option<TextField>,
    /// Finished nodes (duplicates left out).
    nodes: Vec<NodeDraft>,
    /// First line of each node name.
    node_lines: HashMap<String, usize>,
    current: Option<NodeDraft>,
    open: Option<Open>,
    /// The last body line (`reprompt:`, `agent:`, `->`) of the current node, for messages.
    last_body: Option<&'static str>,
}

impl Reader {
    fn line(&mut self, line: &SourceLine) {
        let kind = classify(line);
        if let (Some(open), LineKind::Text(from)) = (self.open, kind)
            && line.starts_with_blank()
        {
            let field = match open {
                Open::Goodbye => self.goodbye.as_mut(),
                Open::Reprompt => self.current.as_mut().and_then(|n| n.reprompt.as_mut()),
                Open::Agent => self.current.as_mut().and_then(|n| n.agent.as_mut()),
            };
            if let Some(field) = field {
                field.push(line, from, &mut self.sink);
                return;
            }
        }
        self.open = None;
        match kind {
            LineKind::Blank | LineKind::Comment => {}
            LineKind::Setting(at) => self.setting(line, at),
            LineKind::Header(at) => self.header(line, at),
            LineKind::Transition(at) => self.transition(line, at),
            LineKind::Reprompt(at, from) => self.field(line, at, from, Open::Reprompt),
            LineKind::Agent(at, from) => self.field(line, at, from, Open::Agent),
            LineKind::Text(from) => self.text(line, from),
        }
    }

    /// The current node, or an error saying `what` came before any node.
    fn node_for(&mut self, at: Position, what: &str) -> Option<&mut NodeDraft> {
        if self.current.is_none() {
            self.sink.error(
                at,
                format!("{what} before the first node: start a node with a `[name]` line, e.g. `[start]`"),
            );
        }
        self.current.as_mut()
    }

    fn setting(&mut self, line: &SourceLine, at: usize) {
        let pos = line.at(at);
        if self.current.is_some() {
            self.sink.error(
                pos,
                "settings go before the first node: move this line to the top of the script",
            );
            return;
        }
        let name_end = (at + 1..line.chars.len())
            .find(|&i| line.chars[i].is_whitespace())
            .unwrap_or(line.chars.len());
        let name = line.trimmed(at + 1, name_end);
        if name.is_empty() {
            self.sink
                .error(pos, "expected a setting name after `@`, e.g. `@voice NAME`");
            return;
        }
        let Some(&known) = SETTINGS.iter().find(|s| **s == name) else {
            let message = match did_you_mean(&name, SETTINGS) {
                Some(s) => format!("unknown setting `@{name}` (did you mean `@{s}`?)"),
                None => format!(
                    "unknown setting `@{name}`: the settings are @voice, @timeout, @reprompts, @digit_timeout and @goodbye"
                ),
            };
            self.sink.error(pos, message);
            return;
        };
        if let Some(first) = self.setting_lines.get(known) {
            self.sink
                .error(pos, format!("`@{known}` is already set on line {first}"));
            return;
        }
        self.setting_lines.insert(known, line.number);
        let value_at = line.skip_blanks(name_end);
        if known == "goodbye" {
            let mut field = TextField::new(pos);
            field.push(line, value_at, &mut self.sink);
            self.goodbye = Some(field);
            self.open = Some(Open::Goodbye);
            return;
        }
        let value = line.trimmed(value_at, line.comment_from(value_at));
        let value_pos = line.at(value_at);
        if value.is_empty() {
            let example = match known {
                "voice" => "@voice aura-2-thalia-en",
                "timeout" => "@timeout 6s",
                "reprompts" => "@reprompts 2",
                _ => "@digit_timeout 3s",
            };
            self.sink
                .error(pos, format!("`@{known}` needs a value, e.g. `{example}`"));
            return;
        }
        match known {
            "voice" => {
                if value.split_whitespace().nth(1).is_some() {
                    self.sink.error(
                        value_pos,
                        format!("`@voice` takes one voice name, without blanks: `{value}`"),
                    );
                } else {
                    self.settings.voice = Some(value);
                }
            }
            "timeout" | "digit_timeout" => match parse_duration(&value) {
                Ok(ms) if known == "timeout" => self.settings.no_input_timeout_ms = ms,
                Ok(ms) => self.settings.digit_timeout_ms = ms,
                Err(message) => self.sink.error(value_pos, message),
            },
            _ => match value.parse::<u32>() {
                Ok(n) if n <= MAX_REPROMPTS && value.chars().all(|c| c.is_ascii_digit()) => {
                    self.settings.max_reprompts = n;
                }
                _ => self.sink.error(
                    value_pos,
                    format!(
                        "`@reprompts` takes a whole number from 0 to {MAX_REPROMPTS}, not `{value}`"
                    ),
                ),
            },
        }
    }

    fn header(&mut self, line: &SourceLine, at: usize) {
        self.close_node();
        let pos = line.at(at);
        let close = (at + 1..line.chars.len()).find(|&i| line.chars[i] == ']');
        let name = match close {
            Some(close) => {
                let rest = line.skip_blanks(close + 1);
                if rest < line.chars.len() && !line.has_at(rest, "//") {
                    self.sink.error(
                        line.at(rest),
                        "unexpected text after the node header: put the prompt on the next line",
                    );
                }
                line.trimmed(at + 1, close)
            }
            None => {
                self.sink
                    .error(pos, "expected `]` to close the node name, e.g. `[start]`");
                line.trimmed(at + 1, line.comment_from(at + 1))
            }
        };
        let name_pos = line.at(line.skip_blanks(at + 1));
        if name.is_empty() {
            self.sink
                .error(pos, "empty node name: write the name between `[` and `]`");
        } else if name.chars().count() > MAX_NODE_NAME {
            self.sink.error(
                name_pos,
                format!("node name `{name}` is longer than {MAX_NODE_NAME} characters"),
            );
        } else if !is_node_name(&name) {
            self.sink.error(
                name_pos,
                format!("bad node name `{name}`: use letters, digits and `_`, starting with a letter or `_`"),
            );
        } else if RESERVED_WORDS.contains(&name.as_str()) {
            self.sink.error(
                name_pos,
                format!("`{name}` is a reserved word and cannot name a node"),
            );
        }
        let duplicate = match self.node_lines.get(&name) {
            Some(first) => {
                self.sink.error(
                    pos,
                    format!("duplicate node `{name}` (first defined at line {first})"),
                );
                true
            }
            None => {
                self.node_lines.insert(name.clone(), line.number);
                false
            }
        };
        self.current = Some(NodeDraft::new(name, pos, duplicate));
        self.last_body = None;
    }

    fn transition(&mut self, line: &SourceLine, at: usize) {
        let pos = line.at(at);
        if self.node_for(pos, "a `->` transition").is_none() {
            return;
        }
        let parsed: Option<ParsedTransition> = parse_transition(line, at, &mut self.sink);
        if let Some(node) = self.current.as_mut() {
            match parsed {
                Some(t) => node.transitions.push(t),
                None => {
                    node.failed = true;
                    let words = tokenize(line, at + 2).unwrap_or_default();
                    node.loose_refs.extend(
                        words
                            .iter()
                            .filter_map(Token::word)
                            .filter(|w| is_node_name(w))
                            .map(str::to_owned),
                    );
                }
            }
        }
        self.last_body = Some("->");
    }

    fn field(&mut self, line: &SourceLine, at: usize, from: usize, open: Open) {
        let pos = line.at(at);
        let keyword = if open == Open::Agent {
            "agent:"
        } else {
            "reprompt:"
        };
        let sink = &mut self.sink;
        let Some(node) = self.current.as_mut() else {
            sink.error(
                pos,
                format!("`{keyword}` before the first node: start a node with a `[name]` line, e.g. `[start]`"),
            );
            return;
        };
        let slot = if open == Open::Agent {
            &mut node.agent
        } else {
            &mut node.reprompt
        };
        if let Some(first) = slot {
            sink.error(
                pos,
                format!(
                    "the node already has a `{keyword}` line (line {}): write one, and continue it on indented lines",
                    first.at.line
                ),
            );
            node.failed = true;
            return;
        }
        let mut field = TextField::new(pos);
        field.push(line, from, sink);
        *slot = Some(field);
        self.open = Some(open);
        self.last_body = Some(keyword);
    }

    fn text(&mut self, line: &SourceLine, from: usize) {
        let pos = line.at(line.skip_blanks(0));
        let last_body = self.last_body;
        let sink = &mut self.sink;
        let Some(node) = self.current.as_mut() else {
            sink.error(
                pos,
                "text before the first node: start a node with a `[name]` line, e.g. `[start]`",
            );
            return;
        };
        if let Some(keyword) = last_body {
            let hint = if keyword == "->" {
                String::new()
            } else {
                format!(" (or indent this line to continue the `{keyword}` text)")
            };
            sink.error(
                pos,
                format!("prompt text must come before the node's `reprompt:`, `agent:` and `->` lines{hint}"),
            );
            node.failed = true;
            return;
        }
        node.prompt
            .get_or_insert_with(|| TextField::new(pos))
            .push(line, from, sink);
    }

    fn close_node(&mut self) {
        if let Some(node) = self.current.take() {
            check_node(&node, &mut self.sink);
            if !node.duplicate {
                self.nodes.push(node);
            }
        }
    }

    fn finish(mut self) -> Result<Parsed, Diagnostics> {
        self.close_node();
        if let Some(goodbye) = &self.goodbye
            && goodbye.ok
        {
            match goodbye.template() {
                Some(template) => self.settings.goodbye = template,
                None => self.sink.error(
                    goodbye.at,
                    "`@goodbye` needs text, e.g. `@goodbye Sorry, goodbye.`",
                ),
            }
        }
        check_flow(&self.nodes, &mut self.sink);
        let diagnostics = self.sink.finish();
        if diagnostics.has_errors() {
            return Err(diagnostics);
        }
        let mut spans = SourceMap::default();
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for draft in self.nodes {
            spans.nodes.push(NodeSource {
                name: draft.name.clone(),
                header: draft.header,
                transitions: draft.transitions.iter().map(|t| t.at).collect(),
            });
            nodes.push(Node {
                name: draft.name,
                prompt: draft.prompt.as_ref().and_then(TextField::template),
                reprompt: draft.reprompt.as_ref().and_then(TextField::template),
                agent: draft.agent.as_ref().and_then(TextField::template),
                transitions: draft
                    .transitions
                    .into_iter()
                    .map(|t| t.transition)
                    .collect(),
            });
        }
        Ok(Parsed {
            flow: Flow {
                settings: self.settings,
                nodes,
            },
            warnings: diagnostics.into_vec(),
            spans,
        })
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
