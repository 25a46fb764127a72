//! Signing keys: ECDSA P-256 in PKCS#8 PEM (encrypted ones with the password from
//! [`PASSWORD_ENV`]), public keys in SubjectPublicKeyInfo PEM (what `cosign verify
//! --key` reads). Key material is never printed: errors name the file, not its bytes.
//!
//! Permission policy for a private key file: readable or writable by others is an
//! error (the key is as good as published); readable by the group is a warning.
use anyhow::{anyhow, bail, Context, Result};
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Password of an encrypted private key (for `build --sign-key` and `keygen`).
pub const PASSWORD_ENV: &str = "NEMOCLAW_SIGN_PASSWORD";

/// A loaded private key and the id of its public half.
pub struct Signer {
    key: SigningKey,
    keyid: String,
}

impl std::fmt::Debug for Signer {
    /// Only the key id: the secret never reaches a log or an error message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.keyid)
    }
}

impl Signer {
    pub fn from_key(key: SigningKey) -> Signer {
        let keyid = keyid(key.verifying_key());
        Signer { key, keyid }
    }

    /// Reads `path` after the permission check; `warn` receives the group-readable
    /// warning. The password, if the key is encrypted, comes from [`PASSWORD_ENV`].
    pub fn load(path: &Path, warn: &mut dyn FnMut(String)) -> Result<Signer> {
        // One open: the mode checked is the mode of the file read (no swap in between).
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("--sign-key {}: cannot read", path.display()))?;
        check_private_mode(&file, path, warn)?;
        let mut pem = String::new();
        std::io::Read::read_to_string(&mut file, &mut pem)
            .with_context(|| format!("--sign-key {}: cannot read", path.display()))?;
        let password = std::env::var(PASSWORD_ENV).ok();
        Ok(Signer::from_key(
            parse_private(&pem, password.as_deref())
                .map_err(|e| anyhow!("--sign-key {}: {e}", path.display()))?,
        ))
    }

    /// ASN.1 DER ECDSA-SHA256 signature of `msg`; RFC 6979 nonces, so the same key
    /// and message always give the same bytes.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }

    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    pub fn public_pem(&self) -> Result<String> {
        public_pem(self.key.verifying_key())
    }
}

/// A key id that does not depend on the file: hex SHA-256 of the public key's DER
/// SubjectPublicKeyInfo (the DSSE `keyid` of our signatures).
pub fn keyid(k: &VerifyingKey) -> String {
    let der = k
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    crate::digest::sha256_hex(&der)
}

fn public_pem(k: &VerifyingKey) -> Result<String> {
    k.to_public_key_pem(LineEnding::LF)
        .map_err(|e| anyhow!("cannot encode the public key: {e}"))
}

/// PKCS#8 (plain or encrypted) or SEC1 (`EC PRIVATE KEY`, openssl's default) PEM.
fn parse_private(pem: &str, password: Option<&str>) -> Result<SigningKey> {
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let pw = password
            .ok_or_else(|| anyhow!("the key is encrypted; give its password in ${PASSWORD_ENV}"))?;
        return SigningKey::from_pkcs8_encrypted_pem(pem, pw).map_err(|_| {
            anyhow!("cannot decrypt the key (wrong ${PASSWORD_ENV}, or not an ECDSA P-256 key)")
        });
    }
    if pem.contains("-----BEGIN PRIVATE KEY-----") {
        return SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow!("not an ECDSA P-256 PKCS#8 private key ({e})"));
    }
    if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
        use p256::elliptic_curve::SecretKey;
        return SecretKey::<p256::NistP256>::from_sec1_pem(pem)
            .map(SigningKey::from)
            .map_err(|e| anyhow!("not an ECDSA P-256 EC private key ({e})"));
    }
    bail!("not a PEM private key (expected BEGIN PRIVATE KEY, ENCRYPTED PRIVATE KEY or EC PRIVATE KEY)")
}

/// Refuses a private key that others may read or write; warns when the group may.
fn check_private_mode(
    file: &std::fs::File,
    path: &Path,
    warn: &mut dyn FnMut(String),
) -> Result<()> {
    let meta = file
        .metadata()
        .with_context(|| format!("--sign-key {}: cannot read", path.display()))?;
    if !meta.is_file() {
        bail!("--sign-key {}: not a regular file", path.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o006 != 0 {
        bail!(
            "--sign-key {}: mode {mode:03o} lets other users read or change the private key; \
             refusing to sign with it (chmod 600 it, and consider it compromised)",
            path.display()
        );
    }
    if mode & 0o060 != 0 {
        warn(format!(
            "--sign-key {}: mode {mode:03o}: the private key is readable by its group (chmod 600 recommended)",
            path.display()
        ));
    }
    Ok(())
}

/// A public key (SPKI PEM, as `keygen` and `cosign public-key` write it).
pub fn load_public(path: &Path) -> Result<VerifyingKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("--key {}: cannot read", path.display()))?;
    if pem.contains("PRIVATE KEY") {
        bail!(
            "--key {}: is a private key; give the public key",
            path.display()
        );
    }
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
        anyhow!(
            "--key {}: not an ECDSA P-256 public key in PEM ({e})",
            path.display()
        )
    })
}

/// `keygen --out PREFIX`: PREFIX.key (0600, encrypted when [`PASSWORD_ENV`] is set)
/// and PREFIX.pub. Existing files are never overwritten.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf)> {
    let (key_path, pub_path) = (with_ext(prefix, "key"), with_ext(prefix, "pub"));
    for p in [&key_path, &pub_path] {
        if std::fs::symlink_metadata(p).is_ok() {
            bail!("{} exists; refusing to overwrite a key", p.display());
        }
    }
    let key = SigningKey::random(&mut rand_core::OsRng);
    let pem = match std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()) {
        Some(pw) => key
            .to_pkcs8_encrypted_pem(&mut rand_core::OsRng, pw, LineEnding::LF)
            .map_err(|e| anyhow!("cannot encrypt the key: {e}"))?,
        None => key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow!("cannot encode the key: {e}"))?,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("cannot create {}", key_path.display()))?;
    f.write_all(pem.as_bytes())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    let public = public_pem(key.verifying_key())?;
    std::fs::write(&pub_path, public)
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok((key_path, pub_path))
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn keygen_round_trip_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let (k, p) = keygen(&d.path().join("cosign")).unwrap();
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut warnings = Vec::new();
        let s = Signer::load(&k, &mut |w| warnings.push(w)).unwrap();
        assert!(warnings.is_empty());
        let vk = load_public(&p).unwrap();
        assert_eq!(keyid(&vk), s.keyid());
        // Deterministic (RFC 6979) and verifiable.
        let (a, b) = (s.sign(b"m"), s.sign(b"m"));
        assert_eq!(a, b);
        use p256::ecdsa::signature::Verifier;
        let sig = p256::ecdsa::Signature::from_der(&a).unwrap();
        assert!(vk.verify(b"m", &sig).is_ok());
        assert!(vk.verify(b"n", &sig).is_err());
        assert!(
            keygen(&d.path().join("cosign")).is_err(),
            "never overwrites"
        );
        // Debug shows the id only.
        assert_eq!(format!("{s:?}"), format!("Signer({})", s.keyid()));
    }

    #[test]
    fn permissions_policy() {
        let d = tempfile::tempdir().unwrap();
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let world = write_mode(d.path(), "w.key", &pem, 0o644);
        let e = Signer::load(&world, &mut |_| {}).unwrap_err().to_string();
        assert!(
            e.contains("w.key") && e.contains("644") && !e.contains("BEGIN"),
            "{e}"
        );
        let group = write_mode(d.path(), "g.key", &pem, 0o640);
        let mut warnings = Vec::new();
        Signer::load(&group, &mut |w| warnings.push(w)).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("group"));
    }

    #[test]
    fn encrypted_and_bad_keys() {
        use p256::pkcs8::{pkcs5::pbes2, PrivateKeyInfo};
        let key = SigningKey::from_slice(&[9u8; 32]).unwrap();
        // PBKDF2-SHA256 + AES-256-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes
        // (`keygen`'s scrypt default is slow in debug builds).
        let der = key.to_pkcs8_der().unwrap();
        let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(1000, &[1; 16], &[2; 16]).unwrap();
        let enc = PrivateKeyInfo::try_from(der.as_bytes())
            .unwrap()
            .encrypt_with_params(params, "pw")
            .unwrap()
            .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            .unwrap();
        assert!(parse_private(&enc, Some("pw")).is_ok());
        let e = parse_private(&enc, Some("nope")).unwrap_err().to_string();
        assert!(e.contains("cannot decrypt"), "{e}");
        let e = parse_private(&enc, None).unwrap_err().to_string();
        assert!(e.contains(PASSWORD_ENV), "{e}");
        let e = parse_private("hello", None).unwrap_err().to_string();
        assert!(e.contains("not a PEM private key"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let p = write_mode(
            d.path(),
            "k.pub",
            &key.to_pkcs8_pem(LineEnding::LF).unwrap(),
            0o600,
        );
        assert!(load_public(&p)
            .unwrap_err()
            .to_string()
            .contains("private key"));
    }
}
