//! `registry://HOST[:PORT]/REPO[:TAG][@sha256:HEX]` references, and the decision
//! whether a registry may be spoken to over plain HTTP.
use anyhow::{bail, Result};
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegRef {
    /// `HOST[:PORT]` as written (lowercased), e.g. `127.0.0.1:5055`, `[::1]:5000`, `ghcr.io`.
    pub host: String,
    /// Repository path, e.g. `base`, `library/debian`, `org/team/img`.
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

pub fn is_docker_hub(host: &str) -> bool {
    DOCKER_HUB.contains(&host)
}

fn valid_repo(repo: &str) -> bool {
    !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        })
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 255 {
        return false;
    }
    let (name, port) = split_host_port(host);
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if let Some(inner) = name.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

/// Splits `host[:port]` / `[v6]:port` into the host name and the port text.
pub fn split_host_port(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        if let Some(end) = host.find(']') {
            let rest = &host[end + 1..];
            return (&host[..=end], rest.strip_prefix(':'));
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    }
}

impl RegRef {
    pub fn parse(s: &str) -> Result<RegRef> {
        let what = || format!("invalid registry reference 'registry://{s}'");
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                if crate::digest::digest_hex(d).is_err() {
                    bail!(
                        "{}: '{d}' is not a sha256 digest (sha256:<64 lowercase hex>)",
                        what()
                    );
                }
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        let Some((host, path)) = name.split_once('/') else {
            bail!("{}: expected HOST[:PORT]/REPO[:TAG|@sha256:...]", what());
        };
        let host = host.to_ascii_lowercase();
        if !valid_host(&host) {
            bail!("{}: '{host}' is not a registry host[:port]", what());
        }
        // A ':' in the last path component starts the tag.
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                bail!("{}: '{t}' is not a valid tag", what());
            }
        }
        let mut repo = repo.to_string();
        if !valid_repo(&repo) {
            bail!(
                "{}: repository '{repo}' must be lowercase path components of [a-z0-9._-]",
                what()
            );
        }
        if is_docker_hub(&host) && !repo.contains('/') {
            repo = format!("library/{repo}");
        }
        Ok(RegRef {
            host,
            repo,
            tag,
            digest,
        })
    }

    /// The address requests go to (Docker Hub's API lives on registry-1.docker.io).
    pub fn api_host(&self) -> &str {
        if is_docker_hub(&self.host) {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }

    /// `host/repo` (no tag or digest).
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.repo)
    }

    /// The same repository, pinned to `digest`.
    pub fn with_digest(&self, digest: &str) -> RegRef {
        RegRef {
            digest: Some(digest.to_string()),
            tag: None,
            ..self.clone()
        }
    }

    /// The oci-client reference (a digest wins over a tag; neither means `latest`).
    pub fn to_oci(&self) -> oci_client::Reference {
        let (reg, repo) = (self.api_host().to_string(), self.repo.clone());
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(reg, repo, d.clone()),
            (None, Some(t)) => oci_client::Reference::with_tag(reg, repo, t.clone()),
            (None, None) => oci_client::Reference::with_tag(reg, repo, "latest".into()),
        }
    }
}

impl fmt::Display for RegRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// True for loopback registries: `localhost`, 127.0.0.0/8, `[::1]` (any port).
pub fn is_loopback(host: &str) -> bool {
    let (name, _) = split_host_port(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Plain HTTP is allowed for loopback hosts and for hosts listed in `--insecure-registry`
/// (an entry `HOST` allows every port of HOST; `HOST:PORT` only that port).
pub fn plain_http_allowed(host: &str, insecure: &[String]) -> bool {
    if is_loopback(host) {
        return true;
    }
    let host = host.to_ascii_lowercase();
    let (name, _) = split_host_port(&host);
    insecure.iter().any(|e| {
        let e = e
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        e == host || (split_host_port(&e).1.is_none() && e == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:378aa4208fa67f5a081cf406f5b68f35216f9308897c4670f43109e52eda3bf2";

    #[test]
    fn parses_digest_tag_and_plain() {
        let r = RegRef::parse(&format!("127.0.0.1:5055/base@{D}")).unwrap();
        assert_eq!(r.host, "127.0.0.1:5055");
        assert_eq!(r.repo, "base");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("127.0.0.1:5055/base@{D}"));

        let r = RegRef::parse("ghcr.io/org/team/img:v1.2").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.tag.as_deref()),
            ("ghcr.io", "org/team/img", Some("v1.2"))
        );
        let o = r.to_oci();
        assert_eq!(o.registry(), "ghcr.io");
        assert_eq!(o.repository(), "org/team/img");
        assert_eq!(o.tag(), Some("v1.2"));

        let r = RegRef::parse("localhost:5000/a/b").unwrap();
        assert_eq!((r.repo.as_str(), r.tag.as_deref()), ("a/b", None));
        assert_eq!(r.to_oci().tag(), Some("latest"));

        let r = RegRef::parse(&format!("[::1]:5000/x:t@{D}")).unwrap();
        assert_eq!(r.host, "[::1]:5000");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.to_oci().digest(), Some(D));

        let r = RegRef::parse("docker.io/debian:bookworm").unwrap();
        assert_eq!(r.repo, "library/debian");
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn rejects_bad_references() {
        // (input, the reason the error must give)
        let repo = "must be lowercase path components of [a-z0-9._-]";
        let host = "is not a registry host[:port]";
        let digest = "is not a sha256 digest (sha256:<64 lowercase hex>)";
        for (bad, why) in [
            ("base", "expected HOST[:PORT]/REPO[:TAG|@sha256:...]"),
            ("host/", repo),
            ("host/Upper", repo),
            ("host/a//b", repo),
            ("host/a:", "'' is not a valid tag"),
            ("host/a:-bad", "'-bad' is not a valid tag"),
            ("host/a@sha256:abc", digest),
            ("host/a@md5:0123", digest),
            ("ho st/a", host),
            ("host:port/a", host),
            ("[zz]:1/a", host),
            ("host/a/../b", repo),
        ] {
            let err = match RegRef::parse(bad) {
                Ok(r) => panic!("{bad} should be rejected, parsed as {r:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains(&format!("'registry://{bad}'")) && err.contains(why),
                "{bad}: expected '{why}', got: {err}"
            );
        }
    }

    #[test]
    fn insecure_decision() {
        for h in [
            "127.0.0.1:5055",
            "127.1.2.3",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(plain_http_allowed(h, &[]), "{h}");
        }
        for h in ["10.0.0.1:5000", "registry.example.com", "127.example.com"] {
            assert!(!plain_http_allowed(h, &[]), "{h}");
        }
        let list = vec!["registry.lan".to_string(), "10.0.0.1:5000".to_string()];
        assert!(plain_http_allowed("registry.lan:8080", &list));
        assert!(plain_http_allowed("registry.lan", &list));
        assert!(plain_http_allowed("10.0.0.1:5000", &list));
        assert!(!plain_http_allowed("10.0.0.1:5001", &list));
        assert!(!plain_http_allowed("other.lan", &list));
    }
}
