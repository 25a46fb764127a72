//! Builds `nemoclaw-init` as a static binary for each architecture an image can
//! have (x86_64 and aarch64) and embeds them into `nemoclaw-build`, so a user never
//! passes a path to an init (issue 5) and one run can build every platform (issue 13).
//!
//! A nested `cargo build` per target with its own target dir (inside OUT_DIR, so it
//! never waits on the outer build's lock). x86_64 prefers the musl target (small,
//! fully static) and falls back to `+crt-static` on the host gnu target. aarch64 is
//! cross-linked with the toolchain's own `rust-lld` (no C cross toolchain needed);
//! when its rustup target is missing the build goes on without it and arm64 images
//! are refused at run time with a hint to run scripts/setup.sh.
//! Exported: `NEMOCLAW_INIT_PATH`/`NEMOCLAW_INIT_TARGET` (x86_64) and, with cfg
//! `nemoclaw_init_aarch64`, `NEMOCLAW_INIT_AARCH64_PATH`/`NEMOCLAW_INIT_AARCH64_TARGET`.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const AARCH64_MUSL: &str = "aarch64-unknown-linux-musl";

fn main() {
    println!("cargo:rerun-if-changed=init/src");
    println!("cargo:rerun-if-changed=init/Cargo.toml");
    println!("cargo:rerun-if-changed=runtime-spec/src");
    println!("cargo:rerun-if-env-changed=NEMOCLAW_INIT_TARGET");
    println!("cargo::rustc-check-cfg=cfg(nemoclaw_init_aarch64)");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out.join("init-target");
    let musl = "x86_64-unknown-linux-musl";
    let host = env::var("HOST").unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());

    let mut candidates: Vec<(String, Option<&str>)> = Vec::new();
    if let Ok(t) = env::var("NEMOCLAW_INIT_TARGET") {
        candidates.push((t, None));
    } else {
        if host.starts_with("x86_64") && target_installed(musl) {
            candidates.push((musl.to_string(), None));
        }
        candidates.push((host.clone(), Some("-C target-feature=+crt-static")));
    }
    let mut errors = Vec::new();
    let mut built = None;
    for (target, rustflags) in candidates {
        match build_init(&target_dir, &target, rustflags, None) {
            Ok(bin) => {
                built = Some((bin, target));
                break;
            }
            Err(e) => errors.push(e),
        }
    }
    let Some((bin, target)) = built else {
        panic!(
            "could not build the static nemoclaw-init ({}); run scripts/setup.sh, which adds the musl target",
            errors.join("; ")
        );
    };
    println!("cargo:rustc-env=NEMOCLAW_INIT_PATH={}", bin.display());
    println!("cargo:rustc-env=NEMOCLAW_INIT_TARGET={target}");

    if target_installed(AARCH64_MUSL) {
        match build_init(&target_dir, AARCH64_MUSL, None, Some("rust-lld")) {
            Ok(bin) => {
                println!(
                    "cargo:rustc-env=NEMOCLAW_INIT_AARCH64_PATH={}",
                    bin.display()
                );
                println!("cargo:rustc-env=NEMOCLAW_INIT_AARCH64_TARGET={AARCH64_MUSL}");
                println!("cargo:rustc-cfg=nemoclaw_init_aarch64");
            }
            Err(e) => panic!("could not build the aarch64 nemoclaw-init: {e}"),
        }
    } else {
        println!(
            "cargo:warning=rustup target {AARCH64_MUSL} is not installed: this build cannot make arm64 images (run scripts/setup.sh)"
        );
    }
}

/// One nested release build of the init for `target`; returns the binary's path.
fn build_init(
    target_dir: &Path,
    target: &str,
    rustflags: Option<&str>,
    linker: Option<&str>,
) -> Result<PathBuf, String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&manifest_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "nemoclaw-init",
            "--target",
        ])
        .arg(target)
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--config", "profile.release.strip=true"])
        .args(["--config", "profile.release.opt-level=\"s\""])
        .args(["--config", "profile.release.lto=true"])
        .args(["--config", "profile.release.panic=\"abort\""])
        .args(["--config", "profile.release.codegen-units=1"]);
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    if let Some(flags) = rustflags {
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.replace(' ', "\x1f"));
    }
    if let Some(l) = linker {
        let var = format!(
            "CARGO_TARGET_{}_LINKER",
            target.to_uppercase().replace('-', "_")
        );
        cmd.env(var, l);
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(target_dir
            .join(target)
            .join("release")
            .join("nemoclaw-init")),
        Ok(s) => Err(format!("{target}: cargo exited with {s}")),
        Err(e) => Err(format!("{target}: {e}")),
    }
}

fn target_installed(target: &str) -> bool {
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    sysroot
        .map(|p| p.join("lib/rustlib").join(target).exists())
        .unwrap_or(false)
}
