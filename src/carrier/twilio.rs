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

use super::wire::{self, Event, List, Obj, Scalar, Session};
use super::{
    CarrierEvent, ChunkRules, EncodeError, FrameError, MediaFormat, Outbound, StreamPhase,
    StreamStart,
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
    media: Option<Obj<wire::Media<'a>>>,
    #[serde(borrow)]
    dtmf: Option<Obj<Dtmf<'a>>>,
    #[serde(borrow)]
    mark: Option<Obj<wire::Mark<'a>>>,
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
struct Dtmf<'a> {
    #[serde(borrow)]
    digit: Option<Scalar<'a>>,
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
        let event = Event::from_field(&msg.event)?;
        let seq = wire::opt_u64(&msg.sequence_number, "sequenceNumber")?;
        let sid = wire::opt_str(&msg.stream_sid, "streamSid")?;
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
                CarrierEvent::Dtmf {
                    digit: wire::dtmf_digit(digit)?,
                    duration_ms: None,
                }
            }
            Event::Mark => self.session.mark(sid, &msg.mark)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::MediaFrame;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    const MZ: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";
    const CA: &str = "CA8a0bc5c1e3b0f4e2d3c4b5a697887766";
    const AC: &str = "AC25e16e9a716a4a1786a7c83f58e30482";

    const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;

    fn start_json() -> String {
        format!(
            r#"{{
  "event": "start",
  "sequenceNumber": "1",
  "start": {{
    "accountSid": "{AC}",
    "streamSid": "{MZ}",
    "callSid": "{CA}",
    "tracks": ["inbound"],
    "mediaFormat": {{"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    "customParameters": {{"tenant": "acme", "ticket": "t_9f2c"}}
  }},
  "streamSid": "{MZ}"
}}"#
        )
    }

    fn media_json(seq: u64, chunk: u64, payload: &[u8]) -> String {
        let b64 = STANDARD.encode(payload);
        format!(
            r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"5","payload":"{b64}"}},"streamSid":"{MZ}"}}"#
        )
    }

    fn dtmf_json() -> String {
        format!(
            r#"{{"event":"dtmf","streamSid":"{MZ}","sequenceNumber":"57","dtmf":{{"track":"inbound_track","digit":"5"}}}}"#
        )
    }

    fn mark_json() -> String {
        format!(
            r#"{{"event":"mark","sequenceNumber":"80","streamSid":"{MZ}","mark":{{"name":"turn-3"}}}}"#
        )
    }

    fn stop_json() -> String {
        format!(
            r#"{{"event":"stop","sequenceNumber":"412","stop":{{"accountSid":"{AC}","callSid":"{CA}"}},"streamSid":"{MZ}"}}"#
        )
    }

    fn expected_start() -> StreamStart {
        StreamStart {
            stream_sid: MZ.into(),
            call_sid: CA.into(),
            account_sid: AC.into(),
            from: None,
            to: None,
            tracks: vec!["inbound".into()],
            custom_parameters: [("tenant", "acme"), ("ticket", "t_9f2c")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            media_format: MediaFormat {
                encoding: Encoding::Mulaw,
                sample_rate: 8000,
                channels: 1,
            },
        }
    }

    fn started() -> TwilioCore {
        let mut core = TwilioCore::new();
        assert_eq!(core.parse(CONNECTED), Ok(CarrierEvent::Connected));
        assert!(matches!(
            core.parse(&start_json()),
            Ok(CarrierEvent::Start(_))
        ));
        core
    }

    /// Asserts `frame` fails with `want` and leaves the core exactly as it was.
    fn rejects(core: &mut TwilioCore, frame: &str, want: FrameError) {
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
        let mut core = TwilioCore::new();
        assert_eq!(core.phase(), StreamPhase::AwaitingStart);
        assert_eq!(core.parse(CONNECTED), Ok(CarrierEvent::Connected));
        assert_eq!(
            core.parse(&start_json()),
            Ok(CarrierEvent::Start(Box::new(expected_start())))
        );
        assert_eq!(core.phase(), StreamPhase::Streaming);
        assert_eq!(core.stream_sid(), Some(MZ));
        assert_eq!(core.media_format(), Some(expected_start().media_format));
        assert_eq!(
            core.parse(&media_json(2, 1, &[0xFF; 160])),
            Ok(CarrierEvent::Media(MediaFrame {
                sequence: Some(2),
                chunk: Some(1),
                timestamp_ms: Some(5),
                payload: vec![0xFF; 160],
            }))
        );
        assert_eq!(
            core.parse(&dtmf_json()),
            Ok(CarrierEvent::Dtmf {
                digit: '5',
                duration_ms: None
            })
        );
        assert_eq!(
            core.parse(&mark_json()),
            Ok(CarrierEvent::Mark {
                name: "turn-3".into()
            })
        );
        assert_eq!(
            core.parse(&stop_json()),
            Ok(CarrierEvent::Stop { reason: None })
        );
        assert_eq!(core.phase(), StreamPhase::Stopped);
        // 2→57, 57→80, 80→412 are jumps; 1→2 is not.
        assert_eq!(core.sequence_gaps(), 3);
        assert_eq!(core.stream_sid(), Some(MZ));
    }

    #[test]
    fn lifecycle_without_gaps() {
        let mut core = started();
        assert_eq!(
            core.chunk_rules(),
            Some(ChunkRules {
                multiple_of: 1,
                min_bytes: 1,
                max_bytes: 8000
            })
        );
        for seq in 2..=51 {
            let ev = core.parse(&media_json(seq, seq - 1, &[0x7F; 160]));
            assert!(
                matches!(ev, Ok(CarrierEvent::Media(ref m)) if m.chunk == Some(seq - 1)),
                "{ev:?}"
            );
        }
        let dtmf = format!(
            r##"{{"event":"dtmf","streamSid":"{MZ}","sequenceNumber":"52","dtmf":{{"track":"inbound_track","digit":"#"}}}}"##
        );
        assert_eq!(
            core.parse(&dtmf),
            Ok(CarrierEvent::Dtmf {
                digit: '#',
                duration_ms: None
            })
        );
        let mark = format!(
            r#"{{"event":"mark","sequenceNumber":"53","streamSid":"{MZ}","mark":{{"name":"m"}}}}"#
        );
        assert_eq!(
            core.parse(&mark),
            Ok(CarrierEvent::Mark { name: "m".into() })
        );
        let stop = format!(r#"{{"event":"stop","sequenceNumber":"54","streamSid":"{MZ}"}}"#);
        assert_eq!(core.parse(&stop), Ok(CarrierEvent::Stop { reason: None }));
        assert_eq!(core.sequence_gaps(), 0);
    }

    #[test]
    fn numbers_as_strings_or_numbers() {
        let mut core = TwilioCore::new();
        let start = start_json()
            .replace(r#""sampleRate": 8000"#, r#""sampleRate": "8000""#)
            .replace(r#""channels": 1"#, r#""channels": "1""#)
            .replace(r#""sequenceNumber": "1""#, r#""sequenceNumber": 1"#);
        assert_eq!(
            core.parse(&start),
            Ok(CarrierEvent::Start(Box::new(expected_start())))
        );
        let frame = format!(
            r#"{{"event":"media","sequenceNumber":2,"streamSid":"{MZ}","media":{{"chunk":1,"timestamp":20,"payload":"/w=="}}}}"#
        );
        assert_eq!(
            core.parse(&frame),
            Ok(CarrierEvent::Media(MediaFrame {
                sequence: Some(2),
                chunk: Some(1),
                timestamp_ms: Some(20),
                payload: vec![0xFF]
            }))
        );
        // Unpadded base64, escaped slashes and absent optional fields are fine too.
        let frame = r#"{"event":"media","media":{"payload":"\/w"}}"#;
        assert_eq!(
            core.parse(frame),
            Ok(CarrierEvent::Media(MediaFrame {
                sequence: None,
                chunk: None,
                timestamp_ms: None,
                payload: vec![0xFF]
            }))
        );
        assert_eq!(core.sequence_gaps(), 0);
    }

    #[test]
    fn alaw_and_extra_fields() {
        let mut core = TwilioCore::new();
        let start = start_json()
            .replace("audio/x-mulaw", "audio/x-alaw")
            .replace(r#""tracks""#, r#""future":{"x":[1,2]},"tracks""#);
        let Ok(CarrierEvent::Start(s)) = core.parse(&start) else {
            panic!("start rejected")
        };
        assert_eq!(s.media_format.encoding, Encoding::Alaw);
        let frame = format!(
            r#"{{"event":"media","extra":null,"media":{{"payload":"1dU=","new":true}},"streamSid":"{MZ}"}}"#
        );
        assert!(core.parse(&frame).is_ok());
        // `connected` after start is accepted and changes nothing.
        assert_eq!(core.parse(CONNECTED), Ok(CarrierEvent::Connected));
        assert_eq!(core.phase(), StreamPhase::Streaming);
    }

    #[test]
    fn every_error_variant_keeps_state() {
        use FrameError::*;
        let mut core = TwilioCore::new();
        let bare_media = r#"{"event":"media","media":{"payload":"/w=="}}"#;
        rejects(&mut core, bare_media, BeforeStart("media"));
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
        let bad_start = |from: &str, to: &str| start_json().replace(from, to);
        rejects(
            &mut core,
            &bad_start("audio/x-mulaw", "audio/l16"),
            UnsupportedFormat(
                "encoding \"audio/l16\" (expected audio/x-mulaw or audio/x-alaw)".into(),
            ),
        );
        rejects(
            &mut core,
            &bad_start(r#""sampleRate": 8000"#, r#""sampleRate": 44100"#),
            UnsupportedFormat("sample rate 44100 Hz (supported: 8000, 16000, 24000)".into()),
        );
        rejects(
            &mut core,
            &bad_start(r#""channels": 1"#, r#""channels": 2"#),
            UnsupportedFormat("2 channels (only mono is supported)".into()),
        );
        rejects(
            &mut core,
            &bad_start(r#""sampleRate": 8000"#, r#""sampleRate": 8000.5"#),
            BadField {
                field: "start.mediaFormat.sampleRate",
                reason: "8000.5 is not an integer".into(),
            },
        );
        rejects(
            &mut core,
            &bad_start(r#""callSid""#, r#""callSID""#),
            MissingField("start.callSid"),
        );
        rejects(
            &mut core,
            &bad_start(r#""tracks": ["inbound"]"#, r#""tracks": "inbound""#),
            BadField {
                field: "start.tracks",
                reason: "expected an array, got a string".into(),
            },
        );
        let wrong_outer = start_json().replacen(
            &format!(
                r#""streamSid": "{MZ}"
}}"#
            ),
            r#""streamSid": "MZ00000000000000000000000000000000"
}"#,
            1,
        );
        rejects(
            &mut core,
            &wrong_outer,
            StreamMismatch {
                expected: MZ.into(),
                got: "MZ00000000000000000000000000000000".into(),
            },
        );
        assert!(core.parse(&start_json()).is_ok());

        rejects(
            &mut core,
            "not json",
            Json("expected ident at line 1 column 2".into()),
        );
        rejects(
            &mut core,
            "[1,2]",
            Json("expected an object, got an array".into()),
        );
        rejects(
            &mut core,
            r#"{"event":"media"} x"#,
            Json("trailing characters at line 1 column 19".into()),
        );
        rejects(
            &mut core,
            r#"{"event":"clear"}"#,
            UnknownEvent("clear".into()),
        );
        rejects(&mut core, r#"{"protocol":"Call"}"#, MissingField("event"));
        rejects(
            &mut core,
            r#"{"event":7}"#,
            BadField {
                field: "event",
                reason: "expected a string, got a number".into(),
            },
        );
        rejects(&mut core, &start_json(), DuplicateStart);
        rejects(&mut core, r#"{"event":"media"}"#, MissingField("media"));
        rejects(
            &mut core,
            r#"{"event":"media","media":"x"}"#,
            BadField {
                field: "media",
                reason: "expected an object, got a string".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{}}"#,
            MissingField("media.payload"),
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{"payload":"/w==","track":"outbound"}}"#,
            BadField {
                field: "media.track",
                reason: "\"outbound\": only caller (inbound) audio is accepted".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"media","sequenceNumber":"x1","media":{"payload":"/w=="}}"#,
            BadField {
                field: "sequenceNumber",
                reason: "\"x1\" is not a non-negative integer".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"media","sequenceNumber":-1,"media":{"payload":"/w=="}}"#,
            BadField {
                field: "sequenceNumber",
                reason: "-1 is negative".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{"chunk":"1.0","payload":"/w=="}}"#,
            BadField {
                field: "media.chunk",
                reason: "\"1.0\" is not a non-negative integer".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{"payload":"!!!!"}}"#,
            Base64("Invalid symbol 33, offset 0.".into()),
        );
        rejects(
            &mut core,
            r#"{"event":"media","media":{"payload":""}}"#,
            PayloadSize {
                len: 0,
                reason: "empty",
            },
        );
        let big = media_json(2, 1, &[0u8; 8001]);
        rejects(
            &mut core,
            &big,
            PayloadSize {
                len: 8001,
                reason: "more than 1 s of audio",
            },
        );
        let other = r#"{"event":"media","streamSid":"MZother","media":{"payload":"/w=="}}"#;
        rejects(
            &mut core,
            other,
            StreamMismatch {
                expected: MZ.into(),
                got: "MZother".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"dtmf","dtmf":{"digit":"E"}}"#,
            BadField {
                field: "dtmf.digit",
                reason: "\"E\" is not one of 0-9, *, #, A-D".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"dtmf","dtmf":{"digit":"12"}}"#,
            BadField {
                field: "dtmf.digit",
                reason: "\"12\" is not one of 0-9, *, #, A-D".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"mark","mark":{"name":""}}"#,
            BadField {
                field: "mark.name",
                reason: "empty".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"mark","mark":{"name":3}}"#,
            BadField {
                field: "mark.name",
                reason: "expected a string, got a number".into(),
            },
        );
        rejects(
            &mut core,
            r#"{"event":"stop","streamSid":"MZother"}"#,
            StreamMismatch {
                expected: MZ.into(),
                got: "MZother".into(),
            },
        );

        // The state survived all of that.
        assert_eq!(core.parse(&media_json(2, 1, &[1; 160])).map(|_| ()), Ok(()));
        assert_eq!(
            core.parse(r#"{"event":"dtmf","dtmf":{"digit":"b"}}"#),
            Ok(CarrierEvent::Dtmf {
                digit: 'B',
                duration_ms: None
            })
        );
        assert_eq!(core.sequence_gaps(), 0);
        assert_eq!(
            core.parse(&stop_json()),
            Ok(CarrierEvent::Stop { reason: None })
        );
        rejects(
            &mut core,
            &media_json(413, 2, &[1; 160]),
            AfterStop("media"),
        );
        rejects(&mut core, &stop_json(), AfterStop("stop"));
        rejects(&mut core, &start_json(), AfterStop("start"));
        rejects(&mut core, CONNECTED, AfterStop("connected"));
    }

    #[test]
    fn stop_before_start_ends_the_stream() {
        let mut core = TwilioCore::new();
        assert_eq!(
            core.parse(r#"{"event":"stop"}"#),
            Ok(CarrierEvent::Stop { reason: None })
        );
        assert_eq!(core.phase(), StreamPhase::Stopped);
        assert_eq!(core.encode(Outbound::Clear), Err(EncodeError::NotStarted));
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
        let mut core = TwilioCore::new();
        assert_eq!(core.encode(Outbound::Clear), Err(EncodeError::NotStarted));
        assert_eq!(
            core.encode(Outbound::Mark("a")),
            Err(EncodeError::NotStarted)
        );
        assert_eq!(
            core.encode(Outbound::Media(&[0xFF; 160])),
            Err(EncodeError::NotStarted)
        );
        core.parse(&start_json()).expect("start");

        let media = core
            .encode(Outbound::Media(&[0x7F, 0x7F, 0x7F, 0x7F, 0x7F, 0x7E]))
            .expect("media");
        assert_eq!(
            media,
            format!(r#"{{"event":"media","streamSid":"{MZ}","media":{{"payload":"f39/f39+"}}}}"#)
        );
        assert_eq!(
            keys(&media),
            ["event", "media", "media.payload", "streamSid"]
        );

        let mark = core.encode(Outbound::Mark("turn-3")).expect("mark");
        assert_eq!(
            mark,
            format!(r#"{{"event":"mark","streamSid":"{MZ}","mark":{{"name":"turn-3"}}}}"#)
        );
        assert_eq!(keys(&mark), ["event", "mark", "mark.name", "streamSid"]);

        let clear = core.encode(Outbound::Clear).expect("clear");
        assert_eq!(clear, format!(r#"{{"event":"clear","streamSid":"{MZ}"}}"#));
        assert_eq!(keys(&clear), ["event", "streamSid"]);

        // Names needing escapes survive a JSON round trip.
        let name = "a\"b\\c\nd\u{1}é";
        let mark = core.encode(Outbound::Mark(name)).expect("mark");
        let v: serde_json::Value = serde_json::from_str(&mark).expect("json");
        assert_eq!(v["mark"]["name"], name);

        assert_eq!(
            core.encode(Outbound::Mark("")),
            Err(EncodeError::MarkName("empty"))
        );
        assert!(core.encode(Outbound::Mark(&"x".repeat(256))).is_ok());
        assert_eq!(
            core.encode(Outbound::Mark(&"x".repeat(257))),
            Err(EncodeError::MarkName("longer than 256 bytes"))
        );
        let rules = ChunkRules {
            multiple_of: 1,
            min_bytes: 1,
            max_bytes: 8000,
        };
        assert_eq!(
            core.encode(Outbound::Media(&[])),
            Err(EncodeError::ChunkSize { len: 0, rules })
        );
        assert!(core.encode(Outbound::Media(&[0; 8000])).is_ok());
        assert_eq!(
            core.encode(Outbound::Media(&[0; 8001])),
            Err(EncodeError::ChunkSize { len: 8001, rules })
        );
    }

    #[test]
    fn encoded_media_reparses_as_inbound() {
        let mut core = started();
        let payload: Vec<u8> = (0..=255).collect();
        let out = core.encode(Outbound::Media(&payload)).expect("media");
        let Ok(CarrierEvent::Media(frame)) = core.parse(&out) else {
            panic!("re-parse failed")
        };
        assert_eq!(frame.payload, payload);
    }

    fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[0-9]{0,6}".prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            prop::sample::select(vec![
                "inbound",
                "outbound",
                "audio/x-mulaw",
                "8000",
                MZ,
                "/w==",
                "5",
                "a"
            ])
            .prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        json_leaf().prop_recursive(4, 48, 6, |inner| {
            let key = prop::sample::select(vec![
                "event",
                "streamSid",
                "sequenceNumber",
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
                "name",
                "accountSid",
                "callSid",
                "tracks",
                "customParameters",
                "mediaFormat",
                "encoding",
                "sampleRate",
                "channels",
                "x",
            ]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(key, inner, 0..6).prop_map(|m| {
                    serde_json::Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    )
                }),
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
                other => [("media".to_owned(), other)].into_iter().collect(),
            };
            obj.insert("event".into(), event.into());
            serde_json::Value::Object(obj).to_string()
        })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = TwilioCore::new().parse(&text);
            let mut core = started();
            let _ = core.parse(&text);
            let _ = core.encode(Outbound::Mark("m"));
        }

        #[test]
        fn arbitrary_objects_never_panic(frames in prop::collection::vec(event_object(), 1..6)) {
            let mut fresh = TwilioCore::new();
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
        fn payload_round_trips(payload in prop::collection::vec(any::<u8>(), 1..=8000)) {
            let mut core = started();
            let ev = core.parse(&media_json(2, 1, &payload));
            prop_assert_eq!(ev, Ok(CarrierEvent::Media(MediaFrame { sequence: Some(2), chunk: Some(1), timestamp_ms: Some(5), payload })));
        }
    }
}
