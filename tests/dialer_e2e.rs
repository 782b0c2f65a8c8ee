//! A whole campaign through the dialer against the fake Twilio (REST, status callbacks,
//! TwiML, media streams, Messages): 1,000 contacts with mixed outcomes at 20 calls per
//! second, retried as the policy says, SMS fallbacks to the unanswered, every job done.

mod common;
mod fakes;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Row;
use voicegw::carrier::twilio_api::TwilioRest;
use voicegw::control::call_plane::CallPlane;
use voicegw::control::dial::carriers_from_config;
use voicegw::dialer::limiter::{CpsLimiter, CpsLimiters, LocalCpsLimiter};
use voicegw::dialer::metrics::DialerMetrics;
use voicegw::dialer::retry::RetryPolicyConfig;
use voicegw::dialer::sms::TwilioSms;
use voicegw::dialer::window::CallingWindowConfig;
use voicegw::dialer::worker::{Dialer, DialerDeps, DialerOptions};
use voicegw::store::Scope;
use voicegw::store::campaigns::{CampaignAction, NewCampaign, NewContact};
use voicegw::store::hub::EventHub;
use voicegw::store::tenants::Plan;

use common::control::TestControl;
use common::db::TestDb;
use common::test_config;
use fakes::twilio_carrier::{
    ACCOUNT_SID, AUTH_TOKEN, CarrierConfig, FakeCarrier, Mixed as Script, OUR_NUMBER,
};

const CONTACTS: usize = 1000;
const CPS: u32 = 20;
const MAX_ATTEMPTS: usize = 3;
/// The whole campaign must be over by then (2,600 dials at 20/s take 130 s).
const LIMIT: Duration = Duration::from_secs(200);

fn phone(position: usize) -> String {
    format!("+1415600{position:04}")
}

/// The dialer's Twilio limiter, noting when it lets each call start (in its turn: the note
/// is taken before the next caller may acquire).
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

/// How much later than the limiter's own instant a start may be noted (the task noting it
/// can be preempted): windows are measured this much shorter than a second.
const NOTE_JITTER: Duration = Duration::from_millis(10);

/// The most instants of `times` in any window of length `window`.
fn max_per_window(mut times: Vec<Instant>, window: Duration) -> usize {
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

async fn campaign_runs_to_the_end(db: TestDb) {
    let carrier = FakeCarrier::start(CarrierConfig {
        step_delay: Duration::from_millis(20),
        ..CarrierConfig::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = test_config();
    config.auth.public_url = Some(public_url.clone());
    config.auth.twilio_auth_token = Some(AUTH_TOKEN.to_owned());
    config.twilio.account_sid = Some(ACCOUNT_SID.to_owned());
    config.twilio.base_url = carrier.rest().base_url();
    let carriers = carriers_from_config(&config).unwrap();
    let raw_url = if db.is_postgres() {
        db.url.clone()
    } else {
        format!("{}?mode=rwc", db.url)
    };
    let api = TestControl::start_on(listener, db, config.clone(), carriers.clone()).await;
    let store = api.db.store.clone();
    let tenant = store.create_tenant("acme", Plan::Full).await.unwrap().id;

    for position in 0..CONTACTS {
        carrier.script(&phone(position), Script::at(position).outcome());
    }
    let campaign = store
        .create_campaign(
            tenant,
            &NewCampaign {
                name: "reminders".into(),
                agent: "echo".into(),
                script_id: None,
                caller_ids: vec![OUR_NUMBER.to_owned()],
                carrier: "twilio".into(),
                calling_window: CallingWindowConfig {
                    timezone: "UTC".into(),
                    open: vec!["daily 00:00-24:00".into()],
                    closed_dates: Vec::new(),
                },
                retry_policy: RetryPolicyConfig {
                    max_attempts: MAX_ATTEMPTS as u32,
                    backoff_secs: vec![1, 2],
                    max_backoff_secs: 2,
                    ..RetryPolicyConfig::default()
                },
                max_concurrency: 200,
                starts_at_us: None,
                ends_at_us: None,
                machine_detection: Some("enable".into()),
                timeout_secs: Some(30),
                time_limit_secs: Some(60),
                record: false,
                voicemail_message: None,
                sms_fallback: Some("Sorry we missed you, {{ name }}. Call us back!".into()),
                variables: BTreeMap::from([("name".to_owned(), "friend".to_owned())]),
            },
        )
        .await
        .unwrap();
    let contacts: Vec<NewContact> = (0..CONTACTS)
        .map(|position| NewContact {
            phone: phone(position),
            variables: BTreeMap::from([("name".to_owned(), format!("Contact {position}"))]),
            timezone: None,
        })
        .collect();
    let scope = Scope::Tenant(tenant);
    let added = store
        .add_contacts(scope, campaign.id, &contacts)
        .await
        .unwrap();
    assert_eq!(added.added, CONTACTS as u64);
    store
        .set_campaign_status(scope, campaign.id, CampaignAction::Start)
        .await
        .unwrap();

    let plane = Arc::new(CallPlane::new(
        api.gw.gateway.pipeline(),
        carriers,
        None,
        EventHub::default(),
    ));
    let rest = config.twilio_rest().unwrap();
    let twilio_limiter = Arc::new(Recording {
        inner: LocalCpsLimiter::new(CPS.try_into().unwrap()),
        starts: tokio::sync::Mutex::new(Vec::new()),
    });
    let deps = DialerDeps {
        store: store.clone(),
        plane,
        registry: api.gw.gateway.registry(),
        public_url,
        limiters: CpsLimiters::new(
            twilio_limiter.clone(),
            Arc::new(LocalCpsLimiter::new(1.try_into().unwrap())),
        ),
        sms: Some(Arc::new(TwilioSms::new(
            TwilioRest::new(rest).unwrap(),
            ACCOUNT_SID.to_owned(),
        ))),
        metrics: DialerMetrics::unregistered().unwrap(),
    };
    let options = DialerOptions {
        worker_id: "e2e".into(),
        concurrency: 64,
        lease: Duration::from_secs(10),
        poll: Duration::from_millis(100),
        stale_after_secs: 300,
        unplaced_after_secs: 60,
        max_live_calls_per_tenant: None,
    };
    let dialer = Dialer::spawn(deps, options);

    sqlx::any::install_default_drivers();
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&raw_url)
        .await
        .unwrap();
    let campaign_id = campaign.id.to_string();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let open: i64 = sqlx::query(
            "SELECT COUNT(*) FROM dial_jobs WHERE campaign_id = $1 \
             AND (state <> 'done' OR sms_state IN ('due', 'sending'))",
        )
        .bind(campaign_id.clone())
        .fetch_one(&raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} jobs still open after {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    dialer.stop().await;

    // Every job done, for the policy's reason; no slot left taken.
    let rows = sqlx::query(
        "SELECT phone, position, state, attempts, final_reason, last_outcome, sms_state \
         FROM dial_jobs WHERE campaign_id = $1",
    )
    .bind(campaign_id.clone())
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(rows.len(), CONTACTS);
    for row in &rows {
        let position: i64 = row.try_get(1).unwrap();
        let state: String = row.try_get(2).unwrap();
        let attempts: i64 = row.try_get(3).unwrap();
        let reason: Option<String> = row.try_get(4).unwrap();
        let outcome: Option<String> = row.try_get(5).unwrap();
        let sms: Option<String> = row.try_get(6).unwrap();
        let script = Script::at(position as usize);
        assert_eq!(state, "done");
        let (want_attempts, want_reason, want_outcome, want_sms) = match script {
            Script::Answer => (1, "completed", "completed", None),
            Script::Busy => (3, "max_attempts", "busy", Some("sent")),
            Script::NoAnswer => (3, "max_attempts", "no_answer", Some("sent")),
            Script::Failed => (3, "max_attempts", "failed", None),
            Script::Machine => (3, "max_attempts", "voicemail", None),
        };
        assert_eq!(
            (
                attempts,
                reason.as_deref(),
                outcome.as_deref(),
                sms.as_deref()
            ),
            (
                want_attempts,
                Some(want_reason),
                Some(want_outcome),
                want_sms
            ),
            "contact {position} ({script:?})"
        );
    }
    let live: i64 = sqlx::query("SELECT live_calls FROM campaigns WHERE id = $1")
        .bind(campaign_id.clone())
        .fetch_one(&raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(live, 0);

    // Dials per contact exactly as the policy says, each attempt its own call row.
    let created = carrier.rest().created_calls();
    let mut dials: HashMap<String, usize> = HashMap::new();
    for request in &created {
        *dials
            .entry(request.param("To").unwrap().to_owned())
            .or_default() += 1;
    }
    for position in 0..CONTACTS {
        let want = if Script::at(position) == Script::Answer {
            1
        } else {
            MAX_ATTEMPTS
        };
        assert_eq!(
            dials.get(&phone(position)).copied(),
            Some(want),
            "contact {position}"
        );
    }
    let attempts = sqlx::query(
        "SELECT k.job_id, COUNT(*), COUNT(DISTINCT k.attempt), MIN(k.attempt), MAX(k.attempt), \
         COUNT(DISTINCT k.carrier_sid) FROM calls k JOIN dial_jobs j ON j.id = k.job_id \
         WHERE j.campaign_id = $1 GROUP BY k.job_id",
    )
    .bind(campaign_id.clone())
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(attempts.len(), CONTACTS);
    let mut total = 0;
    for row in &attempts {
        let n: i64 = row.try_get(1).unwrap();
        let distinct: i64 = row.try_get(2).unwrap();
        let min: i64 = row.try_get(3).unwrap();
        let max: i64 = row.try_get(4).unwrap();
        let sids: i64 = row.try_get(5).unwrap();
        assert_eq!(
            (distinct, min, max, sids),
            (n, 1, n, n),
            "attempts 1..=n, each a call"
        );
        total += n as usize;
    }
    assert_eq!(total, created.len());

    // Texts: exactly one to each contact whose last attempt went unanswered.
    let messages = carrier.rest().messages();
    let mut texted: HashMap<String, usize> = HashMap::new();
    for message in &messages {
        assert_eq!(message.from, OUR_NUMBER);
        assert!(
            message.body.starts_with("Sorry we missed you, Contact "),
            "{message:?}"
        );
        *texted.entry(message.to.clone()).or_default() += 1;
    }
    for position in 0..CONTACTS {
        let due = matches!(Script::at(position), Script::Busy | Script::NoAnswer);
        assert_eq!(
            texted.get(&phone(position)).copied(),
            due.then_some(1),
            "contact {position}"
        );
    }

    // The CPS limit held: never more than 20 starts in any one-second window, and the
    // limit was used. As the fake carrier received the requests, in-process delays between
    // a start and its request reaching the carrier can bunch a few together; reported.
    let starts = twilio_limiter.starts.lock().await.clone();
    assert_eq!(
        starts.len(),
        created.len(),
        "every dial went through the limiter"
    );
    let second = Duration::from_secs(1);
    let busiest = max_per_window(starts.clone(), second - NOTE_JITTER);
    assert!(
        busiest <= CPS as usize,
        "{busiest} calls started within one second"
    );
    assert!(busiest >= CPS as usize / 2, "the limit was used: {busiest}");
    let received = max_per_window(created.iter().map(|r| r.at).collect(), second);
    println!(
        "dials: {}, max starts in 1 s: {busiest} (strict, unadjusted: {}), \
         max received by the carrier in 1 s: {received}",
        created.len(),
        max_per_window(starts, second),
    );
    let status: String = sqlx::query("SELECT status FROM campaigns WHERE id = $1")
        .bind(campaign_id)
        .fetch_one(&raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(status, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_runs_to_the_end_on_sqlite() {
    campaign_runs_to_the_end(TestDb::sqlite().await).await;
}
