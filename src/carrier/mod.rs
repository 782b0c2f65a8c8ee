//! Sans-IO protocol cores for the carriers' media-stream WebSockets.
//!
//! Each core is a plain state machine: a text frame in, a typed [`CarrierEvent`] (or a
//! [`FrameError`] saying exactly what was wrong) out; an [`Outbound`] command in, the JSON
//! text frame the carrier expects out. No sockets, no clocks. [`CarrierProtocol`] is the one
//! type the call actor holds, whichever carrier is on the line.
//!
//! Wire facts (field names, casing, codecs, chunk rules) are in `specs/telephony.md` §1 and §3.
//!
//! Beside the stream cores: [`twilio_api`] and [`exotel_api`], the carriers' REST APIs for
//! dialing and live-call control; [`twiml`], the TwiML the gateway answers with; and
//! [`webhook`], the carriers' webhooks parsed into typed values.

pub mod exotel;
pub mod exotel_api;
mod rest;
pub mod signature;
pub mod twilio;
pub mod twilio_api;
pub mod twiml;
pub mod webhook;
mod wire;

use std::collections::BTreeMap;

use crate::audio::Encoding;

/// Which carrier protocol a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CarrierKind {
    /// Twilio Media Streams (`<Connect><Stream>`): camelCase JSON, μ-law 8 kHz.
    Twilio,
    /// Exotel Voicebot applet streams: snake_case JSON, PCM16 LE (8/16/24 kHz).
    Exotel,
}

impl CarrierKind {
    /// Lowercase name, used in URLs (`/stream/twilio`), logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            CarrierKind::Twilio => "twilio",
            CarrierKind::Exotel => "exotel",
        }
    }
}

impl std::fmt::Display for CarrierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The audio format of a stream, as announced in its `start` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFormat {
    /// Wire encoding of `media` payloads, both directions.
    pub encoding: Encoding,
    /// Samples per second (8000, 16000 or 24000).
    pub sample_rate: u32,
    /// Channel count; always 1 on the carriers supported.
    pub channels: u16,
}

impl MediaFormat {
    /// Bytes of wire audio per second of sound.
    pub const fn bytes_per_second(&self) -> usize {
        self.sample_rate as usize * self.encoding.bytes_per_sample() * self.channels as usize
    }

    /// Samples (per channel) in one 20 ms frame.
    pub const fn samples_per_20ms(&self) -> usize {
        self.sample_rate as usize / 50
    }
}

/// The `start` message: who the call is and how its audio is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The carrier's id of this media stream (Twilio `MZ…`).
    pub stream_sid: String,
    /// The carrier's id of the call.
    pub call_sid: String,
    /// The carrier account the call belongs to.
    pub account_sid: String,
    /// Caller number, where the carrier sends it (Exotel does, Twilio does not).
    pub from: Option<String>,
    /// Called number, where the carrier sends it (Exotel does, Twilio does not).
    pub to: Option<String>,
    /// Tracks delivered (Twilio: `inbound`/`outbound`); empty when the carrier does not say.
    pub tracks: Vec<String>,
    /// Custom parameters (`<Parameter>` on Twilio, URL query on Exotel), verbatim.
    pub custom_parameters: BTreeMap<String, String>,
    /// Codec, rate and channels of the media payloads.
    pub media_format: MediaFormat,
}

/// One `media` message from the carrier: caller audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFrame {
    /// The message's sequence number, where present.
    pub sequence: Option<u64>,
    /// The media chunk counter, where present.
    pub chunk: Option<u64>,
    /// Milliseconds since the stream started, where present.
    pub timestamp_ms: Option<u64>,
    /// Raw audio in the stream's [`MediaFormat::encoding`], base64 already decoded.
    pub payload: Vec<u8>,
}

/// Every inbound message of either carrier, as one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierEvent {
    /// The socket is up (`connected`).
    Connected,
    /// The stream's metadata (`start`).
    Start(Box<StreamStart>),
    /// Caller audio (`media`).
    Media(MediaFrame),
    /// A key press reported by the carrier (`dtmf`).
    Dtmf {
        /// `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
        /// Tone length in ms, where the carrier sends it (Exotel).
        duration_ms: Option<u32>,
    },
    /// The carrier has finished playing (or, after a `clear`, flushed) all audio sent before
    /// the mark with this name.
    Mark {
        /// The name we gave the mark.
        name: String,
    },
    /// The stream ended (`stop`); the last message.
    Stop {
        /// Why, where the carrier says (Exotel: `stopped` or `callended`).
        reason: Option<String>,
    },
}

/// A command to the carrier. Media payloads are raw audio in the stream's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Queue audio for playback.
    Media(&'a [u8]),
    /// Ask to be told (by an echoed mark) when everything queued so far has played.
    Mark(&'a str),
    /// Drop all queued, unplayed audio (barge-in).
    Clear,
}

/// Size constraints on one outbound `media` payload, in wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRules {
    /// Every payload length must be a multiple of this.
    pub multiple_of: usize,
    /// Smallest payload allowed (already a multiple of `multiple_of`).
    pub min_bytes: usize,
    /// Largest payload allowed (already a multiple of `multiple_of`).
    pub max_bytes: usize,
}

impl ChunkRules {
    /// Whether a payload of `len` bytes satisfies the rules.
    pub fn allows(&self, len: usize) -> bool {
        len >= self.min_bytes && len <= self.max_bytes && len.is_multiple_of(self.multiple_of)
    }
}

/// Why an inbound frame was rejected. Every variant leaves the protocol state unchanged, so the
/// caller may count the error and carry on with the next frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not valid JSON, or not a JSON object.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// The `event` field names no event of this protocol.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present but its value is unusable.
    #[error("bad field `{field}`: {reason}")]
    BadField {
        /// The field's JSON path, e.g. `media.payload`.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A `media`, `dtmf` or `mark` before `start`.
    #[error("`{0}` before `start`")]
    BeforeStart(&'static str),
    /// A second `start` on the same stream.
    #[error("duplicate `start`")]
    DuplicateStart,
    /// A message after `stop`.
    #[error("`{0}` after `stop`")]
    AfterStop(&'static str),
    /// The message's stream id is not this stream's.
    #[error("stream id {got:?} does not match this stream ({expected:?})")]
    StreamMismatch {
        /// The id from `start`.
        expected: String,
        /// The id in the offending message.
        got: String,
    },
    /// `media.payload` is not valid base64.
    #[error("media.payload is not valid base64: {0}")]
    Base64(String),
    /// The decoded payload has a length the stream's format does not allow.
    #[error("media payload of {len} bytes: {reason}")]
    PayloadSize {
        /// Decoded length in bytes.
        len: usize,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The `start` message announces a codec or rate this gateway cannot handle.
    #[error("unsupported media format: {0}")]
    UnsupportedFormat(String),
}

impl FrameError {
    /// A short stable label for metrics (`json`, `unknown_event`, …).
    pub const fn kind(&self) -> &'static str {
        match self {
            FrameError::Json(_) => "json",
            FrameError::UnknownEvent(_) => "unknown_event",
            FrameError::MissingField(_) => "missing_field",
            FrameError::BadField { .. } => "bad_field",
            FrameError::BeforeStart(_) => "before_start",
            FrameError::DuplicateStart => "duplicate_start",
            FrameError::AfterStop(_) => "after_stop",
            FrameError::StreamMismatch { .. } => "stream_mismatch",
            FrameError::Base64(_) => "base64",
            FrameError::PayloadSize { .. } => "payload_size",
            FrameError::UnsupportedFormat(_) => "unsupported_format",
        }
    }
}

/// Why an outbound command could not be serialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Nothing can be sent before `start` names the stream.
    #[error("no `start` yet: the stream id is unknown")]
    NotStarted,
    /// A media payload breaks the carrier's [`ChunkRules`].
    #[error("media payload of {len} bytes breaks the chunk rules ({rules:?})")]
    ChunkSize {
        /// Payload length in bytes.
        len: usize,
        /// The rules in force.
        rules: ChunkRules,
    },
    /// A mark name that is empty or too long (over 256 bytes).
    #[error("bad mark name: {0}")]
    MarkName(&'static str),
}

/// Where a stream is in its life: the cores reject messages that come out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPhase {
    /// Before `start` (a `connected` may or may not have come).
    AwaitingStart,
    /// Between `start` and `stop`.
    Streaming,
    /// After `stop`.
    Stopped,
}

/// The protocol core of one stream, whichever carrier it is.
#[derive(Debug)]
pub enum CarrierProtocol {
    /// A Twilio Media Streams core.
    Twilio(twilio::TwilioCore),
    /// An Exotel Voicebot core.
    Exotel(exotel::ExotelCore),
}

impl CarrierProtocol {
    /// A fresh core for a new stream of the given carrier.
    pub fn new(kind: CarrierKind) -> Self {
        match kind {
            CarrierKind::Twilio => CarrierProtocol::Twilio(twilio::TwilioCore::new()),
            CarrierKind::Exotel => CarrierProtocol::Exotel(exotel::ExotelCore::new()),
        }
    }

    /// Which carrier this core speaks.
    pub fn kind(&self) -> CarrierKind {
        match self {
            CarrierProtocol::Twilio(_) => CarrierKind::Twilio,
            CarrierProtocol::Exotel(_) => CarrierKind::Exotel,
        }
    }

    /// Parses and validates one inbound text frame, advancing the stream's state on success.
    pub fn parse(&mut self, text: &str) -> Result<CarrierEvent, FrameError> {
        match self {
            CarrierProtocol::Twilio(core) => core.parse(text),
            CarrierProtocol::Exotel(core) => core.parse(text),
        }
    }

    /// Serializes one outbound command as the carrier's JSON text frame.
    pub fn encode(&self, command: Outbound<'_>) -> Result<String, EncodeError> {
        match self {
            CarrierProtocol::Twilio(core) => core.encode(command),
            CarrierProtocol::Exotel(core) => core.encode(command),
        }
    }

    /// The stream's audio format, once `start` has been seen.
    pub fn media_format(&self) -> Option<MediaFormat> {
        match self {
            CarrierProtocol::Twilio(core) => core.media_format(),
            CarrierProtocol::Exotel(core) => core.media_format(),
        }
    }

    /// Size rules for outbound media payloads, once `start` has been seen.
    pub fn chunk_rules(&self) -> Option<ChunkRules> {
        match self {
            CarrierProtocol::Twilio(core) => core.chunk_rules(),
            CarrierProtocol::Exotel(core) => core.chunk_rules(),
        }
    }

    /// Where the stream is in its life.
    pub fn phase(&self) -> StreamPhase {
        match self {
            CarrierProtocol::Twilio(core) => core.phase(),
            CarrierProtocol::Exotel(core) => core.phase(),
        }
    }
}
