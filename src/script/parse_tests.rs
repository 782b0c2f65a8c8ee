//! Unit tests of the parser: one per construct and per error class.

use super::*;

/// Parses and returns the diagnostics as `line:col: message` lines (warnings marked).
fn errors(source: &str) -> Vec<String> {
    match parse(source) {
        Ok(parsed) => panic!("expected errors, got {:#?}", parsed.flow),
        Err(d) => d.to_string().lines().map(str::to_owned).collect(),
    }
}

fn ok(source: &str) -> Parsed {
    match parse(source) {
        Ok(parsed) => parsed,
        Err(d) => panic!("expected no errors, got:\n{d}"),
    }
}

#[test]
fn shipped_scripts_parse_with_no_errors_or_warnings() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "dsc") {
            let source = std::fs::read_to_string(&path).unwrap();
            let parsed = ok(&source);
            assert!(
                parsed.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                parsed.warnings
            );
            count += 1;
        }
    }
    assert!(count >= 1);
}

use crate::script::flow::{Key, Target, Template, TemplatePart, Trigger};

fn text(t: &str) -> TemplatePart {
    TemplatePart::Text(t.to_owned())
}

fn var(name: &str, fallback: Option<&str>) -> TemplatePart {
    TemplatePart::Var {
        name: name.to_owned(),
        fallback: fallback.map(str::to_owned),
    }
}

fn node_target(name: &str) -> Target {
    Target::Node {
        name: name.to_owned(),
    }
}

/// The single error of `source`, as `line:col: message`.
fn error(source: &str) -> String {
    let all = errors(source);
    let errs: Vec<&String> = all.iter().filter(|e| !e.starts_with("warning: ")).collect();
    assert_eq!(errs.len(), 1, "expected one error, got {all:#?}");
    errs[0].clone()
}

// ---- constructs ----

#[test]
fn minimal_script() {
    let p = ok("[start]\nHello.\n-> END\n");
    assert_eq!(p.flow.nodes.len(), 1);
    let start = &p.flow.nodes[0];
    assert_eq!(start.name, "start");
    assert_eq!(start.prompt, Some(Template::text("Hello.")));
    assert_eq!(start.reprompt, None);
    assert_eq!(start.agent, None);
    assert_eq!(start.transitions.len(), 1);
    assert_eq!(start.transitions[0].trigger, Trigger::Always);
    assert_eq!(start.transitions[0].target, Target::End);
    assert_eq!(p.flow.settings, crate::script::Settings::default());
    assert!(p.warnings.is_empty());
}

#[test]
fn comments_blank_lines_and_trailing_comments() {
    let p = ok(
        "// top\n\n   // indented comment\n@voice v1 // the voice\n[start] // greeting\n  Visit example.com//help today.  \n-> END // done\n",
    );
    assert_eq!(p.flow.settings.voice.as_deref(), Some("v1"));
    assert_eq!(
        p.flow.nodes[0].prompt,
        Some(Template::text("Visit example.com//help today."))
    );
}

#[test]
fn windows_line_endings_and_bom() {
    let p = ok("\u{feff}[start]\r\nHi.\r\n-> END\r\n");
    assert_eq!(p.flow.nodes[0].prompt, Some(Template::text("Hi.")));
}

#[test]
fn prompt_lines_join_with_single_spaces() {
    let p = ok("[start]\n  Hello   there,\n\n\tfriend.  \n-> END\n");
    assert_eq!(
        p.flow.nodes[0].prompt,
        Some(Template::text("Hello there, friend."))
    );
}

#[test]
fn backslash_escapes_a_text_line() {
    let p = ok(
        "[start]\n\\[laughs] that's fine\n\\-> not a transition\n\\\\ one backslash\n\\reprompt: is text\n-> END\n",
    );
    assert_eq!(
        p.flow.nodes[0].prompt,
        Some(Template::text(
            "[laughs] that's fine -> not a transition \\ one backslash reprompt: is text"
        ))
    );
}

#[test]
fn prompt_with_variables() {
    let p = ok("[start]\nHi {{ firstName | there }}, from {{tenant.name}}.\n-> END\n");
    assert_eq!(
        p.flow.nodes[0].prompt.as_ref().unwrap().parts,
        vec![
            text("Hi "),
            var("firstName", Some("there")),
            text(", from "),
            var("tenant.name", None),
            text(".")
        ]
    );
}

#[test]
fn reprompt_agent_and_goodbye_continue_on_indented_lines() {
    let p = ok(
        "@goodbye So long,\n   and thanks.\n[start]\nHi.\nreprompt: Sorry,\n  press 1.\n-> 1: faq\n\n[faq]\nagent: Answer questions\n\tusing lookup_knowledge.\n   \\-> and keep it short.\n-> \"done\": END\n",
    );
    assert_eq!(
        p.flow.settings.goodbye,
        Template::text("So long, and thanks.")
    );
    assert_eq!(
        p.flow.nodes[0].reprompt,
        Some(Template::text("Sorry, press 1."))
    );
    assert_eq!(
        p.flow.nodes[1].agent,
        Some(Template::text(
            "Answer questions using lookup_knowledge. -> and keep it short."
        ))
    );
    assert!(p.flow.nodes[1].is_agent());
}

#[test]
fn a_blank_line_ends_a_continuation() {
    let e = error("[start]\nHi.\nreprompt: Sorry,\n\n  press 1.\n-> 1: END\n");
    assert_eq!(
        e,
        "5:3: prompt text must come before the node's `reprompt:`, `agent:` and `->` lines (or indent this line to continue the `reprompt:` text)"
    );
}

#[test]
fn all_settings() {
    let p = ok(
        "@voice aura-2-thalia-en\n@timeout 800ms\n@reprompts 0\n@digit_timeout 5s\n@goodbye Bye {{ name | now }}.\n[start]\n-> END\n",
    );
    let s = &p.flow.settings;
    assert_eq!(s.voice.as_deref(), Some("aura-2-thalia-en"));
    assert_eq!(s.no_input_timeout_ms, 800);
    assert_eq!(s.max_reprompts, 0);
    assert_eq!(s.digit_timeout_ms, 5000);
    assert_eq!(
        s.goodbye.parts,
        vec![text("Bye "), var("name", Some("now")), text(".")]
    );
    let p = ok("@reprompts 10\n@timeout 120s\n@digit_timeout 100ms\n[start]\n-> END\n");
    assert_eq!(p.flow.settings.max_reprompts, 10);
    assert_eq!(p.flow.settings.no_input_timeout_ms, 120_000);
    assert_eq!(p.flow.settings.digit_timeout_ms, 100);
}

#[test]
fn node_names() {
    let long = "a".repeat(64);
    let p = ok(&format!(
        "[start]\n-> _x\n[_x]\n-> B2_c\n[B2_c]\n-> {long}\n[{long}]\n-> end\n[end]\n-> END\n"
    ));
    let names: Vec<&str> = p.flow.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["start", "_x", "B2_c", long.as_str(), "end"]);
    // Blanks inside the brackets do not matter.
    assert_eq!(ok("[ start ]\n-> END\n").flow.nodes[0].name, "start");
}

#[test]
fn every_trigger() {
    let p = ok(
        "[start]\nPress.\n-> 1, 42#, *, #, A, D0: a\n-> \"yes\", \"not  right now\", \"say \\\"hi\\\" \\\\ there\": a\n-> any: a\n-> timeout 10s: a\n-> nomatch: a\n[a]\nA.\n-> timeout: END\n",
    );
    let t: Vec<&Trigger> = p.flow.nodes[0]
        .transitions
        .iter()
        .map(|t| &t.trigger)
        .collect();
    let digits = |d: &str| Key::Digits(d.to_owned());
    let phrase = |d: &str| Key::Phrase(d.to_owned());
    assert_eq!(
        t[0],
        &Trigger::Keys {
            keys: vec![
                digits("1"),
                digits("42#"),
                digits("*"),
                digits("#"),
                digits("A"),
                digits("D0")
            ]
        }
    );
    assert_eq!(
        t[1],
        &Trigger::Keys {
            keys: vec![
                phrase("yes"),
                phrase("not right now"),
                phrase("say \"hi\" \\ there")
            ]
        }
    );
    assert_eq!(t[2], &Trigger::Any);
    assert_eq!(
        t[3],
        &Trigger::Timeout {
            after_ms: Some(10_000)
        }
    );
    assert_eq!(t[4], &Trigger::NoMatch);
    assert_eq!(
        p.flow.nodes[1].transitions[0].trigger,
        Trigger::Timeout { after_ms: None }
    );
}

#[test]
fn transitions_without_blanks() {
    let p = ok("[start]\nPress.\n->1,2:a\n->\"yes\":END\n[a]\n->END\n");
    assert_eq!(p.flow.nodes[0].transitions.len(), 2);
    assert_eq!(p.flow.nodes[1].transitions[0].target, Target::End);
}

#[test]
fn every_target() {
    let p = ok(concat!(
        "[start]\nPick.\n",
        "-> 1: a\n",
        "-> 2: END\n",
        "-> 3: agent\n",
        "-> 4: transfer +14155550100\n",
        "-> 5: transfer +14155550100 else a\n",
        "-> 6: transfer +14155550100 else sms \"Sorry {{ name | }}\" then transfer +4420794609 else END\n",
        "-> 7: sms \"Hi\"\n",
        "-> 8: sms \"Hi\" then END\n",
        "-> 9: sms \"Hi \\\"you\\\"\" then a\n",
        "-> 0: sms \"Hi\" then transfer +14155550100 else agent\n",
        "[a]\n-> END\n"
    ));
    let t: Vec<&Target> = p.flow.nodes[0]
        .transitions
        .iter()
        .map(|t| &t.target)
        .collect();
    let transfer = |next: Option<Target>| Target::Transfer {
        to: "+14155550100".to_owned(),
        otherwise: next.map(Box::new),
    };
    let sms = |t: &str, then: Target| Target::Sms {
        text: Template::text(t),
        then: Box::new(then),
    };
    assert_eq!(t[0], &node_target("a"));
    assert_eq!(t[1], &Target::End);
    assert_eq!(t[2], &Target::Agent);
    assert_eq!(t[3], &transfer(None));
    assert_eq!(t[4], &transfer(Some(node_target("a"))));
    assert_eq!(
        t[5],
        &transfer(Some(Target::Sms {
            text: Template {
                parts: vec![text("Sorry "), var("name", Some(""))]
            },
            then: Box::new(Target::Transfer {
                to: "+4420794609".to_owned(),
                otherwise: Some(Box::new(Target::End))
            })
        }))
    );
    assert_eq!(t[6], &sms("Hi", Target::End));
    assert_eq!(t[7], t[6], "`then END` is the default");
    assert_eq!(t[8], &sms("Hi \"you\"", node_target("a")));
    assert_eq!(t[9], &sms("Hi", transfer(Some(Target::Agent))));
}

#[test]
fn source_map_points_at_headers_and_arrows() {
    let p = ok("@voice v\n\n  [start]\nHi.\n-> 1: next\n   -> 2: END\n[next]\n-> END\n");
    let start = p.spans.node("start").unwrap();
    assert_eq!(start.header, Position::new(3, 3));
    assert_eq!(
        start.transitions,
        vec![Position::new(5, 1), Position::new(6, 4)]
    );
    assert_eq!(p.spans.transition("next", 0), Some(Position::new(8, 1)));
    assert_eq!(p.spans.transition("next", 1), None);
    assert_eq!(p.spans.nodes.len(), p.flow.nodes.len());
}

#[test]
fn agent_node_with_outcomes_and_timeout() {
    let p = ok("[start]\nagent: Help.\n-> \"done\", \"finished\": END\n-> timeout 20s: END\n");
    let n = &p.flow.nodes[0];
    assert!(n.is_agent());
    assert_eq!(n.prompt, None);
    // An agent node needs no transitions.
    let p = ok("[start]\nHi.\nagent: Help the caller with anything.\n");
    assert!(p.flow.nodes[0].transitions.is_empty());
}

#[test]
fn reprompt_agent_and_transitions_in_any_order() {
    let p = ok("[start]\nHi.\n-> \"a\": END\nagent: Help.\n-> \"b\": END\n");
    assert_eq!(p.flow.nodes[0].transitions.len(), 2);
}

#[test]
fn json_round_trip() {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/appointment_confirmation.dsc"
    ))
    .unwrap();
    let flow = ok(&source).flow;
    let json = serde_json::to_string_pretty(&flow).unwrap();
    let back: crate::script::Flow = serde_json::from_str(&json).unwrap();
    assert_eq!(back, flow);
}

// ---- warnings ----

#[test]
fn unreachable_nodes_are_warned_about() {
    let p = ok(
        "[start]\nHi.\n-> 1: transfer +14155550100 else a\n-> 2: sms \"x\" then b\n[a]\n-> END\n[b]\n-> END\n\n[old_menu]\nOld.\n-> END\n",
    );
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w, ["10:1: node `old_menu` is never reached from [start]"]);
    assert!(!p.warnings[0].is_error());
}

#[test]
fn a_target_with_an_error_does_not_also_look_unreachable() {
    // `confirmd` is taken for `confirmed`, and `later` is named on a line that did not parse.
    let all = errors(
        "[start]\nHi.\n-> 1: confirmd\n-> 2 later\n[confirmed]\n-> END\n[later]\n-> END\n[lost]\n-> END\n",
    );
    assert_eq!(
        all,
        [
            "3:7: unknown node `confirmd` (did you mean `confirmed`?)",
            "4:6: expected `:` after the keys, then a target",
            "warning: 9:1: node `lost` is never reached from [start]",
        ]
    );
}

#[test]
fn unused_reprompt_and_silent_nodes_are_warned_about() {
    let p = ok(
        "[start]\nHi.\nreprompt: never\n-> next\n[next]\n-> 1: helper\n[helper]\nagent: Help.\nreprompt: again\n-> \"done\": END\n",
    );
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "3:1: the node moves on unconditionally, so this `reprompt:` is never played",
            "5:1: node `next` has no prompt: the caller hears nothing before it waits for input",
            "9:1: an agent node never reprompts (the model answers the caller), so this `reprompt:` is never played",
        ]
    );
}

// ---- errors ----

#[test]
fn unknown_node_with_and_without_a_suggestion() {
    assert_eq!(
        error("[start]\nHi.\n-> 1: confirmd\n-> 2: confirmed\n[confirmed]\n-> END\n"),
        "3:7: unknown node `confirmd` (did you mean `confirmed`?)"
    );
    assert_eq!(
        error("[start]\n-> end\n"),
        "2:4: unknown node `end` (did you mean `END`?)"
    );
    assert_eq!(
        error("[start]\n-> Agent\n"),
        "2:4: unknown node `Agent` (did you mean `agent`?)"
    );
    assert_eq!(
        error("[start]\nHi.\n-> 1: transfer +14155550100 else elsewhere\n"),
        "3:34: unknown node `elsewhere`: add a `[elsewhere]` node or fix the name"
    );
}

#[test]
fn duplicate_node() {
    assert_eq!(
        error("[start]\n-> END\n\n[start]\n-> END\n"),
        "4:1: duplicate node `start` (first defined at line 1)"
    );
}

#[test]
fn missing_start() {
    assert_eq!(
        errors("[begin]\n-> END\n"),
        ["1:1: the script has no [start] node: every call begins there"]
    );
    assert_eq!(
        error(""),
        "1:1: the script has no [start] node: every call begins there"
    );
}

#[test]
fn transition_syntax_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "-> 1 confirmed",
            "3:6: expected `:` after the keys, then a target",
        ),
        ("-> 1, 2", "3:8: expected `:` after the keys, then a target"),
        (
            "-> \"yes\" next",
            "3:10: expected `:` after the keys, then a target",
        ),
        (
            "-> timeout next",
            "3:12: expected `:` after `timeout`, then a target",
        ),
        (
            "-> timeout 5s next",
            "3:15: expected `:` after the timeout, then a target",
        ),
        (
            "-> nomatch",
            "3:11: expected `:` after `nomatch`, then a target",
        ),
        (
            "-> : next",
            "3:4: expected keys, `any`, `timeout` or `nomatch` before `:`",
        ),
        ("-> 1,: next", "3:6: expected a key after `,`"),
        (
            "-> 1, , 2: next",
            "3:7: expected a key (DTMF keys or a quoted phrase), found `,`",
        ),
        ("-> 1 2: next", "3:6: expected `,` between keys, found `2`"),
        (
            "-> yes: next",
            "3:4: bad key `yes`: a key is DTMF keys (0-9, *, #, A-D) or a phrase in double quotes, e.g. \"yes\"",
        ),
        (
            "-> a: next",
            "3:4: bad key `a`: a key is DTMF keys (0-9, *, #, A-D) or a phrase in double quotes, e.g. \"a\"",
        ),
        (
            "-> 1#2: next",
            "3:4: `#` ends a key entry, so it can only be the last key of `1#2`",
        ),
        (
            "-> ##: next",
            "3:4: `#` ends a key entry, so it can only be the last key of `##`",
        ),
        (
            "-> \"\": next",
            "3:4: empty phrase: write the words to listen for, e.g. \"yes\"",
        ),
        (
            "-> \"?!\": next",
            "3:4: the phrase \"?!\" has no words to match",
        ),
        (
            "-> 1, any: next",
            "3:7: `any` cannot be combined with keys: write `-> any: TARGET` on its own line",
        ),
        (
            "-> any 1: next",
            "3:8: unexpected `1` after `any`: it stands alone before `:`",
        ),
        (
            "-> \"yes: next",
            "3:4: unterminated quote: close the text with `\"` on the same line",
        ),
        (
            "-> \"a\\tb\": next",
            "3:6: unknown escape `\\t` in a quoted text: only `\\\"` and `\\\\` are escapes",
        ),
        (
            "-> timeout 10: next",
            "3:12: bad duration `10`: write whole milliseconds or seconds, e.g. `800ms` or `8s`",
        ),
        (
            "-> timeout 1.5s: next",
            "3:12: bad duration `1.5s`: write whole milliseconds or seconds, e.g. `800ms` or `8s`",
        ),
        (
            "-> timeout 50ms: next",
            "3:12: duration `50ms` is out of range: between 100ms and 120s",
        ),
        (
            "-> timeout 121s: next",
            "3:12: duration `121s` is out of range: between 100ms and 120s",
        ),
        (
            "-> timeout soon: next",
            "3:12: unexpected `soon` after the timeout: write `-> timeout: TARGET` or `-> timeout 10s: TARGET`",
        ),
        (
            "->",
            "3:1: expected a target after `->`, e.g. `-> END` or `-> 1: next`",
        ),
        (
            "-> // nothing",
            "3:1: expected a target after `->`, e.g. `-> END` or `-> 1: next`",
        ),
        ("-> 1:", "3:6: expected a target after `:`"),
        (
            "-> 1: \"next\"",
            "3:7: expected a target, found a quoted text: quoted phrases are keys and go before `:`",
        ),
        ("-> 1: next: END", "3:11: unexpected `:` after the target"),
        ("-> 1: , END", "3:7: expected a target after `:`, found `,`"),
        (
            "-> 1: Transfer +14155550100",
            "3:7: unknown target `Transfer` (did you mean `transfer`?): a target is a node name, `END`, `agent`, `transfer +NUMBER` or `sms \"TEXT\"`",
        ),
        (
            "-> 1: goto next",
            "3:7: unknown target `goto`: a target is a node name, `END`, `agent`, `transfer +NUMBER` or `sms \"TEXT\"`",
        ),
        ("-> 1: END now", "3:11: unexpected `now` after the target"),
        (
            "-> 1: next-door",
            "3:7: bad target `next-door`: a target is a node name (letters, digits and `_`), `END`, `agent`, `transfer +NUMBER` or `sms \"TEXT\"`",
        ),
        (
            "-> 1: any",
            "3:7: `any` is a trigger, not a target: write `-> any: TARGET`",
        ),
        (
            "-> 1: then next",
            "3:7: `then` only follows an `sms` target: `sms \"TEXT\" then TARGET`",
        ),
        (
            "-> 1: next then END",
            "3:12: `then` only follows an `sms` target: `sms \"TEXT\" then TARGET`",
        ),
        (
            "-> 1: transfer +14155550100 then END",
            "3:29: `then` only follows an `sms` target: `sms \"TEXT\" then TARGET`",
        ),
        (
            "-> 1: next else END",
            "3:12: `else` only follows a `transfer` target: `transfer +NUMBER else TARGET`",
        ),
        (
            "-> 1: sms \"a\" else END",
            "3:15: `else` only follows a `transfer` target: `transfer +NUMBER else TARGET`",
        ),
        (
            "-> 1: sms \"a\" then sms \"b\"",
            "3:20: the `then` of an sms cannot be another `sms`",
        ),
        (
            "-> 1: transfer +14155550100 else transfer +14155550101",
            "3:34: the `else` of a transfer cannot be another `transfer`",
        ),
        (
            "-> 1: transfer +14155550100 else",
            "3:33: expected a target after `else`",
        ),
        (
            "-> 1: sms \"a\" then",
            "3:19: expected a target after `then`",
        ),
        (
            "-> 1: transfer",
            "3:15: expected a phone number after `transfer`, e.g. `transfer +14155550100`",
        ),
        (
            "-> 1: transfer \"+14155550100\"",
            "3:16: expected a phone number after `transfer`, e.g. `transfer +14155550100`",
        ),
        (
            "-> 1: sms",
            "3:10: expected the message in double quotes after `sms`, e.g. `sms \"See you soon\"`",
        ),
        (
            "-> 1: sms hello",
            "3:11: expected the message in double quotes after `sms`, e.g. `sms \"See you soon\"`",
        ),
        ("-> 1: sms \"  \"", "3:11: the sms text is empty"),
        (
            "-> 1: sms \"Hi {{ name\"",
            "3:15: `{{` is not closed on this line: end the variable with `}}`",
        ),
        (
            "-> 1: sms \"Hi \\\"{{ na-me }}\\\"\"",
            "3:20: bad variable name `na-me`: use letters, digits, `_` and `.`, starting with a letter or `_`",
        ),
    ];
    for (line, expected) in cases {
        let source = format!("[start]\nHi.\n{line}\n-> 9: next\n[next]\n-> END\n");
        assert_eq!(&error(&source), expected, "for `{line}`");
    }
}

#[test]
fn invalid_phone_numbers() {
    let cases: &[(&str, &str)] = &[
        (
            "4155550100",
            "invalid phone number `4155550100`: write it in E.164 form, `+` and the country code, e.g. `transfer +14155550100`",
        ),
        (
            "+1-415-555",
            "invalid phone number `+1-415-555`: only digits may follow the `+`, e.g. `transfer +14155550100`",
        ),
        (
            "+123456",
            "invalid phone number `+123456`: it has 6 digits; an E.164 number has 7 to 15",
        ),
        (
            "+1234567890123456",
            "invalid phone number `+1234567890123456`: it has 16 digits; an E.164 number has 7 to 15",
        ),
        (
            "+0441234567",
            "invalid phone number `+0441234567`: a country code never starts with 0",
        ),
    ];
    for (number, expected) in cases {
        let source = format!("[start]\n-> transfer {number}\n");
        assert_eq!(error(&source), format!("2:13: {expected}"));
    }
}

#[test]
fn template_errors() {
    assert_eq!(
        error("[start]\nHello {{ firstName,\n-> END\n"),
        "2:7: `{{` is not closed on this line: end the variable with `}}`"
    );
    // `{{` must be closed on the same line, even in a continued text.
    assert_eq!(
        error("[start]\nHi.\nreprompt: Sorry {{ name\n  }} again\n-> 1: END\n"),
        "3:17: `{{` is not closed on this line: end the variable with `}}`"
    );
    assert_eq!(
        error("[start]\nHello {{ first name }}.\n-> END\n"),
        "2:10: bad variable name `first name`: use letters, digits, `_` and `.`, starting with a letter or `_`"
    );
    assert_eq!(
        error("@goodbye Bye {{ }}\n[start]\n-> END\n"),
        "1:14: empty variable name: write `{{ name }}` or `{{ name | fallback }}`"
    );
    assert_eq!(
        error("[start]\nagent: Help {{ 1st }}.\n"),
        "2:16: bad variable name `1st`: use letters, digits, `_` and `.`, starting with a letter or `_`"
    );
}

#[test]
fn node_header_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[my-node]",
            "4:2: bad node name `my-node`: use letters, digits and `_`, starting with a letter or `_`",
        ),
        (
            "[2nd]",
            "4:2: bad node name `2nd`: use letters, digits and `_`, starting with a letter or `_`",
        ),
        (
            "[]",
            "4:1: empty node name: write the name between `[` and `]`",
        ),
        (
            "[END]",
            "4:2: `END` is a reserved word and cannot name a node",
        ),
        (
            "[else]",
            "4:2: `else` is a reserved word and cannot name a node",
        ),
        (
            "[other",
            "4:1: expected `]` to close the node name, e.g. `[start]`",
        ),
        (
            "[other] Hello",
            "4:9: unexpected text after the node header: put the prompt on the next line",
        ),
    ];
    for (header, expected) in cases {
        let source = format!("[start]\nHi.\n-> END\n{header}\n-> END\n");
        let all: Vec<String> = errors(&source)
            .into_iter()
            .filter(|e| !e.starts_with("warning"))
            .collect();
        assert_eq!(
            all.first().map(String::as_str),
            Some(*expected),
            "for `{header}`: {all:?}"
        );
        assert_eq!(
            all.iter().filter(|e| !e.starts_with("warning")).count(),
            1,
            "for `{header}`: {all:?}"
        );
    }
    let long = "n".repeat(65);
    assert_eq!(
        error(&format!("[start]\n-> END\n[{long}]\n-> END\n")),
        format!("3:2: node name `{long}` is longer than 64 characters")
    );
    for word in [
        "END", "agent", "transfer", "sms", "any", "timeout", "nomatch", "then", "else",
    ] {
        assert!(
            error(&format!("[start]\n-> END\n[{word}]\n-> END\n")).contains("reserved word"),
            "{word}"
        );
    }
}

#[test]
fn setting_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "@voise v",
            "1:1: unknown setting `@voise` (did you mean `@voice`?)",
        ),
        (
            "@language en",
            "1:1: unknown setting `@language`: the settings are @voice, @timeout, @reprompts, @digit_timeout and @goodbye",
        ),
        (
            "@",
            "1:1: expected a setting name after `@`, e.g. `@voice NAME`",
        ),
        (
            "@voice",
            "1:1: `@voice` needs a value, e.g. `@voice aura-2-thalia-en`",
        ),
        (
            "@timeout // none",
            "1:1: `@timeout` needs a value, e.g. `@timeout 6s`",
        ),
        (
            "@voice two words",
            "1:8: `@voice` takes one voice name, without blanks: `two words`",
        ),
        (
            "@timeout 6",
            "1:10: bad duration `6`: write whole milliseconds or seconds, e.g. `800ms` or `8s`",
        ),
        (
            "@digit_timeout 200s",
            "1:16: duration `200s` is out of range: between 100ms and 120s",
        ),
        (
            "@reprompts 11",
            "1:12: `@reprompts` takes a whole number from 0 to 10, not `11`",
        ),
        (
            "@reprompts -1",
            "1:12: `@reprompts` takes a whole number from 0 to 10, not `-1`",
        ),
        (
            "@reprompts +2",
            "1:12: `@reprompts` takes a whole number from 0 to 10, not `+2`",
        ),
        (
            "@goodbye",
            "1:1: `@goodbye` needs text, e.g. `@goodbye Sorry, goodbye.`",
        ),
    ];
    for (setting, expected) in cases {
        let source = format!("{setting}\n[start]\n-> END\n");
        assert_eq!(&error(&source), expected, "for `{setting}`");
    }
    assert_eq!(
        error("@voice a\n@timeout 5s\n@voice b\n[start]\n-> END\n"),
        "3:1: `@voice` is already set on line 1"
    );
    assert_eq!(
        error("[start]\n-> END\n  @voice a\n"),
        "3:3: settings go before the first node: move this line to the top of the script"
    );
}

#[test]
fn lines_before_the_first_node() {
    assert_eq!(
        error("Hello there.\n[start]\n-> END\n"),
        "1:1: text before the first node: start a node with a `[name]` line, e.g. `[start]`"
    );
    assert_eq!(
        error("  -> END\n[start]\n-> END\n"),
        "1:3: a `->` transition before the first node: start a node with a `[name]` line, e.g. `[start]`"
    );
    assert_eq!(
        error("reprompt: hi\n[start]\n-> END\n"),
        "1:1: `reprompt:` before the first node: start a node with a `[name]` line, e.g. `[start]`"
    );
    // A text line after `@goodbye` that is not indented does not continue it.
    assert_eq!(
        error("@goodbye Bye\nnow.\n[start]\n-> END\n"),
        "2:1: text before the first node: start a node with a `[name]` line, e.g. `[start]`"
    );
}

#[test]
fn prompt_text_after_the_body() {
    assert_eq!(
        error("[start]\nHi.\n-> END\nMore text.\n"),
        "4:1: prompt text must come before the node's `reprompt:`, `agent:` and `->` lines"
    );
    assert_eq!(
        error("[start]\nHi.\nagent: Help.\nMore text.\n"),
        "4:1: prompt text must come before the node's `reprompt:`, `agent:` and `->` lines (or indent this line to continue the `agent:` text)"
    );
}

#[test]
fn empty_reprompt_and_agent() {
    assert_eq!(
        error("[start]\nHi.\nreprompt:   \n-> 1: END\n"),
        "3:1: `reprompt:` needs text: what to say after a no-match"
    );
    assert_eq!(
        error("[start]\nHi.\nagent:\n"),
        "3:1: `agent:` needs the instructions for the model"
    );
    assert_eq!(
        error("[start]\nHi.\nreprompt: a\nreprompt: b\n-> 1: END\n"),
        "4:1: the node already has a `reprompt:` line (line 3): write one, and continue it on indented lines"
    );
}

#[test]
fn duplicate_keys_in_a_node() {
    assert_eq!(
        error("[start]\nHi.\n-> 1, \"yes\": END\n-> 2, 1: END\n"),
        "4:7: key `1` is already used in this node (line 3)"
    );
    assert_eq!(
        error("[start]\nHi.\n-> \"Yes\", \"yes\": END\n"),
        "3:11: phrase \"yes\" is already used in this node (line 3)"
    );
    assert_eq!(
        error("[start]\nHi.\n-> \"not now\": END\n-> \"NOT   now\": END\n"),
        "4:4: phrase \"NOT now\" is already used in this node (line 3)"
    );
}

#[test]
fn at_most_one_of_each_special_transition() {
    let cases: &[(&str, &str)] = &[
        ("-> any: END\n-> any: END", "unconditional"),
        ("-> timeout: END\n-> timeout 3s: END", "`timeout`"),
        ("-> nomatch: END\n-> nomatch: END", "`nomatch`"),
        ("-> 1: END\n-> any: END\n-> any: END", "`any`"),
    ];
    for (lines, _) in cases {
        let source = format!("[start]\nHi.\n{lines}\n");
        let e = error(&source);
        assert!(e.contains("a node has at most one"), "{e}");
        assert!(e.contains("(the first is on line"), "{e}");
    }
    assert_eq!(
        error("[start]\nHi.\n-> timeout: END\n-> timeout 3s: END\n"),
        "4:4: a node has at most one `timeout` transition (the first is on line 3)"
    );
    let all = errors("[start]\nHi.\n-> END\n-> END\n");
    assert_eq!(
        all,
        ["4:4: a node has at most one unconditional transition (the first is on line 3)",]
    );
}

#[test]
fn unconditional_is_not_combined_with_others() {
    assert_eq!(
        error("[start]\nHi.\n-> END\n-> 1: END\n"),
        "4:4: the node already moves on unconditionally (line 3): an unconditional `-> TARGET` cannot be combined with other transitions"
    );
    assert_eq!(
        error("[start]\nHi.\n-> 1: END\n-> timeout: END\n-> END\n"),
        "5:4: an unconditional `-> TARGET` cannot be combined with other transitions: the node moves on as soon as its prompt has played"
    );
}

#[test]
fn agent_node_rules() {
    assert_eq!(
        error("[start]\nagent: Help.\n-> \"done\", 1: END\n"),
        "3:12: an agent node's keys are outcomes for the model: write them as quoted phrases, not DTMF keys like `1`"
    );
    assert_eq!(
        error("[start]\nagent: Help.\n-> any: END\n"),
        "3:4: an agent node takes no `any` transition: the model chooses one of its quoted outcomes"
    );
    assert_eq!(
        error("[start]\nagent: Help.\n-> nomatch: END\n"),
        "3:4: an agent node takes no `nomatch` transition: the model chooses one of its quoted outcomes"
    );
    assert_eq!(
        error("[start]\n-> END\nagent: Help.\n"),
        "2:4: an agent node cannot move on unconditionally: the model chooses one of its quoted outcomes"
    );
}

#[test]
fn node_without_transitions() {
    assert_eq!(
        error("[start]\nHi.\n"),
        "1:1: node `start` has no `->` transition: add one, e.g. `-> END`"
    );
    // A transition that did not parse is reported once, without this error on top.
    assert_eq!(
        error("[start]\nHi.\n-> 1 END\n"),
        "3:6: expected `:` after the keys, then a target"
    );
}

#[test]
fn every_error_is_reported_sorted_by_position() {
    let source = "\
@voice a
[start]
Hi {{ name
-> 1: confirmd
-> 2 x
[confirmed]
-> END
@timeout 3s
[start]
-> END
";
    assert_eq!(
        errors(source),
        [
            "3:4: `{{` is not closed on this line: end the variable with `}}`",
            "4:7: unknown node `confirmd` (did you mean `confirmed`?)",
            "5:6: expected `:` after the keys, then a target",
            "8:1: settings go before the first node: move this line to the top of the script",
            "9:1: duplicate node `start` (first defined at line 2)",
        ]
    );
}

#[test]
fn diagnostics_display_one_per_line_with_warnings_marked() {
    let err = parse("[start]\nHi.\n-> 1: nowhere\n[lost]\nHi.\n-> END\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "3:7: unknown node `nowhere`: add a `[nowhere]` node or fix the name\nwarning: 4:1: node `lost` is never reached from [start]"
    );
    assert_eq!(err.errors().count(), 1);
    assert_eq!(err.warnings().count(), 1);
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(boxed.to_string().contains("nowhere"));
}

// ---- untrusted input ----

/// Lines that are nearly valid, so generated scripts reach deep into the parser.
const FRAGMENTS: &[&str] = &[
    "[start]",
    "[next]",
    "[start",
    "[]",
    "[END]",
    "Hello {{ name | there }}.",
    "{{ a",
    "}}",
    "\\[x]",
    "reprompt: again",
    "agent: help",
    "  continued",
    "-> END",
    "-> next",
    "-> 1: next",
    "-> 1, \"yes\": END",
    "-> \"a",
    "-> timeout 5s: next",
    "-> timeout: END",
    "-> any: next",
    "-> nomatch: END",
    "-> transfer +14155550100 else next",
    "-> sms \"hi {{ x }}\" then next",
    "-> sms \"a\" then sms \"b\"",
    "-> 1 next",
    "->",
    "-> :",
    "@voice v",
    "@timeout 0s",
    "@goodbye bye",
    "@reprompts 99",
    "// comment",
    "",
    "\t",
    "-> 1#2: x",
    "-> \"\\q\": x",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    #[test]
    fn never_panics_on_arbitrary_text(source in "(?s).{0,300}") {
        check_any(&source)?;
    }

    #[test]
    fn never_panics_on_scripts_made_of_near_valid_lines(
        lines in proptest::collection::vec(
            proptest::prop_oneof![
                4 => proptest::sample::select(FRAGMENTS).prop_map(str::to_owned),
                1 => "[ -~\\té]{0,30}",
            ],
            0..25,
        )
    ) {
        check_any(&lines.join("\n"))?;
    }
}

use proptest::prelude::Strategy as _;

/// Whatever the input: no panic; errors point inside the text; a flow that parses is
/// canonical (prints and parses back to itself).
fn check_any(source: &str) -> Result<(), proptest::test_runner::TestCaseError> {
    let line_count = source.split('\n').count();
    match parse(source) {
        Ok(parsed) => {
            let printed = crate::script::print(&parsed.flow);
            let again = parse(&printed).map_err(|d| {
                proptest::test_runner::TestCaseError::fail(format!("{d}\n---\n{printed}"))
            })?;
            proptest::prop_assert_eq!(again.flow, parsed.flow);
            proptest::prop_assert_eq!(parsed.spans.nodes.len(), again.spans.nodes.len());
        }
        Err(diagnostics) => {
            proptest::prop_assert!(diagnostics.has_errors());
            for d in diagnostics.all() {
                proptest::prop_assert!(d.line >= 1 && d.line <= line_count, "{}", d);
                proptest::prop_assert!(d.column >= 1, "{}", d);
                proptest::prop_assert!(!d.message.is_empty());
            }
        }
    }
    Ok(())
}

fn shipped(name: &str) -> Parsed {
    let path = format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    ok(&std::fs::read_to_string(path).unwrap())
}

#[test]
fn appointment_confirmation_uses_every_path() {
    let flow = shipped("appointment_confirmation.dsc").flow;
    let required: Vec<String> = flow.required_variables().into_iter().collect();
    assert_eq!(required, ["appointmentDate", "tenantName"]);
    let start = flow.start().unwrap();
    assert!(
        start
            .prompt
            .as_ref()
            .unwrap()
            .variables()
            .contains(&"firstName")
    );
    let targets: Vec<&Target> = flow
        .nodes
        .iter()
        .flat_map(|n| n.transitions.iter().map(|t| &t.target))
        .collect();
    assert!(targets.iter().any(|t| matches!(
        t,
        Target::Transfer {
            otherwise: Some(_),
            ..
        }
    )));
    assert!(targets.iter().any(|t| matches!(t, Target::Sms { .. })));
    // It runs offline (the default with no provider keys): no language model anywhere.
    assert!(!targets.iter().any(|t| matches!(t, Target::Agent)));
    assert!(!flow.nodes.iter().any(|n| n.is_agent()));
    assert!(flow.node("still_there").is_some());
    assert!(flow.node("confirmed").is_some());
    assert!(flow.node("goodbye").is_some());
}

#[test]
fn receptionist_mixes_dsl_and_agent_nodes() {
    let flow = shipped("receptionist.dsc").flow;
    let intent = flow.node("intent").unwrap();
    assert!(intent.is_agent());
    let outcomes: Vec<&Key> = intent
        .transitions
        .iter()
        .flat_map(|t| match &t.trigger {
            Trigger::Keys { keys } => keys.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    for outcome in ["question", "person", "message", "done"] {
        assert!(
            outcomes.contains(&&Key::Phrase(outcome.to_owned())),
            "{outcome}"
        );
    }
    let faq = flow.node("faq").unwrap();
    assert!(
        crate::script::print::template_text(faq.agent.as_ref().unwrap())
            .contains("lookup_knowledge")
    );
    let take = flow.node("take_message").unwrap();
    assert!(
        crate::script::print::template_text(take.agent.as_ref().unwrap()).contains("capture_lead")
    );
    assert!(flow.nodes.iter().any(|n| !n.is_agent()
        && n.transitions
            .iter()
            .any(|t| matches!(&t.trigger, Trigger::Keys { keys } if keys.iter().any(|k| matches!(k, Key::Digits(_)))))));
    assert!(matches!(
        flow.node("transfer_attempt").unwrap().transitions[0].target,
        Target::Transfer {
            otherwise: Some(_),
            ..
        }
    ));
    assert!(flow.required_variables().is_empty());
}

#[test]
fn huge_hostile_input_is_read_in_linear_time() {
    let started = std::time::Instant::now();
    // One line with a great many unclosed or nested `{{`.
    let nested = format!("[start]\n{}}}}}\n-> END\n", "{{ ".repeat(40_000));
    assert!(parse(&nested).is_err());
    // Many lines that are each an error, and many unknown targets among many nodes.
    let mut many = String::from("[start]\n-> n0\n");
    for i in 0..2_000 {
        many.push_str(&format!("[n{i}]\nText.\n-> 1: m{i}x\n-> 2: n{}\n", i + 1));
    }
    many.push_str("junk -> \n".repeat(10_000).as_str());
    let e = parse(&many).unwrap_err();
    assert!(e.errors().count() > 2_000);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

// ---- the [voicemail] node ----

#[test]
fn a_voicemail_node_is_a_message_without_transitions_and_never_unreachable() {
    let p = ok("[start]\nHello.\n-> END\n\n[voicemail]\nHi {{ name | there }}, call us back.\n");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let node = p.flow.voicemail().unwrap();
    assert_eq!(
        node.prompt,
        Some(Template {
            parts: vec![
                text("Hi "),
                var("name", Some("there")),
                text(", call us back.")
            ]
        })
    );
    assert!(node.transitions.is_empty());
    let printed = crate::script::print(&p.flow);
    assert_eq!(ok(&printed).flow, p.flow, "{printed}");
}

#[test]
fn a_voicemail_node_takes_a_message_only_and_is_no_target() {
    assert_eq!(
        error("[start]\nHi.\n-> END\n[voicemail]\n"),
        "4:1: the [voicemail] node needs the message to leave on answering machines"
    );
    assert_eq!(
        error("[start]\nHi.\n-> END\n[voicemail]\nCall us.\n-> END\n"),
        "6:1: the [voicemail] node takes no transitions: the call hangs up once the message is left"
    );
    assert_eq!(
        error("[start]\nHi.\n-> END\n[voicemail]\nCall us.\nreprompt: Again.\n"),
        "6:1: the [voicemail] node takes no `reprompt:`: it is only said to machines"
    );
    assert_eq!(
        error("[start]\nHi.\n-> 1: voicemail\n-> timeout: END\n[voicemail]\nCall us.\n"),
        "3:7: no transition may lead to [voicemail]: it is only left on answering machines"
    );
}
