//! The runtime environment the recipe declares: tool-state redirects into /tmp (with the
//! directories to create) and the names passed through from the container's environment
//! into the env file. It is data in the image (`/etc/nemoclaw/init.json`, written by
//! nemoclaw-build from the recipe's `[init]` section), so the next upstream change to the
//! redirect list is a recipe edit, not a new init.
//!
//! The env file is world-readable (every shell sources it), so nothing that looks like a
//! secret may go into it: such names are refused here whatever the config says.

use serde_json::Value;
use std::path::Path;

pub const DEFAULT_CONFIG: &str = "/etc/nemoclaw/init.json";

/// One variable set for the workload and written to the env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// Create `value` as a directory with this mode (owned by the workload user).
    pub mkdir: Option<u32>,
}

/// What the image asks the init to set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub env: Vec<EnvVar>,
    /// Names (or `PREFIX*` patterns) copied from the init's own environment.
    pub passthrough: Vec<String>,
}

/// A portable shell variable name.
pub fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

/// Whether a variable name looks like it holds a credential. Judged on the
/// underscore-separated words, so `TOKENIZERS_PARALLELISM` is fine and
/// `OPENCLAW_GATEWAY_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `DB_PASSWORD`, `APIKEY` are not.
pub fn looks_secret(name: &str) -> bool {
    const WORDS: [&str; 12] = [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "KEY",
        "APIKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "AUTH",
        "COOKIE",
        "PRIVATE",
    ];
    let upper = name.to_ascii_uppercase();
    upper
        .split('_')
        .any(|w| WORDS.contains(&w) || w.ends_with("TOKEN") || w.ends_with("APIKEY"))
}

fn parse_mode(v: &Value, what: &str) -> Result<u32, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{what}: mkdir must be an octal string"))?;
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{what}: mkdir {s:?} is not an octal mode"))
}

/// Parses the config text. Entries that are unusable (bad name, secret-looking name,
/// non-absolute mkdir path) are errors: the file is written by our builder, so anything
/// odd means it was tampered with or hand-edited wrongly.
pub fn parse(text: &str) -> Result<Spec, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut spec = Spec::default();
    for (i, e) in v
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let what = format!("env[{i}]");
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| valid_name(n))
            .ok_or_else(|| format!("{what}: missing or invalid name"))?;
        if looks_secret(name) {
            return Err(format!(
                "{what}: {name} looks like a secret; it may not go into the world-readable env file"
            ));
        }
        let value = e
            .get("value")
            .and_then(Value::as_str)
            .filter(|s| !s.contains(['\n', '\0']))
            .ok_or_else(|| format!("{what} ({name}): missing or invalid value"))?;
        let mkdir = match e.get("mkdir") {
            None | Some(Value::Null) => None,
            Some(m) => {
                if !value.starts_with('/') {
                    return Err(format!("{what} ({name}): mkdir needs an absolute path"));
                }
                Some(parse_mode(m, &what)?)
            }
        };
        spec.env.push(EnvVar {
            name: name.to_string(),
            value: value.to_string(),
            mkdir,
        });
    }
    for p in v
        .get("passthrough")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let p = p
            .as_str()
            .filter(|p| valid_name(p.strip_suffix('*').unwrap_or(p)))
            .ok_or_else(|| format!("passthrough: invalid entry {p}"))?;
        spec.passthrough.push(p.to_string());
    }
    Ok(spec)
}

/// Loads the config; a missing file is an empty spec (images built without `[init]` env).
pub fn load(path: &Path) -> Result<Spec, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse(&t).map_err(|e| format!("{}: {e}", path.display())),
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
    fn secret_names() {
        for s in [
            "OPENCLAW_GATEWAY_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "DB_PASSWORD",
            "NVIDIA_APIKEY",
            "github_token",
            "SLACK_BOTTOKEN",
            "X_AUTH",
            "API_KEY",
        ] {
            assert!(looks_secret(s), "{s}");
        }
        for s in [
            "HTTP_PROXY",
            "XDG_CACHE_HOME",
            "TOKENIZERS_PARALLELISM",
            "KEYBOARD",
            "OPENCLAW_GATEWAY_URL",
            "GNUPGHOME",
        ] {
            assert!(!looks_secret(s), "{s}");
        }
    }

    #[test]
    fn parses_the_builder_format() {
        let spec = parse(
            r#"{"env":[{"mkdir":"0700","name":"GNUPGHOME","value":"/tmp/.gnupg"},
                       {"name":"npm_config_offline","value":"false"}],
                "passthrough":["OPENCLAW_*","NODE_OPTIONS"]}"#,
        )
        .expect("valid");
        assert_eq!(
            spec.env,
            vec![
                EnvVar {
                    name: "GNUPGHOME".into(),
                    value: "/tmp/.gnupg".into(),
                    mkdir: Some(0o700)
                },
                EnvVar {
                    name: "npm_config_offline".into(),
                    value: "false".into(),
                    mkdir: None
                },
            ]
        );
        assert_eq!(spec.passthrough, vec!["OPENCLAW_*", "NODE_OPTIONS"]);
    }

    #[test]
    fn refuses_bad_entries() {
        let cases = [
            (r#"{"env":[{"name":"A B","value":"x"}]}"#, "invalid name"),
            (
                r#"{"env":[{"name":"MY_TOKEN","value":"x"}]}"#,
                "looks like a secret",
            ),
            (r#"{"env":[{"name":"A","value":"a\nb"}]}"#, "invalid value"),
            (
                r#"{"env":[{"name":"A","value":"rel","mkdir":"0755"}]}"#,
                "absolute",
            ),
            (
                r#"{"env":[{"name":"A","value":"/x","mkdir":"0999"}]}"#,
                "not an octal",
            ),
            (r#"{"passthrough":["A-B"]}"#, "invalid entry"),
            ("[", "not JSON"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
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
