//! `voicegw loadtest` end to end: the real binary against a local gateway and the provider
//! fakes (`--with-fakes`), its reports, and its answers to bad arguments.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn voicegw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voicegw"))
        .arg("loadtest")
        .args(args)
        .env_remove("TWILIO_AUTH_TOKEN")
        .env_remove("VOICEGW_LOG_FORMAT")
        .output()
        .expect("run voicegw")
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Checks a short with-fakes run of 4 calls. The built-in scenario first waits for the bot, so
/// the local gateway greets (else each call would wait out the answer timeout first).
fn check_fakes_run(out: &Path, carrier: &str, extra: &[&str]) {
    let out_arg = out.to_str().expect("utf-8 path");
    let mut args = vec![
        "--with-fakes",
        "--gateway-greeting",
        "Hello.",
        "--calls",
        "4",
        "--ramp",
        "1s",
        "--duration",
        "8s",
        "--no-progress",
        "--out",
        out_arg,
    ];
    args.extend_from_slice(extra);
    let output = voicegw(&args);
    assert!(
        output.status.success(),
        "{:?}\n{}",
        output.status,
        stderr(&output)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("gateway log:"), "{table}");
    let report = report(out);
    assert_eq!(report["info"]["carrier"], carrier);
    assert_eq!(report["info"]["calls"], 4);
    let summary = &report["summary"];
    assert_eq!(summary["calls"], 4, "{summary}");
    assert_eq!(summary["connected"], 4, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["dropped"], 0, "{summary}");
    assert!(summary["answered"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert!(
        summary["response_minus_fakes_ms"]["n"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{summary}"
    );
    assert_eq!(report["info"]["fake_delays"]["stt_endpointing_ms"], 300);
    assert!(
        !report["resources"]
            .as_array()
            .expect("resources")
            .is_empty(),
        "no CPU/memory samples of the local gateway"
    );
    assert_eq!(report["calls"].as_array().map(Vec::len), Some(4));
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("<svg"), "the HTML report has no plots");
    assert!(out.join("gateway.log").is_file());
    assert!(
        out.join("gateway.db").is_file(),
        "the gateway's store is not in the run's folder"
    );
}

#[test]
fn twilio_with_fakes() {
    let dir = tempfile::tempdir().expect("temp dir");
    check_fakes_run(dir.path(), "twilio", &[]);
}

#[test]
fn exotel_16k_with_fakes() {
    let dir = tempfile::tempdir().expect("temp dir");
    check_fakes_run(
        dir.path(),
        "exotel/16000",
        &["--carrier", "exotel", "--slin16"],
    );
}

#[test]
fn bad_arguments_exit_2() {
    let cases: [(&[&str], &str); 4] = [
        (&["--with-fakes", "--carrier", "vonage"], "vonage"),
        (&["--with-fakes", "--calls", "0"], "--calls"),
        (&["--calls", "3"], "--target"),
        (&["--target", "http://127.0.0.1:1/stream/twilio"], "ws://"),
    ];
    for (args, needle) in cases {
        let output = voicegw(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(needle),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn bad_scenario_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    let output = voicegw(&[
        "--target",
        "ws://127.0.0.1:1/stream/twilio",
        "--scenario",
        dir.path().join("missing.toml").to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--no-progress",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("missing.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn nothing_listening_reports_failed_calls() {
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("addr").port()
    };
    let target = format!("ws://127.0.0.1:{port}/stream/twilio");
    for (strict, code) in [(false, 0), (true, 1)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = vec![
            "--target",
            target.as_str(),
            "--calls",
            "2",
            "--ramp",
            "0s",
            "--duration",
            "1s",
            "--no-progress",
            "--out",
            dir.path().to_str().expect("utf-8"),
        ];
        if strict {
            args.push("--strict");
        }
        let output = voicegw(&args);
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
        let summary = &report(dir.path())["summary"];
        assert_eq!(summary["failed"], 2, "{summary}");
        assert_eq!(summary["connected"], 0, "{summary}");
    }
}
