//! Registry-shared build cache (issue 6): `--cache-to registry://HOST/REPO` pushes the
//! prepared part of a build (the base layers as written, the recipe layer, and the
//! small JSON record describing them) as an OCI artifact; `--cache-from` fetches it on
//! a local cache miss, verifies every blob, and fills the local cache, so the build
//! then proceeds exactly as a local cache hit (same bytes, same digest).
//!
//! The artifact is an OCI image manifest, tagged `cache-<first 32 hex of sha256(key)>`:
//!
//! - `artifactType`: `application/vnd.nemoclaw.build-cache.v1+json`
//! - `config`: the empty descriptor (`application/vnd.oci.empty.v1+json`, `{}`)
//! - `layers`: the record (media type `application/vnd.nemoclaw.build-cache.v1+json`),
//!   then every prepared layer blob with its own media type
//! - `annotations`: `dev.nemoclaw.cache.key` = the full cache key
//!
//! A manifest whose key annotation is not the build's key is a miss. A missing tag is
//! a miss; any other registry error is a warning: the cache never fails a build.
use crate::cache::Cache;
use crate::digest::{sha256_digest, sha256_hex, HashingReader};
use crate::image::canonical;
use crate::oci::{Descriptor, Digest, Manifest, MediaType};
use crate::progress::{Progress, Warning, WarningCode};
use crate::registry::{
    is_not_found, runtime, short, BlobSource, PushBlob, RegRef, RegistryOptions, Sent, Session,
    CONCURRENCY, JSON_LIMIT,
};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// artifactType of the cache manifest, and media type of its record blob.
pub const MT_CACHE: &str = "application/vnd.nemoclaw.build-cache.v1+json";
pub use crate::oci::manifest::MT_EMPTY;
pub const KEY_ANNOTATION: &str = "dev.nemoclaw.cache.key";
use crate::oci::manifest::EMPTY_JSON as EMPTY;

#[derive(Debug, Clone, Default)]
pub struct RemoteCacheOptions {
    /// Repositories (`HOST[:PORT]/REPO`) asked on a local miss, in order.
    pub from: Vec<String>,
    /// Repository (`HOST[:PORT]/REPO`) the prepared part is pushed to.
    pub to: Option<String>,
}

/// One blob of the cache artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLayer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// Parses `registry://HOST[:PORT]/REPO` (no tag, no digest) into `HOST[:PORT]/REPO`.
pub fn parse_location(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("registry://")
        .ok_or_else(|| format!("'{s}': expected registry://HOST[:PORT]/REPO"))?;
    let r = RegRef::parse(rest).map_err(|e| format!("{e:#}"))?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(format!(
            "'{s}': give a repository without tag or digest (the tag is derived from the cache key)"
        ));
    }
    Ok(r.name())
}

/// The tag a cache entry lives under.
pub fn tag_for(key: &str) -> String {
    format!("cache-{}", &sha256_hex(key.as_bytes())[..32])
}

/// The cache manifest (canonical JSON) for a record blob and the prepared layers.
pub fn manifest_bytes(key: &str, record: &[u8], layers: &[CacheLayer]) -> Result<Vec<u8>> {
    let desc = |mt: &str, digest: &str, size| -> Result<Descriptor> {
        Ok(Descriptor::new(
            MediaType::from(mt),
            Digest::parse(digest)?,
            size,
        ))
    };
    let mut ls = vec![desc(MT_CACHE, &sha256_digest(record), record.len() as u64)?];
    for l in layers {
        ls.push(desc(&l.media_type, &l.digest, l.size)?);
    }
    let annotations = [(KEY_ANNOTATION.to_string(), key.to_string())].into();
    Ok(canonical(&Manifest::artifact(
        MediaType::from(MT_CACHE),
        ls,
        annotations,
    )))
}

fn desc_of(v: &Value, mt_field: &str) -> Result<CacheLayer> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("descriptor without {k}"))
    };
    let digest = s("digest")?;
    crate::digest::digest_hex(&digest)?;
    Ok(CacheLayer {
        media_type: s(mt_field)?,
        digest,
        size: v
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("descriptor without size"))?,
    })
}

/// Checks a fetched cache manifest: `Ok(None)` when it belongs to another key (a
/// miss), else the record descriptor and the layer descriptors. Malformed: an error.
pub fn check_manifest(bytes: &[u8], key: &str) -> Result<Option<(CacheLayer, Vec<CacheLayer>)>> {
    let v: Value = serde_json::from_slice(bytes).context("invalid JSON")?;
    if v.get("schemaVersion").and_then(Value::as_i64) != Some(2) {
        bail!("not a schemaVersion 2 manifest");
    }
    let got = v
        .get("annotations")
        .and_then(|a| a.get(KEY_ANNOTATION))
        .and_then(Value::as_str);
    if got != Some(key) {
        return Ok(None);
    }
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("manifest without layers"))?;
    let mut it = layers.iter().map(|l| desc_of(l, "mediaType"));
    let record = it
        .next()
        .ok_or_else(|| anyhow!("manifest without the cache record"))??;
    if record.media_type != MT_CACHE {
        bail!(
            "first layer is {}, not the cache record ({MT_CACHE})",
            record.media_type
        );
    }
    if record.size > JSON_LIMIT {
        bail!(
            "the cache record is {} bytes, more than {JSON_LIMIT} allowed",
            record.size
        );
    }
    Ok(Some((record, it.collect::<Result<Vec<_>>>()?)))
}

/// The layers a cache record (the pipeline's `Prepared`) lists.
pub fn record_layers(record: &Value) -> Result<Vec<CacheLayer>> {
    record
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("cache record without layers"))?
        .iter()
        .map(|l| desc_of(l, "media_type"))
        .collect()
}

/// sha256 of a file, streamed (a tarball base's identity when the cache has not seen it).
pub fn file_digest(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = HashingReader::new(f);
    let mut buf = vec![0u8; 1 << 20];
    while r
        .read(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?
        > 0
    {}
    Ok(r.finish().0)
}

/// A registry cache hit: the record, and the repository that holds its layers.
pub struct Hit {
    pub record: Value,
    /// `HOST[:PORT]/REPO` of the cache that answered.
    pub location: String,
}

/// On a local miss: asks each repository of `from` in order for `key`. A hit returns
/// the record; with `download`, its verified blobs and the record (kind "prepared",
/// under `key`) are also left in `cache`. Without, the layers stay in the registry
/// (the caller pushes them by mount or registry-to-registry). Misses and errors
/// return None; errors are printed as warnings.
pub fn fetch(
    from: &[String],
    key: &str,
    cache: &Cache,
    ropts: &RegistryOptions,
    p: &Progress,
    download: bool,
) -> Option<Hit> {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            p.warn(Warning::new(
                WarningCode::CacheFrom,
                format!("cache-from: {e:#}; building without it"),
            ));
            return None;
        }
    };
    let tag = tag_for(key);
    for loc in from {
        let at = format!("registry://{loc}:{tag}");
        match rt.block_on(fetch_one(loc, &tag, key, cache, ropts, download)) {
            Ok(Ok((v, n))) => {
                p.log(&format!(
                    "cache-from: hit {at} ({n} layers{}, nothing recompressed)",
                    if download {
                        ""
                    } else {
                        " left in the registry"
                    }
                ));
                return Some(Hit {
                    record: v,
                    location: loc.clone(),
                });
            }
            Ok(Err(why)) => p.log(&format!("cache-from: miss {at} ({why})")),
            Err(e) => p.warn(Warning::new(
                WarningCode::CacheFrom,
                format!("cache-from {at}: {e:#}; continuing without this cache"),
            )),
        }
    }
    None
}

/// Ok(Ok(hit)), Ok(Err(reason of a miss)), or Err(a real failure).
async fn fetch_one(
    loc: &str,
    tag: &str,
    key: &str,
    cache: &Cache,
    ropts: &RegistryOptions,
    download: bool,
) -> Result<Result<(Value, usize), String>> {
    let s = Session::open(loc, ropts).await?;
    let r = RegRef {
        tag: Some(tag.to_string()),
        digest: None,
        ..s.r.clone()
    };
    let bytes = match s.manifest(&r, &format!("tag {tag}")).await {
        Ok((b, _)) => b,
        Err(e) if is_not_found(&e) => return Ok(Err("not found".into())),
        Err(e) => return Err(e),
    };
    let Some((rec, layers)) =
        check_manifest(&bytes, key).with_context(|| format!("cache manifest {tag}"))?
    else {
        return Ok(Err("the tag holds another cache key".into()));
    };
    let path = s
        .fetch_blob(cache, &rec.digest, rec.size, "cache record")
        .await?;
    let v: Value = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("cache record {}: invalid JSON", rec.digest))?;
    if record_layers(&v)? != layers {
        bail!(
            "the cache record {} lists other layers than the manifest",
            rec.digest
        );
    }
    if !download {
        return Ok(Ok((v, layers.len())));
    }
    let _: Vec<PathBuf> = futures_util::stream::iter(layers.iter().enumerate())
        .map(|(i, l)| {
            let label = format!("cached layer {} ({})", i + 1, short(&l.digest));
            let s = &s;
            async move { s.fetch_blob(cache, &l.digest, l.size, &label).await }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    cache.put_json("prepared", key, &v)?;
    Ok(Ok((v, layers.len())))
}

/// A small blob as a cache file (uploads stream from files).
fn small_blob(cache: &Cache, bytes: &[u8]) -> Result<PathBuf> {
    let d = sha256_digest(bytes);
    if let Some(p) = cache.blob(&d) {
        return Ok(p);
    }
    let mut t = cache.tmp_file()?;
    std::io::Write::write_all(&mut t, bytes)?;
    cache.insert_blob(t, &d)
}

/// With `--cache-to`: pushes the record and the layers (each `(descriptor, bytes)`)
/// under the tag of `key`, skipping blobs the registry has; nothing when the tag
/// already holds this exact manifest.
pub fn push(
    to: &str,
    key: &str,
    record: &Value,
    layers: &[(CacheLayer, BlobSource)],
    cache: &Cache,
    ropts: &RegistryOptions,
    p: &Progress,
) -> Result<()> {
    runtime()?.block_on(push_async(to, key, record, layers, cache, ropts, p))
}

async fn push_async(
    to: &str,
    key: &str,
    record: &Value,
    layers: &[(CacheLayer, BlobSource)],
    cache: &Cache,
    ropts: &RegistryOptions,
    p: &Progress,
) -> Result<()> {
    let tag = tag_for(key);
    let at = format!("registry://{to}:{tag}");
    let rec_bytes = canonical(record);
    let descs: Vec<CacheLayer> = layers.iter().map(|(l, _)| l.clone()).collect();
    let manifest = manifest_bytes(key, &rec_bytes, &descs)?;
    let s = Session::open(to, ropts).await?;
    let r = RegRef {
        tag: Some(tag.clone()),
        digest: None,
        ..s.r.clone()
    };
    match s.manifest(&r, &format!("tag {tag}")).await {
        Ok((b, _)) if b == manifest => {
            p.log(&format!("cache-to: {at} is up to date"));
            return Ok(());
        }
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    let blobs = push_blobs(&rec_bytes, layers, cache)?;
    let sent: Vec<Sent> = futures_util::stream::iter(blobs.iter())
        .map(|b| {
            let s = &s;
            async move { s.push_blob(Some(cache), b, ropts).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    s.push_manifest_bytes(&tag, &manifest).await?;
    let uploaded = sent.iter().filter(|x| **x == Sent::Uploaded).count();
    p.log(&format!(
        "cache-to: pushed {at} ({} layers; {uploaded} blob(s) uploaded, {} already present)",
        layers.len(),
        sent.len() - uploaded
    ));
    Ok(())
}

/// The blobs of a cache artifact, in push order: its empty config, the record, then
/// each layer (a local one checked against the size the record gives).
fn push_blobs(
    rec_bytes: &[u8],
    layers: &[(CacheLayer, BlobSource)],
    cache: &Cache,
) -> Result<Vec<PushBlob>> {
    let mut blobs = vec![
        PushBlob {
            label: "cache config".into(),
            digest: sha256_digest(EMPTY),
            size: EMPTY.len() as u64,
            source: BlobSource::File(small_blob(cache, EMPTY)?),
        },
        PushBlob {
            label: "cache record".into(),
            digest: sha256_digest(rec_bytes),
            size: rec_bytes.len() as u64,
            source: BlobSource::File(small_blob(cache, rec_bytes)?),
        },
    ];
    for (i, (l, source)) in layers.iter().enumerate() {
        let source = match source {
            BlobSource::File(path) => {
                let len = std::fs::metadata(path)
                    .with_context(|| format!("cached layer {} is missing", l.digest))?
                    .len();
                if len != l.size {
                    bail!(
                        "layer {} has {len} bytes, the record says {}",
                        l.digest,
                        l.size
                    );
                }
                BlobSource::File(path.clone())
            }
            BlobSource::Remote(r) => BlobSource::Remote(r.clone()),
        };
        blobs.push(PushBlob {
            label: format!("cached layer {} ({})", i + 1, short(&l.digest)),
            digest: l.digest.clone(),
            size: l.size,
            source,
        });
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MT_OCI_MANIFEST;
    use serde_json::json;

    fn layers() -> Vec<CacheLayer> {
        vec![
            CacheLayer {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: sha256_digest(b"a"),
                size: 1,
            },
            CacheLayer {
                media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                digest: sha256_digest(b"bb"),
                size: 2,
            },
        ]
    }

    #[test]
    fn tag_is_derived_from_the_key() {
        let t = tag_for("v1|k");
        assert_eq!(t.len(), "cache-".len() + 32);
        assert_eq!(t, format!("cache-{}", &sha256_hex(b"v1|k")[..32]));
        assert_ne!(t, tag_for("v1|k2"));
        assert!(t[6..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn locations_have_no_tag() {
        assert_eq!(
            parse_location("registry://127.0.0.1:5070/cache").unwrap(),
            "127.0.0.1:5070/cache"
        );
        assert!(parse_location("127.0.0.1:5070/cache").is_err());
        assert!(parse_location("registry://127.0.0.1:5070/cache:t").is_err());
        assert!(parse_location(&format!("registry://h/c@{}", sha256_digest(b"x"))).is_err());
    }

    #[test]
    fn manifest_is_canonical_and_round_trips() {
        let rec = br#"{"layers":[]}"#;
        let m = manifest_bytes("KEY", rec, &layers()).unwrap();
        // The exact bytes (a registry addresses the manifest by their digest): sorted keys,
        // no whitespace, the record first, then the layers in order.
        let expected = format!(
            concat!(
                r#"{{"annotations":{{"{key}":"KEY"}},"artifactType":"{cache}","#,
                r#""config":{{"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","mediaType":"{empty}","size":2}},"#,
                r#""layers":[{{"digest":"{rec}","mediaType":"{cache}","size":13}},"#,
                r#"{{"digest":"{a}","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1}},"#,
                r#"{{"digest":"{b}","mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","size":2}}],"#,
                r#""mediaType":"{man}","schemaVersion":2}}"#
            ),
            key = KEY_ANNOTATION,
            cache = MT_CACHE,
            empty = MT_EMPTY,
            man = MT_OCI_MANIFEST,
            rec = sha256_digest(rec),
            a = sha256_digest(b"a"),
            b = sha256_digest(b"bb"),
        );
        assert_eq!(String::from_utf8_lossy(&m), expected);
        let v: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(canonical(&v), m, "keys sorted, no whitespace");
        assert_eq!(v["artifactType"], MT_CACHE);
        assert_eq!(v["mediaType"], MT_OCI_MANIFEST);
        assert_eq!(v["config"]["mediaType"], MT_EMPTY);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["layers"][0]["mediaType"], MT_CACHE);
        assert_eq!(v["layers"][0]["digest"], sha256_digest(rec));
        assert_eq!(v["annotations"][KEY_ANNOTATION], "KEY");
        let (r, ls) = check_manifest(&m, "KEY").unwrap().unwrap();
        assert_eq!(r.digest, sha256_digest(rec));
        assert_eq!(ls, layers());
    }

    #[test]
    fn other_key_is_a_miss_and_garbage_an_error() {
        let m = manifest_bytes("KEY", b"{}", &layers()).unwrap();
        assert!(check_manifest(&m, "OTHER").unwrap().is_none());
        assert!(check_manifest(b"not json", "KEY").is_err());
        let mut v: Value = serde_json::from_slice(&m).unwrap();
        v["layers"][0]["mediaType"] = json!("application/octet-stream");
        assert!(check_manifest(&canonical(&v), "KEY").is_err());
    }

    #[test]
    fn record_layers_match_manifest_layers() {
        let rec = json!({"layers": layers().iter().map(|l| json!({
            "digest": l.digest, "size": l.size, "media_type": l.media_type,
            "diff_id": "x", "action": "reused"})).collect::<Vec<_>>()});
        assert_eq!(record_layers(&rec).unwrap(), layers());
        assert!(record_layers(&json!({})).is_err());
    }

    #[test]
    fn file_digest_streams() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data = vec![3u8; (1 << 20) + 17];
        std::fs::write(&p, &data).unwrap();
        assert_eq!(file_digest(&p).unwrap(), sha256_digest(&data));
    }

    #[test]
    fn unreachable_registry_is_a_warning_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(Some(d.path())).unwrap();
        let (p, events) = Progress::collecting();
        // Port 9 (discard) on loopback: connection refused, no network needed.
        let got = fetch(
            &["127.0.0.1:9/cache".into()],
            "KEY",
            &c,
            &RegistryOptions::default(),
            &p,
            true,
        );
        assert!(got.is_none());
        assert_eq!(events.warning_codes(), vec![WarningCode::CacheFrom]);
        let w = &p.warnings()[0].message;
        assert!(w.contains("registry://127.0.0.1:9/cache:"), "{w}");
    }
}
