//! `voicegw script check`: the binary on a shipped script, a broken one, and bad usage.

use std::path::Path;
use std::process::{Command, Output};

fn voicegw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voicegw"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run voicegw")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn shipped(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_good_script_prints_its_summary_and_exits_0() {
    let file = shipped("appointment_confirmation.dsc");
    let out = voicegw(&["script", "check", &file]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "no errors or warnings");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("required variables: appointmentDate, tenantName\n"),
        "{stdout}"
    );
    let start_line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|line| line.trim_start().starts_with("[start]"))
        .unwrap()
        + 1;
    assert!(
        stdout.contains(&format!("\n[start]  (line {start_line})\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("  -> 0, \"person\", \"agent\", \"representative\": transfer +14155550100 else take_message\n"),
        "{stdout}"
    );
    let source = std::fs::read_to_string(&file).unwrap();
    let flow = voicegw::script::parse(&source).unwrap().flow;
    assert!(stdout.starts_with(&format!(
        "{} nodes, hash {}\n",
        flow.nodes.len(),
        voicegw::script::script_hash(&flow)
    )));
}

#[test]
fn json_prints_the_flow() {
    let file = shipped("receptionist.dsc");
    let out = voicegw(&["script", "check", "--json", &file]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let flow: voicegw::script::Flow = serde_json::from_slice(&out.stdout).unwrap();
    let source = std::fs::read_to_string(&file).unwrap();
    assert_eq!(flow, voicegw::script::parse(&source).unwrap().flow);
}

#[test]
fn a_broken_script_prints_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.dsc");
    std::fs::write(
        &path,
        "[start]\nHello {{ name\n-> 1: confirmd\n-> 2 x\n[confirmed]\n-> END\n\n[start]\n-> END\n\n[old_menu]\nOld.\n-> END\n",
    )
    .unwrap();
    let file = path.display().to_string();
    let out = voicegw(&["script", "check", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "", "no summary for a broken script");
    let expected = [
        format!("{file}:2:7: `{{{{` is not closed on this line: end the variable with `}}}}`"),
        format!("{file}:3:7: unknown node `confirmd` (did you mean `confirmed`?)"),
        format!("{file}:4:6: expected `:` after the keys, then a target"),
        format!("{file}:8:1: duplicate node `start` (first defined at line 1)"),
        format!("warning: {file}:11:1: node `old_menu` is never reached from [start]"),
    ];
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
}

#[test]
fn bad_usage_exits_2() {
    let out = voicegw(&["script", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let out = voicegw(&["script", "check", "/nonexistent/nothing.dsc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/nothing.dsc"));
    let out = voicegw(&["script"]);
    assert_eq!(out.status.code(), Some(2));
}
