//! Call status from the event stream: a call's `stream_started` and `call_ended` CallEvents
//! move its row in `calls` along the status lifecycle (see [`CallStatus::predecessors`]).
//!
//! `stream_started` makes a call `in_progress` (and sets `answered_us`, from the event's time,
//! if unset); `call_ended` makes it `completed` with `ended_us` and its `outcome` (the end
//! reason). A call that may not move (already final, or not yet answered) keeps its status;
//! `call_ended` still fills an empty `outcome`. Events of streams nobody created (ids not in
//! `calls`) change nothing and are counted. Every statement is idempotent, so replaying a batch
//! is harmless. An `amd` event (the session's answering-machine verdict) sets the call's
//! `answered_by`. Only these kinds of event cost a query.

use sqlx::AssertSqlSafe;

use super::calls::{CallStatus, EventRow};
use super::{Store, StoreError, now_us};

/// The event that marks a call answered.
pub const STREAM_STARTED: &str = "stream_started";
/// The event that marks a call ended.
pub const CALL_ENDED: &str = "call_ended";
/// The event that gives a call's answering-machine verdict.
pub const AMD: &str = "amd";

/// What applying a batch's lifecycle events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleApplied {
    /// Lifecycle events whose call is in `calls`.
    pub applied: u64,
    /// Lifecycle events for ids not in `calls` (skipped).
    pub unknown_calls: u64,
}

/// `'a', 'b'` for the statuses a call may move to `status` from.
fn from_list(status: CallStatus) -> String {
    status
        .predecessors()
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The end reason in a `call_ended` event's data, if it has one.
fn end_reason(data: &str) -> Option<String> {
    data_field(data, "reason")
}

/// The string field `name` of an event's data, if it has one.
fn data_field(data: &str, name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    value.get(name)?.as_str().map(str::to_owned)
}

impl Store {
    /// Applies the `stream_started` and `call_ended` events among `rows` (in order) to their
    /// calls' status.
    pub async fn apply_lifecycle(&self, rows: &[EventRow]) -> Result<LifecycleApplied, StoreError> {
        let mut result = LifecycleApplied::default();
        for row in rows {
            let matched = match row.kind.as_str() {
                STREAM_STARTED => self.mark_answered(row).await?,
                CALL_ENDED => self.mark_ended(row).await?,
                AMD => self.mark_answered_by(row).await?,
                _ => continue,
            };
            if matched {
                result.applied += 1;
            } else {
                result.unknown_calls += 1;
            }
        }
        Ok(result)
    }

    /// `in_progress` where allowed, `answered_us` if unset; true when the call exists.
    async fn mark_answered(&self, row: &EventRow) -> Result<bool, StoreError> {
        let from = from_list(CallStatus::InProgress);
        let to = CallStatus::InProgress.as_str();
        // Every SET expression reads the row as it was, so `status` below is the old status.
        let sql = format!(
            "UPDATE calls SET \
             answered_us = CASE WHEN status IN ({from}, '{to}') THEN COALESCE(answered_us, $1) \
                           ELSE answered_us END, \
             updated_us = CASE WHEN status IN ({from}) \
                          OR (status = '{to}' AND answered_us IS NULL) THEN $2 ELSE updated_us END, \
             status = CASE WHEN status IN ({from}) THEN '{to}' ELSE status END \
             WHERE id = $3"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(row.at_us)
            .bind(now_us())
            .bind(row.call_id.clone())
            .execute(self.pool())
            .await
            .map_err(StoreError::db("marking a call answered"))?;
        Ok(done.rows_affected() > 0)
    }

    /// `answered_by` from an `amd` event's verdict; true when the call exists.
    async fn mark_answered_by(&self, row: &EventRow) -> Result<bool, StoreError> {
        let Some(verdict) = data_field(&row.data, "verdict") else {
            return Ok(true);
        };
        let done = sqlx::query("UPDATE calls SET answered_by = $1, updated_us = $2 WHERE id = $3")
            .bind(verdict)
            .bind(now_us())
            .bind(row.call_id.clone())
            .execute(self.pool())
            .await
            .map_err(StoreError::db(
                "recording a call's answering-machine verdict",
            ))?;
        Ok(done.rows_affected() > 0)
    }

    /// `completed` with `ended_us` where allowed, `outcome` if empty; true when the call
    /// exists.
    async fn mark_ended(&self, row: &EventRow) -> Result<bool, StoreError> {
        let from = from_list(CallStatus::Completed);
        let to = CallStatus::Completed.as_str();
        let outcome = end_reason(&row.data);
        let sql = format!(
            "UPDATE calls SET \
             ended_us = CASE WHEN status IN ({from}) THEN COALESCE(ended_us, $1) \
                        ELSE ended_us END, \
             updated_us = CASE WHEN status IN ({from}) \
                          OR (outcome IS NULL AND $2 IS NOT NULL) THEN $3 ELSE updated_us END, \
             outcome = COALESCE(outcome, $2), \
             status = CASE WHEN status IN ({from}) THEN '{to}' ELSE status END \
             WHERE id = $4"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(row.at_us)
            .bind(outcome)
            .bind(now_us())
            .bind(row.call_id.clone())
            .execute(self.pool())
            .await
            .map_err(StoreError::db("marking a call ended"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_reason_comes_from_the_event_data() {
        assert_eq!(
            end_reason(r#"{"reason":"carrier_stop","duration_ms":5}"#).as_deref(),
            Some("carrier_stop")
        );
        assert_eq!(end_reason(r#"{"duration_ms":5}"#), None);
        assert_eq!(end_reason("not json"), None);
    }

    #[test]
    fn the_lists_follow_the_lifecycle() {
        assert_eq!(from_list(CallStatus::InProgress), "'queued', 'ringing'");
        assert_eq!(from_list(CallStatus::Completed), "'in_progress'");
    }
}
