//! Registry transport (issue 6): pull a base into the local content-addressed cache,
//! push a staged OCI layout. Built on oci-client (which does the bearer-token
//! exchange); everything else (auth files, retries, streaming verification, cache
//! reuse, skipping blobs the registry already has) is here.
//!
//! Pull: manifest bytes are checked against the pinned digest, then config and
//! layers are streamed into `Cache` temp files while their size and digest are
//! verified; only verified blobs are renamed into the cache, and blobs already
//! cached are not downloaded again.
//!
//! Push: for every blob of the manifest, `HEAD` first (present: skip), then a
//! cross-repository mount when the cache knows the blob was pulled from another
//! repository of the same registry, else a streaming upload from the layout file
//! (1 MiB chunks; a layer is never held in memory). The manifest is pushed as the
//! exact bytes that were built.
mod auth;
pub(crate) mod reference;
mod remote_blob;

pub use auth::{Credential, Resolved};
pub use reference::{plain_http_allowed, RegRef};
pub use remote_blob::{RemoteBlob, RemoteBlobs};

use crate::cache::Cache;
use crate::digest::{digest_hex, sha256_digest};
use crate::image::spec::{self, check_layer_count, select_platform};
use crate::image::{
    BaseImage, BlobLocation, DeferredLayers, LayerBlob, LayerDescriptor, Tee, Tees,
};
use crate::oci::media_type::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST};
use crate::progress::{Progress, Task, Warning, WarningCode};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (HOST[:PORT]) that may be spoken to over plain HTTP (loopback always may).
    pub insecure: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// Where sessions report transfers, retries and warnings (the build's own).
    pub progress: Progress,
    /// Where every session of the command tallies what it moved.
    pub transfers: crate::transfer::Transfers,
}

/// Attempts per request on transient failures (5xx, 429, connection errors).
const ATTEMPTS: u32 = 3;
/// Blobs transferred at once.
pub(crate) const CONCURRENCY: usize = 3;
/// Upload chunk read from the layout file.
const CHUNK: usize = 1 << 20;
/// Largest manifest, index or config we accept.
pub(crate) const JSON_LIMIT: u64 = 16 * 1024 * 1024;
const USER_AGENT: &str = concat!("nemoclaw-build/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Pull,
    Push,
}

pub(crate) fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / 1048576.0)
}

pub(crate) fn short(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// One registry repository with its client and credentials.
pub(crate) struct Session {
    client: oci_client::Client,
    pub(crate) r: RegRef,
    auth: Resolved,
    scheme: &'static str,
    pub(crate) out: Progress,
    transfers: crate::transfer::Transfers,
}

/// How an oci-client error is treated.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Transient(String),
    Status(u16),
    Other,
}

fn classify(e: &OciDistributionError) -> Class {
    use OciDistributionError as E;
    let status = |code: u16| match code {
        408 | 429 | 500..=599 => Class::Transient(format!("HTTP {code}")),
        c => Class::Status(c),
    };
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => Class::Status(401),
        E::ServerError { code, .. } => status(*code),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.contains(&&OciErrorCode::Unauthorized) {
                Class::Status(401)
            } else if codes.contains(&&OciErrorCode::Denied) {
                Class::Status(403)
            } else if codes.contains(&&OciErrorCode::Toomanyrequests) {
                Class::Transient("HTTP 429 too many requests".into())
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Class::Status(404)
            } else {
                Class::Other
            }
        }
        E::RequestError(re) => match re.status() {
            Some(s) => status(s.as_u16()),
            None if re.is_connect() || re.is_timeout() || re.is_request() || re.is_body() => {
                Class::Transient(if re.is_timeout() {
                    "timeout".into()
                } else {
                    "connection error".into()
                })
            }
            None => Class::Other,
        },
        E::IoError(_) => Class::Transient("I/O error".into()),
        _ => Class::Other,
    }
}

fn client_for(r: &RegRef, opts: &RegistryOptions) -> (oci_client::Client, &'static str) {
    let plain = plain_http_allowed(&r.host, &opts.insecure);
    let protocol = if plain {
        ClientProtocol::HttpsExcept(vec![r.api_host().to_string()])
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        // One POST + one streaming PUT per blob: the upload every registry supports.
        use_monolithic_push: true,
        // Platform selection is ours (--platform), on raw index bytes.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(300)),
        user_agent: USER_AGENT,
        ..Default::default()
    };
    (
        oci_client::Client::new(config),
        if plain { "http" } else { "https" },
    )
}

impl Session {
    pub(crate) async fn open(reference: &str, opts: &RegistryOptions) -> Result<Session> {
        let r = RegRef::parse(reference)?;
        let out = opts.progress.clone();
        let auth = auth::resolve(
            &r.host,
            &r.repo,
            opts.username.as_deref(),
            opts.password.as_deref(),
            &out,
        )?;
        let (client, scheme) = client_for(&r, opts);
        if scheme == "http"
            && auth.cred != Credential::Anonymous
            && !reference::is_loopback(&r.host)
        {
            out.warn(Warning::new(
                WarningCode::PlainHttpCredentials,
                format!(
                    "sending credentials for {} over plain HTTP (--insecure-registry)",
                    r.host
                ),
            ));
        }
        let mut s = Session {
            client,
            r,
            auth,
            scheme,
            out,
            transfers: opts.transfers.clone(),
        };
        s.probe().await?;
        Ok(s)
    }

    /// Asks `/v2/` once (with a throwaway client) whether the registry wants auth. Only
    /// then is the credential stored in the real client: oci-client re-probes `/v2/`
    /// before every request for a stored credential that yields no token.
    async fn probe(&mut self) -> Result<()> {
        let (probe, _) = client_for(&self.r, &self.opts_for_probe());
        let oci = self.oci();
        let auth = self.auth.to_oci();
        let token = self
            .retry("GET /v2/", Op::Pull, || {
                probe.auth(&oci, &auth, oci_client::RegistryOperation::Pull)
            })
            .await?;
        if token.is_some() || self.auth.cred != Credential::Anonymous {
            self.client
                .store_auth_if_needed(oci.resolve_registry(), &auth)
                .await;
        }
        Ok(())
    }

    fn opts_for_probe(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: if self.scheme == "http" {
                vec![self.r.host.clone()]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    fn oci(&self) -> oci_client::Reference {
        self.r.to_oci()
    }

    /// Adds to this registry's row of the command's transfer tally.
    fn tally(&self, f: impl FnOnce(&mut crate::transfer::RegistryTransfer)) {
        self.transfers.add(&self.r.host, f);
    }

    /// Turns an oci-client error into one naming the registry, repository and object.
    fn explain(&self, e: OciDistributionError, what: &str, op: Op, attempts: u32) -> anyhow::Error {
        let (host, repo) = (&self.r.host, &self.r.repo);
        let msg = match classify(&e) {
            Class::Status(401) => {
                let hint = if self.auth.cred == Credential::Anonymous {
                    "no credentials were found: check --registry-user (password in NEMOCLAW_REGISTRY_PASSWORD or --registry-password-stdin) or log in so ~/.docker/config.json or ${XDG_RUNTIME_DIR}/containers/auth.json has them".to_string()
                } else {
                    format!(
                        "the credentials from {} were rejected: check --registry-user or ~/.docker/config.json",
                        self.auth.source
                    )
                };
                format!("401 Unauthorized from {host} for repository {repo} ({what}): {hint}")
            }
            Class::Status(403) => format!(
                "403 Forbidden from {host} for repository {repo} ({what}): the credentials from {} may not {} this repository",
                self.auth.source,
                if op == Op::Push { "push to" } else { "pull from" }
            ),
            Class::Status(404) => format!(
                "404 Not Found from {host}: repository {repo} has no {what} (or the repository does not exist)"
            ),
            Class::Status(c) => format!("HTTP {c} from {host} for repository {repo} ({what})"),
            Class::Transient(kind) => {
                let mut m = format!(
                    "{kind} talking to {}://{host} for repository {repo} ({what}), {attempts} attempt(s)",
                    self.scheme
                );
                if self.scheme == "https" && kind == "connection error" {
                    m.push_str(&format!(
                        "; if {host} serves plain HTTP, pass --insecure-registry {host}"
                    ));
                }
                m
            }
            Class::Other => format!("registry {host}, repository {repo} ({what}) failed"),
        };
        anyhow::Error::new(e).context(msg)
    }

    /// Runs `f` up to ATTEMPTS times while it fails transiently (backoff 0.5 s, 1.5 s).
    async fn retry<T, F, Fut>(&self, what: &str, op: Op, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => match classify(&e) {
                    Class::Transient(kind) if attempt < ATTEMPTS => {
                        self.out.log(&format!(
                            "{}: {kind} ({what}), retrying ({}/{ATTEMPTS})",
                            self.r.host,
                            attempt + 1
                        ));
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    _ => return Err(self.explain(e, what, op, attempt)),
                },
            }
        }
    }

    /// Fetches a manifest (or index) by tag or digest; checks a digest reference.
    pub(crate) async fn manifest(&self, r: &RegRef, what: &str) -> Result<(Vec<u8>, String)> {
        let oci = r.to_oci();
        let accept = [
            MT_OCI_MANIFEST,
            MT_DOCKER_MANIFEST,
            MT_OCI_INDEX,
            MT_DOCKER_LIST,
        ];
        let auth = self.auth.to_oci();
        let (bytes, _) = self
            .retry(what, Op::Pull, || {
                self.client.pull_manifest_raw(&oci, &auth, &accept)
            })
            .await?;
        self.tally(|t| t.downloaded_bytes += bytes.len() as u64);
        if bytes.len() as u64 > JSON_LIMIT {
            bail!(
                "{what} from {} is {} bytes, more than {JSON_LIMIT} allowed",
                self.r.host,
                bytes.len()
            );
        }
        let got = sha256_digest(&bytes);
        if let Some(want) = &r.digest {
            if &got != want {
                bail!(
                    "{what} from {}/{}: digest mismatch: requested {want}, content hashes to {got}",
                    self.r.host,
                    self.r.repo
                );
            }
        }
        Ok((bytes.to_vec(), got))
    }

    /// One download attempt of a blob into `tmp`, verifying size and digest as it streams.
    async fn download_once(
        &self,
        b: &Want<'_>,
        tmp: &mut tempfile::NamedTempFile,
        task: &Task,
        tee: Option<&mut Tee>,
    ) -> Result<(), DlError> {
        let (digest, size, label) = (b.digest, b.size, b.label);
        let blob_what = format!("{label}, blob {digest}");
        let mut stream = self
            .client
            .pull_blob_stream(&self.oci(), digest)
            .await
            .map_err(|e| DlError::from_oci(e, self, &blob_what))?;
        if let Some(cl) = stream.content_length {
            if cl > size {
                return Err(DlError::Fatal(anyhow!(
                    "{label}: blob {digest} from {}: the registry announces {cl} bytes, the descriptor says {size}",
                    self.r.name()
                )));
            }
        }
        tmp.as_file_mut().set_len(0).ok();
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        task.restart();
        let (n, h) = self.receive(&mut stream, b, &mut w, (task, tee)).await?;
        w.flush()
            .map_err(|e| DlError::Fatal(anyhow!("cannot write to the cache: {e}")))?;
        drop(w);
        if n != size {
            return Err(DlError::Fatal(anyhow!(
                "{label}: size mismatch for blob {digest} from {}: descriptor says {size} bytes, the registry sent {n}",
                self.r.name()
            )));
        }
        let got = format!("sha256:{}", hex::encode(h.finalize()));
        if got != digest {
            return Err(DlError::Fatal(mismatch(digest, &got, label, &self.r)));
        }
        Ok(())
    }

    /// Copies the blob stream into `w`, hashing and counting; never more than the
    /// descriptor's size, passing new bytes on to `tee` (the streamed index pass).
    /// Returns the byte count and the hash so far.
    async fn receive(
        &self,
        stream: &mut oci_client::client::SizedStream,
        b: &Want<'_>,
        w: &mut impl Write,
        (task, mut tee): (&Task, Option<&mut Tee>),
    ) -> Result<(u64, Sha256), DlError> {
        let (digest, size, label) = (b.digest, b.size, b.label);
        let mut h = Sha256::new();
        let mut n: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Err(self.broken_off(e, b, n, h)),
            };
            n += chunk.len() as u64;
            self.tally(|t| t.downloaded_bytes += chunk.len() as u64);
            if n > size {
                return Err(DlError::Fatal(anyhow!(
                    "{label}: size mismatch for blob {digest} from {}: the registry sent more than the {size} bytes the descriptor says",
                    self.r.name()
                )));
            }
            h.update(&chunk);
            w.write_all(&chunk)
                .map_err(|e| DlError::Fatal(anyhow!("cannot write to the cache: {e}")))?;
            task.advance(chunk.len() as u64);
            if let Some(t) = tee.as_deref_mut() {
                t.offer(n - chunk.len() as u64, &chunk).await;
            }
        }
        Ok((n, h))
    }

    /// A stream error after `n` bytes: a retry when bytes are missing; when all came,
    /// oci-client's own digest check fired at the end, so ours is reported instead.
    fn broken_off(&self, e: impl std::fmt::Display, b: &Want<'_>, n: u64, h: Sha256) -> DlError {
        let (digest, size, label) = (b.digest, b.size, b.label);
        if n == size {
            let got = format!("sha256:{}", hex::encode(h.finalize()));
            if got != digest {
                return DlError::Fatal(mismatch(digest, &got, label, &self.r));
            }
            return DlError::Fatal(anyhow!(
                "{label}: blob {digest} from {}: {e}",
                self.r.name()
            ));
        }
        DlError::Transient(
            format!("download broke off after {n} of {size} bytes"),
            anyhow!(
                "{label}: download of blob {digest} from {} broke off after {n} of {size} bytes: {e}",
                self.r.name()
            ),
        )
    }

    /// The cached blob for `digest`, downloading (and verifying) it when missing.
    pub(crate) async fn fetch_blob(
        &self,
        cache: &Cache,
        digest: &str,
        size: u64,
        label: &str,
    ) -> Result<PathBuf> {
        self.fetch_blob_tee(cache, digest, size, label, None).await
    }

    /// Like `fetch_blob`, also passing the bytes on to `tee` as they arrive (from the
    /// cached file when the cache has the blob).
    pub(crate) async fn fetch_blob_tee(
        &self,
        cache: &Cache,
        digest: &str,
        size: u64,
        label: &str,
        mut tee: Option<Tee>,
    ) -> Result<PathBuf> {
        digest_hex(digest).with_context(|| format!("{label} in the manifest"))?;
        if let Some(p) = cache.blob(digest) {
            if let Some(t) = tee.as_mut() {
                feed_file(&p, t).await?;
            }
            let len = std::fs::metadata(&p)?.len();
            if len != size {
                bail!(
                    "{label}: the manifest from {} says blob {digest} has {size} bytes, but that digest has {len} bytes",
                    self.r.name()
                );
            }
            self.out.log(&format!("{label}: cached ({})", mib(size)));
            self.tally(|t| t.cached_blobs += 1);
            return Ok(p);
        }
        let want = Want {
            digest,
            size,
            label,
        };
        let task = self.out.bytes(&format!("pulling {label}"), size);
        let p = self.download(cache, &want, &task, tee.as_mut()).await?;
        self.tally(|t| t.downloaded_blobs += 1);
        // Remember where it came from, so a later push to this registry can mount it.
        let _ = cache.put_json(
            "registry-source",
            &format!("{}|{digest}", self.r.api_host()),
            &serde_json::json!({"repository": self.r.repo}),
        );
        task.finish(&format!(
            "{label}: pulled {} from {}",
            mib(size),
            self.r.name()
        ));
        Ok(p)
    }

    /// Downloads `b` into the cache, retrying transient failures.
    async fn download(
        &self,
        cache: &Cache,
        b: &Want<'_>,
        task: &Task,
        mut tee: Option<&mut Tee>,
    ) -> Result<PathBuf> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tmp = cache.tmp_file()?;
            match self
                .download_once(b, &mut tmp, task, tee.as_deref_mut())
                .await
            {
                Ok(()) => return cache.insert_blob(tmp, b.digest),
                Err(DlError::Transient(kind, _)) if attempt < ATTEMPTS => {
                    self.out.log(&format!(
                        "{}: {kind} ({}), retrying ({}/{ATTEMPTS})",
                        self.r.host,
                        b.label,
                        attempt + 1
                    ));
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(DlError::Transient(_, e)) => {
                    return Err(e.context(format!("gave up after {attempt} attempts")))
                }
                Err(DlError::Fatal(e)) => return Err(e),
            }
        }
    }
}

/// A blob to download: what the manifest says of it.
struct Want<'a> {
    digest: &'a str,
    size: u64,
    label: &'a str,
}

/// A cached blob passed on to a tee, in pieces.
async fn feed_file(p: &Path, t: &mut Tee) -> Result<()> {
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", p.display()))?;
        if n == 0 {
            return Ok(());
        }
        t.offer(off, &buf[..n]).await;
        off += n as u64;
    }
}

fn mismatch(want: &str, got: &str, label: &str, r: &RegRef) -> anyhow::Error {
    anyhow!(
        "{label}: digest mismatch for blob {want} from repository {}: content hashes to {got}; nothing was cached",
        r.name()
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * 3u64.pow(attempt.saturating_sub(1).min(4)))
}

enum DlError {
    /// What went wrong in a few words (for the retry line), and the full error.
    Transient(String, anyhow::Error),
    Fatal(anyhow::Error),
}

impl DlError {
    fn from_oci(e: OciDistributionError, s: &Session, what: &str) -> DlError {
        match classify(&e) {
            Class::Transient(kind) => {
                DlError::Transient(kind, s.explain(e, what, Op::Pull, ATTEMPTS))
            }
            _ => DlError::Fatal(s.explain(e, what, Op::Pull, 1)),
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime for registry I/O")
}

fn media_type_of(v: &Value) -> String {
    if let Some(m) = v.get("mediaType").and_then(Value::as_str) {
        return m.to_string();
    }
    if v.get("manifests").is_some() {
        MT_OCI_INDEX.into()
    } else {
        MT_OCI_MANIFEST.into()
    }
}

/// The image index at `reference`: its digest and entries (for `--platform all`,
/// `verify`); an error when it is a single image.
pub fn index_of(reference: &str, ro: &RegistryOptions) -> Result<(String, Vec<spec::Descriptor>)> {
    runtime()?.block_on(async {
        let s = Session::open(reference, ro).await?;
        let what = format!("registry://{reference}");
        let (bytes, digest) = s.manifest(&s.r, &what).await?;
        let mt = media_type_of(&spec::parse_json(&bytes, &what, spec::MAX_MANIFEST_BYTES)?);
        if !spec::is_index(&mt) {
            bail!("{what} is a single image, not an image index");
        }
        let idx = spec::parse_index(&bytes, &what, &mt)?;
        Ok((digest, idx.manifests))
    })
}

/// Pulls `HOST[:PORT]/REPO[:TAG|@sha256:...]` into the local cache, choosing
/// `platform` from an index; with `lazy_layers`, layers are fetched on first read.
pub fn pull(
    reference: &str,
    ro: &RegistryOptions,
    platform: Option<&str>,
    lazy_layers: bool,
) -> Result<BaseImage> {
    runtime()?.block_on(pull_async(reference, ro, platform, lazy_layers))
}

async fn pull_async(
    reference: &str,
    ro: &RegistryOptions,
    platform: Option<&str>,
    lazy_layers: bool,
) -> Result<BaseImage> {
    let s = Session::open(reference, ro).await?;
    let cache = Cache::open(ro.cache_dir.as_deref())?;
    let picked = s.platform_manifest(platform).await?;
    if s.r.digest.is_none() {
        s.out.warn(Warning::new(
            WarningCode::MutableTag,
            format!(
                "registry://{reference} is a tag, and tags move: this build is not reproducible; pin it as registry://{}@{}",
                s.r.name(),
                picked.top_digest
            ),
        ));
    }
    let digest = picked.digest;
    let what = format!("manifest {digest} from {}", s.r.name());
    let manifest = spec::parse_manifest(&picked.bytes, &what, &picked.media_type)?;
    let (config, descs) = s.config_and_layers(&cache, &manifest).await?;
    let (layers, deferred) = if lazy_layers {
        (
            Vec::new(),
            Some(deferred_layers(reference, s.r.name(), ro, descs)),
        )
    } else {
        (fetch_layers(&s, &cache, descs, Vec::new()).await?, None)
    };
    Ok(BaseImage {
        name: format!("registry://{reference}"),
        manifest_digest: Some(digest),
        config,
        layers,
        deferred,
        _scratch: None,
    })
}

/// The image manifest a pull reads: the reference's own, or (for an index) the one
/// of the platform asked for, through nested indexes.
struct Picked {
    bytes: Vec<u8>,
    digest: String,
    media_type: String,
    /// The digest of what the reference names (the index, for a multi-platform image).
    top_digest: String,
}

impl Session {
    async fn platform_manifest(&self, platform: Option<&str>) -> Result<Picked> {
        let top_what = match (&self.r.digest, &self.r.tag) {
            (Some(d), _) => format!("manifest {d}"),
            (None, Some(t)) => format!("tag {t}"),
            (None, None) => "tag latest".into(),
        };
        let (mut bytes, mut digest) = self.manifest(&self.r, &top_what).await?;
        let top_digest = digest.clone();
        let what = format!("{top_what} from {}", self.r.name());
        let mut mt = media_type_of(&spec::parse_json(&bytes, &what, spec::MAX_MANIFEST_BYTES)?);
        let mut depth = 0;
        while spec::is_index(&mt) {
            depth += 1;
            if depth > spec::MAX_INDEX_NESTING {
                bail!(
                    "{what}: image indexes nested more than {} deep",
                    spec::MAX_INDEX_NESTING
                );
            }
            let iwhat = format!("image index {digest} from {}", self.r.name());
            let idx = spec::parse_index(&bytes, &iwhat, &mt)?;
            let d = select_platform(&idx.manifests, platform, &iwhat)?;
            let child = self.r.with_digest(&d.digest);
            (bytes, digest) = self
                .manifest(&child, &format!("manifest {}", d.digest))
                .await?;
            if bytes.len() as u64 != d.size {
                bail!(
                    "manifest {} from {}: size mismatch: the index says {} bytes, the registry sent {}",
                    d.digest,
                    self.r.name(),
                    d.size,
                    bytes.len()
                );
            }
            mt = d.media_type.clone();
        }
        Ok(Picked {
            bytes,
            digest,
            media_type: mt,
            top_digest,
        })
    }

    /// Fetches and checks the config of `manifest`; returns it with the layer list.
    async fn config_and_layers(
        &self,
        cache: &Cache,
        manifest: &spec::Manifest,
    ) -> Result<(Value, Vec<LayerDesc>)> {
        let cfg = &manifest.config;
        let config_digest = cfg.digest.clone();
        let config_path = self
            .fetch_blob(cache, &config_digest, cfg.size, "config")
            .await?;
        let config_bytes =
            BlobLocation::whole(&config_path)?.read_all(spec::MAX_CONFIG_BYTES, "config")?;
        let config_what = format!("config {config_digest}");
        let config = spec::parse_config(&config_bytes, &config_what)?;
        check_layer_count(&config, manifest.layers.len(), &config_what)?;
        let descs = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerDesc {
                index: i,
                digest: l.digest.to_string(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: config.diff_ids.get(i).cloned(),
            })
            .collect();
        Ok((config.value, descs))
    }
}

/// The layers of a lazy pull: fetched when the build needs their bytes (a cache hit
/// never does), in a session of their own.
fn deferred_layers(
    reference: &str,
    location: String,
    ro: &RegistryOptions,
    descs: Vec<LayerDesc>,
) -> DeferredLayers {
    let (reference, ro) = (reference.to_string(), ro.clone());
    let count = descs.len();
    let descriptors = descs
        .iter()
        .map(|d| LayerDescriptor {
            digest: d.digest.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
            diff_id: d.diff_id.clone(),
        })
        .collect();
    let fetch = move |tees: Tees| -> Result<Vec<LayerBlob>> {
        runtime()?.block_on(async {
            let s = Session::open(&reference, &ro).await?;
            let cache = Cache::open(ro.cache_dir.as_deref())?;
            fetch_layers(&s, &cache, descs, tees).await
        })
    };
    DeferredLayers {
        count,
        descriptors,
        location: Some(location),
        fetch: Box::new(fetch),
    }
}

/// One layer descriptor of a pulled manifest.
struct LayerDesc {
    index: usize,
    digest: String,
    size: u64,
    media_type: String,
    diff_id: Option<String>,
}

/// Downloads (or finds cached) and verifies every layer, a few at a time.
/// With `tees`, layer `i` is also passed on to `tees[i]` as it arrives.
async fn fetch_layers(
    s: &Session,
    cache: &Cache,
    descs: Vec<LayerDesc>,
    mut tees: Tees,
) -> Result<Vec<LayerBlob>> {
    tees.resize_with(descs.len(), || None);
    let paths: Vec<PathBuf> = futures_util::stream::iter(descs.iter().zip(tees))
        .map(|(d, tee)| {
            let label = format!("layer {} ({})", d.index + 1, short(&d.digest));
            async move {
                s.fetch_blob_tee(cache, &d.digest, d.size, &label, tee)
                    .await
            }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut layers = Vec::new();
    for (d, p) in descs.into_iter().zip(paths) {
        layers.push(LayerBlob::new(
            d.index,
            BlobLocation::whole(&p)?,
            &d.media_type,
            Some(d.digest),
            d.diff_id,
        )?);
    }
    Ok(layers)
}

/// A blob of the manifest being pushed.
pub(crate) struct PushBlob {
    pub(crate) label: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) source: BlobSource,
}

/// Where the bytes of a blob to push are.
pub enum BlobSource {
    /// A staged or cached file.
    File(PathBuf),
    /// Never downloaded: in another repository (see [`RemoteBlob`]).
    Remote(RemoteBlob),
}

fn manifest_blobs(layout: &Path, manifest: &Value, remote: &RemoteBlobs) -> Result<Vec<PushBlob>> {
    let desc = |d: &Value, label: String| -> Result<PushBlob> {
        let digest = d
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{label}: descriptor without digest"))?
            .to_string();
        let size = d
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{label}: descriptor without size"))?;
        let path = layout.join("blobs/sha256").join(digest_hex(&digest)?);
        if let (false, Some(r)) = (path.exists(), remote.get(&digest)) {
            if r.size != size {
                bail!(
                    "{label} ({digest}): descriptor says {size} bytes, the cache says {}",
                    r.size
                );
            }
            return Ok(PushBlob {
                label,
                digest,
                size,
                source: BlobSource::Remote(r),
            });
        }
        let len = std::fs::metadata(&path)
            .with_context(|| format!("{label} ({digest}) is missing from {}", layout.display()))?
            .len();
        if len != size {
            bail!("{label} ({digest}): descriptor says {size} bytes, the staged blob has {len}");
        }
        Ok(PushBlob {
            label,
            digest,
            size,
            source: BlobSource::File(path),
        })
    };
    let mut v = Vec::new();
    if manifest.get("manifests").is_some() {
        // An index: its manifests were pushed first, by digest; no blobs of its own.
        return Ok(v);
    }
    if let Some(layers) = manifest.get("layers").and_then(Value::as_array) {
        for (i, l) in layers.iter().enumerate() {
            let d = l.get("digest").and_then(Value::as_str).unwrap_or("");
            v.push(desc(l, format!("layer {} ({})", i + 1, short(d)))?);
        }
    }
    let config = manifest
        .get("config")
        .ok_or_else(|| anyhow!("manifest without config"))?;
    v.push(desc(config, "config".into())?);
    Ok(v)
}

/// Reads `path` in CHUNK pieces, hashing as it goes; a local mismatch ends the stream
/// with an error (and is recorded in `verdict` for the error message).
fn file_stream(
    path: PathBuf,
    digest: String,
    size: u64,
    bar: Task,
    verdict: Arc<Mutex<Option<String>>>,
) -> Result<
    impl futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static,
> {
    let f =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    struct St {
        f: std::fs::File,
        h: Sha256,
        n: u64,
        done: bool,
    }
    let st = St {
        f,
        h: Sha256::new(),
        n: 0,
        done: false,
    };
    Ok(futures_util::stream::try_unfold(st, move |mut st| {
        let (digest, bar, verdict) = (digest.clone(), bar.clone(), verdict.clone());
        async move {
            if st.done {
                return Ok(None);
            }
            let mut buf = vec![0u8; CHUNK];
            let mut k = 0;
            while k < buf.len() {
                match st.f.read(&mut buf[k..])? {
                    0 => break,
                    m => k += m,
                }
            }
            if k == 0 {
                st.done = true;
                let got = format!("sha256:{}", hex::encode(st.h.clone().finalize()));
                if st.n != size || got != digest {
                    let m = format!(
                        "staged blob {digest} is corrupt: {} bytes hashing to {got} (expected {size})",
                        st.n
                    );
                    *verdict.lock().unwrap() = Some(m.clone());
                    return Err(OciDistributionError::IoError(std::io::Error::other(m)));
                }
                return Ok(None);
            }
            buf.truncate(k);
            st.h.update(&buf);
            st.n += k as u64;
            bar.advance(k as u64);
            Ok(Some((bytes::Bytes::from(buf), st)))
        }
    }))
}

impl Session {
    async fn blob_present(&self, b: &PushBlob) -> Result<bool> {
        let oci = self.oci();
        let what = format!("HEAD {} {}", b.label, b.digest);
        match self
            .retry(&what, Op::Push, || self.client.blob_exists(&oci, &b.digest))
            .await
        {
            Ok(p) => Ok(p),
            // Some registries refuse HEAD before the first push; the upload will tell.
            Err(e)
                if e.downcast_ref::<OciDistributionError>()
                    .map(classify)
                    .is_some_and(|c| matches!(c, Class::Status(401 | 403))) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn try_mount(&self, cache: Option<&Cache>, b: &PushBlob) -> bool {
        let Some(cache) = cache else { return false };
        let Some(src) = cache
            .get_json(
                "registry-source",
                &format!("{}|{}", self.r.api_host(), b.digest),
            )
            .and_then(|v| v.get("repository")?.as_str().map(str::to_string))
        else {
            return false;
        };
        self.mount_from(&src, b).await
    }

    /// Pushes one blob: skipped when present, mounted when another repository of this
    /// registry has it, else uploaded from its file or streamed from its registry.
    pub(crate) async fn push_blob(
        &self,
        cache: Option<&Cache>,
        b: &PushBlob,
        opts: &RegistryOptions,
    ) -> Result<Sent> {
        if self.blob_present(b).await? {
            self.out.log(&format!(
                "{}: already present in {} ({})",
                b.label,
                self.r.name(),
                mib(b.size)
            ));
            self.tally(|t| t.skipped_blobs += 1);
            return Ok(Sent::Present);
        }
        let path = match &b.source {
            BlobSource::File(path) => path,
            BlobSource::Remote(r) => {
                let (host, repo) = RegRef::parse(&r.location)
                    .map(|x| (x.api_host().to_string(), x.repo))
                    .unwrap_or_default();
                if host == self.r.api_host() && self.mount_from(&repo, b).await {
                    self.tally(|t| t.mounted_blobs += 1);
                    return Ok(Sent::Mounted);
                }
                self.copy_from(r, b, opts).await?;
                return Ok(Sent::Uploaded);
            }
        };
        if self.try_mount(cache, b).await {
            self.tally(|t| t.mounted_blobs += 1);
            return Ok(Sent::Mounted);
        }
        let task = self.out.bytes(&format!("uploading {}", b.label), b.size);
        self.upload(path, b, &task).await?;
        self.tally(|t| {
            t.uploaded_bytes += b.size;
            t.uploaded_blobs += 1
        });
        task.finish(&format!(
            "{}: uploaded {} to {}",
            b.label,
            mib(b.size),
            self.r.name()
        ));
        // A later push of this blob to another repository here (the image after its
        // `--cache-to` entry, or the reverse) mounts it instead of uploading it again.
        self.remember_source(cache, &b.digest);
        Ok(Sent::Uploaded)
    }

    /// Streams the file at `path` as blob `b`, checking it as it is read; retries
    /// transient failures.
    async fn upload(&self, path: &Path, b: &PushBlob, task: &Task) -> Result<()> {
        let oci = self.oci();
        let what = format!("upload of {} {}", b.label, b.digest);
        let mut attempt = 0;
        loop {
            attempt += 1;
            task.restart();
            let verdict = Arc::new(Mutex::new(None));
            let stream = file_stream(
                path.to_path_buf(),
                b.digest.clone(),
                b.size,
                task.clone(),
                verdict.clone(),
            )?;
            let r = self
                .client
                .push_blob_stream(&oci, stream, &b.digest, Some(b.size))
                .await;
            if let Some(m) = verdict.lock().unwrap_or_else(|p| p.into_inner()).take() {
                bail!("{}: {m}", b.label);
            }
            match r {
                Ok(_) => return Ok(()),
                Err(e) => match classify(&e) {
                    Class::Transient(kind) if attempt < ATTEMPTS => {
                        self.out.log(&format!(
                            "{}: {kind} ({what}), retrying ({}/{ATTEMPTS})",
                            self.r.host,
                            attempt + 1
                        ));
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    _ => return Err(self.explain(e, &what, Op::Push, attempt)),
                },
            }
        }
    }

    fn remember_source(&self, cache: Option<&Cache>, digest: &str) {
        if let Some(c) = cache {
            let _ = c.put_json(
                "registry-source",
                &format!("{}|{digest}", self.r.api_host()),
                &serde_json::json!({"repository": self.r.repo}),
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Uploaded,
    Present,
    Mounted,
}

/// Whether a registry error is a 404 (unknown manifest, blob or repository).
pub(crate) fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<OciDistributionError>())
        .any(|o| classify(o) == Class::Status(404))
}

impl Session {
    /// Pushes `manifest` (an OCI image manifest, exact bytes) under `tag` of this repository.
    pub(crate) async fn push_manifest_bytes(&self, tag: &str, manifest: &[u8]) -> Result<()> {
        let target = oci_client::Reference::with_tag(
            self.r.api_host().to_string(),
            self.r.repo.clone(),
            tag.to_string(),
        );
        let what = format!("manifest {}", sha256_digest(manifest));
        self.retry(&what, Op::Push, || {
            let ct = MT_OCI_MANIFEST.parse().expect("static media type");
            self.client
                .push_manifest_raw(&target, manifest.to_vec(), ct)
        })
        .await?;
        self.tally(|t| t.uploaded_bytes += manifest.len() as u64);
        Ok(())
    }
}

/// Pushes the OCI layout in `layout` (blobs + the manifest `manifest_digest`) to
/// `reference`; returns the manifest digest the registry reports (else ours).
/// Blobs of the manifest missing from `layout` must be in `remote`.
pub fn push(
    layout: &Path,
    remote: &RemoteBlobs,
    reference: &str,
    manifest_digest: &str,
    manifest: &[u8],
    opts: &RegistryOptions,
) -> Result<String> {
    runtime()?.block_on(push_async(
        layout,
        remote,
        reference,
        manifest_digest,
        manifest,
        opts,
    ))
}

async fn push_async(
    layout: &Path,
    remote: &RemoteBlobs,
    reference: &str,
    manifest_digest: &str,
    manifest: &[u8],
    opts: &RegistryOptions,
) -> Result<String> {
    let got = sha256_digest(manifest);
    if got != manifest_digest {
        bail!("internal error: the manifest to push hashes to {got}, not {manifest_digest}");
    }
    let s = Session::open(reference, opts).await?;
    if let Some(d) = &s.r.digest {
        if d != manifest_digest {
            bail!("registry://{reference}: the reference pins {d}, but the built manifest is {manifest_digest}");
        }
    }
    let target = match (&s.r.tag, &s.r.digest) {
        (Some(t), Some(_)) => {
            oci_client::Reference::with_tag(s.r.api_host().to_string(), s.r.repo.clone(), t.clone())
        }
        _ => s.oci(),
    };
    let v: Value = serde_json::from_slice(manifest).context("the manifest to push is not JSON")?;
    let blobs = manifest_blobs(layout, &v, remote)?;
    // The cache only serves cross-repository mounts here; push works without it.
    let cache = Cache::open(opts.cache_dir.as_deref()).ok();
    let sent: Vec<Sent> = futures_util::stream::iter(blobs.iter())
        .map(|b| {
            let (s, cache) = (&s, cache.as_ref());
            async move { s.push_blob(cache, b, opts).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mt = media_type_of(&v);
    if mt.is_empty() || !mt.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("invalid manifest media type '{mt}'");
    }
    let what = format!("manifest {manifest_digest}");
    let location = s
        .retry(&what, Op::Push, || {
            // An http::HeaderValue, inferred (oci-client does not re-export the type);
            // `mt` is checked above, so the fallback is never taken.
            let ct = match mt.parse() {
                Ok(v) => v,
                Err(_) => MT_OCI_MANIFEST.parse().expect("static media type"),
            };
            s.client.push_manifest_raw(&target, manifest.to_vec(), ct)
        })
        .await?;
    s.tally(|t| t.uploaded_bytes += manifest.len() as u64);
    // distribution answers with Location: /v2/REPO/manifests/sha256:<digest>.
    let reported = location
        .rsplit('/')
        .next()
        .and_then(|last| last.split(['?', '#']).next())
        .filter(|d| digest_hex(d).is_ok())
        .map(str::to_string);
    let count = |k: Sent| sent.iter().filter(|x| **x == k).count();
    s.out.log(&format!(
        "pushed registry://{} ({manifest_digest}): {} blob(s) uploaded, {} already present, {} mounted",
        match &s.r.tag {
            Some(t) => format!("{}:{t}", s.r.name()),
            None => s.r.to_string(),
        },
        count(Sent::Uploaded),
        count(Sent::Present),
        count(Sent::Mounted),
    ));
    Ok(reported.unwrap_or_else(|| manifest_digest.to_string()))
}

/// One repository's manifests and small blobs, for signatures and attestations:
/// pushes (blobs from a staged layout, manifests by digest or under a tag) and reads
/// (by tag or digest, for `verify --key`).
pub struct RepoClient {
    rt: tokio::runtime::Runtime,
    s: Session,
    opts: RegistryOptions,
}

impl RepoClient {
    /// `reference`: `HOST/REPO[:TAG|@DIGEST]` (only the repository is used).
    pub fn open(reference: &str, opts: &RegistryOptions) -> Result<RepoClient> {
        let rt = runtime()?;
        let s = rt.block_on(Session::open(reference, opts))?;
        Ok(RepoClient {
            rt,
            s,
            opts: opts.clone(),
        })
    }

    fn target(&self, tag_or_digest: &str) -> oci_client::Reference {
        let (reg, repo) = (self.s.r.api_host().to_string(), self.s.r.repo.clone());
        if tag_or_digest.starts_with("sha256:") {
            oci_client::Reference::with_digest(reg, repo, tag_or_digest.to_string())
        } else {
            oci_client::Reference::with_tag(reg, repo, tag_or_digest.to_string())
        }
    }

    /// Pushes the blobs a manifest names (from `layout`; none for an index), then the
    /// manifest itself under `tag`, or by its digest.
    pub fn push(&self, layout: &Path, manifest: &[u8], tag: Option<&str>) -> Result<()> {
        let v: Value =
            serde_json::from_slice(manifest).context("the manifest to push is not JSON")?;
        let mt = media_type_of(&v);
        if mt.is_empty() || !mt.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("invalid manifest media type '{mt}'");
        }
        let blobs = if v.get("config").is_some() {
            manifest_blobs(layout, &v, &RemoteBlobs::default())?
        } else {
            Vec::new()
        };
        let digest = sha256_digest(manifest);
        let target = self.target(tag.unwrap_or(&digest));
        let s = &self.s;
        self.rt.block_on(async {
            for b in &blobs {
                s.push_blob(None, b, &self.opts).await?;
            }
            s.retry(&format!("manifest {digest}"), Op::Push, || {
                let ct = match mt.parse() {
                    Ok(v) => v,
                    Err(_) => MT_OCI_MANIFEST.parse().expect("static media type"),
                };
                s.client.push_manifest_raw(&target, manifest.to_vec(), ct)
            })
            .await
        })?;
        self.s.tally(|t| t.uploaded_bytes += manifest.len() as u64);
        Ok(())
    }

    /// The manifest or index under `tag` (or a `sha256:` digest, checked), or None
    /// when the registry has no such tag.
    pub fn get(&self, tag: &str) -> Result<Option<Vec<u8>>> {
        let mut r = self.s.r.clone();
        if tag.starts_with("sha256:") {
            (r.tag, r.digest) = (None, Some(tag.to_string()));
        } else {
            (r.tag, r.digest) = (Some(tag.to_string()), None);
        }
        match self.rt.block_on(self.s.manifest(&r, &format!("tag {tag}"))) {
            Ok((bytes, _)) => Ok(Some(bytes)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn repository(&self) -> String {
        self.s.r.name()
    }

    /// A small blob (an attestation, a signature payload), at most `limit` bytes as
    /// its descriptor says; the caller checks its digest.
    pub fn blob(&self, digest: &str, size: u64, limit: u64) -> Result<Vec<u8>> {
        if size > limit {
            bail!("blob {digest} is {size} bytes, more than {limit} allowed");
        }
        let oci = self.s.oci();
        let (client, oci) = (&self.s.client, &oci);
        self.rt.block_on(
            self.s
                .retry(&format!("blob {digest}"), Op::Pull, || async move {
                    let mut buf: Vec<u8> = Vec::with_capacity(size as usize);
                    client.pull_blob(oci, digest, &mut buf).await.map(|()| buf)
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        use OciDistributionError as E;
        assert_eq!(
            classify(&E::UnauthorizedError { url: "u".into() }),
            Class::Status(401)
        );
        assert_eq!(
            classify(&E::ServerError {
                code: 503,
                url: "u".into(),
                message: String::new()
            }),
            Class::Transient("HTTP 503".into())
        );
        assert_eq!(
            classify(&E::ServerError {
                code: 404,
                url: "u".into(),
                message: String::new()
            }),
            Class::Status(404)
        );
        let env: oci_client::errors::OciEnvelope =
            serde_json::from_str(r#"{"errors":[{"code":"DENIED","message":"no"}]}"#).unwrap();
        assert_eq!(
            classify(&E::RegistryError {
                envelope: env,
                url: "u".into()
            }),
            Class::Status(403)
        );
        let env: oci_client::errors::OciEnvelope =
            serde_json::from_str(r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#).unwrap();
        assert_eq!(
            classify(&E::RegistryError {
                envelope: env,
                url: "u".into()
            }),
            Class::Status(404)
        );
        assert_eq!(classify(&E::PushNoDataError), Class::Other);
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_millis(1500));
        assert!(backoff(100) <= Duration::from_secs(41));
    }

    #[test]
    fn push_blob_list_checks_layout() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        let put = |b: &[u8]| {
            let dg = sha256_digest(b);
            std::fs::write(
                d.path().join("blobs/sha256").join(digest_hex(&dg).unwrap()),
                b,
            )
            .unwrap();
            dg
        };
        let (c, l) = (put(b"{}"), put(b"layer"));
        let m = serde_json::json!({"schemaVersion": 2, "config": {"digest": c, "size": 2},
            "layers": [{"digest": l, "size": 5}]});
        let v = manifest_blobs(d.path(), &m, &RemoteBlobs::default()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].label, "config");
        assert!(v[0].label.starts_with("layer 1 (sha256:"));
        let bad = serde_json::json!({"config": {"digest": c, "size": 3}, "layers": []});
        assert!(manifest_blobs(d.path(), &bad, &RemoteBlobs::default()).is_err());
    }

    /// A blob missing from the layout is pushed from the registry that holds it, and only
    /// when that registry's size agrees with the descriptor; missing and unknown: an error.
    #[test]
    fn push_blob_list_takes_remote_blobs_only_where_the_layout_has_none() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        let c = sha256_digest(b"{}");
        std::fs::write(
            d.path().join("blobs/sha256").join(digest_hex(&c).unwrap()),
            b"{}",
        )
        .unwrap();
        let l = sha256_digest(b"remote layer");
        let m = serde_json::json!({"schemaVersion": 2, "config": {"digest": c, "size": 2},
            "layers": [{"digest": l, "size": 12}]});
        let none = RemoteBlobs::default();
        let err = manifest_blobs(d.path(), &m, &none).err().unwrap();
        assert!(format!("{err:#}").contains("is missing from"), "{err:#}");
        let remote = RemoteBlobs::default();
        let at = RemoteBlob {
            location: "127.0.0.1:5000/cache".into(),
            size: 12,
        };
        remote.add(&l, at.clone());
        let v = manifest_blobs(d.path(), &m, &remote).unwrap();
        assert!(matches!(&v[0].source, BlobSource::Remote(r) if *r == at));
        assert!(matches!(&v[1].source, BlobSource::File(_)));
        // A staged copy wins over the registry (it was verified here).
        remote.add(&c, at.clone());
        let v = manifest_blobs(d.path(), &m, &remote).unwrap();
        assert!(matches!(&v[1].source, BlobSource::File(_)));
        let wrong = RemoteBlobs::default();
        wrong.add(&l, RemoteBlob { size: 13, ..at });
        let err = manifest_blobs(d.path(), &m, &wrong).err().unwrap();
        assert!(format!("{err:#}").contains("the cache says 13"), "{err:#}");
    }

    #[test]
    fn file_stream_detects_local_corruption() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b");
        std::fs::write(&p, vec![7u8; CHUNK + 10]).unwrap();
        let good = sha256_digest(&vec![7u8; CHUNK + 10]);
        let rt = runtime().unwrap();
        let verdict = Arc::new(Mutex::new(None));
        let s = file_stream(
            p.clone(),
            good.clone(),
            (CHUNK + 10) as u64,
            Task::hidden(),
            verdict.clone(),
        )
        .unwrap();
        let chunks: Vec<bytes::Bytes> = rt.block_on(s.try_collect()).unwrap();
        assert_eq!(chunks.len(), 2);
        assert!(verdict.lock().unwrap().is_none());
        let s = file_stream(
            p,
            sha256_digest(b"other"),
            (CHUNK + 10) as u64,
            Task::hidden(),
            verdict.clone(),
        )
        .unwrap();
        assert!(rt.block_on(s.try_collect::<Vec<_>>()).is_err());
        assert!(verdict.lock().unwrap().is_some());
    }

    /// A base pulled by tag warns (`mutable-tag`, naming the digest to pin); pulled by
    /// that digest, it does not. Each blob pulled is a task that reached its size.
    #[test]
    fn pull_by_tag_warns_and_by_digest_does_not() {
        use crate::testutil::{accounts, LayoutBuilder, TinyRegistry};
        let d = tempfile::tempdir().unwrap();
        let layer = accounts()
            .file("etc/big", &vec![1u8; 300_000], 0o644)
            .build();
        let md = LayoutBuilder::new()
            .layer(&layer)
            .write(&d.path().join("layout"));
        let reg = TinyRegistry::serve(&d.path().join("layout"));
        let pull_with = |reference: &str| {
            let (p, events) = Progress::collecting();
            let ro = RegistryOptions {
                cache_dir: Some(d.path().join("cache")),
                progress: p,
                ..Default::default()
            };
            let img = pull(reference, &ro, None, false).unwrap();
            (img, events)
        };
        let (img, events) = pull_with(&format!("{}/base:latest", reg.addr));
        assert_eq!(img.manifest_digest.as_deref(), Some(md.as_str()));
        assert_eq!(events.warning_codes(), vec![WarningCode::MutableTag]);
        let pinned = format!("registry://{}/base@{md}", reg.addr);
        let w = events
            .events()
            .into_iter()
            .find_map(|e| match e {
                crate::progress::Event::Warning(w) => Some(w.message),
                _ => None,
            })
            .unwrap();
        assert!(w.contains(&pinned), "{w}");
        let tasks = events.tasks();
        assert_eq!(tasks.len(), 2, "config and one layer: {tasks:?}");
        for (label, done, total) in &tasks {
            assert!(label.starts_with("pulling "), "{label}");
            assert_eq!(
                Some(*done),
                *total,
                "{label}: progress did not reach the size"
            );
        }
        let (img, events) = pull_with(&format!("{}/base@{md}", reg.addr));
        assert_eq!(img.manifest_digest.as_deref(), Some(md.as_str()));
        assert_eq!(events.warning_codes(), vec![]);
        assert!(events.tasks().is_empty(), "cached blobs were pulled again");
    }

    #[test]
    fn pull_of_bad_reference_fails_without_network() {
        let e = pull("no-slash", &RegistryOptions::default(), None, false)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("HOST[:PORT]/REPO"), "{e:#}");
    }
}
