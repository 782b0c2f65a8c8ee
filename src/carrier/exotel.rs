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
//! rejected as on Twilio.
//!
//! Lifecycle choices: `connected` is optional and may repeat before `stop` (it is answered with
//! [`CarrierEvent::Connected`] and changes nothing, even after `start`); a `stop` before `start`
//! is accepted and ends the stream; every message after `stop` is
//! [`FrameError::AfterStop`]. Unknown keys are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::wire::{self, Event, Obj, Scalar, Session};
use super::{
    CarrierEvent, ChunkRules, EncodeError, FrameError, MediaFormat, Outbound, StreamPhase,
    StreamStart,
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
    media: Option<Obj<wire::Media<'a>>>,
    #[serde(borrow)]
    dtmf: Option<Obj<Dtmf<'a>>>,
    #[serde(borrow)]
    mark: Option<Obj<wire::Mark<'a>>>,
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
struct Dtmf<'a> {
    #[serde(borrow)]
    digit: Option<Scalar<'a>>,
    #[serde(borrow)]
    duration: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct Stop<'a> {
    #[serde(borrow)]
    reason: Option<Scalar<'a>>,
}

/// The sans-IO protocol core of one Exotel Voicebot stream.
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
        let event = Event::from_field(&msg.event)?;
        let seq = wire::opt_u64(&msg.sequence_number, "sequence_number")?;
        let sid = wire::opt_str(&msg.stream_sid, "stream_sid")?;
        let out = match event {
            Event::Connected => self.session.connected()?,
            Event::Start => {
                self.session.check_can_start()?;
                let start = parse_start(&msg, sid)?;
                self.session
                    .begin(start.stream_sid.clone(), start.media_format);
                CarrierEvent::Start(Box::new(start))
            }
            Event::Media => self.session.media(seq, sid, &msg.media)?,
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
            Event::Mark => self.session.mark(sid, &msg.mark)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::MediaFrame;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    const MZ: &str = "MZf3a9c1e2d4b5a6978877665544332211";
    const CA: &str = "CA0123456789abcdef0123456789abcdef";
    const AC: &str = "AC89abcdef0123456789abcdef01234567";

    const CONNECTED: &str = r#"{"event":"connected"}"#;

    fn start_json() -> String {
        format!(
            r#"{{
  "event": "start",
  "sequence_number": "1",
  "stream_sid": "{MZ}",
  "start": {{
    "stream_sid": "{MZ}",
    "call_sid": "{CA}",
    "account_sid": "{AC}",
    "from": "+919876543210",
    "to": "+918047491899",
    "custom_parameters": {{"tenant": "acme"}},
    "media_format": {{"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}
  }}
}}"#
        )
    }

    fn start_with_format(format: &str) -> String {
        format!(
            r#"{{"event":"start","sequence_number":1,"stream_sid":"{MZ}","start":{{"stream_sid":"{MZ}","call_sid":"{CA}","account_sid":"{AC}"{format}}}}}"#
        )
    }

    fn media_json(seq: u64, chunk: u64, payload: &[u8]) -> String {
        let b64 = STANDARD.encode(payload);
        format!(
            r#"{{"event":"media","sequence_number":"{seq}","stream_sid":"{MZ}","media":{{"chunk":"{chunk}","timestamp":"200","payload":"{b64}"}}}}"#
        )
    }

    fn expected_start() -> StreamStart {
        StreamStart {
            stream_sid: MZ.into(),
            call_sid: CA.into(),
            account_sid: AC.into(),
            from: Some("+919876543210".into()),
            to: Some("+918047491899".into()),
            tracks: vec![],
            custom_parameters: [("tenant".to_owned(), "acme".to_owned())]
                .into_iter()
                .collect(),
            media_format: DEFAULT_FORMAT,
        }
    }

    fn started() -> ExotelCore {
        let mut core = ExotelCore::new();
        assert!(matches!(
            core.parse(&start_json()),
            Ok(CarrierEvent::Start(_))
        ));
        core
    }

    fn rejects(core: &mut ExotelCore, frame: &str, want: FrameError) {
        let before = format!("{core:?}");
        assert_eq!(core.parse(frame), Err(want), "frame: {frame}");
        assert_eq!(
            format!("{core:?}"),
            before,
            "state changed by a rejected frame"
        );
    }

    #[test]
    fn spec_examples_parse_exactly() {
        let mut core = ExotelCore::new();
        assert_eq!(core.parse(CONNECTED), Ok(CarrierEvent::Connected));
        assert_eq!(
            core.parse(&start_json()),
            Ok(CarrierEvent::Start(Box::new(expected_start())))
        );
        assert_eq!(core.stream_sid(), Some(MZ));
        // The spec's example payload, completed to 3 samples: 0, 0, -1 ... as 4 samples.
        let frame = format!(
            r#"{{"event":"media","sequence_number":"3","stream_sid":"{MZ}","media":{{"chunk":"2","timestamp":"200","payload":"AAAAAP//AQD+/w=="}}}}"#
        );
        assert_eq!(
            core.parse(&frame),
            Ok(CarrierEvent::Media(MediaFrame {
                sequence: Some(3),
                chunk: Some(2),
                timestamp_ms: Some(200),
                payload: vec![0, 0, 0, 0, 0xFF, 0xFF, 0x01, 0x00, 0xFE, 0xFF],
            }))
        );
        let dtmf = format!(
            r#"{{"event":"dtmf","sequence_number":"7","stream_sid":"{MZ}","dtmf":{{"digit":"5","duration":"100"}}}}"#
        );
        assert_eq!(
            core.parse(&dtmf),
            Ok(CarrierEvent::Dtmf {
                digit: '5',
                duration_ms: Some(100)
            })
        );
        let mark = format!(
            r#"{{"event":"mark","sequence_number":"15","stream_sid":"{MZ}","mark":{{"name":"turn-3"}}}}"#
        );
        assert_eq!(
            core.parse(&mark),
            Ok(CarrierEvent::Mark {
                name: "turn-3".into()
            })
        );
        let stop = format!(
            r#"{{"event":"stop","sequence_number":"20","stream_sid":"{MZ}","stop":{{"call_sid":"{CA}","account_sid":"{AC}","reason":"callended"}}}}"#
        );
        assert_eq!(
            core.parse(&stop),
            Ok(CarrierEvent::Stop {
                reason: Some("callended".into())
            })
        );
        assert_eq!(core.phase(), StreamPhase::Stopped);
        assert_eq!(core.sequence_gaps(), 4);
    }

    #[test]
    fn lifecycle_numbers_as_numbers() {
        let mut core = ExotelCore::new();
        // No `connected`: Exotel may omit it.
        assert!(core.parse(&start_with_format("")).is_ok());
        assert_eq!(core.media_format(), Some(DEFAULT_FORMAT));
        let media = format!(
            r#"{{"event":"media","sequence_number":2,"stream_sid":"{MZ}","media":{{"chunk":1,"timestamp":0,"payload":"AAA="}}}}"#
        );
        assert_eq!(
            core.parse(&media),
            Ok(CarrierEvent::Media(MediaFrame {
                sequence: Some(2),
                chunk: Some(1),
                timestamp_ms: Some(0),
                payload: vec![0, 0]
            }))
        );
        let dtmf = format!(
            r#"{{"event":"dtmf","sequence_number":3,"stream_sid":"{MZ}","dtmf":{{"digit":"d","duration":250}}}}"#
        );
        assert_eq!(
            core.parse(&dtmf),
            Ok(CarrierEvent::Dtmf {
                digit: 'D',
                duration_ms: Some(250)
            })
        );
        let mark = r#"{"event":"mark","sequence_number":4,"mark":{"name":"x"}}"#;
        assert_eq!(
            core.parse(mark),
            Ok(CarrierEvent::Mark { name: "x".into() })
        );
        assert_eq!(core.parse(CONNECTED), Ok(CarrierEvent::Connected));
        let stop = r#"{"event":"stop","sequence_number":5,"stop":{"reason":"stopped"}}"#;
        assert_eq!(
            core.parse(stop),
            Ok(CarrierEvent::Stop {
                reason: Some("stopped".into())
            })
        );
        assert_eq!(core.sequence_gaps(), 0);
    }

    #[test]
    fn formats_and_chunk_rules_per_rate() {
        let cases = [
            (
                r#","media_format":{"encoding":"audio/x-raw","sample_rate":"8000"}"#,
                Encoding::Linear16,
                8000,
                (320, 3200, 99_840),
            ),
            (
                r#","media_format":{"encoding":"linear16","sample_rate":16000}"#,
                Encoding::Linear16,
                16000,
                (640, 3200, 99_840),
            ),
            (
                r#","media_format":{"encoding":"audio/L16;rate=24000","sample_rate":"24000"}"#,
                Encoding::Linear16,
                24000,
                (960, 3840, 99_840),
            ),
            (
                r#","media_format":{"encoding":"RAW","sample_rate":"16000","bit_rate":"128"}"#,
                Encoding::Linear16,
                16000,
                (640, 3200, 99_840),
            ),
            (
                r#","media_format":{"encoding":"slin"}"#,
                Encoding::Linear16,
                8000,
                (320, 3200, 99_840),
            ),
            (
                r#","media_format":{"encoding":"pcm","sample_rate":"8000"}"#,
                Encoding::Linear16,
                8000,
                (320, 3200, 99_840),
            ),
            (
                r#","media_format":{"encoding":"audio/x-mulaw;rate=8000","sample_rate":"8000"}"#,
                Encoding::Mulaw,
                8000,
                (320, 3200, 99_840),
            ),
            (
                r#","media_format":{"encoding":"ulaw","sample_rate":"16000"}"#,
                Encoding::Mulaw,
                16000,
                (320, 3200, 99_840),
            ),
            (
                r#","media_format":{"encoding":"alaw","sample_rate":"24000"}"#,
                Encoding::Alaw,
                24000,
                (480 * 2, 3840, 99_840),
            ),
            (
                r#","media_format":{"sample_rate":"16000"}"#,
                Encoding::Linear16,
                16000,
                (640, 3200, 99_840),
            ),
            ("", Encoding::Linear16, 8000, (320, 3200, 99_840)),
        ];
        for (format, encoding, sample_rate, (multiple_of, min_bytes, max_bytes)) in cases {
            let mut core = ExotelCore::new();
            assert!(core.parse(&start_with_format(format)).is_ok(), "{format}");
            assert_eq!(
                core.media_format(),
                Some(MediaFormat {
                    encoding,
                    sample_rate,
                    channels: 1
                }),
                "{format}"
            );
            assert_eq!(
                core.chunk_rules(),
                Some(ChunkRules {
                    multiple_of,
                    min_bytes,
                    max_bytes
                }),
                "{format}"
            );
        }
    }

    #[test]
    fn chunk_size_boundaries_at_8k() {
        let core = started();
        let rules = ChunkRules {
            multiple_of: 320,
            min_bytes: 3200,
            max_bytes: 99_840,
        };
        assert_eq!(core.chunk_rules(), Some(rules));
        for (len, ok) in [
            (3199, false),
            (3200, true),
            (3520, true),
            (3360, false),
            (99_840, true),
            (99_841, false),
            (100_000, false),
            (0, false),
        ] {
            let out = core.encode(Outbound::Media(&vec![0u8; len]));
            if ok {
                assert!(out.is_ok(), "{len}");
            } else {
                assert_eq!(out, Err(EncodeError::ChunkSize { len, rules }), "{len}");
            }
        }
    }

    #[test]
    fn every_error_variant_keeps_state() {
        use FrameError::*;
        let mut core = ExotelCore::new();
        rejects(
            &mut core,
            r#"{"event":"media","media":{"payload":"AAA="}}"#,
            BeforeStart("media"),
        );
        rejects(
            &mut core,
            r#"{"event":"dtmf","dtmf":{"digit":"1"}}"#,
            BeforeStart("dtmf"),
        );
        rejects(
            &mut core,
            r#"{"event":"mark","mark":{"name":"a"}}"#,
            BeforeStart("mark"),
        );
        rejects(
            &mut core,
            &start_with_format(r#","media_format":{"encoding":"opus"}"#),
            UnsupportedFormat("encoding \"opus\"".into()),
        );
        rejects(
            &mut core,
            &start_with_format(r#","media_format":{"sample_rate":"48000"}"#),
            UnsupportedFormat("sample rate 48000 Hz (supported: 8000, 16000, 24000)".into()),
        );
        rejects(
            &mut core,
            &start_with_format(r#","media_format":{"channels":2}"#),
            UnsupportedFormat("2 channels (only mono is supported)".into()),
        );
        rejects(
            &mut core,
            &start_with_format(r#","media_format":{"sample_rate":"8k"}"#),
            BadField {
                field: "start.media_format.sample_rate",
                reason: "\"8k\" is not a non-negative integer".into(),
            },
        );
        rejects(
            &mut core,
            &start_with_format(r#","media_format":"slin""#),
            BadField {
                field: "start.media_format",
                reason: "expected an object, got a string".into(),
            },
        );
        rejects(
            &mut core,
            &start_json().replace(r#""account_sid""#, r#""accountSid""#),
            MissingField("start.account_sid"),
        );
        rejects(&mut core, r#"{"event":"start"}"#, MissingField("start"));
        let mismatch = start_json().replacen(
            &format!(r#""stream_sid": "{MZ}","#),
            r#""stream_sid": "other","#,
            1,
        );
        rejects(
            &mut core,
            &mismatch,
            StreamMismatch {
                expected: MZ.into(),
                got: "other".into(),
            },
        );
        assert!(core.parse(&start_json()).is_ok());

        rejects(
            &mut core,
            "",
            Json("EOF while parsing a value at line 1 column 0".into()),
        );
        rejects(
            &mut core,
            "\"connected\"",
            Json("expected an object, got a string".into()),
        );
        rejects(
            &mut core,
            r#"{"event":"connected","event":"start"}"#,
            Json("duplicate field `event` at line 1 column 28".into()),
        );
        rejects(
            &mut core,
            r#"{"event":"Media"}"#,
            UnknownEvent("Media".into()),
        );
        rejects(&mut core, r#"{}"#, MissingField("event"));
        rejects(&mut core, &start_json(), DuplicateStart);
        rejects(
            &mut core,
            r#"{"event":"media","media":{"payload":"AA"}}"#,
            PayloadSize {
                len: 1,
                reason: "not a whole number of samples",
            },
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{"payload":"A"}}"#,
            Base64("Invalid input length: 1".into()),
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{"payload":"AA=="}}"#,
            PayloadSize {
                len: 1,
                reason: "not a whole number of samples",
            },
        );
        let second = media_json(2, 1, &[0u8; 16_002]);
        rejects(
            &mut core,
            &second,
            PayloadSize {
                len: 16_002,
                reason: "more than 1 s of audio",
            },
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{"payload":"AAA=","track":"outbound"}}"#,
            BadField {
                field: "media.track",
                reason: "\"outbound\": only caller (inbound) audio is accepted".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{"timestamp":"2e3","payload":"AAA="}}"#,
            BadField {
                field: "media.timestamp",
                reason: "\"2e3\" is not a non-negative integer".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"dtmf","dtmf":{"digit":"5","duration":"1.5"}}"#,
            BadField {
                field: "dtmf.duration",
                reason: "\"1.5\" is not a non-negative integer".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"dtmf","dtmf":{"digit":"5","duration":4294967296}}"#,
            BadField {
                field: "dtmf.duration",
                reason: "out of range".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"dtmf","dtmf":{"digit":""}}"#,
            BadField {
                field: "dtmf.digit",
                reason: "\"\" is not one of 0-9, *, #, A-D".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"dtmf","dtmf":{}}"#,
            MissingField("dtmf.digit"),
        );
        rejects(
            &mut core,
            r#"{"event":"mark","mark":{}}"#,
            MissingField("mark.name"),
        );
        rejects(
            &mut core,
            r#"{"event":"mark","stream_sid":"x","mark":{"name":"a"}}"#,
            StreamMismatch {
                expected: MZ.into(),
                got: "x".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"stop","stop":{"reason":1}}"#,
            BadField {
                field: "stop.reason",
                reason: "expected a string, got a number".into(),
            },
        );

        assert!(matches!(
            core.parse(&media_json(2, 1, &[0u8; 320])),
            Ok(CarrierEvent::Media(_))
        ));
        assert_eq!(core.sequence_gaps(), 0);
        assert_eq!(
            core.parse(r#"{"event":"stop"}"#),
            Ok(CarrierEvent::Stop { reason: None })
        );
        rejects(
            &mut core,
            &media_json(3, 2, &[0u8; 320]),
            AfterStop("media"),
        );
        rejects(
            &mut core,
            r#"{"event":"dtmf","dtmf":{"digit":"1"}}"#,
            AfterStop("dtmf"),
        );
        rejects(
            &mut core,
            r#"{"event":"mark","mark":{"name":"a"}}"#,
            AfterStop("mark"),
        );
        rejects(&mut core, CONNECTED, AfterStop("connected"));
    }

    fn keys(json: &str) -> Vec<String> {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            if let Some(map) = v.as_object() {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(path.clone());
                    walk(&path, v, out);
                }
            }
        }
        let v: serde_json::Value =
            serde_json::from_str(json).expect("encoder produced invalid JSON");
        let mut out = Vec::new();
        walk("", &v, &mut out);
        out.sort();
        out
    }

    #[test]
    fn encode_exact_frames() {
        let mut core = ExotelCore::new();
        assert_eq!(core.encode(Outbound::Clear), Err(EncodeError::NotStarted));
        core.parse(&start_json()).expect("start");
        let pcm = [0u8; 3200];
        let media = core.encode(Outbound::Media(&pcm)).expect("media");
        assert_eq!(
            media,
            format!(
                r#"{{"event":"media","stream_sid":"{MZ}","media":{{"payload":"{}"}}}}"#,
                "A".repeat(4267) + "="
            )
        );
        assert_eq!(
            keys(&media),
            ["event", "media", "media.payload", "stream_sid"]
        );
        let mark = core.encode(Outbound::Mark("turn-3")).expect("mark");
        assert_eq!(
            mark,
            format!(r#"{{"event":"mark","stream_sid":"{MZ}","mark":{{"name":"turn-3"}}}}"#)
        );
        assert_eq!(keys(&mark), ["event", "mark", "mark.name", "stream_sid"]);
        let clear = core.encode(Outbound::Clear).expect("clear");
        assert_eq!(clear, format!(r#"{{"event":"clear","stream_sid":"{MZ}"}}"#));
        assert_eq!(keys(&clear), ["event", "stream_sid"]);
        assert_eq!(
            core.encode(Outbound::Mark("")),
            Err(EncodeError::MarkName("empty"))
        );
        assert_eq!(
            core.encode(Outbound::Mark(&"é".repeat(129))),
            Err(EncodeError::MarkName("longer than 256 bytes"))
        );
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[0-9]{0,6}".prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            prop::sample::select(vec![
                "audio/x-raw",
                "ulaw",
                "8000",
                "16000",
                MZ,
                "AAA=",
                "callended",
                "#"
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop::sample::select(vec![
                "event",
                "stream_sid",
                "sequence_number",
                "start",
                "media",
                "dtmf",
                "mark",
                "stop",
                "payload",
                "track",
                "chunk",
                "timestamp",
                "digit",
                "duration",
                "name",
                "reason",
                "call_sid",
                "account_sid",
                "from",
                "to",
                "custom_parameters",
                "media_format",
                "encoding",
                "sample_rate",
                "bit_rate",
                "channels",
            ]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key, inner, 0..6).prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    fn event_object() -> impl Strategy<Value = String> {
        let event = prop::sample::select(vec![
            "connected",
            "start",
            "media",
            "dtmf",
            "mark",
            "stop",
            "clear",
        ]);
        (event, json_value()).prop_map(|(event, v)| {
            let mut obj = match v {
                serde_json::Value::Object(m) => m,
                other => [("start".to_owned(), other)].into_iter().collect(),
            };
            obj.insert("event".into(), event.into());
            serde_json::Value::Object(obj).to_string()
        })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = ExotelCore::new().parse(&text);
            let mut core = started();
            let _ = core.parse(&text);
            let _ = core.encode(Outbound::Mark("m"));
        }

        #[test]
        fn arbitrary_objects_never_panic(frames in prop::collection::vec(event_object(), 1..6)) {
            let mut fresh = ExotelCore::new();
            let mut core = started();
            for f in &frames {
                let before = format!("{core:?}");
                if core.parse(f).is_err() {
                    prop_assert_eq!(format!("{core:?}"), before);
                }
                let _ = fresh.parse(f);
                let _ = fresh.encode(Outbound::Mark("m"));
            }
        }

        #[test]
        fn payload_round_trips(samples in prop::collection::vec(any::<[u8; 2]>(), 1..=8000)) {
            let payload: Vec<u8> = samples.concat();
            let mut core = started();
            let ev = core.parse(&media_json(2, 1, &payload));
            prop_assert_eq!(ev, Ok(CarrierEvent::Media(MediaFrame { sequence: Some(2), chunk: Some(1), timestamp_ms: Some(200), payload })));
        }

        #[test]
        fn valid_chunks_encode_and_reparse(n in 10usize..=312) {
            let core = started();
            let payload: Vec<u8> = (0..n * 320).map(|i| (i % 251) as u8).collect();
            let out = core.encode(Outbound::Media(&payload));
            prop_assert!(out.is_ok());
            let v: serde_json::Value = serde_json::from_str(&out.unwrap_or_default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let b64 = v["media"]["payload"].as_str().unwrap_or_default().to_owned();
            prop_assert_eq!(STANDARD.decode(b64).ok(), Some(payload));
        }
    }
}
