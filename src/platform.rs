//! Platforms an image is built for (`linux/amd64`, `linux/arm64`): the names each
//! world uses for one architecture (OCI/Debian `arm64`, GNU `aarch64-linux-gnu`,
//! ELF machine 183), so the build picks the right init, fills recipe placeholders
//! and checks that a base's binaries are of the architecture it claims (issue 13).
use anyhow::{anyhow, bail, Result};
use std::fmt;

/// ELF `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// ELF `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 183;

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

/// Bytes of a file's head needed to read its ELF machine.
pub const ELF_HEAD: usize = 20;

/// The ELF `e_machine` of a file starting with `head` (at least [`ELF_HEAD`] bytes
/// for an answer): None when it is not ELF or too short.
pub fn elf_machine(head: &[u8]) -> Option<u16> {
    if head.len() < ELF_HEAD || !head.starts_with(b"\x7fELF") {
        return None;
    }
    let b = [head[18], head[19]];
    Some(match head[5] {
        2 => u16::from_be_bytes(b),
        _ => u16::from_le_bytes(b),
    })
}

/// A machine number for messages: `aarch64 (EM 183)`.
pub fn machine_name(m: u16) -> String {
    match Arch::from_elf_machine(m) {
        Some(a) => format!("{} (ELF machine {m})", a.gnu_triplet()),
        None => format!("ELF machine {m}"),
    }
}

/// The init embedded for `arch`, and the Rust target it was built for.
pub fn embedded_init(arch: Arch) -> Result<(&'static [u8], &'static str)> {
    match arch {
        Arch::Amd64 => Ok((crate::steps::INIT_BINARY, crate::steps::INIT_TARGET)),
        #[cfg(nemoclaw_init_aarch64)]
        Arch::Arm64 => Ok((INIT_AARCH64, env!("NEMOCLAW_INIT_AARCH64_TARGET"))),
        #[cfg(not(nemoclaw_init_aarch64))]
        Arch::Arm64 => bail!(
            "this nemoclaw-build was compiled without the aarch64 init (rustup target \
             aarch64-unknown-linux-musl missing): run scripts/setup.sh and rebuild it"
        ),
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
    if let Some(p) = asked.filter(|p| p.arch != arch) {
        bail!(
            "base {base} is linux/{declared} (config architecture), but platform {p} was asked for"
        );
    }
    Ok(arch)
}

/// The base's `/bin/sh` (symlinks followed inside the image) must be an ELF of the
/// image's architecture: a mismatch means the config lies (an arm64 rootfs given as
/// amd64), and the image would not run. No ELF there (a fixture, a script): no say.
pub fn check_rootfs_arch(fs: &crate::rootfs::Rootfs, arch: Arch, base: &str) -> Result<()> {
    let Some(path) = fs.resolve("bin/sh") else {
        return Ok(());
    };
    let m = fs
        .nodes
        .get(path.as_str())
        .map(|n| n.machine)
        .filter(|&m| m != 0);
    match m {
        Some(m) if m != arch.elf_machine() => bail!(
            "base {base}: /bin/sh (/{path}) is {}, but the image architecture is {} ({}): \
             give the platform that matches the base",
            machine_name(m),
            arch.name(),
            machine_name(arch.elf_machine())
        ),
        _ => Ok(()),
    }
}

/// Artifacts built for another machine: a native addon (`*.node`) of a foreign
/// machine cannot load and is an error naming it; any other foreign ELF file is
/// returned as a warning each.
pub fn check_artifacts_arch(fs: &crate::rootfs::Rootfs, arch: Arch) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (k, n) in fs.nodes.iter().filter(|(_, n)| n.modified) {
        if n.machine == 0 || n.machine == arch.elf_machine() {
            continue;
        }
        if k.ends_with(".node") {
            bail!(
                "artifacts: native addon /{k} is {}, but the image is {}: build the artifacts for linux/{}",
                machine_name(n.machine),
                arch.name(),
                arch.name()
            );
        }
        warnings.push(format!(
            "artifacts: /{k} is {}, not {} like the image",
            machine_name(n.machine),
            machine_name(arch.elf_machine())
        ));
    }
    Ok(warnings)
}

#[cfg(nemoclaw_init_aarch64)]
static INIT_AARCH64: &[u8] = include_bytes!(env!("NEMOCLAW_INIT_AARCH64_PATH"));

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

    fn elf_of(m: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&m.to_le_bytes());
        h
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

    /// The /bin/sh check follows the symlink (usrmerge: bin -> usr/bin, sh -> dash).
    #[test]
    fn rootfs_arch_is_checked_through_bin_sh() {
        use crate::rootfs::{Node, Rootfs};
        let mut fs = Rootfs::new();
        fs.insert("bin", Node::symlink("usr/bin")).unwrap();
        fs.insert("usr/bin/sh", Node::symlink("dash")).unwrap();
        fs.insert("usr/bin/dash", Node::file(0o755, 0, 0, elf_of(EM_AARCH64)))
            .unwrap();
        check_rootfs_arch(&fs, Arch::Arm64, "b").unwrap();
        let e = check_rootfs_arch(&fs, Arch::Amd64, "tar:arm.tar")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/usr/bin/dash")
                && e.contains("aarch64-linux-gnu (ELF machine 183)")
                && e.contains("amd64")
                && e.contains("tar:arm.tar"),
            "{e}"
        );
        // A script or a fixture is no evidence either way.
        fs.write("usr/bin/dash", b"#!/bin/true\n".to_vec()).unwrap();
        check_rootfs_arch(&fs, Arch::Amd64, "b").unwrap();
    }

    #[test]
    fn foreign_artifacts_addons_fail_and_other_elf_warn() {
        use crate::rootfs::{Node, Rootfs};
        let mut fs = Rootfs::new();
        fs.insert("app/ok.node", Node::file(0o644, 0, 0, elf_of(EM_AARCH64)))
            .unwrap();
        fs.insert("app/tool", Node::file(0o755, 0, 0, elf_of(EM_X86_64)))
            .unwrap();
        let w = check_artifacts_arch(&fs, Arch::Arm64).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("/app/tool"), "{w:?}");
        let e = check_artifacts_arch(&fs, Arch::Amd64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/app/ok.node") && e.contains("183"), "{e}");
    }

    #[test]
    fn elf_machine_reads_both_byte_orders() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[5] = 1;
        h[18] = 183;
        assert_eq!(elf_machine(&h), Some(EM_AARCH64));
        h[5] = 2;
        h[18] = 0;
        h[19] = 62;
        assert_eq!(elf_machine(&h), Some(EM_X86_64));
        assert_eq!(elf_machine(&h[..19]), None);
        assert_eq!(elf_machine(b"#!/bin/sh\n\0\0\0\0\0\0\0\0\0\0\0"), None);
        assert_eq!(machine_name(183), "aarch64-linux-gnu (ELF machine 183)");
    }
}
