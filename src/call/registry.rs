//! The registry of live calls, for the control plane: find a call, hang it up, make it speak.
//!
//! It holds handles only (a bounded control channel and the call's info), never call state, so
//! nothing on the media path takes a lock here. It also holds the agent choices of calls the
//! control plane expects (a stream whose `start` carries a `call_id` custom parameter naming
//! one is served by that agent; any other stream gets the default agent).

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;

use super::agent::Speech;
use super::{CallId, CallInfo};

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
    control: mpsc::Sender<Control>,
}

impl CallHandle {
    /// A handle sending to the session's control channel.
    pub fn new(info: Arc<CallInfo>, control: mpsc::Sender<Control>) -> Self {
        CallHandle { info, control }
    }
}

/// What the control plane has prepared for a call it is about to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedCall {
    /// The agent that will serve it.
    pub agent: String,
}

/// Live calls by id, and calls expected to connect.
#[derive(Debug, Default)]
pub struct Registry {
    live: DashMap<CallId, CallHandle>,
    expected: DashMap<String, ExpectedCall>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
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
    /// `call_id` custom parameter.
    pub fn expect(&self, call_id: &str, expected: ExpectedCall) {
        self.expected.insert(call_id.to_owned(), expected);
    }

    /// Takes the expectation for `call_id`, if there is one (each is used once).
    pub fn take_expected(&self, call_id: &str) -> Option<ExpectedCall> {
        self.expected.remove(call_id).map(|(_, v)| v)
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
        registry.expect(
            "abc",
            ExpectedCall {
                agent: "echo".into(),
            },
        );
        assert_eq!(
            registry.take_expected("abc"),
            Some(ExpectedCall {
                agent: "echo".into()
            })
        );
        assert_eq!(registry.take_expected("abc"), None);
    }
}
