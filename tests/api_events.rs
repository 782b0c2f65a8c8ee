//! A call's CallEvents over HTTP on SQLite and PostgreSQL: session and control-plane events
//! in time order with an opaque cursor, the protobuf form, and the SSE stream (stored events
//! after `Last-Event-ID`, then live ones, ending once the call is over).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::calls::{CALLEE, PUBLIC_URL, RecordingCarriers, TestTenant, tenant};
use common::control::{TestControl, assert_error};
use common::db::TestDb;
use common::test_config;
use futures::StreamExt;
use prost::Message;
use serde_json::{Value, json};
use voicegw::call::CallId;
use voicegw::store::Scope;
use voicegw::store::calls::{CallStatus, EventRow};
use voicegw::store::control_events::CONTROL_SEQ_BASE;
use voicegw::store::tenants::Plan;

async fn start(db: TestDb) -> (TestControl, TestTenant, CallId) {
    let mut config = test_config();
    config.auth.public_url = Some(PUBLIC_URL.to_owned());
    let api =
        TestControl::start_with_carriers(db, config, Arc::new(RecordingCarriers::default())).await;
    let a = tenant(&api, "acme", Plan::Full, "+14155550199", "twilio").await;
    let created = api
        .post(
            "/v1/calls",
            &a.key,
            &json!({"to": CALLEE, "from": a.number, "agent": "echo"}),
        )
        .await;
    assert_eq!(created.0.as_u16(), 202, "{:?}", created.1);
    let id = CallId(created.1["id"].as_str().unwrap().parse().unwrap());
    (api, a, id)
}

fn session_event(id: CallId, seq: i64, at_us: i64, kind: &str, data: Value) -> EventRow {
    EventRow {
        call_id: id.to_string(),
        seq,
        at_us,
        kind: kind.to_owned(),
        data: data.to_string(),
    }
}

async fn events_come_in_time_order(db: TestDb) {
    let (api, a, id) = start(db).await;
    let store = &api.db.store;
    let now = voicegw::store::now_us();
    // The session's events around a control-plane one recorded in between.
    store
        .insert_events(&[
            session_event(id, 1, now - 3_000_000, "stream_started", json!({})),
            session_event(id, 2, now - 2_000_000, "dtmf", json!({"digit": "5"})),
        ])
        .await
        .unwrap();
    let control = store
        .record_control_event(
            Scope::Super,
            id,
            "carrier_status",
            &json!({"status": "in-progress"}),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(control.seq, CONTROL_SEQ_BASE + 1);
    // The same event again (a replayed callback) is not recorded twice.
    assert!(
        store
            .record_control_event(
                Scope::Super,
                id,
                "carrier_status",
                &json!({"status": "in-progress"})
            )
            .await
            .unwrap()
            .is_none()
    );
    store
        .insert_events(&[session_event(
            id,
            3,
            control.at_us + 1,
            "call_ended",
            json!({"reason": "hangup"}),
        )])
        .await
        .unwrap();

    let all = api.get(&format!("/v1/calls/{id}/events"), &a.key).await;
    assert_eq!(all.0.as_u16(), 200, "{:?}", all.1);
    let kinds: Vec<&str> = all.1["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["stream_started", "dtmf", "carrier_status", "call_ended"]
    );
    assert_eq!(all.1["events"][1]["data"], json!({"digit": "5"}));
    assert!(all.1.get("next_cursor").is_none());

    let first = api
        .get(&format!("/v1/calls/{id}/events?limit=2"), &a.key)
        .await;
    assert_eq!(first.1["events"].as_array().unwrap().len(), 2);
    let cursor = first.1["next_cursor"].as_str().unwrap();
    let rest = api
        .get(
            &format!("/v1/calls/{id}/events?after={cursor}&limit=2"),
            &a.key,
        )
        .await;
    let seqs: Vec<i64> = rest.1["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [CONTROL_SEQ_BASE + 1, 3]);

    let proto = api
        .http
        .get(api.url(&format!("/v1/calls/{id}/events")))
        .bearer_auth(&a.key)
        .header("Accept", "application/x-protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(proto.headers()["content-type"], "application/x-protobuf");
    let list = voicegw::proto::v1::CallEventList::decode(proto.bytes().await.unwrap()).unwrap();
    assert_eq!(list.events.len(), 4);
    assert_eq!(list.events[1].r#type, "dtmf");
    let digit = &list.events[1].data.as_ref().unwrap().fields["digit"];
    assert_eq!(
        digit.kind,
        Some(prost_types::value::Kind::StringValue("5".into()))
    );
    assert_eq!(list.events[2].seq, CONTROL_SEQ_BASE as u64 + 1);

    for query in ["after=nonsense", "limit=0", "limit=1001", "since=1"] {
        let got = api
            .get(&format!("/v1/calls/{id}/events?{query}"), &a.key)
            .await;
        assert_eq!(got.0.as_u16(), 400, "{query}: {:?}", got.1);
    }
    let other = tenant(&api, "beta", Plan::Full, "+14155550198", "twilio").await;
    assert_error(
        &api.get(&format!("/v1/calls/{id}/events"), &other.key).await,
        404,
        "not_found",
    );
}
on_both!(ordered, events_come_in_time_order);

/// One parsed SSE event.
#[derive(Debug, Default, Clone)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// Reads SSE events from `response` until the stream ends (or `limit`).
async fn read_sse(response: reqwest::Response, limit: Duration) -> (Vec<Sse>, bool) {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let ended = tokio::time::timeout(limit, async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let mut event = Sse::default();
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = v.to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(v).unwrap();
                    }
                }
                if any {
                    events.push(event);
                }
            }
        }
    })
    .await
    .is_ok();
    (events, ended)
}

async fn the_stream_follows_the_call_live(db: TestDb) {
    let (api, a, id) = start(db).await;
    let store = api.db.store.clone();
    let now = voicegw::store::now_us();
    store
        .insert_events(&[session_event(id, 1, now, "stream_started", json!({}))])
        .await
        .unwrap();
    let response = api
        .http
        .get(api.url(&format!("/v1/calls/{id}/events/stream")))
        .bearer_auth(&a.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let reader = tokio::spawn(read_sse(response, Duration::from_secs(20)));
    // Live: events recorded after the client connected, then the call ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .insert_events(&[session_event(
            id,
            2,
            voicegw::store::now_us(),
            "dtmf",
            json!({"digit": "1"}),
        )])
        .await
        .unwrap();
    store
        .record_control_event(
            Scope::Super,
            id,
            "carrier_status",
            &json!({"status": "completed"}),
        )
        .await
        .unwrap();
    store
        .insert_events(&[session_event(
            id,
            3,
            voicegw::store::now_us(),
            "call_ended",
            json!({}),
        )])
        .await
        .unwrap();
    store
        .set_call_status(Scope::Super, id, CallStatus::InProgress)
        .await
        .unwrap();
    store
        .set_call_status(Scope::Super, id, CallStatus::Completed)
        .await
        .unwrap();
    let (events, ended) = reader.await.unwrap();
    assert!(ended, "the stream ends after the call is over");
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["stream_started", "dtmf", "carrier_status", "call_ended"]
    );
    assert_eq!(events[1].data["data"]["digit"], "1");
    assert_eq!(events[1].data["call_id"], id.to_string());

    // Resuming after the second event sends the rest only.
    let resumed = api
        .http
        .get(api.url(&format!("/v1/calls/{id}/events/stream")))
        .bearer_auth(&a.key)
        .header("Last-Event-ID", &events[1].id)
        .send()
        .await
        .unwrap();
    let (rest, ended) = read_sse(resumed, Duration::from_secs(20)).await;
    assert!(ended);
    let kinds: Vec<&str> = rest.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["carrier_status", "call_ended"]);
    let bad = api
        .http
        .get(api.url(&format!("/v1/calls/{id}/events/stream")))
        .bearer_auth(&a.key)
        .header("Last-Event-ID", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}
on_both!(stream, the_stream_follows_the_call_live);
