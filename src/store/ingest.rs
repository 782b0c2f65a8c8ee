//! Bulk insertion of CallEvent rows, the fastest way each backend offers, always idempotent
//! (`ON CONFLICT (call_id, seq) DO NOTHING`) and always one statement per batch, so a batch is
//! stored whole or not at all.
//!
//! - **PostgreSQL** goes through a typed [`PgPool`] of its own (the `Any` driver cannot bind
//!   arrays): one prepared statement, `INSERT … SELECT * FROM UNNEST($1::text[], $2::int8[],
//!   $3::int8[], $4::text[], $5::text[])`, five array binds in the binary protocol whatever the
//!   batch size. The multi-row `VALUES` statement it replaces had 5 parameters a row, a new
//!   statement for every batch size, and PostgreSQL parsed and planned all of them each time.
//!   Commits stay synchronous (`synchronous_commit` is the server's).
//! - **SQLite** takes a multi-row `VALUES` statement through the `Any` pool, with anonymous
//!   `?` placeholders. With numbered ones (`$1 … $5000`) the driver looks each parameter's name
//!   up before binding it, and SQLite finds a name by scanning the statement's whole list, so
//!   binding a batch cost time quadratic in its size (three quarters of the CPU at 1 000 rows).

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};

use super::calls::EventRow;
use super::{Store, StoreError};

/// The PostgreSQL statement: the batch as five parallel arrays, unnested into rows in order.
pub const PG_INSERT_EVENTS: &str = "INSERT INTO call_events (call_id, seq, at_us, type, data) \
    SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[]) \
    ON CONFLICT (call_id, seq) DO NOTHING";

/// Connections the PostgreSQL ingestion pool opens at most: one per part of the writer's batch
/// in flight (see [`super::events::PG_PARTS`]), and one for replays and direct callers.
pub const PG_INGEST_CONNECTIONS: u32 = super::events::PG_PARTS as u32 + 1;

/// The typed PostgreSQL pool the event inserts use, beside the store's `Any` pool.
#[derive(Debug, Clone)]
pub(crate) struct PgIngest {
    pool: PgPool,
}

impl PgIngest {
    /// A pool on `url` that connects on first use (so an unreachable database fails the
    /// insert, after `acquire_timeout`, and the writer spools).
    pub(crate) fn connect_lazy(url: &str, acquire_timeout: Duration) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(PG_INGEST_CONNECTIONS)
            .acquire_timeout(acquire_timeout)
            .connect_lazy(url)
            .map_err(StoreError::db("connecting the event ingestion pool"))?;
        Ok(PgIngest { pool })
    }

    /// Inserts `rows` with [`PG_INSERT_EVENTS`]; returns how many were new.
    async fn insert(&self, rows: &[EventRow]) -> Result<u64, StoreError> {
        let call_ids: Vec<&str> = rows.iter().map(|r| r.call_id.as_str()).collect();
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let times: Vec<i64> = rows.iter().map(|r| r.at_us).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        let data: Vec<&str> = rows.iter().map(|r| r.data.as_str()).collect();
        let done = sqlx::query(PG_INSERT_EVENTS)
            .bind(call_ids)
            .bind(seqs)
            .bind(times)
            .bind(kinds)
            .bind(data)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("appending call events"))?;
        Ok(done.rows_affected())
    }

    /// The typed pool, for other bulk writes that bind arrays (contact uploads).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool's connections.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQLite's `INSERT … VALUES (?,?,?,?,?),(?,?,?,?,?) … ON CONFLICT DO NOTHING` for `rows`
/// rows; the parameters are bound in order.
pub fn sqlite_insert_sql(rows: usize) -> String {
    const HEAD: &str = "INSERT INTO call_events (call_id, seq, at_us, type, data) VALUES ";
    const ROW: &str = "(?,?,?,?,?)";
    const TAIL: &str = " ON CONFLICT (call_id, seq) DO NOTHING";
    let mut sql = String::with_capacity(HEAD.len() + rows * (ROW.len() + 1) + TAIL.len());
    sql.push_str(HEAD);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(ROW);
    }
    sql.push_str(TAIL);
    sql
}

impl Store {
    /// Inserts CallEvent rows in one statement, the fastest way the backend offers (see the
    /// module docs); a row already stored (same call and seq) is left as it is. Returns how
    /// many were new.
    pub async fn insert_events(&self, rows: &[EventRow]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        if let Some(pg) = self.pg_ingest() {
            return pg.insert(rows).await;
        }
        let sql = sqlite_insert_sql(rows.len());
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in rows {
            query = query
                .bind(row.call_id.as_str())
                .bind(row.seq)
                .bind(row.at_us)
                .bind(row.kind.as_str())
                .bind(row.data.as_str());
        }
        let done = self
            .pool()
            .execute(query)
            .await
            .map_err(StoreError::db("appending call events"))?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_sql_has_five_anonymous_parameters_a_row() {
        assert_eq!(
            sqlite_insert_sql(2),
            "INSERT INTO call_events (call_id, seq, at_us, type, data) VALUES \
             (?,?,?,?,?),(?,?,?,?,?) ON CONFLICT (call_id, seq) DO NOTHING"
        );
        assert_eq!(sqlite_insert_sql(1000).matches('?').count(), 5000);
    }
}
