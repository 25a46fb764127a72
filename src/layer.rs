//! Deterministic layer writer: tar entries built by hand (the tar crate's defaults
//! are wrong for a rootfs), hashed uncompressed (diff_id) and compressed (digest)
//! in the same pass, written to a temporary blob renamed to its digest.
use crate::compress::{Compressor, Settings};
use crate::digest::{digest_hex, HashingWriter};
use crate::rootfs::{Kind, Node};
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerOutput {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    pub media_type: String,
    #[serde(skip)]
    pub path: PathBuf,
    pub entries: u64,
}

type Sink = HashingWriter<Compressor<HashingWriter<BufWriter<File>>>>;

pub struct LayerWriter {
    tar: tar::Builder<Sink>,
    tmp: PathBuf,
    blobs: PathBuf,
    media_type: String,
    epoch: u64,
    entries: u64,
}

impl LayerWriter {
    /// `blobs` is the `blobs/sha256` directory of the output layout.
    pub fn create(blobs: &Path, settings: &Settings, epoch: u64) -> Result<LayerWriter> {
        let (tmp, comp) = open_sink(blobs, settings)?;
        let mut tar = tar::Builder::new(HashingWriter::new(comp));
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        Ok(LayerWriter {
            tar,
            tmp,
            blobs: blobs.to_path_buf(),
            media_type: settings.media_type().to_string(),
            epoch,
            entries: 0,
        })
    }

    fn header(
        &self,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        size: u64,
    ) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime.min(self.epoch));
        h.set_size(size);
        h
    }

    /// Appends one node at `path` (model key form). `content` is read for regular files.
    pub fn append(&mut self, path: &str, node: &Node, content: &mut dyn Read) -> Result<()> {
        let mtime = if node.layer().is_some() && !node.modified {
            node.mtime
        } else {
            self.epoch
        };
        if !node.xattrs().is_empty() {
            let pax: Vec<(String, &[u8])> = node
                .xattrs()
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let ctx = || format!("cannot write /{path} into the layer");
        match node.kind() {
            Kind::Dir => {
                let mut h = self.header(
                    tar::EntryType::Directory,
                    node.mode,
                    node.uid,
                    node.gid,
                    mtime,
                    0,
                );
                self.tar
                    .append_data(&mut h, format!("{path}/"), std::io::empty())
                    .with_context(ctx)?;
            }
            Kind::File => {
                let mut h = self.header(
                    tar::EntryType::Regular,
                    node.mode,
                    node.uid,
                    node.gid,
                    mtime,
                    node.size(),
                );
                let mut limited = content.take(node.size());
                self.tar
                    .append_data(&mut h, path, &mut limited)
                    .with_context(ctx)?;
            }
            Kind::Symlink | Kind::Hardlink => {
                let et = if node.kind() == Kind::Symlink {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mode = if node.kind() == Kind::Symlink {
                    0o777
                } else {
                    node.mode
                };
                let mut h = self.header(et, mode, node.uid, node.gid, mtime, 0);
                let target = node.link().unwrap_or_default();
                self.tar
                    .append_link(&mut h, path, target)
                    .with_context(ctx)?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let et = match node.kind() {
                    Kind::Char => tar::EntryType::Char,
                    Kind::Block => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = self.header(et, node.mode, node.uid, node.gid, mtime, 0);
                h.set_device_major(node.dev().0)?;
                h.set_device_minor(node.dev().1)?;
                self.tar
                    .append_data(&mut h, path, std::io::empty())
                    .with_context(ctx)?;
            }
        }
        self.entries += 1;
        Ok(())
    }

    /// An OCI whiteout hiding `path` of a lower layer.
    pub fn append_whiteout(&mut self, path: &str) -> Result<()> {
        let (dir, name) = match path.rfind('/') {
            Some(i) => (&path[..i + 1], &path[i + 1..]),
            None => ("", path),
        };
        let mut h = self.header(tar::EntryType::Regular, 0o644, 0, 0, self.epoch, 0);
        self.tar
            .append_data(&mut h, format!("{dir}.wh.{name}"), std::io::empty())?;
        self.entries += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<LayerOutput> {
        let LayerWriter {
            tar,
            tmp,
            blobs,
            media_type,
            entries,
            ..
        } = self;
        seal(tar.into_inner()?, &tmp, &blobs, media_type, entries)
    }
}

/// A temp file in `blobs` behind the compressor and the digest hasher.
fn open_sink(
    blobs: &Path,
    settings: &Settings,
) -> Result<(PathBuf, Compressor<HashingWriter<BufWriter<File>>>)> {
    let tmp = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(blobs)?
        .into_temp_path()
        .keep()?;
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let comp = Compressor::new(
        HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
        settings,
    )?;
    Ok((tmp, comp))
}

/// Finishes compression and both hashes, and renames the temp file to its digest.
fn seal(
    uncompressed: Sink,
    tmp: &Path,
    blobs: &Path,
    media_type: String,
    entries: u64,
) -> Result<LayerOutput> {
    let (comp, diff_id, _) = uncompressed.finish();
    let (mut buf, digest, size) = comp.finish()?.finish();
    buf.flush()?;
    let path = blobs.join(digest_hex(&digest)?);
    std::fs::rename(tmp, &path)?;
    Ok(LayerOutput {
        digest,
        size,
        diff_id,
        media_type,
        path,
        entries,
    })
}

/// Copies raw bytes (e.g. an uncompressed base tarball) into a compressed blob.
pub fn compress_blob(blobs: &Path, settings: &Settings, src: &mut dyn Read) -> Result<LayerOutput> {
    let (tmp, comp) = open_sink(blobs, settings)?;
    let mut w = HashingWriter::new(comp);
    std::io::copy(src, &mut w)?;
    seal(w, &tmp, blobs, settings.media_type().to_string(), 0)
}
