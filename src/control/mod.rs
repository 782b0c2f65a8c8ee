//! The control plane's HTTP API: tenants, API keys, numbers, scripts, calls and their
//! CallEvents under `/v1` (bearer API keys), and the carriers' webhooks.
//!
//! It never touches audio: calls it starts reach their session through the registry's
//! expectations (see [`crate::call::registry`]), and it reads what calls did from the store.
//!
//! - [`auth`]: the [`auth::Principal`] behind a bearer key, its role and tenant scope.
//! - [`error`]: the JSON error every route answers with.
//! - [`extract`]: body, query and path extractors whose rejections are those errors.
//! - [`bootstrap`]: the first SUPERADMIN key of an empty database.
//! - [`model`]: the JSON resources, request bodies and paging.
//! - [`tenants`], [`keys`], [`numbers`], [`scripts`]: the catalog's routes.
//! - [`openapi`]: the OpenAPI document, at `GET /openapi.json`.

pub mod auth;
pub mod bootstrap;
pub mod error;
pub mod extract;
pub mod keys;
pub mod model;
pub mod numbers;
pub mod openapi;
pub mod scripts;
pub mod tenants;

use std::ops::Deref;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde::Serialize;

use crate::call::registry::Registry;
use crate::store::Store;
use auth::Principal;

/// What the control plane's routes share.
pub struct ControlDeps {
    /// The durable store.
    pub store: Store,
    /// Live and expected calls of this gateway.
    pub registry: Arc<Registry>,
    /// The base URL carriers use to reach the gateway (`VOICEGW_PUBLIC_URL`), for webhook and
    /// stream URLs and signature checks; `None` uses the request's `Host`.
    pub public_url: Option<String>,
    /// The Twilio auth token: webhooks must be signed with it when set.
    pub twilio_auth_token: Option<String>,
}

/// The routes' state (cheap to clone).
#[derive(Clone)]
pub struct ControlState(Arc<ControlDeps>);

impl ControlState {
    /// State over `deps`.
    pub fn new(deps: ControlDeps) -> Self {
        ControlState(Arc::new(deps))
    }
}

impl Deref for ControlState {
    type Target = ControlDeps;

    fn deref(&self) -> &ControlDeps {
        &self.0
    }
}

/// The control plane's routes, to merge into the gateway's router.
pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/v1/me", get(whoami))
        .merge(tenants::router())
        .merge(keys::router())
        .merge(numbers::router())
        .merge(scripts::router())
        .merge(openapi::router())
        .with_state(state)
}

/// The caller's own key, as `GET /v1/me` answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The key's id.
    pub key_id: String,
    /// The key's tenant (absent for SUPERADMIN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The key's role.
    #[schema(value_type = String, example = "ADMIN")]
    pub role: crate::store::tenants::Role,
}

/// `GET /v1/me`: who the bearer key is.
#[utoipa::path(
    get, path = "/v1/me", tag = "keys",
    responses(
        (status = 200, description = "The caller's key", body = Me),
        (status = 401, description = "No valid key", body = model::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn whoami(principal: Principal) -> Json<Me> {
    Json(Me {
        key_id: principal.key_id.to_string(),
        tenant_id: principal.tenant.map(|t| t.to_string()),
        role: principal.role,
    })
}
