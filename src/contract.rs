//! The OpenShell image contract, as audit rules that apply to any image.
//!
//! OpenShell pins the image by ID, resolves the raw `Config.User` against the image's own
//! /etc/passwd and /etc/group and rejects root identities; it turns `WorkingDir` into the
//! workload's cwd and HOME; and its supervisor runs `ip` and `nsenter` *from the image*, as
//! root, before the sandbox exists (shared/reference/upstream-2026.md A4, A6). An image that
//! breaks one of these fails at `onboard --from-image`, long after our build said "done",
//! so the rules live here and `audit` reports them with the field or path named.
use crate::finding::{Finding, Severity};
use crate::oci::RunConfig;
use crate::rootfs::{Kind, Node, Rootfs};
use nemoclaw_runtime_spec::accounts::Accounts;
use serde_json::Value;

/// Where OpenShell looks for `ip` (the first one present is used) and `nsenter`.
const IP_PATHS: [&str; 4] = ["usr/sbin/ip", "sbin/ip", "usr/bin/ip", "bin/ip"];
const NSENTER_PATHS: [&str; 4] = [
    "usr/bin/nsenter",
    "bin/nsenter",
    "usr/sbin/nsenter",
    "sbin/nsenter",
];

fn err(id: &str, path: &str, message: String) -> Finding {
    Finding {
        id: id.into(),
        severity: Severity::Error,
        path: path.into(),
        message,
    }
}

/// Who the image runs as, resolved the way OpenShell does.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Resolves `Config.User` (`name`, `uid`, `name:group`, `uid:gid`) against the image's own
/// account files, refusing what OpenShell refuses.
pub fn resolve_user(user: &str, acc: &Accounts) -> Result<Identity, String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() {
        return Err("no User set: the image runs as root".into());
    }
    let numeric = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let entry = match numeric(u) {
        Some(uid) => acc.users.iter().find(|e| e.uid == uid),
        None => acc.user(u),
    };
    let uid = match (numeric(u), entry) {
        (_, Some(e)) => e.uid,
        (Some(uid), None) if g.is_some() => uid,
        (Some(uid), None) => {
            return Err(format!(
                "numeric user {uid} has no passwd entry and no group"
            ))
        }
        (None, None) => return Err(format!("user {u:?} is not in the image's /etc/passwd")),
    };
    if uid == 0 || u == "root" {
        return Err(format!("User {user:?} selects root"));
    }
    if uid == u32::MAX {
        return Err(format!("User {user:?} is uid 4294967295 ((uid_t)-1)"));
    }
    let gid = match g {
        Some(g) => match numeric(g) {
            Some(gid) => gid,
            None => acc
                .groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
        None => entry.map(|e| e.gid).unwrap_or(0),
    };
    let group_is_root = gid == 0
        || g == Some("root")
        || acc.groups.iter().any(|e| e.gid == gid && e.name == "root");
    if group_is_root {
        return Err(format!("User {user:?} has primary group 0 (root)"));
    }
    if gid == u32::MAX {
        return Err(format!("User {user:?} has gid 4294967295"));
    }
    let groups = match entry {
        Some(e) if g.is_none() => acc.init_groups(e),
        _ => vec![gid],
    };
    Ok(Identity { uid, gid, groups })
}

/// POSIX write+search permission on a directory for `who` (no capabilities: OpenShell
/// drops them all).
fn can_write_dir(n: &Node, who: &Identity) -> bool {
    let shift = if n.uid == u64::from(who.uid) {
        6
    } else if who.groups.iter().any(|g| u64::from(*g) == n.gid) {
        3
    } else {
        0
    };
    (n.mode >> shift) & 0o3 == 0o3
}

/// The first symlink on the way to `path` (each prefix checked), if any.
fn symlink_in_path(fs: &Rootfs, key: &str) -> Option<String> {
    let mut acc = String::new();
    for c in key.split('/').filter(|c| !c.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(c);
        if fs
            .nodes
            .get(acc.as_str())
            .is_some_and(|n| n.kind() == Kind::Symlink)
        {
            return Some(format!("/{acc}"));
        }
    }
    None
}

fn check_workdir(fs: &Rootfs, run: &RunConfig, who: Option<&Identity>, out: &mut Vec<Finding>) {
    let wd = run.working_dir.clone().flatten().unwrap_or_default();
    let wd = wd.as_str();
    if matches!(wd, "" | "/" | "/sandbox") {
        return; // OpenShell owns /sandbox and uses it for these
    }
    let field = "config.WorkingDir";
    if !wd.starts_with('/') {
        out.push(err(
            "openshell-workdir",
            field,
            format!("WorkingDir {wd:?} is not absolute"),
        ));
        return;
    }
    let key = wd.trim_matches('/');
    if let Some(link) = symlink_in_path(fs, key) {
        out.push(err(
            "openshell-workdir",
            field,
            format!("WorkingDir {wd} goes through the symlink {link}"),
        ));
        return;
    }
    match fs.nodes.get(key) {
        Some(n) if n.kind() == Kind::Dir => {
            if let Some(who) = who {
                if !can_write_dir(n, who) {
                    out.push(err(
                        "openshell-workdir",
                        field,
                        format!(
                            "WorkingDir {wd} ({}:{} {:04o}) is not writable by uid {}",
                            n.uid, n.gid, n.mode, who.uid
                        ),
                    ));
                }
            }
        }
        Some(n) => out.push(err(
            "openshell-workdir",
            field,
            format!("WorkingDir {wd} is a {:?}, not a directory", n.kind()).to_lowercase(),
        )),
        None => out.push(err(
            "openshell-workdir",
            field,
            format!("WorkingDir {wd} does not exist in the image"),
        )),
    }
    for v in run
        .extra
        .get("Volumes")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
    {
        let vol = v.trim_end_matches('/');
        if wd == vol || wd.starts_with(&format!("{vol}/")) {
            out.push(err(
                "openshell-workdir",
                field,
                format!("WorkingDir {wd} is covered by VOLUME {v}"),
            ));
        }
    }
}

/// `ip`/`nsenter`: present, a root-owned executable nobody else can change.
fn check_root_tool(fs: &Rootfs, name: &str, paths: &[&str], out: &mut Vec<Finding>) {
    let found = paths.iter().find_map(|p| {
        let key = fs.resolve(p)?;
        let n = fs.nodes.get(key.as_str())?;
        Some((p, key, n))
    });
    let Some((p, key, n)) = found else {
        out.push(err(
            "openshell-tool",
            &format!("/{}", paths[0]),
            format!("{name} is missing: the OpenShell supervisor runs it from the image as root"),
        ));
        return;
    };
    let target = if n.kind() == Kind::Hardlink {
        n.link().and_then(|l| fs.nodes.get(l)).unwrap_or(n)
    } else {
        n
    };
    let mut problems = Vec::new();
    if target.kind() != Kind::File {
        problems.push(format!("is a {:?}", target.kind()).to_lowercase());
    }
    if target.mode & 0o111 == 0 {
        problems.push("is not executable".to_string());
    }
    if target.uid != 0 {
        problems.push(format!("is owned by uid {}", target.uid));
    }
    if target.mode & 0o022 != 0 {
        problems.push(format!("is group/world-writable ({:04o})", target.mode));
    }
    if !problems.is_empty() {
        out.push(err(
            "openshell-tool",
            &format!("/{p}"),
            format!(
                "{name} (/{key}) {}: the supervisor runs it as root",
                problems.join(", ")
            ),
        ));
    }
}

fn check_entrypoint(fs: &Rootfs, run: &RunConfig, out: &mut Vec<Finding>) {
    let first = |v: &Option<Option<Vec<String>>>| v.clone().flatten()?.first().cloned();
    let Some(prog) = first(&run.entrypoint).or_else(|| first(&run.cmd)) else {
        out.push(err(
            "openshell-entrypoint",
            "config.Entrypoint",
            "no Entrypoint or Cmd: OpenShell has no main process to start".into(),
        ));
        return;
    };
    if !prog.starts_with('/') {
        return; // resolved on PATH at run time; `require` rules cover commands
    }
    let ok = fs
        .resolve(&prog)
        .and_then(|k| fs.nodes.get(k.as_str()))
        .is_some_and(|n| matches!(n.kind(), Kind::File | Kind::Hardlink) && n.mode & 0o111 != 0);
    if !ok {
        out.push(err(
            "openshell-entrypoint",
            "config.Entrypoint",
            format!("entrypoint {prog} is not an executable file in the image"),
        ));
    }
}

/// All contract findings for an image, from its runtime config.
pub fn findings(fs: &Rootfs, run: &RunConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let text = |p: &str| {
        fs.read(p)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let acc = Accounts::from_texts(
        &text("etc/passwd").unwrap_or_default(),
        text("etc/group").as_deref(),
    );
    let user = run.user.clone().flatten().unwrap_or_default();
    let who = match resolve_user(&user, &acc) {
        Ok(who) => Some(who),
        Err(e) => {
            out.push(err("openshell-user", "config.User", e));
            None
        }
    };
    check_workdir(fs, run, who.as_ref(), &mut out);
    check_root_tool(fs, "ip", &IP_PATHS, &mut out);
    check_root_tool(fs, "nsenter", &NSENTER_PATHS, &mut out);
    check_entrypoint(fs, run, &mut out);
    out
}

/// Labels a recipe requires (e.g. upstream's managed-image labels), present and non-empty.
pub fn missing_labels(run: &RunConfig, required_labels: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    for l in required_labels {
        if run.labels.get(l).is_none_or(|v| v.is_empty()) {
            out.push(err(
                "required-label",
                &format!("config.Labels {l}"),
                format!("label {l} is required by the recipe but missing or empty"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        gateway:x:999:999::/sandbox:/usr/sbin/nologin\n\
        sandbox:x:998:998::/sandbox:/bin/bash\n\
        odd:x:1001:0::/home/odd:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ngateway:x:999:\nsandbox:x:998:gateway,root\n";

    fn image() -> Rootfs {
        let mut fs = Rootfs::new();
        fs.insert("etc/passwd", Node::file(0o644, 0, 0, PASSWD.into()))
            .expect("passwd");
        fs.insert("etc/group", Node::file(0o644, 0, 0, GROUP.into()))
            .expect("group");
        fs.insert("usr/sbin/ip", Node::file(0o755, 0, 0, b"\x7fELF".to_vec()))
            .expect("ip");
        fs.insert(
            "usr/bin/nsenter",
            Node::file(0o755, 0, 0, b"\x7fELF".to_vec()),
        )
        .expect("ns");
        fs.insert("sbin", Node::symlink("usr/sbin")).expect("sbin");
        fs.insert(
            "usr/local/bin/init",
            Node::file(0o755, 0, 0, b"\x7fELF".to_vec()),
        )
        .expect("init");
        fs.insert("sandbox", Node::dir(0o755, 998, 998))
            .expect("sandbox");
        fs.insert("srv/app", Node::dir(0o755, 0, 0)).expect("srv");
        fs.insert("srv/work", Node::dir(0o2770, 0, 998))
            .expect("work");
        fs.insert("opt/link", Node::symlink("/srv/work"))
            .expect("link");
        fs
    }

    fn cfg(user: &str, wd: &str) -> Value {
        json!({"User": user, "WorkingDir": wd, "Entrypoint": ["/usr/local/bin/init"],
               "Labels": {"a": "1"}})
    }

    fn run(c: &Value) -> RunConfig {
        serde_json::from_value(c.clone()).expect("a runtime config")
    }

    fn ids(fs: &Rootfs, c: &Value) -> Vec<String> {
        findings(fs, &run(c))
            .into_iter()
            .map(|f| format!("{}: {}", f.id, f.message))
            .collect()
    }

    #[test]
    fn the_sandbox_shape_passes() {
        let fs = image();
        for wd in ["", "/", "/sandbox", "/srv/work"] {
            assert_eq!(ids(&fs, &cfg("sandbox", wd)), Vec::<String>::new(), "{wd}");
        }
        assert_eq!(ids(&fs, &cfg("998", "/sandbox")), Vec::<String>::new());
        assert_eq!(
            ids(&fs, &cfg("sandbox:sandbox", "/sandbox")),
            Vec::<String>::new()
        );
        // A numeric uid without passwd entry is fine when a group is given.
        assert_eq!(ids(&fs, &cfg("4000:998", "/sandbox")), Vec::<String>::new());
    }

    #[test]
    fn root_identities_are_refused() {
        let fs = image();
        for (user, want) in [
            ("", "runs as root"),
            ("root", "selects root"),
            ("0", "selects root"),
            ("0:998", "selects root"),
            ("sandbox:0", "primary group 0"),
            ("sandbox:root", "primary group 0"),
            ("odd", "primary group 0"),
            ("4000", "no passwd entry and no group"),
            ("nobody", "not in the image's /etc/passwd"),
            ("sandbox:nogroup", "not in the image's /etc/group"),
            ("4294967295:998", "4294967295"),
        ] {
            let got = ids(&fs, &cfg(user, "/sandbox"));
            assert!(
                got.len() == 1 && got[0].starts_with("openshell-user") && got[0].contains(want),
                "{user:?}: {got:?}"
            );
        }
    }

    #[test]
    fn workdir_rules() {
        let mut fs = image();
        fs.insert("srv/file", Node::file(0o644, 0, 0, vec![]))
            .expect("file");
        for (wd, want) in [
            ("/srv/app", "not writable by uid 998"),
            ("/opt/link", "symlink /opt/link"),
            ("/opt/link/sub", "symlink /opt/link"),
            ("/srv/none", "does not exist"),
            ("/srv/file", "not a directory"),
            ("relative", "not absolute"),
        ] {
            let got = ids(&fs, &cfg("sandbox", wd));
            assert!(got.len() == 1 && got[0].contains(want), "{wd}: {got:?}");
        }
        let mut c = cfg("sandbox", "/srv/work");
        c["Volumes"] = json!({"/srv": {}});
        let got = ids(&fs, &c);
        assert!(
            got.len() == 1 && got[0].contains("covered by VOLUME /srv"),
            "{got:?}"
        );
    }

    #[test]
    fn root_tools_must_be_present_and_root_owned() {
        let mut fs = image();
        fs.remove("usr/bin/nsenter");
        let got = ids(&fs, &cfg("sandbox", "/sandbox"));
        assert!(
            got.len() == 1 && got[0].contains("nsenter is missing"),
            "{got:?}"
        );
        let mut fs = image();
        fs.get_mut("usr/sbin/ip").expect("ip").mode = 0o775;
        fs.get_mut("usr/sbin/ip").expect("ip").uid = 998;
        let got = ids(&fs, &cfg("sandbox", "/sandbox"));
        assert!(
            got.len() == 1
                && got[0].contains("owned by uid 998")
                && got[0].contains("group/world-writable"),
            "{got:?}"
        );
        // Found through the usrmerge symlink too (/sbin -> usr/sbin).
        let mut fs = image();
        let node = fs.nodes.remove("usr/bin/nsenter").expect("ns");
        fs.insert("usr/sbin/nsenter", *node).expect("moved");
        assert_eq!(ids(&fs, &cfg("sandbox", "/sandbox")), Vec::<String>::new());
    }

    #[test]
    fn entrypoint_and_labels() {
        let fs = image();
        let mut c = cfg("sandbox", "/sandbox");
        c["Entrypoint"] = json!(["/usr/local/bin/missing"]);
        let got = ids(&fs, &c);
        assert!(
            got.len() == 1 && got[0].contains("not an executable"),
            "{got:?}"
        );
        c["Entrypoint"] = Value::Null;
        let got = ids(&fs, &c);
        assert!(
            got.len() == 1 && got[0].contains("no Entrypoint or Cmd"),
            "{got:?}"
        );
        let got: Vec<String> =
            missing_labels(&run(&cfg("sandbox", "/sandbox")), &["a".into(), "b".into()])
                .into_iter()
                .map(|f| f.path)
                .collect();
        assert_eq!(got, vec!["config.Labels b"]);
    }
}
