//! Arbitrary bytes (as lossy UTF-8) into the Destiny-Script parser: it never panics, every
//! diagnostic points inside the text, and a script that parses is printed in canonical form
//! that parses back to the same flow (with the same hash).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use voicegw::script::{parse, print, script_hash};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(&text) {
        Ok(parsed) => {
            let printed = print(&parsed.flow);
            let again = match parse(&printed) {
                Ok(again) => again,
                Err(d) => panic!("the canonical form does not parse:\n{d}\n---\n{printed}"),
            };
            assert_eq!(again.flow, parsed.flow, "printed:\n{printed}");
            assert_eq!(print(&again.flow), printed);
            assert_eq!(script_hash(&again.flow), script_hash(&parsed.flow));
            let _ = parsed.flow.static_texts();
            let _ = parsed.flow.check_variables(&HashMap::new());
        }
        Err(diagnostics) => {
            assert!(diagnostics.has_errors());
            let lines = text.strip_prefix('\u{feff}').unwrap_or(&text).split('\n').count();
            for d in diagnostics.all() {
                assert!(d.line >= 1 && d.line <= lines && d.column >= 1, "{d}");
            }
        }
    }
});
