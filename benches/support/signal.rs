//! Synthetic test signals the benches share.

/// `n` samples at `rate` Hz of a speech-like signal: a 120 Hz voice with 11 harmonics under a
/// 4 Hz syllable envelope, loud enough for every VAD.
pub fn speechlike(n: usize, rate: u32) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let envelope = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            let voice: f32 = (1..12)
                .map(|h| (2.0 * std::f32::consts::PI * 120.0 * h as f32 * t).sin() / h as f32)
                .sum();
            (voice * envelope * 6000.0) as i16
        })
        .collect()
}
