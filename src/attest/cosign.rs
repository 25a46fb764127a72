//! Cosign's image signature format: a "simple signing" payload naming the image
//! digest, signed (ECDSA, DER, base64) and carried as one layer of a manifest with
//! the signature in the layer annotation `dev.cosignproject.cosign/signature`.
use super::keys::Signer;
use crate::oci::Digest;
use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::VerifyingKey;
use serde_json::{json, Value};

pub const MT_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The artifact type cosign gives signatures stored as OCI 1.1 referrers.
pub const ARTIFACT_SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The payload (canonical JSON): `critical.image.docker-manifest-digest` is what
/// `cosign verify` compares with the image it was asked about.
pub fn payload(image: &Digest, repository: &str) -> Vec<u8> {
    crate::oci::canonical(&json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": image.as_str()},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    }))
}

/// Base64 of the DER signature over the exact payload bytes.
pub fn sign(payload: &[u8], signer: &Signer) -> String {
    B64.encode(signer.sign(payload))
}

/// Checks the signature over `payload` and that the payload names `image`.
pub fn verify(
    payload: &[u8],
    signature_b64: &str,
    key: &VerifyingKey,
    image: &Digest,
) -> Result<()> {
    let raw = B64.decode(signature_b64.trim()).map_err(|e| {
        anyhow!("cosign signature: annotation {SIGNATURE_ANNOTATION} is not base64 ({e})")
    })?;
    let sig = p256::ecdsa::Signature::from_der(&raw)
        .map_err(|e| anyhow!("cosign signature: not a DER ECDSA signature ({e})"))?;
    key.verify(payload, &sig).map_err(|_| {
        anyhow!("cosign signature does not verify with the given key (wrong key, or the payload was changed)")
    })?;
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| anyhow!("cosign signature payload is not JSON ({e})"))?;
    let named = v
        .pointer("/critical/image/docker-manifest-digest")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if named != image.as_str() {
        bail!("cosign signature is for {named}, not for the image {image} (mismatched subject)");
    }
    if v.pointer("/critical/type").and_then(Value::as_str) != Some(SIGNATURE_TYPE) {
        bail!("cosign signature payload: critical.type is not '{SIGNATURE_TYPE}'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;

    #[test]
    fn sign_and_verify() {
        let sk = SigningKey::from_slice(&[3; 32]).unwrap();
        let s = Signer::from_key(sk.clone());
        let img = Digest::of(b"img");
        let p = payload(&img, "");
        let sig = sign(&p, &s);
        verify(&p, &sig, sk.verifying_key(), &img).unwrap();
        let e = verify(&p, &sig, sk.verifying_key(), &Digest::of(b"other")).unwrap_err();
        assert!(e.to_string().contains("mismatched subject"), "{e}");
        let other = SigningKey::from_slice(&[4; 32]).unwrap();
        let e = verify(&p, &sig, other.verifying_key(), &img).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        let tampered = payload(&Digest::of(b"x"), "");
        assert!(verify(&tampered, &sig, sk.verifying_key(), &img).is_err());
    }
}
