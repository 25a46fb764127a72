//! Progress: indicatif bars on a terminal, plain log lines otherwise, nothing with --quiet.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Clone)]
pub struct Progress {
    quiet: bool,
    tty: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
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
