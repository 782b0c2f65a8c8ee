//! Text-to-speech: text in, the call's PCM out, as it is generated.
//!
//! A [`TtsProvider`] gives each call a [`TtsVoice`] (one provider socket per call, reused
//! across turns). The reply task hands it one segment of text at a time (a clause or a few
//! sentences) and forwards the audio to the call as it arrives. Providers are asked for μ-law
//! or PCM at the call's rate where they can; otherwise the client resamples with rubato.

pub mod convert;
pub mod deepgram;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Audio pieces queued from a voice to its reader.
pub const TTS_AUDIO_QUEUE: usize = 64;

/// Cuts provider text to `max` characters for errors and logs (on a char boundary).
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Why synthesis failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TtsError {
    /// The provider refused the request (status or close code, with its reason).
    #[error("{provider} refused: {reason}")]
    Refused {
        /// Which provider.
        provider: &'static str,
        /// Its reason.
        reason: String,
    },
    /// The connection failed or broke.
    #[error("{provider} transport: {reason}")]
    Transport {
        /// Which provider.
        provider: &'static str,
        /// What happened.
        reason: String,
    },
    /// No audio within the time allowed.
    #[error("{provider} timed out after {waited_ms} ms")]
    Timeout {
        /// Which provider.
        provider: &'static str,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The provider sent something that is not its protocol or not the audio asked for.
    #[error("{provider} protocol: {reason}")]
    Protocol {
        /// Which provider.
        provider: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The voice cannot be set up (bad key, format, URL).
    #[error("configuration: {0}")]
    Config(String),
}

/// What one segment's synthesis took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynthesisStats {
    /// From the request to the first audio byte.
    pub first_byte: Option<Duration>,
    /// Samples produced (at the voice's rate).
    pub samples: u64,
    /// Whether a fallback path (e.g. REST after the socket failed) produced it.
    pub fallback: bool,
    /// Whether `cancel` stopped it early.
    pub cancelled: bool,
}

/// A speech synthesizer for one call.
#[async_trait::async_trait]
pub trait TtsVoice: Send {
    /// Synthesizes one segment of text, sending 16-bit PCM at the voice's rate to `out` as it
    /// arrives, and returns when the segment's audio is complete. If `cancel` fires it stops at
    /// once and leaves the voice ready for the next segment (late audio of this one is dropped).
    async fn synthesize(
        &mut self,
        text: &str,
        out: &mpsc::Sender<Vec<i16>>,
        cancel: &CancellationToken,
    ) -> Result<SynthesisStats, TtsError>;

    /// Closes the provider connection (end of call).
    async fn close(&mut self);
}

/// A text-to-speech service.
pub trait TtsProvider: Send + Sync + 'static {
    /// Short name for metrics and events (`deepgram`, `elevenlabs`, `openai`).
    fn name(&self) -> &'static str;

    /// A voice for one call producing PCM at `sample_rate`. It may start connecting at once
    /// (in a spawned task), so the first segment does not wait for a handshake.
    fn voice(&self, sample_rate: u32) -> Box<dyn TtsVoice>;
}

pub mod elevenlabs;
pub mod openai;
