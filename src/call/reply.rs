//! One bot answer, produced off the media path: the model's streamed text is cut at clause
//! ends, each clause is synthesized as soon as it is complete, and the audio is streamed to the
//! call as it arrives, so the caller hears the first clause while the model is still writing
//! the rest.
//!
//! A reply may start **held** (speculatively, before the caller's turn is confirmed over): it
//! runs the model and the synthesizer but keeps the audio until it is released; if it is
//! cancelled instead, nothing of it was ever sent. Tools the model calls are run here and
//! their results fed back for another round (except after `end_call`, `transfer_call` and
//! `route`, which end the answer). Provider failures end in a polite fallback line, never in
//! dead air. The reply reports back to its agent with [`ReplyDone`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::agent::{AgentAction, AgentPort, SpeechPart, UtteranceId};
use super::events::CallEventKind;
use crate::llm::clause::{ClauseRules, ClauseSplitter};
use crate::llm::tools::{ToolEffect, Toolbox};
use crate::llm::{ChatMessage, ChatModel, ChatRequest, LlmDelta, LlmError};
use crate::tts::{TTS_AUDIO_QUEUE, TtsVoice};

/// A call's synthesizer, shared by its successive replies (one at a time).
pub type SharedVoice = Arc<Mutex<Box<dyn TtsVoice>>>;

/// Pre-synthesized lines for when a provider fails (PCM per sample rate).
#[derive(Debug, Default)]
pub struct FallbackAudio {
    lines: std::sync::RwLock<Vec<(u32, Arc<Vec<i16>>)>>,
}

impl FallbackAudio {
    /// The fallback line's audio at `rate`, if it has been synthesized.
    pub fn get(&self, rate: u32) -> Option<Arc<Vec<i16>>> {
        let lines = self.lines.read().ok()?;
        lines
            .iter()
            .find(|(r, _)| *r == rate)
            .map(|(_, a)| a.clone())
    }

    /// Stores the line's audio at `rate`.
    pub fn put(&self, rate: u32, pcm: Vec<i16>) {
        if let Ok(mut lines) = self.lines.write() {
            lines.retain(|(r, _)| *r != rate);
            lines.push((rate, Arc::new(pcm)));
        }
    }
}

/// What a reply says.
#[derive(Debug, Clone)]
pub enum ReplySource {
    /// Ask the model, with this conversation (the new user message last).
    Model {
        /// The messages to send.
        messages: Vec<ChatMessage>,
    },
    /// Say fixed text (a greeting, a fallback line).
    Fixed(String),
}

/// Everything a reply needs.
pub struct ReplyJob {
    /// The utterance its audio becomes.
    pub utterance: UtteranceId,
    /// What to say.
    pub source: ReplySource,
    /// The model.
    pub model: Arc<dyn ChatModel>,
    /// The tools the gateway runs for the model.
    pub toolbox: Arc<Toolbox>,
    /// The call's synthesizer.
    pub voice: SharedVoice,
    /// The synthesizer's provider name (for events).
    pub tts_name: &'static str,
    /// The call's sample rate.
    pub sample_rate: u32,
    /// Text cutting rules.
    pub clause_rules: ClauseRules,
    /// Time the model may take, retries included, before the fallback line.
    pub latency_budget: Duration,
    /// Most model rounds (tool results add rounds).
    pub max_rounds: u32,
    /// Said when the model cannot answer.
    pub fallback_line: String,
    /// Said after `end_call` when the model said nothing.
    pub goodbye_line: String,
    /// Said before a transfer when the model said nothing.
    pub transfer_line: String,
    /// Fallback audio for when the synthesizer fails.
    pub fallback_audio: Arc<FallbackAudio>,
    /// Back to the session.
    pub port: AgentPort,
    /// Stops the reply (barge-in, discarded speculation, call end).
    pub cancel: CancellationToken,
    /// `true` once the audio may be heard; a held reply starts `false`.
    pub release: watch::Receiver<bool>,
    /// When the reply was asked for (for the gateway's own latency share).
    pub started: Instant,
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Said in full.
    Completed,
    /// Stopped by its cancel token.
    Cancelled,
    /// A provider failed; the fallback line was said instead (or as much as could be).
    Fallback,
}

/// What the reply hands back to its agent (through [`AgentAction::Wake`]).
#[derive(Debug, Clone)]
pub struct ReplyDone {
    /// The utterance.
    pub utterance: UtteranceId,
    /// Messages to append to the history (assistant text, tool calls and results).
    pub messages: Vec<ChatMessage>,
    /// How it ended.
    pub outcome: ReplyOutcome,
    /// The call should end once the utterance has played.
    pub end_call: Option<String>,
    /// The call should be transferred once the utterance has played.
    pub transfer: Option<String>,
    /// The model chose this outcome with `route`: the script goes on once the utterance has
    /// played.
    pub route: Option<String>,
}

/// The output side of a reply: audio parts to the session, or held until released.
struct Speaker {
    utterance: UtteranceId,
    port: AgentPort,
    release: watch::Receiver<bool>,
    held: Vec<SpeechPart>,
    sample_rate: u32,
    spoken: bool,
}

impl Speaker {
    fn released(&self) -> bool {
        *self.release.borrow()
    }

    /// Sends (or holds) one part; false if the call has ended.
    async fn emit(&mut self, part: SpeechPart) -> bool {
        if matches!(part, SpeechPart::Audio { .. }) {
            self.spoken = true;
        }
        if !self.released() {
            self.held.push(part);
            return true;
        }
        self.flush().await && self.send(part).await
    }

    async fn flush(&mut self) -> bool {
        for part in std::mem::take(&mut self.held) {
            if !self.send(part).await {
                return false;
            }
        }
        true
    }

    async fn send(&self, part: SpeechPart) -> bool {
        self.port
            .send(AgentAction::Stream {
                utterance: self.utterance,
                part,
            })
            .await
            .is_ok()
    }

    async fn record(&self, kind: CallEventKind) {
        let _ = self.port.send(AgentAction::Record(kind)).await;
    }

    async fn stage(&self, stage: &'static str, elapsed: Duration) {
        let _ = self.port.send(AgentAction::Stage { stage, elapsed }).await;
    }

    /// Waits until the reply is released (or cancelled); true if released.
    async fn wait_release(&mut self, cancel: &CancellationToken) -> bool {
        loop {
            if self.released() {
                return self.flush().await;
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                changed = self.release.changed() => if changed.is_err() { return false; },
            }
        }
    }
}

/// Runs one reply to its end and reports back.
pub async fn run_reply(job: ReplyJob) {
    let mut speaker = Speaker {
        utterance: job.utterance,
        port: job.port.clone(),
        release: job.release.clone(),
        held: Vec::new(),
        sample_rate: job.sample_rate,
        spoken: false,
    };
    let mut done = ReplyDone {
        utterance: job.utterance,
        messages: Vec::new(),
        outcome: ReplyOutcome::Completed,
        end_call: None,
        transfer: None,
        route: None,
    };
    match &job.source {
        ReplySource::Fixed(text) => {
            let ok = speak_segments(&job, &mut speaker, vec![text.clone()], true).await;
            done.messages.push(ChatMessage::Assistant {
                content: Some(text.clone()),
                tool_calls: Vec::new(),
            });
            if !ok {
                done.outcome = ReplyOutcome::Fallback;
            }
        }
        ReplySource::Model { messages } => {
            run_model(&job, &mut speaker, messages.clone(), &mut done).await;
        }
    }
    if job.cancel.is_cancelled() {
        done.outcome = ReplyOutcome::Cancelled;
    } else if speaker.wait_release(&job.cancel).await {
        speaker.emit(SpeechPart::End).await;
    } else {
        done.outcome = ReplyOutcome::Cancelled;
    }
    let _ = job.port.send(AgentAction::Wake(Box::new(done))).await;
}

/// The model rounds of a reply: stream, speak, run tools, repeat.
async fn run_model(
    job: &ReplyJob,
    speaker: &mut Speaker,
    mut messages: Vec<ChatMessage>,
    done: &mut ReplyDone,
) {
    let deadline = job.started + job.latency_budget;
    let tools = job.toolbox.specs();
    for round in 1..=job.max_rounds.max(1) {
        speaker
            .record(CallEventKind::LlmRequest {
                messages: messages.len(),
                round,
            })
            .await;
        let asked = Instant::now();
        let request = ChatRequest {
            messages: messages.clone(),
            tools: tools.clone(),
            deadline: deadline.max(Instant::now() + Duration::from_millis(500)),
        };
        let started = tokio::select! {
            _ = job.cancel.cancelled() => return,
            started = job.model.stream(request) => started,
        };
        let stream = match started {
            Ok(stream) => stream,
            Err(failure) => {
                for retry in &failure.retries {
                    speaker
                        .record(CallEventKind::LlmRetry {
                            error: retry.to_string(),
                        })
                        .await;
                }
                fail_over(
                    job,
                    speaker,
                    done,
                    &failure.error,
                    failure.retries.len() + 1,
                )
                .await;
                return;
            }
        };
        for retry in &stream.retries {
            speaker
                .record(CallEventKind::LlmRetry {
                    error: retry.to_string(),
                })
                .await;
        }
        let round_result = stream_round(job, speaker, stream.deltas, asked, round).await;
        match round_result {
            RoundResult::Cancelled => return,
            RoundResult::Failed { error, text } => {
                if !text.is_empty() {
                    done.messages.push(ChatMessage::Assistant {
                        content: Some(text),
                        tool_calls: Vec::new(),
                    });
                }
                fail_over(job, speaker, done, &error, 1).await;
                return;
            }
            RoundResult::Text(text) => {
                done.messages.push(ChatMessage::Assistant {
                    content: Some(text),
                    tool_calls: Vec::new(),
                });
                return;
            }
            RoundResult::Tools { text, calls } => {
                let assistant = ChatMessage::Assistant {
                    content: Some(text.clone()).filter(|t| !t.is_empty()),
                    tool_calls: calls.clone(),
                };
                messages.push(assistant.clone());
                done.messages.push(assistant);
                let now = chrono::Utc::now();
                for call in &calls {
                    let outcome = job.toolbox.run(call, now);
                    speaker
                        .record(CallEventKind::ToolCalled {
                            name: call.name.clone(),
                            arguments: call.arguments.clone(),
                            result: outcome.result.clone(),
                        })
                        .await;
                    match outcome.effect {
                        ToolEffect::None => {}
                        ToolEffect::EndCall { reason } => {
                            done.end_call =
                                Some(reason.unwrap_or_else(|| "conversation over".into()))
                        }
                        ToolEffect::Transfer { to } => done.transfer = Some(to),
                        ToolEffect::Route { outcome } => done.route = Some(outcome),
                        ToolEffect::Lead(lead) => {
                            speaker
                                .record(CallEventKind::LeadCaptured {
                                    name: lead.name.clone(),
                                    phone: lead.phone.clone(),
                                    reason: lead.reason.clone(),
                                })
                                .await;
                        }
                    }
                    let tool_message = ChatMessage::Tool {
                        tool_call_id: call.id.clone(),
                        content: outcome.result.to_string(),
                    };
                    messages.push(tool_message.clone());
                    done.messages.push(tool_message);
                }
                if done.end_call.is_some() || done.transfer.is_some() {
                    if !speaker.spoken {
                        let line = if done.transfer.is_some() {
                            job.transfer_line.clone()
                        } else {
                            job.goodbye_line.clone()
                        };
                        speak_segments(job, speaker, vec![line.clone()], false).await;
                        done.messages.push(ChatMessage::Assistant {
                            content: Some(line),
                            tool_calls: Vec::new(),
                        });
                    }
                    return;
                }
                if done.route.is_some() {
                    // The script goes on: no further round, and no line of our own.
                    return;
                }
            }
        }
    }
}

/// How one model round ended.
enum RoundResult {
    Cancelled,
    Failed {
        error: LlmError,
        text: String,
    },
    Text(String),
    Tools {
        text: String,
        calls: Vec<crate::llm::ToolCall>,
    },
}

/// Streams one model round: text is cut into clauses that a concurrent synthesis loop speaks.
async fn stream_round(
    job: &ReplyJob,
    speaker: &mut Speaker,
    mut deltas: futures::stream::BoxStream<'static, Result<LlmDelta, LlmError>>,
    asked: Instant,
    round: u32,
) -> RoundResult {
    use futures::StreamExt;

    let (segment_tx, mut segment_rx) = mpsc::channel::<String>(32);
    let cancel = job.cancel.clone();
    let port = job.port.clone();
    let model_side = async {
        let mut splitter = ClauseSplitter::new(job.clause_rules);
        let mut text = String::new();
        let mut segments = Vec::new();
        let mut first = true;
        let mut calls = Vec::new();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return RoundResult::Cancelled,
                next = deltas.next() => next,
            };
            match next {
                Some(Ok(LlmDelta::Text(delta))) => {
                    if first {
                        first = false;
                        let elapsed = asked.elapsed();
                        let _ = port
                            .send(AgentAction::Stage {
                                stage: "llm_first_token",
                                elapsed,
                            })
                            .await;
                        let _ = port
                            .send(AgentAction::Record(CallEventKind::LlmFirstToken {
                                latency_ms: elapsed.as_millis() as u64,
                            }))
                            .await;
                    }
                    text.push_str(&delta);
                    splitter.push(&delta, &mut segments);
                    for segment in segments.drain(..) {
                        if segment_tx.send(segment).await.is_err() {
                            return RoundResult::Cancelled;
                        }
                    }
                }
                Some(Ok(LlmDelta::ToolCalls(found))) => calls.extend(found),
                Some(Ok(LlmDelta::Finished { reason, usage })) => {
                    let _ = port
                        .send(AgentAction::Record(CallEventKind::LlmDone {
                            finish_reason: reason,
                            prompt_tokens: usage.map(|u| u.prompt_tokens),
                            completion_tokens: usage.map(|u| u.completion_tokens),
                        }))
                        .await;
                }
                Some(Err(error)) => {
                    if let Some(rest) = splitter.finish() {
                        let _ = segment_tx.send(rest).await;
                    }
                    return RoundResult::Failed { error, text };
                }
                None => break,
            }
        }
        if let Some(rest) = splitter.finish() {
            let _ = segment_tx.send(rest).await;
        }
        drop(segment_tx);
        let text = text.trim().to_owned();
        if calls.is_empty() {
            RoundResult::Text(text)
        } else {
            RoundResult::Tools { text, calls }
        }
    };
    let speech_side = async {
        let mut ok = true;
        let mut first = round == 1;
        while let Some(segment) = segment_rx.recv().await {
            if !ok {
                continue;
            }
            ok = speak_segment(job, speaker, &segment, first).await;
            first = false;
        }
        ok
    };
    let (result, spoke_ok) = tokio::join!(model_side, speech_side);
    if !spoke_ok && !job.cancel.is_cancelled() {
        play_fallback_audio(job, speaker).await;
    }
    result
}

/// The model failed: say the fallback line (synthesized, or pre-synthesized audio).
async fn fail_over(
    job: &ReplyJob,
    speaker: &mut Speaker,
    done: &mut ReplyDone,
    error: &LlmError,
    attempts: usize,
) {
    if job.cancel.is_cancelled() {
        return;
    }
    tracing::warn!(%error, attempts, "language model failed: saying the fallback line");
    speaker
        .record(CallEventKind::LlmFailed {
            error: error.to_string(),
            attempts: attempts as u32,
        })
        .await;
    speaker
        .record(CallEventKind::FallbackPlayed { stage: "llm" })
        .await;
    done.outcome = ReplyOutcome::Fallback;
    if !speaker.spoken {
        speak_segments(job, speaker, vec![job.fallback_line.clone()], false).await;
        done.messages.push(ChatMessage::Assistant {
            content: Some(job.fallback_line.clone()),
            tool_calls: Vec::new(),
        });
    }
}

/// Speaks whole segments (fixed text); false if synthesis failed (the fallback audio was
/// played instead where possible).
async fn speak_segments(
    job: &ReplyJob,
    speaker: &mut Speaker,
    segments: Vec<String>,
    first: bool,
) -> bool {
    let mut first = first;
    for segment in segments {
        if !speak_segment(job, speaker, &segment, first).await {
            if !job.cancel.is_cancelled() {
                play_fallback_audio(job, speaker).await;
            }
            return false;
        }
        first = false;
    }
    true
}

/// Synthesizes one segment and streams its audio; false if the synthesizer failed.
async fn speak_segment(job: &ReplyJob, speaker: &mut Speaker, text: &str, first: bool) -> bool {
    if job.cancel.is_cancelled() {
        return true;
    }
    if !speaker.emit(SpeechPart::Text(text.to_owned())).await {
        return true;
    }
    let (audio_tx, mut audio_rx) = mpsc::channel::<Vec<i16>>(TTS_AUDIO_QUEUE);
    let asked = Instant::now();
    let mut voice = job.voice.lock().await;
    let synthesis = voice.synthesize(text, &audio_tx, &job.cancel);
    let mut synthesis = Box::pin(synthesis);
    let mut result = None;
    let mut first_piece: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            piece = audio_rx.recv() => match piece {
                Some(pcm) => {
                    if first_piece.is_none() {
                        first_piece = Some(Instant::now());
                    }
                    if !speaker.emit(SpeechPart::Audio { pcm, sample_rate: speaker.sample_rate }).await {
                        return true;
                    }
                }
                None => break,
            },
            outcome = &mut synthesis, if result.is_none() => {
                result = Some(outcome);
                // Drain what is already queued, then stop.
                while let Ok(pcm) = audio_rx.try_recv() {
                    if first_piece.is_none() {
                        first_piece = Some(Instant::now());
                    }
                    speaker.emit(SpeechPart::Audio { pcm, sample_rate: speaker.sample_rate }).await;
                }
                break;
            }
        }
    }
    drop(synthesis);
    drop(voice);
    let provider = job.tts_name;
    match result {
        Some(Ok(stats)) => {
            if first {
                let latency = stats
                    .first_byte
                    .or_else(|| first_piece.map(|t| t.duration_since(asked)))
                    .unwrap_or_default();
                speaker.stage("tts_first_byte", latency).await;
                speaker
                    .record(CallEventKind::TtsFirstByte {
                        provider,
                        latency_ms: latency.as_millis() as u64,
                        fallback: stats.fallback,
                    })
                    .await;
            }
            true
        }
        Some(Err(error)) => {
            tracing::warn!(%error, "speech synthesis failed");
            speaker
                .record(CallEventKind::TtsFailed {
                    provider,
                    error: error.to_string(),
                })
                .await;
            false
        }
        None => true,
    }
}

/// Plays the pre-synthesized fallback line, if there is one.
async fn play_fallback_audio(job: &ReplyJob, speaker: &mut Speaker) {
    speaker
        .record(CallEventKind::FallbackPlayed { stage: "tts" })
        .await;
    if let Some(pcm) = job.fallback_audio.get(job.sample_rate) {
        speaker
            .emit(SpeechPart::Text(job.fallback_line.clone()))
            .await;
        speaker
            .emit(SpeechPart::Audio {
                pcm: pcm.as_ref().clone(),
                sample_rate: job.sample_rate,
            })
            .await;
    } else {
        tracing::warn!("no fallback audio available: the caller hears silence for this answer");
    }
}
