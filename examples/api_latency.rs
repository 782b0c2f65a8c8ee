//! `POST /v1/calls` latency: a gateway with its control plane on SQLite and on PostgreSQL,
//! dialing through the fake Twilio REST API (zero delay), fired N times one after another and
//! N times from C concurrent clients. Prints p50/p95/p99 latency and calls/s per backend.
//!
//! ```text
//! cargo run --release --example api_latency -- [--calls N] [--concurrency C] [--sqlite-only]
//! ```
//! PostgreSQL comes from `VOICEGW_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! a database of its own is created and dropped.

#[path = "support/backends.rs"]
mod backends;
#[path = "../tests/fakes/mod.rs"]
#[allow(unused_imports)]
mod fakes;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fakes::twilio_rest::{ACCOUNT_SID, AUTH_TOKEN, FakeTwilioConfig, FakeTwilioRest, OUR_NUMBER};
use voicegw::config::Config;
use voicegw::control::call_plane::CallPlane;
use voicegw::control::dial::carriers_from_config;
use voicegw::control::{ControlDeps, ControlState};
use voicegw::metrics::Metrics;
use voicegw::server::{Gateway, open_store};
use voicegw::store::hub::EventHub;
use voicegw::store::tenants::{Plan, Role};

const ADMIN_KEY: &str = "vgw_bench_superadmin_key_0123456789abcdef";

struct Args {
    calls: usize,
    concurrency: usize,
    sqlite_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        calls: 300,
        concurrency: 16,
        sqlite_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} takes a positive number"))
        };
        match arg.as_str() {
            "--calls" => args.calls = number("--calls")?,
            "--concurrency" => args.concurrency = number("--concurrency")?,
            "--sqlite-only" => args.sqlite_only = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Latencies of one run.
struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
    failures: usize,
}

impl Run {
    fn print(&self, label: &str) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |q: f64| {
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i].as_secs_f64() * 1000.0
        };
        println!(
            "  {label:<22} n={:<5} p50={:>7.2} ms  p95={:>7.2} ms  p99={:>7.2} ms  {:>7.1} calls/s  failures={}",
            sorted.len(),
            at(0.50),
            at(0.95),
            at(0.99),
            sorted.len() as f64 / self.elapsed.as_secs_f64(),
            self.failures,
        );
    }
}

/// A running gateway with its control plane and a tenant key.
struct Bench {
    base: String,
    key: String,
    http: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(url: &str, dir: &std::path::Path, twilio: &FakeTwilioRest) -> Result<Bench, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut config = Config::default();
    config.script.dir = dir.join("no-scripts");
    config.store.url = url.to_owned();
    config.store.spool_path = dir.join("events.spool");
    config.api.admin_key = Some(ADMIN_KEY.to_owned());
    config.auth.public_url = Some(format!("http://{addr}"));
    config.auth.twilio_auth_token = Some(AUTH_TOKEN.to_owned());
    config.twilio.account_sid = Some(ACCOUNT_SID.to_owned());
    config.twilio.base_url = twilio.base_url();
    let metrics = Metrics::new().map_err(|e| e.to_string())?;
    let hub = EventHub::default();
    let (store, events, _writer) = open_store(&config, &metrics, hub.clone())
        .await
        .map_err(|e| e.to_string())?;
    let tenant = store
        .create_tenant("bench", Plan::Full)
        .await
        .map_err(|e| e.to_string())?;
    let (_, key) = store
        .create_api_key(Some(tenant.id), Role::Agent, "bench")
        .await
        .map_err(|e| e.to_string())?;
    store
        .add_phone_number(tenant.id, OUR_NUMBER, "twilio")
        .await
        .map_err(|e| e.to_string())?;
    let gateway = Gateway::with_events(&config, metrics, events).map_err(|e| e.to_string())?;
    let plane = CallPlane::new(
        gateway.pipeline(),
        carriers_from_config(&config).map_err(|e| e.to_string())?,
        None,
        hub,
    );
    let registry = gateway.registry();
    let gateway = gateway.with_control(ControlState::new(ControlDeps {
        store,
        registry,
        public_url: config.auth.public_url.clone(),
        twilio_auth_token: config.auth.twilio_auth_token.clone(),
        calls: Some(Arc::new(plane)),
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = gateway
            .run(listener, Duration::from_secs(1), async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Bench {
        base: format!("http://{addr}"),
        key,
        http: reqwest::Client::new(),
        stop,
        task,
    })
}

/// One `POST /v1/calls`; its latency, or `None` when it did not answer 202.
async fn place(bench: &Bench, n: usize) -> Option<Duration> {
    let body = serde_json::json!({
        "to": format!("+1415555{:04}", n % 10_000),
        "from": OUR_NUMBER,
        "agent": "echo",
        "variables": {"n": n.to_string()},
    });
    let started = Instant::now();
    let response = bench
        .http
        .post(format!("{}/v1/calls", bench.base))
        .bearer_auth(&bench.key)
        .json(&body)
        .send()
        .await
        .ok()?;
    let ok = response.status().as_u16() == 202;
    let _ = response.bytes().await;
    ok.then(|| started.elapsed())
}

async fn sequential(bench: &Bench, calls: usize) -> Run {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(calls);
    let mut failures = 0;
    for n in 0..calls {
        match place(bench, n).await {
            Some(latency) => latencies.push(latency),
            None => failures += 1,
        }
    }
    Run {
        latencies,
        elapsed: started.elapsed(),
        failures,
    }
}

async fn concurrent(bench: Arc<Bench>, calls: usize, concurrency: usize) -> Run {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let bench = bench.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = (Vec::new(), 0usize);
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= calls {
                    return mine;
                }
                match place(&bench, calls + n).await {
                    Some(latency) => mine.0.push(latency),
                    None => mine.1 += 1,
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    let mut failures = 0;
    for worker in workers {
        if let Ok((mine, failed)) = worker.await {
            latencies.extend(mine);
            failures += failed;
        }
    }
    Run {
        latencies,
        elapsed: started.elapsed(),
        failures,
    }
}

async fn run_backend(label: &str, url: &str, args: &Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let twilio = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let url = if url.is_empty() {
        format!("sqlite://{}/voicegw.db", dir.path().display())
    } else {
        url.to_owned()
    };
    let bench = Arc::new(start(&url, dir.path(), &twilio).await?);
    // Warm-up: connections, the first statements.
    for n in 0..10 {
        place(&bench, 1_000_000 + n).await;
    }
    println!("{label}:");
    sequential(&bench, args.calls).await.print("sequential");
    concurrent(bench.clone(), args.calls, args.concurrency)
        .await
        .print(&format!("{} concurrent", args.concurrency));
    if let Ok(bench) = Arc::try_unwrap(bench) {
        let _ = bench.stop.send(());
        let _ = bench.task.await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("api_latency: {error}");
            eprintln!("usage: api_latency [--calls N] [--concurrency C] [--sqlite-only]");
            return ExitCode::from(2);
        }
    };
    println!(
        "POST /v1/calls through the fake Twilio REST API (zero delay), {} calls per run",
        args.calls
    );
    backends::on_both("api_latency", "", args.sqlite_only, async |label, url| {
        run_backend(label, url, &args).await
    })
    .await
}
