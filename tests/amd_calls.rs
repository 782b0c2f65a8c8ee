//! Answering machines on live outbound calls, end to end through the fake Twilio
//! (`tests/fakes/twilio_carrier.rs`): the API places a call with machine detection; the
//! gateway holds the script's greeting while it listens to the callee. A machine's greeting
//! (`fixtures/audio/voicemail_greeting_beep.wav`) gets the voicemail right after its beep and
//! nothing over the greeting; the carrier's asynchronous verdict, when it comes first, wins;
//! a person saying "Hello?" is greeted promptly, a silent one after the silence wait; a
//! machine with no message to leave is hung up on. Also: the API's checks of
//! `voicemail_message`, and the plan of a campaign call rebuilt from the store.

mod common;
mod fakes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::control::{TestControl, assert_error};
use common::db::TestDb;
use common::test_config;
use fakes::twilio_carrier::{
    ACCOUNT_SID, AUTH_TOKEN, Behaviour, CallRecord, CarrierConfig, FakeCarrier, OUR_NUMBER, Outcome,
};
use serde_json::{Value, json};
use voicegw::audio::Encoding;
use voicegw::control::dial::carriers_from_config;
use voicegw::script::fixture_voice::FixtureVoice;
use voicegw::store::tenants::{Plan, Role};

const CALLEE: &str = "+14155550123";
const LIMIT: Duration = Duration::from_secs(40);
/// One media frame, ms.
const FRAME_MS: u64 = 20;
const VOICEMAIL: &str = "Hi there, this is Destiny from Acme Dental, calling about your appointment on Tuesday at 3 PM. Please call us back to confirm it. Goodbye.";
const OPENING: &str = "Hi there, this is Destiny calling from Acme Dental. Are you still able to make your appointment on Tuesday at 3 PM? Press 1 or say yes to confirm, press 2 or say no to reschedule.";
const DAY_CHOSEN: &str =
    "Thank you. Someone from Acme Dental will call you back to set the time on that day.";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

struct Setup {
    api: TestControl,
    carrier: FakeCarrier,
    key: String,
    _cache: tempfile::TempDir,
}

/// A gateway whose Twilio account is the fake's (progress steps `step_delay` apart; the
/// asynchronous verdict comes five steps after the answer), and a tenant owning the fake's
/// number with script `appointment` (the shipped appointment script, recorded prompts).
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
        .create_api_key(Some(tenant.id), Role::Agent, "amd")
        .await
        .unwrap();
    let source =
        std::fs::read_to_string(root().join("scripts/appointment_confirmation.dsc")).unwrap();
    store
        .add_script_version(tenant.id, "appointment", &source)
        .await
        .unwrap();
    store
        .add_phone_number(tenant.id, OUR_NUMBER, "twilio")
        .await
        .unwrap();
    Setup {
        api,
        carrier,
        key,
        _cache: cache,
    }
}

/// Places a call to `CALLEE` with `extra` fields; returns its id and carrier sid.
async fn place(s: &Setup, extra: Value) -> (String, String) {
    let mut body = json!({"to": CALLEE, "from": OUR_NUMBER, "script": "appointment",
        "variables": {"tenantName": "Acme Dental", "appointmentDate": "Tuesday at 3 PM"},
        "machine_detection": "detect_message_end"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let created = s.api.post("/v1/calls", &s.key, &body).await;
    assert_eq!(created.0.as_u16(), 202, "{:?}", created.1);
    (
        created.1["id"].as_str().unwrap().to_owned(),
        created.1["carrier_sid"].as_str().unwrap().to_owned(),
    )
}

/// The finished call as the fake saw it (no protocol breach).
async fn finished(s: &Setup, sid: &str) -> CallRecord {
    let record = s.carrier.wait_finished(sid, LIMIT).await.unwrap();
    assert!(record.finished, "{record:?}");
    assert!(record.violations.is_empty(), "{:?}", record.violations);
    record
}

/// Polls the call until its outcome is set (or `LIMIT`); the call and its events.
async fn settled(s: &Setup, id: &str) -> (Value, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let call = loop {
        let (_, call) = s.api.get(&format!("/v1/calls/{id}"), &s.key).await;
        if call["outcome"].is_string() && call["status"] == "completed"
            || tokio::time::Instant::now() >= deadline
        {
            break call;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, events) = s
        .api
        .get(&format!("/v1/calls/{id}/events?limit=1000"), &s.key)
        .await;
    (call, events["events"].as_array().unwrap().clone())
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// `pcm` as heard through μ-law, from its first non-silent sample.
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

fn recording(text: &str) -> Vec<i16> {
    let voice = FixtureVoice::load(&root().join("fixtures/audio/prompts")).unwrap();
    heard(&voice.clip(text).unwrap())
}

fn fixture(name: &str) -> Vec<i16> {
    hound::WavReader::open(root().join("fixtures/audio").join(name))
        .unwrap()
        .samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

/// Where the last sound of a fixture ends, ms (its trailing silence is digital zero).
fn sound_end_ms(name: &str) -> u64 {
    let audio = fixture(name);
    let last = audio.iter().rposition(|&s| s != 0).unwrap();
    (last as u64 + 1) * 1000 / 8000
}

/// When the gateway's first audio reached the fake, ms of the callee's audio.
fn first_audio_ms(record: &CallRecord) -> u64 {
    let stream = record.stream.as_ref().expect("the stream ran");
    u64::from(stream.first_media_at_frame.expect("the gateway spoke")) * FRAME_MS
}

async fn a_machine_gets_the_voicemail_right_after_its_beep(db: TestDb) {
    let s = setup(db, Duration::from_millis(20)).await;
    // The carrier cannot tell: the gateway's own detector decides.
    s.carrier.script(
        CALLEE,
        Outcome::Machine {
            answered_by: "unknown".into(),
            behaviour: Behaviour::wav("voicemail_greeting_beep.wav", 0),
        },
    );
    let (id, sid) = place(&s, json!({})).await;
    let record = finished(&s, &sid).await;
    let form = |name: &str| {
        record
            .create_form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let public = s.api.gw.http_url("");
    assert_eq!(
        form("MachineDetection").as_deref(),
        Some("DetectMessageEnd")
    );
    assert_eq!(form("AsyncAmd").as_deref(), Some("true"));
    assert_eq!(
        form("AsyncAmdStatusCallback"),
        Some(format!("{public}/twilio/amd"))
    );
    assert_eq!(record.amd_callbacks.len(), 1);
    assert_eq!(record.amd_callbacks[0].status, Some(200));

    // Nothing over the greeting: the first audio comes right after the beep has ended.
    let beep_end = sound_end_ms("voicemail_greeting_beep.wav");
    let spoke = first_audio_ms(&record);
    assert!(
        spoke + FRAME_MS >= beep_end && spoke <= beep_end + 400,
        "the voicemail started at {spoke} ms, the beep ended at {beep_end} ms"
    );
    // The message is the script's [voicemail] node, whole, then the gateway hung up.
    let stream = record.stream.as_ref().unwrap();
    let played = decoded(&stream.media);
    let message = recording(VOICEMAIL);
    assert!(
        played.len() >= message.len() - 160,
        "{} samples",
        played.len()
    );
    assert!(
        played[..8_000] == message[..8_000],
        "the message is the recording"
    );
    assert!(stream.closed_by_gateway);

    let (call, events) = settled(&s, &id).await;
    assert_eq!(call["outcome"], "voicemail", "{call}");
    assert_eq!(call["answered_by"], "machine_end_beep", "{call}");
    let amd: Vec<(&str, &str)> = of_type(&events, "amd")
        .iter()
        .map(|e| {
            (
                e["data"]["verdict"].as_str().unwrap(),
                e["data"]["by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        amd,
        [
            ("machine_start", "gateway"),
            ("machine_end_beep", "gateway")
        ]
    );
    let left = of_type(&events, "voicemail_left");
    assert_eq!(left.len(), 1, "{events:?}");
    assert_eq!(left[0]["data"]["beep"], true);
    let left_ms = left[0]["data"]["ms"].as_u64().unwrap();
    assert!(left_ms + FRAME_MS >= beep_end, "{left_ms}");
    assert!(of_type(&events, "script_node_entered").is_empty());
}
on_both!(machine, a_machine_gets_the_voicemail_right_after_its_beep);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carriers_verdict_leaves_the_calls_own_message() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    s.carrier.script(
        CALLEE,
        Outcome::Machine {
            answered_by: "machine_end_beep".into(),
            behaviour: Behaviour::wav("voicemail_greeting_beep.wav", 0),
        },
    );
    let template =
        "Thank you. Someone from {{ tenantName }} will call you back to set the time on that day.";
    let (id, sid) = place(&s, json!({"voicemail_message": template})).await;
    let record = finished(&s, &sid).await;
    // The carrier's verdict (five progress steps after the answer) came long before the beep.
    let spoke = first_audio_ms(&record);
    assert!(
        spoke < 1_500,
        "the message started at {spoke} ms, not on the verdict"
    );
    let played = decoded(&record.stream.as_ref().unwrap().media);
    let message = recording(DAY_CHOSEN);
    assert!(played.len() >= 8_000 && played[..8_000] == message[..8_000]);

    let (call, events) = settled(&s, &id).await;
    assert_eq!(call["outcome"], "voicemail", "{call}");
    assert_eq!(call["answered_by"], "machine_end_beep");
    let amd = of_type(&events, "amd");
    assert_eq!(amd.len(), 1, "{amd:?}");
    assert_eq!(amd[0]["data"]["by"], "carrier");
    assert_eq!(amd[0]["data"]["verdict"], "machine_end_beep");
    assert_eq!(of_type(&events, "voicemail_left").len(), 1);
    assert_eq!(
        of_type(&events, "answered_by").len(),
        1,
        "the webhook's record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_saying_hello_is_greeted_promptly() {
    // Slow steps: the carrier's verdict comes two seconds after the answer, too late to matter.
    let s = setup(TestDb::sqlite().await, Duration::from_millis(400)).await;
    s.carrier.script(
        CALLEE,
        Outcome::Answer(Behaviour::wav("human_answer.wav", 0).hang_up_after(175)),
    );
    let (id, sid) = place(&s, json!({})).await;
    let record = finished(&s, &sid).await;
    let hello_end = sound_end_ms("human_answer.wav");
    let spoke = first_audio_ms(&record);
    assert!(
        spoke >= hello_end && spoke <= hello_end + 1_500,
        "greeted at {spoke} ms, the hello ended at {hello_end} ms"
    );
    let played = decoded(&record.stream.as_ref().unwrap().media);
    let opening = recording(OPENING);
    assert!(played.len() > 4_000 && played[..4_000] == opening[..4_000]);

    let (call, events) = settled(&s, &id).await;
    assert_eq!(call["answered_by"], "human", "{call}");
    let amd = of_type(&events, "amd");
    assert_eq!(amd.len(), 1, "{amd:?}");
    assert_eq!(amd[0]["data"]["verdict"], "human");
    assert_eq!(amd[0]["data"]["by"], "gateway");
    assert!(of_type(&events, "voicemail_left").is_empty());
    assert!(!of_type(&events, "script_node_entered").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_person_is_greeted_after_the_silence_wait() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(1_000)).await;
    s.carrier.script(
        CALLEE,
        Outcome::Answer(Behaviour::silence().hang_up_after(200)),
    );
    let (id, sid) = place(&s, json!({})).await;
    let record = finished(&s, &sid).await;
    let spoke = first_audio_ms(&record);
    assert!(
        (2_500..=2_700).contains(&spoke),
        "greeted at {spoke} ms, not after 2.5 s of silence"
    );
    let (_, events) = settled(&s, &id).await;
    let amd = of_type(&events, "amd");
    assert_eq!(amd.len(), 1, "{amd:?}");
    assert_eq!(amd[0]["data"]["verdict"], "unknown");
    let ms = amd[0]["data"]["ms"].as_u64().unwrap();
    assert!((2_500..=2_540).contains(&ms), "{ms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_with_no_message_is_hung_up_on() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    s.carrier.script(
        CALLEE,
        Outcome::Machine {
            answered_by: "unknown".into(),
            behaviour: Behaviour::wav("voicemail_greeting_beep.wav", 0),
        },
    );
    // The echo agent has no voicemail of its own, and the call gives none.
    let created = s
        .api
        .post(
            "/v1/calls",
            &s.key,
            &json!({"to": CALLEE, "from": OUR_NUMBER, "agent": "echo",
                    "machine_detection": "enable"}),
        )
        .await;
    assert_eq!(created.0.as_u16(), 202, "{:?}", created.1);
    let id = created.1["id"].as_str().unwrap().to_owned();
    let sid = created.1["carrier_sid"].as_str().unwrap().to_owned();
    let record = finished(&s, &sid).await;
    let stream = record.stream.as_ref().unwrap();
    assert!(stream.media.is_empty(), "nothing was said to the machine");
    assert!(stream.closed_by_gateway);
    let beep_end = sound_end_ms("voicemail_greeting_beep.wav");
    assert!(
        u64::from(stream.frames_sent) * FRAME_MS < beep_end,
        "hung up at once, not after the greeting ({} frames)",
        stream.frames_sent
    );
    assert_eq!(
        record
            .create_form
            .iter()
            .find(|(k, _)| k == "MachineDetection")
            .map(|(_, v)| v.as_str()),
        Some("Enable")
    );
    let (call, events) = settled(&s, &id).await;
    assert_eq!(call["outcome"], "machine_no_message", "{call}");
    assert_eq!(call["answered_by"], "machine_start", "{call}");
    assert!(of_type(&events, "voicemail_left").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voicemail_message_is_checked() {
    let s = setup(TestDb::sqlite().await, Duration::from_millis(20)).await;
    let body = |extra: Value| {
        let mut body = json!({"to": CALLEE, "from": OUR_NUMBER, "agent": "echo",
            "variables": {"name": "Sam"}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({"voicemail_message": "Call us."}), "invalid_body"),
        (
            json!({"voicemail_message": " ", "machine_detection": "enable"}),
            "invalid_body",
        ),
        (
            json!({"voicemail_message": "Hi {{ name", "machine_detection": "enable"}),
            "invalid_voicemail_message",
        ),
        (
            json!({"voicemail_message": "Hi {{ nick }}", "machine_detection": "enable"}),
            "missing_variables",
        ),
        (
            json!({"voicemail_message": "x".repeat(2001), "machine_detection": "enable"}),
            "invalid_body",
        ),
    ];
    for (extra, code) in cases {
        let got = s.api.post("/v1/calls", &s.key, &body(extra.clone())).await;
        assert_error(&got, 422, code);
    }
    assert!(s.carrier.calls().is_empty(), "nothing was dialed");
    let (_, listed) = s.api.get("/v1/calls", &s.key).await;
    assert!(
        listed["calls"].as_array().unwrap().is_empty(),
        "nothing was stored"
    );
}

async fn a_campaign_calls_plan_comes_from_its_campaign(db: TestDb) {
    use sqlx::Connection;
    use voicegw::store::call_records::{CallSetup, Created};
    use voicegw::store::calls::{Direction, NewCall};

    let store = &db.store;
    let tenant = store.create_tenant("acme", Plan::Full).await.unwrap();
    let new = NewCall {
        direction: Direction::Outbound,
        from: OUR_NUMBER.into(),
        to: CALLEE.into(),
        carrier: "twilio".into(),
        carrier_sid: None,
    };
    let setup = CallSetup {
        agent: "echo".into(),
        ..CallSetup::default()
    };
    let call = |created: Created| match created {
        Created::New(call) => call,
        Created::Existing { call, .. } => call,
    };
    let plain = call(
        store
            .create_call_with(tenant.id, &new, &setup)
            .await
            .unwrap(),
    );
    let dialed = call(
        store
            .create_call_with(tenant.id, &new, &setup)
            .await
            .unwrap(),
    );
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let tenant_id = tenant.id.to_string();
    for (campaign, detection, message) in [
        ("cmp-1", Some("detect_message_end"), Some("Hi {{ name }}")),
        ("cmp-2", None, None),
    ] {
        sqlx::query(
            "INSERT INTO campaigns (id, tenant_id, name, status, agent, caller_ids, carrier, \
             calling_window, retry_policy, max_concurrency, machine_detection, \
             voicemail_message, created_us, updated_us) \
             VALUES ($1, $2, 'c', 'running', 'echo', '[]', 'twilio', '{}', '{}', 1, $3, $4, 1, 1)",
        )
        .bind(campaign)
        .bind(tenant_id.clone())
        .bind(detection)
        .bind(message)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO dial_jobs (id, campaign_id, tenant_id, position, phone, state, due_us, \
             created_us, updated_us) VALUES ($1, $2, $3, 0, $4, 'dialing', 1, 1, 1)",
        )
        .bind(format!("job-{campaign}"))
        .bind(campaign)
        .bind(tenant_id.clone())
        .bind(CALLEE)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE calls SET job_id = 'job-cmp-1', attempt = 1 WHERE id = $1")
        .bind(dialed.id.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    let plan = store.campaign_call_plan(dialed.id).await.unwrap().unwrap();
    assert_eq!(
        plan.machine_detection.as_deref(),
        Some("detect_message_end")
    );
    assert_eq!(plan.voicemail_message.as_deref(), Some("Hi {{ name }}"));
    assert_eq!(store.campaign_call_plan(plain.id).await.unwrap(), None);
    sqlx::query("UPDATE calls SET job_id = 'job-cmp-2' WHERE id = $1")
        .bind(dialed.id.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    let plan = store.campaign_call_plan(dialed.id).await.unwrap().unwrap();
    assert_eq!(plan.machine_detection, None);
}
on_both!(campaign_plan, a_campaign_calls_plan_comes_from_its_campaign);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_agent_leaves_the_calls_message_synthesized_during_the_greeting() {
    use common::{CarrierSim, Received, SimConfig, TestGateway, wav};
    use fakes::deepgram_listen::{FakeListen, ListenConfig};
    use fakes::deepgram_speak::FakeDeepgramSpeak;
    use fakes::openai_chat::{ChatFake, ChatFakeConfig};
    use voicegw::call::CallId;
    use voicegw::call::registry::{ExpectedCall, OutboundPlan};

    const GREETING: &str = "Thanks for calling Acme Dental.";
    const MESSAGE: &str = "Hi Sam, please call Acme Dental back about Tuesday.";
    let listen = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let speak = FakeDeepgramSpeak::start().await.expect("start the fake");
    let chat = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    let mut config = test_config();
    fakes::use_fakes(&mut config, &listen, &speak, &chat);
    config.conversation.greeting = GREETING.into();
    let gw = TestGateway::start(config).await;
    let id = CallId::new();
    let mut expected = ExpectedCall::new(id, "llm");
    expected.outbound = Some(OutboundPlan::detect(Some(MESSAGE.into())));
    gw.gateway.registry().expect(&id.to_string(), expected);

    let params = [("call_id".to_owned(), json!(id.to_string()))]
        .into_iter()
        .collect();
    let mut sim = CarrierSim::connect_with(&gw, SimConfig::twilio(), params).await;
    sim.say_in(0, wav("voicemail_greeting_beep.wav"));
    assert!(sim.run_until(20_000, |s| s.closed).await, "the call ended");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let close = sim.close.clone().expect("closed with a frame");
    assert_eq!(close, (1000, "voicemail left".to_owned()));
    let first = sim
        .received
        .iter()
        .find_map(|r| match r {
            Received::Media { at_ms, .. } => Some(*at_ms),
            _ => None,
        })
        .expect("the message was sent");
    let beep_end = sound_end_ms("voicemail_greeting_beep.wav");
    assert!(
        first + FRAME_MS >= beep_end && first <= beep_end + 400,
        "the message started at {first} ms, the beep ended at {beep_end} ms"
    );
    // The synthesizer was asked for the message (besides the fallback line every gateway
    // prepares at start), never for the greeting.
    let spoken = speak.spoken_texts();
    assert_eq!(
        spoken.iter().filter(|t| *t == MESSAGE).count(),
        1,
        "{spoken:?}"
    );
    assert!(!spoken.iter().any(|t| t == GREETING), "{spoken:?}");
}
