//! `/v1/tenants` on SQLite and PostgreSQL: SUPERADMIN creates, lists and changes tenants;
//! bad bodies get precise 4xx codes; a tenant's keys read their own tenant only.

mod common;

use common::control::{ADMIN_KEY, TestControl, assert_error};
use common::db::TestDb;
use common::tenants::{patch, tenant_with_keys};
use common::test_config;
use reqwest::Method;
use serde_json::json;

fn field_names(value: &serde_json::Value) -> Vec<&str> {
    let mut names: Vec<&str> = value
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

async fn superadmin_manages_tenants(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let (status, acme) = api
        .post(
            "/v1/tenants",
            ADMIN_KEY,
            &json!({"name": "Acme", "plan": "INBOUND"}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{acme}");
    assert_eq!(field_names(&acme), ["created_at", "id", "name", "plan"]);
    assert_eq!(
        (acme["name"].as_str(), acme["plan"].as_str()),
        (Some("Acme"), Some("INBOUND"))
    );
    assert!(acme["created_at"].as_str().unwrap().ends_with('Z'));
    let id = acme["id"].as_str().unwrap().to_owned();

    let (status, other) = api
        .post("/v1/tenants", ADMIN_KEY, &json!({"name": "Globex"}))
        .await;
    assert_eq!(status.as_u16(), 201);
    assert_eq!(other["plan"], "FULL", "the default plan");

    let (status, list) = api.get("/v1/tenants", ADMIN_KEY).await;
    assert_eq!(status.as_u16(), 200);
    let names: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Acme", "Globex"]);

    let (status, got) = api.get(&format!("/v1/tenants/{id}"), ADMIN_KEY).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(got, acme);

    let path = format!("/v1/tenants/{id}");
    let (status, changed) = patch(&api, &path, ADMIN_KEY, &json!({"name": "Acme Ltd"})).await;
    assert_eq!(status.as_u16(), 200, "{changed}");
    assert_eq!(
        (changed["name"].as_str(), changed["plan"].as_str()),
        (Some("Acme Ltd"), Some("INBOUND"))
    );
    let (_, changed) = patch(&api, &path, ADMIN_KEY, &json!({"plan": "outbound"})).await;
    assert_eq!(
        (changed["name"].as_str(), changed["plan"].as_str()),
        (Some("Acme Ltd"), Some("OUTBOUND"))
    );
    assert_eq!(
        api.get(&path, ADMIN_KEY).await.1,
        changed,
        "the change is stored"
    );
}
on_both!(superadmin, superadmin_manages_tenants);

async fn bad_requests_get_precise_errors(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let post = |body: serde_json::Value| {
        let api = &api;
        async move { api.post("/v1/tenants", ADMIN_KEY, &body).await }
    };
    let msg = assert_error(
        &post(json!({"name": "a", "colour": "red"})).await,
        422,
        "invalid_body",
    );
    assert!(msg.contains("unknown field `colour`"), "{msg}");
    let msg = assert_error(&post(json!({"name": 5})).await, 422, "invalid_body");
    assert!(msg.contains("invalid type"), "{msg}");
    assert_error(&post(json!({"plan": "FULL"})).await, 422, "invalid_body");
    let msg = assert_error(
        &post(json!({"name": "a", "plan": "GOLD"})).await,
        400,
        "invalid_plan",
    );
    assert!(msg.contains("OUTBOUND, INBOUND or FULL"), "{msg}");
    assert_error(&post(json!({"name": "   "})).await, 400, "invalid_name");
    let long = "x".repeat(201);
    assert_error(&post(json!({ "name": long })).await, 400, "invalid_name");
    let raw = api
        .http
        .post(api.url("/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .body(r#"{"name":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 415);

    assert_error(
        &api.get("/v1/tenants/not-a-uuid", ADMIN_KEY).await,
        400,
        "invalid_id",
    );
    let unknown = format!("/v1/tenants/{}", uuid::Uuid::now_v7());
    assert_error(&api.get(&unknown, ADMIN_KEY).await, 404, "not_found");
    assert_error(
        &patch(&api, &unknown, ADMIN_KEY, &json!({"name": "x"})).await,
        404,
        "not_found",
    );
    let (_, t) = post(json!({"name": "a"})).await;
    let path = format!("/v1/tenants/{}", t["id"].as_str().unwrap());
    assert_error(
        &patch(&api, &path, ADMIN_KEY, &json!({"plan": "GOLD"})).await,
        400,
        "invalid_plan",
    );
    assert_error(
        &patch(&api, &path, ADMIN_KEY, &json!({"nmae": "b"})).await,
        422,
        "invalid_body",
    );
    assert_error(
        &patch(&api, &path, ADMIN_KEY, &json!({"name": ""})).await,
        400,
        "invalid_name",
    );
    assert_eq!(
        api.get(&path, ADMIN_KEY).await.1["name"],
        "a",
        "nothing changed"
    );

    let none = api.call(Method::GET, "/v1/tenants", None, None).await;
    assert_error(&none, 401, "unauthorized");
}
on_both!(bad_requests, bad_requests_get_precise_errors);

async fn tenant_keys_see_their_own_tenant_only(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let b = tenant_with_keys(&api, "b").await;
    let a_path = format!("/v1/tenants/{}", a.id);
    let b_path = format!("/v1/tenants/{}", b.id);
    for key in [&a.admin, &a.agent] {
        let (status, own) = api.get(&a_path, key).await;
        assert_eq!(status.as_u16(), 200);
        assert_eq!(own["id"], a.id.as_str());
        assert_error(&api.get(&b_path, key).await, 404, "not_found");
        assert_error(&api.get("/v1/tenants", key).await, 403, "forbidden");
        let create = api.post("/v1/tenants", key, &json!({"name": "mine"})).await;
        assert_error(&create, 403, "forbidden");
        for path in [&a_path, &b_path] {
            let change = patch(&api, path, key, &json!({"name": "taken over"})).await;
            assert_error(&change, 403, "forbidden");
        }
    }
    assert_eq!(api.get(&b_path, ADMIN_KEY).await.1["name"], "b");
    assert_eq!(api.get(&a_path, ADMIN_KEY).await.1["name"], "a");
    assert_eq!(
        api.get("/v1/tenants", ADMIN_KEY).await.1["tenants"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
on_both!(isolation, tenant_keys_see_their_own_tenant_only);
