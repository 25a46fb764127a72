//! Bytes as a docker-archive manifest.json. Accepted paths must stay inside the
//! archive and already be in normal form.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nemoclaw_build::source::spec::{archive_path, parse_docker_manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(images) = parse_docker_manifest(data) {
        for i in &images {
            for p in i.layers.iter().chain([&i.config]) {
                assert_eq!(archive_path(p).ok().as_ref(), Some(p));
                assert!(!p.starts_with('/') && !p.split('/').any(|c| c == ".."));
            }
        }
    }
});
