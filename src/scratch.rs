//! Scratch space that a build writes beside its outputs (staging layout, spilled
//! layers, archive and side-output temp files), so that no failure, signal or
//! `kill -9` ever leaves a half-written output or destroys the user's files.
//!
//! Every scratch entry is named `.nemoclaw-{build|spill}-PID-RANDOM[.tmp]`, holds an
//! exclusive `flock` for as long as it is in use, and is registered so a signal
//! handler can remove it ([`cleanup_and_exit`]). [`sweep`] removes entries that a
//! killed build left behind: recognizably ours by name, owned by our uid, not
//! locked, and whose process is gone.
use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Live scratch entries of this process, by registration id.
static REGISTRY: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
/// Held while an output is being made visible (renames), so a signal never
/// interrupts a publish halfway.
static COMMIT: Mutex<()> = Mutex::new(());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(p: &Path) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().insert(id, p.to_path_buf());
    id
}

fn deregister(id: u64) {
    registry().remove(&id);
}

/// What a scratch entry is for (its name prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Staging layouts and temp files of outputs: `.nemoclaw-build-`.
    Build,
    /// Uncompressed copies of base layers kept between two passes: `.nemoclaw-spill-`.
    Spill,
}

impl Purpose {
    fn prefix(self) -> &'static str {
        match self {
            Purpose::Build => ".nemoclaw-build-",
            Purpose::Spill => ".nemoclaw-spill-",
        }
    }
}

const RAND_LEN: usize = 8;

fn random_suffix() -> String {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut n = std::collections::hash_map::RandomState::new()
        .hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), nanos));
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..RAND_LEN)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// `(purpose, pid)` when `name` is one of our scratch names.
fn parse_name(name: &str) -> Option<(Purpose, u32)> {
    for p in [Purpose::Build, Purpose::Spill] {
        let Some(rest) = name.strip_prefix(p.prefix()) else {
            continue;
        };
        let rest = rest.strip_suffix(".tmp").unwrap_or(rest);
        let (pid, rand) = rest.split_once('-')?;
        let ok = !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && rand.len() == RAND_LEN
            && rand
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        return if ok {
            Some((p, pid.parse().ok()?))
        } else {
            None
        };
    }
    None
}

/// Whether `name` is one of our scratch names (a leftover that [`sweep`] handles).
pub fn is_scratch_name(name: &str) -> bool {
    parse_name(name).is_some()
}

/// Creates a new uniquely named entry in `parent` with `create`, retrying on a clash.
/// The name is registered before the entry exists: a [`sweep`] in another thread of
/// this process (a concurrent build, another platform's job) then never takes the
/// new, not yet locked entry for a dead build's leftover. Returns the registry id.
fn create_unique<T>(
    parent: &Path,
    purpose: Purpose,
    suffix: &str,
    create: impl Fn(&Path) -> io::Result<T>,
) -> io::Result<(PathBuf, T, u64)> {
    for _ in 0..100 {
        let name = format!(
            "{}{}-{}{suffix}",
            purpose.prefix(),
            std::process::id(),
            random_suffix()
        );
        let path = parent.join(name);
        let id = register(&path);
        match create(&path) {
            Ok(t) => return Ok((path, t, id)),
            Err(e) => {
                deregister(id);
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free scratch name in {}", parent.display()),
    ))
}

fn lock_exclusive(f: &File) -> io::Result<()> {
    f.try_lock().map_err(|e| match e {
        std::fs::TryLockError::Error(e) => e,
        std::fs::TryLockError::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            "scratch entry is locked by another process",
        ),
    })
}

/// A scratch directory, removed when dropped unless [`ScratchDir::published`].
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    _lock: File,
    id: u64,
    keep: bool,
}

impl ScratchDir {
    /// `private`: mode 0700 (spilled layer contents), else the umask's default.
    pub fn create_in(parent: &Path, purpose: Purpose, private: bool) -> io::Result<ScratchDir> {
        // Registered before it exists: a sweep in this process skips registered
        // entries, a sweep in another one sees our live pid.
        let (path, (), id) = create_unique(parent, purpose, "", |p| {
            DirBuilder::new()
                .mode(if private { 0o700 } else { 0o777 })
                .create(p)
        })?;
        let lock = match File::open(&path).and_then(|f| lock_exclusive(&f).map(|_| f)) {
            Ok(f) => f,
            Err(e) => {
                deregister(id);
                let _ = std::fs::remove_dir_all(&path);
                return Err(e);
            }
        };
        Ok(ScratchDir {
            path,
            _lock: lock,
            id,
            keep: false,
        })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The directory was renamed into place as an output: forget it.
    pub fn published(mut self) {
        self.keep = true;
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        deregister(self.id);
        if !self.keep {
            let _ = remove_tree(&self.path);
        }
    }
}

/// A scratch file, written in full and then renamed over its destination by
/// [`ScratchFile::commit`]; removed when dropped uncommitted.
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
    file: File,
    id: u64,
    done: bool,
}

impl ScratchFile {
    /// A temp file beside `dest` (same directory, so the final rename is atomic).
    pub fn beside(dest: &Path) -> io::Result<ScratchFile> {
        Self::create_in(&parent_dir(dest))
    }
    pub fn create_in(dir: &Path) -> io::Result<ScratchFile> {
        let (path, file, id) = create_unique(dir, Purpose::Build, ".tmp", |p| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(p)
        })?;
        if let Err(e) = lock_exclusive(&file) {
            deregister(id);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(ScratchFile {
            path,
            file,
            id,
            done: false,
        })
    }
    pub fn file(&self) -> &File {
        &self.file
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Flushes the data to disk, then renames the file over `dest`.
    pub fn commit(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.path, dest)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        deregister(self.id);
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The directory holding `p` (`.` for a bare file name).
pub fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether process `pid` exists (EPERM: it does, owned by someone else).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// Removes a directory tree; retried because a worker thread may still be creating
/// files in it while a signal handler removes it.
fn remove_tree(p: &Path) -> io::Result<()> {
    let mut last = Ok(());
    for _ in 0..20 {
        match std::fs::remove_dir_all(p) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Err(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    last
}

/// Removes the scratch entries in `dir` that a dead build left behind. Only entries
/// with our names and uid that nobody holds locked, whose process is gone (or is us
/// and the entry is not one of ours: a previous process with our pid). Returns what
/// was removed. Errors reading `dir` are not errors: there is nothing to sweep.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return removed;
    };
    let me = std::process::id();
    let uid = euid();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some((_, pid)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != uid || !(meta.is_dir() || meta.is_file()) {
            continue;
        }
        // Ours if this process registered the name, under whatever spelling of the
        // parent (a symlink, a relative path): the random suffix makes names unique.
        let live = if pid == me {
            registry()
                .values()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        } else {
            pid_alive(pid)
        };
        if live {
            continue;
        }
        // Whoever holds the lock is using it (flock dies with its process).
        let Ok(f) = File::open(&path) else { continue };
        if f.try_lock().is_err() {
            continue;
        }
        let gone = if meta.is_dir() {
            remove_tree(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Held while an output is made visible; see [`cleanup_and_exit`].
pub fn commit_section() -> MutexGuard<'static, ()> {
    COMMIT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every live scratch entry of this process (used on SIGINT/SIGTERM/SIGHUP).
/// Waits for a commit in progress, so the output is either the old or the new one.
pub fn remove_all() -> usize {
    let entries: Vec<PathBuf> = registry().values().cloned().collect();
    let mut n = 0;
    for p in entries {
        let gone = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => remove_tree(&p).is_ok(),
            Ok(_) => std::fs::remove_file(&p).is_ok(),
            Err(_) => false,
        };
        n += usize::from(gone);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognized_strictly() {
        let t = tempfile::tempdir().unwrap();
        let d = ScratchDir::create_in(t.path(), Purpose::Spill, true).unwrap();
        let f = ScratchFile::create_in(t.path()).unwrap();
        for p in [d.path(), f.path()] {
            let n = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_name(n).map(|x| x.1), Some(std::process::id()), "{n}");
        }
        for n in [
            ".nemoclaw-build-notes",
            ".nemoclaw-build-12-abc",
            ".nemoclaw-build-x1-abcdefgh",
            ".nemoclaw-build-old-12",
            "nemoclaw-build-12-abcdefgh",
            ".nemoclaw-build-12-ABCDEFGH",
        ] {
            assert!(parse_name(n).is_none(), "{n} must not look like ours");
        }
    }

    /// A sweep by another thread between the entry's creation and its lock (two
    /// builds of one process sharing an output parent) must leave it alone.
    #[test]
    fn a_sweep_right_after_creation_keeps_the_new_entry() {
        let t = tempfile::tempdir().unwrap();
        sweep_during_creation_keeps_it(t.path(), t.path());
    }

    #[test]
    fn a_sweep_through_another_spelling_of_the_parent_keeps_our_entry() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &link).unwrap();
        sweep_during_creation_keeps_it(&link, t.path());
    }

    /// Creates an entry in `parent` and sweeps `swept` in the instant after its
    /// creation, before anyone could lock it: the entry must survive.
    fn sweep_during_creation_keeps_it(parent: &Path, swept: &Path) {
        let (path, removed, id) = create_unique(parent, Purpose::Build, "", |p| {
            std::fs::create_dir(p)?;
            Ok(sweep(swept))
        })
        .unwrap();
        deregister(id);
        assert_eq!(removed, Vec::<PathBuf>::new());
        assert!(path.is_dir(), "the new entry was swept");
    }

    #[test]
    fn sweep_removes_only_dead_unlocked_entries() {
        let t = tempfile::tempdir().unwrap();
        // A dead process's entries: pid far above pid_max.
        let dead_dir = t.path().join(".nemoclaw-build-999999999-abcdefgh");
        std::fs::create_dir_all(dead_dir.join("blobs/sha256")).unwrap();
        std::fs::write(dead_dir.join("blobs/sha256/x"), b"x").unwrap();
        let dead_file = t.path().join(".nemoclaw-spill-999999999-abcdefgh.tmp");
        std::fs::write(&dead_file, b"x").unwrap();
        // A previous process that had our pid (not registered, not locked).
        let reused = t
            .path()
            .join(format!(".nemoclaw-build-{}-zzzzzzzz", std::process::id()));
        std::fs::create_dir(&reused).unwrap();
        // Not ours by name.
        let notes = t.path().join(".nemoclaw-build-notes");
        std::fs::write(&notes, b"mine").unwrap();
        // Live: ours in this process, and one locked by someone else.
        let live = ScratchDir::create_in(t.path(), Purpose::Build, false).unwrap();
        let locked = t.path().join(".nemoclaw-build-999999998-abcdefgh");
        std::fs::create_dir(&locked).unwrap();
        let holder = File::open(&locked).unwrap();
        holder.lock().unwrap();
        let mut removed = sweep(t.path());
        removed.sort();
        let mut want = vec![dead_dir, dead_file, reused];
        want.sort();
        assert_eq!(removed, want);
        assert!(notes.exists() && live.path().exists() && locked.exists());
        drop(holder);
        assert_eq!(sweep(t.path()), vec![locked]);
    }

    #[test]
    fn dropped_entries_vanish_and_commit_renames() {
        let t = tempfile::tempdir().unwrap();
        let d = ScratchDir::create_in(t.path(), Purpose::Build, false).unwrap();
        let dp = d.path().to_path_buf();
        std::fs::write(dp.join("x"), b"x").unwrap();
        assert!(registry().values().any(|p| p == &dp));
        drop(d);
        assert!(!dp.exists());
        assert!(!registry().values().any(|p| p == &dp));
        let f = ScratchFile::beside(&t.path().join("out.json")).unwrap();
        std::io::Write::write_all(&mut f.file(), b"{}").unwrap();
        f.commit(&t.path().join("out.json")).unwrap();
        assert_eq!(std::fs::read(t.path().join("out.json")).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
