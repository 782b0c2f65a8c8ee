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

pub mod check;
pub mod diag;
pub mod flow;
mod lexer;
pub mod parse;
pub mod print;
pub mod prompts;
pub mod render;
mod template;
mod transition;
mod validate;

pub use diag::{Diagnostic, Diagnostics, NodeSource, Position, Severity, SourceMap};
pub use flow::{Flow, Key, Node, Settings, Target, Template, TemplatePart, Transition, Trigger};
pub use parse::{Parsed, parse};
pub use print::{print, script_hash};
pub use render::{MissingUse, MissingVariable, MissingVariables, StaticText, TextKind};
