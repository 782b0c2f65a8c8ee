//! Outbound campaigns: the campaign rows, the bulk upload of contacts into `pending` dial jobs,
//! the status transitions (start, pause, resume, cancel, completion), progress counts, job
//! listings and the per-tenant cap on live dialer calls.
//!
//! The data contract is `migrations/0004_dialer.sql`. Contacts are added in one transaction
//! per upload, in chunks (multi-row `VALUES` on SQLite, `UNNEST` arrays on PostgreSQL's typed
//! pool); the upload first touches the campaign row, which serialises uploads to one campaign
//! so positions stay dense and a phone is never added twice.

use std::collections::{BTreeMap, HashSet};

use sqlx::{AssertSqlSafe, Row};

use super::{Scope, Store, StoreError, TenantId, now_us, parse_uuid};
use crate::dialer::retry::RetryPolicyConfig;
use crate::dialer::window::CallingWindowConfig;

/// Contacts checked and inserted per step of an upload (one statement on PostgreSQL).
pub const CONTACT_CHUNK: usize = 5_000;
/// Rows of one SQLite insert: 10 parameters a row stay under SQLite's 32,766 per statement.
const SQLITE_ROWS: usize = 3_000;

/// A campaign's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CampaignId(pub uuid::Uuid);

impl CampaignId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        CampaignId(uuid::Uuid::now_v7())
    }
}

impl Default for CampaignId {
    fn default() -> Self {
        CampaignId::new()
    }
}

impl std::fmt::Display for CampaignId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CampaignStatus {
    /// Created, not dialing yet.
    Draft,
    /// Its jobs are being dialed.
    Running,
    /// Dialing stopped for now; calls in flight finish.
    Paused,
    /// Stopped for good by a user.
    Canceled,
    /// Every job reached a final state.
    Completed,
}

impl CampaignStatus {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Running => "running",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Canceled => "canceled",
            CampaignStatus::Completed => "completed",
        }
    }

    /// Parses a stored label.
    pub fn parse(text: &str) -> Option<CampaignStatus> {
        Some(match text {
            "draft" => CampaignStatus::Draft,
            "running" => CampaignStatus::Running,
            "paused" => CampaignStatus::Paused,
            "canceled" => CampaignStatus::Canceled,
            "completed" => CampaignStatus::Completed,
            _ => return None,
        })
    }

    /// Whether nothing more happens to the campaign.
    pub fn is_final(self) -> bool {
        matches!(self, CampaignStatus::Canceled | CampaignStatus::Completed)
    }
}

/// A user's request to change a campaign's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignAction {
    /// draft → running.
    Start,
    /// running → paused.
    Pause,
    /// paused → running.
    Resume,
    /// draft / running / paused → canceled.
    Cancel,
}

impl CampaignAction {
    /// The action's name (as in the route).
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignAction::Start => "start",
            CampaignAction::Pause => "pause",
            CampaignAction::Resume => "resume",
            CampaignAction::Cancel => "cancel",
        }
    }

    /// The statuses the action applies to, and the status it leads to.
    fn transition(self) -> (&'static [CampaignStatus], CampaignStatus) {
        use CampaignStatus::*;
        match self {
            CampaignAction::Start => (&[Draft], Running),
            CampaignAction::Pause => (&[Running], Paused),
            CampaignAction::Resume => (&[Paused], Running),
            CampaignAction::Cancel => (&[Draft, Running, Paused], Canceled),
        }
    }
}

/// What campaign operations fail with beyond the store's errors.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The store failed (or the campaign is not in the caller's scope).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The action does not apply to the campaign's current status.
    #[error("cannot {action} a campaign that is {from}")]
    InvalidTransition {
        /// The action asked.
        action: &'static str,
        /// The campaign's status.
        from: &'static str,
    },
    /// Contacts cannot be added to a canceled or completed campaign.
    #[error("the campaign is {0}: no contacts can be added")]
    Ended(&'static str),
}

/// A campaign as stored, its JSON columns parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// Its id.
    pub id: CampaignId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// A label for people.
    pub name: String,
    /// Where it is in its life.
    pub status: CampaignStatus,
    /// What answered calls run (`script:<name>`, `llm`, …).
    pub agent: String,
    /// The tenant script version, when it runs one.
    pub script_id: Option<String>,
    /// The tenant's numbers (E.164) calls are placed from, in turn.
    pub caller_ids: Vec<String>,
    /// The carrier of those numbers (`twilio` | `exotel`).
    pub carrier: String,
    /// The contacts' calling hours (a contact's own time zone overrides the one inside).
    pub calling_window: CallingWindowConfig,
    /// When and how often to dial again.
    pub retry_policy: RetryPolicyConfig,
    /// Most calls of this campaign live at once.
    pub max_concurrency: u32,
    /// Calls of this campaign live now (jobs `claimed` or `dialing`).
    pub live_calls: i64,
    /// No dialing before (µs).
    pub starts_at_us: Option<i64>,
    /// No dialing from (µs).
    pub ends_at_us: Option<i64>,
    /// Carrier answering-machine detection: `enable` | `detect_message_end`.
    pub machine_detection: Option<String>,
    /// Ring time (s).
    pub timeout_secs: Option<u32>,
    /// Longest call (s).
    pub time_limit_secs: Option<u32>,
    /// Record the calls.
    pub record: bool,
    /// Spoken after the beep when a machine answers (template).
    pub voicemail_message: Option<String>,
    /// Texted when the last attempt ended without an answer (template).
    pub sms_fallback: Option<String>,
    /// Shared by every job, under each contact's own.
    pub variables: BTreeMap<String, String>,
    /// Contacts (jobs) in the campaign.
    pub contacts: i64,
    /// Created (µs).
    pub created_us: i64,
    /// Last changed (µs).
    pub updated_us: i64,
}

/// A campaign to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCampaign {
    /// A label for people.
    pub name: String,
    /// What answered calls run.
    pub agent: String,
    /// The tenant script version, when it runs one.
    pub script_id: Option<String>,
    /// The tenant's numbers calls are placed from (E.164, one carrier).
    pub caller_ids: Vec<String>,
    /// Their carrier (`twilio` | `exotel`).
    pub carrier: String,
    /// The contacts' calling hours.
    pub calling_window: CallingWindowConfig,
    /// When and how often to dial again.
    pub retry_policy: RetryPolicyConfig,
    /// Most calls live at once (≥ 1).
    pub max_concurrency: u32,
    /// No dialing before (µs).
    pub starts_at_us: Option<i64>,
    /// No dialing from (µs).
    pub ends_at_us: Option<i64>,
    /// Carrier answering-machine detection.
    pub machine_detection: Option<String>,
    /// Ring time (s).
    pub timeout_secs: Option<u32>,
    /// Longest call (s).
    pub time_limit_secs: Option<u32>,
    /// Record the calls.
    pub record: bool,
    /// Spoken after the beep when a machine answers.
    pub voicemail_message: Option<String>,
    /// Texted on a final no-answer.
    pub sms_fallback: Option<String>,
    /// Shared variables.
    pub variables: BTreeMap<String, String>,
}

/// One contact to dial.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewContact {
    /// The number (E.164).
    pub phone: String,
    /// The contact's own template variables (over the campaign's).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The contact's IANA time zone (None: the campaign's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// What an upload of contacts did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddedContacts {
    /// New jobs created.
    pub added: u64,
    /// Contacts skipped: their phone was already in the campaign (or earlier in the upload).
    pub duplicates: u64,
}

/// How far a campaign is: its jobs counted by state and result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CampaignProgress {
    /// Jobs in total.
    pub total: i64,
    /// Jobs waiting to be dialed (first time or retry).
    pub pending: i64,
    /// Jobs a worker has claimed.
    pub claimed: i64,
    /// Jobs with an attempt in flight.
    pub dialing: i64,
    /// Jobs finished.
    pub done: i64,
    /// Jobs canceled with the campaign.
    pub canceled: i64,
    /// Finished jobs by why they stopped.
    pub final_reasons: BTreeMap<String, i64>,
    /// Finished jobs by their last attempt's outcome.
    pub outcomes: BTreeMap<String, i64>,
    /// Attempts made (calls linked to the campaign's jobs).
    pub attempts: i64,
    /// Calls live now.
    pub live_calls: i64,
    /// Fallback texts sent.
    pub sms_sent: i64,
    /// Fallback texts that failed (or whose fate is unknown).
    pub sms_failed: i64,
}

/// A dial job as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    /// The job's id.
    pub id: uuid::Uuid,
    /// The contact's position in the campaign (0-based, upload order).
    pub position: i64,
    /// The contact's number.
    pub phone: String,
    /// `pending` | `claimed` | `dialing` | `done` | `canceled`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// When a pending job may be dialed (µs).
    pub due_us: i64,
    /// The last attempt's outcome.
    pub last_outcome: Option<String>,
    /// Why a finished job stopped.
    pub final_reason: Option<String>,
    /// The attempt in flight or the last one.
    pub call_id: Option<String>,
    /// The SMS fallback's state.
    pub sms_state: Option<String>,
}

/// The job states a listing may filter on.
pub const JOB_STATES: [&str; 5] = ["pending", "claimed", "dialing", "done", "canceled"];

/// A tenant's dialer cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DialerTenant {
    /// Most campaign calls live at once (None: no cap).
    pub max_live_calls: Option<u32>,
    /// Campaign calls live now.
    pub live_calls: i64,
}

/// Where a newest-first campaign listing stopped; clients see `"{created_us}.{id}"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignCursor {
    /// The last campaign's creation time (µs).
    pub created_us: i64,
    /// The last campaign's id.
    pub id: CampaignId,
}

impl CampaignCursor {
    /// The cursor after `campaign`.
    pub fn after(campaign: &Campaign) -> Self {
        CampaignCursor {
            created_us: campaign.created_us,
            id: campaign.id,
        }
    }

    /// Parses the text form; `None` when it is not one.
    pub fn parse(text: &str) -> Option<CampaignCursor> {
        let (time, id) = text.split_once('.')?;
        Some(CampaignCursor {
            created_us: time.parse().ok()?,
            id: CampaignId(uuid::Uuid::parse_str(id).ok()?),
        })
    }
}

impl std::fmt::Display for CampaignCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_us, self.id)
    }
}

/// The columns [`campaign_row`] reads, in order.
const CAMPAIGN_COLUMNS: &str = "id, tenant_id, name, status, agent, script_id, caller_ids, \
    carrier, calling_window, retry_policy, max_concurrency, live_calls, starts_at_us, ends_at_us, \
    machine_detection, timeout_secs, time_limit_secs, CAST(CASE WHEN record THEN 1 ELSE 0 END AS BIGINT), \
    voicemail_message, sms_fallback, variables, contacts, created_us, updated_us";

fn json_column<T: serde::de::DeserializeOwned>(
    column: &'static str,
    text: String,
) -> Result<T, StoreError> {
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
        column,
        value: text,
    })
}

fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("{what}: {e}")))
}

fn opt_u32(column: &'static str, value: Option<i64>) -> Result<Option<u32>, StoreError> {
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| StoreError::Corrupt {
                column,
                value: v.to_string(),
            })
        })
        .transpose()
}

/// Reads a row of [`CAMPAIGN_COLUMNS`].
fn campaign_row(row: &sqlx::any::AnyRow) -> Result<Campaign, StoreError> {
    let get = |e| StoreError::db("reading a campaign")(e);
    let status: String = row.try_get(3).map_err(get)?;
    let max_concurrency: i64 = row.try_get(10).map_err(get)?;
    Ok(Campaign {
        id: CampaignId(parse_uuid(
            "campaigns.id",
            &row.try_get::<String, _>(0).map_err(get)?,
        )?),
        tenant_id: TenantId(parse_uuid(
            "campaigns.tenant_id",
            &row.try_get::<String, _>(1).map_err(get)?,
        )?),
        name: row.try_get(2).map_err(get)?,
        status: CampaignStatus::parse(&status).ok_or(StoreError::Corrupt {
            column: "campaigns.status",
            value: status.clone(),
        })?,
        agent: row.try_get(4).map_err(get)?,
        script_id: row.try_get(5).map_err(get)?,
        caller_ids: json_column("campaigns.caller_ids", row.try_get(6).map_err(get)?)?,
        carrier: row.try_get(7).map_err(get)?,
        calling_window: json_column("campaigns.calling_window", row.try_get(8).map_err(get)?)?,
        retry_policy: json_column("campaigns.retry_policy", row.try_get(9).map_err(get)?)?,
        max_concurrency: u32::try_from(max_concurrency).map_err(|_| StoreError::Corrupt {
            column: "campaigns.max_concurrency",
            value: max_concurrency.to_string(),
        })?,
        live_calls: row.try_get(11).map_err(get)?,
        starts_at_us: row.try_get(12).map_err(get)?,
        ends_at_us: row.try_get(13).map_err(get)?,
        machine_detection: row.try_get(14).map_err(get)?,
        timeout_secs: opt_u32("campaigns.timeout_secs", row.try_get(15).map_err(get)?)?,
        time_limit_secs: opt_u32("campaigns.time_limit_secs", row.try_get(16).map_err(get)?)?,
        record: row.try_get::<i64, _>(17).map_err(get)? != 0,
        voicemail_message: row.try_get(18).map_err(get)?,
        sms_fallback: row.try_get(19).map_err(get)?,
        variables: json_column("campaigns.variables", row.try_get(20).map_err(get)?)?,
        contacts: row.try_get(21).map_err(get)?,
        created_us: row.try_get(22).map_err(get)?,
        updated_us: row.try_get(23).map_err(get)?,
    })
}

/// A contact ready to insert.
struct JobRow {
    id: String,
    position: i64,
    phone: String,
    variables: String,
    timezone: Option<String>,
}

/// Checks `contacts` and turns the new ones into job rows numbered from `*next`, skipping
/// phones in `seen` (which learns the new ones).
fn plan_jobs(
    contacts: &[NewContact],
    seen: &mut HashSet<String>,
    next: &mut i64,
    added: &mut AddedContacts,
) -> Result<Vec<JobRow>, StoreError> {
    let mut rows = Vec::with_capacity(contacts.len());
    for contact in contacts {
        if !crate::control::dial::is_e164(&contact.phone) {
            return Err(StoreError::Invalid(format!(
                "contact phone {:?} is not an E.164 number",
                contact.phone
            )));
        }
        if let Some(tz) = &contact.timezone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(StoreError::Invalid(format!(
                "contact {}: unknown time zone {tz:?}",
                contact.phone
            )));
        }
        if !seen.insert(contact.phone.clone()) {
            added.duplicates += 1;
            continue;
        }
        rows.push(JobRow {
            id: uuid::Uuid::now_v7().to_string(),
            position: *next,
            phone: contact.phone.clone(),
            variables: to_json("contact variables", &contact.variables)?,
            timezone: contact.timezone.clone(),
        });
        *next += 1;
        added.added += 1;
    }
    Ok(rows)
}

/// SQLite's multi-row insert of `rows` jobs (anonymous placeholders, see [`super::ingest`]).
fn sqlite_jobs_sql(rows: usize) -> String {
    const HEAD: &str = "INSERT INTO dial_jobs (id, campaign_id, tenant_id, position, phone, \
        variables, timezone, state, due_us, created_us, updated_us) VALUES ";
    const ROW: &str = "(?,?,?,?,?,?,?,'pending',?,?,?)";
    let mut sql = String::with_capacity(HEAD.len() + rows * (ROW.len() + 1));
    sql.push_str(HEAD);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(ROW);
    }
    sql
}

/// PostgreSQL's insert of a chunk of jobs as parallel arrays.
const PG_INSERT_JOBS: &str = "INSERT INTO dial_jobs (id, campaign_id, tenant_id, position, phone, \
    variables, timezone, state, due_us, created_us, updated_us) \
    SELECT u.id, $1, $2, u.position, u.phone, u.variables, u.timezone, 'pending', $3, $4, $4 \
    FROM UNNEST($5::text[], $6::int8[], $7::text[], $8::text[], $9::text[]) \
    AS u(id, position, phone, variables, timezone)";

/// The transaction of an upload, on the backend's pool.
enum UploadTx {
    /// PostgreSQL's typed pool (array binds).
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    /// SQLite through the `Any` pool.
    Any(sqlx::Transaction<'static, sqlx::Any>),
}

/// An upload of contacts to one campaign in progress: one transaction, which holds the
/// campaign row until [`ContactUpload::commit`] (dropping it rolls everything back).
pub struct ContactUpload {
    tx: UploadTx,
    campaign: CampaignId,
    tenant: TenantId,
    due_us: i64,
    now: i64,
    next_position: i64,
    seen: HashSet<String>,
    added: AddedContacts,
}

impl ContactUpload {
    /// Adds `contacts` (any number; inserted in chunks of [`CONTACT_CHUNK`]). A contact whose
    /// phone is already in the campaign, or earlier in this upload, is counted as a duplicate.
    pub async fn add(&mut self, contacts: &[NewContact]) -> Result<(), StoreError> {
        for chunk in contacts.chunks(CONTACT_CHUNK) {
            let rows = plan_jobs(
                chunk,
                &mut self.seen,
                &mut self.next_position,
                &mut self.added,
            )?;
            if rows.is_empty() {
                continue;
            }
            let campaign = self.campaign.to_string();
            let tenant = self.tenant.to_string();
            match &mut self.tx {
                UploadTx::Pg(tx) => {
                    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                    let positions: Vec<i64> = rows.iter().map(|r| r.position).collect();
                    let phones: Vec<&str> = rows.iter().map(|r| r.phone.as_str()).collect();
                    let variables: Vec<&str> = rows.iter().map(|r| r.variables.as_str()).collect();
                    let zones: Vec<Option<&str>> =
                        rows.iter().map(|r| r.timezone.as_deref()).collect();
                    sqlx::query(PG_INSERT_JOBS)
                        .bind(campaign)
                        .bind(tenant)
                        .bind(self.due_us)
                        .bind(self.now)
                        .bind(ids)
                        .bind(positions)
                        .bind(phones)
                        .bind(variables)
                        .bind(zones)
                        .execute(&mut **tx)
                        .await
                        .map_err(StoreError::db("adding contacts"))?;
                }
                UploadTx::Any(tx) => {
                    for rows in rows.chunks(SQLITE_ROWS) {
                        let sql = sqlite_jobs_sql(rows.len());
                        let mut query = sqlx::query(AssertSqlSafe(sql));
                        for row in rows {
                            query = query
                                .bind(row.id.as_str())
                                .bind(campaign.as_str())
                                .bind(tenant.as_str())
                                .bind(row.position)
                                .bind(row.phone.as_str())
                                .bind(row.variables.as_str())
                                .bind(row.timezone.as_deref())
                                .bind(self.due_us)
                                .bind(self.now)
                                .bind(self.now);
                        }
                        query
                            .execute(&mut **tx)
                            .await
                            .map_err(StoreError::db("adding contacts"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// What the upload did so far.
    pub fn added(&self) -> AddedContacts {
        self.added
    }

    /// Counts the new contacts on the campaign and commits.
    pub async fn commit(self) -> Result<AddedContacts, StoreError> {
        let added = i64::try_from(self.added.added).unwrap_or(i64::MAX);
        let campaign = self.campaign.to_string();
        const COUNT: &str = "UPDATE campaigns SET contacts = contacts + $1 WHERE id = $2";
        match self.tx {
            UploadTx::Pg(mut tx) => {
                sqlx::query(COUNT)
                    .bind(added)
                    .bind(campaign)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("counting contacts"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("committing contacts"))?;
            }
            UploadTx::Any(mut tx) => {
                sqlx::query(COUNT)
                    .bind(added)
                    .bind(campaign)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("counting contacts"))?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("committing contacts"))?;
            }
        }
        Ok(self.added)
    }
}

impl Store {
    /// Creates a campaign for `tenant` in `draft` (no contacts yet).
    pub async fn create_campaign(
        &self,
        tenant: TenantId,
        new: &NewCampaign,
    ) -> Result<Campaign, StoreError> {
        Ok(self
            .create_campaign_with_contacts(tenant, new, &[], false)
            .await?
            .0)
    }

    /// Creates a campaign for `tenant` with `contacts` (see [`Store::add_contacts`]) in one
    /// transaction: `running` when `start`, else `draft`. Nothing is stored if any part fails.
    pub async fn create_campaign_with_contacts(
        &self,
        tenant: TenantId,
        new: &NewCampaign,
        contacts: &[NewContact],
        start: bool,
    ) -> Result<(Campaign, AddedContacts), StoreError> {
        if new.max_concurrency == 0 {
            return Err(StoreError::Invalid(
                "max_concurrency must be at least 1".into(),
            ));
        }
        if new.caller_ids.is_empty() {
            return Err(StoreError::Invalid("a campaign needs a caller id".into()));
        }
        let id = CampaignId::new();
        let now = now_us();
        let status = if start {
            CampaignStatus::Running
        } else {
            CampaignStatus::Draft
        };
        const INSERT: &str = "INSERT INTO campaigns (id, tenant_id, name, status, agent, \
             script_id, caller_ids, carrier, calling_window, retry_policy, max_concurrency, \
             live_calls, starts_at_us, ends_at_us, machine_detection, timeout_secs, \
             time_limit_secs, record, voicemail_message, sms_fallback, variables, contacts, \
             created_us, updated_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, \
             $12, $13, $14, $15, $16, $17, $18, $19, $20, 0, $21, $21)";
        let caller_ids = to_json("caller_ids", &new.caller_ids)?;
        let window = to_json("calling_window", &new.calling_window)?;
        let retry = to_json("retry", &new.retry_policy)?;
        let variables = to_json("variables", &new.variables)?;
        // The same binds on either backend's query type.
        macro_rules! insert {
            () => {
                sqlx::query(INSERT)
                    .bind(id.to_string())
                    .bind(tenant.to_string())
                    .bind(new.name.clone())
                    .bind(status.as_str())
                    .bind(new.agent.clone())
                    .bind(new.script_id.clone())
                    .bind(caller_ids)
                    .bind(new.carrier.clone())
                    .bind(window)
                    .bind(retry)
                    .bind(i64::from(new.max_concurrency))
                    .bind(new.starts_at_us)
                    .bind(new.ends_at_us)
                    .bind(new.machine_detection.clone())
                    .bind(new.timeout_secs.map(i64::from))
                    .bind(new.time_limit_secs.map(i64::from))
                    .bind(new.record)
                    .bind(new.voicemail_message.clone())
                    .bind(new.sms_fallback.clone())
                    .bind(variables)
                    .bind(now)
            };
        }
        let tx = match self.pg_ingest() {
            Some(pg) => {
                let mut tx = pg
                    .pool()
                    .begin()
                    .await
                    .map_err(StoreError::db("creating a campaign"))?;
                insert!()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("creating a campaign"))?;
                UploadTx::Pg(tx)
            }
            None => {
                let mut tx = self
                    .pool()
                    .begin()
                    .await
                    .map_err(StoreError::db("creating a campaign"))?;
                insert!()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("creating a campaign"))?;
                UploadTx::Any(tx)
            }
        };
        let mut upload = ContactUpload {
            tx,
            campaign: id,
            tenant,
            due_us: now.max(new.starts_at_us.unwrap_or(now)),
            now,
            next_position: 0,
            seen: HashSet::new(),
            added: AddedContacts::default(),
        };
        upload.add(contacts).await?;
        let added = upload.commit().await?;
        let campaign = self
            .campaign(Scope::Tenant(tenant), id)
            .await?
            .ok_or(StoreError::NotFound("campaign"))?;
        Ok((campaign, added))
    }

    /// Campaign `id` as `scope` sees it.
    pub async fn campaign(
        &self,
        scope: Scope,
        id: CampaignId,
    ) -> Result<Option<Campaign>, StoreError> {
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1{}",
            scope.filter("tenant_id", 2)
        );
        let query = sqlx::query(AssertSqlSafe(sql)).bind(id.to_string());
        scope
            .bind(query)
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a campaign"))?
            .as_ref()
            .map(campaign_row)
            .transpose()
    }

    /// `scope`'s campaigns, newest first, after `cursor`, at most `limit`.
    pub async fn list_campaigns(
        &self,
        scope: Scope,
        cursor: Option<CampaignCursor>,
        limit: u32,
    ) -> Result<Vec<Campaign>, StoreError> {
        let (after, n) = match cursor {
            Some(_) => (" AND (created_us < $1 OR (created_us = $1 AND id < $2))", 3),
            None => ("", 1),
        };
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE 1 = 1{after}{} \
             ORDER BY created_us DESC, id DESC LIMIT {limit}",
            scope.filter("tenant_id", n)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(c) = cursor {
            query = query.bind(c.created_us).bind(c.id.to_string());
        }
        scope
            .bind(query)
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing campaigns"))?
            .iter()
            .map(campaign_row)
            .collect()
    }

    /// Starts an upload of contacts to campaign `id` (in `scope`): one transaction that holds
    /// the campaign row (see [`ContactUpload`]). A canceled or completed campaign takes none.
    pub async fn begin_contacts(
        &self,
        scope: Scope,
        id: CampaignId,
    ) -> Result<ContactUpload, CampaignError> {
        let now = now_us();
        // The first statement writes: it takes the campaign's row lock (PostgreSQL) or the
        // write lock (SQLite) before anything is read.
        let touch = format!(
            "UPDATE campaigns SET updated_us = $1 WHERE id = $2{} \
             RETURNING tenant_id, status, contacts, starts_at_us",
            scope.filter("tenant_id", 3)
        );
        let existing = "SELECT phone FROM dial_jobs WHERE campaign_id = $1";
        let (tx, tenant, status, contacts, starts_at, phones) = match self.pg_ingest() {
            Some(pg) => {
                let mut tx = pg
                    .pool()
                    .begin()
                    .await
                    .map_err(StoreError::db("starting an upload"))?;
                let mut query = sqlx::query(AssertSqlSafe(touch))
                    .bind(now)
                    .bind(id.to_string());
                if let Some(t) = scope.tenant() {
                    query = query.bind(t);
                }
                let row = query
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::db("locking a campaign"))?
                    .ok_or(StoreError::NotFound("campaign"))?;
                let get = |e| StoreError::db("reading a campaign")(e);
                let head: (String, String, i64, Option<i64>) = (
                    row.try_get(0).map_err(get)?,
                    row.try_get(1).map_err(get)?,
                    row.try_get(2).map_err(get)?,
                    row.try_get(3).map_err(get)?,
                );
                let phones: Vec<String> = sqlx::query_scalar(existing)
                    .bind(id.to_string())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::db("reading a campaign's contacts"))?;
                (UploadTx::Pg(tx), head.0, head.1, head.2, head.3, phones)
            }
            None => {
                let mut tx = self
                    .pool()
                    .begin()
                    .await
                    .map_err(StoreError::db("starting an upload"))?;
                let query = sqlx::query(AssertSqlSafe(touch))
                    .bind(now)
                    .bind(id.to_string());
                let row = scope
                    .bind(query)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::db("locking a campaign"))?
                    .ok_or(StoreError::NotFound("campaign"))?;
                let get = |e| StoreError::db("reading a campaign")(e);
                let head: (String, String, i64, Option<i64>) = (
                    row.try_get(0).map_err(get)?,
                    row.try_get(1).map_err(get)?,
                    row.try_get(2).map_err(get)?,
                    row.try_get(3).map_err(get)?,
                );
                let phones: Vec<String> = sqlx::query_scalar(existing)
                    .bind(id.to_string())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::db("reading a campaign's contacts"))?;
                (UploadTx::Any(tx), head.0, head.1, head.2, head.3, phones)
            }
        };
        let status = CampaignStatus::parse(&status).ok_or(StoreError::Corrupt {
            column: "campaigns.status",
            value: status.clone(),
        })?;
        if status.is_final() {
            return Err(CampaignError::Ended(status.as_str()));
        }
        Ok(ContactUpload {
            tx,
            campaign: id,
            tenant: TenantId(parse_uuid("campaigns.tenant_id", &tenant)?),
            due_us: now.max(starts_at.unwrap_or(now)),
            now,
            next_position: contacts,
            seen: phones.into_iter().collect(),
            added: AddedContacts::default(),
        })
    }

    /// Adds `contacts` to campaign `id` in one transaction (chunked): jobs `pending`, due at
    /// the later of now and the campaign's start, positions after the existing ones; a phone
    /// already in the campaign is skipped as a duplicate.
    pub async fn add_contacts(
        &self,
        scope: Scope,
        id: CampaignId,
        contacts: &[NewContact],
    ) -> Result<AddedContacts, CampaignError> {
        let mut upload = self.begin_contacts(scope, id).await?;
        upload.add(contacts).await?;
        Ok(upload.commit().await?)
    }

    /// Applies `action` to campaign `id`: start (draft → running), pause (running → paused),
    /// resume (paused → running), cancel (any non-final → canceled: its pending and claimed
    /// jobs become `canceled` and the claimed ones' live-call slots are freed, in one
    /// transaction; dialing jobs finish their attempt). Another status is
    /// [`CampaignError::InvalidTransition`].
    pub async fn set_campaign_status(
        &self,
        scope: Scope,
        id: CampaignId,
        action: CampaignAction,
    ) -> Result<Campaign, CampaignError> {
        let current = self
            .campaign(scope, id)
            .await?
            .ok_or(StoreError::NotFound("campaign"))?;
        let (from, to) = action.transition();
        if !from.contains(&current.status) {
            return Err(CampaignError::InvalidTransition {
                action: action.as_str(),
                from: current.status.as_str(),
            });
        }
        let changed = if action == CampaignAction::Cancel {
            self.cancel_campaign(&current).await?
        } else {
            let done = sqlx::query(
                "UPDATE campaigns SET status = $1, updated_us = $2 WHERE id = $3 AND status = $4",
            )
            .bind(to.as_str())
            .bind(now_us())
            .bind(id.to_string())
            .bind(current.status.as_str())
            .execute(self.pool())
            .await
            .map_err(StoreError::db("changing a campaign's status"))?;
            done.rows_affected() == 1
        };
        let now = self
            .campaign(scope, id)
            .await?
            .ok_or(StoreError::NotFound("campaign"))?;
        if !changed {
            // Someone else changed it first.
            return Err(CampaignError::InvalidTransition {
                action: action.as_str(),
                from: now.status.as_str(),
            });
        }
        Ok(now)
    }

    /// Cancels `campaign` in one transaction; false when its status changed meanwhile.
    ///
    /// Jobs are updated before the campaign row, the order the workers' claims lock them in;
    /// pending jobs first, so one claimed meanwhile is caught by the second statement.
    async fn cancel_campaign(&self, campaign: &Campaign) -> Result<bool, StoreError> {
        let now = now_us();
        let id = campaign.id.to_string();
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::db("canceling a campaign"))?;
        sqlx::query(
            "UPDATE dial_jobs SET state = 'canceled', final_reason = 'campaign_canceled', \
             updated_us = $1 WHERE campaign_id = $2 AND state = 'pending'",
        )
        .bind(now)
        .bind(id.clone())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("canceling a campaign's jobs"))?;
        let claimed = sqlx::query(
            "UPDATE dial_jobs SET state = 'canceled', final_reason = 'campaign_canceled', \
             lease_owner = NULL, lease_until_us = NULL, updated_us = $1 \
             WHERE campaign_id = $2 AND state = 'claimed'",
        )
        .bind(now)
        .bind(id.clone())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("canceling a campaign's jobs"))?
        .rows_affected();
        let claimed = i64::try_from(claimed).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE campaigns SET status = 'canceled', live_calls = live_calls - $1, \
             updated_us = $2 WHERE id = $3 AND status IN ('draft', 'running', 'paused')",
        )
        .bind(claimed)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("canceling a campaign"))?;
        if done.rows_affected() != 1 {
            tx.rollback()
                .await
                .map_err(StoreError::db("canceling a campaign"))?;
            return Ok(false);
        }
        if claimed > 0 {
            sqlx::query(
                "UPDATE dialer_tenants SET live_calls = live_calls - $1 WHERE tenant_id = $2",
            )
            .bind(claimed)
            .bind(campaign.tenant_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("freeing a tenant's live calls"))?;
        }
        tx.commit()
            .await
            .map_err(StoreError::db("canceling a campaign"))?;
        Ok(true)
    }

    /// Marks `completed` every running campaign with contacts and no job left pending,
    /// claimed or dialing; returns how many. Idempotent; the workers call it now and then.
    pub async fn complete_finished_campaigns(&self) -> Result<u64, StoreError> {
        const FINISHED: &str = "status = 'running' AND contacts > 0 AND NOT EXISTS (\
            SELECT 1 FROM dial_jobs j WHERE j.campaign_id = campaigns.id \
            AND j.state IN ('pending', 'claimed', 'dialing'))";
        let now = now_us();
        let update =
            format!("UPDATE campaigns SET status = 'completed', updated_us = $1 WHERE {FINISHED}");
        if self.backend() == super::Backend::Sqlite {
            // One statement under SQLite's single writer: nothing changes in between.
            let done = sqlx::query(AssertSqlSafe(update))
                .bind(now)
                .execute(self.pool())
                .await
                .map_err(StoreError::db("completing campaigns"))?;
            return Ok(done.rows_affected());
        }
        // PostgreSQL: lock the candidates first, then check their jobs with a snapshot taken
        // after the lock, so contacts added meanwhile (under the same row lock) are seen.
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::db("completing campaigns"))?;
        let candidates: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM campaigns WHERE {FINISHED} ORDER BY id FOR UPDATE"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db("completing campaigns"))?;
        let mut completed = 0;
        for id in candidates {
            let done = sqlx::query(AssertSqlSafe(format!("{update} AND id = $2")))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("completing campaigns"))?;
            completed += done.rows_affected();
        }
        tx.commit()
            .await
            .map_err(StoreError::db("completing campaigns"))?;
        Ok(completed)
    }

    /// How far campaign `id` is (404 outside `scope`).
    pub async fn campaign_progress(
        &self,
        scope: Scope,
        id: CampaignId,
    ) -> Result<CampaignProgress, StoreError> {
        let campaign = self
            .campaign(scope, id)
            .await?
            .ok_or(StoreError::NotFound("campaign"))?;
        let rows = sqlx::query(
            "SELECT state, final_reason, last_outcome, sms_state, COUNT(*) FROM dial_jobs \
             WHERE campaign_id = $1 GROUP BY state, final_reason, last_outcome, sms_state",
        )
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::db("counting a campaign's jobs"))?;
        let mut progress = CampaignProgress {
            live_calls: campaign.live_calls,
            ..CampaignProgress::default()
        };
        let get = |e| StoreError::db("counting a campaign's jobs")(e);
        for row in &rows {
            let state: String = row.try_get(0).map_err(get)?;
            let reason: Option<String> = row.try_get(1).map_err(get)?;
            let outcome: Option<String> = row.try_get(2).map_err(get)?;
            let sms: Option<String> = row.try_get(3).map_err(get)?;
            let n: i64 = row.try_get(4).map_err(get)?;
            progress.total += n;
            match state.as_str() {
                "pending" => progress.pending += n,
                "claimed" => progress.claimed += n,
                "dialing" => progress.dialing += n,
                "done" => {
                    progress.done += n;
                    if let Some(reason) = reason {
                        *progress.final_reasons.entry(reason).or_default() += n;
                    }
                    if let Some(outcome) = outcome {
                        *progress.outcomes.entry(outcome).or_default() += n;
                    }
                }
                "canceled" => progress.canceled += n,
                _ => {
                    return Err(StoreError::Corrupt {
                        column: "dial_jobs.state",
                        value: state,
                    });
                }
            }
            match sms.as_deref() {
                Some("sent") => progress.sms_sent += n,
                Some("failed" | "unknown") => progress.sms_failed += n,
                _ => {}
            }
        }
        progress.attempts = sqlx::query_scalar(
            "SELECT COUNT(*) FROM calls WHERE job_id IN \
             (SELECT id FROM dial_jobs WHERE campaign_id = $1)",
        )
        .bind(id.to_string())
        .fetch_one(self.pool())
        .await
        .map_err(StoreError::db("counting a campaign's attempts"))?;
        Ok(progress)
    }

    /// Campaign `campaign`'s jobs in position order after position `after`, optionally only
    /// those in `state`, at most `limit` (404 outside `scope`).
    pub async fn list_jobs(
        &self,
        scope: Scope,
        campaign: CampaignId,
        state: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JobView>, StoreError> {
        if self.campaign(scope, campaign).await?.is_none() {
            return Err(StoreError::NotFound("campaign"));
        }
        if let Some(state) = state
            && !JOB_STATES.contains(&state)
        {
            return Err(StoreError::Invalid(format!("unknown job state {state:?}")));
        }
        let filter = if state.is_some() {
            " AND state = $3"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, position, phone, state, attempts, due_us, last_outcome, final_reason, \
             call_id, sms_state FROM dial_jobs WHERE campaign_id = $1 AND position > $2{filter} \
             ORDER BY position LIMIT {limit}"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(campaign.to_string())
            .bind(after.unwrap_or(-1));
        if let Some(state) = state {
            query = query.bind(state.to_owned());
        }
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing a campaign's jobs"))?;
        let get = |e| StoreError::db("reading a job")(e);
        rows.iter()
            .map(|row| {
                Ok(JobView {
                    id: parse_uuid("dial_jobs.id", &row.try_get::<String, _>(0).map_err(get)?)?,
                    position: row.try_get(1).map_err(get)?,
                    phone: row.try_get(2).map_err(get)?,
                    state: row.try_get(3).map_err(get)?,
                    attempts: row.try_get(4).map_err(get)?,
                    due_us: row.try_get(5).map_err(get)?,
                    last_outcome: row.try_get(6).map_err(get)?,
                    final_reason: row.try_get(7).map_err(get)?,
                    call_id: row.try_get(8).map_err(get)?,
                    sms_state: row.try_get(9).map_err(get)?,
                })
            })
            .collect()
    }

    /// Sets `tenant`'s cap on live campaign calls (None: no cap), keeping its live count.
    pub async fn set_tenant_dialer_limit(
        &self,
        tenant: TenantId,
        max_live_calls: Option<u32>,
    ) -> Result<DialerTenant, StoreError> {
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::NotFound("tenant"));
        }
        sqlx::query(
            "INSERT INTO dialer_tenants (tenant_id, max_live_calls, live_calls) \
             VALUES ($1, $2, 0) ON CONFLICT (tenant_id) \
             DO UPDATE SET max_live_calls = excluded.max_live_calls",
        )
        .bind(tenant.to_string())
        .bind(max_live_calls.map(i64::from))
        .execute(self.pool())
        .await
        .map_err(StoreError::db("setting a tenant's dialer limit"))?;
        self.tenant_dialer_limit(tenant).await
    }

    /// `tenant`'s dialer cap and live campaign calls (no row: no cap, none live).
    pub async fn tenant_dialer_limit(&self, tenant: TenantId) -> Result<DialerTenant, StoreError> {
        let row = sqlx::query(
            "SELECT max_live_calls, live_calls FROM dialer_tenants WHERE tenant_id = $1",
        )
        .bind(tenant.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::db("reading a tenant's dialer limit"))?;
        let Some(row) = row else {
            return Ok(DialerTenant::default());
        };
        let get = |e| StoreError::db("reading a tenant's dialer limit")(e);
        Ok(DialerTenant {
            max_live_calls: opt_u32(
                "dialer_tenants.max_live_calls",
                row.try_get(0).map_err(get)?,
            )?,
            live_calls: row.try_get(1).map_err(get)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            CampaignStatus::Draft,
            CampaignStatus::Running,
            CampaignStatus::Paused,
            CampaignStatus::Canceled,
            CampaignStatus::Completed,
        ] {
            assert_eq!(CampaignStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(CampaignStatus::parse("done"), None);
    }

    #[test]
    fn plan_skips_duplicates_and_numbers_positions() {
        let contact = |p: &str| NewContact {
            phone: p.into(),
            ..NewContact::default()
        };
        let mut seen: HashSet<String> = ["+14155550100".to_string()].into();
        let mut next = 7;
        let mut added = AddedContacts::default();
        let rows = plan_jobs(
            &[
                contact("+14155550100"),
                contact("+14155550101"),
                contact("+14155550101"),
                contact("+14155550102"),
            ],
            &mut seen,
            &mut next,
            &mut added,
        )
        .unwrap();
        assert_eq!(rows.iter().map(|r| r.position).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(
            added,
            AddedContacts {
                added: 2,
                duplicates: 2
            }
        );
        assert!(plan_jobs(&[contact("555")], &mut seen, &mut next, &mut added).is_err());
    }

    #[test]
    fn sqlite_sql_has_ten_parameters_a_row() {
        assert_eq!(sqlite_jobs_sql(3).matches('?').count(), 30);
    }

    #[test]
    fn cursors_round_trip() {
        let c = CampaignCursor {
            created_us: 12,
            id: CampaignId(uuid::Uuid::nil()),
        };
        assert_eq!(CampaignCursor::parse(&c.to_string()), Some(c));
        assert_eq!(CampaignCursor::parse("x"), None);
    }
}
