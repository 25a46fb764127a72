//! Capability names, the drop lists, and `CapBnd` parsing.
//!
//! The lists mirror upstream's entrypoint (facts, "Entrypoint behaviour" 3 and 4). The
//! kernel is the source of truth: after a drop the init re-reads `/proc/self/status`
//! instead of trusting the return codes, because a silently retained capability is the
//! failure mode that matters (upstream #3280).

use ::caps::{CapSet, Capability};

/// Capability names indexed by number (`include/uapi/linux/capability.h`, up to 40).
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Dropped from the bounding set at startup: nothing in the sandbox needs them and each
/// is a known escape or spoofing primitive.
pub const DROP_AT_START: [&str; 10] = [
    "CAP_SYS_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_NET_RAW",
    "CAP_DAC_OVERRIDE",
    "CAP_SYS_CHROOT",
    "CAP_FSETID",
    "CAP_SETFCAP",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_NET_BIND_SERVICE",
];

/// Kept by PID 1 for the step-down, then dropped from the child's bounding set
/// (like `setpriv --bounding-set=-setuid,-setgid,-fowner,-chown,-kill`). SETPCAP is last:
/// it is what allows the other drops.
pub const DROP_AT_STEPDOWN: [&str; 6] = [
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_KILL",
    "CAP_SETPCAP",
];

/// Number of a capability name; accepts `CAP_SYS_ADMIN`, `cap_sys_admin` or `sys_admin`.
pub fn index_of(name: &str) -> Option<u8> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u8)
}

/// Bit mask of a list of names (all names in this module's lists are known).
#[cfg(test)]
fn mask_of(names: &[&str]) -> u64 {
    names
        .iter()
        .filter_map(|n| index_of(n))
        .fold(0u64, |m, i| m | (1u64 << i))
}

/// Reads `CapBnd:` from `/proc/<pid>/status` text.
pub fn parse_capbnd(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("CapBnd:")?;
        u64::from_str_radix(rest.trim(), 16).ok()
    })
}

/// Names of the bits set in a capability mask; unknown bits become `cap_<n>`.
pub fn decode(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| match NAMES.get(b as usize) {
            Some(n) => (*n).to_string(),
            None => format!("cap_{b}"),
        })
        .collect()
}

/// The names from `names` whose bit is still set in `mask`.
pub fn still_present<'a>(mask: u64, names: &[&'a str]) -> Vec<&'a str> {
    names
        .iter()
        .copied()
        .filter(|n| index_of(n).is_some_and(|i| mask & (1u64 << i) != 0))
        .collect()
}

/// Current bounding set as the kernel reports it.
pub fn current_capbnd() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    parse_capbnd(&status).ok_or_else(|| "no CapBnd line in /proc/self/status".to_string())
}

/// The `caps` crate value for one of our names.
fn to_cap(name: &str) -> Option<Capability> {
    name.parse::<Capability>().ok()
}

/// Whether this thread may change its bounding set (PR_CAPBSET_DROP needs CAP_SETPCAP).
pub fn can_drop_bounding() -> bool {
    ::caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false)
}

/// Drops the named capabilities from the bounding set; returns the names that failed.
pub fn drop_bounding(names: &[&str]) -> Vec<String> {
    let mut failed = Vec::new();
    for name in names {
        match to_cap(name) {
            Some(cap) => {
                if let Err(e) = ::caps::drop(None, CapSet::Bounding, cap) {
                    failed.push(format!("{name}: {e}"));
                }
            }
            None => failed.push(format!("{name}: unknown to the caps crate")),
        }
    }
    failed
}

/// Removes the named capabilities from this process's effective, permitted and
/// inheritable sets. Needs no privilege (only lowering); effective goes first because
/// the kernel requires effective to stay a subset of permitted.
pub fn drop_from_own_sets(names: &[&str]) -> Result<(), String> {
    let caps: Vec<Capability> = names.iter().filter_map(|n| to_cap(n)).collect();
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        let mut cur = ::caps::read(None, set).map_err(|e| e.to_string())?;
        let before = cur.len();
        for c in &caps {
            cur.remove(c);
        }
        if cur.len() != before {
            ::caps::set(None, set, &cur).map_err(|e| format!("{set:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Startup drop: the ten from the bounding set (needs CAP_SETPCAP) and from PID 1's own
/// sets (always possible), then logs what the kernel reports. Never fatal by itself:
/// failing closed on hosts without CAP_SETPCAP broke users (upstream #4264/#4707).
pub fn drop_at_start_and_report(log: &dyn Fn(String)) {
    if can_drop_bounding() {
        let failed = drop_bounding(&DROP_AT_START);
        if !failed.is_empty() {
            log(format!(
                "[SECURITY] bounding-set drop failed: {}",
                failed.join("; ")
            ));
        }
    } else {
        log("[SECURITY] no CAP_SETPCAP: cannot shrink the capability bounding set".into());
    }
    if let Err(e) = drop_from_own_sets(&DROP_AT_START) {
        log(format!(
            "[SECURITY] could not drop capabilities from PID 1's own sets: {e}"
        ));
    }
    match current_capbnd() {
        Ok(mask) => {
            let left = still_present(mask, &DROP_AT_START);
            if left.is_empty() {
                log(format!("capability bounding set now {mask:016x}"));
            } else {
                log(format!(
                    "[SECURITY] residual CapBnd {mask:016x} ({}); still present: {}",
                    decode(mask).join(","),
                    left.join(",")
                ));
            }
        }
        Err(e) => log(format!("[SECURITY] {e}")),
    }
}

/// The five capability sets from `/proc/<pid>/status` text, in the order
/// CapInh, CapPrm, CapEff, CapBnd, CapAmb; `None` when a line is missing.
pub fn parse_all_sets(status: &str) -> Option<[u64; 5]> {
    let mut out = [0u64; 5];
    for (i, key) in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
        .iter()
        .enumerate()
    {
        out[i] = status.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?;
            u64::from_str_radix(rest.trim(), 16).ok()
        })?;
    }
    Some(out)
}

/// Whether every capability set is already empty: the OpenShell supervisor empties them
/// before it starts the entrypoint ("full enforcement"), so there is nothing left to drop
/// and that is success, not a security warning.
pub fn all_sets_empty() -> Result<bool, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    parse_all_sets(&status)
        .map(|sets| sets.iter().all(|s| *s == 0))
        .ok_or_else(|| "capability lines missing from /proc/self/status".to_string())
}

/// Whether root here can actually become another user (needs SETUID and SETGID in the
/// effective set; `--user root --cap-drop=ALL` leaves root without them).
pub fn can_switch_user() -> bool {
    let has = |c| ::caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    has(Capability::CAP_SETUID) && has(Capability::CAP_SETGID)
}

/// For `NEMOCLAW_REQUIRE_CAP_DROP=1`: re-reads `CapBnd` and names any capability from
/// the startup list that is still there.
pub fn require_dropped() -> Result<(), String> {
    let mask = current_capbnd()?;
    let left = still_present(mask, &DROP_AT_START);
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "still in the bounding set (CapBnd {mask:016x}): {}",
            left.join(" ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{child_fail, in_child, privileged};
    use std::cell::RefCell;

    /// The bits of a `caps` crate set.
    fn mask(set: &::caps::CapsHashSet) -> u64 {
        set.iter().fold(0, |m, c| m | (1u64 << c.index()))
    }

    /// This process's effective set, read by the test from `/proc/self/status`.
    fn effective_from_status() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        parse_all_sets(&status).expect("sets")[2]
    }

    fn ensure(ok: bool, what: &str) -> std::io::Result<()> {
        if ok {
            Ok(())
        } else {
            Err(child_fail(what.to_string()))
        }
    }

    #[test]
    fn current_bounding_set_is_the_kernels() {
        let bnd = ::caps::read(None, CapSet::Bounding).expect("bounding set");
        assert_eq!(current_capbnd(), Ok(mask(&bnd)));
    }

    #[test]
    fn capability_checks_read_the_effective_set() {
        let eff = effective_from_status();
        let bit = |c: Capability| eff & (1u64 << c.index()) != 0;
        assert_eq!(can_drop_bounding(), bit(Capability::CAP_SETPCAP));
        assert_eq!(
            can_switch_user(),
            bit(Capability::CAP_SETUID) && bit(Capability::CAP_SETGID)
        );
        assert_eq!(
            all_sets_empty(),
            Ok(false),
            "this test process has capabilities"
        );
    }

    #[test]
    fn losing_one_capability_is_noticed() {
        if !privileged() {
            return;
        }
        for (gone, checks_setpcap) in [
            (Capability::CAP_SETUID, false),
            (Capability::CAP_SETGID, false),
            (Capability::CAP_SETPCAP, true),
        ] {
            let r = in_child(move || {
                ::caps::drop(None, CapSet::Effective, gone)
                    .map_err(|e| child_fail(e.to_string()))?;
                if checks_setpcap {
                    ensure(!can_drop_bounding(), "can_drop_bounding without SETPCAP")?;
                    ensure(can_switch_user(), "can_switch_user with SETUID and SETGID")
                } else {
                    ensure(can_drop_bounding(), "can_drop_bounding with SETPCAP")?;
                    ensure(
                        !can_switch_user(),
                        "can_switch_user with one of SETUID/SETGID",
                    )
                }
            });
            assert!(r.is_ok(), "{gone:?}: {r:?}");
        }
    }

    #[test]
    fn start_drop_empties_the_listed_capabilities() {
        if !privileged() {
            return;
        }
        assert!(require_dropped().is_err(), "root here still has them");
        let r = in_child(|| {
            let lines = RefCell::new(Vec::new());
            drop_at_start_and_report(&|l| lines.borrow_mut().push(l));
            let lines = lines.into_inner();
            let want = mask_of(&DROP_AT_START);
            let bnd =
                mask(&::caps::read(None, CapSet::Bounding).map_err(|e| child_fail(e.to_string()))?);
            ensure(
                bnd & want == 0,
                "bounding set still has start-drop capabilities",
            )?;
            for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
                let m = mask(&::caps::read(None, set).map_err(|e| child_fail(e.to_string()))?);
                ensure(
                    m & want == 0,
                    &format!("{set:?} still has start-drop capabilities"),
                )?;
            }
            ensure(
                lines == vec![format!("capability bounding set now {bnd:016x}")],
                &format!("unexpected log {lines:?}"),
            )?;
            ensure(require_dropped().is_ok(), "require_dropped after the drop")?;
            // Others stay: the step-down still needs SETUID.
            ensure(can_switch_user(), "SETUID/SETGID kept")
        });
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn drops_from_own_sets_and_bounding_set() {
        if !privileged() {
            return;
        }
        let r = in_child(|| {
            drop_from_own_sets(&["CAP_NET_RAW", "CAP_MKNOD"]).map_err(child_fail)?;
            let raw = 1u64 << 13 | 1u64 << 27;
            for set in [CapSet::Effective, CapSet::Permitted] {
                let m = mask(&::caps::read(None, set).map_err(|e| child_fail(e.to_string()))?);
                ensure(m & raw == 0, &format!("{set:?} still has NET_RAW/MKNOD"))?;
                ensure(m & (1 << 21) != 0, &format!("{set:?} lost SYS_ADMIN"))?;
            }
            let failed = drop_bounding(&["CAP_SYS_ADMIN"]);
            ensure(failed.is_empty(), &format!("{failed:?}"))?;
            let bnd = current_capbnd().map_err(child_fail)?;
            ensure(bnd & (1 << 21) == 0, "SYS_ADMIN still bounding")?;
            ensure(bnd & (1 << 13) != 0, "NET_RAW dropped from bounding too")
        });
        assert!(r.is_ok(), "{r:?}");
        // Names the caps crate does not know are reported, not ignored.
        assert_eq!(
            drop_bounding(&["CAP_NOPE"]),
            vec!["CAP_NOPE: unknown to the caps crate".to_string()]
        );
    }

    #[test]
    fn all_sets_empty_after_dropping_everything() {
        if !privileged() {
            return;
        }
        let r = in_child(|| {
            for c in ::caps::all() {
                ::caps::drop(None, CapSet::Bounding, c).map_err(|e| child_fail(e.to_string()))?;
            }
            for set in [
                CapSet::Effective,
                CapSet::Permitted,
                CapSet::Inheritable,
                CapSet::Ambient,
            ] {
                ::caps::clear(None, set).map_err(|e| child_fail(e.to_string()))?;
            }
            ensure(all_sets_empty() == Ok(true), "all sets empty")
        });
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn drop_list_matches_documented_numbers() {
        // facts: SYS_ADMIN(21) SYS_PTRACE(19) NET_RAW(13) DAC_OVERRIDE(1) SYS_CHROOT(18)
        // FSETID(4) SETFCAP(31) MKNOD(27) AUDIT_WRITE(29) NET_BIND_SERVICE(10)
        let nums: Vec<u8> = DROP_AT_START.iter().filter_map(|n| index_of(n)).collect();
        assert_eq!(nums, vec![21, 19, 13, 1, 18, 4, 31, 27, 29, 10]);
        let step: Vec<u8> = DROP_AT_STEPDOWN
            .iter()
            .filter_map(|n| index_of(n))
            .collect();
        assert_eq!(step, vec![7, 6, 0, 3, 5, 8]);
    }

    #[test]
    fn every_name_is_known_to_caps_crate() {
        for n in DROP_AT_START.iter().chain(DROP_AT_STEPDOWN.iter()) {
            let c = to_cap(n).unwrap_or_else(|| panic!("{n} unknown"));
            assert_eq!(Some(c.index()), index_of(n), "{n}");
        }
    }

    #[test]
    fn parses_capability_names() {
        assert_eq!(index_of("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(index_of(" sys_ptrace "), Some(19));
        assert_eq!(index_of("cap_net_raw"), Some(13));
        assert_eq!(index_of("CAP_SYS_ADMINN"), None);
        assert_eq!(index_of("checkpoint_restore"), Some(40));
        assert_eq!(index_of("CAP_NOPE"), None);
    }

    #[test]
    fn parses_capbnd_from_status() {
        let status = "Name:\tbash\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n";
        assert_eq!(parse_capbnd(status), Some(0xa80425fb));
        assert_eq!(parse_capbnd("CapBnd:\tzz\n"), None);
        assert_eq!(parse_capbnd("Name: x\n"), None);
    }

    #[test]
    fn parses_all_five_sets() {
        let empty = "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
                     CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n\
                     CapAmb:\t0000000000000000\n";
        assert_eq!(parse_all_sets(empty), Some([0; 5]));
        let docker = empty.replace("CapBnd:\t0000000000000000", "CapBnd:\t00000000a80425fb");
        let sets = parse_all_sets(&docker).expect("parsed");
        assert_eq!(sets[3], 0xa80425fb);
        assert!(sets.iter().any(|s| *s != 0));
        // A kernel without CapAmb (pre-4.3) is not "all empty": we cannot know.
        assert_eq!(
            parse_all_sets("CapInh:\t0\nCapPrm:\t0\nCapEff:\t0\nCapBnd:\t0\n"),
            None
        );
    }

    #[test]
    fn decodes_docker_default_bounding_set() {
        // Docker's default set: chown dac_override fowner fsetid kill setgid setuid setpcap
        // net_bind_service net_raw sys_chroot mknod audit_write setfcap.
        let names = decode(0xa80425fb);
        assert_eq!(
            names,
            vec![
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_KILL",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE",
                "CAP_NET_RAW",
                "CAP_SYS_CHROOT",
                "CAP_MKNOD",
                "CAP_AUDIT_WRITE",
                "CAP_SETFCAP",
            ]
        );
        assert_eq!(decode(1 << 45), vec!["cap_45"]);
        assert!(decode(0).is_empty());
    }

    #[test]
    fn residual_after_start_drop() {
        let docker = 0xa80425fbu64;
        let after = docker & !mask_of(&DROP_AT_START);
        assert_eq!(
            decode(after),
            vec![
                "CAP_CHOWN",
                "CAP_FOWNER",
                "CAP_KILL",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETPCAP"
            ]
        );
        assert!(still_present(after, &DROP_AT_START).is_empty());
        assert_eq!(
            still_present(docker, &["CAP_SYS_ADMIN", "CAP_NET_RAW"]),
            vec!["CAP_NET_RAW"]
        );
        assert_eq!(after & !mask_of(&DROP_AT_STEPDOWN), 0);
    }
}
