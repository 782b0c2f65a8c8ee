//! `/v1/calls` over HTTP on SQLite and PostgreSQL: placing a call (the carrier is asked once,
//! with our URLs), idempotency, carrier refusal and silence, reading, listing with filters and
//! cursors, ending calls, bad input with precise codes, and tenant isolation on every route.

mod common;

use std::sync::Arc;

use common::calls::{Asked, CALLEE, PUBLIC_URL, RecordingCarriers, TestTenant, tenant};
use common::control::{ADMIN_KEY, TestControl, assert_error};
use common::db::TestDb;
use common::test_config;
use serde_json::{Value, json};
use voicegw::control::dial::{CarrierName, DialError};
use voicegw::store::Scope;
use voicegw::store::calls::CallStatus;
use voicegw::store::control_events::CONTROL_SEQ_BASE;
use voicegw::store::tenants::Plan;

async fn start(db: TestDb) -> (TestControl, Arc<RecordingCarriers>) {
    let mut config = test_config();
    config.auth.public_url = Some(PUBLIC_URL.to_owned());
    let carriers = Arc::new(RecordingCarriers::default());
    let api = TestControl::start_with_carriers(db, config, carriers.clone()).await;
    (api, carriers)
}

fn body(t: &TestTenant) -> Value {
    json!({"to": CALLEE, "from": t.number, "agent": "echo", "variables": {"name": "Ada"}})
}

async fn post_keyed(api: &TestControl, key: &str, idem: &str, body: &Value) -> (u16, Value) {
    let response = api
        .http
        .post(api.url("/v1/calls"))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn places_reads_and_lists(db: TestDb) {
    let (api, carriers) = start(db).await;
    let a = tenant(&api, "acme", Plan::Full, "+14155550199", "twilio").await;
    let created = api.post("/v1/calls", &a.key, &body(&a)).await;
    assert_eq!(created.0.as_u16(), 202, "{:?}", created.1);
    let call = created.1;
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(call["status"], "queued");
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["to"], CALLEE);
    assert_eq!(call["from"], a.number);
    assert_eq!(call["carrier"], "twilio");
    assert_eq!(call["agent"], "echo");
    assert_eq!(call["variables"], json!({"name": "Ada"}));
    assert_eq!(call["tenant_id"], a.id.to_string());
    assert!(call["carrier_sid"].as_str().unwrap().starts_with("CA"));
    assert!(call["created_at"].as_str().unwrap().ends_with('Z'));

    let placed = carriers.placed();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].call_id, id);
    assert_eq!(
        placed[0].answer_url,
        format!("{PUBLIC_URL}/twilio/outbound?call_id={id}")
    );
    assert_eq!(
        placed[0].status_callback,
        format!("{PUBLIC_URL}/twilio/status?call_id={id}")
    );
    assert_eq!(placed[0].from, a.number);

    let read = api.get(&format!("/v1/calls/{id}"), &a.key).await;
    assert_eq!(read.0.as_u16(), 200);
    assert_eq!(read.1, call);
    let by_admin = api.get(&format!("/v1/calls/{id}"), ADMIN_KEY).await;
    assert_eq!(by_admin.1["id"], id.as_str());

    // The number by id works too, and lists come newest first with a cursor.
    let by_id = json!({"to": "+14155550101", "number_id": a.number_id, "agent": "echo"});
    let second = api.post("/v1/calls", &a.key, &by_id).await;
    assert_eq!(second.0.as_u16(), 202, "{:?}", second.1);
    let third = api.post("/v1/calls", &a.key, &body(&a)).await;
    assert_eq!(third.0.as_u16(), 202);
    let page = api.get("/v1/calls?limit=2", &a.key).await;
    assert_eq!(page.0.as_u16(), 200, "{:?}", page.1);
    let ids: Vec<&str> = page.1["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            third.1["id"].as_str().unwrap(),
            second.1["id"].as_str().unwrap()
        ]
    );
    let cursor = page.1["next_cursor"].as_str().unwrap();
    let rest = api
        .get(&format!("/v1/calls?limit=2&cursor={cursor}"), &a.key)
        .await;
    assert_eq!(rest.1["calls"].as_array().unwrap().len(), 1);
    assert_eq!(rest.1["calls"][0]["id"], id.as_str());
    assert!(rest.1.get("next_cursor").is_none());

    let to_filter = api.get("/v1/calls?to=%2B14155550101", &a.key).await;
    assert_eq!(to_filter.1["calls"].as_array().unwrap().len(), 1);
    let inbound = api.get("/v1/calls?direction=inbound", &a.key).await;
    assert_eq!(inbound.1["calls"].as_array().unwrap().len(), 0);
    let queued = api
        .get("/v1/calls?status=queued&from=%2B14155550199", &a.key)
        .await;
    assert_eq!(queued.1["calls"].as_array().unwrap().len(), 3);
    let later = api
        .get("/v1/calls?created_after=2999-01-01T00:00:00Z", &a.key)
        .await;
    assert_eq!(later.1["calls"].as_array().unwrap().len(), 0);
    let earlier = api
        .get(
            "/v1/calls?created_before=2999-01-01T00:00:00%2B01:00",
            &a.key,
        )
        .await;
    assert_eq!(earlier.1["calls"].as_array().unwrap().len(), 3);
}
on_both!(places, places_reads_and_lists);

async fn idempotency_keys_dial_once(db: TestDb) {
    let (api, carriers) = start(db).await;
    let a = tenant(&api, "acme", Plan::Outbound, "+14155550199", "twilio").await;
    let first = post_keyed(&api, &a.key, "order-42", &body(&a)).await;
    assert_eq!(first.0, 202, "{:?}", first.1);
    let again = post_keyed(&api, &a.key, "order-42", &body(&a)).await;
    assert_eq!(again.0, 200, "{:?}", again.1);
    assert_eq!(again.1["id"], first.1["id"]);
    assert_eq!(carriers.placed().len(), 1, "the carrier is asked once");

    let mut other = body(&a);
    other["variables"]["name"] = json!("Grace");
    let reused = post_keyed(&api, &a.key, "order-42", &other).await;
    assert_eq!(reused.0, 422, "{:?}", reused.1);
    assert_eq!(reused.1["error"]["code"], "idempotency_mismatch");
    assert_eq!(carriers.placed().len(), 1);

    // Keys are per tenant: another tenant's same key is its own call.
    let b = tenant(&api, "beta", Plan::Full, "+14155550198", "twilio").await;
    let theirs = post_keyed(&api, &b.key, "order-42", &body(&b)).await;
    assert_eq!(theirs.0, 202, "{:?}", theirs.1);
    assert_ne!(theirs.1["id"], first.1["id"]);

    let empty = post_keyed(&api, &a.key, "", &body(&a)).await;
    assert_eq!(empty.1["error"]["code"], "invalid_idempotency_key");
}
on_both!(idempotency, idempotency_keys_dial_once);

async fn carrier_refusal_and_silence(db: TestDb) {
    let (api, carriers) = start(db).await;
    let a = tenant(&api, "acme", Plan::Full, "+14155550199", "twilio").await;
    carriers
        .place_outcomes
        .lock()
        .unwrap()
        .push_back(Err(DialError::Refused("21215: geo permissions".into())));
    let refused = api.post("/v1/calls", &a.key, &body(&a)).await;
    let message = assert_error(&refused, 502, "carrier_refused");
    assert!(message.contains("geo permissions"), "{message}");
    let listed = api.get("/v1/calls", &a.key).await;
    let call = &listed.1["calls"][0];
    assert_eq!(call["status"], "failed");
    assert!(call["error"].as_str().unwrap().contains("geo permissions"));
    let id = call["id"].as_str().unwrap().to_owned();
    let events = api.get(&format!("/v1/calls/{id}/events"), &a.key).await;
    let event = &events.1["events"][0];
    assert_eq!(event["type"], "dial_failed");
    assert_eq!(event["data"]["code"], "carrier_refused");
    assert!(event["seq"].as_i64().unwrap() > CONTROL_SEQ_BASE);

    carriers
        .place_outcomes
        .lock()
        .unwrap()
        .push_back(Err(DialError::OutcomeUnknown("timed out".into())));
    let unknown = api.post("/v1/calls", &a.key, &body(&a)).await;
    assert_error(&unknown, 502, "carrier_unreachable");
    let listed = api.get("/v1/calls?limit=1", &a.key).await;
    assert_eq!(listed.1["calls"][0]["status"], "queued");
    assert!(
        listed.1["calls"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    assert_eq!(carriers.placed().len(), 2, "never dialled twice");
}
on_both!(refusal, carrier_refusal_and_silence);

async fn ending_calls(db: TestDb) {
    let (api, carriers) = start(db).await;
    let a = tenant(&api, "acme", Plan::Full, "+14155550199", "twilio").await;
    let ringing = api.post("/v1/calls", &a.key, &body(&a)).await.1;
    let id = ringing["id"].as_str().unwrap().to_owned();
    let sid = ringing["carrier_sid"].as_str().unwrap().to_owned();
    let call_id = voicegw::call::CallId(id.parse().unwrap());
    api.db
        .store
        .set_call_status(Scope::Super, call_id, CallStatus::Ringing)
        .await
        .unwrap();
    let ended = api.delete(&format!("/v1/calls/{id}"), &a.key).await;
    assert_eq!(ended.0.as_u16(), 200, "{:?}", ended.1);
    assert_eq!(ended.1["status"], "canceled");
    assert!(
        carriers
            .asked()
            .contains(&Asked::Cancel(CarrierName::Twilio, sid.clone()))
    );
    let again = api.delete(&format!("/v1/calls/{id}"), &a.key).await;
    assert_error(&again, 409, "call_ended");

    // In progress, not on this gateway: hung up at the carrier; the carrier's callback ends it.
    let live = api.post("/v1/calls", &a.key, &body(&a)).await.1;
    let live_id = live["id"].as_str().unwrap().to_owned();
    let live_sid = live["carrier_sid"].as_str().unwrap().to_owned();
    api.db
        .store
        .set_call_status(
            Scope::Super,
            voicegw::call::CallId(live_id.parse().unwrap()),
            CallStatus::InProgress,
        )
        .await
        .unwrap();
    carriers
        .end_outcomes
        .lock()
        .unwrap()
        .push_back(Err(DialError::NotLive));
    let hung = api.delete(&format!("/v1/calls/{live_id}"), &a.key).await;
    assert_eq!(hung.0.as_u16(), 200, "{:?}", hung.1);
    assert!(
        carriers
            .asked()
            .contains(&Asked::HangUp(CarrierName::Twilio, live_sid))
    );
    let events = api
        .get(&format!("/v1/calls/{live_id}/events"), &a.key)
        .await;
    assert_eq!(events.1["events"][0]["type"], "hangup_requested");

    // A carrier failure is a 502 and leaves the call as it was.
    let third = api.post("/v1/calls", &a.key, &body(&a)).await.1;
    carriers
        .end_outcomes
        .lock()
        .unwrap()
        .push_back(Err(DialError::Unreachable("connection refused".into())));
    let failed = api
        .delete(
            &format!("/v1/calls/{}", third["id"].as_str().unwrap()),
            &a.key,
        )
        .await;
    assert_error(&failed, 502, "carrier_error");
}
on_both!(ending, ending_calls);

async fn bad_input_gets_precise_errors(db: TestDb) {
    let (api, carriers) = start(db).await;
    let a = tenant(&api, "acme", Plan::Full, "+14155550199", "twilio").await;
    let post = |b: Value| {
        let api = &api;
        let key = a.key.clone();
        async move { api.post("/v1/calls", &key, &b).await }
    };
    let mut unknown = body(&a);
    unknown["colour"] = json!("red");
    assert!(assert_error(&post(unknown).await, 422, "invalid_body").contains("colour"));
    let mut bad_to = body(&a);
    bad_to["to"] = json!("4155550100");
    assert_error(&post(bad_to).await, 422, "invalid_number");
    let mut both = body(&a);
    both["number_id"] = json!(a.number_id);
    assert_error(&post(both).await, 422, "invalid_body");
    let mut neither = body(&a);
    neither.as_object_mut().unwrap().remove("agent");
    assert_error(&post(neither).await, 422, "invalid_body");
    let mut not_ours = body(&a);
    not_ours["from"] = json!("+14155550111");
    assert_error(&post(not_ours).await, 422, "unknown_number");
    let mut agent = body(&a);
    agent["agent"] = json!("nobody");
    assert!(assert_error(&post(agent).await, 422, "unknown_agent").contains("echo"));
    let mut script = body(&a);
    script.as_object_mut().unwrap().remove("agent");
    script["script"] = json!("missing");
    assert_error(&post(script).await, 422, "unknown_script");
    let mut vars = body(&a);
    vars["variables"] = json!({"n": 5});
    assert_error(&post(vars).await, 422, "invalid_body");
    let mut ring = body(&a);
    ring["timeout_secs"] = json!(0);
    assert_error(&post(ring).await, 422, "invalid_body");
    let mut amd = body(&a);
    amd["machine_detection"] = json!("sometimes");
    assert_error(&post(amd).await, 422, "invalid_body");
    assert_eq!(
        carriers.placed().len(),
        0,
        "nothing bad reaches the carrier"
    );

    let none = api
        .call(reqwest::Method::POST, "/v1/calls", None, Some(&body(&a)))
        .await;
    assert_error(&none, 401, "unauthorized");
    let root = api.post("/v1/calls", ADMIN_KEY, &body(&a)).await;
    assert_error(&root, 400, "tenant_required");
    let mut for_a = body(&a);
    for_a["tenant_id"] = json!(a.id.to_string());
    assert_eq!(
        api.post("/v1/calls", ADMIN_KEY, &for_a).await.0.as_u16(),
        202
    );

    let inbound_only = tenant(&api, "inbound", Plan::Inbound, "+14155550197", "twilio").await;
    assert_error(
        &api.post("/v1/calls", &inbound_only.key, &body(&inbound_only))
            .await,
        403,
        "forbidden",
    );

    for (query, code) in [
        ("limit=0", "invalid_query"),
        ("limit=201", "invalid_query"),
        ("status=ringing_loudly", "invalid_query"),
        ("direction=sideways", "invalid_query"),
        ("to=12345", "invalid_query"),
        ("created_after=yesterday", "invalid_query"),
        ("cursor=abc", "invalid_query"),
        ("colour=red", "invalid_query"),
    ] {
        let got = api.get(&format!("/v1/calls?{query}"), &a.key).await;
        assert_error(&got, 400, code);
    }
    assert_error(
        &api.get("/v1/calls/not-a-uuid", &a.key).await,
        400,
        "invalid_id",
    );
    assert_error(
        &api.get(&format!("/v1/calls/{}", uuid::Uuid::now_v7()), &a.key)
            .await,
        404,
        "not_found",
    );
}
on_both!(bad_input, bad_input_gets_precise_errors);

#[tokio::test]
async fn dialing_needs_a_public_url() {
    let api = TestControl::start_with_carriers(
        TestDb::sqlite().await,
        test_config(),
        Arc::new(RecordingCarriers::default()),
    )
    .await;
    let a = tenant(&api, "acme", Plan::Full, "+14155550199", "twilio").await;
    let got = api.post("/v1/calls", &a.key, &body(&a)).await;
    assert!(assert_error(&got, 503, "public_url_missing").contains("VOICEGW_PUBLIC_URL"));
}

#[tokio::test]
async fn a_gateway_without_carriers_says_so() {
    let mut config = test_config();
    config.auth.public_url = Some(PUBLIC_URL.to_owned());
    let api = TestControl::start(TestDb::sqlite().await, config).await;
    let a = tenant(&api, "acme", Plan::Full, "+14155550199", "exotel").await;
    let got = api.post("/v1/calls", &a.key, &body(&a)).await;
    assert!(assert_error(&got, 503, "carrier_not_configured").contains("exotel"));
}

async fn tenants_never_see_each_other(db: TestDb) {
    let (api, carriers) = start(db).await;
    let a = tenant(&api, "acme", Plan::Full, "+14155550199", "twilio").await;
    let b = tenant(&api, "beta", Plan::Full, "+14155550198", "twilio").await;
    let theirs = api.post("/v1/calls", &b.key, &body(&b)).await.1;
    let id = theirs["id"].as_str().unwrap();
    for path in [
        format!("/v1/calls/{id}"),
        format!("/v1/calls/{id}/events"),
        format!("/v1/calls/{id}/events/stream"),
    ] {
        assert_error(&api.get(&path, &a.key).await, 404, "not_found");
    }
    assert_error(
        &api.delete(&format!("/v1/calls/{id}"), &a.key).await,
        404,
        "not_found",
    );
    assert!(
        !carriers
            .asked()
            .iter()
            .any(|x| matches!(x, Asked::Cancel(..) | Asked::HangUp(..)))
    );
    let listed = api.get("/v1/calls", &a.key).await;
    assert_eq!(listed.1["calls"], json!([]));
    // Naming the other tenant, or dialing from its number, finds nothing.
    let mut as_b = body(&a);
    as_b["tenant_id"] = json!(b.id.to_string());
    assert_error(
        &api.post("/v1/calls", &a.key, &as_b).await,
        404,
        "not_found",
    );
    let mut from_b = body(&a);
    from_b["from"] = json!(b.number);
    assert_error(
        &api.post("/v1/calls", &a.key, &from_b).await,
        422,
        "unknown_number",
    );
    let mut number_b = json!({"to": CALLEE, "number_id": b.number_id, "agent": "echo"});
    number_b["variables"] = json!({});
    assert_error(
        &api.post("/v1/calls", &a.key, &number_b).await,
        422,
        "unknown_number",
    );
    // B still sees its call, untouched.
    let mine = api.get(&format!("/v1/calls/{id}"), &b.key).await;
    assert_eq!(mine.1["status"], "queued");
}
on_both!(isolation, tenants_never_see_each_other);
