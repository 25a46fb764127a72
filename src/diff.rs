//! `diff`: semantic comparison of two images, whatever their transport. Three views:
//! the config JSON (field by field), the layers (same blob / same tar but different
//! compressed bytes / different content, with a per-layer file diff when the layer
//! counts match), and the final whiteout-applied filesystem (path, kind, mode, owner,
//! size, content sha256, link target, xattrs, device, mtime).
//!
//! Exit codes of the subcommand: 0 identical (equal manifest digests, or no semantic
//! difference), 1 different, 2 error (unreadable image, bad reference, ...).
//! Differences in compressed bytes alone do not make images different.
pub mod indexes;

use crate::digest::{digest_hex, sha256_digest};
use crate::imageref::ImageRef;
use crate::index::index_base;
use crate::oci::Manifest;
use crate::progress::Progress;
use crate::record::BuildRecord;
use crate::rootfs::{default_capture, IndexOptions, Kind, Node, Rootfs};
use crate::source::oci::{ArchiveStore, BlobStore};
use crate::source::{open_image, BaseImage, LayerBlob, OpenOptions};
use crate::tarread::TarReader;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

pub use crate::record::RECORD_ANNOTATION;

/// An image opened for comparison: its blobs, manifest (when the transport has one)
/// and, once indexed, the final filesystem with content hashes.
pub struct Loaded {
    pub name: String,
    pub base: BaseImage,
    pub manifest: Option<Manifest>,
    pub fs: Option<Rootfs>,
}

/// What `diff` and `sbom` keep in memory: the usual small files plus npm manifests.
pub fn capture_for_inspection(path: &str, size: u64) -> bool {
    default_capture(path, size)
        || (size <= 16 << 20
            && (path.ends_with("/package.json") || path.ends_with("/package-lock.json")))
}

/// Reads the manifest of an OCI image (dir or archive) by digest.
pub fn read_manifest(r: &ImageRef, digest: &str) -> Result<Option<Manifest>> {
    let rel = format!("blobs/sha256/{}", digest_hex(digest)?);
    let bytes = match r {
        ImageRef::OciDir { path, .. } => std::fs::read(path.join(&rel))
            .with_context(|| format!("cannot read manifest {digest}"))?,
        ImageRef::OciArchive { path, .. } => ArchiveStore::index(path)?
            .locate(&rel)?
            .read_all(16 << 20, "manifest")?,
        _ => return Ok(None),
    };
    if sha256_digest(&bytes) != digest {
        bail!("manifest {digest}: blob does not hash to its digest");
    }
    Ok(Some(Manifest::from_slice(
        &bytes,
        &format!("manifest {digest}"),
    )?))
}

/// The manifest `digest` of a registry image (its annotations hold the build record
/// that `verify` rebuilds from); the registry's bytes are checked against the digest.
fn registry_manifest(
    reference: &str,
    digest: &str,
    opts: &crate::registry::RegistryOptions,
) -> Result<Option<Manifest>> {
    let client = crate::registry::RepoClient::open(reference, opts)?;
    let what = format!("manifest {digest} of registry://{reference}");
    let bytes = client
        .get(digest)?
        .ok_or_else(|| anyhow::anyhow!("{what}: not found"))?;
    Ok(Some(Manifest::from_slice(&bytes, &what)?))
}

/// Opens an image (blobs and manifest only; call [`Loaded::index`] for files).
pub fn open(image: &str, opts: &OpenOptions) -> Result<Loaded> {
    let r = ImageRef::parse(image)?;
    let base = open_image(&r, opts)?;
    let manifest = match (&base.manifest_digest, &r) {
        (Some(d), ImageRef::Registry(reference)) => {
            registry_manifest(reference, d, &opts.registry)?
        }
        (Some(d), _) => read_manifest(&r, d)?,
        (None, _) => None,
    };
    Ok(Loaded {
        name: image.to_string(),
        base,
        manifest,
        fs: None,
    })
}

impl Loaded {
    /// Streams every layer once, hashing file contents.
    pub fn index(&mut self, progress: &Progress) -> Result<&Rootfs> {
        if self.fs.is_none() {
            let opts = IndexOptions {
                capture: capture_for_inspection,
                hash_contents: true,
                ..Default::default()
            };
            self.fs = Some(index_base(&mut self.base, &opts, progress)?);
        }
        Ok(self.fs.as_ref().expect("indexed"))
    }
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.manifest
            .as_ref()
            .map(|m| m.annotations.clone())
            .unwrap_or_default()
    }
    /// The build record of a nemoclaw-build image (None: the image has none); a
    /// record that is there but malformed is an error naming the field.
    pub fn record(&self) -> Result<Option<BuildRecord>> {
        let Some(m) = &self.manifest else {
            return Ok(None);
        };
        m.annotations
            .get(RECORD_ANNOTATION)
            .map(|s| BuildRecord::parse(s).with_context(|| self.name.clone()))
            .transpose()
    }
}

/// The metadata of one path that a comparison looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Meta {
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub sha256: Option<String>,
    pub link: Option<String>,
    pub xattrs: BTreeMap<String, String>,
    pub dev: (u32, u32),
    pub mtime: u64,
}

fn kind_name(k: Kind) -> String {
    format!("{k:?}").to_lowercase()
}

impl From<&Node> for Meta {
    fn from(n: &Node) -> Meta {
        Meta {
            kind: kind_name(n.kind()),
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            size: n.size(),
            sha256: n.sha256(),
            link: n.link().map(str::to_string),
            xattrs: n
                .xattrs()
                .iter()
                .map(|(k, v)| (k.clone(), hex::encode(v)))
                .collect(),
            dev: n.dev(),
            mtime: n.mtime,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    pub path: String,
    /// added | removed | changed
    pub change: String,
    pub kind: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerChange {
    /// 1-based.
    pub index: usize,
    /// same | recompressed | different | only-in-a | only-in-b
    pub status: String,
    pub message: String,
    pub a_digest: Option<String>,
    pub b_digest: Option<String>,
    pub a_diff_id: Option<String>,
    pub b_diff_id: Option<String>,
    /// Entries of this layer's tar that differ (whiteouts included), when both sides have the layer.
    pub files: Vec<FileChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub a: String,
    pub b: String,
    pub a_digest: Option<String>,
    pub b_digest: Option<String>,
    pub identical: bool,
    pub digest_equal: bool,
    pub ignore_timestamps: bool,
    pub config: Vec<FieldChange>,
    pub annotations: Vec<FieldChange>,
    pub layers: Vec<LayerChange>,
    pub files: Vec<FileChange>,
}

/// Why two entries differ; empty when they are the same.
pub fn meta_reasons(a: &Meta, b: &Meta, ignore_timestamps: bool) -> Vec<String> {
    let mut r = Vec::new();
    if a.kind != b.kind {
        r.push(format!("type {} -> {}", a.kind, b.kind));
    }
    if a.sha256.is_some() && b.sha256.is_some() && a.sha256 != b.sha256 {
        r.push("content differs".into());
    }
    if a.size != b.size {
        r.push(format!("size {} -> {}", a.size, b.size));
    }
    if a.mode != b.mode {
        r.push(format!("mode {:04o} -> {:04o}", a.mode, b.mode));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        r.push(format!("owner {}:{} -> {}:{}", a.uid, a.gid, b.uid, b.gid));
    }
    if a.link != b.link {
        r.push(format!(
            "link target {} -> {}",
            a.link.as_deref().unwrap_or("(none)"),
            b.link.as_deref().unwrap_or("(none)")
        ));
    }
    if a.xattrs != b.xattrs {
        let keys: BTreeSet<&String> = a.xattrs.keys().chain(b.xattrs.keys()).collect();
        let mut parts = Vec::new();
        for k in keys {
            match (a.xattrs.get(k), b.xattrs.get(k)) {
                (Some(_), None) => parts.push(format!("-{k}")),
                (None, Some(_)) => parts.push(format!("+{k}")),
                (Some(x), Some(y)) if x != y => parts.push(format!("~{k}")),
                _ => {}
            }
        }
        r.push(format!("xattrs differ ({})", parts.join(", ")));
    }
    if a.dev != b.dev {
        r.push(format!(
            "device {}:{} -> {}:{}",
            a.dev.0, a.dev.1, b.dev.0, b.dev.1
        ));
    }
    if !ignore_timestamps && a.mtime != b.mtime {
        r.push(format!("mtime {} -> {}", a.mtime, b.mtime));
    }
    r
}

/// Compares two path -> metadata maps.
pub fn diff_entries(
    a: &BTreeMap<String, Meta>,
    b: &BTreeMap<String, Meta>,
    ignore_timestamps: bool,
) -> Vec<FileChange> {
    diff_sorted(
        a.iter().map(|(k, m)| (k.as_str(), m)),
        b.iter().map(|(k, m)| (k.as_str(), m)),
        ignore_timestamps,
    )
}

/// Compares two path-sorted streams of entries, one path at a time, so comparing two
/// indexed images needs no second copy of their metadata (issue 16.6).
pub fn diff_sorted<'a, M: Borrow<Meta>>(
    a: impl Iterator<Item = (&'a str, M)>,
    b: impl Iterator<Item = (&'a str, M)>,
    ignore_timestamps: bool,
) -> Vec<FileChange> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut out = Vec::new();
    loop {
        let order = match (a.peek(), b.peek()) {
            (Some((x, _)), Some((y, _))) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        let (x, y) = match order {
            Ordering::Less => (a.next(), None),
            Ordering::Greater => (None, b.next()),
            Ordering::Equal => (a.next(), b.next()),
        };
        match (x, y) {
            (Some((k, x)), None) => {
                let x = x.borrow();
                out.push(FileChange {
                    path: format!("/{k}"),
                    change: "removed".into(),
                    kind: x.kind.clone(),
                    reasons: vec![format!("only in the first image ({})", describe(x))],
                })
            }
            (None, Some((k, y))) => {
                let y = y.borrow();
                out.push(FileChange {
                    path: format!("/{k}"),
                    change: "added".into(),
                    kind: y.kind.clone(),
                    reasons: vec![format!("only in the second image ({})", describe(y))],
                })
            }
            (Some((k, x)), Some((_, y))) => {
                let (x, y) = (x.borrow(), y.borrow());
                let reasons = meta_reasons(x, y, ignore_timestamps);
                if !reasons.is_empty() {
                    out.push(FileChange {
                        path: format!("/{k}"),
                        change: "changed".into(),
                        kind: y.kind.clone(),
                        reasons,
                    });
                }
            }
            (None, None) => break,
        }
    }
    out
}

fn describe(m: &Meta) -> String {
    match m.kind.as_str() {
        "file" => format!("file, {} bytes", m.size),
        "symlink" | "hardlink" => {
            format!("{} -> {}", m.kind, m.link.as_deref().unwrap_or_default())
        }
        k => k.to_string(),
    }
}

pub fn fs_entries(fs: &Rootfs) -> BTreeMap<String, Meta> {
    fs_metas(fs).map(|(k, m)| (k.to_string(), m)).collect()
}

/// The model's paths in order with their metadata, built one at a time.
pub fn fs_metas(fs: &Rootfs) -> impl Iterator<Item = (&str, Meta)> {
    fs.nodes.iter().map(|(k, n)| (&**k, Meta::from(&**n)))
}

/// The raw entries of one layer tar (later duplicates win; whiteouts are entries of kind
/// "whiteout"), with content hashes.
pub fn layer_entries(layer: &LayerBlob) -> Result<BTreeMap<String, Meta>> {
    let mut out = BTreeMap::new();
    let mut tar = TarReader::new(layer.open_tar()?, &layer.label);
    while let Some(e) = tar.next_entry()? {
        if e.path.is_empty() {
            continue;
        }
        let whiteout = crate::rootfs::whiteout_of(&e.path)
            .map_err(|m| anyhow::anyhow!("{}: entry '{}': {m}", layer.label, e.name))?;
        if whiteout.is_some() {
            out.insert(
                e.path,
                Meta {
                    kind: "whiteout".into(),
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    sha256: None,
                    link: None,
                    xattrs: BTreeMap::new(),
                    dev: (0, 0),
                    mtime: 0,
                },
            );
            continue;
        }
        let sha256 = if e.kind == Kind::File {
            let mut hasher = Sha256::new();
            std::io::copy(&mut tar, &mut hasher)
                .with_context(|| format!("{}: entry '{}'", layer.label, e.name))?;
            Some(format!("sha256:{}", hex::encode(hasher.finalize())))
        } else {
            None
        };
        out.insert(
            e.path,
            Meta {
                kind: kind_name(e.kind),
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                sha256,
                link: e.link,
                xattrs: e
                    .xattrs
                    .into_iter()
                    .map(|(k, v)| (k, hex::encode(v)))
                    .collect(),
                dev: e.dev,
                mtime: e.mtime,
            },
        );
    }
    tar.finish()?;
    Ok(out)
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.len() > 160 {
        let mut end = 157;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// Field-level differences of two JSON values. Arrays of strings (Env, Cmd, ...) are
/// reported whole, with the items added and removed.
pub fn json_diff(
    path: &str,
    a: Option<&Value>,
    b: Option<&Value>,
    skip: &dyn Fn(&str) -> bool,
    out: &mut Vec<FieldChange>,
) {
    if skip(path) || a == b {
        return;
    }
    let child = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                json_diff(&child(k), x.get(k), y.get(k), skip, out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y)))
            if x.len() == y.len() && x.iter().chain(y).all(|v| v.is_object()) =>
        {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), Some(p), Some(q), skip, out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            let xs: Vec<String> = x.iter().map(short).collect();
            let ys: Vec<String> = y.iter().map(short).collect();
            let removed: Vec<&String> = xs.iter().filter(|v| !ys.contains(v)).collect();
            let added: Vec<&String> = ys.iter().filter(|v| !xs.contains(v)).collect();
            let detail = if removed.is_empty() && added.is_empty() {
                "same items, different order or count".to_string()
            } else {
                let mut parts = Vec::new();
                for r in removed {
                    parts.push(format!("-{r}"));
                }
                for a in added {
                    parts.push(format!("+{a}"));
                }
                parts.join(", ")
            };
            out.push(FieldChange {
                field: path.to_string(),
                a: a.cloned(),
                b: b.cloned(),
                detail,
            });
        }
        _ => {
            let detail = match (a, b) {
                (Some(x), Some(y)) => format!("{} -> {}", short(x), short(y)),
                (Some(x), None) => format!("removed (was {})", short(x)),
                (None, Some(y)) => format!("added: {}", short(y)),
                (None, None) => String::new(),
            };
            out.push(FieldChange {
                field: path.to_string(),
                a: a.cloned(),
                b: b.cloned(),
                detail,
            });
        }
    }
}

fn is_timestamp_field(path: &str) -> bool {
    path == "created"
        || path.ends_with(".created")
        || path == "org.opencontainers.image.created"
        || path.ends_with("source_date_epoch")
}

/// Compares two opened images; indexes them (content hashes) unless the manifest
/// digests are equal.
pub fn compare(
    a: &mut Loaded,
    b: &mut Loaded,
    ignore_timestamps: bool,
    progress: &Progress,
) -> Result<Report> {
    let a_digest = a.base.manifest_digest.clone();
    let b_digest = b.base.manifest_digest.clone();
    let digest_equal = a_digest.is_some() && a_digest == b_digest;
    let mut report = Report {
        a: a.name.clone(),
        b: b.name.clone(),
        a_digest,
        b_digest,
        identical: digest_equal,
        digest_equal,
        ignore_timestamps,
        config: vec![],
        annotations: vec![],
        layers: vec![],
        files: vec![],
    };
    if digest_equal {
        return Ok(report);
    }
    let skip = |p: &str| p == "rootfs" || (ignore_timestamps && is_timestamp_field(p));
    json_diff(
        "",
        Some(&a.base.config),
        Some(&b.base.config),
        &skip,
        &mut report.config,
    );
    report.annotations = annotation_changes(a, b, ignore_timestamps, &skip);
    a.index(progress)?;
    b.index(progress)?;
    let same_count = a.base.layers.len() == b.base.layers.len();
    let n = a.base.layers.len().max(b.base.layers.len());
    for i in 0..n {
        let (la, lb) = (a.base.layers.get(i), b.base.layers.get(i));
        report
            .layers
            .push(compare_layer(i, la, lb, same_count, ignore_timestamps)?);
    }
    report.files = diff_sorted(
        fs_metas(a.fs.as_ref().expect("indexed")),
        fs_metas(b.fs.as_ref().expect("indexed")),
        ignore_timestamps,
    );
    let layers_differ = !same_count
        || report
            .layers
            .iter()
            .any(|l| matches!(l.status.as_str(), "different" | "only-in-a" | "only-in-b"));
    report.identical = report.config.is_empty()
        && report.annotations.is_empty()
        && report.files.is_empty()
        && !layers_differ;
    Ok(report)
}

/// Annotations that differ; the build record is compared field by field.
fn annotation_changes(
    a: &Loaded,
    b: &Loaded,
    ignore_timestamps: bool,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let (aa, ba) = (a.annotations(), b.annotations());
    let keys: BTreeSet<&String> = aa.keys().chain(ba.keys()).collect();
    for k in keys {
        let (x, y) = (aa.get(k), ba.get(k));
        if x == y || (ignore_timestamps && is_timestamp_field(k)) {
            continue;
        }
        let parse = |s: Option<&String>| {
            s.and_then(|s| BuildRecord::parse(s).ok())
                .map(|r| r.to_value())
        };
        if k == RECORD_ANNOTATION {
            if let (Some(px), Some(py)) = (parse(x), parse(y)) {
                json_diff(k, Some(&px), Some(&py), skip, &mut out);
                continue;
            }
        }
        json_diff(
            k,
            x.map(|s| Value::String(s.clone())).as_ref(),
            y.map(|s| Value::String(s.clone())).as_ref(),
            &|_| false,
            &mut out,
        );
    }
    out
}

/// Layer `i` (0-based) of both images: same, recompressed, different (with the
/// entries that differ when the layer counts match), or only in one image.
fn compare_layer(
    i: usize,
    la: Option<&LayerBlob>,
    lb: Option<&LayerBlob>,
    same_count: bool,
    ignore_timestamps: bool,
) -> Result<LayerChange> {
    let mut lc = LayerChange {
        index: i + 1,
        status: String::new(),
        message: String::new(),
        a_digest: la.and_then(|l| l.digest.clone()),
        b_digest: lb.and_then(|l| l.digest.clone()),
        a_diff_id: la.and_then(|l| l.diff_id.clone()),
        b_diff_id: lb.and_then(|l| l.diff_id.clone()),
        files: vec![],
    };
    match (la, lb) {
        (Some(_), None) => {
            lc.status = "only-in-a".into();
            lc.message = format!("layer {}: only in the first image", i + 1);
        }
        (None, Some(_)) => {
            lc.status = "only-in-b".into();
            lc.message = format!("layer {}: only in the second image", i + 1);
        }
        (Some(_), Some(_)) if lc.a_digest.is_some() && lc.a_digest == lc.b_digest => {
            lc.status = "same".into();
            lc.message = format!("layer {}: same ({})", i + 1, short_digest(&lc.a_digest));
        }
        (Some(_), Some(y)) if lc.a_diff_id.is_some() && lc.a_diff_id == lc.b_diff_id => {
            lc.status = "recompressed".into();
            lc.message = format!(
                "layer {}: same files, different {} bytes ({} vs {})",
                i + 1,
                compression_name(y),
                short_digest(&lc.a_digest),
                short_digest(&lc.b_digest)
            );
        }
        (Some(x), Some(y)) => different_layer(&mut lc, x, y, same_count, ignore_timestamps)?,
        (None, None) => {}
    }
    Ok(lc)
}

/// A layer whose files differ: the entries that do, when the layers line up.
fn different_layer(
    lc: &mut LayerChange,
    x: &LayerBlob,
    y: &LayerBlob,
    same_count: bool,
    ignore_timestamps: bool,
) -> Result<()> {
    let i = lc.index;
    lc.status = "different".into();
    if !same_count {
        lc.message = format!(
            "layer {i}: different content (diff_id {} vs {})",
            short_digest(&lc.a_diff_id),
            short_digest(&lc.b_diff_id)
        );
        return Ok(());
    }
    lc.files = diff_entries(&layer_entries(x)?, &layer_entries(y)?, ignore_timestamps);
    if lc.files.is_empty() {
        lc.status = "equivalent".into();
        lc.message = format!(
            "layer {i}: different tar bytes, same entries{}",
            if ignore_timestamps {
                " (timestamps ignored)"
            } else {
                " (entry order or tar headers differ)"
            }
        );
    } else {
        lc.message = format!(
            "layer {i}: different content ({} {})",
            lc.files.len(),
            if lc.files.len() == 1 {
                "entry differs"
            } else {
                "entries differ"
            }
        );
    }
    Ok(())
}

fn compression_name(l: &LayerBlob) -> &'static str {
    match l.compression {
        crate::source::Compression::Gzip => "gzip",
        crate::source::Compression::Zstd => "zstd",
        crate::source::Compression::None => "tar",
    }
}

fn short_digest(d: &Option<String>) -> String {
    match d {
        Some(d) => {
            let h = d.trim_start_matches("sha256:");
            format!("sha256:{}", &h[..h.len().min(12)])
        }
        None => "unknown".into(),
    }
}

fn print_changes(out: &mut String, changes: &[FileChange], limit: usize, indent: &str) {
    for c in changes.iter().take(limit) {
        let sign = match c.change.as_str() {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        out.push_str(&format!(
            "{indent}{sign} {}: {}\n",
            c.path,
            c.reasons.join(", ")
        ));
    }
    if changes.len() > limit {
        out.push_str(&format!(
            "{indent}... and {} more (use --all or --json)\n",
            changes.len() - limit
        ));
    }
}

/// The human-readable report.
pub fn render(r: &Report, all: bool) -> String {
    let limit = if all { usize::MAX } else { 200 };
    let mut s = format!(
        "a: {} ({})\nb: {} ({})\n",
        r.a,
        r.a_digest.as_deref().unwrap_or("no manifest digest"),
        r.b,
        r.b_digest.as_deref().unwrap_or("no manifest digest")
    );
    if r.digest_equal {
        s.push_str("identical: same manifest digest\n");
        return s;
    }
    if !r.config.is_empty() {
        s.push_str(&format!("config: {} difference(s)\n", r.config.len()));
        for c in r.config.iter().take(limit) {
            s.push_str(&format!("  {}: {}\n", c.field, c.detail));
        }
    }
    if !r.annotations.is_empty() {
        s.push_str(&format!(
            "manifest annotations: {} difference(s)\n",
            r.annotations.len()
        ));
        for c in r.annotations.iter().take(limit) {
            s.push_str(&format!("  {}: {}\n", c.field, c.detail));
        }
    }
    s.push_str("layers:\n");
    for l in &r.layers {
        s.push_str(&format!("  {}\n", l.message));
        print_changes(&mut s, &l.files, limit, "    ");
    }
    let count = |c: &str| r.files.iter().filter(|f| f.change == c).count();
    s.push_str(&format!(
        "files (final filesystem): {} added, {} removed, {} changed\n",
        count("added"),
        count("removed"),
        count("changed")
    ));
    print_changes(&mut s, &r.files, limit, "  ");
    s.push_str(if r.identical {
        "result: no semantic difference\n"
    } else {
        "result: different\n"
    });
    s
}

pub fn diff_images(
    a: &str,
    b: &str,
    ignore_timestamps: bool,
    opts: &OpenOptions,
    progress: &Progress,
) -> Result<Report> {
    let mut la = open(a, opts).with_context(|| format!("first image {a}"))?;
    let mut lb = open(b, opts).with_context(|| format!("second image {b}"))?;
    compare(&mut la, &mut lb, ignore_timestamps, progress)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::{canonical, descriptor};
    use crate::source::{MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST};
    use crate::testutil::TarBuilder;
    use serde_json::json;
    use std::io::Write;
    use std::path::Path;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn put(dir: &Path, bytes: &[u8]) -> String {
        let d = sha256_digest(bytes);
        std::fs::write(
            dir.join("blobs/sha256").join(digest_hex(&d).unwrap()),
            bytes,
        )
        .unwrap();
        d
    }

    /// Writes a small OCI layout with gzip layers; returns the manifest digest.
    pub(crate) fn write_layout(
        dir: &Path,
        layers: &[Vec<u8>],
        level: u32,
        cfg: Value,
        annotations: Value,
    ) -> String {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(sha256_digest(l));
            let z = gz(l, level);
            let d = put(dir, &z);
            descs.push(descriptor(MT_OCI_LAYER_GZIP, &d, z.len() as u64));
        }
        let config = json!({"architecture": "amd64", "os": "linux", "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        let cb = canonical(&config);
        let cd = put(dir, &cb);
        let m = json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": descriptor(MT_OCI_CONFIG, &cd, cb.len() as u64),
            "layers": descs, "annotations": annotations});
        let mb = canonical(&m);
        let md = put(dir, &mb);
        let idx = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
            {"mediaType": MT_OCI_MANIFEST, "digest": md, "size": mb.len(),
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
        std::fs::write(dir.join("index.json"), canonical(&idx)).unwrap();
        md
    }

    fn base_layer() -> Vec<u8> {
        TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/os-release", b"ID=debian\n", 0o644)
            .dir("opt/nemoclaw/dist", 0o755)
            .file("opt/nemoclaw/dist/index.js", b"console.log(1)\n", 0o644)
            .build()
    }

    #[test]
    fn identical_and_recompressed_and_changed() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        let cfg = json!({"Entrypoint": ["/init"], "Env": ["A=1"]});
        let l0 = base_layer();
        let l1 = TarBuilder::new().file("etc/motd", b"hi", 0o644).build();
        write_layout(&a, &[l0.clone(), l1.clone()], 6, cfg.clone(), json!({}));
        // Same content, different gzip level: layers "recompressed", no semantic difference.
        write_layout(&b, &[l0.clone(), l1.clone()], 1, cfg.clone(), json!({}));
        let p = Progress::silent();
        let o = OpenOptions::default();
        let ra = format!("oci:{}:latest", a.display());
        let rb = format!("oci:{}:latest", b.display());
        // A copy written separately from the same inputs: equal manifest digests, which
        // alone make the images identical (no layer is read).
        let a2 = t.path().join("a2");
        write_layout(&a2, &[l0.clone(), l1.clone()], 6, cfg.clone(), json!({}));
        let r = diff_images(&ra, &format!("oci:{}:latest", a2.display()), false, &o, &p).unwrap();
        assert!(r.identical && r.digest_equal, "{}", render(&r, true));
        assert!(r.layers.is_empty() && r.files.is_empty(), "{:?}", r.layers);
        let r = diff_images(&ra, &rb, false, &o, &p).unwrap();
        assert!(r.identical, "{}", render(&r, true));
        assert!(!r.digest_equal);
        assert!(r.config.is_empty() && r.annotations.is_empty() && r.files.is_empty());
        assert_eq!(r.layers.len(), 2, "{:?}", r.layers);
        // The same through another transport (b packed as an OCI archive): read and
        // compared file by file, still identical.
        let b_tar = t.path().join("b.tar");
        let mut tb = tar::Builder::new(std::fs::File::create(&b_tar).unwrap());
        tb.append_dir_all(".", &b).unwrap();
        tb.finish().unwrap();
        drop(tb);
        let r = diff_images(
            &ra,
            &format!("oci-archive:{}:latest", b_tar.display()),
            false,
            &o,
            &p,
        )
        .unwrap();
        assert!(r.identical && !r.digest_equal, "{}", render(&r, true));
        assert!(
            r.layers.iter().all(|l| l.status == "recompressed"),
            "{:?}",
            r.layers
        );
        assert_eq!(r.layers[0].status, "recompressed");
        assert!(render(&r, false).contains("same files, different gzip bytes"));
        // Changed file content, config and a new file.
        let l0c = TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/os-release", b"ID=debian\n", 0o644)
            .dir("opt/nemoclaw/dist", 0o755)
            .file("opt/nemoclaw/dist/index.js", b"console.log(2)\n", 0o755)
            .file("opt/nemoclaw/dist/new.js", b"x", 0o644)
            .build();
        let cfg2 = json!({"Entrypoint": ["/init"], "Env": ["A=2"], "User": "sandbox"});
        write_layout(&c, &[l0c, l1], 6, cfg2, json!({}));
        let rc = format!("oci:{}:latest", c.display());
        let r = diff_images(&ra, &rc, false, &o, &p).unwrap();
        assert!(!r.identical);
        let text = render(&r, false);
        assert!(
            text.contains("/opt/nemoclaw/dist/index.js: content differs, mode 0644 -> 0755"),
            "{text}"
        );
        assert!(text.contains("+ /opt/nemoclaw/dist/new.js"), "{text}");
        assert!(text.contains("config.Env: -\"A=1\", +\"A=2\""), "{text}");
        assert!(text.contains("config.User: added: \"sandbox\""), "{text}");
        assert_eq!(r.layers[0].status, "different");
        assert_eq!(r.layers[0].files.len(), 2, "{:?}", r.layers[0].files);
        assert_eq!(r.layers[1].status, "same");
    }

    #[test]
    fn timestamps_can_be_ignored() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_mtime(5);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        let mut tb = tar::Builder::new(Vec::new());
        tb.append_data(&mut h.clone(), "f", &b"x"[..]).unwrap();
        let la = tb.into_inner().unwrap();
        h.set_mtime(6);
        let mut tb = tar::Builder::new(Vec::new());
        tb.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let lb = tb.into_inner().unwrap();
        write_layout(
            &a,
            &[la],
            6,
            json!({}),
            json!({"org.opencontainers.image.created": "1970-01-01T00:00:05Z"}),
        );
        write_layout(
            &b,
            &[lb],
            6,
            json!({}),
            json!({"org.opencontainers.image.created": "1970-01-01T00:00:06Z"}),
        );
        let p = Progress::silent();
        let o = OpenOptions::default();
        let (ra, rb) = (
            format!("oci:{}", a.display()),
            format!("oci:{}", b.display()),
        );
        let r = diff_images(&ra, &rb, false, &o, &p).unwrap();
        assert!(!r.identical);
        assert!(render(&r, false).contains("~ /f: mtime 5 -> 6"));
        let r = diff_images(&ra, &rb, true, &o, &p).unwrap();
        assert!(r.identical, "{}", render(&r, true));
        assert_eq!(r.layers[0].status, "equivalent");
    }

    #[test]
    fn record_annotation_is_compared_field_by_field() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let l = base_layer();
        let rec = |d: &str| json!({RECORD_ANNOTATION: format!("{{\"artifacts_digest\":\"{d}\",\"tool\":\"x\"}}")});
        let (da, db) = (sha256_digest(b"a"), sha256_digest(b"b"));
        write_layout(&a, std::slice::from_ref(&l), 6, json!({}), rec(&da));
        write_layout(&b, &[l], 6, json!({}), rec(&db));
        let r = diff_images(
            &format!("oci:{}", a.display()),
            &format!("oci:{}", b.display()),
            false,
            &OpenOptions::default(),
            &Progress::silent(),
        )
        .unwrap();
        assert!(!r.identical);
        assert_eq!(
            r.annotations[0].field,
            "dev.nemoclaw.build.record.artifacts_digest"
        );
        let lo = open(&format!("oci:{}", a.display()), &OpenOptions::default()).unwrap();
        assert_eq!(lo.record().unwrap().unwrap().tool.as_deref(), Some("x"));
    }

    #[test]
    fn a_malformed_record_is_an_error_naming_the_field() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let rec = json!({RECORD_ANNOTATION: r#"{"artifacts_digest":"sha256:../../x","tool":"x"}"#});
        write_layout(&a, &[base_layer()], 6, json!({}), rec);
        let lo = open(&format!("oci:{}", a.display()), &OpenOptions::default()).unwrap();
        let e = format!("{:#}", lo.record().unwrap_err());
        assert!(
            e.contains("invalid digest") && e.contains(RECORD_ANNOTATION),
            "{e}"
        );
        let none = t.path().join("none");
        write_layout(&none, &[base_layer()], 6, json!({}), json!({}));
        let lo = open(&format!("oci:{}", none.display()), &OpenOptions::default()).unwrap();
        assert!(lo.record().unwrap().is_none());
    }

    #[test]
    fn layer_count_mismatch_and_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let l = base_layer();
        let wh = TarBuilder::new()
            .file("opt/nemoclaw/dist/.wh.index.js", b"", 0o644)
            .build();
        write_layout(&a, std::slice::from_ref(&l), 6, json!({}), json!({}));
        write_layout(&b, &[l, wh], 6, json!({}), json!({}));
        let r = diff_images(
            &format!("oci:{}", a.display()),
            &format!("oci:{}", b.display()),
            false,
            &OpenOptions::default(),
            &Progress::silent(),
        )
        .unwrap();
        assert!(!r.identical);
        assert_eq!(r.layers[1].status, "only-in-b");
        let text = render(&r, false);
        assert!(text.contains("- /opt/nemoclaw/dist/index.js"), "{text}");
    }
}
