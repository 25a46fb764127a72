//! The harness shared by the integration tests: run the binary in a test directory
//! with a private cache and no inherited `SOURCE_DATE_EPOCH`.
#![allow(dead_code)] // each test crate uses a part of it
use std::path::Path;
use std::process::{Command, Output};

/// What one run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON, or a failure naming the command's output.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}{}", self.stdout, self.stderr))
    }
}

/// Runs `nemoclaw-build ARGS` in `dir` (cache under DIR/xdg-cache).
pub fn run(dir: &Path, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_nemoclaw-build"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("xdg-cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run nemoclaw-build");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Writes `text` to DIR/NAME; returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}
