//! The outbound dialer: the pieces that place calls on a tenant's behalf and decide what to do
//! once the far end answers, starting with answering-machine detection on the call audio.
pub mod amd;
