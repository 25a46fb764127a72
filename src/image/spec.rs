//! The JSON documents that describe an image, parsed strictly and checked against the
//! OCI image-spec 1.1 (and Docker schema2 and `docker save` for the Docker
//! equivalents) *before* any field is used. A digest becomes a file name only after
//! it is known to be `sha256:<64 hex>`; every error names the document and the field
//! (`index.json: manifests[0].size: ...`).
//!
//! JSON is read with a size cap, with serde_json's nesting limit (128) reported as
//! such, and with duplicate object keys refused: Go's encoding/json keeps the last
//! copy of a key and other readers the first, so such a document means two things.
use crate::digest::{quoted, sha256_digest};
use crate::oci::media_type::{
    MT_DOCKER_CONFIG, MT_DOCKER_LAYER, MT_DOCKER_LAYER_GZIP, MT_DOCKER_LIST, MT_DOCKER_MANIFEST,
    MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD,
    MT_OCI_MANIFEST,
};
use crate::oci::Digest;
use crate::platform::normalized_variant;
use anyhow::{anyhow, bail, Result};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub const MT_DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
pub const MT_DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Deprecated in image-spec 1.1 but still valid: readable when the blob is present.
pub const MT_OCI_LAYER_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const MT_OCI_LAYER_ND_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const MT_OCI_LAYER_ND_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Largest index, manifest or docker-archive `manifest.json` read: the 4 MiB that
/// the distribution spec lets registries refuse above.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config read (real ones are kilobytes; a long history stays far below).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Largest `oci-layout` file (it holds one short field).
pub const MAX_LAYOUT_FILE_BYTES: u64 = 64 << 10;
/// How many image indexes may sit between index.json (or a registry tag) and the
/// manifest: real multi-arch images use one.
pub const MAX_INDEX_NESTING: usize = 4;
/// serde_json's fixed limit on nested arrays and objects.
const JSON_DEPTH_LIMIT: usize = 128;

/// The annotation that tags a manifest in index.json.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

// ---------------------------------------------------------------------------
// Strict JSON

/// A JSON value read with duplicate object keys refused.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {} (readers disagree on which copy counts)",
                    quoted(&k)
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses `bytes` as one JSON document named `what` in errors.
pub fn parse_json(bytes: &[u8], what: &str, limit: u64) -> Result<Value> {
    if bytes.len() as u64 > limit {
        bail!(
            "{what}: {} bytes, more than the {limit} bytes allowed",
            bytes.len()
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict::deserialize(&mut de).and_then(|Strict(v)| de.end().map(|_| v));
    parsed.map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            anyhow!(
                "{what}: nesting too deep (more than {JSON_DEPTH_LIMIT} levels of arrays and objects, at line {} column {})",
                e.line(),
                e.column()
            )
        } else {
            anyhow!("{what}: invalid JSON: {e}")
        }
    })
}

// ---------------------------------------------------------------------------
// Field access with errors that say where

/// Where a value sits: the document and the path inside it (`manifests[0].digest`).
#[derive(Clone)]
struct At<'a> {
    doc: &'a str,
    path: String,
}

impl<'a> At<'a> {
    fn root(doc: &'a str) -> At<'a> {
        At {
            doc,
            path: String::new(),
        }
    }
    fn field(&self, key: &str) -> At<'a> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        At {
            doc: self.doc,
            path,
        }
    }
    fn item(&self, i: usize) -> At<'a> {
        At {
            doc: self.doc,
            path: format!("{}[{i}]", self.path),
        }
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(self.doc)
        } else {
            write!(f, "{}: {}", self.doc, self.path)
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object<'v>(v: &'v Value, at: &At) -> Result<&'v Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| anyhow!("{at}: expected a JSON object, found {}", kind(v)))
}

fn array<'v>(v: &'v Value, at: &At) -> Result<&'v Vec<Value>> {
    v.as_array()
        .ok_or_else(|| anyhow!("{at}: expected an array, found {}", kind(v)))
}

fn string<'v>(v: &'v Value, at: &At) -> Result<&'v str> {
    v.as_str()
        .ok_or_else(|| anyhow!("{at}: expected a string, found {}", kind(v)))
}

fn required<'v>(m: &'v Map<String, Value>, key: &str, at: &At) -> Result<&'v Value> {
    m.get(key)
        .ok_or_else(|| anyhow!("{at}: missing required field \"{key}\""))
}

/// An optional field; `null` counts as absent (what Go's encoding/json makes of it).
fn optional<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn opt_string<'v>(m: &'v Map<String, Value>, key: &str, at: &At) -> Result<Option<&'v str>> {
    optional(m, key)
        .map(|v| string(v, &at.field(key)))
        .transpose()
}

fn strings(v: &Value, at: &At) -> Result<Vec<String>> {
    array(v, at)?
        .iter()
        .enumerate()
        .map(|(i, s)| string(s, &at.item(i)).map(str::to_string))
        .collect()
}

fn string_map(v: &Value, at: &At) -> Result<BTreeMap<String, String>> {
    object(v, at)?
        .iter()
        .map(|(k, s)| Ok((k.clone(), string(s, &at.field(k))?.to_string())))
        .collect()
}

/// `schemaVersion` must be the integer 2 (image-spec 1.1 and Docker schema2 alike).
fn schema_version_2(m: &Map<String, Value>, at: &At) -> Result<()> {
    let v = required(m, "schemaVersion", at)?;
    if v.as_u64() != Some(2) {
        bail!(
            "{}: unsupported schemaVersion {v} (expected 2)",
            at.field("schemaVersion")
        );
    }
    Ok(())
}

/// RFC 6838 `type/subtype` (what image-spec requires of every mediaType).
pub fn valid_media_type(s: &str) -> bool {
    fn name(n: &str) -> bool {
        let b = n.as_bytes();
        !b.is_empty()
            && b.len() <= 127
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(c))
    }
    matches!(s.split_once('/'), Some((t, sub)) if name(t) && name(sub))
}

fn parse_media_type(v: &Value, at: &At) -> Result<String> {
    let s = string(v, at)?;
    if !valid_media_type(s) {
        bail!("{at}: {} is not a media type", quoted(s));
    }
    Ok(s.to_string())
}

/// A digest usable as a blob name (see [`crate::digest::digest_hex`]), validated here once.
fn parse_digest(v: &Value, at: &At) -> Result<Digest> {
    Digest::parse(string(v, at)?).map_err(|e| anyhow!("{at}: {e}"))
}

/// A size: a JSON integer in 0..=i64::MAX (image-spec: int64, and negative sizes mean nothing).
fn parse_size(v: &Value, at: &At) -> Result<u64> {
    match v.as_u64() {
        Some(n) if n <= i64::MAX as u64 => Ok(n),
        _ if v.as_i64().is_some_and(|n| n < 0) => {
            bail!("{at}: size must not be negative (found {v})")
        }
        _ => bail!("{at}: expected a non-negative integer, found {v}"),
    }
}

// ---------------------------------------------------------------------------
// Media types

/// What kind of image document a media type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Oci,
    Docker,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Oci => "OCI",
            Flavor::Docker => "Docker",
        }
    }
    fn config_type(self) -> &'static str {
        match self {
            Flavor::Oci => MT_OCI_CONFIG,
            Flavor::Docker => MT_DOCKER_CONFIG,
        }
    }
}

const OCI_LAYERS: &[&str] = &[
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_ZSTD,
    MT_OCI_LAYER_ND,
    MT_OCI_LAYER_ND_GZIP,
    MT_OCI_LAYER_ND_ZSTD,
];
const DOCKER_LAYERS: &[&str] = &[
    MT_DOCKER_LAYER_GZIP,
    MT_DOCKER_LAYER,
    MT_DOCKER_LAYER_FOREIGN_GZIP,
    MT_DOCKER_LAYER_FOREIGN,
];

fn layer_flavor(mt: &str) -> Option<Flavor> {
    if OCI_LAYERS.contains(&mt) {
        Some(Flavor::Oci)
    } else if DOCKER_LAYERS.contains(&mt) {
        Some(Flavor::Docker)
    } else {
        None
    }
}

fn config_flavor(mt: &str) -> Option<Flavor> {
    match mt {
        MT_OCI_CONFIG => Some(Flavor::Oci),
        MT_DOCKER_CONFIG => Some(Flavor::Docker),
        _ => None,
    }
}

/// The flavor of an image manifest media type.
pub fn manifest_flavor(mt: &str) -> Option<Flavor> {
    match mt {
        MT_OCI_MANIFEST => Some(Flavor::Oci),
        MT_DOCKER_MANIFEST => Some(Flavor::Docker),
        _ => None,
    }
}

/// Whether a media type names an image index (OCI) or manifest list (Docker).
pub fn is_index(mt: &str) -> bool {
    mt == MT_OCI_INDEX || mt == MT_DOCKER_LIST
}

/// Whether a descriptor in an index can lead to an image. Index entries of any other
/// type must be ignored (image-spec: "MUST ignore" unknown media types there).
pub fn is_image_entry(d: &Descriptor) -> bool {
    d.artifact_type.is_none()
        && (is_index(&d.media_type) || manifest_flavor(&d.media_type).is_some())
}

// ---------------------------------------------------------------------------
// Descriptors

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// An image-spec descriptor, validated.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub media_type: String,
    /// Validated once here: safe to use as `blobs/sha256/<hex>`.
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

fn parse_platform(v: &Value, at: &At) -> Result<Platform> {
    let m = object(v, at)?;
    let os = string(required(m, "os", at)?, &at.field("os"))?;
    let architecture = string(required(m, "architecture", at)?, &at.field("architecture"))?;
    let variant = opt_string(m, "variant", at)?;
    opt_string(m, "os.version", at)?;
    for key in ["os.features", "features"] {
        if let Some(v) = optional(m, key) {
            strings(v, &at.field(key))?;
        }
    }
    Ok(Platform {
        os: os.to_string(),
        architecture: architecture.to_string(),
        variant: variant.map(str::to_string),
    })
}

fn parse_descriptor(v: &Value, at: &At) -> Result<Descriptor> {
    let m = object(v, at)?;
    let media_type = parse_media_type(required(m, "mediaType", at)?, &at.field("mediaType"))?;
    let digest = parse_digest(required(m, "digest", at)?, &at.field("digest"))?;
    let size = parse_size(required(m, "size", at)?, &at.field("size"))?;
    if let Some(u) = optional(m, "urls") {
        strings(u, &at.field("urls"))?;
    }
    let annotations = optional(m, "annotations")
        .map(|a| string_map(a, &at.field("annotations")))
        .transpose()?
        .unwrap_or_default();
    let artifact_type = optional(m, "artifactType")
        .map(|a| parse_media_type(a, &at.field("artifactType")))
        .transpose()?;
    let platform = optional(m, "platform")
        .map(|p| parse_platform(p, &at.field("platform")))
        .transpose()?;
    // Embedded content must be exactly the described blob.
    if let Some(d) = optional(m, "data") {
        use base64::Engine;
        let at = at.field("data");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(string(d, &at)?)
            .map_err(|e| anyhow!("{at}: not base64: {e}"))?;
        if raw.len() as u64 != size || digest != sha256_digest(&raw) {
            bail!("{at}: embedded data does not match the descriptor's digest and size");
        }
    }
    Ok(Descriptor {
        media_type,
        digest,
        size,
        platform,
        annotations,
        artifact_type,
    })
}

/// An optional `mediaType` of a document must match the descriptor that led to it.
fn check_own_media_type(m: &Map<String, Value>, at: &At, expected: &str) -> Result<()> {
    if let Some(v) = optional(m, "mediaType") {
        let own = parse_media_type(v, &at.field("mediaType"))?;
        if own != expected {
            bail!(
                "{at}: mediaType {} does not match the descriptor's {}",
                quoted(&own),
                quoted(expected)
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Documents

/// The `oci-layout` file: `{"imageLayoutVersion": "1.0.0"}`.
pub fn parse_layout_file(bytes: &[u8]) -> Result<()> {
    let doc = "oci-layout";
    let v = parse_json(bytes, doc, MAX_LAYOUT_FILE_BYTES)?;
    let at = At::root(doc);
    let m = object(&v, &at)?;
    let version = string(
        required(m, "imageLayoutVersion", &at)?,
        &at.field("imageLayoutVersion"),
    )?;
    if version != "1.0.0" {
        bail!(
            "{doc}: imageLayoutVersion {} is not supported (expected \"1.0.0\")",
            quoted(version)
        );
    }
    Ok(())
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// Parses an index reached through a descriptor of type `media_type` (index.json:
/// the OCI index type).
pub fn parse_index(bytes: &[u8], doc: &str, media_type: &str) -> Result<Index> {
    if !is_index(media_type) {
        bail!(
            "{doc}: media type {} is not an image index",
            quoted(media_type)
        );
    }
    let v = parse_json(bytes, doc, MAX_MANIFEST_BYTES)?;
    let at = At::root(doc);
    let m = object(&v, &at)?;
    schema_version_2(m, &at)?;
    check_own_media_type(m, &at, media_type)?;
    let list = at.field("manifests");
    let manifests = array(required(m, "manifests", &at)?, &list)?
        .iter()
        .enumerate()
        .map(|(i, d)| parse_descriptor(d, &list.item(i)))
        .collect::<Result<Vec<_>>>()?;
    if let Some(a) = optional(m, "annotations") {
        string_map(a, &at.field("annotations"))?;
    }
    Ok(Index { manifests })
}

/// An image manifest: config and layers, all of one flavor.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub flavor: Flavor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// Parses a manifest reached through a descriptor of type `media_type`.
pub fn parse_manifest(bytes: &[u8], doc: &str, media_type: &str) -> Result<Manifest> {
    let flavor = manifest_flavor(media_type).ok_or_else(|| {
        anyhow!(
            "{doc}: media type {} is not an image manifest",
            quoted(media_type)
        )
    })?;
    let v = parse_json(bytes, doc, MAX_MANIFEST_BYTES)?;
    let at = At::root(doc);
    let m = object(&v, &at)?;
    schema_version_2(m, &at)?;
    check_own_media_type(m, &at, media_type)?;
    let cat = at.field("config");
    let config = parse_descriptor(required(m, "config", &at)?, &cat)?;
    match config_flavor(&config.media_type) {
        Some(f) if f == flavor => {}
        Some(f) => bail!(
            "{cat}: {} config media type {} in a {} manifest (Docker and OCI media types must not be mixed)",
            f.name(),
            quoted(&config.media_type),
            flavor.name()
        ),
        None => bail!(
            "{cat}: media type {} is not an image config (expected {}); this is not a container image",
            quoted(&config.media_type),
            quoted(flavor.config_type())
        ),
    }
    if config.size > MAX_CONFIG_BYTES {
        bail!(
            "{cat}: the config is {} bytes, more than the {MAX_CONFIG_BYTES} bytes allowed",
            config.size
        );
    }
    let lat = at.field("layers");
    let mut layers = Vec::new();
    for (i, l) in array(required(m, "layers", &at)?, &lat)?.iter().enumerate() {
        let lat = lat.item(i);
        let d = parse_descriptor(l, &lat)?;
        match layer_flavor(&d.media_type) {
            Some(f) if f == flavor => {}
            Some(f) => bail!(
                "{lat}: {} layer media type {} in a {} manifest (Docker and OCI media types must not be mixed)",
                f.name(),
                quoted(&d.media_type),
                flavor.name()
            ),
            None => bail!(
                "{lat}: unknown layer media type {}",
                quoted(&d.media_type)
            ),
        }
        layers.push(d);
    }
    if let Some(a) = optional(m, "annotations") {
        string_map(a, &at.field("annotations"))?;
    }
    Ok(Manifest {
        flavor,
        config,
        layers,
    })
}

/// An image config: the JSON as read, and its layer digests.
#[derive(Debug, Clone)]
pub struct Config {
    pub value: Value,
    pub diff_ids: Vec<String>,
}

/// Parses an image config (OCI and Docker share every field checked here).
pub fn parse_config(bytes: &[u8], doc: &str) -> Result<Config> {
    let value = parse_json(bytes, doc, MAX_CONFIG_BYTES)?;
    let at = At::root(doc);
    let m = object(&value, &at)?;
    for key in ["architecture", "os"] {
        string(required(m, key, &at)?, &at.field(key))?;
    }
    let rat = at.field("rootfs");
    let rootfs = object(required(m, "rootfs", &at)?, &rat)?;
    let ty = string(required(rootfs, "type", &rat)?, &rat.field("type"))?;
    if ty != "layers" {
        bail!(
            "{}: {} (expected \"layers\")",
            rat.field("type"),
            quoted(ty)
        );
    }
    let dat = rat.field("diff_ids");
    let diff_ids = array(required(rootfs, "diff_ids", &rat)?, &dat)?
        .iter()
        .enumerate()
        .map(|(i, d)| parse_digest(d, &dat.item(i)).map(String::from))
        .collect::<Result<Vec<_>>>()?;
    // The runtime settings the build reads and rewrites.
    if let Some(c) = optional(m, "config") {
        let cat = at.field("config");
        let c = object(c, &cat)?;
        for key in ["Env", "Entrypoint", "Cmd"] {
            if let Some(v) = optional(c, key) {
                strings(v, &cat.field(key))?;
            }
        }
        for key in ["User", "WorkingDir", "StopSignal"] {
            opt_string(c, key, &cat)?;
        }
        if let Some(l) = optional(c, "Labels") {
            string_map(l, &cat.field("Labels"))?;
        }
    }
    if let Some(h) = optional(m, "history") {
        let hat = at.field("history");
        for (i, e) in array(h, &hat)?.iter().enumerate() {
            let eat = hat.item(i);
            let e = object(e, &eat)?;
            if let Some(b) = optional(e, "empty_layer") {
                if !b.is_boolean() {
                    bail!(
                        "{}: expected a boolean, found {}",
                        eat.field("empty_layer"),
                        kind(b)
                    );
                }
            }
        }
    }
    Ok(Config { value, diff_ids })
}

/// One image of a docker-archive `manifest.json`.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// Archive-relative paths, normalized (see [`archive_path`]).
    pub config: String,
    pub layers: Vec<String>,
    pub repo_tags: Vec<String>,
}

/// A path inside an archive as the key the archive index uses: relative, `.` and
/// empty components dropped. `..` and absolute paths are refused (they could only
/// point outside the archive, and extractors differ on them), and so are control
/// characters (no image file needs them; they would reach the terminal in labels).
pub fn archive_path(p: &str) -> Result<String> {
    if p.starts_with('/') {
        bail!("{} is not a relative path inside the archive", quoted(p));
    }
    if p.chars().any(char::is_control) {
        bail!("{} contains control characters", quoted(p));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("{} leaves the archive (\"..\")", quoted(p)),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        bail!("{} names no file", quoted(p));
    }
    Ok(parts.join("/"))
}

/// Parses a docker-archive `manifest.json` (`docker save`, `podman save`).
pub fn parse_docker_manifest(bytes: &[u8]) -> Result<Vec<ArchiveImage>> {
    let doc = "manifest.json";
    let v = parse_json(bytes, doc, MAX_MANIFEST_BYTES)?;
    let at = At::root(doc);
    let mut out = Vec::new();
    let mut tags: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in array(&v, &at)?.iter().enumerate() {
        let at = at.item(i);
        let m = object(e, &at)?;
        let path = |v: &Value, at: &At| -> Result<String> {
            archive_path(string(v, at)?).map_err(|e| anyhow!("{at}: {e}"))
        };
        let config = path(required(m, "Config", &at)?, &at.field("Config"))?;
        let lat = at.field("Layers");
        let layers = array(required(m, "Layers", &at)?, &lat)?
            .iter()
            .enumerate()
            .map(|(j, l)| path(l, &lat.item(j)))
            .collect::<Result<Vec<_>>>()?;
        if layers.contains(&config) {
            bail!(
                "{at}: the config {} is also listed as a layer",
                quoted(&config)
            );
        }
        let repo_tags = match optional(m, "RepoTags") {
            Some(t) => strings(t, &at.field("RepoTags"))?,
            None => Vec::new(),
        };
        let mut own = BTreeSet::new();
        for t in &repo_tags {
            if !own.insert(t.as_str()) {
                continue;
            }
            if let Some(prev) = tags.insert(t.clone(), i) {
                bail!(
                    "{doc}: tag {} is given to both [{prev}] and [{i}]",
                    quoted(t)
                );
            }
        }
        out.push(ArchiveImage {
            config,
            layers,
            repo_tags,
        });
    }
    Ok(out)
}
/// Picks the manifest for `os/arch[/variant]` from an index. Entries that cannot
/// lead to an image (artifacts, unknown media types) are ignored, as image-spec says.
/// Without a variant any entry of the architecture will do; with one, variants are
/// compared as containerd normalizes them (`arm64/v8` is `arm64`).
pub fn select_platform<'a>(
    descs: &'a [Descriptor],
    platform: Option<&str>,
    what: &str,
) -> Result<&'a Descriptor> {
    let want = platform
        .map(str::to_string)
        .unwrap_or_else(|| format!("linux/{}", crate::platform::host_arch()));
    let mut parts = want.split('/');
    let (os, arch, variant) = (
        parts.next().unwrap_or("linux"),
        parts.next().unwrap_or(crate::platform::host_arch()),
        parts.next(),
    );
    let images: Vec<&Descriptor> = descs.iter().filter(|d| is_image_entry(d)).collect();
    let mut seen = Vec::new();
    for d in &images {
        if let Some(p) = &d.platform {
            seen.push(match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            });
            if p.os == os
                && p.architecture == arch
                && (variant.is_none()
                    || normalized_variant(arch, variant)
                        == normalized_variant(&p.architecture, p.variant.as_deref()))
            {
                return Ok(d);
            }
        }
    }
    if images.len() == 1 && images[0].platform.is_none() {
        return Ok(images[0]);
    }
    bail!(
        "{what}: no manifest for platform {want} (available: {})",
        if seen.is_empty() {
            "none declared".into()
        } else {
            seen.join(", ")
        }
    )
}

/// The config must list one diff_id per manifest layer (image-spec: rootfs.diff_ids
/// runs base-first, in step with the layers).
pub fn check_layer_count(config: &Config, layers: usize, what: &str) -> Result<()> {
    if config.diff_ids.len() != layers {
        bail!(
            "{what}: rootfs.diff_ids lists {} layers but the manifest has {layers}",
            config.diff_ids.len()
        );
    }
    Ok(())
}
