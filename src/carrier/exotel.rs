//! Exotel Voicebot applet streams (bidirectional), `specs/telephony.md` §3.
//!
//! Inbound (§3.2): `connected`, `start`, `media`, `dtmf`, `mark`, `stop`, snake_case keys;
//! `sequence_number`, `media.chunk`, `media.timestamp`, `dtmf.duration` and
//! `start.media_format.sample_rate` are accepted as strings or numbers.
//! Outbound (§3.3): exactly `media`, `mark` and `clear` with only the listed keys; media
//! payloads obey the chunk rules of §3.4 (see [`ExotelCore::chunk_rules`]).
//!
//! Codec: taken from `start.media_format` (§3.4 caveat: a beta option can switch to μ-law).
//! A missing `media_format` means Exotel's documented default, 16-bit LE PCM at 8 kHz; so does
//! a missing `encoding` (→ linear16) or `sample_rate` (→ 8000) inside it. `bit_rate` is ignored
//! (Exotel has sent both `"16"` and `"128"`). A `media.track` (beta) other than inbound is
//! rejected like on Exotel.
//!
//! Lifecycle choices: `connected` is optional and may repeat before `stop` (it is answered with
//! [`CarrierEvent::Connected`] and changes nothing, even after `start`); a `stop` before `start`
//! is accepted and ends the stream; every message after `stop` is
//! [`FrameError::AfterStop`]. Unknown keys are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::wire::{self, Obj, Scalar, Session};
use super::{
    CarrierEvent, ChunkRules, EncodeError, FrameError, MediaFormat, MediaFrame, Outbound,
    StreamPhase, StreamStart,
};
use crate::audio::Encoding;

/// One inbound Exotel message; every key any event uses, all optional.
#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow)]
    event: Option<Scalar<'a>>,
    #[serde(borrow)]
    sequence_number: Option<Scalar<'a>>,
    #[serde(borrow)]
    stream_sid: Option<Scalar<'a>>,
    #[serde(borrow)]
    start: Option<Obj<Start<'a>>>,
    #[serde(borrow)]
    media: Option<Obj<Media<'a>>>,
    #[serde(borrow)]
    dtmf: Option<Obj<Dtmf<'a>>>,
    #[serde(borrow)]
    mark: Option<Obj<Mark<'a>>>,
    #[serde(borrow)]
    stop: Option<Obj<Stop<'a>>>,
}

#[derive(Deserialize)]
struct Start<'a> {
    #[serde(borrow)]
    stream_sid: Option<Scalar<'a>>,
    #[serde(borrow)]
    account_sid: Option<Scalar<'a>>,
    #[serde(borrow)]
    call_sid: Option<Scalar<'a>>,
    #[serde(borrow)]
    from: Option<Scalar<'a>>,
    #[serde(borrow)]
    to: Option<Scalar<'a>>,
    #[serde(borrow)]
    custom_parameters: Option<Obj<BTreeMap<String, Scalar<'a>>>>,
    #[serde(borrow)]
    media_format: Option<Obj<Format<'a>>>,
}

#[derive(Deserialize)]
struct Format<'a> {
    #[serde(borrow)]
    encoding: Option<Scalar<'a>>,
    #[serde(borrow)]
    sample_rate: Option<Scalar<'a>>,
    #[serde(borrow)]
    channels: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Media<'a> {
    #[serde(borrow)]
    track: Option<Scalar<'a>>,
    #[serde(borrow)]
    chunk: Option<Scalar<'a>>,
    #[serde(borrow)]
    timestamp: Option<Scalar<'a>>,
    #[serde(borrow)]
    payload: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Dtmf<'a> {
    #[serde(borrow)]
    digit: Option<Scalar<'a>>,
    #[serde(borrow)]
    duration: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Mark<'a> {
    #[serde(borrow)]
    name: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Stop<'a> {
    #[serde(borrow)]
    reason: Option<Scalar<'a>>,
}

/// The events Exotel sends.
#[derive(Clone, Copy)]
enum Event {
    Connected,
    Start,
    Media,
    Dtmf,
    Mark,
    Stop,
}

/// The sans-IO protocol core of one Exotel Media Stream.
#[derive(Debug, Clone)]
pub struct ExotelCore {
    session: Session,
}

impl Default for ExotelCore {
    fn default() -> Self {
        Self::new()
    }
}

impl ExotelCore {
    /// A core for a new stream, awaiting `start`.
    pub const fn new() -> Self {
        ExotelCore {
            session: Session::new("stream_sid"),
        }
    }

    /// Parses and validates one inbound text frame, advancing the state only on success.
    pub fn parse(&mut self, text: &str) -> Result<CarrierEvent, FrameError> {
        let msg: Msg<'_> = wire::from_json(text)?;
        let event = match wire::required(&msg.event, "event")?.as_str("event")? {
            "connected" => Event::Connected,
            "start" => Event::Start,
            "media" => Event::Media,
            "dtmf" => Event::Dtmf,
            "mark" => Event::Mark,
            "stop" => Event::Stop,
            other => return Err(FrameError::UnknownEvent(other.to_owned())),
        };
        let seq = wire::opt_u64(&msg.sequence_number, "sequence_number")?;
        let sid = wire::opt_str(&msg.stream_sid, "stream_sid")?;
        let out = match event {
            Event::Connected => {
                self.session.check_not_stopped("connected")?;
                CarrierEvent::Connected
            }
            Event::Start => {
                self.session.check_can_start()?;
                let start = parse_start(&msg, sid)?;
                self.session
                    .begin(start.stream_sid.clone(), start.media_format);
                CarrierEvent::Start(Box::new(start))
            }
            Event::Media => {
                let started = self.session.check_streaming("media", sid)?;
                let media = wire::required(&msg.media, "media")?.get("media")?;
                wire::check_track(wire::opt_str(&media.track, "media.track")?, "media.track")?;
                let chunk = wire::opt_u64(&media.chunk, "media.chunk")?;
                let timestamp_ms = wire::opt_u64(&media.timestamp, "media.timestamp")?;
                let b64 =
                    wire::required(&media.payload, "media.payload")?.as_str("media.payload")?;
                let payload = wire::decode_payload(b64, &started.format)?;
                CarrierEvent::Media(MediaFrame {
                    sequence: seq,
                    chunk,
                    timestamp_ms,
                    payload,
                })
            }
            Event::Dtmf => {
                self.session.check_streaming("dtmf", sid)?;
                let dtmf = wire::required(&msg.dtmf, "dtmf")?.get("dtmf")?;
                let digit = wire::required(&dtmf.digit, "dtmf.digit")?.as_str("dtmf.digit")?;
                let digit = wire::dtmf_digit(digit)?;
                let duration_ms = wire::opt_u64(&dtmf.duration, "dtmf.duration")?
                    .map(|d| {
                        u32::try_from(d).map_err(|_| wire::bad("dtmf.duration", "out of range"))
                    })
                    .transpose()?;
                CarrierEvent::Dtmf { digit, duration_ms }
            }
            Event::Mark => {
                self.session.check_streaming("mark", sid)?;
                let mark = wire::required(&msg.mark, "mark")?.get("mark")?;
                let name = wire::required(&mark.name, "mark.name")?.as_str("mark.name")?;
                if name.is_empty() {
                    return Err(wire::bad("mark.name", "empty"));
                }
                CarrierEvent::Mark {
                    name: name.to_owned(),
                }
            }
            Event::Stop => {
                self.session.check_stop(sid)?;
                let reason = match &msg.stop {
                    None => None,
                    Some(stop) => {
                        wire::opt_str(&stop.get("stop")?.reason, "stop.reason")?.map(str::to_owned)
                    }
                };
                self.session.stop();
                CarrierEvent::Stop { reason }
            }
        };
        self.session.note_sequence(seq);
        Ok(out)
    }

    /// Serializes a command as Exotel's JSON text frame (§1.4), with exactly the listed keys.
    pub fn encode(&self, command: Outbound<'_>) -> Result<String, EncodeError> {
        self.session.encode(command, rules_for)
    }

    /// The stream's audio format, once `start` has been seen.
    pub fn media_format(&self) -> Option<MediaFormat> {
        self.session.started().map(|s| s.format)
    }

    /// Outbound media size rules (§3.4), once `start` has been seen: a multiple of
    /// lcm(320, bytes per 20 ms) — 320 at 8 kHz PCM16, 640 at 16 kHz, 960 at 24 kHz — between
    /// the smallest such multiple ≥ 3200 and the largest ≤ 100 000 bytes.
    pub fn chunk_rules(&self) -> Option<ChunkRules> {
        self.session.started().map(|s| rules_for(&s.format))
    }

    /// Where the stream is in its life.
    pub fn phase(&self) -> StreamPhase {
        self.session.phase()
    }

    /// The `stream_sid` from `start`, once seen (kept after `stop`).
    pub fn stream_sid(&self) -> Option<&str> {
        self.session.started().map(|s| s.stream_sid.as_str())
    }

    /// How many times `sequence_number` did not follow the previous one by exactly 1.
    pub fn sequence_gaps(&self) -> u64 {
        self.session.gaps()
    }
}

/// Exotel's minimum outbound chunk, in bytes.
const MIN_CHUNK: usize = 3200;
/// Exotel's maximum outbound chunk, in bytes.
const MAX_CHUNK: usize = 100_000;
/// Exotel's base chunk granularity (20 ms at 8 kHz PCM16), in bytes.
const CHUNK_UNIT: usize = 320;

/// Exotel's chunk rules for a format.
fn rules_for(format: &MediaFormat) -> ChunkRules {
    let per_20ms = (format.samples_per_20ms()
        * format.encoding.bytes_per_sample()
        * usize::from(format.channels.max(1)))
    .max(1);
    let multiple_of = lcm(CHUNK_UNIT, per_20ms);
    ChunkRules {
        multiple_of,
        min_bytes: MIN_CHUNK.div_ceil(multiple_of) * multiple_of,
        max_bytes: (MAX_CHUNK / multiple_of) * multiple_of,
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b).max(1) * b
}

/// Builds the [`StreamStart`] of a `start` message (§3.2).
fn parse_start(msg: &Msg<'_>, outer_sid: Option<&str>) -> Result<StreamStart, FrameError> {
    let start = wire::required(&msg.start, "start")?.get("start")?;
    let stream_sid = wire::start_sid(&start.stream_sid, "start.stream_sid", outer_sid)?;
    let call_sid = wire::sid(&start.call_sid, "start.call_sid")?;
    let account_sid = wire::sid(&start.account_sid, "start.account_sid")?;
    let from = start
        .from
        .as_ref()
        .map(|v| v.to_text("start.from"))
        .transpose()?;
    let to = start
        .to
        .as_ref()
        .map(|v| v.to_text("start.to"))
        .transpose()?;
    let custom_parameters =
        wire::custom_parameters(&start.custom_parameters, "start.custom_parameters")?;
    let media_format = match &start.media_format {
        None => DEFAULT_FORMAT,
        Some(format) => parse_format(format.get("start.media_format")?)?,
    };
    Ok(StreamStart {
        stream_sid,
        call_sid,
        account_sid,
        from,
        to,
        tracks: Vec::new(),
        custom_parameters,
        media_format,
    })
}

/// Exotel's documented default when `start` carries no `media_format`: PCM16 LE, 8 kHz, mono.
const DEFAULT_FORMAT: MediaFormat = MediaFormat {
    encoding: Encoding::Linear16,
    sample_rate: 8000,
    channels: 1,
};

/// `start.media_format`; absent `encoding` / `sample_rate` take the defaults.
fn parse_format(format: &Format<'_>) -> Result<MediaFormat, FrameError> {
    let encoding = match wire::opt_str(&format.encoding, "start.media_format.encoding")? {
        None => DEFAULT_FORMAT.encoding,
        Some(name) => match wire::encoding_base(name).as_str() {
            "audio/x-raw" | "raw" | "linear16" | "slin" | "audio/l16" | "pcm" => Encoding::Linear16,
            "audio/x-mulaw" | "mulaw" | "ulaw" => Encoding::Mulaw,
            "audio/x-alaw" | "alaw" => Encoding::Alaw,
            _ => {
                return Err(FrameError::UnsupportedFormat(format!("encoding {name:?}")));
            }
        },
    };
    let sample_rate = match wire::opt_u64(&format.sample_rate, "start.media_format.sample_rate")? {
        None => DEFAULT_FORMAT.sample_rate,
        Some(rate) => wire::check_rate(rate)?,
    };
    if let Some(channels) = wire::opt_u64(&format.channels, "start.media_format.channels")?
        && channels != 1
    {
        return Err(FrameError::UnsupportedFormat(format!(
            "{channels} channels (only mono is supported)"
        )));
    }
    Ok(MediaFormat {
        encoding,
        sample_rate,
        channels: 1,
    })
}
