//! Local content-addressed cache (`$XDG_CACHE_HOME/nemoclaw-build`, `--cache-dir`):
//! pulled blobs by digest, and derived results (rewritten layers, compressed
//! layers) keyed by the digests of their inputs, so an unchanged step is never
//! recomputed. Entries are written to a temp file and renamed: a crash never
//! leaves a half-written entry under a real key.
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Name prefix of partial entries in `tmp/`: `part-PID-RANDOM`.
const TMP_PREFIX: &str = "part-";

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

pub fn default_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("nemoclaw-build");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache/nemoclaw-build");
    }
    std::env::temp_dir().join("nemoclaw-build-cache")
}

impl Cache {
    pub fn open(dir: Option<&Path>) -> Result<Cache> {
        let root = dir.map(Path::to_path_buf).unwrap_or_else(default_dir);
        for sub in ["blobs/sha256", "derived", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).with_context(|| {
                format!("cannot create cache directory {}", root.join(sub).display())
            })?;
        }
        let c = Cache { root };
        c.sweep_tmp();
        Ok(c)
    }
    /// Removes partial files of builds that died (another pid that is gone, and no
    /// lock held on the file); a live build's parts are locked while written.
    fn sweep_tmp(&self) {
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(TMP_PREFIX))
                .and_then(|r| r.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() || crate::scratch::pid_alive(pid) {
                continue;
            }
            let locked = std::fs::File::open(e.path()).map(|f| f.try_lock().is_err());
            if locked.is_ok_and(|l| !l) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs/sha256")
            .join(crate::digest::digest_hex(digest)?))
    }
    /// The cached blob, if present (touched so pruning keeps recently used entries).
    pub fn blob(&self, digest: &str) -> Option<PathBuf> {
        let p = self.blob_path(digest).ok()?;
        if p.is_file() {
            touch(&p);
            Some(p)
        } else {
            None
        }
    }
    /// The cached blob, re-hashed before use: a hit is published as-is (often hard-
    /// linked), so a blob changed in place (disk fault, a stray edit) must not reach
    /// an output. `Ok(None)` when absent; `Err` names the mismatch, and the bad
    /// entry is removed so the next build fetches or rebuilds it.
    pub fn verified_blob(&self, digest: &str) -> Result<Option<PathBuf>> {
        let Some(p) = self.blob(digest) else {
            return Ok(None);
        };
        let what = format!("cached blob {}", p.display());
        let checked = std::fs::File::open(&p)
            .map_err(|e| anyhow::anyhow!("cannot read {what}: {e}"))
            .and_then(|f| {
                let mut r = crate::digest::VerifyingReader::new(f, digest, None, &what);
                // The reader's error names the blob and the mismatch.
                std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| anyhow::anyhow!("{e}"))
            });
        match checked {
            Ok(_) => Ok(Some(p)),
            Err(e) => {
                let _ = std::fs::remove_file(&p);
                Err(anyhow::anyhow!("{e:#}; removed it from the cache"))
            }
        }
    }
    /// A partial entry, named after our pid and locked while it is written, so a
    /// concurrent build never takes it for a dead build's leftover.
    pub fn tmp_file(&self) -> Result<tempfile::NamedTempFile> {
        let t = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}{}-", std::process::id()))
            .tempfile_in(self.root.join("tmp"))
            .with_context(|| format!("cannot write in the cache {}", self.root.display()))?;
        t.as_file().try_lock().map_err(std::io::Error::from)?;
        Ok(t)
    }
    /// Moves a verified temp file into the cache under `digest`.
    pub fn insert_blob(&self, tmp: tempfile::NamedTempFile, digest: &str) -> Result<PathBuf> {
        let dst = self.blob_path(digest)?;
        tmp.persist(&dst)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot store {} in the cache", dst.display()))?;
        Ok(dst)
    }
    /// Hard-links (or copies) one of our own files into the cache under `digest`.
    /// A link is atomic by itself: the entry appears complete or not at all, and a
    /// concurrent insert of the same digest simply wins.
    pub fn insert_blob_file(&self, src: &Path, digest: &str) -> Result<PathBuf> {
        let dst = self.blob_path(digest)?;
        if dst.exists() {
            return Ok(dst);
        }
        match std::fs::hard_link(src, &dst) {
            Ok(()) => return Ok(dst),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(dst),
            Err(_) => {}
        }
        let mut tmp = self.tmp_file()?;
        std::io::copy(&mut std::fs::File::open(src)?, &mut tmp)
            .with_context(|| format!("cannot store {} in the cache", dst.display()))?;
        self.insert_blob(tmp, digest)
    }
    fn derived_path(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join("derived").join(kind).join(format!(
            "{}.json",
            crate::digest::sha256_hex(key.as_bytes())
        ))
    }
    pub fn get_json(&self, kind: &str, key: &str) -> Option<Value> {
        let p = self.derived_path(kind, key);
        let v: Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
        touch(&p);
        Some(v)
    }
    pub fn put_json(&self, kind: &str, key: &str, v: &Value) -> Result<()> {
        let p = self.derived_path(kind, key);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut tmp = self.tmp_file()?;
        std::io::Write::write_all(&mut tmp, &crate::image::canonical(v))?;
        tmp.persist(&p).map_err(|e| e.error)?;
        Ok(())
    }
    /// Deletes least recently used entries until the cache is at most `max_bytes`.
    pub fn prune(&self, max_bytes: u64) -> Result<(u64, u64)> {
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        // tmp/ holds the partial entries of running builds: not ours to prune.
        let tmp = self.root.join("tmp");
        for e in walkdir::WalkDir::new(&self.root)
            .into_iter()
            .filter_entry(|e| e.path() != tmp)
            .filter_map(|e| e.ok())
        {
            if e.file_type().is_file() {
                if let Ok(m) = e.metadata() {
                    files.push((
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        e.path().to_path_buf(),
                    ));
                }
            }
        }
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let (mut removed, mut freed) = (0, 0);
        for (_, len, p) in files {
            if total <= max_bytes {
                break;
            }
            if std::fs::remove_file(&p).is_ok() {
                total -= len;
                freed += len;
                removed += 1;
            }
        }
        Ok((removed, freed))
    }
}

fn touch(p: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(p) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_json_and_prune() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(Some(d.path())).unwrap();
        let data = b"hello";
        let digest = crate::digest::sha256_digest(data);
        let mut t = c.tmp_file().unwrap();
        std::io::Write::write_all(&mut t, data).unwrap();
        c.insert_blob(t, &digest).unwrap();
        assert!(c.blob(&digest).is_some());
        c.put_json("layer", "k1", &serde_json::json!({"a": 1}))
            .unwrap();
        assert_eq!(c.get_json("layer", "k1").unwrap()["a"], 1);
        assert!(c.get_json("layer", "k2").is_none());
        // A live part in tmp/ is not pruned.
        let part = c.tmp_file().unwrap();
        let (n, _) = c.prune(0).unwrap();
        assert!(part.path().exists());
        assert!(n >= 2);
        assert!(c.blob(&digest).is_none());
    }

    /// Pruning removes the least recently *used* entries: a read (`blob`, `get_json`)
    /// makes an old entry recent again.
    #[test]
    fn prune_removes_least_recently_used_first() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(Some(d.path())).unwrap();
        let put = |data: &[u8], age_s: u64| {
            let digest = crate::digest::sha256_digest(data);
            let mut t = c.tmp_file().unwrap();
            std::io::Write::write_all(&mut t, data).unwrap();
            let p = c.insert_blob(t, &digest).unwrap();
            std::fs::File::options()
                .append(true)
                .open(&p)
                .unwrap()
                .set_modified(SystemTime::now() - std::time::Duration::from_secs(age_s))
                .unwrap();
            digest
        };
        // Written oldest first; 100 bytes each.
        let oldest = put(&[1u8; 100], 4000);
        let old = put(&[2u8; 100], 3000);
        let newer = put(&[3u8; 100], 2000);
        c.put_json("prepared", "k", &serde_json::json!({"x": 1}))
            .unwrap();
        let json = c.derived_path("prepared", "k");
        std::fs::File::options()
            .append(true)
            .open(&json)
            .unwrap()
            .set_modified(SystemTime::now() - std::time::Duration::from_secs(5000))
            .unwrap();
        // Use the oldest blob and the record: they become the most recent.
        assert!(c.blob(&oldest).is_some());
        assert!(c.get_json("prepared", "k").is_some());
        let json_len = std::fs::metadata(&json).unwrap().len();
        // Room for everything but 150 bytes: the two least recently used blobs go.
        let (n, freed) = c.prune(300 + json_len - 150).unwrap();
        assert_eq!((n, freed), (2, 200));
        assert!(c.blob_path(&old).map(|p| !p.exists()).unwrap());
        assert!(c.blob_path(&newer).map(|p| !p.exists()).unwrap());
        assert!(c.blob_path(&oldest).map(|p| p.exists()).unwrap());
        assert!(c.get_json("prepared", "k").is_some());
    }

    #[test]
    fn parts_of_dead_builds_are_swept_on_open() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(Some(d.path())).unwrap();
        let tmp = d.path().join("tmp");
        let dead = tmp.join("part-999999999-abcdef");
        std::fs::write(&dead, b"half").unwrap();
        let ours = c.tmp_file().unwrap();
        let other = tmp.join("notes");
        std::fs::write(&other, b"x").unwrap();
        Cache::open(Some(d.path())).unwrap();
        assert!(!dead.exists(), "a dead build's part was kept");
        assert!(ours.path().exists() && other.exists());
    }
}
