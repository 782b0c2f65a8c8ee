//! Scripted calls end to end: carrier simulator ↔ gateway running a `script:<name>` agent ↔
//! local fakes of Deepgram (listen + speak) and OpenAI chat, over real sockets. Scripts are
//! Destiny-Script text parsed by the gateway's parser; prompt audio comes from an in-memory
//! prompt source that serves synthetic speech (primed texts from memory, the rest after a
//! short synthesis delay). Each test checks the CallEvents and what the caller heard.

mod common;
mod fakes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use fakes::deepgram_listen::{FakeListen, ListenConfig};
use fakes::deepgram_speak::FakeDeepgramSpeak;
use fakes::openai_chat::{ChatFake, ChatFakeConfig, Reply, Rule};
use fakes::speech;
use serde_json::{Value, json};
use voicegw::call::conversation::ConversationDeps;
use voicegw::call::reply::FallbackAudio;
use voicegw::llm::openai::OpenAiChat;
use voicegw::llm::prompt::PromptTemplate;
use voicegw::llm::tools::Toolbox;
use voicegw::script::prompts::{LoadedScript, PROMPT_RATE, PromptClip, PromptError, PromptSource};
use voicegw::script::{parse, script_agent_factory, script_hash};
use voicegw::tts::deepgram::DeepgramTts;

/// Prompt audio for tests: synthetic speech; primed texts are in memory from the start, others
/// take `delay_ms` to synthesize (and are kept); texts in `failing` cannot be synthesized.
struct TestPrompts {
    kept: Mutex<HashMap<String, PromptClip>>,
    failing: HashSet<String>,
    delay_ms: u64,
    synthesized: Mutex<Vec<String>>,
}

impl TestPrompts {
    fn new(primed: &[String], failing: &[&str]) -> Self {
        TestPrompts {
            kept: Mutex::new(primed.iter().map(|t| (t.clone(), clip(t))).collect()),
            failing: failing.iter().map(|t| t.to_string()).collect(),
            delay_ms: 150,
            synthesized: Mutex::new(Vec::new()),
        }
    }
}

fn clip(text: &str) -> PromptClip {
    Arc::from(speech::synthesize(text, PROMPT_RATE))
}

#[async_trait::async_trait]
impl PromptSource for TestPrompts {
    fn cached(&self, text: &str) -> Option<PromptClip> {
        self.kept.lock().ok()?.get(text).cloned()
    }

    async fn synthesize(&self, text: &str) -> Result<PromptClip, PromptError> {
        if let Ok(mut log) = self.synthesized.lock() {
            log.push(text.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        if self.failing.contains(text) {
            return Err(PromptError::Synthesis("the voice refused the text".into()));
        }
        let audio = clip(text);
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(text.to_owned(), audio.clone());
        }
        Ok(audio)
    }
}

/// What a test's gateway runs with.
struct Options {
    /// Texts the prompt source cannot synthesize.
    failing: Vec<&'static str>,
    /// Prime the static texts of the flow (as `voicegw script prime` would).
    prime: bool,
    /// Chat rules (the model is configured only when some are given or `model` is set).
    rules: Vec<Rule>,
    model: bool,
    defaults: Vec<(&'static str, &'static str)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            failing: Vec::new(),
            prime: true,
            rules: Vec::new(),
            model: false,
            defaults: Vec::new(),
        }
    }
}

/// The gateway running one script, and its providers' fakes.
struct Stack {
    gw: TestGateway,
    listen: FakeListen,
    speak: FakeDeepgramSpeak,
    chat: ChatFake,
    prompts: Arc<TestPrompts>,
}

const SYSTEM_PROMPT: &str = "You are the phone assistant of Acme Dental.";

async fn stack(script: &str, options: Options) -> Stack {
    let parsed = parse(script).unwrap_or_else(|e| panic!("the test script does not parse: {e}"));
    let flow = parsed.flow;
    let listen = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let speak = FakeDeepgramSpeak::start().await.expect("start the fake");
    let chat = ChatFake::start(ChatFakeConfig {
        rules: options.rules.clone(),
        ..ChatFakeConfig::default()
    })
    .await
    .expect("start the fake");
    let mut config = test_config();
    fakes::use_fakes(&mut config, &listen, &speak, &chat);
    config.turn.speculate_after_ms = 0;
    let primed: Vec<String> = if options.prime {
        flow.static_texts().into_iter().map(|t| t.text).collect()
    } else {
        Vec::new()
    };
    let prompts = Arc::new(TestPrompts::new(&primed, &options.failing));
    let with_model = options.model || !options.rules.is_empty();
    let hash = script_hash(&flow);
    let defaults: HashMap<String, String> = options
        .defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let source = prompts.clone();
    let gw = TestGateway::start_with_pipeline(config.clone(), move |pipeline, metrics| {
        let conversation = with_model.then(|| {
            let model = OpenAiChat::new(config.llm.clone(), metrics.clone()).unwrap();
            let tts = DeepgramTts::new(config.tts.deepgram.clone(), metrics.clone()).unwrap();
            Arc::new(ConversationDeps {
                config: config.conversation.clone(),
                prompt: PromptTemplate::parse(SYSTEM_PROMPT).unwrap(),
                greeting: None,
                model: Arc::new(model),
                tts: Arc::new(tts),
                toolbox: Arc::new(Toolbox::new(config.tools.clone()).unwrap()),
                fallback_audio: Arc::new(FallbackAudio::default()),
            })
        });
        let script = Arc::new(LoadedScript {
            name: "test".into(),
            flow: Arc::new(flow),
            hash,
            prompts: source,
            conversation,
            defaults,
        });
        pipeline
            .agents
            .register("script:test", script_agent_factory(script));
        pipeline.agents.set_default("script:test").unwrap();
    })
    .await;
    Stack {
        gw,
        listen,
        speak,
        chat,
        prompts,
    }
}

impl Stack {
    /// Runs the call until an event of `kind` has been recorded `n` times (or `limit_ms`).
    async fn until_event(
        &mut self,
        sim: &mut CarrierSim,
        kind: &str,
        n: usize,
        limit_ms: u64,
    ) -> bool {
        let mut waited = 0;
        while waited < limit_ms {
            if self.gw.events_of(kind).len() >= n {
                return true;
            }
            if sim.closed {
                break;
            }
            sim.run_for(50).await;
            waited += 50;
        }
        self.gw.events_of(kind).len() >= n
    }

    /// Runs until the call closes (or `limit_ms`); returns the close frame.
    async fn until_closed(&mut self, sim: &mut CarrierSim, limit_ms: u64) -> Option<(u16, String)> {
        sim.run_until(limit_ms, |s| s.closed).await;
        if !sim.closed {
            sim.wait_close(Duration::from_millis(500)).await;
        }
        sim.close.clone()
    }

    fn kinds(&mut self) -> Vec<String> {
        self.gw
            .events()
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    fn script_events(&mut self) -> Vec<Value> {
        self.gw
            .events()
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("script_")))
            .collect()
    }

    fn entered(&mut self) -> Vec<String> {
        self.gw
            .events_of("script_node_entered")
            .iter()
            .map(|e| e["node"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Bot audio received (ms), at 8 kHz.
fn received_ms(sim: &CarrierSim) -> u64 {
    sim.bot_samples_received * 1000 / u64::from(sim.config.sample_rate)
}

const MENU: &str = "\
@timeout 3s
@digit_timeout 1s
@reprompts 1

[start]
Press 1 for sales, 2 for support.
reprompt: Please press 1 or 2.
-> 1, \"sales\": sales
-> 2, \"support\", \"help\": support
-> 0, \"person\": transfer +14155550100 else busy
-> 42#: secret
-> nomatch: operator

[sales]
Sales speaking. Goodbye.
-> END

[support]
Support here. Goodbye.
-> END

[busy]
Everyone is busy.
-> END

[secret]
Secret menu.
-> END

[operator]
Let me find someone.
-> END
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_the_prompt_stops_it_and_routes_to_end() {
    let mut stack = stack(MENU, Options::default()).await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    // The first prompt is in memory: its audio comes at once.
    assert!(sim.run_until(2_000, |s| s.media_count() > 5).await);
    assert!(
        sim.first_media_ms().unwrap() <= 100,
        "{:?}",
        sim.first_media_ms()
    );
    sim.run_for(400).await;
    sim.press('2').await;
    let close = stack.until_closed(&mut sim, 10_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: script ended at [support]".into())),
        "{:?}",
        stack.kinds()
    );
    assert_eq!(stack.entered(), ["start", "support"]);
    assert!(sim.clears() >= 1, "the key press cleared the prompt");
    assert_eq!(stack.gw.events_of("bot_speech_cancelled").len(), 1);
    let input = &stack.gw.events_of("script_input")[0];
    assert_eq!(input["source"], "dtmf");
    assert_eq!(input["input"], "2");
    assert_eq!(input["transition"], 1);
    let prompts = stack.gw.events_of("script_prompt");
    assert!(prompts.iter().all(|p| p["cached"] == true), "{prompts:?}");
    // The whole second prompt was heard before the hang-up.
    let support_ms = speech::duration_ms("Support here. Goodbye.");
    assert!(received_ms(&sim) >= support_ms, "{} ms", received_ms(&sim));
    assert_eq!(
        stack.gw.events_of("bot_speech_finished").len(),
        1,
        "{:?}",
        stack.kinds()
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    // The menu listens for words too: the call ran a recognizer.
    assert_eq!(stack.listen.connections().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_entry_and_words_route() {
    let mut stack = stack(MENU, Options::default()).await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    for key in ['4', '2', '#'] {
        sim.press(key).await;
    }
    stack.until_closed(&mut sim, 8_000).await;
    assert_eq!(stack.entered(), ["start", "secret"]);
    assert_eq!(stack.gw.events_of("script_input")[0]["input"], "42#");

    // Words: the recognizer's transcript of the caller's turn.
    let mut stack = self::stack(MENU, Options::default()).await;
    stack.listen.push_script(["I need some help, please."]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::exotel(8000)).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    sim.say_in(100, wav("caller_hello.wav"));
    let close = stack.until_closed(&mut sim, 15_000).await;
    assert_eq!(close.map(|c| c.0), Some(1000), "{:?}", stack.kinds());
    assert_eq!(stack.entered(), ["start", "support"]);
    let input = &stack.gw.events_of("script_input")[0];
    assert_eq!(input["source"], "speech");
    assert_eq!(input["input"], "I need some help, please.");
    assert_eq!(input["key"], "\"help\"");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_reprompts_then_takes_nomatch_or_says_goodbye() {
    let mut stack = stack(MENU, Options::default()).await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    sim.press('7').await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 2, 5_000)
            .await
    );
    sim.press('8').await;
    stack.until_closed(&mut sim, 8_000).await;
    let counts: Vec<u64> = stack
        .gw
        .events_of("script_no_match")
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2]);
    let kinds: Vec<String> = stack
        .gw
        .events_of("script_prompt")
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["prompt", "reprompt", "prompt"]);
    assert_eq!(stack.entered(), ["start", "operator"]);

    // Without a nomatch transition: the default goodbye, then the hang-up.
    let script = MENU.replace("-> nomatch: operator\n", "");
    let mut stack = self::stack(&script, Options::default()).await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    sim.press('7').await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 2, 5_000)
            .await
    );
    let before = sim.bot_samples_received;
    sim.press('7').await;
    let close = stack.until_closed(&mut sim, 8_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: no match at [start]".into()))
    );
    let goodbye = &stack.gw.events_of("script_prompt")[2];
    assert_eq!(goodbye["kind"], "goodbye");
    let goodbye_ms = speech::duration_ms("Sorry, I couldn't understand. Goodbye.");
    let heard = (sim.bot_samples_received - before) / 8;
    assert!(
        heard >= goodbye_ms,
        "the goodbye played in full: {heard} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_times_out_to_its_node() {
    let script = "\
[start]
Press 1.
-> 1: done
-> timeout 800ms: still_there

[still_there]
Still there?
-> END

[done]
Done.
-> END
";
    let mut stack = stack(script, Options::default()).await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    let prompt_done = sim.now_ms();
    assert!(
        stack
            .until_event(&mut sim, "script_no_input", 1, 3_000)
            .await
    );
    let waited = sim.now_ms() - prompt_done;
    assert!(
        (700..=1_300).contains(&waited),
        "timed out after {waited} ms"
    );
    assert_eq!(stack.gw.events_of("script_no_input")[0]["after_ms"], 800);
    let close = stack.until_closed(&mut sim, 5_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: script ended at [still_there]".into()))
    );
    assert_eq!(stack.entered(), ["start", "still_there"]);
    // A keys-only script runs no recognizer.
    assert!(stack.listen.connections().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transfer_goes_to_else_or_says_goodbye() {
    let mut stack = stack(MENU, Options::default()).await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    sim.press('0').await;
    let close = stack.until_closed(&mut sim, 8_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: script ended at [busy]".into()))
    );
    assert_eq!(
        stack.gw.events_of("transfer_requested")[0]["to"],
        "+14155550100"
    );
    assert_eq!(stack.gw.events_of("transfer_failed").len(), 1);
    assert_eq!(stack.entered(), ["start", "busy"]);

    // No `else`: the goodbye, and the call ends saying why.
    let script = MENU.replace(" else busy", "");
    let mut stack = self::stack(&script, Options::default()).await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    sim.press('0').await;
    let close = stack.until_closed(&mut sim, 8_000).await.expect("closed");
    assert!(
        close
            .1
            .starts_with("agent hangup: transfer to +14*******00 failed"),
        "{close:?}"
    );
    let last = stack.gw.events_of("script_prompt").pop().unwrap();
    assert_eq!(last["kind"], "goodbye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_target_texts_the_caller_then_goes_on() {
    let script = "\
[start]
Press 1 for a text with the address.
-> 1: sms \"{{ tenantName }} is at {{ address | 1 Main St }}.\" then thanks

[thanks]
Sent. Goodbye.
-> END
";
    let mut stack = stack(
        script,
        Options {
            defaults: vec![("tenantName", "Acme Dental")],
            ..Options::default()
        },
    )
    .await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::exotel(8000)).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 6_000)
            .await
    );
    sim.press('1').await;
    let close = stack.until_closed(&mut sim, 8_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: script ended at [thanks]".into()))
    );
    let body = "Acme Dental is at 1 Main St.";
    let sms = stack
        .gw
        .events_of("script_prompt")
        .into_iter()
        .find(|p| p["kind"] == "sms")
        .expect("the sms step");
    assert_eq!(sms["chars"], body.chars().count());
    // No carrier account here: the failure is recorded with the caller's number.
    let failed = &stack.gw.events_of("sms_failed")[0];
    assert_eq!(failed["to"], "+919876543210");
    assert!(
        failed["error"].as_str().unwrap().contains("sms"),
        "{failed}"
    );
    assert_eq!(stack.entered(), ["start", "thanks"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_variable_ends_the_call_politely_and_says_which() {
    let script = "\
[start]
Hello from {{ tenantName }} about {{ appointmentDate }}.
-> END
";
    let mut stack = stack(script, Options::default()).await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    let close = stack.until_closed(&mut sim, 8_000).await.expect("closed");
    assert!(close.1.contains("`tenantName`"), "{close:?}");
    let failed = &stack.gw.events_of("script_failed")[0];
    assert_eq!(failed["missing"], json!(["appointmentDate", "tenantName"]));
    assert!(stack.entered().is_empty());
    // The cached goodbye was heard in full first.
    assert_eq!(stack.gw.events_of("script_prompt")[0]["kind"], "goodbye");
    let goodbye_ms = speech::duration_ms("Sorry, I couldn't understand. Goodbye.");
    assert!(received_ms(&sim) >= goodbye_ms);

    // Given as stream parameters, the prompt is synthesized for the call.
    let mut stack = self::stack(script, Options::default()).await;
    let mut params = serde_json::Map::new();
    params.insert("tenantName".into(), json!("Acme Dental"));
    params.insert("appointmentDate".into(), json!("Monday"));
    let mut sim = CarrierSim::connect_with(&stack.gw, SimConfig::twilio(), params).await;
    let close = stack.until_closed(&mut sim, 8_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: script ended at [start]".into()))
    );
    let prompt = &stack.gw.events_of("script_prompt")[0];
    assert_eq!(prompt["cached"], false);
    assert_eq!(
        stack.prompts.synthesized.lock().unwrap().as_slice(),
        ["Hello from Acme Dental about Monday.".to_string()]
    );
    assert!(received_ms(&sim) >= speech::duration_ms("Hello from Acme Dental about Monday."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_that_cannot_be_synthesized_ends_politely() {
    let script = "\
[start]
Press 1 for {{ thing | news }}.
-> 1: done

[done]
Done.
-> END
";
    let mut stack = stack(
        script,
        Options {
            failing: vec!["Press 1 for news."],
            ..Options::default()
        },
    )
    .await;
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    let close = stack.until_closed(&mut sim, 8_000).await.expect("closed");
    assert!(
        close.1.contains("cannot synthesize a prompt of [start]"),
        "{close:?}"
    );
    assert_eq!(stack.gw.events_of("script_failed").len(), 1);
    assert_eq!(stack.gw.events_of("script_prompt")[0]["kind"], "goodbye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_over_a_prompt_barges_in_and_routes() {
    let script = "\
[start]
Thanks for calling Acme Dental. To confirm your appointment say yes, to cancel it say cancel.
-> \"yes\": confirmed
-> \"cancel\": cancelled

[confirmed]
Confirmed.
-> END

[cancelled]
Cancelled.
-> END
";
    let mut stack = stack(script, Options::default()).await;
    stack.listen.push_script(["Yes, I'll be there."]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    sim.run_for(1_500).await;
    sim.say_in(0, wav("caller_yes.wav"));
    let close = stack.until_closed(&mut sim, 15_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: script ended at [confirmed]".into())),
        "{:?}",
        stack.kinds()
    );
    assert!(sim.clears() >= 1);
    let barge = &stack.gw.events_of("barge_in")[0];
    let heard = barge["heard_text"].as_str().unwrap_or_default().to_owned();
    assert!(
        !heard.is_empty() && heard.len() < 60 && script.contains(&heard),
        "heard {heard:?}"
    );
    assert_eq!(stack.entered(), ["start", "confirmed"]);
    assert_eq!(stack.gw.events_of("script_input")[0]["key"], "\"yes\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_word_that_is_a_key_answers_over_the_prompt() {
    // "Yeah" over the bot is usually a backchannel (the bot goes on); here it is the answer.
    let script = "\
[start]
Thanks for calling Acme Dental. Can you still make it on Tuesday? Say yeah or no.
-> \"yeah\", \"yes\": confirmed
-> \"no\": cancelled

[confirmed]
Confirmed.
-> END

[cancelled]
Cancelled.
-> END
";
    let mut stack = stack(script, Options::default()).await;
    stack.listen.push_script(["Yeah."]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    sim.run_for(1_500).await;
    sim.say_in(0, wav("caller_yes.wav"));
    let close = stack.until_closed(&mut sim, 15_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: script ended at [confirmed]".into())),
        "{:?}",
        stack.kinds()
    );
    assert!(stack.gw.events_of("barge_in_reverted").is_empty());
    assert_eq!(stack.entered(), ["start", "confirmed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_target_hands_the_call_to_the_model_with_the_conversation() {
    let script = MENU.replace(
        "-> 0, \"person\": transfer +14155550100 else busy",
        "-> 0, \"person\": agent",
    );
    let mut stack = stack(
        &script,
        Options {
            rules: vec![Rule {
                user_contains: "person".into(),
                reply: Reply::Text("Hi, I'm the assistant. How can I help?".into()),
            }],
            ..Options::default()
        },
    )
    .await;
    stack.listen.push_script(["Can I talk to a person?"]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    sim.say_in(100, wav("caller_question.wav"));
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 2, 15_000)
            .await,
        "{:?}",
        stack.kinds()
    );
    let handoff = &stack.gw.events_of("script_handoff")[0];
    assert_eq!(handoff["node"], "start");
    assert_eq!(handoff["outcomes"], json!([]));
    // The model's request holds the prompt as heard and the caller's words.
    let request = &stack.chat.requests()[0];
    let messages: Vec<(String, String)> = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            ("system".to_string(), SYSTEM_PROMPT.to_string()),
            (
                "assistant".to_string(),
                "Press 1 for sales, 2 for support.".to_string()
            ),
            ("user".to_string(), "Can I talk to a person?".to_string()),
        ]
    );
    assert!(
        stack
            .speak
            .spoken_texts()
            .iter()
            .any(|t| t.contains("How can I help?")),
        "{:?}",
        stack.speak.spoken_texts()
    );
    // From now on, keys go to the model too.
    sim.press('1').await;
    assert!(stack.until_event(&mut sim, "llm_request", 2, 5_000).await);
    assert!(stack.gw.events_of("script_input").len() == 1);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_node_routes_back_to_the_script() {
    let script = "\
[start]
Press 1 for questions.
-> 1: faq

[faq]
What would you like to know?
agent: Answer questions about the clinic. When the caller has no more questions, choose \"done\".
-> \"done\": bye
-> \"human\": transfer +14155550100
-> timeout 8s: bye

[bye]
Thanks for calling. Goodbye.
-> END
";
    let mut stack = stack(
        script,
        Options {
            rules: vec![
                Rule {
                    user_contains: "open".into(),
                    reply: Reply::Text("We open at eight in the morning.".into()),
                },
                Rule {
                    user_contains: "appointment".into(),
                    reply: Reply::Tool {
                        name: "route".into(),
                        arguments: json!({"outcome": "done"}),
                        then: "unused".into(),
                    },
                },
            ],
            ..Options::default()
        },
    )
    .await;
    stack.listen.push_script([
        "Can you tell me what time you open tomorrow?",
        "Hello, I'm calling to confirm my appointment for Tuesday.",
    ]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 1, 5_000)
            .await
    );
    sim.press('1').await;
    // The node's own prompt plays, then the model waits for the caller.
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 2, 5_000)
            .await
    );
    let handoff = &stack.gw.events_of("script_handoff")[0];
    assert_eq!(handoff["node"], "faq");
    assert_eq!(handoff["outcomes"], json!(["done", "human"]));
    assert!(
        stack.chat.requests().is_empty(),
        "no answer before the caller speaks"
    );
    sim.say_in(100, wav("caller_question.wav"));
    assert!(
        stack
            .until_event(&mut sim, "bot_speech_finished", 3, 15_000)
            .await,
        "{:?}",
        stack.kinds()
    );
    // The request: the node's instructions, the conversation, and a route tool.
    let request = &stack.chat.requests()[0];
    let system = request["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.starts_with(SYSTEM_PROMPT) && system.contains("choose \"done\""),
        "{system}"
    );
    assert_eq!(request["messages"][1]["content"], "Press 1 for questions.");
    assert_eq!(request["messages"][2]["content"], "(pressed 1)");
    assert_eq!(
        request["messages"][3]["content"],
        "What would you like to know?"
    );
    let route = request["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "route")
        .expect("a route tool");
    assert_eq!(
        route["function"]["parameters"]["properties"]["outcome"]["enum"],
        json!(["done", "human"])
    );
    // The caller is done: the model routes, and the script says goodbye.
    sim.say_in(100, wav("caller_hello.wav"));
    let close = stack.until_closed(&mut sim, 20_000).await;
    assert_eq!(
        close,
        Some((1000, "agent hangup: script ended at [bye]".into())),
        "{:?}",
        stack.kinds()
    );
    let routed = &stack.gw.events_of("script_route")[0];
    assert_eq!(routed["node"], "faq");
    assert_eq!(routed["outcome"], "done");
    assert_eq!(routed["target"], "bye");
    assert_eq!(stack.entered(), ["start", "faq", "bye"]);
    assert_eq!(stack.chat.requests().len(), 2, "no round after the route");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let events = stack.script_events();
    assert!(events.len() >= 8, "{events:?}");
}
