//! Unit tests of the `script:<name>` agent, driven event by event with in-memory prompt audio,
//! a scripted model and a synthetic synthesizer (the end-to-end tests are in
//! `tests/script_calls.rs`).

use super::*;
use crate::call::agent::{AgentPort, UtteranceIds};
use crate::call::conversation::{ConversationConfig, ConversationDeps};
use crate::call::reply::FallbackAudio;
use crate::call::{CallId, CallInfo};
use crate::carrier::{CarrierKind, MediaFormat};
use crate::llm::prompt::PromptTemplate;
use crate::llm::tools::{Toolbox, ToolsConfig};
use crate::llm::{ChatModel, ChatRequest, FinishReason, LlmDelta, LlmFailure, LlmStream, ToolCall};
use crate::script::flow::{Settings, Template, TemplatePart, Transition};
use crate::script::prompts::{PromptError, PromptSource};
use crate::tts::{SynthesisStats, TtsError, TtsProvider, TtsVoice};
use std::collections::HashSet;
use std::sync::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

// ---- Fakes ----

/// Prompt audio: `cached` texts are in memory; others are synthesized after `delay_ms`
/// (100 samples per character); texts containing "FAIL" cannot be synthesized.
struct Prompts {
    cached: HashSet<String>,
    delay_ms: u64,
    synthesized: Mutex<Vec<String>>,
}

fn clip_for(text: &str) -> PromptClip {
    Arc::from(vec![500i16; text.len() * 100])
}

#[async_trait::async_trait]
impl PromptSource for Prompts {
    fn cached(&self, text: &str) -> Option<PromptClip> {
        self.cached.contains(text).then(|| clip_for(text))
    }

    async fn synthesize(&self, text: &str) -> Result<PromptClip, PromptError> {
        if let Ok(mut log) = self.synthesized.lock() {
            log.push(text.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        if text.contains("FAIL") {
            return Err(PromptError::Synthesis("voice refused".into()));
        }
        Ok(clip_for(text))
    }
}

/// A model that answers each request with the next scripted reply and keeps the requests.
#[derive(Default)]
struct Model {
    replies: Mutex<VecDeque<Vec<LlmDelta>>>,
    requests: Mutex<Vec<Vec<ChatMessage>>>,
    /// The tools offered with each request.
    tools: Mutex<Vec<Vec<String>>>,
}

#[async_trait::async_trait]
impl ChatModel for Model {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn stream(&self, request: ChatRequest) -> Result<LlmStream, LlmFailure> {
        if let Ok(mut log) = self.requests.lock() {
            log.push(request.messages.clone());
        }
        if let Ok(mut log) = self.tools.lock() {
            log.push(request.tools.iter().map(|t| t.name.clone()).collect());
        }
        let deltas = self
            .replies
            .lock()
            .ok()
            .and_then(|mut r| r.pop_front())
            .unwrap_or_else(|| vec![LlmDelta::Text("Okay.".into())]);
        let mut items: Vec<Result<LlmDelta, crate::llm::LlmError>> =
            deltas.into_iter().map(Ok).collect();
        items.push(Ok(LlmDelta::Finished {
            reason: FinishReason::Stop,
            usage: None,
        }));
        Ok(LlmStream {
            retries: Vec::new(),
            deltas: Box::pin(futures::stream::iter(items)),
        })
    }
}

/// A synthesizer that makes 10 ms of tone per character.
struct Tts;

struct Voice(u32);

#[async_trait::async_trait]
impl TtsVoice for Voice {
    async fn synthesize(
        &mut self,
        text: &str,
        out: &mpsc::Sender<Vec<i16>>,
        _cancel: &CancellationToken,
    ) -> Result<SynthesisStats, TtsError> {
        let samples = text.len() * self.0 as usize / 100;
        let _ = out.send(vec![300i16; samples]).await;
        Ok(SynthesisStats {
            first_byte: Some(Duration::from_millis(1)),
            samples: samples as u64,
            fallback: false,
            cancelled: false,
        })
    }

    async fn close(&mut self) {}
}

impl TtsProvider for Tts {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn voice(&self, sample_rate: u32) -> Box<dyn TtsVoice> {
        Box::new(Voice(sample_rate))
    }
}

// ---- Flows ----

fn text(t: &str) -> Template {
    Template::text(t)
}

fn to(name: &str) -> Target {
    Target::Node { name: name.into() }
}

fn keys(list: &[&str], target: Target) -> Transition {
    Transition {
        trigger: Trigger::Keys {
            keys: list
                .iter()
                .map(|k| match k.strip_prefix('"') {
                    Some(p) => Key::Phrase(p.trim_end_matches('"').to_owned()),
                    None => Key::Digits((*k).to_owned()),
                })
                .collect(),
        },
        target,
    }
}

fn on(trigger: Trigger, target: Target) -> Transition {
    Transition { trigger, target }
}

fn node(name: &str, prompt: Option<&str>, transitions: Vec<Transition>) -> Node {
    Node {
        name: name.into(),
        prompt: prompt.map(text),
        reprompt: None,
        agent: None,
        transitions,
    }
}

const START: &str = "Press 1 or say yes to confirm, 2 or no to reschedule.";
const REPROMPT: &str = "Sorry, press 1 to confirm or 2 to reschedule.";
const CONFIRMED: &str = "Wonderful, see you then. Goodbye!";
const RESCHEDULE: &str = "When would suit you better?";
const GOODBYE: &str = "Sorry, I couldn't understand. Goodbye.";

/// The appointment flow of the language reference, trimmed.
fn appointment() -> Flow {
    Flow {
        settings: Settings {
            no_input_timeout_ms: 150,
            digit_timeout_ms: 150,
            ..Settings::default()
        },
        nodes: vec![
            Node {
                reprompt: Some(text(REPROMPT)),
                ..node(
                    "start",
                    Some(START),
                    vec![
                        keys(&["1", "\"yes\"", "\"i can\""], to("confirmed")),
                        keys(&["2", "\"no\"", "\"can't\""], to("reschedule")),
                        keys(
                            &["0", "\"person\""],
                            Target::Transfer {
                                to: "+14155550100".into(),
                                otherwise: Some(Box::new(to("reschedule"))),
                            },
                        ),
                        keys(&["42#"], to("secret")),
                        on(Trigger::Timeout { after_ms: None }, to("still_there")),
                    ],
                )
            },
            node(
                "confirmed",
                Some(CONFIRMED),
                vec![on(Trigger::Always, Target::End)],
            ),
            node(
                "reschedule",
                Some(RESCHEDULE),
                vec![on(Trigger::Any, to("confirmed"))],
            ),
            node("still_there", Some("Are you still there?"), vec![]),
            node("secret", Some("Secret menu."), vec![]),
        ],
    }
}

// ---- Harness ----

struct Call {
    agent: ScriptAgent,
    ctx: AgentContext,
    rx: mpsc::Receiver<AgentAction>,
    model: Arc<Model>,
    prompts: Arc<Prompts>,
}

struct Setup {
    flow: Flow,
    cached: Vec<String>,
    params: Vec<(&'static str, &'static str)>,
    delay_ms: u64,
    with_model: bool,
    replies: Vec<Vec<LlmDelta>>,
}

impl Setup {
    fn new(flow: Flow) -> Self {
        let cached = [START, REPROMPT, CONFIRMED, RESCHEDULE, GOODBYE]
            .iter()
            .map(|t| t.to_string())
            .collect();
        Setup {
            flow,
            cached,
            params: Vec::new(),
            delay_ms: 20,
            with_model: false,
            replies: Vec::new(),
        }
    }

    fn start(self) -> Call {
        let prompts = Arc::new(Prompts {
            cached: self.cached.into_iter().collect(),
            delay_ms: self.delay_ms,
            synthesized: Mutex::new(Vec::new()),
        });
        let model = Arc::new(Model {
            replies: Mutex::new(self.replies.into_iter().collect()),
            requests: Mutex::new(Vec::new()),
            tools: Mutex::new(Vec::new()),
        });
        let conversation = self.with_model.then(|| {
            Arc::new(ConversationDeps {
                config: ConversationConfig::default(),
                prompt: PromptTemplate::parse("You help callers of {{ tenantName | us }}.")
                    .unwrap(),
                greeting: None,
                model: model.clone(),
                tts: Arc::new(Tts),
                toolbox: Arc::new(Toolbox::new(ToolsConfig::default()).unwrap()),
                fallback_audio: Arc::new(FallbackAudio::default()),
            })
        });
        let script = Arc::new(LoadedScript {
            name: "appointments".into(),
            flow: Arc::new(self.flow),
            hash: "h".into(),
            prompts: prompts.clone(),
            conversation,
            defaults: HashMap::new(),
        });
        let start = StreamStart {
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            from: Some("+14155550123".into()),
            to: Some("+14155550999".into()),
            tracks: Vec::new(),
            custom_parameters: self
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            media_format: MediaFormat {
                encoding: crate::audio::Encoding::Mulaw,
                sample_rate: 8000,
                channels: 1,
            },
        };
        assert!(script_agent_factory(script.clone())(&start).is_ok());
        let info = Arc::new(CallInfo::from_start(
            CallId::new(),
            CarrierKind::Twilio,
            &start,
            "script:appointments",
        ));
        let (tx, rx) = mpsc::channel(64);
        let ctx = AgentContext::new(info, AgentPort::new(tx, UtteranceIds::default()));
        Call {
            agent: ScriptAgent::new(script),
            ctx,
            rx,
            model,
            prompts,
        }
    }
}

impl Call {
    /// Hands the agent one event; returns what it did.
    fn send(&mut self, event: AgentEvent) -> Vec<AgentAction> {
        self.agent.on_event(event, &mut self.ctx);
        self.ctx.take_actions()
    }

    /// Waits up to `ms` for one action from the agent's tasks: a wake message is handed back
    /// to the agent (and what it did is returned); anything else is returned as it is.
    async fn next(&mut self, ms: u64) -> Vec<AgentAction> {
        match tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await {
            Ok(Some(AgentAction::Wake(message))) => self.send(AgentEvent::Wake(message)),
            Ok(Some(other)) => vec![other],
            _ => Vec::new(),
        }
    }

    /// Runs the agent's tasks until `done` holds for what was collected, or `ms` passes.
    async fn until(&mut self, ms: u64, done: impl Fn(&[AgentAction]) -> bool) -> Vec<AgentAction> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        let mut all = Vec::new();
        while !done(&all) && Instant::now() < deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            all.extend(self.next(left.max(1)).await);
        }
        all
    }

    /// The utterance's audio played to its end.
    fn played(&mut self, utterance: UtteranceId) -> Vec<AgentAction> {
        let mut out = self.send(AgentEvent::SpeechStarted { utterance });
        out.extend(self.send(AgentEvent::SpeechFinished { utterance }));
        out
    }

    fn turn(&mut self, transcript: &str) -> Vec<AgentAction> {
        let mut out = self.send(AgentEvent::UserSpeechStarted);
        out.extend(self.send(AgentEvent::UserTurnEnded(UserTurn {
            audio: Vec::new(),
            transcript: Some(transcript.to_owned()),
            speech_end: Instant::now(),
            decided: Instant::now(),
        })));
        out
    }

    fn key(&mut self, digit: char) -> Vec<AgentAction> {
        self.send(AgentEvent::Dtmf {
            digit,
            source: DtmfSource::Carrier,
        })
    }

    fn history(&self) -> Vec<(String, String)> {
        roles(self.agent.history())
    }
}

fn roles(messages: &[ChatMessage]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| match m {
            ChatMessage::System { content } => ("system".into(), content.clone()),
            ChatMessage::User { content } => ("user".into(), content.clone()),
            ChatMessage::Assistant { content, .. } => {
                ("assistant".into(), content.clone().unwrap_or_default())
            }
            ChatMessage::Tool { content, .. } => ("tool".into(), content.clone()),
        })
        .collect()
}

/// The texts said (streamed), with their utterances.
fn said(actions: &[AgentAction]) -> Vec<(UtteranceId, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            AgentAction::Stream {
                utterance,
                part: SpeechPart::Text(text),
            } => Some((*utterance, text.clone())),
            _ => None,
        })
        .collect()
}

/// The utterance of the last text said.
fn last_said(actions: &[AgentAction]) -> UtteranceId {
    said(actions)
        .last()
        .map(|(u, _)| *u)
        .expect("something said")
}

fn texts(actions: &[AgentAction]) -> Vec<String> {
    said(actions).into_iter().map(|(_, t)| t).collect()
}

/// The CallEvents recorded, as JSON.
fn events(actions: &[AgentAction]) -> Vec<serde_json::Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            AgentAction::Record(kind) => serde_json::to_value(kind).ok(),
            _ => None,
        })
        .collect()
}

fn of(actions: &[AgentAction], kind: &str) -> Vec<serde_json::Value> {
    events(actions)
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

fn entered(actions: &[AgentAction]) -> Vec<String> {
    of(actions, "script_node_entered")
        .iter()
        .map(|e| e["node"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn hangup(actions: &[AgentAction]) -> Option<String> {
    actions.iter().find_map(|a| match a {
        AgentAction::Hangup { reason } => Some(reason.clone()),
        _ => None,
    })
}

fn cancels(actions: &[AgentAction]) -> Vec<UtteranceId> {
    actions
        .iter()
        .filter_map(|a| match a {
            AgentAction::Cancel { utterance } => Some(*utterance),
            _ => None,
        })
        .collect()
}

// ---- Tests ----

#[tokio::test]
async fn a_cached_prompt_plays_in_the_same_event_and_a_key_routes() {
    let mut call = Setup::new(appointment()).start();
    let started = call.send(AgentEvent::CallStarted);
    assert_eq!(entered(&started), ["start"]);
    // Text, audio and end of the prompt, straight from memory.
    let parts: Vec<&SpeechPart> = started
        .iter()
        .filter_map(|a| match a {
            AgentAction::Stream { part, .. } => Some(part),
            _ => None,
        })
        .collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], &SpeechPart::Text(START.into()));
    assert!(
        matches!(parts[1], SpeechPart::Audio { pcm, sample_rate: 8000 } if pcm.len() == START.len() * 100)
    );
    assert_eq!(parts[2], &SpeechPart::End);
    let prompt = &of(&started, "script_prompt")[0];
    assert_eq!(
        (
            prompt["node"].as_str(),
            prompt["kind"].as_str(),
            prompt["cached"].as_bool()
        ),
        (Some("start"), Some("prompt"), Some(true))
    );
    let first = last_said(&started);
    call.send(AgentEvent::SpeechStarted { utterance: first });
    // A key over the prompt stops it at once and routes.
    let pressed = call.key('2');
    assert_eq!(cancels(&pressed), [first]);
    let input = &of(&pressed, "script_input")[0];
    assert_eq!(input["source"], "dtmf");
    assert_eq!(input["input"], "2");
    assert_eq!(input["transition"], 1);
    assert_eq!(input["key"], "2");
    assert_eq!(entered(&pressed), ["reschedule"]);
    assert_eq!(texts(&pressed), [RESCHEDULE]);
    assert!(hangup(&pressed).is_none());
    // The history has the prompt as far as it was heard (nothing, just started) and the key.
    assert_eq!(
        call.history(),
        [
            ("user".to_string(), "(pressed 2)".to_string()),
            ("assistant".to_string(), RESCHEDULE.to_string()),
        ]
    );
}

#[tokio::test]
async fn words_route_by_phrase_and_spoken_digit() {
    for (words, node) in [
        ("Yes, that works.", "confirmed"),
        ("Sorry, I can't.", "reschedule"),
        ("Two.", "reschedule"),
        ("I'd like a person please", "confirmed"),
    ] {
        let mut flow = appointment();
        // Without a recognizer-friendly `0`, "person" goes to confirmed through `any`.
        flow.nodes[0].transitions[2] = keys(&["\"person\""], to("confirmed"));
        let mut call = Setup::new(flow).start();
        let u = last_said(&call.send(AgentEvent::CallStarted));
        call.played(u);
        let out = call.turn(words);
        assert_eq!(entered(&out), [node], "{words}");
        let input = &of(&out, "script_input")[0];
        assert_eq!(input["source"], "speech");
        assert_eq!(input["input"], words);
        assert_eq!(
            call.history()[..2],
            [
                ("assistant".to_string(), START.to_string()),
                ("user".to_string(), words.to_string())
            ]
        );
    }
}

#[tokio::test]
async fn no_match_reprompts_then_takes_nomatch_or_says_goodbye() {
    let mut flow = appointment();
    flow.nodes[0]
        .transitions
        .push(on(Trigger::NoMatch, to("reschedule")));
    let mut call = Setup::new(flow).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    for count in 1..=2u64 {
        let out = call.turn("What?");
        assert_eq!(of(&out, "script_no_match")[0]["count"], count);
        assert_eq!(texts(&out), [REPROMPT]);
        assert_eq!(of(&out, "script_prompt")[0]["kind"], "reprompt");
        assert!(of(&out, "script_input")[0].get("transition").is_none());
        let u = last_said(&out);
        call.played(u);
    }
    let out = call.turn("Huh?");
    assert_eq!(of(&out, "script_no_match")[0]["count"], 3);
    assert_eq!(entered(&out), ["reschedule"]);

    // Without a nomatch transition: the goodbye, then the hang-up once it has played.
    let mut call = Setup::new(appointment()).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    for _ in 0..2 {
        let u = last_said(&call.key('9'));
        call.played(u);
    }
    let out = call.key('9');
    assert_eq!(texts(&out), [GOODBYE]);
    assert_eq!(of(&out, "script_prompt")[0]["kind"], "goodbye");
    assert!(hangup(&out).is_none(), "not before the goodbye has played");
    // Keys during the goodbye are ignored.
    assert!(call.key('1').is_empty());
    let u = last_said(&out);
    let out = call.played(u);
    assert_eq!(hangup(&out).as_deref(), Some("no match at [start]"));
}

#[tokio::test]
async fn silence_takes_the_timeout_or_counts_as_a_no_match() {
    let mut call = Setup::new(appointment()).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    // No timer while the prompt plays.
    assert!(call.next(250).await.is_empty());
    call.played(u);
    let out = call
        .until(1_000, |a| !of(a, "script_no_input").is_empty())
        .await;
    assert_eq!(of(&out, "script_no_input")[0]["after_ms"], 150);
    assert_eq!(entered(&out), ["still_there"]);

    // No timeout transition: silence is reprompted.
    let mut flow = appointment();
    flow.nodes[0].transitions.pop();
    let mut call = Setup::new(flow).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    let out = call.until(1_000, |a| !said(a).is_empty()).await;
    assert_eq!(of(&out, "script_no_match")[0]["count"], 1);
    assert_eq!(texts(&out), [REPROMPT]);
}

// On a paused clock: the timer's arithmetic is checked exactly, whatever the machine's load.
#[tokio::test(start_paused = true)]
async fn the_caller_speaking_pauses_the_silence_timer() {
    let mut call = Setup::new(appointment()).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.send(AgentEvent::UserSpeechStarted);
    // Paused: it does not run out while the caller speaks.
    assert!(call.next(300).await.is_empty());
    // A cough: the timer resumes with what it had left (about 50 ms).
    call.send(AgentEvent::UserNoise);
    let resumed = tokio::time::Instant::now();
    let out = call
        .until(1_000, |a| !of(a, "script_no_input").is_empty())
        .await;
    // 150 ms if it had started over.
    let waited = resumed.elapsed();
    assert!(waited <= Duration::from_millis(60), "{waited:?}");
    assert_eq!(entered(&out), ["still_there"]);
}

#[tokio::test]
async fn multi_key_entries_wait_for_the_next_key() {
    let mut call = Setup::new(appointment()).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    assert!(entered(&call.key('4')).is_empty());
    assert!(entered(&call.key('2')).is_empty());
    let out = call.key('#');
    assert_eq!(entered(&out), ["secret"]);
    assert_eq!(of(&out, "script_input")[0]["input"], "42#");

    // A prefix left alone: the digit timeout completes it as a no-match.
    let mut call = Setup::new(appointment()).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    call.key('4');
    let out = call
        .until(1_000, |a| !of(a, "script_no_match").is_empty())
        .await;
    assert_eq!(of(&out, "script_input")[0]["input"], "4");
    assert_eq!(texts(&out), [REPROMPT]);
}

#[tokio::test]
async fn end_hangs_up_once_the_prompt_has_played() {
    let mut call = Setup::new(appointment()).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    let out = call.key('1');
    assert_eq!(entered(&out), ["confirmed"]);
    assert!(hangup(&out).is_none());
    let u = last_said(&out);
    call.send(AgentEvent::SpeechStarted { utterance: u });
    let out = call.send(AgentEvent::SpeechFinished { utterance: u });
    assert_eq!(hangup(&out).as_deref(), Some("script ended at [confirmed]"));
    // Nothing more after the hang-up.
    assert!(call.key('1').is_empty());
    assert!(call.send(AgentEvent::CallEnding).is_empty());
}

#[tokio::test]
async fn a_missing_variable_ends_the_call_politely_and_says_which() {
    let mut flow = appointment();
    flow.nodes[0].prompt = Some(Template {
        parts: vec![
            TemplatePart::Text("Hi ".into()),
            TemplatePart::Var {
                name: "firstName".into(),
                fallback: Some("there".into()),
            },
            TemplatePart::Text(", this is ".into()),
            TemplatePart::Var {
                name: "tenantName".into(),
                fallback: None,
            },
            TemplatePart::Text(".".into()),
        ],
    });
    let mut call = Setup::new(flow.clone()).start();
    let out = call.send(AgentEvent::CallStarted);
    let failed = &of(&out, "script_failed")[0];
    assert_eq!(failed["missing"], serde_json::json!(["tenantName"]));
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("`tenantName` (needed by start)"),
        "{failed}"
    );
    assert!(entered(&out).is_empty());
    assert_eq!(texts(&out), [GOODBYE]);
    let out = call.played(last_said(&out));
    assert!(hangup(&out).unwrap().contains("tenantName"));

    // The goodbye not in memory: hang up at once, in silence.
    let mut setup = Setup::new(flow.clone());
    setup.cached.clear();
    let mut call = setup.start();
    let out = call.send(AgentEvent::CallStarted);
    assert!(said(&out).is_empty());
    assert!(hangup(&out).unwrap().contains("tenantName"));

    // Given: the prompt is synthesized for the call and plays when ready.
    let mut setup = Setup::new(flow);
    setup.params = vec![("tenantName", "Acme Dental"), ("firstName", " ")];
    let mut call = setup.start();
    let out = call.send(AgentEvent::CallStarted);
    assert!(said(&out).is_empty(), "not ready yet");
    let out = call.until(1_000, |a| !said(a).is_empty()).await;
    assert_eq!(texts(&out), ["Hi there, this is Acme Dental."]);
    assert_eq!(of(&out, "script_prompt")[0]["cached"], false);
    let synthesized = call.prompts.synthesized.lock().unwrap().clone();
    assert_eq!(
        synthesized
            .iter()
            .filter(|t| *t == "Hi there, this is Acme Dental.")
            .count(),
        1,
        "{synthesized:?}"
    );
}

#[tokio::test]
async fn prompts_are_prepared_ahead_and_a_synthesis_failure_ends_politely() {
    let mut flow = appointment();
    flow.nodes[2].prompt = Some(text("Let me FAIL this."));
    let mut setup = Setup::new(flow);
    setup.cached.retain(|t| t != CONFIRMED);
    let mut call = setup.start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    // The warm-up prepares the uncached prompts in the background.
    call.until(500, |_| false).await;
    let mut done = call.prompts.synthesized.lock().unwrap().clone();
    done.sort();
    assert_eq!(
        done,
        [
            CONFIRMED,
            "Let me FAIL this.",
            "Are you still there?",
            "Secret menu."
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .tap_sort()
    );
    call.played(u);
    // Prepared: it plays at once, marked as synthesized for the call.
    let out = call.key('1');
    assert_eq!(texts(&out), [CONFIRMED]);
    assert_eq!(of(&out, "script_prompt")[0]["cached"], false);

    // A prompt that cannot be made: retried when needed, then the call ends politely.
    let mut flow = appointment();
    flow.nodes[2].prompt = Some(text("Let me FAIL this."));
    let mut call = Setup::new(flow).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    // The warm-up fails for it in the meantime.
    call.until(200, |_| false).await;
    call.played(u);
    let out = call.key('2');
    assert!(said(&out).is_empty(), "{:?}", texts(&out));
    let out = call.until(1_000, |a| !said(a).is_empty()).await;
    let failed = &of(&out, "script_failed")[0];
    assert!(
        failed["reason"].as_str().unwrap().contains("[reschedule]"),
        "{failed}"
    );
    assert_eq!(texts(&out), [GOODBYE]);
    let out = call.played(last_said(&out));
    assert!(hangup(&out).unwrap().contains("cannot synthesize"));
}

trait TapSort {
    fn tap_sort(self) -> Self;
}

impl TapSort for Vec<String> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}

#[tokio::test]
async fn a_failed_transfer_goes_to_else_or_says_goodbye() {
    let mut call = Setup::new(appointment()).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    let out = call.turn("Can I talk to a person?");
    assert!(
        out.iter()
            .any(|a| matches!(a, AgentAction::Transfer { to } if to == "+14155550100"))
    );
    // Input while the carrier works on it is ignored.
    assert!(call.key('1').is_empty());
    let out = call.send(AgentEvent::TransferFailed {
        to: "+14155550100".into(),
        error: "no twilio account".into(),
    });
    assert_eq!(entered(&out), ["reschedule"]);

    let mut flow = appointment();
    flow.nodes[0].transitions[2] = keys(
        &["0"],
        Target::Transfer {
            to: "+14155550100".into(),
            otherwise: None,
        },
    );
    let mut call = Setup::new(flow).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    call.key('0');
    let out = call.send(AgentEvent::TransferFailed {
        to: "+14155550100".into(),
        error: "no twilio account".into(),
    });
    assert_eq!(texts(&out), [GOODBYE]);
    let out = call.played(last_said(&out));
    let reason = hangup(&out).unwrap();
    assert!(
        reason.contains("transfer to +14*******00 failed"),
        "{reason}"
    );
}

#[tokio::test]
async fn sms_is_sent_with_its_variables_then_the_call_goes_on() {
    let mut flow = appointment();
    flow.nodes[0].transitions[0] = keys(
        &["1"],
        Target::Sms {
            text: Template {
                parts: vec![
                    TemplatePart::Text("See you at ".into()),
                    TemplatePart::Var {
                        name: "clinic".into(),
                        fallback: Some("the clinic".into()),
                    },
                ],
            },
            then: Box::new(to("confirmed")),
        },
    );
    let mut setup = Setup::new(flow);
    setup.params = vec![("clinic", "Acme Dental")];
    let mut call = setup.start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    let out = call.key('1');
    assert!(out.iter().any(|a| matches!(
        a,
        AgentAction::Sms { to: None, body } if body == "See you at Acme Dental"
    )));
    assert_eq!(of(&out, "script_prompt")[0]["kind"], "sms");
    assert_eq!(of(&out, "script_prompt")[0]["chars"], 22);
    assert_eq!(entered(&out), ["confirmed"]);
}

#[tokio::test]
async fn speech_over_an_unconditional_prompt_is_tried_in_the_next_node() {
    let mut flow = appointment();
    flow.nodes.insert(
        0,
        node(
            "start",
            Some("Welcome to Acme Dental."),
            vec![on(Trigger::Always, to("menu"))],
        ),
    );
    flow.nodes[1].name = "menu".into();
    let mut setup = Setup::new(flow.clone());
    setup.cached.push("Welcome to Acme Dental.".into());
    let mut call = setup.start();
    let welcome = last_said(&call.send(AgentEvent::CallStarted));
    call.send(AgentEvent::SpeechStarted { utterance: welcome });
    call.send(AgentEvent::UserSpeechStarted);
    let out = call.send(AgentEvent::BargeIn(Heard {
        utterance: welcome,
        heard_ms: 600,
        sent_ms: 800,
        total_ms: 1500,
        heard_text: Some("Welcome to".into()),
        text: Some("Welcome to Acme Dental.".into()),
    }));
    assert!(entered(&out).is_empty(), "waits for the caller's turn");
    let out = call.turn("yes I can make it");
    assert_eq!(entered(&out), ["menu", "confirmed"]);
    assert!(
        texts(&out).iter().all(|t| t != START),
        "the menu was skipped"
    );
    assert_eq!(
        call.history()[..2],
        [
            ("assistant".to_string(), "Welcome to…".to_string()),
            ("user".to_string(), "yes I can make it".to_string()),
        ]
    );

    // Words that fit nothing there: the next node's prompt plays as usual.
    let mut setup = Setup::new(flow.clone());
    setup.cached.push("Welcome to Acme Dental.".into());
    let mut call = setup.start();
    let welcome = last_said(&call.send(AgentEvent::CallStarted));
    call.send(AgentEvent::BargeIn(Heard {
        utterance: welcome,
        heard_ms: 600,
        sent_ms: 800,
        total_ms: 1500,
        heard_text: Some("Welcome to".into()),
        text: None,
    }));
    let out = call.turn("hello?");
    assert_eq!(entered(&out), ["menu"]);
    assert_eq!(texts(&out), [START]);
    assert!(of(&out, "script_no_match").is_empty());

    // A key over it: the prompt stops at once and the key counts in the next node.
    let mut setup = Setup::new(flow);
    setup.cached.push("Welcome to Acme Dental.".into());
    let mut call = setup.start();
    let welcome = last_said(&call.send(AgentEvent::CallStarted));
    let out = call.key('2');
    assert_eq!(cancels(&out), [welcome]);
    assert_eq!(entered(&out), ["menu", "reschedule"]);
}

#[tokio::test]
async fn barge_in_keeps_the_heard_words_and_the_caller_answers() {
    let mut call = Setup::new(appointment()).start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.send(AgentEvent::SpeechStarted { utterance: u });
    call.send(AgentEvent::UserSpeechStarted);
    let out = call.send(AgentEvent::BargeIn(Heard {
        utterance: u,
        heard_ms: 900,
        sent_ms: 1000,
        total_ms: 4000,
        heard_text: Some("Press 1 or say".into()),
        text: Some(START.into()),
    }));
    assert!(cancels(&out).is_empty(), "the session already cleared it");
    // A noise instead of words: the silence timer starts now (the prompt never finished).
    call.send(AgentEvent::UserNoise);
    let out = call
        .until(1_000, |a| !of(a, "script_no_input").is_empty())
        .await;
    assert_eq!(entered(&out), ["still_there"]);
    assert_eq!(
        call.history()[0],
        ("assistant".to_string(), "Press 1 or say…".to_string())
    );
}

#[tokio::test]
async fn transcripts_are_wanted_only_when_the_flow_listens_for_words() {
    let digits_only = Flow {
        settings: Settings::default(),
        nodes: vec![node(
            "start",
            Some("Press 1."),
            vec![keys(&["1"], Target::End)],
        )],
    };
    assert!(!needs_transcripts(&digits_only));
    assert!(
        !Setup::new(digits_only.clone())
            .start()
            .agent
            .wants_transcripts()
    );
    assert!(needs_transcripts(&appointment()));
    let mut any = digits_only.clone();
    any.nodes[0].transitions.push(on(Trigger::Any, Target::End));
    assert!(needs_transcripts(&any));
    let mut handoff = digits_only;
    handoff.nodes[0].transitions[0] = keys(
        &["1"],
        Target::Sms {
            text: text("x"),
            then: Box::new(Target::Agent),
        },
    );
    assert!(needs_model(&handoff));
    assert!(needs_transcripts(&handoff));
}

#[tokio::test]
async fn a_flow_needing_the_model_is_refused_without_one() {
    let mut flow = appointment();
    flow.nodes[0].transitions[2] = keys(&["0"], Target::Agent);
    let script = Arc::new(LoadedScript {
        name: "needs_llm".into(),
        flow: Arc::new(flow),
        hash: "h".into(),
        prompts: Arc::new(Prompts {
            cached: HashSet::new(),
            delay_ms: 0,
            synthesized: Mutex::new(Vec::new()),
        }),
        conversation: None,
        defaults: HashMap::new(),
    });
    let start = StreamStart {
        stream_sid: "MZ1".into(),
        call_sid: "CA1".into(),
        account_sid: "AC1".into(),
        from: None,
        to: None,
        tracks: Vec::new(),
        custom_parameters: Default::default(),
        media_format: MediaFormat {
            encoding: crate::audio::Encoding::Mulaw,
            sample_rate: 8000,
            channels: 1,
        },
    };
    match script_agent_factory(script)(&start) {
        Err(AgentError::Unsuitable { agent, reason }) => {
            assert_eq!(agent, "script:needs_llm");
            assert!(reason.contains("language model"));
        }
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
}

// ---- The language model ----

fn route_call(outcome: &str) -> LlmDelta {
    LlmDelta::ToolCalls(vec![ToolCall {
        id: "call_1".into(),
        name: "route".into(),
        arguments: format!("{{\"outcome\":\"{outcome}\"}}"),
    }])
}

/// Runs the model's tasks until it has said something complete; returns what came, and the
/// utterance of the last streamed end.
async fn model_speaks(call: &mut Call) -> (Vec<AgentAction>, Option<UtteranceId>) {
    let out = call
        .until(2_000, |a| {
            a.iter().any(|x| {
                matches!(
                    x,
                    AgentAction::Stream {
                        part: SpeechPart::End,
                        ..
                    }
                )
            })
        })
        .await;
    let end = out.iter().rev().find_map(|a| match a {
        AgentAction::Stream {
            utterance,
            part: SpeechPart::End,
        } => Some(*utterance),
        _ => None,
    });
    (out, end)
}

#[tokio::test]
async fn an_agent_node_answers_the_turn_that_led_there_and_routes_back() {
    let mut flow = appointment();
    flow.nodes[2] = Node {
        name: "reschedule".into(),
        prompt: None,
        reprompt: None,
        agent: Some(Template {
            parts: vec![
                TemplatePart::Text("Find a new time for ".into()),
                TemplatePart::Var {
                    name: "firstName".into(),
                    fallback: Some("the caller".into()),
                },
                TemplatePart::Text(".".into()),
            ],
        }),
        transitions: vec![
            keys(&["\"booked\""], to("confirmed")),
            keys(&["\"gave up\""], Target::End),
        ],
    };
    let mut setup = Setup::new(flow);
    setup.with_model = true;
    setup.params = vec![("firstName", "Priya")];
    setup.replies = vec![
        vec![LlmDelta::Text("Sure, does Thursday at ten work?".into())],
        vec![
            LlmDelta::Text("Great, Thursday at ten it is.".into()),
            route_call("booked"),
        ],
    ];
    let mut call = setup.start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    let out = call.turn("No, I can't make it.");
    assert_eq!(entered(&out), ["reschedule"]);
    let handoff = &of(&out, "script_handoff")[0];
    assert_eq!(
        handoff["outcomes"],
        serde_json::json!(["booked", "gave up"])
    );
    // The model answers the turn that led here at once.
    let (_, answer) = model_speaks(&mut call).await;
    let request = call.model.requests.lock().unwrap()[0].clone();
    let request = roles(&request);
    assert_eq!(request[0].0, "system");
    assert!(request[0].1.contains("You help callers of us."));
    assert!(request[0].1.contains("Find a new time for Priya."));
    assert_eq!(
        request[1..],
        [
            ("assistant".to_string(), START.to_string()),
            ("user".to_string(), "No, I can't make it.".to_string()),
        ]
    );
    call.played(answer.expect("an answer"));
    // The model's report of its answer.
    call.until(200, |_| false).await;
    // The caller answers; the model confirms and chooses "booked".
    call.turn("Thursday is fine.");
    let (out, words) = model_speaks(&mut call).await;
    assert!(
        of(&out, "script_route").is_empty(),
        "not before its words have played"
    );
    let mut out = call.played(words.expect("words"));
    // The choice comes back with the model's report, through the port.
    out.extend(
        call.until(1_000, |a| !of(a, "script_route").is_empty())
            .await,
    );
    let route = &of(&out, "script_route")[0];
    assert_eq!(route["node"], "reschedule");
    assert_eq!(route["outcome"], "booked");
    assert_eq!(route["target"], "confirmed");
    assert_eq!(entered(&out), ["confirmed"]);
    assert_eq!(texts(&out), [CONFIRMED]);
    // The script's history now holds the model's part of the conversation.
    let history = call.history();
    assert_eq!(
        history[history.len() - 4..],
        [
            (
                "assistant".to_string(),
                "Sure, does Thursday at ten work?".to_string()
            ),
            ("user".to_string(), "Thursday is fine.".to_string()),
            (
                "assistant".to_string(),
                "Great, Thursday at ten it is.".to_string()
            ),
            ("assistant".to_string(), CONFIRMED.to_string()),
        ][..]
    );
    // The route tool was offered with the node's outcomes.
    let tools = call.model.tools.lock().unwrap().clone();
    assert_eq!(tools.len(), 2);
    assert!(
        tools.iter().all(|t| t.contains(&"route".to_string())),
        "{tools:?}"
    );
}

#[tokio::test]
async fn the_agent_target_hands_over_for_good() {
    let mut flow = appointment();
    flow.nodes[0].transitions[2] = keys(&["0", "\"person\""], Target::Agent);
    let mut setup = Setup::new(flow);
    setup.with_model = true;
    setup.replies = vec![vec![LlmDelta::Text("Hi, how can I help?".into())]];
    let mut call = setup.start();
    let u = last_said(&call.send(AgentEvent::CallStarted));
    call.played(u);
    let out = call.key('0');
    let handoff = &of(&out, "script_handoff")[0];
    assert_eq!(handoff["node"], "start");
    assert_eq!(handoff["outcomes"], serde_json::json!([]));
    let (_, said_u) = model_speaks(&mut call).await;
    let request = roles(&call.model.requests.lock().unwrap()[0]);
    assert_eq!(
        request[1..],
        [
            ("assistant".to_string(), START.to_string()),
            ("user".to_string(), "(pressed 0)".to_string()),
        ]
    );
    call.played(said_u.expect("said"));
    // Keys and words now go to the model; the script does not route them.
    let out = call.key('1');
    assert!(entered(&out).is_empty());
    assert!(of(&out, "script_input").is_empty());
    model_speaks(&mut call).await;
    let tools = call.model.tools.lock().unwrap().clone();
    assert_eq!(tools.len(), 2);
    assert!(
        tools.iter().all(|t| !t.contains(&"route".to_string())),
        "{tools:?}"
    );
    assert!(tools[0].contains(&"end_call".to_string()));
}

#[tokio::test]
async fn a_flow_going_round_in_silence_ends_instead_of_spinning() {
    let flow = Flow {
        settings: Settings::default(),
        nodes: vec![
            node("start", None, vec![on(Trigger::Always, to("a"))]),
            node("a", None, vec![on(Trigger::Always, to("start"))]),
        ],
    };
    let mut call = Setup::new(flow).start();
    let out = call.send(AgentEvent::CallStarted);
    let failed = &of(&out, "script_failed")[0];
    assert!(
        failed["reason"].as_str().unwrap().contains("goes round"),
        "{failed}"
    );
    assert_eq!(texts(&out), [GOODBYE]);
    assert_eq!(entered(&out), ["start", "a"]);

    // Going round through prompts is a flow like any other.
    let flow = Flow {
        settings: Settings::default(),
        nodes: vec![
            node("start", Some(START), vec![on(Trigger::Always, to("a"))]),
            node("a", None, vec![on(Trigger::Always, to("start"))]),
        ],
    };
    let mut call = Setup::new(flow).start();
    let mut u = last_said(&call.send(AgentEvent::CallStarted));
    for _ in 0..5 {
        let out = call.played(u);
        assert!(of(&out, "script_failed").is_empty());
        assert_eq!(entered(&out), ["a", "start"]);
        u = last_said(&out);
    }
}
