//! Every scenario file in `scenarios/` parses, and the shipped ones do what their names say.

use std::path::{Path, PathBuf};

use voicegw::loadtest::persona::PairingRule;
use voicegw::loadtest::scenario::{self, Step};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

#[test]
fn every_scenario_file_parses() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("scenarios/")
        .map(|entry| entry.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "barge_in.toml",
            "dtmf_menu.toml",
            "echo_barge_in.toml",
            "persona.toml",
            "question_loop.toml"
        ]
    );
    for file in &files {
        let parsed = scenario::load(file);
        assert!(parsed.is_ok(), "{}: {parsed:?}", file.display());
    }
}

#[test]
fn echo_barge_in_speaks_first_and_interrupts_every_second_echo() {
    // An echo gateway has no greeting: waiting for the bot first would time out every call.
    let file = load("echo_barge_in.toml");
    assert!(
        matches!(file.steps.first(), Some(Step::Say { .. })),
        "{:?}",
        file.steps
    );
    let says = file
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Say { .. }))
        .count();
    let barge_ins = file
        .steps
        .iter()
        .filter(|s| matches!(s, Step::BargeIn { .. }))
        .count();
    assert_eq!((says, barge_ins), (2, 1));
    assert!(file.repeat);
}

fn load(name: &str) -> scenario::Scenario {
    scenario::load(&scenarios_dir().join(name)).expect("parses")
}

#[test]
fn question_loop_is_the_built_in_default() {
    let file = load("question_loop.toml");
    let built_in = scenario::default_conversation();
    assert_eq!(file.steps, built_in.steps);
    assert_eq!(
        (file.repeat, file.answer_timeout),
        (built_in.repeat, built_in.answer_timeout)
    );
}

#[test]
fn barge_in_is_the_built_in_barge_in() {
    let file = load("barge_in.toml");
    let built_in = scenario::default_barge_in();
    assert_eq!(file.steps, built_in.steps);
    assert!(file.repeat);
}

#[test]
fn dtmf_menu_presses_keys_and_hangs_up() {
    let s = load("dtmf_menu.toml");
    assert!(!s.repeat);
    let digits: Vec<&str> = s
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Dtmf { digits, .. } => Some(digits.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(digits, ["1", "40021375#"]);
    assert_eq!(s.steps.last(), Some(&Step::Hangup));
    assert_eq!(s.parameters.get("flow").map(String::as_str), Some("menu"));
}

#[test]
fn persona_scenario_reads_its_profiles() {
    let s = load("persona.toml");
    let personas = s.personas.expect("personas");
    assert_eq!(personas.rule, PairingRule::SkillCoversComplexity);
    assert_eq!(personas.customers.len(), 5);
    assert_eq!(personas.agents.len(), 3);
    assert!(
        personas
            .customers
            .iter()
            .all(|c| (1..=5).contains(&c.complexity) && c.patience_s > 0.0)
    );
    assert!(personas.agents.iter().all(|a| (1..=5).contains(&a.skill)));
    assert!(s.steps.contains(&Step::Persona { max_turns: 8 }));
}
