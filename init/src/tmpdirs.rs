//! Creating the tool-state directories (`/tmp/.cache`, `/tmp/.gnupg`, ...) in a directory
//! other users can write to, without ever following a planted symlink.
//!
//! Each path component is opened with `O_NOFOLLOW|O_DIRECTORY` relative to its parent's
//! descriptor, and ownership and mode are set through the new directory's own descriptor,
//! so there is no window in which a renamed or swapped path is acted on. A directory that
//! already exists is only reused when it belongs to the intended owner.

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{fchown, geteuid, Gid, Uid};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// A directory this run created, still open: ownership and mode are applied through the
/// descriptor once every directory exists. Doing it at the end matters on the root path:
/// PID 1 has already dropped CAP_DAC_OVERRIDE, so once `/tmp/.local` belongs to `sandbox`
/// root could no longer create `/tmp/.local/state` inside it.
struct Created {
    fd: OwnedFd,
    path: PathBuf,
    mode: u32,
}

fn dir_flags() -> OFlag {
    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC
}

/// Ensures each `(path, mode)` exists as a directory owned by `owner` (root path: the
/// workload user; `None`: whoever runs this). Missing parents are created too, with the
/// mode of the entry that needed them (or their own entry's mode). Returns one result per
/// entry; a failing entry does not stop the others.
pub fn ensure_dirs(
    entries: &[(PathBuf, u32)],
    owner: Option<(u32, u32)>,
) -> Vec<Result<(), String>> {
    let mut created: Vec<Created> = Vec::new();
    let mut results: Vec<Result<(), String>> = entries
        .iter()
        .map(|(path, mode)| walk(path, *mode, owner, &mut created))
        .collect();
    for c in &created {
        let done = owner
            .map_or(Ok(()), |(uid, gid)| {
                fchown(&c.fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(|e| format!("{}: chown: {e}", c.path.display()))
            })
            .and_then(|()| {
                fchmod(&c.fd, Mode::from_bits_truncate(c.mode))
                    .map_err(|e| format!("{}: chmod: {e}", c.path.display()))
            });
        if let Err(e) = done {
            for (r, (path, _)) in results.iter_mut().zip(entries) {
                if r.is_ok() && path.starts_with(&c.path) {
                    *r = Err(e.clone());
                }
            }
        }
    }
    results
}

fn walk(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    created: &mut Vec<Created>,
) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not absolute", path.display()));
    }
    let want_uid = owner.map_or(geteuid().as_raw(), |(u, _)| u);
    let mut dir: OwnedFd = open("/", dir_flags(), Mode::empty()).map_err(|e| format!("/: {e}"))?;
    let comps: Vec<Component> = path.components().collect();
    let last = comps.len().saturating_sub(1);
    let mut so_far = PathBuf::from("/");
    for (i, c) in comps.iter().enumerate() {
        let name = match c {
            Component::RootDir => continue,
            Component::Normal(n) => *n,
            _ => return Err(format!("{}: only plain components allowed", path.display())),
        };
        so_far.push(name);
        let next = match openat(&dir, name, dir_flags(), Mode::empty()) {
            Ok(fd) => {
                if i == last {
                    if let Some(c) = created.iter_mut().find(|c| c.path == so_far) {
                        c.mode = mode; // its own entry decides its mode
                    } else {
                        let st = fstat(&fd).map_err(|e| format!("{}: {e}", so_far.display()))?;
                        if st.st_uid != want_uid {
                            return Err(format!(
                                "{} exists and belongs to uid {}, not {want_uid}; leaving it alone",
                                so_far.display(),
                                st.st_uid
                            ));
                        }
                        fchmod(&fd, Mode::from_bits_truncate(mode))
                            .map_err(|e| format!("{}: {e}", so_far.display()))?;
                    }
                }
                fd
            }
            Err(Errno::ENOENT) => {
                match mkdirat(&dir, name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(format!("{}: mkdir: {e}", so_far.display())),
                }
                let fd = openat(&dir, name, dir_flags(), Mode::empty()).map_err(|e| {
                    format!("{}: {e} (replaced while creating it?)", so_far.display())
                })?;
                let st = fstat(&fd).map_err(|e| format!("{}: {e}", so_far.display()))?;
                if st.st_uid != geteuid().as_raw() {
                    return Err(format!(
                        "{} was created by uid {} in a race; leaving it alone",
                        so_far.display(),
                        st.st_uid
                    ));
                }
                let keep = fd
                    .try_clone()
                    .map_err(|e| format!("{}: {e}", so_far.display()))?;
                created.push(Created {
                    fd: keep,
                    path: so_far.clone(),
                    mode,
                });
                fd
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(format!(
                    "{} is a symlink or not a directory; not following it",
                    so_far.display()
                ))
            }
            Err(e) => return Err(format!("{}: {e}", so_far.display())),
        };
        dir = next;
    }
    Ok(())
}

/// One directory (tests and simple callers).
#[cfg(test)]
fn ensure_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), String> {
    ensure_dirs(&[(path.to_path_buf(), mode)], owner)
        .pop()
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("nemoclaw-init-td-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir scratch");
        d
    }

    #[test]
    fn creates_nested_with_exact_mode() {
        let d = scratch("nested");
        let p = d.join(".local/share");
        assert_eq!(ensure_dir(&p, 0o700, None), Ok(()));
        let m = std::fs::metadata(&p).expect("meta");
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o7777, 0o700);
        assert_eq!(m.uid(), geteuid().as_raw());
        // Idempotent, and the mode is re-asserted on an existing own directory.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(ensure_dir(&p, 0o755, None), Ok(()));
        let m = std::fs::metadata(&p).expect("meta");
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn never_follows_a_planted_symlink() {
        let d = scratch("link");
        let victim = d.join("victim");
        std::fs::create_dir(&victim).expect("victim");
        std::os::unix::fs::symlink(&victim, d.join(".cache")).expect("symlink");
        let err = ensure_dir(&d.join(".cache"), 0o755, None).expect_err("symlink leaf");
        assert!(err.contains("not following"), "{err}");
        let err = ensure_dir(&d.join(".cache/sub"), 0o755, None).expect_err("symlink parent");
        assert!(err.contains("not following"), "{err}");
        assert!(
            !victim.join("sub").exists(),
            "nothing created through the link"
        );
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    /// The root path's order problem: a parent created (and handed to the workload user)
    /// for one entry must still receive the next entry's directory, and the parent's own
    /// entry sets its mode. Run as root, this fails if ownership is applied too early and
    /// the process has no CAP_DAC_OVERRIDE.
    #[test]
    fn shared_parents_across_entries() {
        let d = scratch("shared");
        let owner = geteuid().is_root().then_some((998, 998));
        if owner.is_some() {
            // Like PID 1 after its startup drop (capabilities are per thread; this test's
            // thread only).
            for c in [
                ::caps::Capability::CAP_DAC_OVERRIDE,
                ::caps::Capability::CAP_DAC_READ_SEARCH,
            ] {
                ::caps::drop(None, ::caps::CapSet::Effective, c).expect("drop dac_override");
            }
        }
        let entries = vec![
            (d.join(".local/share"), 0o755),
            (d.join(".local/state"), 0o755),
            (d.join(".local"), 0o750),
        ];
        let res = ensure_dirs(&entries, owner);
        if owner.is_some() {
            for c in [
                ::caps::Capability::CAP_DAC_OVERRIDE,
                ::caps::Capability::CAP_DAC_READ_SEARCH,
            ] {
                ::caps::raise(None, ::caps::CapSet::Effective, c).expect("raise again");
            }
        }
        assert_eq!(res, vec![Ok(()), Ok(()), Ok(())]);
        for (p, mode) in &entries {
            let m = std::fs::metadata(p).expect("meta");
            assert_eq!(m.permissions().mode() & 0o7777, *mode, "{}", p.display());
            if let Some((uid, _)) = owner {
                assert_eq!(m.uid(), uid, "{}", p.display());
            }
        }
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn refuses_relative_and_dotdot() {
        assert!(ensure_dir(Path::new("tmp/x"), 0o755, None)
            .expect_err("relative")
            .contains("not absolute"));
        assert!(ensure_dir(Path::new("/tmp/../etc/x"), 0o755, None)
            .expect_err("dotdot")
            .contains("plain components"));
    }

    #[test]
    fn refuses_a_directory_of_another_owner() {
        if !geteuid().is_root() {
            return; // needs root to make a foreign-owned directory
        }
        let d = scratch("foreign");
        let p = d.join("theirs");
        std::fs::create_dir(&p).expect("mkdir");
        std::os::unix::fs::chown(&p, Some(4242), Some(4242)).expect("chown");
        let err = ensure_dir(&p, 0o755, Some((998, 998))).expect_err("foreign");
        assert!(err.contains("belongs to uid 4242"), "{err}");
        // And created ones get the requested owner.
        let q = d.join("mine/deep");
        assert_eq!(ensure_dir(&q, 0o700, Some((998, 997))), Ok(()));
        let m = std::fs::metadata(&q).expect("meta");
        assert_eq!((m.uid(), m.gid()), (998, 997));
        assert_eq!(std::fs::metadata(d.join("mine")).expect("meta").uid(), 998);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    /// A failed chown of a created directory fails the entries under it only; an
    /// unrelated entry that succeeded stays `Ok`.
    #[test]
    fn a_failed_chown_fails_only_the_entries_under_it() {
        if !geteuid().is_root() {
            eprintln!("skipped: needs root to make a directory of another owner");
            return;
        }
        let d = scratch("chownfail");
        let theirs = d.join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).expect("chown");
        // Without CAP_CHOWN (this thread only) the new directory cannot be handed over.
        let chown = ::caps::Capability::CAP_CHOWN;
        ::caps::drop(None, ::caps::CapSet::Effective, chown).expect("drop chown");
        let res = ensure_dirs(
            &[(d.join("new"), 0o755), (theirs.clone(), 0o750)],
            Some((4242, 4242)),
        );
        ::caps::raise(None, ::caps::CapSet::Effective, chown).expect("raise again");
        std::fs::remove_dir_all(&d).expect("cleanup");
        assert!(matches!(&res[0], Err(e) if e.contains("chown")), "{res:?}");
        assert_eq!(res[1], Ok(()));
    }
}
