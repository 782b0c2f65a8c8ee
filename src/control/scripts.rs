//! `/v1/scripts`: a tenant's Destiny-Scripts, versioned. ADMIN keys upload, AGENT keys read.
//! An upload is parsed first: errors are a 422 `invalid_script` with every diagnostic at its
//! line and column. A new version is stored only when the canonical hash changes (a
//! reformatted or re-uploaded script gives back the latest version, 200).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::ControlState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::model::{
    CreateScript, ErrorBody, PageQuery, Script, ScriptDiagnostic, ScriptList, ScriptSaved,
    TenantQuery, invalid_cursor, next_cursor,
};
use crate::store::catalog::script_name;
use crate::store::tenants::Role;
use crate::store::{Scope, TenantId};

/// The script routes.
pub fn router() -> Router<ControlState> {
    Router::new()
        .route("/v1/scripts", post(create_script).get(list_scripts))
        .route("/v1/scripts/{name}", get(get_script))
        .route("/v1/scripts/{name}/versions", get(list_versions))
        .route("/v1/scripts/{name}/versions/{version}", get(get_version))
}

/// Uploads a script: a new version when its canonical form changed.
#[utoipa::path(
    post, path = "/v1/scripts", tag = "scripts",
    request_body = CreateScript,
    responses(
        (status = 201, description = "A new version, with the source's warnings", body = ScriptSaved),
        (status = 200, description = "Same canonical form as the latest: the latest version", body = ScriptSaved),
        (status = 400, description = "`invalid_script_name` or `tenant_required`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "An AGENT key", body = ErrorBody),
        (status = 404, description = "No such tenant in the key's scope", body = ErrorBody),
        (status = 422, description = "`invalid_script` with `diagnostics`, or the body does not fit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_script(
    State(state): State<ControlState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateScript>,
) -> ApiResult<(StatusCode, Json<ScriptSaved>)> {
    principal.require(Role::Admin)?;
    let tenant = principal.acting_tenant(body.tenant_id.map(TenantId))?;
    script_name(&body.name)?;
    let parsed = crate::script::parse(&body.source).map_err(|diagnostics| {
        let errors = diagnostics.errors().count();
        let list: Vec<ScriptDiagnostic> = diagnostics
            .all()
            .iter()
            .map(ScriptDiagnostic::from)
            .collect();
        ApiError::unprocessable(
            "invalid_script",
            format!(
                "the script has {errors} error{}; see `diagnostics`",
                if errors == 1 { "" } else { "s" }
            ),
        )
        .with_detail("diagnostics", serde_json::json!(list))
    })?;
    let hash = crate::script::script_hash(&parsed.flow);
    let saved = state
        .store
        .save_script(tenant, &body.name, &body.source, &hash)
        .await?;
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ScriptSaved {
            script: Script::from(&saved.script),
            warnings: parsed.warnings.iter().map(ScriptDiagnostic::from).collect(),
        }),
    ))
}

/// Lists the latest version of each of the tenant's scripts, by name.
#[utoipa::path(
    get, path = "/v1/scripts", tag = "scripts",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of scripts", body = ScriptList),
        (status = 400, description = "Bad limit or cursor, or `tenant_required`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "`tenant_id` names another tenant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_scripts(
    State(state): State<ControlState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<ScriptList>> {
    principal.require(Role::Agent)?;
    let tenant = principal.acting_tenant(page.tenant_id.map(TenantId))?;
    let limit = page.limit()?;
    if let Some(cursor) = &page.cursor {
        script_name(cursor).map_err(|_| invalid_cursor(cursor))?;
    }
    let scripts = state
        .store
        .list_scripts(tenant, page.cursor.as_deref(), limit)
        .await?;
    Ok(Json(ScriptList {
        next_cursor: next_cursor(&scripts, limit, |s| s.name.clone()),
        scripts: scripts.iter().map(Script::from).collect(),
    }))
}

/// The scope of a script read: the acting tenant (SUPERADMIN keys name `tenant_id`).
fn script_scope(principal: &Principal, tenant: Option<uuid::Uuid>) -> ApiResult<Scope> {
    principal.require(Role::Agent)?;
    Ok(Scope::Tenant(
        principal.acting_tenant(tenant.map(TenantId))?,
    ))
}

/// Reads the latest version of a script.
#[utoipa::path(
    get, path = "/v1/scripts/{name}", tag = "scripts",
    params(("name" = String, Path, description = "Script name"), TenantQuery),
    responses(
        (status = 200, description = "The latest version", body = Script),
        (status = 400, description = "`invalid_script_name` or `tenant_required`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such script in the tenant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_script(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Script>> {
    let scope = script_scope(&principal, query.tenant_id)?;
    script_name(&name)?;
    let script = state
        .store
        .latest_script(scope, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("script"))?;
    Ok(Json(Script::from(&script)))
}

/// Lists a script's versions, oldest first.
#[utoipa::path(
    get, path = "/v1/scripts/{name}/versions", tag = "scripts",
    params(("name" = String, Path, description = "Script name"), PageQuery),
    responses(
        (status = 200, description = "A page of versions", body = ScriptList),
        (status = 400, description = "Bad name, limit or cursor, or `tenant_required`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such script in the tenant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_versions(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<ScriptList>> {
    let scope = script_scope(&principal, page.tenant_id)?;
    script_name(&name)?;
    let limit = page.limit()?;
    let after = page
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| invalid_cursor(c))
        })
        .transpose()?;
    let versions = state
        .store
        .list_script_versions(scope, &name, after, limit)
        .await?;
    if versions.is_empty() && after.is_none() {
        return Err(ApiError::not_found("script"));
    }
    Ok(Json(ScriptList {
        next_cursor: next_cursor(&versions, limit, |s| s.version.to_string()),
        scripts: versions.iter().map(Script::from).collect(),
    }))
}

/// Reads one version of a script.
#[utoipa::path(
    get, path = "/v1/scripts/{name}/versions/{version}", tag = "scripts",
    params(
        ("name" = String, Path, description = "Script name"),
        ("version" = u64, Path, description = "Version (1, 2, 3 …)"),
        TenantQuery,
    ),
    responses(
        (status = 200, description = "The version", body = Script),
        (status = 400, description = "Bad name or version, or `tenant_required`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such script version in the tenant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_version(
    State(state): State<ControlState>,
    principal: Principal,
    ApiPath((name, version)): ApiPath<(String, u64)>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Script>> {
    let scope = script_scope(&principal, query.tenant_id)?;
    script_name(&name)?;
    let version = i64::try_from(version).map_err(|_| ApiError::not_found("script version"))?;
    let script = state
        .store
        .script_version(scope, &name, version)
        .await?
        .ok_or_else(|| ApiError::not_found("script version"))?;
    Ok(Json(Script::from(&script)))
}
