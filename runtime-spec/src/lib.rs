//! The runtime-environment contract between nemoclaw-build and nemoclaw-init.
//!
//! The recipe's `[init]` section declares tool-state redirects into /tmp (with the
//! directories to create) and the names passed through from the container's environment
//! into the env file. The builder validates and writes them as canonical JSON into the
//! image (`/etc/nemoclaw/init.json`); the init parses the same format with the same rules.
//! One crate, so the two sides cannot drift apart.
//!
//! The env file is world-readable (every shell sources it), so nothing that looks like a
//! secret may go into it: such names are refused on both sides.

pub mod accounts;
pub mod landlock;

use serde_json::{json, Value};

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

/// The canonical JSON bytes the builder writes (sorted keys, one trailing newline).
pub fn render(spec: &Spec) -> Vec<u8> {
    let env: Vec<Value> = spec
        .env
        .iter()
        .map(|e| match e.mkdir {
            Some(m) => json!({"name": e.name, "value": e.value, "mkdir": format!("{m:04o}")}),
            None => json!({"name": e.name, "value": e.value}),
        })
        .collect();
    let v = json!({"env": env, "passthrough": spec.passthrough});
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(b'\n');
    out
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
    fn render_then_parse_round_trips() {
        let spec = Spec {
            env: vec![
                EnvVar {
                    name: "GNUPGHOME".into(),
                    value: "/tmp/.gnupg".into(),
                    mkdir: Some(0o700),
                },
                EnvVar {
                    name: "npm_config_offline".into(),
                    value: "false".into(),
                    mkdir: None,
                },
            ],
            passthrough: vec!["OPENCLAW_*".into()],
        };
        let bytes = render(&spec);
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.contains("\"mkdir\": \"0700\""), "{text}");
        assert_eq!(parse(&text), Ok(spec));
    }
}
