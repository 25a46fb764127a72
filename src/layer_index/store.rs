//! Where layer index records live: the local cache (a blob by its own digest, and a
//! pointer under the layer's key) and, through `--cache-to`/`--cache-from`, the cache
//! repository: one OCI artifact per layer, tagged `index-<first 32 hex of
//! sha256(key)>`, `artifactType` [`MT_LAYER_INDEX`], its one layer the record blob,
//! annotation `dev.nemoclaw.layer-index.key` = the key. Every read re-checks the
//! blob's digest and parses the record in full; a corrupt or mismatched entry is
//! ignored with a warning (and removed locally), the layer is read again and the
//! entry rebuilt: a record is never served unchecked.
use super::{key, LayerRecord, MAX_RECORD_BYTES, MT_LAYER_INDEX};
use crate::cache::Cache;
use crate::digest::{sha256_digest, sha256_hex};
use crate::image::canonical;
use crate::oci::{Descriptor, Digest, Manifest, MediaType};
use crate::progress::{Progress, Warning, WarningCode};
use crate::registry::{
    is_not_found, runtime, short, BlobSource, PushBlob, RegRef, RegistryOptions, Session,
};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

/// Kind of the local pointer entries.
const KIND: &str = "layer-index";
pub const KEY_ANNOTATION: &str = "dev.nemoclaw.layer-index.key";

/// The record of `layer` from the local cache, checked; None when absent. A record
/// that fails a check is reported as a warning (and removed when it is no record).
pub fn local_get(c: &Cache, layer: &str, p: &Progress) -> Option<LayerRecord> {
    let blob = local_bytes(c, layer, p)?;
    match checked(&blob, layer, None) {
        Ok(r) => Some(r),
        Err(e) => {
            ignore(c, layer, &blob, &e, p);
            None
        }
    }
}

/// The record blob of `layer` from the local cache, its digest verified (a blob that
/// fails is removed, with a warning); not parsed yet. None when absent.
pub fn local_bytes(c: &Cache, layer: &str, p: &Progress) -> Option<Vec<u8>> {
    let ptr = c.get_json(KIND, &key(layer))?;
    let digest = ptr.get("digest")?.as_str()?.to_string();
    let res = (|| -> Result<Vec<u8>> {
        let path = c
            .verified_blob(&digest)?
            .ok_or_else(|| anyhow!("its blob {digest} is gone"))?;
        let len = std::fs::metadata(&path)?.len();
        if len > MAX_RECORD_BYTES {
            let _ = std::fs::remove_file(&path);
            bail!("{len} bytes, more than {MAX_RECORD_BYTES} allowed");
        }
        Ok(std::fs::read(&path)?)
    })();
    res.map_err(|e| warn_ignored(layer, &e, p)).ok()
}

/// Why a record blob cannot serve as the index of `layer` (whose config diff_id is
/// `diff_id`, when known).
#[derive(Debug)]
pub enum Unfit {
    /// Not a record (or a damaged one).
    Invalid(anyhow::Error),
    /// A valid record of another layer, or one the config contradicts.
    Mismatch(String),
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::Invalid(e) => write!(f, "{e:#}"),
            Unfit::Mismatch(m) => f.write_str(m),
        }
    }
}

/// Parses a record blob and checks it describes `layer` (and `diff_id`).
pub fn checked(blob: &[u8], layer: &str, diff_id: Option<&str>) -> Result<LayerRecord, Unfit> {
    let rec = LayerRecord::parse(blob).map_err(Unfit::Invalid)?;
    if rec.layer != layer {
        return Err(Unfit::Mismatch(format!("it describes layer {}", rec.layer)));
    }
    if let Some(want) = diff_id.filter(|d| *d != rec.diff_id) {
        return Err(Unfit::Mismatch(format!(
            "it says diff_id {}, the config {want}",
            rec.diff_id
        )));
    }
    Ok(rec)
}

/// Reports a cached record that cannot serve, and removes its blob when it is no
/// record at all (a valid record of another layer stays for that layer).
pub fn ignore(c: &Cache, layer: &str, blob: &[u8], why: &Unfit, p: &Progress) {
    if let (Unfit::Invalid(_), Ok(path)) = (why, c.blob_path(&sha256_digest(blob))) {
        let _ = std::fs::remove_file(path);
    }
    warn_ignored(layer, why, p);
}

fn warn_ignored(layer: &str, why: &dyn std::fmt::Display, p: &Progress) {
    coded(
        p,
        WarningCode::LayerIndex,
        &format!(
            "layer index of {} in the local cache: {why:#}; ignored, the layer is read again",
            short(layer)
        ),
    );
}

/// Stores a record blob for `layer` (content-addressed, then the pointer).
pub fn local_put(c: &Cache, layer: &str, blob: &[u8]) -> Result<String> {
    let d = sha256_digest(blob);
    if c.blob(&d).is_none() {
        let mut t = c.tmp_file()?;
        std::io::Write::write_all(&mut t, blob)?;
        c.insert_blob(t, &d)?;
    }
    c.put_json(KIND, &key(layer), &json!({"digest": d, "size": blob.len()}))?;
    Ok(d)
}

/// The record blob of `layer` in the local cache: (digest, size, path).
fn local_blob(c: &Cache, layer: &str) -> Option<(String, u64, std::path::PathBuf)> {
    let ptr = c.get_json(KIND, &key(layer))?;
    let d = ptr.get("digest")?.as_str()?.to_string();
    let path = c.blob(&d)?;
    let size = std::fs::metadata(&path).ok()?.len();
    Some((d, size, path))
}

/// The tag a layer's record lives under in a cache repository.
pub fn tag_for(layer: &str) -> String {
    format!("index-{}", &sha256_hex(key(layer).as_bytes())[..32])
}

/// The artifact manifest (canonical JSON) naming one record blob.
pub fn manifest_bytes(layer: &str, digest: &str, size: u64) -> Result<Vec<u8>> {
    let desc = Descriptor::new(
        MediaType::from(MT_LAYER_INDEX),
        Digest::parse(digest)?,
        size,
    );
    let annotations = [(KEY_ANNOTATION.to_string(), key(layer))].into();
    Ok(canonical(&Manifest::artifact(
        MediaType::from(MT_LAYER_INDEX),
        vec![desc],
        annotations,
    )))
}

/// The record descriptor of a fetched manifest: None when it is another key's.
fn record_of(bytes: &[u8], layer: &str) -> Result<Option<(String, u64)>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).context("invalid JSON")?;
    let got = v
        .get("annotations")
        .and_then(|a| a.get(KEY_ANNOTATION))
        .and_then(|k| k.as_str());
    if got != Some(key(layer).as_str()) {
        return Ok(None);
    }
    let ls = v
        .get("layers")
        .and_then(|l| l.as_array())
        .filter(|l| l.len() == 1)
        .ok_or_else(|| anyhow!("expected one layer (the record)"))?;
    let mt = ls[0].get("mediaType").and_then(|m| m.as_str());
    if mt != Some(MT_LAYER_INDEX) {
        bail!("its layer is {mt:?}, not {MT_LAYER_INDEX}");
    }
    let d = ls[0]
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| anyhow!("record without digest"))?;
    crate::digest::digest_hex(d)?;
    let size = ls[0]
        .get("size")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| anyhow!("record without size"))?;
    if size > MAX_RECORD_BYTES {
        bail!("the record is {size} bytes, more than {MAX_RECORD_BYTES} allowed");
    }
    Ok(Some((d.to_string(), size)))
}

/// With `--cache-from`: fetches the records of `layers` (compressed digests) that the
/// local cache lacks into it (blobs verified by digest on the way). Never fails the
/// build: a miss or an error leaves the layer to be read; errors are warnings.
pub fn fetch(from: &[String], layers: &[String], c: &Cache, ro: &RegistryOptions, p: &Progress) {
    let want: Vec<&String> = layers
        .iter()
        .filter(|l| local_blob(c, l).is_none())
        .collect();
    if from.is_empty() || want.is_empty() {
        return;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return coded(p, WarningCode::CacheFrom, &format!("cache-from: {e:#}")),
    };
    for loc in from {
        let res = rt.block_on(async {
            let s = Session::open(loc, ro).await?;
            let mut got = 0;
            for l in &want {
                if local_blob(c, l).is_some() {
                    continue;
                }
                match fetch_one(&s, l, c).await {
                    Ok(true) => got += 1,
                    Ok(false) => {}
                    Err(e) => coded(p, WarningCode::CacheFrom, &format!(
                        "cache-from registry://{loc}: layer index of {}: {e:#}; the layer is read instead",
                        short(l)
                    )),
                }
            }
            anyhow::Ok(got)
        });
        match res {
            Ok(n) => p.log(&format!(
                "cache-from: {n} of {} layer index record(s) from registry://{loc}",
                want.len()
            )),
            Err(e) => coded(
                p,
                WarningCode::CacheFrom,
                &format!("cache-from registry://{loc}: {e:#}; continuing without its layer index"),
            ),
        }
    }
}

/// Ok(true): fetched and stored; Ok(false): not there.
async fn fetch_one(s: &Session, layer: &str, c: &Cache) -> Result<bool> {
    let tag = tag_for(layer);
    let r = RegRef {
        tag: Some(tag.clone()),
        digest: None,
        ..s.r.clone()
    };
    let bytes = match s.manifest(&r, &format!("tag {tag}")).await {
        Ok((b, _)) => b,
        Err(e) if is_not_found(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    let Some((digest, size)) =
        record_of(&bytes, layer).with_context(|| format!("manifest {tag}"))?
    else {
        return Ok(false);
    };
    let label = format!("layer index of {}", short(layer));
    s.fetch_blob(c, &digest, size, &label).await?;
    c.put_json(KIND, &key(layer), &json!({"digest": digest, "size": size}))?;
    Ok(true)
}

/// With `--cache-to`: pushes the local records of `layers` that the repository does
/// not hold yet. A failure is a warning: the image is not affected.
pub fn push(to: &str, layers: &[String], c: &Cache, ro: &RegistryOptions, p: &Progress) {
    let have: Vec<(String, String, u64, std::path::PathBuf)> = layers
        .iter()
        .filter_map(|l| local_blob(c, l).map(|(d, n, path)| (l.clone(), d, n, path)))
        .collect();
    if have.is_empty() {
        return;
    }
    let res = runtime().and_then(|rt| {
        rt.block_on(async {
            let s = Session::open(to, ro).await?;
            let mut pushed = 0;
            for (layer, digest, size, path) in &have {
                let tag = tag_for(layer);
                let manifest = manifest_bytes(layer, digest, *size)?;
                let r = RegRef {
                    tag: Some(tag.clone()),
                    digest: None,
                    ..s.r.clone()
                };
                match s.manifest(&r, &format!("tag {tag}")).await {
                    Ok((b, _)) if b == manifest => continue,
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
                let b = PushBlob {
                    label: format!("layer index of {}", short(layer)),
                    digest: digest.clone(),
                    size: *size,
                    source: BlobSource::File(path.clone()),
                };
                s.push_blob(Some(c), &b, ro).await?;
                s.push_manifest_bytes(&tag, &manifest).await?;
                pushed += 1;
            }
            anyhow::Ok(pushed)
        })
    });
    match res {
        Ok(n) => p.log(&format!(
            "cache-to: {n} layer index record(s) pushed to registry://{to} ({} up to date)",
            have.len() - n
        )),
        Err(e) => coded(
            p,
            WarningCode::CacheTo,
            &format!("cache-to registry://{to}: layer index: {e:#}; the image is not affected"),
        ),
    }
}

/// A warning with its code (the message built by the caller).
fn coded(p: &Progress, code: WarningCode, msg: &str) {
    p.warn(Warning::new(code, msg));
}
