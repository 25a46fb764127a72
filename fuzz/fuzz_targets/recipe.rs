//! Bytes as a recipe file (TOML, then validated).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nemoclaw_build::recipe::Recipe;

fuzz_target!(|data: &[u8]| {
    let _ = Recipe::parse(data, "fuzz.toml", std::path::Path::new("/nonexistent"));
});
