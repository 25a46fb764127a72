//! Media types as an enum: the ones this tool writes or tells apart by name, and
//! any other kept verbatim (image-spec: unknown types must be carried, not refused).
use crate::source::{self, Compression};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

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
    (MediaType::OciManifest, source::MT_OCI_MANIFEST),
    (MediaType::OciIndex, source::MT_OCI_INDEX),
    (MediaType::OciConfig, source::MT_OCI_CONFIG),
    (MediaType::OciLayer, source::MT_OCI_LAYER),
    (MediaType::OciLayerGzip, source::MT_OCI_LAYER_GZIP),
    (MediaType::OciLayerZstd, source::MT_OCI_LAYER_ZSTD),
    (MediaType::DockerManifest, source::MT_DOCKER_MANIFEST),
    (MediaType::DockerList, source::MT_DOCKER_LIST),
    (MediaType::DockerConfig, source::MT_DOCKER_CONFIG),
    (MediaType::DockerLayer, source::MT_DOCKER_LAYER),
    (MediaType::DockerLayerGzip, source::MT_DOCKER_LAYER_GZIP),
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

    /// The OCI layer type for a blob compressed with `c`.
    pub fn oci_layer(c: Compression) -> MediaType {
        match c {
            Compression::None => MediaType::OciLayer,
            Compression::Gzip => MediaType::OciLayerGzip,
            Compression::Zstd => MediaType::OciLayerZstd,
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
        assert_eq!(
            MediaType::oci_layer(Compression::Zstd).as_str(),
            source::MT_OCI_LAYER_ZSTD
        );
    }
}
