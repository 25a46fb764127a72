//! Loading the image's runtime-environment declaration (format and rules: the
//! `nemoclaw-runtime-spec` crate, shared with the builder) and picking the passthrough
//! variables from the container's environment.

pub use nemoclaw_runtime_spec::{looks_secret, valid_name, Spec, DEFAULT_CONFIG};
use std::path::Path;

/// Loads the config; a missing file is an empty spec (images built without `[init]` env).
pub fn load(path: &Path) -> Result<Spec, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => nemoclaw_runtime_spec::parse(&t).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Spec::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The variables passed through from `environ`, in sorted order, and the names refused
/// because they look like secrets (reported by name only, never by value).
pub fn passthrough(
    patterns: &[String],
    environ: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>) {
    let mut taken = Vec::new();
    let mut refused = Vec::new();
    let mut sorted: Vec<&(String, String)> = environ.iter().collect();
    sorted.sort();
    for (k, v) in sorted {
        let hit = patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => k == p,
        });
        if !hit || !valid_name(k) {
            continue;
        }
        if looks_secret(k) || v.contains(['\n', '\0']) {
            refused.push(k.clone());
        } else {
            taken.push((k.clone(), v.clone()));
        }
    }
    (taken, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_missing_unreadable_and_valid() {
        let d = std::env::temp_dir().join(format!("nemoclaw-init-rtenv-{}", std::process::id()));
        std::fs::create_dir_all(d.join("dir.json")).expect("mkdir");
        std::fs::write(
            d.join("init.json"),
            r#"{"env":[{"name":"A","value":"b"}],"passthrough":["NODE_OPTIONS"]}"#,
        )
        .expect("write");
        let missing = load(&d.join("missing.json"));
        let unreadable = load(&d.join("dir.json"));
        let valid = load(&d.join("init.json"));
        std::fs::remove_dir_all(&d).expect("cleanup");
        assert_eq!(missing, Ok(Spec::default()));
        assert!(unreadable.is_err(), "{unreadable:?}");
        let valid = valid.expect("valid");
        assert_eq!(valid.env.len(), 1);
        assert_eq!(
            (valid.env[0].name.as_str(), valid.env[0].value.as_str()),
            ("A", "b")
        );
        assert_eq!(valid.passthrough, vec!["NODE_OPTIONS".to_string()]);
    }

    #[test]
    fn passthrough_filters_secrets_by_name() {
        let env = vec![
            (
                "OPENCLAW_GATEWAY_URL".to_string(),
                "ws://10.0.0.2:18789".to_string(),
            ),
            ("OPENCLAW_GATEWAY_TOKEN".to_string(), "s3cr3t".to_string()),
            ("OPENCLAW_X".to_string(), "a\nb".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            (
                "NODE_OPTIONS".to_string(),
                "--max-old-space-size=512".to_string(),
            ),
        ];
        let (taken, refused) = passthrough(
            &["OPENCLAW_*".to_string(), "NODE_OPTIONS".to_string()],
            &env,
        );
        assert_eq!(
            taken,
            vec![
                (
                    "NODE_OPTIONS".to_string(),
                    "--max-old-space-size=512".to_string()
                ),
                (
                    "OPENCLAW_GATEWAY_URL".to_string(),
                    "ws://10.0.0.2:18789".to_string()
                ),
            ]
        );
        assert_eq!(refused, vec!["OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_X"]);
    }
}
