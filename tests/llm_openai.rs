//! The OpenAI chat client against the local Chat Completions fake: streaming text, tool calls
//! and their results, retries within the deadline, timeouts, broken streams, and the fake's own
//! request checks.

mod fakes;

use std::time::{Duration, Instant};

use fakes::openai_chat::{ChatFake, ChatFakeConfig, Fault, Reply, Rule};
use futures::StreamExt;
use serde_json::{Value, json};
use voicegw::llm::hours::BusinessHoursConfig;
use voicegw::llm::knowledge::KnowledgeEntry;
use voicegw::llm::openai::{OpenAiChat, OpenAiConfig};
use voicegw::llm::tools::{ToolEffect, Toolbox, ToolsConfig};
use voicegw::llm::{
    ChatMessage, ChatModel, ChatRequest, FinishReason, LlmDelta, LlmError, LlmStream, ToolCall,
    ToolSpec,
};
use voicegw::metrics::Metrics;

fn client_with(
    fake: &ChatFake,
    metrics: &Metrics,
    tweak: impl FnOnce(&mut OpenAiConfig),
) -> OpenAiChat {
    let mut config = OpenAiConfig {
        base_url: format!("{}/", fake.base_url()),
        api_key: fake.api_key().to_string(),
        initial_backoff_ms: 20,
        max_backoff_ms: 100,
        ..OpenAiConfig::default()
    };
    tweak(&mut config);
    OpenAiChat::new(config, metrics.clone()).expect("client")
}

fn client(fake: &ChatFake) -> OpenAiChat {
    client_with(fake, &Metrics::new().unwrap(), |_| {})
}

fn conversation(user: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::System {
            content: "You are a phone receptionist. Answer in one short sentence.".into(),
        },
        ChatMessage::User {
            content: user.into(),
        },
    ]
}

fn request(messages: Vec<ChatMessage>, tools: Vec<ToolSpec>, budget_ms: u64) -> ChatRequest {
    ChatRequest {
        messages,
        tools,
        deadline: Instant::now() + Duration::from_millis(budget_ms),
    }
}

async fn collect(stream: LlmStream) -> Vec<Result<LlmDelta, LlmError>> {
    let items: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.deltas.collect())
        .await
        .expect("the stream ends");
    items
}

fn text(items: &[Result<LlmDelta, LlmError>]) -> String {
    items
        .iter()
        .filter_map(|d| match d {
            Ok(LlmDelta::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn provider_count(metrics: &Metrics, outcome: &str) -> u64 {
    let needle = format!("outcome=\"{outcome}\",provider=\"openai_chat\"");
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with("voicegw_provider_calls_total") && l.contains(&needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn toolbox() -> Toolbox {
    Toolbox::new(ToolsConfig {
        business_hours: Some(BusinessHoursConfig {
            timezone: "Europe/London".into(),
            open: vec!["mon-fri 09:00-17:00".into()],
            closed_dates: vec![],
        }),
        knowledge: vec![KnowledgeEntry {
            title: "Parking".into(),
            text: "Free parking behind the building.".into(),
            keywords: vec![],
        }],
        transfer_numbers: vec!["+44 20 7946 0958".into()],
        ..ToolsConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn streams_text_in_pieces() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    let metrics = Metrics::new().unwrap();
    let chat = client_with(&fake, &metrics, |_| {});
    let stream = chat
        .stream(request(conversation("Hello there"), vec![], 5_000))
        .await
        .expect("started");
    assert!(stream.retries.is_empty());
    let items = collect(stream).await;
    let texts = items
        .iter()
        .filter(|d| matches!(d, Ok(LlmDelta::Text(_))))
        .count();
    assert!(texts >= 4, "streamed in small pieces: {items:?}");
    assert_eq!(text(&items), "You said: Hello there.");
    match items.last() {
        Some(Ok(LlmDelta::Finished {
            reason: FinishReason::Stop,
            usage: Some(usage),
        })) => {
            assert!(usage.prompt_tokens > 0);
            assert_eq!(usage.completion_tokens as usize, texts);
        }
        other => panic!("{other:?}"),
    }
    // What went over the wire.
    let body = &fake.requests()[0];
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["max_completion_tokens"], 200);
    assert!((body["temperature"].as_f64().unwrap() - 0.6).abs() < 1e-6);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "Hello there"})
    );
    for absent in ["tools", "tool_choice", "parallel_tool_calls"] {
        assert!(body.get(absent).is_none(), "{absent} without tools");
    }
    assert_eq!(provider_count(&metrics, "ok"), 1);
}

#[tokio::test]
async fn tool_call_fragments_are_assembled_and_the_result_goes_back() {
    let fake = ChatFake::start(ChatFakeConfig {
        rules: vec![Rule {
            user_contains: "TRANSFER".into(),
            reply: Reply::Tool {
                name: "transfer_call".into(),
                arguments: json!({"to": "+442079460958"}),
                then: "Transferring you now: {result}".into(),
            },
        }],
        ..ChatFakeConfig::default()
    })
    .await
    .expect("start the fake");
    let chat = client(&fake);
    let tools = toolbox();
    let specs = tools.specs();
    assert_eq!(specs.len(), 5);
    let mut history = conversation("Please transfer me to a person");
    let items = collect(
        chat.stream(request(history.clone(), specs.clone(), 5_000))
            .await
            .expect("started"),
    )
    .await;
    let calls = match &items[..] {
        [
            Ok(LlmDelta::ToolCalls(calls)),
            Ok(LlmDelta::Finished { reason, usage }),
        ] => {
            assert_eq!(*reason, FinishReason::ToolCalls);
            assert!(usage.is_some());
            calls.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "transfer_call");
    assert!(calls[0].id.starts_with("call_"));
    let args: Value = serde_json::from_str(&calls[0].arguments).unwrap();
    assert_eq!(args, json!({"to": "+442079460958"}));

    let body = &fake.requests()[0];
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["parallel_tool_calls"], false);
    let wire_tools = body["tools"].as_array().unwrap();
    assert_eq!(wire_tools.len(), 5);
    for t in wire_tools {
        assert_eq!(t["type"], "function");
        assert_eq!(t["function"]["strict"], true);
    }

    // Run the tool and send its result back.
    let outcome = tools.run(&calls[0], chrono::Utc::now());
    assert_eq!(
        outcome.effect,
        ToolEffect::Transfer {
            to: "+442079460958".into()
        }
    );
    history.push(ChatMessage::Assistant {
        content: None,
        tool_calls: calls.clone(),
    });
    history.push(ChatMessage::Tool {
        tool_call_id: calls[0].id.clone(),
        content: outcome.result.to_string(),
    });
    let items = collect(
        chat.stream(request(history, specs, 5_000))
            .await
            .expect("started"),
    )
    .await;
    let answer = text(&items);
    assert!(answer.starts_with("Transferring you now: "), "{answer}");
    assert!(
        answer.contains("\"transferring_to\":\"+442079460958\""),
        "{answer}"
    );
    let body = &fake.requests()[1];
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["tool_calls"][0]["id"], calls[0].id.as_str());
    assert_eq!(messages[2]["tool_calls"][0]["type"], "function");
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], calls[0].id.as_str());
}

#[tokio::test]
async fn parallel_tool_calls_keep_their_order() {
    let fake = ChatFake::start(ChatFakeConfig {
        rules: vec![Rule {
            user_contains: "hours".into(),
            reply: Reply::Tools {
                calls: vec![
                    ("business_hours".into(), json!({})),
                    (
                        "lookup_knowledge".into(),
                        json!({"query": "parking and opening hours"}),
                    ),
                ],
                then: "Done.".into(),
            },
        }],
        ..ChatFakeConfig::default()
    })
    .await
    .expect("start the fake");
    let chat = client(&fake);
    let items = collect(
        chat.stream(request(
            conversation("What are your hours?"),
            toolbox().specs(),
            5_000,
        ))
        .await
        .unwrap(),
    )
    .await;
    let Some(Ok(LlmDelta::ToolCalls(calls))) = items.first() else {
        panic!("{items:?}");
    };
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["business_hours", "lookup_knowledge"]);
    assert_ne!(calls[0].id, calls[1].id);
    assert_eq!(calls[0].arguments, "{}");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].arguments).unwrap(),
        json!({"query": "parking and opening hours"})
    );
    // Both results answer the calls; the fake accepts the history only if they match.
    let mut history = conversation("What are your hours?");
    history.push(ChatMessage::Assistant {
        content: None,
        tool_calls: calls.clone(),
    });
    for call in calls {
        history.push(ChatMessage::Tool {
            tool_call_id: call.id.clone(),
            content: "{\"ok\":true}".into(),
        });
    }
    let items = collect(
        chat.stream(request(history, toolbox().specs(), 5_000))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text(&items), "Done.");
}

#[tokio::test]
async fn history_with_an_unanswered_tool_call_is_refused_without_retry() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    let chat = client(&fake);
    let mut history = conversation("hi");
    history.push(ChatMessage::Assistant {
        content: None,
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "end_call".into(),
            arguments: "{}".into(),
        }],
    });
    history.push(ChatMessage::User {
        content: "hello?".into(),
    });
    let failure = chat
        .stream(request(history, toolbox().specs(), 5_000))
        .await
        .expect_err("refused");
    match &failure.error {
        LlmError::Status {
            status: 400,
            retryable: false,
            message,
            ..
        } => assert!(message.contains("call_1"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(failure.retries.is_empty());
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn rate_limit_with_retry_after_then_success() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    fake.push_fault(Fault::Status {
        status: 429,
        retry_after_secs: Some(1),
    });
    let metrics = Metrics::new().unwrap();
    let chat = client_with(&fake, &metrics, |_| {});
    let started = Instant::now();
    let stream = chat
        .stream(request(conversation("hi"), vec![], 5_000))
        .await
        .expect("second attempt succeeds");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for retry-after"
    );
    match &stream.retries[..] {
        [
            LlmError::Status {
                status: 429,
                code: Some(code),
                retryable: true,
                ..
            },
        ] => assert_eq!(code, "rate_limit_exceeded"),
        other => panic!("{other:?}"),
    }
    assert_eq!(text(&collect(stream).await), "You said: hi.");
    assert_eq!(fake.request_count(), 2);
    assert_eq!(provider_count(&metrics, "retry"), 1);
    assert_eq!(provider_count(&metrics, "ok"), 1);
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_fails_at_once() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    fake.push_fault(Fault::Status {
        status: 429,
        retry_after_secs: Some(5),
    });
    let chat = client(&fake);
    let started = Instant::now();
    let failure = chat
        .stream(request(conversation("hi"), vec![], 1_000))
        .await
        .expect_err("no time to wait 5 s");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        failure.error,
        LlmError::Status { status: 429, .. }
    ));
    assert!(failure.retries.is_empty());
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn server_errors_until_the_deadline() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    fake.set_down(true);
    let metrics = Metrics::new().unwrap();
    let chat = client_with(&fake, &metrics, |c| {
        c.max_attempts = 10;
        c.initial_backoff_ms = 50;
        c.max_backoff_ms = 200;
    });
    let started = Instant::now();
    let failure = chat
        .stream(request(conversation("hi"), vec![], 700))
        .await
        .expect_err("down");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(
            failure.error,
            LlmError::Status {
                status: 503,
                retryable: true,
                ..
            }
        ),
        "{:?}",
        failure.error
    );
    assert!(failure.retries.len() >= 2, "{failure:?}");
    assert!(
        failure.retries.len() < 9,
        "stopped by the deadline: {failure:?}"
    );
    assert_eq!(fake.request_count(), failure.retries.len() + 1);
    assert_eq!(provider_count(&metrics, "error"), 1);
    assert_eq!(
        provider_count(&metrics, "retry") as usize,
        failure.retries.len()
    );

    // Back up: the next completion works.
    fake.set_down(false);
    let stream = chat
        .stream(request(conversation("hi"), vec![], 2_000))
        .await
        .expect("up again");
    assert!(stream.retries.is_empty());
}

#[tokio::test]
async fn attempts_are_capped() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    for _ in 0..5 {
        fake.push_fault(Fault::Status {
            status: 500,
            retry_after_secs: None,
        });
    }
    let chat = client_with(&fake, &Metrics::new().unwrap(), |c| c.max_attempts = 3);
    let failure = chat
        .stream(request(conversation("hi"), vec![], 10_000))
        .await
        .expect_err("500s");
    assert_eq!(failure.retries.len(), 2);
    assert!(matches!(
        failure.error,
        LlmError::Status { status: 500, .. }
    ));
    match &failure.error {
        LlmError::Status { message, .. } => assert!(message.contains("The server had an error")),
        _ => unreachable!(),
    }
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn bad_key_is_not_retried() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    let chat = client_with(&fake, &Metrics::new().unwrap(), |c| {
        c.api_key = "sk-wrong-key".into()
    });
    let failure = chat
        .stream(request(conversation("hi"), vec![], 5_000))
        .await
        .expect_err("401");
    match &failure.error {
        LlmError::Status {
            status: 401,
            code: Some(code),
            retryable: false,
            message,
        } => {
            assert_eq!(code, "invalid_api_key");
            assert!(message.contains("Incorrect API key"));
        }
        other => panic!("{other:?}"),
    }
    assert!(failure.retries.is_empty());
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn exhausted_quota_is_not_retried() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    fake.push_fault(Fault::Quota);
    let chat = client(&fake);
    let failure = chat
        .stream(request(conversation("hi"), vec![], 5_000))
        .await
        .expect_err("quota");
    assert!(matches!(
        failure.error,
        LlmError::Status {
            status: 429,
            retryable: false,
            ..
        }
    ));
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn check_credentials() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    client(&fake).check_credentials().await.expect("good key");
    let wrong = client_with(&fake, &Metrics::new().unwrap(), |c| {
        c.api_key = "sk-nope".into()
    });
    match wrong.check_credentials().await {
        Err(LlmError::Status {
            status: 401,
            message,
            ..
        }) => assert!(message.contains("Incorrect API key"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Nothing listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let unreachable = OpenAiChat::new(
        OpenAiConfig {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            api_key: "sk-x".into(),
            ..OpenAiConfig::default()
        },
        Metrics::new().unwrap(),
    )
    .unwrap();
    assert!(matches!(
        unreachable.check_credentials().await,
        Err(LlmError::Transport(_))
    ));
    // And a completion against it fails with a connect error after retries.
    let failure = unreachable
        .stream(request(conversation("hi"), vec![], 5_000))
        .await
        .expect_err("unreachable");
    assert!(
        matches!(failure.error, LlmError::Transport(_)),
        "{failure:?}"
    );
    assert_eq!(failure.retries.len(), 2, "connect errors are retried");
}

#[tokio::test]
async fn stall_hits_the_first_token_timeout_and_is_retried() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    fake.push_fault(Fault::Stall);
    let chat = client_with(&fake, &Metrics::new().unwrap(), |c| {
        c.first_token_timeout_ms = 300
    });
    let stream = chat
        .stream(request(conversation("hi"), vec![], 5_000))
        .await
        .expect("the retry works");
    assert!(
        matches!(&stream.retries[..], [LlmError::Timeout(_)]),
        "{:?}",
        stream.retries
    );
    assert_eq!(text(&collect(stream).await), "You said: hi.");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn slow_first_token_fails_when_the_deadline_is_near() {
    let fake = ChatFake::start(ChatFakeConfig {
        first_token_delay_ms: 2_000,
        ..ChatFakeConfig::default()
    })
    .await
    .expect("start the fake");
    let chat = client_with(&fake, &Metrics::new().unwrap(), |c| {
        c.first_token_timeout_ms = 300
    });
    let started = Instant::now();
    let failure = chat
        .stream(request(conversation("hi"), vec![], 250))
        .await
        .expect_err("too slow");
    assert!(matches!(failure.error, LlmError::Timeout(_)), "{failure:?}");
    assert!(
        failure.retries.is_empty(),
        "no attempt can start before the deadline"
    );
    assert_eq!(fake.request_count(), 1);
    // The fake's first token comes after 2 s: failing sooner shows the deadline was kept.
    assert!(started.elapsed() < Duration::from_millis(1_900));
}

#[tokio::test]
async fn dropped_stream_ends_with_an_error() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    fake.push_fault(Fault::DropAfter { chunks: 3 });
    let chat = client(&fake);
    let stream = chat
        .stream(request(conversation("hi"), vec![], 5_000))
        .await
        .expect("started before the drop");
    let items = collect(stream).await;
    assert_eq!(text(&items), "You said");
    assert!(
        matches!(items.last(), Some(Err(LlmError::Transport(_)))),
        "{items:?}"
    );
    assert!(
        !items
            .iter()
            .any(|d| matches!(d, Ok(LlmDelta::Finished { .. })))
    );
}

#[tokio::test]
async fn mid_stream_error_object_ends_the_stream() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    fake.push_fault(Fault::MidStreamError);
    let chat = client(&fake);
    let items = collect(
        chat.stream(request(conversation("hi"), vec![], 5_000))
            .await
            .expect("started"),
    )
    .await;
    assert_eq!(text(&items), "You said");
    match items.last() {
        Some(Err(LlmError::Transport(m))) => {
            assert!(
                m.contains("server_error") && m.contains("The server had an error"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// Raw posts to the fake: it refuses what the real API refuses.
#[tokio::test]
async fn fake_rejects_malformed_requests() {
    let fake = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", fake.base_url());
    let key = fake.api_key().to_string();
    let post = |body: String, auth: Option<String>| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let good = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let bearer = Some(format!("Bearer {key}"));

    async fn error_of(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.expect("JSON error body");
        let error = body["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(error.get(key).is_some(), "{key} in {body}");
        }
        (status, error)
    }

    // Auth.
    let (status, e) = error_of(post(good.to_string(), None).await.unwrap()).await;
    assert_eq!((status, e["code"].as_str()), (401, Some("invalid_api_key")));
    let (status, _) = error_of(
        post(good.to_string(), Some("Bearer sk-bad".into()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);

    // Shapes.
    let cases: Vec<(Value, Option<&str>)> = vec![
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}),
            Some("model"),
        ),
        (
            json!({"model": "m", "messages": [], "stream": true}),
            Some("messages"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            Some("stream"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false}),
            Some("stream"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": true}}),
            Some("stream_options"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "hi"}], "stream": true}),
            Some("messages[0].role"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}], "stream": true}),
            Some("messages[0].content"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user"}], "stream": true}),
            Some("messages[0].content"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi", "mood": "x"}], "stream": true}),
            Some("messages[0].mood"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant"}], "stream": true}),
            Some("messages[0].content"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_x", "content": "{}"}]}),
            Some("messages[1].role"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f"}}]}]}),
            Some("messages[0].tool_calls[0].function.arguments"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            Some("messages"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "bad name!", "description": "d", "parameters": {"type": "object"}}}]}),
            Some("tools[0].function.name"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d", "strict": true,
                "parameters": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}}}]}),
            Some("tools[0].function.parameters"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"}),
            Some("tool_choice"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}], "temperature": 3}),
            Some("temperature"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}),
            Some("max_completion_tokens"),
        ),
        (
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}], "colour": "blue"}),
            None,
        ),
    ];
    for (body, param) in &cases {
        let (status, e) = error_of(post(body.to_string(), bearer.clone()).await.unwrap()).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"].as_str(), *param, "{body}: {e}");
    }
    let (status, e) = error_of(post("{not json".into(), bearer.clone()).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("parse the JSON"));
    assert_eq!(fake.request_count(), cases.len() + 3);
    assert_eq!(fake.requests()[0]["model"], "gpt-4o-mini");

    // A good request streams SSE ending with [DONE].
    let response = post(good.to_string(), bearer).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.text().await.unwrap();
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.iter().all(|e| e.starts_with("data: ")), "{body}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let first: Value = serde_json::from_str(&events[0]["data: ".len()..]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]["data: ".len()..]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
}
