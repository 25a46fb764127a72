//! Golden digests: a fixed small build (two-layer base with a dpkg database, a recipe
//! that exercises purge, accounts, files, hooks, ownership, sanitize and artifacts) must
//! produce these exact manifest digests. They pin every output byte (tar headers,
//! compression, JSON), so a refactor provably changes nothing. If an output change is
//! intended, update the constants and say so in CHANGELOG.md.
use crate::compress::{Algorithm, Settings};
use crate::pipeline::{build, BuildOptions, PurgeMode};
use crate::pipeline_tests::{opts, write_layout};
use crate::recipe::Recipe;
use crate::testutil::TarBuilder;
use std::path::Path;

const RECIPE: &str = r##"
name = "golden"
[image]
entrypoint = ["/bin/sh"]
cmd = ["-c", "true"]
user = "sandbox"
workdir = "/sandbox"
[image.env]
PATH = "/usr/bin:/bin"
[image.labels]
"org.opencontainers.image.title" = "golden"
[packages]
purge = ["cc"]
keep = ["keepme"]
autoremove = true
forbid = ["cc"]
require = ["sh"]
forbid_elf = ['^(cc|gcc)$']
[sanitize]
strip_setid = true
remove_devices = true
[[groups]]
name = "sandbox"
gid = 998
[[users]]
name = "sandbox"
uid = 998
gid = 998
home = "/sandbox"
shell = "/bin/sh"
[[fs]]
op = "dir"
path = "/sandbox"
owner = "sandbox"
group = "sandbox"
mode = "0755"
[[fs]]
op = "file"
path = "/sandbox/.bashrc"
content = "# locked\n"
owner = "root"
group = "root"
mode = "0444"
[[fs]]
op = "file"
path = "/etc/profile.d/hook.sh"
content = "[ -f /tmp/env.sh ] && . /tmp/env.sh\n"
mode = "0444"
[[fs]]
op = "prepend"
path = "/etc/bash.bashrc"
lines = ["[ -f /tmp/env.sh ] && . /tmp/env.sh"]
[[fs]]
op = "remove"
path = "/usr/share/doc"
[[fs]]
op = "chown"
path = "/sandbox"
owner = "sandbox"
group = "sandbox"
recursive = true
[artifacts]
dest = "/opt/app"
"##;

/// `cc` depends on `libcc` (auto-installed, so autoremove takes it); `keepme` stays.
fn base(dir: &Path) {
    let stanza = |name: &str, extra: &str| {
        format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\nInstalled-Size: 1\nMaintainer: T <t@example.org>\nArchitecture: amd64\nVersion: 1.0\n{extra}Description: {name}\n"
        )
    };
    let status = [
        stanza("cc", "Depends: libcc\n"),
        stanza("libcc", ""),
        stanza("keepme", ""),
    ]
    .join("\n");
    let list = |files: &[&str]| {
        let mut s = String::from("/.\n/usr\n/usr/bin\n");
        for f in files {
            s.push_str(f);
            s.push('\n');
        }
        s
    };
    let l0 = TarBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640)
        .file("etc/bash.bashrc", b"# system bashrc\n", 0o644)
        .dir("usr/bin", 0o755)
        .file("usr/bin/sh", b"#!shell\n", 0o755)
        .file("usr/bin/cc", b"#!cc\n", 0o755)
        .file("usr/bin/keepme", b"#!k\n", 0o755)
        .file_owned("usr/bin/su", b"#!su\n", 0o4755, 0, 0)
        .dir("usr/lib", 0o755)
        .file("usr/lib/libcc.so", b"lib", 0o644)
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/readme", &[b'd'; 3000], 0o644)
        .dir("var/lib/dpkg/info", 0o755)
        .file("var/lib/dpkg/status", status.as_bytes(), 0o644)
        .dir("var/lib/apt", 0o755)
        .file(
            "var/lib/apt/extended_states",
            b"Package: libcc\nArchitecture: amd64\nAuto-Installed: 1\n",
            0o644,
        )
        .file(
            "var/lib/dpkg/info/cc.list",
            list(&["/usr/bin/cc"]).as_bytes(),
            0o644,
        )
        .file(
            "var/lib/dpkg/info/libcc.list",
            b"/.\n/usr\n/usr/lib\n/usr/lib/libcc.so\n",
            0o644,
        )
        .file(
            "var/lib/dpkg/info/keepme.list",
            list(&["/usr/bin/keepme"]).as_bytes(),
            0o644,
        )
        .build();
    let l1 = TarBuilder::new()
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/.wh.readme", b"", 0o644)
        .file("usr/share/doc/new", b"n", 0o644)
        .dir("etc", 0o755)
        .file("etc/motd", b"hello\n", 0o644)
        .build();
    write_layout(dir, &[l0, l1]);
}

fn golden(mode: PurgeMode, algo: Algorithm) -> String {
    let t = tempfile::tempdir().unwrap();
    base(&t.path().join("base"));
    let art = t.path().join("art");
    std::fs::create_dir_all(art.join("dist")).unwrap();
    std::fs::write(art.join("dist/index.js"), "console.log(1)\n").unwrap();
    std::fs::write(art.join("package.json"), "{}\n").unwrap();
    // The shared test options (epoch 1700000000, quiet, no cache), with this build's
    // recipe and compression.
    let mut o = opts(
        &format!("oci:{}:latest", t.path().join("base").display()),
        &format!("oci:{}", t.path().join("out").display()),
        mode,
        Some(&art),
    );
    o.recipe = Recipe::parse(RECIPE.as_bytes(), "golden.toml", Path::new(".")).unwrap();
    o.compression = Settings::new(algo, None, Some(2)).unwrap();
    let digest = build_with_stand_in_init(o);
    if std::env::var_os("GOLDEN_KEEP").is_some() {
        eprintln!("kept {}", t.keep().display());
        return digest;
    }
    // What the digest pins is a build that did the work: purge with autoremove,
    // sanitize, accounts, files, artifacts.
    let fs = crate::pipeline_tests::final_fs(&format!("oci:{}", t.path().join("out").display()));
    for gone in ["usr/bin/cc", "usr/lib/libcc.so", "usr/share/doc/new"] {
        assert!(
            fs.get(gone).is_none(),
            "{gone} survived in {mode:?}: {:?}",
            fs.get(gone)
        );
    }
    for kept in [
        "usr/bin/keepme",
        "etc/motd",
        "opt/app/dist/index.js",
        "etc/profile.d/hook.sh",
    ] {
        assert!(fs.get(kept).is_some(), "{kept} missing");
    }
    assert_eq!(fs.get("usr/bin/su").unwrap().mode & 0o7777, 0o755);
    assert_eq!(fs.get("sandbox").unwrap().uid, 998);
    digest
}

/// A fixed stand-in for the embedded init: the build record names the init's digest, and
/// the real binary changes with init code and toolchains, which are not what these pin.
const STAND_IN_INIT: &[u8] = b"\x7fELF golden stand-in init";

fn build_with_stand_in_init(o: BuildOptions) -> String {
    crate::steps::TEST_INIT.with(|c| c.set(Some(STAND_IN_INIT)));
    let r = build(o);
    crate::steps::TEST_INIT.with(|c| c.set(None));
    r.unwrap().digest
}

fn check(case: &str, got: String, want: &str) {
    assert_eq!(
        got, want,
        "golden digest of the {case} build changed: if the output change is intended, \
         update the constant in src/golden_tests.rs and say so in CHANGELOG.md"
    );
}

#[test]
fn golden_rewrite_gzip() {
    check(
        "rewrite/gzip",
        golden(PurgeMode::Rewrite, Algorithm::Gzip),
        "sha256:8384979ae4013f77fa72fc3e2040538dce9166eb27f6d9fb37724caa8d6bcd5f",
    );
}

#[test]
fn golden_whiteout_gzip() {
    check(
        "whiteout/gzip",
        golden(PurgeMode::Whiteout, Algorithm::Gzip),
        "sha256:b8b1b73e11b61557bf79ecf65ed737e7f0df95a52279f7e161222fcad8cf9001",
    );
}

#[test]
fn golden_rewrite_zstd() {
    check(
        "rewrite/zstd",
        golden(PurgeMode::Rewrite, Algorithm::Zstd),
        "sha256:f4f478844e87985e8effe93c56b157a06ccc77683650508e300db52131387caa",
    );
}

/// A Docker-style base config: nulls, Docker-only fields, unknown fields, a history
/// that covers the layers (`covering`) or not. The build must keep what it does not
/// own byte for byte (nulls stay null, unknown fields stay), drop the Docker-only
/// fields, and merge Env/Labels; the typed config model must reproduce it exactly.
fn docker_style(covering: bool) -> (String, String) {
    use serde_json::json;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("base");
    let layer = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/motd", b"hello\n", 0o644)
        .build();
    let history = if covering {
        json!([
            {"created": null, "created_by": "/bin/sh -c #(nop) ADD file:abc in /", "author": "x", "empty_layer": null},
            {"created": "2020-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) CMD [\"sh\"]", "empty_layer": true},
            {"created_by": "ENV A=1", "empty_layer": true, "comment": "buildkit", "x": 1}
        ])
    } else {
        json!([{"created_by": "a"}, {"created_by": "b"}])
    };
    let diff_id = crate::digest::sha256_digest(&layer);
    let config = json!({
        "architecture": "amd64", "os": "linux", "variant": "v8", "os.version": "1",
        "author": "someone", "created": "2021-02-03T04:05:06.123456789Z",
        "container": "0123abcd", "docker_version": "20.10.7", "id": "ab", "parent": "cd",
        "container_config": {"Cmd": ["/bin/sh"], "Image": "sha256:00"},
        "size": 12345, "weird": {"z": [1, 2.5, -3, null, true], "a": "\u{1}\u{e9}<>&"},
        "config": {
            "Hostname": "", "User": "", "Entrypoint": null, "Cmd": ["sh"], "WorkingDir": null,
            "Env": ["PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8"],
            "Labels": {"maintainer": "m", "org.opencontainers.image.title": "base"},
            "OnBuild": null, "Volumes": null, "ExposedPorts": {"80/tcp": {}},
            "Healthcheck": {"Test": ["NONE"]}, "StopSignal": "SIGTERM"
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": history,
    });
    crate::pipeline_tests::write_layout_config(&dir, &[layer], config);
    let recipe = r#"
name = "docker-style"
[image]
entrypoint = ["/bin/sh"]
build_args = ["REV"]
[image.env]
PATH = "/usr/bin:/bin"
NEW = "1"
[image.labels]
"org.opencontainers.image.title" = "golden"
[[fs]]
op = "file"
path = "/etc/motd"
content = "hi\n"
"#;
    let record = t.path().join("record.json");
    let mut o = opts(
        &format!("oci:{}:latest", dir.display()),
        &format!("oci:{}", t.path().join("out").display()),
        PurgeMode::Whiteout,
        None,
    );
    o.recipe = Recipe::parse(recipe.as_bytes(), "docker-style.toml", Path::new(".")).unwrap();
    o.build_args = [("REV".to_string(), "r1".to_string())].into();
    o.record = Some(record.clone());
    let digest = build_with_stand_in_init(o);
    let rec = crate::digest::sha256_digest(&std::fs::read(&record).unwrap());
    if std::env::var_os("GOLDEN_KEEP").is_some() {
        eprintln!("kept {}", t.keep().display());
    }
    (digest, rec)
}

#[test]
fn golden_docker_style_config_history_kept() {
    let (digest, record) = docker_style(true);
    check(
        "docker-style/history kept",
        digest,
        "sha256:86fc627c422fe49d76449165a99fe7440ad6fe660d2748742a197ded9e1dd4eb",
    );
    check(
        "docker-style/history kept record file",
        record,
        "sha256:48900b8f655e0238d528deacb3560abc1db98eb758ffb7b08e1c6fc403ce2f53",
    );
}

#[test]
fn golden_docker_style_config_history_replaced() {
    let (digest, record) = docker_style(false);
    check(
        "docker-style/history replaced",
        digest,
        "sha256:9a8f2c0c6a64f9b440574ebe875ac09111e9ef9a21860563e5033aea34e35679",
    );
    check(
        "docker-style/history replaced record file",
        record,
        "sha256:0a4ec07811e7f4dc400c808b88c429abfe65f411cd0230182dff390f92c307ce",
    );
}
