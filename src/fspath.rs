//! Entry kinds and model paths (`usr/bin/x`: no leading `/`, no `.`, never `..`): the
//! vocabulary shared by the tar reader and the rootfs model, in a leaf so neither
//! imports the other.
use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// Normalizes a path from a tar entry or recipe to the model's key form
/// (`usr/bin/gcc`). `..` is refused: it could only mean escaping the root.
pub fn normalize(path: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("path '{path}' contains '..'"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

pub fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/')
        .map(|i| &path[..i])
        .or(if path.is_empty() { None } else { Some("") })
}
