//! Destiny-Script: scripted call flows (see `docs/script.md`).
//!
//! - [`flow`]: the parsed form, plain serde data.
//! - [`prompts`]: where prompt audio comes from; a script loaded for calls.
//! - [`spoken`]: the texts a flow speaks, and which of them have no variables.
//! - [`synth`]: one prompt synthesized whole.
//! - [`cache`]: the prompt cache on disk and `script prime`.
//! - [`source`]: one script's prompt audio in memory, for its calls.
//! - [`fixture_voice`]: recorded prompts played as a synthesizer (no provider key needed).

pub mod cache;
pub mod fixture_voice;
pub mod flow;
pub mod prompts;
pub mod source;
pub mod spoken;
pub mod synth;

pub use flow::{Flow, Key, Node, Settings, Target, Template, TemplatePart, Transition, Trigger};
