//! G.711 μ-law / A-law encode and decode throughput: one 20 ms frame and one second at 8 kHz.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use voicegw::audio::g711;

fn pcm(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| ((i as f64 * 0.39).sin() * 12000.0 + (i as f64 * 0.07).cos() * 6000.0) as i16)
        .collect()
}

fn bench(c: &mut Criterion) {
    for (label, n) in [("20ms", 160usize), ("1s", 8000)] {
        let samples = pcm(n);
        let mut mu = Vec::new();
        g711::encode_mulaw_into(&samples, &mut mu);
        let mut a = Vec::new();
        g711::encode_alaw_into(&samples, &mut a);
        let mut group = c.benchmark_group(format!("g711/{label}"));
        group.throughput(Throughput::Elements(n as u64));
        let mut bytes = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        group.bench_function("mulaw_encode", |b| {
            b.iter(|| {
                bytes.clear();
                g711::encode_mulaw_into(black_box(&samples), &mut bytes);
                black_box(&bytes);
            })
        });
        group.bench_function("mulaw_decode", |b| {
            b.iter(|| {
                out.clear();
                g711::decode_mulaw_into(black_box(&mu), &mut out);
                black_box(&out);
            })
        });
        group.bench_function("alaw_encode", |b| {
            b.iter(|| {
                bytes.clear();
                g711::encode_alaw_into(black_box(&samples), &mut bytes);
                black_box(&bytes);
            })
        });
        group.bench_function("alaw_decode", |b| {
            b.iter(|| {
                out.clear();
                g711::decode_alaw_into(black_box(&a), &mut out);
                black_box(&out);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
