//! `docker save` / `podman save` archives: manifest.json lists the config and the
//! layer files; layers are read in place as byte ranges of the archive.
use super::oci::{ArchiveStore, BlobStore};
use super::spec::{self, check_layer_count, ArchiveImage};
use super::{BaseImage, Compression, LayerBlob, MT_OCI_LAYER};
use crate::digest::{quoted, sha256_digest};

use anyhow::{anyhow, bail, Context, Result};

use std::path::Path;

/// The image `tag` names in manifest.json (or its only image). A tag matches a
/// RepoTag exactly, as `NAME:TAG` after a registry host, or as the bare `TAG`; more
/// than one image matching is an error, not a guess.
fn select<'a>(images: &'a [ArchiveImage], tag: Option<&str>) -> Result<(usize, &'a ArchiveImage)> {
    let Some(t) = tag else {
        return match images.len() {
            1 => Ok((0, &images[0])),
            0 => bail!("manifest.json lists no images"),
            n => bail!("manifest.json lists {n} images; select one with :TAG"),
        };
    };
    let matches =
        |rt: &str| rt == t || rt.ends_with(&format!("/{t}")) || rt.rsplit(':').next() == Some(t);
    let hits: Vec<usize> = (0..images.len())
        .filter(|&i| images[i].repo_tags.iter().any(|rt| matches(rt)))
        .collect();
    match hits[..] {
        [i] => Ok((i, &images[i])),
        [] => bail!("no image tagged {} in manifest.json", quoted(t)),
        _ => bail!(
            "manifest.json: tag {} matches {} images ({}); give the full NAME:TAG",
            quoted(t),
            hits.len(),
            hits.iter()
                .map(|i| images[*i].repo_tags.join(" "))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// `docker save` names the config `<hex>.json` (or `blobs/sha256/<hex>` since
/// Docker 25) after its digest: the one integrity check a docker-archive offers.
fn digest_named(path: &str) -> Option<String> {
    let name = path.strip_prefix("blobs/sha256/").unwrap_or(path);
    let hex = name.strip_suffix(".json").unwrap_or(name);
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| format!("sha256:{hex}"))
}

pub fn open(path: &Path, tag: Option<&str>) -> Result<BaseImage> {
    let store = ArchiveStore::index(path)?;
    let mf = store
        .locate("manifest.json")
        .map_err(|_| {
            anyhow!(
                "{} is not a docker-archive (no manifest.json)",
                path.display()
            )
        })?
        .read_all(spec::MAX_MANIFEST_BYTES, "manifest.json")?;
    let images = spec::parse_docker_manifest(&mf)?;
    let (n, entry) = select(&images, tag)?;
    let at = format!("manifest.json: [{n}]");
    // Every file the entry names must be a regular file in the archive.
    let config_loc = store
        .locate(&entry.config)
        .with_context(|| format!("{at}.Config"))?;
    for (i, l) in entry.layers.iter().enumerate() {
        store
            .locate(l)
            .with_context(|| format!("{at}.Layers[{i}]"))?;
    }
    let config_bytes = config_loc.read_all(spec::MAX_CONFIG_BYTES, "config")?;
    let config_what = format!("config {}", entry.config);
    if let Some(want) = digest_named(&entry.config) {
        let got = sha256_digest(&config_bytes);
        if got != want {
            bail!("{config_what}: digest mismatch: its name says {want}, content hashes to {got}");
        }
    }
    let config = spec::parse_config(&config_bytes, &config_what)?;
    check_layer_count(&config, entry.layers.len(), &config_what)?;
    let diff_ids = &config.diff_ids;
    // One file listed twice is one layer applied twice: fine only if the config agrees.
    for (i, rel) in entry.layers.iter().enumerate() {
        if let Some(j) = entry.layers[..i].iter().position(|r| r == rel) {
            if diff_ids[i] != diff_ids[j] {
                bail!(
                    "{at}.Layers[{i}]: {} is also Layers[{j}], but the config gives them different diff_ids",
                    quoted(rel)
                );
            }
        }
    }
    let mut layers = Vec::new();
    for (i, (rel, diff_id)) in entry.layers.iter().zip(diff_ids).enumerate() {
        let loc = store.locate(rel)?;
        let mut l = LayerBlob::new(i, loc, MT_OCI_LAYER, None, Some(diff_id.clone()))?;
        match l.compression {
            // Uncompressed: the blob digest is the diff_id, verified while streaming.
            Compression::None => l.digest = Some(diff_id.clone()),
            // Compressed: the blob digest is learned while indexing (one read, not two);
            // the content is checked against the config's diff_id then.
            _ => {
                l.media_type = if l.compression == Compression::Gzip {
                    super::MT_OCI_LAYER_GZIP.into()
                } else {
                    super::MT_OCI_LAYER_ZSTD.into()
                };
            }
        }
        l.label = format!("layer {} ({})", i + 1, rel);
        layers.push(l);
    }
    Ok(BaseImage {
        name: format!("docker-archive:{}", super::portable_name(path)),
        manifest_digest: None,
        config: config.value,
        layers,
        deferred: None,
        _scratch: None,
    })
}
