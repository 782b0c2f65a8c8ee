//! Destiny-Script: parsing the scripts shipped in `scripts/` (done once per load, not per
//! call), and the decisions the interpreter makes at each caller input — a transcript
//! matched against the node's transitions, a key press through the DTMF entry — plus the
//! prompt render with the call's variables (once per node entered).
//!
//! A whole `ScriptAgent` step needs a runtime, a prompt source and an agent port; these
//! are the pure parts of that step, and the ones that grow with the script.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegw::script::matcher::{DtmfEntry, DtmfStep, match_transcript};
use voicegw::script::{Flow, parse, script_hash};

const APPOINTMENT: &str = include_str!("../scripts/appointment_confirmation.dsc");
const RECEPTIONIST: &str = include_str!("../scripts/receptionist.dsc");

fn parsed(source: &str) -> Flow {
    match parse(source) {
        Ok(parsed) => parsed.flow,
        Err(diagnostics) => panic!("shipped script does not parse: {diagnostics:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("script");

    for (name, source) in [("appointment", APPOINTMENT), ("receptionist", RECEPTIONIST)] {
        let flow = parsed(source);
        assert!(flow.node("start").is_some(), "{name} has a [start] node");
        group.throughput(Throughput::Bytes(source.len() as u64));
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| black_box(parse(black_box(source)).is_ok()))
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("hash/{name}"), |b| {
            b.iter(|| black_box(script_hash(black_box(&flow))))
        });
    }

    let flow = parsed(APPOINTMENT);
    let reschedule = flow
        .node("reschedule")
        .map(|n| n.transitions.clone())
        .unwrap_or_default();
    let start = flow.node("start").cloned();
    let Some(start) = start else {
        panic!("appointment has a [start] node")
    };
    group.throughput(Throughput::Elements(1));

    // A caller turn in [reschedule]: the phrase sits in the fourth transition.
    let said = "Um, I think Thursday would work better for me, thanks.";
    let found = match_transcript(&reschedule, said).map(|m| m.transition);
    assert_eq!(found, Some(3), "thursday is the fourth transition");
    group.bench_function("step/transcript_match", |b| {
        b.iter(|| black_box(match_transcript(black_box(&reschedule), black_box(said))))
    });
    // A transcript that matches nothing falls through every transition.
    let unmatched = "Sorry, who is this and why are you calling me today?";
    assert!(match_transcript(&start.transitions, unmatched).is_none());
    group.bench_function("step/transcript_no_match", |b| {
        b.iter(|| {
            black_box(match_transcript(
                black_box(&start.transitions),
                black_box(unmatched),
            ))
        })
    });

    // A key press in [start]: `2` matches at once.
    let mut entry = DtmfEntry::new();
    assert!(matches!(
        entry.press('2', &start.transitions),
        DtmfStep::Match { .. }
    ));
    group.bench_function("step/key_press", |b| {
        b.iter(|| black_box(entry.press(black_box('2'), &start.transitions)))
    });

    // The [start] prompt rendered with a call's variables.
    let vars: HashMap<String, String> = [
        ("firstName", "Maria"),
        ("tenantName", "Bayview Dental"),
        ("appointmentDate", "Tuesday the 14th at 10 am"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let Some(prompt) = start.prompt.clone() else {
        panic!("[start] has a prompt")
    };
    let text = prompt.render(&vars).unwrap_or_default();
    assert!(text.starts_with("Hi Maria, this is Destiny calling from Bayview Dental."));
    group.bench_function("step/render_prompt", |b| {
        b.iter(|| black_box(prompt.render(black_box(&vars))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
