//! Tests of the database model and the purge planner on small generated databases, plus
//! an ignored oracle test against a real Debian rootfs (see `oracle_vs_apt`).

use super::*;

/// Builder of small dpkg databases.
#[derive(Default)]
struct Db {
    stanzas: Vec<String>,
    files: DbFiles,
    auto: Vec<(String, String)>,
}

struct Pkg {
    name: String,
    arch: String,
    version: String,
    status: String,
    fields: Vec<(String, String)>,
    files: Vec<String>,
    multi_arch_same: bool,
}

fn pkg(name: &str) -> Pkg {
    Pkg {
        name: name.into(),
        arch: "amd64".into(),
        version: "1.0-1".into(),
        status: "install ok installed".into(),
        fields: Vec::new(),
        files: Vec::new(),
        multi_arch_same: false,
    }
}

impl Pkg {
    fn f(mut self, k: &str, v: &str) -> Self {
        self.fields.push((k.into(), v.into()));
        self
    }
    fn deps(self, v: &str) -> Self {
        self.f("Depends", v)
    }
    fn files(mut self, f: &[&str]) -> Self {
        self.files = f.iter().map(|s| s.to_string()).collect();
        self
    }
    fn arch(mut self, a: &str) -> Self {
        self.arch = a.into();
        self
    }
    fn status(mut self, s: &str) -> Self {
        self.status = s.into();
        self
    }
    fn same(mut self) -> Self {
        self.multi_arch_same = true;
        self.f("Multi-Arch", "same")
    }
}

impl Db {
    fn add(&mut self, p: Pkg) -> &mut Self {
        let mut s = format!(
            "Package: {}\nStatus: {}\nPriority: {}\nSection: misc\nInstalled-Size: 10\nMaintainer: T <t@example.org>\nArchitecture: {}\nVersion: {}\n",
            p.name,
            p.status,
            p.fields
                .iter()
                .find(|(k, _)| k == "Priority")
                .map(|(_, v)| v.as_str())
                .unwrap_or("optional"),
            p.arch,
            p.version
        );
        for (k, v) in p.fields.iter().filter(|(k, _)| k != "Priority") {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&format!(
            "Description: the {} package\n long text\n .\n more\n",
            p.name
        ));
        self.stanzas.push(s);
        let db_name = if p.multi_arch_same {
            format!("{}:{}", p.name, p.arch)
        } else {
            p.name.clone()
        };
        let mut list = String::from("/.\n");
        for f in &p.files {
            list.push_str(f);
            list.push('\n');
        }
        self.files
            .insert(format!("{INFO_DIR}{db_name}.list"), list.into_bytes());
        self.files
            .insert(format!("{INFO_DIR}{db_name}.md5sums"), b"x\n".to_vec());
        self
    }
    fn auto(&mut self, name: &str) -> &mut Self {
        self.auto.push((name.into(), "amd64".into()));
        self
    }
    fn file(&mut self, path: &str, content: &str) -> &mut Self {
        self.files.insert(path.into(), content.as_bytes().to_vec());
        self
    }
    fn build(&self) -> DbFiles {
        let mut files = self.files.clone();
        let status: String = self.stanzas.iter().map(|s| format!("{s}\n")).collect();
        files.insert(STATUS_PATH.into(), status.into_bytes());
        if !self.auto.is_empty() {
            let es: Vec<String> = self
                .auto
                .iter()
                .map(|(n, a)| format!("Package: {n}\nArchitecture: {a}\nAuto-Installed: 1\n"))
                .collect();
            files.insert(EXTENDED_STATES_PATH.into(), es.join("\n").into_bytes());
        }
        files
    }
    /// The plan for purging `names` (autoremove on, nothing kept) from this database.
    fn purge(&self, names: &[&str]) -> PurgePlan {
        plan_purge(&self.build(), &req(names, &[])).unwrap()
    }
}

fn req(purge: &[&str], keep: &[&str]) -> PurgeRequest {
    PurgeRequest {
        purge: purge.iter().map(|s| s.to_string()).collect(),
        keep: keep.iter().map(|s| s.to_string()).collect(),
        autoremove: true,
        strict: false,
    }
}

fn removed_names(plan: &PurgePlan) -> Vec<String> {
    plan.removed.iter().map(|r| r.name.clone()).collect()
}

fn reason(plan: &PurgePlan, name: &str) -> RemovalReason {
    plan.removed
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.reason.clone())
        .unwrap_or_else(|| panic!("{name} not removed"))
}

fn status_names(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .map(str::to_string)
        .collect()
}

/// libc6 (essential, required) and a base of manual packages.
fn base() -> Db {
    let mut db = Db::default();
    db.add(
        pkg("libc6")
            .same()
            .f("Essential", "yes")
            .f("Priority", "required")
            .files(&[
                "/usr",
                "/usr/lib",
                "/usr/lib/libc.so.6",
                "/usr/share",
                "/usr/share/doc",
            ]),
    );
    db
}

#[test]
fn parse_model_and_queries() {
    let mut db = base();
    db.add(
        pkg("gcc")
            .deps("libc6 (>= 2.34), cpp (= 1.0-1)")
            .f("Source", "gcc-defaults (1.2)")
            .files(&["/usr/bin", "/usr/bin/gcc"]),
    )
    .add(pkg("cpp").files(&["/usr/bin", "/usr/bin/cpp"]))
    .add(
        pkg("old")
            .status("deinstall ok config-files")
            .files(&["/etc/old.conf"]),
    );
    let files = db.build();
    let d = DpkgDb::parse(&files).unwrap();
    let names: Vec<&str> = d.installed().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["libc6", "gcc", "cpp"]);
    assert!(d.is_installed("gcc"));
    assert!(d.is_installed("libc6:amd64"));
    assert!(!d.is_installed("libc6:i386"));
    assert!(!d.is_installed("old"));
    assert!(!d.is_installed("nothere"));
    let mut owners = d.owner_of("/usr/bin");
    owners.sort();
    assert_eq!(owners, ["cpp", "gcc"]);
    assert!(d.owner_of("/nope").is_empty());
    let gcc = d.installed().find(|p| p.name == "gcc").unwrap();
    assert_eq!(gcc.source, "gcc-defaults");
    assert_eq!(gcc.source_version, "1.2");
    assert_eq!(gcc.depends.len(), 2);
    assert_eq!(gcc.installed_size_kib, 10);
    assert_eq!(gcc.description.as_deref(), Some("the gcc package"));
    assert_eq!(d.native_arch(), "amd64");
    assert_eq!(d.files_of("libc6").unwrap().len(), 5);
    assert_eq!(d.packages()[0].db_name(), "libc6:amd64");
}

/// The queries of the public model name one instance (`name` or `name:arch`); fields
/// are found by any case; diversions and alternatives come back as parsed, without the
/// admin files dpkg skips (temporary, empty, in subdirectories).
#[test]
fn queries_answer_for_the_named_instance() {
    let mut db = base();
    db.add(pkg("gcc").files(&["/usr/bin/gcc"]))
        .file(
            DIVERSIONS_PATH,
            "/bin/sh\n/bin/sh.distrib\ndash\n/etc/x\n/etc/x.local\n:\n",
        )
        .file(
            &format!("{ALTERNATIVES_DIR}cc"),
            "auto\n/usr/bin/cc\n\n/usr/bin/gcc\n20\n\n",
        )
        .file(&format!("{ALTERNATIVES_DIR}cc.dpkg-tmp"), "garbage")
        .file(&format!("{ALTERNATIVES_DIR}sub/x"), "garbage")
        .file(&format!("{ALTERNATIVES_DIR}empty"), "");
    let d = DpkgDb::parse(&db.build()).unwrap();
    assert_eq!(d.files_of("gcc").unwrap(), ["/usr/bin/gcc"]);
    assert_eq!(d.files_of("gcc:amd64").unwrap(), ["/usr/bin/gcc"]);
    assert_eq!(d.files_of("libc6:amd64").unwrap().len(), 5);
    assert!(d.files_of("libc6:i386").is_none());
    assert!(d.files_of("nothere").is_none());
    let gcc = &d.packages()[1];
    assert_eq!(gcc.field("section"), Some("misc"));
    assert_eq!(gcc.field("VERSION"), Some("1.0-1"));
    assert_eq!(gcc.field("Depends"), None);
    let div = |from: &str, to: &str, package: Option<&str>| Diversion {
        from: from.into(),
        to: to.into(),
        package: package.map(str::to_string),
    };
    assert_eq!(
        d.diversions(),
        [
            div("/bin/sh", "/bin/sh.distrib", Some("dash")),
            div("/etc/x", "/etc/x.local", None)
        ]
    );
    let alts: Vec<&str> = d.alternatives().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(alts, ["cc"]);
}

/// Info files are named `name:arch` only for a `Multi-Arch: same` package that has an
/// architecture.
#[test]
fn db_name_qualifies_only_multi_arch_same_packages() {
    const OK: &str = "Status: install ok installed\n";
    let text = format!(
        "Package: a\n{OK}Multi-Arch: same\n\nPackage: b\n{OK}Architecture: amd64\n\n\
         Package: c\n{OK}Architecture: i386\nMulti-Arch: same\n"
    );
    let p = parse_status(STATUS_PATH, text.as_bytes()).unwrap();
    let names: Vec<String> = p.iter().map(Package::db_name).collect();
    assert_eq!(names, ["a", "b", "c:i386"]);
}

/// dpkg's native architecture: the first non-empty line of /var/lib/dpkg/arch, else the
/// installed dpkg's, else that of the first architecture-specific package, else amd64.
#[test]
fn native_arch_falls_back_like_dpkg() {
    let native = |db: &Db| {
        DpkgDb::parse(&db.build())
            .unwrap()
            .native_arch()
            .to_string()
    };
    let mut db = Db::default();
    db.add(pkg("data").arch("all"));
    assert_eq!(native(&db), "amd64");
    db.add(pkg("noarch").arch("")).add(pkg("x").arch("i386"));
    assert_eq!(native(&db), "i386");
    db.add(pkg("dpkg").arch("arm64"));
    assert_eq!(native(&db), "arm64");
    db.file("/var/lib/dpkg/arch", "\n riscv64\ni386\n");
    assert_eq!(native(&db), "riscv64");
}

/// A list filed under the other info name (`name:arch` for a package that is not
/// `Multi-Arch: same`, plain `name` for one that is) is still the package's list.
#[test]
fn file_list_is_found_under_either_info_name() {
    let mut db = base();
    db.add(pkg("gcc").files(&["/usr/bin/gcc"]));
    let mut files = db.build();
    for (from, to) in [("gcc", "gcc:amd64"), ("libc6:amd64", "libc6")] {
        let list = files.remove(&format!("{INFO_DIR}{from}.list")).unwrap();
        files.insert(format!("{INFO_DIR}{to}.list"), list);
    }
    let d = DpkgDb::parse(&files).unwrap();
    assert_eq!(d.files_of("gcc").unwrap(), ["/usr/bin/gcc"]);
    assert_eq!(d.files_of("libc6").unwrap().len(), 5);
}

/// apt's auto-installed markers: an `all` package's marker is filed under the native
/// architecture, a marker of another architecture is another instance's, and
/// `Auto-Installed: 0` means manual.
#[test]
fn auto_installed_markers_match_architecture_and_value() {
    let mut db = base();
    db.add(pkg("tool").deps("data, lib0, lib386"))
        .add(pkg("data").arch("all"))
        .add(pkg("lib0"))
        .add(pkg("lib386"))
        .file(
            EXTENDED_STATES_PATH,
            "Package: data\nArchitecture: amd64\nAuto-Installed: 1\n\n\
             Package: lib0\nArchitecture: amd64\nAuto-Installed: 0\n\n\
             Package: lib386\nArchitecture: i386\nAuto-Installed: 1\n",
        );
    let plan = db.purge(&["tool"]);
    assert_eq!(removed_names(&plan), ["data", "tool"]);
    assert_eq!(reason(&plan, "data"), RemovalReason::Autoremoved);
}

/// A `.list` that is not UTF-8 is refused, naming the line.
#[test]
fn non_utf8_file_list_names_the_line() {
    let mut files = base().build();
    files.insert(
        format!("{INFO_DIR}libc6:amd64.list"),
        b"/.\n/a\n/b\xff\n".to_vec(),
    );
    let e = DpkgDb::parse(&files).err().unwrap().to_string();
    assert!(
        e.contains("libc6:amd64.list: line 3: path is not valid UTF-8"),
        "{e}"
    );
}

#[test]
fn parse_errors_name_file_and_stanza() {
    let mut files = base().build();
    files.insert(
        STATUS_PATH.into(),
        b"Package: a\nStatus: install ok installed\n\nPackage: b\nStatus: bogus\n".to_vec(),
    );
    let e = DpkgDb::parse(&files).err().unwrap().to_string();
    assert!(
        e.contains(STATUS_PATH) && e.contains("line 4") && e.contains("package b"),
        "{e}"
    );

    files.insert(
        STATUS_PATH.into(),
        b"Package: a\nStatus: install ok installed\nDepends: x (>= \n".to_vec(),
    );
    let e = format!("{:#}", DpkgDb::parse(&files).err().unwrap());
    assert!(e.contains("Depends") && e.contains("line 1"), "{e}");

    let mut files = base().build();
    files.insert(DIVERSIONS_PATH.into(), b"/a\n/b\n".to_vec());
    let e = DpkgDb::parse(&files).err().unwrap().to_string();
    assert!(e.contains(DIVERSIONS_PATH), "{e}");

    let mut files = base().build();
    files.remove(STATUS_PATH);
    assert!(DpkgDb::parse(&files).is_err());
}

#[test]
fn missing_packages_are_reported_not_errors() {
    let mut db = base();
    db.add(pkg("make").files(&["/usr/bin/make"]));
    let plan = plan_purge(
        &db.build(),
        &req(&["make", "ncat", "netcat-traditional"], &[]),
    )
    .unwrap();
    assert_eq!(plan.not_installed, ["ncat", "netcat-traditional"]);
    assert_eq!(removed_names(&plan), ["make"]);
    assert_eq!(reason(&plan, "make"), RemovalReason::Requested);
    assert!(plan.remove_paths.contains("/usr/bin/make"));
    assert!(plan.remove_paths.contains("/var/lib/dpkg/info/make.list"));
    assert!(plan
        .remove_paths
        .contains("/var/lib/dpkg/info/make.md5sums"));

    // Nothing installed: empty plan, no rewrites.
    let plan = db.purge(&["nope"]);
    assert!(plan.removed.is_empty() && plan.write_files.is_empty() && plan.remove_paths.is_empty());
}

#[test]
fn dependency_chains_and_pre_depends() {
    let mut db = base();
    db.add(pkg("liba").files(&["/usr/lib/liba.so"]))
        .add(pkg("b").deps("libc6, liba (>= 1.0)"))
        .add(pkg("c").f("Pre-Depends", "b"))
        .add(pkg("d").deps("c | nonexistent"))
        .add(pkg("e").deps("libc6"))
        .add(pkg("f").deps("liba (>= 9)")); // already broken: not removed for it
    let plan = db.purge(&["liba"]);
    assert_eq!(removed_names(&plan), ["b", "c", "d", "liba"]);
    assert_eq!(reason(&plan, "b"), RemovalReason::DependsOn("liba".into()));
    assert_eq!(reason(&plan, "c"), RemovalReason::DependsOn("b".into()));
    assert_eq!(reason(&plan, "d"), RemovalReason::DependsOn("c".into()));

    let mut r = req(&["liba"], &[]);
    r.strict = true;
    let e = plan_purge(&db.build(), &r).err().unwrap().to_string();
    assert!(e.contains("strict"), "{e}");
    assert!(
        e.contains("c pre-depends on b, which depends on liba, which is purged"),
        "{e}"
    );
}

#[test]
fn alternatives_in_dependencies_keep_dependents() {
    let mut db = base();
    db.add(pkg("mawk").f("Provides", "awk"))
        .add(pkg("gawk"))
        .add(pkg("x").deps("gawk | mawk"))
        .add(pkg("y").deps("gawk | mawk"))
        .add(pkg("z").deps("gawk (>= 5)")); // version not satisfied: not a satisfier
    let plan = db.purge(&["gawk"]);
    assert_eq!(removed_names(&plan), ["gawk"]);
    let plan = db.purge(&["gawk", "mawk"]);
    assert_eq!(removed_names(&plan), ["gawk", "mawk", "x", "y"]);
}

#[test]
fn virtual_packages_via_provides() {
    let mut db = base();
    db.add(pkg("mawk").f("Provides", "awk, awk-v (= 2.0)"))
        .add(pkg("needs-awk").deps("awk"))
        .add(pkg("needs-awk-v").deps("awk-v (>= 1.5)"))
        .add(pkg("needs-awk-v3").deps("awk-v (>= 3)"))
        .add(pkg("gawk").f("Provides", "awk"))
        .add(pkg("needs-v-only").deps("awk-v"));
    // gawk also provides awk: needs-awk survives; versioned awk-v only from mawk.
    let plan = db.purge(&["mawk"]);
    assert_eq!(
        removed_names(&plan),
        ["mawk", "needs-awk-v", "needs-v-only"]
    );
    let plan = db.purge(&["mawk", "gawk"]);
    assert_eq!(
        removed_names(&plan),
        ["gawk", "mawk", "needs-awk", "needs-awk-v", "needs-v-only"]
    );
}

#[test]
fn autoremove_auto_deps_and_keep_needed_ones() {
    let mut db = base();
    db.add(
        pkg("gcc")
            .deps("libmpc, libshared")
            .f("Recommends", "librec"),
    )
    .add(pkg("libmpc").deps("libmpfr"))
    .add(pkg("libmpfr"))
    .add(pkg("libshared"))
    .add(pkg("librec"))
    .add(
        pkg("jq")
            .deps("libshared")
            .f("Suggests", "libsug")
            .f("Recommends", "librec2"),
    )
    .add(pkg("librec2"))
    .add(pkg("libsug"))
    .add(pkg("orphan-manual"))
    .add(pkg("lib-required").f("Priority", "required"))
    .add(pkg("lib-essential").f("Essential", "yes"))
    .add(pkg("lib-protected").f("Protected", "yes"))
    .add(pkg("linux-image-amd64"))
    .add(pkg("lib-held").status("hold ok installed"))
    .add(pkg("libprov").f("Provides", "virt"))
    .add(pkg("user-of-virt").deps("virt"));
    for a in [
        "libmpc",
        "libmpfr",
        "libshared",
        "librec",
        "librec2",
        "libsug",
        "lib-required",
        "lib-essential",
        "lib-protected",
        "linux-image-amd64",
        "lib-held",
        "libprov",
        "user-of-virt",
    ] {
        db.auto(a);
    }
    db.add(pkg("uses-virt-manual").deps("user-of-virt"));
    let plan = db.purge(&["gcc"]);
    assert_eq!(removed_names(&plan), ["gcc", "libmpc", "libmpfr", "librec"]);
    assert_eq!(reason(&plan, "libmpfr"), RemovalReason::Autoremoved);

    // Without autoremove only gcc goes.
    let mut r = req(&["gcc"], &[]);
    r.autoremove = false;
    let plan = plan_purge(&db.build(), &r).unwrap();
    assert_eq!(removed_names(&plan), ["gcc"]);

    // Auto packages only reachable through the purged tree of a virtual go too.
    let plan = db.purge(&["uses-virt-manual"]);
    assert_eq!(
        removed_names(&plan),
        ["libprov", "user-of-virt", "uses-virt-manual"]
    );

    // keep marks manual: libmpfr survives and its extended_states stanza is dropped.
    let plan = plan_purge(&db.build(), &req(&["gcc"], &["libmpfr"])).unwrap();
    assert_eq!(removed_names(&plan), ["gcc", "libmpc", "librec"]);
    let es = String::from_utf8(plan.write_files[EXTENDED_STATES_PATH].clone()).unwrap();
    assert!(
        !es.contains("libmpfr") && !es.contains("libmpc\n") && es.contains("libshared"),
        "{es}"
    );
}

#[test]
fn keep_package_in_closure_is_an_error_with_chain() {
    let mut db = base();
    db.add(pkg("libprocps8"))
        .add(pkg("procps").deps("libprocps8"))
        .add(pkg("top-ui").deps("procps"));
    let e = plan_purge(&db.build(), &req(&["libprocps8"], &["procps"]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(
            "keep package procps would be removed: procps depends on libprocps8, which is purged"
        ),
        "{e}"
    );
    let e = plan_purge(&db.build(), &req(&["libprocps8"], &["top-ui"]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("top-ui depends on procps, which depends on libprocps8, which is purged"),
        "{e}"
    );
    let e = plan_purge(&db.build(), &req(&["procps"], &["procps"]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("procps is requested for purge"), "{e}");
}

#[test]
fn essential_never_removed() {
    let mut db = base();
    db.add(pkg("dash").f("Essential", "yes").f("Pre-Depends", "libfoo"))
        .add(pkg("libfoo"));
    let e = plan_purge(&db.build(), &req(&["libfoo"], &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("essential package dash would be removed"), "{e}");
    let e = plan_purge(&db.build(), &req(&["libc6"], &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("essential package libc6"), "{e}");
    // Auto-installed essential package is never autoremoved.
    let mut db = base();
    db.add(pkg("bash").f("Essential", "yes"))
        .add(pkg("x"))
        .auto("bash")
        .auto("libc6");
    let plan = db.purge(&["x"]);
    assert_eq!(removed_names(&plan), ["x"]);
}

#[test]
fn shared_files_and_directories() {
    let mut db = base();
    db.add(pkg("a").files(&[
        "/usr/bin",
        "/usr/bin/a",
        "/usr/share/doc/common",
        "/usr/share/doc/common/x",
        "/opt",
        "/opt/a",
    ]))
    .add(pkg("b").files(&[
        "/usr/bin",
        "/usr/bin/b",
        "/usr/share/doc/common",
        "/usr/share/doc/common/x",
    ]))
    .add(pkg("c").files(&["/bin", "/bin/c", "/usr/lib/x86_64-linux-gnu"]))
    .add(pkg("d").files(&["/usr/bin/c", "/usr/lib/x86_64-linux-gnu/libd.so"]));
    let plan = db.purge(&["a", "c"]);
    let rm = rm_paths(&plan);
    // /usr/bin, common doc dir and file are b's too; /bin/c is /usr/bin/c of d (merged /usr);
    // /opt is a protected top-level directory.
    assert_eq!(rm, ["/opt/a", "/usr/bin/a", "/usr/lib/x86_64-linux-gnu"]);
    // Only directories owned by removed packages: /usr/lib/x86_64-linux-gnu is also d's.
    let plan = db.purge(&["c", "d"]);
    assert!(plan.remove_paths.contains("/usr/lib/x86_64-linux-gnu"));
    assert!(plan
        .remove_paths
        .contains("/usr/lib/x86_64-linux-gnu/libd.so"));
    assert!(plan.remove_paths.contains("/bin/c") && plan.remove_paths.contains("/usr/bin/c"));
    assert!(!plan.remove_paths.contains("/bin") && !plan.remove_paths.contains("/usr/lib"));
}

#[test]
fn multiarch_same_file_lists() {
    let mut db = base();
    db.add(pkg("libfoo1").same().files(&[
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
        "/usr/share/doc/libfoo1",
        "/usr/share/doc/libfoo1/copyright",
    ]))
    .add(pkg("libfoo1").same().arch("i386").files(&[
        "/usr/lib/i386-linux-gnu/libfoo.so.1",
        "/usr/share/doc/libfoo1",
        "/usr/share/doc/libfoo1/copyright",
    ]))
    .add(pkg("user").deps("libfoo1"))
    .file("/var/lib/dpkg/info/libfoo1:amd64.shlibs", "x")
    .file("/var/lib/dpkg/info/libfoo1:amd64.triggers", "x")
    .file("/var/lib/dpkg/info/libfoo1.1:amd64.list", "/.\n") // another package's file
    .file("/var/lib/dpkg/arch", "amd64\ni386\n");
    let files = db.build();
    let plan = plan_purge(&files, &req(&["libfoo1:amd64"], &[])).unwrap();
    assert_eq!(removed_names(&plan), ["libfoo1", "user"]);
    assert!(plan.removed.iter().all(|r| r.arch == "amd64"));
    let rm = &plan.remove_paths;
    assert!(rm.contains("/usr/lib/x86_64-linux-gnu/libfoo.so.1"));
    assert!(!rm.contains("/usr/lib/i386-linux-gnu/libfoo.so.1"));
    assert!(
        !rm.contains("/usr/share/doc/libfoo1/copyright"),
        "shared with i386 instance"
    );
    for f in ["list", "md5sums", "shlibs", "triggers"] {
        assert!(
            rm.contains(&format!("/var/lib/dpkg/info/libfoo1:amd64.{f}")),
            "{f}"
        );
    }
    assert!(!rm.contains("/var/lib/dpkg/info/libfoo1:i386.list"));
    assert!(!rm.contains("/var/lib/dpkg/info/libfoo1.1:amd64.list"));
    let status = plan.write_files[STATUS_PATH].clone();
    let text = String::from_utf8(status).unwrap();
    assert!(text.contains("Package: libfoo1\nStatus: install ok installed\nPriority: optional\nSection: misc\nInstalled-Size: 10\nMaintainer: T <t@example.org>\nArchitecture: i386"));
    assert_eq!(status_names(text.as_bytes()), ["libc6", "libfoo1"]);

    // Plain name resolves to the native instance only.
    let plan = plan_purge(&files, &req(&["libfoo1"], &[])).unwrap();
    assert_eq!(
        plan.removed.iter().filter(|r| r.name == "libfoo1").count(),
        1
    );
    // Purging both instances removes the shared files.
    let plan = plan_purge(&files, &req(&["libfoo1:amd64", "libfoo1:i386"], &[])).unwrap();
    assert!(plan
        .remove_paths
        .contains("/usr/share/doc/libfoo1/copyright"));
}

#[test]
fn status_survivors_byte_identical_in_order() {
    let mut db = base();
    db.add(
        pkg("a")
            .f("Conffiles", "\n /etc/a.conf 0123456789abcdef")
            .files(&["/etc/a.conf"]),
    )
    .add(pkg("b"))
    .add(pkg("c"))
    .add(pkg("d").deps("b"));
    let files = db.build();
    let original = files[STATUS_PATH].clone();
    let plan = plan_purge(&files, &req(&["b"], &[])).unwrap();
    let new = plan.write_files[STATUS_PATH].clone();
    assert_eq!(status_names(&new), ["libc6", "a", "c"]);
    // Expected: the original stanzas (with their blank-line separators) minus b and d.
    let text = String::from_utf8(original).unwrap();
    let parts: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert_eq!(parts.len(), 5);
    let expected = format!("{}{}{}", parts[0], parts[1], parts[3]);
    assert_eq!(String::from_utf8(new.clone()).unwrap(), expected);
    // Removing the first and last stanzas keeps the rest intact as well.
    let plan = plan_purge(&files, &req(&["d"], &[])).unwrap();
    assert_eq!(
        String::from_utf8(plan.write_files[STATUS_PATH].clone()).unwrap(),
        parts[..4].concat()
    );
    // Survivors still parse, and conffiles of purged packages are removed.
    let mut after = files.clone();
    after.insert(STATUS_PATH.into(), new);
    DpkgDb::parse(&after).unwrap();
    let plan = plan_purge(&files, &req(&["a"], &[])).unwrap();
    assert!(plan.remove_paths.contains("/etc/a.conf"));
    assert!(!plan.remove_paths.contains("/etc"));
}

#[test]
fn config_files_package_is_purged() {
    let mut db = base();
    db.add(
        pkg("old")
            .status("deinstall ok config-files")
            .f("Conffiles", "\n /etc/old.conf abc")
            .files(&["/etc/old.conf"]),
    );
    let plan = db.purge(&["old"]);
    assert_eq!(removed_names(&plan), ["old"]);
    assert!(plan.not_installed.is_empty());
    assert!(plan.remove_paths.contains("/etc/old.conf"));
    assert_eq!(status_names(&plan.write_files[STATUS_PATH]), ["libc6"]);
    // Without its .list, the Conffiles field alone names what to purge.
    let mut files = db.build();
    files.remove(&format!("{INFO_DIR}old.list"));
    let plan = plan_purge(&files, &req(&["old"], &[])).unwrap();
    assert_eq!(rm_paths(&plan), ["/etc/old.conf"]);
}

const CC_ALT: &str = "auto\n/usr/bin/cc\ncc.1.gz\n/usr/share/man/man1/cc.1.gz\n\n/usr/bin/clang\n10\n\n/usr/bin/gcc\n20\n/usr/share/man/man1/gcc.1.gz\n\n";

#[test]
fn alternative_without_surviving_choice_is_removed() {
    let mut db = base();
    db.add(pkg("gcc").files(&["/usr/bin/gcc", "/usr/share/man/man1/gcc.1.gz"]))
        .file("/var/lib/dpkg/alternatives/cc", "auto\n/usr/bin/cc\ncc.1.gz\n/usr/share/man/man1/cc.1.gz\n\n/usr/bin/gcc\n20\n/usr/share/man/man1/gcc.1.gz\n\n")
        .file("/var/lib/dpkg/alternatives/pager", "auto\n/usr/bin/pager\n\n/bin/more\n50\n\n");
    let plan = db.purge(&["gcc"]);
    for p in [
        "/usr/bin/cc",
        "/etc/alternatives/cc",
        "/usr/share/man/man1/cc.1.gz",
        "/etc/alternatives/cc.1.gz",
        "/var/lib/dpkg/alternatives/cc",
    ] {
        assert!(plan.remove_paths.contains(p), "{p}");
    }
    assert!(!plan.remove_paths.iter().any(|p| p.contains("pager")));
    assert!(plan.symlinks.is_empty());
    assert!(!plan
        .write_files
        .contains_key("/var/lib/dpkg/alternatives/cc"));
}

#[test]
fn alternative_with_surviving_choice_is_repointed() {
    let mut db = base();
    db.add(pkg("gcc").files(&["/usr/bin/gcc", "/usr/share/man/man1/gcc.1.gz"]))
        .add(pkg("clang").files(&["/usr/bin/clang"]))
        .file("/var/lib/dpkg/alternatives/cc", CC_ALT);
    let plan = db.purge(&["gcc"]);
    assert_eq!(
        String::from_utf8(plan.write_files["/var/lib/dpkg/alternatives/cc"].clone()).unwrap(),
        "auto\n/usr/bin/cc\n\n/usr/bin/clang\n10\n\n"
    );
    assert_eq!(plan.symlinks["/etc/alternatives/cc"], "/usr/bin/clang");
    assert_eq!(plan.symlinks["/usr/bin/cc"], "/etc/alternatives/cc");
    // clang has no cc.1.gz slave: its links go.
    assert!(plan.remove_paths.contains("/usr/share/man/man1/cc.1.gz"));
    assert!(plan.remove_paths.contains("/etc/alternatives/cc.1.gz"));
    assert!(!plan.remove_paths.contains("/usr/bin/cc"));
    assert!(!plan.remove_paths.contains("/var/lib/dpkg/alternatives/cc"));

    // Removing the non-selected choice: admin file rewritten, links untouched.
    let plan = db.purge(&["clang"]);
    assert!(plan.symlinks.is_empty());
    assert_eq!(
        String::from_utf8(plan.write_files["/var/lib/dpkg/alternatives/cc"].clone()).unwrap(),
        "auto\n/usr/bin/cc\ncc.1.gz\n/usr/share/man/man1/cc.1.gz\n\n/usr/bin/gcc\n20\n/usr/share/man/man1/gcc.1.gz\n\n"
    );

    // Manual mode pointing at the removed choice switches to auto.
    let mut db2 = base();
    db2.add(pkg("gcc").files(&["/usr/bin/gcc"]))
        .add(pkg("clang").files(&["/usr/bin/clang"]))
        .add(pkg("tcc").files(&["/usr/bin/tcc"]))
        .file(
            "/var/lib/dpkg/alternatives/cc",
            "manual\n/usr/bin/cc\n\n/usr/bin/clang\n10\n/usr/bin/gcc\n20\n/usr/bin/tcc\n5\n\n",
        )
        .file("/etc/alternatives/cc", "/usr/bin/tcc");
    let plan = plan_purge(&db2.build(), &req(&["tcc"], &[])).unwrap();
    assert!(
        String::from_utf8(plan.write_files["/var/lib/dpkg/alternatives/cc"].clone())
            .unwrap()
            .starts_with("auto\n")
    );
    assert_eq!(plan.symlinks["/etc/alternatives/cc"], "/usr/bin/gcc");
    // Manual mode on a surviving choice stays manual and untouched.
    let plan = plan_purge(&db2.build(), &req(&["gcc"], &[])).unwrap();
    assert_eq!(
        String::from_utf8(plan.write_files["/var/lib/dpkg/alternatives/cc"].clone()).unwrap(),
        "manual\n/usr/bin/cc\n\n/usr/bin/clang\n10\n/usr/bin/tcc\n5\n\n"
    );
    assert!(plan.symlinks.is_empty());
}

#[test]
fn diversions_are_honoured() {
    let mut db = base();
    // dash diverts /bin/sh (of other packages) to /bin/sh.distrib.
    db.add(pkg("dash").files(&["/bin/sh", "/bin/dash"]))
        .add(pkg("oldsh").files(&["/bin/sh", "/usr/share/oldsh"]))
        .add(pkg("wrapper").files(&["/usr/bin/tool"]))
        .add(pkg("tool").files(&["/usr/bin/tool", "/usr/share/tool"]))
        .file(
            DIVERSIONS_PATH,
            "/bin/sh\n/bin/sh.distrib\ndash\n/usr/bin/tool\n/usr/bin/tool.real\nwrapper\n",
        );
    // oldsh's /bin/sh really is /bin/sh.distrib; dash's /bin/sh stays.
    let plan = db.purge(&["oldsh"]);
    assert!(plan.remove_paths.contains("/bin/sh.distrib"));
    assert!(!plan.remove_paths.contains("/bin/sh"));
    // Removing the diverting package while the diverted file's owner survives would
    // need a rename: refused.
    let e = plan_purge(&db.build(), &req(&["wrapper"], &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("diversion of /usr/bin/tool"), "{e}");
    // Removing both: the diversion disappears and both files go.
    let plan = db.purge(&["wrapper", "tool"]);
    assert!(plan.remove_paths.contains("/usr/bin/tool"));
    assert!(plan.remove_paths.contains("/usr/bin/tool.real"));
    assert_eq!(
        String::from_utf8(plan.write_files[DIVERSIONS_PATH].clone()).unwrap(),
        "/bin/sh\n/bin/sh.distrib\ndash\n"
    );
}

#[test]
fn trigger_interests_of_removed_packages_go() {
    let mut db = base();
    db.add(pkg("man-db"))
        .add(pkg("keepme"))
        .file(
            "/var/lib/dpkg/triggers/File",
            "/usr/share/man man-db\n/usr/share/keep keepme/noawait\n",
        )
        .file("/var/lib/dpkg/triggers/mandb", "man-db/noawait\n")
        .file("/var/lib/dpkg/triggers/ldconfig", "libc6:amd64\n");
    let plan = db.purge(&["man-db"]);
    assert_eq!(
        String::from_utf8(plan.write_files["/var/lib/dpkg/triggers/File"].clone()).unwrap(),
        "/usr/share/keep keepme/noawait\n"
    );
    assert!(plan.remove_paths.contains("/var/lib/dpkg/triggers/mandb"));
    assert!(!plan
        .write_files
        .contains_key("/var/lib/dpkg/triggers/ldconfig"));
}

#[test]
fn missing_file_list_is_an_error() {
    let mut db = base();
    db.add(pkg("x"));
    let mut files = db.build();
    files.remove("/var/lib/dpkg/info/x.list");
    let e = plan_purge(&files, &req(&["x"], &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/var/lib/dpkg/info/x.list"), "{e}");
}

#[test]
fn plan_serializes_to_json() {
    let mut db = base();
    db.add(pkg("a")).add(pkg("b").deps("a"));
    let plan = db.purge(&["a"]);
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["removed"][1]["reason"]["DependsOn"], "a");
    assert_eq!(v["removed"][0]["reason"], "Requested");
}

/// Removal paths of a plan outside the dpkg database.
fn rm_paths(plan: &PurgePlan) -> Vec<&str> {
    all_paths(plan)
        .into_iter()
        .filter(|p| !p.starts_with("/var/lib/dpkg"))
        .collect()
}

/// Every removal path of a plan, in order.
fn all_paths(plan: &PurgePlan) -> Vec<&str> {
    plan.remove_paths.iter().map(String::as_str).collect()
}

/// Issue 12 #13: a hostile `.list` names another package's file or a usrmerge
/// directory symlink with a non-canonical spelling.
#[test]
fn non_canonical_list_spellings_never_hit_other_packages_files() {
    let mut db = base();
    db.add(pkg("bash").files(&["/usr/bin", "/usr/bin/bash", "/usr/share/doc/bash"]))
        .add(pkg("gcc").files(&[
            "/bin/./bash",
            "/bin//bash",
            "//usr/bin/bash",
            "/usr/bin/./",
            "/bin/",
            "/bin/.",
            "//bin",
            "/lib/",
            "/sbin//",
            "/usr/share/doc/bash/",
            "/usr/bin/gcc",
        ]));
    let plan = db.purge(&["gcc"]);
    assert_eq!(rm_paths(&plan), ["/usr/bin/gcc"]);
}

/// Issue 12 #13: `..` (could escape the root or mean different files to different
/// readers), NUL and relative entries are refused, naming the file and line.
#[test]
fn dot_dot_nul_and_relative_database_paths_are_refused() {
    for (entry, why) in [
        ("/usr/../bin/bash", "'..'"),
        ("/../../etc/shadow", "'..'"),
        ("/usr/bin/x\0y", "NUL"),
        ("usr/bin/gcc", "not absolute"),
    ] {
        let mut db = base();
        db.add(pkg("bash").files(&["/usr/bin/bash"]))
            .add(pkg("gcc").files(&["/usr/bin/gcc", entry]));
        let e = format!(
            "{:#}",
            plan_purge(&db.build(), &req(&["gcc"], &[])).unwrap_err()
        );
        assert!(e.contains("/var/lib/dpkg/info/gcc.list: line 3"), "{e}");
        assert!(e.contains(why), "{entry:?}: {e}");
    }
    // Conffiles of the status file and diversions are database paths as well.
    let mut db = base();
    db.add(pkg("gcc").f("Conffiles", "\n /etc/../etc/shadow 0123"));
    let e = format!(
        "{:#}",
        plan_purge(&db.build(), &req(&["gcc"], &[])).unwrap_err()
    );
    assert!(e.contains("Conffiles") && e.contains("'..'"), "{e}");
    let mut db = base();
    db.add(pkg("gcc").files(&["/usr/bin/gcc"])).file(
        DIVERSIONS_PATH,
        "/usr/bin/gcc\n/usr/bin/../../etc/shadow\nlocal-pkg\n",
    );
    let e = format!(
        "{:#}",
        plan_purge(&db.build(), &req(&["gcc"], &[])).unwrap_err()
    );
    assert!(e.contains(DIVERSIONS_PATH) && e.contains("'..'"), "{e}");
}

/// Issue 12 #13: alternatives admin files come from the image too: a master link
/// that is another package's file is neither removed nor replaced by a symlink, and
/// slave names cannot climb out of /etc/alternatives.
#[test]
fn hostile_alternatives_never_touch_other_packages_files() {
    let mut db = base();
    db.add(pkg("bash").files(&["/usr/bin/bash"]))
        .add(pkg("gcc").files(&["/usr/bin/gcc"]))
        .file(
            "/var/lib/dpkg/alternatives/cc",
            "auto\n/bin/./bash\n\n/usr/bin/gcc\n20\n\n",
        );
    let plan = db.purge(&["gcc"]);
    assert_eq!(rm_paths(&plan), ["/etc/alternatives/cc", "/usr/bin/gcc"]);

    // Re-pointing the link would replace bash (or the /bin symlink): refused.
    for link in ["/usr/bin/bash", "/bin"] {
        let mut db = base();
        db.add(pkg("bash").files(&["/usr/bin/bash"]))
            .add(pkg("gcc").files(&["/usr/bin/gcc"]))
            .add(pkg("clang").files(&["/usr/bin/clang"]))
            .file(
                "/var/lib/dpkg/alternatives/cc",
                &format!("auto\n{link}\n\n/usr/bin/clang\n10\n/usr/bin/gcc\n20\n\n"),
            );
        let e = format!(
            "{:#}",
            plan_purge(&db.build(), &req(&["gcc"], &[])).unwrap_err()
        );
        assert!(
            e.contains("/var/lib/dpkg/alternatives/cc") && e.contains(link),
            "{e}"
        );
    }

    let mut db = base();
    db.add(pkg("bash").files(&["/usr/bin/bash"]))
        .add(pkg("gcc").files(&["/usr/bin/gcc"]))
        .file(
            "/var/lib/dpkg/alternatives/cc",
            "auto\n/usr/bin/cc\n../../usr/bin/bash\n/usr/bin/cc-slave\n\n/usr/bin/gcc\n20\n/usr/bin/gcc\n\n",
        );
    let e = format!(
        "{:#}",
        plan_purge(&db.build(), &req(&["gcc"], &[])).unwrap_err()
    );
    assert!(
        e.contains("/var/lib/dpkg/alternatives/cc") && e.contains("slave name"),
        "{e}"
    );
}

/// Issue 12 #14's shape: `providers` auto-installed packages that provide a virtual
/// package, half of them (`prov*`: `virt`) depending on `base-lib`, half (`alt*`:
/// `virt2`) not, and `dependents` manual packages that depend on `virt | virt2`.
fn provider_heavy_db(providers: usize, dependents: usize) -> DbFiles {
    let mut db = base();
    db.add(pkg("base-lib").files(&["/usr/lib/base"]));
    for k in 0..providers / 2 {
        for (name, virt) in [(format!("prov{k}"), "virt"), (format!("alt{k}"), "virt2")] {
            let file = format!("/usr/lib/prov/{name}");
            let mut p = pkg(&name)
                .f("Provides", virt)
                .files(&["/usr/lib/prov", &file]);
            if virt == "virt" {
                p = p.deps("base-lib");
            }
            db.add(p).auto(&name);
        }
    }
    for j in 0..dependents {
        db.add(pkg(&format!("dep{j}")).deps("virt | virt2"));
    }
    db.build()
}

/// Issue 12 #14: planning was quadratic in providers x dependents (40,000 providers of
/// one virtual package and 24 dependents: 20 s). The planner's work counter must grow
/// linearly with the database: the work per package stays bounded from 400 to 40,000
/// providers and from 10 to 1,000 dependents. No timing involved.
#[test]
fn purge_planning_work_is_linear_in_providers_and_dependents() {
    let mut per_package = Vec::new();
    for (providers, dependents) in [(400, 10), (4_000, 100), (40_000, 1_000)] {
        let files = provider_heavy_db(providers, dependents);
        work::take();
        // Removing base-lib breaks every `virt` provider; the dependents keep `virt2`
        // (checked once per dependent when `virt` loses its last provider), and
        // autoremove marks every `alt` provider through them.
        let plan = plan_purge(&files, &req(&["base-lib"], &[])).unwrap();
        let units = work::take();
        assert_eq!(plan.removed.len(), 1 + providers / 2);
        assert_eq!(
            reason(&plan, "prov0"),
            RemovalReason::DependsOn("base-lib".into())
        );
        assert!(!plan
            .removed
            .iter()
            .any(|r| !r.name.starts_with("prov") && r.name != "base-lib"));
        per_package.push(units / (providers + dependents) as u64);
    }
    eprintln!("work units per package: {per_package:?}");
    // The counter counts: a bound on nothing proves nothing.
    assert!(per_package.iter().all(|&u| u > 0), "{per_package:?}");
    assert!(per_package.iter().all(|&u| u <= 40), "{per_package:?}");
    assert!(per_package[2] <= per_package[0] + 3, "{per_package:?}");
}

/// Odd status files from a hostile image: a clear error naming the file and what is
/// wrong, never a panic, never a package with a path-like name.
#[test]
fn odd_status_files_are_refused() {
    const OK: &str = "Status: install ok installed\n";
    for (text, why) in [
        ("Package:\n".to_string(), "no Package field"),
        ("Package: a\n".to_string(), "no Status field"),
        ("Package: a\nStatus:\n".to_string(), "malformed Status"),
        (
            "Package: a\nStatus: install ok weird\n".to_string(),
            "malformed Status",
        ),
        ("Package: a\n\tfoo\n".to_string(), "invalid package name"),
        (format!("Package: ../x\n{OK}"), "invalid package name"),
        (format!("Package: a/b\n{OK}"), "invalid package name"),
        (format!("Package: -a\n{OK}"), "invalid package name"),
        (format!("Package: a\n{OK}package: b\n"), "duplicate field"),
        (
            format!("Package: a\n{OK}Architecture: ../x\n"),
            "invalid architecture",
        ),
        (
            format!("Package: a\n{OK}Architecture: -x\n"),
            "invalid architecture",
        ),
        (format!("Package: a\n{OK}Depends: |\n"), "Depends"),
        (
            format!("Package: a\n{OK}Depends: b (>= 1\n"),
            "unterminated version",
        ),
        (
            format!("Package: a\n{OK}Provides: x (= )\n"),
            "missing version",
        ),
        (format!("Package: a\n{OK}Version: 1 2\n"), "embedded spaces"),
        (format!("Package: a\n{OK}Version: x:1\n"), "epoch"),
        (format!("Package: a\n{OK}Version:\n"), "empty"),
        (
            format!("Package: a\n{OK}Source: s (1\n"),
            "malformed Source",
        ),
        (
            format!("Package: a\n{OK}Installed-Size: -1\n"),
            "Installed-Size",
        ),
        (
            format!("Package: a\n{OK}Conffiles:\n /etc/../x 0\n"),
            "'..'",
        ),
        (" x\n".to_string(), "continuation line"),
        ("Package a\n".to_string(), "cannot parse"),
        ("Package: \u{e9}\n".to_string() + OK, "invalid package name"),
    ] {
        let e = format!(
            "{:#}",
            parse_status(STATUS_PATH, text.as_bytes()).unwrap_err()
        );
        assert!(e.contains(STATUS_PATH) && e.contains(why), "{text:?}: {e}");
    }
    let e = parse_status(STATUS_PATH, b"Package: a\n\xff\n").unwrap_err();
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    assert!(parse_status(STATUS_PATH, b"").unwrap().is_empty());
    assert!(parse_status(STATUS_PATH, b"\n\n \n").unwrap().is_empty());
    // Huge values are fine.
    let big = format!(
        "Package: a\n{OK}Version: 1.{}\nDepends: {}\n",
        "9".repeat(100_000),
        vec!["b | c (>= 1)"; 10_000].join(", ")
    );
    let p = parse_status(STATUS_PATH, big.as_bytes()).unwrap();
    assert_eq!(p[0].depends.len(), 10_000);
}

/// Oracle check against a real Debian rootfs built with e.g.
/// `mmdebstrap --variant=minbase --include=gcc,g++,make,netcat-openbsd,vim-tiny,jq,dos2unix,procps,tmux,e2fsprogs bookworm DIR`.
///
/// Runs in CI through `scripts/e2e.sh` (section `oracle`, as root, on the e2e base), which
/// sets:
/// * `NEMOCLAW_ORACLE_ROOT=DIR`: the base rootfs, extracted.
/// * `NEMOCLAW_ORACLE_AFTER=DIR2`: a copy of DIR in which `apt-mark manual KEEP...` and
///   `apt-get purge -y [--auto-remove] PURGE...` really ran in a chroot (PURGE: the
///   recipe's purge list, restricted to what is installed).
/// * `NEMOCLAW_ORACLE_RECIPE=FILE` (optional): the recipe whose `[packages]` are planned;
///   default: the built-in recipe (its full purge list, binutils included).
///
/// Both directions, nothing only printed: the packages apt removed are exactly the
/// planned ones; every file of the dpkg database and apt's extended_states (status and
/// extended_states included) is byte-identical to what the plan writes, removes or
/// leaves; every path apt removed is removed by the plan and the plan removes nothing
/// apt kept; every changed symlink is one the plan re-points. The only normalization is
/// [`oracle_side_effect`]: files that apt/dpkg touch as a side effect of running (logs,
/// caches, backups, locks, trigger outputs) and that an image build must not ship.
/// Without the variables: a note when run by hand, a failure with CI=true.
#[test]
#[ignore = "needs a real Debian rootfs purged by apt as root: run by scripts/e2e.sh (section oracle)"]
fn oracle_vs_apt() {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    let (Some(root), Some(after)) = (
        std::env::var_os("NEMOCLAW_ORACLE_ROOT"),
        std::env::var_os("NEMOCLAW_ORACLE_AFTER"),
    ) else {
        let ci = matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"));
        assert!(
            !ci,
            "CI=true, but NEMOCLAW_ORACLE_ROOT and NEMOCLAW_ORACLE_AFTER are not both set: \
             the apt oracle did not run (scripts/e2e.sh section oracle sets them)"
        );
        eprintln!("NEMOCLAW_ORACLE_ROOT / NEMOCLAW_ORACLE_AFTER not set: skipped");
        return;
    };
    let (root, after) = (PathBuf::from(root), PathBuf::from(after));
    let recipe = match std::env::var_os("NEMOCLAW_ORACLE_RECIPE") {
        Some(p) => crate::recipe::Recipe::load(Some(Path::new(&p))).unwrap(),
        None => crate::recipe::Recipe::load(None).unwrap(),
    };
    let pk = &recipe.packages;
    let files = load_db_files(&root);
    let after_files = load_db_files(&after);
    let plan = plan_purge(
        &files,
        &PurgeRequest {
            purge: pk.purge.clone(),
            keep: pk.keep.clone(),
            autoremove: pk.autoremove,
            strict: false,
        },
    )
    .unwrap();
    let mut problems: Vec<String> = Vec::new();

    // 1. Packages: what left the status file (installed or config-files) is the plan.
    let present = |f: &DbFiles| -> BTreeSet<String> {
        DpkgDb::parse(f)
            .unwrap()
            .packages()
            .iter()
            .filter(|p| p.state != "not-installed")
            .map(|p| format!("{}:{}", p.name, p.arch))
            .collect()
    };
    let (was, is) = (present(&files), present(&after_files));
    let apt: BTreeSet<String> = was.difference(&is).cloned().collect();
    let ours: BTreeSet<String> = plan
        .removed
        .iter()
        .map(|r| format!("{}:{}", r.name, r.arch))
        .collect();
    eprintln!(
        "packages: {} before, {} removed by apt, {} by the plan; purge list {:?}",
        was.len(),
        apt.len(),
        ours.len(),
        pk.purge
    );
    for p in ours.difference(&apt) {
        problems.push(format!("package {p}: the plan removes it, apt kept it"));
    }
    for p in apt.difference(&ours) {
        problems.push(format!("package {p}: apt removed it, the plan keeps it"));
    }
    assert!(
        !apt.is_empty(),
        "apt removed nothing: the AFTER tree was not purged (or the base has none of {:?})",
        pk.purge
    );

    // 2. The dpkg database and extended_states, file by file, byte for byte.
    let db_paths: BTreeSet<&String> = files
        .keys()
        .chain(after_files.keys())
        .chain(plan.write_files.keys())
        .collect();
    for path in db_paths {
        if oracle_side_effect(path) {
            continue;
        }
        let want: Option<&Vec<u8>> = match plan.write_files.get(path) {
            Some(b) => Some(b),
            None if plan.remove_paths.contains(path.as_str()) => None,
            None => files.get(path),
        };
        let got = after_files.get(path);
        if want != got {
            problems.push(match (want, got) {
                (Some(w), Some(g)) => format!(
                    "{path}: differs from apt's ({} vs {} bytes){}",
                    w.len(),
                    g.len(),
                    first_difference(w, g)
                ),
                (Some(_), None) => format!("{path}: apt removed it, the plan keeps/writes it"),
                (None, Some(_)) => format!("{path}: apt has it, the plan removes it"),
                (None, None) => unreachable!(),
            });
        }
    }

    // 3. The rest of the tree: paths that disappeared, symlinks that changed.
    let before_tree = walk_tree(&root);
    let after_tree = walk_tree(&after);
    let gone: BTreeSet<String> = before_tree
        .keys()
        .filter(|p| !after_tree.contains_key(*p) && !oracle_side_effect(p))
        .cloned()
        .collect();
    // What the normalization hid (for the log; the side-effect subtrees are not walked).
    let hidden: Vec<&String> = before_tree
        .iter()
        .filter(|(p, e)| oracle_side_effect(p) && after_tree.get(*p) != Some(e))
        .map(|(p, _)| p)
        .chain(
            after_tree
                .keys()
                .filter(|p| oracle_side_effect(p) && !before_tree.contains_key(*p)),
        )
        .collect();
    eprintln!("side effects of running apt, not compared: {hidden:?}");
    // Our plan applied to the before tree: a listed path counts where it really is
    // (its parent resolved through symlinks); directories go once they are empty.
    let resolve = |p: &str| -> Option<String> {
        let path = Path::new(p);
        let parent = path.parent()?;
        let real_parent = std::fs::canonicalize(root.join(parent.strip_prefix("/").ok()?)).ok()?;
        let rel = real_parent.strip_prefix(&root).ok()?;
        let r = format!("/{}/{}", rel.display(), path.file_name()?.to_string_lossy());
        Some(r.replace("//", "/"))
    };
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    let mut dirs: Vec<String> = Vec::new();
    for p in &plan.remove_paths {
        let Some(r) = resolve(p) else { continue };
        match before_tree.get(&r) {
            Some(TreeEntry::Dir) => dirs.push(r),
            Some(_) => {
                deleted.insert(r);
            }
            None => {}
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    dirs.dedup();
    for d in dirs {
        let prefix = format!("{d}/");
        let nonempty = before_tree
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .any(|(p, _)| !deleted.contains(p));
        if !nonempty {
            deleted.insert(d);
        }
    }
    let deleted: BTreeSet<String> = deleted
        .into_iter()
        .filter(|p| !oracle_side_effect(p))
        .collect();
    eprintln!(
        "paths: {} gone after apt, {} deleted by the plan",
        gone.len(),
        deleted.len()
    );
    for p in deleted.difference(&gone) {
        problems.push(format!("{p}: the plan deletes it, apt kept it"));
    }
    for p in gone.difference(&deleted) {
        problems.push(format!("{p}: apt deleted it, the plan keeps it"));
    }
    for (p, b) in &before_tree {
        let (TreeEntry::Symlink(t0), Some(TreeEntry::Symlink(t1))) = (b, after_tree.get(p)) else {
            continue;
        };
        let planned = plan.symlinks.get(p).unwrap_or(t0);
        if planned != t1 {
            problems.push(format!("{p}: apt points it to {t1}, the plan to {planned}"));
        }
    }
    for (p, t) in &plan.symlinks {
        match after_tree.get(p) {
            Some(TreeEntry::Symlink(real)) if real == t => {}
            other => problems.push(format!("{p}: the plan makes it -> {t}, apt has {other:?}")),
        }
    }
    // Regular files that apt rewrote in place, outside the database (compared above).
    for (p, b) in &before_tree {
        if let (TreeEntry::File(h0), Some(TreeEntry::File(h1))) = (b, after_tree.get(p)) {
            if h0 != h1 && !oracle_side_effect(p) && !files.contains_key(p) {
                problems.push(format!("{p}: apt rewrote it, the plan leaves it as it was"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} difference(s) between the plan and apt:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Paths that apt and dpkg change as a side effect of running and that are not part of
/// what a purge means for an image (the build writes none of them, on purpose):
/// * `/var/log/` (apt's and dpkg's logs of the run),
/// * `/var/cache/` (apt's package caches, debconf's `*-old` backups, man-db's index),
/// * `/var/lib/apt/lists/` (apt's index files; empty in the base),
/// * `/var/lib/dpkg/*-old` (dpkg's backup of each file it rewrites) and dpkg's and apt's
///   lock files,
/// * `/etc/ld.so.cache` (rewritten by the ldconfig trigger; in the image it keeps entries
///   for removed libraries, which the loader skips because the files are gone),
/// * `/proc`, `/dev`, `/sys`, `/run`, `/tmp` (what the chroot run needed or left).
fn oracle_side_effect(p: &str) -> bool {
    [
        "/var/log/",
        "/var/cache/",
        "/var/lib/apt/lists/",
        "/proc",
        "/dev",
        "/sys",
        "/run",
        "/tmp",
    ]
    .iter()
    .any(|x| p.starts_with(x))
        || p == "/etc/ld.so.cache"
        || p.starts_with("/var/lib/dpkg/") && (p.ends_with("-old") || p.ends_with("/lock"))
        || p == "/var/lib/dpkg/lock-frontend"
        || p == "/var/lib/dpkg/triggers/Lock"
        || p == "/var/lib/apt/extended_states~"
}

/// What `walk_tree` records per path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TreeEntry {
    Dir,
    Symlink(String),
    /// sha256 of the content, for files under /etc and /var/lib (elsewhere: size only).
    File(String),
    Other,
}

/// Every path under `root` (as `/rel`), without following symlinks.
fn walk_tree(root: &std::path::Path) -> std::collections::BTreeMap<String, TreeEntry> {
    use sha2::Digest;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            let ft = e.file_type().unwrap();
            let entry = if ft.is_dir() {
                if !oracle_side_effect(&rel) {
                    stack.push(p.clone());
                }
                TreeEntry::Dir
            } else if ft.is_symlink() {
                TreeEntry::Symlink(
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                )
            } else if ft.is_file() {
                if rel.starts_with("/etc/") || rel.starts_with("/var/lib/") {
                    TreeEntry::File(hex::encode(sha2::Sha256::digest(
                        std::fs::read(&p).unwrap(),
                    )))
                } else {
                    TreeEntry::File(format!("size {}", e.metadata().unwrap().len()))
                }
            } else {
                TreeEntry::Other
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// Where two byte strings first differ, as a line of each.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!(": line {}: plan '{x}', apt '{y}'", i + 1);
        }
    }
    format!(
        ": one is a prefix of the other ({} vs {} lines)",
        a.lines().count(),
        b.lines().count()
    )
}

/// DbFiles from a rootfs, as the build reads them from an image
/// (`steps::purge::db_files`): every regular file under /var/lib/dpkg and apt's
/// extended_states.
fn load_db_files(root: &std::path::Path) -> DbFiles {
    let mut files = DbFiles::new();
    let mut stack = vec![root.join("var/lib/dpkg")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = format!("/{}", e.path().strip_prefix(root).unwrap().display());
                files.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let es = root.join("var/lib/apt/extended_states");
    if let Ok(b) = std::fs::read(es) {
        files.insert(EXTENDED_STATES_PATH.into(), b);
    }
    files
}

/// APT::NeverAutoRemove (Debian's /etc/apt/apt.conf.d/01autoremove): firmware and
/// kernel image packages stay even when auto-installed and needed by nothing; names
/// that only look like them go like any other unneeded auto package.
#[test]
fn never_autoremove_patterns_like_apt() {
    let kept = [
        "firmware-linux-free",
        "linux-firmware",
        "linux-image-amd64",
        "linux-image-cloud-amd64",
    ];
    let gone = [
        "firmware-linu",
        "linux-firmware-extra",
        "linux-image-6.1.0-13-amd64",
        "linux-image-rt-cloud-amd64",
        "xlinux-firmware",
    ];
    let mut db = base();
    db.add(pkg("x"));
    for n in kept.iter().chain(&gone) {
        db.add(pkg(n)).auto(n);
    }
    let plan = db.purge(&["x"]);
    let mut want: Vec<&str> = gone.to_vec();
    want.push("x");
    want.sort();
    assert_eq!(removed_names(&plan), want);
}

/// Architecture qualifiers decide which instance satisfies a dependency, like dpkg's
/// multiarch rules: an `all` package depends on the native instance, `:any` takes a
/// `Multi-Arch: allowed` package of another architecture, a `Multi-Arch: foreign`
/// package satisfies any architecture, `:native` and `:ARCH` name one architecture.
#[test]
fn multiarch_qualifiers_choose_the_satisfying_instance() {
    let mut db = base();
    db.add(pkg("libfoo").same())
        .add(pkg("libfoo").same().arch("i386"))
        .add(pkg("perl").f("Multi-Arch", "allowed"))
        .add(pkg("make").f("Multi-Arch", "foreign"))
        .add(pkg("data").arch("all").deps("libfoo"))
        .add(pkg("tool").arch("i386").deps("perl:any"))
        .add(pkg("tool2").arch("i386").deps("make"))
        .add(pkg("nat").arch("i386").deps("perl:native"))
        .add(pkg("q").deps("libfoo:i386"))
        .add(pkg("q2").deps("data:amd64"))
        .add(pkg("perl2").arch("i386"))
        .add(pkg("perl3"))
        .add(pkg("x").deps("perl2:any | perl3"))
        .add(pkg("wine").same().deps("wine:i386"))
        .add(pkg("wine").same().arch("i386"))
        .file("/var/lib/dpkg/arch", "amd64\ni386\n");
    let files = db.build();
    let removed = |purge: &str| -> Vec<String> {
        let plan = plan_purge(&files, &req(&[purge], &[])).unwrap();
        plan.removed
            .iter()
            .map(|r| format!("{}:{}", r.name, r.arch))
            .collect()
    };
    assert_eq!(
        removed("libfoo:amd64"),
        ["data:all", "libfoo:amd64", "q2:amd64"]
    );
    assert_eq!(removed("libfoo:i386"), ["libfoo:i386", "q:amd64"]);
    assert_eq!(removed("perl"), ["nat:i386", "perl:amd64", "tool:i386"]);
    assert_eq!(removed("make"), ["make:amd64", "tool2:i386"]);
    // apt files an `all` package under the native architecture.
    assert_eq!(removed("data"), ["data:all", "q2:amd64"]);
    // `:any` needs Multi-Arch: allowed from another architecture: perl2:i386 is no
    // satisfier, so x goes with perl3.
    assert_eq!(removed("perl3"), ["perl3:amd64", "x:amd64"]);
    // wine:amd64 does not satisfy its own dependency on wine:i386.
    assert_eq!(removed("wine:i386"), ["wine:amd64", "wine:i386"]);
}

/// Request names resolve like apt: `name` prefers the native (or `all`) instance and
/// else takes the other one, `name:any` every instance; a `not-installed` stanza is
/// reported as not installed, not purged.
#[test]
fn request_names_resolve_to_instances_like_apt() {
    let mut db = base();
    db.add(pkg("libfoo").same())
        .add(pkg("libfoo").same().arch("i386"))
        .add(pkg("bar").arch("i386"))
        .add(pkg("gone").status("purge ok not-installed"))
        // Not a database dpkg writes, but one a hostile image may hold.
        .add(pkg("odd").arch("i386"))
        .add(pkg("odd").arch("all"))
        .file("/var/lib/dpkg/arch", "amd64\ni386\n");
    let files = db.build();
    let removed = |purge: &str| -> Vec<String> {
        let plan = plan_purge(&files, &req(&[purge], &[])).unwrap();
        plan.removed
            .iter()
            .map(|r| format!("{}:{}", r.name, r.arch))
            .collect()
    };
    assert_eq!(removed("libfoo:any"), ["libfoo:amd64", "libfoo:i386"]);
    assert_eq!(removed("bar"), ["bar:i386"]);
    assert_eq!(removed("odd"), ["odd:all"]);
    let plan = plan_purge(&files, &req(&["gone"], &[])).unwrap();
    assert_eq!(plan.not_installed, ["gone"]);
    assert!(plan.removed.is_empty() && plan.remove_paths.is_empty());
}

/// apt's extended_states markers are per architecture: purging one instance drops its
/// marker and keeps the marker of the other instance.
#[test]
fn extended_states_markers_of_other_instances_stay() {
    let mut db = base();
    db.add(pkg("libfoo").same())
        .add(pkg("libfoo").same().arch("i386"))
        .add(pkg("q").deps("libfoo:i386"))
        .file("/var/lib/dpkg/arch", "amd64\ni386\n")
        .file(
            EXTENDED_STATES_PATH,
            "Package: libfoo\nArchitecture: amd64\nAuto-Installed: 1\n\nPackage: libfoo\nArchitecture: i386\nAuto-Installed: 1\n",
        );
    let plan = db.purge(&["libfoo:amd64"]);
    assert_eq!(removed_names(&plan), ["libfoo"]);
    assert_eq!(
        String::from_utf8(plan.write_files[EXTENDED_STATES_PATH].clone()).unwrap(),
        "Package: libfoo\nArchitecture: i386\nAuto-Installed: 1\n"
    );
}

/// Issue 12 #13: a hostile `.list` naming the dpkg database itself or apt's
/// extended_states: the plan rewrites those files, it never deletes them.
#[test]
fn database_paths_in_a_file_list_are_never_removed() {
    let mut db = base();
    db.add(pkg("evil").files(&[
        "/var",
        "/var/lib",
        "/var/lib/dpkg",
        "/var/lib/dpkg/status",
        "/var/lib/dpkg/info",
        "/var/lib/dpkg/info/libc6:amd64.list",
        "/var/lib/apt",
        "/var/lib/apt/extended_states",
        "/usr/bin/evil",
    ]));
    assert_eq!(
        all_paths(&db.purge(&["evil"])),
        [
            "/usr/bin/evil",
            "/var/lib",
            "/var/lib/apt",
            "/var/lib/dpkg/info/evil.list",
            "/var/lib/dpkg/info/evil.md5sums",
        ]
    );
}

/// Info files are `PKG.<type>`: purging python3 leaves python3.11's info files
/// (`python3.11.list` starts with `python3.` too).
#[test]
fn info_files_of_a_dotted_name_stay() {
    let mut db = base();
    db.add(pkg("python3"))
        .add(pkg("python3.11"))
        .file(&format!("{INFO_DIR}python3.postinst"), "#!/bin/sh\n")
        .file(&format!("{INFO_DIR}python3.11.postinst"), "#!/bin/sh\n");
    assert_eq!(
        all_paths(&db.purge(&["python3"])),
        [
            "/var/lib/dpkg/info/python3.list",
            "/var/lib/dpkg/info/python3.md5sums",
            "/var/lib/dpkg/info/python3.postinst",
        ]
    );
}

/// Trigger interest files lose the removed package's lines and stay if others remain;
/// dpkg's own bookkeeping (`Unincorp`, `Lock`, `*.new`) is not an interest file.
#[test]
fn trigger_bookkeeping_files_are_left_alone() {
    let mut db = base();
    db.add(pkg("man-db"))
        .add(pkg("keepme"))
        .file("/var/lib/dpkg/triggers/ldconfig", "man-db\nkeepme\n")
        .file("/var/lib/dpkg/triggers/Unincorp", "man-db\n")
        .file("/var/lib/dpkg/triggers/Lock", "man-db\n")
        .file("/var/lib/dpkg/triggers/mandb.new", "man-db\n");
    let plan = db.purge(&["man-db"]);
    let triggers: Vec<(&str, &[u8])> = plan
        .write_files
        .iter()
        .filter(|(p, _)| p.starts_with("/var/lib/dpkg/triggers/"))
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    assert_eq!(
        triggers,
        [("/var/lib/dpkg/triggers/ldconfig", b"keepme\n".as_slice())]
    );
    assert!(!plan
        .remove_paths
        .iter()
        .any(|p| p.starts_with("/var/lib/dpkg/triggers/")));
}

/// A manual-mode alternative whose selection the caller did not supply (no
/// /etc/alternatives entry) is treated as losing its selection: it switches to auto
/// and the links point to the best remaining choice, like update-alternatives.
#[test]
fn manual_alternative_without_known_selection_switches_to_auto() {
    let mut db = base();
    db.add(pkg("gcc").files(&["/usr/bin/gcc"]))
        .add(pkg("clang").files(&["/usr/bin/clang"]))
        .add(pkg("tcc").files(&["/usr/bin/tcc"]))
        .file(
            "/var/lib/dpkg/alternatives/cc",
            "manual\n/usr/bin/cc\n\n/usr/bin/clang\n10\n/usr/bin/gcc\n20\n/usr/bin/tcc\n5\n\n",
        );
    let plan = db.purge(&["tcc"]);
    assert_eq!(
        String::from_utf8(plan.write_files["/var/lib/dpkg/alternatives/cc"].clone()).unwrap(),
        "auto\n/usr/bin/cc\n\n/usr/bin/clang\n10\n/usr/bin/gcc\n20\n\n"
    );
    assert_eq!(plan.symlinks["/etc/alternatives/cc"], "/usr/bin/gcc");
    assert_eq!(plan.symlinks["/usr/bin/cc"], "/etc/alternatives/cc");
}

/// Re-pointing an alternative re-points its slaves to the new choice's slave files.
#[test]
fn repointed_alternative_links_its_slaves_to_the_new_choice() {
    let mut db = base();
    db.add(pkg("gcc").files(&["/usr/bin/gcc", "/usr/share/man/man1/gcc.1.gz"]))
        .add(pkg("clang").files(&["/usr/bin/clang", "/usr/share/man/man1/clang.1.gz"]))
        .file(
            "/var/lib/dpkg/alternatives/cc",
            "auto\n/usr/bin/cc\ncc.1.gz\n/usr/share/man/man1/cc.1.gz\n\n/usr/bin/clang\n10\n/usr/share/man/man1/clang.1.gz\n/usr/bin/gcc\n20\n/usr/share/man/man1/gcc.1.gz\n\n",
        );
    let plan = db.purge(&["gcc"]);
    let links: Vec<(&str, &str)> = plan
        .symlinks
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        links,
        [
            ("/etc/alternatives/cc", "/usr/bin/clang"),
            (
                "/etc/alternatives/cc.1.gz",
                "/usr/share/man/man1/clang.1.gz"
            ),
            ("/usr/bin/cc", "/etc/alternatives/cc"),
            ("/usr/share/man/man1/cc.1.gz", "/etc/alternatives/cc.1.gz"),
        ]
    );
    assert_eq!(
        rm_paths(&plan),
        ["/usr/bin/gcc", "/usr/share/man/man1/gcc.1.gz"]
    );
}

/// The /etc/alternatives link points to a path that is no registered choice: like
/// update-alternatives ("current alternative ... is unknown"), the group switches to
/// auto and its links point to the best choice once one of its choices goes.
#[test]
fn unknown_current_alternative_switches_to_auto() {
    let mut db = base();
    db.add(pkg("gcc").files(&["/usr/bin/gcc"]))
        .add(pkg("clang").files(&["/usr/bin/clang"]))
        .add(pkg("tcc").files(&["/usr/bin/tcc"]))
        .file(
            "/var/lib/dpkg/alternatives/cc",
            "manual\n/usr/bin/cc\n\n/usr/bin/clang\n10\n/usr/bin/gcc\n20\n/usr/bin/tcc\n5\n\n",
        )
        .file("/etc/alternatives/cc", "/usr/bin/old-cc\n");
    let plan = db.purge(&["tcc"]);
    assert_eq!(
        String::from_utf8(plan.write_files["/var/lib/dpkg/alternatives/cc"].clone()).unwrap(),
        "auto\n/usr/bin/cc\n\n/usr/bin/clang\n10\n/usr/bin/gcc\n20\n\n"
    );
    assert_eq!(plan.symlinks["/etc/alternatives/cc"], "/usr/bin/gcc");
    assert_eq!(plan.symlinks["/usr/bin/cc"], "/etc/alternatives/cc");
}
