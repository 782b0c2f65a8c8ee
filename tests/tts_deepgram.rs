//! Deepgram Aura text-to-speech client against the local fake `/v1/speak` (WebSocket + REST).

mod fakes;

use std::collections::HashMap;
use std::time::Duration;

use fakes::deepgram_speak::{FakeDeepgramSpeak, FakeSpeakConfig};
use fakes::speech;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use voicegw::audio::Encoding;
use voicegw::metrics::Metrics;
use voicegw::tts::deepgram::{DeepgramTts, DeepgramTtsConfig};
use voicegw::tts::{SynthesisStats, TtsError, TtsProvider, TtsVoice};

const TEXT: &str = "Thanks for calling. How can I help you today?";

fn config(fake: &FakeDeepgramSpeak) -> DeepgramTtsConfig {
    DeepgramTtsConfig {
        base_url: fake.base_url(),
        api_key: "test-key".to_owned(),
        first_byte_timeout_ms: 2000,
        ..DeepgramTtsConfig::default()
    }
}

fn provider(config: DeepgramTtsConfig) -> (DeepgramTts, Metrics) {
    let metrics = Metrics::new().unwrap();
    (DeepgramTts::new(config, metrics.clone()).unwrap(), metrics)
}

/// The fake's μ-law audio for `text`, decoded.
fn mulaw_pcm(text: &str) -> Vec<i16> {
    let mut out = Vec::new();
    Encoding::Mulaw.decode_into(&speech::synthesize_mulaw(text, 8000), &mut out);
    out
}

/// Synthesizes one segment, returning its result and the pieces sent to the caller.
async fn speak(
    voice: &mut Box<dyn TtsVoice>,
    text: &str,
) -> (Result<SynthesisStats, TtsError>, Vec<Vec<i16>>) {
    let (tx, mut rx) = mpsc::channel(voicegw::tts::TTS_AUDIO_QUEUE);
    let cancel = CancellationToken::new();
    let collect = tokio::spawn(async move {
        let mut pieces = Vec::new();
        while let Some(piece) = rx.recv().await {
            pieces.push(piece);
        }
        pieces
    });
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        voice.synthesize(text, &tx, &cancel),
    )
    .await
    .expect("synthesize returns");
    drop(tx);
    (result, collect.await.unwrap())
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn provider_count(metrics: &Metrics, outcome: &str) -> u64 {
    let needle =
        format!("voicegw_provider_calls_total{{outcome=\"{outcome}\",provider=\"deepgram_tts\"}} ");
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn mulaw_8k_over_the_socket_is_exactly_the_fake_audio() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let (tts, metrics) = provider(config(&fake));
    assert_eq!(tts.name(), "deepgram");
    let mut voice = tts.voice(8000);
    let (result, pieces) = speak(&mut voice, TEXT).await;
    let stats = result.unwrap();
    let pcm: Vec<i16> = pieces.concat();
    let expected = mulaw_pcm(TEXT);
    assert_eq!(pcm.len(), expected.len());
    assert!(pcm == expected, "audio differs from the fake's");
    assert_eq!(stats.samples, expected.len() as u64);
    assert!(!stats.fallback && !stats.cancelled);
    assert!(stats.first_byte.is_some());
    assert_eq!(
        fake.ws_queries(),
        vec![query(&[
            ("model", "aura-2-thalia-en"),
            ("encoding", "mulaw"),
            ("sample_rate", "8000")
        ])]
    );
    assert_eq!(fake.auth_headers(), vec![Some("Token test-key".to_owned())]);
    assert_eq!(fake.ws_message_types(), vec!["Speak", "Flush"]);
    assert_eq!(fake.ws_messages()[0]["text"], Value::from(TEXT));
    assert!(fake.rest_requests().is_empty());
    assert_eq!(provider_count(&metrics, "ok"), 1);
    voice.close().await;
    eventually("Close sent", || {
        fake.ws_message_types().last().map(String::as_str) == Some("Close")
    })
    .await;
}

#[tokio::test]
async fn exotel_16k_is_linear16_at_16k() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let (tts, _) = provider(config(&fake));
    let mut voice = tts.voice(16000);
    let (result, pieces) = speak(&mut voice, TEXT).await;
    let stats = result.unwrap();
    let expected = speech::synthesize(TEXT, 16000);
    assert!(pieces.concat() == expected, "16 kHz audio differs");
    assert_eq!(stats.samples, expected.len() as u64);
    assert_eq!(fake.ws_queries()[0]["encoding"], "linear16");
    assert_eq!(fake.ws_queries()[0]["sample_rate"], "16000");
}

#[tokio::test]
async fn two_segments_reuse_one_connection() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let (tts, _) = provider(config(&fake));
    let mut voice = tts.voice(8000);
    let (first, a) = speak(&mut voice, "First part.").await;
    let (second, b) = speak(&mut voice, "And the second part.").await;
    assert!(!first.unwrap().fallback && !second.unwrap().fallback);
    assert!(a.concat() == mulaw_pcm("First part."));
    assert!(b.concat() == mulaw_pcm("And the second part."));
    assert_eq!(fake.ws_connections(), 1);
    assert_eq!(fake.ws_attempts(), 1);
    assert_eq!(
        fake.ws_message_types(),
        vec!["Speak", "Flush", "Speak", "Flush"]
    );
    assert_eq!(
        fake.spoken_texts(),
        vec!["First part.", "And the second part."]
    );
}

#[tokio::test]
async fn cancel_mid_audio_clears_and_the_next_segment_is_clean() {
    // Audio as fast as possible: when the cancel comes, the rest of the segment (and its
    // Flushed) is already in flight and must be dropped until Cleared.
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let (tts, _) = provider(config(&fake));
    let mut voice = tts.voice(8000);
    let long = "This is a rather long answer that the caller is going to interrupt quite early on.";
    let (tx, mut rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    let (result, first_piece) = tokio::join!(voice.synthesize(long, &tx, &cancel), async {
        let piece = rx.recv().await;
        cancel.cancel();
        piece
    });
    let stats = result.unwrap();
    assert!(stats.cancelled, "{stats:?}");
    assert!(!stats.fallback);
    assert!(first_piece.is_some());
    assert!((stats.samples as usize) < mulaw_pcm(long).len());
    drop(tx);
    drop(rx);
    eventually("Clear sent", || {
        fake.ws_message_types().contains(&"Clear".to_owned())
    })
    .await;

    let (next, pieces) = speak(&mut voice, "Sure, go ahead.").await;
    let next = next.unwrap();
    assert!(!next.cancelled && !next.fallback);
    assert!(
        pieces.concat() == mulaw_pcm("Sure, go ahead."),
        "stale audio leaked into the next segment"
    );
    assert_eq!(fake.ws_connections(), 1, "the socket is kept after Cleared");
    assert_eq!(
        fake.ws_message_types(),
        vec!["Speak", "Flush", "Clear", "Speak", "Flush"]
    );
}

#[tokio::test]
async fn audio_in_flight_after_a_cancel_is_dropped_until_cleared() {
    // Real-time audio, and the server keeps sending for 300 ms after Clear: that late audio
    // reaches the client while it already starts the next segment.
    let fake = FakeDeepgramSpeak::start_with(FakeSpeakConfig {
        realtime_factor: 4.0,
        clear_delay_ms: 300,
        ..FakeSpeakConfig::default()
    })
    .await
    .expect("start the fake");
    let (tts, _) = provider(config(&fake));
    let mut voice = tts.voice(8000);
    let long = "This is a rather long answer that the caller is going to interrupt quite early on.";
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let (result, _) = tokio::join!(voice.synthesize(long, &tx, &cancel), async {
        let piece = rx.recv().await;
        cancel.cancel();
        piece
    });
    assert!(result.unwrap().cancelled);
    let (next, pieces) = speak(&mut voice, "Sure, go ahead.").await;
    assert!(!next.unwrap().fallback);
    assert!(
        pieces.concat() == mulaw_pcm("Sure, go ahead."),
        "audio of the cancelled segment leaked into the next one"
    );
    assert_eq!(fake.ws_connections(), 1);
}

#[tokio::test]
async fn refused_socket_falls_back_to_rest_then_reconnects() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    fake.refuse_ws_next(503);
    let (tts, metrics) = provider(config(&fake));
    let mut voice = tts.voice(8000);
    let (result, pieces) = speak(&mut voice, TEXT).await;
    let stats = result.unwrap();
    assert!(stats.fallback);
    assert!(pieces.concat() == mulaw_pcm(TEXT), "REST audio differs");
    let rest = fake.rest_requests();
    assert_eq!(rest.len(), 1);
    assert_eq!(
        rest[0].query,
        query(&[
            ("model", "aura-2-thalia-en"),
            ("encoding", "mulaw"),
            ("sample_rate", "8000"),
            ("container", "none")
        ])
    );
    assert_eq!(rest[0].auth.as_deref(), Some("Token test-key"));
    let body: Value = serde_json::from_str(&rest[0].body).unwrap();
    assert_eq!(body, serde_json::json!({ "text": TEXT }));
    assert_eq!(provider_count(&metrics, "fallback"), 1);
    assert!(provider_count(&metrics, "reconnect") >= 1);

    // The background reconnect serves the next segment over the socket.
    eventually("reconnected", || fake.ws_connections() == 1).await;
    let (result, pieces) = speak(&mut voice, "Over the socket again.").await;
    assert!(!result.unwrap().fallback);
    assert!(pieces.concat() == mulaw_pcm("Over the socket again."));
    assert_eq!(fake.rest_requests().len(), 1);
}

#[tokio::test]
async fn dropped_mid_audio_falls_back_without_duplicating_samples() {
    // Socket frames of 100 ms (800 samples), REST chunks of 30 ms (240 samples): the piece
    // sizes show where the socket's audio ended and how much of REST's was skipped.
    let fake = FakeDeepgramSpeak::start_with(FakeSpeakConfig {
        rest_chunk_ms: 30,
        ..FakeSpeakConfig::default()
    })
    .await
    .expect("start the fake");
    fake.drop_ws_mid_audio();
    let (tts, _) = provider(config(&fake));
    let mut voice = tts.voice(8000);
    let (result, pieces) = speak(&mut voice, TEXT).await;
    let stats = result.unwrap();
    let expected = mulaw_pcm(TEXT);
    assert!(stats.fallback);
    assert_eq!(stats.samples, expected.len() as u64);
    let pcm = pieces.concat();
    assert_eq!(pcm.len(), expected.len(), "samples duplicated or lost");
    assert!(pcm == expected);
    assert_eq!(pieces[0].len(), 800, "first piece is the socket's frame");
    assert_eq!(
        pieces[1].len(),
        160,
        "REST resumes mid-chunk after 800 samples"
    );
    assert_eq!(fake.rest_requests().len(), 1);
    assert_eq!(fake.spoken_texts(), vec![TEXT, TEXT]);
}

#[tokio::test]
async fn stall_times_out_without_fallback() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    fake.stall_next();
    let (tts, metrics) = provider(DeepgramTtsConfig {
        first_byte_timeout_ms: 300,
        rest_fallback: false,
        ..config(&fake)
    });
    let mut voice = tts.voice(8000);
    let (result, pieces) = speak(&mut voice, TEXT).await;
    match result {
        Err(TtsError::Timeout { waited_ms, .. }) => assert_eq!(waited_ms, 300),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(pieces.is_empty());
    assert!(fake.rest_requests().is_empty());
    assert_eq!(provider_count(&metrics, "error"), 1);
    // The stalled socket is replaced; the next segment works.
    let (result, pieces) = speak(&mut voice, "Are you still there?").await;
    assert!(!result.unwrap().fallback);
    assert!(pieces.concat() == mulaw_pcm("Are you still there?"));
    assert_eq!(fake.ws_connections(), 2);
}

#[tokio::test]
async fn stall_times_out_then_falls_back_to_rest() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    fake.stall_next();
    let (tts, _) = provider(DeepgramTtsConfig {
        first_byte_timeout_ms: 300,
        ..config(&fake)
    });
    let mut voice = tts.voice(8000);
    let (result, pieces) = speak(&mut voice, TEXT).await;
    let stats = result.unwrap();
    assert!(stats.fallback);
    assert!(pieces.concat() == mulaw_pcm(TEXT));
    assert_eq!(fake.rest_requests().len(), 1);
}

#[tokio::test]
async fn rest_json_error_is_refused_with_its_message() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    fake.refuse_ws_next(503);
    fake.rest_error_next(400);
    let (tts, metrics) = provider(config(&fake));
    let mut voice = tts.voice(8000);
    let (result, pieces) = speak(&mut voice, TEXT).await;
    match result {
        Err(TtsError::Refused { reason, .. }) => {
            assert!(reason.contains("400"), "{reason}");
            assert!(reason.contains("INJECTED_FAILURE"), "{reason}");
            assert!(reason.contains("told to fail this request"), "{reason}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(pieces.is_empty(), "a JSON error body must never be played");
    assert_eq!(provider_count(&metrics, "error"), 1);
}

#[tokio::test]
async fn the_21st_flush_in_a_minute_goes_over_rest() {
    let fake = FakeDeepgramSpeak::start_with(FakeSpeakConfig {
        first_byte_delay_ms: 0,
        ..FakeSpeakConfig::default()
    })
    .await
    .expect("start the fake");
    let (tts, _) = provider(config(&fake));
    let mut voice = tts.voice(8000);
    for n in 1..=21 {
        let text = format!("Segment number {n}.");
        let (result, pieces) = speak(&mut voice, &text).await;
        let stats = result.unwrap();
        assert_eq!(stats.fallback, n == 21, "segment {n}");
        assert!(pieces.concat() == mulaw_pcm(&text), "segment {n}");
    }
    let flushes = fake
        .ws_message_types()
        .iter()
        .filter(|t| *t == "Flush")
        .count();
    assert_eq!(flushes, 20);
    assert_eq!(fake.flush_warnings(), 0, "the limit was never hit");
    assert_eq!(fake.rest_requests().len(), 1);
    assert_eq!(fake.ws_connections(), 1);
}

#[tokio::test]
async fn flush_window_slides() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let (tts, _) = provider(config(&fake));
    let tts = tts.with_flush_limit(2, Duration::from_millis(600));
    let mut voice = tts.voice(8000);
    let mut fallbacks = Vec::new();
    for _ in 0..3 {
        fallbacks.push(speak(&mut voice, "Hi.").await.0.unwrap().fallback);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    fallbacks.push(speak(&mut voice, "Hi.").await.0.unwrap().fallback);
    assert_eq!(fallbacks, vec![false, false, true, false]);
}

#[tokio::test]
async fn a_flush_limit_warning_sends_the_segment_over_rest() {
    // A server with a lower limit than ours: its Warning makes the client use REST.
    let fake = FakeDeepgramSpeak::start_with(FakeSpeakConfig {
        flush_limit: 1,
        flush_window: Duration::from_millis(500),
        ..FakeSpeakConfig::default()
    })
    .await
    .expect("start the fake");
    let (tts, _) = provider(config(&fake));
    let mut voice = tts.voice(8000);
    assert!(!speak(&mut voice, "One.").await.0.unwrap().fallback);
    let (result, pieces) = speak(&mut voice, "Two.").await;
    assert!(result.unwrap().fallback);
    assert!(pieces.concat() == mulaw_pcm("Two."));
    assert_eq!(fake.flush_warnings(), 1);
    // The ignored text was cleared from the server's buffer: the next flush speaks only
    // the next segment.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (result, pieces) = speak(&mut voice, "Three.").await;
    assert!(!result.unwrap().fallback);
    assert!(
        pieces.concat() == mulaw_pcm("Three."),
        "stale text was spoken"
    );
    assert_eq!(
        fake.spoken_texts().last().map(String::as_str),
        Some("Three.")
    );
    assert_eq!(fake.ws_connections(), 1);
}

#[tokio::test]
async fn bad_key_is_refused_clearly() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let (tts, metrics) = provider(DeepgramTtsConfig {
        api_key: "wrong-key".to_owned(),
        ..config(&fake)
    });
    match tts.check_credentials().await {
        Err(TtsError::Refused { reason, .. }) => {
            assert!(
                reason.contains("401") && reason.contains("Invalid credentials"),
                "{reason}"
            )
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let mut voice = tts.voice(8000);
    let (result, pieces) = speak(&mut voice, TEXT).await;
    match result {
        Err(TtsError::Refused { reason, .. }) => {
            assert!(
                reason.contains("401") && reason.contains("INVALID_AUTH"),
                "{reason}"
            )
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(pieces.is_empty());
    assert_eq!(provider_count(&metrics, "error"), 1);

    let (good, _) = provider(config(&fake));
    good.check_credentials().await.unwrap();
}

#[tokio::test]
async fn unusable_rate_and_bad_config_are_errors() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let (tts, _) = provider(config(&fake));
    let mut voice = tts.voice(44_100);
    assert!(matches!(
        speak(&mut voice, TEXT).await.0,
        Err(TtsError::Config(_))
    ));
    let err = DeepgramTts::new(
        DeepgramTtsConfig {
            api_key: String::new(),
            ..config(&fake)
        },
        Metrics::new().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(err, TtsError::Config(ref m) if m.contains("api_key")),
        "{err:?}"
    );
}

/// A raw WebSocket upgrade to the fake; `Err((status, body, dg-error))` when refused.
async fn raw_ws(
    fake: &FakeDeepgramSpeak,
    query: &str,
    auth: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    (u16, Value, String),
> {
    let url = format!("ws://{}/v1/speak?{query}", fake.addr());
    let mut request = url.into_client_request().unwrap();
    if let Some(auth) = auth {
        request
            .headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .unwrap_or(Value::Null);
            let dg_error = response
                .headers()
                .get("dg-error")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body, dg_error))
        }
        Err(other) => panic!("unexpected connect error: {other}"),
    }
}

#[tokio::test]
async fn fake_rejects_bad_keys_and_params_like_the_api() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let good = "model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000";
    let key = Some("Token test-key");

    let (status, body, dg_error) = raw_ws(&fake, good, None).await.err().unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["err_code"], "INVALID_AUTH");
    assert!(body["request_id"].is_string());
    assert_eq!(dg_error, "Invalid credentials.");
    let (status, _, _) = raw_ws(&fake, good, Some("Token nope")).await.err().unwrap();
    assert_eq!(status, 401);
    let (status, _, _) = raw_ws(&fake, good, Some("Bearer test-key"))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);

    for (bad, needle) in [
        ("model=aura-2-thalia-en&encoding=mp3", "encoding"),
        (
            "model=aura-2-thalia-en&encoding=mulaw&sample_rate=24000",
            "sample_rate",
        ),
        (
            "model=aura-2-thalia-en&encoding=linear16&sample_rate=22050",
            "sample_rate",
        ),
        ("model=nova-3&encoding=mulaw", "model"),
        ("model=aura-2-thalia-en&container=none", "container"),
        (
            "model=aura-2-thalia-en&foo=1",
            "Unknown query parameters: foo",
        ),
        ("model=aura-2-thalia-en&speed=3", "speed"),
    ] {
        let (status, body, _) = raw_ws(&fake, bad, key).await.err().unwrap();
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["err_code"], "INVALID_QUERY_PARAMETER", "{bad}");
        assert!(
            body["err_msg"].as_str().unwrap().contains(needle),
            "{bad}: {body}"
        );
    }
    assert_eq!(fake.ws_connections(), 0);

    // An accepted socket: Metadata first, then bad frames close it.
    let mut ws = raw_ws(&fake, good, key).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    let metadata: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(metadata["type"], "Metadata");
    assert!(metadata["request_id"].is_string());
    ws.send(Message::Text(r#"{"type":"Speak"}"#.into()))
        .await
        .unwrap();
    let closed = ws.next().await.unwrap().unwrap();
    match closed {
        Message::Close(Some(frame)) => assert!(frame.reason.contains("text"), "{frame:?}"),
        other => panic!("expected a close, got {other:?}"),
    }
    let mut ws = raw_ws(&fake, good, key).await.unwrap();
    let _metadata = ws.next().await;
    ws.send(Message::Text(r#"{"type":"Shout","text":"x"}"#.into()))
        .await
        .unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Close(Some(_))))));
    let mut ws = raw_ws(&fake, good, key).await.unwrap();
    let _metadata = ws.next().await;
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Close(Some(_))))));
    assert_eq!(fake.protocol_closes().len(), 3);

    // REST.
    let http = reqwest::Client::new();
    let post = |q: &str, auth: &str, body: &str| {
        http.post(format!("{}/v1/speak?{q}", fake.base_url()))
            .header("authorization", auth.to_owned())
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let ok = r#"{"text":"Hello there."}"#;
    let r = post(good, "Token wrong", ok).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post(good, "Token test-key", r#"{"text":""}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(good, "Token test-key", "Hello there.").await.unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(err["err_msg"].is_string());
    let r = post(
        "model=aura-2-thalia-en&encoding=flac&sample_rate=8000",
        "Token test-key",
        ok,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(
        "model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000&container=ogg",
        "Token test-key",
        ok,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    // Without container=none the raw audio comes with a WAV header.
    let r = post(good, "Token test-key", ok).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("dg-request-id"));
    assert_eq!(r.headers()["dg-char-count"], "12");
    assert_eq!(r.headers()["dg-model-name"], "aura-2-thalia-en");
    let wav = r.bytes().await.unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(
        wav.len(),
        44 + speech::synthesize_mulaw("Hello there.", 8000).len()
    );
    let r = post(&format!("{good}&container=none"), "Token test-key", ok)
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        speech::synthesize_mulaw("Hello there.", 8000)
    );

    // Credentials endpoint.
    let r = http
        .get(format!("{}/v1/projects", fake.base_url()))
        .header("authorization", "Token nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
