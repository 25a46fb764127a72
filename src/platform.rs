//! Platforms an image is built for (`linux/amd64`, `linux/arm64`): the names each
//! world uses for one architecture (OCI/Debian `arm64`, GNU `aarch64-linux-gnu`,
//! ELF machine 183), so the build picks the right init, fills recipe placeholders
//! and checks that a base's binaries are of the architecture it claims (issue 13;
//! those checks run on the rootfs model in `steps::arch`). A leaf module.
use crate::elf::{EM_AARCH64, EM_X86_64};
use anyhow::{anyhow, bail, Result};
use std::fmt;

/// An architecture this tool can build images for (it embeds an init for each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    #[default]
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// From an OCI/Debian architecture name (`amd64`, `arm64`).
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }
    /// The OCI (and Debian) architecture name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// The GNU triplet as Debian writes it in package names
    /// (`binutils-x86-64-linux-gnu`, `binutils-aarch64-linux-gnu`).
    pub fn package_triplet(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86-64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }
    /// The GNU triplet as it prefixes tool names (`aarch64-linux-gnu-gcc-12`).
    pub fn gnu_triplet(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => EM_X86_64,
            Arch::Arm64 => EM_AARCH64,
        }
    }
    pub fn from_elf_machine(m: u16) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.elf_machine() == m)
    }
    /// From a Rust target triple (`aarch64-unknown-linux-musl`), as build records
    /// name the init's target.
    pub fn from_rust_target(target: &str) -> Option<Arch> {
        match target.split('-').next()? {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

/// `os/architecture[/variant]` as image indexes write it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub arch: Arch,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `linux/arm64` or `linux/arm64/v8`; only architectures with an init.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts[..] {
            [os, arch] => (os, arch, None),
            [os, arch, v] if !v.is_empty() => (os, arch, Some(v.to_string())),
            _ => bail!("platform '{s}': expected OS/ARCH[/VARIANT], e.g. linux/arm64"),
        };
        if os != "linux" {
            bail!("platform '{s}': only linux images can be built");
        }
        let arch = Arch::from_name(arch).ok_or_else(|| {
            anyhow!("platform '{s}': architecture '{arch}' is not supported (supported: linux/amd64, linux/arm64)")
        })?;
        Ok(Platform {
            os: os.into(),
            arch,
            variant,
        })
    }
    pub fn linux(arch: Arch) -> Platform {
        Platform {
            os: "linux".into(),
            arch,
            variant: None,
        }
    }
    /// The variant as containerd's `platforms.Normalize` reads it: `arm64/v8` is
    /// plain arm64 and `amd64/v1` plain amd64 (the baseline of each architecture).
    pub fn normalized_variant(&self) -> Option<&str> {
        normalized_variant(self.arch.name(), self.variant.as_deref())
    }
    /// Whether `self` and `other` name one platform, as containerd's matcher decides:
    /// `linux/arm64` and `linux/arm64/v8` do, `linux/arm64/v8` and `linux/arm64/v9` not.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.arch == other.arch
            && self.normalized_variant() == other.normalized_variant()
    }
    /// The index descriptor's `platform` object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"architecture": self.arch.name(), "os": self.os});
        if let Some(var) = &self.variant {
            v["variant"] = serde_json::Value::String(var.clone());
        }
        v
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch.name())?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `os/arch[/variant]` of any image (also of architectures we do not build for):
/// the one spelling of a platform in messages, records and attestations.
pub fn platform_name(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// containerd's variant normalization on names of any architecture (see
/// [`Platform::normalized_variant`]); an empty variant is none.
pub fn normalized_variant<'a>(arch: &str, variant: Option<&'a str>) -> Option<&'a str> {
    match (arch, variant) {
        ("arm64" | "aarch64", Some("8" | "v8" | "v8.0")) => None,
        ("amd64" | "x86_64" | "x86-64", Some("v1")) => None,
        (_, v) => v.filter(|v| !v.is_empty()),
    }
}

/// The platform an image index lists an image under: its config's `os`,
/// `architecture` and `variant`, the variant kept as written (as `docker buildx
/// imagetools create` and `crane index append` do). The one-run multi-platform
/// build and the fan-out `index` both take it from here, so one image gets one
/// index entry whichever way its index was made.
pub fn index_platform(config: &serde_json::Value, what: &str) -> Result<Platform> {
    let field = |k: &str| config.get(k).and_then(|v| v.as_str());
    let name = platform_name(
        field("os").unwrap_or_default(),
        field("architecture").unwrap_or_default(),
        field("variant").filter(|v| !v.is_empty()),
    );
    Platform::parse(&name).map_err(|e| anyhow!("{what} declares platform {name}: {e}"))
}

/// The host's architecture as OCI names it (the default platform).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A machine number for messages: `aarch64 (EM 183)`.
pub fn machine_name(m: u16) -> String {
    match Arch::from_elf_machine(m) {
        Some(a) => format!("{} (ELF machine {m})", a.gnu_triplet()),
        None => format!("ELF machine {m}"),
    }
}

/// The architecture of the image built from a base with `config`: the config's
/// `architecture`, which must agree with the platform asked for (if any).
pub fn image_arch(config: &serde_json::Value, asked: Option<&str>, base: &str) -> Result<Arch> {
    let asked = asked.map(Platform::parse).transpose()?;
    let declared = config.get("architecture").and_then(|v| v.as_str());
    let Some(declared) = declared else {
        return Ok(asked.map_or(Arch::Amd64, |p| p.arch));
    };
    let arch = Arch::from_name(declared).ok_or_else(|| {
        anyhow!("base {base}: config architecture '{declared}' is not supported (supported: amd64, arm64)")
    })?;
    if let Some(p) = asked.as_ref().filter(|p| p.arch != arch) {
        bail!(
            "base {base} is linux/{declared} (config architecture), but platform {p} was asked for"
        );
    }
    // A variant counts when both name one (the image keeps the config's).
    let variant = config.get("variant").and_then(|v| v.as_str());
    if let (Some(p), Some(v)) = (asked.as_ref().filter(|p| p.variant.is_some()), variant) {
        if normalized_variant(declared, Some(v)) != p.normalized_variant() {
            bail!("base {base} is linux/{declared}/{v} (config variant), but platform {p} was asked for");
        }
    }
    Ok(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.arch, Arch::Arm64);
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            p.to_json(),
            serde_json::json!({"architecture":"arm64","os":"linux","variant":"v8"})
        );
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in ["linux", "linux/s390x", "windows/amd64", "linux/arm64/"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_arch_comes_from_the_config_and_must_match_the_platform() {
        let c = serde_json::json!({"architecture": "arm64", "os": "linux"});
        assert_eq!(image_arch(&c, None, "b").unwrap(), Arch::Arm64);
        assert_eq!(
            image_arch(&c, Some("linux/arm64/v8"), "b").unwrap(),
            Arch::Arm64
        );
        let e = image_arch(&c, Some("linux/amd64"), "tar:b.tar")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tar:b.tar is linux/arm64") && e.contains("linux/amd64"),
            "{e}"
        );
        let e = image_arch(&serde_json::json!({"architecture": "s390x"}), None, "b").unwrap_err();
        assert!(e.to_string().contains("'s390x'"), "{e}");
    }

    /// containerd's matcher: the baseline variant of an architecture is the
    /// architecture; other variants differ.
    #[test]
    fn variants_match_as_containerd_normalizes_them() {
        let p = |s: &str| Platform::parse(s).unwrap();
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/amd64/v1").matches(&p("linux/amd64")));
        assert!(!p("linux/arm64/v8").matches(&p("linux/arm64/v9")));
        assert!(!p("linux/amd64/v2").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert_eq!(normalized_variant("aarch64", Some("8")), None);
        assert_eq!(normalized_variant("arm", Some("v7")), Some("v7"));
    }

    /// The index platform is the config's, variant kept; a config of an
    /// unsupported platform is refused naming it.
    #[test]
    fn index_platform_keeps_the_config_variant() {
        let c = serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
        assert_eq!(
            index_platform(&c, "config x").unwrap().to_string(),
            "linux/arm64/v8"
        );
        let c = serde_json::json!({"architecture": "amd64", "os": "linux", "variant": ""});
        assert_eq!(
            index_platform(&c, "config x").unwrap().to_string(),
            "linux/amd64"
        );
        let e = index_platform(
            &serde_json::json!({"architecture": "s390x", "os": "linux"}),
            "config x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("config x declares platform linux/s390x"), "{e}");
        // A variant asked for must be the config's (v8 and none are one).
        let c = serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
        assert_eq!(
            image_arch(&c, Some("linux/arm64"), "b").unwrap(),
            Arch::Arm64
        );
        let e = image_arch(&c, Some("linux/arm64/v9"), "b")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux/arm64/v8 (config variant)") && e.contains("linux/arm64/v9"),
            "{e}"
        );
    }

    #[test]
    fn machine_names_name_the_triplet() {
        assert_eq!(machine_name(183), "aarch64-linux-gnu (ELF machine 183)");
    }
}
