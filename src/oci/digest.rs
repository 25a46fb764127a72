//! A content digest validated once, where it enters the program: after that, every
//! holder knows it is `sha256:<64 lowercase hex>` and safe as a blob file name.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// `sha256:<64 lowercase hex>` (see [`crate::digest::digest_hex`] for what is refused
/// and why). Serializes as the plain string, so documents keep their bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Validates `s`; the error names the offending value.
    pub fn parse(s: &str) -> anyhow::Result<Digest> {
        crate::digest::digest_hex(s)?;
        Ok(Digest(s.to_string()))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(crate::digest::sha256_digest(data))
    }

    /// The 64 hex characters: the blob's file name under `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Digest {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Digest> {
        Digest::parse(s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_what_could_walk_out_of_a_layout() {
        let e = Digest::parse("sha256:../../etc/passwd").unwrap_err();
        assert!(format!("{e:#}").contains("invalid digest"), "{e:#}");
        let e = serde_json::from_str::<Digest>("\"sha256:ABCD\"").unwrap_err();
        assert!(e.to_string().contains("invalid digest"), "{e}");
    }

    #[test]
    fn round_trips_as_a_plain_string() {
        let d = Digest::of(b"x");
        assert_eq!(d.hex().len(), 64);
        let s = serde_json::to_string(&d).unwrap();
        assert_eq!(s, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&s).unwrap(), d);
    }
}
