//! `/v1/calls`: place a call (`POST`), read one (`GET /{id}`), list them (`GET`, filtered,
//! newest first, cursor paging) and end one wherever it is (`DELETE /{id}`).
//!
//! The JSON call mirrors `voicegw.v1.Call` (proto/voicegw.proto). A tenant's key sees its own
//! calls only: any other id is 404.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ControlState;
use super::auth::Principal;
use super::call_plane::{CallPlane, plan_dials, render_voicemail, tenant_plan};
use super::dial::{CarrierName, DialError, MachineDetection, PlaceCall, call_urls, is_e164};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
#[allow(unused_imports)]
use super::model::ErrorBody;
use crate::call::CallId;
use crate::call::registry::{Control, OutboundPlan};
use crate::store::call_records::{CallCursor, CallFilter, CallSetup, CarrierReport, Created};
use crate::store::calls::{Call, CallStatus, Direction, NewCall};
use crate::store::tenants::Role;
use crate::store::{Scope, TenantId};

/// Longest accepted `Idempotency-Key` (characters).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Most variables a call takes.
pub const MAX_VARIABLES: usize = 100;
/// Longest variable value (characters).
pub const MAX_VARIABLE_CHARS: usize = 1000;
/// Longest voicemail message (characters).
pub const MAX_VOICEMAIL_CHARS: usize = 2000;

/// A call as the API shows it (`voicegw.v1.Call`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Call)]
pub struct CallView {
    /// The call's id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// `inbound` | `outbound`.
    pub direction: String,
    /// `queued` | `ringing` | `in_progress` | `completed` | `failed` | `busy` | `no_answer` |
    /// `canceled`.
    pub status: String,
    /// Caller (E.164).
    pub from: String,
    /// Callee (E.164).
    pub to: String,
    /// `twilio` | `exotel`.
    pub carrier: String,
    /// The carrier's call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier_sid: Option<String>,
    /// The agent that serves it: `script:<name>`, `llm`, `echo`.
    pub agent: String,
    /// The tenant script version it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_id: Option<String>,
    /// Template variables.
    pub variables: BTreeMap<String, String>,
    /// Outcome (the end reason or the script's outcome).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Answering-machine verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// Recording URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// RFC 3339 (UTC, microseconds) of a time in µs since the epoch.
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

impl From<&Call> for CallView {
    fn from(call: &Call) -> Self {
        CallView {
            id: call.id.to_string(),
            tenant_id: call.tenant_id.to_string(),
            direction: call.direction.as_str().to_owned(),
            status: call.status.as_str().to_owned(),
            from: call.from.clone(),
            to: call.to.clone(),
            carrier: call.carrier.clone(),
            carrier_sid: call.carrier_sid.clone(),
            agent: call.agent.clone(),
            script_id: call.script_id.clone(),
            variables: call.variables.clone(),
            outcome: call.outcome.clone(),
            answered_by: call.answered_by.clone(),
            recording_url: call.recording_url.clone(),
            error: call.error.clone(),
            created_at: rfc3339(call.created_us),
            updated_at: rfc3339(call.updated_us),
            answered_at: call.answered_us.map(rfc3339),
            ended_at: call.ended_us.map(rfc3339),
        }
    }
}

/// A page of calls (`voicegw.v1.CallList`), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CallList)]
pub struct CallListView {
    /// The calls.
    pub calls: Vec<CallView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /v1/calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCallRequest {
    /// The person to call (E.164).
    pub to: String,
    /// One of the tenant's numbers (E.164); or give `number_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The id of one of the tenant's numbers; or give `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_id: Option<uuid::Uuid>,
    /// A tenant script's name (its latest version runs); or give `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// A gateway agent (`llm`, `echo`, `script:<file>`); or give `script`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Template variables (a flat map of strings).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The tenant (SUPERADMIN keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<uuid::Uuid>,
    /// Answering-machine detection: `enable` or `detect_message_end`. The callee is listened
    /// to before the agent greets: a person is greeted, a machine gets `voicemail_message`
    /// after its beep (or the script's `[voicemail]` node) or is hung up on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_detection: Option<MachineDetection>,
    /// Left on an answering machine after the beep (`{{ variable }}` slots filled from
    /// `variables`); needs `machine_detection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
    /// Ring time, 1–600 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Longest call, 1–14400 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_secs: Option<u32>,
    /// Record the call.
    #[serde(default)]
    pub record: bool,
}

impl CreateCallRequest {
    /// Checks what can be checked without the store.
    fn validate(&self) -> Result<(), ApiError> {
        let bad = |code, message: String| Err(ApiError::unprocessable(code, message));
        if !is_e164(&self.to) {
            return bad(
                "invalid_number",
                format!(
                    "`to` must be an E.164 number such as +14155550100, not {:?}",
                    self.to
                ),
            );
        }
        match (&self.from, &self.number_id) {
            (Some(from), None) if !is_e164(from) => {
                return bad(
                    "invalid_number",
                    format!("`from` must be an E.164 number, not {from:?}"),
                );
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return bad(
                    "invalid_body",
                    "give exactly one of `from` and `number_id`".to_owned(),
                );
            }
        }
        if self.script.is_some() == self.agent.is_some() {
            return bad(
                "invalid_body",
                "give exactly one of `script` and `agent`".to_owned(),
            );
        }
        if let Err(message) = check_variables(&self.variables) {
            return bad("invalid_variables", message);
        }
        if let Some(message) = &self.voicemail_message {
            if self.machine_detection.is_none() {
                return bad(
                    "invalid_body",
                    "`voicemail_message` needs `machine_detection`: only a detected machine gets it"
                        .to_owned(),
                );
            }
            if message.trim().is_empty() || message.chars().count() > MAX_VOICEMAIL_CHARS {
                return bad(
                    "invalid_body",
                    format!("`voicemail_message` must be 1–{MAX_VOICEMAIL_CHARS} characters"),
                );
            }
        }
        if let Err(message) = check_call_limits(self.timeout_secs, self.time_limit_secs) {
            return bad("invalid_body", message);
        }
        Ok(())
    }

    /// A digest of the request as the tenant made it (to tell a replay from a reuse of its
    /// idempotency key).
    fn hash(&self, tenant: TenantId) -> String {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut digest = Sha256::new();
        digest.update(tenant.to_string().as_bytes());
        digest.update(&body);
        hex::encode(digest.finalize())
    }
}

/// Checks a call's template variables: at most [`MAX_VARIABLES`], names 1–64 characters,
/// values at most [`MAX_VARIABLE_CHARS`].
pub(crate) fn check_variables(variables: &BTreeMap<String, String>) -> Result<(), String> {
    if variables.len() > MAX_VARIABLES {
        return Err(format!("at most {MAX_VARIABLES} variables"));
    }
    if let Some((name, _)) = variables
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > 64 || v.chars().count() > MAX_VARIABLE_CHARS)
    {
        return Err(format!(
            "variable {name:?}: names are 1–64 characters, values at most {MAX_VARIABLE_CHARS}"
        ));
    }
    Ok(())
}

/// Checks a call's ring time (1–600 s) and longest length (1–14400 s).
pub(crate) fn check_call_limits(
    timeout_secs: Option<u32>,
    time_limit_secs: Option<u32>,
) -> Result<(), String> {
    if let Some(t) = timeout_secs
        && !(1..=600).contains(&t)
    {
        return Err(format!("`timeout_secs` must be 1–600, not {t}"));
    }
    if let Some(t) = time_limit_secs
        && !(1..=14_400).contains(&t)
    {
        return Err(format!("`time_limit_secs` must be 1–14400, not {t}"));
    }
    Ok(())
}

/// The `CallPlane`, or 503 when this gateway serves no calls.
pub(crate) fn plane(state: &ControlState) -> Result<&CallPlane, ApiError> {
    state.calls.as_deref().ok_or_else(|| {
        ApiError::unavailable(
            "calls_unavailable",
            "this gateway does not place or route calls",
        )
    })
}

/// The `Idempotency-Key` header, if any (1–255 visible characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "`Idempotency-Key` must be 1–{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// A JSON call with `status`.
fn call_response(status: StatusCode, call: &Call) -> Response {
    (status, Json(CallView::from(call))).into_response()
}

#[utoipa::path(
    post, path = "/v1/calls", tag = "calls",
    request_body = CreateCallRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body: the same call (200); same key, other body: 422 `idempotency_mismatch`")),
    responses(
        (status = 202, description = "Stored `queued` and handed to the carrier", body = CallView),
        (status = 200, description = "A replay of an earlier request with the same Idempotency-Key", body = CallView),
        (status = 400, description = "`tenant_required` (SUPERADMIN), `invalid_idempotency_key`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The tenant's plan has no outbound calls", body = ErrorBody),
        (status = 404, description = "`tenant_id` names another tenant", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_number`, `unknown_number`, `unknown_agent`, `unknown_script`, `missing_variables`, `script_unusable`, `idempotency_mismatch`", body = ErrorBody),
        (status = 502, description = "`carrier_refused` (the call is `failed`) or `carrier_unreachable` (the outcome is unknown: the call stays `queued` with its error and is not dialled again)", body = ErrorBody),
        (status = 503, description = "`public_url_missing`, `carrier_not_configured`, `scripts_unavailable`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `POST /v1/calls`: stores the call `queued`, registers it, dials it, and answers 202 with
/// it. A replay with the same `Idempotency-Key` and body answers 200 with the stored call.
pub async fn create_call(
    principal: Principal,
    axum::extract::State(state): axum::extract::State<ControlState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateCallRequest>,
) -> ApiResult<Response> {
    principal.require(Role::Agent)?;
    let tenant = principal.acting_tenant(request.tenant_id.map(TenantId))?;
    let plane = plane(&state)?;
    request.validate()?;
    let key = idempotency_key(&headers)?;
    if !plan_dials(tenant_plan(&state.store, tenant).await?) {
        return Err(ApiError::forbidden(
            "the tenant's plan does not include outbound calls",
        ));
    }
    let public_url = state.public_url.clone().ok_or_else(|| {
        ApiError::unavailable(
            "public_url_missing",
            "set VOICEGW_PUBLIC_URL: carriers must reach this gateway to connect a call",
        )
    })?;
    let request_hash = request.hash(tenant);
    if let Some(key) = &key
        && let Some(response) = replay(&state, tenant, key, &request_hash).await?
    {
        return Ok(response);
    }
    let number = match (&request.from, request.number_id) {
        (Some(from), _) => {
            state
                .store
                .find_phone_number(Scope::Tenant(tenant), from)
                .await?
        }
        (None, Some(id)) => {
            state
                .store
                .phone_number_by_id(Scope::Tenant(tenant), id)
                .await?
        }
        (None, None) => None,
    }
    .ok_or_else(|| {
        ApiError::unprocessable(
            "unknown_number",
            "`from` is not one of the tenant's numbers",
        )
    })?;
    let carrier = CarrierName::parse(&number.carrier).ok_or_else(|| {
        ApiError::internal(format!("number with unknown carrier {:?}", number.carrier))
    })?;
    let agent = match (&request.script, &request.agent) {
        (Some(script), _) => {
            plane
                .tenant_script(&state.store, tenant, script, &request.variables)
                .await?
        }
        (None, Some(agent)) => plane.catalog_agent(agent)?,
        (None, None) => return Err(ApiError::internal("neither script nor agent")),
    };
    let voicemail = request
        .voicemail_message
        .as_deref()
        .map(|template| render_voicemail(template, &request.variables))
        .transpose()?;
    let new = NewCall {
        direction: Direction::Outbound,
        from: number.e164.clone(),
        to: request.to.clone(),
        carrier: carrier.as_str().to_owned(),
        carrier_sid: None,
    };
    let setup = CallSetup {
        agent: agent.agent.clone(),
        script_id: agent.script_id.clone(),
        variables: request.variables.clone(),
        idempotency_key: key.clone(),
        request_hash: Some(request_hash.clone()),
    };
    let call = match state.store.create_call_with(tenant, &new, &setup).await? {
        Created::New(call) => call,
        Created::Existing {
            call,
            request_hash: stored,
        } => {
            return existing(&call, stored.as_deref(), &request_hash);
        }
    };
    match request.machine_detection {
        Some(_) => plane.expect_outbound(
            &state.registry,
            call.id,
            tenant,
            &agent,
            &request.variables,
            OutboundPlan::detect(voicemail),
        ),
        None => plane.expect(&state.registry, call.id, tenant, &agent, &request.variables),
    }
    let call_id = call.id.to_string();
    let (answer_url, stream_url, status_callback, amd_callback) = call_urls(&public_url, &call_id);
    let place = PlaceCall {
        to: call.to.clone(),
        from: call.from.clone(),
        answer_url,
        stream_url,
        status_callback: match carrier {
            CarrierName::Twilio => status_callback,
            CarrierName::Exotel => format!("{}/exotel/status", public_url.trim_end_matches('/')),
        },
        // Asynchronous detection: the stream starts at once (the gateway listens for a machine
        // itself) and the carrier's verdict is forwarded to the live call when it comes.
        amd_callback: match (carrier, request.machine_detection) {
            (CarrierName::Twilio, Some(_)) => Some(amd_callback),
            _ => None,
        },
        machine_detection: request.machine_detection,
        timeout_secs: request.timeout_secs,
        time_limit_secs: request.time_limit_secs,
        record: request.record,
        call_id,
    };
    let scope = Scope::Tenant(tenant);
    match plane.carriers.place(carrier, &place).await {
        Ok(sid) => {
            let report = CarrierReport {
                carrier_sid: Some(sid),
                ..CarrierReport::default()
            };
            state
                .store
                .record_carrier_report(scope, call.id, &report)
                .await?;
            let call = get_scoped(&state, scope, call.id).await?;
            Ok(call_response(StatusCode::ACCEPTED, &call))
        }
        Err(error) => Err(dial_failed(&state, scope, call.id, error).await),
    }
}

/// Answers a call created earlier with the same key: the same request gets the call (200),
/// a different one 422 `idempotency_mismatch`.
async fn replay(
    state: &ControlState,
    tenant: TenantId,
    key: &str,
    request_hash: &str,
) -> Result<Option<Response>, ApiError> {
    match state.store.call_by_idempotency_key(tenant, key).await? {
        Some((call, stored)) => existing(&call, stored.as_deref(), request_hash).map(Some),
        None => Ok(None),
    }
}

fn existing(call: &Call, stored: Option<&str>, request_hash: &str) -> ApiResult<Response> {
    if stored == Some(request_hash) {
        Ok(call_response(StatusCode::OK, call))
    } else {
        Err(ApiError::unprocessable(
            "idempotency_mismatch",
            "this Idempotency-Key was used for a different request",
        ))
    }
}

/// Records a failed dial and says what to answer: refused → the call `failed` (502
/// `carrier_refused`); unknown outcome → the call stays `queued` with the error (502
/// `carrier_unreachable`, never dialled again).
async fn dial_failed(state: &ControlState, scope: Scope, id: CallId, error: DialError) -> ApiError {
    let message = error.to_string();
    let (code, final_status) = match &error {
        DialError::Refused(_) | DialError::Unreachable(_) | DialError::Unsupported(_) => {
            ("carrier_refused", true)
        }
        DialError::NotConfigured(_) => ("carrier_not_configured", true),
        DialError::OutcomeUnknown(_) | DialError::NotLive => ("carrier_unreachable", false),
    };
    tracing::warn!(call_id = %id, %code, error = %message, "dial failed");
    let report = CarrierReport {
        error: Some(message.clone()),
        ..CarrierReport::default()
    };
    let recorded = async {
        state
            .store
            .record_carrier_report(scope, id, &report)
            .await?;
        if final_status {
            state
                .store
                .advance_call_status(scope, id, CallStatus::Failed)
                .await?;
        }
        let data = serde_json::json!({"code": code, "message": message});
        state.record_event(scope, id, "dial_failed", &data).await
    };
    if let Err(e) = recorded.await {
        tracing::error!(call_id = %id, error = %e, "recording a failed dial");
    }
    if code == "carrier_not_configured" {
        ApiError::unavailable(code, message)
    } else {
        ApiError::bad_gateway(code, message)
    }
}

/// Call `id` as `scope` sees it; 404 when it is not there.
pub(crate) async fn get_scoped(state: &ControlState, scope: Scope, id: CallId) -> ApiResult<Call> {
    state
        .store
        .get_call(scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))
}

#[utoipa::path(
    get, path = "/v1/calls/{id}", tag = "calls",
    params(("id" = uuid::Uuid, Path, description = "Call id")),
    responses(
        (status = 200, description = "The call", body = CallView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such call in the key's scope", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `GET /v1/calls/{id}`.
pub async fn get_call(
    principal: Principal,
    axum::extract::State(state): axum::extract::State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<CallView>> {
    principal.require(Role::Agent)?;
    let call = get_scoped(&state, principal.scope(), CallId(id)).await?;
    Ok(Json(CallView::from(&call)))
}

/// `GET /v1/calls` query.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only calls in this status.
    pub status: Option<String>,
    /// `inbound` | `outbound`.
    pub direction: Option<String>,
    /// Only calls to this number.
    pub to: Option<String>,
    /// Only calls from this number.
    pub from: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    pub created_before: Option<String>,
    /// 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_micros())
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_query",
                format!("`{name}` must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"),
            )
        })
}

impl ListQuery {
    fn filter(&self) -> Result<(CallFilter, u32), ApiError> {
        let bad = |message: String| ApiError::bad_request("invalid_query", message);
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(bad(format!("`limit` must be 1–200, not {limit}")));
        }
        let status = self
            .status
            .as_deref()
            .map(|s| CallStatus::parse(s).ok_or_else(|| bad(format!("unknown `status` {s:?}"))))
            .transpose()?;
        let direction = match self.direction.as_deref() {
            None => None,
            Some("inbound") => Some(Direction::Inbound),
            Some("outbound") => Some(Direction::Outbound),
            Some(other) => {
                return Err(bad(format!(
                    "`direction` is inbound or outbound, not {other:?}"
                )));
            }
        };
        for (name, number) in [("to", &self.to), ("from", &self.from)] {
            if let Some(number) = number
                && !is_e164(number)
            {
                return Err(bad(format!(
                    "`{name}` must be an E.164 number, not {number:?}"
                )));
            }
        }
        let before = self
            .cursor
            .as_deref()
            .map(|c| {
                CallCursor::parse(c).ok_or_else(|| bad("`cursor` is not one this API gave".into()))
            })
            .transpose()?;
        Ok((
            CallFilter {
                status,
                direction,
                to: self.to.clone(),
                from: self.from.clone(),
                created_after_us: self
                    .created_after
                    .as_deref()
                    .map(|t| parse_time("created_after", t))
                    .transpose()?,
                created_before_us: self
                    .created_before
                    .as_deref()
                    .map(|t| parse_time("created_before", t))
                    .transpose()?,
                before,
            },
            limit,
        ))
    }
}

#[utoipa::path(
    get, path = "/v1/calls", tag = "calls",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of calls, newest first", body = CallListView),
        (status = 400, description = "`invalid_query`: a bad filter, limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `GET /v1/calls`: the caller's calls, newest first.
pub async fn list_calls(
    principal: Principal,
    axum::extract::State(state): axum::extract::State<ControlState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<CallListView>> {
    principal.require(Role::Agent)?;
    let (filter, limit) = query.filter()?;
    let calls = state
        .store
        .search_calls(principal.scope(), &filter, limit)
        .await?;
    let next_cursor = (calls.len() == limit as usize)
        .then(|| calls.last().map(|c| CallCursor::after(c).to_string()))
        .flatten();
    Ok(Json(CallListView {
        calls: calls.iter().map(CallView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    delete, path = "/v1/calls/{id}", tag = "calls",
    params(("id" = uuid::Uuid, Path, description = "Call id")),
    responses(
        (status = 200, description = "Cancelled or hung up; the call as it is now", body = CallView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such call in the key's scope", body = ErrorBody),
        (status = 409, description = "`call_ended`; `not_cancellable` (the carrier cannot cancel it)", body = ErrorBody),
        (status = 502, description = "`carrier_error`: the carrier failed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `DELETE /v1/calls/{id}`: a queued or ringing call is cancelled at its carrier; a call in
/// progress is hung up (its live session here, if any, and at the carrier); an ended call is
/// 409 `call_ended`. Answers the call as it is now.
pub async fn delete_call(
    principal: Principal,
    axum::extract::State(state): axum::extract::State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<CallView>> {
    principal.require(Role::Agent)?;
    let plane = plane(&state)?;
    let scope = principal.scope();
    let id = CallId(id);
    let call = get_scoped(&state, scope, id).await?;
    if call.status.is_final() {
        return Err(ApiError::conflict(
            "call_ended",
            format!("the call has already ended ({})", call.status.as_str()),
        ));
    }
    let carrier = CarrierName::parse(&call.carrier).ok_or_else(|| {
        ApiError::internal(format!("call with unknown carrier {:?}", call.carrier))
    })?;
    let live_here = state
        .registry
        .send(
            id,
            Control::Hangup {
                reason: "ended through the API".to_owned(),
            },
        )
        .is_ok();
    state.registry.take_expected(&id.to_string());
    let at_carrier = match (&call.carrier_sid, call.status) {
        (None, _) => Ok(()),
        (Some(sid), CallStatus::Queued | CallStatus::Ringing) => {
            match plane.carriers.cancel(carrier, sid).await {
                // Answered meanwhile: hang it up instead.
                Err(DialError::NotLive) => plane.carriers.hang_up(carrier, sid).await,
                other => other,
            }
        }
        (Some(sid), _) => plane.carriers.hang_up(carrier, sid).await,
    };
    match at_carrier {
        Ok(()) | Err(DialError::NotLive) => {}
        Err(DialError::Unsupported(_)) if live_here => {}
        Err(e @ DialError::Unsupported(_)) => {
            return Err(ApiError::conflict("not_cancellable", e.to_string()));
        }
        Err(e) => return Err(ApiError::bad_gateway("carrier_error", e.to_string())),
    }
    if matches!(call.status, CallStatus::Queued | CallStatus::Ringing) {
        state
            .store
            .advance_call_status(scope, id, CallStatus::Canceled)
            .await?;
    }
    let data =
        serde_json::json!({"by": "api", "live_here": live_here, "was": call.status.as_str()});
    state
        .record_event(scope, id, "hangup_requested", &data)
        .await?;
    let call = get_scoped(&state, scope, id).await?;
    Ok(Json(CallView::from(&call)))
}
