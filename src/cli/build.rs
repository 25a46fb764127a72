//! `nemoclaw-build build`: its arguments, the registry options shared with other
//! commands, the summary it prints, and the signal handling of a running build.
use super::platforms::Plan;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use nemoclaw_build::attest::AttestOptions;
use nemoclaw_build::compress::{Algorithm, Settings};
use nemoclaw_build::imageref::ImageRef;
use nemoclaw_build::pipeline::{build, BuildOptions, BuildSummary, PurgeMode};
use nemoclaw_build::progress::{Progress, Warning, WarningCode};
use nemoclaw_build::recipe::Recipe;
use nemoclaw_build::registry::RegistryOptions;
use nemoclaw_build::source::OpenOptions;
use nemoclaw_build::steps::builder::BuilderSpec;
use nemoclaw_build::targets::{build_platforms, MultiSummary};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `--registry-user` and friends, shared by the commands that talk to registries.
#[derive(Args)]
pub(super) struct RegistryArgs {
    /// Registry (HOST[:PORT]) that may be reached over plain HTTP; repeatable.
    /// Loopback registries (localhost, 127.0.0.0/8, [::1]) always may.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// Registry user for every registry of this command; the password comes from
    /// $NEMOCLAW_REGISTRY_PASSWORD or --registry-password-stdin. Without it,
    /// ~/.docker/config.json, $REGISTRY_AUTH_FILE and podman's auth.json are used.
    #[arg(long)]
    registry_user: Option<String>,
    /// Read the registry password from stdin (first line).
    #[arg(long, requires = "registry_user")]
    registry_password_stdin: bool,
}

impl RegistryArgs {
    pub(super) fn options(
        &self,
        cache_dir: Option<PathBuf>,
        progress: &Progress,
    ) -> Result<nemoclaw_build::registry::RegistryOptions> {
        let password = if self.registry_password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the registry password from stdin")?;
            Some(line.trim_end_matches(['\r', '\n']).to_string())
        } else {
            std::env::var("NEMOCLAW_REGISTRY_PASSWORD").ok()
        };
        Ok(nemoclaw_build::registry::RegistryOptions {
            insecure: self.insecure_registry.clone(),
            username: self.registry_user.clone(),
            password: password.filter(|_| self.registry_user.is_some()),
            cache_dir,
            progress: progress.clone(),
            transfers: Default::default(),
        })
    }
}

#[derive(Args)]
pub struct BuildArgs {
    /// Base image: tar:PATH | oci:DIR[:TAG] | oci-archive:PATH[:TAG] | docker-archive:PATH[:TAG] | registry://HOST/REPO[:TAG|@sha256:...].
    /// Repeatable as PLATFORM=REF (linux/amd64=tar:a.tar) for a multi-platform build.
    #[arg(long, required = true)]
    base: Vec<String>,
    /// Output: oci:DIR[:TAG] | oci-archive:PATH[:TAG] | docker-archive:PATH[:TAG] | registry://HOST/REPO[:TAG]
    #[arg(long)]
    output: String,
    /// Recipe TOML (default: the built-in recipes/nemoclaw-sandbox.toml).
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Builder-stage artifacts: a directory or a tar(.gz) file; repeatable as
    /// PLATFORM=PATH (then every platform needs one).
    #[arg(long)]
    artifacts: Vec<String>,
    /// Builder-stage artifacts from a directory of a builder image (oci:, oci-archive:,
    /// docker-archive:, registry://...@sha256:...), read for the build's platform.
    #[arg(
        long,
        value_name = "REF",
        conflicts_with = "artifacts",
        requires = "artifacts_image_path"
    )]
    artifacts_image: Option<String>,
    /// The directory inside --artifacts-image to copy (absolute, e.g. /opt/nemoclaw).
    #[arg(long, value_name = "/DIR", requires = "artifacts_image")]
    artifacts_image_path: Option<String>,
    /// rewrite: base layers holding purged files are rewritten without them;
    /// whiteout: base layers are reused untouched and an upper layer hides the files.
    #[arg(long, value_enum, default_value = "rewrite")]
    purge_mode: PurgeMode,
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Algorithm,
    /// gzip 1-9 (default 5), zstd 1-19 (default 3).
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
    /// Fail instead of removing packages that depend on purged ones; Landlock warnings become
    /// errors; a registry base or builder named by tag (not digest) is refused.
    #[arg(long)]
    strict: bool,
    /// Platform (os/arch[/variant]) to take from an image-index base; a list
    /// (linux/amd64,linux/arm64) or `all` builds one image per platform, published
    /// as one image index.
    #[arg(long)]
    platform: Option<String>,
    /// Write the build record (the exact inputs) to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Write an SPDX 2.3 SBOM here; with an oci:DIR output it is also attached to the
    /// layout as an artifact manifest whose subject is the image.
    #[arg(long)]
    sbom: Option<PathBuf>,
    /// Cache directory for derived layers and pulled blobs
    /// (default: $XDG_CACHE_HOME/nemoclaw-build or ~/.cache/nemoclaw-build).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
    /// Push the cached part of the build (base and recipe layers) to this repository,
    /// tagged from the cache key (registry://HOST[:PORT]/REPO, no tag).
    #[arg(long, value_name = "registry://HOST/REPO", value_parser = nemoclaw_build::remote_cache::parse_location, conflicts_with = "no_cache")]
    cache_to: Option<String>,
    /// On a local cache miss, look for the cached part in this repository (as pushed by
    /// --cache-to); repeatable, asked in order. Registry errors never fail the build.
    #[arg(long, value_name = "registry://HOST/REPO", value_parser = nemoclaw_build::remote_cache::parse_location, conflicts_with = "no_cache")]
    cache_from: Vec<String>,
    /// Sign the image (cosign format) and its attestations with this ECDSA P-256
    /// private key: PKCS#8 PEM, an encrypted one with its password in
    /// $NEMOCLAW_SIGN_PASSWORD. Refused if other users may read it.
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Attestations to attach: provenance, sbom, cyclonedx (comma-separated) or none.
    /// Default: provenance with --sign-key, else none. Unsigned without --sign-key.
    #[arg(long, value_name = "KINDS")]
    attest: Option<String>,
    /// Where attestations go: referrers (OCI 1.1, DSSE-signed with --sign-key) or index
    /// (BuildKit attestation manifest beside the image in an image index, unsigned).
    #[arg(long, value_enum, default_value = "referrers")]
    attest_store: nemoclaw_build::attest::Store,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run_build(a: BuildArgs) -> Result<()> {
    let progress = super::report::progress(a.quiet || a.json);
    let registry = a.registry.options(a.cache_dir.clone(), &progress)?;
    let (json, quiet) = (a.json, a.quiet);
    let (opts, targets) = build_options(a, registry, progress)?;
    match targets {
        Some(targets) => print_multi(build_platforms(opts, targets)?, json, quiet),
        None => print_single(&build(opts)?, json, quiet),
    }
}

/// What `--base`/`--platform`/`--artifacts` ask for: one image, or one per platform.
struct Planned {
    base: ImageRef,
    platform: Option<String>,
    artifacts: Option<PathBuf>,
    targets: Option<Vec<nemoclaw_build::targets::Target>>,
}

fn plan(a: &BuildArgs, registry: &RegistryOptions) -> Result<Planned> {
    let list = |r: &ImageRef| {
        let open = OpenOptions {
            platform: None,
            registry: registry.clone(),
            lazy_layers: true,
        };
        nemoclaw_build::source::index_platforms(r, &open)
    };
    Ok(
        match super::platforms::plan(&a.base, a.platform.as_deref(), &a.artifacts, &list)? {
            Plan::Single {
                base,
                platform,
                artifacts,
            } => Planned {
                base,
                platform,
                artifacts,
                targets: None,
            },
            Plan::Multi(t) => Planned {
                base: t[0].base.clone(),
                platform: None,
                artifacts: None,
                targets: Some(t),
            },
        },
    )
}

/// `--build-arg KEY=VALUE`, each once.
fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut build_args = BTreeMap::new();
    for kv in args {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--build-arg '{kv}': expected KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    Ok(build_args)
}

/// `--sign-key`, `--attest`, `--attest-store`; key warnings go to `progress`.
fn attest_options(a: &BuildArgs, progress: &Progress) -> Result<AttestOptions> {
    let signer = match &a.sign_key {
        Some(p) => Some(nemoclaw_build::attest::keys::Signer::load(p, &mut |w| {
            progress.warn(Warning::new(WarningCode::KeyPermissions, w))
        })?),
        None => None,
    };
    let mut attest = AttestOptions::new(signer, a.attest.as_deref())?;
    attest.store = a.attest_store;
    Ok(attest)
}

/// The library's options for the arguments, and the platforms of a multi-platform build.
fn build_options(
    a: BuildArgs,
    registry: RegistryOptions,
    progress: Progress,
) -> Result<(BuildOptions, Option<Vec<nemoclaw_build::targets::Target>>)> {
    let output = ImageRef::parse(&a.output).context("--output")?;
    let planned = plan(&a, &registry)?;
    let recipe = Recipe::load(a.recipe.as_deref())?;
    let build_args = parse_build_args(&a.build_args)?;
    let attest = attest_options(&a, &progress)?;
    let opts = BuildOptions {
        base: planned.base,
        output,
        recipe,
        artifacts: planned.artifacts,
        artifacts_image: match (&a.artifacts_image, &a.artifacts_image_path) {
            (Some(r), Some(p)) => Some(BuilderSpec::new(r, p)?),
            _ => None,
        },
        purge_mode: a.purge_mode,
        compression: Settings::new(a.compression, a.compression_level, a.threads)?,
        epoch: a.source_date_epoch.unwrap_or(0),
        build_args,
        strict: a.strict,
        open: OpenOptions {
            platform: planned.platform,
            registry,
            lazy_layers: false,
        },
        progress,
        cache: if a.no_cache {
            None
        } else {
            Some(nemoclaw_build::cache::Cache::open(a.cache_dir.as_deref())?)
        },
        sbom: a.sbom,
        record: a.record,
        arch: Default::default(),
        remote_cache: nemoclaw_build::remote_cache::RemoteCacheOptions {
            from: a.cache_from,
            to: a.cache_to,
        },
        attest,
    };
    Ok((opts, planned.targets))
}

/// The summary of a single-platform build: JSON, or one line; the digest on stdout.
fn print_single(s: &BuildSummary, json: bool, quiet: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    if !quiet {
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
        if let Some(t) = nemoclaw_build::transfer::describe(&s.transfer) {
            eprintln!("{t}");
        }
    }
    println!("{}", s.digest);
    Ok(())
}

/// The summary of a multi-platform build: one line per platform, then the index.
fn print_multi(s: MultiSummary, json: bool, quiet: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    if !quiet {
        for (p, b) in &s.platforms {
            eprintln!(
                "built {p} {} | {} layers, {:.1} MiB | purged {} pkgs | init {} KiB ({})",
                b.digest,
                b.layers.len(),
                b.total_size as f64 / 1048576.0,
                b.purged.len(),
                b.init_size / 1024,
                b.init_target,
            );
        }
        eprintln!(
            "built {} image index {} ({} platforms) | {:.1}s",
            s.output,
            s.digest,
            s.platforms.len(),
            s.seconds
        );
    }
    println!("{}", s.digest);
    Ok(())
}

/// SIGINT/SIGTERM/SIGHUP during a build: remove its scratch space (staging, spill,
/// temp files) and exit 128 + signal. The handler only wakes a thread (signal-hook's
/// self-pipe), which does the cleanup outside signal context; a publish already in
/// progress finishes first, so the output is the old image or the new one.
pub fn install_signal_cleanup() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                cleanup_and_exit(sig);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// The signal path: finish a commit in progress, remove scratch space, and exit
/// with 128 + the signal number (130 for SIGINT, 143 for SIGTERM) like a shell.
fn cleanup_and_exit(signal: i32) -> ! {
    use nemoclaw_build::scratch;
    let _commit = scratch::commit_section();
    let n = scratch::remove_all();
    let name = match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    };
    eprintln!("error: interrupted by {name}; removed {n} temporary path(s)");
    std::process::exit(128 + signal)
}
