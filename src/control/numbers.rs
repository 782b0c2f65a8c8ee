//! `/v1/numbers`: a tenant's phone numbers (ADMIN keys). A number belongs to one tenant; the
//! script it names (a script of that tenant) is what inbound calls to it run.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::ControlState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::model::{
    CreateNumber, ErrorBody, PageQuery, PhoneNumber, PhoneNumberList, UpdateNumber, next_cursor,
};
use crate::store::catalog::{self, Carrier, NewNumber};
use crate::store::tenants::Role;
use crate::store::{StoreError, TenantId};

/// The number routes.
pub fn router() -> Router<ControlState> {
    Router::new()
        .route("/v1/numbers", get(list_numbers).post(create_number))
        .route(
            "/v1/numbers/{id}",
            get(get_number).patch(update_number).delete(delete_number),
        )
}

/// The API error for a store error about a number (`e164` is the number asked for).
fn number_error(error: StoreError, e164: &str) -> ApiError {
    match error {
        StoreError::Conflict(_) => ApiError::conflict(
            "number_taken",
            format!("{e164} is already in use (numbers belong to one tenant)"),
        ),
        StoreError::NotFound("script") => ApiError::unprocessable(
            "unknown_script",
            "the number's tenant has no script of that name; create it with POST /v1/scripts",
        ),
        other => other.into(),
    }
}

/// Adds a number to the caller's tenant (SUPERADMIN keys name `tenant_id`).
#[utoipa::path(
    post, path = "/v1/numbers", tag = "numbers",
    request_body = CreateNumber,
    responses(
        (status = 201, description = "Added", body = PhoneNumber),
        (status = 400, description = "`invalid_number` (naming the E.164 rule), `invalid_carrier`, `invalid_script_name` or `tenant_required`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key", body = ErrorBody),
        (status = 404, description = "No such tenant in the key's scope", body = ErrorBody),
        (status = 409, description = "`number_taken`: some tenant has this number", body = ErrorBody),
        (status = 422, description = "`unknown_script`, or the body does not fit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_number(
    State(state): State<ControlState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateNumber>,
) -> ApiResult<(StatusCode, Json<PhoneNumber>)> {
    principal.require(Role::Admin)?;
    let tenant = principal.acting_tenant(body.tenant_id.map(TenantId))?;
    let e164 = catalog::e164(&body.e164)?;
    Carrier::parse(&body.carrier)?;
    if let Some(script) = &body.script {
        catalog::script_name(script)?;
    }
    let number = state
        .store
        .add_number(
            tenant,
            NewNumber {
                e164: &e164,
                carrier: &body.carrier,
                script: body.script.as_deref(),
            },
        )
        .await
        .map_err(|e| number_error(e, &e164))?;
    Ok((StatusCode::CREATED, Json(PhoneNumber::from(&number))))
}

/// Lists the numbers the caller's scope sees, oldest first.
#[utoipa::path(
    get, path = "/v1/numbers", tag = "numbers",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of numbers", body = PhoneNumberList),
        (status = 400, description = "Bad limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key", body = ErrorBody),
        (status = 404, description = "`tenant_id` names another tenant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_numbers(
    State(state): State<ControlState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<PhoneNumberList>> {
    principal.require(Role::Admin)?;
    let limit = page.limit()?;
    let numbers = state
        .store
        .list_numbers(page.scope(&principal)?, page.id_cursor()?, limit)
        .await?;
    Ok(Json(PhoneNumberList {
        next_cursor: next_cursor(&numbers, limit, |n| n.id.to_string()),
        numbers: numbers.iter().map(PhoneNumber::from).collect(),
    }))
}

/// Reads a number.
#[utoipa::path(
    get, path = "/v1/numbers/{id}", tag = "numbers",
    params(("id" = uuid::Uuid, Path, description = "Number id")),
    responses(
        (status = 200, description = "The number", body = PhoneNumber),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key", body = ErrorBody),
        (status = 404, description = "No such number in the key's scope", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_number(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<PhoneNumber>> {
    principal.require(Role::Admin)?;
    let number = state
        .store
        .get_number(principal.scope(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("phone number"))?;
    Ok(Json(PhoneNumber::from(&number)))
}

/// Sets or (with `null`) clears the script inbound calls to the number run.
#[utoipa::path(
    patch, path = "/v1/numbers/{id}", tag = "numbers",
    params(("id" = uuid::Uuid, Path, description = "Number id")),
    request_body = UpdateNumber,
    responses(
        (status = 200, description = "The number after the change", body = PhoneNumber),
        (status = 400, description = "Malformed id or script name", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key", body = ErrorBody),
        (status = 404, description = "No such number in the key's scope", body = ErrorBody),
        (status = 422, description = "`unknown_script`, or the body does not fit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_number(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiJson(body): ApiJson<UpdateNumber>,
) -> ApiResult<Json<PhoneNumber>> {
    principal.require(Role::Admin)?;
    let Some(script) = body.script else {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "the body does not fit: missing field `script` (a script name, or null to clear it)",
        ));
    };
    if let Some(name) = &script {
        catalog::script_name(name)?;
    }
    let number = state
        .store
        .set_number_script(principal.scope(), id, script.as_deref())
        .await
        .map_err(|e| number_error(e, ""))?;
    Ok(Json(PhoneNumber::from(&number)))
}

/// Removes a number from its tenant.
#[utoipa::path(
    delete, path = "/v1/numbers/{id}", tag = "numbers",
    params(("id" = uuid::Uuid, Path, description = "Number id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key", body = ErrorBody),
        (status = 404, description = "No such number in the key's scope", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_number(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    principal.require(Role::Admin)?;
    state.store.delete_number(principal.scope(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
