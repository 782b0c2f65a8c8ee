//! ElevenLabs (`stream-input` WebSocket) and OpenAI speech clients against their local fakes:
//! exact audio, the wire sequence, the warm spare socket, cancel, every error path, and the
//! fakes' own checks on raw requests.

mod fakes;

use std::time::Duration;

use fakes::elevenlabs::{ElEvent, FakeElevenLabs, FakeElevenLabsConfig};
use fakes::openai_speech::{FakeOpenAiSpeech, FakeOpenAiSpeechConfig};
use fakes::speech;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use voicegw::audio::Encoding;
use voicegw::metrics::Metrics;
use voicegw::tts::elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
use voicegw::tts::openai::{OpenAiSpeechConfig, OpenAiSpeechTts};
use voicegw::tts::{SynthesisStats, TTS_AUDIO_QUEUE, TtsError, TtsProvider, TtsVoice};

const EL_KEY: &str = "el-test-key";
const OA_KEY: &str = "sk-test-key";
const VOICE_ID: &str = "21m00Tcm4TlvDq8ikWAM";
const SENTENCE: &str = "Your table is booked for eight tonight. Anything else I can help with?";

fn metrics() -> Metrics {
    Metrics::new().unwrap()
}

fn el_config(fake: &FakeElevenLabs) -> ElevenLabsConfig {
    ElevenLabsConfig {
        base_url: fake.base_url(),
        api_key: EL_KEY.into(),
        voice_id: VOICE_ID.into(),
        ..ElevenLabsConfig::default()
    }
}

fn el_provider(fake: &FakeElevenLabs) -> ElevenLabsTts {
    ElevenLabsTts::new(el_config(fake), metrics()).unwrap()
}

/// μ-law round trip of the fake's 8 kHz speech: what an 8 kHz client must produce exactly.
fn mulaw_speech(text: &str) -> Vec<i16> {
    let mut pcm = Vec::new();
    Encoding::Mulaw.decode_into(&speech::synthesize_mulaw(text, 8000), &mut pcm);
    pcm
}

/// Synthesizes `text`, collecting the PCM; cancels after `cancel_after` pieces if given.
async fn speak(
    voice: &mut dyn TtsVoice,
    text: &str,
    cancel_after: Option<usize>,
) -> (Result<SynthesisStats, TtsError>, Vec<i16>) {
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<Vec<i16>>(TTS_AUDIO_QUEUE);
    let token = cancel.clone();
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        let mut pieces = 0;
        while let Some(piece) = rx.recv().await {
            all.extend(piece);
            pieces += 1;
            if cancel_after == Some(pieces) {
                token.cancel();
            }
        }
        all
    });
    let result = voice.synthesize(text, &tx, &cancel).await;
    drop(tx);
    (result, collector.await.unwrap())
}

/// Polls `cond` for up to 5 s.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn has_bos(fake: &FakeElevenLabs, conn: usize) -> bool {
    fake.messages(conn)
        .first()
        .is_some_and(|m| m["text"] == " " && m.get("voice_settings").is_some())
}

#[tokio::test]
async fn elevenlabs_8k_is_sample_exact_and_follows_the_protocol() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let tts = el_provider(&fake);
    assert_eq!(tts.name(), "elevenlabs");
    let mut voice = tts.voice(8000);
    let (result, pcm) = speak(voice.as_mut(), SENTENCE, None).await;
    let stats = result.unwrap();
    assert!(!stats.cancelled && !stats.fallback);
    assert!(stats.first_byte.is_some());
    assert_eq!(stats.samples, pcm.len() as u64);
    let expected = mulaw_speech(SENTENCE);
    assert_eq!(pcm.len(), expected.len());
    assert!(pcm == expected, "audio differs from the fake's speech");

    let conn = fake.conn_with_text("booked").unwrap();
    let connected = fake.log().into_iter().find_map(|e| match e {
        ElEvent::Connected {
            conn: c,
            voice_id,
            query,
            api_key_header,
        } if c == conn => Some((voice_id, query, api_key_header)),
        _ => None,
    });
    let (voice_id, query, key) = connected.unwrap();
    assert_eq!(voice_id, VOICE_ID);
    assert_eq!(key.as_deref(), Some(EL_KEY));
    assert_eq!(query["model_id"], "eleven_flash_v2_5");
    assert_eq!(query["output_format"], "ulaw_8000");
    assert_eq!(query["inactivity_timeout"], "60");

    let msgs = fake.messages(conn);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(msgs[0]["text"], " ");
    assert_eq!(msgs[0]["voice_settings"]["stability"], 0.5);
    assert_eq!(
        msgs[0]["generation_config"]["chunk_length_schedule"],
        json!([50, 90, 120, 150])
    );
    assert_eq!(
        msgs[1],
        json!({"text": format!("{SENTENCE} "), "flush": true})
    );
    assert_eq!(msgs[2], json!({"text": ""}));
    let log = fake.log();
    assert!(log.contains(&ElEvent::Final { conn }));
    assert!(log.contains(&ElEvent::Closed {
        conn,
        code: 1000,
        reason: String::new()
    }));
}

#[tokio::test]
async fn elevenlabs_second_segment_uses_the_warm_spare() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let tts = el_provider(&fake);
    let mut voice = tts.voice(8000);
    // The first socket connects at voice creation, before any text.
    assert!(eventually(|| has_bos(&fake, 1)).await);
    let (r1, pcm1) = speak(voice.as_mut(), "Hello there.", None).await;
    r1.unwrap();
    assert_eq!(pcm1, mulaw_speech("Hello there."));
    assert_eq!(fake.conn_with_text("Hello"), Some(1));
    // Taking socket 1 started socket 2, which is ready (BOS sent) before segment 2 is asked.
    assert!(eventually(|| has_bos(&fake, 2)).await);
    assert_eq!(fake.connections(), 2);
    let (r2, pcm2) = speak(voice.as_mut(), "How can I help?", None).await;
    r2.unwrap();
    assert_eq!(pcm2, mulaw_speech("How can I help?"));
    // Segment 2 went out on the socket opened before it was requested: no handshake in its path.
    assert_eq!(fake.conn_with_text("How can"), Some(2));
    let log = fake.log();
    let connected2 = log
        .iter()
        .position(|e| matches!(e, ElEvent::Connected { conn: 2, .. }))
        .unwrap();
    let text2 = log
        .iter()
        .position(|e| matches!(e, ElEvent::Received { conn: 2, message } if message["text"] == "How can I help? "))
        .unwrap();
    assert!(connected2 < text2);
    // And the next spare is on its way.
    assert!(eventually(|| fake.connections() == 3).await);
    voice.close().await;
    assert!(
        eventually(|| fake.log().contains(&ElEvent::ClientGone { conn: 3 })).await,
        "close did not end the spare socket"
    );
}

#[tokio::test]
async fn elevenlabs_lost_spare_is_replaced() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let tts = el_provider(&fake);
    let mut voice = tts.voice(8000);
    assert!(eventually(|| has_bos(&fake, 1)).await);
    fake.close_idle_sockets();
    assert!(
        eventually(|| fake.log().iter().any(|e| matches!(
            e,
            ElEvent::Closed {
                conn: 1,
                code: 1011,
                ..
            }
        )))
        .await
    );
    let (result, pcm) = speak(voice.as_mut(), "Hello again.", None).await;
    result.unwrap();
    assert_eq!(pcm, mulaw_speech("Hello again."));
    // The dead spare was skipped for the one already connecting behind it.
    assert_eq!(fake.conn_with_text("Hello"), Some(2));
    assert!(eventually(|| fake.connections() == 3).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.connections(), 3);
}

#[tokio::test]
async fn elevenlabs_cancel_mid_audio_then_next_segment_is_fine() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig {
        chunk_interval_ms: 40,
        ..FakeElevenLabsConfig::default()
    })
    .await;
    let tts = el_provider(&fake);
    let mut voice = tts.voice(8000);
    let long = "This is a rather long answer that keeps going for several seconds of audio.";
    let (result, pcm) = speak(voice.as_mut(), long, Some(2)).await;
    let stats = result.unwrap();
    assert!(stats.cancelled);
    assert!(!pcm.is_empty());
    assert!(pcm.len() < mulaw_speech(long).len() / 2, "{}", pcm.len());
    let conn = fake.conn_with_text("rather long").unwrap();
    assert!(
        eventually(|| fake.log().contains(&ElEvent::ClientGone { conn })).await,
        "the cancelled socket was not closed"
    );
    assert!(!fake.log().contains(&ElEvent::Final { conn }));

    fake.set_chunk_interval_ms(0);
    let (result, pcm) = speak(voice.as_mut(), "Sure.", None).await;
    let stats = result.unwrap();
    assert!(!stats.cancelled);
    assert_eq!(pcm, mulaw_speech("Sure."));
}

#[tokio::test]
async fn elevenlabs_wrong_key_is_refused_clearly() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let config = ElevenLabsConfig {
        api_key: "wrong-key".into(),
        ..el_config(&fake)
    };
    let tts = ElevenLabsTts::new(config, metrics()).unwrap();
    let mut voice = tts.voice(8000);
    let (result, pcm) = speak(voice.as_mut(), SENTENCE, None).await;
    assert!(pcm.is_empty());
    match result {
        Err(TtsError::Refused { provider, reason }) => {
            assert_eq!(provider, "elevenlabs");
            assert!(
                reason.contains("401") && reason.contains("Invalid API key"),
                "{reason}"
            );
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(matches!(
        tts.check_credentials().await,
        Err(TtsError::Refused { reason, .. }) if reason.contains("401")
    ));
    el_provider(&fake).check_credentials().await.unwrap();
}

#[tokio::test]
async fn elevenlabs_quota_refusal_then_recovery() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let tts = el_provider(&fake);
    let mut voice = tts.voice(8000);
    fake.refuse_next();
    let (result, _) = speak(voice.as_mut(), SENTENCE, None).await;
    match result {
        Err(TtsError::Refused { reason, .. }) => assert!(reason.contains("quota"), "{reason}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    let (result, pcm) = speak(voice.as_mut(), "Again.", None).await;
    result.unwrap();
    assert_eq!(pcm, mulaw_speech("Again."));
}

#[tokio::test]
async fn elevenlabs_drop_mid_audio_is_a_transport_error() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let tts = el_provider(&fake);
    let mut voice = tts.voice(8000);
    fake.drop_mid_audio_next();
    let (result, pcm) = speak(voice.as_mut(), SENTENCE, None).await;
    assert!(
        matches!(result, Err(TtsError::Transport { .. })),
        "{result:?}"
    );
    assert!(!pcm.is_empty() && pcm.len() < mulaw_speech(SENTENCE).len());
    let (result, _) = speak(voice.as_mut(), "Still here.", None).await;
    result.unwrap();
}

#[tokio::test]
async fn elevenlabs_bad_base64_is_a_protocol_error() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let tts = el_provider(&fake);
    let mut voice = tts.voice(8000);
    fake.bad_base64_next();
    let (result, _) = speak(voice.as_mut(), SENTENCE, None).await;
    match result {
        Err(TtsError::Protocol { reason, .. }) => assert!(reason.contains("base64"), "{reason}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn elevenlabs_stall_is_a_first_byte_timeout() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let config = ElevenLabsConfig {
        first_byte_timeout_ms: 300,
        ..el_config(&fake)
    };
    let tts = ElevenLabsTts::new(config, metrics()).unwrap();
    let mut voice = tts.voice(8000);
    fake.stall_next();
    let (result, _) = speak(voice.as_mut(), SENTENCE, None).await;
    assert!(
        matches!(result, Err(TtsError::Timeout { waited_ms: 300, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn elevenlabs_16k_gets_pcm_16000_exactly() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let tts = el_provider(&fake);
    let mut voice = tts.voice(16_000);
    let (result, pcm) = speak(voice.as_mut(), SENTENCE, None).await;
    result.unwrap();
    assert!(
        pcm == speech::synthesize(SENTENCE, 16_000),
        "16 kHz audio differs"
    );
    let formats: Vec<String> = fake
        .log()
        .into_iter()
        .filter_map(|e| match e {
            ElEvent::Connected { query, .. } => query.get("output_format").cloned(),
            _ => None,
        })
        .collect();
    assert!(formats.iter().all(|f| f == "pcm_16000"), "{formats:?}");
}

#[tokio::test]
async fn elevenlabs_unsupported_rate_is_a_config_error() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let mut voice = el_provider(&fake).voice(11_025);
    let (result, _) = speak(voice.as_mut(), SENTENCE, None).await;
    assert!(matches!(result, Err(TtsError::Config(_))), "{result:?}");
    assert_eq!(fake.connections(), 0);
}

#[tokio::test]
async fn elevenlabs_idle_spare_is_kept_alive() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let config = ElevenLabsConfig {
        inactivity_timeout_secs: 3,
        ..el_config(&fake)
    };
    let tts = ElevenLabsTts::new(config, metrics()).unwrap();
    let mut voice = tts.voice(8000);
    // Longer than the server's idle timeout: only the keep-alives keep socket 1 open.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let keepalives = fake
        .messages(1)
        .iter()
        .skip(1)
        .filter(|m| **m == json!({"text": " "}))
        .count();
    assert!(keepalives >= 2, "{:?}", fake.messages(1));
    let (result, pcm) = speak(voice.as_mut(), "Hello.", None).await;
    result.unwrap();
    assert_eq!(pcm, mulaw_speech("Hello."));
    assert_eq!(fake.conn_with_text("Hello"), Some(1));
}

fn oa_config(fake: &FakeOpenAiSpeech) -> OpenAiSpeechConfig {
    OpenAiSpeechConfig {
        base_url: fake.base_url(),
        api_key: OA_KEY.into(),
        ..OpenAiSpeechConfig::default()
    }
}

#[tokio::test]
async fn openai_24k_resampled_to_8k_and_request_is_right() {
    let fake = FakeOpenAiSpeech::start(FakeOpenAiSpeechConfig::default()).await;
    let tts = OpenAiSpeechTts::new(oa_config(&fake), metrics()).unwrap();
    assert_eq!(tts.name(), "openai");
    let mut voice = tts.voice(8000);
    let (result, pcm) = speak(voice.as_mut(), SENTENCE, None).await;
    let stats = result.unwrap();
    assert_eq!(stats.samples, pcm.len() as u64);
    assert!(stats.first_byte.is_some());
    let expected = FakeOpenAiSpeech::pcm_for(SENTENCE).len() as f64 / 3.0;
    let ratio = pcm.len() as f64 / expected;
    assert!(
        (0.98..=1.02).contains(&ratio),
        "{} vs {expected}",
        pcm.len()
    );
    assert!(pcm.iter().any(|s| s.unsigned_abs() > 1000));

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].status, 200);
    assert_eq!(reqs[0].authorization.as_deref(), Some("Bearer sk-test-key"));
    assert_eq!(
        reqs[0].body,
        json!({"model": "gpt-4o-mini-tts", "input": SENTENCE, "voice": "alloy", "response_format": "pcm"})
    );

    // At 24 kHz nothing is resampled: sample-exact, although chunks split samples.
    let mut voice24 = tts.voice(24_000);
    let (result, pcm) = speak(voice24.as_mut(), SENTENCE, None).await;
    result.unwrap();
    assert!(
        pcm == FakeOpenAiSpeech::pcm_for(SENTENCE),
        "24 kHz audio differs"
    );
}

#[tokio::test]
async fn openai_options_are_sent() {
    let fake = FakeOpenAiSpeech::start(FakeOpenAiSpeechConfig::default()).await;
    let config = OpenAiSpeechConfig {
        voice: "coral".into(),
        instructions: Some("Speak warmly.".into()),
        speed: Some(1.25),
        ..oa_config(&fake)
    };
    let tts = OpenAiSpeechTts::new(config, metrics()).unwrap();
    let mut voice = tts.voice(16_000);
    let (result, _) = speak(voice.as_mut(), "Hi.", None).await;
    result.unwrap();
    let body = &fake.requests()[0].body;
    assert_eq!(body["voice"], "coral");
    assert_eq!(body["instructions"], "Speak warmly.");
    assert_eq!(body["speed"], 1.25);
}

#[tokio::test]
async fn openai_errors_are_refused_with_the_message() {
    let fake = FakeOpenAiSpeech::start(FakeOpenAiSpeechConfig::default()).await;
    let tts = OpenAiSpeechTts::new(oa_config(&fake), metrics()).unwrap();
    let mut voice = tts.voice(8000);
    for (status, words) in [
        (429, "Rate limit reached"),
        (500, "The server had an error"),
    ] {
        fake.fail_next(status);
        let (result, _) = speak(voice.as_mut(), SENTENCE, None).await;
        match result {
            Err(TtsError::Refused { provider, reason }) => {
                assert_eq!(provider, "openai");
                assert!(
                    reason.contains(&status.to_string()) && reason.contains(words),
                    "{reason}"
                );
            }
            other => panic!("expected Refused, got {other:?}"),
        }
    }
    let bad = OpenAiSpeechTts::new(
        OpenAiSpeechConfig {
            api_key: "sk-wrong".into(),
            ..oa_config(&fake)
        },
        metrics(),
    )
    .unwrap();
    let (result, _) = speak(bad.voice(8000).as_mut(), SENTENCE, None).await;
    assert!(
        matches!(&result, Err(TtsError::Refused { reason, .. }) if reason.contains("Incorrect API key")),
        "{result:?}"
    );
    // The voice still works after the failures.
    let (result, _) = speak(voice.as_mut(), SENTENCE, None).await;
    result.unwrap();
}

#[tokio::test]
async fn openai_stall_times_out() {
    let fake = FakeOpenAiSpeech::start(FakeOpenAiSpeechConfig::default()).await;
    let config = OpenAiSpeechConfig {
        first_byte_timeout_ms: 300,
        ..oa_config(&fake)
    };
    let tts = OpenAiSpeechTts::new(config, metrics()).unwrap();
    let mut voice = tts.voice(8000);
    fake.stall_next();
    let (result, pcm) = speak(voice.as_mut(), SENTENCE, None).await;
    assert!(
        matches!(
            result,
            Err(TtsError::Timeout {
                provider: "openai",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(pcm.is_empty());
    let (result, _) = speak(voice.as_mut(), SENTENCE, None).await;
    result.unwrap();
}

#[tokio::test]
async fn openai_cancel_stops_the_stream() {
    let fake = FakeOpenAiSpeech::start(FakeOpenAiSpeechConfig {
        chunk_interval_ms: 40,
        ..FakeOpenAiSpeechConfig::default()
    })
    .await;
    let tts = OpenAiSpeechTts::new(oa_config(&fake), metrics()).unwrap();
    let mut voice = tts.voice(8000);
    let (result, pcm) = speak(voice.as_mut(), SENTENCE, Some(1)).await;
    assert!(result.unwrap().cancelled);
    let full = FakeOpenAiSpeech::pcm_for(SENTENCE).len() / 3;
    assert!(pcm.len() < full / 2, "{} of {full}", pcm.len());
    fake.set_chunk_interval_ms(0);
    let (result, _) = speak(voice.as_mut(), "Okay.", None).await;
    assert!(!result.unwrap().cancelled);
}

/// Reads until the fake closes: (error message if any, close code, close reason).
async fn until_close<S>(ws: &mut S) -> (Option<Value>, u16, String)
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let mut error = None;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no close within 5 s");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v.get("message").is_some() {
                    error = Some(v);
                }
            }
            Some(Ok(Message::Close(Some(f)))) => {
                return (error, f.code.into(), f.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

fn stream_url(fake: &FakeElevenLabs, query: &str) -> String {
    format!(
        "{}/v1/text-to-speech/{VOICE_ID}/stream-input?{query}",
        fake.ws_url()
    )
}

async fn connect_with_key(
    url: &str,
    key: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(k) = key {
        req.headers_mut().insert("xi-api-key", k.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

fn http_status(r: Result<impl Sized, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade was accepted"),
    }
}

const GOOD_QUERY: &str = "model_id=eleven_flash_v2_5&output_format=ulaw_8000";
const BOS: &str = r#"{"text":" ","voice_settings":{"stability":0.5,"similarity_boost":0.8}}"#;

#[tokio::test]
async fn elevenlabs_fake_rejects_bad_input() {
    let fake = FakeElevenLabs::start(FakeElevenLabsConfig::default()).await;
    let good = stream_url(&fake, GOOD_QUERY);
    // Upgrade-time checks.
    assert_eq!(
        http_status(connect_with_key(&good, Some("nope")).await),
        401
    );
    for query in [
        "model_id=eleven_imaginary&output_format=ulaw_8000",
        "model_id=eleven_flash_v2_5&output_format=ulaw_16000",
        "model_id=eleven_flash_v2_5&output_format=ulaw_8000&inactivity_timeout=500",
    ] {
        let url = stream_url(&fake, query);
        assert_eq!(
            http_status(connect_with_key(&url, Some(EL_KEY)).await),
            400,
            "{query}"
        );
    }

    // In-socket checks: each case sends messages and expects an error message and close 1008.
    let cases: [(Option<&str>, Vec<&str>); 6] = [
        // No key anywhere.
        (None, vec![BOS]),
        // Wrong key in BOS.
        (None, vec![r#"{"text":" ","xi_api_key":"nope"}"#]),
        // First message not BOS.
        (Some(EL_KEY), vec![r#"{"text":"Hello "}"#]),
        // voice_settings after BOS.
        (
            Some(EL_KEY),
            vec![BOS, r#"{"text":"Hi ","voice_settings":{"stability":0.1}}"#],
        ),
        // Text without a trailing space.
        (Some(EL_KEY), vec![BOS, r#"{"text":"Hi"}"#]),
        // Non-boolean flush.
        (Some(EL_KEY), vec![BOS, r#"{"text":"Hi ","flush":"yes"}"#]),
    ];
    for (key, messages) in cases {
        let mut ws = connect_with_key(&good, key).await.unwrap();
        for m in &messages {
            ws.send(Message::text(*m)).await.unwrap();
        }
        let (error, code, _) = until_close(&mut ws).await;
        assert_eq!(code, 1008, "{messages:?}");
        assert!(error.is_some(), "no error message for {messages:?}");
    }

    // The key may ride in BOS instead of the header (both spellings).
    for field in ["xi_api_key", "xi-api-key"] {
        let mut ws = connect_with_key(&good, None).await.unwrap();
        let bos = json!({"text": " ", field: EL_KEY}).to_string();
        ws.send(Message::text(bos)).await.unwrap();
        ws.send(Message::text(r#"{"text":"Ok. ","flush":true}"#))
            .await
            .unwrap();
        ws.send(Message::text(r#"{"text":""}"#)).await.unwrap();
        let mut audio = 0;
        let mut is_final = false;
        let code = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if let Some(a) = v["audio"].as_str() {
                        audio += a.len();
                        assert!(
                            v.get("alignment").is_some() && v.get("normalizedAlignment").is_some()
                        );
                    }
                    is_final |= v["isFinal"] == true;
                }
                Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
                other => panic!("{other:?}"),
            }
        };
        assert!(audio > 0 && is_final && code == 1000, "{field}");
    }

    // Idle past inactivity_timeout: 1008 input_timeout_exceeded.
    let url = stream_url(&fake, &format!("{GOOD_QUERY}&inactivity_timeout=1"));
    let mut ws = connect_with_key(&url, Some(EL_KEY)).await.unwrap();
    ws.send(Message::text(BOS)).await.unwrap();
    let (error, code, reason) = until_close(&mut ws).await;
    assert_eq!(code, 1008);
    assert_eq!(reason, "input_timeout_exceeded");
    assert_eq!(error.unwrap()["error"], "input_timeout_exceeded");
}

#[tokio::test]
async fn openai_fake_rejects_bad_input() {
    let fake = FakeOpenAiSpeech::start(FakeOpenAiSpeechConfig::default()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/audio/speech", fake.base_url());
    let good =
        json!({"model": "tts-1", "input": "Hello.", "voice": "alloy", "response_format": "pcm"});
    let send = |key: Option<&str>, body: Value| {
        let mut req = client.post(&url).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (status, bytes)
        }
    };
    let error_of = |bytes: &[u8]| -> Value {
        serde_json::from_slice::<Value>(bytes).unwrap()["error"].clone()
    };

    let (status, body) = send(None, good.clone()).await;
    assert_eq!(status, 401);
    assert!(
        error_of(&body)["message"]
            .as_str()
            .unwrap()
            .contains("API key")
    );
    let (status, body) = send(Some("sk-wrong"), good.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(error_of(&body)["code"], "invalid_api_key");

    let with = |field: &str, value: Value| {
        let mut b = good.clone();
        b[field] = value;
        b
    };
    let too_long = "word ".repeat(1000);
    for (body, param) in [
        (with("input", json!("")), "input"),
        (with("input", json!(too_long)), "input"),
        (with("voice", json!("robot")), "voice"),
        (with("model", json!("tts-9")), "model"),
        (with("response_format", json!("ogg")), "response_format"),
        (with("speed", json!(9.0)), "speed"),
        (with("instructions", json!("calm")), "instructions"),
        (with("format", json!("pcm")), "format"),
    ] {
        let (status, bytes) = send(Some(OA_KEY), body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_of(&bytes)["param"], param, "{body}");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("input");
    assert_eq!(send(Some(OA_KEY), missing).await.0, 400);

    // Good requests: pcm is raw 24 kHz, wav has the 44-byte header.
    let (status, pcm) = send(Some(OA_KEY), good.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(pcm.len(), FakeOpenAiSpeech::pcm_for("Hello.").len() * 2);
    let (status, wav) = send(Some(OA_KEY), with("response_format", json!("wav"))).await;
    assert_eq!(status, 200);
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(wav.len(), pcm.len() + 44);
    assert_eq!(fake.requests().len(), 13);
}
