//! dpkg database model and apt-equivalent purge planning (issue 3).
//!
//! Everything works on an in-memory copy of the dpkg/apt database files ([`DbFiles`]);
//! nothing here runs apt, dpkg or maintainer scripts, or touches a filesystem.
//!
//! * [`DpkgDb::parse`] reads `/var/lib/dpkg/status`, the per-package file lists in
//!   `/var/lib/dpkg/info/`, `/var/lib/dpkg/diversions`, `/var/lib/dpkg/arch`,
//!   `/var/lib/dpkg/alternatives/*` and `/var/lib/apt/extended_states`.
//! * [`plan_purge`] / [`plan_purge_in`] compute what `apt-get purge --auto-remove NAMES`
//!   would do (after `apt-mark manual KEEP`): which packages go, which paths to delete,
//!   and the new database files. The caller applies the plan to the rootfs.
//!
//! The database comes from the base image and is treated as hostile: paths must be
//! absolute and free of `..` and NUL ([`normalize_path`]), names must be valid dpkg
//! names, and whether a file may be deleted is decided on the node it names in the
//! image ([`Layout`]), whatever its spelling.
//!
//! Parsers usable without a filesystem (fuzzing entry points): [`parse_status`],
//! [`parse_relations`], [`check_version`] / [`compare_versions`], [`normalize_path`],
//! and [`DpkgDb::parse`] on an in-memory [`DbFiles`].
//!
//! Callers should put into [`DbFiles`] every regular file under `/var/lib/dpkg/` (at
//! least `status`, `info/*`, `diversions`, `arch`, `alternatives/*`, `triggers/*`) and
//! `/var/lib/apt/extended_states`. Optionally, the targets of the `/etc/alternatives/NAME`
//! symlinks may be given as entries `"/etc/alternatives/NAME" -> target bytes`; they tell
//! which choice a manual-mode alternative currently uses.

mod alternatives;
mod paths;
mod purge;
mod relation;
mod stanza;
mod version;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, Context, Result};

pub use alternatives::{Alternative, Choice, Slave};
pub use paths::{normalize as normalize_path, Layout};
pub use purge::{plan_purge, plan_purge_in};
pub use relation::{parse_relations, Relation, RelationList, VersionOp};
pub use version::{check_version, compare_versions};

use stanza::{RawFile, RawStanza};

/// Work counter for complexity tests: the planner adds one unit per element visited in
/// its loops over packages, relations and satisfier sets, so a test can assert that the
/// work grows linearly with the database without timing anything.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;
    thread_local!(static UNITS: Cell<u64> = const { Cell::new(0) });
    pub fn add(n: u64) {
        UNITS.with(|u| u.set(u.get() + n));
    }
    /// Units counted on this thread since the last call.
    pub fn take() -> u64 {
        UNITS.with(|u| u.replace(0))
    }
}

/// Counts `n` units of work (only in tests).
#[inline]
fn tick(n: usize) {
    #[cfg(test)]
    work::add(n as u64);
    let _ = n;
}

/// Files of the dpkg/apt database, keyed by absolute path, e.g. "/var/lib/dpkg/status",
/// "/var/lib/dpkg/info/gcc-12.list", "/var/lib/dpkg/info/libc6:amd64.list", "*.md5sums", "*.conffiles",
/// "/var/lib/dpkg/alternatives/cc", "/var/lib/dpkg/diversions", "/var/lib/apt/extended_states".
pub type DbFiles = std::collections::BTreeMap<String, Vec<u8>>;

/// Path of the dpkg status file.
pub const STATUS_PATH: &str = "/var/lib/dpkg/status";
/// Path of apt's auto-installed markers.
pub const EXTENDED_STATES_PATH: &str = "/var/lib/apt/extended_states";
/// Path of dpkg's diversion database.
pub const DIVERSIONS_PATH: &str = "/var/lib/dpkg/diversions";
/// Directory of per-package control files (`PKG.list`, `PKG.md5sums`, ...).
pub const INFO_DIR: &str = "/var/lib/dpkg/info/";
/// Directory of update-alternatives admin files.
pub const ALTERNATIVES_DIR: &str = "/var/lib/dpkg/alternatives/";
/// Directory of the alternatives symlinks.
pub const ETC_ALTERNATIVES_DIR: &str = "/etc/alternatives/";
/// Directory of dpkg trigger interest files.
pub const TRIGGERS_DIR: &str = "/var/lib/dpkg/triggers/";

/// What to purge, as `apt-mark manual KEEP...; apt-get purge [--auto-remove] PURGE...`.
#[derive(Debug, Clone, Default)]
pub struct PurgeRequest {
    /// Package names (`name` or `name:arch`) to purge; names not installed are skipped.
    pub purge: Vec<String>,
    /// Packages that must survive; they are marked manually installed.
    pub keep: Vec<String>,
    /// Also remove auto-installed packages that nothing needs any more.
    pub autoremove: bool,
    /// Fail instead of removing packages that depend on purged ones.
    pub strict: bool,
}

/// Why a package is removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum RemovalReason {
    /// Named in [`PurgeRequest::purge`].
    Requested,
    /// Name of the removed package it (pre-)depends on.
    DependsOn(String),
    /// Auto-installed and no longer needed.
    Autoremoved,
}

/// One package that the plan removes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemovedPackage {
    pub name: String,
    pub arch: String,
    pub version: String,
    pub reason: RemovalReason,
    pub installed_size_kib: u64,
}

/// The result of [`plan_purge`]: what the caller has to do to the rootfs.
#[derive(Debug, Default, serde::Serialize)]
pub struct PurgePlan {
    /// Requested names that are not installed (reported, not an error).
    pub not_installed: Vec<String>,
    /// Removed packages, sorted by name (then architecture).
    pub removed: Vec<RemovedPackage>,
    /// Absolute paths to delete: package files and symlinks, directories owned only by
    /// removed packages (delete a directory only if it is empty by then),
    /// `/var/lib/dpkg/info/PKG.*`, alternative links and admin files that disappear.
    /// Paths are spelled as dpkg records them (in [`normalize_path`] form): on a
    /// merged-/usr system `/bin/foo` must be resolved through the `/bin -> usr/bin`
    /// symlink inside the rootfs (the parent only, never the last component). None of
    /// them is a node that a surviving package occupies or reaches through a symlink.
    pub remove_paths: std::collections::BTreeSet<String>,
    /// Files to (re)write with these contents: `/var/lib/dpkg/status`,
    /// `/var/lib/apt/extended_states`, changed alternatives admin files,
    /// `/var/lib/dpkg/diversions` and trigger interest files if changed.
    pub write_files: std::collections::BTreeMap<String, Vec<u8>>,
    /// Symlinks to (re)create, path -> target (re-pointed alternatives).
    pub symlinks: std::collections::BTreeMap<String, String>,
}

/// One stanza of the dpkg status file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Package {
    pub name: String,
    /// `Architecture` (e.g. `amd64`, `all`); empty if the stanza has none.
    pub arch: String,
    pub version: String,
    /// Source package name (the binary name if there is no `Source` field).
    pub source: String,
    /// Source version (the binary version unless `Source: name (version)`).
    pub source_version: String,
    /// The three words of `Status`: want, error flag, state.
    pub want: String,
    pub eflag: String,
    pub state: String,
    pub multi_arch: Option<String>,
    pub essential: bool,
    /// `Protected: yes` or `Important: yes`: apt never removes or autoremoves it.
    pub protected: bool,
    pub priority: Option<String>,
    pub section: Option<String>,
    pub maintainer: Option<String>,
    pub homepage: Option<String>,
    /// Synopsis (first line of `Description`).
    pub description: Option<String>,
    pub installed_size_kib: u64,
    /// `Auto-Installed: 1` in apt's extended_states.
    pub auto_installed: bool,
    pub pre_depends: RelationList,
    pub depends: RelationList,
    pub recommends: RelationList,
    pub suggests: RelationList,
    pub provides: Vec<Relation>,
    /// Conffile paths from the `Conffiles` field.
    pub conffiles: Vec<String>,
    /// All fields of the stanza in order (multi-line values joined with `\n`).
    pub fields: Vec<(String, String)>,
}

impl Package {
    /// Whether the package's files are (at least partly) on disk: every state but
    /// `not-installed` and `config-files`.
    pub fn is_installed(&self) -> bool {
        !matches!(self.state.as_str(), "not-installed" | "config-files")
    }

    /// `name:arch` if the package is `Multi-Arch: same` (as dpkg names its info files),
    /// else `name`.
    pub fn db_name(&self) -> String {
        if self.multi_arch.as_deref() == Some("same") && !self.arch.is_empty() {
            format!("{}:{}", self.name, self.arch)
        } else {
            self.name.clone()
        }
    }

    /// Value of a field (case-insensitive name).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A dpkg diversion: files `from` of packages other than `package` live at `to`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diversion {
    pub from: String,
    pub to: String,
    /// Diverting package; `None` for a local diversion (`:` in the file).
    pub package: Option<String>,
}

/// Parsed database.
pub struct DpkgDb {
    packages: Vec<Package>,
    /// File list per package (`None`: no `.list` file in the database).
    lists: Vec<Option<Vec<String>>>,
    /// Info-file name prefix per package (`name` or `name:arch`).
    info_names: Vec<String>,
    native_arch: String,
    diversions: Vec<Diversion>,
    owners: HashMap<String, Vec<usize>>,
    alternatives: Vec<Alternative>,
    status: RawFile,
    extended: Option<RawFile>,
    /// Per extended_states stanza: (package, architecture, auto-installed).
    extended_entries: Vec<(String, Option<String>, bool)>,
}

fn yes(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"))
}

/// A `.list` file: one path per line, in [`normalize_path`] form; the root (`/.`) is
/// left out. Errors name the file and line.
fn parse_list(path: &str, bytes: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        anyhow!("{path}: line {line}: path is not valid UTF-8")
    })?;
    let mut out = Vec::new();
    for (k, l) in text.split('\n').enumerate() {
        tick(1);
        if l.is_empty() {
            continue;
        }
        let n = paths::normalize(l).with_context(|| format!("{path}: line {}", k + 1))?;
        if n != "/" {
            out.push(n);
        }
    }
    Ok(out)
}

fn parse_diversions(bytes: &[u8]) -> Result<Vec<Diversion>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| anyhow!("{DIVERSIONS_PATH}: not valid UTF-8: {e}"))?;
    let lines: Vec<&str> = text.lines().collect();
    if !lines.len().is_multiple_of(3) {
        bail!(
            "{DIVERSIONS_PATH}: {} lines, expected groups of 3 (from, to, package)",
            lines.len()
        );
    }
    let mut out = Vec::with_capacity(lines.len() / 3);
    for (k, c) in lines.chunks(3).enumerate() {
        let path = |i: usize| {
            paths::normalize(c[i])
                .with_context(|| format!("{DIVERSIONS_PATH}: line {}", 3 * k + i + 1))
        };
        out.push(Diversion {
            from: path(0)?,
            to: path(1)?,
            package: (c[2] != ":").then(|| c[2].to_string()),
        });
    }
    Ok(out)
}

/// dpkg's `pkg_name_is_illegal`: an alphanumeric first character, then alphanumerics
/// and `-+._`. Names end up in file names (`info/NAME.list`) and messages.
fn check_package_name(name: &str) -> Result<()> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+._".contains(&b));
    if !ok {
        bail!("invalid package name {name:?}");
    }
    Ok(())
}

/// dpkg's `dpkg_arch_name_is_illegal`: alphanumerics and `-`, not starting with `-`.
fn check_arch_name(arch: &str) -> Result<()> {
    let ok = arch
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        bail!("invalid architecture name {arch:?}");
    }
    Ok(())
}

/// The three words of a `Status` field, if they are values dpkg knows.
fn parse_status_words(v: &str) -> Option<[&str; 3]> {
    let words: Vec<&str> = v.split_whitespace().collect();
    let [want, eflag, state] = words[..] else {
        return None;
    };
    let known = matches!(want, "unknown" | "install" | "hold" | "deinstall" | "purge")
        && matches!(eflag, "ok" | "reinstreq")
        && matches!(
            state,
            "not-installed"
                | "config-files"
                | "half-installed"
                | "unpacked"
                | "half-configured"
                | "triggers-awaited"
                | "triggers-pending"
                | "installed"
        );
    known.then_some([want, eflag, state])
}

/// Parse the stanzas of a dpkg status file (`path` names it in errors) without
/// anything else of the database: the entry point for fuzzing the status parser.
pub fn parse_status(path: &str, bytes: &[u8]) -> Result<Vec<Package>> {
    parse_packages(&RawFile::parse(path, bytes)?, path)
}

fn parse_packages(status: &RawFile, path: &str) -> Result<Vec<Package>> {
    let mut packages = Vec::with_capacity(status.stanzas.len());
    for s in &status.stanzas {
        tick(1);
        packages.push(parse_package(s, path)?);
    }
    Ok(packages)
}

/// One status stanza as a package: its name, status words, relations and the
/// fields checked the way dpkg checks them. Errors name the stanza's line.
fn parse_package(s: &RawStanza, path: &str) -> Result<Package> {
    let ctx = || format!("{path}: stanza at line {}", s.line);
    let p = &s.fields;
    let name = p
        .get("Package")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow!("{}: no Package field", ctx()))?;
    check_package_name(name).with_context(ctx)?;
    let ctx = || format!("{path}: stanza at line {} (package {name})", s.line);
    let status_field = p
        .get("Status")
        .ok_or_else(|| anyhow!("{}: no Status field", ctx()))?;
    let Some([want, eflag, state]) = parse_status_words(status_field) else {
        bail!("{}: malformed Status {status_field:?}", ctx());
    };
    let arch = p.get("Architecture").unwrap_or("").trim();
    if !arch.is_empty() {
        check_arch_name(arch).with_context(ctx)?;
    }
    let rel = |field: &str| -> Result<RelationList> {
        match p.get(field) {
            None => Ok(Vec::new()),
            Some(v) => parse_relations(v).with_context(|| format!("{}: {field}", ctx())),
        }
    };
    let provides = rel("Provides")?.into_iter().flatten().collect();
    let installed_size_kib = match p.get("Installed-Size") {
        None => 0,
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("{}: invalid Installed-Size {v:?}", ctx()))?,
    };
    let version = p.get("Version").unwrap_or("").trim().to_string();
    if p.get("Version").is_some() {
        check_version(&version).with_context(|| format!("{}: Version", ctx()))?;
    }
    let (source, source_version) = source_of(p.get("Source"), name, &version, &ctx)?;
    let conffiles = conffiles_of(p.get("Conffiles").unwrap_or(""), &ctx)?;
    let opt = |f: &str| p.get(f).map(|v| v.trim().to_string());
    Ok(Package {
        name: name.to_string(),
        arch: arch.to_string(),
        version,
        source,
        source_version,
        want: want.to_string(),
        eflag: eflag.to_string(),
        state: state.to_string(),
        multi_arch: opt("Multi-Arch"),
        essential: yes(p.get("Essential")),
        protected: yes(p.get("Protected")) || yes(p.get("Important")),
        priority: opt("Priority"),
        section: opt("Section"),
        maintainer: opt("Maintainer"),
        homepage: opt("Homepage"),
        description: p
            .get("Description")
            .and_then(|d| d.lines().next())
            .map(|d| d.trim().to_string()),
        installed_size_kib,
        auto_installed: false,
        pre_depends: rel("Pre-Depends")?,
        depends: rel("Depends")?,
        recommends: rel("Recommends")?,
        suggests: rel("Suggests")?,
        provides,
        conffiles,
        fields: p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

/// The source package and its version: `Source: name (version)`, `Source: name`
/// (the binary's version), or none (the binary itself).
fn source_of(
    field: Option<&str>,
    name: &str,
    version: &str,
    ctx: &dyn Fn() -> String,
) -> Result<(String, String)> {
    Ok(match field.map(str::trim) {
        None | Some("") => (name.to_string(), version.to_string()),
        Some(src) => match src.split_once('(') {
            Some((n, v)) => {
                let Some(v) = v.strip_suffix(')') else {
                    bail!("{}: malformed Source {src:?}", ctx());
                };
                check_version(v.trim()).with_context(|| format!("{}: Source", ctx()))?;
                (n.trim().to_string(), v.trim().to_string())
            }
            None => (src.to_string(), version.to_string()),
        },
    })
}

/// The paths of a `Conffiles` field (each line: path and md5sum), normalized.
fn conffiles_of(field: &str, ctx: &dyn Fn() -> String) -> Result<Vec<String>> {
    let mut conffiles = Vec::new();
    for l in field.lines() {
        tick(1);
        if let Some(f) = l.split_whitespace().next() {
            let f = paths::normalize(f).with_context(|| format!("{}: Conffiles", ctx()))?;
            conffiles.push(f);
        }
    }
    Ok(conffiles)
}

/// Per extended_states stanza: (package, architecture, auto-installed).
type ExtendedEntries = Vec<(String, Option<String>, bool)>;

/// apt's extended_states, if present: the file (kept to be rewritten) and its entries.
fn parse_extended_states(files: &DbFiles) -> Result<(Option<RawFile>, ExtendedEntries)> {
    let Some(b) = files.get(EXTENDED_STATES_PATH) else {
        return Ok((None, Vec::new()));
    };
    let f = RawFile::parse(EXTENDED_STATES_PATH, b)?;
    let mut entries = Vec::with_capacity(f.stanzas.len());
    for s in &f.stanzas {
        let name = s.fields.get("Package").ok_or_else(|| {
            anyhow!(
                "{EXTENDED_STATES_PATH}: stanza at line {}: no Package field",
                s.line
            )
        })?;
        let auto = s
            .fields
            .get("Auto-Installed")
            .is_some_and(|v| v.trim() == "1");
        entries.push((
            name.trim().to_string(),
            s.fields.get("Architecture").map(|a| a.trim().to_string()),
            auto,
        ));
    }
    Ok((Some(f), entries))
}

/// dpkg's native architecture: /var/lib/dpkg/arch, else that of the installed
/// dpkg, else of any architecture-specific package, else amd64.
fn native_arch(files: &DbFiles, packages: &[Package]) -> String {
    files
        .get("/var/lib/dpkg/arch")
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| t.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(str::to_string)
        .or_else(|| {
            packages
                .iter()
                .find(|p| p.name == "dpkg" && p.is_installed())
                .map(|p| p.arch.clone())
        })
        .or_else(|| {
            packages
                .iter()
                .find(|p| !p.arch.is_empty() && p.arch != "all")
                .map(|p| p.arch.clone())
        })
        .unwrap_or_else(|| "amd64".to_string())
}

/// Sets `auto_installed` from the extended_states markers (an `all` package
/// matches a marker of the native architecture, or one without architecture).
fn mark_auto_installed(packages: &mut [Package], entries: &ExtendedEntries, native_arch: &str) {
    // Auto-installed markers by package name: (architecture, auto).
    let mut marks: HashMap<&str, Vec<(Option<&str>, bool)>> = HashMap::new();
    for (n, a, auto) in entries {
        marks
            .entry(n.as_str())
            .or_default()
            .push((a.as_deref(), *auto));
    }
    for p in packages.iter_mut() {
        let p_arch = if p.arch == "all" || p.arch.is_empty() {
            native_arch
        } else {
            p.arch.as_str()
        };
        let entries = marks.get(p.name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        tick(entries.len() + 1);
        p.auto_installed = entries
            .iter()
            .any(|(a, auto)| *auto && a.is_none_or(|a| a == p_arch));
    }
}

/// Each package's file list (`info/<name>.list`, or with/without `:arch`), the
/// info name it was found under, and the owners of every listed path.
struct FileLists {
    lists: Vec<Option<Vec<String>>>,
    info_names: Vec<String>,
    owners: HashMap<String, Vec<usize>>,
}

fn read_file_lists(files: &DbFiles, packages: &[Package]) -> Result<FileLists> {
    let mut lists = Vec::with_capacity(packages.len());
    let mut info_names = Vec::with_capacity(packages.len());
    let mut owners: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in packages.iter().enumerate() {
        let primary = p.db_name();
        let alt = if primary == p.name {
            format!("{}:{}", p.name, p.arch)
        } else {
            p.name.clone()
        };
        let mut chosen = primary.clone();
        let mut list = None;
        for cand in [&primary, &alt] {
            let path = format!("{INFO_DIR}{cand}.list");
            if let Some(b) = files.get(&path) {
                list = Some(parse_list(&path, b)?);
                chosen = cand.clone();
                break;
            }
        }
        if let Some(l) = &list {
            let mut seen = HashSet::new();
            for path in l {
                // A path listed twice is still one owner.
                if seen.insert(path.as_str()) {
                    owners.entry(path.clone()).or_default().push(i);
                }
            }
        }
        lists.push(list);
        info_names.push(chosen);
    }
    Ok(FileLists {
        lists,
        info_names,
        owners,
    })
}

/// The alternatives' admin files (dpkg skips empty ones and its temp files).
fn parse_alternatives(files: &DbFiles) -> Result<Vec<Alternative>> {
    let mut alternatives = Vec::new();
    for (path, bytes) in files.range(ALTERNATIVES_DIR.to_string()..) {
        let Some(name) = path.strip_prefix(ALTERNATIVES_DIR) else {
            break;
        };
        if name.is_empty() || name.contains('/') || name.ends_with(".dpkg-tmp") {
            continue;
        }
        if bytes.is_empty() {
            continue; // dpkg ignores empty admin files
        }
        alternatives.push(Alternative::parse(name, path, bytes)?);
    }
    Ok(alternatives)
}

impl DpkgDb {
    /// Parse the database. Errors name the file and the stanza or line.
    pub fn parse(files: &DbFiles) -> Result<DpkgDb> {
        let status_bytes = files
            .get(STATUS_PATH)
            .ok_or_else(|| anyhow!("{STATUS_PATH} missing from the database files"))?;
        let status = RawFile::parse(STATUS_PATH, status_bytes)?;
        let (extended, extended_entries) = parse_extended_states(files)?;
        let mut packages = parse_packages(&status, STATUS_PATH)?;
        let native_arch = native_arch(files, &packages);
        mark_auto_installed(&mut packages, &extended_entries, &native_arch);
        let FileLists {
            lists,
            info_names,
            owners,
        } = read_file_lists(files, &packages)?;
        let diversions = match files.get(DIVERSIONS_PATH) {
            Some(b) => parse_diversions(b)?,
            None => Vec::new(),
        };
        let alternatives = parse_alternatives(files)?;
        Ok(DpkgDb {
            packages,
            lists,
            info_names,
            native_arch,
            diversions,
            owners,
            alternatives,
            status,
            extended,
            extended_entries,
        })
    }

    /// Packages whose files are on disk (state other than `not-installed` and
    /// `config-files`), in status-file order.
    pub fn installed(&self) -> impl Iterator<Item = &Package> {
        self.packages.iter().filter(|p| p.is_installed())
    }

    /// Every stanza of the status file, including `config-files` ones.
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// Whether `name` (or `name:arch`) is installed.
    pub fn is_installed(&self, name: &str) -> bool {
        let (n, a) = split_arch(name);
        self.installed()
            .any(|p| p.name == n && a.is_none_or(|a| p.arch == a))
    }

    /// Names of the packages whose file list contains `path` (any lexical spelling, see
    /// [`normalize_path`]; without following diversions or symlinks).
    pub fn owner_of(&self, path: &str) -> Vec<&str> {
        let Ok(path) = paths::normalize(path) else {
            return Vec::new();
        };
        self.owners
            .get(&path)
            .map(|v| v.iter().map(|&i| self.packages[i].name.as_str()).collect())
            .unwrap_or_default()
    }

    /// Paths listed in the package's `.list` file, normalized (see [`normalize_path`];
    /// without `/.`), if it has one.
    pub fn files_of(&self, name: &str) -> Option<&[String]> {
        let (n, a) = split_arch(name);
        let i = self
            .packages
            .iter()
            .position(|p| p.name == n && a.is_none_or(|a| p.arch == a))?;
        self.lists[i].as_deref()
    }

    /// The dpkg native architecture.
    pub fn native_arch(&self) -> &str {
        &self.native_arch
    }

    /// The diversions (`/var/lib/dpkg/diversions`).
    pub fn diversions(&self) -> &[Diversion] {
        &self.diversions
    }

    /// The update-alternatives link groups.
    pub fn alternatives(&self) -> &[Alternative] {
        &self.alternatives
    }
}

/// Split `name:arch` into its parts.
fn split_arch(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    }
}
