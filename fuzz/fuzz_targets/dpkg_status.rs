//! Bytes as /var/lib/dpkg/status, parsed and planned for a purge (which walks the
//! relation graph the way `apt-get purge --auto-remove` would).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nemoclaw_build::dpkg::{plan_purge, DbFiles, DpkgDb, PurgeRequest, STATUS_PATH};

fuzz_target!(|data: &[u8]| {
    let files: DbFiles = [(STATUS_PATH.to_string(), data.to_vec())].into();
    if DpkgDb::parse(&files).is_ok() {
        let req = PurgeRequest {
            purge: vec!["gcc".into(), "make".into(), "perl".into()],
            keep: vec!["bash".into()],
            autoremove: true,
            strict: false,
        };
        let _ = plan_purge(&files, &req);
    }
});
