//! Sinks: every build is first assembled as an OCI layout in a temporary sibling
//! of the output, then published atomically (renamed into place, or packed into an
//! archive that is renamed into place). A failed build leaves nothing behind.
use crate::digest::{digest_hex, sha256_digest, VerifyingReader};
use crate::imageref::ImageRef;
use crate::source::{LayerBlob, MT_OCI_INDEX, MT_OCI_MANIFEST};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct Staging {
    pub dir: tempfile::TempDir,
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Staging {
    /// A staging layout next to the output, so the final rename stays on one filesystem.
    pub fn for_output(out: &ImageRef) -> Result<Staging> {
        let parent = match out {
            ImageRef::OciDir { path, .. }
            | ImageRef::OciArchive { path, .. }
            | ImageRef::DockerArchive { path, .. } => parent_dir(path),
            ImageRef::Tar(_) => {
                bail!("tar: is a base format only; write oci:, oci-archive: or docker-archive:")
            }
            ImageRef::Registry(_) => std::env::temp_dir(),
        };
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(".nemoclaw-build-")
            .tempdir_in(&parent)
            .with_context(|| {
                format!("cannot create a staging directory in {}", parent.display())
            })?;
        std::fs::create_dir_all(dir.path().join("blobs/sha256"))?;
        Ok(Staging { dir })
    }
    pub fn blobs(&self) -> PathBuf {
        self.dir.path().join("blobs/sha256")
    }
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let d = sha256_digest(bytes);
        std::fs::write(self.blobs().join(digest_hex(&d)?), bytes)?;
        Ok(d)
    }
    /// Copies a base layer blob as-is, verifying its digest while copying.
    /// `verified`: the blob was already read to the end against its digest.
    pub fn copy_layer(&self, l: &LayerBlob, verified: bool) -> Result<()> {
        let digest = l
            .digest
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("{}: no digest to reuse", l.label))?;
        let dst = self.blobs().join(digest_hex(digest)?);
        if dst.exists() {
            return Ok(());
        }
        // A whole-file blob whose digest the index pass already verified: link it
        // instead of reading it a second time (copy when linking is not possible).
        let whole = l.location.offset == 0
            && std::fs::metadata(&l.location.path).is_ok_and(|m| m.len() == l.location.len);
        if whole && verified && std::fs::hard_link(&l.location.path, &dst).is_ok() {
            return Ok(());
        }
        let tmp = self.blobs().join(format!(".copy-{}", digest_hex(digest)?));
        let mut r = VerifyingReader::new(l.location.open()?, digest, Some(l.size), &l.label);
        let mut w = BufWriter::new(File::create(&tmp)?);
        std::io::copy(&mut r, &mut w).with_context(|| format!("cannot copy {}", l.label))?;
        w.flush()?;
        std::fs::rename(&tmp, &dst)?;
        Ok(())
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes oci-layout and index.json for one manifest.
pub fn write_layout_index(
    dir: &Path,
    manifest_digest: &str,
    manifest_size: u64,
    tag: Option<&str>,
) -> Result<()> {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut desc =
        json!({"mediaType": MT_OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size});
    if let Some(t) = tag {
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": t});
    }
    let index = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [desc]});
    std::fs::write(dir.join("index.json"), crate::image::canonical(&index))?;
    Ok(())
}

/// Publishes the staged layout to `out`. `manifest` is the manifest JSON already in blobs.
pub fn publish(
    staging: Staging,
    out: &ImageRef,
    manifest_digest: &str,
    manifest: &Value,
    manifest_size: u64,
    epoch: u64,
    registry: &crate::registry::RegistryOptions,
) -> Result<()> {
    match out {
        ImageRef::Registry(reference) => {
            write_layout_index(staging.path(), manifest_digest, manifest_size, None)?;
            let bytes = std::fs::read(staging.blobs().join(digest_hex(manifest_digest)?))?;
            let pushed = crate::registry::push(
                staging.path(),
                reference,
                manifest_digest,
                &bytes,
                registry,
            )?;
            if pushed != manifest_digest {
                bail!("registry://{reference} reports manifest digest {pushed}, but we built {manifest_digest}");
            }
            Ok(())
        }
        ImageRef::OciDir { path, tag } => {
            write_layout_index(
                staging.path(),
                manifest_digest,
                manifest_size,
                Some(tag.as_deref().unwrap_or("latest")),
            )?;
            let staged = staging.dir.keep();
            replace_path(&staged, path)
        }
        ImageRef::OciArchive { path, tag } => {
            write_layout_index(
                staging.path(),
                manifest_digest,
                manifest_size,
                Some(tag.as_deref().unwrap_or("latest")),
            )?;
            pack_dir(staging.path(), path, epoch)
        }
        ImageRef::DockerArchive { path, tag } => {
            // manifest.json only: with an OCI index.json beside it, podman loads the
            // archive as OCI and drops the tag.
            let config = manifest
                .pointer("/config/digest")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let layers: Vec<String> = manifest
                .get("layers")
                .and_then(|l| l.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.get("digest").and_then(|x| x.as_str()))
                        .map(|d| format!("blobs/sha256/{}", d.trim_start_matches("sha256:")))
                        .collect()
                })
                .unwrap_or_default();
            let repo_tag = match tag {
                Some(t) if t.contains(':') || t.contains('/') => t.clone(),
                Some(t) => format!("localhost/nemoclaw:{t}"),
                None => "localhost/nemoclaw:latest".into(),
            };
            let mf = json!([{"Config": format!("blobs/sha256/{}", config.trim_start_matches("sha256:")), "RepoTags": [repo_tag], "Layers": layers}]);
            std::fs::write(
                staging.path().join("manifest.json"),
                crate::image::canonical(&mf),
            )?;
            pack_dir(staging.path(), path, epoch)
        }
        ImageRef::Tar(_) => bail!("cannot publish to {out}: tar: is a base format only"),
    }
}

/// Renames `staged` over `dest` (moving an existing dest aside first, then deleting it).
fn replace_path(staged: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        if dest.is_dir()
            && !dest.join("oci-layout").exists()
            && std::fs::read_dir(dest)?.next().is_some()
        {
            let _ = std::fs::remove_dir_all(staged);
            bail!(
                "output {} exists and is not an OCI layout; refusing to replace it",
                dest.display()
            );
        }
        let old = parent_dir(dest).join(format!(".nemoclaw-build-old-{}", std::process::id()));
        std::fs::rename(dest, &old)?;
        if let Err(e) = std::fs::rename(staged, dest) {
            let _ = std::fs::rename(&old, dest);
            return Err(e.into());
        }
        if old.is_dir() {
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::remove_file(&old)?;
        }
        return Ok(());
    }
    std::fs::rename(staged, dest)
        .with_context(|| format!("cannot move the image into {}", dest.display()))
}

/// Packs a directory into a deterministic tar at `dest` (temp file + rename).
pub fn pack_dir(src: &Path, dest: &Path, epoch: u64) -> Result<()> {
    let parent = parent_dir(dest);
    let tmp = tempfile::Builder::new()
        .prefix(".nemoclaw-build-")
        .tempfile_in(&parent)?;
    {
        let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
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
                b.append_data(&mut h, format!("{rel}/"), std::io::empty())?;
            } else {
                let f = File::open(e.path())?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(f.metadata()?.len());
                b.append_data(&mut h, &rel, f)?;
            }
        }
        b.into_inner()?.flush()?;
    }
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}
