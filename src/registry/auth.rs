//! Registry credentials: `--registry-user` (+ password), else the auth files docker,
//! podman and skopeo write (`auths.HOST.auth`, `credHelpers`, `credsStore`), else
//! anonymous. oci-client performs the bearer-token exchange with what we find here.
use super::reference::is_docker_hub;
use crate::progress::{Progress, Warning, WarningCode};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => write!(f, "Anonymous"),
            Credential::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
        }
    }
}

/// A credential and where it came from (for error messages; never the secret).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub cred: Credential,
    pub source: String,
}

impl Resolved {
    pub fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match &self.cred {
            Credential::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            Credential::Basic { user, password } => {
                oci_client::secrets::RegistryAuth::Basic(user.clone(), password.clone())
            }
        }
    }
}

/// Auth files in lookup order; the first one holding an entry for the registry wins.
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut v = Vec::new();
    if let Some(p) = env("REGISTRY_AUTH_FILE") {
        v.push(p);
    }
    if let Some(d) = env("DOCKER_CONFIG") {
        v.push(d.join("config.json"));
    }
    if let Some(h) = env("HOME") {
        v.push(h.join(".docker/config.json"));
    }
    if let Some(x) = env("XDG_RUNTIME_DIR") {
        v.push(x.join("containers/auth.json"));
    }
    if let Some(x) = env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config"))) {
        v.push(x.join("containers/auth.json"));
    }
    v.dedup();
    v
}

/// Normalizes an `auths` key: `https://host/v1/` -> `host`; `host/ns/repo` kept as is.
fn normalize_key(k: &str) -> String {
    let k = k
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let k = k.strip_suffix("/v1").unwrap_or(k);
    let k = k.strip_suffix("/v2").unwrap_or(k);
    let k = k.to_ascii_lowercase();
    if is_docker_hub(&k) {
        "docker.io".into()
    } else if let Some(rest) = DOCKER_HUB_PREFIXES.iter().find_map(|p| k.strip_prefix(p)) {
        format!("docker.io/{rest}")
    } else {
        k
    }
}

const DOCKER_HUB_PREFIXES: [&str; 3] = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"];

/// Keys to try, most specific first: `host/a/b`, `host/a`, `host` (podman allows
/// per-repository entries).
fn candidate_keys(host: &str, repo: &str) -> Vec<String> {
    let host = normalize_key(host);
    let mut keys = Vec::new();
    let parts: Vec<&str> = repo.split('/').collect();
    for n in (1..=parts.len()).rev() {
        keys.push(format!("{host}/{}", parts[..n].join("/")));
    }
    keys.push(host);
    keys
}

/// What the helper protocol is given on stdin for `host`.
fn helper_server_url(host: &str) -> String {
    if is_docker_hub(host) {
        "https://index.docker.io/v1/".into()
    } else {
        host.to_string()
    }
}

fn decode_auth(b64: &str, file: &Path, key: &str) -> Result<Credential> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64.trim()))
        .map_err(|_| anyhow!("{}: auths.{key}.auth is not base64", file.display()))?;
    let s = String::from_utf8(raw)
        .map_err(|_| anyhow!("{}: auths.{key}.auth is not UTF-8", file.display()))?;
    let (user, password) = s.split_once(':').ok_or_else(|| {
        anyhow!(
            "{}: auths.{key}.auth does not decode to user:password",
            file.display()
        )
    })?;
    Ok(Credential::Basic {
        user: user.into(),
        password: password.into(),
    })
}

/// Runs `docker-credential-NAME get`, with the server URL on stdin (bounded in time).
pub fn run_helper(name: &str, server: &str) -> Result<Option<Credential>> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("invalid credential helper name '{name}'");
    }
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run credential helper {prog}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(server.as_bytes())
        .ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("credential helper {prog} did not answer within 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .take(1 << 20)
        .read_to_string(&mut out)?;
    if !status.success() {
        // "credentials not found in native keychain" is not an error: fall through.
        if out.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("piped")
            .take(4096)
            .read_to_string(&mut err)
            .ok();
        let msg = if err.trim().is_empty() {
            out.trim()
        } else {
            err.trim()
        };
        if msg.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        bail!("credential helper {prog} failed for {server}: {msg}");
    }
    parse_helper_output(&out).with_context(|| format!("credential helper {prog}"))
}

pub fn parse_helper_output(out: &str) -> Result<Option<Credential>> {
    let v: Value = serde_json::from_str(out).context("output is not JSON")?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    if user == "<token>" {
        bail!("returned an identity (OAuth2 refresh) token, which is not supported; log in with a user and password or a personal access token");
    }
    Ok(Some(Credential::Basic {
        user: user.into(),
        password: secret.into(),
    }))
}

/// Looks `host`/`repo` up in one parsed auth file.
pub fn lookup_in(
    config: &Value,
    file: &Path,
    host: &str,
    repo: &str,
    helper: &dyn Fn(&str, &str) -> Result<Option<Credential>>,
) -> Result<Option<Resolved>> {
    let keys = candidate_keys(host, repo);
    let norm_host = normalize_key(host);
    // 1. A helper configured for this registry.
    if let Some(helpers) = config.get("credHelpers").and_then(Value::as_object) {
        for (k, name) in helpers {
            if normalize_key(k) == norm_host {
                if let Some(name) = name.as_str() {
                    if let Some(c) = helper(name, &helper_server_url(host))? {
                        return Ok(Some(Resolved {
                            cred: c,
                            source: format!(
                                "docker-credential-{name} ({} credHelpers)",
                                file.display()
                            ),
                        }));
                    }
                }
            }
        }
    }
    // 2. Inline auths, most specific key first.
    if let Some(auths) = config.get("auths").and_then(Value::as_object) {
        for want in &keys {
            for (k, entry) in auths {
                if &normalize_key(k) != want {
                    continue;
                }
                if let Some(a) = entry
                    .get("auth")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    return Ok(Some(Resolved {
                        cred: decode_auth(a, file, k)?,
                        source: format!("{} (auths.{k})", file.display()),
                    }));
                }
                if let (Some(u), Some(p)) = (
                    entry.get("username").and_then(Value::as_str),
                    entry.get("password").and_then(Value::as_str),
                ) {
                    return Ok(Some(Resolved {
                        cred: Credential::Basic {
                            user: u.into(),
                            password: p.into(),
                        },
                        source: format!("{} (auths.{k})", file.display()),
                    }));
                }
            }
        }
    }
    // 3. The default credential store.
    if let Some(name) = config.get("credsStore").and_then(Value::as_str) {
        if !name.is_empty() {
            if let Some(c) = helper(name, &helper_server_url(host))? {
                return Ok(Some(Resolved {
                    cred: c,
                    source: format!("docker-credential-{name} ({} credsStore)", file.display()),
                }));
            }
        }
    }
    Ok(None)
}

/// Credentials for `host`/`repo`: explicit ones, else the auth files, else anonymous.
pub fn resolve(
    host: &str,
    repo: &str,
    user: Option<&str>,
    password: Option<&str>,
    progress: &Progress,
) -> Result<Resolved> {
    resolve_from(&auth_files(), host, repo, (user, password), progress)
}

/// [`resolve`] with the auth files to read, in order.
fn resolve_from(
    files: &[PathBuf],
    host: &str,
    repo: &str,
    (user, password): (Option<&str>, Option<&str>),
    progress: &Progress,
) -> Result<Resolved> {
    if let Some(u) = user {
        let p = password.ok_or_else(|| {
            anyhow!("--registry-user {u} needs a password: set NEMOCLAW_REGISTRY_PASSWORD or pass --registry-password-stdin")
        })?;
        return Ok(Resolved {
            cred: Credential::Basic {
                user: u.into(),
                password: p.into(),
            },
            source: "--registry-user".into(),
        });
    }
    for f in files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                progress.warn(Warning::new(
                    WarningCode::AuthFileIgnored,
                    format!("ignoring {}: not valid JSON ({e})", f.display()),
                ));
                continue;
            }
        };
        if let Some(r) = lookup_in(&v, f, host, repo, &run_helper)? {
            return Ok(r);
        }
    }
    Ok(Resolved {
        cred: Credential::Anonymous,
        source: "anonymous".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn no_helper(_: &str, _: &str) -> Result<Option<Credential>> {
        panic!("no helper expected")
    }

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            user: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn auths_inline_and_key_forms() {
        let cfg = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
            "127.0.0.1:5055": {"auth": b64("u:p:with:colons")},
            "http://reg.lan:5000/": {"username": "x", "password": "y"},
            "quay.io/org/repo": {"auth": b64("repo:scoped")},
            "quay.io": {"auth": b64("host:wide")},
            "empty.io": {}
        }});
        let f = Path::new("cfg.json");
        let get = |h: &str, r: &str| {
            lookup_in(&cfg, f, h, r, &no_helper)
                .unwrap()
                .map(|r| r.cred)
        };
        assert_eq!(
            get("127.0.0.1:5055", "base"),
            Some(basic("u", "p:with:colons"))
        );
        assert_eq!(
            get("docker.io", "library/debian"),
            Some(basic("hub", "hubpw"))
        );
        assert_eq!(
            get("registry-1.docker.io", "x/y"),
            Some(basic("hub", "hubpw"))
        );
        assert_eq!(get("reg.lan:5000", "a"), Some(basic("x", "y")));
        assert_eq!(get("quay.io", "org/repo"), Some(basic("repo", "scoped")));
        assert_eq!(get("quay.io", "org/other"), Some(basic("host", "wide")));
        assert_eq!(get("empty.io", "a"), None);
        assert_eq!(get("127.0.0.1:5056", "base"), None);
        let bad = json!({"auths": {"h": {"auth": "!!!"}}});
        assert!(lookup_in(&bad, f, "h", "r", &no_helper).is_err());
    }

    #[test]
    fn helpers_take_precedence_and_store_is_fallback() {
        let cfg = json!({
            "credHelpers": {"gcr.io": "gcloud"},
            "credsStore": "desktop",
            "auths": {"inline.io": {"auth": b64("i:i")}}
        });
        let f = Path::new("cfg.json");
        let helper = |name: &str, server: &str| -> Result<Option<Credential>> {
            Ok(match (name, server) {
                ("gcloud", "gcr.io") => Some(basic("oauth2", "tok")),
                ("desktop", "https://index.docker.io/v1/") => Some(basic("hub", "pw")),
                _ => None,
            })
        };
        let get = |h: &str| lookup_in(&cfg, f, h, "r", &helper).unwrap();
        let r = get("gcr.io").unwrap();
        assert_eq!(r.cred, basic("oauth2", "tok"));
        assert!(
            r.source.contains("docker-credential-gcloud"),
            "{}",
            r.source
        );
        assert_eq!(get("inline.io").unwrap().cred, basic("i", "i"));
        assert_eq!(get("docker.io").unwrap().cred, basic("hub", "pw"));
        assert!(get("other.io").is_none());
    }

    #[test]
    fn helper_output_parsing() {
        assert_eq!(
            parse_helper_output(r#"{"ServerURL":"h","Username":"u","Secret":"s"}"#).unwrap(),
            Some(basic("u", "s"))
        );
        assert_eq!(
            parse_helper_output(r#"{"Username":"u","Secret":""}"#).unwrap(),
            None
        );
        assert!(parse_helper_output(r#"{"Username":"<token>","Secret":"r"}"#).is_err());
        assert!(parse_helper_output("nope").is_err());
    }

    #[test]
    fn explicit_user_needs_password_and_wins() {
        let p = Progress::silent();
        assert!(resolve("h", "r", Some("u"), None, &p).is_err());
        let r = resolve("h", "r", Some("u"), Some("p"), &p).unwrap();
        assert_eq!(r.cred, basic("u", "p"));
        assert_eq!(format!("{:?}", r.cred), "Basic(u, <redacted>)");
    }

    /// An auth file that is not JSON is skipped with a coded warning naming it; the
    /// next file still answers.
    #[test]
    fn broken_auth_file_is_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let (bad, good) = (d.path().join("bad.json"), d.path().join("good.json"));
        std::fs::write(&bad, b"{not json").unwrap();
        let auth = json!({"auths": {"h": {"auth": b64("u:p")}}});
        std::fs::write(&good, auth.to_string()).unwrap();
        let (p, events) = Progress::collecting();
        let r = resolve_from(&[bad.clone(), good], "h", "r", (None, None), &p).unwrap();
        assert_eq!(r.cred, basic("u", "p"));
        assert_eq!(events.warning_codes(), vec![WarningCode::AuthFileIgnored]);
        let w = &p.warnings()[0].message;
        assert!(w.contains(&bad.display().to_string()), "{w}");
    }
}
