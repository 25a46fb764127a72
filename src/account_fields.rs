//! The text format of /etc/passwd and /etc/group: what a name or field may hold (as
//! useradd/groupadd judge it) and lookups by name or id. A leaf: used by the recipe's
//! validation, the account step, checks, audit and policy alike.

/// Longest user or group name useradd/groupadd accept by default.
pub const MAX_NAME_LEN: usize = 32;

/// Why `name` can't be a user or group name, judged like useradd/groupadd without
/// `--badname`: `[a-z_][a-z0-9_-]*[$]?`, at most 32 bytes. This also keeps out
/// everything that has a meaning in the account files (`:`, `,`, newline) and
/// names that read as numeric ids.
pub fn name_problem(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let body = b.strip_suffix(b"$").unwrap_or(b);
    let ok_first = matches!(body.first(), Some(c) if c.is_ascii_lowercase() || *c == b'_');
    let ok_rest = body
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if name.is_empty() {
        Some("must not be empty".into())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("{name:?} is longer than {MAX_NAME_LEN} bytes"))
    } else if !ok_first || !ok_rest {
        Some(format!(
            "{name:?} is not a valid name: use [a-z_][a-z0-9_-]*, optionally ending in '$'"
        ))
    } else {
        None
    }
}

/// Control characters (newline, NUL, ...) would start a new line or cut the
/// field; `:` would start a new field.
pub fn text_problem(s: &str) -> Option<String> {
    if s.chars().any(char::is_control) {
        Some(format!(
            "{s:?} must not contain a newline or other control character"
        ))
    } else if s.contains(':') {
        Some(format!("{s:?} must not contain ':'"))
    } else {
        None
    }
}

/// home and shell: absolute paths that stay one field of one line.
pub fn path_problem(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return Some(format!("{p:?} must be an absolute path"));
    }
    text_problem(p)
}

/// Looks up a name or numeric id in a passwd/group style file.
pub fn lookup_id(text: &str, name: &str) -> Option<u64> {
    if let Ok(n) = name.parse::<u64>() {
        return Some(n);
    }
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
}

pub fn lookup_name(text: &str, id: u64) -> Option<String> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2].parse::<u64>().ok() == Some(id))
        .map(|f| f[0].to_string())
}
