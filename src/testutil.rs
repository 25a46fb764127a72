//! Small fixture builders shared by unit tests: tar layers made in memory.
use std::io::Write;

pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.b
            .append_data(&mut h, format!("{path}/"), &[][..])
            .expect("dir");
        self
    }
    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, path, data).expect("file");
        self
    }
    pub fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_data(&mut h, path, data).expect("file");
        self
    }
    /// Writes the name bytes verbatim (no validation), for hostile-input tests.
    pub fn raw_file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        self.b.get_mut().write_all(h.as_bytes()).expect("hdr");
        self.b.get_mut().write_all(data).expect("data");
        let pad = (512 - data.len() % 512) % 512;
        self.b.get_mut().write_all(&vec![0u8; pad]).expect("pad");
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).expect("symlink");
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, path, target).expect("hardlink");
        self
    }
    /// Appends a hand-made header (checksum filled in) and its data, padded.
    pub fn raw(mut self, h: Raw, data: &[u8]) -> Self {
        let w = self.b.get_mut();
        w.write_all(&h.finish()).expect("hdr");
        w.write_all(data).expect("data");
        w.write_all(&vec![0u8; (512 - data.len() % 512) % 512])
            .expect("pad");
        self
    }
    /// A PAX extended header ('x', ustar magic) with well-formed records.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let data = pax_records(records);
        self.raw(
            Raw::new(b'x', b"PaxHeader", data.len() as u64).ustar(),
            &data,
        )
    }
    /// A PAX header of type `t` ('x' or 'g') whose data is given verbatim.
    pub fn pax_data(self, t: u8, data: &[u8]) -> Self {
        self.raw(Raw::new(t, b"PaxHeader", data.len() as u64).ustar(), data)
    }
    /// A GNU long name ('L') or long link ('K') header; `data` verbatim.
    pub fn gnu_long(self, t: u8, data: &[u8]) -> Self {
        self.raw(Raw::new(t, b"././@LongLink", data.len() as u64), data)
    }
    pub fn build(self) -> Vec<u8> {
        self.b.into_inner().expect("tar")
    }
}

/// PAX records `LEN key=value\n` with the right lengths.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// A 512-byte tar header with every field settable (GNU magic unless `ustar()`).
pub struct Raw {
    h: [u8; 512],
}

impl Raw {
    pub fn new(typeflag: u8, name: &[u8], size: u64) -> Raw {
        let mut r = Raw { h: [0u8; 512] };
        r.h[..name.len()].copy_from_slice(name);
        r = r
            .field(100, b"0000644\0")
            .field(108, b"0000000\0")
            .field(116, b"0000000\0")
            .field(124, format!("{size:011o}\0").as_bytes())
            .field(136, b"14524716200\0")
            .field(257, b"ustar  \0");
        r.h[156] = typeflag;
        r
    }
    /// POSIX ustar magic and version.
    pub fn ustar(self) -> Raw {
        self.field(257, b"ustar\x0000")
    }
    /// Overwrites bytes at `offset`.
    pub fn field(mut self, offset: usize, bytes: &[u8]) -> Raw {
        self.h[offset..offset + bytes.len()].copy_from_slice(bytes);
        self
    }
    pub fn link(self, target: &[u8]) -> Raw {
        self.field(157, target)
    }
    fn finish(mut self) -> [u8; 512] {
        self.h[148..156].copy_from_slice(b"        ");
        let sum: u32 = self.h.iter().map(|b| *b as u32).sum();
        self.h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.h
    }
}
