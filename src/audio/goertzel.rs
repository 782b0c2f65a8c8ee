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

/// [`Goertzel::power`] of every filter of `bank` over `x`, in one pass: the recursions run side
/// by side, so their dependency chains overlap instead of following one another (several
/// times faster for a bank of eight). Each result is bit for bit what `power` gives.
pub fn powers<const K: usize>(bank: &[Goertzel; K], x: &[f32]) -> [f64; K] {
    let coeff: [f64; K] = std::array::from_fn(|i| bank[i].coeff);
    let mut s1 = [0.0f64; K];
    let mut s2 = [0.0f64; K];
    for &v in x {
        let v = f64::from(v);
        for i in 0..K {
            let s = v + coeff[i] * s1[i] - s2[i];
            s2[i] = s1[i];
            s1[i] = s;
        }
    }
    std::array::from_fn(|i| (s1[i] * s1[i] + s2[i] * s2[i] - coeff[i] * s1[i] * s2[i]).max(0.0))
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
    fn a_bank_gives_each_filter_s_power_exactly() {
        let bank = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0]
            .map(|f| Goertzel::new(f, 8000.0));
        for len in [0usize, 1, 7, 100, 205] {
            let x: Vec<f32> = (0..len)
                .map(|n| (n as f32 * 0.61).sin() * 0.4 - (n as f32 * 0.13).cos() * 0.3)
                .collect();
            let together = powers(&bank, &x);
            for (g, p) in bank.iter().zip(together) {
                assert_eq!(p.to_bits(), g.power(&x).to_bits(), "{len} samples");
            }
        }
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
