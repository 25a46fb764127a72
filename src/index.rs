//! Reading a base image into the rootfs model: every layer streamed once, in order,
//! checked against the config's diff_ids. Used by `build` and by the commands that
//! inspect images (`audit`, `diff`, `sbom`, `verify`).
use crate::digest::HashingReader;
use crate::progress::{Progress, Warning, WarningCode};
use crate::rootfs::{IndexOptions, Rootfs};
use crate::source::{BaseImage, Compression};
use crate::tarread::TarReader;
use anyhow::{bail, Context, Result};

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
        let tar_of = |r, spill: Option<std::fs::File>| {
            let tar = TarReader::new(r, &layer.label).max_entries(opts.max_entries);
            // the archive only: never the trailer after its end
            match spill {
                Some(f) => tar.spill_to(f),
                None => tar,
            }
        };
        // An uncompressed layer's stored bytes are its tar, so the decoder's digest is
        // its diff_id too: a rootfs tarball is hashed once while indexing, not twice.
        let (stats, tar_digest) = if layer.compression == Compression::None {
            let r: &mut dyn std::io::Read = &mut dec;
            (
                fs.apply_tar(i, &layer.label, tar_of(r, spill_file), opts)?,
                None,
            )
        } else {
            let mut h = HashingReader::new(&mut dec);
            let r: &mut dyn std::io::Read = &mut h;
            let stats = fs.apply_tar(i, &layer.label, tar_of(r, spill_file), opts)?;
            (stats, Some(h.finish().0))
        };
        let raw_digest = dec.finish().with_context(|| layer.label.clone())?;
        let diff_id = tar_digest.unwrap_or_else(|| raw_digest.clone());
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

/// Where the records of [`index_via_records`] are kept and looked up.
pub struct RecordCache<'a> {
    /// The local cache (None: `--no-cache`, records are made and dropped).
    pub cache: Option<&'a crate::cache::Cache>,
    /// `--cache-from` repositories asked for records the local cache lacks.
    pub from: &'a [String],
    pub registry: &'a crate::registry::RegistryOptions,
}

/// The model of a base read through per-layer index records, with what each layer
/// is (its compression and diff_id, for shipping it without its bytes).
pub struct Indexed {
    pub fs: Rootfs,
    pub layers: Vec<IndexedLayer>,
    /// Layers whose record came from a cache (nothing of them was read).
    pub from_cache: usize,
}

#[derive(Debug, Clone)]
pub struct IndexedLayer {
    pub digest: String,
    pub diff_id: String,
    pub compression: Compression,
    /// Bytes the record holds for files a build may rewrite (setid, capabilities).
    pub held: std::collections::BTreeMap<String, std::sync::Arc<Vec<u8>>>,
}

/// One base layer as the record pass sees it: a descriptor, fetched or not.
struct Want {
    label: String,
    digest: Option<String>,
    diff_id: Option<String>,
}

fn wants(base: &BaseImage) -> Vec<Want> {
    match &base.deferred {
        Some(d) if d.descriptors.len() == d.count => d
            .descriptors
            .iter()
            .enumerate()
            .map(|(i, l)| Want {
                label: format!("layer {} ({})", i + 1, crate::registry::short(&l.digest)),
                digest: Some(l.digest.clone()),
                diff_id: l.diff_id.clone(),
            })
            .collect(),
        _ => base
            .layers
            .iter()
            .map(|l| Want {
                label: l.label.clone(),
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
            })
            .collect(),
    }
}

/// The compressed digests of a base's layers that are known (fetched or not).
pub fn layer_digests(base: &BaseImage) -> Vec<String> {
    wants(base).into_iter().filter_map(|w| w.digest).collect()
}

/// Whiteout mode's index pass (issue 17.3): each layer's record from the local cache
/// or `--cache-from`, else made by reading the layer once (layers concurrently, as
/// many as there are cores), then replayed in order into the model. A base seen
/// before reads no layer at all: deferred registry layers stay unfetched.
pub fn index_via_records(
    base: &mut BaseImage,
    max_entries: u64,
    rc: &RecordCache,
    progress: &Progress,
) -> Result<Indexed> {
    use crate::layer_index::store;
    let wants = wants(base);
    if let Some(c) = rc.cache {
        let digests: Vec<String> = wants.iter().filter_map(|w| w.digest.clone()).collect();
        store::fetch(rc.from, &digests, c, rc.registry, progress);
    }
    // Compressed blobs only: each record is parsed when its layer is replayed, so one
    // layer's entries are in memory at a time, besides the model.
    let mut blobs: Vec<Option<Vec<u8>>> = wants
        .iter()
        .map(|w| store::local_bytes(rc.cache?, w.digest.as_deref()?, progress))
        .collect();
    let cached: Vec<bool> = blobs.iter().map(Option::is_some).collect();
    let missing: Vec<usize> = (0..wants.len()).filter(|i| !cached[*i]).collect();
    if !missing.is_empty() {
        for (i, blob) in read_missing(base, &wants, &missing, max_entries, rc.cache, progress)? {
            blobs[i] = Some(blob);
        }
    }
    let mut fs = Rootfs::new();
    let mut layers = Vec::with_capacity(wants.len());
    let mut from_cache = 0;
    for (i, w) in wants.iter().enumerate() {
        let blob = blobs[i]
            .take()
            .ok_or_else(|| anyhow::anyhow!("{}: no index", w.label))?;
        let rec = match (record_for(&blob, w), rc.cache) {
            (Ok(r), _) => {
                from_cache += usize::from(cached[i]);
                r
            }
            (Err(e), Some(c)) if cached[i] => {
                store::ignore(c, w.digest.as_deref().unwrap_or(""), &blob, &e, progress);
                let (_, blob) = read_missing(base, &wants, &[i], max_entries, rc.cache, progress)?
                    .pop()
                    .ok_or_else(|| anyhow::anyhow!("{}: no index", w.label))?;
                record_for(&blob, w).map_err(|e| anyhow::anyhow!("{}: {e}", w.label))?
            }
            (Err(e), _) => bail!("{}: the layer index just made: {e}", w.label),
        };
        let stats = rec.replay(&mut fs, i, &w.label, max_entries)?;
        let note = if cached[i] {
            " (layer index cache)"
        } else {
            ""
        };
        progress.log(&format!(
            "indexed {}: {} entries, {} whiteouts{note}",
            w.label, stats.entries, stats.whiteouts
        ));
        layers.push(IndexedLayer {
            digest: rec.layer.clone(),
            diff_id: rec.diff_id.clone(),
            compression: rec.compression,
            held: rec.held.clone(),
        });
    }
    Ok(Indexed {
        fs,
        layers,
        from_cache,
    })
}

/// The record in `blob`, checked against the layer's digest and diff_id when known.
fn record_for(
    blob: &[u8],
    w: &Want,
) -> std::result::Result<crate::layer_index::LayerRecord, crate::layer_index::store::Unfit> {
    match &w.digest {
        Some(d) => crate::layer_index::store::checked(blob, d, w.diff_id.as_deref()),
        // A tarball learns its digest by the read that made this record.
        None => crate::layer_index::LayerRecord::parse(blob)
            .map_err(crate::layer_index::store::Unfit::Invalid),
    }
}

/// One layer to read into a record: from its file, or from its download as it
/// arrives.
struct Job {
    i: usize,
    label: String,
    digest: Option<String>,
    size: Option<u64>,
    src: JobSource,
}

enum JobSource {
    File(crate::source::BlobLocation),
    Stream(crate::source::TeeReader),
}

/// Reads the layers `missing` into records. A registry base not fetched yet is
/// streamed: each layer is downloaded, verified, inflated and indexed in one pass
/// (its bytes go to the cache and the indexer at once); others are read from their
/// files. As many layers at once as there are cores.
fn read_missing(
    base: &mut BaseImage,
    wants: &[Want],
    missing: &[usize],
    max_entries: u64,
    cache: Option<&crate::cache::Cache>,
    progress: &Progress,
) -> Result<Vec<(usize, Vec<u8>)>> {
    let streamed = base
        .deferred
        .as_ref()
        .and_then(|d| (d.descriptors.len() == wants.len()).then(|| d.descriptors.clone()));
    let Some(descs) = streamed else {
        base.ensure_layers()?;
        let jobs = missing
            .iter()
            .map(|&i| {
                let l = &base.layers[i];
                Job {
                    i,
                    label: l.label.clone(),
                    digest: l.digest.clone(),
                    size: Some(l.size),
                    src: JobSource::File(l.location.clone()),
                }
            })
            .collect();
        let scanned = scan_jobs(jobs, max_entries, progress, || Ok(()))?;
        return keep_records(base, wants, scanned, cache, progress);
    };
    let mut tees: crate::source::Tees = (0..wants.len()).map(|_| None).collect();
    let mut jobs = Vec::new();
    for &i in missing {
        let (tee, reader) = crate::source::Tee::channel();
        tees[i] = Some(tee);
        jobs.push(Job {
            i,
            label: wants[i].label.clone(),
            digest: Some(descs[i].digest.clone()),
            size: Some(descs[i].size),
            src: JobSource::Stream(reader),
        });
    }
    let scanned = scan_jobs(jobs, max_entries, progress, || base.fetch_streaming(tees))?;
    keep_records(base, wants, scanned, cache, progress)
}

/// Runs `jobs` on as many threads as there are cores while `feed` (the download that
/// streams into them, if any) runs on this one. A failed feed is the error (the
/// readers then saw a cut stream); else the first failing layer in base order.
fn scan_jobs(
    jobs: Vec<Job>,
    max_entries: u64,
    progress: &Progress,
    feed: impl FnOnce() -> Result<()>,
) -> Result<Vec<(usize, crate::layer_index::Scanned)>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len())
        .max(1);
    let queue = std::sync::Mutex::new(jobs.into_iter());
    let results: std::sync::Mutex<Vec<(usize, Result<crate::layer_index::Scanned>)>> =
        Default::default();
    let fed = std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                // Every job is taken even after a failure: a streamed layer's download
                // waits for its reader.
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some(job) = next else { break };
                let i = job.i;
                let r = scan_job(job, max_entries, progress);
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, r));
            });
        }
        feed()
    });
    fed?;
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results
        .into_iter()
        .map(|(i, r)| r.map(|sc| (i, sc)))
        .collect()
}

fn scan_job(
    job: Job,
    max_entries: u64,
    progress: &Progress,
) -> Result<crate::layer_index::Scanned> {
    let (raw, bar): (Box<dyn std::io::Read + Send>, _) = match job.src {
        JobSource::File(loc) => {
            let bar = progress.bytes(&format!("reading {}", job.label), loc.len);
            (Box::new(loc.open()?), bar)
        }
        // The download shows its own progress.
        JobSource::Stream(r) => (Box::new(r), crate::progress::Task::hidden()),
    };
    let r = crate::layer_index::scan(
        raw,
        job.digest.as_deref(),
        job.size,
        &job.label,
        max_entries,
        bar.clone(),
    );
    bar.finish("");
    r
}

/// Checks each new record against the config's diff_id, learns the digests a tarball
/// base did not know, and stores the records in the cache.
fn keep_records(
    base: &mut BaseImage,
    wants: &[Want],
    scanned: Vec<(usize, crate::layer_index::Scanned)>,
    cache: Option<&crate::cache::Cache>,
    progress: &Progress,
) -> Result<Vec<(usize, Vec<u8>)>> {
    let mut out = Vec::new();
    for (i, sc) in scanned {
        let label = &wants[i].label;
        if let Some(expected) = &wants[i].diff_id {
            if *expected != sc.diff_id {
                bail!(
                    "{label}: uncompressed content hashes to {}, but the config's diff_id is {expected}",
                    sc.diff_id
                );
            }
        }
        if let Some(l) = base.layers.get_mut(i) {
            l.digest.get_or_insert_with(|| sc.digest.clone());
            l.diff_id.get_or_insert_with(|| sc.diff_id.clone());
        }
        if let Some(c) = cache {
            if let Err(e) = crate::layer_index::store::local_put(c, &sc.digest, &sc.blob) {
                progress.warn(Warning::new(
                    WarningCode::LayerIndex,
                    format!("{label}: cannot cache its layer index: {e:#}"),
                ));
            }
        }
        out.push((i, sc.blob));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageref::ImageRef;
    use crate::source::{open_image, OpenOptions};
    use crate::testutil::{digest, LayoutBuilder, TarBuilder};

    fn index_layout(b: LayoutBuilder) -> Result<BaseImage> {
        let t = tempfile::tempdir()?;
        b.write(t.path());
        let r = ImageRef::parse(&format!("oci:{}:latest", t.path().display()))?;
        let mut img = open_image(&r, &OpenOptions::default())?;
        index_base(&mut img, &IndexOptions::default(), &Progress::silent())?;
        Ok(img)
    }

    /// The config's diff_id is checked against the content whether the layer is
    /// stored compressed or not (an uncompressed one takes its digest as diff_id).
    #[test]
    fn diff_ids_are_checked_for_compressed_and_plain_layers() {
        let a = TarBuilder::new().file("a", b"a", 0o644).build();
        let b = TarBuilder::new().file("b", b"b", 0o644).build();
        let plain = index_layout(LayoutBuilder::new().layer_mangled(&a, |_| a.clone())).unwrap();
        let l = &plain.layers[0];
        assert_eq!(l.compression, Compression::None);
        assert_eq!(l.diff_id.as_deref(), Some(digest(&a).as_str()));
        assert_eq!(
            l.digest, l.diff_id,
            "an uncompressed layer's diff_id is its digest"
        );
        for (case, blob) in [("plain", b.clone()), ("gzip", crate::testutil::gzip(&b))] {
            let e = index_layout(LayoutBuilder::new().layer_mangled(&a, |_| blob))
                .err()
                .unwrap_or_else(|| panic!("{case}: a wrong diff_id was accepted"));
            let msg = format!("{e:#}");
            assert!(
                msg.contains(&format!("hashes to {}", digest(&b)))
                    && msg.contains(&format!("diff_id is {}", digest(&a))),
                "{case}: {msg}"
            );
        }
    }
}
