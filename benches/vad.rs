//! VAD cost of one 20 ms frame at 8 kHz, both backends, on voiced and silent input.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use voicegw::audio::vad::{Vad, VadBackend, VadConfig};

/// One second of a harmonic 120 Hz buzz with a slow envelope (voiced-like), 8 kHz.
fn voiced() -> Vec<i16> {
    (0..8000)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let env = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 4.0 * t).sin().abs();
            let s: f64 = (1..=25)
                .map(|h| (2.0 * std::f64::consts::PI * 120.0 * h as f64 * t).sin() / h as f64)
                .sum();
            (s * env * 4000.0) as i16
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let voiced = voiced();
    let silent = vec![0i16; 8000];
    let mut group = c.benchmark_group("vad/20ms@8k");
    group.throughput(Throughput::Elements(160));
    for backend in [VadBackend::WebRtc, VadBackend::Earshot] {
        for (name, audio) in [("voiced", &voiced), ("silent", &silent)] {
            let config = VadConfig {
                backend,
                ..VadConfig::default()
            };
            let Ok(mut vad) = Vad::new(&config, 8000) else {
                return;
            };
            let mut frames = Vec::with_capacity(4);
            let mut pos = 0;
            group.bench_function(format!("{}/{name}", backend.as_str()), |b| {
                b.iter(|| {
                    frames.clear();
                    vad.push(black_box(&audio[pos..pos + 160]), &mut frames);
                    pos = (pos + 160) % audio.len();
                    black_box(&frames);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
