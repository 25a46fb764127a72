//! OCI image layout (directory, or packed as an `oci-archive` tar): index.json ->
//! manifest -> config + layers. Archives are indexed once and their blobs are read
//! in place as byte ranges, never unpacked.
use super::{
    host_arch, BaseImage, BlobLocation, LayerBlob, OpenOptions, MT_DOCKER_LIST, MT_OCI_INDEX,
};
use crate::digest::{digest_hex, sha256_digest};
use anyhow::{anyhow, bail, Context, Result};
use oci_spec::image::{ImageIndex, ImageManifest};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

const JSON_LIMIT: u64 = 16 * 1024 * 1024;

/// Where the layout's files live.
pub trait BlobStore {
    fn locate(&self, rel: &str) -> Result<BlobLocation>;
    fn describe(&self) -> String;
}

struct DirStore(PathBuf);

impl BlobStore for DirStore {
    fn locate(&self, rel: &str) -> Result<BlobLocation> {
        let p = self.0.join(rel);
        if !p.is_file() {
            bail!(
                "{} is missing from the OCI layout {}",
                rel,
                self.0.display()
            );
        }
        BlobLocation::whole(&p)
    }
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

pub struct ArchiveStore {
    path: PathBuf,
    entries: HashMap<String, (u64, u64)>,
}

impl ArchiveStore {
    /// Indexes the regular files of a tar archive (path -> byte range).
    pub fn index(path: &Path) -> Result<ArchiveStore> {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut ar = tar::Archive::new(BufReader::new(f));
        let mut entries = HashMap::new();
        for e in ar
            .entries()
            .with_context(|| format!("{}: not a tar archive", path.display()))?
        {
            let e = e.with_context(|| format!("{}: corrupt tar archive", path.display()))?;
            if e.header().entry_type().is_file() {
                let name = e
                    .path()?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                entries.insert(name, (e.raw_file_position(), e.size()));
            }
        }
        Ok(ArchiveStore {
            path: path.to_path_buf(),
            entries,
        })
    }
    pub fn has(&self, rel: &str) -> bool {
        self.entries.contains_key(rel)
    }
}

impl BlobStore for ArchiveStore {
    fn locate(&self, rel: &str) -> Result<BlobLocation> {
        let (offset, len) = self.entries.get(rel).ok_or_else(|| {
            anyhow!(
                "{} is missing from the archive {}",
                rel,
                self.path.display()
            )
        })?;
        Ok(BlobLocation {
            path: self.path.clone(),
            offset: *offset,
            len: *len,
        })
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

fn blob_rel(digest: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", digest_hex(digest)?))
}

/// Reads a small JSON blob and checks it hashes to its descriptor digest.
fn read_verified(store: &dyn BlobStore, digest: &str, what: &str) -> Result<Vec<u8>> {
    let loc = store.locate(&blob_rel(digest).with_context(|| format!("{what}: bad digest"))?)?;
    let bytes = loc.read_all(JSON_LIMIT, what)?;
    let got = sha256_digest(&bytes);
    if got != digest {
        bail!(
            "{what} in {}: digest mismatch: descriptor says {digest}, blob hashes to {got}",
            store.describe()
        );
    }
    Ok(bytes)
}

pub fn open_layout_dir(path: &Path, tag: Option<&str>, opts: &OpenOptions) -> Result<BaseImage> {
    if !path.join("oci-layout").is_file() {
        bail!(
            "{} is not an OCI image layout (no oci-layout file)",
            path.display()
        );
    }
    let store = DirStore(path.to_path_buf());
    let name = match tag {
        Some(t) => format!("oci:{}:{t}", super::portable_name(path)),
        None => format!("oci:{}", super::portable_name(path)),
    };
    open_from_store(&store, tag, opts, name)
}

pub fn open_layout_archive(
    path: &Path,
    tag: Option<&str>,
    opts: &OpenOptions,
) -> Result<BaseImage> {
    let store = ArchiveStore::index(path)?;
    if !store.has("oci-layout") {
        bail!(
            "{} is not an OCI archive (no oci-layout entry)",
            path.display()
        );
    }
    let name = match tag {
        Some(t) => format!("oci-archive:{}:{t}", super::portable_name(path)),
        None => format!("oci-archive:{}", super::portable_name(path)),
    };
    open_from_store(&store, tag, opts, name)
}

fn parse_index(bytes: &[u8], what: &str) -> Result<ImageIndex> {
    ImageIndex::from_reader(bytes).map_err(|e| anyhow!("{what}: invalid image index JSON: {e}"))
}

/// Picks the manifest for `os/arch[/variant]` from an index.
pub fn select_platform<'a>(
    descs: &'a [oci_spec::image::Descriptor],
    platform: Option<&str>,
    what: &str,
) -> Result<&'a oci_spec::image::Descriptor> {
    let want = platform
        .map(str::to_string)
        .unwrap_or_else(|| format!("linux/{}", host_arch()));
    let mut parts = want.split('/');
    let (os, arch, variant) = (
        parts.next().unwrap_or("linux"),
        parts.next().unwrap_or(host_arch()),
        parts.next(),
    );
    let mut seen = Vec::new();
    for d in descs {
        if let Some(p) = d.platform() {
            let (pos, parch) = (p.os().to_string(), p.architecture().to_string());
            seen.push(format!("{pos}/{parch}"));
            if pos == os
                && parch == arch
                && (variant.is_none() || p.variant().as_deref() == variant)
            {
                return Ok(d);
            }
        }
    }
    if descs.len() == 1 && descs[0].platform().is_none() {
        return Ok(&descs[0]);
    }
    bail!(
        "{what}: no manifest for platform {want} (available: {})",
        if seen.is_empty() {
            "none declared".into()
        } else {
            seen.join(", ")
        }
    )
}

fn open_from_store(
    store: &dyn BlobStore,
    tag: Option<&str>,
    opts: &OpenOptions,
    name: String,
) -> Result<BaseImage> {
    let index_bytes = store
        .locate("index.json")?
        .read_all(JSON_LIMIT, "index.json")?;
    let index = parse_index(&index_bytes, &format!("{}/index.json", store.describe()))?;
    let manifests = index.manifests();
    let desc = match tag {
        Some(t) => manifests
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    .map(|s| s.as_str())
                    == Some(t)
            })
            .ok_or_else(|| {
                let tags: Vec<String> = manifests
                    .iter()
                    .filter_map(|d| {
                        d.annotations()
                            .as_ref()
                            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                            .cloned()
                    })
                    .collect();
                anyhow!(
                    "tag '{t}' not found in {}/index.json (tags: {})",
                    store.describe(),
                    if tags.is_empty() {
                        "none".into()
                    } else {
                        tags.join(", ")
                    }
                )
            })?,
        None => {
            // Artifacts attached to an image (an SBOM referrer) are not images.
            let images: Vec<&oci_spec::image::Descriptor> = manifests
                .iter()
                .filter(|d| d.artifact_type().is_none())
                .collect();
            match images.len() {
                0 => bail!("{}/index.json lists no images", store.describe()),
                1 => images[0],
                n => bail!(
                    "{}/index.json lists {n} images; select one with :TAG",
                    store.describe()
                ),
            }
        }
    };
    let mut digest = desc.digest().to_string();
    let mut media_type = desc.media_type().to_string();
    // Nested indexes (what skopeo/podman write for multi-arch images).
    for _ in 0..4 {
        if media_type != MT_OCI_INDEX && media_type != MT_DOCKER_LIST {
            break;
        }
        let bytes = read_verified(store, &digest, "image index")?;
        let idx = parse_index(&bytes, &format!("image index {digest}"))?;
        let d = select_platform(
            idx.manifests(),
            opts.platform.as_deref(),
            &format!("image index {digest}"),
        )?;
        digest = d.digest().to_string();
        media_type = d.media_type().to_string();
    }
    let manifest_bytes = read_verified(store, &digest, "manifest")?;
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])
        .map_err(|e| anyhow!("manifest {digest}: invalid JSON: {e}"))?;
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = read_verified(store, &config_digest, "config")?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("config {config_digest}: invalid JSON"))?;
    let diff_ids = diff_ids_of(&config);
    let mut layers = Vec::new();
    for (i, l) in manifest.layers().iter().enumerate() {
        let ld = l.digest().to_string();
        let loc = store
            .locate(&blob_rel(&ld)?)
            .with_context(|| format!("layer {}", i + 1))?;
        if loc.len != l.size() {
            bail!(
                "layer {} ({ld}): descriptor size {} but the blob has {} bytes",
                i + 1,
                l.size(),
                loc.len
            );
        }
        layers.push(LayerBlob::new(
            i,
            loc,
            l.media_type().as_ref(),
            Some(ld),
            diff_ids.get(i).cloned(),
        )?);
    }
    if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
        bail!(
            "config {config_digest} lists {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        );
    }
    Ok(BaseImage {
        name,
        manifest_digest: Some(digest),
        config,
        layers,
        _scratch: None,
    })
}

pub fn diff_ids_of(config: &serde_json::Value) -> Vec<String> {
    config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
