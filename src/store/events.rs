//! The CallEvent writer: drains an [`EventSink`]'s queue into the store in batches.
//!
//! The media path only `try_send`s (see [`EventSink::record`]); this task gathers up to
//! [`WriterConfig::max_batch`] events or [`WriterConfig::max_delay`] and writes them with one
//! multi-row `INSERT … ON CONFLICT (call_id, seq) DO NOTHING`. When the database refuses, the
//! batch goes to the [`Spool`] instead, and so does every later batch until the spool has been
//! replayed (every [`WriterConfig::retry_every`]), so rows reach the database in the order they
//! were recorded. A spool left by an earlier run is replayed at start. Replays are idempotent,
//! so a row both stored and spooled is stored once.
//!
//! On PostgreSQL a batch is split by call into [`PG_PARTS`] parts inserted at once, on their own
//! connections (each a statement and a commit of its own); all of a call's events in a batch
//! fall in the same part, and the next batch starts only once every part has settled, so each
//! call's rows still reach the database in the order they were recorded. A part that fails is
//! spooled (the others are stored). SQLite has one writer at a time, so its batch is one part.
//!
//! Each batch is published to the [`EventHub`] as soon as it is gathered, before its insert,
//! so live viewers never wait on the database. Once a batch (or a replayed chunk) is stored,
//! its `stream_started` and `call_ended` events update their calls' status (see
//! [`super::lifecycle`]); a failure there spools the batch like a failed insert, and the
//! replay applies them again (both steps are idempotent).
//!
//! What a SIGKILL (or a crash) loses: the events in memory, not yet inserted or spooled — the
//! batch being gathered (at most [`WriterConfig::max_delay`] of events), the insert in flight
//! (each of its parts unless it committed), and whatever queued behind that insert while the database
//! was slow. With a healthy database that is about `max_delay` plus one insert's time. Nothing
//! stored or spooled is lost: what is stored is a gap-free prefix of each call's events, and a
//! spool line torn by the kill is skipped on replay (see [`Spool`]). A graceful stop loses
//! nothing: the writer ends only once every sink is dropped and the last batch is written.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::calls::EventRow;
use super::hub::EventHub;
use super::lifecycle::LifecycleApplied;
use super::spool::Spool;
use super::{Backend, Store, StoreError};
use crate::call::events::{CallEvent, EventSink};
use crate::metrics::Metrics;

/// The most rows per statement (5 parameters a row stays under SQLite's 32 766).
pub const MAX_BATCH: usize = 5000;

/// The parts a batch is split into on PostgreSQL, inserted concurrently.
pub const PG_PARTS: usize = 2;

/// How the writer batches and where it spools.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Events the queue holds before the sink drops (and counts) new ones.
    pub capacity: usize,
    /// Most events per insert (at most [`MAX_BATCH`], the default). A batch only fills past
    /// what arrives within `max_delay` when events queue up behind a slow insert; then larger
    /// batches catch up faster (fewer commits and round trips).
    pub max_batch: usize,
    /// Longest an event waits for its batch to fill.
    pub max_delay: Duration,
    /// How often a non-empty spool is retried against the database.
    pub retry_every: Duration,
    /// The spool file.
    pub spool_path: PathBuf,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            capacity: 65_536,
            max_batch: MAX_BATCH,
            max_delay: Duration::from_millis(50),
            retry_every: Duration::from_secs(2),
            spool_path: PathBuf::from("data/events.spool"),
        }
    }
}

/// What a writer did, returned when its sinks are all dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Rows inserted straight from the queue.
    pub stored: u64,
    /// Rows written to the spool.
    pub spooled: u64,
    /// Rows replayed from the spool (including ones already stored).
    pub replayed: u64,
    /// Inserts made (batches and replay chunks).
    pub batches: u64,
    /// Events that could not be turned into rows.
    pub unstorable: u64,
    /// Rows lost because neither the database nor the spool took them.
    pub lost: u64,
    /// Rows still in the spool at the end (replayed by the next start).
    pub left_in_spool: bool,
    /// Lifecycle events (`stream_started`, `call_ended`) applied to a stored call.
    pub status_updates: u64,
    /// Lifecycle events skipped because their call is not in `calls` (a stream nobody
    /// created).
    pub unknown_calls: u64,
}

/// Starts a writer into `store`: returns the sink to hand to calls and the task, which ends
/// (with its stats) once every clone of the sink is dropped and the last batch is written or
/// spooled. `metrics` counts the events the sink drops when the queue is full; every batch is
/// published to `hub` before it is inserted.
pub fn spawn_event_writer(
    store: Store,
    config: WriterConfig,
    metrics: Option<Metrics>,
    hub: EventHub,
) -> (EventSink, JoinHandle<WriterStats>) {
    let (sender, receiver) = mpsc::channel(config.capacity.max(1));
    let parts = match store.backend() {
        Backend::Postgres => PG_PARTS,
        Backend::Sqlite => 1,
    };
    let writer = Writer {
        store,
        hub,
        spool: Spool::new(config.spool_path.clone()),
        max_batch: config.max_batch.clamp(1, MAX_BATCH),
        config,
        pending: false,
        last_try: None,
        parts,
        in_flight: Vec::new(),
        stats: WriterStats::default(),
    };
    let handle = tokio::spawn(writer.run(receiver));
    (EventSink::new(sender, metrics), handle)
}

struct Writer {
    store: Store,
    hub: EventHub,
    spool: Spool,
    config: WriterConfig,
    max_batch: usize,
    /// The spool holds rows not yet in the database.
    pending: bool,
    last_try: Option<Instant>,
    /// How many parts (by call) a batch is inserted in, concurrently.
    parts: usize,
    /// The one batch under way, its parts inserting: the next batch is gathered and encoded
    /// meanwhile, and inserted only after they all settle, so a call's rows reach the database
    /// in order.
    in_flight: Vec<InFlight>,
    stats: WriterStats,
}

/// One part's insert running on its own task, with its rows kept for the spool should it fail.
struct InFlight {
    rows: Arc<Vec<EventRow>>,
    task: JoinHandle<Result<LifecycleApplied, StoreError>>,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<CallEvent>) -> WriterStats {
        self.pending = !self.spool.is_empty().await;
        if self.pending {
            self.replay().await;
        }
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            let first = if self.pending {
                match tokio::time::timeout(self.config.retry_every, receiver.recv()).await {
                    Ok(event) => event,
                    Err(_) => {
                        self.replay().await;
                        continue;
                    }
                }
            } else if !self.in_flight.is_empty() {
                match tokio::time::timeout(self.config.max_delay, receiver.recv()).await {
                    Ok(event) => event,
                    Err(_) => {
                        self.settle().await;
                        continue;
                    }
                }
            } else {
                receiver.recv().await
            };
            let Some(first) = first else { break };
            batch.push(first);
            let deadline = Instant::now() + self.config.max_delay;
            while batch.len() < self.max_batch {
                let room = self.max_batch - batch.len();
                match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            self.flush(std::mem::take(&mut batch)).await;
        }
        self.settle().await;
        if self.pending {
            self.replay().await;
        }
        self.stats.left_in_spool = self.pending;
        self.stats
    }

    async fn flush(&mut self, events: Vec<CallEvent>) {
        let rows: Vec<EventRow> = events
            .iter()
            .filter_map(|event| match EventRow::from_event(event) {
                Ok(row) => Some(row),
                Err(e) => {
                    tracing::warn!(target: "voicegw::events", "{e}");
                    self.stats.unstorable += 1;
                    None
                }
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        self.hub.publish(&rows);
        self.settle().await;
        if !self.pending {
            for part in split_by_call(rows, self.parts) {
                self.stats.batches += 1;
                let rows = Arc::new(part);
                let store = self.store.clone();
                let task_rows = Arc::clone(&rows);
                let task = tokio::spawn(async move { store_rows(&store, &task_rows).await });
                self.in_flight.push(InFlight { rows, task });
            }
            return;
        }
        self.spool_rows(&rows).await;
        if self
            .last_try
            .is_none_or(|t| t.elapsed() >= self.config.retry_every)
        {
            self.replay().await;
        }
    }

    /// Waits for every part under way; spools the rows of those that failed.
    async fn settle(&mut self) {
        for InFlight { rows, task } in std::mem::take(&mut self.in_flight) {
            let error = match task.await {
                Ok(Ok(lifecycle)) => {
                    self.stats.stored += rows.len() as u64;
                    self.count(lifecycle);
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("insert task failed: {e}"),
            };
            tracing::warn!(target: "voicegw::events", rows = rows.len(), "spooling events: {error}");
            self.last_try = Some(Instant::now());
            self.spool_rows(&rows).await;
        }
    }

    async fn spool_rows(&mut self, rows: &[EventRow]) {
        match self.spool.append(rows).await {
            Ok(()) => {
                self.stats.spooled += rows.len() as u64;
                self.pending = true;
            }
            Err(e) => {
                tracing::error!(target: "voicegw::events", rows = rows.len(), "events lost: {e}");
                self.stats.lost += rows.len() as u64;
            }
        }
    }

    fn count(&mut self, lifecycle: LifecycleApplied) {
        self.stats.status_updates += lifecycle.applied;
        self.stats.unknown_calls += lifecycle.unknown_calls;
    }

    /// Inserts the spool's rows in order; clears it when all are in.
    async fn replay(&mut self) {
        self.settle().await;
        self.last_try = Some(Instant::now());
        let rows = match self.spool.read().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(target: "voicegw::events", "cannot read the spool: {e}");
                return;
            }
        };
        for chunk in rows.chunks(self.max_batch) {
            self.stats.batches += 1;
            match store_rows(&self.store, chunk).await {
                Ok(lifecycle) => self.count(lifecycle),
                Err(e) => {
                    tracing::warn!(target: "voicegw::events", "spool replay deferred: {e}");
                    return;
                }
            }
        }
        match self.spool.clear().await {
            Ok(()) => {
                self.stats.replayed += rows.len() as u64;
                self.pending = false;
                tracing::info!(target: "voicegw::events", rows = rows.len(), "spool replayed");
            }
            Err(e) => tracing::error!(target: "voicegw::events", "cannot clear the spool: {e}"),
        }
    }
}

/// Splits `rows` into at most `parts` non-empty parts by call (a call's rows all in one part,
/// in their order).
pub fn split_by_call(rows: Vec<EventRow>, parts: usize) -> Vec<Vec<EventRow>> {
    if parts <= 1 || rows.is_empty() {
        return if rows.is_empty() {
            Vec::new()
        } else {
            vec![rows]
        };
    }
    let mut split: Vec<Vec<EventRow>> = (0..parts)
        .map(|_| Vec::with_capacity(rows.len() / parts + 1))
        .collect();
    for row in rows {
        let mut hasher = DefaultHasher::new();
        row.call_id.hash(&mut hasher);
        // The remainder is below `parts`, a usize.
        let part = (hasher.finish() % parts as u64) as usize;
        split[part].push(row);
    }
    split.retain(|part| !part.is_empty());
    split
}

/// Inserts rows, then applies their lifecycle events to the calls' status.
async fn store_rows(store: &Store, rows: &[EventRow]) -> Result<LifecycleApplied, StoreError> {
    store.insert_events(rows).await?;
    store.apply_lifecycle(rows).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(call: &str, seq: i64) -> EventRow {
        EventRow {
            call_id: call.to_string(),
            seq,
            at_us: seq,
            kind: "dtmf".into(),
            data: "{}".into(),
        }
    }

    #[test]
    fn parts_keep_each_call_whole_and_in_order() {
        let calls: Vec<String> = (0..20).map(|i| format!("call-{i}")).collect();
        let rows: Vec<EventRow> = (0..400)
            .map(|i| row(&calls[i % calls.len()], (i / calls.len()) as i64 + 1))
            .collect();
        let parts = split_by_call(rows.clone(), 2);
        assert_eq!(parts.len(), 2, "20 calls should land in both parts");
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), rows.len());
        for call in &calls {
            let holding: Vec<&Vec<EventRow>> = parts
                .iter()
                .filter(|p| p.iter().any(|r| &r.call_id == call))
                .collect();
            assert_eq!(holding.len(), 1, "{call} is split across parts");
            let seqs: Vec<i64> = holding[0]
                .iter()
                .filter(|r| &r.call_id == call)
                .map(|r| r.seq)
                .collect();
            assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        }
    }

    #[test]
    fn one_part_is_the_batch_and_empty_parts_are_dropped() {
        let rows = vec![row("a", 1), row("b", 1), row("a", 2)];
        assert_eq!(split_by_call(rows.clone(), 1), vec![rows.clone()]);
        let single = vec![row("a", 1), row("a", 2)];
        assert_eq!(split_by_call(single.clone(), 2), vec![single]);
        assert!(split_by_call(Vec::new(), 2).is_empty());
    }
}
