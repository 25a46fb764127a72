//! Reading a base image into the rootfs model: every layer streamed once, in order,
//! checked against the config's diff_ids. Used by `build` and by the commands that
//! inspect images (`audit`, `diff`, `sbom`, `verify`).
use crate::digest::HashingReader;
use crate::progress::Progress;
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
