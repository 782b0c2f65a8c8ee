//! `/v1/keys`: API keys. ADMIN keys make and revoke AGENT and ADMIN keys of their tenant;
//! SUPERADMIN keys any key, SUPERADMIN ones (no tenant) included. AGENT keys may not manage
//! keys. A secret is shown once, in the answer that created it; lists never show secrets or
//! hashes. A key cannot revoke itself.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};

use super::ControlState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::model::{ApiKey, ApiKeyList, CreateKey, ErrorBody, PageQuery, next_cursor};
use crate::store::TenantId;
use crate::store::tenants::{Role, display_name};

/// The key routes.
pub fn router() -> Router<ControlState> {
    Router::new()
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{id}", delete(revoke_key))
}

/// Creates a key and shows its secret once.
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = ApiKey),
        (status = 400, description = "Bad name or role, or a tenant missing or not allowed", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key, or an ADMIN key asking for SUPERADMIN", body = ErrorBody),
        (status = 404, description = "No such tenant in the key's scope", body = ErrorBody),
        (status = 422, description = "Body does not fit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(state): State<ControlState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<ApiKey>)> {
    principal.require(Role::Admin)?;
    let role = Role::from_label(&body.role)?;
    display_name("name", &body.name)?;
    let tenant = if role == Role::Superadmin {
        principal.require(Role::Superadmin)?;
        if body.tenant_id.is_some() {
            return Err(ApiError::bad_request(
                "invalid_role",
                "a SUPERADMIN key belongs to no tenant: leave out `tenant_id`",
            ));
        }
        None
    } else {
        Some(principal.acting_tenant(body.tenant_id.map(TenantId))?)
    };
    let (key, secret) = state.store.create_api_key(tenant, role, &body.name).await?;
    let mut shown = ApiKey::from(&key);
    shown.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

/// Lists the keys the caller's scope sees (revoked ones too), oldest first.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of keys", body = ApiKeyList),
        (status = 400, description = "Bad limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key", body = ErrorBody),
        (status = 404, description = "`tenant_id` names another tenant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_keys(
    State(state): State<ControlState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<ApiKeyList>> {
    principal.require(Role::Admin)?;
    let limit = page.limit()?;
    let keys = state
        .store
        .list_api_keys_page(page.scope(&principal)?, page.id_cursor()?, limit)
        .await?;
    Ok(Json(ApiKeyList {
        next_cursor: next_cursor(&keys, limit, |k| k.id.to_string()),
        keys: keys.iter().map(ApiKey::from).collect(),
    }))
}

/// Revokes a key: from now on it gets 401. A key cannot revoke itself (409).
#[utoipa::path(
    delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key", body = ErrorBody),
        (status = 404, description = "No live key with this id in the caller's scope", body = ErrorBody),
        (status = 409, description = "The key would revoke itself", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    principal.require(Role::Admin)?;
    if id == principal.key_id {
        return Err(ApiError::conflict(
            "cannot_revoke_self",
            "a key cannot revoke itself; revoke it with another key",
        ));
    }
    state.store.revoke_api_key(principal.scope(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
