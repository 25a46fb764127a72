//! Progress: indicatif bars on a terminal, plain log lines otherwise, nothing with --quiet.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// The warnings of one command, in order: printed as they happen (even with --quiet)
/// and kept for the `--json` summary, so a caller or a test can see them.
#[derive(Clone, Debug, Default)]
pub struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// Prints `warning: MSG` to stderr and keeps MSG.
    pub fn warn(&self, msg: &str) {
        eprintln!("warning: {msg}");
        self.keep(msg);
    }
    /// Keeps MSG without printing it (the caller printed it its own way).
    pub fn keep(&self, msg: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg.to_string());
    }
    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Clone)]
pub struct Progress {
    quiet: bool,
    tty: bool,
    warnings: Warnings,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
            warnings: Warnings::default(),
        }
    }
    /// A warning: printed even with --quiet, and kept for the summary.
    pub fn warn(&self, msg: &str) {
        self.warnings.warn(msg);
    }
    /// Where this command's warnings are kept (shared by its clones).
    pub fn warnings(&self) -> &Warnings {
        &self.warnings
    }
    pub fn log(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
    /// A byte-counting bar for a blob on a terminal; hidden otherwise (a log line is printed instead).
    pub fn bytes(&self, what: &str, total: u64) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        if !self.tty {
            eprintln!("{what}");
            return ProgressBar::hidden();
        }
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "{msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(what.to_string());
        b
    }
    pub fn done(&self, bar: ProgressBar, msg: &str) {
        if bar.is_hidden() {
            if !msg.is_empty() {
                self.log(msg);
            }
        } else {
            bar.finish_and_clear();
            self.log(msg);
        }
    }
}
