//! The language model: OpenAI-compatible streaming chat, the tools the gateway runs for it,
//! prompt templating, and cutting its text where speech can start.
//!
//! [`ChatModel`] is the seam: the real client speaks OpenAI's Chat Completions (and any
//! compatible server); tests put a local fake of the same wire protocol behind it.

use std::time::Instant;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// One message of a conversation, in OpenAI's roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ChatMessage {
    /// Instructions.
    System {
        /// The text.
        content: String,
    },
    /// What the caller said.
    User {
        /// The text.
        content: String,
    },
    /// What the model said (and the tools it called).
    Assistant {
        /// The text, if any.
        content: Option<String>,
        /// Tool calls, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's result.
    Tool {
        /// The call it answers.
        tool_call_id: String,
        /// The result (JSON text).
        content: String,
    },
}

/// A tool call the model made, arguments fully assembled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's id for the call.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text (as the model wrote them).
    pub arguments: String,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// Name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end.
    Stop,
    /// Token cap.
    Length,
    /// It wants tool results.
    ToolCalls,
    /// Content filter.
    ContentFilter,
    /// The stream ended without a finish reason.
    Unknown,
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
}

/// One piece of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmDelta {
    /// Text to say.
    Text(String),
    /// The tool calls of this completion, complete (emitted once, when they are).
    ToolCalls(Vec<ToolCall>),
    /// The end of the completion.
    Finished {
        /// Why it stopped.
        reason: FinishReason,
        /// Token counts, if the server sent them.
        usage: Option<Usage>,
    },
}

/// A completion to stream.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The conversation so far (system prompt first).
    pub messages: Vec<ChatMessage>,
    /// The tools offered.
    pub tools: Vec<ToolSpec>,
    /// Retries stop when the next attempt could not start before this instant.
    pub deadline: Instant,
}

/// Why a completion failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error `code`/`type`, if the body had one.
        code: Option<String>,
        /// The error message.
        message: String,
        /// Whether another attempt may succeed (429 rate limit, 5xx).
        retryable: bool,
    },
    /// The connection failed or broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The server sent something that is not the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No first byte / no progress within the time allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The client could not be set up (bad key, bad URL).
    #[error("configuration: {0}")]
    Config(String),
}

/// A started completion: the deltas, and the failed attempts retried before it started.
pub struct LlmStream {
    /// Errors of earlier attempts (each retried).
    pub retries: Vec<LlmError>,
    /// The deltas; an error after the start ends the stream.
    pub deltas: BoxStream<'static, Result<LlmDelta, LlmError>>,
}

impl std::fmt::Debug for LlmStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmStream")
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// A completion that never started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error} (after {} retries)", retries.len())]
pub struct LlmFailure {
    /// The last error.
    pub error: LlmError,
    /// Errors of earlier attempts.
    pub retries: Vec<LlmError>,
}

/// A streaming chat model.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync + 'static {
    /// Short name for metrics and events (`openai`).
    fn name(&self) -> &'static str;

    /// Starts a streaming completion, retrying 429/5xx/connect failures with backoff while the
    /// request's deadline allows.
    async fn stream(&self, request: ChatRequest) -> Result<LlmStream, LlmFailure>;
}

pub mod clause;
pub mod hours;
pub mod knowledge;
pub mod openai;
pub mod prompt;
pub mod tools;
