//! Arbitrary bytes (as lossy UTF-8) into a fresh Twilio core and into one past `start`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voicegw::carrier::Outbound;
use voicegw::carrier::twilio::TwilioCore;

const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC25e16e9a716a4a1786a7c83f58e30482","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","callSid":"CA8a0bc5c1e3b0f4e2d3c4b5a697887766","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"tenant":"acme"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fresh = TwilioCore::new();
    let _ = fresh.parse(&text);
    let _ = fresh.encode(Outbound::Mark("m"));

    let mut started = TwilioCore::new();
    assert!(started.parse(START).is_ok());
    // Every line is a frame, so the fuzzer can build sequences.
    for line in text.split('\n') {
        let before = format!("{started:?}");
        if started.parse(line).is_err() {
            assert_eq!(format!("{started:?}"), before, "rejected frame changed the state");
        }
    }
    let _ = started.parse(&text);
    let _ = started.encode(Outbound::Mark("m"));
    let _ = started.encode(Outbound::Media(data));
});
