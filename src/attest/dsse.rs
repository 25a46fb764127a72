//! DSSE envelopes (github.com/secure-systems-lab/dsse): the signature covers the
//! pre-authentication encoding of payload type and payload, never the JSON around it.
use super::keys::Signer;
use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature as EcSig, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The payload type of an in-toto Statement.
pub const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 (standard, padded) of the payload bytes.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the ASN.1 DER ECDSA signature.
    pub sig: String,
}

/// PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

impl Envelope {
    pub fn sign(payload_type: &str, payload: &[u8], signer: &Signer) -> Envelope {
        Envelope {
            payload: B64.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![Signature {
                keyid: signer.keyid().to_string(),
                sig: B64.encode(signer.sign(&pae(payload_type, payload))),
            }],
        }
    }

    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        B64.decode(&self.payload)
            .map_err(|e| anyhow!("DSSE payload is not base64 ({e})"))
    }

    /// The payload, once one signature verifies with `key`. The error says whether no
    /// signature matched the key or the payload was changed after signing.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Vec<u8>> {
        let payload = self.payload_bytes()?;
        if self.signatures.is_empty() {
            bail!("the DSSE envelope has no signatures");
        }
        let msg = pae(&self.payload_type, &payload);
        for s in &self.signatures {
            let Ok(raw) = B64.decode(&s.sig) else {
                continue;
            };
            let Ok(sig) = EcSig::from_der(&raw) else {
                continue;
            };
            if key.verify(&msg, &sig).is_ok() {
                return Ok(payload);
            }
        }
        let ours = super::keys::keyid(key);
        if self.signatures.iter().any(|s| s.keyid == ours) {
            bail!("DSSE signature by key {} does not match the payload: the envelope was changed after signing", short(&ours));
        }
        bail!(
            "no DSSE signature verifies with the given key {} (signed by {})",
            short(&ours),
            self.signatures
                .iter()
                .map(|s| short(&s.keyid).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;

    fn signer(seed: u8) -> Signer {
        Signer::from_key(SigningKey::from_slice(&[seed; 32]).unwrap())
    }

    #[test]
    fn pae_matches_the_spec_example() {
        // The DSSE protocol document's test vector.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_verify_tamper_wrong_key() {
        let s = signer(1);
        let e = Envelope::sign(IN_TOTO_PAYLOAD, b"{\"a\":1}", &s);
        let vk = *SigningKey::from_slice(&[1; 32]).unwrap().verifying_key();
        assert_eq!(e.verify(&vk).unwrap(), b"{\"a\":1}");
        assert_eq!(
            e,
            Envelope::sign(IN_TOTO_PAYLOAD, b"{\"a\":1}", &s),
            "deterministic"
        );
        let mut t = e.clone();
        t.payload = B64.encode(b"{\"a\":2}");
        let msg = t.verify(&vk).unwrap_err().to_string();
        assert!(msg.contains("changed after signing"), "{msg}");
        let mut t = e.clone();
        t.payload_type = "text/plain".into();
        assert!(t.verify(&vk).is_err(), "the type is signed too");
        let other = *SigningKey::from_slice(&[2; 32]).unwrap().verifying_key();
        let msg = e.verify(&other).unwrap_err().to_string();
        assert!(msg.contains("no DSSE signature verifies"), "{msg}");
    }
}
