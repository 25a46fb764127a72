//! Settings from the environment, read once at startup.
//!
//! Everything is an environment variable because the init is the image's entrypoint:
//! image `ENV` and the orchestrator's env are the only knobs it gets.

use crate::landlock_policy::{self, Mode};
use crate::proxyenv;
use crate::runtime_env;
use std::env;
use std::path::PathBuf;

/// PATH is forced first so no inherited PATH can redirect anything the init or the
/// workload runs by name.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const DEFAULT_GATEWAY_CMD: &str = "openclaw gateway run";

#[derive(Debug, Clone)]
pub struct Config {
    /// Prefix for `etc/passwd` and `etc/group` (`NEMOCLAW_ROOT`, default `/`; for tests).
    pub root: PathBuf,
    pub run_as: String,
    pub gateway_user: String,
    pub gateway_cmd: String,
    pub proxy_host: Option<String>,
    pub proxy_port: Option<String>,
    pub proxy_file: PathBuf,
    pub require_cap_drop: bool,
    pub no_new_privs: bool,
    pub landlock_mode: Mode,
    /// False when `NEMOCLAW_LANDLOCK` had a value that was not understood.
    pub landlock_mode_known: bool,
    pub landlock_policy: PathBuf,
    /// The image's runtime-environment declaration (`NEMOCLAW_INIT_CONFIG`).
    pub init_config: PathBuf,
}

/// A set, non-empty variable.
fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Boolean switches: `1`, `true`, `yes`, `on`.
pub fn flag(v: Option<&str>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("1" | "true" | "yes" | "on")
    )
}

impl Config {
    pub fn from_env() -> Config {
        let (landlock_mode, landlock_mode_known) =
            Mode::from_env(env::var("NEMOCLAW_LANDLOCK").ok().as_deref());
        Config {
            root: var("NEMOCLAW_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from),
            run_as: var("NEMOCLAW_RUN_AS").unwrap_or_else(|| "sandbox".into()),
            gateway_user: var("NEMOCLAW_GATEWAY_USER").unwrap_or_else(|| "gateway".into()),
            gateway_cmd: var("NEMOCLAW_GATEWAY_CMD").unwrap_or_else(|| DEFAULT_GATEWAY_CMD.into()),
            proxy_host: var("NEMOCLAW_PROXY_HOST"),
            proxy_port: var("NEMOCLAW_PROXY_PORT"),
            proxy_file: var("NEMOCLAW_PROXY_ENV_FILE")
                .map_or_else(|| PathBuf::from(proxyenv::DEFAULT_FILE), PathBuf::from),
            require_cap_drop: flag(env::var("NEMOCLAW_REQUIRE_CAP_DROP").ok().as_deref()),
            no_new_privs: flag(env::var("NEMOCLAW_NO_NEW_PRIVS").ok().as_deref()),
            landlock_mode,
            landlock_mode_known,
            landlock_policy: var("NEMOCLAW_LANDLOCK_POLICY").map_or_else(
                || PathBuf::from(landlock_policy::DEFAULT_POLICY),
                PathBuf::from,
            ),
            init_config: var("NEMOCLAW_INIT_CONFIG")
                .map_or_else(|| PathBuf::from(runtime_env::DEFAULT_CONFIG), PathBuf::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_variables_count_as_unset() {
        // Names used by no other test; the environment is process-wide.
        std::env::set_var("NEMOCLAW_TEST_CONFIG_SET", " v ");
        std::env::set_var("NEMOCLAW_TEST_CONFIG_BLANK", "  ");
        assert_eq!(var("NEMOCLAW_TEST_CONFIG_SET"), Some(" v ".to_string()));
        assert_eq!(var("NEMOCLAW_TEST_CONFIG_BLANK"), None);
        assert_eq!(var("NEMOCLAW_TEST_CONFIG_UNSET"), None);
    }

    #[test]
    fn flags() {
        for on in ["1", "true", "YES", " on "] {
            assert!(flag(Some(on)), "{on}");
        }
        for off in ["0", "", "false", "2", "require"] {
            assert!(!flag(Some(off)), "{off}");
        }
        assert!(!flag(None));
    }
}
