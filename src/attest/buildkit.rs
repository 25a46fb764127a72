//! `--attest-store index`: BuildKit's attestation storage, which upstream's promotion
//! check reads. The statements (unsigned in-toto JSON, one layer each) form an
//! "attestation manifest" listed in the image index beside the image, with platform
//! unknown/unknown and `vnd.docker.reference.{type,digest}` naming the image
//! (docs.docker.com/build/metadata/attestations/attestation-storage).
use super::provenance::Statement;
use super::{Attachment, Kind, MT_IN_TOTO, PREDICATE_ANNOTATION};
use crate::oci::{Descriptor, Digest, Index, Manifest, MediaType};
use serde_json::json;
use std::collections::BTreeMap;

pub const REF_TYPE: &str = "vnd.docker.reference.type";
pub const REF_DIGEST: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// The attestation manifest of `image`: an image-shaped manifest (config with
/// `unknown` platform) whose layers are the statements.
pub fn attestation_manifest(image: &Digest, statements: &[Statement]) -> Attachment {
    let bodies: Vec<Vec<u8>> = statements.iter().map(crate::oci::canonical).collect();
    let layers: Vec<Descriptor> = statements
        .iter()
        .zip(&bodies)
        .map(|(st, b)| {
            let mut d = Descriptor::new(MediaType::from(MT_IN_TOTO), Digest::of(b), b.len() as u64);
            d.annotations
                .insert(PREDICATE_ANNOTATION.to_string(), st.predicate_type.clone());
            d
        })
        .collect();
    let config = crate::oci::canonical(&json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>()},
    }));
    let m = Manifest::oci(
        Descriptor::new(
            MediaType::OciConfig,
            Digest::of(&config),
            config.len() as u64,
        ),
        layers,
        BTreeMap::new(),
    );
    let mut blobs = vec![config];
    blobs.extend(bodies);
    let mut a = Attachment::new(Kind::Attestation(ATTESTATION_MANIFEST.into()), m, blobs);
    a.index_annotations = [
        (REF_TYPE.to_string(), ATTESTATION_MANIFEST.to_string()),
        (REF_DIGEST.to_string(), image.to_string()),
    ]
    .into();
    a
}

/// The image index: the image (with its platform) and its attestation manifest
/// (platform unknown/unknown).
pub fn image_index(image: &Descriptor, platform: &str, att: &Attachment) -> Index {
    let mut img = Descriptor::new(image.media_type.clone(), image.digest.clone(), image.size);
    img.extra.insert("platform".into(), platform_json(platform));
    let mut a = Descriptor::new(
        MediaType::OciManifest,
        att.digest.clone(),
        att.bytes.len() as u64,
    );
    a.annotations = att.index_annotations.clone();
    a.extra.insert(
        "platform".into(),
        json!({"architecture": "unknown", "os": "unknown"}),
    );
    Index::oci(vec![img, a])
}

fn platform_json(platform: &str) -> serde_json::Value {
    let mut p = platform.split('/');
    let (os, arch, variant) = (p.next().unwrap_or(""), p.next().unwrap_or(""), p.next());
    match variant {
        Some(v) => json!({"architecture": arch, "os": os, "variant": v}),
        None => json!({"architecture": arch, "os": os}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::provenance::{statement, SLSA_PROVENANCE};
    use crate::record::BuildRecord;

    #[test]
    fn attestation_manifest_names_the_image() {
        let img = Digest::of(b"img");
        let st = statement(&BuildRecord::default(), &img, "linux/arm64/v8");
        let a = attestation_manifest(&img, std::slice::from_ref(&st));
        assert_eq!(a.manifest.layers.len(), 1);
        assert_eq!(a.manifest.layers[0].media_type.as_str(), MT_IN_TOTO);
        assert_eq!(
            a.manifest.layers[0].annotations[PREDICATE_ANNOTATION],
            SLSA_PROVENANCE
        );
        assert_eq!(
            a.blobs[1],
            crate::oci::canonical(&st),
            "the layer is the statement"
        );
        assert!(a.manifest.subject.is_none());
        let d = Descriptor::new(MediaType::OciManifest, img.clone(), 7);
        let idx = image_index(&d, "linux/arm64/v8", &a);
        let v = serde_json::to_value(&idx).unwrap();
        assert_eq!(
            v["manifests"][0]["platform"],
            json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
        );
        assert_eq!(v["manifests"][1]["platform"]["os"], "unknown");
        assert_eq!(v["manifests"][1]["annotations"][REF_DIGEST], img.as_str());
        assert_eq!(
            v["manifests"][1]["annotations"][REF_TYPE],
            ATTESTATION_MANIFEST
        );
        // The config lists the layers as diff_ids (BuildKit's shape).
        let cfg: serde_json::Value = serde_json::from_slice(&a.blobs[0]).unwrap();
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0],
            a.manifest.layers[0].digest.as_str()
        );
    }
}
