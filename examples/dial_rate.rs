//! The highest dial rate the dialer's queue + CPS limiter sustain into the fake Twilio REST
//! API (call creates answered at once), on SQLite and on PostgreSQL: one campaign of N
//! contacts, one dialer process, the Twilio limit at `--cps`. Prints calls/s from the first
//! to the last create, the most starts the limiter let through in any one-second window, and
//! the most creates the fake received in any one-second window.
//!
//! ```text
//! cargo run --release --example dial_rate -- [--contacts N] [--cps R] [--concurrency C] [--sqlite-only]
//! ```
//! PostgreSQL comes from `VOICEGW_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! a database of its own is created and dropped.

#[path = "support/backends.rs"]
mod backends;
#[path = "../tests/fakes/mod.rs"]
#[allow(unused_imports)]
mod fakes;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fakes::twilio_rest::{ACCOUNT_SID, AUTH_TOKEN, FakeTwilioConfig, FakeTwilioRest, OUR_NUMBER};
use voicegw::call::registry::Registry;
use voicegw::config::Config;
use voicegw::control::call_plane::CallPlane;
use voicegw::control::dial::carriers_from_config;
use voicegw::dialer::limiter::{CpsLimiter, CpsLimiters, LocalCpsLimiter};
use voicegw::dialer::metrics::DialerMetrics;
use voicegw::dialer::retry::RetryPolicyConfig;
use voicegw::dialer::window::CallingWindowConfig;
use voicegw::dialer::worker::{Dialer, DialerDeps, DialerOptions};
use voicegw::metrics::Metrics;
use voicegw::pipeline::Pipeline;
use voicegw::store::campaigns::{CampaignAction, NewCampaign, NewContact};
use voicegw::store::hub::EventHub;
use voicegw::store::tenants::Plan;
use voicegw::store::{Scope, Store};

struct Args {
    contacts: usize,
    cps: u32,
    concurrency: u32,
    sqlite_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        contacts: 3000,
        cps: 250,
        concurrency: 512,
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
            "--contacts" => args.contacts = number("--contacts")?,
            "--cps" => args.cps = number("--cps")? as u32,
            "--concurrency" => args.concurrency = number("--concurrency")? as u32,
            "--sqlite-only" => args.sqlite_only = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// The limiter, noting when it lets each call start (before the next caller may acquire).
struct Recording {
    inner: LocalCpsLimiter,
    starts: tokio::sync::Mutex<Vec<Instant>>,
}

#[async_trait::async_trait]
impl CpsLimiter for Recording {
    async fn acquire(&self) {
        let mut starts = self.starts.lock().await;
        self.inner.acquire().await;
        starts.push(Instant::now());
    }
}

/// The most instants in any one-second window.
fn max_per_second(mut times: Vec<Instant>) -> usize {
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

async fn run_backend(label: &str, url: &str, args: &Args) -> Result<(), String> {
    let rest = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let mut config = Config::default();
    config.auth.public_url = Some("https://gw.example.com".to_owned());
    config.auth.twilio_auth_token = Some(AUTH_TOKEN.to_owned());
    config.twilio.account_sid = Some(ACCOUNT_SID.to_owned());
    config.twilio.base_url = rest.base_url();
    let store = Store::open(url).await.map_err(|e| e.to_string())?;
    let metrics = Metrics::new().map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::build(&config, &metrics).map_err(|e| e.to_string())?);
    let carriers = carriers_from_config(&config).map_err(|e| e.to_string())?;
    let tenant = store
        .create_tenant("bench", Plan::Full)
        .await
        .map_err(|e| e.to_string())?
        .id;
    let campaign = store
        .create_campaign(
            tenant,
            &NewCampaign {
                name: "rate".into(),
                agent: "echo".into(),
                script_id: None,
                caller_ids: vec![OUR_NUMBER.to_owned()],
                carrier: "twilio".into(),
                calling_window: CallingWindowConfig {
                    timezone: "UTC".into(),
                    open: vec!["daily 00:00-24:00".into()],
                    closed_dates: Vec::new(),
                },
                retry_policy: RetryPolicyConfig::default(),
                max_concurrency: 1_000_000,
                starts_at_us: None,
                ends_at_us: None,
                machine_detection: None,
                timeout_secs: None,
                time_limit_secs: None,
                record: false,
                voicemail_message: None,
                sms_fallback: None,
                variables: BTreeMap::new(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let contacts: Vec<NewContact> = (0..args.contacts)
        .map(|i| NewContact {
            phone: format!("+1415{:07}", i),
            ..NewContact::default()
        })
        .collect();
    let scope = Scope::Tenant(tenant);
    store
        .add_contacts(scope, campaign.id, &contacts)
        .await
        .map_err(|e| e.to_string())?;
    store
        .set_campaign_status(scope, campaign.id, CampaignAction::Start)
        .await
        .map_err(|e| e.to_string())?;
    let cps = NonZeroU32::new(args.cps).ok_or("--cps must be positive")?;
    let limiter = Arc::new(Recording {
        inner: LocalCpsLimiter::new(cps),
        starts: tokio::sync::Mutex::new(Vec::new()),
    });
    let deps = DialerDeps {
        store: store.clone(),
        plane: Arc::new(CallPlane::new(
            pipeline,
            carriers,
            None,
            EventHub::default(),
        )),
        registry: Arc::new(Registry::new()),
        public_url: "https://gw.example.com".into(),
        limiters: CpsLimiters::new(limiter.clone(), Arc::new(LocalCpsLimiter::new(cps))),
        sms: None,
        metrics: DialerMetrics::unregistered().map_err(|e| e.to_string())?,
    };
    let options = DialerOptions {
        worker_id: "bench".into(),
        concurrency: args.concurrency,
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(20),
        stale_after_secs: 3600,
        unplaced_after_secs: 3600,
        max_live_calls_per_tenant: None,
    };
    let began = Instant::now();
    let dialer = Dialer::spawn(deps, options);
    let limit = Duration::from_secs(60 + 4 * args.contacts as u64 / u64::from(args.cps));
    while rest.created_calls().len() < args.contacts {
        if began.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dialer.stop().await;
    let created = rest.created_calls();
    let times: Vec<Instant> = created.iter().map(|r| r.at).collect();
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
        return Err("no call was placed".into());
    };
    let span = last.duration_since(*first).as_secs_f64().max(1e-3);
    let starts = limiter.starts.lock().await.clone();
    println!(
        "{label:<10} contacts={} cps={} placed={} in {:.2} s: {:.1} calls/s; \
         max starts in 1 s (limiter) = {}; max creates in 1 s (carrier) = {}",
        args.contacts,
        args.cps,
        created.len(),
        span,
        (created.len().saturating_sub(1)) as f64 / span,
        max_per_second(starts),
        max_per_second(times),
    );
    store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("dial_rate: {error}");
            return ExitCode::from(2);
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("dial_rate: {error}");
            return ExitCode::FAILURE;
        }
    };
    let sqlite = format!("sqlite://{}/dial_rate.db", dir.path().display());
    backends::on_both(
        "dial_rate",
        &sqlite,
        args.sqlite_only,
        async |label, url| run_backend(label, url, &args).await,
    )
    .await
}
