//! Where attachments go so that verifiers find them:
//! - an OCI layout: blobs, and each artifact manifest listed in index.json
//!   (untagged; its `subject` names the image, as the image-spec's referrers
//!   guidance for layouts has it);
//! - a registry: each manifest pushed by digest, the referrers tag schema
//!   (`sha256-<hex>`: an index of the referrers, for registries without the
//!   referrers API such as distribution/distribution), and cosign's
//!   `sha256-<hex>.sig` tag holding the signature manifest.
use super::{Attachment, Attachments, Kind};
use crate::digest::digest_hex;
use crate::oci::{Digest, Index, MediaType};
use crate::registry::{RegistryOptions, RepoClient};
use anyhow::{Context, Result};
use std::path::Path;

/// Writes blobs and manifests (and the image index, if any) into the (staged)
/// layout `dir` without listing them.
pub fn put_blobs(dir: &Path, atts: &Attachments) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    let index = atts.image_index.iter().map(|(_, b)| b);
    for b in atts
        .all()
        .flat_map(|a| a.blobs.iter().chain(std::iter::once(&a.bytes)))
        .chain(index)
    {
        let d = Digest::of(b);
        let p = blobs.join(digest_hex(d.as_str())?);
        if !p.exists() {
            std::fs::write(&p, b).with_context(|| format!("cannot write {}", p.display()))?;
        }
    }
    Ok(())
}

/// Stages the attachments in the layout `dir` and lists them in its index.json; with
/// an image index, it takes the place (and tag) of `image` there.
pub fn into_layout(dir: &Path, image: &Digest, atts: &Attachments) -> Result<()> {
    if atts.is_empty() {
        return Ok(());
    }
    put_blobs(dir, atts)?;
    let index_path = dir.join("index.json");
    let bytes = std::fs::read(&index_path)
        .with_context(|| format!("cannot read {}", index_path.display()))?;
    let mut index: Index = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not an image index", index_path.display()))?;
    if let Some((_, ib)) = &atts.image_index {
        for d in index.manifests.iter_mut().filter(|d| &d.digest == image) {
            d.media_type = MediaType::OciIndex;
            d.digest = Digest::of(ib);
            d.size = ib.len() as u64;
        }
    }
    for a in &atts.referrers {
        index.manifests.retain(|d| d.digest != a.digest);
        index.manifests.push(a.descriptor());
    }
    let tmp = dir.join(".index.json.tmp");
    std::fs::write(&tmp, crate::oci::canonical(&index))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &index_path)
        .with_context(|| format!("cannot write {}", index_path.display()))?;
    Ok(())
}

/// The referrers tag schema's tag for `image`.
pub fn referrers_tag(image: &Digest) -> String {
    format!("sha256-{}", image.hex())
}

/// cosign's signature tag for `image`.
pub fn signature_tag(image: &Digest) -> String {
    format!("{}.sig", referrers_tag(image))
}

/// `old` (the tag's current index, if any) plus the referrers, each listed once.
pub fn merge_referrers(old: Option<&[u8]>, atts: &[Attachment]) -> Index {
    let mut index = old
        .and_then(|b| serde_json::from_slice::<Index>(b).ok())
        .unwrap_or_else(|| Index::oci(Vec::new()));
    for a in atts {
        index.manifests.retain(|d| d.digest != a.digest);
        index.manifests.push(a.descriptor());
    }
    index
}

/// Pushes the attachments of `image` (after the image itself, which `reference`
/// tags) to its repository: referrers and their tags; with an image index, the
/// attestation manifest and then the index under the reference's tag.
pub fn to_registry(
    layout: &Path,
    reference: &str,
    image: &Digest,
    atts: &Attachments,
    opts: &RegistryOptions,
) -> Result<()> {
    if atts.is_empty() {
        return Ok(());
    }
    put_blobs(layout, atts)?;
    let w = RepoClient::open(reference, opts)?;
    for a in atts.all() {
        w.push(layout, &a.bytes, None)
            .with_context(|| format!("cannot push {} of {image}", describe(a)))?;
    }
    if !atts.referrers.is_empty() {
        let tag = referrers_tag(image);
        let old = w.get(&tag)?;
        let index = crate::oci::canonical(&merge_referrers(old.as_deref(), &atts.referrers));
        w.push(layout, &index, Some(&tag))
            .with_context(|| format!("cannot push the referrers index {}:{tag}", w.repository()))?;
    }
    if let Some(sig) = atts.referrers.iter().find(|a| a.kind == Kind::Signature) {
        w.push(layout, &sig.bytes, Some(&signature_tag(image)))
            .with_context(|| format!("cannot push the signature tag of {image}"))?;
    }
    if let Some((_, index)) = &atts.image_index {
        let r = crate::registry::reference::RegRef::parse(reference)?;
        let tag = match (r.tag, r.digest) {
            (Some(t), _) => t,
            (None, None) => "latest".into(),
            (None, Some(_)) => anyhow::bail!(
                "--attest-store index: registry://{reference} pins a digest; give a tag for the image index"
            ),
        };
        w.push(layout, index, Some(&tag))
            .with_context(|| format!("cannot push the image index {}:{tag}", w.repository()))?;
    }
    Ok(())
}

pub fn describe(a: &Attachment) -> String {
    match &a.kind {
        Kind::Signature => "the cosign signature".to_string(),
        Kind::Attestation(p) if p == super::buildkit::ATTESTATION_MANIFEST => {
            "the BuildKit attestation manifest".to_string()
        }
        Kind::Attestation(p) => format!("the attestation {p}"),
    }
}
