//! SMS fallback: a contact whose last attempt went unanswered gets the campaign's text.
//!
//! A job ends `done` with `sms_state = 'due'`; the sender claims due rows (`sending`, under a
//! lease), renders the campaign's template with the contact's variables, sends it from the
//! campaign's first caller id, and records `sent` + the message id (or `failed`) and a
//! CallEvent `sms_fallback` on the last attempt's call. A send whose lease expired is never
//! retried (`unknown`): a contact never gets two texts.

use std::collections::{BTreeMap, HashMap};

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

/// Why an SMS template gives no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsTemplateError {
    /// The template does not parse.
    #[error("the SMS template does not parse: {0}")]
    Invalid(String),
    /// A variable it needs has no value and no fallback.
    #[error("the SMS template needs the variable {0:?}")]
    Missing(String),
}

/// Renders an SMS template like a script's texts: `{{ name }}` is the variable's value,
/// `{{ name | fallback }}` the fallback when the value is missing or blank.
pub fn render_sms(
    template: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, SmsTemplateError> {
    let parsed = crate::script::parse_template(template).map_err(SmsTemplateError::Invalid)?;
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    parsed
        .render(&vars)
        .map_err(|missing| SmsTemplateError::Missing(missing.name))
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
        assert_eq!(render_sms("Hi {{name}}!", &vars).unwrap(), "Hi Ana!");
        assert_eq!(
            render_sms("Hi {{ other }}", &vars),
            Err(SmsTemplateError::Missing("other".into()))
        );
        assert!(matches!(
            render_sms("50% off {{ broken", &vars),
            Err(SmsTemplateError::Invalid(_))
        ));
    }
}
