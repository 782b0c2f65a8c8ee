//! CallEvents recorded by the control plane, and a call's events read in time order.
//!
//! The session numbers its events 1, 2, 3 …; the control plane's (carrier status callbacks,
//! answering-machine verdicts, dial failures, cancels) are numbered [`CONTROL_SEQ_BASE`] + n,
//! n from the call's `control_seq` counter, incremented in the same transaction as the insert.
//! An event identical to one already recorded for the call (same type and data, e.g. a
//! replayed carrier callback) is not recorded twice.
//!
//! Reads go by (`at_us`, `seq`), i.e. chronologically, with an opaque [`EventCursor`]
//! `"{at_us}.{seq}"` naming the last event read.

use sqlx::{AssertSqlSafe, Row};

use super::calls::EventRow;
use super::{Scope, Store, StoreError, now_us};
use crate::call::CallId;

/// The first control-plane event number of every call (2^40): far above any session's.
pub const CONTROL_SEQ_BASE: i64 = 1 << 40;

/// Where a read of a call's events stopped: the last event's time and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct EventCursor {
    /// The event's time (µs).
    pub at_us: i64,
    /// The event's number.
    pub seq: i64,
}

impl EventCursor {
    /// The cursor just after `row`.
    pub fn of(row: &EventRow) -> Self {
        EventCursor {
            at_us: row.at_us,
            seq: row.seq,
        }
    }

    /// Parses `"{at_us}.{seq}"`; `None` when `text` is not one.
    pub fn parse(text: &str) -> Option<EventCursor> {
        let (at, seq) = text.split_once('.')?;
        Some(EventCursor {
            at_us: at.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.at_us, self.seq)
    }
}

impl Store {
    /// Records a control-plane event `kind` with `data` (a JSON object) on call `id` in
    /// `scope`. Returns the stored row, or `None` when an identical event was already
    /// recorded. `NotFound` when the call is not in `scope`.
    pub async fn record_control_event(
        &self,
        scope: Scope,
        id: CallId,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<Option<EventRow>, StoreError> {
        let data = data.to_string();
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::db("starting a control event"))?;
        // The counter's update also locks the call's row: concurrent recorders queue here.
        let sql = format!(
            "UPDATE calls SET control_seq = control_seq + 1 WHERE id = $1{} RETURNING control_seq",
            scope.filter("tenant_id", 2)
        );
        let row = scope
            .bind(sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()))
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("numbering a control event"))?
            .ok_or(StoreError::NotFound("call"))?;
        let n: i64 = row
            .try_get(0)
            .map_err(StoreError::db("numbering a control event"))?;
        let duplicate = sqlx::query(
            "SELECT seq FROM call_events WHERE call_id = $1 AND seq >= $2 AND type = $3 \
             AND data = $4 LIMIT 1",
        )
        .bind(id.to_string())
        .bind(CONTROL_SEQ_BASE)
        .bind(kind.to_owned())
        .bind(data.clone())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("checking a control event"))?;
        if duplicate.is_some() {
            tx.rollback()
                .await
                .map_err(StoreError::db("ending a control event"))?;
            return Ok(None);
        }
        let event = EventRow {
            call_id: id.to_string(),
            seq: CONTROL_SEQ_BASE + n,
            at_us: now_us(),
            kind: kind.to_owned(),
            data,
        };
        sqlx::query(
            "INSERT INTO call_events (call_id, seq, at_us, type, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(event.call_id.clone())
        .bind(event.seq)
        .bind(event.at_us)
        .bind(event.kind.clone())
        .bind(event.data.clone())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("recording a control event"))?;
        tx.commit()
            .await
            .map_err(StoreError::db("recording a control event"))?;
        Ok(Some(event))
    }

    /// Call `id`'s events in `scope` in time order (`at_us`, then `seq`), after `after`, at
    /// most `limit` (≤ 10 000). A tenant sees only the events of its own calls.
    pub async fn call_events_page(
        &self,
        scope: Scope,
        id: CallId,
        after: Option<EventCursor>,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let after = after.unwrap_or(EventCursor {
            at_us: i64::MIN,
            seq: i64::MIN,
        });
        let (join, tenant) = match scope {
            Scope::Super => ("", String::new()),
            Scope::Tenant(_) => (
                " JOIN calls c ON c.id = e.call_id",
                scope.filter("c.tenant_id", 5),
            ),
        };
        let sql = format!(
            "SELECT e.call_id, e.seq, e.at_us, e.type, e.data FROM call_events e{join} \
             WHERE e.call_id = $1 AND (e.at_us > $2 OR (e.at_us = $3 AND e.seq > $4)){tenant} \
             ORDER BY e.at_us, e.seq LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let rows = scope
            .bind(
                sqlx::query(AssertSqlSafe(sql))
                    .bind(id.to_string())
                    .bind(after.at_us)
                    .bind(after.at_us)
                    .bind(after.seq),
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
    fn cursors_order_by_time_then_number() {
        let a = EventCursor { at_us: 5, seq: 9 };
        let b = EventCursor {
            at_us: 6,
            seq: CONTROL_SEQ_BASE + 1,
        };
        assert!(a < b);
        assert_eq!(EventCursor::parse(&b.to_string()), Some(b));
        assert_eq!(EventCursor::parse("5"), None);
        assert_eq!(EventCursor::parse("a.b"), None);
    }
}
