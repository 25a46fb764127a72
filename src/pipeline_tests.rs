//! End-to-end tests of the pipeline on small generated images: whiteouts in
//! multi-layer bases, reproducibility, and hostile input (clear errors, no output).
use crate::compress::{Algorithm, Settings};
use crate::digest::sha256_digest;
use crate::imageref::ImageRef;
use crate::pipeline::{build, index_base, BuildOptions, PurgeMode};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::rootfs::{IndexOptions, Kind};
use crate::source::{open_image, OpenOptions};
use crate::testutil::TarBuilder;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes an OCI layout with the given uncompressed layers (stored gzip'd).
pub(crate) fn write_layout(dir: &Path, layers: &[Vec<u8>]) {
    write_layout_with(dir, layers, |z| z)
}

/// Like `write_layout`, with `mangle` applied to each compressed blob *before* it
/// is hashed: descriptors stay consistent, only the stream itself is broken.
fn write_layout_with(dir: &Path, layers: &[Vec<u8>], mangle: impl Fn(Vec<u8>) -> Vec<u8>) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    write_layout_full(dir, layers, &config, mangle)
}

/// Like `write_layout`, with the given image config (its diff_ids must match).
/// An OCI layout whose tag `latest` names an image index of one linux/amd64 and one
/// linux/arm64 image, each of one layer `layer(arch)`; returns the index's descriptors.
pub(crate) fn write_index_layout(
    dir: &Path,
    layer: impl Fn(&str) -> Vec<u8>,
) -> Vec<serde_json::Value> {
    let mut descs = Vec::new();
    for arch in ["amd64", "arm64"] {
        let l = layer(arch);
        let diff = sha256_digest(&l);
        write_layout_config(
            dir,
            &[l],
            json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff]}}),
        );
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let mut d = idx["manifests"][0].clone();
        d["platform"] = json!({"os": "linux", "architecture": arch});
        d.as_object_mut().unwrap().remove("annotations");
        descs.push(d);
    }
    let index = serde_json::to_vec(&json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs}))
    .unwrap();
    let id = sha256_digest(&index);
    std::fs::write(dir.join("blobs/sha256").join(&id[7..]), &index).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": id,
            "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
        .unwrap(),
    )
    .unwrap();
    descs
}

pub(crate) fn write_layout_config(dir: &Path, layers: &[Vec<u8>], config: serde_json::Value) {
    write_layout_full(dir, layers, &config, |z| z)
}

fn write_layout_full(
    dir: &Path,
    layers: &[Vec<u8>],
    config: &serde_json::Value,
    mangle: impl Fn(Vec<u8>) -> Vec<u8>,
) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        std::fs::write(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            bytes,
        )
        .unwrap();
        d
    };
    let mut descs = vec![];
    for l in layers {
        let z = mangle(gz(l));
        let d = put(&z);
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": z.len()}));
    }
    let config = serde_json::to_vec(config).unwrap();
    let cd = put(&config);
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()}, "layers": descs})).unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})).unwrap(),
    )
    .unwrap();
}

const RECIPE: &str = r#"
name = "t"
[image]
user = "nobody"
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

pub(crate) fn opts(
    base: &str,
    out: &str,
    mode: PurgeMode,
    artifacts: Option<&Path>,
) -> BuildOptions {
    BuildOptions {
        base: ImageRef::parse(base).unwrap(),
        output: ImageRef::parse(out).unwrap(),
        recipe: Recipe::parse(RECIPE.as_bytes(), "t.toml", Path::new(".")).unwrap(),
        artifacts: artifacts.map(Path::to_path_buf),
        artifacts_image: None,
        purge_mode: mode,
        compression: Settings::new(Algorithm::Gzip, None, Some(2)).unwrap(),
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

fn two_layer_base(dir: &Path) {
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    let l0 = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", passwd, 0o644)
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .file("etc/issue", b"Debian", 0o644)
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/a", b"a", 0o644)
        .file("usr/share/doc/b", b"b", 0o644)
        .file_owned("usr/bin/tool", b"\x7fELF..", 0o4755, 0, 0)
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .build();
    let l1 = TarBuilder::new()
        .file("etc/.wh.issue", b"", 0o644)
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/.wh..wh..opq", b"", 0o644)
        .file("usr/share/doc/new", b"n", 0o644)
        .file("usr/share/doc/b", b"b2", 0o644)
        .build();
    write_layout(dir, &[l0, l1]);
}

pub(crate) fn final_fs(image: &str) -> crate::rootfs::Rootfs {
    let mut img = open_image(&ImageRef::parse(image).unwrap(), &OpenOptions::default()).unwrap();
    index_base(&mut img, &IndexOptions::default(), &Progress::silent()).unwrap()
}

#[test]
fn multilayer_whiteouts_in_both_modes() {
    let t = tempfile::tempdir().unwrap();
    two_layer_base(&t.path().join("base"));
    let art = t.path().join("art");
    std::fs::create_dir_all(art.join("dist")).unwrap();
    std::fs::write(art.join("dist/x.js"), b"1").unwrap();
    for mode in [PurgeMode::Rewrite, PurgeMode::Whiteout] {
        let out = t.path().join(format!("out-{mode:?}"));
        let s = build(opts(
            &format!("oci:{}:latest", t.path().join("base").display()),
            &format!("oci:{}:v1", out.display()),
            mode,
            Some(&art),
        ))
        .unwrap();
        assert_eq!(s.layers.len(), 4, "{mode:?}: base 2 + recipe + artifacts");
        let fs = final_fs(&format!("oci:{}:v1", out.display()));
        assert!(
            fs.get("etc/issue").is_none(),
            "{mode:?}: whited-out file reappeared"
        );
        let doc: Vec<&str> = fs.descendants("usr/share/doc").map(|(k, _)| k).collect();
        assert_eq!(
            doc,
            vec!["usr/share/doc/new"],
            "{mode:?}: opaque dir / removed file"
        );
        assert_eq!(fs.read("etc/motd").unwrap(), b"hi\n");
        assert_eq!(
            fs.get("usr/bin/tool").unwrap().mode,
            0o4755,
            "setuid bit kept"
        );
        assert_eq!(fs.get("usr/bin/tool2").unwrap().kind(), Kind::Hardlink);
        assert_eq!(fs.get("opt/app/dist/x.js").unwrap().mode, 0o644);
        if mode == PurgeMode::Whiteout {
            let base = final_fs(&format!("oci:{}:latest", t.path().join("base").display()));
            assert!(base.get("usr/share/doc/b").is_some());
        }
    }
}

#[test]
fn same_inputs_same_digest_and_cache_agrees() {
    let t = tempfile::tempdir().unwrap();
    two_layer_base(&t.path().join("base"));
    let base = format!("oci:{}:latest", t.path().join("base").display());
    let art = t.path().join("art");
    std::fs::create_dir_all(art.join("dist")).unwrap();
    std::fs::write(art.join("dist/x.js"), b"1").unwrap();
    let a = build(opts(
        &base,
        &format!("oci:{}", t.path().join("a").display()),
        PurgeMode::Rewrite,
        Some(&art),
    ))
    .unwrap();
    // Different mtimes on the artifacts, different output dir, a cache: same digest.
    let f = std::fs::File::options()
        .write(true)
        .open(art.join("dist/x.js"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .unwrap();
    let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
    let mut o = opts(
        &base,
        &format!("oci:{}", t.path().join("b").display()),
        PurgeMode::Rewrite,
        Some(&art),
    );
    o.cache = Some(cache.clone());
    let b = build(o).unwrap();
    assert!(!b.cache_hit);
    let mut o = opts(
        &base,
        &format!("oci-archive:{}", t.path().join("c.tar").display()),
        PurgeMode::Rewrite,
        Some(&art),
    );
    o.cache = Some(cache);
    let c = build(o).unwrap();
    assert!(c.cache_hit);
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.digest, c.digest);
    // Changing an artifact changes the digest.
    std::fs::write(art.join("dist/x.js"), b"2").unwrap();
    let d = build(opts(
        &base,
        &format!("oci:{}", t.path().join("d").display()),
        PurgeMode::Rewrite,
        Some(&art),
    ))
    .unwrap();
    assert_ne!(a.digest, d.digest);
}

fn expect_error(base: &str, out: &Path, needle: &str) {
    let err = build(opts(
        base,
        &format!("oci:{}", out.display()),
        PurgeMode::Rewrite,
        None,
    ))
    .err()
    .unwrap_or_else(|| panic!("build of {base} should fail"));
    let msg = format!("{err:#}");
    assert!(
        msg.contains(needle),
        "error for {base} should mention '{needle}': {msg}"
    );
    assert!(
        !out.exists(),
        "a failed build must not leave {}",
        out.display()
    );
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".nemoclaw-build")
        })
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn hostile_input_is_a_clear_error_with_no_output() {
    let t = tempfile::tempdir().unwrap();
    let outdir = t.path().join("outs");
    std::fs::create_dir_all(&outdir).unwrap();
    // ../../etc/x in a layer
    let evil = TarBuilder::new()
        .raw_file("../../etc/x", b"x", 0o644)
        .build();
    write_layout(&t.path().join("evil"), &[evil]);
    expect_error(
        &format!("oci:{}", t.path().join("evil").display()),
        &outdir.join("o1"),
        "unsafe entry '../../etc/x'",
    );
    // truncated gzip stream, with a descriptor that matches the truncated bytes
    let good = TarBuilder::new()
        .file("etc/passwd", &[b'x'; 4000], 0o644)
        .build();
    let tdir = t.path().join("trunc");
    write_layout_with(&tdir, std::slice::from_ref(&good), |z| {
        z[..z.len() / 2].to_vec()
    });
    expect_error(
        &format!("oci:{}", tdir.display()),
        &outdir.join("o2"),
        "layer 1",
    );
    // digest mismatch (same size, one byte flipped after the layout was written)
    let ddir = t.path().join("digest");
    write_layout(&ddir, &[good]);
    let layer = std::fs::read_dir(ddir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    let n = bytes.len();
    bytes[n - 9] ^= 0xff;
    std::fs::write(&layer, &bytes).unwrap();
    expect_error(
        &format!("oci:{}", ddir.display()),
        &outdir.join("o3"),
        "digest mismatch",
    );
    // bad JSON index
    let jdir = t.path().join("json");
    std::fs::create_dir_all(&jdir).unwrap();
    std::fs::write(
        jdir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        jdir.join("index.json"),
        b"{\"schemaVersion\": 2, \"manifests\": [",
    )
    .unwrap();
    expect_error(
        &format!("oci:{}", jdir.display()),
        &outdir.join("o4"),
        "index.json",
    );
    // escaping symlink parent in a tar base
    let via = TarBuilder::new()
        .symlink("evil", "/etc")
        .file("evil/passwd", b"x", 0o644)
        .build();
    let tar = t.path().join("via.tar");
    std::fs::write(&tar, via).unwrap();
    expect_error(
        &format!("tar:{}", tar.display()),
        &outdir.join("o5"),
        "symlink",
    );
}

// ---------------------------------------------------------------- the hardening gate ----
// A build that would ship a compiler must fail, naming the file, whatever the file is
// called, however it is linked, wherever it comes from (base or artifacts), cached or not.

/// A minimal recipe carrying the shipped recipe's `forbid` and `forbid_elf` rules (and
/// nothing else that could fail a build), so each case tests the real rules.
fn gate_recipe() -> Recipe {
    let mut r = Recipe::parse(
        b"name = \"gate\"\n[image]\nuser = \"nobody\"\n[artifacts]\ndest = \"/opt/app\"\n",
        "gate.toml",
        Path::new("."),
    )
    .unwrap();
    let shipped = Recipe::load(None).unwrap();
    assert!(!shipped.packages.forbid.is_empty() && !shipped.packages.forbid_elf.is_empty());
    r.packages.forbid = shipped.packages.forbid;
    r.packages.forbid_elf = shipped.packages.forbid_elf;
    r
}

const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0 not really a program";

/// One-layer OCI layout: accounts plus whatever `extra` adds.
fn gate_base(dir: &Path, extra: impl FnOnce(TarBuilder) -> TarBuilder) {
    let l = TarBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .dir("usr/bin", 0o755)
        .file("usr/bin/env", ELF, 0o755);
    write_layout(dir, &[extra(l).build()]);
}

fn gate_opts(base: &Path, out: &Path, mode: PurgeMode, art: Option<&Path>) -> BuildOptions {
    let mut o = opts(
        &format!("oci:{}:latest", base.display()),
        &format!("oci:{}:v1", out.display()),
        mode,
        art,
    );
    o.recipe = gate_recipe();
    o
}

/// Builds and expects the hardening gate to fail naming every path in `named`;
/// returns the message. No output may be left behind.
fn expect_gate(case: &str, o: BuildOptions, named: &[&str]) -> String {
    let out = match &o.output {
        ImageRef::OciDir { path, .. } => path.clone(),
        other => panic!("unexpected output {other}"),
    };
    let what = format!("{case} ({} -> {})", o.base, o.output);
    let err = match build(o) {
        Ok(s) => panic!("{what}: must fail the hardening gate, built {}", s.digest),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("break the recipe's hardening rules")
            || err.contains("breaks the recipe's hardening rules"),
        "{what}: not the gate error: {err}"
    );
    for n in named {
        assert!(err.contains(n), "{what}: the error must name {n}: {err}");
    }
    assert!(
        !out.exists(),
        "{what}: a failed build left {}",
        out.display()
    );
    err
}

#[test]
fn gate_fails_on_compilers_kept_in_the_base() {
    type Case = (
        &'static str,
        fn(TarBuilder) -> TarBuilder,
        &'static [&'static str],
    );
    let cases: [Case; 5] = [
        (
            "gcc on PATH",
            |b| b.file("usr/bin/gcc", ELF, 0o755),
            &["/usr/bin/gcc"],
        ),
        (
            "renamed compiler and a hardlink cc to it",
            |b| {
                b.file("usr/bin/x86_64-linux-gnu-gcc-12", ELF, 0o755)
                    .hardlink("usr/bin/cc", "usr/bin/x86_64-linux-gnu-gcc-12")
            },
            &["/usr/bin/x86_64-linux-gnu-gcc-12", "/usr/bin/cc"],
        ),
        (
            "compiler proper outside PATH",
            |b| b.file("usr/libexec/gcc/x86_64-linux-gnu/12/cc1", ELF, 0o755),
            &["/usr/libexec/gcc/x86_64-linux-gnu/12/cc1"],
        ),
        (
            "hardlink named ld to an innocently named ELF, outside PATH",
            |b| {
                b.file("opt/tc/tool", ELF, 0o755)
                    .hardlink("opt/tc/ld", "opt/tc/tool")
            },
            &["/opt/tc/ld"],
        ),
        (
            "gcc on PATH as a symlink to an innocently named ELF",
            |b| {
                b.file("usr/lib/tc/tool", ELF, 0o755)
                    .symlink("usr/bin/gcc", "../lib/tc/tool")
            },
            &["/usr/bin/gcc"],
        ),
    ];
    let t = tempfile::tempdir().unwrap();
    for (i, (what, add, named)) in cases.into_iter().enumerate() {
        let base = t.path().join(format!("base{i}"));
        gate_base(&base, add);
        let cache = crate::cache::Cache::open(Some(&t.path().join(format!("cache{i}")))).unwrap();
        for mode in [PurgeMode::Rewrite, PurgeMode::Whiteout] {
            // Twice with a cache: a failed build must not leave a cache entry to hit.
            for attempt in 0..2 {
                let out = t.path().join(format!("out{i}-{mode:?}-{attempt}"));
                let mut o = gate_opts(&base, &out, mode, None);
                o.cache = (attempt == 1).then(|| cache.clone());
                let err = expect_gate(what, o, named);
                assert!(err.contains("the result breaks"), "{what}: {err}");
            }
        }
    }
}

#[test]
fn gate_fails_on_compilers_in_the_artifacts_with_and_without_a_cache_hit() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    gate_base(&base, |b| b);
    let good = t.path().join("good");
    std::fs::create_dir_all(good.join("bin")).unwrap();
    std::fs::write(good.join("bin/app"), ELF).unwrap();
    // The same tree as a tar file: artifacts come as a directory or a tarball.
    let bad_tar = t.path().join("bad.tar");
    std::fs::write(
        &bad_tar,
        TarBuilder::new()
            .file("bin/app", ELF, 0o755)
            .file("bin/x86_64-linux-gnu-ld-2.40", ELF, 0o755)
            .build(),
    )
    .unwrap();
    type Bad = (&'static str, fn(&Path), &'static [&'static str]);
    let bad_dirs: [Bad; 3] = [
        (
            "gcc in the artifacts",
            |d| std::fs::write(d.join("bin/gcc"), ELF).unwrap(),
            &["/opt/app/bin/gcc"],
        ),
        (
            "renamed assembler",
            |d| std::fs::write(d.join("bin/x86_64-linux-gnu-as"), ELF).unwrap(),
            &["/opt/app/bin/x86_64-linux-gnu-as"],
        ),
        (
            "hardlink cc to an innocently named ELF",
            |d| std::fs::hard_link(d.join("bin/app"), d.join("bin/cc")).unwrap(),
            &["/opt/app/bin/cc"],
        ),
    ];
    let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
    for mode in [PurgeMode::Rewrite, PurgeMode::Whiteout] {
        // Fill the cache with a good build: the next ones are cache hits.
        let mut o = gate_opts(
            &base,
            &t.path().join(format!("good-{mode:?}")),
            mode,
            Some(&good),
        );
        o.cache = Some(cache.clone());
        build(o).unwrap();
        let mut cases: Vec<(String, PathBuf, &[&str])> = vec![(
            "tarball with a renamed linker".into(),
            bad_tar.clone(),
            &["/opt/app/bin/x86_64-linux-gnu-ld-2.40"],
        )];
        for (i, (what, add, named)) in bad_dirs.iter().enumerate() {
            let d = t.path().join(format!("bad{i}-{mode:?}"));
            std::fs::create_dir_all(d.join("bin")).unwrap();
            std::fs::write(d.join("bin/app"), ELF).unwrap();
            add(&d);
            cases.push((what.to_string(), d, named));
        }
        for (what, art, named) in cases {
            let out = t.path().join("out");
            // No cache: the gate sees the whole result.
            let err = expect_gate(&what, gate_opts(&base, &out, mode, Some(&art)), named);
            assert!(err.contains("the result breaks"), "{what}: {err}");
            // Cache hit: base and recipe layers come from the cache, the artifacts are new.
            let mut o = gate_opts(&base, &out, mode, Some(&art));
            o.cache = Some(cache.clone());
            let err = expect_gate(&what, o, named);
            assert!(
                err.contains("from the cache"),
                "{what}: not the cache-hit path: {err}"
            );
        }
        // The failures left the cache entry intact: the good artifacts still hit it.
        let mut o = gate_opts(
            &base,
            &t.path().join(format!("again-{mode:?}")),
            mode,
            Some(&good),
        );
        o.cache = Some(cache.clone());
        assert!(build(o).unwrap().cache_hit);
    }
}

// ------------------------------------------------------------ promises with a test ------

/// Manifest of the only image in an OCI layout.
fn manifest_json(layout: &Path) -> serde_json::Value {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let d = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap()
}

fn config_json(layout: &Path) -> serde_json::Value {
    let d = manifest_json(layout)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap()
}

/// Path, kind, mode, owner and content of every file: what a container would see.
fn listing(image: &str) -> Vec<String> {
    let mut img = open_image(&ImageRef::parse(image).unwrap(), &OpenOptions::default()).unwrap();
    let all = IndexOptions {
        capture: |_, _| true,
        hash_contents: true,
        ..Default::default()
    };
    let fs = index_base(&mut img, &all, &Progress::silent()).unwrap();
    fs.nodes
        .iter()
        .map(|(k, n)| {
            let body = if n.kind() == Kind::File {
                sha256_digest(&fs.read(k).unwrap())
            } else {
                n.link().unwrap_or_default().to_string()
            };
            format!("{k} {:?} {:o} {}:{} {body}", n.kind(), n.mode, n.uid, n.gid)
        })
        .collect()
}

#[test]
fn tar_bases_plain_gzip_and_zstd_give_the_same_image_content() {
    let t = tempfile::tempdir().unwrap();
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    let rootfs = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", passwd, 0o644)
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/a", b"a", 0o644)
        .file("usr/share/doc/b", b"b", 0o644)
        .build();
    let plain = t.path().join("base.tar");
    std::fs::write(&plain, &rootfs).unwrap();
    let gzp = t.path().join("base.tar.gz");
    std::fs::write(&gzp, gz(&rootfs)).unwrap();
    let zst = t.path().join("base.tar.zst");
    std::fs::write(&zst, zstd::encode_all(&rootfs[..], 3).unwrap()).unwrap();
    for mode in [PurgeMode::Rewrite, PurgeMode::Whiteout] {
        let mut seen: Vec<(String, Vec<String>, serde_json::Value)> = vec![];
        for base in [&plain, &gzp, &zst] {
            let out = t.path().join(format!(
                "out-{mode:?}-{}",
                base.file_name().unwrap().to_string_lossy()
            ));
            let s = build(opts(
                &format!("tar:{}", base.display()),
                &format!("oci:{}:v1", out.display()),
                mode,
                None,
            ))
            .unwrap_or_else(|e| panic!("{mode:?} {}: {e:#}", base.display()));
            let files = listing(&format!("oci:{}:v1", out.display()));
            assert!(
                files.iter().any(|f| f.starts_with("etc/motd ")),
                "{files:?}"
            );
            assert!(
                !files.iter().any(|f| f.starts_with("usr/share/doc/b ")),
                "{files:?}"
            );
            // The record names the exact input: the digest of the file as given.
            assert_eq!(
                s.record.base_digest.clone().unwrap_or_default(),
                sha256_digest(&std::fs::read(base).unwrap()),
                "{}",
                base.display()
            );
            let diff_ids = config_json(&out)["rootfs"]["diff_ids"].clone();
            seen.push((base.display().to_string(), files, diff_ids));
        }
        for (name, files, diff_ids) in &seen[1..] {
            assert_eq!(files, &seen[0].1, "{mode:?}: {name} vs the plain tar");
            assert_eq!(diff_ids, &seen[0].2, "{mode:?}: {name} vs the plain tar");
        }
    }
}

#[test]
fn rewrite_mode_keeps_untouched_base_layers_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    let l0 = TarBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .build();
    let l1 = TarBuilder::new()
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/a", b"a", 0o644)
        .file("usr/share/doc/b", b"b", 0o644)
        .build();
    let l2 = TarBuilder::new().file("opt/x", b"x", 0o644).build();
    write_layout(&base, &[l0, l1, l2]);
    let base_layers = manifest_json(&base)["layers"].clone();
    let out = t.path().join("out");
    let s = build(opts(
        &format!("oci:{}:latest", base.display()),
        &format!("oci:{}:v1", out.display()),
        PurgeMode::Rewrite,
        None,
    ))
    .unwrap();
    let actions: Vec<&str> = s.layers.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(actions, ["reused", "rewritten", "reused", "new"]);
    let layers = manifest_json(&out)["layers"].clone();
    for i in [0, 2] {
        assert_eq!(layers[i], base_layers[i], "untouched layer {}", i + 1);
    }
    assert_ne!(layers[1]["digest"], base_layers[1]["digest"]);
}

const BUILD_ARG_RECIPE: &str = r#"
name = "t"
[image]
user = "nobody"
build_args = ["NEMOCLAW_BUILD_ID"]
"#;

#[test]
fn build_args_outside_the_allow_list_are_refused() {
    let t = tempfile::tempdir().unwrap();
    two_layer_base(&t.path().join("base"));
    let base = format!("oci:{}:latest", t.path().join("base").display());
    let with = |recipe: &str, args: &[(&str, &str)], out: &Path| {
        let mut o = opts(
            &base,
            &format!("oci:{}:v1", out.display()),
            PurgeMode::Whiteout,
            None,
        );
        o.recipe = Recipe::parse(recipe.as_bytes(), "t.toml", Path::new(".")).unwrap();
        o.build_args = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        build(o)
    };
    let ok = t.path().join("ok");
    let s = with(BUILD_ARG_RECIPE, &[("NEMOCLAW_BUILD_ID", "42")], &ok).unwrap();
    assert_eq!(
        config_json(&ok)["config"]["Labels"]["dev.nemoclaw.build-arg.NEMOCLAW_BUILD_ID"],
        "42"
    );
    assert_eq!(s.record.build_args["NEMOCLAW_BUILD_ID"], "42");
    for (recipe, args, needle) in [
        (
            BUILD_ARG_RECIPE,
            vec![("NEMOCLAW_BUILD_ID", "1"), ("LD_PRELOAD", "/x.so")],
            "--build-arg LD_PRELOAD: the recipe does not accept it (accepted: NEMOCLAW_BUILD_ID)",
        ),
        (
            RECIPE,
            vec![("NEMOCLAW_BUILD_ID", "1")],
            "--build-arg NEMOCLAW_BUILD_ID: the recipe does not accept it (accepted: none)",
        ),
    ] {
        let out = t.path().join("refused");
        let err = format!("{:#}", with(recipe, &args, &out).unwrap_err());
        assert!(err.contains(needle), "{err}");
        assert!(!out.exists());
    }
}

/// A base with a tiny dpkg database: `app` depends on `lib`.
fn dpkg_base(dir: &Path) {
    let stanza = |name: &str, extra: &str| {
        format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\nInstalled-Size: 1\nMaintainer: T <t@example.org>\nArchitecture: amd64\nVersion: 1.0\n{extra}Description: {name}\n"
        )
    };
    let status = format!("{}\n{}", stanza("app", "Depends: lib\n"), stanza("lib", ""));
    let l = TarBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .dir("usr/bin", 0o755)
        .file("usr/bin/app", b"#!/bin/sh\n", 0o755)
        .file("usr/bin/lib-tool", b"#!/bin/sh\n", 0o755)
        .dir("var/lib/dpkg/info", 0o755)
        .file("var/lib/dpkg/status", status.as_bytes(), 0o644)
        .file(
            "var/lib/dpkg/info/app.list",
            b"/.\n/usr\n/usr/bin\n/usr/bin/app\n",
            0o644,
        )
        .file(
            "var/lib/dpkg/info/lib.list",
            b"/.\n/usr\n/usr/bin\n/usr/bin/lib-tool\n",
            0o644,
        )
        .build();
    write_layout(dir, &[l]);
}

#[test]
fn strict_refuses_dependents_and_landlock_warnings() {
    let t = tempfile::tempdir().unwrap();
    dpkg_base(&t.path().join("base"));
    let base = format!("oci:{}:latest", t.path().join("base").display());
    let run = |recipe: &str, strict: bool, out: &Path| {
        let mut o = opts(
            &base,
            &format!("oci:{}:v1", out.display()),
            PurgeMode::Rewrite,
            None,
        );
        o.recipe = Recipe::parse(recipe.as_bytes(), "t.toml", Path::new(".")).unwrap();
        o.strict = strict;
        build(o)
    };
    let purge = "name = \"t\"\n[image]\nuser = \"nobody\"\n[packages]\npurge = [\"lib\"]\n";
    // Not strict: the dependent package goes too, and says why.
    let out = t.path().join("loose");
    let s = run(purge, false, &out).unwrap();
    assert_eq!(s.purged, ["app", "lib"]);
    let fs = final_fs(&format!("oci:{}:v1", out.display()));
    assert!(fs.get("usr/bin/app").is_none() && fs.get("usr/bin/lib-tool").is_none());
    // Strict: refused, naming the dependent.
    let out = t.path().join("strict");
    let err = format!("{:#}", run(purge, true, &out).unwrap_err());
    assert!(
        err.contains("strict purge would also remove dependent packages: app"),
        "{err}"
    );
    assert!(!out.exists());
    // Landlock: a warning normally, an error with --strict.
    let ll = "name = \"t\"\n[image]\nuser = \"nobody\"\n[landlock]\npath = \"/etc/ll.json\"\nread_write = [\"/srv/nothere\"]\n";
    let out = t.path().join("ll-loose");
    let s = run(ll, false, &out).unwrap();
    assert_eq!(
        s.landlock_warnings,
        ["read_write path /srv/nothere does not exist in the image"]
    );
    let out = t.path().join("ll-strict");
    let err = format!("{:#}", run(ll, true, &out).unwrap_err());
    assert!(
        err.contains("Landlock policy: read_write path /srv/nothere does not exist in the image"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn audit_reports_toolchain_elves_hidden_by_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("img");
    let l0 = TarBuilder::new()
        .dir("usr/bin", 0o755)
        .file("usr/bin/gcc-12", ELF, 0o755)
        .file("usr/bin/readme", b"not a program", 0o644)
        .build();
    let l1 = TarBuilder::new()
        .file("usr/bin/.wh.gcc-12", b"", 0o644)
        .file("usr/bin/.wh.readme", b"", 0o644)
        .build();
    write_layout(&dir, &[l0, l1]);
    let image = format!("oci:{}:latest", dir.display());
    let fs = final_fs(&image);
    let f = crate::audit::findings(&fs, &serde_json::json!({}), &gate_recipe()).unwrap();
    let got: Vec<(String, String, crate::audit::Severity)> = f
        .iter()
        .filter(|x| x.path.starts_with("/usr/bin/"))
        .map(|x| (x.id.clone(), x.path.clone(), x.severity))
        .collect();
    assert_eq!(
        got,
        [(
            "bytes-still-shipped".to_string(),
            "/usr/bin/gcc-12".to_string(),
            crate::audit::Severity::Warning
        )],
        "{f:?}"
    );
    let msg = &f
        .iter()
        .find(|x| x.id == "bytes-still-shipped")
        .unwrap()
        .message;
    assert!(msg.contains("still ship in layer 1"), "{msg}");
}

#[test]
fn cache_key_covers_every_input_of_the_cached_part() {
    use crate::build_cache::key_for;
    let t = tempfile::tempdir().unwrap();
    let o = || {
        opts(
            "oci:/nonexistent:latest",
            &format!("oci:{}", t.path().join("o").display()),
            PurgeMode::Rewrite,
            None,
        )
    };
    let init = sha256_digest(crate::steps::INIT_BINARY);
    let tool = crate::pipeline::TOOL_VERSION;
    let key = |f: &dyn Fn(&mut BuildOptions)| {
        let mut x = o();
        f(&mut x);
        key_for(tool, &init, &x, "sha256:base")
    };
    let base_key = key(&|_| {});
    let variants: Vec<(&str, String)> = vec![
        ("tool", key_for("0.0.0-other", &init, &o(), "sha256:base")),
        (
            "init",
            key_for(tool, "sha256:other-init", &o(), "sha256:base"),
        ),
        ("base", key_for(tool, &init, &o(), "sha256:other-base")),
        (
            "recipe",
            key(&|x| {
                x.recipe = Recipe::parse(
                    format!("{RECIPE}\n# another recipe\n").as_bytes(),
                    "t.toml",
                    Path::new("."),
                )
                .unwrap()
            }),
        ),
        ("epoch", key(&|x| x.epoch += 1)),
        (
            "compression",
            key(&|x| x.compression = Settings::new(Algorithm::Zstd, None, Some(2)).unwrap()),
        ),
        (
            "compression level",
            key(&|x| x.compression = Settings::new(Algorithm::Gzip, Some(9), Some(2)).unwrap()),
        ),
        ("purge mode", key(&|x| x.purge_mode = PurgeMode::Whiteout)),
        ("strict", key(&|x| x.strict = true)),
    ];
    let mut all = std::collections::BTreeSet::from([base_key.clone()]);
    for (what, k) in &variants {
        assert!(
            all.insert(k.clone()),
            "changing the {what} does not change the cache key"
        );
    }
    // Inputs that are not part of the cached layers leave it alone.
    assert_eq!(
        key(&|x| x
            .build_args
            .insert("A".into(), "1".into())
            .map_or((), |_| ())),
        base_key
    );
    assert_eq!(
        key(&|x| x.compression = Settings::new(Algorithm::Gzip, None, Some(1)).unwrap()),
        base_key,
        "the thread count does not change the bytes, so not the key"
    );
    // The real key is this function of the real tool and init.
    assert!(
        base_key.contains(&format!("tool={tool}|init={init}|")),
        "{base_key}"
    );
}

#[test]
fn cache_hits_only_for_the_same_recipe_epoch_and_compression() {
    let t = tempfile::tempdir().unwrap();
    two_layer_base(&t.path().join("base"));
    let base = format!("oci:{}:latest", t.path().join("base").display());
    let cache = crate::cache::Cache::open(Some(&t.path().join("cache"))).unwrap();
    let mut n = 0;
    let mut run = |f: &dyn Fn(&mut BuildOptions)| {
        n += 1;
        let mut o = opts(
            &base,
            &format!("oci:{}", t.path().join(format!("o{n}")).display()),
            PurgeMode::Rewrite,
            None,
        );
        o.cache = Some(cache.clone());
        f(&mut o);
        build(o).unwrap().cache_hit
    };
    assert!(!run(&|_| {}), "cold");
    assert!(run(&|_| {}), "same inputs");
    type Change<'a> = (&'a str, &'a dyn Fn(&mut BuildOptions));
    let changes: [Change; 3] = [
        ("epoch", &|o| o.epoch += 1),
        ("compression", &|o| {
            o.compression = Settings::new(Algorithm::Zstd, None, Some(2)).unwrap()
        }),
        ("recipe", &|o| {
            o.recipe = Recipe::parse(
                RECIPE.replace("hi\\n", "hello\\n").as_bytes(),
                "t.toml",
                Path::new("."),
            )
            .unwrap()
        }),
    ];
    for (what, f) in changes {
        assert!(!run(f), "another {what} must miss");
        assert!(run(f), "the same {what} again must hit");
    }
}

/// Program header types of an ELF64 little-endian file, and its DT_NEEDED count.
fn elf_program_headers(b: &[u8]) -> (Vec<u32>, usize) {
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&b[..4], b"\x7fELF", "not an ELF file");
    assert_eq!((b[4], b[5]), (2, 1), "not ELF64 little-endian");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let mut types = vec![];
    let mut needed = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let t = u32::from_le_bytes(b[ph..ph + 4].try_into().unwrap());
        types.push(t);
        if t == 2 {
            // PT_DYNAMIC: (d_tag, d_val) pairs up to DT_NULL; DT_NEEDED = 1
            let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
            for e in (off..off + size).step_by(16) {
                match u64_at(e) {
                    0 => break,
                    1 => needed += 1,
                    _ => {}
                }
            }
        }
    }
    (types, needed)
}

/// Both embedded inits (x86_64 and aarch64) are static ELFs of their own machine:
/// an image never gets the init of another architecture.
#[test]
fn embedded_inits_are_static_and_of_their_machine() {
    const PT_INTERP: u32 = 3;
    for arch in crate::platform::Arch::ALL {
        let (bin, target) = crate::steps::embedded_init(arch).unwrap();
        assert_eq!(
            crate::elf::machine(bin),
            Some(arch.elf_machine()),
            "{target}"
        );
        let (types, needed) = elf_program_headers(bin);
        assert!(!types.is_empty());
        assert!(
            !types.contains(&PT_INTERP),
            "the embedded init ({target}) asks for a dynamic loader: {types:?}"
        );
        assert_eq!(
            needed, 0,
            "the embedded init ({target}) needs shared libraries"
        );
    }
    // The check itself sees a dynamic executable for what it is.
    if let Some(dynamic) = ["/bin/sh", "/usr/bin/env"]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .find(|b| b.starts_with(b"\x7fELF\x02\x01"))
    {
        let (types, needed) = elf_program_headers(&dynamic);
        assert!(types.contains(&PT_INTERP) && needed > 0, "{types:?}");
    }
}

/// A base whose layer names files but no directory entries (`usr/bin/gcc` without
/// `usr/` or `usr/bin/`): runtimes create the parents, so in whiteout mode a removed
/// file still needs its own whiteout. Before the fix the gate passed (the model had
/// removed gcc) while the image shipped it. Checked on the image as a runtime reads it.
#[test]
fn whiteouts_cover_files_under_implicit_parent_dirs() {
    let t = tempfile::tempdir().unwrap();
    let l = TarBuilder::new()
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .file("usr/bin/gcc", ELF, 0o755)
        .file("usr/lib/gcc/x86_64-linux-gnu/12/cc1", ELF, 0o755)
        .file("usr/bin/env", ELF, 0o755)
        .build();
    let base = t.path().join("base");
    write_layout(&base, &[l]);
    for mode in [PurgeMode::Whiteout, PurgeMode::Rewrite] {
        let out = t.path().join(format!("out-{mode:?}"));
        let mut o = gate_opts(&base, &out, mode, None);
        o.recipe.fs = Recipe::parse(
            b"name = \"x\"\n[[fs]]\nop = \"remove\"\npath = \"/usr/bin/gcc\"\n[[fs]]\nop = \"remove\"\npath = \"/usr/lib/gcc\"\n",
            "x.toml",
            Path::new("."),
        )
        .unwrap()
        .fs;
        build(o).unwrap_or_else(|e| panic!("{mode:?}: {e:#}"));
        let fs = final_fs(&format!("oci:{}:v1", out.display()));
        for gone in ["usr/bin/gcc", "usr/lib/gcc/x86_64-linux-gnu/12/cc1"] {
            assert!(
                fs.get(gone).is_none(),
                "{mode:?}: the image still ships {gone}"
            );
        }
        assert!(fs.get("usr/bin/env").is_some(), "{mode:?}: env lost");
    }
}

#[test]
fn strict_refuses_a_registry_base_by_tag_before_any_request() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    // Port 1 on loopback: nothing listens, so only a refusal made before any request
    // can produce the --strict message.
    let run = |base: &str, strict: bool| {
        let mut o = opts(
            base,
            &format!("oci:{}:v1", out.display()),
            PurgeMode::Rewrite,
            None,
        );
        o.strict = strict;
        format!("{:#}", build(o).unwrap_err())
    };
    let tag = run("registry://127.0.0.1:1/base:1", true);
    assert!(
        tag.contains("--strict refuses a base not pinned by digest")
            && tag.contains("registry://127.0.0.1:1/base@sha256:"),
        "{tag}"
    );
    let pinned = format!("registry://127.0.0.1:1/base@sha256:{}", "0".repeat(64));
    for (base, strict) in [
        ("registry://127.0.0.1:1/base:1", false),
        (pinned.as_str(), true),
    ] {
        let e = run(base, strict);
        assert!(
            !e.contains("--strict refuses"),
            "{base} strict={strict}: {e}"
        );
    }
    assert!(!out.exists(), "a refused build wrote {}", out.display());
}

/// Every long phase reports a task that advances to its total: the index pass, the
/// rewrite (over the spilled copy), the recipe and artifacts layers. A bar that sat at
/// zero during the rewrite was the reason for issue 16's reporting channel.
#[test]
fn long_phases_report_progress_to_the_end() {
    let t = tempfile::tempdir().unwrap();
    two_layer_base(&t.path().join("base"));
    let art = t.path().join("art");
    std::fs::create_dir_all(art.join("dist")).unwrap();
    std::fs::write(art.join("dist/x.js"), b"1").unwrap();
    let mut o = opts(
        &format!("oci:{}:latest", t.path().join("base").display()),
        &format!("oci:{}:v1", t.path().join("out").display()),
        PurgeMode::Rewrite,
        Some(&art),
    );
    let (p, events) = Progress::collecting();
    o.progress = p;
    let s = build(o).unwrap();
    let tasks = events.tasks();
    let find = |prefix: &str| -> Vec<(String, u64, Option<u64>)> {
        tasks
            .iter()
            .filter(|(l, _, _)| l.starts_with(prefix))
            .cloned()
            .collect()
    };
    assert_eq!(find("reading layer ").len(), 2, "{tasks:?}");
    let rewritten = s.layers.iter().filter(|l| l.action == "rewritten").count();
    assert!(rewritten > 0, "{:?}", s.layers);
    assert_eq!(find("rewriting layer ").len(), rewritten, "{tasks:?}");
    for prefix in [
        "reading layer ",
        "rewriting layer ",
        "writing the recipe layer",
        "writing the artifacts layer",
    ] {
        let found = find(prefix);
        assert!(!found.is_empty(), "no {prefix:?} task: {tasks:?}");
        for (label, done, total) in found {
            assert!(done > 0, "{label}: never advanced");
            assert_eq!(Some(done), total, "{label}: stopped short");
        }
    }
    assert!(s.warning_details.is_empty(), "{:?}", s.warning_details);
}

/// Setid files that `[sanitize]` rewrites are held while indexing, so a build reads
/// each base layer once to index it (and once to rewrite it), never a third time to
/// load their bytes; one too large to hold still works, through that extra pass.
#[test]
fn sanitized_setid_files_are_held_while_indexing() {
    let loads = |big: bool| -> (Vec<String>, String) {
        let t = tempfile::tempdir().unwrap();
        let mut l0 = crate::testutil::accounts()
            .dir("usr/bin", 0o755)
            .file("usr/bin/tool", b"\x7fELF tool", 0o4755)
            .dir("usr/share/doc", 0o755)
            .file("usr/share/doc/b", b"b", 0o644);
        if big {
            let size = crate::rootfs::MAX_SPECIAL_CAPTURE as usize + 1;
            l0 = l0.file("usr/bin/big", &vec![7u8; size], 0o2755);
        }
        write_layout(&t.path().join("base"), &[l0.build()]);
        let mut o = opts(
            &format!("oci:{}:latest", t.path().join("base").display()),
            &format!("oci:{}:v1", t.path().join("out").display()),
            PurgeMode::Rewrite,
            None,
        );
        let recipe = format!("{RECIPE}\n[sanitize]\nstrip_setid = true\n");
        o.recipe = Recipe::parse(recipe.as_bytes(), "t.toml", Path::new(".")).unwrap();
        let (p, events) = Progress::collecting();
        o.progress = p;
        build(o).unwrap();
        let loads = events
            .tasks()
            .into_iter()
            .map(|(l, _, _)| l)
            .filter(|l| l.starts_with("loading changed files"))
            .collect();
        let out = format!("oci:{}:v1", t.path().join("out").display());
        let mut img = open_image(&ImageRef::parse(&out).unwrap(), &OpenOptions::default()).unwrap();
        let all = IndexOptions {
            capture: |_, _| true,
            ..Default::default()
        };
        let fs = index_base(&mut img, &all, &Progress::silent()).unwrap();
        let tool = fs.nodes.get("usr/bin/tool").expect("tool in the output");
        assert_eq!(tool.mode & 0o7777, 0o755, "setuid bit not stripped");
        let bytes = fs.read("usr/bin/tool").unwrap();
        if big {
            let n = fs.nodes.get("usr/bin/big").expect("big in the output");
            assert_eq!(n.mode & 0o7777, 0o755, "setgid bit not stripped");
        }
        (loads, String::from_utf8_lossy(&bytes).into_owned())
    };
    let (small, bytes) = loads(false);
    assert_eq!(bytes, "\x7fELF tool");
    assert!(
        small.is_empty(),
        "a second pass to load held bytes: {small:?}"
    );
    let (big, _) = loads(true);
    assert_eq!(
        big.len(),
        1,
        "a file over the cap is loaded by a pass: {big:?}"
    );
}
