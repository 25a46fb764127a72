//! `nemoclaw-build sbom`: its arguments and where the document goes.
use anyhow::{Context, Result};
use clap::Args;
use nemoclaw_build::recipe::Recipe;
use nemoclaw_build::sbom::{of_image, Format, SbomRequest};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct SbomArgs {
    /// Image: oci:DIR[:TAG] | oci-archive:PATH[:TAG] | docker-archive:PATH[:TAG] | tar:PATH
    pub image: String,
    #[arg(long, value_enum, default_value = "spdx")]
    pub format: Format,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Recipe whose [artifacts] dest holds the npm application (default: the built-in one).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Document creation time; default: the image config's `created`.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<u64>,
    /// Document name; default: the image title label, else the recipe name.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run_sbom(a: SbomArgs) -> Result<ExitCode> {
    let recipe = Recipe::load(a.recipe.as_deref())?;
    let req = SbomRequest {
        image: &a.image,
        platform: a.platform.clone(),
        recipe: &recipe,
        format: a.format,
        source_date_epoch: a.source_date_epoch,
        name: a.name.clone(),
    };
    let doc = of_image(&req, &super::report::progress(a.quiet))?;
    if let Some(note) = &doc.note {
        eprintln!("{note}");
    }
    match &a.output {
        Some(p) => {
            std::fs::write(p, &doc.bytes)
                .with_context(|| format!("cannot write {}", p.display()))?;
            if !a.quiet {
                eprintln!(
                    "wrote {} ({} components) to {}",
                    match a.format {
                        Format::Spdx => "SPDX 2.3",
                        Format::Cyclonedx => "CycloneDX 1.5",
                    },
                    doc.components,
                    p.display()
                );
            }
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&doc.bytes)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
