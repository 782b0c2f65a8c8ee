//! Unit tests of the parser: one per construct and per error class.

use super::*;

/// Parses and returns the diagnostics as `line:col: message` lines (warnings marked).
fn errors(source: &str) -> Vec<String> {
    match parse(source) {
        Ok(parsed) => panic!("expected errors, got {:#?}", parsed.flow),
        Err(d) => d.to_string().lines().map(str::to_owned).collect(),
    }
}

fn ok(source: &str) -> Parsed {
    match parse(source) {
        Ok(parsed) => parsed,
        Err(d) => panic!("expected no errors, got:\n{d}"),
    }
}

#[test]
fn shipped_scripts_parse_with_no_errors_or_warnings() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "dsc") {
            let source = std::fs::read_to_string(&path).unwrap();
            let parsed = ok(&source);
            assert!(
                parsed.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                parsed.warnings
            );
            count += 1;
        }
    }
    assert!(count >= 1);
}
