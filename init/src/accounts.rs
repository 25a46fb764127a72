//! Reading the image's account files from disk; parsing lives in the shared
//! `nemoclaw-runtime-spec` crate (the builder's `audit` uses the same parser).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

pub use nemoclaw_runtime_spec::accounts::Accounts;

/// Files larger than this are not account databases; refuse rather than read them whole.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// Reads `<root>/etc/passwd` (required) and `<root>/etc/group` (optional).
pub fn load(root: &Path) -> Result<Accounts, String> {
    let passwd_path = root.join("etc/passwd");
    let passwd = read_small(&passwd_path)
        .map_err(|e| format!("cannot read {}: {e}", passwd_path.display()))?;
    let group_path = root.join("etc/group");
    let group = match read_small(&group_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", group_path.display())),
    };
    Ok(Accounts::from_texts(&passwd, group.as_deref()))
}

/// Reads a text file with a size cap; invalid UTF-8 is replaced, not fatal (such a line
/// then simply fails to parse).
fn read_small(path: &Path) -> io::Result<String> {
    read_capped(path, MAX_FILE_BYTES)
}

fn read_capped(path: &Path, max: u64) -> io::Result<String> {
    let mut buf = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::other("file too large"));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_file_optional_but_must_be_readable_and_small() {
        let dir = std::env::temp_dir().join(format!("nemoclaw-init-acc2-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
        std::fs::write(dir.join("etc/passwd"), PASSWD).expect("write");
        let no_group = load(&dir).map(|a| a.groups.len());
        std::fs::create_dir_all(dir.join("etc/group")).expect("mkdir");
        let group_dir = load(&dir).map(|a| a.groups.len());
        std::fs::remove_dir_all(dir.join("etc/group")).expect("rm");
        // Exactly at the cap is read; one byte more is refused.
        let capped = dir.join("capped");
        std::fs::write(&capped, "0123456789").expect("write");
        let at_cap = read_capped(&capped, 10);
        let under_cap = read_capped(&capped, 9).map_err(|e| e.to_string());
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(no_group, Ok(0));
        assert!(
            group_dir.as_ref().is_err_and(|e| e.contains("etc/group")),
            "{group_dir:?}"
        );
        assert_eq!(at_cap.expect("at the cap"), "0123456789");
        assert_eq!(under_cap, Err("file too large".to_string()));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        gateway:x:999:999::/sandbox:/usr/sbin/nologin\n\
        sandbox:x:998:998::/sandbox:/bin/bash\n";
    const GROUP: &str = "root:x:0:\ndaemon:x:1:\ngateway:x:999:\nsandbox:x:998:gateway,root\n";

    #[test]
    fn load_reads_prefixed_root() {
        let dir = std::env::temp_dir().join(format!("nemoclaw-init-acc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
        std::fs::write(dir.join("etc/passwd"), PASSWD).expect("write");
        std::fs::write(dir.join("etc/group"), GROUP).expect("write");
        let a = load(&dir);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let a = a.expect("load");
        assert_eq!(a.users.len(), 4);
        assert_eq!(a.groups.len(), 4);
        assert!(load(Path::new("/nonexistent-nemoclaw-root")).is_err());
    }
}
