//! Multi-platform builds end to end on generated bases (issue 13): one index whatever
//! the platform order, each image with the init of its own machine, refusals before
//! any work, and the readers picking a platform out of the index.
use crate::compress::{Algorithm, Settings};
use crate::elf::{EM_AARCH64, EM_X86_64};
use crate::imageref::ImageRef;
use crate::oci::Digest;
use crate::pipeline::{build, BuildOptions, PurgeMode};
use crate::platform::Platform;
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::source::OpenOptions;
use crate::targets::{build_platforms, Target};
use crate::testutil::TarBuilder;
use serde_json::Value;
use std::path::{Path, PathBuf};

const RECIPE: &str = r#"
name = "t"
[init]
path = "/init"
[[fs]]
op = "file"
path = "/etc/motd"
content = "hi\n"
[artifacts]
dest = "/opt/app"
"#;

fn elf(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

/// A rootfs tarball whose /bin/sh (through usrmerge symlinks) is an ELF of `machine`.
pub(crate) fn rootfs_tar(machine: u16) -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .symlink("bin", "usr/bin")
        .dir("usr/bin", 0o755)
        .symlink("usr/bin/sh", "dash")
        .file("usr/bin/dash", &elf(machine), 0o755)
        .build()
}

/// [`rootfs_tar`] written to DIR/NAME, as a `tar:` base reference.
fn base(dir: &Path, name: &str, machine: u16) -> String {
    let p = dir.join(name);
    std::fs::write(&p, rootfs_tar(machine)).unwrap();
    format!("tar:{}", p.display())
}

fn art(dir: &Path) -> PathBuf {
    let a = dir.join("art");
    std::fs::create_dir_all(a.join("dist")).unwrap();
    std::fs::write(a.join("dist/x.js"), "1").unwrap();
    a
}

pub(crate) fn opts(base: &str, out: &str, art: &Path) -> BuildOptions {
    BuildOptions {
        base: ImageRef::parse(base).unwrap(),
        output: ImageRef::parse(out).unwrap(),
        recipe: Recipe::parse(RECIPE.as_bytes(), "t.toml", Path::new(".")).unwrap(),
        artifacts: Some(art.to_path_buf()),
        artifacts_image: None,
        purge_mode: PurgeMode::Rewrite,
        compression: Settings::new(Algorithm::Gzip, None, Some(1)).unwrap(),
        epoch: 1_700_000_000,
        build_args: Default::default(),
        strict: false,
        open: OpenOptions::default(),
        progress: Progress::silent(),
        cache: None,
        remote_cache: Default::default(),
        sbom: None,
        record: None,
        arch: Default::default(),
        attest: Default::default(),
    }
}

pub(crate) fn target(p: &str, base: &str, art: &Path) -> Target {
    Target {
        platform: Platform::parse(p).unwrap(),
        base: ImageRef::parse(base).unwrap(),
        artifacts: Some(art.to_path_buf()),
    }
}

pub(crate) fn json_blob(layout: &Path, digest: &str) -> Value {
    let d = Digest::parse(digest).unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(d.hex())).unwrap())
        .unwrap()
}

pub(crate) struct Fixture {
    _t: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) amd: String,
    pub(crate) arm: String,
    pub(crate) art: PathBuf,
}

impl Fixture {
    /// The one-run two-platform build of the fixture's bases and artifacts into `out`.
    pub(crate) fn build_both(&self, out: &str) -> crate::targets::MultiSummary {
        build_platforms(
            opts(&self.amd, out, &self.art),
            vec![
                target("linux/amd64", &self.amd, &self.art),
                target("linux/arm64", &self.arm, &self.art),
            ],
        )
        .unwrap()
    }
}

pub(crate) fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    Fixture {
        amd: base(&dir, "amd.tar", EM_X86_64),
        arm: base(&dir, "arm.tar", EM_AARCH64),
        art: art(&dir),
        dir,
        _t: t,
    }
}

/// Two platforms make one OCI index (whatever order they are given in), each entry
/// naming its platform, each image with its config architecture and the init of
/// its own machine, recorded per platform.
#[test]
fn two_platforms_make_one_index_in_any_order() {
    let f = fixture();
    let out1 = f.dir.join("o1");
    let out2 = f.dir.join("o2");
    let o = |out: &Path| opts(&f.amd, &format!("oci:{}:multi", out.display()), &f.art);
    let s1 = build_platforms(
        o(&out1),
        vec![
            target("linux/arm64", &f.arm, &f.art),
            target("linux/amd64", &f.amd, &f.art),
        ],
    )
    .unwrap();
    let s2 = build_platforms(
        o(&out2),
        vec![
            target("linux/amd64", &f.amd, &f.art),
            target("linux/arm64", &f.arm, &f.art),
        ],
    )
    .unwrap();
    assert_eq!(s1.digest, s2.digest, "platform order changed the index");
    let top: Value =
        serde_json::from_slice(&std::fs::read(out1.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(top["manifests"][0]["digest"], s1.digest.as_str());
    let idx = json_blob(&out1, &s1.digest);
    let entries = idx["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (e, (arch, machine, target)) in entries.iter().zip([
        ("amd64", EM_X86_64, "x86_64"),
        ("arm64", EM_AARCH64, "aarch64-unknown-linux-musl"),
    ]) {
        assert_eq!(e["platform"]["architecture"], arch);
        let m = json_blob(&out1, e["digest"].as_str().unwrap());
        let cfg = json_blob(&out1, m["config"]["digest"].as_str().unwrap());
        assert_eq!(cfg["architecture"], arch);
        let rec: Value = serde_json::from_str(
            m["annotations"]["dev.nemoclaw.build.record"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert!(
            rec["init"]["target"].as_str().unwrap().starts_with(target),
            "{rec}"
        );
        assert_eq!(rec["platform"], format!("linux/{arch}"));
        // The init in the image is of the image's machine.
        let mut img = crate::diff::open(
            &format!("oci:{}:multi", out1.display()),
            &OpenOptions {
                platform: Some(format!("linux/{arch}")),
                ..Default::default()
            },
        )
        .unwrap();
        let fs = img.index(&Progress::silent()).unwrap();
        assert_eq!(fs.get("init").map(|n| n.machine()), Some(machine));
        let init = crate::steps::embedded_init(crate::platform::Arch::from_name(arch).unwrap())
            .unwrap()
            .0;
        assert_eq!(crate::elf::machine(init), Some(machine));
    }
}

/// The platform manifest in an index is the image a single-platform build of the
/// same base and platform makes: `verify --platform` and a later `index` command
/// can rebuild it alone.
#[test]
fn each_platform_is_the_single_platform_build() {
    let f = fixture();
    let multi = f.dir.join("multi");
    let s = f.build_both(&format!("oci:{}", multi.display()));
    let mut single = opts(
        &f.arm,
        &format!("oci:{}", f.dir.join("one").display()),
        &f.art,
    );
    single.open.platform = Some("linux/arm64".into());
    let one = build(single).unwrap();
    assert_eq!(s.platforms["linux/arm64"].digest, one.digest);
}

/// An arm64 rootfs given as amd64 is refused, naming both machines; so is a plain
/// tar base of the other machine than the host built without a platform (the
/// default is the host's).
#[test]
fn a_rootfs_of_another_machine_is_refused() {
    let f = fixture();
    let out = format!("oci:{}", f.dir.join("o").display());
    let e = build_platforms(
        opts(&f.amd, &out, &f.art),
        vec![
            target("linux/amd64", &f.arm, &f.art),
            target("linux/arm64", &f.arm, &f.art),
        ],
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("platform linux/amd64")
            && msg.contains("aarch64-linux-gnu (ELF machine 183)")
            && msg.contains("x86_64-linux-gnu (ELF machine 62)"),
        "{msg}"
    );
    assert!(
        !f.dir.join("o").exists(),
        "a failed build published something"
    );
    // Without a platform a tar base is of the host's: a rootfs of the other machine fails.
    let foreign = if crate::source::host_arch() == "arm64" {
        &f.amd
    } else {
        &f.arm
    };
    let e = build(opts(foreign, &out, &f.art)).unwrap_err();
    assert!(format!("{e:#}").contains("/bin/sh"), "{e:#}");
}

/// docker-archive holds one image and an SBOM file one document: both refused
/// before any work, saying what to do instead.
#[test]
fn docker_archive_and_sbom_are_refused_up_front() {
    let f = fixture();
    let two = || {
        vec![
            target("linux/amd64", &f.amd, &f.art),
            target("linux/arm64", &f.arm, &f.art),
        ]
    };
    let da = f.dir.join("x.tar");
    let e = build_platforms(
        opts(&f.amd, &format!("docker-archive:{}", da.display()), &f.art),
        two(),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("pick one with --platform"),
        "{e:#}"
    );
    assert!(!da.exists());
    let mut o = opts(
        &f.amd,
        &format!("oci:{}", f.dir.join("o").display()),
        &f.art,
    );
    o.sbom = Some(f.dir.join("s.json"));
    let e = build_platforms(o, two()).unwrap_err();
    assert!(format!("{e:#}").contains("sbom --platform"), "{e:#}");
    // linux/arm64 and linux/arm64/v8 are one platform: given twice, naming both bases.
    let out = f.dir.join("v8");
    let e = build_platforms(
        opts(&f.arm, &format!("oci:{}", out.display()), &f.art),
        vec![
            target("linux/arm64", &f.arm, &f.art),
            target("linux/arm64/v8", &f.amd, &f.art),
        ],
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("platform linux/arm64 is given twice")
            && msg.contains(&f.arm)
            && msg.contains(&f.amd),
        "{msg}"
    );
    assert!(!out.exists());
}

/// A native addon built for another machine fails the platform it does not fit.
#[test]
fn a_foreign_native_addon_fails_its_platform() {
    let f = fixture();
    let a = f.dir.join("art-arm");
    std::fs::create_dir_all(a.join("build")).unwrap();
    std::fs::write(a.join("build/addon.node"), elf(EM_AARCH64)).unwrap();
    let out = format!("oci:{}", f.dir.join("o").display());
    let t = vec![
        target("linux/amd64", &f.amd, &a),
        target("linux/arm64", &f.arm, &a),
    ];
    let e = build_platforms(opts(&f.amd, &out, &a), t).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("platform linux/amd64") && msg.contains("/opt/app/build/addon.node"),
        "{msg}"
    );
    let mut single = opts(&f.arm, &out, &a);
    single.open.platform = Some("linux/arm64".into());
    build(single).unwrap();
}

/// The index output is an index base for the readers: its platforms are listed
/// (`--platform all`), `diff` pairs the platforms of two indexes and names the
/// file that differs in each.
#[test]
fn readers_list_and_pair_platforms() {
    let f = fixture();
    let build_to = |name: &str, art: &Path| {
        let out = format!("oci:{}", f.dir.join(name).display());
        build_platforms(
            opts(&f.amd, &out, art),
            vec![
                target("linux/amd64", &f.amd, art),
                target("linux/arm64", &f.arm, art),
            ],
        )
        .unwrap();
        out
    };
    let a = build_to("a", &f.art);
    let b = build_to("b", &f.art);
    let other = f.dir.join("art2");
    std::fs::create_dir_all(other.join("dist")).unwrap();
    std::fs::write(other.join("dist/x.js"), "2").unwrap();
    let c = build_to("c", &other);
    let platforms =
        crate::source::index_platforms(&ImageRef::parse(&a).unwrap(), &OpenOptions::default())
            .unwrap();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let p = Progress::silent();
    let pairs = crate::diff::indexes::both_indexes(&a, &b).unwrap();
    let same = crate::diff::indexes::compare_indexes((&a, &b), pairs, false, &p).unwrap();
    assert!(same.identical && same.platforms.len() == 2);
    let pairs = crate::diff::indexes::both_indexes(&a, &c).unwrap();
    let diff = crate::diff::indexes::compare_indexes((&a, &c), pairs, false, &p).unwrap();
    assert!(!diff.identical);
    let text = crate::diff::indexes::render_index(&diff, false);
    for p in [
        "platform linux/amd64:",
        "platform linux/arm64:",
        "/opt/app/dist/x.js",
    ] {
        assert!(text.contains(p), "{p} not in:\n{text}");
    }
    // A single image is no index: compared as before.
    let single = f.dir.join("single");
    let mut o = opts(&f.amd, &format!("oci:{}", single.display()), &f.art);
    o.open.platform = Some("linux/amd64".into());
    build(o).unwrap();
    assert!(crate::diff::indexes::both_indexes(&a, &format!("oci:{}", single.display())).is_none());
}

/// `oci-archive:` output: the archive holds the index, which readers open by platform.
#[test]
fn oci_archive_holds_the_index() {
    let f = fixture();
    let path = f.dir.join("multi.tar");
    let out = format!("oci-archive:{}:m", path.display());
    let s = f.build_both(&out);
    let r = ImageRef::parse(&out).unwrap();
    let (digest, entries) = crate::source::open_index(&r, &OpenOptions::default()).unwrap();
    assert_eq!(digest, s.digest);
    assert_eq!(entries.len(), 2);
    let arm = crate::source::open_image(
        &r,
        &OpenOptions {
            platform: Some("linux/arm64".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(arm.config["architecture"], "arm64");
    assert_eq!(
        arm.manifest_digest.as_deref(),
        Some(s.platforms["linux/arm64"].digest.as_str())
    );
}

/// One image-index builder serves every platform: each platform image gets the files of
/// its own manifest, and names that manifest in its record.
#[test]
fn an_index_builder_gives_each_platform_its_own_artifacts() {
    let f = fixture();
    let b = f.dir.join("builder");
    let descs = crate::pipeline_tests::write_index_layout(&b, |arch| {
        TarBuilder::new()
            .dir("srv/app", 0o755)
            .file("srv/app/arch.txt", arch.as_bytes(), 0o644)
            .build()
    });
    let out = f.dir.join("out");
    let mut o = opts(&f.amd, &format!("oci:{}:m", out.display()), &f.art);
    o.artifacts = None;
    o.artifacts_image = Some(
        crate::steps::builder::BuilderSpec::new(&format!("oci:{}:latest", b.display()), "/srv/app")
            .unwrap(),
    );
    let no_art = |p: &str, base: &str| Target {
        artifacts: None,
        ..target(p, base, &f.art)
    };
    let targets = vec![no_art("linux/amd64", &f.amd), no_art("linux/arm64", &f.arm)];
    let s = build_platforms(o, targets).unwrap();
    let idx = json_blob(&out, &s.digest);
    for (arch, d) in ["amd64", "arm64"].iter().zip(&descs) {
        let mut img = crate::diff::open(
            &format!("oci:{}:m", out.display()),
            &OpenOptions {
                platform: Some(format!("linux/{arch}")),
                ..Default::default()
            },
        )
        .unwrap();
        let fs = img.index(&Progress::silent()).unwrap();
        let n = fs.get("opt/app/arch.txt").expect("artifact in the image");
        assert_eq!(n.size(), arch.len() as u64, "{arch}");
        let entry = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["platform"]["architecture"] == *arch)
            .unwrap();
        let m = json_blob(&out, entry["digest"].as_str().unwrap());
        let rec: Value = serde_json::from_str(
            m["annotations"]["dev.nemoclaw.build.record"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(rec["artifacts_image"]["digest"], d["digest"], "{arch}");
    }
}

/// With a signing key, every platform image of the index gets its own signature and
/// provenance, each naming that platform's manifest as its subject.
#[test]
fn each_platform_image_is_signed_on_its_own() {
    let f = fixture();
    let out = f.dir.join("signed");
    let mut o = opts(&f.amd, &format!("oci:{}:m", out.display()), &f.art);
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    o.attest =
        crate::attest::AttestOptions::new(Some(crate::attest::keys::Signer::from_key(key)), None)
            .unwrap();
    let s = build_platforms(
        o,
        vec![
            target("linux/amd64", &f.amd, &f.art),
            target("linux/arm64", &f.arm, &f.art),
        ],
    )
    .unwrap();
    let idx = json_blob(&out, &s.digest);
    let platforms: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect();
    let top: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    for p in &platforms {
        let referrers: Vec<&Value> = top["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                json_blob(&out, e["digest"].as_str().unwrap())["subject"]["digest"] == p.as_str()
            })
            .collect();
        // a cosign signature and the provenance
        assert_eq!(referrers.len(), 2, "referrers of {p}: {referrers:?}");
    }
}
