//! The OpenAPI document of the control plane, generated from the routes' `#[utoipa::path]`
//! attributes and the JSON types' `ToSchema`, served at `GET /openapi.json` (no key needed).
//!
//! Routes added to the control plane add their handlers to `paths(…)` and their types to
//! `components(schemas(…))` of [`ApiDoc`].

use axum::routing::get;
use axum::{Json, Router};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::ControlState;
use super::model::{
    ApiKey, ApiKeyList, CreateKey, CreateNumber, CreateScript, CreateTenant, ErrorBody,
    ErrorDetail, PhoneNumber, PhoneNumberList, Script, ScriptDiagnostic, ScriptList, ScriptSaved,
    Tenant, TenantList, UpdateNumber, UpdateTenant,
};
use super::{calls, campaigns, events, keys, numbers, scripts, tenants};

/// The name of the bearer security scheme the paths refer to.
pub const BEARER: &str = "bearer";

/// The control plane's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "voicegw control plane",
        description = "Tenants, API keys, numbers, scripts and calls of a voicegw gateway. \
                       Every `/v1` route takes `Authorization: Bearer <API key>`; errors are \
                       `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        super::whoami,
        tenants::create_tenant,
        tenants::list_tenants,
        tenants::get_tenant,
        tenants::update_tenant,
        keys::create_key,
        keys::list_keys,
        keys::revoke_key,
        numbers::create_number,
        numbers::list_numbers,
        numbers::get_number,
        numbers::update_number,
        numbers::delete_number,
        scripts::create_script,
        scripts::list_scripts,
        scripts::get_script,
        scripts::list_versions,
        scripts::get_version,
        calls::create_call,
        calls::list_calls,
        calls::get_call,
        calls::delete_call,
        events::list_events,
        events::stream_events,
        campaigns::create_campaign,
        campaigns::list_campaigns,
        campaigns::get_campaign,
        campaigns::list_jobs,
        campaigns::add_contacts,
        campaigns::start_campaign,
        campaigns::pause_campaign,
        campaigns::resume_campaign,
        campaigns::cancel_campaign,
        campaigns::set_tenant_dialer,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        Tenant,
        TenantList,
        CreateTenant,
        UpdateTenant,
        ApiKey,
        ApiKeyList,
        CreateKey,
        PhoneNumber,
        PhoneNumberList,
        CreateNumber,
        UpdateNumber,
        Script,
        ScriptList,
        ScriptSaved,
        ScriptDiagnostic,
        CreateScript,
        super::Me,
        calls::CallView,
        calls::CallListView,
        calls::CreateCallRequest,
        events::CallEventView,
        events::CallEventListView,
        campaigns::CampaignView,
        campaigns::ProgressView,
        campaigns::CampaignListView,
        campaigns::CampaignCreatedView,
        campaigns::ContactsAddedView,
        campaigns::DialJobView,
        campaigns::DialJobListView,
        campaigns::TenantDialerView,
        campaigns::CreateCampaignRequest,
        campaigns::ContactInput,
        campaigns::AddContactsRequest,
        campaigns::SetTenantDialerRequest,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "tenants", description = "Customers of the gateway (SUPERADMIN)"),
        (name = "keys", description = "Bearer API keys"),
        (name = "numbers", description = "A tenant's phone numbers"),
        (name = "scripts", description = "A tenant's Destiny-Scripts, versioned"),
        (name = "campaigns", description = "Outbound campaigns: contacts dialed as durable jobs within calling hours, with retries, caps and progress"),
        (name = "calls", description = "Calls and their CallEvents (time-ordered; session events numbered 1, 2, 3 …, control-plane events from 2^40; opaque cursors)"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer API key security scheme.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("vgw_… API key".to_string());
        components.add_security_scheme(BEARER, SecurityScheme::Http(http));
    }
}

/// The route serving the document.
pub fn router() -> Router<ControlState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// `GET /openapi.json`.
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
