//! Destiny-Script: scripted call flows (see `docs/script.md`).
//!
//! - [`flow`]: the parsed form, plain serde data.
//! - [`parse()`]: source text to a [`Flow`], with positioned [`Diagnostics`] (modules `lexer`,
//!   `template`, `transition`, `validate` do the parts).
//! - [`print()`]: the canonical form of a flow, and its [`script_hash`].
//! - [`render`]: templates filled with a call's variables; the variables a flow needs and
//!   the texts that need none.
//! - [`check`]: what `voicegw script check` prints.
//! - [`prompts`]: where prompt audio comes from; a script loaded for calls.
//! - [`spoken`]: the texts a flow speaks, and which of them have no variables.
//! - [`synth`]: one prompt synthesized whole.
//! - [`cache`]: the prompt cache on disk and `script prime`.
//! - [`source`]: one script's prompt audio in memory, for its calls.
//! - [`prepare`]: one call's prompts rendered and synthesized before it is dialed.
//! - [`fixture_voice`]: recorded prompts played as a synthesizer (no provider key needed).
//! - [`loader`]: the scripts folder loaded for calls, with each script's prompt audio.
//! - [`interpreter`]: the `script:<name>` agent that runs a flow on a call, with
//!   [`matcher`] (keys and phrases against transitions), [`vars`] (the call's variables),
//!   [`prompt_audio`] (the call's prompt texts and their synthesis),
//!   [`timers`] (no-input and digit timeouts) and [`history`] (the conversation for the
//!   language model).

pub mod cache;
pub mod check;
pub mod diag;
pub mod fixture_voice;
pub mod flow;
pub mod history;
pub mod interpreter;
mod lexer;
pub mod loader;
pub mod matcher;
pub mod parse;
pub mod prepare;
pub mod print;
pub mod prompt_audio;
pub mod prompts;
pub mod render;
pub mod source;
pub mod spoken;
pub mod synth;
mod template;
pub mod timers;
mod transition;
mod validate;
pub mod vars;

pub use diag::{Diagnostic, Diagnostics, NodeSource, Position, Severity, SourceMap};
pub use flow::{Flow, Key, Node, Settings, Target, Template, TemplatePart, Transition, Trigger};
pub use interpreter::{ScriptAgent, script_agent_factory};
pub use parse::{Parsed, parse};
pub use print::{print, script_hash};
pub use render::{MissingUse, MissingVariable, MissingVariables, StaticText, TextKind};
pub use template::parse_template;
