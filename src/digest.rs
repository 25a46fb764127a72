//! SHA-256 digests in OCI form (`sha256:<hex>`) and I/O adapters that hash while
//! streaming, so no blob is ever read twice just to learn its digest.
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Validates `sha256:<64 lowercase hex>` and returns the hex part. A digest is used as
/// a file name (`blobs/sha256/<hex>`), so nothing else may pass: `sha256:../../x`
/// would walk out of the layout. Other registered algorithms (sha512) are well
/// formed but unsupported, and say so.
pub fn digest_hex(digest: &str) -> anyhow::Result<&str> {
    if let Some(hex) = digest.strip_prefix("sha256:") {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Ok(hex);
        }
    }
    if let Some(("sha512", hex)) = digest.split_once(':') {
        if hex.len() == 128 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            anyhow::bail!(
                "unsupported digest algorithm in {} (only sha256 is supported)",
                quoted(digest)
            );
        }
    }
    anyhow::bail!(
        "invalid digest {} (expected sha256:<64 hex>)",
        quoted(digest)
    )
}

/// An untrusted string for an error message: quoted, control characters escaped
/// (no terminal escapes from an image reach the user's terminal), and cut short.
pub fn quoted(s: &str) -> String {
    const MAX: usize = 100;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

/// A writer that counts and hashes everything passing through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that verifies the digest and size of a blob when it reaches EOF.
/// A mismatch is an I/O error naming the blob, so every consumer fails closed.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    expected_digest: String,
    expected_size: Option<u64>,
    what: String,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected_digest: &str, expected_size: Option<u64>, what: &str) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            expected_digest: expected_digest.to_string(),
            expected_size,
            what: what.to_string(),
            verified: false,
        }
    }
    fn check(&mut self) -> io::Result<()> {
        if self.verified {
            return Ok(());
        }
        self.verified = true;
        let got = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if let Some(size) = self.expected_size {
            if size != self.count {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: size mismatch: descriptor says {size} bytes, blob has {}",
                        self.what, self.count
                    ),
                ));
            }
        }
        if got != self.expected_digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: digest mismatch: expected {}, content hashes to {got}",
                    self.what, self.expected_digest
                ),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.check()?;
        } else {
            self.hasher.update(&buf[..n]);
            self.count += n as u64;
        }
        Ok(n)
    }
}

/// A reader that hashes what passes through (for diff_ids of uncompressed streams).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_reader_detects_mismatch() {
        let data = b"hello".to_vec();
        let good = sha256_digest(&data);
        let mut r = VerifyingReader::new(&data[..], &good, Some(5), "blob x");
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let mut bad = VerifyingReader::new(&b"hellO"[..], &good, Some(5), "blob x");
        let err = bad.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("blob x: digest mismatch"), "{err}");
        let mut short = VerifyingReader::new(&b"hell"[..], &good, Some(5), "blob y");
        assert!(short
            .read_to_end(&mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("size mismatch"));
    }

    #[test]
    fn digest_hex_validates() {
        assert!(digest_hex(&sha256_digest(b"")).is_ok());
        assert!(digest_hex("sha256:../../etc").is_err());
        assert!(digest_hex("md5:abc").is_err());
    }

    #[test]
    fn digest_errors_say_what_is_expected() {
        let e = digest_hex("sha256:../../../../etc/passwd").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid digest "sha256:../../../../etc/passwd" (expected sha256:<64 hex>)"#
        );
        // Upper case hex is not the canonical form (the file name would differ).
        let upper = sha256_digest(b"")
            .to_uppercase()
            .replace("SHA256", "sha256");
        assert!(digest_hex(&upper)
            .unwrap_err()
            .to_string()
            .contains("invalid digest"));
        let long = format!("sha512:{}", "a".repeat(128));
        assert!(digest_hex(&long)
            .unwrap_err()
            .to_string()
            .contains("only sha256 is supported"));
        // Control characters are escaped and long values cut.
        let e = digest_hex(&format!("sha256:\x1b[31m{}", "x".repeat(500))).unwrap_err();
        let msg = e.to_string();
        assert!(
            !msg.contains('\x1b') && msg.contains("\\u{1b}") && msg.len() < 200,
            "{msg}"
        );
    }
}
