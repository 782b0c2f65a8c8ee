//! End to end: carrier simulator ↔ gateway ↔ local fakes of Deepgram (listen + speak) and
//! OpenAI chat, over real sockets. Each test plays the caller from fixture audio in real time
//! and checks what the caller heard, what the model was sent, and what was recorded.

mod common;
mod fakes;

use common::*;
use fakes::deepgram_listen::{FakeListen, ListenConfig};
use fakes::deepgram_speak::FakeDeepgramSpeak;
use fakes::openai_chat::{ChatFake, ChatFakeConfig, Fault, Reply, Rule};
use fakes::twilio_rest::{CALL_SID, FakeTwilioConfig, FakeTwilioRest};
use serde_json::Value;
use voicegw::config::Config;

const HELLO: &str = "Hello, I'm calling to confirm my appointment for Tuesday.";
const QUESTION: &str = "Can you tell me what time you open tomorrow?";
const GREETING: &str = "Thanks for calling Acme Dental.";

/// The gateway and its providers' fakes.
struct Stack {
    gw: TestGateway,
    listen: FakeListen,
    speak: FakeDeepgramSpeak,
    chat: ChatFake,
}

fn rule(contains: &str, reply: Reply) -> Rule {
    Rule {
        user_contains: contains.into(),
        reply,
    }
}

async fn stack(rules: Vec<Rule>, tweak: impl FnOnce(&mut Config)) -> Stack {
    let listen = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let speak = FakeDeepgramSpeak::start().await.expect("start the fake");
    let chat = ChatFake::start(ChatFakeConfig {
        rules,
        ..ChatFakeConfig::default()
    })
    .await
    .expect("start the fake");
    let mut config = test_config();
    fakes::use_fakes(&mut config, &listen, &speak, &chat);
    config.conversation.greeting = GREETING.into();
    tweak(&mut config);
    let gw = TestGateway::start(config).await;
    Stack {
        gw,
        listen,
        speak,
        chat,
    }
}

/// Plays until the bot has finished speaking utterance number `n` (1-based count of
/// `bot_speech_finished` events), with a time limit.
async fn until_bot_done(stack: &mut Stack, sim: &mut CarrierSim, n: usize, limit_ms: u64) -> bool {
    let mut waited = 0;
    while waited < limit_ms {
        sim.run_for(100).await;
        waited += 100;
        if stack.gw.events_of("bot_speech_finished").len() >= n {
            return true;
        }
    }
    false
}

fn user_turns(stack: &mut Stack) -> Vec<String> {
    stack
        .gw
        .events_of("user_turn_ended")
        .iter()
        .filter_map(|e| e["transcript"].as_str().map(str::to_owned))
        .collect()
}

/// The messages of the `n`th chat request (0-based) as (role, content).
fn request_messages(chat: &ChatFake, n: usize) -> Vec<(String, String)> {
    let requests = chat.requests();
    let Some(request) = requests.get(n) else {
        return Vec::new();
    };
    request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap_or_default().to_owned(),
                        m["content"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn kinds(stack: &mut Stack) -> Vec<String> {
    stack
        .gw
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

async fn three_turns(sim_config: SimConfig) {
    let mut stack = stack(
        vec![
            rule(
                "appointment",
                Reply::Text("Sure, your appointment is on Tuesday at ten.".into()),
            ),
            rule(
                "what time",
                Reply::Text("We open at eight in the morning.".into()),
            ),
            rule("tuesday", Reply::Text("Great, see you then.".into())),
        ],
        |_| {},
    )
    .await;
    stack
        .listen
        .push_script([HELLO, QUESTION, "See you on Tuesday."]);
    let mut sim = CarrierSim::connect(&stack.gw, sim_config).await;
    assert!(
        until_bot_done(&mut stack, &mut sim, 1, 8_000).await,
        "greeting not played: {:?} close {:?} violations {:?}",
        kinds(&mut stack),
        sim.close,
        sim.violations
    );
    for (n, fixture) in [
        "caller_hello.wav",
        "caller_question.wav",
        "caller_hello.wav",
    ]
    .iter()
    .enumerate()
    {
        sim.say_in(200, wav(fixture));
        assert!(
            until_bot_done(&mut stack, &mut sim, n + 2, 15_000).await,
            "turn {} not answered: {:?}",
            n + 1,
            kinds(&mut stack)
        );
    }
    assert_eq!(
        user_turns(&mut stack),
        vec![HELLO, QUESTION, "See you on Tuesday."]
    );
    // A model request per turn, each carrying the whole conversation so far (plus any
    // speculative request dropped unheard when the caller went on after a pause).
    let requests = stack.chat.requests().len();
    assert!(requests >= 3, "{:?}", kinds(&mut stack));
    let last = request_messages(&stack.chat, requests - 1);
    let roles: Vec<&str> = last.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        roles,
        vec![
            "system",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
            "user"
        ]
    );
    assert_eq!(last[1].1, GREETING);
    assert_eq!(last[2].1, HELLO);
    assert_eq!(last[3].1, "Sure, your appointment is on Tuesday at ten.");
    assert_eq!(last[5].1, "We open at eight in the morning.");
    // The synthesizer was asked for each answer, and the caller heard audio for each.
    let spoken = stack.speak.spoken_texts().join(" ");
    for text in [
        "Sure, your appointment",
        "We open at eight",
        "Great, see you then.",
    ] {
        assert!(spoken.contains(text), "{text:?} not spoken: {spoken}");
    }
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    // Per-turn timing was recorded.
    for kind in [
        "stt_final",
        "llm_first_token",
        "tts_first_byte",
        "response_started",
        "mark_played",
    ] {
        assert!(
            !stack.gw.events_of(kind).is_empty(),
            "no {kind} events: {:?}",
            kinds(&mut stack)
        );
    }
    let text = http_get(&stack.gw.http_url("/metrics")).await.1;
    for stage in ["response", "llm_first_token", "tts_first_byte", "stt_final"] {
        let line = format!("voicegw_stage_seconds_count{{stage=\"{stage}\"}}");
        assert!(
            metric(&text, &line).is_some_and(|v| v >= 1.0),
            "no {stage} histogram"
        );
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_three_turn_conversation() {
    three_turns(SimConfig::twilio()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_three_turn_conversation() {
    three_turns(SimConfig::exotel(8000)).await;
}

fn events_json(stack: &mut Stack, kind: &str) -> Vec<Value> {
    stack.gw.events_of(kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_429_then_success_is_retried_inside_the_budget() {
    let mut stack = stack(
        vec![rule(
            "appointment",
            Reply::Text("Your appointment is confirmed.".into()),
        )],
        |c| c.turn.speculate_after_ms = 0,
    )
    .await;
    stack.chat.push_fault(Fault::Status {
        status: 429,
        retry_after_secs: None,
    });
    stack.listen.push_script([HELLO]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(until_bot_done(&mut stack, &mut sim, 1, 8_000).await);
    sim.say_in(200, wav("caller_hello.wav"));
    assert!(until_bot_done(&mut stack, &mut sim, 2, 15_000).await);
    assert_eq!(events_json(&mut stack, "llm_retry").len(), 1);
    assert!(events_json(&mut stack, "llm_failed").is_empty());
    assert!(
        stack
            .speak
            .spoken_texts()
            .iter()
            .any(|t| t.contains("Your appointment is confirmed."))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_down_gives_the_fallback_line_not_dead_air() {
    let mut stack = stack(vec![], |c| {
        c.conversation.latency_budget_ms = 800;
    })
    .await;
    stack.listen.push_script([HELLO]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(until_bot_done(&mut stack, &mut sim, 1, 8_000).await);
    stack.chat.set_down(true);
    sim.say_in(200, wav("caller_hello.wav"));
    assert!(
        until_bot_done(&mut stack, &mut sim, 2, 15_000).await,
        "{:?}",
        kinds(&mut stack)
    );
    let failed = events_json(&mut stack, "llm_failed");
    assert_eq!(failed.len(), 1, "{:?}", kinds(&mut stack));
    assert!(failed[0]["attempts"].as_u64().unwrap() >= 2, "{failed:?}");
    let fallback = Config::default().conversation.fallback_line;
    assert!(
        stack.speak.spoken_texts().contains(&fallback),
        "{:?}",
        stack.speak.spoken_texts()
    );
}

const LONG_ANSWER: &str = "We have several appointment slots available next week on Monday \
    Wednesday and Friday mornings and also on Thursday afternoon between two and five if that \
    suits you better.";

/// Plays the greeting and the caller's first turn, and waits for the long answer to start.
async fn into_long_answer(stack: &mut Stack, sim: &mut CarrierSim) {
    assert!(until_bot_done(stack, sim, 1, 8_000).await, "no greeting");
    sim.say_in(200, wav("caller_hello.wav"));
    let started = sim.media_count();
    assert!(
        sim.run_until(15_000, |s| s.media_count() > started + 2)
            .await,
        "no answer: {:?}",
        kinds(stack)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_barge_in_keeps_only_the_heard_words_in_the_history() {
    barge_in_keeps_only_the_heard_words(SimConfig::twilio()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_barge_in_keeps_only_the_heard_words_in_the_history() {
    barge_in_keeps_only_the_heard_words(SimConfig::exotel(8000)).await;
}

async fn barge_in_keeps_only_the_heard_words(sim_config: SimConfig) {
    let mut stack = stack(
        vec![
            rule("appointment", Reply::Text(LONG_ANSWER.into())),
            rule("what time", Reply::Text("We open at eight.".into())),
        ],
        |_| {},
    )
    .await;
    stack.listen.push_script([HELLO, QUESTION]);
    let mut sim = CarrierSim::connect(&stack.gw, sim_config).await;
    into_long_answer(&mut stack, &mut sim).await;
    // Two seconds into the answer the caller asks something else.
    sim.run_for(2_000).await;
    sim.say_in(0, wav("caller_question.wav"));
    assert!(sim.run_until(3_000, |s| s.clears() > 0).await, "no clear");
    assert!(
        until_bot_done(&mut stack, &mut sim, 2, 15_000).await,
        "the interruption was not answered: {:?}",
        kinds(&mut stack)
    );
    let barge = stack.gw.events_of("barge_in");
    assert_eq!(barge.len(), 1, "{:?}", kinds(&mut stack));
    let heard = barge[0]["heard_text"].as_str().unwrap().to_owned();
    let heard_ms = barge[0]["heard_ms"].as_u64().unwrap();
    assert!(
        (1_000..=3_500).contains(&heard_ms),
        "heard {heard_ms} ms: {heard:?}"
    );
    assert!(
        !heard.is_empty() && LONG_ANSWER.starts_with(&heard) && heard.len() < LONG_ANSWER.len() / 2,
        "heard text {heard:?}"
    );
    // The next request shows the answer cut to what was heard, then the new question.
    let requests = stack.chat.requests().len();
    let last = request_messages(&stack.chat, requests - 1);
    let n = last.len();
    assert_eq!(last[n - 1], ("user".to_owned(), QUESTION.to_owned()));
    assert_eq!(last[n - 2].0, "assistant");
    assert_eq!(last[n - 2].1, format!("{heard}…"));
    assert_eq!(stack.gw.events_of("history_trimmed").len(), 1);
    // Nothing of the cut answer was sent after the clear but its stale marks.
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_backchannel_over_the_answer_resumes_it() {
    backchannel_resumes(SimConfig::twilio()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exotel_backchannel_over_the_answer_resumes_it() {
    backchannel_resumes(SimConfig::exotel(8000)).await;
}

async fn backchannel_resumes(sim_config: SimConfig) {
    let mut stack = stack(
        vec![rule("appointment", Reply::Text(LONG_ANSWER.into()))],
        |_| {},
    )
    .await;
    stack.listen.push_script([HELLO, "Uh-huh."]);
    let mut sim = CarrierSim::connect(&stack.gw, sim_config).await;
    into_long_answer(&mut stack, &mut sim).await;
    sim.run_for(1_500).await;
    sim.say_in(0, wav("backchannel_uh_huh.wav"));
    assert!(sim.run_until(2_000, |s| s.clears() > 0).await, "no pause");
    let before = sim.media_count();
    assert!(
        until_bot_done(&mut stack, &mut sim, 2, 20_000).await,
        "the answer never finished: {:?}",
        kinds(&mut stack)
    );
    assert!(sim.media_count() > before + 10, "the answer did not resume");
    let reverted = stack.gw.events_of("barge_in_reverted");
    assert_eq!(reverted.len(), 1, "{:?}", kinds(&mut stack));
    assert_eq!(reverted[0]["transcript"], "Uh-huh.");
    assert!(stack.gw.events_of("barge_in").is_empty());
    // The backchannel is not a turn: no request for it, and the answer stays whole.
    assert_eq!(
        stack
            .chat
            .requests()
            .iter()
            .filter(|r| r.to_string().contains("Uh-huh"))
            .count(),
        0
    );
    assert!(stack.gw.events_of("history_trimmed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stt_drop_mid_utterance_reconnects_without_losing_words() {
    let mut stack = stack(
        vec![rule(
            "appointment",
            Reply::Text("Confirmed for Tuesday.".into()),
        )],
        |c| c.turn.speculate_after_ms = 0,
    )
    .await;
    stack.listen.push_script([HELLO]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(until_bot_done(&mut stack, &mut sim, 1, 8_000).await);
    // The recognizer's socket is cut 1.5 s into the caller's sentence.
    stack.listen.drop_after_audio_ms(1_500);
    sim.say_in(200, wav("caller_hello.wav"));
    assert!(
        until_bot_done(&mut stack, &mut sim, 2, 15_000).await,
        "{:?}",
        kinds(&mut stack)
    );
    assert_eq!(stack.gw.events_of("stt_reconnected").len(), 1);
    assert_eq!(user_turns(&mut stack), vec![HELLO]);
    let requests = stack.chat.requests().len();
    let last = request_messages(&stack.chat, requests - 1);
    assert_eq!(last.last().unwrap().1, HELLO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tts_failure_falls_back_to_the_pre_synthesized_line() {
    let mut stack = stack(
        vec![rule(
            "appointment",
            Reply::Text("Confirmed for Tuesday.".into()),
        )],
        |c| c.turn.speculate_after_ms = 0,
    )
    .await;
    stack.listen.push_script([HELLO]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(until_bot_done(&mut stack, &mut sim, 1, 8_000).await);
    // Both the socket and the REST fallback fail for the answer.
    stack.speak.drop_ws_mid_audio();
    stack.speak.rest_error_next(500);
    let before = sim.media_count();
    sim.say_in(200, wav("caller_hello.wav"));
    assert!(
        until_bot_done(&mut stack, &mut sim, 2, 15_000).await,
        "{:?}",
        kinds(&mut stack)
    );
    assert_eq!(
        stack.gw.events_of("tts_failed").len(),
        1,
        "{:?}",
        kinds(&mut stack)
    );
    let fallback = stack.gw.events_of("fallback_played");
    assert_eq!(fallback.len(), 1);
    assert_eq!(fallback[0]["stage"], "tts");
    // The caller heard the fallback line, not silence.
    assert!(sim.media_count() > before + 10);
}

/// Points the gateway's Twilio REST account at `twilio` (the stream simulator then signs its
/// upgrades with the same auth token).
fn use_twilio(config: &mut Config, twilio: &FakeTwilioRest) {
    config.twilio.account_sid = Some(twilio.account_sid().to_owned());
    config.auth.twilio_auth_token = Some(twilio.auth_token().to_owned());
    config.twilio.base_url = twilio.base_url();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_call_tool_transfers_after_saying_so() {
    let twilio = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let mut stack = stack(
        vec![rule(
            "human",
            Reply::Tool {
                name: "transfer_call".into(),
                arguments: serde_json::json!({"to": "+1 (415) 555-0123"}),
                then: "Transferring you now.".into(),
            },
        )],
        |c| {
            c.turn.speculate_after_ms = 0;
            use_twilio(c, &twilio);
        },
    )
    .await;
    stack
        .listen
        .push_script(["I want to talk to a human please."]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(until_bot_done(&mut stack, &mut sim, 1, 8_000).await);
    sim.say_in(200, wav("caller_hello.wav"));
    sim.run_until(20_000, |s| s.closed).await;
    let close = sim.close.clone().expect("closed with a frame");
    assert_eq!(close.0, 1000, "{close:?}");
    assert!(close.1.starts_with("transfer to +1"), "{close:?}");
    let tool = stack.gw.events_of("tool_called");
    assert_eq!(tool[0]["name"], "transfer_call");
    assert_eq!(
        tool[0]["result"]["transferring_to"], "+14155550123",
        "{tool:?}"
    );
    assert_eq!(
        stack.gw.events_of("transfer_requested")[0]["to"],
        "+14155550123"
    );
    let ended = stack.gw.events_of("call_ended");
    assert_eq!(ended[0]["reason"], "transfer");
    // The transfer line was said (and played) before the call was handed over.
    let transfer_line = Config::default().conversation.transfer_line;
    assert!(stack.speak.spoken_texts().contains(&transfer_line));
    assert_eq!(stack.gw.events_of("bot_speech_finished").len(), 2);
    // Twilio was asked to redirect this very call to a <Dial> of the number.
    let requests = twilio.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0]
            .path
            .ends_with(&format!("/Calls/{CALL_SID}.json"))
    );
    assert_eq!(
        requests[0].param("Twiml"),
        Some("<Response><Dial>+14155550123</Dial></Response>")
    );
    assert_eq!(requests[0].status, 200);
    assert_eq!(
        twilio.call(CALL_SID).unwrap().dialed,
        vec!["+14155550123".to_owned()]
    );
    assert!(stack.gw.events_of("transfer_failed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transfer_keeps_the_call_going_and_the_model_is_told() {
    let twilio = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    // The call cannot be redirected: Twilio answers 400 with code 21220.
    twilio.set_call_status(CALL_SID, "completed");
    const APOLOGY: &str = "Sorry, I could not put you through. Shall I take a message?";
    let mut stack = stack(
        vec![
            rule(
                "human",
                Reply::Tool {
                    name: "transfer_call".into(),
                    arguments: serde_json::json!({"to": "+14155550123"}),
                    then: "Transferring you now.".into(),
                },
            ),
            rule("did not go through", Reply::Text(APOLOGY.into())),
        ],
        |c| {
            c.turn.speculate_after_ms = 0;
            use_twilio(c, &twilio);
        },
    )
    .await;
    stack
        .listen
        .push_script(["I want to talk to a human please."]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::twilio()).await;
    assert!(until_bot_done(&mut stack, &mut sim, 1, 8_000).await);
    sim.say_in(200, wav("caller_hello.wav"));
    // Greeting, transfer line, then the model's answer to the failed transfer.
    assert!(
        until_bot_done(&mut stack, &mut sim, 3, 20_000).await,
        "{:?}",
        kinds(&mut stack)
    );
    assert!(!sim.closed, "the call goes on: {:?}", sim.close);
    let failed = stack.gw.events_of("transfer_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["to"], "+14155550123");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("code 21220"),
        "{failed:?}"
    );
    assert_eq!(twilio.requests()[0].status, 400);
    // The model heard of it and answered in its own words, and the caller heard that.
    let told = (0..stack.chat.requests().len()).any(|n| {
        request_messages(&stack.chat, n)
            .iter()
            .any(|(role, content)| role == "user" && content.contains("did not go through"))
    });
    assert!(told, "the model was not told");
    assert!(
        stack
            .speak
            .spoken_texts()
            .iter()
            .any(|t| t.contains("could not put you through"))
    );
    assert!(stack.gw.events_of("call_ended").is_empty());
    sim.stop().await;
    sim.wait_close(std::time::Duration::from_secs(5)).await;
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_tool_hangs_up_after_the_goodbye() {
    let mut stack = stack(
        vec![rule(
            "bye",
            Reply::Tool {
                name: "end_call".into(),
                arguments: serde_json::json!({"reason": "caller said goodbye"}),
                then: "Bye.".into(),
            },
        )],
        |c| c.turn.speculate_after_ms = 0,
    )
    .await;
    stack.listen.push_script(["That's all, bye."]);
    let mut sim = CarrierSim::connect(&stack.gw, SimConfig::exotel(8000)).await;
    assert!(until_bot_done(&mut stack, &mut sim, 1, 8_000).await);
    sim.say_in(200, wav("caller_yes.wav"));
    sim.run_until(20_000, |s| s.closed).await;
    let close = sim.close.clone().expect("closed with a frame");
    assert_eq!(close.0, 1000);
    assert!(
        close.1.contains("end_call: caller said goodbye"),
        "{close:?}"
    );
    let goodbye = Config::default().conversation.goodbye_line;
    assert!(stack.speak.spoken_texts().contains(&goodbye));
    assert_eq!(stack.gw.events_of("bot_speech_finished").len(), 2);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}
