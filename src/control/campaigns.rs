//! `/v1/campaigns`: outbound campaigns. Create one with its contacts (`POST`, up to 100,000
//! contacts in one request), add more (JSON or NDJSON streamed line by line), read one with
//! its progress, list them, list a campaign's jobs, and start / pause / resume / cancel it;
//! `PUT /v1/tenants/{id}/dialer` caps a tenant's live campaign calls.
//!
//! The JSON resources mirror `voicegw.v1.Campaign`, `CampaignProgress`, `DialJob`, … in
//! proto/voicegw.proto. A tenant's key sees its own campaigns only: any other id is 404. A
//! request with a bad contact stores nothing and answers 422 `invalid_contacts` listing up to
//! 100 bad rows (`index`, or `line` for NDJSON) with what is wrong.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::routing::{get, post, put};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::ControlState;
use super::auth::Principal;
use super::call_plane::{plan_dials, tenant_plan};
use super::calls::{check_call_limits, check_variables, plane, rfc3339};
use super::dial::{CarrierName, MachineDetection, is_e164};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
#[allow(unused_imports)]
use super::model::ErrorBody;
use crate::dialer::retry::{RetryPolicy, RetryPolicyConfig};
use crate::dialer::window::{CallingWindow, CallingWindowConfig};
use crate::store::campaigns::{
    AddedContacts, Campaign, CampaignAction, CampaignCursor, CampaignError, CampaignId,
    CampaignProgress, CampaignStatus, ContactUpload, DialerTenant, JOB_STATES, JobView,
    NewCampaign, NewContact,
};
use crate::store::tenants::Role;
use crate::store::{Scope, Store, TenantId};

/// Most contacts in one JSON request.
pub const MAX_CONTACTS_PER_REQUEST: usize = 100_000;
/// Most lines in one NDJSON upload.
pub const MAX_NDJSON_LINES: usize = 1_000_000;
/// Longest NDJSON line (bytes).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Body limit of the JSON routes that take contacts.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most caller ids of a campaign.
pub const MAX_CALLER_IDS: usize = 50;
/// Longest SMS fallback text (characters).
pub const MAX_SMS_CHARS: usize = 1600;
/// Longest voicemail message (characters).
pub const MAX_VOICEMAIL_CHARS: usize = 2000;
/// Most bad rows an `invalid_contacts` error lists.
pub const MAX_REPORTED: usize = 100;
/// Contacts an upload inserts per statement.
const CHUNK: usize = crate::store::campaigns::CONTACT_CHUNK;

/// The campaign routes.
pub fn router() -> Router<ControlState> {
    Router::new()
        .route("/v1/campaigns", post(create_campaign).get(list_campaigns))
        .route("/v1/campaigns/{id}", get(get_campaign))
        .route("/v1/campaigns/{id}/jobs", get(list_jobs))
        .route("/v1/campaigns/{id}/contacts", post(add_contacts))
        .route("/v1/campaigns/{id}/start", post(start_campaign))
        .route("/v1/campaigns/{id}/pause", post(pause_campaign))
        .route("/v1/campaigns/{id}/resume", post(resume_campaign))
        .route("/v1/campaigns/{id}/cancel", post(cancel_campaign))
        .route("/v1/tenants/{id}/dialer", put(set_tenant_dialer))
}

impl From<CampaignError> for ApiError {
    fn from(error: CampaignError) -> Self {
        match error {
            CampaignError::Store(e) => e.into(),
            e @ CampaignError::InvalidTransition { .. } => {
                ApiError::conflict("invalid_transition", e.to_string())
            }
            e @ CampaignError::Ended(_) => ApiError::conflict("campaign_ended", e.to_string()),
        }
    }
}

/// A campaign's progress (`voicegw.v1.CampaignProgress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CampaignProgress)]
pub struct ProgressView {
    /// Jobs (contacts) in total.
    pub total: i64,
    /// Waiting to be dialed (first time or retry).
    pub pending: i64,
    /// Claimed by a worker.
    pub claimed: i64,
    /// An attempt in flight.
    pub dialing: i64,
    /// Finished.
    pub done: i64,
    /// Canceled with the campaign.
    pub canceled: i64,
    /// Finished jobs by why they stopped (`completed`, `max_attempts`, …).
    pub final_reasons: BTreeMap<String, i64>,
    /// Finished jobs by their last attempt's outcome.
    pub outcomes: BTreeMap<String, i64>,
    /// Attempts made (calls).
    pub attempts: i64,
    /// Calls live now.
    pub live_calls: i64,
    /// Fallback texts sent.
    pub sms_sent: i64,
    /// Fallback texts failed or of unknown fate.
    pub sms_failed: i64,
}

impl From<CampaignProgress> for ProgressView {
    fn from(p: CampaignProgress) -> Self {
        ProgressView {
            total: p.total,
            pending: p.pending,
            claimed: p.claimed,
            dialing: p.dialing,
            done: p.done,
            canceled: p.canceled,
            final_reasons: p.final_reasons,
            outcomes: p.outcomes,
            attempts: p.attempts,
            live_calls: p.live_calls,
            sms_sent: p.sms_sent,
            sms_failed: p.sms_failed,
        }
    }
}

/// A campaign as the API shows it (`voicegw.v1.Campaign`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Campaign)]
pub struct CampaignView {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// A label for people.
    pub name: String,
    /// `draft` | `running` | `paused` | `canceled` | `completed`.
    pub status: String,
    /// What answered calls run (`script:<name>`, `llm`, `echo`).
    pub agent: String,
    /// The tenant script version it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_id: Option<String>,
    /// The numbers calls are placed from (E.164), in turn.
    pub caller_ids: Vec<String>,
    /// `twilio` | `exotel`.
    pub carrier: String,
    /// The contacts' calling hours: `{timezone, open, closed_dates}`.
    #[schema(value_type = Object)]
    pub calling_window: CallingWindowConfig,
    /// The retry policy: `{max_attempts, retry_on, backoff_secs, factor, max_backoff_secs,
    /// jitter}`.
    #[schema(value_type = Object)]
    pub retry: RetryPolicyConfig,
    /// Most calls live at once.
    pub max_concurrency: u32,
    /// Calls live now.
    pub live_calls: i64,
    /// No dialing before (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// No dialing from (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// Carrier answering-machine detection: `enable` | `detect_message_end`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_detection: Option<String>,
    /// Spoken after the beep when a machine answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
    /// Texted after a final no-answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms_fallback: Option<String>,
    /// Shared template variables.
    pub variables: BTreeMap<String, String>,
    /// Ring time (s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Longest call (s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_limit_secs: Option<u32>,
    /// Record the calls.
    pub record: bool,
    /// Contacts in the campaign.
    pub contacts: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Job counts (single-campaign answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

impl CampaignView {
    fn new(c: &Campaign, progress: Option<CampaignProgress>) -> Self {
        CampaignView {
            id: c.id.to_string(),
            tenant_id: c.tenant_id.to_string(),
            name: c.name.clone(),
            status: c.status.as_str().to_owned(),
            agent: c.agent.clone(),
            script_id: c.script_id.clone(),
            caller_ids: c.caller_ids.clone(),
            carrier: c.carrier.clone(),
            calling_window: c.calling_window.clone(),
            retry: c.retry_policy.clone(),
            max_concurrency: c.max_concurrency,
            live_calls: c.live_calls,
            starts_at: c.starts_at_us.map(rfc3339),
            ends_at: c.ends_at_us.map(rfc3339),
            machine_detection: c.machine_detection.clone(),
            voicemail_message: c.voicemail_message.clone(),
            sms_fallback: c.sms_fallback.clone(),
            variables: c.variables.clone(),
            timeout_secs: c.timeout_secs,
            time_limit_secs: c.time_limit_secs,
            record: c.record,
            contacts: c.contacts,
            created_at: rfc3339(c.created_us),
            updated_at: rfc3339(c.updated_us),
            progress: progress.map(ProgressView::from),
        }
    }
}

/// A page of campaigns, newest first (`voicegw.v1.CampaignList`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CampaignList)]
pub struct CampaignListView {
    /// The campaigns (without progress).
    pub campaigns: Vec<CampaignView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What a contact upload did (`voicegw.v1.ContactsAdded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ContactsAdded)]
pub struct ContactsAddedView {
    /// New contacts (jobs).
    pub added: u64,
    /// Skipped: their phone was already in the campaign or earlier in the request.
    pub duplicates: u64,
}

impl From<AddedContacts> for ContactsAddedView {
    fn from(a: AddedContacts) -> Self {
        ContactsAddedView {
            added: a.added,
            duplicates: a.duplicates,
        }
    }
}

/// A new campaign with what its contacts did (`voicegw.v1.CampaignCreated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CampaignCreated)]
pub struct CampaignCreatedView {
    /// The campaign, with its progress.
    pub campaign: CampaignView,
    /// New contacts (jobs).
    pub added: u64,
    /// Skipped duplicates.
    pub duplicates: u64,
}

/// A dial job (`voicegw.v1.DialJob`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = DialJob)]
pub struct DialJobView {
    /// The job's id.
    pub id: String,
    /// The contact's position (0-based, upload order).
    pub position: i64,
    /// The contact's number.
    pub phone: String,
    /// `pending` | `claimed` | `dialing` | `done` | `canceled`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// When a pending job may be dialed (RFC 3339).
    pub due_at: String,
    /// The last attempt's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// Why a finished job stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_reason: Option<String>,
    /// The attempt in flight or the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// SMS fallback: `due` | `sending` | `sent` | `failed` | `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms_state: Option<String>,
}

impl From<&JobView> for DialJobView {
    fn from(j: &JobView) -> Self {
        DialJobView {
            id: j.id.to_string(),
            position: j.position,
            phone: j.phone.clone(),
            state: j.state.clone(),
            attempts: j.attempts,
            due_at: rfc3339(j.due_us),
            last_outcome: j.last_outcome.clone(),
            final_reason: j.final_reason.clone(),
            call_id: j.call_id.clone(),
            sms_state: j.sms_state.clone(),
        }
    }
}

/// A page of a campaign's jobs in position order (`voicegw.v1.DialJobList`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = DialJobList)]
pub struct DialJobListView {
    /// The jobs.
    pub jobs: Vec<DialJobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A tenant's dialer cap (`voicegw.v1.TenantDialer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TenantDialer)]
pub struct TenantDialerView {
    /// The tenant.
    pub tenant_id: String,
    /// Most campaign calls live at once; absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live_calls: Option<u32>,
    /// Campaign calls live now.
    pub live_calls: i64,
}

/// One contact of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// The number to call (E.164).
    pub phone: String,
    /// The contact's template variables (over the campaign's).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The contact's IANA time zone (default: the calling window's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `POST /v1/campaigns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaignRequest {
    /// A label (1–200 characters).
    pub name: String,
    /// A tenant script's name (its latest version runs); or give `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// A gateway agent (`llm`, `echo`, `script:<file>`); or give `script`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// 1–50 of the tenant's numbers (E.164), all on one carrier, used in turn.
    pub caller_ids: Vec<String>,
    /// Calling hours `{timezone, open: ["mon-fri 09:00-18:00"], closed_dates: ["2026-12-25"]}`
    /// (default: every day 09:00–20:00 in `timezone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub calling_window: Option<CallingWindowConfig>,
    /// IANA time zone of the default calling window (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Retry policy (default: 4 attempts; busy, no_answer, failed, voicemail retried after
    /// 10 min, 30 min, 2 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub retry: Option<RetryPolicyConfig>,
    /// Most calls live at once, 1–10000 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// No dialing before (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// No dialing from (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// Carrier answering-machine detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_detection: Option<MachineDetection>,
    /// Spoken after the beep when a machine answers (template, `{{ name }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
    /// Texted after a final no-answer (template, at most 1600 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_fallback: Option<String>,
    /// Template variables shared by every contact (under each contact's own).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Ring time, 1–600 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Longest call, 1–14400 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_secs: Option<u32>,
    /// Record the calls.
    #[serde(default)]
    pub record: bool,
    /// 0–100,000 contacts.
    #[serde(default)]
    pub contacts: Vec<ContactInput>,
    /// Start dialing now (default: stay `draft`).
    #[serde(default)]
    pub start: bool,
    /// The tenant (SUPERADMIN keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<uuid::Uuid>,
}

/// `POST /v1/campaigns/{id}/contacts` (JSON form; or send `application/x-ndjson`, one
/// contact object a line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddContactsRequest {
    /// 1–100,000 contacts.
    pub contacts: Vec<ContactInput>,
}

/// `PUT /v1/tenants/{id}/dialer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTenantDialerRequest {
    /// Most campaign calls live at once, 1–100000; `null` removes the cap.
    pub max_live_calls: Option<u32>,
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, message)
}

/// The variables a text needs: `{{ name }}` without a fallback (`{{ name | fallback }}` has
/// one); an unbalanced or empty slot is an error naming the field.
pub fn template_variables(field: &str, text: &str) -> Result<BTreeSet<String>, ApiError> {
    let bad = |message: String| unprocessable("invalid_template", format!("`{field}`: {message}"));
    let mut required = BTreeSet::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| bad("a `{{` is not closed by `}}`".into()))?;
        let inner = &after[..close];
        let (name, fallback) = match inner.split_once('|') {
            Some((name, fallback)) => (name.trim(), Some(fallback)),
            None => (inner.trim(), None),
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
            && !inner.contains('{');
        if !valid {
            return Err(bad(format!(
                "`{{{{{inner}}}}}` is not a variable: write `{{{{ name }}}}` or `{{{{ name | fallback }}}}`"
            )));
        }
        if fallback.is_none() {
            required.insert(name.to_owned());
        }
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err(bad("a `}}` has no `{{`".into()));
    }
    Ok(required)
}

/// What every contact of a campaign must satisfy: the variables its script and texts need,
/// given the campaign's (and the script's defaults) under the contact's own.
struct ContactRules {
    /// Variable → where it is needed (`script`, `sms_fallback`, `voicemail_message`).
    required: BTreeMap<String, Vec<&'static str>>,
    /// The campaign's variables over the script's defaults.
    base: HashMap<String, String>,
}

impl ContactRules {
    fn new(
        script: Option<&crate::script::prompts::LoadedScript>,
        campaign: &Campaign,
    ) -> Result<Self, ApiError> {
        let mut rules = ContactRules {
            required: BTreeMap::new(),
            base: HashMap::new(),
        };
        if let Some(script) = script {
            rules.base = script.defaults.clone();
            for name in script.flow.required_variables() {
                rules.required.entry(name).or_default().push("script");
            }
        }
        rules.base.extend(campaign.variables.clone());
        for (field, text) in [
            ("sms_fallback", &campaign.sms_fallback),
            ("voicemail_message", &campaign.voicemail_message),
        ] {
            if let Some(text) = text {
                for name in template_variables(field, text)? {
                    rules.required.entry(name).or_default().push(field);
                }
            }
        }
        Ok(rules)
    }

    /// Checks one contact and makes it a store contact.
    fn check(&self, contact: ContactInput) -> Result<NewContact, String> {
        if !is_e164(&contact.phone) {
            return Err(format!(
                "`phone` must be an E.164 number such as +14155550100, not {:?}",
                contact.phone
            ));
        }
        check_variables(&contact.variables)?;
        if let Some(tz) = &contact.timezone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(format!(
                "unknown `timezone` {tz:?} (use an IANA name such as Europe/London)"
            ));
        }
        let missing: Vec<String> = self
            .required
            .iter()
            .filter(|(name, _)| {
                let value = contact
                    .variables
                    .get(name.as_str())
                    .or_else(|| self.base.get(name.as_str()));
                value.is_none_or(|v| v.trim().is_empty())
            })
            .map(|(name, used)| format!("{name} (used by {})", used.join(", ")))
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing variables: {}", missing.join("; ")));
        }
        Ok(NewContact {
            phone: contact.phone,
            variables: contact.variables,
            timezone: contact.timezone,
        })
    }
}

/// Bad rows of a request, at most [`MAX_REPORTED`] kept.
#[derive(Default)]
struct BadRows {
    rows: Vec<serde_json::Value>,
    count: usize,
}

impl BadRows {
    fn push(&mut self, key: &str, at: usize, message: String) {
        self.count += 1;
        if self.rows.len() < MAX_REPORTED {
            self.rows
                .push(serde_json::json!({ key: at, "message": message }));
        }
    }

    fn into_result(self) -> Result<(), ApiError> {
        if self.count == 0 {
            return Ok(());
        }
        let first = self
            .rows
            .first()
            .and_then(|r| r["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        Err(unprocessable(
            "invalid_contacts",
            format!("{} contact(s) are invalid; the first: {first}", self.count),
        )
        .with_detail("contacts", serde_json::Value::Array(self.rows))
        .with_detail("invalid", serde_json::json!(self.count)))
    }
}

/// Checks every contact; a bad one fails the request with all of them listed.
fn check_contacts(
    rules: &ContactRules,
    contacts: Vec<ContactInput>,
) -> Result<Vec<NewContact>, ApiError> {
    let mut bad = BadRows::default();
    let mut good = Vec::with_capacity(contacts.len());
    for (index, contact) in contacts.into_iter().enumerate() {
        match rules.check(contact) {
            Ok(contact) => good.push(contact),
            Err(message) => bad.push("index", index, message),
        }
    }
    bad.into_result()?;
    Ok(good)
}

fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_micros())
        .map_err(|e| {
            unprocessable(
                "invalid_body",
                format!("`{name}` must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"),
            )
        })
}

/// The campaign a request describes, checked (everything but the agent, caller ids and
/// contacts, which need the store).
fn campaign_settings(request: &CreateCampaignRequest) -> Result<NewCampaign, ApiError> {
    let invalid = |message: String| unprocessable("invalid_body", message);
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(invalid("`name` must be 1–200 characters".into()));
    }
    if request.script.is_some() == request.agent.is_some() {
        return Err(invalid("give exactly one of `script` and `agent`".into()));
    }
    if request.caller_ids.is_empty() || request.caller_ids.len() > MAX_CALLER_IDS {
        return Err(invalid(format!(
            "`caller_ids` must list 1–{MAX_CALLER_IDS} of the tenant's numbers"
        )));
    }
    if let Some(bad) = request.caller_ids.iter().find(|n| !is_e164(n)) {
        return Err(unprocessable(
            "invalid_number",
            format!("`caller_ids`: {bad:?} is not an E.164 number"),
        ));
    }
    if let Some(tz) = &request.timezone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(unprocessable(
            "invalid_timezone",
            format!("unknown `timezone` {tz:?} (use an IANA name such as Europe/London)"),
        ));
    }
    let calling_window = match (&request.calling_window, &request.timezone) {
        (Some(window), Some(tz)) if &window.timezone != tz => {
            return Err(unprocessable(
                "invalid_timezone",
                format!(
                    "`timezone` {tz:?} differs from `calling_window.timezone` {:?}",
                    window.timezone
                ),
            ));
        }
        (Some(window), _) => window.clone(),
        (None, tz) => CallingWindowConfig {
            timezone: tz.clone().unwrap_or_else(|| "UTC".to_owned()),
            open: vec!["daily 09:00-20:00".to_owned()],
            closed_dates: Vec::new(),
        },
    };
    CallingWindow::new(&calling_window)
        .map_err(|e| unprocessable("invalid_calling_window", e.to_string()))?;
    let retry = request.retry.clone().unwrap_or_default();
    RetryPolicy::new(retry.clone()).map_err(|e| unprocessable("invalid_retry", e.to_string()))?;
    let max_concurrency = request.max_concurrency.unwrap_or(10);
    if !(1..=10_000).contains(&max_concurrency) {
        return Err(invalid(format!(
            "`max_concurrency` must be 1–10000, not {max_concurrency}"
        )));
    }
    let starts_at_us = request
        .starts_at
        .as_deref()
        .map(|t| parse_time("starts_at", t))
        .transpose()?;
    let ends_at_us = request
        .ends_at
        .as_deref()
        .map(|t| parse_time("ends_at", t))
        .transpose()?;
    if let Some(end) = ends_at_us {
        if end <= crate::store::now_us() {
            return Err(invalid("`ends_at` is in the past".into()));
        }
        if starts_at_us.is_some_and(|start| start >= end) {
            return Err(invalid("`ends_at` must be after `starts_at`".into()));
        }
    }
    check_call_limits(request.timeout_secs, request.time_limit_secs).map_err(invalid)?;
    check_variables(&request.variables).map_err(|m| unprocessable("invalid_variables", m))?;
    for (field, text, max) in [
        ("sms_fallback", &request.sms_fallback, MAX_SMS_CHARS),
        (
            "voicemail_message",
            &request.voicemail_message,
            MAX_VOICEMAIL_CHARS,
        ),
    ] {
        if let Some(text) = text {
            let chars = text.chars().count();
            if text.trim().is_empty() || chars > max {
                return Err(invalid(format!(
                    "`{field}` must be 1–{max} characters, not {chars}"
                )));
            }
            template_variables(field, text)?;
        }
    }
    if request.contacts.len() > MAX_CONTACTS_PER_REQUEST {
        return Err(invalid(format!(
            "at most {MAX_CONTACTS_PER_REQUEST} contacts a request (add more with \
             POST /v1/campaigns/{{id}}/contacts), not {}",
            request.contacts.len()
        )));
    }
    Ok(NewCampaign {
        name: name.to_owned(),
        agent: String::new(),
        script_id: None,
        caller_ids: request.caller_ids.clone(),
        carrier: String::new(),
        calling_window,
        retry_policy: retry,
        max_concurrency,
        starts_at_us,
        ends_at_us,
        machine_detection: request.machine_detection.map(|m| {
            match m {
                MachineDetection::Enable => "enable",
                MachineDetection::DetectMessageEnd => "detect_message_end",
            }
            .to_owned()
        }),
        timeout_secs: request.timeout_secs,
        time_limit_secs: request.time_limit_secs,
        record: request.record,
        voicemail_message: request.voicemail_message.clone(),
        sms_fallback: request.sms_fallback.clone(),
        variables: request.variables.clone(),
    })
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`] and parses it off the async workers (a
/// 64 MiB body takes a while; calls' media shares those threads).
async fn read_json<T>(body: Body) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body could not be read (at most 64 MiB): {e}"),
            )
        })?;
    off_thread(move || {
        serde_json::from_slice(&bytes).map_err(|e| {
            if e.is_data() {
                unprocessable("invalid_body", format!("the body does not fit: {e}"))
            } else {
                ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
            }
        })
    })
    .await
}

/// Runs CPU-heavy `work` (parsing, checking many contacts) on the blocking pool.
async fn off_thread<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("checking the request failed: {e}")))?
}

/// The media type of a request, lower case, without parameters.
fn media_type(request: &Request) -> String {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the body must be JSON with `Content-Type: application/json`",
    )
}

/// The carrier of `caller_ids`, all of which must be `tenant`'s numbers on one carrier.
async fn caller_carrier(
    store: &Store,
    tenant: TenantId,
    caller_ids: &[String],
) -> Result<CarrierName, ApiError> {
    let mut carrier: Option<CarrierName> = None;
    for number in caller_ids {
        let found = store
            .find_phone_number(Scope::Tenant(tenant), number)
            .await?
            .ok_or_else(|| {
                unprocessable(
                    "unknown_number",
                    format!("`caller_ids`: {number} is not one of the tenant's numbers"),
                )
            })?;
        let this = CarrierName::parse(&found.carrier).ok_or_else(|| {
            ApiError::internal(format!("number with unknown carrier {:?}", found.carrier))
        })?;
        match carrier {
            Some(c) if c != this => {
                return Err(unprocessable(
                    "mixed_carriers",
                    "`caller_ids` must all be on one carrier",
                ));
            }
            _ => carrier = Some(this),
        }
    }
    carrier.ok_or_else(|| unprocessable("invalid_body", "`caller_ids` is empty"))
}

/// The loaded script of `campaign`, when it runs a tenant script.
async fn campaign_script(
    state: &ControlState,
    campaign: &Campaign,
) -> Result<Option<std::sync::Arc<crate::script::prompts::LoadedScript>>, ApiError> {
    match campaign.agent.strip_prefix("script:") {
        Some(name) if campaign.script_id.is_some() => {
            let (_, script) = plane(state)?
                .tenant_script_loaded(&state.store, campaign.tenant_id, name)
                .await?;
            Ok(Some(script))
        }
        _ => Ok(None),
    }
}

/// Refuses (403) a tenant whose plan has no outbound calls.
async fn require_outbound(state: &ControlState, tenant: TenantId) -> Result<(), ApiError> {
    if plan_dials(tenant_plan(&state.store, tenant).await?) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the tenant's plan does not include outbound calls",
        ))
    }
}

/// Campaign `id` as `scope` sees it (404 otherwise).
async fn scoped(state: &ControlState, scope: Scope, id: CampaignId) -> ApiResult<Campaign> {
    state
        .store
        .campaign(scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign"))
}

/// The campaign with its progress.
async fn view(state: &ControlState, scope: Scope, id: CampaignId) -> ApiResult<CampaignView> {
    let campaign = scoped(state, scope, id).await?;
    let progress = state.store.campaign_progress(scope, id).await?;
    Ok(CampaignView::new(&campaign, Some(progress)))
}

#[utoipa::path(
    post, path = "/v1/campaigns", tag = "campaigns",
    request_body = CreateCampaignRequest,
    responses(
        (status = 201, description = "Created (draft, or running with `start`), with its contacts", body = CampaignCreatedView),
        (status = 400, description = "`tenant_required` (SUPERADMIN), `malformed_json`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The tenant's plan has no outbound calls", body = ErrorBody),
        (status = 404, description = "`tenant_id` names another tenant", body = ErrorBody),
        (status = 413, description = "The body is over 64 MiB", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_number`, `unknown_number`, `mixed_carriers`, `invalid_timezone`, `invalid_calling_window`, `invalid_retry`, `invalid_variables`, `invalid_template`, `unknown_agent`, `unknown_script`, `script_unusable`, `invalid_contacts` (`error.contacts`: up to 100 `{index, message}`; nothing is stored)", body = ErrorBody),
        (status = 503, description = "`calls_unavailable`, `scripts_unavailable`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `POST /v1/campaigns`: checks everything (every contact included), then stores the
/// campaign and its contacts; answers 201 with the campaign, its progress and what the
/// contacts did.
pub async fn create_campaign(
    principal: Principal,
    State(state): State<ControlState>,
    request: Request,
) -> ApiResult<(StatusCode, Json<CampaignCreatedView>)> {
    principal.require(Role::Agent)?;
    if media_type(&request) != "application/json" {
        return Err(not_json());
    }
    let mut request: CreateCampaignRequest = read_json(request.into_body()).await?;
    let tenant = principal.acting_tenant(request.tenant_id.map(TenantId))?;
    let plane = plane(&state)?;
    require_outbound(&state, tenant).await?;
    let mut new = campaign_settings(&request)?;
    let carrier = caller_carrier(&state.store, tenant, &request.caller_ids).await?;
    new.carrier = carrier.as_str().to_owned();
    let script = match (&request.script, &request.agent) {
        (Some(script), _) => {
            let (agent, loaded) = plane
                .tenant_script_loaded(&state.store, tenant, script)
                .await?;
            new.agent = agent.agent;
            new.script_id = agent.script_id;
            Some(loaded)
        }
        (None, Some(agent)) => {
            new.agent = plane.catalog_agent(agent)?.agent;
            None
        }
        (None, None) => return Err(ApiError::internal("neither script nor agent")),
    };
    // The rules need a campaign; check the contacts against the one about to be stored.
    let probe = Campaign {
        id: CampaignId(uuid::Uuid::nil()),
        tenant_id: tenant,
        name: new.name.clone(),
        status: CampaignStatus::Draft,
        agent: new.agent.clone(),
        script_id: new.script_id.clone(),
        caller_ids: new.caller_ids.clone(),
        carrier: new.carrier.clone(),
        calling_window: new.calling_window.clone(),
        retry_policy: new.retry_policy.clone(),
        max_concurrency: new.max_concurrency,
        live_calls: 0,
        starts_at_us: new.starts_at_us,
        ends_at_us: new.ends_at_us,
        machine_detection: new.machine_detection.clone(),
        timeout_secs: new.timeout_secs,
        time_limit_secs: new.time_limit_secs,
        record: new.record,
        voicemail_message: new.voicemail_message.clone(),
        sms_fallback: new.sms_fallback.clone(),
        variables: new.variables.clone(),
        contacts: 0,
        created_us: 0,
        updated_us: 0,
    };
    let rules = ContactRules::new(script.as_deref(), &probe)?;
    let input = std::mem::take(&mut request.contacts);
    let contacts = off_thread(move || check_contacts(&rules, input)).await?;
    let (campaign, added) = state
        .store
        .create_campaign_with_contacts(tenant, &new, &contacts, request.start)
        .await?;
    drop(contacts);
    let scope = Scope::Tenant(tenant);
    let campaign = view(&state, scope, campaign.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CampaignCreatedView {
            campaign,
            added: added.added,
            duplicates: added.duplicates,
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = uuid::Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign with its progress", body = CampaignView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such campaign in the key's scope", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `GET /v1/campaigns/{id}`.
pub async fn get_campaign(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<CampaignView>> {
    principal.require(Role::Agent)?;
    Ok(Json(view(&state, principal.scope(), CampaignId(id)).await?))
}

/// `GET /v1/campaigns` query.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListCampaignsQuery {
    /// 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be 1–200, not {limit}"),
        ))
    }
}

fn bad_cursor() -> ApiError {
    ApiError::bad_request("invalid_query", "`cursor` is not one this API gave")
}

#[utoipa::path(
    get, path = "/v1/campaigns", tag = "campaigns",
    params(ListCampaignsQuery),
    responses(
        (status = 200, description = "A page of campaigns, newest first (without progress)", body = CampaignListView),
        (status = 400, description = "`invalid_query`: a bad limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `GET /v1/campaigns`: the caller's campaigns, newest first.
pub async fn list_campaigns(
    principal: Principal,
    State(state): State<ControlState>,
    ApiQuery(query): ApiQuery<ListCampaignsQuery>,
) -> ApiResult<Json<CampaignListView>> {
    principal.require(Role::Agent)?;
    let limit = limit(query.limit)?;
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| CampaignCursor::parse(c).ok_or_else(bad_cursor))
        .transpose()?;
    let campaigns = state
        .store
        .list_campaigns(principal.scope(), cursor, limit)
        .await?;
    let next_cursor = (campaigns.len() == limit as usize)
        .then(|| {
            campaigns
                .last()
                .map(|c| CampaignCursor::after(c).to_string())
        })
        .flatten();
    Ok(Json(CampaignListView {
        campaigns: campaigns
            .iter()
            .map(|c| CampaignView::new(c, None))
            .collect(),
        next_cursor,
    }))
}

/// `GET /v1/campaigns/{id}/jobs` query.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListJobsQuery {
    /// Only jobs in this state: `pending` | `claimed` | `dialing` | `done` | `canceled`.
    pub state: Option<String>,
    /// 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/campaigns/{id}/jobs", tag = "campaigns",
    params(("id" = uuid::Uuid, Path, description = "Campaign id"), ListJobsQuery),
    responses(
        (status = 200, description = "A page of the campaign's jobs, in contact order", body = DialJobListView),
        (status = 400, description = "`invalid_query`: a bad state, limit or cursor; malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such campaign in the key's scope", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `GET /v1/campaigns/{id}/jobs`.
pub async fn list_jobs(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiQuery(query): ApiQuery<ListJobsQuery>,
) -> ApiResult<Json<DialJobListView>> {
    principal.require(Role::Agent)?;
    let limit = limit(query.limit)?;
    if let Some(s) = query.state.as_deref()
        && !JOB_STATES.contains(&s)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("unknown `state` {s:?} (one of {})", JOB_STATES.join(", ")),
        ));
    }
    let after = query
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().map_err(|_| bad_cursor()))
        .transpose()?;
    let jobs = state
        .store
        .list_jobs(
            principal.scope(),
            CampaignId(id),
            query.state.as_deref(),
            after,
            limit,
        )
        .await?;
    let next_cursor = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.position.to_string()))
        .flatten();
    Ok(Json(DialJobListView {
        jobs: jobs.iter().map(DialJobView::from).collect(),
        next_cursor,
    }))
}

/// A temporary file of checked contacts (one JSON object a line), removed when dropped.
struct Spool {
    path: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
}

fn spool_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("cannot spool the contacts: {e}"))
}

impl Spool {
    async fn create() -> Result<Spool, ApiError> {
        let path = std::env::temp_dir().join(format!(
            "voicegw-contacts-{}.ndjson",
            uuid::Uuid::new_v4().simple()
        ));
        let file = tokio::fs::File::create(&path).await.map_err(spool_error)?;
        Ok(Spool {
            path,
            file: Some(tokio::io::BufWriter::new(file)),
        })
    }

    async fn write(&mut self, contact: &NewContact) -> Result<(), ApiError> {
        use tokio::io::AsyncWriteExt;
        let file = self.file.as_mut().ok_or_else(|| spool_error("closed"))?;
        let mut line = serde_json::to_vec(contact).map_err(spool_error)?;
        line.push(b'\n');
        file.write_all(&line).await.map_err(spool_error)
    }

    /// Flushes and closes the writer.
    async fn finish(&mut self) -> Result<(), ApiError> {
        use tokio::io::AsyncWriteExt;
        if let Some(mut file) = self.file.take() {
            file.flush().await.map_err(spool_error)?;
        }
        Ok(())
    }

    /// Feeds the spooled contacts to `upload`, [`CHUNK`] at a time.
    async fn drain_into(&self, upload: &mut ContactUpload) -> Result<(), ApiError> {
        use tokio::io::AsyncBufReadExt;
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(spool_error)?;
        let mut lines = tokio::io::BufReader::new(file).lines();
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(line) = lines.next_line().await.map_err(spool_error)? {
            let contact: NewContact = serde_json::from_str(&line).map_err(spool_error)?;
            chunk.push(contact);
            if chunk.len() == CHUNK {
                upload.add(&chunk).await?;
                chunk.clear();
            }
        }
        upload.add(&chunk).await?;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.file.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Parses and checks one NDJSON line: `None` for a blank line or a bad one (recorded in
/// `bad`).
fn ndjson_line(
    line: &[u8],
    line_no: usize,
    rules: &ContactRules,
    bad: &mut BadRows,
) -> Option<NewContact> {
    let Ok(text) = std::str::from_utf8(line) else {
        bad.push("line", line_no, "the line is not UTF-8".into());
        return None;
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let parsed: ContactInput = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            bad.push("line", line_no, format!("not a contact object: {e}"));
            return None;
        }
    };
    match rules.check(parsed) {
        Ok(contact) => Some(contact),
        Err(message) => {
            bad.push("line", line_no, message);
            None
        }
    }
}

/// Reads an NDJSON body line by line (bounded memory), checks each contact and spools the
/// good ones; a bad line fails the request (after the whole body, listing up to 100).
async fn spool_ndjson(body: Body, rules: &ContactRules) -> Result<Spool, ApiError> {
    let mut spool = Spool::create().await?;
    let mut stream = body.into_data_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut line_no = 0usize;
    let mut bad = BadRows::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "unreadable_body",
                format!("the body could not be read: {e}"),
            )
        })?;
        let mut rest: &[u8] = &chunk;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&rest[..at]);
            rest = &rest[at + 1..];
            line_no += 1;
            if line_no > MAX_NDJSON_LINES {
                return Err(unprocessable(
                    "invalid_body",
                    format!("at most {MAX_NDJSON_LINES} lines an upload"),
                ));
            }
            if let Some(contact) = ndjson_line(&pending, line_no, rules, &mut bad)
                && bad.count == 0
            {
                spool.write(&contact).await?;
            }
            pending.clear();
        }
        pending.extend_from_slice(rest);
        if pending.len() > MAX_LINE_BYTES {
            return Err(unprocessable(
                "invalid_contacts",
                format!("line {} is longer than {MAX_LINE_BYTES} bytes", line_no + 1),
            ));
        }
    }
    if !pending.is_empty() {
        line_no += 1;
        if let Some(contact) = ndjson_line(&pending, line_no, rules, &mut bad)
            && bad.count == 0
        {
            spool.write(&contact).await?;
        }
    }
    bad.into_result()?;
    spool.finish().await?;
    Ok(spool)
}

#[utoipa::path(
    post, path = "/v1/campaigns/{id}/contacts", tag = "campaigns",
    params(("id" = uuid::Uuid, Path, description = "Campaign id")),
    request_body(content(
        (AddContactsRequest = "application/json"),
        (ContactInput = "application/x-ndjson"),
    ), description = "`{contacts: [...]}` (up to 100,000, 64 MiB), or NDJSON: one contact object a line (up to 1,000,000 lines of 64 KiB)"),
    responses(
        (status = 200, description = "Stored; duplicates skipped", body = ContactsAddedView),
        (status = 400, description = "`malformed_json`, malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such campaign in the key's scope", body = ErrorBody),
        (status = 409, description = "`campaign_ended`: the campaign is canceled or completed", body = ErrorBody),
        (status = 413, description = "The JSON body is over 64 MiB", body = ErrorBody),
        (status = 415, description = "Neither JSON nor NDJSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`; `invalid_contacts` (`error.contacts`: up to 100 `{index, message}`, or `{line, message}` for NDJSON, lines numbered from 1; nothing from the request is stored)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `POST /v1/campaigns/{id}/contacts`: more contacts, all stored in one transaction or none.
pub async fn add_contacts(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
    request: Request,
) -> ApiResult<Json<ContactsAddedView>> {
    principal.require(Role::Agent)?;
    let scope = principal.scope();
    let id = CampaignId(id);
    let campaign = scoped(&state, scope, id).await?;
    if campaign.status.is_final() {
        return Err(CampaignError::Ended(campaign.status.as_str()).into());
    }
    let script = campaign_script(&state, &campaign).await?;
    let rules = ContactRules::new(script.as_deref(), &campaign)?;
    let content_type = media_type(&request);
    let added = match content_type.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
            let spool = spool_ndjson(request.into_body(), &rules).await?;
            let mut upload = state.store.begin_contacts(scope, id).await?;
            spool.drain_into(&mut upload).await?;
            upload.commit().await?
        }
        "application/json" => {
            let body: AddContactsRequest = read_json(request.into_body()).await?;
            if body.contacts.is_empty() || body.contacts.len() > MAX_CONTACTS_PER_REQUEST {
                return Err(unprocessable(
                    "invalid_body",
                    format!(
                        "`contacts` must hold 1–{MAX_CONTACTS_PER_REQUEST} contacts (send more as NDJSON)"
                    ),
                ));
            }
            let contacts = off_thread(move || check_contacts(&rules, body.contacts)).await?;
            state.store.add_contacts(scope, id, &contacts).await?
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send `Content-Type: application/json` (`{contacts: [...]}`) or \
                 `application/x-ndjson` (one contact a line)",
            ));
        }
    };
    Ok(Json(added.into()))
}

/// Applies `action` to campaign `id` and answers it with its progress.
async fn transition(
    principal: Principal,
    state: ControlState,
    id: uuid::Uuid,
    action: CampaignAction,
) -> ApiResult<Json<CampaignView>> {
    principal.require(Role::Agent)?;
    let scope = principal.scope();
    let id = CampaignId(id);
    let campaign = scoped(&state, scope, id).await?;
    if matches!(action, CampaignAction::Start | CampaignAction::Resume) {
        require_outbound(&state, campaign.tenant_id).await?;
    }
    state.store.set_campaign_status(scope, id, action).await?;
    Ok(Json(view(&state, scope, id).await?))
}

#[utoipa::path(
    post, path = "/v1/campaigns/{id}/start", tag = "campaigns",
    params(("id" = uuid::Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Running", body = CampaignView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The tenant's plan has no outbound calls", body = ErrorBody),
        (status = 404, description = "No such campaign in the key's scope", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: not a draft", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `POST /v1/campaigns/{id}/start`: draft → running.
pub async fn start_campaign(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<CampaignView>> {
    transition(principal, state, id, CampaignAction::Start).await
}

#[utoipa::path(
    post, path = "/v1/campaigns/{id}/pause", tag = "campaigns",
    params(("id" = uuid::Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Paused (calls in flight finish)", body = CampaignView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such campaign in the key's scope", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: not running", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `POST /v1/campaigns/{id}/pause`: running → paused.
pub async fn pause_campaign(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<CampaignView>> {
    transition(principal, state, id, CampaignAction::Pause).await
}

#[utoipa::path(
    post, path = "/v1/campaigns/{id}/resume", tag = "campaigns",
    params(("id" = uuid::Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Running again", body = CampaignView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The tenant's plan has no outbound calls", body = ErrorBody),
        (status = 404, description = "No such campaign in the key's scope", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: not paused", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `POST /v1/campaigns/{id}/resume`: paused → running.
pub async fn resume_campaign(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<CampaignView>> {
    transition(principal, state, id, CampaignAction::Resume).await
}

#[utoipa::path(
    post, path = "/v1/campaigns/{id}/cancel", tag = "campaigns",
    params(("id" = uuid::Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Canceled: pending and claimed jobs canceled; calls in flight finish", body = CampaignView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such campaign in the key's scope", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: already canceled or completed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `POST /v1/campaigns/{id}/cancel`: draft / running / paused → canceled.
pub async fn cancel_campaign(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<CampaignView>> {
    transition(principal, state, id, CampaignAction::Cancel).await
}

#[utoipa::path(
    put, path = "/v1/tenants/{id}/dialer", tag = "campaigns",
    params(("id" = uuid::Uuid, Path, description = "Tenant id")),
    request_body = SetTenantDialerRequest,
    responses(
        (status = 200, description = "The tenant's cap", body = TenantDialerView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN of the tenant or SUPERADMIN", body = ErrorBody),
        (status = 404, description = "No such tenant in the key's scope", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `PUT /v1/tenants/{id}/dialer`: caps the tenant's live campaign calls.
pub async fn set_tenant_dialer(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiJson(body): ApiJson<SetTenantDialerRequest>,
) -> ApiResult<Json<TenantDialerView>> {
    principal.require(Role::Admin)?;
    let tenant = principal.acting_tenant(Some(TenantId(id)))?;
    if let Some(max) = body.max_live_calls
        && !(1..=100_000).contains(&max)
    {
        return Err(unprocessable(
            "invalid_body",
            format!("`max_live_calls` must be 1–100000 or null, not {max}"),
        ));
    }
    let DialerTenant {
        max_live_calls,
        live_calls,
    } = state
        .store
        .set_tenant_dialer_limit(tenant, body.max_live_calls)
        .await?;
    Ok(Json(TenantDialerView {
        tenant_id: tenant.to_string(),
        max_live_calls,
        live_calls,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_their_required_variables() {
        let got = template_variables("sms", "Hi {{ name }}, from {{org|us}} {{ x.y }}").unwrap();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            ["name".to_string(), "x.y".to_string()]
        );
        for bad in ["Hi {{ name", "Hi {{}}", "Hi }}", "{{ a b }}"] {
            let err = template_variables("sms", bad).unwrap_err();
            assert_eq!(err.code, "invalid_template", "{bad}");
        }
    }
}
