//! What one command moved over the network, per registry: the cost a CI runner pays,
//! reported in the build summary (`--json` `transfer`, and the summary line), so "fast"
//! can be judged in bytes moved and not only in seconds on loopback.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Counters for one registry (`HOST[:PORT]`).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryTransfer {
    pub registry: String,
    /// Every byte received: blobs (including failed attempts), manifests, indexes.
    pub downloaded_bytes: u64,
    /// Blobs downloaded completely and verified.
    pub downloaded_blobs: u64,
    /// Blobs the local cache already held (nothing downloaded).
    pub cached_blobs: u64,
    /// Every byte sent: blobs and manifests.
    pub uploaded_bytes: u64,
    pub uploaded_blobs: u64,
    /// Blobs the target registry already had (nothing uploaded).
    pub skipped_blobs: u64,
    /// Blobs mounted from another repository of the same registry (nothing uploaded).
    pub mounted_blobs: u64,
}

/// A shared, cheap-to-clone tally; every registry session of a command adds to it.
#[derive(Debug, Default, Clone)]
pub struct Transfers(Arc<Mutex<BTreeMap<String, RegistryTransfer>>>);

impl Transfers {
    pub fn add(&self, registry: &str, f: impl FnOnce(&mut RegistryTransfer)) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let t = m
            .entry(registry.to_string())
            .or_insert_with(|| RegistryTransfer {
                registry: registry.to_string(),
                ..Default::default()
            });
        f(t);
    }

    /// One row per registry spoken to, sorted by name.
    pub fn snapshot(&self) -> Vec<RegistryTransfer> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.values().cloned().collect()
    }
}

/// `12.3 MiB down, 0.1 MiB up (2 skipped, 1 mounted)` over all registries, for the
/// summary line; `None` when no registry was involved.
pub fn describe(rows: &[RegistryTransfer]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let sum = |f: fn(&RegistryTransfer) -> u64| rows.iter().map(f).sum::<u64>();
    let mib = |n: u64| n as f64 / 1048576.0;
    Some(format!(
        "registry {:.1} MiB down, {:.1} MiB up ({} blob(s) cached, {} skipped, {} mounted)",
        mib(sum(|r| r.downloaded_bytes)),
        mib(sum(|r| r.uploaded_bytes)),
        sum(|r| r.cached_blobs),
        sum(|r| r.skipped_blobs),
        sum(|r| r.mounted_blobs),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_per_registry_across_clones() {
        let t = Transfers::default();
        let u = t.clone();
        t.add("b:5000", |r| r.downloaded_bytes += 10);
        u.add("a:5000", |r| r.uploaded_blobs += 1);
        u.add("b:5000", |r| {
            r.downloaded_bytes += 5;
            r.skipped_blobs += 2
        });
        let rows = t.snapshot();
        assert_eq!(
            rows.iter().map(|r| r.registry.as_str()).collect::<Vec<_>>(),
            ["a:5000", "b:5000"]
        );
        assert_eq!((rows[1].downloaded_bytes, rows[1].skipped_blobs), (15, 2));
        assert_eq!(rows[0].uploaded_blobs, 1);
        assert_eq!(describe(&[]), None);
        assert_eq!(
            describe(&rows).unwrap(),
            "registry 0.0 MiB down, 0.0 MiB up (0 blob(s) cached, 2 skipped, 0 mounted)"
        );
    }
}
