//! Supply-chain attachments of a built image: a cosign signature, SLSA provenance
//! and SBOM attestations (in-toto Statements in DSSE envelopes when a key is given),
//! each an OCI 1.1 artifact manifest whose `subject` is the image.
//!
//! [`attach`] is the one entry point: a pure function of one built image (its
//! descriptor, build record, platform and SBOM bytes) that returns the blobs and
//! manifests to stage; [`store`] puts them where verifiers look (layout index.json,
//! registry tags); [`check`] is `verify --key`.
pub mod buildkit;
pub mod check;
pub mod cosign;
pub mod dsse;
pub mod keys;
pub mod provenance;
pub mod store;

use crate::oci::{Descriptor, Digest, Manifest, MediaType};
use crate::record::BuildRecord;
use anyhow::{bail, Result};
use provenance::Statement;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const MT_DSSE: &str = "application/vnd.dsse.envelope.v1+json";
/// Layer and artifact type of an unsigned in-toto Statement (no `--sign-key`).
pub const MT_IN_TOTO: &str = dsse::IN_TOTO_PAYLOAD;
/// Annotation naming an attestation's predicate type (as BuildKit and cosign do).
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
const CREATED: &str = "org.opencontainers.image.created";

/// What `--attest` selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds {
    pub provenance: bool,
    pub sbom: bool,
    pub cyclonedx: bool,
}

impl Kinds {
    /// `provenance,sbom,cyclonedx` (any subset) or `none`.
    pub fn parse(s: &str) -> Result<Kinds> {
        let mut k = Kinds::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "provenance" => k.provenance = true,
                "sbom" | "spdx" => k.sbom = true,
                "cyclonedx" => k.cyclonedx = true,
                "none" => {}
                _ => bail!("--attest '{part}': expected provenance, sbom, cyclonedx or none"),
            }
        }
        Ok(k)
    }
    pub fn any(&self) -> bool {
        self.provenance || self.sbom || self.cyclonedx
    }
}

/// Where attestations go (`--attest-store`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    /// OCI 1.1 referrers (DSSE envelopes when signed).
    #[default]
    Referrers,
    /// BuildKit attestation manifests in an image index (unsigned statements).
    Index,
}

/// The build's signing and attestation settings. Default: nothing is attached, and
/// the output is exactly what it was before this feature.
#[derive(Debug, Clone, Default)]
pub struct AttestOptions {
    pub signer: Option<Arc<keys::Signer>>,
    pub kinds: Kinds,
    pub store: Store,
}

impl AttestOptions {
    /// `--sign-key` alone means a signature and provenance; `--attest` says exactly.
    pub fn new(signer: Option<keys::Signer>, attest: Option<&str>) -> Result<AttestOptions> {
        let kinds = match attest {
            Some(s) => Kinds::parse(s)?,
            None => Kinds {
                provenance: signer.is_some(),
                ..Default::default()
            },
        };
        Ok(AttestOptions {
            signer: signer.map(Arc::new),
            kinds,
            store: Store::Referrers,
        })
    }
    pub fn enabled(&self) -> bool {
        self.signer.is_some() || self.kinds.any()
    }
}

/// One image to attest.
pub struct ImageToAttest<'a> {
    /// The image manifest's descriptor (media type, digest, size).
    pub subject: Descriptor,
    pub record: &'a BuildRecord,
    /// `os/arch[/variant]` of the image.
    pub platform: &'a str,
    /// SPDX 2.3 JSON, needed for the `sbom` attestation.
    pub spdx: Option<&'a [u8]>,
    /// CycloneDX JSON, needed for the `cyclonedx` attestation.
    pub cyclonedx: Option<&'a [u8]>,
    /// Repository named in the cosign payload (`docker-reference`); "" for layouts.
    pub repository: &'a str,
}

/// What an artifact manifest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Signature,
    /// An attestation with this predicate type.
    Attestation(String),
}

/// One artifact manifest (exact bytes) with the blobs it references.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub kind: Kind,
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// Every blob of the manifest (config and layers), exact bytes.
    pub blobs: Vec<Vec<u8>>,
    /// Annotations of its entry in an image index (BuildKit's attestation manifest).
    pub index_annotations: BTreeMap<String, String>,
}

/// Everything [`attach`] makes for one image.
#[derive(Debug, Clone, Default)]
pub struct Attachments {
    /// Artifact manifests whose `subject` is the image.
    pub referrers: Vec<Attachment>,
    /// `--attest-store index`: the attestation manifest and the image index (canonical
    /// bytes) that replaces the image under its tag.
    pub image_index: Option<(Attachment, Vec<u8>)>,
}

impl Attachments {
    pub fn is_empty(&self) -> bool {
        self.referrers.is_empty() && self.image_index.is_none()
    }
    pub fn all(&self) -> impl Iterator<Item = &Attachment> {
        self.referrers
            .iter()
            .chain(self.image_index.iter().map(|(a, _)| a))
    }
}

impl Attachment {
    fn new(kind: Kind, manifest: Manifest, blobs: Vec<Vec<u8>>) -> Attachment {
        let bytes = crate::oci::canonical(&manifest);
        Attachment {
            kind,
            digest: Digest::of(&bytes),
            manifest,
            bytes,
            blobs,
            index_annotations: BTreeMap::new(),
        }
    }

    /// The descriptor an index (layout index.json, referrers index) lists it by.
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            MediaType::OciManifest,
            self.digest.clone(),
            self.bytes.len() as u64,
        );
        d.artifact_type = self.manifest.artifact_type.clone();
        d.annotations = self.manifest.annotations.clone();
        d
    }
}

/// The signature and attestations of one image, in a fixed order (signature first).
pub fn attach(img: &ImageToAttest, opts: &AttestOptions) -> Result<Attachments> {
    let mut out = Attachments::default();
    let created = crate::image::rfc3339(img.record.source_date_epoch.unwrap_or(0));
    if let Some(s) = &opts.signer {
        out.referrers.push(signature(img, s, &created));
    }
    let statements = statements(img, opts)?;
    match opts.store {
        Store::Referrers => {
            for st in &statements {
                out.referrers.push(attestation(img, st, opts, &created));
            }
        }
        Store::Index if !statements.is_empty() => {
            let att = buildkit::attestation_manifest(&img.subject.digest, &statements);
            let index = buildkit::image_index(&img.subject, img.platform, &att);
            out.image_index = Some((att, crate::oci::canonical(&index)));
        }
        Store::Index => {}
    }
    Ok(out)
}

/// The in-toto statements `--attest` asks for.
fn statements(img: &ImageToAttest, opts: &AttestOptions) -> Result<Vec<Statement>> {
    let image = &img.subject.digest;
    let mut out = Vec::new();
    if opts.kinds.provenance {
        out.push(provenance::statement(img.record, image, img.platform));
    }
    for (wanted, bytes, what, predicate) in [
        (
            opts.kinds.sbom,
            img.spdx,
            "sbom",
            provenance::SPDX_PREDICATE,
        ),
        (
            opts.kinds.cyclonedx,
            img.cyclonedx,
            "cyclonedx",
            provenance::CYCLONEDX_PREDICATE,
        ),
    ] {
        if !wanted {
            continue;
        }
        let Some(bytes) = bytes else {
            bail!("--attest {what}: the build made no {what} document");
        };
        let doc: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("--attest {what}: the SBOM is not JSON ({e})"))?;
        out.push(Statement::new(image, predicate, doc));
    }
    Ok(out)
}

fn layer(mt: &str, bytes: &[u8], annotations: BTreeMap<String, String>) -> Descriptor {
    let mut d = Descriptor::new(MediaType::from(mt), Digest::of(bytes), bytes.len() as u64);
    d.annotations = annotations;
    d
}

fn artifact(
    img: &ImageToAttest,
    artifact_type: &str,
    l: Descriptor,
    ann: BTreeMap<String, String>,
) -> Manifest {
    let mut m = Manifest::artifact(MediaType::from(artifact_type), vec![l], ann);
    m.subject = Some(Descriptor::new(
        img.subject.media_type.clone(),
        img.subject.digest.clone(),
        img.subject.size,
    ));
    m
}

fn signature(img: &ImageToAttest, s: &keys::Signer, created: &str) -> Attachment {
    let payload = cosign::payload(&img.subject.digest, img.repository);
    let sig = cosign::sign(&payload, s);
    let l = layer(
        cosign::MT_SIMPLE_SIGNING,
        &payload,
        [(cosign::SIGNATURE_ANNOTATION.to_string(), sig)].into(),
    );
    let m = artifact(
        img,
        cosign::ARTIFACT_SIG,
        l,
        [(CREATED.to_string(), created.to_string())].into(),
    );
    Attachment::new(
        Kind::Signature,
        m,
        vec![crate::oci::manifest::EMPTY_JSON.to_vec(), payload],
    )
}

/// A statement as a DSSE envelope (signed) or a bare in-toto layer (no key).
fn attestation(
    img: &ImageToAttest,
    st: &Statement,
    opts: &AttestOptions,
    created: &str,
) -> Attachment {
    let statement = crate::oci::canonical(st);
    let (mt, body) = match &opts.signer {
        Some(s) => (
            MT_DSSE,
            crate::oci::canonical(&dsse::Envelope::sign(MT_IN_TOTO, &statement, s)),
        ),
        None => (MT_IN_TOTO, statement),
    };
    let pt = [(PREDICATE_ANNOTATION.to_string(), st.predicate_type.clone())];
    let l = layer(mt, &body, pt.clone().into());
    let mut ann: BTreeMap<String, String> = pt.into();
    ann.insert(CREATED.to_string(), created.to_string());
    let m = artifact(img, mt, l, ann);
    Attachment::new(
        Kind::Attestation(st.predicate_type.clone()),
        m,
        vec![crate::oci::manifest::EMPTY_JSON.to_vec(), body],
    )
}

#[cfg(test)]
mod tests;
