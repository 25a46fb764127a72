//! One reporting channel for everything a command tells its user while it runs:
//! tasks with progress (a layer read, rewritten, compressed, pulled or pushed), info
//! lines, and typed warnings. The library only calls [`Progress`] (a handle on a
//! [`Reporter`]); the binary decides how that looks (bars on a terminal, plain lines,
//! nothing with --quiet) and tests collect the events with [`Collector`].
//!
//! Warnings are also kept by the handle, in order, so a summary (`build --json`)
//! carries them with their stable [`WarningCode`].
use serde::Serialize;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a task counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Bytes,
    Items,
}

/// The kind of a warning: stable names (`--json`, tests), never reworded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningCode {
    /// A registry image (base or builder) was named by a tag, which moves.
    MutableTag,
    /// Credentials go to a registry over plain HTTP (`--insecure-registry`).
    PlainHttpCredentials,
    /// An auth file (`~/.docker/config.json`, ...) that is not JSON was skipped.
    AuthFileIgnored,
    /// The signing key may be read by its group.
    KeyPermissions,
    /// The builder image's platform differs from the build's.
    BuilderPlatform,
    /// An artifact holds native code of another architecture.
    ArtifactArch,
    /// `--cache-from` failed; the build went on without it.
    CacheFrom,
    /// `--cache-to` failed; the image is not affected.
    CacheTo,
    /// The local cache could not be used; the build went on without it.
    LocalCache,
    /// A layer index record was unusable (corrupt, foreign, unreadable) or could not
    /// be stored; the layer is read instead.
    LayerIndex,
}

impl WarningCode {
    pub fn as_str(self) -> &'static str {
        match self {
            WarningCode::MutableTag => "mutable-tag",
            WarningCode::PlainHttpCredentials => "plain-http-credentials",
            WarningCode::AuthFileIgnored => "auth-file-ignored",
            WarningCode::KeyPermissions => "key-permissions",
            WarningCode::BuilderPlatform => "builder-platform",
            WarningCode::ArtifactArch => "artifact-arch",
            WarningCode::CacheFrom => "cache-from",
            WarningCode::CacheTo => "cache-to",
            WarningCode::LocalCache => "local-cache",
            WarningCode::LayerIndex => "layer-index",
        }
    }
}

/// A warning: printed even with --quiet, kept for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: WarningCode,
    pub message: String,
}

impl Warning {
    pub fn new(code: WarningCode, message: impl Into<String>) -> Warning {
        Warning {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a command's events are shown. Implemented by the binary (terminal) and by
/// [`Collector`] (tests, `--json`).
pub trait Reporter: Send + Sync {
    /// A task starts: `label` (e.g. "reading layer 1 (sha256:…)"), `total` when known.
    fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Box<dyn TaskReporter>;
    /// An info line (not shown with --quiet).
    fn info(&self, msg: &str);
    /// A warning (shown even with --quiet).
    fn warn(&self, w: &Warning);
}

/// One running task of a [`Reporter`].
pub trait TaskReporter: Send + Sync {
    fn advance(&self, n: u64);
    /// The total changed (a spilled copy is read instead of the layer blob).
    fn set_total(&self, total: u64);
    /// Back to zero (a transfer is retried).
    fn restart(&self);
    /// The task ended; `summary` (may be empty) says how.
    fn finish(&self, summary: &str);
}

/// Shows nothing.
pub struct Silent;

impl Reporter for Silent {
    fn task(&self, _: &str, _: Option<u64>, _: Unit) -> Box<dyn TaskReporter> {
        Box::new(Silent)
    }
    fn info(&self, _: &str) {}
    fn warn(&self, _: &Warning) {}
}

impl TaskReporter for Silent {
    fn advance(&self, _: u64) {}
    fn set_total(&self, _: u64) {}
    fn restart(&self) {}
    fn finish(&self, _: &str) {}
}

/// The library's handle on the command's reporter (cheap to clone; clones share the
/// warnings kept so far).
#[derive(Clone)]
pub struct Progress {
    rep: Arc<dyn Reporter>,
    warnings: Arc<Mutex<Vec<Warning>>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::silent()
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("warnings", &self.warnings())
            .finish()
    }
}

impl Progress {
    pub fn new(rep: Arc<dyn Reporter>) -> Progress {
        Progress {
            rep,
            warnings: Default::default(),
        }
    }
    /// Reports nothing (warnings are still kept).
    pub fn silent() -> Progress {
        Progress::new(Arc::new(Silent))
    }
    /// A handle whose events a test can read back.
    pub fn collecting() -> (Progress, Arc<Collector>) {
        let c = Arc::new(Collector::default());
        (Progress::new(c.clone()), c)
    }
    /// An info line.
    pub fn log(&self, msg: &str) {
        self.rep.info(msg);
    }
    /// A warning: shown even with --quiet, and kept for the summary.
    pub fn warn(&self, w: Warning) {
        self.rep.warn(&w);
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }
    /// Every warning so far, in order.
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The warnings' messages (the `warnings` field of summaries).
    pub fn warning_messages(&self) -> Vec<String> {
        self.warnings().into_iter().map(|w| w.message).collect()
    }
    pub fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Task {
        Task(Some(Arc::new(TaskInner {
            rep: self.rep.task(label, total, unit),
            finished: AtomicBool::new(false),
        })))
    }
    /// A task counting `total` bytes.
    pub fn bytes(&self, label: &str, total: u64) -> Task {
        self.task(label, Some(total), Unit::Bytes)
    }
    /// Ends `task` with `summary`.
    pub fn done(&self, task: Task, summary: &str) {
        task.finish(summary);
    }
}

/// A running task; clones advance the same task. [`Task::hidden`] reports nothing.
/// A task is finished once: by [`Task::finish`], or with no summary when its last
/// clone goes away (a failed step), so no bar is left on the screen.
#[derive(Clone)]
pub struct Task(Option<Arc<TaskInner>>);

struct TaskInner {
    rep: Box<dyn TaskReporter>,
    finished: AtomicBool,
}

impl TaskInner {
    fn finish(&self, summary: &str) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            self.rep.finish(summary);
        }
    }
}

impl Drop for TaskInner {
    fn drop(&mut self) {
        self.finish("");
    }
}

impl Task {
    pub fn hidden() -> Task {
        Task(None)
    }
    pub fn advance(&self, n: u64) {
        if let Some(t) = &self.0 {
            t.rep.advance(n);
        }
    }
    pub fn set_total(&self, total: u64) {
        if let Some(t) = &self.0 {
            t.rep.set_total(total);
        }
    }
    pub fn restart(&self) {
        if let Some(t) = &self.0 {
            t.rep.restart();
        }
    }
    pub fn finish(&self, summary: &str) {
        if let Some(t) = &self.0 {
            t.finish(summary);
        }
    }
    /// `r`, advancing this task by the bytes read.
    pub fn wrap_read<R: Read>(&self, r: R) -> TaskRead<R> {
        TaskRead {
            inner: r,
            task: self.clone(),
        }
    }
}

/// A reader that advances a [`Task`].
pub struct TaskRead<R> {
    inner: R,
    task: Task,
}

impl<R: Read> Read for TaskRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.advance(n as u64);
        Ok(n)
    }
}

/// One reported event, as [`Collector`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A task that ended: how far it got, and its summary.
    Task {
        label: String,
        total: Option<u64>,
        unit: Unit,
        done: u64,
        summary: String,
    },
    Info {
        message: String,
    },
    Warning(Warning),
}

/// Keeps every event (tasks when they finish), for tests.
#[derive(Default)]
pub struct Collector {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Collector {
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The codes of the warnings, in order.
    pub fn warning_codes(&self) -> Vec<WarningCode> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Warning(w) => Some(w.code),
                _ => None,
            })
            .collect()
    }
    /// The finished tasks: (label, units done, total).
    pub fn tasks(&self) -> Vec<(String, u64, Option<u64>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Task {
                    label, done, total, ..
                } => Some((label, done, total)),
                _ => None,
            })
            .collect()
    }
    fn push(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }
}

impl Reporter for Collector {
    fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Box<dyn TaskReporter> {
        Box::new(CollectedTask {
            events: self.events.clone(),
            state: Mutex::new((label.to_string(), total, 0)),
            unit,
        })
    }
    fn info(&self, msg: &str) {
        self.push(Event::Info {
            message: msg.to_string(),
        });
    }
    fn warn(&self, w: &Warning) {
        self.push(Event::Warning(w.clone()));
    }
}

struct CollectedTask {
    events: Arc<Mutex<Vec<Event>>>,
    /// label, total, done
    state: Mutex<(String, Option<u64>, u64)>,
    unit: Unit,
}

impl CollectedTask {
    fn state(&self) -> std::sync::MutexGuard<'_, (String, Option<u64>, u64)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TaskReporter for CollectedTask {
    fn advance(&self, n: u64) {
        self.state().2 += n;
    }
    fn set_total(&self, total: u64) {
        self.state().1 = Some(total);
    }
    fn restart(&self) {
        self.state().2 = 0;
    }
    fn finish(&self, summary: &str) {
        let s = self.state();
        let e = Event::Task {
            label: s.0.clone(),
            total: s.1,
            unit: self.unit,
            done: s.2,
            summary: summary.to_string(),
        };
        drop(s);
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_keeps_tasks_infos_and_coded_warnings() {
        let (p, c) = Progress::collecting();
        let t = p.bytes("reading layer 1", 10);
        let mut r = t.wrap_read(&b"0123456789"[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        p.done(t, "indexed layer 1");
        p.log("hello");
        p.warn(Warning::new(WarningCode::MutableTag, "tags move"));
        assert_eq!(c.tasks(), vec![("reading layer 1".into(), 10, Some(10))]);
        assert_eq!(c.warning_codes(), vec![WarningCode::MutableTag]);
        assert_eq!(p.warning_messages(), vec!["tags move".to_string()]);
        let v = serde_json::to_value(&p.warnings()[0]).unwrap();
        assert_eq!(v["code"], "mutable-tag");
        assert_eq!(v["message"], "tags move");
        assert!(c.events().contains(&Event::Info {
            message: "hello".into()
        }));
    }
}
