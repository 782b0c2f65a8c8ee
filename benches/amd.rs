//! Answering-machine detection cost of one 20 ms frame at 8 kHz on the media path: the
//! detector (with its beep detector) and the call's answer gate around it, over a machine's
//! greeting with its beep (fixtures/audio/voicemail_greeting_beep.wav), a frame at a time.
//! A detector that has decided is replaced, so every frame measured is one still listening.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use voicegw::call::answering::AnswerGate;
use voicegw::call::registry::OutboundPlan;
use voicegw::dialer::amd::{AmdConfig, AmdDetector, AmdVerdict};

const RATE: u32 = 8000;
const FRAME: usize = 160;

/// The greeting fixture's samples, each 20 ms frame paired with a voiced flag (energy above
/// about −40 dBFS, standing in for the VAD, which is measured in `benches/vad.rs`).
fn greeting() -> Vec<(Vec<i16>, bool)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/audio/voicemail_greeting_beep.wav"
    );
    let Ok(reader) = hound::WavReader::open(path) else {
        return Vec::new();
    };
    let samples: Vec<i16> = reader
        .into_samples::<i16>()
        .filter_map(Result::ok)
        .collect();
    samples
        .chunks_exact(FRAME)
        .map(|frame| {
            let voiced = voicegw::audio::linear16::rms(frame) > 330.0;
            (frame.to_vec(), voiced)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let frames = greeting();
    if frames.is_empty() {
        return;
    }
    let mut group = c.benchmark_group("amd/20ms@8k");
    group.throughput(Throughput::Elements(FRAME as u64));

    let config = AmdConfig::default();
    let Ok(mut detector) = AmdDetector::new(RATE, &config) else {
        return;
    };
    let mut events = Vec::with_capacity(2);
    let mut pos = 0;
    group.bench_function("detector/voicemail_greeting", |b| {
        b.iter(|| {
            let (pcm, voiced) = &frames[pos];
            events.clear();
            detector.push_frame(black_box(pcm), *voiced, &mut events);
            pos += 1;
            if pos == frames.len() || detector.verdict() == AmdVerdict::ReadyForMessage {
                pos = 0;
                if let Ok(fresh) = AmdDetector::new(RATE, &config) {
                    detector = fresh;
                }
            }
            black_box(&events);
        })
    });

    let plan = OutboundPlan::detect(Some("Please call us back.".into()));
    let Ok(mut gate) = AnswerGate::new(RATE, &plan, true) else {
        return;
    };
    let mut steps = Vec::new();
    let mut pos = 0;
    group.bench_function("gate/voicemail_greeting", |b| {
        b.iter(|| {
            let (pcm, voiced) = &frames[pos];
            steps.clear();
            gate.push_frame(black_box(pcm), *voiced, &mut steps);
            pos += 1;
            if pos == frames.len() || !steps.is_empty() {
                pos = 0;
                if let Ok(fresh) = AnswerGate::new(RATE, &plan, true) {
                    gate = fresh;
                }
            }
            black_box(&steps);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
