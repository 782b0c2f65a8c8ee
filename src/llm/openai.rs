//! [`OpenAiChat`]: streaming Chat Completions against OpenAI or any compatible server.
//!
//! Requests go through `async-openai` (types, request building, SSE parsing) with its own retry
//! layer replaced by a thin transport: a call in progress cannot wait the library's up-to-8 s
//! backoffs, so retries follow this client's budget instead — 429 (not `insufficient_quota`),
//! 5xx, 408/409, connect failures and first-token timeouts, with exponential backoff or the
//! server's `retry-after-ms`/`retry-after`, and only while the next attempt can start before the
//! request's deadline. The transport also keeps what the library drops from error responses
//! (the `retry-after` headers, the JSON error of a 5xx).
//!
//! An attempt counts as started when the first text, tool-call fragment or finish reason
//! arrives; until then it may be retried, afterwards an error ends the stream.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::{OpenAIError, WrappedError};
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestAssistantMessageContentPart, ChatCompletionRequestDeveloperMessageContent,
    ChatCompletionRequestDeveloperMessageContentPart, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestSystemMessageContent,
    ChatCompletionRequestSystemMessageContentPart, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestToolMessageContentPart,
    ChatCompletionRequestUserMessage, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, ChatCompletionResponseStream,
    ChatCompletionStreamOptions, ChatCompletionTool, ChatCompletionToolChoiceOption,
    ChatCompletionTools, CreateChatCompletionRequest, CreateChatCompletionStreamResponse,
    FinishReason as OpenAiFinish, FunctionCall, FunctionObject, ToolChoiceOptions,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use super::{
    ChatMessage, ChatModel, ChatRequest, FinishReason, LlmDelta, LlmError, LlmFailure, LlmStream,
    ToolCall, ToolSpec, Usage,
};
use crate::metrics::Metrics;

/// The provider label of this client's metrics.
const PROVIDER: &str = "openai_chat";

/// Longest error body kept in a message.
const MAX_ERROR_BODY: usize = 500;

/// Configuration of the OpenAI-compatible chat client (`[llm]`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// API base including `/v1` (a trailing slash is ignored).
    pub base_url: String,
    /// Bearer key (may be empty for local servers without auth).
    pub api_key: String,
    /// Model name.
    pub model: String,
    /// Sampling temperature, 0 to 2.
    pub temperature: f32,
    /// Completion token cap per answer.
    pub max_completion_tokens: u32,
    /// An attempt fails if no output arrives within this long (also the idle limit between
    /// chunks once started).
    pub first_token_timeout_ms: u64,
    /// Attempts per completion, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles per retry.
    pub initial_backoff_ms: u64,
    /// Backoff cap.
    pub max_backoff_ms: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: "https://api.openai.com/v1".to_string(),
            api_key: String::new(),
            model: "gpt-4o-mini".to_string(),
            temperature: 0.6,
            max_completion_tokens: 200,
            first_token_timeout_ms: 3000,
            max_attempts: 3,
            initial_backoff_ms: 150,
            max_backoff_ms: 1000,
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &crate::config::redacted(&self.api_key))
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("max_completion_tokens", &self.max_completion_tokens)
            .field("first_token_timeout_ms", &self.first_token_timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff_ms", &self.initial_backoff_ms)
            .field("max_backoff_ms", &self.max_backoff_ms)
            .finish()
    }
}

impl OpenAiConfig {
    /// Checks every value; the error names the key (`llm.temperature …`).
    pub fn validate(&self) -> Result<(), LlmError> {
        let bad = |message: &str| Err(LlmError::Config(format!("llm.{message}")));
        match reqwest::Url::parse(self.base_url.trim_end_matches('/')) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => return bad("base_url must be an http(s) URL such as https://api.openai.com/v1"),
        }
        if self.model.trim().is_empty() {
            return bad("model must not be empty");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("temperature must be within 0..=2");
        }
        if self.max_completion_tokens == 0 {
            return bad("max_completion_tokens must be at least 1");
        }
        if !(100..=120_000).contains(&self.first_token_timeout_ms) {
            return bad("first_token_timeout_ms must be within 100..=120000");
        }
        if !(1..=10).contains(&self.max_attempts) {
            return bad("max_attempts must be within 1..=10");
        }
        if self.max_backoff_ms > 60_000 {
            return bad("max_backoff_ms must be at most 60000");
        }
        if self.initial_backoff_ms > self.max_backoff_ms {
            return bad("initial_backoff_ms must not exceed max_backoff_ms");
        }
        if self.api_key.chars().any(|c| c.is_control() || c == ' ') {
            return bad("api_key must not contain spaces or control characters");
        }
        Ok(())
    }

    /// The backoff before retry number `retry` (1-based): `initial·2^(retry-1)`, capped.
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u64 << retry.saturating_sub(1).min(20);
        Duration::from_millis(
            self.initial_backoff_ms
                .saturating_mul(factor)
                .min(self.max_backoff_ms),
        )
    }
}

/// A streaming chat model speaking OpenAI's Chat Completions.
#[derive(Clone)]
pub struct OpenAiChat {
    config: OpenAiConfig,
    client: Client<OpenAIConfig>,
    http: reqwest::Client,
    metrics: Metrics,
}

impl std::fmt::Debug for OpenAiChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiChat")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiChat {
    /// A client for `config` (validated), counting requests in `metrics`.
    pub fn new(mut config: OpenAiConfig, metrics: Metrics) -> Result<OpenAiChat, LlmError> {
        config.validate()?;
        config.base_url = config.base_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.first_token_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| LlmError::Config(format!("HTTP client: {e}")))?;
        let openai = OpenAIConfig::new()
            .with_api_base(config.base_url.clone())
            .with_api_key(config.api_key.clone());
        let client =
            Client::build(http.clone(), openai).with_http_service(Transport { http: http.clone() });
        Ok(OpenAiChat {
            config,
            client,
            http,
            metrics,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// Checks the key with `GET {base}/models`: `Status` with the server's message when it is
    /// refused (401/403), `Transport` when the server cannot be reached.
    pub async fn check_credentials(&self) -> Result<(), LlmError> {
        let url = format!("{}/models", self.config.base_url);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.config.api_key)
            .timeout(Duration::from_millis(
                self.config.first_token_timeout_ms.max(5_000),
            ))
            .send()
            .await
            .map_err(|e| LlmError::Transport(format!("GET {url}: {}", error_chain(&e))))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(read_failure(response).await.into_llm_error())
    }

    /// The request body for `request`.
    fn build_request(&self, request: &ChatRequest) -> CreateChatCompletionRequest {
        let mut body = CreateChatCompletionRequest {
            model: self.config.model.clone(),
            messages: request.messages.iter().map(to_openai).collect(),
            max_completion_tokens: Some(self.config.max_completion_tokens),
            temperature: Some(self.config.temperature),
            stream: Some(true),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            }),
            ..Default::default()
        };
        if !request.tools.is_empty() {
            body.tools = Some(request.tools.iter().map(to_openai_tool).collect());
            body.tool_choice = Some(ChatCompletionToolChoiceOption::Mode(
                ToolChoiceOptions::Auto,
            ));
            body.parallel_tool_calls = Some(false);
        }
        body
    }

    /// One attempt: sends the request and waits for the first output.
    async fn attempt(
        &self,
        body: CreateChatCompletionRequest,
    ) -> Result<BoxStream<'static, Result<LlmDelta, LlmError>>, AttemptError> {
        let limit = Duration::from_millis(self.config.first_token_timeout_ms);
        let client = self.client.clone();
        let opening = async move {
            let mut inner = client
                .chat()
                .create_stream(body)
                .await
                .map_err(AttemptError::from_openai)?;
            let mut assembler = Assembler::default();
            while !assembler.started {
                match inner.next().await {
                    Some(Ok(chunk)) => assembler.absorb(chunk),
                    Some(Err(e)) => return Err(AttemptError::from_openai(e)),
                    None => {
                        return Err(AttemptError::retryable(LlmError::Transport(
                            "the stream ended before any output".to_string(),
                        )));
                    }
                }
            }
            Ok((inner, assembler))
        };
        match tokio::time::timeout(limit, opening).await {
            Err(_) => Err(AttemptError::retryable(LlmError::Timeout(format!(
                "no output within {} ms",
                limit.as_millis()
            )))),
            Ok(Err(e)) => Err(e),
            Ok(Ok((inner, assembler))) => Ok(deltas(inner, assembler, limit)),
        }
    }
}

#[async_trait::async_trait]
impl ChatModel for OpenAiChat {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn stream(&self, request: ChatRequest) -> Result<LlmStream, LlmFailure> {
        let body = self.build_request(&request);
        let mut retries: Vec<LlmError> = Vec::new();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.attempt(body.clone()).await {
                Ok(deltas) => {
                    self.metrics.provider(PROVIDER, "ok");
                    return Ok(LlmStream { retries, deltas });
                }
                Err(failure) => {
                    let delay = failure
                        .retry_after
                        .unwrap_or_else(|| self.config.backoff(attempts));
                    let again = failure.retryable
                        && attempts < self.config.max_attempts
                        && Instant::now() + delay < request.deadline;
                    if !again {
                        self.metrics.provider(PROVIDER, "error");
                        tracing::warn!(error = %failure.error, retries = retries.len(), "chat completion failed");
                        return Err(LlmFailure {
                            error: failure.error,
                            retries,
                        });
                    }
                    self.metrics.provider(PROVIDER, "retry");
                    tracing::info!(error = %failure.error, delay_ms = delay.as_millis() as u64, "retrying chat completion");
                    retries.push(failure.error);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
struct AttemptError {
    error: LlmError,
    retryable: bool,
    /// The server's retry hint.
    retry_after: Option<Duration>,
}

impl AttemptError {
    fn retryable(error: LlmError) -> AttemptError {
        AttemptError {
            error,
            retryable: true,
            retry_after: None,
        }
    }

    fn fatal(error: LlmError) -> AttemptError {
        AttemptError {
            error,
            retryable: false,
            retry_after: None,
        }
    }

    /// Classifies an error from `async-openai` (before the attempt started).
    fn from_openai(error: OpenAIError) -> AttemptError {
        match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpFailure>() {
                Ok(failure) => {
                    let retryable = failure.retryable();
                    let retry_after = failure.retry_after;
                    AttemptError {
                        error: failure.into_llm_error(),
                        retryable,
                        retry_after,
                    }
                }
                Err(other) => AttemptError::fatal(LlmError::Transport(other.to_string())),
            },
            OpenAIError::Reqwest(e) if e.is_connect() => AttemptError::retryable(
                LlmError::Transport(format!("connect: {}", error_chain(&e))),
            ),
            OpenAIError::Reqwest(e) if e.is_timeout() => {
                AttemptError::retryable(LlmError::Timeout(error_chain(&e)))
            }
            OpenAIError::Reqwest(e) => AttemptError::fatal(LlmError::Transport(error_chain(&e))),
            OpenAIError::ApiError(api) => {
                let status = api.status_code.as_u16();
                let failure = HttpFailure {
                    status,
                    code: api.api_error.code,
                    kind: api.api_error.r#type,
                    message: api.api_error.message,
                    retry_after: None,
                    should_retry: None,
                };
                let retryable = failure.retryable();
                AttemptError {
                    error: failure.into_llm_error(),
                    retryable,
                    retry_after: None,
                }
            }
            other => {
                let error = stream_error(other);
                let retryable = matches!(error, LlmError::Transport(_));
                AttemptError {
                    error,
                    retryable,
                    retry_after: None,
                }
            }
        }
    }
}

/// An error inside a started stream: a server error object or a broken stream is `Transport`,
/// a chunk that does not parse is `Protocol`.
fn stream_error(error: OpenAIError) -> LlmError {
    match error {
        OpenAIError::JSONDeserialize(e, content) => {
            match serde_json::from_str::<WrappedError>(&content) {
                Ok(wrapped) => {
                    let kind = wrapped
                        .error
                        .code
                        .or(wrapped.error.r#type)
                        .unwrap_or_else(|| "error".to_string());
                    LlmError::Transport(format!(
                        "server error in the stream ({kind}): {}",
                        wrapped.error.message
                    ))
                }
                Err(_) => LlmError::Protocol(format!(
                    "bad chunk ({e}): {}",
                    truncate(&content, MAX_ERROR_BODY)
                )),
            }
        }
        OpenAIError::StreamError(e) => LlmError::Transport(format!("stream broke: {e}")),
        OpenAIError::Reqwest(e) => LlmError::Transport(error_chain(&e)),
        other => LlmError::Protocol(other.to_string()),
    }
}

/// A tool call being assembled from its fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns chunks into [`LlmDelta`]s.
#[derive(Default)]
struct Assembler {
    pending: VecDeque<Result<LlmDelta, LlmError>>,
    calls: BTreeMap<u32, PartialCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// Text, a tool-call fragment or a finish reason arrived.
    started: bool,
    /// Nothing more will be produced.
    done: bool,
}

impl Assembler {
    fn absorb(&mut self, chunk: CreateChatCompletionStreamResponse) {
        if let Some(usage) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            });
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let delta = choice.delta;
            for text in [delta.content, delta.refusal].into_iter().flatten() {
                if !text.is_empty() {
                    self.started = true;
                    self.pending.push_back(Ok(LlmDelta::Text(text)));
                }
            }
            for fragment in delta.tool_calls.into_iter().flatten() {
                self.started = true;
                let call = self.calls.entry(fragment.index).or_default();
                if let Some(id) = fragment.id
                    && call.id.is_empty()
                {
                    call.id = id;
                }
                if let Some(function) = fragment.function {
                    if let Some(name) = function.name
                        && call.name.is_empty()
                    {
                        call.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        call.arguments.push_str(&arguments);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.started = true;
                self.finish = Some(match reason {
                    OpenAiFinish::Stop => FinishReason::Stop,
                    OpenAiFinish::Length => FinishReason::Length,
                    OpenAiFinish::ToolCalls | OpenAiFinish::FunctionCall => FinishReason::ToolCalls,
                    OpenAiFinish::ContentFilter => FinishReason::ContentFilter,
                });
            }
        }
    }

    /// The stream ended: the tool calls and the finish, or an error if it was cut short.
    fn end(&mut self) {
        self.done = true;
        let Some(reason) = self.finish else {
            self.pending.push_back(Err(LlmError::Transport(
                "the stream ended before a finish reason".to_string(),
            )));
            return;
        };
        if !self.calls.is_empty() {
            let mut calls = Vec::with_capacity(self.calls.len());
            for (index, call) in std::mem::take(&mut self.calls) {
                if call.id.is_empty() || call.name.is_empty() {
                    self.pending.push_back(Err(LlmError::Protocol(format!(
                        "tool call {index} has no id or name"
                    ))));
                    return;
                }
                calls.push(ToolCall {
                    id: call.id,
                    name: call.name,
                    arguments: call.arguments,
                });
            }
            self.pending.push_back(Ok(LlmDelta::ToolCalls(calls)));
        }
        self.pending.push_back(Ok(LlmDelta::Finished {
            reason,
            usage: self.usage,
        }));
    }

    /// Ends with `error`.
    fn fail(&mut self, error: LlmError) {
        self.done = true;
        self.pending.push_back(Err(error));
    }
}

/// The deltas of a started attempt; `idle` bounds the wait for each further chunk.
fn deltas(
    inner: ChatCompletionResponseStream,
    assembler: Assembler,
    idle: Duration,
) -> BoxStream<'static, Result<LlmDelta, LlmError>> {
    futures::stream::unfold(
        (inner, assembler),
        move |(mut inner, mut assembler)| async move {
            loop {
                if let Some(item) = assembler.pending.pop_front() {
                    if item.is_err() {
                        assembler.done = true;
                        assembler.pending.clear();
                    }
                    return Some((item, (inner, assembler)));
                }
                if assembler.done {
                    return None;
                }
                match tokio::time::timeout(idle, inner.next()).await {
                    Ok(Some(Ok(chunk))) => assembler.absorb(chunk),
                    Ok(Some(Err(e))) => assembler.fail(stream_error(e)),
                    Ok(None) => assembler.end(),
                    // Finished but the server never closed: the answer is complete anyway.
                    Err(_) if assembler.finish.is_some() => assembler.end(),
                    Err(_) => assembler.fail(LlmError::Timeout(format!(
                        "no data from the model for {} ms",
                        idle.as_millis()
                    ))),
                }
            }
        },
    )
    .boxed()
}

/// Our message as an `async-openai` request message.
pub fn to_openai(message: &ChatMessage) -> ChatCompletionRequestMessage {
    match message {
        ChatMessage::System { content } => {
            ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                content: ChatCompletionRequestSystemMessageContent::Text(content.clone()),
                name: None,
            })
        }
        ChatMessage::User { content } => {
            ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                content: ChatCompletionRequestUserMessageContent::Text(content.clone()),
                name: None,
            })
        }
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => {
            let tool_calls = (!tool_calls.is_empty()).then(|| {
                tool_calls
                    .iter()
                    .map(|call| {
                        ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                            id: call.id.clone(),
                            function: FunctionCall {
                                name: call.name.clone(),
                                arguments: call.arguments.clone(),
                            },
                        })
                    })
                    .collect()
            });
            // The API needs content or tool calls: an empty turn is sent as empty text.
            let content = match (content, &tool_calls) {
                (None, None) => Some(String::new()),
                (content, _) => content.clone(),
            };
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content: content.map(ChatCompletionRequestAssistantMessageContent::Text),
                tool_calls,
                ..Default::default()
            })
        }
        ChatMessage::Tool {
            tool_call_id,
            content,
        } => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(content.clone()),
            tool_call_id: tool_call_id.clone(),
        }),
    }
}

/// An `async-openai` request message as ours (developer messages become system messages;
/// text parts are joined). Non-text content and custom tool calls are not supported.
pub fn from_openai(message: &ChatCompletionRequestMessage) -> Result<ChatMessage, LlmError> {
    let unsupported = |what: &str| Err(LlmError::Protocol(format!("unsupported {what}")));
    Ok(match message {
        ChatCompletionRequestMessage::Developer(m) => ChatMessage::System {
            content: match &m.content {
                ChatCompletionRequestDeveloperMessageContent::Text(t) => t.clone(),
                ChatCompletionRequestDeveloperMessageContent::Array(parts) => parts
                    .iter()
                    .map(|p| match p {
                        ChatCompletionRequestDeveloperMessageContentPart::Text(t) => {
                            t.text.as_str()
                        }
                    })
                    .collect(),
            },
        },
        ChatCompletionRequestMessage::System(m) => ChatMessage::System {
            content: match &m.content {
                ChatCompletionRequestSystemMessageContent::Text(t) => t.clone(),
                ChatCompletionRequestSystemMessageContent::Array(parts) => parts
                    .iter()
                    .map(|p| match p {
                        ChatCompletionRequestSystemMessageContentPart::Text(t) => t.text.as_str(),
                    })
                    .collect(),
            },
        },
        ChatCompletionRequestMessage::User(m) => ChatMessage::User {
            content: match &m.content {
                ChatCompletionRequestUserMessageContent::Text(t) => t.clone(),
                ChatCompletionRequestUserMessageContent::Array(parts) => {
                    let mut text = String::new();
                    for part in parts {
                        match part {
                            ChatCompletionRequestUserMessageContentPart::Text(t) => {
                                text.push_str(&t.text)
                            }
                            _ => return unsupported("non-text user content"),
                        }
                    }
                    text
                }
            },
        },
        ChatCompletionRequestMessage::Assistant(m) => {
            let content = match &m.content {
                None => None,
                Some(ChatCompletionRequestAssistantMessageContent::Text(t)) => Some(t.clone()),
                Some(ChatCompletionRequestAssistantMessageContent::Array(parts)) => Some(
                    parts
                        .iter()
                        .map(|p| match p {
                            ChatCompletionRequestAssistantMessageContentPart::Text(t) => {
                                t.text.as_str()
                            }
                            ChatCompletionRequestAssistantMessageContentPart::Refusal(r) => {
                                r.refusal.as_str()
                            }
                        })
                        .collect(),
                ),
            };
            let mut tool_calls = Vec::new();
            for call in m.tool_calls.iter().flatten() {
                match call {
                    ChatCompletionMessageToolCalls::Function(f) => tool_calls.push(ToolCall {
                        id: f.id.clone(),
                        name: f.function.name.clone(),
                        arguments: f.function.arguments.clone(),
                    }),
                    ChatCompletionMessageToolCalls::Custom(_) => {
                        return unsupported("custom tool call");
                    }
                }
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            }
        }
        ChatCompletionRequestMessage::Tool(m) => ChatMessage::Tool {
            tool_call_id: m.tool_call_id.clone(),
            content: match &m.content {
                ChatCompletionRequestToolMessageContent::Text(t) => t.clone(),
                ChatCompletionRequestToolMessageContent::Array(parts) => parts
                    .iter()
                    .map(|p| match p {
                        ChatCompletionRequestToolMessageContentPart::Text(t) => t.text.as_str(),
                    })
                    .collect(),
            },
        },
        ChatCompletionRequestMessage::Function(_) => return unsupported("function message"),
    })
}

/// Our tool as a strict function tool.
fn to_openai_tool(tool: &ToolSpec) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: tool.name.clone(),
            description: Some(tool.description.clone()),
            parameters: Some(tool.parameters.clone()),
            strict: Some(true),
        },
    })
}

/// A non-2xx answer, with what `async-openai` would drop: the retry hints and 5xx JSON.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}: {message}")]
struct HttpFailure {
    status: u16,
    /// `error.code`.
    code: Option<String>,
    /// `error.type`.
    kind: Option<String>,
    message: String,
    /// `retry-after-ms` or `retry-after`.
    retry_after: Option<Duration>,
    /// `x-should-retry`.
    should_retry: Option<bool>,
}

impl HttpFailure {
    /// 408, 409, 429 except exhausted quota, 5xx — unless the server says otherwise.
    fn retryable(&self) -> bool {
        if let Some(should) = self.should_retry {
            return should;
        }
        let quota = |v: &Option<String>| v.as_deref() == Some("insufficient_quota");
        match self.status {
            408 | 409 => true,
            429 => !quota(&self.code) && !quota(&self.kind),
            500..=599 => true,
            _ => false,
        }
    }

    fn into_llm_error(self) -> LlmError {
        let retryable = self.retryable();
        LlmError::Status {
            status: self.status,
            code: self.code.or(self.kind),
            message: self.message,
            retryable,
        }
    }
}

/// Reads a non-2xx response into an [`HttpFailure`].
async fn read_failure(response: reqwest::Response) -> HttpFailure {
    let status = response.status();
    let headers = response.headers();
    let retry_after = retry_after(headers, std::time::SystemTime::now());
    let should_retry = headers
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| match v.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
    let body = response.bytes().await.unwrap_or_default();
    let (code, kind, message) = match serde_json::from_slice::<WrappedError>(&body) {
        Ok(wrapped) => (
            wrapped.error.code,
            wrapped.error.r#type,
            wrapped.error.message,
        ),
        Err(_) => {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                truncate(text, MAX_ERROR_BODY)
            };
            (None, None, message)
        }
    };
    HttpFailure {
        status: status.as_u16(),
        code,
        kind,
        message,
        retry_after,
        should_retry,
    }
}

/// The server's retry hint: `retry-after-ms` (milliseconds), else `retry-after` (seconds or an
/// HTTP date). Values outside 0–60 s are ignored.
fn retry_after(
    headers: &reqwest::header::HeaderMap,
    now: std::time::SystemTime,
) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let hint = if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        Some(ms / 1000.0)
    } else if let Some(value) = header("retry-after") {
        value.parse::<f64>().ok().or_else(|| {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            let now = chrono::DateTime::<chrono::Utc>::from(now);
            Some((at.with_timezone(&chrono::Utc) - now).num_milliseconds() as f64 / 1000.0)
        })
    } else {
        None
    };
    hint.filter(|s| s.is_finite() && (0.0..=60.0).contains(s))
        .map(Duration::from_secs_f64)
}

/// The error and its sources, `: `-joined (reqwest hides the cause in the source chain).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The HTTP transport under `async-openai`: sends once (no retry layer) and turns non-2xx
/// answers into [`HttpFailure`]s.
#[derive(Clone)]
struct Transport {
    http: reqwest::Client,
}

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            if response.status().is_success() {
                Ok(response)
            } else {
                Err(OpenAIError::Boxed(Box::new(read_failure(response).await)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn config() -> OpenAiConfig {
        OpenAiConfig::default()
    }

    #[test]
    fn defaults_and_validation() {
        let c = config();
        assert_eq!(c.base_url, "https://api.openai.com/v1");
        assert_eq!(c.model, "gpt-4o-mini");
        assert!(c.validate().is_ok());
        let bad = |f: &dyn Fn(&mut OpenAiConfig)| {
            let mut c = config();
            f(&mut c);
            match c.validate() {
                Err(LlmError::Config(m)) => m,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            bad(&|c| c.temperature = 2.5),
            "llm.temperature must be within 0..=2"
        );
        assert!(bad(&|c| c.temperature = f32::NAN).starts_with("llm.temperature"));
        assert!(bad(&|c| c.base_url = "ftp://x".into()).starts_with("llm.base_url"));
        assert!(bad(&|c| c.base_url = "not a url".into()).starts_with("llm.base_url"));
        assert!(bad(&|c| c.model = " ".into()).starts_with("llm.model"));
        assert!(bad(&|c| c.max_completion_tokens = 0).starts_with("llm.max_completion_tokens"));
        assert!(bad(&|c| c.max_attempts = 0).starts_with("llm.max_attempts"));
        assert!(bad(&|c| c.first_token_timeout_ms = 5).starts_with("llm.first_token_timeout_ms"));
        assert!(bad(&|c| c.initial_backoff_ms = 5000).starts_with("llm.initial_backoff_ms"));
        assert!(bad(&|c| c.api_key = "sk x".into()).starts_with("llm.api_key"));
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let c: OpenAiConfig =
            serde_json::from_str(r#"{"api_key":"sk-secret","model":"m"}"#).unwrap();
        assert_eq!(c.model, "m");
        assert_eq!(c.max_completion_tokens, 200);
        assert!(serde_json::from_str::<OpenAiConfig>(r#"{"modle":"m"}"#).is_err());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("sk-secret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn trailing_slash_is_stripped() {
        let metrics = Metrics::new().unwrap();
        let chat = OpenAiChat::new(
            OpenAiConfig {
                base_url: "http://127.0.0.1:9/v1/".into(),
                ..config()
            },
            metrics,
        )
        .unwrap();
        assert_eq!(chat.config().base_url, "http://127.0.0.1:9/v1");
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let c = config();
        let ms: Vec<u128> = (1..=5).map(|n| c.backoff(n).as_millis()).collect();
        assert_eq!(ms, [150, 300, 600, 1000, 1000]);
        assert_eq!(c.backoff(200).as_millis(), 1000);
    }

    #[test]
    fn retry_after_headers() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        // 10 s after `now`.
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(10)));
        h.insert("retry-after", HeaderValue::from_static("3600"));
        assert_eq!(
            retry_after(&h, now),
            None,
            "too long to be useful in a call"
        );
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn which_statuses_retry() {
        let f = |status: u16, code: Option<&str>, should: Option<bool>| HttpFailure {
            status,
            code: code.map(String::from),
            kind: None,
            message: String::new(),
            retry_after: None,
            should_retry: should,
        };
        for s in [408, 409, 429, 500, 502, 503] {
            assert!(f(s, None, None).retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!f(s, None, None).retryable(), "{s}");
        }
        assert!(!f(429, Some("insufficient_quota"), None).retryable());
        assert!(f(429, Some("rate_limit_exceeded"), None).retryable());
        assert!(!f(500, None, Some(false)).retryable());
        assert!(f(400, None, Some(true)).retryable());
    }

    fn chunk(json: serde_json::Value) -> CreateChatCompletionStreamResponse {
        let mut base = serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        });
        for (k, v) in json.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn assembles_text_tools_and_finish() {
        let mut a = Assembler::default();
        a.absorb(chunk(
            serde_json::json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}),
        ));
        assert!(!a.started, "the role chunk is not output");
        a.absorb(chunk(
            serde_json::json!({"choices":[{"index":0,"delta":{"content":"One moment."}}]}),
        ));
        a.absorb(chunk(serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"b","arguments":""}}]}}]})));
        a.absorb(chunk(serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"a","arguments":"{\"x\""}}]}}]})));
        a.absorb(chunk(serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]})));
        a.absorb(chunk(serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}}]})));
        a.absorb(chunk(
            serde_json::json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
        ));
        a.absorb(chunk(serde_json::json!({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})));
        a.end();
        let out: Vec<_> = a.pending.drain(..).collect();
        assert_eq!(
            out,
            vec![
                Ok(LlmDelta::Text("One moment.".into())),
                Ok(LlmDelta::ToolCalls(vec![
                    ToolCall {
                        id: "call_a".into(),
                        name: "a".into(),
                        arguments: "{\"x\":1}".into()
                    },
                    ToolCall {
                        id: "call_b".into(),
                        name: "b".into(),
                        arguments: "{}".into()
                    },
                ])),
                Ok(LlmDelta::Finished {
                    reason: FinishReason::ToolCalls,
                    usage: Some(Usage {
                        prompt_tokens: 5,
                        completion_tokens: 7
                    }),
                }),
            ]
        );
    }

    #[test]
    fn cut_stream_and_nameless_calls_are_errors() {
        let mut a = Assembler::default();
        a.absorb(chunk(
            serde_json::json!({"choices":[{"index":0,"delta":{"content":"Hel"}}]}),
        ));
        a.end();
        assert!(matches!(
            a.pending.pop_back(),
            Some(Err(LlmError::Transport(_)))
        ));
        let mut a = Assembler::default();
        a.absorb(chunk(serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]})));
        a.absorb(chunk(
            serde_json::json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
        ));
        a.end();
        assert!(matches!(
            a.pending.pop_back(),
            Some(Err(LlmError::Protocol(_)))
        ));
    }

    #[test]
    fn messages_round_trip() {
        let history = vec![
            ChatMessage::System {
                content: "Be brief.".into(),
            },
            ChatMessage::User {
                content: "Transfer me".into(),
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "transfer_call".into(),
                    arguments: "{\"to\":\"+14155550123\"}".into(),
                }],
            },
            ChatMessage::Tool {
                tool_call_id: "call_1".into(),
                content: "{\"ok\":true}".into(),
            },
            ChatMessage::Assistant {
                content: Some("Transferring you now.".into()),
                tool_calls: vec![],
            },
        ];
        for message in &history {
            let wire = to_openai(message);
            assert_eq!(&from_openai(&wire).unwrap(), message);
        }
        let json = serde_json::to_value(to_openai(&history[2])).unwrap();
        assert_eq!(json["role"], "assistant");
        assert_eq!(json["tool_calls"][0]["type"], "function");
        assert_eq!(json["tool_calls"][0]["function"]["name"], "transfer_call");
        assert!(json.get("content").is_none());
        let empty = ChatMessage::Assistant {
            content: None,
            tool_calls: vec![],
        };
        let json = serde_json::to_value(to_openai(&empty)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"role": "assistant", "content": ""})
        );
        let json = serde_json::to_value(to_openai(&history[3])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"role":"tool","tool_call_id":"call_1","content":"{\"ok\":true}"})
        );
        // Developer messages and text parts are read too.
        let dev: ChatCompletionRequestMessage = serde_json::from_value(serde_json::json!(
            {"role":"developer","content":[{"type":"text","text":"A"},{"type":"text","text":"B"}]}
        ))
        .unwrap();
        assert_eq!(
            from_openai(&dev).unwrap(),
            ChatMessage::System {
                content: "AB".into()
            }
        );
    }

    #[test]
    fn mid_stream_error_object_is_reported() {
        let content = r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#;
        let e = serde_json::from_str::<CreateChatCompletionStreamResponse>(content).unwrap_err();
        let error = stream_error(OpenAIError::JSONDeserialize(e, content.to_string()));
        match error {
            LlmError::Transport(m) => {
                assert!(
                    m.contains("server_error") && m.contains("The server had an error"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let e = serde_json::from_str::<CreateChatCompletionStreamResponse>("{}").unwrap_err();
        assert!(matches!(
            stream_error(OpenAIError::JSONDeserialize(e, "{}".into())),
            LlmError::Protocol(_)
        ));
    }
}
