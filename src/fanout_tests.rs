//! `index` (fan-out) on generated images: per-platform images built separately and
//! assembled give the index digest of the one-run multi-platform build, whatever
//! the input order; unpinned, duplicate, mis-pinned and non-image inputs are
//! refused naming the input, and nothing is written then.
use crate::elf::EM_AARCH64;
use crate::fanout::{assemble, IndexOptions, Location, Pinned};
use crate::imageref::ImageRef;
use crate::multiarch_tests::{fixture, json_blob, opts, rootfs_tar, target, Fixture};
use crate::oci::Digest;
use crate::pipeline::build;
use crate::source::{open_image, OpenOptions};
use crate::targets::build_platforms;
use crate::testutil::{LayoutBuilder, TinyRegistry};
use std::path::{Path, PathBuf};

/// One platform built alone into `oci:DIR:x` (as a runner of that platform would);
/// its manifest digest.
fn build_one(f: &Fixture, platform: &str, out: &Path, epoch: u64) -> String {
    let base = if platform == "linux/arm64" {
        &f.arm
    } else {
        &f.amd
    };
    build_from(f, base, platform, out, epoch)
}

/// Like [`build_one`], from the base `base`.
fn build_from(f: &Fixture, base: &str, platform: &str, out: &Path, epoch: u64) -> String {
    let mut o = opts(base, &format!("oci:{}:x", out.display()), &f.art);
    o.open.platform = Some(platform.into());
    o.epoch = epoch;
    build(o).unwrap().digest
}

fn index_opts(inputs: &[String], out: &str) -> IndexOptions {
    IndexOptions {
        inputs: inputs.to_vec(),
        output: ImageRef::parse(out).unwrap(),
        registry: Default::default(),
        epoch: 0,
    }
}

/// [`index_opts`] for registry inputs: pulled blobs go to `cache`, not the user's cache.
fn index_opts_cached(inputs: &[String], out: &str, cache: &Path) -> IndexOptions {
    let mut o = index_opts(inputs, out);
    o.registry.cache_dir = Some(cache.to_path_buf());
    o
}

/// Two single-platform layouts and their manifest digests.
struct Built {
    f: Fixture,
    amd: (PathBuf, String),
    arm: (PathBuf, String),
}

fn two_platforms() -> Built {
    let f = fixture();
    let (a, b) = (f.dir.join("amd"), f.dir.join("arm"));
    let da = build_one(&f, "linux/amd64", &a, 1_700_000_000);
    let db = build_one(&f, "linux/arm64", &b, 1_700_000_000);
    Built {
        f,
        amd: (a, da),
        arm: (b, db),
    }
}

fn pin(layout: &Path, digest: &str) -> String {
    format!("oci:{}@{digest}", layout.display())
}

/// The key property: the index assembled from separately built platform images is
/// byte for byte the one-run build's index, in either input order, and the output
/// layout holds every platform's image.
#[test]
fn fan_out_index_equals_the_one_run_build() {
    let b = two_platforms();
    let f = &b.f;
    let one_run = f.build_both(&format!("oci:{}:multi", f.dir.join("multi").display()));
    let inputs = [pin(&b.amd.0, &b.amd.1), pin(&b.arm.0, &b.arm.1)];
    let out = f.dir.join("fan");
    let s = assemble(&index_opts(&inputs, &format!("oci:{}:idx", out.display()))).unwrap();
    assert_eq!(
        s.digest, one_run.digest,
        "fan-out index differs from the one-run build"
    );
    let swapped = [inputs[1].clone(), inputs[0].clone()];
    let out2 = f.dir.join("fan2.tar");
    let s2 = assemble(&index_opts(
        &swapped,
        &format!("oci-archive:{}", out2.display()),
    ))
    .unwrap();
    assert_eq!(s2.digest, s.digest, "input order changed the index");
    assert_eq!(s.platforms["linux/arm64"].digest, b.arm.1);
    assert_eq!(s.platforms["linux/amd64"].input, inputs[0]);
    assert!(s.transfer.is_empty(), "no registry was involved");
    // Both outputs hold complete images: each platform opens (config, layers).
    for (r, p, want) in [
        (
            format!("oci:{}:idx", out.display()),
            "linux/arm64",
            &b.arm.1,
        ),
        (
            format!("oci-archive:{}", out2.display()),
            "linux/amd64",
            &b.amd.1,
        ),
    ] {
        let o = OpenOptions {
            platform: Some(p.into()),
            ..Default::default()
        };
        let img = open_image(&ImageRef::parse(&r).unwrap(), &o).unwrap();
        assert_eq!(img.manifest_digest.as_deref(), Some(want.as_str()), "{r}");
        for l in &img.layers {
            std::io::copy(&mut l.open_raw().unwrap(), &mut std::io::sink()).unwrap();
        }
    }
}

/// An input layout that also holds the output: the index joins it under a new tag,
/// the per-platform tags stay.
#[test]
fn index_into_the_layout_holding_the_inputs() {
    let f = fixture();
    let l = f.dir.join("shared");
    let da = build_one(&f, "linux/amd64", &l, 1);
    let mut o = opts(&f.arm, &format!("oci:{}:arm", l.display()), &f.art);
    o.open.platform = Some("linux/arm64".into());
    o.epoch = 1;
    let db = build(o).unwrap().digest;
    let s = assemble(&index_opts(
        &[pin(&l, &db), pin(&l, &da)],
        &format!("oci:{}:both", l.display()),
    ))
    .unwrap();
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.join("index.json")).unwrap()).unwrap();
    let tags: Vec<&str> = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(tags.len(), 3, "{top}");
    for t in ["x", "arm", "both"] {
        assert!(tags.contains(&t), "tag {t} missing: {top}");
    }
    let (d, _) = crate::source::oci::layout_index(&l, false, Some("both")).unwrap();
    assert_eq!(d, s.digest);
}

#[test]
fn inputs_must_be_pinned_by_digest() {
    let d = Digest::of(b"m");
    let p = Pinned::parse(&format!("oci:some/dir@{d}")).unwrap();
    assert_eq!(
        p.location,
        Location::Layout {
            path: "some/dir".into(),
            archive: false
        }
    );
    assert_eq!(p.digest, d);
    let p = Pinned::parse(&format!("registry://127.0.0.1:5000/a/b@{d}")).unwrap();
    assert_eq!(
        p.location,
        Location::Registry(format!("127.0.0.1:5000/a/b@{d}"))
    );
    assert!(matches!(
        Pinned::parse(&format!("oci-archive:x.tar@{d}"))
            .unwrap()
            .location,
        Location::Layout { archive: true, .. }
    ));
    for (given, hint) in [
        (
            "registry://127.0.0.1:5000/a/b:v1",
            "registry://127.0.0.1:5000/a/b@sha256:",
        ),
        (
            "registry://127.0.0.1:5000/a/b",
            "registry://127.0.0.1:5000/a/b@sha256:",
        ),
        ("oci:dir:latest", "oci:DIR@sha256:"),
        ("oci-archive:x.tar", "oci-archive:FILE@sha256:"),
    ] {
        let e = Pinned::parse(given).unwrap_err().to_string();
        assert!(
            e.contains(&format!("input '{given}' is not pinned by digest")),
            "{e}"
        );
        assert!(e.contains(hint), "{e}");
    }
    let e = Pinned::parse("docker-archive:x.tar")
        .unwrap_err()
        .to_string();
    assert!(e.contains("input 'docker-archive:x.tar'"), "{e}");
    // Refused before anything is read or written.
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let e = assemble(&index_opts(
        &["oci:dir:latest".to_string()],
        &format!("oci:{}", out.display()),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("oci:dir:latest"), "{e}");
    assert!(!out.exists());
}

/// Two images of one platform: refused naming both inputs, before any layer moves
/// (their layer blobs are gone here, so a download or copy would fail first), from
/// a layout and from a registry; nothing written.
#[test]
fn duplicate_platform_names_both_inputs() {
    let f = fixture();
    let l = f.dir.join("shared");
    let d1 = build_one(&f, "linux/amd64", &l, 1);
    let mut o = opts(&f.amd, &format!("oci:{}:y", l.display()), &f.art);
    o.open.platform = Some("linux/amd64".into());
    o.epoch = 2;
    let d2 = build(o).unwrap().digest;
    assert_ne!(d1, d2);
    for d in [&d1, &d2] {
        for layer in json_blob(&l, d)["layers"].as_array().unwrap() {
            let ld = Digest::parse(layer["digest"].as_str().unwrap()).unwrap();
            let _ = std::fs::remove_file(l.join("blobs/sha256").join(ld.hex()));
        }
    }
    let out = f.dir.join("out");
    let reg = TinyRegistry::serve(&l);
    let from_registry = |d: &str| format!("registry://{}/fleet/img@{d}", reg.addr);
    for (i1, i2) in [
        (pin(&l, &d1), pin(&l, &d2)),
        (from_registry(&d1), from_registry(&d2)),
    ] {
        let e = assemble(&index_opts_cached(
            &[i1.clone(), i2.clone()],
            &format!("oci:{}", out.display()),
            &f.dir.join("cache"),
        ))
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(&i1) && msg.contains(&i2), "{msg}");
        assert!(msg.contains("both linux/amd64"), "{msg}");
        assert!(!out.exists(), "a refused index left output behind");
    }
}

/// An image whose config claims another platform than its build record (and the
/// init it was given) says is refused, naming the input and both platforms: from
/// a layout and from a registry.
#[test]
fn config_platform_must_match_the_build_record() {
    let b = two_platforms();
    let (l, d) = (&b.amd.0, &b.amd.1);
    let put = |v: &serde_json::Value| {
        let bytes = serde_json::to_vec(v).unwrap();
        let d = Digest::of(&bytes);
        std::fs::write(l.join("blobs/sha256").join(d.hex()), &bytes).unwrap();
        (d, bytes.len())
    };
    let mut m = json_blob(l, d);
    let mut cfg = json_blob(l, m["config"]["digest"].as_str().unwrap());
    cfg["architecture"] = "arm64".into();
    let (cd, cs) = put(&cfg);
    m["config"]["digest"] = cd.as_str().into();
    m["config"]["size"] = cs.into();
    let (forged, size) = put(&m);
    // A record that names no platform (a build without --platform): the init's
    // target still says what the image was built for.
    let key = crate::record::RECORD_ANNOTATION;
    let mut rec: serde_json::Value =
        serde_json::from_str(m["annotations"][key].as_str().unwrap()).unwrap();
    rec["platform"] = serde_json::Value::Null;
    m["annotations"][key] = rec.to_string().into();
    let (no_platform, size2) = put(&m);
    // Listed in the layout (untagged), so the test registry serves them by digest.
    let idx = l.join("index.json");
    let mut top: serde_json::Value = serde_json::from_slice(&std::fs::read(&idx).unwrap()).unwrap();
    for (d, size) in [(&forged, size), (&no_platform, size2)] {
        top["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d.as_str(), "size": size}));
    }
    std::fs::write(&idx, serde_json::to_vec(&top).unwrap()).unwrap();
    let out = b.f.dir.join("out");
    let reg = TinyRegistry::serve(l);
    for (input, why) in [
        (pin(l, forged.as_str()), "built for linux/amd64"),
        (
            format!("registry://{}/fleet/img@{forged}", reg.addr),
            "built for linux/amd64",
        ),
        (
            pin(l, no_platform.as_str()),
            "its init is for linux/amd64 (x86_64",
        ),
    ] {
        let e = assemble(&index_opts_cached(
            std::slice::from_ref(&input),
            &format!("oci:{}", out.display()),
            &b.f.dir.join("cache"),
        ))
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(&format!("input {input}")), "{msg}");
        assert!(
            msg.contains(why) && msg.contains("says linux/arm64"),
            "{msg}"
        );
        assert!(!out.exists(), "a refused index left output behind");
    }
}

/// A base whose config says arm64 with `variant: v8`, given as `linux/arm64=...`:
/// the one-run build and the fan-out of the same images give one index, whose entry
/// keeps the config's variant; `linux/arm64` and `linux/arm64/v8` select it alike.
#[test]
fn config_variant_gives_one_index_both_ways() {
    let f = fixture();
    let v8 = f.dir.join("v8base");
    LayoutBuilder::new()
        .layer(&rootfs_tar(EM_AARCH64))
        .platform("arm64", Some("v8"))
        .write(&v8);
    let arm = format!("oci:{}:latest", v8.display());
    let multi = f.dir.join("multi");
    let one_run = build_platforms(
        opts(&f.amd, &format!("oci:{}:m", multi.display()), &f.art),
        vec![
            target("linux/arm64", &arm, &f.art),
            target("linux/amd64", &f.amd, &f.art),
        ],
    )
    .unwrap();
    let (a, b) = (f.dir.join("amd"), f.dir.join("arm"));
    let da = build_from(&f, &f.amd, "linux/amd64", &a, 1_700_000_000);
    let db = build_from(&f, &arm, "linux/arm64", &b, 1_700_000_000);
    let fan = f.dir.join("fan");
    let s = assemble(&index_opts(
        &[pin(&b, &db), pin(&a, &da)],
        &format!("oci:{}:i", fan.display()),
    ))
    .unwrap();
    assert_eq!(
        s.digest, one_run.digest,
        "fan-out and one-run index differ for a v8 base"
    );
    let idx = json_blob(&multi, &one_run.digest);
    assert_eq!(
        idx["manifests"][1]["platform"],
        serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
        "{idx}"
    );
    for p in ["linux/arm64", "linux/arm64/v8"] {
        let o = OpenOptions {
            platform: Some(p.into()),
            ..Default::default()
        };
        let img = open_image(
            &ImageRef::parse(&format!("oci:{}:i", fan.display())).unwrap(),
            &o,
        )
        .unwrap();
        assert_eq!(img.manifest_digest.as_deref(), Some(db.as_str()), "{p}");
    }
    // An entry without variant is selected by linux/arm64/v8 too (containerd's matcher).
    let plain = f.dir.join("plain");
    f.build_both(&format!("oci:{}:p", plain.display()));
    let o = OpenOptions {
        platform: Some("linux/arm64/v8".into()),
        ..Default::default()
    };
    open_image(
        &ImageRef::parse(&format!("oci:{}:p", plain.display())).unwrap(),
        &o,
    )
    .unwrap();
}

/// A pin whose blob hashes to something else, a pin naming no blob, an index given
/// as an input, and a manifest without config: each refused, naming the input.
#[test]
fn wrong_pins_and_non_images_are_refused() {
    let b = two_platforms();
    let f = &b.f;
    let out = f.dir.join("out");
    let out_ref = format!("oci:{}", out.display());
    let try_with = |bad: String| {
        let e = assemble(&index_opts(
            &[pin(&b.arm.0, &b.arm.1), bad.clone()],
            &out_ref,
        ))
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(&format!("input {bad}")), "{msg}");
        assert!(!out.exists(), "a refused index left output behind");
        msg
    };
    // The amd64 layout's manifest blob replaced by other bytes: the pin no longer holds.
    let amd = Digest::parse(&b.amd.1).unwrap();
    let blob = b.amd.0.join("blobs/sha256").join(amd.hex());
    let good = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, [&good[..], b" "].concat()).unwrap();
    let msg = try_with(pin(&b.amd.0, &b.amd.1));
    assert!(
        msg.contains(&format!("the blob named {amd} hashes to")),
        "{msg}"
    );
    std::fs::write(&blob, &good).unwrap();
    // A digest the layout does not have.
    let none = Digest::of(b"nothing");
    let msg = try_with(pin(&b.amd.0, none.as_str()));
    assert!(msg.contains(&format!("no blob {none}")), "{msg}");
    // An image index (the one-run build's) is not one platform's image.
    let multi = f.dir.join("multi");
    let s = f.build_both(&format!("oci:{}", multi.display()));
    let msg = try_with(pin(&multi, &s.digest));
    assert!(
        msg.contains("is an image index (linux/amd64, linux/arm64), not one platform's image"),
        "{msg}"
    );
    // A manifest without config.
    let bad = br#"{"layers":[],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}"#;
    let d = crate::digest::sha256_digest(bad);
    let hex = crate::digest::digest_hex(&d).unwrap();
    std::fs::write(b.amd.0.join("blobs/sha256").join(hex), bad).unwrap();
    let msg = try_with(pin(&b.amd.0, &d));
    assert!(msg.contains("config"), "{msg}");
}

/// A layout that lists a manifest under another platform than its config says.
#[test]
fn declared_platform_must_match_the_config() {
    let b = two_platforms();
    let idx = b.amd.0.join("index.json");
    let mut top: serde_json::Value = serde_json::from_slice(&std::fs::read(&idx).unwrap()).unwrap();
    top["manifests"][0]["platform"] = serde_json::json!({"os": "linux", "architecture": "arm64"});
    std::fs::write(&idx, serde_json::to_vec(&top).unwrap()).unwrap();
    let out = b.f.dir.join("out");
    let e = assemble(&index_opts(
        &[pin(&b.amd.0, &b.amd.1)],
        &format!("oci:{}", out.display()),
    ))
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&format!(
            "lists manifest {} as linux/arm64, but its config says linux/amd64",
            b.amd.1
        )),
        "{msg}"
    );
    assert!(!out.exists());
}

#[test]
fn docker_archive_output_is_refused() {
    let b = two_platforms();
    let out = b.f.dir.join("x.tar");
    let e = assemble(&index_opts(
        &[pin(&b.amd.0, &b.amd.1), pin(&b.arm.0, &b.arm.1)],
        &format!("docker-archive:{}", out.display()),
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("holds one image, not an image index"),
        "{e}"
    );
    assert!(!out.exists());
}
