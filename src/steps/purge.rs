//! Glue between the rootfs model and the dpkg planner: gathers the database
//! files from the model, applies the plan (files, dpkg info, alternatives).
use crate::dpkg::{plan_purge_in, DbFiles, Layout, PurgePlan, PurgeRequest};
use crate::recipe::Packages;
use crate::rootfs::{Kind, Node, Rootfs};
use anyhow::{Context, Result};

#[derive(Debug, Default, serde::Serialize)]
pub struct PurgeReport {
    pub plan: PurgePlan,
    pub files_removed: u64,
    pub bytes_removed: u64,
}

pub fn db_files(fs: &Rootfs) -> Result<DbFiles> {
    let mut files = DbFiles::new();
    for (path, node) in fs.descendants("var/lib/dpkg") {
        if node.kind() == Kind::File {
            files.insert(format!("/{path}"), fs.read(path)?);
        }
    }
    if fs.get("var/lib/apt/extended_states").is_some() {
        files.insert(
            "/var/lib/apt/extended_states".into(),
            fs.read("var/lib/apt/extended_states")?,
        );
    }
    Ok(files)
}

/// The image's symlinks, so that the planner decides on the nodes paths name in this
/// image (merged /usr or not, and whatever other directory symlinks it has).
fn layout(fs: &Rootfs) -> Layout {
    let mut l = Layout::new();
    for (path, node) in &fs.nodes {
        if node.kind() == Kind::Symlink {
            l.add_link(path, node.link().unwrap_or(""));
        }
    }
    l
}

/// dpkg records paths as packaged (`/bin/nc.openbsd`); on merged-/usr the parent is a
/// symlink. Resolve the parent inside the image, never the last component.
fn real_key(fs: &Rootfs, path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/')?;
    let rp = fs.resolve(parent)?;
    Some(if rp.is_empty() {
        name.to_string()
    } else {
        format!("{rp}/{name}")
    })
}

pub fn apply(fs: &mut Rootfs, p: &Packages, strict: bool) -> Result<Option<PurgeReport>> {
    if p.purge.is_empty() {
        return Ok(None);
    }
    if fs.get("var/lib/dpkg/status").is_none() {
        anyhow::bail!("the recipe purges packages, but the base has no /var/lib/dpkg/status (not a Debian-based image?)");
    }
    let files = db_files(fs)?;
    let req = PurgeRequest {
        purge: p.purge.clone(),
        keep: p.keep.clone(),
        autoremove: p.autoremove,
        strict,
    };
    let plan = plan_purge_in(&files, &req, &layout(fs)).context("cannot plan the package purge")?;
    let mut report = PurgeReport::default();
    // Deepest paths first so directories are seen after their contents.
    let mut paths: Vec<String> = plan
        .remove_paths
        .iter()
        .filter_map(|p| real_key(fs, p))
        .collect();
    paths.sort();
    paths.dedup();
    for key in paths.iter().rev() {
        let Some(node) = fs.nodes.get(key.as_str()) else {
            continue;
        };
        if node.kind() == Kind::Dir && fs.descendants(key).next().is_some() {
            continue; // still used by something else
        }
        if node.kind() == Kind::File {
            report.bytes_removed += node.size();
        }
        report.files_removed += fs.remove(key) as u64;
    }
    for (path, bytes) in &plan.write_files {
        let key = real_key(fs, path).unwrap_or_else(|| path.trim_start_matches('/').to_string());
        if fs
            .nodes
            .get(key.as_str())
            .is_some_and(|n| n.kind() == Kind::File)
        {
            fs.write(&key, bytes.clone())?;
        } else {
            fs.insert(&key, Node::file(0o644, 0, 0, bytes.clone()))?;
        }
    }
    for (path, target) in &plan.symlinks {
        let key = real_key(fs, path).unwrap_or_else(|| path.trim_start_matches('/').to_string());
        fs.insert(&key, Node::symlink(target))?;
    }
    report.plan = plan;
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(fs: &mut Rootfs, path: &str, text: &str) {
        fs.insert(path, Node::file(0o644, 0, 0, text.as_bytes().to_vec()))
            .unwrap();
    }

    /// A merged-/usr rootfs with bash and gcc installed; `gcc_list` is gcc's `.list`.
    fn merged_usr_image(gcc_list: &str) -> Rootfs {
        let mut fs = Rootfs::new();
        for d in ["usr/bin", "usr/lib", "usr/sbin", "usr/share/doc/bash"] {
            fs.insert(d, Node::dir(0o755, 0, 0)).unwrap();
        }
        for (l, t) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("sbin", "usr/sbin")] {
            fs.insert(l, Node::symlink(t)).unwrap();
        }
        file(&mut fs, "usr/bin/bash", "bash");
        file(&mut fs, "usr/bin/gcc", "gcc");
        file(&mut fs, "usr/share/doc/bash/copyright", "c");
        let stanza = |name: &str| {
            format!(
                "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n"
            )
        };
        file(
            &mut fs,
            "var/lib/dpkg/status",
            &format!("{}\n{}", stanza("bash"), stanza("gcc")),
        );
        file(
            &mut fs,
            "var/lib/dpkg/info/bash.list",
            "/.\n/bin\n/bin/bash\n/usr\n/usr/share\n/usr/share/doc\n/usr/share/doc/bash\n/usr/share/doc/bash/copyright\n",
        );
        file(&mut fs, "var/lib/dpkg/info/gcc.list", gcc_list);
        fs
    }

    fn purge_gcc(fs: &mut Rootfs) -> Result<Option<PurgeReport>> {
        let p: Packages = toml::from_str("purge = [\"gcc\"]").unwrap();
        apply(fs, &p, false)
    }

    /// The report counts the nodes and file bytes that left the image; a directory
    /// only the purged package lists goes, one another package uses or that still
    /// holds a file stays; the status file the plan rewrites keeps its metadata.
    #[test]
    fn purge_reports_what_left_and_keeps_status_metadata() {
        let mut fs = merged_usr_image(
            "/.\n/usr/bin/gcc\n/usr/lib/gcc\n/usr/libexec/gcc\n/usr/share/doc/bash\n",
        );
        fs.insert("usr/lib/gcc", Node::dir(0o755, 0, 0)).unwrap();
        // gcc's directory holds a file no package lists: like rmdir, the purge keeps it.
        file(&mut fs, "usr/libexec/gcc/local", "l");
        fs.get_mut("var/lib/dpkg/status").unwrap().mode = 0o600;
        let size = |n: &Node| if n.kind() == Kind::File { n.size() } else { 0 };
        let before: Vec<(String, u64)> = fs
            .nodes
            .iter()
            .map(|(k, n)| (k.to_string(), size(n)))
            .collect();
        let rep = purge_gcc(&mut fs).unwrap().expect("a report");
        let gone: Vec<&(String, u64)> = before
            .iter()
            .filter(|(k, _)| !fs.nodes.contains_key(k.as_str()))
            .collect();
        let names: Vec<&str> = gone.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            names.contains(&"usr/bin/gcc") && names.contains(&"usr/lib/gcc"),
            "{names:?}"
        );
        assert!(fs.get("usr/share/doc/bash/copyright").is_some());
        assert!(fs.get("usr/libexec/gcc/local").is_some());
        assert_eq!(rep.files_removed, gone.len() as u64, "{names:?}");
        assert_eq!(rep.bytes_removed, gone.iter().map(|(_, b)| b).sum::<u64>());
        assert_eq!(fs.get("var/lib/dpkg/status").map(|n| n.mode), Some(0o600));
    }

    /// Issue 12 #13: other spellings of bash's file and of the usrmerge symlinks in a
    /// hostile gcc.list must not delete them.
    #[test]
    fn hostile_list_spellings_keep_bash_and_usrmerge_links() {
        let mut fs = merged_usr_image(
            "/.\n/bin/./bash\n/bin//bash\n/usr/bin/./bash\n/bin/\n/lib/.\n//sbin\n/usr/bin/gcc\n/usr/share/doc/bash/\n",
        );
        purge_gcc(&mut fs).unwrap();
        assert!(fs.get("usr/bin/gcc").is_none());
        for l in ["bin", "lib", "sbin"] {
            assert_eq!(fs.get(l).map(|n| n.kind()), Some(Kind::Symlink), "/{l}");
        }
        assert!(fs.get("usr/bin/bash").is_some());
        assert!(fs.get("usr/share/doc/bash/copyright").is_some());
    }

    /// Issue 12 #13: a directory symlink through which a surviving package's files are
    /// reached is not removed, whichever package lists it.
    #[test]
    fn directory_symlinks_in_use_are_kept() {
        let mut fs = merged_usr_image("/.\n/usr/bin/gcc\n/usr/share/doc/gcc\n");
        // bash's doc dir is reached through gcc's doc symlink in this image.
        fs.remove("usr/share/doc/bash");
        fs.insert(
            "usr/share/doc/gcc-docs/copyright",
            Node::file(0o644, 0, 0, b"c".to_vec()),
        )
        .unwrap();
        fs.insert("usr/share/doc/gcc", Node::symlink("gcc-docs"))
            .unwrap();
        fs.insert("usr/share/doc/bash", Node::symlink("gcc"))
            .unwrap();
        purge_gcc(&mut fs).unwrap();
        assert!(fs.get("usr/bin/gcc").is_none());
        assert_eq!(
            fs.get("usr/share/doc/gcc").map(|n| n.kind()),
            Some(Kind::Symlink)
        );
    }
}
