//! Small fixture builders shared by unit and integration tests: tar layers made in
//! memory and OCI image layouts written from them. Panics on I/O errors (tests only).
use serde_json::json;
use std::io::Write;
use std::path::Path;

pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.b
            .append_data(&mut h, format!("{path}/"), &[][..])
            .expect("dir");
        self
    }
    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, path, data).expect("file");
        self
    }
    pub fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_data(&mut h, path, data).expect("file");
        self
    }
    /// Writes the name bytes verbatim (no validation), for hostile-input tests.
    pub fn raw_file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        self.b.get_mut().write_all(h.as_bytes()).expect("hdr");
        self.b.get_mut().write_all(data).expect("data");
        let pad = (512 - data.len() % 512) % 512;
        self.b.get_mut().write_all(&vec![0u8; pad]).expect("pad");
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).expect("symlink");
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, path, target).expect("hardlink");
        self
    }
    /// Appends a hand-made header (checksum filled in) and its data, padded.
    pub fn raw(mut self, h: Raw, data: &[u8]) -> Self {
        let w = self.b.get_mut();
        w.write_all(&h.finish()).expect("hdr");
        w.write_all(data).expect("data");
        w.write_all(&vec![0u8; (512 - data.len() % 512) % 512])
            .expect("pad");
        self
    }
    /// A PAX extended header ('x', ustar magic) with well-formed records.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let data = pax_records(records);
        self.raw(
            Raw::new(b'x', b"PaxHeader", data.len() as u64).ustar(),
            &data,
        )
    }
    /// A PAX header of type `t` ('x' or 'g') whose data is given verbatim.
    pub fn pax_data(self, t: u8, data: &[u8]) -> Self {
        self.raw(Raw::new(t, b"PaxHeader", data.len() as u64).ustar(), data)
    }
    /// A GNU long name ('L') or long link ('K') header; `data` verbatim.
    pub fn gnu_long(self, t: u8, data: &[u8]) -> Self {
        self.raw(Raw::new(t, b"././@LongLink", data.len() as u64), data)
    }
    pub fn build(self) -> Vec<u8> {
        self.b.into_inner().expect("tar")
    }
}

/// PAX records `LEN key=value\n` with the right lengths.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// A 512-byte tar header with every field settable (GNU magic unless `ustar()`).
pub struct Raw {
    h: [u8; 512],
}

impl Raw {
    pub fn new(typeflag: u8, name: &[u8], size: u64) -> Raw {
        let mut r = Raw { h: [0u8; 512] };
        r.h[..name.len()].copy_from_slice(name);
        r = r
            .field(100, b"0000644\0")
            .field(108, b"0000000\0")
            .field(116, b"0000000\0")
            .field(124, format!("{size:011o}\0").as_bytes())
            .field(136, b"14524716200\0")
            .field(257, b"ustar  \0");
        r.h[156] = typeflag;
        r
    }
    /// POSIX ustar magic and version.
    pub fn ustar(self) -> Raw {
        self.field(257, b"ustar\x0000")
    }
    /// Overwrites bytes at `offset`.
    pub fn field(mut self, offset: usize, bytes: &[u8]) -> Raw {
        self.h[offset..offset + bytes.len()].copy_from_slice(bytes);
        self
    }
    pub fn link(self, target: &[u8]) -> Raw {
        self.field(157, target)
    }
    fn finish(mut self) -> [u8; 512] {
        self.h[148..156].copy_from_slice(b"        ");
        let sum: u32 = self.h.iter().map(|b| *b as u32).sum();
        self.h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.h
    }
}

/// A layer's start with the accounts every test image needs: `/etc/passwd` and
/// `/etc/group` with root and nobody/nogroup.
pub fn accounts() -> TarBuilder {
    TarBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
}

/// gzip (the crate's pinned flate2 backend, default level) of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    crate::digest::sha256_digest(data)
}

/// An OCI image layout with one tagged image: gzip layers from uncompressed tars, a
/// minimal amd64 config. `mangle` edits a layer blob before it is hashed, so a broken
/// stream keeps consistent descriptors.
pub struct LayoutBuilder {
    layers: Vec<(Vec<u8>, String)>,
    tag: String,
    config: serde_json::Value,
    /// The config's `architecture` and `variant`.
    platform: (String, Option<String>),
}

impl Default for LayoutBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayoutBuilder {
    pub fn new() -> Self {
        LayoutBuilder {
            layers: Vec::new(),
            tag: "latest".into(),
            config: json!({"Env": ["PATH=/usr/bin:/bin"]}),
            platform: ("amd64".into(), None),
        }
    }
    /// A layer from an uncompressed tar, stored gzip'd.
    pub fn layer(self, tar: &[u8]) -> Self {
        self.layer_mangled(tar, |z| z)
    }
    /// Like `layer`, with `mangle` applied to the compressed blob before hashing.
    pub fn layer_mangled(mut self, tar: &[u8], mangle: impl FnOnce(Vec<u8>) -> Vec<u8>) -> Self {
        self.layers.push((mangle(gzip(tar)), digest(tar)));
        self
    }
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.into();
        self
    }
    /// The config's `config` object (how a container runs: Env, User, Labels, ...).
    pub fn run_config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }
    /// The config's `architecture` and `variant` (default amd64, no variant).
    pub fn platform(mut self, arch: &str, variant: Option<&str>) -> Self {
        self.platform = (arch.into(), variant.map(str::to_string));
        self
    }
    /// Writes the layout into `dir` (created); returns the manifest digest.
    pub fn write(self, dir: &Path) -> String {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir blobs");
        let put = |bytes: &[u8]| {
            let d = digest(bytes);
            std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).expect("write blob");
            d
        };
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (blob, diff_id) in &self.layers {
            descs.push(
                json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": put(blob), "size": blob.len()}),
            );
            diff_ids.push(diff_id.clone());
        }
        let mut config = json!({"architecture": self.platform.0, "os": "linux",
            "config": self.config, "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        if let Some(v) = &self.platform.1 {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).expect("json");
        let manifest = serde_json::to_vec(&json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(&config), "size": config.len()},
            "layers": descs}))
        .expect("json");
        let md = put(&manifest);
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": self.tag}}]});
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("write index.json");
        md
    }
}

/// A read-only registry serving one OCI layout on 127.0.0.1 over plain HTTP: `/v2/`,
/// manifests by tag (the layout's `ref.name`) or digest, and blobs, for any repository
/// name. Enough for a pull by tag or digest without a real registry; its threads end
/// with the test process.
pub struct TinyRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl TinyRegistry {
    pub fn serve(layout: &Path) -> TinyRegistry {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let root = layout.to_path_buf();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = tiny_registry_conn(&root, conn);
                });
            }
        });
        TinyRegistry { addr }
    }
}

/// Answers the requests of one connection (keep-alive) until the client closes it.
fn tiny_registry_conn(root: &Path, conn: std::net::TcpStream) -> std::io::Result<()> {
    use std::io::BufRead;
    let mut w = conn.try_clone()?;
    let mut r = std::io::BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, ctype, body) = tiny_registry_route(root, path);
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n",
            body.len()
        );
        if status.starts_with("200") && path != "/v2/" {
            head.push_str(&format!("Docker-Content-Digest: {}\r\n", digest(&body)));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        if method != "HEAD" {
            w.write_all(&body)?;
        }
        w.flush()?;
    }
}

fn tiny_registry_route(root: &Path, path: &str) -> (&'static str, String, Vec<u8>) {
    let not_found = || {
        let body = br#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#;
        (
            "404 Not Found",
            "application/json".to_string(),
            body.to_vec(),
        )
    };
    if path == "/v2/" {
        return ("200 OK", "application/json".into(), b"{}".to_vec());
    }
    let blob = |d: &str| -> Option<Vec<u8>> {
        let hex = d.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        std::fs::read(root.join("blobs/sha256").join(hex)).ok()
    };
    if let Some((_, d)) = path.split_once("/blobs/") {
        return match blob(d) {
            Some(b) => ("200 OK", "application/octet-stream".into(), b),
            None => not_found(),
        };
    }
    let Some((_, reference)) = path.split_once("/manifests/") else {
        return not_found();
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap_or_default())
            .unwrap_or_default();
    let entry = index["manifests"].as_array().and_then(|m| {
        m.iter()
            .find(|e| {
                e["digest"] == reference
                    || e["annotations"]["org.opencontainers.image.ref.name"] == reference
            })
            .cloned()
    });
    match entry.and_then(|e| Some((e["mediaType"].as_str()?.to_string(), e["digest"].clone()))) {
        Some((mt, d)) => match d.as_str().and_then(blob) {
            Some(b) => ("200 OK", mt, b),
            None => not_found(),
        },
        None => not_found(),
    }
}
