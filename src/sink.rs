//! Sinks: publishing a build without ever destroying what the user has.
//!
//! 1. [`check_output`] first: the output path may hold nothing, an empty directory,
//!    an OCI layout (`oci:`) or an image archive (archives); anything else is the
//!    user's and the build is refused before any work.
//! 2. The image is assembled in a [`Staging`] layout, a scratch directory beside the
//!    output (same filesystem, so publishing is a rename).
//! 3. [`finish`] does what can fail slowly (pack an archive into a temp file beside
//!    the output, push to a registry); nothing visible has changed yet.
//! 4. [`Pending::commit`] makes it visible with renames only: a new layout is the
//!    staging directory renamed into place, an existing layout gets the new blobs
//!    and then a new index.json (other tags kept, see [`crate::oci_layout`]), an
//!    archive's temp file is renamed over the old one. A crash at any point leaves
//!    either the old image or the new one.
use crate::digest::{digest_hex, sha256_digest, VerifyingReader};
use crate::imageref::ImageRef;
use crate::oci::{Descriptor, Digest, Index, MediaType};
use crate::oci_layout::{self, LayoutState, REF_NAME};
use crate::scratch::{self, parent_dir, Purpose, ScratchDir, ScratchFile};
use crate::source::{BlobLocation, LayerBlob};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Refuses an output path whose current content is not a previous image.
pub fn check_output(out: &ImageRef) -> Result<()> {
    match out {
        ImageRef::OciDir { path, .. } => oci_layout::inspect(path).map(|_| ()),
        ImageRef::OciArchive { path, .. } | ImageRef::DockerArchive { path, .. } => {
            check_archive_path(path)
        }
        ImageRef::Registry(_) => Ok(()),
        ImageRef::Tar(_) => {
            bail!("tar: is a base format only; write oci:, oci-archive: or docker-archive:")
        }
    }
}

/// An archive output may replace nothing, an empty file, or an image archive
/// (a tar with `oci-layout` or `manifest.json` at its top): never a rootfs tarball
/// or any other file of the user's.
fn check_archive_path(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    let refuse = |why: &str| -> Result<()> {
        bail!(
            "output {} {why}; refusing to replace it (choose a new path or remove it)",
            path.display()
        )
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symlink");
    }
    if !meta.is_file() {
        return refuse("exists and is not a regular file");
    }
    if meta.len() == 0 || is_image_archive(path) {
        return Ok(());
    }
    refuse("exists and is not an image archive (no oci-layout or manifest.json entry)")
}

/// Whether `path` is an uncompressed tar with an `oci-layout` or `manifest.json`
/// entry at its top (headers only: file data is seeked over).
fn is_image_archive(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut ar = tar::Archive::new(f);
    let Ok(entries) = ar.entries_with_seek() else {
        return false;
    };
    for e in entries {
        let Ok(e) = e else { return false };
        let Ok(p) = e.path() else { return false };
        let name = p.to_string_lossy();
        if matches!(
            name.trim_start_matches("./"),
            "oci-layout" | "manifest.json"
        ) {
            return true;
        }
    }
    false
}

/// Refuses a side output (`--sbom`, `--record`) that is not a file path.
pub fn check_side_output(path: &Path, what: &str) -> Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            bail!("{what} {} is a directory; give a file path", path.display());
        }
    }
    Ok(())
}

/// A side output written in full before the image is published, and renamed into
/// place together with it.
pub struct SideOutput {
    tmp: ScratchFile,
    dest: PathBuf,
}

impl SideOutput {
    pub fn write(dest: &Path, bytes: &[u8]) -> Result<SideOutput> {
        let tmp = ScratchFile::beside(dest)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        tmp.file()
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        Ok(SideOutput {
            tmp,
            dest: dest.to_path_buf(),
        })
    }
    pub fn commit(self) -> Result<()> {
        self.tmp
            .commit(&self.dest)
            .with_context(|| format!("cannot write {}", self.dest.display()))
    }
}

/// A full filesystem deep inside a compressor or a copy is reported as a bare
/// ENOSPC: say where the build writes, and that nothing was published.
pub fn explain_no_space(e: anyhow::Error, staged_in: &Path, cache: Option<&Path>) -> anyhow::Error {
    let full = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(libc::ENOSPC)
        })
    });
    if !full {
        return e;
    }
    let cache = cache
        .map(|c| format!(", cache {}", c.display()))
        .unwrap_or_default();
    e.context(format!(
        "out of disk space (the image is assembled in {}{cache}); nothing was published, \
         the output is unchanged",
        staged_in.display()
    ))
}

/// The directory the staging layout (and temp files) of `out` go in.
pub fn scratch_parent(out: &ImageRef) -> PathBuf {
    match out {
        ImageRef::OciDir { path, .. }
        | ImageRef::OciArchive { path, .. }
        | ImageRef::DockerArchive { path, .. }
        | ImageRef::Tar(path) => parent_dir(path),
        ImageRef::Registry(_) => std::env::temp_dir(),
    }
}

pub struct Staging {
    dir: ScratchDir,
    /// Blobs under this directory (our own cache), owned by us, may be hard-linked.
    trusted: Option<PathBuf>,
    /// Blobs of the image that stay in a registry (a cache hit pushed to a registry).
    pub remote: crate::registry::RemoteBlobs,
}

impl Staging {
    /// A staging layout next to the output, so the final rename stays on one
    /// filesystem. `trusted`: our cache directory, whose blobs may be hard-linked.
    pub fn for_output(out: &ImageRef, trusted: Option<&Path>) -> Result<Staging> {
        let parent = scratch_parent(out);
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let dir = ScratchDir::create_in(&parent, Purpose::Build, false).with_context(|| {
            format!("cannot create a staging directory in {}", parent.display())
        })?;
        std::fs::create_dir_all(dir.path().join("blobs/sha256"))
            .with_context(|| format!("cannot write in {}", parent.display()))?;
        Ok(Staging {
            dir,
            trusted: trusted.and_then(|t| std::fs::canonicalize(t).ok()),
            remote: Default::default(),
        })
    }
    pub fn blobs(&self) -> PathBuf {
        self.dir.path().join("blobs/sha256")
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let d = sha256_digest(bytes);
        // Written aside and renamed: another platform's job may put the same blob.
        let tmp = self.blobs().join(format!(".put-{}", unique()));
        let ctx = || format!("cannot write a blob into {}", self.path().display());
        std::fs::write(&tmp, bytes).with_context(ctx)?;
        std::fs::rename(&tmp, self.blobs().join(digest_hex(&d)?)).with_context(ctx)?;
        Ok(d)
    }

    /// Whether `src` may be hard-linked into the output: only a blob of our own
    /// cache that we own. Anything else (a base image, someone else's cache) is
    /// copied, so its owner cannot change our output later.
    fn may_link(&self, src: &Path) -> bool {
        let Some(root) = &self.trusted else {
            return false;
        };
        let owned =
            std::fs::symlink_metadata(src).is_ok_and(|m| m.is_file() && m.uid() == scratch::euid());
        owned && std::fs::canonicalize(src).is_ok_and(|p| p.starts_with(root))
    }

    /// Copies a base layer blob as-is. The copy (reflink where the filesystem can,
    /// else a byte copy) is verified against the digest: the source may have changed
    /// since the index pass read it.
    pub fn copy_layer(&self, l: &LayerBlob) -> Result<()> {
        let digest = l
            .digest
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("{}: no digest to reuse", l.label))?;
        self.add_blob(&l.location, digest, Some(l.size), &l.label)
    }

    /// Adds a blob of our cache to the staging layout (hard link when allowed).
    pub fn add_cached(&self, src: &Path, digest: &str) -> Result<PathBuf> {
        let loc = BlobLocation::whole(src)?;
        self.add_blob(&loc, digest, None, &format!("cached blob {digest}"))?;
        Ok(self.blobs().join(digest_hex(digest)?))
    }

    fn add_blob(
        &self,
        loc: &BlobLocation,
        digest: &str,
        size: Option<u64>,
        label: &str,
    ) -> Result<()> {
        let hex = digest_hex(digest)?;
        let dst = self.blobs().join(hex);
        if dst.exists() {
            return Ok(());
        }
        let whole = loc.offset == 0
            && std::fs::metadata(&loc.path).is_ok_and(|m| m.is_file() && m.len() == loc.len);
        if whole && self.may_link(&loc.path) && std::fs::hard_link(&loc.path, &dst).is_ok() {
            return Ok(());
        }
        // Unique: the platforms of one build share the staging layout and may copy
        // the same blob at the same time.
        let tmp = self.blobs().join(format!(".copy-{hex}-{}", unique()));
        let ctx = || format!("cannot copy {label} into {}", self.path().display());
        let cloned = whole && reflink(&loc.path, &tmp).is_ok();
        let src: Box<dyn Read> = if cloned {
            Box::new(File::open(&tmp).with_context(ctx)?)
        } else {
            Box::new(loc.open()?)
        };
        let mut r = VerifyingReader::new(src, digest, size, label);
        if cloned {
            std::io::copy(&mut r, &mut std::io::sink()).with_context(ctx)?;
        } else {
            let mut w = BufWriter::new(File::create(&tmp).with_context(ctx)?);
            std::io::copy(&mut r, &mut w).with_context(ctx)?;
            w.into_inner()
                .map_err(|e| e.into_error())
                .with_context(ctx)?;
        }
        std::fs::rename(&tmp, &dst).with_context(ctx)?;
        Ok(())
    }
}

/// A number no other call in this process gets (temp file names in a shared staging
/// layout).
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A copy-on-write clone of `src` at `dst` (FICLONE: btrfs, XFS, bcachefs...);
/// an error where the filesystem cannot, and the caller copies instead.
fn reflink(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let s = File::open(src)?;
    let d = File::options().write(true).create_new(true).open(dst)?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE
    // takes the source descriptor as its argument and touches no memory of ours.
    let r = unsafe { libc::ioctl(d.as_raw_fd(), libc::FICLONE, s.as_raw_fd()) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    drop(d);
    let _ = std::fs::remove_file(dst);
    Err(e)
}

/// Writes oci-layout and index.json for one manifest.
pub fn write_layout_index(
    dir: &Path,
    manifest_digest: &str,
    manifest_size: u64,
    tag: Option<&str>,
) -> Result<()> {
    write_layout_top(
        dir,
        MediaType::OciManifest,
        manifest_digest,
        manifest_size,
        tag,
    )
}

/// Writes oci-layout and index.json naming one document: an image manifest or (a
/// multi-platform build) an image index.
pub fn write_layout_top(
    dir: &Path,
    media_type: MediaType,
    digest: &str,
    size: u64,
    tag: Option<&str>,
) -> Result<()> {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut desc = Descriptor::new(media_type, Digest::parse(digest)?, size);
    if let Some(t) = tag {
        desc.annotations.insert(REF_NAME.to_string(), t.to_string());
    }
    let index = Index::oci(vec![desc]);
    std::fs::write(dir.join("index.json"), crate::image::canonical(&index))?;
    Ok(())
}

/// The image, ready to be made visible by [`Pending::commit`].
pub enum Pending {
    /// Pushed to a registry: nothing is left to do.
    Pushed,
    /// A complete staged layout for an `oci:` directory.
    Layout {
        staging: Staging,
        dest: PathBuf,
        tag: String,
    },
    /// A packed archive in a temp file beside its destination.
    Archive { tmp: ScratchFile, dest: PathBuf },
}

/// The image that [`finish`] publishes.
pub struct Built<'a> {
    /// The top document: the image manifest, or the index of a multi-platform build.
    pub manifest_digest: &'a str,
    pub manifest: &'a crate::oci::Manifest,
    pub manifest_size: u64,
    /// Set for a multi-platform build: the index's platform manifests (digest,
    /// bytes), pushed by digest before the index; `manifest` is then the first.
    pub platforms: &'a [(String, Vec<u8>)],
    pub epoch: u64,
    /// SPDX document to attach to an `oci:` layout as a referrer, with its creation time.
    pub sbom: Option<(&'a [u8], &'a str)>,
    /// Signature and attestations (referrers of the image), see [`crate::attest`].
    /// Signature and attestations, each list for the image manifest it names (one per
    /// platform of a multi-platform build).
    pub attachments: &'a [(Digest, crate::attest::Attachments)],
}

/// Everything of publishing that is slow or may fail, without touching the output.
pub fn finish(
    staging: Staging,
    out: &ImageRef,
    img: &Built,
    registry: &crate::registry::RegistryOptions,
) -> Result<Pending> {
    let (digest, size) = (img.manifest_digest, img.manifest_size);
    if !matches!(out, ImageRef::Registry(_)) && !staging.remote.is_empty() {
        bail!(
            "internal error: blobs {} were left in a registry, but {out} needs their bytes",
            staging.remote.digests().join(", ")
        );
    }
    let top = if img.platforms.is_empty() {
        MediaType::OciManifest
    } else {
        MediaType::OciIndex
    };
    match out {
        ImageRef::Registry(reference) => {
            write_layout_top(staging.path(), top.clone(), digest, size, None)?;
            push_to_registry(&staging, reference, img, registry)?;
            Ok(Pending::Pushed)
        }
        ImageRef::OciDir { path, tag } => {
            let tag = tag.clone().unwrap_or_else(|| "latest".into());
            write_layout_top(staging.path(), top, digest, size, Some(&tag))?;
            if let Some((sbom, created)) = img.sbom {
                crate::sbom::attach_to_layout(staging.path(), digest, size, sbom, created)?;
            }
            for (image, atts) in img.attachments {
                crate::attest::store::into_layout(staging.path(), image, atts)?;
            }
            Ok(Pending::Layout {
                staging,
                dest: path.clone(),
                tag,
            })
        }
        ImageRef::OciArchive { path, tag } => {
            let tag = Some(tag.as_deref().unwrap_or("latest"));
            write_layout_top(staging.path(), top, digest, size, tag)?;
            for (image, atts) in img.attachments {
                crate::attest::store::into_layout(staging.path(), image, atts)?;
            }
            let tmp = pack_dir(staging.path(), path, img.epoch)?;
            Ok(Pending::Archive {
                tmp,
                dest: path.clone(),
            })
        }
        ImageRef::DockerArchive { .. } if !img.platforms.is_empty() => {
            bail!("{out}: a docker-archive holds one platform; pick one with --platform")
        }
        ImageRef::DockerArchive { path, tag } => {
            write_docker_manifest(staging.path(), img.manifest, tag.as_deref())?;
            let tmp = pack_dir(staging.path(), path, img.epoch)?;
            Ok(Pending::Archive {
                tmp,
                dest: path.clone(),
            })
        }
        ImageRef::Tar(_) => bail!("cannot publish to {out}: tar: is a base format only"),
    }
}

/// Pushes the staged image (platform manifests first, then the top document) and
/// its signature and attestations; the registry must report the digest we built.
fn push_to_registry(
    staging: &Staging,
    reference: &str,
    img: &Built,
    registry: &crate::registry::RegistryOptions,
) -> Result<()> {
    let digest = img.manifest_digest;
    push_platforms(staging, reference, img.platforms, registry)?;
    let bytes = std::fs::read(staging.blobs().join(digest_hex(digest)?))?;
    let pushed = crate::registry::push(
        staging.path(),
        &staging.remote,
        reference,
        digest,
        &bytes,
        registry,
    )?;
    if pushed != digest {
        bail!("registry://{reference} reports manifest digest {pushed}, but we built {digest}");
    }
    for (image, atts) in img.attachments {
        crate::attest::store::to_registry(staging.path(), reference, image, atts, registry)?;
    }
    Ok(())
}

/// A docker-archive's `manifest.json` (only: with an OCI index.json beside it,
/// podman loads the archive as OCI and drops the tag).
fn write_docker_manifest(
    dir: &Path,
    manifest: &crate::oci::Manifest,
    tag: Option<&str>,
) -> Result<()> {
    let config = manifest.config.digest.hex();
    let layers: Vec<String> = manifest
        .layers
        .iter()
        .map(|d| format!("blobs/sha256/{}", d.digest.hex()))
        .collect();
    let repo_tag = match tag {
        Some(t) if t.contains(':') || t.contains('/') => t.to_string(),
        Some(t) => format!("localhost/nemoclaw:{t}"),
        None => "localhost/nemoclaw:latest".into(),
    };
    let mf = json!([{"Config": format!("blobs/sha256/{config}"), "RepoTags": [repo_tag], "Layers": layers}]);
    std::fs::write(dir.join("manifest.json"), crate::image::canonical(&mf))?;
    Ok(())
}

/// The platform manifests of an index, each pushed by digest (with its blobs)
/// before the index that names them.
fn push_platforms(
    staging: &Staging,
    reference: &str,
    platforms: &[(String, Vec<u8>)],
    registry: &crate::registry::RegistryOptions,
) -> Result<()> {
    let name = crate::registry::RegRef::parse(reference)?.name();
    for (digest, bytes) in platforms {
        let pinned = format!("{name}@{digest}");
        let pushed = crate::registry::push(
            staging.path(),
            &staging.remote,
            &pinned,
            digest,
            bytes,
            registry,
        )?;
        if &pushed != digest {
            bail!("registry://{pinned} reports manifest digest {pushed}, but we built {digest}");
        }
    }
    Ok(())
}

impl Pending {
    /// Makes the image visible (renames only); on error the old output is intact.
    /// Call it inside [`scratch::commit_section`].
    pub fn commit(self) -> Result<()> {
        match self {
            Pending::Pushed => Ok(()),
            Pending::Archive { tmp, dest } => {
                check_archive_path(&dest)?;
                tmp.commit(&dest)
                    .with_context(|| format!("cannot write {}", dest.display()))
            }
            Pending::Layout { staging, dest, tag } => {
                let state = oci_layout::inspect(&dest)?;
                if state != LayoutState::Layout {
                    // New (or empty) directory: one rename publishes the whole layout.
                    match std::fs::rename(staging.path(), &dest) {
                        Ok(()) => {
                            staging.dir.published();
                            return Ok(());
                        }
                        // EXDEV: an empty mount point; ENOTEMPTY/EEXIST: a concurrent
                        // build got there first. Both: add to it like to a layout.
                        Err(_) if state == LayoutState::EmptyDir || dest.exists() => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("cannot move the image into {}", dest.display())
                            })
                        }
                    }
                }
                oci_layout::update(&dest, staging.path(), &tag)
                    .with_context(|| format!("cannot update the OCI layout {}", dest.display()))
            }
        }
    }
}

/// Makes the image and its side outputs visible together, inside one commit section
/// (a signal waits until all renames are done).
pub fn commit_all(pending: Pending, side: Vec<SideOutput>) -> Result<()> {
    let _commit = crate::scratch::commit_section();
    pending.commit()?;
    for s in side {
        s.commit()?;
    }
    Ok(())
}

/// Packs a directory into a deterministic tar in a temp file beside `dest`.
pub fn pack_dir(src: &Path, dest: &Path, epoch: u64) -> Result<ScratchFile> {
    let tmp = ScratchFile::beside(dest)
        .with_context(|| format!("cannot create a temp file beside {}", dest.display()))?;
    let ctx = || format!("cannot write {}", dest.display());
    {
        let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp.file()));
        for e in walkdir::WalkDir::new(src).min_depth(1).sort_by_file_name() {
            let e = e?;
            let rel = e.path().strip_prefix(src)?.to_string_lossy().into_owned();
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(epoch);
            if e.file_type().is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{rel}/"), std::io::empty())
                    .with_context(ctx)?;
            } else {
                let f = File::open(e.path())?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(f.metadata()?.len());
                b.append_data(&mut h, &rel, f).with_context(ctx)?;
            }
        }
        b.into_inner()
            .with_context(ctx)?
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(ctx)?;
    }
    Ok(tmp)
}
