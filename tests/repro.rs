//! Reproducibility through the binary: the same inputs give the same manifest digest
//! whatever the output path, working directory, umask, time zone, locale, artifact
//! mtimes, thread count, and whether the cache served the result. (The e2e `repro`
//! section repeats the main case on a real Debian base.)
use nemoclaw_build::testing::accounts;
use std::path::Path;
use std::process::Command;

/// One build: directory, umask, extra environment, extra arguments.
type Case<'a> = (&'a Path, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

const RECIPE: &str = r#"name = "repro"
[image]
user = "nobody"
[[fs]]
op = "file"
path = "/etc/motd"
content = "hi\n"
[artifacts]
dest = "/opt/app"
"#;

fn base() -> Vec<u8> {
    accounts()
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/big", &vec![b'x'; 3 << 20], 0o644)
        .build()
}

/// Inputs in `dir`: base.tar, r.toml, art/.
fn inputs(dir: &Path) {
    std::fs::create_dir_all(dir.join("art/dist")).unwrap();
    std::fs::write(dir.join("art/dist/index.js"), "console.log(1)\n").unwrap();
    std::fs::write(dir.join("art/package.json"), "{}\n").unwrap();
    std::fs::write(dir.join("r.toml"), RECIPE).unwrap();
    std::fs::write(dir.join("base.tar"), base()).unwrap();
}

/// Builds from `dir` (its relative inputs) through `sh` (for the umask); returns the digest.
fn digest(dir: &Path, umask: &str, env: &[(&str, &str)], extra: &[&str]) -> String {
    let bin = env!("CARGO_BIN_EXE_nemoclaw-build");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(bin)
        .args(["build", "--output", "oci:out:t", "--recipe", "r.toml"])
        .args([
            "--artifacts",
            "art",
            "--source-date-epoch",
            "1700000000",
            "-q",
        ])
        .args(extra)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("cache"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run nemoclaw-build");
    assert!(
        out.status.success(),
        "build in {} {extra:?}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(d.starts_with("sha256:") && d.len() == 71, "digest {d:?}");
    d
}

#[test]
fn same_inputs_same_digest_anywhere() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("elsewhere/b"));
    inputs(&a);
    inputs(&b);
    // b's artifacts get other mtimes: only content counts.
    let later = std::fs::File::options()
        .write(true)
        .open(b.join("art/dist/index.js"))
        .unwrap();
    later
        .set_modified(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(4_000_000_000),
        )
        .unwrap();
    let tar = ["--base", "tar:base.tar", "--no-cache"];
    let want = digest(&a, "022", &[("TZ", "UTC")], &tar);
    let cases: [Case; 3] = [
        (
            &b,
            "077",
            &[("TZ", "Pacific/Chatham"), ("LC_ALL", "C.UTF-8")],
            &tar,
        ),
        (
            &b,
            "022",
            &[],
            &["--base", "tar:base.tar", "--no-cache", "--threads", "1"],
        ),
        (
            &a,
            "002",
            &[],
            &["--base", "tar:base.tar", "--threads", "3"],
        ),
    ];
    for (i, (dir, umask, env, extra)) in cases.iter().enumerate() {
        std::fs::remove_dir_all(dir.join("out")).ok();
        assert_eq!(digest(dir, umask, env, extra), want, "case {i}: {extra:?}");
    }
    // The last case filled the cache: the same build again is a hit, same digest.
    std::fs::remove_dir_all(a.join("out")).unwrap();
    assert_eq!(
        digest(&a, "022", &[], &["--base", "tar:base.tar"]),
        want,
        "cache hit"
    );
    // And a different input is a different digest (the comparison can fail).
    std::fs::write(a.join("art/package.json"), "{\"v\":2}\n").unwrap();
    std::fs::remove_dir_all(a.join("out")).unwrap();
    assert_ne!(digest(&a, "022", &[], &tar), want, "changed artifacts");
}
