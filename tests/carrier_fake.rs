//! Self-test of the carrier fake (`tests/fakes/twilio_carrier.rs`) against a tiny gateway
//! written here: it checks every signature strictly, parses the webhooks with
//! `carrier::webhook`, answers `twiml::connect_stream`, and drives the media stream (marks,
//! clear, close). The fake must place calls as Twilio does: callbacks in order with sequence
//! numbers, TwiML fetched and run, a signed WebSocket with the right message sequence.

mod fakes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use fakes::twilio_carrier::{
    ACCOUNT_SID, AUTH_TOKEN, Behaviour, CarrierConfig, EndedBy, FakeCarrier, OUR_NUMBER, Outcome,
};
use serde_json::{Value, json};
use voicegw::carrier::signature::twilio_signature;
use voicegw::carrier::twilio_api::{
    CreateCall, MachineDetection, RetryPolicy, TwilioRest, TwilioRestConfig,
};
use voicegw::carrier::twiml;
use voicegw::carrier::webhook::{
    self, AnsweredBy, TwilioAmdCallback, TwilioCallStatus, TwilioInboundCall, TwilioStatusCallback,
};

const CALLEE: &str = "+14155550123";
const LIMIT: Duration = Duration::from_secs(15);

/// What the test gateway does on the media stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Reads 10 media frames, plays two clips with marks, clears, then closes.
    Converse,
    /// Reads until Twilio stops the stream.
    Hold,
}

#[derive(Default)]
struct Seen {
    /// `(path, signature valid)` of every webhook.
    webhooks: Vec<(String, bool)>,
    statuses: Vec<TwilioStatusCallback>,
    amd: Vec<TwilioAmdCallback>,
    voice: Vec<TwilioInboundCall>,
    /// Whether the stream upgrade's signature was valid over the wss:// URL.
    upgrade_signed: Vec<bool>,
    /// Every stream message received from the carrier.
    stream: Vec<Value>,
}

struct Gw {
    base: String,
    token: String,
    mode: Mode,
    seen: Mutex<Seen>,
}

fn signed(gw: &Gw, uri: &Uri, headers: &HeaderMap, pairs: &[(String, String)]) -> bool {
    let url = format!(
        "{}{}",
        gw.base,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let expected = twilio_signature(&gw.token, &url, &webhook::as_refs(pairs));
    headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
}

/// Checks the signature and decodes the form; 403 / 400 like a careful gateway.
fn webhook_form(
    gw: &Gw,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, (StatusCode, String)> {
    let pairs = webhook::decode_form(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let ok = signed(gw, uri, headers, &pairs);
    gw.seen
        .lock()
        .unwrap()
        .webhooks
        .push((uri.path().to_owned(), ok));
    if ok {
        Ok(pairs)
    } else {
        Err((StatusCode::FORBIDDEN, "bad signature".to_owned()))
    }
}

async fn voice(State(gw): State<Arc<Gw>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = match webhook_form(&gw, &uri, &headers, &body) {
        Ok(pairs) => pairs,
        Err(refusal) => return refusal.into_response(),
    };
    let call = match TwilioInboundCall::from_pairs(&pairs) {
        Ok(call) => call,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let stream_url = format!("{}/stream/twilio", gw.base.replacen("http://", "wss://", 1));
    let document = twiml::connect_stream(
        &stream_url,
        &[("call", &call.call_sid), ("from", &call.from)],
        None,
    );
    gw.seen.lock().unwrap().voice.push(call);
    ([(header::CONTENT_TYPE, "text/xml")], document).into_response()
}

async fn status(State(gw): State<Arc<Gw>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = match webhook_form(&gw, &uri, &headers, &body) {
        Ok(pairs) => pairs,
        Err(refusal) => return refusal.into_response(),
    };
    match TwilioStatusCallback::from_pairs(&pairs) {
        Ok(callback) => {
            gw.seen.lock().unwrap().statuses.push(callback);
            StatusCode::OK.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn amd(State(gw): State<Arc<Gw>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = match webhook_form(&gw, &uri, &headers, &body) {
        Ok(pairs) => pairs,
        Err(refusal) => return refusal.into_response(),
    };
    match TwilioAmdCallback::from_pairs(&pairs) {
        Ok(callback) => {
            gw.seen.lock().unwrap().amd.push(callback);
            StatusCode::OK.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn stream(State(gw): State<Arc<Gw>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let url = format!("{}/stream/twilio", gw.base.replacen("http://", "wss://", 1));
    let expected = twilio_signature(&gw.token, &url, &[]);
    let ok = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    gw.seen.lock().unwrap().upgrade_signed.push(ok);
    if !ok {
        return StatusCode::FORBIDDEN.into_response();
    }
    ws.on_upgrade(move |socket| converse(gw, socket))
}

async fn next_json(gw: &Gw, socket: &mut WebSocket) -> Option<Value> {
    loop {
        match tokio::time::timeout(LIMIT, socket.recv()).await.ok()?? {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).ok()?;
                gw.seen.lock().unwrap().stream.push(value.clone());
                return Some(value);
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn send(socket: &mut WebSocket, value: Value) {
    let _ = socket.send(Message::text(value.to_string())).await;
}

/// Reads until a message with `event`; `None` if the stream ends first.
async fn until(gw: &Gw, socket: &mut WebSocket, event: &str) -> Option<Value> {
    loop {
        let message = next_json(gw, socket).await?;
        if message["event"] == event {
            return Some(message);
        }
    }
}

async fn converse(gw: Arc<Gw>, mut socket: WebSocket) {
    let Some(_connected) = next_json(&gw, &mut socket).await else {
        return;
    };
    let Some(start) = next_json(&gw, &mut socket).await else {
        return;
    };
    let sid = start["streamSid"].as_str().unwrap_or_default().to_owned();
    if gw.mode == Mode::Hold {
        until(&gw, &mut socket, "stop").await;
        return;
    }
    for _ in 0..10 {
        if until(&gw, &mut socket, "media").await.is_none() {
            return;
        }
    }
    let clip = |n: usize| B64.encode(vec![0x55u8; n]);
    send(
        &mut socket,
        json!({"event": "media", "streamSid": sid, "media": {"payload": clip(320)}}),
    )
    .await;
    send(
        &mut socket,
        json!({"event": "mark", "streamSid": sid, "mark": {"name": "m1"}}),
    )
    .await;
    until(&gw, &mut socket, "mark").await;
    // A long clip, then a clear before it can play: its mark comes back at once.
    send(
        &mut socket,
        json!({"event": "media", "streamSid": sid, "media": {"payload": clip(16_000)}}),
    )
    .await;
    send(
        &mut socket,
        json!({"event": "mark", "streamSid": sid, "mark": {"name": "m2"}}),
    )
    .await;
    send(&mut socket, json!({"event": "clear", "streamSid": sid})).await;
    until(&gw, &mut socket, "mark").await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn gateway(token: &str, mode: Mode) -> Arc<Gw> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = Arc::new(Gw {
        base: format!("http://{}", listener.local_addr().unwrap()),
        token: token.to_owned(),
        mode,
        seen: Mutex::new(Seen::default()),
    });
    let app = Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/status", post(status))
        .route("/twilio/amd", post(amd))
        .route("/stream/twilio", any(stream))
        .with_state(gw.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    gw
}

fn client(carrier: &FakeCarrier) -> TwilioRest {
    TwilioRest::new(TwilioRestConfig {
        account_sid: ACCOUNT_SID.into(),
        auth_token: AUTH_TOKEN.into(),
        base_url: carrier.rest().base_url(),
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(10),
            budget: Duration::ZERO,
        },
    })
    .unwrap()
}

fn dial(gw: &Gw) -> CreateCall {
    CreateCall {
        account_sid: ACCOUNT_SID.into(),
        to: CALLEE.into(),
        from: OUR_NUMBER.into(),
        url: format!("{}/twilio/voice?leg=out", gw.base),
        status_callback: format!("{}/twilio/status?leg=out", gw.base),
        timeout_secs: Some(30),
        time_limit_secs: None,
        record: false,
        machine_detection: None,
        async_amd_callback: None,
    }
}

#[tokio::test]
async fn an_answered_call_runs_callbacks_twiml_and_the_stream() {
    let gw = gateway(AUTH_TOKEN, Mode::Converse).await;
    let carrier = FakeCarrier::start(CarrierConfig::default()).await;
    carrier.script(
        CALLEE,
        Outcome::Answer(Behaviour::wav("caller_hello.wav", 0).with_dtmf(3, '7')),
    );
    let created = client(&carrier).create_call(&dial(&gw)).await.unwrap();
    let call = carrier.wait_finished(&created.sid, LIMIT).await.unwrap();
    assert!(call.finished, "{call:#?}");
    assert_eq!(call.violations, Vec::<String>::new());
    assert_eq!(call.ended_by, Some(EndedBy::Twiml));
    assert_eq!(call.verbs, ["Connect", "Hangup"]);
    assert_eq!(
        call.callback_statuses(),
        ["initiated", "ringing", "in-progress", "completed"]
    );
    let sequence: Vec<&str> = call
        .callbacks
        .iter()
        .filter_map(|c| c.param("SequenceNumber"))
        .collect();
    assert_eq!(sequence, ["0", "1", "2", "3"]);
    assert!(
        call.callbacks.iter().all(|c| c.status == Some(200)),
        "{:?}",
        call.callbacks
    );
    assert!(call.callbacks[3].param("CallDuration").is_some());
    assert_eq!(call.twiml_fetches.len(), 1);
    assert_eq!(
        call.twiml_fetches[0].param("CallStatus"),
        Some("in-progress")
    );
    assert_eq!(
        call.twiml_fetches[0].param("Direction"),
        Some("outbound-api")
    );
    assert_eq!(call.twiml_fetches[0].param("AnsweredBy"), None);

    let stream = call.stream.clone().unwrap();
    assert!(stream.connected && stream.closed_by_gateway);
    assert_eq!(stream.custom_parameters["call"], created.sid);
    assert_eq!(stream.custom_parameters["from"], OUR_NUMBER);
    assert_eq!(stream.marks, ["m1", "m2"]);
    assert_eq!(stream.marks_echoed, ["m1", "m2"]);
    assert_eq!(stream.clears, 1);
    assert_eq!(stream.media.len(), 320 + 16_000);
    assert!(
        stream.played_bytes >= 320 && stream.played_bytes < 16_320,
        "{}",
        stream.played_bytes
    );
    assert_eq!(stream.dtmf_sent, ['7']);

    let seen = gw.seen.lock().unwrap();
    assert!(
        seen.webhooks.iter().all(|(_, ok)| *ok),
        "{:?}",
        seen.webhooks
    );
    assert_eq!(seen.upgrade_signed, [true]);
    let statuses: Vec<TwilioCallStatus> = seen.statuses.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            TwilioCallStatus::Initiated,
            TwilioCallStatus::Ringing,
            TwilioCallStatus::InProgress,
            TwilioCallStatus::Completed
        ]
    );
    assert_eq!(seen.voice[0].call_sid, created.sid);
    let messages = &seen.stream;
    assert_eq!(
        messages[0],
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    let start = &messages[1];
    assert_eq!(start["event"], "start");
    assert_eq!(start["sequenceNumber"], "1");
    assert_eq!(start["start"]["callSid"], created.sid.as_str());
    assert_eq!(start["start"]["accountSid"], ACCOUNT_SID);
    assert_eq!(
        start["start"]["mediaFormat"],
        json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    );
    assert_eq!(start["streamSid"], start["start"]["streamSid"]);
    // Every later message numbers on from 2; media chunks count from 1, 20 ms apart.
    let mut chunk = 0u64;
    for (expected_sequence, message) in (2u64..).zip(&messages[2..]) {
        assert_eq!(
            message["sequenceNumber"],
            expected_sequence.to_string(),
            "{message}"
        );
        if message["event"] == "media" {
            chunk += 1;
            assert_eq!(message["media"]["chunk"], chunk.to_string());
            assert_eq!(
                message["media"]["timestamp"],
                ((chunk - 1) * 20).to_string()
            );
            assert_eq!(message["media"]["track"], "inbound");
            let payload = B64
                .decode(message["media"]["payload"].as_str().unwrap())
                .unwrap();
            assert_eq!(payload.len(), 160);
        }
    }
    // The caller's audio is the fixture, from its first sample.
    let first = B64
        .decode(messages[2]["media"]["payload"].as_str().unwrap())
        .unwrap();
    let hello = Behaviour::wav("caller_hello.wav", 0).audio;
    assert_eq!(first, hello[..160]);
    let dtmf: Vec<&Value> = messages.iter().filter(|m| m["event"] == "dtmf").collect();
    assert_eq!(dtmf.len(), 1);
    assert_eq!(
        dtmf[0]["dtmf"],
        json!({"track": "inbound_track", "digit": "7"})
    );
    let marks: Vec<&Value> = messages.iter().filter(|m| m["event"] == "mark").collect();
    assert_eq!(marks[0]["mark"]["name"], "m1");
    assert_eq!(marks[1]["mark"]["name"], "m2");
}

#[tokio::test]
async fn unanswered_calls_end_with_their_status_and_fetch_no_twiml() {
    let gw = gateway(AUTH_TOKEN, Mode::Converse).await;
    let carrier = FakeCarrier::start(CarrierConfig::default()).await;
    let rest = client(&carrier);
    for (number, outcome, status) in [
        ("+14155550001", Outcome::Busy, "busy"),
        ("+14155550002", Outcome::NoAnswer, "no-answer"),
        ("+14155550003", Outcome::Failed, "failed"),
    ] {
        carrier.script(number, outcome);
        let created = rest
            .create_call(&CreateCall {
                to: number.into(),
                ..dial(&gw)
            })
            .await
            .unwrap();
        let call = carrier.wait_finished(&created.sid, LIMIT).await.unwrap();
        assert_eq!(call.callback_statuses(), ["initiated", "ringing", status]);
        assert_eq!(call.final_status.as_deref(), Some(status));
        assert_eq!(call.ended_by, Some(EndedBy::NotAnswered));
        assert!(call.twiml_fetches.is_empty() && call.stream.is_none());
        assert_eq!(call.callbacks[2].param("CallDuration"), Some("0"));
    }
    let seen = gw.seen.lock().unwrap();
    assert_eq!(seen.statuses.len(), 9);
    assert_eq!(
        seen.statuses.iter().filter(|s| s.status.is_final()).count(),
        3
    );
}

#[tokio::test]
async fn a_rest_hangup_stops_the_stream_then_completes() {
    let gw = gateway(AUTH_TOKEN, Mode::Hold).await;
    let carrier = FakeCarrier::start(CarrierConfig::default()).await;
    let rest = client(&carrier);
    let created = rest.create_call(&dial(&gw)).await.unwrap();
    let streaming = carrier
        .wait_until(&created.sid, LIMIT, |c| {
            c.stream.as_ref().is_some_and(|s| s.frames_sent >= 5)
        })
        .await
        .unwrap();
    assert!(streaming.stream.is_some());
    rest.hangup_call(ACCOUNT_SID, &created.sid).await.unwrap();
    let call = carrier.wait_finished(&created.sid, LIMIT).await.unwrap();
    assert_eq!(call.ended_by, Some(EndedBy::Api));
    assert_eq!(
        call.callback_statuses().last().map(String::as_str),
        Some("completed")
    );
    let seen = gw.seen.lock().unwrap();
    let stop = seen.stream.iter().find(|m| m["event"] == "stop").unwrap();
    assert_eq!(stop["stop"]["callSid"], created.sid.as_str());
    assert_eq!(stop["stop"]["accountSid"], ACCOUNT_SID);
}

#[tokio::test]
async fn a_ringing_call_can_be_canceled() {
    let gw = gateway(AUTH_TOKEN, Mode::Hold).await;
    let carrier = FakeCarrier::start(CarrierConfig {
        step_delay: Duration::from_millis(300),
        ..CarrierConfig::default()
    })
    .await;
    let rest = client(&carrier);
    let created = rest.create_call(&dial(&gw)).await.unwrap();
    carrier
        .wait_until(&created.sid, LIMIT, |c| c.callback_statuses().len() >= 2)
        .await;
    rest.cancel_call(ACCOUNT_SID, &created.sid).await.unwrap();
    let call = carrier.wait_finished(&created.sid, LIMIT).await.unwrap();
    assert_eq!(call.final_status.as_deref(), Some("canceled"));
    assert!(call.twiml_fetches.is_empty());
}

#[tokio::test]
async fn machine_detection_reports_in_the_twiml_request_or_the_amd_callback() {
    let gw = gateway(AUTH_TOKEN, Mode::Converse).await;
    let carrier = FakeCarrier::start(CarrierConfig::default()).await;
    let rest = client(&carrier);
    carrier.script(
        CALLEE,
        Outcome::Machine {
            answered_by: "machine_start".into(),
            behaviour: Behaviour::silence(),
        },
    );
    let sync = rest
        .create_call(&CreateCall {
            machine_detection: Some(MachineDetection::Enable),
            ..dial(&gw)
        })
        .await
        .unwrap();
    let call = carrier.wait_finished(&sync.sid, LIMIT).await.unwrap();
    assert_eq!(
        call.twiml_fetches[0].param("AnsweredBy"),
        Some("machine_start")
    );
    assert_eq!(
        gw.seen.lock().unwrap().voice[0].answered_by,
        Some(AnsweredBy::MachineStart)
    );

    let human = "+14155550009";
    let asynchronous = rest
        .create_call(&CreateCall {
            to: human.into(),
            machine_detection: Some(MachineDetection::DetectMessageEnd),
            async_amd_callback: Some(format!("{}/twilio/amd", gw.base)),
            ..dial(&gw)
        })
        .await
        .unwrap();
    let call = carrier
        .wait_until(&asynchronous.sid, LIMIT, |c| {
            c.finished && !c.amd_callbacks.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(call.twiml_fetches[0].param("AnsweredBy"), None);
    assert_eq!(call.amd_callbacks[0].status, Some(200));
    let seen = gw.seen.lock().unwrap();
    assert_eq!(seen.amd[0].answered_by, AnsweredBy::Human);
    assert_eq!(seen.amd[0].call_sid, asynchronous.sid);
}

#[tokio::test]
async fn an_inbound_call_posts_the_voice_webhook_then_streams() {
    let gw = gateway(AUTH_TOKEN, Mode::Converse).await;
    let carrier = FakeCarrier::start(CarrierConfig::default()).await;
    let sid = carrier.inbound(&gw.base, OUR_NUMBER, CALLEE, Behaviour::silence());
    let call = carrier.wait_finished(&sid, LIMIT).await.unwrap();
    assert_eq!(call.violations, Vec::<String>::new());
    assert_eq!(call.direction, "inbound");
    let fetch = &call.twiml_fetches[0];
    assert_eq!(fetch.url, format!("{}/twilio/voice", gw.base));
    assert_eq!(fetch.param("CallStatus"), Some("ringing"));
    assert_eq!(fetch.param("Direction"), Some("inbound"));
    assert_eq!(fetch.param("From"), Some(CALLEE));
    assert_eq!(fetch.param("To"), Some(OUR_NUMBER));
    let stream = call.stream.clone().unwrap();
    assert_eq!(stream.custom_parameters["from"], CALLEE);
    assert_eq!(stream.marks_echoed, ["m1", "m2"]);
    assert_eq!(call.callback_statuses(), ["completed"]);
    let seen = gw.seen.lock().unwrap();
    assert_eq!(seen.voice[0].call_status, TwilioCallStatus::Ringing);
    assert_eq!(seen.statuses[0].status, TwilioCallStatus::Completed);
}

#[tokio::test]
async fn a_gateway_refusing_the_signature_is_reported() {
    // The gateway knows another token: it refuses the signed webhook.
    let gw = gateway("another-token", Mode::Converse).await;
    let carrier = FakeCarrier::start(CarrierConfig::default()).await;
    let created = client(&carrier).create_call(&dial(&gw)).await.unwrap();
    let call = carrier.wait_finished(&created.sid, LIMIT).await.unwrap();
    assert_eq!(call.ended_by, Some(EndedBy::Error));
    assert_eq!(call.twiml_fetches[0].status, Some(403));
    assert!(call.callbacks.iter().all(|c| c.status == Some(403)));
    assert!(
        call.violations.iter().any(|v| v.contains("403")),
        "{:?}",
        call.violations
    );
    assert!(gw.seen.lock().unwrap().webhooks.iter().all(|(_, ok)| !ok));
}
