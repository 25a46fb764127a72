//! Test helpers: code that must run in its own process (capability drops, user switches,
//! Landlock) runs in a forked child before exec, exactly where the init runs its step-down.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

/// Whether this test process is root with the capabilities a step-down needs. Tests that
/// really switch users or drop capabilities are skipped (and say so) otherwise.
pub fn privileged() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && crate::caps::can_switch_user()
        && crate::caps::can_drop_bounding();
    if !ok {
        eprintln!("skipped: needs root with CAP_SETUID, CAP_SETGID and CAP_SETPCAP");
    }
    ok
}

/// Runs `setup` in a forked child before it execs `argv` (`pre_exec`, like the init);
/// returns the program's output, or the error `setup` returned.
pub fn run_after<F>(setup: F, argv: &[&str]) -> io::Result<Output>
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: the closures used in tests only make syscalls and format error messages.
    unsafe {
        cmd.pre_exec(setup);
    }
    cmd.output()
}

/// Runs `check` in a forked child; its `Err` comes back as the spawn error.
pub fn in_child<F>(check: F) -> io::Result<()>
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    run_after(check, &["/bin/true"]).map(|_| ())
}

/// A failure to report from a child: the message goes to stderr, the errno back to the
/// parent.
pub fn child_fail(msg: String) -> io::Error {
    eprintln!("child check failed: {msg}");
    io::Error::from_raw_os_error(nix::libc::ENOTRECOVERABLE)
}

/// The value of `key:` in `/proc/<pid>/status` text.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A config whose files all live under `dir` (none of them exist yet), Landlock off.
pub fn config_in(dir: &std::path::Path) -> crate::config::Config {
    crate::config::Config {
        root: dir.to_path_buf(),
        run_as: "sandbox".into(),
        gateway_user: "gateway".into(),
        gateway_cmd: crate::config::DEFAULT_GATEWAY_CMD.into(),
        proxy_host: None,
        proxy_port: None,
        proxy_file: dir.join("proxy-env.sh"),
        require_cap_drop: false,
        no_new_privs: false,
        landlock_mode: crate::landlock_policy::Mode::Off,
        landlock_mode_known: true,
        landlock_policy: dir.join("landlock.json"),
        init_config: dir.join("init.json"),
    }
}
