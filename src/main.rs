//! The `nemoclaw-build` command line.
use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};
use nemoclaw_build::compress::{Algorithm, Settings};
use nemoclaw_build::imageref::ImageRef;
use nemoclaw_build::pipeline::{build, BuildOptions, PurgeMode};
use nemoclaw_build::progress::Progress;
use nemoclaw_build::recipe::Recipe;
use nemoclaw_build::source::OpenOptions;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nemoclaw-build",
    version,
    about = "Build the hardened NemoClaw sandbox as an OCI image, without a container daemon"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an image from a base, a recipe and builder artifacts.
    Build(BuildArgs),
    /// Check an image against the recipe's hardening policy (no daemon, one pass per layer).
    Audit(nemoclaw_build::audit::AuditArgs),
    /// Show effective access (Landlock declaration AND POSIX permissions) per path and user.
    Policy(nemoclaw_build::audit::PolicyArgs),
    /// Print the built-in default recipe.
    Recipe,
}

#[derive(Args)]
struct BuildArgs {
    /// Base image: tar:PATH | oci:DIR[:TAG] | oci-archive:PATH[:TAG] | docker-archive:PATH[:TAG]
    #[arg(long)]
    base: String,
    /// Output: oci:DIR[:TAG] | oci-archive:PATH[:TAG] | docker-archive:PATH[:TAG]
    #[arg(long)]
    output: String,
    /// Recipe TOML (default: the built-in recipes/nemoclaw-sandbox.toml).
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Builder-stage artifacts: a directory or a tar(.gz) file.
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// rewrite: base layers holding purged files are rewritten without them;
    /// whiteout: base layers are reused untouched and an upper layer hides the files.
    #[arg(long, value_enum, default_value = "rewrite")]
    purge_mode: PurgeMode,
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Algorithm,
    /// gzip 1-9 (default 6), zstd 1-19 (default 3).
    #[arg(long)]
    compression_level: Option<i32>,
    /// Compression threads (output bytes do not depend on it).
    #[arg(long)]
    threads: Option<usize>,
    /// Timestamp for created/mtimes; defaults to $SOURCE_DATE_EPOCH, else 0. Never the clock.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<u64>,
    /// KEY=VALUE accepted by the recipe's image.build_args; recorded as a label, never interpolated.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Fail instead of removing packages that depend on purged ones; Landlock warnings become errors.
    #[arg(long)]
    strict: bool,
    /// Platform for multi-arch bases (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    /// Write the build record (the exact inputs) to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

fn run_build(a: BuildArgs) -> Result<()> {
    let base = ImageRef::parse(&a.base).context("--base")?;
    let output = ImageRef::parse(&a.output).context("--output")?;
    let recipe = Recipe::load(a.recipe.as_deref())?;
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--build-arg '{kv}': expected KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let progress = Progress::new(a.quiet || a.json);
    let opts = BuildOptions {
        base,
        output,
        recipe,
        artifacts: a.artifacts,
        purge_mode: a.purge_mode,
        compression: Settings::new(a.compression, a.compression_level, a.threads)?,
        epoch: a.source_date_epoch.unwrap_or(0),
        build_args,
        strict: a.strict,
        open: OpenOptions {
            platform: a.platform,
            ..Default::default()
        },
        progress: progress.clone(),
    };
    let s = build(opts)?;
    if let Some(r) = &a.record {
        std::fs::write(r, serde_json::to_vec_pretty(&s.record)?)
            .with_context(|| format!("cannot write {}", r.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else if !a.quiet {
        eprintln!(
            "built {} {} | {} layers, {:.1} MiB | purged {} pkgs ({:.1} MiB) | init {} KiB ({}) | {:.1}s",
            s.output,
            s.digest,
            s.layers.len(),
            s.total_size as f64 / 1048576.0,
            s.purged.len(),
            s.bytes_removed as f64 / 1048576.0,
            s.init_size / 1024,
            s.init_target,
            s.seconds
        );
        println!("{}", s.digest);
    } else {
        println!("{}", s.digest);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Build(a) => run_build(a).map(|_| ExitCode::SUCCESS),
        Cmd::Audit(a) => nemoclaw_build::audit::run_audit(a),
        Cmd::Policy(a) => nemoclaw_build::audit::run_policy(a),
        Cmd::Recipe => {
            print!("{}", nemoclaw_build::recipe::DEFAULT_RECIPE);
            Ok(ExitCode::SUCCESS)
        }
    };
    match res {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
