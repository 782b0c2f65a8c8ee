//! The prompt cache end to end: `prime` against the local Deepgram Aura fake (files, manifest,
//! re-prime, changed prompts, failures), a script's prompt source (cache hits, synthesis,
//! de-duplication), call preparation, the recorded prompts of the offline default, and the
//! `voicegw script prime` command.

mod common;
mod fakes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{CarrierSim, SimConfig, TestGateway, test_config};
use fakes::deepgram_speak::{FakeDeepgramSpeak, FakeSpeakConfig};
use fakes::speech;
use voicegw::audio::Encoding;
use voicegw::metrics::Metrics;
use voicegw::script::cache::{PrimeOutcome, PromptCache};
use voicegw::script::fixture_voice::{DEMO_VARIABLES, FixtureVoice, read_index};
use voicegw::script::loader::read_script;
use voicegw::script::prepare::{PrepareError, prepare, render_spoken};
use voicegw::script::prompts::{PromptError, PromptSource};
use voicegw::script::source::ScriptPrompts;
use voicegw::script::spoken::distinct_texts;
use voicegw::script::{Flow, parse, script_hash};
use voicegw::tts::TtsProvider;
use voicegw::tts::deepgram::{DeepgramTts, DeepgramTtsConfig};

const VOICE: &str = "deepgram/aura-2-thalia-en";

const SCRIPT: &str = r#"@voice aura-2-thalia-en
[start]
Hi {{ firstName | there }}, this is {{ tenantName }}.
reprompt: Press 1 to confirm or 2 to cancel.
-> 1: confirmed
-> 2: cancelled
-> nomatch: cancelled

[confirmed]
You're all set. Goodbye!
-> END

[cancelled]
Your appointment is cancelled. Goodbye!
-> END
"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn flow(source: &str) -> Flow {
    parse(source).unwrap().flow
}

fn deepgram(fake: &FakeDeepgramSpeak, key: &str) -> DeepgramTts {
    let config = DeepgramTtsConfig {
        base_url: fake.base_url(),
        api_key: key.to_owned(),
        model: "aura-2-thalia-en".to_owned(),
        ..DeepgramTtsConfig::default()
    };
    DeepgramTts::new(config, Metrics::new().unwrap()).unwrap()
}

/// The fake's audio for `text` as the cache stores it (μ-law) and decodes it.
fn cached_pcm(text: &str) -> Vec<i16> {
    let mut pcm = Vec::new();
    Encoding::Mulaw.decode_into(&speech::synthesize_mulaw(text, 8000), &mut pcm);
    pcm
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn prime_writes_every_static_prompt_and_a_manifest_then_skips_them() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let tts = deepgram(&fake, "test-key");
    let dir = tempfile::tempdir().unwrap();
    let cache = PromptCache::new(dir.path());
    let flow = flow(SCRIPT);
    let hash = script_hash(&flow);

    let report = cache.prime(&flow, &hash, &tts, VOICE).await.unwrap();
    let texts = [
        "Sorry, I couldn't understand. Goodbye.",
        "Press 1 to confirm or 2 to cancel.",
        "You're all set. Goodbye!",
        "Your appointment is cancelled. Goodbye!",
    ];
    let primed: Vec<&str> = report.prompts.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(primed, texts, "static prompts only, in flow order");
    assert_eq!(report.synthesized(), 4);
    let mut spoken = fake.spoken_texts();
    spoken.sort();
    let mut expected: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(
        spoken, expected,
        "the prompt with a variable is not synthesized"
    );

    for text in texts {
        let path = cache.clip_path(VOICE, text);
        let bytes = std::fs::read(&path).unwrap();
        let expected = cached_pcm(text);
        assert_eq!(
            bytes.len(),
            expected.len(),
            "one μ-law byte per sample: {text}"
        );
        let clip = cache.read_clip(VOICE, text).unwrap().unwrap();
        assert!(clip[..] == expected[..], "the fake's audio: {text}");
    }
    assert_eq!(
        files_in(&dir.path().join("audio")).len(),
        4,
        "no temporary files"
    );

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cache.manifest_path(&hash)).unwrap())
            .unwrap();
    assert_eq!(manifest["script"], hash.as_str());
    assert_eq!(manifest["voice"], VOICE);
    assert_eq!(
        manifest["nodes"]["start"],
        serde_json::json!([{
            "kind": "reprompt",
            "text": "Press 1 to confirm or 2 to cancel.",
            "file": PromptCache::clip_file(VOICE, "Press 1 to confirm or 2 to cancel."),
        }])
    );
    assert_eq!(manifest["nodes"]["confirmed"][0]["kind"], "prompt");
    assert_eq!(manifest["flow"][0]["kind"], "goodbye");
    for node in ["start", "confirmed", "cancelled"] {
        for entry in manifest["nodes"][node].as_array().unwrap() {
            assert!(dir.path().join(entry["file"].as_str().unwrap()).is_file());
        }
    }

    let again = cache.prime(&flow, &hash, &tts, VOICE).await.unwrap();
    assert_eq!((again.synthesized(), again.cached()), (0, 4));
    assert_eq!(fake.spoken_texts().len(), 4, "nothing synthesized again");
}

#[tokio::test]
async fn a_changed_prompt_is_the_only_one_synthesized_again() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let tts = deepgram(&fake, "test-key");
    let dir = tempfile::tempdir().unwrap();
    let cache = PromptCache::new(dir.path());
    let first = flow(SCRIPT);
    cache
        .prime(&first, &script_hash(&first), &tts, VOICE)
        .await
        .unwrap();
    assert_eq!(fake.spoken_texts().len(), 4);

    let edited = SCRIPT.replace("You're all set. Goodbye!", "You're all set. See you soon!");
    let second = flow(&edited);
    assert_ne!(script_hash(&first), script_hash(&second));
    let report = cache
        .prime(&second, &script_hash(&second), &tts, VOICE)
        .await
        .unwrap();
    assert_eq!((report.synthesized(), report.cached()), (1, 3));
    assert_eq!(
        fake.spoken_texts()[4..],
        ["You're all set. See you soon!".to_owned()]
    );
    // Both versions' manifests are kept.
    assert!(cache.manifest_path(&script_hash(&first)).is_file());
    assert!(cache.manifest_path(&script_hash(&second)).is_file());

    // A comment or a layout change is the same script: nothing to do.
    let reformatted = format!("// a comment\n{}", edited.replace("\n[", "\n\n\n["));
    let third = flow(&reformatted);
    assert_eq!(script_hash(&third), script_hash(&second));
    let report = cache
        .prime(&third, &script_hash(&third), &tts, VOICE)
        .await
        .unwrap();
    assert_eq!(report.synthesized(), 0);
}

#[tokio::test]
async fn a_failing_synthesizer_is_reported_and_leaves_no_file() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let dir = tempfile::tempdir().unwrap();
    let cache = PromptCache::new(dir.path());
    let flow = flow(SCRIPT);
    let hash = script_hash(&flow);

    // A refused key: every prompt fails, nothing is written.
    let refused = deepgram(&fake, "wrong-key");
    let report = cache.prime(&flow, &hash, &refused, VOICE).await.unwrap();
    assert_eq!((report.synthesized(), report.failed()), (0, 4));
    for prompt in &report.prompts {
        let PrimeOutcome::Failed { error, .. } = &prompt.outcome else {
            panic!("{prompt:?}")
        };
        assert!(error.contains("deepgram"), "{error}");
        assert!(!prompt.file.exists());
    }
    assert!(files_in(&dir.path().join("audio")).is_empty());
    assert!(report.manifest.is_none());
    assert!(!cache.manifest_path(&hash).exists());

    // A socket that drops mid-audio, then a REST fallback that fails: the half-received
    // clip is not written.
    let tts = deepgram(&fake, "test-key");
    fake.drop_ws_mid_audio();
    fake.rest_error_next(500);
    let report = cache.prime(&flow, &hash, &tts, VOICE).await.unwrap();
    assert_eq!(report.failed(), 1, "{report}");
    assert_eq!(report.synthesized(), 3, "{report}");
    let failed = report
        .prompts
        .iter()
        .find(|p| matches!(p.outcome, PrimeOutcome::Failed { .. }))
        .unwrap();
    assert!(!failed.file.exists());
    assert_eq!(files_in(&dir.path().join("audio")).len(), 3);
    assert!(report.manifest.is_none());

    let report = cache.prime(&flow, &hash, &tts, VOICE).await.unwrap();
    assert_eq!((report.synthesized(), report.cached()), (1, 3));
    assert!(report.manifest.is_some());
}

#[tokio::test]
async fn a_scripts_prompt_source_serves_cached_clips_and_synthesizes_once() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let tts: Arc<dyn TtsProvider> = Arc::new(deepgram(&fake, "test-key"));
    let dir = tempfile::tempdir().unwrap();
    let cache = PromptCache::new(dir.path());
    let flow = flow(SCRIPT);
    cache
        .prime(&flow, &script_hash(&flow), tts.as_ref(), VOICE)
        .await
        .unwrap();
    let primed = fake.spoken_texts().len();

    let prompts = ScriptPrompts::new(
        VOICE,
        distinct_texts(&flow),
        Some(tts.clone()),
        Some(cache.clone()),
    );
    assert!(prompts.load_from_disk().unwrap().is_empty());
    let hit = prompts.cached("You're all set. Goodbye!").unwrap();
    assert!(hit[..] == cached_pcm("You're all set. Goodbye!")[..]);
    assert_eq!(
        fake.spoken_texts().len(),
        primed,
        "a hit is not synthesized"
    );
    assert!(prompts.cached("Hi Ana, this is Acme.").is_none());

    // Eight calls ask for the same per-call text at once: one synthesis.
    let asks = (0..8).map(|_| prompts.synthesize("Hi Ana, this is Acme."));
    for clip in futures::future::join_all(asks).await {
        assert!(clip.unwrap()[..] == cached_pcm("Hi Ana, this is Acme.")[..]);
    }
    assert_eq!(fake.spoken_texts().len(), primed + 1);
    assert!(prompts.cached("Hi Ana, this is Acme.").is_some());
    assert!(
        !cache.has_clip(VOICE, "Hi Ana, this is Acme."),
        "per-call texts stay in memory"
    );

    // Without a synthesizer, an unprepared text is an error, not a wait.
    let offline = ScriptPrompts::new(VOICE, distinct_texts(&flow), None, Some(cache));
    offline.load_from_disk().unwrap();
    assert!(offline.cached("You're all set. Goodbye!").is_some());
    assert!(matches!(
        offline.synthesize("Hi Bo, this is Acme.").await,
        Err(PromptError::NotPrepared { .. })
    ));
}

#[tokio::test]
async fn prepare_refuses_missing_variables_and_synthesizes_the_rest_ahead() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let tts: Arc<dyn TtsProvider> = Arc::new(deepgram(&fake, "test-key"));
    let script = read_script(&root().join("scripts/appointment_confirmation.dsc")).unwrap();
    let flow = script.parsed.flow;
    let prompts: Arc<dyn PromptSource> = Arc::new(ScriptPrompts::new(
        VOICE,
        distinct_texts(&flow),
        Some(tts),
        None,
    ));

    let err = prepare(prompts.clone(), &flow, &HashMap::new())
        .await
        .unwrap_err();
    let PrepareError::Missing(missing) = &err else {
        panic!("{err:?}")
    };
    let names: Vec<&str> = missing.missing.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["appointmentDate", "tenantName"]);
    assert!(err.to_string().contains("`tenantName` (needed by"), "{err}");
    assert!(fake.spoken_texts().is_empty(), "nothing synthesized");

    let vars: HashMap<String, String> = [
        ("tenantName", "Acme Dental"),
        ("appointmentDate", "Friday at 9 AM"),
        ("firstName", "Ana"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let prepared = prepare(prompts, &flow, &vars).await.unwrap();
    let first = prepared
        .texts()
        .iter()
        .find(|t| t.starts_with("Hi Ana, this is Destiny calling from Acme Dental."))
        .unwrap();
    assert!(prepared.cached(first).is_some());
    assert_eq!(fake.spoken_texts().len(), prepared.texts().len());
}

/// The recorded prompts are exactly what the appointment script says with the demo
/// variables: every text it needs has a recording, every recording is needed, every WAV loads.
#[test]
fn recorded_prompts_match_the_appointment_script() {
    let script = read_script(&root().join("scripts/appointment_confirmation.dsc")).unwrap();
    let vars: HashMap<String, String> = DEMO_VARIABLES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let needed = render_spoken(&script.parsed.flow, &vars).unwrap();
    let dir = root().join("fixtures/audio/prompts");
    let index = read_index(&dir).unwrap();
    let recorded: Vec<&str> = index.iter().map(|e| e.text.as_str()).collect();
    let unrecorded: Vec<&String> = needed
        .iter()
        .filter(|t| !recorded.contains(&t.as_str()))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "texts with no recording (add them to fixtures/audio/generate.sh): {unrecorded:#?}"
    );
    let unused: Vec<&&str> = recorded
        .iter()
        .filter(|t| !needed.iter().any(|n| n == **t))
        .collect();
    assert!(
        unused.is_empty(),
        "recordings the script no longer says: {unused:#?}"
    );
    let voice = FixtureVoice::load(&dir).unwrap();
    for entry in &index {
        let clip = voice.clip(&entry.text).unwrap();
        assert!(
            clip.len() > 8000,
            "{}: at least a second of audio",
            entry.file
        );
        assert!(
            clip.iter().any(|s| s.unsigned_abs() > 10_000),
            "{}",
            entry.file
        );
    }
    let wavs: Vec<String> = files_in(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".wav"))
        .collect();
    let listed: Vec<String> = {
        let mut l: Vec<String> = index.iter().map(|e| e.file.clone()).collect();
        l.sort();
        l
    };
    assert_eq!(wavs, listed, "every WAV is listed, and only those");
}

#[tokio::test]
async fn priming_the_shipped_scripts_against_the_fake_and_from_recordings() {
    let fake = FakeDeepgramSpeak::start_with(FakeSpeakConfig::default())
        .await
        .expect("start the fake");
    let tts = deepgram(&fake, "test-key");
    let recorded = FixtureVoice::load(&root().join("fixtures/audio/prompts")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = PromptCache::new(dir.path());
    let scripts = voicegw::script::loader::script_files(&root().join("scripts")).unwrap();
    assert!(!scripts.is_empty());
    for path in scripts {
        let script = read_script(&path).unwrap();
        let flow = &script.parsed.flow;
        let report = cache.prime(flow, &script.hash, &tts, VOICE).await.unwrap();
        assert!(report.complete(), "{report}");
        let again = cache.prime(flow, &script.hash, &tts, VOICE).await.unwrap();
        assert_eq!(again.synthesized(), 0);
        eprintln!(
            "{}: {} prompts primed against the fake in {:?} (again: {:?})",
            script.name,
            report.prompts.len(),
            report.elapsed,
            again.elapsed
        );
        if script.name == "appointment_confirmation" {
            let report = cache
                .prime(flow, &script.hash, &recorded, "fixtures")
                .await
                .unwrap();
            assert!(report.complete(), "{report}");
            eprintln!(
                "{}: {} prompts primed from recordings in {:?}",
                script.name,
                report.prompts.len(),
                report.elapsed
            );
        }
    }
}

#[test]
fn the_prime_command_primes_from_recordings_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_voicegw"))
            .current_dir(root())
            .args(["script", "prime"])
            .args(args)
            .env_remove("DEEPGRAM_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ELEVENLABS_API_KEY")
            .env_remove("VOICEGW_CONFIG")
            .output()
            .unwrap()
    };
    let cache_arg = cache.to_str().unwrap();
    let out = run(&[
        "scripts/appointment_confirmation.dsc",
        "--fixtures",
        "--cache-dir",
        cache_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("voice fixtures"), "{stdout}");
    assert!(stdout.contains(" 0 cached, 0 failed"), "{stdout}");
    assert!(stdout.contains("manifest: "), "{stdout}");

    let out = run(&[
        "scripts/appointment_confirmation.dsc",
        "--fixtures",
        "--cache-dir",
        cache_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" 0 synthesized, "), "{stdout}");

    // A script whose prompts have no recording: each is reported, exit code 1.
    let other = dir.path().join("other.dsc");
    std::fs::write(&other, "[start]\nNot recorded.\n-> END\n").unwrap();
    let out = run(&[
        other.to_str().unwrap(),
        "--fixtures",
        "--cache-dir",
        cache_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("failed") && stdout.contains("no recording"),
        "{stdout}"
    );
    assert!(stdout.contains("no manifest written"), "{stdout}");

    // No synthesizer key and no --fixtures; a broken script; a missing file: exit code 2.
    let out = run(&[other.to_str().unwrap(), "--cache-dir", cache_arg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEEPGRAM_API_KEY"));
    let broken = dir.path().join("broken.dsc");
    std::fs::write(&broken, "[start]\nHi.\n-> nowhere\n").unwrap();
    let out = run(&[broken.to_str().unwrap(), "--fixtures"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.dsc:3:4:"), "{stderr}");
    let out = run(&["missing.dsc", "--fixtures"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `pcm` as a Twilio caller hears it (through μ-law), from its first non-zero sample.
fn heard(pcm: &[i16]) -> Vec<i16> {
    let mut ulaw = Vec::new();
    Encoding::Mulaw.encode_into(pcm, &mut ulaw);
    let mut out = Vec::new();
    Encoding::Mulaw.decode_into(&ulaw, &mut out);
    let first = out.iter().position(|&s| s != 0).unwrap_or(out.len());
    out.split_off(first)
}

#[tokio::test]
async fn with_no_keys_the_shipped_appointment_script_plays_its_recordings_and_follows_keys() {
    // The shipped scripts folder, no provider keys, no agent chosen: the offline default.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.agent = None;
    config.script.dir = root().join("scripts");
    config.script.default = None;
    config.script.recorded_prompts = root().join("fixtures/audio/prompts");
    config.script.cache_dir = dir.path().join("cache");
    assert!(!config.llm_configured());
    let mut gw = TestGateway::start(config).await;
    assert_eq!(
        gw.gateway.default_agent(),
        "script:appointment_confirmation"
    );
    let recorded = FixtureVoice::load(&root().join("fixtures/audio/prompts")).unwrap();
    let opening = recorded
        .clip("Hi there, this is Destiny calling from Acme Dental. Are you still able to make your appointment on Tuesday at 3 PM? Press 1 or say yes to confirm, press 2 or say no to reschedule.")
        .unwrap();

    let mut sim = CarrierSim::connect(&gw, SimConfig::twilio()).await;
    let spoke = sim
        .run_until(5_000, |s| {
            s.played.iter().filter(|&&x| x != 0).count() > 8_000
        })
        .await;
    assert!(spoke, "the opening prompt plays");
    let first_audio = sim.first_media_ms().unwrap();
    assert!(first_audio < 500, "first audio after {first_audio} ms");
    let played = heard(&sim.played);
    let expected = heard(&opening);
    assert!(
        played[..4_000] == expected[..4_000],
        "the caller hears the recording"
    );

    sim.press('1').await;
    let mut waited = 0;
    while waited < 3_000
        && !gw
            .events_of("script_prompt")
            .iter()
            .any(|e| e["node"] == "confirmed")
    {
        sim.run_for(100).await;
        waited += 100;
    }
    let nodes: Vec<String> = gw
        .events_of("script_node_entered")
        .iter()
        .map(|e| e["node"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(nodes, ["start", "confirmed"]);
    let prompts = gw.events_of("script_prompt");
    assert!(
        prompts
            .iter()
            .any(|e| e["node"] == "confirmed" && e["cached"] == true),
        "{prompts:?}"
    );

    // "Would you like a text?" — 1: the text is asked for (no carrier account here, so it is
    // recorded as not sent) and the call ends after the goodbye.
    sim.press('1').await;
    sim.run_until(15_000, |s| s.closed).await;
    if !sim.closed {
        sim.wait_close(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        sim.close,
        Some((
            1000,
            "agent hangup: script ended at [send_confirmation]".into()
        ))
    );
    let nodes: Vec<String> = gw
        .events_of("script_node_entered")
        .iter()
        .map(|e| e["node"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(nodes, ["start", "confirmed", "send_confirmation"]);
    let sms = gw.events_of("sms_failed");
    assert_eq!(sms.len(), 1, "{:?}", gw.events_of("sms_sent"));
}

#[tokio::test]
async fn missing_prompts_are_synthesized_in_the_background_at_start_up() {
    let fake = FakeDeepgramSpeak::start().await.expect("start the fake");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeting.dsc"), SCRIPT).unwrap();
    let mut config = test_config();
    config.script.dir = dir.path().to_path_buf();
    config.script.cache_dir = dir.path().join("cache");
    config.tts.deepgram.api_key = "test-key".into();
    config.tts.deepgram.base_url = fake.base_url();
    let cache = PromptCache::new(dir.path().join("cache"));
    // One prompt is cached already: it is loaded, not synthesized again.
    cache
        .write_clip(
            VOICE,
            "You're all set. Goodbye!",
            &cached_pcm("You're all set. Goodbye!"),
        )
        .unwrap();
    let _gw = TestGateway::start(config).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.spoken_texts().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut spoken = fake.spoken_texts();
    spoken.sort();
    assert_eq!(
        spoken,
        [
            "Press 1 to confirm or 2 to cancel.",
            "Sorry, I couldn't understand. Goodbye.",
            "Your appointment is cancelled. Goodbye!",
        ]
    );
    let flow = flow(SCRIPT);
    let written = |cache: &PromptCache| {
        distinct_texts(&flow)
            .iter()
            .all(|t| cache.has_clip(VOICE, t))
    };
    while !written(&cache) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written(&cache), "every static prompt is now in the cache");
}
