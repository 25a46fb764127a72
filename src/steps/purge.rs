//! Glue between the rootfs model and the dpkg planner: gathers the database
//! files from the model, applies the plan (files, dpkg info, alternatives).
use crate::dpkg::{plan_purge, DbFiles, PurgePlan, PurgeRequest};
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
        if node.kind == Kind::File {
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
    let plan = plan_purge(&files, &req).context("cannot plan the package purge")?;
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
        let Some(node) = fs.nodes.get(key) else {
            continue;
        };
        if node.kind == Kind::Dir && fs.descendants(key).next().is_some() {
            continue; // still used by something else
        }
        if node.kind == Kind::File {
            report.bytes_removed += node.size;
        }
        report.files_removed += fs.remove(key) as u64;
    }
    for (path, bytes) in &plan.write_files {
        let key = real_key(fs, path).unwrap_or_else(|| path.trim_start_matches('/').to_string());
        if fs.nodes.get(&key).is_some_and(|n| n.kind == Kind::File) {
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
