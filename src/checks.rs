//! Evaluates the recipe's `[[checks]]` (owner, mode, content rules) on a rootfs.
//! Used as a build gate and by `audit`, so both judge an image the same way.
use crate::account_fields::{lookup_name, Db};
use crate::recipe::Check;
use crate::rootfs::{Kind, Node, Rootfs};

/// The check's failures on `fs`, one message each (empty: it holds).
pub fn evaluate(fs: &Rootfs, c: &Check) -> Vec<String> {
    let key = match fs.resolve(&c.path) {
        Some(k) => k,
        None => return vec![format!("{}: cannot resolve", c.path)],
    };
    let Some(n) = fs.nodes.get(key.as_str()) else {
        return vec![format!("{}: missing", c.path)];
    };
    let mut out = metadata_failures(fs, c, n);
    if !c.must_contain.is_empty() || !c.must_not_contain.is_empty() {
        if n.kind() != Kind::File {
            out.push(format!("{}: not a regular file", c.path));
            return out;
        }
        match fs.read(&key) {
            Ok(b) => content_failures(c, &String::from_utf8_lossy(&b), &mut out),
            Err(e) => out.push(format!("{}: {e}", c.path)),
        }
    }
    out
}

/// Owner and group (by name or number), mode and kind.
fn metadata_failures(fs: &Rootfs, c: &Check, n: &Node) -> Vec<String> {
    let mut out = Vec::new();
    let passwd = String::from_utf8_lossy(&fs.read("etc/passwd").unwrap_or_default()).into_owned();
    let group = String::from_utf8_lossy(&fs.read("etc/group").unwrap_or_default()).into_owned();
    if let Some(o) = &c.owner {
        let have = lookup_name(&passwd, Db::Passwd, n.uid).unwrap_or_else(|| n.uid.to_string());
        if &have != o && o != &n.uid.to_string() {
            out.push(format!("{}: owner is {have}, expected {o}", c.path));
        }
    }
    if let Some(g) = &c.group {
        let have = lookup_name(&group, Db::Group, n.gid).unwrap_or_else(|| n.gid.to_string());
        if &have != g && g != &n.gid.to_string() {
            out.push(format!("{}: group is {have}, expected {g}", c.path));
        }
    }
    if let Some(m) = c.mode {
        if n.mode != m.0 {
            out.push(format!(
                "{}: mode is {:04o}, expected {:04o}",
                c.path, n.mode, m.0
            ));
        }
    }
    if let Some(k) = &c.kind {
        let have = format!("{:?}", n.kind()).to_lowercase();
        if &have != k {
            out.push(format!("{}: is a {have}, expected {k}", c.path));
        }
    }
    out
}

/// `must_not_contain` (case-insensitive, anywhere in a line), then `must_contain`
/// (whole trimmed lines, each before the `before` line if one is given).
fn content_failures(c: &Check, text: &str, out: &mut Vec<String>) {
    for bad in &c.must_not_contain {
        if let Some(line) = text
            .lines()
            .find(|l| l.to_lowercase().contains(&bad.to_lowercase()))
        {
            out.push(format!(
                "{}: contains '{bad}' (line: {})",
                c.path,
                line.trim()
            ));
        }
    }
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let guard_at = c
        .before
        .as_deref()
        .and_then(|b| lines.iter().position(|l| l.trim() == b.trim()));
    for want in &c.must_contain {
        match lines.iter().position(|l| l.trim() == want.trim()) {
            None => out.push(format!("{}: missing line '{want}'", c.path)),
            Some(i) => {
                if let (Some(g), Some(b)) = (guard_at, &c.before) {
                    if i > g {
                        out.push(format!("{}: line '{want}' comes after '{b}'", c.path));
                    }
                }
            }
        }
    }
}
