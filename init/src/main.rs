//! `nemoclaw-init`: the sandbox image's PID 1.
//!
//! Replaces upstream's bash entrypoint with one static binary that needs nothing from the
//! image (no shell, no NSS, no setpriv/capsh) to harden the container before handing it
//! to the workload: lock PATH, cap rlimits, shrink the capability bounding set, write the
//! proxy environment, lock rc files, then step down to an unprivileged user and act as
//! init (signal forwarding, zombie reaping, gateway restarts).

mod accounts;
mod caps;
mod check;
mod config;
mod files;
mod landlock_policy;
mod proxyenv;
mod rlimits;
mod runtime_env;
mod stepdown;
mod supervise;
#[cfg(test)]
mod testutil;
mod tmpdirs;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use config::Config;
use landlock_policy::Mode;
use nix::unistd::Pid;
use stepdown::{Options, Target};

/// Log lines go to stderr with a fixed prefix, so they are easy to find in container logs.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("nemoclaw-init: {}", format_args!($($arg)*)) };
}

fn log(msg: String) {
    say!("{msg}");
}

const USAGE: &str = "\
usage: nemoclaw-init [--] COMMAND [ARG...]   run COMMAND as $NEMOCLAW_RUN_AS (default sandbox)
       nemoclaw-init                         supervise the gateway ($NEMOCLAW_GATEWAY_CMD) as
                                             $NEMOCLAW_GATEWAY_USER (default gateway)
       nemoclaw-init --check [--json]        report what would be done; change nothing
       nemoclaw-init --version | --help

environment: NEMOCLAW_NPROC NEMOCLAW_NOFILE NEMOCLAW_REQUIRE_CAP_DROP NEMOCLAW_PROXY_HOST
  NEMOCLAW_PROXY_PORT NEMOCLAW_PROXY_ENV_FILE NEMOCLAW_RUN_AS NEMOCLAW_GATEWAY_USER
  NEMOCLAW_GATEWAY_CMD NEMOCLAW_NO_NEW_PRIVS NEMOCLAW_LANDLOCK (1|require)
  NEMOCLAW_LANDLOCK_POLICY NEMOCLAW_INIT_CONFIG (runtime env declaration, default
  /etc/nemoclaw/init.json) NEMOCLAW_ROOT (prefix for etc/passwd, etc/group)";

#[derive(Debug, PartialEq, Eq)]
enum Action {
    Help,
    Version,
    Check { json: bool },
    Run(Option<Vec<OsString>>),
}

/// Options come first; the first non-option (or everything after `--`) is the command,
/// passed through untouched.
fn parse_args(args: Vec<OsString>) -> Result<Action, String> {
    let (mut check, mut json) = (false, false);
    let mut it = args.into_iter();
    let mut command = None;
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--help" | "-h") => return Ok(Action::Help),
            Some("--version" | "-V") => return Ok(Action::Version),
            Some("--check") => check = true,
            Some("--json") => json = true,
            Some("--") => {
                command = Some(it.by_ref().collect::<Vec<_>>());
                break;
            }
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => {
                let mut v = vec![arg];
                v.extend(it.by_ref());
                command = Some(v);
                break;
            }
        }
    }
    let command = command.filter(|c| !c.is_empty());
    if check {
        if command.is_some() {
            return Err("--check takes no command".into());
        }
        return Ok(Action::Check { json });
    }
    if json {
        return Err("--json is only valid with --check".into());
    }
    Ok(Action::Run(command))
}

fn main() {
    let action = match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            say!("{e}");
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    match action {
        Action::Help => println!("{USAGE}"),
        Action::Version => println!("nemoclaw-init {}", env!("CARGO_PKG_VERSION")),
        Action::Check { json } => {
            let report = check::report(&Config::from_env());
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        say!("cannot encode report: {e}");
                        std::process::exit(1);
                    }
                }
            } else {
                check::print_text(&report);
            }
        }
        Action::Run(command) => std::process::exit(run(command)),
    }
}

/// Startup sequence and hand-off. Returns the exit status.
///
/// Two paths, one sequence. As root (`docker run --user root`): drop capabilities, write
/// the env file root-owned, create the tool directories for the workload user, lock the rc
/// files, step down. As any other uid (OpenShell starts the entrypoint as uid 998 with
/// every capability set empty): the same env file and directories, as that user, and the
/// command runs as it is. Either way the workload sees the same environment.
fn run(command: Option<Vec<OsString>>) -> i32 {
    std::env::set_var("PATH", config::SAFE_PATH);
    let cfg = Config::from_env();
    let privileged = nix::unistd::geteuid().is_root();
    let caps_empty = caps::all_sets_empty().unwrap_or(false);
    if caps_empty {
        say!("all capability sets are empty (OpenShell full enforcement): nothing to drop");
    }
    if cannot_step_down(privileged, caps::can_switch_user()) {
        say!(
            "[SECURITY] running as root without CAP_SETUID/CAP_SETGID (e.g. --user root \
             --cap-drop=ALL): cannot step down, and the workload must not run as root. Run \
             the image as its default user (--user sandbox, uid 998), or keep SETUID, SETGID \
             and SETPCAP (--cap-drop=ALL --cap-add=SETUID,SETGID,SETPCAP)"
        );
        return 1;
    }
    if !privileged {
        say!(
            "running as uid {} (not root): no capability drop or user switch; env file and \
             tool directories are set up as this user",
            nix::unistd::geteuid()
        );
    }
    if !cfg.landlock_mode_known {
        say!("NEMOCLAW_LANDLOCK value not understood; treating it as best effort");
    }

    rlimits::apply(&log);

    if drops_at_start(privileged, caps_empty) {
        caps::drop_at_start_and_report(&log);
    }
    if cfg.require_cap_drop {
        if let Err(e) = caps::require_dropped() {
            say!("[SECURITY] NEMOCLAW_REQUIRE_CAP_DROP=1: {e}");
            return 1;
        }
    }

    let proxy =
        match proxyenv::Proxy::from_values(cfg.proxy_host.as_deref(), cfg.proxy_port.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                say!("[SECURITY] {e}");
                return 1;
            }
        };

    // Root path: who the workload runs as, resolved from the image's own account files.
    let user = match command {
        Some(_) => &cfg.run_as,
        None => &cfg.gateway_user,
    };
    let (target, dir_owner) = if privileged {
        let t = match resolve_target(&cfg, user) {
            Ok(t) => t,
            Err(e) => {
                say!("[SECURITY] {e}; refusing to run anything as root");
                return 1;
            }
        };
        let owner = tool_dir_owner(&cfg, user, &t);
        (Some(t), owner)
    } else {
        (None, None)
    };

    let vars = prepare_environment(&cfg, &proxy, privileged, dir_owner);
    if privileged {
        for rc in files::RC_FILES {
            match files::lock_rc(Path::new(rc)) {
                Ok(files::Lock::Locked) => say!("locked {rc} (root:root 0444)"),
                Ok(files::Lock::Missing) => say!("{rc} does not exist; nothing to lock"),
                Err(e) => say!("[SECURITY] could not lock {rc}: {e}"),
            }
        }
    }
    // The workload gets the same variables directly, for processes that never start a
    // shell (the gateway is run by `sh -c`, which reads no profile).
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }

    let landlock = match landlock_setup(&cfg) {
        Ok(l) => l,
        Err(e) => {
            say!("[SECURITY] {e}");
            return 1;
        }
    };
    let opts = Options {
        no_new_privs: cfg.no_new_privs,
        landlock,
        umask: None,
    };

    if let Err(e) = supervise::block_signals() {
        say!("cannot block signals: {e}");
        return 1;
    }
    match command {
        Some(argv) => run_command(argv, target, opts),
        None => run_gateway(&cfg, target, opts),
    }
}

/// The env file and the tool directories, on both paths. Failures are logged and never
/// stop startup: a container without its proxy file still has the variables in its
/// process environment. Returns the variables the workload gets.
fn prepare_environment(
    cfg: &Config,
    proxy: &proxyenv::Proxy,
    privileged: bool,
    dir_owner: Option<(u32, u32)>,
) -> Vec<(String, String)> {
    let spec = runtime_env::load(&cfg.init_config).unwrap_or_else(|e| {
        say!("[SECURITY] {e}; only the proxy variables are set");
        runtime_env::Spec::default()
    });
    let environ: Vec<(String, String)> = std::env::vars().collect();
    let (passed, refused) = runtime_env::passthrough(&spec.passthrough, &environ);
    for name in &refused {
        say!("{name} looks like a secret: kept out of the world-readable env file");
    }
    let mut declared: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    declared.extend(passed);
    let vars = proxyenv::variables(proxy, &declared);

    let owner = privileged.then_some((0, 0));
    match proxyenv::write_atomic(&cfg.proxy_file, &proxyenv::render(&vars), owner) {
        Ok(()) => say!(
            "wrote {} ({} variables, proxy {}, mode 0444{})",
            cfg.proxy_file.display(),
            vars.len(),
            proxy.url(),
            if privileged { ", root:root" } else { "" }
        ),
        Err(e) => say!(
            "[SECURITY] could not write {}: {e}",
            cfg.proxy_file.display()
        ),
    }
    let dirs: Vec<(std::path::PathBuf, u32)> = spec
        .env
        .iter()
        .filter_map(|e| e.mkdir.map(|m| (std::path::PathBuf::from(&e.value), m)))
        .collect();
    let made = prepare_dirs(&dirs, dir_owner);
    if let Some(note) = prepared_note(made) {
        say!("{note}");
    }
    vars
}

/// Creates the tool directories; logs each failure and returns how many are ready.
fn prepare_dirs(dirs: &[(std::path::PathBuf, u32)], owner: Option<(u32, u32)>) -> usize {
    let mut made = 0;
    for ((path, _), r) in dirs.iter().zip(tmpdirs::ensure_dirs(dirs, owner)) {
        match r {
            Ok(()) => made += 1,
            Err(err) => say!("could not prepare {}: {err}", path.display()),
        }
    }
    made
}

fn prepared_note(made: usize) -> Option<String> {
    (made > 0).then(|| format!("prepared {made} tool directories"))
}

/// Root that cannot switch users must not start anything: the workload would run as root.
fn cannot_step_down(privileged: bool, can_switch_user: bool) -> bool {
    privileged && !can_switch_user
}

/// The startup capability drop is for root that still holds capabilities; with every set
/// already empty (OpenShell) there is nothing to drop.
fn drops_at_start(privileged: bool, caps_empty: bool) -> bool {
    privileged && !caps_empty
}

/// Owner of the tool directories: the sandbox user even when the gateway runs
/// (upstream: `install -d -o sandbox -g sandbox`); gateway reaches them by group.
fn tool_dir_owner(cfg: &Config, user: &str, target: &Target) -> Option<(u32, u32)> {
    if user == cfg.run_as {
        Some((target.uid, target.gid))
    } else {
        resolve_target(cfg, &cfg.run_as)
            .ok()
            .map(|s| (s.uid, s.gid))
    }
}

fn resolve_target(cfg: &Config, user: &str) -> Result<Target, String> {
    let accounts = accounts::load(&cfg.root)?;
    for n in &accounts.notes {
        say!("{n}");
    }
    Target::resolve(&accounts, user)
}

/// Loads the Landlock policy when asked for. Only an error in `require` mode is fatal.
fn landlock_setup(cfg: &Config) -> Result<Option<(landlock_policy::Policy, bool)>, String> {
    if cfg.landlock_mode == Mode::Off {
        return Ok(None);
    }
    let required = cfg.landlock_mode == Mode::Require;
    let abi = landlock_policy::describe_abi();
    say!("landlock: kernel {abi}");
    if required && landlock_policy::kernel_abi().is_none() {
        return Err("NEMOCLAW_LANDLOCK=require but the kernel does not support Landlock".into());
    }
    match landlock_policy::load(&cfg.landlock_policy) {
        Ok(p) => Ok(Some((p, required))),
        Err(e) if required => Err(format!("NEMOCLAW_LANDLOCK=require: {e}")),
        Err(e) => {
            say!("landlock skipped: {e}");
            Ok(None)
        }
    }
}

/// Prepares a command that steps down in the child before exec.
fn prepared(mut cmd: Command, target: Option<Target>, opts: Options) -> Command {
    if let Some(t) = &target {
        cmd.env("HOME", &t.home)
            .env("USER", &t.name)
            .env("LOGNAME", &t.name);
    }
    // SAFETY: the init is single-threaded, so the forked child may allocate and print;
    // the closure only makes syscalls and returns an error to abort the exec.
    unsafe {
        cmd.pre_exec(move || stepdown::in_child(target.as_ref(), &opts));
    }
    cmd
}

fn who(target: &Option<Target>) -> String {
    match target {
        Some(t) => t.describe(),
        None => format!("uid {}", nix::unistd::getuid()),
    }
}

/// Exit status for a command that could not be started (shell convention).
fn spawn_failure_status(e: &std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

fn run_command(argv: Vec<OsString>, target: Option<Target>, opts: Options) -> i32 {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    say!("running {:?} as {}", argv, who(&target));
    match prepared(cmd, target, opts).spawn() {
        Ok(child) => supervise::run_command(Pid::from_raw(child.id() as i32), &log),
        Err(e) => {
            say!("cannot run {:?}: {e}", argv[0]);
            spawn_failure_status(&e)
        }
    }
}

/// The gateway creates files its group (the sandbox user) must be able to use.
fn gateway_options(opts: Options) -> Options {
    Options {
        umask: Some(0o007),
        ..opts
    }
}

fn run_gateway(cfg: &Config, target: Option<Target>, opts: Options) -> i32 {
    let owner = target.as_ref().map(|t| (t.uid, t.gid));
    let opts = gateway_options(opts);
    say!(
        "supervising gateway {:?} as {}, log {}",
        cfg.gateway_cmd,
        who(&target),
        files::GATEWAY_LOG
    );
    let log_file = match files::open_gateway_log(Path::new(files::GATEWAY_LOG), owner) {
        Ok(f) => Some(f),
        Err(e) => {
            say!(
                "cannot open {}: {e}; gateway output goes to this stderr",
                files::GATEWAY_LOG
            );
            None
        }
    };
    let gateway_cmd = cfg.gateway_cmd.clone();
    let mut start = move || -> Result<Pid, i32> {
        let (out, err) = match &log_file {
            None => (Stdio::inherit(), Stdio::inherit()),
            Some(f) => match f.try_clone().and_then(|a| Ok((a, f.try_clone()?))) {
                Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
                Err(e) => {
                    say!("cannot duplicate the gateway log descriptor: {e}");
                    return Err(1);
                }
            },
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&gateway_cmd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        match prepared(cmd, target.clone(), opts.clone()).spawn() {
            Ok(child) => Ok(Pid::from_raw(child.id() as i32)),
            Err(e) => {
                say!("cannot start gateway: {e}");
                Err(spawn_failure_status(&e))
            }
        }
    };
    supervise::run_gateway(&mut start, &log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use testutil::config_in;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn cli_parsing() {
        assert_eq!(parse_args(args(&[])), Ok(Action::Run(None)));
        assert_eq!(
            parse_args(args(&["/bin/bash", "-c", "id --help"])),
            Ok(Action::Run(Some(args(&["/bin/bash", "-c", "id --help"]))))
        );
        assert_eq!(
            parse_args(args(&["--", "--weird", "x"])),
            Ok(Action::Run(Some(args(&["--weird", "x"]))))
        );
        assert_eq!(parse_args(args(&["--"])), Ok(Action::Run(None)));
        assert_eq!(
            parse_args(args(&["--check", "--json"])),
            Ok(Action::Check { json: true })
        );
        assert_eq!(
            parse_args(args(&["--check"])),
            Ok(Action::Check { json: false })
        );
        assert_eq!(parse_args(args(&["--version"])), Ok(Action::Version));
        assert_eq!(parse_args(args(&["--help", "x"])), Ok(Action::Help));
        assert!(parse_args(args(&["--json"])).is_err());
        assert!(parse_args(args(&["--bogus"])).is_err());
        assert!(parse_args(args(&["--check", "ls"])).is_err());
    }

    /// A scratch directory, removed on drop.
    struct Scratch(std::path::PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let d = std::env::temp_dir()
                .join(format!("nemoclaw-init-main-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("etc")).expect("mkdir");
            Scratch(d)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn target(name: &str, uid: u32) -> Target {
        Target {
            name: name.into(),
            uid,
            gid: uid,
            groups: vec![uid],
            home: "/sandbox".into(),
        }
    }

    #[test]
    fn root_without_setuid_refuses_and_only_root_drops() {
        assert!(cannot_step_down(true, false));
        assert!(!cannot_step_down(true, true));
        assert!(!cannot_step_down(false, false));
        assert!(!cannot_step_down(false, true));
        assert!(drops_at_start(true, false));
        assert!(!drops_at_start(true, true));
        assert!(!drops_at_start(false, false));
        assert!(!drops_at_start(false, true));
    }

    #[test]
    fn tool_directories_belong_to_the_run_as_user() {
        let d = Scratch::new("owner");
        std::fs::write(
            d.0.join("etc/passwd"),
            "gateway:x:999:999::/sandbox:/bin/sh\nsandbox:x:998:997::/sandbox:/bin/sh\n",
        )
        .expect("passwd");
        let cfg = config_in(&d.0);
        // The run-as user's own target is used as it is (no second lookup).
        assert_eq!(
            tool_dir_owner(&cfg, "sandbox", &target("sandbox", 5000)),
            Some((5000, 5000))
        );
        // The gateway's directories still go to the sandbox user, from passwd.
        assert_eq!(
            tool_dir_owner(&cfg, "gateway", &target("gateway", 999)),
            Some((998, 997))
        );
        let mut nobody = cfg.clone();
        nobody.run_as = "missing".into();
        assert_eq!(
            tool_dir_owner(&nobody, "gateway", &target("gateway", 999)),
            None
        );
    }

    #[test]
    fn environment_file_and_tool_directories() {
        let d = Scratch::new("env");
        let tool_dir = d.0.join("tools/.gnupg");
        std::fs::write(
            d.0.join("init.json"),
            format!(
                r#"{{"env":[{{"name":"GNUPGHOME","value":"{}","mkdir":"0700"}},
                    {{"name":"NEMOCLAW_TEST_PLAIN","value":"v1"}}],"passthrough":[]}}"#,
                tool_dir.display()
            ),
        )
        .expect("init.json");
        let cfg = config_in(&d.0);
        let proxy = proxyenv::Proxy::from_values(Some("10.1.2.3"), Some("3128")).expect("proxy");
        let vars = prepare_environment(&cfg, &proxy, false, None);
        let declared = vec![
            ("GNUPGHOME".to_string(), tool_dir.display().to_string()),
            ("NEMOCLAW_TEST_PLAIN".to_string(), "v1".to_string()),
        ];
        assert_eq!(vars, proxyenv::variables(&proxy, &declared));
        assert!(vars.contains(&("HTTPS_PROXY".into(), "http://10.1.2.3:3128".into())));
        let file = std::fs::read_to_string(&cfg.proxy_file).expect("env file written");
        assert_eq!(file, proxyenv::render(&vars));
        let meta = std::fs::metadata(&tool_dir).expect("tool dir made");
        assert!(meta.is_dir());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o700
        );
    }

    #[test]
    fn landlock_modes_and_policy_errors() {
        let d = Scratch::new("landlock");
        let mut cfg = config_in(&d.0);
        // Off never reads the policy, even a valid one.
        std::fs::write(&cfg.landlock_policy, r#"{"read_only":["/usr"]}"#).expect("policy");
        assert_eq!(landlock_setup(&cfg), Ok(None));
        let policy = landlock_policy::load(&cfg.landlock_policy).expect("valid policy");

        cfg.landlock_mode = Mode::BestEffort;
        assert_eq!(landlock_setup(&cfg), Ok(Some((policy.clone(), false))));
        cfg.landlock_mode = Mode::Require;
        if landlock_policy::kernel_abi().is_some() {
            assert_eq!(landlock_setup(&cfg), Ok(Some((policy, true))));
        } else {
            assert!(landlock_setup(&cfg).is_err());
        }

        // A missing policy: skipped in best effort, fatal when required.
        cfg.landlock_policy = d.0.join("missing.json");
        cfg.landlock_mode = Mode::BestEffort;
        assert_eq!(landlock_setup(&cfg), Ok(None));
        cfg.landlock_mode = Mode::Require;
        let err = landlock_setup(&cfg).expect_err("required");
        assert!(err.contains("NEMOCLAW_LANDLOCK=require"), "{err}");
    }

    #[test]
    fn spawn_failures_use_shell_statuses() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(spawn_failure_status(&nf), 127);
        assert_eq!(spawn_failure_status(&denied), 126);

        assert_eq!(
            run_command(
                args(&["/nonexistent/nemoclaw-no-such-command"]),
                None,
                Options::default()
            ),
            127
        );
        let d = Scratch::new("spawn");
        let script = d.0.join("not-executable");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
        assert_eq!(
            run_command(vec![script.into_os_string()], None, Options::default()),
            126
        );
    }

    #[test]
    fn counts_prepared_directories() {
        let d = Scratch::new("dirs");
        let dirs = vec![
            (d.0.join("a"), 0o700),
            (d.0.join("b/c"), 0o755),
            // Under a regular file: cannot be made.
            (d.0.join("etc/file/x"), 0o700),
        ];
        std::fs::write(d.0.join("etc/file"), "x").expect("file");
        assert_eq!(prepare_dirs(&dirs, None), 2);
        assert!(d.0.join("b/c").is_dir());
        assert_eq!(prepared_note(0), None);
        assert_eq!(
            prepared_note(2),
            Some("prepared 2 tool directories".to_string())
        );
    }

    #[test]
    fn gateway_gets_a_group_umask() {
        let opts = gateway_options(Options {
            no_new_privs: true,
            landlock: None,
            umask: None,
        });
        assert_eq!(opts.umask, Some(0o007));
        assert!(opts.no_new_privs);
    }

    /// Not a test on its own: the body of `startup_sequence_exit_statuses`, which runs it
    /// in a re-executed test binary because `run` changes process-wide state (PATH,
    /// environment, signal mask, capabilities, rlimits).
    #[test]
    #[ignore = "helper process for startup_sequence_exit_statuses"]
    fn run_helper_process() {
        if let Some(cmd) = std::env::var_os("NEMOCLAW_TEST_RUN_COMMAND") {
            std::process::exit(run(Some(vec![cmd])));
        }
    }

    /// Runs the startup sequence for `command` in its own process; returns the exit
    /// status and stderr.
    fn startup(d: &Scratch, command: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--ignored",
            "--exact",
            "tests::run_helper_process",
            "--nocapture",
            "--test-threads=1",
        ]);
        for (k, _) in std::env::vars() {
            if k.starts_with("NEMOCLAW_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NEMOCLAW_TEST_RUN_COMMAND", command)
            .env("NEMOCLAW_ROOT", &d.0)
            .env("NEMOCLAW_PROXY_ENV_FILE", d.0.join("proxy-env.sh"))
            .env("NEMOCLAW_INIT_CONFIG", d.0.join("init.json"))
            .envs(env.iter().copied());
        let out = cmd.output().expect("re-run the test binary");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn startup_sequence_exit_statuses() {
        if files::RC_FILES.iter().any(|p| Path::new(p).exists()) {
            eprintln!("skipped: this host has /sandbox rc files the root path would lock");
            return;
        }
        let d = Scratch::new("run");
        std::fs::write(
            d.0.join("etc/passwd"),
            "sandbox:x:998:998::/sandbox:/bin/sh\n",
        )
        .expect("passwd");
        let root = nix::unistd::geteuid().is_root();

        let (code, err) = startup(&d, "/nonexistent/nemoclaw-cmd", &[]);
        assert_eq!(code, Some(127), "{err}");
        assert!(err.contains("nofile limit soft="), "{err}");
        assert!(!err.contains("not understood"), "{err}");
        assert_eq!(err.contains("(not root)"), !root, "{err}");
        if root {
            assert!(err.contains("as sandbox (uid 998, gid 998"), "{err}");
        }
        let env_file = std::fs::read_to_string(d.0.join("proxy-env.sh")).expect("env file");
        assert!(env_file.contains("export HTTPS_PROXY="), "{env_file}");

        let (code, err) = startup(
            &d,
            "/nonexistent/nemoclaw-cmd",
            &[("NEMOCLAW_LANDLOCK", "maybe")],
        );
        assert_eq!(code, Some(127), "{err}");
        assert!(
            err.contains("NEMOCLAW_LANDLOCK value not understood"),
            "{err}"
        );

        let (code, err) = startup(
            &d,
            "/nonexistent/nemoclaw-cmd",
            &[("NEMOCLAW_PROXY_HOST", "bad host!")],
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("[SECURITY]"), "{err}");
        if root {
            let (code, err) = startup(
                &d,
                "/nonexistent/nemoclaw-cmd",
                &[("NEMOCLAW_RUN_AS", "nobody")],
            );
            assert_eq!(code, Some(1), "{err}");
            assert!(err.contains("refusing to run anything as root"), "{err}");
        }
    }

    #[test]
    fn names_who_runs_the_workload() {
        let t = target("sandbox", 998);
        assert_eq!(who(&Some(t.clone())), t.describe());
        assert_eq!(who(&None), format!("uid {}", nix::unistd::getuid()));
    }
}
