//! The `nemoclaw-build` command line: argument parsing, printing and exit codes. The
//! library does the work; this module only turns arguments into its options and its
//! results into output.
mod audit;
mod build;
mod index;
mod platforms;

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
    Diff(nemoclaw_build::diff::DiffArgs),
    /// Rebuild an image from its build record, or build twice, and compare digests
    /// (exit 0 reproducible, 1 not, 2 error).
    Verify(nemoclaw_build::verify::VerifyArgs),
    /// Software bill of materials of an image (SPDX 2.3 or CycloneDX 1.5 JSON).
    Sbom(nemoclaw_build::sbom::SbomArgs),
    /// Write a signing key pair: PREFIX.key (ECDSA P-256 PKCS#8 PEM, mode 0600,
    /// encrypted when $NEMOCLAW_SIGN_PASSWORD is set) and PREFIX.pub.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Manage the local cache (pulled blobs, derived layers).
    #[command(subcommand)]
    Cache(CacheCmd),
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

#[derive(Subcommand)]
enum CacheCmd {
    /// Delete least recently used entries until the cache is at most --max-size.
    Prune {
        /// Size limit: bytes, or with a K/M/G/T suffix (powers of 1024), e.g. 10G.
        #[arg(long, value_parser = parse_size)]
        max_size: u64,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s
        .trim()
        .trim_end_matches(['b', 'B'])
        .trim_end_matches(['i', 'I']);
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in '{s}'")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 500M, 10G)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("'{s}' is not a size"));
    }
    Ok((n * mult as f64) as u64)
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
        Cmd::Diff(a) => nemoclaw_build::diff::run_diff(a),
        Cmd::Verify(a) => nemoclaw_build::verify::run_verify(a),
        Cmd::Sbom(a) => nemoclaw_build::sbom::run_sbom(a),
        Cmd::Cache(CacheCmd::Prune {
            max_size,
            cache_dir,
        }) => nemoclaw_build::cache::Cache::open(cache_dir.as_deref()).and_then(|c| {
            let (n, freed) = c.prune(max_size)?;
            eprintln!(
                "pruned {n} file(s), {:.1} MiB from {}",
                freed as f64 / 1048576.0,
                c.root().display()
            );
            Ok(ExitCode::SUCCESS)
        }),
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
