//! Looking placed calls up at the carriers, against the fakes: Twilio Calls fetch and list
//! (`TwilioRest::fetch_call`, `list_calls`), Exotel Call Details (`ExotelRest::fetch_call`), and
//! `Carriers::find` on top of them — what is sent, how answers and errors are read, and which
//! call is taken to be ours.

mod fakes;

use std::time::Duration;

use chrono::Utc;
use fakes::exotel_rest::{self, FakeExotelRest};
use fakes::twilio_rest::{
    ACCOUNT_SID, AUTH_TOKEN, FakeCall, FakeTwilioConfig, FakeTwilioRest, Fault, OUR_NUMBER,
};
use voicegw::carrier::exotel_api::{ExotelRest, ExotelRestConfig};
use voicegw::carrier::twilio_api::{
    CreateCall, RetryPolicy, TwilioApiError, TwilioRest, TwilioRestConfig,
};
use voicegw::control::carriers::RestCarriers;
use voicegw::control::dial::{CarrierName, Carriers, DialError, FindCall, NoCarriers};
use voicegw::store::calls::CallStatus;

const CALLEE: &str = "+14155550123";
const OTHER: &str = "+14155550999";

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        budget: Duration::from_millis(200),
    }
}

fn twilio_with(base_url: &str, token: &str) -> TwilioRest {
    TwilioRest::new(TwilioRestConfig {
        account_sid: ACCOUNT_SID.into(),
        auth_token: token.into(),
        base_url: base_url.into(),
        request_timeout: Duration::from_secs(5),
        retry: retry(),
    })
    .unwrap()
}

fn twilio(fake: &FakeTwilioRest) -> TwilioRest {
    twilio_with(&fake.base_url(), AUTH_TOKEN)
}

fn exotel(fake: &FakeExotelRest) -> ExotelRest {
    ExotelRest::new(ExotelRestConfig {
        account_sid: exotel_rest::ACCOUNT_SID.into(),
        api_key: exotel_rest::API_KEY.into(),
        api_token: exotel_rest::API_TOKEN.into(),
        base_url: fake.base_url(),
        request_timeout: Duration::from_secs(5),
        retry: retry(),
    })
    .unwrap()
}

async fn place(client: &TwilioRest, to: &str) -> String {
    client
        .create_call(&CreateCall {
            account_sid: ACCOUNT_SID.into(),
            to: to.into(),
            from: OUR_NUMBER.into(),
            url: "https://gw.example.com/twilio/outbound?call_id=c1".into(),
            status_callback: "https://gw.example.com/twilio/status?call_id=c1".into(),
            timeout_secs: None,
            time_limit_secs: None,
            record: false,
            machine_detection: None,
            async_amd_callback: None,
        })
        .await
        .unwrap()
        .sid
}

/// An outbound call the fake holds as placed (no HTTP).
fn outbound(fake: &FakeTwilioRest, to: &str, status: &str) -> String {
    let sid = fake.next_call_sid();
    fake.insert_call(FakeCall {
        sid: sid.clone(),
        account_sid: ACCOUNT_SID.into(),
        status: status.into(),
        redirects: Vec::new(),
        dialed: Vec::new(),
        redirect_urls: Vec::new(),
        to: to.into(),
        from: OUR_NUMBER.into(),
        direction: "outbound-api".into(),
        create_form: Vec::new(),
    });
    sid
}

fn find(sid: Option<&str>, to: &str, placed_after_us: i64) -> FindCall {
    FindCall {
        sid: sid.map(str::to_owned),
        to: to.into(),
        from: OUR_NUMBER.into(),
        placed_after_us,
        call_id: "00000000-0000-0000-0000-000000000001".into(),
    }
}

#[tokio::test]
async fn a_fetched_call_reports_status_verdict_duration_and_creation() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake);
    let before = Utc::now() - chrono::Duration::seconds(1);
    let sid = place(&client, CALLEE).await;
    fake.set_call_status(&sid, "completed");
    fake.set_call_answered_by(&sid, "machine_end_beep");
    fake.set_call_duration(&sid, 37);

    let call = client
        .fetch_call(ACCOUNT_SID, &sid)
        .await
        .unwrap()
        .expect("the call exists");
    assert_eq!(call.sid, sid);
    assert_eq!(call.status, "completed");
    assert_eq!(call.call_status(), Some(CallStatus::Completed));
    assert_eq!(call.answered_by.as_deref(), Some("machine_end_beep"));
    assert_eq!(call.duration_secs, Some(37));
    assert_eq!(call.to.as_deref(), Some(CALLEE));
    assert_eq!(call.direction.as_deref(), Some("outbound-api"));
    let created = call.date_created.expect("date_created parsed");
    assert!(created >= before.with_timezone(&Utc) - chrono::Duration::seconds(1));

    let request = fake.requests().pop().unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json")
    );
    assert!(request.password_ok);
    assert!(request.query.is_empty());
    assert_eq!(request.status, 200);
}

#[tokio::test]
async fn an_unknown_sid_is_no_call_and_bad_credentials_an_error() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake);
    let unknown = "CA0000000000000000000000000000dead";
    assert_eq!(client.fetch_call(ACCOUNT_SID, unknown).await.unwrap(), None);
    let request = fake.requests().pop().unwrap();
    assert_eq!((request.status, request.code), (404, Some(20404)));

    let wrong = twilio_with(&fake.base_url(), "not-the-token");
    let error = wrong.fetch_call(ACCOUNT_SID, unknown).await.unwrap_err();
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
    // A malformed SID never leaves the client.
    let before = fake.requests().len();
    assert!(matches!(
        client.fetch_call(ACCOUNT_SID, "CA/../x").await,
        Err(TwilioApiError::Invalid(_))
    ));
    assert_eq!(fake.requests().len(), before);
}

#[tokio::test]
async fn a_failing_read_is_retried() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake);
    let sid = outbound(&fake, CALLEE, "ringing");
    fake.push_fault(Fault::ServerError);
    let call = client.fetch_call(ACCOUNT_SID, &sid).await.unwrap().unwrap();
    assert_eq!(call.call_status(), Some(CallStatus::Ringing));
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 200]);
}

#[tokio::test]
async fn a_list_filters_by_numbers_and_day_newest_first() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake);
    let old = outbound(&fake, CALLEE, "completed");
    fake.set_call_created(&old, Utc::now() - chrono::Duration::days(3));
    let first = outbound(&fake, CALLEE, "busy");
    fake.set_call_created(&first, Utc::now() - chrono::Duration::seconds(5));
    let second = outbound(&fake, CALLEE, "queued");
    let _elsewhere = outbound(&fake, OTHER, "completed");
    let today = (Utc::now() - chrono::Duration::seconds(5)).date_naive();

    let calls = client
        .list_calls(ACCOUNT_SID, CALLEE, OUR_NUMBER, today)
        .await
        .unwrap();
    let sids: Vec<&str> = calls.iter().map(|c| c.sid.as_str()).collect();
    assert_eq!(sids, vec![second.as_str(), first.as_str()]);
    assert_eq!(calls[1].call_status(), Some(CallStatus::Busy));
    assert_eq!(calls[0].call_status(), Some(CallStatus::Queued));

    let request = fake.requests().pop().unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
    );
    let query: Vec<(&str, &str)> = request
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let day = today.format("%Y-%m-%d").to_string();
    assert_eq!(
        query,
        vec![
            ("To", CALLEE),
            ("From", OUR_NUMBER),
            ("StartTime>", day.as_str()),
            ("PageSize", "100"),
        ]
    );
}

#[tokio::test]
async fn a_long_list_is_read_page_by_page() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let client = twilio(&fake);
    for _ in 0..130 {
        outbound(&fake, CALLEE, "no-answer");
    }
    let calls = client
        .list_calls(ACCOUNT_SID, CALLEE, OUR_NUMBER, Utc::now().date_naive())
        .await
        .unwrap();
    assert_eq!(calls.len(), 130);
    let mut sids: Vec<&str> = calls.iter().map(|c| c.sid.as_str()).collect();
    sids.sort_unstable();
    sids.dedup();
    assert_eq!(sids.len(), 130, "no call twice across pages");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let second = &requests[1];
    assert_eq!(second.status, 200);
    let value = |name: &str| {
        second
            .query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(value("Page").as_deref(), Some("1"));
    assert!(value("PageToken").is_some_and(|t| t.starts_with("PA")));
    assert_eq!(value("To").as_deref(), Some(CALLEE));
}

#[tokio::test]
async fn find_takes_the_sid_or_the_newest_call_since_placement() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let carriers = RestCarriers {
        twilio: Some(twilio(&fake)),
        exotel: None,
    };
    let earlier = outbound(&fake, CALLEE, "completed");
    fake.set_call_created(&earlier, Utc::now() - chrono::Duration::seconds(120));
    let placed_after = (Utc::now() - chrono::Duration::seconds(10)).timestamp_micros();

    // Only an earlier attempt exists: this attempt was never placed.
    assert_eq!(
        carriers
            .find(CarrierName::Twilio, &find(None, CALLEE, placed_after))
            .await
            .unwrap(),
        None
    );
    let ours = outbound(&fake, CALLEE, "in-progress");
    fake.set_call_answered_by(&ours, "human");
    let found = carriers
        .find(CarrierName::Twilio, &find(None, CALLEE, placed_after))
        .await
        .unwrap()
        .expect("the placed call is found");
    assert_eq!(found.sid, ours);
    assert_eq!(found.status, CallStatus::InProgress);
    assert_eq!(found.answered_by.as_deref(), Some("human"));

    fake.set_call_status(&ours, "completed");
    fake.set_call_duration(&ours, 12);
    let by_sid = carriers
        .find(
            CarrierName::Twilio,
            &find(Some(&ours), CALLEE, placed_after),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_sid.status, CallStatus::Completed);
    assert_eq!(by_sid.duration_secs, Some(12));
    assert_eq!(
        carriers
            .find(
                CarrierName::Twilio,
                &find(
                    Some("CA0000000000000000000000000000beef"),
                    CALLEE,
                    placed_after
                )
            )
            .await
            .unwrap(),
        None
    );
    // Exotel is not configured here.
    assert_eq!(
        carriers
            .find(CarrierName::Exotel, &find(Some("x1"), CALLEE, placed_after))
            .await,
        Err(DialError::NotConfigured("exotel"))
    );
}

#[tokio::test]
async fn find_says_unreachable_when_twilio_cannot_answer() {
    let fake = FakeTwilioRest::start(FakeTwilioConfig::default()).await;
    let carriers = RestCarriers {
        twilio: Some(twilio(&fake)),
        exotel: None,
    };
    for _ in 0..3 {
        fake.push_fault(Fault::ServerError);
    }
    let result = carriers
        .find(CarrierName::Twilio, &find(None, CALLEE, 0))
        .await;
    assert!(
        matches!(result, Err(DialError::Unreachable(_))),
        "{result:?}"
    );
    assert_eq!(
        NoCarriers
            .find(CarrierName::Twilio, &find(None, CALLEE, 0))
            .await,
        Err(DialError::NotConfigured("twilio"))
    );
}

#[tokio::test]
async fn exotel_call_details_in_either_key_case() {
    for lowercase in [false, true] {
        let fake = FakeExotelRest::start(lowercase).await;
        let client = exotel(&fake);
        let placed = client
            .connect(&voicegw::carrier::exotel_api::ExotelConnect {
                from: "+919876543210".into(),
                caller_id: exotel_rest::EXOPHONE.into(),
                stream_url: "wss://gw.example.com/stream/exotel?call_id=c1".into(),
                status_callback: None,
                custom_field: None,
                time_limit_secs: None,
                timeout_secs: None,
            })
            .await
            .unwrap();
        let live = client.fetch_call(&placed.sid).await.unwrap().unwrap();
        assert_eq!(live.sid, placed.sid);
        assert_eq!(live.call_status(), Some(CallStatus::InProgress));
        assert_eq!(live.answered_by, None, "Exotel's NA is no verdict");

        fake.set_call(&placed.sid, "no-answer", Some(0));
        let carriers = RestCarriers {
            twilio: None,
            exotel: Some(client.clone()),
        };
        let found = carriers
            .find(
                CarrierName::Exotel,
                &find(Some(&placed.sid), "+919876543210", 0),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.status, CallStatus::NoAnswer);
        assert_eq!(found.duration_secs, Some(0));

        assert_eq!(
            client
                .fetch_call("0000000000000000000000000000beef")
                .await
                .unwrap(),
            None
        );
        let request = fake.requests().pop().unwrap();
        assert_eq!(request.status, 404);
        assert_eq!(
            request.path,
            format!(
                "/v1/Accounts/{}/Calls/0000000000000000000000000000beef.json",
                exotel_rest::ACCOUNT_SID
            )
        );
        assert_eq!(
            request.basic.as_deref(),
            Some(format!("{}:{}", exotel_rest::API_KEY, exotel_rest::API_TOKEN).as_str())
        );
        // Exotel cannot be searched by numbers: the lookup says so rather than "no call".
        let by_numbers = carriers
            .find(CarrierName::Exotel, &find(None, "+919876543210", 0))
            .await;
        assert!(matches!(by_numbers, Err(DialError::Unsupported(_))));
    }
}
