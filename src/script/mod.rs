//! Destiny-Script: scripted call flows (see `docs/script.md`).
//!
//! - [`flow`]: the parsed form, plain serde data.
//! - [`prompts`]: where prompt audio comes from; a script loaded for calls.
//! - [`interpreter`]: the `script:<name>` agent that runs a flow on a call, with
//!   [`matcher`] (keys and phrases against transitions), [`vars`] (the call's variables and
//!   rendered templates), [`prompt_audio`] (the call's prompt texts and their synthesis),
//!   [`timers`] (no-input and digit timeouts) and [`history`] (the conversation for the
//!   language model).

pub mod flow;
pub mod history;
pub mod interpreter;
pub mod matcher;
pub mod prompt_audio;
pub mod prompts;
pub mod timers;
pub mod vars;

pub use flow::{Flow, Key, Node, Settings, Target, Template, TemplatePart, Transition, Trigger};
pub use interpreter::{ScriptAgent, script_agent_factory};
