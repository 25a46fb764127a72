//! What a build is given and what it reports per layer: the vocabulary its phases
//! (`pipeline`, `build_cache`, `assemble`) and the record share, kept apart so none
//! of them needs to import the pipeline that drives them.
use crate::compress::Settings;
use crate::imageref::ImageRef;
use crate::layer::LayerOutput;
use crate::oci::{Digest, MediaType};
use crate::progress::Progress;
use crate::recipe::Recipe;
pub use crate::record::PurgeMode;
use crate::source::OpenOptions;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct BuildOptions {
    pub base: ImageRef,
    pub output: ImageRef,
    pub recipe: Recipe,
    pub artifacts: Option<PathBuf>,
    /// `--artifacts-image`/`--artifacts-image-path`: artifacts from a builder image.
    pub artifacts_image: Option<crate::steps::builder::BuilderSpec>,
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
    /// The image's architecture. The pipeline sets it from the base's config and
    /// the platform asked for (`open.platform`) before any work; callers leave the
    /// default.
    pub arch: crate::platform::Arch,
    /// `--sign-key` / `--attest`: signature and attestations (default: none).
    pub attest: crate::attest::AttestOptions,
}

impl BuildOptions {
    /// Whether layers of a registry cache hit may stay in the registry (issue 17): only
    /// when the image goes to a registry and nothing of this build reads their bytes
    /// (an SBOM, as a file or an attestation, reads every layer).
    pub fn may_leave_layers_remote(&self) -> bool {
        let k = &self.attest.kinds;
        matches!(self.output, ImageRef::Registry(_))
            && self.sbom.is_none()
            && !(k.sbom || k.cyclonedx)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerSummary {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: MediaType,
    /// reused | recompressed | rewritten | new
    pub action: String,
}

impl LayerSummary {
    /// A layer this build wrote (or copied), its digests checked here once.
    pub(crate) fn new(out: LayerOutput, action: &str) -> Result<LayerSummary> {
        Ok(LayerSummary {
            digest: Digest::parse(&out.digest)?,
            diff_id: Digest::parse(&out.diff_id)?,
            size: out.size,
            media_type: MediaType::from(out.media_type.as_str()),
            action: action.into(),
        })
    }
}
