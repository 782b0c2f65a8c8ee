//! A caller utterance: 8 kHz mono PCM cut into 20 ms frames, with the span of its voiced
//! audio, so the harness knows when speech begins and ends.
//!
//! Voiced means a 20 ms window at or above [`VOICED_DBFS`], the level at which the recognizer
//! fakes and the gateway's VAD hear speech.

use crate::audio::linear16::{dbfs, rms};

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES_8K: usize = 160;
/// One frame, in milliseconds.
pub const FRAME_MS: u64 = 20;
/// A 20 ms window at or above this level (dBFS) is voiced.
pub const VOICED_DBFS: f32 = -40.0;

/// A caller utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// Where it came from (a fixture's file name, or `persona`).
    pub name: String,
    /// 8 kHz mono PCM, padded with silence to whole 20 ms frames.
    pub pcm: Vec<i16>,
    /// The first frame with voiced audio.
    pub onset_frame: usize,
    /// The last frame with voiced audio.
    pub end_frame: usize,
}

/// Why audio cannot be a clip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClipError {
    /// No 20 ms window reaches the voicing threshold.
    #[error("{0}: no voiced audio (no 20 ms window at or above {VOICED_DBFS} dBFS)")]
    Unvoiced(String),
    /// The WAV file is not 8 kHz mono 16-bit PCM, or cannot be read.
    #[error("{name}: {reason}")]
    Wav {
        /// The file.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Clip {
    /// A clip of `pcm` (8 kHz mono), padded to whole frames.
    pub fn from_pcm(name: impl Into<String>, mut pcm: Vec<i16>) -> Result<Clip, ClipError> {
        let name = name.into();
        let frames = pcm.len().div_ceil(FRAME_SAMPLES_8K);
        pcm.resize(frames * FRAME_SAMPLES_8K, 0);
        let voiced: Vec<bool> = pcm
            .chunks(FRAME_SAMPLES_8K)
            .map(|w| dbfs(rms(w)) >= VOICED_DBFS)
            .collect();
        let Some(onset_frame) = voiced.iter().position(|v| *v) else {
            return Err(ClipError::Unvoiced(name));
        };
        let end_frame = voiced.iter().rposition(|v| *v).unwrap_or(onset_frame);
        Ok(Clip {
            name,
            pcm,
            onset_frame,
            end_frame,
        })
    }

    /// A clip from the bytes of a WAV file (8 kHz, mono, 16-bit PCM).
    pub fn from_wav_bytes(name: impl Into<String>, bytes: &[u8]) -> Result<Clip, ClipError> {
        let name = name.into();
        let wav_error = |reason: String| ClipError::Wav {
            name: name.clone(),
            reason,
        };
        let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes))
            .map_err(|e| wav_error(e.to_string()))?;
        let spec = reader.spec();
        if spec.sample_rate != 8000
            || spec.channels != 1
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(wav_error(format!(
                "need 8 kHz mono 16-bit PCM, got {} Hz, {} channel(s), {} bits",
                spec.sample_rate, spec.channels, spec.bits_per_sample
            )));
        }
        let pcm = reader
            .samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| wav_error(e.to_string()))?;
        Clip::from_pcm(name, pcm)
    }

    /// Number of 20 ms frames.
    pub fn frames(&self) -> usize {
        self.pcm.len() / FRAME_SAMPLES_8K
    }

    /// Frame `n` (160 samples); empty past the end.
    pub fn frame(&self, n: usize) -> &[i16] {
        self.pcm
            .get(n * FRAME_SAMPLES_8K..(n + 1) * FRAME_SAMPLES_8K)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(samples: usize, amplitude: f32) -> Vec<i16> {
        (0..samples)
            .map(|i| (amplitude * (i as f32 * 0.3).sin()) as i16)
            .collect()
    }

    #[test]
    fn voiced_span_is_found_and_padded() {
        let mut pcm = vec![0; 400];
        pcm.extend(tone(800, 8000.0));
        pcm.extend(vec![0; 500]);
        let clip = Clip::from_pcm("t", pcm).expect("voiced");
        assert_eq!(clip.pcm.len() % FRAME_SAMPLES_8K, 0);
        assert_eq!(clip.frames(), 11);
        assert_eq!(clip.onset_frame, 2);
        assert_eq!(clip.end_frame, 7);
        assert_eq!(clip.frame(10).len(), FRAME_SAMPLES_8K);
        assert!(clip.frame(11).is_empty());
    }

    #[test]
    fn silence_is_refused() {
        assert!(matches!(
            Clip::from_pcm("quiet", vec![3; 1600]),
            Err(ClipError::Unvoiced(_))
        ));
    }

    #[test]
    fn fixture_loads() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/audio/caller_question.wav"
        ))
        .expect("fixture");
        let clip = Clip::from_wav_bytes("caller_question.wav", &bytes).expect("clip");
        assert!(clip.onset_frame < clip.end_frame);
        assert!(Clip::from_wav_bytes("bad", b"RIFF").is_err());
    }
}
