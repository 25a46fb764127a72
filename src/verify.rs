//! `verify`: rebuild an image from the build record in its manifest annotation
//! (`dev.nemoclaw.build.record`) and compare manifest digests; on a mismatch, say
//! which recorded input differs and run the `diff` logic to name the files.
//!
//! `--twice` builds the same inputs twice, each in a child process of this executable
//! with its own temporary directory, umask, TZ, locale, thread count and a private
//! copy of the artifacts (different file mtimes, permissions and creation order):
//! anything of the host that leaks into the output shows up as a digest mismatch.
//!
//! Exit codes: 0 verified (identical digests), 1 mismatch, 2 error.
use crate::compress::{Algorithm, Settings};
use crate::diff::{self, Loaded, Report};
use crate::imageref::ImageRef;
use crate::pipeline::{build, BuildOptions, PurgeMode};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::record::{input_mismatches, BuildRecord};
use crate::source::OpenOptions;
use crate::steps::builder::BuilderSpec;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Recorded name of the built-in recipe ends with this.
const BUILT_IN: &str = "(built in)";
/// Test hook: with `--twice`, append a line to this artifact file (relative path) in
/// the second build's copy, to prove that a difference is caught and named.
pub const MUTATE_ENV: &str = "NEMOCLAW_TEST_MUTATE";

/// What to verify and how (the `verify` command's arguments, without the ones about
/// output).
#[derive(Clone, Default)]
pub struct VerifyOptions {
    /// Image built by nemoclaw-build (oci:DIR[:TAG] or oci-archive:PATH[:TAG]).
    /// Optional with --twice when --base is given.
    pub image: Option<String>,
    /// Base image to rebuild from (default: the one named in the build record).
    pub base: Option<String>,
    /// Builder artifacts (required when the image was built with artifacts; only their
    /// digest is recorded, never the path).
    pub artifacts: Option<PathBuf>,
    /// Builder image to take the artifacts from (default: the one the record names,
    /// read at its recorded digest when it is a registry tag).
    pub artifacts_image: Option<String>,
    /// Directory inside the builder image (default: the recorded one).
    pub artifacts_image_path: Option<String>,
    /// Recipe (default: the one named in the record, or the built-in one).
    pub recipe: Option<PathBuf>,
    /// Build twice in isolated child processes with a different umask, TZ, locale,
    /// thread count and artifact copy (mtimes, permissions, creation order).
    pub twice: bool,
    /// Timestamp for --twice without IMAGE (default $SOURCE_DATE_EPOCH, else 0).
    pub source_date_epoch: Option<u64>,
    /// Keep the temporary rebuilds (their paths are printed).
    pub keep: bool,
    /// Ignore file mtimes in the diff shown on a mismatch.
    pub ignore_timestamps: bool,
    /// Check the image's cosign signature and attestations with this public key
    /// (PEM); IMAGE may also be registry://HOST/REPO[:TAG|@DIGEST]. Without
    /// --artifacts only these are checked (no rebuild); with --artifacts the image is
    /// rebuilt and compared too.
    pub key: Option<PathBuf>,
    /// Platform of an image index to verify (default: every platform of the index,
    /// then the index digest).
    pub platform: Option<String>,
    /// Where rebuild progress and warnings go.
    pub progress: Progress,
    /// Registries that may be reached over plain HTTP (`--insecure-registry`), for
    /// the image, its index, the base and the builder image alike.
    pub insecure: Vec<String>,
}

impl VerifyOptions {
    /// The registry options of every registry this verification talks to.
    fn registry(&self) -> crate::registry::RegistryOptions {
        crate::registry::RegistryOptions {
            insecure: self.insecure.clone(),
            progress: self.progress.clone(),
            ..Default::default()
        }
    }
}

/// Everything a rebuild needs; also the wire format to the child processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildSpec {
    pub base: String,
    pub output: String,
    /// Recipe file to read (None: the built-in one).
    pub recipe_path: Option<PathBuf>,
    /// Name to record for the recipe (the recorded one, so the record matches).
    pub recipe_name: Option<String>,
    pub artifacts: Option<PathBuf>,
    #[serde(default)]
    pub artifacts_image: Option<BuilderSpec>,
    pub epoch: u64,
    /// `Settings::describe()` form, as recorded.
    pub compression: String,
    pub threads: Option<usize>,
    pub purge_mode: String,
    pub build_args: BTreeMap<String, String>,
    /// The platform the image was built for (recorded, or `--platform`).
    #[serde(default)]
    pub platform: Option<String>,
    /// Registries that may be reached over plain HTTP (`--insecure-registry`).
    #[serde(default)]
    pub insecure: Vec<String>,
}

/// Inverse of `Settings::describe`.
pub fn parse_compression(desc: &str, threads: Option<usize>) -> Result<Settings> {
    if desc == "none" {
        return Settings::new(Algorithm::None, None, threads);
    }
    if let Some(l) = desc.strip_prefix("zstd-l") {
        return Settings::new(Algorithm::Zstd, Some(l.parse()?), threads);
    }
    if let Some(rest) = desc.strip_prefix("gzip-zlib-rs-l") {
        let (l, b) = rest
            .split_once("-b")
            .ok_or_else(|| anyhow!("bad compression '{desc}'"))?;
        let s = Settings::new(Algorithm::Gzip, Some(l.parse()?), threads)?;
        if b.parse::<usize>()? != s.block_size {
            bail!(
                "compression '{desc}': block size {b} differs from this tool's {}",
                s.block_size
            );
        }
        return Ok(s);
    }
    bail!("unknown compression '{desc}' in the build record")
}

fn load_recipe(spec: &BuildSpec) -> Result<Recipe> {
    match (&spec.recipe_path, &spec.recipe_name) {
        (Some(p), Some(name)) => {
            let bytes =
                std::fs::read(p).with_context(|| format!("cannot read recipe {}", p.display()))?;
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            Recipe::parse(&bytes, name, &dir)
        }
        (Some(p), None) => Recipe::load(Some(p)),
        (None, _) => Recipe::load(None),
    }
}

/// Runs one build in this process; returns (manifest digest, build record).
pub fn build_spec(spec: &BuildSpec, progress: &Progress) -> Result<(String, BuildRecord)> {
    let purge_mode = <PurgeMode as clap::ValueEnum>::from_str(&spec.purge_mode, true)
        .map_err(|e| anyhow!("purge mode '{}': {e}", spec.purge_mode))?;
    let s = build(BuildOptions {
        base: ImageRef::parse(&spec.base).context("base")?,
        output: ImageRef::parse(&spec.output).context("output")?,
        recipe: load_recipe(spec)?,
        artifacts: spec.artifacts.clone(),
        artifacts_image: spec.artifacts_image.clone(),
        purge_mode,
        compression: parse_compression(&spec.compression, spec.threads)?,
        epoch: spec.epoch,
        build_args: spec.build_args.clone(),
        strict: false,
        open: OpenOptions {
            platform: spec.platform.clone(),
            registry: crate::registry::RegistryOptions {
                insecure: spec.insecure.clone(),
                progress: progress.clone(),
                ..Default::default()
            },
            ..Default::default()
        },
        progress: progress.clone(),
        cache: None,
        remote_cache: Default::default(),
        attest: Default::default(),
        sbom: None,
        record: None,
        arch: Default::default(),
    })?;
    Ok((s.digest, s.record))
}

/// The inputs to rebuild with: the record's, overridden by the command line.
fn spec_from(a: &VerifyOptions, record: Option<&BuildRecord>, output: String) -> Result<BuildSpec> {
    let empty = BuildRecord::default();
    let rec = record.unwrap_or(&empty);
    let base = a
        .base
        .clone()
        .or_else(|| rec.base.clone())
        .ok_or_else(|| anyhow!("no base: give --base"))?;
    let recorded_recipe = rec.recipe.clone();
    let (recipe_path, recipe_name) = match (&a.recipe, &recorded_recipe) {
        (Some(p), Some(n)) => (Some(p.clone()), Some(n.clone())),
        (Some(p), None) => (Some(p.clone()), None),
        (None, Some(n)) if n.ends_with(BUILT_IN) => (None, None),
        (None, Some(n)) => (Some(PathBuf::from(n)), Some(n.clone())),
        (None, None) => (None, None),
    };
    let artifacts_image = builder_spec(a, rec)?;
    if let (Some(d), None, None) = (&rec.artifacts_digest, &a.artifacts, &artifacts_image) {
        bail!(
            "the image was built with artifacts ({d}); the record holds only their digest: pass --artifacts PATH"
        );
    }
    let epoch = match record {
        Some(r) => r
            .source_date_epoch
            .ok_or_else(|| anyhow!("the build record has no source_date_epoch"))?,
        None => a.source_date_epoch.unwrap_or(0),
    };
    let default_compression = Settings::new(Algorithm::Gzip, None, None)?.describe();
    Ok(BuildSpec {
        base,
        output,
        recipe_path,
        recipe_name,
        artifacts: a.artifacts.clone(),
        artifacts_image,
        epoch,
        compression: rec.compression.clone().unwrap_or(default_compression),
        threads: None,
        purge_mode: format!("{:?}", rec.purge_mode.unwrap_or(PurgeMode::Rewrite)).to_lowercase(),
        build_args: rec.build_args.clone(),
        platform: rec.platform.clone().or_else(|| a.platform.clone()),
        insecure: a.insecure.clone(),
    })
}

/// The builder image to rebuild from: the command line's, else the recorded one
/// (a registry tag pinned to the recorded digest).
fn builder_spec(a: &VerifyOptions, rec: &BuildRecord) -> Result<Option<BuilderSpec>> {
    if a.artifacts.is_some() {
        return Ok(None);
    }
    let recorded = rec.artifacts_image.as_ref();
    let reference = match (&a.artifacts_image, recorded) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) => r.name.clone(),
        (None, None) => return Ok(None),
    };
    let path = match (&a.artifacts_image_path, recorded) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => r.path.clone(),
        (None, None) => bail!("--artifacts-image {reference}: give --artifacts-image-path too"),
    };
    let mut spec = BuilderSpec::new(&reference, &path)?;
    spec.digest = recorded
        .map(|r| r.digest.clone())
        .filter(|d| d.starts_with("sha256:"));
    Ok(Some(spec))
}

/// Absolute path (without resolving symlinks), so children can run elsewhere.
fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Makes the path inside an image reference absolute.
fn absolute_ref(r: &str) -> Result<String> {
    Ok(match ImageRef::parse(r)? {
        ImageRef::Tar(p) => format!("tar:{}", absolute(&p)?.display()),
        ImageRef::OciDir { path, tag } => with_tag("oci", &absolute(&path)?, tag),
        ImageRef::OciArchive { path, tag } => with_tag("oci-archive", &absolute(&path)?, tag),
        ImageRef::DockerArchive { path, tag } => with_tag("docker-archive", &absolute(&path)?, tag),
        ImageRef::Registry(_) => r.to_string(),
    })
}

fn with_tag(t: &str, p: &Path, tag: Option<String>) -> String {
    match tag {
        Some(tag) => format!("{t}:{}:{tag}", p.display()),
        None => format!("{t}:{}", p.display()),
    }
}

/// How a copy of the artifacts is perturbed.
pub struct Perturb {
    pub reverse: bool,
    pub mtime: SystemTime,
    pub file_mode: u32,
    pub dir_mode: u32,
    pub mutate: Option<String>,
}

/// Copies an artifact tree (or tar file) with different metadata but the same content.
pub fn copy_artifacts(src: &Path, dst: &Path, p: &Perturb) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set_mtime = |path: &Path| -> Result<()> {
        let f = std::fs::File::open(path)?;
        f.set_modified(p.mtime)
            .with_context(|| format!("cannot set mtime of {}", path.display()))
    };
    if src.is_file() {
        std::fs::copy(src, dst)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
        return set_mtime(dst);
    }
    let mut entries: Vec<walkdir::DirEntry> = Vec::new();
    for e in walkdir::WalkDir::new(src)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        entries.push(e.with_context(|| format!("cannot walk {}", src.display()))?);
    }
    if p.reverse {
        entries.reverse();
    }
    std::fs::create_dir_all(dst)?;
    let mut dirs = vec![dst.to_path_buf()];
    for e in &entries {
        let rel = e.path().strip_prefix(src)?;
        let to = dst.join(rel);
        let ft = e.file_type();
        if let Some(parent) = to.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent)?;
            }
        }
        if ft.is_dir() {
            if !to.exists() {
                std::fs::create_dir(&to)?;
            }
            dirs.push(to);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &to)?;
        } else {
            std::fs::copy(e.path(), &to)
                .with_context(|| format!("cannot copy {}", e.path().display()))?;
            if p.mutate.as_deref() == Some(rel.to_string_lossy().as_ref()) {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&to)?;
                f.write_all(b"\n// mutated by NEMOCLAW_TEST_MUTATE\n")?;
            }
            let exec = e.metadata()?.permissions().mode() & 0o111 != 0;
            let mode = if exec {
                p.file_mode | ((p.file_mode & 0o444) >> 2)
            } else {
                p.file_mode
            };
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
            set_mtime(&to)?;
        }
    }
    // Deepest first, so setting a parent's mtime is the last thing to touch it.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(p.dir_mode))?;
        set_mtime(&d)?;
    }
    Ok(())
}

/// One child build's environment.
struct Child {
    umask: &'static str,
    tz: &'static str,
    locale: &'static str,
    threads: usize,
}

const CHILDREN: [Child; 2] = [
    Child {
        umask: "022",
        tz: "UTC",
        locale: "C",
        threads: 1,
    },
    Child {
        umask: "077",
        tz: "Pacific/Chatham",
        locale: "C.UTF-8",
        threads: 3,
    },
];

fn run_child(spec: &BuildSpec, work: &Path, c: &Child) -> Result<String> {
    std::fs::create_dir_all(work)?;
    let spec_path = work.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(spec)?)?;
    // Our own inode via /proc: still this very binary if the file was replaced meanwhile.
    let proc_exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    let exe = if proc_exe.exists() {
        proc_exe
    } else {
        std::env::current_exe().context("cannot find the current executable")?
    };
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("umask {}; exec \"$0\" \"$@\"", c.umask))
        .arg(&exe)
        .arg("verify")
        .arg("--quiet")
        .arg("--build-spec")
        .arg(&spec_path)
        .current_dir(work)
        .env("TZ", c.tz)
        .env("LC_ALL", c.locale)
        .env("LANG", c.locale)
        .env("TMPDIR", work)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "build in {} failed ({}): {}",
            work.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("sha256:"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("build in {} printed no digest", work.display()))
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub inputs: BuildSpec,
    pub builds: Vec<String>,
    pub input_mismatches: Vec<String>,
    pub verified: bool,
    pub diffs: Vec<Report>,
    pub kept: Option<PathBuf>,
}

/// The build record of the image to verify; none is an error saying why.
fn image_record(l: &Loaded) -> Result<BuildRecord> {
    l.record()?.ok_or_else(|| {
        anyhow!(
            "{} has no build record (annotation {}): not built by nemoclaw-build, or stored in a format without manifest annotations",
            l.name,
            diff::RECORD_ANNOTATION
        )
    })
}

/// `--twice`: two child builds in different environments (umask, TZ, locale,
/// threads, artifact copies with other order, times and modes). Returns their
/// manifest digests and output references.
fn build_twice(
    spec: &BuildSpec,
    root: &Path,
    progress: &Progress,
) -> Result<(Vec<String>, Vec<String>)> {
    let mutate = std::env::var(MUTATE_ENV).ok().filter(|s| !s.is_empty());
    let (mut builds, mut outputs) = (Vec::new(), Vec::new());
    for (i, c) in CHILDREN.iter().enumerate() {
        let work = root.join(format!("build{}", i + 1));
        std::fs::create_dir_all(&work)?;
        let mut s = spec.clone();
        if let Some(src) = &spec.artifacts {
            let dst = work.join(if src.is_file() {
                "artifacts.tar"
            } else {
                "artifacts"
            });
            copy_artifacts(&absolute(src)?, &dst, &perturbation(i, mutate.clone()))?;
            s.artifacts = Some(dst);
        }
        let out = work.join("out");
        s.output = format!("oci:{}:verify", out.display());
        s.threads = Some(c.threads);
        progress.log(&format!(
            "build {}/2: umask {}, TZ={}, LC_ALL={}, {} thread(s), {}",
            i + 1,
            c.umask,
            c.tz,
            c.locale,
            c.threads,
            work.display()
        ));
        let d = run_child(&s, &work, c)?;
        progress.log(&format!("build {}/2: {d}", i + 1));
        builds.push(d);
        outputs.push(s.output.clone());
    }
    Ok((builds, outputs))
}

/// How child `i` copies the artifacts (the second one differently in every way
/// that must not matter; `mutate` is the self-test's deliberate content change).
fn perturbation(i: usize, mutate: Option<String>) -> Perturb {
    Perturb {
        reverse: i == 1,
        mtime: SystemTime::UNIX_EPOCH
            + Duration::from_secs(if i == 0 { 1_000_000_000 } else { 1_600_000_000 }),
        file_mode: if i == 0 { 0o664 } else { 0o600 },
        dir_mode: if i == 0 { 0o775 } else { 0o700 },
        mutate: if i == 1 { mutate } else { None },
    }
}

pub fn do_verify(a: &VerifyOptions) -> Result<VerifyReport> {
    let progress = a.progress.clone();
    let open = OpenOptions {
        platform: a.platform.clone(),
        registry: a.registry(),
        ..Default::default()
    };
    let mut image: Option<Loaded> = match &a.image {
        Some(i) => Some(diff::open(i, &open)?),
        None => None,
    };
    let record = image.as_ref().map(image_record).transpose()?;
    if image.is_none() && !a.twice {
        bail!("give an IMAGE to verify, or --twice with --base (and --artifacts/--recipe)");
    }
    let tmp = tempfile::Builder::new()
        .prefix("nemoclaw-verify-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = tmp.path().to_path_buf();
    let spec = absolute_spec(a, record.as_ref())?;
    let (builds, outputs, mut mismatches) = if a.twice {
        let (builds, outputs) = build_twice(&spec, &root, &progress)?;
        (builds, outputs, Vec::new())
    } else {
        rebuild(&spec, &root, record.as_ref(), &progress)?
    };
    let image_digest = image.as_ref().and_then(|l| l.base.manifest_digest.clone());
    let mut diffs = Vec::new();
    let mut verified = true;
    if builds.len() == 2 && builds[0] != builds[1] {
        verified = false;
        let mut x = diff::open(&outputs[0], &OpenOptions::default())?;
        let mut y = diff::open(&outputs[1], &OpenOptions::default())?;
        diffs.push(diff::compare(
            &mut x,
            &mut y,
            a.ignore_timestamps,
            &progress,
        )?);
    }
    if let (Some(img), Some(id)) = (image.as_mut(), &image_digest) {
        if &builds[0] != id {
            verified = false;
            if let (true, Some(r)) = (a.twice, &record) {
                mismatches = output_mismatches(r, &outputs[0])?;
            }
            let mut y = diff::open(&outputs[0], &OpenOptions::default())?;
            diffs.push(diff::compare(img, &mut y, a.ignore_timestamps, &progress)?);
        }
    }
    let kept = if a.keep {
        Some(tmp.keep())
    } else {
        drop(tmp);
        None
    };
    Ok(VerifyReport {
        image: a.image.clone(),
        image_digest,
        inputs: spec,
        builds,
        input_mismatches: mismatches,
        verified,
        diffs,
        kept,
    })
}

/// The inputs to rebuild from (the arguments over the image's record), with every
/// local path made absolute: the rebuilds run elsewhere.
fn absolute_spec(a: &VerifyOptions, record: Option<&BuildRecord>) -> Result<BuildSpec> {
    let mut spec = spec_from(a, record, String::new())?;
    spec.base = absolute_ref(&spec.base)?;
    if let Some(b) = &mut spec.artifacts_image {
        b.reference = absolute_ref(&b.reference)?;
    }
    if let Some(p) = &spec.recipe_path {
        spec.recipe_path = Some(absolute(p)?);
    }
    Ok(spec)
}

/// One rebuild in this process, into `root/rebuild`: its digest and output, and
/// the inputs it saw differently from the image's `record`.
fn rebuild(
    spec: &BuildSpec,
    root: &Path,
    record: Option<&BuildRecord>,
    progress: &Progress,
) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let out = root.join("rebuild");
    let mut s = spec.clone();
    s.output = format!("oci:{}:verify", out.display());
    progress.log(&format!("rebuilding {} into {}", s.base, out.display()));
    let (d, rebuilt_record) = build_spec(&s, progress)?;
    let mismatches = record
        .map(|r| input_mismatches(r, &rebuilt_record))
        .unwrap_or_default();
    Ok((vec![d], vec![s.output], mismatches))
}

/// The inputs a rebuild written to `output` saw differently from `record`: the
/// `--twice` children do not report their records, so they are read from the output.
fn output_mismatches(record: &BuildRecord, output: &str) -> Result<Vec<String>> {
    let rebuilt = diff::open(output, &OpenOptions::default())?;
    Ok(match rebuilt.record()? {
        Some(rr) => input_mismatches(record, &rr),
        None => Vec::new(),
    })
}

/// `--key`: the image's signature and attestations (see [`crate::attest::check`]).
pub fn verify_signed(a: &VerifyOptions, key: &Path) -> Result<crate::attest::check::AttestReport> {
    let image = a
        .image
        .as_deref()
        .ok_or_else(|| anyhow!("--key needs the IMAGE whose signature to check"))?;
    let key = crate::attest::check::key(key)?;
    let opts = a.registry();
    let (digest, record) = match ImageRef::parse(image)? {
        ImageRef::Registry(r) => crate::attest::check::registry_image(&r, &opts)?,
        _ => {
            let l = diff::open(image, &OpenOptions::default())?;
            let d = l
                .base
                .manifest_digest
                .as_deref()
                .ok_or_else(|| anyhow!("{image}: no manifest digest (not an OCI image)"))?;
            (crate::oci::Digest::parse(d)?, l.record()?)
        }
    };
    crate::attest::check::verify(image, &digest, record.as_ref(), &key, &opts)
}

pub fn render(r: &VerifyReport) -> String {
    let mut s = String::new();
    if let (Some(i), Some(d)) = (&r.image, &r.image_digest) {
        s.push_str(&format!("image:   {i} {d}\n"));
    }
    for (i, b) in r.builds.iter().enumerate() {
        s.push_str(&format!("rebuild {}: {b}\n", i + 1));
    }
    for m in &r.input_mismatches {
        s.push_str(&format!("input: {m}\n"));
    }
    for d in &r.diffs {
        s.push_str(&diff::render(d, false));
    }
    if let Some(k) = &r.kept {
        s.push_str(&format!("kept rebuilds in {}\n", k.display()));
    }
    s.push_str(if r.verified {
        "verified: identical digests\n"
    } else {
        "NOT reproducible: digests differ\n"
    });
    s
}

/// An image index to verify platform by platform: its digest and entries (None: a
/// single image, or `--platform` picks one).
pub fn index_to_verify(
    a: &VerifyOptions,
) -> Result<Option<(String, Vec<crate::source::spec::Descriptor>)>> {
    let Some(image) = a
        .image
        .as_deref()
        .filter(|_| a.platform.is_none() && !a.twice)
    else {
        return Ok(None);
    };
    let r = ImageRef::parse(image)?;
    if matches!(r, ImageRef::Tar(_) | ImageRef::DockerArchive { .. }) {
        return Ok(None);
    }
    // A layout or registry reference naming a single image is not an error here: it
    // is verified as one.
    let open = OpenOptions {
        registry: a.registry(),
        ..Default::default()
    };
    Ok(crate::source::open_index(&r, &open).ok())
}

/// Verifies every platform of an index, then the index: rebuilt from the
/// platforms' rebuilt manifests, it must have the image's index digest.
pub fn verify_index(
    a: &VerifyOptions,
    digest: &str,
    entries: &[crate::source::spec::Descriptor],
) -> Result<(Vec<VerifyReport>, Option<String>)> {
    if a.base.is_some() && entries.len() > 1 {
        bail!("--base with an image index of {} platforms: give --platform too (each platform has its own base)", entries.len());
    }
    let mut reports = Vec::new();
    let mut rebuilt = Vec::new();
    for e in entries
        .iter()
        .filter(|e| crate::source::spec::is_image_entry(e))
    {
        let p = e
            .platform
            .as_ref()
            .ok_or_else(|| anyhow!("index entry {} has no platform", e.digest))?;
        let name = crate::platform::platform_name(&p.os, &p.architecture, p.variant.as_deref());
        let pa = VerifyOptions {
            platform: Some(name.clone()),
            ..a.clone()
        };
        let r = do_verify(&pa).with_context(|| format!("platform {name}"))?;
        rebuilt.push(crate::targets::PlatformManifest {
            platform: crate::platform::Platform::parse(&name)?,
            digest: crate::oci::Digest::parse(&r.builds[0])?,
            size: e.size,
        });
        reports.push(r);
    }
    let (_, bytes) = crate::targets::platform_index(rebuilt)?;
    let got = crate::digest::sha256_digest(&bytes);
    Ok((reports, (got != digest).then_some(got)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;
    use crate::testutil::TarBuilder;

    #[test]
    fn compression_round_trips() {
        for s in [
            Settings::new(Algorithm::Gzip, Some(9), Some(1)).unwrap(),
            Settings::new(Algorithm::Zstd, Some(5), Some(1)).unwrap(),
            Settings::new(Algorithm::None, None, Some(1)).unwrap(),
        ] {
            let p = parse_compression(&s.describe(), Some(1)).unwrap();
            assert_eq!(p.describe(), s.describe());
        }
        assert!(parse_compression("brotli", None).is_err());
        assert!(parse_compression("gzip-zlib-rs-l6-b4096", None).is_err());
    }

    #[test]
    fn mismatches_name_the_input() {
        let rec = |art: &[u8]| BuildRecord {
            recipe_digest: Some(Digest::of(b"a")),
            artifacts_digest: Some(Digest::of(art)),
            ..Default::default()
        };
        let (a, b) = (rec(b"x"), rec(b"y"));
        let m = input_mismatches(&a, &b);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("artifacts: recorded"), "{m:?}");
    }

    #[test]
    fn artifact_copies_differ_in_metadata_only() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("dist/lib")).unwrap();
        std::fs::write(src.join("dist/index.js"), b"a").unwrap();
        std::fs::write(src.join("dist/lib/u.js"), b"b").unwrap();
        std::fs::set_permissions(
            src.join("dist/index.js"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let p = |rev, secs, fm, dm, mutate: Option<&str>| Perturb {
            reverse: rev,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            file_mode: fm,
            dir_mode: dm,
            mutate: mutate.map(str::to_string),
        };
        let (c1, c2) = (t.path().join("c1"), t.path().join("c2"));
        copy_artifacts(&src, &c1, &p(false, 1000, 0o664, 0o775, None)).unwrap();
        copy_artifacts(
            &src,
            &c2,
            &p(true, 2000, 0o600, 0o700, Some("dist/lib/u.js")),
        )
        .unwrap();
        let m = |p: &Path| std::fs::metadata(p).unwrap();
        assert_eq!(
            m(&c1.join("dist/index.js")).permissions().mode() & 0o777,
            0o775
        );
        assert_eq!(
            m(&c2.join("dist/index.js")).permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(m(&c2.join("dist")).permissions().mode() & 0o777, 0o700);
        assert_eq!(
            m(&c2.join("dist/lib")).modified().unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(2000)
        );
        assert_eq!(std::fs::read(c1.join("dist/lib/u.js")).unwrap(), b"b");
        assert!(std::fs::read(c2.join("dist/lib/u.js")).unwrap().len() > 1);
        // Same artifacts digest for both unmutated copies.
        let c3 = t.path().join("c3");
        copy_artifacts(&src, &c3, &p(true, 3000, 0o600, 0o700, None)).unwrap();
        let mut fs = crate::rootfs::Rootfs::new();
        let d1 = crate::steps::artifacts::apply(&mut fs, &c1, "/opt/x", 0, 0, t.path()).unwrap();
        let d3 = crate::steps::artifacts::apply(&mut fs, &c3, "/opt/x", 0, 0, t.path()).unwrap();
        assert_eq!(d1, d3);
    }

    /// A tiny base (tar of a rootfs), an empty recipe with artifacts: build, then verify
    /// the image against the same and against changed artifacts.
    #[test]
    fn rebuild_matches_and_mismatch_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base.tar");
        std::fs::write(&base, crate::testutil::accounts().dir("opt", 0o755).build()).unwrap();
        let recipe = t.path().join("r.toml");
        std::fs::write(&recipe, "name = \"t\"\n[artifacts]\ndest = \"/opt/app\"\n").unwrap();
        let art = t.path().join("art");
        std::fs::create_dir_all(art.join("dist")).unwrap();
        std::fs::write(art.join("dist/index.js"), b"console.log(1)\n").unwrap();
        let out = t.path().join("img");
        let spec = BuildSpec {
            base: format!("tar:{}", base.display()),
            output: format!("oci:{}:latest", out.display()),
            recipe_path: Some(recipe.clone()),
            recipe_name: None,
            artifacts: Some(art.clone()),
            artifacts_image: None,
            epoch: 1_700_000_000,
            compression: "gzip-zlib-rs-l6-b1048576".into(),
            threads: Some(1),
            purge_mode: "rewrite".into(),
            build_args: BTreeMap::new(),
            platform: None,
            insecure: Vec::new(),
        };
        let (d, _) = build_spec(&spec, &Progress::silent()).unwrap();
        let args = |artifacts: PathBuf| VerifyOptions {
            image: Some(format!("oci:{}:latest", out.display())),
            // The record names inputs portably (file names only): say where they are.
            base: Some(format!("tar:{}", base.display())),
            artifacts: Some(artifacts),
            recipe: Some(recipe.clone()),
            ..Default::default()
        };
        let r = do_verify(&args(art.clone())).unwrap();
        assert!(r.verified, "{}", render(&r));
        assert_eq!(r.builds, vec![d]);
        // Changed artifact content: mismatch, the input and the file are named.
        let art2 = t.path().join("art2");
        std::fs::create_dir_all(art2.join("dist")).unwrap();
        std::fs::write(art2.join("dist/index.js"), b"console.log(2)\n").unwrap();
        let r = do_verify(&args(art2)).unwrap();
        assert!(!r.verified);
        let text = render(&r);
        assert!(text.contains("input: artifacts: recorded"), "{text}");
        assert!(
            text.contains("/opt/app/dist/index.js: content differs"),
            "{text}"
        );
        // Missing --artifacts is an error that says so.
        let mut no_art = args(art);
        no_art.artifacts = None;
        let err = do_verify(&no_art).unwrap_err();
        assert!(format!("{err:#}").contains("--artifacts"), "{err:#}");
    }

    /// An image built from a builder layout rebuilds from the recorded builder (named
    /// by its portable name, so the test says where it is); another builder is named
    /// as the input that differs.
    #[test]
    fn rebuild_from_the_recorded_builder_image() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base.tar");
        std::fs::write(&base, crate::testutil::accounts().build()).unwrap();
        let recipe = t.path().join("r.toml");
        std::fs::write(&recipe, "name = \"t\"\n[artifacts]\ndest = \"/opt/app\"\n").unwrap();
        let layout = |name: &str, js: &[u8]| {
            let l = TarBuilder::new()
                .dir("srv/app", 0o755)
                .file("srv/app/index.js", js, 0o644)
                .build();
            let dir = t.path().join(name);
            crate::pipeline_tests::write_layout(&dir, &[l]);
            format!("oci:{}:latest", dir.display())
        };
        let good = layout("builder", b"1");
        let out = t.path().join("img");
        let b = BuilderSpec::new(&good, "/srv/app").unwrap();
        let spec = BuildSpec {
            base: format!("tar:{}", base.display()),
            output: format!("oci:{}:latest", out.display()),
            recipe_path: Some(recipe.clone()),
            recipe_name: None,
            artifacts: None,
            artifacts_image: Some(b),
            epoch: 1_700_000_000,
            compression: "gzip-zlib-rs-l6-b1048576".into(),
            threads: Some(1),
            purge_mode: "rewrite".into(),
            build_args: BTreeMap::new(),
            platform: None,
            insecure: Vec::new(),
        };
        let (d, rec) = build_spec(&spec, &Progress::silent()).unwrap();
        assert_eq!(
            rec.artifacts_image.as_ref().unwrap().name,
            "oci:builder:latest"
        );
        let args = |image: String| VerifyOptions {
            image: Some(format!("oci:{}:latest", out.display())),
            base: Some(format!("tar:{}", base.display())),
            artifacts_image: Some(image),
            recipe: Some(recipe.clone()),
            ..Default::default()
        };
        let r = do_verify(&args(good)).unwrap();
        assert!(r.verified, "{}", render(&r));
        assert_eq!(r.builds, vec![d]);
        let r = do_verify(&args(layout("other", b"2"))).unwrap();
        let text = render(&r);
        assert!(!r.verified);
        assert!(text.contains("input: builder image: recorded"), "{text}");
        assert!(
            text.contains("/opt/app/index.js: content differs"),
            "{text}"
        );
    }
}
