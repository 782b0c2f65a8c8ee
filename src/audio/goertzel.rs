//! Single-bin DFTs by the Goertzel recursion (telephony.md §6.3), shared by the DTMF and beep
//! detectors.
//!
//! The coefficient uses the exact target frequency (`2·cos(2πf/fs)`, non-integer `k`), so any
//! frequency can be probed over any block length.

use std::f64::consts::PI;

/// One Goertzel filter tuned to a frequency at a sample rate.
#[derive(Debug, Clone, Copy)]
pub struct Goertzel {
    /// Normalised angular frequency ω = 2πf/fs.
    w: f64,
    /// `2·cos(ω)`.
    coeff: f64,
}

impl Goertzel {
    /// A filter for `freq_hz` on audio sampled at `sample_rate_hz`.
    pub fn new(freq_hz: f64, sample_rate_hz: f64) -> Self {
        let w = 2.0 * PI * freq_hz / sample_rate_hz;
        Self {
            w,
            coeff: 2.0 * w.cos(),
        }
    }

    /// Runs the recursion over `x`; returns the last two states `(s1, s2)`.
    fn states(&self, x: &[f32]) -> (f64, f64) {
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = f64::from(v) + self.coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1, s2)
    }

    /// Squared magnitude of the DFT of `x` at this frequency: `|Σ x[n]·e^(−jωn)|²`.
    pub fn power(&self, x: &[f32]) -> f64 {
        let (s1, s2) = self.states(x);
        (s1 * s1 + s2 * s2 - self.coeff * s1 * s2).max(0.0)
    }

    /// The complex DFT `Σ x[n]·e^(−jωn)` of `x` at this frequency, as `(re, im)`, with its phase
    /// referred to the first sample of `x` (so phases of two blocks can be compared).
    pub fn dft(&self, x: &[f32]) -> (f64, f64) {
        let (s1, s2) = self.states(x);
        // y = s1 − e^(−jω)·s2 = e^(jω(N−1)) · X.
        let yr = s1 - self.w.cos() * s2;
        let yi = self.w.sin() * s2;
        let turn = -self.w * (x.len().max(1) - 1) as f64;
        let (c, s) = (turn.cos(), turn.sin());
        (yr * c - yi * s, yr * s + yi * c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], f: f64, fs: f64) -> (f64, f64) {
        let w = 2.0 * PI * f / fs;
        x.iter().enumerate().fold((0.0, 0.0), |(re, im), (n, &v)| {
            let a = w * n as f64;
            (re + f64::from(v) * a.cos(), im - f64::from(v) * a.sin())
        })
    }

    #[test]
    fn matches_a_direct_dft() {
        let x: Vec<f32> = (0..160)
            .map(|n| (n as f32 * 0.37).sin() * 0.5 + (n as f32 * 1.3).cos() * 0.2)
            .collect();
        for f in [50.0, 697.0, 1000.0, 1234.5, 3999.0] {
            let g = Goertzel::new(f, 8000.0);
            let (re, im) = g.dft(&x);
            let (nr, ni) = naive(&x, f, 8000.0);
            assert!((re - nr).abs() < 1e-6 && (im - ni).abs() < 1e-6, "{f}");
            assert!((g.power(&x) - (nr * nr + ni * ni)).abs() < 1e-6, "{f}");
        }
        assert_eq!(Goertzel::new(1000.0, 8000.0).power(&[]), 0.0);
        assert_eq!(Goertzel::new(1000.0, 8000.0).dft(&[]), (0.0, 0.0));
    }
}
