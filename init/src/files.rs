//! Files root touches at startup: the shell rc files it re-locks and the gateway log.
//!
//! Both live where the sandbox user has influence, so nothing is followed: rc files are
//! opened `O_NOFOLLOW` and changed through the descriptor (no path race between check and
//! chown), and the log in world-writable /tmp is only reused when it is a plain,
//! single-link file owned by root or the gateway user. PID 1 opens the log once and keeps
//! the descriptor: after its own CAP_DAC_OVERRIDE drop it could not reopen a file that now
//! belongs to the gateway user.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{fchown, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::libc::{O_NOFOLLOW, O_NONBLOCK};

pub const RC_FILES: [&str; 2] = ["/sandbox/.bashrc", "/sandbox/.profile"];
pub const GATEWAY_LOG: &str = "/tmp/gateway.log";

/// Outcome of locking one rc file.
#[derive(Debug, PartialEq, Eq)]
pub enum Lock {
    Locked,
    Missing,
}

/// Makes an rc file root:root 0444 so the sandbox user cannot re-add proxy or other
/// lines to it (upstream #3835). A missing file is not an error.
pub fn lock_rc(path: &Path) -> io::Result<Lock> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lock::Missing),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(io::Error::other("is a symlink; refusing to follow it"))
        }
        Err(e) => return Err(e),
    };
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    fchown(&file, Some(0), Some(0))?;
    file.set_permissions(Permissions::from_mode(0o444))?;
    Ok(Lock::Locked)
}

/// Whether an existing log file may be appended to.
fn reusable(meta: &fs::Metadata, owner: Option<(u32, u32)>) -> bool {
    may_append(meta.file_type().is_file(), meta.nlink(), meta.uid(), owner)
}

/// A plain file with one link, owned by root or the gateway user when one is given.
fn may_append(is_file: bool, nlink: u64, file_uid: u32, owner: Option<(u32, u32)>) -> bool {
    let owner_ok = match owner {
        Some((uid, _)) => file_uid == 0 || file_uid == uid,
        None => true,
    };
    is_file && nlink == 1 && owner_ok
}

/// Opens the gateway log for appending, creating it 0644 and owned by `owner` (the gateway
/// user) when running as root. Anything suspicious at the path (symlink, FIFO, hard link,
/// foreign owner) is removed and replaced by a fresh file.
pub fn open_gateway_log(path: &Path, owner: Option<(u32, u32)>) -> io::Result<File> {
    for _ in 0..4 {
        let existing = OpenOptions::new()
            .append(true)
            .custom_flags(O_NOFOLLOW | O_NONBLOCK)
            .open(path);
        let file = match existing {
            Ok(f) => {
                if !reusable(&f.metadata()?, owner) {
                    drop(f);
                    fs::remove_file(path)?;
                    continue;
                }
                f
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o644)
                    .custom_flags(O_NOFOLLOW)
                    .open(path)
                {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => {
                // ELOOP (symlink), ENXIO (FIFO without reader) and the like: replace it,
                // but only if it really is not a regular file. As root, EACCES on a plain
                // file means PID 1 (without CAP_DAC_OVERRIDE) cannot append to it: replace.
                let denied = owner.is_some() && e.kind() == io::ErrorKind::PermissionDenied;
                match fs::symlink_metadata(path) {
                    Ok(m) if !m.file_type().is_file() || denied => {
                        fs::remove_file(path)?;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
        };
        if let Some((uid, gid)) = owner {
            fchown(&file, Some(uid), Some(gid))?;
        }
        file.set_permissions(Permissions::from_mode(0o644))?;
        return Ok(file);
    }
    Err(io::Error::other("path keeps changing; giving up"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{child_fail, in_child, privileged};

    #[test]
    fn appends_only_to_plain_single_link_files_of_the_right_owner() {
        assert!(may_append(true, 1, 4242, None));
        assert!(may_append(true, 1, 0, Some((999, 999))));
        assert!(may_append(true, 1, 999, Some((999, 999))));
        assert!(!may_append(true, 1, 998, Some((999, 999))));
        assert!(!may_append(true, 2, 999, Some((999, 999))));
        assert!(!may_append(true, 2, 0, None));
        assert!(!may_append(false, 1, 0, None));
        assert!(!may_append(false, 1, 999, Some((999, 999))));
    }

    #[test]
    fn rc_lock_makes_root_owned_read_only_and_refuses_non_files() {
        let d = scratch("rclock");
        let rc = d.join(".bashrc");
        fs::write(&rc, "x").expect("write");
        fs::set_permissions(&rc, Permissions::from_mode(0o664)).expect("chmod");
        let locked = privileged().then(|| lock_rc(&rc).map_err(|e| e.to_string()));
        let meta = fs::metadata(&rc).expect("meta");
        let dir = lock_rc(&d).map_err(|e| e.to_string());
        let notdir = lock_rc(&rc.join("x")).map_err(|e| e.kind());
        std::os::unix::fs::symlink(&rc, d.join("link")).expect("symlink");
        let link = lock_rc(&d.join("link")).map_err(|e| e.to_string());
        fs::remove_dir_all(&d).expect("cleanup");
        if let Some(locked) = locked {
            assert_eq!(locked, Ok(Lock::Locked));
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o7777),
                (0, 0, 0o444)
            );
        }
        assert_eq!(dir, Err("not a regular file".to_string()));
        assert_eq!(notdir, Err(io::ErrorKind::NotADirectory));
        assert_eq!(link, Err("is a symlink; refusing to follow it".to_string()));
    }

    #[test]
    fn gateway_log_errors_are_returned_not_retried() {
        let d = scratch("logerr");
        let r = open_gateway_log(&d.join("no-such-dir/gateway.log"), None).map(|_| ());
        fs::remove_dir_all(&d).expect("cleanup");
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
    }

    #[test]
    fn gateway_log_reuses_or_replaces_by_owner_and_links() {
        if !privileged() {
            return;
        }
        let d = scratch("logown");
        let log = d.join("gateway.log");
        // Root-owned: kept (content stays), handed to the gateway user.
        fs::write(&log, "old\n").expect("write");
        let f = open_gateway_log(&log, Some((4242, 4243))).map(|_| ());
        let kept = fs::read_to_string(&log).expect("read");
        let meta = fs::metadata(&log).expect("meta");

        // Foreign owner: replaced by a fresh file.
        std::os::unix::fs::chown(&log, Some(4000), Some(4000)).expect("chown");
        let f2 = open_gateway_log(&log, Some((4242, 4243))).map(|_| ());
        let replaced = fs::read_to_string(&log).expect("read");
        // A second link: replaced, the other name untouched.
        fs::write(&log, "linked\n").expect("write");
        fs::hard_link(&log, d.join("other")).expect("link");
        let f3 = open_gateway_log(&log, None).map(|_| ());
        let after_link = fs::read_to_string(&log).expect("read");
        let other = fs::read_to_string(d.join("other")).expect("read");
        fs::remove_dir_all(&d).expect("cleanup");
        assert!(f.is_ok());
        assert_eq!(kept, "old\n");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (4242, 4243, 0o644)
        );
        assert!(f2.is_ok());
        assert_eq!(replaced, "");
        assert!(f3.is_ok());
        assert_eq!(after_link, "");
        assert_eq!(other, "linked\n");
    }

    #[test]
    fn unwritable_log_is_replaced_only_by_root() {
        if !privileged() {
            return;
        }
        let d = scratch("logdenied");
        let log = d.join("gateway.log");
        fs::write(&log, "theirs\n").expect("write");
        std::os::unix::fs::chown(&log, Some(4000), Some(4000)).expect("chown");
        let log2 = log.clone();
        // Without DAC_OVERRIDE (PID 1 after its start drop) the file cannot be opened.
        let r = in_child(move || {
            ::caps::drop(
                None,
                ::caps::CapSet::Effective,
                ::caps::Capability::CAP_DAC_OVERRIDE,
            )
            .map_err(|e| child_fail(e.to_string()))?;
            match open_gateway_log(&log2, None) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                other => return Err(child_fail(format!("unprivileged open: {other:?}"))),
            }
            if fs::read_to_string(&log2).ok().as_deref() != Some("theirs\n") {
                return Err(child_fail("file replaced without an owner".into()));
            }
            open_gateway_log(&log2, Some((4000, 4000)))
                .map(|_| ())
                .map_err(|e| child_fail(format!("as root: {e}")))
        });
        let content = fs::read_to_string(&log).expect("read");
        fs::remove_dir_all(&d).expect("cleanup");
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(content, "", "replaced by a fresh file");
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("nemoclaw-init-{tag}-{}", std::process::id()));
        fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn rc_lock_missing_and_symlink() {
        let d = scratch("rc");
        let missing = lock_rc(&d.join("nope"));
        fs::write(d.join("real"), "x").expect("write");
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).expect("symlink");
        let link = lock_rc(&d.join("link"));
        let real_mode = fs::metadata(d.join("real")).expect("meta").mode() & 0o777;
        fs::remove_dir_all(&d).expect("cleanup");
        assert_eq!(missing.expect("missing is ok"), Lock::Missing);
        assert!(link.is_err());
        assert_ne!(real_mode, 0o444, "symlink target untouched");
    }

    #[test]
    fn gateway_log_replaces_symlink_and_appends() {
        let d = scratch("log");
        let log = d.join("gateway.log");
        let victim = d.join("victim");
        fs::write(&victim, "secret").expect("victim");
        std::os::unix::fs::symlink(&victim, &log).expect("symlink");
        let r1 = open_gateway_log(&log, None).map(|mut f| io::Write::write_all(&mut f, b"a\n"));
        let r2 = open_gateway_log(&log, None).map(|mut f| io::Write::write_all(&mut f, b"b\n"));
        let content = fs::read_to_string(&log).expect("read");
        let mode = fs::symlink_metadata(&log).expect("meta").mode() & 0o7777;
        let victim_content = fs::read_to_string(&victim).expect("victim");
        fs::remove_dir_all(&d).expect("cleanup");
        assert!(r1.is_ok() && r2.is_ok());
        assert_eq!(content, "a\nb\n");
        assert_eq!(mode, 0o644);
        assert_eq!(victim_content, "secret");
    }
}
