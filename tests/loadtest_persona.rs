//! Personas against the provider fakes in this process: profile files, the persona's session
//! (bot audio heard through the recognizer fake, replies written by the chat fake and spoken
//! by the synthesizer fake), hang-ups and transcripts.

mod fakes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fakes::deepgram_listen::{FakeListen, ListenConfig};
use fakes::deepgram_speak::FakeDeepgramSpeak;
use fakes::openai_chat::{ChatFake, ChatFakeConfig, Fault, Reply, Rule};
use voicegw::config::Config;
use voicegw::loadtest::persona::{
    self, AgentProfile, CustomerProfile, DEFAULT_PROMPT, PersonaDeps, PersonaError, PersonaHandle,
    PersonaInput, PersonaOutput, PersonaPair, PersonaSettings, Speaker, Transcript,
};

/// What the recognizer fake hears in the bot's first and second utterance.
const BOT_FIRST: &str = "Thanks for calling Acme, how can I help you today?";
const BOT_SECOND: &str = "I have refunded the duplicate charge to your card.";
/// What the chat fake answers to each.
const REPLY_FIRST: &str = "I was charged twice for my last order.";
const REPLY_SECOND: &str = "Great, thank you so much.";

/// Longest any single wait in these tests.
const WAIT: Duration = Duration::from_secs(15);

struct Stack {
    /// Kept running for the test.
    _listen: FakeListen,
    speak: FakeDeepgramSpeak,
    chat: ChatFake,
    deps: Arc<PersonaDeps>,
    dir: tempfile::TempDir,
}

fn rule(contains: &str, reply: &str) -> Rule {
    Rule {
        user_contains: contains.to_owned(),
        reply: Reply::Text(reply.to_owned()),
    }
}

async fn stack() -> Stack {
    let listen = FakeListen::start(ListenConfig {
        default_script: vec![BOT_FIRST.to_owned(), BOT_SECOND.to_owned()],
        ..ListenConfig::default()
    })
    .await
    .expect("start the fake");
    let speak = FakeDeepgramSpeak::start().await.expect("start the fake");
    let chat = ChatFake::start(ChatFakeConfig {
        rules: vec![
            rule("how can I help", REPLY_FIRST),
            rule("refunded", &format!("{REPLY_SECOND} GOODBYE")),
        ],
        ..ChatFakeConfig::default()
    })
    .await
    .expect("start the fake");
    let mut config = Config::default();
    fakes::use_fakes(&mut config, &listen, &speak, &chat);
    // The fixture's pauses between sentences stay inside one recognized segment.
    config.stt.deepgram.endpointing_ms = 2000;
    let dir = tempfile::tempdir().expect("temp dir");
    let deps = PersonaDeps::from_config(&config, Some(dir.path().join("transcripts")))
        .expect("persona providers");
    Stack {
        _listen: listen,
        speak,
        chat,
        deps: Arc::new(deps),
        dir,
    }
}

fn pair(patience_s: f64) -> PersonaPair {
    PersonaPair {
        customer: CustomerProfile {
            name: "Ana Lopez".to_owned(),
            issue: "a double charge on her card".to_owned(),
            complexity: 3,
            mood: "annoyed".to_owned(),
            patience_s,
        },
        agent: AgentProfile {
            name: "Sam".to_owned(),
            skill: 3,
            style: "brief".to_owned(),
            parameters: Default::default(),
        },
    }
}

/// The bot's speech: a fixture recording, 8 kHz.
fn bot_prompt() -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audio/bot_prompt.wav");
    let mut reader = hound::WavReader::open(&path).expect("bot_prompt.wav");
    assert_eq!(reader.spec().sample_rate, 8000);
    reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect()
}

/// Plays the bot's speech to the persona in 20 ms pieces, then 300 ms of silence, then says
/// the bot is quiet.
async fn bot_says(handle: &PersonaHandle) {
    let mut audio = bot_prompt();
    audio.extend(std::iter::repeat_n(0, 2400));
    for piece in audio.chunks(160) {
        handle
            .input
            .send(PersonaInput::BotAudio(piece.to_vec()))
            .await
            .expect("persona input");
    }
    handle
        .input
        .send(PersonaInput::BotQuiet)
        .await
        .expect("persona input");
}

async fn next_output(handle: &mut PersonaHandle) -> PersonaOutput {
    tokio::time::timeout(WAIT, handle.output.recv())
        .await
        .expect("persona output in time")
        .expect("persona output open")
}

fn said(output: PersonaOutput) -> (String, Arc<voicegw::loadtest::clip::Clip>) {
    match output {
        PersonaOutput::Say { text, clip } => (text, clip),
        other => panic!("expected Say, got {other:?}"),
    }
}

fn hang_up_reason(output: PersonaOutput) -> String {
    match output {
        PersonaOutput::HangUp { reason } => reason,
        other => panic!("expected HangUp, got {other:?}"),
    }
}

async fn end(handle: PersonaHandle) -> Transcript {
    // The caller may have hung up already and dropped nothing yet: tell it the call ended.
    let _ = handle.input.send(PersonaInput::CallEnded).await;
    tokio::time::timeout(WAIT, handle.task)
        .await
        .expect("persona ends in time")
        .expect("persona task")
}

/// (role, content) of each message of chat request `n`.
fn messages(chat: &ChatFake, n: usize) -> Vec<(String, String)> {
    let requests = chat.requests();
    requests[n]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_talks_in_character_and_hangs_up_after_goodbye() {
    let stack = stack().await;
    let mut handle = persona::spawn(stack.deps.clone(), pair(60.0), 42);
    let system = persona::render_prompt(DEFAULT_PROMPT, &pair(60.0).customer);
    assert!(system.starts_with(
        "You are Ana Lopez, calling about a double charge on her card. You feel annoyed."
    ));

    bot_says(&handle).await;
    let (text, clip) = said(next_output(&mut handle).await);
    assert_eq!(text, REPLY_FIRST);
    assert_eq!(clip.name, "persona");
    assert!(clip.onset_frame <= clip.end_frame);
    assert!(clip.end_frame < clip.pcm.len() / 160);
    assert_eq!(clip.pcm.len() % 160, 0);
    assert_eq!(
        messages(&stack.chat, 0),
        pairs(&[("system", &system), ("user", BOT_FIRST)])
    );

    bot_says(&handle).await;
    let (text, _) = said(next_output(&mut handle).await);
    assert_eq!(text, REPLY_SECOND, "the end marker is not spoken");
    assert_eq!(
        hang_up_reason(next_output(&mut handle).await),
        "goal reached"
    );
    assert_eq!(
        messages(&stack.chat, 1),
        pairs(&[
            ("system", &system),
            ("user", BOT_FIRST),
            ("assistant", REPLY_FIRST),
            ("user", BOT_SECOND),
        ])
    );
    assert_eq!(stack.speak.spoken_texts(), vec![REPLY_FIRST, REPLY_SECOND]);
    assert_eq!(stack.chat.request_count(), 2);

    let transcript = end(handle).await;
    assert_eq!(transcript.call, 42);
    assert_eq!(transcript.pair, pair(60.0));
    assert_eq!(transcript.ended, "goal reached");
    let spoken: Vec<(Speaker, &str)> = transcript
        .lines
        .iter()
        .map(|l| (l.speaker, l.text.as_str()))
        .collect();
    assert_eq!(
        spoken,
        vec![
            (Speaker::Bot, BOT_FIRST),
            (Speaker::Caller, REPLY_FIRST),
            (Speaker::Bot, BOT_SECOND),
            (Speaker::Caller, REPLY_SECOND),
        ]
    );
    assert!(transcript.lines.windows(2).all(|w| w[0].at_s <= w[1].at_s));

    // Both files, the same transcript.
    let dir = stack.dir.path().join("transcripts");
    let json = std::fs::read_to_string(dir.join("call-00042.json")).expect("JSON transcript");
    let back: Transcript = serde_json::from_str(&json).expect("transcript JSON");
    assert_eq!(back, transcript);
    let text = std::fs::read_to_string(dir.join("call-00042.txt")).expect("text transcript");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(
        lines[0],
        "call 42: Ana Lopez (a double charge on her card, annoyed) with agent Sam (skill 3, brief)"
    );
    let tails: Vec<&str> = lines[1..5]
        .iter()
        .map(|l| l.split_once("] ").map(|(_, t)| t).unwrap_or(l))
        .collect();
    assert_eq!(
        tails,
        vec![
            format!("bot: {BOT_FIRST}"),
            format!("caller: {REPLY_FIRST}"),
            format!("bot: {BOT_SECOND}"),
            format!("caller: {REPLY_SECOND}"),
        ]
    );
    assert!(
        lines[1..5]
            .iter()
            .all(|l| l.starts_with('[') && l.contains("s] "))
    );
    assert_eq!(lines[5], "ended: goal reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_hangs_up_when_its_patience_runs_out() {
    let stack = stack().await;
    let mut handle = persona::spawn(stack.deps.clone(), pair(1.0), 7);
    bot_says(&handle).await;
    let (text, clip) = said(next_output(&mut handle).await);
    assert_eq!(text, REPLY_FIRST);
    let said_at = tokio::time::Instant::now();
    // The bot says nothing more.
    assert_eq!(
        hang_up_reason(next_output(&mut handle).await),
        "patience ran out"
    );
    // Not before its own words had played and the patience had passed.
    let played = Duration::from_secs_f64(clip.pcm.len() as f64 / 8000.0);
    assert!(said_at.elapsed() >= played + Duration::from_millis(900));
    let transcript = end(handle).await;
    assert_eq!(transcript.ended, "patience ran out");
    assert_eq!(transcript.lines.len(), 2);
    assert_eq!(stack.chat.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_bot_exhausts_patience_from_the_start() {
    let stack = stack().await;
    let mut handle = persona::spawn(stack.deps.clone(), pair(1.0), 8);
    assert_eq!(
        hang_up_reason(next_output(&mut handle).await),
        "patience ran out"
    );
    let transcript = end(handle).await;
    assert_eq!(transcript.ended, "patience ran out");
    assert!(transcript.lines.is_empty());
    assert_eq!(stack.chat.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_hangs_up_with_the_reason() {
    let stack = stack().await;
    stack.chat.push_fault(Fault::Quota);
    let mut handle = persona::spawn(stack.deps.clone(), pair(60.0), 9);
    bot_says(&handle).await;
    let reason = hang_up_reason(next_output(&mut handle).await);
    assert!(
        reason.starts_with("persona error: language model: HTTP 429"),
        "{reason}"
    );
    let transcript = end(handle).await;
    assert_eq!(transcript.ended, reason);
    let spoken: Vec<(Speaker, &str)> = transcript
        .lines
        .iter()
        .map(|l| (l.speaker, l.text.as_str()))
        .collect();
    assert_eq!(spoken, vec![(Speaker::Bot, BOT_FIRST)]);
    assert!(stack.speak.spoken_texts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_input_ends_the_persona_and_writes_the_transcript() {
    let stack = stack().await;
    let handle = persona::spawn(stack.deps.clone(), pair(60.0), 12345);
    let PersonaHandle { input, task, .. } = handle;
    drop(input);
    let transcript = tokio::time::timeout(WAIT, task)
        .await
        .expect("ends in time")
        .expect("task");
    assert_eq!(transcript.ended, "call ended");
    let dir = stack.dir.path().join("transcripts");
    assert!(dir.join("call-12345.json").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("call-12345.txt")).expect("text"),
        "call 12345: Ana Lopez (a double charge on her card, annoyed) with agent Sam (skill 3, brief)\nended: call ended\n"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write profiles");
    path
}

#[test]
fn profiles_load_from_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let customers = write(
        dir.path(),
        "customers.json",
        r#"[
  {"name": "Ana", "issue": "a double charge", "complexity": 3, "mood": "annoyed", "patience_s": 45},
  {"name": "Bo", "issue": "a lost parcel", "complexity": 1, "mood": "calm", "patience_s": 600}
]"#,
    );
    let agents = write(
        dir.path(),
        "agents.json",
        r#"[{"name": "Sam", "skill": 4, "style": "warm", "parameters": {"branch": "north"}},
            {"name": "Kim", "skill": 1, "style": "brief"}]"#,
    );
    let customers = persona::load_customers(&customers).expect("customers");
    assert_eq!(
        customers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["Ana", "Bo"]
    );
    assert_eq!(customers[1].patience_s, 600.0);
    let agents = persona::load_agents(&agents).expect("agents");
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0].parameters["branch"], "north");
    assert!(agents[1].parameters.is_empty());
}

#[test]
fn every_profile_error_names_the_file_and_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shown = |path: &Path| path.display().to_string();

    let missing = dir.path().join("nope.json");
    let err = persona::load_customers(&missing).unwrap_err();
    assert!(matches!(err, PersonaError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", shown(&missing))),
        "{err}"
    );

    let cases: &[(&str, &str)] = &[
        ("[]", ": no profiles (the array is empty)"),
        ("[{\"name\": \"A\"", ":1:13: EOF while parsing an object"),
        (
            "[\n{\"name\":\"A\",\"issue\":\"i\",\"complexity\":1,\"mood\":\"m\",\"patience_s\":5,\"age\":3}]",
            ":2:70: unknown field `age`, expected one of `name`, `issue`, `complexity`, `mood`, `patience_s`",
        ),
        (
            "[{\"name\":\"A\",\"issue\":\"i\",\"complexity\":1,\"mood\":\"m\"}]",
            ":1:51: missing field `patience_s`",
        ),
        (
            "[{\"name\":\"\",\"issue\":\"i\",\"complexity\":1,\"mood\":\"m\",\"patience_s\":5}]",
            ": entry 1: name is empty",
        ),
        (
            "[{\"name\":\"A\",\"issue\":\"i\",\"complexity\":7,\"mood\":\"m\",\"patience_s\":5}]",
            ": entry 1: complexity must be 1..=5, not 7",
        ),
        (
            "[{\"name\":\"A\",\"issue\":\"i\",\"complexity\":1,\"mood\":\"m\",\"patience_s\":0}]",
            ": entry 1: patience_s must be 1..=600 seconds, not 0",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("c{i}.json"), text);
        let err = persona::load_customers(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}{expected}", shown(&path)),
            "{text}"
        );
    }

    let agent_cases: &[(&str, &str)] = &[
        (
            "[{\"name\":\"A\",\"skill\":0,\"style\":\"s\"}]",
            ": entry 1: skill must be 1..=5, not 0",
        ),
        (
            "[{\"name\":\"A\",\"skill\":1,\"style\":\"\"}]",
            ": entry 1: style is empty",
        ),
        (
            "[{\"name\":\"A\",\"skill\":1,\"style\":\"s\"},{\"name\":\"B\",\"skill\":1,\"style\":\"s\",\"parameters\":{\"agent_name\":\"X\"}}]",
            ": entry 2: parameter \"agent_name\" is reserved: it is set from the profile's own field",
        ),
        (
            "[{\"name\":\"A\",\"skill\":1,\"style\":\"s\",\"parameters\":{\"k\":1}}]",
            ":1:54: invalid type: integer `1`, expected a string",
        ),
    ];
    for (i, (text, expected)) in agent_cases.iter().enumerate() {
        let path = write(dir.path(), &format!("a{i}.json"), text);
        let err = persona::load_agents(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}{expected}", shown(&path)),
            "{text}"
        );
    }

    // Too many profiles, and a file too large to read.
    let one = r#"{"name":"A","skill":1,"style":"s"}"#;
    let path = write(
        dir.path(),
        "many.json",
        &format!("[{}]", vec![one; persona::MAX_PROFILES + 1].join(",")),
    );
    assert_eq!(
        persona::load_agents(&path).unwrap_err().to_string(),
        format!(
            "{}: 10001 profiles, more than the 10000 allowed",
            shown(&path)
        )
    );
    let path = dir.path().join("huge.json");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(persona::MAX_FILE_BYTES + 1).expect("size");
    assert_eq!(
        persona::load_agents(&path).unwrap_err().to_string(),
        format!(
            "{}: 16777217 bytes, more than the 16777216 allowed",
            shown(&path)
        )
    );
}

#[test]
fn providers_must_be_configured() {
    let mut config = Config::default();
    let err = PersonaDeps::from_config(&config, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "persona speech-to-text: no key: set DEEPGRAM_API_KEY (or stt.deepgram.api_key)"
    );
    config.stt.deepgram.api_key = "k".into();
    let err = PersonaDeps::from_config(&config, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "persona language model: none configured: set OPENAI_API_KEY (or OPENAI_BASE_URL)"
    );
    config.llm.api_key = "k".into();
    config.tts.provider = "deepgram".into();
    config.tts.deepgram.api_key = String::new();
    let err = PersonaDeps::from_config(&config, None).unwrap_err();
    assert!(
        matches!(
            err,
            PersonaError::Provider {
                what: "text-to-speech",
                ..
            }
        ),
        "{err}"
    );
    let settings = PersonaSettings {
        temperature: 3.0,
        ..PersonaSettings::default()
    };
    let err = PersonaDeps::from_config_with(&config, None, settings).unwrap_err();
    assert_eq!(
        err.to_string(),
        "persona settings: temperature must be 0..=2, not 3"
    );
    config.tts.deepgram.api_key = "k".into();
    let deps = PersonaDeps::from_config(&config, None).expect("configured");
    assert_eq!(deps.settings, PersonaSettings::default());
}

#[tokio::test]
async fn an_unwritable_transcript_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = write(dir.path(), "not-a-dir", "x");
    let transcript = Transcript {
        call: 3,
        pair: pair(10.0),
        lines: Vec::new(),
        ended: "call ended".to_owned(),
    };
    let err = persona::write_transcript(&blocker, &transcript)
        .await
        .unwrap_err();
    assert!(matches!(err, PersonaError::Write { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot write: ", blocker.display())),
        "{err}"
    );
    let (json, text) = persona::write_transcript(&dir.path().join("t"), &transcript)
        .await
        .expect("written");
    assert_eq!(json, dir.path().join("t/call-00003.json"));
    assert_eq!(
        std::fs::read_to_string(text).expect("text"),
        "call 3: Ana Lopez (a double charge on her card, annoyed) with agent Sam (skill 3, brief)\nended: call ended\n"
    );
}
