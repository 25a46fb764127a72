//! `apt-get purge --auto-remove` planning on a [`DpkgDb`].
//!
//! 1. Requested packages are resolved (`name` or `name:arch`); names that are not
//!    installed are reported.
//! 2. Every installed package with a `Depends`/`Pre-Depends` or-group that was satisfied
//!    before and is satisfied by nothing that remains is removed as well (fixpoint),
//!    like apt's problem resolver does for a removal.
//!
//! Both graph walks run on satisfier sets computed once per distinct dependency atom
//! (name, qualifiers, version, owner architecture) and on reverse indices, so the work is
//! linear in the size of the database even when thousands of packages depend on a
//! virtual package with tens of thousands of providers.
//! 3. With `autoremove`, apt's mark-and-sweep (`pkgDepCache::MarkRequired`) runs on the
//!    remaining packages: roots are manually installed packages (incl. `keep`),
//!    `Essential`/`Protected`/`Important` packages, `Priority: required` packages, held
//!    packages and APT::NeverAutoRemove defaults; marking follows Pre-Depends, Depends,
//!    Recommends and Suggests (apt's defaults), through real packages and providers.
//!    Unmarked auto-installed packages are removed.
//! 4. Files, info files, status/extended_states stanzas, alternatives, diversions and
//!    trigger interests of the removed packages are turned into a [`PurgePlan`]. The
//!    database comes from the image and may be hostile: whether a path may go is decided
//!    on the node it names in the image ([`Layout`]), never on its spelling, and a node
//!    that a surviving package occupies or reaches through a symlink is never removed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use anyhow::{bail, Context, Result};

use super::alternatives::Alternative;
use super::paths::{self, Layout, Nodes};
use super::relation::{Relation, RelationList, VersionOp};
use super::version::compare_versions;
use super::{
    split_arch, tick, DbFiles, DpkgDb, Package, PurgePlan, PurgeRequest, RemovalReason,
    RemovedPackage, ALTERNATIVES_DIR, DIVERSIONS_PATH, ETC_ALTERNATIVES_DIR, EXTENDED_STATES_PATH,
    INFO_DIR, STATUS_PATH, TRIGGERS_DIR,
};

/// Why a package is in the removal set (internal, with indices for chains).
#[derive(Debug, Clone, Copy)]
enum Why {
    Requested,
    Dep { on: usize, pre: bool },
    Auto,
}

/// Top-level directories (and merged-/usr symlinks) that a plan never deletes, whatever
/// the file lists say.
const PROTECTED_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/libo32", "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
    "/usr", "/var",
];

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
            tick(1 + p.provides.len());
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

    fn eff_arch(&self, arch: &'a str) -> &'a str {
        if arch == "all" || arch.is_empty() {
            &self.db.native_arch
        } else {
            arch
        }
    }

    /// Whether `target` can satisfy a dependency of `owner` with arch qualifier `qual`.
    /// Lenient where dpkg and apt differ in details (a false "satisfied" only keeps more).
    fn arch_ok(&self, owner: &'a Package, qual: Option<&str>, target: &'a Package) -> bool {
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
    /// without regard to removal, each once, with whether it satisfies via Provides.
    fn satisfiers(&self, owner: &'a Package, rel: &Relation) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let qual = rel.arch.as_deref();
        if let Some(cands) = self.by_name.get(rel.name.as_str()) {
            tick(cands.len());
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
                if seen.insert(i) {
                    out.push((i, false));
                }
            }
        }
        if let Some(provs) = self.providers.get(rel.name.as_str()) {
            tick(provs.len());
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
                if seen.insert(i) {
                    out.push((i, true));
                }
            }
        }
        out
    }

    /// Whether package `owner` satisfies its own dependency `rel` (such a group never
    /// breaks), without walking every provider of `rel`.
    fn satisfies_itself(&self, owner: &'a Package, rel: &Relation) -> bool {
        tick(1 + owner.provides.len());
        if !self.arch_ok(owner, rel.arch.as_deref(), owner) {
            return false;
        }
        let version_ok = |have: Option<&str>| match &rel.version {
            None => true,
            Some((op, v)) => have.is_some_and(|h| op.holds(h, v)),
        };
        (owner.name == rel.name && version_ok(Some(&owner.version)))
            || owner.provides.iter().any(|prv| {
                prv.name == rel.name && version_ok(prv.version.as_ref().map(|(_, v)| v.as_str()))
            })
    }
}

/// Dependency atoms that have the same satisfiers: name, architecture qualifier,
/// version constraint and the depending package's effective architecture.
type AtomKey<'a> = (
    &'a str,
    Option<&'a str>,
    Option<(VersionOp, &'a str)>,
    &'a str,
);

/// Satisfier sets, computed once per distinct atom and shared by every package that
/// has the atom: 1,000 packages depending on a virtual package with 40,000 providers
/// cost one walk over the providers, not 1,000.
#[derive(Default)]
struct SatSets<'a> {
    ids: HashMap<AtomKey<'a>, usize>,
    /// Members of each set, real packages first: (package index, via Provides).
    members: Vec<Vec<(usize, bool)>>,
}

impl<'a> SatSets<'a> {
    fn id(&mut self, ctx: &Ctx<'a>, owner: &'a Package, rel: &'a Relation) -> usize {
        tick(1);
        let key = (
            rel.name.as_str(),
            rel.arch.as_deref(),
            rel.version.as_ref().map(|(op, v)| (*op, v.as_str())),
            ctx.eff_arch(&owner.arch),
        );
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.members.len();
        self.members.push(ctx.satisfiers(owner, rel));
        self.ids.insert(key, id);
        id
    }
}

/// A `Depends`/`Pre-Depends` or-group that breaks when every member of its satisfier
/// sets is removed.
struct Group {
    pkg: usize,
    pre: bool,
    sets: Vec<usize>,
}

/// Resolve a request name to stanza indices: `name:arch` exactly; `name` prefers the
/// native (or `all`) architecture, else any architecture.
fn resolve(
    db: &DpkgDb,
    all_by_name: &HashMap<&str, Vec<usize>>,
    spec: &str,
    include_config_files: bool,
) -> Vec<usize> {
    let (name, arch) = split_arch(spec.trim());
    let cands: Vec<usize> = all_by_name
        .get(name)
        .into_iter()
        .flatten()
        .copied()
        .filter(|&i| {
            let p = &db.packages[i];
            p.is_installed() || (include_config_files && p.state == "config-files")
        })
        .collect();
    tick(cands.len() + 1);
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

/// Compute what `apt-mark manual KEEP; apt-get purge [--auto-remove] PURGE` would do on
/// an image with Debian's merged-/usr layout ([`Layout::merged_usr`]). Use
/// [`plan_purge_in`] when the image's symlinks are known.
pub fn plan_purge(files: &DbFiles, req: &PurgeRequest) -> Result<PurgePlan> {
    plan_purge_in(files, req, &Layout::merged_usr())
}

/// Compute what `apt-mark manual KEEP; apt-get purge [--auto-remove] PURGE` would do;
/// `layout` holds the image's symlinks, through which listed paths are resolved for
/// every decision about which files may go.
pub fn plan_purge_in(files: &DbFiles, req: &PurgeRequest, layout: &Layout) -> Result<PurgePlan> {
    let db = DpkgDb::parse(files)?;
    let ctx = Ctx::new(&db);
    let mut plan = PurgePlan::default();
    let mut all_by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in db.packages.iter().enumerate() {
        all_by_name.entry(p.name.as_str()).or_default().push(i);
    }

    // 1. requested packages
    let (mut why, keep) = requested(&db, &all_by_name, req, &mut plan);
    // 2. packages whose Depends/Pre-Depends break
    let installed: Vec<bool> = db.packages.iter().map(Package::is_installed).collect();
    let mut sets = SatSets::default();
    let groups = dependency_groups(&db, &ctx, &installed, &mut sets);
    break_dependents(db.packages.len(), &sets, &groups, &mut why);
    check_closure(&db, &keep, &why, req.strict)?;
    // 3. autoremove (apt's mark and sweep)
    if req.autoremove {
        autoremove(&db, &ctx, &mut sets, &installed, &keep, &mut why);
    }
    plan.removed = removed_packages(&db, &why);

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
    apply_files(&db, files, &removed_set, &all_by_name, layout, &mut plan)?;
    if !why.is_empty() {
        tick(db.status.stanzas.len());
        let status = db.status.without(|i, _| removed_set.contains(&i));
        plan.write_files.insert(STATUS_PATH.to_string(), status);
    }
    extended_states(&db, &ctx, &removed_set, &keep_auto, &mut plan);
    Ok(plan)
}

/// The packages the request names (purge, with what is not installed noted in the
/// plan) and the ones it keeps.
fn requested(
    db: &DpkgDb,
    all_by_name: &HashMap<&str, Vec<usize>>,
    req: &PurgeRequest,
    plan: &mut PurgePlan,
) -> (BTreeMap<usize, Why>, BTreeSet<usize>) {
    let mut why: BTreeMap<usize, Why> = BTreeMap::new();
    for spec in &req.purge {
        let idx = resolve(db, all_by_name, spec, true);
        if idx.is_empty() && !plan.not_installed.contains(spec) {
            plan.not_installed.push(spec.clone());
        }
        for i in idx {
            why.insert(i, Why::Requested);
        }
    }
    let mut keep: BTreeSet<usize> = BTreeSet::new();
    for spec in &req.keep {
        keep.extend(resolve(db, all_by_name, spec, false));
    }
    (why, keep)
}

/// The Depends/Pre-Depends groups of installed packages that can break: not
/// satisfied by the package itself, and satisfied by something now.
fn dependency_groups<'a>(
    db: &'a DpkgDb,
    ctx: &Ctx<'a>,
    installed: &[bool],
    sets: &mut SatSets<'a>,
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, p) in db.packages.iter().enumerate() {
        if !installed[i] {
            continue;
        }
        for (pre, list) in [(true, &p.pre_depends), (false, &p.depends)] {
            for group in list {
                tick(group.len());
                // A group satisfied by the package itself never breaks.
                if group.iter().any(|rel| ctx.satisfies_itself(p, rel)) {
                    continue;
                }
                let ids: Vec<usize> = group.iter().map(|rel| sets.id(ctx, p, rel)).collect();
                // A group satisfied by nothing before cannot break either.
                if ids.iter().any(|&s| !sets.members[s].is_empty()) {
                    groups.push(Group {
                        pkg: i,
                        pre,
                        sets: ids,
                    });
                }
            }
        }
    }
    groups
}

/// A worklist over reverse indices: a group breaks when the last live member of its
/// satisfier sets goes, and its package goes with it.
fn break_dependents(n: usize, sets: &SatSets, groups: &[Group], why: &mut BTreeMap<usize, Why>) {
    // Groups using each set, sets containing each package, live members per set.
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); sets.members.len()];
    for (g, group) in groups.iter().enumerate() {
        for &s in &group.sets {
            users[s].push(g);
        }
    }
    let mut member_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (s, members) in sets.members.iter().enumerate() {
        if users[s].is_empty() {
            continue;
        }
        tick(members.len());
        for &(m, _) in members {
            member_of[m].push(s);
        }
    }
    let mut live: Vec<usize> = sets.members.iter().map(Vec::len).collect();
    let mut queue: VecDeque<usize> = why.keys().copied().collect();
    while let Some(x) = queue.pop_front() {
        tick(member_of[x].len());
        for &s in &member_of[x] {
            live[s] -= 1;
            if live[s] != 0 {
                continue;
            }
            tick(users[s].len());
            for &g in &users[s] {
                let group = &groups[g];
                if why.contains_key(&group.pkg) {
                    continue;
                }
                tick(group.sets.len());
                if group.sets.iter().all(|&t| live[t] == 0) {
                    why.insert(
                        group.pkg,
                        Why::Dep {
                            on: x,
                            pre: group.pre,
                        },
                    );
                    queue.push_back(group.pkg);
                }
            }
        }
    }
}

/// Safety checks on the closure: keep, essential and protected packages stay; in
/// strict mode nothing beyond the request goes.
fn check_closure(
    db: &DpkgDb,
    keep: &BTreeSet<usize>,
    why: &BTreeMap<usize, Why>,
    strict: bool,
) -> Result<()> {
    let mut errors = Vec::new();
    for &k in keep {
        if why.contains_key(&k) {
            errors.push(format!(
                "keep package {} would be removed: {}",
                db.packages[k].name,
                chain(db, why, k)
            ));
        }
    }
    for &i in why.keys() {
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
                chain(db, why, i)
            ));
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    if strict {
        let deps: Vec<String> = why
            .iter()
            .filter(|(_, w)| matches!(w, Why::Dep { .. }))
            .map(|(&i, _)| chain(db, why, i))
            .collect();
        if !deps.is_empty() {
            bail!(
                "strict purge would also remove dependent packages: {}",
                deps.join("; ")
            );
        }
    }
    Ok(())
}

/// apt's mark and sweep: automatically installed packages that no root (manual,
/// kept, essential, protected, required, held) reaches go.
fn autoremove<'a>(
    db: &'a DpkgDb,
    ctx: &Ctx<'a>,
    sets: &mut SatSets<'a>,
    installed: &[bool],
    keep: &BTreeSet<usize>,
    why: &mut BTreeMap<usize, Why>,
) {
    let n = db.packages.len();
    let alive = |i: usize| installed[i] && !why.contains_key(&i);
    let mut marked = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    for (i, p) in db.packages.iter().enumerate() {
        if alive(i) && autoremove_root(p, keep.contains(&i)) {
            marked[i] = true;
            stack.push(i);
        }
    }
    // What marking does for an atom depends only on its satisfier set (liveness is
    // fixed in this phase): each set is expanded once.
    let mut expanded: HashSet<usize> = HashSet::new();
    while let Some(i) = stack.pop() {
        let p = &db.packages[i];
        let lists: [&RelationList; 4] = [&p.pre_depends, &p.depends, &p.recommends, &p.suggests];
        for rel in lists.into_iter().flatten().flatten() {
            let s = sets.id(ctx, p, rel);
            if !expanded.insert(s) {
                continue;
            }
            let members = &sets.members[s];
            tick(members.len());
            let mut provs: Vec<usize> = Vec::new();
            for &(m, via) in members {
                if !alive(m) {
                    continue;
                }
                if via {
                    provs.push(m);
                } else if !marked[m] {
                    marked[m] = true;
                    stack.push(m);
                }
            }
            for m in newest_providers(db, provs) {
                if !marked[m] {
                    marked[m] = true;
                    stack.push(m);
                }
            }
        }
    }
    tick(n);
    let garbage: Vec<usize> = (0..n).filter(|&i| alive(i) && !marked[i]).collect();
    for i in garbage {
        why.insert(i, Why::Auto);
    }
}

/// Whether a live package is a root of autoremove's marking.
fn autoremove_root(p: &Package, kept: bool) -> bool {
    !p.auto_installed
        || kept
        || p.essential
        || p.protected
        || p.priority.as_deref() == Some("required")
        || p.want == "hold"
        || never_autoremove(&p.name)
}

/// apt marks, per source package, only the providers of the newest source version.
fn newest_providers(db: &DpkgDb, provs: Vec<usize>) -> Vec<usize> {
    let mut newest: HashMap<&str, &str> = HashMap::new();
    for &m in &provs {
        let q = &db.packages[m];
        let e = newest.entry(q.source.as_str()).or_insert(&q.source_version);
        if compare_versions(&q.source_version, e).is_gt() {
            *e = &q.source_version;
        }
    }
    provs
        .into_iter()
        .filter(|&m| {
            let q = &db.packages[m];
            let top = newest.get(q.source.as_str()).copied().unwrap_or("");
            compare_versions(&q.source_version, top).is_eq()
        })
        .collect()
}

/// The removed packages, by name and architecture, with the reason of each.
fn removed_packages(db: &DpkgDb, why: &BTreeMap<usize, Why>) -> Vec<RemovedPackage> {
    tick(why.len());
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
    removed
}

/// apt's extended_states without the stanzas of removed packages and of keep
/// packages that become manually installed (matched by name and architecture).
fn extended_states(
    db: &DpkgDb,
    ctx: &Ctx,
    removed_set: &HashSet<usize>,
    keep_auto: &[usize],
    plan: &mut PurgePlan,
) {
    let Some(ext) = &db.extended else {
        return;
    };
    let mut dropped_by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for &i in removed_set.iter().chain(keep_auto.iter()) {
        dropped_by_name
            .entry(db.packages[i].name.as_str())
            .or_default()
            .push(i);
    }
    let matches = |k: usize| -> bool {
        let (name, arch, auto) = &db.extended_entries[k];
        let cands = dropped_by_name
            .get(name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        tick(cands.len() + 1);
        cands.iter().any(|&i| {
            let p = &db.packages[i];
            arch.as_deref().is_none_or(|a| a == ctx.eff_arch(&p.arch))
                && (removed_set.contains(&i) || *auto)
        })
    };
    if (0..ext.stanzas.len()).any(matches) {
        plan.write_files.insert(
            EXTENDED_STATES_PATH.to_string(),
            ext.without(|k, _| matches(k)),
        );
    }
}

/// Whether `node` (a physical path) belongs to the dpkg/apt database, which only the
/// plan's own rewrites touch, never a file list.
fn is_database(node: &str) -> bool {
    node == "/var/lib/dpkg" || node.starts_with("/var/lib/dpkg/") || node == EXTENDED_STATES_PATH
}

/// What the surviving packages hold in the image: the nodes their files occupy and the
/// symlinks through which those files are reached (e.g. `/bin` for `/bin/bash`).
#[derive(Default)]
struct Survivors {
    nodes: HashSet<String>,
    links: HashSet<String>,
}

impl Survivors {
    /// Why normalized database path `path` must not be removed or replaced, if so.
    fn conflict(&self, nodes: &mut Nodes, path: &str) -> Option<&'static str> {
        if PROTECTED_DIRS.contains(&path) {
            return Some("a protected top-level directory");
        }
        let Some((node, _)) = nodes.node(path) else {
            return Some("not resolvable in the image");
        };
        if PROTECTED_DIRS.contains(&node.as_str()) {
            Some("a protected top-level directory")
        } else if self.nodes.contains(&node) {
            Some("a file of a surviving package")
        } else if self.links.contains(&node) {
            Some("a symlink through which files of surviving packages are reached")
        } else if is_database(&node) {
            Some("part of the dpkg database")
        } else {
            None
        }
    }
}

/// Files, info files, diversions, alternatives and triggers of the removed packages.
fn apply_files(
    db: &DpkgDb,
    files: &DbFiles,
    removed: &HashSet<usize>,
    all_by_name: &HashMap<&str, Vec<usize>>,
    layout: &Layout,
    plan: &mut PurgePlan,
) -> Result<()> {
    let divs = Diverted::new(db);
    let mut nodes = Nodes::new(layout);
    let survivors = survivors(db, removed, &divs, &mut nodes);
    let mut rm = removed_files(db, files, removed, &divs, &survivors, &mut nodes)?;
    let gone = gone_names(db, removed, all_by_name);
    drop_diversions(db, &gone, plan)?;

    // Alternatives: a choice is gone when the node it names is removed.
    let mut removed_nodes: HashSet<String> = HashSet::new();
    for p in &rm {
        if let Some((node, _)) = nodes.node(p) {
            removed_nodes.insert(node);
        }
    }
    let mut alts = AltCtx {
        files,
        removed_nodes: &removed_nodes,
        survivors: &survivors,
        nodes: &mut nodes,
        rm: &mut rm,
        plan,
    };
    for alt in &db.alternatives {
        alts.apply(alt)?;
    }

    drop_triggers(db, files, removed, &gone, &mut rm, plan);
    plan.remove_paths.extend(rm);
    Ok(())
}

/// Where a listed path of a package really is, honouring diversions (matched by
/// name, like dpkg does; both sides are normalized).
struct Diverted<'a>(HashMap<&'a str, &'a super::Diversion>);

impl<'a> Diverted<'a> {
    fn new(db: &'a DpkgDb) -> Diverted<'a> {
        Diverted(db.diversions.iter().map(|d| (d.from.as_str(), d)).collect())
    }
    fn real(&self, name: &str, path: &str) -> String {
        match self.0.get(path) {
            Some(d) if d.package.as_deref() != Some(name) => d.to.clone(),
            _ => path.to_string(),
        }
    }
}

/// Every path package `i` lists (files and conffiles).
fn package_paths(db: &DpkgDb, i: usize) -> Vec<&str> {
    let p = &db.packages[i];
    let mut v: Vec<&str> = db.lists[i].iter().flatten().map(String::as_str).collect();
    v.extend(p.conffiles.iter().map(String::as_str));
    tick(v.len());
    v
}

/// The nodes (and the symlinks leading to them) that surviving packages own.
fn survivors(
    db: &DpkgDb,
    removed: &HashSet<usize>,
    divs: &Diverted,
    nodes: &mut Nodes,
) -> Survivors {
    let mut survivors = Survivors::default();
    for i in (0..db.packages.len()).filter(|i| !removed.contains(i)) {
        let name = &db.packages[i].name;
        for path in package_paths(db, i) {
            if let Some((node, trace)) = nodes.node(&divs.real(name, path)) {
                survivors.links.extend(trace.iter().cloned());
                survivors.nodes.insert(node);
            }
        }
    }
    survivors
}

/// The files of removed packages that no survivor needs, and their info files.
fn removed_files(
    db: &DpkgDb,
    files: &DbFiles,
    removed: &HashSet<usize>,
    divs: &Diverted,
    survivors: &Survivors,
    nodes: &mut Nodes,
) -> Result<BTreeSet<String>> {
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
        for path in package_paths(db, i) {
            let r = divs.real(&p.name, path);
            if survivors.conflict(nodes, &r).is_none() {
                rm.insert(r);
            }
        }
        // Info files: PKG.<type> with a type that has no dot.
        let prefix = format!("{INFO_DIR}{}.", db.info_names[i]);
        for key in files.range(prefix.clone()..) {
            let Some(rest) = key.0.strip_prefix(&prefix) else {
                break;
            };
            tick(1);
            if !rest.is_empty() && !rest.contains('.') && !rest.contains('/') {
                rm.insert(key.0.clone());
            }
        }
    }
    Ok(rm)
}

/// Package names with no surviving instance (any architecture).
fn gone_names<'a>(
    db: &'a DpkgDb,
    removed: &HashSet<usize>,
    all_by_name: &HashMap<&str, Vec<usize>>,
) -> HashSet<&'a str> {
    removed
        .iter()
        .map(|&i| db.packages[i].name.as_str())
        .filter(|name| {
            let all = all_by_name.get(name).map(Vec::as_slice).unwrap_or(&[]);
            tick(all.len());
            all.iter().all(|j| removed.contains(j))
        })
        .collect()
}

/// Diversions set up by removed packages go away with them (their postrm would run
/// dpkg-divert --remove). Renaming a surviving package's diverted file back is not
/// something a plan can express: refuse.
fn drop_diversions(db: &DpkgDb, gone: &HashSet<&str>, plan: &mut PurgePlan) -> Result<()> {
    let mut div_changed = false;
    let mut kept_divs = Vec::new();
    for d in &db.diversions {
        match d.package.as_deref() {
            Some(pkg) if gone.contains(pkg) => {
                let others: Vec<&str> = db
                    .owner_of(&d.from)
                    .into_iter()
                    .filter(|o| *o != pkg)
                    .filter(|o| !gone.contains(o))
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
    Ok(())
}

/// Trigger interests of removed packages go; a trigger file left empty goes too.
/// Interests name a package as `name` or `name:arch`.
fn drop_triggers(
    db: &DpkgDb,
    files: &DbFiles,
    removed: &HashSet<usize>,
    gone: &HashSet<&str>,
    rm: &mut BTreeSet<String>,
    plan: &mut PurgePlan,
) {
    let mut removed_db_names: HashSet<String> = HashSet::new();
    for &i in removed {
        let p = &db.packages[i];
        removed_db_names.insert(format!("{}:{}", p.name, p.arch));
        if gone.contains(p.name.as_str()) {
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
            tick(1);
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
}

/// Rewrites of update-alternatives link groups whose choices lose files.
struct AltCtx<'a, 'l> {
    files: &'a DbFiles,
    removed_nodes: &'a HashSet<String>,
    survivors: &'a Survivors,
    nodes: &'a mut Nodes<'l>,
    rm: &'a mut BTreeSet<String>,
    plan: &'a mut PurgePlan,
}

impl AltCtx<'_, '_> {
    /// Whether the file of a choice is removed by the plan.
    fn gone(&mut self, path: &str) -> bool {
        let Ok(p) = paths::normalize(path) else {
            return false;
        };
        self.nodes
            .node(&p)
            .is_some_and(|(node, _)| self.removed_nodes.contains(&node))
    }

    /// Removes a link of the group unless something that survives is there.
    fn remove(&mut self, path: &str) {
        let Ok(p) = paths::normalize(path) else {
            return;
        };
        if self.survivors.conflict(self.nodes, &p).is_none() {
            self.rm.insert(p);
        }
    }

    /// (Re)creates a link of the group; refuses to replace what survives there.
    fn symlink(&mut self, admin: &str, path: &str, target: &str) -> Result<()> {
        let p = paths::normalize(path).with_context(|| format!("{admin}: link"))?;
        if let Some(what) = self.survivors.conflict(self.nodes, &p) {
            bail!("{admin}: link {path} is {what}: refusing to replace it with a symlink");
        }
        self.plan.symlinks.insert(p, target.to_string());
        Ok(())
    }

    fn apply(&mut self, alt: &Alternative) -> Result<()> {
        tick(alt.choices.len() + alt.slaves.len());
        if !alt.choices.iter().any(|c| self.gone(&c.path)) {
            return Ok(());
        }
        let etc = |name: &str| format!("{ETC_ALTERNATIVES_DIR}{name}");
        let admin = format!("{ALTERNATIVES_DIR}{}", alt.name);
        let mut new = alt.clone();
        new.choices.retain(|c| !self.gone(&c.path));
        if new.choices.is_empty() {
            self.remove(&alt.link);
            self.remove(&etc(&alt.name));
            for s in &alt.slaves {
                self.remove(&s.link);
                self.remove(&etc(&s.name));
            }
            self.rm.insert(admin);
            return Ok(());
        }
        // The current choice: the /etc/alternatives link target if the caller gave it,
        // else (auto mode) the best choice. In manual mode without that information the
        // selection is unknown and treated as removed: switch to auto like
        // update-alternatives does when the selected choice is removed.
        let supplied = self
            .files
            .get(&etc(&alt.name))
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(|s| s.trim_end_matches('\n').to_string());
        let current: Option<String> = match supplied {
            Some(c) => Some(c),
            None if !alt.manual => alt.best(None).map(|c| c.path.clone()),
            None => None,
        };
        let current_removed = match &current {
            Some(c) => self.gone(c) || !alt.choices.iter().any(|ch| ch.path == *c),
            None => true,
        };
        if current_removed {
            new.manual = false;
            if let Some(best) = new.best(current.as_deref()).cloned() {
                self.symlink(&admin, &etc(&alt.name), &best.path)?;
                self.symlink(&admin, &alt.link, &etc(&alt.name))?;
                for (k, s) in alt.slaves.iter().enumerate() {
                    let file = best.slave_files.get(k).map(String::as_str).unwrap_or("");
                    if !file.is_empty() && !self.gone(file) {
                        self.symlink(&admin, &etc(&s.name), file)?;
                        self.symlink(&admin, &s.link, &etc(&s.name))?;
                    } else {
                        self.remove(&s.link);
                        self.remove(&etc(&s.name));
                    }
                }
            }
        }
        self.plan.write_files.insert(admin, new.to_bytes());
        Ok(())
    }
}
