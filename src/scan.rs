//! The hardening scan shared by `build` (as a gate) and `audit` (as findings):
//! forbidden commands on PATH, toolchain ELF files anywhere, required commands.
//! It looks at the files themselves, independent of the package database, so a
//! compiler that some package (or none) left behind is still caught.
use crate::recipe::Packages;
use crate::rootfs::{Kind, Rootfs};
use anyhow::Result;
use regex_lite::Regex;

pub const PATH_DIRS: [&str; 6] = [
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
];

#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    /// Path as seen by a user (`/usr/bin/gcc`).
    pub path: String,
    /// The rule that matched (`command gcc`, `elf toolchain`).
    pub rule: String,
    /// Where the bytes really are, when different (symlink target).
    pub target: Option<String>,
}

fn command_regex(cmd: &str) -> Result<Regex> {
    // gcc, gcc-12, x86_64-linux-gnu-gcc, x86_64-linux-gnu-gcc-12, ...
    Ok(Regex::new(&format!(
        r"^(?:[A-Za-z0-9_]+-linux-[A-Za-z0-9_]+-)?{}(?:-[0-9][0-9.]*)?$",
        regex_lite::escape(cmd)
    ))?)
}

/// Forbidden commands on PATH directories (resolving to an existing file) and
/// forbidden ELF basenames anywhere.
pub fn forbidden(fs: &Rootfs, p: &Packages) -> Result<Vec<Hit>> {
    let mut hits = Vec::new();
    let cmds: Vec<(String, Regex)> = p
        .forbid
        .iter()
        .map(|c| Ok((c.clone(), command_regex(c)?)))
        .collect::<Result<_>>()?;
    let mut seen_dirs = std::collections::BTreeSet::new();
    for d in PATH_DIRS {
        let Some(real) = fs.resolve(d) else { continue };
        if !seen_dirs.insert(real.clone()) {
            continue; // /bin -> usr/bin: scan once
        }
        for (path, node) in fs.descendants(&real) {
            let rest = &path[real.len() + 1..];
            if rest.contains('/') {
                continue;
            }
            for (c, re) in &cmds {
                if re.is_match(rest) {
                    let resolved = fs.resolve(path);
                    let target = resolved
                        .as_deref()
                        .and_then(|r| fs.nodes.get(r).map(|n| (r, n)));
                    match (node.kind(), target) {
                        (Kind::Symlink, Some((r, t))) if t.kind() == Kind::File => hits.push(Hit {
                            path: format!("/{path}"),
                            rule: format!("command {c}"),
                            target: Some(format!("/{r}")),
                        }),
                        (Kind::Symlink, _) => {}
                        _ => hits.push(Hit {
                            path: format!("/{path}"),
                            rule: format!("command {c}"),
                            target: None,
                        }),
                    }
                }
            }
        }
    }
    if !p.forbid_elf.is_empty() {
        let res: Vec<Regex> = p
            .forbid_elf
            .iter()
            .map(|r| Regex::new(r))
            .collect::<std::result::Result<_, _>>()?;
        for (path, node) in &fs.nodes {
            // A hardlink shares its target's bytes: named `gcc`, it is a gcc.
            let elf = match node.kind() {
                Kind::File => node.elf(),
                Kind::Hardlink => node.elf() || fs.link_file(path).is_some_and(|f| f.elf()),
                _ => false,
            };
            if elf {
                let base = path.rsplit('/').next().unwrap_or(path);
                if res.iter().any(|r| r.is_match(base)) {
                    hits.push(Hit {
                        path: format!("/{path}"),
                        rule: "toolchain ELF".into(),
                        target: None,
                    });
                }
            }
        }
    }
    hits.sort();
    hits.dedup();
    Ok(hits)
}

/// Required commands that do not resolve to an executable file on PATH.
pub fn missing_required(fs: &Rootfs, p: &Packages) -> Vec<String> {
    p.require
        .iter()
        .filter(|c| {
            !PATH_DIRS.iter().any(|d| {
                fs.resolve(&format!("{d}/{c}"))
                    .and_then(|r| fs.link_file(&r))
                    .is_some_and(|n| n.mode & 0o111 != 0)
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::Node;

    fn pk() -> Packages {
        Packages {
            forbid: vec!["gcc".into(), "nc".into(), "as".into()],
            require: vec!["vi".into(), "jq".into()],
            forbid_elf: vec![r"^(.*-)?(gcc|as|ld)(-[0-9.]+)?$".into()],
            ..Packages::default()
        }
    }

    #[test]
    fn finds_versioned_prefixed_and_hidden_elves() {
        let mut fs = Rootfs::new();
        fs.insert("bin", Node::symlink("usr/bin")).unwrap();
        fs.insert(
            "usr/bin/x86_64-linux-gnu-gcc-12",
            Node::file(0o755, 0, 0, b"\x7fELFxx".to_vec()),
        )
        .unwrap();
        fs.insert("usr/bin/ncat-not", Node::file(0o755, 0, 0, b"#!".to_vec()))
            .unwrap();
        fs.insert("usr/bin/vi", Node::symlink("/etc/alternatives/vi"))
            .unwrap();
        fs.insert("etc/alternatives/vi", Node::symlink("/usr/bin/vim.tiny"))
            .unwrap();
        fs.insert(
            "usr/bin/vim.tiny",
            Node::file(0o755, 0, 0, b"\x7fELF".to_vec()),
        )
        .unwrap();
        fs.insert(
            "usr/lib/gcc/x86_64-linux-gnu/12/as",
            Node::file(0o755, 0, 0, b"\x7fELF".to_vec()),
        )
        .unwrap();
        fs.insert("usr/bin/nc", Node::symlink("/etc/alternatives/nc"))
            .unwrap(); // dangling: not a command
        let hits = forbidden(&fs, &pk()).unwrap();
        let paths: Vec<&str> = hits.iter().map(|h| h.path.as_str()).collect();
        assert!(
            paths.contains(&"/usr/bin/x86_64-linux-gnu-gcc-12"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"/usr/lib/gcc/x86_64-linux-gnu/12/as"),
            "{paths:?}"
        );
        assert!(
            !paths
                .iter()
                .any(|p| p.contains("ncat-not") || p.ends_with("/nc")),
            "{paths:?}"
        );
        assert_eq!(missing_required(&fs, &pk()), vec!["jq".to_string()]);
    }

    /// The shipped recipe's `forbid_elf` catches the target-prefixed toolchain of
    /// both architectures (an arm64 base has aarch64-linux-gnu-gcc-12), ELF of
    /// either machine, and leaves look-alikes alone.
    #[test]
    fn shipped_forbid_elf_catches_both_target_prefixes() {
        let recipe = crate::recipe::Recipe::load(None).unwrap();
        let mut fs = Rootfs::new();
        let elf = |m: u16| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(b"\x7fELF");
            h[5] = 1;
            h[18..20].copy_from_slice(&m.to_le_bytes());
            h
        };
        let bad = [
            "usr/bin/aarch64-linux-gnu-gcc-12",
            "usr/bin/x86_64-linux-gnu-gcc-12",
            "usr/bin/aarch64-linux-gnu-as",
            "usr/bin/aarch64-linux-gnu-ld.bfd",
            "usr/lib/gcc/aarch64-linux-gnu/12/cc1",
            "usr/bin/x86_64-linux-gnu-g++-12",
        ];
        for (i, p) in bad.iter().enumerate() {
            let m = [crate::elf::EM_AARCH64, crate::elf::EM_X86_64][i % 2];
            fs.insert(p, Node::file(0o755, 0, 0, elf(m))).unwrap();
        }
        fs.insert(
            "usr/bin/aarch64-linux-gnu-gcc-wrapper",
            Node::file(0o755, 0, 0, elf(183)),
        )
        .unwrap();
        let hits = forbidden(&fs, &recipe.packages).unwrap();
        let mut paths: Vec<String> = hits
            .iter()
            .filter(|h| !h.rule.starts_with("command"))
            .map(|h| h.path[1..].to_string())
            .collect();
        paths.sort();
        let mut want: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(paths, want);
    }

    /// Found by `cargo mutants`: a symlink named like a forbidden command that resolves
    /// to a directory is no command; a required command that exists but is not
    /// executable is missing.
    #[test]
    fn symlinks_to_directories_are_no_command_and_required_needs_exec_bits() {
        let mut fs = Rootfs::new();
        fs.insert("usr/lib/gcc", Node::dir(0o755, 0, 0)).unwrap();
        fs.insert("usr/bin/gcc", Node::symlink("/usr/lib/gcc"))
            .unwrap();
        fs.insert("usr/bin/vi", Node::file(0o644, 0, 0, b"#!".to_vec()))
            .unwrap();
        fs.insert("usr/bin/jq", Node::file(0o755, 0, 0, b"#!".to_vec()))
            .unwrap();
        assert_eq!(forbidden(&fs, &pk()).unwrap(), Vec::<Hit>::new());
        assert_eq!(missing_required(&fs, &pk()), vec!["vi".to_string()]);
        // The control: the same link to a file is a hit naming its target.
        fs.insert("usr/lib/gcc-real", Node::file(0o755, 0, 0, b"#!".to_vec()))
            .unwrap();
        fs.insert("usr/bin/gcc", Node::symlink("/usr/lib/gcc-real"))
            .unwrap();
        let hits = forbidden(&fs, &pk()).unwrap();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].target.as_deref(), Some("/usr/lib/gcc-real"));
    }
}
