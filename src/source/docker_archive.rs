//! `docker save` / `podman save` archives: manifest.json lists the config and the
//! layer files; layers are read in place as byte ranges of the archive.
use super::oci::{diff_ids_of, ArchiveStore, BlobStore};
use super::{BaseImage, Compression, LayerBlob, MT_OCI_LAYER};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use std::path::Path;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
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
        .read_all(16 << 20, "manifest.json")?;
    let entries: Vec<Entry> = serde_json::from_slice(&mf)
        .with_context(|| format!("{}: manifest.json is invalid", path.display()))?;
    let entry = match tag {
        Some(t) => entries
            .iter()
            .find(|e| {
                e.repo_tags.iter().flatten().any(|rt| {
                    rt == t || rt.ends_with(&format!("/{t}")) || rt.rsplit(':').next() == Some(t)
                })
            })
            .ok_or_else(|| anyhow!("{}: no image tagged '{t}'", path.display()))?,
        None => match entries.len() {
            1 => &entries[0],
            0 => bail!("{}: manifest.json lists no images", path.display()),
            n => bail!(
                "{}: manifest.json lists {n} images; select one with :TAG",
                path.display()
            ),
        },
    };
    let config_bytes = store.locate(&entry.config)?.read_all(16 << 20, "config")?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).with_context(|| {
        format!(
            "{}: config {} is invalid JSON",
            path.display(),
            entry.config
        )
    })?;
    let diff_ids = diff_ids_of(&config);
    if diff_ids.len() != entry.layers.len() {
        bail!(
            "{}: config lists {} diff_ids for {} layers",
            path.display(),
            diff_ids.len(),
            entry.layers.len()
        );
    }
    let mut layers = Vec::new();
    for (i, (rel, diff_id)) in entry.layers.iter().zip(&diff_ids).enumerate() {
        let loc = store
            .locate(rel.trim_start_matches("./"))
            .with_context(|| format!("layer {}", i + 1))?;
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
        config,
        layers,
        _scratch: None,
    })
}
