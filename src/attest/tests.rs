//! Whole-build tests of signing: the image digest does not change, the layout lists
//! every referrer, `verify --key` passes with the right key and fails clearly with
//! a wrong key, a tampered envelope and a mismatched subject.
use super::*;
use crate::build_model::PurgeMode;
use crate::pipeline::build;
use crate::pipeline_tests::opts;
use crate::testutil::{accounts, LayoutBuilder};
use p256::ecdsa::SigningKey;
use serde_json::Value;
use std::path::Path;

fn signer(seed: u8) -> keys::Signer {
    keys::Signer::from_key(SigningKey::from_slice(&[seed; 32]).unwrap())
}

fn vk(seed: u8) -> p256::ecdsa::VerifyingKey {
    *SigningKey::from_slice(&[seed; 32]).unwrap().verifying_key()
}

fn base(dir: &Path) -> String {
    LayoutBuilder::new()
        .layer(
            &accounts()
                .dir("usr/share/doc", 0o755)
                .file("usr/share/doc/b", b"b", 0o644)
                .build(),
        )
        .write(dir);
    format!("oci:{}:latest", dir.display())
}

fn index(layout: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap()
}

/// Builds `out` signed with key `seed`, attaching `kinds`; returns the image digest.
fn signed_build(base: &str, out: &Path, seed: u8, kinds: &str) -> String {
    let mut o = opts(
        base,
        &format!("oci:{}", out.display()),
        PurgeMode::Rewrite,
        None,
    );
    o.attest = AttestOptions::new(Some(signer(seed)), Some(kinds)).unwrap();
    build(o).unwrap().digest
}

fn check(out: &Path, digest: &str, seed: u8) -> check::AttestReport {
    // The base is amd64 whatever the host (whose platform a reader defaults to).
    let amd64 = crate::source::OpenOptions {
        platform: Some("linux/amd64".into()),
        ..Default::default()
    };
    let img = crate::diff::open(&format!("oci:{}", out.display()), &amd64).unwrap();
    check::verify(
        &format!("oci:{}", out.display()),
        &Digest::parse(digest).unwrap(),
        img.record().unwrap().as_ref(),
        &vk(seed),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn signing_keeps_the_image_and_lists_every_referrer() {
    let t = tempfile::tempdir().unwrap();
    let base = base(&t.path().join("base"));
    let plain = t.path().join("plain");
    let d0 = build(opts(
        &base,
        &format!("oci:{}", plain.display()),
        PurgeMode::Rewrite,
        None,
    ))
    .unwrap()
    .digest;
    assert_eq!(
        index(&plain)["manifests"].as_array().unwrap().len(),
        1,
        "nothing attached by default"
    );
    let signed = t.path().join("signed");
    let d1 = signed_build(&base, &signed, 1, "provenance,sbom,cyclonedx");
    assert_eq!(d0, d1, "signing never changes the image");
    let idx = index(&signed);
    let types: Vec<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["artifactType"].as_str())
        .collect();
    assert_eq!(types, [cosign::ARTIFACT_SIG, MT_DSSE, MT_DSSE, MT_DSSE]);
    let r = check(&signed, &d1, 1);
    assert!(r.verified, "{}", r.render());
    assert_eq!(r.checks.len(), 4, "{}", r.render());
    assert!(
        r.render().contains("dependencies = build record"),
        "{}",
        r.render()
    );
    // Byte-reproducible: a second signed build gives the same index.json.
    let again = t.path().join("again");
    signed_build(&base, &again, 1, "provenance,sbom,cyclonedx");
    assert_eq!(
        std::fs::read(signed.join("index.json")).unwrap(),
        std::fs::read(again.join("index.json")).unwrap()
    );
    // An archive carries the same referrers.
    let mut o = opts(
        &base,
        &format!("oci-archive:{}", t.path().join("a.tar").display()),
        PurgeMode::Rewrite,
        None,
    );
    o.attest = AttestOptions::new(Some(signer(1)), None).unwrap();
    build(o).unwrap();
    let img = crate::diff::open(
        &format!("oci-archive:{}", t.path().join("a.tar").display()),
        &Default::default(),
    )
    .unwrap();
    let r = check::verify(
        &format!("oci-archive:{}", t.path().join("a.tar").display()),
        &Digest::parse(&d1).unwrap(),
        img.record().unwrap().as_ref(),
        &vk(1),
        &Default::default(),
    )
    .unwrap();
    assert!(r.verified && r.checks.len() == 2, "{}", r.render());
}

#[test]
fn wrong_key_tampered_envelope_and_mismatched_subject_fail() {
    let t = tempfile::tempdir().unwrap();
    let base = base(&t.path().join("base"));
    let out = t.path().join("out");
    let d = signed_build(&base, &out, 1, "provenance");
    // Wrong key.
    let r = check(&out, &d, 2);
    assert!(!r.verified);
    let text = r.render();
    assert!(
        text.contains("does not verify with the given key"),
        "{text}"
    );
    assert!(text.contains("no DSSE signature verifies"), "{text}");

    // Tampered envelope, re-hashed so every digest is consistent again: only the
    // signature can tell.
    let idx = index(&out);
    let prov = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == MT_DSSE)
        .unwrap()
        .clone();
    let blob = |d: &str| out.join("blobs/sha256").join(&d["sha256:".len()..]);
    let m: Manifest =
        serde_json::from_slice(&std::fs::read(blob(prov["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let env_bytes = std::fs::read(blob(m.layers[0].digest.as_str())).unwrap();
    let mut env: dsse::Envelope = serde_json::from_slice(&env_bytes).unwrap();
    let mut st: Value = serde_json::from_slice(&env.payload_bytes().unwrap()).unwrap();
    st["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"] =
        serde_json::json!({"EVIL": "1"});
    use base64::Engine;
    env.payload = base64::engine::general_purpose::STANDARD.encode(crate::oci::canonical(&st));
    let new_env = crate::oci::canonical(&env);
    let mut m2 = m.clone();
    m2.layers[0].digest = Digest::of(&new_env);
    m2.layers[0].size = new_env.len() as u64;
    std::fs::write(blob(m2.layers[0].digest.as_str()), &new_env).unwrap();
    let mb = crate::oci::canonical(&m2);
    std::fs::write(blob(Digest::of(&mb).as_str()), &mb).unwrap();
    let mut idx2 = idx.clone();
    for e in idx2["manifests"].as_array_mut().unwrap() {
        if e["digest"] == prov["digest"] {
            e["digest"] = Value::String(Digest::of(&mb).to_string());
            e["size"] = mb.len().into();
        }
    }
    std::fs::write(out.join("index.json"), serde_json::to_vec(&idx2).unwrap()).unwrap();
    let r = check(&out, &d, 1);
    assert!(!r.verified);
    assert!(
        r.render().contains("changed after signing"),
        "{}",
        r.render()
    );

    // A blob changed in place: its digest no longer matches.
    std::fs::write(out.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    assert!(check(&out, &d, 1).verified);
    std::fs::write(blob(m.layers[0].digest.as_str()), b"{}").unwrap();
    let r = check(&out, &d, 1);
    assert!(
        !r.verified && r.render().contains("tampered"),
        "{}",
        r.render()
    );
}

#[test]
fn a_signature_for_another_image_is_a_mismatched_subject() {
    let rec = crate::record::BuildRecord::default();
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    let img = ImageToAttest {
        subject: Descriptor::new(MediaType::OciManifest, a.clone(), 10),
        record: &rec,
        platform: "linux/amd64",
        spdx: None,
        cyclonedx: None,
        repository: "",
    };
    let atts = attach(&img, &AttestOptions::new(Some(signer(1)), None).unwrap()).unwrap();
    // Stage them under image b: manifests claim subject b, payloads still name a.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    crate::sink::write_layout_index(dir, b.as_str(), 10, Some("latest")).unwrap();
    let moved: Vec<Attachment> = atts
        .referrers
        .into_iter()
        .map(|mut x| {
            x.manifest.subject.as_mut().unwrap().digest = b.clone();
            Attachment::new(x.kind, x.manifest, x.blobs)
        })
        .collect();
    let moved = Attachments {
        referrers: moved,
        image_index: None,
    };
    store::into_layout(dir, &b, &moved).unwrap();
    let r = check::verify(
        &format!("oci:{}", dir.display()),
        &b,
        Some(&rec),
        &vk(1),
        &Default::default(),
    )
    .unwrap();
    assert!(!r.verified);
    let text = r.render();
    assert!(text.matches("mismatched subject").count() == 2, "{text}");
}

#[test]
fn attest_kinds_and_defaults() {
    assert_eq!(
        Kinds::parse("provenance,sbom").unwrap(),
        Kinds {
            provenance: true,
            sbom: true,
            cyclonedx: false
        }
    );
    assert!(!Kinds::parse("none").unwrap().any());
    assert!(Kinds::parse("slsa")
        .unwrap_err()
        .to_string()
        .contains("'slsa'"));
    let o = AttestOptions::new(None, None).unwrap();
    assert!(!o.enabled(), "no key, no --attest: nothing");
    let o = AttestOptions::new(Some(signer(1)), None).unwrap();
    assert!(o.kinds.provenance && !o.kinds.sbom);
    let o = AttestOptions::new(Some(signer(1)), Some("none")).unwrap();
    assert!(o.enabled() && !o.kinds.any(), "signature only");
}

#[test]
fn unsigned_attestations_are_plain_statements() {
    let t = tempfile::tempdir().unwrap();
    let base = base(&t.path().join("base"));
    let out = t.path().join("out");
    let mut o = opts(
        &base,
        &format!("oci:{}", out.display()),
        PurgeMode::Rewrite,
        None,
    );
    o.attest = AttestOptions::new(None, Some("provenance")).unwrap();
    let d = build(o).unwrap().digest;
    let idx = index(&out);
    let m = &idx["manifests"][1];
    assert_eq!(m["artifactType"], MT_IN_TOTO);
    assert_eq!(
        m["annotations"][PREDICATE_ANNOTATION],
        provenance::SLSA_PROVENANCE
    );
    let r = check(&out, &d, 1);
    assert!(!r.verified, "unsigned never verifies: {}", r.render());
}

/// `--attest-store index`: the tag names an image index holding the image and its
/// BuildKit attestation manifest; the image and its signature are unchanged.
#[test]
fn index_store_wraps_the_image_with_its_attestation_manifest() {
    let t = tempfile::tempdir().unwrap();
    let base = base(&t.path().join("base"));
    let out = t.path().join("out");
    let mut o = opts(
        &base,
        &format!("oci:{}", out.display()),
        PurgeMode::Rewrite,
        None,
    );
    o.attest = AttestOptions::new(Some(signer(1)), Some("provenance,sbom")).unwrap();
    o.attest.store = Store::Index;
    let d = build(o).unwrap().digest;
    let idx = index(&out);
    let tagged = &idx["manifests"][0];
    assert_eq!(
        tagged["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        tagged["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let blob = |d: &str| {
        let b = std::fs::read(out.join("blobs/sha256").join(&d["sha256:".len()..])).unwrap();
        serde_json::from_slice::<Value>(&b).unwrap()
    };
    let inner = blob(tagged["digest"].as_str().unwrap());
    assert_eq!(inner["manifests"][0]["digest"], d.as_str());
    assert_eq!(inner["manifests"][0]["platform"]["architecture"], "amd64");
    let att = &inner["manifests"][1];
    assert_eq!(att["annotations"][buildkit::REF_DIGEST], d.as_str());
    let am = blob(att["digest"].as_str().unwrap());
    let preds: Vec<&str> = am["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["annotations"][PREDICATE_ANNOTATION].as_str().unwrap())
        .collect();
    assert_eq!(
        preds,
        [provenance::SLSA_PROVENANCE, provenance::SPDX_PREDICATE]
    );
    // Readers still find the image through the index, and its signature verifies.
    let r = check(&out, &d, 1);
    assert!(r.verified && r.checks.len() == 1, "{}", r.render());
}

#[test]
fn a_private_key_others_may_read_is_refused_and_a_group_readable_one_warned() {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("k.pem");
    let pem = SigningKey::from_slice(&[7; 32])
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(&path, pem.as_bytes()).unwrap();
    let load = |mode: u32| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut warned = Vec::new();
        let r = keys::Signer::load(&path, &mut |w| warned.push(w)).map(|s| s.keyid().to_string());
        (r, warned)
    };
    let (ok, warned) = load(0o600);
    assert_eq!(ok.unwrap(), keys::keyid(&vk(7)));
    assert!(warned.is_empty(), "{warned:?}");
    let (ok, warned) = load(0o640);
    assert!(ok.is_ok());
    assert!(
        warned.len() == 1 && warned[0].contains("readable by its group"),
        "{warned:?}"
    );
    for mode in [0o644, 0o602] {
        let (e, _) = load(mode);
        let e = format!("{:#}", e.unwrap_err());
        assert!(
            e.contains(&format!("mode {mode:03o} lets other users")) && e.contains("k.pem"),
            "{e}"
        );
    }
}
