//! Image-wide clean-up of privilege the workload never needs: setuid/setgid bits, file
//! capabilities and device nodes. A sandbox steps down with its own init, so `su`,
//! `mount` or `newgrp` staying setuid only gives an attacker a way back up, and device
//! nodes in the image are shadowed by the runtime's /dev anyway (or, worse, are not).
//!
//! Changed base files are copied up into the build's layer; hard links to a changed file
//! are re-emitted with it, otherwise a lower-layer link would keep the old setuid inode.
use crate::recipe::Sanitize;
use crate::rootfs::{normalize, Kind, Rootfs};
use std::collections::BTreeSet;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SanitizeReport {
    pub setid_stripped: Vec<String>,
    pub file_caps_removed: Vec<String>,
    pub devices_removed: Vec<String>,
}

fn allowed(list: &[String], key: &str) -> bool {
    list.iter().any(|a| normalize(a).is_ok_and(|n| n == key))
}

pub fn apply(fs: &mut Rootfs, s: &Sanitize) -> SanitizeReport {
    let mut rep = SanitizeReport::default();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut devices = Vec::new();
    for (path, n) in fs.nodes.iter_mut() {
        if s.remove_devices && matches!(n.kind(), Kind::Char | Kind::Block) {
            devices.push(path.clone());
            continue;
        }
        if !matches!(n.kind(), Kind::File | Kind::Hardlink) {
            continue;
        }
        if s.strip_setid && n.mode & 0o6000 != 0 && !allowed(&s.setid_allow, path) {
            n.mode &= !0o6000;
            n.modified = true;
            rep.setid_stripped.push(format!("/{path}"));
            changed.insert(path.to_string());
        }
        if s.strip_file_caps
            && n.xattrs().contains_key("security.capability")
            && !allowed(&s.file_caps_allow, path)
        {
            n.remove_xattr("security.capability");
            n.modified = true;
            rep.file_caps_removed.push(format!("/{path}"));
            changed.insert(path.to_string());
        }
    }
    // Links sharing an inode with a changed file: same bits, emitted in the same layer.
    if !changed.is_empty() {
        for (path, n) in fs.nodes.iter_mut() {
            let shares_changed = match (n.kind(), n.link()) {
                (Kind::Hardlink, Some(t)) => changed.contains(t),
                _ => continue,
            };
            if shares_changed && !changed.contains(&**path) {
                if s.strip_setid {
                    n.mode &= !0o6000;
                }
                if s.strip_file_caps {
                    n.remove_xattr("security.capability");
                }
                n.modified = true;
            }
        }
    }
    for d in devices {
        fs.remove(&d);
        rep.devices_removed.push(format!("/{d}"));
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{Body, Node};

    fn image() -> Rootfs {
        let mut fs = Rootfs::new();
        let mut su = Node::file(0o4755, 0, 0, b"\x7fELF su".to_vec());
        su.set_layer(Some(0));
        fs.insert("usr/bin/su", su).expect("su");
        fs.insert("usr/bin/newgrp", Node::file(0o2755, 0, 0, b"x".to_vec()))
            .expect("newgrp");
        fs.insert("usr/bin/sudo", Node::file(0o4755, 0, 0, b"x".to_vec()))
            .expect("sudo");
        let mut ping = Node::file(0o755, 0, 0, b"x".to_vec());
        ping.insert_xattr("security.capability", vec![1, 2, 3]);
        ping.insert_xattr("user.keep", vec![9]);
        fs.insert("usr/bin/ping", ping).expect("ping");
        let link = Node::new(Body::hardlink("usr/bin/su"), 0o4755, 0, 0);
        fs.insert("usr/bin/su-link", link).expect("link");
        let null = Node::new(Body::Char((1, 3)), 0o666, 0, 0);
        fs.insert("dev/null", null).expect("null");
        // As if read from a base layer: nothing changed yet.
        for n in fs.nodes.values_mut() {
            n.modified = false;
            n.set_layer(Some(0));
        }
        fs
    }

    #[test]
    fn strips_bits_caps_and_devices_except_allowed() {
        let mut fs = image();
        let rep = apply(
            &mut fs,
            &Sanitize {
                strip_setid: true,
                setid_allow: vec!["/usr/bin/sudo".into()],
                strip_file_caps: true,
                file_caps_allow: vec![],
                remove_devices: true,
            },
        );
        assert_eq!(
            rep.setid_stripped,
            vec!["/usr/bin/newgrp", "/usr/bin/su", "/usr/bin/su-link"]
        );
        assert_eq!(rep.file_caps_removed, vec!["/usr/bin/ping"]);
        assert_eq!(rep.devices_removed, vec!["/dev/null"]);
        let mode = |p: &str| fs.get(p).map(|n| (n.mode, n.modified));
        assert_eq!(mode("usr/bin/su"), Some((0o755, true)));
        assert_eq!(mode("usr/bin/newgrp"), Some((0o755, true)));
        assert_eq!(mode("usr/bin/sudo"), Some((0o4755, false)), "allow-listed");
        assert_eq!(mode("usr/bin/su-link"), Some((0o755, true)));
        let ping = fs.get("usr/bin/ping").expect("ping");
        assert!(!ping.xattrs().contains_key("security.capability"));
        assert!(ping.xattrs().contains_key("user.keep"), "other xattrs kept");
        assert!(fs.get("dev/null").is_none());
        assert!(fs.get("dev").is_some(), "the directory stays");
    }

    #[test]
    fn off_by_default() {
        let mut fs = image();
        let rep = apply(&mut fs, &Sanitize::default());
        assert!(rep.setid_stripped.is_empty() && rep.devices_removed.is_empty());
        assert!(rep.file_caps_removed.is_empty(), "{rep:?}");
        assert_eq!(fs.get("usr/bin/su").map(|n| n.mode), Some(0o4755));
        assert!(fs.get("dev/null").is_some());
        let ping = fs.get("usr/bin/ping").expect("ping");
        assert!(ping.xattrs().contains_key("security.capability"));
        assert!(fs.nodes.values().all(|n| !n.modified), "nothing copied up");
    }

    #[test]
    fn a_link_to_a_changed_file_is_reemitted() {
        // Only caps on the target: the link must still be copied up with it.
        let mut fs = image();
        let mut t = Node::file(0o755, 0, 0, b"x".to_vec());
        t.insert_xattr("security.capability", vec![1]);
        fs.insert("usr/bin/cap", t).expect("cap");
        let l = Node::new(Body::hardlink("usr/bin/cap"), 0o755, 0, 0);
        fs.insert("usr/sbin/cap2", l).expect("link");
        apply(
            &mut fs,
            &Sanitize {
                strip_file_caps: true,
                ..Default::default()
            },
        );
        assert_eq!(fs.get("usr/sbin/cap2").map(|n| n.modified), Some(true));
        // A link to an unchanged file stays in the base layer.
        assert_eq!(fs.get("usr/bin/su-link").map(|n| n.modified), Some(false));
    }

    /// A link allowed by its own name still shares the inode of a stripped target:
    /// it loses the same bits and capability, since one inode cannot keep them for
    /// one name only.
    #[test]
    fn an_allowed_link_to_a_stripped_file_is_stripped_too() {
        let mut fs = image();
        let mut t = Node::file(0o755, 0, 0, b"x".to_vec());
        t.insert_xattr("security.capability", vec![1]);
        fs.insert("usr/bin/cap", t).expect("cap");
        let mut l = Node::new(Body::hardlink("usr/bin/cap"), 0o755, 0, 0);
        l.insert_xattr("security.capability", vec![1]);
        fs.insert("usr/sbin/cap2", l).expect("link");
        let rep = apply(
            &mut fs,
            &Sanitize {
                strip_setid: true,
                setid_allow: vec!["/usr/bin/su-link".into()],
                strip_file_caps: true,
                file_caps_allow: vec!["/usr/sbin/cap2".into()],
                remove_devices: false,
            },
        );
        assert_eq!(
            rep.setid_stripped,
            vec!["/usr/bin/newgrp", "/usr/bin/su", "/usr/bin/sudo"]
        );
        assert_eq!(rep.file_caps_removed, vec!["/usr/bin/cap", "/usr/bin/ping"]);
        let su_link = fs.get("usr/bin/su-link").expect("su-link");
        assert_eq!((su_link.mode, su_link.modified), (0o755, true));
        let cap2 = fs.get("usr/sbin/cap2").expect("cap2");
        assert!(cap2.modified && !cap2.xattrs().contains_key("security.capability"));
    }
}
