//! TwiML documents the gateway hands Twilio when it redirects a live call
//! (`specs/telephony.md` §2.3). Every text and attribute value is XML-escaped, so no input can
//! change the document's structure.

/// Longest inline TwiML Twilio takes in a `Twiml` parameter (characters).
pub const MAX_TWIML_CHARS: usize = 4000;

/// Escapes `text` for use in XML character data or a double- or single-quoted attribute value.
/// Characters XML 1.0 does not allow at all (C0 controls other than tab, newline and carriage
/// return; U+FFFE, U+FFFF) cannot be escaped and are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// `<Response><Dial>number</Dial></Response>`: connects the caller to `number`; with
/// `caller_id`, the dialled party sees that number (Twilio's default is the caller's own).
/// When the dialled leg ends there is no more TwiML, so the call ends.
pub fn dial(number: &str, caller_id: Option<&str>) -> String {
    let attributes = caller_id
        .map(|id| format!(" callerId=\"{}\"", escape(id)))
        .unwrap_or_default();
    format!(
        "<Response><Dial{attributes}>{}</Dial></Response>",
        escape(number)
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_dial_is_a_bare_number_in_a_response() {
        assert_eq!(
            dial("+14155550123", None),
            "<Response><Dial>+14155550123</Dial></Response>"
        );
        assert_eq!(
            dial("+14155550123", Some("+18005551212")),
            "<Response><Dial callerId=\"+18005551212\">+14155550123</Dial></Response>"
        );
    }

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape(r#"<Hangup/>&"'x"#),
            "&lt;Hangup/&gt;&amp;&quot;&apos;x"
        );
        assert_eq!(
            dial(
                "</Dial><Redirect>http://evil</Redirect><Dial>",
                Some("\" x=\"")
            ),
            "<Response><Dial callerId=\"&quot; x=&quot;\">&lt;/Dial&gt;&lt;Redirect&gt;\
             http://evil&lt;/Redirect&gt;&lt;Dial&gt;</Dial></Response>"
        );
    }

    #[test]
    fn characters_xml_forbids_are_dropped() {
        assert_eq!(escape("a\u{0}b\u{1b}c\u{FFFF}d"), "abcd");
        assert_eq!(escape("a\tb\nc\rd é ☎"), "a\tb\nc\rd é ☎");
    }

    proptest! {
        /// Whatever the input, the escaped text has no markup characters and no bare `&`, and
        /// unescaping gives back the input minus the dropped characters.
        #[test]
        fn escaping_is_reversible_and_inert(text in any::<String>()) {
            let escaped = escape(&text);
            prop_assert!(!escaped.contains(['<', '>', '"', '\'']));
            let mut rest = escaped.as_str();
            while let Some(at) = rest.find('&') {
                rest = &rest[at..];
                prop_assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| rest.starts_with(e)),
                    "bare & in {escaped:?}"
                );
                rest = &rest[1..];
            }
            let unescaped = escaped
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&");
            let kept: String = text
                .chars()
                .filter(|c| {
                    matches!(c, '\t' | '\n' | '\r')
                        || ((*c as u32) >= 0x20 && *c != '\u{FFFE}' && *c != '\u{FFFF}')
                })
                .collect();
            prop_assert_eq!(unescaped, kept);
        }
    }
}
