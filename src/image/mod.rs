//! Image access below every transport: a [`BaseImage`] and its layer blobs
//! ([`base`]), the image documents parsed strictly ([`spec`]), and JSON helpers:
//! canonical serialization (see [`crate::oci::canonical`]; the typed documents live
//! in `crate::oci`) and RFC 3339 timestamps. The transports (`source`, `registry`)
//! build on this and not on each other.
pub mod base;
pub mod spec;

pub use base::{
    sniff_compression, BaseImage, BlobLocation, Compression, DeferredLayers, LayerBlob,
    LayerDescriptor, Tee, TeeReader, Tees, ThreadedDecoder,
};

pub use crate::oci::canonical;

/// RFC 3339 UTC without fractions, from a Unix timestamp (no clock involved).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86400) as i64;
    let secs = epoch % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// A descriptor as JSON, for tests that write image layouts by hand.
#[cfg(test)]
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn canonical_sorts_keys() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).unwrap();
        assert_eq!(canonical(&v), br#"{"a":{"c":3,"d":2},"b":1}"#.to_vec());
    }
}
