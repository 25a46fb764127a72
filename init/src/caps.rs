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
