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
//! - [`interpreter`]: the `script:<name>` agent that runs a flow on a call, with
//!   [`matcher`] (keys and phrases against transitions), [`vars`] (the call's variables),
//!   [`prompt_audio`] (the call's prompt texts and their synthesis),
//!   [`timers`] (no-input and digit timeouts) and [`history`] (the conversation for the
//!   language model).

pub mod check;
pub mod diag;
pub mod flow;
pub mod history;
pub mod interpreter;
mod lexer;
pub mod matcher;
pub mod parse;
pub mod print;
pub mod prompt_audio;
pub mod prompts;
pub mod render;
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
