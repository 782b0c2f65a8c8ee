//! `/v1/numbers` on SQLite and PostgreSQL: E.164 checked with the rule named, a number held by
//! one tenant only, the script inbound calls run (a script of the number's tenant), ADMIN
//! keys only, and tenant isolation on every route.

mod common;

use common::control::{ADMIN_KEY, TestControl, assert_error};
use common::db::TestDb;
use common::tenants::{patch, tenant_with_keys};
use common::test_config;
use serde_json::{Value, json};
use voicegw::store::Scope;

const SCRIPT: &str = "[start]\nHello.\n-> END\n";

fn e164s(list: &Value) -> Vec<&str> {
    list["numbers"]
        .as_array()
        .expect("numbers")
        .iter()
        .map(|n| n["e164"].as_str().unwrap())
        .collect()
}

async fn numbers_are_checked_and_owned_once(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let b = tenant_with_keys(&api, "b").await;
    let post = |key: &str, body: Value| {
        let api = &api;
        let key = key.to_owned();
        async move { api.post("/v1/numbers", &key, &body).await }
    };

    let (status, n) = post(
        &a.admin,
        json!({"e164": "+1 (415) 555-0100", "carrier": "twilio"}),
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{n}");
    let mut fields: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["carrier", "created_at", "e164", "id", "tenant_id"]);
    assert_eq!(
        (n["e164"].as_str(), n["tenant_id"].as_str()),
        (Some("+14155550100"), Some(a.id.as_str()))
    );

    let taken = post(
        &b.admin,
        json!({"e164": "+14155550100", "carrier": "exotel"}),
    )
    .await;
    let msg = assert_error(&taken, 409, "number_taken");
    assert!(msg.contains("+14155550100"), "{msg}");
    let again = post(
        &a.admin,
        json!({"e164": "+1 415 555 0100", "carrier": "twilio"}),
    )
    .await;
    assert_error(&again, 409, "number_taken");

    let msg = assert_error(
        &post(&a.admin, json!({"e164": "555", "carrier": "twilio"})).await,
        400,
        "invalid_number",
    );
    assert!(msg.contains("country code"), "{msg}");
    let msg = assert_error(
        &post(&a.admin, json!({"e164": "+1234", "carrier": "twilio"})).await,
        400,
        "invalid_number",
    );
    assert!(msg.contains("7 to 15"), "{msg}");
    assert_error(
        &post(
            &a.admin,
            json!({"e164": "+1415abc0100", "carrier": "twilio"}),
        )
        .await,
        400,
        "invalid_number",
    );
    let msg = assert_error(
        &post(
            &a.admin,
            json!({"e164": "+14155550101", "carrier": "pigeon"}),
        )
        .await,
        400,
        "invalid_carrier",
    );
    assert!(msg.contains("twilio or exotel"), "{msg}");
    assert_error(
        &post(
            &a.admin,
            json!({"e164": 14155550101_u64, "carrier": "twilio"}),
        )
        .await,
        422,
        "invalid_body",
    );
    assert_error(
        &post(&a.admin, json!({"e164": "+14155550101"})).await,
        422,
        "invalid_body",
    );
    assert_error(
        &post(
            &a.admin,
            json!({"e164": "+14155550101", "carrier": "twilio", "sms": true}),
        )
        .await,
        422,
        "invalid_body",
    );

    // SUPERADMIN names the tenant.
    assert_error(
        &post(
            ADMIN_KEY,
            json!({"e164": "+14155550102", "carrier": "twilio"}),
        )
        .await,
        400,
        "tenant_required",
    );
    let unknown =
        json!({"e164": "+14155550102", "carrier": "twilio", "tenant_id": uuid::Uuid::now_v7()});
    assert_error(&post(ADMIN_KEY, unknown).await, 404, "not_found");
    let (status, n) = post(
        ADMIN_KEY,
        json!({"e164": "+14155550102", "carrier": "exotel", "tenant_id": b.id}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), n["tenant_id"].as_str()),
        (201, Some(b.id.as_str()))
    );
    // A tenant key naming another tenant: as if it did not exist.
    let other = json!({"e164": "+14155550103", "carrier": "twilio", "tenant_id": b.id});
    assert_error(&post(&a.admin, other).await, 404, "not_found");

    // AGENT keys manage no numbers.
    assert_error(
        &post(
            &a.agent,
            json!({"e164": "+14155550104", "carrier": "twilio"}),
        )
        .await,
        403,
        "forbidden",
    );
    assert_error(&api.get("/v1/numbers", &a.agent).await, 403, "forbidden");
    let path = format!("/v1/numbers/{}", n["id"].as_str().unwrap());
    assert_error(&api.get(&path, &b.agent).await, 403, "forbidden");
    assert_error(&api.delete(&path, &b.agent).await, 403, "forbidden");
    assert_error(
        &patch(&api, &path, &b.agent, &json!({"script": null})).await,
        403,
        "forbidden",
    );
}
on_both!(create, numbers_are_checked_and_owned_once);

async fn numbers_name_the_script_inbound_calls_run(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let b = tenant_with_keys(&api, "b").await;
    let (status, _) = api
        .post(
            "/v1/scripts",
            &a.admin,
            &json!({"name": "main", "source": SCRIPT}),
        )
        .await;
    assert_eq!(status.as_u16(), 201);

    let body = json!({"e164": "+442079460958", "carrier": "exotel", "script": "main"});
    let (status, n) = api.post("/v1/numbers", &a.admin, &body).await;
    assert_eq!(status.as_u16(), 201, "{n}");
    assert_eq!(n["script"], "main");
    // The inbound webhook's lookup: the owning tenant and the script.
    let found = api
        .db
        .store
        .find_phone_number(Scope::Super, "+44 20 7946 0958")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.tenant_id.to_string(), a.id);
    assert_eq!(found.script.as_deref(), Some("main"));
    assert_eq!(found.carrier, "exotel");

    // Tenant B cannot name tenant A's script.
    let b_body = json!({"e164": "+442079460959", "carrier": "twilio", "script": "main"});
    assert_error(
        &api.post("/v1/numbers", &b.admin, &b_body).await,
        422,
        "unknown_script",
    );
    let bad = json!({"e164": "+442079460959", "carrier": "twilio", "script": "Main Line"});
    assert_error(
        &api.post("/v1/numbers", &b.admin, &bad).await,
        400,
        "invalid_script_name",
    );

    let path = format!("/v1/numbers/{}", n["id"].as_str().unwrap());
    let (status, cleared) = patch(&api, &path, &a.admin, &json!({"script": null})).await;
    assert_eq!(status.as_u16(), 200, "{cleared}");
    assert!(cleared.get("script").is_none());
    assert_eq!(api.get(&path, &a.admin).await.1, cleared);
    assert_error(
        &patch(&api, &path, &a.admin, &json!({"script": "nope"})).await,
        422,
        "unknown_script",
    );
    assert_error(
        &patch(&api, &path, &a.admin, &json!({})).await,
        422,
        "invalid_body",
    );
    assert_error(
        &patch(&api, &path, &a.admin, &json!({"script": 3})).await,
        422,
        "invalid_body",
    );
    assert_error(
        &patch(
            &api,
            &path,
            &a.admin,
            &json!({"script": "main", "e164": "+1"}),
        )
        .await,
        422,
        "invalid_body",
    );
    let (status, set) = patch(&api, &path, &a.admin, &json!({"script": "main"})).await;
    assert_eq!(
        (status.as_u16(), set["script"].as_str()),
        (200, Some("main"))
    );
    let found = api
        .db
        .store
        .find_phone_number(Scope::Super, "+442079460958")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.script.as_deref(), Some("main"));
}
on_both!(scripts, numbers_name_the_script_inbound_calls_run);

async fn tenants_never_reach_each_others_numbers(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let b = tenant_with_keys(&api, "b").await;
    let add = |key: &str, e164: &str| {
        let api = &api;
        let (key, e164) = (key.to_owned(), e164.to_owned());
        async move {
            let (status, n) = api
                .post(
                    "/v1/numbers",
                    &key,
                    &json!({"e164": e164, "carrier": "twilio"}),
                )
                .await;
            assert_eq!(status.as_u16(), 201, "{n}");
            n
        }
    };
    let a1 = add(&a.admin, "+14155550100").await;
    add(&a.admin, "+14155550101").await;
    let b1 = add(&b.admin, "+14155550200").await;

    assert_eq!(
        e164s(&api.get("/v1/numbers", &a.admin).await.1),
        ["+14155550100", "+14155550101"]
    );
    assert_eq!(
        e164s(&api.get("/v1/numbers", &b.admin).await.1),
        ["+14155550200"]
    );
    assert_error(
        &api.get(&format!("/v1/numbers?tenant_id={}", b.id), &a.admin)
            .await,
        404,
        "not_found",
    );
    assert_eq!(e164s(&api.get("/v1/numbers", ADMIN_KEY).await.1).len(), 3);
    assert_eq!(
        e164s(
            &api.get(&format!("/v1/numbers?tenant_id={}", b.id), ADMIN_KEY)
                .await
                .1
        ),
        ["+14155550200"]
    );

    let b_path = format!("/v1/numbers/{}", b1["id"].as_str().unwrap());
    assert_error(&api.get(&b_path, &a.admin).await, 404, "not_found");
    assert_error(
        &patch(&api, &b_path, &a.admin, &json!({"script": null})).await,
        404,
        "not_found",
    );
    assert_error(&api.delete(&b_path, &a.admin).await, 404, "not_found");
    assert_eq!(api.get(&b_path, &b.admin).await.1, b1, "untouched");

    let a_path = format!("/v1/numbers/{}", a1["id"].as_str().unwrap());
    assert_eq!(api.get(&a_path, &a.admin).await.1, a1);
    assert_eq!(api.get(&a_path, ADMIN_KEY).await.1, a1);
    assert_error(
        &api.get("/v1/numbers/42", &a.admin).await,
        400,
        "invalid_id",
    );
    assert_eq!(api.delete(&a_path, &a.admin).await.0.as_u16(), 204);
    assert_error(&api.get(&a_path, &a.admin).await, 404, "not_found");
    assert_error(&api.delete(&a_path, &a.admin).await, 404, "not_found");
    // A deleted number is free for another tenant.
    add(&b.admin, "+14155550100").await;

    // Paging.
    let (_, first) = api.get("/v1/numbers?limit=1", ADMIN_KEY).await;
    assert_eq!(e164s(&first).len(), 1);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, rest) = api
        .get(&format!("/v1/numbers?limit=200&cursor={cursor}"), ADMIN_KEY)
        .await;
    assert_eq!(e164s(&rest).len(), 2);
    assert!(rest.get("next_cursor").is_none());
    assert_error(
        &api.get("/v1/numbers?limit=500", ADMIN_KEY).await,
        400,
        "invalid_limit",
    );
}
on_both!(isolation, tenants_never_reach_each_others_numbers);
