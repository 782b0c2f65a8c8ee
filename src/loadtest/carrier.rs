//! Sans-IO carrier emulation: the messages a carrier sends on a media stream, and the check
//! of every message the gateway sends back.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::clip::{FRAME_SAMPLES_8K, VOICED_DBFS};
use crate::audio::g711::{decode_mulaw_into, encode_mulaw_into};
use crate::audio::linear16::{dbfs, decode_le_into, encode_le_into, rms};
use crate::audio::resample::Resampler;

/// Which carrier the harness plays, and its audio format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierKind {
    /// Twilio Media Streams: μ-law 8 kHz, 20 ms `media` messages, camelCase keys.
    Twilio,
    /// Exotel Voicebot: 16-bit PCM at `sample_rate` (8000, 16000 or 24000), snake_case keys.
    Exotel {
        /// The stream's sample rate.
        sample_rate: u32,
    },
}

/// Milliseconds of caller audio in one frame of the harness's clock.
pub const FRAME_MS: u32 = 20;
/// Exotel's smallest valid outgoing chunk, in bytes.
pub const EXOTEL_CHUNK_MIN_BYTES: usize = 3_200;
/// Exotel's largest valid outgoing chunk, in bytes (the largest multiple of 320 below 100 000).
pub const EXOTEL_CHUNK_MAX_BYTES: usize = 99_840;
/// Exotel's outgoing chunks are whole multiples of this many bytes.
pub const EXOTEL_CHUNK_STEP_BYTES: usize = 320;
/// The `duration` the harness reports for an Exotel DTMF digit, in milliseconds.
pub const EXOTEL_DTMF_DURATION_MS: u32 = 100;
/// Silent 20 ms frames after speech before the upsampler is reset and silence is sent from
/// the cache (the filter's tail is shorter than this).
const QUIET_FRAMES_BEFORE_RESET: u32 = 3;

impl CarrierKind {
    /// The stream's sample rate, in Hz.
    pub fn sample_rate(self) -> u32 {
        match self {
            CarrierKind::Twilio => 8_000,
            CarrierKind::Exotel { sample_rate } => sample_rate,
        }
    }

    /// Bytes one sample takes on the wire.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            CarrierKind::Twilio => 1,
            CarrierKind::Exotel { .. } => 2,
        }
    }

    /// The key that carries the stream id (`streamSid` or `stream_sid`).
    pub fn sid_key(self) -> &'static str {
        match self {
            CarrierKind::Twilio => "streamSid",
            CarrierKind::Exotel { .. } => "stream_sid",
        }
    }

    /// A short name for logs and reports (`twilio`, `exotel`).
    pub fn name(self) -> &'static str {
        match self {
            CarrierKind::Twilio => "twilio",
            CarrierKind::Exotel { .. } => "exotel",
        }
    }
}

/// Why a carrier stream cannot be built or a message cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    /// Exotel streams run at 8000, 16000 or 24000 Hz.
    #[error("unsupported Exotel sample rate {0} Hz (use 8000, 16000 or 24000)")]
    SampleRate(u32),
    /// Exotel messages hold 20 to 100 ms of audio, in whole 20 ms frames.
    #[error("unsupported Exotel chunk of {0} ms (use a multiple of 20 from 20 to 100)")]
    ChunkMs(u32),
    /// A DTMF digit outside `0-9`, `*`, `#`.
    #[error("not a DTMF digit: {0:?} (use 0-9, * or #)")]
    DtmfDigit(char),
    /// The resampler could not be built.
    #[error("cannot build the resampler: {0}")]
    Resample(#[from] crate::audio::resample::ResampleError),
}

/// The carrier's side of one media stream: ids, counters and the audio encoder.
///
/// It builds the exact text of every message the carrier sends (`connected`, `start`,
/// `media`, `dtmf`, `mark`, `stop`), numbering them as the carrier does, and checks every
/// message the gateway sends back ([`CarrierStream::read_text`]). It does no I/O.
pub struct CarrierStream {
    kind: CarrierKind,
    stream_sid: String,
    call_sid: String,
    account_sid: String,
    /// The last `sequenceNumber` used (0 before `start`).
    seq: u64,
    /// `media` messages built so far.
    chunk: u64,
    /// 20 ms frames per `media` message.
    frames_per_message: usize,
    /// Samples of one 20 ms frame at the stream rate.
    frame_samples: usize,
    /// 8 kHz → stream rate (Exotel 16/24 kHz only).
    upsampler: Option<Resampler>,
    /// Upsampled audio not yet put in a message.
    upsampled: VecDeque<i16>,
    /// Silent frames in a row fed to the upsampler.
    quiet_frames: u32,
    /// Stream-rate audio of the message being filled.
    pending: Vec<i16>,
    /// Frames in `pending`.
    pending_frames: usize,
    /// Every frame in `pending` is digital silence.
    pending_silent: bool,
    /// base64 of one message of digital silence.
    silence_payload: Arc<str>,
    /// Stream rate → 8 kHz for the bot's audio (Exotel 16/24 kHz only).
    downsampler: Option<Resampler>,
    /// Scratch for encoding.
    bytes: Vec<u8>,
    /// Scratch for upsampling.
    upsampled_scratch: Vec<i16>,
}

impl std::fmt::Debug for CarrierStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarrierStream")
            .field("kind", &self.kind)
            .field("stream_sid", &self.stream_sid)
            .field("seq", &self.seq)
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

/// A message from the gateway that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayMessage {
    /// Bot audio.
    Media(BotAudio),
    /// A mark to echo once the audio before it has played.
    Mark {
        /// Its name (non-empty).
        name: String,
    },
    /// Drop unplayed audio and echo pending marks now.
    Clear,
}

/// The audio of one gateway `media` message.
#[derive(Debug, Clone, PartialEq)]
pub struct BotAudio {
    /// Samples at the stream rate.
    pub samples: usize,
    /// Its length, in microseconds.
    pub audio_us: u32,
    /// Where its first voiced 20 ms window begins, in microseconds of its audio.
    pub voiced_offset_us: Option<u32>,
    /// The audio as 8 kHz PCM (Exotel 16/24 kHz is downsampled; the filter delays it by a
    /// few milliseconds across messages).
    pub pcm_8k: Vec<i16>,
}

/// A gateway message that breaks the carrier's protocol: `kind: detail`.
///
/// Kinds: `binary`, `json`, `event`, `field`, `extra_field`, `stream_sid`, `base64`,
/// `samples`, `chunk_size`, `mark`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(
    /// The whole text, `kind: detail`.
    pub String,
);

impl Violation {
    fn new(kind: &str, detail: impl std::fmt::Display) -> Violation {
        Violation(format!("{kind}: {detail}"))
    }

    /// The kind (the text before the first colon).
    pub fn kind(&self) -> &str {
        self.0.split(':').next().unwrap_or("")
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The violation for a binary frame of `len` bytes (carriers take text frames only).
pub fn binary_violation(len: usize) -> Violation {
    Violation::new(
        "binary",
        format!("{len}-byte binary frame (carriers take JSON text frames only)"),
    )
}

/// Where the first 20 ms window of `pcm` (at `sample_rate`) at or above
/// [`VOICED_DBFS`] begins, in microseconds; `None` when no window is voiced. A short last
/// window counts as a window.
pub fn voiced_offset_us(pcm: &[i16], sample_rate: u32) -> Option<u32> {
    let window = usize::try_from(sample_rate / 50).unwrap_or(160).max(1);
    pcm.chunks(window)
        .position(|w| dbfs(rms(w)) >= VOICED_DBFS)
        .map(|i| {
            u32::try_from(i)
                .unwrap_or(u32::MAX)
                .saturating_mul(FRAME_MS * 1_000)
        })
}

impl CarrierStream {
    /// The stream of call `index` (its ids are derived from it), sending `chunk_ms` of audio
    /// per `media` message (Exotel; Twilio always sends 20 ms).
    pub fn new(
        kind: CarrierKind,
        index: u32,
        chunk_ms: u32,
    ) -> Result<CarrierStream, CarrierError> {
        let rate = kind.sample_rate();
        let chunk_ms = match kind {
            CarrierKind::Twilio => FRAME_MS,
            CarrierKind::Exotel { sample_rate } => {
                if ![8_000, 16_000, 24_000].contains(&sample_rate) {
                    return Err(CarrierError::SampleRate(sample_rate));
                }
                if chunk_ms == 0 || !chunk_ms.is_multiple_of(FRAME_MS) || chunk_ms > 100 {
                    return Err(CarrierError::ChunkMs(chunk_ms));
                }
                chunk_ms
            }
        };
        let (upsampler, downsampler) = if rate == 8_000 {
            (None, None)
        } else {
            (
                Some(Resampler::new(8_000, rate)?),
                Some(Resampler::new(rate, 8_000)?),
            )
        };
        let frame_samples = (rate / 50) as usize;
        let frames_per_message = (chunk_ms / FRAME_MS) as usize;
        let silence = vec![0i16; frame_samples * frames_per_message];
        let mut bytes = Vec::new();
        encode_payload(kind, &silence, &mut bytes);
        let silence_payload: Arc<str> = Arc::from(B64.encode(&bytes));
        let tag = u128::from(index);
        Ok(CarrierStream {
            kind,
            stream_sid: format!("MZ{:032x}", (0x10ad_u128 << 112) | tag),
            call_sid: format!("CA{:032x}", (0xca11_u128 << 112) | tag),
            account_sid: format!("AC{:032x}", 0xacc0_u128 << 112),
            seq: 0,
            chunk: 0,
            frames_per_message,
            frame_samples,
            upsampler,
            upsampled: VecDeque::new(),
            quiet_frames: QUIET_FRAMES_BEFORE_RESET,
            pending: Vec::with_capacity(frame_samples * frames_per_message),
            pending_frames: 0,
            pending_silent: true,
            silence_payload,
            downsampler,
            bytes,
            upsampled_scratch: Vec::with_capacity(frame_samples * 2),
        })
    }

    /// The carrier played.
    pub fn kind(&self) -> CarrierKind {
        self.kind
    }

    /// The stream id sent in `start`; the gateway must echo it.
    pub fn stream_sid(&self) -> &str {
        &self.stream_sid
    }

    /// The call id sent in `start`.
    pub fn call_sid(&self) -> &str {
        &self.call_sid
    }

    /// The account id sent in `start`.
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// 20 ms frames per `media` message.
    pub fn frames_per_message(&self) -> usize {
        self.frames_per_message
    }

    /// Frames waiting for the current message to fill.
    pub fn pending_frames(&self) -> usize {
        self.pending_frames
    }

    /// The last sequence number used.
    pub fn sequence_number(&self) -> u64 {
        self.seq
    }

    /// `media` messages built so far.
    pub fn chunks(&self) -> u64 {
        self.chunk
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The `connected` message.
    pub fn connected(&self) -> String {
        match self.kind {
            CarrierKind::Twilio => {
                r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_string()
            }
            CarrierKind::Exotel { .. } => r#"{"event":"connected"}"#.to_string(),
        }
    }

    /// The `start` message (sequence number 1). Twilio carries `from`/`to` as custom
    /// parameters (unless `parameters` already has them, or they are empty); Exotel in
    /// `start.from`/`start.to`.
    pub fn start(&mut self, parameters: &BTreeMap<String, String>, from: &str, to: &str) -> String {
        self.seq = 0;
        let seq = self.next_seq().to_string();
        let value = match self.kind {
            CarrierKind::Twilio => {
                let mut custom = parameters.clone();
                for (key, value) in [("from", from), ("to", to)] {
                    if !value.is_empty() {
                        custom
                            .entry(key.to_string())
                            .or_insert_with(|| value.to_string());
                    }
                }
                json!({
                    "event": "start",
                    "sequenceNumber": seq,
                    "start": {
                        "accountSid": self.account_sid,
                        "streamSid": self.stream_sid,
                        "callSid": self.call_sid,
                        "tracks": ["inbound"],
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        "customParameters": custom,
                    },
                    "streamSid": self.stream_sid,
                })
            }
            CarrierKind::Exotel { sample_rate } => json!({
                "event": "start",
                "sequence_number": seq,
                "stream_sid": self.stream_sid,
                "start": {
                    "stream_sid": self.stream_sid,
                    "call_sid": self.call_sid,
                    "account_sid": self.account_sid,
                    "from": from,
                    "to": to,
                    "custom_parameters": parameters,
                    "media_format": {
                        "encoding": "audio/x-raw",
                        "sample_rate": sample_rate.to_string(),
                        "bit_rate": "16",
                    },
                },
            }),
        };
        value.to_string()
    }

    /// Adds one 20 ms frame of caller audio (8 kHz; shorter frames are padded with silence,
    /// longer ones cut) and returns the `media` message when one is full (every frame on
    /// Twilio; every `chunk_ms` on Exotel).
    pub fn media(&mut self, frame_8k: &[i16]) -> Option<String> {
        let frame_8k = frame_8k.get(..FRAME_SAMPLES_8K).unwrap_or(frame_8k);
        let silent = frame_8k.iter().all(|&s| s == 0);
        self.pending_silent &= silent;
        match self.upsampler.as_mut() {
            None => {
                self.pending.extend_from_slice(frame_8k);
                let short = FRAME_SAMPLES_8K - frame_8k.len();
                self.pending.extend(std::iter::repeat_n(0, short));
            }
            Some(upsampler) => {
                if silent && self.quiet_frames >= QUIET_FRAMES_BEFORE_RESET {
                    self.pending
                        .extend(std::iter::repeat_n(0, self.frame_samples));
                } else {
                    // The filter's tail may still ring into this frame.
                    self.pending_silent = false;
                    if silent {
                        self.quiet_frames += 1;
                    } else {
                        self.quiet_frames = 0;
                    }
                    let mut padded = [0i16; FRAME_SAMPLES_8K];
                    padded[..frame_8k.len()].copy_from_slice(frame_8k);
                    self.upsampled_scratch.clear();
                    upsampler.process(&padded, &mut self.upsampled_scratch);
                    self.upsampled
                        .extend(self.upsampled_scratch.iter().copied());
                    let take = self.frame_samples.min(self.upsampled.len());
                    self.pending.extend(self.upsampled.drain(..take));
                    let short = self.frame_samples - take;
                    self.pending.extend(std::iter::repeat_n(0, short));
                    if self.quiet_frames >= QUIET_FRAMES_BEFORE_RESET {
                        upsampler.reset();
                        self.upsampled.clear();
                    }
                }
            }
        }
        self.pending_frames += 1;
        if self.pending_frames < self.frames_per_message {
            return None;
        }
        Some(self.take_media())
    }

    /// The frames of a part-filled message as a shorter `media` message, if any are waiting:
    /// sent before `stop`, so the caller's last words are not lost at hang-up.
    pub fn flush_media(&mut self) -> Option<String> {
        (self.pending_frames > 0).then(|| self.take_media())
    }

    /// Encodes the waiting frames as one `media` message and empties the batch.
    fn take_media(&mut self) -> String {
        let text = if self.pending_silent && self.pending_frames == self.frames_per_message {
            let payload = Arc::clone(&self.silence_payload);
            self.media_text(&payload)
        } else {
            let mut bytes = std::mem::take(&mut self.bytes);
            bytes.clear();
            encode_payload(self.kind, &self.pending, &mut bytes);
            let payload = B64.encode(&bytes);
            self.bytes = bytes;
            self.media_text(&payload)
        };
        self.pending.clear();
        self.pending_frames = 0;
        self.pending_silent = true;
        text
    }

    /// A `media` message around `payload` (base64, which needs no escaping), numbered.
    fn media_text(&mut self, payload: &str) -> String {
        let seq = self.next_seq();
        self.chunk += 1;
        let timestamp = (self.chunk - 1) * self.frames_per_message as u64 * u64::from(FRAME_MS);
        let (chunk, sid) = (self.chunk, &self.stream_sid);
        match self.kind {
            CarrierKind::Twilio => format!(
                r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp}","payload":"{payload}"}},"streamSid":"{sid}"}}"#
            ),
            CarrierKind::Exotel { .. } => format!(
                r#"{{"event":"media","sequence_number":"{seq}","stream_sid":"{sid}","media":{{"chunk":"{chunk}","timestamp":"{timestamp}","payload":"{payload}"}}}}"#
            ),
        }
    }

    /// A `dtmf` message for one key press.
    pub fn dtmf(&mut self, digit: char) -> Result<String, CarrierError> {
        if !(digit.is_ascii_digit() || digit == '*' || digit == '#') {
            return Err(CarrierError::DtmfDigit(digit));
        }
        let seq = self.next_seq().to_string();
        let digit = digit.to_string();
        let value = match self.kind {
            CarrierKind::Twilio => json!({
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": seq,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }),
            CarrierKind::Exotel { .. } => json!({
                "event": "dtmf",
                "sequence_number": seq,
                "stream_sid": self.stream_sid,
                "dtmf": {"digit": digit, "duration": EXOTEL_DTMF_DURATION_MS.to_string()},
            }),
        };
        Ok(value.to_string())
    }

    /// The echo of mark `name` (its audio has played, or a `clear` flushed it).
    pub fn mark(&mut self, name: &str) -> String {
        let seq = self.next_seq().to_string();
        let value = match self.kind {
            CarrierKind::Twilio => json!({
                "event": "mark",
                "sequenceNumber": seq,
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }),
            CarrierKind::Exotel { .. } => json!({
                "event": "mark",
                "sequence_number": seq,
                "stream_sid": self.stream_sid,
                "mark": {"name": name},
            }),
        };
        value.to_string()
    }

    /// The `stop` message (the caller hung up).
    pub fn stop(&mut self) -> String {
        let seq = self.next_seq().to_string();
        let value = match self.kind {
            CarrierKind::Twilio => json!({
                "event": "stop",
                "sequenceNumber": seq,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }),
            CarrierKind::Exotel { .. } => json!({
                "event": "stop",
                "sequence_number": seq,
                "stream_sid": self.stream_sid,
                "stop": {"call_sid": self.call_sid, "account_sid": self.account_sid, "reason": "callended"},
            }),
        };
        value.to_string()
    }

    /// Checks one text message from the gateway: a JSON object whose `event` is `media`,
    /// `mark` or `clear`, with exactly the fields the carrier documents, our stream id, and
    /// (for `media`) base64 audio of whole samples within the carrier's size rules. The
    /// audio is decoded (and brought to 8 kHz).
    pub fn read_text(&mut self, text: &str) -> Result<GatewayMessage, Violation> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Violation::new("json", format!("not JSON ({e})")))?;
        let Value::Object(object) = value else {
            return Err(Violation::new("json", "not a JSON object"));
        };
        let event = match object.get("event") {
            None => return Err(Violation::new("event", "missing")),
            Some(Value::String(event)) => event.as_str(),
            Some(_) => return Err(Violation::new("field", "`event` is not a string")),
        };
        let sid_key = self.kind.sid_key();
        let (allowed, body): (&[&str], Option<(&str, &[&str])>) = match event {
            "media" => (&["event", sid_key, "media"], Some(("media", &["payload"]))),
            "mark" => (&["event", sid_key, "mark"], Some(("mark", &["name"]))),
            "clear" => (&["event", sid_key], None),
            other => {
                return Err(Violation::new(
                    "event",
                    format!("unknown `{}`", clip_text(other)),
                ));
            }
        };
        match object.get(sid_key) {
            None => {
                return Err(Violation::new(
                    "field",
                    format!("{event}: `{sid_key}` missing"),
                ));
            }
            Some(Value::String(sid)) if *sid == self.stream_sid => {}
            Some(Value::String(sid)) => {
                return Err(Violation::new(
                    "stream_sid",
                    format!(
                        "{event}: `{}` is not ours (`{}`)",
                        clip_text(sid),
                        self.stream_sid
                    ),
                ));
            }
            Some(_) => {
                return Err(Violation::new(
                    "field",
                    format!("{event}: `{sid_key}` is not a string"),
                ));
            }
        }
        if let Some(extra) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(Violation::new(
                "extra_field",
                format!("{event}: unexpected `{}`", clip_text(extra)),
            ));
        }
        let Some((key, fields)) = body else {
            return Ok(GatewayMessage::Clear);
        };
        let inner = match object.get(key) {
            None => return Err(Violation::new("field", format!("{event}: `{key}` missing"))),
            Some(Value::Object(inner)) => inner,
            Some(_) => {
                return Err(Violation::new(
                    "field",
                    format!("{event}: `{key}` is not an object"),
                ));
            }
        };
        if let Some(extra) = inner.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(Violation::new(
                "extra_field",
                format!("{event}: unexpected `{key}.{}`", clip_text(extra)),
            ));
        }
        let field = fields[0];
        let text = match inner.get(field) {
            None => {
                return Err(Violation::new(
                    "field",
                    format!("{event}: `{key}.{field}` missing"),
                ));
            }
            Some(Value::String(text)) => text,
            Some(_) => {
                return Err(Violation::new(
                    "field",
                    format!("{event}: `{key}.{field}` is not a string"),
                ));
            }
        };
        if event == "mark" {
            if text.is_empty() {
                return Err(Violation::new("mark", "empty name"));
            }
            return Ok(GatewayMessage::Mark { name: text.clone() });
        }
        self.decode_media(text).map(GatewayMessage::Media)
    }

    /// Decodes and checks a `media` payload.
    fn decode_media(&mut self, payload: &str) -> Result<BotAudio, Violation> {
        let bytes = B64
            .decode(payload)
            .map_err(|e| Violation::new("base64", format!("media payload: {e}")))?;
        if bytes.is_empty() {
            return Err(Violation::new("samples", "empty media payload"));
        }
        let rate = self.kind.sample_rate();
        let pcm = match self.kind {
            CarrierKind::Twilio => {
                let mut pcm = Vec::with_capacity(bytes.len());
                decode_mulaw_into(&bytes, &mut pcm);
                pcm
            }
            CarrierKind::Exotel { .. } => {
                if !bytes.len().is_multiple_of(2) {
                    return Err(Violation::new(
                        "samples",
                        format!(
                            "{} bytes is not a whole number of 16-bit samples",
                            bytes.len()
                        ),
                    ));
                }
                exotel_chunk_rule(bytes.len())?;
                let mut pcm = Vec::with_capacity(bytes.len() / 2);
                decode_le_into(&bytes, &mut pcm);
                pcm
            }
        };
        let samples = pcm.len();
        let audio_us =
            u32::try_from(samples as u64 * 1_000_000 / u64::from(rate)).unwrap_or(u32::MAX);
        let voiced_offset_us = voiced_offset_us(&pcm, rate);
        let pcm_8k = match self.downsampler.as_mut() {
            None => pcm,
            Some(down) => {
                let mut out =
                    Vec::with_capacity(samples * 8_000 / rate as usize + FRAME_SAMPLES_8K);
                down.process(&pcm, &mut out);
                out
            }
        };
        Ok(BotAudio {
            samples,
            audio_us,
            voiced_offset_us,
            pcm_8k,
        })
    }
}

/// Exotel's rule for the size of an outgoing chunk: a multiple of 320 bytes, 3 200 to
/// 99 840 bytes.
pub fn exotel_chunk_rule(bytes: usize) -> Result<(), Violation> {
    if !bytes.is_multiple_of(EXOTEL_CHUNK_STEP_BYTES)
        || !(EXOTEL_CHUNK_MIN_BYTES..=EXOTEL_CHUNK_MAX_BYTES).contains(&bytes)
    {
        return Err(Violation::new(
            "chunk_size",
            format!(
                "{bytes} bytes (Exotel takes multiples of {EXOTEL_CHUNK_STEP_BYTES} from \
                 {EXOTEL_CHUNK_MIN_BYTES} to {EXOTEL_CHUNK_MAX_BYTES})"
            ),
        ));
    }
    Ok(())
}

/// Encodes stream-rate PCM as the carrier's payload bytes.
fn encode_payload(kind: CarrierKind, pcm: &[i16], out: &mut Vec<u8>) {
    match kind {
        CarrierKind::Twilio => encode_mulaw_into(pcm, out),
        CarrierKind::Exotel { .. } => encode_le_into(pcm, out),
    }
}

/// At most 40 characters of untrusted text, for a violation's detail.
fn clip_text(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("valid JSON")
    }

    fn tone_8k(samples: usize, amplitude: f32) -> Vec<i16> {
        (0..samples)
            .map(|i| (amplitude * (i as f32 * 0.7).sin()) as i16)
            .collect()
    }

    fn params() -> BTreeMap<String, String> {
        BTreeMap::from([("tenant".to_string(), "acme".to_string())])
    }

    fn payload_len(message: &Value) -> usize {
        let payload = message["media"]["payload"].as_str().expect("payload");
        B64.decode(payload).expect("base64").len()
    }

    #[test]
    fn twilio_call_is_numbered_as_the_carrier_numbers_it() {
        let mut s = CarrierStream::new(CarrierKind::Twilio, 7, 100).expect("stream");
        let (mz, ca, ac) = (
            s.stream_sid().to_string(),
            s.call_sid().to_string(),
            s.account_sid().to_string(),
        );
        assert_eq!(mz.len(), 34);
        assert!(mz.starts_with("MZ") && mz[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            parse(&s.connected()),
            json!({"event":"connected","protocol":"Call","version":"1.0.0"})
        );
        assert_eq!(
            parse(&s.start(&params(), "+14155550100", "+14155550199")),
            json!({
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": ac,
                    "streamSid": mz,
                    "callSid": ca,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"tenant": "acme", "from": "+14155550100", "to": "+14155550199"}
                },
                "streamSid": mz
            })
        );
        // Twilio always sends 20 ms, whatever chunk was asked for.
        assert_eq!(s.frames_per_message(), 1);
        let speech = tone_8k(160, 8000.0);
        let silence = [0i16; 160];
        let frames: [&[i16]; 3] = [&silence, &speech, &silence];
        for (i, frame) in frames.into_iter().enumerate() {
            let text = s.media(frame).expect("one message per frame");
            let n = i as u64;
            let message = parse(&text);
            assert_eq!(message["event"], "media");
            assert_eq!(message["sequenceNumber"], (n + 2).to_string());
            assert_eq!(message["streamSid"], mz.as_str());
            assert_eq!(message["media"]["track"], "inbound");
            assert_eq!(message["media"]["chunk"], (n + 1).to_string());
            assert_eq!(message["media"]["timestamp"], (n * 20).to_string());
            assert_eq!(payload_len(&message), 160);
            assert_eq!(message.as_object().map(|o| o.len()), Some(4));
            assert_eq!(message["media"].as_object().map(|o| o.len()), Some(4));
        }
        assert_eq!(
            parse(&s.dtmf('5').expect("digit")),
            json!({"event":"dtmf","streamSid":mz,"sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"5"}})
        );
        assert_eq!(
            parse(&s.mark("turn-3")),
            json!({"event":"mark","sequenceNumber":"6","streamSid":mz,"mark":{"name":"turn-3"}})
        );
        assert_eq!(
            parse(&s.stop()),
            json!({"event":"stop","sequenceNumber":"7","stop":{"accountSid":ac,"callSid":ca},"streamSid":mz})
        );
        assert_eq!((s.sequence_number(), s.chunks()), (7, 3));
    }

    #[test]
    fn twilio_media_carries_the_frame_as_mulaw() {
        let mut s = CarrierStream::new(CarrierKind::Twilio, 1, 20).expect("stream");
        let speech = tone_8k(160, 8000.0);
        let message = parse(&s.media(&speech).expect("message"));
        let bytes = B64
            .decode(message["media"]["payload"].as_str().expect("payload"))
            .expect("base64");
        let mut expected = Vec::new();
        encode_mulaw_into(&speech, &mut expected);
        assert_eq!(bytes, expected);
        let silence = parse(&s.media(&[]).expect("message"));
        assert_eq!(
            B64.decode(silence["media"]["payload"].as_str().expect("payload"))
                .expect("base64"),
            vec![0xFF; 160]
        );
    }

    #[test]
    fn exotel_16k_call_is_numbered_as_the_carrier_numbers_it() {
        let kind = CarrierKind::Exotel {
            sample_rate: 16_000,
        };
        let mut s = CarrierStream::new(kind, 3, 20).expect("stream");
        let (mz, ca, ac) = (
            s.stream_sid().to_string(),
            s.call_sid().to_string(),
            s.account_sid().to_string(),
        );
        assert_eq!(parse(&s.connected()), json!({"event":"connected"}));
        assert_eq!(
            parse(&s.start(&params(), "+919876543210", "+918047491899")),
            json!({
                "event": "start",
                "sequence_number": "1",
                "stream_sid": mz,
                "start": {
                    "stream_sid": mz,
                    "call_sid": ca,
                    "account_sid": ac,
                    "from": "+919876543210",
                    "to": "+918047491899",
                    "custom_parameters": {"tenant": "acme"},
                    "media_format": {"encoding": "audio/x-raw", "sample_rate": "16000", "bit_rate": "16"}
                }
            })
        );
        let speech = tone_8k(160, 8000.0);
        for n in 0..4u64 {
            let frame: &[i16] = if n == 1 { &speech } else { &[0; 160] };
            let message = parse(&s.media(frame).expect("20 ms messages"));
            assert_eq!(message["event"], "media");
            assert_eq!(message["sequence_number"], (n + 2).to_string());
            assert_eq!(message["stream_sid"], mz.as_str());
            assert_eq!(message["media"]["chunk"], (n + 1).to_string());
            assert_eq!(message["media"]["timestamp"], (n * 20).to_string());
            assert_eq!(payload_len(&message), 640);
            assert_eq!(message["media"].as_object().map(|o| o.len()), Some(3));
        }
        assert_eq!(
            parse(&s.dtmf('#').expect("digit")),
            json!({"event":"dtmf","sequence_number":"6","stream_sid":mz,"dtmf":{"digit":"#","duration":"100"}})
        );
        assert_eq!(
            parse(&s.mark("u1c0")),
            json!({"event":"mark","sequence_number":"7","stream_sid":mz,"mark":{"name":"u1c0"}})
        );
        assert_eq!(
            parse(&s.stop()),
            json!({"event":"stop","sequence_number":"8","stream_sid":mz,"stop":{"call_sid":ca,"account_sid":ac,"reason":"callended"}})
        );
    }

    #[test]
    fn exotel_batches_frames_into_chunk_ms_messages() {
        let kind = CarrierKind::Exotel { sample_rate: 8_000 };
        let mut s = CarrierStream::new(kind, 0, 100).expect("stream");
        s.start(&BTreeMap::new(), "", "");
        for round in 0..2u64 {
            for _ in 0..4 {
                assert_eq!(s.media(&[0; 160]), None);
            }
            assert_eq!(s.pending_frames(), 4);
            let message = parse(&s.media(&tone_8k(160, 5000.0)).expect("fifth frame"));
            assert_eq!(message["media"]["chunk"], (round + 1).to_string());
            assert_eq!(message["media"]["timestamp"], (round * 100).to_string());
            assert_eq!(message["sequence_number"], (round + 2).to_string());
            assert_eq!(payload_len(&message), 1_600);
        }
    }

    #[test]
    fn a_part_filled_batch_is_flushed_before_stop() {
        let kind = CarrierKind::Exotel { sample_rate: 8_000 };
        let mut s = CarrierStream::new(kind, 0, 100).expect("stream");
        s.start(&BTreeMap::new(), "", "");
        assert_eq!(s.flush_media(), None, "nothing waiting");
        for _ in 0..5 {
            s.media(&[0; 160]);
        }
        assert_eq!(s.flush_media(), None, "a full batch was already sent");
        s.media(&tone_8k(160, 5000.0));
        s.media(&[0; 160]);
        let message = parse(&s.flush_media().expect("two frames waiting"));
        assert_eq!(message["media"]["chunk"], "2");
        assert_eq!(message["media"]["timestamp"], "100");
        assert_eq!(payload_len(&message), 2 * 320);
        assert_eq!(s.pending_frames(), 0);
        assert_eq!(s.flush_media(), None);
        // Silence only: encoded at its own length, not the full batch's.
        for _ in 0..3 {
            s.media(&[0; 160]);
        }
        assert_eq!(
            payload_len(&parse(&s.flush_media().expect("three"))),
            3 * 320
        );
        let stop = parse(&s.stop());
        assert_eq!(stop["sequence_number"], "5");
    }

    #[test]
    fn exotel_upsampled_speech_stays_voiced_and_silence_is_exact() {
        let kind = CarrierKind::Exotel {
            sample_rate: 24_000,
        };
        let mut s = CarrierStream::new(kind, 0, 20).expect("stream");
        let mut speech_messages = 0;
        for n in 0..20 {
            let frame = if (5..15).contains(&n) {
                tone_8k(160, 8000.0)
            } else {
                vec![0; 160]
            };
            let message = parse(&s.media(&frame).expect("message"));
            let bytes = B64
                .decode(message["media"]["payload"].as_str().expect("payload"))
                .expect("base64");
            assert_eq!(bytes.len(), 960);
            let mut pcm = Vec::new();
            decode_le_into(&bytes, &mut pcm);
            if voiced_offset_us(&pcm, 24_000).is_some() {
                speech_messages += 1;
            }
            if !(5..19).contains(&n) {
                assert!(pcm.iter().all(|&x| x == 0), "frame {n} is digital silence");
            }
        }
        // Ten voiced frames, give or take the filter's delay at the edges.
        assert!((10..=11).contains(&speech_messages), "{speech_messages}");
    }

    #[test]
    fn hand_built_media_equals_the_serde_form() {
        for kind in [
            CarrierKind::Twilio,
            CarrierKind::Exotel { sample_rate: 8_000 },
        ] {
            let mut s = CarrierStream::new(kind, 42, 20).expect("stream");
            s.start(&BTreeMap::new(), "a", "b");
            let text = s.media(&tone_8k(160, 3000.0)).expect("message");
            let message = parse(&text);
            let payload = message["media"]["payload"].clone();
            let expected = match kind {
                CarrierKind::Twilio => json!({
                    "event": "media", "sequenceNumber": "2", "streamSid": s.stream_sid(),
                    "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}
                }),
                CarrierKind::Exotel { .. } => json!({
                    "event": "media", "sequence_number": "2", "stream_sid": s.stream_sid(),
                    "media": {"chunk": "1", "timestamp": "0", "payload": payload}
                }),
            };
            assert_eq!(message, expected);
        }
    }

    #[test]
    fn start_escapes_custom_parameters() {
        let mut s = CarrierStream::new(CarrierKind::Twilio, 0, 20).expect("stream");
        let odd = BTreeMap::from([("q\"uote".to_string(), "line\nbreak\\".to_string())]);
        let message = parse(&s.start(&odd, "", ""));
        assert_eq!(
            message["start"]["customParameters"],
            json!({"q\"uote": "line\nbreak\\"})
        );
        let mark = parse(&s.mark("a\"b"));
        assert_eq!(mark["mark"]["name"], "a\"b");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(
            CarrierStream::new(
                CarrierKind::Exotel {
                    sample_rate: 11_025
                },
                0,
                20
            ),
            Err(CarrierError::SampleRate(11_025))
        ));
        for chunk in [0, 30, 120] {
            assert!(matches!(
                CarrierStream::new(CarrierKind::Exotel { sample_rate: 8_000 }, 0, chunk),
                Err(CarrierError::ChunkMs(c)) if c == chunk
            ));
        }
        let mut s = CarrierStream::new(CarrierKind::Twilio, 0, 20).expect("stream");
        assert!(matches!(s.dtmf('x'), Err(CarrierError::DtmfDigit('x'))));
        assert_eq!(s.sequence_number(), 0);
    }

    fn twilio() -> CarrierStream {
        CarrierStream::new(CarrierKind::Twilio, 9, 20).expect("stream")
    }

    fn exotel(rate: u32) -> CarrierStream {
        CarrierStream::new(CarrierKind::Exotel { sample_rate: rate }, 9, 20).expect("stream")
    }

    fn kind_of(s: &mut CarrierStream, text: &str) -> String {
        match s.read_text(text) {
            Ok(message) => panic!("accepted {text}: {message:?}"),
            Err(violation) => violation.kind().to_string(),
        }
    }

    #[test]
    fn gateway_messages_are_read() {
        let mut s = twilio();
        let mz = s.stream_sid().to_string();
        let payload = B64.encode([0xFFu8; 800]);
        let media =
            format!(r#"{{"event":"media","streamSid":"{mz}","media":{{"payload":"{payload}"}}}}"#);
        match s.read_text(&media) {
            Ok(GatewayMessage::Media(audio)) => {
                assert_eq!(audio.samples, 800);
                assert_eq!(audio.audio_us, 100_000);
                assert_eq!(audio.voiced_offset_us, None);
                assert_eq!(audio.pcm_8k.len(), 800);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.read_text(&format!(
                r#"{{"event":"mark","streamSid":"{mz}","mark":{{"name":"u1c0"}}}}"#
            )),
            Ok(GatewayMessage::Mark {
                name: "u1c0".into()
            })
        );
        assert_eq!(
            s.read_text(&format!(r#"{{"event":"clear","streamSid":"{mz}"}}"#)),
            Ok(GatewayMessage::Clear)
        );

        let mut e = exotel(16_000);
        let mz = e.stream_sid().to_string();
        let mut pcm = vec![0i16; 960];
        pcm.extend(tone_8k(640, 9000.0));
        let mut bytes = Vec::new();
        encode_le_into(&pcm, &mut bytes);
        let media = format!(
            r#"{{"event":"media","stream_sid":"{mz}","media":{{"payload":"{}"}}}}"#,
            B64.encode(&bytes)
        );
        match e.read_text(&media) {
            Ok(GatewayMessage::Media(audio)) => {
                assert_eq!(audio.samples, 1_600);
                assert_eq!(audio.audio_us, 100_000);
                assert_eq!(audio.voiced_offset_us, Some(60_000));
                // 16 → 8 kHz, minus what the filter still holds.
                assert!(audio.pcm_8k.len() <= 800 && audio.pcm_8k.len() >= 640);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_violation_kind_is_named() {
        let mut s = twilio();
        let mz = s.stream_sid().to_string();
        let cases = [
            ("not json".to_string(), "json"),
            ("[1,2]".to_string(), "json"),
            (format!(r#"{{"streamSid":"{mz}"}}"#), "event"),
            (
                format!(r#"{{"event":"hello","streamSid":"{mz}"}}"#),
                "event",
            ),
            (format!(r#"{{"event":7,"streamSid":"{mz}"}}"#), "field"),
            (r#"{"event":"clear"}"#.to_string(), "field"),
            (r#"{"event":"clear","streamSid":5}"#.to_string(), "field"),
            (
                r#"{"event":"clear","streamSid":"MZother"}"#.to_string(),
                "stream_sid",
            ),
            (
                format!(r#"{{"event":"clear","streamSid":"{mz}","x":1}}"#),
                "extra_field",
            ),
            (
                format!(r#"{{"event":"media","streamSid":"{mz}"}}"#),
                "field",
            ),
            (
                format!(r#"{{"event":"media","streamSid":"{mz}","media":"AAAA"}}"#),
                "field",
            ),
            (
                format!(r#"{{"event":"media","streamSid":"{mz}","media":{{}}}}"#),
                "field",
            ),
            (
                format!(r#"{{"event":"media","streamSid":"{mz}","media":{{"payload":7}}}}"#),
                "field",
            ),
            (
                format!(
                    r#"{{"event":"media","streamSid":"{mz}","media":{{"payload":"AAAA","track":"outbound"}}}}"#
                ),
                "extra_field",
            ),
            (
                format!(r#"{{"event":"media","streamSid":"{mz}","media":{{"payload":"A"}}}}"#),
                "base64",
            ),
            (
                format!(r#"{{"event":"media","streamSid":"{mz}","media":{{"payload":"!!!!"}}}}"#),
                "base64",
            ),
            (
                format!(r#"{{"event":"media","streamSid":"{mz}","media":{{"payload":""}}}}"#),
                "samples",
            ),
            (
                format!(r#"{{"event":"mark","streamSid":"{mz}","mark":{{"name":""}}}}"#),
                "mark",
            ),
            (
                format!(r#"{{"event":"mark","streamSid":"{mz}","mark":{{}}}}"#),
                "field",
            ),
            (format!(r#"{{"event":"mark","streamSid":"{mz}"}}"#), "field"),
            // Exotel's keys are snake_case: a camelCase id is missing.
            (
                format!(r#"{{"event":"clear","stream_sid":"{mz}"}}"#),
                "field",
            ),
        ];
        for (text, kind) in cases {
            assert_eq!(kind_of(&mut s, &text), kind, "{text}");
        }
        assert_eq!(binary_violation(12).kind(), "binary");
        assert_eq!(
            binary_violation(12).to_string(),
            "binary: 12-byte binary frame (carriers take JSON text frames only)"
        );
        let mut e = exotel(8_000);
        let mz = e.stream_sid().to_string();
        assert_eq!(
            kind_of(
                &mut e,
                &format!(r#"{{"event":"clear","streamSid":"{mz}"}}"#)
            ),
            "field"
        );
        let odd = B64.encode([0u8; 3_201]);
        assert_eq!(
            kind_of(
                &mut e,
                &format!(
                    r#"{{"event":"media","stream_sid":"{mz}","media":{{"payload":"{odd}"}}}}"#
                )
            ),
            "samples"
        );
        let short = B64.encode([0u8; 640]);
        let violation = e
            .read_text(&format!(
                r#"{{"event":"media","stream_sid":"{mz}","media":{{"payload":"{short}"}}}}"#
            ))
            .expect_err("too short");
        assert_eq!(
            violation.0,
            "chunk_size: 640 bytes (Exotel takes multiples of 320 from 3200 to 99840)"
        );
        let long_sid = "x".repeat(100);
        let violation = e
            .read_text(&format!(r#"{{"event":"clear","stream_sid":"{long_sid}"}}"#))
            .expect_err("not ours");
        assert!(violation.0.len() < 160, "{}", violation.0);
    }

    #[test]
    fn exotel_chunk_rule_boundaries() {
        let mut e = exotel(16_000);
        let mz = e.stream_sid().to_string();
        let verdict = |e: &mut CarrierStream, n: usize| {
            let payload = B64.encode(vec![0u8; n]);
            e.read_text(&format!(
                r#"{{"event":"media","stream_sid":"{mz}","media":{{"payload":"{payload}"}}}}"#
            ))
            .map(|_| ())
            .map_err(|v| v.kind().to_string())
        };
        assert_eq!(verdict(&mut e, 3_199), Err("samples".into()));
        assert_eq!(verdict(&mut e, 3_200), Ok(()));
        assert_eq!(verdict(&mut e, 3_520), Ok(()));
        assert_eq!(verdict(&mut e, 99_840), Ok(()));
        assert_eq!(verdict(&mut e, 99_841), Err("samples".into()));
        assert_eq!(verdict(&mut e, 2_880), Err("chunk_size".into()));
        assert_eq!(verdict(&mut e, 3_202), Err("chunk_size".into()));
        assert_eq!(verdict(&mut e, 100_160), Err("chunk_size".into()));
        assert_eq!(exotel_chunk_rule(3_200), Ok(()));
        assert!(exotel_chunk_rule(0).is_err());
    }

    #[test]
    fn voicing_finds_the_first_loud_window() {
        let mut pcm = vec![0i16; 400];
        pcm.extend(tone_8k(320, 8000.0));
        assert_eq!(voiced_offset_us(&pcm, 8_000), Some(40_000));
        assert_eq!(voiced_offset_us(&[0; 800], 8_000), None);
        assert_eq!(voiced_offset_us(&[], 8_000), None);
        // −40 dBFS is the line: a constant 328 (−40.0 dBFS) is voiced, 300 is not.
        assert_eq!(voiced_offset_us(&[328; 160], 8_000), Some(0));
        assert_eq!(voiced_offset_us(&[300; 160], 8_000), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = twilio().read_text(&text);
            let _ = exotel(16_000).read_text(&text);
        }

        #[test]
        fn arbitrary_messages_never_panic(
            event in prop::sample::select(vec!["media", "mark", "clear", "start", ""]),
            sid in prop::option::of("[A-Za-z0-9]{0,8}"),
            payload in prop::option::of("[A-Za-z0-9+/=]{0,64}"),
            name in prop::option::of(".{0,8}"),
            extra in any::<bool>(),
        ) {
            for mut s in [twilio(), exotel(8_000), exotel(24_000)] {
                let mut object = serde_json::Map::new();
                object.insert("event".into(), json!(event));
                let sid = sid.clone().unwrap_or_else(|| s.stream_sid().to_string());
                object.insert(s.kind().sid_key().into(), json!(sid));
                if let Some(p) = &payload {
                    object.insert("media".into(), json!({"payload": p}));
                }
                if let Some(n) = &name {
                    object.insert("mark".into(), json!({"name": n}));
                }
                if extra {
                    object.insert("extra".into(), json!(null));
                }
                let text = Value::Object(object).to_string();
                if let Err(v) = s.read_text(&text) {
                    prop_assert!(v.0.contains(": "), "{}", v.0);
                }
            }
        }

        #[test]
        fn sequence_and_chunk_stay_contiguous(ops in prop::collection::vec(0u8..3, 1..60)) {
            let mut s = twilio();
            s.start(&BTreeMap::new(), "", "");
            let (mut seq, mut chunk) = (1u64, 0u64);
            for op in ops {
                let text = match op {
                    0 => s.media(&[0; 160]).expect("media"),
                    1 => s.mark("m"),
                    _ => s.dtmf('1').expect("digit"),
                };
                seq += 1;
                let message = parse(&text);
                prop_assert_eq!(&message["sequenceNumber"], &json!(seq.to_string()));
                if op == 0 {
                    chunk += 1;
                    prop_assert_eq!(&message["media"]["chunk"], &json!(chunk.to_string()));
                    prop_assert_eq!(&message["media"]["timestamp"], &json!(((chunk - 1) * 20).to_string()));
                }
            }
        }
    }
}
