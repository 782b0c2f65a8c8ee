//! The Deepgram speech-to-text client against the local `/v1/listen` fake, with the recorded
//! caller fixtures: interim → final → UtteranceEnd on the call timeline, keep-alives over gated
//! silence, Finalize, Close, reconnect with replay (no lost or doubled words), refused keys,
//! Exotel linear16 at 16 kHz, and the fake's own request checks.

mod fakes;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use fakes::deepgram_listen::{FakeListen, ListenConfig};
use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voicegw::audio::Encoding;
use voicegw::call::CallId;
use voicegw::metrics::Metrics;
use voicegw::stt::deepgram::{CredentialError, DeepgramStt, DeepgramSttConfig};
use voicegw::stt::{SttAudioFormat, SttEncoding, SttEvent, SttProvider, SttStream};

const HELLO: &str = "Hello, I'm calling to confirm my appointment for Tuesday.";
const QUESTION: &str = "Can you tell me what time you open tomorrow?";
/// Voice in caller_hello.wav spans about 120..3800 ms, caller_question.wav 100..2580 ms
/// (20 ms windows above −40 dBFS); both have no pause as long as 300 ms.
const HELLO_VOICE: (u64, u64) = (120, 3800);
const QUESTION_VOICE: (u64, u64) = (100, 2580);

fn wav(name: &str) -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audio")
        .join(name);
    let mut reader =
        hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(reader.spec().sample_rate, 8000, "{name}");
    reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect()
}

fn mulaw(pcm: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pcm.len());
    Encoding::Mulaw.encode_into(pcm, &mut out);
    out
}

/// μ-law 8 kHz of a fixture followed by `silence_ms` of silence.
fn mulaw_fixture(name: &str, silence_ms: usize) -> Vec<u8> {
    let mut bytes = mulaw(&wav(name));
    bytes.extend(std::iter::repeat_n(0xFFu8, silence_ms * 8));
    bytes
}

fn mulaw_8k() -> SttAudioFormat {
    SttAudioFormat {
        encoding: SttEncoding::Mulaw,
        sample_rate: 8000,
    }
}

fn config(fake: &FakeListen) -> DeepgramSttConfig {
    DeepgramSttConfig {
        base_url: fake.base_url(),
        api_key: "test-key".into(),
        ..DeepgramSttConfig::default()
    }
}

fn provider(config: DeepgramSttConfig) -> (DeepgramStt, Metrics) {
    let metrics = Metrics::new().expect("metrics");
    let stt = DeepgramStt::new(config, metrics.clone()).expect("valid config");
    (stt, metrics)
}

fn metric(metrics: &Metrics, outcome: &str) -> u64 {
    metrics
        .provider_calls
        .with_label_values(&["deepgram_stt", outcome])
        .get()
}

/// Sends `bytes` as 20 ms frames starting at call time `at_ms`, one frame per `pace`.
/// Returns the call time after the last frame.
async fn feed(
    stream: &SttStream,
    bytes: &[u8],
    frame_bytes: usize,
    at_ms: u64,
    pace: Duration,
) -> u64 {
    let mut at = at_ms;
    for frame in bytes.chunks(frame_bytes) {
        let mut tries = 0;
        while !stream.push_audio(at, Bytes::copy_from_slice(frame)) {
            tries += 1;
            assert!(tries < 2000, "input queue stayed full");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        at += 20;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    at
}

/// Receives events until `done` matches one (included) or `timeout` passes.
async fn events_until(
    stream: &mut SttStream,
    timeout: Duration,
    mut done: impl FnMut(&SttEvent) -> bool,
) -> Vec<SttEvent> {
    let until = Instant::now() + timeout;
    let mut out = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(until, stream.recv()).await {
        let stop = done(&event);
        out.push(event);
        if stop {
            break;
        }
    }
    out
}

fn finals(events: &[SttEvent]) -> Vec<(String, u64, u64, bool, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            SttEvent::Final {
                text,
                start_ms,
                end_ms,
                speech_final,
                from_finalize,
            } => Some((
                text.clone(),
                *start_ms,
                *end_ms,
                *speech_final,
                *from_finalize,
            )),
            _ => None,
        })
        .collect()
}

/// Pushes `n` frames (more than the input queue holds); each is accepted at once or after
/// a short pause, so the task is draining.
async fn pushes_keep_being_accepted(stream: &SttStream, n: u64) {
    for i in 0..n {
        let frame = Bytes::from_static(&[0xFF; 160]);
        let mut ok = stream.push_audio(i * 20, frame.clone());
        if !ok {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ok = stream.push_audio(i * 20, frame);
        }
        assert!(ok, "push {i} refused");
    }
}

fn is_speech_final(e: &SttEvent) -> bool {
    matches!(
        e,
        SttEvent::Final {
            speech_final: true,
            ..
        }
    )
}

fn near(value: u64, want: u64, tolerance: u64) -> bool {
    value.abs_diff(want) <= tolerance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_utterance_gives_interims_final_and_utterance_end_on_the_call_timeline() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    fake.push_script([HELLO]);
    let mut cfg = config(&fake);
    cfg.keyterms = vec!["Tuesday".into(), "appointment".into()];
    let (stt, metrics) = provider(cfg);
    assert_eq!(stt.name(), "deepgram");
    let call = CallId::new();
    let mut stream = stt.open(call, mulaw_8k());
    // The call has been going for 5 s before the caller speaks: call time ≠ provider time.
    let audio = mulaw_fixture("caller_hello.wav", 1300);
    feed(&stream, &audio, 160, 5000, Duration::from_millis(20)).await;
    let events = events_until(&mut stream, Duration::from_secs(5), |e| {
        matches!(e, SttEvent::UtteranceEnd { .. })
    })
    .await;

    let pos = |pred: &dyn Fn(&SttEvent) -> bool| events.iter().position(pred);
    let started = pos(&|e| matches!(e, SttEvent::SpeechStarted { .. })).expect("SpeechStarted");
    let interim = pos(&|e| matches!(e, SttEvent::Interim { text, .. } if !text.is_empty()))
        .expect("a non-empty interim");
    let fin = pos(&is_speech_final).expect("speech_final");
    let ue = pos(&|e| matches!(e, SttEvent::UtteranceEnd { .. })).expect("UtteranceEnd");
    assert!(started < interim && interim < fin && fin < ue, "{events:?}");

    let SttEvent::SpeechStarted { at_ms } = &events[started] else {
        unreachable!()
    };
    assert!(
        near(*at_ms, 5000 + HELLO_VOICE.0, 40),
        "SpeechStarted at {at_ms}"
    );
    for e in &events {
        if let SttEvent::Interim {
            text,
            start_ms,
            end_ms,
        } = e
        {
            assert!(
                HELLO.starts_with(text.as_str()),
                "interim {text:?} is a prefix"
            );
            assert_eq!(*start_ms, 5000);
            assert!(
                *end_ms > 5000 && *end_ms <= 5000 + HELLO_VOICE.1 + 300,
                "{e:?}"
            );
        }
    }
    let f = finals(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    let (text, start_ms, end_ms, speech_final, from_finalize) = &f[0];
    assert_eq!(text, HELLO);
    assert!(*speech_final && !*from_finalize);
    assert_eq!(*start_ms, 5000);
    // Endpointing 300 ms after the last voiced window.
    assert!(
        near(*end_ms, 5000 + HELLO_VOICE.1 + 300, 40),
        "final ends at {end_ms}"
    );
    let SttEvent::UtteranceEnd { last_word_end_ms } = &events[ue] else {
        unreachable!()
    };
    assert!(
        near(*last_word_end_ms, 5000 + HELLO_VOICE.1, 40),
        "{last_word_end_ms}"
    );

    // What Deepgram saw.
    let conns = fake.connections();
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(c.auth.as_deref(), Some("Token test-key"));
    for (k, v) in [
        ("model", "nova-3"),
        ("language", "en-US"),
        ("encoding", "mulaw"),
        ("sample_rate", "8000"),
        ("channels", "1"),
        ("interim_results", "true"),
        ("endpointing", "300"),
        ("utterance_end_ms", "1000"),
        ("vad_events", "true"),
        ("smart_format", "true"),
    ] {
        assert_eq!(c.param(k), Some(v), "{k} in {:?}", c.query);
    }
    assert_eq!(c.params("keyterm"), ["Tuesday", "appointment"]);
    assert_eq!(c.call_id.as_deref(), Some(call.to_string().as_str()));
    assert_eq!(c.audio_bytes, audio.len() as u64);
    assert_eq!(c.audio_frames, c.audio_bytes.div_ceil(160), "20 ms frames");
    assert_eq!(metric(&metrics, "connect"), 1);
    assert_eq!(metric(&metrics, "error"), 0);
    stream.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_holds_the_socket_over_a_gated_gap_and_times_map_across_it() {
    // The fake closes idle sockets after 3 s; the client keeps it alive every second.
    let fake = FakeListen::start(ListenConfig {
        idle_timeout: Duration::from_secs(3),
        ..ListenConfig::default()
    })
    .await
    .expect("start the fake");
    fake.push_script([QUESTION, HELLO]);
    let mut cfg = config(&fake);
    cfg.keepalive_secs = 1;
    cfg.model = "nova-2-phonecall".into();
    cfg.keyterms = vec!["ignored".into()];
    let (stt, metrics) = provider(cfg);
    let mut stream = stt.open(CallId::new(), mulaw_8k());

    let first = mulaw_fixture("caller_question.wav", 500);
    feed(&stream, &first, 160, 0, Duration::from_millis(5)).await;
    let events = events_until(&mut stream, Duration::from_secs(5), is_speech_final).await;
    assert_eq!(finals(&events)[0].0, QUESTION);

    // The caller is silent for a while: the session sends nothing.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let c = &fake.connections()[0];
    assert!(c.keepalives >= 3, "keepalives: {}", c.keepalives);
    assert_eq!(c.server_close, None, "the socket timed out");
    assert!(c.params("keyterm").is_empty(), "keyterm is Nova-3 only");

    // The second utterance starts at call time 20 s.
    let second = mulaw_fixture("caller_hello.wav", 500);
    feed(&stream, &second, 160, 20_000, Duration::from_millis(5)).await;
    let events = events_until(&mut stream, Duration::from_secs(5), is_speech_final).await;
    let started: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            SttEvent::SpeechStarted { at_ms } => Some(*at_ms),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "{events:?}");
    assert!(near(started[0], 20_000 + HELLO_VOICE.0, 40), "{started:?}");
    let f = finals(&events);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, HELLO);
    assert!(near(f[0].2, 20_000 + HELLO_VOICE.1 + 300, 40), "{f:?}");
    assert_eq!(fake.connections().len(), 1, "no reconnect was needed");
    assert_eq!(metric(&metrics, "reconnect"), 0);
    stream.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_flushes_the_open_segment_and_then_gives_an_empty_final() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    fake.push_script([QUESTION]);
    let (stt, _metrics) = provider(config(&fake));
    let mut stream = stt.open(CallId::new(), mulaw_8k());
    // Up to the end of the voice only: Deepgram's endpointing never sees the silence.
    let audio = mulaw(&wav("caller_question.wav")[..(QUESTION_VOICE.1 as usize * 8)]);
    feed(&stream, &audio, 160, 1000, Duration::from_millis(5)).await;
    assert!(
        fake.wait_for(Duration::from_secs(3), |c| c
            .first()
            .is_some_and(|c| c.audio_bytes == audio.len() as u64))
            .await
    );
    assert!(stream.finalize());
    let events = events_until(&mut stream, Duration::from_secs(3), |e| {
        matches!(e, SttEvent::Final { .. })
    })
    .await;
    let f = finals(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert_eq!(f[0].0, QUESTION);
    assert!(f[0].4 && !f[0].3, "from_finalize, not speech_final: {f:?}");
    assert_eq!(f[0].1, 1000);
    assert!(near(f[0].2, 1000 + QUESTION_VOICE.1, 40), "{f:?}");

    assert!(stream.finalize());
    let events = events_until(&mut stream, Duration::from_secs(3), |e| {
        matches!(e, SttEvent::Final { .. })
    })
    .await;
    let f = finals(&events);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, "");
    assert!(f[0].4);
    assert_eq!(fake.connections()[0].finalizes, 2);
    stream.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_closestream_flushes_and_the_task_ends() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    fake.push_script([HELLO]);
    let (stt, _metrics) = provider(config(&fake));
    let mut stream = stt.open(CallId::new(), mulaw_8k());
    let audio = mulaw(&wav("caller_hello.wav")[..16_000]);
    feed(&stream, &audio, 160, 0, Duration::ZERO).await;
    stream.close();
    let events = events_until_the_end(&mut stream).await;
    assert!(stream.recv().await.is_none());
    let f = finals(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert_eq!(f[0].0, HELLO);
    assert!(fake.wait_for(Duration::from_secs(2), |c| c[0].ended).await);
    let c = &fake.connections()[0];
    assert_eq!(c.close_streams, 1);
    assert_eq!(
        c.audio_bytes,
        audio.len() as u64,
        "all audio sent before CloseStream"
    );
    assert_eq!(c.server_close, Some((1000, String::new())));
    assert_eq!(c.sent_of("Metadata").len(), 1);
    assert!(!c.dropped);
}

/// Collects events until the stream ends (the worker finished); panics if it never does.
async fn events_until_the_end(stream: &mut SttStream) -> Vec<SttEvent> {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.recv()).await {
            Ok(Some(e)) => events.push(e),
            Ok(None) => return events,
            Err(_) => panic!("the stream never ended; events so far: {events:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_before_the_connection_opens_still_transcribes_the_audio() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    fake.push_script([HELLO]);
    // Two refusals keep the stream unconnected for the backoff (100 ms, then 200 ms) while
    // the whole utterance and the close arrive, as on a call that hangs up at once.
    fake.refuse_next_n(503, 2);
    let (stt, _metrics) = provider(config(&fake));
    let mut stream = stt.open(CallId::new(), mulaw_8k());
    let audio = mulaw(&wav("caller_hello.wav")[..16_000]);
    feed(&stream, &audio, 160, 0, Duration::ZERO).await;
    stream.close();
    let events = events_until_the_end(&mut stream).await;
    let f = finals(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert_eq!(f[0].0, HELLO);
    assert_eq!(fake.rejections().len(), 2);
    assert!(
        fake.wait_for(Duration::from_secs(5), |c| c.len() == 1 && c[0].ended)
            .await
    );
    let c = &fake.connections()[0];
    assert_eq!(
        c.audio_bytes,
        audio.len() as u64,
        "the buffered audio was replayed"
    );
    assert_eq!(c.close_streams, 1);
    assert_eq!(c.server_close, Some((1000, String::new())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_with_nothing_buffered_does_not_connect() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    fake.refuse_next_n(503, 2);
    let (stt, _metrics) = provider(config(&fake));
    let mut stream = stt.open(CallId::new(), mulaw_8k());
    stream.close();
    let events = events_until_the_end(&mut stream).await;
    assert!(events.is_empty(), "{events:?}");
    assert!(fake.connections().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_ends_the_task_and_the_socket() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let (stt, _metrics) = provider(config(&fake));
    let stream = stt.open(CallId::new(), mulaw_8k());
    feed(
        &stream,
        &mulaw_fixture("silence_2s.wav", 0)[..1600],
        160,
        0,
        Duration::ZERO,
    )
    .await;
    assert!(
        fake.wait_for(Duration::from_secs(3), |c| c.len() == 1
            && c[0].audio_bytes == 1600)
            .await
    );
    drop(stream);
    assert!(
        fake.wait_for(Duration::from_secs(3), |c| c[0].ended
            && c[0].closed_by_client)
            .await,
        "{:?}",
        fake.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_utterance_reconnects_replays_and_loses_no_words() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    fake.push_script([HELLO]);
    fake.drop_after_audio_ms(1500);
    let (stt, metrics) = provider(config(&fake));
    let call = CallId::new();
    let mut stream = stt.open(call, mulaw_8k());
    let audio = mulaw_fixture("caller_hello.wav", 600);
    let end = feed(&stream, &audio, 160, 0, Duration::from_millis(5)).await;
    let events = events_until(&mut stream, Duration::from_secs(6), is_speech_final).await;

    let reconnected: Vec<(u32, u64)> = events
        .iter()
        .filter_map(|e| match e {
            SttEvent::Reconnected {
                attempts,
                replayed_ms,
            } => Some((*attempts, *replayed_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(reconnected.len(), 1, "{events:?}");
    assert_eq!(reconnected[0].0, 1);
    // Nothing was final before the drop: everything sent so far is replayed.
    assert!(
        reconnected[0].1 >= 1500 && reconnected[0].1 <= end,
        "{reconnected:?}"
    );
    let f = finals(&events);
    assert_eq!(f.len(), 1, "the utterance arrives exactly once: {events:?}");
    assert_eq!(f[0].0, HELLO, "no words lost");
    assert_eq!(f[0].1, 0);
    assert!(near(f[0].2, HELLO_VOICE.1 + 300, 40), "{f:?}");
    assert!(!events.iter().any(|e| matches!(e, SttEvent::Failed { .. })));

    let conns = fake.connections();
    assert_eq!(conns.len(), 2);
    assert!(conns[0].dropped);
    assert!(conns[0].finals().is_empty());
    assert_eq!(conns[1].call_id, conns[0].call_id);
    assert_eq!(conns[1].call_id.as_deref(), Some(call.to_string().as_str()));
    // The new connection heard the whole utterance from its start.
    assert!(
        conns[1].audio_ms + 40 >= HELLO_VOICE.1 + 300,
        "{}",
        conns[1].audio_ms
    );
    assert_eq!(metric(&metrics, "reconnect"), 1);
    assert!(metric(&metrics, "error") >= 1);
    stream.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_after_a_final_replays_only_the_unfinalized_audio() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    fake.push_script([HELLO, QUESTION]);
    let (stt, _metrics) = provider(config(&fake));
    let mut stream = stt.open(CallId::new(), mulaw_8k());
    let first = mulaw_fixture("caller_hello.wav", 500);
    let at = feed(&stream, &first, 160, 0, Duration::from_millis(5)).await;
    let mut events = events_until(&mut stream, Duration::from_secs(5), is_speech_final).await;
    // Cut the connection 1 s into the second utterance.
    let first_ms = first.len() as u64 / 8;
    fake.drop_after_audio_ms(first_ms + 1000);
    let second = mulaw_fixture("caller_question.wav", 500);
    feed(&stream, &second, 160, at + 3000, Duration::from_millis(5)).await;
    events.extend(events_until(&mut stream, Duration::from_secs(6), is_speech_final).await);

    let texts: Vec<String> = finals(&events).into_iter().map(|f| f.0).collect();
    assert_eq!(texts, [HELLO, QUESTION], "{events:?}");
    let replayed: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            SttEvent::Reconnected { replayed_ms, .. } => Some(*replayed_ms),
            _ => None,
        })
        .collect();
    assert_eq!(replayed.len(), 1, "{events:?}");
    // Only the audio after the first final (its trailing silence and the second utterance
    // so far) is replayed, not the first utterance.
    assert!(
        replayed[0] >= 1000 && replayed[0] < 1000 + 500,
        "{replayed:?}"
    );
    let conns = fake.connections();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[1].finals().len(), 1);
    let q = finals(&events)[1].clone();
    assert!(near(q.2, at + 3000 + QUESTION_VOICE.1 + 300, 40), "{q:?}");
    stream.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reconnects_are_retried_with_backoff_then_given_up() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let mut cfg = config(&fake);
    cfg.max_reconnects = 3;
    let (stt, metrics) = provider(cfg);

    // Two refusals, then success: Reconnected after 3 attempts.
    let mut stream = stt.open(CallId::new(), mulaw_8k());
    let silence = vec![0xFFu8; 8000];
    feed(&stream, &silence[..1600], 160, 0, Duration::ZERO).await;
    assert!(
        fake.wait_for(Duration::from_secs(3), |c| c.len() == 1)
            .await
    );
    // A connection that drops within a second of opening, having said nothing, counts as a
    // failed attempt; let this one live longer.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fake.refuse_next_n(503, 2);
    fake.drop_after_audio_ms(300);
    feed(
        &stream,
        &silence[1600..4000],
        160,
        200,
        Duration::from_millis(5),
    )
    .await;
    let events = events_until(&mut stream, Duration::from_secs(5), |e| {
        matches!(e, SttEvent::Reconnected { .. })
    })
    .await;
    assert!(
        matches!(
            events.last(),
            Some(SttEvent::Reconnected { attempts: 3, .. })
        ),
        "{events:?}"
    );
    assert_eq!(fake.rejections().len(), 2);
    stream.close();

    // Refused for good: Failed once after max_reconnects attempts.
    let mut stream = stt.open(CallId::new(), mulaw_8k());
    feed(&stream, &silence[..1600], 160, 0, Duration::ZERO).await;
    assert!(
        fake.wait_for(Duration::from_secs(3), |c| c.len() == 3)
            .await
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fake.refuse_next_n(503, 10);
    fake.drop_after_audio_ms(300);
    feed(
        &stream,
        &silence[1600..4000],
        160,
        200,
        Duration::from_millis(5),
    )
    .await;
    let events = events_until(&mut stream, Duration::from_secs(5), |e| {
        matches!(e, SttEvent::Failed { .. })
    })
    .await;
    let Some(SttEvent::Failed { error }) = events.last() else {
        panic!("no Failed: {events:?}");
    };
    assert!(error.contains("503"), "{error}");
    assert_eq!(fake.rejections().len(), 2 + 3);
    assert_eq!(metric(&metrics, "failed"), 1);
    // The task keeps taking input after giving up, and ends on Close.
    pushes_keep_being_accepted(&stream, 1000).await;
    stream.close();
    let rest = events_until(&mut stream, Duration::from_secs(3), |_| false).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_fails_fast_without_retrying_and_check_credentials_says_rejected() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let mut cfg = config(&fake);
    cfg.api_key = "wrong-key".into();
    let (stt, metrics) = provider(cfg);
    let mut stream = stt.open(CallId::new(), mulaw_8k());
    let events = events_until(&mut stream, Duration::from_secs(5), |e| {
        matches!(e, SttEvent::Failed { .. })
    })
    .await;
    assert!(
        matches!(&events[..], [SttEvent::Failed { error }] if error.contains("401") && error.contains("INVALID_AUTH")),
        "{events:?}"
    );
    let rejections = fake.rejections();
    assert_eq!(rejections.len(), 1, "no retry on 401");
    assert_eq!(rejections[0].status, 401);
    assert!(fake.connections().is_empty());
    assert_eq!(metric(&metrics, "failed"), 1);
    // Input is still accepted (and dropped) so the session never sees a full queue.
    pushes_keep_being_accepted(&stream, 1000).await;

    match stt.check_credentials().await {
        Err(CredentialError::Rejected { status, message }) => {
            assert_eq!(status, 401);
            assert!(message.contains("Invalid credentials"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(
        fake.credential_checks(),
        [Some("Token wrong-key".to_string())]
    );
    let (good, _) = provider(config(&fake));
    good.check_credentials().await.expect("good key accepted");

    // Nothing listening: unreachable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut cfg = config(&fake);
    cfg.base_url = format!("http://127.0.0.1:{port}");
    let (gone, _) = provider(cfg);
    assert!(matches!(
        gone.check_credentials().await,
        Err(CredentialError::Unreachable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_linear16_16k_stream_is_transcribed() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    fake.push_script([QUESTION]);
    let (stt, _metrics) = provider(config(&fake));
    let format = SttAudioFormat {
        encoding: SttEncoding::Linear16,
        sample_rate: 16_000,
    };
    let mut stream = stt.open(CallId::new(), format);
    let mut pcm = wav("caller_question.wav");
    pcm.extend(std::iter::repeat_n(0i16, 4000));
    let mut resampler = voicegw::audio::resample::Resampler::new(8000, 16_000).expect("resampler");
    let mut up = Vec::new();
    for chunk in pcm.chunks(160) {
        resampler.process(chunk, &mut up);
    }
    resampler.flush(&mut up);
    let mut bytes = Vec::new();
    Encoding::Linear16.encode_into(&up, &mut bytes);
    // 20 ms at 16 kHz = 640 bytes.
    feed(&stream, &bytes, 640, 0, Duration::from_millis(5)).await;
    let events = events_until(&mut stream, Duration::from_secs(5), is_speech_final).await;
    let f = finals(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert_eq!(f[0].0, QUESTION);
    let delay = u64::try_from(resampler.delay_samples()).expect("delay") / 16;
    assert!(near(f[0].2, QUESTION_VOICE.1 + delay + 300, 60), "{f:?}");
    let all = bytes.len() as u64;
    assert!(
        fake.wait_for(Duration::from_secs(3), |c| c[0].audio_bytes == all)
            .await
    );
    let c = &fake.connections()[0];
    assert_eq!(c.param("encoding"), Some("linear16"));
    assert_eq!(c.param("sample_rate"), Some("16000"));
    stream.close();
}

/// A raw upgrade to the fake; `Err((status, body, dg-error))` when refused.
async fn raw_connect(
    fake: &FakeListen,
    query: &str,
    key: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    (u16, serde_json::Value, Option<String>),
> {
    let mut request = format!("{}?{query}", fake.listen_url())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Token {key}").parse().expect("header"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            assert!(response.headers().contains_key("dg-request-id"));
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(serde_json::Value::Null);
            let dg_error = response
                .headers()
                .get("dg-error")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            assert!(response.headers().contains_key("dg-request-id"));
            Err((response.status().as_u16(), body, dg_error))
        }
        Err(e) => panic!("connect: {e}"),
    }
}

const GOOD: &str = "model=nova-3&encoding=mulaw&sample_rate=8000&channels=1&interim_results=true&utterance_end_ms=1000&endpointing=300";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_like_deepgram() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let cases = [
        (
            format!("{GOOD}&foo=bar"),
            "test-key",
            400,
            "INVALID_QUERY_PARAMETER",
            "foo",
        ),
        (
            GOOD.to_string(),
            "bad",
            401,
            "INVALID_AUTH",
            "Invalid credentials",
        ),
        (
            GOOD.replace("mulaw", "opus"),
            "test-key",
            400,
            "INVALID_QUERY_PARAMETER",
            "opus",
        ),
        (
            GOOD.replace("&sample_rate=8000", ""),
            "test-key",
            400,
            "INVALID_QUERY_PARAMETER",
            "sample_rate",
        ),
        (
            GOOD.replace("utterance_end_ms=1000", "utterance_end_ms=500"),
            "test-key",
            400,
            "INVALID_QUERY_PARAMETER",
            "utterance_end_ms",
        ),
        (
            GOOD.replace("interim_results=true", "interim_results=false"),
            "test-key",
            400,
            "INVALID_QUERY_PARAMETER",
            "interim_results",
        ),
        (
            GOOD.replace("endpointing=300", "endpointing=soon"),
            "test-key",
            400,
            "INVALID_QUERY_PARAMETER",
            "endpointing",
        ),
        (
            GOOD.replace("nova-3", "nova-2") + "&keyterm=Acme",
            "test-key",
            400,
            "INVALID_QUERY_PARAMETER",
            "keyterm",
        ),
    ];
    for (query, key, status, code, mentions) in cases {
        let Err((got, body, dg_error)) = raw_connect(&fake, &query, key).await else {
            panic!("{query} with {key} was accepted");
        };
        assert_eq!(got, status, "{query}");
        assert_eq!(body["err_code"], code, "{query}: {body}");
        let msg = body["err_msg"].as_str().unwrap_or_default();
        assert!(msg.contains(mentions), "{query}: {msg}");
        assert!(body["request_id"].is_string());
        assert_eq!(dg_error.as_deref(), Some(msg));
    }
    assert_eq!(fake.rejections().len(), 8);
    assert!(fake.connections().is_empty());
    // The good query is accepted; `endpointing=false` is too.
    assert!(raw_connect(&fake, GOOD, "test-key").await.is_ok());
    assert!(
        raw_connect(
            &fake,
            &GOOD.replace("endpointing=300", "endpointing=false"),
            "test-key"
        )
        .await
        .is_ok()
    );
}

async fn close_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<(u16, String)> {
    let until = Instant::now() + Duration::from_secs(5);
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, ws.next()).await {
        if let Ok(Message::Close(frame)) = msg {
            return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_closes_on_empty_frames_idle_sockets_and_unknown_messages() {
    let fake = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let mut ws = raw_connect(&fake, GOOD, "test-key")
        .await
        .expect("accepted");
    ws.send(Message::Binary(vec![0xFFu8; 160].into()))
        .await
        .expect("send");
    ws.send(Message::Binary(Vec::new().into()))
        .await
        .expect("send");
    assert_eq!(close_frame(&mut ws).await, Some((1002, "DATA-0000".into())));

    fake.set_idle_timeout(Duration::from_millis(300));
    let mut ws = raw_connect(&fake, GOOD, "test-key")
        .await
        .expect("accepted");
    assert_eq!(close_frame(&mut ws).await, Some((1011, "NET-0001".into())));

    fake.set_idle_timeout(Duration::from_secs(10));
    let mut ws = raw_connect(&fake, GOOD, "test-key")
        .await
        .expect("accepted");
    ws.send(Message::Text(r#"{"type":"Flush"}"#.into()))
        .await
        .expect("send");
    let first = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
    let Ok(Some(Ok(Message::Text(text)))) = first else {
        panic!("no error frame: {first:?}");
    };
    assert!(text.contains("\"Error\""), "{text}");
    assert_eq!(
        close_frame(&mut ws).await,
        Some((1008, "INVALID-MESSAGE".into()))
    );
    let conns = fake.connections();
    assert_eq!(conns[0].server_close, Some((1002, "DATA-0000".into())));
    assert_eq!(conns[1].server_close, Some((1011, "NET-0001".into())));
}
