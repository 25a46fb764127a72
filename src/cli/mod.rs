//! The `nemoclaw-build` command line: argument parsing, printing and exit codes. The
//! library does the work; this module only turns arguments into its options and its
//! results into output.
mod audit;
mod build;
mod cache;
mod diff;
mod index;
mod platforms;
mod report;
mod sbom;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nemoclaw-build",
    version,
    about = "Build the hardened NemoClaw sandbox as an OCI image, without a container daemon"
)]
struct Cli {
    /// Refuse images with more tar entries than this, all layers together (the
    /// model costs ~200 bytes of memory per entry; real bases have up to ~1 million).
    #[arg(long, global = true, env = "NEMOCLAW_MAX_ENTRIES", value_name = "N",
          default_value_t = nemoclaw_build::tarread::DEFAULT_MAX_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_entries: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an image from a base, a recipe and builder artifacts.
    Build(Box<build::BuildArgs>),
    /// Assemble one OCI image index from per-platform images built elsewhere
    /// (one CI runner per platform), each pinned by digest.
    Index(index::IndexArgs),
    /// Check an image against the recipe's hardening policy (no daemon, one pass per layer).
    Audit(audit::AuditArgs),
    /// Show effective access (Landlock declaration AND POSIX permissions) per path and user.
    Policy(audit::PolicyArgs),
    /// Print the built-in default recipe.
    Recipe,
    /// Compare two images: config fields, layers, files (exit 0 same, 1 different, 2 error).
    Diff(diff::DiffArgs),
    /// Rebuild an image from its build record, or build twice, and compare digests
    /// (exit 0 reproducible, 1 not, 2 error).
    Verify(verify::VerifyArgs),
    /// Software bill of materials of an image (SPDX 2.3 or CycloneDX 1.5 JSON).
    Sbom(sbom::SbomArgs),
    /// Write a signing key pair: PREFIX.key (ECDSA P-256 PKCS#8 PEM, mode 0600,
    /// encrypted when $NEMOCLAW_SIGN_PASSWORD is set) and PREFIX.pub.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Manage the local cache (pulled blobs, derived layers).
    #[command(subcommand)]
    Cache(cache::CacheCmd),
    /// Debugging aids.
    #[command(subcommand)]
    Debug(DebugCmd),
}

#[derive(Subcommand)]
enum DebugCmd {
    /// Print how nemoclaw-build reads one layer tar (plain, gzip or zstd): one JSON
    /// object per entry, in stream order; exit 1 with the reason if it refuses the layer.
    ListLayer { file: PathBuf },
}

/// Parses the command line, runs the command, and maps its result to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Build(_) | Cmd::Index(_) | Cmd::Verify(_)) {
        if let Err(e) = build::install_signal_cleanup() {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    } else {
        // Report commands end quietly when their reader goes away (`... | head`), as
        // Unix tools do, instead of panicking in println!. Builds keep Rust's default
        // (EPIPE as an error) so their cleanup always runs.
        // SAFETY: restoring the default disposition of one signal, before any thread
        // exists; no handler is involved.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    nemoclaw_build::tarread::set_max_entries(cli.max_entries);
    let res = match cli.cmd {
        Cmd::Build(a) => build::run_build(*a).map(|_| ExitCode::SUCCESS),
        Cmd::Index(a) => index::run_index(a),
        Cmd::Audit(a) => audit::run_audit(a),
        Cmd::Policy(a) => audit::run_policy(a),
        Cmd::Diff(a) => diff::run_diff(a),
        Cmd::Verify(a) => verify::run_verify(a),
        Cmd::Sbom(a) => sbom::run_sbom(a),
        Cmd::Cache(c) => cache::run_cache(c),
        Cmd::Debug(DebugCmd::ListLayer { file }) => {
            nemoclaw_build::rootfs::list_layer(&file, &mut std::io::stdout().lock())
                .map(|_| ExitCode::SUCCESS)
        }
        Cmd::Keygen { out } => nemoclaw_build::attest::keys::keygen(&out).map(|(k, p)| {
            eprintln!("wrote {} (private, 0600) and {}", k.display(), p.display());
            ExitCode::SUCCESS
        }),
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
