//! Crash safety of the dialer: the gateway binary runs a 200-contact campaign against the
//! fake Twilio, is killed with SIGKILL in the middle of it, and is started again on the same
//! database. Every contact must still be dialled exactly as often as the retry policy allows
//! (never twice for one attempt, never an attempt lost), every job must end `done`, and no
//! contact may get two texts.

mod common;
mod fakes;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;

use common::control::ADMIN_KEY;
use common::db::TestDb;
use fakes::twilio_carrier::{
    ACCOUNT_SID, AUTH_TOKEN, CarrierConfig, FakeCarrier, Mixed as Script, OUR_NUMBER,
};

const CONTACTS: usize = 200;
const MAX_ATTEMPTS: usize = 3;
/// The gateway is killed once the carrier has received this many dials.
const KILL_AFTER: usize = 80;
/// The campaign must be over this long after the restart.
const LIMIT: Duration = Duration::from_secs(180);

fn phone(position: usize) -> String {
    format!("+1415700{position:04}")
}

/// The gateway process; killed when dropped (a failing test leaves nothing behind).
struct Gateway {
    child: Child,
}

impl Gateway {
    /// Starts `voicegw serve` with `config` on `port`, logging to `log`, and waits until it
    /// answers `/healthz`.
    async fn start(config: &Path, port: u16, dir: &Path, log: &str) -> Gateway {
        let stderr = std::fs::File::create(dir.join(log)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_voicegw"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(config)
            .env_clear()
            .env("RUST_LOG", "info")
            .env("VOICEGW_LOG_FORMAT", "text")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut gateway = Gateway { child };
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/healthz");
        for _ in 0..300 {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return gateway;
            }
            if let Some(status) = gateway.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
                panic!("the gateway exited ({status}):\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway did not answer /healthz");
    }

    /// SIGKILL: no graceful stop, nothing flushed.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn api(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "POST {path}: {status} {body}");
    body
}

async fn survives_a_kill(db: TestDb) {
    let carrier = FakeCarrier::start(CarrierConfig {
        step_delay: Duration::from_millis(20),
        ..CarrierConfig::default()
    })
    .await;
    for position in 0..CONTACTS {
        carrier.script(&phone(position), Script::at(position).outcome());
    }

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let dir = db.dir.path().to_owned();
    let no_scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/no-scripts");
    let config = format!(
        r#"
[store]
url = "{db_url}"
spool_path = "{dir}/spool/events.jsonl"

[script]
dir = "{scripts}"
cache_dir = "{dir}/script-cache"

[auth]
public_url = "{base}"
twilio_auth_token = "{AUTH_TOKEN}"

[twilio]
account_sid = "{ACCOUNT_SID}"
base_url = "{twilio}"

[api]
admin_key = "{ADMIN_KEY}"

[dialer]
twilio_cps = 20
concurrency = 64
lease_secs = 5
poll_ms = 100
stale_after_secs = 3
unplaced_after_secs = 2
"#,
        db_url = db.url,
        dir = dir.display(),
        scripts = no_scripts.display(),
        twilio = carrier.rest().base_url(),
    );
    let config_path = dir.join("voicegw.toml");
    std::fs::write(&config_path, config).unwrap();

    let gateway = Gateway::start(&config_path, port, &dir, "first.log").await;
    let client = reqwest::Client::new();
    let tenant = api(&client, &base, "/v1/tenants", json!({"name": "acme"})).await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    api(
        &client,
        &base,
        "/v1/numbers",
        json!({"e164": OUR_NUMBER, "carrier": "twilio", "tenant_id": tenant_id}),
    )
    .await;
    let contacts: Vec<Value> = (0..CONTACTS)
        .map(|position| {
            json!({"phone": phone(position), "variables": {"name": format!("Contact {position}")}})
        })
        .collect();
    let campaign = api(
        &client,
        &base,
        "/v1/campaigns",
        json!({
            "tenant_id": tenant_id,
            "name": "reminders",
            "agent": "echo",
            "caller_ids": [OUR_NUMBER],
            "calling_window": {"timezone": "UTC", "open": ["daily 00:00-24:00"]},
            "retry": {"max_attempts": MAX_ATTEMPTS, "backoff_secs": [1, 2], "max_backoff_secs": 2},
            "max_concurrency": 200,
            "machine_detection": "enable",
            "timeout_secs": 30,
            "time_limit_secs": 60,
            "sms_fallback": "Sorry we missed you, {{ name }}. Call us back!",
            "contacts": contacts,
            "start": true,
        }),
    )
    .await;
    assert_eq!(campaign["added"], json!(CONTACTS), "{campaign}");
    let campaign_id = campaign["campaign"]["id"].as_str().unwrap().to_owned();

    // Kill the gateway in the middle of the campaign.
    let mut waited = Duration::ZERO;
    while carrier.rest().created_calls().len() < KILL_AFTER {
        assert!(
            waited < Duration::from_secs(60),
            "the campaign does not dial"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    gateway.kill();
    let at_kill = carrier.rest().created_calls().len();

    let gateway = Gateway::start(&config_path, port, &dir, "second.log").await;
    sqlx::any::install_default_drivers();
    let raw_url = if db.is_postgres() {
        db.url.clone()
    } else {
        format!("{}?mode=rw", db.url)
    };
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&raw_url)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let row = sqlx::query(
            "SELECT c.status, (SELECT COUNT(*) FROM dial_jobs j WHERE j.campaign_id = c.id \
             AND (j.state <> 'done' OR j.sms_state IN ('due', 'sending'))) \
             FROM campaigns c WHERE c.id = $1",
        )
        .bind(campaign_id.clone())
        .fetch_one(&raw)
        .await
        .unwrap();
        let status: String = row.try_get(0).unwrap();
        let open: i64 = row.try_get(1).unwrap();
        if status == "completed" && open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign {status}, {open} jobs still open {LIMIT:?} after the restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(gateway);

    // Dials per contact exactly as the policy allows.
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
            "dials to contact {position} ({:?})",
            Script::at(position)
        );
    }

    // Every job done, for the policy's reason.
    let rows = sqlx::query(
        "SELECT position, state, attempts, final_reason, sms_state FROM dial_jobs \
         WHERE campaign_id = $1",
    )
    .bind(campaign_id.clone())
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(rows.len(), CONTACTS);
    let mut sms_states: HashMap<String, usize> = HashMap::new();
    for row in &rows {
        let position: i64 = row.try_get(0).unwrap();
        let state: String = row.try_get(1).unwrap();
        let attempts: i64 = row.try_get(2).unwrap();
        let reason: Option<String> = row.try_get(3).unwrap();
        let sms: Option<String> = row.try_get(4).unwrap();
        let script = Script::at(position as usize);
        let (want_attempts, want_reason) = match script {
            Script::Answer => (1, "completed"),
            _ => (MAX_ATTEMPTS as i64, "max_attempts"),
        };
        assert_eq!(
            (state.as_str(), attempts, reason.as_deref()),
            ("done", want_attempts, Some(want_reason)),
            "contact {position} ({script:?})"
        );
        let texted = matches!(script, Script::Busy | Script::NoAnswer);
        if texted {
            // `unknown`: the process died while sending it; never sent again.
            assert!(
                matches!(sms.as_deref(), Some("sent" | "unknown")),
                "contact {position}: sms {sms:?}"
            );
        } else {
            assert_eq!(sms, None, "contact {position}");
        }
        *sms_states
            .entry(sms.unwrap_or_else(|| "none".into()))
            .or_default() += 1;
    }
    let live: i64 = sqlx::query("SELECT live_calls FROM campaigns WHERE id = $1")
        .bind(campaign_id.clone())
        .fetch_one(&raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(live, 0, "no slot left taken");

    // Never two texts; a text to each contact whose job says `sent`.
    let mut texted: HashMap<String, usize> = HashMap::new();
    for message in carrier.rest().messages() {
        assert_eq!(message.from, OUR_NUMBER);
        *texted.entry(message.to.clone()).or_default() += 1;
    }
    for (to, n) in &texted {
        assert_eq!(*n, 1, "{to} got {n} texts");
    }
    assert_eq!(texted.len(), sms_states.get("sent").copied().unwrap_or(0));

    let attempts = sqlx::query(
        "SELECT COUNT(*), SUM(CASE WHEN k.error LIKE 'not placed%' THEN 1 ELSE 0 END) \
         FROM calls k JOIN dial_jobs j ON j.id = k.job_id WHERE j.campaign_id = $1",
    )
    .bind(campaign_id.clone())
    .fetch_one(&raw)
    .await
    .unwrap();
    let lookups = sqlx::query(
        "SELECT e.data FROM call_events e JOIN calls k ON k.id = e.call_id \
         JOIN dial_jobs j ON j.id = k.job_id WHERE j.campaign_id = $1 \
         AND e.type = 'carrier_lookup'",
    )
    .bind(campaign_id)
    .fetch_all(&raw)
    .await
    .unwrap();
    // What the carrier said of each attempt looked up (`not_found`: never placed).
    let mut looked_up: BTreeMap<String, usize> = BTreeMap::new();
    for row in &lookups {
        let data: Value = serde_json::from_str(&row.try_get::<String, _>(0).unwrap()).unwrap();
        let status = data["status"].as_str().unwrap_or("not_found").to_owned();
        *looked_up.entry(status).or_default() += 1;
    }
    let rows_total: i64 = attempts.try_get(0).unwrap();
    let undone: Option<i64> = attempts.try_get(1).unwrap();
    println!(
        "dials: {} ({at_kill} before the kill), attempt rows: {rows_total} ({} undone: never \
         reached the carrier), carrier lookups: {looked_up:?}, sms: {sms_states:?}",
        created.len(),
        undone.unwrap_or(0),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_resumes_its_campaign_on_sqlite() {
    survives_a_kill(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_resumes_its_campaign_on_postgres() {
    survives_a_kill(TestDb::postgres().await).await;
}
