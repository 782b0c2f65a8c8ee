//! Dialing clients against the fakes: Twilio Calls create / update and Exotel Connect Voice AI,
//! and the carrier fake itself.

mod fakes;

#[test]
fn placeholder() {}
