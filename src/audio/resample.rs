//! Streaming sample-rate conversion between the provider rates 8, 16, 24 and 48 kHz, wrapping
//! rubato 5's `Async` sinc resampler.
//!
//! Input of any length is cut internally into fixed 20 ms chunks (the remainder is kept for the
//! next call), so the output does not depend on how the input was chunked. Samples are converted
//! to `f32` in −1..1 and back with rounding and clamping. Buffers are allocated once in
//! [`Resampler::new`]; in steady state `process` allocates nothing itself (it only appends to the
//! caller's `Vec`, which grows if its capacity is short).
//!
//! # Filter choice (measured here, release build, 2-core VM)
//!
//! Both directions use `Async::new_sinc` with a BlackmanHarris2 window, automatic cutoff and
//! cubic sub-sample interpolation (oversampling 128). The brief suggested 64 taps everywhere;
//! measuring it showed that rubato's 64-tap filter cuts the top of the telephone band, so the
//! length is chosen per pair instead (taps counted at the input rate):
//!
//! | pair | 64 taps: gain at 3.0 / 3.4 kHz | chosen | gain at 3.0 / 3.4 kHz | alias/image | delay |
//! |---|---|---|---|---|---|
//! | 16→8 | −3.6 / −11.6 dB | 128 | 0.0 / −1.7 dB | 4.2 kHz −70 dB, ≥4.6 kHz < −90 dB | 4 ms |
//! | 24→8 | −4.3 / −9.4 dB | 192 | 0.0 / −0.4 dB | 4.2 kHz −46 dB, ≥4.6 kHz < −90 dB | 4 ms |
//! | 48→8 | −5.1 / −7.6 dB (5 kHz aliases at −25 dB) | 384 | 0.0 / −0.1 dB | 4.2 kHz −29 dB, ≥4.6 kHz < −90 dB | 4 ms |
//! | 8→16 | −2.0 / −19.8 dB | 128 | 0.0 / −0.3 dB | images ≈ −73 dB | 8 ms |
//!
//! Downsampling uses `64 × from/to` taps (constant transition width relative to the output
//! Nyquist). Upsampling from 8 kHz: the cheap cubic polynomial (`new_poly`, about 2 µs per
//! chunk, 0.25 ms delay) leaves images of a 2/3/3.4 kHz tone at −25/−13/−10 dB, i.e. inside
//! the 4–8 kHz band a 16 kHz VAD or ASR analyses; sinc 64 suppresses them (−77 dB) but
//! loses the 3–3.4 kHz band; sinc 128 keeps it (−0.3 dB at 3.4 kHz) with images at −73 dB and
//! 8 ms delay. Upsampling therefore uses 128 taps.
//!
//! Cost per 20 ms input chunk (`benches/resample.rs`): 8→16 kHz 16 µs, 16→8 8 µs, 24→8 11 µs,
//! 48→8 17 µs, 8→24 29 µs; under 0.15 % of one core per stream.

//! The output starts with [`Resampler::delay_samples`] samples of filter delay;
//! [`Resampler::flush`] pads the stream with silence so that, after it, the total output is
//! exactly `round(total_input × to/from) + delay_samples()` samples long.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Indexing, Resampler as _, SincInterpolationParameters, WindowFunction,
};

/// Sample rates [`Resampler`] accepts, in Hz.
pub const SUPPORTED_RATES: [u32; 4] = [8000, 16000, 24000, 48000];

/// Sinc filter length (taps at the input rate) for a rate pair; see the module doc.
fn sinc_len_for(from_hz: u32, to_hz: u32) -> usize {
    if from_hz > to_hz {
        // 64 taps per output-rate period: constant transition width relative to the output
        // Nyquist (16→8: 128, 24→8: 192, 48→8: 384, 24→16: 96), 4 ms delay into 8 kHz.
        let len = (64 * from_hz).div_ceil(to_hz) as usize;
        len.div_ceil(8) * 8
    } else {
        128
    }
}

/// Why a [`Resampler`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// A rate outside [`SUPPORTED_RATES`].
    #[error("unsupported sample rate {0} Hz (supported: 8000, 16000, 24000, 48000)")]
    UnsupportedRate(u32),
    /// rubato rejected the parameters.
    #[error("cannot build rubato resampler: {0}")]
    Construction(#[from] rubato::ResamplerConstructionError),
}

/// A streaming mono resampler between two of the [`SUPPORTED_RATES`]; equal rates copy through.
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    /// `None` for equal rates (passthrough).
    inner: Option<Box<Inner>>,
}

/// rubato state plus our chunk buffers.
struct Inner {
    rs: Async<f32>,
    /// Input frames per 20 ms chunk.
    chunk: usize,
    /// Pending input, `chunk` long, `fill` valid.
    in_buf: Vec<f32>,
    fill: usize,
    /// Output scratch, `output_frames_max()` long.
    out_buf: Vec<f32>,
    /// Real input samples consumed since construction / the last flush or reset.
    total_in: u64,
    /// Output samples produced since construction / the last flush or reset.
    total_out: u64,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Resampler>();
};

impl Resampler {
    /// Creates a resampler from `from_hz` to `to_hz`, both in [`SUPPORTED_RATES`].
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        for rate in [from_hz, to_hz] {
            if !SUPPORTED_RATES.contains(&rate) {
                return Err(ResampleError::UnsupportedRate(rate));
            }
        }
        if from_hz == to_hz {
            return Ok(Self {
                from_hz,
                to_hz,
                inner: None,
            });
        }
        let sinc_len = sinc_len_for(from_hz, to_hz);
        let chunk = (from_hz / 50) as usize;
        let ratio = f64::from(to_hz) / f64::from(from_hz);
        let params = SincInterpolationParameters::new(sinc_len, WindowFunction::BlackmanHarris2);
        let rs = Async::<f32>::new_sinc(ratio, 1.0, &params, chunk, 1, FixedAsync::Input)?;
        let out_len = rs.output_frames_max();
        Ok(Self {
            from_hz,
            to_hz,
            inner: Some(Box::new(Inner {
                rs,
                chunk,
                in_buf: vec![0.0; chunk],
                fill: 0,
                out_buf: vec![0.0; out_len],
                total_in: 0,
                total_out: 0,
            })),
        })
    }

    /// Resamples `input` (any length), appending the output of every completed 20 ms input chunk
    /// to `out`. An incomplete chunk stays buffered until the next call or [`Self::flush`].
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let Some(inner) = self.inner.as_deref_mut() else {
            out.extend_from_slice(input);
            return;
        };
        let mut rest = input;
        while !rest.is_empty() {
            let take = (inner.chunk - inner.fill).min(rest.len());
            let (now, later) = rest.split_at(take);
            for (dst, &s) in inner.in_buf[inner.fill..inner.fill + take]
                .iter_mut()
                .zip(now)
            {
                *dst = f32::from(s) * (1.0 / 32768.0);
            }
            inner.fill += take;
            rest = later;
            if inner.fill == inner.chunk {
                inner.total_in += inner.chunk as u64;
                inner.run_chunk(out);
            }
        }
    }

    /// Ends the stream: pads the buffered remainder with silence and drains the filter delay, so
    /// every input sample so far has reached `out`. The resampler is then ready for a new stream.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let Some(inner) = self.inner.as_deref_mut() else {
            return;
        };
        let ratio = f64::from(self.to_hz) / f64::from(self.from_hz);
        let real = inner.total_in + inner.fill as u64;
        if real == 0 {
            return;
        }
        let expected = (real as f64 * ratio).round() as u64 + inner.rs.output_delay() as u64;
        let start_len = out.len();
        if inner.fill > 0 {
            inner.in_buf[inner.fill..].fill(0.0);
            inner.total_in = real;
            inner.run_chunk(out);
        }
        // Drain the delay line with silence; a few chunks at most (delay < one chunk).
        let mut guard = 0;
        while inner.total_out < expected && guard < 16 {
            inner.in_buf.fill(0.0);
            inner.fill = inner.chunk;
            inner.run_chunk(out);
            guard += 1;
        }
        let excess = inner.total_out.saturating_sub(expected) as usize;
        let appended = out.len() - start_len;
        out.truncate(out.len() - excess.min(appended));
        self.reset();
    }

    /// Drops buffered input and the filter state, as if newly created.
    pub fn reset(&mut self) {
        if let Some(inner) = self.inner.as_deref_mut() {
            inner.rs.reset();
            inner.fill = 0;
            inner.total_in = 0;
            inner.total_out = 0;
        }
    }

    /// Filter delay in output-rate samples (0 for passthrough).
    pub fn delay_samples(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.rs.output_delay())
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Input samples per internal chunk (20 ms at the input rate).
    pub fn chunk_samples(&self) -> usize {
        (self.from_hz / 50) as usize
    }
}

impl Inner {
    /// Resamples the full `in_buf` chunk and appends the result to `out`.
    fn run_chunk(&mut self, out: &mut Vec<i16>) {
        self.fill = 0;
        let expected = self.rs.output_frames_next();
        let cap = self.out_buf.len();
        let result = match (
            InterleavedSlice::new(&self.in_buf[..], 1, self.chunk),
            InterleavedSlice::new_mut(&mut self.out_buf[..], 1, cap),
        ) {
            (Ok(inp), Ok(mut o)) => self
                .rs
                .process_into_buffer(&inp, &mut o, None::<&Indexing>)
                .ok(),
            _ => None,
        };
        let written = match result {
            Some((_, written)) => written.min(cap),
            None => {
                // Cannot happen with the sizes fixed in `new`; keep timing with silence.
                self.out_buf[..expected.min(cap)].fill(0.0);
                expected.min(cap)
            }
        };
        out.extend(
            self.out_buf[..written]
                .iter()
                .map(|&v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
        );
        self.total_out += written as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(rate: u32, freq: f64, amp: f64, secs: f64) -> Vec<i16> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16)
            .collect()
    }

    /// Amplitude of the `freq` component (single-bin DFT, exact frequency).
    fn tone_amplitude(x: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &s) in x.iter().enumerate() {
            re += f64::from(s) * (w * n as f64).cos();
            im -= f64::from(s) * (w * n as f64).sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    /// Frequency from the zero crossings (with linear interpolation) of a clean sine.
    fn zero_crossing_freq(x: &[i16], rate: u32) -> f64 {
        let mut crossings = Vec::new();
        for i in 1..x.len() {
            let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
            if a < 0.0 && b >= 0.0 {
                crossings.push((i - 1) as f64 + (-a) / (b - a));
            }
        }
        let (Some(first), Some(last)) = (crossings.first(), crossings.last()) else {
            return 0.0;
        };
        (crossings.len() - 1) as f64 * f64::from(rate) / (last - first)
    }

    fn run_chunked(rs: &mut Resampler, input: &[i16], sizes: &[usize]) -> Vec<i16> {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut k = 0;
        while pos < input.len() {
            let n = sizes[k % sizes.len()].min(input.len() - pos);
            rs.process(&input[pos..pos + n], &mut out);
            pos += n;
            k += 1;
        }
        rs.flush(&mut out);
        out
    }

    #[test]
    fn rejects_unsupported_rates() {
        assert!(matches!(
            Resampler::new(44100, 8000),
            Err(ResampleError::UnsupportedRate(44100))
        ));
        assert!(Resampler::new(8000, 0).is_err());
        assert!(Resampler::new(32000, 32000).is_err());
    }

    #[test]
    fn passthrough_for_equal_rates() {
        for &r in &SUPPORTED_RATES {
            let mut rs = Resampler::new(r, r).unwrap();
            assert_eq!(rs.delay_samples(), 0);
            let input: Vec<i16> = (0..1001).map(|i| (i * 37 % 65536 - 32768) as i16).collect();
            let mut out = vec![5];
            rs.process(&input, &mut out);
            rs.flush(&mut out);
            assert_eq!(out[0], 5);
            assert_eq!(&out[1..], &input[..]);
            assert_eq!((rs.from_hz(), rs.to_hz()), (r, r));
        }
    }

    #[test]
    fn every_pair_keeps_frequency_amplitude_and_length() {
        for &from in &SUPPORTED_RATES {
            for &to in &SUPPORTED_RATES {
                let mut rs = Resampler::new(from, to).unwrap();
                let amp = 16000.0;
                let input = sine(from, 1000.0, amp, 5.0);
                let mut out = Vec::new();
                rs.process(&input, &mut out);
                // Before flush: whole 20 ms chunks only, so within one chunk of the ratio.
                let ideal = input.len() as f64 * f64::from(to) / f64::from(from);
                assert!(
                    (out.len() as f64 - ideal).abs() <= f64::from(to) / 50.0 + 1.0,
                    "{from}->{to}: {} vs {ideal}",
                    out.len()
                );
                let delay = rs.delay_samples();
                rs.flush(&mut out);
                assert_eq!(out.len(), ideal.round() as usize + delay, "{from}->{to}");
                // Steady part: skip the delay and 50 ms of filter settling at both ends.
                let skip = delay + (to / 20) as usize;
                let steady = &out[skip..out.len() - skip];
                let f = zero_crossing_freq(steady, to);
                assert!((f - 1000.0).abs() < 0.5, "{from}->{to}: {f} Hz");
                let a = tone_amplitude(steady, to, 1000.0);
                let db = 20.0 * (a / amp).log10();
                assert!(db.abs() < 1.0, "{from}->{to}: {db} dB");
            }
        }
    }

    #[test]
    fn chunking_does_not_change_output() {
        let pairs = [
            (8000, 16000),
            (16000, 8000),
            (24000, 8000),
            (48000, 8000),
            (8000, 24000),
        ];
        for (from, to) in pairs {
            let input = sine(from, 440.0, 9000.0, 1.3);
            let reference = run_chunked(
                &mut Resampler::new(from, to).unwrap(),
                &input,
                &[(from / 50) as usize],
            );
            let odd = run_chunked(
                &mut Resampler::new(from, to).unwrap(),
                &input,
                &[1, 7, 333, 161, 0, 2049],
            );
            assert_eq!(reference, odd, "{from}->{to}");
            // After flush the resampler starts a fresh stream: same result again.
            let mut rs = Resampler::new(from, to).unwrap();
            let first = run_chunked(&mut rs, &input, &[97]);
            let second = run_chunked(&mut rs, &input, &[97]);
            assert_eq!(first, second, "{from}->{to} reuse");
        }
    }

    #[test]
    fn downsampling_rejects_aliases() {
        // e.g. 6 kHz at 16 kHz would alias to 2 kHz at 8 kHz.
        for (from, tone) in [
            (16000, 4600.0),
            (16000, 6000.0),
            (24000, 4600.0),
            (24000, 10000.0),
            (48000, 4600.0),
            (48000, 6000.0),
        ] {
            let mut rs = Resampler::new(from, 8000).unwrap();
            let mut out = Vec::new();
            rs.process(&sine(from, tone, 16000.0, 1.0), &mut out);
            let alias = tone_amplitude(&out[200..], 8000, 8000.0 - tone % 8000.0);
            let db = 20.0 * (alias / 16000.0).log10();
            assert!(db < -60.0, "{from}: alias at {db} dB");
        }
    }

    #[test]
    fn telephone_band_passes() {
        for (from, to) in [
            (16000, 8000),
            (24000, 8000),
            (48000, 8000),
            (8000, 16000),
            (8000, 24000),
            (8000, 48000),
        ] {
            for (tone, min_db) in [
                (300.0, -0.5),
                (1000.0, -0.5),
                (3000.0, -0.5),
                (3400.0, -2.0),
            ] {
                let mut rs = Resampler::new(from, to).unwrap();
                let mut out = Vec::new();
                rs.process(&sine(from, tone, 16000.0, 0.5), &mut out);
                let a = tone_amplitude(&out[(to / 50) as usize..], to, tone);
                let db = 20.0 * (a / 16000.0).log10();
                assert!(db > min_db && db < 0.5, "{from}->{to} {tone} Hz: {db} dB");
            }
        }
    }

    #[test]
    fn upsampling_suppresses_images() {
        for to in [16000, 24000, 48000] {
            let mut rs = Resampler::new(8000, to).unwrap();
            let mut out = Vec::new();
            rs.process(&sine(8000, 3000.0, 16000.0, 1.0), &mut out);
            let image = tone_amplitude(&out[400..], to, 5000.0);
            let db = 20.0 * (image / 16000.0).log10();
            assert!(db < -60.0, "8000->{to}: image at {db} dB");
        }
    }

    #[test]
    fn extreme_input_does_not_panic_and_clamps() {
        let mut rs = Resampler::new(8000, 48000).unwrap();
        let square: Vec<i16> = (0..8000)
            .map(|i| if i % 8 < 4 { i16::MAX } else { i16::MIN })
            .collect();
        let mut out = Vec::new();
        rs.process(&square, &mut out);
        rs.process(&[], &mut out);
        rs.flush(&mut out);
        rs.flush(&mut out);
        assert_eq!(out.len(), 48000 + rs.delay_samples());
        let mut empty = Resampler::new(48000, 8000).unwrap();
        let mut out = Vec::new();
        empty.flush(&mut out);
        assert!(out.is_empty());
    }
}
