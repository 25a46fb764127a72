//! How the library's events look on stderr: one `MultiProgress` with a bar per running
//! task on a terminal, plain lines otherwise, nothing but warnings with --quiet (or
//! --json, whose summary carries the warnings).
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nemoclaw_build::progress::{Progress, Reporter, TaskReporter, Unit, Warning};
use std::io::IsTerminal;
use std::sync::Arc;

enum Mode {
    Bars(MultiProgress),
    Lines,
    Quiet,
}

/// The terminal reporter of one command.
pub struct Terminal {
    mode: Mode,
}

impl Terminal {
    pub fn new(quiet: bool) -> Terminal {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Mode::Lines
        };
        Terminal { mode }
    }

    fn line(&self, msg: &str) {
        match &self.mode {
            Mode::Bars(m) => {
                let _ = m.println(msg);
            }
            _ => eprintln!("{msg}"),
        }
    }
}

/// The library handle for a command run with `quiet` (or `--json`).
pub fn progress(quiet: bool) -> Progress {
    Progress::new(Arc::new(Terminal::new(quiet)))
}

fn style(unit: Unit, known: bool) -> ProgressStyle {
    let t = match (unit, known) {
        (Unit::Bytes, true) => "{msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        (Unit::Bytes, false) => "{msg:40!} {spinner} {bytes} {bytes_per_sec}",
        (Unit::Items, true) => "{msg:40!} [{bar:30}] {pos}/{len}",
        (Unit::Items, false) => "{msg:40!} {spinner} {pos}",
    };
    ProgressStyle::with_template(t)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Reporter for Terminal {
    fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Box<dyn TaskReporter> {
        match &self.mode {
            Mode::Quiet => Box::new(nemoclaw_build::progress::Silent),
            Mode::Lines => {
                eprintln!("{label}");
                Box::new(LineTask)
            }
            Mode::Bars(m) => {
                let b = m.add(ProgressBar::new(total.unwrap_or(0)));
                b.set_style(style(unit, total.is_some()));
                b.set_message(label.to_string());
                Box::new(BarTask {
                    bar: b,
                    multi: m.clone(),
                })
            }
        }
    }
    fn info(&self, msg: &str) {
        if !matches!(self.mode, Mode::Quiet) {
            self.line(msg);
        }
    }
    fn warn(&self, w: &Warning) {
        self.line(&format!("warning: {}", w.message));
    }
}

/// Plain lines: the label when the task starts, its summary when it ends.
struct LineTask;

impl TaskReporter for LineTask {
    fn advance(&self, _: u64) {}
    fn set_total(&self, _: u64) {}
    fn restart(&self) {}
    fn finish(&self, summary: &str) {
        if !summary.is_empty() {
            eprintln!("{summary}");
        }
    }
}

/// A bar of the command's `MultiProgress`; cleared when it ends, its summary printed
/// above the bars.
struct BarTask {
    bar: ProgressBar,
    multi: MultiProgress,
}

impl TaskReporter for BarTask {
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }
    fn restart(&self) {
        self.bar.set_position(0);
    }
    fn finish(&self, summary: &str) {
        self.bar.finish_and_clear();
        self.multi.remove(&self.bar);
        if !summary.is_empty() {
            let _ = self.multi.println(summary);
        }
    }
}
