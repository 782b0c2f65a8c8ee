//! How many CallEvents per second the batching writer stores, into SQLite and PostgreSQL, and
//! (with `--stages`) where the time of one batch goes.
//!
//! `--events` events spread over `--calls` calls are recorded as fast as the media path would
//! (`try_send`, never waiting), and the clock stops when the writer has stored the last one.
//! SQLite writes a fresh file in a temporary folder; PostgreSQL (`--postgres`, an admin URL)
//! gets a fresh database, dropped at the end. `--batch` sets the writer's rows per insert (by
//! default the writer's default, 5 000);
//! `--only sqlite|postgres` runs one backend.
//!
//! `--stages` then times each step of a batch on its own, over the same number of events:
//! turning CallEvents into rows (JSON encoding), the portable multi-row `VALUES` insert through
//! the `Any` driver (`Store::append_events`), the backend's fast path (`Store::insert_events`)
//! and, on PostgreSQL, the fast path again with `synchronous_commit = off` (the share of the
//! WAL flush at commit; the store itself never turns it off).
//!
//! ```text
//! cargo run --release --example event_ingest -- --events 200000 --calls 200
//! cargo run --release --example event_ingest -- --postgres postgres://postgres@127.0.0.1:5432/test
//! cargo run --release --example event_ingest -- --events 100000 --batch 1000 --stages
//! ```
//! Bounded by `--events`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use sqlx::Connection;
use voicegw::call::CallId;
use voicegw::call::agent::DtmfSource;
use voicegw::call::events::{CallEvent, CallEventKind, CallRecorder};
use voicegw::metrics::Metrics;
use voicegw::store::Store;
use voicegw::store::calls::EventRow;
use voicegw::store::events::{WriterConfig, spawn_event_writer};
use voicegw::store::hub::EventHub;

/// What to run.
#[derive(Debug, Clone)]
struct Args {
    events: usize,
    calls: usize,
    batch: usize,
    postgres: String,
    only: Option<String>,
    stages: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 200_000,
        calls: 200,
        batch: WriterConfig::default().max_batch,
        postgres: "postgres://postgres@127.0.0.1:5432/test".into(),
        only: None,
        stages: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--stages" {
            args.stages = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--events" => args.events = number()?.max(1),
            "--calls" => args.calls = number()?.max(1),
            "--batch" => args.batch = number()?.max(1),
            "--postgres" => args.postgres = value,
            "--only" if value == "sqlite" || value == "postgres" => args.only = Some(value),
            "--only" => return Err(format!("--only: expected sqlite or postgres, not {value}")),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// A DTMF event, as the benchmark records them.
fn key(i: usize) -> CallEventKind {
    CallEventKind::Dtmf {
        digit: char::from(b'0' + (i % 10) as u8),
        source: DtmfSource::Carrier,
    }
}

/// Stores `args.events` events through a writer into `store`; returns events per second.
async fn run(store: Store, args: &Args, spool: std::path::PathBuf) -> Result<(f64, u64), String> {
    let metrics = Metrics::new().map_err(|e| e.to_string())?;
    let config = WriterConfig {
        capacity: args.events,
        max_batch: args.batch,
        max_delay: Duration::from_millis(20),
        retry_every: Duration::from_secs(1),
        spool_path: spool,
    };
    let (sink, handle) =
        spawn_event_writer(store, config, Some(metrics.clone()), EventHub::default());
    let started = Instant::now();
    let mut recorders: Vec<CallRecorder> = (0..args.calls)
        .map(|_| CallRecorder::new(CallId::new(), sink.clone()))
        .collect();
    drop(sink);
    for i in 0..args.events {
        recorders[i % args.calls].record(key(i));
    }
    drop(recorders);
    let stats = handle.await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
    if stats.spooled > 0 || stats.lost > 0 {
        return Err(format!("the database did not take every batch: {stats:?}"));
    }
    Ok((stats.stored as f64 / elapsed, metrics.events_dropped.get()))
}

/// `args.events` fresh events over `args.calls` new calls, in recording order.
fn fresh_events(args: &Args) -> Vec<CallEvent> {
    let calls: Vec<CallId> = (0..args.calls).map(|_| CallId::new()).collect();
    (0..args.events)
        .map(|i| CallEvent {
            call_id: calls[i % args.calls],
            seq: (i / args.calls + 1) as u64,
            at_us: 1_700_000_000_000_000 + i as u64,
            kind: key(i),
        })
        .collect()
}

/// The rows of fresh events, and how long encoding them took.
fn encode(args: &Args) -> Result<(Vec<EventRow>, Duration), String> {
    let events = fresh_events(args);
    let started = Instant::now();
    let rows = events
        .iter()
        .map(EventRow::from_event)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((rows, started.elapsed()))
}

/// One stage's line: events per second and microseconds per batch.
fn report(stage: &str, events: usize, batch: usize, took: Duration) {
    let secs = took.as_secs_f64().max(1e-9);
    let batches = events.div_ceil(batch).max(1);
    println!(
        "    {stage:<34} {:>10.0} events/s {:>9.0} µs/batch",
        events as f64 / secs,
        secs * 1e6 / batches as f64
    );
}

/// Times `insert` over fresh rows, a batch at a time.
async fn time_inserts<F, Fut>(args: &Args, mut insert: F) -> Result<Duration, String>
where
    F: FnMut(Vec<EventRow>) -> Fut,
    Fut: std::future::Future<Output = Result<u64, voicegw::store::StoreError>>,
{
    let (rows, _) = encode(args)?;
    let started = Instant::now();
    for chunk in rows.chunks(args.batch) {
        let stored = insert(chunk.to_vec()).await.map_err(|e| e.to_string())?;
        if stored != chunk.len() as u64 {
            return Err(format!("{stored} of {} rows stored", chunk.len()));
        }
    }
    Ok(started.elapsed())
}

/// Times each step of a batch on `store`; `async_commit` is the same database with
/// `synchronous_commit = off`, on PostgreSQL.
async fn stages(store: &Store, async_commit: Option<&Store>, args: &Args) -> Result<(), String> {
    let (_, took) = encode(args)?;
    report("encode CallEvent → row", args.events, args.batch, took);
    let took = time_inserts(args, |rows| async move { store.append_events(&rows).await }).await?;
    report("insert: VALUES via Any", args.events, args.batch, took);
    let took = time_inserts(args, |rows| async move { store.insert_events(&rows).await }).await?;
    report("insert: fast path", args.events, args.batch, took);
    if let Some(store) = async_commit {
        let took =
            time_inserts(args, |rows| async move { store.insert_events(&rows).await }).await?;
        report(
            "insert: fast path, async commit",
            args.events,
            args.batch,
            took,
        );
        let took =
            time_inserts(args, |rows| async move { store.append_events(&rows).await }).await?;
        report(
            "insert: VALUES via Any, async commit",
            args.events,
            args.batch,
            took,
        );
    }
    Ok(())
}

async fn sqlite(args: &Args, dir: &std::path::Path) -> Result<(f64, u64), String> {
    let url = format!("sqlite://{}/ingest.db", dir.display());
    let store = Store::open(&url).await.map_err(|e| e.to_string())?;
    let figures = run(store.clone(), args, dir.join("sqlite.spool")).await?;
    if args.stages {
        println!("  sqlite stages:");
        stages(&store, None, args).await?;
    }
    store.close().await;
    Ok(figures)
}

async fn postgres(args: &Args, dir: &std::path::Path) -> Result<(f64, u64), String> {
    let name = format!("voicegw_bench_{}", uuid::Uuid::new_v4().simple());
    let (server, _) = args
        .postgres
        .rsplit_once('/')
        .ok_or("--postgres: expected postgres://…/database")?;
    let mut admin = sqlx::PgConnection::connect(&args.postgres)
        .await
        .map_err(|e| e.to_string())?;
    let sql = |s: String| sqlx::query(sqlx::AssertSqlSafe(s));
    sql(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("{server}/{name}");
    let result = async {
        let store = Store::open(&url).await.map_err(|e| e.to_string())?;
        let figures = run(store.clone(), args, dir.join("pg.spool")).await;
        if figures.is_ok() && args.stages {
            println!("  postgres stages:");
            // New connections to the database pick the setting up; the store's are open.
            sql(format!(
                "ALTER DATABASE {name} SET synchronous_commit = off"
            ))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
            let async_commit = Store::open(&url).await.map_err(|e| e.to_string())?;
            let staged = stages(&store, Some(&async_commit), args).await;
            async_commit.close().await;
            staged?;
        }
        store.close().await;
        figures
    }
    .await;
    sql(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
    result
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("event_ingest: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("event_ingest: no temporary folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} events over {} calls, batches of up to {}",
        args.events, args.calls, args.batch
    );
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    let mut ok = true;
    for name in ["sqlite", "postgres"] {
        if !wanted(name) {
            continue;
        }
        let result = match name {
            "sqlite" => sqlite(&args, dir.path()).await,
            _ => postgres(&args, dir.path()).await,
        };
        match result {
            Ok((rate, dropped)) => {
                println!("{name:>8}: {rate:>10.0} events/s through the writer ({dropped} dropped)")
            }
            Err(e) => {
                ok = false;
                println!("{name:>8}: failed: {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
