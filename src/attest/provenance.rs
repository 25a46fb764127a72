//! In-toto Statement v1 and the SLSA provenance v1 predicate, derived from the
//! [`BuildRecord`] alone (plus the image digest and platform): the record written in
//! the manifest annotation and the provenance cannot disagree, and
//! [`record_of`] reads the record back for `verify --key`.
use crate::image::rfc3339;
use crate::oci::Digest;
use crate::record::BuildRecord;
use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";
/// Our build type: what `externalParameters` and `internalParameters` hold is
/// described in README.md ("Signing and attestations"). `.invalid`: a name, never fetched.
pub const BUILD_TYPE: &str = "https://nemoclaw.invalid/nemoclaw-build/image/v1";
/// The builder id: the tool, by name (a local, offline build has no hosted builder).
pub const BUILDER_ID: &str = "https://nemoclaw.invalid/nemoclaw-build";
/// The in-toto subject name of the image (verifiers match the digest).
pub const SUBJECT_NAME: &str = "image";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Value,
}

/// in-toto ResourceDescriptor (the fields we use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
}

impl ResourceDescriptor {
    fn new(name: &str, uri: Option<String>, digest: Option<&Digest>) -> ResourceDescriptor {
        ResourceDescriptor {
            name: Some(name.to_string()),
            uri,
            digest: digest
                .map(|d| [("sha256".to_string(), d.hex().to_string())].into())
                .unwrap_or_default(),
        }
    }
}

impl Statement {
    pub fn new(image: &Digest, predicate_type: &str, predicate: Value) -> Statement {
        Statement {
            type_: STATEMENT_TYPE.into(),
            subject: vec![ResourceDescriptor::new(SUBJECT_NAME, None, Some(image))],
            predicate_type: predicate_type.into(),
            predicate,
        }
    }

    /// Whether `image` is among the subjects (by sha256).
    pub fn names(&self, image: &Digest) -> bool {
        self.subject
            .iter()
            .any(|s| s.digest.get("sha256").map(String::as_str) == Some(image.hex()))
    }
}

/// The base digest of a record: a manifest digest, `config:sha256:...` (docker
/// archive) or a tarball's digest; the descriptor says which.
fn base_dependency(r: &BuildRecord) -> Option<ResourceDescriptor> {
    let d = r.base_digest.as_deref()?;
    let (name, digest) = match d.strip_prefix("config:") {
        Some(c) => ("base-config", Digest::parse(c).ok()),
        None => ("base", Digest::parse(d).ok()),
    };
    let mut rd = ResourceDescriptor::new(name, r.base.clone(), digest.as_ref());
    if digest.is_none() {
        rd.uri = Some(format!("{}#{d}", r.base.clone().unwrap_or_default()));
    }
    Some(rd)
}

/// `resolvedDependencies`: every input the record pins by digest, and the tool.
pub fn dependencies(r: &BuildRecord) -> Vec<ResourceDescriptor> {
    let mut v: Vec<ResourceDescriptor> = base_dependency(r).into_iter().collect();
    if let Some(d) = &r.recipe_digest {
        v.push(ResourceDescriptor::new("recipe", r.recipe.clone(), Some(d)));
    }
    if let Some(d) = &r.artifacts_digest {
        v.push(ResourceDescriptor::new("artifacts", None, Some(d)));
    }
    if let Some(b) = &r.artifacts_image {
        // The builder image the artifacts were copied from (issue 18), with the path.
        let digest = b.digest.strip_prefix("config:").unwrap_or(&b.digest);
        let mut rd = ResourceDescriptor::new(
            "artifacts-image",
            Some(format!("{}#{}", b.name, b.path)),
            Digest::parse(digest).ok().as_ref(),
        );
        if rd.digest.is_empty() {
            rd.uri = Some(format!("{}#{}@{}", b.name, b.path, b.digest));
        }
        v.push(rd);
    }
    if let Some(i) = &r.init {
        v.push(ResourceDescriptor::new(
            "init",
            Some(format!("file://{}", i.target)),
            Some(&i.digest),
        ));
    }
    if let Some(t) = &r.tool {
        let version = t.rsplit(' ').next().unwrap_or(t);
        v.push(ResourceDescriptor::new(
            "nemoclaw-build",
            Some(format!("pkg:cargo/nemoclaw-build@{version}")),
            None,
        ));
    }
    v
}

/// The SLSA provenance v1 predicate of one image built for `platform`.
pub fn predicate(r: &BuildRecord, platform: &str) -> Value {
    let time = rfc3339(r.source_date_epoch.unwrap_or(0));
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "recipe": {"name": r.recipe, "digest": r.recipe_digest},
                "base": r.base,
                "purgeMode": r.purge_mode,
                "compression": r.compression,
                "platform": platform,
                "buildArgs": r.build_args,
                "labels": r.labels,
                "sourceDateEpoch": r.source_date_epoch,
            },
            "internalParameters": {"buildRecord": r},
            "resolvedDependencies": dependencies(r),
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID, "version": {"nemoclaw-build": r.tool}},
            "metadata": {"startedOn": time, "finishedOn": time},
        },
    })
}

pub fn statement(r: &BuildRecord, image: &Digest, platform: &str) -> Statement {
    Statement::new(image, SLSA_PROVENANCE, predicate(r, platform))
}

/// The build record a provenance predicate carries, checked against the parts
/// derived from it (a provenance edited by hand disagrees with itself).
pub fn record_of(predicate: &Value) -> Result<BuildRecord> {
    let rec = predicate
        .pointer("/buildDefinition/internalParameters/buildRecord")
        .ok_or_else(|| anyhow!("provenance: no buildDefinition.internalParameters.buildRecord"))?;
    let r: BuildRecord =
        serde_json::from_value(rec.clone()).map_err(|e| anyhow!("provenance: buildRecord: {e}"))?;
    let platform = predicate
        .pointer("/buildDefinition/externalParameters/platform")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if &self::predicate(&r, platform) != predicate {
        anyhow::bail!(
            "provenance: externalParameters/resolvedDependencies/runDetails do not match its buildRecord"
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_model::PurgeMode;
    use crate::record::InitRecord;

    fn record() -> BuildRecord {
        BuildRecord {
            artifacts_digest: Some(Digest::of(b"art")),
            artifacts_image: None,
            base: Some("oci:base:latest".into()),
            base_digest: Some(Digest::of(b"base").to_string()),
            build_args: [("NEMOCLAW_VERSION".to_string(), "1.2".to_string())].into(),
            compression: Some("gzip-l6".into()),
            init: Some(InitRecord {
                digest: Digest::of(b"init"),
                target: "/usr/local/bin/nemoclaw-init".into(),
            }),
            labels: [(
                "io.nvidia.nemoclaw.agent".to_string(),
                "openclaw".to_string(),
            )]
            .into(),
            platform: None,
            purge_mode: Some(PurgeMode::Rewrite),
            recipe: Some("nemoclaw-sandbox.toml".into()),
            recipe_digest: Some(Digest::of(b"recipe")),
            source_date_epoch: Some(1_700_000_000),
            tool: Some("nemoclaw-build 0.1.0".into()),
            extra: BTreeMap::new(),
        }
    }

    /// Every digest of the record is a dependency, and the record comes back whole.
    #[test]
    fn record_and_provenance_agree() {
        let r = record();
        let img = Digest::of(b"image");
        let st = statement(&r, &img, "linux/amd64");
        assert!(st.names(&img));
        assert_eq!(record_of(&st.predicate).unwrap(), r);
        let deps = dependencies(&r);
        let has = |name: &str, d: &Digest| {
            deps.iter().any(|x| {
                x.name.as_deref() == Some(name)
                    && x.digest.get("sha256").map(String::as_str) == Some(d.hex())
            })
        };
        assert!(has("base", &Digest::of(b"base")));
        assert!(has("artifacts", r.artifacts_digest.as_ref().unwrap()));
        assert!(has("init", &r.init.as_ref().unwrap().digest));
        assert!(has("recipe", r.recipe_digest.as_ref().unwrap()));
        let p = &st.predicate;
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["purgeMode"],
            "rewrite"
        );
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["buildArgs"]["NEMOCLAW_VERSION"],
            "1.2"
        );
        let labels = &p["buildDefinition"]["externalParameters"]["labels"];
        assert_eq!(labels["io.nvidia.nemoclaw.agent"], "openclaw");
        assert_eq!(
            p["runDetails"]["metadata"]["startedOn"],
            "2023-11-14T22:13:20Z"
        );
        // Same inputs, same bytes.
        assert_eq!(
            crate::oci::canonical(&st),
            crate::oci::canonical(&statement(&r, &img, "linux/amd64"))
        );
    }

    #[test]
    fn an_edited_provenance_is_refused() {
        let r = record();
        let mut st = statement(&r, &Digest::of(b"i"), "linux/amd64");
        st.predicate["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"] =
            json!("00");
        assert!(record_of(&st.predicate)
            .unwrap_err()
            .to_string()
            .contains("do not match"));
        let mut r2 = r.clone();
        r2.base_digest = Some(format!("config:{}", Digest::of(b"c")));
        let deps = dependencies(&r2);
        assert_eq!(deps[0].name.as_deref(), Some("base-config"));
    }

    /// A builder image (issue 18) is a resolved dependency, with the path copied from it.
    #[test]
    fn builder_image_is_a_dependency() {
        let mut r = record();
        assert!(!dependencies(&r)
            .iter()
            .any(|d| d.name.as_deref() == Some("artifacts-image")));
        let d = Digest::of(b"builder");
        r.artifacts_image = Some(crate::record::ArtifactsImageRecord {
            digest: d.to_string(),
            name: "registry://h/b@x".into(),
            path: "/opt/app".into(),
        });
        let st = statement(&r, &Digest::of(b"i"), "linux/amd64");
        assert_eq!(record_of(&st.predicate).unwrap(), r);
        let dep = dependencies(&r)
            .into_iter()
            .find(|x| x.name.as_deref() == Some("artifacts-image"))
            .expect("builder listed");
        assert_eq!(dep.digest.get("sha256").map(String::as_str), Some(d.hex()));
        assert_eq!(dep.uri.as_deref(), Some("registry://h/b@x#/opt/app"));
    }
}
