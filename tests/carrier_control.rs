//! Carrier control against the fake Twilio REST API: transfers (Calls update with `<Dial>`
//! TwiML) and texts (Messages) as the gateway's control makes them, with Twilio's refusals,
//! retries and bad credentials; and the same actions asked for by an agent during a call over a
//! real WebSocket, with the outcome the session records and tells the agent.
//!
//! The `llm` agent's `transfer_call` tool reaching the fake is tested end to end in
//! `tests/conversation.rs`.

mod common;
mod fakes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use fakes::twilio_rest::{
    ACCOUNT_SID, AUTH_TOKEN, CALL_SID, FakeTwilioConfig, FakeTwilioRest, Fault, OUR_NUMBER,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voicegw::audio::Encoding;
use voicegw::call::agent::AgentFactory;
use voicegw::call::carrier_control::{self, GatewayControl};
use voicegw::call::control::{CarrierControl, ControlError};
use voicegw::call::events::{CallEvent, EventSink};
use voicegw::call::registry::Registry;
use voicegw::call::session::{CallSettings, SessionDeps};
use voicegw::call::transport::serve_call;
use voicegw::call::{Agent, AgentAction, AgentCatalog, AgentContext, AgentEvent, CallId, CallInfo};
use voicegw::carrier::{CarrierKind, MediaFormat};
use voicegw::config::Config;
use voicegw::metrics::Metrics;

const CALLER: &str = "+14155550100";
const AGENT_DESK: &str = "+14155550123";

/// A config whose Twilio account is the fake's.
fn config_for(fake: &FakeTwilioRest) -> Config {
    let mut config = Config::default();
    config.twilio.account_sid = Some(fake.account_sid().to_owned());
    config.auth.twilio_auth_token = Some(fake.auth_token().to_owned());
    config.twilio.base_url = fake.base_url();
    config
}

fn control(config: &Config) -> GatewayControl {
    GatewayControl::from_config(config).unwrap()
}

fn call_info(carrier: CarrierKind, params: &[(&str, &str)]) -> CallInfo {
    let (call_sid, account_sid, from, to) = match carrier {
        CarrierKind::Twilio => (CALL_SID, ACCOUNT_SID, None, None),
        CarrierKind::Exotel => (
            "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
            "exotel-account",
            Some("+919876543210".to_owned()),
            Some("+918047491899".to_owned()),
        ),
    };
    CallInfo {
        call_id: CallId::new(),
        carrier,
        stream_sid: "MZ18ad3ab5a668481ce02b83e7395059f0".into(),
        call_sid: call_sid.into(),
        account_sid: account_sid.into(),
        from,
        to,
        custom_parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        media_format: MediaFormat {
            encoding: Encoding::Mulaw,
            sample_rate: 8000,
            channels: 1,
        },
        agent: "test".into(),
        started_at: SystemTime::now(),
    }
}

/// An inbound Twilio call whose numbers came as `<Parameter>`s.
fn inbound_twilio() -> CallInfo {
    call_info(CarrierKind::Twilio, &[("from", CALLER), ("to", OUR_NUMBER)])
}

fn refused_code(error: &ControlError) -> Option<(u16, &str)> {
    match error {
        ControlError::Refused { status, code, .. } => Some((*status, code.as_deref()?)),
        _ => None,
    }
}

#[tokio::test]
async fn a_transfer_redirects_the_call_to_a_dial_of_the_number() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let control = control(&config_for(&fake));
    control
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json")
    );
    assert_eq!(request.basic_user.as_deref(), Some(ACCOUNT_SID));
    assert!(request.password_ok);
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        request.form,
        vec![(
            "Twiml".to_owned(),
            "<Response><Dial>+14155550123</Dial></Response>".to_owned()
        )]
    );
    assert_eq!(request.status, 200);
    let call = fake.call(CALL_SID).unwrap();
    assert_eq!(call.dialed, vec![AGENT_DESK.to_owned()]);
    assert_eq!(call.status, "in-progress");
}

#[tokio::test]
async fn a_configured_caller_id_goes_on_the_dial() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let mut config = config_for(&fake);
    config.twilio.caller_id = Some(OUR_NUMBER.into());
    control(&config)
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap();
    assert_eq!(
        fake.requests()[0].param("Twiml"),
        Some("<Response><Dial callerId=\"+18005551212\">+14155550123</Dial></Response>")
    );
}

#[tokio::test]
async fn a_subaccount_call_is_updated_under_its_own_account() {
    let sub = "ACfedcba9876543210fedcba9876543210";
    let fake = FakeTwilioRest::start(FakeTwilioConfig {
        subaccounts: vec![sub.into()],
        ..FakeTwilioConfig::default()
    })
    .await;
    let call_sid = "CAfedcba9876543210fedcba9876543210";
    fake.add_call(sub, call_sid);
    let mut call = inbound_twilio();
    call.account_sid = sub.into();
    call.call_sid = call_sid.into();
    control(&config_for(&fake))
        .transfer(&call, AGENT_DESK)
        .await
        .unwrap();
    let request = &fake.requests()[0];
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{sub}/Calls/{call_sid}.json")
    );
    assert_eq!(request.basic_user.as_deref(), Some(ACCOUNT_SID));
}

#[tokio::test]
async fn transferring_a_call_that_ended_is_refused_with_21220() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    fake.set_call_status(CALL_SID, "completed");
    let error = control(&config_for(&fake))
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap_err();
    assert_eq!(refused_code(&error), Some((400, "21220")), "{error}");
    assert!(error.to_string().contains("Cannot redirect"), "{error}");
    assert_eq!(fake.requests().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn transferring_an_unknown_call_is_refused_with_20404() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    fake.remove_call(CALL_SID);
    let error = control(&config_for(&fake))
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap_err();
    assert_eq!(refused_code(&error), Some((404, "20404")), "{error}");
}

#[tokio::test]
async fn bad_numbers_and_sids_fail_before_any_request() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let control = control(&config_for(&fake));
    for to in ["4155550123", "+1 415 555 0123", "", "+14155550123</Dial>"] {
        let error = control.transfer(&inbound_twilio(), to).await.unwrap_err();
        assert!(matches!(error, ControlError::Invalid(_)), "{to:?}: {error}");
    }
    let mut call = inbound_twilio();
    call.call_sid = "CA../../Messages".into();
    let error = control.transfer(&call, AGENT_DESK).await.unwrap_err();
    assert!(matches!(error, ControlError::Invalid(_)), "{error}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_text_goes_from_the_calls_own_number() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let control = control(&config_for(&fake));
    let receipt = control
        .send_sms(
            &inbound_twilio(),
            CALLER,
            "Your booking: Tue 10:00 & 50% off",
        )
        .await
        .unwrap();
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        receipt.message_id.as_deref(),
        Some(messages[0].sid.as_str())
    );
    assert!(messages[0].sid.starts_with("SM") && messages[0].sid.len() == 34);
    assert_eq!(messages[0].from, OUR_NUMBER, "inbound: the number called");
    assert_eq!(messages[0].to, CALLER);
    assert_eq!(messages[0].body, "Your booking: Tue 10:00 & 50% off");
    let request = &fake.requests()[0];
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(request.names(), vec!["To", "From", "Body"]);
    assert_eq!(request.status, 201);

    // An outbound call was placed from our number: `from` is ours, `to` the person called.
    let outbound = call_info(
        CarrierKind::Twilio,
        &[
            ("direction", "outbound-api"),
            ("from", OUR_NUMBER),
            ("to", CALLER),
        ],
    );
    control.send_sms(&outbound, CALLER, "Hi").await.unwrap();
    assert_eq!(fake.messages()[1].from, OUR_NUMBER);
}

#[tokio::test]
async fn a_text_needs_the_calls_own_number() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let call = call_info(CarrierKind::Twilio, &[("from", CALLER)]);
    let error = control(&config_for(&fake))
        .send_sms(&call, CALLER, "Hi")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ControlError::Invalid(m) if m.contains("<Parameter>")),
        "{error}"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn an_overlong_text_is_refused_before_sending() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let error = control(&config_for(&fake))
        .send_sms(&inbound_twilio(), CALLER, &"x".repeat(1601))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ControlError::Invalid(
            "the message body is 1601 characters; Twilio takes at most 1600".into()
        )
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_text_to_an_opted_out_caller_is_refused_with_21610() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig {
        opted_out: vec![CALLER.into()],
        ..FakeTwilioConfig::default()
    })
    .await;
    let error = control(&config_for(&fake))
        .send_sms(&inbound_twilio(), CALLER, "Hi")
        .await
        .unwrap_err();
    assert_eq!(refused_code(&error), Some((400, "21610")), "{error}");
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn twilio_error_messages_are_masked() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig {
        numbers: vec!["+18005550000".into()],
        ..FakeTwilioConfig::default()
    })
    .await;
    let error = control(&config_for(&fake))
        .send_sms(&inbound_twilio(), CALLER, "Hi")
        .await
        .unwrap_err();
    assert_eq!(refused_code(&error), Some((400, "21606")), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("+18*******12") && !text.contains(OUR_NUMBER),
        "{text}"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_a_backoff() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    fake.push_fault(Fault::TooManyRequests {
        retry_after: Some("0".into()),
    });
    let control = control(&config_for(&fake));
    let started = Instant::now();
    control
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let requests = fake.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    assert_eq!(requests[0].code, Some(20429));
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert_eq!(fake.call(CALL_SID).unwrap().dialed.len(), 1);

    // A text is retried on 429 too: Twilio did not process the request.
    fake.push_fault(Fault::TooManyRequests { retry_after: None });
    control
        .send_sms(&inbound_twilio(), CALLER, "Hi")
        .await
        .unwrap();
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn retries_stop_within_the_budget() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let control = control(&config_for(&fake));
    // A Retry-After longer than the budget (500 ms) is not waited for.
    fake.push_fault(Fault::TooManyRequests {
        retry_after: Some("30".into()),
    });
    let started = Instant::now();
    let error = control
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap_err();
    // Waiting out the 30 s Retry-After would take far longer than this bound.
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(refused_code(&error), Some((429, "20429")), "{error}");
    assert_eq!(fake.requests().len(), 1);

    // Three 429s in a row use up the attempts (3) within 100 + 200 ms of backoff.
    for _ in 0..3 {
        fake.push_fault(Fault::TooManyRequests { retry_after: None });
    }
    let started = Instant::now();
    let error = control
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(refused_code(&error), Some((429, "20429")), "{error}");
    assert_eq!(fake.requests().len(), 4);
    assert!(fake.call(CALL_SID).unwrap().dialed.is_empty());
}

#[tokio::test]
async fn a_500_is_retried_for_a_transfer_but_not_for_a_text() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let control = control(&config_for(&fake));
    fake.push_fault(Fault::ServerError);
    control
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap();
    assert_eq!(
        fake.requests().len(),
        2,
        "the same redirect again is harmless"
    );

    fake.push_fault(Fault::ServerError);
    let error = control
        .send_sms(&inbound_twilio(), CALLER, "Hi")
        .await
        .unwrap_err();
    assert_eq!(refused_code(&error), Some((500, "20500")), "{error}");
    assert_eq!(
        fake.requests().len(),
        3,
        "a text that may have gone out is not sent twice"
    );
}

#[tokio::test]
async fn bad_credentials_are_refused_with_20003_and_not_retried() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let mut config = config_for(&fake);
    config.auth.twilio_auth_token = Some("wrong-token".into());
    let error = control(&config)
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap_err();
    assert_eq!(refused_code(&error), Some((401, "20003")), "{error}");
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].password_ok);
    assert!(!error.to_string().contains("wrong-token"));
}

#[tokio::test]
async fn an_unreachable_api_is_reported_as_such() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let mut config = Config::default();
    config.twilio.account_sid = Some(ACCOUNT_SID.into());
    config.auth.twilio_auth_token = Some(AUTH_TOKEN.into());
    config.twilio.base_url = format!("http://{closed}");
    let started = Instant::now();
    let error = control(&config)
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ControlError::Unreachable {
                carrier: "twilio",
                ..
            }
        ),
        "{error}"
    );
    // Connect failures are retried (100 + 200 ms), and no more.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn without_an_account_nothing_is_sent() {
    let control = control(&Config::default());
    let error = control
        .transfer(&inbound_twilio(), AGENT_DESK)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ControlError::NotConfigured {
            carrier: "twilio",
            action: "transfer"
        }
    );
    let error = control
        .send_sms(&inbound_twilio(), CALLER, "Hi")
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ControlError::NotConfigured {
            carrier: "twilio",
            action: "sms"
        }
    );
}

#[tokio::test]
async fn exotel_transfers_hand_the_call_back_to_the_flow_when_configured() {
    let exotel = call_info(CarrierKind::Exotel, &[]);
    let error = control(&Config::default())
        .transfer(&exotel, "+918040000000")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ControlError::Unsupported { carrier: "exotel", action: "transfer", reason } if reason.contains("exotel.flow_transfer")),
        "{error}"
    );
    let mut config = Config::default();
    config.exotel.flow_transfer = true;
    let control = control(&config);
    control.transfer(&exotel, "+918040000000").await.unwrap();
    let error = control
        .send_sms(&exotel, "+919876543210", "Hi")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ControlError::Unsupported {
                carrier: "exotel",
                action: "sms",
                ..
            }
        ),
        "{error}"
    );
}

/// The fake refuses what Twilio would, so the tests above can fail.
#[tokio::test]
async fn the_fake_refuses_malformed_requests() {
    use voicegw::carrier::twilio_api::encode_form;
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let http = reqwest::Client::new();
    let calls = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json",
        fake.base_url()
    );
    let messages = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        fake.base_url()
    );
    let post = |url: &str, form: &[(&str, &str)]| {
        http.post(url)
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(form))
            .send()
    };
    let long_body = "x".repeat(1601);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, u32);
    let cases: Vec<Case> = vec![
        (
            &calls,
            vec![("Twiml", "<Response><Dial>+14155550123</Response>")],
            400,
            20001,
        ),
        (
            &calls,
            vec![("Twiml", "<Dial>+14155550123</Dial>")],
            400,
            20001,
        ),
        (
            &calls,
            vec![("Twiml", "<Response><Say>a & b</Say></Response>")],
            400,
            20001,
        ),
        (
            &calls,
            vec![("Twiml", "<Response><Dial>4155550123</Dial></Response>")],
            400,
            20001,
        ),
        (
            &calls,
            vec![("Twiml", "<Response/>"), ("Url", "https://example.com/t")],
            400,
            20001,
        ),
        (&calls, vec![("TwiML", "<Response/>")], 400, 20001),
        (&calls, vec![("Status", "paused")], 400, 20001),
        (&messages, vec![("To", CALLER), ("Body", "Hi")], 400, 21603),
        (
            &messages,
            vec![("From", OUR_NUMBER), ("Body", "Hi")],
            400,
            21604,
        ),
        (
            &messages,
            vec![("To", "4155550100"), ("From", OUR_NUMBER), ("Body", "Hi")],
            400,
            21211,
        ),
        (
            &messages,
            vec![("To", CALLER), ("From", "+14155559999"), ("Body", "Hi")],
            400,
            21606,
        ),
        (
            &messages,
            vec![("To", CALLER), ("From", OUR_NUMBER)],
            400,
            21602,
        ),
        (
            &messages,
            vec![("To", CALLER), ("From", OUR_NUMBER), ("Body", &long_body)],
            400,
            21617,
        ),
    ];
    for (url, form, status, code) in cases {
        let response = post(url, &form).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{form:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{form:?}: {body}");
        assert_eq!(body["status"], status);
        assert!(body["message"].is_string() && body["more_info"].is_string());
    }
    let response = http
        .post(&calls)
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .json(&json!({"Twiml": "<Response/>"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "JSON is not a form");
    let response = http
        .post(&calls)
        .basic_auth(ACCOUNT_SID, None::<&str>)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let other_account = calls.replace(ACCOUNT_SID, "ACfedcba9876543210fedcba9876543210");
    let response = post(&other_account, &[("Twiml", "<Response/>")])
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(fake.messages().is_empty());
    assert!(fake.call(CALL_SID).unwrap().redirects.is_empty());
    // And accepts a well-formed one, comments, declaration and entities included.
    let twiml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- x --><Response>\
                 <Say voice='alice'>a &amp; b &#233;</Say><Dial callerId=\"+18005551212\">\
                 <Number>+14155550123</Number></Dial></Response>";
    let response = post(&calls, &[("Twiml", twiml)]).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sid"], CALL_SID);
    assert_eq!(body["status"], "in-progress");
    assert_eq!(
        fake.call(CALL_SID).unwrap().dialed,
        vec![AGENT_DESK.to_owned()]
    );
}

// ---------------------------------------------------------------------------------------------
// During a call: an agent asks, the session carries it out and records the outcome.

/// An agent that asks for `actions` when the call starts and hangs up when told a transfer
/// failed, naming the error (so the test sees that the agent was told).
struct Scripted {
    actions: Vec<AgentAction>,
}

impl Agent for Scripted {
    fn on_event(&mut self, event: AgentEvent, ctx: &mut AgentContext) {
        match event {
            AgentEvent::CallStarted => {
                for action in self.actions.drain(..) {
                    ctx.act(action);
                }
            }
            AgentEvent::TransferFailed { to, error } => {
                ctx.hangup(format!("told the transfer to {to} failed: {error}"));
            }
            _ => {}
        }
    }
}

/// A gateway that serves `/stream/{carrier}` with the [`Scripted`] agent and the control of
/// `config`.
struct Harness {
    addr: std::net::SocketAddr,
    events: mpsc::Receiver<CallEvent>,
    seen: Vec<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upgrade(
    State(deps): State<Arc<SessionDeps>>,
    Path(carrier): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let kind = if carrier == "exotel" {
        CarrierKind::Exotel
    } else {
        CarrierKind::Twilio
    };
    ws.on_upgrade(move |socket| serve_call(socket, kind, deps))
}

impl Harness {
    async fn start(config: &Config, actions: fn() -> Vec<AgentAction>) -> Harness {
        let mut agents = AgentCatalog::builtin("echo").unwrap();
        let factory: AgentFactory =
            Arc::new(move |_start| Ok(Box::new(Scripted { actions: actions() }) as Box<dyn Agent>));
        agents.register("scripted", factory);
        agents.set_default("scripted").unwrap();
        let (sender, events) = mpsc::channel(10_000);
        let deps = Arc::new(SessionDeps {
            settings: Arc::new(CallSettings::from_config(config).unwrap()),
            agents: Arc::new(agents),
            registry: Arc::new(Registry::new()),
            metrics: Metrics::new().unwrap(),
            events: EventSink::new(sender, None),
            hangup_all: CancellationToken::new(),
            stt: None,
            control: carrier_control::from_config(config).unwrap(),
            directory: None,
        });
        let app = Router::new()
            .route("/stream/{carrier}", get(upgrade))
            .with_state(deps);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Harness {
            addr,
            events,
            seen: Vec::new(),
            task,
        }
    }

    /// Opens a Twilio stream whose numbers come as custom parameters.
    async fn twilio_call(&self) -> common::Ws {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let mut ws = common::connect(&format!("ws://{}/stream/twilio", self.addr)).await;
        let stream_sid = "MZ18ad3ab5a668481ce02b83e7395059f0";
        for message in [
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            json!({
                "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                "start": {
                    "accountSid": ACCOUNT_SID, "streamSid": stream_sid, "callSid": CALL_SID,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"from": CALLER, "to": OUR_NUMBER},
                },
            }),
        ] {
            ws.send(Message::Text(message.to_string().into()))
                .await
                .unwrap();
        }
        ws
    }

    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(serde_json::to_value(&event).unwrap());
        }
    }

    fn events_of(&mut self, kind: &str) -> Vec<Value> {
        self.drain();
        self.seen
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    async fn wait_event(&mut self, kind: &str, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(event) = self.events_of(kind).into_iter().next() {
                return Some(event);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn stop(ws: &mut common::Ws) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let stop = json!({
        "event": "stop", "sequenceNumber": "2", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
    });
    let _ = ws.send(Message::Text(stop.to_string().into())).await;
}

fn transfer_to_desk() -> Vec<AgentAction> {
    vec![AgentAction::Transfer {
        to: AGENT_DESK.into(),
    }]
}

fn text_the_caller() -> Vec<AgentAction> {
    vec![AgentAction::Sms {
        to: None,
        body: "Your booking is confirmed for Tuesday at 10:00.".into(),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_transfer_redirects_the_call_and_ends_the_stream() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let mut harness = Harness::start(&config_for(&fake), transfer_to_desk).await;
    let mut ws = harness.twilio_call().await;
    let (close, _) = common::read_until_close(&mut ws, Duration::from_secs(5)).await;
    let (code, reason) = close.expect("the gateway closed the stream");
    assert_eq!(code, 1000);
    assert_eq!(reason, "transfer to +14*******23");
    assert_eq!(
        fake.call(CALL_SID).unwrap().dialed,
        vec![AGENT_DESK.to_owned()]
    );
    assert_eq!(harness.events_of("transfer_requested")[0]["to"], AGENT_DESK);
    let ended = harness
        .wait_event("call_ended", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(ended["reason"], "transfer");
    assert!(harness.events_of("transfer_failed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transfer_keeps_the_call_and_tells_the_agent() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    fake.set_call_status(CALL_SID, "completed");
    let mut harness = Harness::start(&config_for(&fake), transfer_to_desk).await;
    let mut ws = harness.twilio_call().await;
    let (close, _) = common::read_until_close(&mut ws, Duration::from_secs(5)).await;
    let (code, reason) = close.expect("the agent hung up");
    assert_eq!(code, 1000);
    assert!(
        reason.starts_with("agent hangup: told the transfer to +14155550123 failed: twilio refused (400, code 21220)"),
        "{reason}"
    );
    let failed = harness.events_of("transfer_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["to"], AGENT_DESK);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("code 21220"),
        "{failed:?}"
    );
    let ended = harness
        .wait_event("call_ended", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(ended["reason"], "agent_hangup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_text_is_recorded_with_the_message_id() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let mut harness = Harness::start(&config_for(&fake), text_the_caller).await;
    let mut ws = harness.twilio_call().await;
    let sent = harness
        .wait_event("sms_sent", Duration::from_secs(5))
        .await
        .expect("sms_sent recorded");
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(sent["message_id"], messages[0].sid.as_str());
    assert_eq!(sent["to"], CALLER);
    assert_eq!(sent["chars"], 47);
    assert_eq!(messages[0].from, OUR_NUMBER);
    assert_eq!(messages[0].to, CALLER);
    stop(&mut ws).await;
    let (close, _) = common::read_until_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(close.map(|c| c.0), Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_text_is_recorded_as_failed() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig {
        opted_out: vec![CALLER.into()],
        ..FakeTwilioConfig::default()
    })
    .await;
    let mut harness = Harness::start(&config_for(&fake), text_the_caller).await;
    let mut ws = harness.twilio_call().await;
    let failed = harness
        .wait_event("sms_failed", Duration::from_secs(5))
        .await
        .expect("sms_failed recorded");
    assert_eq!(failed["to"], CALLER);
    assert!(
        failed["error"].as_str().unwrap().contains("code 21610"),
        "{failed}"
    );
    assert!(harness.events_of("sms_sent").is_empty());
    stop(&mut ws).await;
    let _ = common::read_until_close(&mut ws, Duration::from_secs(5)).await;
}
