//! Destiny-Script: scripted call flows (see `docs/script.md`).
//!
//! - [`flow`]: the parsed form, plain serde data.
//! - [`prompts`]: where prompt audio comes from; a script loaded for calls.

pub mod flow;
pub mod prompts;

pub use flow::{Flow, Key, Node, Settings, Target, Template, TemplatePart, Transition, Trigger};
