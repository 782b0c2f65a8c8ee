//! Bearer keys on the control plane: missing, malformed, unknown and revoked keys are refused
//! with a JSON 401; a valid key says who it is.

mod common;

use common::control::{ADMIN_KEY, TestControl, assert_error};
use common::db::TestDb;
use common::test_config;
use voicegw::store::tenants::{Plan, Role};

async fn keys_are_checked(db: TestDb) {
    let api = TestControl::start(db, test_config()).await;
    let me = api.get("/v1/me", ADMIN_KEY).await;
    assert_eq!(me.0.as_u16(), 200, "{:?}", me.1);
    assert_eq!(me.1["role"], "SUPERADMIN");
    assert!(me.1.get("tenant_id").is_none());

    let none = api.call(reqwest::Method::GET, "/v1/me", None, None).await;
    assert!(assert_error(&none, 401, "unauthorized").contains("Bearer"));
    let unknown = api
        .get("/v1/me", "vgw_not_a_real_key_000000000000000")
        .await;
    assert_error(&unknown, 401, "unauthorized");
    let basic = api
        .http
        .get(api.url("/v1/me"))
        .basic_auth("user", Some("pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    assert_eq!(
        basic.headers()["www-authenticate"],
        "Bearer realm=\"voicegw\""
    );

    let tenant = api
        .db
        .store
        .create_tenant("acme", Plan::Full)
        .await
        .unwrap();
    let (key, secret) = api
        .db
        .store
        .create_api_key(Some(tenant.id), Role::Agent, "ops")
        .await
        .unwrap();
    let me = api.get("/v1/me", &secret).await;
    assert_eq!(me.1["role"], "AGENT");
    assert_eq!(me.1["tenant_id"], tenant.id.to_string());
    api.db
        .store
        .revoke_api_key(voicegw::store::Scope::Super, key.id)
        .await
        .unwrap();
    assert_error(&api.get("/v1/me", &secret).await, 401, "unauthorized");
}
on_both!(keys, keys_are_checked);

#[tokio::test]
async fn an_empty_database_gets_one_generated_admin_key() {
    use voicegw::control::bootstrap::{Bootstrap, ensure_admin_key};
    let db = TestDb::sqlite().await;
    let Bootstrap::Generated(secret) = ensure_admin_key(&db.store, None).await.unwrap() else {
        panic!("expected a generated key");
    };
    assert!(secret.starts_with("vgw_"));
    let key = db.store.find_api_key(&secret).await.unwrap().unwrap();
    assert_eq!(key.role, Role::Superadmin);
    assert_eq!(
        ensure_admin_key(&db.store, None).await.unwrap(),
        Bootstrap::KeysExist
    );
    assert_eq!(
        ensure_admin_key(&db.store, Some(ADMIN_KEY)).await.unwrap(),
        Bootstrap::ConfiguredKeyStored
    );
    assert_eq!(
        ensure_admin_key(&db.store, Some(ADMIN_KEY)).await.unwrap(),
        Bootstrap::ConfiguredKeyPresent
    );
    assert!(
        ensure_admin_key(&db.store, Some("vgw_short"))
            .await
            .is_err()
    );
}
