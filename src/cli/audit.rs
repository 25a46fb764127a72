//! `nemoclaw-build audit` and `policy`: arguments, report printing, exit codes.
use anyhow::{Context, Result};
use clap::Args;
use nemoclaw_build::audit::{self, Severity};
use nemoclaw_build::recipe::Recipe;
use nemoclaw_build::steps::landlock;
use nemoclaw_build::tarread::escape_controls;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Platform (os/arch[/variant]) of an image index to read (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(long, short)]
    pub quiet: bool,
}

/// Reads the image, saying which platform of an index it read (even with --quiet).
fn load(
    image: &str,
    platform: Option<String>,
    quiet: bool,
) -> Result<(nemoclaw_build::rootfs::Rootfs, serde_json::Value)> {
    let l = audit::load(image, platform, &super::report::progress(quiet))?;
    if let Some(note) = &l.note {
        eprintln!("{note}");
    }
    Ok((l.fs, l.config))
}

pub fn run_audit(a: AuditArgs) -> Result<ExitCode> {
    let mut recipe = Recipe::load(a.recipe.as_deref())?;
    recipe.audit.openshell |= a.openshell;
    let (fs, config) = load(&a.image, a.platform.clone(), a.quiet || a.json)?;
    let fnd = audit::findings(&fs, &config, &recipe)?;
    let failing = fnd.iter().filter(|f| f.severity >= a.fail_on).count();
    if let Some(j) = &a.junit {
        std::fs::write(j, audit::junit(&a.image, &fnd, a.fail_on))
            .with_context(|| format!("cannot write {}", j.display()))?;
    }
    if a.json {
        let field = |k: &str| {
            config
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        let platform = format!("{}/{}", field("os"), field("architecture"));
        let v = serde_json::json!({"image": a.image, "platform": platform, "findings": fnd, "failing": failing, "fail_on": a.fail_on, "openshell": recipe.audit.openshell, "files": fs.nodes.len(), "hidden_files": fs.hidden.len()});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<8} {:<26} {:<48} MESSAGE", "SEVERITY", "RULE", "PATH");
        // Image paths are escaped: a name with a newline must not forge a finding line.
        for f in &fnd {
            println!(
                "{:<8} {:<26} {:<48} {}",
                format!("{:?}", f.severity).to_lowercase(),
                f.id,
                escape_controls(&f.path),
                escape_controls(&f.message)
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
    let (fs, _) = load(&a.image, a.platform.clone(), a.quiet || a.json)?;
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
