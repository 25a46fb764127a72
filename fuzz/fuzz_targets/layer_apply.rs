//! Bytes as an uncompressed tar layer, applied twice (a lower and an upper layer,
//! so whiteouts and replacements meet entries of an earlier layer).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nemoclaw_build::rootfs::{IndexOptions, Rootfs};

fuzz_target!(|data: &[u8]| {
    let opts = IndexOptions {
        hash_contents: true,
        ..IndexOptions::default()
    };
    let mut fs = Rootfs::new();
    if fs.apply_layer(0, "layer 1", data, &opts).is_ok() {
        let _ = fs.apply_layer(1, "layer 2", data, &opts);
    }
});
