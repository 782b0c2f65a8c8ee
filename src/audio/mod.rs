//! Pure audio functions on 16-bit PCM samples. Nothing in here does I/O or reads a clock.
//!
//! - [`g711`]: μ-law and A-law, table driven.
//! - [`linear16`]: little-endian PCM16 bytes ↔ samples, levels.
//! - [`resample`]: streaming sample-rate conversion (rubato) in 20 ms chunks.
//! - [`vad`]: voice activity detection with hysteresis.
//! - [`dtmf`]: in-band DTMF detection (Goertzel).
//! - [`goertzel`]: single-bin DFTs shared by the tone detectors.
//! - [`beep`]: answering-machine beep detection (a bank of Goertzel bins).
//! - [`echo`]: tells the caller's own speech from the bot's audio coming back down the line.

pub mod beep;
pub mod dtmf;
pub mod echo;
pub mod g711;
pub mod goertzel;
pub mod linear16;
pub mod resample;
pub mod vad;

/// How audio samples are encoded on a carrier's wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// G.711 μ-law, one byte per sample.
    Mulaw,
    /// G.711 A-law, one byte per sample.
    Alaw,
    /// Signed 16-bit little-endian PCM, two bytes per sample.
    Linear16,
}

impl Encoding {
    /// Bytes one sample takes on the wire.
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::Mulaw | Encoding::Alaw => 1,
            Encoding::Linear16 => 2,
        }
    }

    /// A short lowercase name (`mulaw`, `alaw`, `linear16`), as used in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Mulaw => "mulaw",
            Encoding::Alaw => "alaw",
            Encoding::Linear16 => "linear16",
        }
    }

    /// The byte value (or byte pair, for linear16) that encodes silence, for padding.
    pub const fn silence_byte(self) -> u8 {
        match self {
            Encoding::Mulaw => 0xFF,
            Encoding::Alaw => 0xD5,
            Encoding::Linear16 => 0x00,
        }
    }

    /// Decodes wire bytes into PCM samples, appending to `out`. A trailing odd byte of
    /// linear16 is ignored (the carrier cores reject such payloads before they get here).
    ///
    /// ```
    /// use voicegw::audio::Encoding;
    /// let mut pcm = Vec::new();
    /// Encoding::Mulaw.decode_into(&[0xFF, 0x7F, 0x80], &mut pcm);
    /// assert_eq!(pcm, [0, 0, 32124]);
    /// let mut wire = Vec::new();
    /// Encoding::Linear16.encode_into(&[1, -2], &mut wire);
    /// assert_eq!(wire, [0x01, 0x00, 0xFE, 0xFF]);
    /// ```
    pub fn decode_into(self, bytes: &[u8], out: &mut Vec<i16>) {
        match self {
            Encoding::Mulaw => g711::decode_mulaw_into(bytes, out),
            Encoding::Alaw => g711::decode_alaw_into(bytes, out),
            Encoding::Linear16 => linear16::decode_le_into(bytes, out),
        }
    }

    /// Encodes PCM samples into wire bytes, appending to `out`.
    pub fn encode_into(self, pcm: &[i16], out: &mut Vec<u8>) {
        match self {
            Encoding::Mulaw => g711::encode_mulaw_into(pcm, out),
            Encoding::Alaw => g711::encode_alaw_into(pcm, out),
            Encoding::Linear16 => linear16::encode_le_into(pcm, out),
        }
    }
}
