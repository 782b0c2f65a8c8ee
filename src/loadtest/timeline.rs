//! What happened on one simulated call, in order: the record a caller keeps and
//! [`super::measure`] reads.
//!
//! Times are microseconds since the harness began to connect the call. The caller stamps each
//! event when it happens on the socket (a message sent or received); the meaning of each time
//! is given on its variant, so the arithmetic in `measure` can be checked on a synthetic
//! timeline.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One call's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The events, in the order they happened (times never decrease).
    pub events: Vec<Stamped>,
}

/// An event and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// Microseconds since the harness began to connect the call.
    pub at_us: u64,
    /// What happened.
    pub event: Event,
}

/// Something that happened on a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The WebSocket handshake completed (its time is the connect time).
    Connected,
    /// The connection could not be opened (or the handshake was refused).
    ConnectFailed {
        /// Why.
        reason: String,
    },
    /// The carrier's opening messages (`connected`, `start`) were sent.
    StreamStarted,
    /// A caller utterance's voiced audio began: the time is when that audio begins, i.e.
    /// the send time of the message holding its first voiced 20 ms, minus the audio of that
    /// message before the onset.
    SpeechStart {
        /// The caller's utterance number on this call (1, 2, …).
        turn: u32,
        /// The caller spoke over bot audio on purpose (a scenario barge-in).
        barge_in: bool,
    },
    /// A caller utterance's voiced audio ended: the send time of the message holding its
    /// last voiced 20 ms (a message is sent when its audio has elapsed).
    SpeechEnd {
        /// The caller's utterance number (as in its `SpeechStart`).
        turn: u32,
        /// The utterance was a barge-in.
        barge_in: bool,
        /// The scenario waits for the bot to answer this utterance.
        expect_reply: bool,
    },
    /// DTMF digits were sent (the time of the last digit's message).
    DtmfSent {
        /// The caller's action number on this call (shares the counter with utterances).
        turn: u32,
        /// The digits.
        digits: String,
        /// The scenario waits for the bot to answer the digits.
        expect_reply: bool,
    },
    /// A `media` message arrived from the gateway.
    BotMedia {
        /// The audio it holds, in microseconds.
        audio_us: u32,
        /// Where its first voiced 20 ms window begins, in microseconds of its audio; `None`
        /// when the whole message is below the voicing threshold (silence, comfort noise).
        voiced_offset_us: Option<u32>,
        /// Bot audio received earlier and not yet played when this message arrived, in
        /// microseconds (0: it starts playing on arrival).
        queued_us: u32,
    },
    /// A `mark` arrived from the gateway.
    BotMark {
        /// Its name.
        name: String,
    },
    /// A `clear` arrived from the gateway: unplayed audio was dropped.
    BotClear {
        /// Audio dropped from the playback queue, in microseconds.
        dropped_us: u32,
    },
    /// All bot audio received so far has played: playback stopped for want of audio.
    PlaybackDrained,
    /// A message from the gateway broke the carrier's protocol.
    Violation {
        /// What was wrong, one short line.
        what: String,
    },
    /// The caller hung up (`stop` sent, socket closed by the harness).
    HungUp,
    /// The call ended without the caller hanging up (gateway closed, socket error).
    Dropped {
        /// Why, one short line.
        reason: String,
    },
}

impl Timeline {
    /// Appends `event` at `at` since the call began to connect.
    pub fn push(&mut self, at: Duration, event: Event) {
        let at_us = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
        self.events.push(Stamped { at_us, event });
    }
}
