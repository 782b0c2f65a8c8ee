//! voicegw: a real-time voice gateway for telephone calls.

pub mod audio;
pub mod carrier;
