//! Registry transport (issue 6). Pulling is not implemented yet: the error says so
//! instead of pretending.
use super::{BaseImage, OpenOptions};
use anyhow::{bail, Result};

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub insecure: Vec<String>,
}

pub fn pull(reference: &str, _opts: &OpenOptions) -> Result<BaseImage> {
    bail!("registry://{reference}: registry sources are not supported yet; export the image with `skopeo copy docker://... oci:DIR:TAG` and use --base oci:DIR:TAG")
}
