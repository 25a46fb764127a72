//! `nemoclaw-build index`: the fan-out step of a CI fleet with one runner per
//! platform. Its arguments, the summary it prints, exit codes (0 published, 1 error).
use super::build::RegistryArgs;
use anyhow::{Context, Result};
use clap::Args;
use nemoclaw_build::fanout::{assemble, IndexOptions, IndexSummary};
use nemoclaw_build::imageref::ImageRef;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct IndexArgs {
    /// Output: oci:DIR[:TAG] | oci-archive:PATH[:TAG] | registry://HOST/REPO[:TAG]
    #[arg(long)]
    output: String,
    /// One platform's image each, pinned by digest: registry://HOST/REPO@sha256:...,
    /// oci:DIR@sha256:... or oci-archive:FILE@sha256:... (their order does not matter).
    #[arg(required = true, value_name = "IMAGE@sha256:...")]
    inputs: Vec<String>,
    /// Tar mtime of an oci-archive output's entries; defaults to $SOURCE_DATE_EPOCH, else 0.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<u64>,
    /// Cache directory for pulled blobs (registry inputs written to a local output).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run_index(a: IndexArgs) -> Result<ExitCode> {
    let output = ImageRef::parse(&a.output).context("--output")?;
    let progress = super::report::progress(a.quiet || a.json);
    let opts = IndexOptions {
        inputs: a.inputs,
        output,
        registry: a.registry.options(a.cache_dir, &progress)?,
        epoch: a.source_date_epoch.unwrap_or(0),
    };
    let s = assemble(&opts)?;
    print(&s, a.json, a.quiet)?;
    Ok(ExitCode::SUCCESS)
}

/// One line per platform and one for the index on stderr, the digest on stdout
/// (or the JSON summary).
fn print(s: &IndexSummary, json: bool, quiet: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    if !quiet {
        for (p, e) in &s.platforms {
            eprintln!("platform {p} {} ({})", e.digest, e.input);
        }
        eprintln!(
            "wrote {} image index {} ({} platforms) | {:.1}s",
            s.output,
            s.digest,
            s.platforms.len(),
            s.seconds
        );
        if let Some(t) = nemoclaw_build::transfer::describe(&s.transfer) {
            eprintln!("{t}");
        }
    }
    println!("{}", s.digest);
    Ok(())
}
