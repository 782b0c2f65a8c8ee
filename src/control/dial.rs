//! Dialing through the carriers: what the control plane asks of a carrier (place, cancel, hang
//! up a call) behind one trait, [`Carriers`], and the URLs a placed call is given.
//!
//! A placed call is never sent twice: a carrier that may have acted on a request without
//! saying so is [`DialError::OutcomeUnknown`], and the call stays as it is.

use async_trait::async_trait;

/// Which carrier serves a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierName {
    /// Twilio.
    Twilio,
    /// Exotel.
    Exotel,
}

impl CarrierName {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            CarrierName::Twilio => "twilio",
            CarrierName::Exotel => "exotel",
        }
    }

    /// Parses a stored label.
    pub fn parse(text: &str) -> Option<CarrierName> {
        match text {
            "twilio" => Some(CarrierName::Twilio),
            "exotel" => Some(CarrierName::Exotel),
            _ => None,
        }
    }
}

/// How to tell a person from an answering machine.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MachineDetection {
    /// The verdict as soon as it is known.
    Enable,
    /// For a machine, wait for the end of its greeting.
    DetectMessageEnd,
}

/// An outbound call to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceCall {
    /// The person called (E.164).
    pub to: String,
    /// The tenant's number (E.164).
    pub from: String,
    /// Twilio: where the call's TwiML is fetched on answer.
    pub answer_url: String,
    /// Exotel: the stream the answered call connects to.
    pub stream_url: String,
    /// Where the carrier posts the call's progress.
    pub status_callback: String,
    /// Where an asynchronous answering-machine verdict is posted (Twilio).
    pub amd_callback: Option<String>,
    /// Answering-machine detection.
    pub machine_detection: Option<MachineDetection>,
    /// Ring time (s).
    pub timeout_secs: Option<u32>,
    /// Longest call (s).
    pub time_limit_secs: Option<u32>,
    /// Record the call.
    pub record: bool,
    /// The gateway's call id (echoed back by carriers that take a custom field).
    pub call_id: String,
}

/// A call to look up at the carrier: by its carrier id when known, else by its numbers and
/// when it was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCall {
    /// The carrier's call id, when the gateway recorded it.
    pub sid: Option<String>,
    /// The person called (E.164).
    pub to: String,
    /// The calling number (E.164).
    pub from: String,
    /// The call was placed at or after this instant (µs since the Unix epoch); earlier calls
    /// between the same numbers are someone else's attempt.
    pub placed_after_us: i64,
    /// The gateway's call id (for logs; carriers that echo a custom field may match on it).
    pub call_id: String,
}

/// A call as the carrier reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierCallState {
    /// The carrier's call id.
    pub sid: String,
    /// Its status, in the gateway's terms.
    pub status: crate::store::calls::CallStatus,
    /// Who answered, where the carrier detected it (`human`, `machine_start`, …).
    pub answered_by: Option<String>,
    /// Seconds the call lasted, once over.
    pub duration_secs: Option<i64>,
}

/// Why a carrier request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// The carrier is not configured on this gateway.
    #[error("{0} is not configured on this gateway")]
    NotConfigured(&'static str),
    /// The carrier refused the request (its message).
    #[error("the carrier refused: {0}")]
    Refused(String),
    /// The request went out but no answer says whether the carrier acted on it.
    #[error("no answer from the carrier: {0}")]
    OutcomeUnknown(String),
    /// The carrier could not be reached; nothing was sent.
    #[error("the carrier is unreachable: {0}")]
    Unreachable(String),
    /// The call is gone or already over at the carrier.
    #[error("the call is not live at the carrier")]
    NotLive,
    /// The carrier has no such operation.
    #[error("{0}")]
    Unsupported(String),
}

/// The carriers' REST APIs, as the control plane uses them.
#[async_trait]
pub trait Carriers: Send + Sync {
    /// Places `call` through `carrier`; returns the carrier's call id.
    async fn place(&self, carrier: CarrierName, call: &PlaceCall) -> Result<String, DialError>;
    /// Cancels a call that is still queued or ringing.
    async fn cancel(&self, carrier: CarrierName, sid: &str) -> Result<(), DialError>;
    /// Ends a call in any state.
    async fn hang_up(&self, carrier: CarrierName, sid: &str) -> Result<(), DialError>;
    /// Looks a placed call up: `Ok(None)` when the carrier has no such call (so it was never
    /// placed); an error when the carrier cannot say.
    async fn find(
        &self,
        carrier: CarrierName,
        call: &FindCall,
    ) -> Result<Option<CarrierCallState>, DialError>;
}

/// No carrier configured: every request is [`DialError::NotConfigured`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCarriers;

#[async_trait]
impl Carriers for NoCarriers {
    async fn place(&self, carrier: CarrierName, _call: &PlaceCall) -> Result<String, DialError> {
        Err(DialError::NotConfigured(carrier.as_str()))
    }

    async fn cancel(&self, carrier: CarrierName, _sid: &str) -> Result<(), DialError> {
        Err(DialError::NotConfigured(carrier.as_str()))
    }

    async fn hang_up(&self, carrier: CarrierName, _sid: &str) -> Result<(), DialError> {
        Err(DialError::NotConfigured(carrier.as_str()))
    }

    async fn find(
        &self,
        carrier: CarrierName,
        _call: &FindCall,
    ) -> Result<Option<CarrierCallState>, DialError> {
        Err(DialError::NotConfigured(carrier.as_str()))
    }
}

/// The carriers `config` sets up (REST clients for the configured accounts).
pub fn carriers_from_config(
    config: &crate::config::Config,
) -> Result<std::sync::Arc<dyn Carriers>, crate::config::ConfigError> {
    Ok(std::sync::Arc::new(
        super::carriers::RestCarriers::from_config(config)?,
    ))
}

/// Strict E.164: `+`, a first digit 1–9, 7 to 15 digits in all.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// The URLs of a placed call, from the gateway's public base URL (`https://host[/prefix]`):
/// answer (TwiML), stream (Exotel), status callback and AMD callback. The answer and status
/// URLs carry the call id, so a status callback binds a carrier call id the gateway never
/// recorded (a crash between the carrier's answer and the store write).
pub fn call_urls(public_url: &str, call_id: &str) -> (String, String, String, String) {
    let base = public_url.trim_end_matches('/');
    let ws = ws_base(base);
    (
        format!("{base}/twilio/outbound?call_id={call_id}"),
        format!("{ws}/stream/exotel?call_id={call_id}"),
        format!("{base}/twilio/status?call_id={call_id}"),
        format!("{base}/twilio/amd"),
    )
}

/// The WebSocket form of the public URL: `wss://host[/prefix]` (carriers stream over TLS
/// only; a TLS-terminating proxy in front of the gateway serves it).
pub fn ws_base(public_url: &str) -> String {
    let base = public_url.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .or_else(|| base.strip_prefix("wss://"))
        .or_else(|| base.strip_prefix("ws://"))
        .unwrap_or(base);
    format!("wss://{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_is_strict() {
        assert!(is_e164("+14155550100"));
        assert!(is_e164("+919876543210"));
        assert!(!is_e164("14155550100"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+1415 555 0100"));
        assert!(!is_e164("+123456"));
        assert!(!is_e164("+1234567890123456"));
    }

    #[test]
    fn urls_follow_the_public_url() {
        let (answer, stream, status, amd) = call_urls("https://gw.example.com/", "abc");
        assert_eq!(answer, "https://gw.example.com/twilio/outbound?call_id=abc");
        assert_eq!(stream, "wss://gw.example.com/stream/exotel?call_id=abc");
        assert_eq!(status, "https://gw.example.com/twilio/status?call_id=abc");
        assert_eq!(amd, "https://gw.example.com/twilio/amd");
        assert_eq!(ws_base("http://127.0.0.1:8080"), "wss://127.0.0.1:8080");
    }
}
