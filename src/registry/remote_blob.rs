//! Blobs a build never downloads (issue 17): the layers of a registry cache hit stay in
//! the cache repository and reach the output registry by a skip (the target has them),
//! a cross-repository mount (same registry), or a registry-to-registry stream (another
//! registry): never a full local copy. Only a registry output can take them; every
//! other output needs the bytes and fetches them as before.
use super::{classify, mib, Class, PushBlob, RegistryOptions, Session, ATTEMPTS};
use anyhow::{anyhow, Result};
use futures_util::StreamExt;
use oci_client::errors::OciDistributionError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where a blob the build did not download lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBlob {
    /// `HOST[:PORT]/REPO`, as a `registry://` location without tag.
    pub location: String,
    pub size: u64,
}

/// Remote blobs of one build, by digest. Shared by the jobs that stage them.
#[derive(Debug, Default)]
pub struct RemoteBlobs(Mutex<BTreeMap<String, RemoteBlob>>);

impl RemoteBlobs {
    pub fn add(&self, digest: &str, blob: RemoteBlob) {
        self.lock().insert(digest.to_string(), blob);
    }
    pub fn get(&self, digest: &str) -> Option<RemoteBlob> {
        self.lock().get(digest).cloned()
    }
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
    pub fn digests(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RemoteBlob>> {
        // A panic elsewhere cannot leave the map half-written: inserts are single calls.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Session {
    /// Mounts `b` from `repo` of this registry; false when the registry declines.
    pub(crate) async fn mount_from(&self, repo: &str, b: &PushBlob) -> bool {
        if repo == self.r.repo {
            return false;
        }
        let from = oci_client::Reference::with_digest(
            self.r.api_host().to_string(),
            repo.to_string(),
            b.digest.clone(),
        );
        match self.client.mount_blob(&self.oci(), &from, &b.digest).await {
            Ok(()) => {
                self.out.log(&format!("{}: mounted from {repo}", b.label));
                true
            }
            Err(_) => false,
        }
    }

    /// Streams `b` from `src` into this repository chunk by chunk (nothing is kept on
    /// disk). Both registries check the digest: ours as the bytes pass, the target's on
    /// the final PUT.
    pub(crate) async fn copy_from(
        &self,
        src: &RemoteBlob,
        b: &PushBlob,
        opts: &RegistryOptions,
    ) -> Result<()> {
        let from = Session::open(&src.location, opts).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let verdict = Arc::new(Mutex::new(None::<String>));
            let r = self.copy_once(&from, b, verdict.clone()).await;
            if let Some(m) = verdict.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(anyhow!("{}: {m}", b.label));
            }
            match r {
                Ok(()) => break,
                Err(e) => match classify(&e) {
                    Class::Transient(kind) if attempt < ATTEMPTS => {
                        self.out.log(&format!(
                            "{}: {kind} (copy of {} from {}), retrying ({}/{ATTEMPTS})",
                            self.r.host,
                            b.digest,
                            src.location,
                            attempt + 1
                        ));
                        tokio::time::sleep(super::backoff(attempt)).await;
                    }
                    _ => {
                        return Err(anyhow!(
                            "copy of {} {} from registry://{} to {}: {e}",
                            b.label,
                            b.digest,
                            src.location,
                            self.r.name()
                        ))
                    }
                },
            }
        }
        self.tally(|t| {
            t.uploaded_bytes += b.size;
            t.uploaded_blobs += 1
        });
        self.out.log(&format!(
            "{}: streamed {} from registry://{} to {}",
            b.label,
            mib(b.size),
            src.location,
            self.r.name()
        ));
        Ok(())
    }

    async fn copy_once(
        &self,
        from: &Session,
        b: &PushBlob,
        verdict: Arc<Mutex<Option<String>>>,
    ) -> Result<(), OciDistributionError> {
        let stream = from
            .client
            .pull_blob_stream(&from.oci(), b.digest.as_str())
            .await?;
        let (digest, size) = (b.digest.clone(), b.size);
        let transfers = from.transfers.clone();
        let host = from.r.host.clone();
        let mut h = Sha256::new();
        let mut n = 0u64;
        let checked = stream.stream.map(move |chunk| {
            let chunk =
                chunk.map_err(|e| OciDistributionError::IoError(std::io::Error::other(e)))?;
            n += chunk.len() as u64;
            transfers.add(&host, |t| t.downloaded_bytes += chunk.len() as u64);
            h.update(&chunk);
            let bad = |m: String| {
                *verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
                OciDistributionError::IoError(std::io::Error::other(m))
            };
            if n > size {
                return Err(bad(format!(
                    "the source sent more than the {size} bytes of {digest}"
                )));
            }
            if n == size {
                let got = format!("sha256:{}", hex::encode(h.clone().finalize()));
                if got != digest {
                    return Err(bad(format!(
                        "the source sent bytes hashing to {got}, not {digest}"
                    )));
                }
            }
            Ok(chunk)
        });
        self.client
            .push_blob_stream(&self.oci(), checked, &b.digest, Some(b.size))
            .await?;
        Ok(())
    }
}
