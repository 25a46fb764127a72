//! `verify --key`: the image's cosign signature and attestations, checked with a
//! public key, read from an `oci:` directory, an `oci-archive:` or a registry. Each check is one
//! line of the report; the image passes only if every one of them does and it has
//! a signature.
use super::provenance::{record_of, Statement, SLSA_PROVENANCE};
use super::{cosign, dsse, MT_DSSE, MT_IN_TOTO};
use crate::digest::{digest_hex, sha256_digest};
use crate::imageref::ImageRef;
use crate::oci::{Descriptor, Digest, Index, Manifest};
use crate::record::BuildRecord;
use crate::registry::{RegistryOptions, RepoClient};
use crate::source::oci::{ArchiveStore, BlobStore};
use anyhow::{anyhow, bail, Context, Result};
use p256::ecdsa::VerifyingKey;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// JSON documents of a layout are small; a bigger one is refused.
const LIMIT: u64 = 16 << 20;

/// Where the image's referrers are read from, digest-checked: a layout (directory
/// or archive) or a registry repository (referrers tag schema).
enum Layout {
    Dir(PathBuf),
    Archive(ArchiveStore),
    Registry(Box<RepoClient>),
}

impl Layout {
    fn open(r: &ImageRef, opts: &RegistryOptions) -> Result<Layout> {
        match r {
            ImageRef::OciDir { path, .. } => Ok(Layout::Dir(path.clone())),
            ImageRef::OciArchive { path, .. } => Ok(Layout::Archive(ArchiveStore::index(path)?)),
            ImageRef::Registry(reference) => Ok(Layout::Registry(Box::new(RepoClient::open(
                reference, opts,
            )?))),
            _ => bail!("verify --key reads oci:DIR, oci-archive:PATH or registry:// images (copy others there first, e.g. with skopeo)"),
        }
    }
    fn read(&self, rel: &str, what: &str) -> Result<Vec<u8>> {
        match self {
            Layout::Dir(p) => {
                let f = p.join(rel);
                let len = std::fs::metadata(&f)
                    .with_context(|| format!("{what}: {} is missing", f.display()))?
                    .len();
                if len > LIMIT {
                    bail!("{what}: {} is {len} bytes, more than {LIMIT}", f.display());
                }
                std::fs::read(&f).with_context(|| format!("{what}: cannot read {}", f.display()))
            }
            Layout::Archive(a) => a.locate(rel)?.read_all(LIMIT, what),
            Layout::Registry(_) => bail!("{what}: not a registry path"),
        }
    }
    /// The candidate referrers: index.json entries with an `artifactType` (layouts),
    /// the referrers tag schema index `sha256-<hex>` (registries; none when absent).
    fn referrers(&self, image: &Digest) -> Result<Vec<Descriptor>> {
        let bytes = match self {
            Layout::Registry(w) => match w.get(&super::store::referrers_tag(image))? {
                Some(b) => b,
                None => return Ok(Vec::new()),
            },
            _ => self.read("index.json", "index.json")?,
        };
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| anyhow!("referrers index: {e}"))?;
        Ok(index
            .manifests
            .into_iter()
            .filter(|d| d.artifact_type.is_some())
            .collect())
    }
    /// A manifest (registries serve these apart from blobs).
    fn manifest(&self, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
        match self {
            Layout::Registry(w) => w
                .get(d.digest.as_str())?
                .ok_or_else(|| anyhow!("{what}: the registry has no manifest {}", d.digest)),
            _ => self.blob(d, what),
        }
    }
    /// A blob, checked against its digest (a changed blob is named as such).
    fn blob(&self, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
        let bytes = match self {
            Layout::Registry(w) => w.blob(d.digest.as_str(), d.size, LIMIT)?,
            _ => self.read(
                &format!("blobs/sha256/{}", digest_hex(d.digest.as_str())?),
                what,
            )?,
        };
        let got = sha256_digest(&bytes);
        if got != d.digest.as_str() {
            bail!(
                "{what}: blob {} was tampered with (its content hashes to {got})",
                d.digest
            );
        }
        Ok(bytes)
    }
}

/// The image a registry reference names (the platform's manifest when the tag is an
/// index, as `--attest-store index` writes) and its build record.
pub fn registry_image(
    reference: &str,
    opts: &RegistryOptions,
) -> Result<(Digest, Option<BuildRecord>)> {
    let r = crate::registry::reference::RegRef::parse(reference)?;
    let w = RepoClient::open(reference, opts)?;
    let at = r
        .digest
        .clone()
        .or(r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let mut bytes = w
        .get(&at)?
        .ok_or_else(|| anyhow!("registry://{reference}: no such image"))?;
    if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
        let images: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| {
                d.extra
                    .get("platform")
                    .and_then(|p| p.get("os"))
                    .and_then(|o| o.as_str())
                    != Some("unknown")
            })
            .collect();
        let [one] = images.as_slice() else {
            bail!(
                "registry://{reference} is an index of {} images; name one by digest",
                images.len()
            );
        };
        bytes = w
            .get(one.digest.as_str())?
            .ok_or_else(|| anyhow!("registry://{reference}: no manifest {}", one.digest))?;
    }
    let m = Manifest::from_slice(&bytes, &format!("registry://{reference}"))?;
    let record = m
        .annotations
        .get(crate::record::RECORD_ANNOTATION)
        .map(|s| BuildRecord::parse(s))
        .transpose()?;
    Ok((Digest::of(&bytes), record))
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct AttestReport {
    pub image_digest: String,
    pub checks: Vec<Check>,
    pub verified: bool,
}

impl AttestReport {
    pub fn render(&self) -> String {
        let mut s = format!("image:   {}\n", self.image_digest);
        for c in &self.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            s.push_str(&format!("{mark} {}: {}\n", c.what, c.detail));
        }
        s.push_str(if self.verified {
            "verified: signature and attestations\n"
        } else {
            "NOT verified: see FAIL above\n"
        });
        s
    }
}

/// Checks every signature and attestation of `image` (digest `digest`, build record
/// `record` from its manifest annotation) with `key`.
pub fn verify(
    image: &str,
    digest: &Digest,
    record: Option<&BuildRecord>,
    key: &VerifyingKey,
    opts: &RegistryOptions,
) -> Result<AttestReport> {
    let r = ImageRef::parse(image)?;
    let layout = Layout::open(&r, opts)?;
    let mut checks = Vec::new();
    let mut signatures = 0;
    for d in &layout.referrers(digest)? {
        let what = format!("referrer {}", d.digest);
        let bytes = match layout.manifest(d, &what) {
            Ok(b) => b,
            Err(e) => {
                checks.push(fail(&what, e));
                continue;
            }
        };
        let m = match Manifest::from_slice(&bytes, &what) {
            Ok(m) => m,
            Err(e) => {
                checks.push(fail(&what, e));
                continue;
            }
        };
        if m.subject.as_ref().map(|s| &s.digest) != Some(digest) {
            continue; // Another image's referrer.
        }
        let at = m
            .artifact_type
            .as_ref()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default();
        let res = match at.as_str() {
            cosign::ARTIFACT_SIG => {
                signatures += 1;
                check_signature(&layout, &m, key, digest)
                    .map(|()| ("cosign signature".to_string(), "valid".to_string()))
            }
            MT_DSSE => check_attestation(&layout, &m, key, digest, record),
            MT_IN_TOTO => Err(anyhow!(
                "unsigned in-toto attestation (built without --sign-key)"
            )),
            _ => continue, // An SBOM file or other artifact: nothing to verify.
        };
        checks.push(match res {
            Ok((what, detail)) => Check {
                what,
                ok: true,
                detail,
            },
            Err(e) => fail(&format!("{what} ({at})"), e),
        });
    }
    if signatures == 0 {
        checks.push(Check {
            what: "cosign signature".into(),
            ok: false,
            detail: format!("none found in {image} for {digest}"),
        });
    }
    let verified = checks.iter().all(|c| c.ok);
    Ok(AttestReport {
        image_digest: digest.to_string(),
        checks,
        verified,
    })
}

fn fail(what: &str, e: anyhow::Error) -> Check {
    Check {
        what: what.to_string(),
        ok: false,
        detail: format!("{e:#}"),
    }
}

fn only_layer<'a>(m: &'a Manifest, mt: &str) -> Result<&'a crate::oci::Descriptor> {
    match m.layers.as_slice() {
        [l] if l.media_type.as_str() == mt => Ok(l),
        _ => bail!("expected exactly one {mt} layer"),
    }
}

fn check_signature(
    layout: &Layout,
    m: &Manifest,
    key: &VerifyingKey,
    image: &Digest,
) -> Result<()> {
    let l = only_layer(m, cosign::MT_SIMPLE_SIGNING)?;
    let payload = layout.blob(l, "signature payload")?;
    let sig = l
        .annotations
        .get(cosign::SIGNATURE_ANNOTATION)
        .ok_or_else(|| anyhow!("no {} annotation", cosign::SIGNATURE_ANNOTATION))?;
    cosign::verify(&payload, sig, key, image)
}

/// One DSSE attestation: signature, subject, and for provenance the build record.
fn check_attestation(
    layout: &Layout,
    m: &Manifest,
    key: &VerifyingKey,
    image: &Digest,
    record: Option<&BuildRecord>,
) -> Result<(String, String)> {
    let l = only_layer(m, MT_DSSE)?;
    let env: dsse::Envelope = serde_json::from_slice(&layout.blob(l, "DSSE envelope")?)
        .map_err(|e| anyhow!("not a DSSE envelope ({e})"))?;
    if env.payload_type != dsse::IN_TOTO_PAYLOAD {
        bail!(
            "DSSE payloadType is {}, not {}",
            env.payload_type,
            dsse::IN_TOTO_PAYLOAD
        );
    }
    let payload = env.verify(key)?;
    let st: Statement = serde_json::from_slice(&payload)
        .map_err(|e| anyhow!("the DSSE payload is not an in-toto Statement ({e})"))?;
    let what = format!("attestation {}", st.predicate_type);
    if !st.names(image) {
        bail!("{what}: its subject is not the image {image} (mismatched subject)");
    }
    if st.predicate_type != SLSA_PROVENANCE {
        return Ok((what, "signature valid, subject is the image".into()));
    }
    let in_prov = record_of(&st.predicate)?;
    match record {
        Some(r) if *r == in_prov => Ok((
            what,
            "signature valid, subject is the image, dependencies = build record".into(),
        )),
        Some(r) => {
            let diffs = crate::record::input_mismatches(r, &in_prov);
            bail!(
                "{what}: the provenance disagrees with the image's build record: {}",
                diffs.join("; ")
            )
        }
        None => bail!("{what}: the image has no build record to compare with"),
    }
}

/// The argument of `--key`, read.
pub fn key(path: &Path) -> Result<VerifyingKey> {
    super::keys::load_public(path)
}
