//! Dropping from root to the target user, like
//! `setpriv --reuid --regid --init-groups --bounding-set=-setuid,-setgid,-fowner,-chown,-kill`.
//!
//! Runs in the forked child just before exec. `--init-groups` matters: `gateway` has to keep
//! its supplementary `sandbox` group. Every step is verified against the kernel afterwards
//! (all three uids and gids, setuid(0) must fail, no capabilities left) because a partial
//! step-down that runs the workload as root is the worst outcome; any doubt aborts the exec.

use crate::accounts::Accounts;
use crate::caps;
use crate::landlock_policy::{self, Policy};
use nix::sys::signal::SigSet;
use nix::sys::stat::{umask, Mode};
use nix::unistd::{getgroups, getresgid, getresuid, setgid, setgroups, setresgid, setresuid};
use nix::unistd::{setuid, Gid, Uid};
use std::io;

/// Who to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

impl Target {
    /// Resolves a user from the image's files. Refuses uid/gid 0: the whole point is to
    /// not run the workload as root.
    pub fn resolve(accounts: &Accounts, name: &str) -> Result<Target, String> {
        let u = accounts
            .user(name)
            .ok_or_else(|| format!("user {name:?} not found in passwd"))?;
        if u.uid == 0 || u.gid == 0 {
            return Err(format!(
                "user {name:?} has uid {} gid {}: refusing to run as root",
                u.uid, u.gid
            ));
        }
        Ok(Target {
            name: u.name.clone(),
            uid: u.uid,
            gid: u.gid,
            groups: accounts.init_groups(u),
            home: u.home.clone(),
        })
    }

    /// `sandbox (uid 998, gid 998, groups 998)` for logs.
    pub fn describe(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        format!(
            "{} (uid {}, gid {}, groups {})",
            self.name,
            self.uid,
            self.gid,
            groups.join(",")
        )
    }
}

/// Extra restrictions for the child.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub no_new_privs: bool,
    /// Landlock policy and whether failures are fatal.
    pub landlock: Option<(Policy, bool)>,
    pub umask: Option<u32>,
}

fn fail(msg: String) -> io::Error {
    // The child's errno is all std passes back to the parent, so say it here.
    eprintln!("nemoclaw-init: [SECURITY] step-down failed: {msg}");
    io::Error::from_raw_os_error(nix::libc::EPERM)
}

/// The child side, called from `pre_exec`. With `target == None` (init started
/// unprivileged) only the optional restrictions apply.
pub fn in_child(target: Option<&Target>, opts: &Options) -> io::Result<()> {
    // PID 1 blocks the signals it waits for; std does not clear the mask for the child,
    // and a workload with SIGTERM blocked would never see a forwarded stop.
    SigSet::empty()
        .thread_set_mask()
        .map_err(|e| fail(format!("resetting the signal mask: {e}")))?;
    if let Some(mask) = opts.umask {
        umask(Mode::from_bits_truncate(mask));
    }
    if let Some(t) = target {
        switch_user(t)?;
    }
    if opts.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| fail(format!("no_new_privs: {e}")))?;
    }
    if let Some((policy, required)) = &opts.landlock {
        match landlock_outcome(landlock_policy::apply(policy), *required) {
            Ok(line) => eprintln!("nemoclaw-init: {line}"),
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

/// What Landlock's result means for the exec: a line to log, or (when required) the
/// reason to abort it.
fn landlock_outcome(
    applied: Result<(String, bool), String>,
    required: bool,
) -> Result<String, String> {
    match applied {
        Ok((_, false)) if required => Err(format!(
            "landlock required but not enforced (kernel {})",
            landlock_policy::describe_abi()
        )),
        Ok((line, _)) => Ok(line),
        Err(e) if required => Err(e),
        Err(e) => Ok(format!("landlock skipped: {e}")),
    }
}

fn switch_user(t: &Target) -> io::Result<()> {
    let uid = Uid::from_raw(t.uid);
    let gid = Gid::from_raw(t.gid);
    let groups: Vec<Gid> = t.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).map_err(|e| fail(format!("setgroups: {e}")))?;
    setresgid(gid, gid, gid).map_err(|e| fail(format!("setresgid: {e}")))?;
    // Bounding-set drops need CAP_SETPCAP; without it PID 1 has already logged the
    // residual set, and setresuid below still empties the effective/permitted sets.
    if caps::can_drop_bounding() {
        let failed = caps::drop_bounding(&caps::DROP_AT_STEPDOWN);
        if !failed.is_empty() {
            return Err(fail(format!("bounding set: {}", failed.join("; "))));
        }
    }
    setresuid(uid, uid, uid).map_err(|e| fail(format!("setresuid: {e}")))?;
    // Leave nothing behind, even under unusual securebits.
    let _ = ::caps::clear(None, ::caps::CapSet::Ambient);
    ::caps::clear(None, ::caps::CapSet::Permitted)
        .and_then(|_| ::caps::clear(None, ::caps::CapSet::Inheritable))
        .map_err(|e| fail(format!("clearing capabilities: {e}")))?;
    verify(t)
}

/// Checks the kernel's view after the switch.
fn verify(t: &Target) -> io::Result<()> {
    let r = getresuid().map_err(|e| fail(format!("getresuid: {e}")))?;
    let g = getresgid().map_err(|e| fail(format!("getresgid: {e}")))?;
    let uids = [r.real, r.effective, r.saved].map(|u| u.as_raw());
    let gids = [g.real, g.effective, g.saved].map(|g| g.as_raw());
    if uids != [t.uid; 3] || gids != [t.gid; 3] {
        return Err(fail(format!(
            "ids are uid {uids:?} gid {gids:?}, expected {} / {}",
            t.uid, t.gid
        )));
    }
    let mut have: Vec<u32> = getgroups()
        .map_err(|e| fail(format!("getgroups: {e}")))?
        .iter()
        .map(|g| g.as_raw())
        .collect();
    let mut want = t.groups.clone();
    have.sort_unstable();
    want.sort_unstable();
    if have != want {
        return Err(fail(format!("groups are {have:?}, expected {want:?}")));
    }
    if setuid(Uid::from_raw(0)).is_ok() || setgid(Gid::from_raw(0)).is_ok() {
        return Err(fail("setuid(0)/setgid(0) still succeeds".into()));
    }
    let eff = ::caps::read(None, ::caps::CapSet::Effective).map_err(|e| fail(e.to_string()))?;
    if !eff.is_empty() {
        return Err(fail(format!("capabilities left in effective set: {eff:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        child_fail, in_child as in_forked_child, privileged, run_after, status_field,
    };

    fn nctest() -> Target {
        Target {
            name: "nctest".into(),
            uid: 4242,
            gid: 4243,
            groups: vec![4243, 4244],
            home: "/".into(),
        }
    }

    #[test]
    fn landlock_failures_abort_only_when_required() {
        let enforced = || Ok(("landlock fully enforced".to_string(), true));
        let not_enforced = || Ok(("landlock not enforced".to_string(), false));
        let failed = || Err("landlock: boom".to_string());
        for required in [false, true] {
            assert_eq!(
                landlock_outcome(enforced(), required),
                Ok("landlock fully enforced".to_string())
            );
        }
        assert_eq!(
            landlock_outcome(not_enforced(), false),
            Ok("landlock not enforced".to_string())
        );
        let e = landlock_outcome(not_enforced(), true).expect_err("required");
        assert!(e.starts_with("landlock required but not enforced"), "{e}");
        assert_eq!(
            landlock_outcome(failed(), false),
            Ok("landlock skipped: landlock: boom".to_string())
        );
        assert_eq!(
            landlock_outcome(failed(), true),
            Err("landlock: boom".to_string())
        );
    }

    #[test]
    fn steps_down_to_the_target_with_nothing_left() {
        if !privileged() {
            return;
        }
        let t = nctest();
        let opts = Options {
            no_new_privs: true,
            landlock: None,
            umask: Some(0o027),
        };
        let out = run_after(
            move || in_child(Some(&t), &opts),
            &["/bin/cat", "/proc/self/status"],
        )
        .expect("step-down succeeds");
        let status = String::from_utf8_lossy(&out.stdout);
        let f = |k| status_field(&status, k).unwrap_or_default().to_string();
        assert_eq!(f("Uid"), "4242\t4242\t4242\t4242");
        assert_eq!(f("Gid"), "4243\t4243\t4243\t4243");
        assert_eq!(f("Groups"), "4243 4244");
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(f(set), "0000000000000000", "{set}");
        }
        let bnd = caps::parse_capbnd(&status).expect("CapBnd");
        assert!(caps::still_present(bnd, &caps::DROP_AT_STEPDOWN).is_empty());
        assert_eq!(f("NoNewPrivs"), "1");
        assert_eq!(f("Umask"), "0027");
    }

    #[test]
    fn without_a_target_only_the_options_apply() {
        let opts = Options {
            no_new_privs: false,
            landlock: None,
            umask: Some(0o077),
        };
        let out = run_after(
            move || in_child(None, &opts),
            &["/bin/cat", "/proc/self/status"],
        )
        .expect("runs");
        let status = String::from_utf8_lossy(&out.stdout);
        let me = nix::unistd::getuid().as_raw().to_string();
        let uid = status_field(&status, "Uid").unwrap_or_default();
        assert_eq!(uid.split('\t').next(), Some(me.as_str()));
        assert_eq!(status_field(&status, "Umask"), Some("0077"));
    }

    #[test]
    fn verify_rejects_ids_and_groups_that_differ() {
        if !privileged() {
            return;
        }
        let t = nctest();
        let wrong = [
            Target {
                gid: 4250,
                ..t.clone()
            },
            Target {
                uid: 4250,
                ..t.clone()
            },
            Target {
                groups: vec![4243],
                ..t.clone()
            },
        ];
        for w in wrong {
            let (t, w2) = (t.clone(), w.clone());
            let r = in_forked_child(move || {
                switch_user(&t)?;
                match verify(&w2) {
                    Ok(()) => Err(child_fail(format!("verify accepted {w2:?}"))),
                    Err(_) => Ok(()),
                }
            });
            assert!(r.is_ok(), "{w:?}: {r:?}");
        }
        // As root nothing matches the target.
        let t = nctest();
        assert!(in_forked_child(move || verify(&t)).is_err());
    }

    #[test]
    fn a_step_down_that_can_still_regain_group_0_fails() {
        if !privileged() {
            return;
        }
        // gid 0 kept (Target::resolve refuses it; switch_user must notice on its own):
        // setgid(0) still succeeds afterwards.
        let t = Target {
            gid: 0,
            groups: vec![0],
            ..nctest()
        };
        let r = in_forked_child(move || switch_user(&t));
        assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(nix::libc::EPERM)));
    }

    #[test]
    fn resolves_targets_with_init_groups() {
        let a = Accounts::from_texts(
            "root:x:0:0::/root:/bin/bash\n\
             gateway:x:999:999::/sandbox:/usr/sbin/nologin\n\
             sandbox:x:998:998::/sandbox:/bin/bash\n\
             rootgroup:x:1000:0::/:/bin/sh\n",
            Some("root:x:0:\ngateway:x:999:\nsandbox:x:998:gateway,root\n"),
        );
        let gw = Target::resolve(&a, "gateway").expect("gateway");
        assert_eq!(gw.groups, vec![999, 998]);
        assert_eq!(gw.describe(), "gateway (uid 999, gid 999, groups 999,998)");
        let sb = Target::resolve(&a, "sandbox").expect("sandbox");
        assert_eq!((sb.uid, sb.gid, sb.home.as_str()), (998, 998, "/sandbox"));
        assert!(Target::resolve(&a, "root").is_err());
        assert!(Target::resolve(&a, "rootgroup").is_err());
        assert!(Target::resolve(&a, "missing").is_err());
    }
}
