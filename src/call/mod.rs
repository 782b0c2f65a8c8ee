//! The per-call actor and everything that joins the pieces of a call.
//!
//! One call is three tasks joined by bounded channels (see [`transport`]): a reader that
//! forwards the carrier's frames, the [`session`] that owns all call state in one `select!`
//! loop, and a writer that sends the session's frames. The session decodes each media frame
//! once, runs DTMF detection, VAD and [`turn`]-taking, drives the call's [`Agent`], and plays
//! the agent's speech through the [`egress`] ledger. The `llm` agent ([`conversation`]) answers
//! each turn with a [`reply`] task: model → clauses → speech, streamed. The [`registry`] holds a handle to each
//! live call for the control plane.

pub mod agent;
pub mod answering;
pub mod carrier_control;
pub mod control;
pub mod conversation;
pub mod directory;
pub mod echo_agent;
pub mod egress;
pub mod events;
pub mod registry;
pub mod reply;
pub mod session;
pub mod transport;
pub mod turn;

pub use agent::{Agent, AgentAction, AgentCatalog, AgentContext, AgentEvent, Speech};
pub use directory::CallDirectory;
pub use registry::{CallHandle, ExpectedCall, Registry};

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::carrier::{CarrierKind, MediaFormat, StreamStart};

/// The gateway's own id of a call (a UUIDv7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct CallId(pub uuid::Uuid);

impl CallId {
    /// A fresh id.
    pub fn new() -> Self {
        CallId(uuid::Uuid::now_v7())
    }
}

impl Default for CallId {
    fn default() -> Self {
        CallId::new()
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for CallId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(CallId)
    }
}

/// What is known about a call once its stream has started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// The gateway's id.
    pub call_id: CallId,
    /// The carrier on the line.
    pub carrier: CarrierKind,
    /// The carrier's stream id.
    pub stream_sid: String,
    /// The carrier's call id.
    pub call_sid: String,
    /// The carrier account.
    pub account_sid: String,
    /// Caller number, where known.
    pub from: Option<String>,
    /// Called number, where known.
    pub to: Option<String>,
    /// Custom parameters of the stream.
    pub custom_parameters: BTreeMap<String, String>,
    /// Codec and rate of the call's audio.
    pub media_format: MediaFormat,
    /// Name of the agent serving the call.
    pub agent: String,
    /// When the stream started.
    pub started_at: SystemTime,
}

impl CallInfo {
    /// Builds the info from a `start` message.
    pub fn from_start(
        call_id: CallId,
        carrier: CarrierKind,
        start: &StreamStart,
        agent: &str,
    ) -> Self {
        CallInfo {
            call_id,
            carrier,
            stream_sid: start.stream_sid.clone(),
            call_sid: start.call_sid.clone(),
            account_sid: start.account_sid.clone(),
            from: start.from.clone(),
            to: start.to.clone(),
            custom_parameters: start.custom_parameters.clone(),
            media_format: start.media_format,
            agent: agent.to_owned(),
            started_at: SystemTime::now(),
        }
    }
}

/// Masks a phone number for logs: keeps a leading `+`, the first two and the last two digits.
pub fn mask_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 5 {
        return "*".repeat(chars.len());
    }
    let keep_head = if chars[0] == '+' { 3 } else { 2 };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_head || i + 2 >= chars.len() {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_masked() {
        assert_eq!(mask_number("+919876543210"), "+91********10");
        assert_eq!(mask_number("08047491899"), "08*******99");
        assert_eq!(mask_number("123"), "***");
    }

    #[test]
    fn call_ids_round_trip_and_sort_by_time() {
        let a = CallId::new();
        let b = CallId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<CallId>().unwrap(), a);
    }
}
