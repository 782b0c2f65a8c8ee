//! The carriers' webhooks over HTTP, without a carrier fake: Twilio's are refused unless
//! signed (and refused outright with no auth token), answering-machine verdicts (synchronous
//! on the answer TwiML, asynchronous on `/twilio/amd`), status callbacks with duration and
//! recording; Exotel's need Basic credentials, route inbound calls to a `wss://` stream URL
//! and take status callbacks as a form or JSON.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::calls::RecordingCarriers;
use common::control::TestControl;
use common::db::TestDb;
use common::test_config;
use serde_json::{Value, json};
use voicegw::carrier::signature::twilio_signature;
use voicegw::carrier::twilio_api::encode_form;
use voicegw::store::Scope;
use voicegw::store::tenants::{Plan, Role};

const TOKEN: &str = "webhook-test-token";
const EXOTEL: &str = "exokey:exotoken";
const NUMBER: &str = "+14155550199";
const CALLER: &str = "+14155550123";
const SID: &str = "CA0123456789abcdef0123456789abcdef";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

struct Gw {
    api: TestControl,
    key: String,
}

async fn start(db: TestDb, token: Option<&str>, carrier: &str) -> Gw {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config();
    config.auth.public_url = Some(format!("http://{}", listener.local_addr().unwrap()));
    config.auth.twilio_auth_token = token.map(str::to_owned);
    config.auth.exotel_credentials = Some(EXOTEL.to_owned());
    config.script.recorded_prompts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audio/prompts");
    let api =
        TestControl::start_on(listener, db, config, Arc::new(RecordingCarriers::default())).await;
    let store = &api.db.store;
    let tenant = store.create_tenant("acme", Plan::Full).await.unwrap();
    let (_, key) = store
        .create_api_key(Some(tenant.id), Role::Agent, "hooks")
        .await
        .unwrap();
    store
        .add_script_version(tenant.id, "hello", "[start]\nHello.\n-> END\n")
        .await
        .unwrap();
    let number = store
        .add_phone_number(tenant.id, NUMBER, carrier)
        .await
        .unwrap();
    store
        .set_number_script(Scope::Tenant(tenant.id), number.id, Some("hello"))
        .await
        .unwrap();
    Gw { api, key }
}

async fn post_twilio(gw: &Gw, path: &str, params: &[(&str, &str)], token: &str) -> (u16, String) {
    let url = gw.api.url(path);
    let response = gw
        .api
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", twilio_signature(token, &url, params))
        .body(encode_form(params))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

#[tokio::test]
async fn without_an_auth_token_twilio_webhooks_are_refused() {
    let gw = start(TestDb::sqlite().await, None, "twilio").await;
    let params = [
        ("CallSid", SID),
        ("AccountSid", ACCOUNT),
        ("CallStatus", "ringing"),
    ];
    let (status, body) = post_twilio(&gw, "/twilio/status", &params, "anything").await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "twilio_not_configured");
}

async fn verdicts_and_status_details(db: TestDb) {
    let gw = start(db, Some(TOKEN), "twilio").await;
    let created = gw
        .api
        .post(
            "/v1/calls",
            &gw.key,
            &json!({"to": CALLER, "from": NUMBER, "agent": "echo", "machine_detection": "enable"}),
        )
        .await;
    assert_eq!(created.0.as_u16(), 202, "{:?}", created.1);
    let id = created.1["id"].as_str().unwrap().to_owned();
    let sid = created.1["carrier_sid"].as_str().unwrap().to_owned();

    // The answer TwiML, with a synchronous verdict.
    let path = format!("/twilio/outbound?call_id={id}");
    let answer = [
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT),
        ("From", NUMBER),
        ("To", CALLER),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
        ("AnsweredBy", "human"),
    ];
    let (status, twiml) = post_twilio(&gw, &path, &answer, TOKEN).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Connect><Stream url=\"wss://"), "{twiml}");
    assert!(twiml.contains("/stream/twilio\""), "{twiml}");
    assert!(
        twiml.contains(&format!("<Parameter name=\"call_id\" value=\"{id}\"/>")),
        "{twiml}"
    );
    // Another call's SID with this call's id is not this call.
    let mut stranger = answer;
    stranger[0] = ("CallSid", SID);
    assert_eq!(post_twilio(&gw, &path, &stranger, TOKEN).await.0, 404);
    let (_, call) = gw.api.get(&format!("/v1/calls/{id}"), &gw.key).await;
    assert_eq!(call["answered_by"], "human");

    // An asynchronous verdict later, then the final callback with duration and recording.
    let amd = [
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT),
        ("AnsweredBy", "machine_end_beep"),
        ("MachineDetectionDuration", "2300"),
    ];
    assert_eq!(post_twilio(&gw, "/twilio/amd", &amd, TOKEN).await.0, 200);
    for (seq, status) in [("0", "initiated"), ("1", "ringing"), ("2", "in-progress")] {
        let params = [
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT),
            ("CallStatus", status),
            ("SequenceNumber", seq),
        ];
        assert_eq!(
            post_twilio(&gw, "/twilio/status", &params, TOKEN).await.0,
            200
        );
    }
    let done = [
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT),
        ("CallStatus", "completed"),
        ("SequenceNumber", "3"),
        ("CallDuration", "42"),
        ("RecordingUrl", "https://api.twilio.com/rec/RE1"),
    ];
    assert_eq!(
        post_twilio(&gw, "/twilio/status", &done, TOKEN).await.0,
        200
    );
    let (_, call) = gw.api.get(&format!("/v1/calls/{id}"), &gw.key).await;
    assert_eq!(call["status"], "completed", "{call:?}");
    assert_eq!(call["answered_by"], "machine_end_beep");
    assert_eq!(call["recording_url"], "https://api.twilio.com/rec/RE1");
    let (_, events) = gw.api.get(&format!("/v1/calls/{id}/events"), &gw.key).await;
    let kinds: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap(),
                e["data"]["status"]
                    .as_str()
                    .or(e["data"]["answered_by"].as_str())
                    .unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "answered_by:human",
            "answered_by:machine_end_beep",
            "carrier_status:initiated",
            "carrier_status:ringing",
            "carrier_status:in-progress",
            "carrier_status:completed",
        ]
    );
}
on_both!(verdicts, verdicts_and_status_details);

#[tokio::test]
async fn exotel_routes_inbound_calls_and_takes_status_in_both_forms() {
    let gw = start(TestDb::sqlite().await, None, "exotel").await;
    let url = gw.api.url(&format!(
        "/exotel/stream-url?CallSid=exo-1&CallFrom={}&CallTo={}",
        CALLER.replace('+', "%2B"),
        NUMBER.replace('+', "%2B")
    ));
    let refused = gw.api.http.get(&url).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let wrong = gw
        .api
        .http
        .get(&url)
        .header("authorization", basic("exokey:wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let routed: Value = gw
        .api
        .http
        .get(&url)
        .header("authorization", basic(EXOTEL))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stream = routed["url"].as_str().unwrap();
    assert!(
        stream.starts_with("wss://") && stream.contains("/stream/exotel?call_id="),
        "{stream}"
    );
    let id = stream.rsplit('=').next().unwrap().to_owned();
    // The same call asked again is the same call.
    let again: Value = gw
        .api
        .http
        .get(&url)
        .header("authorization", basic(EXOTEL))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["url"], routed["url"]);
    let (_, call) = gw.api.get(&format!("/v1/calls/{id}"), &gw.key).await;
    assert_eq!(
        (call["direction"].as_str(), call["carrier"].as_str()),
        (Some("inbound"), Some("exotel"))
    );
    assert_eq!(call["status"], "ringing");

    let unknown =
        gw.api
            .http
            .get(gw.api.url(
                "/exotel/stream-url?CallSid=exo-2&CallFrom=%2B14155550123&CallTo=%2B14155550000",
            ))
            .header("authorization", basic(EXOTEL))
            .send()
            .await
            .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);

    let form = gw
        .api
        .http
        .post(gw.api.url("/exotel/status"))
        .header("authorization", basic(EXOTEL))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("CallSid=exo-1&Status=in-progress&EventType=answered")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 200);
    let json_body = gw
        .api
        .http
        .post(gw.api.url("/exotel/status"))
        .header("authorization", basic(EXOTEL))
        .json(
            &json!({"CallSid": "exo-1", "Status": "completed", "EventType": "terminal",
                      "ConversationDuration": 31}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status().as_u16(), 200);
    let (_, call) = gw.api.get(&format!("/v1/calls/{id}"), &gw.key).await;
    assert_eq!(call["status"], "completed", "{call:?}");
    let bad = gw
        .api
        .http
        .post(gw.api.url("/exotel/status"))
        .header("authorization", basic(EXOTEL))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Status=completed")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}
