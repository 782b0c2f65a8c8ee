//! SMS fallback: a contact whose last attempt went unanswered gets the campaign's text.
//!
//! A job ends `done` with `sms_state = 'due'`; the sender claims due rows (`sending`, under a
//! lease), renders the campaign's template with the contact's variables, sends it from the
//! campaign's first caller id, and records `sent` + the message id (or `failed`) and a
//! CallEvent `sms_fallback` on the last attempt's call. A send whose lease expired is never
//! retried (`unknown`): a contact never gets two texts.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::carrier::twilio_api::{TwilioApiError, TwilioRest};

/// Why a text was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    /// Refused before or by the carrier: nothing went out.
    #[error("refused: {0}")]
    Refused(String),
    /// The request went out, but nothing says whether the carrier sent the text.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// Sends one text message.
#[async_trait]
pub trait SmsSender: Send + Sync {
    /// Sends `body` to `to` from `from` (E.164); returns the carrier's message id.
    async fn send(&self, from: &str, to: &str, body: &str) -> Result<String, SmsError>;
}

/// Texts through Twilio's Messages API.
#[derive(Debug)]
pub struct TwilioSms {
    rest: TwilioRest,
    account_sid: String,
}

impl TwilioSms {
    /// A sender on `rest` for `account_sid`.
    pub fn new(rest: TwilioRest, account_sid: String) -> TwilioSms {
        TwilioSms { rest, account_sid }
    }
}

#[async_trait]
impl SmsSender for TwilioSms {
    async fn send(&self, from: &str, to: &str, body: &str) -> Result<String, SmsError> {
        match self.rest.send_sms(&self.account_sid, from, to, body).await {
            Ok(message) => Ok(message.sid),
            Err(
                error @ (TwilioApiError::Invalid(_)
                | TwilioApiError::Api { .. }
                | TwilioApiError::Transport(_)),
            ) => Err(SmsError::Refused(error.to_string())),
            Err(error) => Err(SmsError::Unknown(error.to_string())),
        }
    }
}

/// A variable an SMS template uses without a value or fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the SMS template needs the variable {0:?}")]
pub struct MissingSmsVariable(pub String);

/// Renders an SMS template: `{{ name }}` is the variable's value, `{{ name | fallback }}` the
/// fallback when the value is missing or blank; other text is kept as written.
pub fn render_sms(
    template: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, MissingSmsVariable> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let slot = &rest[start + 2..start + 2 + len];
        let (name, fallback) = match slot.split_once('|') {
            Some((name, fallback)) => (name.trim(), Some(fallback.trim())),
            None => (slot.trim(), None),
        };
        match vars.get(name).filter(|v| !v.trim().is_empty()) {
            Some(value) => out.push_str(value),
            None => match fallback {
                Some(fallback) => out.push_str(fallback),
                None => return Err(MissingSmsVariable(name.to_owned())),
            },
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_values_and_fallbacks() {
        let vars: BTreeMap<String, String> = [("name".to_owned(), "Ana".to_owned())].into();
        assert_eq!(
            render_sms("Hi {{ name }}, call {{ office | us }} back.", &vars).unwrap(),
            "Hi Ana, call us back."
        );
        assert_eq!(
            render_sms("Hi {{name}}!", &vars).unwrap(),
            "Hi Ana!"
        );
        assert_eq!(
            render_sms("Hi {{ other }}", &vars),
            Err(MissingSmsVariable("other".into()))
        );
        assert_eq!(render_sms("50% off {{ broken", &vars).unwrap(), "50% off {{ broken");
    }
}
