//! Dialing clients over HTTP against the fakes: Twilio Calls create / update
//! (`TwilioRest::create_call`, `hangup_call`, `cancel_call`) and Exotel Connect Voice AI
//! (`ExotelRest::connect`) — form fields, auth, retry only when the carrier certainly did not
//! act, error mapping.

mod fakes;

use std::time::Duration;

use fakes::exotel_rest::{self, ExotelFault, FakeExotelRest};
use fakes::twilio_rest::{
    ACCOUNT_SID, AUTH_TOKEN, FakeTwilioConfig, FakeTwilioRest, Fault, OUR_NUMBER,
};
use voicegw::carrier::exotel_api::{ExotelApiError, ExotelConnect, ExotelRest, ExotelRestConfig};
use voicegw::carrier::twilio_api::{
    CreateCall, MachineDetection, RetryPolicy, TwilioApiError, TwilioRest, TwilioRestConfig,
};

const CALLEE: &str = "+14155550123";

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(5),
        budget: Duration::from_millis(200),
    }
}

fn twilio(base_url: &str, timeout: Duration) -> TwilioRest {
    TwilioRest::new(TwilioRestConfig {
        account_sid: ACCOUNT_SID.into(),
        auth_token: AUTH_TOKEN.into(),
        base_url: base_url.into(),
        request_timeout: timeout,
        retry: retry(3),
    })
    .unwrap()
}

fn create() -> CreateCall {
    CreateCall {
        account_sid: ACCOUNT_SID.into(),
        to: CALLEE.into(),
        from: OUR_NUMBER.into(),
        url: "https://gw.example.com/twilio/voice?call=c1".into(),
        status_callback: "https://gw.example.com/twilio/status?call=c1".into(),
        timeout_secs: None,
        time_limit_secs: None,
        record: false,
        machine_detection: None,
        async_amd_callback: None,
    }
}

#[tokio::test]
async fn create_call_sends_exactly_the_documented_form() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake.base_url(), Duration::from_secs(5));
    let created = client.create_call(&create()).await.unwrap();
    assert!(
        created.sid.starts_with("CA") && created.sid.len() == 34,
        "{created:?}"
    );
    assert_eq!(created.status, "queued");
    assert_eq!(created.account_sid, ACCOUNT_SID);
    assert_eq!(created.to.as_deref(), Some(CALLEE));
    assert_eq!(created.from.as_deref(), Some(OUR_NUMBER));
    assert_eq!(created.direction.as_deref(), Some("outbound-api"));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.status, 201);
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
    );
    assert_eq!(request.basic_user.as_deref(), Some(ACCOUNT_SID));
    assert!(request.password_ok);
    let form: Vec<(&str, &str)> = request
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        form,
        [
            ("To", CALLEE),
            ("From", OUR_NUMBER),
            ("Url", "https://gw.example.com/twilio/voice?call=c1"),
            ("Method", "POST"),
            (
                "StatusCallback",
                "https://gw.example.com/twilio/status?call=c1"
            ),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
            ("StatusCallbackMethod", "POST"),
        ]
    );
    assert_eq!(fake.call(&created.sid).unwrap().to, CALLEE);
}

#[tokio::test]
async fn optional_parameters_and_async_amd_are_sent() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake.base_url(), Duration::from_secs(5));
    let call = CreateCall {
        timeout_secs: Some(25),
        time_limit_secs: Some(900),
        record: true,
        machine_detection: Some(MachineDetection::DetectMessageEnd),
        async_amd_callback: Some("https://gw.example.com/twilio/amd".into()),
        ..create()
    };
    client.create_call(&call).await.unwrap();
    let request = &fake.requests()[0];
    assert_eq!(request.status, 201, "{:?}", request.code);
    let tail: Vec<(&str, &str)> = request.form[10..]
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            ("Timeout", "25"),
            ("TimeLimit", "900"),
            ("Record", "true"),
            ("MachineDetection", "DetectMessageEnd"),
            ("AsyncAmd", "true"),
            (
                "AsyncAmdStatusCallback",
                "https://gw.example.com/twilio/amd"
            ),
            ("AsyncAmdStatusCallbackMethod", "POST"),
        ]
    );
    let sync = CreateCall {
        machine_detection: Some(MachineDetection::Enable),
        ..create()
    };
    client.create_call(&sync).await.unwrap();
    let request = &fake.requests()[1];
    assert_eq!(request.param("MachineDetection"), Some("Enable"));
    assert_eq!(request.param("AsyncAmd"), None);
}

#[tokio::test]
async fn bad_calls_fail_before_any_request() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake.base_url(), Duration::from_secs(5));
    let cases = [
        CreateCall {
            to: "4155550123".into(),
            ..create()
        },
        CreateCall {
            from: CALLEE.into(),
            ..create()
        },
        CreateCall {
            url: "wss://gw.example.com/voice".into(),
            ..create()
        },
        CreateCall {
            status_callback: "https://gw_1.example.com/status".into(),
            ..create()
        },
        CreateCall {
            timeout_secs: Some(601),
            ..create()
        },
        CreateCall {
            time_limit_secs: Some(0),
            ..create()
        },
        CreateCall {
            async_amd_callback: Some("https://gw.example.com/amd".into()),
            ..create()
        },
        CreateCall {
            account_sid: "AC123".into(),
            ..create()
        },
    ];
    for call in cases {
        let error = client.create_call(&call).await.unwrap_err();
        assert!(
            matches!(error, TwilioApiError::Invalid(_)),
            "{call:?}: {error:?}"
        );
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_429_is_retried_and_dials_once() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    fake.push_fault(Fault::TooManyRequests {
        retry_after: Some("0".into()),
    });
    let client = twilio(&fake.base_url(), Duration::from_secs(5));
    let created = client.create_call(&create()).await.unwrap();
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 201]);
    assert_eq!(
        fake.created_calls()
            .iter()
            .filter(|r| r.status == 201)
            .count(),
        1
    );
    assert!(fake.call(&created.sid).is_some());
}

#[tokio::test]
async fn a_5xx_after_acting_is_an_unknown_outcome_never_retried() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    fake.push_fault(Fault::ServerErrorAfterActing);
    let client = twilio(&fake.base_url(), Duration::from_secs(5));
    let error = client.create_call(&create()).await.unwrap_err();
    assert!(error.outcome_unknown(), "{error:?}");
    assert!(
        matches!(&error, TwilioApiError::OutcomeUnknown { operation: "calls.create", reason } if reason.contains("500")),
        "{error:?}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "a call create is never sent twice"
    );
    // The fake did place the call: that is why the client must not dial again.
    assert_eq!(fake.created_calls().len(), 1);
    // A plain 500 (before acting) is not retried for a create either.
    fake.push_fault(Fault::ServerError);
    let error = client.create_call(&create()).await.unwrap_err();
    assert!(error.outcome_unknown(), "{error:?}");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_timeout_after_sending_is_an_unknown_outcome() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    fake.push_fault(Fault::StallAfterActing(Duration::from_secs(3)));
    let client = twilio(&fake.base_url(), Duration::from_millis(300));
    let error = client.create_call(&create()).await.unwrap_err();
    assert!(
        matches!(&error, TwilioApiError::OutcomeUnknown { reason, .. } if reason.contains("300 ms")),
        "{error:?}"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_not_an_unknown_outcome() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = twilio(&format!("http://{addr}"), Duration::from_secs(2));
    let error = client.create_call(&create()).await.unwrap_err();
    assert!(matches!(error, TwilioApiError::Transport(_)), "{error:?}");
    assert!(!error.outcome_unknown());
}

#[tokio::test]
async fn refusals_keep_twilios_code_and_are_not_retried() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake.base_url(), Duration::from_secs(5));
    let error = client
        .create_call(&CreateCall {
            from: "+18005550000".into(),
            ..create()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TwilioApiError::Api {
                status: 400,
                code: Some(21210),
                ..
            }
        ),
        "{error:?}"
    );
    let wrong_token = TwilioRest::new(TwilioRestConfig {
        account_sid: ACCOUNT_SID.into(),
        auth_token: "wrong".into(),
        base_url: fake.base_url(),
        request_timeout: Duration::from_secs(5),
        retry: retry(3),
    })
    .unwrap();
    let error = wrong_token.create_call(&create()).await.unwrap_err();
    assert!(
        matches!(
            error,
            TwilioApiError::Api {
                status: 401,
                code: Some(20003),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(fake.requests().len(), 2, "neither refusal is retried");
    assert!(fake.created_calls().iter().all(|r| r.status != 201));
}

#[tokio::test]
async fn hangup_and_cancel_set_the_status_and_recognise_ended_calls() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake.base_url(), Duration::from_secs(5));
    let created = client.create_call(&create()).await.unwrap();
    let canceled = client.cancel_call(ACCOUNT_SID, &created.sid).await.unwrap();
    assert_eq!(canceled.status, "canceled");
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        last.path,
        format!(
            "/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{}.json",
            created.sid
        )
    );
    assert_eq!(last.form, [("Status".to_owned(), "canceled".to_owned())]);

    let live = client.create_call(&create()).await.unwrap();
    fake.set_call_status(&live.sid, "in-progress");
    let error = client
        .cancel_call(ACCOUNT_SID, &live.sid)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TwilioApiError::CallNotLive {
                status: 400,
                code: Some(21220),
                ..
            }
        ),
        "an answered call cannot be canceled: {error:?}"
    );
    let ended = client.hangup_call(ACCOUNT_SID, &live.sid).await.unwrap();
    assert_eq!(ended.status, "completed");
    assert_eq!(
        fake.requests().pop().unwrap().form,
        [("Status".to_owned(), "completed".to_owned())]
    );
    let again = client
        .hangup_call(ACCOUNT_SID, &live.sid)
        .await
        .unwrap_err();
    assert!(
        matches!(
            again,
            TwilioApiError::CallNotLive {
                code: Some(21220),
                ..
            }
        ),
        "{again:?}"
    );
    let gone = client
        .hangup_call(ACCOUNT_SID, "CA99999999999999999999999999999999")
        .await
        .unwrap_err();
    assert!(
        matches!(
            gone,
            TwilioApiError::CallNotLive {
                status: 404,
                code: Some(20404),
                ..
            }
        ),
        "{gone:?}"
    );
    let bad = client
        .hangup_call(ACCOUNT_SID, "CA/../x")
        .await
        .unwrap_err();
    assert!(matches!(bad, TwilioApiError::Invalid(_)));
}

#[tokio::test]
async fn a_hangup_after_a_5xx_is_retried_safely() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake.base_url(), Duration::from_secs(5));
    let live = client.create_call(&create()).await.unwrap();
    fake.set_call_status(&live.sid, "in-progress");
    fake.push_fault(Fault::ServerError);
    let ended = client.hangup_call(ACCOUNT_SID, &live.sid).await.unwrap();
    assert_eq!(ended.status, "completed");
    let statuses: Vec<u16> = fake.requests().iter().skip(1).map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200]);
}

fn exotel(base_url: &str, timeout: Duration) -> ExotelRest {
    ExotelRest::new(ExotelRestConfig {
        account_sid: exotel_rest::ACCOUNT_SID.into(),
        api_key: exotel_rest::API_KEY.into(),
        api_token: exotel_rest::API_TOKEN.into(),
        base_url: base_url.into(),
        request_timeout: timeout,
        retry: retry(3),
    })
    .unwrap()
}

fn connect() -> ExotelConnect {
    ExotelConnect {
        from: "+919876543210".into(),
        caller_id: exotel_rest::EXOPHONE.into(),
        stream_url: "wss://gw.example.com/stream/exotel?call=c1".into(),
        status_callback: Some("https://gw.example.com/exotel/status".into()),
        custom_field: Some("call=c1".into()),
        time_limit_secs: Some(1800),
        timeout_secs: Some(30),
    }
}

#[tokio::test]
async fn exotel_connect_sends_the_form_with_basic_auth() {
    let fake = FakeExotelRest::start(false).await;
    let client = exotel(&fake.base_url(), Duration::from_secs(5));
    let call = client.connect(&connect()).await.unwrap();
    assert_eq!(call.status.as_deref(), Some("in-progress"));
    assert_eq!(call.direction.as_deref(), Some("outbound-api"));
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.status, 200);
    assert_eq!(request.path, "/v1/Accounts/acme1/Calls/connect.json");
    assert_eq!(request.basic.as_deref(), Some("exo-key:exo-token"));
    let form: Vec<(&str, &str)> = request
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        form,
        [
            ("From", "+919876543210"),
            ("CallerId", "08012345678"),
            ("StreamUrl", "wss://gw.example.com/stream/exotel?call=c1"),
            ("StreamType", "bidirectional"),
            ("StatusCallback", "https://gw.example.com/exotel/status"),
            ("StatusCallbackEvents[0]", "answered"),
            ("StatusCallbackEvents[1]", "terminal"),
            ("CustomField", "call=c1"),
            ("TimeLimit", "1800"),
            ("TimeOut", "30"),
        ]
    );
}

#[tokio::test]
async fn exotel_answers_in_lowercase_parse_too() {
    let fake = FakeExotelRest::start(true).await;
    let client = exotel(&fake.base_url(), Duration::from_secs(5));
    let call = client.connect(&connect()).await.unwrap();
    assert_eq!(call.sid.len(), 32);
    assert_eq!(call.from.as_deref(), Some("+919876543210"));
}

#[tokio::test]
async fn exotel_rest_exceptions_are_mapped() {
    let fake = FakeExotelRest::start(false).await;
    let client = exotel(&fake.base_url(), Duration::from_secs(5));
    let error = client
        .connect(&ExotelConnect {
            caller_id: "08099999999".into(),
            ..connect()
        })
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ExotelApiError::Api {
            status: 400,
            code: Some("INVALID_PARAMETER".into()),
            message: "CallerId is not an ExoPhone of this account".into(),
        }
    );
    let wrong = ExotelRest::new(ExotelRestConfig {
        account_sid: exotel_rest::ACCOUNT_SID.into(),
        api_key: exotel_rest::API_KEY.into(),
        api_token: "nope".into(),
        base_url: fake.base_url(),
        request_timeout: Duration::from_secs(5),
        retry: retry(3),
    })
    .unwrap();
    let error = wrong.connect(&connect()).await.unwrap_err();
    assert!(
        matches!(error, ExotelApiError::Api { status: 401, .. }),
        "{error:?}"
    );
    assert_eq!(fake.requests().len(), 2, "refusals are not retried");
    assert!(fake.placed().is_empty());
}

#[tokio::test]
async fn exotel_retries_only_when_no_call_was_placed() {
    let fake = FakeExotelRest::start(false).await;
    let client = exotel(&fake.base_url(), Duration::from_millis(300));
    fake.push_fault(ExotelFault::TooManyRequests);
    client.connect(&connect()).await.unwrap();
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    assert_eq!(fake.placed().len(), 1);

    fake.push_fault(ExotelFault::ServerErrorAfterActing);
    let error = client.connect(&connect()).await.unwrap_err();
    assert!(
        matches!(error, ExotelApiError::OutcomeUnknown(_)),
        "{error:?}"
    );
    assert_eq!(fake.placed().len(), 2);
    assert_eq!(fake.requests().len(), 3, "not retried");

    fake.push_fault(ExotelFault::StallAfterActing(Duration::from_secs(3)));
    let error = client.connect(&connect()).await.unwrap_err();
    assert!(
        matches!(&error, ExotelApiError::OutcomeUnknown(reason) if reason.contains("300 ms")),
        "{error:?}"
    );
    assert_eq!(fake.requests().len(), 4, "not retried");
}
