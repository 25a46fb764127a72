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
        let group = "root:x:0:\nshadow:x:42:\n# odd line kept\nusers:x:100:\n";
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
