//! A scripted call's variables.
//!
//! Values come from the script's defaults, overlaid by the stream's custom parameters and the
//! call's own facts (`from`, `to`, `call_sid`, `carrier`, `date`, `time`); a blank value the
//! call brings does not erase a default. Templates are filled with
//! [`Template::render`](super::flow::Template::render), and
//! [`Flow::check_variables`](super::flow::Flow::check_variables) says which required
//! variables a call lacks (docs/script.md, "Variables").

use std::collections::HashMap;

use crate::call::CallInfo;
use crate::call::conversation::call_variables;

/// The variables of one call: `defaults` overlaid by every non-blank value the call brings.
pub fn for_call(defaults: &HashMap<String, String>, info: &CallInfo) -> HashMap<String, String> {
    let mut vars = defaults.clone();
    for (name, value) in call_variables(info) {
        if !value.trim().is_empty() || !vars.contains_key(&name) {
            vars.insert(name, value);
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallId;
    use crate::carrier::{CarrierKind, MediaFormat, StreamStart};

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn call_values_overlay_defaults_but_blanks_do_not_erase_them() {
        let start = StreamStart {
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            from: Some("+14155550123".into()),
            to: None,
            tracks: Vec::new(),
            custom_parameters: [
                ("firstName".to_string(), "Priya".to_string()),
                ("tenantName".to_string(), " ".to_string()),
                ("ref".to_string(), "".to_string()),
            ]
            .into_iter()
            .collect(),
            media_format: MediaFormat {
                encoding: crate::audio::Encoding::Mulaw,
                sample_rate: 8000,
                channels: 1,
            },
        };
        let info = CallInfo::from_start(CallId::new(), CarrierKind::Twilio, &start, "script:x");
        let defaults = vars(&[("tenantName", "Acme"), ("firstName", "Sam"), ("to", "+1")]);
        let v = for_call(&defaults, &info);
        assert_eq!(v["firstName"], "Priya");
        assert_eq!(v["tenantName"], "Acme");
        assert_eq!(v["ref"], "");
        assert_eq!(v["from"], "+14155550123");
        assert_eq!(v["to"], "+1");
        assert_eq!(v["call_sid"], "CA1");
        assert_eq!(v["carrier"], "twilio");
        assert!(!v["date"].is_empty() && !v["time"].is_empty());
    }
}
