//! Signed 16-bit little-endian PCM ("linear16") bytes ↔ samples, and signal levels.
//!
//! Levels are normalised to full scale: 1.0 is `32768` (so `i16::MIN` has a peak of exactly 1.0
//! and a full-scale sine has an RMS of about 0.707, i.e. −3 dBFS).

/// Full-scale reference used to normalise levels.
const FULL_SCALE: f64 = 32768.0;

/// Lowest value [`dbfs`] returns (also for zero, negative or NaN levels).
pub const DBFS_FLOOR: f32 = -120.0;

/// Decodes little-endian PCM16 bytes, appending to `out`. A trailing odd byte is ignored.
pub fn decode_le_into(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
    );
}

/// Encodes samples as little-endian PCM16 bytes, appending to `out`.
pub fn encode_le_into(pcm: &[i16], out: &mut Vec<u8>) {
    out.reserve(pcm.len() * 2);
    for &s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Root-mean-square level normalised to full scale (0.0..=1.0); 0.0 for an empty slice.
pub fn rms(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return 0.0;
    }
    // i64 sum of squares cannot overflow below 2^33 samples; use f64 to be safe for any length.
    let sum: f64 = pcm
        .iter()
        .map(|&s| {
            let v = f64::from(s);
            v * v
        })
        .sum();
    let level = (sum / pcm.len() as f64).sqrt() / FULL_SCALE;
    level.min(1.0) as f32
}

/// Largest absolute sample normalised to full scale (0.0..=1.0); 0.0 for an empty slice.
pub fn peak(pcm: &[i16]) -> f32 {
    let max = pcm
        .iter()
        .map(|&s| i32::from(s).unsigned_abs())
        .max()
        .unwrap_or(0);
    (f64::from(max) / FULL_SCALE) as f32
}

/// Converts a normalised level to dBFS: `20·log10(level)`, never below −120.0.
pub fn dbfs(level: f32) -> f32 {
    if level.is_nan() || level <= 0.0 {
        return DBFS_FLOOR;
    }
    (20.0 * level.log10()).max(DBFS_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn byte_order_is_little_endian() {
        let mut bytes = Vec::new();
        encode_le_into(&[0x1234, -2, i16::MIN, i16::MAX], &mut bytes);
        assert_eq!(bytes, [0x34, 0x12, 0xFE, 0xFF, 0x00, 0x80, 0xFF, 0x7F]);
        let mut pcm = Vec::new();
        decode_le_into(&bytes, &mut pcm);
        assert_eq!(pcm, [0x1234, -2, i16::MIN, i16::MAX]);
    }

    #[test]
    fn odd_trailing_byte_is_ignored_and_output_appends() {
        let mut pcm = vec![7i16];
        decode_le_into(&[0x01, 0x00, 0x02, 0x00, 0xAB], &mut pcm);
        assert_eq!(pcm, [7, 1, 2]);
        decode_le_into(&[0xAB], &mut pcm);
        decode_le_into(&[], &mut pcm);
        assert_eq!(pcm, [7, 1, 2]);
        let mut bytes = vec![9u8];
        encode_le_into(&[], &mut bytes);
        encode_le_into(&[1], &mut bytes);
        assert_eq!(bytes, [9, 1, 0]);
    }

    #[test]
    fn levels_of_known_signals() {
        assert_eq!(rms(&[]), 0.0);
        assert_eq!(peak(&[]), 0.0);
        assert_eq!(rms(&[0; 160]), 0.0);
        assert_eq!(dbfs(0.0), -120.0);
        assert_eq!(dbfs(-1.0), -120.0);
        assert_eq!(dbfs(f32::NAN), -120.0);
        assert_eq!(dbfs(1e-9), -120.0);
        assert!((dbfs(1.0)).abs() < 1e-6);
        assert!((dbfs(0.5) + 6.0206).abs() < 1e-3);
        assert!((dbfs(0.1) + 20.0).abs() < 1e-4);
        // Square wave at ±16384 → RMS 0.5, peak 0.5.
        let sq: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { 16384 } else { -16384 })
            .collect();
        assert!((rms(&sq) - 0.5).abs() < 1e-6);
        assert!((peak(&sq) - 0.5).abs() < 1e-6);
        // Full-scale sine: RMS ≈ 1/√2 → −3.01 dBFS.
        let sine: Vec<i16> = (0..8000)
            .map(|i| {
                (32767.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin()) as i16
            })
            .collect();
        assert!((rms(&sine) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3);
        assert!((dbfs(rms(&sine)) + 3.01).abs() < 0.02);
        // Extremes.
        assert_eq!(peak(&[i16::MIN]), 1.0);
        assert_eq!(rms(&[i16::MIN; 10]), 1.0);
        assert!((peak(&[0, -3, 2]) - 3.0 / 32768.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn round_trip(pcm in proptest::collection::vec(any::<i16>(), 0..512)) {
            let mut bytes = Vec::new();
            encode_le_into(&pcm, &mut bytes);
            prop_assert_eq!(bytes.len(), pcm.len() * 2);
            let mut back = Vec::new();
            decode_le_into(&bytes, &mut back);
            prop_assert_eq!(&back, &pcm);
            let r = rms(&pcm);
            let p = peak(&pcm);
            prop_assert!((0.0..=1.0).contains(&r));
            prop_assert!((0.0..=1.0).contains(&p));
            prop_assert!(r <= p + 1e-6);
        }

        #[test]
        fn bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut pcm = Vec::new();
            decode_le_into(&bytes, &mut pcm);
            let mut back = Vec::new();
            encode_le_into(&pcm, &mut back);
            prop_assert_eq!(&back[..], &bytes[..bytes.len() & !1]);
        }
    }
}
