//! The tools the gateway runs for the model: `end_call`, `transfer_call`, `capture_lead`,
//! `lookup_knowledge` and `business_hours`, plus `route` for a scripted call's agent node
//! ([`Toolbox::with_route`]), with which the model chooses one of the node's outcomes.
//!
//! [`Toolbox::specs`] describes them to the model (strict JSON Schemas); [`Toolbox::run`] executes
//! a call. Running is pure — no I/O — and never fails: bad arguments come back as
//! `{"error": "..."}` the model can read and correct, and what the call should make the gateway
//! do (hang up, transfer, record a lead) comes back as a [`ToolEffect`] for the caller of `run`
//! to act on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::hours::{BusinessHours, BusinessHoursConfig, HoursError};
use super::knowledge::{KnowledgeBase, KnowledgeEntry};
use super::{ToolCall, ToolSpec};

/// Every tool's name, in the order they are offered.
pub const TOOL_NAMES: [&str; 5] = [
    "end_call",
    "transfer_call",
    "capture_lead",
    "lookup_knowledge",
    "business_hours",
];

/// How many knowledge entries `lookup_knowledge` returns at most.
const KNOWLEDGE_RESULTS: usize = 3;

/// The tools' configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// Opening hours for `business_hours` (the tool is offered only when set).
    pub business_hours: Option<BusinessHoursConfig>,
    /// Entries for `lookup_knowledge` (the tool is offered only when there are some).
    pub knowledge: Vec<KnowledgeEntry>,
    /// Numbers `transfer_call` may dial, E.164; empty allows any valid E.164 number.
    pub transfer_numbers: Vec<String>,
    /// The tools to offer (default: all five).
    pub enabled: Vec<String>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            business_hours: None,
            knowledge: Vec::new(),
            transfer_numbers: Vec::new(),
            enabled: TOOL_NAMES.iter().map(|n| n.to_string()).collect(),
        }
    }
}

/// Why the tools' configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolsConfigError {
    /// `enabled` names a tool that does not exist.
    #[error(
        "tools.enabled: unknown tool `{0}` (known: end_call, transfer_call, capture_lead, lookup_knowledge, business_hours)"
    )]
    UnknownTool(String),
    /// The business hours do not parse.
    #[error("tools.{0}")]
    Hours(#[from] HoursError),
    /// A transfer number is not E.164.
    #[error("tools.transfer_numbers entry `{entry}`: {message}")]
    TransferNumber {
        /// The entry as written.
        entry: String,
        /// What is wrong.
        message: String,
    },
}

/// Contact details the caller left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lead {
    /// The caller's name.
    pub name: String,
    /// Their number, E.164.
    pub phone: String,
    /// What they want.
    pub reason: String,
}

/// What a tool call asks the gateway to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEffect {
    /// Nothing beyond returning the result to the model.
    None,
    /// Hang up (after the model's goodbye).
    EndCall {
        /// Why, if the model said.
        reason: Option<String>,
    },
    /// Transfer the call.
    Transfer {
        /// The number, E.164.
        to: String,
    },
    /// Record a lead.
    Lead(Lead),
    /// Continue the script at the transition of this outcome (after the model's words).
    Route {
        /// One of the outcomes offered, as written in the script.
        outcome: String,
    },
}

/// The result of one tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// What goes back to the model (as the tool message's JSON).
    pub result: Value,
    /// What the gateway should do.
    pub effect: ToolEffect,
}

impl ToolOutcome {
    /// An error the model can act on, with no effect.
    fn error(message: impl Into<String>) -> ToolOutcome {
        ToolOutcome {
            result: json!({ "error": message.into() }),
            effect: ToolEffect::None,
        }
    }
}

/// The tools of one configuration, ready to describe and run.
#[derive(Debug, Clone)]
pub struct Toolbox {
    /// Offered tools, in [`TOOL_NAMES`] order.
    offered: Vec<&'static str>,
    hours: Option<BusinessHours>,
    knowledge: KnowledgeBase,
    transfer_numbers: Vec<String>,
    /// The outcomes `route` offers (the tool is offered only when there are some).
    routes: Vec<String>,
}

impl Toolbox {
    /// Checks and prepares `config`. `business_hours` is offered only with hours configured and
    /// `lookup_knowledge` only with entries.
    pub fn new(config: ToolsConfig) -> Result<Toolbox, ToolsConfigError> {
        for name in &config.enabled {
            if !TOOL_NAMES.contains(&name.as_str()) {
                return Err(ToolsConfigError::UnknownTool(name.clone()));
            }
        }
        let hours = config
            .business_hours
            .as_ref()
            .map(BusinessHours::new)
            .transpose()?;
        let transfer_numbers = config
            .transfer_numbers
            .iter()
            .map(|entry| {
                normalize_e164(entry).map_err(|message| ToolsConfigError::TransferNumber {
                    entry: entry.clone(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let knowledge = KnowledgeBase::new(config.knowledge);
        let offered = TOOL_NAMES
            .iter()
            .copied()
            .filter(|name| config.enabled.iter().any(|e| e == name))
            .filter(|name| match *name {
                "business_hours" => hours.is_some(),
                "lookup_knowledge" => !knowledge.is_empty(),
                _ => true,
            })
            .collect();
        Ok(Toolbox {
            offered,
            hours,
            knowledge,
            transfer_numbers,
            routes: Vec::new(),
        })
    }

    /// These tools plus `route`, with which the model chooses one of `outcomes` (blank and
    /// repeated outcomes are left out; with none left, no `route` tool is offered).
    pub fn with_route(&self, outcomes: &[String]) -> Toolbox {
        let mut toolbox = self.clone();
        toolbox.routes.clear();
        for outcome in outcomes {
            let outcome = outcome.trim();
            if !outcome.is_empty() && !toolbox.routes.iter().any(|o| o == outcome) {
                toolbox.routes.push(outcome.to_owned());
            }
        }
        toolbox.offered.retain(|name| *name != "route");
        if !toolbox.routes.is_empty() {
            toolbox.offered.push("route");
        }
        toolbox
    }

    /// The names of the tools offered.
    pub fn names(&self) -> &[&'static str] {
        &self.offered
    }

    /// The offered tools, described for the model.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.offered.iter().map(|name| self.spec(name)).collect()
    }

    fn spec(&self, name: &str) -> ToolSpec {
        let (description, parameters) = match name {
            "end_call" => (
                "Hang up the phone call. Call this only when the conversation is over: the caller \
                 said goodbye or has nothing else, and you have already said a short goodbye."
                    .to_string(),
                object_schema(&[(
                    "reason",
                    json!({
                        "type": ["string", "null"],
                        "description": "Why the call ends, in a few words (e.g. \"caller said goodbye\"), or null."
                    }),
                )]),
            ),
            "transfer_call" => {
                let mut to = json!({
                    "type": "string",
                    "description": "The phone number to transfer to, in international format with country code, e.g. +442079460958."
                });
                let mut description = "Transfer the caller to a person at another phone number. Use it when \
                     the caller asks for a human or you cannot help; tell them you are transferring \
                     them before calling this."
                    .to_string();
                if !self.transfer_numbers.is_empty() {
                    to["enum"] = json!(self.transfer_numbers);
                    description.push_str(&format!(
                        " Only these numbers are allowed: {}.",
                        self.transfer_numbers.join(", ")
                    ));
                }
                (description, object_schema(&[("to", to)]))
            }
            "capture_lead" => (
                "Save the caller's contact details so the team can call them back. Ask for and \
                 confirm their name and phone number first."
                    .to_string(),
                object_schema(&[
                    (
                        "name",
                        json!({"type": "string", "description": "The caller's full name."}),
                    ),
                    (
                        "phone",
                        json!({"type": "string", "description": "The caller's phone number with country code, e.g. +14155550123."}),
                    ),
                    (
                        "reason",
                        json!({"type": "string", "description": "What the caller wants, in one sentence."}),
                    ),
                ]),
            ),
            "lookup_knowledge" => (
                "Search the business's knowledge base (services, prices, address, parking, \
                 policies). Use it before answering a factual question about the business, and \
                 answer only from what it returns."
                    .to_string(),
                object_schema(&[(
                    "query",
                    json!({"type": "string", "description": "The caller's question or its key words, e.g. \"parking\" or \"price of a check-up\"."}),
                )]),
            ),
            "route" => (
                format!(
                    "Move the call on to its next step once the conversation has reached one of \
                     these outcomes: {}. Put anything the caller should hear first in this same \
                     reply; the call goes on as soon as those words have been said.",
                    self.routes
                        .iter()
                        .map(|o| format!("\"{o}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                object_schema(&[(
                    "outcome",
                    json!({
                        "type": "string",
                        "enum": self.routes,
                        "description": "The outcome reached, exactly as listed."
                    }),
                )]),
            ),
            _ => (
                "Get the business's opening hours, whether it is open right now, and when it next \
                 opens or closes."
                    .to_string(),
                object_schema(&[]),
            ),
        };
        ToolSpec {
            name: name.to_string(),
            description,
            parameters,
        }
    }

    /// Runs `call` at time `now`. Never fails: problems are `{"error": ...}` results.
    pub fn run(&self, call: &ToolCall, now: DateTime<Utc>) -> ToolOutcome {
        let Some(&name) = self.offered.iter().find(|n| **n == call.name) else {
            return ToolOutcome::error(format!(
                "unknown tool `{}`; available tools: {}",
                call.name,
                self.offered.join(", ")
            ));
        };
        let result = match name {
            "end_call" => self.end_call(&call.arguments),
            "transfer_call" => self.transfer_call(&call.arguments),
            "capture_lead" => self.capture_lead(&call.arguments),
            "lookup_knowledge" => self.lookup_knowledge(&call.arguments),
            "route" => self.route(&call.arguments),
            _ => self.business_hours(&call.arguments, now),
        };
        result.unwrap_or_else(ToolOutcome::error)
    }

    fn end_call(&self, arguments: &str) -> Result<ToolOutcome, String> {
        let args = parse_args(arguments, &["reason"], &[])?;
        let reason = optional_string(&args, "reason")?;
        Ok(ToolOutcome {
            result: json!({ "ok": true, "ending_call": true }),
            effect: ToolEffect::EndCall { reason },
        })
    }

    fn transfer_call(&self, arguments: &str) -> Result<ToolOutcome, String> {
        let args = parse_args(arguments, &["to"], &["to"])?;
        let raw = required_string(&args, "to")?;
        let to = normalize_e164(&raw).map_err(|e| format!("`to`: {e}"))?;
        if !self.transfer_numbers.is_empty() && !self.transfer_numbers.contains(&to) {
            return Err(format!(
                "`to`: {to} is not an allowed transfer number; allowed: {}",
                self.transfer_numbers.join(", ")
            ));
        }
        Ok(ToolOutcome {
            result: json!({ "ok": true, "transferring_to": to }),
            effect: ToolEffect::Transfer { to },
        })
    }

    fn capture_lead(&self, arguments: &str) -> Result<ToolOutcome, String> {
        let fields = ["name", "phone", "reason"];
        let args = parse_args(arguments, &fields, &fields)?;
        let name = required_string(&args, "name")?;
        let phone = normalize_e164(&required_string(&args, "phone")?)
            .map_err(|e| format!("`phone`: {e}"))?;
        let reason = required_string(&args, "reason")?;
        let lead = Lead {
            name,
            phone,
            reason,
        };
        Ok(ToolOutcome {
            result: json!({ "ok": true, "saved": lead }),
            effect: ToolEffect::Lead(lead),
        })
    }

    fn lookup_knowledge(&self, arguments: &str) -> Result<ToolOutcome, String> {
        let args = parse_args(arguments, &["query"], &["query"])?;
        let query = required_string(&args, "query")?;
        let hits = self.knowledge.search(&query, KNOWLEDGE_RESULTS);
        let result = if hits.is_empty() {
            json!({ "results": [], "note": "no entry matches" })
        } else {
            let results: Vec<Value> = hits
                .iter()
                .map(|e| json!({ "title": e.title, "text": e.text }))
                .collect();
            json!({ "results": results })
        };
        Ok(ToolOutcome {
            result,
            effect: ToolEffect::None,
        })
    }

    fn route(&self, arguments: &str) -> Result<ToolOutcome, String> {
        let args = parse_args(arguments, &["outcome"], &["outcome"])?;
        let given = required_string(&args, "outcome")?;
        let outcome = self
            .routes
            .iter()
            .find(|o| o.as_str() == given)
            .or_else(|| self.routes.iter().find(|o| o.eq_ignore_ascii_case(&given)))
            .ok_or_else(|| {
                format!(
                    "`outcome`: {given:?} is not one of the outcomes; choose one of: {}",
                    self.routes.join(", ")
                )
            })?
            .clone();
        Ok(ToolOutcome {
            result: json!({ "ok": true, "outcome": outcome }),
            effect: ToolEffect::Route { outcome },
        })
    }

    fn business_hours(&self, arguments: &str, now: DateTime<Utc>) -> Result<ToolOutcome, String> {
        parse_args(arguments, &[], &[])?;
        let hours = self
            .hours
            .as_ref()
            .ok_or_else(|| "business hours are not configured".to_string())?;
        Ok(ToolOutcome {
            result: hours.status(now),
            effect: ToolEffect::None,
        })
    }
}

/// A strict object schema: every property required, nothing else allowed.
fn object_schema(properties: &[(&str, Value)]) -> Value {
    let props: Map<String, Value> = properties
        .iter()
        .map(|(name, schema)| (name.to_string(), schema.clone()))
        .collect();
    let required: Vec<&str> = properties.iter().map(|(name, _)| *name).collect();
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

/// The arguments as a JSON object with only `allowed` keys and every `required` key.
fn parse_args(
    arguments: &str,
    allowed: &[&str],
    required: &[&str],
) -> Result<Map<String, Value>, String> {
    let expected = if allowed.is_empty() {
        "an empty object {}".to_string()
    } else {
        format!("an object with {}", allowed.join(", "))
    };
    let text = arguments.trim();
    let value: Value = if text.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(text)
            .map_err(|e| format!("arguments are not valid JSON ({e}); send {expected}"))?
    };
    let Value::Object(map) = value else {
        return Err(format!("arguments must be {expected}"));
    };
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown argument `{extra}`; send {expected}"));
    }
    if let Some(missing) = required.iter().find(|k| !map.contains_key(**k)) {
        return Err(format!("missing argument `{missing}`; send {expected}"));
    }
    Ok(map)
}

/// A non-blank string argument.
fn required_string(args: &Map<String, Value>, key: &str) -> Result<String, String> {
    match args.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::String(_)) => Err(format!("`{key}` must not be empty")),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("missing argument `{key}`")),
    }
}

/// A string argument that may be missing or null.
fn optional_string(args: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(format!("`{key}` must be a string or null")),
    }
}

/// A phone number in E.164 (`+` and 7–15 digits), from a number written with spaces, dashes,
/// dots, parentheses, and a leading `+` or `00`.
pub fn normalize_e164(input: &str) -> Result<String, String> {
    let compact: String = input
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '-' | '(' | ')' | '.' | '/')))
        .collect();
    let digits = if let Some(rest) = compact.strip_prefix('+') {
        rest
    } else if let Some(rest) = compact.strip_prefix("00") {
        rest
    } else {
        return Err(format!(
            "`{input}` has no country code; write it starting with + and the country code, e.g. +442079460958"
        ));
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{input}` is not a phone number (digits only after the +)"
        ));
    }
    if !(7..=15).contains(&digits.len()) {
        return Err(format!(
            "`{input}` has {} digits; an international number has 7 to 15",
            digits.len()
        ));
    }
    if digits.starts_with('0') {
        return Err(format!("`{input}`: a country code never starts with 0"));
    }
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: "call_1".into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn full() -> Toolbox {
        Toolbox::new(ToolsConfig {
            business_hours: Some(BusinessHoursConfig {
                timezone: "Europe/London".into(),
                open: vec!["mon-fri 09:00-17:00".into()],
                closed_dates: vec![],
            }),
            knowledge: vec![KnowledgeEntry {
                title: "Parking".into(),
                text: "Free parking behind the building.".into(),
                keywords: vec!["car".into()],
            }],
            transfer_numbers: vec!["+44 20 7946 0958".into(), "0044 (161) 496-0000".into()],
            ..ToolsConfig::default()
        })
        .unwrap()
    }

    fn error_of(outcome: &ToolOutcome) -> String {
        assert_eq!(outcome.effect, ToolEffect::None);
        outcome.result["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {}", outcome.result))
            .to_string()
    }

    #[test]
    fn specs_are_strict_schemas() {
        let specs = full().specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, TOOL_NAMES);
        for spec in &specs {
            let p = &spec.parameters;
            assert_eq!(p["type"], "object");
            assert_eq!(p["additionalProperties"], false);
            let props: Vec<&String> = p["properties"].as_object().unwrap().keys().collect();
            let required: Vec<&str> = p["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(props.len(), required.len(), "{}", spec.name);
            assert!(spec.description.len() > 30);
        }
        let transfer = &specs[1].parameters["properties"]["to"]["enum"];
        assert_eq!(transfer, &json!(["+442079460958", "+441614960000"]));
    }

    #[test]
    fn tools_without_data_are_not_offered() {
        let tb = Toolbox::new(ToolsConfig::default()).unwrap();
        assert_eq!(tb.names(), ["end_call", "transfer_call", "capture_lead"]);
        let out = tb.run(&call("business_hours", "{}"), now());
        assert!(error_of(&out).contains("unknown tool"));
        let tb = Toolbox::new(ToolsConfig {
            enabled: vec!["end_call".into()],
            ..ToolsConfig::default()
        })
        .unwrap();
        assert_eq!(tb.names(), ["end_call"]);
        assert!(
            error_of(&tb.run(&call("transfer_call", r#"{"to":"+14155550123"}"#), now()))
                .contains("end_call")
        );
    }

    #[test]
    fn config_errors() {
        let e = Toolbox::new(ToolsConfig {
            enabled: vec!["hang_up".into()],
            ..ToolsConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("hang_up"));
        let e = Toolbox::new(ToolsConfig {
            transfer_numbers: vec!["020 7946 0958".into()],
            ..ToolsConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("020 7946 0958"), "{e}");
        let e = Toolbox::new(ToolsConfig {
            business_hours: Some(BusinessHoursConfig {
                timezone: "Nowhere/Land".into(),
                open: vec![],
                closed_dates: vec![],
            }),
            ..ToolsConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("Nowhere/Land"), "{e}");
        let e = serde_json::from_value::<ToolsConfig>(json!({"transfer": []})).unwrap_err();
        assert!(e.to_string().contains("transfer"));
    }

    #[test]
    fn end_call() {
        let tb = full();
        let out = tb.run(
            &call("end_call", r#"{"reason":"caller said goodbye"}"#),
            now(),
        );
        assert_eq!(
            out.effect,
            ToolEffect::EndCall {
                reason: Some("caller said goodbye".into())
            }
        );
        assert_eq!(out.result["ok"], true);
        for args in ["", "{}", r#"{"reason":null}"#] {
            let out = tb.run(&call("end_call", args), now());
            assert_eq!(out.effect, ToolEffect::EndCall { reason: None }, "{args}");
        }
        assert!(error_of(&tb.run(&call("end_call", r#"{"reason":5}"#), now())).contains("string"));
    }

    #[test]
    fn transfer_call() {
        let tb = full();
        let out = tb.run(
            &call("transfer_call", r#"{"to":"+44 (20) 7946-0958"}"#),
            now(),
        );
        assert_eq!(
            out.effect,
            ToolEffect::Transfer {
                to: "+442079460958".into()
            }
        );
        assert_eq!(out.result["transferring_to"], "+442079460958");
        let e = error_of(&tb.run(&call("transfer_call", r#"{"to":"+14155550123"}"#), now()));
        assert!(
            e.contains("not an allowed") && e.contains("+442079460958"),
            "{e}"
        );
        let e = error_of(&tb.run(&call("transfer_call", r#"{"to":"07946 0958"}"#), now()));
        assert!(e.contains("country code"), "{e}");
        // Any valid number when no list is configured.
        let open = Toolbox::new(ToolsConfig::default()).unwrap();
        let out = open.run(
            &call("transfer_call", r#"{"to":"001 415 555 0123"}"#),
            now(),
        );
        assert_eq!(
            out.effect,
            ToolEffect::Transfer {
                to: "+14155550123".into()
            }
        );
    }

    #[test]
    fn capture_lead() {
        let tb = full();
        let out = tb.run(
            &call(
                "capture_lead",
                r#"{"name":" Priya Shah ","phone":"+91 98765-43210","reason":"wants a quote"}"#,
            ),
            now(),
        );
        let lead = Lead {
            name: "Priya Shah".into(),
            phone: "+919876543210".into(),
            reason: "wants a quote".into(),
        };
        assert_eq!(out.result["saved"]["phone"], "+919876543210");
        assert_eq!(out.effect, ToolEffect::Lead(lead));
        let e = error_of(&tb.run(
            &call("capture_lead", r#"{"name":"A","phone":"+919876543210"}"#),
            now(),
        ));
        assert!(e.contains("missing argument `reason`"), "{e}");
        let e = error_of(&tb.run(
            &call(
                "capture_lead",
                r#"{"name":"","phone":"+919876543210","reason":"x"}"#,
            ),
            now(),
        ));
        assert!(e.contains("`name` must not be empty"), "{e}");
        let e = error_of(&tb.run(
            &call("capture_lead", r#"{"name":"A","phone":"12","reason":"x"}"#),
            now(),
        ));
        assert!(e.contains("`phone`"), "{e}");
    }

    #[test]
    fn lookup_knowledge() {
        let tb = full();
        let out = tb.run(
            &call("lookup_knowledge", r#"{"query":"where do I park my car"}"#),
            now(),
        );
        assert_eq!(out.result["results"][0]["title"], "Parking");
        let out = tb.run(&call("lookup_knowledge", r#"{"query":"pizza"}"#), now());
        assert_eq!(
            out.result,
            json!({"results": [], "note": "no entry matches"})
        );
        assert_eq!(out.effect, ToolEffect::None);
    }

    #[test]
    fn business_hours() {
        let out = full().run(&call("business_hours", "{}"), now());
        assert_eq!(out.result["open_now"], true);
        assert_eq!(out.result["closes_at"], "today at 5 PM");
        assert_eq!(out.result["timezone"], "Europe/London");
        let e = error_of(&full().run(&call("business_hours", r#"{"day":"mon"}"#), now()));
        assert!(e.contains("unknown argument `day`"), "{e}");
    }

    #[test]
    fn bad_arguments_never_panic() {
        let tb = full();
        for (name, args) in [
            ("end_call", "not json"),
            ("end_call", "[1,2]"),
            ("transfer_call", "{}"),
            ("transfer_call", r#"{"to": null}"#),
            ("transfer_call", r#"{"to":"+1","extra":1}"#),
            ("lookup_knowledge", r#"{"query": ""}"#),
            ("lookup_knowledge", "{\"query\": \"x\""),
            ("nope", "{}"),
        ] {
            let out = tb.run(&call(name, args), now());
            assert!(!error_of(&out).is_empty(), "{name} {args}");
        }
        let e = error_of(&tb.run(&call("end_call", "not json"), now()));
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn route_offers_the_outcomes_and_checks_the_choice() {
        let plain = full();
        assert!(!plain.names().contains(&"route"));
        let outcomes = vec![
            "done".to_string(),
            " billing ".to_string(),
            "done".to_string(),
            "".to_string(),
        ];
        let tb = plain.with_route(&outcomes);
        assert_eq!(tb.names().last(), Some(&"route"));
        let spec = tb.specs().into_iter().find(|s| s.name == "route").unwrap();
        assert_eq!(
            spec.parameters["properties"]["outcome"]["enum"],
            json!(["done", "billing"])
        );
        assert_eq!(spec.parameters["required"], json!(["outcome"]));
        assert_eq!(spec.parameters["additionalProperties"], json!(false));
        assert!(spec.description.contains("\"done\", \"billing\""));
        let out = tb.run(&call("route", r#"{"outcome":"Billing"}"#), now());
        assert_eq!(
            out.effect,
            ToolEffect::Route {
                outcome: "billing".into()
            }
        );
        assert_eq!(out.result, json!({"ok": true, "outcome": "billing"}));
        let e = error_of(&tb.run(&call("route", r#"{"outcome":"refund"}"#), now()));
        assert!(e.contains("choose one of: done, billing"), "{e}");
        let e = error_of(&tb.run(&call("route", "{}"), now()));
        assert!(e.contains("missing argument `outcome`"), "{e}");
        // Without outcomes there is no route tool, and calling it is an unknown tool.
        let none = tb.with_route(&[]);
        assert!(!none.names().contains(&"route"));
        assert!(none.specs().iter().all(|s| s.name != "route"));
        let e = error_of(&none.run(&call("route", r#"{"outcome":"done"}"#), now()));
        assert!(e.contains("unknown tool `route`"), "{e}");
        // The other tools are untouched.
        assert_eq!(&tb.names()[..tb.names().len() - 1], plain.names());
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(normalize_e164("+1 (415) 555-0123").unwrap(), "+14155550123");
        assert_eq!(normalize_e164("0091 98765 43210").unwrap(), "+919876543210");
        assert_eq!(normalize_e164("+44.20.7946.0958").unwrap(), "+442079460958");
        assert!(normalize_e164("4155550123").is_err());
        assert!(normalize_e164("+1 415 CALL NOW").is_err());
        assert!(normalize_e164("+0123456789").is_err());
        assert!(normalize_e164("+1234567890123456").is_err());
        assert!(normalize_e164("+").is_err());
        assert!(normalize_e164("").is_err());
    }
}
