//! Bytes as a Depends-style relation field.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nemoclaw_build::dpkg::parse_relations;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_relations(s);
    }
});
