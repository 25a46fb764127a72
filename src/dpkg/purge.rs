//! `apt-get purge --auto-remove` planning on a [`DpkgDb`].
//!
//! 1. Requested packages are resolved (`name` or `name:arch`); names that are not
//!    installed are reported.
//! 2. Every installed package with a `Depends`/`Pre-Depends` or-group that was satisfied
//!    before and is satisfied by nothing that remains is removed as well (fixpoint),
//!    like apt's problem resolver does for a removal.
//! 3. With `autoremove`, apt's mark-and-sweep (`pkgDepCache::MarkRequired`) runs on the
//!    remaining packages: roots are manually installed packages (incl. `keep`),
//!    `Essential`/`Protected`/`Important` packages, `Priority: required` packages, held
//!    packages and APT::NeverAutoRemove defaults; marking follows Pre-Depends, Depends,
//!    Recommends and Suggests (apt's defaults), through real packages and providers.
//!    Unmarked auto-installed packages are removed.
//! 4. Files, info files, status/extended_states stanzas, alternatives, diversions and
//!    trigger interests of the removed packages are turned into a [`PurgePlan`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::{bail, Result};

use super::alternatives::Alternative;
use super::relation::{Relation, RelationList};
use super::version::compare_versions;
use super::{
    split_arch, DbFiles, DpkgDb, Package, PurgePlan, PurgeRequest, RemovalReason, RemovedPackage,
    ALTERNATIVES_DIR, DIVERSIONS_PATH, ETC_ALTERNATIVES_DIR, EXTENDED_STATES_PATH, INFO_DIR,
    STATUS_PATH, TRIGGERS_DIR,
};

/// Why a package is in the removal set (internal, with indices for chains).
#[derive(Debug, Clone, Copy)]
enum Why {
    Requested,
    Dep { on: usize, pre: bool },
    Auto,
}

/// Top-level directories that a plan never deletes, whatever the file lists say.
const PROTECTED_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/libo32", "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
    "/usr", "/var",
];

/// The merged-/usr alias of a path (`/bin/x` and `/usr/bin/x` are the same file on a
/// merged-/usr system), used to recognise files shared between packages.
fn canonical(path: &str) -> String {
    for dir in [
        "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/libo32",
    ] {
        if let Some(rest) = path.strip_prefix(dir) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("/usr{dir}{rest}");
            }
        }
    }
    path.to_string()
}

/// APT::NeverAutoRemove defaults from Debian's /etc/apt/apt.conf.d/01autoremove.
fn never_autoremove(name: &str) -> bool {
    let alnum = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if name.starts_with("firmware-linux") || name == "linux-firmware" {
        return true;
    }
    if let Some(rest) = name.strip_prefix("linux-image-") {
        let parts: Vec<&str> = rest.split('-').collect();
        return parts.len() <= 2 && parts.iter().all(|p| alnum(p));
    }
    false
}

struct Ctx<'a> {
    db: &'a DpkgDb,
    /// Installed (files on disk) package indices by name.
    by_name: HashMap<&'a str, Vec<usize>>,
    /// Providers by virtual name: (package index, provided version).
    providers: HashMap<&'a str, Vec<(usize, Option<&'a str>)>>,
}

impl<'a> Ctx<'a> {
    fn new(db: &'a DpkgDb) -> Ctx<'a> {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut providers: HashMap<&str, Vec<(usize, Option<&str>)>> = HashMap::new();
        for (i, p) in db.packages.iter().enumerate() {
            if !p.is_installed() {
                continue;
            }
            by_name.entry(p.name.as_str()).or_default().push(i);
            for prv in &p.provides {
                let ver = prv.version.as_ref().map(|(_, v)| v.as_str());
                providers
                    .entry(prv.name.as_str())
                    .or_default()
                    .push((i, ver));
            }
        }
        Ctx {
            db,
            by_name,
            providers,
        }
    }

    fn eff_arch<'b>(&'b self, arch: &'b str) -> &'b str {
        if arch == "all" || arch.is_empty() {
            &self.db.native_arch
        } else {
            arch
        }
    }

    /// Whether `target` can satisfy a dependency of `owner` with arch qualifier `qual`.
    /// Lenient where dpkg and apt differ in details (a false "satisfied" only keeps more).
    fn arch_ok(&self, owner: &Package, qual: Option<&str>, target: &Package) -> bool {
        let t = self.eff_arch(&target.arch);
        let foreign = target.multi_arch.as_deref() == Some("foreign");
        match qual {
            None => foreign || t == self.eff_arch(&owner.arch),
            Some("any") => {
                foreign
                    || target.multi_arch.as_deref() == Some("allowed")
                    || t == self.eff_arch(&owner.arch)
            }
            Some("native") => t == self.db.native_arch,
            Some(a) => t == a || target.arch == a,
        }
    }

    /// Installed packages satisfying `rel` for `owner` (real package or provider),
    /// without regard to removal. `via_provides` tells how each one satisfies it.
    fn satisfiers(&self, owner: &Package, rel: &Relation) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        let qual = rel.arch.as_deref();
        if let Some(cands) = self.by_name.get(rel.name.as_str()) {
            for &i in cands {
                let t = &self.db.packages[i];
                if !self.arch_ok(owner, qual, t) {
                    continue;
                }
                if let Some((op, v)) = &rel.version {
                    if !op.holds(&t.version, v) {
                        continue;
                    }
                }
                out.push((i, false));
            }
        }
        if let Some(provs) = self.providers.get(rel.name.as_str()) {
            for &(i, pv) in provs {
                let t = &self.db.packages[i];
                if !self.arch_ok(owner, qual, t) {
                    continue;
                }
                if let Some((op, v)) = &rel.version {
                    match pv {
                        Some(pv) if op.holds(pv, v) => {}
                        _ => continue,
                    }
                }
                if !out.iter().any(|&(j, _)| j == i) {
                    out.push((i, true));
                }
            }
        }
        out
    }
}

/// Resolve a request name to stanza indices: `name:arch` exactly; `name` prefers the
/// native (or `all`) architecture, else any architecture.
fn resolve(db: &DpkgDb, spec: &str, include_config_files: bool) -> Vec<usize> {
    let (name, arch) = split_arch(spec.trim());
    let cands: Vec<usize> = db
        .packages
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.name == name
                && (p.is_installed() || (include_config_files && p.state == "config-files"))
        })
        .map(|(i, _)| i)
        .collect();
    match arch {
        Some("any") | None => {
            let native: Vec<usize> = cands
                .iter()
                .copied()
                .filter(|&i| {
                    let a = db.packages[i].arch.as_str();
                    a == db.native_arch || a == "all" || a.is_empty()
                })
                .collect();
            if native.is_empty() || arch == Some("any") {
                cands
            } else {
                native
            }
        }
        Some(a) => cands
            .into_iter()
            .filter(|&i| db.packages[i].arch == a)
            .collect(),
    }
}

fn chain(db: &DpkgDb, why: &BTreeMap<usize, Why>, start: usize) -> String {
    let mut out = String::new();
    let mut cur = start;
    let mut seen = HashSet::new();
    loop {
        let name = &db.packages[cur].name;
        if !seen.insert(cur) {
            out.push_str(&format!("{name} (cycle)"));
            return out;
        }
        match why.get(&cur) {
            Some(Why::Dep { on, pre }) => {
                let verb = if *pre { "pre-depends on" } else { "depends on" };
                if out.is_empty() {
                    out.push_str(&format!("{name} {verb} "));
                } else {
                    out.push_str(&format!("{name}, which {verb} "));
                }
                cur = *on;
            }
            Some(Why::Requested) => {
                if out.is_empty() {
                    out.push_str(&format!("{name} is requested for purge"));
                } else {
                    out.push_str(&format!("{name}, which is purged"));
                }
                return out;
            }
            Some(Why::Auto) => {
                out.push_str(&format!("{name}, which is autoremoved"));
                return out;
            }
            None => {
                out.push_str(name);
                return out;
            }
        }
    }
}

/// Compute what `apt-mark manual KEEP; apt-get purge [--auto-remove] PURGE` would do.
pub fn plan_purge(files: &DbFiles, req: &PurgeRequest) -> Result<PurgePlan> {
    let db = DpkgDb::parse(files)?;
    let ctx = Ctx::new(&db);
    let n = db.packages.len();
    let mut plan = PurgePlan::default();

    // 1. requested packages
    let mut why: BTreeMap<usize, Why> = BTreeMap::new();
    for spec in &req.purge {
        let idx = resolve(&db, spec, true);
        if idx.is_empty() && !plan.not_installed.contains(spec) {
            plan.not_installed.push(spec.clone());
        }
        for i in idx {
            why.insert(i, Why::Requested);
        }
    }
    let mut keep: BTreeSet<usize> = BTreeSet::new();
    for spec in &req.keep {
        keep.extend(resolve(&db, spec, false));
    }

    // 2. packages whose Depends/Pre-Depends break
    let installed: Vec<bool> = db.packages.iter().map(Package::is_installed).collect();
    // For each package: (pre, satisfiers of the group before removal).
    let groups: Vec<Vec<(bool, Vec<usize>)>> = db
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if !installed[i] {
                return Vec::new();
            }
            let mut g = Vec::new();
            for (pre, list) in [(true, &p.pre_depends), (false, &p.depends)] {
                for group in list {
                    let mut sats: Vec<usize> = Vec::new();
                    for rel in group {
                        for (s, _) in ctx.satisfiers(p, rel) {
                            if s != i && !sats.contains(&s) {
                                sats.push(s);
                            }
                        }
                    }
                    // A group satisfied by the package itself never breaks.
                    let self_sat = group
                        .iter()
                        .any(|rel| ctx.satisfiers(p, rel).iter().any(|&(s, _)| s == i));
                    if !sats.is_empty() && !self_sat {
                        g.push((pre, sats));
                    }
                }
            }
            g
        })
        .collect();
    loop {
        let mut changed = false;
        for i in 0..n {
            if !installed[i] || why.contains_key(&i) {
                continue;
            }
            for (pre, sats) in &groups[i] {
                if sats.iter().all(|s| why.contains_key(s)) {
                    why.insert(
                        i,
                        Why::Dep {
                            on: sats[0],
                            pre: *pre,
                        },
                    );
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }

    // Safety checks on the closure.
    let mut errors = Vec::new();
    for &k in &keep {
        if why.contains_key(&k) {
            errors.push(format!(
                "keep package {} would be removed: {}",
                db.packages[k].name,
                chain(&db, &why, k)
            ));
        }
    }
    for (&i, _) in why.iter() {
        let p = &db.packages[i];
        if p.is_installed() && (p.essential || p.protected) {
            let kind = if p.essential {
                "essential"
            } else {
                "protected"
            };
            errors.push(format!(
                "{kind} package {} would be removed: {}",
                p.name,
                chain(&db, &why, i)
            ));
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    if req.strict {
        let deps: Vec<String> = why
            .iter()
            .filter(|(_, w)| matches!(w, Why::Dep { .. }))
            .map(|(&i, _)| chain(&db, &why, i))
            .collect();
        if !deps.is_empty() {
            bail!(
                "strict purge would also remove dependent packages: {}",
                deps.join("; ")
            );
        }
    }

    // 3. autoremove (apt's mark and sweep)
    if req.autoremove {
        let alive = |i: usize| installed[i] && !why.contains_key(&i);
        let mut marked = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        for (i, p) in db.packages.iter().enumerate() {
            if !alive(i) {
                continue;
            }
            let root = !p.auto_installed
                || keep.contains(&i)
                || p.essential
                || p.protected
                || p.priority.as_deref() == Some("required")
                || p.want == "hold"
                || never_autoremove(&p.name);
            if root {
                marked[i] = true;
                stack.push(i);
            }
        }
        while let Some(i) = stack.pop() {
            let p = &db.packages[i];
            let lists: [&RelationList; 4] =
                [&p.pre_depends, &p.depends, &p.recommends, &p.suggests];
            for rel in lists.into_iter().flatten().flatten() {
                let sats = ctx.satisfiers(p, rel);
                let mut provs: Vec<usize> = Vec::new();
                for (s, via) in sats {
                    if !alive(s) {
                        continue;
                    }
                    if via {
                        provs.push(s);
                    } else if !marked[s] {
                        marked[s] = true;
                        stack.push(s);
                    }
                }
                // apt marks, per source package, only the providers of the newest
                // source version.
                let mut newest: HashMap<&str, &str> = HashMap::new();
                for &s in &provs {
                    let q = &db.packages[s];
                    let e = newest.entry(q.source.as_str()).or_insert(&q.source_version);
                    if compare_versions(&q.source_version, e).is_gt() {
                        *e = &q.source_version;
                    }
                }
                for s in provs {
                    let q = &db.packages[s];
                    let top = newest.get(q.source.as_str()).copied().unwrap_or("");
                    if compare_versions(&q.source_version, top).is_eq() && !marked[s] {
                        marked[s] = true;
                        stack.push(s);
                    }
                }
            }
        }
        let garbage: Vec<usize> = (0..n).filter(|&i| alive(i) && !marked[i]).collect();
        for i in garbage {
            why.insert(i, Why::Auto);
        }
    }

    // Removed packages list.
    let mut removed: Vec<RemovedPackage> = why
        .iter()
        .map(|(&i, w)| {
            let p = &db.packages[i];
            RemovedPackage {
                name: p.name.clone(),
                arch: p.arch.clone(),
                version: p.version.clone(),
                reason: match w {
                    Why::Requested => RemovalReason::Requested,
                    Why::Dep { on, .. } => RemovalReason::DependsOn(db.packages[*on].name.clone()),
                    Why::Auto => RemovalReason::Autoremoved,
                },
                installed_size_kib: p.installed_size_kib,
            }
        })
        .collect();
    removed.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.arch.cmp(&b.arch)));
    plan.removed = removed;

    // Extended states: apt-mark manual for keep packages even if nothing is removed.
    let keep_auto: Vec<usize> = keep
        .iter()
        .copied()
        .filter(|&k| db.packages[k].auto_installed)
        .collect();
    if why.is_empty() && keep_auto.is_empty() {
        return Ok(plan);
    }

    // 4. contents
    let removed_set: HashSet<usize> = why.keys().copied().collect();
    apply_files(&db, files, &removed_set, &mut plan)?;

    if !why.is_empty() {
        let status = db.status.without(|i, _| removed_set.contains(&i));
        plan.write_files.insert(STATUS_PATH.to_string(), status);
    }

    if let Some(ext) = &db.extended {
        let drop_set: HashSet<usize> = removed_set
            .iter()
            .chain(keep_auto.iter())
            .copied()
            .collect();
        let matches = |k: usize| -> bool {
            let (name, arch, auto) = &db.extended_entries[k];
            drop_set.iter().any(|&i| {
                let p = &db.packages[i];
                let p_arch = ctx.eff_arch(&p.arch);
                p.name == *name
                    && arch.as_deref().is_none_or(|a| a == p_arch)
                    && (removed_set.contains(&i) || *auto)
            })
        };
        let dropped = (0..ext.stanzas.len()).any(matches);
        if dropped {
            plan.write_files.insert(
                EXTENDED_STATES_PATH.to_string(),
                ext.without(|k, _| matches(k)),
            );
        }
    }
    Ok(plan)
}

/// Files, info files, diversions, alternatives and triggers of the removed packages.
fn apply_files(
    db: &DpkgDb,
    files: &DbFiles,
    removed: &HashSet<usize>,
    plan: &mut PurgePlan,
) -> Result<()> {
    // Where a listed path of package `name` really is, honouring diversions.
    let divs: HashMap<&str, &super::Diversion> =
        db.diversions.iter().map(|d| (d.from.as_str(), d)).collect();
    let real = |name: &str, path: &str| -> String {
        match divs.get(path) {
            Some(d) if d.package.as_deref() != Some(name) => d.to.clone(),
            _ => path.to_string(),
        }
    };
    let paths_of = |i: usize| -> Vec<String> {
        let p = &db.packages[i];
        let mut v: Vec<String> = db.lists[i].iter().flatten().cloned().collect();
        v.extend(p.conffiles.iter().cloned());
        v
    };

    let mut surviving: HashSet<String> = HashSet::new();
    for i in 0..db.packages.len() {
        if removed.contains(&i) {
            continue;
        }
        let name = &db.packages[i].name;
        for path in paths_of(i) {
            surviving.insert(canonical(&real(name, &path)));
        }
    }

    let mut rm: BTreeSet<String> = BTreeSet::new();
    for &i in removed {
        let p = &db.packages[i];
        if db.lists[i].is_none() && p.is_installed() {
            bail!(
                "{INFO_DIR}{}.list missing from the database files: cannot tell which files package {} ({}) installed",
                db.info_names[i],
                p.name,
                p.arch
            );
        }
        for path in paths_of(i) {
            let r = real(&p.name, &path);
            if PROTECTED_DIRS.contains(&r.as_str()) {
                continue;
            }
            if !surviving.contains(&canonical(&r)) {
                rm.insert(r);
            }
        }
        // Info files: PKG.<type> with a type that has no dot.
        let prefix = format!("{INFO_DIR}{}.", db.info_names[i]);
        for key in files.range(prefix.clone()..) {
            let Some(rest) = key.0.strip_prefix(&prefix) else {
                break;
            };
            if !rest.is_empty() && !rest.contains('.') && !rest.contains('/') {
                rm.insert(key.0.clone());
            }
        }
    }

    // Diversions set up by removed packages go away with them (their postrm would run
    // dpkg-divert --remove). Renaming a surviving package's diverted file back is not
    // something a plan can express: refuse.
    let removed_names: HashSet<&str> = removed
        .iter()
        .map(|&i| db.packages[i].name.as_str())
        .filter(|name| {
            // a name is gone only if no instance of it survives
            !db.packages
                .iter()
                .enumerate()
                .any(|(j, p)| p.name == *name && !removed.contains(&j))
        })
        .collect();
    let mut div_changed = false;
    let mut kept_divs = Vec::new();
    for d in &db.diversions {
        match d.package.as_deref() {
            Some(pkg) if removed_names.contains(pkg) => {
                let others: Vec<&str> = db
                    .owner_of(&d.from)
                    .into_iter()
                    .filter(|o| *o != pkg)
                    .filter(|o| !removed_names.contains(o))
                    .collect();
                if !others.is_empty() {
                    bail!(
                        "removing {pkg} would need to undo its diversion of {} to {} (file of surviving {}): not supported",
                        d.from,
                        d.to,
                        others.join(", ")
                    );
                }
                div_changed = true;
            }
            _ => kept_divs.push(d),
        }
    }
    if div_changed {
        let mut out = String::new();
        for d in kept_divs {
            out.push_str(&format!(
                "{}\n{}\n{}\n",
                d.from,
                d.to,
                d.package.as_deref().unwrap_or(":")
            ));
        }
        plan.write_files
            .insert(DIVERSIONS_PATH.to_string(), out.into_bytes());
    }

    // Alternatives.
    let removed_canon: HashSet<String> = rm.iter().map(|p| canonical(p)).collect();
    for alt in &db.alternatives {
        apply_alternative(alt, files, &removed_canon, &mut rm, plan);
    }

    // Trigger interests name a package as `name` or `name:arch`.
    let mut removed_db_names: HashSet<String> = HashSet::new();
    for &i in removed {
        let p = &db.packages[i];
        removed_db_names.insert(format!("{}:{}", p.name, p.arch));
        if removed_names.contains(p.name.as_str()) {
            removed_db_names.insert(p.name.clone());
        }
    }
    let pkg_of = |word: &str| -> String { word.split('/').next().unwrap_or("").to_string() };
    for (path, bytes) in files.range(TRIGGERS_DIR.to_string()..) {
        let Some(name) = path.strip_prefix(TRIGGERS_DIR) else {
            break;
        };
        if name.contains('/') || matches!(name, "Unincorp" | "Lock") || name.ends_with(".new") {
            continue;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        let file_triggers = name == "File";
        let mut changed = false;
        let mut out = String::new();
        for line in text.lines() {
            let pkg_word = if file_triggers {
                line.rsplit(' ').next().unwrap_or("")
            } else {
                line.trim()
            };
            if !pkg_word.is_empty() && removed_db_names.contains(&pkg_of(pkg_word)) {
                changed = true;
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        if changed {
            if out.is_empty() && !file_triggers {
                rm.insert(path.clone());
            } else {
                plan.write_files.insert(path.clone(), out.into_bytes());
            }
        }
    }

    plan.remove_paths.extend(rm);
    Ok(())
}

fn apply_alternative(
    alt: &Alternative,
    files: &DbFiles,
    removed_canon: &HashSet<String>,
    rm: &mut BTreeSet<String>,
    plan: &mut PurgePlan,
) {
    let gone = |path: &str| removed_canon.contains(&canonical(path));
    if !alt.choices.iter().any(|c| gone(&c.path)) {
        return;
    }
    let etc = |name: &str| format!("{ETC_ALTERNATIVES_DIR}{name}");
    let admin = format!("{ALTERNATIVES_DIR}{}", alt.name);
    let mut new = alt.clone();
    new.choices.retain(|c| !gone(&c.path));
    if new.choices.is_empty() {
        rm.insert(alt.link.clone());
        rm.insert(etc(&alt.name));
        for s in &alt.slaves {
            rm.insert(s.link.clone());
            rm.insert(etc(&s.name));
        }
        rm.insert(admin);
        return;
    }
    // The current choice: the /etc/alternatives link target if the caller gave it,
    // else (auto mode) the best choice. In manual mode without that information the
    // selection is unknown and treated as removed: switch to auto like
    // update-alternatives does when the selected choice is removed.
    let supplied = files
        .get(&etc(&alt.name))
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(|s| s.trim_end_matches('\n').to_string());
    let current: Option<String> = match supplied {
        Some(c) => Some(c),
        None if !alt.manual => alt.best(None).map(|c| c.path.clone()),
        None => None,
    };
    let current_removed = match &current {
        Some(c) => gone(c) || !alt.choices.iter().any(|ch| ch.path == *c),
        None => true,
    };
    if current_removed {
        new.manual = false;
        if let Some(best) = new.best(current.as_deref()).cloned() {
            plan.symlinks.insert(etc(&alt.name), best.path.clone());
            plan.symlinks.insert(alt.link.clone(), etc(&alt.name));
            for (k, s) in alt.slaves.iter().enumerate() {
                let file = best.slave_files.get(k).map(String::as_str).unwrap_or("");
                if !file.is_empty() && !gone(file) {
                    plan.symlinks.insert(etc(&s.name), file.to_string());
                    plan.symlinks.insert(s.link.clone(), etc(&s.name));
                } else {
                    rm.insert(s.link.clone());
                    rm.insert(etc(&s.name));
                }
            }
        }
    }
    plan.write_files.insert(admin, new.to_bytes());
}
