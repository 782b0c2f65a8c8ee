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
    /// The carrier cannot do this on this kind of call (the reason says what would).
    #[error("{carrier} cannot {action}: {reason}")]
    Unsupported {
        /// The carrier of the call.
        carrier: &'static str,
        /// What was asked (`transfer`, `sms`).
        action: &'static str,
        /// Why not, and what would make it possible.
        reason: String,
    },
    /// The carrier answered with an error.
    #[error("{carrier} refused ({status}{}): {message}", code_suffix(.code.as_deref()))]
    Refused {
        /// Which carrier.
        carrier: &'static str,
        /// HTTP status.
        status: u16,
        /// The carrier's own error code (Twilio: `21220`, `20404`, …), where it gives one.
        code: Option<String>,
        /// The carrier's error message.
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

impl ControlError {
    /// The carrier's error code, for a refusal that carries one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ControlError::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// `, code N` when the carrier gave an error code.
fn code_suffix(code: Option<&str>) -> String {
    code.map(|c| format!(", code {c}")).unwrap_or_default()
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

/// Whether the gateway placed the call: custom parameter `direction` is `outbound` or
/// `outbound-…` (`outbound-api`, `outbound-dial`).
pub fn is_outbound(call: &CallInfo) -> bool {
    custom_parameter(call, "direction")
        .is_some_and(|d| d.eq_ignore_ascii_case("outbound") || d.starts_with("outbound-"))
}

/// The call's `from` number: the carrier's own (Exotel sends it in `start`), else the stream's
/// `from` custom parameter (Twilio's `start` carries no numbers; pass
/// `<Parameter name="from" value="{{From}}"/>`).
pub fn call_from(call: &CallInfo) -> Option<&str> {
    number(call.from.as_deref()).or_else(|| number(custom_parameter(call, "from")))
}

/// The call's `to` number, found like [`call_from`].
pub fn call_to(call: &CallInfo) -> Option<&str> {
    number(call.to.as_deref()).or_else(|| number(custom_parameter(call, "to")))
}

/// The caller's side of the call: the number to text. Outbound calls reach the `to` number;
/// inbound calls come from `from`.
pub fn remote_party(call: &CallInfo) -> Option<&str> {
    if is_outbound(call) {
        call_to(call)
    } else {
        call_from(call)
    }
}

/// The gateway's side of the call: the carrier number that texts come from. Outbound calls
/// were placed from `from`; inbound calls reached `to`.
pub fn local_party(call: &CallInfo) -> Option<&str> {
    if is_outbound(call) {
        call_from(call)
    } else {
        call_to(call)
    }
}

/// A custom parameter by name, case-insensitively (`from` and `From` both work).
fn custom_parameter<'a>(call: &'a CallInfo, name: &str) -> Option<&'a str> {
    call.custom_parameters
        .get(name)
        .or_else(|| {
            call.custom_parameters
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .map(String::as_str)
}

/// A number that is not blank.
fn number(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;
    use crate::audio::Encoding;
    use crate::call::CallId;
    use crate::carrier::{CarrierKind, MediaFormat};

    fn call(
        carrier: CarrierKind,
        from: Option<&str>,
        to: Option<&str>,
        params: &[(&str, &str)],
    ) -> CallInfo {
        CallInfo {
            call_id: CallId::new(),
            carrier,
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            custom_parameters: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            media_format: MediaFormat {
                encoding: Encoding::Mulaw,
                sample_rate: 8000,
                channels: 1,
            },
            agent: "echo".into(),
            started_at: SystemTime::now(),
        }
    }

    #[test]
    fn inbound_calls_text_the_caller_from_the_called_number() {
        let c = call(
            CarrierKind::Exotel,
            Some("+919876543210"),
            Some("+918047491899"),
            &[],
        );
        assert_eq!(remote_party(&c), Some("+919876543210"));
        assert_eq!(local_party(&c), Some("+918047491899"));
        assert!(!is_outbound(&c));
    }

    #[test]
    fn outbound_calls_swap_the_sides() {
        for direction in ["outbound", "OUTBOUND", "outbound-api", "outbound-dial"] {
            let c = call(
                CarrierKind::Exotel,
                Some("+918047491899"),
                Some("+919876543210"),
                &[("direction", direction)],
            );
            assert_eq!(remote_party(&c), Some("+919876543210"), "{direction}");
            assert_eq!(local_party(&c), Some("+918047491899"), "{direction}");
        }
        let c = call(
            CarrierKind::Exotel,
            Some("+1"),
            Some("+2"),
            &[("direction", "inbound")],
        );
        assert_eq!(remote_party(&c), Some("+1"));
    }

    #[test]
    fn twilio_numbers_come_from_custom_parameters() {
        let c = call(
            CarrierKind::Twilio,
            None,
            None,
            &[("From", "+14155550100"), ("to", "+18005551212")],
        );
        assert_eq!(remote_party(&c), Some("+14155550100"));
        assert_eq!(local_party(&c), Some("+18005551212"));
        let c = call(
            CarrierKind::Twilio,
            Some("+1111"),
            None,
            &[("from", "+2222")],
        );
        assert_eq!(
            call_from(&c),
            Some("+1111"),
            "the carrier's own number wins"
        );
    }

    #[test]
    fn blank_or_missing_numbers_are_none() {
        let c = call(CarrierKind::Twilio, Some("  "), Some(""), &[("from", " ")]);
        assert_eq!(remote_party(&c), None);
        assert_eq!(local_party(&c), None);
    }

    #[test]
    fn refusals_show_the_carrier_code() {
        let e = ControlError::Refused {
            carrier: "twilio",
            status: 400,
            code: Some("21220".into()),
            message: "Call is not in-progress. Cannot redirect.".into(),
        };
        assert_eq!(
            e.to_string(),
            "twilio refused (400, code 21220): Call is not in-progress. Cannot redirect."
        );
        assert_eq!(e.code(), Some("21220"));
        let e = ControlError::Refused {
            carrier: "twilio",
            status: 502,
            code: None,
            message: "Bad Gateway".into(),
        };
        assert_eq!(e.to_string(), "twilio refused (502): Bad Gateway");
        assert_eq!(e.code(), None);
    }
}
