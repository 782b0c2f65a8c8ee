//! Speech-to-text: the caller's words, streamed while they speak.
//!
//! A [`SttProvider`] opens one [`SttStream`] per call. The session pushes the caller's audio
//! into it without ever waiting ([`SttStream::push_audio`] is a `try_send`), and reads
//! [`SttEvent`]s back in its `select!` loop. Connecting, keep-alives, reconnecting and
//! replaying audio after a drop all happen in the provider's own task, off the media path.
//!
//! Times in events are milliseconds on the **call's** inbound timeline (the `at_ms` the session
//! gave with the audio), not the provider's per-connection clock: the provider maps them back,
//! across reconnects and across the silences the session did not send.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::call::CallId;

/// Audio encodings the session sends to a recognizer (the carrier's bytes, untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SttEncoding {
    /// G.711 μ-law (Twilio, Exotel μ-law).
    Mulaw,
    /// 16-bit little-endian PCM (Exotel slin16).
    Linear16,
}

/// The format of the audio a call sends to its recognizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SttAudioFormat {
    /// Encoding of the bytes.
    pub encoding: SttEncoding,
    /// Samples per second.
    pub sample_rate: u32,
}

/// Something the recognizer heard or did.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// Speech began (provider VAD), at this call-timeline position.
    SpeechStarted {
        /// Call-timeline ms.
        at_ms: u64,
    },
    /// A guess for the current segment; replaced by later results.
    Interim {
        /// The words so far in this segment.
        text: String,
        /// Call-timeline ms where the segment starts.
        start_ms: u64,
        /// Call-timeline ms where it ends.
        end_ms: u64,
    },
    /// A segment's text is fixed.
    Final {
        /// The segment's words (may be empty: noise, or a `Finalize` with nothing buffered).
        text: String,
        /// Call-timeline ms where the segment starts.
        start_ms: u64,
        /// Call-timeline ms where it ends.
        end_ms: u64,
        /// The provider's endpointing saw the speaker stop (likely end of turn).
        speech_final: bool,
        /// This result answers our `Finalize`.
        from_finalize: bool,
    },
    /// The provider saw a gap after the last word (robust to noise, coarse).
    UtteranceEnd {
        /// Call-timeline ms of the end of the last word.
        last_word_end_ms: u64,
    },
    /// The connection dropped and was re-established; buffered audio was sent again.
    Reconnected {
        /// Reconnect attempts it took.
        attempts: u32,
        /// Milliseconds of audio replayed.
        replayed_ms: u64,
    },
    /// The recognizer is gone for this call (gave up reconnecting, or was refused).
    Failed {
        /// Why, for the record.
        error: String,
    },
}

/// What the session sends to the recognizer task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SttInput {
    /// Caller audio in the stream's format, starting at call-timeline `at_ms`.
    Audio {
        /// Call-timeline ms of the first sample.
        at_ms: u64,
        /// The bytes (whole samples).
        bytes: Bytes,
    },
    /// Our VAD says the turn ended: flush what the provider has buffered.
    Finalize,
    /// The call is over: finish and close.
    Close,
}

/// Audio chunks queued to one recognizer task (at 20 ms per chunk, 10 s).
pub const STT_INPUT_QUEUE: usize = 512;
/// Events queued back to the session.
pub const STT_EVENT_QUEUE: usize = 256;

/// The session's handle on one call's recognizer.
#[derive(Debug)]
pub struct SttStream {
    input: mpsc::Sender<SttInput>,
    events: mpsc::Receiver<SttEvent>,
}

impl SttStream {
    /// Wraps the two channels of a recognizer task.
    pub fn new(input: mpsc::Sender<SttInput>, events: mpsc::Receiver<SttEvent>) -> Self {
        SttStream { input, events }
    }

    /// A connected pair for a provider to build on: the stream for the session, and the
    /// task's ends (inputs to read, events to send).
    pub fn channel() -> (SttStream, mpsc::Receiver<SttInput>, mpsc::Sender<SttEvent>) {
        let (input_tx, input_rx) = mpsc::channel(STT_INPUT_QUEUE);
        let (event_tx, event_rx) = mpsc::channel(STT_EVENT_QUEUE);
        (SttStream::new(input_tx, event_rx), input_rx, event_tx)
    }

    /// Queues caller audio without waiting; false if the queue is full or the task is gone.
    pub fn push_audio(&self, at_ms: u64, bytes: Bytes) -> bool {
        self.input
            .try_send(SttInput::Audio { at_ms, bytes })
            .is_ok()
    }

    /// Asks the provider to finalize now; false if it could not be queued.
    pub fn finalize(&self) -> bool {
        self.input.try_send(SttInput::Finalize).is_ok()
    }

    /// Closes the stream (the task finishes and closes the provider's socket).
    pub fn close(&self) {
        let _ = self.input.try_send(SttInput::Close);
    }

    /// The next event; `None` once the task has ended.
    pub async fn recv(&mut self) -> Option<SttEvent> {
        self.events.recv().await
    }
}

/// A speech-to-text service.
pub trait SttProvider: Send + Sync + 'static {
    /// Short name for metrics and events (`deepgram`).
    fn name(&self) -> &'static str;

    /// Opens the recognizer for one call. Returns at once: connecting happens in a spawned
    /// task, and audio pushed meanwhile is buffered and sent when the socket is up.
    fn open(&self, call: CallId, format: SttAudioFormat) -> SttStream;
}
pub mod deepgram;
pub mod timeline;
