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
use std::path::Path;

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
    let mut diff_ids = vec![];
    for l in layers {
        diff_ids.push(sha256_digest(l));
        let z = mangle(gz(l));
        let d = put(&z);
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": z.len()}));
    }
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}})).unwrap();
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
        purge_mode: mode,
        compression: Settings::new(Algorithm::Gzip, None, Some(2)).unwrap(),
        epoch: 1_700_000_000,
        build_args: Default::default(),
        strict: false,
        open: OpenOptions::default(),
        progress: Progress::new(true),
        cache: None,
        remote_cache: Default::default(),
        sbom: None,
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
    index_base(&mut img, &IndexOptions::default(), &Progress::new(true)).unwrap()
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
        let doc: Vec<&String> = fs.descendants("usr/share/doc").map(|(k, _)| k).collect();
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
        assert_eq!(fs.get("usr/bin/tool2").unwrap().kind, Kind::Hardlink);
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
