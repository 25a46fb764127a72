//! Hostile and malformed bases through the binary, as a CI job would meet them: each is
//! refused with an error naming the layer or file, a non-zero exit, no panic, no output,
//! no scratch left next to the output and nothing written outside it. (These were bash
//! probes with python fixtures in the e2e `malformed` section.)
use nemoclaw_build::testing::{accounts, gzip, LayoutBuilder};
use std::path::Path;
use std::process::Command;

const RECIPE: &str = "name = \"hostile\"\n[image]\nuser = \"nobody\"\n";

/// Builds `base` into DIR/out; returns (exit code, stderr).
fn build(dir: &Path, base: &str) -> (i32, String) {
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nemoclaw-build"))
        .args(["build", "--base", base, "--output"])
        .arg(format!("oci:{}:t", dir.join("out").display()))
        .arg("--recipe")
        .arg(&recipe)
        .args(["--source-date-epoch", "1700000000", "--no-cache", "-q"])
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("xdg-cache"))
        .output()
        .expect("run nemoclaw-build");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The refusal contract for case `name`: `needle` (a substring) in the error.
fn refused(name: &str, dir: &Path, base: &str, needle: &str) {
    let (code, err) = build(dir, base);
    assert_eq!(code, 1, "{name}: exit code (stderr: {err})");
    assert!(!err.contains("panicked"), "{name}: panic: {err}");
    assert!(
        err.contains(needle),
        "{name}: error must say {needle:?}: {err}"
    );
    assert!(!dir.join("out").exists(), "{name}: an output was left");
    let scratch: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".nemoclaw"))
        .collect();
    assert!(scratch.is_empty(), "{name}: scratch left: {scratch:?}");
}

fn layout(dir: &Path, tar: &[u8]) -> String {
    LayoutBuilder::new().layer(tar).write(&dir.join("base"));
    format!("oci:{}:latest", dir.join("base").display())
}

#[test]
fn control_a_valid_layout_builds() {
    let t = tempfile::tempdir().unwrap();
    let base = layout(t.path(), &accounts().file("etc/ok", b"ok\n", 0o644).build());
    let (code, err) = build(t.path(), &base);
    assert_eq!(
        code, 0,
        "the control must build, or the refusals prove nothing: {err}"
    );
}

#[test]
fn truncated_gzip_layer() {
    let t = tempfile::tempdir().unwrap();
    let tar = accounts().file("etc/big", &[7u8; 300_000], 0o644).build();
    LayoutBuilder::new()
        .layer_mangled(&tar, |z| z[..z.len() / 2].to_vec())
        .write(&t.path().join("base"));
    let base = format!("oci:{}:latest", t.path().join("base").display());
    refused(
        "truncated gzip",
        t.path(),
        &base,
        "incomplete deflate stream",
    );
    refused("truncated gzip", t.path(), &base, "layer 1 (sha256:");
}

#[test]
fn path_traversal_entry() {
    let t = tempfile::tempdir().unwrap();
    let base = layout(
        t.path(),
        &accounts().raw_file("../../etc/x", b"evil\n", 0o644).build(),
    );
    refused("traversal", t.path(), &base, "unsafe entry '../../etc/x'");
    assert!(!t.path().join("etc/x").exists() && !Path::new("/etc/x").exists());
}

#[test]
fn file_below_a_symlink_that_points_outside() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let tar = accounts()
        .symlink("etc/e2e-link", outside.to_str().unwrap())
        .file("etc/e2e-link/pwned", b"pwned\n", 0o644)
        .build();
    let base = layout(t.path(), &tar);
    refused(
        "symlink escape",
        t.path(),
        &base,
        "entry 'etc/e2e-link/pwned' lies below '/etc/e2e-link', which is a symlink",
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside"
    );
}

#[test]
fn index_json_that_is_not_json() {
    let t = tempfile::tempdir().unwrap();
    let base = layout(t.path(), &accounts().build());
    std::fs::write(
        t.path().join("base/index.json"),
        br#"{"schemaVersion": 2, "manifests": ["#,
    )
    .unwrap();
    refused(
        "bad index.json",
        t.path(),
        &base,
        "index.json: invalid JSON",
    );
}

#[test]
fn layer_blob_that_does_not_match_its_digest() {
    let t = tempfile::tempdir().unwrap();
    let tar = accounts().file("etc/data", &[1u8; 10_000], 0o644).build();
    let base = layout(t.path(), &tar);
    // Same size, one byte of the gzip header's MTIME changed: the stream still inflates
    // to the same tar, so only hashing the blob can tell.
    let blobs = t.path().join("base/blobs/sha256");
    let z = gzip(&tar);
    let hex = nemoclaw_build::testing::digest(&z)["sha256:".len()..].to_string();
    let mut bad = std::fs::read(blobs.join(&hex)).unwrap();
    bad[4] ^= 0xff;
    std::fs::write(blobs.join(&hex), bad).unwrap();
    refused("digest mismatch", t.path(), &base, "digest mismatch");
    refused("digest mismatch", t.path(), &base, "layer 1 (sha256:");
}

#[test]
fn garbage_rootfs_tarball() {
    let t = tempfile::tempdir().unwrap();
    let garbage = t.path().join("garbage.tar");
    std::fs::write(&garbage, "garbage\n".repeat(12_500)).unwrap();
    let base = format!("tar:{}", garbage.display());
    refused("garbage tar", t.path(), &base, "bad checksum field");
    refused("garbage tar", t.path(), &base, "layer 1 (");
}
