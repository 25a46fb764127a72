//! Bytes as each OCI document: oci-layout, index, manifest (OCI and Docker), config.
//! Whatever is accepted must carry only digests that are safe as blob file names.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nemoclaw_build::digest::digest_hex;
use nemoclaw_build::source::spec;
use nemoclaw_build::source::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST};

fuzz_target!(|data: &[u8]| {
    let _ = spec::parse_layout_file(data);
    for mt in [MT_OCI_INDEX, MT_DOCKER_LIST] {
        if let Ok(i) = spec::parse_index(data, "index", mt) {
            i.manifests.iter().for_each(|d| assert!(digest_hex(&d.digest).is_ok()));
        }
    }
    for mt in [MT_OCI_MANIFEST, MT_DOCKER_MANIFEST] {
        if let Ok(m) = spec::parse_manifest(data, "manifest", mt) {
            assert!(m.layers.iter().chain([&m.config]).all(|d| digest_hex(&d.digest).is_ok()));
        }
    }
    if let Ok(c) = spec::parse_config(data, "config") {
        assert!(c.diff_ids.iter().all(|d| digest_hex(d).is_ok()));
    }
});
