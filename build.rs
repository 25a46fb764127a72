//! Builds `nemoclaw-init` as a static binary and embeds it into `nemoclaw-build`,
//! so a user never has to pass a path to the init (issue 5).
//!
//! A nested `cargo build` with its own target dir (inside OUT_DIR, so it never
//! waits on the outer build's lock). Prefers the musl target (small, fully
//! static); falls back to `+crt-static` on the host gnu target. The embedded
//! binary's provenance (target) is exported as `NEMOCLAW_INIT_TARGET`.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=init/src");
    println!("cargo:rerun-if-changed=init/Cargo.toml");
    println!("cargo:rerun-if-changed=runtime-spec/src");
    println!("cargo:rerun-if-env-changed=NEMOCLAW_INIT_TARGET");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("init-target");
    let musl = "x86_64-unknown-linux-musl";
    let host = env::var("HOST").unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());

    let mut candidates: Vec<(String, Option<&str>)> = Vec::new();
    if let Ok(t) = env::var("NEMOCLAW_INIT_TARGET") {
        candidates.push((t, None));
    } else {
        if host.starts_with("x86_64") && musl_installed(musl) {
            candidates.push((musl.to_string(), None));
        }
        candidates.push((host.clone(), Some("-C target-feature=+crt-static")));
    }

    let mut errors = Vec::new();
    for (target, rustflags) in candidates {
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
            .arg(&target)
            .arg("--target-dir")
            .arg(&target_dir)
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
        match cmd.status() {
            Ok(s) if s.success() => {
                let bin = target_dir
                    .join(&target)
                    .join("release")
                    .join("nemoclaw-init");
                println!("cargo:rustc-env=NEMOCLAW_INIT_PATH={}", bin.display());
                println!("cargo:rustc-env=NEMOCLAW_INIT_TARGET={target}");
                return;
            }
            Ok(s) => errors.push(format!("{target}: cargo exited with {s}")),
            Err(e) => errors.push(format!("{target}: {e}")),
        }
    }
    panic!(
        "could not build the static nemoclaw-init ({}); run scripts/setup.sh, which adds the musl target",
        errors.join("; ")
    );
}

fn musl_installed(target: &str) -> bool {
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
