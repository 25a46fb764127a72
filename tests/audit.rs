//! `audit` through the binary, on OCI layouts generated here: exit codes per
//! `--fail-on`, the `--json` and `--junit` reports, and the findings a hostile image
//! must produce (hidden bytes, same-layer whiteouts, devices, capabilities, ...).
//! (The e2e `audit` section keeps the checks on the real Debian base.)
mod common;

use common::{run, write, Run};
use nemoclaw_build::testing::{accounts, LayoutBuilder, Raw, TarBuilder};
use serde_json::{json, Value};
use std::path::Path;

/// No `require`d commands, so a plain image has no findings; `gcc` may not ship.
const RECIPE: &[u8] = b"name = \"audit\"\n[image]\nuser = \"nobody\"\n[packages]\nforbid_elf = [\"^gcc$\"]\n[audit]\nsecret_patterns = [\"TOKEN=\"]\n";

/// Writes a layout of `layers` (with `run` as its run config) to DIR/NAME.
fn layout(dir: &Path, name: &str, layers: &[Vec<u8>], run: Value) -> String {
    let mut b = LayoutBuilder::new().run_config(run);
    for l in layers {
        b = b.layer(l);
    }
    b.write(&dir.join(name));
    format!("oci:{}:latest", dir.join(name).display())
}

fn user_run() -> Value {
    json!({"User": "nobody", "Env": ["PATH=/usr/bin:/bin"]})
}

fn audit(dir: &Path, image: &str, extra: &[&str]) -> Run {
    let recipe = write(dir, "r.toml", RECIPE);
    let mut args = vec!["audit", image, "--recipe", &recipe, "-q"];
    args.extend_from_slice(extra);
    run(dir, &args)
}

/// (id, severity) of every finding in an `audit --json` report.
fn ids(v: &Value) -> Vec<(String, String)> {
    v["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {v}"))
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap_or("?").to_string(),
                f["severity"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// One finding of each severity: a setgid file (info), a setuid file (warning), a
/// secret in the environment (error). Exit 1 exactly when a finding is at or above
/// `--fail-on` (default error); `failing` counts them.
#[test]
fn fail_on_levels_set_exit_code_and_failing_count() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tar = accounts()
        .dir("usr/bin", 0o755)
        .file("usr/bin/sg", b"x", 0o2755)
        .file("usr/bin/su", b"x", 0o4755)
        .build();
    let env = json!({"User": "nobody", "Env": ["PATH=/usr/bin", "API_TOKEN=abc"]});
    let img = layout(d, "three", &[tar], env);
    let clean = layout(d, "clean", &[accounts().build()], user_run());
    for (level, code, failing) in [
        ("info", 1, 3),
        ("warning", 1, 2),
        ("error", 1, 1),
        ("", 1, 1),
    ] {
        let extra: &[&str] = if level.is_empty() {
            &["--json"]
        } else {
            &["--json", "--fail-on", level]
        };
        let r = audit(d, &img, extra);
        assert_eq!(
            r.code, code,
            "--fail-on {level:?}: {}{}",
            r.stdout, r.stderr
        );
        let v = r.json();
        assert_eq!(v["failing"], failing, "--fail-on {level:?}: {v}");
        let mut got = ids(&v);
        got.sort();
        let want = [
            ("secret", "error"),
            ("setgid", "info"),
            ("setuid", "warning"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want, "--fail-on {level:?}");
        let r = audit(d, &clean, extra);
        assert_eq!(r.code, 0, "clean image, --fail-on {level:?}: {}", r.stdout);
        assert_eq!(r.json()["failing"], 0);
    }
    // Only an info finding: fails at info, passes at warning and error.
    let info = layout(
        d,
        "info",
        &[accounts().file("etc/sg", b"x", 0o2755).build()],
        user_run(),
    );
    for (level, code) in [("info", 1), ("warning", 0), ("error", 0)] {
        let r = audit(d, &info, &["--fail-on", level]);
        assert_eq!(
            r.code, code,
            "info-only image, --fail-on {level}: {}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains("0 error(s), 0 warning(s), 1 info; 4 file(s) checked"),
            "--fail-on {level}: {}",
            r.stdout
        );
    }
}

/// `--junit`: one testcase per finding, a `<failure>` for each at or above `--fail-on`,
/// the counts in the suite's attributes, and XML-escaped paths and messages.
#[test]
fn junit_report_counts_failures_and_escapes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tar = accounts()
        .dir("srv", 0o755)
        .file("srv/a<b>&\"c\"", b"x", 0o4755)
        .file("srv/g", b"x", 0o2755)
        .build();
    let img = layout(d, "img", &[tar], user_run());
    let junit = d.join("audit.xml");
    let j = junit.display().to_string();
    let r = audit(d, &img, &["--junit", &j, "--fail-on", "warning", "--json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let xml = std::fs::read_to_string(&junit).expect("--junit file");
    assert!(xml.starts_with("<?xml version=\"1.0\""), "{xml}");
    assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 2, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert_eq!(xml.matches("<system-out>").count(), 1, "{xml}");
    assert!(
        xml.contains("name=\"/srv/a&lt;b&gt;&amp;&quot;c&quot;\""),
        "path not escaped: {xml}"
    );
    assert!(!xml.contains("a<b>"), "{xml}");
    assert_eq!(xml.matches("</testsuite>").count(), 1, "{xml}");
    // A clean image still has one (passing) testcase, and no failure.
    let clean = layout(d, "clean", &[accounts().build()], user_run());
    let r = audit(d, &clean, &["--junit", &j]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"1\" failures=\"0\""), "{xml}");
    assert!(xml.contains("name=\"no findings\""), "{xml}");
}

fn device(name: &[u8]) -> Raw {
    Raw::new(b'3', name, 0)
        .ustar()
        .field(329, b"0000001\0")
        .field(337, b"0000003\0")
}

/// A hostile image: a forbidden ELF hidden by a whiteout (its bytes still ship), a
/// layer holding a path and its own whiteout, a device node, a world-writable file, a
/// file of an unknown owner, a file with capabilities. Each is named by rule and path.
#[test]
fn hostile_layout_findings_are_named() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let lower = accounts()
        .dir("usr/bin", 0o755)
        .file(
            "usr/bin/gcc",
            b"\x7fELF\x02\x01\x01rest-of-a-compiler",
            0o755,
        )
        .build();
    let upper = TarBuilder::new()
        .dir("usr/bin", 0o755)
        .file("usr/bin/.wh.gcc", b"", 0o644)
        .dir("srv", 0o755)
        .file("srv/both", b"kept", 0o644)
        .file("srv/.wh.both", b"", 0o644)
        .raw(device(b"srv/tty"), b"")
        .file("srv/open", b"x", 0o666)
        .file_owned("srv/stranger", b"x", 0o644, 4242, 0)
        .pax(&[("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02")])
        .file("srv/capable", b"x", 0o755)
        .build();
    let img = layout(d, "hostile", &[lower, upper], user_run());
    let r = audit(d, &img, &["--json", "--fail-on", "warning"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    let findings = v["findings"].as_array().unwrap();
    let has = |id: &str, path: &str, sev: &str| {
        assert!(
            findings
                .iter()
                .any(|f| f["id"] == id && f["path"] == path && f["severity"] == sev),
            "expected {sev} finding {id} at {path}: {v:#}"
        )
    };
    for f in findings {
        for k in ["id", "severity", "path", "message"] {
            assert!(
                f[k].as_str().is_some_and(|v| !v.is_empty()),
                "finding without {k}: {f}"
            );
        }
    }
    has("bytes-still-shipped", "/usr/bin/gcc", "warning");
    has("whiteout-same-layer", "/srv/both", "warning");
    has("device-node", "/srv/tty", "warning");
    has("world-writable", "/srv/open", "warning");
    has("unknown-uid", "/srv/stranger", "warning");
    has("file-capability", "/srv/capable", "warning");
    assert_eq!(v["hidden_files"], 1, "{v}");
    // The whited-out compiler is not in the result.
    assert!(
        !findings.iter().any(|f| f["id"] == "elf-forbidden"
            || (f["path"] == "/usr/bin/gcc" && f["id"] != "bytes-still-shipped")),
        "{v:#}"
    );
}

/// An image that cannot be read is an error (exit 1, the layer named, no report on
/// stdout), never a panic or an empty "clean" report.
#[test]
fn unreadable_image_is_an_error_not_a_clean_report() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tar = accounts().file("etc/x", &vec![b'x'; 4096], 0o644).build();
    LayoutBuilder::new()
        .layer_mangled(&tar, |mut z| {
            let n = z.len();
            z.truncate(n / 2);
            z
        })
        .write(&d.join("broken"));
    let img = format!("oci:{}:latest", d.join("broken").display());
    let r = audit(d, &img, &["--json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.is_empty(),
        "a report for an unreadable image: {}",
        r.stdout
    );
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(r.stderr.contains("layer 1"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// An image audited from a registry by tag: the pull's `mutable-tag` warning reaches the
/// user even with `--quiet` (the command's reporter, not a silent default).
#[test]
fn registry_image_by_tag_warns() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    layout(d, "img", &[accounts().build()], user_run());
    let reg = nemoclaw_build::testing::TinyRegistry::serve(&d.join("img"));
    let image = format!("registry://{}/app:latest", reg.addr);
    let r = audit(d, &image, &["--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["failing"], 0);
    assert!(
        r.stderr
            .contains(&format!("warning: {image} is a tag, and tags move")),
        "{}",
        r.stderr
    );
}
