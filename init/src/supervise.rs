//! PID 1 duties: forward signals, reap every zombie, and restart the gateway.
//!
//! The restart policy is a pure struct with the clock passed in, so its behaviour
//! (restart counting, the 60 s critical window, no restart after a clean exit or a
//! stop request) is unit-tested without sleeping. The event loop blocks the signals it
//! handles and takes them synchronously with `sigwait`; as PID 1 in a PID namespace,
//! blocked signals are still delivered (unhandled default ones would be discarded).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{alarm, Pid};

/// Signals passed on to the child.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// What to do after the gateway exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stop supervising and exit with this status.
    Exit(i32),
    /// Start it again after `delay`; `critical` when the restarts in the window reached
    /// the threshold (the crash loop should be looked at).
    Restart {
        delay: Duration,
        restarts_in_window: usize,
        critical: bool,
    },
}

/// Restart-on-crash policy: restart after `delay` on a non-zero exit, flag a crash loop
/// at `critical_at` restarts within `window`, never restart after exit 0 or a stop request.
#[derive(Debug)]
pub struct RestartPolicy {
    pub delay: Duration,
    pub window: Duration,
    pub critical_at: usize,
    restarts: VecDeque<Instant>,
    stopping: bool,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            delay: Duration::from_secs(2),
            window: Duration::from_secs(60),
            critical_at: 5,
            restarts: VecDeque::new(),
            stopping: false,
        }
    }
}

impl RestartPolicy {
    /// SIGTERM/SIGINT arrived: the next exit is final, whatever its status.
    pub fn request_stop(&mut self) {
        self.stopping = true;
    }

    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// The gateway exited with `status` (shell convention: 128+n when killed by signal n).
    pub fn on_exit(&mut self, status: i32, now: Instant) -> Decision {
        if self.stopping || status == 0 {
            return Decision::Exit(status);
        }
        while let Some(&t) = self.restarts.front() {
            if now.saturating_duration_since(t) >= self.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        let n = self.restarts.len();
        Decision::Restart {
            delay: self.delay,
            restarts_in_window: n,
            critical: n >= self.critical_at,
        }
    }
}

/// Exit status in shell convention.
pub fn status_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// The signals the loop waits for: the forwarded ones, SIGCHLD and SIGALRM (restart timer).
fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGALRM);
    set
}

/// Blocks the handled signals. Must run before the first child is spawned so no SIGCHLD
/// is lost; the mask is inherited across fork and exec, so the child clears it
/// (`stepdown::in_child`).
pub fn block_signals() -> nix::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None)
}

/// Reaps every exited child without blocking; returns the status of `watched` if it was
/// among them. Orphans re-parented to PID 1 are reaped here too.
fn reap(watched: Option<Pid>) -> Option<i32> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return found,
            Ok(ws) => {
                if ws.pid().is_some() && ws.pid() == watched {
                    if let Some(code) = status_code(ws) {
                        found = Some(code);
                    }
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return found,
        }
    }
}

/// Next signal; `sigwait` only fails for an invalid set, so that is treated as SIGCHLD
/// (a harmless reap pass) rather than spinning on an error.
fn next_signal(set: &SigSet) -> Signal {
    set.wait().unwrap_or(Signal::SIGCHLD)
}

/// Runs one command to completion as PID 1: forwards signals to it, reaps everything,
/// returns its status.
pub fn run_command(child: Pid, log: &dyn Fn(String)) -> i32 {
    let set = handled_set();
    loop {
        match next_signal(&set) {
            Signal::SIGCHLD => {
                if let Some(code) = reap(Some(child)) {
                    reap(None);
                    return code;
                }
            }
            Signal::SIGALRM => {}
            sig => {
                if let Err(e) = kill(child, sig) {
                    if e != Errno::ESRCH {
                        log(format!("could not forward {sig} to {child}: {e}"));
                    }
                }
            }
        }
    }
}

/// Supervises the gateway. `start` spawns it in its own process group and returns its pid,
/// or the status to treat as its exit when it could not be started.
pub fn run_gateway(start: &mut dyn FnMut() -> Result<Pid, i32>, log: &dyn Fn(String)) -> i32 {
    let set = handled_set();
    let mut policy = RestartPolicy::default();
    let mut last_status = 0;
    let mut child: Option<Pid> = None;
    // Spawn failures are handled like an exit, without waiting for a SIGCHLD.
    let mut pending_exit: Option<i32> = match start() {
        Ok(pid) => {
            child = Some(pid);
            None
        }
        Err(code) => Some(code),
    };
    loop {
        if let Some(code) = pending_exit.take() {
            last_status = code;
            match policy.on_exit(code, Instant::now()) {
                Decision::Exit(c) => return c,
                Decision::Restart {
                    delay,
                    restarts_in_window,
                    critical,
                } => {
                    log(format!(
                        "gateway exited with status {code}; restarting in {}s",
                        delay.as_secs()
                    ));
                    if critical {
                        log(format!(
                            "[CRITICAL] gateway restarted {restarts_in_window} times in the last {}s",
                            policy.window.as_secs()
                        ));
                    }
                    alarm::set(delay.as_secs().clamp(1, u64::from(u32::MAX)) as u32);
                }
            }
        }
        match next_signal(&set) {
            Signal::SIGCHLD => {
                if let Some(code) = reap(child) {
                    child = None;
                    pending_exit = Some(code);
                }
            }
            Signal::SIGALRM => {
                if child.is_none() && !policy.stopping() {
                    match start() {
                        Ok(pid) => child = Some(pid),
                        Err(code) => pending_exit = Some(code),
                    }
                }
            }
            sig => {
                let stop = matches!(sig, Signal::SIGTERM | Signal::SIGINT);
                if stop {
                    policy.request_stop();
                }
                match child {
                    Some(pid) => {
                        if let Err(e) = killpg(pid, sig) {
                            if e != Errno::ESRCH {
                                log(format!("could not forward {sig} to gateway: {e}"));
                            }
                        }
                    }
                    // Stopped while waiting to restart: nothing to forward to.
                    None if stop => {
                        alarm::cancel();
                        return last_status;
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn run_command_returns_the_watched_childs_status_and_reaps_others() {
        // In a forked child: it is single-threaded there, like PID 1, so the blocked
        // SIGCHLD reaches sigwait. The status comes back as the child's error number.
        let r = crate::testutil::in_child(|| {
            block_signals().map_err(std::io::Error::from)?;
            let spawn = |script: &str| {
                std::process::Command::new("/bin/sh")
                    .args(["-c", script])
                    .spawn()
                    .map(|c| Pid::from_raw(c.id() as i32))
            };
            // An unrelated child exits first; only the watched one's status counts.
            spawn("exit 3")?;
            let watched = spawn("sleep 0.2; exit 7")?;
            let code = run_command(watched, &|_| {});
            let leftover = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG));
            if leftover != Err(Errno::ECHILD) {
                return Err(crate::testutil::child_fail(format!(
                    "not reaped: {leftover:?}"
                )));
            }
            Err(std::io::Error::from_raw_os_error(1000 + code))
        });
        let code = r.expect_err("status comes back").raw_os_error();
        assert_eq!(code, Some(1007));
    }

    /// Runs `run_gateway` in a forked child (single-threaded, like PID 1) with a gateway
    /// that exits with `statuses[n]` on its n-th start (0 after the list). `alarm_at_start`
    /// raises SIGALRM right after the first start, `on_restart` raises that signal when a
    /// restart is scheduled (signals stay pending until `sigwait`). Returns
    /// `10 * starts + status` (the child's error number - 1000). A supervisor that never
    /// returns hangs the test (the mutants timeout counts that).
    fn supervise_in_child(
        statuses: &'static [i32],
        alarm_at_start: bool,
        on_restart: Option<Signal>,
    ) -> i32 {
        let raise = |sig| {
            let _ = kill(nix::unistd::getpid(), sig);
        };
        let r = crate::testutil::in_child(move || {
            block_signals().map_err(std::io::Error::from)?;
            let mut starts = 0;
            let mut start = || {
                let code = statuses.get(starts).copied().unwrap_or(0);
                starts += 1;
                let child = std::process::Command::new("/bin/sh")
                    .args(["-c", &format!("exit {code}")])
                    .process_group(0)
                    .spawn()
                    .map(|c| Pid::from_raw(c.id() as i32))
                    .map_err(|_| 127)?;
                if alarm_at_start && starts == 1 {
                    raise(Signal::SIGALRM);
                }
                Ok(child)
            };
            let log = |line: String| {
                if let (Some(sig), true) = (on_restart, line.contains("restarting")) {
                    raise(sig);
                }
            };
            let code = run_gateway(&mut start, &log);
            Err(std::io::Error::from_raw_os_error(
                1000 + 10 * starts as i32 + code,
            ))
        });
        let errno = r.expect_err("status comes back").raw_os_error();
        errno.map_or(-1, |e| e - 1000)
    }

    #[test]
    fn a_crashed_gateway_is_restarted_until_it_exits_cleanly() {
        // Exit 3, restart after the 2 s delay, exit 0: supervision ends with 0 after 2 starts.
        assert_eq!(supervise_in_child(&[3], false, None), 20);
    }

    #[test]
    fn a_timer_while_the_gateway_runs_starts_no_second_one() {
        // SIGALRM is taken before the SIGCHLD (lower number): the gateway is still ours.
        assert_eq!(supervise_in_child(&[0], true, None), 10);
    }

    #[test]
    fn a_forwarded_signal_while_waiting_to_restart_does_not_stop_supervision() {
        assert_eq!(supervise_in_child(&[3], false, Some(Signal::SIGHUP)), 20);
    }

    #[test]
    fn a_stop_while_waiting_to_restart_returns_the_last_status() {
        assert_eq!(supervise_in_child(&[3], false, Some(Signal::SIGTERM)), 13);
    }

    fn restart(d: Decision) -> (usize, bool) {
        match d {
            Decision::Restart {
                delay,
                restarts_in_window,
                critical,
            } => {
                assert_eq!(delay, Duration::from_secs(2));
                (restarts_in_window, critical)
            }
            Decision::Exit(c) => panic!("expected a restart, got exit {c}"),
        }
    }

    #[test]
    fn clean_exit_is_final() {
        let mut p = RestartPolicy::default();
        assert_eq!(p.on_exit(0, Instant::now()), Decision::Exit(0));
    }

    #[test]
    fn crash_restarts_and_counts() {
        let t0 = Instant::now();
        let mut p = RestartPolicy::default();
        for i in 1..=4 {
            let (n, critical) = restart(p.on_exit(1, t0 + Duration::from_secs(i)));
            assert_eq!(n, i as usize);
            assert!(!critical, "restart {i} is not critical yet");
        }
        assert_eq!(
            restart(p.on_exit(137, t0 + Duration::from_secs(5))),
            (5, true)
        );
        assert_eq!(
            restart(p.on_exit(1, t0 + Duration::from_secs(6))),
            (6, true)
        );
        // Still exits on success after a crash loop.
        assert_eq!(p.on_exit(0, t0 + Duration::from_secs(7)), Decision::Exit(0));
    }

    #[test]
    fn window_forgets_old_restarts() {
        let t0 = Instant::now();
        let mut p = RestartPolicy::default();
        // Four restarts 20 s apart: at most 3 of them are ever within one 60 s window.
        for i in 0..10u64 {
            let (n, critical) = restart(p.on_exit(1, t0 + Duration::from_secs(i * 20)));
            assert!(n <= 3, "at {}s: {n}", i * 20);
            assert!(!critical);
        }
        // Five within 60 s after a quiet minute: critical again exactly at the fifth.
        let base = t0 + Duration::from_secs(1000);
        let crit: Vec<bool> = (0..5u64)
            .map(|i| restart(p.on_exit(1, base + Duration::from_secs(i * 14))).1)
            .collect();
        assert_eq!(crit, vec![false, false, false, false, true]);
        // A restart exactly 60 s after the first of those drops it from the window.
        let (n, _) = restart(p.on_exit(1, base + Duration::from_secs(60)));
        assert_eq!(n, 5);
    }

    #[test]
    fn stop_request_prevents_restart() {
        let mut p = RestartPolicy::default();
        assert!(!p.stopping());
        p.request_stop();
        assert!(p.stopping());
        assert_eq!(p.on_exit(143, Instant::now()), Decision::Exit(143));
    }

    #[test]
    fn wait_status_to_code() {
        let pid = Pid::from_raw(42);
        assert_eq!(status_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            status_code(WaitStatus::Signaled(pid, Signal::SIGTERM, false)),
            Some(143)
        );
        assert_eq!(
            status_code(WaitStatus::Signaled(pid, Signal::SIGKILL, true)),
            Some(137)
        );
        assert_eq!(status_code(WaitStatus::StillAlive), None);
    }
}
