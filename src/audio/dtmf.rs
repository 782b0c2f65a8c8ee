//! In-band DTMF detection (telephony.md §6): Goertzel single-bin DFTs ([`super::goertzel`]) over short blocks,
//! Asterisk/spandsp-style checks, and a precise confirmation step.
//!
//! Blocks are 12.5 ms (100 samples at 8 kHz, 200 at 16 kHz). A block is a *hit* for a digit when:
//! - the strongest row and column tones each have an amplitude of at least −52 dBFS;
//! - each beats the other three tones of its group by 8 dB (power ratio 6.3);
//! - the two tones hold at least 60 % of the block's energy (rejects speech, music, single
//!   tones, harmonic buzz);
//! - a loose twist limit holds (12 dB either way; the exact limit is checked below);
//! - the tone fills the block: every quarter of the block has at least 60 % of the energy of the
//!   loudest quarter (so a block only partly covered by a tone is not a hit; the margin covers
//!   the beating of the two tones, which moves quarter energies by up to ±21 %).
//!
//! A digit is *confirmed* when two consecutive blocks are hits for it (25 ms of tone) and a
//! precise check over those 200 samples passes: with Hann-windowed DFTs over two 18.75 ms windows
//! 6.25 ms apart, each tone's frequency (from the phase advance) must be within ±2.5 % of nominal
//! (accept ±1.5 %, reject ±3.5 %), and the twist must be at most 8.5 dB (row above column) or
//! 4.5 dB (column above row). Because a hit needs the tone to fill roughly 90 % of a block, two
//! consecutive hits need about 23 ms of tone: 20 and 22 ms tones were rejected at every
//! alignment tested, and a 40 ms tone always contains two whole blocks.
//!
//! Each key press is reported once, when confirmed. It is released after three consecutive blocks
//! (37.5 ms) that are not hits for it, so interruptions of up to 10 ms are bridged and a 50 ms
//! pause separates two presses of the same key. A different digit confirmed while one is held is
//! reported at once.

use std::f64::consts::PI;

use super::goertzel::{self, Goertzel};

/// Row (low group) frequencies, Hz.
const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// Column (high group) frequencies, Hz.
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Digit for (row, column).
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Minimum amplitude of each tone, as a fraction of full scale (−52 dBFS).
const MIN_AMPLITUDE: f64 = 80.0 / 32768.0;
/// The winning tone must beat the other tones of its group by this power ratio (8 dB).
const PEAK_RATIO: f64 = 6.3;
/// Share of block energy the two tones must hold.
const MIN_TONE_FRACTION: f64 = 0.6;
/// Loose per-block twist limit (power ratio, 12 dB) either way.
const LOOSE_TWIST: f64 = 15.85;
/// Quietest quarter of a block vs loudest (energy ratio).
const MIN_FILL: f64 = 0.6;
/// Frequency tolerance at confirmation (relative).
const FREQ_TOL: f64 = 0.025;
/// Row above column ("normal twist"), power ratio: 8.5 dB.
const MAX_NORMAL_TWIST: f64 = 7.08;
/// Column above row ("reverse twist"), power ratio: 4.5 dB.
const MAX_REVERSE_TWIST: f64 = 2.82;
/// Consecutive non-hit blocks that release a held key.
const RELEASE_MISSES: u32 = 3;

/// Why a [`DtmfDetector`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DtmfError {
    /// Only 8000 and 16000 Hz are supported.
    #[error("unsupported DTMF sample rate {0} Hz (supported: 8000, 16000)")]
    UnsupportedRate(u32),
}

/// A detected key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: char,
    /// First sample of the first block in which the tone was seen (samples pushed since creation
    /// or [`DtmfDetector::reset`]).
    pub start_sample: u64,
}

/// Per-tone precomputed phasors.
struct Tone {
    freq: f64,
    /// Hann-weighted cos/sin over the confirmation window.
    wcos: Vec<f32>,
    wsin: Vec<f32>,
}

/// Streaming DTMF detector for one audio stream.
pub struct DtmfDetector {
    sample_rate: u32,
    /// Block length N.
    block: usize,
    /// Confirmation window length (3N/2) and lag (N/2).
    win: usize,
    lag: usize,
    /// Eight tones: rows 0..4, columns 4..8.
    tones: Vec<Tone>,
    /// The eight tones' filters, run together over each block.
    bank: [Goertzel; 8],
    /// Current (filling) block and the previous complete block.
    cur: Vec<f32>,
    prev: Vec<f32>,
    /// Samples in completed blocks.
    samples: u64,
    /// Candidate: digit hit in the previous block, with the start of its run of hits.
    candidate: Option<(char, u64)>,
    /// Whether the candidate run has already been reported.
    reported: bool,
    /// Held (reported) key and consecutive misses.
    held: Option<char>,
    misses: u32,
}

impl DtmfDetector {
    /// Creates a detector for 8000 or 16000 Hz mono audio.
    pub fn new(sample_rate: u32) -> Result<Self, DtmfError> {
        let block = match sample_rate {
            8000 => 100,
            16000 => 200,
            other => return Err(DtmfError::UnsupportedRate(other)),
        };
        let win = block * 3 / 2;
        let lag = block / 2;
        let fs = f64::from(sample_rate);
        let tones = ROWS
            .iter()
            .chain(COLS.iter())
            .map(|&freq| {
                let w = 2.0 * PI * freq / fs;
                let hann = |n: usize| 0.5 - 0.5 * (2.0 * PI * n as f64 / (win - 1) as f64).cos();
                Tone {
                    freq,
                    wcos: (0..win)
                        .map(|n| (hann(n) * (w * n as f64).cos()) as f32)
                        .collect(),
                    wsin: (0..win)
                        .map(|n| (hann(n) * (w * n as f64).sin()) as f32)
                        .collect(),
                }
            })
            .collect();
        let bank = std::array::from_fn(|i| {
            let freq = if i < ROWS.len() {
                ROWS[i]
            } else {
                COLS[i - ROWS.len()]
            };
            Goertzel::new(freq, fs)
        });
        Ok(Self {
            sample_rate,
            block,
            bank,
            win,
            lag,
            tones,
            cur: Vec::with_capacity(block),
            prev: vec![0.0; block],
            samples: 0,
            candidate: None,
            reported: false,
            held: None,
            misses: 0,
        })
    }

    /// Feeds audio of any length; appends each newly confirmed key press to `out`.
    pub fn push(&mut self, pcm: &[i16], out: &mut Vec<DtmfDigit>) {
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (self.block - self.cur.len()).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.cur
                .extend(now.iter().map(|&s| f32::from(s) * (1.0 / 32768.0)));
            rest = later;
            if self.cur.len() == self.block {
                self.end_block(out);
            }
        }
    }

    /// Forgets all state, including buffered audio and the sample counter.
    pub fn reset(&mut self) {
        self.cur.clear();
        self.prev.fill(0.0);
        self.samples = 0;
        self.candidate = None;
        self.reported = false;
        self.held = None;
        self.misses = 0;
    }

    /// Input sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn end_block(&mut self, out: &mut Vec<DtmfDigit>) {
        let start = self.samples;
        self.samples += self.block as u64;
        let hit = self.block_hit();

        // Track runs of consecutive hits of one digit.
        let mut confirmed = None;
        match (hit, self.candidate) {
            (Some(d), Some((c, run_start))) if d == c => {
                if !self.reported && self.precise_check(d) {
                    self.reported = true;
                    confirmed = Some(DtmfDigit {
                        digit: d,
                        start_sample: run_start,
                    });
                }
            }
            (Some(d), _) => {
                self.candidate = Some((d, start));
                self.reported = false;
            }
            (None, _) => {
                self.candidate = None;
                self.reported = false;
            }
        }

        // Key hold / release.
        if let Some(held) = self.held {
            if hit == Some(held) {
                self.misses = 0;
            } else {
                self.misses += 1;
                if self.misses >= RELEASE_MISSES {
                    self.held = None;
                }
            }
        }
        if let Some(digit) = confirmed {
            if self.held != Some(digit.digit) {
                out.push(digit);
            }
            self.held = Some(digit.digit);
            self.misses = 0;
        }

        std::mem::swap(&mut self.cur, &mut self.prev);
        self.cur.clear();
    }

    /// Per-block checks on `cur`; returns the digit this block is a hit for.
    fn block_hit(&self) -> Option<char> {
        let x = &self.cur;
        let n = self.block;
        let energy: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        if energy <= 0.0 {
            return None;
        }
        // No tone can reach the minimum power in a block with less energy than this:
        // |Σ x·e^(−jωn)|² ≤ N·Σx² (Cauchy–Schwarz), and the minimum is (A·N/2)².
        if energy < MIN_AMPLITUDE * MIN_AMPLITUDE * n as f64 / 4.0 {
            return None;
        }
        let power = goertzel::powers(&self.bank, x);
        let best = |group: &[f64]| {
            let mut bi = 0;
            for i in 1..group.len() {
                if group[i] > group[bi] {
                    bi = i;
                }
            }
            bi
        };
        let (rows, cols) = power.split_at(4);
        let r = best(rows);
        let c = best(cols);
        let (pr, pc) = (rows[r], cols[c]);
        // Amplitude of a tone from its DFT power: A = 2|X|/N.
        let min_power = (MIN_AMPLITUDE * n as f64 / 2.0).powi(2);
        if pr < min_power || pc < min_power {
            return None;
        }
        if pc > pr * LOOSE_TWIST || pr > pc * LOOSE_TWIST {
            return None;
        }
        let beats = |group: &[f64], i: usize| {
            group
                .iter()
                .enumerate()
                .all(|(j, &p)| j == i || p * PEAK_RATIO <= group[i])
        };
        if !beats(rows, r) || !beats(cols, c) {
            return None;
        }
        // A tone of amplitude A over N samples has energy N·A²/2 and DFT power (A·N/2)².
        let tone_energy = 2.0 * (pr + pc) / n as f64;
        if tone_energy < MIN_TONE_FRACTION * energy {
            return None;
        }
        let q = n / 4;
        let mut quarters = [0.0f64; 4];
        for (i, qe) in quarters.iter_mut().enumerate() {
            *qe = x[i * q..(i + 1) * q]
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum();
        }
        let qmax = quarters.iter().cloned().fold(0.0, f64::max);
        if quarters.iter().any(|&qe| qe < MIN_FILL * qmax) {
            return None;
        }
        Some(KEYS[r][c])
    }

    /// Frequency and exact twist check over the last two blocks (`prev` + `cur`).
    fn precise_check(&self, digit: char) -> bool {
        let Some((r, c)) = KEYS
            .iter()
            .enumerate()
            .find_map(|(r, row)| row.iter().position(|&k| k == digit).map(|c| (r, c)))
        else {
            return false;
        };
        let sample = |i: usize| {
            if i < self.block {
                self.prev[i]
            } else {
                self.cur[i - self.block]
            }
        };
        let fs = f64::from(self.sample_rate);
        let mut powers = [0.0f64; 2];
        for (k, &ti) in [r, 4 + c].iter().enumerate() {
            let tone = &self.tones[ti];
            let dft = |offset: usize| {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for i in 0..self.win {
                    let v = f64::from(sample(offset + i));
                    re += v * f64::from(tone.wcos[i]);
                    im -= v * f64::from(tone.wsin[i]);
                }
                (re, im)
            };
            let (r1, i1) = dft(0);
            let (r2, i2) = dft(self.lag);
            // Phase advance over `lag` samples: arg(Y2 · conj(Y1)).
            let advance = (i2 * r1 - r2 * i1).atan2(r2 * r1 + i2 * i1);
            let expected = 2.0 * PI * tone.freq * self.lag as f64 / fs;
            let mut delta = advance - expected;
            delta -= (2.0 * PI) * (delta / (2.0 * PI)).round();
            let df = delta * fs / (2.0 * PI * self.lag as f64);
            if df.is_nan() || df.abs() > FREQ_TOL * tone.freq {
                return false;
            }
            powers[k] = r1 * r1 + i1 * i1 + r2 * r2 + i2 * i2;
        }
        let (pr, pc) = (powers[0], powers[1]);
        pr <= pc * MAX_NORMAL_TWIST && pc <= pr * MAX_REVERSE_TWIST
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FS: f64 = 8000.0;

    /// Dual tone: row/col frequencies scaled by `dev`, per-tone amplitudes in dBFS.
    fn dual(rate: u32, digit: char, ms: f64, row_db: f64, col_db: f64, dev: f64) -> Vec<i16> {
        let (r, c) = KEYS
            .iter()
            .enumerate()
            .find_map(|(r, row)| row.iter().position(|&k| k == digit).map(|c| (r, c)))
            .unwrap();
        let fs = f64::from(rate);
        let (fr, fc) = (ROWS[r] * dev, COLS[c] * dev);
        let (ar, ac) = (
            32768.0 * 10f64.powf(row_db / 20.0),
            32768.0 * 10f64.powf(col_db / 20.0),
        );
        (0..(fs * ms / 1000.0).round() as usize)
            .map(|i| {
                let t = i as f64 / fs;
                (ar * (2.0 * PI * fr * t + 0.3).sin() + ac * (2.0 * PI * fc * t + 1.1).sin())
                    .round()
                    .clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    fn silence(ms: f64) -> Vec<i16> {
        vec![0; (FS * ms / 1000.0) as usize]
    }

    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn gauss(&mut self) -> f64 {
            let u1 = self.uniform().max(1e-12);
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
        }
    }

    fn detect(rate: u32, audio: &[i16], chunk: usize) -> Vec<DtmfDigit> {
        let mut d = DtmfDetector::new(rate).unwrap();
        let mut out = Vec::new();
        for c in audio.chunks(chunk.max(1)) {
            d.push(c, &mut out);
        }
        out
    }

    fn digits(found: &[DtmfDigit]) -> String {
        found.iter().map(|d| d.digit).collect()
    }

    /// Tone of `ms` surrounded by silence, at several alignments against the block grid.
    fn isolated(digit: char, ms: f64, row_db: f64, col_db: f64, dev: f64) -> Vec<String> {
        (0..5)
            .map(|k| {
                let mut a = silence(100.0 + 2.5 * k as f64);
                a.extend(dual(8000, digit, ms, row_db, col_db, dev));
                a.extend(silence(100.0));
                digits(&detect(8000, &a, 160))
            })
            .collect()
    }

    #[test]
    fn rejects_unsupported_rates() {
        assert!(DtmfDetector::new(8000).is_ok());
        assert!(DtmfDetector::new(16000).is_ok());
        assert!(matches!(
            DtmfDetector::new(44100),
            Err(DtmfError::UnsupportedRate(44100))
        ));
        assert!(DtmfDetector::new(0).is_err());
    }

    #[test]
    fn all_sixteen_digits_at_8k_and_16k() {
        for rate in [8000u32, 16000] {
            let mut audio = Vec::new();
            let mut expected = String::new();
            let mut starts = Vec::new();
            for row in KEYS {
                for d in row {
                    audio.extend(vec![0; rate as usize / 20]);
                    starts.push(audio.len() as u64);
                    audio.extend(dual(rate, d, 60.0, -10.0, -8.0, 1.0));
                    expected.push(d);
                }
            }
            audio.extend(vec![0; rate as usize / 10]);
            let found = detect(rate, &audio, 333);
            assert_eq!(digits(&found), expected, "{rate}");
            for (f, s) in found.iter().zip(&starts) {
                // Start within one block (12.5 ms) of the true start.
                let err = f.start_sample as i64 - *s as i64;
                assert!(
                    (0..=(rate as i64 / 80)).contains(&err),
                    "{rate} {f:?} vs {s}"
                );
            }
        }
    }

    #[test]
    fn frequency_deviation() {
        for d in ['1', '5', '9', 'D', '*', '#', '0', 'A'] {
            for dev in [1.015, 0.985] {
                assert!(
                    isolated(d, 60.0, -10.0, -10.0, dev)
                        .iter()
                        .all(|s| *s == d.to_string()),
                    "{d} {dev}"
                );
            }
            for dev in [1.035, 0.965, 1.05, 0.95] {
                assert!(
                    isolated(d, 60.0, -10.0, -10.0, dev)
                        .iter()
                        .all(|s| s.is_empty()),
                    "{d} {dev}"
                );
            }
        }
    }

    #[test]
    fn duration_40ms_accepted_20ms_rejected() {
        for d in ['1', '6', '8', '#', 'D'] {
            let long: Vec<String> = (0..40)
                .map(|k| {
                    let mut a = silence(50.0);
                    a.extend(vec![0; k * 5]);
                    a.extend(dual(8000, d, 40.0, -10.0, -9.0, 1.0));
                    a.extend(silence(60.0));
                    digits(&detect(8000, &a, 160))
                })
                .collect();
            assert!(
                long.iter().all(|s| *s == d.to_string()),
                "{d} 40 ms: {long:?}"
            );
            for ms in [20.0, 22.0] {
                let short: Vec<String> = (0..40)
                    .map(|k| {
                        let mut a = silence(50.0);
                        a.extend(vec![0; k * 5]);
                        a.extend(dual(8000, d, ms, -10.0, -9.0, 1.0));
                        a.extend(silence(60.0));
                        digits(&detect(8000, &a, 160))
                    })
                    .collect();
                assert!(short.iter().all(|s| s.is_empty()), "{d} {ms} ms: {short:?}");
            }
        }
    }

    #[test]
    fn twist_limits() {
        for d in ['1', '5', '9', 'D', '*', '#'] {
            // Row (low group) 8 dB above column, and column 4 dB above row: accepted.
            assert!(
                isolated(d, 60.0, -6.0, -14.0, 1.0)
                    .iter()
                    .all(|s| *s == d.to_string()),
                "{d} +8"
            );
            assert!(
                isolated(d, 60.0, -12.0, -8.0, 1.0)
                    .iter()
                    .all(|s| *s == d.to_string()),
                "{d} -4"
            );
            // Beyond: rejected.
            assert!(
                isolated(d, 60.0, -6.0, -16.0, 1.0)
                    .iter()
                    .all(|s| s.is_empty()),
                "{d} +10"
            );
            assert!(
                isolated(d, 60.0, -12.0, -6.0, 1.0)
                    .iter()
                    .all(|s| s.is_empty()),
                "{d} -6"
            );
        }
    }

    #[test]
    fn detects_in_noise_and_at_low_level() {
        let mut rng = Rng(0x1234_5678);
        for d in [
            '1', '2', '3', 'A', '4', '5', '6', 'B', '7', '8', '9', 'C', '*', '0', '#', 'D',
        ] {
            // 15 dB S/N: signal power (two tones at −10 dBFS each) vs white Gaussian noise.
            let tone = dual(8000, d, 60.0, -10.0, -10.0, 1.0);
            let signal_power = 2.0 * (32768.0f64 * 10f64.powf(-0.5)).powi(2) / 2.0;
            let noise_rms = (signal_power / 10f64.powf(1.5)).sqrt();
            let mut a: Vec<i16> = silence(80.0)
                .into_iter()
                .chain(tone)
                .chain(silence(80.0))
                .map(|s| {
                    (f64::from(s) + noise_rms * rng.gauss())
                        .round()
                        .clamp(-32768.0, 32767.0) as i16
                })
                .collect();
            assert_eq!(
                digits(&detect(8000, &a, 160)),
                d.to_string(),
                "{d} in noise"
            );
            // 26 dB below a nominal −4 dBFS per tone: −30 dBFS per tone.
            a = silence(80.0);
            a.extend(dual(8000, d, 50.0, -30.0, -30.0, 1.0));
            a.extend(silence(80.0));
            assert_eq!(
                digits(&detect(8000, &a, 160)),
                d.to_string(),
                "{d} at -30 dBFS"
            );
        }
    }

    #[test]
    fn repeated_digit_with_50ms_gap_reported_twice() {
        for k in 0..10 {
            let mut a = silence(30.0 + k as f64);
            a.extend(dual(8000, '7', 60.0, -10.0, -10.0, 1.0));
            a.extend(silence(50.0));
            a.extend(dual(8000, '7', 60.0, -10.0, -10.0, 1.0));
            a.extend(silence(80.0));
            let found = detect(8000, &a, 160);
            assert_eq!(digits(&found), "77", "offset {k}");
            let second = (240 + 8 * k + 480 + 400) as u64;
            // Reported start: the first block that was a hit, within one block of the tone start.
            assert!(found[1].start_sample.abs_diff(second) <= 100, "{found:?}");
        }
    }

    #[test]
    fn short_interruption_is_bridged() {
        for k in 0..10 {
            let mut a = silence(30.0 + k as f64);
            a.extend(dual(8000, '3', 60.0, -10.0, -10.0, 1.0));
            a.extend(silence(10.0));
            a.extend(dual(8000, '3', 60.0, -10.0, -10.0, 1.0));
            a.extend(silence(80.0));
            assert_eq!(digits(&detect(8000, &a, 160)), "3", "offset {k}");
        }
    }

    #[test]
    fn sustained_tone_reported_once_and_digit_change_reported() {
        let mut a = silence(40.0);
        a.extend(dual(8000, '0', 1000.0, -10.0, -10.0, 1.0));
        a.extend(silence(100.0));
        assert_eq!(digits(&detect(8000, &a, 77)), "0");
        let mut a = silence(40.0);
        a.extend(dual(8000, '1', 100.0, -10.0, -10.0, 1.0));
        a.extend(dual(8000, '2', 100.0, -10.0, -10.0, 1.0));
        a.extend(silence(100.0));
        assert_eq!(digits(&detect(8000, &a, 160)), "12");
    }

    #[test]
    fn beeps_buzz_and_speechlike_never_produce_digits() {
        let fs = 8000.0;
        let synth = |f: &dyn Fn(f64) -> f64| -> Vec<i16> {
            (0..16000)
                .map(|i| {
                    (f(i as f64 / fs) * 32767.0)
                        .round()
                        .clamp(-32768.0, 32767.0) as i16
                })
                .collect()
        };
        let mut cases: Vec<(String, Vec<i16>)> = Vec::new();
        for f in [440.0, 697.0, 1000.0, 1209.0, 1400.0, 2000.0] {
            cases.push((
                format!("sine {f}"),
                synth(&|t| 0.3 * (2.0 * PI * f * t).sin()),
            ));
        }
        for f0 in [100.0, 116.0, 120.0, 139.0, 174.25, 232.0] {
            // Harmonic buzz: sawtooth-like sum of 30 harmonics (below Nyquist).
            cases.push((
                format!("buzz {f0}"),
                synth(&|t| {
                    (1..=30)
                        .filter(|h| f0 * *h as f64 <= 3900.0)
                        .map(|h| 0.15 * (2.0 * PI * f0 * h as f64 * t).sin() / h as f64)
                        .sum()
                }),
            ));
        }
        // Two tones that are not a DTMF pair (both low group, both high group).
        cases.push((
            "697+770".into(),
            synth(&|t| 0.2 * ((2.0 * PI * 697.0 * t).sin() + (2.0 * PI * 770.0 * t).sin())),
        ));
        cases.push((
            "1209+1477".into(),
            synth(&|t| 0.2 * ((2.0 * PI * 1209.0 * t).sin() + (2.0 * PI * 1477.0 * t).sin())),
        ));
        for (name, audio) in cases {
            assert!(detect(8000, &audio, 160).is_empty(), "{name}");
        }
    }

    #[test]
    fn reset_and_16k_chunking() {
        let mut a = silence(40.0);
        a.extend(dual(8000, '#', 80.0, -10.0, -10.0, 1.0));
        a.extend(silence(100.0));
        let mut d = DtmfDetector::new(8000).unwrap();
        let mut first = Vec::new();
        d.push(&a, &mut first);
        d.reset();
        let mut second = Vec::new();
        for c in a.chunks(7) {
            d.push(c, &mut second);
        }
        assert_eq!(first, second);
        assert_eq!(digits(&first), "#");
        d.push(&[], &mut second);
        assert_eq!(d.sample_rate(), 8000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_audio_never_panics(audio in proptest::collection::vec(any::<i16>(), 0..4000), chunk in 1usize..500, wide in any::<bool>()) {
            let rate = if wide { 16000 } else { 8000 };
            let found = detect(rate, &audio, chunk);
            prop_assert!(found.len() <= audio.len() / 200 + 1);
            let extremes = vec![i16::MIN; 1000];
            let _ = detect(rate, &extremes, chunk);
        }
    }
}
