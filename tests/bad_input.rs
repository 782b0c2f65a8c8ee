//! Bad input from a carrier connection: every malformed frame is counted, recorded and skipped;
//! a flood, an oversized frame, a missing `start` or an unusable format closes that call with
//! a close code and reason; nothing panics and no other call notices.

mod common;

use std::time::Duration;

use common::*;
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Sends `bad` on a started Twilio call, then checks the call is still fine: it counts one bad
/// frame of `kind`, records it, and still closes normally on `stop`.
async fn skipped_and_recorded(carrier: Carrier, bad: Message, kind: &str) {
    let mut gw = TestGateway::start(test_config()).await;
    let config = match carrier {
        Carrier::Twilio => SimConfig::twilio(),
        Carrier::Exotel => SimConfig::exotel(8000),
    };
    let mut sim = CarrierSim::connect(&gw, config).await;
    sim.run_for(100).await;
    sim.send_raw(bad).await;
    sim.run_for(200).await;
    assert!(!sim.closed, "one bad frame closed the call");
    let recorded = gw
        .wait_event("bad_frame", Duration::from_secs(1))
        .await
        .expect("bad frame not recorded");
    assert_eq!(recorded["kind"], kind, "{recorded}");
    assert!(!recorded["message"].as_str().unwrap().is_empty());
    let carrier_label = match carrier {
        Carrier::Twilio => "twilio",
        Carrier::Exotel => "exotel",
    };
    let metrics = gw.gateway.metrics().render();
    assert_eq!(
        metric(
            &metrics,
            &format!("voicegw_bad_frames_total{{carrier=\"{carrier_label}\",kind=\"{kind}\"}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    // The call goes on: media still flows, and stop still ends it normally.
    let frames_before = metric(
        &metrics,
        &format!("voicegw_frames_in_total{{carrier=\"{carrier_label}\"}}"),
    )
    .unwrap();
    sim.run_for(200).await;
    let frames_after = metric(
        &gw.gateway.metrics().render(),
        &format!("voicegw_frames_in_total{{carrier=\"{carrier_label}\"}}"),
    )
    .unwrap();
    assert!(frames_after > frames_before);
    sim.stop().await;
    assert_eq!(
        sim.wait_close(Duration::from_secs(2)).await.map(|c| c.0),
        Some(normal())
    );
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_skipped() {
    skipped_and_recorded(
        Carrier::Twilio,
        Message::Text("{\"event\": \"media\", ".into()),
        "json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_is_skipped() {
    skipped_and_recorded(
        Carrier::Twilio,
        text(json!({"event": "teleport", "streamSid": "x"})),
        "unknown_event",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_base64_is_skipped() {
    let bad = json!({"event": "media", "sequenceNumber": "99", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "media": {"track": "inbound", "chunk": "9", "timestamp": "180", "payload": "@@not base64@@"}});
    skipped_and_recorded(Carrier::Twilio, text(bad), "base64").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_sized_slin16_payload_is_skipped() {
    let bad = json!({"event": "media", "sequence_number": "99", "stream_sid": "c8f1d0a2b3e4f5a6b7c8d9e0f1a2b3c4",
        "media": {"chunk": "9", "timestamp": "180", "payload": "AAEC"}});
    skipped_and_recorded(Carrier::Exotel, text(bad), "payload_size").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_payload_is_skipped() {
    let bad = json!({"event": "media", "sequenceNumber": "99", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "media": {"track": "inbound", "chunk": "9", "timestamp": "180", "payload": ""}});
    skipped_and_recorded(Carrier::Twilio, text(bad), "payload_size").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frame_is_skipped() {
    skipped_and_recorded(
        Carrier::Twilio,
        Message::Binary(vec![0xFF; 160].into()),
        "binary",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_stream_sid_is_skipped() {
    let bad = json!({"event": "mark", "sequenceNumber": "99", "streamSid": "MZ00000000000000000000000000000000", "mark": {"name": "u1c0"}});
    skipped_and_recorded(Carrier::Twilio, text(bad), "stream_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_never_sent_is_skipped() {
    let bad = json!({"event": "mark", "sequenceNumber": "99", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", "mark": {"name": "turn-3"}});
    skipped_and_recorded(Carrier::Twilio, text(bad), "unknown_mark").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_before_start_is_skipped_and_start_still_works() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut ws = connect(&gw.stream_url("twilio")).await;
    let media = json!({"event": "media", "sequenceNumber": "1", "streamSid": "MZ1",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "//////////8="}});
    ws.send(text(
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    ))
    .await
    .unwrap();
    ws.send(text(media)).await.unwrap();
    let recorded = gw
        .wait_event("bad_frame", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(recorded["kind"], "before_start");
    // A proper start and stop afterwards work.
    let start = json!({"event": "start", "sequenceNumber": "2", "streamSid": "MZ1", "start": {
        "accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}, "customParameters": {}}});
    ws.send(text(start)).await.unwrap();
    assert!(
        gw.wait_event("stream_started", Duration::from_secs(1))
            .await
            .is_some()
    );
    ws.send(text(json!({"event": "stop", "sequenceNumber": "3", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}})))
        .await
        .unwrap();
    let (close, _) = read_until_close(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(close.map(|c| c.0), Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_frames_closes_only_that_call() {
    let mut gw = TestGateway::start(test_config()).await;
    // A healthy call runs alongside.
    let mut healthy = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    healthy.say_in(100, wav("caller_yes.wav"));
    let mut flood = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    flood.run_for(60).await;
    for i in 0..100 {
        flood
            .send_raw(Message::Text(format!("garbage {i}").into()))
            .await;
    }
    let close = flood
        .wait_close(Duration::from_secs(3))
        .await
        .expect("flood not closed");
    assert_eq!(close.0, u16::from(CloseCode::Policy));
    assert!(close.1.contains("too many malformed frames"), "{}", close.1);
    // The healthy call still gets its echo and is still up.
    assert!(
        healthy.run_until(6_000, |s| s.media_count() > 3).await,
        "healthy call disturbed"
    );
    assert!(!healthy.closed);
    assert!(healthy.violations.is_empty());
    let ended: Vec<_> = gw.events_of("call_ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["reason"], "bad_frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_64_kib_closes_the_call_with_1009() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    sim.run_for(60).await;
    let huge = format!(
        "{{\"event\":\"media\",\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    sim.send_raw(Message::Text(huge.into())).await;
    let close = sim
        .wait_close(Duration::from_secs(3))
        .await
        .expect("not closed");
    assert_eq!(close.0, 1009, "{close:?}");
    let ended = gw
        .wait_event("call_ended", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(ended["reason"], "too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_start_in_time_closes_with_1008() {
    let mut config = test_config();
    config.limits.start_timeout_secs = 1;
    let mut gw = TestGateway::start(config).await;
    let mut ws = connect(&gw.stream_url("exotel")).await;
    ws.send(text(json!({"event": "connected"}))).await.unwrap();
    let (close, _) = read_until_close(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(close, Some((1008, "no start event within 1 s".to_string())));
    let ended = gw
        .wait_event("call_ended", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(ended["reason"], "no_start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_media_format_closes_with_1003() {
    let gw = TestGateway::start(test_config()).await;
    let mut ws = connect(&gw.stream_url("exotel")).await;
    let start = json!({"event": "start", "sequence_number": "1", "stream_sid": "s1", "start": {
        "stream_sid": "s1", "call_sid": "c1", "account_sid": "a1", "from": "+1", "to": "+2",
        "custom_parameters": {}, "media_format": {"encoding": "audio/opus", "sample_rate": "48000", "bit_rate": "16"}}});
    ws.send(text(start)).await.unwrap();
    let (close, _) = read_until_close(&mut ws, Duration::from_secs(2)).await;
    let (code, reason) = close.expect("not closed");
    assert_eq!(code, 1003);
    assert!(reason.contains("unsupported media format"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_mid_call_ends_only_its_call() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut healthy = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    let mut gone = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    gone.run_for(100).await;
    drop(gone);
    let ended = gw
        .wait_event("call_ended", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(ended["reason"], "peer_closed");
    healthy.say_in(0, wav("caller_yes.wav"));
    assert!(healthy.run_until(6_000, |s| s.media_count() > 0).await);
    assert_eq!(gw.gateway.registry().len(), 1);
}
