//! The cache phase of a build: who the base is (worked out once), whether the
//! expensive part (base layers + recipe layer, [`Prepared`]) is already in the local
//! cache or a `--cache-from` registry, and storing/pushing it after a miss.
use crate::build_model::{BuildOptions, LayerSummary, TOOL_VERSION};
use crate::cache::Cache;
use crate::imageref::ImageRef;
use crate::progress::{Warning, WarningCode};
use crate::sink::Staging;
use crate::source::BaseImage;
use anyhow::Result;
use serde_json::json;

/// What the cached part of a build (base layers + recipe layer) produced. Stored as
/// JSON under the cache key; the format is that of earlier versions (digests and
/// media types are plain strings on disk).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Prepared {
    pub layers: Vec<LayerSummary>,
    pub purged: Vec<String>,
    pub not_installed: Vec<String>,
    pub files_removed: u64,
    pub bytes_removed: u64,
    pub init_size: u64,
    pub init_target: String,
    pub landlock_warnings: Vec<String>,
    /// /etc/passwd and /etc/group of the result, to resolve artifact owners.
    pub passwd: String,
    pub group: String,
    /// Ancestors of the artifacts destination as they are in the result: the
    /// artifacts layer repeats them.
    pub ancestors: Vec<Ancestor>,
}

/// A directory as it is in the result: (path, mode, uid, gid, mtime). A tuple, so
/// cache records keep their on-disk form (a JSON array).
pub(crate) type Ancestor = (String, u32, u64, u64, u64);

/// Who the base is: the one identity the cache is keyed on and the record names.
pub(crate) struct BaseIdentity {
    /// A content identity known before reading any layer: the manifest digest, a
    /// docker-archive's `config:sha256:...`, or a tarball's remembered file digest.
    known: Option<String>,
    /// A plain tarball's file identity (path, size, mtime, inode), under which its
    /// digest is remembered so it is not rehashed on every build.
    tar_file: Option<String>,
}

impl BaseIdentity {
    pub fn resolve(opts: &BuildOptions, base: &BaseImage) -> BaseIdentity {
        let tar_file = match &opts.base {
            ImageRef::Tar(path) => file_identity(path),
            _ => None,
        };
        // A docker-archive has no manifest digest; its config pins every layer by diff_id.
        let config_identity = match &opts.base {
            ImageRef::DockerArchive { .. } => Some(format!(
                "config:{}",
                crate::digest::sha256_digest(&crate::oci::canonical(&base.config))
            )),
            _ => None,
        };
        let remembered = || {
            let (fid, c) = (tar_file.as_ref()?, opts.cache.as_ref()?);
            c.get_json("file-digest", fid)?.as_str().map(str::to_string)
        };
        let known = base
            .manifest_digest
            .clone()
            .or(config_identity)
            .or_else(remembered);
        BaseIdentity { known, tar_file }
    }

    /// The identity once the layers were read: a tarball's digest is learned then.
    pub fn learned(&self, base: &BaseImage) -> Option<String> {
        self.known
            .clone()
            .or_else(|| base.layers.first().and_then(|l| l.digest.clone()))
    }

    /// Hashes a tarball base now (one streaming pass, remembered): what a registry
    /// lookup needs before any layer was read.
    fn hash_tarball(&mut self, opts: &BuildOptions, c: &Cache) {
        if let (None, ImageRef::Tar(path), Some(fid)) = (&self.known, &opts.base, &self.tar_file) {
            match crate::remote_cache::file_digest(path) {
                Ok(d) => {
                    let _ = c.put_json("file-digest", fid, &json!(d));
                    self.known = Some(d);
                }
                Err(e) => opts.progress.warn(Warning::new(
                    WarningCode::CacheFrom,
                    format!("cache-from: {e:#}"),
                )),
            }
        }
    }
}

fn file_identity(p: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    let abs = std::fs::canonicalize(p).ok()?;
    Some(format!(
        "{}:{}:{}:{}:{}",
        abs.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ))
}

fn cache_key(opts: &BuildOptions, base_id: &str) -> String {
    let init = crate::steps::init_binary(opts.arch)
        .map(|(b, _)| crate::digest::sha256_digest(b))
        .unwrap_or_default();
    key_for(TOOL_VERSION, &init, opts, base_id)
}

/// The cache key from every input of the cached part (tool and init given explicitly,
/// so a test can vary them). Artifacts, from a directory or a builder image
/// (`--artifacts-image`), are not cached: they are read and written on every build,
/// so neither they nor the builder's digest and path belong in the key (a new builder
/// still hits; `steps::builder` tests that the hit ships the new builder's files).
pub(crate) fn key_for(tool: &str, init: &str, opts: &BuildOptions, base_id: &str) -> String {
    format!(
        "v1|tool={tool}|init={init}|arch={}|recipe={}|base={base_id}|mode={:?}|comp={}|epoch={}|strict={}",
        opts.arch.name(),
        opts.recipe.digest(),
        opts.purge_mode,
        opts.compression.describe(),
        opts.epoch,
        opts.strict
    )
}

/// Where a cache hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSource {
    None,
    Local,
    Registry,
}

/// The outcome of the cache phase. A hit's layers are already staged.
pub(crate) enum CacheLookup {
    Hit {
        prepared: Box<Prepared>,
        source: CacheSource,
    },
    Miss,
}

/// Looks in the local cache, then (`--cache-from`) in registries. Only staging a
/// verified local hit can fail the build; every other problem is a miss.
pub(crate) fn lookup(
    opts: &BuildOptions,
    staging: &Staging,
    identity: &mut BaseIdentity,
) -> Result<CacheLookup> {
    let Some(c) = opts.cache.as_ref() else {
        return Ok(CacheLookup::Miss);
    };
    if let Some(prepared) = local_lookup(opts, c, staging, identity)? {
        return Ok(CacheLookup::Hit {
            prepared: Box::new(prepared),
            source: CacheSource::Local,
        });
    }
    if !opts.remote_cache.from.is_empty() {
        if let Some(prepared) = registry_lookup(opts, c, staging, identity) {
            return Ok(CacheLookup::Hit {
                prepared: Box::new(prepared),
                source: CacheSource::Registry,
            });
        }
    }
    Ok(CacheLookup::Miss)
}

fn local_lookup(
    opts: &BuildOptions,
    c: &Cache,
    staging: &Staging,
    identity: &BaseIdentity,
) -> Result<Option<Prepared>> {
    let Some(id) = &identity.known else {
        return Ok(None);
    };
    let Some(v) = c.get_json("prepared", &cache_key(opts, id)) else {
        return Ok(None);
    };
    let prep: Prepared = match serde_json::from_value(v) {
        Ok(p) => p,
        Err(e) => {
            opts.progress.warn(Warning::new(
                WarningCode::LocalCache,
                format!("local cache: unreadable cache record ({e}); building without it"),
            ));
            return Ok(None);
        }
    };
    // Every blob is checked before any is staged: a partial hit must leave
    // nothing in the staging layout.
    let mut srcs = Vec::with_capacity(prep.layers.len());
    for (i, l) in prep.layers.iter().enumerate() {
        match c.verified_blob(&l.digest) {
            Ok(Some(src)) => srcs.push((src, &l.digest)),
            Ok(None) => return Ok(None),
            Err(e) => {
                opts.progress.warn(Warning::new(
                    WarningCode::LocalCache,
                    format!("local cache: {e:#}; building without it"),
                ));
                // The entry's other blobs are checked now too: each corrupt one is
                // removed, so the rebuild stores it again (storing keeps a blob that
                // is already there).
                for rest in &prep.layers[i + 1..] {
                    let _ = c.verified_blob(&rest.digest);
                }
                return Ok(None);
            }
        }
    }
    for (src, digest) in &srcs {
        staging.add_cached(src, digest)?;
    }
    opts.progress.log(&format!(
        "cache hit: reusing {} base/recipe layer(s) from {}",
        prep.layers.len(),
        c.root().display()
    ));
    Ok(Some(prep))
}

/// On a local miss with `--cache-from`: learns a tarball base's digest if needed, then
/// asks the registries; a hit is staged exactly like a local hit. Never fails the build.
fn registry_lookup(
    opts: &BuildOptions,
    c: &Cache,
    staging: &Staging,
    identity: &mut BaseIdentity,
) -> Option<Prepared> {
    identity.hash_tarball(opts, c);
    let Some(id) = identity.known.as_deref() else {
        opts.progress
            .log("cache-from: skipped (the base has no content digest to key the cache on)");
        return None;
    };
    let key = cache_key(opts, id);
    let remote = opts.may_leave_layers_remote();
    let hit = crate::remote_cache::fetch(
        &opts.remote_cache.from,
        &key,
        c,
        &opts.open.registry,
        &opts.progress,
        !remote,
    )?;
    let prep: Prepared = match serde_json::from_value(hit.record) {
        Ok(p) => p,
        Err(e) => {
            opts.progress.warn(Warning::new(
                WarningCode::CacheFrom,
                format!("cache-from: unreadable cache record ({e}); building without it"),
            ));
            return None;
        }
    };
    if remote {
        // Nothing downloaded: the push mounts, skips or streams them (the registry
        // checks their digests; the cache is trusted as documented).
        for l in &prep.layers {
            staging.remote.add(
                l.digest.as_ref(),
                crate::registry::RemoteBlob {
                    location: hit.location.clone(),
                    size: l.size,
                },
            );
        }
        return Some(prep);
    }
    let mut srcs = Vec::with_capacity(prep.layers.len());
    for l in &prep.layers {
        match c
            .verified_blob(&l.digest)
            .and_then(|p| p.ok_or_else(|| anyhow::anyhow!("{} vanished from the cache", l.digest)))
        {
            Ok(src) => srcs.push((src, &l.digest)),
            Err(e) => {
                opts.progress.warn(Warning::new(
                    WarningCode::CacheFrom,
                    format!("cache-from: {e:#}; building without it"),
                ));
                return None;
            }
        }
    }
    for (src, digest) in &srcs {
        if let Err(e) = staging.add_cached(src, digest) {
            opts.progress.warn(Warning::new(
                WarningCode::CacheFrom,
                format!("cache-from: {e:#}; building without it"),
            ));
            return None;
        }
    }
    Some(prep)
}

/// After a miss: remembers the expensive part in the local cache (before publishing
/// moves the staging dir away). A blob that cannot be stored leaves no record.
pub(crate) fn store(
    opts: &BuildOptions,
    prep: &Prepared,
    staging: &Staging,
    base: &BaseImage,
    identity: &BaseIdentity,
) -> Result<()> {
    let Some(c) = opts.cache.as_ref() else {
        return Ok(());
    };
    let Some(id) = identity.learned(base) else {
        return Ok(());
    };
    if let Some(fid) = &identity.tar_file {
        let _ = c.put_json("file-digest", fid, &json!(id));
    }
    let mut stored = true;
    for l in &prep.layers {
        let src = staging.blobs().join(l.digest.hex());
        stored &= c.insert_blob_file(&src, &l.digest).is_ok();
    }
    if stored {
        c.put_json(
            "prepared",
            &cache_key(opts, &id),
            &serde_json::to_value(prep)?,
        )?;
    }
    Ok(())
}

/// With `--cache-to`: pushes the prepared part (from the staged blobs) under its cache
/// key. A failure is a warning: the image itself is not affected.
pub(crate) fn registry_push(
    opts: &BuildOptions,
    to: &str,
    prep: &Prepared,
    staging: &Staging,
    base: &BaseImage,
    identity: &BaseIdentity,
) {
    let Some(c) = opts.cache.as_ref() else {
        return;
    };
    let Some(id) = identity.learned(base) else {
        opts.progress
            .log("cache-to: skipped (the base has no content digest to key the cache on)");
        return;
    };
    let res = (|| -> Result<()> {
        let layers = prep
            .layers
            .iter()
            .map(|l| {
                let layer = crate::remote_cache::CacheLayer {
                    media_type: l.media_type.to_string(),
                    digest: l.digest.to_string(),
                    size: l.size,
                };
                let file = staging.blobs().join(l.digest.hex());
                let source = match staging.remote.get(l.digest.as_ref()) {
                    Some(r) if !file.exists() => crate::registry::BlobSource::Remote(r),
                    _ => crate::registry::BlobSource::File(file),
                };
                (layer, source)
            })
            .collect::<Vec<_>>();
        crate::remote_cache::push(
            to,
            &cache_key(opts, &id),
            &serde_json::to_value(prep)?,
            &layers,
            c,
            &opts.open.registry,
            &opts.progress,
        )
    })();
    if let Err(e) = res {
        opts.progress.warn(Warning::new(
            WarningCode::CacheTo,
            format!("cache-to registry://{to}: {e:#}; the image is not affected"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_model::PurgeMode;
    use crate::pipeline_tests::opts;
    use crate::source::{BlobLocation, LayerBlob, MT_OCI_LAYER};

    fn image(manifest_digest: Option<String>, first_layer: Option<String>) -> BaseImage {
        let blob = tempfile::NamedTempFile::new().unwrap();
        let loc = BlobLocation::whole(blob.path()).unwrap();
        BaseImage {
            name: "b".into(),
            manifest_digest,
            config: serde_json::json!({"architecture": "amd64", "os": "linux"}),
            layers: vec![LayerBlob::new(0, loc, MT_OCI_LAYER, first_layer, None).unwrap()],
            deferred: None,
            _scratch: None,
        }
    }

    /// One identity per kind of base: the manifest digest, a docker-archive's config
    /// digest, a tarball's remembered file digest, else what reading it learned.
    #[test]
    fn base_identity_is_worked_out_once_per_kind() {
        let t = tempfile::tempdir().unwrap();
        let m = crate::digest::sha256_digest(b"manifest");
        let l = crate::digest::sha256_digest(b"layer");
        let o = opts("oci:/x:latest", "oci:/y", PurgeMode::Whiteout, None);
        let id = BaseIdentity::resolve(&o, &image(Some(m.clone()), None));
        assert_eq!(id.known.as_deref(), Some(m.as_str()));

        let o = opts("docker-archive:/x.tar", "oci:/y", PurgeMode::Whiteout, None);
        let img = image(None, None);
        let id = BaseIdentity::resolve(&o, &img);
        let want = format!(
            "config:{}",
            crate::digest::sha256_digest(&crate::oci::canonical(&img.config))
        );
        assert_eq!(id.known.as_deref(), Some(want.as_str()));

        let tar = t.path().join("base.tar");
        std::fs::write(&tar, b"tar bytes").unwrap();
        let mut o = opts(
            &format!("tar:{}", tar.display()),
            "oci:/y",
            PurgeMode::Whiteout,
            None,
        );
        let id = BaseIdentity::resolve(&o, &image(None, None));
        assert!(id.known.is_none() && id.tar_file.is_some());
        assert_eq!(id.learned(&image(None, Some(l.clone()))), Some(l.clone()));
        // Remembered under the file's identity: known before reading a layer.
        let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
        cache
            .put_json("file-digest", id.tar_file.as_ref().unwrap(), &json!(l))
            .unwrap();
        o.cache = Some(cache);
        let id = BaseIdentity::resolve(&o, &image(None, None));
        assert_eq!(id.known.as_deref(), Some(l.as_str()));
    }

    /// A cache record as earlier versions wrote it (digests and media types as plain
    /// strings, ancestors as arrays): still read, and written back the same.
    #[test]
    fn earlier_prepared_records_stay_readable() {
        let d = crate::digest::sha256_digest(b"layer");
        let i = crate::digest::sha256_digest(b"tar");
        let old = serde_json::json!({
            "layers": [{"digest": d, "diff_id": i, "size": 5,
                        "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "action": "rewritten"}],
            "purged": ["cc"], "not_installed": [], "files_removed": 3, "bytes_removed": 9,
            "init_size": 1, "init_target": "/init", "landlock_warnings": [],
            "passwd": "root:x:0:0::/root:/bin/sh\n", "group": "root:x:0:\n",
            "ancestors": [["opt", 493, 0, 0, 1700000000]]
        });
        let p: Prepared = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(p.layers[0].digest, d);
        assert_eq!(p.ancestors[0].0, "opt");
        assert_eq!(serde_json::to_value(&p).unwrap(), old);
    }

    /// A record naming a digest that is not one is no hit (and names nothing on disk).
    #[test]
    fn a_record_with_a_bad_digest_is_refused() {
        let bad = serde_json::json!({
            "layers": [{"digest": "sha256:../../x", "diff_id": "sha256:00", "size": 5,
                        "media_type": "x/y", "action": "new"}],
            "purged": [], "not_installed": [], "files_removed": 0, "bytes_removed": 0,
            "init_size": 0, "init_target": "", "landlock_warnings": [], "passwd": "",
            "group": "", "ancestors": []
        });
        let e = serde_json::from_value::<Prepared>(bad).unwrap_err();
        assert!(e.to_string().contains("invalid digest"), "{e}");
    }
}
