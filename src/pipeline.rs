//! The build pipeline: source -> rootfs model -> steps -> layer writer -> sink.
use crate::compress::Settings;
use crate::digest::HashingReader;
use crate::image::{canonical, descriptor, rfc3339};
use crate::imageref::ImageRef;
use crate::layer::{compress_blob, LayerOutput, LayerWriter};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::rootfs::{parent_of, Content, IndexOptions, Kind, Rootfs};
use crate::scratch::{Purpose, ScratchDir};
use crate::sink::{Built, SideOutput, Staging};
use crate::source::{
    open_image, BaseImage, Compression, OpenOptions, MT_OCI_CONFIG, MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD, MT_OCI_MANIFEST,
};
use crate::steps::{self, StepOptions, StepsReport};
use crate::tarread::TarReader;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PurgeMode {
    /// Rewrite base layers that contain removed files: the bytes are really gone.
    Rewrite,
    /// Keep base layers byte for byte; hide removed files with whiteouts.
    Whiteout,
}

pub struct BuildOptions {
    pub base: ImageRef,
    pub output: ImageRef,
    pub recipe: Recipe,
    pub artifacts: Option<PathBuf>,
    pub purge_mode: PurgeMode,
    pub compression: Settings,
    pub epoch: u64,
    pub build_args: BTreeMap<String, String>,
    pub strict: bool,
    pub open: OpenOptions,
    pub progress: Progress,
    /// Derived-results cache; None disables caching (`--no-cache`).
    pub cache: Option<crate::cache::Cache>,
    /// `--cache-from` / `--cache-to`: the cache shared through a registry.
    pub remote_cache: crate::remote_cache::RemoteCacheOptions,
    /// Write an SPDX 2.3 SBOM of the result here (and attach it to an oci: layout).
    pub sbom: Option<PathBuf>,
    /// Write the build record (the exact inputs) here.
    pub record: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerSummary {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    /// reused | recompressed | rewritten | new
    pub action: String,
}

#[derive(Debug, serde::Serialize)]
pub struct BuildSummary {
    pub output: String,
    pub digest: String,
    pub config_digest: String,
    pub manifest_size: u64,
    pub layers: Vec<LayerSummary>,
    pub total_size: u64,
    pub purged: Vec<String>,
    pub not_installed: Vec<String>,
    pub files_removed: u64,
    pub bytes_removed: u64,
    pub init_size: u64,
    pub init_target: String,
    pub landlock_warnings: Vec<String>,
    /// The base and recipe layers came from the cache (nothing recompressed).
    pub cache_hit: bool,
    /// Where the cached part came from: none | local | registry.
    pub cache_source: &'static str,
    pub seconds: f64,
    pub record: Value,
}

/// Streams every base layer into the model. Also learns digests that the source
/// did not know (a plain tarball's), so the build record names the exact input.
pub fn index_base(
    base: &mut BaseImage,
    opts: &IndexOptions,
    progress: &Progress,
) -> Result<Rootfs> {
    index_base_spilling(base, opts, progress, None)
}

/// Like [`index_base`]; with `spill_dir`, compressed layers are also kept
/// uncompressed there (for a rewrite that follows).
pub fn index_base_spilling(
    base: &mut BaseImage,
    opts: &IndexOptions,
    progress: &Progress,
    spill_dir: Option<&std::path::Path>,
) -> Result<Rootfs> {
    let mut fs = Rootfs::new();
    for i in 0..base.layers.len() {
        let layer = base.layers[i].clone();
        let bar = progress.bytes(&format!("reading {}", layer.label), layer.size);
        let spill = match (spill_dir, layer.compression) {
            (Some(d), c) if c != Compression::None => Some(
                tempfile::Builder::new()
                    .prefix("layer-")
                    .tempfile_in(d)?
                    .keep()
                    .map_err(|e| e.error)?,
            ),
            _ => None,
        };
        let (spill_file, spill_path) = match spill {
            Some((f, p)) => (Some(f), Some(p)),
            None => (None, None),
        };
        let mut dec = crate::source::ThreadedDecoder::spawn(&layer, bar.clone(), None)?;
        let mut tar_hash = HashingReader::new(&mut dec);
        let mut tar = TarReader::new(&mut tar_hash, &layer.label).max_entries(opts.max_entries);
        if let Some(f) = spill_file {
            tar = tar.spill_to(f); // the archive only: never the trailer after its end
        }
        let stats = fs.apply_tar(i, &layer.label, tar, opts)?;
        let (diff_id, _) = tar_hash.finish();
        let raw_digest = dec.finish().with_context(|| layer.label.clone())?;
        if let Some(expected) = &layer.diff_id {
            if expected != &diff_id {
                bail!("{}: uncompressed content hashes to {diff_id}, but the config's diff_id is {expected}", layer.label);
            }
        }
        let l = &mut base.layers[i];
        if l.digest.is_none() {
            l.digest = Some(raw_digest);
        }
        if l.diff_id.is_none() {
            l.diff_id = Some(diff_id);
        }
        l.spill = spill_path;
        progress.done(
            bar,
            &format!(
                "indexed {}: {} entries, {} whiteouts",
                layer.label, stats.entries, stats.whiteouts
            ),
        );
    }
    Ok(fs)
}

fn oci_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => MT_OCI_LAYER,
        Compression::Gzip => MT_OCI_LAYER_GZIP,
        Compression::Zstd => MT_OCI_LAYER_ZSTD,
    }
}

/// Loads the bytes of modified nodes whose content still lives in a base layer
/// (one pass per layer that has any), so the new layer can carry them.
fn materialize(fs: &mut Rootfs, base: &BaseImage) -> Result<()> {
    // Hardlinks into the new layer whose target is not in it become copies.
    let links: Vec<(String, String)> = fs
        .nodes
        .iter()
        .filter(|(_, n)| n.modified && n.kind == Kind::Hardlink)
        .filter_map(|(k, n)| n.link().map(|t| (k.to_string(), t.to_string())))
        .collect();
    for (k, t) in links {
        let Some(target) = fs.link_file(&k).cloned() else {
            bail!("cannot write /{k}: it is a hardlink to /{t}, which the build removed");
        };
        if !target.modified {
            let mut copy = target;
            copy.modified = true;
            if let Some(n) = fs.nodes.get(k.as_str()) {
                copy.uid = n.uid;
                copy.gid = n.gid;
            }
            fs.nodes.insert(k.into(), Box::new(copy));
        }
    }
    let mut wanted: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (k, n) in &fs.nodes {
        if let (true, Kind::File, Content::Layer(l)) = (n.modified, n.kind, &n.content) {
            wanted.entry(*l).or_default().insert(k.to_string());
        }
    }
    for (l, keys) in wanted {
        let layer = &base.layers[l];
        let mut tar = TarReader::new(layer.open_tar()?, &layer.label);
        let mut got: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        while let Some(e) = tar.next_entry()? {
            if e.kind == Kind::File && keys.contains(&e.path) {
                let mut buf = Vec::new();
                tar.read_to_end(&mut buf)
                    .with_context(|| format!("{}: entry '{}'", layer.label, e.name))?;
                got.insert(e.path, buf); // a later duplicate entry wins, as in the model
            }
        }
        tar.finish()?;
        for (k, bytes) in got {
            if let Some(n) = fs.nodes.get_mut(k.as_str()) {
                n.content = Content::Bytes(Arc::new(bytes));
            }
        }
    }
    Ok(())
}

/// What a dropped hardlink target leaves for the links that stay: its bytes, or
/// (when it was itself a link to a kept file) that file's path.
#[derive(Clone)]
enum Carried {
    Bytes(Arc<Vec<u8>>),
    Link(String),
}

/// The base layers a rewrite must touch: those holding removed paths, and those
/// with a hardlink to a removed path (the link must carry the bytes instead).
fn rewrite_mask(fs: &Rootfs) -> u128 {
    fs.links
        .iter()
        .filter(|l| fs.removed.contains(&l.target))
        .fold(fs.removed_mask, |m, l| m | 1u128 << l.layer.min(127))
}

/// Rewrites one base layer without the removed paths. Layers are rewritten in
/// order with one `carried` map, so a hardlink gets the bytes its target had when
/// the link was made, even when the target lived in a lower layer.
fn rewrite_layer(
    fs: &Rootfs,
    base: &BaseImage,
    i: usize,
    staging: &Staging,
    settings: &Settings,
    epoch: u64,
    carried: &mut BTreeMap<String, Carried>,
) -> Result<LayerOutput> {
    let layer = &base.layers[i];
    let mut w = LayerWriter::create(&staging.blobs(), settings, epoch)?;
    let mut tar = TarReader::new(layer.open_tar()?, &layer.label);
    // Removed paths that a kept hardlink (in any layer) points to.
    let link_targets: BTreeSet<&str> = fs
        .links
        .iter()
        .map(|l| l.target.as_str())
        .filter(|t| fs.removed.contains(*t))
        .collect();
    while let Some(e) = tar.next_entry()? {
        let key = e.path.clone();
        if key.is_empty() {
            continue;
        }
        if fs.removed.contains(&key) {
            if link_targets.contains(key.as_str()) {
                let c = match (&e.kind, &e.link) {
                    (Kind::File, _) => {
                        let mut buf = Vec::new();
                        tar.read_to_end(&mut buf)
                            .with_context(|| format!("{}: entry '{}'", layer.label, e.name))?;
                        Some(Carried::Bytes(Arc::new(buf)))
                    }
                    (Kind::Hardlink, Some(t)) => Some(
                        carried
                            .get(t)
                            .cloned()
                            .unwrap_or_else(|| Carried::Link(t.clone())),
                    ),
                    _ => None,
                };
                if let Some(c) = c {
                    carried.insert(key, c);
                }
            }
            continue;
        }
        let mut node = e.node(i);
        let via = node
            .link()
            .filter(|_| node.kind == Kind::Hardlink)
            .and_then(|t| carried.get(t))
            .cloned();
        match via {
            Some(Carried::Bytes(bytes)) => {
                node.kind = Kind::File;
                node.size = bytes.len() as u64;
                node.set_link(None);
                w.append(&key, &node, &mut &bytes[..])?;
            }
            Some(Carried::Link(t)) => {
                node.set_link(Some(&t));
                w.append(&key, &node, &mut std::io::empty())?;
            }
            None => w.append(&key, &node, &mut tar)?,
        }
    }
    tar.finish()?;
    w.finish()
}

/// The new top layer: every added or modified node, its parent directories, and
/// (in whiteout mode) whiteouts for removed base paths.
fn write_upper(
    fs: &Rootfs,
    staging: &Staging,
    settings: &Settings,
    epoch: u64,
    whiteouts: bool,
) -> Result<Option<LayerOutput>> {
    let mut emit: BTreeSet<String> = BTreeSet::new();
    for (k, n) in &fs.nodes {
        if n.modified {
            let mut p: &str = k;
            emit.insert(k.to_string());
            while let Some(parent) = parent_of(p) {
                if parent.is_empty() || !emit.insert(parent.to_string()) {
                    break;
                }
                p = parent;
            }
        }
    }
    let mut wh: BTreeSet<String> = BTreeSet::new();
    if whiteouts {
        for r in &fs.removed {
            let parent = parent_of(r).unwrap_or("");
            // Skip only what a removed parent's whiteout covers. A parent that is in
            // no layer as an entry (a layer names `usr/bin/x` but never `usr/`) still
            // exists for runtimes, which create it: the child needs its own whiteout.
            let parent_exists =
                parent.is_empty() || fs.nodes.contains_key(parent) || !fs.removed.contains(parent);
            if parent_exists && !fs.nodes.contains_key(r.as_str()) {
                wh.insert(r.clone());
                let mut p = parent;
                while !p.is_empty() && emit.insert(p.to_string()) {
                    p = parent_of(p).unwrap_or("");
                }
            }
        }
    }
    if emit.is_empty() && wh.is_empty() {
        return Ok(None);
    }
    // Whiteouts sort among the entries by their own names; merge both sets.
    let mut all: Vec<(String, bool)> = emit.into_iter().map(|k| (k, false)).collect();
    for w in wh {
        let (dir, name) = match w.rfind('/') {
            Some(i) => (&w[..i + 1], &w[i + 1..]),
            None => ("", w.as_str()),
        };
        all.push((format!("{dir}.wh.{name}"), true));
    }
    all.sort();
    let mut w = LayerWriter::create(&staging.blobs(), settings, epoch)?;
    for (k, is_wh) in all {
        if is_wh {
            let (dir, name) = match k.rfind('/') {
                Some(i) => (&k[..i + 1], &k[i + 1..]),
                None => ("", k.as_str()),
            };
            w.append_whiteout(&format!("{dir}{}", name.trim_start_matches(".wh.")))?;
            continue;
        }
        let Some(n) = fs.nodes.get(k.as_str()) else {
            continue;
        };
        let mut node = n.clone();
        if !n.modified {
            node.modified = false; // unchanged parent dir: keep its base metadata (mtime clamped)
        }
        match &n.content {
            Content::Bytes(b) => w.append(&k, &node, &mut &b[..])?,
            Content::Host(h) => {
                if h.len() != n.size {
                    bail!(
                        "/{k}: artifact size {} differs from its node's {}",
                        h.len(),
                        n.size
                    );
                }
                w.append(&k, &node, &mut h.reader())?
            }
            Content::Empty => w.append(&k, &node, &mut std::io::empty())?,
            Content::Layer(l) if n.kind == Kind::File => {
                bail!("/{k}: content in layer {} was not loaded", l + 1)
            }
            Content::Layer(_) => w.append(&k, &node, &mut std::io::empty())?,
        }
    }
    Ok(Some(w.finish()?))
}

/// What the cached part of a build (base layers + recipe layer) produced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Prepared {
    layers: Vec<LayerSummary>,
    purged: Vec<String>,
    not_installed: Vec<String>,
    files_removed: u64,
    bytes_removed: u64,
    init_size: u64,
    init_target: String,
    landlock_warnings: Vec<String>,
    /// /etc/passwd and /etc/group of the result, to resolve artifact owners.
    passwd: String,
    group: String,
    /// Ancestors of the artifacts destination as they are in the result
    /// (path, mode, uid, gid, mtime): the artifacts layer repeats them.
    ancestors: Vec<(String, u32, u64, u64, u64)>,
}

/// Identity of the base: manifest digest, or a tarball's content digest
/// (remembered per file identity so it is not rehashed on every build).
fn file_identity(p: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    let abs = std::fs::canonicalize(p).ok()?;
    Some(format!(
        "{}:{}:{}:{}:{}",
        abs.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ))
}

fn cache_key(opts: &BuildOptions, base_id: &str) -> String {
    key_for(
        TOOL_VERSION,
        &crate::digest::sha256_digest(steps::INIT_BINARY),
        opts,
        base_id,
    )
}

/// The cache key from every input of the cached part (tool and init given explicitly,
/// so a test can vary them).
pub(crate) fn key_for(tool: &str, init: &str, opts: &BuildOptions, base_id: &str) -> String {
    format!(
        "v1|tool={tool}|init={init}|recipe={}|base={base_id}|mode={:?}|comp={}|epoch={}|strict={}",
        opts.recipe.digest(),
        opts.purge_mode,
        opts.compression.describe(),
        opts.epoch,
        opts.strict
    )
}

/// Removes what killed builds left beside this build's outputs (staging layouts,
/// spill directories, temp files), never anything in use or not ours.
fn sweep_stale(opts: &BuildOptions) {
    let mut dirs = vec![crate::sink::scratch_parent(&opts.output)];
    for p in [&opts.sbom, &opts.record].into_iter().flatten() {
        dirs.push(crate::scratch::parent_dir(p));
    }
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        for gone in crate::scratch::sweep(&d) {
            opts.progress.log(&format!(
                "removed {} (left behind by an interrupted build)",
                gone.display()
            ));
        }
    }
}

/// On a local miss with `--cache-from`: learns a tarball base's digest if needed (one
/// streaming hash, remembered), then asks the registries; a hit is staged exactly like
/// a local hit. Never fails the build.
fn registry_cache_lookup(
    opts: &BuildOptions,
    staging: &Staging,
    tar_identity: Option<&str>,
    base_id: &mut Option<String>,
) -> Option<Prepared> {
    let c = opts.cache.as_ref()?;
    if base_id.is_none() {
        if let (ImageRef::Tar(path), Some(fid)) = (&opts.base, tar_identity) {
            match crate::remote_cache::file_digest(path) {
                Ok(d) => {
                    let _ = c.put_json("file-digest", fid, &json!(d));
                    *base_id = Some(d);
                }
                Err(e) => eprintln!("warning: cache-from: {e:#}"),
            }
        }
    }
    let Some(id) = base_id.as_deref() else {
        opts.progress
            .log("cache-from: skipped (the base has no content digest to key the cache on)");
        return None;
    };
    let key = cache_key(opts, id);
    let v = crate::remote_cache::fetch(
        &opts.remote_cache.from,
        &key,
        c,
        &opts.open.registry,
        &opts.progress,
    )?;
    let prep: Prepared = match serde_json::from_value(v) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: cache-from: unreadable cache record ({e}); building without it");
            return None;
        }
    };
    let mut srcs = Vec::with_capacity(prep.layers.len());
    for l in &prep.layers {
        match c
            .verified_blob(&l.digest)
            .and_then(|p| p.ok_or_else(|| anyhow::anyhow!("{} vanished from the cache", l.digest)))
        {
            Ok(src) => srcs.push((src, &l.digest)),
            Err(e) => {
                eprintln!("warning: cache-from: {e:#}; building without it");
                return None;
            }
        }
    }
    for (src, digest) in &srcs {
        if let Err(e) = staging.add_cached(src, digest) {
            eprintln!("warning: cache-from: {e:#}; building without it");
            return None;
        }
    }
    Some(prep)
}

/// With `--cache-to`: pushes the prepared part (from the staged blobs) under its cache
/// key. A failure is a warning: the image itself is not affected.
fn registry_cache_push(
    opts: &BuildOptions,
    to: &str,
    prep: &Prepared,
    staging: &Staging,
    base: &BaseImage,
    base_id: Option<&str>,
) {
    let Some(c) = opts.cache.as_ref() else {
        return;
    };
    // The identity the lookup keys on: manifest digest, or a tarball's file digest.
    let id = base_id.map(str::to_string).or_else(|| match &opts.base {
        ImageRef::Tar(_) => base.layers.first().and_then(|l| l.digest.clone()),
        _ => None,
    });
    let Some(id) = id else {
        opts.progress
            .log("cache-to: skipped (the base has no content digest to key the cache on)");
        return;
    };
    let res = (|| -> Result<()> {
        let mut layers = Vec::new();
        for l in &prep.layers {
            layers.push((
                crate::remote_cache::CacheLayer {
                    media_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                },
                staging.blobs().join(crate::digest::digest_hex(&l.digest)?),
            ));
        }
        crate::remote_cache::push(
            to,
            &cache_key(opts, &id),
            &serde_json::to_value(prep)?,
            &layers,
            c,
            &opts.open.registry,
            &opts.progress,
        )
    })();
    if let Err(e) = res {
        eprintln!("warning: cache-to registry://{to}: {e:#}; the image is not affected");
    }
}

/// The full, uncached path: index the base, apply the steps, write base layers
/// and the recipe layer. Returns the final rootfs too (for gates and SBOM).
fn prepare(
    opts: &BuildOptions,
    base: &mut BaseImage,
    staging: &Staging,
) -> Result<(Prepared, Rootfs)> {
    let p = &opts.progress;
    // Rewrite mode reads purged layers twice: keep them uncompressed after the first pass.
    // Beside the staging dir: removed on a signal, swept when a killed build left it.
    let spill = match opts.purge_mode {
        PurgeMode::Rewrite => {
            let parent = crate::scratch::parent_dir(staging.path());
            Some(
                ScratchDir::create_in(&parent, Purpose::Spill, true).with_context(|| {
                    format!("cannot create a spill directory in {}", parent.display())
                })?,
            )
        }
        PurgeMode::Whiteout => None,
    };
    let mut fs = index_base_spilling(
        base,
        &IndexOptions::default(),
        p,
        spill.as_ref().map(|d| d.path()),
    )?;
    let step_opts = StepOptions {
        artifacts: opts.artifacts.clone(),
        strict: opts.strict,
        epoch: opts.epoch,
    };
    let rep: StepsReport = steps::apply_all(&mut fs, &opts.recipe, &step_opts)?;
    if let Some(pr) = &rep.purge {
        p.log(&format!(
            "purged {} package(s) ({} files, {:.1} MiB){}",
            pr.plan.removed.len(),
            pr.files_removed,
            pr.bytes_removed as f64 / 1048576.0,
            if pr.plan.not_installed.is_empty() {
                String::new()
            } else {
                format!("; not installed: {}", pr.plan.not_installed.join(" "))
            }
        ));
    }
    materialize(&mut fs, base)?;
    let settings = &opts.compression;
    let mut layers = Vec::new();
    let mask = rewrite_mask(&fs);
    let mut carried = BTreeMap::new();
    for (i, l) in base.layers.iter().enumerate() {
        let touched = opts.purge_mode == PurgeMode::Rewrite && (mask >> i.min(127)) & 1 == 1;
        let bar = p.bytes(
            &format!(
                "{} {}",
                if touched { "rewriting" } else { "copying" },
                l.label
            ),
            l.size,
        );
        let (out, action) = if touched {
            (
                rewrite_layer(&fs, base, i, staging, settings, opts.epoch, &mut carried)?,
                "rewritten",
            )
        } else if l.compression == Compression::None
            && settings.algorithm != crate::compress::Algorithm::None
        {
            let mut r = l.open_raw()?;
            (
                compress_blob(&staging.blobs(), settings, &mut r)?,
                "recompressed",
            )
        } else {
            staging.copy_layer(l)?;
            let digest = l.digest.clone().unwrap_or_default();
            let path = staging.blobs().join(digest.trim_start_matches("sha256:"));
            (
                LayerOutput {
                    digest,
                    size: l.size,
                    diff_id: l.diff_id.clone().unwrap_or_default(),
                    media_type: oci_media_type(l.compression).into(),
                    path,
                    entries: 0,
                },
                "reused",
            )
        };
        p.done(
            bar,
            &format!(
                "{action} {} -> {} ({} bytes)",
                l.label, out.digest, out.size
            ),
        );
        layers.push(LayerSummary {
            digest: out.digest,
            diff_id: out.diff_id,
            size: out.size,
            media_type: out.media_type,
            action: action.into(),
        });
    }
    if let Some(u) = write_upper(
        &fs,
        staging,
        settings,
        opts.epoch,
        opts.purge_mode == PurgeMode::Whiteout,
    )? {
        p.log(&format!(
            "recipe layer {} ({} entries, {} bytes)",
            u.digest, u.entries, u.size
        ));
        layers.push(LayerSummary {
            digest: u.digest,
            diff_id: u.diff_id,
            size: u.size,
            media_type: u.media_type,
            action: "new".into(),
        });
    }
    // The spilled copies go away with `spill` at the end of this function.
    for l in &mut base.layers {
        l.spill = None;
    }
    drop(spill);
    let mut ancestors = Vec::new();
    if let Some(a) = &opts.recipe.artifacts {
        let dest = crate::rootfs::normalize(&a.dest)?;
        let mut cur = String::new();
        for c in dest.split('/').filter(|c| !c.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(c);
            if cur == dest {
                break;
            }
            if let Some(n) = fs.nodes.get(cur.as_str()) {
                let mtime = if n.layer().is_some() && !n.modified {
                    n.mtime.min(opts.epoch)
                } else {
                    opts.epoch
                };
                ancestors.push((cur.clone(), n.mode, n.uid, n.gid, mtime));
            }
        }
    }
    let text = |path: &str| {
        fs.read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let purge = rep.purge.as_ref();
    let prepared = Prepared {
        layers,
        purged: purge
            .map(|p| p.plan.removed.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default(),
        not_installed: purge
            .map(|p| p.plan.not_installed.clone())
            .unwrap_or_default(),
        files_removed: purge.map(|p| p.files_removed).unwrap_or(0),
        bytes_removed: purge.map(|p| p.bytes_removed).unwrap_or(0),
        init_size: rep.init_size,
        init_target: rep.init_target.clone(),
        landlock_warnings: rep.landlock_warnings.clone(),
        passwd: text("etc/passwd"),
        group: text("etc/group"),
        ancestors,
    };
    Ok((prepared, fs))
}

/// The artifacts layer: the artifacts plus their ancestor directories as they are
/// in the result, so cached and uncached builds write identical bytes.
fn artifacts_layer(
    opts: &BuildOptions,
    prep: &Prepared,
    staging: &Staging,
) -> Result<(Option<LayerOutput>, Option<String>, Rootfs)> {
    let mut afs = Rootfs::new();
    let mut accounts = Rootfs::new();
    accounts.insert(
        "etc/passwd",
        crate::rootfs::Node::file(0o644, 0, 0, prep.passwd.clone().into_bytes()),
    )?;
    accounts.insert(
        "etc/group",
        crate::rootfs::Node::file(0o644, 0, 0, prep.group.clone().into_bytes()),
    )?;
    for (path, mode, uid, gid, mtime) in &prep.ancestors {
        let mut n = crate::rootfs::Node::dir(*mode, *uid, *gid);
        n.mtime = *mtime;
        n.set_layer(Some(0));
        n.modified = false;
        afs.insert(path, n)?;
    }
    let digest = steps::apply_artifacts(
        &mut afs,
        Some(&accounts),
        &opts.recipe,
        opts.artifacts.as_deref(),
        staging.path(),
    )?;
    if digest.is_none() {
        return Ok((None, None, afs));
    }
    let out = write_upper(&afs, staging, &opts.compression, opts.epoch, false)?;
    Ok((out, digest, afs))
}

pub fn build(opts: BuildOptions) -> Result<BuildSummary> {
    let staged_in = crate::sink::scratch_parent(&opts.output);
    let cache = opts.cache.as_ref().map(|c| c.root().to_path_buf());
    build_inner(opts).map_err(|e| crate::sink::explain_no_space(e, &staged_in, cache.as_deref()))
}

fn build_inner(opts: BuildOptions) -> Result<BuildSummary> {
    let t0 = Instant::now();
    let p = &opts.progress;
    // Before any work: the outputs must not be the user's other files.
    crate::sink::check_output(&opts.output)?;
    for (path, what) in [(&opts.sbom, "--sbom"), (&opts.record, "--record")] {
        if let Some(path) = path {
            crate::sink::check_side_output(path, what)?;
        }
    }
    sweep_stale(&opts);
    let mut base = open_image(&opts.base, &opts.open)?;
    p.log(&format!(
        "base {}: {} layer(s)",
        base.name,
        base.layers.len()
    ));
    let cache = opts.cache.as_ref();
    let staging = Staging::for_output(&opts.output, cache.map(|c| c.root()))?;
    let tar_identity = match &opts.base {
        ImageRef::Tar(path) => file_identity(path),
        _ => None,
    };
    // A docker-archive has no manifest digest; its config pins every layer by diff_id.
    let config_identity = match &opts.base {
        ImageRef::DockerArchive { .. } => Some(format!(
            "config:{}",
            crate::digest::sha256_digest(&canonical(&base.config))
        )),
        _ => None,
    };
    let mut base_id: Option<String> = match (&base.manifest_digest, &tar_identity, cache) {
        (Some(d), _, _) => Some(d.clone()),
        (None, _, _) if config_identity.is_some() => config_identity.clone(),
        (None, Some(fid), Some(c)) => c
            .get_json("file-digest", fid)
            .and_then(|v| v.as_str().map(str::to_string)),
        _ => None,
    };
    let key = base_id.as_ref().map(|b| cache_key(&opts, b));
    let mut cached: Option<Prepared> = None;
    if let (Some(k), Some(c)) = (&key, cache) {
        if let Some(prep) = c
            .get_json("prepared", k)
            .and_then(|v| serde_json::from_value::<Prepared>(v).ok())
        {
            // Every blob is checked before any is staged: a partial hit must leave
            // nothing in the staging layout.
            let mut srcs = Vec::with_capacity(prep.layers.len());
            for l in &prep.layers {
                match c.verified_blob(&l.digest) {
                    Ok(Some(src)) => srcs.push((src, &l.digest)),
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("warning: local cache: {e:#}; building without it");
                        break;
                    }
                }
            }
            let ok = srcs.len() == prep.layers.len();
            if ok {
                for (src, digest) in &srcs {
                    staging.add_cached(src, digest)?;
                }
                p.log(&format!(
                    "cache hit: reusing {} base/recipe layer(s) from {}",
                    prep.layers.len(),
                    c.root().display()
                ));
                cached = Some(prep);
            }
        }
    }
    let mut cache_source = if cached.is_some() { "local" } else { "none" };
    if cached.is_none() && !opts.remote_cache.from.is_empty() {
        cached = registry_cache_lookup(&opts, &staging, tar_identity.as_deref(), &mut base_id);
        if cached.is_some() {
            cache_source = "registry";
        }
    }
    let cache_hit = cached.is_some();
    let (prep, full_fs) = match cached {
        Some(prep) => (prep, None),
        None => {
            let (prep, fs) = prepare(&opts, &mut base, &staging)?;
            (prep, Some(fs))
        }
    };
    let (art_layer, artifacts_digest, afs) = artifacts_layer(&opts, &prep, &staging)?;
    // The gate: on the complete result when we have it, else on what is new.
    match full_fs {
        Some(mut fs) => {
            steps::merge_artifacts(&mut fs, &afs)?;
            steps::gates(&fs, &opts.recipe)?;
        }
        None => steps::artifact_gates(&afs, &opts.recipe)?,
    }
    let mut layers: Vec<LayerSummary> = prep.layers.clone();
    if cache_hit {
        for l in &mut layers {
            l.action = format!("cached ({})", l.action);
        }
    }
    if let Some(a) = &art_layer {
        p.log(&format!(
            "artifacts layer {} ({} entries, {} bytes)",
            a.digest, a.entries, a.size
        ));
        layers.push(LayerSummary {
            digest: a.digest.clone(),
            diff_id: a.diff_id.clone(),
            size: a.size,
            media_type: a.media_type.clone(),
            action: "new".into(),
        });
    }
    let settings = &opts.compression;

    // Config.
    let created = rfc3339(opts.epoch);
    let mut config = base.config.clone();
    if !config.is_object() {
        bail!("base config is not a JSON object");
    }
    config["created"] = json!(created);
    config["os"] = config.get("os").cloned().unwrap_or(json!("linux"));
    config["rootfs"] = json!({"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()});
    for k in [
        "container",
        "container_config",
        "docker_version",
        "id",
        "parent",
    ] {
        if let Some(o) = config.as_object_mut() {
            o.remove(k);
        }
    }
    let mut cfg = config
        .get("config")
        .cloned()
        .filter(|c| c.is_object())
        .unwrap_or(json!({}));
    let img = &opts.recipe.image;
    if let Some(e) = &img.entrypoint {
        cfg["Entrypoint"] = json!(e);
    }
    if let Some(c) = &img.cmd {
        cfg["Cmd"] = json!(c);
    }
    if let Some(u) = &img.user {
        cfg["User"] = json!(u);
    }
    if let Some(w) = &img.workdir {
        cfg["WorkingDir"] = json!(w);
    }
    let mut env: Vec<String> = cfg
        .get("Env")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &img.env {
        let kv = format!("{k}={v}");
        match env
            .iter()
            .position(|e| e.split('=').next() == Some(k.as_str()))
        {
            Some(i) => env[i] = kv,
            None => env.push(kv),
        }
    }
    cfg["Env"] = json!(env);
    let mut labels: BTreeMap<String, Value> = cfg
        .get("Labels")
        .and_then(|l| l.as_object())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for (k, v) in &img.labels {
        labels.insert(k.clone(), json!(v));
    }
    for (k, v) in &opts.build_args {
        if !img.build_args.contains(k) {
            bail!(
                "--build-arg {k}: the recipe does not accept it (accepted: {})",
                if img.build_args.is_empty() {
                    "none".into()
                } else {
                    img.build_args.join(", ")
                }
            );
        }
        labels.insert(format!("dev.nemoclaw.build-arg.{k}"), json!(v));
    }
    cfg["Labels"] = json!(labels);
    config["config"] = cfg;
    // History: keep the base's when it covers the base layers, then ours.
    let base_layers = base.layers.len();
    let mut history: Vec<Value> = config
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    let non_empty = history
        .iter()
        .filter(|h| {
            !h.get("empty_layer")
                .and_then(|e| e.as_bool())
                .unwrap_or(false)
        })
        .count();
    if non_empty != base_layers {
        history = (0..base_layers)
            .map(|i| json!({"created": created, "created_by": format!("base layer {}", i + 1)}))
            .collect();
    }
    for h in &mut history {
        if h.get("created").is_none() {
            h["created"] = json!(created);
        }
    }
    let recipe_name = opts.recipe.name.clone().unwrap_or_default();
    if prep.layers.len() > base_layers {
        history.push(json!({"created": created, "created_by": format!("nemoclaw-build {TOOL_VERSION}: recipe {recipe_name} ({}), purge-mode {}", opts.recipe.digest(), format!("{:?}", opts.purge_mode).to_lowercase()), "comment": "nemoclaw-build recipe layer"}));
    }
    if art_layer.is_some() {
        history.push(json!({"created": created, "created_by": format!("nemoclaw-build {TOOL_VERSION}: artifacts {}", artifacts_digest.clone().unwrap_or_default()), "comment": "nemoclaw-build artifacts layer"}));
    }
    config["history"] = json!(history);

    let base_digest = base
        .manifest_digest
        .clone()
        .or_else(|| base_id.clone())
        .or_else(|| base.layers.first().and_then(|l| l.digest.clone()));
    let record = json!({
        "tool": format!("nemoclaw-build {TOOL_VERSION}"),
        "recipe_digest": opts.recipe.digest(),
        "recipe": crate::source::portable_name(std::path::Path::new(&opts.recipe.source_name)),
        "base": base.name,
        "base_digest": base_digest,
        "artifacts_digest": artifacts_digest,
        "build_args": opts.build_args,
        "source_date_epoch": opts.epoch,
        "compression": settings.describe(),
        "purge_mode": opts.purge_mode,
        "init": {"target": prep.init_target, "digest": crate::digest::sha256_digest(steps::INIT_BINARY)},
    });

    let config_bytes = canonical(&config);
    let config_digest = staging.put_blob(&config_bytes)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        created.clone(),
    );
    annotations.insert(
        "org.opencontainers.image.base.name".to_string(),
        base.name.clone(),
    );
    if let Some(d) = base_digest.as_ref().filter(|d| d.starts_with("sha256:")) {
        annotations.insert(
            "org.opencontainers.image.base.digest".to_string(),
            d.clone(),
        );
    }
    annotations.insert(
        "dev.nemoclaw.build.record".to_string(),
        String::from_utf8_lossy(&canonical(&record)).into_owned(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": descriptor(MT_OCI_CONFIG, &config_digest, config_bytes.len() as u64),
        "layers": layers.iter().map(|l| descriptor(&l.media_type, &l.digest, l.size)).collect::<Vec<_>>(),
        "annotations": annotations,
    });
    let manifest_bytes = canonical(&manifest);
    let digest = staging.put_blob(&manifest_bytes)?;
    let total_size = layers.iter().map(|l| l.size).sum::<u64>()
        + config_bytes.len() as u64
        + manifest_bytes.len() as u64;

    // Remember the expensive part before publishing moves the staging dir away.
    if let (Some(c), false) = (cache, cache_hit) {
        let id = base
            .manifest_digest
            .clone()
            .or(config_identity.clone())
            .or_else(|| {
                let d = base.layers.first().and_then(|l| l.digest.clone())?;
                if let Some(fid) = &tar_identity {
                    let _ = c.put_json("file-digest", fid, &json!(d));
                }
                Some(d)
            });
        if let Some(id) = id {
            let mut stored = true;
            for l in &prep.layers {
                let src = staging.blobs().join(crate::digest::digest_hex(&l.digest)?);
                stored &= c.insert_blob_file(&src, &l.digest).is_ok();
            }
            if stored {
                c.put_json(
                    "prepared",
                    &cache_key(&opts, &id),
                    &serde_json::to_value(&prep)?,
                )?;
            }
        }
    }
    if let Some(to) = &opts.remote_cache.to {
        registry_cache_push(&opts, to, &prep, &staging, &base, base_id.as_deref());
    }
    // SBOM of the final image, read back from the staged layers (cache hits included).
    let sbom = match &opts.sbom {
        Some(_) => Some(crate::sbom::for_staged_image(
            &staging.blobs(),
            &layers,
            &config,
            &opts.recipe,
            opts.epoch,
            p,
        )?),
        None => None,
    };
    // Side outputs are written in full before anything is published (or pushed), then
    // renamed into place with the image: a failure leaves the old image and files as
    // they were.
    let mut side = Vec::new();
    if let (Some(path), Some(bytes)) = (&opts.sbom, &sbom) {
        side.push(SideOutput::write(path, bytes)?);
    }
    if let Some(path) = &opts.record {
        side.push(SideOutput::write(
            path,
            &serde_json::to_vec_pretty(&record)?,
        )?);
    }
    let pending = crate::sink::finish(
        staging,
        &opts.output,
        &Built {
            manifest_digest: &digest,
            manifest: &manifest,
            manifest_size: manifest_bytes.len() as u64,
            epoch: opts.epoch,
            sbom: sbom.as_deref().map(|b| (b, created.as_str())),
        },
        &opts.open.registry,
    )?;
    {
        let _commit = crate::scratch::commit_section();
        pending.commit()?;
        for s in side {
            s.commit()?;
        }
    }
    Ok(BuildSummary {
        output: opts.output.to_string(),
        digest,
        config_digest,
        manifest_size: manifest_bytes.len() as u64,
        layers,
        total_size,
        purged: prep.purged.clone(),
        not_installed: prep.not_installed.clone(),
        files_removed: prep.files_removed,
        bytes_removed: prep.bytes_removed,
        init_size: prep.init_size,
        init_target: prep.init_target.clone(),
        landlock_warnings: prep.landlock_warnings.clone(),
        cache_hit,
        cache_source,
        seconds: t0.elapsed().as_secs_f64(),
        record,
    })
}
