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

/// Which account file a lookup reads. Both are parsed by the parser the init uses
/// (`runtime-spec`), so the builder and the init agree on who a name or id is: a line
/// the init would skip as malformed names nobody here either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Passwd,
    Group,
}

/// (name, id) of every well-formed entry, in file order.
fn entries(text: &str, db: Db) -> Vec<(String, u64)> {
    use nemoclaw_runtime_spec::accounts::{parse_group, parse_passwd};
    match db {
        Db::Passwd => parse_passwd(text)
            .entries
            .into_iter()
            .map(|u| (u.name, u64::from(u.uid)))
            .collect(),
        Db::Group => parse_group(text)
            .entries
            .into_iter()
            .map(|g| (g.name, u64::from(g.gid)))
            .collect(),
    }
}

/// The id of `name` (a numeric name is the id itself), first entry wins as with
/// getpwnam/getgrnam over files.
pub fn lookup_id(text: &str, db: Db, name: &str) -> Option<u64> {
    if let Ok(n) = name.parse::<u64>() {
        return Some(n);
    }
    entries(text, db)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| id)
}

/// Every id the file names (one parse, for checks over every node of an image).
pub fn known_ids(text: &str, db: Db) -> std::collections::BTreeSet<u64> {
    entries(text, db).into_iter().map(|(_, id)| id).collect()
}

/// The name of the first entry with this id.
pub fn lookup_name(text: &str, db: Db, id: u64) -> Option<String> {
    entries(text, db)
        .into_iter()
        .find(|(_, i)| *i == id)
        .map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines the init skips (wrong field count, an id that is not a number or is
    /// (uid_t)-1) resolve to nobody in the builder either; the first entry wins.
    #[test]
    fn lookups_agree_with_the_init_parser() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n\
            short:x:5:5\n\
            bad:x:12a:12::/:/bin/sh\n\
            minus:x:4294967295:1::/:/bin/sh\n\
            dup:x:7:7::/:/bin/sh\n\
            dup:x:8:8::/:/bin/sh\n";
        assert_eq!(lookup_id(passwd, Db::Passwd, "root"), Some(0));
        assert_eq!(lookup_id(passwd, Db::Passwd, "short"), None);
        assert_eq!(lookup_id(passwd, Db::Passwd, "bad"), None);
        assert_eq!(lookup_id(passwd, Db::Passwd, "minus"), None);
        assert_eq!(lookup_id(passwd, Db::Passwd, "dup"), Some(7));
        assert_eq!(lookup_id(passwd, Db::Passwd, "42"), Some(42));
        assert_eq!(lookup_name(passwd, Db::Passwd, 5), None);
        assert_eq!(lookup_name(passwd, Db::Passwd, 7).as_deref(), Some("dup"));
        let ids: Vec<u64> = known_ids(passwd, Db::Passwd).into_iter().collect();
        assert_eq!(ids, [0, 7, 8], "malformed lines name no id");
        let group = "root:x:0:\nsandbox:x:998:gateway\nodd:x:9\n";
        assert_eq!(lookup_id(group, Db::Group, "sandbox"), Some(998));
        assert_eq!(lookup_id(group, Db::Group, "odd"), None);
        assert_eq!(lookup_name(group, Db::Group, 0).as_deref(), Some("root"));
        // a passwd line is no group line: the files are not interchangeable
        assert_eq!(lookup_id(passwd, Db::Group, "root"), None);
    }
}
