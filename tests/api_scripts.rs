//! `/v1/scripts` on SQLite and PostgreSQL: uploads parsed (errors as positioned diagnostics,
//! warnings in the answer), a new version only when the canonical form changes, reads by name
//! and version, roles, and tenant isolation.

mod common;

use common::control::{ADMIN_KEY, TestControl, assert_error};
use common::db::TestDb;
use common::tenants::tenant_with_keys;
use common::test_config;
use serde_json::{Value, json};

const V1: &str = "[start]\nHello.\n-> END\n";
const V1_REFORMATTED: &str = "// the greeting\n[start]   \n  Hello.  \n\n-> END // done\n";
const V2: &str = "[start]\nHello there.\n-> END\n";
const WITH_WARNING: &str = "[start]\nHi.\n-> END\n\n[lost]\nBye.\n-> END\n";
const WITH_ERRORS: &str = "[start]\nHi.\n-> 1: nowhere\n";

fn names(list: &Value) -> Vec<(String, u64)> {
    list["scripts"]
        .as_array()
        .expect("scripts")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn uploads_are_parsed_and_versioned(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let upload = |source: &str| {
        let api = &api;
        let body = json!({"name": "main", "source": source});
        let key = a.admin.clone();
        async move { api.post("/v1/scripts", &key, &body).await }
    };

    let (status, v1) = upload(V1).await;
    assert_eq!(status.as_u16(), 201, "{v1}");
    let mut fields: Vec<&str> = v1.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "hash",
            "id",
            "name",
            "source",
            "tenant_id",
            "version",
            "warnings"
        ]
    );
    assert_eq!(
        (v1["version"].as_u64(), v1["tenant_id"].as_str()),
        (Some(1), Some(a.id.as_str()))
    );
    assert_eq!(v1["warnings"], json!([]));
    assert_eq!(v1["hash"].as_str().unwrap().len(), 64);

    // Same canonical form: the latest, no new version.
    let (status, same) = upload(V1_REFORMATTED).await;
    assert_eq!(status.as_u16(), 200, "{same}");
    assert_eq!(
        (same["id"].clone(), same["version"].as_u64()),
        (v1["id"].clone(), Some(1))
    );

    let (status, v2) = upload(V2).await;
    assert_eq!((status.as_u16(), v2["version"].as_u64()), (201, Some(2)));
    assert_ne!(v2["hash"], v1["hash"]);

    let (status, v3) = upload(WITH_WARNING).await;
    assert_eq!((status.as_u16(), v3["version"].as_u64()), (201, Some(3)));
    let warnings = v3["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v3}");
    assert_eq!(
        (warnings[0]["line"].as_u64(), warnings[0]["col"].as_u64()),
        (Some(5), Some(1))
    );
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("never reached")
    );

    let bad = upload(WITH_ERRORS).await;
    let msg = assert_error(&bad, 422, "invalid_script");
    assert!(msg.contains("1 error"), "{msg}");
    let diagnostics = bad.1["error"]["diagnostics"]
        .as_array()
        .expect("diagnostics");
    assert_eq!(diagnostics.len(), 1, "{}", bad.1);
    assert_eq!(diagnostics[0]["line"], 3);
    assert!(diagnostics[0]["col"].as_u64().unwrap() >= 1);
    assert!(
        diagnostics[0]["message"]
            .as_str()
            .unwrap()
            .contains("nowhere")
    );
    assert_eq!(diagnostics[0]["severity"], "error");

    // Reads.
    let (status, latest) = api.get("/v1/scripts/main", &a.agent).await;
    assert_eq!(status.as_u16(), 200, "{latest}");
    assert_eq!(
        (latest["version"].as_u64(), latest["source"].as_str()),
        (Some(3), Some(WITH_WARNING))
    );
    assert!(
        latest.get("warnings").is_none(),
        "a stored version is the Script resource"
    );
    let (_, two) = api.get("/v1/scripts/main/versions/2", &a.agent).await;
    assert_eq!(
        (two["source"].as_str(), two["hash"].clone()),
        (Some(V2), v2["hash"].clone())
    );
    let (_, versions) = api.get("/v1/scripts/main/versions", &a.agent).await;
    let listed: Vec<u64> = names(&versions).into_iter().map(|(_, v)| v).collect();
    assert_eq!(listed, [1, 2, 3]);
    let (_, page) = api.get("/v1/scripts/main/versions?limit=2", &a.agent).await;
    assert_eq!(page["next_cursor"], "2");
    let (_, rest) = api
        .get("/v1/scripts/main/versions?limit=2&cursor=2", &a.agent)
        .await;
    assert_eq!(names(&rest), [("main".to_owned(), 3)]);
    assert_error(
        &api.get("/v1/scripts/main/versions?cursor=x", &a.agent)
            .await,
        400,
        "invalid_cursor",
    );
    assert_error(
        &api.get("/v1/scripts/main/versions/9", &a.agent).await,
        404,
        "not_found",
    );
    assert_error(
        &api.get("/v1/scripts/main/versions/two", &a.agent).await,
        400,
        "invalid_id",
    );
    assert_error(
        &api.get("/v1/scripts/nope", &a.agent).await,
        404,
        "not_found",
    );
    assert_error(
        &api.get("/v1/scripts/nope/versions", &a.agent).await,
        404,
        "not_found",
    );
    assert_error(
        &api.get("/v1/scripts/No%20Way", &a.agent).await,
        400,
        "invalid_script_name",
    );
}
on_both!(versions, uploads_are_parsed_and_versioned);

async fn bad_uploads_and_roles(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let post = |key: &str, body: Value| {
        let api = &api;
        let key = key.to_owned();
        async move { api.post("/v1/scripts", &key, &body).await }
    };
    for name in ["", "Main", "a b", "../etc", &"x".repeat(65)] {
        let got = post(&a.admin, json!({"name": name, "source": V1})).await;
        let msg = assert_error(&got, 400, "invalid_script_name");
        assert!(msg.contains("a-z, 0-9"), "{msg}");
    }
    let ok_name = "x".repeat(64);
    assert_eq!(
        post(&a.admin, json!({"name": ok_name, "source": V1}))
            .await
            .0
            .as_u16(),
        201
    );
    assert_error(
        &post(&a.admin, json!({"name": "m"})).await,
        422,
        "invalid_body",
    );
    assert_error(
        &post(&a.admin, json!({"name": "m", "source": ["x"]})).await,
        422,
        "invalid_body",
    );
    assert_error(
        &post(&a.admin, json!({"name": "m", "source": V1, "lang": "en"})).await,
        422,
        "invalid_body",
    );
    // AGENT keys read but do not write.
    assert_error(
        &post(&a.agent, json!({"name": "m", "source": V1})).await,
        403,
        "forbidden",
    );
    assert_eq!(api.get("/v1/scripts", &a.agent).await.0.as_u16(), 200);
    // SUPERADMIN names the tenant.
    assert_error(
        &post(ADMIN_KEY, json!({"name": "m", "source": V1})).await,
        400,
        "tenant_required",
    );
    let (status, made) = post(
        ADMIN_KEY,
        json!({"name": "m", "source": V1, "tenant_id": a.id}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), made["tenant_id"].as_str()),
        (201, Some(a.id.as_str()))
    );
    assert_error(
        &api.get("/v1/scripts/m", ADMIN_KEY).await,
        400,
        "tenant_required",
    );
    let (status, read) = api
        .get(&format!("/v1/scripts/m?tenant_id={}", a.id), ADMIN_KEY)
        .await;
    assert_eq!(
        (status.as_u16(), read["id"].clone()),
        (200, made["id"].clone())
    );
}
on_both!(bad_uploads, bad_uploads_and_roles);

async fn tenants_never_reach_each_others_scripts(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let b = tenant_with_keys(&api, "b").await;
    for name in ["zeta", "alpha", "mid"] {
        let (status, _) = api
            .post(
                "/v1/scripts",
                &a.admin,
                &json!({"name": name, "source": V1}),
            )
            .await;
        assert_eq!(status.as_u16(), 201);
    }
    api.post(
        "/v1/scripts",
        &a.admin,
        &json!({"name": "mid", "source": V2}),
    )
    .await;
    let (status, b_main) = api
        .post(
            "/v1/scripts",
            &b.admin,
            &json!({"name": "alpha", "source": V2}),
        )
        .await;
    assert_eq!(status.as_u16(), 201);
    assert_eq!(b_main["version"], 1, "versions count per tenant");

    let (_, list) = api.get("/v1/scripts", &a.agent).await;
    let expected: Vec<(String, u64)> =
        vec![("alpha".into(), 1), ("mid".into(), 2), ("zeta".into(), 1)];
    assert_eq!(names(&list), expected);
    assert_eq!(
        names(&api.get("/v1/scripts", &b.agent).await.1),
        [("alpha".to_owned(), 1)]
    );
    let (_, page) = api.get("/v1/scripts?limit=2", &a.agent).await;
    assert_eq!(page["next_cursor"], "mid");
    assert_eq!(
        names(&api.get("/v1/scripts?limit=2&cursor=mid", &a.agent).await.1),
        [("zeta".to_owned(), 1)]
    );
    assert_error(
        &api.get("/v1/scripts?cursor=BAD!", &a.agent).await,
        400,
        "invalid_cursor",
    );

    // B reads only its own `alpha`, never A's `zeta`.
    assert_eq!(api.get("/v1/scripts/alpha", &b.agent).await.1["source"], V2);
    assert_eq!(api.get("/v1/scripts/alpha", &a.agent).await.1["source"], V1);
    assert_error(
        &api.get("/v1/scripts/zeta", &b.agent).await,
        404,
        "not_found",
    );
    assert_error(
        &api.get("/v1/scripts/zeta/versions", &b.agent).await,
        404,
        "not_found",
    );
    assert_error(
        &api.get("/v1/scripts/zeta/versions/1", &b.agent).await,
        404,
        "not_found",
    );
    let foreign = format!("?tenant_id={}", a.id);
    for path in [
        "/v1/scripts",
        "/v1/scripts/zeta",
        "/v1/scripts/zeta/versions",
        "/v1/scripts/zeta/versions/1",
    ] {
        assert_error(
            &api.get(&format!("{path}{foreign}"), &b.admin).await,
            404,
            "not_found",
        );
    }
    // B cannot write into A.
    let into_a = json!({"name": "zeta", "source": V2, "tenant_id": a.id});
    assert_error(
        &api.post("/v1/scripts", &b.admin, &into_a).await,
        404,
        "not_found",
    );
    assert_eq!(api.get("/v1/scripts/zeta", &a.agent).await.1["version"], 1);
}
on_both!(isolation, tenants_never_reach_each_others_scripts);
