//! Sources: where a base image comes from. Every transport is reduced to the same
//! [`BaseImage`]: a config plus layer blobs that can be *streamed* from where they
//! already are (a file, or a byte range inside an archive). Nothing is extracted.
//! The local transports live here, with the dispatch over all of them; the image
//! types they share are in [`crate::image`] (re-exported), below the registry.
pub mod docker_archive;
pub mod oci;
#[cfg(test)]
mod tests;

use crate::imageref::ImageRef;
use anyhow::{bail, Context, Result};
use std::path::Path;

// What a reader of a base needs comes with `source`: the image types, the
// document parser and the media types.
pub use crate::image::spec::{
    self, MT_DOCKER_LAYER_FOREIGN, MT_DOCKER_LAYER_FOREIGN_GZIP, MT_OCI_LAYER_ND,
    MT_OCI_LAYER_ND_GZIP, MT_OCI_LAYER_ND_ZSTD,
};
pub use crate::image::{
    sniff_compression, BaseImage, BlobLocation, Compression, DeferredLayers, LayerBlob,
    LayerDescriptor, Tee, TeeReader, Tees, ThreadedDecoder,
};
pub use crate::oci::media_type::{
    MT_DOCKER_CONFIG, MT_DOCKER_LAYER, MT_DOCKER_LAYER_GZIP, MT_DOCKER_LIST, MT_DOCKER_MANIFEST,
    MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD,
    MT_OCI_MANIFEST,
};
pub use crate::platform::host_arch;

/// Options for opening images.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// `os/arch[/variant]` for image indexes; defaults to linux and the host arch.
    pub platform: Option<String>,
    pub registry: crate::registry::RegistryOptions,
    /// Registry bases: fetch only manifest and config now, layers on first read.
    pub lazy_layers: bool,
}

/// The name recorded for a local image: its file name only, so the same inputs
/// give the same digest wherever they are on disk.
pub fn portable_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub fn open_image(r: &ImageRef, opts: &OpenOptions) -> Result<BaseImage> {
    match r {
        ImageRef::Tar(path) => open_rootfs_tar(path, opts.platform.as_deref()),
        ImageRef::OciDir { path, tag } => oci::open_layout_dir(path, tag.as_deref(), opts),
        ImageRef::OciArchive { path, tag } => oci::open_layout_archive(path, tag.as_deref(), opts),
        ImageRef::DockerArchive { path, tag } => docker_archive::open(path, tag.as_deref()),
        ImageRef::Registry(reference) => crate::registry::pull(
            reference,
            &opts.registry,
            opts.platform.as_deref(),
            opts.lazy_layers,
        ),
    }
    .with_context(|| format!("cannot read image {r}"))
}

/// The image index `r` names: its digest and entries. OCI layouts, OCI archives
/// and registries can hold one; other formats are a single image (an error).
pub fn open_index(r: &ImageRef, opts: &OpenOptions) -> Result<(String, Vec<spec::Descriptor>)> {
    match r {
        ImageRef::OciDir { path, tag } => oci::layout_index(path, false, tag.as_deref()),
        ImageRef::OciArchive { path, tag } => oci::layout_index(path, true, tag.as_deref()),
        ImageRef::Registry(reference) => crate::registry::index_of(reference, &opts.registry),
        _ => bail!("{r} is a single-platform image format"),
    }
}

/// What a reader (`audit`, `sbom`, ...) of an image index tells the user: the index
/// has several platforms, and which one it read (that of `config`). None for a
/// single image (registries are not asked twice: local layouts only).
pub fn index_note(r: &ImageRef, config: &serde_json::Value) -> Option<String> {
    if !matches!(r, ImageRef::OciDir { .. } | ImageRef::OciArchive { .. }) {
        return None;
    }
    let (_, entries) = open_index(r, &OpenOptions::default()).ok()?;
    let field = |k: &str| config.get(k).and_then(|v| v.as_str()).unwrap_or("?");
    Some(format!(
        "{r} is an image index ({}); reading platform {}/{} (choose with --platform)",
        oci::platforms_of(&entries).join(", "),
        field("os"),
        field("architecture")
    ))
}

/// The platforms of the image index `r` names (`--platform all`).
pub fn index_platforms(r: &ImageRef, opts: &OpenOptions) -> Result<Vec<String>> {
    open_index(r, opts)
        .map(|(_, entries)| oci::platforms_of(&entries))
        .with_context(|| format!("cannot list the platforms of {r}"))
}

/// A plain rootfs tarball has no config: it is of the platform asked for (else the
/// host's); the build checks that against its /bin/sh.
fn open_rootfs_tar(path: &Path, platform: Option<&str>) -> Result<BaseImage> {
    let loc = BlobLocation::whole(path)?;
    let layer = LayerBlob::new(0, loc, MT_OCI_LAYER, None, None)?;
    let platform = platform.map(crate::platform::Platform::parse).transpose()?;
    let mut config = serde_json::json!({
        "architecture": platform.as_ref().map_or(host_arch(), |p| p.arch.name()),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created_by": format!("rootfs tarball {}", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())}],
    });
    if let Some(v) = platform.and_then(|p| p.variant) {
        config["variant"] = serde_json::Value::String(v);
    }
    Ok(BaseImage {
        name: format!("tar:{}", portable_name(path)),
        manifest_digest: None,
        config,
        layers: vec![layer],
        deferred: None,
        _scratch: None,
    })
}
