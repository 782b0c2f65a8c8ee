//! Who may open a stream, and how many: `X-Twilio-Signature` and Exotel Basic credentials on
//! the upgrade where configured, the stream cap, and the idle watchdog.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use voicegw::carrier::signature::twilio_signature;

/// Tries an upgrade with extra headers; Ok(()) if it was accepted, Err(status) if refused.
async fn try_upgrade(url: &str, headers: &[(&'static str, String)]) -> Result<(), u16> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_streams_need_a_valid_signature_when_a_token_is_set() {
    let mut config = test_config();
    config.auth.twilio_auth_token = Some("secret-token".into());
    let gw = TestGateway::start(config).await;
    let url = gw.stream_url("twilio");
    let signed_url = format!("wss://{}/stream/twilio", gw.addr);
    let good = twilio_signature("secret-token", &signed_url, &[]);
    let wrong_token = twilio_signature("other-token", &signed_url, &[]);
    let wrong_url = twilio_signature(
        "secret-token",
        &format!("wss://{}/stream/exotel", gw.addr),
        &[],
    );

    assert_eq!(try_upgrade(&url, &[]).await, Err(401), "no signature");
    assert_eq!(
        try_upgrade(&url, &[("X-Twilio-Signature", wrong_token)]).await,
        Err(401)
    );
    assert_eq!(
        try_upgrade(&url, &[("X-Twilio-Signature", wrong_url)]).await,
        Err(401)
    );
    assert_eq!(
        try_upgrade(&url, &[("X-Twilio-Signature", good.clone())]).await,
        Ok(())
    );
    // Signed as https:// (a proxy's view) is accepted too.
    let https = twilio_signature(
        "secret-token",
        &format!("https://{}/stream/twilio", gw.addr),
        &[],
    );
    assert_eq!(
        try_upgrade(&url, &[("X-Twilio-Signature", https)]).await,
        Ok(())
    );
    // Exotel streams are not affected by the Twilio token.
    assert_eq!(try_upgrade(&gw.stream_url("exotel"), &[]).await, Ok(()));
    let metrics = gw.gateway.metrics().render();
    assert_eq!(
        metric(
            &metrics,
            "voicegw_streams_rejected_total{carrier=\"twilio\",reason=\"unauthorized\"}"
        ),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_use_the_public_url_behind_a_proxy() {
    let mut config = test_config();
    config.auth.twilio_auth_token = Some("tok".into());
    config.auth.public_url = Some("https://gw.example.com/".into());
    let gw = TestGateway::start(config).await;
    let url = gw.stream_url("twilio");
    let good = twilio_signature("tok", "wss://gw.example.com/stream/twilio", &[]);
    let local = twilio_signature("tok", &format!("wss://{}/stream/twilio", gw.addr), &[]);
    assert_eq!(
        try_upgrade(&url, &[("X-Twilio-Signature", good)]).await,
        Ok(())
    );
    assert_eq!(
        try_upgrade(&url, &[("X-Twilio-Signature", local)]).await,
        Err(401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_streams_need_the_basic_credentials_when_set() {
    let mut config = test_config();
    config.auth.exotel_credentials = Some("key:token".into());
    let gw = TestGateway::start(config).await;
    let url = gw.stream_url("exotel");
    let basic = |creds: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        )
    };
    assert_eq!(try_upgrade(&url, &[]).await, Err(401));
    assert_eq!(
        try_upgrade(&url, &[("Authorization", basic("key:wrong"))]).await,
        Err(401)
    );
    assert_eq!(
        try_upgrade(&url, &[("Authorization", basic("key:token"))]).await,
        Ok(())
    );
    assert_eq!(try_upgrade(&gw.stream_url("twilio"), &[]).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_cap_get_503_and_the_live_ones_carry_on() {
    let mut config = test_config();
    config.limits.max_streams = 2;
    let gw = TestGateway::start(config).await;
    let mut first = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    let mut second = CarrierSim::connect(&gw, SimConfig::exotel(8000)).await;
    first.run_for(100).await;
    second.run_for(100).await;
    assert_eq!(try_upgrade(&gw.stream_url("twilio"), &[]).await, Err(503));
    first.say_in(0, wav("caller_yes.wav"));
    assert!(
        first.run_until(6_000, |s| s.media_count() > 0).await,
        "live call disturbed"
    );
    // When one ends, there is room again.
    second.stop().await;
    second.wait_close(Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(try_upgrade(&gw.stream_url("twilio"), &[]).await, Ok(()));
    let metrics = gw.gateway.metrics().render();
    assert_eq!(
        metric(
            &metrics,
            "voicegw_streams_rejected_total{carrier=\"twilio\",reason=\"capacity\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_goes_silent_is_closed_by_the_idle_watchdog() {
    let mut config = test_config();
    config.limits.idle_timeout_secs = 1;
    let mut gw = TestGateway::start(config).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    sim.run_for(200).await;
    // The carrier stops sending without closing.
    let close = sim
        .wait_close(Duration::from_secs(4))
        .await
        .expect("not closed");
    assert_eq!(close, (1008, "no frames for 1 s".to_string()));
    let ended = gw
        .wait_event("call_ended", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(ended["reason"], "idle");
}
