//! A private spill file for bytes copied once from untrusted host input (builder
//! artifacts: files of a directory tree, entries of a tarball).
//!
//! Why: artifacts used to be hashed on one pass and re-opened by path when the
//! layer was written, so a file swapped for a symlink in between shipped the link
//! target; a tarball was held in memory whole. Copying every byte once, while it is
//! hashed, into an unnamed temp file (no path anyone else can open or swap) makes
//! what is hashed exactly what is written, with one fd for the whole tree and memory
//! that grows with the number of entries, not their size. The file lives next to
//! the build's staging directory (not a RAM-backed /tmp) and vanishes with the
//! last reference, even on a crash.
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Bytes of one artifact inside a spill file.
#[derive(Clone)]
pub struct Spilled {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl std::fmt::Debug for Spilled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spilled({}+{})", self.offset, self.len)
    }
}

impl Spilled {
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A reader over exactly these bytes (positional reads: readers don't share a cursor).
    pub fn reader(&self) -> SpilledReader {
        SpilledReader {
            file: self.file.clone(),
            pos: self.offset,
            end: self.offset + self.len,
        }
    }
    pub fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.len.min(64 << 20) as usize);
        self.reader().read_to_end(&mut v)?;
        Ok(v)
    }
}

pub struct SpilledReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for SpilledReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "spill file shorter than recorded",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// What one `append` stored: where, the SHA-256 (hex) and whether it starts like an ELF.
#[derive(Debug)]
pub struct Stored {
    pub bytes: Spilled,
    pub sha256: String,
    pub elf: bool,
    /// ELF `e_machine` (0: not ELF).
    pub machine: u16,
}

/// An append-only spill file with a byte budget (the bound on what untrusted input
/// may make us write).
pub struct Spill {
    file: Arc<File>,
    end: u64,
    budget: u64,
}

impl Spill {
    /// An unnamed temp file in `dir` that accepts at most `budget` bytes in total.
    pub fn new_in(dir: &Path, budget: u64) -> Result<Spill> {
        let file = tempfile::tempfile_in(dir)
            .with_context(|| format!("cannot create a spill file in {}", dir.display()))?;
        Ok(Spill {
            file: Arc::new(file),
            end: 0,
            budget,
        })
    }

    /// Copies `r` to the end of the spill, hashing as it goes. `what` names the
    /// input in the error when the budget would be exceeded.
    pub fn append(&mut self, r: &mut dyn Read, what: &str) -> Result<Stored> {
        let start = self.end;
        let mut h = Sha256::new();
        let mut head = [0u8; crate::elf::HEAD_LEN];
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {what}")),
            };
            let written = self.end - start;
            if written < head.len() as u64 {
                let k = (head.len() - written as usize).min(n);
                head[written as usize..written as usize + k].copy_from_slice(&buf[..k]);
            }
            if self.end + n as u64 > self.budget {
                bail!(
                    "{what}: the artifacts exceed the limit of {} bytes (uncompressed)",
                    self.budget
                );
            }
            h.update(&buf[..n]);
            self.file
                .write_all_at(&buf[..n], self.end)
                .context("cannot write the artifacts spill file")?;
            self.end += n as u64;
        }
        Ok(Stored {
            bytes: Spilled {
                file: self.file.clone(),
                offset: start,
                len: self.end - start,
            },
            sha256: hex::encode(h.finalize()),
            elf: self.end - start >= 4 && head.starts_with(b"\x7fELF"),
            machine: crate::elf::machine(
                &head[..(self.end - start).min(head.len() as u64) as usize],
            )
            .unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_budget() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spill::new_in(d.path(), 10).unwrap();
        let a = s.append(&mut &b"\x7fELFab"[..], "a").unwrap();
        let b = s.append(&mut &b"xyz"[..], "b").unwrap();
        assert!(a.elf && !b.elf);
        assert_eq!(a.bytes.read_all().unwrap(), b"\x7fELFab");
        assert_eq!(b.bytes.read_all().unwrap(), b"xyz");
        assert_eq!(a.sha256, hex::encode(Sha256::digest(b"\x7fELFab")));
        let err = s.append(&mut &b"12"[..], "c.bin").unwrap_err();
        assert!(
            format!("{err:#}").contains("c.bin: the artifacts exceed the limit of 10 bytes"),
            "{err:#}"
        );
        // Nothing of the spill is reachable by name.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
