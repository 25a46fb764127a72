//! `audit` and `policy`: judge any image (ours or not) against a recipe, reading
//! it through the same sources and rootfs model as `build`, in one streaming pass
//! per layer. Memory grows with the number of files, never with their bytes.
use crate::checks;
use crate::dpkg::DpkgDb;
use crate::imageref::ImageRef;
use crate::pipeline::index_base;
use crate::progress::Progress;
use crate::recipe::{FsOp, Recipe};
use crate::rootfs::{Kind, Rootfs};
use crate::scan;
use crate::source::{open_image, OpenOptions};
use crate::steps::accounts::lookup_name;
use crate::steps::{landlock, purge::db_files};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

#[derive(Args)]
pub struct AuditArgs {
    /// Image: oci:DIR[:TAG] | oci-archive:PATH[:TAG] | docker-archive:PATH[:TAG] | tar:PATH
    pub image: String,
    /// Recipe whose policy to check (default: the built-in one).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write a JUnit XML report.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Exit non-zero when a finding is at or above this severity.
    #[arg(long, value_enum, default_value = "error")]
    pub fail_on: Severity,
    #[arg(long)]
    pub platform: Option<String>,
    /// Check the OpenShell image contract (non-root user resolvable in the image, usable
    /// workdir, root-owned `ip`/`nsenter`, executable entrypoint) even if the recipe
    /// does not ask for it.
    #[arg(long)]
    pub openshell: bool,
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct PolicyArgs {
    /// Image to explain.
    pub image: String,
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Declaration problems are errors.
    #[arg(long)]
    pub strict: bool,
    #[arg(long, short)]
    pub quiet: bool,
}

fn load(image: &str, platform: Option<String>, quiet: bool) -> Result<(Rootfs, serde_json::Value)> {
    let r = ImageRef::parse(image)?;
    let mut base = open_image(
        &r,
        &OpenOptions {
            platform,
            ..Default::default()
        },
    )?;
    let fs = index_base(&mut base, &Default::default(), &Progress::new(quiet))?;
    Ok((fs, base.config.clone()))
}

fn f(id: &str, sev: Severity, path: &str, msg: String) -> Finding {
    Finding {
        id: id.into(),
        severity: sev,
        path: path.into(),
        message: msg,
    }
}

/// All findings for a loaded image.
pub fn findings(fs: &Rootfs, config: &serde_json::Value, recipe: &Recipe) -> Result<Vec<Finding>> {
    use Severity::*;
    let mut out = Vec::new();
    let pk = &recipe.packages;
    for h in scan::forbidden(fs, pk)? {
        let id = if h.rule == "toolchain ELF" {
            "toolchain-elf"
        } else {
            "forbidden-command"
        };
        out.push(f(
            id,
            Error,
            &h.path,
            format!(
                "{} present{}",
                h.rule,
                h.target.map(|t| format!(" (-> {t})")).unwrap_or_default()
            ),
        ));
    }
    // Whited-out but still shipped: invisible at runtime, still in the image bytes.
    let elf_res: Vec<regex_lite::Regex> = pk
        .forbid_elf
        .iter()
        .filter_map(|r| regex_lite::Regex::new(r).ok())
        .collect();
    for h in &fs.hidden {
        let base = h.path.rsplit('/').next().unwrap_or(&h.path);
        if h.elf && elf_res.iter().any(|r| r.is_match(base)) {
            out.push(f(
                "bytes-still-shipped",
                Warning,
                &format!("/{}", h.path),
                format!(
                    "hidden by a whiteout but its {} bytes still ship in layer {}",
                    h.size,
                    h.layer + 1
                ),
            ));
        }
    }
    for w in &fs.same_layer_whiteouts {
        out.push(f(
            "whiteout-same-layer",
            Warning,
            &format!("/{}", w.path),
            format!(
                "layer {} holds both this path and the whiteout /{} naming it; the OCI spec keeps the path (whiteouts apply to lower layers only), but some runtimes delete it or fail to unpack the layer",
                w.layer + 1,
                w.whiteout
            ),
        ));
    }
    for m in scan::missing_required(fs, pk) {
        out.push(f(
            "required-command-missing",
            Error,
            &m,
            format!("required command {m} is not an executable on PATH"),
        ));
    }
    if fs.get("var/lib/dpkg/status").is_some() && !pk.purge.is_empty() {
        let db = DpkgDb::parse(&db_files(fs)?)?;
        for name in &pk.purge {
            if db.is_installed(name) {
                out.push(f(
                    "package-installed",
                    Error,
                    "/var/lib/dpkg/status",
                    format!("package {name} should be purged but is installed"),
                ));
            }
        }
        for name in &pk.keep {
            if !db.is_installed(name) {
                out.push(f(
                    "kept-package-missing",
                    Warning,
                    "/var/lib/dpkg/status",
                    format!("package {name} should be kept but is not installed"),
                ));
            }
        }
    }
    for c in &recipe.checks {
        for msg in checks::evaluate(fs, c) {
            out.push(f("check", Error, &c.path, msg));
        }
    }
    // Declared layout and hooks, as checks derived from the recipe's fs operations.
    for op in &recipe.fs {
        use crate::recipe::Check;
        let derived = match op {
            FsOp::Dir {
                path,
                owner,
                group,
                mode,
            } => Some(Check {
                owner: owner.clone(),
                group: group.clone(),
                mode: *mode,
                kind: Some("dir".into()),
                ..Check::at(path)
            }),
            FsOp::File {
                path,
                owner,
                group,
                mode,
                ..
            } => Some(Check {
                owner: owner.clone(),
                group: group.clone(),
                mode: *mode,
                ..Check::at(path)
            }),
            FsOp::Prepend {
                path,
                lines,
                before,
            } => Some(Check {
                must_contain: lines.clone(),
                before: before.clone(),
                ..Check::at(path)
            }),
            _ => None,
        };
        if let Some(c) = derived {
            for msg in checks::evaluate(fs, &c) {
                out.push(f("layout", Error, &c.path, msg));
            }
        }
    }
    // Image config.
    let cfg = config.get("config").cloned().unwrap_or_default();
    if let Some(init) = &recipe.init {
        let ep: Vec<String> = cfg
            .get("Entrypoint")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if ep.first() != Some(&init.path) {
            out.push(f(
                "entrypoint",
                Error,
                &init.path,
                format!("entrypoint is {ep:?}, expected the init {}", init.path),
            ));
        }
    }
    if recipe.audit.openshell {
        out.extend(crate::contract::findings(fs, &cfg));
    }
    out.extend(crate::contract::missing_labels(
        &cfg,
        &recipe.audit.required_labels,
    ));
    let user = cfg.get("User").and_then(|u| u.as_str()).unwrap_or("");
    let uname = user.split(':').next().unwrap_or("");
    if !recipe.audit.openshell && (uname.is_empty() || uname == "root" || uname == "0") {
        out.push(f(
            "root-user",
            Error,
            "config.User",
            format!("image runs as root (User = {user:?})"),
        ));
    }
    let pats: Vec<regex_lite::Regex> = recipe
        .audit
        .secret_patterns
        .iter()
        .filter_map(|p| regex_lite::Regex::new(p).ok())
        .collect();
    let mut texts: Vec<(String, String)> = Vec::new();
    for e in cfg
        .get("Env")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(s) = e.as_str() {
            texts.push((
                format!("config.Env {}", s.split('=').next().unwrap_or("")),
                s.to_string(),
            ));
        }
    }
    for (k, v) in cfg
        .get("Labels")
        .and_then(|l| l.as_object())
        .into_iter()
        .flatten()
    {
        texts.push((
            format!("config.Labels {k}"),
            format!("{k}={}", v.as_str().unwrap_or("")),
        ));
    }
    for (where_, t) in texts {
        if pats.iter().any(|p| p.is_match(&t)) {
            out.push(f(
                "secret",
                Error,
                &where_,
                "looks like a secret (API key or token)".into(),
            ));
        }
    }
    // Hygiene.
    let passwd = String::from_utf8_lossy(&fs.read("etc/passwd").unwrap_or_default()).into_owned();
    for (path, n) in &fs.nodes {
        let p = format!("/{path}");
        if n.kind == Kind::File && n.mode & 0o4000 != 0 {
            out.push(f(
                "setuid",
                Warning,
                &p,
                format!("setuid file (owner uid {})", n.uid),
            ));
        }
        if n.kind == Kind::File && n.mode & 0o2000 != 0 {
            out.push(f(
                "setgid",
                Info,
                &p,
                format!("setgid file (group gid {})", n.gid),
            ));
        }
        if n.xattrs().contains_key("security.capability") {
            out.push(f(
                "file-capability",
                Warning,
                &p,
                "file has capabilities (security.capability)".into(),
            ));
        }
        if n.kind != Kind::Symlink && n.mode & 0o002 != 0 {
            let sticky_dir = n.kind == Kind::Dir && n.mode & 0o1000 != 0;
            if !sticky_dir
                && !recipe
                    .audit
                    .allow_world_writable
                    .iter()
                    .any(|a| p.starts_with(a))
            {
                out.push(f(
                    "world-writable",
                    Warning,
                    &p,
                    format!(
                        "world-writable {:?} without sticky bit ({:04o})",
                        n.kind, n.mode
                    )
                    .to_lowercase(),
                ));
            }
        }
        if !passwd.is_empty() && lookup_name(&passwd, n.uid).is_none() {
            out.push(f(
                "unknown-uid",
                Warning,
                &p,
                format!("owned by uid {} which is not in /etc/passwd", n.uid),
            ));
        }
        if matches!(n.kind, Kind::Char | Kind::Block) {
            out.push(f(
                "device-node",
                Warning,
                &p,
                format!("device node {}:{}", n.dev().0, n.dev().1),
            ));
        }
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.id.cmp(&b.id))
            .then(a.path.cmp(&b.path))
    });
    Ok(out)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn junit(image: &str, fs: &[Finding], fail_on: Severity) -> String {
    let failing: Vec<&Finding> = fs.iter().filter(|f| f.severity >= fail_on).collect();
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"nemoclaw-build audit {}\" tests=\"{}\" failures=\"{}\">\n", xml(image), fs.len().max(1), failing.len());
    if fs.is_empty() {
        s.push_str("  <testcase classname=\"audit\" name=\"no findings\"/>\n");
    }
    for f in fs {
        s.push_str(&format!(
            "  <testcase classname=\"audit.{}\" name=\"{}\">",
            xml(&f.id),
            xml(&f.path)
        ));
        if f.severity >= fail_on {
            s.push_str(&format!(
                "<failure type=\"{:?}\" message=\"{}\"/>",
                f.severity,
                xml(&f.message)
            ));
        } else {
            s.push_str(&format!(
                "<system-out>{:?}: {}</system-out>",
                f.severity,
                xml(&f.message)
            ));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("</testsuite>\n");
    s
}

pub fn run_audit(a: AuditArgs) -> Result<ExitCode> {
    let mut recipe = Recipe::load(a.recipe.as_deref())?;
    recipe.audit.openshell |= a.openshell;
    let (fs, config) = load(&a.image, a.platform.clone(), a.quiet || a.json)?;
    let fnd = findings(&fs, &config, &recipe)?;
    let failing = fnd.iter().filter(|f| f.severity >= a.fail_on).count();
    if let Some(j) = &a.junit {
        std::fs::write(j, junit(&a.image, &fnd, a.fail_on))
            .with_context(|| format!("cannot write {}", j.display()))?;
    }
    if a.json {
        let v = serde_json::json!({"image": a.image, "findings": fnd, "failing": failing, "fail_on": a.fail_on, "openshell": recipe.audit.openshell, "files": fs.nodes.len(), "hidden_files": fs.hidden.len()});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<8} {:<26} {:<48} MESSAGE", "SEVERITY", "RULE", "PATH");
        for f in &fnd {
            println!(
                "{:<8} {:<26} {:<48} {}",
                format!("{:?}", f.severity).to_lowercase(),
                f.id,
                f.path,
                f.message
            );
        }
        let count = |s: Severity| fnd.iter().filter(|f| f.severity == s).count();
        println!(
            "{} error(s), {} warning(s), {} info; {} file(s) checked",
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Info),
            fs.nodes.len()
        );
    }
    Ok(if failing > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn run_policy(a: PolicyArgs) -> Result<ExitCode> {
    let recipe = Recipe::load(a.recipe.as_deref())?;
    let (fs, _) = load(&a.image, None, a.quiet || a.json)?;
    let rows = landlock::effective(&fs, &recipe);
    let warnings = landlock::lint(&fs, &recipe);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"image": a.image, "access": rows, "warnings": warnings})
            )?
        );
    } else {
        print!("{}", landlock::table(&rows));
        for w in &warnings {
            println!("warning: {w}");
        }
    }
    Ok(if a.strict && !warnings.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
