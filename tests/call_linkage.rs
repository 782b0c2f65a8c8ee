//! Calls the control plane creates reach their stream: a carrier stream whose `start` carries
//! `call_id` = a call expected in the registry (or found through the call directory) becomes
//! that call — its CallEvents and live handle use the store's id, its variables reach the
//! agent, its own agent factory serves it. A `call_id` that names nothing is recorded and the
//! stream runs the default agent. Everything over real WebSockets against a test gateway.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use voicegw::call::agent::{Agent, AgentContext, AgentEvent, AgentFactory};
use voicegw::call::registry::{Control, ExpectedCall};
use voicegw::call::{CallDirectory, CallId};
use voicegw::script::prompts::{LoadedScript, PROMPT_RATE, PromptClip, PromptError, PromptSource};
use voicegw::script::{parse, script_agent_factory, script_hash};

const WAIT: Duration = Duration::from_secs(5);

fn params(pairs: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn variables(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The events recorded under `call_id`, as JSON.
fn events_of_call(gw: &mut TestGateway, call_id: CallId) -> Vec<Value> {
    gw.events()
        .iter()
        .filter(|e| e.call_id == call_id)
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

/// What a probe agent saw of its call.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The custom parameters of the `start` its factory was given.
    start_parameters: BTreeMap<String, String>,
    /// The call's info at `CallStarted`: custom parameters and agent name.
    info_parameters: BTreeMap<String, String>,
    agent: String,
    call_id: Option<CallId>,
}

/// An agent that only notes what it was given.
struct Probe {
    seen: Arc<Mutex<Seen>>,
}

impl Agent for Probe {
    fn on_event(&mut self, event: AgentEvent, ctx: &mut AgentContext) {
        if let AgentEvent::CallStarted = event {
            let mut seen = self.seen.lock().unwrap();
            seen.info_parameters = ctx.info().custom_parameters.clone();
            seen.agent = ctx.info().agent.clone();
            seen.call_id = Some(ctx.info().call_id);
        }
    }
}

fn probe_factory(seen: Arc<Mutex<Seen>>) -> AgentFactory {
    Arc::new(move |start| {
        seen.lock().unwrap().start_parameters = start.custom_parameters.clone();
        Ok(Box::new(Probe { seen: seen.clone() }) as Box<dyn Agent>)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_call_runs_under_the_store_id_and_hangs_up_by_it() {
    let mut gw = TestGateway::start(test_config()).await;
    let registry = gw.gateway.registry();
    let store_id = CallId::new();
    let mut expected = ExpectedCall::new(store_id, "echo");
    expected.tenant_id = Some("tenant-1".into());
    registry.expect(&store_id.to_string(), expected);

    let mut sim = CarrierSim::connect_with(
        &gw,
        SimConfig::twilio(),
        params(&[("call_id", &store_id.to_string())]),
    )
    .await;
    let started = gw
        .wait_event("stream_started", WAIT)
        .await
        .expect("started");
    assert_eq!(started["call_id"], store_id.to_string());
    assert_eq!(started["agent"], "echo");
    assert_eq!(started["seq"], 1);
    assert_eq!(registry.expected_len(), 0, "the expectation is used up");
    assert!(registry.contains(store_id));
    assert_eq!(registry.tenant_of(store_id).as_deref(), Some("tenant-1"));
    assert_eq!(registry.get(store_id).unwrap().call_id, store_id);

    sim.run_for(200).await;
    registry
        .send(
            store_id,
            Control::Hangup {
                reason: "api".into(),
            },
        )
        .unwrap();
    let close = sim.wait_close(WAIT).await;
    assert_eq!(close, Some((1000, "hangup: api".into())));
    let ended = gw.wait_event("call_ended", WAIT).await.expect("ended");
    assert_eq!(ended["call_id"], store_id.to_string());
    assert_eq!(ended["reason"], "hangup");

    // Every event of the call is under the store's id, numbered without gaps.
    let events = events_of_call(&mut gw, store_id);
    assert_eq!(events.len(), gw.events().len());
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert!(
        !registry.contains(store_id),
        "the ended call left the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_variables_reach_the_catalog_agent_and_the_call_info() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let factory = probe_factory(seen.clone());
    let mut gw = TestGateway::start_with_pipeline(test_config(), move |pipeline, _| {
        pipeline.agents.register("probe", factory);
    })
    .await;
    let store_id = CallId::new();
    let mut expected = ExpectedCall::new(store_id, "probe");
    expected.variables = variables(&[("name", "Asha"), ("lang", "hi"), ("call_id", "forged")]);
    gw.gateway
        .registry()
        .expect(&store_id.to_string(), expected);

    let mut sim = CarrierSim::connect_with(
        &gw,
        SimConfig::twilio(),
        params(&[
            ("call_id", &store_id.to_string()),
            ("lang", "en"),
            ("campaign", "spring"),
        ]),
    )
    .await;
    let started = gw
        .wait_event("stream_started", WAIT)
        .await
        .expect("started");
    assert_eq!(started["agent"], "probe");
    let want = variables(&[
        ("call_id", &store_id.to_string()),
        ("name", "Asha"),
        ("lang", "hi"),
        ("campaign", "spring"),
    ]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.start_parameters, want);
    assert_eq!(seen.info_parameters, want);
    assert_eq!(seen.agent, "probe");
    assert_eq!(seen.call_id, Some(store_id));
    sim.stop().await;
    assert_eq!(sim.wait_close(WAIT).await.map(|c| c.0), Some(1000));
}

/// Prompt audio for the script test: a short tone for any text, and the texts asked for.
#[derive(Default)]
struct TonePrompts {
    asked: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl PromptSource for TonePrompts {
    fn cached(&self, _text: &str) -> Option<PromptClip> {
        None
    }

    async fn synthesize(&self, text: &str) -> Result<PromptClip, PromptError> {
        self.asked.lock().unwrap().push(text.to_owned());
        let tone: Vec<i16> = (0..PROMPT_RATE / 5)
            .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
            .collect();
        Ok(Arc::from(tone))
    }
}

fn greeting_script(prompts: Arc<TonePrompts>) -> AgentFactory {
    let flow = parse(
        "\
[start]
Hello {{ name }}, your slot is {{ slot }}.
-> END
",
    )
    .unwrap()
    .flow;
    script_agent_factory(Arc::new(LoadedScript {
        name: "greeting".into(),
        hash: script_hash(&flow),
        flow: Arc::new(flow),
        prompts,
        conversation: None,
        defaults: HashMap::new(),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_calls_own_factory_serves_it_with_its_variables() {
    let mut gw = TestGateway::start(test_config()).await;
    let prompts = Arc::new(TonePrompts::default());
    let store_id = CallId::new();
    let mut expected = ExpectedCall::new(store_id, "script:greeting");
    expected.factory = Some(greeting_script(prompts.clone()));
    expected.variables = variables(&[("name", "Asha"), ("slot", "9 am")]);
    gw.gateway
        .registry()
        .expect(&store_id.to_string(), expected);

    let mut sim = CarrierSim::connect_with(
        &gw,
        SimConfig::twilio(),
        params(&[("call_id", &store_id.to_string()), ("slot", "never")]),
    )
    .await;
    sim.run_until(8_000, |s| s.closed).await;
    sim.wait_close(WAIT).await;
    assert_eq!(
        sim.close,
        Some((1000, "agent hangup: script ended at [start]".into()))
    );
    // The call's variables win over the stream's (`slot`); the goodbye line may be prepared
    // in the background too.
    let asked = prompts.asked.lock().unwrap().clone();
    assert!(
        asked.contains(&"Hello Asha, your slot is 9 am.".to_string()),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|t| t.contains("never")), "{asked:?}");
    let started = gw.wait_event("stream_started", WAIT).await.unwrap();
    assert_eq!(started["agent"], "script:greeting");
    assert_eq!(started["call_id"], store_id.to_string());
    assert!(gw.events_of("script_failed").is_empty());
    let prompt = &gw.events_of("script_prompt")[0];
    assert_eq!(prompt["call_id"], store_id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_call_id_is_recorded_and_runs_the_default_agent() {
    let mut gw = TestGateway::start(test_config()).await;
    let unknown = CallId::new();
    let mut sim = CarrierSim::connect_with(
        &gw,
        SimConfig::twilio(),
        params(&[("call_id", &unknown.to_string())]),
    )
    .await;
    let started = gw
        .wait_event("stream_started", WAIT)
        .await
        .expect("started");
    assert_eq!(started["agent"], "echo");
    assert_ne!(started["call_id"], unknown.to_string());
    let unlinked = &gw.events_of("call_not_linked")[0];
    assert_eq!(
        unlinked["call_id"], started["call_id"],
        "recorded under the stream's own id"
    );
    assert_eq!(unlinked["requested_id"], unknown.to_string());
    assert_eq!(unlinked["reason"], "not_expected");
    // The stream named it as a parameter; it is a call of its own, and it runs.
    let own: CallId = started["call_id"].as_str().unwrap().parse().unwrap();
    assert!(gw.gateway.registry().contains(own));
    assert!(!gw.gateway.registry().contains(unknown));
    sim.run_for(300).await;
    assert!(!sim.closed);
    sim.stop().await;
    assert_eq!(sim.wait_close(WAIT).await.map(|c| c.0), Some(1000));
    assert!(events_of_call(&mut gw, unknown).is_empty());
}

/// A directory of calls created "on another instance", with a log of lookups; `stall`
/// makes every lookup hang.
#[derive(Default)]
struct MemoryDirectory {
    calls: Mutex<HashMap<String, ExpectedCall>>,
    asked: Mutex<Vec<String>>,
    stall: bool,
}

#[async_trait::async_trait]
impl CallDirectory for MemoryDirectory {
    async fn resolve(&self, call_id: &str) -> Option<ExpectedCall> {
        self.asked.lock().unwrap().push(call_id.to_owned());
        if self.stall {
            std::future::pending::<()>().await;
        }
        self.calls.lock().unwrap().remove(call_id)
    }
}

async fn gateway_with(directory: Arc<MemoryDirectory>) -> TestGateway {
    TestGateway::start_with_gateway(
        test_config(),
        |_, _| {},
        move |gateway| gateway.with_call_directory(directory),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_created_elsewhere_is_found_through_the_directory() {
    let directory = Arc::new(MemoryDirectory::default());
    let store_id = CallId::new();
    let mut expected = ExpectedCall::new(store_id, "echo");
    expected.tenant_id = Some("tenant-2".into());
    directory
        .calls
        .lock()
        .unwrap()
        .insert(store_id.to_string(), expected);
    let mut gw = gateway_with(directory.clone()).await;
    let registry = gw.gateway.registry();

    let mut sim = CarrierSim::connect_with(
        &gw,
        SimConfig::twilio(),
        params(&[("call_id", &store_id.to_string())]),
    )
    .await;
    let started = gw
        .wait_event("stream_started", WAIT)
        .await
        .expect("started");
    assert_eq!(started["call_id"], store_id.to_string());
    assert_eq!(
        directory.asked.lock().unwrap().as_slice(),
        [store_id.to_string()]
    );
    assert_eq!(registry.tenant_of(store_id).as_deref(), Some("tenant-2"));

    // A name the directory does not know: recorded, default agent.
    let missing = CallId::new();
    let mut other = CarrierSim::connect_with(
        &gw,
        SimConfig::twilio(),
        params(&[("call_id", &missing.to_string())]),
    )
    .await;
    let unlinked = gw
        .wait_event("call_not_linked", WAIT)
        .await
        .expect("unlinked");
    assert_eq!(unlinked["reason"], "not_found");
    assert_eq!(unlinked["requested_id"], missing.to_string());
    assert_eq!(directory.asked.lock().unwrap().len(), 2);
    other.stop().await;
    other.wait_close(WAIT).await;

    registry
        .send(
            store_id,
            Control::Hangup {
                reason: "done".into(),
            },
        )
        .unwrap();
    assert_eq!(sim.wait_close(WAIT).await.map(|c| c.0), Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_does_not_answer_delays_the_call_without_losing_it() {
    let directory = Arc::new(MemoryDirectory {
        stall: true,
        ..MemoryDirectory::default()
    });
    let mut gw = gateway_with(directory.clone()).await;
    let wanted = CallId::new();
    let mut sim = CarrierSim::connect_with(
        &gw,
        SimConfig::twilio(),
        params(&[("call_id", &wanted.to_string())]),
    )
    .await;
    // The carrier keeps sending while the lookup waits; the call must survive it.
    sim.run_until(6_000, |_| false).await;
    assert!(!sim.closed, "closed: {:?}", sim.close);
    let unlinked = &gw.events_of("call_not_linked")[0];
    assert_eq!(unlinked["reason"], "directory_timeout");
    let started = &gw.events_of("stream_started")[0];
    assert_eq!(started["agent"], "echo");
    assert_ne!(started["call_id"], wanted.to_string());
    assert_eq!(directory.asked.lock().unwrap().len(), 1);
    assert!(gw.events_of("bad_frame").is_empty());
    sim.stop().await;
    assert_eq!(sim.wait_close(WAIT).await.map(|c| c.0), Some(1000));
    // Every media frame sent during the lookup was queued and then handled.
    let sent = sim.sent_samples / 160;
    assert!(sent >= 250, "{sent}");
    let handled = gw
        .gateway
        .metrics()
        .frames_in
        .with_label_values(&["twilio"])
        .get();
    assert_eq!(handled, sent);
}
