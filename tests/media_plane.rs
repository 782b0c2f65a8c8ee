//! The media plane end to end, over real WebSockets: the echo agent answering each utterance,
//! marks as the playback clock, barge-in with `clear`, speakerphone echo that must not barge
//! in, Exotel slin16 chunking, DTMF, hang-up and shutdown.

mod common;

use std::time::Duration;

use common::*;
use tokio_tungstenite::tungstenite::Message;

fn utterance_ms(pcm: &[i16], rate: u32) -> u64 {
    pcm.len() as u64 * 1000 / u64::from(rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_echo_answers_each_utterance_with_marks_and_stops_cleanly() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    let hello = wav("caller_hello.wav");
    let hello_ms = utterance_ms(&hello, 8000);
    sim.say_in(200, hello);
    // The echo comes back after the caller's turn ends, and plays out completely.
    let answered = sim
        .run_until(hello_ms + 8000, |s| {
            gw_done(s) && s.marks_echoed.len() == s.media_count()
        })
        .await;
    assert!(answered, "no complete echo: {:?}", sim.received);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert_eq!(sim.clears(), 0, "nothing to barge into");

    let first = sim.first_media_ms().unwrap();
    assert!(
        first > 200 + 2_500 && first < 200 + hello_ms + 1_500,
        "echo should start after the utterance ends (+600 ms silence), got {first} ms"
    );
    let echoed_ms = sim.bot_samples_received * 1000 / 8000;
    assert!(
        echoed_ms > 2_500 && echoed_ms <= hello_ms + 400,
        "echo of {echoed_ms} ms for an utterance file of {hello_ms} ms"
    );
    // Every media is followed by its mark, and every mark came back played.
    let mut expect_mark = false;
    for r in &sim.received {
        match r {
            Received::Media { .. } => {
                assert!(!expect_mark, "two media without a mark: {:?}", sim.received);
                expect_mark = true;
            }
            Received::Mark { .. } => {
                assert!(expect_mark, "mark without media");
                expect_mark = false;
            }
            Received::Clear { .. } => {}
        }
    }
    // Media chunks are 100 ms, and the carrier's buffer never held more than the 300 ms lead.
    for r in &sim.received {
        if let Received::Media { samples, .. } = r {
            assert!(*samples <= 800, "chunk of {samples} samples");
        }
    }
    assert!(
        sim.max_buffered_samples <= 2_400,
        "buffer reached {} samples",
        sim.max_buffered_samples
    );
    assert!(
        sim.max_buffered_samples >= 1_600,
        "the lead was not used: {}",
        sim.max_buffered_samples
    );
    assert!(gw.events_of("mark_played").len() >= sim.media_count() - 1);
    assert_eq!(gw.events_of("bot_speech_finished").len(), 1);
    assert_eq!(gw.events_of("user_turn_ended").len(), 1);

    // A second utterance gets a second echo.
    let before = sim.media_count();
    let yes = wav("caller_yes.wav");
    sim.say_in(100, yes);
    let second = sim.run_until(8_000, |s| s.media_count() > before + 5).await;
    assert!(second, "no second echo");

    // The caller hangs up: the gateway closes normally and records the end.
    sim.stop().await;
    let close = sim.wait_close(Duration::from_secs(3)).await;
    assert_eq!(close.map(|c| c.0), Some(normal()));
    let ended = gw
        .wait_event("call_ended", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(ended["reason"], "carrier_stop");
    assert!(gw.gateway.registry().is_empty());
}

/// Length (ms) of all bot audio received so far.
fn utterance_ms_of(sim: &CarrierSim) -> u64 {
    sim.bot_samples_received * 1000 / u64::from(sim.config.sample_rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_burst_is_exactly_the_lead() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    sim.say_in(100, wav("caller_question.wav"));
    assert!(sim.run_until(10_000, gw_done).await);
    let first = sim.first_media_ms().unwrap();
    let burst = sim
        .received
        .iter()
        .filter(|r| matches!(r, Received::Media { at_ms, .. } if *at_ms <= first + 10))
        .count();
    assert_eq!(
        burst, 3,
        "300 ms lead = three 100 ms chunks before the first mark returns"
    );
    assert!(sim.max_buffered_samples <= 2_400);
    assert_eq!(gw.events_of("barge_in").len(), 0);
}

fn gw_done(sim: &CarrierSim) -> bool {
    sim.media_count() > 0
        && sim.now_ms() > sim.first_media_ms().unwrap() + utterance_ms_of(sim) + 300
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_barge_in_sends_clear_at_once_and_records_what_was_heard() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    sim.say_in(100, wav("caller_hello.wav"));
    assert!(
        sim.run_until(8_000, |s| s.media_count() > 0).await,
        "no echo"
    );
    // One second into the bot's answer, the caller talks over it.
    sim.run_for(1_000).await;
    assert_eq!(sim.clears(), 0);
    let interrupt = wav("caller_interrupt.wav");
    let onset_ms = sim.now_ms() + 100; // the fixture has 100 ms of leading silence
    sim.say_in(0, interrupt);
    assert!(sim.run_until(2_000, |s| s.clears() > 0).await, "no clear");
    let clear_ms = sim
        .received
        .iter()
        .find_map(|r| match r {
            Received::Clear { at_ms } => Some(*at_ms),
            _ => None,
        })
        .unwrap();
    let reaction = clear_ms.saturating_sub(onset_ms);
    assert!(reaction <= 400, "clear {reaction} ms after speech onset");
    // The barge-in is confirmed (not noise, not a backchannel) while the caller goes on.
    sim.run_for(700).await;
    // Nothing of the cut utterance is sent after the clear.
    let barge = gw
        .wait_event("barge_in", Duration::from_secs(1))
        .await
        .unwrap();
    let heard = barge["heard_ms"].as_u64().unwrap();
    let total = barge["total_ms"].as_u64().unwrap();
    assert!(
        (900..=1_700).contains(&heard),
        "heard {heard} ms of {total}"
    );
    assert!(heard < total);
    let cut = barge["utterance"].as_u64().unwrap();
    sim.run_for(300).await;
    let after_clear: Vec<_> = sim
        .received
        .iter()
        .skip_while(|r| !matches!(r, Received::Clear { .. }))
        .filter_map(|r| match r {
            Received::Mark { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert!(
        after_clear
            .iter()
            .all(|name| !name.starts_with(&format!("u{cut}c"))),
        "audio of the cut utterance after clear: {after_clear:?}"
    );
    // The interruption itself is then echoed as the caller's next turn.
    assert!(
        sim.run_until(6_000, |s| s
            .received
            .iter()
            .rev()
            .any(|r| matches!(r, Received::Media { .. }))
            && gw_has_second_turn(s))
            .await
    );
    let metrics = gw.gateway.metrics().render();
    assert_eq!(
        metric(&metrics, "voicegw_barge_ins_total{carrier=\"twilio\"}"),
        Some(1.0)
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

fn gw_has_second_turn(sim: &CarrierSim) -> bool {
    let mut seen_clear = false;
    for r in &sim.received {
        match r {
            Received::Clear { .. } => seen_clear = true,
            Received::Media { .. } if seen_clear => return true,
            _ => {}
        }
    }
    false
}

/// Speakerphone echo of the bot's own audio must never interrupt it (nor start a turn).
async fn echo_does_not_barge_in(delay_ms: u32, attenuation_db: f32) {
    let mut gw = TestGateway::start(test_config()).await;
    let mut config = SimConfig::twilio();
    config.echo = Some((delay_ms, attenuation_db));
    let mut sim = CarrierSim::connect(&gw, config).await;
    sim.say_in(100, wav("caller_hello.wav"));
    assert!(
        sim.run_until(8_000, |s| s.media_count() > 0).await,
        "no echo"
    );
    // Let the whole answer play back (with the line returning it), then two more seconds.
    let done = sim.run_until(10_000, gw_done).await;
    assert!(done);
    let media_after_answer = sim.media_count();
    sim.run_for(2_000).await;
    assert_eq!(
        sim.clears(),
        0,
        "echo at {delay_ms} ms / -{attenuation_db} dB barged in"
    );
    assert_eq!(gw.events_of("barge_in").len(), 0);
    assert_eq!(
        sim.media_count(),
        media_after_answer,
        "the bot's echo was taken for a caller turn and played back"
    );
    assert_eq!(gw.events_of("user_turn_ended").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakerphone_echo_120ms_15db_does_not_barge_in() {
    echo_does_not_barge_in(120, 15.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakerphone_echo_200ms_10db_does_not_barge_in() {
    echo_does_not_barge_in(200, 10.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakerphone_echo_50ms_12db_does_not_barge_in() {
    echo_does_not_barge_in(50, 12.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_talking_over_the_echo_still_barges_in() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut config = SimConfig::twilio();
    config.echo = Some((120, 10.0));
    let mut sim = CarrierSim::connect(&gw, config).await;
    sim.say_in(100, wav("caller_hello.wav"));
    assert!(sim.run_until(8_000, |s| s.media_count() > 0).await);
    sim.run_for(800).await;
    sim.say_in(0, wav("caller_interrupt.wav"));
    assert!(
        sim.run_until(2_000, |s| s.clears() > 0).await,
        "double talk did not barge in"
    );
    sim.run_for(700).await;
    assert!(
        gw.wait_event("barge_in", Duration::from_secs(1))
            .await
            .is_some()
    );
}

async fn exotel_echo(rate: u32) {
    let mut gw = TestGateway::start(test_config()).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::exotel(rate)).await;
    let hello = upsample(&wav("caller_yes.wav"), rate as usize / 8000);
    sim.say_in(100, hello);
    let done = sim
        .run_until(10_000, |s| s.media_count() > 0 && gw_done(s))
        .await;
    assert!(done, "no echo over Exotel at {rate} Hz: {:?}", sim.received);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let echoed_ms = sim.bot_samples_received * 1000 / u64::from(rate);
    assert!(echoed_ms >= 1_000, "echo of {echoed_ms} ms");
    let started = gw
        .wait_event("stream_started", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(started["encoding"], "linear16");
    assert_eq!(started["sample_rate"], rate);
    sim.stop().await;
    assert_eq!(
        sim.wait_close(Duration::from_secs(3)).await.map(|c| c.0),
        Some(normal())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_8k_echo_with_slin16_chunk_rules() {
    exotel_echo(8000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_16k_echo_with_slin16_chunk_rules() {
    exotel_echo(16000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_barge_in_sends_clear() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::exotel(8000)).await;
    sim.say_in(100, wav("caller_hello.wav"));
    assert!(sim.run_until(8_000, |s| s.media_count() > 0).await);
    sim.run_for(1_000).await;
    sim.say_in(0, wav("caller_interrupt.wav"));
    assert!(
        sim.run_until(2_000, |s| s.clears() > 0).await,
        "no clear on Exotel"
    );
    sim.run_for(700).await;
    assert!(
        gw.wait_event("barge_in", Duration::from_secs(1))
            .await
            .is_some()
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_from_carrier_events_and_from_in_band_tones() {
    let mut gw = TestGateway::start(test_config()).await;
    // Twilio sends dtmf events.
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    sim.run_for(100).await;
    sim.press('7').await;
    sim.press('#').await;
    sim.run_for(200).await;
    // Exotel audio carrying tones, no events: detected in-band.
    let mut exotel = CarrierSim::connect(&gw, SimConfig::exotel(8000)).await;
    exotel.say_in(100, wav("dtmf_sequence_1234hash.wav"));
    exotel.run_for(1_500).await;
    let digits: Vec<(String, String)> = gw
        .events_of("dtmf")
        .iter()
        .map(|e| {
            (
                e["digit"].as_str().unwrap().to_string(),
                e["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let carrier: Vec<_> = digits
        .iter()
        .filter(|d| d.1 == "carrier")
        .map(|d| d.0.clone())
        .collect();
    let in_band: Vec<_> = digits
        .iter()
        .filter(|d| d.1 == "in_band")
        .map(|d| d.0.clone())
        .collect();
    assert_eq!(carrier, vec!["7", "#"]);
    assert_eq!(in_band, vec!["1", "2", "3", "4", "#"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_hangup_closes_the_stream_normally() {
    let mut gw = TestGateway::start(test_config()).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    sim.run_for(200).await;
    let registry = gw.gateway.registry();
    let ids = registry.call_ids();
    assert_eq!(ids.len(), 1);
    let info = registry.get(ids[0]).unwrap();
    assert_eq!(info.stream_sid, sim.stream_sid);
    assert_eq!(info.agent, "echo");
    registry
        .send(
            ids[0],
            voicegw::call::registry::Control::Hangup {
                reason: "done".into(),
            },
        )
        .unwrap();
    let close = sim.wait_close(Duration::from_secs(2)).await.unwrap();
    assert_eq!(close, (1000, "hangup: done".to_string()));
    let ended = gw
        .wait_event("call_ended", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(ended["reason"], "hangup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_live_calls_then_closes_them_with_1001() {
    let mut config = test_config();
    config.shutdown_grace_secs = 1;
    let mut gw = TestGateway::start(config).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    sim.run_for(200).await;
    let server = gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Draining: health says so, and new connections are refused.
    let refused = tokio_tungstenite::connect_async(gw.stream_url("twilio")).await;
    assert!(refused.is_err(), "a new stream was accepted while draining");
    // The live call carries on during the grace period …
    sim.run_for(500).await;
    assert!(!sim.closed);
    // … and is closed with 1001 after it.
    let close = sim.wait_close(Duration::from_secs(3)).await.unwrap();
    assert_eq!(close.0, 1001);
    server.await.unwrap().unwrap();
    let _ = gw.events();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_metrics_and_json_errors() {
    let gw = TestGateway::start(test_config()).await;
    let (status, body) = http_get(&gw.http_url("/healthz")).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (status, body) = http_get(&gw.http_url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(body.contains("voicegw_live_calls 0"), "{body}");
    let (status, body) = http_get(&gw.http_url("/nope")).await;
    assert_eq!(status, 404);
    assert!(body.contains("\"code\":\"not_found\""), "{body}");
    let (status, body) = http_get(&gw.http_url("/stream/twilio")).await;
    assert_eq!(status, 426, "{body}");
    assert!(body.contains("websocket_required"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_call_gauge_and_frame_histogram_move() {
    let gw = TestGateway::start(test_config()).await;
    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    sim.run_for(400).await;
    let text = gw.gateway.metrics().render();
    assert_eq!(metric(&text, "voicegw_live_calls "), Some(1.0));
    let frames = metric(&text, "voicegw_frames_in_total{carrier=\"twilio\"}").unwrap();
    assert!(frames >= 15.0, "{frames}");
    let count = metric(
        &text,
        "voicegw_frame_processing_seconds_count{carrier=\"twilio\"}",
    )
    .unwrap();
    assert_eq!(count, frames);
    sim.send_raw(Message::Close(None)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = gw.gateway.metrics().render();
    assert_eq!(metric(&text, "voicegw_live_calls "), Some(0.0));
}
