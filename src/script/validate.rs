//! The rules a script must keep beyond its line syntax: within a node (at most one of each
//! special transition, no repeated key, agent-node limits) and across the flow (a `[start]`
//! node, known targets, every node reachable) and the `[voicemail]` node (a message only,
//! never a target).

use std::collections::{HashMap, HashSet, VecDeque};

use super::diag::{Position, Sink, did_you_mean_within};
use super::flow::{Key, START_NODE, Trigger, VOICEMAIL_NODE};
use super::parse::TextField;
use super::transition::ParsedTransition;

/// A node while the script is read.
#[derive(Debug, Clone)]
pub(crate) struct NodeDraft {
    /// Its name as written (maybe invalid, reported already).
    pub name: String,
    /// The `[` of its header.
    pub header: Position,
    /// A second node of the same name (reported; left out of the flow).
    pub duplicate: bool,
    /// One of its lines did not parse (reported), so "no transitions" is not reported too.
    pub failed: bool,
    /// Its prompt text lines.
    pub prompt: Option<TextField>,
    /// `reprompt:`.
    pub reprompt: Option<TextField>,
    /// `agent:`.
    pub agent: Option<TextField>,
    /// Its `->` lines that parsed.
    pub transitions: Vec<ParsedTransition>,
    /// Names on its `->` lines that did not parse (reported): counted as reached, so an error
    /// does not also make its target look unreachable.
    pub loose_refs: Vec<String>,
}

impl NodeDraft {
    /// A node with nothing in it yet.
    pub fn new(name: String, header: Position, duplicate: bool) -> Self {
        NodeDraft {
            name,
            header,
            duplicate,
            failed: false,
            prompt: None,
            reprompt: None,
            agent: None,
            transitions: Vec::new(),
            loose_refs: Vec::new(),
        }
    }

    fn has_text(field: &Option<TextField>) -> bool {
        field
            .as_ref()
            .is_some_and(|f| !f.ok || f.template().is_some())
    }
}

/// Checks one node once all its lines are read.
pub(crate) fn check_node(node: &NodeDraft, sink: &mut Sink) {
    if node.name == VOICEMAIL_NODE {
        check_voicemail(node, sink);
        return;
    }
    for (field, message) in [
        (
            &node.reprompt,
            "`reprompt:` needs text: what to say after a no-match",
        ),
        (&node.agent, "`agent:` needs the instructions for the model"),
    ] {
        if let Some(f) = field
            && f.ok
            && f.template().is_none()
        {
            sink.error(f.at, message);
        }
    }
    let is_agent = node.agent.is_some();
    if node.transitions.is_empty() && !is_agent && !node.failed {
        sink.error(
            node.header,
            format!(
                "node `{}` has no `->` transition: add one, e.g. `-> END`",
                node.name
            ),
        );
    }
    check_triggers(node, is_agent, sink);
    check_keys(node, is_agent, sink);
    let unconditional = node
        .transitions
        .iter()
        .any(|t| t.transition.trigger == Trigger::Always);
    if let Some(reprompt) = &node.reprompt
        && NodeDraft::has_text(&node.reprompt)
    {
        if is_agent {
            sink.warning(
                reprompt.at,
                "an agent node never reprompts (the model answers the caller), so this `reprompt:` is never played",
            );
        } else if unconditional {
            sink.warning(
                reprompt.at,
                "the node moves on unconditionally, so this `reprompt:` is never played",
            );
        }
    }
    if !is_agent
        && !unconditional
        && !node.transitions.is_empty()
        && !NodeDraft::has_text(&node.prompt)
    {
        sink.warning(
            node.header,
            format!(
                "node `{}` has no prompt: the caller hears nothing before it waits for input",
                node.name
            ),
        );
    }
}

/// The `[voicemail]` node: a message and nothing else (it is played on answering machines,
/// then the call hangs up).
fn check_voicemail(node: &NodeDraft, sink: &mut Sink) {
    if !node.failed && !NodeDraft::has_text(&node.prompt) {
        sink.error(
            node.header,
            "the [voicemail] node needs the message to leave on answering machines",
        );
    }
    for (field, what) in [(&node.reprompt, "`reprompt:`"), (&node.agent, "`agent:`")] {
        if let Some(f) = field {
            sink.error(
                f.at,
                format!("the [voicemail] node takes no {what}: it is only said to machines"),
            );
        }
    }
    if let Some(t) = node.transitions.first() {
        sink.error(
            t.at,
            "the [voicemail] node takes no transitions: the call hangs up once the message is left",
        );
    }
}

/// At most one unconditional, `any`, `timeout` and `nomatch`; unconditional alone; agent-node
/// limits on triggers.
fn check_triggers(node: &NodeDraft, is_agent: bool, sink: &mut Sink) {
    let mut first: HashMap<&'static str, usize> = HashMap::new();
    let mut unconditional: Option<(usize, &ParsedTransition)> = None;
    for (index, t) in node.transitions.iter().enumerate() {
        let kind = match t.transition.trigger {
            Trigger::Always => "unconditional",
            Trigger::Any => "`any`",
            Trigger::Timeout { .. } => "`timeout`",
            Trigger::NoMatch => "`nomatch`",
            Trigger::Keys { .. } => continue,
        };
        if is_agent && kind != "`timeout`" {
            let message = match kind {
                "unconditional" => {
                    "an agent node cannot move on unconditionally: the model chooses one of its quoted outcomes".to_owned()
                }
                _ => format!(
                    "an agent node takes no {kind} transition: the model chooses one of its quoted outcomes"
                ),
            };
            sink.error(t.trigger_at, message);
            continue;
        }
        match first.get(kind) {
            Some(line) => sink.error(
                t.trigger_at,
                format!("a node has at most one {kind} transition (the first is on line {line})"),
            ),
            None => {
                first.insert(kind, t.at.line);
                if kind == "unconditional" {
                    unconditional = Some((index, t));
                }
            }
        }
    }
    let conditional = node
        .transitions
        .iter()
        .find(|t| t.transition.trigger != Trigger::Always);
    if let Some((index, t)) = unconditional
        && let Some(other) = conditional
    {
        if index == 0 {
            sink.error(
                other.trigger_at,
                format!(
                    "the node already moves on unconditionally (line {}): an unconditional `-> TARGET` cannot be combined with other transitions",
                    t.at.line
                ),
            );
        } else {
            sink.error(
                t.trigger_at,
                "an unconditional `-> TARGET` cannot be combined with other transitions: the node moves on as soon as its prompt has played",
            );
        }
    }
}

/// No key twice in a node (phrases compared ignoring case); agent nodes take phrases only.
fn check_keys(node: &NodeDraft, is_agent: bool, sink: &mut Sink) {
    let mut seen: HashMap<(bool, String), usize> = HashMap::new();
    for t in &node.transitions {
        for (key, at) in &t.keys {
            if is_agent && let Key::Digits(digits) = key {
                sink.error(
                    *at,
                    format!(
                        "an agent node's keys are outcomes for the model: write them as quoted phrases, not DTMF keys like `{digits}`"
                    ),
                );
                continue;
            }
            let folded = match key {
                Key::Digits(d) => (false, d.clone()),
                Key::Phrase(p) => (true, p.to_lowercase()),
            };
            match seen.get(&folded) {
                Some(line) => {
                    let shown = match key {
                        Key::Digits(d) => format!("key `{d}`"),
                        Key::Phrase(p) => format!("phrase \"{p}\""),
                    };
                    sink.error(
                        *at,
                        format!("{shown} is already used in this node (line {line})"),
                    );
                }
                None => {
                    seen.insert(folded, at.line);
                }
            }
        }
    }
}

/// Character comparisons spent on "did you mean" suggestions for one script (plenty for any
/// script a person writes; bounds the work on a huge generated one).
const SUGGESTION_BUDGET: usize = 5_000_000;

/// Checks the whole flow: a `[start]` node, every target known, every node reachable.
pub(crate) fn check_flow(nodes: &[NodeDraft], sink: &mut Sink) {
    let names: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    // Node -> the nodes it leads to; an unknown name counts as the node it was likely meant to
    // be, so a typo is reported once, not again as an unreachable node.
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut budget = SUGGESTION_BUDGET;
    if !names.contains(START_NODE) {
        sink.error(
            Position::new(1, 1),
            "the script has no [start] node: every call begins there",
        );
    }
    for node in nodes {
        for t in &node.transitions {
            for (name, at) in &t.refs {
                if name == VOICEMAIL_NODE && names.contains(VOICEMAIL_NODE) {
                    sink.error(
                        *at,
                        "no transition may lead to [voicemail]: it is only left on answering machines",
                    );
                    continue;
                }
                if let Some(&known) = names.get(name.as_str()) {
                    edges.entry(node.name.as_str()).or_default().push(known);
                    continue;
                }
                let candidates = nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .chain(["END", "agent"]);
                let message = match did_you_mean_within(name, candidates, &mut budget) {
                    Some(s) => {
                        edges.entry(node.name.as_str()).or_default().push(s);
                        format!("unknown node `{name}` (did you mean `{s}`?)")
                    }
                    None => format!("unknown node `{name}`: add a `[{name}]` node or fix the name"),
                };
                sink.error(*at, message);
            }
        }
        for name in &node.loose_refs {
            if let Some(&known) = names.get(name.as_str()) {
                edges.entry(node.name.as_str()).or_default().push(known);
            }
        }
    }
    if !names.contains(START_NODE) {
        return;
    }
    let mut reached: HashSet<&str> = HashSet::from([START_NODE]);
    let mut queue = VecDeque::from([START_NODE]);
    while let Some(name) = queue.pop_front() {
        for &next in edges.get(name).into_iter().flatten() {
            if reached.insert(next) {
                queue.push_back(next);
            }
        }
    }
    for node in nodes {
        if !reached.contains(node.name.as_str()) && node.name != VOICEMAIL_NODE {
            sink.warning(
                node.header,
                format!("node `{}` is never reached from [start]", node.name),
            );
        }
    }
}
