//! Twilio Media Streams (`<Connect><Stream>`, bidirectional), `specs/telephony.md` §1.
//!
//! Inbound (§1.3): `connected`, `start`, `media`, `dtmf`, `mark`, `stop`, camelCase keys;
//! `sequenceNumber`, `media.chunk` and `media.timestamp` are accepted as strings or numbers.
//! Outbound (§1.4): exactly `media`, `mark` and `clear` with only the listed keys.
//!
//! Lifecycle choices: `connected` is optional and may repeat before `stop` (it is answered with
//! [`CarrierEvent::Connected`] and changes nothing, even after `start`); a `stop` before `start`
//! is accepted and ends the stream; every message after `stop` is
//! [`FrameError::AfterStop`]. Unknown keys are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::wire::{self, List, Obj, Scalar, Session};
use super::{
    CarrierEvent, ChunkRules, EncodeError, FrameError, MediaFormat, MediaFrame, Outbound,
    StreamPhase, StreamStart,
};
use crate::audio::Encoding;

/// One inbound Twilio message; every key any event uses, all optional.
#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow)]
    event: Option<Scalar<'a>>,
    #[serde(borrow, rename = "sequenceNumber")]
    sequence_number: Option<Scalar<'a>>,
    #[serde(borrow, rename = "streamSid")]
    stream_sid: Option<Scalar<'a>>,
    #[serde(borrow)]
    start: Option<Obj<Start<'a>>>,
    #[serde(borrow)]
    media: Option<Obj<Media<'a>>>,
    #[serde(borrow)]
    dtmf: Option<Obj<Dtmf<'a>>>,
    #[serde(borrow)]
    mark: Option<Obj<Mark<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start<'a> {
    #[serde(borrow)]
    stream_sid: Option<Scalar<'a>>,
    #[serde(borrow)]
    account_sid: Option<Scalar<'a>>,
    #[serde(borrow)]
    call_sid: Option<Scalar<'a>>,
    #[serde(borrow)]
    tracks: Option<List<'a>>,
    #[serde(borrow)]
    custom_parameters: Option<Obj<BTreeMap<String, Scalar<'a>>>>,
    #[serde(borrow)]
    media_format: Option<Obj<Format<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
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
}

#[derive(Deserialize)]
struct Mark<'a> {
    #[serde(borrow)]
    name: Option<Scalar<'a>>,
}

/// The events Twilio sends.
#[derive(Clone, Copy)]
enum Event {
    Connected,
    Start,
    Media,
    Dtmf,
    Mark,
    Stop,
}

/// The sans-IO protocol core of one Twilio Media Stream.
#[derive(Debug, Clone)]
pub struct TwilioCore {
    session: Session,
}

impl Default for TwilioCore {
    fn default() -> Self {
        Self::new()
    }
}

impl TwilioCore {
    /// A core for a new stream, awaiting `start`.
    pub const fn new() -> Self {
        TwilioCore {
            session: Session::new("streamSid"),
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
        let seq = wire::opt_u64(&msg.sequence_number, "sequenceNumber")?;
        let sid = wire::opt_str(&msg.stream_sid, "streamSid")?;
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
                CarrierEvent::Dtmf {
                    digit: wire::dtmf_digit(digit)?,
                    duration_ms: None,
                }
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
                self.session.stop();
                CarrierEvent::Stop { reason: None }
            }
        };
        self.session.note_sequence(seq);
        Ok(out)
    }

    /// Serializes a command as Twilio's JSON text frame (§1.4), with exactly the listed keys.
    pub fn encode(&self, command: Outbound<'_>) -> Result<String, EncodeError> {
        self.session.encode(command, rules_for)
    }

    /// The stream's audio format, once `start` has been seen.
    pub fn media_format(&self) -> Option<MediaFormat> {
        self.session.started().map(|s| s.format)
    }

    /// Outbound media size rules, once `start` has been seen: whole samples, at least one
    /// sample, at most one second of audio (Twilio takes any length; §1.5 advises ≤ 1 s).
    pub fn chunk_rules(&self) -> Option<ChunkRules> {
        self.session.started().map(|s| rules_for(&s.format))
    }

    /// Where the stream is in its life.
    pub fn phase(&self) -> StreamPhase {
        self.session.phase()
    }

    /// The `streamSid` from `start`, once seen (kept after `stop`).
    pub fn stream_sid(&self) -> Option<&str> {
        self.session.started().map(|s| s.stream_sid.as_str())
    }

    /// How many times `sequenceNumber` did not follow the previous one by exactly 1.
    pub fn sequence_gaps(&self) -> u64 {
        self.session.gaps()
    }
}

/// Twilio's chunk rules for a format.
fn rules_for(format: &MediaFormat) -> ChunkRules {
    let sample = format.encoding.bytes_per_sample() * usize::from(format.channels.max(1));
    ChunkRules {
        multiple_of: sample,
        min_bytes: sample,
        max_bytes: format.bytes_per_second(),
    }
}

/// Builds the [`StreamStart`] of a `start` message (§1.3).
fn parse_start(msg: &Msg<'_>, outer_sid: Option<&str>) -> Result<StreamStart, FrameError> {
    let start = wire::required(&msg.start, "start")?.get("start")?;
    let stream_sid = wire::start_sid(&start.stream_sid, "start.streamSid", outer_sid)?;
    let call_sid = wire::sid(&start.call_sid, "start.callSid")?;
    let account_sid = wire::sid(&start.account_sid, "start.accountSid")?;
    let tracks = match &start.tracks {
        None => Vec::new(),
        Some(List::Not(what)) => {
            return Err(wire::bad(
                "start.tracks",
                format!("expected an array, got {what}"),
            ));
        }
        Some(List::Items(items)) => items
            .iter()
            .map(|t| t.as_str("start.tracks").map(str::to_owned))
            .collect::<Result<_, _>>()?,
    };
    let custom_parameters =
        wire::custom_parameters(&start.custom_parameters, "start.customParameters")?;
    let format =
        wire::required(&start.media_format, "start.mediaFormat")?.get("start.mediaFormat")?;
    let encoding = wire::required(&format.encoding, "start.mediaFormat.encoding")?
        .as_str("start.mediaFormat.encoding")?;
    let encoding = match wire::encoding_base(encoding).as_str() {
        "audio/x-mulaw" => Encoding::Mulaw,
        "audio/x-alaw" => Encoding::Alaw,
        _ => {
            return Err(FrameError::UnsupportedFormat(format!(
                "encoding {encoding:?} (expected audio/x-mulaw or audio/x-alaw)"
            )));
        }
    };
    let rate = wire::required(&format.sample_rate, "start.mediaFormat.sampleRate")?
        .as_u64("start.mediaFormat.sampleRate")?;
    let sample_rate = wire::check_rate(rate)?;
    let channels = wire::required(&format.channels, "start.mediaFormat.channels")?
        .as_u64("start.mediaFormat.channels")?;
    if channels != 1 {
        return Err(FrameError::UnsupportedFormat(format!(
            "{channels} channels (only mono is supported)"
        )));
    }
    Ok(StreamStart {
        stream_sid,
        call_sid,
        account_sid,
        from: None,
        to: None,
        tracks,
        custom_parameters,
        media_format: MediaFormat {
            encoding,
            sample_rate,
            channels: 1,
        },
    })
}
