//! How many CallEvents per second the batching writer stores, into SQLite and PostgreSQL.
//!
//! `--events` events spread over `--calls` calls are recorded as fast as the media path would
//! (`try_send`, never waiting), and the clock stops when the writer has stored the last one.
//! SQLite writes a fresh file in a temporary folder; PostgreSQL (`--postgres`, an admin URL)
//! gets a fresh database, dropped at the end. `--batch` sets the writer's rows per insert.
//!
//! ```text
//! cargo run --release --example event_ingest -- --events 200000 --calls 200
//! cargo run --release --example event_ingest -- --postgres postgres://postgres@127.0.0.1:5432/test
//! ```
//! Bounded by `--events`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use sqlx::Connection;
use voicegw::call::CallId;
use voicegw::call::agent::DtmfSource;
use voicegw::call::events::{CallEventKind, CallRecorder};
use voicegw::metrics::Metrics;
use voicegw::store::Store;
use voicegw::store::events::{WriterConfig, spawn_event_writer};
use voicegw::store::hub::EventHub;

/// What to run.
#[derive(Debug, Clone)]
struct Args {
    events: usize,
    calls: usize,
    batch: usize,
    postgres: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 200_000,
        calls: 200,
        batch: 1000,
        postgres: "postgres://postgres@127.0.0.1:5432/test".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--events" => args.events = number()?.max(1),
            "--calls" => args.calls = number()?.max(1),
            "--batch" => args.batch = number()?.max(1),
            "--postgres" => args.postgres = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
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
        let recorder = &mut recorders[i % args.calls];
        recorder.record(CallEventKind::Dtmf {
            digit: char::from(b'0' + (i % 10) as u8),
            source: DtmfSource::Carrier,
        });
    }
    drop(recorders);
    let stats = handle.await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
    if stats.spooled > 0 || stats.lost > 0 {
        return Err(format!("the database did not take every batch: {stats:?}"));
    }
    Ok((stats.stored as f64 / elapsed, metrics.events_dropped.get()))
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
    let result = async {
        let store = Store::open(&format!("{server}/{name}"))
            .await
            .map_err(|e| e.to_string())?;
        let figures = run(store.clone(), args, dir.join("pg.spool")).await;
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
    let sqlite_url = format!("sqlite://{}/ingest.db", dir.path().display());
    let sqlite = match Store::open(&sqlite_url).await {
        Ok(store) => run(store, &args, dir.path().join("sqlite.spool")).await,
        Err(e) => Err(e.to_string()),
    };
    let mut ok = true;
    for (name, result) in [
        ("sqlite", sqlite),
        ("postgres", postgres(&args, dir.path()).await),
    ] {
        match result {
            Ok((rate, dropped)) => println!("{name:>8}: {rate:>10.0} events/s ({dropped} dropped)"),
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
