//! Voice activity detection: a real model (libfvad through `webrtc-vad`, or `earshot`), an
//! energy floor, and start/end hysteresis.
//!
//! Audio of any chunking is cut into 20 ms frames of *input* audio; each completed frame gives
//! one [`VadFrame`]. Where the backend cannot take the input rate, audio is resampled internally
//! with [`super::resample::Resampler`] (webrtc: 24 kHz → 8 kHz; earshot: everything → 16 kHz,
//! which it reads in 256-sample frames; a 20 ms input frame's decision is the mean score of the
//! earshot frames completed during it, or the previous decision if none completed).
//!
//! A frame is *voiced* when the model says so **and** its RMS is at least
//! [`VadConfig::energy_floor_dbfs`]. Hysteresis then turns frames into transitions:
//! [`VadTransition::SpeechStart`] once a run holds `min_speech_ms` of voiced frames (one unvoiced
//! frame inside a run is bridged, two end the run), and [`VadTransition::SpeechEnd`] once
//! `min_silence_ms` of unvoiced frames follow speech.
//!
//! # Defaults
//! WebRtc backend in mode 3 (VeryAggressive). Survey on the synthetic fixtures at 8 kHz (test
//! `webrtc_mode_survey`, energy floor off), share of frames marked voiced:
//!
//! | fixture | mode 0 | 1 | 2 | 3 |
//! |---|---|---|---|---|
//! | voiced buzz −20 dBFS (and with −40 dBFS white noise) | 100 % | 100 % | 100 % | 100 % |
//! | voiced buzz −40 dBFS | 94 % | 93 % | 58 % | 30 % |
//! | white noise −30 dBFS | 100 % | 100 % | 78 % | 3 % |
//! | 1 kHz tone −20 dBFS | 100 % | 100 % | 100 % | 100 % |
//!
//! Only mode 3 rejects loud broadband noise (line noise, wind, a car), which would otherwise
//! cause false barge-ins; the price is missing very quiet speech (−40 dBFS), which the −50 dBFS
//! floor would pass. No mode rejects a steady tone; that is left to hysteresis and the DTMF/beep
//! detectors. The energy floor (−50 dBFS) cuts the model's hangover into silence and line hiss.

use std::str::FromStr;

use super::linear16::{dbfs, rms};
use super::resample::{ResampleError, Resampler};

/// Duration of one decision frame.
const FRAME_MS: u32 = 20;
/// earshot's only frame size (16 kHz).
const EARSHOT_FRAME: usize = 256;
/// earshot's only sample rate.
const EARSHOT_RATE: u32 = 16000;

/// Which model decides whether a frame holds speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadBackend {
    /// libfvad (WebRTC's GMM VAD): native 8 kHz, about 1 µs per frame.
    WebRtc,
    /// earshot (small neural net on mel features): 16 kHz only, about 7 µs per 16 ms frame.
    Earshot,
}

impl VadBackend {
    /// Lowercase name, as accepted by [`FromStr`]: `webrtc` or `earshot`.
    pub const fn as_str(self) -> &'static str {
        match self {
            VadBackend::WebRtc => "webrtc",
            VadBackend::Earshot => "earshot",
        }
    }
}

impl FromStr for VadBackend {
    type Err = VadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "webrtc" => Ok(VadBackend::WebRtc),
            "earshot" => Ok(VadBackend::Earshot),
            _ => Err(VadError::UnknownBackend(s.to_string())),
        }
    }
}

/// VAD settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// Model to use; default [`VadBackend::WebRtc`].
    pub backend: VadBackend,
    /// libfvad aggressiveness 0..=3; default 3 (VeryAggressive), see the module doc.
    pub webrtc_mode: u8,
    /// earshot score at or above which a frame is voiced (0..=1); default 0.5.
    pub earshot_threshold: f32,
    /// Frames quieter than this (RMS, dBFS) are unvoiced whatever the model says; default −50.
    pub energy_floor_dbfs: f32,
    /// Voiced time in a run before [`VadTransition::SpeechStart`]; default 100 ms.
    pub min_speech_ms: u32,
    /// Unvoiced time after speech before [`VadTransition::SpeechEnd`]; default 600 ms.
    pub min_silence_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            backend: VadBackend::WebRtc,
            webrtc_mode: 3,
            earshot_threshold: 0.5,
            energy_floor_dbfs: -50.0,
            min_speech_ms: 100,
            min_silence_ms: 600,
        }
    }
}

/// Why a [`Vad`] could not be built (or a backend name parsed).
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    /// Input rate other than 8000/16000/24000/48000.
    #[error("unsupported VAD sample rate {0} Hz (supported: 8000, 16000, 24000, 48000)")]
    UnsupportedRate(u32),
    /// `webrtc_mode` above 3.
    #[error("invalid webrtc VAD mode {0} (expected 0..=3)")]
    InvalidMode(u8),
    /// `earshot_threshold` outside 0..=1 or NaN.
    #[error("invalid earshot threshold {0} (expected 0.0..=1.0)")]
    InvalidThreshold(f32),
    /// `energy_floor_dbfs` is NaN.
    #[error("invalid energy floor {0} dBFS")]
    InvalidEnergyFloor(f32),
    /// Backend name other than `webrtc` / `earshot`.
    #[error("unknown VAD backend {0:?} (expected \"webrtc\" or \"earshot\")")]
    UnknownBackend(String),
    /// The internal resampler could not be built.
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// One decision per 20 ms frame of input audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadFrame {
    /// This frame's raw decision (model AND energy floor), before hysteresis.
    pub voiced: bool,
    /// Frame RMS in dBFS (floor −120).
    pub level_dbfs: f32,
    /// Input samples pushed up to the end of this frame (since creation or [`Vad::reset`]).
    pub end_sample: u64,
    /// A hysteresis transition that fired on this frame, if any.
    pub transition: Option<VadTransition>,
}

/// Speech boundaries after hysteresis. Sample positions count input samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadTransition {
    /// Voiced time in the current run reached `min_speech_ms`; `onset_sample` is the first sample
    /// of the run.
    SpeechStart {
        /// First sample of the voiced run.
        onset_sample: u64,
    },
    /// Unvoiced time reached `min_silence_ms` while in speech.
    SpeechEnd {
        /// End sample of the last voiced frame.
        last_voiced_sample: u64,
    },
}

/// libfvad handle that may move between threads.
struct SendFvad(webrtc_vad::Vad);

// SAFETY: `webrtc_vad::Vad` is `!Send` only because it holds a raw `*mut Fvad`. The libfvad
// state behind it is plain heap memory (no thread-locals, no thread affinity, no global state);
// this wrapper owns it exclusively and never hands out the pointer, so moving it to another
// thread is sound. It is not `Sync`: all access goes through `&mut self`.
unsafe impl Send for SendFvad {}

/// The model plus the resampler and buffer feeding it.
enum Model {
    WebRtc {
        vad: SendFvad,
        mode: u8,
        rate_hz: u32,
        frame: usize,
    },
    Earshot {
        det: Box<earshot::Detector>,
        threshold: f32,
    },
}

/// A streaming voice activity detector for one audio stream.
pub struct Vad {
    config: VadConfig,
    sample_rate: u32,
    frame: usize,
    /// Partial input frame.
    pending: Vec<i16>,
    model: Model,
    /// Resampler to the model's rate, if the input rate is not one the model takes.
    resampler: Option<Resampler>,
    /// Model-rate samples not yet evaluated.
    model_buf: Vec<i16>,
    /// Last model decision, reused when a frame completes no model frame.
    last_model_voiced: bool,
    samples: u64,
    hyst: Hysteresis,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Vad>();
};

fn webrtc_rate(rate: u32) -> Option<webrtc_vad::SampleRate> {
    match rate {
        8000 => Some(webrtc_vad::SampleRate::Rate8kHz),
        16000 => Some(webrtc_vad::SampleRate::Rate16kHz),
        32000 => Some(webrtc_vad::SampleRate::Rate32kHz),
        48000 => Some(webrtc_vad::SampleRate::Rate48kHz),
        _ => None,
    }
}

fn webrtc_mode(mode: u8) -> webrtc_vad::VadMode {
    match mode {
        0 => webrtc_vad::VadMode::Quality,
        1 => webrtc_vad::VadMode::LowBitrate,
        2 => webrtc_vad::VadMode::Aggressive,
        _ => webrtc_vad::VadMode::VeryAggressive,
    }
}

impl Vad {
    /// Creates a detector for `sample_rate` input (8000, 16000, 24000 or 48000 Hz).
    pub fn new(config: &VadConfig, sample_rate: u32) -> Result<Self, VadError> {
        if !matches!(sample_rate, 8000 | 16000 | 24000 | 48000) {
            return Err(VadError::UnsupportedRate(sample_rate));
        }
        if config.webrtc_mode > 3 {
            return Err(VadError::InvalidMode(config.webrtc_mode));
        }
        if !(0.0..=1.0).contains(&config.earshot_threshold) {
            return Err(VadError::InvalidThreshold(config.earshot_threshold));
        }
        if config.energy_floor_dbfs.is_nan() {
            return Err(VadError::InvalidEnergyFloor(config.energy_floor_dbfs));
        }
        let (model, model_rate) = match config.backend {
            VadBackend::WebRtc => {
                let model_rate = if webrtc_rate(sample_rate).is_some() {
                    sample_rate
                } else {
                    8000
                };
                let vad = webrtc_vad::Vad::new_with_rate_and_mode(
                    webrtc_rate(model_rate).unwrap_or(webrtc_vad::SampleRate::Rate8kHz),
                    webrtc_mode(config.webrtc_mode),
                );
                let model = Model::WebRtc {
                    vad: SendFvad(vad),
                    mode: config.webrtc_mode,
                    rate_hz: model_rate,
                    frame: (model_rate / 50) as usize,
                };
                (model, model_rate)
            }
            VadBackend::Earshot => {
                let model = Model::Earshot {
                    det: earshot::Detector::default_boxed(),
                    threshold: config.earshot_threshold,
                };
                (model, EARSHOT_RATE)
            }
        };
        let resampler = if model_rate != sample_rate {
            Some(Resampler::new(sample_rate, model_rate)?)
        } else {
            None
        };
        let frame = (sample_rate / 50) as usize;
        Ok(Self {
            config: config.clone(),
            sample_rate,
            frame,
            pending: Vec::with_capacity(frame),
            model,
            resampler,
            model_buf: Vec::with_capacity(4 * model_rate as usize / 50),
            last_model_voiced: false,
            samples: 0,
            hyst: Hysteresis::default(),
        })
    }

    /// Feeds audio of any length; pushes one [`VadFrame`] per completed 20 ms input frame to
    /// `out` and keeps the remainder for the next call.
    pub fn push(&mut self, pcm: &[i16], out: &mut Vec<VadFrame>) {
        let mut rest = pcm;
        while !rest.is_empty() {
            if self.pending.is_empty() && rest.len() >= self.frame {
                let (frame, later) = rest.split_at(self.frame);
                let f = self.process_frame(frame);
                out.push(f);
                rest = later;
                continue;
            }
            let take = (self.frame - self.pending.len()).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.pending.extend_from_slice(now);
            rest = later;
            if self.pending.len() == self.frame {
                let pending = std::mem::take(&mut self.pending);
                let f = self.process_frame(&pending);
                self.pending = pending;
                self.pending.clear();
                out.push(f);
            }
        }
    }

    /// True between a [`VadTransition::SpeechStart`] and the following `SpeechEnd`.
    pub fn in_speech(&self) -> bool {
        self.hyst.in_speech
    }

    /// Returns to the state right after [`Vad::new`]: model state, buffered audio, hysteresis
    /// and the sample counter are all cleared.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.model_buf.clear();
        if let Some(rs) = self.resampler.as_mut() {
            rs.reset();
        }
        match &mut self.model {
            Model::WebRtc {
                vad, mode, rate_hz, ..
            } => {
                // fvad_reset also resets rate and mode to their defaults: set them again.
                vad.0.reset();
                if let Some(r) = webrtc_rate(*rate_hz) {
                    vad.0.set_sample_rate(r);
                }
                vad.0.set_mode(webrtc_mode(*mode));
            }
            Model::Earshot { det, .. } => det.reset(),
        }
        self.last_model_voiced = false;
        self.samples = 0;
        self.hyst = Hysteresis::default();
    }

    /// Input samples per decision frame (20 ms at the input rate).
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Input sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The configuration this detector was built with.
    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// Decides one complete input frame.
    fn process_frame(&mut self, frame: &[i16]) -> VadFrame {
        let start = self.samples;
        self.samples += frame.len() as u64;
        let level_dbfs = dbfs(rms(frame));

        match self.resampler.as_mut() {
            Some(rs) => rs.process(frame, &mut self.model_buf),
            None => self.model_buf.extend_from_slice(frame),
        }
        let mut score_sum = 0.0f32;
        let mut count = 0u32;
        let mut pos = 0;
        match &mut self.model {
            Model::WebRtc { vad, frame: mf, .. } => {
                while self.model_buf.len() - pos >= *mf {
                    let voiced = vad
                        .0
                        .is_voice_segment(&self.model_buf[pos..pos + *mf])
                        .unwrap_or(false);
                    score_sum += if voiced { 1.0 } else { 0.0 };
                    count += 1;
                    pos += *mf;
                }
            }
            Model::Earshot { det, .. } => {
                while self.model_buf.len() - pos >= EARSHOT_FRAME {
                    let score = det.predict_i16(&self.model_buf[pos..pos + EARSHOT_FRAME]);
                    score_sum += score.clamp(0.0, 1.0);
                    count += 1;
                    pos += EARSHOT_FRAME;
                }
            }
        }
        self.model_buf.drain(..pos);
        if count > 0 {
            let mean = score_sum / count as f32;
            self.last_model_voiced = match &self.model {
                Model::WebRtc { .. } => mean >= 0.5,
                Model::Earshot { threshold, .. } => mean >= *threshold,
            };
        }
        let voiced = self.last_model_voiced && level_dbfs >= self.config.energy_floor_dbfs;
        let transition = self.hyst.step(
            voiced,
            start,
            self.samples,
            self.config.min_speech_ms,
            self.config.min_silence_ms,
        );
        VadFrame {
            voiced,
            level_dbfs,
            end_sample: self.samples,
            transition,
        }
    }
}

/// Start/end hysteresis over frame decisions.
#[derive(Debug, Default)]
struct Hysteresis {
    in_speech: bool,
    /// First sample of the current candidate run (not in speech).
    run_onset: Option<u64>,
    run_voiced_ms: u32,
    /// Consecutive unvoiced frames inside the current run.
    run_gap: u32,
    /// Unvoiced time since the last voiced frame (in speech).
    silence_ms: u32,
    last_voiced_end: u64,
}

impl Hysteresis {
    fn step(
        &mut self,
        voiced: bool,
        start: u64,
        end: u64,
        min_speech_ms: u32,
        min_silence_ms: u32,
    ) -> Option<VadTransition> {
        if !self.in_speech {
            if voiced {
                let onset = *self.run_onset.get_or_insert(start);
                self.run_gap = 0;
                self.run_voiced_ms = self.run_voiced_ms.saturating_add(FRAME_MS);
                self.last_voiced_end = end;
                if self.run_voiced_ms >= min_speech_ms {
                    self.in_speech = true;
                    self.silence_ms = 0;
                    self.clear_run();
                    return Some(VadTransition::SpeechStart {
                        onset_sample: onset,
                    });
                }
            } else if self.run_onset.is_some() {
                self.run_gap += 1;
                if self.run_gap >= 2 {
                    self.clear_run();
                }
            }
            None
        } else if voiced {
            self.silence_ms = 0;
            self.last_voiced_end = end;
            None
        } else {
            self.silence_ms = self.silence_ms.saturating_add(FRAME_MS);
            if self.silence_ms >= min_silence_ms {
                self.in_speech = false;
                self.silence_ms = 0;
                self.clear_run();
                Some(VadTransition::SpeechEnd {
                    last_voiced_sample: self.last_voiced_end,
                })
            } else {
                None
            }
        }
    }

    fn clear_run(&mut self) {
        self.run_onset = None;
        self.run_voiced_ms = 0;
        self.run_gap = 0;
    }
}

/// Synthetic test signals (deterministic).
#[cfg(test)]
pub(crate) mod fixtures {
    use std::f64::consts::PI;

    /// Small deterministic PRNG (xorshift64*), uniform in −1..1.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next_f64(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (v >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    /// Two-pole resonator.
    struct Resonator {
        r: f64,
        a1: f64,
        a2: f64,
        y1: f64,
        y2: f64,
    }
    impl Resonator {
        fn new(freq: f64, bw: f64, rate: f64) -> Self {
            let r = (-PI * bw / rate).exp();
            Self {
                r,
                a1: 2.0 * r * (2.0 * PI * freq / rate).cos(),
                a2: -r * r,
                y1: 0.0,
                y2: 0.0,
            }
        }
        fn run(&mut self, x: f64) -> f64 {
            let y = x + self.a1 * self.y1 + self.a2 * self.y2;
            self.y2 = self.y1;
            self.y1 = y;
            y * (1.0 - self.r)
        }
    }

    /// Speech-like voiced signal, synthesised at 8 kHz (telephone band) and resampled to `rate`
    /// (delay removed): a glottal pulse train around 120 Hz (vibrato and jitter) through three
    /// formant resonators whose targets move between vowels, with a 4 Hz syllable envelope; RMS
    /// normalised to `level_dbfs`.
    pub fn voiced(rate: u32, secs: f64, level_dbfs: f64, seed: u64) -> Vec<i16> {
        let narrow = voiced_8k(secs, level_dbfs, seed);
        if rate == 8000 {
            return narrow;
        }
        let Ok(mut rs) = crate::audio::resample::Resampler::new(8000, rate) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        rs.process(&narrow, &mut out);
        rs.flush(&mut out);
        out.drain(..rs.delay_samples().min(out.len()));
        out.truncate((f64::from(rate) * secs) as usize);
        out
    }

    fn voiced_8k(secs: f64, level_dbfs: f64, seed: u64) -> Vec<i16> {
        let rate = 8000u32;
        let fs = f64::from(rate);
        let n = (fs * secs) as usize;
        let mut rng = Rng(seed | 1);
        let vowels = [
            [730.0, 1090.0, 2440.0],
            [270.0, 2290.0, 3010.0],
            [570.0, 840.0, 2410.0],
            [530.0, 1840.0, 2480.0],
        ];
        let mut raw = Vec::with_capacity(n);
        let mut phase = 0.0;
        let mut prev_pulse = 0.0;
        let mut formants: Vec<Resonator> = Vec::new();
        let mut current_vowel = usize::MAX;
        for i in 0..n {
            let t = i as f64 / fs;
            let vowel = ((t * 4.0) as usize) % vowels.len();
            if vowel != current_vowel {
                current_vowel = vowel;
                let f = vowels[vowel];
                formants = vec![
                    Resonator::new(f[0], 90.0, fs),
                    Resonator::new(f[1], 110.0, fs),
                    Resonator::new(f[2], 170.0, fs),
                ];
            }
            let f0 =
                120.0 * (1.0 + 0.04 * (2.0 * PI * 5.0 * t).sin()) * (1.0 + 0.01 * rng.next_f64());
            phase += f0 / fs;
            // Glottal flow derivative approximation: sharp negative pulse at closure.
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                -1.0
            } else {
                0.3 * (2.0 * PI * phase).sin() * (1.0 - phase)
            };
            let src = pulse - 0.5 * prev_pulse + 0.02 * rng.next_f64();
            prev_pulse = pulse;
            let x = formants.iter_mut().fold(0.0, |acc, r| acc + r.run(src));
            let env = 0.55 + 0.45 * (2.0 * PI * 4.0 * t - PI / 2.0).sin().abs();
            raw.push(x * env);
        }
        normalise(&raw, level_dbfs)
    }

    /// White noise at `level_dbfs` RMS.
    pub fn white_noise(rate: u32, secs: f64, level_dbfs: f64, seed: u64) -> Vec<i16> {
        let mut rng = Rng(seed | 1);
        let raw: Vec<f64> = (0..(f64::from(rate) * secs) as usize)
            .map(|_| rng.next_f64())
            .collect();
        normalise(&raw, level_dbfs)
    }

    /// Pure tone at `level_dbfs` RMS.
    pub fn tone(rate: u32, freq: f64, secs: f64, level_dbfs: f64) -> Vec<i16> {
        let raw: Vec<f64> = (0..(f64::from(rate) * secs) as usize)
            .map(|i| (2.0 * PI * freq * i as f64 / f64::from(rate)).sin())
            .collect();
        normalise(&raw, level_dbfs)
    }

    pub fn silence(rate: u32, secs: f64) -> Vec<i16> {
        vec![0; (f64::from(rate) * secs) as usize]
    }

    fn normalise(raw: &[f64], level_dbfs: f64) -> Vec<i16> {
        let rms = (raw.iter().map(|v| v * v).sum::<f64>() / raw.len().max(1) as f64).sqrt();
        let gain = if rms > 0.0 {
            32768.0 * 10f64.powf(level_dbfs / 20.0) / rms
        } else {
            0.0
        };
        raw.iter()
            .map(|v| (v * gain).round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    fn run(vad: &mut Vad, audio: &[i16], chunk: usize) -> Vec<VadFrame> {
        let mut out = Vec::new();
        for c in audio.chunks(chunk.max(1)) {
            vad.push(c, &mut out);
        }
        out
    }

    fn transitions(frames: &[VadFrame]) -> Vec<(u64, VadTransition)> {
        frames
            .iter()
            .filter_map(|f| f.transition.map(|t| (f.end_sample, t)))
            .collect()
    }

    fn cfg(backend: VadBackend) -> VadConfig {
        VadConfig {
            backend,
            ..VadConfig::default()
        }
    }

    /// 0.5 s silence, 1.5 s voiced, 1.0 s silence.
    fn utterance(rate: u32) -> Vec<i16> {
        let mut a = silence(rate, 0.5);
        a.extend(voiced(rate, 1.5, -20.0, 7));
        a.extend(silence(rate, 1.0));
        a
    }

    #[test]
    fn backend_names() {
        assert_eq!(
            "webrtc".parse::<VadBackend>().ok(),
            Some(VadBackend::WebRtc)
        );
        assert_eq!(
            "Earshot".parse::<VadBackend>().ok(),
            Some(VadBackend::Earshot)
        );
        assert!("silero".parse::<VadBackend>().is_err());
        for b in [VadBackend::WebRtc, VadBackend::Earshot] {
            assert_eq!(b.as_str().parse::<VadBackend>().ok(), Some(b));
        }
    }

    #[test]
    fn rejects_bad_config() {
        let c = VadConfig::default();
        assert!(matches!(
            Vad::new(&c, 44100),
            Err(VadError::UnsupportedRate(44100))
        ));
        assert!(matches!(
            Vad::new(&c, 32000),
            Err(VadError::UnsupportedRate(32000))
        ));
        let bad = VadConfig {
            webrtc_mode: 4,
            ..c.clone()
        };
        assert!(matches!(
            Vad::new(&bad, 8000),
            Err(VadError::InvalidMode(4))
        ));
        let bad = VadConfig {
            earshot_threshold: f32::NAN,
            ..c.clone()
        };
        assert!(Vad::new(&bad, 8000).is_err());
        let bad = VadConfig {
            earshot_threshold: 1.5,
            ..c.clone()
        };
        assert!(Vad::new(&bad, 8000).is_err());
        let bad = VadConfig {
            energy_floor_dbfs: f32::NAN,
            ..c
        };
        assert!(Vad::new(&bad, 8000).is_err());
    }

    #[test]
    fn speech_start_and_end_timing_all_backends_and_rates() {
        for backend in [VadBackend::WebRtc, VadBackend::Earshot] {
            for rate in [8000u32, 16000, 24000, 48000] {
                let mut vad = Vad::new(&cfg(backend), rate).unwrap();
                assert_eq!(vad.frame_samples(), rate as usize / 50);
                let frames = run(&mut vad, &utterance(rate), rate as usize / 50);
                assert_eq!(frames.len(), 150);
                let ms = |s: u64| s as f64 * 1000.0 / f64::from(rate);
                let tr = transitions(&frames);
                assert_eq!(tr.len(), 2, "{backend:?} {rate}: {tr:?}");
                let (fired, VadTransition::SpeechStart { onset_sample }) = tr[0] else {
                    panic!("{backend:?} {rate}: first transition {:?}", tr[0]);
                };
                // webrtc: onset within 60 ms of the true start, fired ≈ onset + min_speech_ms.
                // earshot needs 100-200 ms of context before its score rises on these
                // synthetic vowels, so its window is wider.
                let (onset_tol, max_start) = match backend {
                    VadBackend::WebRtc => (60.0, 180.0),
                    VadBackend::Earshot => (220.0, 360.0),
                };
                let onset_err = ms(onset_sample) - 500.0;
                assert!(
                    (-20.0..=onset_tol).contains(&onset_err),
                    "{backend:?} {rate} onset {}",
                    ms(onset_sample)
                );
                let start_delay = ms(fired) - ms(onset_sample);
                assert!(
                    (100.0..=120.0).contains(&start_delay),
                    "{backend:?} {rate} start {start_delay} ms after onset"
                );
                assert!(
                    ms(fired) - 500.0 <= max_start,
                    "{backend:?} {rate} start at {}",
                    ms(fired)
                );
                let (fired, VadTransition::SpeechEnd { last_voiced_sample }) = tr[1] else {
                    panic!("{backend:?} {rate}: second transition {:?}", tr[1]);
                };
                assert!(
                    (ms(last_voiced_sample) - 2000.0).abs() <= 60.0,
                    "{backend:?} {rate} last voiced {}",
                    ms(last_voiced_sample)
                );
                let end_delay = ms(fired) - 2000.0;
                assert!(
                    (600.0..=680.0).contains(&end_delay),
                    "{backend:?} {rate} end after {end_delay} ms"
                );
                assert!(!vad.in_speech());
                // Voiced frames cover most of the voiced region.
                let voiced_in = frames[40..100].iter().filter(|f| f.voiced).count();
                assert!(voiced_in >= 57, "{backend:?} {rate}: {voiced_in}/60 voiced");
                assert!(frames[..25].iter().chain(&frames[102..]).all(|f| !f.voiced));
            }
        }
    }

    #[test]
    fn silence_and_quiet_noise_never_start_speech() {
        for backend in [VadBackend::WebRtc, VadBackend::Earshot] {
            for rate in [8000u32, 16000, 24000] {
                for audio in [silence(rate, 3.0), white_noise(rate, 3.0, -60.0, 3)] {
                    let mut vad = Vad::new(&cfg(backend), rate).unwrap();
                    let frames = run(&mut vad, &audio, 333);
                    assert!(
                        frames.iter().all(|f| !f.voiced && f.transition.is_none()),
                        "{backend:?} {rate}"
                    );
                    assert!(!vad.in_speech());
                }
                let mut vad = Vad::new(&cfg(backend), rate).unwrap();
                let frames = run(&mut vad, &silence(rate, 0.1), 160);
                assert!(frames.iter().all(|f| f.level_dbfs == -120.0));
            }
        }
    }

    #[test]
    fn short_click_does_not_start_speech() {
        for backend in [VadBackend::WebRtc, VadBackend::Earshot] {
            for rate in [8000u32, 16000, 24000] {
                for click in [
                    voiced(rate, 0.04, -10.0, 5),
                    white_noise(rate, 0.04, -10.0, 9),
                ] {
                    let mut audio = silence(rate, 0.5);
                    audio.extend(click);
                    audio.extend(silence(rate, 0.5));
                    let mut vad = Vad::new(&cfg(backend), rate).unwrap();
                    let frames = run(&mut vad, &audio, 160);
                    assert!(transitions(&frames).is_empty(), "{backend:?} {rate}");
                }
            }
        }
    }

    #[test]
    fn single_unvoiced_frame_is_bridged_two_end_the_run() {
        let c = VadConfig::default();
        let mut h = Hysteresis::default();
        let seq = [true, true, false, true, true, true];
        let mut fired = None;
        for (i, &v) in seq.iter().enumerate() {
            let i = i as u64;
            if let Some(t) = h.step(v, i * 160, (i + 1) * 160, c.min_speech_ms, c.min_silence_ms) {
                fired = Some((i, t));
            }
        }
        assert_eq!(
            fired,
            Some((5, VadTransition::SpeechStart { onset_sample: 0 }))
        );
        let mut h = Hysteresis::default();
        let seq = [true, true, false, false, true, true, true, true, true];
        let mut fired = None;
        for (i, &v) in seq.iter().enumerate() {
            let i = i as u64;
            if let Some(t) = h.step(v, i * 160, (i + 1) * 160, c.min_speech_ms, c.min_silence_ms) {
                fired = Some((i, t));
            }
        }
        assert_eq!(
            fired,
            Some((
                8,
                VadTransition::SpeechStart {
                    onset_sample: 4 * 160
                }
            ))
        );
    }

    #[test]
    fn reset_restores_initial_state() {
        for backend in [VadBackend::WebRtc, VadBackend::Earshot] {
            let audio = utterance(8000);
            let mut vad = Vad::new(&cfg(backend), 8000).unwrap();
            let first = run(&mut vad, &audio[..12_345], 160);
            vad.reset();
            let second = run(&mut vad, &audio[..12_345], 160);
            assert_eq!(first, second, "{backend:?}");
        }
    }

    /// Survey used to choose the default webrtc mode (printed with --nocapture): fraction of
    /// frames marked voiced per fixture. Asserts what the default relies on.
    #[test]
    fn webrtc_mode_survey() {
        let rate = 8000;
        let fixtures: Vec<(&str, Vec<i16>)> = vec![
            ("voiced -20 dBFS", voiced(rate, 3.0, -20.0, 11)),
            ("voiced -40 dBFS", voiced(rate, 3.0, -40.0, 12)),
            ("voiced -20 + noise -40", {
                let v = voiced(rate, 3.0, -20.0, 13);
                let n = white_noise(rate, 3.0, -40.0, 14);
                v.iter()
                    .zip(&n)
                    .map(|(a, b)| a.saturating_add(*b))
                    .collect()
            }),
            ("white noise -30 dBFS", white_noise(rate, 3.0, -30.0, 15)),
            ("white noise -45 dBFS", white_noise(rate, 3.0, -45.0, 16)),
            ("tone 1 kHz -20 dBFS", tone(rate, 1000.0, 3.0, -20.0)),
            ("hum 50 Hz -30 dBFS", tone(rate, 50.0, 3.0, -30.0)),
        ];
        let mut table = Vec::new();
        for mode in 0..=3u8 {
            let c = VadConfig {
                webrtc_mode: mode,
                energy_floor_dbfs: -120.0,
                ..VadConfig::default()
            };
            let mut row = Vec::new();
            for (_, audio) in &fixtures {
                let mut vad = Vad::new(&c, rate).unwrap();
                let frames = run(&mut vad, audio, 160);
                let v = frames.iter().filter(|f| f.voiced).count() as f64 / frames.len() as f64;
                row.push(v);
            }
            println!(
                "mode {mode}: {}",
                fixtures
                    .iter()
                    .zip(&row)
                    .map(|((n, _), v)| format!("{n}: {:.0}%", v * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            table.push(row);
        }
        let default = &table[3];
        assert!(
            default[0] > 0.9 && default[2] > 0.9,
            "mode 3 must keep the voiced fixtures"
        );
        assert!(
            default[3] <= table[0][3] && default[5] <= table[0][5],
            "mode 3 no worse than mode 0 on noise"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn chunking_gives_same_frames(
            sizes in proptest::collection::vec(1usize..700, 1..20),
            earshot in any::<bool>(),
            rate_idx in 0usize..3,
        ) {
            let rate = [8000u32, 16000, 24000][rate_idx];
            let backend = if earshot { VadBackend::Earshot } else { VadBackend::WebRtc };
            let mut audio = silence(rate, 0.3);
            audio.extend(voiced(rate, 0.6, -25.0, 3));
            audio.extend(silence(rate, 0.8));
            let mut reference_vad = Vad::new(&cfg(backend), rate).unwrap();
            let reference = run(&mut reference_vad, &audio, rate as usize / 50);
            let mut vad = Vad::new(&cfg(backend), rate).unwrap();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut k = 0;
            while pos < audio.len() {
                let n = sizes[k % sizes.len()].min(audio.len() - pos);
                vad.push(&audio[pos..pos + n], &mut out);
                pos += n;
                k += 1;
            }
            prop_assert_eq!(transitions(&out), transitions(&reference));
            prop_assert_eq!(out, reference);
        }

        #[test]
        fn random_audio_never_panics(audio in proptest::collection::vec(any::<i16>(), 0..3000), earshot in any::<bool>()) {
            let backend = if earshot { VadBackend::Earshot } else { VadBackend::WebRtc };
            for rate in [8000u32, 24000] {
                let mut vad = Vad::new(&cfg(backend), rate).unwrap();
                let mut out = Vec::new();
                vad.push(&audio, &mut out);
                vad.push(&[], &mut out);
                prop_assert_eq!(out.len(), audio.len() / vad.frame_samples());
            }
        }
    }
}
