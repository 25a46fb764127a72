//! `--check`: what the init would do here and what the kernel allows, changing nothing.
//!
//! Useful on a new host (does it grant CAP_SETPCAP? Landlock?) and in image tests
//! (are the users resolvable from the image's own files?).

use crate::accounts::Accounts;
use crate::caps;
use crate::config::Config;
use crate::landlock_policy::{self, Mode};
use crate::proxyenv::{self, Proxy};
use crate::rlimits;
use crate::runtime_env;
use crate::stepdown::Target;
use nix::sys::resource::getrlimit;
use serde_json::{json, Value};

fn user_json(accounts: &Result<Accounts, String>, name: &str) -> Value {
    let a = match accounts {
        Ok(a) => a,
        Err(e) => return json!({ "name": name, "error": e }),
    };
    let Some(u) = a.user(name) else {
        return json!({ "name": name, "error": "not found in passwd" });
    };
    let mut v = json!({
        "name": name, "uid": u.uid, "gid": u.gid, "groups": a.init_groups(u),
        "home": u.home, "shell": u.shell,
    });
    if let Err(e) = Target::resolve(a, name) {
        v["error"] = json!(e);
    }
    v
}

/// Builds the report.
pub fn report(cfg: &Config) -> Value {
    let euid = nix::unistd::geteuid().as_raw();
    let root = euid == 0;

    let limits: Vec<Value> = rlimits::LIMITS
        .iter()
        .map(|l| {
            let env = std::env::var(l.env).ok();
            let (target, warn) = rlimits::target(env.as_deref(), l.default);
            match getrlimit(l.resource) {
                Ok((s, h)) => {
                    let p = rlimits::plan(target, h);
                    json!({
                        "name": l.name, "target": target, "warning": warn,
                        "current_soft": rlimits::show(s), "current_hard": rlimits::show(h),
                        "would_set_soft": p.soft, "would_set_hard": p.hard,
                    })
                }
                Err(e) => json!({ "name": l.name, "target": target, "error": e.to_string() }),
            }
        })
        .collect();

    let capbnd = caps::current_capbnd();
    let caps_json = match &capbnd {
        Ok(mask) => json!({
            "capbnd": format!("{mask:016x}"),
            "bounding_set": caps::decode(*mask),
            "can_drop_bounding": caps::can_drop_bounding(),
            "would_drop_at_start": caps::DROP_AT_START,
            "present_of_start_drop": caps::still_present(*mask, &caps::DROP_AT_START),
            "would_drop_at_stepdown": caps::DROP_AT_STEPDOWN,
        }),
        Err(e) => json!({ "error": e }),
    };

    let policy = match cfg.landlock_mode {
        Mode::Off => Value::Null,
        _ => match landlock_policy::load(&cfg.landlock_policy) {
            Ok(p) => json!({
                "read_only": p.read_only, "read_write": p.read_write,
                "compatibility": format!("{:?}", p.compatibility),
            }),
            Err(e) => json!({ "error": e }),
        },
    };

    let spec = runtime_env::load(&cfg.init_config);
    let declared: Vec<(String, String)> = match &spec {
        Ok(s) => s
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let proxy = match Proxy::from_values(cfg.proxy_host.as_deref(), cfg.proxy_port.as_deref()) {
        Ok(p) => json!({
            "url": p.url(), "file": cfg.proxy_file.display().to_string(),
            "would_write": true,
            "owner": if root { "root:root" } else { "this user" },
            "variables": proxyenv::variables(&p, &declared)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect::<serde_json::Map<_, _>>(),
        }),
        Err(e) => json!({ "error": e }),
    };
    let runtime = match &spec {
        Ok(s) => json!({
            "config": cfg.init_config.display().to_string(),
            "directories": s.env.iter().filter_map(|e| e.mkdir.map(|m| json!({
                "path": e.value, "mode": format!("{m:04o}"),
            }))).collect::<Vec<_>>(),
            "passthrough": s.passthrough,
        }),
        Err(e) => json!({ "config": cfg.init_config.display().to_string(), "error": e }),
    };

    let accounts = crate::accounts::load(&cfg.root);
    let notes = match &accounts {
        Ok(a) => a.notes.clone(),
        Err(_) => Vec::new(),
    };

    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uid": nix::unistd::getuid().as_raw(),
        "euid": euid,
        "root": root,
        "privileged_steps": if root { "would run" } else { "would be skipped (not root)" },
        "path": crate::config::SAFE_PATH,
        "rlimits": limits,
        "capabilities": caps_json,
        "all_capability_sets_empty": caps::all_sets_empty().ok(),
        "can_switch_user": root && caps::can_switch_user(),
        "landlock": {
            "kernel": landlock_policy::describe_abi(),
            "abi": landlock_policy::kernel_abi(),
            "available": landlock_policy::kernel_abi().is_some(),
            "mode": format!("{:?}", cfg.landlock_mode),
            "policy_path": cfg.landlock_policy.display().to_string(),
            "policy": policy,
        },
        "no_new_privs": cfg.no_new_privs,
        "require_cap_drop": cfg.require_cap_drop,
        "proxy": proxy,
        "runtime_env": runtime,
        "rc_files": crate::files::RC_FILES.iter().map(|p| json!({
            "path": p, "exists": std::path::Path::new(p).exists(),
        })).collect::<Vec<_>>(),
        "accounts": {
            "root_dir": cfg.root.display().to_string(),
            "notes": notes,
            "run_as": user_json(&accounts, &cfg.run_as),
            "gateway": user_json(&accounts, &cfg.gateway_user),
        },
        "gateway_command": cfg.gateway_cmd,
    })
}

/// Prints the report as indented `key: value` text.
pub fn print_text(v: &Value) {
    print!("{}", text(v));
}

/// The report as indented `key: value` text.
fn text(v: &Value) -> String {
    fn walk(v: &Value, indent: usize, out: &mut String) {
        let pad = "  ".repeat(indent);
        match v {
            Value::Object(map) => {
                for (k, val) in map {
                    match val {
                        Value::Object(_) => {
                            out.push_str(&format!("{pad}{k}:\n"));
                            walk(val, indent + 1, out);
                        }
                        Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                            out.push_str(&format!("{pad}{k}:\n"));
                            for i in items {
                                out.push_str(&format!("{pad}  -\n"));
                                walk(i, indent + 2, out);
                            }
                        }
                        _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(val))),
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", scalar(other))),
        }
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(" "),
            other => other.to_string(),
        }
    }
    let mut out = String::new();
    walk(v, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::config_in;

    #[test]
    fn text_form_indents_objects_and_lists() {
        let v = json!({
            "b": {"x": 1, "y": null},
            "a": "plain",
            "list": [{"k": "v"}, {"k": true}],
            "words": ["p", "q"],
        });
        assert_eq!(
            text(&v),
            "a: plain\nb:\n  x: 1\n  y: -\nlist:\n  -\n    k: v\n  -\n    k: true\nwords: p q\n"
        );
        assert_eq!(text(&json!("top")), "top\n");
    }

    #[test]
    fn report_reads_the_images_files() {
        let d = std::env::temp_dir().join(format!("nemoclaw-init-check-{}", std::process::id()));
        std::fs::create_dir_all(d.join("etc")).expect("mkdir");
        std::fs::write(
            d.join("etc/passwd"),
            "gateway:x:999:0::/sandbox:/usr/sbin/nologin\nsandbox:x:998:998::/sandbox:/bin/bash\n",
        )
        .expect("passwd");
        std::fs::write(d.join("landlock.json"), r#"{"read_only":["/usr"]}"#).expect("policy");
        let mut cfg = config_in(&d);
        let off = report(&cfg);
        cfg.landlock_mode = Mode::BestEffort;
        let on = report(&cfg);
        cfg.root = d.join("missing");
        let no_accounts = report(&cfg);
        std::fs::remove_dir_all(&d).expect("cleanup");

        let euid = nix::unistd::geteuid().as_raw();
        assert_eq!(off["root"], json!(euid == 0));
        assert_eq!(off["euid"], json!(euid));
        assert_eq!(off["landlock"]["policy"], Value::Null);
        assert_eq!(off["landlock"]["mode"], json!("Off"));
        assert_eq!(on["landlock"]["policy"]["read_only"], json!(["/usr"]));
        let sandbox = &off["accounts"]["run_as"];
        assert_eq!(sandbox["uid"], json!(998));
        assert_eq!(sandbox["groups"], json!([998]));
        assert_eq!(sandbox["shell"], json!("/bin/bash"));
        assert!(sandbox.get("error").is_none());
        // gid 0: resolvable, but refused as a step-down target.
        let gateway = &off["accounts"]["gateway"];
        assert_eq!(gateway["uid"], json!(999));
        assert!(gateway["error"]
            .as_str()
            .is_some_and(|e| e.contains("refusing to run as root")));
        let missing = &no_accounts["accounts"]["run_as"];
        assert_eq!(missing["name"], json!("sandbox"));
        assert!(missing["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("cannot read")));
    }

    #[test]
    fn users_missing_from_passwd_are_named() {
        let a = Ok(Accounts::from_texts(
            "sandbox:x:998:998::/sandbox:/bin/bash\n",
            None,
        ));
        assert_eq!(
            user_json(&a, "nobody"),
            json!({"name": "nobody", "error": "not found in passwd"})
        );
        assert_eq!(user_json(&a, "sandbox")["home"], json!("/sandbox"));
    }
}
