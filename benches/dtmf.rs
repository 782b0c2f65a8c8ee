//! In-band DTMF detection per 20 ms frame (Goertzel over 12.5 ms blocks, then the precise
//! check when two blocks agree), on the three kinds of audio a call carries: silence,
//! speech (the detector's common case: every block is examined and rejected) and key
//! presses (80 ms tones, 80 ms gaps: the confirmation path runs). 8 kHz and 16 kHz.

#[path = "support/signal.rs"]
mod signal;

use signal::speechlike;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegw::audio::dtmf::{DtmfDetector, DtmfDigit};

/// Row and column frequencies of a key.
fn tones(key: char) -> (f64, f64) {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    const KEYS: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    for (r, row) in KEYS.iter().enumerate() {
        if let Some(c) = row.find(key) {
            return (ROWS[r], COLS[c]);
        }
    }
    panic!("not a key: {key}")
}

/// `keys` pressed for 80 ms each with 80 ms gaps, each tone at −10 dBFS per component.
fn presses(keys: &str, rate: u32) -> Vec<i16> {
    let per_ms = rate as usize / 1000;
    let mut out = Vec::new();
    for key in keys.chars() {
        let (low, high) = tones(key);
        for n in 0..80 * per_ms {
            let t = n as f64 / f64::from(rate);
            let s = (2.0 * std::f64::consts::PI * low * t).sin()
                + (2.0 * std::f64::consts::PI * high * t).sin();
            out.push((s * 0.316 * 32767.0 / 2.0) as i16);
        }
        out.extend(std::iter::repeat_n(0i16, 80 * per_ms));
    }
    out
}

/// Feeds `audio` in 20 ms frames of `frame` samples; confirmed key presses go to `out`.
fn feed(detector: &mut DtmfDetector, audio: &[i16], frame: usize, out: &mut Vec<DtmfDigit>) {
    let frames = audio.len() / frame;
    for i in 0..frames {
        detector.push(&audio[i * frame..(i + 1) * frame], out);
    }
}

fn bench(c: &mut Criterion) {
    const KEYS: &str = "0123456789*#ABCD";
    let mut group = c.benchmark_group("dtmf");
    for rate in [8000u32, 16000] {
        let frame = rate as usize / 50;
        // Whole numbers of 20 ms frames and of 12.5 ms blocks (lcm: 100 ms).
        let speech = speechlike(rate as usize * 2, rate);
        let silence = vec![0i16; rate as usize * 2];
        let keys = presses(KEYS, rate);

        // The key presses must be detected exactly, in order, once each.
        let mut detector = DtmfDetector::new(rate).expect("supported rate");
        let mut out = Vec::new();
        feed(&mut detector, &keys, frame, &mut out);
        let digits: String = out.iter().map(|d| d.digit).collect();
        assert_eq!(digits, KEYS, "{rate} Hz");
        out.clear();
        feed(&mut detector, &speech, frame, &mut out);
        assert!(out.is_empty(), "{rate} Hz: speech is not DTMF: {out:?}");

        for (name, audio) in [
            ("silence", &silence),
            ("speech", &speech),
            ("key_presses", &keys),
        ] {
            let frames = audio.len() / frame;
            group.throughput(Throughput::Elements(frames as u64));
            let mut detector = DtmfDetector::new(rate).expect("supported rate");
            let mut out = Vec::with_capacity(KEYS.len());
            group.bench_function(format!("{}k/{name}/per_frame", rate / 1000), |b| {
                b.iter(|| {
                    out.clear();
                    feed(&mut detector, black_box(audio), frame, &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
