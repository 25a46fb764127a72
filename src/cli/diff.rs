//! `nemoclaw-build diff`: its arguments, the report it prints, and its exit codes
//! (0 no semantic difference, 1 different, 2 error).
use anyhow::Result;
use clap::Args;
use nemoclaw_build::diff::{diff_images, render};
use nemoclaw_build::progress::Progress;
use nemoclaw_build::source::OpenOptions;
use std::process::ExitCode;

#[derive(Args)]
pub struct DiffArgs {
    /// First image: oci:DIR[:TAG] | oci-archive:PATH[:TAG] | docker-archive:PATH[:TAG] | tar:PATH
    pub a: String,
    /// Second image.
    pub b: String,
    /// Ignore file mtimes and the `created` fields of config, history and annotations.
    #[arg(long)]
    pub ignore_timestamps: bool,
    /// JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print every changed file (default: the first 200 per section).
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run_diff(a: DiffArgs) -> Result<ExitCode> {
    let progress = super::report::progress(a.quiet || a.json);
    let opts = OpenOptions {
        platform: a.platform.clone(),
        registry: nemoclaw_build::registry::RegistryOptions {
            progress: progress.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Some(platforms) = a
        .platform
        .is_none()
        .then(|| nemoclaw_build::diff::indexes::both_indexes(&a.a, &a.b))
        .flatten()
    {
        return run_diff_indexes(&a, platforms, &progress);
    }
    let report = match diff_images(&a.a, &a.b, a.ignore_timestamps, &opts, &progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, a.all));
    }
    Ok(if report.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `diff` of two image indexes: platforms paired (see `nemoclaw_build::diff::indexes`).
fn run_diff_indexes(
    a: &DiffArgs,
    platforms: (Vec<String>, Vec<String>),
    progress: &Progress,
) -> Result<ExitCode> {
    use nemoclaw_build::diff::indexes::{compare_indexes, render_index};
    let r = match compare_indexes((&a.a, &a.b), platforms, a.ignore_timestamps, progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render_index(&r, a.all));
    }
    Ok(if r.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
