//! Synthetic "speech" for the TTS fakes: deterministic, voiced-like audio whose length follows
//! the text, so tests can reason about how much of a sentence was played.
//!
//! Each word becomes a burst of a harmonic tone (pitch varies per word) lasting
//! [`MS_PER_CHAR`] per character plus a short gap, at about −20 dBFS: loud enough for the
//! gateway's VAD and the carrier simulator's echo, clearly not silence.

/// Milliseconds of audio per character of a word.
pub const MS_PER_CHAR: u64 = 60;
/// Silence after each word (ms).
pub const GAP_MS: u64 = 40;

/// Milliseconds of audio [`synthesize`] produces for `text`.
pub fn duration_ms(text: &str) -> u64 {
    text.split_whitespace()
        .map(|w| w.chars().count() as u64 * MS_PER_CHAR + GAP_MS)
        .sum()
}

/// 16-bit PCM at `rate` for `text`.
pub fn synthesize(text: &str, rate: u32) -> Vec<i16> {
    let mut out = Vec::new();
    for (n, word) in text.split_whitespace().enumerate() {
        let voiced = (word.chars().count() as u64 * MS_PER_CHAR * u64::from(rate) / 1000) as usize;
        let gap = (GAP_MS * u64::from(rate) / 1000) as usize;
        let f0 = 110.0 + 15.0 * (n % 7) as f64;
        for i in 0..voiced {
            let t = i as f64 / f64::from(rate);
            // A few harmonics with a gentle attack/decay envelope.
            let env = (i.min(voiced - i) as f64 / (f64::from(rate) * 0.01)).min(1.0);
            let s: f64 = (1..=4)
                .map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64)
                .sum();
            out.push((s * env * 2600.0) as i16);
        }
        out.extend(std::iter::repeat_n(0i16, gap));
    }
    out
}

/// `synthesize` encoded as μ-law bytes.
pub fn synthesize_mulaw(text: &str, rate: u32) -> Vec<u8> {
    let pcm = synthesize(text, rate);
    let mut out = Vec::with_capacity(pcm.len());
    crate::audio::Encoding::Mulaw.encode_into(&pcm, &mut out);
    out
}

/// `synthesize` as 16-bit little-endian bytes.
pub fn synthesize_linear16(text: &str, rate: u32) -> Vec<u8> {
    synthesize(text, rate)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect()
}

#[test]
fn length_follows_text() {
    let pcm = synthesize("hello there", 8000);
    assert_eq!(pcm.len() as u64, duration_ms("hello there") * 8);
    assert!(pcm.iter().any(|s| s.unsigned_abs() > 1000));
}
