//! Sources: where a base image comes from. Every transport is reduced to the same
//! [`BaseImage`]: a config plus layer blobs that can be *streamed* from where they
//! already are (a file, or a byte range inside an archive). Nothing is extracted.
pub mod docker_archive;
pub mod oci;

use crate::digest::VerifyingReader;
use crate::imageref::ImageRef;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A byte range of a file on the host holding one blob.
#[derive(Debug, Clone)]
pub struct BlobLocation {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl BlobLocation {
    pub fn whole(path: &Path) -> Result<BlobLocation> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        Ok(BlobLocation {
            path: path.to_path_buf(),
            offset: 0,
            len,
        })
    }
    pub fn open(&self) -> Result<io::Take<BufReader<File>>> {
        let mut f = File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        Ok(BufReader::with_capacity(256 * 1024, f).take(self.len))
    }
    pub fn read_all(&self, limit: u64, what: &str) -> Result<Vec<u8>> {
        if self.len > limit {
            bail!(
                "{what} is {} bytes, more than the {limit} bytes allowed",
                self.len
            );
        }
        let mut buf = Vec::with_capacity(self.len as usize);
        self.open()?.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// Compression detected from a blob's first bytes (media types lie; magic numbers don't).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// One layer of a base image.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Human name used in every error: "layer 2 (sha256:abcd1234)".
    pub label: String,
    pub media_type: String,
    /// Digest of the blob as stored (compressed); None when unknown (plain tarball base).
    pub digest: Option<String>,
    pub size: u64,
    /// Digest of the uncompressed tar, when the config says it.
    pub diff_id: Option<String>,
    pub compression: Compression,
    pub location: BlobLocation,
}

impl LayerBlob {
    pub fn new(
        index: usize,
        location: BlobLocation,
        media_type: &str,
        digest: Option<String>,
        diff_id: Option<String>,
    ) -> Result<LayerBlob> {
        let mut head = [0u8; 4];
        let mut r = location.open()?;
        let n = read_up_to(&mut r, &mut head)?;
        let compression = sniff_compression(&head[..n]);
        let short = digest.as_deref().map(|d| {
            d.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        });
        let label = match short {
            Some(s) => format!("layer {} (sha256:{s})", index + 1),
            None => format!("layer {} ({})", index + 1, location.path.display()),
        };
        Ok(LayerBlob {
            label,
            media_type: media_type.to_string(),
            digest,
            size: location.len,
            diff_id,
            compression,
            location,
        })
    }

    /// The stored bytes, verified against the descriptor digest and size at EOF.
    pub fn open_raw(&self) -> Result<Box<dyn Read + Send>> {
        let r = self.location.open()?;
        Ok(match &self.digest {
            Some(d) => Box::new(VerifyingReader::new(r, d, Some(self.size), &self.label)),
            None => Box::new(r),
        })
    }

    /// The uncompressed tar stream.
    pub fn open_tar(&self) -> Result<Box<dyn Read + Send>> {
        let raw = self.open_raw()?;
        Ok(match self.compression {
            Compression::None => raw,
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(raw)
                    .with_context(|| format!("{}: bad zstd stream", self.label))?,
            ),
        })
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A base image reduced to what the pipeline needs.
pub struct BaseImage {
    /// The reference as the user wrote it (recorded in annotations).
    pub name: String,
    /// Manifest digest when the source has one (annotation `org.opencontainers.image.base.digest`).
    pub manifest_digest: Option<String>,
    /// The image config as JSON (OCI or Docker; the fields we touch are shared).
    pub config: serde_json::Value,
    pub layers: Vec<LayerBlob>,
    /// Keeps downloaded/unpacked temporary files alive as long as the image is used.
    pub _scratch: Option<tempfile::TempDir>,
}

/// Options for opening images.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// `os/arch[/variant]` for image indexes; defaults to linux and the host arch.
    pub platform: Option<String>,
    pub registry: crate::registry::RegistryOptions,
}

/// The name recorded for a local image: its file name only, so the same inputs
/// give the same digest wherever they are on disk.
pub fn portable_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn open_image(r: &ImageRef, opts: &OpenOptions) -> Result<BaseImage> {
    match r {
        ImageRef::Tar(path) => open_rootfs_tar(path),
        ImageRef::OciDir { path, tag } => oci::open_layout_dir(path, tag.as_deref(), opts),
        ImageRef::OciArchive { path, tag } => oci::open_layout_archive(path, tag.as_deref(), opts),
        ImageRef::DockerArchive { path, tag } => docker_archive::open(path, tag.as_deref()),
        ImageRef::Registry(reference) => crate::registry::pull(reference, opts),
    }
    .with_context(|| format!("cannot read image {r}"))
}

fn open_rootfs_tar(path: &Path) -> Result<BaseImage> {
    let loc = BlobLocation::whole(path)?;
    let layer = LayerBlob::new(0, loc, MT_OCI_LAYER, None, None)?;
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created_by": format!("rootfs tarball {}", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())}],
    });
    Ok(BaseImage {
        name: format!("tar:{}", portable_name(path)),
        manifest_digest: None,
        config,
        layers: vec![layer],
        _scratch: None,
    })
}
