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

#[cfg(test)]
mod tests {
    //! The writer's header choices, read back from an uncompressed layer.
    use super::*;
    use crate::compress::Algorithm;
    use crate::rootfs::{Body, Content, FileData};

    const EPOCH: u64 = 1000;

    /// One raw tar entry: type, path, mode, mtime, link target, device numbers.
    #[derive(Debug, PartialEq)]
    struct Raw {
        kind: u8,
        path: String,
        mode: u32,
        mtime: u64,
        link: Option<String>,
        dev: (u32, u32),
    }

    fn settings() -> Settings {
        Settings::new(Algorithm::None, None, Some(1)).unwrap()
    }

    /// Writes `nodes` (and whiteouts, paths starting with `-`), returns the output
    /// its raw entries (pax headers included) and the layer bytes.
    fn write(nodes: &[(&str, Node)]) -> (LayerOutput, Vec<Raw>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LayerWriter::create(dir.path(), &settings(), EPOCH).unwrap();
        for (path, node) in nodes {
            match path.strip_prefix('-') {
                Some(p) => w.append_whiteout(p).unwrap(),
                None => {
                    let bytes = match node.content() {
                        Some(Content::Bytes(b)) => b.as_slice().to_vec(),
                        _ => Vec::new(),
                    };
                    w.append(path, node, &mut bytes.as_slice()).unwrap();
                }
            }
        }
        let out = w.finish().unwrap();
        let data = std::fs::read(&out.path).unwrap();
        let mut ar = tar::Archive::new(data.as_slice());
        let mut raws = Vec::new();
        for e in ar.entries().unwrap().raw(true) {
            let e = e.unwrap();
            let h = e.header();
            raws.push(Raw {
                kind: h.entry_type().as_byte(),
                path: String::from_utf8_lossy(&h.path_bytes()).into_owned(),
                // A pax header sets neither (0 then); every asserted entry does.
                mode: h.mode().unwrap_or(0),
                mtime: h.mtime().unwrap_or(0),
                link: h
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
                // Only device entries carry numbers; others leave the fields empty.
                dev: match h.entry_type() {
                    tar::EntryType::Char | tar::EntryType::Block => (
                        h.device_major().unwrap().unwrap(),
                        h.device_minor().unwrap().unwrap(),
                    ),
                    _ => (0, 0),
                },
            });
        }
        (out, raws, data)
    }

    fn raw(kind: u8, path: &str, mode: u32, mtime: u64) -> Raw {
        Raw {
            kind,
            path: path.into(),
            mode,
            mtime,
            link: None,
            dev: (0, 0),
        }
    }

    #[test]
    fn headers_keep_permission_bits_and_clamp_or_keep_mtimes() {
        // A new node: epoch, whatever its mtime.
        let mut added = Node::file(0o104755, 0, 0, b"new".to_vec());
        added.mtime = 5;
        added.modified = false;
        // An untouched base node keeps its own mtime...
        let mut base = Node::file(0o644, 0, 0, b"base".to_vec());
        base.set_layer(Some(0));
        base.modified = false;
        base.mtime = 7;
        // ...a modified one gets the epoch; a later-than-epoch one is clamped.
        let mut changed = Node::dir(0o755, 0, 0);
        changed.set_layer(Some(0));
        changed.mtime = 9;
        let mut future = Node::dir(0o700, 0, 0);
        future.set_layer(Some(0));
        future.modified = false;
        future.mtime = EPOCH + 50;
        let (out, raws, _) = write(&[
            ("usr/bin/new", added),
            ("etc/base", base),
            ("etc", changed),
            ("future", future),
        ]);
        assert_eq!(
            raws,
            vec![
                raw(b'0', "usr/bin/new", 0o4755, EPOCH),
                raw(b'0', "etc/base", 0o644, 7),
                raw(b'5', "etc/", 0o755, EPOCH),
                raw(b'5', "future/", 0o700, EPOCH),
            ]
        );
        assert_eq!(out.entries, 4);
    }

    #[test]
    fn links_devices_and_whiteouts() {
        let hard = Node::new(Body::hardlink("bin/a"), 0o640, 0, 0);
        let chr = Node::new(Body::Char((1, 3)), 0o620, 0, 0);
        let blk = Node::new(Body::Block((8, 1)), 0o660, 0, 0);
        let fifo = Node::new(Body::Fifo, 0o600, 0, 0);
        let (out, raws, _) = write(&[
            ("bin/sh", Node::symlink("dash")),
            ("bin/b", hard),
            ("dev/null", chr),
            ("dev/sda1", blk),
            ("run/fifo", fifo),
            ("-etc/gone", Node::dir(0, 0, 0)),
            ("-top", Node::dir(0, 0, 0)),
        ]);
        let linked = |kind, path: &str, mode, target: &str| Raw {
            link: Some(target.into()),
            ..raw(kind, path, mode, EPOCH)
        };
        let dev = |kind, path: &str, mode, dev| Raw {
            dev,
            ..raw(kind, path, mode, EPOCH)
        };
        assert_eq!(
            raws,
            vec![
                linked(b'2', "bin/sh", 0o777, "dash"),
                linked(b'1', "bin/b", 0o640, "bin/a"),
                dev(b'3', "dev/null", 0o620, (1, 3)),
                dev(b'4', "dev/sda1", 0o660, (8, 1)),
                raw(b'6', "run/fifo", 0o600, EPOCH),
                raw(b'0', "etc/.wh.gone", 0o644, EPOCH),
                raw(b'0', ".wh.top", 0o644, EPOCH),
            ]
        );
        assert_eq!(out.entries, 7);
    }

    #[test]
    fn xattrs_become_one_pax_header_only_where_set() {
        let mut capped = Node::file(0o755, 0, 0, b"x".to_vec());
        capped.insert_xattr("security.capability", b"\x01\x02".to_vec());
        let (out, raws, data) = write(&[
            ("plain", Node::file(0o644, 0, 0, b"p".to_vec())),
            ("capped", capped),
        ]);
        let kinds: Vec<u8> = raws.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, b"0x0".to_vec(), "{raws:?}");
        let mut ar = tar::Archive::new(data.as_slice());
        let mut e = ar.entries().unwrap().nth(1).unwrap().unwrap();
        let pax: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_string(), x.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(
            pax,
            vec![("SCHILY.xattr.security.capability".into(), vec![1, 2])]
        );
        assert_eq!(out.entries, 2, "a pax header is not an entry");
    }

    #[test]
    fn file_content_is_cut_at_the_node_size_and_the_blob_named_by_digest() {
        let node = Node::new(Body::File(FileData::new(Content::layer(0, 2))), 0o644, 0, 0);
        let dir = tempfile::tempdir().unwrap();
        let mut w = LayerWriter::create(dir.path(), &settings(), EPOCH).unwrap();
        w.append("f", &node, &mut &b"abcdef"[..]).unwrap();
        let out = w.finish().unwrap();
        let data = std::fs::read(&out.path).unwrap();
        let digest = crate::testutil::digest(&data);
        assert_eq!(out.digest, digest);
        assert_eq!(out.diff_id, digest, "uncompressed: diff_id is the digest");
        assert_eq!(out.size, data.len() as u64);
        assert_eq!(out.path, dir.path().join(digest_hex(&digest).unwrap()));
        assert_eq!(out.media_type, settings().media_type());
        let mut ar = tar::Archive::new(data.as_slice());
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        assert_eq!(body, b"ab");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temp blob was renamed, not copied");
    }

    #[test]
    fn compress_blob_hashes_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let gz = Settings::new(Algorithm::Gzip, Some(1), Some(1)).unwrap();
        let src = b"some tar bytes".repeat(100);
        let out = compress_blob(dir.path(), &gz, &mut src.as_slice()).unwrap();
        let blob = std::fs::read(&out.path).unwrap();
        assert_eq!(out.digest, crate::testutil::digest(&blob));
        assert_eq!(out.diff_id, crate::testutil::digest(&src));
        assert_eq!(out.size, blob.len() as u64);
        assert_eq!(out.entries, 0);
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(blob.as_slice())
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, src);
    }
}
