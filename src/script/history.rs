//! The conversation of a scripted call as the language model will see it: the prompts as the
//! caller heard them (cut where the caller interrupted), the caller's words, and the keys the
//! caller pressed. It is what an agent node or an `agent` target starts from, and what comes
//! back from an agent node that routes the call on.

use crate::llm::ChatMessage;

/// The script's conversation so far (no system prompt).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    messages: Vec<ChatMessage>,
}

impl History {
    /// An empty conversation.
    pub fn new() -> Self {
        History::default()
    }

    /// The messages, oldest first.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// The bot started saying `text`; returns where it sits, for [`History::cut`].
    pub fn said(&mut self, text: &str) -> usize {
        self.messages.push(ChatMessage::Assistant {
            content: Some(text.to_owned()),
            tool_calls: Vec::new(),
        });
        self.messages.len() - 1
    }

    /// The bot's text at `at` was cut off after the caller heard `heard` (nothing: the whole
    /// message goes).
    pub fn cut(&mut self, at: usize, heard: Option<&str>) {
        let Some(ChatMessage::Assistant { content, .. }) = self.messages.get_mut(at) else {
            return;
        };
        match heard.map(str::trim).filter(|h| !h.is_empty()) {
            Some(heard) => {
                let whole = content.as_deref().map(str::trim) == Some(heard);
                if !whole {
                    *content = Some(format!("{heard}…"));
                }
            }
            None => {
                self.messages.remove(at);
            }
        }
    }

    /// The caller said `transcript`.
    pub fn caller_said(&mut self, transcript: &str) {
        self.messages.push(ChatMessage::User {
            content: transcript.trim().to_owned(),
        });
    }

    /// The caller pressed the keys of `entry`.
    pub fn caller_pressed(&mut self, entry: &str) {
        self.messages.push(ChatMessage::User {
            content: format!("(pressed {entry})"),
        });
    }

    /// Takes back the conversation from a model that ran part of the call: its user and
    /// assistant text, without the system prompt, tool calls and tool results.
    pub fn take_back(&mut self, model_history: &[ChatMessage]) {
        self.messages = model_history
            .iter()
            .filter_map(|m| match m {
                ChatMessage::User { content } => Some(ChatMessage::User {
                    content: content.clone(),
                }),
                ChatMessage::Assistant {
                    content: Some(text),
                    ..
                } if !text.trim().is_empty() => Some(ChatMessage::Assistant {
                    content: Some(text.clone()),
                    tool_calls: Vec::new(),
                }),
                _ => None,
            })
            .collect();
    }
}

/// The words of `text` a caller heard in `heard_ms` of its `total_ms` (estimated by length,
/// whole words only; empty when none was heard in full).
pub fn heard_part(text: &str, heard_ms: u64, total_ms: u64) -> String {
    if total_ms == 0 || heard_ms >= total_ms {
        return text.trim().to_owned();
    }
    let total_chars = text.chars().count() as u64;
    let budget = (total_chars * heard_ms / total_ms) as usize;
    let mut end = 0;
    let mut chars = 0;
    for (at, c) in text.char_indices() {
        if chars >= budget {
            break;
        }
        chars += 1;
        if c.is_whitespace() {
            end = at;
        }
    }
    if chars == text.chars().count() {
        end = text.len();
    }
    text[..end].trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;
    use proptest::prelude::*;

    fn contents(h: &History) -> Vec<(String, String)> {
        h.messages()
            .iter()
            .map(|m| match m {
                ChatMessage::User { content } => ("user".into(), content.clone()),
                ChatMessage::Assistant { content, .. } => {
                    ("assistant".into(), content.clone().unwrap_or_default())
                }
                ChatMessage::System { content } => ("system".into(), content.clone()),
                ChatMessage::Tool { content, .. } => ("tool".into(), content.clone()),
            })
            .collect()
    }

    #[test]
    fn prompts_keys_and_words_in_order_cut_to_what_was_heard() {
        let mut h = History::new();
        let a = h.said("Press 1 to confirm or 2 to reschedule.");
        h.caller_pressed("2");
        let b = h.said("When would suit you better?");
        h.cut(b, Some("When would"));
        h.caller_said("  Thursday morning ");
        let c = h.said("Noted.");
        h.cut(c, Some("Noted."));
        assert_eq!(a, 0);
        assert_eq!(
            contents(&h),
            vec![
                (
                    "assistant".into(),
                    "Press 1 to confirm or 2 to reschedule.".into()
                ),
                ("user".into(), "(pressed 2)".into()),
                ("assistant".into(), "When would…".into()),
                ("user".into(), "Thursday morning".into()),
                ("assistant".into(), "Noted.".into()),
            ]
        );
        // Nothing heard: the prompt goes.
        let d = h.said("Anything else?");
        h.cut(d, Some("  "));
        assert_eq!(h.messages().len(), 5);
        let e = h.said("Anything else?");
        h.cut(e, None);
        h.cut(99, None);
        h.cut(1, Some("not an assistant message"));
        assert_eq!(h.messages().len(), 5);
    }

    #[test]
    fn taking_back_keeps_only_what_was_said() {
        let mut h = History::new();
        h.said("old");
        h.take_back(&[
            ChatMessage::System {
                content: "rules".into(),
            },
            ChatMessage::Assistant {
                content: Some("Hi".into()),
                tool_calls: vec![],
            },
            ChatMessage::User {
                content: "Where do I park?".into(),
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "lookup_knowledge".into(),
                    arguments: "{}".into(),
                }],
            },
            ChatMessage::Tool {
                tool_call_id: "c1".into(),
                content: "{}".into(),
            },
            ChatMessage::Assistant {
                content: Some("Behind the building.".into()),
                tool_calls: vec![],
            },
            ChatMessage::Assistant {
                content: Some(" ".into()),
                tool_calls: vec![],
            },
        ]);
        assert_eq!(
            contents(&h),
            vec![
                ("assistant".into(), "Hi".into()),
                ("user".into(), "Where do I park?".into()),
                ("assistant".into(), "Behind the building.".into()),
            ]
        );
    }

    #[test]
    fn heard_part_keeps_whole_words_by_time() {
        let text = "Press one to confirm your visit";
        assert_eq!(heard_part(text, 0, 3000), "");
        assert_eq!(heard_part(text, 3000, 3000), text);
        assert_eq!(heard_part(text, 9000, 3000), text);
        assert_eq!(heard_part(text, 1, 0), text);
        assert_eq!(heard_part(text, 1500, 3000), "Press one to");
        assert_eq!(heard_part(text, 2990, 3000), "Press one to confirm your");
        assert_eq!(heard_part("Wait", 2000, 3000), "");
        assert_eq!(heard_part("ça va très bien", 1000, 1500), "ça va");
    }

    proptest! {
        #[test]
        fn heard_part_is_a_prefix(text in "\\PC{0,60}", heard in 0u64..5000, total in 0u64..5000) {
            let part = heard_part(&text, heard, total);
            prop_assert!(text.trim().starts_with(&part) || text.starts_with(&part));
            prop_assert!(part.len() <= text.len());
        }
    }
}
