//! Process and file-descriptor limits (upstream #809, #2173, #4527).
//!
//! Limits only ever go down: the target is a ceiling, never a raise above the current hard
//! limit. The soft limit is lowered first and the hard limit second, because setting a hard
//! limit below the current soft limit fails (upstream #949 broke boots that way). Lowering
//! needs no privilege, so this also runs when the init starts as a non-root user.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// One managed limit.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub resource: Resource,
    pub name: &'static str,
    pub env: &'static str,
    pub default: u64,
}

pub const LIMITS: [Limit; 2] = [
    Limit {
        resource: Resource::RLIMIT_NPROC,
        name: "nproc",
        env: "NEMOCLAW_NPROC",
        default: 512,
    },
    Limit {
        resource: Resource::RLIMIT_NOFILE,
        name: "nofile",
        env: "NEMOCLAW_NOFILE",
        default: 65536,
    },
];

/// The target from an override value: a positive decimal number, else the default
/// (with the reason, so the caller can warn).
pub fn target(value: Option<&str>, default: u64) -> (u64, Option<String>) {
    match value.map(str::trim) {
        None | Some("") => (default, None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => (n, None),
            _ => (
                default,
                Some(format!("ignoring invalid value {v:?}, using {default}")),
            ),
        },
    }
}

/// What to set: hard = min(target, current hard) -- never a raise -- and soft = hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub soft: u64,
    pub hard: u64,
}

pub fn plan(target: u64, cur_hard: u64) -> Plan {
    let hard = target.min(cur_hard);
    Plan { soft: hard, hard }
}

/// Whether the limits the kernel reports honour the ceiling.
pub fn within(target: u64, soft: u64, hard: u64) -> bool {
    soft <= target && hard <= target
}

/// `unlimited` or the number.
pub fn show(v: u64) -> String {
    if v == nix::sys::resource::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

/// Applies every limit: soft first (keeping the current hard), then hard. Failures are
/// `[SECURITY]` warnings, not fatal; the final state is verified against the target.
pub fn apply(log: &dyn Fn(String)) {
    for l in LIMITS {
        let env = std::env::var(l.env).ok();
        let (target, warn) = target(env.as_deref(), l.default);
        if let Some(w) = warn {
            log(format!("[SECURITY] {}: {w}", l.env));
        }
        let (_, cur_hard) = match getrlimit(l.resource) {
            Ok(v) => v,
            Err(e) => {
                log(format!("[SECURITY] cannot read {} limit: {e}", l.name));
                continue;
            }
        };
        let p = plan(target, cur_hard);
        if let Err(e) = setrlimit(l.resource, p.soft, cur_hard) {
            log(format!(
                "[SECURITY] could not set soft {} limit to {}: {e}",
                l.name, p.soft
            ));
        }
        if let Err(e) = setrlimit(l.resource, p.soft, p.hard) {
            log(format!(
                "[SECURITY] could not set hard {} limit to {}: {e}",
                l.name, p.hard
            ));
        }
        match getrlimit(l.resource) {
            Ok((s, h)) if within(target, s, h) => log(format!(
                "{} limit soft={} hard={}",
                l.name,
                show(s),
                show(h)
            )),
            Ok((s, h)) => log(format!(
                "[SECURITY] {} limit is soft={} hard={}, above the target {target}",
                l.name,
                show(s),
                show(h)
            )),
            Err(e) => log(format!("[SECURITY] cannot verify {} limit: {e}", l.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{child_fail, in_child};

    #[test]
    fn apply_lowers_both_limits_and_reports_them() {
        let r = in_child(|| {
            let mut want = Vec::new();
            for l in LIMITS {
                let (t, _) = target(std::env::var(l.env).ok().as_deref(), l.default);
                let (_, h) = getrlimit(l.resource).map_err(|e| child_fail(e.to_string()))?;
                want.push((l, plan(t, h)));
            }
            let lines = std::cell::RefCell::new(Vec::new());
            apply(&|l| lines.borrow_mut().push(l));
            let mut expect_lines = Vec::new();
            for (l, p) in want {
                let got = getrlimit(l.resource).map_err(|e| child_fail(e.to_string()))?;
                if got != (p.soft, p.hard) {
                    return Err(child_fail(format!("{}: {got:?}, planned {p:?}", l.name)));
                }
                expect_lines.push(format!(
                    "{} limit soft={} hard={}",
                    l.name,
                    show(p.soft),
                    show(p.hard)
                ));
            }
            let lines = lines.into_inner();
            if lines != expect_lines {
                return Err(child_fail(format!("log {lines:?}")));
            }
            Ok(())
        });
        assert!(r.is_ok(), "{r:?}");
    }
    const INF: u64 = nix::sys::resource::RLIM_INFINITY;

    #[test]
    fn targets_from_env_values() {
        assert_eq!(target(None, 512), (512, None));
        assert_eq!(target(Some(""), 512), (512, None));
        assert_eq!(target(Some("256"), 512), (256, None));
        for bad in ["0", "-5", "+5", "abc", "1e3", "unlimited"] {
            let (v, w) = target(Some(bad), 512);
            assert_eq!(v, 512, "{bad}");
            assert!(w.is_some(), "{bad}");
        }
    }

    #[test]
    fn plans_only_lower() {
        // Unlimited host (upstream #809): clamp both to the target.
        assert_eq!(
            plan(512, INF),
            Plan {
                soft: 512,
                hard: 512
            }
        );
        // Soft below target within a large hard: soft is raised up to the target.
        assert_eq!(
            plan(65536, 1048576),
            Plan {
                soft: 65536,
                hard: 65536
            }
        );
        // Hard already below the target: never raise it.
        assert_eq!(
            plan(65536, 4096),
            Plan {
                soft: 4096,
                hard: 4096
            }
        );
    }

    #[test]
    fn soft_first_sequence_is_always_valid() {
        // Step 1 sets (soft, cur_hard), step 2 sets (soft, hard); each must satisfy
        // soft <= hard, and step 2 must not raise the hard limit.
        for (t, h) in [(512, INF), (512, 200), (512, 700), (10, 5)] {
            let p = plan(t, h);
            assert!(p.soft <= h && p.soft <= p.hard && p.hard <= h);
            assert!(within(t, p.soft, p.hard));
        }
        assert!(!within(512, 512, 513));
        assert!(!within(512, 513, 512));
    }

    #[test]
    fn shows_unlimited() {
        assert_eq!(show(INF), "unlimited");
        assert_eq!(show(512), "512");
    }
}
