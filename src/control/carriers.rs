//! The carriers' REST clients behind [`Carriers`]: Twilio (create, cancel, hang up) and
//! Exotel (Connect Voice AI; Exotel has no REST call to end a call, so ending one relies on
//! its live session here).

use async_trait::async_trait;

use super::dial::{CarrierName, Carriers, DialError, MachineDetection, PlaceCall};
use crate::carrier::exotel_api::{ExotelApiError, ExotelConnect, ExotelRest};
use crate::carrier::twilio_api::{self, CreateCall, TwilioApiError, TwilioRest};
use crate::config::{Config, ConfigError};

/// The configured carriers' REST clients.
#[derive(Clone, Default)]
pub struct RestCarriers {
    /// Twilio, when an account is configured.
    pub twilio: Option<TwilioRest>,
    /// Exotel, when an account is configured.
    pub exotel: Option<ExotelRest>,
}

impl RestCarriers {
    /// The clients `config` sets up.
    pub fn from_config(config: &Config) -> Result<RestCarriers, ConfigError> {
        let twilio = config
            .twilio_rest()
            .map(TwilioRest::new)
            .transpose()
            .map_err(|e| ConfigError::Invalid {
                key: "twilio",
                message: e.to_string(),
            })?;
        let exotel = config
            .exotel_rest()
            .map(ExotelRest::new)
            .transpose()
            .map_err(|e| ConfigError::Invalid {
                key: "exotel",
                message: e.to_string(),
            })?;
        Ok(RestCarriers { twilio, exotel })
    }

    fn twilio(&self) -> Result<&TwilioRest, DialError> {
        self.twilio
            .as_ref()
            .ok_or(DialError::NotConfigured("twilio"))
    }

    fn exotel(&self) -> Result<&ExotelRest, DialError> {
        self.exotel
            .as_ref()
            .ok_or(DialError::NotConfigured("exotel"))
    }
}

/// What a Twilio failure means for the call.
fn twilio_error(error: TwilioApiError) -> DialError {
    match error {
        TwilioApiError::CallNotLive { .. } => DialError::NotLive,
        TwilioApiError::Transport(message) => DialError::Unreachable(message),
        e @ (TwilioApiError::OutcomeUnknown { .. }
        | TwilioApiError::Timeout(_)
        | TwilioApiError::Response(_)) => DialError::OutcomeUnknown(e.to_string()),
        e => DialError::Refused(e.to_string()),
    }
}

/// What an Exotel failure means for the call.
fn exotel_error(error: ExotelApiError) -> DialError {
    match error {
        ExotelApiError::Transport(message) => DialError::Unreachable(message),
        e @ (ExotelApiError::OutcomeUnknown(_) | ExotelApiError::Response(_)) => {
            DialError::OutcomeUnknown(e.to_string())
        }
        e => DialError::Refused(e.to_string()),
    }
}

#[async_trait]
impl Carriers for RestCarriers {
    async fn place(&self, carrier: CarrierName, call: &PlaceCall) -> Result<String, DialError> {
        match carrier {
            CarrierName::Twilio => {
                let rest = self.twilio()?;
                let create = CreateCall {
                    account_sid: rest.account_sid().to_owned(),
                    to: call.to.clone(),
                    from: call.from.clone(),
                    url: call.answer_url.clone(),
                    status_callback: call.status_callback.clone(),
                    timeout_secs: call.timeout_secs,
                    time_limit_secs: call.time_limit_secs,
                    record: call.record,
                    machine_detection: call.machine_detection.map(|m| match m {
                        MachineDetection::Enable => twilio_api::MachineDetection::Enable,
                        MachineDetection::DetectMessageEnd => {
                            twilio_api::MachineDetection::DetectMessageEnd
                        }
                    }),
                    async_amd_callback: call.amd_callback.clone(),
                };
                let created = rest.create_call(&create).await.map_err(twilio_error)?;
                Ok(created.sid)
            }
            CarrierName::Exotel => {
                let rest = self.exotel()?;
                let connect = ExotelConnect {
                    from: call.to.clone(),
                    caller_id: call.from.clone(),
                    stream_url: call.stream_url.clone(),
                    status_callback: Some(call.status_callback.clone()),
                    custom_field: Some(call.call_id.clone()),
                    time_limit_secs: call.time_limit_secs,
                    timeout_secs: call.timeout_secs,
                };
                let placed = rest.connect(&connect).await.map_err(exotel_error)?;
                Ok(placed.sid)
            }
        }
    }

    async fn cancel(&self, carrier: CarrierName, sid: &str) -> Result<(), DialError> {
        match carrier {
            CarrierName::Twilio => {
                let rest = self.twilio()?;
                rest.cancel_call(rest.account_sid(), sid)
                    .await
                    .map(|_| ())
                    .map_err(twilio_error)
            }
            CarrierName::Exotel => Err(DialError::Unsupported(
                "Exotel has no API to cancel a ringing call".to_owned(),
            )),
        }
    }

    async fn hang_up(&self, carrier: CarrierName, sid: &str) -> Result<(), DialError> {
        match carrier {
            CarrierName::Twilio => {
                let rest = self.twilio()?;
                rest.hangup_call(rest.account_sid(), sid)
                    .await
                    .map(|_| ())
                    .map_err(twilio_error)
            }
            CarrierName::Exotel => Err(DialError::Unsupported(
                "Exotel has no API to end a call".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_meaning() {
        assert_eq!(
            twilio_error(TwilioApiError::Transport("refused".into())),
            DialError::Unreachable("refused".into())
        );
        assert!(matches!(
            twilio_error(TwilioApiError::Timeout(5000)),
            DialError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            twilio_error(TwilioApiError::Invalid("bad".into())),
            DialError::Refused(_)
        ));
        assert!(matches!(
            exotel_error(ExotelApiError::OutcomeUnknown("timeout".into())),
            DialError::OutcomeUnknown(_)
        ));
    }
}
