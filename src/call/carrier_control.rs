//! The [`CarrierControl`] the gateway runs with, choosing by the call's carrier:
//!
//! - **Twilio** (with `twilio.account_sid` and the auth token configured): a transfer redirects
//!   the live call to `<Response><Dial>number</Dial></Response>` through the Calls API, which
//!   ends the media stream; a text goes through the Messages API from the call's own number.
//! - **Exotel**: the stream can only hand the call back to the Exotel flow (closing the
//!   Voicebot applet's stream moves the flow to its next applet, `specs/telephony.md` §3.5), so
//!   a transfer succeeds at once when `exotel.flow_transfer` says the flow has a transfer
//!   applet next; the session then closes the stream and records the number that was asked
//!   for. Exotel texts are not supported: the gateway has no Exotel SMS client.
//!
//! Phone numbers are masked in logs, Twilio's error messages included.

use std::sync::Arc;

use async_trait::async_trait;

use super::control::{CarrierControl, ControlError, SmsReceipt, local_party};
use super::{CallInfo, mask_number};
use crate::carrier::CarrierKind;
use crate::carrier::twilio_api::{TwilioApiError, TwilioRest, is_e164, is_sid};
use crate::carrier::twiml;
use crate::config::{Config, ConfigError};

/// Twilio's side: the REST client and the transfer caller id.
#[derive(Debug, Clone)]
struct TwilioControl {
    rest: TwilioRest,
    caller_id: Option<String>,
}

/// Transfers and texts through each carrier's own means (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct GatewayControl {
    twilio: Option<TwilioControl>,
    exotel_flow_transfer: bool,
}

impl GatewayControl {
    /// The control for a validated config: Twilio actions when an account is configured,
    /// Exotel flow transfers when `exotel.flow_transfer` is on.
    pub fn from_config(config: &Config) -> Result<GatewayControl, ConfigError> {
        let twilio = match config.twilio_rest() {
            Some(rest) => Some(TwilioControl {
                rest: TwilioRest::new(rest).map_err(|e| ConfigError::Invalid {
                    key: "twilio",
                    message: e.to_string(),
                })?,
                caller_id: config.twilio.caller_id.clone(),
            }),
            None => None,
        };
        Ok(GatewayControl {
            twilio,
            exotel_flow_transfer: config.exotel.flow_transfer,
        })
    }

    fn twilio(&self, action: &'static str) -> Result<&TwilioControl, ControlError> {
        self.twilio.as_ref().ok_or(ControlError::NotConfigured {
            carrier: CarrierKind::Twilio.as_str(),
            action,
        })
    }
}

/// The control for `config`, shared by every call.
pub fn from_config(config: &Config) -> Result<Arc<dyn CarrierControl>, ConfigError> {
    Ok(Arc::new(GatewayControl::from_config(config)?))
}

#[async_trait]
impl CarrierControl for GatewayControl {
    async fn transfer(&self, call: &CallInfo, to: &str) -> Result<(), ControlError> {
        if !is_e164(to) {
            return Err(ControlError::Invalid(format!(
                "cannot transfer to {}: not an E.164 number",
                mask_number(to)
            )));
        }
        match call.carrier {
            CarrierKind::Twilio => {
                let twilio = self.twilio("transfer")?;
                let document = twiml::dial(to, twilio.caller_id.as_deref());
                let account = account_of(call, &twilio.rest);
                let resource = twilio
                    .rest
                    .redirect_call(account, &call.call_sid, &document)
                    .await
                    .map_err(refusal)?;
                tracing::info!(
                    call_sid = %call.call_sid,
                    to = %mask_number(to),
                    status = %resource.status,
                    "twilio call redirected to dial"
                );
                Ok(())
            }
            CarrierKind::Exotel => {
                if !self.exotel_flow_transfer {
                    return Err(ControlError::Unsupported {
                        carrier: CarrierKind::Exotel.as_str(),
                        action: "transfer",
                        reason: "an Exotel stream can only hand the call back to its flow; set \
                                 exotel.flow_transfer when the flow has a transfer applet after \
                                 the Voicebot applet"
                            .into(),
                    });
                }
                tracing::info!(
                    call_sid = %call.call_sid,
                    to = %mask_number(to),
                    "exotel transfer: the stream closes and the flow's next applet takes the call"
                );
                Ok(())
            }
        }
    }

    async fn send_sms(
        &self,
        call: &CallInfo,
        to: &str,
        body: &str,
    ) -> Result<SmsReceipt, ControlError> {
        match call.carrier {
            CarrierKind::Twilio => {
                let twilio = self.twilio("sms")?;
                let from = local_party(call).ok_or_else(|| {
                    ControlError::Invalid(
                        "the call's own number is unknown: Twilio's stream start carries no \
                         numbers; pass `from` and `to` as <Parameter>s of the <Stream>"
                            .into(),
                    )
                })?;
                let account = account_of(call, &twilio.rest);
                let message = twilio
                    .rest
                    .send_sms(account, from, to, body)
                    .await
                    .map_err(refusal)?;
                tracing::info!(
                    call_sid = %call.call_sid,
                    to = %mask_number(to),
                    message_sid = %message.sid,
                    status = %message.status,
                    "twilio sms accepted"
                );
                Ok(SmsReceipt {
                    message_id: Some(message.sid),
                })
            }
            CarrierKind::Exotel => Err(ControlError::Unsupported {
                carrier: CarrierKind::Exotel.as_str(),
                action: "sms",
                reason: "the gateway has no Exotel SMS client".into(),
            }),
        }
    }
}

/// The account the call belongs to (a subaccount works with its parent's credentials); the
/// configured one when the stream named none that looks like an account SID.
fn account_of<'a>(call: &'a CallInfo, rest: &'a TwilioRest) -> &'a str {
    if is_sid("AC", &call.account_sid) {
        &call.account_sid
    } else {
        rest.account_sid()
    }
}

/// A Twilio failure as the session records it.
fn refusal(error: TwilioApiError) -> ControlError {
    const CARRIER: &str = "twilio";
    match error {
        TwilioApiError::Invalid(message) => ControlError::Invalid(mask_numbers_in(&message)),
        TwilioApiError::Api {
            status,
            code,
            message,
            ..
        } => ControlError::Refused {
            carrier: CARRIER,
            status,
            code: code.map(|c| c.to_string()),
            message: mask_numbers_in(&message),
        },
        TwilioApiError::Transport(message) => ControlError::Unreachable {
            carrier: CARRIER,
            message,
        },
        error @ (TwilioApiError::Timeout(_)
        | TwilioApiError::Response(_)
        | TwilioApiError::OutcomeUnknown { .. }
        | TwilioApiError::CallNotLive { .. }) => ControlError::Unreachable {
            carrier: CARRIER,
            message: error.to_string(),
        },
    }
}

/// `text` with every phone number in it (an optional `+` and 7 or more digits) masked.
fn mask_numbers_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        let digits = token.chars().filter(char::is_ascii_digit).count();
        if digits >= 7 {
            out.push_str(&mask_number(token));
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '+' && token.is_empty()) {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            if c == '+' {
                token.push(c);
            } else {
                out.push(c);
            }
        }
    }
    flush(&mut token, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_carrier_messages_are_masked() {
        assert_eq!(
            mask_numbers_in("The 'To' number +14155550123 is not a valid phone number."),
            "The 'To' number +14*******23 is not a valid phone number."
        );
        assert_eq!(
            mask_numbers_in("code 21610 for 919876543210+14155550123"),
            "code 21610 for 91********10+14*******23"
        );
        assert_eq!(mask_numbers_in("+1555 short"), "+1555 short");
        assert_eq!(mask_numbers_in("a+b++"), "a+b++");
        assert_eq!(mask_numbers_in(""), "");
    }

    #[test]
    fn twilio_errors_become_control_errors() {
        let refused = refusal(TwilioApiError::Api {
            status: 400,
            code: Some(21211),
            message: "The 'To' number +14155550123 is not valid.".into(),
            more_info: None,
        });
        assert_eq!(
            refused,
            ControlError::Refused {
                carrier: "twilio",
                status: 400,
                code: Some("21211".into()),
                message: "The 'To' number +14*******23 is not valid.".into(),
            }
        );
        assert!(matches!(
            refusal(TwilioApiError::Timeout(5000)),
            ControlError::Unreachable { .. }
        ));
        assert!(matches!(
            refusal(TwilioApiError::Transport("refused".into())),
            ControlError::Unreachable { .. }
        ));
        assert!(matches!(
            refusal(TwilioApiError::Invalid("x".into())),
            ControlError::Invalid(_)
        ));
    }
}
