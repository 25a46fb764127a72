//! The build pipeline: source -> rootfs model -> steps -> layer writer -> sink.
use crate::compress::Settings;
use crate::image::{canonical, rfc3339};
use crate::layer::{compress_blob, LayerOutput, LayerWriter};
use crate::oci::{Digest, MediaType};
use crate::progress::{Progress, Warning, WarningCode};
use crate::recipe::Recipe;
use crate::record::BuildRecord;
use crate::rootfs::{parent_of, Body, Content, FileData, IndexOptions, Kind, Rootfs};
use crate::scratch::{Purpose, ScratchDir};
use crate::sink::{Built, SideOutput, Staging};
use crate::source::{open_image, BaseImage, Compression};
use crate::steps::{self, StepOptions, StepsReport};
use crate::tarread::TarReader;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

pub use crate::build_model::{BuildOptions, LayerSummary, PurgeMode, TOOL_VERSION};

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
    pub cache_source: CacheSource,
    pub seconds: f64,
    pub record: BuildRecord,
    /// Bytes and blobs moved per registry (base pull, cache, push).
    pub transfer: Vec<crate::transfer::RegistryTransfer>,
    /// Every warning the build printed, in order.
    pub warnings: Vec<String>,
    /// The same warnings with their stable codes (`{"code": "mutable-tag", "message": …}`).
    pub warning_details: Vec<crate::progress::Warning>,
    /// Whiteout mode's base index: how many layers, how many from the layer index
    /// cache (nothing of them read). None when no index pass ran (a cache hit, rewrite).
    pub layer_index: Option<LayerIndexUse>,
}

/// See [`BuildSummary::layer_index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LayerIndexUse {
    pub layers: usize,
    pub from_cache: usize,
}

pub use crate::index::{index_base, index_base_spilling};

/// Loads the bytes of modified nodes whose content still lives in a base layer
/// (one pass per layer that has any), so the new layer can carry them.
fn materialize(
    fs: &mut Rootfs,
    base: &mut BaseImage,
    indexed: Option<&crate::index::Indexed>,
    progress: &Progress,
) -> Result<()> {
    // Hardlinks into the new layer whose target is not in it become copies.
    let links: Vec<(String, String)> = fs
        .nodes
        .iter()
        .filter(|(_, n)| n.modified && n.kind() == Kind::Hardlink)
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
        if let (true, Some(l)) = (n.modified, n.content().and_then(Content::base_layer)) {
            wanted.entry(l).or_default().insert(k.to_string());
        }
    }
    // The layer index holds the bytes of the files a build commonly rewrites.
    if let Some(ix) = indexed {
        take_held(fs, &mut wanted, ix);
    }
    if let Some((l, k)) = wanted.iter().next().filter(|_| base.deferred.is_some()) {
        // The layer index holds no such content: fetch the layers, never guess.
        progress.log(&format!(
            "fetching the base layers: /{} needs its content from layer {}",
            k.first().map(String::as_str).unwrap_or(""),
            l + 1
        ));
        base.ensure_layers()?;
    }
    for (l, keys) in wanted {
        let layer = &base.layers[l];
        let task = progress.bytes(
            &format!("loading changed files of {}", layer.label),
            layer.size,
        );
        let mut tar = TarReader::new(layer.open_tar_progress(&task)?, &layer.label);
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
            if let Some(f) = fs.nodes.get_mut(k.as_str()).and_then(|n| n.as_file_mut()) {
                f.content = Content::Bytes(Arc::new(bytes));
            }
        }
    }
    Ok(())
}

/// Fills wanted contents from what the layer records hold; what they lack stays wanted.
fn take_held(
    fs: &mut Rootfs,
    wanted: &mut BTreeMap<usize, BTreeSet<String>>,
    ix: &crate::index::Indexed,
) {
    for (l, keys) in wanted.iter_mut() {
        let Some(held) = ix.layers.get(*l).map(|x| &x.held) else {
            continue;
        };
        keys.retain(|k| match (held.get(k), fs.nodes.get_mut(k.as_str())) {
            (Some(b), Some(n)) => match n.as_file_mut() {
                Some(f) if b.len() as u64 == f.content.len() => {
                    f.content = Content::Bytes(b.clone());
                    false
                }
                _ => true,
            },
            _ => true,
        });
    }
    wanted.retain(|_, keys| !keys.is_empty());
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
    (i, layer): (usize, &crate::source::LayerBlob),
    bar: &crate::progress::Task,
    staging: &Staging,
    settings: &Settings,
    epoch: u64,
    carried: &mut BTreeMap<String, Carried>,
) -> Result<LayerOutput> {
    let mut w = LayerWriter::create(&staging.blobs(), settings, epoch)?;
    let mut tar = TarReader::new(layer.open_tar_progress(bar)?, &layer.label);
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
            .filter(|_| node.kind() == Kind::Hardlink)
            .and_then(|t| carried.get(t))
            .cloned();
        match via {
            Some(Carried::Bytes(bytes)) => {
                let file = FileData::new(Content::Bytes(bytes.clone()));
                node.set_body(Body::File(file));
                w.append(&key, &node, &mut &bytes[..])?;
            }
            Some(Carried::Link(t)) => {
                node.set_body(Body::hardlink(&t));
                w.append(&key, &node, &mut std::io::empty())?;
            }
            None => w.append(&key, &node, &mut tar)?,
        }
    }
    tar.finish()?;
    w.finish()
}

/// The entries of the new top layer in archive order, each with whether it is a
/// whiteout (`dir/.wh.name`): modified nodes, their parents, and (with `whiteouts`)
/// one whiteout per removed base path that no removed parent's whiteout covers.
fn upper_entries(fs: &Rootfs, whiteouts: bool) -> Vec<(String, bool)> {
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
        return Vec::new();
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
    all
}

/// The new top layer: every added or modified node, its parent directories, and
/// (in whiteout mode) whiteouts for removed base paths.
fn write_upper(
    fs: &Rootfs,
    staging: &Staging,
    (settings, epoch): (&Settings, u64),
    whiteouts: bool,
    task: (&Progress, &str),
) -> Result<Option<LayerOutput>> {
    let all = upper_entries(fs, whiteouts);
    if all.is_empty() {
        return Ok(None);
    }
    let task = task
        .0
        .task(task.1, Some(all.len() as u64), crate::progress::Unit::Items);
    let mut w = LayerWriter::create(&staging.blobs(), settings, epoch)?;
    for (k, is_wh) in all {
        task.advance(1);
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
        // A file's size is its content's length, so the header matches the bytes.
        match n.content() {
            Some(Content::Bytes(b)) => w.append(&k, &node, &mut &b[..])?,
            Some(Content::Host(h)) => w.append(&k, &node, &mut h.reader())?,
            Some(Content::Layer { layer, .. }) => {
                bail!(
                    "/{k}: content in layer {} was not loaded",
                    *layer as u64 + 1
                )
            }
            Some(Content::Empty) | None => w.append(&k, &node, &mut std::io::empty())?,
        }
    }
    Ok(Some(w.finish()?))
}

use crate::build_cache::{Ancestor, BaseIdentity, CacheLookup, CacheSource, Prepared};

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

/// The full, uncached path: index the base, apply the steps, write base layers
/// and the recipe layer. Returns the final rootfs too (for gates and SBOM).
fn prepare(
    opts: &BuildOptions,
    base: &mut BaseImage,
    staging: &Staging,
) -> Result<(Prepared, Rootfs, Option<LayerIndexUse>)> {
    let spill = spill_dir(opts, staging)?;
    let (mut fs, indexed) = index_for_mode(opts, base, spill.as_ref())?;
    crate::steps::arch::check_rootfs_arch(&fs, opts.arch, &base.name)?;
    let step_opts = StepOptions {
        artifacts: opts.artifacts.clone(),
        strict: opts.strict,
        epoch: opts.epoch,
        arch: opts.arch,
    };
    let rep: StepsReport = steps::apply_all(&mut fs, &opts.recipe, &step_opts)?;
    log_purge(&opts.progress, &rep);
    materialize(&mut fs, base, indexed.as_ref(), &opts.progress)?;
    let used = indexed.as_ref().map(|ix| LayerIndexUse {
        layers: ix.layers.len(),
        from_cache: ix.from_cache,
    });
    let mut layers = match indexed.filter(|ix| can_leave_remote(opts, base, ix)) {
        Some(ix) => remote_base_layers(opts, base, &ix, staging)?,
        None => {
            base.ensure_layers()?;
            write_base_layers(opts, base, &fs, staging)?
        }
    };
    let whiteouts = opts.purge_mode == PurgeMode::Whiteout;
    let settings = (&opts.compression, opts.epoch);
    let task = (&opts.progress, "writing the recipe layer");
    if let Some(u) = write_upper(&fs, staging, settings, whiteouts, task)? {
        opts.progress.log(&format!(
            "recipe layer {} ({} entries, {} bytes)",
            u.digest, u.entries, u.size
        ));
        layers.push(LayerSummary::new(u, "new")?);
    }
    // The spilled copies go away with `spill` here.
    for l in &mut base.layers {
        l.spill = None;
    }
    drop(spill);
    let ancestors = artifact_ancestors(&fs, &opts.recipe, opts.epoch)?;
    Ok((prepared(layers, &rep, &fs, ancestors), fs, used))
}

/// The model of the base. Whiteout mode goes through per-layer index records (a base
/// seen before is not read at all); rewrite mode reads every layer, keeping the
/// purged ones uncompressed in `spill` for the rewrite that follows.
fn index_for_mode(
    opts: &BuildOptions,
    base: &mut BaseImage,
    spill: Option<&ScratchDir>,
) -> Result<(Rootfs, Option<crate::index::Indexed>)> {
    let max = IndexOptions::default().max_entries;
    if opts.purge_mode == PurgeMode::Whiteout {
        let rc = crate::index::RecordCache {
            cache: opts.cache.as_ref(),
            from: &opts.remote_cache.from,
            registry: &opts.open.registry,
        };
        let mut ix = crate::index::index_via_records(base, max, &rc, &opts.progress)?;
        let fs = std::mem::take(&mut ix.fs);
        return Ok((fs, Some(ix)));
    }
    base.ensure_layers()?;
    let fs = index_base_spilling(
        base,
        &IndexOptions::default(),
        &opts.progress,
        spill.map(|d| d.path()),
    )?;
    Ok((fs, None))
}

/// Whether the base layers can stay in their registry (never fetched): a registry
/// output that reads none of their bytes, and none needs recompressing.
fn can_leave_remote(opts: &BuildOptions, base: &BaseImage, ix: &crate::index::Indexed) -> bool {
    base.deferred
        .as_ref()
        .is_some_and(|d| d.location.is_some() && d.descriptors.len() == ix.layers.len())
        && opts.may_leave_layers_remote()
        && (opts.compression.algorithm == crate::compress::Algorithm::None
            || ix.layers.iter().all(|l| l.compression != Compression::None))
}

/// The base layers of a whiteout build whose bytes were never fetched: described
/// from their records, pushed later by mount, skip or registry-to-registry stream.
fn remote_base_layers(
    opts: &BuildOptions,
    base: &BaseImage,
    ix: &crate::index::Indexed,
    staging: &Staging,
) -> Result<Vec<LayerSummary>> {
    let d = base
        .deferred
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: layers already fetched", base.name))?;
    let location = d.location.clone().unwrap_or_default();
    let mut layers = Vec::new();
    for (i, (desc, l)) in d.descriptors.iter().zip(&ix.layers).enumerate() {
        staging.remote.add(
            &desc.digest,
            crate::registry::RemoteBlob {
                location: location.clone(),
                size: desc.size,
            },
        );
        layers.push(LayerSummary {
            digest: Digest::parse(&desc.digest)?,
            diff_id: Digest::parse(&l.diff_id)?,
            size: desc.size,
            media_type: layer_media_type(l.compression),
            action: "reused".into(),
        });
        opts.progress.log(&format!(
            "layer {} ({}) stays in registry://{location}: never downloaded",
            i + 1,
            crate::registry::short(&desc.digest)
        ));
    }
    Ok(layers)
}

/// Rewrite mode reads purged layers twice: keep them uncompressed after the first
/// pass, beside the staging dir (removed on a signal, swept when a killed build left it).
fn spill_dir(opts: &BuildOptions, staging: &Staging) -> Result<Option<ScratchDir>> {
    if opts.purge_mode != PurgeMode::Rewrite {
        return Ok(None);
    }
    let parent = crate::scratch::parent_dir(staging.path());
    let dir = ScratchDir::create_in(&parent, Purpose::Spill, true)
        .with_context(|| format!("cannot create a spill directory in {}", parent.display()))?;
    Ok(Some(dir))
}

fn log_purge(p: &Progress, rep: &StepsReport) {
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
}

/// Every base layer into the staging layout: rewritten (rewrite mode, when it holds
/// removed paths), recompressed (an uncompressed base layer), or copied as it is.
fn write_base_layers(
    opts: &BuildOptions,
    base: &BaseImage,
    fs: &Rootfs,
    staging: &Staging,
) -> Result<Vec<LayerSummary>> {
    let p = &opts.progress;
    let settings = &opts.compression;
    let mask = rewrite_mask(fs);
    let mut carried = BTreeMap::new();
    let mut layers = Vec::new();
    for (i, l) in base.layers.iter().enumerate() {
        let touched = opts.purge_mode == PurgeMode::Rewrite && (mask >> i.min(127)) & 1 == 1;
        let verb = match (touched, l.compression) {
            (true, _) => "rewriting",
            (false, Compression::None)
                if settings.algorithm != crate::compress::Algorithm::None =>
            {
                "compressing"
            }
            _ => "copying",
        };
        let bar = p.bytes(&format!("{verb} {}", l.label), l.size);
        let (out, action) = if touched {
            let out = rewrite_layer(
                fs,
                (i, l),
                &bar,
                staging,
                settings,
                opts.epoch,
                &mut carried,
            )?;
            (out, "rewritten")
        } else if l.compression == Compression::None
            && settings.algorithm != crate::compress::Algorithm::None
        {
            let mut r = bar.wrap_read(l.open_raw()?);
            (
                compress_blob(&staging.blobs(), settings, &mut r)?,
                "recompressed",
            )
        } else {
            (reuse_layer(l, staging)?, "reused")
        };
        p.done(
            bar,
            &format!(
                "{action} {} -> {} ({} bytes)",
                l.label, out.digest, out.size
            ),
        );
        layers.push(LayerSummary::new(out, action)?);
    }
    Ok(layers)
}

/// A base layer copied byte for byte into the staging layout.
fn reuse_layer(l: &crate::source::LayerBlob, staging: &Staging) -> Result<LayerOutput> {
    staging.copy_layer(l)?;
    let digest = l.digest.clone().unwrap_or_default();
    let path = staging.blobs().join(digest.trim_start_matches("sha256:"));
    Ok(LayerOutput {
        digest,
        size: l.size,
        diff_id: l.diff_id.clone().unwrap_or_default(),
        media_type: layer_media_type(l.compression).to_string(),
        path,
        entries: 0,
    })
}

/// The OCI layer type for a blob compressed with `c`.
fn layer_media_type(c: Compression) -> MediaType {
    match c {
        Compression::None => MediaType::OciLayer,
        Compression::Gzip => MediaType::OciLayerGzip,
        Compression::Zstd => MediaType::OciLayerZstd,
    }
}

/// Ancestors of the artifacts destination as they are in the result (path, mode,
/// uid, gid, mtime): the artifacts layer repeats them, cached or not.
fn artifact_ancestors(fs: &Rootfs, recipe: &Recipe, epoch: u64) -> Result<Vec<Ancestor>> {
    let mut ancestors = Vec::new();
    let Some(a) = &recipe.artifacts else {
        return Ok(ancestors);
    };
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
                n.mtime.min(epoch)
            } else {
                epoch
            };
            ancestors.push((cur.clone(), n.mode, n.uid, n.gid, mtime));
        }
    }
    Ok(ancestors)
}

/// What the cache keeps of an uncached build.
fn prepared(
    layers: Vec<LayerSummary>,
    rep: &StepsReport,
    fs: &Rootfs,
    ancestors: Vec<Ancestor>,
) -> Prepared {
    let text = |path: &str| {
        fs.read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let purge = rep.purge.as_ref();
    Prepared {
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
    }
}

/// The artifacts layer: the artifacts plus their ancestor directories as they are
/// in the result, so cached and uncached builds write identical bytes.
fn artifacts_layer(
    opts: &BuildOptions,
    prep: &Prepared,
    staging: &Staging,
    builder: Option<&steps::builder::Builder>,
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
    let src = match builder {
        Some(b) => Some(steps::ArtifactsSource::Builder(b)),
        None => opts.artifacts.as_deref().map(steps::ArtifactsSource::Host),
    };
    let digest =
        steps::apply_artifacts_from(&mut afs, Some(&accounts), &opts.recipe, src, staging.path())?;
    if digest.is_none() {
        return Ok((None, None, afs));
    }
    let settings = (&opts.compression, opts.epoch);
    let task = (&opts.progress, "writing the artifacts layer");
    let out = write_upper(&afs, staging, settings, false, task)?;
    Ok((out, digest, afs))
}

pub fn build(opts: BuildOptions) -> Result<BuildSummary> {
    let staged_in = crate::sink::scratch_parent(&opts.output);
    let cache = opts.cache.as_ref().map(|c| c.root().to_path_buf());
    build_inner(opts).map_err(|e| crate::sink::explain_no_space(e, &staged_in, cache.as_deref()))
}

fn build_inner(mut opts: BuildOptions) -> Result<BuildSummary> {
    let t0 = Instant::now();
    check_outputs(&opts)?;
    let staging = Staging::for_output(&opts.output, opts.cache.as_ref().map(|c| c.root()))?;
    let img = build_image(&mut opts, &staging)?;
    publish(&opts, staging, &img.layers, &img.done)?;
    Ok(img.summary(&opts, t0))
}

/// One platform's image, staged (blobs, config, manifest) but not published.
pub(crate) struct ImageBuilt {
    layer_index: Option<LayerIndexUse>,
    prep: Prepared,
    layers: Vec<LayerSummary>,
    done: Assembled,
    cache_source: CacheSource,
}

impl ImageBuilt {
    pub(crate) fn manifest_digest(&self) -> &Digest {
        &self.done.digest
    }
    pub(crate) fn manifest_bytes(&self) -> &[u8] {
        &self.done.manifest_bytes
    }
    /// The image config's exact bytes (what an index entry's platform is read from).
    pub(crate) fn config_bytes(&self) -> &[u8] {
        &self.done.config_bytes
    }
    pub(crate) fn manifest(&self) -> &crate::oci::Manifest {
        &self.done.manifest
    }
    pub(crate) fn record(&self) -> &BuildRecord {
        &self.done.record
    }

    pub(crate) fn summary(self, opts: &BuildOptions, t0: Instant) -> BuildSummary {
        let (prep, done, layers) = (self.prep, self.done, self.layers);
        let total_size = layers.iter().map(|l| l.size).sum::<u64>()
            + done.config_bytes.len() as u64
            + done.manifest_bytes.len() as u64;
        BuildSummary {
            output: opts.output.to_string(),
            digest: done.digest.to_string(),
            config_digest: done.manifest.config.digest.to_string(),
            manifest_size: done.manifest_bytes.len() as u64,
            layers,
            total_size,
            purged: prep.purged,
            not_installed: prep.not_installed,
            files_removed: prep.files_removed,
            bytes_removed: prep.bytes_removed,
            init_size: prep.init_size,
            init_target: prep.init_target,
            landlock_warnings: prep.landlock_warnings,
            cache_hit: self.cache_source != CacheSource::None,
            cache_source: self.cache_source,
            seconds: t0.elapsed().as_secs_f64(),
            record: done.record,
            transfer: opts.open.registry.transfers.snapshot(),
            warnings: opts.progress.warning_messages(),
            warning_details: opts.progress.warnings(),
            layer_index: self.layer_index,
        }
    }
}

/// Builds one image into `staging`: opens the base, works out its architecture,
/// takes the cached part or prepares it, adds the artifacts, assembles config and
/// manifest. Several of these may share one staging layout (one per platform).
pub(crate) fn build_image(opts: &mut BuildOptions, staging: &Staging) -> Result<ImageBuilt> {
    // One reporter for the build, whoever reports (registry sessions too).
    opts.open.registry.progress = opts.progress.clone();
    // A registry base's layers are fetched by `prepare`, so a cache hit never downloads them.
    opts.open.lazy_layers = true;
    refuse_moving_base(opts)?;
    let mut base = open_image(&opts.base, &opts.open)?;
    opts.arch =
        crate::platform::image_arch(&base.config, opts.open.platform.as_deref(), &base.name)?;
    opts.progress.log(&format!(
        "base {}: {} layer(s)",
        base.name,
        base.layer_count()
    ));
    let builder = open_builder(opts, &base)?;
    let mut identity = BaseIdentity::resolve(opts, &base);
    let mut layer_index = None;
    let (prep, full_fs, cache_source) =
        match crate::build_cache::lookup(opts, staging, &mut identity)? {
            CacheLookup::Hit { prepared, source } => (*prepared, None, source),
            CacheLookup::Miss => {
                let (prep, fs, used) = prepare(opts, &mut base, staging)?;
                layer_index = used;
                (prep, Some(fs), CacheSource::None)
            }
        };
    let cache_hit = cache_source != CacheSource::None;
    let art = artifacts_phase(opts, &prep, staging, full_fs, builder.as_ref())?;
    let layers = result_layers(opts, &prep, cache_hit, &art)?;
    let done = assemble(opts, &base, &identity, &prep, &layers, &art, staging)?;
    if !cache_hit {
        crate::build_cache::store(opts, &prep, staging, &base, &identity)?;
    }
    if let Some(to) = &opts.remote_cache.to {
        crate::build_cache::registry_push(opts, to, &prep, staging, &base, &identity);
        if let Some(c) = &opts.cache {
            let digests = crate::index::layer_digests(&base);
            crate::layer_index::store::push(to, &digests, c, &opts.open.registry, &opts.progress);
        }
    }
    Ok(ImageBuilt {
        layer_index,
        prep,
        layers,
        done,
        cache_source,
    })
}

/// `--strict` refuses a registry base named by tag alone, as it refuses such a builder:
/// tags move, so the build could not be reproduced from its inputs.
fn refuse_moving_base(opts: &BuildOptions) -> Result<()> {
    let crate::imageref::ImageRef::Registry(r) = &opts.base else {
        return Ok(());
    };
    let rr = crate::registry::RegRef::parse(r)?;
    if opts.strict && rr.digest.is_none() {
        bail!(
            "--base registry://{r}: a tag, and tags move; --strict refuses a base not pinned by digest (registry://{}@sha256:...)",
            rr.name()
        );
    }
    Ok(())
}

/// `--artifacts-image`, opened before any work (a pull error or a `--strict`
/// refusal costs nothing) for the build's platform: `--platform`, else the base's.
fn open_builder(opts: &BuildOptions, base: &BaseImage) -> Result<Option<steps::builder::Builder>> {
    let Some(spec) = &opts.artifacts_image else {
        return Ok(None);
    };
    if opts.recipe.artifacts.is_none() {
        bail!(
            "--artifacts-image {} given, but the recipe has no [artifacts] section saying where they go",
            spec.reference
        );
    }
    let platform = opts
        .open
        .platform
        .clone()
        .or_else(|| steps::builder::platform_of(&base.config));
    // The builder's layers are read whole (the artifacts come from them): not lazily.
    let open = crate::source::OpenOptions {
        platform: platform.clone(),
        registry: opts.open.registry.clone(),
        lazy_layers: false,
    };
    let b = steps::builder::open(spec, &open, opts.strict)?;
    opts.progress.log(&format!(
        "builder {} ({}): {} layer(s), artifacts from {}",
        b.record.name,
        b.record.digest,
        b.image.layers.len(),
        spec.path
    ));
    let theirs = steps::builder::platform_of(&b.image.config);
    if let (Some(want), Some(got)) = (&platform, &theirs) {
        // Component by component: `linux/arm` is not a prefix of `linux/arm64`.
        if !want.split('/').zip(got.split('/')).all(|(w, g)| w == g) {
            opts.progress.warn(Warning::new(
                WarningCode::BuilderPlatform,
                format!(
                    "builder {} is {got}, the build is {want}: native files in its artifacts may not run",
                    b.record.name
                ),
            ));
        }
    }
    Ok(Some(b))
}

/// Before any work: the outputs must not be the user's other files; then what killed
/// builds left beside them goes.
pub(crate) fn check_outputs(opts: &BuildOptions) -> Result<()> {
    crate::sink::check_output(&opts.output)?;
    if opts.attest.enabled()
        && matches!(opts.output, crate::imageref::ImageRef::DockerArchive { .. })
    {
        anyhow::bail!(
            "--sign-key/--attest: docker-archive: has no place for signatures or attestations; \
             write oci:, oci-archive: or registry://"
        );
    }
    for (path, what) in [(&opts.sbom, "--sbom"), (&opts.record, "--record")] {
        if let Some(path) = path {
            crate::sink::check_side_output(path, what)?;
        }
    }
    sweep_stale(opts);
    Ok(())
}

/// The artifacts layer (if the recipe has artifacts), after the gates passed.
struct ArtifactsLayer {
    /// Some only together with `digest` (no artifacts, no layer).
    output: Option<LayerOutput>,
    /// The digest of the artifacts as given (what the record names).
    digest: Option<Digest>,
    /// The builder image they were taken from (`--artifacts-image`).
    image: Option<crate::record::ArtifactsImageRecord>,
}

/// Writes the artifacts layer, then runs the gates: on the complete result when this
/// build has it (a miss), else on what is new.
fn artifacts_phase(
    opts: &BuildOptions,
    prep: &Prepared,
    staging: &Staging,
    full_fs: Option<Rootfs>,
    builder: Option<&steps::builder::Builder>,
) -> Result<ArtifactsLayer> {
    let (output, digest, afs) = artifacts_layer(opts, prep, staging, builder)?;
    for w in crate::steps::arch::check_artifacts_arch(&afs, opts.arch)? {
        opts.progress
            .warn(Warning::new(WarningCode::ArtifactArch, w));
    }
    match full_fs {
        Some(mut fs) => {
            steps::merge_artifacts(&mut fs, &afs)?;
            steps::gates(&fs, &opts.recipe)?;
        }
        None => steps::artifact_gates(&afs, &opts.recipe)?,
    }
    Ok(ArtifactsLayer {
        output,
        digest: digest.as_deref().map(Digest::parse).transpose()?,
        image: builder.map(|b| b.record.clone()),
    })
}

/// The layers of the result, in order: the prepared ones (marked when cached), then
/// the artifacts layer.
fn result_layers(
    opts: &BuildOptions,
    prep: &Prepared,
    cache_hit: bool,
    art: &ArtifactsLayer,
) -> Result<Vec<LayerSummary>> {
    let mut layers: Vec<LayerSummary> = prep.layers.clone();
    if cache_hit {
        for l in &mut layers {
            l.action = format!("cached ({})", l.action);
        }
    }
    if let Some(a) = &art.output {
        opts.progress.log(&format!(
            "artifacts layer {} ({} entries, {} bytes)",
            a.digest, a.entries, a.size
        ));
        layers.push(LayerSummary::new(a.clone(), "new")?);
    }
    Ok(layers)
}

/// The image documents, staged as blobs.
struct Assembled {
    created: String,
    config: crate::oci::ImageConfig,
    config_bytes: Vec<u8>,
    record: BuildRecord,
    manifest: crate::oci::Manifest,
    manifest_bytes: Vec<u8>,
    digest: Digest,
}

/// Config, record and manifest (see [`crate::assemble`]), written to the staging blobs.
fn assemble(
    opts: &BuildOptions,
    base: &BaseImage,
    identity: &BaseIdentity,
    prep: &Prepared,
    layers: &[LayerSummary],
    art: &ArtifactsLayer,
    staging: &Staging,
) -> Result<Assembled> {
    use crate::assemble as a;
    let created = rfc3339(opts.epoch);
    let mut config = a::image_config(
        &base.config,
        layers,
        &opts.recipe,
        &opts.build_args,
        &created,
    )?;
    let new_layers = a::NewLayers::describe(
        &opts.recipe,
        opts.purge_mode,
        prep.layers.len() > base.layer_count(),
        art.output.as_ref().and(art.digest.as_ref()),
    );
    config.history = a::history(
        std::mem::take(&mut config.history),
        base.layer_count(),
        &created,
        &new_layers,
    );
    let record = a::record(
        opts,
        a::RecordInputs {
            base_name: &base.name,
            base_digest: identity.learned(base),
            artifacts_digest: art.digest.clone(),
            artifacts_image: art.image.clone(),
            init_target: &prep.init_target,
        },
    )?;
    let config_bytes = canonical(&config);
    staging.put_blob(&config_bytes)?;
    let manifest = a::manifest(
        a::config_descriptor(&config_bytes),
        layers,
        &created,
        &record,
    );
    let manifest_bytes = canonical(&manifest);
    let digest = Digest::parse(&staging.put_blob(&manifest_bytes)?)?;
    Ok(Assembled {
        created,
        config,
        config_bytes,
        record,
        manifest,
        manifest_bytes,
        digest,
    })
}

/// The signature and attestations of the built image (none without `--sign-key`
/// and `--attest`).
fn attachments(
    opts: &BuildOptions,
    done: &Assembled,
    spdx: Option<&[u8]>,
    cyclonedx: Option<&[u8]>,
) -> Result<crate::attest::Attachments> {
    if !opts.attest.enabled() {
        return Ok(Default::default());
    }
    let c = &done.config;
    let platform = crate::platform::platform_name(
        &c.os,
        &c.architecture,
        c.extra.get("variant").and_then(|v| v.as_str()),
    );
    let repository = match &opts.output {
        crate::imageref::ImageRef::Registry(r) => crate::registry::reference::RegRef::parse(r)
            .map(|r| r.name())
            .unwrap_or_default(),
        _ => String::new(),
    };
    let img = crate::attest::ImageToAttest {
        subject: crate::oci::Descriptor::new(
            crate::oci::MediaType::OciManifest,
            done.digest.clone(),
            done.manifest_bytes.len() as u64,
        ),
        record: &done.record,
        platform: &platform,
        spdx,
        cyclonedx,
        repository: &repository,
    };
    let atts = crate::attest::attach(&img, &opts.attest)?;
    for a in atts.all() {
        opts.progress.log(&format!(
            "attached {} ({})",
            crate::attest::store::describe(a),
            a.digest
        ));
    }
    Ok(atts)
}

/// Writes the side outputs (SBOM, record) in full, publishes the image (or pushes
/// it), then renames everything into place together: a failure before the commit
/// leaves the old image and files as they were.
fn publish(
    opts: &BuildOptions,
    staging: Staging,
    layers: &[LayerSummary],
    done: &Assembled,
) -> Result<()> {
    let (sbom, attachments) = sbom_and_attachments(opts, &staging, layers, done)?;
    let mut side = Vec::new();
    if let (Some(path), Some(bytes)) = (&opts.sbom, &sbom) {
        side.push(SideOutput::write(path, bytes)?);
    }
    if let Some(path) = &opts.record {
        side.push(SideOutput::write(path, &done.record.pretty()?)?);
    }
    let pending = crate::sink::finish(
        staging,
        &opts.output,
        &Built {
            manifest_digest: &done.digest,
            manifest: &done.manifest,
            manifest_size: done.manifest_bytes.len() as u64,
            platforms: &[],
            epoch: opts.epoch,
            sbom: opts
                .sbom
                .as_ref()
                .and(sbom.as_deref())
                .map(|b| (b, done.created.as_str())),
            attachments: &[(done.digest.clone(), attachments)],
        },
        &opts.open.registry,
    )?;
    crate::sink::commit_all(pending, side)
}

/// The SPDX document of one staged image (when `--sbom` or an SBOM attestation wants
/// it, read back from the staged layers, cache hits included) and its attachments.
fn sbom_and_attachments(
    opts: &BuildOptions,
    staging: &Staging,
    layers: &[LayerSummary],
    done: &Assembled,
) -> Result<(Option<Vec<u8>>, crate::attest::Attachments)> {
    let kinds = opts.attest.kinds;
    let (sbom, cyclonedx) = if opts.sbom.is_some() || kinds.sbom || kinds.cyclonedx {
        let (spdx, cdx) = crate::sbom::for_staged_image(
            &staging.blobs(),
            layers,
            &done.config.to_value(),
            &opts.recipe,
            opts.epoch,
            &opts.progress,
            kinds.cyclonedx,
        )?;
        (Some(spdx), cdx)
    } else {
        (None, None)
    };
    let attachments = attachments(opts, done, sbom.as_deref(), cyclonedx.as_deref())?;
    Ok((sbom, attachments))
}

impl ImageBuilt {
    /// Signature and attestations of this platform's image (a multi-platform build
    /// attaches them to each platform manifest).
    pub(crate) fn attachments(
        &self,
        opts: &BuildOptions,
        staging: &Staging,
    ) -> Result<crate::attest::Attachments> {
        Ok(sbom_and_attachments(opts, staging, &self.layers, &self.done)?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::Node;

    /// The fallback of the layer index: a step that changes a file whose content the
    /// records do not hold makes the build fetch the layers and carry the real bytes;
    /// changing captured files, or the setid files the records hold, fetches nothing.
    #[test]
    fn content_the_index_lacks_is_fetched_never_guessed() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let t = tempfile::tempdir().unwrap();
        let c = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
        let tool = b"\x7fELF-setuid-tool".to_vec();
        let plain = b"\x7fELF-plain-not-held".to_vec();
        let l0 = crate::testutil::TarBuilder::new()
            .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o644)
            .file_owned("usr/bin/tool", &tool, 0o4755, 0, 0)
            .file("usr/bin/plain", &plain, 0o755)
            .build();
        let dir = t.path().join("base");
        crate::testutil::LayoutBuilder::new().layer(&l0).write(&dir);
        let r = format!("oci:{}:latest", dir.display());
        let ro = Default::default();
        let rc = crate::index::RecordCache {
            cache: Some(&c),
            from: &[],
            registry: &ro,
        };
        let p = Progress::silent();
        let n = std::sync::Arc::new(AtomicUsize::new(0));
        let mut warm = crate::layer_index::tests::deferred(&r, n.clone());
        crate::index::index_via_records(&mut warm, 1000, &rc, &p).unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 1, "unseen: fetched to index");
        for (edit, bytes, fetched) in [
            ("etc/passwd", None, 0),
            ("usr/bin/tool", Some(&tool), 0),
            ("usr/bin/plain", Some(&plain), 1),
        ] {
            let n = std::sync::Arc::new(AtomicUsize::new(0));
            let mut base = crate::layer_index::tests::deferred(&r, n.clone());
            let mut ix = crate::index::index_via_records(&mut base, 1000, &rc, &p).unwrap();
            let mut fs = std::mem::take(&mut ix.fs);
            assert_eq!(n.load(Ordering::SeqCst), 0, "seen: nothing fetched");
            if edit == "etc/passwd" {
                fs.write(edit, b"root:x:0:0::/root:/bin/sh\n".to_vec())
                    .unwrap();
            } else {
                let node = fs.get_mut(edit).unwrap();
                node.mode = 0o755;
                node.modified = true;
            }
            materialize(&mut fs, &mut base, Some(&ix), &p).unwrap();
            assert_eq!(n.load(Ordering::SeqCst), fetched, "{edit}");
            match (fs.get(edit).unwrap().content(), bytes) {
                (Some(Content::Bytes(b)), Some(want)) => assert_eq!(**b, **want, "{edit}"),
                (Some(Content::Bytes(_)), None) => {}
                (other, _) => panic!("{edit}: {other:?}"),
            }
        }
    }

    /// The recipe layer's plan: modified nodes with their parents, and one whiteout
    /// per removed path that no removed parent's whiteout covers.
    #[test]
    fn upper_entries_plan_parents_and_whiteouts() {
        let mut fs = Rootfs::new();
        fs.insert("usr/bin/keep", Node::file(0o755, 0, 0, b"k".to_vec()))
            .unwrap();
        fs.insert("etc/new", Node::file(0o644, 0, 0, b"n".to_vec()))
            .unwrap();
        for n in fs.nodes.values_mut() {
            n.modified = false;
        }
        fs.nodes.get_mut("etc/new").unwrap().modified = true;
        // usr/bin/a and a whole opt/ tree were removed; srv/ was never an entry of
        // any layer, only srv/y was.
        for r in ["usr/bin/a", "opt", "opt/x", "srv/y"] {
            fs.removed.insert(r.to_string());
        }
        let got = upper_entries(&fs, true);
        let want: Vec<(String, bool)> = [
            (".wh.opt", true),
            ("etc", false),
            ("etc/new", false),
            ("srv", false),
            ("srv/.wh.y", true),
            ("usr", false),
            ("usr/bin", false),
            ("usr/bin/.wh.a", true),
        ]
        .iter()
        .map(|(k, w)| (k.to_string(), *w))
        .collect();
        assert_eq!(got, want);
        let plain = upper_entries(&fs, false);
        assert_eq!(
            plain,
            vec![("etc".to_string(), false), ("etc/new".to_string(), false)]
        );
    }
}
