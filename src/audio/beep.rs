//! Answering-machine beep detection (telephony.md §6.4).
//!
//! Audio of any chunking is cut into 20 ms frames. A frame is *tonal* at frequency `f` when:
//! - a bank of [`Goertzel`] bins every 25 Hz across [`BeepConfig::min_freq_hz`]..=
//!   [`BeepConfig::max_freq_hz`] has its strongest bin near `f` (a 20 ms frame resolves 50 Hz,
//!   so the true tone is within 12.5 Hz of the best bin);
//! - `f` is refined from the phase advance of that bin between the two halves of the frame
//!   (unambiguous within ±50 Hz of the bin) and lies inside the configured band;
//! - the sine at `f` has an amplitude of at least [`BeepConfig::min_level_dbfs`] and holds at
//!   least [`BeepConfig::min_tone_fraction`] of the frame's energy (one tone dominant over the
//!   rest of the band: rejects speech, DTMF digits, which split their energy over two tones, and
//!   noise).
//!
//! Consecutive tonal frames whose frequencies stay within [`BeepConfig::max_freq_deviation`] of
//! their running mean form a run; up to [`BeepConfig::max_gap_ms`] of non-tonal frames inside a
//! run are bridged (a lost packet). The run ends when the tone stops (more non-tonal time than
//! that) or changes frequency; it is reported as [`BeepEnded`] when it lasted between
//! [`BeepConfig::min_duration_ms`] and [`BeepConfig::max_duration_ms`]. A tone still sounding is
//! never reported: the moment a beep ends is the moment to start speaking.

use serde::{Deserialize, Serialize};

use super::goertzel::Goertzel;

/// Spacing of the Goertzel bank, Hz.
const BANK_STEP_HZ: f64 = 25.0;
/// Frame length, ms.
const FRAME_MS: u64 = 20;

/// Beep detector thresholds (serde; every field optional, defaults below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeepConfig {
    /// Lowest beep frequency, Hz; default 400 (machines use ~440–2000 Hz).
    pub min_freq_hz: f32,
    /// Highest beep frequency, Hz; default 2000. At most a quarter of the sample rate.
    pub max_freq_hz: f32,
    /// Shortest tone reported, ms; default 150.
    pub min_duration_ms: u32,
    /// Longest tone reported, ms; default 2000 (a longer steady tone is not a beep).
    pub max_duration_ms: u32,
    /// Minimum tone amplitude (peak, dBFS); default −45.
    pub min_level_dbfs: f32,
    /// Share of a frame's energy the tone must hold (0..=1); default 0.8 (tone ≥ 6 dB above
    /// everything else).
    pub min_tone_fraction: f32,
    /// Relative frequency drift allowed within one beep; default 0.02 (±2 %).
    pub max_freq_deviation: f32,
    /// Non-tonal time bridged inside a beep, ms; default 20 (one frame).
    pub max_gap_ms: u32,
}

impl Default for BeepConfig {
    fn default() -> Self {
        Self {
            min_freq_hz: 400.0,
            max_freq_hz: 2000.0,
            min_duration_ms: 150,
            max_duration_ms: 2000,
            min_level_dbfs: -45.0,
            min_tone_fraction: 0.8,
            max_freq_deviation: 0.02,
            max_gap_ms: 20,
        }
    }
}

/// Why a [`BeepDetector`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BeepError {
    /// Only 8000 and 16000 Hz are supported.
    #[error("unsupported beep detector sample rate {0} Hz (supported: 8000, 16000)")]
    UnsupportedRate(u32),
    /// The frequency band is empty, not finite, or above a quarter of the sample rate.
    #[error("invalid beep band {min}..{max} Hz (need 50 <= min < max <= {limit})")]
    InvalidBand {
        /// Configured lower edge.
        min: f32,
        /// Configured upper edge.
        max: f32,
        /// Highest allowed upper edge (sample rate / 4).
        limit: f32,
    },
    /// `min_duration_ms` is zero or above `max_duration_ms`.
    #[error("invalid beep durations {min_ms}..{max_ms} ms (need 0 < min <= max)")]
    InvalidDuration {
        /// Configured minimum.
        min_ms: u32,
        /// Configured maximum.
        max_ms: u32,
    },
    /// A ratio outside its range or a NaN level.
    #[error("invalid beep setting {name} = {value}")]
    InvalidSetting {
        /// Field name.
        name: &'static str,
        /// Offending value.
        value: f32,
    },
}

impl BeepConfig {
    /// Checks the settings for a stream at `sample_rate` Hz.
    pub fn validate(&self, sample_rate: u32) -> Result<(), BeepError> {
        if sample_rate != 8000 && sample_rate != 16000 {
            return Err(BeepError::UnsupportedRate(sample_rate));
        }
        let limit = sample_rate as f32 / 4.0;
        let (min, max) = (self.min_freq_hz, self.max_freq_hz);
        if !(min.is_finite() && max.is_finite() && min >= 50.0 && min < max && max <= limit) {
            return Err(BeepError::InvalidBand { min, max, limit });
        }
        if self.min_duration_ms == 0 || self.min_duration_ms > self.max_duration_ms {
            return Err(BeepError::InvalidDuration {
                min_ms: self.min_duration_ms,
                max_ms: self.max_duration_ms,
            });
        }
        let checks = [
            (
                "min_tone_fraction",
                self.min_tone_fraction,
                self.min_tone_fraction > 0.0 && self.min_tone_fraction <= 1.0,
            ),
            (
                "max_freq_deviation",
                self.max_freq_deviation,
                self.max_freq_deviation > 0.0 && self.max_freq_deviation < 0.5,
            ),
            (
                "min_level_dbfs",
                self.min_level_dbfs,
                self.min_level_dbfs.is_finite() && self.min_level_dbfs <= 0.0,
            ),
        ];
        for (name, value, ok) in checks {
            if !ok {
                return Err(BeepError::InvalidSetting { name, value });
            }
        }
        Ok(())
    }
}

/// A beep that has just stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeepEnded {
    /// End of the beep's last tonal frame, ms since the detector was created or reset.
    pub at_ms: u64,
    /// Mean frequency over the beep, Hz.
    pub freq_hz: f32,
    /// From the start of its first tonal frame to the end of its last, ms.
    pub duration_ms: u32,
}

/// A run of tonal frames being tracked.
#[derive(Debug, Clone, Copy)]
struct Run {
    start_ms: u64,
    last_end_ms: u64,
    frames: u32,
    freq_sum: f64,
    gap_ms: u32,
}

impl Run {
    fn mean(&self) -> f64 {
        self.freq_sum / f64::from(self.frames.max(1))
    }
}

/// Streaming beep detector for one audio stream.
pub struct BeepDetector {
    config: BeepConfig,
    sample_rate: u32,
    /// Frame length in samples (20 ms).
    frame: usize,
    /// The scanning bank, lowest frequency first.
    bank: Vec<Goertzel>,
    /// Frequency of each bank bin, Hz.
    bank_freqs: Vec<f64>,
    /// Minimum DFT power of a tone at the level floor over one frame.
    min_power: f64,
    /// Samples of the frame being filled, scaled to ±1.
    cur: Vec<f32>,
    /// Samples in completed frames.
    samples: u64,
    run: Option<Run>,
}

impl BeepDetector {
    /// Creates a detector for 8000 or 16000 Hz mono audio.
    pub fn new(sample_rate: u32, config: &BeepConfig) -> Result<Self, BeepError> {
        config.validate(sample_rate)?;
        let fs = f64::from(sample_rate);
        let frame = sample_rate as usize / 50;
        let (lo, hi) = (f64::from(config.min_freq_hz), f64::from(config.max_freq_hz));
        let count = ((hi - lo) / BANK_STEP_HZ).floor() as usize + 1;
        let mut bank_freqs: Vec<f64> = (0..count).map(|i| lo + BANK_STEP_HZ * i as f64).collect();
        if bank_freqs.last().is_some_and(|&f| f < hi - 1e-9) {
            bank_freqs.push(hi);
        }
        let bank = bank_freqs.iter().map(|&f| Goertzel::new(f, fs)).collect();
        let amp = 10f64.powf(f64::from(config.min_level_dbfs) / 20.0);
        // A sine of amplitude A over N samples has DFT power (A·N/2)².
        let min_power = (amp * frame as f64 / 2.0).powi(2);
        Ok(Self {
            config: config.clone(),
            sample_rate,
            frame,
            bank,
            bank_freqs,
            min_power,
            cur: Vec::with_capacity(frame),
            samples: 0,
            run: None,
        })
    }

    /// Feeds audio of any length; appends each beep that ended to `out`.
    pub fn push(&mut self, pcm: &[i16], out: &mut Vec<BeepEnded>) {
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (self.frame - self.cur.len()).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.cur
                .extend(now.iter().map(|&s| f32::from(s) * (1.0 / 32768.0)));
            rest = later;
            if self.cur.len() == self.frame {
                self.end_frame(out);
            }
        }
    }

    /// Whether a tone that already qualifies as a beep (long enough) is sounding now.
    pub fn tone_in_progress(&self) -> bool {
        self.run.is_some_and(|r| {
            r.gap_ms == 0 && r.last_end_ms - r.start_ms >= u64::from(self.config.min_duration_ms)
        })
    }

    /// Forgets all state, including buffered audio and the clock.
    pub fn reset(&mut self) {
        self.cur.clear();
        self.samples = 0;
        self.run = None;
    }

    /// Input sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn end_frame(&mut self, out: &mut Vec<BeepEnded>) {
        let start_ms = self.samples * 1000 / u64::from(self.sample_rate);
        self.samples += self.frame as u64;
        let end_ms = start_ms + FRAME_MS;
        let tone = self.tonal_frequency();
        self.cur.clear();
        let dev = f64::from(self.config.max_freq_deviation);
        match (tone, self.run.as_mut()) {
            (Some(f), Some(run)) if (f - run.mean()).abs() <= dev * run.mean() => {
                run.frames += 1;
                run.freq_sum += f;
                run.last_end_ms = end_ms;
                run.gap_ms = 0;
            }
            (Some(f), _) => {
                self.finish(out);
                self.run = Some(Run {
                    start_ms,
                    last_end_ms: end_ms,
                    frames: 1,
                    freq_sum: f,
                    gap_ms: 0,
                });
            }
            (None, Some(run)) => {
                run.gap_ms += FRAME_MS as u32;
                if run.gap_ms > self.config.max_gap_ms {
                    self.finish(out);
                }
            }
            (None, None) => {}
        }
    }

    /// Ends the current run, reporting it if it was a beep.
    fn finish(&mut self, out: &mut Vec<BeepEnded>) {
        let Some(run) = self.run.take() else {
            return;
        };
        let duration = run.last_end_ms - run.start_ms;
        let (min, max) = (
            u64::from(self.config.min_duration_ms),
            u64::from(self.config.max_duration_ms),
        );
        if (min..=max).contains(&duration) {
            out.push(BeepEnded {
                at_ms: run.last_end_ms,
                freq_hz: run.mean() as f32,
                duration_ms: u32::try_from(duration).unwrap_or(u32::MAX),
            });
        }
    }

    /// The frequency of the single dominant tone filling the current frame, if there is one.
    fn tonal_frequency(&self) -> Option<f64> {
        let x = &self.cur;
        let n = x.len() as f64;
        let energy: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        // A qualifying tone alone has energy 2·P/N ≥ 2·min_power/N.
        if energy * f64::from(self.config.min_tone_fraction) < 2.0 * self.min_power / n {
            return None;
        }
        let (best, _) = self
            .bank
            .iter()
            .enumerate()
            .map(|(i, g)| (i, g.power(x)))
            .fold(
                (0, f64::MIN),
                |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
            );
        let bin_freq = self.bank_freqs[best];
        let fs = f64::from(self.sample_rate);
        let half = x.len() / 2;
        let bin = self.bank[best];
        let (r1, i1) = bin.dft(&x[..half]);
        let (r2, i2) = bin.dft(&x[half..2 * half]);
        // Phase advance over `half` samples: arg(X2 · conj(X1)).
        let advance = (i2 * r1 - r2 * i1).atan2(r2 * r1 + i2 * i1);
        let tau = 2.0 * std::f64::consts::PI;
        let expected = tau * bin_freq * half as f64 / fs;
        let mut delta = advance - expected;
        delta -= tau * (delta / tau).round();
        let freq = bin_freq + delta * fs / (tau * half as f64);
        let slack = BANK_STEP_HZ / 2.0;
        if !freq.is_finite()
            || freq < f64::from(self.config.min_freq_hz) - slack
            || freq > f64::from(self.config.max_freq_hz) + slack
        {
            return None;
        }
        let power = Goertzel::new(freq, fs).power(x);
        if power < self.min_power {
            return None;
        }
        let tone_energy = 2.0 * power / n;
        (tone_energy >= f64::from(self.config.min_tone_fraction) * energy).then_some(freq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::f64::consts::PI;

    fn wav(name: &str) -> Vec<i16> {
        let path = format!("{}/fixtures/audio/{name}", env!("CARGO_MANIFEST_DIR"));
        hound::WavReader::open(&path)
            .unwrap()
            .samples::<i16>()
            .map(Result::unwrap)
            .collect()
    }

    fn detect(rate: u32, audio: &[i16], chunk: usize) -> Vec<BeepEnded> {
        let mut d = BeepDetector::new(rate, &BeepConfig::default()).unwrap();
        let mut out = Vec::new();
        for c in audio.chunks(chunk.max(1)) {
            d.push(c, &mut out);
        }
        out
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

    /// `lead` ms silence, a sine of `ms` at `db` dBFS peak, `tail` ms silence; white noise at
    /// `noise_db` dBFS RMS over everything when given.
    fn tone(
        rate: u32,
        f: f64,
        db: f64,
        lead: f64,
        ms: f64,
        tail: f64,
        noise_db: Option<f64>,
    ) -> Vec<i16> {
        let fs = f64::from(rate);
        let amp = 32768.0 * 10f64.powf(db / 20.0);
        let (a, b) = (
            (lead * fs / 1000.0) as usize,
            ((lead + ms) * fs / 1000.0) as usize,
        );
        let total = ((lead + ms + tail) * fs / 1000.0) as usize;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        (0..total)
            .map(|i| {
                let mut v = if (a..b).contains(&i) {
                    amp * (2.0 * PI * f * i as f64 / fs + 0.7).sin()
                } else {
                    0.0
                };
                if let Some(nd) = noise_db {
                    v += 32768.0 * 10f64.powf(nd / 20.0) * rng.gauss();
                }
                v.round().clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    #[test]
    fn voicemail_fixture_has_one_1khz_beep_ending_at_its_end() {
        let audio = wav("voicemail_greeting_beep.wav");
        // The beep ends where the final second of digital silence starts.
        let last = audio.iter().rposition(|&s| s != 0).unwrap() as u64;
        let end_ms = (last + 1) * 1000 / 8000;
        for chunk in [160, 77, 1000] {
            let found = detect(8000, &audio, chunk);
            assert_eq!(found.len(), 1, "{found:?}");
            let b = found[0];
            assert!((b.freq_hz - 1000.0).abs() < 10.0, "{b:?}");
            assert!((460..=500).contains(&b.duration_ms), "{b:?}");
            assert!(
                b.at_ms <= end_ms && end_ms - b.at_ms <= 20,
                "{b:?} vs {end_ms}"
            );
        }
    }

    #[test]
    fn no_beep_in_any_other_fixture() {
        let dir = format!("{}/fixtures/audio", env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.ends_with(".wav") || name == "voicemail_greeting_beep.wav" {
                continue;
            }
            let audio = wav(&name);
            assert!(detect(8000, &audio, 160).is_empty(), "{name}");
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} fixtures");
    }

    #[test]
    fn synthetic_tones_at_several_frequencies_and_levels() {
        for rate in [8000, 16000] {
            for f in [440.0, 850.0, 1000.0, 1400.0, 1975.0] {
                for db in [-3.0, -20.0, -35.0] {
                    let found = detect(rate, &tone(rate, f, db, 113.0, 400.0, 200.0, None), 160);
                    assert_eq!(found.len(), 1, "{rate} {f} {db}: {found:?}");
                    let b = found[0];
                    assert!(
                        (f64::from(b.freq_hz) - f).abs() < f * 0.01,
                        "{rate} {f} {db}: {b:?}"
                    );
                    assert!((380..=400).contains(&b.duration_ms), "{b:?}");
                    // True end 513 ms; reported at the end of the last whole tonal frame.
                    assert!((493..=513).contains(&b.at_ms), "{b:?}");
                }
            }
        }
    }

    #[test]
    fn tones_in_noise() {
        // White noise 10 dB below a −10 dBFS-peak tone (tone power −13 dBFS).
        for f in [440.0, 850.0, 1000.0, 1400.0] {
            let found = detect(
                8000,
                &tone(8000, f, -10.0, 300.0, 300.0, 300.0, Some(-23.0)),
                160,
            );
            assert_eq!(found.len(), 1, "{f}: {found:?}");
            assert!(
                (f64::from(found[0].freq_hz) - f).abs() < f * 0.01,
                "{found:?}"
            );
        }
        // Noise alone, several levels.
        for nd in [-60.0, -40.0, -20.0, -6.0] {
            let noise = tone(8000, 1000.0, -200.0, 0.0, 0.0, 3000.0, Some(nd));
            assert!(detect(8000, &noise, 160).is_empty(), "{nd}");
        }
    }

    #[test]
    fn too_short_too_quiet_out_of_band_and_dual_tones_are_ignored() {
        for (name, audio) in [
            (
                "100 ms",
                tone(8000, 1000.0, -6.0, 100.0, 100.0, 200.0, None),
            ),
            (
                "-55 dBFS",
                tone(8000, 1000.0, -55.0, 100.0, 500.0, 200.0, None),
            ),
            ("300 Hz", tone(8000, 300.0, -6.0, 100.0, 500.0, 200.0, None)),
            (
                "2600 Hz",
                tone(8000, 2600.0, -6.0, 100.0, 500.0, 200.0, None),
            ),
            (
                "3 s tone",
                tone(8000, 1000.0, -6.0, 100.0, 3000.0, 200.0, None),
            ),
        ] {
            assert!(detect(8000, &audio, 160).is_empty(), "{name}");
        }
        // A long DTMF digit (two tones) and the 440+480 Hz ringback.
        let fs = 8000.0;
        for (f1, f2) in [(697.0, 1209.0), (941.0, 1477.0), (440.0, 480.0)] {
            let audio: Vec<i16> = (0..8000)
                .map(|i| {
                    let t = i as f64 / fs;
                    (8000.0 * ((2.0 * PI * f1 * t).sin() + (2.0 * PI * f2 * t).sin())) as i16
                })
                .collect();
            assert!(detect(8000, &audio, 160).is_empty(), "{f1}+{f2}");
        }
    }

    #[test]
    fn a_still_sounding_tone_is_not_reported_and_a_lost_frame_is_bridged() {
        let mut d = BeepDetector::new(8000, &BeepConfig::default()).unwrap();
        let mut out = Vec::new();
        let mut audio = tone(8000, 1000.0, -6.0, 0.0, 300.0, 0.0, None);
        d.push(&audio, &mut out);
        assert!(out.is_empty());
        assert!(d.tone_in_progress());
        // One lost 20 ms packet, then the tone again, then silence: one beep.
        audio.extend(vec![0; 160]);
        audio.extend(tone(8000, 1000.0, -6.0, 0.0, 300.0, 200.0, None));
        let found = detect(8000, &audio, 160);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].duration_ms >= 600, "{found:?}");
        assert_eq!(d.sample_rate(), 8000);
        d.reset();
        assert!(!d.tone_in_progress());
    }

    #[test]
    fn config_is_validated_and_deserialised() {
        let ok = BeepConfig::default();
        assert!(BeepDetector::new(8000, &ok).is_ok());
        assert_eq!(
            BeepDetector::new(44100, &ok).err(),
            Some(BeepError::UnsupportedRate(44100))
        );
        let bad = BeepConfig {
            max_freq_hz: 3000.0,
            ..ok.clone()
        };
        assert!(matches!(
            BeepDetector::new(8000, &bad),
            Err(BeepError::InvalidBand { .. })
        ));
        assert!(BeepDetector::new(16000, &bad).is_ok());
        let bad = BeepConfig {
            min_duration_ms: 0,
            ..ok.clone()
        };
        assert!(matches!(
            bad.validate(8000),
            Err(BeepError::InvalidDuration { .. })
        ));
        let bad = BeepConfig {
            min_tone_fraction: f32::NAN,
            ..ok.clone()
        };
        assert!(matches!(
            bad.validate(8000),
            Err(BeepError::InvalidSetting {
                name: "min_tone_fraction",
                ..
            })
        ));
        let parsed: BeepConfig = serde_json::from_str(r#"{"min_freq_hz": 300}"#).unwrap();
        assert_eq!(parsed.min_freq_hz, 300.0);
        assert_eq!(parsed.max_freq_hz, 2000.0);
        assert!(serde_json::from_str::<BeepConfig>(r#"{"nope": 1}"#).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_audio_never_panics(audio in proptest::collection::vec(any::<i16>(), 0..6000), chunk in 1usize..700, wide in any::<bool>()) {
            let rate = if wide { 16000 } else { 8000 };
            let found = detect(rate, &audio, chunk);
            // Each beep needs at least 150 ms of audio.
            prop_assert!(found.len() <= audio.len() / (rate as usize * 3 / 20) + 1);
            let _ = detect(rate, &vec![i16::MIN; 4000], chunk);
        }
    }
}
