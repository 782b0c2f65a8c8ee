//! CallEvents: the record of what happened on a call, and the sink they go to.
//!
//! The session never waits on the record: [`EventSink::record`] is a `try_send` into a bounded
//! queue drained by a writer task. Until a durable store is configured, the writer logs each
//! event as one structured line (target `voicegw::events`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

use super::CallId;
use super::agent::{DtmfSource, Heard, UtteranceId};
use crate::metrics::Metrics;

/// One thing that happened on a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallEventKind {
    /// The carrier's `start` arrived; the call is live.
    StreamStarted {
        /// Carrier name.
        carrier: &'static str,
        /// Carrier stream id.
        stream_sid: String,
        /// Carrier call id.
        call_sid: String,
        /// Wire encoding.
        encoding: &'static str,
        /// Sample rate.
        sample_rate: u32,
        /// Agent serving the call.
        agent: String,
    },
    /// The caller started speaking.
    UserSpeechStarted {
        /// Position on the inbound timeline (ms since the stream started).
        at_ms: u64,
    },
    /// The caller's turn ended.
    UserTurnEnded {
        /// Position on the inbound timeline (ms) of the end of speech.
        at_ms: u64,
        /// Length of the utterance (ms).
        duration_ms: u64,
        /// What the recognizer heard, when the call has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
        /// From the end of speech to the decision that the turn is over (ms).
        decided_after_ms: u64,
    },
    /// The recognizer fixed a segment's text.
    SttFinal {
        /// The text (may be empty).
        text: String,
        /// Inbound timeline (ms) of the segment's end.
        end_ms: u64,
        /// The provider judged it the end of the speaker's turn.
        speech_final: bool,
        /// It answered our `Finalize`.
        from_finalize: bool,
        /// From the caller's last voiced audio to this result (ms), when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        latency_ms: Option<u64>,
    },
    /// The recognizer reported speech or an utterance end.
    SttSignal {
        /// `speech_started` or `utterance_end`.
        signal: &'static str,
        /// Inbound timeline (ms).
        at_ms: u64,
    },
    /// The recognizer's connection dropped and was restored, audio replayed.
    SttReconnected {
        /// Attempts it took.
        attempts: u32,
        /// Audio replayed (ms).
        replayed_ms: u64,
    },
    /// The recognizer failed for the rest of the call.
    SttFailed {
        /// Why.
        error: String,
    },
    /// An answer was started before the turn was confirmed over.
    SpeculationStarted {
        /// The transcript it answers.
        transcript: String,
    },
    /// A speculative answer was confirmed by the final transcript and released.
    SpeculationUsed {
        /// How long it had been prepared before the turn was confirmed (ms).
        head_start_ms: u64,
    },
    /// A speculative answer was thrown away unheard.
    SpeculationDiscarded {
        /// Why (`transcript_changed`, `caller_resumed`).
        reason: &'static str,
    },
    /// A request to the language model started.
    LlmRequest {
        /// Messages sent.
        messages: usize,
        /// Which round of the turn (tool results add rounds).
        round: u32,
    },
    /// The language model's first token arrived.
    LlmFirstToken {
        /// From the request to the first token (ms).
        latency_ms: u64,
    },
    /// A language-model attempt failed and was retried.
    LlmRetry {
        /// The attempt's error.
        error: String,
    },
    /// The language model could not answer; the fallback line was used.
    LlmFailed {
        /// The last error.
        error: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The language model finished an answer.
    LlmDone {
        /// Why it stopped.
        finish_reason: crate::llm::FinishReason,
        /// Prompt tokens, if reported.
        #[serde(skip_serializing_if = "Option::is_none")]
        prompt_tokens: Option<u32>,
        /// Completion tokens, if reported.
        #[serde(skip_serializing_if = "Option::is_none")]
        completion_tokens: Option<u32>,
    },
    /// The gateway ran a tool for the model.
    ToolCalled {
        /// Tool name.
        name: String,
        /// Arguments as the model gave them (JSON text).
        arguments: String,
        /// The result fed back (JSON).
        result: serde_json::Value,
    },
    /// The caller's details were captured by `capture_lead`.
    LeadCaptured {
        /// Name.
        name: String,
        /// Phone (E.164).
        phone: String,
        /// Why they called.
        reason: String,
    },
    /// The call is to be transferred.
    TransferRequested {
        /// Target (E.164).
        to: String,
    },
    /// The carrier refused or could not be asked to transfer the call.
    TransferFailed {
        /// Target (E.164).
        to: String,
        /// Why.
        error: String,
    },
    /// A text message was handed to the carrier.
    SmsSent {
        /// Recipient (E.164).
        to: String,
        /// The carrier's message id, where it gives one.
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// Characters in the body.
        chars: usize,
    },
    /// A text message could not be sent.
    SmsFailed {
        /// Recipient (E.164), where known.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Why.
        error: String,
    },
    /// A text-to-speech segment's first audio arrived.
    TtsFirstByte {
        /// Provider.
        provider: &'static str,
        /// From the request to the first audio (ms).
        latency_ms: u64,
        /// A fallback path produced it.
        fallback: bool,
    },
    /// Text-to-speech failed for a segment.
    TtsFailed {
        /// Provider.
        provider: &'static str,
        /// Why.
        error: String,
    },
    /// The first audio of the answer to a caller turn was sent.
    ResponseStarted {
        /// Which utterance.
        utterance: UtteranceId,
        /// From the end of the caller's speech to the first audio sent (ms).
        latency_ms: u64,
    },
    /// A barge-in turned out to be noise or a backchannel; the bot resumed.
    BargeInReverted {
        /// The utterance resumed.
        utterance: UtteranceId,
        /// What the caller said, if anything.
        #[serde(skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    /// The assistant's message in the history was cut to what the caller heard.
    HistoryTrimmed {
        /// The words the caller heard.
        heard_text: String,
        /// Characters dropped.
        dropped_chars: usize,
    },
    /// A fallback line was played because a provider failed.
    FallbackPlayed {
        /// Which stage failed (`llm`, `tts`).
        stage: &'static str,
    },
    /// The bot started an utterance (its first chunk was sent).
    BotSpeechStarted {
        /// Which utterance.
        utterance: UtteranceId,
        /// Its length (ms).
        duration_ms: u64,
        /// Inbound timeline position (ms) when the first audio was sent.
        at_ms: u64,
    },
    /// The carrier confirmed that audio up to a mark has played.
    MarkPlayed {
        /// Which utterance.
        utterance: UtteranceId,
        /// The chunk's index in it.
        chunk: u64,
        /// Milliseconds of the utterance played so far.
        played_ms: u64,
    },
    /// The bot's utterance played to its end.
    BotSpeechFinished {
        /// Which utterance.
        utterance: UtteranceId,
    },
    /// The caller interrupted the bot.
    BargeIn(Heard),
    /// The agent stopped the bot's speech before its end.
    BotSpeechCancelled(Heard),
    /// A key press.
    Dtmf {
        /// The digit.
        digit: char,
        /// Carrier event or in-band.
        source: DtmfSource,
    },
    /// A malformed frame was skipped.
    BadFrame {
        /// Stable label (see `FrameError::kind`).
        kind: &'static str,
        /// The reason, for people.
        message: String,
    },
    /// The carrier's `stop` arrived.
    StreamStopped {
        /// The carrier's reason, where given.
        reason: Option<String>,
    },
    /// A scripted call entered a node.
    ScriptNodeEntered {
        /// The node's name.
        node: String,
    },
    /// A scripted call started saying a prompt (or sent a text message).
    ScriptPrompt {
        /// The node it belongs to.
        node: String,
        /// Which text of the node.
        kind: ScriptPromptKind,
        /// The audio came from the prompt cache (false: synthesized for this call; always
        /// false for a text message).
        cached: bool,
        /// Characters of a text message's body.
        #[serde(skip_serializing_if = "Option::is_none")]
        chars: Option<usize>,
    },
    /// A scripted call matched the caller's input against a node's transitions.
    ScriptInput {
        /// The node.
        node: String,
        /// Keys or speech.
        source: ScriptInputSource,
        /// The keys of the entry, or the transcript.
        input: String,
        /// Index of the transition taken, if one matched.
        #[serde(skip_serializing_if = "Option::is_none")]
        transition: Option<usize>,
        /// The key that matched, as written in the script (`1`, `"yes"`, `any`).
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// The caller's input matched nothing in a node (or the caller said nothing, for a node
    /// without a `timeout` transition).
    ScriptNoMatch {
        /// The node.
        node: String,
        /// No-matches in this node so far.
        count: u32,
    },
    /// The caller gave no input for the node's timeout after its prompt.
    ScriptNoInput {
        /// The node.
        node: String,
        /// The timeout (ms).
        after_ms: u64,
    },
    /// A scripted call handed the conversation to the language model.
    ScriptHandoff {
        /// The agent node, or the node whose `agent` target was taken.
        node: String,
        /// The outcomes the model may choose (none: the model keeps the call).
        outcomes: Vec<String>,
    },
    /// The language model chose an outcome of an agent node.
    ScriptRoute {
        /// The agent node.
        node: String,
        /// The outcome chosen.
        outcome: String,
        /// Where the call goes, as written in the script.
        target: String,
    },
    /// A scripted call could not go on and ended.
    ScriptFailed {
        /// Why.
        reason: String,
        /// The variables without a value, when that was the reason.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        missing: Vec<String>,
    },
    /// The stream named a `call_id` that is not an expected call; it runs as a call of its
    /// own with the default agent.
    CallNotLinked {
        /// The `call_id` the stream carried (the event itself is under the stream's own id).
        requested_id: String,
        /// Why (`not_expected`, `not_found`, `directory_timeout`, `already_live`).
        reason: &'static str,
    },
    /// An answering-machine verdict the call acted on (it also sets the call's
    /// `answered_by`).
    Amd {
        /// `human`, `unknown`, `machine_start`, `machine_end_beep`, `machine_end_silence`, …
        verdict: String,
        /// Whose verdict: the gateway's detector or the carrier's.
        by: super::answering::VerdictBy,
        /// When, ms since the stream started.
        ms: u64,
    },
    /// A voicemail message was played to the end on an answering machine.
    VoicemailLeft {
        /// The machine's beep was the cue.
        beep: bool,
        /// When the message started, ms since the stream started.
        ms: u64,
        /// How long it lasted, ms.
        duration_ms: u64,
    },
    /// The call ended (always the last event).
    CallEnded {
        /// Why (stable label).
        reason: String,
        /// Milliseconds since the stream started.
        duration_ms: u64,
    },
}

/// Which text of a script node was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptPromptKind {
    /// The node's prompt, on entering it.
    Prompt,
    /// The reprompt (or the prompt again) after a no-match.
    Reprompt,
    /// `@goodbye`, before hanging up.
    Goodbye,
    /// An `sms` target's text (sent, not said).
    Sms,
}

/// Where a scripted call's input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptInputSource {
    /// Key presses.
    Dtmf,
    /// The recognizer's transcript of a caller turn.
    Speech,
}

/// A CallEvent with its call, order and time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEvent {
    /// The call.
    pub call_id: CallId,
    /// 1, 2, 3 … within the call.
    pub seq: u64,
    /// Microseconds since the Unix epoch.
    pub at_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: CallEventKind,
}

/// The non-blocking entry to the event record.
#[derive(Debug, Clone)]
pub struct EventSink {
    sender: mpsc::Sender<CallEvent>,
    metrics: Option<Metrics>,
}

impl EventSink {
    /// A sink feeding `sender`; `metrics` counts events it had to drop.
    pub fn new(sender: mpsc::Sender<CallEvent>, metrics: Option<Metrics>) -> Self {
        EventSink { sender, metrics }
    }

    /// A sink whose events are logged by a spawned task, with room for `capacity` in flight.
    pub fn spawn_logger(capacity: usize, metrics: Option<Metrics>) -> Self {
        let (sender, mut receiver) = mpsc::channel::<CallEvent>(capacity);
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                match serde_json::to_string(&event) {
                    Ok(json) => tracing::info!(target: "voicegw::events", "{json}"),
                    Err(e) => {
                        tracing::warn!(target: "voicegw::events", "unserializable event: {e}")
                    }
                }
            }
        });
        EventSink::new(sender, metrics)
    }

    /// Hands an event to the writer without waiting; a full queue drops it and counts the drop.
    pub fn record(&self, event: CallEvent) {
        if self.sender.try_send(event).is_err()
            && let Some(metrics) = &self.metrics
        {
            metrics.events_dropped.inc();
        }
    }
}

/// Numbers and timestamps one call's events.
#[derive(Debug, Clone)]
pub struct CallRecorder {
    call_id: CallId,
    /// Shared by clones, so a task spawned for the call numbers its events in the same run.
    seq: Arc<AtomicU64>,
    sink: EventSink,
}

impl CallRecorder {
    /// A recorder for `call_id`.
    pub fn new(call_id: CallId, sink: EventSink) -> Self {
        CallRecorder {
            call_id,
            seq: Arc::new(AtomicU64::new(0)),
            sink,
        }
    }

    /// Records one event now.
    pub fn record(&mut self, kind: CallEventKind) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let at_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.sink.record(CallEvent {
            call_id: self.call_id,
            seq,
            at_us,
            kind,
        });
    }

    /// The call the events are recorded under.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// Records later events under `call_id` (the store's id of a call the stream turned out
    /// to be), keeping the sequence: numbering goes on from the events already recorded.
    /// Clones made before keep the old id.
    pub fn rekey(&mut self, call_id: CallId) {
        self.call_id = call_id;
    }

    /// Events recorded so far.
    pub fn count(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_numbered_and_serialize_flat() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut recorder = CallRecorder::new(CallId::new(), EventSink::new(tx, None));
        recorder.record(CallEventKind::UserSpeechStarted { at_ms: 120 });
        recorder.record(CallEventKind::Dtmf {
            digit: '#',
            source: DtmfSource::InBand,
        });
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        assert_eq!((first.seq, second.seq), (1, 2));
        let json = serde_json::to_value(&second).unwrap();
        assert_eq!(json["type"], "dtmf");
        assert_eq!(json["digit"], "#");
        assert_eq!(json["source"], "in_band");
        assert!(json["at_us"].as_u64().unwrap() > 1_600_000_000_000_000);
    }

    #[tokio::test]
    async fn a_rekeyed_recorder_keeps_numbering_under_the_new_id() {
        let (tx, mut rx) = mpsc::channel(4);
        let first_id = CallId::new();
        let store_id = CallId::new();
        let mut recorder = CallRecorder::new(first_id, EventSink::new(tx, None));
        recorder.record(CallEventKind::StreamStopped { reason: None });
        recorder.rekey(store_id);
        assert_eq!(recorder.call_id(), store_id);
        recorder.record(CallEventKind::StreamStopped { reason: None });
        let a = rx.recv().await.unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!((a.call_id, a.seq), (first_id, 1));
        assert_eq!((b.call_id, b.seq), (store_id, 2));
    }

    #[test]
    fn script_events_serialize_small_and_flat() {
        let json = |kind: CallEventKind| serde_json::to_value(kind).unwrap();
        assert_eq!(
            json(CallEventKind::ScriptPrompt {
                node: "start".into(),
                kind: ScriptPromptKind::Reprompt,
                cached: true,
                chars: None,
            }),
            serde_json::json!({"type": "script_prompt", "node": "start", "kind": "reprompt", "cached": true})
        );
        assert_eq!(
            json(CallEventKind::ScriptInput {
                node: "start".into(),
                source: ScriptInputSource::Dtmf,
                input: "42#".into(),
                transition: None,
                key: None,
            }),
            serde_json::json!({"type": "script_input", "node": "start", "source": "dtmf", "input": "42#"})
        );
        assert_eq!(
            json(CallEventKind::ScriptFailed {
                reason: "x".into(),
                missing: vec![],
            }),
            serde_json::json!({"type": "script_failed", "reason": "x"})
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let metrics = Metrics::new().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let mut recorder =
            CallRecorder::new(CallId::new(), EventSink::new(tx, Some(metrics.clone())));
        recorder.record(CallEventKind::StreamStopped { reason: None });
        recorder.record(CallEventKind::StreamStopped { reason: None });
        assert_eq!(metrics.events_dropped.get(), 1);
    }
}
