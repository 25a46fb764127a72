//! The Landlock policy: written into the image for nemoclaw-init, and explained by
//! `policy` as *effective* access = Landlock declaration AND POSIX permissions,
//! because a path Landlock allows can still be unwritable for a user (DAC).
use super::accounts::{lookup_name, Db};
use crate::recipe::{Landlock, Recipe};
use crate::rootfs::{Kind, Node, Rootfs};
use anyhow::Result;

/// The policy file as written into the image (the recipe was validated at load).
pub fn policy_json(l: &Landlock, workdir: Option<&str>) -> Result<Vec<u8>> {
    Ok(l.policy(workdir)?.to_json())
}

pub fn write(fs: &mut Rootfs, recipe: &Recipe) -> Result<()> {
    if let Some(l) = &recipe.landlock {
        fs.insert(
            &l.path,
            Node::file(
                0o444,
                0,
                0,
                policy_json(l, recipe.image.workdir.as_deref())?,
            ),
        )?;
    }
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Access {
    pub path: String,
    pub user: String,
    pub declared: String,
    /// The declared path this row inherits its Landlock rule from, if not declared itself.
    pub inherited_from: Option<String>,
    pub exists: bool,
    pub owner: String,
    pub mode: String,
    /// POSIX: may the user create entries in (dir) or write (file) this path?
    pub dac_write: bool,
    pub effective_write: bool,
    pub effective_read: bool,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct Ident {
    uid: u64,
    gids: Vec<u64>,
}

/// The user's uid and groups as the init will set them: the same parser and the same
/// initgroups(3) rule (`runtime-spec`), so the table shows the access it will have.
fn ident(fs: &Rootfs, user: &str) -> Option<Ident> {
    let passwd = String::from_utf8_lossy(&fs.read("etc/passwd").ok()?).into_owned();
    let group = fs
        .read("etc/group")
        .ok()
        .map(|g| String::from_utf8_lossy(&g).into_owned());
    let db = nemoclaw_runtime_spec::accounts::Accounts::from_texts(&passwd, group.as_deref());
    let u = db.user(user)?;
    Some(Ident {
        uid: u64::from(u.uid),
        gids: db.init_groups(u).into_iter().map(u64::from).collect(),
    })
}

/// Can `who` write (w) to `node` by POSIX permission bits? uid 0 is treated as
/// an ordinary owner, since nemoclaw-init drops CAP_DAC_OVERRIDE.
fn dac(node: &Node, who: &Ident, bit: u32) -> bool {
    let m = node.mode;
    if node.uid == who.uid {
        m & (bit << 6) != 0
    } else if who.gids.contains(&node.gid) {
        m & (bit << 3) != 0
    } else {
        m & bit != 0
    }
}

/// A path the policy names, or a directory directly below a read_write one.
struct Declared {
    path: String,
    rule: &'static str,
    inherited_from: Option<String>,
}

/// The effective access of each listed user to each declared path: Landlock's
/// rule combined with what the image's owners and modes (DAC) allow.
pub fn effective(fs: &Rootfs, recipe: &Recipe) -> Vec<Access> {
    let Some(l) = &recipe.landlock else {
        return vec![];
    };
    let passwd = String::from_utf8_lossy(&fs.read("etc/passwd").unwrap_or_default()).into_owned();
    let group = String::from_utf8_lossy(&fs.read("etc/group").unwrap_or_default()).into_owned();
    let declared = declared_paths(fs, recipe, l);
    let mut rows = Vec::new();
    for user in &l.users {
        let who = ident(fs, user);
        for d in &declared {
            let key = fs.resolve(&d.path).unwrap_or_default();
            let node = fs.nodes.get(key.as_str()).map(|n| &**n);
            let owner = node.map(|n| {
                format!(
                    "{}:{}",
                    lookup_name(&passwd, Db::Passwd, n.uid).unwrap_or_else(|| n.uid.to_string()),
                    lookup_name(&group, Db::Group, n.gid).unwrap_or_else(|| n.gid.to_string())
                )
            });
            rows.push(access_row(d, user, node, who.as_ref(), owner));
        }
    }
    rows
}

/// The policy's paths (the workdir added to read_write when asked), then the
/// directories directly below each read_write directory: Landlock rules apply
/// beneath a path, and that is where DAC usually decides.
fn declared_paths(fs: &Rootfs, recipe: &Recipe, l: &Landlock) -> Vec<Declared> {
    let mut rw = l.read_write.clone();
    if l.include_workdir {
        if let Some(w) = &recipe.image.workdir {
            if !rw.contains(w) {
                rw.push(w.clone());
            }
        }
    }
    let own = |path: &String, rule| Declared {
        path: path.clone(),
        rule,
        inherited_from: None,
    };
    let mut declared: Vec<Declared> = l
        .read_only
        .iter()
        .map(|p| own(p, "read_only"))
        .chain(rw.iter().map(|p| own(p, "read_write")))
        .collect();
    let explicit: std::collections::BTreeSet<String> =
        declared.iter().map(|d| d.path.clone()).collect();
    for dir in &rw {
        let Some(key) = fs.resolve(dir) else { continue };
        if key.is_empty() {
            continue;
        }
        let children: Vec<String> = fs
            .descendants(&key)
            .filter(|(k, n)| n.kind() == Kind::Dir && !k[key.len() + 1..].contains('/'))
            .map(|(k, _)| format!("{}/{}", dir.trim_end_matches('/'), &k[key.len() + 1..]))
            .filter(|p| !explicit.contains(p))
            .collect();
        for c in children {
            declared.push(Declared {
                path: c,
                rule: "read_write",
                inherited_from: Some(dir.clone()),
            });
        }
    }
    declared
}

/// One row of the `policy` table: `user` on the declared path `d` (its `node`
/// in the image, if any, owned by `owner` as names).
fn access_row(
    d: &Declared,
    user: &str,
    node: Option<&Node>,
    who: Option<&Ident>,
    owner: Option<String>,
) -> Access {
    let owner = owner.unwrap_or_else(|| "-".into());
    let mode = node.map_or_else(|| "-".into(), |n| format!("{:04o}", n.mode));
    let (dac_write, dac_read, reason) = match (node, who) {
        (_, None) => (false, false, format!("user {user} does not exist")),
        (None, _) if d.path.starts_with("/proc") || d.path.starts_with("/dev") => {
            (true, true, "runtime filesystem (not in the image)".into())
        }
        (None, _) => (false, false, "path does not exist in the image".into()),
        (Some(n), Some(w)) => {
            let write = match n.kind() {
                Kind::Dir => dac(n, w, 0o2) && dac(n, w, 0o1),
                _ => dac(n, w, 0o2),
            };
            let read = dac(n, w, 0o4);
            let why = if write {
                format!("{owner} {:04o} permits {user}", n.mode)
            } else {
                format!("{owner} {:04o}: {user} lacks write permission", n.mode)
            };
            (write, read, why)
        }
    };
    let ll_write = d.rule == "read_write";
    let reason = match (ll_write, dac_write) {
        (true, true) => format!("Landlock read_write and {reason}"),
        (true, false) => format!("Landlock allows writes but DAC denies: {reason}"),
        (false, _) => "Landlock read_only".to_string(),
    };
    Access {
        path: d.path.clone(),
        user: user.to_string(),
        declared: d.rule.to_string(),
        inherited_from: d.inherited_from.clone(),
        exists: node.is_some(),
        owner,
        mode,
        dac_write,
        effective_write: ll_write && dac_write,
        effective_read: dac_read,
        reason,
    }
}

/// The `policy` text table. Every column is as wide as its longest cell, so rows stay
/// aligned whatever the path or user name length; control characters in a cell are
/// escaped (`\n`, `\u{1b}`), so a directory name from the image cannot break a row in
/// two or forge one.
pub fn table(rows: &[Access]) -> String {
    const HEAD: [&str; 7] = [
        "PATH", "USER", "LANDLOCK", "OWNER", "MODE", "WRITE", "REASON",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.path.as_str(),
                &r.user,
                &r.declared,
                &r.owner,
                &r.mode,
                if r.effective_write { "yes" } else { "no" },
                &r.reason,
            ]
            .map(crate::tarread::escape_controls)
        })
        .collect();
    let mut width = HEAD.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(HEAD.map(str::to_string)).chain(cells) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                let pad = width[i] - c.chars().count();
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', pad + 1));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Declaration problems: read_write paths missing from the image, paths in both lists.
pub fn lint(fs: &Rootfs, recipe: &Recipe) -> Vec<String> {
    let Some(l) = &recipe.landlock else {
        return vec![];
    };
    let mut w = Vec::new();
    for p in &l.read_write {
        if l.read_only.contains(p) {
            w.push(format!("{p} is declared both read_only and read_write"));
        }
        let runtime = p.starts_with("/proc") || p.starts_with("/dev") || p == "/tmp";
        if !runtime
            && fs
                .resolve(p)
                .and_then(|k| fs.nodes.get(k.as_str()).map(|_| ()))
                .is_none()
        {
            w.push(format!("read_write path {p} does not exist in the image"));
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with accounts and the given directories (0755 root, or 1777 for /tmp).
    fn image(dirs: &[&str]) -> Rootfs {
        let mut fs = Rootfs::new();
        let passwd = b"root:x:0:0::/root:/bin/sh\nsandbox:x:1000:1000::/sandbox:/bin/sh\n";
        fs.insert("etc/passwd", Node::file(0o644, 0, 0, passwd.to_vec()))
            .expect("passwd");
        fs.insert(
            "etc/group",
            Node::file(0o644, 0, 0, b"root:x:0:\nsandbox:x:1000:\n".to_vec()),
        )
        .expect("group");
        for d in dirs {
            fs.insert(d, Node::dir(0o755, 1000, 1000)).expect("dir");
        }
        fs
    }

    fn recipe(read_write: &[&str], users: &[&str]) -> Recipe {
        recipe_in("", read_write, users)
    }

    /// [`recipe`] with `extra` TOML first (an `[image]` table) and `include_workdir`
    /// set when it is not empty.
    fn recipe_in(extra: &str, read_write: &[&str], users: &[&str]) -> Recipe {
        let list = |v: &[&str]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Recipe::from_str(
            &format!(
                "name = \"t\"\n{extra}\n[landlock]\npath = \"/etc/ll.json\"\nread_only = [\"/usr\"]\nread_write = [{}]\nusers = [{}]\ninclude_workdir = {}\n",
                list(read_write),
                list(users),
                !extra.is_empty()
            ),
            "test",
        )
        .expect("recipe")
    }

    /// Byte offset of each column start (two or more spaces never occur inside a cell
    /// here, so a column starts after a run of spaces).
    fn column_starts(line: &str) -> Vec<usize> {
        let b = line.as_bytes();
        (1..b.len())
            .filter(|&i| b[i] != b' ' && b[i - 1] == b' ')
            .collect()
    }

    /// Effective access is Landlock's rule AND the POSIX bits the user gets as owner,
    /// through a group (supplementary ones included, as initgroups sets them) or as
    /// other; a directory needs w and x. Directories below a read_write one are
    /// listed as inheriting it, files and deeper directories are not.
    #[test]
    fn effective_access_combines_landlock_and_dac() {
        let mut fs = image(&["sandbox", "sandbox/x", "sandbox/x/deep", "usr"]);
        fs.write(
            "etc/group",
            b"root:x:0:\nsandbox:x:1000:\ndata:x:2000:sandbox\n".to_vec(),
        )
        .expect("group");
        for (path, node) in [
            ("sandbox/f", Node::file(0o777, 1000, 1000, vec![])),
            ("srv/shared", Node::dir(0o770, 0, 2000)),
            ("srv/drop", Node::dir(0o722, 0, 0)),
            ("srv/file", Node::file(0o606, 5, 5, vec![])),
            ("srv/locked", Node::dir(0o750, 0, 1000)),
            ("srv/mine", Node::file(0o444, 1000, 0, vec![])),
            ("work", Node::dir(0o755, 0, 0)),
        ] {
            fs.insert(path, node).expect(path);
        }
        let rw = [
            "/sandbox",
            "/srv/shared",
            "/srv/drop",
            "/srv/file",
            "/srv/locked",
            "/srv/mine",
            "/proc/self",
            "/srv/nothere",
        ];
        let r = recipe_in("[image]\nworkdir = \"/work\"", &rw, &["sandbox", "ghost"]);
        let rows = effective(&fs, &r);
        let got: Vec<String> = rows
            .iter()
            .map(|a| {
                let inherited = a.inherited_from.as_deref().unwrap_or("-");
                let flag = |b: bool| if b { "y" } else { "n" };
                format!(
                    "{} {} {} {inherited} {} {} {} dac_w={} w={} r={}",
                    a.user,
                    a.path,
                    a.declared,
                    flag(a.exists),
                    a.owner,
                    a.mode,
                    flag(a.dac_write),
                    flag(a.effective_write),
                    flag(a.effective_read)
                )
            })
            .collect();
        let want = [
            "sandbox /usr read_only - y sandbox:sandbox 0755 dac_w=y w=n r=y",
            "sandbox /sandbox read_write - y sandbox:sandbox 0755 dac_w=y w=y r=y",
            "sandbox /srv/shared read_write - y root:data 0770 dac_w=y w=y r=y",
            "sandbox /srv/drop read_write - y root:root 0722 dac_w=n w=n r=n",
            "sandbox /srv/file read_write - y 5:5 0606 dac_w=y w=y r=y",
            "sandbox /srv/locked read_write - y root:sandbox 0750 dac_w=n w=n r=y",
            "sandbox /srv/mine read_write - y sandbox:root 0444 dac_w=n w=n r=y",
            "sandbox /proc/self read_write - n - - dac_w=y w=y r=y",
            "sandbox /srv/nothere read_write - n - - dac_w=n w=n r=n",
            "sandbox /work read_write - y root:root 0755 dac_w=n w=n r=y",
            "sandbox /sandbox/x read_write /sandbox y sandbox:sandbox 0755 dac_w=y w=y r=y",
        ];
        assert_eq!(got[..want.len()], want, "{got:#?}");
        assert_eq!(got.len(), 2 * want.len(), "{got:#?}");
        for a in &rows[want.len()..] {
            assert!(!a.dac_write && !a.effective_read, "{a:?}");
        }
        let reason = |user: &str, path: &str| {
            rows.iter()
                .find(|a| a.user == user && a.path == path)
                .map(|a| a.reason.as_str())
        };
        for (user, path, why) in [
            ("sandbox", "/usr", "Landlock read_only"),
            (
                "sandbox",
                "/sandbox",
                "Landlock read_write and sandbox:sandbox 0755 permits sandbox",
            ),
            (
                "sandbox",
                "/srv/drop",
                "Landlock allows writes but DAC denies: root:root 0722: sandbox lacks write permission",
            ),
            (
                "sandbox",
                "/proc/self",
                "Landlock read_write and runtime filesystem (not in the image)",
            ),
            (
                "sandbox",
                "/srv/nothere",
                "Landlock allows writes but DAC denies: path does not exist in the image",
            ),
            (
                "ghost",
                "/sandbox",
                "Landlock allows writes but DAC denies: user ghost does not exist",
            ),
        ] {
            assert_eq!(reason(user, path), Some(why), "{user} {path}");
        }
    }

    /// The workdir is added to read_write once; the root as a read_write path lists
    /// no directories below it (every path is below it).
    #[test]
    fn workdir_is_declared_once_and_root_lists_no_children() {
        let fs = image(&["sandbox", "sandbox/x", "usr"]);
        let r = recipe_in(
            "[image]\nworkdir = \"/sandbox\"",
            &["/sandbox"],
            &["sandbox"],
        );
        let paths: Vec<String> = effective(&fs, &r).into_iter().map(|a| a.path).collect();
        assert_eq!(paths, ["/usr", "/sandbox", "/sandbox/x"]);
        let r = recipe(&["/"], &["sandbox"]);
        let paths: Vec<String> = effective(&fs, &r).into_iter().map(|a| a.path).collect();
        assert_eq!(paths, ["/usr", "/"]);
        assert!(effective(&fs, &Recipe::default()).is_empty());
    }

    /// The policy file goes where the recipe says, read-only, with the workdir in it;
    /// lint names read_write paths the image lacks (runtime filesystems aside) and
    /// paths declared in both lists.
    #[test]
    fn write_places_the_policy_and_lint_names_missing_paths() {
        let mut fs = image(&["sandbox", "usr", "work"]);
        let rw = ["/usr", "/proc/self", "/dev/shm", "/tmp", "/srv/nothere"];
        let r = recipe_in("[image]\nworkdir = \"/work\"", &rw, &["sandbox"]);
        write(&mut fs, &r).expect("write");
        let n = fs.get("etc/ll.json").expect("policy");
        assert_eq!((n.mode, n.uid, n.gid), (0o444, 0, 0));
        let json = String::from_utf8(fs.read("etc/ll.json").expect("read")).expect("utf-8");
        assert!(
            json.contains("\"/work\"") && json.contains("\"/srv/nothere\""),
            "{json}"
        );
        assert_eq!(
            lint(&fs, &r),
            [
                "/usr is declared both read_only and read_write",
                "read_write path /srv/nothere does not exist in the image"
            ]
        );
        assert!(lint(&fs, &Recipe::default()).is_empty());
    }

    #[test]
    fn table_columns_align_for_long_paths_and_users() {
        let long = "/sandbox/a-directory-name-well-beyond-twenty-four-characters";
        let fs = image(&["sandbox", &long[1..], "usr"]);
        let r = recipe(&[long], &["sandbox", "a-rather-long-user-name"]);
        let rows = effective(&fs, &r);
        assert_eq!(rows.len(), 4, "{rows:?}");
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("PATH "), "{text}");
        // USER, LANDLOCK, OWNER, MODE, WRITE and REASON start at the same offsets on
        // every line: the first five columns of each row.
        let head = column_starts(lines[0]);
        assert_eq!(head.len(), 6, "{text}");
        for l in &lines[1..] {
            assert_eq!(column_starts(l)[..5], head[..5], "misaligned:\n{text}");
            assert!(!l.ends_with(' '), "trailing space: {l:?}");
        }
        assert!(text.contains(long), "{text}");
    }

    #[test]
    fn table_escapes_control_characters_of_image_names() {
        // A directory below a read_write path is listed by its name in the image: a
        // newline in it must not start a forged row.
        let forged = "sandbox/x\nforged                     sandbox  read_write";
        let fs = image(&["sandbox", forged]);
        let r = recipe(&["/sandbox"], &["sandbox"]);
        let text = table(&effective(&fs, &r));
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("/sandbox/x\\nforged "), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("forged")), "{text}");
    }
}
