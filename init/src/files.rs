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
    let owner_ok = match owner {
        Some((uid, _)) => meta.uid() == 0 || meta.uid() == uid,
        None => true,
    };
    meta.file_type().is_file() && meta.nlink() == 1 && owner_ok
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
