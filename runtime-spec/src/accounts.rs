//! The image's `etc/passwd` and `etc/group`, parsed the one way both sides use.
//!
//! The init is a static musl binary without NSS, and it must resolve the users of the
//! *image* (not whatever a libc would consult), so it parses the files itself; the builder's
//! `audit` judges the same files with the same parser, so both agree on who a user is.
//! Parsing is strict: a line with the wrong number of fields or a non-numeric id is skipped
//! and counted, never guessed at.

/// One `/etc/passwd` entry (only the fields the init needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parsed entries plus the 1-based numbers of lines that were skipped as malformed.
#[derive(Debug)]
pub struct Parsed<T> {
    pub entries: Vec<T>,
    pub malformed: Vec<usize>,
}

impl<T> Default for Parsed<T> {
    fn default() -> Self {
        Parsed {
            entries: Vec::new(),
            malformed: Vec::new(),
        }
    }
}

/// An id usable as a real/effective/saved id. `u32::MAX` is `(uid_t)-1`, which the
/// set*id calls read as "leave unchanged" -- accepting it would silently keep root.
fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

/// Lines that carry no entry: blank lines and comments.
fn is_ignorable(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// A usable account or group name (NIS `+`/`-` compat lines are not supported).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('+')
        && !name.starts_with('-')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses passwd(5) text: `name:password:uid:gid:gecos:home:shell`.
pub fn parse_passwd(text: &str) -> Parsed<User> {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        if is_ignorable(line) {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let user = match f.as_slice() {
            [name, _pw, uid, gid, _gecos, home, shell] if valid_name(name) => {
                match (parse_id(uid), parse_id(gid)) {
                    (Some(uid), Some(gid)) => Some(User {
                        name: (*name).to_string(),
                        uid,
                        gid,
                        home: (*home).to_string(),
                        shell: (*shell).to_string(),
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        match user {
            Some(u) => out.entries.push(u),
            None => out.malformed.push(i + 1),
        }
    }
    out
}

/// Parses group(5) text: `name:password:gid:member,member`.
pub fn parse_group(text: &str) -> Parsed<Group> {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        if is_ignorable(line) {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let group = match f.as_slice() {
            [name, _pw, gid, members] if valid_name(name) => parse_id(gid).map(|gid| Group {
                name: (*name).to_string(),
                gid,
                members: members
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            }),
            _ => None,
        };
        match group {
            Some(g) => out.entries.push(g),
            None => out.malformed.push(i + 1),
        }
    }
    out
}

/// The image's account database.
#[derive(Debug, Default)]
pub struct Accounts {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    /// Human-readable notes about skipped lines or missing files, for the log.
    pub notes: Vec<String>,
}

impl Accounts {
    /// Builds the database from file contents (`group` may be absent).
    pub fn from_texts(passwd: &str, group: Option<&str>) -> Accounts {
        let p = parse_passwd(passwd);
        let mut notes = Vec::new();
        if !p.malformed.is_empty() {
            notes.push(format!(
                "passwd: skipped malformed line(s) {:?}",
                p.malformed
            ));
        }
        let groups = match group {
            Some(text) => {
                let g = parse_group(text);
                if !g.malformed.is_empty() {
                    notes.push(format!(
                        "group: skipped malformed line(s) {:?}",
                        g.malformed
                    ));
                }
                g.entries
            }
            None => {
                notes.push("group file missing: only primary groups are used".to_string());
                Vec::new()
            }
        };
        Accounts {
            users: p.entries,
            groups,
            notes,
        }
    }

    /// First passwd entry with this name, as getpwnam() over files would return.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Supplementary groups as `initgroups(3)` computes them: the primary gid first, then
    /// every group that lists the user as a member, without duplicates.
    pub fn init_groups(&self, user: &User) -> Vec<u32> {
        let mut gids = vec![user.gid];
        for g in &self.groups {
            if g.members.iter().any(|m| m == &user.name) && !gids.contains(&g.gid) {
                gids.push(g.gid);
            }
        }
        gids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The users and groups of the NemoClaw image (facts: "Users and groups").
    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        gateway:x:999:999::/sandbox:/usr/sbin/nologin\n\
        sandbox:x:998:998::/sandbox:/bin/bash\n";
    const GROUP: &str = "root:x:0:\n\
        daemon:x:1:\n\
        gateway:x:999:\n\
        sandbox:x:998:gateway,root\n";

    #[test]
    fn parses_image_passwd() {
        let p = parse_passwd(PASSWD);
        assert!(p.malformed.is_empty());
        assert_eq!(p.entries.len(), 4);
        let sb = &p.entries[3];
        assert_eq!(
            sb,
            &User {
                name: "sandbox".into(),
                uid: 998,
                gid: 998,
                home: "/sandbox".into(),
                shell: "/bin/bash".into()
            }
        );
    }

    #[test]
    fn passwd_skips_malformed_lines() {
        let text = "# comment\n\
            \n\
            good:x:1000:1000::/home/good:/bin/sh\n\
            short:x:1001:1001\n\
            toolong:x:1:1:g:/h:/s:extra\n\
            letters:x:abc:1::/h:/s\n\
            negative:x:-1:1::/h:/s\n\
            minusone:x:4294967295:1::/h:/s\n\
            overflow:x:4294967296:1::/h:/s\n\
            emptyuid:x::1::/h:/s\n\
            :x:5:5::/h:/s\n\
            +nis::::::\n\
            spaced :x:7:7::/h:/s\n\
            last:x:2000:2000::/home/last:/bin/sh";
        let p = parse_passwd(text);
        let names: Vec<&str> = p.entries.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["good", "last"]);
        assert_eq!(p.malformed, vec![4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    }

    #[test]
    fn group_parsing_and_malformed_lines() {
        let text = "sandbox:x:998:gateway, root,\n\
            broken:x:998\n\
            badgid:x:x:a\n\
            empty:x:5:\n";
        let g = parse_group(text);
        assert_eq!(g.malformed, vec![2, 3]);
        assert_eq!(g.entries.len(), 2);
        assert_eq!(g.entries[0].members, vec!["gateway", "root"]);
        assert!(g.entries[1].members.is_empty());
    }

    #[test]
    fn gateway_gets_sandbox_supplementary_group() {
        let a = Accounts::from_texts(PASSWD, Some(GROUP));
        let gw = a.user("gateway").expect("gateway");
        assert_eq!((gw.uid, gw.gid), (999, 999));
        assert_eq!(a.init_groups(gw), vec![999, 998]);
        let sb = a.user("sandbox").expect("sandbox");
        assert_eq!(a.init_groups(sb), vec![998]);
        let root = a.user("root").expect("root");
        assert_eq!(a.init_groups(root), vec![0, 998]);
        assert!(a.user("nobody").is_none());
    }

    #[test]
    fn init_groups_no_duplicates_and_no_substring_match() {
        let passwd = "gw:x:10:10::/:/bin/sh\n";
        let group = "gw:x:10:gw\nother:x:11:gwx,xgw\nboth:x:12:gw,gw\n";
        let a = Accounts::from_texts(passwd, Some(group));
        let u = a.user("gw").expect("gw");
        assert_eq!(a.init_groups(u), vec![10, 12]);
    }

    #[test]
    fn first_duplicate_user_wins_and_missing_group_file_is_noted() {
        let passwd = "dup:x:1:1::/a:/bin/sh\ndup:x:0:0::/root:/bin/sh\nbad\n";
        let a = Accounts::from_texts(passwd, None);
        assert_eq!(a.user("dup").map(|u| u.uid), Some(1));
        assert_eq!(a.notes.len(), 2);
        assert_eq!(a.init_groups(&a.users[0]), vec![1]);
    }
}
