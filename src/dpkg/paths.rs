//! Spellings of database paths and the image nodes they name.
//!
//! The dpkg database comes from the base image and may be hostile: a `.list` entry such
//! as `/bin/./bash`, `/bin//bash` or `/bin/` must not slip past the ownership check of
//! `/usr/bin/bash`. Every path from the database is first put in a lexical normal form
//! ([`normalize`], refusing `..`, NUL and relative paths, which dpkg never records) and
//! then mapped to the node a removal inside the image would hit ([`Layout`]).

use std::collections::HashMap;

use anyhow::{bail, Result};

/// Lexical normal form of an absolute database path: `/a/b` (`/` for the root), with
/// empty and `.` components and a trailing `/` dropped; these spell the same path for
/// every reader. `..` is refused: it could climb out of the root, and behind a symlink
/// it means one file lexically and another one physically. NUL and newline cannot be
/// part of a file name dpkg installs.
pub fn normalize(path: &str) -> Result<String> {
    if path.contains('\0') {
        bail!("path {path:?} contains a NUL byte");
    }
    if path.contains('\n') {
        bail!("path {path:?} contains a newline");
    }
    if !path.starts_with('/') {
        bail!("path {path:?} is not absolute");
    }
    let mut out = String::with_capacity(path.len());
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("path {path:?} contains '..'"),
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Maximum number of symlinks followed for one path (Linux' MAXSYMLINKS).
const MAX_HOPS: usize = 40;

/// The image's symlinks, by physical path (`/bin`, no symlink in any parent), to
/// resolve database paths the way the rootfs does: on a merged-/usr image `/bin/bash`
/// and `/usr/bin/bash` are one file.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    links: HashMap<String, String>,
}

impl Layout {
    /// A layout without symlinks: every normalized spelling is its own file.
    pub fn new() -> Layout {
        Layout::default()
    }

    /// Debian's merged-/usr symlinks (`/bin -> usr/bin`, `/sbin`, `/lib`, `/lib32`,
    /// `/lib64`, `/libx32`, `/libo32`): the layout assumed when the image is not known.
    pub fn merged_usr() -> Layout {
        let mut l = Layout::new();
        for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32", "libo32"] {
            l.add_link(&format!("/{d}"), &format!("usr/{d}"));
        }
        l
    }

    /// Records the symlink at physical path `path` (absolute or relative to the root)
    /// pointing to `target` (as stored in the link).
    pub fn add_link(&mut self, path: &str, target: &str) {
        let key = format!("/{}", path.trim_matches('/'));
        self.links.insert(key, target.to_string());
    }

    /// Physical path of directory `dir` (normalized), every symlink followed with
    /// chroot semantics (`..` and absolute targets stay inside the root). The physical
    /// paths of the symlinks followed are appended to `trace`. `None` on a symlink loop.
    fn resolve_dir(&self, dir: &str, trace: &mut Vec<String>) -> Option<String> {
        let mut pending: Vec<String> = dir
            .split('/')
            .rev()
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut cur = String::new();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    let cut = cur.rfind('/').unwrap_or(0);
                    cur.truncate(cut);
                    continue;
                }
                _ => {}
            }
            let len = cur.len();
            cur.push('/');
            cur.push_str(&c);
            if let Some(target) = self.links.get(&cur) {
                hops += 1;
                if hops > MAX_HOPS {
                    return None;
                }
                trace.push(cur.clone());
                cur.truncate(len);
                if target.starts_with('/') {
                    cur.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .rev()
                        .filter(|c| !c.is_empty())
                        .map(str::to_string),
                );
            }
        }
        if cur.is_empty() {
            cur.push('/');
        }
        Some(cur)
    }
}

/// Memoized [`Layout`] resolution of many database paths (most share their parent).
pub(crate) struct Nodes<'a> {
    layout: &'a Layout,
    /// Parent directory (normalized) -> physical path and symlinks followed.
    dirs: HashMap<String, Option<(String, Vec<String>)>>,
}

impl<'a> Nodes<'a> {
    pub fn new(layout: &'a Layout) -> Nodes<'a> {
        Nodes {
            layout,
            dirs: HashMap::new(),
        }
    }

    /// The node that normalized path `path` names, as `unlink` would see it: the parent
    /// resolved through the image's symlinks, the last component not followed. Also the
    /// symlinks followed on the way. `None` for the root and on a symlink loop.
    pub fn node(&mut self, path: &str) -> Option<(String, &[String])> {
        let (parent, name) = path.rsplit_once('/')?;
        if name.is_empty() {
            return None;
        }
        let layout = self.layout;
        let entry = self.dirs.entry(parent.to_string()).or_insert_with(|| {
            let mut trace = Vec::new();
            layout.resolve_dir(parent, &mut trace).map(|d| (d, trace))
        });
        let (dir, trace) = entry.as_ref()?;
        let node = if dir == "/" {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        };
        Some((node, trace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_form_and_refusals() {
        for (p, n) in [
            ("/bin/./bash", "/bin/bash"),
            ("/bin//bash", "/bin/bash"),
            ("//usr/bin/", "/usr/bin"),
            ("/.", "/"),
            ("/", "/"),
        ] {
            assert_eq!(normalize(p).unwrap(), n, "{p}");
        }
        for (p, why) in [
            ("/usr/../bin", "'..'"),
            ("/..", "'..'"),
            ("bin/bash", "not absolute"),
            ("", "not absolute"),
            ("/a\0b", "NUL"),
            ("/a\nb", "newline"),
        ] {
            let e = normalize(p).unwrap_err().to_string();
            assert!(e.contains(why), "{p:?}: {e}");
        }
    }

    #[test]
    fn nodes_resolve_parents_not_the_name() {
        let mut l = Layout::merged_usr();
        l.add_link("/usr/share/doc/a", "b");
        l.add_link("/usr/lib/up", "../../..");
        l.add_link("/loop1", "loop2");
        l.add_link("/loop2", "/loop1");
        let mut n = Nodes::new(&l);
        let mut node = |p: &str| n.node(p).map(|(node, t)| (node, t.to_vec()));
        assert_eq!(
            node("/bin/bash"),
            Some(("/usr/bin/bash".into(), vec!["/bin".into()]))
        );
        assert_eq!(node("/bin"), Some(("/bin".into(), vec![])));
        assert_eq!(
            node("/usr/share/doc/a/x"),
            Some(("/usr/share/doc/b/x".into(), vec!["/usr/share/doc/a".into()]))
        );
        // Targets climbing above the root stay at the root.
        assert_eq!(node("/usr/lib/up/bin").unwrap().0, "/bin");
        assert_eq!(node("/usr/lib/up/bin/x").unwrap().0, "/usr/bin/x");
        assert_eq!(node("/loop1/x"), None);
        assert_eq!(node("/"), None);
    }

    /// `.` and empty components of a link target name the directory itself.
    #[test]
    fn dot_components_of_link_targets_are_skipped() {
        let mut l = Layout::new();
        l.add_link("/usr/share/doc/c", ".//b/.");
        let mut n = Nodes::new(&l);
        assert_eq!(
            n.node("/usr/share/doc/c/x").unwrap().0,
            "/usr/share/doc/b/x"
        );
    }

    /// Like Linux (MAXSYMLINKS), a path resolves through 40 symlinks, not 41.
    #[test]
    fn at_most_40_symlinks_are_followed() {
        let chain = |links: usize| {
            let mut l = Layout::new();
            for k in 0..links {
                l.add_link(&format!("/l{k}"), &format!("l{}", k + 1));
            }
            l
        };
        let l = chain(40);
        assert_eq!(Nodes::new(&l).node("/l0/x").unwrap().0, "/l40/x");
        let l = chain(41);
        assert_eq!(Nodes::new(&l).node("/l0/x"), None);
    }
}
