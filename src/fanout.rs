//! Fan-out (issue 13): one OCI image index assembled from per-platform images that
//! were built elsewhere (one CI runner per platform), the way `docker buildx
//! imagetools create` and `crane index append` do. The index is made by the same
//! [`platform_index`] as a one-run multi-platform build and published by the same
//! sink, so the same platform images give the same index digest whichever way they
//! were built, in whatever order they are named.
//!
//! Inputs are pinned by digest (a tag can move between the runners' pushes and this
//! step) and must each be one platform's OCI image manifest; the platform is read
//! from its config. Layers of a registry input never pass through this machine when
//! the output is a registry: they are skipped (already there), mounted (same
//! registry) or streamed registry to registry ([`crate::registry::RemoteBlob`]).
//! Signatures and attestations of the inputs are not copied: they are referrers of
//! the platform manifests, whose digests the index keeps.
use crate::cache::Cache;
use crate::imageref::ImageRef;
use crate::oci::{Digest, Manifest, MediaType};
use crate::platform::{index_platform, platform_name, Arch, Platform};
use crate::record::{BuildRecord, RECORD_ANNOTATION};
use crate::registry::{RegRef, RegistryOptions, RemoteBlob, Session};
use crate::sink::{Built, Staging};
use crate::source::oci::{
    blob_rel, layout_descriptors, layout_store, read_pinned, read_verified, BlobStore,
};
use crate::source::{spec, BlobLocation, LayerBlob, MT_DOCKER_MANIFEST, MT_OCI_MANIFEST};
use crate::targets::{platform_index, same_platform, PlatformManifest};
use crate::transfer::RegistryTransfer;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Where a pinned input lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `registry://HOST/REPO@sha256:...`: the reference without `registry://`.
    Registry(String),
    /// `oci:DIR@sha256:...` or (archive) `oci-archive:FILE@sha256:...`: the manifest
    /// blob of that digest in the layout, tagged or not.
    Layout { path: PathBuf, archive: bool },
}

/// One input as given on the command line, with the manifest digest it pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub given: String,
    pub location: Location,
    pub digest: Digest,
}

impl Pinned {
    /// Parses an input; anything not pinned by digest is refused, naming it.
    pub fn parse(s: &str) -> Result<Pinned> {
        let unpinned = |how: &str| -> anyhow::Error {
            anyhow::anyhow!(
                "input '{s}' is not pinned by digest: a tag can move between the per-platform \
                 builds and this step; name the manifest {how} (the digest `build` printed)"
            )
        };
        if let Some(rest) = s.strip_prefix("registry://") {
            let r = RegRef::parse(rest).with_context(|| format!("input '{s}'"))?;
            let Some(d) = &r.digest else {
                return Err(unpinned(&format!("as registry://{}@sha256:...", r.name())));
            };
            return Ok(Pinned {
                given: s.to_string(),
                digest: Digest::parse(d)?,
                location: Location::Registry(rest.to_string()),
            });
        }
        let (archive, rest) = match s.split_once(':') {
            Some(("oci", rest)) => (false, rest),
            Some(("oci-archive", rest)) => (true, rest),
            _ => bail!(
                "input '{s}': give registry://HOST/REPO@sha256:..., oci:DIR@sha256:... or \
                 oci-archive:FILE@sha256:... (one platform's image manifest each)"
            ),
        };
        let pinned = rest
            .rsplit_once('@')
            .and_then(|(p, d)| Some((p, Digest::parse(d).ok()?)))
            .filter(|(p, _)| !p.is_empty());
        let Some((path, digest)) = pinned else {
            let t = if archive {
                "oci-archive:FILE"
            } else {
                "oci:DIR"
            };
            return Err(unpinned(&format!("as {t}@sha256:...")));
        };
        Ok(Pinned {
            given: s.to_string(),
            digest,
            location: Location::Layout {
                path: PathBuf::from(path),
                archive,
            },
        })
    }
}

/// What `index` is asked to do.
pub struct IndexOptions {
    pub inputs: Vec<String>,
    pub output: ImageRef,
    pub registry: RegistryOptions,
    /// Tar mtime of an `oci-archive:` output's entries (as `build` uses).
    pub epoch: u64,
}

/// One platform of the index, as the summary reports it.
#[derive(Debug, serde::Serialize)]
pub struct IndexEntry {
    pub input: String,
    pub digest: String,
    pub size: u64,
}

/// What `index` printed and published.
#[derive(Debug, serde::Serialize)]
pub struct IndexSummary {
    pub output: String,
    /// The image index digest.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub platforms: BTreeMap<String, IndexEntry>,
    /// What moved over the network, per registry (empty: no registry involved).
    pub transfer: Vec<RegistryTransfer>,
    pub seconds: f64,
}

/// One input, read and staged: its manifest (exact bytes) and platform.
struct Input {
    given: String,
    platform: Platform,
    digest: Digest,
    bytes: Vec<u8>,
}

/// One input's documents, read before any layer moves: the pinned manifest (exact
/// bytes, parsed), its config, the platform the config declares, and where the
/// layers are.
struct Probed {
    input: Input,
    manifest: spec::Manifest,
    from: Origin,
}

impl Probed {
    fn new(
        p: &Pinned,
        platform: Platform,
        bytes: Vec<u8>,
        manifest: spec::Manifest,
        from: Origin,
    ) -> Probed {
        let input = Input {
            given: p.given.clone(),
            platform,
            digest: p.digest.clone(),
            bytes,
        };
        Probed {
            input,
            manifest,
            from,
        }
    }
}

/// Where a probed input's config (read) and layers (not yet) are.
enum Origin {
    Layout {
        store: Box<dyn BlobStore>,
        config: Vec<u8>,
    },
    Registry {
        session: Box<Session>,
        config: PathBuf,
    },
}

/// Assembles the index of `opts.inputs` and publishes it to `opts.output`; a
/// failure leaves the output as it was (for a registry: no index tag).
pub fn assemble(opts: &IndexOptions) -> Result<IndexSummary> {
    let staged_in = crate::sink::scratch_parent(&opts.output);
    assemble_inner(opts).map_err(|e| crate::sink::explain_no_space(e, &staged_in, None))
}

/// Reads every input's manifest and config first, so a wrong platform or two inputs
/// of one platform are refused before any layer is downloaded or copied.
fn assemble_inner(opts: &IndexOptions) -> Result<IndexSummary> {
    let t0 = Instant::now();
    let pins = opts
        .inputs
        .iter()
        .map(|s| Pinned::parse(s))
        .collect::<Result<Vec<_>>>()?;
    check_output(&opts.output)?;
    let cache = pins
        .iter()
        .any(|p| matches!(p.location, Location::Registry(_)))
        .then(|| Cache::open(opts.registry.cache_dir.as_deref()))
        .transpose()?;
    let mut probed = Vec::new();
    for p in &pins {
        let one = match &p.location {
            Location::Layout { path, archive } => probe_layout(p, path, *archive),
            Location::Registry(r) => {
                let cache = cache.as_ref().context("internal error: no cache")?;
                crate::registry::runtime()?.block_on(probe_registry(p, r, &opts.registry, cache))
            }
        };
        probed.push(one.with_context(|| format!("input {}", p.given))?);
    }
    probed.sort_by(|a, b| a.input.platform.cmp(&b.input.platform));
    check_platforms(&probed)?;
    let staging = Staging::for_output(&opts.output, cache.as_ref().map(|c| c.root()))?;
    let to_registry = matches!(opts.output, ImageRef::Registry(_));
    let mut inputs = Vec::new();
    for p in probed {
        let given = p.input.given.clone();
        let staged = match cache.as_ref() {
            Some(c) => crate::registry::runtime()?.block_on(stage(p, &staging, c, to_registry)),
            None => stage_local(p, &staging),
        };
        inputs.push(staged.with_context(|| format!("input {given}"))?);
    }
    let (digest, index_bytes) = publish(opts, staging, &inputs)?;
    Ok(IndexSummary {
        output: opts.output.to_string(),
        digest,
        media_type: MediaType::OciIndex.to_string(),
        size: index_bytes.len() as u64,
        platforms: inputs
            .iter()
            .map(|i| {
                let e = IndexEntry {
                    input: i.given.clone(),
                    digest: i.digest.to_string(),
                    size: i.bytes.len() as u64,
                };
                (i.platform.to_string(), e)
            })
            .collect(),
        transfer: opts.registry.transfers.snapshot(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Outputs that can hold an index; checked before any work.
fn check_output(out: &ImageRef) -> Result<()> {
    if let ImageRef::DockerArchive { .. } = out {
        bail!("--output {out}: a docker-archive holds one image, not an image index; write oci:, oci-archive: or registry://");
    }
    crate::sink::check_output(out)
}

/// The index, staged and published with the platform manifests (pushed first to a
/// registry). Returns its digest and bytes.
fn publish(opts: &IndexOptions, staging: Staging, inputs: &[Input]) -> Result<(String, Vec<u8>)> {
    let entries = inputs
        .iter()
        .map(|i| PlatformManifest {
            platform: i.platform.clone(),
            digest: i.digest.clone(),
            size: i.bytes.len() as u64,
        })
        .collect();
    let (_, index_bytes) = platform_index(entries)?;
    let digest = staging.put_blob(&index_bytes)?;
    let first = inputs.first().context("no input images")?;
    let manifest = Manifest::from_slice(&first.bytes, &format!("manifest {}", first.digest))?;
    let platforms: Vec<(String, Vec<u8>)> = inputs
        .iter()
        .map(|i| (i.digest.to_string(), i.bytes.clone()))
        .collect();
    let pending = crate::sink::finish(
        staging,
        &opts.output,
        &Built {
            manifest_digest: &digest,
            manifest: &manifest,
            manifest_size: index_bytes.len() as u64,
            platforms: &platforms,
            epoch: opts.epoch,
            sbom: None,
            attachments: &[],
        },
        &opts.registry,
    )?;
    crate::sink::commit_all(pending, Vec::new())?;
    Ok((digest, index_bytes))
}

/// An index holds one image per platform: two inputs of one platform (as
/// containerd's matcher sees it: `linux/arm64` and `linux/arm64/v8` are one) are
/// refused, naming both.
fn check_platforms(probed: &[Probed]) -> Result<()> {
    let platforms: Vec<&Platform> = probed.iter().map(|p| &p.input.platform).collect();
    if let Some((i, j)) = same_platform(&platforms) {
        let (a, b) = (&probed[i].input, &probed[j].input);
        let (pa, pb) = (&a.platform, &b.platform);
        let what = if pa == pb {
            format!("both {pa}")
        } else {
            format!("both {pa} ({pa} and {pb} are one platform)")
        };
        bail!(
            "inputs {} and {} are {what}: an image index holds one image per platform",
            a.given,
            b.given
        );
    }
    Ok(())
}

/// The pinned document must be one platform's OCI image manifest with an image
/// config: an index, a Docker manifest or an artifact is refused, saying what it is.
fn check_manifest(bytes: &[u8], what: &str) -> Result<spec::Manifest> {
    let v = spec::parse_json(bytes, what, spec::MAX_MANIFEST_BYTES)?;
    let mt = v.get("mediaType").and_then(|m| m.as_str());
    if v.get("manifests").is_some() || mt.is_some_and(spec::is_index) {
        let listed = spec::parse_index(bytes, what, mt.unwrap_or(crate::source::MT_OCI_INDEX))
            .map(|i| crate::source::oci::platforms_of(&i.manifests).join(", "))
            .unwrap_or_default();
        bail!(
            "{what} is an image index ({listed}), not one platform's image: name the manifest of \
             each platform (`skopeo inspect --raw` lists their digests)"
        );
    }
    if mt == Some(MT_DOCKER_MANIFEST) {
        bail!(
            "{what} is a Docker schema 2 manifest; the index lists OCI manifests: convert it \
             with `skopeo copy --format oci` and name the new digest"
        );
    }
    spec::parse_manifest(bytes, what, MT_OCI_MANIFEST)
}

/// The platform an image config declares ([`index_platform`], the one-run build's
/// rule), which the build record of an image made by nemoclaw-build must agree
/// with: the platform it was built for, and the machine of the init it was given.
/// A config edited after the build, or a pin naming another image than meant, is
/// refused naming both platforms.
fn config_platform(config: &[u8], cwhat: &str, manifest: &[u8], what: &str) -> Result<Platform> {
    let platform = index_platform(&spec::parse_config(config, cwhat)?.value, cwhat)?;
    let v = spec::parse_json(manifest, what, spec::MAX_MANIFEST_BYTES)?;
    let record = v
        .get("annotations")
        .and_then(|a| a.get(RECORD_ANNOTATION))
        .and_then(|r| r.as_str());
    let Some(text) = record else {
        return Ok(platform);
    };
    let rec = BuildRecord::parse(text).with_context(|| what.to_string())?;
    if let Some(built) = &rec.platform {
        let built = Platform::parse(built).with_context(|| format!("{what}: build record"))?;
        if !built.matches(&platform) {
            bail!("{what}: its build record says it was built for {built}, but its {cwhat} says {platform}");
        }
    }
    if let Some(init) = &rec.init {
        let machine = Arch::from_rust_target(&init.target);
        if let Some(arch) = machine.filter(|a| *a != platform.arch) {
            bail!(
                "{what}: its init is for {} ({}, build record), but its {cwhat} says {platform}",
                Platform::linux(arch),
                init.target
            );
        }
    }
    Ok(platform)
}

/// A layout's index.json (or an index it lists) that names `digest` with a platform
/// must name the config's platform (a variant counts only when both give one).
fn cross_check(declared: &[spec::Descriptor], digest: &Digest, platform: &Platform) -> Result<()> {
    for d in declared.iter().filter(|d| &d.digest == digest) {
        let Some(p) = &d.platform else { continue };
        let variant_differs =
            matches!((&p.variant, &platform.variant), (Some(a), Some(b)) if a != b);
        if p.os != platform.os || p.architecture != platform.arch.name() || variant_differs {
            bail!(
                "the layout lists manifest {digest} as {}, but its config says {platform}",
                platform_name(&p.os, &p.architecture, p.variant.as_deref())
            );
        }
    }
    Ok(())
}

/// Reads a layout input's manifest and config (verified) and the platform they
/// declare; nothing is copied yet.
fn probe_layout(p: &Pinned, path: &std::path::Path, archive: bool) -> Result<Probed> {
    let store = layout_store(path, archive)?;
    let what = format!("manifest {}", p.digest);
    let bytes = read_pinned(store.as_ref(), &p.digest, &what, spec::MAX_MANIFEST_BYTES)?;
    let manifest = check_manifest(&bytes, &what)?;
    let cwhat = format!("config {}", manifest.config.digest);
    let config = read_verified(
        store.as_ref(),
        &manifest.config,
        &cwhat,
        spec::MAX_CONFIG_BYTES,
    )?;
    let platform = config_platform(&config, &cwhat, &bytes, &what)?;
    cross_check(&layout_descriptors(store.as_ref())?, &p.digest, &platform)?;
    let from = Origin::Layout { store, config };
    Ok(Probed::new(p, platform, bytes, manifest, from))
}

/// Reads a registry input's manifest (checked against the pin) and config (into
/// the cache) and the platform they declare; no layer is fetched yet.
async fn probe_registry(
    p: &Pinned,
    reference: &str,
    ro: &RegistryOptions,
    cache: &Cache,
) -> Result<Probed> {
    let session = Session::open(reference, ro).await?;
    let what = format!("manifest {}", p.digest);
    let (bytes, _) = session.manifest(&session.r, &what).await?;
    let manifest = check_manifest(&bytes, &what)?;
    let cfg = &manifest.config;
    let config = session
        .fetch_blob(cache, &cfg.digest, cfg.size, "config")
        .await?;
    let cwhat = format!("config {}", cfg.digest);
    let config_bytes = BlobLocation::whole(&config)?.read_all(spec::MAX_CONFIG_BYTES, &cwhat)?;
    let platform = config_platform(&config_bytes, &cwhat, &bytes, &what)?;
    let from = Origin::Registry {
        session: Box::new(session),
        config,
    };
    Ok(Probed::new(p, platform, bytes, manifest, from))
}

/// Stages an input with no registry involved (no cache, no runtime).
fn stage_local(p: Probed, staging: &Staging) -> Result<Input> {
    match p.from {
        Origin::Layout { store, config } => {
            stage_layout(store.as_ref(), &p.manifest, &config, staging)?;
            staging.put_blob(&p.input.bytes)?;
            Ok(p.input)
        }
        Origin::Registry { .. } => bail!("internal error: a registry input without a cache"),
    }
}

/// Stages a probed input: its config and layers, then its manifest.
async fn stage(p: Probed, staging: &Staging, cache: &Cache, remote: bool) -> Result<Input> {
    match &p.from {
        Origin::Layout { store, config } => {
            stage_layout(store.as_ref(), &p.manifest, config, staging)?
        }
        Origin::Registry { session, config } => {
            staging.add_cached(config, &p.manifest.config.digest)?;
            stage_registry(session, &p.manifest, cache, staging, remote).await?
        }
    }
    staging.put_blob(&p.input.bytes)?;
    Ok(p.input)
}

/// Copies a layout input's config and layers (verified) into the staging layout.
fn stage_layout(
    store: &dyn BlobStore,
    m: &spec::Manifest,
    config: &[u8],
    staging: &Staging,
) -> Result<()> {
    staging.put_blob(config)?;
    for (i, l) in m.layers.iter().enumerate() {
        let loc = store
            .locate(&blob_rel(&l.digest)?)
            .with_context(|| format!("layer {} ({})", i + 1, l.digest))?;
        if loc.len != l.size {
            bail!(
                "layer {} ({}): size mismatch: the manifest says {} bytes, the blob has {}",
                i + 1,
                l.digest,
                l.size,
                loc.len
            );
        }
        let blob = LayerBlob::new(i, loc, &l.media_type, Some(l.digest.to_string()), None)?;
        staging.copy_layer(&blob)?;
    }
    Ok(())
}

/// A registry input's layers: they stay in their registry for a registry output
/// (`remote`), else they are pulled into the cache (verified while streaming) and
/// linked into the staging.
async fn stage_registry(
    s: &Session,
    m: &spec::Manifest,
    cache: &Cache,
    staging: &Staging,
    remote: bool,
) -> Result<()> {
    use futures_util::{StreamExt, TryStreamExt};
    if remote {
        for l in &m.layers {
            let location = s.r.name();
            staging.remote.add(
                &l.digest,
                RemoteBlob {
                    location,
                    size: l.size,
                },
            );
        }
        return Ok(());
    }
    let paths: Vec<PathBuf> = futures_util::stream::iter(m.layers.iter().enumerate())
        .map(|(i, l)| {
            let label = format!("layer {} ({})", i + 1, crate::registry::short(&l.digest));
            async move { s.fetch_blob(cache, &l.digest, l.size, &label).await }
        })
        .buffered(crate::registry::CONCURRENCY)
        .try_collect()
        .await?;
    for (l, path) in m.layers.iter().zip(paths) {
        staging.add_cached(&path, &l.digest)?;
    }
    Ok(())
}
