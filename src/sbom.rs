//! SBOM of the final image: every package the dpkg database says is installed (purged
//! packages are gone from it) plus the npm application under the recipe's artifacts
//! destination (its package.json and the packages of its package-lock.json that ship).
//!
//! Output is deterministic: sorted, no random UUIDs or clock. The SPDX
//! `documentNamespace` and the CycloneDX `serialNumber` are derived from a digest of
//! the rest of the document; `created` comes from SOURCE_DATE_EPOCH.
//!
//! [`attach_to_layout`] stores the SPDX document in an OCI layout as an artifact
//! manifest whose `subject` is the image (OCI 1.1 referrers, index fallback).
use crate::build_model::TOOL_VERSION;
use crate::digest::{digest_hex, sha256_digest};
use crate::dpkg::DpkgDb;
use crate::image::{canonical, rfc3339};
use crate::imageref::ImageRef;
use crate::index::index_base;
use crate::oci::manifest::EMPTY_JSON;
use crate::oci::{Descriptor, Digest, Index, Manifest, MediaType};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::rootfs::{normalize, IndexOptions, Kind, Rootfs};
use crate::source::{open_image, OpenOptions};
use crate::steps::purge::db_files;
use anyhow::{Context, Result};
use base64::Engine;
use clap::ValueEnum;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const MT_SPDX: &str = "application/spdx+json";
pub const MT_CYCLONEDX: &str = "application/vnd.cyclonedx+json";
pub use crate::oci::manifest::MT_EMPTY;
/// Namespace prefix of our SPDX documents (`.invalid`: a name, never fetched).
const NAMESPACE_BASE: &str = "https://nemoclaw.invalid/spdx/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Spdx,
    Cyclonedx,
}

/// One software component found in the image.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// deb | npm
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    pub purl: String,
    /// `Name <email>` as the package metadata says (dpkg Maintainer, npm author).
    pub supplier: Option<String>,
    /// An SPDX license expression, when the metadata has a plausible one.
    pub license: Option<String>,
    pub download: Option<String>,
    /// Hex SHA-512 of the distributed archive (npm `integrity`).
    pub sha512: Option<String>,
    pub source: Option<String>,
    pub summary: Option<String>,
    pub homepage: Option<String>,
    /// Where the component lives in the image (npm packages).
    pub path: Option<String>,
    /// The application itself (npm package.json at an artifacts root).
    pub application: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub components: Vec<Component>,
    /// (ID, VERSION_ID) from os-release.
    pub distro: Option<(String, String)>,
}

/// Percent-encodes a purl segment (RFC 3986 unreserved characters stay as they are).
fn pct(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

pub fn deb_purl(
    distro: Option<&(String, String)>,
    name: &str,
    version: &str,
    arch: &str,
) -> String {
    let ns = distro
        .map(|d| d.0.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "debian".into());
    let mut q = Vec::new();
    if !arch.is_empty() {
        q.push(format!("arch={}", pct(arch)));
    }
    if let Some((id, ver)) = distro {
        if !id.is_empty() && !ver.is_empty() {
            q.push(format!("distro={}-{}", pct(id), pct(ver)));
        }
    }
    let mut p = format!("pkg:deb/{}/{}@{}", pct(&ns), pct(name), pct(version));
    if !q.is_empty() {
        p.push('?');
        p.push_str(&q.join("&"));
    }
    p
}

pub fn npm_purl(name: &str, version: &str) -> String {
    let n = match name.strip_prefix('@').and_then(|s| s.split_once('/')) {
        Some((scope, n)) => format!("{}/{}", pct(&format!("@{scope}")), pct(n)),
        None => pct(name),
    };
    if version.is_empty() {
        format!("pkg:npm/{n}")
    } else {
        format!("pkg:npm/{n}@{}", pct(version))
    }
}

/// Accepts simple SPDX license expressions ("MIT", "(MIT OR Apache-2.0)", "GPL-2.0+");
/// anything else (free text, "SEE LICENSE IN ...", "UNLICENSED") is not asserted.
pub fn plausible_license(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() || t.len() > 200 || t.to_ascii_uppercase().contains("SEE LICENSE") {
        return None;
    }
    if t.eq_ignore_ascii_case("UNLICENSED") {
        return None;
    }
    let spaced = t.replace('(', " ( ").replace(')', " ) ");
    let mut want_id = true;
    let mut depth = 0i32;
    for tok in spaced.split_whitespace() {
        match tok {
            "(" if want_id => depth += 1,
            ")" if !want_id => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            "AND" | "OR" | "WITH" if !want_id => want_id = true,
            id if want_id
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ':'))
                && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) =>
            {
                want_id = false
            }
            _ => return None,
        }
    }
    if want_id || depth != 0 {
        return None;
    }
    Some(t.to_string())
}

fn read_text(fs: &Rootfs, path: &str) -> Option<String> {
    let real = fs.resolve(path)?;
    let n = fs.get(&real)?;
    if n.kind() != Kind::File {
        return None;
    }
    fs.read(&real)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn read_json(fs: &Rootfs, path: &str) -> Option<Value> {
    serde_json::from_str(&read_text(fs, path)?).ok()
}

pub fn os_release(fs: &Rootfs) -> Option<(String, String)> {
    let text = read_text(fs, "etc/os-release").or_else(|| read_text(fs, "usr/lib/os-release"))?;
    let mut id = String::new();
    let mut ver = String::new();
    for l in text.lines() {
        if let Some((k, v)) = l.split_once('=') {
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            match k.trim() {
                "ID" => id = v,
                "VERSION_ID" => ver = v,
                _ => {}
            }
        }
    }
    (!id.is_empty()).then_some((id, ver))
}

fn sri_sha512_hex(integrity: &str) -> Option<String> {
    integrity.split_whitespace().find_map(|part| {
        let b64 = part.strip_prefix("sha512-")?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .filter(|b| b.len() == 64)
            .map(hex::encode)
    })
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

fn npm_author(v: &Value) -> Option<String> {
    match v.get("author")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => {
            let name = o.get("name")?.as_str()?.to_string();
            Some(match o.get("email").and_then(|e| e.as_str()) {
                Some(e) => format!("{name} <{e}>"),
                None => name,
            })
        }
        _ => None,
    }
}

fn license_of(v: &Value) -> Option<String> {
    match v.get("license")? {
        Value::String(s) => plausible_license(s),
        Value::Object(o) => o
            .get("type")
            .and_then(|t| t.as_str())
            .and_then(plausible_license),
        _ => None,
    }
}

/// Application roots: explicit directories (the recipe's artifacts destination) plus
/// every directory outside `node_modules` that has both package.json and package-lock.json.
fn app_roots(fs: &Rootfs, explicit: &[String]) -> Vec<String> {
    let mut roots: BTreeSet<String> = explicit
        .iter()
        .filter_map(|d| normalize(d).ok())
        .filter(|d| fs.get(&format!("{d}/package.json")).is_some())
        .collect();
    for k in fs.nodes.keys() {
        if let Some(dir) = k.strip_suffix("/package-lock.json") {
            if !dir.split('/').any(|c| c == "node_modules")
                && fs.get(&format!("{dir}/package.json")).is_some()
            {
                roots.insert(dir.to_string());
            }
        }
    }
    roots.into_iter().collect()
}

fn npm_component(name: &str, entry: &Value, path: String, application: bool) -> Option<Component> {
    let version = str_field(entry, "version").unwrap_or_default();
    if name.is_empty() {
        return None;
    }
    Some(Component {
        ecosystem: "npm".into(),
        name: name.to_string(),
        purl: npm_purl(name, &version),
        version,
        arch: None,
        supplier: npm_author(entry),
        license: license_of(entry),
        download: str_field(entry, "resolved").filter(|r| r.contains("://")),
        sha512: str_field(entry, "integrity").and_then(|i| sri_sha512_hex(&i)),
        source: None,
        summary: str_field(entry, "description"),
        homepage: str_field(entry, "homepage"),
        path: Some(format!("/{path}")),
        application,
    })
}

/// npm packages of one application root.
fn npm_components(fs: &Rootfs, root: &str, out: &mut Vec<Component>) {
    let Some(pkg) = read_json(fs, &format!("{root}/package.json")) else {
        return;
    };
    let app_name = str_field(&pkg, "name")
        .unwrap_or_else(|| root.rsplit('/').next().unwrap_or("application").to_string());
    if let Some(c) = npm_component(&app_name, &pkg, root.to_string(), true) {
        out.push(c);
    }
    let Some(lock) = read_json(fs, &format!("{root}/package-lock.json")) else {
        return;
    };
    let has_modules = fs.get(&format!("{root}/node_modules")).is_some();
    let ships = |rel: &str, entry: &Value| {
        if has_modules {
            fs.get(&format!("{root}/{rel}")).is_some()
        } else {
            !entry.get("dev").and_then(|d| d.as_bool()).unwrap_or(false)
        }
    };
    if let Some(pkgs) = lock.get("packages").and_then(|p| p.as_object()) {
        // lockfileVersion 2 and 3.
        for (rel, entry) in pkgs {
            if rel.is_empty() || entry.get("link").and_then(|l| l.as_bool()) == Some(true) {
                continue;
            }
            let Some(idx) = rel.rfind("node_modules/") else {
                continue; // a workspace folder, not an installed package
            };
            let name = str_field(entry, "name")
                .unwrap_or_else(|| rel[idx + "node_modules/".len()..].to_string());
            if ships(rel, entry) {
                if let Some(c) = npm_component(&name, entry, format!("{root}/{rel}"), false) {
                    out.push(c);
                }
            }
        }
    } else if let Some(deps) = lock.get("dependencies").and_then(|d| d.as_object()) {
        // lockfileVersion 1: nested `dependencies`.
        let mut stack: Vec<(String, &serde_json::Map<String, Value>)> = vec![(String::new(), deps)];
        while let Some((prefix, map)) = stack.pop() {
            for (name, entry) in map {
                let rel = format!("{prefix}node_modules/{name}");
                if ships(&rel, entry) {
                    if let Some(c) = npm_component(name, entry, format!("{root}/{rel}"), false) {
                        out.push(c);
                    }
                }
                if let Some(sub) = entry.get("dependencies").and_then(|d| d.as_object()) {
                    stack.push((format!("{rel}/"), sub));
                }
            }
        }
    }
}

/// What the final filesystem contains: dpkg packages and the npm application(s).
pub fn inventory(fs: &Rootfs, app_dirs: &[String]) -> Result<Inventory> {
    let distro = os_release(fs);
    let mut comps = Vec::new();
    if fs.get("var/lib/dpkg/status").is_some() {
        let db = DpkgDb::parse(&db_files(fs)?).context("cannot read the dpkg database")?;
        for p in db.installed() {
            let source = (p.source != p.name || p.source_version != p.version)
                .then(|| format!("{} {}", p.source, p.source_version));
            comps.push(Component {
                ecosystem: "deb".into(),
                name: p.name.clone(),
                version: p.version.clone(),
                arch: (!p.arch.is_empty()).then(|| p.arch.clone()),
                purl: deb_purl(distro.as_ref(), &p.name, &p.version, &p.arch),
                supplier: p.maintainer.clone(),
                license: None,
                download: None,
                sha512: None,
                source,
                summary: p.description.clone(),
                homepage: p.homepage.clone(),
                path: None,
                application: false,
            });
        }
    }
    for root in app_roots(fs, app_dirs) {
        npm_components(fs, &root, &mut comps);
    }
    comps.sort_by(|a, b| {
        (&a.ecosystem, &a.name, &a.arch, &a.version, &a.path).cmp(&(
            &b.ecosystem,
            &b.name,
            &b.arch,
            &b.version,
            &b.path,
        ))
    });
    let mut seen = BTreeSet::new();
    comps.retain(|c| seen.insert(c.purl.clone()));
    Ok(Inventory {
        components: comps,
        distro,
    })
}

fn spdx_id(c: &Component) -> String {
    let clean: String = c
        .name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' {
                ch
            } else {
                '-'
            }
        })
        .collect();
    let h = sha256_digest(c.purl.as_bytes());
    format!(
        "SPDXRef-Package-{}-{}-{}",
        c.ecosystem,
        clean,
        &digest_hex(&h).unwrap_or_default()[..12]
    )
}

/// SPDX agent syntax from `Name <email>`: teams and lists are organizations.
fn spdx_agent(s: Option<&str>) -> String {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return "NOASSERTION".into();
    };
    let (name, email) = match s.split_once('<') {
        Some((n, e)) => (n.trim(), Some(e.trim_end_matches('>').trim())),
        None => (s, None),
    };
    let name: String = name.chars().filter(|c| *c != '(' && *c != ')').collect();
    let lower = name.to_lowercase();
    let org = [
        "maintainers",
        "team",
        "group",
        "project",
        "developers",
        "debian",
        "ubuntu",
        "list",
    ]
    .iter()
    .any(|w| lower.contains(w))
        || email.is_some_and(|e| e.contains("lists."));
    let kind = if org { "Organization" } else { "Person" };
    match email {
        Some(e) if !e.is_empty() => format!("{kind}: {} ({e})", name.trim()),
        _ => format!("{kind}: {}", name.trim()),
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn finish_pretty(v: &Value) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    Ok(b)
}

/// SPDX 2.3 JSON for an inventory.
pub fn spdx_document(inv: &Inventory, name: &str, created: &str) -> Result<Vec<u8>> {
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "supplier": "NOASSERTION",
    })];
    let mut rels = vec![
        json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Image"}),
    ];
    let apps: Vec<&Component> = inv.components.iter().filter(|c| c.application).collect();
    for c in &inv.components {
        let id = spdx_id(c);
        packages.push(spdx_package(c, &id));
        rels.push(json!({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        if let Some(app) = owning_application(c, &apps) {
            rels.push(json!({"spdxElementId": spdx_id(app), "relationshipType": "DEPENDS_ON", "relatedSpdxElement": id}));
        }
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: nemoclaw-build-{TOOL_VERSION}")],
        },
        "packages": packages,
        "relationships": rels,
    });
    if let Some((id, ver)) = &inv.distro {
        doc["comment"] = json!(format!("Operating system: {id} {ver}").trim().to_string());
    }
    let digest = sha256_digest(&canonical(&doc));
    doc["documentNamespace"] = json!(format!(
        "{NAMESPACE_BASE}{}-{}",
        slug(name),
        digest_hex(&digest)?
    ));
    finish_pretty(&doc)
}

/// The application whose tree holds the npm dependency `c` (None for anything
/// else): the SBOM says the application depends on it.
fn owning_application<'a>(c: &Component, apps: &[&'a Component]) -> Option<&'a Component> {
    if c.ecosystem != "npm" || c.application {
        return None;
    }
    let path = c.path.clone().unwrap_or_default();
    apps.iter().copied().find(|a| {
        a.path
            .as_deref()
            .is_some_and(|ap| path.starts_with(&format!("{ap}/")))
    })
}

/// One SPDX package: the component's known fields, NOASSERTION for the rest.
fn spdx_package(c: &Component, id: &str) -> Value {
    let mut p = json!({
        "SPDXID": id,
        "name": c.name,
        "downloadLocation": c.download.clone().unwrap_or_else(|| "NOASSERTION".into()),
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": c.license.clone().unwrap_or_else(|| "NOASSERTION".into()),
        "copyrightText": "NOASSERTION",
        "supplier": spdx_agent(c.supplier.as_deref()),
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": c.purl}],
    });
    if !c.version.is_empty() {
        p["versionInfo"] = json!(c.version);
    }
    if let Some(s) = &c.summary {
        p["summary"] = json!(s);
    }
    if let Some(h) = &c.homepage {
        p["homepage"] = json!(h);
    }
    if let Some(s) = &c.source {
        p["sourceInfo"] = json!(format!("built package from: {s}"));
    }
    if let Some(h) = &c.sha512 {
        p["checksums"] = json!([{"algorithm": "SHA512", "checksumValue": h}]);
    }
    if c.application {
        p["primaryPackagePurpose"] = json!("APPLICATION");
    }
    let mut comment = Vec::new();
    if let Some(a) = &c.arch {
        comment.push(format!("architecture: {a}"));
    }
    if let Some(path) = &c.path {
        comment.push(format!("location: {path}"));
    }
    if !comment.is_empty() {
        p["comment"] = json!(comment.join("; "));
    }
    p
}

/// CycloneDX 1.5 JSON for an inventory.
pub fn cyclonedx_document(inv: &Inventory, name: &str, created: &str) -> Result<Vec<u8>> {
    let mut comps = Vec::new();
    let mut app_deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let apps: Vec<&Component> = inv.components.iter().filter(|c| c.application).collect();
    for c in &inv.components {
        comps.push(cyclonedx_component(c));
        if let Some(a) = owning_application(c, &apps) {
            app_deps
                .entry(a.purl.clone())
                .or_default()
                .push(c.purl.clone());
        }
    }
    let mut deps = vec![
        json!({"ref": "image", "dependsOn": inv.components.iter().map(|c| c.purl.clone()).collect::<Vec<_>>()}),
    ];
    for (app, d) in app_deps {
        deps.push(json!({"ref": app, "dependsOn": d}));
    }
    let mut doc = json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {"components": [{"type": "application", "name": "nemoclaw-build", "version": TOOL_VERSION}]},
            "component": {"type": "container", "bom-ref": "image", "name": name},
        },
        "components": comps,
        "dependencies": deps,
    });
    doc["serialNumber"] = json!(serial_number(&doc)?);
    finish_pretty(&doc)
}

/// One CycloneDX component: the component's known fields, references and the
/// nemoclaw properties (arch, source package, location).
fn cyclonedx_component(c: &Component) -> Value {
    let mut o = json!({
        "type": if c.application { "application" } else { "library" },
        "bom-ref": c.purl,
        "name": c.name,
        "purl": c.purl,
    });
    if !c.version.is_empty() {
        o["version"] = json!(c.version);
    }
    if let Some(s) = &c.supplier {
        o["publisher"] = json!(s);
    }
    if let Some(l) = &c.license {
        o["licenses"] = json!([{"expression": l}]);
    }
    if let Some(h) = &c.sha512 {
        o["hashes"] = json!([{"alg": "SHA-512", "content": h}]);
    }
    if let Some(s) = &c.summary {
        o["description"] = json!(s);
    }
    let mut refs = Vec::new();
    if let Some(d) = &c.download {
        refs.push(json!({"type": "distribution", "url": d}));
    }
    if let Some(h) = &c.homepage {
        refs.push(json!({"type": "website", "url": h}));
    }
    if !refs.is_empty() {
        o["externalReferences"] = json!(refs);
    }
    let mut props = Vec::new();
    if let Some(a) = &c.arch {
        props.push(json!({"name": "nemoclaw:arch", "value": a}));
    }
    if let Some(s) = &c.source {
        props.push(json!({"name": "nemoclaw:source", "value": s}));
    }
    if let Some(p) = &c.path {
        props.push(json!({"name": "nemoclaw:location", "value": p}));
    }
    if !props.is_empty() {
        o["properties"] = json!(props);
    }
    o
}

/// A name-based (version 5 style) UUID URN from the document's own digest, so
/// the same inventory always gets the same serial number.
fn serial_number(doc: &Value) -> Result<String> {
    let h = sha256_digest(&canonical(doc));
    let h = digest_hex(&h)?;
    let variant = ["8", "9", "a", "b"][usize::from_str_radix(&h[16..17], 16).unwrap_or(0) % 4];
    Ok(format!(
        "urn:uuid:{}-{}-5{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    ))
}

/// SPDX 2.3 JSON of a final filesystem; npm applications are found by their lockfiles.
pub fn spdx(fs: &Rootfs, name: &str, created: &str) -> Result<Vec<u8>> {
    spdx_document(&inventory(fs, &[])?, name, created)
}

/// CycloneDX 1.5 JSON of a final filesystem.
pub fn cyclonedx(fs: &Rootfs, name: &str, created: &str) -> Result<Vec<u8>> {
    cyclonedx_document(&inventory(fs, &[])?, name, created)
}

/// The document name: the image title label, else the recipe name, else "image".
pub fn image_name(config: &Value, recipe: Option<&Recipe>) -> String {
    config
        .pointer("/config/Labels")
        .and_then(|l| l.get("org.opencontainers.image.title"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .or_else(|| recipe.and_then(|r| r.name.clone()))
        .unwrap_or_else(|| "image".into())
}

pub fn app_dirs(recipe: &Recipe) -> Vec<String> {
    recipe
        .artifacts
        .iter()
        .filter_map(|a| normalize(&a.dest).ok())
        .collect()
}

/// The SPDX document `build --sbom` writes: the final model after the steps.
pub fn for_build(fs: &Rootfs, config: &Value, recipe: &Recipe, epoch: u64) -> Result<Vec<u8>> {
    Ok(documents_for_build(fs, config, recipe, epoch, false)?.0)
}

/// The SPDX document of [`for_build`] and, when asked, the CycloneDX one (for
/// `--attest cyclonedx`) from the same inventory.
pub fn documents_for_build(
    fs: &Rootfs,
    config: &Value,
    recipe: &Recipe,
    epoch: u64,
    cyclonedx: bool,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let inv = inventory(fs, &app_dirs(recipe))?;
    let (name, created) = (image_name(config, Some(recipe)), rfc3339(epoch));
    let cdx = match cyclonedx {
        true => Some(cyclonedx_document(&inv, &name, &created)?),
        false => None,
    };
    Ok((spdx_document(&inv, &name, &created)?, cdx))
}

/// The SPDX document `build --sbom` writes (and the CycloneDX one when asked), read
/// back from the staged layer blobs (so a cached build gets the same document as an
/// uncached one).
pub fn for_staged_image(
    blobs: &Path,
    layers: &[crate::build_model::LayerSummary],
    config: &Value,
    recipe: &Recipe,
    epoch: u64,
    progress: &Progress,
    cyclonedx: bool,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let mut ls = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let loc = crate::source::BlobLocation::whole(&blobs.join(digest_hex(&l.digest)?))?;
        ls.push(crate::source::LayerBlob::new(
            i,
            loc,
            l.media_type.as_str(),
            Some(l.digest.to_string()),
            Some(l.diff_id.to_string()),
        )?);
    }
    let mut img = crate::source::BaseImage {
        name: "staged image".into(),
        manifest_digest: None,
        config: config.clone(),
        layers: ls,
        deferred: None,
        _scratch: None,
    };
    let opts = IndexOptions {
        capture: crate::diff::capture_for_inspection,
        hash_contents: false,
        ..Default::default()
    };
    let fs = index_base(&mut img, &opts, progress)?;
    documents_for_build(&fs, config, recipe, epoch, cyclonedx)
}

/// Adds the SPDX document to an OCI layout directory as an artifact manifest that
/// refers to the image manifest (`subject`), listed in index.json without a ref name
/// so tag lookups still select the image. Returns the artifact manifest digest.
pub fn attach_to_layout(
    dir: &Path,
    subject_digest: &str,
    subject_size: u64,
    sbom: &[u8],
    created: &str,
) -> Result<String> {
    let blobs = dir.join("blobs/sha256");
    let put = |bytes: &[u8]| -> Result<String> {
        let d = sha256_digest(bytes);
        let p = blobs.join(digest_hex(&d)?);
        if !p.exists() {
            let tmp = blobs.join(format!(".tmp-{}", digest_hex(&d)?));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &p)?;
        }
        Ok(d)
    };
    put(EMPTY_JSON)?;
    let sbom_digest = Digest::parse(&put(sbom)?)?;
    let mut manifest = Manifest::artifact(
        MediaType::from(MT_SPDX),
        vec![Descriptor::new(
            MediaType::from(MT_SPDX),
            sbom_digest,
            sbom.len() as u64,
        )],
        [(
            "org.opencontainers.image.created".to_string(),
            created.to_string(),
        )]
        .into(),
    );
    manifest.subject = Some(Descriptor::new(
        MediaType::OciManifest,
        Digest::parse(subject_digest)?,
        subject_size,
    ));
    let mb = canonical(&manifest);
    let md = put(&mb)?;
    let index_path = dir.join("index.json");
    let bytes = std::fs::read(&index_path)
        .with_context(|| format!("cannot read {}", index_path.display()))?;
    let mut index: Index = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not an image index", index_path.display()))?;
    // Replace an SBOM attached earlier to the same subject.
    let spdx = MediaType::from(MT_SPDX);
    index
        .manifests
        .retain(|d| d.artifact_type.as_ref() != Some(&spdx));
    let mut desc = Descriptor::new(MediaType::OciManifest, Digest::parse(&md)?, mb.len() as u64);
    desc.artifact_type = Some(spdx);
    index.manifests.push(desc);
    let tmp = dir.join(".index.json.tmp");
    std::fs::write(&tmp, canonical(&index))?;
    std::fs::rename(&tmp, &index_path)?;
    Ok(md)
}

/// What `sbom` is asked for.
pub struct SbomRequest<'a> {
    pub image: &'a str,
    pub platform: Option<String>,
    pub recipe: &'a Recipe,
    pub format: Format,
    /// Document creation time; default: the image config's `created`.
    pub source_date_epoch: Option<u64>,
    /// Document name; default: the image title label, else the recipe name.
    pub name: Option<String>,
}

/// An SBOM document of an image.
pub struct SbomDocument {
    pub bytes: Vec<u8>,
    pub components: usize,
    /// Which platform of an image index was read (see [`crate::source::index_note`]).
    pub note: Option<String>,
}

/// Reads `req.image` (one pass per layer) and writes its SBOM document.
pub fn of_image(req: &SbomRequest, progress: &Progress) -> Result<SbomDocument> {
    let r = ImageRef::parse(req.image)?;
    let mut base = open_image(
        &r,
        &OpenOptions {
            platform: req.platform.clone(),
            registry: crate::registry::RegistryOptions {
                progress: progress.clone(),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let note = crate::source::index_note(&r, &base.config);
    let opts = IndexOptions {
        capture: crate::diff::capture_for_inspection,
        hash_contents: false,
        ..Default::default()
    };
    let fs = index_base(&mut base, &opts, progress)?;
    let created = match req.source_date_epoch {
        Some(e) => rfc3339(e),
        None => base
            .config
            .get("created")
            .and_then(|c| c.as_str())
            .filter(|c| c.len() == 20 && c.ends_with('Z'))
            .map(str::to_string)
            .unwrap_or_else(|| rfc3339(0)),
    };
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| image_name(&base.config, Some(req.recipe)));
    let inv = inventory(&fs, &app_dirs(req.recipe))?;
    let bytes = match req.format {
        Format::Spdx => spdx_document(&inv, &name, &created)?,
        Format::Cyclonedx => cyclonedx_document(&inv, &name, &created)?,
    };
    Ok(SbomDocument {
        bytes,
        components: inv.components.len(),
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::Node;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\nSection: libs\nInstalled-Size: 100\nMaintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\nArchitecture: amd64\nMulti-Arch: same\nSource: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library: Shared libraries\n Long text.\nHomepage: https://www.gnu.org/software/libc/libc.html\n\nPackage: gcc-12\nStatus: purge ok not-installed\nPriority: optional\nArchitecture: amd64\nVersion: 12.2.0-14\n\nPackage: libstdc++6\nStatus: install ok installed\nMaintainer: Jane Doe <jane@example.org>\nArchitecture: amd64\nVersion: 1:12.2.0-14\nDescription: GNU Standard C++ Library v3\n\nPackage: old-conf\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1.0\n";

    fn fixture() -> Rootfs {
        fixture_with_status(STATUS)
    }

    /// The fixture with the dpkg status stanzas in the reverse order.
    fn fixture_reordered() -> Rootfs {
        let mut stanzas: Vec<&str> = STATUS.trim_end().split("\n\n").collect();
        stanzas.reverse();
        fixture_with_status(&(stanzas.join("\n\n") + "\n"))
    }

    fn fixture_with_status(status: &str) -> Rootfs {
        let mut fs = Rootfs::new();
        let f = |b: &str| Node::file(0o644, 0, 0, b.as_bytes().to_vec());
        fs.insert("var/lib/dpkg/status", f(status)).unwrap();
        fs.insert("usr/lib/os-release", f("ID=debian\nVERSION_ID=\"12\"\n"))
            .unwrap();
        fs.insert("etc/os-release", Node::symlink("../usr/lib/os-release"))
            .unwrap();
        fs.insert(
            "opt/app/package.json",
            f(r#"{"name":"nemoclaw","version":"0.1.0","license":"Apache-2.0"}"#),
        )
        .unwrap();
        fs.insert("opt/app/package-lock.json", f(r#"{"name":"nemoclaw","lockfileVersion":3,"packages":{
            "":{"name":"nemoclaw","version":"0.1.0"},
            "node_modules/left-pad":{"version":"1.3.0","resolved":"https://registry.example/left-pad-1.3.0.tgz","integrity":"sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEw7ky5ITS/bbVCHn+WOvdy5MWv4KANr5NHA6TN+iNK5W3Q==","license":"WTFPL"},
            "node_modules/@scope/x":{"version":"2.0.0","license":"SEE LICENSE IN LICENSE"},
            "node_modules/devonly":{"version":"1.0.0","dev":true}}}"#)).unwrap();
        fs.insert("opt/app/node_modules/left-pad/index.js", f("x"))
            .unwrap();
        fs.insert("opt/app/node_modules/@scope/x/index.js", f("x"))
            .unwrap();
        fs
    }

    #[test]
    fn purls_are_encoded() {
        let d = ("debian".to_string(), "12".to_string());
        assert_eq!(
            deb_purl(Some(&d), "libstdc++6", "1:12.2.0-14", "amd64"),
            "pkg:deb/debian/libstdc%2B%2B6@1%3A12.2.0-14?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            deb_purl(None, "bash", "5.2.15-2+b2", "amd64"),
            "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64"
        );
        assert_eq!(npm_purl("@scope/x", "2.0.0"), "pkg:npm/%40scope/x@2.0.0");
        assert_eq!(npm_purl("left-pad", "1.3.0"), "pkg:npm/left-pad@1.3.0");
    }

    #[test]
    fn license_filter() {
        assert_eq!(plausible_license("MIT").as_deref(), Some("MIT"));
        assert!(plausible_license("(MIT OR Apache-2.0)").is_some());
        assert!(plausible_license("GPL-2.0+ WITH Classpath-exception-2.0").is_some());
        assert!(plausible_license("SEE LICENSE IN x").is_none());
        assert!(plausible_license("MIT OR").is_none());
        assert!(plausible_license("Public Domain").is_none());
        assert!(plausible_license("UNLICENSED").is_none());
    }

    #[test]
    fn inventory_has_installed_debs_and_shipped_npm_packages() {
        let fs = fixture();
        let inv = inventory(&fs, &["/opt/app".into()]).unwrap();
        let names: Vec<String> = inv
            .components
            .iter()
            .map(|c| format!("{}:{}", c.ecosystem, c.name))
            .collect();
        assert_eq!(
            names,
            vec![
                "deb:libc6",
                "deb:libstdc++6",
                "npm:@scope/x",
                "npm:left-pad",
                "npm:nemoclaw"
            ]
        );
        let lp = inv
            .components
            .iter()
            .find(|c| c.name == "left-pad")
            .unwrap();
        assert_eq!(lp.license.as_deref(), Some("WTFPL"));
        assert_eq!(lp.sha512.as_deref().map(str::len), Some(128));
        // Found by lockfile even without the explicit dir.
        assert_eq!(inventory(&fs, &[]).unwrap().components.len(), 5);
    }

    #[test]
    fn spdx_is_deterministic_and_well_formed() {
        let fs = fixture();
        let a = spdx(&fs, "nemoclaw-sandbox", "2023-11-14T22:13:20Z").unwrap();
        // The same packages listed in another order: the same bytes.
        let b = spdx(
            &fixture_reordered(),
            "nemoclaw-sandbox",
            "2023-11-14T22:13:20Z",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "the SPDX document depends on the order of the dpkg status file"
        );
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert!(v["documentNamespace"]
            .as_str()
            .unwrap()
            .starts_with("https://nemoclaw.invalid/spdx/nemoclaw-sandbox-"));
        let pk = v["packages"].as_array().unwrap();
        assert_eq!(pk.len(), 6);
        let ids: BTreeSet<&str> = pk.iter().map(|p| p["SPDXID"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 6);
        for id in &ids {
            assert!(id
                .trim_start_matches("SPDXRef-")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        }
        let libc = pk.iter().find(|p| p["name"] == "libc6").unwrap();
        assert_eq!(
            libc["supplier"],
            "Organization: GNU Libc Maintainers (debian-glibc@lists.debian.org)"
        );
        assert_eq!(
            libc["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert!(!String::from_utf8_lossy(&a).contains("gcc-12"));
        assert!(!String::from_utf8_lossy(&a).contains("old-conf"));
        let c = spdx(&fs, "nemoclaw-sandbox", "2023-11-14T22:13:21Z").unwrap();
        let vc: Value = serde_json::from_slice(&c).unwrap();
        assert_ne!(vc["documentNamespace"], v["documentNamespace"]);
        // Another package version: another namespace (it is derived from the content).
        let other = fixture_with_status(&STATUS.replace("2.36-9+deb12u4", "2.36-9+deb12u5"));
        let d = spdx(&other, "nemoclaw-sandbox", "2023-11-14T22:13:20Z").unwrap();
        let vd: Value = serde_json::from_slice(&d).unwrap();
        assert_ne!(vd["documentNamespace"], v["documentNamespace"]);
    }

    #[test]
    fn cyclonedx_is_deterministic() {
        let fs = fixture();
        let a = cyclonedx(&fs, "img", "2023-11-14T22:13:20Z").unwrap();
        // The same packages listed in another order: the same bytes.
        let b = cyclonedx(&fixture_reordered(), "img", "2023-11-14T22:13:20Z").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "the CycloneDX document depends on the order of the dpkg status file"
        );
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["specVersion"], "1.5");
        let sn = v["serialNumber"].as_str().unwrap();
        assert_eq!(sn.len(), "urn:uuid:".len() + 36, "{sn}");
        // A version-5 style UUID derived from the content: another version, another serial.
        assert_eq!(&sn["urn:uuid:".len() + 14..][..1], "5", "{sn}");
        let other = fixture_with_status(&STATUS.replace("1:12.2.0-14", "1:12.2.0-15"));
        let c = cyclonedx(&other, "img", "2023-11-14T22:13:20Z").unwrap();
        let vc: Value = serde_json::from_slice(&c).unwrap();
        assert_ne!(vc["serialNumber"], v["serialNumber"]);
        let names: Vec<&str> = v["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["libc6", "libstdc++6", "@scope/x", "left-pad", "nemoclaw"],
            "components in a stable order"
        );
        assert!(
            !names.contains(&"gcc-12") && !names.contains(&"old-conf"),
            "{names:?}"
        );
    }

    #[test]
    fn attach_adds_an_untagged_referrer() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let subject = sha256_digest(b"subject");
        let idx = json!({"schemaVersion": 2, "manifests": [{"mediaType": crate::source::MT_OCI_MANIFEST, "digest": subject, "size": 3, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
        std::fs::write(dir.join("index.json"), canonical(&idx)).unwrap();
        let md = attach_to_layout(dir, &subject, 3, b"{}\n", "2023-11-14T22:13:20Z").unwrap();
        // Twice: replaced, not duplicated.
        let md2 = attach_to_layout(dir, &subject, 3, b"{}\n", "2023-11-14T22:13:20Z").unwrap();
        assert_eq!(md, md2);
        // The exact bytes of the referrer manifest and the index.
        assert_eq!(
            md,
            "sha256:a81f557bda23ab69cc2296b430dd129b2cfcd8422f08075c909d2734183ddc77"
        );
        let index = std::fs::read(dir.join("index.json")).unwrap();
        assert_eq!(
            sha256_digest(&index),
            "sha256:c8b1f65344065fe711a01dff3d86930c19be2cf3079fd8600181053692fe1a3e"
        );
        let idx: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let m = idx["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[1].get("annotations").is_none());
        let man: Value = serde_json::from_slice(
            &std::fs::read(dir.join("blobs/sha256").join(digest_hex(&md).unwrap())).unwrap(),
        )
        .unwrap();
        assert_eq!(man["subject"]["digest"], subject.as_str());
        assert_eq!(
            man["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
