//! Output safety (issue 12): a build never destroys the user's files, keeps the
//! other images of a layout it writes into, publishes side outputs with the image,
//! and never shares inodes with a base someone else can modify.
use crate::compress::{Algorithm, Settings};
use crate::digest::sha256_digest;
use crate::imageref::ImageRef;
use crate::oci_layout::REF_NAME;
use crate::pipeline::{build, index_base, BuildOptions, BuildSummary, PurgeMode};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::rootfs::IndexOptions;
use crate::source::{open_image, OpenOptions};
use crate::testutil::TarBuilder;
use anyhow::Result;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const RECIPE: &str = r#"
name = "t"
[[fs]]
op = "file"
path = "/etc/motd"
content = "hi\n"
[[fs]]
op = "remove"
path = "/usr/share/doc/b"
[artifacts]
dest = "/opt/app"
"#;

fn rootfs_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/a", &[b'a'; 5000], 0o644)
        .file("usr/share/doc/b", &[b'b'; 5000], 0o644)
        .build()
}

/// A one-layer gzip OCI layout tagged `tag`; returns the layer blob's path.
fn write_base_layout(dir: &Path, tag: &str) -> PathBuf {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        d
    };
    let tar = rootfs_tar();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&tar).unwrap();
    let z = e.finish().unwrap();
    let ld = put(&z);
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&tar)]}}))
    .unwrap();
    let cd = put(&config);
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": z.len()}]}))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
            "size": manifest.len(), "annotations": {REF_NAME: tag}}]}))
        .unwrap(),
    )
    .unwrap();
    blobs.join(ld.trim_start_matches("sha256:"))
}

fn artifacts(dir: &Path, content: &str) -> PathBuf {
    let art = dir.join(format!("art-{content}"));
    std::fs::create_dir_all(art.join("dist")).unwrap();
    std::fs::write(art.join("dist/x.js"), content).unwrap();
    art
}

fn opts(base: &str, out: &str, mode: PurgeMode, art: &Path) -> BuildOptions {
    BuildOptions {
        base: ImageRef::parse(base).unwrap(),
        output: ImageRef::parse(out).unwrap(),
        recipe: Recipe::parse(RECIPE.as_bytes(), "t.toml", Path::new(".")).unwrap(),
        artifacts: Some(art.to_path_buf()),
        artifacts_image: None,
        purge_mode: mode,
        compression: Settings::new(Algorithm::Gzip, None, Some(1)).unwrap(),
        epoch: 1_700_000_000,
        build_args: Default::default(),
        strict: false,
        open: OpenOptions::default(),
        progress: Progress::silent(),
        cache: None,
        remote_cache: Default::default(),
        attest: Default::default(),
        sbom: None,
        record: None,
        arch: Default::default(),
    }
}

fn run(base: &str, out: &str, art: &Path) -> Result<BuildSummary> {
    build(opts(base, out, PurgeMode::Rewrite, art))
}

fn err_of(r: Result<BuildSummary>) -> String {
    match r {
        Ok(s) => panic!("the build should fail, but made {}", s.digest),
        Err(e) => format!("{e:#}"),
    }
}

fn index(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap()
}

fn tags(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = index(dir)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| {
            let t = d["annotations"][REF_NAME].as_str()?;
            Some((t.to_string(), d["digest"].as_str()?.to_string()))
        })
        .collect();
    v.sort();
    v
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Opens and fully indexes `image` (every blob read and verified).
fn readable(image: &str) -> crate::rootfs::Rootfs {
    let mut img = open_image(&ImageRef::parse(image).unwrap(), &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{image}: {e:#}"));
    index_base(&mut img, &IndexOptions::default(), &Progress::silent())
        .unwrap_or_else(|e| panic!("{image}: {e:#}"))
}

fn scratch_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".nemoclaw-"))
        .collect()
}

/// Issue 12.17: `--output oci:PATH` / `oci-archive:PATH` over a regular file (here
/// the build's own base tarball) must refuse, not delete it.
#[test]
fn output_over_a_user_file_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base.tar");
    std::fs::write(&base, rootfs_tar()).unwrap();
    let before = std::fs::read(&base).unwrap();
    let art = artifacts(t.path(), "1");
    let b = format!("tar:{}", base.display());
    let e = err_of(run(&b, &format!("oci:{}", base.display()), &art));
    assert!(e.contains("is not a directory"), "{e}");
    for transport in ["oci-archive", "docker-archive"] {
        let e = err_of(run(&b, &format!("{transport}:{}", base.display()), &art));
        assert!(e.contains("is not an image archive"), "{transport}: {e}");
    }
    assert_eq!(
        std::fs::read(&base).unwrap(),
        before,
        "base tarball changed"
    );
    assert_eq!(scratch_left(t.path()), Vec::<String>::new());
    // An archive we wrote may be replaced; so may an empty file.
    let arch = t.path().join("img.tar");
    run(&b, &format!("oci-archive:{}", arch.display()), &art).unwrap();
    let art2 = artifacts(t.path(), "2");
    let s = run(&b, &format!("oci-archive:{}", arch.display()), &art2).unwrap();
    readable(&format!("oci-archive:{}", arch.display()));
    let empty = t.path().join("empty.tar");
    std::fs::write(&empty, b"").unwrap();
    let s2 = run(&b, &format!("docker-archive:{}", empty.display()), &art2).unwrap();
    assert_eq!(s.digest, s2.digest);
}

/// Issue 12.18: a directory with `oci-layout` plus the user's files is refused.
#[test]
fn layout_dir_with_user_files_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    write_base_layout(&base, "v1");
    let out = t.path().join("work");
    std::fs::create_dir_all(out.join("src")).unwrap();
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(out.join("NOTES.md"), b"my notes").unwrap();
    std::fs::write(out.join("src/main.rs"), b"fn main() {}").unwrap();
    let art = artifacts(t.path(), "1");
    let b = format!("oci:{}:v1", base.display());
    let e = err_of(run(&b, &format!("oci:{}:v1", out.display()), &art));
    assert!(
        e.contains("not part of an OCI image layout (NOTES.md, src)"),
        "{e}"
    );
    assert_eq!(std::fs::read(out.join("NOTES.md")).unwrap(), b"my notes");
    assert!(out.join("src/main.rs").exists());
    // A plain directory without oci-layout is not a layout either.
    std::fs::remove_file(out.join("oci-layout")).unwrap();
    let e = err_of(run(&b, &format!("oci:{}", out.display()), &art));
    assert!(e.contains("not part of an OCI image layout"), "{e}");
    // An empty directory is fine.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run(&b, &format!("oci:{}:x", empty.display()), &art).unwrap();
    readable(&format!("oci:{}:x", empty.display()));
    assert_eq!(scratch_left(t.path()), Vec::<String>::new());
}

/// Issue 12.19: `oci:L:v3` into the base's own layout keeps `v2`; replacing `v3`
/// again removes only what the old `v3` alone referenced.
#[test]
fn writing_a_tag_keeps_the_other_tags() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("L");
    write_base_layout(&l, "v2");
    let base_tags = tags(&l);
    let base = format!("oci:{}:v2", l.display());
    let a1 = artifacts(t.path(), "1");
    let first = run(&base, &format!("oci:{}:v3", l.display()), &a1).unwrap();
    let mut want = base_tags.clone();
    want.push(("v3".into(), first.digest.clone()));
    assert_eq!(tags(&l), want);
    readable(&base);
    readable(&format!("oci:{}:v3", l.display()));
    // Replace v3 with a different image: v2 still whole, the old v3 garbage-collected.
    let a2 = artifacts(t.path(), "2");
    let mut o = opts(
        &base,
        &format!("oci:{}:v3", l.display()),
        PurgeMode::Rewrite,
        &a2,
    );
    o.sbom = Some(t.path().join("sbom.json"));
    let second = build(o).unwrap();
    assert_ne!(first.digest, second.digest);
    let mut want = base_tags;
    want.push(("v3".into(), second.digest.clone()));
    assert_eq!(tags(&l), want);
    readable(&base);
    readable(&format!("oci:{}:v3", l.display()));
    assert!(!blob(&l, &first.digest).exists(), "old v3 manifest kept");
    let old_artifacts = &first.layers.last().unwrap().digest;
    assert!(!blob(&l, old_artifacts).exists(), "old v3 layer kept");
    // Shared layers (the rewritten base layer) are still there for v3.
    assert!(blob(&l, &second.layers[0].digest).exists());
    // The SBOM referrer of v3 is listed; building v3 once more without one keeps it.
    let referrers = |l: &Path| {
        index(l)["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d.get("artifactType").is_some())
            .count()
    };
    assert_eq!(referrers(&l), 1);
    run(&base, &format!("oci:{}:v3", l.display()), &a2).unwrap();
    assert_eq!(referrers(&l), 1);
    // Moving v3 to another image drops the referrer whose subject is gone.
    run(&base, &format!("oci:{}:v3", l.display()), &a1).unwrap();
    assert_eq!(referrers(&l), 0);
    assert_eq!(scratch_left(t.path()), Vec::<String>::new());
}

/// Issue 12.21: a side output that cannot be written fails the build before the
/// image is published: the previous image stays.
#[test]
fn failing_side_output_keeps_the_old_image() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    write_base_layout(&base, "v1");
    let b = format!("oci:{}:v1", base.display());
    let out = t.path().join("out");
    let first = run(
        &b,
        &format!("oci:{}", out.display()),
        &artifacts(t.path(), "1"),
    )
    .unwrap();
    let before = std::fs::read(out.join("index.json")).unwrap();
    let art2 = artifacts(t.path(), "2");
    for which in ["sbom", "record"] {
        let mut o = opts(
            &b,
            &format!("oci:{}", out.display()),
            PurgeMode::Rewrite,
            &art2,
        );
        let bad = Some(t.path().join("no-such-dir/side.json"));
        if which == "sbom" {
            o.sbom = bad;
        } else {
            o.record = bad;
        }
        let e = err_of(build(o));
        assert!(e.contains("cannot write") && e.contains("side.json"), "{e}");
        assert_eq!(
            std::fs::read(out.join("index.json")).unwrap(),
            before,
            "{which}: the image was replaced by a failed build"
        );
        assert_eq!(tags(&out), vec![("latest".into(), first.digest.clone())]);
    }
    readable(&format!("oci:{}", out.display()));
    // Written together with the image when they can be.
    let mut o = opts(
        &b,
        &format!("oci:{}", out.display()),
        PurgeMode::Rewrite,
        &art2,
    );
    o.record = Some(t.path().join("record.json"));
    let s = build(o).unwrap();
    let rec: Value =
        serde_json::from_slice(&std::fs::read(t.path().join("record.json")).unwrap()).unwrap();
    assert_eq!(rec, s.record.to_value());
    assert_eq!(scratch_left(t.path()), Vec::<String>::new());
}

/// Issue 12.22: reused base blobs are copies, not hard links: whoever owns the base
/// cannot change the output afterwards. Our own cache may be linked.
#[test]
fn reused_base_blobs_share_no_inode_with_the_base() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    let layer = write_base_layout(&base, "v1");
    let b = format!("oci:{}:v1", base.display());
    let out = t.path().join("out");
    let s = build(opts(
        &b,
        &format!("oci:{}", out.display()),
        PurgeMode::Whiteout,
        &artifacts(t.path(), "1"),
    ))
    .unwrap();
    assert_eq!(s.layers[0].action, "reused");
    let copy = blob(&out, &s.layers[0].digest);
    let (bm, om) = (
        std::fs::metadata(&layer).unwrap(),
        std::fs::metadata(&copy).unwrap(),
    );
    assert_ne!(
        (bm.dev(), bm.ino()),
        (om.dev(), om.ino()),
        "output blob is the base's inode"
    );
    // The base owner rewrites their blob in place: the output does not change.
    std::fs::write(&layer, b"corrupted").unwrap();
    readable(&format!("oci:{}", out.display()));
    // A blob of our own cache may be shared (same user, our directory).
    write_base_layout(&base, "v1");
    let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
    let mut o = opts(
        &b,
        &format!("oci:{}", t.path().join("c1").display()),
        PurgeMode::Whiteout,
        &artifacts(t.path(), "1"),
    );
    o.cache = Some(cache.clone());
    build(o).unwrap();
    let mut o = opts(
        &b,
        &format!("oci:{}", t.path().join("c2").display()),
        PurgeMode::Whiteout,
        &artifacts(t.path(), "1"),
    );
    o.cache = Some(cache.clone());
    let hit = build(o).unwrap();
    assert!(hit.cache_hit);
    let cached = cache.blob(&hit.layers[1].digest).unwrap();
    let linked = blob(&t.path().join("c2"), &hit.layers[1].digest);
    assert_eq!(
        std::fs::metadata(cached).unwrap().ino(),
        std::fs::metadata(linked).unwrap().ino()
    );
}

/// A cached blob changed in place after it was stored is never published: the hit
/// re-hashes it, warns, drops the bad entry and builds cold to the same digest.
#[test]
fn corrupted_cache_blob_is_a_miss_not_an_output() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    write_base_layout(&base, "v1");
    let b = format!("oci:{}:v1", base.display());
    let art = artifacts(t.path(), "1");
    let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
    let with_cache = |out: &str| {
        let mut o = opts(
            &b,
            &format!("oci:{}", t.path().join(out).display()),
            PurgeMode::Rewrite,
            &art,
        );
        o.cache = Some(cache.clone());
        build(o)
    };
    let cold = with_cache("o1").unwrap();
    assert!(!cold.cache_hit);
    let first = cache.blob(&cold.layers[0].digest).expect("layer cached");
    let len = std::fs::metadata(&first).unwrap().len() as usize;
    std::fs::write(&first, vec![0u8; len]).unwrap();
    let again = with_cache("o2").unwrap();
    assert!(!again.cache_hit, "a corrupted blob was taken as a hit");
    // The warning is in the summary (what `--json` prints), naming the blob and why.
    let w = again.warnings.join("\n");
    assert!(
        w.contains("local cache: cached blob")
            && w.contains("digest mismatch")
            && w.contains("building without it"),
        "warnings: {w:?}"
    );
    assert!(cold.warnings.is_empty(), "{:?}", cold.warnings);
    assert_eq!(again.digest, cold.digest);
    for l in &again.layers {
        let bytes = std::fs::read(blob(&t.path().join("o2"), &l.digest)).unwrap();
        assert_eq!(
            sha256_digest(&bytes),
            l.digest.as_str(),
            "published blob {}",
            l.digest
        );
    }
    // The bad entry was replaced by the rebuild: the next build is a hit again.
    assert!(with_cache("o3").unwrap().cache_hit);
}

/// Two builds at once sharing one cache (and one output parent) both succeed with
/// the same digest; the cache they leave serves a third build.
#[test]
fn concurrent_builds_share_a_cache() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    write_base_layout(&base, "v1");
    let b = format!("oci:{}:v1", base.display());
    let art = artifacts(t.path(), "1");
    let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
    let outs = t.path().join("outs");
    let digests: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let mut o = opts(
                    &b,
                    &format!("oci:{}", outs.join(format!("o{i}")).display()),
                    PurgeMode::Rewrite,
                    &art,
                );
                o.cache = Some(cache.clone());
                s.spawn(move || build(o).map(|s| s.digest))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert_eq!(digests[0], digests[1]);
    let mut o = opts(
        &b,
        &format!("oci:{}", outs.join("o3").display()),
        PurgeMode::Rewrite,
        &art,
    );
    o.cache = Some(cache.clone());
    let third = build(o).unwrap();
    assert!(third.cache_hit);
    assert_eq!(third.digest, digests[0]);
    for o in ["o0", "o1", "o3"] {
        readable(&format!("oci:{}", outs.join(o).display()));
    }
    assert_eq!(scratch_left(&outs), Vec::<String>::new());
    let tmp: Vec<_> = std::fs::read_dir(cache.root().join("tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "cache tmp left: {tmp:?}");
}

/// What a killed build left beside the output is removed by the next build; what
/// is not recognizably ours stays.
#[test]
fn stale_scratch_of_a_dead_build_is_swept() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    write_base_layout(&base, "v1");
    let outs = t.path().join("outs");
    let dead = [
        ".nemoclaw-build-999999999-abcdefgh",
        ".nemoclaw-spill-999999999-abcdefgh",
    ];
    for d in dead {
        std::fs::create_dir_all(outs.join(d).join("blobs/sha256")).unwrap();
    }
    std::fs::write(outs.join(".nemoclaw-build-999999999-abcdefgh.tmp"), b"x").unwrap();
    std::fs::write(outs.join(".nemoclaw-build-notes"), b"mine").unwrap();
    run(
        &format!("oci:{}:v1", base.display()),
        &format!("oci:{}", outs.join("o").display()),
        &artifacts(t.path(), "1"),
    )
    .unwrap();
    assert_eq!(
        scratch_left(&outs),
        vec![".nemoclaw-build-notes".to_string()]
    );
}
