//! The build record: the exact inputs of a build, written by the build (manifest
//! annotation [`RECORD_ANNOTATION`] and `--record FILE`) and read back by `verify`
//! (to rebuild) and `diff` (to name the input that differs).
use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// How the base's removed files leave the image: a build option the record keeps,
/// defined here so the record depends on no build module.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum PurgeMode {
    /// Rewrite base layers that contain removed files: the bytes are really gone.
    Rewrite,
    /// Keep base layers byte for byte; hide removed files with whiteouts.
    Whiteout,
}

/// The manifest annotation holding the record (canonical JSON).
pub const RECORD_ANNOTATION: &str = "dev.nemoclaw.build.record";

/// Every field is optional on reading (a record from another version may lack one)
/// and written as `null` when unknown. Fields are declared in sorted order, so the
/// plain serde output (`build --json`) has the canonical key order too; fields this
/// version does not know are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    #[serde(default)]
    pub artifacts_digest: Option<Digest>,
    /// The builder image the artifacts were taken from (`--artifacts-image`);
    /// absent, not `null`, without one, so records of other builds are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_image: Option<ArtifactsImageRecord>,
    /// The base as given (`oci:name:tag`, portable: no directories).
    #[serde(default)]
    pub base: Option<String>,
    /// Manifest digest, a docker-archive's `config:sha256:...`, or a tarball's digest.
    #[serde(default)]
    pub base_digest: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// `compress::Settings::describe()`.
    #[serde(default)]
    pub compression: Option<String>,
    #[serde(default)]
    pub init: Option<InitRecord>,
    /// Labels set from build args (`image.build_arg_labels`); omitted when none, so
    /// records of builds without them are unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The platform the build was asked for (`--platform`, `--base PLATFORM=REF`);
    /// absent from records of plain builds, which keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default)]
    pub purge_mode: Option<PurgeMode>,
    /// The recipe's file name (portable), or the built-in one.
    #[serde(default)]
    pub recipe: Option<String>,
    #[serde(default)]
    pub recipe_digest: Option<Digest>,
    #[serde(default)]
    pub source_date_epoch: Option<u64>,
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The builder image of `--artifacts-image` (fields in sorted order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactsImageRecord {
    /// Manifest digest (of the platform's manifest), or a docker-archive's
    /// `config:sha256:...`.
    pub digest: String,
    /// The reference as given (portable: no directories).
    pub name: String,
    /// The directory copied out of it.
    pub path: String,
}

/// The init binary the build embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitRecord {
    pub digest: Digest,
    pub target: String,
}

impl BuildRecord {
    /// Reads the record text of a manifest annotation; the error says which field.
    pub fn parse(text: &str) -> anyhow::Result<BuildRecord> {
        serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("build record (annotation {RECORD_ANNOTATION}): {e}"))
    }

    /// The annotation value: canonical JSON.
    pub fn annotation(&self) -> String {
        String::from_utf8_lossy(&crate::oci::canonical(self)).into_owned()
    }

    /// The `--record` file: indented, keys sorted.
    pub fn pretty(&self) -> anyhow::Result<Vec<u8>> {
        Ok(serde_json::to_vec_pretty(&serde_json::to_value(self)?)?)
    }

    /// The record as JSON, for comparing field by field.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Which recorded inputs the rebuild saw differently.
pub fn input_mismatches(recorded: &BuildRecord, rebuilt: &BuildRecord) -> Vec<String> {
    let (recorded, rebuilt) = (recorded.to_value(), rebuilt.to_value());
    let fields = [
        ("recipe_digest", "recipe"),
        ("base_digest", "base image"),
        ("artifacts_digest", "artifacts"),
        ("artifacts_image", "builder image"),
        ("tool", "tool version"),
        ("compression", "compression"),
        ("purge_mode", "purge mode"),
        ("build_args", "build args"),
        ("labels", "labels from build args"),
        ("source_date_epoch", "SOURCE_DATE_EPOCH"),
        ("base", "base name"),
        ("recipe", "recipe name"),
    ];
    let mut out = Vec::new();
    for (k, what) in fields {
        let (x, y) = (recorded.get(k), rebuilt.get(k));
        if x != y {
            out.push(format!(
                "{what}: recorded {}, rebuild has {}",
                x.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into()),
                y.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into())
            ));
        }
    }
    let (x, y) = (
        recorded.pointer("/init/digest"),
        rebuilt.pointer("/init/digest"),
    );
    if x != y {
        out.push(format!(
            "init binary differs: recorded {}, this tool embeds {}",
            x.map(|v| v.to_string()).unwrap_or_default(),
            y.map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> BuildRecord {
        BuildRecord {
            artifacts_digest: None,
            artifacts_image: None,
            base: Some("oci:base:latest".into()),
            base_digest: Some("config:sha256:00".into()),
            build_args: [("A".to_string(), "1".to_string())].into(),
            compression: Some("gzip-l6".into()),
            init: Some(InitRecord {
                digest: Digest::of(b"init"),
                target: "/init".into(),
            }),
            labels: [(
                "org.opencontainers.image.version".to_string(),
                "1".to_string(),
            )]
            .into(),
            platform: None,
            purge_mode: Some(PurgeMode::Whiteout),
            recipe: Some("r.toml".into()),
            recipe_digest: Some(Digest::of(b"r")),
            source_date_epoch: Some(5),
            tool: Some("nemoclaw-build 0".into()),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn declared_order_is_canonical_order() {
        let r = full();
        assert_eq!(serde_json::to_vec(&r).unwrap(), crate::oci::canonical(&r));
        assert!(r.annotation().contains(r#""artifacts_digest":null"#));
        assert_eq!(BuildRecord::parse(&r.annotation()).unwrap(), r);
    }

    #[test]
    fn partial_and_future_records_are_read() {
        let r = BuildRecord::parse(r#"{"tool":"x","new_field":[1]}"#).unwrap();
        assert_eq!(r.tool.as_deref(), Some("x"));
        assert_eq!(r.extra["new_field"], serde_json::json!([1]));
        assert!(r.annotation().contains(r#""new_field":[1]"#));
    }

    #[test]
    fn a_bad_field_is_named() {
        let e = BuildRecord::parse(r#"{"recipe_digest":"md5:x"}"#).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("invalid digest") && msg.contains(RECORD_ANNOTATION),
            "{msg}"
        );
        let e = BuildRecord::parse(r#"{"purge_mode":"shred"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }
}
