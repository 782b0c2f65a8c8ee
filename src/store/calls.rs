//! Calls (direction, status lifecycle, carrier SID, outcome, recording) and their append-only
//! CallEvents.
//!
//! **Event numbering.** A call's session numbers its CallEvents 1, 2, 3 …; the control plane
//! records events of its own (carrier status callbacks, answering-machine verdicts, dial
//! failures, cancels) numbered from [`CONTROL_SEQ_BASE`] (2^40) with a per-call counter
//! (`calls.control_seq`, incremented in the same transaction as the insert, see
//! [`super::control_events`]), so the two never collide.
//!
//! **Event order.** The events API reads a call's events chronologically, by (`at_us`, `seq`),
//! so control-plane events fall between the session's where they happened. Its cursor is
//! opaque to clients: `"{at_us}.{seq}"` of the last event read ([`EventCursor`]).

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row};

use super::{Scope, Store, StoreError, TenantId, now_us, parse_uuid};
use crate::call::CallId;

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The caller dialled one of the tenant's numbers.
    Inbound,
    /// The gateway dialled out.
    Outbound,
}

impl Direction {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Where a call is in its life: `queued → ringing → in_progress → completed`, or one of the
/// ends `failed`, `busy`, `no_answer`, `canceled` before it is answered (`failed` also after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Created, not yet handed to the carrier.
    Queued,
    /// The carrier is ringing the other side.
    Ringing,
    /// Answered; media flows.
    InProgress,
    /// Ended after being answered.
    Completed,
    /// The carrier or the gateway failed.
    Failed,
    /// The line was busy.
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// Cancelled before it was answered.
    Canceled,
}

impl CallStatus {
    const ALL: [CallStatus; 8] = [
        CallStatus::Queued,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Completed,
        CallStatus::Failed,
        CallStatus::Busy,
        CallStatus::NoAnswer,
        CallStatus::Canceled,
    ];

    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in_progress",
            CallStatus::Completed => "completed",
            CallStatus::Failed => "failed",
            CallStatus::Busy => "busy",
            CallStatus::NoAnswer => "no_answer",
            CallStatus::Canceled => "canceled",
        }
    }

    /// Parses a stored label.
    pub fn parse(s: &str) -> Option<CallStatus> {
        CallStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The call is over.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            CallStatus::Queued | CallStatus::Ringing | CallStatus::InProgress
        )
    }

    /// The statuses a call may move to `self` from.
    pub fn predecessors(self) -> &'static [CallStatus] {
        use CallStatus::*;
        match self {
            Queued => &[],
            Ringing => &[Queued],
            InProgress => &[Queued, Ringing],
            Completed => &[InProgress],
            Failed => &[Queued, Ringing, InProgress],
            Busy | NoAnswer | Canceled => &[Queued, Ringing],
        }
    }

    /// Whether a call may move from `self` to `next`.
    pub fn can_move_to(self, next: CallStatus) -> bool {
        next.predecessors().contains(&self)
    }
}

/// A new call's details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    /// Direction.
    pub direction: Direction,
    /// Caller (E.164).
    pub from: String,
    /// Callee (E.164).
    pub to: String,
    /// Carrier name (`twilio`, `exotel`).
    pub carrier: String,
    /// The carrier's call id, when already known.
    pub carrier_sid: Option<String>,
}

/// A stored call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Id (the gateway's call id).
    pub id: CallId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Direction.
    pub direction: Direction,
    /// Status.
    pub status: CallStatus,
    /// Caller (E.164).
    pub from: String,
    /// Callee (E.164).
    pub to: String,
    /// Carrier.
    pub carrier: String,
    /// The carrier's call id.
    pub carrier_sid: Option<String>,
    /// Outcome label (from the script or agent).
    pub outcome: Option<String>,
    /// Recording URL.
    pub recording_url: Option<String>,
    /// Created (µs).
    pub created_us: i64,
    /// Last change (µs).
    pub updated_us: i64,
    /// Answered (µs).
    pub answered_us: Option<i64>,
    /// Ended (µs).
    pub ended_us: Option<i64>,
    /// The agent that serves it (`script:<name>`, `llm`, `echo`); empty when not recorded.
    pub agent: String,
    /// The tenant script version it runs.
    pub script_id: Option<String>,
    /// Template variables.
    pub variables: BTreeMap<String, String>,
    /// Answering-machine verdict (`human`, `machine_start`, …).
    pub answered_by: Option<String>,
    /// The last error (a carrier refusal, an unreachable carrier).
    pub error: Option<String>,
    /// The call's length as the carrier reports it (seconds).
    pub duration_secs: Option<i64>,
}

/// A stored CallEvent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventRow {
    /// The call.
    pub call_id: String,
    /// 1, 2, 3 … within the call.
    pub seq: i64,
    /// Microseconds since the Unix epoch.
    pub at_us: i64,
    /// The event's type (`dtmf`, `call_ended`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's fields (JSON object text, without `type`).
    pub data: String,
}

/// The error for an event that cannot be stored.
#[derive(Debug, thiserror::Error)]
#[error("event {call_id}#{seq} cannot be stored: {reason}")]
pub struct UnstorableEvent {
    /// Call.
    pub call_id: CallId,
    /// Sequence number.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

impl EventRow {
    /// The row for a CallEvent.
    pub fn from_event(event: &crate::call::events::CallEvent) -> Result<EventRow, UnstorableEvent> {
        let fail = |reason: String| UnstorableEvent {
            call_id: event.call_id,
            seq: event.seq,
            reason,
        };
        let mut value = serde_json::to_value(&event.kind).map_err(|e| fail(e.to_string()))?;
        let kind = match value.as_object_mut().and_then(|o| o.remove("type")) {
            Some(serde_json::Value::String(kind)) => kind,
            _ => return Err(fail("no type tag".into())),
        };
        Ok(EventRow {
            call_id: event.call_id.to_string(),
            seq: i64::try_from(event.seq).map_err(|_| fail("seq out of range".into()))?,
            at_us: i64::try_from(event.at_us).map_err(|_| fail("time out of range".into()))?,
            kind,
            data: value.to_string(),
        })
    }
}

pub(crate) const CALL_COLUMNS: &str = "id, tenant_id, direction, status, from_number, \
    to_number, carrier, carrier_sid, outcome, recording_url, created_us, updated_us, answered_us, \
    ended_us, agent, script_id, variables, answered_by, error, duration_secs";

pub(crate) fn call_row(row: &sqlx::any::AnyRow) -> Result<Call, StoreError> {
    let get = |e| StoreError::db("reading a call")(e);
    let direction: String = row.try_get(2).map_err(get)?;
    let status: String = row.try_get(3).map_err(get)?;
    Ok(Call {
        id: CallId(parse_uuid(
            "calls.id",
            &row.try_get::<String, _>(0).map_err(get)?,
        )?),
        tenant_id: TenantId(parse_uuid(
            "calls.tenant_id",
            &row.try_get::<String, _>(1).map_err(get)?,
        )?),
        direction: match direction.as_str() {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            _ => {
                return Err(StoreError::Corrupt {
                    column: "calls.direction",
                    value: direction,
                });
            }
        },
        status: CallStatus::parse(&status).ok_or(StoreError::Corrupt {
            column: "calls.status",
            value: status.clone(),
        })?,
        from: row.try_get(4).map_err(get)?,
        to: row.try_get(5).map_err(get)?,
        carrier: row.try_get(6).map_err(get)?,
        carrier_sid: row.try_get(7).map_err(get)?,
        outcome: row.try_get(8).map_err(get)?,
        recording_url: row.try_get(9).map_err(get)?,
        created_us: row.try_get(10).map_err(get)?,
        updated_us: row.try_get(11).map_err(get)?,
        answered_us: row.try_get(12).map_err(get)?,
        ended_us: row.try_get(13).map_err(get)?,
        agent: row.try_get(14).map_err(get)?,
        script_id: row.try_get(15).map_err(get)?,
        variables: {
            let text: String = row.try_get(16).map_err(get)?;
            serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
                column: "calls.variables",
                value: text,
            })?
        },
        answered_by: row.try_get(17).map_err(get)?,
        error: row.try_get(18).map_err(get)?,
        duration_secs: row.try_get(19).map_err(get)?,
    })
}

/// `INSERT … VALUES ($1..$5), ($6..$10), … ON CONFLICT (call_id, seq) DO NOTHING` for `rows`.
pub(crate) fn insert_events_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO call_events (call_id, seq, at_us, type, data) VALUES ");
    for i in 0..rows {
        let b = i * 5;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    sql.push_str(" ON CONFLICT (call_id, seq) DO NOTHING");
    sql
}

impl Store {
    /// Creates a call for `tenant`, `queued`.
    pub async fn create_call(&self, tenant: TenantId, new: &NewCall) -> Result<Call, StoreError> {
        let now = now_us();
        let call = Call {
            id: CallId::new(),
            tenant_id: tenant,
            direction: new.direction,
            status: CallStatus::Queued,
            from: new.from.clone(),
            to: new.to.clone(),
            carrier: new.carrier.clone(),
            carrier_sid: new.carrier_sid.clone(),
            outcome: None,
            recording_url: None,
            created_us: now,
            updated_us: now,
            answered_us: None,
            ended_us: None,
            agent: String::new(),
            script_id: None,
            variables: BTreeMap::new(),
            answered_by: None,
            error: None,
            duration_secs: None,
        };
        sqlx::query(
            "INSERT INTO calls (id, tenant_id, direction, status, from_number, to_number, carrier, \
             carrier_sid, created_us, updated_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(call.id.to_string())
        .bind(tenant.to_string())
        .bind(call.direction.as_str())
        .bind(call.status.as_str())
        .bind(call.from.clone())
        .bind(call.to.clone())
        .bind(call.carrier.clone())
        .bind(call.carrier_sid.clone())
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(StoreError::db("creating a call"))?;
        Ok(call)
    }

    /// The call `id` if `scope` sees it.
    pub async fn get_call(&self, scope: Scope, id: CallId) -> Result<Option<Call>, StoreError> {
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE id = $1{}",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()))
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::db("reading a call"))?;
        row.as_ref().map(call_row).transpose()
    }

    /// The calls `scope` sees, oldest first, after `after` (a call id, for paging), at most
    /// `limit`.
    pub async fn list_calls(
        &self,
        scope: Scope,
        after: Option<CallId>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        // Ids are UUIDv7, so their text order is their creation order.
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE id > $1{} ORDER BY id LIMIT {}",
            scope.filter("tenant_id", 2),
            limit.min(1000)
        );
        let rows = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(after.map(|a| a.to_string()).unwrap_or_default()),
            )
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("listing calls"))?;
        rows.iter().map(call_row).collect()
    }

    /// Moves a call to `status` if the lifecycle allows it from where it is; sets the answer
    /// and end times as it goes. Returns the call as it is now.
    pub async fn set_call_status(
        &self,
        scope: Scope,
        id: CallId,
        status: CallStatus,
    ) -> Result<Call, StoreError> {
        let allowed = status
            .predecessors()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        if allowed.is_empty() {
            return Err(StoreError::Invalid(format!(
                "a call cannot return to {}",
                status.as_str()
            )));
        }
        let now = now_us();
        let answered = if status == CallStatus::InProgress {
            "$2"
        } else {
            "answered_us"
        };
        let ended = if status.is_final() { "$2" } else { "ended_us" };
        let sql = format!(
            "UPDATE calls SET status = $1, updated_us = $2, answered_us = {answered}, \
             ended_us = {ended} WHERE id = $3 AND status IN ({allowed}){}",
            scope.filter("tenant_id", 4)
        );
        let done = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(status.as_str())
                    .bind(now)
                    .bind(id.to_string()),
            )
            .execute(self.pool())
            .await
            .map_err(StoreError::db("updating a call's status"))?;
        let call = self
            .get_call(scope, id)
            .await?
            .ok_or(StoreError::NotFound("call"))?;
        if done.rows_affected() == 0 && call.status != status {
            return Err(StoreError::Invalid(format!(
                "a call cannot move from {} to {}",
                call.status.as_str(),
                status.as_str()
            )));
        }
        Ok(call)
    }

    /// Records a call's carrier id, outcome or recording (each left alone when `None`).
    pub async fn set_call_details(
        &self,
        scope: Scope,
        id: CallId,
        carrier_sid: Option<&str>,
        outcome: Option<&str>,
        recording_url: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE calls SET carrier_sid = COALESCE($1, carrier_sid), \
             outcome = COALESCE($2, outcome), recording_url = COALESCE($3, recording_url), \
             updated_us = $4 WHERE id = $5{}",
            scope.filter("tenant_id", 6)
        );
        let done = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(carrier_sid.map(str::to_string))
                    .bind(outcome.map(str::to_string))
                    .bind(recording_url.map(str::to_string))
                    .bind(now_us())
                    .bind(id.to_string()),
            )
            .execute(self.pool())
            .await
            .map_err(StoreError::db("updating a call"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("call"));
        }
        Ok(())
    }

    /// Appends events through the portable `Any` driver (one multi-row statement); an event
    /// already stored (same call and seq) is left as it is. Returns how many were new. The
    /// writer uses the faster per-backend [`Store::insert_events`]; this path is kept as the
    /// baseline `examples/event_ingest --stages` compares it with.
    pub async fn append_events(&self, rows: &[EventRow]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut query = sqlx::query(AssertSqlSafe(insert_events_sql(rows.len())));
        for row in rows {
            query = query
                .bind(row.call_id.clone())
                .bind(row.seq)
                .bind(row.at_us)
                .bind(row.kind.clone())
                .bind(row.data.clone());
        }
        let done = query
            .execute(self.pool())
            .await
            .map_err(StoreError::db("appending call events"))?;
        Ok(done.rows_affected())
    }

    /// A call's events in `scope`, in order, after `after_seq`, at most `limit`. A tenant sees
    /// only the events of its own calls.
    pub async fn call_events(
        &self,
        scope: Scope,
        call: CallId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let sql = match scope {
            Scope::Super => format!(
                "SELECT e.call_id, e.seq, e.at_us, e.type, e.data FROM call_events e \
                 WHERE e.call_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT {}",
                limit.min(10_000)
            ),
            Scope::Tenant(_) => format!(
                "SELECT e.call_id, e.seq, e.at_us, e.type, e.data FROM call_events e \
                 JOIN calls c ON c.id = e.call_id \
                 WHERE e.call_id = $1 AND e.seq > $2{} ORDER BY e.seq LIMIT {}",
                scope.filter("c.tenant_id", 3),
                limit.min(10_000)
            ),
        };
        let rows = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(call.to_string())
                    .bind(after_seq),
            )
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::db("reading call events"))?;
        rows.iter()
            .map(|row| {
                let get = |e| StoreError::db("reading a call event")(e);
                Ok(EventRow {
                    call_id: row.try_get(0).map_err(get)?,
                    seq: row.try_get(1).map_err(get)?,
                    at_us: row.try_get(2).map_err(get)?,
                    kind: row.try_get(3).map_err(get)?,
                    data: row.try_get(4).map_err(get)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_moves_forward_only() {
        use CallStatus::*;
        assert!(Queued.can_move_to(Ringing));
        assert!(Ringing.can_move_to(InProgress));
        assert!(InProgress.can_move_to(Completed));
        assert!(!Completed.can_move_to(InProgress));
        assert!(!InProgress.can_move_to(Busy));
        for s in CallStatus::ALL {
            assert!(!s.can_move_to(Queued));
            assert_eq!(CallStatus::parse(s.as_str()), Some(s));
            if s.is_final() {
                assert!(CallStatus::ALL.iter().all(|n| !s.can_move_to(*n)));
            }
        }
    }

    #[test]
    fn insert_sql_numbers_every_placeholder() {
        assert_eq!(
            insert_events_sql(2),
            "INSERT INTO call_events (call_id, seq, at_us, type, data) VALUES \
             ($1,$2,$3,$4,$5),($6,$7,$8,$9,$10) ON CONFLICT (call_id, seq) DO NOTHING"
        );
    }
}
