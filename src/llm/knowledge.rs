//! A small in-memory knowledge base for the `lookup_knowledge` tool.
//!
//! Entries come from configuration (opening hours prose, prices, parking, policies …). Search is
//! BM25 over three fields — title and keywords weigh more than the text — after lower-casing,
//! splitting on anything that is not a letter or digit, dropping English stop words and a light
//! plural stemming, which is plenty for a few hundred entries and a spoken question.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One entry the model can look up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeEntry {
    /// Short title ("Parking").
    pub title: String,
    /// The facts, as the model should relay them.
    pub text: String,
    /// Extra search words (synonyms the caller may use).
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// BM25 term-frequency saturation.
const K1: f64 = 1.2;
/// BM25 length normalization.
const B: f64 = 0.75;
/// Weight of a title term.
const TITLE_WEIGHT: f64 = 3.0;
/// Weight of a keyword term.
const KEYWORD_WEIGHT: f64 = 2.5;
/// Weight of a text term.
const TEXT_WEIGHT: f64 = 1.0;

/// Words too common to say anything about the question.
const STOP_WORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "did", "do", "does", "for", "from", "get", "got", "had", "has", "have", "hello", "hi",
    "how", "i", "if", "in", "into", "is", "it", "its", "just", "know", "like", "me", "my", "need",
    "of", "on", "or", "our", "please", "so", "tell", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "to", "up", "us", "want", "was", "we", "were",
    "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
];

/// Search terms of `text`: lower case, letters and digits only, no stop words, plurals folded.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(stem)
        .collect()
}

/// Folds simple English plurals ("hours" → "hour", "policies" → "policy").
fn stem(word: String) -> String {
    let n = word.chars().count();
    if n > 4 && word.ends_with("ies") {
        format!("{}y", &word[..word.len() - 3])
    } else if n > 3 && word.ends_with('s') && !word.ends_with("ss") && !word.ends_with("us") {
        word[..word.len() - 1].to_string()
    } else {
        word
    }
}

/// An entry's weighted term frequencies and weighted length.
#[derive(Debug, Clone)]
struct Indexed {
    terms: HashMap<String, f64>,
    length: f64,
}

/// Entries indexed for search.
#[derive(Debug, Clone, Default)]
pub struct KnowledgeBase {
    entries: Vec<KnowledgeEntry>,
    index: Vec<Indexed>,
    /// How many entries contain each term.
    doc_freq: HashMap<String, usize>,
    avg_length: f64,
}

impl KnowledgeBase {
    /// Indexes `entries`.
    pub fn new(entries: Vec<KnowledgeEntry>) -> KnowledgeBase {
        let mut index = Vec::with_capacity(entries.len());
        let mut doc_freq: HashMap<String, usize> = HashMap::new();
        for entry in &entries {
            let mut terms: HashMap<String, f64> = HashMap::new();
            let mut length = 0.0;
            let fields = [
                (entry.title.as_str(), TITLE_WEIGHT),
                (&entry.text, TEXT_WEIGHT),
            ];
            let keywords = entry.keywords.join(" ");
            for (text, weight) in fields
                .into_iter()
                .chain([(keywords.as_str(), KEYWORD_WEIGHT)])
            {
                for term in tokenize(text) {
                    *terms.entry(term).or_default() += weight;
                    length += weight;
                }
            }
            for term in terms.keys() {
                *doc_freq.entry(term.clone()).or_default() += 1;
            }
            index.push(Indexed { terms, length });
        }
        let avg_length = if index.is_empty() {
            0.0
        } else {
            index.iter().map(|d| d.length).sum::<f64>() / index.len() as f64
        };
        KnowledgeBase {
            entries,
            index,
            doc_freq,
            avg_length,
        }
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The best `limit` entries for `query`, best first; entries sharing no term are left out.
    pub fn search(&self, query: &str, limit: usize) -> Vec<&KnowledgeEntry> {
        let mut terms = tokenize(query);
        terms.sort_unstable();
        terms.dedup();
        let n = self.entries.len() as f64;
        let mut scored: Vec<(f64, usize)> = self
            .index
            .iter()
            .enumerate()
            .filter_map(|(i, doc)| {
                let score: f64 = terms
                    .iter()
                    .filter_map(|t| {
                        let tf = *doc.terms.get(t)?;
                        let df = self.doc_freq.get(t).copied().unwrap_or(0) as f64;
                        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                        let norm = if self.avg_length > 0.0 {
                            1.0 - B + B * doc.length / self.avg_length
                        } else {
                            1.0
                        };
                        Some(idf * tf * (K1 + 1.0) / (tf + K1 * norm))
                    })
                    .sum();
                (score > 0.0).then_some((score, i))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .take(limit)
            .map(|(_, i)| &self.entries[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(title: &str, text: &str, keywords: &[&str]) -> KnowledgeEntry {
        KnowledgeEntry {
            title: title.into(),
            text: text.into(),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn base() -> KnowledgeBase {
        KnowledgeBase::new(vec![
            entry(
                "Parking",
                "Free parking is available behind the building on Mill Lane.",
                &["car", "park", "garage"],
            ),
            entry(
                "Prices",
                "A check-up costs 45 pounds; cleaning costs 60 pounds.",
                &["cost", "price", "fee", "how much"],
            ),
            entry(
                "Cancellation policy",
                "Cancel at least 24 hours ahead or a 20 pound fee applies.",
                &["cancel", "reschedule"],
            ),
            entry(
                "Address",
                "We are at 12 Mill Lane, Leeds. The building has step-free access.",
                &["where", "location", "directions"],
            ),
        ])
    }

    #[test]
    fn tokenizes_without_stop_words_and_plurals() {
        assert_eq!(
            tokenize("What are your opening HOURS, and the policies?"),
            ["opening", "hour", "policy"]
        );
        assert_eq!(tokenize("Is there a bus?"), ["bus"]);
        assert!(tokenize("  ...  ").is_empty());
    }

    #[test]
    fn finds_by_keyword_and_title() {
        let kb = base();
        assert_eq!(kb.search("where can I leave my car", 3)[0].title, "Parking");
        assert_eq!(kb.search("how much is a cleaning?", 3)[0].title, "Prices");
        assert_eq!(
            kb.search("I need to cancel", 3)[0].title,
            "Cancellation policy"
        );
    }

    #[test]
    fn title_outweighs_text() {
        // "parking" is in Parking's title and text; "Mill Lane" is in two texts.
        let kb = base();
        let hits = kb.search("parking on mill lane", 3);
        assert_eq!(hits[0].title, "Parking");
        assert_eq!(hits.len(), 2);
    }

    #[test]
    fn no_match_and_limits() {
        let kb = base();
        assert!(kb.search("do you sell pizza", 3).is_empty());
        assert!(kb.search("the of and", 3).is_empty());
        assert_eq!(kb.search("fee", 1).len(), 1);
        assert!(
            KnowledgeBase::new(Vec::new())
                .search("parking", 3)
                .is_empty()
        );
    }

    #[test]
    fn deserializes_with_default_keywords() {
        let e: KnowledgeEntry = serde_json::from_str(r#"{"title":"A","text":"B"}"#).unwrap();
        assert!(e.keywords.is_empty());
        assert!(
            serde_json::from_str::<KnowledgeEntry>(r#"{"title":"A","text":"B","x":1}"#).is_err()
        );
    }
}
