//! The typed OCI model: digests validated once, media types as an enum,
//! descriptors, manifests, indexes and the image config. The build assembles these
//! and `verify`/`diff` read them back; untrusted documents are first checked
//! field by field in `source::spec`, which names what is wrong.
pub mod config;
pub mod digest;
pub mod manifest;
pub mod media_type;

pub use config::{History, ImageConfig, RootFs, RunConfig};
pub use digest::Digest;
pub use manifest::{Descriptor, Index, Manifest};
pub use media_type::MediaType;

/// Canonical JSON: no whitespace, object keys sorted at every level, so the same
/// content always has the same digest. Going through `serde_json::Value` (a
/// BTreeMap: serde_json's `preserve_order` is off) sorts struct fields as well, so
/// a typed document has exactly the bytes of the untyped one it replaced.
pub fn canonical<T: serde::Serialize + ?Sized>(doc: &T) -> Vec<u8> {
    serde_json::to_value(doc)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default()
}
