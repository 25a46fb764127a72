//! Image references on the command line, in the transport syntax users know from
//! skopeo/podman (`oci:DIR:TAG`, `docker-archive:PATH`, ...), plus `tar:` for a plain
//! rootfs tarball and `registry://` for a registry.
use anyhow::{bail, Result};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A rootfs tarball (optionally gzip/zstd compressed): one layer, no config.
    Tar(PathBuf),
    /// An OCI image layout directory, optionally selecting a tag (`org.opencontainers.image.ref.name`).
    OciDir { path: PathBuf, tag: Option<String> },
    /// An OCI image layout packed in a tar file.
    OciArchive { path: PathBuf, tag: Option<String> },
    /// The `docker save` / `podman save` format (manifest.json + blobs).
    DockerArchive { path: PathBuf, tag: Option<String> },
    /// `registry://HOST[:PORT]/REPO[:TAG|@sha256:..]`.
    Registry(String),
}

/// Splits `PATH[:TAG]`: the tag is the part after the last ':' when it contains no '/'.
fn split_tag(rest: &str) -> (PathBuf, Option<String>) {
    if let Some(idx) = rest.rfind(':') {
        let (p, t) = (&rest[..idx], &rest[idx + 1..]);
        if !t.is_empty() && !t.contains('/') && !p.is_empty() {
            return (PathBuf::from(p), Some(t.to_string()));
        }
    }
    (PathBuf::from(rest), None)
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef> {
        if let Some(rest) = s.strip_prefix("registry://") {
            if rest.is_empty() || !rest.contains('/') {
                bail!(
                    "invalid registry reference '{s}': expected registry://HOST/REPO[:TAG|@DIGEST]"
                );
            }
            return Ok(ImageRef::Registry(rest.to_string()));
        }
        let (transport, rest) = match s.split_once(':') {
            Some(x) => x,
            None => bail!(
                "invalid image reference '{s}': expected one of tar:PATH, oci:DIR[:TAG], oci-archive:PATH[:TAG], docker-archive:PATH[:TAG], registry://HOST/REPO[:TAG|@DIGEST]"
            ),
        };
        if rest.is_empty() {
            bail!("invalid image reference '{s}': missing path after '{transport}:'");
        }
        Ok(match transport {
            "tar" => ImageRef::Tar(PathBuf::from(rest)),
            "oci" => {
                let (path, tag) = split_tag(rest);
                ImageRef::OciDir { path, tag }
            }
            "oci-archive" => {
                let (path, tag) = split_tag(rest);
                ImageRef::OciArchive { path, tag }
            }
            "docker-archive" => {
                let (path, tag) = split_tag(rest);
                ImageRef::DockerArchive { path, tag }
            }
            other => bail!(
                "unknown transport '{other}' in '{s}': use tar:, oci:, oci-archive:, docker-archive: or registry://"
            ),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_tag =
            |f: &mut fmt::Formatter<'_>, t: &str, p: &PathBuf, tag: &Option<String>| match tag {
                Some(tag) => write!(f, "{t}:{}:{tag}", p.display()),
                None => write!(f, "{t}:{}", p.display()),
            };
        match self {
            ImageRef::Tar(p) => write!(f, "tar:{}", p.display()),
            ImageRef::OciDir { path, tag } => with_tag(f, "oci", path, tag),
            ImageRef::OciArchive { path, tag } => with_tag(f, "oci-archive", path, tag),
            ImageRef::DockerArchive { path, tag } => with_tag(f, "docker-archive", path, tag),
            ImageRef::Registry(r) => write!(f, "registry://{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports_and_tags() {
        assert_eq!(
            ImageRef::parse("oci:out/img:latest").unwrap(),
            ImageRef::OciDir {
                path: "out/img".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/a/b").unwrap(),
            ImageRef::OciDir {
                path: "/a/b".into(),
                tag: None
            }
        );
        assert_eq!(
            ImageRef::parse("tar:base.tar").unwrap(),
            ImageRef::Tar("base.tar".into())
        );
        assert_eq!(
            ImageRef::parse("registry://127.0.0.1:5000/base@sha256:ab").unwrap(),
            ImageRef::Registry("127.0.0.1:5000/base@sha256:ab".into())
        );
        assert!(ImageRef::parse("nope").is_err());
        assert!(ImageRef::parse("ftp:x").is_err());
        assert!(ImageRef::parse("oci:").is_err());
    }
}
