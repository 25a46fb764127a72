//! Race-free reads of untrusted host trees (builder artifacts, recipe `source`
//! files). Every path component is opened relative to its parent's open
//! directory with `O_NOFOLLOW`, and what is opened is checked with `fstat`
//! against what was listed, so a component swapped for a symlink (or anything
//! else) between two steps makes the build fail instead of reading the link's
//! target from the host. Paths are never resolved twice.
use anyhow::{bail, Context, Result};
use rustix::fs::{fstat, openat, readlinkat, statat, AtFlags, Dir, FileType, Mode, OFlags, Stat};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Flags for opening something we only read: never a controlling tty, never
/// blocking on a FIFO, never inherited by children.
fn read_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

/// One child of a directory, opened (or read) exactly once.
pub enum Child {
    Dir(OwnedFd),
    /// A regular file and its permission bits at open time.
    File(File, u32),
    Symlink(String),
    Other(FileType),
}

/// Opens the top of a tree the user named (symlinks in *that* path are the
/// user's own choice and are followed); returns the fd and what it is.
pub fn open_root(path: &Path) -> Result<(OwnedFd, FileType)> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    let st = fstat(&fd).with_context(|| format!("cannot stat {}", path.display()))?;
    Ok((fd, FileType::from_raw_mode(st.st_mode)))
}

/// Names in a directory (without `.` and `..`), sorted bytewise; more than `max`
/// is an error. Names that are not UTF-8 are refused: a lossy conversion could
/// make two names one.
pub fn list(dir: BorrowedFd<'_>, label: &str, max: usize) -> Result<Vec<String>> {
    let mut d = Dir::read_from(dir).with_context(|| format!("cannot list {label}"))?;
    let mut names = Vec::new();
    for e in &mut d {
        let e = e.with_context(|| format!("cannot list {label}"))?;
        let raw = e.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        if names.len() >= max {
            bail!("{label}: more than {max} entries");
        }
        match std::str::from_utf8(raw) {
            Ok(s) => names.push(s.to_string()),
            Err(_) => bail!(
                "{label}: entry {:?} is not a UTF-8 name",
                String::from_utf8_lossy(raw)
            ),
        }
    }
    names.sort();
    Ok(names)
}

fn same_object(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Opens `name` in `dir` without following it: a symlink is returned as its
/// target text, never opened. `label` names the path in errors.
pub fn open_child(dir: BorrowedFd<'_>, name: &str, label: &str) -> Result<Child> {
    let listed = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("cannot stat {label}"))?;
    let ft = FileType::from_raw_mode(listed.st_mode);
    let changed = || anyhow::anyhow!("{label} changed while it was being read; refusing it");
    match ft {
        FileType::Symlink => {
            // readlinkat fails with EINVAL if the name is no longer a symlink.
            let t = readlinkat(dir, name, Vec::new())
                .map_err(|_| changed())?
                .into_bytes();
            match String::from_utf8(t) {
                Ok(t) => Ok(Child::Symlink(t)),
                Err(_) => bail!("{label}: symlink target is not UTF-8"),
            }
        }
        FileType::Directory => {
            let fd = openat(dir, name, read_flags() | OFlags::DIRECTORY, Mode::empty())
                .map_err(|_| changed())?;
            let st = fstat(&fd).with_context(|| format!("cannot stat {label}"))?;
            if !same_object(&listed, &st) {
                return Err(changed());
            }
            Ok(Child::Dir(fd))
        }
        FileType::RegularFile => {
            let fd = openat(dir, name, read_flags(), Mode::empty()).map_err(|_| changed())?;
            let st = fstat(&fd).with_context(|| format!("cannot stat {label}"))?;
            if !same_object(&listed, &st) || FileType::from_raw_mode(st.st_mode) != ft {
                return Err(changed());
            }
            Ok(Child::File(File::from(fd), st.st_mode & 0o7777))
        }
        other => Ok(Child::Other(other)),
    }
}

/// Opens the regular file `rel` below `root`, one component at a time, without
/// following any symlink (a symlink anywhere on the way is an error).
pub fn open_file_beneath(root: BorrowedFd<'_>, rel: &Path, label: &str) -> Result<(File, u64)> {
    let comps: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => bail!("{label}: '{}' is not a plain relative path", rel.display()),
        })
        .collect::<Result<_>>()?;
    let Some((last, dirs)) = comps.split_last() else {
        bail!("{label}: empty path");
    };
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let at = cur.as_ref().map(|f| f.as_fd()).unwrap_or(root);
        let next = openat(
            at,
            Path::new(d),
            read_flags() | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .with_context(|| {
            format!(
                "{label}: cannot open directory '{}' without following symlinks",
                String::from_utf8_lossy(d.as_bytes())
            )
        })?;
        cur = Some(next);
    }
    let at = cur.as_ref().map(|f| f.as_fd()).unwrap_or(root);
    let fd = openat(at, Path::new(last), read_flags(), Mode::empty())
        .with_context(|| format!("{label}: cannot open without following symlinks"))?;
    let st = fstat(&fd).with_context(|| format!("cannot stat {label}"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        bail!("{label}: not a regular file");
    }
    Ok((File::from(fd), st.st_size as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn beneath_refuses_symlinked_components() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::fs::write(d.path().join("real/f"), b"ok").unwrap();
        symlink("real", d.path().join("link")).unwrap();
        symlink("real/f", d.path().join("flink")).unwrap();
        let (root, _) = open_root(d.path()).unwrap();
        let (mut f, n) = open_file_beneath(root.as_fd(), Path::new("real/f"), "x").unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!((s.as_str(), n), ("ok", 2));
        for p in ["link/f", "flink"] {
            let err = open_file_beneath(root.as_fd(), Path::new(p), p).unwrap_err();
            assert!(
                format!("{err:#}").contains("without following symlinks"),
                "{err:#}"
            );
        }
        let err = open_file_beneath(root.as_fd(), Path::new("../x"), "up").unwrap_err();
        assert!(format!("{err:#}").contains("not a plain relative path"));
    }
}
