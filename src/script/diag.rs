//! What reading a script reports: positioned errors and warnings, and where each node and
//! transition sits in the source.

use std::fmt;

use serde::Serialize;

/// A place in the source: 1-based line and 1-based column, counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Position {
    /// The position at `line`, `column` (both 1-based).
    pub fn new(line: usize, column: usize) -> Self {
        Position { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The script cannot be loaded.
    Error,
    /// The script loads, but probably does not do what its author meant.
    Warning,
}

/// One problem found in a script, at a line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Diagnostic {
    /// An error at `at`.
    pub fn error(at: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            line: at.line,
            column: at.column,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A warning at `at`.
    pub fn warning(at: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            line: at.line,
            column: at.column,
            severity: Severity::Warning,
            message: message.into(),
        }
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Where it is.
    pub fn position(&self) -> Position {
        Position::new(self.line, self.column)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Everything wrong with a script that does not load: its errors and warnings, sorted by
/// position. `Display` gives one per line, warnings marked `warning: `.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Sorts `items` by position (keeping the order of those at the same place).
    pub fn new(mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(Diagnostic::position);
        Diagnostics { items }
    }

    /// Every diagnostic, errors and warnings, by position.
    pub fn all(&self) -> &[Diagnostic] {
        &self.items
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.is_error())
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| !d.is_error())
    }

    /// Whether any of them is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the list out.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if !d.is_error() {
                write!(f, "warning: ")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Where one node of a parsed script sits in its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSource {
    /// The node's name.
    pub name: String,
    /// The `[` of its header.
    pub header: Position,
    /// The `->` of each of its transitions, in the order of [`crate::script::Node::transitions`].
    pub transitions: Vec<Position>,
}

/// Where the nodes and transitions of a parsed script sit in its source, so that whatever runs
/// or checks the flow can point at them. Nodes are in the order of
/// [`crate::script::Flow::nodes`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SourceMap {
    /// One entry per node of the flow, in the same order.
    pub nodes: Vec<NodeSource>,
}

impl SourceMap {
    /// The source of the node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeSource> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The position of transition `index` (0-based, file order) of node `name`.
    pub fn transition(&self, name: &str, index: usize) -> Option<Position> {
        self.node(name)
            .and_then(|n| n.transitions.get(index).copied())
    }
}

/// Collects diagnostics while a script is read.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    items: Vec<Diagnostic>,
    errors: usize,
}

impl Sink {
    /// Records an error.
    pub(crate) fn error(&mut self, at: Position, message: impl Into<String>) {
        self.items.push(Diagnostic::error(at, message));
        self.errors += 1;
    }

    /// Records a warning.
    pub(crate) fn warning(&mut self, at: Position, message: impl Into<String>) {
        self.items.push(Diagnostic::warning(at, message));
    }

    /// How many errors so far (to tell whether a step added one).
    pub(crate) fn error_count(&self) -> usize {
        self.errors
    }

    /// Sorted, as [`Diagnostics`].
    pub(crate) fn finish(self) -> Diagnostics {
        Diagnostics::new(self.items)
    }
}

/// The candidate closest to `word` by edit distance (ignoring case), when it is close enough
/// to be a likely typo: at most a third of the word's length, and at least one edit allowed.
/// Case is ignored for ASCII letters (names are ASCII).
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut unlimited = usize::MAX;
    did_you_mean_within(word, candidates, &mut unlimited)
}

/// [`did_you_mean`], spending at most `budget` character comparisons (taken from it), so
/// that suggestions for a huge script stay cheap: when it runs out, the best so far is kept.
pub(crate) fn did_you_mean_within<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    budget: &mut usize,
) -> Option<&'a str> {
    let word_len = word.chars().count();
    let limit = (word_len / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let candidate_len = candidate.chars().count();
        // The lengths alone already need more edits than allowed.
        if word_len.abs_diff(candidate_len) > limit {
            continue;
        }
        let cost = (word_len * candidate_len).max(1);
        if cost > *budget {
            break;
        }
        *budget -= cost;
        let distance = edit_distance(word, candidate);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance in characters, ignoring ASCII case.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(!ca.eq_ignore_ascii_case(cb));
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("confirmd", "confirmed"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("héllo", "hello"), 1);
        assert_eq!(edit_distance("End", "END"), 0);
    }

    #[test]
    fn did_you_mean_picks_the_closest_likely_typo() {
        let names = ["start", "confirmed", "goodbye", "END"];
        assert_eq!(did_you_mean("confirmd", names), Some("confirmed"));
        assert_eq!(did_you_mean("goodby", names), Some("goodbye"));
        assert_eq!(did_you_mean("end", names), Some("END"));
        assert_eq!(did_you_mean("reschedule", names), None);
        assert_eq!(did_you_mean("x", names), None);
        assert_eq!(did_you_mean("start", names), None);
        let mut budget = 5 * 9 + 8 * 9;
        assert_eq!(
            did_you_mean_within("confirmd", ["start", "confirmed"], &mut budget),
            Some("confirmed"),
            "`start` is skipped by length, `confirmed` costs 72"
        );
        assert_eq!(budget, 45);
        assert_eq!(
            did_you_mean_within("confirmd", ["confirmed"], &mut budget),
            None,
            "out of budget"
        );
    }

    #[test]
    fn diagnostics_sort_and_display_one_per_line() {
        let d = Diagnostics::new(vec![
            Diagnostic::warning(Position::new(9, 1), "late"),
            Diagnostic::error(Position::new(2, 5), "early"),
            Diagnostic::error(Position::new(2, 1), "earlier"),
        ]);
        assert_eq!(
            d.to_string(),
            "2:1: earlier\n2:5: early\nwarning: 9:1: late"
        );
        assert!(d.has_errors());
        assert_eq!(d.errors().count(), 2);
        assert_eq!(d.warnings().count(), 1);
        assert_eq!(d.all()[0].to_string(), "2:1: earlier");
    }
}
