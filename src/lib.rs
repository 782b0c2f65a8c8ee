//! voicegw: a real-time voice gateway for telephone calls.
//!
//! Carriers (Twilio Media Streams, Exotel Voicebot) open one WebSocket per call; the gateway
//! decodes the audio once, runs VAD, turn-taking and barge-in, drives the call's
//! [`call::Agent`] and streams its answer back, paced by the carrier's echoed marks.
//!
//! - [`audio`]: pure functions on samples (G.711, linear16, resampling, VAD, DTMF, echo guard).
//! - [`carrier`]: sans-IO protocol cores for the carriers' media-stream WebSockets.
//! - [`call`]: the per-call actor (reader, session, writer), egress ledger, turn-taking, registry.
//! - [`stt`], [`llm`], [`tts`]: the providers' traits and real clients (Deepgram, OpenAI,
//!   ElevenLabs), with the tools the gateway runs for the model.
//! - [`pipeline`]: builds the providers and the `llm` agent from the config, checks keys.
//! - [`script`]: Destiny-Script, the scripted-call DSL: parser, interpreter, prompt cache.
//! - [`server`]: the HTTP/WebSocket front door, health, metrics and graceful shutdown.
//! - [`config`]: the one typed configuration, validated at start-up.
//! - [`proto`]: the protobuf schema of the CallEvent and the control plane's resources.
//! - [`metrics`]: the Prometheus families.
//! - [`store`]: the durable store (SQLite or PostgreSQL) and the batching CallEvent writer.
//! - [`control`]: the control plane's REST API (tenants, keys, numbers, scripts, calls, events)
//!   and the carriers' webhooks.
//! - [`dialer`]: the outbound dialer's calling windows, retry policy, calls-per-second limit and
//!   answering-machine detection.
//! - [`fakes`]: local fakes of the providers' wire APIs (Deepgram listen and speak, OpenAI chat)
//!   for the load test's `--with-fakes` runs and the integration tests.
//! - [`loadtest`]: `voicegw loadtest`, the carrier side of many calls: scenarios, personas,
//!   latency measures and reports.

pub mod audio;
pub mod call;
pub mod carrier;
pub mod config;
pub mod control;
pub mod dialer;
pub mod fakes;
pub mod llm;
pub mod loadtest;
pub mod metrics;
pub mod pipeline;
pub mod proto;
pub mod script;
pub mod server;
pub mod store;
pub mod stt;
pub mod tts;
