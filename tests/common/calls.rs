//! Calls through the control plane in tests: a tenant with a key and a number, and a
//! recording carrier (the [`Carriers`] trait) that checks what it is asked and answers with
//! scripted outcomes.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use voicegw::control::dial::{
    CarrierCallState, CarrierName, Carriers, DialError, FindCall, PlaceCall,
};
use voicegw::store::TenantId;
use voicegw::store::tenants::{Plan, Role};

use super::control::TestControl;

/// The public URL the control-plane tests give the gateway.
pub const PUBLIC_URL: &str = "https://gw.example.test";
/// The callee of the tests' calls.
pub const CALLEE: &str = "+14155550100";

/// A tenant with an AGENT key and one Twilio number.
pub struct TestTenant {
    pub id: TenantId,
    pub key: String,
    pub number: String,
    pub number_id: uuid::Uuid,
}

/// Creates tenant `name` on `plan` with number `number` (on `carrier`).
pub async fn tenant(
    api: &TestControl,
    name: &str,
    plan: Plan,
    number: &str,
    carrier: &str,
) -> TestTenant {
    let store = &api.db.store;
    let tenant = store.create_tenant(name, plan).await.unwrap();
    let (_, key) = store
        .create_api_key(Some(tenant.id), Role::Agent, "test")
        .await
        .unwrap();
    let n = store
        .add_phone_number(tenant.id, number, carrier)
        .await
        .unwrap();
    TestTenant {
        id: tenant.id,
        key,
        number: n.e164,
        number_id: n.id,
    }
}

/// What the recording carrier was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    Place(CarrierName, PlaceCall),
    Cancel(CarrierName, String),
    HangUp(CarrierName, String),
    Find(CarrierName, FindCall),
}

/// A carrier that records requests, refuses malformed ones as a carrier would, and answers
/// with the queued outcomes (by default: placed with a fresh `CA…` SID, cancels and hang-ups
/// succeed).
#[derive(Default)]
pub struct RecordingCarriers {
    pub asked: Mutex<Vec<Asked>>,
    pub place_outcomes: Mutex<VecDeque<Result<String, DialError>>>,
    pub end_outcomes: Mutex<VecDeque<Result<(), DialError>>>,
    /// Answers to lookups, in order; by default the carrier has no such call.
    pub find_outcomes: Mutex<VecDeque<Result<Option<CarrierCallState>, DialError>>>,
}

impl RecordingCarriers {
    /// The calls placed so far.
    pub fn placed(&self) -> Vec<PlaceCall> {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter_map(|a| match a {
                Asked::Place(_, call) => Some(call.clone()),
                _ => None,
            })
            .collect()
    }

    /// Everything asked so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

fn e164(number: &str) -> bool {
    number
        .strip_prefix('+')
        .is_some_and(|d| (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

#[async_trait]
impl Carriers for RecordingCarriers {
    async fn place(&self, carrier: CarrierName, call: &PlaceCall) -> Result<String, DialError> {
        self.asked
            .lock()
            .unwrap()
            .push(Asked::Place(carrier, call.clone()));
        if !e164(&call.to) || !e164(&call.from) {
            return Err(DialError::Refused("21211: invalid 'To' or 'From'".into()));
        }
        let http = |url: &str| url.starts_with("https://") || url.starts_with("http://");
        let answer_path = format!("/twilio/outbound?call_id={}", call.call_id);
        if !http(&call.answer_url)
            || !call.answer_url.ends_with(&answer_path)
            || !http(&call.status_callback)
            || !call
                .status_callback
                .ends_with(&format!("/twilio/status?call_id={}", call.call_id))
        {
            return Err(DialError::Refused(format!(
                "21205: bad Url {:?} / StatusCallback {:?}",
                call.answer_url, call.status_callback
            )));
        }
        match self.place_outcomes.lock().unwrap().pop_front() {
            Some(outcome) => outcome,
            None => Ok(format!("CA{}", uuid::Uuid::new_v4().simple())),
        }
    }

    async fn cancel(&self, carrier: CarrierName, sid: &str) -> Result<(), DialError> {
        self.asked
            .lock()
            .unwrap()
            .push(Asked::Cancel(carrier, sid.to_owned()));
        self.end_outcomes
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(()))
    }

    async fn hang_up(&self, carrier: CarrierName, sid: &str) -> Result<(), DialError> {
        self.asked
            .lock()
            .unwrap()
            .push(Asked::HangUp(carrier, sid.to_owned()));
        self.end_outcomes
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(()))
    }

    async fn find(
        &self,
        carrier: CarrierName,
        call: &FindCall,
    ) -> Result<Option<CarrierCallState>, DialError> {
        self.asked
            .lock()
            .unwrap()
            .push(Asked::Find(carrier, call.clone()));
        if !e164(&call.to) || !e164(&call.from) {
            return Err(DialError::Refused("lookup by numbers needs E.164".into()));
        }
        self.find_outcomes
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(None))
    }
}
