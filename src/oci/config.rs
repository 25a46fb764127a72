//! The image config (`application/vnd.oci.image.config.v1+json`, Docker's too).
//!
//! Only what this tool reads or rewrites is typed, and only with the types
//! `source::spec::parse_config` has already checked on the way in; every other
//! field (Docker-only ones, `ExposedPorts`, a base's odd `created_by`) stays in
//! `extra` and is written back byte for byte. `null` is kept apart from absent
//! where the build keeps the base's value: a Docker config's `"Entrypoint": null`
//! must still be `null` in the result.
use super::Digest;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A field that was absent (`None`), or present with this value (`Some`), `null`
/// included: the double-option pattern.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `null` reads as the default (what Go's encoding/json makes of it).
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string, or nothing for any other value: for a field the build always replaces,
/// so a base's malformed value is dropped rather than refused.
fn string_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn linux() -> String {
    "linux".into()
}

/// The whole config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(
        default,
        deserialize_with = "string_or_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<String>,
    pub architecture: String,
    #[serde(default = "linux")]
    pub os: String,
    pub rootfs: RootFs,
    /// Absent or `null` in the base reads as empty; always written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: RunConfig,
    /// Absent or `null` in the base reads as empty; always written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Fields of Docker's image JSON that describe the container it was committed from,
/// not the image: a build drops them.
pub const DOCKER_ONLY: [&str; 5] = [
    "container",
    "container_config",
    "docker_version",
    "id",
    "parent",
];

impl ImageConfig {
    /// The typed view of a config `source::spec::parse_config` has accepted.
    pub fn from_value(v: Value) -> anyhow::Result<ImageConfig> {
        serde_json::from_value(v).map_err(|e| anyhow::anyhow!("image config: {e}"))
    }

    /// The canonical JSON value (keys sorted).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `rootfs`: always `layers`, one diff_id per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl RootFs {
    pub fn layers(diff_ids: Vec<Digest>) -> RootFs {
        RootFs {
            kind: "layers".into(),
            diff_ids,
        }
    }
}

/// `config`: how a container of the image runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(
        rename = "Entrypoint",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Option<Vec<String>>>,
    #[serde(
        rename = "Cmd",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub cmd: Option<Option<Vec<String>>>,
    #[serde(
        rename = "User",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<Option<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<Option<String>>,
    /// `KEY=VALUE`, in order; always written.
    #[serde(rename = "Env", default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    /// Always written.
    #[serde(rename = "Labels", default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl RunConfig {
    /// Sets `KEY=value`: replaces the first entry of that key in place, or appends.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let kv = format!("{key}={value}");
        match self
            .env
            .iter()
            .position(|e| e.split('=').next() == Some(key))
        {
            Some(i) => self.env[i] = kv,
            None => self.env.push(kv),
        }
    }
}

/// One `history` entry. `created` is kept exactly as the base wrote it (any JSON
/// value, `null` included); `created_by`, `comment` and the rest live in `extra`
/// because a base's may be of any type and must come back unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub empty_layer: Option<Option<bool>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl History {
    /// An entry for a layer this tool wrote.
    pub fn step(created: &str, created_by: String, comment: Option<&str>) -> History {
        let mut extra = BTreeMap::new();
        extra.insert("created_by".to_string(), Value::String(created_by));
        if let Some(c) = comment {
            extra.insert("comment".to_string(), Value::String(c.to_string()));
        }
        History {
            created: Some(Value::String(created.to_string())),
            empty_layer: None,
            extra,
        }
    }

    /// Whether the entry made no layer (`empty_layer: true`).
    pub fn is_empty_layer(&self) -> bool {
        self.empty_layer == Some(Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::canonical;

    fn docker_style() -> Value {
        let d = Digest::of(b"l");
        serde_json::from_str(&format!(
            r#"{{"architecture":"amd64","author":"a","config":{{"Cmd":["sh"],"Entrypoint":null,
            "Env":["A=1"],"ExposedPorts":{{"80/tcp":{{}}}},"Labels":{{"x":"y"}},"OnBuild":null,
            "User":"","WorkingDir":null}},"container":"c","created":"2020-01-01T00:00:00.5Z",
            "history":[{{"created":null,"created_by":5,"empty_layer":null}},{{"empty_layer":true}}],
            "os":"linux","rootfs":{{"diff_ids":["{d}"],"type":"layers"}},"size":1.5,"variant":"v8"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_docker_config_round_trips_byte_for_byte() {
        let v = docker_style();
        let c = ImageConfig::from_value(v.clone()).unwrap();
        assert_eq!(c.config.entrypoint, Some(None), "null is not absent");
        assert_eq!(c.config.cmd, Some(Some(vec!["sh".to_string()])));
        assert_eq!(c.config.user, Some(Some(String::new())));
        assert!(!c.history[0].is_empty_layer() && c.history[1].is_empty_layer());
        assert_eq!(c.history[0].created, Some(Value::Null));
        assert_eq!(c.history[1].created, None);
        assert_eq!(canonical(&c), canonical(&v));
    }

    #[test]
    fn null_or_absent_env_labels_history_read_as_empty_and_are_written() {
        let d = Digest::of(b"l");
        let v: Value = serde_json::from_str(&format!(
            r#"{{"architecture":"arm64","config":{{"Env":null,"Labels":null}},"history":null,
            "rootfs":{{"diff_ids":["{d}"],"type":"layers"}}}}"#
        ))
        .unwrap();
        let c = ImageConfig::from_value(v).unwrap();
        assert_eq!(
            String::from_utf8(canonical(&c)).unwrap(),
            format!(
                r#"{{"architecture":"arm64","config":{{"Env":[],"Labels":{{}}}},"history":[],"os":"linux","rootfs":{{"diff_ids":["{d}"],"type":"layers"}}}}"#
            )
        );
    }

    #[test]
    fn a_malformed_created_is_dropped_not_refused() {
        let mut v = docker_style();
        v["created"] = serde_json::json!(7);
        assert_eq!(ImageConfig::from_value(v).unwrap().created, None);
    }

    #[test]
    fn set_env_replaces_in_place_or_appends() {
        let mut r = RunConfig {
            env: vec!["A=1".into(), "B=2".into()],
            ..Default::default()
        };
        r.set_env("A", "x=y");
        r.set_env("C", "3");
        assert_eq!(r.env, ["A=x=y", "B=2", "C=3"]);
    }
}
