//! `/v1/tenants`: SUPERADMIN keys create, list and change tenants; a tenant's own keys may
//! read their tenant.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ControlState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use super::model::{CreateTenant, ErrorBody, Tenant, TenantList, UpdateTenant};
use crate::store::TenantId;
use crate::store::tenants::{Plan, Role, display_name};

/// The tenant routes.
pub fn router() -> Router<ControlState> {
    Router::new()
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{id}", get(get_tenant).patch(update_tenant))
}

/// Creates a tenant (SUPERADMIN).
#[utoipa::path(
    post, path = "/v1/tenants", tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 400, description = "Bad name or plan", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not a SUPERADMIN key", body = ErrorBody),
        (status = 422, description = "Body does not fit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_tenant(
    State(state): State<ControlState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    principal.require(Role::Superadmin)?;
    display_name("name", &body.name)?;
    let plan = match body.plan.as_deref() {
        Some(label) => Plan::from_label(label)?,
        None => Plan::Full,
    };
    let tenant = state.store.create_tenant(&body.name, plan).await?;
    Ok((StatusCode::CREATED, Json(Tenant::from(&tenant))))
}

/// Lists every tenant (SUPERADMIN).
#[utoipa::path(
    get, path = "/v1/tenants", tag = "tenants",
    responses(
        (status = 200, description = "Every tenant, oldest first", body = TenantList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not a SUPERADMIN key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_tenants(
    State(state): State<ControlState>,
    principal: Principal,
) -> ApiResult<Json<TenantList>> {
    principal.require(Role::Superadmin)?;
    let tenants = state.store.list_tenants(principal.scope()).await?;
    Ok(Json(TenantList {
        tenants: tenants.iter().map(Tenant::from).collect(),
    }))
}

/// Reads a tenant: any tenant for SUPERADMIN, its own for a tenant key.
#[utoipa::path(
    get, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = uuid::Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant in the key's scope", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_tenant(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<Tenant>> {
    let tenant = state
        .store
        .get_tenant(principal.scope(), TenantId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(Json(Tenant::from(&tenant)))
}

/// Renames a tenant or changes its plan (SUPERADMIN).
#[utoipa::path(
    patch, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = uuid::Uuid, Path, description = "Tenant id")),
    request_body = UpdateTenant,
    responses(
        (status = 200, description = "The tenant after the change", body = Tenant),
        (status = 400, description = "Bad id, name or plan", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not a SUPERADMIN key", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "Body does not fit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_tenant(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> ApiResult<Json<Tenant>> {
    principal.require(Role::Superadmin)?;
    if let Some(name) = &body.name {
        display_name("name", name)?;
    }
    let plan = body.plan.as_deref().map(Plan::from_label).transpose()?;
    let tenant = state
        .store
        .update_tenant(principal.scope(), TenantId(id), body.name.as_deref(), plan)
        .await?;
    Ok(Json(Tenant::from(&tenant)))
}
