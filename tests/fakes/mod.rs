//! Local fakes of the providers' wire APIs, for integration tests and benchmarks.
//!
//! Each fake is a real server on 127.0.0.1 that speaks the provider's protocol as
//! `../shared/specs/providers.md` (Twilio REST: `telephony.md` §2) describes it, **checks what it receives** (auth header,
//! query parameters, JSON shapes) as the real API would, and has configurable delays and
//! injectable faults (drop, 429, 500, stall).

#![allow(dead_code)]

pub mod deepgram_listen;
pub mod deepgram_speak;
pub mod elevenlabs;
pub mod openai_chat;
pub mod openai_speech;
pub mod speech;
pub mod twilio_rest;
