//! Carrier-side actions on a live call that go around the media stream: transferring the call
//! and texting the caller. They are REST requests to the carrier, so the session hands them to
//! a spawned task (never awaited on the media path) and records the outcome as a CallEvent.

use async_trait::async_trait;

use super::CallInfo;

/// Why a carrier action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No carrier account is configured for this kind of action.
    #[error("no {carrier} account is configured for {action}")]
    NotConfigured {
        /// The carrier of the call.
        carrier: &'static str,
        /// What was asked (`transfer`, `sms`).
        action: &'static str,
    },
    /// The request is invalid before it is sent (e.g. no number to text).
    #[error("{0}")]
    Invalid(String),
    /// The carrier answered with an error.
    #[error("{carrier} refused ({status}): {message}")]
    Refused {
        /// Which carrier.
        carrier: &'static str,
        /// HTTP status.
        status: u16,
        /// The carrier's error code and message.
        message: String,
    },
    /// The carrier could not be reached.
    #[error("{carrier} unreachable: {message}")]
    Unreachable {
        /// Which carrier.
        carrier: &'static str,
        /// The transport error.
        message: String,
    },
}

/// A text message the carrier accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsReceipt {
    /// The carrier's id for the message (`SM…` for Twilio), where it gives one.
    pub message_id: Option<String>,
}

/// Carrier REST actions on a live call.
#[async_trait]
pub trait CarrierControl: Send + Sync + 'static {
    /// Moves the call to `to` (E.164); the media stream ends once the carrier has done so.
    async fn transfer(&self, call: &CallInfo, to: &str) -> Result<(), ControlError>;

    /// Texts `body` to `to` (E.164) from the call's own number.
    async fn send_sms(
        &self,
        call: &CallInfo,
        to: &str,
        body: &str,
    ) -> Result<SmsReceipt, ControlError>;
}

/// The control used when no carrier account is configured: every action fails with
/// [`ControlError::NotConfigured`], so the call records why nothing happened.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCarrierControl;

#[async_trait]
impl CarrierControl for NoCarrierControl {
    async fn transfer(&self, call: &CallInfo, _to: &str) -> Result<(), ControlError> {
        Err(ControlError::NotConfigured {
            carrier: call.carrier.as_str(),
            action: "transfer",
        })
    }

    async fn send_sms(
        &self,
        call: &CallInfo,
        _to: &str,
        _body: &str,
    ) -> Result<SmsReceipt, ControlError> {
        Err(ControlError::NotConfigured {
            carrier: call.carrier.as_str(),
            action: "sms",
        })
    }
}

/// The caller's side of the call: the number to text. Outbound calls (custom parameter
/// `direction=outbound`) reach the `to` number; inbound calls come from `from`.
pub fn remote_party(call: &CallInfo) -> Option<&str> {
    let outbound = call
        .custom_parameters
        .get("direction")
        .is_some_and(|d| d.eq_ignore_ascii_case("outbound") || d.starts_with("outbound-"));
    let number = if outbound { &call.to } else { &call.from };
    number.as_deref().filter(|n| !n.is_empty())
}
