//! Cutting the model's streamed text into pieces speech synthesis can start on.
//!
//! A [`ClauseSplitter`] takes text deltas as they arrive and hands out segments at sentence
//! ends, and — once enough text is buffered — at clause ends, so the first words of an answer
//! reach the TTS after the first clause rather than the whole message. It never cuts inside a
//! number (`3.5`, `8:30`, `1,000`) because cuts only happen at whitespace, never after a known
//! abbreviation (`Dr.`, `e.g.`, `p.m.` …), and avoids cutting inside an open parenthesis or
//! quotation. Whitespace runs are collapsed to single spaces, so joining the segments with one
//! space gives back the text, whitespace-normalized.

/// Where the splitter may cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClauseRules {
    /// Characters the first segment needs before a clause end (`,` `;` `:` ` — `) cuts it.
    pub first_min_chars: usize,
    /// Characters later segments need before a clause end cuts them.
    pub min_chars: usize,
    /// Beyond this many characters the text is cut at the last whitespace that fits.
    pub max_chars: usize,
}

impl Default for ClauseRules {
    fn default() -> Self {
        ClauseRules {
            first_min_chars: 12,
            min_chars: 40,
            max_chars: 250,
        }
    }
}

/// Abbreviations (lower case) after which a period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e.", "a.m.",
    "p.m.", "prof.", "approx.", "mt.",
];

/// Characters that may close a sentence after its final punctuation (`"Yes."` `(Maybe.)`).
const CLOSERS: &[char] = &['"', '\'', ')', ']', '”', '’', '»'];

/// Characters that may open a word before the word itself (`"Dr.` `(e.g.`).
const OPENERS: &[char] = &['"', '\'', '(', '[', '“', '‘', '«'];

/// What a space in the buffer is, as a cut point.
enum Cut {
    /// Cut here.
    Yes,
    /// Not here.
    No,
    /// Cannot tell until the text after the space arrives.
    Wait,
}

/// Cuts streamed text into speakable segments (see the module docs).
#[derive(Debug, Clone)]
pub struct ClauseSplitter {
    rules: ClauseRules,
    /// Pending text, whitespace collapsed to single spaces, no leading space.
    buf: String,
    /// Whether a segment was already handed out (the first one uses `first_min_chars`).
    emitted: bool,
}

impl ClauseSplitter {
    /// A splitter with these rules (a `max_chars` below `min_chars` is raised to it).
    pub fn new(rules: ClauseRules) -> ClauseSplitter {
        let max_chars = rules.max_chars.max(rules.min_chars).max(1);
        ClauseSplitter {
            rules: ClauseRules { max_chars, ..rules },
            buf: String::new(),
            emitted: false,
        }
    }

    /// Adds a delta and appends every segment that became complete to `out`.
    pub fn push(&mut self, delta: &str, out: &mut Vec<String>) {
        for c in delta.chars() {
            if c.is_whitespace() {
                if !self.buf.is_empty() && !self.buf.ends_with(' ') {
                    self.buf.push(' ');
                }
            } else {
                self.buf.push(c);
            }
        }
        while let Some(at) = self.next_cut() {
            let segment = self.buf[..at].trim().to_string();
            self.buf.drain(..at + 1);
            if !segment.is_empty() {
                out.push(segment);
                self.emitted = true;
            }
        }
    }

    /// The rest of the text (the end of the message), if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = self.buf.trim().to_string();
        self.buf.clear();
        if rest.is_empty() {
            None
        } else {
            self.emitted = true;
            Some(rest)
        }
    }

    /// Discards buffered text (the answer was interrupted); the next segment is a first one.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.emitted = false;
    }

    /// Byte index of the space to cut at, if the buffer holds a complete segment.
    fn next_cut(&self) -> Option<usize> {
        let min = if self.emitted {
            self.rules.min_chars
        } else {
            self.rules.first_min_chars
        };
        let mut chars = 0usize;
        let mut depth = Nesting::default();
        let mut last_fit: Option<usize> = None;
        for (i, c) in self.buf.char_indices() {
            if c == ' ' {
                if chars > self.rules.max_chars {
                    // Hard cut: the last space that keeps the segment within `max_chars`,
                    // else this one (one very long word).
                    return Some(last_fit.unwrap_or(i));
                }
                last_fit = Some(i);
                match self.judge(i, chars, min, &depth) {
                    Cut::Yes => return Some(i),
                    Cut::Wait => return None,
                    Cut::No => {}
                }
            } else {
                depth.see(c);
            }
            chars += 1;
        }
        if chars > self.rules.max_chars {
            return last_fit;
        }
        None
    }

    /// Whether the space at byte `at` (after `chars` characters) is a cut point.
    fn judge(&self, at: usize, chars: usize, min: usize, depth: &Nesting) -> Cut {
        let before = &self.buf[..at];
        if depth.open() {
            return Cut::No;
        }
        let core = before.trim_end_matches(CLOSERS);
        let last = core.chars().last();
        if matches!(last, Some('.' | '!' | '?' | '…')) {
            let next = self.buf[at + 1..].chars().next();
            let Some(next) = next else {
                return Cut::Wait;
            };
            if last == Some('.') && is_abbreviation(last_word(core), next) {
                return Cut::No;
            }
            // A lower-case word after the stop means it was not the end of a sentence
            // ("approx. ten", "well… maybe").
            if next.is_lowercase() {
                return if chars >= min && last == Some('…') {
                    Cut::Yes
                } else {
                    Cut::No
                };
            }
            return Cut::Yes;
        }
        if chars < min {
            return Cut::No;
        }
        if matches!(last, Some(',' | ';' | ':')) && core.len() == before.len() {
            return Cut::Yes;
        }
        if before.ends_with(" —") || before.ends_with(" –") {
            return Cut::Yes;
        }
        Cut::No
    }
}

/// The last whitespace-separated word of `text`, without opening brackets or quotes.
fn last_word(text: &str) -> &str {
    let word = text.rsplit(' ').next().unwrap_or(text);
    word.trim_start_matches(OPENERS)
}

/// Whether `word` (ending with `.`) is an abbreviation, given the first character after it.
fn is_abbreviation(word: &str, next: char) -> bool {
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    // "No. 5" is a number sign; "No. I can't." is an answer.
    if lower == "no." {
        return next.is_ascii_digit();
    }
    // A single initial: "J. Smith".
    let mut letters = word.chars();
    matches!(
        (letters.next(), letters.next(), letters.next()),
        (Some(c), Some('.'), None) if c.is_uppercase() && c != 'I'
    )
}

/// Open parentheses and quotations seen so far in the buffer.
#[derive(Debug, Default)]
struct Nesting {
    parens: u32,
    straight_quotes: u32,
    curly_quotes: i32,
}

impl Nesting {
    fn see(&mut self, c: char) {
        match c {
            '(' | '[' => self.parens += 1,
            ')' | ']' => self.parens = self.parens.saturating_sub(1),
            '"' => self.straight_quotes += 1,
            '“' | '«' => self.curly_quotes += 1,
            '”' | '»' => self.curly_quotes -= 1,
            _ => {}
        }
    }

    fn open(&self) -> bool {
        self.parens > 0 || self.straight_quotes % 2 == 1 || self.curly_quotes > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(rules: ClauseRules, deltas: &[&str]) -> Vec<String> {
        let mut s = ClauseSplitter::new(rules);
        let mut out = Vec::new();
        for d in deltas {
            s.push(d, &mut out);
        }
        out.extend(s.finish());
        out
    }

    fn split(text: &str) -> Vec<String> {
        split_all(ClauseRules::default(), &[text])
    }

    #[test]
    fn cuts_after_sentences() {
        assert_eq!(
            split("Yes, we do. We open at nine! Anything else? Fine"),
            ["Yes, we do.", "We open at nine!", "Anything else?", "Fine"]
        );
    }

    #[test]
    fn first_clause_starts_speech_early() {
        // The first segment may end at a comma after 12 characters; later ones need 40.
        let out = split(
            "Certainly sir, I can help, let me see, one moment please, I am looking it up now.",
        );
        assert_eq!(out[0], "Certainly sir,");
        assert_eq!(out[1], "I can help, let me see, one moment please,");
        assert_eq!(out[2], "I am looking it up now.");
    }

    #[test]
    fn short_clause_is_not_cut() {
        assert_eq!(split("Hi, there. Ok"), ["Hi, there.", "Ok"]);
    }

    #[test]
    fn never_inside_numbers() {
        let out = split("It costs 3.5 dollars, about 1,000 rupees, at 8:30 sharp today.");
        assert_eq!(
            out.join(" "),
            "It costs 3.5 dollars, about 1,000 rupees, at 8:30 sharp today."
        );
        for seg in &out {
            assert!(!seg.ends_with("3.") && !seg.ends_with("1,") && !seg.ends_with("8:"));
        }
    }

    #[test]
    fn not_after_abbreviations() {
        assert_eq!(
            split(
                "Dr. Smith sees you at 9 a.m. Monday. Mrs. Jones e.g. too. Ask for No. 5 please."
            ),
            [
                "Dr. Smith sees you at 9 a.m. Monday.",
                "Mrs. Jones e.g. too.",
                "Ask for No. 5 please."
            ]
        );
        assert_eq!(split("No. I cannot."), ["No.", "I cannot."]);
        assert_eq!(split("Call J. Smith now."), ["Call J. Smith now."]);
    }

    #[test]
    fn lower_case_after_a_stop_is_not_a_sentence() {
        assert_eq!(
            split("It takes approx. ten minutes."),
            ["It takes approx. ten minutes."]
        );
    }

    #[test]
    fn dash_is_a_clause_end() {
        let out = split("Your order shipped yesterday — it should arrive by Friday.");
        assert_eq!(
            out,
            [
                "Your order shipped yesterday —",
                "it should arrive by Friday."
            ]
        );
    }

    #[test]
    fn avoids_open_parentheses_and_quotes() {
        let out =
            split("He said (see the note. It is long.) that we close. Then \"Stop. Now.\" ok.");
        assert_eq!(
            out,
            [
                "He said (see the note. It is long.) that we close.",
                "Then \"Stop. Now.\" ok."
            ]
        );
    }

    #[test]
    fn waits_for_the_character_after_a_stop() {
        let mut s = ClauseSplitter::new(ClauseRules::default());
        let mut out = Vec::new();
        s.push("Hello.", &mut out);
        assert!(out.is_empty());
        s.push(" ", &mut out);
        assert!(out.is_empty(), "the next word decides");
        s.push("How", &mut out);
        assert_eq!(out, ["Hello."]);
        s.push(" are you?", &mut out);
        assert_eq!(s.finish().as_deref(), Some("How are you?"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn hard_cut_at_max_chars() {
        let rules = ClauseRules {
            first_min_chars: 12,
            min_chars: 20,
            max_chars: 30,
        };
        let text = "one two three four five six seven eight nine ten eleven twelve";
        let out = split_all(rules, &[text]);
        assert!(out.iter().all(|s| s.chars().count() <= 30), "{out:?}");
        assert_eq!(out.join(" "), text);
        // One very long word: cut at the first space after it.
        let long = format!("{} end", "x".repeat(40));
        let out = split_all(rules, &[&long]);
        assert_eq!(out, [&"x".repeat(40), "end"]);
    }

    #[test]
    fn whitespace_is_collapsed_and_segments_never_empty() {
        let out = split_all(
            ClauseRules::default(),
            &["  Hi.  ", "\n\n", "  Yes .  Ok!   "],
        );
        assert_eq!(out, ["Hi.", "Yes .", "Ok!"]);
        assert!(split_all(ClauseRules::default(), &["   ", "\t"]).is_empty());
    }

    #[test]
    fn reset_forgets_buffered_text() {
        let mut s = ClauseSplitter::new(ClauseRules::default());
        let mut out = Vec::new();
        s.push("Certainly sir, half a sentence", &mut out);
        assert_eq!(out, ["Certainly sir,"]);
        s.reset();
        assert_eq!(s.finish(), None);
        s.push("Once again now, and more", &mut out);
        assert_eq!(out, ["Certainly sir,", "Once again now,"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn segments_rejoin_to_the_input(
            text in "[a-zA-Z0-9 .,;:!?…—–()\"'\\n]{0,400}",
            cuts in proptest::collection::vec(0usize..400, 0..20),
            first in 1usize..30, min in 1usize..60, max in 1usize..120,
        ) {
            let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len() && text.is_char_boundary(c)).collect();
            bounds.push(0);
            bounds.push(text.len());
            bounds.sort_unstable();
            bounds.dedup();
            let deltas: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            let rules = ClauseRules { first_min_chars: first, min_chars: min, max_chars: max };
            let out = split_all(rules, &deltas);
            for seg in &out {
                prop_assert!(!seg.is_empty());
                prop_assert_eq!(seg.trim(), seg.as_str());
            }
            let expected: Vec<&str> = text.split_whitespace().collect();
            prop_assert_eq!(out.join(" "), expected.join(" "));
        }
    }
}
