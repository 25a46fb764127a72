//! Descriptors, image manifests and indexes as written by this tool and read back by
//! `diff`/`verify`. Untrusted documents are first checked by `source::spec` (which
//! names the bad field); these types are what such a document means.
use super::{Digest, MediaType};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The empty config of an artifact (image-spec 1.1).
pub const MT_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_JSON: &[u8] = b"{}";

/// An image-spec descriptor. Fields this tool does not use (`urls`, `data`,
/// `platform`) are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: MediaType,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<MediaType>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Descriptor {
    /// The three required fields, nothing else.
    pub fn new(media_type: MediaType, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type,
            digest,
            size,
            annotations: BTreeMap::new(),
            artifact_type: None,
            extra: BTreeMap::new(),
        }
    }
}

/// An image manifest (OCI, or Docker schema 2: the fields read here are shared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    /// Set on artifacts (an SBOM, a build cache), not on images.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<MediaType>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The manifest an artifact refers to (referrers API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Manifest {
    /// An OCI image manifest of `config` and `layers`.
    pub fn oci(
        config: Descriptor,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    ) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(MediaType::OciManifest),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations,
            extra: BTreeMap::new(),
        }
    }

    /// An OCI artifact manifest: `artifact_type`, an empty config, `layers`.
    pub fn artifact(
        artifact_type: MediaType,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    ) -> Manifest {
        let empty = Descriptor::new(
            MediaType::from(MT_EMPTY),
            Digest::of(EMPTY_JSON),
            EMPTY_JSON.len() as u64,
        );
        Manifest {
            artifact_type: Some(artifact_type),
            ..Manifest::oci(empty, layers, annotations)
        }
    }

    /// Parses manifest JSON whose digest the caller has checked.
    pub fn from_slice(bytes: &[u8], what: &str) -> anyhow::Result<Manifest> {
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{what}: {e}"))
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Index {
    /// An OCI index of `manifests`.
    pub fn oci(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(MediaType::OciIndex),
            manifests,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::canonical;

    #[test]
    fn manifest_serializes_canonically() {
        let d = Digest::of(b"c");
        let l = Digest::of(b"l");
        let m = Manifest::oci(
            Descriptor::new(MediaType::OciConfig, d.clone(), 1),
            vec![Descriptor::new(MediaType::OciLayerGzip, l.clone(), 2)],
            [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into(),
        );
        let want = format!(
            r#"{{"annotations":{{"a":"1","b":"2"}},"config":{{"digest":"{d}","mediaType":"application/vnd.oci.image.config.v1+json","size":1}},"layers":[{{"digest":"{l}","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":2}}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}}"#
        );
        assert_eq!(String::from_utf8(canonical(&m)).unwrap(), want);
        assert_eq!(Manifest::from_slice(want.as_bytes(), "m").unwrap(), m);
    }

    #[test]
    fn unknown_descriptor_fields_survive_a_round_trip() {
        let d = Digest::of(b"x");
        let text = format!(
            r#"{{"digest":"{d}","mediaType":"application/x","platform":{{"architecture":"amd64","os":"linux"}},"size":3,"urls":["u"]}}"#
        );
        let desc: Descriptor = serde_json::from_str(&text).unwrap();
        assert_eq!(desc.media_type, MediaType::Other("application/x".into()));
        assert_eq!(String::from_utf8(canonical(&desc)).unwrap(), text);
    }

    #[test]
    fn a_bad_digest_is_refused_with_its_reason() {
        let text = r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:../x","size":1},"layers":[]}"#;
        let e = Manifest::from_slice(text.as_bytes(), "manifest sha256:00").unwrap_err();
        assert!(e.to_string().contains("invalid digest"), "{e}");
        assert!(e.to_string().starts_with("manifest sha256:00"), "{e}");
    }
}
