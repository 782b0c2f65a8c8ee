//! The carriers' webhooks: inbound calls routed to a tenant's script, the TwiML of calls we
//! placed, status callbacks and answering-machine verdicts.
//!
//! Twilio (`/twilio/*`, form-encoded): every request must carry a valid `X-Twilio-Signature`
//! over `{public_url}{path?query}` and the form (403 JSON otherwise); with no auth token
//! configured they are refused (503 `twilio_not_configured`), never trusted.
//! Exotel (`/exotel/*`): Basic credentials `config.auth.exotel_credentials` (401 otherwise;
//! 503 `exotel_not_configured` when unset).
//!
//! Status callbacks move a call along its lifecycle and never backwards, so callbacks that
//! arrive out of order or twice change nothing; each is recorded as a `carrier_status`
//! CallEvent (a replayed one once). A callback for a call we do not know is answered 200 and
//! logged: the carrier retrying it would not help. The status URL of a call we place names
//! it (`?call_id=`), so a callback whose SID was never stored (a crash between the carrier's
//! answer and the store write) binds that SID to the call it names.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::ControlState;
use super::call_plane::{CallPlane, plan_answers, tenant_plan};
use super::calls::plane;
use super::dial::ws_base;
use super::error::ApiError;
use crate::call::CallId;
use crate::call::mask_number;
use crate::call::registry::Control;
use crate::carrier::signature;
use crate::carrier::twiml;
use crate::carrier::webhook::{
    self, ExotelPassthru, ExotelStatusCallback, TwilioAmdCallback, TwilioInboundCall,
    TwilioStatusCallback, WebhookError,
};
use crate::store::Scope;
use crate::store::call_records::{CallSetup, CarrierReport, Created};
use crate::store::calls::{Call, CallStatus, Direction, NewCall};

/// What a caller hears when the number they called is not routed.
pub const NOT_IN_SERVICE: &str =
    "Sorry, this number is not in service. Please check the number and try again. Goodbye.";
/// What a caller hears when the gateway cannot take the call.
pub const CANNOT_TAKE: &str =
    "Sorry, we cannot take your call right now. Please try again later. Goodbye.";

/// The carriers' webhook routes.
pub fn router() -> Router<ControlState> {
    Router::new()
        .route("/twilio/voice", post(twilio_voice))
        .route("/twilio/outbound", post(twilio_outbound))
        .route("/twilio/status", post(twilio_status))
        .route("/twilio/amd", post(twilio_amd))
        .route(
            "/exotel/stream-url",
            get(exotel_stream_url).post(exotel_stream_url),
        )
        .route("/exotel/status", post(exotel_status))
}

fn bad_webhook(error: WebhookError) -> ApiError {
    ApiError::bad_request("invalid_webhook", error.to_string())
}

fn twiml_response(document: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        document,
    )
        .into_response()
}

/// The public base URL (or `https://{Host}`), without a trailing `/`.
fn base_url(state: &ControlState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(url) = &state.public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing_host", "no Host header"))?;
    Ok(format!("https://{host}"))
}

/// A Twilio webhook with a good signature: the call plane and the form read by `parse`.
fn twilio_webhook<'s, T>(
    state: &'s ControlState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: &[u8],
    parse: impl Fn(&[(String, String)]) -> Result<T, WebhookError>,
) -> Result<(&'s CallPlane, T), ApiError> {
    let pairs = twilio_form(state, headers, uri, body)?;
    let plane = plane(state)?;
    Ok((plane, parse(&pairs).map_err(bad_webhook)?))
}

/// Checks a Twilio webhook's signature and decodes its form.
fn twilio_form(
    state: &ControlState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: &[u8],
) -> Result<Vec<(String, String)>, ApiError> {
    let token = state.twilio_auth_token.as_deref().ok_or_else(|| {
        ApiError::unavailable(
            "twilio_not_configured",
            "no Twilio auth token is configured: webhooks cannot be verified",
        )
    })?;
    let pairs = webhook::decode_form(body).map_err(bad_webhook)?;
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::forbidden("missing X-Twilio-Signature"))?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path}", base_url(state, headers)?);
    if !signature::verify_twilio(token, &url, &webhook::as_refs(&pairs), signature) {
        tracing::warn!(path = uri.path(), "Twilio webhook with a wrong signature");
        return Err(ApiError::forbidden("X-Twilio-Signature does not match"));
    }
    Ok(pairs)
}

/// Checks Exotel's Basic credentials: the call plane, or the refusal.
fn exotel_auth<'s>(
    state: &'s ControlState,
    headers: &HeaderMap,
) -> Result<&'s CallPlane, Box<Response>> {
    let plane = plane(state).map_err(|e| Box::new(e.into_response()))?;
    let Some(credentials) = plane.exotel_credentials.as_deref() else {
        return Err(ApiError::unavailable(
            "exotel_not_configured",
            "no Exotel credentials are configured: webhooks cannot be verified",
        )
        .into_response()
        .into());
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if signature::verify_basic(credentials, authorization) {
        return Ok(plane);
    }
    let mut response = ApiError::unauthorized("wrong or missing Basic credentials").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"voicegw\""),
    );
    Err(Box::new(response))
}

/// Counts a webhook's outcome.
fn count(plane: &CallPlane, carrier: &str, kind: &str, outcome: &str) {
    if let Some(metrics) = &plane.metrics {
        metrics
            .webhooks
            .with_label_values(&[carrier, kind, outcome])
            .inc();
    }
}

/// Why an inbound call is not routed (spoken to the caller).
struct Unrouted {
    reason: &'static str,
    spoken: &'static str,
}

/// Routes an inbound call to `to` from `from` with the carrier's id `sid`: the number's
/// tenant (plan INBOUND or FULL) and script, a call stored `ringing` and expected here. A
/// replayed webhook (same carrier and SID) gets the same call.
async fn route_inbound(
    state: &ControlState,
    carrier: &str,
    sid: &str,
    from: &str,
    to: &str,
) -> Result<Result<Call, Unrouted>, ApiError> {
    let plane = plane(state)?;
    if let Some(call) = state.store.find_call_by_sid(carrier, sid).await? {
        return Ok(Ok(call));
    }
    let not_in_service = |reason| Unrouted {
        reason,
        spoken: NOT_IN_SERVICE,
    };
    let number = match state.store.find_phone_number(Scope::Super, to).await {
        Ok(Some(number)) => number,
        Ok(None) | Err(crate::store::StoreError::Invalid(_)) => {
            return Ok(Err(not_in_service("unknown_number")));
        }
        Err(e) => return Err(e.into()),
    };
    if number.carrier != carrier {
        return Ok(Err(not_in_service("wrong_carrier")));
    }
    let tenant = number.tenant_id;
    if !plan_answers(tenant_plan(&state.store, tenant).await?) {
        return Ok(Err(not_in_service("plan")));
    }
    let Some(script) = number.script.as_deref() else {
        return Ok(Err(not_in_service("no_script")));
    };
    let variables = Default::default();
    let agent = match plane
        .tenant_script(&state.store, tenant, script, &variables)
        .await
    {
        Ok(agent) => agent,
        Err(error) => {
            tracing::warn!(%tenant, script, code = error.code, message = %error.message,
                "inbound call: the number's script cannot run");
            return Ok(Err(Unrouted {
                reason: "script_unusable",
                spoken: CANNOT_TAKE,
            }));
        }
    };
    let new = NewCall {
        direction: Direction::Inbound,
        from: from.to_owned(),
        to: number.e164.clone(),
        carrier: carrier.to_owned(),
        carrier_sid: Some(sid.to_owned()),
    };
    let setup = CallSetup {
        agent: agent.agent.clone(),
        script_id: agent.script_id.clone(),
        variables: variables.clone(),
        ..CallSetup::default()
    };
    let call = match state.store.create_call_with(tenant, &new, &setup).await? {
        Created::New(call) => {
            plane.expect(&state.registry, call.id, tenant, &agent, &variables);
            state
                .store
                .advance_call_status(Scope::Tenant(tenant), call.id, CallStatus::Ringing)
                .await?
        }
        Created::Existing { call, .. } => call,
    };
    Ok(Ok(call))
}

/// `POST /twilio/voice`: an inbound call. TwiML connecting it to its tenant's script, or
/// saying why it cannot be taken.
async fn twilio_voice(
    State(state): State<ControlState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (plane, inbound) =
        twilio_webhook(&state, &headers, &uri, &body, TwilioInboundCall::from_pairs)?;
    let routed = route_inbound(
        &state,
        "twilio",
        &inbound.call_sid,
        &inbound.from,
        &inbound.to,
    )
    .await?;
    match routed {
        Ok(call) => {
            count(plane, "twilio", "voice", "routed");
            tracing::info!(call_id = %call.id, to = %mask_number(&inbound.to), "inbound call routed");
            Ok(twiml_response(connect_twiml(&state, &headers, call.id)?))
        }
        Err(unrouted) => {
            count(plane, "twilio", "voice", unrouted.reason);
            tracing::warn!(
                reason = unrouted.reason,
                to = %mask_number(&inbound.to),
                from = %mask_number(&inbound.from),
                "inbound call not routed: told the caller"
            );
            Ok(twiml_response(twiml::say_and_hangup(unrouted.spoken)))
        }
    }
}

/// `<Connect><Stream>` to this gateway's Twilio stream, naming `call_id`.
fn connect_twiml(
    state: &ControlState,
    headers: &HeaderMap,
    id: CallId,
) -> Result<String, ApiError> {
    let stream = format!("{}/stream/twilio", ws_base(&base_url(state, headers)?));
    let call_id = id.to_string();
    Ok(twiml::connect_stream(
        &stream,
        &[("call_id", &call_id)],
        None,
    ))
}

/// The `call_id` query parameter.
#[derive(Debug, serde::Deserialize)]
struct CallIdQuery {
    call_id: uuid::Uuid,
}

/// `POST /twilio/outbound?call_id=…`: Twilio asks for the TwiML of a call we placed, now
/// answered (with `AnsweredBy` when machine detection ran synchronously).
async fn twilio_outbound(
    State(state): State<ControlState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pairs = twilio_form(&state, &headers, &uri, &body)?;
    let plane = plane(&state)?;
    let query: CallIdQuery = serde_urlencoded_query(&uri)?;
    let answered = TwilioInboundCall::from_pairs(&pairs).map_err(bad_webhook)?;
    let id = CallId(query.call_id);
    let call = state
        .store
        .get_call(Scope::Super, id)
        .await?
        .filter(|c| {
            c.carrier == "twilio"
                && c.direction == Direction::Outbound
                && c.carrier_sid
                    .as_deref()
                    .is_none_or(|sid| sid == answered.call_sid)
        })
        .ok_or_else(|| ApiError::not_found("call"))?;
    let scope = Scope::Tenant(call.tenant_id);
    if call.carrier_sid.is_none() {
        let report = CarrierReport {
            carrier_sid: Some(answered.call_sid.clone()),
            ..CarrierReport::default()
        };
        state
            .store
            .record_carrier_report(scope, id, &report)
            .await?;
    }
    if let Some(verdict) = answered.answered_by {
        record_verdict(&state, scope, id, verdict.as_str(), None).await?;
        forward_verdict(&state, id, verdict.as_str());
    }
    count(plane, "twilio", "outbound", "answered");
    if call.status.is_final() {
        return Ok(twiml_response(twiml::say_and_hangup("Goodbye.")));
    }
    Ok(twiml_response(connect_twiml(&state, &headers, id)?))
}

fn serde_urlencoded_query<T: serde::de::DeserializeOwned>(
    uri: &axum::http::Uri,
) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// Records an answering-machine verdict on the call and as an `answered_by` CallEvent.
async fn record_verdict(
    state: &ControlState,
    scope: Scope,
    id: CallId,
    verdict: &str,
    detection_ms: Option<u64>,
) -> Result<(), ApiError> {
    let report = CarrierReport {
        answered_by: Some(verdict.to_owned()),
        ..CarrierReport::default()
    };
    state
        .store
        .record_carrier_report(scope, id, &report)
        .await?;
    let mut data = json!({"answered_by": verdict});
    if let Some(ms) = detection_ms {
        data["detection_ms"] = json!(ms);
    }
    state.record_event(scope, id, "answered_by", &data).await?;
    Ok(())
}

/// Hands a carrier's answering-machine verdict to the call when it is live on this gateway
/// (its session decides what to do: greet, or wait for the beep and leave the voicemail). A
/// call served elsewhere, or already over, keeps the verdict in the record only.
fn forward_verdict(state: &ControlState, id: CallId, verdict: &str) {
    let control = Control::AnsweredBy {
        verdict: verdict.to_owned(),
    };
    if let Err(error) = state.registry.send(id, control)
        && !state.registry.note_verdict(&id.to_string(), verdict)
    {
        tracing::debug!(call_id = %id, %error, "answering-machine verdict not forwarded");
    }
}

/// Applies a carrier's status report to `call`: the lifecycle (forward only), what it says
/// about the call, and a `carrier_status` CallEvent.
async fn apply_status(
    state: &ControlState,
    call: &Call,
    status: CallStatus,
    report: CarrierReport,
    event: serde_json::Value,
) -> Result<(), ApiError> {
    let scope = Scope::Tenant(call.tenant_id);
    state
        .store
        .advance_call_status(scope, call.id, status)
        .await?;
    if report != CarrierReport::default() {
        state
            .store
            .record_carrier_report(scope, call.id, &report)
            .await?;
    }
    state
        .record_event(scope, call.id, "carrier_status", &event)
        .await?;
    Ok(())
}

/// `POST /twilio/status`: a call progress callback.
async fn twilio_status(
    State(state): State<ControlState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (plane, callback) = twilio_webhook(
        &state,
        &headers,
        &uri,
        &body,
        TwilioStatusCallback::from_pairs,
    )?;
    let query: StatusQuery = serde_urlencoded_query(&uri)?;
    let call = match state
        .store
        .find_call_by_sid("twilio", &callback.call_sid)
        .await?
    {
        Some(call) => Some(call),
        None => match query.call_id {
            Some(id) => bind_placed_call(&state, plane, CallId(id), &callback).await?,
            None => None,
        },
    };
    let Some(call) = call else {
        count(plane, "twilio", "status", "unknown_call");
        tracing::info!(call_sid = %callback.call_sid, status = callback.status.as_str(),
            "status callback for a call this gateway does not know");
        return Ok(StatusCode::OK.into_response());
    };
    let report = CarrierReport {
        duration_secs: callback
            .call_duration_secs
            .and_then(|s| i64::try_from(s).ok()),
        recording_url: callback.recording_url.clone(),
        answered_by: callback.answered_by.map(|a| a.as_str().to_owned()),
        ..CarrierReport::default()
    };
    let mut event = json!({"carrier": "twilio", "status": callback.status.as_str()});
    if let Some(n) = callback.sequence_number {
        event["sequence_number"] = json!(n);
    }
    if let Some(secs) = callback.call_duration_secs {
        event["duration_secs"] = json!(secs);
    }
    if let Some(code) = callback.sip_response_code {
        event["sip_response_code"] = json!(code);
    }
    apply_status(&state, &call, callback.status.call_status(), report, event).await?;
    count(plane, "twilio", "status", "applied");
    Ok(StatusCode::OK.into_response())
}

/// The optional `call_id` query parameter of a status callback.
#[derive(Debug, serde::Deserialize)]
struct StatusQuery {
    call_id: Option<uuid::Uuid>,
}

/// The call `id` named by a status callback whose SID the gateway has not stored (it crashed
/// between the carrier's answer and the store write): when it is one of our outbound Twilio
/// calls to and from the callback's numbers with no other SID yet, the SID is bound to it.
async fn bind_placed_call(
    state: &ControlState,
    plane: &CallPlane,
    id: CallId,
    callback: &TwilioStatusCallback,
) -> Result<Option<Call>, ApiError> {
    let matches = |c: &Call| {
        c.carrier == "twilio"
            && c.direction == Direction::Outbound
            && c.carrier_sid
                .as_deref()
                .is_none_or(|sid| sid == callback.call_sid)
            && callback.to.as_deref().is_none_or(|to| to == c.to)
            && callback.from.as_deref().is_none_or(|from| from == c.from)
    };
    let Some(call) = state
        .store
        .get_call(Scope::Super, id)
        .await?
        .filter(matches)
    else {
        count(plane, "twilio", "status", "call_id_mismatch");
        tracing::warn!(%id, call_sid = %callback.call_sid,
            "status callback names a call that is not this outbound Twilio call");
        return Ok(None);
    };
    if call.carrier_sid.is_none() {
        let report = CarrierReport {
            carrier_sid: Some(callback.call_sid.clone()),
            ..CarrierReport::default()
        };
        state
            .store
            .record_carrier_report(Scope::Tenant(call.tenant_id), call.id, &report)
            .await?;
        count(plane, "twilio", "status", "sid_bound");
        tracing::info!(call_id = %call.id, call_sid = %callback.call_sid,
            "status callback bound a carrier call id the gateway had not stored");
    }
    Ok(Some(call))
}

/// `POST /twilio/amd`: an asynchronous answering-machine verdict.
async fn twilio_amd(
    State(state): State<ControlState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (plane, verdict) =
        twilio_webhook(&state, &headers, &uri, &body, TwilioAmdCallback::from_pairs)?;
    match state
        .store
        .find_call_by_sid("twilio", &verdict.call_sid)
        .await?
    {
        Some(call) => {
            record_verdict(
                &state,
                Scope::Tenant(call.tenant_id),
                call.id,
                verdict.answered_by.as_str(),
                verdict.machine_detection_duration_ms,
            )
            .await?;
            forward_verdict(&state, call.id, verdict.answered_by.as_str());
            count(plane, "twilio", "amd", "applied");
        }
        None => {
            count(plane, "twilio", "amd", "unknown_call");
            tracing::info!(call_sid = %verdict.call_sid, "verdict for a call this gateway does not know");
        }
    }
    Ok(StatusCode::OK.into_response())
}

/// An Exotel webhook with the right credentials: the call plane and the request's fields
/// (the query, then a form or JSON body); or the refusal.
fn exotel_webhook<'s, T>(
    state: &'s ControlState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    from_pairs: impl Fn(&[(String, String)]) -> Result<T, WebhookError>,
    from_json: impl Fn(&[u8]) -> Result<T, WebhookError>,
) -> Result<(&'s CallPlane, T), Box<Response>> {
    let plane = exotel_auth(state, headers)?;
    let fields = exotel_fields(uri, headers, body, from_pairs, from_json)
        .map_err(|e| Box::new(e.into_response()))?;
    Ok((plane, fields))
}

/// The fields of an Exotel request: the query, then a form or JSON body.
fn exotel_fields<T>(
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    from_pairs: impl Fn(&[(String, String)]) -> Result<T, WebhookError>,
    from_json: impl Fn(&[u8]) -> Result<T, WebhookError>,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if is_json {
        return from_json(body).map_err(bad_webhook);
    }
    let mut pairs =
        webhook::decode_form(uri.query().unwrap_or("").as_bytes()).map_err(bad_webhook)?;
    pairs.extend(webhook::decode_form(body).map_err(bad_webhook)?);
    from_pairs(&pairs).map_err(bad_webhook)
}

/// `GET|POST /exotel/stream-url`: the Voicebot applet asks where to stream an inbound call;
/// answers `{"url": "wss://…/stream/exotel?call_id=…"}`.
async fn exotel_stream_url(
    State(state): State<ControlState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (plane, request) = match exotel_webhook(
        &state,
        &uri,
        &headers,
        &body,
        ExotelPassthru::from_pairs,
        ExotelPassthru::from_json,
    ) {
        Ok(webhook) => webhook,
        Err(refused) => return *refused,
    };
    let answer = async {
        let (Some(from), Some(to)) = (request.from.as_deref(), request.to.as_deref()) else {
            return Err(ApiError::bad_request(
                "invalid_webhook",
                "missing field CallFrom or CallTo",
            ));
        };
        match route_inbound(&state, "exotel", &request.call_sid, from, to).await? {
            Ok(call) => {
                count(plane, "exotel", "stream_url", "routed");
                let base = ws_base(&base_url(&state, &headers)?);
                Ok(axum::Json(json!({
                    "url": format!("{base}/stream/exotel?call_id={}", call.id)
                }))
                .into_response())
            }
            Err(unrouted) => {
                count(plane, "exotel", "stream_url", unrouted.reason);
                tracing::warn!(reason = unrouted.reason, to = %mask_number(to),
                    "inbound Exotel call not routed");
                Err(ApiError::not_found("routed number"))
            }
        }
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /exotel/status` (form or JSON): a call's progress.
async fn exotel_status(
    State(state): State<ControlState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (plane, callback) = match exotel_webhook(
        &state,
        &uri,
        &headers,
        &body,
        ExotelStatusCallback::from_pairs,
        ExotelStatusCallback::from_json,
    ) {
        Ok(webhook) => webhook,
        Err(refused) => return *refused,
    };
    let answer = async {
        let mut call = state
            .store
            .find_call_by_sid("exotel", &callback.call_sid)
            .await?;
        // A call placed here names its id in the custom field until its SID is stored.
        if call.is_none()
            && let Some(id) = callback
                .custom_field
                .as_deref()
                .and_then(|f| uuid::Uuid::parse_str(f).ok())
        {
            call = state
                .store
                .get_call(Scope::Super, CallId(id))
                .await?
                .filter(|c| c.carrier == "exotel" && c.carrier_sid.is_none());
        }
        let Some(call) = call else {
            count(plane, "exotel", "status", "unknown_call");
            tracing::info!(call_sid = %callback.call_sid, "Exotel status for a call this gateway does not know");
            return Ok(StatusCode::OK.into_response());
        };
        let report = CarrierReport {
            carrier_sid: Some(callback.call_sid.clone()),
            recording_url: callback.recording_url.clone(),
            duration_secs: callback
                .conversation_duration_secs
                .and_then(|s| i64::try_from(s).ok()),
            ..CarrierReport::default()
        };
        let mut event = json!({"carrier": "exotel", "status": callback.status.as_str()});
        if let Some(kind) = &callback.event_type {
            event["event_type"] = json!(format!("{kind:?}").to_lowercase());
        }
        if let Some(updated) = &callback.date_updated {
            event["date_updated"] = json!(updated);
        }
        apply_status(&state, &call, callback.status, report, event).await?;
        count(plane, "exotel", "status", "applied");
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}
