//! The proxy environment file `/tmp/nemoclaw-proxy-env.sh`.
//!
//! Every shell in the image sources it (via `/etc/profile.d` and `/etc/bash.bashrc`), root's
//! shells included, so it must be root-owned and read-only, and its content must be inert
//! shell: every value is single-quoted. It is written atomically (O_EXCL temp file in the
//! same directory, then rename) so a reader never sees a half-written file and a
//! pre-planted file or symlink is replaced, never followed.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{fchown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_FILE: &str = "/tmp/nemoclaw-proxy-env.sh";
pub const DEFAULT_HOST: &str = "10.200.0.1";
pub const DEFAULT_PORT: u16 = 3128;

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
}

impl Proxy {
    /// From `NEMOCLAW_PROXY_HOST` / `NEMOCLAW_PROXY_PORT` values. A host is a DNS name or
    /// an IP literal; anything else (spaces, quotes, `@`, `/`) is a configuration error,
    /// not something to pass on into URLs.
    pub fn from_values(host: Option<&str>, port: Option<&str>) -> Result<Proxy, String> {
        let host = host.map(str::trim).filter(|h| !h.is_empty());
        let host = host.unwrap_or(DEFAULT_HOST);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ok = !bare.is_empty()
            && bare.len() <= 253
            && bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !ok {
            return Err(format!("invalid NEMOCLAW_PROXY_HOST {host:?}"));
        }
        let port = match port.map(str::trim).filter(|p| !p.is_empty()) {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&n| n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("invalid NEMOCLAW_PROXY_PORT {p:?}"))?,
        };
        Ok(Proxy {
            host: bare.to_string(),
            port,
        })
    }

    /// `http://host:port`, with IPv6 literals bracketed.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// Variables in file order: the proxy, then the image's declared runtime variables
/// (tool state redirected to /tmp so nothing writes into the read-only or shared home),
/// then whatever the image lets through from the container's environment.
pub fn variables(p: &Proxy, spec: &[(String, String)]) -> Vec<(String, String)> {
    let url = p.url();
    let no_proxy = format!("localhost,127.0.0.1,::1,{}", p.host);
    let mut v: Vec<(String, String)> = [
        ("HTTP_PROXY", &url),
        ("HTTPS_PROXY", &url),
        ("http_proxy", &url),
        ("https_proxy", &url),
        ("NO_PROXY", &no_proxy),
        ("no_proxy", &no_proxy),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, val) in spec {
        if !v.iter().any(|(have, _)| have == k) {
            v.push((k.clone(), val.clone()));
        }
    }
    v
}

/// POSIX single quoting: the only character needing care inside '...' is ' itself.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The file content: `export NAME='value'` lines.
pub fn render(vars: &[(String, String)]) -> String {
    let mut out = String::from(
        "# Written by nemoclaw-init at container start. Root-owned and read-only;\n\
         # sourced by /etc/profile.d/nemoclaw-proxy.sh and /etc/bash.bashrc.\n",
    );
    for (k, v) in vars {
        out.push_str("export ");
        out.push_str(k);
        out.push('=');
        out.push_str(&shell_quote(v));
        out.push('\n');
    }
    out
}

/// Writes `content` to `path` atomically: a pre-existing file or symlink at `path` is
/// removed first (in a sticky /tmp only its owner or root can, and `rename` over another
/// user's file would fail the same way), then a fresh O_EXCL|O_NOFOLLOW temp file beside
/// it gets the content, `fchown` to `owner` (if given), `fchmod 0444` and `fsync`, and is
/// renamed into place; the directory is synced last. Nothing at the path is ever followed.
pub fn write_atomic(path: &Path, content: &str, owner: Option<(u32, u32)>) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => {
            return Err(io::Error::other("a directory is in the way"))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot remove the existing file: {e}"))
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let base = path
        .file_name()
        .ok_or_else(|| io::Error::other("target has no file name"))?
        .to_string_lossy()
        .into_owned();
    let mut last_err = None;
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp: PathBuf = dir.join(format!(
            ".{base}.{}.{attempt}.{nanos:08x}",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let result = (|| {
            file.write_all(content.as_bytes())?;
            if let Some((uid, gid)) = owner {
                fchown(&file, Some(uid), Some(gid))?;
            }
            file.set_permissions(Permissions::from_mode(0o444))?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        return result;
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temp file")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_to_a_relative_path_uses_the_current_directory() {
        let d = std::env::temp_dir().join(format!("nemoclaw-init-relenv-{}", std::process::id()));
        fs::create_dir_all(&d).expect("mkdir");
        let d2 = d.clone();
        // chdir only in a forked child: the working directory is process-wide.
        let r = crate::testutil::in_child(move || {
            std::env::set_current_dir(&d2)?;
            write_atomic(Path::new("proxy-env.sh"), "x\n", None)
        });
        let content = fs::read_to_string(d.join("proxy-env.sh"));
        fs::remove_dir_all(&d).expect("cleanup");
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(content.expect("written"), "x\n");
    }

    #[test]
    fn default_content_is_exact() {
        let p = Proxy::from_values(None, None).expect("defaults");
        let spec = vec![
            (
                "npm_config_cache".to_string(),
                "/tmp/.npm-cache".to_string(),
            ),
            ("HTTP_PROXY".to_string(), "http://evil:1".to_string()),
            (
                "GIT_CONFIG_GLOBAL".to_string(),
                "/tmp/.gitconfig".to_string(),
            ),
        ];
        let text = render(&variables(&p, &spec));
        let expected = "export HTTP_PROXY='http://10.200.0.1:3128'\n\
            export HTTPS_PROXY='http://10.200.0.1:3128'\n\
            export http_proxy='http://10.200.0.1:3128'\n\
            export https_proxy='http://10.200.0.1:3128'\n\
            export NO_PROXY='localhost,127.0.0.1,::1,10.200.0.1'\n\
            export no_proxy='localhost,127.0.0.1,::1,10.200.0.1'\n\
            export npm_config_cache='/tmp/.npm-cache'\n\
            export GIT_CONFIG_GLOBAL='/tmp/.gitconfig'\n";
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(body, expected);
        assert!(text
            .lines()
            .all(|l| l.starts_with('#') || l.starts_with("export ")));
    }

    #[test]
    fn custom_host_port_and_ipv6() {
        let p = Proxy::from_values(Some("proxy.internal"), Some("8080")).expect("valid");
        let vars = variables(&p, &[]);
        assert_eq!(
            vars[0],
            (
                "HTTP_PROXY".into(),
                "http://proxy.internal:8080".to_string()
            )
        );
        assert_eq!(
            vars[4],
            (
                "NO_PROXY".into(),
                "localhost,127.0.0.1,::1,proxy.internal".to_string()
            )
        );
        let v6 = Proxy::from_values(Some("[fd00::1]"), Some("3128")).expect("valid v6");
        assert_eq!(v6.host, "fd00::1");
        assert_eq!(v6.url(), "http://[fd00::1]:3128");
    }

    #[test]
    fn rejects_bad_values() {
        for h in [
            "a b",
            "x'y",
            "evil;rm",
            "u@h",
            "h/p",
            "$(id)",
            "a\nb",
            "10.0.0.1 x",
        ] {
            assert!(Proxy::from_values(Some(h), None).is_err(), "{h:?}");
        }
        for p in ["0", "65536", "80a", "-1", "+80"] {
            assert!(Proxy::from_values(None, Some(p)).is_err(), "{p:?}");
        }
        assert_eq!(
            Proxy::from_values(Some(" "), Some("")).expect("blank = default"),
            Proxy {
                host: DEFAULT_HOST.into(),
                port: DEFAULT_PORT
            }
        );
    }

    #[test]
    fn quoting_is_inert() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("$(id) `x` \"q\""), "'$(id) `x` \"q\"'");
        let text = render(&[("X".into(), "it's; rm -rf /".to_string())]);
        assert!(text.ends_with("export X='it'\\''s; rm -rf /'\n"));
    }

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = std::env::temp_dir().join(format!("nemoclaw-init-pe-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let target = dir.join("env.sh");
        // A pre-planted symlink must be replaced, not followed.
        let victim = dir.join("victim");
        fs::write(&victim, "keep").expect("victim");
        std::os::unix::fs::symlink(&victim, &target).expect("symlink");
        write_atomic(&target, "export A='1'\n", None).expect("write");
        let meta = fs::symlink_metadata(&target).expect("meta");
        let content = fs::read_to_string(&target).expect("read");
        let victim_content = fs::read_to_string(&victim).expect("victim read");
        let leftovers = fs::read_dir(&dir).expect("ls").count();
        fs::remove_dir_all(&dir).expect("cleanup");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.mode() & 0o7777, 0o444);
        assert_eq!(content, "export A='1'\n");
        assert_eq!(victim_content, "keep");
        assert_eq!(leftovers, 2, "no temp files left behind");
    }

    #[test]
    fn atomic_write_replaces_a_stale_file_and_refuses_a_directory() {
        let dir = std::env::temp_dir().join(format!("nemoclaw-init-pe2-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let target = dir.join("env.sh");
        fs::write(&target, "stale").expect("stale");
        fs::set_permissions(&target, Permissions::from_mode(0o444)).expect("chmod");
        write_atomic(&target, "export B='2'\n", None).expect("write");
        assert_eq!(fs::read_to_string(&target).expect("read"), "export B='2'\n");
        let blocker = dir.join("blocked.sh");
        fs::create_dir(&blocker).expect("dir");
        let err = write_atomic(&blocker, "x", None).expect_err("dir in the way");
        assert!(err.to_string().contains("directory is in the way"), "{err}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
