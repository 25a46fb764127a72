//! Build steps applied to the rootfs model, in a fixed order: purge, accounts,
//! filesystem operations, artifacts, init, Landlock policy; then the gates
//! (forbidden commands, required commands, recipe checks) that fail a build.
pub mod accounts;
pub mod arch;
pub mod artifacts;
pub mod builder;
pub mod fsops;
pub mod landlock;
pub mod purge;
pub mod sanitize;

use crate::platform::Arch;
use crate::recipe::Recipe;
use crate::rootfs::{Node, Rootfs};
use crate::scan::Hit;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// The static init embedded at compile time by build.rs.
pub static INIT_BINARY: &[u8] = include_bytes!(env!("NEMOCLAW_INIT_PATH"));
pub const INIT_TARGET: &str = env!("NEMOCLAW_INIT_TARGET");

#[cfg(test)]
thread_local! {
    /// Tests that pin output bytes (golden digests) put a fixed stand-in here, so their
    /// constants do not change with every init change or toolchain update.
    pub static TEST_INIT: std::cell::Cell<Option<&'static [u8]>> = const { std::cell::Cell::new(None) };
}

/// The init binary a build embeds for `arch` and records, with its Rust target:
/// the embedded one, or a test's stand-in.
pub fn init_binary(arch: Arch) -> Result<(&'static [u8], &'static str)> {
    #[cfg(test)]
    if let Some(b) = TEST_INIT.with(|c| c.get()) {
        return Ok(match arch {
            Arch::Amd64 => (b, INIT_TARGET),
            Arch::Arm64 => (b, "aarch64-unknown-linux-musl"),
        });
    }
    embedded_init(arch)
}

/// The init embedded for `arch`, and the Rust target it was built for.
pub fn embedded_init(arch: Arch) -> Result<(&'static [u8], &'static str)> {
    match arch {
        Arch::Amd64 => Ok((INIT_BINARY, INIT_TARGET)),
        #[cfg(nemoclaw_init_aarch64)]
        Arch::Arm64 => Ok((INIT_AARCH64, env!("NEMOCLAW_INIT_AARCH64_TARGET"))),
        #[cfg(not(nemoclaw_init_aarch64))]
        Arch::Arm64 => bail!(
            "this nemoclaw-build was compiled without the aarch64 init (rustup target \
             aarch64-unknown-linux-musl missing): run scripts/setup.sh and rebuild it"
        ),
    }
}

#[cfg(nemoclaw_init_aarch64)]
static INIT_AARCH64: &[u8] = include_bytes!(env!("NEMOCLAW_INIT_AARCH64_PATH"));

#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    pub artifacts: Option<PathBuf>,
    pub strict: bool,
    pub epoch: u64,
    /// The image's architecture: which init it gets.
    pub arch: Arch,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct StepsReport {
    pub purge: Option<purge::PurgeReport>,
    pub artifacts_digest: Option<String>,
    pub init_path: Option<String>,
    pub init_size: u64,
    pub init_target: String,
    pub landlock_warnings: Vec<String>,
    pub sanitize: sanitize::SanitizeReport,
}

/// Everything but the artifacts: purge, sanitize, accounts, fs operations, init, Landlock.
/// Artifacts come last, in a layer of their own, because they change on every
/// release while the rest changes with the recipe (see the pipeline's cache).
pub fn apply_all(fs: &mut Rootfs, recipe: &Recipe, opts: &StepOptions) -> Result<StepsReport> {
    let mut rep = StepsReport {
        purge: purge::apply(fs, &recipe.packages.for_arch(opts.arch), opts.strict)?,
        ..Default::default()
    };
    rep.sanitize = sanitize::apply(fs, &recipe.sanitize);
    accounts::apply(fs, &recipe.groups, &recipe.users, opts.epoch)?;
    fsops::apply(fs, recipe)?;
    if let Some(init) = &recipe.init {
        let (binary, target) = init_binary(opts.arch)?;
        fs.insert(&init.path, Node::file(0o755, 0, 0, binary.to_vec()))?;
        if !init.env.is_empty() || !init.passthrough.is_empty() {
            let spec = recipe.init_spec(init)?;
            fs.insert(
                &init.config,
                Node::file(0o444, 0, 0, nemoclaw_runtime_spec::render(&spec)),
            )?;
        }
        rep.init_path = Some(init.path.clone());
        rep.init_size = binary.len() as u64;
        rep.init_target = target.to_string();
    }
    landlock::write(fs, recipe)?;
    rep.landlock_warnings = landlock::lint(fs, recipe);
    if opts.strict && !rep.landlock_warnings.is_empty() {
        bail!("Landlock policy: {}", rep.landlock_warnings.join("; "));
    }
    Ok(rep)
}

/// Where the artifacts come from: a host directory or tarball (`--artifacts`), or
/// a directory of a builder image (`--artifacts-image`).
#[derive(Clone, Copy)]
pub enum ArtifactsSource<'a> {
    Host(&'a std::path::Path),
    Builder(&'a builder::Builder),
}

impl ArtifactsSource<'_> {
    fn describe(&self) -> String {
        match self {
            ArtifactsSource::Host(p) => format!("--artifacts {}", p.display()),
            ArtifactsSource::Builder(b) => format!("--artifacts-image {}", b.spec.reference),
        }
    }
}

/// Places the builder artifacts; returns the digest of the normalized tree.
/// Owners are resolved against `accounts_fs` (the image's account files); file
/// bytes are spilled into `spill_dir` (the build's staging area).
pub fn apply_artifacts(
    fs: &mut Rootfs,
    accounts_fs: Option<&Rootfs>,
    recipe: &Recipe,
    src: Option<&std::path::Path>,
    spill_dir: &std::path::Path,
) -> Result<Option<String>> {
    let src = src.map(ArtifactsSource::Host);
    apply_artifacts_from(fs, accounts_fs, recipe, src, spill_dir)
}

/// [`apply_artifacts`] from either source; both go through one normalization.
pub fn apply_artifacts_from(
    fs: &mut Rootfs,
    accounts_fs: Option<&Rootfs>,
    recipe: &Recipe,
    src: Option<ArtifactsSource>,
    spill_dir: &std::path::Path,
) -> Result<Option<String>> {
    match (&recipe.artifacts, src) {
        (Some(a), Some(src)) => {
            let ids = {
                let who = accounts_fs.unwrap_or(fs);
                (
                    accounts::uid_of(who, &a.owner)?,
                    accounts::gid_of(who, &a.group)?,
                )
            };
            Ok(Some(match src {
                ArtifactsSource::Host(p) => {
                    artifacts::apply(fs, p, &a.dest, ids.0, ids.1, spill_dir)?
                }
                ArtifactsSource::Builder(b) => builder::apply(fs, b, &a.dest, ids, spill_dir)?,
            }))
        }
        (None, Some(src)) => bail!(
            "{} given, but the recipe has no [artifacts] section saying where they go",
            src.describe()
        ),
        _ => Ok(None),
    }
}

/// Copies what `apply_artifacts` added to `from` into `to` (the full result the
/// gates judge), so the host tree is read once and the gates see exactly the
/// bytes the artifacts layer ships.
pub fn merge_artifacts(to: &mut Rootfs, from: &Rootfs) -> Result<()> {
    for (k, n) in from.nodes.iter().filter(|(_, n)| n.modified) {
        to.insert(k, (**n).clone())?;
    }
    Ok(())
}

/// Fails the build when the result breaks the recipe's promises.
pub fn gates(fs: &Rootfs, recipe: &Recipe) -> Result<()> {
    let hits: Vec<Hit> = crate::scan::forbidden(fs, &recipe.packages)?;
    let missing = crate::scan::missing_required(fs, &recipe.packages);
    let failed: Vec<String> = recipe
        .checks
        .iter()
        .flat_map(|c| crate::checks::evaluate(fs, c))
        .collect();
    gate_report("", &hits, &missing, &failed)
}

/// The gate on a cache hit: the cached base and recipe layers passed [`gates`] when
/// they were built (the cache key covers the recipe), so only the new artifacts are
/// scanned. Same rules, same error as a full build.
pub fn artifact_gates(artifacts: &Rootfs, recipe: &Recipe) -> Result<()> {
    let hits = crate::scan::forbidden(artifacts, &recipe.packages)?;
    gate_report(
        " (base and recipe layers from the cache; artifacts checked)",
        &hits,
        &[],
        &[],
    )
}

/// One error listing every broken rule, each naming its file.
fn gate_report(note: &str, hits: &[Hit], missing: &[String], failed: &[String]) -> Result<()> {
    if hits.is_empty() && missing.is_empty() && failed.is_empty() {
        return Ok(());
    }
    let mut msg = format!("the result breaks the recipe's hardening rules{note}:");
    for h in hits {
        msg.push_str(&format!(
            "\n  forbidden ({}): {}{}",
            h.rule,
            h.path,
            h.target
                .as_ref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default()
        ));
    }
    for m in missing {
        msg.push_str(&format!("\n  required command missing: {m}"));
    }
    for f in failed {
        msg.push_str(&format!("\n  check failed: {f}"));
    }
    bail!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The init goes in 0755 with the embedded binary; its config only when it has
    /// something to say (env or passthrough), read-only. A strict build without
    /// Landlock warnings passes.
    #[test]
    fn apply_all_writes_the_init_and_its_config_only_when_declared() {
        for (extra, has_config) in [
            ("", false),
            ("passthrough = ['LANG']\n", true),
            ("env = [{ name = 'A', value = 'b' }]\n", true),
        ] {
            let recipe =
                Recipe::from_str(&format!("[init]\npath = '/init'\n{extra}"), "t.toml").unwrap();
            let mut fs = Rootfs::new();
            let opts = StepOptions {
                strict: true,
                ..Default::default()
            };
            let rep = apply_all(&mut fs, &recipe, &opts).unwrap();
            let config = recipe.init.as_ref().unwrap().config.trim_start_matches('/');
            let mode = fs.get(config).map(|n| n.mode);
            assert_eq!(mode, has_config.then_some(0o444), "{extra}");
            assert_eq!(fs.get("init").map(|n| n.mode), Some(0o755));
            assert_eq!(fs.read("init").unwrap(), INIT_BINARY);
            assert_eq!(rep.init_path.as_deref(), Some("/init"));
            assert_eq!(rep.init_size, INIT_BINARY.len() as u64);
            assert_eq!(rep.init_target, INIT_TARGET);
        }
    }

    /// Landlock warnings are reported, and fail a strict build.
    #[test]
    fn landlock_warnings_fail_only_a_strict_build() {
        let recipe = Recipe::from_str(
            "[landlock]\npath = '/etc/ll.json'\nread_write = ['/srv/nothere']\n",
            "t.toml",
        )
        .unwrap();
        let rep = apply_all(&mut Rootfs::new(), &recipe, &StepOptions::default()).unwrap();
        assert_eq!(
            rep.landlock_warnings.len(),
            1,
            "{:?}",
            rep.landlock_warnings
        );
        let opts = StepOptions {
            strict: true,
            ..Default::default()
        };
        let err = apply_all(&mut Rootfs::new(), &recipe, &opts).unwrap_err();
        assert!(err.to_string().contains("/srv/nothere"), "{err}");
    }

    /// Each kind of broken rule fails the gate on its own, and the error names it.
    #[test]
    fn any_broken_rule_alone_fails_the_gate() {
        gate_report("", &[], &[], &[]).unwrap();
        let missing = ["sh".to_string()];
        let err = gate_report(" (note)", &[], &missing, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("hardening rules (note):\n  required command missing: sh"),
            "{err}"
        );
        let failed = ["a check".to_string()];
        let err = gate_report("", &[], &[], &failed).unwrap_err();
        assert!(err.to_string().contains("check failed: a check"), "{err}");
    }

    /// `--artifacts` without an `[artifacts]` section says which option was given.
    #[test]
    fn artifacts_without_a_section_name_the_option() {
        let recipe = Recipe::from_str("name = 't'\n", "t.toml").unwrap();
        let d = tempfile::tempdir().unwrap();
        let err = apply_artifacts(&mut Rootfs::new(), None, &recipe, Some(d.path()), d.path())
            .unwrap_err();
        let want = format!("--artifacts {} given, but", d.path().display());
        assert!(err.to_string().contains(&want), "{err}");
        let none = apply_artifacts(&mut Rootfs::new(), None, &recipe, None, d.path()).unwrap();
        assert_eq!(none, None);
    }

    /// The gates judge the artifacts the layer ships (read once, merged), and an
    /// ELF among them is subject to `forbid_elf` like any base file.
    #[test]
    fn gates_judge_the_merged_artifacts() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/gcc"), b"\x7fELF\x02\x01\x01").unwrap();
        let recipe = Recipe::from_str(
            "[packages]\nforbid_elf = ['^gcc$']\n[artifacts]\ndest = '/opt/app'\n",
            "t.toml",
        )
        .unwrap();
        let mut fs = Rootfs::new();
        fs.insert(
            "etc/passwd",
            Node::file(0o644, 0, 0, b"root:x:0:0::/:/bin/sh\n".to_vec()),
        )
        .unwrap();
        fs.insert(
            "etc/group",
            Node::file(0o644, 0, 0, b"root:x:0:\n".to_vec()),
        )
        .unwrap();
        let mut afs = Rootfs::new();
        let spill = tempfile::tempdir().unwrap();
        let digest =
            apply_artifacts(&mut afs, Some(&fs), &recipe, Some(d.path()), spill.path()).unwrap();
        let direct = artifacts::apply(&mut Rootfs::new(), d.path(), "/opt/app", 0, 0, spill.path());
        assert_eq!(
            digest,
            Some(direct.unwrap()),
            "the digest of the placed tree"
        );
        // On a cache hit only the artifacts are scanned, under the same rules.
        let err = artifact_gates(&afs, &recipe).unwrap_err().to_string();
        assert!(
            err.contains("artifacts checked") && err.contains("opt/app/bin/gcc"),
            "{err}"
        );
        // The host tree changes after it was read: the gate still sees what ships.
        std::fs::write(d.path().join("bin/gcc"), b"#!/bin/sh\n").unwrap();
        merge_artifacts(&mut fs, &afs).unwrap();
        let err = gates(&fs, &recipe).unwrap_err();
        assert!(
            err.to_string().contains("forbidden (toolchain ELF)")
                && err.to_string().contains("opt/app/bin/gcc"),
            "{err}"
        );
    }
}
