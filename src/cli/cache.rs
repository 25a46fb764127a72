//! `nemoclaw-build cache`: managing the local cache.
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum CacheCmd {
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

pub fn run_cache(c: CacheCmd) -> Result<ExitCode> {
    match c {
        CacheCmd::Prune {
            max_size,
            cache_dir,
        } => {
            let c = nemoclaw_build::cache::Cache::open(cache_dir.as_deref())?;
            let (n, freed) = c.prune(max_size)?;
            eprintln!(
                "pruned {n} file(s), {:.1} MiB from {}",
                freed as f64 / 1048576.0,
                c.root().display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
