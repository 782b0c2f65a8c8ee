//! Carrier webhooks, parsed: pure functions from a request's decoded fields to typed values
//! (`specs/telephony.md` §2.6–2.8 for Twilio, §3.7–3.8 for Exotel). No I/O.
//!
//! - [`decode_form`] turns an `application/x-www-form-urlencoded` body (or a URL query) into
//!   its name/value pairs, keeping order and repeated names: Twilio's signature is computed
//!   over exactly those pairs.
//! - Twilio: [`TwilioStatusCallback`] (call progress), [`TwilioAmdCallback`] (asynchronous
//!   answering-machine verdict) and [`TwilioInboundCall`] (the voice webhook of an inbound
//!   call). Twilio's field names are matched exactly, as Twilio sends them.
//! - Exotel: [`ExotelStatusCallback`] (form or JSON) and [`ExotelPassthru`] (the Passthru
//!   applet's request, query or JSON). Exotel spells its keys in several casings, so they are
//!   matched case-insensitively.
//!
//! A missing or malformed field is a [`WebhookError`] that names it.

use std::collections::BTreeMap;

use crate::store::calls::CallStatus;

use super::twilio_api::is_sid;

/// Longest value kept for an identifier (call SID, stream SID) from Exotel.
const MAX_ID_CHARS: usize = 128;

/// Why a webhook request could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The body is not valid `application/x-www-form-urlencoded`.
    #[error("the form body is not valid urlencoding: {0}")]
    Form(String),
    /// The body is not a JSON object.
    #[error("the body is not a JSON object: {0}")]
    Json(String),
    /// A required field is absent or empty.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has a value the carrier never sends.
    #[error("field {field} is invalid: {reason}")]
    Invalid {
        /// The field, as the carrier names it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Decodes `application/x-www-form-urlencoded` text (a body or a URL query without `?`): `+`
/// is a space, `%XX` a byte; pairs stay in order, a repeated name stays repeated, a name
/// without `=` has an empty value. A bad escape or bytes that are not UTF-8 are an error.
pub fn decode_form(body: &[u8]) -> Result<Vec<(String, String)>, WebhookError> {
    fn component(text: &[u8], at: usize) -> Result<String, WebhookError> {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            match text[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let byte = text
                        .get(i + 1..i + 3)
                        .and_then(|hex| std::str::from_utf8(hex).ok())
                        .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                        .ok_or_else(|| {
                            WebhookError::Form(format!("bad %-escape at byte {}", at + i))
                        })?;
                    out.push(byte);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out)
            .map_err(|_| WebhookError::Form(format!("not UTF-8 in the pair at byte {at}")))
    }
    let mut pairs = Vec::new();
    let mut at = 0;
    for pair in body.split(|b| *b == b'&') {
        if !pair.is_empty() {
            let (name, value, value_at) = match pair.iter().position(|b| *b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..], at + eq + 1),
                None => (pair, &pair[pair.len()..], at + pair.len()),
            };
            pairs.push((component(name, at)?, component(value, value_at)?));
        }
        at += pair.len() + 1;
    }
    Ok(pairs)
}

/// The pairs as `(&str, &str)`, the shape [`super::signature::verify_twilio`] takes.
pub fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The first non-empty value of `name` (exact match, as Twilio names fields).
fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn required<'a>(
    pairs: &'a [(String, String)],
    name: &'static str,
) -> Result<&'a str, WebhookError> {
    field(pairs, name).ok_or(WebhookError::Missing(name))
}

fn twilio_sid(
    pairs: &[(String, String)],
    name: &'static str,
    prefix: &str,
) -> Result<String, WebhookError> {
    let sid = required(pairs, name)?;
    if is_sid(prefix, sid) {
        Ok(sid.to_owned())
    } else {
        Err(invalid(
            name,
            format!("not {prefix} followed by 32 hex digits"),
        ))
    }
}

fn number(value: Option<&str>, name: &'static str) -> Result<Option<u64>, WebhookError> {
    value
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| invalid(name, "not a whole number"))
        })
        .transpose()
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_owned)
}

/// A Twilio call's status (`CallStatus`, §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TwilioCallStatus {
    /// `queued`: waiting for the account's calls-per-second limit.
    Queued,
    /// `initiated`: Twilio started dialing.
    Initiated,
    /// `ringing`: the phone rings.
    Ringing,
    /// `in-progress`: answered.
    InProgress,
    /// `completed`: ended after being answered.
    Completed,
    /// `busy`: the line was busy.
    Busy,
    /// `no-answer`: nobody answered.
    NoAnswer,
    /// `failed`: the call could not be placed.
    Failed,
    /// `canceled`: hung up while queued or ringing.
    Canceled,
}

impl TwilioCallStatus {
    const ALL: [TwilioCallStatus; 9] = [
        TwilioCallStatus::Queued,
        TwilioCallStatus::Initiated,
        TwilioCallStatus::Ringing,
        TwilioCallStatus::InProgress,
        TwilioCallStatus::Completed,
        TwilioCallStatus::Busy,
        TwilioCallStatus::NoAnswer,
        TwilioCallStatus::Failed,
        TwilioCallStatus::Canceled,
    ];

    /// Twilio's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            TwilioCallStatus::Queued => "queued",
            TwilioCallStatus::Initiated => "initiated",
            TwilioCallStatus::Ringing => "ringing",
            TwilioCallStatus::InProgress => "in-progress",
            TwilioCallStatus::Completed => "completed",
            TwilioCallStatus::Busy => "busy",
            TwilioCallStatus::NoAnswer => "no-answer",
            TwilioCallStatus::Failed => "failed",
            TwilioCallStatus::Canceled => "canceled",
        }
    }

    /// Parses Twilio's spelling (exact).
    pub fn parse(text: &str) -> Option<TwilioCallStatus> {
        TwilioCallStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// The stored status. `initiated` is [`CallStatus::Ringing`]: the call has left the
    /// gateway and Twilio is reaching the person (Twilio's `queued` is the gateway's
    /// [`CallStatus::Queued`]).
    pub const fn call_status(self) -> CallStatus {
        match self {
            TwilioCallStatus::Queued => CallStatus::Queued,
            TwilioCallStatus::Initiated | TwilioCallStatus::Ringing => CallStatus::Ringing,
            TwilioCallStatus::InProgress => CallStatus::InProgress,
            TwilioCallStatus::Completed => CallStatus::Completed,
            TwilioCallStatus::Busy => CallStatus::Busy,
            TwilioCallStatus::NoAnswer => CallStatus::NoAnswer,
            TwilioCallStatus::Failed => CallStatus::Failed,
            TwilioCallStatus::Canceled => CallStatus::Canceled,
        }
    }

    /// The call is over.
    pub fn is_final(self) -> bool {
        self.call_status().is_final()
    }
}

/// Who answered, as answering-machine detection tells (`AnsweredBy`, §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnsweredBy {
    /// `human`.
    Human,
    /// `machine_start`: a machine (with `MachineDetection=Enable`).
    MachineStart,
    /// `machine_end_beep`: a machine's greeting ended with a beep.
    MachineEndBeep,
    /// `machine_end_silence`: a machine's greeting ended in silence.
    MachineEndSilence,
    /// `machine_end_other`: a machine's greeting ended otherwise.
    MachineEndOther,
    /// `fax`.
    Fax,
    /// `unknown`: detection timed out.
    Unknown,
}

impl AnsweredBy {
    const ALL: [AnsweredBy; 7] = [
        AnsweredBy::Human,
        AnsweredBy::MachineStart,
        AnsweredBy::MachineEndBeep,
        AnsweredBy::MachineEndSilence,
        AnsweredBy::MachineEndOther,
        AnsweredBy::Fax,
        AnsweredBy::Unknown,
    ];

    /// Twilio's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            AnsweredBy::Human => "human",
            AnsweredBy::MachineStart => "machine_start",
            AnsweredBy::MachineEndBeep => "machine_end_beep",
            AnsweredBy::MachineEndSilence => "machine_end_silence",
            AnsweredBy::MachineEndOther => "machine_end_other",
            AnsweredBy::Fax => "fax",
            AnsweredBy::Unknown => "unknown",
        }
    }

    /// Parses Twilio's spelling (exact).
    pub fn parse(text: &str) -> Option<AnsweredBy> {
        AnsweredBy::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// An answering machine (any `machine_*`); a fax is not one.
    pub const fn is_machine(self) -> bool {
        matches!(
            self,
            AnsweredBy::MachineStart
                | AnsweredBy::MachineEndBeep
                | AnsweredBy::MachineEndSilence
                | AnsweredBy::MachineEndOther
        )
    }

    /// The machine's greeting is over (`machine_end_*`): the moment to leave a message.
    pub const fn greeting_ended(self) -> bool {
        matches!(
            self,
            AnsweredBy::MachineEndBeep
                | AnsweredBy::MachineEndSilence
                | AnsweredBy::MachineEndOther
        )
    }
}

fn answered_by(pairs: &[(String, String)]) -> Result<Option<AnsweredBy>, WebhookError> {
    field(pairs, "AnsweredBy")
        .map(|v| {
            AnsweredBy::parse(v).ok_or_else(|| invalid("AnsweredBy", "not a value Twilio sends"))
        })
        .transpose()
}

fn call_status(pairs: &[(String, String)]) -> Result<TwilioCallStatus, WebhookError> {
    let status = required(pairs, "CallStatus")?;
    TwilioCallStatus::parse(status).ok_or_else(|| invalid("CallStatus", "not a call status"))
}

/// A Twilio call progress callback (§2.6): POSTed to the call's `StatusCallback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioStatusCallback {
    /// `CA…`.
    pub call_sid: String,
    /// `AC…`.
    pub account_sid: String,
    /// The status reached.
    pub status: TwilioCallStatus,
    /// Orders this call's callbacks (they may arrive out of order).
    pub sequence_number: Option<u64>,
    /// Length of the call in seconds (on the final callback).
    pub call_duration_secs: Option<u64>,
    /// Answering-machine verdict, when detection ran synchronously.
    pub answered_by: Option<AnsweredBy>,
    /// The recording, when the call was recorded.
    pub recording_url: Option<String>,
    /// Caller.
    pub from: Option<String>,
    /// Callee.
    pub to: Option<String>,
    /// `inbound`, `outbound-api`, `outbound-dial`.
    pub direction: Option<String>,
    /// The SIP response code of a failed call.
    pub sip_response_code: Option<u16>,
    /// When the event happened (RFC 2822), as sent.
    pub timestamp: Option<String>,
}

impl TwilioStatusCallback {
    /// Reads a callback from its form fields.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TwilioStatusCallback, WebhookError> {
        let sip_response_code = field(pairs, "SipResponseCode")
            .map(|v| {
                v.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..700).contains(c))
                    .ok_or_else(|| invalid("SipResponseCode", "not a SIP status code"))
            })
            .transpose()?;
        Ok(TwilioStatusCallback {
            call_sid: twilio_sid(pairs, "CallSid", "CA")?,
            account_sid: twilio_sid(pairs, "AccountSid", "AC")?,
            status: call_status(pairs)?,
            sequence_number: number(field(pairs, "SequenceNumber"), "SequenceNumber")?,
            call_duration_secs: number(field(pairs, "CallDuration"), "CallDuration")?,
            answered_by: answered_by(pairs)?,
            recording_url: owned(field(pairs, "RecordingUrl")),
            from: owned(field(pairs, "From")),
            to: owned(field(pairs, "To")),
            direction: owned(field(pairs, "Direction")),
            sip_response_code,
            timestamp: owned(field(pairs, "Timestamp")),
        })
    }
}

/// Twilio's asynchronous answering-machine verdict (§2.7): POSTed to `AsyncAmdStatusCallback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioAmdCallback {
    /// `CA…`.
    pub call_sid: String,
    /// `AC…`.
    pub account_sid: String,
    /// The verdict.
    pub answered_by: AnsweredBy,
    /// How long detection took (ms).
    pub machine_detection_duration_ms: Option<u64>,
}

impl TwilioAmdCallback {
    /// Reads a verdict from its form fields.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TwilioAmdCallback, WebhookError> {
        Ok(TwilioAmdCallback {
            call_sid: twilio_sid(pairs, "CallSid", "CA")?,
            account_sid: twilio_sid(pairs, "AccountSid", "AC")?,
            answered_by: answered_by(pairs)?.ok_or(WebhookError::Missing("AnsweredBy"))?,
            machine_detection_duration_ms: number(
                field(pairs, "MachineDetectionDuration"),
                "MachineDetectionDuration",
            )?,
        })
    }
}

/// Twilio's voice webhook (§2.8): a call reached one of the account's numbers (or an outbound
/// call was answered and Twilio asks for its TwiML). The answer is TwiML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioInboundCall {
    /// `CA…`.
    pub call_sid: String,
    /// `AC…`.
    pub account_sid: String,
    /// Caller: E.164, `client:name` or a SIP URI.
    pub from: String,
    /// The number called.
    pub to: String,
    /// Normally `ringing` (inbound) or `in-progress` (an answered outbound call).
    pub call_status: TwilioCallStatus,
    /// `inbound`, `outbound-api`, ….
    pub direction: String,
    /// Caller name (CNAM), when looked up.
    pub caller_name: Option<String>,
    /// The number that forwarded the call, when known.
    pub forwarded_from: Option<String>,
    /// Answering-machine verdict on an outbound call with synchronous detection.
    pub answered_by: Option<AnsweredBy>,
}

impl TwilioInboundCall {
    /// Reads the webhook from its form fields.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TwilioInboundCall, WebhookError> {
        Ok(TwilioInboundCall {
            call_sid: twilio_sid(pairs, "CallSid", "CA")?,
            account_sid: twilio_sid(pairs, "AccountSid", "AC")?,
            from: required(pairs, "From")?.to_owned(),
            to: required(pairs, "To")?.to_owned(),
            call_status: call_status(pairs)?,
            direction: required(pairs, "Direction")?.to_owned(),
            caller_name: owned(field(pairs, "CallerName")),
            forwarded_from: owned(field(pairs, "ForwardedFrom")),
            answered_by: answered_by(pairs)?,
        })
    }
}

/// Exotel fields by lowercase name: the first non-empty value of each, as text.
#[derive(Debug, Default)]
struct Fields {
    values: BTreeMap<String, String>,
    /// `Legs` when it came as JSON (a JSON body, or a form field holding JSON).
    legs: Option<serde_json::Value>,
    /// `Legs[i][Key]` form fields, by index then lowercase key.
    leg_fields: BTreeMap<usize, BTreeMap<String, String>>,
}

impl Fields {
    fn from_pairs(pairs: &[(String, String)]) -> Fields {
        let mut fields = Fields::default();
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            if let Some((index, key)) = leg_field(&name) {
                fields
                    .leg_fields
                    .entry(index)
                    .or_default()
                    .entry(key.to_owned())
                    .or_insert_with(|| value.clone());
            } else if name == "legs" {
                if fields.legs.is_none() {
                    fields.legs = serde_json::from_str(value).ok();
                }
            } else if !value.is_empty() {
                fields.values.entry(name).or_insert_with(|| value.clone());
            }
        }
        fields
    }

    fn from_json(body: &[u8]) -> Result<Fields, WebhookError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| WebhookError::Json(e.to_string()))?;
        let serde_json::Value::Object(object) = value else {
            return Err(WebhookError::Json("not an object".into()));
        };
        let mut fields = Fields::default();
        for (name, value) in object {
            let name = name.to_ascii_lowercase();
            if name == "legs" {
                fields.legs = Some(value);
            } else if let Some(text) = scalar_text(&value) {
                fields.values.entry(name).or_insert(text);
            }
        }
        Ok(fields)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn first(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.get(n))
    }

    fn legs(&self) -> Result<Vec<ExotelLeg>, WebhookError> {
        let mut legs = Vec::new();
        if let Some(value) = &self.legs {
            let serde_json::Value::Array(items) = value else {
                return Err(invalid("Legs", "not an array"));
            };
            for item in items {
                let serde_json::Value::Object(object) = item else {
                    return Err(invalid("Legs", "an entry is not an object"));
                };
                let leg: BTreeMap<String, String> = object
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), scalar_text(v)?)))
                    .collect();
                legs.push(ExotelLeg::from_map(&leg)?);
            }
        }
        for leg in self.leg_fields.values() {
            legs.push(ExotelLeg::from_map(leg)?);
        }
        Ok(legs)
    }
}

/// `legs[3][answeredby]` → `(3, "answeredby")`.
fn leg_field(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("legs[")?;
    let (index, rest) = rest.split_once(']')?;
    let key = rest.strip_prefix('[')?.strip_suffix(']')?;
    let index: usize = index.parse().ok()?;
    (index < 64 && !key.is_empty()).then_some((index, key))
}

/// A JSON scalar as text (strings as they are, numbers and booleans printed); `None` for
/// null, arrays and objects.
fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn exotel_id(value: Option<&str>, name: &'static str) -> Result<String, WebhookError> {
    let id = value.ok_or(WebhookError::Missing(name))?.trim();
    if id.is_empty() {
        return Err(WebhookError::Missing(name));
    }
    if id.chars().count() > MAX_ID_CHARS
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(name, "not an identifier"));
    }
    Ok(id.to_owned())
}

/// Parses an Exotel call's status (`Status`, §3.6–3.7), in any case. Exotel's statuses are
/// the stored ones, spelt with `-` or `_` (`in-progress`, `no-answer`), and `canceled` also as
/// `cancelled`.
pub fn parse_exotel_status(text: &str) -> Option<CallStatus> {
    match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "cancelled" => Some(CallStatus::Canceled),
        label => CallStatus::parse(label),
    }
}

/// Which event an Exotel status callback reports (`EventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExotelEventType {
    /// `answered`.
    Answered,
    /// `ringing`.
    Ringing,
    /// `terminal`: the call is over.
    Terminal,
}

impl ExotelEventType {
    /// Parses Exotel's spelling, in any case.
    pub fn parse(text: &str) -> Option<ExotelEventType> {
        match text.trim().to_ascii_lowercase().as_str() {
            "answered" => Some(ExotelEventType::Answered),
            "ringing" => Some(ExotelEventType::Ringing),
            "terminal" => Some(ExotelEventType::Terminal),
            _ => None,
        }
    }
}

/// One leg of an Exotel call (`Legs[]` in a status callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExotelLeg {
    /// The leg's status, as sent.
    pub status: Option<String>,
    /// `HUMAN`, `Human`, `NA`, … as sent.
    pub answered_by: Option<String>,
    /// Seconds on the call.
    pub on_call_duration_secs: Option<u64>,
}

impl ExotelLeg {
    fn from_map(leg: &BTreeMap<String, String>) -> Result<ExotelLeg, WebhookError> {
        let get = |k: &str| leg.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(ExotelLeg {
            status: get("status"),
            answered_by: get("answeredby"),
            on_call_duration_secs: number(
                leg.get("oncallduration").map(String::as_str),
                "Legs[].OnCallDuration",
            )?,
        })
    }

    /// Whether Exotel says a person answered this leg.
    pub fn answered_by_human(&self) -> bool {
        self.answered_by
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("human"))
    }
}

/// An Exotel status callback (§3.7), from a form or a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExotelStatusCallback {
    /// Exotel's call id.
    pub call_sid: String,
    /// The call's status.
    pub status: CallStatus,
    /// The event, when `StatusCallbackEvents` was set.
    pub event_type: Option<ExotelEventType>,
    /// The `CustomField` given when the call was placed.
    pub custom_field: Option<String>,
    /// The recording, when recorded.
    pub recording_url: Option<String>,
    /// Caller.
    pub from: Option<String>,
    /// Callee.
    pub to: Option<String>,
    /// `inbound`, `outbound-dial`, `outbound-api`.
    pub direction: Option<String>,
    /// Seconds of conversation.
    pub conversation_duration_secs: Option<u64>,
    /// `YYYY-MM-DD HH:mm:ss`, as sent.
    pub date_updated: Option<String>,
    /// The call's legs.
    pub legs: Vec<ExotelLeg>,
}

impl ExotelStatusCallback {
    /// Reads a callback from form fields (urlencoded or multipart, decoded).
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<ExotelStatusCallback, WebhookError> {
        ExotelStatusCallback::from_fields(&Fields::from_pairs(pairs))
    }

    /// Reads a callback from a JSON body.
    pub fn from_json(body: &[u8]) -> Result<ExotelStatusCallback, WebhookError> {
        ExotelStatusCallback::from_fields(&Fields::from_json(body)?)
    }

    fn from_fields(f: &Fields) -> Result<ExotelStatusCallback, WebhookError> {
        let status = f.get("status").ok_or(WebhookError::Missing("Status"))?;
        let status =
            parse_exotel_status(status).ok_or_else(|| invalid("Status", "not a call status"))?;
        let event_type = f
            .get("eventtype")
            .map(|e| {
                ExotelEventType::parse(e).ok_or_else(|| invalid("EventType", "not an event type"))
            })
            .transpose()?;
        Ok(ExotelStatusCallback {
            call_sid: exotel_id(f.get("callsid"), "CallSid")?,
            status,
            event_type,
            custom_field: owned(f.get("customfield")),
            recording_url: owned(f.get("recordingurl")),
            from: owned(f.get("from")),
            to: owned(f.get("to")),
            direction: owned(f.get("direction")),
            conversation_duration_secs: number(
                f.get("conversationduration"),
                "ConversationDuration",
            )?,
            date_updated: owned(f.get("dateupdated")),
            legs: f.legs()?,
        })
    }

    /// Whether any leg says a person answered.
    pub fn answered_by_human(&self) -> bool {
        self.legs.iter().any(ExotelLeg::answered_by_human)
    }
}

/// Exotel's Passthru applet request (§3.8): the stream (or call) outcome, or the stream-start
/// request, as GET query fields, a form, or a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExotelPassthru {
    /// Exotel's call id (`CallSid`).
    pub call_sid: String,
    /// Caller (`CallFrom` or `From`).
    pub from: Option<String>,
    /// Number called (`CallTo` or `To`).
    pub to: Option<String>,
    /// `inbound`, `outbound-dial`, ….
    pub direction: Option<String>,
    /// The `CustomField` of the call.
    pub custom_field: Option<String>,
    /// The stream's id, when a stream ran.
    pub stream_sid: Option<String>,
    /// The stream's status, as sent.
    pub status: Option<String>,
    /// `caller`, `bot` or `system`.
    pub disconnected_by: Option<String>,
    /// `stream-start` on the JSON form, as sent.
    pub event_type: Option<String>,
    /// Digits the caller entered, without Exotel's quotes.
    pub digits: Option<String>,
}

impl ExotelPassthru {
    /// Reads the request from query or form fields.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<ExotelPassthru, WebhookError> {
        ExotelPassthru::from_fields(&Fields::from_pairs(pairs))
    }

    /// Reads the request from a JSON body.
    pub fn from_json(body: &[u8]) -> Result<ExotelPassthru, WebhookError> {
        ExotelPassthru::from_fields(&Fields::from_json(body)?)
    }

    fn from_fields(f: &Fields) -> Result<ExotelPassthru, WebhookError> {
        let digits = f
            .get("digits")
            .map(|d| d.trim().trim_matches('"').to_owned())
            .filter(|d| !d.is_empty());
        Ok(ExotelPassthru {
            call_sid: exotel_id(f.get("callsid"), "CallSid")?,
            from: owned(f.first(&["callfrom", "from"])),
            to: owned(f.first(&["callto", "to"])),
            direction: owned(f.get("direction")),
            custom_field: owned(f.get("customfield")),
            stream_sid: owned(f.get("streamsid")),
            status: owned(f.get("status")),
            disconnected_by: owned(f.get("disconnectedby")),
            event_type: owned(f.get("eventtype")),
            digits,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::carrier::twilio_api::encode_form;

    const CALL: &str = "CA0123456789abcdef0123456789abcdef";
    const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn forms_decode_in_order_with_repeats() {
        assert_eq!(
            decode_form(b"To=%2B14155550123&A=x&A=y&Empty=&Bare&&Space=a+b%20c").unwrap(),
            pairs(&[
                ("To", "+14155550123"),
                ("A", "x"),
                ("A", "y"),
                ("Empty", ""),
                ("Bare", ""),
                ("Space", "a b c"),
            ])
        );
        assert_eq!(decode_form(b"").unwrap(), Vec::new());
        assert_eq!(
            decode_form(b"a=1=2").unwrap(),
            pairs(&[("a", "1=2")]),
            "only the first = splits"
        );
    }

    #[test]
    fn bad_form_encoding_is_an_error_with_its_place() {
        assert_eq!(
            decode_form(b"ok=1&bad=%4"),
            Err(WebhookError::Form("bad %-escape at byte 9".into()))
        );
        assert!(matches!(decode_form(b"x=%zz"), Err(WebhookError::Form(_))));
        assert!(matches!(
            decode_form(b"x=%C3%28"),
            Err(WebhookError::Form(m)) if m.contains("UTF-8")
        ));
        assert!(matches!(
            decode_form(&[b'x', b'=', 0xFF]),
            Err(WebhookError::Form(_))
        ));
    }

    #[test]
    fn decoded_pairs_verify_twilios_signature() {
        // The worked example of §2.9, sent as a form body.
        let body = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
        let form = decode_form(body).unwrap();
        assert!(crate::carrier::signature::verify_twilio(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &as_refs(&form),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        ));
    }

    fn status_form() -> Vec<(String, String)> {
        pairs(&[
            ("AccountSid", ACCOUNT),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", CALL),
            ("CallStatus", "completed"),
            ("CallDuration", "42"),
            ("CallbackSource", "call-progress-events"),
            ("Direction", "outbound-api"),
            ("From", "+18005551212"),
            ("To", "+14155550123"),
            ("SequenceNumber", "3"),
            ("Timestamp", "Fri, 18 Oct 2019 17:00:42 +0000"),
            ("AnsweredBy", "machine_end_beep"),
            ("RecordingUrl", "https://api.twilio.com/rec/RE1"),
        ])
    }

    #[test]
    fn a_status_callback_reads_every_field() {
        let callback = TwilioStatusCallback::from_pairs(&status_form()).unwrap();
        assert_eq!(
            callback,
            TwilioStatusCallback {
                call_sid: CALL.into(),
                account_sid: ACCOUNT.into(),
                status: TwilioCallStatus::Completed,
                sequence_number: Some(3),
                call_duration_secs: Some(42),
                answered_by: Some(AnsweredBy::MachineEndBeep),
                recording_url: Some("https://api.twilio.com/rec/RE1".into()),
                from: Some("+18005551212".into()),
                to: Some("+14155550123".into()),
                direction: Some("outbound-api".into()),
                sip_response_code: None,
                timestamp: Some("Fri, 18 Oct 2019 17:00:42 +0000".into()),
            }
        );
        let minimal = TwilioStatusCallback::from_pairs(&pairs(&[
            ("CallSid", CALL),
            ("AccountSid", ACCOUNT),
            ("CallStatus", "failed"),
            ("SipResponseCode", "503"),
        ]))
        .unwrap();
        assert_eq!(minimal.status, TwilioCallStatus::Failed);
        assert_eq!(minimal.sip_response_code, Some(503));
        assert_eq!(minimal.sequence_number, None);
        assert_eq!(minimal.answered_by, None);
    }

    #[test]
    fn status_callback_errors_name_the_field() {
        let without = |name: &str| {
            let form: Vec<_> = status_form()
                .into_iter()
                .filter(|(k, _)| k != name)
                .collect();
            TwilioStatusCallback::from_pairs(&form).unwrap_err()
        };
        assert_eq!(without("CallSid"), WebhookError::Missing("CallSid"));
        assert_eq!(without("AccountSid"), WebhookError::Missing("AccountSid"));
        assert_eq!(without("CallStatus"), WebhookError::Missing("CallStatus"));
        let with = |name: &str, value: &str| {
            let mut form: Vec<_> = status_form()
                .into_iter()
                .filter(|(k, _)| k != name)
                .collect();
            form.push((name.to_owned(), value.to_owned()));
            TwilioStatusCallback::from_pairs(&form).unwrap_err()
        };
        for (name, value) in [
            ("CallSid", "CA123"),
            ("AccountSid", CALL),
            ("CallStatus", "answered"),
            ("SequenceNumber", "-1"),
            ("CallDuration", "4.5"),
            ("AnsweredBy", "machine"),
            ("SipResponseCode", "99"),
        ] {
            let error = with(name, value);
            assert!(
                matches!(&error, WebhookError::Invalid { field, .. } if *field == name),
                "{name}={value}: {error:?}"
            );
        }
        assert_eq!(
            with("CallStatus", "").to_string(),
            "missing field CallStatus",
            "an empty value is a missing one"
        );
    }

    #[test]
    fn statuses_round_trip_and_map_to_the_store() {
        for status in TwilioCallStatus::ALL {
            assert_eq!(TwilioCallStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(TwilioCallStatus::parse("In-Progress"), None);
        use CallStatus as S;
        use TwilioCallStatus as T;
        let expected = [
            (T::Queued, S::Queued),
            (T::Initiated, S::Ringing),
            (T::Ringing, S::Ringing),
            (T::InProgress, S::InProgress),
            (T::Completed, S::Completed),
            (T::Busy, S::Busy),
            (T::NoAnswer, S::NoAnswer),
            (T::Failed, S::Failed),
            (T::Canceled, S::Canceled),
        ];
        for (twilio, stored) in expected {
            assert_eq!(twilio.call_status(), stored, "{twilio:?}");
            assert_eq!(twilio.is_final(), stored.is_final(), "{twilio:?}");
        }
    }

    #[test]
    fn answered_by_values_and_kinds() {
        for a in AnsweredBy::ALL {
            assert_eq!(AnsweredBy::parse(a.as_str()), Some(a));
        }
        let machines: Vec<_> = AnsweredBy::ALL
            .into_iter()
            .filter(|a| a.is_machine())
            .collect();
        assert_eq!(
            machines,
            [
                AnsweredBy::MachineStart,
                AnsweredBy::MachineEndBeep,
                AnsweredBy::MachineEndSilence,
                AnsweredBy::MachineEndOther
            ]
        );
        assert!(!AnsweredBy::Fax.is_machine());
        assert!(!AnsweredBy::MachineStart.greeting_ended());
        assert!(AnsweredBy::MachineEndSilence.greeting_ended());
        assert_eq!(AnsweredBy::parse("Human"), None);
    }

    #[test]
    fn an_amd_callback_needs_its_verdict() {
        let callback = TwilioAmdCallback::from_pairs(&pairs(&[
            ("CallSid", CALL),
            ("AccountSid", ACCOUNT),
            ("AnsweredBy", "human"),
            ("MachineDetectionDuration", "2310"),
        ]))
        .unwrap();
        assert_eq!(callback.answered_by, AnsweredBy::Human);
        assert_eq!(callback.machine_detection_duration_ms, Some(2310));
        assert_eq!(
            TwilioAmdCallback::from_pairs(&pairs(&[("CallSid", CALL), ("AccountSid", ACCOUNT)])),
            Err(WebhookError::Missing("AnsweredBy"))
        );
    }

    #[test]
    fn an_inbound_call_reads_its_numbers() {
        let form = pairs(&[
            ("AccountSid", ACCOUNT),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", CALL),
            ("CallStatus", "ringing"),
            ("Called", "+18005551212"),
            ("Caller", "+14155550123"),
            ("CallerName", "ANA LOPEZ"),
            ("Direction", "inbound"),
            ("From", "+14155550123"),
            ("FromCountry", "US"),
            ("To", "+18005551212"),
        ]);
        let call = TwilioInboundCall::from_pairs(&form).unwrap();
        assert_eq!(
            call,
            TwilioInboundCall {
                call_sid: CALL.into(),
                account_sid: ACCOUNT.into(),
                from: "+14155550123".into(),
                to: "+18005551212".into(),
                call_status: TwilioCallStatus::Ringing,
                direction: "inbound".into(),
                caller_name: Some("ANA LOPEZ".into()),
                forwarded_from: None,
                answered_by: None,
            }
        );
        for name in ["From", "To", "Direction"] {
            let without: Vec<_> = form.iter().filter(|(k, _)| k != name).cloned().collect();
            assert_eq!(
                TwilioInboundCall::from_pairs(&without),
                Err(WebhookError::Missing(match name {
                    "From" => "From",
                    "To" => "To",
                    _ => "Direction",
                }))
            );
        }
    }

    #[test]
    fn an_exotel_callback_reads_a_form_in_any_case() {
        let form = pairs(&[
            ("CallSid", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"),
            ("status", "completed"),
            ("EVENTTYPE", "terminal"),
            ("CustomField", "call=42"),
            ("RecordingUrl", "https://recordings.exotel.com/x.mp3"),
            ("DateUpdated", "2017-03-03 12:31:00"),
            ("ConversationDuration", "33"),
            ("Direction", "outbound-api"),
            ("Legs[0][Status]", "completed"),
            ("Legs[0][AnsweredBy]", "HUMAN"),
            ("Legs[0][OnCallDuration]", "35"),
        ]);
        let callback = ExotelStatusCallback::from_pairs(&form).unwrap();
        assert_eq!(callback.call_sid, "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6");
        assert_eq!(callback.status, CallStatus::Completed);
        assert_eq!(callback.event_type, Some(ExotelEventType::Terminal));
        assert_eq!(callback.custom_field.as_deref(), Some("call=42"));
        assert_eq!(callback.conversation_duration_secs, Some(33));
        assert_eq!(
            callback.legs,
            vec![ExotelLeg {
                status: Some("completed".into()),
                answered_by: Some("HUMAN".into()),
                on_call_duration_secs: Some(35),
            }]
        );
        assert!(callback.answered_by_human());
    }

    #[test]
    fn an_exotel_callback_reads_json_with_numbers_and_legs() {
        let body = br#"{"callSid":"c9","Status":"no-answer","EventType":"answered",
            "ConversationDuration":0,"From":"09876543210","Legs":[{"Status":"no-answer","AnsweredBy":"NA","OnCallDuration":"0"}]}"#;
        let callback = ExotelStatusCallback::from_json(body).unwrap();
        assert_eq!(callback.call_sid, "c9");
        assert_eq!(callback.status, CallStatus::NoAnswer);
        assert_eq!(callback.conversation_duration_secs, Some(0));
        assert_eq!(callback.from.as_deref(), Some("09876543210"));
        assert_eq!(callback.legs.len(), 1);
        assert!(!callback.answered_by_human());
        // Legs as a JSON string inside a form.
        let form = pairs(&[
            ("CallSid", "c9"),
            ("Status", "busy"),
            ("Legs", r#"[{"AnsweredBy":"Human"}]"#),
        ]);
        assert!(
            ExotelStatusCallback::from_pairs(&form)
                .unwrap()
                .answered_by_human()
        );
    }

    #[test]
    fn exotel_callback_errors_name_the_field() {
        assert_eq!(
            ExotelStatusCallback::from_pairs(&pairs(&[("Status", "completed")])),
            Err(WebhookError::Missing("CallSid"))
        );
        assert_eq!(
            ExotelStatusCallback::from_pairs(&pairs(&[("CallSid", "c1")])),
            Err(WebhookError::Missing("Status"))
        );
        let bad = |list: &[(&str, &str)]| ExotelStatusCallback::from_pairs(&pairs(list));
        assert!(matches!(
            bad(&[("CallSid", "c1"), ("Status", "exploded")]),
            Err(WebhookError::Invalid {
                field: "Status",
                ..
            })
        ));
        assert!(matches!(
            bad(&[("CallSid", "c1/../x"), ("Status", "busy")]),
            Err(WebhookError::Invalid {
                field: "CallSid",
                ..
            })
        ));
        assert!(matches!(
            bad(&[("CallSid", "c1"), ("Status", "busy"), ("EventType", "boom")]),
            Err(WebhookError::Invalid {
                field: "EventType",
                ..
            })
        ));
        assert!(matches!(
            ExotelStatusCallback::from_json(br#"{"CallSid":"c1","Status":"busy","Legs":{}}"#),
            Err(WebhookError::Invalid { field: "Legs", .. })
        ));
        assert!(matches!(
            ExotelStatusCallback::from_json(b"[1,2]"),
            Err(WebhookError::Json(_))
        ));
        assert!(matches!(
            ExotelStatusCallback::from_json(b"{"),
            Err(WebhookError::Json(_))
        ));
        assert_eq!(parse_exotel_status("No_Answer"), Some(CallStatus::NoAnswer));
        assert_eq!(
            parse_exotel_status(" In-Progress "),
            Some(CallStatus::InProgress)
        );
        assert_eq!(parse_exotel_status("cancelled"), Some(CallStatus::Canceled));
        assert_eq!(parse_exotel_status("canceled"), Some(CallStatus::Canceled));
        assert_eq!(parse_exotel_status("initiated"), None);
    }

    #[test]
    fn a_passthru_reads_query_or_json() {
        let query = decode_form(
            b"CallSid=abc123&CallFrom=09876543210&CallTo=08012345678&Direction=incoming&digits=%221234%22&CustomField=x",
        )
        .unwrap();
        let passthru = ExotelPassthru::from_pairs(&query).unwrap();
        assert_eq!(
            passthru,
            ExotelPassthru {
                call_sid: "abc123".into(),
                from: Some("09876543210".into()),
                to: Some("08012345678".into()),
                direction: Some("incoming".into()),
                custom_field: Some("x".into()),
                stream_sid: None,
                status: None,
                disconnected_by: None,
                event_type: None,
                digits: Some("1234".into()),
            }
        );
        let json = br#"{"CallSid":"abc123","StreamSid":"s1","StreamUrl":"wss://x","AccountSid":"acct",
            "EventType":"stream-start","From":"+919876543210","To":"+918012345678","Direction":"outbound-api"}"#;
        let passthru = ExotelPassthru::from_json(json).unwrap();
        assert_eq!(passthru.from.as_deref(), Some("+919876543210"));
        assert_eq!(passthru.stream_sid.as_deref(), Some("s1"));
        assert_eq!(passthru.event_type.as_deref(), Some("stream-start"));
        let lower = pairs(&[("callsid", "abc"), ("from", "1"), ("disconnectedby", "bot")]);
        let passthru = ExotelPassthru::from_pairs(&lower).unwrap();
        assert_eq!(passthru.disconnected_by.as_deref(), Some("bot"));
        assert_eq!(
            ExotelPassthru::from_pairs(&pairs(&[("From", "1")])),
            Err(WebhookError::Missing("CallSid"))
        );
    }

    proptest! {
        #[test]
        fn forms_round_trip_through_the_encoder(list in prop::collection::vec((any::<String>(), any::<String>()), 0..6)) {
            let refs: Vec<(&str, &str)> = list.iter().filter(|(k, v)| !(k.is_empty() && v.is_empty())).map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let decoded = decode_form(encode_form(&refs).as_bytes()).unwrap();
            let expected: Vec<(String, String)> = refs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_form(&body);
        }

        #[test]
        fn any_form_parses_without_panic(
            list in prop::collection::vec((
                prop::sample::select(vec![
                    "CallSid", "AccountSid", "CallStatus", "SequenceNumber", "CallDuration",
                    "AnsweredBy", "SipResponseCode", "From", "To", "Direction", "Status",
                    "status", "EventType", "Legs", "Legs[0][AnsweredBy]", "legs[7][oncallduration]",
                    "Legs[99999999999999999999][x]", "CallFrom", "digits", "MachineDetectionDuration",
                ]),
                prop_oneof![
                    any::<String>(),
                    Just(CALL.to_owned()),
                    Just(ACCOUNT.to_owned()),
                    Just("completed".to_owned()),
                    Just("human".to_owned()),
                    Just("[{\"AnsweredBy\":1}]".to_owned()),
                    Just("18446744073709551616".to_owned()),
                ],
            ), 0..12)
        ) {
            let form: Vec<(String, String)> = list.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let _ = TwilioStatusCallback::from_pairs(&form);
            let _ = TwilioAmdCallback::from_pairs(&form);
            let _ = TwilioInboundCall::from_pairs(&form);
            let _ = ExotelStatusCallback::from_pairs(&form);
            let _ = ExotelPassthru::from_pairs(&form);
        }

        #[test]
        fn any_json_parses_without_panic(body in any::<String>()) {
            let _ = ExotelStatusCallback::from_json(body.as_bytes());
            let _ = ExotelPassthru::from_json(body.as_bytes());
        }
    }
}
