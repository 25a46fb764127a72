//! The strict layer reader: walks a layer's tar stream the way GNU tar, Python's
//! `tarfile` and Go's `archive/tar` (containerd, umoci, buildah) do, and refuses
//! every entry on which they could disagree. Everything that reads base layers
//! (index, rewrite, materialize, diff) goes through [`TarReader::next_entry`], so
//! they all see, and refuse, the same things.
//!
//! Why not `tar::Archive`: its PAX parser splits records on newlines (a value with a
//! newline hides or forges the next record), takes the first of duplicate keys where
//! the others take the last, silently ignores size/uid/gid values that Python reads
//! as numbers, skips "data" of directories and links that other readers parse as
//! headers, and hands over unknown types and sparse renames unchanged. The header
//! format is small and fixed; parsing it here keeps every rule in one place.
use crate::fspath::{normalize, Kind};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

const BLOCK: usize = 512;
/// PAX and GNU long-name data above this is refused (Go's archive/tar has the same cap).
const MAX_META: u64 = 1 << 20;

/// Default for `--max-entries`: twice the largest real base images (CUDA/PyTorch
/// images hold up to ~1 million entries; a Debian base ~15-60 thousand). The model
/// costs ~200 bytes per entry (measured: `audit` of 1 million empty files, 200 MiB
/// RSS; ~260 bytes when contents are hashed, as for `diff`), so a hostile layer of
/// empty files stays under ~450 MiB.
pub const DEFAULT_MAX_ENTRIES: u64 = 2_000_000;

static MAX_ENTRIES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_ENTRIES);

/// Sets the process-wide entry limit (`--max-entries`) used by default index options.
pub fn set_max_entries(n: u64) {
    MAX_ENTRIES.store(n.max(1), Ordering::Relaxed);
}

/// The process-wide entry limit.
pub fn max_entries() -> u64 {
    MAX_ENTRIES.load(Ordering::Relaxed)
}

/// One member of a layer, as every reader agrees it is.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// Normalized model key (`usr/bin/gcc`; `""` is the root directory).
    pub path: String,
    /// The name as stored, for messages.
    pub name: String,
    pub kind: Kind,
    /// Permission bits (mask 0o7777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Bytes of data (regular files only; refused non-zero for everything else).
    pub size: u64,
    /// Symlink target as stored, or hardlink target as a model key.
    pub link: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub dev: (u32, u32),
}

/// PAX records in order, or why they are malformed.
type PaxRecords = std::result::Result<Vec<(String, Vec<u8>)>, String>;

/// Extension records that apply to the next entry.
#[derive(Default)]
struct Pending {
    pax: Option<PaxRecords>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }
}

/// Streams entries of one layer; [`Read`] yields the current entry's data.
pub struct TarReader<R> {
    inner: R,
    label: String,
    /// Receives every byte up to the end-of-archive marker (an uncompressed copy
    /// of the layer for a later pass); never the trailer, so its size is bounded by
    /// the headers and the sizes they declare.
    spill: Option<BufWriter<File>>,
    pos: u64,
    /// Unread data of the current entry, then its padding.
    remaining: u64,
    padding: u64,
    ended: bool,
    entries: u64,
    max_entries: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, label: &str) -> TarReader<R> {
        TarReader {
            inner,
            label: label.to_string(),
            spill: None,
            pos: 0,
            remaining: 0,
            padding: 0,
            ended: false,
            entries: 0,
            max_entries: max_entries(),
        }
    }

    /// Also copies the archive (up to its end marker) into `f`.
    pub fn spill_to(mut self, f: File) -> TarReader<R> {
        self.spill = Some(BufWriter::with_capacity(1 << 20, f));
        self
    }

    /// Refuses layers with more than `n` entries.
    pub fn max_entries(mut self, n: u64) -> TarReader<R> {
        self.max_entries = n;
        self
    }

    fn raw_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(s) = self.spill.as_mut() {
            s.write_all(&buf[..n])?;
        }
        self.pos += n as u64;
        Ok(n)
    }

    /// Fills `buf`; false on a clean end of stream before its first byte.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            let n = self
                .raw_read(&mut buf[got..])
                .with_context(|| format!("{}: read error at byte {}", self.label, self.pos))?;
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                bail!(
                    "{}: truncated tar stream (ends inside a block at byte {})",
                    self.label,
                    self.pos
                );
            }
            got += n;
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 64 * 1024];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self
                .raw_read(&mut buf[..want])
                .with_context(|| format!("{}: read error at byte {}", self.label, self.pos))?;
            if got == 0 {
                bail!(
                    "{}: truncated tar stream (data ends at byte {})",
                    self.label,
                    self.pos
                );
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Data of an extension header (bounded), with its padding consumed.
    fn read_meta(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_META {
            bail!(
                "{}: {what} of {size} bytes at byte {} exceeds the {MAX_META}-byte limit",
                self.label,
                self.pos
            );
        }
        let mut data = vec![0u8; size as usize];
        if !self.read_full(&mut data)? && size > 0 {
            bail!("{}: truncated tar stream in a {what}", self.label);
        }
        self.skip(pad(size))?;
        Ok(data)
    }

    /// The next entry, or None at the end of the archive. Extension headers (PAX,
    /// GNU long names) are consumed and applied; anything ambiguous is an error.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        let rest = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(rest)?;
        if self.ended {
            return Ok(None);
        }
        let mut pending = Pending::default();
        loop {
            let at = self.pos;
            let mut h = [0u8; BLOCK];
            if !self.read_full(&mut h)? {
                // A stream may end without the two zero blocks; every reader accepts that.
                self.end(&pending, None)?;
                return Ok(None);
            }
            if h.iter().all(|b| *b == 0) {
                self.end(&pending, Some(at))?;
                return Ok(None);
            }
            let hdr = Header::new(&h, &self.label, at)?;
            let size = hdr
                .num(124..136, "size")
                .map_err(|e| anyhow!("{}: {e} in the header at byte {at}", self.label))?;
            match h[156] {
                b'x' => {
                    hdr.require_ustar("PAX header")?;
                    self.pax_header(size, at, &mut pending)?
                }
                b'g' => {
                    hdr.require_ustar("global PAX header")?;
                    self.global_pax_header(size, at, &pending)?
                }
                t @ (b'L' | b'K') => {
                    hdr.require_gnu(long_header_name(t))?;
                    self.gnu_long_header(t, size, at, &mut pending)?
                }
                t => {
                    let e = self.entry(&hdr, t, size, pending)?;
                    self.entries += 1;
                    if self.entries > self.max_entries {
                        bail!(
                            "{}: more than {} entries (--max-entries); refusing to index it",
                            self.label,
                            self.max_entries
                        );
                    }
                    self.remaining = e.size;
                    self.padding = pad(e.size);
                    return Ok(Some(e));
                }
            }
        }
    }

    /// The end of the archive: the stream ended (`zero_block` None) or a zero block
    /// at that byte. Extension headers must not be left describing no entry.
    fn end(&mut self, pending: &Pending, zero_block: Option<u64>) -> Result<()> {
        match zero_block {
            None if !pending.is_empty() => bail!(
                "{}: extension header at the end of the archive describes no entry",
                self.label
            ),
            Some(at) if !pending.is_empty() => bail!(
                "{}: extension header at byte {at} is followed by the end of the archive",
                self.label
            ),
            _ => {}
        }
        self.ended = true;
        if let (Some(_), Some(s)) = (zero_block, self.spill.as_mut()) {
            s.write_all(&[0u8; BLOCK])?; // a well-formed two-block end marker
        }
        self.stop_spill()
    }

    /// A PAX extended header (`x`) for the next entry.
    fn pax_header(&mut self, size: u64, at: u64, pending: &mut Pending) -> Result<()> {
        if pending.pax.is_some() {
            bail!("{}: two PAX headers for one entry at byte {at}", self.label);
        }
        let data = self.read_meta(size, "PAX header")?;
        // Reported with the entry's name; the framing stays defined by
        // the header sizes, so the entry header can still be read.
        pending.pax =
            Some(parse_pax(&data).map_err(|e| format!("malformed PAX header at byte {at}: {e}")));
        Ok(())
    }

    /// A global PAX header (`g`): only a comment is accepted.
    fn global_pax_header(&mut self, size: u64, at: u64, pending: &Pending) -> Result<()> {
        if !pending.is_empty() {
            bail!(
                "{}: global PAX header at byte {at} between an extension header and its entry",
                self.label
            );
        }
        let data = self.read_meta(size, "global PAX header")?;
        let recs = parse_pax(&data).map_err(|e| {
            anyhow!(
                "{}: malformed global PAX header at byte {at}: {e}",
                self.label
            )
        })?;
        // Python applies global records to every later entry, Go and
        // containerd ignore them: only a comment means the same to all.
        if let Some((k, _)) = recs.iter().find(|(k, _)| k != "comment") {
            bail!(
                "{}: global PAX header at byte {at} sets '{k}' for all later entries, which readers apply differently",
                self.label
            );
        }
        Ok(())
    }

    /// A GNU long name (`L`) or long link name (`K`) for the next entry.
    fn gnu_long_header(&mut self, t: u8, size: u64, at: u64, pending: &mut Pending) -> Result<()> {
        let what = long_header_name(t);
        let slot = if t == b'L' {
            &pending.long_name
        } else {
            &pending.long_link
        };
        if slot.is_some() {
            bail!(
                "{}: two {what} headers for one entry at byte {at}",
                self.label
            );
        }
        let data = self.read_meta(size, what)?;
        let name = long_name_bytes(&data).ok_or_else(|| {
            anyhow!(
                "{}: {what} '{}' at byte {at} has bytes after its terminating NUL",
                self.label,
                show(&data)
            )
        })?;
        if t == b'L' {
            pending.long_name = Some(name);
        } else {
            pending.long_link = Some(name);
        }
        Ok(())
    }

    /// Builds the entry of header `hdr` with the pending extensions applied.
    fn entry(&self, hdr: &Header, t: u8, hsize: u64, p: Pending) -> Result<TarEntry> {
        let label = &self.label;
        hdr.check_prefix()?;
        let hname = hdr.name();
        // Decide the name first so every later error can quote it.
        let pax = p.pax.unwrap_or(Ok(Vec::new())).and_then(Pax::interpret);
        let pax = match pax {
            Ok(pax) => pax,
            Err(e) => bail!("{label}: entry '{}': {e}", show(&hname)),
        };
        let name = entry_name(label, &hname, p.long_name.as_ref(), pax.path.as_ref())?;
        let err = |msg: String| anyhow!("{label}: entry '{}': {msg}", escape_controls(&name));
        let kind = checked_kind(t, &name, &hname).map_err(err)?;
        let path = normalize(&name)
            .map_err(|e| anyhow!("{label}: unsafe entry '{}': {e}", escape_controls(&name)))?;
        let size = pax.size.unwrap_or(hsize);
        if kind != Kind::File && size != 0 {
            return Err(err(format!(
                "a {} with {size} bytes of data (other readers parse that data as entries)",
                kind_word(kind)
            )));
        }
        let num = |r, what| hdr.num(r, what).map_err(err);
        let mode = (num(100..108, "mode")? & 0o7777) as u32;
        let uid = match pax.uid {
            Some(u) => u,
            None => num(108..116, "uid")?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => num(116..124, "gid")?,
        };
        let mtime = match pax.mtime {
            Some(m) => m,
            None => num(136..148, "mtime")?,
        };
        let dev = device(hdr, kind).map_err(err)?;
        let link = link(hdr, kind, p.long_link.as_ref(), pax.linkpath.as_ref()).map_err(err)?;
        Ok(TarEntry {
            path,
            name,
            kind,
            mode,
            uid,
            gid,
            mtime,
            size: if kind == Kind::File { size } else { 0 },
            link,
            xattrs: pax.xattrs,
            dev,
        })
    }

    fn stop_spill(&mut self) -> Result<()> {
        if let Some(mut s) = self.spill.take() {
            s.flush()
                .with_context(|| format!("{}: cannot write the uncompressed copy", self.label))?;
        }
        Ok(())
    }

    /// Consumes the rest of the stream after the last entry (so that digests get
    /// verified) and refuses anything but zeros there: some readers (`tar -i`) would
    /// find entries in it. Returns the inner reader.
    pub fn finish(mut self) -> Result<R> {
        while self.next_entry()?.is_some() {}
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self
                .inner
                .read(&mut buf)
                .with_context(|| format!("{}: error after the last tar entry", self.label))?;
            if n == 0 {
                break;
            }
            if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
                bail!(
                    "{}: non-zero data at byte {} after the end of the tar archive",
                    self.label,
                    self.pos + i as u64
                );
            }
            self.pos += n as u64;
        }
        Ok(self.inner)
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.raw_read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: truncated tar stream inside an entry", self.label),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Bytes up to the first NUL (how every reader reads a fixed-width name field).
fn cstr(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|c| *c == 0).unwrap_or(b.len())]
}

/// A GNU long name: the bytes before the first NUL, if only NULs follow it
/// (Python and GNU tar stop at the first NUL; the tar crate did not).
fn long_name_bytes(data: &[u8]) -> Option<Vec<u8>> {
    let name = cstr(data);
    data[name.len()..]
        .iter()
        .all(|b| *b == 0)
        .then(|| name.to_vec())
}

fn kind_word(k: Kind) -> &'static str {
    match k {
        Kind::File => "regular file",
        Kind::Dir => "directory",
        Kind::Symlink => "symlink",
        Kind::Hardlink => "hardlink",
        Kind::Char => "character device",
        Kind::Block => "block device",
        Kind::Fifo => "FIFO",
    }
}

/// A name for messages and tables: control characters written as Rust escapes
/// (`\n`, `\u{1b}`), so a name from an image cannot break a line or forge one.
pub fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => escape_controls(s),
        Err(_) => b.escape_ascii().to_string(),
    }
}

/// One 512-byte header block, checksum verified.
struct Header<'a> {
    b: &'a [u8; BLOCK],
    label: &'a str,
    at: u64,
}

impl<'a> Header<'a> {
    fn new(b: &'a [u8; BLOCK], label: &'a str, at: u64) -> Result<Header<'a>> {
        let h = Header { b, label, at };
        let stored = h
            .num(148..156, "checksum")
            .map_err(|e| anyhow!("{label}: {e} in the header at byte {at}"))?;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let c = if (148..156).contains(&i) { b' ' } else { c };
            unsigned += c as u64;
            signed += c as i8 as i64;
        }
        // GNU tar, Python and Go all accept the historic signed sum too.
        if stored != unsigned && stored as i64 != signed {
            bail!("{label}: header checksum mismatch at byte {at}");
        }
        Ok(h)
    }

    fn ustar(&self) -> bool {
        &self.b[257..263] == b"ustar\0" && &self.b[263..265] == b"00"
    }

    fn gnu(&self) -> bool {
        &self.b[257..265] == b"ustar  \0"
    }

    fn require_ustar(&self, what: &str) -> Result<()> {
        if !self.ustar() {
            bail!(
                "{}: {what} at byte {} is not in a POSIX ustar header; readers disagree on it",
                self.label,
                self.at
            );
        }
        Ok(())
    }

    fn require_gnu(&self, what: &str) -> Result<()> {
        if !self.gnu() {
            bail!(
                "{}: {what} at byte {} is not in a GNU header; readers disagree on it",
                self.label,
                self.at
            );
        }
        Ok(())
    }

    /// The stored name: ustar prefix + name. A prefix outside a ustar header is
    /// refused: Python applies it, GNU tar and Go do not.
    fn name(&self) -> Vec<u8> {
        let name = cstr(&self.b[0..100]);
        let prefix = cstr(&self.b[345..500]);
        if prefix.is_empty() || !self.ustar() {
            return name.to_vec();
        }
        let mut p = prefix.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }

    /// Refuses a prefix field that only some readers apply.
    fn check_prefix(&self) -> Result<()> {
        if !self.ustar() && self.b[345] != 0 {
            bail!(
                "{}: entry '{}' (header at byte {}) has a name prefix but is not POSIX ustar (Python applies it, GNU tar and Go do not)",
                self.label,
                show(cstr(&self.b[0..100])),
                self.at
            );
        }
        Ok(())
    }

    /// A numeric field: octal digits between optional leading spaces and trailing
    /// spaces/NULs, or GNU base-256. Anything else ('+', '0o', '_', blanks that
    /// Python's int() tolerates) is refused, so every reader gets the same value.
    fn num(&self, r: std::ops::Range<usize>, what: &str) -> std::result::Result<u64, String> {
        let f = &self.b[r];
        let bad = || format!("bad {what} field \"{}\"", f.escape_ascii());
        if f[0] & 0x80 != 0 {
            if f[0] != 0x80 {
                return Err(bad()); // negative base-256
            }
            let mut v: u64 = 0;
            for &c in &f[1..] {
                v = v.checked_mul(256).ok_or_else(bad)? + c as u64;
            }
            return Ok(v);
        }
        let start = f.iter().position(|c| *c != b' ').unwrap_or(f.len());
        let digits = f[start..]
            .iter()
            .take_while(|c| (b'0'..=b'7').contains(*c))
            .count();
        if digits == 0 || !f[start + digits..].iter().all(|c| *c == b' ' || *c == 0) {
            return Err(bad());
        }
        let mut v: u64 = 0;
        for &c in &f[start..start + digits] {
            v = v.checked_mul(8).ok_or_else(bad)? + (c - b'0') as u64;
        }
        Ok(v)
    }
}

/// Syntax of a PAX extended header: `LEN key=value\n` records, strictly. Malformed
/// data, trailing bytes and duplicate keys are refused (readers stop, skip or keep
/// the first or the last one differently).
fn parse_pax(data: &[u8]) -> PaxRecords {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 20 || rest.get(digits) != Some(&b' ') {
            return Err(format!("bad record length at offset {pos}"));
        }
        let len: usize = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad record length at offset {pos}"))?;
        if len < digits + 4 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(format!(
                "record at offset {pos} does not end where its length says"
            ));
        }
        let body = &rest[digits + 1..len - 1];
        let eq = body
            .iter()
            .position(|c| *c == b'=')
            .ok_or_else(|| format!("record at offset {pos} has no '='"))?;
        let key = std::str::from_utf8(&body[..eq])
            .ok()
            .filter(|k| !k.is_empty() && !k.contains(['\n', '\0']))
            .ok_or_else(|| format!("record at offset {pos} has a bad key"))?;
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("duplicate record '{key}'"));
        }
        out.push((key.to_string(), body[eq + 1..].to_vec()));
        pos += len;
    }
    Ok(out)
}

/// What a local PAX header changes about its entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<u64>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Records no extractor applies (or that only repeat what is checked elsewhere).
const IGNORED_PAX: [&str; 11] = [
    "uname",
    "gname",
    "atime",
    "ctime",
    "comment",
    "charset",
    "hdrcharset",
    "LIBARCHIVE.creationtime",
    "SCHILY.dev",
    "SCHILY.ino",
    "SCHILY.nlink",
];

/// Vendor namespaces whose records GNU tar, libarchive or star interpret.
const INTERPRETED_VENDORS: [&str; 5] = ["GNU.", "SCHILY.", "LIBARCHIVE.", "RHT.", "SUN."];

/// A PAX key that some reader may give a meaning we would not see: POSIX-reserved
/// keywords (all lowercase) we do not know, and the interpreted vendor namespaces
/// (GNU.sparse.name renames the entry, SCHILY.devmajor changes a device,
/// RHT.security.selinux sets a label, SUN.holesdata makes a sparse file, ...).
fn reserved_or_interpreted(k: &str) -> bool {
    k.bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.')
        || INTERPRETED_VENDORS.iter().any(|v| k.starts_with(v))
}

impl Pax {
    /// Meaning of the records; unknown reserved or interpreted keys are refused.
    fn interpret(recs: Vec<(String, Vec<u8>)>) -> std::result::Result<Pax, String> {
        let mut p = Pax::default();
        let mut libarchive_xattrs = Vec::new();
        for (k, v) in recs {
            let text = || std::str::from_utf8(&v).map_err(|_| format!("PAX '{k}' is not UTF-8"));
            match k.as_str() {
                "path" | "linkpath" => {
                    if v.is_empty() {
                        return Err(format!("empty PAX '{k}' (readers disagree on its meaning)"));
                    }
                    if k == "path" {
                        p.path = Some(v);
                    } else {
                        p.linkpath = Some(v);
                    }
                }
                "size" | "uid" | "gid" => {
                    let n = decimal(text()?).ok_or_else(|| {
                        format!("PAX '{k}' value {:?} is not a plain decimal number", v.escape_ascii().to_string())
                    })?;
                    match k.as_str() {
                        "size" => p.size = Some(n),
                        "uid" => p.uid = Some(n),
                        _ => p.gid = Some(n),
                    }
                }
                "mtime" => {
                    let t = text()?;
                    let int = t.split_once('.').map_or(t, |(i, f)| {
                        if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) {
                            i
                        } else {
                            "x"
                        }
                    });
                    p.mtime = Some(decimal(int).ok_or_else(|| {
                        format!("PAX 'mtime' value {t:?} is not a non-negative decimal time")
                    })?);
                }
                _ if k.starts_with("SCHILY.xattr.") => {
                    let name = &k["SCHILY.xattr.".len()..];
                    if name.is_empty() {
                        return Err("PAX xattr record without a name".into());
                    }
                    p.xattrs.insert(name.to_string(), v);
                }
                _ if k.starts_with("LIBARCHIVE.xattr.") => libarchive_xattrs.push((k, v)),
                _ if k.starts_with("GNU.sparse.") => {
                    return Err(format!(
                        "GNU sparse file (PAX '{k}') is not supported; readers rename or resize such entries"
                    ))
                }
                _ if IGNORED_PAX.contains(&k.as_str()) => {}
                _ if reserved_or_interpreted(&k) => {
                    return Err(format!(
                        "unsupported PAX record '{k}' (some readers give it a meaning)"
                    ))
                }
                // Another vendor's record (APK-TOOLS.checksum.SHA1, ...): no reader applies it.
                _ => {}
            }
        }
        // bsdtar writes each xattr twice; GNU tar reads the LIBARCHIVE form, Go the
        // SCHILY one. Accept them only when they agree.
        for (k, v) in libarchive_xattrs {
            let name = url_decode(&k["LIBARCHIVE.xattr.".len()..]);
            let value = base64_decode(&v);
            match (name, value) {
                (Some(n), Some(val)) if p.xattrs.get(&n) == Some(&val) => {}
                _ => {
                    return Err(format!(
                        "PAX '{k}' does not match a SCHILY.xattr record (readers would set different xattrs)"
                    ))
                }
            }
        }
        Ok(p)
    }
}

/// Strict non-negative decimal (what Go's parser accepts and Python reads alike).
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn base64_decode(v: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let e = base64::engine::general_purpose::STANDARD;
    e.decode(v).ok().or_else(|| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(v)
            .ok()
    })
}

/// The kind of a tar type flag; the types readers disagree on are refused.
/// The entry's name: the header's, or the one GNU long name or PAX path that
/// replaces it (both present is refused: readers pick different ones), as UTF-8.
fn entry_name(
    label: &str,
    hname: &[u8],
    long_name: Option<&Vec<u8>>,
    pax_path: Option<&Vec<u8>>,
) -> Result<String> {
    let raw_name = match (long_name, pax_path) {
        (Some(_), Some(_)) => bail!(
            "{label}: entry '{}' has both a GNU long name and a PAX path; readers pick different ones",
            show(hname)
        ),
        (Some(n), None) | (None, Some(n)) => n.clone(),
        (None, None) => hname.to_vec(),
    };
    match String::from_utf8(raw_name) {
        Ok(s) => Ok(s),
        Err(e) => bail!(
            "{label}: entry '{}': name is not valid UTF-8",
            e.as_bytes().escape_ascii()
        ),
    }
}

/// The entry's kind, refusing names that readers would turn into something else.
fn checked_kind(t: u8, name: &str, hname: &[u8]) -> std::result::Result<Kind, String> {
    if name.contains('\0') {
        return Err("name contains a NUL byte".into());
    }
    let kind = entry_kind(t)?;
    // Python and Go turn an old-style ('\0') regular file ending in '/' into a
    // directory, Python judging by the header's own name field.
    if kind != Kind::Dir && (name.ends_with('/') || (t == b'\0' && hname.ends_with(b"/"))) {
        return Err(format!(
            "a {} whose name ends with '/' (some readers make it a directory)",
            kind_word(kind)
        ));
    }
    Ok(kind)
}

/// A device node's (major, minor); (0, 0) for every other kind.
fn device(hdr: &Header, kind: Kind) -> std::result::Result<(u32, u32), String> {
    if !matches!(kind, Kind::Char | Kind::Block) {
        return Ok((0, 0));
    }
    let major = u32::try_from(hdr.num(329..337, "device major")?)
        .map_err(|_| "device major out of range".to_string())?;
    let minor = u32::try_from(hdr.num(337..345, "device minor")?)
        .map_err(|_| "device minor out of range".to_string())?;
    Ok((major, minor))
}

/// A link's target: the header's, or the one GNU long link or PAX linkpath that
/// replaces it (both present is refused).
fn link(
    hdr: &Header,
    kind: Kind,
    long_link: Option<&Vec<u8>>,
    pax_linkpath: Option<&Vec<u8>>,
) -> std::result::Result<Option<String>, String> {
    if !matches!(kind, Kind::Symlink | Kind::Hardlink) {
        return Ok(None);
    }
    let raw = match (long_link, pax_linkpath) {
        (Some(_), Some(_)) => {
            return Err(
                "has both a GNU long link name and a PAX linkpath; readers pick different ones"
                    .into(),
            )
        }
        (Some(l), None) | (None, Some(l)) => l.clone(),
        (None, None) => cstr(&hdr.b[157..257]).to_vec(),
    };
    link_target(kind, &raw).map(Some)
}

fn entry_kind(t: u8) -> std::result::Result<Kind, String> {
    Ok(match t {
        b'0' | b'\0' => Kind::File,
        b'1' => Kind::Hardlink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' => Kind::Dir,
        b'6' => Kind::Fifo,
        b'7' => {
            return Err("contiguous file (type '7') is not supported by container runtimes".into())
        }
        b'S' => return Err("GNU sparse file (type 'S') is not supported".into()),
        t => {
            return Err(format!(
                "unknown entry type '{}'; readers disagree on what it is",
                (t as char).escape_default()
            ))
        }
    })
}

/// A link's target: UTF-8, not empty, no NUL; a hardlink's normalized like a path
/// (and never the root).
fn link_target(kind: Kind, raw: &[u8]) -> std::result::Result<String, String> {
    let l = std::str::from_utf8(raw)
        .map_err(|_| format!("link target '{}' is not valid UTF-8", raw.escape_ascii()))?;
    if l.is_empty() || l.contains('\0') {
        return Err("empty link target or NUL in it".into());
    }
    if kind != Kind::Hardlink {
        return Ok(l.to_string());
    }
    let t = normalize(l).map_err(|e| format!("hardlink has unsafe target '{l}': {e}"))?;
    if t.is_empty() {
        return Err("hardlink to the root directory".into());
    }
    Ok(t)
}

/// The name of a GNU long name (`L`) or long link name (`K`) header, for errors.
fn long_header_name(t: u8) -> &'static str {
    if t == b'L' {
        "GNU long name"
    } else {
        "GNU long link name"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pax_records, Raw, TarBuilder};

    fn entries(bytes: &[u8]) -> Result<Vec<TarEntry>> {
        let mut r = TarReader::new(bytes, "layer 1");
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        r.finish()?;
        Ok(out)
    }

    fn refused(bytes: &[u8], needle: &str) {
        let err = format!("{:#}", entries(bytes).unwrap_err());
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
    }

    #[test]
    fn spill_is_the_archive_without_its_trailer() {
        let tar = TarBuilder::new()
            .file("a", &[1u8; 700], 0o644)
            .symlink("b", "a")
            .build();
        let mut layer = tar.clone();
        layer.extend_from_slice(&[0u8; 1 << 16]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spill");
        let mut r = TarReader::new(&layer[..], "l").spill_to(File::create(&p).unwrap());
        while r.next_entry().unwrap().is_some() {}
        r.finish().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), tar);
    }

    #[test]
    fn entry_limit_per_layer() {
        let mut b = TarBuilder::new();
        for i in 0..10 {
            b = b.file(&format!("f{i}"), b"", 0o644);
        }
        let tar = b.build();
        let mut r = TarReader::new(&tar[..], "layer 1").max_entries(9);
        let err = loop {
            match r.next_entry() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("limit not applied"),
                Err(e) => break format!("{e:#}"),
            }
        };
        assert!(err.contains("layer 1: more than 9 entries"), "{err}");
    }

    #[test]
    fn header_fields_are_parsed_strictly() {
        // Base-256 uid (GNU) is fine; a checksum mismatch and a '+' size are not.
        let mut uid = [0u8; 8];
        uid[0] = 0x80;
        uid[4..].copy_from_slice(&70000u32.to_be_bytes());
        let t = TarBuilder::new()
            .raw(Raw::new(b'0', b"big", 1).field(108, &uid), b"x")
            .build();
        assert_eq!(entries(&t).unwrap()[0].uid, 70000);
        let mut t = TarBuilder::new().file("a", b"x", 0o644).build();
        t[0] = b'b';
        refused(&t, "layer 1: header checksum mismatch at byte 0");
        let t = TarBuilder::new()
            .raw(Raw::new(b'0', b"a", 0).field(124, b"+0000000001\0"), b"x")
            .build();
        refused(&t, "bad size field");
        let t = TarBuilder::new().file("a", &[1u8; 2000], 0o644).build();
        refused(&t[..1536], "layer 1: truncated tar stream");
    }

    #[test]
    fn pax_records_apply_or_are_refused() {
        let t = TarBuilder::new()
            .pax(&[
                ("mtime", b"1700000000.25"),
                ("SCHILY.xattr.security.capability", b"\x01\x02"),
                ("LIBARCHIVE.xattr.security.capability", b"AQI="),
                ("atime", b"1"),
            ])
            .file("f", b"x", 0o644)
            .build();
        let e = &entries(&t).unwrap()[0];
        assert_eq!(e.mtime, 1_700_000_000);
        let t = TarBuilder::new()
            .pax(&[("APK-TOOLS.checksum.SHA1", b"abc")])
            .file("f", b"x", 0o644)
            .build();
        assert_eq!(
            entries(&t).unwrap().len(),
            1,
            "other vendors' records are inert"
        );
        assert_eq!(e.xattrs["security.capability"], b"\x01\x02");
        for (recs, needle) in [
            (
                vec![("LIBARCHIVE.xattr.user.a", &b"AQI="[..])],
                "does not match a SCHILY.xattr",
            ),
            (
                vec![("RHT.security.selinux", &b"x"[..])],
                "unsupported PAX record 'RHT.security.selinux'",
            ),
            (vec![("SCHILY.devmajor", &b"1"[..])], "unsupported PAX"),
            (vec![("SUN.holesdata", &b"0 1"[..])], "unsupported PAX"),
            (
                vec![("realtime.x", &b"1"[..])],
                "unsupported PAX record 'realtime.x'",
            ),
            (vec![("path", &b""[..])], "empty PAX 'path'"),
            (vec![("mtime", &b"-5"[..])], "not a non-negative decimal"),
            (vec![("uid", &b"0x10"[..])], "not a plain decimal"),
        ] {
            let t = TarBuilder::new().pax(&recs).file("f", b"x", 0o644).build();
            refused(&t, "layer 1: entry 'f'");
            refused(&t, needle);
        }
        // A syntax error is reported with the entry it describes.
        let t = TarBuilder::new()
            .pax_data(b'x', b"11 path=a\n")
            .file("f", b"x", 0o644)
            .build();
        refused(&t, "entry 'f': malformed PAX header at byte 0");
        // Trailing NULs after the records: Go fails, Python stops.
        let mut data = pax_records(&[("path", b"a")]);
        data.extend_from_slice(&[0u8; 8]);
        let t = TarBuilder::new()
            .pax_data(b'x', &data)
            .file("f", b"x", 0o644)
            .build();
        refused(&t, "malformed PAX header");
        // A global comment (git archive) is harmless.
        let t = TarBuilder::new()
            .pax_data(b'g', &pax_records(&[("comment", b"abc")]))
            .file("f", b"x", 0o644)
            .build();
        assert_eq!(entries(&t).unwrap().len(), 1);
    }

    #[test]
    fn extension_headers_need_an_entry() {
        let t = TarBuilder::new().pax(&[("path", b"x")]).build();
        refused(&t, "followed by the end of the archive");
        let t = TarBuilder::new()
            .gnu_long(b'L', b"a\0")
            .gnu_long(b'L', b"b\0")
            .file("f", b"x", 0o644)
            .build();
        refused(&t, "two GNU long name headers");
    }

    #[test]
    fn long_names_and_links() {
        let name = format!("usr/{}/x", "n".repeat(200));
        let target = format!("/{}", "t".repeat(200));
        let t = TarBuilder::new()
            .file(&name, b"x", 0o644)
            .symlink(&format!("{name}-l"), &target)
            .hardlink(&format!("{name}-h"), &name)
            .build();
        let es = entries(&t).unwrap();
        assert_eq!(es[0].path, name);
        assert_eq!(es[1].link.as_deref(), Some(target.as_str()));
        assert_eq!(es[2].link.as_deref(), Some(name.as_str()));
        let t = TarBuilder::new()
            .gnu_long(b'K', format!("{target}\0").as_bytes())
            .pax(&[("linkpath", b"/other")])
            .raw(Raw::new(b'2', b"s", 0), &[])
            .build();
        refused(&t, "both a GNU long link name and a PAX linkpath");
        // The long name's 100-byte stub in the header may end with '/': only the
        // real name counts for a '0' file.
        let cut = format!("{}/{}", "a".repeat(99), "b".repeat(20));
        let t = TarBuilder::new().file(&cut, b"x", 0o644).build();
        assert_eq!(entries(&t).unwrap()[0].path, cut);
    }
}
