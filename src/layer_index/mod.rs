//! The per-layer index (issue 17.3): what reading one layer teaches the rootfs model,
//! kept as a record so a base seen before is never downloaded or inflated again in
//! whiteout mode (which ships base layers as they are and needs only the model).
//!
//! A record is zstd-compressed JSON lines, one canonical object (sorted keys) each:
//! `{"begin":{..}}` naming the format, the layer's compressed digest, its compression
//! and the capture policy; one `{"entry":{..}}` per tar entry in stream order (the
//! header fields, and for regular files the ELF flag and machine, plus digest and
//! bytes of what [`crate::rootfs::default_capture`] keeps: `/etc`, the dpkg
//! database, ...); `{"end":{..}}` with the diff_id and the entry count. Replaying it
//! through [`Rootfs::apply_tar`] builds the same model as reading the layer: the
//! model rules (whiteouts, parents, hardlinks) run on both. File contents the record
//! does not hold stay [`crate::rootfs::Content::Layer`], exactly as after a read, so
//! a step that needs them makes the build fetch that layer (never a guess).
pub mod store;
#[cfg(test)]
pub(crate) mod tests;

use crate::digest::{HashingReader, VerifyingReader};
use crate::rootfs::{
    default_capture, normalize, EntrySource, IndexOptions, Kind, LayerStats, Node, Rootfs,
};
use crate::source::{Compression, ThreadedDecoder};
use crate::tarread::{TarEntry, TarReader};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::sync::Arc;

/// The record format; part of every cache key.
pub const FORMAT: &str = "nemoclaw-layer-index/1";
/// Which file contents a record holds. Bump when [`default_capture`] changes: records
/// of another policy are not found under the new key.
pub const CAPTURE: &str = "default-capture/1";
/// Media type of a record blob (and artifactType of its registry manifest).
pub const MT_LAYER_INDEX: &str = "application/vnd.nemoclaw.layer-index.v1+zstd";
/// A record larger than this (compressed) is refused: the model of a layer fits.
pub const MAX_RECORD_BYTES: u64 = 512 << 20;

/// The cache key of the record of the layer with compressed digest `layer`.
pub fn key(layer: &str) -> String {
    format!("{FORMAT}|{CAPTURE}|{layer}")
}

/// The options every record is made and replayed with (captures, no full hashing).
pub fn index_options(max_entries: u64) -> IndexOptions {
    IndexOptions {
        capture: default_capture,
        hash_contents: false,
        // records hold those bytes themselves (`held_worthy`), outside the model
        capture_special: false,
        max_captured: crate::rootfs::MAX_CAPTURED,
        max_entries,
    }
}

/// One line of a record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Line {
    Begin(Begin),
    Entry(Box<Rec>),
    End(End),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Begin {
    capture: String,
    compression: String,
    format: String,
}

/// Last: what is known once the layer was read (a tarball's digest is learned then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    diff_id: String,
    entries: u64,
    layer: String,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One tar entry and what its data said. Fields in sorted order (canonical JSON);
/// empty ones are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rec {
    /// ELF `e_machine`.
    #[serde(default, skip_serializing_if = "is_zero")]
    a: u16,
    /// Bytes held for a rewrite, not put in the model (base64): see [`held_worthy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<String>,
    /// Captured bytes (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    d: (u32, u32),
    /// Starts with the ELF magic.
    #[serde(default, skip_serializing_if = "is_zero")]
    e: bool,
    g: u64,
    /// sha256 (hex) of captured bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<String>,
    k: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    m: u32,
    /// The name as stored, when it is not the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    p: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    s: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    t: u64,
    u: u64,
    /// Extended attributes, values base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    x: BTreeMap<String, String>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

fn compression_of(s: &str) -> Option<Compression> {
    match s {
        "none" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// Files a whiteout build rewrites into its upper layer whatever the recipe's file
/// operations: setid and file-capability files (`[sanitize]` clears those bits), so
/// their bytes are held by the record and the layer need not be fetched for them.
/// Capped in size: a larger one makes the build fetch its layer (the fallback).
fn held_worthy(e: &TarEntry) -> bool {
    e.kind == Kind::File
        && e.size <= MAX_HELD
        && crate::rootfs::is_special(e.mode, &e.xattrs)
        && !default_capture(&e.path, e.size)
}
const MAX_HELD: u64 = crate::rootfs::MAX_SPECIAL_CAPTURE;

impl Rec {
    fn of(e: &TarEntry, node: &Node, held: Option<&[u8]>) -> Rec {
        Rec {
            a: node.machine(),
            b: held.map(|b| b64().encode(b)),
            c: match node.content() {
                Some(crate::rootfs::Content::Bytes(b)) => Some(b64().encode(&b[..])),
                _ => None,
            },
            d: e.dev,
            e: node.elf(),
            g: e.gid,
            h: node.sha256_bytes().map(hex::encode),
            k: e.kind,
            l: e.link.clone(),
            m: e.mode,
            n: (e.name != e.path).then(|| e.name.clone()),
            p: e.path.clone(),
            s: e.size,
            t: e.mtime,
            u: e.uid,
            x: e.xattrs
                .iter()
                .map(|(k, v)| (k.clone(), b64().encode(v)))
                .collect(),
        }
    }
}

/// A record read back and checked: every path normalized, every captured file's
/// bytes matching its size and digest, capture as the policy says, counts right.
#[derive(Debug)]
pub struct LayerRecord {
    /// The layer's compressed digest.
    pub layer: String,
    pub compression: Compression,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    entries: Vec<(TarEntry, Facts)>,
    /// Bytes of held files by path (see [`held_worthy`]); a later duplicate wins.
    pub held: BTreeMap<String, Arc<Vec<u8>>>,
}

/// What a regular file's data said.
#[derive(Debug, Default)]
struct Facts {
    elf: bool,
    machine: u16,
    sha256: Option<[u8; 32]>,
    bytes: Option<Arc<Vec<u8>>>,
}

impl LayerRecord {
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Parses and checks a record blob (compressed). Any fault is an error naming it:
    /// the caller ignores the record and reads the layer instead.
    pub fn parse(blob: &[u8]) -> Result<LayerRecord> {
        let dec = zstd::stream::read::Decoder::new(blob).context("not a zstd stream")?;
        let mut lines = std::io::BufReader::new(dec).lines();
        let mut next = || -> Result<Option<Line>> {
            match lines.next() {
                None => Ok(None),
                Some(l) => {
                    let l = l.context("cannot decompress")?;
                    Ok(Some(serde_json::from_str(&l).context("malformed line")?))
                }
            }
        };
        let Some(Line::Begin(begin)) = next()? else {
            bail!("does not start with a begin line");
        };
        if begin.format != FORMAT || begin.capture != CAPTURE {
            bail!(
                "format {} / {}, expected {FORMAT} / {CAPTURE}",
                begin.format,
                begin.capture
            );
        }
        let compression = compression_of(&begin.compression)
            .ok_or_else(|| anyhow!("unknown compression {}", begin.compression))?;
        let mut entries = Vec::new();
        let mut held = BTreeMap::new();
        loop {
            match next()? {
                Some(Line::Entry(r)) => {
                    let (e, f, h) =
                        check(*r).with_context(|| format!("entry {}", entries.len()))?;
                    if let Some(h) = h {
                        held.insert(e.path.clone(), Arc::new(h));
                    }
                    entries.push((e, f));
                }
                Some(Line::End(end)) => {
                    if next()?.is_some() {
                        bail!("lines after the end line");
                    }
                    if end.entries != entries.len() as u64 {
                        bail!(
                            "the end line counts {} entries, the record has {}",
                            end.entries,
                            entries.len()
                        );
                    }
                    crate::digest::digest_hex(&end.diff_id)?;
                    crate::digest::digest_hex(&end.layer)?;
                    return Ok(LayerRecord {
                        layer: end.layer,
                        compression,
                        diff_id: end.diff_id,
                        entries,
                        held,
                    });
                }
                Some(Line::Begin(_)) => bail!("a second begin line"),
                None => bail!("truncated (no end line)"),
            }
        }
    }

    /// Applies the layer to `fs` as layer `layer` (what [`Rootfs::apply_tar`] does with
    /// its tar), the model rules and their errors included.
    pub fn replay(
        &self,
        fs: &mut Rootfs,
        layer: usize,
        label: &str,
        max_entries: u64,
    ) -> Result<LayerStats> {
        let src = Replay {
            it: self.entries.iter(),
            cur: None,
        };
        fs.apply_tar(layer, label, src, &index_options(max_entries))
    }
}

/// Turns a parsed line into an entry, refusing what no tar read would have given.
fn check(r: Rec) -> Result<(TarEntry, Facts, Option<Vec<u8>>)> {
    let kind = r.k;
    if normalize(&r.p)? != r.p {
        bail!("path '{}' is not in model form", r.p);
    }
    if kind != Kind::File && r.s != 0 {
        bail!("'{}': a {kind:?} with {} bytes of data", r.p, r.s);
    }
    let bytes =
        r.c.as_deref()
            .map(|c| b64().decode(c))
            .transpose()
            .with_context(|| format!("'{}': captured bytes are not base64", r.p))?;
    let sha256: Option<[u8; 32]> =
        r.h.as_deref()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| anyhow!("'{}': bad digest", r.p))
            })
            .transpose()?;
    // A file is captured exactly when the policy says; its bytes match its header.
    let captured = kind == Kind::File && default_capture(&r.p, r.s);
    if captured != bytes.is_some() || bytes.is_some() != sha256.is_some() {
        bail!(
            "'{}': captured bytes {} where the capture policy says {}",
            r.p,
            if bytes.is_some() { "present" } else { "absent" },
            captured
        );
    }
    if let (Some(b), Some(h)) = (&bytes, &sha256) {
        if b.len() as u64 != r.s || <[u8; 32]>::from(sha2::Sha256::digest(b)) != *h {
            bail!("'{}': captured bytes do not match size or digest", r.p);
        }
    }
    let xattrs =
        r.x.iter()
            .map(|(k, v)| Ok((k.clone(), b64().decode(v)?)))
            .collect::<Result<BTreeMap<_, _>>>()
            .with_context(|| format!("'{}': xattr values are not base64", r.p))?;
    let entry = TarEntry {
        name: r.n.unwrap_or_else(|| r.p.clone()),
        path: r.p,
        kind,
        mode: r.m & 0o7777,
        uid: r.u,
        gid: r.g,
        mtime: r.t,
        size: r.s,
        link: r.l,
        xattrs,
        dev: r.d,
    };
    let held =
        r.b.as_deref()
            .map(|b| b64().decode(b))
            .transpose()
            .with_context(|| format!("'{}': held bytes are not base64", entry.path))?;
    if held.is_some() != held_worthy(&entry)
        || held.as_ref().is_some_and(|h| h.len() as u64 != entry.size)
    {
        bail!(
            "'{}': held bytes {} where the policy says {}",
            entry.path,
            if held.is_some() { "present" } else { "absent" },
            held_worthy(&entry)
        );
    }
    let facts = Facts {
        elf: r.e,
        machine: r.a,
        sha256,
        bytes: bytes.map(Arc::new),
    };
    Ok((entry, facts, held))
}

/// A record's entries as an [`EntrySource`].
struct Replay<'a> {
    it: std::slice::Iter<'a, (TarEntry, Facts)>,
    cur: Option<&'a Facts>,
}

impl EntrySource for Replay<'_> {
    fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        Ok(self.it.next().map(|(e, f)| {
            self.cur = Some(f);
            e.clone()
        }))
    }
    fn file_content(
        &mut self,
        node: &mut crate::rootfs::FileData,
        _key: &str,
        _name: &str,
        _label: &str,
        _opts: &IndexOptions,
    ) -> Result<()> {
        let f = self
            .cur
            .ok_or_else(|| anyhow!("file content asked before any entry"))?;
        node.elf = f.elf;
        node.machine = f.machine;
        node.sha256 = f.sha256.map(Box::new);
        if let Some(b) = &f.bytes {
            node.content = crate::rootfs::Content::Bytes(b.clone());
        }
        Ok(())
    }
    fn finish_entries(self) -> Result<()> {
        Ok(())
    }
}

/// What reading one layer's stored bytes gave: its record blob and digests.
pub struct Scanned {
    /// The record, compressed (what is cached and pushed).
    pub blob: Vec<u8>,
    /// Digest of the stored bytes as read (verified when the caller gave one).
    pub digest: String,
    pub diff_id: String,
    pub entries: u64,
}

/// Reads one layer's stored bytes once (inflating on a thread of its own) into its
/// record. With `digest`, the bytes are verified against it (and `size`) before a
/// record is returned: a mismatch is an error and nothing comes out.
pub fn scan(
    raw: Box<dyn Read + Send>,
    digest: Option<&str>,
    size: Option<u64>,
    label: &str,
    max_entries: u64,
    bar: crate::progress::Task,
) -> Result<Scanned> {
    let mut raw = std::io::BufReader::with_capacity(256 * 1024, raw);
    let head = raw
        .fill_buf()
        .with_context(|| format!("{label}: cannot read"))?;
    let compression = crate::source::sniff_compression(head);
    let raw: Box<dyn Read + Send> = match digest {
        Some(d) => Box::new(VerifyingReader::new(raw, d, size, label)),
        None => Box::new(raw),
    };
    let mut dec = ThreadedDecoder::spawn_raw(raw, compression, bar, None);
    let mut tar_hash = HashingReader::new(&mut dec);
    let opts = index_options(max_entries);
    let mut tar = TarReader::new(&mut tar_hash, label).max_entries(max_entries);
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
    let begin = Begin {
        capture: CAPTURE.into(),
        compression: compression_name(compression).into(),
        format: FORMAT.into(),
    };
    write_line(&mut z, &Line::Begin(begin))?;
    let mut entries = 0u64;
    while let Some(e) = tar.next_entry()? {
        let mut node = e.node(0);
        let mut held = None;
        if let Some(f) = node.as_file_mut() {
            if held_worthy(&e) {
                let mut b = Vec::with_capacity(e.size as usize);
                tar.read_to_end(&mut b)
                    .with_context(|| format!("{label}: entry '{}': truncated data", e.name))?;
                Rootfs::read_content(f, &e.path, &e.name, &mut &b[..], label, &opts)?;
                held = Some(b);
            } else {
                Rootfs::read_content(f, &e.path, &e.name, &mut tar, label, &opts)?;
            }
        }
        let rec = Rec::of(&e, &node, held.as_deref());
        write_line(&mut z, &Line::Entry(Box::new(rec)))?;
        entries += 1;
    }
    tar.finish()?;
    let (diff_id, _) = tar_hash.finish();
    let raw_digest = dec.finish().with_context(|| label.to_string())?;
    let end = End {
        diff_id: diff_id.clone(),
        entries,
        layer: raw_digest.clone(),
    };
    write_line(&mut z, &Line::End(end))?;
    Ok(Scanned {
        blob: z.finish()?,
        digest: raw_digest,
        diff_id,
        entries,
    })
}

fn write_line(w: &mut impl Write, l: &Line) -> Result<()> {
    serde_json::to_writer(&mut *w, l)?;
    w.write_all(b"\n")?;
    Ok(())
}
