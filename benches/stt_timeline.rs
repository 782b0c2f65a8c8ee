//! The recognizer's clock mapping (`stt::timeline`): `push` runs for every 20 ms frame sent
//! to the recognizer; the lookups run for every result it sends back (a few per second).
//! Lookups are measured on a short call (one span) and on the worst case, a mapping full of
//! gaps (4 096 spans, the most it keeps).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegw::stt::timeline::Timeline;

/// Samples per 20 ms at 8 kHz.
const FRAME: u64 = 160;

/// A mapping of `spans` stretches of one second each, with a second-long gap after each.
fn gappy(spans: u64) -> Timeline {
    let mut t = Timeline::new(8000);
    for s in 0..spans {
        for f in 0..50 {
            t.push(s * 2_000 + f * 20, FRAME);
        }
    }
    t
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("stt_timeline");
    group.throughput(Throughput::Elements(1));

    // Contiguous audio: every push extends the one span.
    let mut t = Timeline::new(8000);
    let mut at_ms = 0u64;
    group.bench_function("push/contiguous_frame", |b| {
        b.iter(|| {
            at_ms += 20;
            black_box(t.push(black_box(at_ms), FRAME))
        })
    });
    // After a gap (silence not sent): a push opens a span, dropping the oldest when full.
    let mut t = gappy(4_096);
    let mut at_ms = 4_096 * 2_000;
    group.bench_function("push/after_gap", |b| {
        b.iter(|| {
            at_ms += 1_000;
            black_box(t.push(black_box(at_ms), FRAME))
        })
    });

    for (name, spans) in [("1_span", 1u64), ("4096_spans", 4_096)] {
        let t = gappy(spans);
        // A result in the middle of the audio sent: provider second s*1.0 + 0.5 lies in
        // span s, at call time s*2 000 + 500 ms.
        let mid = spans / 2;
        let secs = mid as f64 + 0.5;
        assert_eq!(t.start_secs_to_call_ms(secs), mid * 2_000 + 500, "{name}");
        assert_eq!(t.end_secs_to_call_ms(secs), mid * 2_000 + 500, "{name}");
        group.bench_function(format!("result_to_call_ms/{name}"), |b| {
            b.iter(|| {
                let t = black_box(&t);
                let start = t.start_secs_to_call_ms(black_box(secs));
                let end = t.end_secs_to_call_ms(black_box(secs + 0.3));
                black_box((start, end))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
