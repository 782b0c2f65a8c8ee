//! Turns a provider's audio bytes, in whatever pieces they arrive, into PCM at the call's rate.
//!
//! Providers send μ-law or 16-bit little-endian PCM in chunks that need not end on a sample
//! boundary; the converter carries the odd byte over, decodes once and resamples (rubato) when
//! the provider's rate is not the call's.

use crate::audio::Encoding;
use crate::audio::resample::{ResampleError, Resampler};

/// Streaming decoder (and resampler) of one provider audio stream.
pub struct PcmConverter {
    encoding: Encoding,
    carry: Option<u8>,
    resampler: Option<Resampler>,
    scratch: Vec<i16>,
}

impl std::fmt::Debug for PcmConverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcmConverter")
            .field("encoding", &self.encoding)
            .field("resampling", &self.resampler.is_some())
            .finish()
    }
}

impl PcmConverter {
    /// A converter of `encoding` bytes at `from_hz` to PCM at `to_hz`.
    pub fn new(encoding: Encoding, from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        let resampler = if from_hz == to_hz {
            None
        } else {
            Some(Resampler::new(from_hz, to_hz)?)
        };
        Ok(PcmConverter {
            encoding,
            carry: None,
            resampler,
            scratch: Vec::new(),
        })
    }

    /// Decodes one piece of provider audio, appending PCM at the call's rate to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<i16>) {
        let target = if self.resampler.is_some() {
            self.scratch.clear();
            &mut self.scratch
        } else {
            &mut *out
        };
        match self.encoding {
            Encoding::Linear16 => {
                let mut rest = bytes;
                if let Some(low) = self.carry.take() {
                    if let Some((&high, tail)) = rest.split_first() {
                        target.push(i16::from_le_bytes([low, high]));
                        rest = tail;
                    } else {
                        self.carry = Some(low);
                    }
                }
                let whole = rest.len() & !1;
                Encoding::Linear16.decode_into(&rest[..whole], target);
                if whole < rest.len() {
                    self.carry = Some(rest[whole]);
                }
            }
            other => other.decode_into(bytes, target),
        }
        if let Some(resampler) = self.resampler.as_mut() {
            resampler.process(&self.scratch, out);
        }
    }

    /// Ends the stream: flushes the resampler's tail and resets for the next segment.
    pub fn finish(&mut self, out: &mut Vec<i16>) {
        self.carry = None;
        if let Some(resampler) = self.resampler.as_mut() {
            resampler.flush(out);
            resampler.reset();
        }
    }

    /// Drops buffered state without output (after a cancel).
    pub fn reset(&mut self) {
        self.carry = None;
        if let Some(resampler) = self.resampler.as_mut() {
            resampler.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear16_split_mid_sample_is_reassembled() {
        let pcm: Vec<i16> = (0..100).map(|i| (i * 300 - 15_000) as i16).collect();
        let mut bytes = Vec::new();
        Encoding::Linear16.encode_into(&pcm, &mut bytes);
        let mut conv = PcmConverter::new(Encoding::Linear16, 8000, 8000).unwrap();
        let mut out = Vec::new();
        for piece in bytes.chunks(7) {
            conv.push(piece, &mut out);
        }
        conv.finish(&mut out);
        assert_eq!(out, pcm);
    }

    #[test]
    fn mulaw_passes_through_at_the_same_rate() {
        let wire: Vec<u8> = (0..=255).collect();
        let mut expected = Vec::new();
        Encoding::Mulaw.decode_into(&wire, &mut expected);
        let mut conv = PcmConverter::new(Encoding::Mulaw, 8000, 8000).unwrap();
        let mut out = Vec::new();
        conv.push(&wire[..100], &mut out);
        conv.push(&wire[100..], &mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn resamples_24k_to_8k() {
        let pcm = vec![1000i16; 24_000];
        let mut bytes = Vec::new();
        Encoding::Linear16.encode_into(&pcm, &mut bytes);
        let mut conv = PcmConverter::new(Encoding::Linear16, 24_000, 8000).unwrap();
        let mut out = Vec::new();
        for piece in bytes.chunks(4801) {
            conv.push(piece, &mut out);
        }
        conv.finish(&mut out);
        assert!((7_900..=8_100).contains(&out.len()), "{}", out.len());
    }

    #[test]
    fn unsupported_rate_is_an_error() {
        assert!(PcmConverter::new(Encoding::Linear16, 22_050, 8000).is_err());
    }
}
