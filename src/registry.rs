//! Registry transport (issue 6): pull a base by digest, push the result. Not
//! implemented yet: the errors say so instead of pretending.
use crate::source::{BaseImage, OpenOptions};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (HOST[:PORT]) that may be spoken to over plain HTTP (loopback always may).
    pub insecure: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub quiet: bool,
}

pub fn pull(reference: &str, _opts: &OpenOptions) -> Result<BaseImage> {
    bail!("registry://{reference}: registry sources are not supported yet; export the image with `skopeo copy docker://... oci:DIR:TAG` and use --base oci:DIR:TAG")
}

/// Pushes the OCI layout in `layout` (blobs + the manifest `manifest_digest`) to `reference`.
pub fn push(
    layout: &Path,
    reference: &str,
    manifest_digest: &str,
    manifest: &[u8],
    _opts: &RegistryOptions,
) -> Result<String> {
    let _ = (layout, manifest_digest, manifest);
    bail!("registry://{reference}: pushing is not supported yet; write --output oci:DIR:TAG and push it with `skopeo copy oci:DIR:TAG docker://...`")
}
