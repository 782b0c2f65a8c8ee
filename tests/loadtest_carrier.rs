//! The load-test caller against a strict scripted gateway on 127.0.0.1: the gateway checks
//! every message the harness sends (order, fields, numbering, cadence counted in frames, mark
//! echoes), and the harness's timeline is checked against what the gateway did. Last, the
//! caller talks to the real gateway (echo agent) and sees no protocol violation.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use voicegw::audio::g711::{decode_mulaw_into, encode_mulaw_into};
use voicegw::audio::linear16::{dbfs, decode_le_into, encode_le_into, rms};
use voicegw::loadtest::caller::{CallPlan, run_call};
use voicegw::loadtest::carrier::CarrierKind;
use voicegw::loadtest::clip::Clip;
use voicegw::loadtest::results::LiveCounters;
use voicegw::loadtest::scenario::{Scenario, Step};
use voicegw::loadtest::timeline::{Event, Timeline};

const TWILIO_TOKEN: &str = "test-auth-token";

fn tone(samples: usize, amplitude: f32) -> Vec<i16> {
    (0..samples)
        .map(|i| (amplitude * (i as f32 * 0.5).sin()) as i16)
        .collect()
}

/// 300 ms: 100 ms silence, 100 ms tone, 100 ms silence (onset frame 5, end frame 9).
fn clip() -> Arc<Clip> {
    let mut pcm = vec![0; 800];
    pcm.extend(tone(800, 8000.0));
    pcm.extend(vec![0; 800]);
    let clip = Clip::from_pcm("beep", pcm).expect("clip");
    assert_eq!(
        (clip.onset_frame, clip.end_frame, clip.frames()),
        (5, 9, 15)
    );
    Arc::new(clip)
}

fn scenario(steps: Vec<Step>) -> Arc<Scenario> {
    Arc::new(Scenario {
        name: "scripted".into(),
        parameters: BTreeMap::from([("tenant".to_string(), "acme".to_string())]),
        from: "+14155550100".into(),
        to: "+14155550199".into(),
        steps,
        repeat: false,
        answer_timeout: Duration::from_secs(3),
        personas: None,
    })
}

fn plan(
    url: String,
    carrier: CarrierKind,
    scenario: Arc<Scenario>,
    live: Arc<LiveCounters>,
) -> CallPlan {
    CallPlan {
        index: 4,
        url,
        carrier,
        scenario,
        parameters: BTreeMap::from([("agent_name".to_string(), "Ada".to_string())]),
        persona: None,
        twilio_auth_token: Some(TWILIO_TOKEN.into()),
        hang_up_at: tokio::time::Instant::now() + Duration::from_secs(20),
        live,
    }
}

/// What the scripted gateway saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every text message from the harness, parsed, with the number of harness `media`
    /// messages received before it.
    messages: Vec<(usize, Value)>,
    /// Gateway marks: name → harness media count when the gateway sent it.
    marks_sent: Vec<(String, usize)>,
    /// Harness media count when the gateway sent `clear`.
    clear_at: Option<usize>,
    /// Headers of the upgrade.
    authorization: Option<String>,
    signature: Option<String>,
    path: String,
}

fn voiced(pcm: &[i16]) -> bool {
    dbfs(rms(pcm)) >= -40.0
}

/// The harness's audio in a `media` message, as 8 kHz PCM (Exotel 16 kHz: every second
/// sample is enough for a level test).
fn harness_pcm(carrier: CarrierKind, message: &Value) -> Vec<i16> {
    let bytes = B64
        .decode(message["media"]["payload"].as_str().expect("payload"))
        .expect("base64");
    let mut pcm = Vec::new();
    match carrier {
        CarrierKind::Twilio => decode_mulaw_into(&bytes, &mut pcm),
        CarrierKind::Exotel { .. } => decode_le_into(&bytes, &mut pcm),
    }
    pcm
}

fn bot_payload(carrier: CarrierKind, ms: usize) -> String {
    let samples = carrier.sample_rate() as usize * ms / 1000;
    let pcm = tone(samples, 9000.0);
    let mut bytes = Vec::new();
    match carrier {
        CarrierKind::Twilio => encode_mulaw_into(&pcm, &mut bytes),
        CarrierKind::Exotel { .. } => encode_le_into(&pcm, &mut bytes),
    }
    B64.encode(bytes)
}

/// Accepts one stream and runs `script` on it: the script gets each harness message (parsed)
/// and answers with messages to send.
// The handshake callback's error type is tungstenite's (a whole HTTP response).
#[allow(clippy::result_large_err)]
async fn scripted_gateway<F>(listener: TcpListener, carrier: CarrierKind, mut script: F) -> Seen
where
    F: FnMut(&Value, usize, &mut Vec<Message>) + Send,
{
    let (tcp, _) = listener.accept().await.expect("accept");
    let mut seen = Seen::default();
    let mut headers = (None, None, String::new());
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        let get = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        headers = (
            get("authorization"),
            get("x-twilio-signature"),
            req.uri().to_string(),
        );
        Ok(resp)
    })
    .await
    .expect("handshake");
    (seen.authorization, seen.signature, seen.path) = headers;
    let (mut tx, mut rx) = ws.split();
    let mut media = 0usize;
    let sid_key = carrier.sid_key();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, rx.next()).await {
        let text = match message {
            Ok(Message::Text(text)) => text.to_string(),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(other) => panic!("the harness sent a non-text frame: {other:?}"),
        };
        let value: Value = serde_json::from_str(&text).expect("harness JSON");
        seen.messages.push((media, value.clone()));
        if value["event"] == "media" {
            media += 1;
        }
        let mut out = Vec::new();
        script(&value, media, &mut out);
        for message in out {
            if let Message::Text(text) = &message {
                let sent: Value = serde_json::from_str(text.as_str()).expect("script JSON");
                if sent["event"] == "mark" {
                    let name = sent["mark"]["name"].as_str().expect("name").to_string();
                    seen.marks_sent.push((name, media));
                }
                if sent["event"] == "clear" && sent[sid_key].is_string() {
                    seen.clear_at = Some(media);
                }
            }
            if tx.send(message).await.is_err() {
                break;
            }
        }
        if value["event"] == "stop" {
            break;
        }
    }
    seen
}

/// Checks numbering on every message: `start` is 1, then +1 per message; media chunks from
/// 1 with timestamps (chunk−1)×`chunk_ms`. Returns the media payload sizes.
fn check_numbering(carrier: CarrierKind, messages: &[(usize, Value)], chunk_ms: u64) -> Vec<usize> {
    let (seq_key, sid_key) = match carrier {
        CarrierKind::Twilio => ("sequenceNumber", "streamSid"),
        CarrierKind::Exotel { .. } => ("sequence_number", "stream_sid"),
    };
    assert_eq!(messages[0].1["event"], "connected");
    assert!(messages[0].1.get(seq_key).is_none());
    let sid = messages[1].1[sid_key].as_str().expect("sid").to_string();
    let mut chunk = 0u64;
    let mut sizes = Vec::new();
    for (n, (_, message)) in messages.iter().enumerate().skip(1) {
        assert_eq!(message[seq_key], json!(n.to_string()), "{message}");
        assert_eq!(message[sid_key], json!(sid), "{message}");
        if message["event"] == "media" {
            chunk += 1;
            assert_eq!(message["media"]["chunk"], json!(chunk.to_string()));
            assert_eq!(
                message["media"]["timestamp"],
                json!(((chunk - 1) * chunk_ms).to_string())
            );
            let bytes = B64
                .decode(message["media"]["payload"].as_str().expect("payload"))
                .expect("base64");
            sizes.push(bytes.len());
        }
    }
    sizes
}

fn kinds(timeline: &Timeline) -> Vec<String> {
    timeline
        .events
        .iter()
        .map(|e| match &e.event {
            Event::SpeechStart { turn, barge_in } => {
                format!("start{turn}{}", if *barge_in { "b" } else { "" })
            }
            Event::SpeechEnd {
                turn,
                barge_in,
                expect_reply,
            } => format!(
                "end{turn}{}{}",
                if *barge_in { "b" } else { "" },
                if *expect_reply { "r" } else { "" }
            ),
            Event::DtmfSent {
                turn,
                digits,
                expect_reply,
            } => {
                format!("dtmf{turn}{digits}{}", if *expect_reply { "r" } else { "" })
            }
            Event::BotMark { name } => format!("mark:{name}"),
            Event::Violation { what } => {
                format!("violation:{}", what.split(':').next().unwrap_or(""))
            }
            other => serde_json::to_value(other).expect("event")["type"]
                .as_str()
                .expect("type")
                .to_string(),
        })
        .collect()
}

fn assert_times_never_decrease(timeline: &Timeline) {
    for pair in timeline.events.windows(2) {
        assert!(pair[0].at_us <= pair[1].at_us, "{pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_call_against_a_strict_gateway() {
    let carrier = CarrierKind::Twilio;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let clip = clip();
    let scenario = scenario(vec![
        Step::Pause(Duration::from_millis(100)),
        Step::Say {
            clip: clip.clone(),
            expect_reply: true,
        },
        Step::WaitForBot {
            timeout: Duration::from_secs(3),
        },
        Step::Dtmf {
            digits: "1#".into(),
            gap: Duration::from_millis(60),
            expect_reply: false,
        },
        Step::BargeIn {
            clip: clip.clone(),
            after: Duration::from_millis(100),
        },
        Step::Pause(Duration::from_millis(200)),
        Step::Hangup,
    ]);
    let live = Arc::new(LiveCounters::default());

    // The gateway: answers the first utterance (300 ms in two messages + marks), sends a bad
    // event and a binary frame; after `#` starts a 1 s answer (5 × 200 ms + marks) and
    // clears it when the caller speaks over it.
    let mut sid = String::new();
    let (mut heard_voice, mut silent_after, mut answered, mut long_answer, mut cleared) =
        (false, 0, false, false, false);
    let gateway = tokio::spawn(scripted_gateway(
        listener,
        carrier,
        move |message, _media, out| {
            let text = |v: Value| Message::text(v.to_string());
            match message["event"].as_str() {
                Some("start") => sid = message["streamSid"].as_str().expect("sid").to_string(),
                Some("media") => {
                    let loud = voiced(&harness_pcm(carrier, message));
                    if !answered {
                        if loud {
                            heard_voice = true;
                        } else if heard_voice {
                            silent_after += 1;
                        }
                        if heard_voice && silent_after == 3 {
                            answered = true;
                            for (ms, name) in [(200, "a1"), (100, "a2")] {
                                out.push(text(json!({"event":"media","streamSid":sid,"media":{"payload":bot_payload(carrier, ms)}})));
                                out.push(text(
                                    json!({"event":"mark","streamSid":sid,"mark":{"name":name}}),
                                ));
                            }
                            out.push(text(json!({"event":"bogus","streamSid":sid})));
                            out.push(Message::binary(vec![1u8, 2, 3]));
                        }
                    } else if long_answer && !cleared && loud {
                        cleared = true;
                        out.push(text(json!({"event":"clear","streamSid":sid})));
                    }
                }
                Some("dtmf") if message["dtmf"]["digit"] == "#" => {
                    long_answer = true;
                    for n in 1..=5 {
                        out.push(text(json!({"event":"media","streamSid":sid,"media":{"payload":bot_payload(carrier, 200)}})));
                        out.push(text(
                            json!({"event":"mark","streamSid":sid,"mark":{"name":format!("b{n}")}}),
                        ));
                    }
                }
                _ => {}
            }
        },
    ));
    let url = format!("ws://127.0.0.1:{port}/stream/twilio");
    let outcome = run_call(plan(url, carrier, scenario, live.clone())).await;
    let seen = gateway.await.expect("gateway");

    // The upgrade is signed as Twilio signs it.
    assert_eq!(seen.path, "/stream/twilio");
    let signature = seen.signature.as_deref().expect("X-Twilio-Signature");
    assert!(voicegw::carrier::signature::verify_twilio(
        TWILIO_TOKEN,
        &format!("wss://127.0.0.1:{port}/stream/twilio"),
        &[],
        signature
    ));

    // Every message the harness sent, in order, numbered and shaped as Twilio's.
    let messages = &seen.messages;
    assert_eq!(
        messages[0].1,
        json!({"event":"connected","protocol":"Call","version":"1.0.0"})
    );
    let start = &messages[1].1;
    assert_eq!(start["event"], "start");
    assert_eq!(start["start"]["streamSid"], start["streamSid"]);
    assert_eq!(start["start"]["tracks"], json!(["inbound"]));
    assert_eq!(
        start["start"]["mediaFormat"],
        json!({"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1})
    );
    assert_eq!(
        start["start"]["customParameters"],
        json!({"tenant":"acme","agent_name":"Ada","from":"+14155550100","to":"+14155550199"})
    );
    let sizes = check_numbering(carrier, messages, 20);
    assert!(
        sizes.iter().all(|&n| n == 160),
        "Twilio frames are 160 bytes"
    );
    assert_eq!(sizes.len() as u64, outcome.frames_sent);
    let events: Vec<&str> = messages
        .iter()
        .map(|(_, m)| m["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(events.last(), Some(&"stop"));
    let stop = &messages[messages.len() - 1].1["stop"];
    assert_eq!(stop["accountSid"], start["start"]["accountSid"]);
    assert_eq!(stop["callSid"], start["start"]["callSid"]);
    let digits: Vec<&Value> = messages
        .iter()
        .filter(|(_, m)| m["event"] == "dtmf")
        .map(|(_, m)| &m["dtmf"])
        .collect();
    assert_eq!(
        digits,
        vec![
            &json!({"track":"inbound_track","digit":"1"}),
            &json!({"track":"inbound_track","digit":"#"})
        ]
    );
    // Between the two digits the 20 ms clock kept going (60 ms gap: 2 to 4 frames).
    let dtmf_media: Vec<usize> = messages
        .iter()
        .filter(|(_, m)| m["event"] == "dtmf")
        .map(|(media, _)| *media)
        .collect();
    assert!(
        (2..=4).contains(&(dtmf_media[1] - dtmf_media[0])),
        "{dtmf_media:?}"
    );

    // Mark echoes: each name once, in order; the played ones only after their audio had
    // time to play (counted in harness frames), the cleared ones at once.
    let echoes: Vec<(usize, String)> = messages
        .iter()
        .filter(|(_, m)| m["event"] == "mark")
        .map(|(media, m)| (*media, m["mark"]["name"].as_str().unwrap_or("").to_string()))
        .collect();
    let names: Vec<&str> = echoes.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["a1", "a2", "b1", "b2", "b3", "b4", "b5"]);
    assert_eq!(outcome.marks_echoed, 7);
    let sent_at = |name: &str| {
        seen.marks_sent
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| *m)
            .expect("sent")
    };
    // a1 follows 200 ms of audio, a2 300 ms: 10 and 15 frames of 20 ms, one frame of slack
    // for the phase of the clock.
    assert!(echoes[0].0 - sent_at("a1") >= 9, "{echoes:?}");
    assert!(echoes[1].0 - sent_at("a2") >= 14, "{echoes:?}");
    let clear_at = seen.clear_at.expect("the gateway cleared");
    for (media, name) in &echoes[2..] {
        if *media > clear_at {
            assert!(
                media - clear_at <= 2,
                "{name} echoed {} frames after clear",
                media - clear_at
            );
        }
    }
    // b5 was queued behind 1 s of audio and the caller cut in well before: it was flushed.
    assert!(echoes[6].0 >= clear_at && echoes[6].0 - clear_at <= 2);

    // The harness's record.
    let timeline = &outcome.timeline;
    assert_times_never_decrease(timeline);
    let kinds = kinds(timeline);
    let expected_prefix = [
        "connected",
        "stream_started",
        "start1",
        "end1r",
        "bot_media",
        "mark:a1",
        "bot_media",
        "mark:a2",
        "violation:event",
        "violation:binary",
    ];
    assert_eq!(
        &kinds[..expected_prefix.len()],
        &expected_prefix,
        "{kinds:?}"
    );
    let rest: Vec<&str> = kinds[expected_prefix.len()..]
        .iter()
        .map(String::as_str)
        .filter(|k| !k.starts_with("mark:") && *k != "bot_media")
        .collect();
    assert_eq!(
        rest,
        [
            "playback_drained",
            "dtmf21#",
            "start3b",
            "bot_clear",
            "end3br",
            "hung_up"
        ],
        "{kinds:?}"
    );
    let bot_media = timeline
        .events
        .iter()
        .filter(|e| matches!(e.event, Event::BotMedia { .. }))
        .count();
    assert_eq!(bot_media, 7);
    for stamped in &timeline.events {
        match &stamped.event {
            Event::BotMedia {
                audio_us,
                voiced_offset_us,
                ..
            } => {
                assert!([100_000, 200_000].contains(audio_us));
                assert_eq!(*voiced_offset_us, Some(0));
            }
            Event::BotClear { dropped_us } => assert!(*dropped_us > 0 && *dropped_us <= 1_000_000),
            _ => {}
        }
    }
    // The first answer started playing on arrival.
    let first = timeline.events.iter().find_map(|e| match e.event {
        Event::BotMedia { queued_us, .. } => Some(queued_us),
        _ => None,
    });
    assert_eq!(first, Some(0));

    // Live counts: one call, now down; one answered turn (the digits expected no reply, the
    // barge-in's answer never came); two violations.
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(live.calls_started.load(Relaxed), 1);
    assert_eq!(live.calls_up.load(Relaxed), 0);
    assert_eq!(live.turns.load(Relaxed), 1);
    assert_eq!(live.errors.load(Relaxed), 2);
    assert!(!outcome.tick_late_ms.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_16k_call_against_a_strict_gateway() {
    let carrier = CarrierKind::Exotel {
        sample_rate: 16_000,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let scenario = scenario(vec![
        Step::Say {
            clip: clip(),
            expect_reply: true,
        },
        Step::WaitForBot {
            timeout: Duration::from_secs(3),
        },
        Step::Hangup,
    ]);
    let live = Arc::new(LiveCounters::default());
    let mut sid = String::new();
    let (mut heard_voice, mut answered) = (false, false);
    let gateway = tokio::spawn(scripted_gateway(
        listener,
        carrier,
        move |message, _media, out| {
            let text = |v: Value| Message::text(v.to_string());
            match message["event"].as_str() {
                Some("start") => sid = message["stream_sid"].as_str().expect("sid").to_string(),
                Some("media") => {
                    let loud = voiced(&harness_pcm(carrier, message));
                    heard_voice |= loud;
                    if heard_voice && !loud && !answered {
                        answered = true;
                        // 100 ms at 16 kHz: 3 200 bytes (valid); then 20 ms: 640 bytes (too small).
                        out.push(text(json!({"event":"media","stream_sid":sid,"media":{"payload":bot_payload(carrier, 100)}})));
                        out.push(text(
                            json!({"event":"mark","stream_sid":sid,"mark":{"name":"x1"}}),
                        ));
                        out.push(text(json!({"event":"media","stream_sid":sid,"media":{"payload":bot_payload(carrier, 20)}})));
                        // Twilio's casing is not Exotel's.
                        out.push(text(json!({"event":"clear","streamSid":sid})));
                    }
                }
                _ => {}
            }
        },
    ));
    let url = format!("ws://KEY:TOKEN@127.0.0.1:{port}/stream/exotel?sample-rate=16000");
    let outcome = run_call(plan(url, carrier, scenario, live.clone())).await;
    let seen = gateway.await.expect("gateway");

    assert_eq!(seen.path, "/stream/exotel?sample-rate=16000");
    assert_eq!(
        seen.authorization.as_deref(),
        Some(format!("Basic {}", B64.encode("KEY:TOKEN")).as_str())
    );
    assert_eq!(seen.signature, None);
    let messages = &seen.messages;
    assert_eq!(messages[0].1, json!({"event":"connected"}));
    let start = &messages[1].1;
    assert_eq!(start["start"]["stream_sid"], start["stream_sid"]);
    assert_eq!(start["start"]["from"], "+14155550100");
    assert_eq!(start["start"]["to"], "+14155550199");
    assert_eq!(
        start["start"]["custom_parameters"],
        json!({"tenant":"acme","agent_name":"Ada"})
    );
    assert_eq!(
        start["start"]["media_format"],
        json!({"encoding":"audio/x-raw","sample_rate":"16000","bit_rate":"16"})
    );
    let sizes = check_numbering(carrier, messages, 20);
    assert!(
        sizes.iter().all(|&n| n == 640),
        "20 ms at 16 kHz is 640 bytes"
    );
    let last = &messages[messages.len() - 1].1;
    assert_eq!(last["event"], "stop");
    assert_eq!(last["stop"]["reason"], "callended");
    assert_eq!(last["stop"]["call_sid"], start["start"]["call_sid"]);
    let echoes: Vec<&Value> = messages
        .iter()
        .filter(|(_, m)| m["event"] == "mark")
        .map(|(_, m)| &m["mark"]["name"])
        .collect();
    assert_eq!(echoes, [&json!("x1")]);

    let timeline = &outcome.timeline;
    assert_times_never_decrease(timeline);
    let kinds = kinds(timeline);
    let core: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "playback_drained")
        .collect();
    assert_eq!(
        core,
        [
            "connected",
            "stream_started",
            "start1",
            "end1r",
            "bot_media",
            "mark:x1",
            "violation:chunk_size",
            "violation:field",
            "hung_up"
        ],
        "{kinds:?}"
    );
    assert!(timeline.events.iter().any(|e| matches!(&e.event, Event::Violation { what } if what == "chunk_size: 640 bytes (Exotel takes multiples of 320 from 3200 to 99840)")));
    assert!(timeline.events.iter().any(|e| e.event
        == Event::BotMedia {
            audio_us: 100_000,
            voiced_offset_us: Some(0),
            queued_us: 0
        }));
}

#[tokio::test]
async fn a_refused_connection_is_recorded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let live = Arc::new(LiveCounters::default());
    let scenario = scenario(vec![Step::Hangup]);
    let outcome = run_call(plan(
        format!("ws://127.0.0.1:{port}/stream/twilio"),
        CarrierKind::Twilio,
        scenario,
        live.clone(),
    ))
    .await;
    assert_eq!(outcome.timeline.events.len(), 1);
    assert!(matches!(
        outcome.timeline.events[0].event,
        Event::ConnectFailed { .. }
    ));
    assert_eq!(outcome.frames_sent, 0);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (
            live.calls_started.load(Relaxed),
            live.calls_up.load(Relaxed),
            live.errors.load(Relaxed)
        ),
        (1, 0, 1)
    );
}

/// A fixture utterance.
fn fixture(name: &str) -> Arc<Clip> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audio")
        .join(name);
    let bytes = std::fs::read(&path).expect("fixture");
    Arc::new(Clip::from_wav_bytes(name, &bytes).expect("clip"))
}

/// One call through the real gateway's echo agent: the answer comes back, every mark is
/// echoed, nothing breaks the carrier's protocol.
async fn against_the_gateway(carrier: CarrierKind, path: &str) {
    let gw = common::TestGateway::start(common::test_config()).await;
    let scenario = scenario(vec![
        Step::Pause(Duration::from_millis(100)),
        Step::Say {
            clip: fixture("caller_yes.wav"),
            expect_reply: true,
        },
        Step::WaitForBot {
            timeout: Duration::from_secs(8),
        },
        Step::Hangup,
    ]);
    let live = Arc::new(LiveCounters::default());
    let mut plan = plan(
        format!("ws://{}{path}", gw.addr),
        carrier,
        scenario,
        live.clone(),
    );
    plan.twilio_auth_token = gw.twilio_auth_token.clone();
    let outcome = run_call(plan).await;
    let timeline = &outcome.timeline;
    assert_times_never_decrease(timeline);
    let kinds = kinds(timeline);
    assert!(
        !kinds.iter().any(|k| k.starts_with("violation")),
        "{:?}",
        timeline.events
    );
    assert_eq!(
        &kinds[..4],
        ["connected", "stream_started", "start1", "end1r"],
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("hung_up"),
        "{kinds:?}"
    );
    let media = kinds.iter().filter(|k| *k == "bot_media").count();
    let marks = kinds.iter().filter(|k| k.starts_with("mark:")).count() as u64;
    assert!(media > 0, "{kinds:?}");
    // The gateway marks every chunk; all came back, played.
    assert_eq!(outcome.marks_echoed, marks);
    assert!(kinds.contains(&"playback_drained".to_string()));
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (live.turns.load(Relaxed), live.errors.load(Relaxed)),
        (1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_call_against_the_real_gateway() {
    against_the_gateway(CarrierKind::Twilio, "/stream/twilio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_16k_call_against_the_real_gateway() {
    against_the_gateway(
        CarrierKind::Exotel {
            sample_rate: 16_000,
        },
        "/stream/exotel?sample-rate=16000",
    )
    .await;
}
