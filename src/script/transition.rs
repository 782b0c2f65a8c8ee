//! Reading one `->` line: its trigger (keys, `any`, `timeout`, `nomatch` or none) and its
//! target (a node, `END`, `transfer`, `agent` or `sms`).

use super::diag::{Position, Sink, did_you_mean};
use super::flow::{Key, Target, Transition, Trigger, collapse_blanks, is_dtmf_key, is_node_name};
use super::lexer::{SourceLine, Tok, Token, check_e164, parse_duration, tokenize};
use super::template::{LineText, join_lines, parse_line};

/// A transition read from its line, with the positions the later checks need.
#[derive(Debug, Clone)]
pub(crate) struct ParsedTransition {
    /// The transition.
    pub transition: Transition,
    /// The `->`.
    pub at: Position,
    /// The first token after `->` (where the trigger, or the target, begins).
    pub trigger_at: Position,
    /// Each key with its position.
    pub keys: Vec<(Key, Position)>,
    /// Every node name the target refers to (including `else` and `then` targets).
    pub refs: Vec<(String, Position)>,
}

/// Where a target is being read: on its own, after a transfer's `else`, after an sms's `then`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Top,
    Else,
    Then,
}

/// Reads the transition whose `->` is at index `arrow` of `line`. Errors go to `sink`; the
/// result is `None` when there was any.
pub(crate) fn parse_transition(
    line: &SourceLine,
    arrow: usize,
    sink: &mut Sink,
) -> Option<ParsedTransition> {
    let at = line.at(arrow);
    let tokens = match tokenize(line, arrow + 2) {
        Ok(tokens) => tokens,
        Err((column, message)) => {
            sink.error(Position::new(line.number, column), message);
            return None;
        }
    };
    let Some(first) = tokens.first() else {
        sink.error(
            at,
            "expected a target after `->`, e.g. `-> END` or `-> 1: next`",
        );
        return None;
    };
    let mut reader = Reader {
        line: line.number,
        sink,
        keys: Vec::new(),
        refs: Vec::new(),
        failed: false,
    };
    let trigger_at = reader.pos(first.column);
    let colon = tokens.iter().position(|t| t.tok == Tok::Colon);
    let transition = match colon {
        Some(colon) => {
            let trigger = reader.trigger(&tokens[..colon], tokens[colon].column);
            let target = reader.whole_target(&tokens[colon + 1..], tokens[colon].end, "`:`");
            Transition {
                trigger: trigger?,
                target: target?,
            }
        }
        None if looks_like_trigger(&tokens) => {
            reader.missing_colon(&tokens);
            return None;
        }
        None => Transition {
            trigger: Trigger::Always,
            target: reader.whole_target(&tokens, first.column, "`->`")?,
        },
    };
    if reader.failed {
        return None;
    }
    Some(ParsedTransition {
        transition,
        at,
        trigger_at,
        keys: reader.keys,
        refs: reader.refs,
    })
}

/// Whether a line with no `:` starts like a trigger (so the `:` is what is missing).
fn looks_like_trigger(tokens: &[Token]) -> bool {
    match tokens.first().map(|t| &t.tok) {
        Some(Tok::Quoted(_)) => true,
        Some(Tok::Word(w)) => {
            matches!(w.as_str(), "any" | "timeout" | "nomatch")
                || (w.chars().all(is_dtmf_key) && !is_node_name(w))
                || (w.chars().all(is_dtmf_key)
                    && tokens.get(1).is_some_and(|t| t.tok == Tok::Comma))
        }
        _ => false,
    }
}

/// The trigger a word names when it stands alone before `:` (`any`, `timeout`, `nomatch`).
fn lone_trigger(word: &str) -> Option<Trigger> {
    match word {
        "any" => Some(Trigger::Any),
        "nomatch" => Some(Trigger::NoMatch),
        "timeout" => Some(Trigger::Timeout { after_ms: None }),
        _ => None,
    }
}

/// Reads the tokens of one `->` line, collecting keys and node references as it goes.
struct Reader<'s> {
    /// 1-based line number.
    line: usize,
    sink: &'s mut Sink,
    /// Every key read, with its position.
    keys: Vec<(Key, Position)>,
    /// Every node name used as a target, with its position.
    refs: Vec<(String, Position)>,
    /// Whether an error was reported.
    failed: bool,
}

impl Reader<'_> {
    fn pos(&self, column: usize) -> Position {
        Position::new(self.line, column)
    }

    fn error(&mut self, column: usize, message: impl Into<String>) {
        self.failed = true;
        self.sink.error(Position::new(self.line, column), message);
    }

    /// Reads a trigger that must use all of `tokens` (which come before the `:` at `colon`).
    fn trigger(&mut self, tokens: &[Token], colon: usize) -> Option<Trigger> {
        if tokens.is_empty() {
            self.error(
                colon,
                "expected keys, `any`, `timeout` or `nomatch` before `:`",
            );
            return None;
        }
        let (trigger, used) = self.trigger_prefix(tokens)?;
        if let Some(extra) = tokens.get(used) {
            let message = match &trigger {
                Trigger::Keys { .. } if matches!(extra.tok, Tok::Word(_) | Tok::Quoted(_)) => {
                    format!("expected `,` between keys, found {}", extra.describe())
                }
                Trigger::Keys { .. } => format!("expected a key, found {}", extra.describe()),
                Trigger::Timeout { .. } => format!(
                    "unexpected {} after the timeout: write `-> timeout: TARGET` or `-> timeout 10s: TARGET`",
                    extra.describe()
                ),
                _ => format!(
                    "unexpected {} after `{}`: it stands alone before `:`",
                    extra.describe(),
                    tokens[0].word().unwrap_or_default()
                ),
            };
            self.error(extra.column, message);
            return None;
        }
        Some(trigger)
    }

    /// Reads the longest trigger at the start of `tokens`; returns it and how many tokens it
    /// used.
    fn trigger_prefix(&mut self, tokens: &[Token]) -> Option<(Trigger, usize)> {
        let first = tokens.first()?;
        if let Some(word) = first.word()
            && let Some(trigger) = lone_trigger(word)
        {
            if let Trigger::Timeout { .. } = trigger
                && let Some(next) = tokens.get(1)
                && let Some(duration) = next.word()
                && duration.starts_with(|c: char| c.is_ascii_digit())
            {
                return match parse_duration(duration) {
                    Ok(ms) => Some((Trigger::Timeout { after_ms: Some(ms) }, 2)),
                    Err(message) => {
                        self.error(next.column, message);
                        None
                    }
                };
            }
            return Some((trigger, 1));
        }
        let mut keys = Vec::new();
        let mut i = 0;
        loop {
            let Some(token) = tokens.get(i) else {
                let column = tokens.get(i.wrapping_sub(1)).map_or(1, |t| t.end);
                self.error(column, "expected a key after `,`");
                return None;
            };
            let key = self.key(token)?;
            self.keys.push((key.clone(), self.pos(token.column)));
            keys.push(key);
            i += 1;
            if tokens.get(i).is_some_and(|t| t.tok == Tok::Comma) {
                i += 1;
            } else {
                return Some((Trigger::Keys { keys }, i));
            }
        }
    }

    /// Reads one key.
    fn key(&mut self, token: &Token) -> Option<Key> {
        match &token.tok {
            Tok::Quoted(quoted) => {
                let phrase = collapse_blanks(&quoted.text());
                if phrase.is_empty() {
                    self.error(
                        token.column,
                        "empty phrase: write the words to listen for, e.g. \"yes\"",
                    );
                    None
                } else if !phrase.chars().any(char::is_alphanumeric) {
                    self.error(
                        token.column,
                        format!("the phrase \"{phrase}\" has no words to match"),
                    );
                    None
                } else {
                    Some(Key::Phrase(phrase))
                }
            }
            Tok::Word(word) if word.chars().all(is_dtmf_key) => {
                if word.trim_end_matches('#').contains('#') || word.matches('#').count() > 1 {
                    self.error(
                        token.column,
                        format!("`#` ends a key entry, so it can only be the last key of `{word}`"),
                    );
                    None
                } else {
                    Some(Key::Digits(word.clone()))
                }
            }
            Tok::Word(word) if lone_trigger(word).is_some() => {
                self.error(
                    token.column,
                    format!("`{word}` cannot be combined with keys: write `-> {word}: TARGET` on its own line"),
                );
                None
            }
            Tok::Word(word) => {
                self.error(
                    token.column,
                    format!(
                        "bad key `{word}`: a key is DTMF keys (0-9, *, #, A-D) or a phrase in double quotes, e.g. \"{}\"",
                        word.to_lowercase()
                    ),
                );
                None
            }
            Tok::Colon | Tok::Comma => {
                self.error(
                    token.column,
                    format!(
                        "expected a key (DTMF keys or a quoted phrase), found {}",
                        token.describe()
                    ),
                );
                None
            }
        }
    }

    /// Reports a trigger with no `:` after it.
    fn missing_colon(&mut self, tokens: &[Token]) {
        let errors = self.sink.error_count();
        let Some((trigger, used)) = self.trigger_prefix(tokens) else {
            return;
        };
        if self.sink.error_count() > errors {
            return;
        }
        let column = tokens
            .get(used)
            .map_or_else(|| tokens.get(used - 1).map_or(1, |t| t.end), |t| t.column);
        let what = match trigger {
            Trigger::Keys { .. } => "the keys".to_owned(),
            Trigger::Timeout { after_ms: Some(_) } => "the timeout".to_owned(),
            _ => format!("`{}`", tokens[0].word().unwrap_or_default()),
        };
        self.error(column, format!("expected `:` after {what}, then a target"));
    }

    /// Reads a target that must use all of `tokens`; `after` is the column after the word
    /// before them (named `what`), for a missing target.
    fn whole_target(&mut self, tokens: &[Token], after: usize, what: &str) -> Option<Target> {
        let (target, used) = self.target(tokens, after, what, Context::Top)?;
        if let Some(extra) = tokens.get(used) {
            self.leftover(&tokens[used - 1], extra, &target);
            return None;
        }
        Some(target)
    }

    /// Reports `extra`, found after a complete target that ended with `last`.
    fn leftover(&mut self, last: &Token, extra: &Token, target: &Target) {
        let (column, message) = match (extra.word(), target) {
            (Some("then"), _) => (
                extra.column,
                "`then` only follows an `sms` target: `sms \"TEXT\" then TARGET`".to_owned(),
            ),
            (Some("else"), _) => (
                extra.column,
                "`else` only follows a `transfer` target: `transfer +NUMBER else TARGET`"
                    .to_owned(),
            ),
            (_, Target::Node { name })
                if last.word() == Some(name.as_str())
                    && matches!(extra.tok, Tok::Word(_) | Tok::Quoted(_)) =>
            {
                let hint = did_you_mean(name, ["transfer", "sms", "agent", "END"])
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                (
                    last.column,
                    format!(
                        "unknown target `{name}`{hint}: a target is a node name, `END`, `agent`, `transfer +NUMBER` or `sms \"TEXT\"`"
                    ),
                )
            }
            _ => (
                extra.column,
                format!("unexpected {} after the target", extra.describe()),
            ),
        };
        self.error(column, message);
    }

    /// Reads the target at the start of `tokens`; returns it and how many tokens it used.
    fn target(
        &mut self,
        tokens: &[Token],
        after: usize,
        what: &str,
        context: Context,
    ) -> Option<(Target, usize)> {
        let Some(first) = tokens.first() else {
            self.error(after, format!("expected a target after {what}"));
            return None;
        };
        let word = match &first.tok {
            Tok::Word(word) => word.as_str(),
            Tok::Quoted(_) => {
                self.error(
                    first.column,
                    "expected a target, found a quoted text: quoted phrases are keys and go before `:`",
                );
                return None;
            }
            Tok::Colon | Tok::Comma => {
                self.error(
                    first.column,
                    format!("expected a target after {what}, found {}", first.describe()),
                );
                return None;
            }
        };
        match word {
            "END" => Some((Target::End, 1)),
            "agent" => Some((Target::Agent, 1)),
            "transfer" => self.transfer(tokens, context),
            "sms" => self.sms(tokens, context),
            "then" | "else" => {
                let message = if word == "then" {
                    "`then` only follows an `sms` target: `sms \"TEXT\" then TARGET`"
                } else {
                    "`else` only follows a `transfer` target: `transfer +NUMBER else TARGET`"
                };
                self.error(first.column, message);
                None
            }
            "any" | "timeout" | "nomatch" => {
                self.error(
                    first.column,
                    format!("`{word}` is a trigger, not a target: write `-> {word}: TARGET`"),
                );
                None
            }
            name if is_node_name(name) => {
                self.refs.push((name.to_owned(), self.pos(first.column)));
                Some((
                    Target::Node {
                        name: name.to_owned(),
                    },
                    1,
                ))
            }
            name => {
                self.error(
                    first.column,
                    format!(
                        "bad target `{name}`: a target is a node name (letters, digits and `_`), `END`, `agent`, `transfer +NUMBER` or `sms \"TEXT\"`"
                    ),
                );
                None
            }
        }
    }

    /// `transfer +NUMBER [else TARGET]`, at the start of `tokens`.
    fn transfer(&mut self, tokens: &[Token], context: Context) -> Option<(Target, usize)> {
        if context == Context::Else {
            self.error(
                tokens[0].column,
                "the `else` of a transfer cannot be another `transfer`",
            );
            return None;
        }
        let Some(number) = tokens.get(1).and_then(|t| t.word().map(|w| (t, w))) else {
            let column = tokens.get(1).map_or(tokens[0].end, |t| t.column);
            self.error(
                column,
                "expected a phone number after `transfer`, e.g. `transfer +14155550100`",
            );
            return None;
        };
        if let Err(message) = check_e164(number.1) {
            self.error(number.0.column, message);
            return None;
        }
        let to = number.1.to_owned();
        match tokens.get(2) {
            Some(t) if t.word() == Some("else") => {
                let (otherwise, used) =
                    self.target(&tokens[3..], t.end, "`else`", Context::Else)?;
                Some((
                    Target::Transfer {
                        to,
                        otherwise: Some(Box::new(otherwise)),
                    },
                    3 + used,
                ))
            }
            _ => Some((
                Target::Transfer {
                    to,
                    otherwise: None,
                },
                2,
            )),
        }
    }

    /// `sms "TEXT" [then TARGET]`, at the start of `tokens`.
    fn sms(&mut self, tokens: &[Token], context: Context) -> Option<(Target, usize)> {
        if context == Context::Then {
            self.error(
                tokens[0].column,
                "the `then` of an sms cannot be another `sms`",
            );
            return None;
        }
        let Some((token, quoted)) = tokens.get(1).and_then(|t| match &t.tok {
            Tok::Quoted(q) => Some((t, q)),
            _ => None,
        }) else {
            let column = tokens.get(1).map_or(tokens[0].end, |t| t.column);
            self.error(
                column,
                "expected the message in double quotes after `sms`, e.g. `sms \"See you soon\"`",
            );
            return None;
        };
        let text = LineText {
            line: self.line,
            chars: &quoted.chars,
            columns: &quoted.columns,
        };
        let parts = parse_line(text, self.sink);
        let Some(parts) = parts else {
            self.failed = true;
            return None;
        };
        let Some(text) = join_lines(vec![parts]) else {
            self.error(token.column, "the sms text is empty");
            return None;
        };
        match tokens.get(2) {
            Some(t) if t.word() == Some("then") => {
                let (then, used) = self.target(&tokens[3..], t.end, "`then`", Context::Then)?;
                Some((
                    Target::Sms {
                        text,
                        then: Box::new(then),
                    },
                    3 + used,
                ))
            }
            _ => Some((
                Target::Sms {
                    text,
                    then: Box::new(Target::End),
                },
                2,
            )),
        }
    }
}
