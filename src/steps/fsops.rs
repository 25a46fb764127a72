//! Generic filesystem operations from the recipe's ordered `[[fs]]` list.
use super::accounts::{gid_of, uid_of};
use crate::recipe::{FsOp, Recipe};
use crate::rootfs::{normalize, Kind, Node, Rootfs};
use anyhow::{anyhow, bail, Context, Result};

fn owner_ids(
    fs: &Rootfs,
    owner: &Option<String>,
    group: &Option<String>,
) -> Result<(Option<u64>, Option<u64>)> {
    let uid = owner.as_deref().map(|o| uid_of(fs, o)).transpose()?;
    let gid = group.as_deref().map(|g| gid_of(fs, g)).transpose()?;
    Ok((uid, gid))
}

fn refuse_symlink(fs: &Rootfs, path: &str) -> Result<()> {
    if let Some(n) = fs.get(path) {
        if n.kind() == Kind::Symlink {
            bail!("{path} is a symlink in the image; refusing to write through it");
        }
    }
    Ok(())
}

/// Prepends `lines` missing from `text` at the top. Returns None when nothing changes.
pub fn prepend_lines(text: &str, lines: &[String]) -> Option<String> {
    let present: std::collections::HashSet<&str> = text.lines().map(str::trim_end).collect();
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| !present.contains(l.trim_end()))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut out = String::new();
    for l in missing {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(text);
    Some(out)
}

pub fn apply(fs: &mut Rootfs, recipe: &Recipe) -> Result<()> {
    for (i, op) in recipe.fs.iter().enumerate() {
        apply_one(fs, recipe, i, op).with_context(|| {
            format!(
                "{}: fs operation #{} ({})",
                recipe.source_name,
                i + 1,
                describe(op)
            )
        })?;
    }
    Ok(())
}

pub fn describe(op: &FsOp) -> String {
    match op {
        FsOp::Dir { path, .. } => format!("dir {path}"),
        FsOp::File { path, .. } => format!("file {path}"),
        FsOp::Prepend { path, .. } => format!("prepend {path}"),
        FsOp::Chown { path, .. } => format!("chown {path}"),
        FsOp::Symlink { path, .. } => format!("symlink {path}"),
        FsOp::Remove { path } => format!("remove {path}"),
    }
}

fn apply_one(fs: &mut Rootfs, recipe: &Recipe, index: usize, op: &FsOp) -> Result<()> {
    match op {
        FsOp::Dir {
            path,
            owner,
            group,
            mode,
        } => {
            let ids = owner_ids(fs, owner, group)?;
            refuse_symlink(fs, path)?;
            ensure_dir(fs, path, ids, mode.map(|m| m.0))
        }
        FsOp::File {
            path,
            content,
            source,
            owner,
            group,
            mode,
        } => {
            let (uid, gid) = owner_ids(fs, owner, group)?;
            refuse_symlink(fs, path)?;
            let bytes = file_bytes(recipe, index, content, source)?;
            let mode = mode.map(|m| m.0).unwrap_or(0o644);
            fs.insert(
                path,
                Node::file(mode, uid.unwrap_or(0), gid.unwrap_or(0), bytes),
            )
        }
        FsOp::Prepend { path, lines, .. } => prepend(fs, path, lines),
        FsOp::Chown {
            path,
            owner,
            group,
            recursive,
        } => {
            let ids = owner_ids(fs, owner, group)?;
            chown(fs, path, ids, *recursive)
        }
        FsOp::Symlink { path, target } => fs.insert(path, Node::symlink(target)),
        FsOp::Remove { path } => {
            fs.remove(path);
            Ok(())
        }
    }
}

/// `dir`: creates the directory, or sets the owner and mode given on an existing
/// one (marking it modified only when something changes).
fn ensure_dir(
    fs: &mut Rootfs,
    path: &str,
    (uid, gid): (Option<u64>, Option<u64>),
    mode: Option<u32>,
) -> Result<()> {
    match fs.get_mut(path) {
        Some(n) if n.is_dir() => {
            let (nu, ng, nm) = (
                uid.unwrap_or(n.uid),
                gid.unwrap_or(n.gid),
                mode.unwrap_or(n.mode),
            );
            if (nu, ng, nm) != (n.uid, n.gid, n.mode) {
                n.uid = nu;
                n.gid = ng;
                n.mode = nm;
                n.modified = true;
            }
            Ok(())
        }
        Some(n) => bail!("{path} exists and is a {:?}, not a directory", n.kind()),
        None => fs.insert(
            path,
            Node::dir(mode.unwrap_or(0o755), uid.unwrap_or(0), gid.unwrap_or(0)),
        ),
    }
}

/// `file`: its inline content, or the `source` file read when the recipe was
/// loaded (and confined to the recipe's directory then).
fn file_bytes(
    recipe: &Recipe,
    index: usize,
    content: &Option<String>,
    source: &Option<String>,
) -> Result<Vec<u8>> {
    match (content, source) {
        (Some(c), _) => Ok(c.clone().into_bytes()),
        (None, Some(src)) => match recipe.sources.get(&index) {
            Some(b) => Ok(b.as_ref().clone()),
            None => bail!(
                "fs[{index}].source = {src:?} was not read: the recipe was parsed \
                 without a directory"
            ),
        },
        (None, None) => bail!("needs 'content' or 'source'"),
    }
}

/// `prepend`: puts `lines` first in a text file (created empty if absent), once.
fn prepend(fs: &mut Rootfs, path: &str, lines: &[String]) -> Result<()> {
    refuse_symlink(fs, path)?;
    let text = match fs.get(path) {
        Some(_) => {
            String::from_utf8(fs.read(path)?).map_err(|_| anyhow!("{path} is not UTF-8 text"))?
        }
        None => String::new(),
    };
    if let Some(new) = prepend_lines(&text, lines) {
        fs.write(path, new.into_bytes())?;
    }
    Ok(())
}

/// `chown`: sets the owner of `path` (and, `recursive`, of everything below it).
fn chown(
    fs: &mut Rootfs,
    path: &str,
    (uid, gid): (Option<u64>, Option<u64>),
    recursive: bool,
) -> Result<()> {
    let key = normalize(path)?;
    let mut keys = vec![key.clone()];
    if recursive {
        keys.extend(fs.descendants(&key).map(|(k, _)| k.to_string()));
    }
    if fs.get(&key).is_none() {
        bail!("{path} does not exist");
    }
    for k in keys {
        if let Some(n) = fs.nodes.get_mut(k.as_str()) {
            let (nu, ng) = (uid.unwrap_or(n.uid), gid.unwrap_or(n.gid));
            if (nu, ng) != (n.uid, n.gid) {
                n.uid = nu;
                n.gid = ng;
                n.modified = true;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write op never follows a symlink the image holds (it could point anywhere,
    /// /etc/shadow included); a regular file is edited in place.
    #[test]
    fn writes_refuse_symlinks_only() {
        let mut fs = Rootfs::new();
        fs.insert("etc", Node::dir(0o755, 0, 0)).unwrap();
        fs.insert("etc/shadow", Node::file(0o640, 0, 0, b"root:*:\n".to_vec()))
            .unwrap();
        fs.insert("etc/bash.bashrc", Node::symlink("shadow"))
            .unwrap();
        fs.insert("etc/profile", Node::file(0o644, 0, 0, b"PS1=x\n".to_vec()))
            .unwrap();
        let lines = vec!["umask 077".to_string()];
        let err = prepend(&mut fs, "etc/bash.bashrc", &lines).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(fs.read("etc/shadow").unwrap(), b"root:*:\n");
        prepend(&mut fs, "etc/profile", &lines).unwrap();
        assert_eq!(fs.read("etc/profile").unwrap(), b"umask 077\nPS1=x\n");
    }

    #[test]
    fn prepend_is_idempotent_and_goes_first() {
        let stock = "# System-wide .bashrc\n[ -z \"$PS1\" ] && return\nPS1='x'\n";
        let lines = vec!["[ -f /tmp/p.sh ] && . /tmp/p.sh".to_string()];
        let once = prepend_lines(stock, &lines).unwrap();
        assert!(once.starts_with("[ -f /tmp/p.sh ] && . /tmp/p.sh\n# System-wide"));
        assert!(once.ends_with(stock));
        assert_eq!(prepend_lines(&once, &lines), None);
    }

    #[test]
    fn recursive_chown_covers_base_content() {
        let mut fs = Rootfs::new();
        fs.insert(
            "etc/passwd",
            Node::file(
                0o644,
                0,
                0,
                b"root:x:0:0::/root:/bin/sh\nsandbox:x:998:998::/sandbox:/bin/bash\n".to_vec(),
            ),
        )
        .unwrap();
        fs.insert(
            "etc/group",
            Node::file(0o644, 0, 0, b"root:x:0:\nsandbox:x:998:\n".to_vec()),
        )
        .unwrap();
        let mut base = Node::file(0o600, 0, 0, b"x".to_vec());
        base.set_layer(Some(0));
        base.modified = false;
        fs.insert("sandbox/a/b", base).unwrap();
        let recipe = Recipe::parse(b"[[fs]]\nop='chown'\npath='/sandbox'\nowner='sandbox'\ngroup='sandbox'\nrecursive=true\n[[fs]]\nop='dir'\npath='/sandbox/x'\nmode='2770'\nowner='sandbox'\n", "t", std::path::Path::new(".")).unwrap();
        apply(&mut fs, &recipe).unwrap();
        let n = fs.get("sandbox/a/b").unwrap();
        assert_eq!((n.uid, n.gid, n.mode, n.modified), (998, 998, 0o600, true));
        assert_eq!(fs.get("sandbox/a").unwrap().uid, 998);
        let x = fs.get("sandbox/x").unwrap();
        assert_eq!((x.uid, x.gid, x.mode), (998, 0, 0o2770));
    }

    #[test]
    fn unknown_owner_is_an_error() {
        let mut fs = Rootfs::new();
        let recipe = Recipe::parse(
            b"[[fs]]\nop='dir'\npath='/x'\nowner='nobody-here'\n",
            "t",
            std::path::Path::new("."),
        )
        .unwrap();
        let err = apply(&mut fs, &recipe).unwrap_err();
        assert!(format!("{err:#}").contains("nobody-here"), "{err:#}");
        assert!(
            format!("{err:#}").contains("t: fs operation #1 (dir /x)"),
            "{err:#}"
        );
    }

    /// `dir` on an existing directory sets only what it gives (and marks the node
    /// changed only if something changed); on a file it is an error. `file` writes its
    /// content with its mode.
    #[test]
    fn dir_sets_given_fields_on_an_existing_directory_and_file_writes_content() {
        let mut fs = Rootfs::new();
        for (path, node) in [
            ("srv", Node::dir(0o755, 0, 0)),
            ("var", Node::dir(0o755, 0, 0)),
            ("etc/motd", Node::file(0o644, 0, 0, b"m".to_vec())),
        ] {
            fs.insert(path, node).unwrap();
        }
        for n in fs.nodes.values_mut() {
            n.modified = false;
        }
        let recipe = Recipe::parse(
            b"[[fs]]\nop='dir'\npath='/srv'\nmode='0700'\n[[fs]]\nop='dir'\npath='/var'\nmode='0755'\n[[fs]]\nop='file'\npath='/etc/issue'\ncontent='hi'\nmode='0600'\n[[fs]]\nop='dir'\npath='/etc/motd'\n",
            "t",
            std::path::Path::new("."),
        )
        .unwrap();
        let err = apply(&mut fs, &recipe).unwrap_err();
        assert!(
            format!("{err:#}").contains("fs operation #4 (dir /etc/motd)")
                && format!("{err:#}").contains("not a directory"),
            "{err:#}"
        );
        let meta = |p: &str| fs.get(p).map(|n| (n.mode, n.uid, n.modified));
        assert_eq!(meta("srv"), Some((0o700, 0, true)));
        assert_eq!(meta("var"), Some((0o755, 0, false)));
        assert_eq!(meta("etc/issue"), Some((0o600, 0, true)));
        assert_eq!(fs.read("etc/issue").unwrap(), b"hi");
    }
}
