//! Matching a caller's input against a node's transitions: the words of a transcript against
//! quoted phrases and spoken digits, and DTMF keys, one at a time, against bare keys.
//!
//! Pure: no I/O and no clocks. The DTMF [`DtmfEntry`] says when to wait for another key; the
//! interpreter runs the `@digit_timeout` timer and calls [`DtmfEntry::timeout`] when it fires.
//! Rules (docs/script.md, "How a call runs"): transitions are tried in file order, the first
//! match wins, any key of a line matches, and `any` comes after every other transition.

use super::flow::{Key, Transition, Trigger};
use super::print::key_text;

/// The words every single-digit key also answers to, by digit.
const DIGIT_WORDS: [&[&str]; 10] = [
    &["zero", "oh"],
    &["one"],
    &["two"],
    &["three"],
    &["four"],
    &["five"],
    &["six"],
    &["seven"],
    &["eight"],
    &["nine"],
];

/// What matched: a key of a transition, or `any`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchedKey {
    /// A key of a `->` line.
    Key(Key),
    /// The node's `any` transition.
    Any,
}

impl MatchedKey {
    /// The key as written in a script: bare keys, a quoted phrase, or `any`.
    pub fn label(&self) -> String {
        match self {
            MatchedKey::Key(key) => key_text(key),
            MatchedKey::Any => "any".to_owned(),
        }
    }
}

/// The transition an input takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMatch {
    /// Index of the transition in the node's list.
    pub transition: usize,
    /// The key that matched.
    pub key: MatchedKey,
}

/// The words of `text`, normalized for matching: lower-cased; `'` (and its typographic forms)
/// kept inside words and trimmed at their ends; hyphens, dashes, slashes and `_` separate words;
/// every other punctuation mark or symbol is dropped.
pub fn words(text: &str) -> Vec<String> {
    fn finish(word: &mut String, out: &mut Vec<String>) {
        let trimmed = word.trim_matches('\'');
        if !trimmed.is_empty() {
            out.push(trimmed.to_owned());
        }
        word.clear();
    }
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase().filter(|l| l.is_alphanumeric()));
        } else if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{02BC}' | '`') {
            word.push('\'');
        } else if c.is_whitespace()
            || matches!(
                c,
                '-' | '_' | '/' | '\\' | '\u{2010}'..='\u{2015}' | '\u{2212}'
            )
        {
            finish(&mut word, &mut out);
        }
    }
    finish(&mut word, &mut out);
    out
}

/// Whether `text` holds at least one word.
pub fn has_words(text: &str) -> bool {
    !words(text).is_empty()
}

/// Whether `phrase` (already split into words) appears as consecutive words of `heard`.
fn contains_words(heard: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty()
        && heard.len() >= phrase.len()
        && heard.windows(phrase.len()).any(|w| w == phrase)
}

/// Whether a key matches the transcript's words.
fn key_heard(key: &Key, heard: &[String]) -> bool {
    match key {
        Key::Phrase(phrase) => contains_words(heard, &words(phrase)),
        Key::Digits(digits) => {
            let mut chars = digits.chars();
            let (Some(d), None) = (chars.next(), chars.next()) else {
                return false;
            };
            let Some(n) = d.to_digit(10) else {
                return false;
            };
            let spoken = DIGIT_WORDS[n as usize];
            heard
                .iter()
                .any(|w| w.as_str() == digits || spoken.contains(&w.as_str()))
        }
    }
}

/// The transition a caller's transcript takes, if any: phrases as whole consecutive words,
/// single-digit keys also as the digit or its word, `any` for any transcript with words.
pub fn match_transcript(transitions: &[Transition], transcript: &str) -> Option<InputMatch> {
    let heard = words(transcript);
    if heard.is_empty() {
        return None;
    }
    for (index, transition) in transitions.iter().enumerate() {
        if let Trigger::Keys { keys } = &transition.trigger
            && let Some(key) = keys.iter().find(|k| key_heard(k, &heard))
        {
            return Some(InputMatch {
                transition: index,
                key: MatchedKey::Key(key.clone()),
            });
        }
    }
    any_transition(transitions)
}

/// The node's `any` transition as a match.
fn any_transition(transitions: &[Transition]) -> Option<InputMatch> {
    transitions
        .iter()
        .position(|t| matches!(t.trigger, Trigger::Any))
        .map(|transition| InputMatch {
            transition,
            key: MatchedKey::Any,
        })
}

/// What a key press (or the digit timeout) did to the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfStep {
    /// The entry is complete and takes this transition.
    Match {
        /// The transition.
        found: InputMatch,
        /// The keys of the entry, as pressed.
        entry: String,
    },
    /// The entry starts a longer key: wait `@digit_timeout` for the next one.
    Wait,
    /// The entry is complete and matches nothing.
    NoMatch {
        /// The keys of the entry, as pressed.
        entry: String,
    },
}

/// The keys a caller is entering in one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DtmfEntry {
    keys: String,
}

impl DtmfEntry {
    /// An empty entry.
    pub fn new() -> Self {
        DtmfEntry::default()
    }

    /// The keys collected so far (empty between entries).
    pub fn pending(&self) -> &str {
        &self.keys
    }

    /// Forgets a partial entry.
    pub fn clear(&mut self) {
        self.keys.clear();
    }

    /// Adds one key press (`0`–`9`, `*`, `#`, `A`–`D`; letters in either case). An entry that
    /// equals a key with no longer key starting with it matches at once; one that starts a
    /// longer key waits; `#` that can be part of no key ends the entry early; anything else
    /// completes the entry as `any` or as a no-match.
    pub fn press(&mut self, key: char, transitions: &[Transition]) -> DtmfStep {
        let key = key.to_ascii_uppercase();
        let mut candidate = self.keys.clone();
        candidate.push(key);
        let longer = digit_keys(transitions).any(|(_, k)| {
            k.len() > candidate.len() && k.to_ascii_uppercase().starts_with(candidate.as_str())
        });
        if longer {
            self.keys = candidate;
            return DtmfStep::Wait;
        }
        self.keys.clear();
        if let Some(found) = exact(transitions, &candidate) {
            return DtmfStep::Match {
                found,
                entry: candidate,
            };
        }
        if key == '#' {
            let typed = &candidate[..candidate.len() - 1];
            if !typed.is_empty()
                && let Some(found) = exact(transitions, typed)
            {
                return DtmfStep::Match {
                    found,
                    entry: candidate,
                };
            }
        }
        complete(transitions, candidate)
    }

    /// The digit timeout ran out: the entry so far is complete. `None` when nothing is pending.
    pub fn timeout(&mut self, transitions: &[Transition]) -> Option<DtmfStep> {
        if self.keys.is_empty() {
            return None;
        }
        let entry = std::mem::take(&mut self.keys);
        if let Some(found) = exact(transitions, &entry) {
            return Some(DtmfStep::Match { found, entry });
        }
        Some(complete(transitions, entry))
    }
}

/// A complete entry that equals no key: `any`, or a no-match.
fn complete(transitions: &[Transition], entry: String) -> DtmfStep {
    match any_transition(transitions) {
        Some(found) => DtmfStep::Match { found, entry },
        None => DtmfStep::NoMatch { entry },
    }
}

/// The bare keys of the node, with their transition's index, in file order.
fn digit_keys(transitions: &[Transition]) -> impl Iterator<Item = (usize, &str)> {
    transitions
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match &t.trigger {
            Trigger::Keys { keys } => Some((i, keys)),
            _ => None,
        })
        .flat_map(|(i, keys)| {
            keys.iter().filter_map(move |k| match k {
                Key::Digits(d) => Some((i, d.as_str())),
                Key::Phrase(_) => None,
            })
        })
}

/// The first transition with a bare key equal to `entry`.
fn exact(transitions: &[Transition], entry: &str) -> Option<InputMatch> {
    digit_keys(transitions)
        .find(|(_, k)| k.eq_ignore_ascii_case(entry))
        .map(|(transition, k)| InputMatch {
            transition,
            key: MatchedKey::Key(Key::Digits(k.to_owned())),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::flow::Target;
    use proptest::prelude::*;

    fn to(name: &str) -> Target {
        Target::Node { name: name.into() }
    }

    fn keys(list: &[&str], target: &str) -> Transition {
        Transition {
            trigger: Trigger::Keys {
                keys: list
                    .iter()
                    .map(|k| match k.strip_prefix('"') {
                        Some(p) => Key::Phrase(p.trim_end_matches('"').to_owned()),
                        None => Key::Digits((*k).to_owned()),
                    })
                    .collect(),
            },
            target: to(target),
        }
    }

    fn other(trigger: Trigger, target: &str) -> Transition {
        Transition {
            trigger,
            target: to(target),
        }
    }

    fn heard(transitions: &[Transition], transcript: &str) -> Option<(usize, String)> {
        match_transcript(transitions, transcript).map(|m| (m.transition, m.key.label()))
    }

    fn menu() -> Vec<Transition> {
        vec![
            keys(
                &["1", "\"yes\"", "\"yeah\"", "\"i can\"", "\"confirm\""],
                "confirmed",
            ),
            keys(
                &["2", "\"no\"", "\"can't\"", "\"reschedule\""],
                "reschedule",
            ),
            keys(&["0", "\"person\"", "\"not right now\""], "operator"),
            other(Trigger::Timeout { after_ms: None }, "still_there"),
            other(Trigger::NoMatch, "goodbye"),
        ]
    }

    #[test]
    fn words_are_normalized() {
        assert_eq!(words("Not now, thanks."), ["not", "now", "thanks"]);
        assert_eq!(words("I CAN'T make it!"), ["i", "can't", "make", "it"]);
        assert_eq!(words("I can\u{2019}t"), ["i", "can't"]);
        assert_eq!(words("'yes' she said"), ["yes", "she", "said"]);
        assert_eq!(words("Uh-huh."), ["uh", "huh"]);
        assert_eq!(words("9:30 a.m."), ["930", "am"]);
        assert_eq!(words("  \t\n "), Vec::<String>::new());
        assert_eq!(words("... ?!"), Vec::<String>::new());
        assert_eq!(words("Ça va — très bien"), ["ça", "va", "très", "bien"]);
        assert_eq!(words("and/or"), ["and", "or"]);
        assert!(has_words("Yes."));
        assert!(!has_words(" , . "));
    }

    #[test]
    fn phrases_match_whole_consecutive_words() {
        let t = menu();
        assert_eq!(heard(&t, "Yes."), Some((0, "\"yes\"".into())));
        assert_eq!(heard(&t, "Yeah, I think so"), Some((0, "\"yeah\"".into())));
        assert_eq!(heard(&t, "I can"), Some((0, "\"i can\"".into())));
        assert_eq!(heard(&t, "No."), Some((1, "\"no\"".into())));
        assert_eq!(heard(&t, "I can't, sorry"), Some((1, "\"can't\"".into())));
        // "no" is a word, not a part of one.
        assert_eq!(heard(&t, "I know"), None);
        assert_eq!(heard(&t, "Nobody told me"), None);
        assert_eq!(
            heard(&t, "Not right now, thanks."),
            Some((2, "\"not right now\"".into()))
        );
        // The words must be consecutive.
        assert_eq!(heard(&t, "not now right"), None);
        assert_eq!(heard(&t, ""), None);
        assert_eq!(heard(&t, "..."), None);
    }

    #[test]
    fn file_order_decides_and_any_line_key_matches() {
        // "yes" and "no" both appear: the earlier transition wins, not the earlier word.
        let t = menu();
        assert_eq!(heard(&t, "no wait, yes"), Some((0, "\"yes\"".into())));
        let reversed = vec![keys(&["\"no\""], "b"), keys(&["\"yes\""], "a")];
        assert_eq!(heard(&reversed, "yes, no"), Some((0, "\"no\"".into())));
    }

    #[test]
    fn single_digit_keys_match_spoken_digits() {
        let t = menu();
        assert_eq!(heard(&t, "One."), Some((0, "1".into())));
        assert_eq!(heard(&t, "1"), Some((0, "1".into())));
        assert_eq!(heard(&t, "press 2 please"), Some((1, "2".into())));
        assert_eq!(heard(&t, "Two"), Some((1, "2".into())));
        assert_eq!(heard(&t, "zero"), Some((2, "0".into())));
        assert_eq!(heard(&t, "Oh."), Some((2, "0".into())));
        assert_eq!(heard(&t, "0"), Some((2, "0".into())));
        // Not inside a longer number or word.
        assert_eq!(heard(&t, "10"), None);
        assert_eq!(heard(&t, "someone"), None);
        // Every digit word.
        for (d, spoken) in DIGIT_WORDS.iter().enumerate() {
            let t = vec![keys(&[&d.to_string()], "x")];
            for word in *spoken {
                assert_eq!(heard(&t, word), Some((0, d.to_string())), "{word}");
            }
            assert_eq!(heard(&t, &d.to_string()), Some((0, d.to_string())));
        }
        // Multi-key entries and symbols are keys only.
        let t = vec![keys(&["42", "*", "#", "A"], "x")];
        assert_eq!(heard(&t, "42"), None);
        assert_eq!(heard(&t, "forty two star pound a"), None);
    }

    #[test]
    fn any_comes_after_the_other_transitions() {
        let t = vec![
            other(Trigger::Any, "anything"),
            keys(&["\"help\""], "help"),
            other(Trigger::NoMatch, "bye"),
        ];
        assert_eq!(heard(&t, "help me"), Some((1, "\"help\"".into())));
        assert_eq!(heard(&t, "what?"), Some((0, "any".into())));
        assert_eq!(heard(&t, " . "), None, "no words is not input");
    }

    #[test]
    fn nodes_without_input_transitions_match_nothing() {
        let t = vec![
            other(Trigger::Always, "next"),
            other(
                Trigger::Timeout {
                    after_ms: Some(1000),
                },
                "t",
            ),
            other(Trigger::NoMatch, "n"),
        ];
        assert_eq!(heard(&t, "yes one two"), None);
        let mut entry = DtmfEntry::new();
        assert_eq!(
            entry.press('1', &t),
            DtmfStep::NoMatch { entry: "1".into() }
        );
    }

    /// Presses `keys` in turn; returns each step.
    fn presses(transitions: &[Transition], keys: &str) -> Vec<DtmfStep> {
        let mut entry = DtmfEntry::new();
        keys.chars().map(|k| entry.press(k, transitions)).collect()
    }

    fn matched(transition: usize, key: &str, entry: &str) -> DtmfStep {
        DtmfStep::Match {
            found: InputMatch {
                transition,
                key: MatchedKey::Key(Key::Digits(key.into())),
            },
            entry: entry.into(),
        }
    }

    #[test]
    fn a_single_key_matches_at_once() {
        let t = menu();
        assert_eq!(presses(&t, "2"), vec![matched(1, "2", "2")]);
        assert_eq!(presses(&t, "0"), vec![matched(2, "0", "0")]);
        assert_eq!(
            presses(&t, "7"),
            vec![DtmfStep::NoMatch { entry: "7".into() }]
        );
        // Each completed entry starts a fresh one.
        assert_eq!(
            presses(&t, "71"),
            vec![
                DtmfStep::NoMatch { entry: "7".into() },
                matched(0, "1", "1")
            ]
        );
    }

    #[test]
    fn a_prefix_of_a_longer_key_waits() {
        let t = vec![
            keys(&["4"], "four"),
            keys(&["42"], "forty_two"),
            keys(&["421#"], "long"),
            keys(&["*9"], "star"),
        ];
        assert_eq!(presses(&t, "42"), vec![DtmfStep::Wait, DtmfStep::Wait]);
        assert_eq!(
            presses(&t, "421#"),
            vec![
                DtmfStep::Wait,
                DtmfStep::Wait,
                DtmfStep::Wait,
                matched(2, "421#", "421#")
            ]
        );
        assert_eq!(
            presses(&t, "*9"),
            vec![DtmfStep::Wait, matched(3, "*9", "*9")]
        );
        // Timeout: the exact key, else a no-match.
        let mut entry = DtmfEntry::new();
        assert_eq!(entry.press('4', &t), DtmfStep::Wait);
        assert_eq!(entry.pending(), "4");
        assert_eq!(entry.timeout(&t), Some(matched(0, "4", "4")));
        assert_eq!(entry.timeout(&t), None, "nothing pending any more");
        assert_eq!(entry.press('4', &t), DtmfStep::Wait);
        assert_eq!(entry.press('2', &t), DtmfStep::Wait);
        assert_eq!(entry.timeout(&t), Some(matched(1, "42", "42")));
        assert_eq!(entry.press('*', &t), DtmfStep::Wait);
        assert_eq!(
            entry.timeout(&t),
            Some(DtmfStep::NoMatch { entry: "*".into() })
        );
        // A key that leaves every longer key: no-match at once.
        assert_eq!(
            presses(&t, "45"),
            vec![DtmfStep::Wait, DtmfStep::NoMatch { entry: "45".into() }]
        );
        let mut entry = DtmfEntry::new();
        entry.press('4', &t);
        entry.clear();
        assert_eq!(entry.pending(), "");
    }

    #[test]
    fn hash_ends_an_entry_early() {
        let t = vec![keys(&["4"], "four"), keys(&["42"], "forty_two")];
        assert_eq!(
            presses(&t, "4#"),
            vec![DtmfStep::Wait, matched(0, "4", "4#")]
        );
        assert_eq!(
            presses(&t, "#"),
            vec![DtmfStep::NoMatch { entry: "#".into() }]
        );
        let t = vec![keys(&["12"], "a"), keys(&["123"], "b")];
        assert_eq!(
            presses(&t, "1#"),
            vec![DtmfStep::Wait, DtmfStep::NoMatch { entry: "1#".into() }]
        );
        assert_eq!(
            presses(&t, "12#"),
            vec![DtmfStep::Wait, DtmfStep::Wait, matched(0, "12", "12#")]
        );
        // A key that ends in `#` takes it as part of the key.
        let t = vec![keys(&["4"], "four"), keys(&["4#"], "four_hash")];
        assert_eq!(
            presses(&t, "4#"),
            vec![DtmfStep::Wait, matched(1, "4#", "4#")]
        );
        let t = vec![keys(&["#"], "hash")];
        assert_eq!(presses(&t, "#"), vec![matched(0, "#", "#")]);
    }

    #[test]
    fn letters_and_any() {
        let t = vec![
            keys(&["A"], "a"),
            keys(&["12"], "twelve"),
            other(Trigger::Any, "anything"),
        ];
        assert_eq!(presses(&t, "a"), vec![matched(0, "A", "A")]);
        let any = |entry: &str| DtmfStep::Match {
            found: InputMatch {
                transition: 2,
                key: MatchedKey::Any,
            },
            entry: entry.into(),
        };
        assert_eq!(presses(&t, "5"), vec![any("5")]);
        assert_eq!(presses(&t, "13"), vec![DtmfStep::Wait, any("13")]);
        assert_eq!(presses(&t, "#"), vec![any("#")]);
        let mut entry = DtmfEntry::new();
        entry.press('1', &t);
        assert_eq!(entry.timeout(&t), Some(any("1")));
    }

    #[test]
    fn labels() {
        assert_eq!(MatchedKey::Key(Key::Digits("42#".into())).label(), "42#");
        assert_eq!(
            MatchedKey::Key(Key::Phrase("say \"hi\"".into())).label(),
            "\"say \\\"hi\\\"\""
        );
        assert_eq!(MatchedKey::Any.label(), "any");
    }

    fn arb_key() -> impl Strategy<Value = Key> {
        prop_oneof![
            "[0-9*#A-D]{1,4}".prop_map(Key::Digits),
            "[a-z' ]{1,12}".prop_map(Key::Phrase),
        ]
    }

    fn arb_transitions() -> impl Strategy<Value = Vec<Transition>> {
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::collection::vec(arb_key(), 1..4).prop_map(|keys| Transition {
                    trigger: Trigger::Keys { keys },
                    target: to("x"),
                }),
                1 => Just(other(Trigger::Any, "any")),
                1 => Just(other(Trigger::NoMatch, "n")),
            ],
            0..6,
        )
    }

    proptest! {
        #[test]
        fn words_never_panic_and_are_clean(text in "\\PC{0,80}") {
            for word in words(&text) {
                prop_assert!(!word.is_empty());
                prop_assert!(!word.starts_with('\'') && !word.ends_with('\''));
                prop_assert!(word.chars().all(|c| c.is_alphanumeric() || c == '\''));
                prop_assert_eq!(words(&word), vec![word.clone()]);
            }
        }

        #[test]
        fn a_phrase_is_found_in_any_surrounding(
            before in proptest::collection::vec("[a-z]{1,8}", 0..5),
            phrase in proptest::collection::vec("[a-z]{1,8}", 1..4),
            after in proptest::collection::vec("[a-z]{1,8}", 0..5),
            upper in any::<bool>(),
        ) {
            let spoken = phrase.join(" ");
            let spoken = if upper { spoken.to_uppercase() } else { spoken };
            let transcript = format!("{}, {}! {}.", before.join(" "), spoken, after.join(" "));
            let t = vec![keys(&[&format!("\"{}\"", phrase.join(" "))], "x")];
            prop_assert_eq!(match_transcript(&t, &transcript).map(|m| m.transition), Some(0));
        }

        #[test]
        fn transcripts_match_the_first_fitting_transition(
            transitions in arb_transitions(),
            transcript in "[a-z0-9 ,.']{0,40}",
        ) {
            let heard = words(&transcript);
            match match_transcript(&transitions, &transcript) {
                Some(m) => {
                    prop_assert!(!heard.is_empty());
                    match &m.key {
                        MatchedKey::Any => {
                            prop_assert!(matches!(transitions[m.transition].trigger, Trigger::Any));
                            for t in &transitions {
                                if let Trigger::Keys { keys } = &t.trigger {
                                    prop_assert!(!keys.iter().any(|k| key_heard(k, &heard)));
                                }
                            }
                        }
                        MatchedKey::Key(key) => {
                            prop_assert!(key_heard(key, &heard));
                            for t in &transitions[..m.transition] {
                                if let Trigger::Keys { keys } = &t.trigger {
                                    prop_assert!(!keys.iter().any(|k| key_heard(k, &heard)));
                                }
                            }
                        }
                    }
                }
                None => {
                    let any = transitions.iter().any(|t| matches!(t.trigger, Trigger::Any));
                    prop_assert!(heard.is_empty() || !any);
                }
            }
        }

        #[test]
        fn dtmf_entries_are_consistent(
            transitions in arb_transitions(),
            presses in "[0-9*#A-Da-d]{0,12}",
        ) {
            let mut entry = DtmfEntry::new();
            let any = transitions.iter().position(|t| matches!(t.trigger, Trigger::Any));
            let keys: Vec<(usize, String)> =
                digit_keys(&transitions).map(|(i, k)| (i, k.to_owned())).collect();
            for key in presses.chars() {
                let before = entry.pending().to_owned();
                let typed = format!("{before}{}", key.to_ascii_uppercase());
                match entry.press(key, &transitions) {
                    DtmfStep::Wait => {
                        prop_assert_eq!(entry.pending(), typed.as_str());
                        prop_assert!(keys.iter().any(|(_, k)| k.len() > typed.len() && k.starts_with(&typed)));
                    }
                    DtmfStep::Match { found, entry: done } => {
                        prop_assert_eq!(&done, &typed);
                        prop_assert_eq!(entry.pending(), "");
                        match found.key {
                            MatchedKey::Any => prop_assert_eq!(Some(found.transition), any),
                            MatchedKey::Key(Key::Digits(k)) => {
                                prop_assert!(k == typed || (typed.ends_with('#') && k == typed[..typed.len() - 1]));
                                let first = keys.iter().find(|(_, c)| *c == k).map(|(i, _)| *i);
                                prop_assert_eq!(first, Some(found.transition));
                            }
                            MatchedKey::Key(Key::Phrase(_)) => prop_assert!(false, "a phrase from keys"),
                        }
                    }
                    DtmfStep::NoMatch { entry: done } => {
                        prop_assert_eq!(&done, &typed);
                        prop_assert_eq!(entry.pending(), "");
                        prop_assert!(any.is_none());
                        prop_assert!(!keys.iter().any(|(_, k)| *k == typed));
                    }
                }
            }
            if let Some(step) = entry.timeout(&transitions) {
                prop_assert!(!matches!(step, DtmfStep::Wait));
            }
            prop_assert_eq!(entry.pending(), "");
        }
    }
}
