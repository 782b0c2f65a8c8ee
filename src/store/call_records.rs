//! The control plane's call records: creating a call with its agent, variables and
//! idempotency key; finding calls by carrier SID or key; listing with filters (newest first,
//! keyset cursor); recording what carriers report (status, verdict, duration, recording, error).

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row};

use super::calls::{CALL_COLUMNS, Call, CallStatus, Direction, NewCall, call_row};
use super::catalog::PhoneNumber;
use super::{Scope, Store, StoreError, TenantId, now_us};
use crate::call::CallId;

/// What the control plane adds to a new call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSetup {
    /// The agent that serves it.
    pub agent: String,
    /// The tenant script version it runs.
    pub script_id: Option<String>,
    /// Template variables.
    pub variables: BTreeMap<String, String>,
    /// The API client's `Idempotency-Key` (unique per tenant).
    pub idempotency_key: Option<String>,
    /// A digest of the request that created the call (to tell a replay from a reuse).
    pub request_hash: Option<String>,
}

/// What [`Store::create_call_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new call.
    New(Call),
    /// A call already had this idempotency key (or carrier SID); `request_hash` is the hash
    /// it was created with.
    Existing {
        /// The stored call.
        call: Call,
        /// The hash of the request that created it.
        request_hash: Option<String>,
    },
}

/// Filters of a call listing (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls in this status.
    pub status: Option<CallStatus>,
    /// Only calls this way.
    pub direction: Option<Direction>,
    /// Only calls to this number (E.164).
    pub to: Option<String>,
    /// Only calls from this number (E.164).
    pub from: Option<String>,
    /// Created at or after (µs).
    pub created_after_us: Option<i64>,
    /// Created before (µs).
    pub created_before_us: Option<i64>,
    /// Keyset cursor: only calls older than this one.
    pub before: Option<CallCursor>,
}

/// Where a newest-first listing stopped: the last call's creation time and id. Clients see it
/// as the opaque text `"{created_us}.{id}"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCursor {
    /// The last call's creation time (µs).
    pub created_us: i64,
    /// The last call's id.
    pub id: CallId,
}

impl CallCursor {
    /// The cursor after `call`.
    pub fn after(call: &Call) -> Self {
        CallCursor {
            created_us: call.created_us,
            id: call.id,
        }
    }

    /// Parses the text form; `None` when it is not one.
    pub fn parse(text: &str) -> Option<CallCursor> {
        let (time, id) = text.split_once('.')?;
        Some(CallCursor {
            created_us: time.parse().ok()?,
            id: CallId(uuid::Uuid::parse_str(id).ok()?),
        })
    }
}

impl std::fmt::Display for CallCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_us, self.id)
    }
}

/// What a carrier reported about a call (each field left alone when `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CarrierReport {
    /// The carrier's call id.
    pub carrier_sid: Option<String>,
    /// Answering-machine verdict.
    pub answered_by: Option<String>,
    /// Length in seconds.
    pub duration_secs: Option<i64>,
    /// Recording URL.
    pub recording_url: Option<String>,
    /// An error to record.
    pub error: Option<String>,
}

/// A bound value of a built query.
enum Param {
    Text(String),
    Int(i64),
}

impl Store {
    /// Creates `new` for `tenant` (`queued`) with `setup`. A call that already has the same
    /// idempotency key for this tenant, or the same carrier and carrier SID (a replayed
    /// webhook), is returned as [`Created::Existing`] instead.
    pub async fn create_call_with(
        &self,
        tenant: TenantId,
        new: &NewCall,
        setup: &CallSetup,
    ) -> Result<Created, StoreError> {
        if let Some(existing) = self.find_duplicate(tenant, new, setup).await? {
            return Ok(existing);
        }
        let now = now_us();
        let id = CallId::new();
        let variables = serde_json::to_string(&setup.variables)
            .map_err(|e| StoreError::Invalid(format!("variables: {e}")))?;
        let inserted = sqlx::query(
            "INSERT INTO calls (id, tenant_id, direction, status, from_number, to_number, carrier, \
             carrier_sid, created_us, updated_us, agent, script_id, variables, idempotency_key, \
             request_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(new.direction.as_str())
        .bind(CallStatus::Queued.as_str())
        .bind(new.from.clone())
        .bind(new.to.clone())
        .bind(new.carrier.clone())
        .bind(new.carrier_sid.clone())
        .bind(now)
        .bind(now)
        .bind(setup.agent.clone())
        .bind(setup.script_id.clone())
        .bind(variables)
        .bind(setup.idempotency_key.clone())
        .bind(setup.request_hash.clone())
        .execute(self.pool())
        .await
        .map_err(StoreError::db("creating a call"));
        match inserted {
            Ok(_) => {}
            // Lost a race with the same key or SID: the winner's call is the answer.
            Err(StoreError::Conflict(_)) => {
                return self
                    .find_duplicate(tenant, new, setup)
                    .await?
                    .ok_or(StoreError::Conflict("call"));
            }
            Err(e) => return Err(e),
        }
        let call = self
            .get_call(Scope::Tenant(tenant), id)
            .await?
            .ok_or(StoreError::NotFound("call"))?;
        Ok(Created::New(call))
    }

    async fn find_duplicate(
        &self,
        tenant: TenantId,
        new: &NewCall,
        setup: &CallSetup,
    ) -> Result<Option<Created>, StoreError> {
        if let Some(key) = &setup.idempotency_key
            && let Some((call, request_hash)) = self.call_by_idempotency_key(tenant, key).await?
        {
            return Ok(Some(Created::Existing { call, request_hash }));
        }
        if let Some(sid) = &new.carrier_sid
            && let Some(call) = self.find_call_by_sid(&new.carrier, sid).await?
        {
            return Ok(Some(Created::Existing {
                call,
                request_hash: None,
            }));
        }
        Ok(None)
    }

    /// `tenant`'s call created with idempotency key `key`, with its request hash.
    pub async fn call_by_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<(Call, Option<String>)>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CALL_COLUMNS}, request_hash FROM calls \
             WHERE tenant_id = $1 AND idempotency_key = $2"
        )))
        .bind(tenant.to_string())
        .bind(key.to_owned())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::db("looking up an idempotency key"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let request_hash: Option<String> =
            row.try_get(20).map_err(StoreError::db("reading a call"))?;
        Ok(Some((call_row(&row)?, request_hash)))
    }

    /// The number `id` in `scope`.
    pub async fn phone_number_by_id(
        &self,
        scope: Scope,
        id: uuid::Uuid,
    ) -> Result<Option<PhoneNumber>, StoreError> {
        let sql = format!(
            "SELECT e164 FROM phone_numbers WHERE id = $1{}",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("looking up a phone number"))?;
        match row {
            Some(row) => {
                let e164: String = row
                    .try_get(0)
                    .map_err(StoreError::db("reading a phone number"))?;
                self.find_phone_number(scope, &e164).await
            }
            None => Ok(None),
        }
    }

    /// The call a carrier knows as `sid`, in any tenant (for the carrier's webhooks).
    pub async fn find_call_by_sid(
        &self,
        carrier: &str,
        sid: &str,
    ) -> Result<Option<Call>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE carrier = $1 AND carrier_sid = $2"
        )))
        .bind(carrier.to_string())
        .bind(sid.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::db("looking up a carrier call"))?;
        row.as_ref().map(call_row).transpose()
    }

    /// The calls `scope` sees that match `filter`, newest first, at most `limit` (≤ 1000).
    pub async fn search_calls(
        &self,
        scope: Scope,
        filter: &CallFilter,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        let add = |params: &mut Vec<Param>, value: Param| {
            params.push(value);
            format!("${}", params.len())
        };
        if let Some(status) = filter.status {
            let p = add(&mut params, Param::Text(status.as_str().to_owned()));
            clauses.push(format!("status = {p}"));
        }
        if let Some(direction) = filter.direction {
            let p = add(&mut params, Param::Text(direction.as_str().to_owned()));
            clauses.push(format!("direction = {p}"));
        }
        if let Some(to) = &filter.to {
            let p = add(&mut params, Param::Text(to.clone()));
            clauses.push(format!("to_number = {p}"));
        }
        if let Some(from) = &filter.from {
            let p = add(&mut params, Param::Text(from.clone()));
            clauses.push(format!("from_number = {p}"));
        }
        if let Some(after) = filter.created_after_us {
            let p = add(&mut params, Param::Int(after));
            clauses.push(format!("created_us >= {p}"));
        }
        if let Some(before) = filter.created_before_us {
            let p = add(&mut params, Param::Int(before));
            clauses.push(format!("created_us < {p}"));
        }
        if let Some(cursor) = filter.before {
            let older = add(&mut params, Param::Int(cursor.created_us));
            let same = add(&mut params, Param::Int(cursor.created_us));
            let id = add(&mut params, Param::Text(cursor.id.to_string()));
            clauses.push(format!(
                "(created_us < {older} OR (created_us = {same} AND id < {id}))"
            ));
        }
        let tenant = scope.filter("tenant_id", params.len() + 1);
        let filters: String = clauses.iter().map(|c| format!(" AND {c}")).collect();
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE 1 = 1{filters}{tenant} \
             ORDER BY created_us DESC, id DESC LIMIT {}",
            limit.clamp(1, 1000)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for param in params {
            query = match param {
                Param::Text(value) => query.bind(value),
                Param::Int(value) => query.bind(value),
            };
        }
        let rows = scope
            .bind(query)
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing calls"))?;
        rows.iter().map(call_row).collect()
    }

    /// Records what a carrier reported (fields left alone when `None`); `NotFound` when the
    /// call is not in `scope`.
    pub async fn record_carrier_report(
        &self,
        scope: Scope,
        id: CallId,
        report: &CarrierReport,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE calls SET carrier_sid = COALESCE($1, carrier_sid), \
             answered_by = COALESCE($2, answered_by), recording_url = COALESCE($3, recording_url), \
             error = COALESCE($4, error), duration_secs = COALESCE($5, duration_secs), \
             updated_us = $6 WHERE id = $7{}",
            scope.filter("tenant_id", 8)
        );
        let done = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(report.carrier_sid.clone())
                    .bind(report.answered_by.clone())
                    .bind(report.recording_url.clone())
                    .bind(report.error.clone())
                    .bind(report.duration_secs)
                    .bind(now_us())
                    .bind(id.to_string()),
            )
            .execute(self.pool())
            .await
            .map_err(StoreError::db("recording a carrier report"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("call"));
        }
        Ok(())
    }

    /// Moves a call towards `status` along the lifecycle, never backwards: a status it may
    /// not reach from where it is (already final, or further on) leaves it as it is. A call
    /// that ends `completed` before it was seen answered passes through `in_progress`. Returns
    /// the call as it is now.
    pub async fn advance_call_status(
        &self,
        scope: Scope,
        id: CallId,
        status: CallStatus,
    ) -> Result<Call, StoreError> {
        let call = self
            .get_call(scope, id)
            .await?
            .ok_or(StoreError::NotFound("call"))?;
        if call.status == status || !call.status.can_move_to(status) {
            if status == CallStatus::Completed
                && matches!(call.status, CallStatus::Queued | CallStatus::Ringing)
            {
                self.move_if_allowed(scope, id, CallStatus::InProgress)
                    .await?;
                return self.move_if_allowed(scope, id, status).await;
            }
            return Ok(call);
        }
        self.move_if_allowed(scope, id, status).await
    }

    async fn move_if_allowed(
        &self,
        scope: Scope,
        id: CallId,
        status: CallStatus,
    ) -> Result<Call, StoreError> {
        match self.set_call_status(scope, id, status).await {
            Ok(call) => Ok(call),
            // Someone else moved it first: keep what is there.
            Err(StoreError::Invalid(_)) => self
                .get_call(scope, id)
                .await?
                .ok_or(StoreError::NotFound("call")),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_cursors_round_trip_and_refuse_junk() {
        let cursor = CallCursor {
            created_us: 1_700_000_000_000_001,
            id: CallId(uuid::Uuid::now_v7()),
        };
        assert_eq!(CallCursor::parse(&cursor.to_string()), Some(cursor));
        assert_eq!(CallCursor::parse("12"), None);
        assert_eq!(CallCursor::parse("x.y"), None);
        assert_eq!(CallCursor::parse("12.not-a-uuid"), None);
    }
}
