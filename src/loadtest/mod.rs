//! `voicegw loadtest`: the carrier side of many calls at once.
//!
//! The harness opens one carrier media stream per simulated call (Twilio or Exotel, exactly
//! as the carrier sends it: `connected`, `start`, then `media` on a steady 20 ms clock), plays
//! the bot's audio back in real time, echoes marks when their audio has played and honours
//! `clear`. Each call follows a [`scenario::Scenario`] (fixture utterances, pauses, DTMF,
//! barge-in, hang-up) or hands the caller's side to an LLM [`persona`]. Everything a call
//! sees is kept on its [`timeline::Timeline`]; [`measure`] turns timelines into latencies and
//! [`report`] into a summary table, a JSON report and an HTML report with plots.
//!
//! - [`clip`]: a caller utterance (8 kHz PCM) and where its voiced audio begins and ends.
//! - [`scenario`]: the scenario file: steps, custom parameters, personas.
//! - [`carrier`]: sans-IO carrier emulation: the messages a carrier sends, and the check of
//!   every message the gateway sends back.
//! - [`caller`]: one simulated call on a socket, driven by its scenario.
//! - [`timeline`]: what happened on one call, in order.
//! - [`measure`]: per-turn and per-call latencies from a timeline; the run's summary.
//! - [`results`]: the figures of a run, as the reports show them.
//! - [`persona`]: customer and agent personas, their pairing, the persona's ears and voice.
//! - [`sysmon`]: CPU and memory samples of the gateway's process.
//! - [`progress`]: the live progress bar.
//! - [`report`]: summary table, JSON report, HTML report.
//! - [`with_fakes`]: provider fakes in this process and a local gateway pointed at them.
//! - [`run`]: one load test from start to report.

pub mod caller;
pub mod carrier;
pub mod clip;
pub mod measure;
pub mod persona;
pub mod progress;
pub mod report;
pub mod results;
pub mod run;
pub mod scenario;
pub mod sysmon;
pub mod timeline;
pub mod with_fakes;
