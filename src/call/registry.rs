//! The registry of live calls, for the control plane: find a call, hang it up, make it speak.
//!
//! It holds handles only (a bounded control channel and the call's info), never call state, so
//! nothing on the media path takes a lock here. It also holds the agent choices of calls the
//! control plane expects (a stream whose `start` carries a `call_id` custom parameter naming
//! one becomes that call, served by its agent; any other stream gets the default agent).
//! Expectations expire after [`EXPECTATION_TTL`], so a call that never connects leaks nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::mpsc;

use super::agent::{AgentFactory, Speech};
use super::{CallId, CallInfo};

/// How long an expected call waits for its stream before it is forgotten.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(15 * 60);

/// A request from the control plane to a live call.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// End the call (the stream is closed normally; the carrier hangs up or moves on).
    Hangup {
        /// Why, for the record.
        reason: String,
    },
    /// Say something now, after whatever is queued.
    Say(Speech),
    /// The carrier's answering-machine verdict (`AnsweredBy`: `human`, `machine_start`,
    /// `machine_end_beep`, …) arrived for the call.
    AnsweredBy {
        /// The verdict as the carrier gave it.
        verdict: String,
    },
}

/// Why a control request did not reach its call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No live call has that id.
    #[error("no live call {0}")]
    NotFound(CallId),
    /// The call's control queue is full (it is not keeping up); try again.
    #[error("call {0} is busy; try again")]
    Busy(CallId),
    /// The call ended while the request was on its way.
    #[error("call {0} has ended")]
    Ended(CallId),
}

/// The control plane's handle on one live call.
#[derive(Debug, Clone)]
pub struct CallHandle {
    /// What the call is.
    pub info: Arc<CallInfo>,
    /// The tenant the call belongs to, when the control plane created it for one.
    pub tenant_id: Option<String>,
    control: mpsc::Sender<Control>,
}

impl CallHandle {
    /// A handle sending to the session's control channel.
    pub fn new(info: Arc<CallInfo>, control: mpsc::Sender<Control>) -> Self {
        CallHandle {
            info,
            tenant_id: None,
            control,
        }
    }

    /// The same handle, marked as belonging to `tenant_id`.
    pub fn with_tenant(mut self, tenant_id: Option<String>) -> Self {
        self.tenant_id = tenant_id;
        self
    }
}

/// What the control plane has prepared for a call it is about to connect.
#[derive(Clone)]
pub struct ExpectedCall {
    /// The call's id in the store: the live call and its CallEvents take this id.
    pub call_id: CallId,
    /// The tenant the call belongs to, if any.
    pub tenant_id: Option<String>,
    /// The agent that will serve it (its name in the catalog, and in the record).
    pub agent: String,
    /// An agent built outside the catalog (e.g. a tenant's script loaded from the database);
    /// `None` looks `agent` up in the catalog.
    pub factory: Option<AgentFactory>,
    /// The call's template variables; they win over the stream's custom parameters (except
    /// `call_id`).
    pub variables: BTreeMap<String, String>,
    /// What to do first on an outbound call the gateway placed (answering-machine detection,
    /// voicemail); `None`: the agent starts at once.
    pub outbound: Option<OutboundPlan>,
    /// The carrier's answering-machine verdict, when it came before the stream started.
    pub answered_by: Option<String>,
}

/// How an outbound call starts once answered: listen for a machine before greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPlan {
    /// Run our own answering-machine detection on the callee's audio before greeting.
    pub detect_machine: bool,
    /// Spoken after the beep when a machine answers (already rendered); None: the script's
    /// `[voicemail]` node if it has one, else hang up on machines.
    pub voicemail_message: Option<String>,
    /// Greet anyway when the callee says nothing for this long after answering (ms).
    pub greet_after_silence_ms: u32,
}

impl OutboundPlan {
    /// The default wait for a silent callee before greeting anyway (ms).
    pub const DEFAULT_GREET_AFTER_SILENCE_MS: u32 = 2_500;

    /// Machine detection on, with `voicemail_message` and the default silence wait.
    pub fn detect(voicemail_message: Option<String>) -> Self {
        OutboundPlan {
            detect_machine: true,
            voicemail_message,
            greet_after_silence_ms: Self::DEFAULT_GREET_AFTER_SILENCE_MS,
        }
    }
}

impl ExpectedCall {
    /// A call served by the catalog's agent `agent`, with no tenant and no variables.
    pub fn new(call_id: CallId, agent: impl Into<String>) -> Self {
        ExpectedCall {
            call_id,
            tenant_id: None,
            agent: agent.into(),
            factory: None,
            variables: BTreeMap::new(),
            outbound: None,
            answered_by: None,
        }
    }
}

impl std::fmt::Debug for ExpectedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpectedCall")
            .field("call_id", &self.call_id)
            .field("tenant_id", &self.tenant_id)
            .field("agent", &self.agent)
            .field("factory", &self.factory.as_ref().map(|_| "custom"))
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("outbound", &self.outbound)
            .finish()
    }
}

/// An expectation and when it stops counting.
#[derive(Debug)]
struct Pending {
    expected: ExpectedCall,
    expires: Instant,
}

/// Live calls by id, and calls expected to connect.
#[derive(Debug)]
pub struct Registry {
    live: DashMap<CallId, CallHandle>,
    expected: DashMap<String, Pending>,
    ttl: Duration,
    /// When expired expectations were last swept (ms since `epoch`).
    last_sweep_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::with_expectation_ttl(EXPECTATION_TTL)
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// An empty registry whose expectations last `ttl`.
    pub fn with_expectation_ttl(ttl: Duration) -> Self {
        Registry {
            live: DashMap::new(),
            expected: DashMap::new(),
            ttl,
            last_sweep_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Adds a live call.
    pub fn insert(&self, handle: CallHandle) {
        self.live.insert(handle.info.call_id, handle);
    }

    /// Removes a call that has ended.
    pub fn remove(&self, call_id: CallId) {
        self.live.remove(&call_id);
    }

    /// The info of a live call.
    pub fn get(&self, call_id: CallId) -> Option<Arc<CallInfo>> {
        self.live.get(&call_id).map(|h| h.info.clone())
    }

    /// Whether a call with this id is live.
    pub fn contains(&self, call_id: CallId) -> bool {
        self.live.contains_key(&call_id)
    }

    /// The tenant of a live call (`None` when the call is not live or has no tenant).
    pub fn tenant_of(&self, call_id: CallId) -> Option<String> {
        self.live.get(&call_id).and_then(|h| h.tenant_id.clone())
    }

    /// How many calls are live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no call is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Ids of all live calls.
    pub fn call_ids(&self) -> Vec<CallId> {
        self.live.iter().map(|entry| *entry.key()).collect()
    }

    /// Sends a request to a live call without waiting.
    pub fn send(&self, call_id: CallId, control: Control) -> Result<(), ControlError> {
        let sender = self
            .live
            .get(&call_id)
            .map(|h| h.control.clone())
            .ok_or(ControlError::NotFound(call_id))?;
        sender.try_send(control).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ControlError::Busy(call_id),
            mpsc::error::TrySendError::Closed(_) => ControlError::Ended(call_id),
        })
    }

    /// Asks every live call to hang up (shutdown); returns how many were asked.
    pub fn hangup_all(&self, reason: &str) -> usize {
        let ids = self.call_ids();
        ids.iter()
            .filter(|id| {
                self.send(
                    **id,
                    Control::Hangup {
                        reason: reason.to_owned(),
                    },
                )
                .is_ok()
            })
            .count()
    }

    /// Registers a call the control plane expects, under the id its stream will carry in the
    /// `call_id` custom parameter (normally `expected.call_id` as text). It is forgotten if no
    /// stream claims it within the registry's TTL; expired ones are swept here, at most a few
    /// times per TTL.
    pub fn expect(&self, call_id: &str, expected: ExpectedCall) {
        let now = Instant::now();
        self.sweep_expired(now);
        self.expected.insert(
            call_id.to_owned(),
            Pending {
                expected,
                expires: now + self.ttl,
            },
        );
    }

    /// Takes the expectation for `call_id`, if there is one and it has not expired (each is
    /// used once).
    pub fn take_expected(&self, call_id: &str) -> Option<ExpectedCall> {
        let (_, pending) = self.expected.remove(call_id)?;
        (pending.expires > Instant::now()).then_some(pending.expected)
    }

    /// Notes the carrier's answering-machine verdict on a call still expected (its stream
    /// not yet started); true when there was one to note it on.
    pub fn note_verdict(&self, call_id: &str, verdict: &str) -> bool {
        match self.expected.get_mut(call_id) {
            Some(mut pending) => {
                pending.expected.answered_by = Some(verdict.to_owned());
                true
            }
            None => false,
        }
    }

    /// How many expectations are held (expired ones not yet swept included).
    pub fn expected_len(&self) -> usize {
        self.expected.len()
    }

    /// Drops expired expectations, unless a sweep ran less than a tenth of the TTL ago.
    fn sweep_expired(&self, now: Instant) {
        let now_ms = now.duration_since(self.epoch).as_millis() as u64;
        let every_ms = (self.ttl.as_millis() as u64 / 10).max(1);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms < last.saturating_add(every_ms)
            || self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.expected.retain(|_, pending| pending.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::Encoding;
    use crate::carrier::{CarrierKind, MediaFormat};

    fn info() -> Arc<CallInfo> {
        Arc::new(CallInfo {
            call_id: CallId::new(),
            carrier: CarrierKind::Twilio,
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            from: None,
            to: None,
            custom_parameters: Default::default(),
            media_format: MediaFormat {
                encoding: Encoding::Mulaw,
                sample_rate: 8000,
                channels: 1,
            },
            agent: "echo".into(),
            started_at: std::time::SystemTime::now(),
        })
    }

    #[tokio::test]
    async fn control_reaches_the_call_and_reports_each_failure() {
        let registry = Registry::new();
        let info = info();
        let id = info.call_id;
        let (tx, mut rx) = mpsc::channel(1);
        registry.insert(CallHandle::new(info, tx));
        assert_eq!(registry.len(), 1);
        registry
            .send(
                id,
                Control::Hangup {
                    reason: "test".into(),
                },
            )
            .unwrap();
        assert_eq!(
            registry.send(
                id,
                Control::Hangup {
                    reason: "again".into()
                }
            ),
            Err(ControlError::Busy(id))
        );
        assert_eq!(
            rx.recv().await,
            Some(Control::Hangup {
                reason: "test".into()
            })
        );
        drop(rx);
        assert_eq!(
            registry.send(id, Control::Hangup { reason: "x".into() }),
            Err(ControlError::Ended(id))
        );
        registry.remove(id);
        assert!(registry.is_empty());
        assert_eq!(
            registry.send(id, Control::Hangup { reason: "x".into() }),
            Err(ControlError::NotFound(id))
        );
    }

    #[test]
    fn expectations_are_used_once() {
        let registry = Registry::new();
        let id = CallId::new();
        let mut expected = ExpectedCall::new(id, "echo");
        expected.tenant_id = Some("t1".into());
        expected.variables.insert("name".into(), "Asha".into());
        registry.expect(&id.to_string(), expected);
        assert_eq!(registry.expected_len(), 1);
        let taken = registry.take_expected(&id.to_string()).unwrap();
        assert_eq!(taken.call_id, id);
        assert_eq!(taken.agent, "echo");
        assert_eq!(taken.tenant_id.as_deref(), Some("t1"));
        assert_eq!(
            taken.variables.get("name").map(String::as_str),
            Some("Asha")
        );
        assert!(taken.factory.is_none());
        assert!(registry.take_expected(&id.to_string()).is_none());
        assert_eq!(registry.expected_len(), 0);
        assert!(registry.take_expected("never-expected").is_none());
    }

    #[test]
    fn expired_expectations_are_refused_and_swept() {
        let registry = Registry::with_expectation_ttl(Duration::from_millis(30));
        registry.expect("old", ExpectedCall::new(CallId::new(), "echo"));
        registry.expect("older", ExpectedCall::new(CallId::new(), "echo"));
        assert_eq!(registry.expected_len(), 2);
        std::thread::sleep(Duration::from_millis(60));
        // Expired: not handed out, even before any sweep.
        assert!(registry.take_expected("old").is_none());
        assert_eq!(registry.expected_len(), 1);
        // The next expectation sweeps the expired one left.
        let fresh = CallId::new();
        registry.expect("fresh", ExpectedCall::new(fresh, "echo"));
        assert_eq!(registry.expected_len(), 1);
        assert_eq!(
            registry.take_expected("fresh").map(|e| e.call_id),
            Some(fresh)
        );
    }

    #[test]
    fn debug_names_the_call_without_the_variables_values() {
        let mut expected = ExpectedCall::new(CallId::new(), "script:x");
        expected.variables.insert("pin".into(), "1234".into());
        let factory: AgentFactory =
            Arc::new(|_| Err(crate::call::agent::AgentError::Unknown("x".into())));
        expected.factory = Some(factory);
        let text = format!("{expected:?}");
        assert!(text.contains("script:x") && text.contains("pin") && text.contains("custom"));
        assert!(!text.contains("1234"));
    }

    #[test]
    fn live_handles_carry_their_tenant() {
        let registry = Registry::new();
        let info = info();
        let id = info.call_id;
        let (tx, _rx) = mpsc::channel(1);
        registry.insert(CallHandle::new(info, tx).with_tenant(Some("t9".into())));
        assert!(registry.contains(id));
        assert_eq!(registry.tenant_of(id).as_deref(), Some("t9"));
        assert_eq!(registry.tenant_of(CallId::new()), None);
    }
}
