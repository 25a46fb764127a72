//! `audit` and `policy`: judge any image (ours or not) against a recipe, reading
//! it through the same sources and rootfs model as `build`, in one streaming pass
//! per layer. Memory grows with the number of files, never with their bytes.
use crate::account_fields::{known_ids, Db};
use crate::checks;
use crate::dpkg::DpkgDb;
use crate::imageref::ImageRef;
use crate::index::index_base;
use crate::oci::RunConfig;
use crate::progress::Progress;
use crate::recipe::{Check, FsOp, Recipe};
use crate::rootfs::{Kind, Rootfs};
use crate::scan;
use crate::source::{open_image, OpenOptions};
use crate::steps::purge::db_files;
use anyhow::{Context, Result};
use Severity::{Error, Info, Warning};

pub use crate::finding::{Finding, Severity};

/// An image read into the model, with its config.
pub struct Loaded {
    pub fs: Rootfs,
    pub config: serde_json::Value,
    /// Which platform of an image index was read (see [`crate::source::index_note`]).
    pub note: Option<String>,
}

/// Reads an image into the model, with its config.
pub fn load(image: &str, platform: Option<String>, progress: &Progress) -> Result<Loaded> {
    let r = ImageRef::parse(image)?;
    let mut base = open_image(
        &r,
        &OpenOptions {
            platform,
            // A registry image's pull reports (a tag's warning too) where the command does.
            registry: crate::registry::RegistryOptions {
                progress: progress.clone(),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let note = crate::source::index_note(&r, &base.config);
    let fs = index_base(&mut base, &Default::default(), progress)?;
    Ok(Loaded {
        fs,
        config: base.config.clone(),
        note,
    })
}

fn f(id: &str, sev: Severity, path: &str, msg: String) -> Finding {
    Finding {
        id: id.into(),
        severity: sev,
        path: path.into(),
        message: msg,
    }
}

/// What every audit rule looks at.
struct Subject<'a> {
    fs: &'a Rootfs,
    /// The image config's `config` object (how a container runs).
    run: RunConfig,
    recipe: &'a Recipe,
}

/// One audit rule: adds its findings.
type Rule = fn(&Subject, &mut Vec<Finding>) -> Result<()>;

/// The audit, one rule per concern, each named for readers of this table (the
/// report is sorted afterwards; this order only decides between findings of equal
/// severity, id and path).
const RULES: &[(&str, Rule)] = &[
    ("forbidden commands and toolchain ELF files", forbidden),
    ("ELF bytes hidden by a whiteout but shipped", hidden_bytes),
    ("a path and its whiteout in one layer", same_layer_whiteouts),
    ("required commands", required_commands),
    ("purged and kept packages", packages),
    ("the recipe's checks", recipe_checks),
    ("the declared layout and hooks", layout),
    ("entrypoint is the init", entrypoint),
    ("OpenShell contract", openshell),
    ("required labels", required_labels),
    ("non-root user", root_user),
    ("secrets in Env and Labels", secrets),
    ("setuid and setgid files", setid),
    ("file capabilities", capabilities),
    ("world-writable paths", world_writable),
    ("owners missing from /etc/passwd", unknown_uid),
    ("device nodes", device_nodes),
];

/// All findings for a loaded image.
pub fn findings(fs: &Rootfs, config: &serde_json::Value, recipe: &Recipe) -> Result<Vec<Finding>> {
    let cfg = config.get("config").cloned().unwrap_or_default();
    let run = match &cfg {
        serde_json::Value::Null => RunConfig::default(),
        v => serde_json::from_value(v.clone()).context("image config: config")?,
    };
    let subject = Subject { fs, run, recipe };
    let mut out = Vec::new();
    for (_, rule) in RULES {
        rule(&subject, &mut out)?;
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.id.cmp(&b.id))
            .then(a.path.cmp(&b.path))
    });
    Ok(out)
}

fn forbidden(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    for h in scan::forbidden(s.fs, &s.recipe.packages)? {
        let id = if h.rule == "toolchain ELF" {
            "toolchain-elf"
        } else {
            "forbidden-command"
        };
        let target = h.target.map(|t| format!(" (-> {t})")).unwrap_or_default();
        out.push(f(id, Error, &h.path, format!("{} present{target}", h.rule)));
    }
    Ok(())
}

/// Whited-out but still shipped: invisible at runtime, still in the image bytes.
fn hidden_bytes(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    let elf_res: Vec<regex_lite::Regex> = s
        .recipe
        .packages
        .forbid_elf
        .iter()
        .filter_map(|r| regex_lite::Regex::new(r).ok())
        .collect();
    for h in &s.fs.hidden {
        let base = h.path.rsplit('/').next().unwrap_or(&h.path);
        if h.elf && elf_res.iter().any(|r| r.is_match(base)) {
            out.push(f(
                "bytes-still-shipped",
                Warning,
                &format!("/{}", h.path),
                format!(
                    "hidden by a whiteout but its {} bytes still ship in layer {}",
                    h.size,
                    h.layer + 1
                ),
            ));
        }
    }
    Ok(())
}

fn same_layer_whiteouts(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    for w in &s.fs.same_layer_whiteouts {
        out.push(f(
            "whiteout-same-layer",
            Warning,
            &format!("/{}", w.path),
            format!(
                "layer {} holds both this path and the whiteout /{} naming it; the OCI spec keeps the path (whiteouts apply to lower layers only), but some runtimes delete it or fail to unpack the layer",
                w.layer + 1,
                w.whiteout
            ),
        ));
    }
    Ok(())
}

fn required_commands(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    for m in scan::missing_required(s.fs, &s.recipe.packages) {
        out.push(f(
            "required-command-missing",
            Error,
            &m,
            format!("required command {m} is not an executable on PATH"),
        ));
    }
    Ok(())
}

fn packages(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    let pk = &s.recipe.packages;
    if s.fs.get("var/lib/dpkg/status").is_none() || pk.purge.is_empty() {
        return Ok(());
    }
    let db = DpkgDb::parse(&db_files(s.fs)?)?;
    for name in pk.purge.iter().filter(|n| db.is_installed(n)) {
        out.push(f(
            "package-installed",
            Error,
            "/var/lib/dpkg/status",
            format!("package {name} should be purged but is installed"),
        ));
    }
    for name in pk.keep.iter().filter(|n| !db.is_installed(n)) {
        out.push(f(
            "kept-package-missing",
            Warning,
            "/var/lib/dpkg/status",
            format!("package {name} should be kept but is not installed"),
        ));
    }
    Ok(())
}

fn recipe_checks(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    for c in &s.recipe.checks {
        for msg in checks::evaluate(s.fs, c) {
            out.push(f("check", Error, &c.path, msg));
        }
    }
    Ok(())
}

/// Declared layout and hooks, as checks derived from the recipe's fs operations.
fn layout(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    for c in s.recipe.fs.iter().filter_map(derived_check) {
        for msg in checks::evaluate(s.fs, &c) {
            out.push(f("layout", Error, &c.path, msg));
        }
    }
    Ok(())
}

/// The check a `dir`, `file` or `prepend` operation implies.
fn derived_check(op: &FsOp) -> Option<Check> {
    match op {
        FsOp::Dir {
            path,
            owner,
            group,
            mode,
        } => Some(Check {
            owner: owner.clone(),
            group: group.clone(),
            mode: *mode,
            kind: Some("dir".into()),
            ..Check::at(path)
        }),
        FsOp::File {
            path,
            owner,
            group,
            mode,
            ..
        } => Some(Check {
            owner: owner.clone(),
            group: group.clone(),
            mode: *mode,
            ..Check::at(path)
        }),
        FsOp::Prepend {
            path,
            lines,
            before,
        } => Some(Check {
            must_contain: lines.clone(),
            before: before.clone(),
            ..Check::at(path)
        }),
        _ => None,
    }
}

fn entrypoint(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    if let Some(init) = &s.recipe.init {
        let ep: Vec<String> = s.run.entrypoint.clone().flatten().unwrap_or_default();
        if ep.first() != Some(&init.path) {
            out.push(f(
                "entrypoint",
                Error,
                &init.path,
                format!("entrypoint is {ep:?}, expected the init {}", init.path),
            ));
        }
    }
    Ok(())
}

fn openshell(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    if s.recipe.audit.openshell {
        out.extend(crate::contract::findings(s.fs, &s.run));
    }
    Ok(())
}

fn required_labels(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    out.extend(crate::contract::missing_labels(
        &s.run,
        &s.recipe.audit.required_labels,
    ));
    Ok(())
}

fn root_user(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    let user = s.run.user.clone().flatten().unwrap_or_default();
    let uname = user.split(':').next().unwrap_or("");
    if !s.recipe.audit.openshell && (uname.is_empty() || uname == "root" || uname == "0") {
        out.push(f(
            "root-user",
            Error,
            "config.User",
            format!("image runs as root (User = {user:?})"),
        ));
    }
    Ok(())
}

fn secrets(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    let pats: Vec<regex_lite::Regex> = s
        .recipe
        .audit
        .secret_patterns
        .iter()
        .filter_map(|p| regex_lite::Regex::new(p).ok())
        .collect();
    let env = s.run.env.iter().map(|e| {
        let name = e.split('=').next().unwrap_or("");
        (format!("config.Env {name}"), e.clone())
    });
    let labels =
        (s.run.labels.iter()).map(|(k, v)| (format!("config.Labels {k}"), format!("{k}={v}")));
    for (where_, t) in env.chain(labels) {
        if pats.iter().any(|p| p.is_match(&t)) {
            out.push(f(
                "secret",
                Error,
                &where_,
                "looks like a secret (API key or token)".into(),
            ));
        }
    }
    Ok(())
}

/// Every node with its absolute path.
fn nodes<'a>(s: &'a Subject) -> impl Iterator<Item = (String, &'a crate::rootfs::Node)> {
    s.fs.nodes
        .iter()
        .map(|(path, n)| (format!("/{path}"), &**n))
}

fn setid(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    for (p, n) in nodes(s).filter(|(_, n)| n.kind() == Kind::File) {
        if n.mode & 0o4000 != 0 {
            let msg = format!("setuid file (owner uid {})", n.uid);
            out.push(f("setuid", Warning, &p, msg));
        }
        if n.mode & 0o2000 != 0 {
            let msg = format!("setgid file (group gid {})", n.gid);
            out.push(f("setgid", Info, &p, msg));
        }
    }
    Ok(())
}

fn capabilities(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    for (p, n) in nodes(s) {
        if n.xattrs().contains_key("security.capability") {
            let msg = "file has capabilities (security.capability)".into();
            out.push(f("file-capability", Warning, &p, msg));
        }
    }
    Ok(())
}

fn world_writable(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    let allowed = |p: &str| {
        s.recipe
            .audit
            .allow_world_writable
            .iter()
            .any(|a| p.starts_with(a))
    };
    for (p, n) in nodes(s) {
        let sticky_dir = n.kind() == Kind::Dir && n.mode & 0o1000 != 0;
        if n.kind() != Kind::Symlink && n.mode & 0o002 != 0 && !sticky_dir && !allowed(&p) {
            let msg = format!(
                "world-writable {:?} without sticky bit ({:04o})",
                n.kind(),
                n.mode
            );
            out.push(f("world-writable", Warning, &p, msg.to_lowercase()));
        }
    }
    Ok(())
}

fn unknown_uid(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    let passwd = String::from_utf8_lossy(&s.fs.read("etc/passwd").unwrap_or_default()).into_owned();
    if passwd.is_empty() {
        return Ok(());
    }
    let known = known_ids(&passwd, Db::Passwd);
    for (p, n) in nodes(s) {
        if !known.contains(&n.uid) {
            let msg = format!("owned by uid {} which is not in /etc/passwd", n.uid);
            out.push(f("unknown-uid", Warning, &p, msg));
        }
    }
    Ok(())
}

fn device_nodes(s: &Subject, out: &mut Vec<Finding>) -> Result<()> {
    for (p, n) in nodes(s) {
        if matches!(n.kind(), Kind::Char | Kind::Block) {
            let msg = format!("device node {}:{}", n.dev().0, n.dev().1);
            out.push(f("device-node", Warning, &p, msg));
        }
    }
    Ok(())
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn junit(image: &str, fs: &[Finding], fail_on: Severity) -> String {
    let failing: Vec<&Finding> = fs.iter().filter(|f| f.severity >= fail_on).collect();
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"nemoclaw-build audit {}\" tests=\"{}\" failures=\"{}\">\n", xml(image), fs.len().max(1), failing.len());
    if fs.is_empty() {
        s.push_str("  <testcase classname=\"audit\" name=\"no findings\"/>\n");
    }
    for f in fs {
        s.push_str(&format!(
            "  <testcase classname=\"audit.{}\" name=\"{}\">",
            xml(&f.id),
            xml(&f.path)
        ));
        if f.severity >= fail_on {
            s.push_str(&format!(
                "<failure type=\"{:?}\" message=\"{}\"/>",
                f.severity,
                xml(&f.message)
            ));
        } else {
            s.push_str(&format!(
                "<system-out>{:?}: {}</system-out>",
                f.severity,
                xml(&f.message)
            ));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("</testsuite>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TarBuilder;

    const RECIPE: &str = r##"
name = "audit"
[packages]
forbid = ["wget"]
require = ["sh", "missing"]
forbid_elf = ['^cc$']
[init]
path = "/init"
[audit]
secret_patterns = ['sk-[a-z0-9]{8}']
allow_world_writable = ["/tmp/ok"]
required_labels = ["org.opencontainers.image.source"]
[[checks]]
path = "/etc/motd"
must_not_contain = ["secret"]
[[fs]]
op = "dir"
path = "/sandbox"
mode = "0700"
[[fs]]
op = "prepend"
path = "/etc/profile"
lines = ["umask 077"]
"##;

    /// One image that trips every rule; the full report is pinned.
    #[test]
    fn every_rule_reports_as_before() {
        let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0rest";
        let l0 = TarBuilder::new()
            .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
            .file("etc/motd", b"a secret\n", 0o644)
            .file("etc/profile", b"export X=1\n", 0o644)
            .dir("sandbox", 0o755)
            .file("usr/bin/sh", elf, 0o755)
            .file("usr/bin/wget", elf, 0o755)
            .file("usr/bin/cc", elf, 0o755)
            .file("usr/bin/su", b"x", 0o4755)
            .file("usr/bin/wall", b"x", 0o2755)
            .file_owned("srv/data", b"x", 0o644, 1234, 0)
            .file("tmp/ok/w", b"x", 0o666)
            .file("var/w", b"x", 0o666)
            .dir("var/tmp", 0o1777)
            .pax(&[("SCHILY.xattr.security.capability", b"\x01\0\0\x02")])
            .file("usr/bin/ping", b"x", 0o755)
            .build();
        let l1 = TarBuilder::new()
            .file("usr/bin/.wh.cc", b"", 0o644)
            .file("etc/a", b"a", 0o644)
            .file("etc/.wh.a", b"", 0o644)
            .build();
        let mut fs = Rootfs::new();
        for (i, l) in [l0, l1].iter().enumerate() {
            let label = format!("layer {} (test)", i + 1);
            fs.apply_layer(i, &label, &l[..], &Default::default())
                .unwrap();
        }
        let recipe =
            Recipe::parse(RECIPE.as_bytes(), "audit.toml", std::path::Path::new(".")).unwrap();
        let config = serde_json::json!({"config": {
            "Entrypoint": ["/bin/sh"], "User": "0:0",
            "Env": ["TOKEN=sk-abcdefgh", "PATH=/usr/bin"],
            "Labels": {"key": "sk-12345678", "org.opencontainers.image.title": "t"}}});
        let got: Vec<String> = findings(&fs, &config, &recipe)
            .unwrap()
            .iter()
            .map(|f| format!("{:?} {} {}: {}", f.severity, f.id, f.path, f.message))
            .collect();
        let want: &[&str] = &[
            "Error check /etc/motd: /etc/motd: contains 'secret' (line: a secret)",
            "Error entrypoint /init: entrypoint is [\"/bin/sh\"], expected the init /init",
            "Error forbidden-command /usr/bin/wget: command wget present",
            "Error layout /etc/profile: /etc/profile: missing line 'umask 077'",
            "Error layout /sandbox: /sandbox: mode is 0755, expected 0700",
            "Error required-command-missing missing: required command missing is not an executable on PATH",
            "Error required-label config.Labels org.opencontainers.image.source: label org.opencontainers.image.source is required by the recipe but missing or empty",
            "Error root-user config.User: image runs as root (User = \"0:0\")",
            "Error secret config.Env TOKEN: looks like a secret (API key or token)",
            "Error secret config.Labels key: looks like a secret (API key or token)",
            "Warning bytes-still-shipped /usr/bin/cc: hidden by a whiteout but its 20 bytes still ship in layer 1",
            "Warning file-capability /usr/bin/ping: file has capabilities (security.capability)",
            "Warning setuid /usr/bin/su: setuid file (owner uid 0)",
            "Warning unknown-uid /srv/data: owned by uid 1234 which is not in /etc/passwd",
            "Warning whiteout-same-layer /etc/a: layer 2 holds both this path and the whiteout /etc/.wh.a naming it; the OCI spec keeps the path (whiteouts apply to lower layers only), but some runtimes delete it or fail to unpack the layer",
            "Warning world-writable /var/w: world-writable file without sticky bit (0666)",
            "Info setgid /usr/bin/wall: setgid file (group gid 0)",
        ];
        assert_eq!(got, want, "{got:#?}");
    }
}
