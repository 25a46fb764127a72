//! Multi-platform builds (issue 13): one image per platform from one run, published
//! as one OCI image index. Each platform is an ordinary build ([`build_image`]) into
//! a shared staging layout; the jobs run concurrently when the machine has the cores
//! (each within the single-platform memory bound), in platform order otherwise. The
//! order of the platforms on the command line never changes the result: jobs and
//! index entries are sorted by platform.
use crate::build_model::BuildOptions;
use crate::imageref::ImageRef;
use crate::oci::{Descriptor, Digest, Index, MediaType};
use crate::pipeline::{build_image, check_outputs, BuildSummary, ImageBuilt};
use crate::platform::{index_platform, Platform};
use crate::sink::{Built, SideOutput, Staging};
use crate::source::OpenOptions;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// One platform of a multi-platform build: its base and its artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub platform: Platform,
    pub base: ImageRef,
    pub artifacts: Option<PathBuf>,
}

/// What a multi-platform build printed and published.
#[derive(Debug, serde::Serialize)]
pub struct MultiSummary {
    pub output: String,
    /// The image index digest.
    pub digest: String,
    pub media_type: String,
    pub platforms: BTreeMap<String, BuildSummary>,
    pub seconds: f64,
}

/// A manifest of one platform, as an index lists it.
pub struct PlatformManifest {
    pub platform: Platform,
    pub digest: Digest,
    pub size: u64,
}

impl PlatformManifest {
    /// The entry of a built image: its platform is read from its config by
    /// [`index_platform`], as the fan-out `index` reads it, so both make one index.
    pub fn of_image(config: &[u8], digest: Digest, size: u64) -> Result<PlatformManifest> {
        let what = format!("the config of manifest {digest}");
        let config: serde_json::Value =
            serde_json::from_slice(config).with_context(|| what.clone())?;
        Ok(PlatformManifest {
            platform: index_platform(&config, &what)?,
            digest,
            size,
        })
    }
}

/// The first two platforms of `platforms` that name one platform (containerd's
/// matcher: `linux/arm64` and `linux/arm64/v8` do), by position.
pub fn same_platform(platforms: &[&Platform]) -> Option<(usize, usize)> {
    (0..platforms.len()).find_map(|i| {
        (i + 1..platforms.len())
            .find(|&j| platforms[i].matches(platforms[j]))
            .map(|j| (i, j))
    })
}

/// The OCI image index of per-platform manifests, entries sorted by platform, and
/// its canonical bytes. One function for every index this tool writes (the
/// one-run build, the fan-out `index`, `verify`).
pub fn platform_index(mut entries: Vec<PlatformManifest>) -> Result<(Index, Vec<u8>)> {
    entries.sort_by(|a, b| a.platform.cmp(&b.platform));
    let platforms: Vec<&Platform> = entries.iter().map(|e| &e.platform).collect();
    if let Some((i, j)) = same_platform(&platforms) {
        bail!(
            "platform {} is given twice ({} and {})",
            platforms[i],
            platforms[i],
            platforms[j]
        );
    }
    let manifests = entries
        .into_iter()
        .map(|e| {
            let mut d = Descriptor::new(MediaType::OciManifest, e.digest, e.size);
            d.extra.insert("platform".into(), e.platform.to_json());
            d
        })
        .collect();
    let index = Index::oci(manifests);
    let bytes = crate::oci::canonical(&index);
    Ok((index, bytes))
}

/// Refusals that need no work: a docker-archive output (one platform only), an
/// SBOM file (one document for one image), the same platform twice.
fn check_multi(opts: &BuildOptions, targets: &[Target]) -> Result<()> {
    if let ImageRef::DockerArchive { .. } = opts.output {
        let names: Vec<String> = targets.iter().map(|t| t.platform.to_string()).collect();
        bail!(
            "--output {}: a docker-archive holds one platform, but this build has {} ({}); \
             pick one with --platform, or write oci:, oci-archive: or registry://",
            opts.output,
            targets.len(),
            names.join(", ")
        );
    }
    if let Some(p) = &opts.sbom {
        bail!(
            "--sbom {}: one SBOM file cannot describe {} platform images; run \
             `nemoclaw-build sbom --platform P` on the output for each",
            p.display(),
            targets.len()
        );
    }
    if opts.attest.store == crate::attest::Store::Index {
        bail!(
            "--attest-store index holds one image beside its attestations; with {} platforms \
             use the default --attest-store referrers (each platform image gets its own)",
            targets.len()
        );
    }
    let platforms: Vec<&Platform> = targets.iter().map(|t| &t.platform).collect();
    if let Some((i, j)) = same_platform(&platforms) {
        let (a, b) = (&targets[i], &targets[j]);
        bail!(
            "platform {} is given twice ({} for {}, {} for {})",
            a.platform,
            a.base,
            a.platform,
            b.base,
            b.platform
        );
    }
    Ok(())
}

/// The options of one platform's job: the shared ones with its base, artifacts and
/// platform. No side outputs: the index build writes those.
fn job(opts: &BuildOptions, t: &Target) -> BuildOptions {
    BuildOptions {
        base: t.base.clone(),
        output: opts.output.clone(),
        recipe: opts.recipe.clone(),
        artifacts: t.artifacts.clone(),
        // One builder reference for every platform: an image-index builder gives each
        // job the manifest of its platform.
        artifacts_image: opts.artifacts_image.clone(),
        purge_mode: opts.purge_mode,
        compression: opts.compression,
        epoch: opts.epoch,
        build_args: opts.build_args.clone(),
        strict: opts.strict,
        open: OpenOptions {
            platform: Some(t.platform.to_string()),
            registry: opts.open.registry.clone(),
            lazy_layers: opts.open.lazy_layers,
        },
        progress: opts.progress.clone(),
        cache: opts.cache.clone(),
        remote_cache: opts.remote_cache.clone(),
        sbom: None,
        record: None,
        arch: t.platform.arch,
        attest: opts.attest.clone(),
    }
}

/// Runs the jobs, concurrently when there are at least two cores; results in the
/// jobs' (platform) order. Each error names its platform.
fn run_jobs(jobs: &mut [BuildOptions], staging: &Staging) -> Result<Vec<ImageBuilt>> {
    let one = |o: &mut BuildOptions| {
        let p = o.open.platform.clone().unwrap_or_default();
        build_image(o, staging).with_context(|| format!("platform {p}"))
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 || jobs.len() < 2 {
        return jobs.iter_mut().map(one).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs.iter_mut().map(|o| s.spawn(move || one(o))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a platform build panicked"))
                    .and_then(|r| r)
            })
            .collect()
    })
}

/// Builds every target and publishes one image index to `opts.output`.
pub fn build_platforms(opts: BuildOptions, mut targets: Vec<Target>) -> Result<MultiSummary> {
    let staged_in = crate::sink::scratch_parent(&opts.output);
    let cache = opts.cache.as_ref().map(|c| c.root().to_path_buf());
    build_platforms_inner(&opts, &mut targets)
        .map_err(|e| crate::sink::explain_no_space(e, &staged_in, cache.as_deref()))
}

fn build_platforms_inner(opts: &BuildOptions, targets: &mut [Target]) -> Result<MultiSummary> {
    let t0 = Instant::now();
    targets.sort_by(|a, b| a.platform.cmp(&b.platform));
    check_multi(opts, targets)?;
    check_outputs(opts)?;
    let staging = Staging::for_output(&opts.output, opts.cache.as_ref().map(|c| c.root()))?;
    let mut jobs: Vec<BuildOptions> = targets.iter().map(|t| job(opts, t)).collect();
    let built = run_jobs(&mut jobs, &staging)?;
    let entries = built
        .iter()
        .map(|b| {
            let size = b.manifest_bytes().len() as u64;
            PlatformManifest::of_image(b.config_bytes(), b.manifest_digest().clone(), size)
        })
        .collect::<Result<Vec<_>>>()?;
    let (_, index_bytes) = platform_index(entries)?;
    let digest = staging.put_blob(&index_bytes)?;
    publish_index(opts, staging, &built, targets, &digest, &index_bytes)?;
    let platforms = targets
        .iter()
        .zip(built)
        .zip(&jobs)
        .map(|((t, b), o)| (t.platform.to_string(), b.summary(o, t0)))
        .collect();
    Ok(MultiSummary {
        output: opts.output.to_string(),
        digest,
        media_type: MediaType::OciIndex.to_string(),
        platforms,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Publishes the index (after its manifests, for a registry) and the record file
/// (one record per platform, keyed by platform), together.
fn publish_index(
    opts: &BuildOptions,
    staging: Staging,
    built: &[ImageBuilt],
    targets: &[Target],
    digest: &str,
    index_bytes: &[u8],
) -> Result<()> {
    let mut side = Vec::new();
    if let Some(path) = &opts.record {
        let records: BTreeMap<String, serde_json::Value> = targets
            .iter()
            .zip(built)
            .map(|(t, b)| (t.platform.to_string(), b.record().to_value()))
            .collect();
        side.push(SideOutput::write(
            path,
            &serde_json::to_vec_pretty(&records)?,
        )?);
    }
    let platforms: Vec<(String, Vec<u8>)> = built
        .iter()
        .map(|b| (b.manifest_digest().to_string(), b.manifest_bytes().to_vec()))
        .collect();
    let first = built
        .first()
        .ok_or_else(|| anyhow!("no platform to build"))?;
    // Signature and attestations per platform image, each with that image as subject.
    let attachments = built
        .iter()
        .map(|b| Ok((b.manifest_digest().clone(), b.attachments(opts, &staging)?)))
        .collect::<Result<Vec<_>>>()?;
    let pending = crate::sink::finish(
        staging,
        &opts.output,
        &Built {
            manifest_digest: digest,
            manifest: first.manifest(),
            manifest_size: index_bytes.len() as u64,
            platforms: &platforms,
            epoch: opts.epoch,
            sbom: None,
            attachments: &attachments,
        },
        &opts.open.registry,
    )?;
    crate::sink::commit_all(pending, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(p: &str, d: &[u8]) -> PlatformManifest {
        PlatformManifest {
            platform: Platform::parse(p).unwrap(),
            digest: Digest::of(d),
            size: d.len() as u64,
        }
    }

    /// Index entries are sorted by platform: the order they come in does not change
    /// the index digest; each names its platform.
    #[test]
    fn index_is_sorted_and_names_platforms() {
        let (a, ab) =
            platform_index(vec![pm("linux/arm64", b"a"), pm("linux/amd64", b"x")]).unwrap();
        let (_, bb) =
            platform_index(vec![pm("linux/amd64", b"x"), pm("linux/arm64", b"a")]).unwrap();
        assert_eq!(ab, bb);
        assert_eq!(a.media_type, Some(MediaType::OciIndex));
        let v: serde_json::Value = serde_json::from_slice(&ab).unwrap();
        assert_eq!(v["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(v["manifests"][1]["platform"]["architecture"], "arm64");
        assert_eq!(
            v["manifests"][1]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let e = platform_index(vec![pm("linux/amd64", b"x"), pm("linux/amd64", b"y")]).unwrap_err();
        assert!(e.to_string().contains("linux/amd64 is given twice"), "{e}");
        // linux/arm64 and linux/arm64/v8 are one platform (containerd's matcher).
        let e =
            platform_index(vec![pm("linux/arm64/v8", b"x"), pm("linux/arm64", b"y")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("linux/arm64 is given twice (linux/arm64 and linux/arm64/v8)"),
            "{e}"
        );
    }
}
