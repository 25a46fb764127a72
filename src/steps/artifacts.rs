//! Builder-stage artifacts (`dist/`, package.json, ...) placed under the recipe's
//! destination, root-owned and never group/world writable. Host mtimes, umask and
//! directory order are normalized away so the result is reproducible.
//!
//! Artifacts come from a (possibly pull-request) build, so they are untrusted
//! input. A directory is walked with one open fd per level and nothing in it is
//! followed ([`crate::hostfs`]); every file and tarball entry is read exactly
//! once, hashed and copied into a private spill file ([`crate::spill`]) from
//! which the layer is written later, so the bytes hashed and checked are the
//! bytes shipped. Memory grows with the number of entries, never their size, and
//! bytes, entries, depth and tar header sizes are bounded ([`Limits`]).
use crate::hostfs::{self, Child};
use crate::rootfs::{normalize, Content, Kind, Node, Rootfs};
use crate::spill::{Spill, Stored};
use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::FileType;
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::rc::Rc;

/// Bounds on what an artifacts tree or tarball may make the build do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Total regular-file bytes (after decompression).
    pub max_bytes: u64,
    pub max_entries: usize,
    /// Directory nesting: the walk holds one fd per level.
    pub max_depth: usize,
    /// Tar header bytes before one entry's data (GNU long names, PAX records),
    /// which the tar reader holds in memory.
    pub max_header: u64,
}

pub const LIMITS: Limits = Limits {
    max_bytes: 8 << 30,
    max_entries: 1_000_000,
    max_depth: 256,
    max_header: 1 << 20,
};

fn norm_mode(kind: Kind, mode: u32) -> u32 {
    match kind {
        Kind::Dir => 0o755,
        Kind::File if mode & 0o111 != 0 => 0o755,
        Kind::Symlink => 0o777,
        _ => 0o644,
    }
}

/// Symlinks may not point outside the artifact tree (absolute or `..`-escaping).
pub(crate) fn check_link(rel: &str, target: &str) -> Result<()> {
    if target.starts_with('/') {
        bail!("artifact symlink '{rel}' -> '{target}' is absolute and escapes the artifact tree");
    }
    let mut depth: i64 = rel.matches('/').count() as i64;
    for c in target.split('/') {
        match c {
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
        if depth < 0 {
            bail!("artifact symlink '{rel}' -> '{target}' escapes the artifact tree");
        }
    }
    Ok(())
}

/// One artifact, read once; `data` is set for regular files.
pub(crate) struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub data: Option<Stored>,
    pub link: Option<String>,
}

impl Entry {
    pub(crate) fn dir() -> Entry {
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
            data: None,
            link: None,
        }
    }
}

/// Everything read so far, in placement order (the walk order of a directory:
/// pre-order, children sorted by name, see [`walk_order`]), whatever the source.
pub(crate) struct Collected<'a> {
    pub label: String,
    pub spill: Spill,
    entries: Vec<(String, Entry)>,
    pub limits: &'a Limits,
}

/// The order a directory is walked in: pre-order with children sorted bytewise,
/// i.e. paths compared component by component (`a`, `a/b`, `a.txt`). Every source
/// places (and hashes) its entries in this order, so the same tree gives the same
/// artifacts digest as a directory, a tarball or a builder image.
pub fn walk_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

impl<'a> Collected<'a> {
    /// An empty tree (its root directory only) spilling into `spill_dir`.
    pub(crate) fn new(label: String, spill_dir: &Path, limits: &'a Limits) -> Result<Self> {
        let mut c = Collected {
            label,
            spill: Spill::new_in(spill_dir, limits.max_bytes)?,
            entries: Vec::new(),
            limits,
        };
        c.push(String::new(), Entry::dir())?;
        Ok(c)
    }

    pub(crate) fn push(&mut self, rel: String, e: Entry) -> Result<()> {
        if self.entries.len() >= self.limits.max_entries {
            bail!(
                "artifacts {}: more than {} entries",
                self.label,
                self.limits.max_entries
            );
        }
        self.entries.push((rel, e));
        Ok(())
    }
}

/// Adds the artifacts; returns the digest of the normalized tree. File bytes are
/// spilled to an unnamed file in `spill_dir` (the build's staging area).
pub fn apply(
    fs: &mut Rootfs,
    src: &Path,
    dest: &str,
    uid: u64,
    gid: u64,
    spill_dir: &Path,
) -> Result<String> {
    apply_with(fs, src, dest, (uid, gid), spill_dir, &LIMITS)
}

pub fn apply_with(
    fs: &mut Rootfs,
    src: &Path,
    dest: &str,
    ids: (u64, u64),
    spill_dir: &Path,
    limits: &Limits,
) -> Result<String> {
    let (fd, ft) = hostfs::open_root(src).context("artifacts")?;
    let mut c = Collected::new(src.display().to_string(), spill_dir, limits)?;
    match ft {
        FileType::Directory => walk(&mut c, fd.as_fd(), "", 1)?,
        FileType::RegularFile => read_tar(&mut c, std::fs::File::from(fd))?,
        other => bail!(
            "artifacts {} is a {other:?}, not a directory or a tar archive",
            c.label
        ),
    }
    place(fs, c, dest, ids)
}

/// The one normalization every source goes through: root of the tree at `dest`,
/// owned by `uid:gid`, modes 0755/0644 (setuid/setgid/sticky and group/world write
/// dropped), mtimes left to the layer writer. Returns the digest of the normalized
/// tree (paths, kinds, modes, link targets, content digests, in walk order).
pub(crate) fn place(
    fs: &mut Rootfs,
    c: Collected,
    dest: &str,
    (uid, gid): (u64, u64),
) -> Result<String> {
    let dest = normalize(dest)?;
    let mut hasher = Sha256::new();
    let mut links = Vec::new();
    for (rel, e) in with_parents(c.entries, c.limits.max_entries, &c.label)? {
        // In a layer, such a name is a whiteout, not a file (`.wh..` even names the
        // directory's parent): runtimes would delete instead of place.
        if let Some(w) = rel.split('/').find(|n| n.starts_with(".wh.")) {
            bail!(
                "artifacts {}: '{rel}': '{w}' is an OCI whiteout name; a layer cannot hold it as a file",
                c.label
            );
        }
        let path = if rel.is_empty() {
            dest.clone()
        } else {
            format!("{dest}/{rel}")
        };
        let mode = norm_mode(e.kind, e.mode);
        let digest = e.data.as_ref().map(|s| s.sha256.as_str()).unwrap_or("");
        hasher.update(
            format!(
                "{rel}\0{:?}\0{mode:o}\0{}\0{digest}\n",
                e.kind,
                e.link.as_deref().unwrap_or_default()
            )
            .as_bytes(),
        );
        let mut n = match e.kind {
            Kind::Dir => Node::dir(mode, uid, gid),
            Kind::Symlink => Node::symlink(e.link.as_deref().unwrap_or_default()),
            _ => Node::file(mode, uid, gid, Vec::new()),
        };
        n.uid = uid;
        n.gid = gid;
        if let (Some(s), Some(f)) = (e.data, n.as_file_mut()) {
            f.elf = s.elf;
            f.machine = s.machine;
            f.content = Content::Host(Box::new(s.bytes));
        }
        fs.insert(&path, n)
            .with_context(|| format!("artifacts {}: cannot place '{rel}'", c.label))?;
        if let Some(t) = e.link.filter(|_| e.kind == Kind::Symlink) {
            links.push((rel, path, t));
        }
    }
    check_resolved(fs, &dest, &links, &c.label)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// A layer or tarball need not hold its parent directories (runtimes create them):
/// each missing one is added as a walked directory would be, right before its first
/// child in walk order, so owners, modes and the digest match the directory's.
fn with_parents(
    entries: Vec<(String, Entry)>,
    max: usize,
    label: &str,
) -> Result<Vec<(String, Entry)>> {
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for (rel, e) in entries {
        for (i, _) in rel.match_indices('/') {
            if seen.insert(rel[..i].to_string()) {
                out.push((rel[..i].to_string(), Entry::dir()));
            }
        }
        seen.insert(rel.clone());
        out.push((rel, e));
        if out.len() > max {
            bail!("artifacts {label}: more than {max} entries");
        }
    }
    Ok(out)
}

/// [`check_link`] judges a target by its text: `a -> .` then `up -> a/a/../..`
/// passes it, yet names `/`. Once the whole tree is placed, every link is resolved
/// through the others and must still land inside it (a loop is refused too).
fn check_resolved(
    fs: &Rootfs,
    dest: &str,
    links: &[(String, String, String)],
    label: &str,
) -> Result<()> {
    let inside = |r: &str| {
        dest.is_empty()
            || r == dest
            || (r.starts_with(dest) && r.as_bytes().get(dest.len()) == Some(&b'/'))
    };
    for (rel, path, target) in links {
        match fs.resolve(path) {
            Some(r) if inside(&r) => {}
            Some(r) => bail!(
                "artifacts {label}: symlink '{rel}' -> '{target}' escapes the artifact tree through other symlinks (it resolves to '/{r}')"
            ),
            None => bail!(
                "artifacts {label}: symlink '{rel}' -> '{target}' does not resolve (too many levels of symlinks)"
            ),
        }
    }
    Ok(())
}

/// Pre-order walk, children sorted by name; one open directory fd per level.
fn walk(c: &mut Collected, dir: BorrowedFd<'_>, rel: &str, depth: usize) -> Result<()> {
    if depth > c.limits.max_depth {
        bail!(
            "artifacts {}/{rel}: nested deeper than {} directories",
            c.label,
            c.limits.max_depth
        );
    }
    let here = format!("{}/{rel}", c.label);
    for name in hostfs::list(dir, &here, c.limits.max_entries)? {
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let label = format!("{}/{r}", c.label);
        match hostfs::open_child(dir, &name, &label)? {
            Child::Dir(fd) => {
                c.push(r.clone(), Entry::dir())?;
                walk(c, fd.as_fd(), &r, depth + 1)?;
            }
            Child::Symlink(t) => {
                check_link(&r, &t)?;
                c.push(
                    r,
                    Entry {
                        kind: Kind::Symlink,
                        mode: 0o777,
                        data: None,
                        link: Some(t),
                    },
                )?;
            }
            Child::File(mut f, mode) => {
                let stored = c.spill.append(&mut f, &label)?;
                c.push(
                    r,
                    Entry {
                        kind: Kind::File,
                        mode,
                        data: Some(stored),
                        link: None,
                    },
                )?;
            }
            Child::Other(ft) => {
                bail!("artifact {label} is a {ft:?}, not a regular file, directory or symlink")
            }
        }
    }
    Ok(())
}

/// Counts the bytes the tar reader consumes outside entry data (headers, GNU
/// long names, PAX records, skipped padding) and fails past the budget: the tar
/// crate reads those into memory, so a huge extension header would be a
/// memory bomb of its own.
struct Metered<R> {
    inner: R,
    in_data: Rc<Cell<bool>>,
    header_bytes: Rc<Cell<u64>>,
    max_header: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.in_data.get() {
            let total = self.header_bytes.get() + n as u64;
            self.header_bytes.set(total);
            if total > self.max_header {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "tar headers and extension headers before one entry exceed {} bytes",
                        self.max_header
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// Streams a (gzip-compressed) tarball: entry data goes to the spill as it is
/// inflated, so memory holds the index only. Entries are placed in walk order (as
/// a directory is); a path that appears twice is refused (tar readers disagree on
/// which wins).
fn read_tar(c: &mut Collected, f: std::fs::File) -> Result<()> {
    let label = c.label.clone();
    let in_data = Rc::new(Cell::new(false));
    let header_bytes = Rc::new(Cell::new(0));
    let mut ar = tar::Archive::new(Metered {
        inner: decompressed(f, &label)?,
        in_data: in_data.clone(),
        header_bytes: header_bytes.clone(),
        max_header: c.limits.max_header,
    });
    let mut sorted: BTreeMap<String, Entry> = BTreeMap::new();
    for e in ar
        .entries()
        .with_context(|| format!("{label}: not a tar archive"))?
    {
        let mut e = e.with_context(|| format!("{label}: corrupt tar archive"))?;
        header_bytes.set(0);
        let raw = String::from_utf8(e.path_bytes().into_owned())
            .map_err(|_| anyhow!("{label}: an entry name is not UTF-8"))?;
        let rel = normalize(&raw).with_context(|| format!("{label}: unsafe entry '{raw}'"))?;
        if rel.is_empty() {
            continue;
        }
        let entry = tar_entry(c, &mut e, &raw, &rel, &in_data)?;
        if sorted.len() + 1 >= c.limits.max_entries {
            bail!(
                "artifacts {label}: more than {} entries",
                c.limits.max_entries
            );
        }
        if sorted.insert(rel.clone(), entry).is_some() {
            bail!("{label}: entry '{rel}' appears more than once");
        }
    }
    let mut sorted: Vec<(String, Entry)> = sorted.into_iter().collect();
    sorted.sort_by(|a, b| walk_order(&a.0, &b.0));
    for (rel, e) in sorted {
        c.push(rel, e)?;
    }
    Ok(())
}

/// The tarball's bytes, inflated when they are gzip: every gzip member, like
/// gzip -d and GNU tar (a first-member-only reader would see a shorter tree).
fn decompressed(f: std::fs::File, label: &str) -> Result<Box<dyn Read>> {
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let gz = r
        .fill_buf()
        .with_context(|| format!("cannot read artifacts {label}"))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    })
}

/// One tar entry as an artifact: a directory, a checked symlink, or a file whose
/// data goes to the spill (`in_data` tells the header meter not to count it).
fn tar_entry<R: Read>(
    c: &mut Collected,
    e: &mut tar::Entry<R>,
    raw: &str,
    rel: &str,
    in_data: &Cell<bool>,
) -> Result<Entry> {
    let label = &c.label;
    let et = e.header().entry_type();
    let mode = e.header().mode().unwrap_or(0o644);
    if et.is_dir() {
        Ok(Entry {
            mode,
            ..Entry::dir()
        })
    } else if et.is_symlink() {
        let t = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()))
            .transpose()
            .map_err(|_| anyhow!("{label}: symlink '{raw}' target is not UTF-8"))?
            .unwrap_or_default();
        check_link(rel, &t).with_context(|| label.clone())?;
        Ok(Entry {
            kind: Kind::Symlink,
            mode,
            data: None,
            link: Some(t),
        })
    } else if et.is_file() {
        let want = e.size();
        in_data.set(true);
        let stored = c.spill.append(e, &format!("{label}: entry '{raw}'"));
        in_data.set(false);
        let stored = stored?;
        if stored.bytes.len() != want {
            bail!(
                "{label}: entry '{raw}' is truncated ({} of {want} bytes)",
                stored.bytes.len()
            );
        }
        Ok(Entry {
            kind: Kind::File,
            mode,
            data: Some(stored),
            link: None,
        })
    } else {
        bail!("{label}: entry '{raw}' has unsupported type {et:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TarBuilder;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// The model mode of an artifact entry: only the execute bits of a file survive,
    /// symlinks are 0777 like the ones the model makes itself (`Node::symlink`).
    #[test]
    fn norm_mode_keeps_only_the_execute_choice() {
        assert_eq!(norm_mode(Kind::Dir, 0o700), 0o755);
        assert_eq!(norm_mode(Kind::File, 0o700), 0o755);
        assert_eq!(norm_mode(Kind::File, 0o4600), 0o644);
        assert_eq!(norm_mode(Kind::Symlink, 0o600), 0o777);
        assert_eq!(norm_mode(Kind::Symlink, 0o777), Node::symlink("x").mode);
        assert_eq!(norm_mode(Kind::Hardlink, 0o755), 0o644);
    }

    /// `.` and empty components do not go deeper: `./..` from the top escapes.
    #[test]
    fn check_link_counts_only_real_components() {
        assert!(check_link("a", "./../etc").is_err());
        assert!(check_link("a", ".//../x").is_err());
        assert!(check_link("d/a", "./../x").is_ok());
        assert!(check_link("d/a", "../../x").is_err());
        assert!(check_link("a", "/etc").is_err());
        assert!(check_link("a", "b/../c").is_ok());
    }

    /// `max` entries are allowed (implied parents count), one more is refused.
    #[test]
    fn with_parents_limit_is_inclusive() {
        let e = |r: &str| (r.to_string(), Entry::dir());
        let ok = with_parents(vec![e("a"), e("a/b")], 2, "t").unwrap();
        assert_eq!(ok.len(), 2);
        let implied = with_parents(vec![e("a/b")], 2, "t").unwrap();
        let names: Vec<&str> = implied.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["a", "a/b"]);
        let err = match with_parents(vec![e("a"), e("b"), e("c")], 2, "t") {
            Ok(v) => panic!("{} entries accepted", v.len()),
            Err(e) => e,
        };
        assert!(err.to_string().contains("more than 2 entries"), "{err}");
    }

    /// A link resolving to a sibling that merely shares the prefix (`opt/xy` for
    /// `opt/x`) or to another tree is outside.
    #[test]
    fn check_resolved_needs_a_path_boundary() {
        let mut fs = Rootfs::new();
        for d in ["opt", "opt/x", "opt/x/sub", "opt/xy", "etc"] {
            fs.insert(d, Node::dir(0o755, 0, 0)).unwrap();
        }
        fs.insert("opt/x/in", Node::symlink("sub")).unwrap();
        fs.insert("opt/x/sib", Node::symlink("../xy")).unwrap();
        fs.insert("opt/x/etc", Node::symlink("../../etc")).unwrap();
        let link = |n: &str, t: &str| (n.to_string(), format!("opt/x/{n}"), t.to_string());
        assert!(check_resolved(&fs, "opt/x", &[link("in", "sub")], "t").is_ok());
        for (n, t) in [("sib", "../xy"), ("etc", "../../etc")] {
            let err = check_resolved(&fs, "opt/x", &[link(n, t)], "t").unwrap_err();
            assert!(err.to_string().contains("escapes"), "{n}: {err}");
        }
    }

    /// Writes `bytes` as a tarball in a fresh dir; returns (dir guard, tarball path).
    fn tarball(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.tar.gz");
        std::fs::write(&p, bytes).unwrap();
        (d, p)
    }

    fn apply_err(src: &Path, limits: &Limits) -> String {
        let spill = tempfile::tempdir().unwrap();
        let err = apply_with(
            &mut Rootfs::new(),
            src,
            "/opt/x",
            (0, 0),
            spill.path(),
            limits,
        )
        .unwrap_err();
        format!("{err:#}")
    }

    #[test]
    fn normalizes_modes_and_digest_ignores_mtime() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dist")).unwrap();
        std::fs::write(d.path().join("dist/index.js"), b"console.log(1)").unwrap();
        std::fs::set_permissions(
            d.path().join("dist/index.js"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        std::fs::write(d.path().join("package.json"), b"{}").unwrap();
        std::fs::set_permissions(
            d.path().join("package.json"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let spill = tempfile::tempdir().unwrap();
        let sp = spill.path();
        let mut fs = Rootfs::new();
        let d1 = apply(&mut fs, d.path(), "/opt/nemoclaw", 0, 0, sp).unwrap();
        assert_eq!(fs.get("opt/nemoclaw/dist/index.js").unwrap().mode, 0o755);
        assert_eq!(fs.get("opt/nemoclaw/package.json").unwrap().mode, 0o644);
        assert_eq!(fs.read("opt/nemoclaw/package.json").unwrap(), b"{}");
        let f = std::fs::File::options()
            .write(true)
            .open(d.path().join("package.json"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        let d2 = apply(&mut Rootfs::new(), d.path(), "/opt/nemoclaw", 0, 0, sp).unwrap();
        assert_eq!(d1, d2);
        std::fs::write(d.path().join("package.json"), b"{ }").unwrap();
        assert_ne!(
            d1,
            apply(&mut Rootfs::new(), d.path(), "/opt/nemoclaw", 0, 0, sp).unwrap()
        );
        // The same tree as a tarball gives the same digest.
        let tar = TarBuilder::new()
            .dir("dist", 0o700)
            .file("dist/index.js", b"console.log(1)", 0o777)
            .file("package.json", b"{ }", 0o600)
            .build();
        let (_t, p) = tarball(&gz(&tar));
        let mut tfs = Rootfs::new();
        let dt = apply(&mut tfs, &p, "/opt/nemoclaw", 0, 0, sp).unwrap();
        let dd = apply(&mut Rootfs::new(), d.path(), "/opt/nemoclaw", 0, 0, sp).unwrap();
        assert_eq!(dt, dd);
        assert_eq!(tfs.read("opt/nemoclaw/package.json").unwrap(), b"{ }");
    }

    #[test]
    fn escaping_symlinks_are_refused() {
        let sp = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        symlink("/etc/shadow", d.path().join("evil")).unwrap();
        let err = apply(&mut Rootfs::new(), d.path(), "/opt/x", 0, 0, sp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("escapes"), "{err:#}");
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        symlink("../../x", d.path().join("a/l")).unwrap();
        let err = apply(&mut Rootfs::new(), d.path(), "/opt/x", 0, 0, sp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("escapes"), "{err:#}");
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        symlink("../b", d.path().join("a/l")).unwrap();
        assert!(apply(&mut Rootfs::new(), d.path(), "/opt/x", 0, 0, sp.path()).is_ok());
    }

    /// Issue 12 #11: the walk used to record host paths that were re-opened when the
    /// layer was written, so a file swapped for a symlink in between shipped the
    /// link's target (any host file). Now the bytes read once are the bytes shipped.
    #[test]
    fn file_swapped_for_symlink_after_the_walk_ships_the_walked_bytes() {
        let sp = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let secret = host.path().join("secret");
        std::fs::write(&secret, b"host secret").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.js"), b"public").unwrap();
        let mut fs = Rootfs::new();
        let digest = apply(&mut fs, d.path(), "/opt/x", 0, 0, sp.path()).unwrap();
        std::fs::remove_file(d.path().join("app.js")).unwrap();
        symlink(&secret, d.path().join("app.js")).unwrap();
        assert_eq!(fs.read("opt/x/app.js").unwrap(), b"public");
        assert_eq!(fs.get("opt/x/app.js").unwrap().size(), 6);
        // A second build sees the swap and refuses the escaping link.
        let err = apply(&mut Rootfs::new(), d.path(), "/opt/x", 0, 0, sp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("escapes"), "{err:#}");
        assert!(digest.starts_with("sha256:"));
    }

    #[test]
    fn symlinked_directories_are_not_followed() {
        let sp = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::fs::write(d.path().join("real/f"), b"x").unwrap();
        symlink("real", d.path().join("alias")).unwrap();
        let mut fs = Rootfs::new();
        apply(&mut fs, d.path(), "/opt/x", 0, 0, sp.path()).unwrap();
        assert_eq!(fs.get("opt/x/alias").unwrap().kind(), Kind::Symlink);
        assert!(fs.get("opt/x/alias/f").is_none());
        assert_eq!(fs.read("opt/x/real/f").unwrap(), b"x");
    }

    /// Issue 12 #12: a tarball was inflated into memory whole. Now entries stream to
    /// the spill file and the uncompressed total is bounded.
    #[test]
    fn tarball_is_streamed_to_the_spill_and_bounded() {
        let big = vec![0u8; 4 << 20];
        let tar = TarBuilder::new().file("big.bin", &big, 0o644).build();
        let (_t, p) = tarball(&gz(&tar));
        let limits = Limits {
            max_bytes: 1 << 20,
            ..LIMITS
        };
        let err = apply_err(&p, &limits);
        assert!(
            err.contains("entry 'big.bin': the artifacts exceed the limit of 1048576 bytes"),
            "{err}"
        );
        let sp = tempfile::tempdir().unwrap();
        let mut fs = Rootfs::new();
        apply(&mut fs, &p, "/opt/x", 0, 0, sp.path()).unwrap();
        let n = fs.get("opt/x/big.bin").unwrap();
        assert!(
            matches!(n.content(), Some(Content::Host(_))),
            "bytes held in memory"
        );
        assert_eq!(n.size(), 4 << 20);
        assert_eq!(fs.read("opt/x/big.bin").unwrap(), big);
    }

    /// The limits are inclusive: `a/b/c` under the root is 4 levels, as deep as allowed.
    #[test]
    fn a_tree_at_the_depth_limit_is_accepted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b/c")).unwrap();
        std::fs::write(d.path().join("a/b/c/f"), b"x").unwrap();
        let spill = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_depth: 4,
            ..LIMITS
        };
        let mut fs = Rootfs::new();
        apply_with(&mut fs, d.path(), "/opt/x", (0, 0), spill.path(), &limits).unwrap();
        assert!(fs.get("opt/x/a/b/c/f").is_some());
    }

    #[test]
    fn directory_trees_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b/c")).unwrap();
        std::fs::write(d.path().join("a/b/c/f"), vec![1u8; 100]).unwrap();
        let err = apply_err(
            d.path(),
            &Limits {
                max_depth: 2,
                ..LIMITS
            },
        );
        assert!(err.contains("nested deeper than 2 directories"), "{err}");
        let err = apply_err(
            d.path(),
            &Limits {
                max_entries: 3,
                ..LIMITS
            },
        );
        assert!(err.contains("more than 3 entries"), "{err}");
        let err = apply_err(
            d.path(),
            &Limits {
                max_bytes: 99,
                ..LIMITS
            },
        );
        assert!(
            err.contains("a/b/c/f: the artifacts exceed the limit of 99"),
            "{err}"
        );
    }

    /// GNU long names and PAX records are held in memory by the tar reader; a huge
    /// one (cheap to compress) is refused instead of allocated.
    #[test]
    fn huge_tar_extension_header_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let name = vec![b'a'; 2 << 20];
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_path("././@LongLink").unwrap();
        h.set_size(name.len() as u64);
        h.set_cksum();
        b.append(&h, &name[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path("short").unwrap();
        h.set_size(1);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let (_t, p) = tarball(&gz(&b.into_inner().unwrap()));
        let err = apply_err(&p, &LIMITS);
        assert!(
            err.contains("extension headers before one entry exceed 1048576 bytes"),
            "{err}"
        );
    }

    #[test]
    fn ambiguous_tarballs_are_refused() {
        let dup = TarBuilder::new()
            .file("a", b"first", 0o644)
            .file("./a", b"second", 0o644)
            .build();
        let (_t, p) = tarball(&dup);
        assert!(apply_err(&p, &LIMITS).contains("entry 'a' appears more than once"));
        let through_link = TarBuilder::new()
            .dir("d", 0o755)
            .symlink("l", "d")
            .file("l/x", b"x", 0o644)
            .build();
        let (_t, p) = tarball(&through_link);
        let err = apply_err(&p, &LIMITS);
        assert!(
            err.contains("'/opt/x/l' is a Symlink, not a directory"),
            "{err}"
        );
        let mut full = TarBuilder::new().file("a", &vec![7u8; 4000], 0o644).build();
        full.truncate(512 + 1024);
        let (_t, p) = tarball(&full);
        let err = apply_err(&p, &LIMITS);
        assert!(
            err.contains("entry 'a' is truncated (1024 of 4000 bytes)"),
            "{err}"
        );
    }

    /// A name starting with `.wh.` is a whiteout to runtimes reading the layer:
    /// `.wh..wh..opq` hides what the base has under the directory, and `.wh..` names
    /// the directory's parent (see `rootfs::whiteout_of`), beyond the artifacts. The
    /// model took them as plain files; reading the layer back (`rootfs`) does not.
    #[test]
    fn whiteout_names_are_refused() {
        for name in [".wh..wh..opq", ".wh.passwd", ".wh.."] {
            let tar = TarBuilder::new()
                .dir("d", 0o755)
                .file(&format!("d/{name}"), b"", 0o644)
                .build();
            let (_t, p) = tarball(&tar);
            let err = apply_err(&p, &LIMITS);
            assert!(err.contains("is an OCI whiteout name"), "{name}: {err}");
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".wh..wh..opq"), b"").unwrap();
        let err = apply_err(d.path(), &LIMITS);
        assert!(err.contains("is an OCI whiteout name"), "{err}");
    }

    /// `gzip -d` and GNU tar read every gzip member; a first-member-only reader saw a
    /// shorter tree than they do.
    #[test]
    fn every_gzip_member_is_read() {
        let one = TarBuilder::new().file("a", b"1", 0o644).build();
        let two = TarBuilder::new().file("b", b"2", 0o644).build();
        // Members: tar stream of `a` without its end blocks, then `b` and the end.
        let mut bytes = gz(&one[..1024]);
        bytes.extend(gz(&two));
        let (_t, p) = tarball(&bytes);
        let sp = tempfile::tempdir().unwrap();
        let mut fs = Rootfs::new();
        apply(&mut fs, &p, "/opt/x", 0, 0, sp.path()).unwrap();
        assert_eq!(fs.read("opt/x/a").unwrap(), b"1");
        assert_eq!(fs.read("opt/x/b").unwrap(), b"2");
    }

    /// The `forbid_elf` gate keys on `Node::elf`; artifacts never set it.
    #[test]
    fn elf_artifacts_are_flagged_for_the_gate() {
        let sp = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("gcc"), b"\x7fELF\x02\x01\x01rest").unwrap();
        std::fs::write(d.path().join("x.js"), b"1").unwrap();
        let mut fs = Rootfs::new();
        apply(&mut fs, d.path(), "/opt/x", 0, 0, sp.path()).unwrap();
        assert!(fs.get("opt/x/gcc").unwrap().elf());
        assert!(!fs.get("opt/x/x.js").unwrap().elf());
        let pkgs = crate::recipe::Packages {
            forbid_elf: vec!["^gcc$".into()],
            ..Default::default()
        };
        let hits = crate::scan::forbidden(&fs, &pkgs).unwrap();
        assert!(
            hits.iter().any(|h| h.path.ends_with("opt/x/gcc")),
            "{hits:?}"
        );
    }

    #[test]
    fn special_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = apply_err(d.path(), &LIMITS);
        assert!(err.contains("pipe is a Fifo"), "{err}");
    }

    /// Names were converted lossily, so two different host names could become one.
    #[test]
    fn non_utf8_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9");
        std::fs::write(d.path().join(bad), b"x").unwrap();
        let err = apply_err(d.path(), &LIMITS);
        assert!(err.contains("is not a UTF-8 name"), "{err}");
    }

    /// Measures peak RSS of placing a 512 KiB tarball that inflates to 512 MiB
    /// (`cargo test --lib -- --ignored artifacts_bomb_rss --nocapture`).
    #[test]
    #[ignore]
    fn artifacts_bomb_rss() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_size(512 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        e.write_all(h.as_bytes()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..512 {
            e.write_all(&chunk).unwrap();
        }
        e.write_all(&[0u8; 1024]).unwrap();
        let (_t, p) = tarball(&e.finish().unwrap());
        let sp = tempfile::tempdir().unwrap();
        let mut fs = Rootfs::new();
        apply(&mut fs, &p, "/opt/x", 0, 0, sp.path()).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status.lines().find(|l| l.starts_with("VmHWM")).unwrap();
        println!(
            "tarball {} bytes -> {} bytes; {hwm}",
            std::fs::metadata(&p).unwrap().len(),
            fs.get("opt/x/zeros").unwrap().size()
        );
    }
}
