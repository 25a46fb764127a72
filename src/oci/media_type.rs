//! Media types as an enum: the ones this tool writes or tells apart by name, and
//! any other kept verbatim (image-spec: unknown types must be carried, not refused).
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Uncompressed Docker layers (containers/image writes them for docker-archive sources).
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaType {
    OciManifest,
    OciIndex,
    OciConfig,
    OciLayer,
    OciLayerGzip,
    OciLayerZstd,
    DockerManifest,
    DockerList,
    DockerConfig,
    DockerLayer,
    DockerLayerGzip,
    /// Any other type, as written.
    Other(String),
}

/// Each named variant and its string (one table, so parse and print agree).
const KNOWN: &[(MediaType, &str)] = &[
    (MediaType::OciManifest, MT_OCI_MANIFEST),
    (MediaType::OciIndex, MT_OCI_INDEX),
    (MediaType::OciConfig, MT_OCI_CONFIG),
    (MediaType::OciLayer, MT_OCI_LAYER),
    (MediaType::OciLayerGzip, MT_OCI_LAYER_GZIP),
    (MediaType::OciLayerZstd, MT_OCI_LAYER_ZSTD),
    (MediaType::DockerManifest, MT_DOCKER_MANIFEST),
    (MediaType::DockerList, MT_DOCKER_LIST),
    (MediaType::DockerConfig, MT_DOCKER_CONFIG),
    (MediaType::DockerLayer, MT_DOCKER_LAYER),
    (MediaType::DockerLayerGzip, MT_DOCKER_LAYER_GZIP),
];

impl MediaType {
    pub fn as_str(&self) -> &str {
        match self {
            MediaType::Other(s) => s,
            known => KNOWN
                .iter()
                .find(|(k, _)| k == known)
                .map(|(_, s)| *s)
                .unwrap_or_default(),
        }
    }
}

impl From<&str> for MediaType {
    fn from(s: &str) -> MediaType {
        KNOWN
            .iter()
            .find(|(_, k)| *k == s)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| MediaType::Other(s.to_string()))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MediaType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MediaType, D::Error> {
        Ok(MediaType::from(String::deserialize(d)?.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_other_types_round_trip() {
        for (m, s) in KNOWN {
            assert_eq!(MediaType::from(*s), *m);
            assert_eq!(m.as_str(), *s);
        }
        let other = MediaType::from("application/x-custom");
        assert_eq!(other, MediaType::Other("application/x-custom".into()));
        assert_eq!(
            serde_json::to_string(&other).unwrap(),
            "\"application/x-custom\""
        );
    }
}
