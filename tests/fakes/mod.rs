//! Local fakes of the providers' wire APIs, for integration tests and benchmarks.
//! Deepgram listen/speak and OpenAI chat live in the library (`voicegw::fakes`); the rest here.
//!
//! Each fake is a real server on 127.0.0.1 that speaks the provider's protocol as
//! `../shared/specs/providers.md` (Twilio REST: `telephony.md` §2) describes it, **checks what it receives** (auth header,
//! query parameters, JSON shapes) as the real API would, and has configurable delays and
//! injectable faults (drop, 429, 500, stall).

#![allow(dead_code)]

pub mod elevenlabs;
pub mod exotel_rest;
pub mod openai_speech;
pub mod twilio_carrier;
pub mod twilio_rest;

pub use voicegw::fakes::{deepgram_listen, deepgram_speak, openai_chat, speech};

/// Points a gateway config's recognizer and synthesizer (Deepgram) and its language model at
/// these fakes, with the keys they accept.
pub fn use_fakes(
    config: &mut voicegw::config::Config,
    listen: &deepgram_listen::FakeListen,
    speak: &deepgram_speak::FakeDeepgramSpeak,
    chat: &openai_chat::ChatFake,
) {
    config.stt.deepgram.api_key = "test-key".into();
    config.stt.deepgram.base_url = listen.base_url();
    config.tts.deepgram.api_key = "test-key".into();
    config.tts.deepgram.base_url = speak.base_url();
    config.llm.api_key = chat.api_key().to_owned();
    config.llm.base_url = chat.base_url();
}
