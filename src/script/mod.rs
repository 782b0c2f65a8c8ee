//! Destiny-Script: scripted call flows (see `docs/script.md`).
//!
//! - [`flow`]: the parsed form, plain serde data.

pub mod flow;

pub use flow::{Flow, Key, Node, Settings, Target, Template, TemplatePart, Transition, Trigger};
