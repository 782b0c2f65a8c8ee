//! A call's CallEvents: `GET /v1/calls/{id}/events` (a page, JSON `CallEventList` or with
//! `Accept: application/x-protobuf` the protobuf `voicegw.v1.CallEventList`) and
//! `GET /v1/calls/{id}/events/stream` (Server-Sent Events, live).
//!
//! Events come in time order, by (`at_us`, `seq`): the session's (numbered 1, 2, 3 …) and the
//! control plane's (numbered from 2^40) interleaved as they happened. Cursors are opaque
//! (`"{at_us}.{seq}"` of the last event read); pass `next_cursor` as `after`.
//!
//! The stream sends the stored events after `Last-Event-ID` (or `after`), then new ones as
//! they are recorded (the session's in their order; the control plane's as they happen, so
//! live events are not strictly in time order: their ids, the cursors, sort them), each with `id:` its cursor, `event:` its type and `data:` the JSON
//! CallEvent, with keep-alive comments in between. It subscribes to the live hub before the
//! first read and sends what the hub publishes as it comes; it also re-reads the store from a
//! little before the last event sent (events of one call reach the store slightly out of time
//! order, and events recorded by other gateways reach this one only through the store),
//! skipping events already sent. A subscriber that lags re-reads the store instead of losing
//! events. It ends once the call is final and its last events were sent.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::ControlState;
use super::auth::Principal;
use super::calls::get_scoped;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
#[allow(unused_imports)]
use super::model::ErrorBody;
use crate::call::CallId;
use crate::store::Scope;
use crate::store::calls::EventRow;
use crate::store::control_events::EventCursor;
use crate::store::tenants::Role;

/// The protobuf media type.
pub const PROTOBUF: &str = "application/x-protobuf";
/// Default and largest page.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// How often the stream looks for new events in the store with no live feed.
pub const STREAM_POLL: Duration = Duration::from_millis(100);
/// How often it looks with a live feed (for events recorded by other gateways).
pub const LIVE_POLL: Duration = Duration::from_millis(500);
/// How far back (µs) each re-read starts before the last event sent.
const REREAD_WINDOW_US: i64 = 2_000_000;
/// How long the stream stays open after the call is seen final, for its last events (the
/// session's `call_ended`, the carrier's final callback).
pub const FINAL_LINGER: Duration = Duration::from_secs(2);
/// Keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One CallEvent as the API shows it (`voicegw.v1.CallEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CallEvent)]
pub struct CallEventView {
    /// The call.
    pub call_id: String,
    /// Its number: the session's 1, 2, 3 …, the control plane's from 2^40.
    pub seq: u64,
    /// µs since the Unix epoch.
    pub at_us: i64,
    /// `stream_started`, `dtmf`, `call_ended`, `carrier_status`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl CallEventView {
    /// The view of a stored row.
    pub fn of(row: &EventRow) -> Self {
        CallEventView {
            call_id: row.call_id.clone(),
            seq: u64::try_from(row.seq).unwrap_or(0),
            at_us: row.at_us,
            kind: row.kind.clone(),
            data: serde_json::from_str(&row.data)
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        }
    }

    fn proto(&self) -> crate::proto::v1::CallEvent {
        let data = match json_to_proto(&self.data).kind {
            Some(prost_types::value::Kind::StructValue(s)) => Some(s),
            _ => Some(prost_types::Struct::default()),
        };
        crate::proto::v1::CallEvent {
            call_id: self.call_id.clone(),
            seq: self.seq,
            at_us: self.at_us,
            r#type: self.kind.clone(),
            data,
        }
    }
}

/// A page of events (`voicegw.v1.CallEventList`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CallEventList)]
pub struct CallEventListView {
    /// The events, in time order.
    pub events: Vec<CallEventView>,
    /// Pass as `after` for the next page; absent when this page is the last for now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A JSON value as a protobuf `Value`.
pub fn json_to_proto(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_proto).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_proto(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// `GET /v1/calls/{id}/events` query.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// A cursor from `next_cursor` (or an SSE `id:`).
    pub after: Option<String>,
    /// 1–1000 (default 100).
    pub limit: Option<u32>,
}

fn parse_after(after: Option<&str>) -> Result<Option<EventCursor>, ApiError> {
    after
        .map(|a| {
            EventCursor::parse(a).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "`after` is not a cursor this API gave")
            })
        })
        .transpose()
}

#[utoipa::path(
    get, path = "/v1/calls/{id}/events", tag = "calls",
    description = "A call's CallEvents in time order (`at_us`, then `seq`): the session's are numbered 1, 2, 3 …, the control plane's (carrier callbacks, verdicts, dial failures, cancels) from 2^40. `next_cursor` is opaque: pass it as `after`. With `Accept: application/x-protobuf` the body is a protobuf `voicegw.v1.CallEventList`.",
    params(("id" = uuid::Uuid, Path, description = "Call id"), EventsQuery),
    responses(
        (status = 200, description = "A page of events", body = CallEventListView),
        (status = 400, description = "`invalid_cursor`, `invalid_query`, malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such call in the key's scope", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `GET /v1/calls/{id}/events`.
pub async fn list_events(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    principal.require(Role::Agent)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be 1–{MAX_LIMIT}, not {limit}"),
        ));
    }
    let after = parse_after(query.after.as_deref())?;
    let scope = principal.scope();
    let id = CallId(id);
    get_scoped(&state, scope, id).await?;
    let rows = state
        .store
        .call_events_page(scope, id, after, limit)
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| EventCursor::of(r).to_string()))
        .flatten();
    let events: Vec<CallEventView> = rows.iter().map(CallEventView::of).collect();
    let wants_protobuf = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains(PROTOBUF));
    if wants_protobuf {
        let list = crate::proto::v1::CallEventList {
            events: events.iter().map(CallEventView::proto).collect(),
            next_cursor,
        };
        return Ok(([(header::CONTENT_TYPE, PROTOBUF)], list.encode_to_vec()).into_response());
    }
    Ok(Json(CallEventListView {
        events,
        next_cursor,
    })
    .into_response())
}

#[utoipa::path(
    get, path = "/v1/calls/{id}/events/stream", tag = "calls",
    description = "Server-Sent Events: the stored events after `Last-Event-ID` (or `after`), then live ones; `id:` is the event's cursor, `event:` its type, `data:` the JSON CallEvent. Ends once the call is over and its last events were sent.",
    params(("id" = uuid::Uuid, Path, description = "Call id"), EventsQuery),
    responses(
        (status = 200, description = "`text/event-stream` of CallEvents", content_type = "text/event-stream", body = CallEventView),
        (status = 400, description = "`invalid_cursor`, malformed id", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such call in the key's scope", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
/// `GET /v1/calls/{id}/events/stream`.
pub async fn stream_events(
    principal: Principal,
    State(state): State<ControlState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    principal.require(Role::Agent)?;
    if query.limit.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "the stream takes no `limit`",
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let after = parse_after(last_event_id.as_deref().or(query.after.as_deref()))?;
    let scope = principal.scope();
    let id = CallId(id);
    get_scoped(&state, scope, id).await?;
    let (sender, receiver) = mpsc::channel(64);
    // Subscribed before the first read: nothing recorded from now on is missed.
    let live = state
        .calls
        .as_ref()
        .map(|calls| calls.hub.subscribe(&id.to_string()));
    tokio::spawn(follow(state, scope, id, after, live, sender));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The SSE event of a row.
fn sse_event(row: &EventRow) -> Event {
    let view = CallEventView::of(row);
    let data = serde_json::to_string(&view).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .id(EventCursor::of(row).to_string())
        .event(view.kind)
        .data(data)
}

/// Sends call `id`'s events after `after` to `sender` until the call is over (or the client
/// goes away).
async fn follow(
    state: ControlState,
    scope: Scope,
    id: CallId,
    after: Option<EventCursor>,
    mut live: Option<broadcast::Receiver<Arc<EventRow>>>,
    sender: mpsc::Sender<Event>,
) {
    let mut sent: HashSet<i64> = HashSet::new();
    let mut last: Option<EventCursor> = after;
    let mut read_from = after;
    let mut final_since: Option<tokio::time::Instant> = None;
    loop {
        let rows = match state
            .store
            .call_events_page(scope, id, read_from, 1000)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(call_id = %id, %error, "event stream: reading events failed");
                Vec::new()
            }
        };
        let full = rows.len() == 1000;
        for row in &rows {
            if after.is_some_and(|a| EventCursor::of(row) <= a) || !sent.insert(row.seq) {
                continue;
            }
            if sender.send(sse_event(row)).await.is_err() {
                return;
            }
            last = last.max(Some(EventCursor::of(row)));
        }
        read_from = if full {
            rows.last().map(EventCursor::of)
        } else {
            last.map(|c| EventCursor {
                at_us: c.at_us.saturating_sub(REREAD_WINDOW_US),
                seq: i64::MIN,
            })
            .max(after)
        };
        if full {
            continue;
        }
        match final_since {
            Some(since) if since.elapsed() >= FINAL_LINGER => return,
            Some(_) => {}
            None => match state.store.get_call(scope, id).await {
                Ok(Some(call)) if call.status.is_final() => {
                    final_since = Some(tokio::time::Instant::now());
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(call_id = %id, %error, "event stream: reading the call failed");
                }
            },
        }
        let poll = if live.is_some() {
            LIVE_POLL
        } else {
            STREAM_POLL
        };
        let wait = tokio::time::sleep(poll);
        tokio::pin!(wait);
        loop {
            let received = async {
                match live.as_mut() {
                    Some(receiver) => receiver.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sender.closed() => return,
                () = &mut wait => break,
                received = received => match received {
                    Ok(row) => {
                        let fresh = after.is_none_or(|a| EventCursor::of(&row) > a);
                        if fresh && sent.insert(row.seq) {
                            if sender.send(sse_event(&row)).await.is_err() {
                                return;
                            }
                            last = last.max(Some(EventCursor::of(&row)));
                        }
                    }
                    // Fell behind: the store has what was missed.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        live = None;
                        break;
                    }
                },
            }
        }
    }
}
