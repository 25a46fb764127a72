//! Architecture checks on the rootfs model (issue 13): the base's `/bin/sh` must
//! be of the image's architecture, and artifacts of another machine are named. The
//! machine of each file is read once, as the model streams it (`Node::machine`).
use crate::platform::{machine_name, Arch};
use crate::rootfs::Rootfs;
use anyhow::{bail, Result};

/// The base's `/bin/sh` (symlinks followed inside the image) must be an ELF of the
/// image's architecture: a mismatch means the config lies (an arm64 rootfs given as
/// amd64), and the image would not run. No ELF there (a fixture, a script): no say.
pub fn check_rootfs_arch(fs: &Rootfs, arch: Arch, base: &str) -> Result<()> {
    let Some(path) = fs.resolve("bin/sh") else {
        return Ok(());
    };
    let m = fs
        .nodes
        .get(path.as_str())
        .map(|n| n.machine())
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
pub fn check_artifacts_arch(fs: &Rootfs, arch: Arch) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (k, n) in fs.nodes.iter().filter(|(_, n)| n.modified) {
        if n.machine() == 0 || n.machine() == arch.elf_machine() {
            continue;
        }
        if k.ends_with(".node") {
            bail!(
                "artifacts: native addon /{k} is {}, but the image is {}: build the artifacts for linux/{}",
                machine_name(n.machine()),
                arch.name(),
                arch.name()
            );
        }
        warnings.push(format!(
            "artifacts: /{k} is {}, not {} like the image",
            machine_name(n.machine()),
            machine_name(arch.elf_machine())
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::{EM_AARCH64, EM_X86_64};
    use crate::rootfs::Node;

    fn elf_of(m: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&m.to_le_bytes());
        h
    }

    /// The /bin/sh check follows the symlink (usrmerge: bin -> usr/bin, sh -> dash).
    #[test]
    fn rootfs_arch_is_checked_through_bin_sh() {
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
        let mut fs = Rootfs::new();
        fs.insert("app/ok.node", Node::file(0o644, 0, 0, elf_of(EM_AARCH64)))
            .unwrap();
        fs.insert("app/tool", Node::file(0o755, 0, 0, elf_of(EM_X86_64)))
            .unwrap();
        // Not an ELF: no machine, no warning.
        fs.insert(
            "app/run.sh",
            Node::file(0o755, 0, 0, b"#!/bin/sh\n".to_vec()),
        )
        .unwrap();
        let w = check_artifacts_arch(&fs, Arch::Arm64).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("/app/tool"), "{w:?}");
        let e = check_artifacts_arch(&fs, Arch::Amd64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/app/ok.node") && e.contains("183"), "{e}");
    }
}
