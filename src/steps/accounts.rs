//! Users and groups written into the base's /etc/passwd, group, shadow and gshadow.
//! Existing lines are preserved byte for byte and in order; new entries are
//! appended. An id or name clash with a different account is an error naming both.
use crate::recipe::{Group, User};
use crate::rootfs::{Node, Rootfs};
use anyhow::{bail, Result};

pub use crate::account_fields::{
    lookup_id, lookup_name, name_problem, path_problem, Db, MAX_NAME_LEN,
};
pub use crate::recipe::{group_problem, user_problem};

/// One `name:x:id:...` line split into fields (passwd or group format).
fn fields(line: &str) -> Vec<&str> {
    line.split(':').collect()
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

fn join(lines: &[String]) -> Vec<u8> {
    let mut s = lines.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s.into_bytes()
}

fn read_or_empty(fs: &Rootfs, path: &str) -> Result<String> {
    match fs.get(path) {
        Some(_) => Ok(String::from_utf8_lossy(&fs.read(path)?).into_owned()),
        None => Ok(String::new()),
    }
}

fn write_keep_meta(
    fs: &mut Rootfs,
    path: &str,
    bytes: Vec<u8>,
    default_mode: u32,
    default_gid: u64,
) -> Result<()> {
    if fs.get(path).is_some() {
        fs.write(path, bytes)
    } else {
        fs.insert(path, Node::file(default_mode, 0, default_gid, bytes))
    }
}

/// Adds groups (with members) to group/gshadow text. Returns new texts.
pub fn add_groups(group: &str, gshadow: &str, groups: &[Group]) -> Result<(String, String)> {
    let mut g = lines(group);
    let mut gs = lines(gshadow);
    for want in groups {
        // Recipes are validated when parsed; this guards every other caller.
        if let Some((field, why)) = group_problem(want) {
            bail!("group {:?}: {field}: {why}", want.name);
        }
        let existing = g
            .iter()
            .position(|l| fields(l).first() == Some(&want.name.as_str()));
        let by_id = g.iter().find(|l| {
            let f = fields(l);
            f.len() > 2 && f[2].parse::<u32>().ok() == Some(want.gid) && f[0] != want.name
        });
        if let Some(other) = by_id {
            bail!(
                "group {} (gid {}) clashes with existing group '{}' in /etc/group",
                want.name,
                want.gid,
                other
            );
        }
        let idx = match existing {
            Some(i) => {
                let f = fields(&g[i]);
                if f.len() < 3 || f[2].parse::<u32>().ok() != Some(want.gid) {
                    bail!(
                        "group {} (gid {}) clashes with existing group '{}' in /etc/group",
                        want.name,
                        want.gid,
                        g[i]
                    );
                }
                i
            }
            None => {
                g.push(format!("{}:x:{}:", want.name, want.gid));
                g.len() - 1
            }
        };
        g[idx] = add_members(&g[idx], 3, &want.members);
        match gs
            .iter()
            .position(|l| fields(l).first() == Some(&want.name.as_str()))
        {
            Some(i) => gs[i] = add_members(&gs[i], 3, &want.members),
            None if !gshadow.is_empty() || existing.is_none() => {
                gs.push(format!("{}:!::{}", want.name, want.members.join(",")));
            }
            None => {}
        }
    }
    Ok((
        String::from_utf8_lossy(&join(&g)).into_owned(),
        String::from_utf8_lossy(&join(&gs)).into_owned(),
    ))
}

/// Adds members to the comma list in field `idx`, keeping existing order.
fn add_members(line: &str, idx: usize, members: &[String]) -> String {
    let mut f: Vec<String> = line.split(':').map(str::to_string).collect();
    while f.len() <= idx {
        f.push(String::new());
    }
    let mut list: Vec<String> = f[idx]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut changed = false;
    for m in members {
        if !list.contains(m) {
            list.push(m.clone());
            changed = true;
        }
    }
    if !changed {
        return line.to_string();
    }
    f[idx] = list.join(",");
    f.join(":")
}

pub fn add_users(
    passwd: &str,
    shadow: &str,
    users: &[User],
    days: u64,
) -> Result<(String, String)> {
    let mut p = lines(passwd);
    let mut s = lines(shadow);
    for u in users {
        if let Some((field, why)) = user_problem(u) {
            bail!("user {:?}: {field}: {why}", u.name);
        }
        let line = format!(
            "{}:x:{}:{}:{}:{}:{}",
            u.name, u.uid, u.gid, u.gecos, u.home, u.shell
        );
        if let Some(other) = p.iter().find(|l| {
            let f = fields(l);
            f.len() > 2 && f[2].parse::<u32>().ok() == Some(u.uid) && f[0] != u.name
        }) {
            bail!(
                "user {} (uid {}) clashes with existing user '{}' in /etc/passwd",
                u.name,
                u.uid,
                other
            );
        }
        match p
            .iter()
            .position(|l| fields(l).first() == Some(&u.name.as_str()))
        {
            Some(i) => {
                let f = fields(&p[i]);
                if f.len() < 4
                    || f[2].parse::<u32>().ok() != Some(u.uid)
                    || f[3].parse::<u32>().ok() != Some(u.gid)
                {
                    bail!(
                        "user {} (uid {}, gid {}) clashes with existing user '{}' in /etc/passwd",
                        u.name,
                        u.uid,
                        u.gid,
                        p[i]
                    );
                }
                if p[i] != line {
                    p[i] = line; // same ids: make home/shell what the recipe says
                }
            }
            None => p.push(line),
        }
        if !s
            .iter()
            .any(|l| fields(l).first() == Some(&u.name.as_str()))
        {
            s.push(format!("{}:!:{days}:0:99999:7:::", u.name));
        }
    }
    Ok((
        String::from_utf8_lossy(&join(&p)).into_owned(),
        String::from_utf8_lossy(&join(&s)).into_owned(),
    ))
}

pub fn apply(fs: &mut Rootfs, groups: &[Group], users: &[User], epoch: u64) -> Result<()> {
    if groups.is_empty() && users.is_empty() {
        return Ok(());
    }
    // Groups first: users' members may refer to them, and gids must exist.
    let group = read_or_empty(fs, "etc/group")?;
    let gshadow = read_or_empty(fs, "etc/gshadow")?;
    // Members may be users that are created below: resolve order doesn't matter for the text.
    let (g, gs) = add_groups(&group, &gshadow, groups)?;
    let passwd = read_or_empty(fs, "etc/passwd")?;
    let shadow = read_or_empty(fs, "etc/shadow")?;
    for u in users {
        if lookup_name(&g, Db::Group, u.gid.into()).is_none() {
            bail!(
                "user {}: primary gid {} is not a group in /etc/group",
                u.name,
                u.gid
            );
        }
    }
    let (p, s) = add_users(&passwd, &shadow, users, epoch / 86400)?;
    let shadow_gid = lookup_id(&g, Db::Group, "shadow").unwrap_or(0);
    if g.as_bytes() != group.as_bytes() {
        write_keep_meta(fs, "etc/group", g.into_bytes(), 0o644, 0)?;
    }
    if gs.as_bytes() != gshadow.as_bytes() {
        write_keep_meta(fs, "etc/gshadow", gs.into_bytes(), 0o640, shadow_gid)?;
    }
    if p.as_bytes() != passwd.as_bytes() {
        write_keep_meta(fs, "etc/passwd", p.into_bytes(), 0o644, 0)?;
    }
    if s.as_bytes() != shadow.as_bytes() {
        write_keep_meta(fs, "etc/shadow", s.into_bytes(), 0o640, shadow_gid)?;
    }
    Ok(())
}

/// Resolves an owner spec (name or number) against the image's account files.
pub fn uid_of(fs: &Rootfs, name: &str) -> Result<u64> {
    let passwd = read_or_empty(fs, "etc/passwd")?;
    lookup_id(&passwd, Db::Passwd, name)
        .ok_or_else(|| anyhow::anyhow!("user '{name}' does not exist in the image's /etc/passwd"))
}

pub fn gid_of(fs: &Rootfs, name: &str) -> Result<u64> {
    let group = read_or_empty(fs, "etc/group")?;
    lookup_id(&group, Db::Group, name)
        .ok_or_else(|| anyhow::anyhow!("group '{name}' does not exist in the image's /etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, uid: u32) -> User {
        User {
            name: name.into(),
            uid,
            gid: uid,
            home: "/sandbox".into(),
            shell: "/bin/bash".into(),
            gecos: String::new(),
        }
    }

    #[test]
    fn existing_lines_preserved_and_members_added() {
        let group = "root:x:0:\nshadow:x:42:\n# odd line kept\nhalf:x\nusers:x:100:\n";
        let groups = vec![
            Group {
                name: "gateway".into(),
                gid: 999,
                members: vec![],
            },
            Group {
                name: "sandbox".into(),
                gid: 998,
                members: vec!["gateway".into(), "root".into()],
            },
        ];
        let (g, gs) = add_groups(group, "root:*::\n", &groups).unwrap();
        assert!(
            g.starts_with(group),
            "existing content must be preserved byte for byte"
        );
        assert!(
            g.ends_with("gateway:x:999:\nsandbox:x:998:gateway,root\n"),
            "{g}"
        );
        assert_eq!(gs, "root:*::\ngateway:!::\nsandbox:!::gateway,root\n");
        // idempotent
        let (g2, gs2) = add_groups(&g, &gs, &groups).unwrap();
        assert_eq!(g2, g);
        assert_eq!(gs2, gs);
    }

    #[test]
    fn clashes_name_both() {
        let err = add_groups(
            "nogroup:x:998:\n",
            "",
            &[Group {
                name: "sandbox".into(),
                gid: 998,
                members: vec![],
            }],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("sandbox") && err.to_string().contains("nogroup:x:998:"),
            "{err}"
        );
        let err = add_groups("users:x:100:\n", "", &[group("users", 101, &[])]).unwrap_err();
        assert!(err.to_string().contains("users:x:100:"), "{err}");
        let err = add_users(
            "sandbox:x:1000:1000::/home/s:/bin/sh\n",
            "",
            &[user("sandbox", 998)],
            1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sandbox:x:1000:1000"), "{err}");
        let err = add_users(
            "other:x:998:998::/:/bin/sh\n",
            "",
            &[user("sandbox", 998)],
            1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("other:x:998"), "{err}");
    }

    #[test]
    fn users_appended_with_shadow() {
        let (p, s) = add_users(
            "root:x:0:0:root:/root:/bin/bash\n",
            "root:*:19000:0:99999:7:::\n",
            &[user("sandbox", 998)],
            19500,
        )
        .unwrap();
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/bash\nsandbox:x:998:998::/sandbox:/bin/bash\n"
        );
        assert_eq!(
            s,
            "root:*:19000:0:99999:7:::\nsandbox:!:19500:0:99999:7:::\n"
        );
        assert_eq!(lookup_id(&p, Db::Passwd, "sandbox"), Some(998));
        assert_eq!(lookup_name(&p, Db::Passwd, 0).as_deref(), Some("root"));
    }

    fn group(name: &str, gid: u32, members: &[&str]) -> Group {
        Group {
            name: name.into(),
            gid,
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// An image with /etc/group (0664 root:7, with `shadow` as gid 42) and /etc/passwd
    /// (0600 3:0), neither gshadow nor shadow: odd metadata, so keeping it shows.
    fn image() -> Rootfs {
        let mut fs = Rootfs::new();
        let group = b"root:x:0:\nshadow:x:42:\n".to_vec();
        fs.insert("etc/group", Node::file(0o664, 0, 7, group))
            .expect("group");
        let passwd = b"root:x:0:0::/root:/bin/sh\n".to_vec();
        fs.insert("etc/passwd", Node::file(0o600, 3, 0, passwd))
            .expect("passwd");
        unmark(&mut fs);
        fs
    }

    /// As if read from a base layer: nothing changed yet.
    fn unmark(fs: &mut Rootfs) {
        for n in fs.nodes.values_mut() {
            n.modified = false;
        }
    }

    fn text(fs: &Rootfs, path: &str) -> String {
        String::from_utf8(fs.read(path).expect(path)).expect("utf-8")
    }

    /// `apply` edits existing account files in place (owner and mode kept) and creates
    /// the missing shadow files 0640 with group `shadow`, as shadow(5) wants them.
    #[test]
    fn apply_keeps_metadata_and_creates_shadow_files_for_group_shadow() {
        let mut fs = image();
        let groups = [group("sandbox", 998, &[])];
        let users = [user("sandbox", 998)];
        apply(&mut fs, &groups, &users, 19500 * 86400 + 5).unwrap();
        let meta = |p: &str| fs.get(p).map(|n| (n.mode, n.uid, n.gid));
        assert_eq!(meta("etc/group"), Some((0o664, 0, 7)));
        assert_eq!(meta("etc/passwd"), Some((0o600, 3, 0)));
        assert_eq!(meta("etc/gshadow"), Some((0o640, 0, 42)));
        assert_eq!(meta("etc/shadow"), Some((0o640, 0, 42)));
        assert_eq!(
            text(&fs, "etc/group"),
            "root:x:0:\nshadow:x:42:\nsandbox:x:998:\n"
        );
        assert_eq!(text(&fs, "etc/gshadow"), "sandbox:!::\n");
        assert_eq!(
            text(&fs, "etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nsandbox:x:998:998::/sandbox:/bin/bash\n"
        );
        assert_eq!(text(&fs, "etc/shadow"), "sandbox:!:19500:0:99999:7:::\n");
        assert_eq!(uid_of(&fs, "sandbox").unwrap(), 998);
        assert_eq!(gid_of(&fs, "sandbox").unwrap(), 998);
        let err = uid_of(&fs, "nobody").unwrap_err().to_string();
        assert!(err.contains("user 'nobody'"), "{err}");
        let err = gid_of(&fs, "nogroup").unwrap_err().to_string();
        assert!(err.contains("group 'nogroup'"), "{err}");
        // Applied again, nothing changes, so no file is copied up into the layer.
        unmark(&mut fs);
        apply(&mut fs, &groups, &users, 19500 * 86400).unwrap();
        let modified: Vec<&str> = fs
            .nodes
            .iter()
            .filter(|(_, n)| n.modified)
            .map(|(k, _)| &**k)
            .collect();
        assert!(modified.is_empty(), "{modified:?}");
    }

    /// Groups alone are applied (no users), and a user's primary gid must be a group.
    #[test]
    fn apply_adds_groups_alone_and_refuses_a_user_without_primary_group() {
        let mut fs = image();
        apply(&mut fs, &[group("shadow", 42, &["root"])], &[], 0).unwrap();
        assert_eq!(text(&fs, "etc/group"), "root:x:0:\nshadow:x:42:root\n");
        assert!(fs.get("etc/passwd").is_some_and(|n| !n.modified));
        let err = apply(&mut fs, &[], &[user("ghost", 4242)], 0).unwrap_err();
        assert!(err.to_string().contains("primary gid 4242"), "{err}");
    }

    /// gshadow(5) gets a line for a group /etc/group already has only if the image
    /// keeps a gshadow file at all; a short line there gets its member field.
    #[test]
    fn gshadow_lines_follow_the_file_that_exists() {
        let users = [group("users", 100, &["a"])];
        let (g, gs) = add_groups("users:x:100\n", "", &users).unwrap();
        assert_eq!((g.as_str(), gs.as_str()), ("users:x:100:a\n", ""));
        let (_, gs) = add_groups("users:x:100:\n", "root:*::\n", &users).unwrap();
        assert_eq!(gs, "root:*::\nusers:!::a\n");
        let (_, gs) = add_groups("users:x:100:\n", "users:!\n", &users).unwrap();
        assert_eq!(gs, "users:!::a\n");
    }

    /// A user already in /etc/passwd must have the recipe's uid and gid; then its line
    /// is rewritten to the recipe's home and shell (a short one too) and its shadow
    /// line kept. Lines with too few
    /// fields to carry an id are kept and never match.
    #[test]
    fn an_existing_user_must_match_both_ids() {
        for passwd in [
            "sandbox:x:998:5::/:/bin/sh\n",
            "sandbox:x:1000:998::/:/bin/sh\n",
        ] {
            let err = add_users(passwd, "", &[user("sandbox", 998)], 1).unwrap_err();
            assert!(err.to_string().contains(passwd.trim_end()), "{err}");
        }
        let shadow = "sandbox:*:1:0:99999:7:::\n";
        let (p, s) = add_users(
            "half:x\nsandbox:x:998:998\n",
            shadow,
            &[user("sandbox", 998)],
            2,
        )
        .unwrap();
        assert_eq!(p, "half:x\nsandbox:x:998:998::/sandbox:/bin/bash\n");
        assert_eq!(s, shadow);
        let passwd = "sandbox:x:998:998:old:/old:/bin/sh\n";
        let (p, _) = add_users(passwd, shadow, &[user("sandbox", 998)], 2).unwrap();
        assert_eq!(p, "sandbox:x:998:998::/sandbox:/bin/bash\n");
    }

    /// Issue 12 #8, below the recipe parser: nothing that could add a line or a
    /// field reaches the account files, whoever builds the `User`/`Group`.
    #[test]
    fn fields_that_could_inject_lines_never_reach_the_files() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n";
        let mut u = user("sandbox", 998);
        u.gecos = "x\nevil::0:0::/root:/bin/sh".into();
        let err = add_users(passwd, "", &[u], 1).unwrap_err();
        assert!(
            err.to_string().contains("gecos") && err.to_string().contains("newline"),
            "{err}"
        );
        let mut u = user("sandbox", 998);
        u.shell = "/bin/sh:0".into();
        let err = add_users(passwd, "", &[u], 1).unwrap_err();
        assert!(err.to_string().contains("shell"), "{err}");
        let err = add_users(passwd, "", &[user("toor", 0)], 1).unwrap_err();
        assert!(err.to_string().contains("second root"), "{err}");
        let err = add_groups(
            "root:x:0:\n",
            "",
            &[Group {
                name: "g".into(),
                gid: 5,
                members: vec!["a\nevil:x:0:".into()],
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("members[0]"), "{err}");
    }
}
