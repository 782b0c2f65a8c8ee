//! Local fakes of the providers' wire APIs: Deepgram live speech-to-text, Deepgram Aura
//! text-to-speech and an OpenAI-compatible chat model.
//!
//! Each fake is a real server on 127.0.0.1 that speaks the provider's protocol as
//! `specs/providers.md` describes it, **checks what it receives** (auth header, query
//! parameters, JSON shapes) as the real API would, and has configurable delays and injectable
//! faults (drop, 429, 500, stall). `voicegw loadtest --with-fakes` starts them in-process to
//! measure the gateway's own overhead; the integration tests use them as the providers.

pub mod deepgram_listen;
pub mod deepgram_speak;
pub mod openai_chat;
pub mod speech;
