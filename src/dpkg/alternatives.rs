//! update-alternatives administrative files (`/var/lib/dpkg/alternatives/NAME`).
//!
//! Format (as written by dpkg's `alternative_save`): status line (`auto`/`manual`), master
//! link, then `slave name` / `slave link` line pairs, an empty line, then per choice:
//! the choice path, its priority and one line per slave (the slave file, or empty),
//! and a final empty line. dpkg sorts slaves by name and choices by path when saving.

use anyhow::{bail, Context, Result};

use super::paths;

/// Whether `name` can name a link in `/etc/alternatives/`: one path component.
fn is_component(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']))
}

/// A link or file path of the admin file: absolute, without `..` (see
/// [`paths::normalize`]). Kept as written, so that a rewrite is byte-identical.
fn check_path(path: &str, line: usize, what: &str, p: &str) -> Result<()> {
    paths::normalize(p).with_context(|| format!("{path}: line {line}: {what}"))?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slave {
    pub name: String,
    pub link: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub path: String,
    pub priority: i64,
    /// One entry per slave of the alternative (same order); empty string = none.
    pub slave_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub name: String,
    pub manual: bool,
    pub link: String,
    pub slaves: Vec<Slave>,
    pub choices: Vec<Choice>,
}

impl Alternative {
    /// Parse the admin file of alternative `name`; `path` is used in error messages.
    pub fn parse(name: &str, path: &str, bytes: &[u8]) -> Result<Alternative> {
        if !is_component(name) {
            bail!("{path}: invalid alternative name {name:?}");
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => bail!("{path}: not valid UTF-8: {e}"),
        };
        if !text.ends_with('\n') {
            bail!("{path}: last line not terminated");
        }
        let mut lines = Lines {
            path,
            lines: text[..text.len() - 1].split('\n').collect(),
            read: 0,
        };
        let (ln, status) = lines.next("status")?;
        let manual = match status {
            "auto" => false,
            "manual" => true,
            _ => bail!("{path}: line {ln}: invalid status {status:?}"),
        };
        let (ln, link) = lines.next("master link")?;
        check_path(path, ln, "master link", link)?;
        let slaves = read_slaves(&mut lines)?;
        let choices = read_choices(&mut lines, slaves.len())?;
        Ok(Alternative {
            name: name.to_string(),
            manual,
            link: link.to_string(),
            slaves,
            choices,
        })
    }

    /// Serialize like dpkg's `alternative_save`: drop slaves no choice uses, sort slaves
    /// by name and choices by path.
    pub fn to_bytes(&self) -> Vec<u8> {
        let used: Vec<usize> = (0..self.slaves.len())
            .filter(|&k| {
                self.choices
                    .iter()
                    .any(|c| c.slave_files.get(k).is_some_and(|f| !f.is_empty()))
            })
            .collect();
        let mut slave_order = used.clone();
        slave_order.sort_by(|&a, &b| self.slaves[a].name.cmp(&self.slaves[b].name));
        let mut choices: Vec<&Choice> = self.choices.iter().collect();
        choices.sort_by(|a, b| a.path.cmp(&b.path));
        let mut out = String::new();
        out.push_str(if self.manual { "manual\n" } else { "auto\n" });
        out.push_str(&self.link);
        out.push('\n');
        for &k in &slave_order {
            out.push_str(&self.slaves[k].name);
            out.push('\n');
            out.push_str(&self.slaves[k].link);
            out.push('\n');
        }
        out.push('\n');
        for c in choices {
            out.push_str(&c.path);
            out.push('\n');
            out.push_str(&c.priority.to_string());
            out.push('\n');
            for &k in &slave_order {
                out.push_str(c.slave_files.get(k).map(String::as_str).unwrap_or(""));
                out.push('\n');
            }
        }
        out.push('\n');
        out.into_bytes()
    }

    /// dpkg's `alternative_get_best`: start from the current choice if it is still
    /// registered (else the first choice) and take any choice with a strictly higher
    /// priority, in file order.
    pub fn best(&self, current: Option<&str>) -> Option<&Choice> {
        let mut best = current
            .and_then(|c| self.choices.iter().find(|ch| ch.path == c))
            .or_else(|| self.choices.first())?;
        for c in &self.choices {
            if c.priority > best.priority {
                best = c;
            }
        }
        Some(best)
    }
}

/// The admin file's lines, read in order: running out names what was expected.
struct Lines<'a> {
    path: &'a str,
    lines: Vec<&'a str>,
    read: usize,
}

impl<'a> Lines<'a> {
    /// The next line and its 1-based number.
    fn next(&mut self, what: &str) -> Result<(usize, &'a str)> {
        match self.lines.get(self.read) {
            Some(l) => {
                self.read += 1;
                Ok((self.read, *l))
            }
            None => bail!("{}: unexpected end of file while reading {what}", self.path),
        }
    }
}

/// Slave name and link pairs, up to an empty line.
fn read_slaves(lines: &mut Lines) -> Result<Vec<Slave>> {
    let path = lines.path;
    let mut slaves = Vec::new();
    loop {
        let (ln, sname) = lines.next("slave name")?;
        if sname.is_empty() {
            return Ok(slaves);
        }
        if !is_component(sname) {
            bail!("{path}: line {ln}: invalid slave name {sname:?} (must be one path component)");
        }
        let (ln, slink) = lines.next("slave link")?;
        check_path(path, ln, "slave link", slink)?;
        slaves.push(Slave {
            name: sname.to_string(),
            link: slink.to_string(),
        });
    }
}

/// Choices (master file, priority, one file per slave, empty when it has none),
/// up to an empty line.
fn read_choices(lines: &mut Lines, slaves: usize) -> Result<Vec<Choice>> {
    let path = lines.path;
    let mut choices = Vec::new();
    loop {
        let (ln, cpath) = lines.next("master file")?;
        if cpath.is_empty() {
            return Ok(choices);
        }
        check_path(path, ln, "master file", cpath)?;
        let (ln, prio) = lines.next("priority")?;
        let Ok(priority) = prio.trim().parse::<i64>() else {
            bail!("{path}: line {ln}: invalid priority {prio:?} of {cpath}");
        };
        let mut slave_files = Vec::with_capacity(slaves);
        for _ in 0..slaves {
            let (ln, f) = lines.next("slave file")?;
            if !f.is_empty() {
                check_path(path, ln, "slave file", f)?;
            }
            slave_files.push(f.to_string());
        }
        choices.push(Choice {
            path: cpath.to_string(),
            priority,
            slave_files,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NC: &str = "auto\n/bin/nc\nnc.1.gz\n/usr/share/man/man1/nc.1.gz\nnetcat\n/bin/netcat\n\n/bin/nc.openbsd\n50\n/usr/share/man/man1/nc_openbsd.1.gz\n/bin/nc.openbsd\n\n";

    #[test]
    fn roundtrip_dpkg_format() {
        let a = Alternative::parse("nc", "/var/lib/dpkg/alternatives/nc", NC.as_bytes()).unwrap();
        assert!(!a.manual);
        assert_eq!(a.link, "/bin/nc");
        assert_eq!(a.slaves.len(), 2);
        assert_eq!(a.choices.len(), 1);
        assert_eq!(a.choices[0].priority, 50);
        assert_eq!(a.to_bytes(), NC.as_bytes());
        let cc = "auto\n/usr/bin/cc\n\n/usr/bin/gcc\n20\n\n";
        let a = Alternative::parse("cc", "cc", cc.as_bytes()).unwrap();
        assert!(a.slaves.is_empty());
        assert_eq!(a.to_bytes(), cc.as_bytes());
    }

    #[test]
    fn parse_errors() {
        assert!(Alternative::parse("x", "x", b"bogus\n/a\n\n\n").is_err());
        assert!(Alternative::parse("x", "x", b"auto\n/a\n\n/b\nten\n\n").is_err());
        let e = Alternative::parse("x", "/var/lib/dpkg/alternatives/x", b"auto\n/a\n\n/b\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/var/lib/dpkg/alternatives/x"), "{e}");
        // Paths and names from a hostile image.
        for (text, want) in [
            ("auto\n/a/../b\n\n/b\n1\n\n", "line 2: master link"),
            ("auto\nrel\n\n/b\n1\n\n", "line 2: master link"),
            (
                "auto\n/a\n../x\n/s\n\n/b\n1\n/f\n\n",
                "line 3: invalid slave name",
            ),
            (
                "auto\n/a\ns\n/s/../..\n\n/b\n1\n/f\n\n",
                "line 4: slave link",
            ),
            ("auto\n/a\n\n/b/../c\n1\n\n", "line 4: master file"),
            ("auto\n/a\ns\n/s\n\n/b\n1\n/f/..\n\n", "line 8: slave file"),
        ] {
            let e = format!(
                "{:#}",
                Alternative::parse("x", "/alt/x", text.as_bytes()).unwrap_err()
            );
            assert!(e.contains(&format!("/alt/x: {want}")), "{text:?}: {e}");
        }
        // dpkg needs the empty line that ends the choices.
        let e = Alternative::parse("x", "/alt/x", b"auto\n/a\n\n/b\n1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected end of file"), "{e}");
        for bad in [".", "a/b", "a\0b"] {
            let e = Alternative::parse(bad, "/alt/x", b"auto\n/a\n\n\n")
                .unwrap_err()
                .to_string();
            assert!(e.contains("invalid alternative name"), "{bad:?}: {e}");
            let text = format!("auto\n/a\n{bad}\n/s\n\n/b\n1\n/f\n\n");
            let e = Alternative::parse("x", "/alt/x", text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains("invalid slave name"), "{bad:?}: {e}");
        }
        let e = Alternative::parse("..", "/alt/..", b"auto\n/a\n\n\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid alternative name"), "{e}");
    }

    #[test]
    fn best_prefers_current_on_ties() {
        let t = "auto\n/usr/bin/x\n\n/a\n10\n/b\n20\n/c\n20\n\n";
        let a = Alternative::parse("x", "x", t.as_bytes()).unwrap();
        assert_eq!(a.best(None).unwrap().path, "/b");
        assert_eq!(a.best(Some("/c")).unwrap().path, "/c");
        assert_eq!(a.best(Some("/gone")).unwrap().path, "/b");
    }
}
