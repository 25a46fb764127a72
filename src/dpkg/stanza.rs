//! Lossless splitting of deb822 files (`status`, `extended_states`) into stanzas, so
//! that a rewrite can drop some stanzas and keep every other byte as it was.

use anyhow::{anyhow, Context, Result};
use deb822_fast::Paragraph;

/// One stanza of a deb822 file with its raw bytes.
#[derive(Debug, Clone)]
pub struct RawStanza {
    /// 1-based line number of the stanza's first line.
    pub line: usize,
    /// Byte range of the stanza including the blank lines that follow it
    /// (up to the next stanza or the end of the file).
    pub start: usize,
    pub end: usize,
    pub fields: Paragraph,
}

/// A deb822 file split into stanzas. `prefix_end` is the end of leading blank lines.
#[derive(Debug, Clone)]
pub struct RawFile {
    pub bytes: Vec<u8>,
    pub prefix_end: usize,
    pub stanzas: Vec<RawStanza>,
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

impl RawFile {
    /// Split `bytes` (the contents of `path`, used in error messages) into stanzas.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<RawFile> {
        // Collect line boundaries.
        let mut lines: Vec<(usize, usize)> = Vec::new(); // (start, end incl. newline)
        let mut pos = 0;
        while pos < bytes.len() {
            let end = match bytes[pos..].iter().position(|&b| b == b'\n') {
                Some(i) => pos + i + 1,
                None => bytes.len(),
            };
            lines.push((pos, end));
            pos = end;
        }
        // Group into stanzas: (first line index, last line index exclusive of blanks).
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut cur: Option<usize> = None;
        for (i, &(s, e)) in lines.iter().enumerate() {
            let blank = is_blank(&bytes[s..e]);
            match (cur, blank) {
                (None, false) => cur = Some(i),
                (Some(first), true) => {
                    groups.push((first, i));
                    cur = None;
                }
                _ => {}
            }
        }
        if let Some(first) = cur {
            groups.push((first, lines.len()));
        }
        let prefix_end = groups
            .first()
            .map(|&(first, _)| lines[first].0)
            .unwrap_or(bytes.len());
        let mut stanzas = Vec::with_capacity(groups.len());
        for (k, &(first, last)) in groups.iter().enumerate() {
            let start = lines[first].0;
            let text_end = lines[last - 1].1;
            let end = groups
                .get(k + 1)
                .map(|&(f, _)| lines[f].0)
                .unwrap_or(bytes.len());
            let text = std::str::from_utf8(&bytes[start..text_end]).with_context(|| {
                format!("{path}: stanza at line {} is not valid UTF-8", first + 1)
            })?;
            if text.starts_with([' ', '\t']) {
                return Err(anyhow!(
                    "{path}: line {}: continuation line outside a field",
                    first + 1
                ));
            }
            let fields: Paragraph = text.parse().map_err(|e| {
                anyhow!("{path}: stanza at line {}: cannot parse: {e:?}", first + 1)
            })?;
            // dpkg refuses a repeated field; other readers take the first or the last
            // value: refuse rather than pick one.
            let mut seen = std::collections::HashSet::new();
            for (name, _) in fields.iter() {
                if !seen.insert(name.to_ascii_lowercase()) {
                    return Err(anyhow!(
                        "{path}: stanza at line {}: duplicate field {name:?}",
                        first + 1
                    ));
                }
            }
            stanzas.push(RawStanza {
                line: first + 1,
                start,
                end,
                fields,
            });
        }
        Ok(RawFile {
            bytes: bytes.to_vec(),
            prefix_end,
            stanzas,
        })
    }

    /// The file with the stanzas for which `drop` returns true removed; all other bytes
    /// are kept as they were.
    pub fn without(&self, drop: impl Fn(usize, &RawStanza) -> bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len());
        out.extend_from_slice(&self.bytes[..self.prefix_end]);
        for (i, s) in self.stanzas.iter().enumerate() {
            if !drop(i, s) {
                out.extend_from_slice(&self.bytes[s.start..s.end]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_rewrite_lossless() {
        let text = "\nPackage: a\nDescription: x\n y\n .\n z\n\nPackage: b\n\n\nPackage: c\nX: 1";
        let f = RawFile::parse("/t", text.as_bytes()).unwrap();
        assert_eq!(f.stanzas.len(), 3);
        assert_eq!(f.stanzas[0].line, 2);
        assert_eq!(f.stanzas[1].line, 8);
        assert_eq!(f.stanzas[2].line, 11);
        assert_eq!(f.stanzas[0].fields.get("Description"), Some("x\ny\n.\nz"));
        assert_eq!(f.without(|_, _| false), text.as_bytes());
        let out = f.without(|i, _| i == 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\nPackage: a\nDescription: x\n y\n .\n z\n\nPackage: c\nX: 1"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = RawFile::parse("/var/lib/dpkg/status", b"Package: a\n\nbroken line\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/var/lib/dpkg/status"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let e = RawFile::parse("/s", b"Package: a\nStatus: x\npackage: b\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/s: stanza at line 1: duplicate field \"package\""),
            "{e}"
        );
    }
}
