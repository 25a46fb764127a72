//! The command line as a user runs it: exit codes and files of `build --record`,
//! `build --build-arg`, `audit --fail-on` and `policy --strict`, on small images built
//! by the binary itself from generated tarballs.
use std::path::{Path, PathBuf};
use std::process::Command;

use nemoclaw_build::testing::TarBuilder;

mod common;

const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
const GROUP: &[u8] = b"root:x:0:\nnogroup:x:65534:\n";

/// Runs the binary with a private cache (the shared harness); returns (exit code,
/// stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let r = common::run(dir, args);
    (r.code, r.stdout, r.stderr)
}

/// A rootfs tarball: accounts plus `extra`.
fn base_tar(dir: &Path, name: &str, extra: impl FnOnce(TarBuilder) -> TarBuilder) -> PathBuf {
    let b = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", PASSWD, 0o644)
        .file("etc/group", GROUP, 0o644)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"#!/bin/sh\n", 0o755);
    let p = dir.join(name);
    std::fs::write(&p, extra(b).build()).unwrap();
    p
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const MINIMAL: &str = "name = \"cli\"\n[image]\nuser = \"nobody\"\nbuild_args = [\"BUILD_ID\"]\n";

/// Builds `base` with `recipe` into the OCI layout DIR/NAME; returns the image reference.
fn build_image(dir: &Path, base: &Path, recipe: &Path, name: &str) -> String {
    let image = format!("oci:{}:t", dir.join(name).display());
    let (code, _, err) = run(
        dir,
        &[
            "build",
            "--base",
            &format!("tar:{}", base.display()),
            "--output",
            &image,
            "--recipe",
            recipe.to_str().unwrap(),
            "--source-date-epoch",
            "1700000000",
            "--no-cache",
            "-q",
        ],
    );
    assert_eq!(code, 0, "build {name}: {err}");
    image
}

#[test]
fn record_is_the_summary_record_and_only_written_on_success() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let base = base_tar(d, "base.tar", |b| b);
    let recipe = write(d, "r.toml", MINIMAL);
    let rec = d.join("record.json");
    let args = |out: &str, arg: &str| -> Vec<String> {
        [
            "build",
            "--base",
            &format!("tar:{}", base.display()),
            "--output",
            &format!("oci:{}:t", d.join(out).display()),
            "--recipe",
            recipe.to_str().unwrap(),
            "--source-date-epoch",
            "1700000000",
            "--build-arg",
            arg,
            "--record",
            rec.to_str().unwrap(),
            "--no-cache",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args("ok", "BUILD_ID=7");
    let (code, out, err) = run(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec).expect("--record file")).unwrap();
    assert_eq!(record, summary["record"]);
    let sha = {
        use sha2::Digest;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(std::fs::read(&base).unwrap()))
        )
    };
    assert_eq!(record["base_digest"], sha.as_str());
    assert_eq!(record["build_args"]["BUILD_ID"], "7");
    assert_eq!(record["source_date_epoch"], 1700000000);
    assert_eq!(record["purge_mode"], "rewrite");
    assert!(record["recipe_digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    // A failed build writes no record (and no image).
    std::fs::remove_file(&rec).unwrap();
    let a = args("refused", "OTHER=1");
    let (code, _, err) = run(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--build-arg OTHER: the recipe does not accept it (accepted: BUILD_ID)"),
        "{err}"
    );
    assert!(!rec.exists() && !d.join("refused").exists());
}

#[test]
fn build_arg_must_be_key_equals_value() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let base = base_tar(d, "base.tar", |b| b);
    let (code, _, err) = run(
        d,
        &[
            "build",
            "--base",
            &format!("tar:{}", base.display()),
            "--output",
            &format!("oci:{}:t", d.join("o").display()),
            "--build-arg",
            "BUILD_ID",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--build-arg 'BUILD_ID': expected KEY=VALUE"),
        "{err}"
    );
    assert!(!d.join("o").exists());
}

#[test]
fn audit_fail_on_sets_the_threshold() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let recipe = write(d, "r.toml", MINIMAL);
    // One info finding (a setgid file), and one warning (a setuid file) on top.
    let info = base_tar(d, "info.tar", |b| b.file("usr/bin/sg", b"x", 0o2755));
    let warn = base_tar(d, "warn.tar", |b| {
        b.file("usr/bin/sg", b"x", 0o2755)
            .file("usr/bin/su", b"x", 0o4755)
    });
    let clean = base_tar(d, "clean.tar", |b| b);
    let images = [
        ("clean", build_image(d, &clean, &recipe, "clean")),
        ("info", build_image(d, &info, &recipe, "info")),
        ("warning", build_image(d, &warn, &recipe, "warn")),
    ];
    // expected exit code per (image, --fail-on)
    let expect = |img: &str, level: &str| -> i32 {
        let rank = |s: &str| {
            ["clean", "info", "warning", "error"]
                .iter()
                .position(|x| *x == s)
        };
        i32::from(rank(img) >= rank(level))
    };
    for (what, image) in &images {
        for level in ["info", "warning", "error"] {
            let (code, out, err) = run(
                d,
                &[
                    "audit",
                    image,
                    "--recipe",
                    recipe.to_str().unwrap(),
                    "--fail-on",
                    level,
                    "--json",
                    "-q",
                ],
            );
            assert_eq!(
                code,
                expect(what, level),
                "audit of the {what} image with --fail-on {level}: {out}{err}"
            );
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let ids: Vec<&str> = v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].as_str().unwrap())
                .collect();
            let want: &[&str] = match *what {
                "clean" => &[],
                "info" => &["setgid"],
                _ => &["setuid", "setgid"],
            };
            assert_eq!(ids, want, "{what}");
            let severity = |id: &str| if id == "setuid" { "warning" } else { "info" };
            let rank = |s: &str| ["info", "warning", "error"].iter().position(|x| *x == s);
            let failing = ids
                .iter()
                .filter(|id| rank(severity(id)) >= rank(level))
                .count();
            assert_eq!(v["failing"], failing, "{what} --fail-on {level}: {v}");
        }
    }
}

#[test]
fn policy_strict_fails_on_declaration_problems() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let base = base_tar(d, "base.tar", |b| b.dir("srv/data", 0o755));
    let good = write(
        d,
        "good.toml",
        &format!("{MINIMAL}[landlock]\npath = \"/etc/ll.json\"\nread_write = [\"/srv/data\"]\n"),
    );
    let bad = write(
        d,
        "bad.toml",
        &format!("{MINIMAL}[landlock]\npath = \"/etc/ll.json\"\nread_write = [\"/srv/nothere\"]\n"),
    );
    let image = build_image(d, &base, &good, "img");
    let policy = |recipe: &Path, strict: bool| {
        let mut a = vec![
            "policy",
            image.as_str(),
            "--recipe",
            recipe.to_str().unwrap(),
            "-q",
        ];
        if strict {
            a.push("--strict");
        }
        run(d, &a)
    };
    let warning = "warning: read_write path /srv/nothere does not exist in the image";
    let (code, out, err) = policy(&bad, false);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(warning), "{out}");
    let (code, out, err) = policy(&bad, true);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(warning), "{out}");
    let (code, out, err) = policy(&good, true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("warning:"), "{out}");
}

/// `policy`: the table stays aligned whatever the path length, a directory name from
/// the image cannot forge a row, and `--json` carries the same rows unescaped.
#[test]
fn policy_table_aligns_and_json_matches() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let long = "srv/a-directory-name-well-beyond-twenty-four-characters";
    let forged = "srv/data/x\nforged                  nobody   read_write";
    let base = base_tar(d, "base.tar", |b| {
        b.dir(long, 0o755).dir("srv/data", 0o755).dir(forged, 0o755)
    });
    let recipe = write(
        d,
        "r.toml",
        &format!(
            "{MINIMAL}[landlock]\npath = \"/etc/ll.json\"\nread_only = [\"/usr\"]\nread_write = [\"/{long}\", \"/srv/data\"]\nusers = [\"nobody\", \"root\"]\n"
        ),
    );
    let image = build_image(d, &base, &recipe, "img");
    let r = recipe.to_str().unwrap();
    let (code, out, err) = run(d, &["policy", &image, "--recipe", r, "-q"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    // Header + 4 paths (/usr, the long one, /srv/data, its child) x 2 users.
    assert_eq!(lines.len(), 9, "{out}");
    assert!(!lines.iter().any(|l| l.starts_with("forged")), "{out}");
    assert!(out.contains("/srv/data/x\\nforged "), "{out}");
    // Where each header column starts, every row has a cell boundary.
    let b = lines[0].as_bytes();
    let starts: Vec<usize> = (1..b.len())
        .filter(|&i| b[i] != b' ' && b[i - 1] == b' ')
        .collect();
    assert_eq!(starts.len(), 6, "{out}");
    for l in &lines[1..] {
        let b = l.as_bytes();
        for &s in &starts {
            assert!(
                b.len() > s && b[s - 1] == b' ' && b[s] != b' ',
                "column at {s} misaligned in {l:?}:\n{out}"
            );
        }
    }
    let (code, out, err) = run(d, &["policy", &image, "--recipe", r, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("policy --json is JSON");
    let access = v["access"].as_array().expect("access rows");
    assert_eq!(access.len(), 8, "{v}");
    let paths: Vec<&str> = access.iter().filter_map(|a| a["path"].as_str()).collect();
    assert!(paths.contains(&format!("/{long}").as_str()), "{v}");
    assert!(paths.contains(&format!("/{forged}").as_str()), "{v}");
    let row = access
        .iter()
        .find(|a| a["path"] == "/srv/data" && a["user"] == "root")
        .expect("root row");
    assert_eq!(row["declared"], "read_write", "{row}");
    assert_eq!(row["effective_write"], true, "{row}");
    assert!(
        v["warnings"].as_array().is_some_and(|w| w.is_empty()),
        "{v}"
    );
}

/// `nemoclaw-build audit BIG | head -1`: the command ends quietly when its reader goes
/// away (SIGPIPE), it does not panic in println!.
#[test]
fn output_into_a_closed_pipe_is_no_panic() {
    use std::io::Read;
    let t = tempfile::tempdir().unwrap();
    // 4000 files of an unknown owner: one finding line each, far more than a pipe holds.
    let tar = base_tar(t.path(), "big.tar", |mut b| {
        for i in 0..4000 {
            b = b.file_owned(&format!("usr/bin/f{i:05}"), b"x", 0o644, 4242, 0);
        }
        b
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_nemoclaw-build"))
        .arg("audit")
        .arg(format!("tar:{}", tar.display()))
        .arg("-q")
        .env("XDG_CACHE_HOME", t.path().join("xdg-cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then the pipe closes
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

/// A file name with a newline cannot forge a line of the `audit` table.
#[test]
fn audit_table_escapes_control_characters_in_paths() {
    let t = tempfile::tempdir().unwrap();
    let name = "usr/bin/x\nerror    fake-rule                  /etc/shadow";
    let tar = base_tar(t.path(), "nl.tar", |b| {
        b.file_owned(name, b"x", 0o644, 4242, 0)
    });
    let (_, out, err) = run(
        t.path(),
        &["audit", &format!("tar:{}", tar.display()), "-q"],
    );
    assert!(
        !out.lines()
            .any(|l| l.contains("fake-rule") && !l.contains("usr/bin/x")),
        "{out}\n{err}"
    );
    assert!(out.contains("usr/bin/x\\nerror"), "{out}\n{err}");
}

/// `keygen`, `build --sign-key`, `verify --key`: exit 0 with the right key, 1 with a
/// wrong one, 2 when the key file is missing; a world-readable key is refused.
#[test]
fn sign_and_verify_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let base = base_tar(d, "base.tar", |b| b);
    let recipe = write(d, "r.toml", MINIMAL);
    for name in ["k", "w"] {
        let (code, _, err) = run(d, &["keygen", "--out", &d.join(name).display().to_string()]);
        assert_eq!(code, 0, "{err}");
    }
    let key = d.join("k.key").display().to_string();
    let image = format!("oci:{}:t", d.join("img").display());
    let build = |key: &str| {
        run(
            d,
            &[
                "build",
                "--base",
                &format!("tar:{}", base.display()),
                "--recipe",
                &recipe.display().to_string(),
                "--output",
                &image,
                "--sign-key",
                key,
                "--quiet",
            ],
        )
    };
    let (code, _, err) = build(&key);
    assert_eq!(code, 0, "{err}");
    let verify = |public: &str| run(d, &["verify", "--key", public, &image]);
    let (code, out, err) = verify(&d.join("k.pub").display().to_string());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dependencies = build record"), "{out}");
    let (code, out, _) = verify(&d.join("w.pub").display().to_string());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not verify with the given key"), "{out}");
    let (code, _, err) = verify(&d.join("missing.pub").display().to_string());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.pub"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("k.key"), std::fs::Permissions::from_mode(0o604)).unwrap();
    let (code, _, err) = build(&key);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("lets other users read") && !err.contains("PRIVATE"),
        "{err}"
    );
}

/// `--help` works; a build without `--base`, with an unknown transport, or with missing
/// artifacts fails before writing anything, without a panic. (These were the e2e `cli`
/// section.)
#[test]
fn help_and_bad_build_inputs() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let (code, out, err) = run(d, &["--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Usage: nemoclaw-build"), "{out}");
    let base = base_tar(d, "base.tar", |b| b);
    let base = format!("tar:{}", base.display());
    let missing = d.join("does-not-exist").display().to_string();
    let recipe = write(
        d,
        "r.toml",
        &format!("{MINIMAL}[artifacts]\ndest = \"/opt/app\"\n"),
    );
    let cases: [(&str, Vec<&str>, &str); 3] = [
        (
            "no --base",
            vec!["--artifacts", d.to_str().unwrap()],
            "--base",
        ),
        ("bad transport", vec!["--base", "ftp:x.tar"], "transport"),
        (
            "missing artifacts",
            vec!["--base", &base, "--artifacts", &missing],
            "does-not-exist",
        ),
    ];
    for (what, args, needle) in cases {
        let out = format!("oci:{}:t", d.join("out").display());
        let mut a = vec![
            "build",
            "--output",
            &out,
            "--recipe",
            recipe.to_str().unwrap(),
        ];
        a.extend(args);
        let (code, _, err) = run(d, &a);
        assert_ne!(code, 0, "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(
            err.contains(needle),
            "{what}: error must say {needle:?}: {err}"
        );
        assert!(!d.join("out").exists(), "{what}: an output was left");
    }
}

/// A signing key its group may read: the build signs, and says so with a
/// `key-permissions` warning, in the `--json` summary too.
#[test]
fn group_readable_key_is_a_coded_warning() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let base = base_tar(d, "base.tar", |b| b);
    let recipe = write(d, "r.toml", MINIMAL);
    let (code, _, err) = run(d, &["keygen", "--out", &d.join("k").display().to_string()]);
    assert_eq!(code, 0, "{err}");
    let key = d.join("k.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, out, err) = run(
        d,
        &[
            "build",
            "--base",
            &format!("tar:{}", base.display()),
            "--recipe",
            recipe.to_str().unwrap(),
            "--output",
            &format!("oci:{}:t", d.join("img").display()),
            "--sign-key",
            key.to_str().unwrap(),
            "--no-cache",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let details = v["warning_details"].as_array().expect("warning_details");
    assert_eq!(details.len(), 1, "{v:#}");
    assert_eq!(details[0]["code"], "key-permissions", "{v:#}");
    let msg = details[0]["message"].as_str().unwrap();
    assert!(msg.contains("group"), "{msg}");
    assert_eq!(v["warnings"], serde_json::json!([msg]), "{v:#}");
    // Printed even though --json silences progress.
    assert!(err.contains(&format!("warning: {msg}")), "{err}");
}

/// `verify --insecure-registry HOST` talks plain HTTP to a registry that is not on
/// loopback, as `build` and `index` do; without it, HTTPS and a hint to pass it.
/// (`.invalid` never resolves, so neither run reaches a network.)
#[test]
fn verify_takes_insecure_registry() {
    let t = tempfile::tempdir().unwrap();
    let image = format!(
        "registry://registry.invalid:5000/a/b@sha256:{}",
        "0".repeat(64)
    );
    let r = common::run(
        t.path(),
        &[
            "verify",
            &image,
            "--insecure-registry",
            "registry.invalid:5000",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("http://registry.invalid:5000"),
        "{}",
        r.stderr
    );
    let r = common::run(t.path(), &["verify", &image]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("https://registry.invalid:5000")
            && r.stderr
                .contains("pass --insecure-registry registry.invalid:5000"),
        "{}",
        r.stderr
    );
}
