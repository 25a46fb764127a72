//! OCI image layout (directory, or packed as an `oci-archive` tar): index.json ->
//! manifest -> config + layers. Archives are indexed once and their blobs are read
//! in place as byte ranges, never unpacked.
use super::spec::{self, check_layer_count, select_platform, Descriptor};
use super::{BaseImage, BlobLocation, LayerBlob, OpenOptions, MT_OCI_INDEX};
use crate::digest::{digest_hex, quoted, sha256_digest};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

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
    /// Regular files: normalized path -> byte range.
    entries: HashMap<String, (u64, u64)>,
    /// Everything else by name ("symlink", "directory", ...), for clear errors.
    others: HashMap<String, &'static str>,
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Directory => "directory",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hard link",
        _ => "special file",
    }
}

impl ArchiveStore {
    /// Indexes a tar archive (path -> byte range of each regular file). Names are
    /// normalized as [`spec::archive_path`] does; an entry that leaves the archive
    /// (`..`, absolute) or a file that appears twice is refused: extractors differ
    /// on which copy wins, so the archive has no single meaning.
    pub fn index(path: &Path) -> Result<ArchiveStore> {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut ar = tar::Archive::new(BufReader::new(f));
        let mut entries = HashMap::new();
        let mut others: HashMap<String, &'static str> = HashMap::new();
        for e in ar
            .entries()
            .with_context(|| format!("{}: not a tar archive", path.display()))?
        {
            let e = e.with_context(|| format!("{}: corrupt tar archive", path.display()))?;
            let raw = e
                .path()
                .with_context(|| format!("{}: bad entry name", path.display()))?
                .to_string_lossy()
                .into_owned();
            let et = e.header().entry_type();
            let name = match spec::archive_path(&raw) {
                Ok(n) => n,
                // The archive root itself ("./"), as `tar -C dir .` writes it.
                Err(_) if et.is_dir() && raw.split('/').all(|c| c.is_empty() || c == ".") => {
                    continue
                }
                Err(err) => bail!("{}: entry {err}", path.display()),
            };
            let dup = if et.is_file() {
                entries.contains_key(&name) || others.contains_key(&name)
            } else {
                entries.contains_key(&name)
                    || others
                        .get(&name)
                        .is_some_and(|k| !(et.is_dir() && *k == "directory"))
            };
            if dup {
                bail!(
                    "{}: {} appears twice in the archive (readers disagree on which copy counts)",
                    path.display(),
                    quoted(&name)
                );
            }
            if et.is_file() {
                entries.insert(name, (e.raw_file_position(), e.size()));
            } else {
                others.insert(name, kind_name(et));
            }
        }
        Ok(ArchiveStore {
            path: path.to_path_buf(),
            entries,
            others,
        })
    }
    pub fn has(&self, rel: &str) -> bool {
        self.entries.contains_key(rel)
    }
}

impl BlobStore for ArchiveStore {
    fn locate(&self, rel: &str) -> Result<BlobLocation> {
        let (offset, len) = self
            .entries
            .get(rel)
            .ok_or_else(|| match self.others.get(rel) {
                Some(kind) => anyhow!(
                    "{rel} is a {kind} in the archive {}, not a regular file",
                    self.path.display()
                ),
                None => anyhow!("{rel} is missing from the archive {}", self.path.display()),
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

pub fn blob_rel(digest: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", digest_hex(digest)?))
}

/// Reads a JSON blob (manifest, index, config) and checks it against its
/// descriptor: size before reading, digest after.
pub fn read_verified(
    store: &dyn BlobStore,
    d: &Descriptor,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    if d.size > limit {
        bail!(
            "{what}: descriptor says {} bytes, more than the {limit} bytes allowed",
            d.size
        );
    }
    let loc = store.locate(&blob_rel(&d.digest)?)?;
    if loc.len != d.size {
        bail!(
            "{what} in {}: size mismatch: descriptor says {} bytes, the blob has {}",
            store.describe(),
            d.size,
            loc.len
        );
    }
    let bytes = loc.read_all(limit, what)?;
    let got = sha256_digest(&bytes);
    if d.digest != got {
        bail!(
            "{what} in {}: digest mismatch: descriptor says {}, blob hashes to {got}",
            store.describe(),
            d.digest
        );
    }
    Ok(bytes)
}

/// Checks the `oci-layout` marker: JSON with imageLayoutVersion "1.0.0".
fn check_layout_file(store: &dyn BlobStore) -> Result<()> {
    let bytes = store
        .locate("oci-layout")?
        .read_all(spec::MAX_LAYOUT_FILE_BYTES, "oci-layout")?;
    spec::parse_layout_file(&bytes)
}

/// The blob store of an OCI layout, directory or archive, its `oci-layout` checked.
pub fn layout_store(path: &Path, archive: bool) -> Result<Box<dyn BlobStore>> {
    let store: Box<dyn BlobStore> = if archive {
        Box::new(ArchiveStore::index(path)?)
    } else {
        if !path.join("oci-layout").is_file() {
            bail!(
                "{} is not an OCI image layout (no oci-layout file)",
                path.display()
            );
        }
        Box::new(DirStore(path.to_path_buf()))
    };
    check_layout_file(store.as_ref())?;
    Ok(store)
}

/// A document a user pinned by digest (no descriptor gives its size): at most
/// `limit` bytes, hashing to `digest`.
pub fn read_pinned(store: &dyn BlobStore, digest: &str, what: &str, limit: u64) -> Result<Vec<u8>> {
    let loc = store
        .locate(&blob_rel(digest)?)
        .with_context(|| format!("{what}: no blob {digest}"))?;
    let bytes = loc.read_all(limit, what)?;
    let got = sha256_digest(&bytes);
    if got != digest {
        bail!(
            "{what} in {}: the blob named {digest} hashes to {got}",
            store.describe()
        );
    }
    Ok(bytes)
}

/// Every descriptor of a layout's index.json and of the image indexes it lists
/// (one level: what our builds and skopeo write), for cross-checks of a manifest's
/// declared platform. Unreadable nested indexes are skipped: only what is there is
/// checked.
pub fn layout_descriptors(store: &dyn BlobStore) -> Result<Vec<Descriptor>> {
    let bytes = store
        .locate("index.json")?
        .read_all(spec::MAX_MANIFEST_BYTES, "index.json")?;
    let top = spec::parse_index(&bytes, "index.json", MT_OCI_INDEX)?.manifests;
    let mut all = top.clone();
    for d in top.iter().filter(|d| spec::is_index(&d.media_type)) {
        let what = format!("image index {}", d.digest);
        let nested = read_verified(store, d, &what, spec::MAX_MANIFEST_BYTES)
            .and_then(|b| spec::parse_index(&b, &what, &d.media_type));
        if let Ok(idx) = nested {
            all.extend(idx.manifests);
        }
    }
    Ok(all)
}

pub fn open_layout_dir(path: &Path, tag: Option<&str>, opts: &OpenOptions) -> Result<BaseImage> {
    if !path.join("oci-layout").is_file() {
        bail!(
            "{} is not an OCI image layout (no oci-layout file)",
            path.display()
        );
    }
    let store = DirStore(path.to_path_buf());
    check_layout_file(&store)?;
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
    check_layout_file(&store)?;
    let name = match tag {
        Some(t) => format!("oci-archive:{}:{t}", super::portable_name(path)),
        None => format!("oci-archive:{}", super::portable_name(path)),
    };
    open_from_store(&store, tag, opts, name)
}

/// The platforms (`os/arch[/variant]`) of an index's image entries, in index order.
pub fn platforms_of(descs: &[Descriptor]) -> Vec<String> {
    descs
        .iter()
        .filter(|d| spec::is_image_entry(d))
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect()
}

/// The image index an OCI layout (directory or archive) names with `tag`: its
/// digest and entries (for `--platform all`, `verify`); an error when `tag` names a
/// single image.
pub fn layout_index(
    path: &Path,
    archive: bool,
    tag: Option<&str>,
) -> Result<(String, Vec<Descriptor>)> {
    let store: Box<dyn BlobStore> = if archive {
        Box::new(ArchiveStore::index(path)?)
    } else {
        Box::new(DirStore(path.to_path_buf()))
    };
    check_layout_file(store.as_ref())?;
    let index_bytes = store
        .locate("index.json")?
        .read_all(spec::MAX_MANIFEST_BYTES, "index.json")?;
    let index = spec::parse_index(&index_bytes, "index.json", MT_OCI_INDEX)?;
    let desc = select_tag(&index, tag)?;
    if !spec::is_index(&desc.media_type) {
        bail!(
            "{}: {} is a single image, not an image index",
            path.display(),
            tag.map_or("the image".to_string(), |t| format!("tag {}", quoted(t)))
        );
    }
    let what = format!("image index {}", desc.digest);
    let bytes = read_verified(store.as_ref(), desc, &what, spec::MAX_MANIFEST_BYTES)?;
    let idx = spec::parse_index(&bytes, &what, &desc.media_type)?;
    Ok((desc.digest.to_string(), idx.manifests))
}

/// The descriptor in index.json that `tag` names, or its only image.
fn select_tag<'a>(index: &'a spec::Index, tag: Option<&str>) -> Result<&'a Descriptor> {
    let manifests = &index.manifests;
    let Some(t) = tag else {
        // Artifacts attached to an image (an SBOM referrer) are not images.
        let images: Vec<&Descriptor> = manifests
            .iter()
            .filter(|d| spec::is_image_entry(d))
            .collect();
        return match images.len() {
            0 => bail!(
                "index.json lists no images ({} other entries ignored)",
                manifests.len()
            ),
            1 => Ok(images[0]),
            n => bail!("index.json lists {n} images; select one with :TAG"),
        };
    };
    let hits: Vec<usize> = (0..manifests.len())
        .filter(|&i| manifests[i].ref_name() == Some(t))
        .collect();
    match hits[..] {
        [i] => {
            let d = &manifests[i];
            if !(spec::is_index(&d.media_type) || spec::manifest_flavor(&d.media_type).is_some()) {
                bail!(
                    "index.json: manifests[{i}] (tag {}): media type {} is not an image manifest or index",
                    quoted(t),
                    quoted(&d.media_type)
                );
            }
            Ok(d)
        }
        [] => {
            let tags: Vec<&str> = manifests.iter().filter_map(|d| d.ref_name()).collect();
            bail!(
                "tag {} not found in index.json (tags: {})",
                quoted(t),
                if tags.is_empty() {
                    "none".into()
                } else {
                    tags.join(", ")
                }
            )
        }
        _ => bail!(
            "index.json: tag {} names {} manifests ({}); refusing to guess",
            quoted(t),
            hits.len(),
            hits.iter()
                .map(|i| format!("manifests[{i}]"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn open_from_store(
    store: &dyn BlobStore,
    tag: Option<&str>,
    opts: &OpenOptions,
    name: String,
) -> Result<BaseImage> {
    let index_bytes = store
        .locate("index.json")?
        .read_all(spec::MAX_MANIFEST_BYTES, "index.json")?;
    let index = spec::parse_index(&index_bytes, "index.json", MT_OCI_INDEX)?;
    let mut desc = select_tag(&index, tag)?.clone();
    // Nested indexes (what skopeo/podman write for multi-arch images).
    let mut depth = 0;
    while spec::is_index(&desc.media_type) {
        depth += 1;
        if depth > spec::MAX_INDEX_NESTING {
            bail!(
                "image indexes nested more than {} deep",
                spec::MAX_INDEX_NESTING
            );
        }
        let what = format!("image index {}", desc.digest);
        let bytes = read_verified(store, &desc, &what, spec::MAX_MANIFEST_BYTES)?;
        let idx = spec::parse_index(&bytes, &what, &desc.media_type)?;
        desc = select_platform(&idx.manifests, opts.platform.as_deref(), &what)?.clone();
    }
    let what = format!("manifest {}", desc.digest);
    let manifest_bytes = read_verified(store, &desc, &what, spec::MAX_MANIFEST_BYTES)?;
    let manifest = spec::parse_manifest(&manifest_bytes, &what, &desc.media_type)?;
    let config_what = format!("config {}", manifest.config.digest);
    let config_bytes = read_verified(
        store,
        &manifest.config,
        &config_what,
        spec::MAX_CONFIG_BYTES,
    )?;
    let config = spec::parse_config(&config_bytes, &config_what)?;
    check_layer_count(&config, manifest.layers.len(), &config_what)?;
    let mut layers = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        let loc = store
            .locate(&blob_rel(&l.digest)?)
            .with_context(|| format!("layer {}", i + 1))?;
        if loc.len != l.size {
            bail!(
                "layer {} ({}): size mismatch: descriptor says {} bytes, the blob has {}",
                i + 1,
                l.digest,
                l.size,
                loc.len
            );
        }
        layers.push(LayerBlob::new(
            i,
            loc,
            &l.media_type,
            Some(l.digest.to_string()),
            config.diff_ids.get(i).cloned(),
        )?);
    }
    Ok(BaseImage {
        name,
        manifest_digest: Some(desc.digest.into()),
        config: config.value,
        layers,
        deferred: None,
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
