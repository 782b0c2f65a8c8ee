//! Resampler cost of one 20 ms input chunk for the pairs used on the call path.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use voicegw::audio::resample::Resampler;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("resample/20ms");
    for (from, to) in [
        (8000u32, 16000u32),
        (16000, 8000),
        (24000, 8000),
        (48000, 8000),
        (8000, 24000),
    ] {
        let n = (from / 50) as usize;
        let input: Vec<i16> = (0..n)
            .map(|i| {
                ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / f64::from(from)).sin() * 10000.0)
                    as i16
            })
            .collect();
        let Ok(mut rs) = Resampler::new(from, to) else {
            return;
        };
        let mut out = Vec::with_capacity(4 * (to / 50) as usize);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{}k->{}k", from / 1000, to / 1000), |b| {
            b.iter(|| {
                out.clear();
                rs.process(black_box(&input), &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
