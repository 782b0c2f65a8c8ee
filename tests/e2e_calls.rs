//! Calls end to end through the fake Twilio (`tests/fakes/twilio_carrier.rs`): the API places
//! a call, the fake dials back, fetches our TwiML, opens the signed stream, hears the tenant's
//! script (recorded prompts), presses keys and sends its status callbacks; the API then shows
//! the call completed with the session's and the carrier's events in time order, and an SSE
//! client connected before the call was answered saw them live. Inbound calls route by number
//! to the tenant's script; unmapped numbers are told so; bad signatures, replayed and
//! out-of-order callbacks, ending a live call, and a carrier refusal.

mod common;
mod fakes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::control::{TestControl, assert_error};
use common::db::TestDb;
use common::test_config;
use fakes::twilio_carrier::{
    ACCOUNT_SID, AUTH_TOKEN, Behaviour, CarrierConfig, FakeCarrier, OUR_NUMBER, Outcome,
};
use fakes::twilio_rest::Fault;
use futures::StreamExt;
use serde_json::{Value, json};
use voicegw::audio::Encoding;
use voicegw::carrier::signature::twilio_signature;
use voicegw::carrier::twilio_api::encode_form;
use voicegw::control::dial::carriers_from_config;
use voicegw::script::fixture_voice::FixtureVoice;
use voicegw::store::TenantId;
use voicegw::store::tenants::{Plan, Role};

const CALLEE: &str = "+14155550123";
const LIMIT: Duration = Duration::from_secs(30);
const OPENING: &str = "Hi there, this is Destiny calling from Acme Dental. Are you still able to make your appointment on Tuesday at 3 PM? Press 1 or say yes to confirm, press 2 or say no to reschedule.";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

struct Setup {
    api: TestControl,
    carrier: FakeCarrier,
    key: String,
    tenant: TenantId,
    _cache: tempfile::TempDir,
}

/// A gateway with the control plane whose Twilio account is the fake's, and a tenant (FULL)
/// owning the fake's number with script `appointment` (the shipped appointment script).
async fn setup(db: TestDb, step_delay: Duration) -> Setup {
    let carrier = FakeCarrier::start(CarrierConfig {
        step_delay,
        ..CarrierConfig::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.auth.public_url = Some(format!("http://{}", listener.local_addr().unwrap()));
    config.auth.twilio_auth_token = Some(AUTH_TOKEN.to_owned());
    config.twilio.account_sid = Some(ACCOUNT_SID.to_owned());
    config.twilio.base_url = carrier.rest().base_url();
    config.script.recorded_prompts = root().join("fixtures/audio/prompts");
    config.script.cache_dir = cache.path().join("cache");
    let carriers = carriers_from_config(&config).unwrap();
    let api = TestControl::start_on(listener, db, config, carriers).await;
    let store = &api.db.store;
    let tenant = store.create_tenant("acme", Plan::Full).await.unwrap();
    let (_, key) = store
        .create_api_key(Some(tenant.id), Role::Agent, "e2e")
        .await
        .unwrap();
    let source =
        std::fs::read_to_string(root().join("scripts/appointment_confirmation.dsc")).unwrap();
    store
        .add_script_version(tenant.id, "appointment", &source)
        .await
        .unwrap();
    let number = store
        .add_phone_number(tenant.id, OUR_NUMBER, "twilio")
        .await
        .unwrap();
    store
        .set_number_script(
            voicegw::store::Scope::Tenant(tenant.id),
            number.id,
            Some("appointment"),
        )
        .await
        .unwrap();
    Setup {
        api,
        carrier,
        key,
        tenant: tenant.id,
        _cache: cache,
    }
}

/// `pcm` as a caller hears it through μ-law, from its first non-silent sample.
fn heard(pcm: &[i16]) -> Vec<i16> {
    let mut ulaw = Vec::new();
    Encoding::Mulaw.encode_into(pcm, &mut ulaw);
    decoded(&ulaw)
}

fn decoded(ulaw: &[u8]) -> Vec<i16> {
    let mut out = Vec::new();
    Encoding::Mulaw.decode_into(ulaw, &mut out);
    let first = out.iter().position(|&s| s != 0).unwrap_or(out.len());
    out.split_off(first)
}

/// Polls `GET /v1/calls/{id}` until `done` holds (or `LIMIT`); the call as it is then.
async fn wait_call(api: &TestControl, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (_, call) = api.get(&format!("/v1/calls/{id}"), key).await;
        if done(&call) || tokio::time::Instant::now() >= deadline {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads an SSE response to its end (or `limit`): `(id, event, data)` of each event.
async fn read_sse(response: reqwest::Response, limit: Duration) -> Vec<(String, String, Value)> {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(str::to_owned))
                };
                if let (Some(id), Some(event), Some(data)) =
                    (field("id: "), field("event: "), field("data: "))
                {
                    events.push((id, event, serde_json::from_str(&data).unwrap()));
                }
            }
        }
    })
    .await;
    events
}

async fn an_outbound_call_runs_the_tenants_script(db: TestDb) {
    // Slow progress steps: the SSE client connects while the call is still ringing.
    let s = setup(db, Duration::from_millis(300)).await;
    s.carrier.script(
        CALLEE,
        Outcome::Answer(Behaviour::silence().with_dtmf(75, '1').with_dtmf(200, '9')),
    );
    let created = s
        .api
        .post(
            "/v1/calls",
            &s.key,
            &json!({"to": CALLEE, "from": OUR_NUMBER, "script": "appointment",
                    "variables": {"appointmentDate": "Tuesday at 3 PM"}}),
        )
        .await;
    assert_eq!(created.0.as_u16(), 202, "{:?}", created.1);
    let id = created.1["id"].as_str().unwrap().to_owned();
    let sid = created.1["carrier_sid"].as_str().unwrap().to_owned();
    assert_eq!(created.1["agent"], "script:appointment");
    let sse = s
        .api
        .http
        .get(s.api.url(&format!("/v1/calls/{id}/events/stream")))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    let watcher = tokio::spawn(read_sse(sse, LIMIT));

    let record = s.carrier.wait_finished(&sid, LIMIT).await.unwrap();
    assert!(record.finished, "{record:?}");
    assert!(record.violations.is_empty(), "{:?}", record.violations);
    let form = |name: &str| {
        record
            .create_form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let public = s.api.gw.http_url("");
    assert_eq!(
        form("Url").unwrap(),
        format!("{public}/twilio/outbound?call_id={id}")
    );
    assert_eq!(
        form("StatusCallback").unwrap(),
        format!("{public}/twilio/status?call_id={id}")
    );
    let stream = record.stream.as_ref().expect("the stream ran");
    assert_eq!(stream.custom_parameters["call_id"], id);
    // The caller heard the script's opening prompt, recorded (no synthesizer).
    let recorded = FixtureVoice::load(&root().join("fixtures/audio/prompts")).unwrap();
    let opening = heard(&recorded.clip(OPENING).unwrap());
    let played = decoded(&stream.media);
    assert!(
        played.len() > 4_000,
        "the caller heard {} samples",
        played.len()
    );
    assert!(
        played[..4_000] == opening[..4_000],
        "the opening is the recording"
    );
    assert_eq!(record.final_status.as_deref(), Some("completed"));

    let call = wait_call(&s.api, &s.key, &id, |c| c["status"] == "completed").await;
    assert_eq!(call["status"], "completed", "{call:?}");
    assert!(call["answered_at"].is_string() && call["ended_at"].is_string());
    let (_, events) = s
        .api
        .get(&format!("/v1/calls/{id}/events?limit=1000"), &s.key)
        .await;
    let events = events["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in ["stream_started", "dtmf", "call_ended", "carrier_status"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let times: Vec<(i64, i64)> = events
        .iter()
        .map(|e| (e["at_us"].as_i64().unwrap(), e["seq"].as_i64().unwrap()))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "time order: {times:?}"
    );
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "carrier_status")
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"ringing") && statuses.contains(&"completed"),
        "{statuses:?}"
    );
    let started = kinds.iter().position(|k| *k == "stream_started").unwrap();
    let ended = kinds.iter().position(|k| *k == "call_ended").unwrap();
    assert!(started < ended);

    // Live events come as they are recorded: the session's in their order, the carrier's as
    // its callbacks arrive; their ids (cursors) put them in time order.
    let seen = watcher.await.unwrap();
    let session_seen: Vec<i64> = seen
        .iter()
        .map(|(_, _, e)| e["seq"].as_i64().unwrap())
        .filter(|seq| *seq < (1 << 40))
        .collect();
    assert!(
        session_seen.windows(2).all(|w| w[0] < w[1]),
        "{session_seen:?}"
    );
    let mut by_cursor: Vec<(i64, i64, String)> = seen
        .iter()
        .map(|(cursor, kind, _)| {
            let (at, seq) = cursor.split_once('.').unwrap();
            (at.parse().unwrap(), seq.parse().unwrap(), kind.clone())
        })
        .collect();
    by_cursor.sort();
    let seen_kinds: Vec<&str> = by_cursor.iter().map(|(_, _, k)| k.as_str()).collect();
    assert_eq!(seen_kinds, kinds, "the SSE client saw every event");
    assert_eq!(seen[0].2["call_id"], id);
}
on_both!(outbound, an_outbound_call_runs_the_tenants_script);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_routes_to_the_numbers_script() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    let gateway = s.api.gw.http_url("");
    let sid = s.carrier.inbound(
        &gateway,
        OUR_NUMBER,
        CALLEE,
        Behaviour::silence().with_dtmf(75, '1').with_dtmf(150, '9'),
    );
    let record = s.carrier.wait_finished(&sid, LIMIT).await.unwrap();
    assert!(record.violations.is_empty(), "{:?}", record.violations);
    let stream = record.stream.as_ref().expect("the stream ran");
    let id = stream.custom_parameters["call_id"].clone();
    let recorded = FixtureVoice::load(&root().join("fixtures/audio/prompts")).unwrap();
    let opening = heard(&recorded.clip(OPENING).unwrap());
    let played = decoded(&stream.media);
    assert!(played.len() > 4_000 && played[..4_000] == opening[..4_000]);

    let call = wait_call(&s.api, &s.key, &id, |c| c["status"] == "completed").await;
    assert_eq!(call["direction"], "inbound");
    assert_eq!(call["status"], "completed", "{call:?}");
    assert_eq!(call["carrier_sid"], sid);
    assert_eq!(call["agent"], "script:appointment");
    assert_eq!(call["tenant_id"], s.tenant.to_string());

    // A replay of the voice webhook for the same CallSid is the same call.
    let replay = post_signed(
        &s,
        "/twilio/voice",
        &[
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("From", CALLEE),
            ("To", OUR_NUMBER),
            ("CallStatus", "ringing"),
            ("Direction", "inbound"),
        ],
    )
    .await;
    assert_eq!(replay.0, 200);
    assert!(replay.1.contains(&id), "{}", replay.1);
    let (_, listed) = s.api.get("/v1/calls?direction=inbound", &s.key).await;
    assert_eq!(listed["calls"].as_array().unwrap().len(), 1);
}

/// POSTs `params` to `path`, signed as Twilio does; the status and body.
async fn post_signed(s: &Setup, path: &str, params: &[(&str, &str)]) -> (u16, String) {
    let url = s.api.gw.http_url(path);
    let signature = twilio_signature(AUTH_TOKEN, &url, params);
    post_form(s, path, params, &signature).await
}

async fn post_form(
    s: &Setup,
    path: &str,
    params: &[(&str, &str)],
    signature: &str,
) -> (u16, String) {
    let response = s
        .api
        .http
        .post(s.api.gw.http_url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(encode_form(params))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_numbers_are_told_and_bad_signatures_refused() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    let gateway = s.api.gw.http_url("");
    let sid = s
        .carrier
        .inbound(&gateway, "+18005550000", CALLEE, Behaviour::silence());
    let record = s.carrier.wait_finished(&sid, LIMIT).await.unwrap();
    assert!(record.stream.is_none());
    assert!(
        record.verbs.iter().any(|v| v == "Say"),
        "{:?}",
        record.verbs
    );
    let fetched = &record.twiml_fetches[0];
    assert_eq!(fetched.status, Some(200));
    assert!(fetched.body.contains("not in service"), "{}", fetched.body);
    let metrics = common::http_get(&s.api.gw.http_url("/metrics")).await.1;
    assert!(
        metrics.contains(
            "voicegw_webhooks_total{carrier=\"twilio\",kind=\"voice\",outcome=\"unknown_number\"} 1"
        ),
        "{metrics}"
    );

    let params = [
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("AccountSid", ACCOUNT_SID),
        ("CallStatus", "completed"),
    ];
    let forged = twilio_signature(
        "not-the-token",
        &s.api.gw.http_url("/twilio/status"),
        &params,
    );
    let (status, body) = post_form(&s, "/twilio/status", &params, &forged).await;
    assert_eq!(status, 403);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = post_form(&s, "/twilio/voice", &params, "").await;
    assert_eq!(status, 403);
    // A signed callback for a call nobody knows: 200, nothing to retry.
    assert_eq!(post_signed(&s, "/twilio/status", &params).await.0, 200);
    // A signed but malformed one is a 400 naming the field.
    let (status, body) = post_signed(&s, "/twilio/status", &[("AccountSid", ACCOUNT_SID)]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("CallSid") || body.contains("CallStatus"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_out_of_order_or_replayed_never_move_a_call_back() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    // The person never answers before we look: a long ring.
    s.carrier.script(CALLEE, Outcome::NoAnswer);
    let created = s
        .api
        .post(
            "/v1/calls",
            &s.key,
            &json!({"to": CALLEE, "from": OUR_NUMBER, "agent": "echo"}),
        )
        .await;
    assert_eq!(created.0.as_u16(), 202, "{:?}", created.1);
    let id = created.1["id"].as_str().unwrap().to_owned();
    let sid = created.1["carrier_sid"].as_str().unwrap().to_owned();
    s.carrier.wait_finished(&sid, LIMIT).await.unwrap();
    let call = wait_call(&s.api, &s.key, &id, |c| c["status"] == "no_answer").await;
    assert_eq!(call["status"], "no_answer", "{call:?}");
    let before = s.api.get(&format!("/v1/calls/{id}/events"), &s.key).await.1["events"]
        .as_array()
        .unwrap()
        .len();
    // A late `ringing` (lower sequence number) and a replay of the final callback.
    let late = [
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("CallStatus", "ringing"),
        ("SequenceNumber", "1"),
    ];
    assert_eq!(post_signed(&s, "/twilio/status", &late).await.0, 200);
    assert_eq!(post_signed(&s, "/twilio/status", &late).await.0, 200);
    let call = s.api.get(&format!("/v1/calls/{id}"), &s.key).await.1;
    assert_eq!(call["status"], "no_answer");
    let after = s.api.get(&format!("/v1/calls/{id}/events"), &s.key).await.1["events"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        after <= before + 1,
        "a replay is recorded once: {before} → {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_live_call_hangs_it_up() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    s.carrier
        .script(CALLEE, Outcome::Answer(Behaviour::silence()));
    let created = s
        .api
        .post(
            "/v1/calls",
            &s.key,
            &json!({"to": CALLEE, "from": OUR_NUMBER, "agent": "echo"}),
        )
        .await;
    let id = created.1["id"].as_str().unwrap().to_owned();
    let sid = created.1["carrier_sid"].as_str().unwrap().to_owned();
    let live = wait_call(&s.api, &s.key, &id, |c| c["status"] == "in_progress").await;
    assert_eq!(live["status"], "in_progress", "{live:?}");
    let ended = s.api.delete(&format!("/v1/calls/{id}"), &s.key).await;
    assert_eq!(ended.0.as_u16(), 200, "{:?}", ended.1);
    let record = s.carrier.wait_finished(&sid, LIMIT).await.unwrap();
    assert_eq!(record.final_status.as_deref(), Some("completed"));
    let call = wait_call(&s.api, &s.key, &id, |c| c["status"] == "completed").await;
    assert_eq!(call["status"], "completed");
    assert_error(
        &s.api.delete(&format!("/v1/calls/{id}"), &s.key).await,
        409,
        "call_ended",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_refusal_fails_the_call() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    s.carrier.rest().push_fault(Fault::Error {
        status: 400,
        code: 21215,
        message: "Account not authorized to call this number".into(),
    });
    let refused = s
        .api
        .post(
            "/v1/calls",
            &s.key,
            &json!({"to": CALLEE, "from": OUR_NUMBER, "agent": "echo"}),
        )
        .await;
    assert!(assert_error(&refused, 502, "carrier_refused").contains("not authorized"));
    let (_, listed) = s.api.get("/v1/calls", &s.key).await;
    assert_eq!(listed["calls"][0]["status"], "failed");
    assert!(s.carrier.calls().is_empty(), "no call was placed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_call_is_cancelled_and_a_key_dials_once() {
    // Slow progress: the call rings for a while before it would be answered.
    let s = setup(TestDb::sqlite().await, Duration::from_millis(1_500)).await;
    let body = json!({"to": CALLEE, "from": OUR_NUMBER, "agent": "echo"});
    let post = || async {
        let response = s
            .api
            .http
            .post(s.api.url("/v1/calls"))
            .bearer_auth(&s.key)
            .header("Idempotency-Key", "ring-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    let first = post().await;
    assert_eq!(first.0, 202, "{:?}", first.1);
    let again = post().await;
    assert_eq!(again.0, 200);
    assert_eq!(again.1["id"], first.1["id"]);
    assert_eq!(s.carrier.rest().created_calls().len(), 1, "dialled once");

    let id = first.1["id"].as_str().unwrap().to_owned();
    let sid = first.1["carrier_sid"].as_str().unwrap().to_owned();
    let ringing = wait_call(&s.api, &s.key, &id, |c| c["status"] == "ringing").await;
    assert_eq!(ringing["status"], "ringing", "{ringing:?}");
    let cancelled = s.api.delete(&format!("/v1/calls/{id}"), &s.key).await;
    assert_eq!(cancelled.0.as_u16(), 200, "{:?}", cancelled.1);
    assert_eq!(cancelled.1["status"], "canceled");
    let record = s.carrier.wait_finished(&sid, LIMIT).await.unwrap();
    assert_eq!(record.final_status.as_deref(), Some("canceled"));
    assert!(record.stream.is_none(), "a cancelled call never connects");
    let call = s.api.get(&format!("/v1/calls/{id}"), &s.key).await.1;
    assert_eq!(call["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_sid_was_never_stored_is_tracked_by_its_status_callbacks() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    s.carrier.script(CALLEE, Outcome::NoAnswer);
    // Twilio places the call but its answer is lost: the gateway never learns the SID.
    s.carrier.rest().push_fault(Fault::ServerErrorAfterActing);
    let created = s
        .api
        .post(
            "/v1/calls",
            &s.key,
            &json!({"to": CALLEE, "from": OUR_NUMBER, "agent": "echo"}),
        )
        .await;
    assert_eq!(created.0.as_u16(), 502, "{:?}", created.1);
    assert_eq!(created.1["error"]["code"], "carrier_unreachable");
    let listed = s.api.get("/v1/calls", &s.key).await.1;
    let id = listed["calls"][0]["id"].as_str().unwrap().to_owned();
    let sid = s
        .carrier
        .wait_call_to(CALLEE, LIMIT)
        .await
        .expect("the fake dialled");
    let record = s.carrier.wait_finished(&sid, LIMIT).await.unwrap();
    assert!(
        record
            .callbacks
            .iter()
            .all(|c| c.url.ends_with(&format!("/twilio/status?call_id={id}"))),
        "callbacks name the call"
    );
    // The status callbacks alone (nobody answered: no TwiML fetch) bind the SID and end it.
    let call = wait_call(&s.api, &s.key, &id, |c| c["status"] == "no_answer").await;
    assert_eq!(call["status"], "no_answer", "{call:?}");
    assert_eq!(call["carrier_sid"], sid.as_str());
    let metrics = common::http_get(&s.api.gw.http_url("/metrics")).await.1;
    assert!(
        metrics.contains(
            "voicegw_webhooks_total{carrier=\"twilio\",kind=\"status\",outcome=\"sid_bound\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_callback_binds_only_the_call_it_names_and_is_signed_with_its_query() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    // A 500 the fake answers before acting: no call is dialled, the stored one has no SID,
    // and the callbacks below are the test's own.
    s.carrier.rest().push_fault(Fault::ServerError);
    let created = s
        .api
        .post(
            "/v1/calls",
            &s.key,
            &json!({"to": CALLEE, "from": OUR_NUMBER, "agent": "echo"}),
        )
        .await;
    assert_eq!(created.0.as_u16(), 502);
    let listed = s.api.get("/v1/calls", &s.key).await.1;
    let id = listed["calls"][0]["id"].as_str().unwrap().to_owned();
    assert!(listed["calls"][0]["carrier_sid"].is_null(), "{listed:?}");
    let stranger = "CA00000000000000000000000000000bad";
    let path = format!("/twilio/status?call_id={id}");
    // A callback for other numbers does not take the call.
    let other = [
        ("CallSid", stranger),
        ("AccountSid", ACCOUNT_SID),
        ("CallStatus", "ringing"),
        ("To", "+14155550999"),
        ("From", OUR_NUMBER),
    ];
    assert_eq!(post_signed(&s, &path, &other).await.0, 200);
    let call = s.api.get(&format!("/v1/calls/{id}"), &s.key).await.1;
    assert!(call["carrier_sid"].is_null(), "{call:?}");
    // A signature over the URL without its query is refused.
    let ours = [
        ("CallSid", stranger),
        ("AccountSid", ACCOUNT_SID),
        ("CallStatus", "ringing"),
        ("To", CALLEE),
        ("From", OUR_NUMBER),
    ];
    let unsigned_query = twilio_signature(AUTH_TOKEN, &s.api.gw.http_url("/twilio/status"), &ours);
    assert_eq!(post_form(&s, &path, &ours, &unsigned_query).await.0, 403);
    // A malformed call id is a 400.
    let (status, body) = post_signed(&s, "/twilio/status?call_id=nope", &ours).await;
    assert_eq!(status, 400, "{body}");
    // Signed over the full URL, the named call takes the SID.
    assert_eq!(post_signed(&s, &path, &ours).await.0, 200);
    let call = s.api.get(&format!("/v1/calls/{id}"), &s.key).await.1;
    assert_eq!(call["carrier_sid"], stranger);
    assert_eq!(call["status"], "ringing");
    // Once bound, a different SID naming the same call is not taken.
    let again = [
        ("CallSid", "CA00000000000000000000000000000bee"),
        ("AccountSid", ACCOUNT_SID),
        ("CallStatus", "completed"),
        ("To", CALLEE),
        ("From", OUR_NUMBER),
    ];
    assert_eq!(post_signed(&s, &path, &again).await.0, 200);
    let call = s.api.get(&format!("/v1/calls/{id}"), &s.key).await.1;
    assert_eq!(call["carrier_sid"], stranger);
    assert_eq!(call["status"], "ringing");
}
