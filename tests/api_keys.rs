//! `/v1/keys` on SQLite and PostgreSQL: who may make which key, secrets shown once and never
//! listed, revocation that takes effect at once, paging, and tenant isolation.

mod common;

use common::control::{ADMIN_KEY, TestControl, assert_error};
use common::db::TestDb;
use common::tenants::tenant_with_keys;
use common::test_config;
use serde_json::{Value, json};

fn ids(list: &Value) -> Vec<String> {
    list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn roles_decide_which_keys(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let b = tenant_with_keys(&api, "b").await;

    // ADMIN: AGENT and ADMIN keys of its own tenant.
    let (status, key) = api
        .post(
            "/v1/keys",
            &a.admin,
            &json!({"name": "ops", "role": "AGENT"}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{key}");
    assert_eq!(key["tenant_id"], a.id.as_str());
    assert_eq!(key["role"], "AGENT");
    let secret = key["secret"].as_str().unwrap();
    assert!(secret.starts_with(key["prefix"].as_str().unwrap()));
    let me = api.get("/v1/me", secret).await.1;
    assert_eq!(
        (me["role"].as_str(), me["tenant_id"].as_str()),
        (Some("AGENT"), Some(a.id.as_str()))
    );
    let own = json!({"name": "x", "role": "ADMIN", "tenant_id": a.id});
    assert_eq!(api.post("/v1/keys", &a.admin, &own).await.0.as_u16(), 201);
    let other = json!({"name": "x", "role": "ADMIN", "tenant_id": b.id});
    assert_error(
        &api.post("/v1/keys", &a.admin, &other).await,
        404,
        "not_found",
    );
    let root = json!({"name": "x", "role": "SUPERADMIN"});
    assert_error(
        &api.post("/v1/keys", &a.admin, &root).await,
        403,
        "forbidden",
    );
    // AGENT: none.
    let agent = json!({"name": "x", "role": "AGENT"});
    assert_error(
        &api.post("/v1/keys", &a.agent, &agent).await,
        403,
        "forbidden",
    );
    assert_error(&api.get("/v1/keys", &a.agent).await, 403, "forbidden");
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    assert_error(&api.delete(&path, &a.agent).await, 403, "forbidden");

    // SUPERADMIN: any, including keys with no tenant.
    let (status, root) = api
        .post(
            "/v1/keys",
            ADMIN_KEY,
            &json!({"name": "root2", "role": "SUPERADMIN"}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{root}");
    assert!(root.get("tenant_id").is_none());
    assert_eq!(
        api.get("/v1/me", root["secret"].as_str().unwrap()).await.1["role"],
        "SUPERADMIN"
    );
    let with_tenant = json!({"name": "x", "role": "SUPERADMIN", "tenant_id": a.id});
    assert_error(
        &api.post("/v1/keys", ADMIN_KEY, &with_tenant).await,
        400,
        "invalid_role",
    );
    let no_tenant = json!({"name": "x", "role": "AGENT"});
    assert_error(
        &api.post("/v1/keys", ADMIN_KEY, &no_tenant).await,
        400,
        "tenant_required",
    );
    let unknown = json!({"name": "x", "role": "AGENT", "tenant_id": uuid::Uuid::now_v7()});
    assert_error(
        &api.post("/v1/keys", ADMIN_KEY, &unknown).await,
        404,
        "not_found",
    );
    let for_b = json!({"name": "x", "role": "ADMIN", "tenant_id": b.id});
    let (status, made) = api.post("/v1/keys", ADMIN_KEY, &for_b).await;
    assert_eq!(
        (status.as_u16(), made["tenant_id"].as_str()),
        (201, Some(b.id.as_str()))
    );

    // Bad bodies.
    let msg = assert_error(
        &api.post("/v1/keys", &a.admin, &json!({"name": "x", "role": "BOSS"}))
            .await,
        400,
        "invalid_role",
    );
    assert!(msg.contains("AGENT, ADMIN or SUPERADMIN"), "{msg}");
    assert_error(
        &api.post(
            "/v1/keys",
            &a.admin,
            &json!({"name": "x", "role": "AGENT", "scopes": []}),
        )
        .await,
        422,
        "invalid_body",
    );
    assert_error(
        &api.post("/v1/keys", &a.admin, &json!({"name": "x", "role": 1}))
            .await,
        422,
        "invalid_body",
    );
    assert_error(
        &api.post(
            "/v1/keys",
            &a.admin,
            &json!({"name": "x", "role": "AGENT", "tenant_id": "nope"}),
        )
        .await,
        422,
        "invalid_body",
    );
    assert_error(
        &api.post("/v1/keys", &a.admin, &json!({"name": "", "role": "AGENT"}))
            .await,
        400,
        "invalid_name",
    );
}
on_both!(roles, roles_decide_which_keys);

async fn lists_hide_secrets_and_other_tenants(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let b = tenant_with_keys(&api, "b").await;
    let (status, a_list) = api.get("/v1/keys", &a.admin).await;
    assert_eq!(status.as_u16(), 200, "{a_list}");
    let keys = a_list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_eq!(key["tenant_id"], a.id.as_str());
        let mut fields: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["created_at", "id", "name", "prefix", "role", "tenant_id"]
        );
    }
    let text = a_list.to_string();
    assert!(
        !text.contains(&a.admin) && !text.contains(&a.agent),
        "no secrets in lists"
    );
    let b_ids = ids(&api.get("/v1/keys", &b.admin).await.1);
    assert_eq!(b_ids.len(), 2);
    assert!(ids(&a_list).iter().all(|id| !b_ids.contains(id)));
    // Naming another tenant is refused as if it did not exist.
    assert_error(
        &api.get(&format!("/v1/keys?tenant_id={}", b.id), &a.admin)
            .await,
        404,
        "not_found",
    );
    // SUPERADMIN sees every key (its own too), or one tenant's.
    assert_eq!(ids(&api.get("/v1/keys", ADMIN_KEY).await.1).len(), 5);
    assert_eq!(
        ids(&api
            .get(&format!("/v1/keys?tenant_id={}", b.id), ADMIN_KEY)
            .await
            .1),
        b_ids
    );
}
on_both!(lists, lists_hide_secrets_and_other_tenants);

async fn revoked_keys_are_refused_at_once(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    let b = tenant_with_keys(&api, "b").await;
    let id_of = |secret: &str| {
        let api = &api;
        let secret = secret.to_owned();
        async move {
            api.get("/v1/me", &secret).await.1["key_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let a_agent = id_of(&a.agent).await;
    let a_admin = id_of(&a.admin).await;
    let b_agent = id_of(&b.agent).await;

    // Another tenant's key: 404, and it keeps working.
    assert_error(
        &api.delete(&format!("/v1/keys/{b_agent}"), &a.admin).await,
        404,
        "not_found",
    );
    assert_eq!(api.get("/v1/me", &b.agent).await.0.as_u16(), 200);
    // The SUPERADMIN key is no tenant's.
    let root = api.get("/v1/me", ADMIN_KEY).await.1["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        &api.delete(&format!("/v1/keys/{root}"), &a.admin).await,
        404,
        "not_found",
    );
    // Itself: 409.
    assert_error(
        &api.delete(&format!("/v1/keys/{a_admin}"), &a.admin).await,
        409,
        "cannot_revoke_self",
    );
    assert_error(
        &api.delete("/v1/keys/123", &a.admin).await,
        400,
        "invalid_id",
    );

    let (status, _) = api.delete(&format!("/v1/keys/{a_agent}"), &a.admin).await;
    assert_eq!(status.as_u16(), 204);
    assert_error(&api.get("/v1/me", &a.agent).await, 401, "unauthorized");
    assert_error(
        &api.delete(&format!("/v1/keys/{a_agent}"), &a.admin).await,
        404,
        "not_found",
    );
    let listed = api.get("/v1/keys", &a.admin).await.1;
    let revoked = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == a_agent.as_str())
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].as_str().is_some(), "{revoked}");

    // SUPERADMIN revokes any tenant's key.
    assert_eq!(
        api.delete(&format!("/v1/keys/{b_agent}"), ADMIN_KEY)
            .await
            .0
            .as_u16(),
        204
    );
    assert_error(&api.get("/v1/me", &b.agent).await, 401, "unauthorized");
}
on_both!(revoke, revoked_keys_are_refused_at_once);

async fn lists_page_with_a_cursor(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let a = tenant_with_keys(&api, "a").await;
    for n in 0..3 {
        let body = json!({"name": format!("k{n}"), "role": "AGENT"});
        assert_eq!(api.post("/v1/keys", &a.admin, &body).await.0.as_u16(), 201);
    }
    let all = ids(&api.get("/v1/keys", &a.admin).await.1);
    assert_eq!(all.len(), 5);
    let mut seen = Vec::new();
    let mut path = "/v1/keys?limit=2".to_owned();
    loop {
        let (status, page) = api.get(&path, &a.admin).await;
        assert_eq!(status.as_u16(), 200, "{page}");
        assert!(page["keys"].as_array().unwrap().len() <= 2);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/keys?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, all, "every key once, in order");
    assert_error(
        &api.get("/v1/keys?limit=0", &a.admin).await,
        400,
        "invalid_limit",
    );
    assert_error(
        &api.get("/v1/keys?limit=201", &a.admin).await,
        400,
        "invalid_limit",
    );
    assert_error(
        &api.get("/v1/keys?limit=ten", &a.admin).await,
        400,
        "invalid_query",
    );
    assert_error(
        &api.get("/v1/keys?cursor=zzz", &a.admin).await,
        400,
        "invalid_cursor",
    );
    assert_error(
        &api.get("/v1/keys?page=2", &a.admin).await,
        400,
        "invalid_query",
    );
}
on_both!(paging, lists_page_with_a_cursor);
