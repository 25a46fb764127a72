//! Writing into an `oci:` output directory without destroying anything in it.
//!
//! [`inspect`] decides what the path may be: nothing, an empty directory, or an OCI
//! image layout holding only `oci-layout`, `index.json` and `blobs/` (anything else
//! there is the user's and we refuse). [`update`] adds one tagged image to an
//! existing layout like skopeo does: the tag is added or replaced, every other
//! entry stays. The order makes a crash harmless: new blobs are moved in first,
//! `index.json` is swapped last with one rename, and only then are blobs removed
//! that the replaced entries referenced and nothing in the new index does (a blob
//! we cannot account for is never touched). Our writers serialize on an `flock`
//! of the layout directory.
use crate::digest::digest_hex;
use crate::image::canonical;
use crate::oci::media_type::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST};
use crate::scratch::{self, ScratchFile};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Manifests and indexes are small; a bigger "manifest" is not read for references.
const JSON_LIMIT: u64 = 4 << 20;

/// What an `oci:` output path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutState {
    Absent,
    EmptyDir,
    /// A layout (possibly one our crashed build left without index.json).
    Layout,
}

/// Checks that writing an image to `path` cannot destroy anything but a previous
/// image: refuses files, symlinks, and directories with anything besides an OCI
/// layout's own entries (and our own stale scratch files).
pub fn inspect(path: &Path) -> Result<LayoutState> {
    let refuse = |why: String| -> Result<LayoutState> {
        bail!(
            "output {} {why}; refusing to write an image there (choose a new path, \
             an empty directory or an existing OCI layout)",
            path.display()
        )
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LayoutState::Absent),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symlink".into());
    }
    if !meta.is_dir() {
        return refuse("exists and is not a directory (an OCI layout is a directory)".into());
    }
    let mut names = BTreeSet::new();
    let mut foreign = Vec::new();
    for e in std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        match name.as_str() {
            "oci-layout" | "index.json" | "blobs" => {
                names.insert(name);
            }
            n if scratch::is_scratch_name(n) => {}
            _ => foreign.push(name),
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
        return refuse(format!(
            "holds files that are not part of an OCI image layout ({}{})",
            shown.join(", "),
            if foreign.len() > 5 { ", ..." } else { "" }
        ));
    }
    if names.is_empty() {
        return Ok(LayoutState::EmptyDir);
    }
    if !names.contains("oci-layout") {
        return refuse("is not an OCI image layout (no oci-layout file)".into());
    }
    let kind = |rel: &str| std::fs::symlink_metadata(path.join(rel)).ok();
    for (rel, want_dir) in [
        ("oci-layout", false),
        ("index.json", false),
        ("blobs", true),
        ("blobs/sha256", true),
    ] {
        match kind(rel) {
            None => {}
            Some(m) if want_dir && m.is_dir() => {}
            Some(m) if !want_dir && m.is_file() => {}
            Some(_) => {
                return refuse(format!(
                    "has {rel}, but it is not a plain {}",
                    if want_dir { "directory" } else { "file" }
                ))
            }
        }
    }
    Ok(LayoutState::Layout)
}

/// Reads a layout's index.json (an absent one is an empty index).
fn read_index(dir: &Path) -> Result<Value> {
    let p = dir.join("index.json");
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    let v: Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{}: invalid JSON; refusing to update this layout",
            p.display()
        )
    })?;
    if !v.get("manifests").is_some_and(Value::is_array) {
        bail!(
            "{}: no manifests array; refusing to update this layout",
            p.display()
        );
    }
    Ok(v)
}

fn manifests(index: &Value) -> Vec<Value> {
    index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn digest_of(d: &Value) -> Option<&str> {
    d.get("digest").and_then(Value::as_str)
}

fn ref_name(d: &Value) -> Option<&str> {
    d.get("annotations")
        .and_then(|a| a.get(REF_NAME))
        .and_then(Value::as_str)
}

fn blob_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    Some(dir.join("blobs/sha256").join(digest_hex(digest).ok()?))
}

/// A small JSON blob of the layout, if it is one.
fn read_json_blob(dir: &Path, digest: &str) -> Option<Value> {
    let mut buf = Vec::new();
    File::open(blob_path(dir, digest)?)
        .ok()?
        .take(JSON_LIMIT + 1)
        .read_to_end(&mut buf)
        .ok()?;
    if buf.len() as u64 > JSON_LIMIT {
        return None;
    }
    serde_json::from_slice(&buf).ok()
}

/// The `subject` of an artifact manifest (a referrer such as an attached SBOM).
fn subject_of(dir: &Path, d: &Value) -> Option<String> {
    let m = read_json_blob(dir, digest_of(d)?)?;
    m.pointer("/subject/digest")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The new index: `old` without entries tagged `tag`, without referrers whose
/// subject is no longer listed or that `new` replaces (same artifactType and
/// subject), plus the entries of `new`. Every other entry is kept as it was.
pub fn merge_index(
    old: &Value,
    new: &Value,
    tag: &str,
    subject: impl Fn(&Value) -> Option<String>,
) -> Value {
    let new_descs = manifests(new);
    let mut kept: Vec<Value> = manifests(old)
        .into_iter()
        .filter(|d| ref_name(d) != Some(tag) && !new_descs.contains(d))
        .collect();
    // Referrers: untagged entries whose manifest has a subject.
    let subjects: Vec<Option<String>> = kept
        .iter()
        .map(|d| ref_name(d).is_none().then(|| subject(d)).flatten())
        .collect();
    let new_referrers: BTreeSet<(Option<String>, Option<String>)> = new_descs
        .iter()
        .filter_map(|d| {
            let s = subject(d)?;
            Some((artifact_type(d), Some(s)))
        })
        .collect();
    let listed: BTreeSet<String> = kept
        .iter()
        .zip(&subjects)
        .filter(|(_, s)| s.is_none())
        .map(|(d, _)| d)
        .chain(new_descs.iter())
        .filter_map(|d| digest_of(d).map(str::to_string))
        .collect();
    let mut i = 0;
    kept.retain(|d| {
        let s = &subjects[i];
        i += 1;
        match s {
            None => true,
            Some(s) => {
                listed.contains(s) && !new_referrers.contains(&(artifact_type(d), Some(s.clone())))
            }
        }
    });
    kept.extend(new_descs);
    let mut out = old.clone();
    out["manifests"] = Value::Array(kept);
    if out.get("schemaVersion").is_none() {
        out["schemaVersion"] = json!(2);
    }
    out
}

fn artifact_type(d: &Value) -> Option<String> {
    d.get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Every blob reachable from `descs` (manifests, indexes, their configs and layers).
fn reachable(dir: &Path, descs: &[Value]) -> BTreeSet<String> {
    fn walk(dir: &Path, d: &Value, seen: &mut BTreeSet<String>) {
        let Some(digest) = digest_of(d) else { return };
        if !seen.insert(digest.to_string()) {
            return;
        }
        let mt = d.get("mediaType").and_then(Value::as_str);
        let container = matches!(
            mt,
            Some(MT_OCI_MANIFEST | MT_OCI_INDEX | MT_DOCKER_MANIFEST | MT_DOCKER_LIST) | None
        ) || d.get("artifactType").is_some();
        if !container {
            return;
        }
        let Some(m) = read_json_blob(dir, digest) else {
            return;
        };
        if let Some(c) = m.get("config") {
            walk(dir, c, seen);
        }
        for key in ["layers", "manifests", "blobs"] {
            for c in m.get(key).and_then(Value::as_array).into_iter().flatten() {
                walk(dir, c, seen);
            }
        }
    }
    let mut seen = BTreeSet::new();
    for d in descs {
        walk(dir, d, &mut seen);
    }
    seen
}

/// Moves (or, across filesystems, copies) one staged blob into the layout.
/// Returns whether it was added (false: the layout already had it).
fn install_blob(src: &Path, dst: &Path) -> Result<bool> {
    let len = std::fs::metadata(src)?.len();
    if let Ok(m) = std::fs::symlink_metadata(dst) {
        if m.is_file() && m.len() == len {
            return Ok(false);
        }
        if !m.is_file() {
            bail!("{} is not a regular file", dst.display());
        }
    }
    match std::fs::rename(src, dst) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = ScratchFile::create_in(&scratch::parent_dir(dst))?;
            std::io::copy(&mut File::open(src)?, &mut tmp.file())
                .with_context(|| format!("cannot copy into {}", dst.display()))?;
            tmp.commit(dst)?;
            Ok(true)
        }
        Err(e) => Err(e).with_context(|| format!("cannot move a blob into {}", dst.display())),
    }
}

fn write_file_atomically(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = ScratchFile::beside(dest)?;
    tmp.file()
        .write_all(bytes)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    tmp.commit(dest)
        .with_context(|| format!("cannot replace {}", dest.display()))?;
    Ok(())
}

/// Adds the image staged at `staged` (a complete layout whose index.json lists the
/// image under `tag`, and maybe its referrers) to the layout or empty directory at
/// `dest`. See the module doc for the guarantees.
pub fn update(dest: &Path, staged: &Path, tag: &str) -> Result<()> {
    let lock = File::open(dest).with_context(|| format!("cannot open {}", dest.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", dest.display()))?;
    let state = inspect(dest)?;
    if state == LayoutState::Absent {
        bail!("output {} vanished during the build", dest.display());
    }
    let blobs = dest.join("blobs/sha256");
    for d in [dest, blobs.as_path()] {
        scratch::sweep(d);
    }
    let old = read_index(dest)?;
    let new = read_index(staged)?;
    if !dest.join("oci-layout").is_file() {
        // First, so that a crash leaves something recognizably a layout.
        write_file_atomically(&dest.join("oci-layout"), LAYOUT_FILE)?;
    }
    std::fs::create_dir_all(&blobs)
        .with_context(|| format!("cannot create {}", blobs.display()))?;
    let mut added = Vec::new();
    let installed = (|| -> Result<Value> {
        for e in std::fs::read_dir(staged.join("blobs/sha256"))? {
            let e = e?;
            let name = e.file_name();
            let Some(hex) = name
                .to_str()
                .filter(|n| digest_hex(&format!("sha256:{n}")).is_ok())
            else {
                continue;
            };
            let dst = blobs.join(hex);
            if install_blob(&e.path(), &dst)? {
                added.push(dst);
            }
        }
        let merged = merge_index(&old, &new, tag, |d| subject_of(dest, d));
        write_file_atomically(&dest.join("index.json"), &canonical(&merged))?;
        Ok(merged)
    })();
    let merged = match installed {
        Ok(m) => m,
        Err(e) => {
            // The old index is still in place: the blobs we added are unreferenced.
            for p in added {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    // Garbage: what only the dropped entries reached.
    let final_descs = manifests(&merged);
    let dropped: Vec<Value> = manifests(&old)
        .into_iter()
        .filter(|d| !final_descs.contains(d))
        .collect();
    if !dropped.is_empty() {
        let live = reachable(dest, &final_descs);
        for digest in reachable(dest, &dropped).difference(&live) {
            if let Some(p) = blob_path(dest, digest) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest: &str, tag: Option<&str>) -> Value {
        let mut d = json!({"mediaType": MT_OCI_MANIFEST, "digest": digest, "size": 1});
        if let Some(t) = tag {
            d["annotations"] = json!({ REF_NAME: t });
        }
        d
    }
    fn referrer(digest: &str) -> Value {
        let mut d = desc(digest, None);
        d["artifactType"] = json!("application/spdx+json");
        d
    }

    #[test]
    fn merge_keeps_other_tags_and_their_referrers() {
        let old = json!({"schemaVersion": 2, "annotations": {"x": "y"}, "manifests": [
            desc("sha256:base", Some("v2")),
            desc("sha256:old3", Some("v3")),
            referrer("sha256:sbom-base"),
            referrer("sha256:sbom-old3"),
            desc("sha256:untagged", None),
        ]});
        let new =
            json!({"manifests": [desc("sha256:new3", Some("v3")), referrer("sha256:sbom-new3")]});
        let subject = |d: &Value| match digest_of(d)? {
            "sha256:sbom-base" => Some("sha256:base".to_string()),
            "sha256:sbom-old3" => Some("sha256:old3".to_string()),
            "sha256:sbom-new3" => Some("sha256:new3".to_string()),
            _ => None,
        };
        let m = merge_index(&old, &new, "v3", subject);
        let got: Vec<String> = manifests(&m)
            .iter()
            .map(|d| {
                digest_of(d)
                    .unwrap()
                    .trim_start_matches("sha256:")
                    .to_string()
            })
            .collect();
        assert_eq!(got, ["base", "sbom-base", "untagged", "new3", "sbom-new3"]);
        assert_eq!(m["annotations"]["x"], "y", "index annotations kept");
    }

    #[test]
    fn rebuilding_the_same_digest_keeps_one_entry() {
        let old = json!({"manifests": [desc("sha256:a", Some("v1")), referrer("sha256:s")]});
        let new = json!({"manifests": [desc("sha256:a", Some("v1"))]});
        let m = merge_index(&old, &new, "v1", |d| {
            (digest_of(d)? == "sha256:s").then(|| "sha256:a".to_string())
        });
        assert_eq!(manifests(&m).len(), 2, "{m}");
    }

    /// Writes `blobs` into `dir` and an image manifest over them; returns its descriptor.
    fn image(dir: &Path, tag: &str, config: &[u8], layers: &[&[u8]]) -> Value {
        let b = dir.join("blobs/sha256");
        std::fs::create_dir_all(&b).unwrap();
        let put = |bytes: &[u8]| {
            let d = crate::digest::sha256_digest(bytes);
            std::fs::write(b.join(digest_hex(&d).unwrap()), bytes).unwrap();
            json!({"mediaType": "application/octet-stream", "digest": d, "size": bytes.len()})
        };
        let m = json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": put(config),
            "layers": layers.iter().map(|l| put(l)).collect::<Vec<_>>()});
        let mut d = put(&canonical(&m));
        d["mediaType"] = json!(MT_OCI_MANIFEST);
        d["annotations"] = json!({ REF_NAME: tag });
        d
    }
    fn layout(dir: &Path, descs: &[Value]) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), LAYOUT_FILE).unwrap();
        let index = json!({"schemaVersion": 2, "manifests": descs});
        std::fs::write(dir.join("index.json"), canonical(&index)).unwrap();
    }
    fn has(dir: &Path, bytes: &[u8]) -> bool {
        blob_path(dir, &crate::digest::sha256_digest(bytes)).is_some_and(|p| p.exists())
    }

    #[test]
    fn update_collects_only_what_the_replaced_tag_alone_used() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("L");
        let v2 = image(&dest, "v2", b"cfg2", &[b"shared", b"only-v2"]);
        let v3 = image(&dest, "v3", b"cfg3", &[b"shared", b"only-old-v3"]);
        layout(&dest, &[v2.clone(), v3]);
        // A blob nothing references (another tool's, or a half-finished write).
        std::fs::write(
            blob_path(&dest, &crate::digest::sha256_digest(b"unknown")).unwrap(),
            b"unknown",
        )
        .unwrap();
        let staged = t.path().join("staged");
        let new3 = image(&staged, "v3", b"cfg3-new", &[b"shared", b"only-new-v3"]);
        layout(&staged, std::slice::from_ref(&new3));
        update(&dest, &staged, "v3").unwrap();
        assert_eq!(manifests(&read_index(&dest).unwrap()), vec![v2, new3]);
        for kept in [
            &b"cfg2"[..],
            b"shared",
            b"only-v2",
            b"unknown",
            b"cfg3-new",
            b"only-new-v3",
        ] {
            assert!(
                has(&dest, kept),
                "{} was removed",
                String::from_utf8_lossy(kept)
            );
        }
        for gone in [&b"cfg3"[..], b"only-old-v3"] {
            assert!(
                !has(&dest, gone),
                "{} was kept",
                String::from_utf8_lossy(gone)
            );
        }
    }

    #[test]
    fn failed_update_keeps_the_old_index_and_adds_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("L");
        let v1 = image(&dest, "v1", b"cfg1", &[b"l1"]);
        layout(&dest, &[v1]);
        let before = std::fs::read(dest.join("index.json")).unwrap();
        let staged = t.path().join("staged");
        let new = image(&staged, "v2", b"cfg2", &[b"l2", b"l3"]);
        layout(&staged, &[new]);
        // One of the new blobs cannot be installed: a directory is in its place.
        std::fs::create_dir(blob_path(&dest, &crate::digest::sha256_digest(b"l3")).unwrap())
            .unwrap();
        let e = format!("{:#}", update(&dest, &staged, "v2").unwrap_err());
        assert!(e.contains("is not a regular file"), "{e}");
        assert_eq!(std::fs::read(dest.join("index.json")).unwrap(), before);
        for added in [&b"cfg2"[..], b"l2"] {
            assert!(
                !has(&dest, added),
                "{} left behind",
                String::from_utf8_lossy(added)
            );
        }
        assert!(has(&dest, b"cfg1") && has(&dest, b"l1"));
        let scratch: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".nemoclaw"))
            .collect();
        assert!(scratch.is_empty(), "{scratch:?}");
    }

    #[test]
    fn inspect_refuses_what_is_not_a_layout() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        assert_eq!(inspect(&p.join("new")).unwrap(), LayoutState::Absent);
        std::fs::create_dir(p.join("empty")).unwrap();
        assert_eq!(inspect(&p.join("empty")).unwrap(), LayoutState::EmptyDir);
        std::fs::write(p.join("file"), b"x").unwrap();
        let e = format!("{:#}", inspect(&p.join("file")).unwrap_err());
        assert!(e.contains("is not a directory"), "{e}");
        let l = p.join("layout");
        std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
        std::fs::write(l.join("oci-layout"), LAYOUT_FILE).unwrap();
        std::fs::write(l.join("index.json"), b"{\"manifests\":[]}").unwrap();
        assert_eq!(inspect(&l).unwrap(), LayoutState::Layout);
        std::fs::write(l.join("NOTES.md"), b"mine").unwrap();
        let e = format!("{:#}", inspect(&l).unwrap_err());
        assert!(
            e.contains("not part of an OCI image layout (NOTES.md)"),
            "{e}"
        );
        std::fs::remove_file(l.join("NOTES.md")).unwrap();
        std::os::unix::fs::symlink(&l, p.join("link")).unwrap();
        let e = format!("{:#}", inspect(&p.join("link")).unwrap_err());
        assert!(e.contains("is a symlink"), "{e}");
        let s = p.join("src");
        std::fs::create_dir_all(s.join("blobs")).unwrap();
        let e = format!("{:#}", inspect(&s).unwrap_err());
        assert!(e.contains("no oci-layout file"), "{e}");
    }
}
