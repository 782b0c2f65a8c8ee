//! The dialer's job queue: every worker-side transition of a campaign contact's job, each one
//! transaction on SQLite and PostgreSQL.
//!
//! - [`Store::claim_jobs`]: `pending` → `claimed` under the per-campaign and per-tenant
//!   live-call caps (PostgreSQL: campaigns and jobs locked `FOR UPDATE SKIP LOCKED`, tenants
//!   in id order; SQLite: `BEGIN IMMEDIATE`, one writer at a time).
//! - [`Store::start_attempt`]: `claimed` → `dialing` with the attempt's `calls` row.
//! - [`Store::give_back`] / [`Store::finish_claimed`]: a claimed job not dialled goes back
//!   `pending` or ends `done`.
//! - [`Store::finish_attempt`]: `dialing` with a final call → `pending` (retry) or `done`.
//! - [`Store::abandon_attempt`]: an attempt the carrier never got → `pending`, not counted.
//! - [`Store::take_over_claimed`], [`Store::adopt_dialing`]: expired leases.
//! - SMS fallback claims ([`Store::claim_sms`], [`Store::finish_sms`], [`Store::expire_sms`]).
//!
//! `campaigns.live_calls` and `dialer_tenants.live_calls` move in the same transaction as
//! the job that takes or frees a slot (a job holds one while `claimed` or `dialing`).

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row};

use super::call_records::CallSetup;
use super::calls::{Call, CallStatus, NewCall};
use super::{Backend, Scope, Store, StoreError, TenantId, now_us, parse_uuid};
use crate::call::CallId;

/// A job's state (`dial_jobs.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for its due time.
    Pending,
    /// Taken by a worker, not dialled yet.
    Claimed,
    /// An attempt is in flight.
    Dialing,
    /// No further attempt.
    Done,
    /// The campaign was canceled before it ran.
    Canceled,
}

impl JobState {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Claimed => "claimed",
            JobState::Dialing => "dialing",
            JobState::Done => "done",
            JobState::Canceled => "canceled",
        }
    }

    /// Parses a stored label.
    pub fn parse(text: &str) -> Option<JobState> {
        [
            JobState::Pending,
            JobState::Claimed,
            JobState::Dialing,
            JobState::Done,
            JobState::Canceled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The campaign settings a dial needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDial {
    /// `running`, `paused`, … (as stored).
    pub status: String,
    /// The agent answered calls run (`script:<name>`, …).
    pub agent: String,
    /// The tenant script version.
    pub script_id: Option<String>,
    /// Numbers calls are placed from, used in turn (JSON array as stored).
    pub caller_ids: Vec<String>,
    /// `twilio` | `exotel`.
    pub carrier: String,
    /// The calling window (JSON, `CallingWindowConfig`).
    pub calling_window: String,
    /// The retry policy (JSON, `RetryPolicyConfig`).
    pub retry_policy: String,
    /// `enable` | `detect_message_end` | none.
    pub machine_detection: Option<String>,
    /// Ring time (s).
    pub timeout_secs: Option<i64>,
    /// Longest call (s).
    pub time_limit_secs: Option<i64>,
    /// Record calls.
    pub record: bool,
    /// Spoken after the beep to a machine (template).
    pub voicemail_message: Option<String>,
    /// Texted after a final no-answer (template).
    pub sms_fallback: Option<String>,
    /// Variables shared by every contact.
    pub variables: BTreeMap<String, String>,
    /// Dialing stops at (µs).
    pub ends_at_us: Option<i64>,
}

/// A job with its campaign's dial settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialJob {
    /// The job's id.
    pub id: String,
    /// Its campaign.
    pub campaign_id: String,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The contact's position in the campaign.
    pub position: i64,
    /// The contact's number (E.164).
    pub phone: String,
    /// The contact's own variables.
    pub variables: BTreeMap<String, String>,
    /// The contact's IANA zone (None: the campaign's).
    pub timezone: Option<String>,
    /// Where the job is.
    pub state: JobState,
    /// When a pending job may be claimed (µs).
    pub due_us: i64,
    /// Attempts made (the one in flight included).
    pub attempts: i64,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// Lease expiry (µs).
    pub lease_until_us: Option<i64>,
    /// The attempt in flight or the last one.
    pub call_id: Option<String>,
    /// The last attempt's outcome.
    pub last_outcome: Option<String>,
    /// Why a done job stopped.
    pub final_reason: Option<String>,
    /// SMS fallback state.
    pub sms_state: Option<String>,
    /// The campaign's settings.
    pub campaign: CampaignDial,
}

impl DialJob {
    /// The campaign's variables under the contact's own.
    pub fn merged_variables(&self) -> BTreeMap<String, String> {
        let mut vars = self.campaign.variables.clone();
        vars.extend(self.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }
}

/// What ends an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Dial again from `due_us`.
    Retry {
        /// When (µs).
        due_us: i64,
    },
    /// Stop: the job is `done`.
    Final {
        /// Why (`completed`, `max_attempts`, `not_retried`, `no_window`, …).
        reason: String,
        /// Queue the campaign's SMS fallback.
        sms_due: bool,
    },
}

/// How an SMS fallback send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsResult {
    /// Accepted by the carrier with this message id.
    Sent(String),
    /// Refused; nothing was sent.
    Failed,
    /// Nothing says whether the carrier sent it (never retried).
    Unknown,
}

const JOB_COLUMNS: &str = "j.id, j.campaign_id, j.tenant_id, j.position, j.phone, j.variables, \
    j.timezone, j.state, j.due_us, j.attempts, j.lease_owner, j.lease_until_us, j.call_id, \
    j.last_outcome, j.final_reason, j.sms_state, c.status, c.agent, c.script_id, c.caller_ids, \
    c.carrier, c.calling_window, c.retry_policy, c.machine_detection, c.timeout_secs, \
    c.time_limit_secs, CASE WHEN c.record THEN 1 ELSE 0 END, c.voicemail_message, \
    c.sms_fallback, c.variables, c.ends_at_us";

const JOB_FROM: &str = "dial_jobs j JOIN campaigns c ON c.id = j.campaign_id";

fn json_map(column: &'static str, text: String) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
        column,
        value: text,
    })
}

fn job_row(row: &sqlx::any::AnyRow) -> Result<DialJob, StoreError> {
    let get = |e| StoreError::db("reading a dial job")(e);
    let state: String = row.try_get(7).map_err(get)?;
    let tenant: String = row.try_get(2).map_err(get)?;
    let caller_ids: String = row.try_get(19).map_err(get)?;
    let record: i64 = row.try_get(26).map_err(get)?;
    Ok(DialJob {
        id: row.try_get(0).map_err(get)?,
        campaign_id: row.try_get(1).map_err(get)?,
        tenant_id: TenantId(parse_uuid("dial_jobs.tenant_id", &tenant)?),
        position: row.try_get(3).map_err(get)?,
        phone: row.try_get(4).map_err(get)?,
        variables: json_map("dial_jobs.variables", row.try_get(5).map_err(get)?)?,
        timezone: row.try_get(6).map_err(get)?,
        state: JobState::parse(&state).ok_or(StoreError::Corrupt {
            column: "dial_jobs.state",
            value: state.clone(),
        })?,
        due_us: row.try_get(8).map_err(get)?,
        attempts: row.try_get(9).map_err(get)?,
        lease_owner: row.try_get(10).map_err(get)?,
        lease_until_us: row.try_get(11).map_err(get)?,
        call_id: row.try_get(12).map_err(get)?,
        last_outcome: row.try_get(13).map_err(get)?,
        final_reason: row.try_get(14).map_err(get)?,
        sms_state: row.try_get(15).map_err(get)?,
        campaign: CampaignDial {
            status: row.try_get(16).map_err(get)?,
            agent: row.try_get(17).map_err(get)?,
            script_id: row.try_get(18).map_err(get)?,
            caller_ids: serde_json::from_str(&caller_ids).map_err(|_| StoreError::Corrupt {
                column: "campaigns.caller_ids",
                value: caller_ids.clone(),
            })?,
            carrier: row.try_get(20).map_err(get)?,
            calling_window: row.try_get(21).map_err(get)?,
            retry_policy: row.try_get(22).map_err(get)?,
            machine_detection: row.try_get(23).map_err(get)?,
            timeout_secs: row.try_get(24).map_err(get)?,
            time_limit_secs: row.try_get(25).map_err(get)?,
            record: record != 0,
            voicemail_message: row.try_get(27).map_err(get)?,
            sms_fallback: row.try_get(28).map_err(get)?,
            variables: json_map("campaigns.variables", row.try_get(29).map_err(get)?)?,
            ends_at_us: row.try_get(30).map_err(get)?,
        },
    })
}

/// A transaction on the store's pool.
type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// `$start, $start+1, …` for `n` values.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Moves a campaign's and its tenant's live-call counters by `delta` (never below zero).
async fn adjust_live(
    tx: &mut Tx,
    campaign_id: &str,
    tenant_id: &str,
    delta: i64,
) -> Result<(), StoreError> {
    if delta == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE campaigns SET live_calls = CASE WHEN live_calls + $1 < 0 THEN 0 \
         ELSE live_calls + $1 END WHERE id = $2",
    )
    .bind(delta)
    .bind(campaign_id.to_owned())
    .execute(&mut **tx)
    .await
    .map_err(StoreError::db("counting a campaign's live calls"))?;
    sqlx::query(
        "INSERT INTO dialer_tenants (tenant_id, max_live_calls, live_calls) \
         VALUES ($1, NULL, $2) ON CONFLICT (tenant_id) DO UPDATE SET live_calls = \
         CASE WHEN dialer_tenants.live_calls + $3 < 0 THEN 0 \
         ELSE dialer_tenants.live_calls + $3 END",
    )
    .bind(tenant_id.to_owned())
    .bind(delta.max(0))
    .bind(delta)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::db("counting a tenant's live calls"))?;
    Ok(())
}

/// A candidate campaign of a claim.
struct Candidate {
    id: String,
    tenant_id: String,
}

impl Store {
    /// A write transaction: `BEGIN IMMEDIATE` on SQLite (the write lock up front, so two
    /// claimers never both read then write), a plain one on PostgreSQL.
    async fn write_tx(&self, context: &'static str) -> Result<Tx, StoreError> {
        match self.backend() {
            Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool().begin().await,
        }
        .map_err(StoreError::db(context))
    }

    /// ` FOR UPDATE SKIP LOCKED` on PostgreSQL, nothing on SQLite.
    fn skip_locked(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// `MATERIALIZED ` on PostgreSQL (a CTE evaluated once), nothing on SQLite.
    fn materialized(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => "MATERIALIZED ",
            Backend::Sqlite => "",
        }
    }

    /// Claims up to `limit` due jobs for `worker`, leased until `lease_until_us`: pending
    /// jobs due by `now_us` of running campaigns inside their start/end bounds, never taking
    /// a campaign past `max_concurrency` live calls or a tenant past `max_live_calls`.
    pub async fn claim_jobs(
        &self,
        worker: &str,
        now_us: i64,
        lease_until_us: i64,
        limit: u32,
    ) -> Result<Vec<DialJob>, StoreError> {
        self.claim_jobs_capped(worker, now_us, lease_until_us, limit, None)
            .await
    }

    /// [`Store::claim_jobs`] with a gateway-wide cap on every tenant's live calls too
    /// (`[dialer] max_live_calls_per_tenant`), applied with the tenant's own.
    pub async fn claim_jobs_capped(
        &self,
        worker: &str,
        now_us: i64,
        lease_until_us: i64,
        limit: u32,
        tenant_cap: Option<i64>,
    ) -> Result<Vec<DialJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx("starting a claim").await?;
        // Least-loaded campaigns first. Each is then locked on its own (PostgreSQL: skipped
        // when another claimer holds it, never waited on) and its free slots read again.
        let rows = sqlx::query(
            "SELECT c.id, c.tenant_id FROM campaigns c \
             WHERE c.status = 'running' AND c.live_calls < c.max_concurrency \
             AND (c.starts_at_us IS NULL OR c.starts_at_us <= $1) \
             AND (c.ends_at_us IS NULL OR c.ends_at_us > $1) \
             AND EXISTS (SELECT 1 FROM dial_jobs j WHERE j.campaign_id = c.id \
             AND j.state = 'pending' AND j.due_us <= $1) \
             ORDER BY c.live_calls, c.id LIMIT 50",
        )
        .bind(now_us)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db("finding campaigns to dial"))?;
        let mut candidates = rows
            .iter()
            .map(|row| {
                Ok(Candidate {
                    id: row.try_get(0)?,
                    tenant_id: row.try_get(1)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::db("reading campaigns to dial"))?;
        // Tenant rows are locked in id order: two claimers never wait on each other in a ring.
        candidates.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id).then(a.id.cmp(&b.id)));
        let mut left = i64::from(limit);
        let mut tenant_free: BTreeMap<String, Option<i64>> = BTreeMap::new();
        let mut claimed_ids: Vec<String> = Vec::new();
        for candidate in candidates {
            if left == 0 {
                break;
            }
            let locked = sqlx::query(AssertSqlSafe(format!(
                "SELECT max_concurrency - live_calls FROM campaigns WHERE id = $1 \
                 AND status = 'running' AND live_calls < max_concurrency{}",
                self.skip_locked()
            )))
            .bind(candidate.id.clone())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("locking a campaign"))?;
            let Some(locked) = locked else {
                continue;
            };
            let campaign_free: i64 = locked
                .try_get(0)
                .map_err(StoreError::db("reading a campaign's free slots"))?;
            let free_for_tenant = match tenant_free.get(&candidate.tenant_id) {
                Some(free) => *free,
                None => {
                    let lock = match self.backend() {
                        Backend::Postgres => " FOR UPDATE",
                        Backend::Sqlite => "",
                    };
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT max_live_calls, live_calls FROM dialer_tenants \
                         WHERE tenant_id = $1{lock}"
                    )))
                    .bind(candidate.tenant_id.clone())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::db("reading a tenant's dialer cap"))?;
                    let (max, live) = match row {
                        Some(row) => {
                            let max: Option<i64> = row
                                .try_get(0)
                                .map_err(StoreError::db("reading a tenant's dialer cap"))?;
                            let live: i64 = row
                                .try_get(1)
                                .map_err(StoreError::db("reading a tenant's dialer cap"))?;
                            (max, live)
                        }
                        None => (None, 0),
                    };
                    let cap = match (max, tenant_cap) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    let free = cap.map(|cap| (cap - live).max(0));
                    tenant_free.insert(candidate.tenant_id.clone(), free);
                    free
                }
            };
            let mut want = left.min(campaign_free);
            if let Some(free) = free_for_tenant {
                want = want.min(free);
            }
            if want <= 0 {
                continue;
            }
            // The picked ids are materialized once: a plain `IN (SELECT … LIMIT n)` may be
            // rescanned per row by PostgreSQL and take more than `n`.
            let sql = format!(
                "WITH picked AS {}(SELECT id FROM dial_jobs WHERE campaign_id = $4 \
                 AND state = 'pending' AND due_us <= $3 ORDER BY due_us, position \
                 LIMIT {want}{}) UPDATE dial_jobs SET state = 'claimed', lease_owner = $1, \
                 lease_until_us = $2, updated_us = $3 WHERE state = 'pending' \
                 AND id IN (SELECT id FROM picked) RETURNING id",
                self.materialized(),
                self.skip_locked()
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(worker.to_owned())
                .bind(lease_until_us)
                .bind(now_us)
                .bind(candidate.id.clone())
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::db("claiming dial jobs"))?;
            let got = rows.len() as i64;
            for row in &rows {
                claimed_ids.push(
                    row.try_get(0)
                        .map_err(StoreError::db("reading claimed jobs"))?,
                );
            }
            adjust_live(&mut tx, &candidate.id, &candidate.tenant_id, got).await?;
            if let Some(Some(free)) = tenant_free.get_mut(&candidate.tenant_id) {
                *free -= got;
            }
            left -= got;
        }
        let jobs = jobs_by_ids(&mut tx, &claimed_ids).await?;
        tx.commit()
            .await
            .map_err(StoreError::db("committing a claim"))?;
        Ok(jobs)
    }

    /// Extends the lease of every `claimed` or `dialing` job `worker` holds to
    /// `lease_until_us`; returns how many.
    pub async fn renew_leases(&self, worker: &str, lease_until_us: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE dial_jobs SET lease_until_us = $1 WHERE lease_owner = $2 \
             AND state IN ('claimed', 'dialing')",
        )
        .bind(lease_until_us)
        .bind(worker.to_owned())
        .execute(self.pool())
        .await
        .map_err(StoreError::db("renewing dial leases"))?;
        Ok(done.rows_affected())
    }

    /// Starts an attempt of `job`, which `worker` must hold `claimed` with a live lease: creates
    /// the attempt's call (`queued`, `job_id`, `attempt` = attempts + 1) from `new` and
    /// `setup`, and moves the job to `dialing`. `None` when the job is no longer ours.
    pub async fn start_attempt(
        &self,
        job_id: &str,
        worker: &str,
        now_us: i64,
        new: &NewCall,
        setup: &CallSetup,
    ) -> Result<Option<Call>, StoreError> {
        let id = CallId::new();
        let variables = serde_json::to_string(&setup.variables)
            .map_err(|e| StoreError::Invalid(format!("variables: {e}")))?;
        let mut tx = self.write_tx("starting an attempt").await?;
        let row = sqlx::query(
            "UPDATE dial_jobs SET state = 'dialing', attempts = attempts + 1, call_id = $1, \
             updated_us = $2 WHERE id = $3 AND state = 'claimed' AND lease_owner = $4 \
             AND lease_until_us > $2 RETURNING attempts, tenant_id",
        )
        .bind(id.to_string())
        .bind(now_us)
        .bind(job_id.to_owned())
        .bind(worker.to_owned())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("starting an attempt"))?;
        let Some(row) = row else {
            tx.rollback()
                .await
                .map_err(StoreError::db("ending an attempt start"))?;
            return Ok(None);
        };
        let attempt: i64 = row
            .try_get(0)
            .map_err(StoreError::db("reading an attempt"))?;
        let tenant: String = row
            .try_get(1)
            .map_err(StoreError::db("reading an attempt"))?;
        sqlx::query(
            "INSERT INTO calls (id, tenant_id, direction, status, from_number, to_number, carrier, \
             carrier_sid, created_us, updated_us, agent, script_id, variables, job_id, attempt) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(id.to_string())
        .bind(tenant.clone())
        .bind(new.direction.as_str())
        .bind(CallStatus::Queued.as_str())
        .bind(new.from.clone())
        .bind(new.to.clone())
        .bind(new.carrier.clone())
        .bind(new.carrier_sid.clone())
        .bind(now_us)
        .bind(now_us)
        .bind(setup.agent.clone())
        .bind(setup.script_id.clone())
        .bind(variables)
        .bind(job_id.to_owned())
        .bind(attempt)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("creating an attempt's call"))?;
        tx.commit()
            .await
            .map_err(StoreError::db("committing an attempt"))?;
        let tenant = TenantId(parse_uuid("dial_jobs.tenant_id", &tenant)?);
        self.get_call(Scope::Tenant(tenant), id).await
    }

    /// Gives a job `worker` holds `claimed` back: `pending`, due at `due_us`, its slot freed.
    /// `false` when the job is no longer ours.
    pub async fn give_back(
        &self,
        job_id: &str,
        worker: &str,
        due_us: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx("giving a job back").await?;
        let row = sqlx::query(
            "UPDATE dial_jobs SET state = 'pending', due_us = $1, lease_owner = NULL, \
             lease_until_us = NULL, updated_us = $2 WHERE id = $3 AND state = 'claimed' \
             AND lease_owner = $4 RETURNING campaign_id, tenant_id",
        )
        .bind(due_us)
        .bind(now_us())
        .bind(job_id.to_owned())
        .bind(worker.to_owned())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("giving a job back"))?;
        free_slot(tx, row).await
    }

    /// Ends a job `worker` holds `claimed` without dialling it: `done` with `reason` (e.g.
    /// `missing_variables`, `no_window`), its slot freed. `false` when it is no longer ours.
    pub async fn finish_claimed(
        &self,
        job_id: &str,
        worker: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx("ending a claimed job").await?;
        let row = sqlx::query(
            "UPDATE dial_jobs SET state = 'done', final_reason = $1, lease_owner = NULL, \
             lease_until_us = NULL, updated_us = $2 WHERE id = $3 AND state = 'claimed' \
             AND lease_owner = $4 RETURNING campaign_id, tenant_id",
        )
        .bind(reason.to_owned())
        .bind(now_us())
        .bind(job_id.to_owned())
        .bind(worker.to_owned())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("ending a claimed job"))?;
        free_slot(tx, row).await
    }

    /// Ends the attempt `call_id` of `job_id` (which must still be `dialing` it): the job
    /// goes back `pending` or ends `done` as `end` says, `last_outcome` = `outcome`, its slot
    /// freed. Applies once: `false` when the job has moved on.
    pub async fn finish_attempt(
        &self,
        job_id: &str,
        call_id: &str,
        outcome: &str,
        end: &AttemptEnd,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx("ending an attempt").await?;
        let now = now_us();
        let query = match end {
            AttemptEnd::Retry { due_us } => sqlx::query(
                "UPDATE dial_jobs SET state = 'pending', due_us = $1, last_outcome = $2, \
                 lease_owner = NULL, lease_until_us = NULL, updated_us = $3 \
                 WHERE id = $4 AND state = 'dialing' AND call_id = $5 \
                 RETURNING campaign_id, tenant_id",
            )
            .bind(*due_us),
            AttemptEnd::Final { reason, .. } => sqlx::query(
                "UPDATE dial_jobs SET state = 'done', final_reason = $1, last_outcome = $2, \
                 lease_owner = NULL, lease_until_us = NULL, updated_us = $3, \
                 sms_state = CASE WHEN $6 = 1 THEN 'due' ELSE sms_state END \
                 WHERE id = $4 AND state = 'dialing' AND call_id = $5 \
                 RETURNING campaign_id, tenant_id",
            )
            .bind(reason.clone()),
        };
        let mut query = query
            .bind(outcome.to_owned())
            .bind(now)
            .bind(job_id.to_owned())
            .bind(call_id.to_owned());
        if let AttemptEnd::Final { sms_due, .. } = end {
            query = query.bind(i64::from(*sms_due));
        }
        let row = query
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("ending an attempt"))?;
        free_slot(tx, row).await
    }

    /// Undoes the attempt `call_id` of `job_id` that the carrier never got: the call ends
    /// `failed` with `error`, the job goes back `pending` (due at `due_us`) without counting
    /// the attempt, its slot freed. Applies once.
    pub async fn abandon_attempt(
        &self,
        job_id: &str,
        call_id: &str,
        due_us: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx("undoing an attempt").await?;
        let now = now_us();
        let row = sqlx::query(
            "UPDATE dial_jobs SET state = 'pending', due_us = $1, attempts = attempts - 1, \
             lease_owner = NULL, lease_until_us = NULL, updated_us = $2 \
             WHERE id = $3 AND state = 'dialing' AND call_id = $4 \
             RETURNING campaign_id, tenant_id",
        )
        .bind(due_us)
        .bind(now)
        .bind(job_id.to_owned())
        .bind(call_id.to_owned())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("undoing an attempt"))?;
        if row.is_some() {
            sqlx::query(
                "UPDATE calls SET status = 'failed', error = $1, updated_us = $2, ended_us = $2 \
                 WHERE id = $3 AND status IN ('queued', 'ringing')",
            )
            .bind(error.to_owned())
            .bind(now)
            .bind(call_id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("failing an unplaced call"))?;
        }
        free_slot(tx, row).await
    }

    /// Up to `limit` `dialing` jobs whose attempt's call is over, with that call.
    pub async fn dialing_jobs_with_final_calls(
        &self,
        limit: u32,
    ) -> Result<Vec<(DialJob, Call)>, StoreError> {
        let final_statuses = "'completed', 'failed', 'busy', 'no_answer', 'canceled'";
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} JOIN calls k ON k.id = j.call_id \
             WHERE j.state = 'dialing' AND k.status IN ({final_statuses}) LIMIT {}",
            limit.clamp(1, 10_000)
        );
        self.jobs_with_calls(sql).await
    }

    /// Up to `limit` `dialing` jobs whose call is not over and has not changed for
    /// `stale_secs` (callbacks lost?), or has no carrier id and has not changed for
    /// `unplaced_secs` (the carrier's answer was lost), with the call: the attempts to look
    /// up at the carrier at `now_us`. An attempt with no carrier id is listed only when
    /// `worker` holds its lease or the lease expired (a live worker may still be placing it).
    pub async fn stale_attempts(
        &self,
        now_us: i64,
        worker: &str,
        (stale_secs, unplaced_secs): (i64, i64),
        limit: u32,
    ) -> Result<Vec<(DialJob, Call)>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} JOIN calls k ON k.id = j.call_id \
             WHERE j.state = 'dialing' AND k.status IN ('queued', 'ringing', 'in_progress') \
             AND (k.carrier_sid IS NOT NULL OR j.lease_owner = $1 OR j.lease_until_us < $2) \
             AND (k.updated_us + {stale} * 1000000 < $2 \
             OR (k.carrier_sid IS NULL AND k.updated_us + {unplaced} * 1000000 < $2)) \
             ORDER BY k.updated_us LIMIT {}",
            limit.clamp(1, 10_000),
            stale = stale_secs.clamp(0, 10_000_000),
            unplaced = unplaced_secs.clamp(0, 10_000_000),
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(worker.to_owned())
            .bind(now_us)
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing stale attempts"))?;
        self.with_calls(&rows).await
    }

    async fn jobs_with_calls(&self, sql: String) -> Result<Vec<(DialJob, Call)>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing attempts"))?;
        self.with_calls(&rows).await
    }

    /// The jobs of `rows`, each with its attempt's call.
    async fn with_calls(
        &self,
        rows: &[sqlx::any::AnyRow],
    ) -> Result<Vec<(DialJob, Call)>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let job = job_row(row)?;
            let Some(call_id) = &job.call_id else {
                continue;
            };
            let id = CallId(parse_uuid("dial_jobs.call_id", call_id)?);
            if let Some(call) = self.get_call(Scope::Super, id).await? {
                out.push((job, call));
            }
        }
        Ok(out)
    }

    /// Up to `limit` `claimed` or `dialing` jobs whose lease expired before `now_us`.
    pub async fn expired_leases(
        &self,
        now_us: i64,
        limit: u32,
    ) -> Result<Vec<DialJob>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.state IN ('claimed', 'dialing') \
             AND j.lease_until_us < $1 ORDER BY j.lease_until_us LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now_us)
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing expired leases"))?;
        rows.iter().map(job_row).collect()
    }

    /// A `claimed` job whose lease expired before `now_us` goes back `pending` (nothing was
    /// sent), its slot freed. `false` when it moved on or the lease was renewed.
    pub async fn take_over_claimed(&self, job_id: &str, now_us: i64) -> Result<bool, StoreError> {
        let mut tx = self.write_tx("taking over a job").await?;
        let row = sqlx::query(
            "UPDATE dial_jobs SET state = 'pending', lease_owner = NULL, lease_until_us = NULL, \
             updated_us = $1 WHERE id = $2 AND state = 'claimed' AND lease_until_us < $1 \
             RETURNING campaign_id, tenant_id",
        )
        .bind(now_us)
        .bind(job_id.to_owned())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("taking over a job"))?;
        free_slot(tx, row).await
    }

    /// `worker` takes the lease of a `dialing` job whose lease expired before `now_us` (its
    /// attempt is then settled by this worker), until `lease_until_us`. `false` when another
    /// worker took it first or it moved on.
    pub async fn adopt_dialing(
        &self,
        job_id: &str,
        worker: &str,
        now_us: i64,
        lease_until_us: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE dial_jobs SET lease_owner = $1, lease_until_us = $2, updated_us = $3 \
             WHERE id = $4 AND state = 'dialing' AND lease_until_us < $3",
        )
        .bind(worker.to_owned())
        .bind(lease_until_us)
        .bind(now_us)
        .bind(job_id.to_owned())
        .execute(self.pool())
        .await
        .map_err(StoreError::db("adopting an attempt"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The job `id`, with its campaign's settings.
    pub async fn dial_job(&self, id: &str) -> Result<Option<DialJob>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a dial job"))?;
        row.as_ref().map(job_row).transpose()
    }

    /// Claims up to `limit` jobs whose SMS fallback is `due` for `worker` (`sending`, leased
    /// until `lease_until_us`).
    pub async fn claim_sms(
        &self,
        worker: &str,
        lease_until_us: i64,
        limit: u32,
    ) -> Result<Vec<DialJob>, StoreError> {
        let mut tx = self.write_tx("claiming text messages").await?;
        let sql = format!(
            "WITH picked AS {}(SELECT id FROM dial_jobs WHERE sms_state = 'due' LIMIT {}{}) \
             UPDATE dial_jobs SET sms_state = 'sending', lease_owner = $1, lease_until_us = $2, \
             updated_us = $3 WHERE sms_state = 'due' AND id IN (SELECT id FROM picked) \
             RETURNING id",
            self.materialized(),
            limit.clamp(1, 1000),
            self.skip_locked()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(worker.to_owned())
            .bind(lease_until_us)
            .bind(now_us())
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db("claiming text messages"))?;
        let ids = rows
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()
            .map_err(StoreError::db("reading claimed text messages"))?;
        let jobs = jobs_by_ids(&mut tx, &ids).await?;
        tx.commit()
            .await
            .map_err(StoreError::db("committing text message claims"))?;
        Ok(jobs)
    }

    /// Records how the SMS fallback `worker` was sending for `job_id` ended. `false` when it
    /// was not `sending` under `worker`.
    pub async fn finish_sms(
        &self,
        job_id: &str,
        worker: &str,
        result: &SmsResult,
    ) -> Result<bool, StoreError> {
        let (state, sid) = match result {
            SmsResult::Sent(sid) => ("sent", Some(sid.clone())),
            SmsResult::Failed => ("failed", None),
            SmsResult::Unknown => ("unknown", None),
        };
        let done = sqlx::query(
            "UPDATE dial_jobs SET sms_state = $1, sms_sid = $2, lease_owner = NULL, \
             lease_until_us = NULL, updated_us = $3 WHERE id = $4 AND sms_state = 'sending' \
             AND lease_owner = $5",
        )
        .bind(state)
        .bind(sid)
        .bind(now_us())
        .bind(job_id.to_owned())
        .bind(worker.to_owned())
        .execute(self.pool())
        .await
        .map_err(StoreError::db("recording a text message"))?;
        Ok(done.rows_affected() == 1)
    }

    /// SMS sends whose lease expired before `now_us` become `unknown`: the message may have
    /// gone out, so it is never sent again. Returns how many.
    pub async fn expire_sms(&self, now_us: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE dial_jobs SET sms_state = 'unknown', lease_owner = NULL, \
             lease_until_us = NULL, updated_us = $1 WHERE sms_state = 'sending' \
             AND lease_until_us < $1",
        )
        .bind(now_us)
        .execute(self.pool())
        .await
        .map_err(StoreError::db("expiring text messages"))?;
        Ok(done.rows_affected())
    }
}

/// Frees the slot of the job a transition `row` (`campaign_id`, `tenant_id`) moved, and
/// commits; `false` (rolled back) when the transition matched no job.
async fn free_slot(mut tx: Tx, row: Option<sqlx::any::AnyRow>) -> Result<bool, StoreError> {
    let Some(row) = row else {
        tx.rollback()
            .await
            .map_err(StoreError::db("ending a job transition"))?;
        return Ok(false);
    };
    let campaign: String = row
        .try_get(0)
        .map_err(StoreError::db("reading a job transition"))?;
    let tenant: String = row
        .try_get(1)
        .map_err(StoreError::db("reading a job transition"))?;
    adjust_live(&mut tx, &campaign, &tenant, -1).await?;
    tx.commit()
        .await
        .map_err(StoreError::db("committing a job transition"))?;
    Ok(true)
}

/// The jobs `ids` with their campaigns, read inside `tx`.
async fn jobs_by_ids(tx: &mut Tx, ids: &[String]) -> Result<Vec<DialJob>, StoreError> {
    let mut jobs = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.id IN ({}) ORDER BY j.due_us, j.position",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.clone());
        }
        let rows = query
            .fetch_all(&mut **tx)
            .await
            .map_err(StoreError::db("reading dial jobs"))?;
        for row in &rows {
            jobs.push(job_row(row)?);
        }
    }
    Ok(jobs)
}
