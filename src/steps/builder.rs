//! `--artifacts-image REF --artifacts-image-path /DIR`: the artifacts are a
//! directory of a builder image (the `COPY --from=builder` of a multi-stage
//! Dockerfile), read as bases are: through [`crate::source`] and the rootfs model
//! (whiteouts applied, nothing extracted to the host). The subtree then goes
//! through the same normalization as a host directory ([`super::artifacts::place`]),
//! so the same files and modes give the same artifacts layer, digest and config.
//!
//! What the subtree may hold, as for a directory: directories, regular files and
//! symlinks that stay inside it. Hardlinks become regular files (as a directory
//! walk reads them) when their target is inside the subtree and not replaced by a
//! later layer; device nodes, FIFOs and escaping links are refused, naming the path
//! and the layer. Owners, setuid/setgid bits, xattrs and mtimes of the builder are
//! dropped (root-owned or the recipe's owner, 0755/0644).
use super::artifacts::{check_link, walk_order, Collected, Entry};
use crate::imageref::ImageRef;
use crate::record::ArtifactsImageRecord;
use crate::rootfs::{normalize, Content, IndexOptions, Kind, Node, Rootfs};
use crate::source::{open_image, BaseImage, OpenOptions};
use crate::spill::Stored;
use crate::tarread::TarReader;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;

/// What the user (or a build record) names: the builder image and the directory
/// in it. Serializable: `verify --twice` hands it to its child builds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuilderSpec {
    /// `oci:`, `oci-archive:`, `docker-archive:` or `registry://` reference.
    pub reference: String,
    /// Absolute, normalized directory inside the builder (`/opt/nemoclaw`).
    pub path: String,
    /// The recorded manifest digest (`verify`): a registry tag is read at this
    /// digest, so a tag that moved since still rebuilds the recorded builder.
    #[serde(default)]
    pub digest: Option<String>,
}

impl BuilderSpec {
    /// Checks the reference and the path; errors name the flag.
    pub fn new(reference: &str, path: &str) -> Result<BuilderSpec> {
        match ImageRef::parse(reference).context("--artifacts-image")? {
            ImageRef::Tar(_) => bail!(
                "--artifacts-image {reference}: a rootfs tarball is not an image; give it as --artifacts FILE.tar"
            ),
            ImageRef::Registry(r) => {
                crate::registry::RegRef::parse(&r).context("--artifacts-image")?;
            }
            _ => {}
        }
        let key = normalize(path).context("--artifacts-image-path")?;
        if !path.starts_with('/') || key.is_empty() || format!("/{key}") != path {
            bail!(
                "--artifacts-image-path '{path}': expected an absolute, normalized directory below / (like /opt/app)"
            );
        }
        Ok(BuilderSpec {
            reference: reference.to_string(),
            path: path.to_string(),
            digest: None,
        })
    }

    /// A registry reference by tag (not `@sha256:`), which moves.
    pub fn by_tag(&self) -> bool {
        matches!(ImageRef::parse(&self.reference), Ok(ImageRef::Registry(r)) if !r.contains('@'))
    }
}

/// A builder image opened for one platform (layers reachable, not yet indexed).
pub struct Builder {
    pub spec: BuilderSpec,
    pub image: BaseImage,
    /// What the build record names.
    pub record: ArtifactsImageRecord,
}

/// Opens the builder for `open.platform` (an image index gives that platform's
/// manifest). `--strict` refuses a registry tag; without it the registry warns.
pub fn open(spec: &BuilderSpec, open: &OpenOptions, strict: bool) -> Result<Builder> {
    let mut reference = ImageRef::parse(&spec.reference).context("--artifacts-image")?;
    let mut pinned = false;
    if let ImageRef::Registry(r) = &reference {
        let rr = crate::registry::RegRef::parse(r)?;
        match (&rr.digest, &spec.digest) {
            (None, Some(d)) => {
                reference = ImageRef::Registry(format!("{}@{d}", rr.name()));
                pinned = true;
            }
            (None, None) if strict => bail!(
                "--artifacts-image {}: a tag, and tags move; --strict refuses a builder not pinned by digest (registry://{}@sha256:...)",
                spec.reference,
                rr.name()
            ),
            _ => {}
        }
    }
    let image = open_image(&reference, open).context("--artifacts-image")?;
    let digest = match &image.manifest_digest {
        Some(d) => d.clone(),
        // A docker-archive has no manifest digest; its config pins every layer.
        None => format!(
            "config:{}",
            crate::digest::sha256_digest(&crate::oci::canonical(&image.config))
        ),
    };
    let name = if pinned {
        spec.reference.clone()
    } else {
        image.name.clone()
    };
    Ok(Builder {
        record: ArtifactsImageRecord {
            digest,
            name,
            path: spec.path.clone(),
        },
        spec: spec.clone(),
        image,
    })
}

/// Places the builder's subtree at `dest` like [`super::artifacts::apply`] places a
/// host directory; returns the digest of the normalized tree (equal to the
/// directory's for the same files and modes).
pub fn apply(
    fs: &mut Rootfs,
    b: &Builder,
    dest: &str,
    ids: (u64, u64),
    spill_dir: &std::path::Path,
) -> Result<String> {
    let label = format!("{}:{}", b.record.name, b.spec.path);
    let mut c = Collected::new(label, spill_dir, &super::artifacts::LIMITS)?;
    collect(&mut c, b)?;
    super::artifacts::place(fs, c, dest, ids)
}

/// The builder's `os/architecture[/variant]`, for a warning when it differs from
/// the build's platform.
pub fn platform_of(config: &serde_json::Value) -> Option<String> {
    let os = config.get("os")?.as_str()?;
    let arch = config.get("architecture")?.as_str()?;
    let variant = config.get("variant").and_then(|v| v.as_str());
    Some(crate::platform::platform_name(os, arch, variant))
}

/// The builder's final filesystem (whiteouts applied), bytes left in the layers.
fn index(image: &BaseImage) -> Result<Rootfs> {
    let opts = IndexOptions {
        capture: |_, _| false,
        // the copy pass reads every wanted file from its layer, setid ones too
        capture_special: false,
        ..IndexOptions::default()
    };
    let mut fs = Rootfs::new();
    for (i, l) in image.layers.iter().enumerate() {
        fs.apply_layer(i, &l.label, l.open_tar()?, &opts)?;
    }
    Ok(fs)
}

/// One path of the subtree and where its bytes are: (layer, key) of a regular file.
struct Planned {
    rel: String,
    kind: Kind,
    mode: u32,
    link: Option<String>,
    bytes: Option<(usize, String)>,
}

/// Reads the subtree into `c` in walk order, every file's bytes copied once into
/// the spill. Each layer holding wanted bytes is streamed once more.
pub(crate) fn collect(c: &mut Collected, b: &Builder) -> Result<()> {
    let fs = index(&b.image).with_context(|| format!("builder {}", b.record.name))?;
    let plan = plan(c, b, &fs)?;
    let mut wanted: BTreeMap<(usize, String), Option<Stored>> = plan
        .iter()
        .filter_map(|p| p.bytes.clone())
        .map(|k| (k, None))
        .collect();
    let layers: std::collections::BTreeSet<usize> = wanted.keys().map(|(l, _)| *l).collect();
    for l in layers {
        let layer = &b.image.layers[l];
        let mut tar = TarReader::new(layer.open_tar()?, &layer.label);
        while let Some(e) = tar.next_entry()? {
            if e.kind != Kind::File {
                continue;
            }
            let Some(slot) = wanted.get_mut(&(l, e.path.clone())) else {
                continue;
            };
            // The last entry of a path in a layer is the one the model kept.
            let what = format!("builder {} {}: /{}", b.record.name, layer.label, e.path);
            *slot = Some(c.spill.append(&mut tar, &what)?);
        }
        tar.finish()?;
    }
    // Spilled once per file, but each hardlink is written as a copy: the bound is on
    // what the layer will hold.
    let mut total: u64 = 0;
    for p in plan {
        let data = match &p.bytes {
            Some(k) => {
                let s = wanted.get(k).and_then(Option::as_ref).with_context(|| {
                    format!("builder {}: /{} not found in its layer", b.record.name, k.1)
                })?;
                total = total.saturating_add(s.bytes.len());
                if total > c.limits.max_bytes {
                    bail!(
                        "builder {}: {}/{}: the artifacts exceed the limit of {} bytes (uncompressed; each hardlink is a copy)",
                        b.record.name,
                        b.spec.path,
                        p.rel,
                        c.limits.max_bytes
                    );
                }
                Some(Stored {
                    bytes: s.bytes.clone(),
                    sha256: s.sha256.clone(),
                    elf: s.elf,
                    machine: s.machine,
                })
            }
            None => None,
        };
        let e = Entry {
            kind: p.kind,
            mode: p.mode,
            data,
            link: p.link,
        };
        c.push(p.rel, e)?;
    }
    Ok(())
}

/// The subtree's entries in walk order, checked; errors name path and layer.
fn plan(c: &Collected, b: &Builder, fs: &Rootfs) -> Result<Vec<Planned>> {
    let root = normalize(&b.spec.path)?;
    let name = &b.record.name;
    match fs.get(&root) {
        Some(n) if n.is_dir() => {}
        // No entry of its own, but entries below it: a runtime creates it.
        None if fs.descendants(&root).next().is_some() => {}
        Some(n) => bail!(
            "builder {name}: {} is a {:?}, not a directory",
            b.spec.path,
            n.kind()
        ),
        None => bail!("builder {name}: {} does not exist", b.spec.path),
    }
    let layer_of = |n: &Node| match n.layer() {
        Some(l) => b.image.layers.get(l).map(|x| x.label.clone()),
        None => None,
    };
    let mut out = Vec::new();
    for (key, n) in fs.descendants(&root) {
        let rel = key[root.len() + 1..].to_string();
        let at = || {
            format!(
                "builder {name}: /{key} ({})",
                layer_of(n).unwrap_or_default()
            )
        };
        if out.len() >= c.limits.max_entries {
            bail!(
                "builder {name}: {} has more than {} entries",
                b.spec.path,
                c.limits.max_entries
            );
        }
        let mut p = Planned {
            rel,
            kind: n.kind(),
            mode: n.mode,
            link: None,
            bytes: None,
        };
        match n.kind() {
            Kind::Dir => {}
            Kind::File => match n.content().and_then(Content::base_layer) {
                Some(l) => p.bytes = Some((l, key.to_string())),
                None => bail!("{}: no layer holds its bytes", at()),
            },
            Kind::Symlink => {
                let t = n.link().unwrap_or_default().to_string();
                check_link(&p.rel, &t).with_context(at)?;
                p.link = Some(t);
            }
            Kind::Hardlink => {
                let (file, f) =
                    link_in_subtree(fs, key, &root).map_err(|e| anyhow!("{}: {e}", at()))?;
                p.kind = Kind::File;
                p.mode = f.mode;
                p.bytes = Some((f.layer().unwrap_or(0), file));
            }
            k => bail!(
                "{}: a {k:?}; artifacts may hold only directories, regular files and symlinks",
                at()
            ),
        }
        out.push(p);
    }
    out.sort_by(|a, b| walk_order(&a.rel, &b.rel));
    Ok(out)
}

/// The regular file a hardlink in the subtree shares. Every hop must stay inside
/// the subtree (a link out of it would copy a file the user did not name), and no
/// hop nor the file may have been replaced by a layer above the link (the link keeps
/// the inode it was made with, which the model no longer has).
fn link_in_subtree<'a>(
    fs: &'a Rootfs,
    key: &str,
    root: &str,
) -> std::result::Result<(String, &'a Node), String> {
    let inside =
        |k: &str| k.len() > root.len() && k.starts_with(root) && k.as_bytes()[root.len()] == b'/';
    let link_layer = fs.get(key).and_then(Node::layer);
    let mut cur = key.to_string();
    for _ in 0..64 {
        let n = fs
            .get(&cur)
            .ok_or_else(|| format!("hardlink to '/{cur}', which is not in the image"))?;
        if n.layer() > link_layer {
            return Err(format!(
                "hardlink to '/{cur}', which a later layer replaced"
            ));
        }
        match (n.kind(), n.link()) {
            (Kind::Hardlink, Some(t)) => {
                if !inside(t) {
                    return Err(format!(
                        "hardlink to '/{t}', outside /{root}; copy the file into the directory instead"
                    ));
                }
                cur = t.to_string();
            }
            (Kind::File, _) => return Ok((cur, n)),
            (k, _) => return Err(format!("hardlink to '/{cur}', a {k:?}")),
        }
    }
    Err(format!("hardlink chain from '/{key}' is too long"))
}

#[cfg(test)]
mod tests;
