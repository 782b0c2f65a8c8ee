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
//! - [`calls`], [`events`]: `/v1/calls` and their CallEvents (list and live stream);
//!   [`dial`] and [`call_plane`]: the carriers and agents behind them; [`webhooks`]: the
//!   carriers' callbacks.
//! - [`campaigns`]: `/v1/campaigns`, the dialer's outbound campaigns and their contacts.

pub mod auth;
pub mod bootstrap;
pub mod call_plane;
pub mod calls;
pub mod campaigns;
pub mod carriers;
pub mod dial;
pub mod error;
pub mod events;
pub mod extract;
pub mod keys;
pub mod model;
pub mod numbers;
pub mod openapi;
pub mod scripts;
pub mod tenants;
pub mod webhooks;

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
    /// What placing and routing calls needs; `None`: the call routes answer 503.
    pub calls: Option<Arc<call_plane::CallPlane>>,
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

impl ControlState {
    /// Records a control-plane CallEvent on call `id` (numbered from 2^40; an identical one
    /// already recorded is skipped) and publishes it to live viewers.
    pub async fn record_event(
        &self,
        scope: crate::store::Scope,
        id: crate::call::CallId,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<(), crate::store::StoreError> {
        let recorded = self
            .store
            .record_control_event(scope, id, kind, data)
            .await?;
        if let (Some(row), Some(calls)) = (recorded, &self.calls) {
            calls.hub.publish(std::slice::from_ref(&row));
        }
        Ok(())
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
        .merge(campaigns::router())
        .route("/v1/calls", get(calls::list_calls).post(calls::create_call))
        .route(
            "/v1/calls/{id}",
            get(calls::get_call).delete(calls::delete_call),
        )
        .route("/v1/calls/{id}/events", get(events::list_events))
        .route("/v1/calls/{id}/events/stream", get(events::stream_events))
        .merge(webhooks::router())
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
