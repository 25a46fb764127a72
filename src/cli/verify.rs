//! `nemoclaw-build verify`: its arguments, the report it prints, and its exit codes
//! (0 verified, 1 not reproducible or a bad signature, 2 error).
use anyhow::{Context, Result};
use clap::Args;
use nemoclaw_build::progress::Progress;
use nemoclaw_build::verify::{
    build_spec, do_verify, index_to_verify, render, verify_index, verify_signed, BuildSpec,
    VerifyOptions,
};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct VerifyArgs {
    /// Image built by nemoclaw-build (oci:DIR[:TAG] or oci-archive:PATH[:TAG]).
    /// Optional with --twice when --base is given.
    pub image: Option<String>,
    /// Base image to rebuild from (default: the one named in the build record).
    #[arg(long)]
    pub base: Option<String>,
    /// Builder artifacts (required when the image was built with artifacts; only their
    /// digest is recorded, never the path).
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Builder image to take the artifacts from (default: the one the record names,
    /// read at its recorded digest when it is a registry tag).
    #[arg(long, value_name = "REF", conflicts_with = "artifacts")]
    pub artifacts_image: Option<String>,
    /// Directory inside the builder image (default: the recorded one).
    #[arg(long, value_name = "/DIR", requires = "artifacts_image")]
    pub artifacts_image_path: Option<String>,
    /// Recipe (default: the one named in the record, or the built-in one).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Build twice in isolated child processes with a different umask, TZ, locale,
    /// thread count and artifact copy (mtimes, permissions, creation order).
    #[arg(long)]
    pub twice: bool,
    /// Timestamp for --twice without IMAGE (default $SOURCE_DATE_EPOCH, else 0).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<u64>,
    /// Keep the temporary rebuilds (their paths are printed).
    #[arg(long)]
    pub keep: bool,
    /// Ignore file mtimes in the diff shown on a mismatch.
    #[arg(long)]
    pub ignore_timestamps: bool,
    /// JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(long, short)]
    pub quiet: bool,
    /// Check the image's cosign signature and attestations with this public key
    /// (PEM); IMAGE may also be registry://HOST/REPO[:TAG|@DIGEST]. Without
    /// --artifacts only these are checked (no rebuild); with --artifacts the image is
    /// rebuilt and compared too.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// Platform of an image index to verify (default: every platform of the index,
    /// then the index digest).
    #[arg(long)]
    pub platform: Option<String>,
    /// Registry (HOST[:PORT]) that may be reached over plain HTTP; repeatable.
    /// Loopback registries (localhost, 127.0.0.0/8, [::1]) always may.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Internal: run one build described by this JSON file and print its digest.
    #[arg(long, hide = true)]
    pub build_spec: Option<PathBuf>,
}

impl VerifyArgs {
    fn options(self) -> VerifyOptions {
        VerifyOptions {
            progress: super::report::progress(self.quiet || self.json),
            image: self.image,
            base: self.base,
            artifacts: self.artifacts,
            artifacts_image: self.artifacts_image,
            artifacts_image_path: self.artifacts_image_path,
            recipe: self.recipe,
            twice: self.twice,
            source_date_epoch: self.source_date_epoch,
            keep: self.keep,
            ignore_timestamps: self.ignore_timestamps,
            key: self.key,
            platform: self.platform,
            insecure: self.insecure_registry,
        }
    }
}

pub fn run_verify(args: VerifyArgs) -> Result<ExitCode> {
    if let Some(spec_path) = &args.build_spec {
        // Child mode (see --twice): one build, digest on stdout.
        let spec: BuildSpec = serde_json::from_slice(&std::fs::read(spec_path)?)
            .with_context(|| format!("{}: bad build spec", spec_path.display()))?;
        let (d, _) = build_spec(&spec, &Progress::silent())?;
        println!("{d}");
        return Ok(ExitCode::SUCCESS);
    }
    let json = args.json;
    let a = args.options();
    if let Some((digest, entries)) = index_to_verify(&a)? {
        return run_verify_index(&a, json, &digest, &entries);
    }
    let signed = match &a.key {
        Some(k) => match verify_signed(&a, k) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    if let (Some(sr), None) = (&signed, &a.artifacts) {
        // Signature and attestations only: no rebuild.
        if json {
            println!("{}", serde_json::to_string_pretty(sr)?);
        } else {
            print!("{}", sr.render());
        }
        return Ok(if sr.verified {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let r = match do_verify(&a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(sr) = &signed {
            v["signatures"] = serde_json::to_value(sr)?;
        }
        // The rebuilds' warnings, with their codes (see `build --json`).
        v["warnings"] = serde_json::to_value(a.progress.warnings())?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(sr) = &signed {
            print!("{}", sr.render());
        }
        print!("{}", render(&r));
    }
    let signed_ok = signed.as_ref().is_none_or(|s| s.verified);
    Ok(if r.verified && signed_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_verify_index(
    a: &VerifyOptions,
    json: bool,
    digest: &str,
    entries: &[nemoclaw_build::source::spec::Descriptor],
) -> Result<ExitCode> {
    let (reports, index_mismatch) = match verify_index(a, digest, entries) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let verified = index_mismatch.is_none() && reports.iter().all(|r| r.verified);
    if json {
        let v = serde_json::json!({
            "image": a.image,
            "index_digest": digest,
            "rebuilt_index_digest": index_mismatch.clone().unwrap_or_else(|| digest.to_string()),
            "platforms": reports,
            "verified": verified,
            "warnings": a.progress.warnings(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &reports {
            println!("platform {}:", r.inputs.platform.as_deref().unwrap_or("?"));
            print!("{}", render(r));
        }
        match &index_mismatch {
            None => println!(
                "index:   {digest}
verified: identical index digest"
            ),
            Some(got) => println!(
                "index:   {digest}
rebuilt index: {got}
NOT reproducible: index digests differ"
            ),
        }
    }
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
