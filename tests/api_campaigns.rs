//! `/v1/campaigns` over HTTP on SQLite and PostgreSQL: creating a campaign with its contacts
//! (a tenant script's variables checked per contact) and reading its progress, every
//! validation error code, 100,000 contacts in one request (time printed), NDJSON uploads (a
//! bad line stores nothing), status transitions with 409s, cancel, job listings, the tenant's
//! dialer cap, and tenant isolation on every route.

mod common;

use std::path::Path;
use std::time::Instant;

use common::calls::{TestTenant, tenant};
use common::control::{ADMIN_KEY, TestControl, assert_error};
use common::db::TestDb;
use common::test_config;
use reqwest::Method;
use serde_json::{Value, json};
use voicegw::store::tenants::{Plan, Role};

const NUMBER: &str = "+14155550199";

struct Setup {
    api: TestControl,
    a: TestTenant,
    _cache: tempfile::TempDir,
}

/// A gateway that serves tenant scripts (recorded prompts), and tenant `acme` with a Twilio
/// number and the appointment script.
async fn setup(db: TestDb) -> Setup {
    let cache = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = test_config();
    config.script.recorded_prompts = root.join("fixtures/audio/prompts");
    config.script.cache_dir = cache.path().join("cache");
    let api = TestControl::start(db, config).await;
    let a = tenant(&api, "acme", Plan::Full, NUMBER, "twilio").await;
    let source =
        std::fs::read_to_string(root.join("scripts/appointment_confirmation.dsc")).unwrap();
    api.db
        .store
        .add_script_version(a.id, "appointment", &source)
        .await
        .unwrap();
    Setup {
        api,
        a,
        _cache: cache,
    }
}

fn phone(i: usize) -> String {
    format!("+1415{:07}", i)
}

fn contacts(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"phone": phone(i), "variables": {"appointmentDate": format!("day {i}")}}))
        .collect()
}

fn body(n: usize) -> Value {
    json!({
        "name": "Reminders",
        "script": "appointment",
        "caller_ids": [NUMBER],
        "timezone": "America/New_York",
        "retry": {"max_attempts": 3, "backoff_secs": [600, 1800]},
        "max_concurrency": 5,
        "machine_detection": "enable",
        "voicemail_message": "Hi {{ firstName | there }}, call us back about {{ appointmentDate }}.",
        "sms_fallback": "We missed you: {{ appointmentDate }}",
        "variables": {"tenantName": "Acme Dental"},
        "contacts": contacts(n),
    })
}

async fn post_ndjson(api: &TestControl, path: &str, key: &str, text: String) -> (u16, Value) {
    let response = api
        .http
        .post(api.url(path))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(text)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn creates_and_reports_progress(db: TestDb) {
    let s = setup(db).await;
    let mut request = body(3);
    request["contacts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"phone": phone(1), "variables": {"appointmentDate": "again"}}));
    request["contacts"][2]["timezone"] = json!("Europe/London");
    request["start"] = json!(true);
    let (status, created) = s.api.post("/v1/campaigns", &s.a.key, &request).await;
    assert_eq!(status.as_u16(), 201, "{created}");
    assert_eq!(
        (created["added"].as_u64(), created["duplicates"].as_u64()),
        (Some(3), Some(1))
    );
    let c = &created["campaign"];
    assert_eq!(c["status"], "running");
    assert_eq!(c["agent"], "script:appointment");
    assert!(c["script_id"].is_string());
    assert_eq!(c["carrier"], "twilio");
    assert_eq!(c["caller_ids"], json!([NUMBER]));
    assert_eq!(
        c["calling_window"],
        json!({"timezone": "America/New_York", "open": ["daily 09:00-20:00"], "closed_dates": []})
    );
    assert_eq!(c["retry"]["max_attempts"], 3);
    assert_eq!(c["retry"]["backoff_secs"], json!([600, 1800]));
    assert_eq!(c["max_concurrency"], 5);
    assert_eq!(c["machine_detection"], "enable");
    assert_eq!(c["contacts"], 3);
    assert_eq!(c["tenant_id"], s.a.id.to_string());
    let progress = &c["progress"];
    assert_eq!(
        (progress["total"].as_i64(), progress["pending"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        (progress["done"].as_i64(), progress["attempts"].as_i64()),
        (Some(0), Some(0))
    );
    let id = c["id"].as_str().unwrap().to_owned();

    let (status, got) = s.api.get(&format!("/v1/campaigns/{id}"), &s.a.key).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(&got, c);
    let (_, by_root) = s.api.get(&format!("/v1/campaigns/{id}"), ADMIN_KEY).await;
    assert_eq!(by_root["id"], id.as_str());

    // Jobs, in contact order, paged.
    let path = format!("/v1/campaigns/{id}/jobs?limit=2");
    let (status, page) = s.api.get(&path, &s.a.key).await;
    assert_eq!(status.as_u16(), 200, "{page}");
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        (jobs[0]["position"].as_i64(), jobs[0]["phone"].as_str()),
        (Some(0), Some(phone(0).as_str()))
    );
    assert_eq!(jobs[0]["state"], "pending");
    assert_eq!(jobs[0]["attempts"], 0);
    assert!(jobs[0]["due_at"].as_str().unwrap().ends_with('Z'));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = s
        .api
        .get(&format!("{path}&cursor={cursor}"), &s.a.key)
        .await;
    assert_eq!(rest["jobs"][0]["position"], 2);
    let (_, none) = s
        .api
        .get(&format!("/v1/campaigns/{id}/jobs?state=done"), &s.a.key)
        .await;
    assert_eq!(none["jobs"], json!([]));
    assert_error(
        &s.api
            .get(&format!("/v1/campaigns/{id}/jobs?state=nope"), &s.a.key)
            .await,
        400,
        "invalid_query",
    );

    // Listing: newest first, without progress.
    let (status, second) = s.api.post("/v1/campaigns", &s.a.key, &body(0)).await;
    assert_eq!(status.as_u16(), 201, "{second}");
    assert_eq!(second["campaign"]["status"], "draft");
    let (_, list) = s.api.get("/v1/campaigns?limit=1", &s.a.key).await;
    assert_eq!(list["campaigns"][0]["id"], second["campaign"]["id"]);
    assert!(list["campaigns"][0].get("progress").is_none());
    let cursor = list["next_cursor"].as_str().unwrap();
    let (_, list) = s
        .api
        .get(&format!("/v1/campaigns?cursor={cursor}"), &s.a.key)
        .await;
    assert_eq!(list["campaigns"][0]["id"], id.as_str());
    assert!(list.get("next_cursor").is_none());
    assert_error(
        &s.api.get("/v1/campaigns?cursor=x", &s.a.key).await,
        400,
        "invalid_query",
    );
}
on_both!(create_and_progress, creates_and_reports_progress);

async fn every_validation_error(db: TestDb) {
    let s = setup(db).await;
    let store = &s.api.db.store;
    store
        .add_phone_number(s.a.id, "+919876543210", "exotel")
        .await
        .unwrap();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "unknown field",
            json!({"colour": "red"}),
            422,
            "invalid_body",
        ),
        ("both", json!({"agent": "echo"}), 422, "invalid_body"),
        ("empty name", json!({"name": " "}), 422, "invalid_body"),
        ("no caller", json!({"caller_ids": []}), 422, "invalid_body"),
        (
            "bad caller",
            json!({"caller_ids": ["4155550199"]}),
            422,
            "invalid_number",
        ),
        (
            "not ours",
            json!({"caller_ids": ["+14155550111"]}),
            422,
            "unknown_number",
        ),
        (
            "mixed",
            json!({"caller_ids": [NUMBER, "+919876543210"]}),
            422,
            "mixed_carriers",
        ),
        (
            "zone",
            json!({"timezone": "Mars/Base"}),
            422,
            "invalid_timezone",
        ),
        (
            "window",
            json!({"timezone": null, "calling_window": {"timezone": "UTC", "open": ["someday 9-5"]}}),
            422,
            "invalid_calling_window",
        ),
        (
            "window zone differs",
            json!({"calling_window": {"timezone": "UTC", "open": ["daily 09:00-17:00"]}}),
            422,
            "invalid_timezone",
        ),
        (
            "retry",
            json!({"retry": {"max_attempts": 0}}),
            422,
            "invalid_retry",
        ),
        (
            "retry completed",
            json!({"retry": {"retry_on": ["completed"]}}),
            422,
            "invalid_retry",
        ),
        (
            "concurrency",
            json!({"max_concurrency": 0}),
            422,
            "invalid_body",
        ),
        (
            "concurrency high",
            json!({"max_concurrency": 10001}),
            422,
            "invalid_body",
        ),
        (
            "starts",
            json!({"starts_at": "tomorrow"}),
            422,
            "invalid_body",
        ),
        (
            "ended",
            json!({"ends_at": "2020-01-01T00:00:00Z"}),
            422,
            "invalid_body",
        ),
        (
            "order",
            json!({"starts_at": "2099-01-02T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}),
            422,
            "invalid_body",
        ),
        ("ring", json!({"timeout_secs": 0}), 422, "invalid_body"),
        (
            "amd",
            json!({"machine_detection": "sometimes"}),
            422,
            "invalid_body",
        ),
        (
            "sms long",
            json!({"sms_fallback": "x".repeat(1601)}),
            422,
            "invalid_body",
        ),
        (
            "sms template",
            json!({"sms_fallback": "Hi {{ name"}),
            422,
            "invalid_template",
        ),
        (
            "voicemail template",
            json!({"voicemail_message": "{{}}"}),
            422,
            "invalid_template",
        ),
        (
            "variables",
            json!({"variables": {"": "x"}}),
            422,
            "invalid_variables",
        ),
        ("script", json!({"script": "nope"}), 422, "unknown_script"),
        (
            "agent",
            json!({"script": null, "agent": "nobody"}),
            422,
            "unknown_agent",
        ),
        (
            "too many",
            json!({"contacts": contacts(100_001)}),
            422,
            "invalid_body",
        ),
    ];
    for (what, change, status, code) in cases {
        let mut request = body(2);
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                request.as_object_mut().unwrap().remove(k);
            } else {
                request[k] = v.clone();
            }
        }
        let got = s.api.post("/v1/campaigns", &s.a.key, &request).await;
        assert_eq!(got.0.as_u16(), status, "{what}: {}", got.1);
        assert_eq!(got.1["error"]["code"], code, "{what}: {}", got.1);
    }

    // Bad contacts: every bad row listed with its index; nothing stored.
    let mut request = body(5);
    request["sms_fallback"] = json!("Hi {{ nickname }}");
    for c in request["contacts"].as_array_mut().unwrap() {
        c["variables"]["nickname"] = json!("Bo");
    }
    request["contacts"][1]["phone"] = json!("555-0100");
    request["contacts"][2]["variables"]["nickname"] = json!(" ");
    request["contacts"][3]["timezone"] = json!("Nowhere/City");
    request["contacts"][4]["variables"]["x"] = json!("y".repeat(1001));
    let got = s.api.post("/v1/campaigns", &s.a.key, &request).await;
    assert_error(&got, 422, "invalid_contacts");
    let rows = got.1["error"]["contacts"].as_array().unwrap();
    let indexes: Vec<i64> = rows.iter().map(|r| r["index"].as_i64().unwrap()).collect();
    assert_eq!(indexes, [1, 2, 3, 4]);
    assert!(
        rows[1]["message"]
            .as_str()
            .unwrap()
            .contains("nickname (used by sms_fallback)"),
        "{rows:?}"
    );
    assert_eq!(got.1["error"]["invalid"], 4);
    // A variable the SMS needs, given by no one.
    let mut request = body(1);
    request["sms_fallback"] = json!("Hi {{ nickname }}");
    let got = s.api.post("/v1/campaigns", &s.a.key, &request).await;
    assert!(assert_error(&got, 422, "invalid_contacts").contains("nickname"));
    // More than 100 bad rows: 100 listed, all counted.
    let mut request = body(150);
    for c in request["contacts"].as_array_mut().unwrap() {
        c["phone"] = json!("0");
    }
    let got = s.api.post("/v1/campaigns", &s.a.key, &request).await;
    assert_error(&got, 422, "invalid_contacts");
    assert_eq!(got.1["error"]["contacts"].as_array().unwrap().len(), 100);
    assert_eq!(got.1["error"]["invalid"], 150);

    // Not JSON, or not JSON at all.
    let raw = |content_type: &'static str, text: &'static str| {
        let request = s
            .api
            .http
            .post(s.api.url("/v1/campaigns"))
            .bearer_auth(&s.a.key)
            .header("content-type", content_type)
            .body(text);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_error(
        &raw("text/plain", "{}").await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &raw("application/json", "{\"name\": ").await,
        400,
        "malformed_json",
    );

    let (_, list) = s.api.get("/v1/campaigns", &s.a.key).await;
    assert_eq!(list["campaigns"], json!([]), "nothing was stored");

    // Who may create: a key, the tenant named by SUPERADMIN, a plan with outbound calls.
    let none = s
        .api
        .call(Method::POST, "/v1/campaigns", None, Some(&body(1)))
        .await;
    assert_error(&none, 401, "unauthorized");
    assert_error(
        &s.api.post("/v1/campaigns", ADMIN_KEY, &body(1)).await,
        400,
        "tenant_required",
    );
    let mut for_a = body(1);
    for_a["tenant_id"] = json!(s.a.id.to_string());
    assert_eq!(
        s.api
            .post("/v1/campaigns", ADMIN_KEY, &for_a)
            .await
            .0
            .as_u16(),
        201
    );
    let inbound = tenant(
        &s.api,
        "inbound-only",
        Plan::Inbound,
        "+14155550177",
        "twilio",
    )
    .await;
    let mut request = body(1);
    request["caller_ids"] = json!([inbound.number]);
    request["script"] = json!(null);
    request.as_object_mut().unwrap().remove("script");
    request["agent"] = json!("echo");
    assert_error(
        &s.api.post("/v1/campaigns", &inbound.key, &request).await,
        403,
        "forbidden",
    );
}
on_both!(validation_errors, every_validation_error);

async fn hundred_thousand_in_one_request(db: TestDb) {
    let s = setup(db).await;
    let backend = if s.api.db.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let request = body(100_000);
    let started = Instant::now();
    let (status, created) = s.api.post("/v1/campaigns", &s.a.key, &request).await;
    let took = started.elapsed();
    assert_eq!(status.as_u16(), 201, "{}", created["error"]);
    println!(
        "{backend}: POST /v1/campaigns with 100000 contacts answered in {:.2} s",
        took.as_secs_f64()
    );
    assert_eq!(created["added"], 100_000);
    assert_eq!(created["campaign"]["progress"]["pending"], 100_000);
}
on_both!(bulk_100k, hundred_thousand_in_one_request);

async fn ndjson_uploads(db: TestDb) {
    let s = setup(db).await;
    let (_, created) = s.api.post("/v1/campaigns", &s.a.key, &body(2)).await;
    let id = created["campaign"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/campaigns/{id}/contacts");

    // 12,000 lines (over two insert chunks), one repeating an earlier contact, a blank line.
    let mut text = String::new();
    for i in 2..12_001 {
        text.push_str(&format!(
            "{{\"phone\":\"{}\",\"variables\":{{\"appointmentDate\":\"d{i}\"}}}}\n",
            phone(i)
        ));
    }
    text.push('\n');
    text.push_str(&format!(
        "{{\"phone\":\"{}\",\"variables\":{{\"appointmentDate\":\"x\"}}}}",
        phone(0)
    ));
    let started = Instant::now();
    let (status, added) = post_ndjson(&s.api, &path, &s.a.key, text).await;
    println!(
        "ndjson: 12,000 lines in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status, 200, "{added}");
    assert_eq!(added, json!({"added": 11_999, "duplicates": 1}));

    // A bad line: 422 naming it (numbered from 1), nothing from the request kept.
    let mut text = String::new();
    for i in 20_000..20_010 {
        text.push_str(&format!(
            "{{\"phone\":\"{}\",\"variables\":{{\"appointmentDate\":\"d\"}}}}\n",
            phone(i)
        ));
    }
    let mut lines: Vec<&str> = text.lines().collect();
    lines[6] = "{\"phone\": \"not a number\"}";
    lines[8] = "{\"phone\": ";
    let (status, error) = post_ndjson(&s.api, &path, &s.a.key, lines.join("\n")).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "invalid_contacts");
    let rows = error["error"]["contacts"].as_array().unwrap();
    assert_eq!(rows[0]["line"], 7);
    assert_eq!(rows[1]["line"], 9);
    let (_, c) = s.api.get(&format!("/v1/campaigns/{id}"), &s.a.key).await;
    assert_eq!(c["contacts"], 12_001);
    assert_eq!(c["progress"]["total"], 12_001);

    // The JSON form; an empty one; another media type.
    let more =
        json!({"contacts": [{"phone": phone(30_000), "variables": {"appointmentDate": "d"}}]});
    let (status, added) = s.api.post(&path, &s.a.key, &more).await;
    assert_eq!(status.as_u16(), 200, "{added}");
    assert_eq!(added, json!({"added": 1, "duplicates": 0}));
    let jobs = s
        .api
        .get(&format!("/v1/campaigns/{id}/jobs?cursor=12000"), &s.a.key)
        .await
        .1;
    assert_eq!(jobs["jobs"][0]["position"], 12_001);
    assert_eq!(jobs["jobs"][0]["phone"], phone(30_000));
    assert_error(
        &s.api.post(&path, &s.a.key, &json!({"contacts": []})).await,
        422,
        "invalid_body",
    );
    let bad_json = json!({"contacts": [{"phone": "+1"}]});
    assert_error(
        &s.api.post(&path, &s.a.key, &bad_json).await,
        422,
        "invalid_contacts",
    );
    let response = s
        .api
        .http
        .post(s.api.url(&path))
        .bearer_auth(&s.a.key)
        .header("content-type", "text/csv")
        .body("phone\n+14155550100\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
}
on_both!(ndjson, ndjson_uploads);

async fn transitions_and_cancel(db: TestDb) {
    let s = setup(db).await;
    let (_, created) = s.api.post("/v1/campaigns", &s.a.key, &body(4)).await;
    let id = created["campaign"]["id"].as_str().unwrap().to_owned();
    let act = |action: &'static str| {
        let api = &s.api;
        let key = s.a.key.clone();
        let path = format!("/v1/campaigns/{id}/{action}");
        async move { api.post(&path, &key, &json!({})).await }
    };
    assert!(assert_error(&act("pause").await, 409, "invalid_transition").contains("draft"));
    assert_error(&act("resume").await, 409, "invalid_transition");
    assert_eq!(act("start").await.1["status"], "running");
    assert_error(&act("start").await, 409, "invalid_transition");
    assert_eq!(act("pause").await.1["status"], "paused");
    assert_eq!(act("resume").await.1["status"], "running");
    let (status, canceled) = act("cancel").await;
    assert_eq!(status.as_u16(), 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["progress"]["canceled"], 4);
    assert_eq!(canceled["progress"]["pending"], 0);
    assert_eq!(canceled["live_calls"], 0);
    assert!(assert_error(&act("cancel").await, 409, "invalid_transition").contains("canceled"));
    assert_error(&act("resume").await, 409, "invalid_transition");
    let more = json!({"contacts": [{"phone": phone(99), "variables": {"appointmentDate": "d"}}]});
    assert_error(
        &s.api
            .post(&format!("/v1/campaigns/{id}/contacts"), &s.a.key, &more)
            .await,
        409,
        "campaign_ended",
    );
    let (_, jobs) = s
        .api
        .get(&format!("/v1/campaigns/{id}/jobs?state=canceled"), &s.a.key)
        .await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 4);
    assert_eq!(jobs["jobs"][0]["final_reason"], "campaign_canceled");
}
on_both!(transitions, transitions_and_cancel);

async fn tenants_are_isolated(db: TestDb) {
    let s = setup(db).await;
    let b = tenant(&s.api, "bravo", Plan::Full, "+14155550188", "twilio").await;
    let (_, created) = s.api.post("/v1/campaigns", &s.a.key, &body(2)).await;
    let id = created["campaign"]["id"].as_str().unwrap().to_owned();
    for path in [
        format!("/v1/campaigns/{id}"),
        format!("/v1/campaigns/{id}/jobs"),
    ] {
        assert_error(&s.api.get(&path, &b.key).await, 404, "not_found");
    }
    for action in ["start", "pause", "resume", "cancel"] {
        let path = format!("/v1/campaigns/{id}/{action}");
        assert_error(
            &s.api.post(&path, &b.key, &json!({})).await,
            404,
            "not_found",
        );
    }
    let more = json!({"contacts": [{"phone": phone(9), "variables": {"appointmentDate": "d"}}]});
    let path = format!("/v1/campaigns/{id}/contacts");
    assert_error(&s.api.post(&path, &b.key, &more).await, 404, "not_found");
    let (status, _) =
        post_ndjson(&s.api, &path, &b.key, "{\"phone\":\"+14155550000\"}".into()).await;
    assert_eq!(status, 404);
    let (_, list) = s.api.get("/v1/campaigns", &b.key).await;
    assert_eq!(list["campaigns"], json!([]));
    // B's caller ids are not A's, nor A's script B's.
    let mut request = body(1);
    request["caller_ids"] = json!([NUMBER]);
    assert_error(
        &s.api.post("/v1/campaigns", &b.key, &request).await,
        422,
        "unknown_number",
    );
    request["caller_ids"] = json!([b.number]);
    assert_error(
        &s.api.post("/v1/campaigns", &b.key, &request).await,
        422,
        "unknown_script",
    );
    assert_error(
        &s.api.get("/v1/campaigns/not-a-uuid", &b.key).await,
        400,
        "invalid_id",
    );

    // The tenant's dialer cap: its ADMIN or SUPERADMIN only.
    let store = &s.api.db.store;
    let (_, a_admin) = store
        .create_api_key(Some(s.a.id), Role::Admin, "admin")
        .await
        .unwrap();
    let (_, b_admin) = store
        .create_api_key(Some(b.id), Role::Admin, "admin")
        .await
        .unwrap();
    let path = format!("/v1/tenants/{}/dialer", s.a.id);
    let put = |key: String, body: Value| {
        let api = &s.api;
        let path = path.clone();
        async move { api.call(Method::PUT, &path, Some(&key), Some(&body)).await }
    };
    let (status, cap) = put(a_admin.clone(), json!({"max_live_calls": 20})).await;
    assert_eq!(status.as_u16(), 200, "{cap}");
    assert_eq!(
        cap,
        json!({"tenant_id": s.a.id.to_string(), "max_live_calls": 20, "live_calls": 0})
    );
    assert_error(
        &put(s.a.key.clone(), json!({"max_live_calls": 5})).await,
        403,
        "forbidden",
    );
    assert_error(
        &put(b_admin, json!({"max_live_calls": 5})).await,
        404,
        "not_found",
    );
    assert_error(
        &put(a_admin.clone(), json!({"max_live_calls": 0})).await,
        422,
        "invalid_body",
    );
    let (status, cap) = put(ADMIN_KEY.to_owned(), json!({"max_live_calls": null})).await;
    assert_eq!(status.as_u16(), 200);
    assert!(cap.get("max_live_calls").is_none());
    assert_eq!(
        store
            .tenant_dialer_limit(s.a.id)
            .await
            .unwrap()
            .max_live_calls,
        None
    );
}
on_both!(isolation, tenants_are_isolated);
