//! The lexical layer of Destiny-Script: source lines and what kind each is, the tokens of a
//! transition line, and the spelling of durations and phone numbers.

use super::diag::Position;

/// One line of the source, as characters (columns are character indexes + 1).
#[derive(Debug, Clone)]
pub(crate) struct SourceLine {
    /// 1-based line number.
    pub number: usize,
    /// The line's characters, without its line ending.
    pub chars: Vec<char>,
}

impl SourceLine {
    /// The position of character index `index`.
    pub fn at(&self, index: usize) -> Position {
        Position::new(self.number, index + 1)
    }

    /// Whether the characters from `index` on start with `pattern`.
    pub fn has_at(&self, index: usize, pattern: &str) -> bool {
        (index..)
            .zip(pattern.chars())
            .all(|(i, p)| self.chars.get(i) == Some(&p))
    }

    /// Whether the line starts with a blank (a continuation line, if it is text).
    pub fn starts_with_blank(&self) -> bool {
        self.chars.first().is_some_and(|c| c.is_whitespace())
    }

    /// Index of the first non-blank character at or after `from`.
    pub fn skip_blanks(&self, from: usize) -> usize {
        let mut i = from;
        while self.chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    }

    /// The characters in `from..to` with blanks trimmed from both ends, as a string.
    pub fn trimmed(&self, from: usize, to: usize) -> String {
        let to = to.min(self.chars.len());
        let from = from.min(to);
        self.chars[from..to]
            .iter()
            .collect::<String>()
            .trim()
            .to_owned()
    }

    /// Index of the first `//` at or after `from` (or the line's length).
    pub fn comment_from(&self, from: usize) -> usize {
        (from..self.chars.len())
            .find(|&i| self.has_at(i, "//"))
            .unwrap_or(self.chars.len())
    }
}

/// Splits `source` into lines (`\n`, optionally `\r\n`), dropping a leading byte-order mark.
pub(crate) fn lines(source: &str) -> Vec<SourceLine> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    source
        .split('\n')
        .enumerate()
        .map(|(i, line)| SourceLine {
            number: i + 1,
            chars: line.strip_suffix('\r').unwrap_or(line).chars().collect(),
        })
        .collect()
}

/// What a line is (indexes point into [`SourceLine::chars`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// Empty or only blanks.
    Blank,
    /// `// …`.
    Comment,
    /// `[name]`; the index of `[`.
    Header(usize),
    /// `@name value`; the index of `@`.
    Setting(usize),
    /// `-> …`; the index of `-`.
    Transition(usize),
    /// `reprompt: TEXT`: the keyword's index and the index where the text starts.
    Reprompt(usize, usize),
    /// `agent: TEXT`: the keyword's index and the index where the text starts.
    Agent(usize, usize),
    /// Prompt text (or a continuation line): the index where the text starts, after a
    /// leading `\` if there was one.
    Text(usize),
}

/// The keyword of a `reprompt:` line.
pub(crate) const REPROMPT: &str = "reprompt:";
/// The keyword of an `agent:` line.
pub(crate) const AGENT: &str = "agent:";

/// Classifies a line by its first non-blank characters.
pub(crate) fn classify(line: &SourceLine) -> LineKind {
    let i = line.skip_blanks(0);
    match line.chars.get(i) {
        None => LineKind::Blank,
        Some('[') => LineKind::Header(i),
        Some('@') => LineKind::Setting(i),
        Some('\\') => LineKind::Text(i + 1),
        Some(_) if line.has_at(i, "//") => LineKind::Comment,
        Some(_) if line.has_at(i, "->") => LineKind::Transition(i),
        Some(_) if line.has_at(i, REPROMPT) => LineKind::Reprompt(i, i + REPROMPT.chars().count()),
        Some(_) if line.has_at(i, AGENT) => LineKind::Agent(i, i + AGENT.chars().count()),
        Some(_) => LineKind::Text(i),
    }
}

/// Whether a text line starting with `text` would read as something else unless written with
/// a leading `\`.
pub(crate) fn needs_escape(text: &str) -> bool {
    ["[", "@", "->", "//", REPROMPT, AGENT, "\\"]
        .iter()
        .any(|p| text.starts_with(p))
}

/// A quoted string's content, with the column of each of its characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quoted {
    /// The characters, escapes resolved.
    pub chars: Vec<char>,
    /// The 1-based column of each character in the line.
    pub columns: Vec<usize>,
}

impl Quoted {
    /// The content as a string.
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }
}

/// A token of a transition line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A run of characters other than blanks, `,`, `:` and `"`.
    Word(String),
    /// `"…"`.
    Quoted(Quoted),
    /// `:`.
    Colon,
    /// `,`.
    Comma,
}

/// A token and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The token.
    pub tok: Tok,
    /// Column of its first character.
    pub column: usize,
    /// Column just after its last character.
    pub end: usize,
}

impl Token {
    /// The word, if the token is one.
    pub fn word(&self) -> Option<&str> {
        match &self.tok {
            Tok::Word(w) => Some(w),
            _ => None,
        }
    }

    /// How the token reads in a message.
    pub fn describe(&self) -> String {
        match &self.tok {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Quoted(q) => format!("\"{}\"", q.text()),
            Tok::Colon => "`:`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
        }
    }
}

/// A lexical error: its column and message.
pub(crate) type LexError = (usize, String);

/// Splits the line from index `from` into tokens, up to a `//` comment outside quotes.
pub(crate) fn tokenize(line: &SourceLine, from: usize) -> Result<Vec<Token>, LexError> {
    let chars = &line.chars;
    let mut tokens = Vec::new();
    let mut i = from;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if line.has_at(i, "//") {
            break;
        } else if c == ':' || c == ',' {
            let tok = if c == ':' { Tok::Colon } else { Tok::Comma };
            tokens.push(Token {
                tok,
                column: i + 1,
                end: i + 2,
            });
            i += 1;
        } else if c == '"' {
            let (quoted, next) = quoted(chars, i)?;
            tokens.push(Token {
                tok: Tok::Quoted(quoted),
                column: i + 1,
                end: next + 1,
            });
            i = next;
        } else {
            let start = i;
            while i < chars.len()
                && !chars[i].is_whitespace()
                && !matches!(chars[i], ':' | ',' | '"')
                && !line.has_at(i, "//")
            {
                i += 1;
            }
            tokens.push(Token {
                tok: Tok::Word(chars[start..i].iter().collect()),
                column: start + 1,
                end: i + 1,
            });
        }
    }
    Ok(tokens)
}

/// Reads the quoted string whose `"` is at `open`; returns it and the index after the closing
/// quote.
fn quoted(chars: &[char], open: usize) -> Result<(Quoted, usize), LexError> {
    let mut out = Quoted {
        chars: Vec::new(),
        columns: Vec::new(),
    };
    let mut i = open + 1;
    while let Some(&c) = chars.get(i) {
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => match chars.get(i + 1) {
                Some(&e @ ('"' | '\\')) => {
                    out.chars.push(e);
                    out.columns.push(i + 1);
                    i += 2;
                }
                Some(&other) => {
                    return Err((
                        i + 1,
                        format!(
                            "unknown escape `\\{other}` in a quoted text: only `\\\"` and `\\\\` are escapes"
                        ),
                    ));
                }
                None => break,
            },
            _ => {
                out.chars.push(c);
                out.columns.push(i + 1);
                i += 1;
            }
        }
    }
    Err((
        open + 1,
        "unterminated quote: close the text with `\"` on the same line".to_owned(),
    ))
}

/// The shortest duration a script may give, in milliseconds.
pub(crate) const MIN_DURATION_MS: u64 = 100;
/// The longest duration a script may give, in milliseconds.
pub(crate) const MAX_DURATION_MS: u64 = 120_000;

/// Reads a duration: whole milliseconds (`800ms`) or seconds (`8s`), 100 ms to 120 s.
pub(crate) fn parse_duration(word: &str) -> Result<u64, String> {
    let bad = || {
        format!("bad duration `{word}`: write whole milliseconds or seconds, e.g. `800ms` or `8s`")
    };
    let (digits, scale) = if let Some(d) = word.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = word.strip_suffix('s') {
        (d, 1000)
    } else {
        return Err(bad());
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let ms = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|ms| (MIN_DURATION_MS..=MAX_DURATION_MS).contains(ms))
        .ok_or_else(|| format!("duration `{word}` is out of range: between 100ms and 120s"))?;
    Ok(ms)
}

/// Writes a duration the way [`parse_duration`] reads it (seconds when whole).
pub(crate) fn format_duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Checks a transfer number: `+` then 7 to 15 digits, the first not `0` (E.164).
pub(crate) fn check_e164(word: &str) -> Result<(), String> {
    let example = "e.g. `transfer +14155550100`";
    let Some(digits) = word.strip_prefix('+') else {
        return Err(format!(
            "invalid phone number `{word}`: write it in E.164 form, `+` and the country code, {example}"
        ));
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "invalid phone number `{word}`: only digits may follow the `+`, {example}"
        ));
    }
    if !(7..=15).contains(&digits.len()) {
        return Err(format!(
            "invalid phone number `{word}`: it has {} digits; an E.164 number has 7 to 15",
            digits.len()
        ));
    }
    if digits.starts_with('0') {
        return Err(format!(
            "invalid phone number `{word}`: a country code never starts with 0"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> SourceLine {
        SourceLine {
            number: 1,
            chars: text.chars().collect(),
        }
    }

    #[test]
    fn lines_split_on_newlines_and_drop_cr_and_bom() {
        let l = lines("\u{feff}a\r\nb\n\nc");
        let texts: Vec<String> = l.iter().map(|l| l.chars.iter().collect()).collect();
        assert_eq!(texts, ["a", "b", "", "c"]);
        assert_eq!(l[3].number, 4);
    }

    #[test]
    fn classifies_every_kind_of_line() {
        assert_eq!(classify(&line("")), LineKind::Blank);
        assert_eq!(classify(&line("  \t ")), LineKind::Blank);
        assert_eq!(classify(&line("  // note")), LineKind::Comment);
        assert_eq!(classify(&line(" [start]")), LineKind::Header(1));
        assert_eq!(classify(&line("@voice x")), LineKind::Setting(0));
        assert_eq!(classify(&line("  -> END")), LineKind::Transition(2));
        assert_eq!(classify(&line("reprompt: x")), LineKind::Reprompt(0, 9));
        assert_eq!(classify(&line(" agent: x")), LineKind::Agent(1, 7));
        assert_eq!(classify(&line("Hello")), LineKind::Text(0));
        assert_eq!(classify(&line("  \\[laughs]")), LineKind::Text(3));
        assert_eq!(classify(&line("- > x")), LineKind::Text(0));
        assert_eq!(classify(&line("Reprompt: x")), LineKind::Text(0));
        assert_eq!(classify(&line("/ not a comment")), LineKind::Text(0));
    }

    #[test]
    fn needs_escape_matches_what_classify_would_misread() {
        for text in ["[x", "@x", "->x", "//x", "reprompt: x", "agent:x", "\\x"] {
            assert!(needs_escape(text), "{text}");
            assert!(
                !matches!(classify(&line(text)), LineKind::Text(0)),
                "{text}"
            );
        }
        for text in ["x", "-x", "/x", "agent x", "{{ a }}"] {
            assert!(!needs_escape(text), "{text}");
            assert_eq!(classify(&line(text)), LineKind::Text(0), "{text}");
        }
    }

    #[test]
    fn tokenizes_words_quotes_and_punctuation_up_to_a_comment() {
        let l = line(r#"-> 1,"no \"way\" \\":next // done"#);
        let toks = tokenize(&l, 2).unwrap();
        let kinds: Vec<String> = toks.iter().map(Token::describe).collect();
        assert_eq!(kinds, ["`1`", "`,`", "\"no \"way\" \\\"", "`:`", "`next`"]);
        assert_eq!(toks[0].column, 4);
        assert_eq!(toks[2].column, 6);
        let Tok::Quoted(q) = &toks[2].tok else {
            panic!("not quoted")
        };
        assert_eq!(q.columns[0], 7);
        assert_eq!(q.columns[3], 10); // the escape `\"` starts at column 10
        assert_eq!(toks[4].column, 22);
        assert_eq!(toks[4].end, 26);
    }

    #[test]
    fn slashes_in_quotes_are_text() {
        let l = line(r#"-> sms "see https://x.io" then END"#);
        let toks = tokenize(&l, 2).unwrap();
        assert_eq!(toks.len(), 4);
    }

    #[test]
    fn lex_errors_point_at_the_problem() {
        assert_eq!(
            tokenize(&line(r#"-> "yes: x"#), 2).unwrap_err().0,
            4,
            "unterminated quote at its opening"
        );
        let (col, msg) = tokenize(&line(r#"-> "a\nb": x"#), 2).unwrap_err();
        assert_eq!(col, 6);
        assert!(msg.contains("unknown escape `\\n`"), "{msg}");
        assert!(tokenize(&line(r#"-> "a\"#), 2).is_err());
    }

    #[test]
    fn durations_in_range_read_and_print_back() {
        assert_eq!(parse_duration("800ms"), Ok(800));
        assert_eq!(parse_duration("8s"), Ok(8000));
        assert_eq!(parse_duration("100ms"), Ok(100));
        assert_eq!(parse_duration("120s"), Ok(120_000));
        for bad in ["", "s", "ms", "8", "8 s", "1.5s", "-1s", "8m", "+8s", "８s"] {
            assert!(
                parse_duration(bad).unwrap_err().contains("bad duration"),
                "{bad}"
            );
        }
        for out in ["99ms", "121s", "0s", "99999999999999999999s"] {
            assert!(
                parse_duration(out).unwrap_err().contains("out of range"),
                "{out}"
            );
        }
        for ms in [100, 999, 1000, 1500, 120_000] {
            assert_eq!(parse_duration(&format_duration(ms)), Ok(ms));
        }
    }

    #[test]
    fn e164_numbers() {
        assert!(check_e164("+14155550100").is_ok());
        assert!(check_e164("+1234567").is_ok());
        assert!(check_e164("+123456789012345").is_ok());
        assert!(check_e164("14155550100").unwrap_err().contains("E.164"));
        assert!(check_e164("+1415-555").unwrap_err().contains("only digits"));
        assert!(check_e164("+").unwrap_err().contains("only digits"));
        assert!(check_e164("+123456").unwrap_err().contains("6 digits"));
        assert!(
            check_e164("+1234567890123456")
                .unwrap_err()
                .contains("16 digits")
        );
        assert!(
            check_e164("+0123456789")
                .unwrap_err()
                .contains("never starts with 0")
        );
    }
}
