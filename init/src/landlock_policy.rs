//! Optional Landlock filesystem sandbox for the stepped-down process.
//!
//! Opt-in (`NEMOCLAW_LANDLOCK=1`), best effort by default: Landlock needs Linux >= 5.13
//! with it enabled, and upstream treats it as `best_effort`, so an old kernel only gets a
//! log line. `NEMOCLAW_LANDLOCK=require` turns every failure into a refusal to start.
//! Note that restricting also sets no_new_privs (the kernel requires it for unprivileged
//! callers).

use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, ABI,
};
use std::path::Path;

pub use nemoclaw_runtime_spec::landlock::{Compat, Policy, DEFAULT_POLICY};

/// The fs access rights requested; the crate downgrades them to what the kernel supports
/// when the policy is best effort.
const REQUESTED_ABI: ABI = ABI::V5;

/// How `NEMOCLAW_LANDLOCK` asks for Landlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    BestEffort,
    Require,
}

impl Mode {
    /// `1`/`true`/`yes`/`on`/`best_effort` = best effort, `require` = mandatory,
    /// unset/`0`/`false`/`no`/`off` = off. Unknown values fall back to best effort (the
    /// safer reading of a typo), reported by the caller.
    pub fn from_env(v: Option<&str>) -> (Mode, bool) {
        match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("0") | Some("false") | Some("no") | Some("off") => {
                (Mode::Off, true)
            }
            Some("1") | Some("true") | Some("yes") | Some("on") | Some("best_effort") => {
                (Mode::BestEffort, true)
            }
            Some("require") | Some("required") => (Mode::Require, true),
            Some(_) => (Mode::BestEffort, false),
        }
    }
}

/// The crate's level for the policy's `compatibility`.
fn level(c: Compat) -> CompatLevel {
    match c {
        Compat::BestEffort => CompatLevel::BestEffort,
        Compat::SoftRequirement => CompatLevel::SoftRequirement,
        Compat::HardRequirement => CompatLevel::HardRequirement,
    }
}

/// Reads and parses the policy file.
pub fn load(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Policy::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The kernel's Landlock ABI version, or `None` when unsupported/disabled.
pub fn kernel_abi() -> Option<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns the ABI version (or
    // an error); it reads no memory and creates no file descriptor.
    let v = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_landlock_create_ruleset,
            std::ptr::null::<nix::libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v)
}

/// `"ABI n"` or `"unsupported"`.
pub fn describe_abi() -> String {
    match kernel_abi() {
        Some(v) => format!("ABI {v}"),
        None => "unsupported".to_string(),
    }
}

/// Restricts the calling process. Returns a status line; `Err` only for a real failure
/// (the caller decides whether that is fatal). Paths that do not exist are skipped and
/// named in the status.
pub fn apply(policy: &Policy) -> Result<(String, bool), String> {
    let missing: Vec<&str> = policy
        .read_only
        .iter()
        .chain(policy.read_write.iter())
        .map(String::as_str)
        .filter(|p| !Path::new(p).exists())
        .collect();
    let abi = REQUESTED_ABI;
    let status = Ruleset::default()
        .set_compatibility(level(policy.compatibility))
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                &policy.read_only,
                AccessFs::from_read(abi),
            ))
        })
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                &policy.read_write,
                AccessFs::from_all(abi),
            ))
        })
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    let (what, enforced) = match status.ruleset {
        RulesetStatus::FullyEnforced => ("fully enforced", true),
        RulesetStatus::PartiallyEnforced => ("partially enforced", true),
        RulesetStatus::NotEnforced => ("not enforced", false),
    };
    let mut line = format!("landlock {what} (kernel {})", describe_abi());
    if !missing.is_empty() {
        line.push_str(&format!("; skipped missing paths {missing:?}"));
    }
    Ok((line, enforced))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{child_fail, in_child, run_after};
    use landlock::LandlockStatus;

    #[test]
    fn compatibility_levels_map_one_to_one() {
        assert_eq!(level(Compat::BestEffort), CompatLevel::BestEffort);
        assert_eq!(level(Compat::SoftRequirement), CompatLevel::SoftRequirement);
        assert_eq!(level(Compat::HardRequirement), CompatLevel::HardRequirement);
    }

    #[test]
    fn kernel_abi_matches_the_landlock_crate() {
        // The crate reports the kernel's ABI only after a restriction: ask it in a child
        // and pass the version back as the child's error number.
        let r = in_child(|| {
            let status = Ruleset::default()
                .handle_access(AccessFs::Execute)
                .and_then(|r| r.create())
                .and_then(|r| r.restrict_self())
                .map_err(|e| child_fail(e.to_string()))?;
            let v = match status.landlock {
                LandlockStatus::Available {
                    effective_abi,
                    kernel_abi,
                } => kernel_abi.unwrap_or(effective_abi as i32),
                _ => 0,
            };
            Err(std::io::Error::from_raw_os_error(1000 + v))
        });
        let v = r.expect_err("child reports").raw_os_error().expect("errno") - 1000;
        assert!(v >= 0, "{v}");
        assert_eq!(kernel_abi(), (v > 0).then_some(i64::from(v)));
        let want = if v > 0 {
            format!("ABI {v}")
        } else {
            "unsupported".into()
        };
        assert_eq!(describe_abi(), want);
    }

    fn system_dirs() -> Vec<String> {
        ["/usr", "/bin", "/lib", "/lib64"]
            .into_iter()
            .filter(|p| Path::new(p).exists())
            .map(String::from)
            .collect()
    }

    /// Applies `policy` in a child that then runs `cat /etc/passwd`, checking the status
    /// line there; returns cat's output.
    fn cat_under(policy: Policy, missing_note: Option<&'static str>) -> std::process::Output {
        run_after(
            move || {
                let (line, enforced) = apply(&policy).map_err(child_fail)?;
                let enforced_line = line.starts_with("landlock fully enforced (kernel ABI ")
                    || line.starts_with("landlock partially enforced (kernel ABI ");
                let note_ok = match missing_note {
                    Some(n) => line.ends_with(&format!("; skipped missing paths [{n:?}]")),
                    None => !line.contains("skipped"),
                };
                if enforced && enforced_line && note_ok {
                    Ok(())
                } else {
                    Err(child_fail(format!("{line} (enforced {enforced})")))
                }
            },
            &["/bin/cat", "/etc/passwd"],
        )
        .expect("landlock applied with the expected status line")
    }

    #[test]
    fn apply_restricts_the_process_and_names_missing_paths() {
        if kernel_abi().is_none() {
            eprintln!("skipped: this kernel has no Landlock");
            return;
        }
        let mut ro = system_dirs();
        ro.push("/nonexistent-nemoclaw".into());
        let policy = Policy {
            read_only: ro,
            read_write: vec![],
            compatibility: Compat::BestEffort,
        };
        let out = cat_under(policy, Some("/nonexistent-nemoclaw"));
        assert!(!out.status.success(), "/etc is outside the policy");
        assert!(out.stdout.is_empty());

        let policy = Policy {
            read_only: system_dirs(),
            read_write: vec!["/etc".into()],
            compatibility: Compat::HardRequirement,
        };
        let out = cat_under(policy, None);
        assert!(out.status.success(), "/etc is in the policy");
        assert!(!out.stdout.is_empty());
    }

    #[test]
    fn env_modes() {
        assert_eq!(Mode::from_env(None), (Mode::Off, true));
        assert_eq!(Mode::from_env(Some("0")), (Mode::Off, true));
        assert_eq!(Mode::from_env(Some("1")), (Mode::BestEffort, true));
        assert_eq!(Mode::from_env(Some("REQUIRE")), (Mode::Require, true));
        assert_eq!(Mode::from_env(Some("bogus")), (Mode::BestEffort, false));
    }
}
