//! The Landlock policy file (`/etc/nemoclaw/landlock.json`): written by the builder from
//! the recipe's `[landlock]`, enforced by the init. One type and one parser, so a policy
//! the init would refuse at container start is refused at build time instead.

use serde_json::{json, Value};

pub const DEFAULT_POLICY: &str = "/etc/nemoclaw/landlock.json";

/// `compatibility`, as in the upstream blueprint's `landlock.compatibility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    BestEffort,
    SoftRequirement,
    HardRequirement,
}

impl Compat {
    pub const NAMES: [&'static str; 3] = ["best_effort", "soft_requirement", "hard_requirement"];

    pub fn parse(s: &str) -> Option<Compat> {
        match s {
            "best_effort" => Some(Compat::BestEffort),
            "soft_requirement" => Some(Compat::SoftRequirement),
            "hard_requirement" => Some(Compat::HardRequirement),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compat::BestEffort => "best_effort",
            Compat::SoftRequirement => "soft_requirement",
            Compat::HardRequirement => "hard_requirement",
        }
    }
}

/// A policy: paths allowed read-only and read-write beneath them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub read_only: Vec<String>,
    pub read_write: Vec<String>,
    pub compatibility: Compat,
}

/// A policy path must be absolute and free of NUL (the init opens it as a C string).
pub fn check_path(p: &str) -> Result<(), String> {
    if p.starts_with('/') && !p.contains('\0') {
        Ok(())
    } else {
        Err(format!("entries must be absolute paths, got {p:?}"))
    }
}

fn path_list(v: &Value, key: &str) -> Result<Vec<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i.as_str() {
                Some(s) => check_path(s).map(|()| s.to_string()),
                None => Err(format!("entries must be absolute path strings, got {i}")),
            })
            .map(|r| r.map_err(|e| format!("{key}: {e}")))
            .collect(),
        Some(other) => Err(format!("{key}: expected an array, got {other}")),
    }
}

impl Policy {
    /// Parses `{"read_only":[...],"read_write":[...],"compatibility":"best_effort"}`.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        if !v.is_object() {
            return Err("policy must be a JSON object".into());
        }
        let compatibility = match v.get("compatibility") {
            None | Some(Value::Null) => Compat::BestEffort,
            Some(Value::String(s)) => {
                Compat::parse(s).ok_or_else(|| format!("unknown compatibility {s:?}"))?
            }
            Some(other) => return Err(format!("compatibility: expected a string, got {other}")),
        };
        Ok(Policy {
            read_only: path_list(&v, "read_only")?,
            read_write: path_list(&v, "read_write")?,
            compatibility,
        })
    }

    /// Validates every path; the error names the list.
    pub fn check(&self) -> Result<(), String> {
        for (key, list) in [
            ("read_only", &self.read_only),
            ("read_write", &self.read_write),
        ] {
            for p in list {
                check_path(p).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The file as written into the image: pretty JSON, keys sorted, trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let v = json!({"read_only": self.read_only, "read_write": self.read_write,
            "compatibility": self.compatibility.as_str()});
        let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blueprint_shaped_policy() {
        let p = Policy::parse(
            r#"{"read_only":["/usr","/lib","/proc","/dev/urandom","/etc"],
                "read_write":["/sandbox","/tmp","/dev/null"],
                "compatibility":"best_effort"}"#,
        )
        .expect("valid policy");
        assert_eq!(p.read_only.len(), 5);
        assert_eq!(p.read_write, vec!["/sandbox", "/tmp", "/dev/null"]);
        assert_eq!(p.compatibility, Compat::BestEffort);
        let p = Policy::parse(r#"{"compatibility":"hard_requirement"}"#).expect("empty lists");
        assert!(p.read_only.is_empty() && p.read_write.is_empty());
        assert_eq!(p.compatibility, Compat::HardRequirement);
    }

    #[test]
    fn rejects_bad_policies() {
        for (bad, why) in [
            ("", "invalid JSON"),
            ("[]", "must be a JSON object"),
            (r#"{"read_only":"/usr"}"#, "read_only: expected an array"),
            (
                r#"{"read_only":["usr"]}"#,
                "read_only: entries must be absolute",
            ),
            (
                r#"{"read_write":[1]}"#,
                "read_write: entries must be absolute path strings",
            ),
            (r#"{"compatibility":"maybe"}"#, "unknown compatibility"),
            (r#"{"compatibility":1}"#, "compatibility: expected a string"),
        ] {
            let e = Policy::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn what_the_builder_writes_the_init_reads() {
        for c in Compat::NAMES {
            let p = Policy {
                read_only: vec!["/usr".into()],
                read_write: vec!["/sandbox".into(), "/tmp".into()],
                compatibility: Compat::parse(c).expect(c),
            };
            let text = String::from_utf8(p.to_json()).expect("utf-8");
            assert_eq!(Policy::parse(&text), Ok(p), "{text}");
        }
    }
}
