//! The carriers' REST clients behind [`Carriers`]: Twilio (create, cancel, hang up, look up)
//! and Exotel (Connect Voice AI and Call Details; Exotel has no REST call to end a call, so
//! ending one relies on its live session here).

use async_trait::async_trait;

use super::dial::{
    CarrierCallState, CarrierName, Carriers, DialError, FindCall, MachineDetection, PlaceCall,
};
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

/// The carrier's state of a Twilio call, when its status is one Twilio documents.
fn twilio_state(call: twilio_api::CallInfo) -> Result<CarrierCallState, DialError> {
    let status = call.call_status().ok_or_else(|| {
        DialError::Unsupported(format!(
            "Twilio reported an unknown status {:?}",
            call.status
        ))
    })?;
    Ok(CarrierCallState {
        sid: call.sid,
        status,
        answered_by: call.answered_by,
        duration_secs: call.duration_secs,
    })
}

/// The newest of `calls` created at or after `placed_after_us` (µs), if any. Twilio's
/// `StartTime>=` filter works on whole days; the instant is checked here.
fn pick_placed_call(
    calls: Vec<twilio_api::CallInfo>,
    placed_after_us: i64,
) -> Option<twilio_api::CallInfo> {
    // Twilio's dates have whole seconds: compare against the second the call was placed in.
    let placed_after_secs = placed_after_us.div_euclid(1_000_000);
    calls
        .into_iter()
        .filter(|c| {
            c.date_created
                .is_some_and(|d| d.timestamp() >= placed_after_secs)
        })
        .max_by_key(|c| c.date_created)
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

    async fn find(
        &self,
        carrier: CarrierName,
        call: &FindCall,
    ) -> Result<Option<CarrierCallState>, DialError> {
        match carrier {
            CarrierName::Twilio => {
                let rest = self.twilio()?;
                let found = match &call.sid {
                    Some(sid) => rest
                        .fetch_call(rest.account_sid(), sid)
                        .await
                        .map_err(twilio_lookup_error)?,
                    None => {
                        let day = chrono::DateTime::from_timestamp_micros(call.placed_after_us)
                            .ok_or_else(|| {
                                DialError::Unsupported(format!(
                                    "placement instant {} µs is out of range",
                                    call.placed_after_us
                                ))
                            })?
                            .date_naive();
                        let calls = rest
                            .list_calls(rest.account_sid(), &call.to, &call.from, day)
                            .await
                            .map_err(twilio_lookup_error)?;
                        pick_placed_call(calls, call.placed_after_us)
                    }
                };
                found.map(twilio_state).transpose()
            }
            CarrierName::Exotel => {
                let rest = self.exotel()?;
                let Some(sid) = &call.sid else {
                    return Err(DialError::Unsupported(
                        "Exotel looks calls up by their id only".to_owned(),
                    ));
                };
                let Some(details) = rest.fetch_call(sid).await.map_err(exotel_lookup_error)? else {
                    return Ok(None);
                };
                let status = details.call_status().ok_or_else(|| {
                    DialError::Unsupported(format!(
                        "Exotel reported an unknown status {:?}",
                        details.status
                    ))
                })?;
                Ok(Some(CarrierCallState {
                    sid: details.sid,
                    status,
                    answered_by: details.answered_by,
                    duration_secs: details.duration_secs,
                }))
            }
        }
    }
}

/// What a failed Twilio lookup means: nothing is placed by a read, so a failure is only
/// "cannot say now" (unreachable) or a refusal.
fn twilio_lookup_error(error: TwilioApiError) -> DialError {
    match error {
        TwilioApiError::Transport(message) => DialError::Unreachable(message),
        e @ (TwilioApiError::Timeout(_) | TwilioApiError::OutcomeUnknown { .. }) => {
            DialError::Unreachable(e.to_string())
        }
        TwilioApiError::Api { status, .. } if status == 429 || status >= 500 => {
            DialError::Unreachable(error.to_string())
        }
        e => DialError::Refused(e.to_string()),
    }
}

/// What a failed Exotel lookup means (see [`twilio_lookup_error`]).
fn exotel_lookup_error(error: ExotelApiError) -> DialError {
    match error {
        ExotelApiError::Transport(message) => DialError::Unreachable(message),
        e @ ExotelApiError::OutcomeUnknown(_) => DialError::Unreachable(e.to_string()),
        ExotelApiError::Api { status, .. } if status == 429 || status >= 500 => {
            DialError::Unreachable(error.to_string())
        }
        e => DialError::Refused(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sid: u8, created: Option<&str>) -> twilio_api::CallInfo {
        twilio_api::CallInfo {
            sid: format!("CA{sid:032x}"),
            status: "completed".into(),
            to: None,
            from: None,
            direction: None,
            answered_by: None,
            duration_secs: None,
            date_created: created.and_then(twilio_api::parse_rfc2822),
        }
    }

    #[test]
    fn the_newest_call_since_placement_is_picked() {
        // 2019-10-18 17:00:00 UTC.
        let placed = 1_571_418_000_000_000 + 250_000;
        let calls = vec![
            info(1, Some("Fri, 18 Oct 2019 16:59:59 +0000")),
            info(2, Some("Fri, 18 Oct 2019 17:00:00 +0000")),
            info(3, Some("Fri, 18 Oct 2019 17:00:07 +0000")),
            info(4, None),
        ];
        assert_eq!(
            pick_placed_call(calls.clone(), placed).map(|c| c.sid),
            Some(format!("CA{:032x}", 3))
        );
        assert_eq!(
            pick_placed_call(calls[..2].to_vec(), placed).map(|c| c.sid),
            Some(format!("CA{:032x}", 2)),
            "the same second counts: Twilio's dates have no fraction"
        );
        assert_eq!(pick_placed_call(calls[..1].to_vec(), placed), None);
        assert_eq!(pick_placed_call(vec![info(4, None)], placed), None);
    }

    #[test]
    fn lookup_failures_never_claim_a_call_is_gone() {
        assert!(matches!(
            twilio_lookup_error(TwilioApiError::Timeout(100)),
            DialError::Unreachable(_)
        ));
        assert!(matches!(
            twilio_lookup_error(twilio_api::parse_error(503, "")),
            DialError::Unreachable(_)
        ));
        assert!(matches!(
            twilio_lookup_error(twilio_api::parse_error(401, r#"{"code":20003}"#)),
            DialError::Refused(_)
        ));
    }

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
