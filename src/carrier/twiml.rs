//! TwiML documents the gateway hands Twilio: the answer to a call's voice webhook (a
//! `<Connect><Stream>` to the gateway, §1.1, or a spoken apology) and the document a live call
//! is redirected to (`specs/telephony.md` §2.3). Every text and attribute value is XML-escaped, so no input can
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

/// `<Response><Connect><Stream url=…>` with one `<Parameter>` per pair, then `<Hangup/>`:
/// Twilio opens a bidirectional media stream to `stream_url` (a `wss://` URL without a query
/// string; the pairs arrive in `start.customParameters`), and when the gateway closes the
/// socket the call hangs up. With `status_callback`, Twilio POSTs the stream's lifecycle there.
pub fn connect_stream(
    stream_url: &str,
    parameters: &[(&str, &str)],
    status_callback: Option<&str>,
) -> String {
    let mut out = String::from("<Response><Connect><Stream url=\"");
    out.push_str(&escape(stream_url));
    out.push('"');
    if let Some(callback) = status_callback {
        out.push_str(" statusCallback=\"");
        out.push_str(&escape(callback));
        out.push('"');
    }
    if parameters.is_empty() {
        out.push_str("/>");
    } else {
        out.push('>');
        for (name, value) in parameters {
            out.push_str("<Parameter name=\"");
            out.push_str(&escape(name));
            out.push_str("\" value=\"");
            out.push_str(&escape(value));
            out.push_str("\"/>");
        }
        out.push_str("</Stream>");
    }
    out.push_str("</Connect><Hangup/></Response>");
    out
}

/// `<Response><Say>text</Say><Hangup/></Response>`: tells the caller `text` and hangs up (a
/// number with no agent, or an error before the stream).
pub fn say_and_hangup(text: &str) -> String {
    format!("<Response><Say>{}</Say><Hangup/></Response>", escape(text))
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

    #[test]
    fn a_stream_connects_with_its_parameters_then_hangs_up() {
        assert_eq!(
            connect_stream(
                "wss://gw.example.com/stream/twilio",
                &[("tenant", "acme"), ("ticket", "t_9f2c")],
                Some("https://gw.example.com/twilio/stream-status"),
            ),
            "<Response><Connect><Stream url=\"wss://gw.example.com/stream/twilio\" \
             statusCallback=\"https://gw.example.com/twilio/stream-status\">\
             <Parameter name=\"tenant\" value=\"acme\"/>\
             <Parameter name=\"ticket\" value=\"t_9f2c\"/>\
             </Stream></Connect><Hangup/></Response>"
        );
        assert_eq!(
            connect_stream("wss://gw/stream/twilio", &[], None),
            "<Response><Connect><Stream url=\"wss://gw/stream/twilio\"/></Connect><Hangup/></Response>"
        );
    }

    #[test]
    fn stream_values_are_escaped() {
        let twiml = connect_stream(
            "wss://gw/s\"/><Redirect>x</Redirect>",
            &[("a\"b", "<&>'")],
            Some("https://cb/?a=1&b=2"),
        );
        assert_eq!(
            twiml,
            "<Response><Connect><Stream url=\"wss://gw/s&quot;/&gt;&lt;Redirect&gt;x&lt;/Redirect&gt;\" \
             statusCallback=\"https://cb/?a=1&amp;b=2\">\
             <Parameter name=\"a&quot;b\" value=\"&lt;&amp;&gt;&apos;\"/>\
             </Stream></Connect><Hangup/></Response>"
        );
    }

    #[test]
    fn an_apology_is_said_then_the_call_ends() {
        assert_eq!(
            say_and_hangup("Sorry, this number is not in service."),
            "<Response><Say>Sorry, this number is not in service.</Say><Hangup/></Response>"
        );
        assert_eq!(
            say_and_hangup("</Say><Dial>+1</Dial>"),
            "<Response><Say>&lt;/Say&gt;&lt;Dial&gt;+1&lt;/Dial&gt;</Say><Hangup/></Response>"
        );
    }

    proptest! {
        /// Whatever the parameters, the document has exactly one `<Parameter` per pair and ends
        /// with the hang-up.
        #[test]
        fn any_parameters_keep_the_structure(
            url in any::<String>(),
            pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..4),
        ) {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let twiml = connect_stream(&url, &refs, None);
            prop_assert_eq!(twiml.matches("<Parameter ").count(), pairs.len());
            prop_assert_eq!(twiml.matches('<').count(), 6 + pairs.len() + usize::from(!pairs.is_empty()));
            prop_assert!(twiml.ends_with("</Connect><Hangup/></Response>"), "{}", twiml);
        }
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
