//! The load test's reports on a synthetic run: JSON round trip, HTML well-formed and escaped,
//! the exact figures in the terminal table and the HTML table, empty runs, large runs.

use std::collections::BTreeMap;

use voicegw::loadtest::report::{TABLE_WIDTH, render_html, summary_table, write_reports};
use voicegw::loadtest::results::{
    BargeSample, CallEnd, CallMetrics, FakeDelays, Percentiles, ResourceSample, RunInfo, RunReport,
    Summary, TurnKind, TurnSample,
};

const EVIL: &str = "bad_json: <script>alert('x')</script> & \"more\"";

fn info(fakes: bool) -> RunInfo {
    RunInfo {
        target: "ws://127.0.0.1:8080/stream/twilio".to_string(),
        carrier: "twilio".to_string(),
        calls: 50,
        ramp_s: 10.0,
        duration_s: 60.0,
        scenario: "support <call> & co".to_string(),
        fake_delays: fakes.then_some(FakeDelays {
            stt_endpointing_ms: 300,
            llm_first_token_ms: 200,
            llm_token_ms: 2,
            tts_first_byte_ms: 120,
        }),
        started_at: "2026-11-21T09:30:00Z".to_string(),
        version: "0.1.0".to_string(),
    }
}

/// Every figure is exact in decimal, so that the JSON round trip compares with `==`.
///
/// 300 answered turns with responses 400..=699 ms (each once), voiced 120 ms later; 10
/// unanswered; 40 barge-ins with clear after 100..=295 ms (one missed); 120 resource samples.
fn synthetic() -> RunReport {
    let mut turns = Vec::new();
    for i in 0..300u32 {
        let response = 400.0 + f64::from((i * 7) % 300);
        turns.push(TurnSample {
            call: i % 50,
            turn: i / 50,
            kind: if i % 10 == 0 {
                TurnKind::Dtmf
            } else {
                TurnKind::Speech
            },
            at_s: 1.0 + f64::from(i) * 0.25,
            response_ms: Some(response),
            voiced_ms: Some(response + 120.0),
            overlapped: false,
            unanswered: false,
        });
    }
    for i in 0..10u32 {
        turns.push(TurnSample {
            call: i,
            turn: 9,
            kind: TurnKind::Speech,
            at_s: 70.0,
            response_ms: None,
            voiced_ms: None,
            overlapped: false,
            unanswered: true,
        });
    }
    let mut barge_ins: Vec<BargeSample> = (0..40u32)
        .map(|i| BargeSample {
            call: i,
            at_s: 5.0 + f64::from(i),
            clear_ms: Some(100.0 + f64::from(i) * 5.0),
            audio_after_clear_ms: f64::from(i % 4) * 20.0,
        })
        .collect();
    barge_ins.push(BargeSample {
        call: 41,
        at_s: 50.0,
        clear_ms: None,
        audio_after_clear_ms: 30.0,
    });
    let resources: Vec<ResourceSample> = (0..120u32)
        .map(|i| ResourceSample {
            t_s: f64::from(i) * 0.5,
            cpu_pct: 20.0 + f64::from(i % 7) * 2.5,
            rss_mib: 48.0 + f64::from(i.min(40)) * 0.25,
            live_calls: (i * 5).min(50),
        })
        .collect();
    let calls: Vec<CallMetrics> = (0..50u32)
        .map(|i| CallMetrics {
            call: i,
            started_s: f64::from(i) * 0.25,
            connect_ms: Some(2.0 + f64::from(i % 5)),
            end: match i {
                3 => CallEnd::ConnectFailed {
                    reason: "refused <x>".to_string(),
                },
                4 => CallEnd::Dropped {
                    reason: "closed by peer".to_string(),
                },
                _ => CallEnd::Completed,
            },
            turns: Vec::new(),
            barge_ins: Vec::new(),
            underruns: u32::from(i == 7),
            underrun_gap_ms: if i == 7 { vec![40.0] } else { Vec::new() },
            jitter_ms: vec![0.5, 1.5],
            violations: if i == 9 {
                vec![EVIL.to_string(), "binary_frame: 12 bytes".to_string()]
            } else {
                Vec::new()
            },
            bot_media: 100,
            frames_sent: 3000,
            marks_echoed: 90,
        })
        .collect();
    let response = Percentiles::of(turns.iter().filter_map(|t| t.response_ms));
    let voiced = Percentiles::of(turns.iter().filter_map(|t| t.voiced_ms));
    let mut violation_kinds = BTreeMap::new();
    violation_kinds.insert("bad_json".to_string(), 1);
    violation_kinds.insert("binary_frame".to_string(), 1);
    let summary = Summary {
        calls: 50,
        connected: 49,
        failed: 1,
        dropped: 1,
        turns: 310,
        answered: 300,
        unanswered: 10,
        overlapped: 0,
        barge_ins: 41,
        barge_missed: 1,
        response_ms: response,
        voiced_ms: voiced,
        response_minus_fakes_ms: Some(Percentiles::of(
            turns
                .iter()
                .filter_map(|t| t.response_ms.map(|r| r - 620.0)),
        )),
        barge_clear_ms: Percentiles::of(barge_ins.iter().filter_map(|b| b.clear_ms)),
        audio_after_clear_ms: Percentiles::of(barge_ins.iter().map(|b| b.audio_after_clear_ms)),
        connect_ms: Percentiles::of(calls.iter().filter_map(|c| c.connect_ms)),
        jitter_ms: Percentiles::of(calls.iter().flat_map(|c| c.jitter_ms.clone())),
        underruns: 1,
        violations: 2,
        violation_kinds,
        tick_late_ms: Percentiles::of([0.25, 0.5, 1.25, 3.0]),
        gateway_cpu_pct: Some(27.5),
        gateway_cpu_pct_per_call: Some(0.55),
        gateway_rss_peak_mib: Some(58.0),
        gateway_rss_mib_per_call: Some(0.2),
    };
    RunReport {
        info: info(true),
        summary,
        turns,
        barge_ins,
        resources,
        calls,
        transcripts_dir: None,
    }
}

fn empty() -> RunReport {
    RunReport {
        info: info(false),
        summary: Summary::default(),
        turns: Vec::new(),
        barge_ins: Vec::new(),
        resources: Vec::new(),
        calls: Vec::new(),
        transcripts_dir: None,
    }
}

/// Checks that every opened tag is closed in order; returns the element names seen.
fn check_well_formed(html: &str) -> Result<Vec<String>, String> {
    const VOID: [&str; 6] = ["meta", "br", "hr", "img", "input", "link"];
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        rest = &rest[open..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or("unclosed comment")?;
            rest = &after[end + 3..];
            continue;
        }
        let end = rest.find('>').ok_or("unclosed tag")?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop().ok_or(format!("</{name}> with nothing open"))?;
            if top != name.trim() {
                return Err(format!("</{name}> closes <{top}>"));
            }
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name.is_empty() {
            return Err(format!("bad tag <{tag}>"));
        }
        seen.push(name.clone());
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        stack.push(name);
    }
    if stack.is_empty() {
        Ok(seen)
    } else {
        Err(format!("left open: {stack:?}"))
    }
}

#[test]
fn the_synthetic_summary_has_the_expected_percentiles() {
    let s = synthetic().summary;
    assert_eq!(
        (
            s.response_ms.n,
            s.response_ms.p50,
            s.response_ms.p95,
            s.response_ms.p99
        ),
        (300, 549.0, 684.0, 696.0)
    );
    assert_eq!(s.response_ms.max, 699.0);
    assert_eq!(
        (
            s.barge_clear_ms.n,
            s.barge_clear_ms.p50,
            s.barge_clear_ms.p95,
            s.barge_clear_ms.max
        ),
        (40, 195.0, 285.0, 295.0)
    );
}

#[test]
fn json_report_round_trips_and_html_is_written() {
    let report = synthetic();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("nested").join("run");
    let files = write_reports(&report, &out).expect("write reports");
    assert_eq!(files.json, out.join("report.json"));
    assert_eq!(files.html, out.join("report.html"));
    let text = std::fs::read_to_string(&files.json).expect("read json");
    assert!(text.contains("\n  \"info\": {"), "pretty JSON");
    let back: RunReport = serde_json::from_str(&text).expect("parse json");
    assert_eq!(back, report);
    let html = std::fs::read_to_string(&files.html).expect("read html");
    assert_eq!(html, render_html(&report));
}

#[test]
fn write_errors_name_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let err = write_reports(&empty(), &file.join("sub")).expect_err("a file is in the way");
    assert!(err.to_string().contains("a-file"), "{err}");
}

#[test]
fn html_is_well_formed_self_contained_and_escaped() {
    let html = render_html(&synthetic());
    let tags = check_well_formed(&html).expect("well-formed");
    assert!(tags.iter().filter(|t| *t == "svg").count() >= 4);
    assert!(html.matches("<svg").count() >= 4);
    assert!(!html.contains("no samples"));
    // No script, nothing fetched.
    assert!(!html.to_lowercase().contains("<script"));
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    // Untrusted text is escaped.
    assert!(html.contains(
        "bad_json: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"
    ));
    assert!(html.contains("support &lt;call&gt; &amp; co"));
    assert!(html.contains("connect failed: refused &lt;x&gt;"));
    assert!(html.contains("ws://127.0.0.1:8080/stream/twilio"));
}

#[test]
fn html_table_prints_the_percentiles() {
    let html = render_html(&synthetic());
    let row = |name: &str, cells: [&str; 5]| {
        let mut r = format!("<tr><td>{name}</td>");
        for c in cells {
            r.push_str(&format!("<td class=\"num\">{c}</td>"));
        }
        r + "</tr>"
    };
    for expected in [
        row("response", ["300", "549", "684", "696", "699"]),
        row("voiced", ["300", "669", "804", "816", "819"]),
        row("response − fakes", ["300", "-71", "64", "76", "79"]),
        row("barge-in → clear", ["40", "195", "285", "295", "295"]),
        row("audio after clear", ["41", "30", "60", "60", "60"]),
        row("connect", ["50", "4.0", "6.0", "6.0", "6.0"]),
        row("jitter", ["100", "0.5", "1.5", "1.5", "1.5"]),
        row("tick lateness", ["4", "0.5", "3.0", "3.0", "3.0"]),
    ] {
        assert!(html.contains(&expected), "missing {expected}");
    }
    assert!(html.contains(
        "<tr><td>calls</td><td>50 planned · 49 connected · 1 failed · 1 dropped</td></tr>"
    ));
    assert!(html.contains("27.5 % mean · 0.55 % per call"));
    assert!(html.contains("58.0 MiB peak · 0.20 MiB per call"));
}

#[test]
fn table_shows_the_exact_figures_within_100_columns() {
    let table = summary_table(&synthetic());
    for line in table.lines() {
        assert!(line.chars().count() <= TABLE_WIDTH, "too wide: {line}");
    }
    let lines: Vec<&str> = table.lines().collect();
    let has = |wanted: &str| lines.contains(&wanted);
    assert!(
        has("latency (ms)                n      p50      p95      p99      max"),
        "{table}"
    );
    assert!(
        has("response                  300      549      684      696      699"),
        "{table}"
    );
    assert!(
        has("voiced                    300      669      804      816      819"),
        "{table}"
    );
    assert!(
        has("response − fakes          300      -71       64       76       79"),
        "{table}"
    );
    assert!(
        has("barge-in → clear           40      195      285      295      295"),
        "{table}"
    );
    assert!(
        has("audio after clear          41       30       60       60       60"),
        "{table}"
    );
    assert!(
        has("connect                    50      4.0      6.0      6.0      6.0"),
        "{table}"
    );
    assert!(
        has("jitter                    100      0.5      1.5      1.5      1.5"),
        "{table}"
    );
    assert!(
        has("tick lateness               4      0.5      3.0      3.0      3.0"),
        "{table}"
    );
    assert!(
        has("calls         50 planned · 49 connected · 1 failed · 1 dropped"),
        "{table}"
    );
    assert!(
        has("turns         310 · 300 answered · 10 unanswered · 0 overlapped"),
        "{table}"
    );
    assert!(has("barge-ins     41 · 1 missed"), "{table}");
    assert!(has("underruns     1"), "{table}");
    assert!(has("violations    2"), "{table}");
    assert!(
        has("                bad_json 1 · binary_frame 1"),
        "{table}"
    );
    assert!(
        has("gateway CPU   27.5 % mean · 0.55 % per call"),
        "{table}"
    );
    assert!(
        has("gateway RSS   58.0 MiB peak · 0.20 MiB per call"),
        "{table}"
    );
    assert!(has("scenario      support <call> & co"), "{table}");
    assert!(
        has(
            "fakes         STT endpointing 300 ms · LLM first token 200 ms (+2 ms/token) · TTS first byte 120 ms"
        ),
        "{table}"
    );
    assert!(
        has("carrier       twilio · 50 calls · ramp 10 s · duration 60 s"),
        "{table}"
    );
}

#[test]
fn empty_report_renders_with_dashes_and_notes() {
    let report = empty();
    let table = summary_table(&report);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines.contains(&"response                    0        —        —        —        —"),
        "{table}"
    );
    assert!(
        lines.contains(&"response − fakes            —        —        —        —        —"),
        "{table}"
    );
    assert!(
        lines.contains(&"gateway CPU   — mean · — per call"),
        "{table}"
    );
    assert!(lines.contains(&"fakes         —"), "{table}");
    let html = render_html(&report);
    check_well_formed(&html).expect("well-formed");
    assert!(html.matches("no samples").count() >= 5);
    assert!(html.contains("<h2>Calls with problems (0)</h2>"));
}

#[test]
fn long_untrusted_text_does_not_widen_the_table() {
    let mut report = synthetic();
    report.info.target = format!("ws://127.0.0.1/{}", "x".repeat(300));
    report.info.scenario = "s\u{1b}[2J".repeat(50);
    for i in 0..30 {
        report
            .summary
            .violation_kinds
            .insert(format!("kind{i}_{}", "k".repeat(i * 3)), i as u32);
    }
    let table = summary_table(&report);
    for line in table.lines() {
        assert!(line.chars().count() <= TABLE_WIDTH, "too wide: {line}");
        assert!(!line.contains('\u{1b}'));
    }
    assert!(table.contains("kind29_"));
}

#[test]
fn large_runs_stay_small() {
    let mut report = synthetic();
    let base = report.turns.clone();
    report.turns = (0..100)
        .flat_map(|k| {
            base.iter().map(move |t| TurnSample {
                call: t.call + 50 * k,
                at_s: t.at_s + f64::from(k) * 0.01,
                ..t.clone()
            })
        })
        .collect();
    assert_eq!(report.turns.len(), 31_000);
    let html = render_html(&report);
    check_well_formed(&html).expect("well-formed");
    assert!(html.matches("<circle").count() <= 5000);
    assert!(html.len() < 3_000_000, "{} bytes", html.len());
}

/// A realistic-looking run for looking at the HTML report by eye (and for the screenshot in
/// docs/): `LOADTEST_SAMPLE_DIR=/tmp/x cargo test --test loadtest_report -- --ignored`.
#[test]
#[ignore = "writes a sample report for a person to look at"]
fn write_sample_report() {
    let dir = std::env::var("LOADTEST_SAMPLE_DIR").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join("voicegw-report-sample")
            .display()
            .to_string()
    });
    // A small deterministic generator (xorshift) for spread-out samples.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (calls, ramp, duration) = (200u32, 30.0, 120.0);
    let mut turns = Vec::new();
    let mut barge_ins = Vec::new();
    let mut metrics = Vec::new();
    for call in 0..calls {
        let started = f64::from(call) * ramp / f64::from(calls);
        let mut at = started + 4.0 + next() * 2.0;
        let mut turn = 0;
        while at < ramp + duration - 3.0 {
            let load = (at / ramp).min(1.0);
            let response = 640.0 + 40.0 * load + 60.0 * (-(1.0 - next()).ln()) + next() * 30.0;
            let unanswered = next() < 0.004;
            turns.push(TurnSample {
                call,
                turn,
                kind: if turn % 5 == 4 {
                    TurnKind::Dtmf
                } else {
                    TurnKind::Speech
                },
                at_s: at,
                response_ms: (!unanswered).then_some(response),
                voiced_ms: (!unanswered).then_some(response + 90.0 + next() * 40.0),
                overlapped: false,
                unanswered,
            });
            if turn % 6 == 3 {
                barge_ins.push(BargeSample {
                    call,
                    at_s: at + 1.5,
                    clear_ms: Some(180.0 + 50.0 * (-(1.0 - next()).ln())),
                    audio_after_clear_ms: if next() < 0.1 { 20.0 } else { 0.0 },
                });
            }
            turn += 1;
            at += 6.0 + next() * 4.0;
        }
        metrics.push(CallMetrics {
            call,
            started_s: started,
            connect_ms: (call != 17).then_some(3.0 + next() * 6.0),
            end: match call {
                17 => CallEnd::ConnectFailed {
                    reason: "HTTP 503 Service Unavailable".to_string(),
                },
                88 => CallEnd::Dropped {
                    reason: "socket closed without a close frame".to_string(),
                },
                _ => CallEnd::Completed,
            },
            turns: Vec::new(),
            barge_ins: Vec::new(),
            underruns: u32::from(call % 40 == 5),
            underrun_gap_ms: if call % 40 == 5 {
                vec![60.0]
            } else {
                Vec::new()
            },
            jitter_ms: (0..20).map(|_| next() * 4.0).collect(),
            violations: if call == 123 {
                vec![EVIL.to_string()]
            } else {
                Vec::new()
            },
            bot_media: 400,
            frames_sent: 7500,
            marks_echoed: 390,
        });
    }
    let resources: Vec<ResourceSample> = (0..=150)
        .map(|i| {
            let t = f64::from(i);
            let live = ((t / ramp) * f64::from(calls)).min(f64::from(calls - 2)) as u32;
            ResourceSample {
                t_s: t,
                cpu_pct: 2.0 + f64::from(live) * 0.21 + next() * 4.0,
                rss_mib: 41.0 + f64::from(live) * 0.18 + next() * 0.5,
                live_calls: if t > ramp + duration { 0 } else { live },
            }
        })
        .collect();
    let fakes = FakeDelays {
        stt_endpointing_ms: 300,
        llm_first_token_ms: 200,
        llm_token_ms: 2,
        tts_first_byte_ms: 120,
    };
    let response = Percentiles::of(turns.iter().filter_map(|t| t.response_ms));
    let mut violation_kinds = BTreeMap::new();
    violation_kinds.insert("bad_json".to_string(), 1);
    let summary = Summary {
        calls,
        connected: calls - 1,
        failed: 1,
        dropped: 1,
        turns: turns.len() as u32,
        answered: turns.iter().filter(|t| !t.unanswered).count() as u32,
        unanswered: turns.iter().filter(|t| t.unanswered).count() as u32,
        overlapped: 0,
        barge_ins: barge_ins.len() as u32,
        barge_missed: 0,
        response_ms: response,
        voiced_ms: Percentiles::of(turns.iter().filter_map(|t| t.voiced_ms)),
        response_minus_fakes_ms: Some(Percentiles::of(
            turns
                .iter()
                .filter_map(|t| t.response_ms.map(|r| r - fakes.floor_ms())),
        )),
        barge_clear_ms: Percentiles::of(barge_ins.iter().filter_map(|b| b.clear_ms)),
        audio_after_clear_ms: Percentiles::of(barge_ins.iter().map(|b| b.audio_after_clear_ms)),
        connect_ms: Percentiles::of(metrics.iter().filter_map(|c| c.connect_ms)),
        jitter_ms: Percentiles::of(metrics.iter().flat_map(|c| c.jitter_ms.clone())),
        underruns: metrics.iter().map(|c| c.underruns).sum(),
        violations: 1,
        violation_kinds,
        tick_late_ms: Percentiles::of((0..1000).map(|_| next() * 2.0)),
        gateway_cpu_pct: Some(43.9),
        gateway_cpu_pct_per_call: Some(0.22),
        gateway_rss_peak_mib: Some(77.3),
        gateway_rss_mib_per_call: Some(0.18),
    };
    let report = RunReport {
        info: RunInfo {
            target: "ws://127.0.0.1:41873/stream/twilio".to_string(),
            carrier: "twilio".to_string(),
            calls,
            ramp_s: ramp,
            duration_s: duration,
            scenario: "default-conversation".to_string(),
            fake_delays: Some(fakes),
            started_at: "2026-11-21T09:30:00Z".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        summary,
        turns,
        barge_ins,
        resources,
        calls: metrics,
        transcripts_dir: None,
    };
    let files = write_reports(&report, std::path::Path::new(&dir)).expect("write sample");
    println!("{}", summary_table(&report));
    println!("{}", files.html.display());
}
