//! The local build cache through the binary: a second build of the same inputs is a
//! hit with the same digest; changing the recipe, the epoch or the compression is a
//! miss; a corrupted cached blob is detected, reported with a coded warning, and
//! rebuilt (never served); `cache prune` empties it; the cache flags are checked.
//! (The e2e `cache` sub-suite keeps what needs a registry: --cache-to/--cache-from.
//! The init binary's part of the key is a unit test: `cache_key_covers_every_input…`.)
mod common;

use common::{run, write, Run};
use nemoclaw_build::testing::accounts;
use serde_json::Value;
use std::path::Path;

const RECIPE: &[u8] = b"name = \"cache\"\n[image]\nuser = \"nobody\"\n[[fs]]\nop = \"file\"\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n";

/// Inputs in `dir`: base.tar (a purge-free base with a 1 MiB file) and r.toml.
fn inputs(dir: &Path) -> (String, String) {
    let base = accounts()
        .dir("usr/share", 0o755)
        .file("usr/share/big", &vec![7u8; 1 << 20], 0o644)
        .build();
    (
        format!("tar:{}", write(dir, "base.tar", &base)),
        write(dir, "r.toml", RECIPE),
    )
}

/// `build --json` of the inputs into DIR/OUT with the cache in DIR/cache; `extra` last.
fn build(dir: &Path, (base, recipe): &(String, String), out: &str, extra: &[&str]) -> Run {
    let output = format!("oci:{}:t", dir.join(out).display());
    let cache = dir.join("cache").display().to_string();
    let mut args = vec![
        "build",
        "--base",
        base,
        "--recipe",
        recipe,
        "--output",
        &output,
        "--cache-dir",
        &cache,
        "--json",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--source-date-epoch") {
        args.extend(["--source-date-epoch", "1700000000"]);
    }
    run(dir, &args)
}

/// (cache_hit, cache_source, digest) of a build's summary.
fn outcome(name: &str, r: &Run) -> (bool, String, String) {
    assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    let v: Value = r.json();
    (
        v["cache_hit"].as_bool().expect("cache_hit"),
        v["cache_source"]
            .as_str()
            .expect("cache_source")
            .to_string(),
        v["digest"].as_str().expect("digest").to_string(),
    )
}

#[test]
fn same_inputs_hit_and_any_key_input_misses() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let inp = inputs(d);
    let (hit, src, cold) = outcome("cold", &build(d, &inp, "o1", &[]));
    assert_eq!((hit, src.as_str()), (false, "none"), "cold build");
    let warm = build(d, &inp, "o2", &[]);
    let (hit, src, digest) = outcome("warm", &warm);
    assert_eq!((hit, src.as_str()), (true, "local"), "same inputs");
    assert_eq!(digest, cold, "a hit writes the same image");
    let v = warm.json();
    let actions: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert!(
        !actions.is_empty() && actions.iter().all(|a| a.starts_with("cached (")),
        "{actions:?}"
    );
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    assert_eq!(v["warning_details"], serde_json::json!([]), "{v}");
    // Each input of the key, changed alone: a miss, then a hit for that variant.
    let other_recipe = write(
        d,
        "r2.toml",
        &[
            RECIPE,
            b"[[fs]]\nop = \"file\"\npath = \"/etc/issue\"\ncontent = \"x\\n\"\n",
        ]
        .concat(),
    );
    let variants: [(&str, (String, String), &[&str]); 4] = [
        ("recipe", (inp.0.clone(), other_recipe), &[]),
        ("epoch", inp.clone(), &["--source-date-epoch", "1700000001"]),
        ("compression", inp.clone(), &["--compression", "zstd"]),
        ("level", inp.clone(), &["--compression-level", "9"]),
    ];
    for (what, inp, extra) in variants {
        let (hit, _, digest) = outcome(what, &build(d, &inp, &format!("{what}1"), extra));
        assert!(!hit, "changing the {what} must be a cache miss");
        assert_ne!(digest, cold, "{what}: a different image");
        let (hit, src, again) = outcome(what, &build(d, &inp, &format!("{what}2"), extra));
        assert_eq!((hit, src.as_str()), (true, "local"), "{what} again");
        assert_eq!(again, digest, "{what}: the hit is the same image");
    }
    // `--no-cache` neither reads nor writes it.
    let (hit, src, digest) = outcome("no-cache", &build(d, &inp, "nc", &["--no-cache"]));
    assert_eq!(
        (hit, src.as_str(), digest.as_str()),
        (false, "none", cold.as_str())
    );
}

/// Flips one byte of every cached blob: the next build must notice (a `local-cache`
/// warning naming the blob), rebuild, give the same digest, and leave only good blobs.
#[test]
fn corrupted_cached_blob_is_rebuilt_not_served() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let inp = inputs(d);
    let (_, _, cold) = outcome("cold", &build(d, &inp, "o1", &[]));
    let blobs = d.join("cache/blobs/sha256");
    let mut flipped = 0;
    for e in std::fs::read_dir(&blobs).expect("cached blobs") {
        let p = e.unwrap().path();
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(&p, b).unwrap();
        flipped += 1;
    }
    assert!(flipped > 0, "the cold build cached no blob");
    let r = build(d, &inp, "o2", &[]);
    let (hit, src, digest) = outcome("after corruption", &r);
    assert_eq!(
        (hit, src.as_str()),
        (false, "none"),
        "a corrupt blob was served"
    );
    assert_eq!(digest, cold, "the rebuilt image differs");
    let v = r.json();
    let details = v["warning_details"].as_array().expect("warning_details");
    assert_eq!(details.len(), 1, "{v:#}");
    assert_eq!(details[0]["code"], "local-cache", "{v:#}");
    let msg = details[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("cached blob") && msg.contains("removed it from the cache"),
        "{msg}"
    );
    assert_eq!(v["warnings"][0], msg, "warnings and warning_details agree");
    assert!(
        r.stderr.contains(&format!("warning: {msg}")),
        "{}",
        r.stderr
    );
    // What is cached now is whole again, and serves the next build.
    for e in std::fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let got = nemoclaw_build::testing::digest(&std::fs::read(&p).unwrap());
        assert_eq!(
            got,
            format!("sha256:{name}"),
            "a corrupt blob stayed cached"
        );
    }
    let (hit, _, again) = outcome("after rebuild", &build(d, &inp, "o3", &[]));
    assert!(hit && again == cold, "the rebuilt entry does not serve");
}

/// `cache prune --max-size 0` removes every entry: the next build is a miss.
#[test]
fn prune_empties_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let inp = inputs(d);
    outcome("cold", &build(d, &inp, "o1", &[]));
    let cache = d.join("cache").display().to_string();
    let r = run(
        d,
        &["cache", "prune", "--max-size", "0", "--cache-dir", &cache],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.starts_with("pruned "), "{}", r.stderr);
    let (hit, _, _) = outcome("after prune", &build(d, &inp, "o2", &[]));
    assert!(!hit, "a pruned cache served a hit");
    let r = run(d, &["cache", "prune", "--max-size", "12Q"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown size suffix in '12Q'"),
        "{}",
        r.stderr
    );
}

/// `--no-cache` with a registry cache, and a cache location with a tag: refused
/// before any work. (These were e2e `cache` probes.)
#[test]
fn cache_flags_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let inp = inputs(d);
    let r = build(
        d,
        &inp,
        "o1",
        &["--no-cache", "--cache-to", "registry://127.0.0.1:9/cache"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
    let r = build(
        d,
        &inp,
        "o2",
        &["--cache-to", "registry://127.0.0.1:9/cache:latest"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("without tag or digest"), "{}", r.stderr);
    assert!(!d.join("o1").exists() && !d.join("o2").exists());
}
