//! Tests of the canonical printer and the hash: `parse(print(f)) == f` for generated flows.

use std::collections::HashSet;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::script::flow::{RESERVED_WORDS, START_NODE, collapse_blanks};
use crate::script::parse;

const ALPHABET: &[char] = &[
    'a', 'b', 'Z', '1', ' ', ' ', '\t', ',', '.', '!', '\'', '"', '\\', '/', '{', '}', '[', ']',
    '@', ':', '-', '>', '|', 'é', '#', '*', '\u{a0}',
];

fn chars(max: usize) -> impl Strategy<Value = String> {
    vec(select(ALPHABET), 0..max).prop_map(|v| v.into_iter().collect())
}

fn var_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_.]{0,6}"
}

fn part() -> impl Strategy<Value = TemplatePart> {
    prop_oneof![
        3 => chars(12).prop_map(TemplatePart::Text),
        1 => (var_name(), option::of(chars(8)))
            .prop_map(|(name, fallback)| TemplatePart::Var { name, fallback }),
    ]
}

/// Normalized templates that a script can hold.
fn template() -> impl Strategy<Value = Template> {
    vec(part(), 1..5)
        .prop_map(|parts| Template { parts }.normalized())
        .prop_filter("not canonical", Template::is_canonical)
}

fn digits() -> impl Strategy<Value = Key> {
    ("[0-9*A-D]{0,4}", any::<bool>())
        .prop_map(|(d, hash)| if hash { format!("{d}#") } else { d })
        .prop_filter("empty", |d| !d.is_empty())
        .prop_map(Key::Digits)
}

fn phrase() -> impl Strategy<Value = Key> {
    chars(10)
        .prop_map(|s| collapse_blanks(&s))
        .prop_filter("no words", |s| s.chars().any(char::is_alphanumeric))
        .prop_map(Key::Phrase)
}

fn e164() -> impl Strategy<Value = String> {
    "\\+[1-9][0-9]{6,14}"
}

fn target(names: Vec<String>) -> BoxedStrategy<Target> {
    let leaf = prop_oneof![
        select(names).prop_map(|name| Target::Node { name }),
        Just(Target::End),
        Just(Target::Agent),
    ];
    leaf.prop_recursive(4, 12, 2, |inner| {
        prop_oneof![
            (e164(), option::of(inner.clone())).prop_map(|(to, otherwise)| Target::Transfer {
                to,
                otherwise: otherwise
                    .filter(|t| !matches!(t, Target::Transfer { .. }))
                    .map(Box::new),
            }),
            (template(), inner).prop_map(|(text, then)| Target::Sms {
                text,
                then: Box::new(match then {
                    Target::Sms { .. } => Target::End,
                    other => other,
                }),
            }),
        ]
    })
    .boxed()
}

/// Keeps each key once in the node (phrases ignoring case) and drops emptied transitions.
fn dedupe(transitions: Vec<Transition>) -> Vec<Transition> {
    let mut seen = HashSet::new();
    transitions
        .into_iter()
        .filter_map(|mut t| {
            if let Trigger::Keys { keys } = &mut t.trigger {
                keys.retain(|k| match k {
                    Key::Digits(d) => seen.insert((false, d.clone())),
                    Key::Phrase(p) => seen.insert((true, p.to_lowercase())),
                });
                if keys.is_empty() {
                    return None;
                }
            }
            Some(t)
        })
        .collect()
}

fn timeout_ms() -> impl Strategy<Value = u64> {
    100u64..=120_000
}

fn dsl_transitions(names: Vec<String>) -> impl Strategy<Value = Vec<Transition>> {
    let t = target(names);
    let keyed =
        (vec(prop_oneof![digits(), phrase()], 1..4), t.clone()).prop_map(|(keys, target)| {
            Transition {
                trigger: Trigger::Keys { keys },
                target,
            }
        });
    prop_oneof![
        1 => t.clone().prop_map(|target| vec![Transition { trigger: Trigger::Always, target }]),
        3 => (
            vec(keyed, 0..4),
            option::of(t.clone()),
            option::of((option::of(timeout_ms()), t.clone())),
            option::of(t),
        )
            .prop_map(|(mut list, any, timeout, nomatch)| {
                if let Some(target) = any {
                    list.push(Transition { trigger: Trigger::Any, target });
                }
                if let Some((after_ms, target)) = timeout {
                    list.push(Transition { trigger: Trigger::Timeout { after_ms }, target });
                }
                if let Some(target) = nomatch {
                    list.push(Transition { trigger: Trigger::NoMatch, target });
                }
                dedupe(list)
            })
            .prop_filter("no transitions", |l| !l.is_empty())
            .prop_shuffle(),
    ]
}

fn agent_transitions(names: Vec<String>) -> impl Strategy<Value = Vec<Transition>> {
    let t = target(names);
    let outcome = (vec(phrase(), 1..3), t.clone()).prop_map(|(keys, target)| Transition {
        trigger: Trigger::Keys { keys },
        target,
    });
    (
        vec(outcome, 0..3),
        option::of((option::of(timeout_ms()), t)),
    )
        .prop_map(|(mut list, timeout)| {
            if let Some((after_ms, target)) = timeout {
                list.push(Transition {
                    trigger: Trigger::Timeout { after_ms },
                    target,
                });
            }
            dedupe(list)
        })
        .prop_shuffle()
}

fn node(name: String, names: Vec<String>) -> impl Strategy<Value = Node> {
    let dsl = (
        option::of(template()),
        option::of(template()),
        dsl_transitions(names.clone()),
    )
        .prop_map(|(prompt, reprompt, transitions)| (prompt, reprompt, None, transitions));
    let agent = (
        option::of(template()),
        option::of(template()),
        template(),
        agent_transitions(names),
    )
        .prop_map(|(prompt, reprompt, agent, transitions)| {
            (prompt, reprompt, Some(agent), transitions)
        });
    prop_oneof![3 => dsl, 1 => agent].prop_map(move |(prompt, reprompt, agent, transitions)| Node {
        name: name.clone(),
        prompt,
        reprompt,
        agent,
        transitions,
    })
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        option::of("[a-z0-9-]{1,10}"),
        timeout_ms(),
        0u32..=10,
        timeout_ms(),
        prop_oneof![Just(Settings::default().goodbye), template()],
    )
        .prop_map(|(voice, no_input, reprompts, digit, goodbye)| Settings {
            voice,
            no_input_timeout_ms: no_input,
            max_reprompts: reprompts,
            digit_timeout_ms: digit,
            goodbye,
        })
}

/// Valid, normalized flows using every construct.
fn flow() -> impl Strategy<Value = Flow> {
    let names = vec("[a-zA-Z_][a-zA-Z0-9_]{0,8}", 0..5).prop_map(|extra| {
        let mut names = vec![START_NODE.to_owned()];
        for name in extra {
            if !RESERVED_WORDS.contains(&name.as_str()) && !names.contains(&name) {
                names.push(name);
            }
        }
        names
    });
    (names, settings()).prop_flat_map(|(names, settings)| {
        let nodes: Vec<_> = names
            .iter()
            .map(|n| node(n.clone(), names.clone()))
            .collect();
        (Just(settings), nodes).prop_map(|(settings, nodes)| Flow { settings, nodes })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn printed_flows_parse_back_to_themselves(flow in flow()) {
        prop_assert_eq!(&flow.normalized(), &flow, "the generator makes normalized flows");
        let printed = print(&flow);
        let parsed = match parse(&printed) {
            Ok(parsed) => parsed,
            Err(d) => return Err(TestCaseError::fail(format!("{d}\n---\n{printed}"))),
        };
        prop_assert_eq!(&parsed.flow, &flow, "printed:\n{}", printed);
        prop_assert_eq!(print(&parsed.flow), printed);
        prop_assert_eq!(script_hash(&parsed.flow), script_hash(&flow));
    }

    #[test]
    fn flows_survive_json(flow in flow()) {
        let json = serde_json::to_string(&flow).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Flow = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, flow);
    }
}

const SCRIPT: &str = "\
// Appointment reminder
@voice aura-2-thalia-en
@timeout 6s

[start]
Hi {{ firstName | there }}, this is {{ tenantName }}.
Press 1 to confirm.
reprompt: Press 1 to confirm, or 2 to cancel.
-> 1, \"yes\": done // confirmed
-> 2, \"no\": sms \"Cancelled.\" then END
-> timeout: done

[done]
Thanks, goodbye.
-> END
";

const REFORMATTED: &str = "\
@voice   aura-2-thalia-en   // same voice
// a comment that was not there

   [start]    // entry
  Hi   {{firstName|there}},
    this is {{ tenantName }}.   Press 1
  to confirm.
reprompt:   Press 1 to confirm,
    or 2 to cancel.
->1,\"yes\":done
  ->   2 , \"no\" :   sms \"Cancelled.\"
-> timeout:done



[done]
\\Thanks, goodbye.
-> END    // bye
";

#[test]
fn reformatting_and_comments_keep_the_hash() {
    let a = parse(SCRIPT).unwrap().flow;
    let b = parse(REFORMATTED).unwrap().flow;
    assert_eq!(a, b);
    assert_eq!(script_hash(&a), script_hash(&b));
    let hash = script_hash(&a);
    assert_eq!(hash.len(), 64);
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
}

#[test]
fn a_change_of_meaning_changes_the_hash() {
    let base = script_hash(&parse(SCRIPT).unwrap().flow);
    for (from, to) in [
        ("Thanks, goodbye.", "Thanks, good bye."),
        ("Press 1 to confirm.\n", "Press one to confirm.\n"),
        ("\"yes\"", "\"yeah\""),
        ("@timeout 6s", "@timeout 7s"),
        ("-> timeout: done", "-> timeout 6s: done"),
        ("{{ firstName | there }}", "{{ firstName }}"),
        ("then END", "then done"),
    ] {
        assert!(SCRIPT.contains(from), "{from}");
        let changed = SCRIPT.replace(from, to);
        let flow = parse(&changed).unwrap().flow;
        assert_ne!(script_hash(&flow), base, "{from} -> {to}");
    }
}

#[test]
fn prints_the_canonical_form() {
    let flow = parse(REFORMATTED).unwrap().flow;
    assert_eq!(
        print(&flow),
        "\
@voice aura-2-thalia-en

[start]
Hi {{ firstName | there }}, this is {{ tenantName }}. Press 1 to confirm.
reprompt: Press 1 to confirm, or 2 to cancel.
-> 1, \"yes\": done
-> 2, \"no\": sms \"Cancelled.\"
-> timeout: done

[done]
Thanks, goodbye.
-> END
"
    );
}

#[test]
fn prints_escapes_where_text_would_misread() {
    let source = "@goodbye Bye {{ a | }} now\n@reprompts 3\n@digit_timeout 1500ms\n[start]\n\\-> arrow\n\
                  -> \"say \\\"hi\\\"\": sms \"a \\\\ b \\\"c\\\" {{ x | y }}\" then transfer +4420794609 else agent\n";
    let flow = parse(source).unwrap().flow;
    let printed = print(&flow);
    assert_eq!(
        printed,
        "@reprompts 3\n@digit_timeout 1500ms\n@goodbye Bye {{ a | }} now\n\n[start]\n\\-> arrow\n\
         -> \"say \\\"hi\\\"\": sms \"a \\\\ b \\\"c\\\" {{ x | y }}\" then transfer +4420794609 else agent\n"
    );
    assert_eq!(parse(&printed).unwrap().flow, flow);
}
