//! Arbitrary bytes (as lossy UTF-8) into a fresh Exotel core and into one past `start`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voicegw::carrier::Outbound;
use voicegw::carrier::exotel::ExotelCore;

const START: &str = r#"{"event":"start","sequence_number":"1","stream_sid":"MZ18ad3ab5a668481ce02b83e7395059f0","start":{"stream_sid":"MZ18ad3ab5a668481ce02b83e7395059f0","call_sid":"CA8a0bc5c1e3b0f4e2d3c4b5a697887766","account_sid":"AC25e16e9a716a4a1786a7c83f58e30482","from":"+919876543210","to":"+918047491899","custom_parameters":{"tenant":"acme"},"media_format":{"encoding":"audio/x-raw","sample_rate":"8000","bit_rate":"16"}}}"#;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fresh = ExotelCore::new();
    let _ = fresh.parse(&text);
    let _ = fresh.encode(Outbound::Mark("m"));

    let mut started = ExotelCore::new();
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
