//! Two tenants, each with an ADMIN and an AGENT key made through the API, for role and
//! isolation tests of the control plane.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::control::{ADMIN_KEY, TestControl};

/// A tenant and its keys' secrets.
pub struct TenantKeys {
    pub id: String,
    pub admin: String,
    pub agent: String,
}

/// Creates tenant `name` and its keys through the API (as SUPERADMIN).
pub async fn tenant_with_keys(api: &TestControl, name: &str) -> TenantKeys {
    let (status, tenant) = api
        .post(
            "/v1/tenants",
            ADMIN_KEY,
            &json!({"name": name, "plan": "FULL"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let id = tenant["id"].as_str().expect("tenant id").to_owned();
    let key = |role: &'static str| {
        let body = json!({"name": format!("{name}-{role}"), "role": role, "tenant_id": id});
        async move {
            let (status, key) = api.post("/v1/keys", ADMIN_KEY, &body).await;
            assert_eq!(status, StatusCode::CREATED, "{key}");
            key["secret"].as_str().expect("secret").to_owned()
        }
    };
    let admin = key("ADMIN").await;
    let agent = key("AGENT").await;
    TenantKeys { id, admin, agent }
}

/// `PATCH path` as `key` with a JSON body.
pub async fn patch(api: &TestControl, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    api.call(Method::PATCH, path, Some(key), Some(body)).await
}
