//! The declarative recipe (TOML). Everything NemoClaw-specific lives in
//! `recipes/nemoclaw-sandbox.toml`; this module only knows generic operations.
//! Unknown keys and wrong types are errors naming the file, line and key.
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

/// File mode written as an octal string ("0755", "2770") or a TOML octal integer
/// (0o755). A decimal integer (`mode = 755`, which is 0o1363) is refused before
/// deserialization by [`refuse_decimal_modes`]: serde only sees the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Mode, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
        }
        let v = match Raw::deserialize(d)? {
            Raw::S(s) => parse_octal_mode(&s).ok_or_else(|| {
                serde::de::Error::custom(format!("mode '{s}' is not an octal number like \"0755\""))
            })?,
            Raw::I(i) => u32::try_from(i)
                .map_err(|_| serde::de::Error::custom(format!("mode {i} is out of range")))?,
        };
        if v > 0o7777 {
            return Err(serde::de::Error::custom(format!(
                "mode {v:o} has bits beyond 07777"
            )));
        }
        Ok(Mode(v))
    }
}

/// "755", "0755", "02770", "0o755": octal digits only (no sign, space or `_`).
fn parse_octal_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub image: ImageConfig,
    #[serde(default)]
    pub packages: Packages,
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub users: Vec<User>,
    /// Ordered filesystem operations, applied top to bottom like Dockerfile RUN lines.
    #[serde(default)]
    pub fs: Vec<FsOp>,
    #[serde(default)]
    pub artifacts: Option<Artifacts>,
    #[serde(default)]
    pub init: Option<Init>,
    #[serde(default)]
    pub landlock: Option<Landlock>,
    #[serde(default)]
    pub sanitize: Sanitize,
    /// Assertions on the final rootfs, checked after the build and by `audit`.
    #[serde(default)]
    pub checks: Vec<Check>,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Bytes of each `[[fs]] op = "file"` `source`, by index into `fs`; read once
    /// (confined to the recipe's directory) when the recipe is loaded from a file.
    #[serde(skip)]
    pub sources: BTreeMap<usize, Arc<Vec<u8>>>,
    #[serde(skip)]
    pub source_bytes: Vec<u8>,
    #[serde(skip)]
    pub source_name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Build args the recipe accepts (recorded in labels/annotations, never interpolated).
    #[serde(default)]
    pub build_args: Vec<String>,
    /// Build arg -> label key: the arg's value becomes that label (e.g.
    /// `org.opencontainers.image.revision`); such an arg is accepted too.
    #[serde(default)]
    pub build_arg_labels: BTreeMap<String, String>,
}

impl ImageConfig {
    /// Whether `--build-arg NAME` is accepted.
    pub fn accepts(&self, name: &str) -> bool {
        self.build_args.iter().any(|a| a == name) || self.build_arg_labels.contains_key(name)
    }

    /// The labels `build_arg_labels` makes from the given build args.
    pub fn labels_from_args(&self, args: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        args.iter()
            .filter_map(|(k, v)| Some((self.build_arg_labels.get(k)?.clone(), v.clone())))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Packages {
    #[serde(default)]
    pub purge: Vec<String>,
    #[serde(default)]
    pub keep: Vec<String>,
    #[serde(default = "yes")]
    pub autoremove: bool,
    /// Commands that must not exist on PATH directories of the final rootfs.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// Commands that must resolve to executables.
    #[serde(default)]
    pub require: Vec<String>,
    /// ELF basenames (regex) that must not ship anywhere, independent of the package database.
    #[serde(default)]
    pub forbid_elf: Vec<String>,
}

impl Default for Packages {
    fn default() -> Self {
        Packages {
            purge: vec![],
            keep: vec![],
            autoremove: true,
            forbid: vec![],
            require: vec![],
            forbid_elf: vec![],
        }
    }
}

fn yes() -> bool {
    true
}

impl Packages {
    /// `purge` and `keep` for one architecture: `{arch}` becomes the Debian
    /// architecture (`arm64`), `{triplet}` the GNU triplet as package names spell it
    /// (`aarch64-linux-gnu`, `x86-64-linux-gnu`), so one recipe fits every platform.
    pub fn for_arch(&self, arch: crate::platform::Arch) -> Packages {
        let expand = |names: &[String]| -> Vec<String> {
            names.iter().map(|n| expand_placeholders(n, arch)).collect()
        };
        Packages {
            purge: expand(&self.purge),
            keep: expand(&self.keep),
            ..self.clone()
        }
    }

    /// Every `purge`/`keep` entry is a Debian package name (policy 5.6.1) once its
    /// placeholders are filled, for each architecture; an unknown `{...}` is named.
    fn validate_names(&self) -> Result<()> {
        for (field, names) in [("purge", &self.purge), ("keep", &self.keep)] {
            for (i, n) in names.iter().enumerate() {
                for arch in crate::platform::Arch::ALL {
                    let e = expand_placeholders(n, arch);
                    // NAME or NAME:ARCH (dpkg's multiarch qualifier).
                    let (name, qual) = e.split_once(':').unwrap_or((&e, "x"));
                    let ok = name.len() >= 2
                        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                        && name.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)
                        })
                        && !qual.is_empty()
                        && qual
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
                    if !ok {
                        bail!(
                            "[packages] {field}[{i}] = {n:?}: not a Debian package name \
                             (placeholders: {{arch}}, {{triplet}})"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn expand_placeholders(name: &str, arch: crate::platform::Arch) -> String {
    name.replace("{arch}", arch.name())
        .replace("{triplet}", arch.package_triplet())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    #[serde(default)]
    pub gecos: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum FsOp {
    /// Create a directory or set its owner/mode (parents created root:root 0755).
    Dir {
        path: String,
        owner: Option<String>,
        group: Option<String>,
        mode: Option<Mode>,
    },
    /// Write a file from inline `content` or from `source`: a path relative to the
    /// recipe file's directory that must resolve (symlinks included) inside it.
    /// A built-in recipe has no directory, so it can't use `source`.
    File {
        path: String,
        content: Option<String>,
        source: Option<String>,
        owner: Option<String>,
        group: Option<String>,
        mode: Option<Mode>,
    },
    /// Prepend lines to a file unless it already contains them (idempotent).
    Prepend {
        path: String,
        lines: Vec<String>,
        #[serde(default)]
        before: Option<String>,
    },
    /// `chown -R` semantics over base and added content.
    Chown {
        path: String,
        owner: Option<String>,
        group: Option<String>,
        #[serde(default)]
        recursive: bool,
    },
    Symlink {
        path: String,
        target: String,
    },
    Remove {
        path: String,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    pub dest: String,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
}

fn root() -> String {
    "root".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Init {
    pub path: String,
    /// Where the runtime-environment declaration for the init is written.
    #[serde(default = "default_init_config")]
    pub config: String,
    /// Variables the init sets for the workload and writes to the env file, in order;
    /// `mkdir` creates the value as a directory owned by the workload user.
    #[serde(default)]
    pub env: Vec<InitEnv>,
    /// Names (or `PREFIX*`) the init copies from the container's environment into the
    /// env file; names that look like secrets are refused at runtime.
    #[serde(default)]
    pub passthrough: Vec<String>,
}

fn default_init_config() -> String {
    nemoclaw_runtime_spec::DEFAULT_CONFIG.to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitEnv {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub mkdir: Option<Mode>,
}

/// Image-wide clean-up of privilege bits the workload never needs. Off unless the
/// recipe asks: a generic engine does not change base files behind the user's back.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Sanitize {
    /// Clear setuid/setgid bits on every file except the `setid_allow` paths.
    #[serde(default)]
    pub strip_setid: bool,
    #[serde(default)]
    pub setid_allow: Vec<String>,
    /// Remove `security.capability` xattrs except on the `file_caps_allow` paths.
    #[serde(default)]
    pub strip_file_caps: bool,
    #[serde(default)]
    pub file_caps_allow: Vec<String>,
    /// Remove character/block device nodes (container runtimes provide /dev).
    #[serde(default)]
    pub remove_devices: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Landlock {
    /// Where the policy JSON is written in the image (read by nemoclaw-init).
    pub path: String,
    #[serde(default)]
    pub read_only: Vec<String>,
    #[serde(default)]
    pub read_write: Vec<String>,
    #[serde(default = "best_effort")]
    pub compatibility: String,
    #[serde(default)]
    pub include_workdir: bool,
    /// Users whose effective access `policy` reports.
    #[serde(default)]
    pub users: Vec<String>,
}

impl Landlock {
    /// The policy file's content, checked with the init's own rules (the shared
    /// `nemoclaw-runtime-spec` crate): a policy the init would refuse at container start
    /// fails the build instead, naming the field.
    pub fn policy(&self, workdir: Option<&str>) -> Result<nemoclaw_runtime_spec::landlock::Policy> {
        use nemoclaw_runtime_spec::landlock::{Compat, Policy};
        let compatibility = Compat::parse(&self.compatibility).ok_or_else(|| {
            anyhow!(
                "[landlock] compatibility = {:?}: expected one of {}",
                self.compatibility,
                Compat::NAMES.join(", ")
            )
        })?;
        let mut read_write = self.read_write.clone();
        if self.include_workdir {
            if let Some(w) = workdir {
                if !read_write.iter().any(|p| p == w) {
                    read_write.push(w.to_string());
                }
            }
        }
        let p = Policy {
            read_only: self.read_only.clone(),
            read_write,
            compatibility,
        };
        p.check().map_err(|e| anyhow!("[landlock] {e}"))?;
        Ok(p)
    }
}

fn best_effort() -> String {
    "best_effort".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub path: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Case-insensitive substrings the file must not contain.
    #[serde(default)]
    pub must_not_contain: Vec<String>,
    /// Lines the file must contain; with `before`, they must come before that line.
    #[serde(default)]
    pub must_contain: Vec<String>,
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
}

impl Check {
    /// A check on `path` with no rules yet (rules are set with struct update syntax).
    pub fn at(path: &str) -> Check {
        Check {
            path: path.to_string(),
            owner: None,
            group: None,
            mode: None,
            must_not_contain: vec![],
            must_contain: vec![],
            before: None,
            kind: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Regexes for secrets in env values and labels.
    #[serde(default)]
    pub secret_patterns: Vec<String>,
    /// Paths whose world-writable or setuid findings are expected.
    #[serde(default)]
    pub allow_world_writable: Vec<String>,
    /// Check the OpenShell image contract (user, workdir, `ip`/`nsenter`, entrypoint).
    #[serde(default)]
    pub openshell: bool,
    /// Labels the image config must carry.
    #[serde(default)]
    pub required_labels: Vec<String>,
}

pub const DEFAULT_RECIPE: &str = include_str!("../recipes/nemoclaw-sandbox.toml");
const BUILT_IN_NAME: &str = "recipes/nemoclaw-sandbox.toml (built in)";

/// Largest `source` file read into memory.
pub const MAX_SOURCE_BYTES: u64 = 64 << 20;

impl Recipe {
    /// The recipe at `path` (its `source` files read from its directory), or the
    /// built-in one.
    pub fn load(path: Option<&Path>) -> Result<Recipe> {
        match path {
            Some(p) => Recipe::load_named(p, &p.display().to_string()),
            None => {
                let r = Recipe::from_str(DEFAULT_RECIPE, BUILT_IN_NAME)?;
                if let Some((i, src)) = r.file_sources().next() {
                    bail!(
                        "{BUILT_IN_NAME}: fs[{i}].source = {src:?}: a built-in recipe has no \
                         directory to read it from; use 'content' or pass --recipe"
                    );
                }
                Ok(r)
            }
        }
    }

    /// Like `load`, naming the recipe `name` in messages and records.
    pub fn load_named(path: &Path, name: &str) -> Result<Recipe> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Recipe::parse(&bytes, name, &dir)
    }

    /// Parses and validates recipe text without touching the filesystem (the fuzz
    /// entry point). `source` files are not read: `fsops` refuses them until
    /// [`Recipe::read_sources`] has run.
    pub fn from_str(text: &str, name: &str) -> Result<Recipe> {
        let mut r: Recipe = toml::from_str(text)
            .map_err(|e| anyhow!("{name}: {}", describe_toml_error(text, &e)))?;
        refuse_decimal_modes(text).map_err(|e| anyhow!("{name}: {e}"))?;
        r.source_bytes = text.as_bytes().to_vec();
        r.source_name = name.to_string();
        r.validate()
            .with_context(|| format!("{name}: invalid recipe"))?;
        Ok(r)
    }

    /// Parses recipe bytes and reads its `source` files from `dir`.
    pub fn parse(bytes: &[u8], name: &str, dir: &Path) -> Result<Recipe> {
        let text = std::str::from_utf8(bytes).map_err(|_| anyhow!("{name}: not UTF-8"))?;
        let mut r = Recipe::from_str(text, name)?;
        r.read_sources(dir)
            .with_context(|| format!("{name}: invalid recipe"))?;
        Ok(r)
    }

    /// `(index into fs, source)` of every file operation that reads a source file.
    fn file_sources(&self) -> impl Iterator<Item = (usize, &str)> {
        self.fs.iter().enumerate().filter_map(|(i, op)| match op {
            FsOp::File {
                source: Some(s), ..
            } => Some((i, s.as_str())),
            _ => None,
        })
    }

    /// Reads each `source` once, confined to `dir`: the path is canonicalized
    /// (symlinks resolved) and must stay below the canonical `dir`; the file is then
    /// opened component by component without following symlinks, so nothing
    /// swapped in after the check is read either.
    pub fn read_sources(&mut self, dir: &Path) -> Result<()> {
        let wanted: Vec<(usize, String)> = self
            .file_sources()
            .map(|(i, s)| (i, s.to_string()))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let root = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve the recipe's directory {}", dir.display()))?;
        let (root_fd, _) = crate::hostfs::open_root(&root)?;
        for (i, src) in wanted {
            let field = format!("fs[{i}].source = {src:?}");
            let joined = root.join(&src);
            let real = joined
                .canonicalize()
                .with_context(|| format!("{field}: cannot resolve {}", joined.display()))?;
            let rel = match real.strip_prefix(&root) {
                Ok(rel) if !rel.as_os_str().is_empty() => rel,
                _ => bail!(
                    "{field} resolves to {}, outside the recipe's directory {}",
                    real.display(),
                    root.display()
                ),
            };
            let label = format!("{field} ({})", real.display());
            let (f, size) = crate::hostfs::open_file_beneath(root_fd.as_fd(), rel, &label)?;
            if size > MAX_SOURCE_BYTES {
                bail!("{label}: larger than {MAX_SOURCE_BYTES} bytes");
            }
            let mut bytes = Vec::with_capacity(size as usize);
            std::io::Read::read_to_end(
                &mut std::io::Read::take(f, MAX_SOURCE_BYTES + 1),
                &mut bytes,
            )
            .with_context(|| format!("cannot read {label}"))?;
            if bytes.len() as u64 > MAX_SOURCE_BYTES {
                bail!("{label}: larger than {MAX_SOURCE_BYTES} bytes");
            }
            self.sources.insert(i, Arc::new(bytes));
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        for (arg, label) in &self.image.build_arg_labels {
            if label.is_empty() || label.chars().any(|c| c.is_control() || c.is_whitespace()) {
                bail!("image.build_arg_labels.{arg} = {label:?}: not a label key");
            }
        }
        for (i, op) in self.fs.iter().enumerate() {
            if let FsOp::File {
                path,
                content,
                source,
                ..
            } = op
            {
                if content.is_some() == source.is_some() {
                    bail!("fs op 'file' for {path}: set exactly one of 'content' or 'source'");
                }
                if let Some(s) = source {
                    if s.is_empty() || s.starts_with('/') || s.contains('\0') {
                        bail!(
                            "fs[{i}].source = {s:?}: must be a path relative to the recipe's directory"
                        );
                    }
                }
            }
        }
        if let Some(init) = &self.init {
            self.init_spec(init)?;
        }
        if let Some(l) = &self.landlock {
            l.policy(None)?;
        }
        self.validate_accounts()?;
        self.packages.validate_names()?;
        for re in self
            .packages
            .forbid_elf
            .iter()
            .chain(&self.audit.secret_patterns)
        {
            regex_lite::Regex::new(re).map_err(|e| anyhow!("invalid regex '{re}': {e}"))?;
        }
        Ok(())
    }

    /// The init's runtime-environment declaration, validated with the init's own rules
    /// (the shared `nemoclaw-runtime-spec` crate), so a bad entry fails the build, not
    /// the container start.
    pub fn init_spec(&self, init: &Init) -> Result<nemoclaw_runtime_spec::Spec> {
        let spec = nemoclaw_runtime_spec::Spec {
            env: init
                .env
                .iter()
                .map(|e| nemoclaw_runtime_spec::EnvVar {
                    name: e.name.clone(),
                    value: e.value.clone(),
                    mkdir: e.mkdir.map(|m| m.0),
                })
                .collect(),
            passthrough: init.passthrough.clone(),
        };
        let text = String::from_utf8(nemoclaw_runtime_spec::render(&spec))?;
        nemoclaw_runtime_spec::parse(&text).map_err(|e| anyhow!("[init] {e}"))?;
        if let Some(e) = init.env.iter().find(|e| {
            e.mkdir.is_some()
                && crate::fspath::normalize(&e.value)
                    .ok()
                    .map(|n| format!("/{n}"))
                    != Some(e.value.clone())
        }) {
            bail!(
                "[init] env {}: mkdir path {:?} must be absolute and normalized",
                e.name,
                e.value
            );
        }
        Ok(spec)
    }

    /// Every account field is written verbatim into /etc/passwd, shadow, group or
    /// gshadow, so each is held to what useradd/groupadd accept; a field that could
    /// add a line or a field (newline, `:`) is an error naming it (`users[1].home`).
    fn validate_accounts(&self) -> Result<()> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, u) in self.users.iter().enumerate() {
            if let Some((field, why)) = user_problem(u) {
                bail!("users[{i}].{field}: {why}");
            }
            for (k, what) in [
                (format!("name {}", u.name), "name"),
                (format!("uid {}", u.uid), "uid"),
            ] {
                if let Some(j) = seen.insert(k, i) {
                    bail!("users[{i}].{what}: same {what} as users[{j}]");
                }
            }
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, g) in self.groups.iter().enumerate() {
            if let Some((field, why)) = group_problem(g) {
                bail!("groups[{i}].{field}: {why}");
            }
            for (k, what) in [
                (format!("name {}", g.name), "name"),
                (format!("gid {}", g.gid), "gid"),
            ] {
                if let Some(j) = seen.insert(k, i) {
                    bail!("groups[{i}].{what}: same {what} as groups[{j}]");
                }
            }
        }
        Ok(())
    }

    /// Identifies the recipe for the build cache and records: its text, plus the
    /// content of every `source` file (a changed source must not hit the cache).
    pub fn digest(&self) -> String {
        if self.sources.is_empty() {
            return crate::digest::sha256_digest(&self.source_bytes);
        }
        let mut all = self.source_bytes.clone();
        for (i, b) in &self.sources {
            all.extend_from_slice(
                format!("\0source {i} {}", crate::digest::sha256_digest(b)).as_bytes(),
            );
        }
        crate::digest::sha256_digest(&all)
    }
}

/// Refuses an integer `mode` not written in TOML octal. The toml crate hands
/// serde the same i64 for `755` and `0o755`, so this looks at the literal as
/// written: toml_edit (the parser toml itself uses) keeps every value's source
/// span, which is exact where scanning the text would be fooled by strings,
/// comments, inline tables and dotted keys. Every `mode` key in the schema is a
/// [`Mode`] (unknown keys are refused), so "a key named mode" is the rule.
fn refuse_decimal_modes(text: &str) -> Result<()> {
    let doc = toml_edit::ImDocument::parse(text).map_err(|e| anyhow!("{e}"))?;
    let mut bad = Vec::new();
    modes_in_table(doc.as_table(), "", text, &mut bad);
    match bad.into_iter().next() {
        None => Ok(()),
        Some((path, raw, start)) => {
            let line = text[..start].matches('\n').count() + 1;
            let plain = raw.replace('_', "");
            let hint = match plain.parse::<u32>() {
                Ok(v) if plain.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                    format!("{raw} is decimal (= 0o{v:o}); write mode = \"0{plain}\" or 0o{plain}")
                }
                Ok(v) => format!("{raw} is decimal (= 0o{v:o}); write mode = \"0755\" or 0o755"),
                Err(_) => format!("{raw} is not octal; write mode = \"0755\" or 0o755"),
            };
            bail!("line {line}: {path} = {raw}: an integer mode must be written in octal: {hint}")
        }
    }
}

type BadMode = (String, String, usize);

fn modes_in_table(t: &toml_edit::Table, path: &str, text: &str, bad: &mut Vec<BadMode>) {
    for (k, item) in t.iter() {
        let p = join_key(path, k);
        match item {
            toml_edit::Item::Table(t) => modes_in_table(t, &p, text, bad),
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    modes_in_table(t, &format!("{p}[{i}]"), text, bad);
                }
            }
            toml_edit::Item::Value(v) => modes_in_value(v, k, &p, text, bad),
            toml_edit::Item::None => {}
        }
    }
}

fn modes_in_value(v: &toml_edit::Value, key: &str, path: &str, text: &str, bad: &mut Vec<BadMode>) {
    match v {
        toml_edit::Value::Integer(f) if key == "mode" || key == "mkdir" => {
            // No span (never for a parsed document) fails closed.
            let raw = f.span().and_then(|s| Some((text.get(s.clone())?, s.start)));
            match raw {
                Some((raw, _)) if raw.starts_with("0o") => {}
                Some((raw, start)) => bad.push((path.to_string(), raw.to_string(), start)),
                None => bad.push((path.to_string(), f.value().to_string(), 0)),
            }
        }
        toml_edit::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                modes_in_value(v, "", &format!("{path}[{i}]"), text, bad);
            }
        }
        toml_edit::Value::InlineTable(t) => {
            for (k, v) in t.iter() {
                modes_in_value(v, k, &join_key(path, k), text, bad);
            }
        }
        _ => {}
    }
}

fn join_key(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// toml's message already carries line/column and the key path; make sure the line is stated.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {msg} (at `{snippet}`)")
        }
        None => msg,
    }
}

/// Why a recipe user can't be written as given: `(field, reason)`.
/// uid 0 is root's: only `name = "root"` may ask for it (anything else would be a
/// second, silently created root). (uid_t)-1 means "no change" to chown(2).
pub fn user_problem(u: &User) -> Option<(&'static str, String)> {
    if let Some(why) = crate::account_fields::name_problem(&u.name) {
        return Some(("name", why));
    }
    if u.uid == 0 && u.name != "root" {
        return Some((
            "uid",
            format!(
                "uid 0 is root's; {:?} would be a second root (only name = \"root\" may use uid 0)",
                u.name
            ),
        ));
    }
    if u.uid == u32::MAX {
        return Some(("uid", "4294967295 is (uid_t)-1, not a usable id".into()));
    }
    if u.gid == u32::MAX {
        return Some(("gid", "4294967295 is (gid_t)-1, not a usable id".into()));
    }
    if let Some(why) = crate::account_fields::text_problem(&u.gecos) {
        return Some(("gecos", why));
    }
    if let Some(why) = crate::account_fields::path_problem(&u.home) {
        return Some(("home", why));
    }
    if let Some(why) = crate::account_fields::path_problem(&u.shell) {
        return Some(("shell", why));
    }
    None
}

/// Why a recipe group can't be written as given: `(field, reason)`. gid 0 is the
/// root group's, for the same reason as uid 0.
pub fn group_problem(g: &Group) -> Option<(String, String)> {
    if let Some(why) = crate::account_fields::name_problem(&g.name) {
        return Some(("name".into(), why));
    }
    if g.gid == 0 && g.name != "root" {
        return Some((
            "gid".into(),
            format!(
                "gid 0 is the root group's; {:?} would be a second root group (only name = \"root\" may use gid 0)",
                g.name
            ),
        ));
    }
    if g.gid == u32::MAX {
        return Some((
            "gid".into(),
            "4294967295 is (gid_t)-1, not a usable id".into(),
        ));
    }
    for (j, m) in g.members.iter().enumerate() {
        if let Some(why) = crate::account_fields::name_problem(m) {
            return Some((format!("members[{j}]"), why));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_recipe_parses() {
        let r = Recipe::load(None).unwrap();
        assert!(r.packages.purge.iter().any(|p| p == "gcc"));
        assert!(r.users.iter().any(|u| u.name == "sandbox" && u.uid == 998));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = Recipe::parse(
            b"[image]\nuser = \"x\"\nentrypiont = [\"/x\"]\n",
            "r.toml",
            Path::new("."),
        )
        .unwrap_err();
        let s = format!("{err:#}");
        assert!(
            s.contains("r.toml") && s.contains("line 3") && s.contains("entrypiont"),
            "{s}"
        );
    }

    #[test]
    fn wrong_type_and_bad_mode() {
        let err = Recipe::parse(
            b"[packages]\nautoremove = \"yes\"\n",
            "r.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = Recipe::parse(
            b"[[fs]]\nop = \"dir\"\npath = \"/x\"\nmode = \"0999\"\n",
            "r.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("octal"), "{err:#}");
        let ok = Recipe::parse(
            b"[[fs]]\nop = \"dir\"\npath = \"/x\"\nmode = 0o2770\n",
            "r.toml",
            Path::new("."),
        )
        .unwrap();
        assert!(matches!(
            ok.fs[0],
            FsOp::Dir {
                mode: Some(Mode(0o2770)),
                ..
            }
        ));
    }

    fn err(text: &str) -> String {
        format!("{:#}", Recipe::from_str(text, "r.toml").unwrap_err())
    }

    const USER: &str = "[[groups]]\nname='sandbox'\ngid=998\n[[users]]\nname='sandbox'\nuid=998\ngid=998\nhome='/sandbox'\nshell='/bin/bash'\n";

    /// Issue 12 #8: a newline or ':' in any account field added lines to
    /// /etc/passwd (a passwordless uid-0 account) or fields to a line.
    #[test]
    fn account_fields_that_could_inject_lines_are_refused() {
        let bad: &[(&str, &str, &str)] = &[
            (
                "home=\"/x\\nevil::0:0::/root:/bin/sh\"",
                "users[1].home",
                "newline",
            ),
            ("gecos='a:b'", "users[1].gecos", "':'"),
            ("gecos=\"a\\u0000b\"", "users[1].gecos", "control character"),
            ("shell='/bin/sh:x'", "users[1].shell", "':'"),
            ("shell='bin/sh'", "users[1].shell", "absolute path"),
            ("home='relative'", "users[1].home", "absolute path"),
        ];
        for (field, want_field, want_why) in bad {
            let text = format!(
                "{USER}[[users]]\nname='x'\nuid=1000\ngid=998\nhome='/h'\nshell='/bin/sh'\n{field}\n"
            )
            .replace("home='/h'\n", if field.starts_with("home") { "" } else { "home='/h'\n" })
            .replace(
                "shell='/bin/sh'\n",
                if field.starts_with("shell") { "" } else { "shell='/bin/sh'\n" },
            );
            let e = err(&text);
            assert!(
                e.contains(want_field) && e.contains(want_why),
                "{field}: {e}"
            );
        }
        for (name, why) in [
            ("evil\\nroot", "not a valid name"),
            ("a:b", "not a valid name"),
            ("Root", "not a valid name"),
            ("1000", "not a valid name"),
            ("-x", "not a valid name"),
            ("", "must not be empty"),
            ("abcdefghijklmnopqrstuvwxyz0123456", "longer than 32 bytes"),
        ] {
            let e = err(&format!(
                "[[users]]\nname=\"{name}\"\nuid=1000\ngid=998\nhome='/h'\nshell='/bin/sh'\n"
            ));
            assert!(
                e.contains("users[0].name") && e.contains(why),
                "{name}: {e}"
            );
            let e = err(&format!("[[groups]]\nname=\"{name}\"\ngid=1000\n"));
            assert!(
                e.contains("groups[0].name") && e.contains(why),
                "{name}: {e}"
            );
        }
        let e = err("[[groups]]\nname='g'\ngid=5\nmembers=['ok', 'a,b']\n");
        assert!(
            e.contains("groups[0].members[1]") && e.contains("not a valid name"),
            "{e}"
        );
        let e = err("[[groups]]\nname='g'\ngid=5\nmembers=[\"x\\nroot::0:\"]\n");
        assert!(e.contains("groups[0].members[0]"), "{e}");
        // What useradd accepts is accepted.
        Recipe::from_str(
            "[[groups]]\nname='_svc-1'\ngid=5\nmembers=['host$', 'a_b']\n[[users]]\nname='host$'\nuid=7\ngid=5\nhome='/var/lib/x y'\nshell='/usr/sbin/nologin'\ngecos='Svc User,,,'\n",
            "r.toml",
        )
        .unwrap();
    }

    #[test]
    fn second_root_and_duplicate_ids_are_refused() {
        let e = err("[[users]]\nname='toor'\nuid=0\ngid=0\nhome='/'\nshell='/bin/sh'\n");
        assert!(
            e.contains("users[0].uid") && e.contains("second root"),
            "{e}"
        );
        let e = err("[[groups]]\nname='wheel'\ngid=0\n");
        assert!(
            e.contains("groups[0].gid") && e.contains("second root group"),
            "{e}"
        );
        let e = err("[[users]]\nname='x'\nuid=4294967295\ngid=1\nhome='/'\nshell='/bin/sh'\n");
        assert!(e.contains("users[0].uid") && e.contains("(uid_t)-1"), "{e}");
        let e = err(&format!(
            "{USER}[[users]]\nname='other'\nuid=998\ngid=998\nhome='/'\nshell='/bin/sh'\n"
        ));
        assert!(e.contains("users[1].uid: same uid as users[0]"), "{e}");
        let e = err("[[groups]]\nname='a'\ngid=5\n[[groups]]\nname='a'\ngid=6\n");
        assert!(e.contains("groups[1].name: same name as groups[0]"), "{e}");
        // Root itself may be declared (e.g. to set its shell); it stays uid 0.
        Recipe::from_str(
            "[[groups]]\nname='root'\ngid=0\n[[users]]\nname='root'\nuid=0\ngid=0\nhome='/root'\nshell='/bin/bash'\n",
            "r.toml",
        )
        .unwrap();
    }

    /// A recipe dir `r/` with `files/motd`, a secret next to it and links.
    fn recipe_tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("r");
        std::fs::create_dir_all(r.join("files")).unwrap();
        std::fs::write(r.join("files/motd"), b"hello\n").unwrap();
        std::fs::write(t.path().join("secret"), b"host secret\n").unwrap();
        std::os::unix::fs::symlink("../../secret", r.join("files/out")).unwrap();
        std::os::unix::fs::symlink("motd", r.join("files/alias")).unwrap();
        std::os::unix::fs::symlink(t.path(), r.join("up")).unwrap();
        (t, r)
    }

    fn with_source(src: &str) -> String {
        format!("[[fs]]\nop='file'\npath='/etc/motd'\nsource={src:?}\n")
    }

    /// Issue 12 #9: `source` read any host file (`../..`, absolute, via symlinks).
    #[test]
    fn source_is_confined_to_the_recipe_directory() {
        let (_t, r) = recipe_tree();
        for (src, why) in [
            ("../secret", "outside the recipe's directory"),
            ("files/../../secret", "outside the recipe's directory"),
            ("files/out", "outside the recipe's directory"),
            ("up/secret", "outside the recipe's directory"),
            (
                "/etc/shadow",
                "must be a path relative to the recipe's directory",
            ),
            ("files/missing", "cannot resolve"),
            ("files", "not a regular file"),
        ] {
            let e = Recipe::parse(with_source(src).as_bytes(), "r.toml", &r).unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains(&format!("fs[0].source = {src:?}")) && e.contains(why),
                "{src}: {e}"
            );
        }
        for src in ["files/motd", "files/alias", "./files/../files/motd"] {
            let recipe = Recipe::parse(with_source(src).as_bytes(), "r.toml", &r).unwrap();
            let mut fs = crate::rootfs::Rootfs::new();
            crate::steps::fsops::apply(&mut fs, &recipe).unwrap();
            assert_eq!(fs.read("etc/motd").unwrap(), b"hello\n", "{src}");
        }
    }

    /// Without a directory (the fuzz entry point, built-in recipes) nothing is read.
    #[test]
    fn from_str_reads_no_source() {
        let recipe = Recipe::from_str(&with_source("files/motd"), "r.toml").unwrap();
        let err =
            crate::steps::fsops::apply(&mut crate::rootfs::Rootfs::new(), &recipe).unwrap_err();
        assert!(
            format!("{err:#}").contains("fs[0].source = \"files/motd\" was not read"),
            "{err:#}"
        );
    }

    /// The build cache keys on the recipe digest: a changed source file must change it.
    #[test]
    fn digest_covers_source_files() {
        let (_t, r) = recipe_tree();
        let text = with_source("files/motd");
        let d1 = Recipe::parse(text.as_bytes(), "r.toml", &r)
            .unwrap()
            .digest();
        std::fs::write(r.join("files/motd"), b"changed\n").unwrap();
        let d2 = Recipe::parse(text.as_bytes(), "r.toml", &r)
            .unwrap()
            .digest();
        assert_ne!(d1, d2);
        // Recipes without sources keep their plain text digest.
        let plain = Recipe::from_str("name = 'x'\n", "r.toml").unwrap();
        assert_eq!(
            plain.digest(),
            crate::digest::sha256_digest(b"name = 'x'\n")
        );
    }

    /// Issue 12 #10: `mode = 755` became 0o1363 and `2541` setuid 04755.
    /// A policy the init would refuse at container start fails the recipe load.
    #[test]
    fn landlock_policy_is_checked_with_the_inits_rules() {
        let l = "[landlock]\npath = '/etc/l.json'\n";
        let e = err(&format!("{l}compatibility = 'hard'\n"));
        assert!(
            e.contains("[landlock] compatibility = \"hard\": expected one of best_effort"),
            "{e}"
        );
        let e = err(&format!("{l}read_only = ['usr']\n"));
        assert!(
            e.contains("[landlock] read_only: entries must be absolute"),
            "{e}"
        );
        let e = err(&format!("{l}read_write = ['/ok', 'tmp']\n"));
        assert!(e.contains("[landlock] read_write"), "{e}");
    }

    #[test]
    fn decimal_integer_modes_are_refused() {
        let e = err("[[fs]]\nop = 'dir'\npath = '/x'\nmode = 755\n");
        assert!(
            e.contains("line 4: fs[0].mode = 755")
                && e.contains("(= 0o1363)")
                && e.contains("write mode = \"0755\" or 0o755"),
            "{e}"
        );
        let e = err("[[fs]]\nop='dir'\npath='/a'\n[[fs]]\nop = 'file'\npath = '/x'\ncontent = ''\nmode = 2541\n");
        assert!(
            e.contains("fs[1].mode = 2541") && e.contains("(= 0o4755)"),
            "{e}"
        );
        let e = err("[[checks]]\npath = '/x'\nmode = 644\n");
        assert!(e.contains("checks[0].mode = 644"), "{e}");
        let e = err("fs = [{ op = 'dir', path = '/x', mode = 700 }]\n");
        assert!(e.contains("fs[0].mode = 700"), "{e}");
        let e = err("[[fs]]\nop = 'dir'\npath = '/x'\nmode = 0x1ed\n");
        assert!(
            e.contains("fs[0].mode = 0x1ed") && e.contains("not octal; write mode = \"0755\""),
            "{e}"
        );
        let e = err("[[fs]]\nop = 'dir'\npath = '/x'\nmode = 999\n");
        assert!(
            e.contains("999 is decimal (= 0o1747); write mode = \"0755\""),
            "{e}"
        );
        for bad in ["'+755'", "'0o0o755'", "' 755'", "'7_55'", "''", "'0x1ed'"] {
            let e = err(&format!("[[fs]]\nop = 'dir'\npath = '/x'\nmode = {bad}\n"));
            assert!(e.contains("is not an octal number"), "{bad}: {e}");
        }
        for (ok, want) in [
            ("0o755", 0o755),
            ("'0755'", 0o755),
            ("'2770'", 0o2770),
            ("'0o4755'", 0o4755),
            ("0o0", 0),
        ] {
            let r = Recipe::from_str(
                &format!("[[fs]]\nop = 'dir'\npath = '/x'\nmode = {ok}\n"),
                "r.toml",
            )
            .unwrap();
            assert!(
                matches!(r.fs[0], FsOp::Dir { mode: Some(Mode(m)), .. } if m == want),
                "{ok}"
            );
        }
        // A label or env value named "mode" is a string, not a Mode.
        Recipe::from_str("[image.labels]\nmode = '755'\n", "r.toml").unwrap();
    }

    /// `{triplet}`/`{arch}` fill in per architecture; the shipped recipe purges the
    /// binutils of the image's own architecture.
    #[test]
    fn package_placeholders_follow_the_architecture() {
        use crate::platform::Arch;
        let r = Recipe::load(None).unwrap();
        let arm = r.packages.for_arch(Arch::Arm64);
        assert!(
            arm.purge.iter().any(|p| p == "binutils-aarch64-linux-gnu"),
            "{:?}",
            arm.purge
        );
        let amd = r.packages.for_arch(Arch::Amd64);
        assert!(
            amd.purge.iter().any(|p| p == "binutils-x86-64-linux-gnu"),
            "{:?}",
            amd.purge
        );
        let p: Packages = toml::from_str("keep = ['libc6-{arch}-cross']").unwrap();
        assert_eq!(p.for_arch(Arch::Arm64).keep, ["libc6-arm64-cross"]);
    }

    #[test]
    fn package_names_are_checked_at_load() {
        for (bad, field) in [("gcc {version}", "purge[0]"), ("Gcc", "purge[0]")] {
            let text = format!("[packages]\npurge = ['{bad}']\n");
            let e = Recipe::from_str(&text, "t.toml").unwrap_err();
            assert!(format!("{e:#}").contains(field), "{e:#}");
        }
        let e = Recipe::from_str("[packages]\nkeep = ['jq', 'x{tripl}']\n", "t.toml").unwrap_err();
        assert!(format!("{e:#}").contains("keep[1]"), "{e:#}");
        Recipe::from_str(
            "[packages]\npurge = ['binutils-{triplet}', 'g++-12']\n",
            "t.toml",
        )
        .unwrap();
    }
}
