//! The declarative recipe (TOML). Everything NemoClaw-specific lives in
//! `recipes/nemoclaw-sandbox.toml`; this module only knows generic operations.
//! Unknown keys and wrong types are errors naming the file, line and key.
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File mode written as an octal string ("2770") or a TOML octal integer (0o2770).
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
            Raw::S(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
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
    #[serde(skip)]
    pub source_dir: PathBuf,
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
    /// Write a file from inline `content` or from `source` (relative to the recipe).
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

impl Recipe {
    pub fn load(path: Option<&Path>) -> Result<Recipe> {
        match path {
            Some(p) => {
                let bytes = std::fs::read(p)
                    .with_context(|| format!("cannot read recipe {}", p.display()))?;
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
                Recipe::parse(&bytes, &p.display().to_string(), &dir)
            }
            None => Recipe::parse(
                DEFAULT_RECIPE.as_bytes(),
                "recipes/nemoclaw-sandbox.toml (built in)",
                Path::new("recipes"),
            ),
        }
    }

    pub fn parse(bytes: &[u8], name: &str, dir: &Path) -> Result<Recipe> {
        let text = std::str::from_utf8(bytes).map_err(|_| anyhow!("{name}: not UTF-8"))?;
        let mut r: Recipe = toml::from_str(text)
            .map_err(|e| anyhow!("{name}: {}", describe_toml_error(text, &e)))?;
        r.source_dir = dir.to_path_buf();
        r.source_bytes = bytes.to_vec();
        r.source_name = name.to_string();
        r.validate()
            .with_context(|| format!("{name}: invalid recipe"))?;
        Ok(r)
    }

    fn validate(&self) -> Result<()> {
        for op in &self.fs {
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
            }
        }
        if let Some(init) = &self.init {
            self.init_spec(init)?;
        }
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
                && crate::rootfs::normalize(&e.value)
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

    pub fn digest(&self) -> String {
        crate::digest::sha256_digest(&self.source_bytes)
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
}
