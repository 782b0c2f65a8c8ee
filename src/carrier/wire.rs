//! Parsing and serialization helpers shared by the carrier cores.
//!
//! - [`Scalar`]: a borrowed JSON leaf value, so that numbers arriving as strings *or* numbers
//!   (`"sequenceNumber":"7"` vs `7`) and wrongly typed fields become a precise
//!   [`FrameError::BadField`] instead of an opaque serde message.
//! - [`Obj`] / [`List`]: a nested object / array that reports "wrong type" instead of failing
//!   the whole frame.
//! - [`decode_payload`]: size-checked base64 decode straight into the payload `Vec`.
//! - [`push_json_str`]: JSON string escaping for the outbound frames we build by hand.
//! - [`Session`]: the lifecycle state (phase, stream id, format, sequence gaps), the parts of
//!   parsing that are the same on both carriers (event names, `media`, `mark`) and the
//!   outbound encoder; only field names, `start`/`dtmf`/`stop` details and format rules differ.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    CarrierEvent, ChunkRules, EncodeError, FrameError, MediaFormat, MediaFrame, Outbound,
    StreamPhase,
};

/// Standard-alphabet base64 that accepts payloads with or without `=` padding.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard, padded base64 for what we send.
const B64_STRICT: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Longest mark name we send, in bytes.
pub(crate) const MAX_MARK_NAME: usize = 256;

/// The `media` object; its keys are the same on both carriers.
#[derive(serde::Deserialize)]
pub(crate) struct Media<'a> {
    #[serde(borrow)]
    track: Option<Scalar<'a>>,
    #[serde(borrow)]
    chunk: Option<Scalar<'a>>,
    #[serde(borrow)]
    timestamp: Option<Scalar<'a>>,
    #[serde(borrow)]
    payload: Option<Scalar<'a>>,
}

/// The `mark` object; the same on both carriers.
#[derive(serde::Deserialize)]
pub(crate) struct Mark<'a> {
    #[serde(borrow)]
    name: Option<Scalar<'a>>,
}

/// The inbound events both carriers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Connected,
    Start,
    Media,
    Dtmf,
    Mark,
    Stop,
}

impl Event {
    /// Reads the required `event` field.
    pub(crate) fn from_field(event: &Option<Scalar<'_>>) -> Result<Event, FrameError> {
        Ok(match required(event, "event")?.as_str("event")? {
            "connected" => Event::Connected,
            "start" => Event::Start,
            "media" => Event::Media,
            "dtmf" => Event::Dtmf,
            "mark" => Event::Mark,
            "stop" => Event::Stop,
            other => return Err(FrameError::UnknownEvent(other.to_owned())),
        })
    }
}

/// A JSON leaf value, borrowed from the frame where possible.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    /// A string (borrowed unless it contained escapes).
    Str(Cow<'a, str>),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    /// A number with a fraction or exponent, or one too large for `u64`/`i64`.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// An object or array (its content skipped): the name of the JSON type.
    Compound(&'static str),
}

impl<'a> Scalar<'a> {
    /// The JSON type name, for error messages.
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::UInt(_) | Scalar::Int(_) | Scalar::Float(_) => "a number",
            Scalar::Bool(_) => "a boolean",
            Scalar::Null => "null",
            Scalar::Compound(t) => t,
        }
    }

    /// The value as a string; anything else is [`FrameError::BadField`].
    pub(crate) fn as_str(&self, field: &'static str) -> Result<&str, FrameError> {
        match self {
            Scalar::Str(s) => Ok(s),
            other => Err(bad(
                field,
                format!("expected a string, got {}", other.type_name()),
            )),
        }
    }

    /// The value as an owned string; integers are accepted and written in decimal.
    pub(crate) fn to_text(&self, field: &'static str) -> Result<String, FrameError> {
        match self {
            Scalar::Str(s) => Ok(s.as_ref().to_owned()),
            Scalar::UInt(n) => Ok(n.to_string()),
            Scalar::Int(n) => Ok(n.to_string()),
            other => Err(bad(
                field,
                format!("expected a string, got {}", other.type_name()),
            )),
        }
    }

    /// The value as a non-negative integer, given either as a JSON number or as a string of
    /// decimal digits. Fractions, negatives, overflow and other types are
    /// [`FrameError::BadField`].
    pub(crate) fn as_u64(&self, field: &'static str) -> Result<u64, FrameError> {
        match self {
            Scalar::UInt(n) => Ok(*n),
            Scalar::Str(s) => {
                let s: &str = s;
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(field, format!("{s:?} is not a non-negative integer")));
                }
                s.parse::<u64>()
                    .map_err(|_| bad(field, format!("{s:?} is out of range")))
            }
            Scalar::Int(n) => Err(bad(field, format!("{n} is negative"))),
            Scalar::Float(x) => Err(bad(field, format!("{x} is not an integer"))),
            other => Err(bad(
                field,
                format!("expected an integer, got {}", other.type_name()),
            )),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor(PhantomData))
    }
}

struct ScalarVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 {
            Scalar::UInt(v.unsigned_abs())
        } else {
            Scalar::Int(v)
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound("an object"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound("an array"))
    }
}

/// A nested JSON object deserialized as `T`, or a note that the value was not an object.
#[derive(Debug)]
pub(crate) enum Obj<T> {
    /// It was an object.
    Obj(T),
    /// It was something else (the JSON type name).
    Not(&'static str),
}

impl<T> Obj<T> {
    /// The object, or [`FrameError::BadField`] naming `field`.
    pub(crate) fn get(&self, field: &'static str) -> Result<&T, FrameError> {
        match self {
            Obj::Obj(t) => Ok(t),
            Obj::Not(what) => Err(bad(field, format!("expected an object, got {what}"))),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjVisitor(PhantomData))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<T> ObjVisitor<T> {
    fn not<E>(what: &'static str) -> Result<Obj<T>, E> {
        Ok(Obj::Not(what))
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj::Obj)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Self::not("an array")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Self::not("a string")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Self::not("a number")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Self::not("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Self::not("a number")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Self::not("a boolean")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Self::not("null")
    }
}

/// A JSON array of leaf values, or a note that the value was not an array.
#[derive(Debug)]
pub(crate) enum List<'a> {
    /// It was an array.
    Items(Vec<Scalar<'a>>),
    /// It was something else (the JSON type name).
    Not(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for List<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

struct ListVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ListVisitor<'a> {
    type Value = List<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(item) = seq.next_element::<Scalar<'a>>()? {
            items.push(item);
        }
        Ok(List::Items(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(List::Not("an object"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(List::Not("a string"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(List::Not("a number"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(List::Not("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(List::Not("a number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(List::Not("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(List::Not("null"))
    }
}

/// Parses a whole frame: `T` from a JSON object. Not JSON, trailing garbage, a non-object or
/// a structural problem inside (e.g. a duplicated key) is [`FrameError::Json`].
pub(crate) fn from_json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, FrameError> {
    match serde_json::from_str::<Obj<T>>(text) {
        Ok(Obj::Obj(t)) => Ok(t),
        Ok(Obj::Not(what)) => Err(FrameError::Json(format!("expected an object, got {what}"))),
        Err(e) => Err(FrameError::Json(e.to_string())),
    }
}

/// Shorthand for [`FrameError::BadField`].
pub(crate) fn bad(field: &'static str, reason: impl Into<String>) -> FrameError {
    FrameError::BadField {
        field,
        reason: reason.into(),
    }
}

/// A required field: [`FrameError::MissingField`] when absent (or `null`).
pub(crate) fn required<'s, T>(v: &'s Option<T>, field: &'static str) -> Result<&'s T, FrameError> {
    v.as_ref().ok_or(FrameError::MissingField(field))
}

/// An optional integer field (string or number).
pub(crate) fn opt_u64(
    v: &Option<Scalar<'_>>,
    field: &'static str,
) -> Result<Option<u64>, FrameError> {
    v.as_ref().map(|s| s.as_u64(field)).transpose()
}

/// An optional string field.
pub(crate) fn opt_str<'s>(
    v: &'s Option<Scalar<'_>>,
    field: &'static str,
) -> Result<Option<&'s str>, FrameError> {
    v.as_ref().map(|s| s.as_str(field)).transpose()
}

/// The decoded length of a base64 text, assuming it is valid (used to refuse oversized
/// payloads before allocating for them).
fn decoded_len(b64: &str) -> usize {
    let bytes = b64.as_bytes();
    let pad = bytes
        .iter()
        .rev()
        .take(2)
        .take_while(|&&b| b == b'=')
        .count();
    let body = bytes.len() - pad;
    body / 4 * 3
        + match body % 4 {
            2 => 1,
            3 => 2,
            _ => 0,
        }
}

/// Decodes a `media.payload` and checks its size against the stream's format: valid base64,
/// non-empty, a whole number of samples, at most one second of audio.
pub(crate) fn decode_payload(b64: &str, format: &MediaFormat) -> Result<Vec<u8>, FrameError> {
    let max = format.bytes_per_second();
    let estimate = decoded_len(b64);
    if estimate > max {
        return Err(FrameError::PayloadSize {
            len: estimate,
            reason: "more than 1 s of audio",
        });
    }
    let mut payload = Vec::with_capacity(estimate);
    B64_LENIENT
        .decode_vec(b64, &mut payload)
        .map_err(|e| FrameError::Base64(e.to_string()))?;
    let len = payload.len();
    if len == 0 {
        return Err(FrameError::PayloadSize {
            len,
            reason: "empty",
        });
    }
    if len > max {
        return Err(FrameError::PayloadSize {
            len,
            reason: "more than 1 s of audio",
        });
    }
    let frame = format.encoding.bytes_per_sample() * format.channels.max(1) as usize;
    if len % frame != 0 {
        return Err(FrameError::PayloadSize {
            len,
            reason: "not a whole number of samples",
        });
    }
    Ok(payload)
}

/// Appends `s` to `out` as the inside of a JSON string literal (no surrounding quotes).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices are on char boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

/// Whether a DTMF digit string is valid; returns the normalised (uppercase) digit.
pub(crate) fn dtmf_digit(s: &str) -> Result<char, FrameError> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ ('0'..='9' | '*' | '#' | 'A'..='D')), None) => Ok(c),
        (Some(c @ 'a'..='d'), None) => Ok(c.to_ascii_uppercase()),
        _ => Err(bad(
            "dtmf.digit",
            format!("{s:?} is not one of 0-9, *, #, A-D"),
        )),
    }
}

/// Checks a sample rate from `start`.
pub(crate) fn check_rate(rate: u64) -> Result<u32, FrameError> {
    match rate {
        8000 | 16000 | 24000 => Ok(rate as u32),
        _ => Err(FrameError::UnsupportedFormat(format!(
            "sample rate {rate} Hz (supported: 8000, 16000, 24000)"
        ))),
    }
}

/// Lowercased MIME-ish encoding name with `;…` parameters (e.g. `;rate=8000`) removed.
pub(crate) fn encoding_base(enc: &str) -> String {
    enc.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// What `start` established: the stream id, its format and the precomputed outbound frames.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    /// The stream id from `start`.
    pub(crate) stream_sid: String,
    /// The stream's audio format.
    pub(crate) format: MediaFormat,
    /// `{"event":"media","<key>":"<sid>","media":{"payload":"`
    media_prefix: String,
    /// `{"event":"mark","<key>":"<sid>","mark":{"name":"`
    mark_prefix: String,
    /// `{"event":"clear","<key>":"<sid>"}`
    clear: String,
}

/// Suffix of an outbound media or mark frame.
const CLOSE: &str = "\"}}";

/// The lifecycle state of one stream, shared by both cores.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// JSON key of the stream id in outbound frames (`streamSid` / `stream_sid`).
    sid_key: &'static str,
    phase: StreamPhase,
    started: Option<Started>,
    last_seq: Option<u64>,
    gaps: u64,
}

impl Session {
    /// A session awaiting `start`; `sid_key` is the outbound stream id key.
    pub(crate) const fn new(sid_key: &'static str) -> Self {
        Session {
            sid_key,
            phase: StreamPhase::AwaitingStart,
            started: None,
            last_seq: None,
            gaps: 0,
        }
    }

    /// Where the stream is.
    pub(crate) fn phase(&self) -> StreamPhase {
        self.phase
    }

    /// What `start` established, if it has come.
    pub(crate) fn started(&self) -> Option<&Started> {
        self.started.as_ref()
    }

    /// Sequence-number jumps seen so far.
    pub(crate) fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Fails with [`FrameError::AfterStop`] once stopped.
    pub(crate) fn check_not_stopped(&self, event: &'static str) -> Result<(), FrameError> {
        if self.phase == StreamPhase::Stopped {
            Err(FrameError::AfterStop(event))
        } else {
            Ok(())
        }
    }

    /// For `start`: fails if already started or stopped.
    pub(crate) fn check_can_start(&self) -> Result<(), FrameError> {
        match self.phase {
            StreamPhase::AwaitingStart => Ok(()),
            StreamPhase::Streaming => Err(FrameError::DuplicateStart),
            StreamPhase::Stopped => Err(FrameError::AfterStop("start")),
        }
    }

    /// For `media`/`dtmf`/`mark`: the started stream, after checking phase and the message's
    /// stream id (an absent id is tolerated).
    pub(crate) fn check_streaming(
        &self,
        event: &'static str,
        sid: Option<&str>,
    ) -> Result<&Started, FrameError> {
        match (self.phase, &self.started) {
            (StreamPhase::Stopped, _) => Err(FrameError::AfterStop(event)),
            (StreamPhase::AwaitingStart, _) | (StreamPhase::Streaming, None) => {
                Err(FrameError::BeforeStart(event))
            }
            (StreamPhase::Streaming, Some(started)) => {
                check_sid(&started.stream_sid, sid)?;
                Ok(started)
            }
        }
    }

    /// For `stop`: checks phase and stream id. A `stop` before `start` is accepted (the call
    /// ended before the stream got going).
    pub(crate) fn check_stop(&self, sid: Option<&str>) -> Result<(), FrameError> {
        self.check_not_stopped("stop")?;
        if let Some(started) = &self.started {
            check_sid(&started.stream_sid, sid)?;
        }
        Ok(())
    }

    /// A `connected` message: harmless any time before `stop`.
    pub(crate) fn connected(&self) -> Result<CarrierEvent, FrameError> {
        self.check_not_stopped("connected")?;
        Ok(CarrierEvent::Connected)
    }

    /// A `media` message: checks phase, stream id, track and payload size for the stream's
    /// format, and decodes the payload.
    pub(crate) fn media(
        &self,
        seq: Option<u64>,
        sid: Option<&str>,
        media: &Option<Obj<Media<'_>>>,
    ) -> Result<CarrierEvent, FrameError> {
        let started = self.check_streaming("media", sid)?;
        let media = required(media, "media")?.get("media")?;
        check_track(opt_str(&media.track, "media.track")?, "media.track")?;
        let chunk = opt_u64(&media.chunk, "media.chunk")?;
        let timestamp_ms = opt_u64(&media.timestamp, "media.timestamp")?;
        let b64 = required(&media.payload, "media.payload")?.as_str("media.payload")?;
        let payload = decode_payload(b64, &started.format)?;
        Ok(CarrierEvent::Media(MediaFrame {
            sequence: seq,
            chunk,
            timestamp_ms,
            payload,
        }))
    }

    /// A `mark` message: checks phase and stream id; the name must be a non-empty string.
    pub(crate) fn mark(
        &self,
        sid: Option<&str>,
        mark: &Option<Obj<Mark<'_>>>,
    ) -> Result<CarrierEvent, FrameError> {
        self.check_streaming("mark", sid)?;
        let mark = required(mark, "mark")?.get("mark")?;
        let name = required(&mark.name, "mark.name")?.as_str("mark.name")?;
        if name.is_empty() {
            return Err(bad("mark.name", "empty"));
        }
        Ok(CarrierEvent::Mark {
            name: name.to_owned(),
        })
    }

    /// Records a successfully parsed message's sequence number, counting jumps.
    pub(crate) fn note_sequence(&mut self, seq: Option<u64>) {
        if let Some(seq) = seq {
            if let Some(last) = self.last_seq
                && last.checked_add(1) != Some(seq)
            {
                self.gaps += 1;
            }
            self.last_seq = Some(seq);
        }
    }

    /// Enters `Streaming` with the given stream id and format.
    pub(crate) fn begin(&mut self, stream_sid: String, format: MediaFormat) {
        let mut esc = String::with_capacity(stream_sid.len() + 8);
        push_json_str(&mut esc, &stream_sid);
        let key = self.sid_key;
        self.started = Some(Started {
            media_prefix: format!(
                "{{\"event\":\"media\",\"{key}\":\"{esc}\",\"media\":{{\"payload\":\""
            ),
            mark_prefix: format!("{{\"event\":\"mark\",\"{key}\":\"{esc}\",\"mark\":{{\"name\":\""),
            clear: format!("{{\"event\":\"clear\",\"{key}\":\"{esc}\"}}"),
            stream_sid,
            format,
        });
        self.phase = StreamPhase::Streaming;
    }

    /// Enters `Stopped`.
    pub(crate) fn stop(&mut self) {
        self.phase = StreamPhase::Stopped;
    }

    /// Builds an outbound frame. `rules` are the carrier's media chunk rules.
    pub(crate) fn encode(
        &self,
        command: Outbound<'_>,
        rules: impl FnOnce(&MediaFormat) -> ChunkRules,
    ) -> Result<String, EncodeError> {
        let started = self.started.as_ref().ok_or(EncodeError::NotStarted)?;
        match command {
            Outbound::Media(payload) => {
                let rules = rules(&started.format);
                if !rules.allows(payload.len()) {
                    return Err(EncodeError::ChunkSize {
                        len: payload.len(),
                        rules,
                    });
                }
                let b64_len = payload.len().div_ceil(3) * 4;
                let mut out =
                    String::with_capacity(started.media_prefix.len() + b64_len + CLOSE.len());
                out.push_str(&started.media_prefix);
                B64_STRICT.encode_string(payload, &mut out);
                out.push_str(CLOSE);
                Ok(out)
            }
            Outbound::Mark(name) => {
                if name.is_empty() {
                    return Err(EncodeError::MarkName("empty"));
                }
                if name.len() > MAX_MARK_NAME {
                    return Err(EncodeError::MarkName("longer than 256 bytes"));
                }
                let mut out =
                    String::with_capacity(started.mark_prefix.len() + name.len() + 8 + CLOSE.len());
                out.push_str(&started.mark_prefix);
                push_json_str(&mut out, name);
                out.push_str(CLOSE);
                Ok(out)
            }
            Outbound::Clear => Ok(started.clear.clone()),
        }
    }
}

/// [`FrameError::StreamMismatch`] unless `got` is absent or equal to `expected`.
pub(crate) fn check_sid(expected: &str, got: Option<&str>) -> Result<(), FrameError> {
    match got {
        Some(got) if got != expected => Err(FrameError::StreamMismatch {
            expected: expected.to_owned(),
            got: got.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// A required, non-empty string id (stream / call / account SID).
pub(crate) fn sid(v: &Option<Scalar<'_>>, field: &'static str) -> Result<String, FrameError> {
    let s = required(v, field)?.as_str(field)?;
    if s.is_empty() {
        return Err(bad(field, "empty"));
    }
    Ok(s.to_owned())
}

/// The stream id of a `start`: `start.<sid>`, falling back to the top-level one; when both
/// are present they must agree ([`FrameError::StreamMismatch`] otherwise).
pub(crate) fn start_sid(
    inner: &Option<Scalar<'_>>,
    inner_field: &'static str,
    outer: Option<&str>,
) -> Result<String, FrameError> {
    let sid = match (inner, outer) {
        (None, Some(outer)) if !outer.is_empty() => outer.to_owned(),
        _ => sid(inner, inner_field)?,
    };
    check_sid(&sid, outer)?;
    Ok(sid)
}

/// `start.custom_parameters` / `customParameters`: an object of scalar values, kept verbatim
/// (integers are written in decimal). Absent means none.
pub(crate) fn custom_parameters(
    v: &Option<Obj<std::collections::BTreeMap<String, Scalar<'_>>>>,
    field: &'static str,
) -> Result<std::collections::BTreeMap<String, String>, FrameError> {
    let Some(obj) = v else {
        return Ok(Default::default());
    };
    obj.get(field)?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_text(field)?)))
        .collect()
}

/// `media.track`: absent, `inbound` or `inbound_track` (caller audio) is fine; anything else
/// (notably `outbound`, the bot's own audio) is [`FrameError::BadField`].
pub(crate) fn check_track(track: Option<&str>, field: &'static str) -> Result<(), FrameError> {
    match track {
        None | Some("inbound" | "inbound_track") => Ok(()),
        Some(other) => Err(bad(
            field,
            format!("{other:?}: only caller (inbound) audio is accepted"),
        )),
    }
}
