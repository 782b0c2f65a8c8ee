//! The parsed form of a Destiny-Script: a [`Flow`] of named [`Node`]s.
//!
//! A `Flow` is plain data (serde JSON both ways) with no source positions: the parser keeps
//! those in its own source map, so two flows are equal when they mean the same thing, however
//! the text was laid out. `docs/script.md` is the language reference.

use serde::{Deserialize, Serialize};

/// The name of the node every call starts in.
pub const START_NODE: &str = "start";
/// The node left as a voicemail on answering machines (its prompt; no transitions, never
/// entered by the flow).
pub const VOICEMAIL_NODE: &str = "voicemail";

/// Words that cannot name a node (they are target or trigger words).
pub const RESERVED_WORDS: &[&str] = &[
    "END", "agent", "transfer", "sms", "any", "timeout", "nomatch", "then", "else",
];

/// The longest node name, in characters.
pub const MAX_NODE_NAME: usize = 64;

/// Whether `name` is spelled like a node name: ASCII letters, digits and `_`, starting with a
/// letter or `_`, at most [`MAX_NODE_NAME`] characters (reserved words are not checked).
pub fn is_node_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NODE_NAME
}

/// Whether `name` is a valid variable name: ASCII letters, digits, `_` and `.`, starting with
/// a letter or `_` (`contact.firstName` is one name).
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Whether `c` is a DTMF key: `0`–`9`, `*`, `#` or `A`–`D`.
pub fn is_dtmf_key(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// `text` with every run of blanks made one space, and no blanks at either end.
pub fn collapse_blanks(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs of blanks made one space, keeping one at either end if there was any.
fn collapse_inner_blanks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_blank = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_blank {
                out.push(' ');
            }
            in_blank = true;
        } else {
            out.push(c);
            in_blank = false;
        }
    }
    out
}

/// A whole call flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Flow-wide settings (the `@name value` lines before the first node).
    #[serde(default)]
    pub settings: Settings,
    /// The nodes, in file order; one of them is named [`START_NODE`].
    pub nodes: Vec<Node>,
}

impl Flow {
    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node every call begins in.
    pub fn start(&self) -> Option<&Node> {
        self.node(START_NODE)
    }

    /// The `[voicemail]` node, whose prompt is left on answering machines.
    pub fn voicemail(&self) -> Option<&Node> {
        self.node(VOICEMAIL_NODE)
    }

    /// The same flow in normal form: every template [`Template::normalized`], every phrase's
    /// blanks collapsed. Parsing always yields a normalized flow.
    pub fn normalized(&self) -> Flow {
        let mut flow = self.clone();
        flow.settings.goodbye = flow.settings.goodbye.normalized();
        for node in &mut flow.nodes {
            for template in [&mut node.prompt, &mut node.reprompt, &mut node.agent]
                .into_iter()
                .flatten()
            {
                *template = template.normalized();
            }
            for transition in &mut node.transitions {
                if let Trigger::Keys { keys } = &mut transition.trigger {
                    for key in keys {
                        if let Key::Phrase(phrase) = key {
                            *phrase = collapse_blanks(phrase);
                        }
                    }
                }
                transition.target.normalize();
            }
        }
        flow
    }
}

/// Flow-wide settings; every field has a default, so an empty header is fine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `@voice NAME`: the synthesizer voice for every prompt (the provider's default when
    /// unset). Part of the prompt cache key.
    pub voice: Option<String>,
    /// `@timeout 6s`: how long a node waits for input after its prompt has played, when its
    /// `timeout` transition names no duration of its own (milliseconds).
    pub no_input_timeout_ms: u64,
    /// `@reprompts 2`: how many times a node's reprompt is played after input that matched
    /// nothing (or no input, for a node without a `timeout` transition) before its `nomatch`
    /// transition is taken.
    pub max_reprompts: u32,
    /// `@digit_timeout 3s`: how long to wait for the next key of a multi-key DTMF entry
    /// (milliseconds).
    pub digit_timeout_ms: u64,
    /// `@goodbye TEXT`: said before hanging up when a node runs out of reprompts and has no
    /// `nomatch` transition.
    pub goodbye: Template,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            voice: None,
            no_input_timeout_ms: 6_000,
            max_reprompts: 2,
            digit_timeout_ms: 3_000,
            goodbye: Template::text("Sorry, I couldn't understand. Goodbye."),
        }
    }
}

/// One conversational state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// `[name]`: letters, digits and `_`, starting with a letter or `_`.
    pub name: String,
    /// What the bot says on entering the node (the text lines), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Template>,
    /// `reprompt: TEXT`: said after a no-match instead of repeating the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprompt: Option<Template>,
    /// `agent: INSTRUCTIONS`: the node is run by the language model with these instructions
    /// until it chooses one of the node's outcomes (its quoted transition keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Template>,
    /// The `->` lines, in file order (first match wins).
    pub transitions: Vec<Transition>,
}

impl Node {
    /// Whether the language model runs this node.
    pub fn is_agent(&self) -> bool {
        self.agent.is_some()
    }
}

/// Text with `{{ variable }}` and `{{ variable | fallback }}` slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Template {
    /// Literal text and variable slots, in order.
    pub parts: Vec<TemplatePart>,
}

impl Template {
    /// A template with no variables.
    pub fn text(text: &str) -> Self {
        Template {
            parts: vec![TemplatePart::Text(text.to_owned())],
        }
    }

    /// Whether the text depends on no variable (so it can be synthesized ahead of time).
    pub fn is_static(&self) -> bool {
        self.parts
            .iter()
            .all(|p| matches!(p, TemplatePart::Text(_)))
    }

    /// The same text in normal form: adjacent text parts merged, runs of blanks made one space,
    /// no blanks at either end, no empty text parts, variable names and fallbacks trimmed
    /// (fallback blanks collapsed too). Parsing always yields normalized templates.
    pub fn normalized(&self) -> Template {
        let mut parts: Vec<TemplatePart> = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => {
                    if let Some(TemplatePart::Text(last)) = parts.last_mut() {
                        last.push_str(text);
                    } else {
                        parts.push(TemplatePart::Text(text.clone()));
                    }
                }
                TemplatePart::Var { name, fallback } => parts.push(TemplatePart::Var {
                    name: name.trim().to_owned(),
                    fallback: fallback.as_deref().map(collapse_blanks),
                }),
            }
        }
        for part in &mut parts {
            if let TemplatePart::Text(text) = part {
                *text = collapse_inner_blanks(text);
            }
        }
        if let Some(TemplatePart::Text(first)) = parts.first_mut() {
            *first = first.trim_start().to_owned();
        }
        if let Some(TemplatePart::Text(last)) = parts.last_mut() {
            *last = last.trim_end().to_owned();
        }
        parts.retain(|p| !matches!(p, TemplatePart::Text(t) if t.is_empty()));
        Template { parts }
    }

    /// Whether the template is in normal form and can be written in a script and read back
    /// unchanged: normalized and not empty, valid variable names, no `{{` in text or fallbacks,
    /// no `}}` in fallbacks, and no text ending in `{` right before a variable.
    pub fn is_canonical(&self) -> bool {
        if self.parts.is_empty() || *self != self.normalized() {
            return false;
        }
        self.parts.iter().enumerate().all(|(i, part)| match part {
            TemplatePart::Text(text) => {
                let before_var = matches!(self.parts.get(i + 1), Some(TemplatePart::Var { .. }));
                !(text.contains("{{") || (before_var && text.ends_with('{')))
            }
            TemplatePart::Var { name, fallback } => {
                is_variable_name(name)
                    && fallback
                        .as_deref()
                        .is_none_or(|f| !f.contains("{{") && !f.contains("}}"))
            }
        })
    }

    /// The names of the variables it uses, in order, without repeats.
    pub fn variables(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for part in &self.parts {
            if let TemplatePart::Var { name, .. } = part
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }
}

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplatePart {
    /// Literal text.
    Text(String),
    /// `{{ name }}` or `{{ name | fallback }}`.
    Var {
        /// Variable name: letters, digits, `_` and `.`, starting with a letter or `_`.
        name: String,
        /// Used when the variable is missing or empty; without one, a missing variable is an
        /// error before the call (outbound) or at call start (inbound).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<String>,
    },
}

/// One `->` line: when it fires and where it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// When it fires.
    pub trigger: Trigger,
    /// Where it leads.
    pub target: Target,
}

/// What makes a transition fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trigger {
    /// `-> target`: as soon as the prompt has played (no input is awaited).
    Always,
    /// `-> 1, "yes", "sure thing": target`: a DTMF entry or a spoken phrase. In an agent node
    /// the quoted keys are the outcomes the model may choose.
    Keys {
        /// At least one key.
        keys: Vec<Key>,
    },
    /// `-> any: target`: any DTMF entry or any speech with words.
    Any,
    /// `-> timeout: target` or `-> timeout 8s: target`: no input for that long after the
    /// prompt played (the flow's `@timeout` when no duration is given).
    Timeout {
        /// Milliseconds, when given on the line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_ms: Option<u64>,
    },
    /// `-> nomatch: target`: input matched nothing `@reprompts` times in a row.
    NoMatch,
}

/// A transition key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Key {
    /// Bare DTMF keys: one or more of `0`–`9`, `*`, `#`, `A`–`D` (e.g. `1`, `42#`).
    Digits(String),
    /// A quoted phrase, matched case-insensitively on whole words of the transcript.
    Phrase(String),
}

impl Key {
    /// Whether the key is in normal form and valid: bare keys are DTMF keys with `#` only
    /// last; a phrase has its blanks collapsed and holds at least one letter or digit.
    pub fn is_canonical(&self) -> bool {
        match self {
            Key::Digits(keys) => {
                !keys.is_empty()
                    && keys.chars().all(is_dtmf_key)
                    && !keys.trim_end_matches('#').contains('#')
                    && keys.matches('#').count() <= 1
            }
            Key::Phrase(phrase) => {
                *phrase == collapse_blanks(phrase) && phrase.chars().any(char::is_alphanumeric)
            }
        }
    }
}

/// Where a transition leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Target {
    /// Another node, by name.
    Node {
        /// Its name.
        name: String,
    },
    /// `END`: hang up (after the current prompt has played).
    End,
    /// `transfer +15551234567` or `transfer +15551234567 else TARGET`: hand the call to that
    /// number; if the carrier cannot, go to `otherwise` (or say `@goodbye` and hang up).
    Transfer {
        /// E.164.
        to: String,
        /// Where to go when the transfer fails; never another `transfer`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        otherwise: Option<Box<Target>>,
    },
    /// `agent`: hand the rest of the call to the language model, with the conversation so far.
    Agent,
    /// `sms "TEXT"` or `sms "TEXT" then TARGET`: text the caller, then go on (`END` when no
    /// `then` is given).
    Sms {
        /// The message (a template).
        text: Template,
        /// Where to go after sending; never another `sms`.
        then: Box<Target>,
    },
}

impl Target {
    /// Normalizes the templates it holds (see [`Template::normalized`]).
    fn normalize(&mut self) {
        match self {
            Target::Transfer {
                otherwise: Some(next),
                ..
            } => next.normalize(),
            Target::Sms { text, then } => {
                *text = text.normalized();
                then.normalize();
            }
            Target::Node { .. } | Target::End | Target::Agent | Target::Transfer { .. } => {}
        }
    }
}
