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

    #[test]
    fn env_modes() {
        assert_eq!(Mode::from_env(None), (Mode::Off, true));
        assert_eq!(Mode::from_env(Some("0")), (Mode::Off, true));
        assert_eq!(Mode::from_env(Some("1")), (Mode::BestEffort, true));
        assert_eq!(Mode::from_env(Some("REQUIRE")), (Mode::Require, true));
        assert_eq!(Mode::from_env(Some("bogus")), (Mode::BestEffort, false));
    }
}
