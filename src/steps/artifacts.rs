//! Builder-stage artifacts (`dist/`, package.json, ...) placed under the recipe's
//! destination, root-owned and never group/world writable. Host mtimes, umask and
//! directory order are normalized away so the result is reproducible.
use crate::rootfs::{normalize, Content, Kind, Node, Rootfs};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// (relative path, kind, mode, bytes, link target) of an artifact tar entry.
type TarEntry = (String, Kind, u32, Vec<u8>, Option<String>);

fn norm_mode(kind: Kind, mode: u32) -> u32 {
    match kind {
        Kind::Dir => 0o755,
        Kind::File if mode & 0o111 != 0 => 0o755,
        Kind::Symlink => 0o777,
        _ => 0o644,
    }
}

/// Symlinks may not point outside the artifact tree (absolute or `..`-escaping).
fn check_link(rel: &str, target: &str) -> Result<()> {
    if target.starts_with('/') {
        bail!("artifact symlink '{rel}' -> '{target}' is absolute and escapes the artifact tree");
    }
    let mut depth: i64 = rel.matches('/').count() as i64;
    for c in target.split('/') {
        match c {
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
        if depth < 0 {
            bail!("artifact symlink '{rel}' -> '{target}' escapes the artifact tree");
        }
    }
    Ok(())
}

/// Whether a host file starts with the ELF magic.
fn starts_with_elf(p: &Path) -> Result<bool> {
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n == 4 && &head == b"\x7fELF")
}

/// Adds the artifacts; returns the digest of the normalized tree.
pub fn apply(fs: &mut Rootfs, src: &Path, dest: &str, uid: u64, gid: u64) -> Result<String> {
    let dest = normalize(dest)?;
    let mut hasher = Sha256::new();
    let mut add = |fs: &mut Rootfs,
                   rel: &str,
                   kind: Kind,
                   mode: u32,
                   content: Content,
                   size: u64,
                   link: Option<String>,
                   digest: String|
     -> Result<()> {
        let path = if rel.is_empty() {
            dest.clone()
        } else {
            format!("{dest}/{rel}")
        };
        let mode = norm_mode(kind, mode);
        hasher.update(
            format!(
                "{rel}\0{kind:?}\0{mode:o}\0{}\0{digest}\n",
                link.clone().unwrap_or_default()
            )
            .as_bytes(),
        );
        let mut n = match kind {
            Kind::Dir => Node::dir(mode, uid, gid),
            Kind::Symlink => Node::symlink(link.as_deref().unwrap_or_default()),
            _ => Node::file(mode, uid, gid, Vec::new()),
        };
        n.uid = uid;
        n.gid = gid;
        if kind == Kind::File {
            // The gate's toolchain-ELF rule looks at this flag: set it from the bytes.
            n.elf = match &content {
                Content::Bytes(b) => b.starts_with(b"\x7fELF"),
                Content::Host(p) => starts_with_elf(p)?,
                _ => false,
            };
            n.content = content;
            n.size = size;
        }
        fs.insert(&path, n)
    };
    if src.is_dir() {
        for e in walkdir::WalkDir::new(src)
            .follow_links(false)
            .sort_by_file_name()
        {
            let e = e.with_context(|| format!("cannot walk artifacts {}", src.display()))?;
            let rel = e
                .path()
                .strip_prefix(src)
                .unwrap_or(e.path())
                .to_string_lossy()
                .into_owned();
            let meta = e
                .path()
                .symlink_metadata()
                .with_context(|| format!("cannot stat {}", e.path().display()))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                add(
                    fs,
                    &rel,
                    Kind::Dir,
                    0o755,
                    Content::Empty,
                    0,
                    None,
                    String::new(),
                )?;
            } else if ft.is_symlink() {
                let t = std::fs::read_link(e.path())?.to_string_lossy().into_owned();
                check_link(&rel, &t)?;
                add(
                    fs,
                    &rel,
                    Kind::Symlink,
                    0o777,
                    Content::Empty,
                    0,
                    Some(t),
                    String::new(),
                )?;
            } else if ft.is_file() {
                let mut f = std::fs::File::open(e.path())
                    .with_context(|| format!("cannot read {}", e.path().display()))?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                let digest = hex::encode(h.finalize());
                add(
                    fs,
                    &rel,
                    Kind::File,
                    meta.permissions().mode(),
                    Content::Host(e.path().to_path_buf()),
                    meta.len(),
                    None,
                    digest,
                )?;
            } else {
                bail!(
                    "artifact {} is not a regular file, directory or symlink",
                    e.path().display()
                );
            }
        }
    } else if src.is_file() {
        add(
            fs,
            "",
            Kind::Dir,
            0o755,
            Content::Empty,
            0,
            None,
            String::new(),
        )?;
        let f = std::fs::File::open(src)
            .with_context(|| format!("cannot open artifacts {}", src.display()))?;
        let mut head = [0u8; 2];
        let gz = std::fs::File::open(src)?
            .read(&mut head)
            .map(|n| n == 2 && head == [0x1f, 0x8b])
            .unwrap_or(false);
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let mut ar = tar::Archive::new(reader);
        let label = src.display().to_string();
        let mut entries: Vec<TarEntry> = Vec::new();
        for e in ar
            .entries()
            .with_context(|| format!("{label}: not a tar archive"))?
        {
            let mut e = e.with_context(|| format!("{label}: corrupt tar archive"))?;
            let raw = e.path()?.to_string_lossy().into_owned();
            let rel = normalize(&raw).with_context(|| format!("{label}: unsafe entry '{raw}'"))?;
            if rel.is_empty() {
                continue;
            }
            let et = e.header().entry_type();
            let mode = e.header().mode().unwrap_or(0o644);
            if et.is_dir() {
                entries.push((rel, Kind::Dir, mode, vec![], None));
            } else if et.is_symlink() {
                let t = e
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                check_link(&rel, &t).with_context(|| label.clone())?;
                entries.push((rel, Kind::Symlink, mode, vec![], Some(t)));
            } else if et.is_file() {
                let mut data = Vec::new();
                e.read_to_end(&mut data)
                    .with_context(|| format!("{label}: truncated entry '{raw}'"))?;
                entries.push((rel, Kind::File, mode, data, None));
            } else {
                bail!("{label}: entry '{raw}' has unsupported type {et:?}");
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (rel, kind, mode, data, link) in entries {
            let digest = hex::encode(Sha256::digest(&data));
            let size = data.len() as u64;
            add(
                fs,
                &rel,
                kind,
                mode,
                Content::Bytes(Arc::new(data)),
                size,
                link,
                digest,
            )?;
        }
    } else {
        bail!("artifacts {} do not exist", src.display());
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn normalizes_modes_and_digest_ignores_mtime() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dist")).unwrap();
        std::fs::write(d.path().join("dist/index.js"), b"console.log(1)").unwrap();
        std::fs::set_permissions(
            d.path().join("dist/index.js"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        std::fs::write(d.path().join("package.json"), b"{}").unwrap();
        std::fs::set_permissions(
            d.path().join("package.json"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let mut fs = Rootfs::new();
        let d1 = apply(&mut fs, d.path(), "/opt/nemoclaw", 0, 0).unwrap();
        assert_eq!(fs.get("opt/nemoclaw/dist/index.js").unwrap().mode, 0o755);
        assert_eq!(fs.get("opt/nemoclaw/package.json").unwrap().mode, 0o644);
        let f = std::fs::File::options()
            .write(true)
            .open(d.path().join("package.json"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        let d2 = apply(&mut Rootfs::new(), d.path(), "/opt/nemoclaw", 0, 0).unwrap();
        assert_eq!(d1, d2);
        std::fs::write(d.path().join("package.json"), b"{ }").unwrap();
        assert_ne!(
            d1,
            apply(&mut Rootfs::new(), d.path(), "/opt/nemoclaw", 0, 0).unwrap()
        );
    }

    #[test]
    fn escaping_symlinks_are_refused() {
        let d = tempfile::tempdir().unwrap();
        symlink("/etc/shadow", d.path().join("evil")).unwrap();
        let err = apply(&mut Rootfs::new(), d.path(), "/opt/x", 0, 0).unwrap_err();
        assert!(format!("{err:#}").contains("escapes"), "{err:#}");
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        symlink("../../x", d.path().join("a/l")).unwrap();
        let err = apply(&mut Rootfs::new(), d.path(), "/opt/x", 0, 0).unwrap_err();
        assert!(
            format!("{err:#}").contains("'a/l' -> '../../x' escapes"),
            "{err:#}"
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        symlink("../b", d.path().join("a/l")).unwrap();
        assert!(apply(&mut Rootfs::new(), d.path(), "/opt/x", 0, 0).is_ok());
    }
}
