//! The builder-image source against the directory source it must agree with, and
//! the hostile subtrees it must refuse.
use super::*;
use crate::pipeline::{build, BuildOptions, PurgeMode};
use crate::pipeline_tests::{gz, opts, write_layout, write_layout_config};
use crate::testutil::{Raw, TarBuilder};
use serde_json::json;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// The tree every comparison uses, as builder layers below /opt/app: two layers, a
/// whiteout, a hardlink inside the subtree, a setuid file, `a.txt` beside `a/b`
/// (walk order differs from sorted-key order), and files outside the subtree.
fn builder_layers() -> Vec<Vec<u8>> {
    let l0 = TarBuilder::new()
        .dir("opt", 0o755)
        .dir("opt/app", 0o700)
        .dir("opt/app/a", 0o755)
        .file("opt/app/a/b", b"bee", 0o600)
        .file("opt/app/a.txt", b"text", 0o664)
        .file("opt/app/gone.js", b"deleted later", 0o644)
        .file_owned("opt/app/tool", b"#!/bin/sh\n", 0o4755, 1000, 1000)
        .file("opt/app/blob.bin", b"shared", 0o644)
        .file("etc/secret", b"not copied", 0o600)
        .build();
    let l1 = TarBuilder::new()
        .file("opt/app/.wh.gone.js", b"", 0o644)
        .symlink("opt/app/link", "a/b")
        .hardlink("opt/app/copy.bin", "opt/app/blob.bin")
        .file("opt/app/a/b", b"bee2", 0o644)
        .build();
    vec![l0, l1]
}

/// The same files and modes (as they normalize) as a host directory.
fn same_tree_as_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a/b"), b"bee2").unwrap();
    std::fs::write(dir.join("a.txt"), b"text").unwrap();
    std::fs::write(dir.join("tool"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(dir.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("blob.bin"), b"shared").unwrap();
    std::fs::write(dir.join("copy.bin"), b"shared").unwrap();
    symlink("a/b", dir.join("link")).unwrap();
}

fn tar_base(path: &Path) {
    let tar = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .dir("opt", 0o755)
        .build();
    std::fs::write(path, tar).unwrap();
}

/// A file of a built image (every file's bytes captured).
fn read_out(image: &str, path: &str) -> Vec<u8> {
    let r = crate::imageref::ImageRef::parse(image).unwrap();
    let mut img = open_image(&r, &OpenOptions::default()).unwrap();
    let opts = IndexOptions {
        capture: |_, _| true,
        ..IndexOptions::default()
    };
    let fs =
        crate::pipeline::index_base(&mut img, &opts, &crate::progress::Progress::silent()).unwrap();
    fs.read(path).unwrap()
}

fn spec(reference: &str, path: &str) -> BuilderSpec {
    BuilderSpec::new(reference, path).unwrap()
}

fn small_build(t: &Path, out: &str, art: Option<&Path>, img: Option<BuilderSpec>) -> BuildOptions {
    let mut o = opts(
        &format!("tar:{}", t.join("base.tar").display()),
        &format!("oci:{}:v1", t.join(out).display()),
        PurgeMode::Rewrite,
        art,
    );
    o.recipe = crate::recipe::Recipe::parse(
        b"name = \"t\"\n[artifacts]\ndest = \"/opt/app\"\n",
        "t.toml",
        Path::new("."),
    )
    .unwrap();
    o.artifacts_image = img;
    o
}

fn apply_err(layers: &[Vec<u8>], path: &str) -> String {
    let t = tempfile::tempdir().unwrap();
    write_layout(&t.path().join("b"), layers);
    let r = format!("oci:{}", t.path().join("b").display());
    let b = match open(&spec(&r, path), &OpenOptions::default(), false) {
        Ok(b) => b,
        Err(e) => return format!("{e:#}"),
    };
    let err = apply(&mut Rootfs::new(), &b, "/opt/x", (0, 0), t.path()).unwrap_err();
    format!("{err:#}")
}

#[test]
fn builder_digest_equals_the_directory_digest() {
    let t = tempfile::tempdir().unwrap();
    write_layout(&t.path().join("builder"), &builder_layers());
    let dir = t.path().join("dir");
    same_tree_as_dir(&dir);
    let r = format!("oci:{}:latest", t.path().join("builder").display());
    let b = open(&spec(&r, "/opt/app"), &OpenOptions::default(), false).unwrap();
    let mut from_image = Rootfs::new();
    let d1 = apply(&mut from_image, &b, "/opt/x", (0, 0), t.path()).unwrap();
    let mut from_dir = Rootfs::new();
    let d2 = crate::steps::artifacts::apply(&mut from_dir, &dir, "/opt/x", 0, 0, t.path()).unwrap();
    assert_eq!(d1, d2);
    // Whiteout applied, later layer wins, setuid and owners dropped, outside not copied.
    assert!(from_image.get("opt/x/gone.js").is_none());
    assert_eq!(from_image.read("opt/x/a/b").unwrap(), b"bee2");
    assert_eq!(from_image.read("opt/x/copy.bin").unwrap(), b"shared");
    let tool = from_image.get("opt/x/tool").unwrap();
    assert_eq!((tool.mode, tool.uid, tool.gid), (0o755, 0, 0));
    assert_eq!(from_image.get("opt/x").unwrap().mode, 0o755);
    assert!(from_image.get("opt/x/etc").is_none());
    let keys = |fs: &Rootfs| {
        fs.nodes
            .iter()
            .map(|(k, n)| format!("{k} {:?} {:o}", n.kind(), n.mode))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&from_image), keys(&from_dir));
    // A different file content is a different digest.
    std::fs::write(dir.join("a.txt"), b"other").unwrap();
    let d3 =
        crate::steps::artifacts::apply(&mut Rootfs::new(), &dir, "/opt/x", 0, 0, t.path()).unwrap();
    assert_ne!(d1, d3);
}

/// `a.txt` beside `a/b`: a tarball used to hash in sorted-key order, a directory in
/// walk order; now both (and a builder) agree.
#[test]
fn tarball_hashes_in_walk_order() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("dir");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a/b"), b"1").unwrap();
    std::fs::write(dir.join("a.txt"), b"2").unwrap();
    let tar = TarBuilder::new()
        .file("a.txt", b"2", 0o644)
        .dir("a", 0o755)
        .file("a/b", b"1", 0o644)
        .build();
    let p = t.path().join("a.tar.gz");
    std::fs::write(&p, gz(&tar)).unwrap();
    let art = |src: &Path| {
        crate::steps::artifacts::apply(&mut Rootfs::new(), src, "/o", 0, 0, t.path()).unwrap()
    };
    assert_eq!(art(&dir), art(&p));
}

/// The acceptance test: the same files as a builder image and as a directory give
/// the same layers and config; only the manifest's record (naming the builder)
/// differs.
#[test]
fn same_layers_and_config_as_a_directory_build() {
    let t = tempfile::tempdir().unwrap();
    tar_base(&t.path().join("base.tar"));
    write_layout(&t.path().join("builder"), &builder_layers());
    let dir = t.path().join("dir");
    same_tree_as_dir(&dir);
    let r = format!("oci:{}:latest", t.path().join("builder").display());
    let a = build(small_build(t.path(), "from-dir", Some(&dir), None)).unwrap();
    let b = build(small_build(
        t.path(),
        "from-img",
        None,
        Some(spec(&r, "/opt/app")),
    ))
    .unwrap();
    let layers = |s: &crate::pipeline::BuildSummary| {
        s.layers
            .iter()
            .map(|l| l.digest.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(layers(&a), layers(&b));
    assert_eq!(a.config_digest, b.config_digest);
    assert_ne!(a.digest, b.digest, "the record names the builder");
    assert_eq!(a.record.artifacts_digest, b.record.artifacts_digest);
    let rec = b.record.artifacts_image.clone().unwrap();
    assert_eq!(rec.name, "oci:builder:latest");
    assert_eq!(rec.path, "/opt/app");
    assert!(rec.digest.starts_with("sha256:"), "{rec:?}");
    assert!(a.record.artifacts_image.is_none());
    assert!(!a.record.annotation().contains("artifacts_image"));
    let out = format!("oci:{}:v1", t.path().join("from-img").display());
    assert_eq!(read_out(&out, "opt/app/a/b"), b"bee2");
}

/// Artifacts are not cached (the cache holds base and recipe layers): a hit with a
/// changed builder ships the new builder's files, not the cached build's.
#[test]
fn cache_hit_ships_the_current_builder_files() {
    let t = tempfile::tempdir().unwrap();
    tar_base(&t.path().join("base.tar"));
    let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
    let mut digests = Vec::new();
    for (i, content) in [&b"v1"[..], b"v2"].iter().enumerate() {
        let dir = t.path().join(format!("builder{i}"));
        let l = TarBuilder::new()
            .dir("opt/app", 0o755)
            .file("opt/app/x.js", content, 0o644)
            .build();
        write_layout(&dir, &[l]);
        let r = format!("oci:{}", dir.display());
        let mut o = small_build(
            t.path(),
            &format!("out{i}"),
            None,
            Some(spec(&r, "/opt/app")),
        );
        o.cache = Some(cache.clone());
        let s = build(o).unwrap();
        assert_eq!(s.cache_hit, i == 1, "build {i}");
        let out = format!("oci:{}:v1", t.path().join(format!("out{i}")).display());
        assert_eq!(read_out(&out, "opt/app/x.js"), *content);
        digests.push(s.record.artifacts_digest.unwrap());
    }
    assert_ne!(digests[0], digests[1]);
}

/// A character device (`3`) or FIFO (`6`) header with device numbers 1,3.
fn dev(typeflag: u8, name: &[u8]) -> Raw {
    Raw::new(typeflag, name, 0)
        .ustar()
        .field(329, b"0000001\0")
        .field(337, b"0000003\0")
}

#[test]
fn hostile_subtrees_are_refused_naming_path_and_layer() {
    let base = || {
        TarBuilder::new()
            .dir("opt/app", 0o755)
            .file("opt/app/ok", b"1", 0o644)
    };
    let cases: Vec<(TarBuilder, &str)> = vec![
        (
            base().symlink("opt/app/evil", "/etc/shadow"),
            "/opt/app/evil (layer 1 (sha256:",
        ),
        (
            base().symlink("opt/app/up", "../../etc"),
            "escapes the artifact tree",
        ),
        (
            base()
                .file("etc/shadow", b"s", 0o600)
                .hardlink("opt/app/h", "etc/shadow"),
            "hardlink to '/etc/shadow', outside /opt/app",
        ),
        (
            base().raw(dev(b'3', b"opt/app/tty"), b""),
            "/opt/app/tty (layer 1 (sha256:",
        ),
        (
            base().raw(dev(b'6', b"opt/app/fifo"), b""),
            "a Fifo; artifacts may hold only",
        ),
    ];
    for (tar, want) in cases {
        let err = apply_err(&[tar.build()], "/opt/app");
        assert!(err.contains(want), "want {want:?} in: {err}");
    }
    let err = apply_err(&[base().build()], "/opt/app/ok");
    assert!(
        err.contains("/opt/app/ok is a File, not a directory"),
        "{err}"
    );
    let err = apply_err(&[base().build()], "/opt/none");
    assert!(err.contains("/opt/none does not exist"), "{err}");
    let err = apply_err(&[base().symlink("srv", "opt/app").build()], "/srv");
    assert!(err.contains("/srv is a Symlink, not a directory"), "{err}");
    // A file replaced above a hardlink to it: the link's bytes are not in the model.
    let l0 = base()
        .file("opt/app/t", b"old", 0o644)
        .hardlink("opt/app/h", "opt/app/t");
    let l1 = TarBuilder::new().file("opt/app/t", b"new", 0o644);
    let err = apply_err(&[l0.build(), l1.build()], "/opt/app");
    assert!(err.contains("which a later layer replaced"), "{err}");
}

#[test]
fn references_and_paths_are_checked() {
    for (r, p, want) in [
        ("oci:x", "opt/app", "absolute, normalized"),
        ("oci:x", "/opt/../etc", "'..'"),
        ("oci:x", "/opt//app", "absolute, normalized"),
        ("oci:x", "/opt/app/", "absolute, normalized"),
        ("oci:x", "/", "absolute, normalized"),
        ("tar:x.tar", "/opt", "--artifacts FILE.tar"),
        ("nope", "/opt", "--artifacts-image"),
    ] {
        let err = format!("{:#}", BuilderSpec::new(r, p).unwrap_err());
        assert!(err.contains(want), "{r} {p}: want {want:?} in: {err}");
    }
    let tag = spec("registry://127.0.0.1:9/b:latest", "/opt/app");
    assert!(tag.by_tag());
    assert!(!spec("registry://127.0.0.1:9/b@sha256:0000000000000000000000000000000000000000000000000000000000000000", "/opt/app").by_tag());
    // --strict refuses a tag before asking the registry (nothing listens on port 9).
    let err = open(&tag, &OpenOptions::default(), true).err().unwrap();
    assert!(format!("{err:#}").contains("--strict refuses"), "{err:#}");
    // A recipe without [artifacts]: refused before the builder is read.
    let t = tempfile::tempdir().unwrap();
    tar_base(&t.path().join("base.tar"));
    let mut o = small_build(t.path(), "out", None, Some(tag));
    o.recipe = crate::recipe::Recipe::parse(b"name = \"t\"\n", "t.toml", Path::new(".")).unwrap();
    let err = format!("{:#}", build(o).unwrap_err());
    assert!(
        err.contains("the recipe has no [artifacts] section"),
        "{err}"
    );
    assert!(!t.path().join("out").exists());
}

/// An image-index builder gives the build's platform its own manifest's subtree.
#[test]
fn index_builder_gives_each_platform_its_manifest() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("multi");
    let descs = crate::pipeline_tests::write_index_layout(&dir, |arch| {
        TarBuilder::new()
            .dir("opt/app", 0o755)
            .file("opt/app/arch", arch.as_bytes(), 0o644)
            .build()
    });
    let r = format!("oci:{}:latest", dir.display());
    for arch in ["amd64", "arm64"] {
        let o = OpenOptions {
            platform: Some(format!("linux/{arch}")),
            ..Default::default()
        };
        let b = open(&spec(&r, "/opt/app"), &o, false).unwrap();
        let mut fs = Rootfs::new();
        apply(&mut fs, &b, "/opt/x", (0, 0), t.path()).unwrap();
        assert_eq!(fs.read("opt/x/arch").unwrap(), arch.as_bytes());
        assert_eq!(b.record.digest, descs_digest(&descs, arch));
    }
}

fn descs_digest(descs: &[serde_json::Value], arch: &str) -> String {
    descs
        .iter()
        .find(|d| d["platform"]["architecture"] == arch)
        .and_then(|d| d["digest"].as_str())
        .unwrap()
        .to_string()
}

/// `check_link` judges a target by its text alone: `a -> .` then `up -> a/a/../..`
/// stays "inside" by the text yet names `/`, and `shadow -> up/etc/shadow` is then
/// /etc/shadow. Both sources must refuse the chain; one that stays inside is fine.
#[test]
fn symlink_chains_that_climb_out_are_refused() {
    let chain = TarBuilder::new()
        .dir("opt", 0o755)
        .dir("opt/app", 0o755)
        .symlink("opt/app/a", ".")
        .symlink("opt/app/up", "a/a/../..")
        .symlink("opt/app/shadow", "up/etc/shadow")
        .build();
    let err = apply_err(&[chain], "/opt/app");
    assert!(err.contains("escapes the artifact tree"), "{err}");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    symlink(".", dir.join("a")).unwrap();
    symlink("a/a/../..", dir.join("up")).unwrap();
    let err = crate::steps::artifacts::apply(&mut Rootfs::new(), &dir, "/opt/x", 0, 0, t.path())
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("escapes the artifact tree"),
        "{err:#}"
    );
    // Through a link and back down, still inside: accepted.
    let inside = TarBuilder::new()
        .dir("opt/app", 0o755)
        .dir("opt/app/sub", 0o755)
        .file("opt/app/sub/f", b"1", 0o644)
        .symlink("opt/app/a", ".")
        .symlink("opt/app/l", "a/sub/../sub/f")
        .build();
    let t = tempfile::tempdir().unwrap();
    write_layout(&t.path().join("b"), &[inside]);
    let r = format!("oci:{}", t.path().join("b").display());
    let b = open(&spec(&r, "/opt/app"), &OpenOptions::default(), false).unwrap();
    let mut fs = Rootfs::new();
    apply(&mut fs, &b, "/opt/x", (0, 0), t.path()).unwrap();
    assert_eq!(fs.resolve("opt/x/l").as_deref(), Some("opt/x/sub/f"));
}

/// A hardlink becomes a copy in the artifacts layer, but its bytes were spilled once
/// per target: one file and many links to it wrote far more than `max_bytes`.
#[test]
fn hardlink_copies_count_against_the_byte_limit() {
    let mut tb = TarBuilder::new()
        .dir("opt", 0o755)
        .dir("opt/app", 0o755)
        .file("opt/app/f", &[7u8; 1000], 0o644);
    for i in 0..10 {
        tb = tb.hardlink(&format!("opt/app/h{i}"), "opt/app/f");
    }
    let t = tempfile::tempdir().unwrap();
    write_layout(&t.path().join("b"), &[tb.build()]);
    let r = format!("oci:{}", t.path().join("b").display());
    let b = open(&spec(&r, "/opt/app"), &OpenOptions::default(), false).unwrap();
    let limits = crate::steps::artifacts::Limits {
        max_bytes: 5000,
        ..crate::steps::artifacts::LIMITS
    };
    let mut c = Collected::new("b".into(), t.path(), &limits).unwrap();
    let err = format!("{:#}", collect(&mut c, &b).unwrap_err());
    assert!(
        err.contains("the artifacts exceed the limit of 5000 bytes"),
        "{err}"
    );
    let limits = crate::steps::artifacts::Limits {
        max_bytes: 11000,
        ..crate::steps::artifacts::LIMITS
    };
    let mut c = Collected::new("b".into(), t.path(), &limits).unwrap();
    collect(&mut c, &b).unwrap();
}

/// `h2 -> h1 -> f` when h2 was linked, then a later layer points h1 at `g`: h2 still
/// shares f's inode in the builder, but the model follows today's h1 to `g`. A hop
/// replaced above the link is refused like a replaced target.
#[test]
fn hardlink_through_a_later_replaced_hop_is_refused() {
    let l0 = TarBuilder::new()
        .dir("opt", 0o755)
        .dir("opt/app", 0o755)
        .file("opt/app/f", b"old", 0o644)
        .file("opt/app/g", b"other", 0o644);
    let l1 = TarBuilder::new().hardlink("opt/app/h1", "opt/app/f");
    let l2 = TarBuilder::new().hardlink("opt/app/h2", "opt/app/h1");
    let l3 = TarBuilder::new().hardlink("opt/app/h1", "opt/app/g");
    let err = apply_err(
        &[l0.build(), l1.build(), l2.build(), l3.build()],
        "/opt/app",
    );
    assert!(err.contains("which a later layer replaced"), "{err}");
}

/// The toolchain gate judges the builder's files on a miss and on a cache hit, and
/// a refused build leaves no output.
#[test]
fn gate_refuses_builder_toolchain_with_and_without_a_cache_hit() {
    let t = tempfile::tempdir().unwrap();
    tar_base(&t.path().join("base.tar"));
    let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
    let good = t.path().join("good");
    let l = TarBuilder::new()
        .dir("opt/app", 0o755)
        .file("opt/app/x.js", b"1", 0o644)
        .build();
    write_layout(&good, &[l]);
    let bad = t.path().join("bad");
    let l = TarBuilder::new()
        .dir("opt/app", 0o755)
        .dir("opt/app/bin", 0o755)
        .file("opt/app/bin/gcc", b"\x7fELF\x02\x01\x01rest", 0o755)
        .build();
    write_layout(&bad, &[l]);
    let run = |b: &Path, out: &str| {
        let mut o = small_build(
            t.path(),
            out,
            None,
            Some(spec(&format!("oci:{}", b.display()), "/opt/app")),
        );
        o.recipe = crate::recipe::Recipe::parse(
            b"name = \"t\"\n[packages]\nforbid_elf = ['^gcc$']\n[artifacts]\ndest = \"/opt/app\"\n",
            "t.toml",
            Path::new("."),
        )
        .unwrap();
        o.cache = Some(cache.clone());
        build(o)
    };
    let err = format!("{:#}", run(&bad, "miss").unwrap_err());
    assert!(err.contains("opt/app/bin/gcc"), "{err}");
    assert!(!t.path().join("miss").exists());
    assert!(!run(&good, "prime").unwrap().cache_hit);
    let err = format!("{:#}", run(&bad, "hit").unwrap_err());
    assert!(
        err.contains("artifacts checked") && err.contains("opt/app/bin/gcc"),
        "{err}"
    );
    assert!(!t.path().join("hit").exists());
}

/// The subtree is looked up, never followed: a symlinked directory or parent in
/// the builder is an error, and entries below a symlink are refused when indexing.
#[test]
fn symlinked_subtree_or_parent_is_not_followed() {
    let etc = || {
        TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/shadow", b"s", 0o600)
    };
    let err = apply_err(&[etc().symlink("opt", "/etc").build()], "/opt/shadow");
    assert!(err.contains("/opt/shadow does not exist"), "{err}");
    let err = apply_err(&[etc().symlink("opt", "/").build()], "/opt/etc");
    assert!(err.contains("/opt/etc does not exist"), "{err}");
    let err = apply_err(
        &[etc()
            .symlink("opt", "/")
            .file("opt/etc/x", b"1", 0o644)
            .build()],
        "/opt/etc",
    );
    assert!(err.contains("which is a symlink"), "{err}");
    // A subtree in layer 0 whose parent layer 1 turns into a symlink is gone.
    let l0 = TarBuilder::new()
        .dir("opt/app", 0o755)
        .file("opt/app/f", b"1", 0o644)
        .build();
    let l1 = TarBuilder::new().symlink("opt", "/etc").build();
    let err = apply_err(&[l0, etc().build(), l1], "/opt/app");
    assert!(err.contains("/opt/app does not exist"), "{err}");
}

/// Layers need not carry their parent directories (runtimes create them): a
/// builder whose `opt/app/x/y` has no `opt/app/x` (or no `opt/app`) entry gives the
/// same tree, owners and artifacts digest as the directory holding `x/y`.
#[test]
fn implicit_parent_directories_are_placed_like_walked_ones() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("dir");
    std::fs::create_dir_all(dir.join("x")).unwrap();
    std::fs::write(dir.join("x/y"), b"1").unwrap();
    let mut from_dir = Rootfs::new();
    let want =
        crate::steps::artifacts::apply(&mut from_dir, &dir, "/opt/x", 7, 8, t.path()).unwrap();
    for l in [
        TarBuilder::new()
            .dir("opt/app", 0o755)
            .file("opt/app/x/y", b"1", 0o644),
        TarBuilder::new().file("opt/app/x/y", b"1", 0o644),
    ] {
        let d = tempfile::tempdir().unwrap();
        write_layout(&d.path().join("b"), &[l.build()]);
        let r = format!("oci:{}", d.path().join("b").display());
        let b = open(&spec(&r, "/opt/app"), &OpenOptions::default(), false).unwrap();
        let mut fs = Rootfs::new();
        let got = apply(&mut fs, &b, "/opt/x", (7, 8), d.path()).unwrap();
        let x = fs.get("opt/x/x").unwrap();
        assert_eq!((x.kind(), x.uid, x.gid), (Kind::Dir, 7, 8));
        assert_eq!(got, want);
    }
}

/// `linux/arm` and `linux/arm64` are different machines although one string starts
/// with the other: the mismatch warning compares platforms component by component.
#[test]
fn arm_builder_for_arm64_build_warns() {
    let t = tempfile::tempdir().unwrap();
    let image = |name: &str, arch: &str, tar: Vec<u8>| {
        let diff = crate::digest::sha256_digest(&tar);
        write_layout_config(
            &t.path().join(name),
            &[tar],
            json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff]}}),
        );
        format!("oci:{}", t.path().join(name).display())
    };
    let base_tar = || {
        TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
            .file("etc/group", b"root:x:0:\n", 0o644)
            .build()
    };
    let app = || {
        TarBuilder::new()
            .dir("opt/app", 0o755)
            .file("opt/app/x.js", b"1", 0o644)
            .build()
    };
    // (`arm` bases are refused since multi-arch: amd64 and arm64 only.)
    for (base_arch, builder_arch, warns) in [
        ("amd64", "arm64", true),
        ("arm64", "arm", true),
        ("arm64", "arm64", false),
    ] {
        let base = image(&format!("base-{base_arch}"), base_arch, base_tar());
        let b = image(&format!("builder-{builder_arch}"), builder_arch, app());
        let out = format!("oci:{}:v1", t.path().join("out").display());
        let mut o = opts(&base, &out, PurgeMode::Rewrite, None);
        o.recipe = crate::recipe::Recipe::parse(
            b"name = \"t\"\n[artifacts]\ndest = \"/opt/app\"\n",
            "t.toml",
            Path::new("."),
        )
        .unwrap();
        o.artifacts_image = Some(spec(&b, "/opt/app"));
        let s = build(o).unwrap();
        let warned = s.warnings.iter().any(|w| w.contains("may not run"));
        assert_eq!(
            warned, warns,
            "{base_arch} / {builder_arch}: {:?}",
            s.warnings
        );
        let codes: Vec<_> = s.warning_details.iter().map(|w| w.code).collect();
        let want = if warns {
            vec![crate::progress::WarningCode::BuilderPlatform]
        } else {
            vec![]
        };
        assert_eq!(codes, want, "{base_arch} / {builder_arch}");
        std::fs::remove_dir_all(t.path().join("out")).unwrap();
    }
}

/// A builder image named by a registry tag: the build warns (`mutable-tag`), and
/// `--strict` refuses it before any work.
#[test]
fn builder_by_tag_warns_and_strict_refuses() {
    use crate::progress::{Progress, WarningCode};
    let t = tempfile::tempdir().unwrap();
    tar_base(&t.path().join("base.tar"));
    write_layout(&t.path().join("builder"), &builder_layers());
    let reg = crate::testutil::TinyRegistry::serve(&t.path().join("builder"));
    let by_tag = format!("registry://{}/builder:latest", reg.addr);
    let mut o = small_build(t.path(), "out", None, Some(spec(&by_tag, "/opt/app")));
    o.open.registry.cache_dir = Some(t.path().join("cache"));
    let (p, events) = Progress::collecting();
    o.progress = p;
    let s = build(o).unwrap();
    assert_eq!(events.warning_codes(), vec![WarningCode::MutableTag]);
    let codes: Vec<_> = s.warning_details.iter().map(|w| w.code).collect();
    assert_eq!(codes, vec![WarningCode::MutableTag]);
    assert!(s.warnings[0].contains(&by_tag), "{:?}", s.warnings);
    assert_eq!(
        read_out(
            &format!("oci:{}:v1", t.path().join("out").display()),
            "opt/app/a/b"
        ),
        b"bee2"
    );
    let mut o = small_build(t.path(), "strict", None, Some(spec(&by_tag, "/opt/app")));
    o.open.registry.cache_dir = Some(t.path().join("cache"));
    o.strict = true;
    let e = build(o).expect_err("--strict takes a builder by tag");
    assert!(
        format!("{e:#}").contains("--strict refuses a builder not pinned"),
        "{e:#}"
    );
    assert!(!t.path().join("strict").exists());
}

/// A hardlink hop must land strictly below the subtree root: `opt/xy` shares the
/// prefix of `opt/x` but is outside it.
#[test]
fn hardlink_hops_need_a_path_boundary() {
    let mut fs = Rootfs::new();
    for d in ["opt", "opt/x", "opt/xy"] {
        fs.insert(d, Node::dir(0o755, 0, 0)).unwrap();
    }
    fs.insert("opt/x/f", Node::file(0o644, 0, 0, b"in".to_vec()))
        .unwrap();
    fs.insert("opt/xy/f", Node::file(0o644, 0, 0, b"out".to_vec()))
        .unwrap();
    let hard = |t: &str| Node::new(crate::rootfs::Body::hardlink(t), 0o644, 0, 0);
    fs.insert("opt/x/in", hard("opt/x/f")).unwrap();
    fs.insert("opt/x/out", hard("opt/xy/f")).unwrap();
    fs.insert("opt/x/root", hard("opt/x")).unwrap();
    let (file, _) = link_in_subtree(&fs, "opt/x/in", "opt/x").unwrap();
    assert_eq!(file, "opt/x/f");
    let err = link_in_subtree(&fs, "opt/x/out", "opt/x").unwrap_err();
    assert!(err.contains("outside /opt/x"), "{err}");
    let err = link_in_subtree(&fs, "opt/x/root", "opt/x").unwrap_err();
    assert!(err.contains("'/opt/x', outside /opt/x"), "{err}");
}

/// `verify` rebuilds with the recorded digest: a tag is then read at that digest,
/// not wherever the tag points now (here: a digest the registry does not have).
#[test]
fn a_recorded_digest_pins_a_tag() {
    let t = tempfile::tempdir().unwrap();
    write_layout(&t.path().join("builder"), &builder_layers());
    let reg = crate::testutil::TinyRegistry::serve(&t.path().join("builder"));
    let mut s = spec(
        &format!("registry://{}/builder:latest", reg.addr),
        "/opt/app",
    );
    let mut o = OpenOptions::default();
    o.registry.cache_dir = Some(t.path().join("cache"));
    let b = open(&s, &o, false).unwrap();
    assert_eq!(b.record.name, b.image.name);
    let pinned = b.record.digest.clone();
    s.digest = Some(pinned.clone());
    let b = open(&s, &o, true).expect("pinned by the recorded digest: --strict accepts it");
    assert_eq!(b.record.digest, pinned);
    assert_eq!(b.record.name, s.reference);
    s.digest = Some(format!("sha256:{}", "0".repeat(64)));
    assert!(
        open(&s, &o, false).is_err(),
        "read at the recorded digest, not the tag"
    );
}
