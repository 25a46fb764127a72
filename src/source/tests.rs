//! Hostile and malformed image layouts, OCI archives and docker-archives: each must
//! fail with an error that names the document, the field and the reason.
use super::spec::{self, parse_config, parse_docker_manifest, parse_index, parse_manifest};
use super::{
    docker_archive, oci, BaseImage, BlobLocation, DeferredLayers, LayerBlob, OpenOptions,
    MT_OCI_INDEX, MT_OCI_LAYER, MT_OCI_MANIFEST,
};
use crate::digest::sha256_digest;
use crate::testutil::TarBuilder;
use serde_json::{json, Value};
use std::path::Path;

const MT_MANIFEST: &str = MT_OCI_MANIFEST;
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn layer() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hostname", b"box\n", 0o644)
        .build()
}

fn put(dir: &Path, bytes: &[u8]) -> String {
    let d = sha256_digest(bytes);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
        bytes,
    )
    .unwrap();
    d
}

fn desc(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

type Edit = Box<dyn Fn(&mut Value)>;

/// Changes made to a valid one-layer layout while it is written: each document can
/// be edited as JSON before it is hashed, so digests stay consistent unless a test
/// breaks them on purpose.
#[derive(Default)]
struct Edits {
    config: Option<Edit>,
    manifest: Option<Edit>,
    index: Option<Edit>,
    index_bytes: Option<Vec<u8>>,
    manifest_bytes: Option<Vec<u8>>,
    oci_layout: Option<Vec<u8>>,
}

/// Writes the layout; returns the manifest digest.
fn write_layout(dir: &Path, e: Edits) -> String {
    let l = layer();
    let ld = put(dir, &l);
    let mut config = json!({"architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [ld]}});
    if let Some(f) = &e.config {
        f(&mut config);
    }
    let cb = serde_json::to_vec(&config).unwrap();
    let cd = put(dir, &cb);
    let mut manifest = json!({"schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": desc(MT_CONFIG, &cd, cb.len()),
        "layers": [desc(MT_LAYER, &ld, l.len())]});
    if let Some(f) = &e.manifest {
        f(&mut manifest);
    }
    let mb = e
        .manifest_bytes
        .unwrap_or_else(|| serde_json::to_vec(&manifest).unwrap());
    let md = put(dir, &mb);
    let mut index = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
        "manifests": [{"mediaType": MT_MANIFEST, "digest": md, "size": mb.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    if let Some(f) = &e.index {
        f(&mut index);
    }
    let ib = e
        .index_bytes
        .unwrap_or_else(|| serde_json::to_vec(&index).unwrap());
    std::fs::write(dir.join("index.json"), ib).unwrap();
    std::fs::write(
        dir.join("oci-layout"),
        e.oci_layout
            .unwrap_or_else(|| br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    )
    .unwrap();
    md
}

fn open_dir(dir: &Path, tag: Option<&str>) -> anyhow::Result<super::BaseImage> {
    oci::open_layout_dir(dir, tag, &OpenOptions::default())
}

/// Writes a layout with `e` and returns the full error chain of opening it.
fn layout_error(e: Edits) -> String {
    let t = tempfile::tempdir().unwrap();
    write_layout(t.path(), e);
    match open_dir(t.path(), None) {
        Ok(_) => panic!("the layout was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_has(msg: &str, want: &str) {
    assert!(msg.contains(want), "expected {want:?} in:\n{msg}");
}

#[test]
fn valid_layout_opens() {
    let t = tempfile::tempdir().unwrap();
    let md = write_layout(t.path(), Edits::default());
    let img = open_dir(t.path(), Some("latest")).unwrap();
    assert_eq!(img.manifest_digest.as_deref(), Some(md.as_str()));
    assert_eq!(img.layers.len(), 1);
}

// --- issue 12 item 23: deep JSON and path-like digests ------------------------

#[test]
fn deeply_nested_index_json_says_nesting_too_deep() {
    let deep = "[".repeat(100_000).into_bytes();
    let msg = layout_error(Edits {
        index_bytes: Some(deep),
        ..Default::default()
    });
    assert_has(&msg, "index.json: nesting too deep");
    assert!(!msg.contains("serde"), "{msg}");
}

#[test]
fn deeply_nested_config_and_manifest_are_named() {
    let mut v = json!(1);
    for _ in 0..200 {
        v = json!([v]);
    }
    let msg = layout_error(Edits {
        config: Some(Box::new(move |c| c["history"] = v.clone())),
        ..Default::default()
    });
    assert_has(&msg, "config sha256:");
    assert_has(&msg, "nesting too deep");
    let msg = layout_error(Edits {
        manifest_bytes: Some(
            format!("{}{}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes(),
        ),
        ..Default::default()
    });
    assert_has(&msg, "manifest sha256:");
    assert_has(&msg, "nesting too deep");
}

#[test]
fn traversal_digest_in_index_is_refused_before_use() {
    let msg = layout_error(Edits {
        index: Some(Box::new(|i| {
            i["manifests"][0]["digest"] = json!("sha256:../../../../etc/passwd")
        })),
        ..Default::default()
    });
    assert_has(
        &msg,
        r#"index.json: manifests[0].digest: invalid digest "sha256:../../../../etc/passwd" (expected sha256:<64 hex>)"#,
    );
}

#[test]
fn bad_digests_in_manifest_and_config_name_the_field() {
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            m["layers"][0]["digest"] = json!("sha256:../../../../etc/passwd")
        })),
        ..Default::default()
    });
    assert_has(&msg, "manifest sha256:");
    assert_has(
        &msg,
        r#": layers[0].digest: invalid digest "sha256:../../../../etc/passwd" (expected sha256:<64 hex>)"#,
    );
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| m["config"]["digest"] = json!("sha256:ABCD"))),
        ..Default::default()
    });
    assert_has(&msg, r#"config.digest: invalid digest "sha256:ABCD""#);
    let msg = layout_error(Edits {
        config: Some(Box::new(|c| c["rootfs"]["diff_ids"][0] = json!("md5:x"))),
        ..Default::default()
    });
    assert_has(&msg, r#"rootfs.diff_ids[0]: invalid digest "md5:x""#);
}

// --- issue 12 item 24: layout validation ---------------------------------------

#[test]
fn oci_layout_file_must_say_version_1_0_0() {
    let msg = layout_error(Edits {
        oci_layout: Some(b"garbage".to_vec()),
        ..Default::default()
    });
    assert_has(&msg, "oci-layout: invalid JSON");
    let msg = layout_error(Edits {
        oci_layout: Some(br#"{"imageLayoutVersion":"99"}"#.to_vec()),
        ..Default::default()
    });
    assert_has(
        &msg,
        r#"oci-layout: imageLayoutVersion "99" is not supported (expected "1.0.0")"#,
    );
    let msg = layout_error(Edits {
        oci_layout: Some(br#"{"imageLayoutVersion":99}"#.to_vec()),
        ..Default::default()
    });
    assert_has(&msg, "oci-layout: imageLayoutVersion: expected a string");
    let msg = layout_error(Edits {
        oci_layout: Some(b"{}".to_vec()),
        ..Default::default()
    });
    assert_has(
        &msg,
        r#"oci-layout: missing required field "imageLayoutVersion""#,
    );
}

#[test]
fn schema_version_must_be_2() {
    let msg = layout_error(Edits {
        index: Some(Box::new(|i| i["schemaVersion"] = json!(1))),
        ..Default::default()
    });
    assert_has(
        &msg,
        "index.json: schemaVersion: unsupported schemaVersion 1 (expected 2)",
    );
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            m.as_object_mut().unwrap().remove("schemaVersion");
        })),
        ..Default::default()
    });
    assert_has(&msg, r#"missing required field "schemaVersion""#);
}

#[test]
fn unknown_layer_and_config_media_types_are_refused() {
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            m["layers"][0]["mediaType"] = json!("application/x-tar-but-trust-me")
        })),
        ..Default::default()
    });
    assert_has(
        &msg,
        r#"layers[0]: unknown layer media type "application/x-tar-but-trust-me""#,
    );
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            m["config"]["mediaType"] = json!("application/vnd.oci.empty.v1+json")
        })),
        ..Default::default()
    });
    assert_has(
        &msg,
        "config: media type \"application/vnd.oci.empty.v1+json\" is not an image config",
    );
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            m["layers"][0]["mediaType"] = json!("not a type")
        })),
        ..Default::default()
    });
    assert_has(
        &msg,
        r#"layers[0].mediaType: "not a type" is not a media type"#,
    );
}

#[test]
fn docker_and_oci_types_do_not_mix_in_one_manifest() {
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            m["layers"][0]["mediaType"] = json!("application/vnd.docker.image.rootfs.diff.tar.gzip")
        })),
        ..Default::default()
    });
    assert_has(&msg, "layers[0]: Docker layer media type");
    assert_has(
        &msg,
        "in a OCI manifest (Docker and OCI media types must not be mixed)",
    );
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            m["config"]["mediaType"] = json!("application/vnd.docker.container.image.v1+json")
        })),
        ..Default::default()
    });
    assert_has(&msg, "config: Docker config media type");
    // The manifest says Docker, the index says OCI.
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            m["mediaType"] = json!("application/vnd.docker.distribution.manifest.v2+json")
        })),
        ..Default::default()
    });
    assert_has(
        &msg,
        r#"mediaType "application/vnd.docker.distribution.manifest.v2+json" does not match the descriptor's "application/vnd.oci.image.manifest.v1+json""#,
    );
}

#[test]
fn docker_schema2_manifest_in_a_layout_opens() {
    // What `ctr export` writes for an image pulled from Docker Hub.
    let t = tempfile::tempdir().unwrap();
    let dm = "application/vnd.docker.distribution.manifest.v2+json";
    write_layout(
        t.path(),
        Edits {
            manifest: Some(Box::new(move |m| {
                m["mediaType"] = json!(dm);
                m["config"]["mediaType"] = json!("application/vnd.docker.container.image.v1+json");
                m["layers"][0]["mediaType"] = json!("application/vnd.docker.image.rootfs.diff.tar");
            })),
            index: Some(Box::new(move |i| {
                i["manifests"][0]["mediaType"] = json!(dm)
            })),
            ..Default::default()
        },
    );
    assert_eq!(open_dir(t.path(), None).unwrap().layers.len(), 1);
}

#[test]
fn sizes_are_non_negative_and_match() {
    let msg = layout_error(Edits {
        index: Some(Box::new(|i| i["manifests"][0]["size"] = json!(-1))),
        ..Default::default()
    });
    assert_has(
        &msg,
        "index.json: manifests[0].size: size must not be negative (found -1)",
    );
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| m["layers"][0]["size"] = json!(1.5))),
        ..Default::default()
    });
    assert_has(
        &msg,
        "layers[0].size: expected a non-negative integer, found 1.5",
    );
    // The manifest blob is right, only its descriptor's size is off by one.
    let msg = layout_error(Edits {
        index: Some(Box::new(|i| {
            let n = i["manifests"][0]["size"].as_u64().unwrap();
            i["manifests"][0]["size"] = json!(n + 1);
        })),
        ..Default::default()
    });
    assert_has(&msg, "size mismatch: descriptor says");
    let msg = layout_error(Edits {
        manifest: Some(Box::new(|m| {
            let n = m["config"]["size"].as_u64().unwrap();
            m["config"]["size"] = json!(n - 1);
        })),
        ..Default::default()
    });
    assert_has(&msg, "config sha256:");
    assert_has(&msg, "size mismatch");
}

#[test]
fn descriptors_must_be_well_formed() {
    let msg = layout_error(Edits {
        index: Some(Box::new(|i| {
            i["manifests"][0].as_object_mut().unwrap().remove("size");
        })),
        ..Default::default()
    });
    assert_has(
        &msg,
        r#"index.json: manifests[0]: missing required field "size""#,
    );
    let msg = layout_error(Edits {
        index: Some(Box::new(|i| {
            i["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = json!(7)
        })),
        ..Default::default()
    });
    assert_has(
        &msg,
        "manifests[0].annotations.org.opencontainers.image.ref.name: expected a string, found a number",
    );
    let msg = layout_error(Edits {
        index: Some(Box::new(|i| {
            i["manifests"][0]["platform"] = json!({"os": "linux"})
        })),
        ..Default::default()
    });
    assert_has(
        &msg,
        r#"manifests[0].platform: missing required field "architecture""#,
    );
    let msg = layout_error(Edits {
        index: Some(Box::new(|i| i["manifests"][0]["data"] = json!("aGVsbG8="))),
        ..Default::default()
    });
    assert_has(&msg, "manifests[0].data: embedded data does not match");
}

#[test]
fn duplicate_json_keys_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let md = write_layout(t.path(), Edits::default());
    // Same digest twice: Go keeps the last copy, others the first.
    let other = sha256_digest(b"other");
    let dup = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MT_MANIFEST}","digest":"{other}","digest":"{md}","size":1}}]}}"#
    );
    std::fs::write(t.path().join("index.json"), dup).unwrap();
    let msg = format!("{:#}", open_dir(t.path(), None).err().unwrap());
    assert_has(&msg, "index.json: invalid JSON: duplicate key \"digest\"");
}

#[test]
fn config_must_list_one_diff_id_per_layer() {
    let msg = layout_error(Edits {
        config: Some(Box::new(|c| c["rootfs"]["diff_ids"] = json!([]))),
        ..Default::default()
    });
    assert_has(
        &msg,
        "rootfs.diff_ids lists 0 layers but the manifest has 1",
    );
    let msg = layout_error(Edits {
        config: Some(Box::new(|c| c["rootfs"]["type"] = json!("squashfs"))),
        ..Default::default()
    });
    assert_has(&msg, r#"rootfs.type: "squashfs" (expected "layers")"#);
    let msg = layout_error(Edits {
        config: Some(Box::new(|c| c["config"]["Env"] = json!("PATH=/bin"))),
        ..Default::default()
    });
    assert_has(&msg, "config.Env: expected an array, found a string");
}

#[test]
fn index_entries_of_unknown_types_are_ignored_and_tags_are_unique() {
    let t = tempfile::tempdir().unwrap();
    write_layout(
        t.path(),
        Edits {
            index: Some(Box::new(|i| {
                let extra = json!({"mediaType": "application/vnd.example.thing+json",
                    "digest": sha256_digest(b"x"), "size": 1});
                i["manifests"].as_array_mut().unwrap().push(extra);
            })),
            ..Default::default()
        },
    );
    // image-spec: unknown media types in an index MUST be ignored.
    assert!(open_dir(t.path(), None).is_ok());

    let msg = layout_error(Edits {
        index: Some(Box::new(|i| {
            let again = i["manifests"][0].clone();
            i["manifests"].as_array_mut().unwrap().push(again);
        })),
        ..Default::default()
    });
    // Without a tag: two images. With the tag: two manifests for one name.
    assert_has(&msg, "lists 2 images");
    let t = tempfile::tempdir().unwrap();
    write_layout(
        t.path(),
        Edits {
            index: Some(Box::new(|i| {
                let mut again = i["manifests"][0].clone();
                again["size"] = json!(1);
                i["manifests"].as_array_mut().unwrap().push(again);
            })),
            ..Default::default()
        },
    );
    let msg = format!("{:#}", open_dir(t.path(), Some("latest")).err().unwrap());
    assert_has(
        &msg,
        "tag \"latest\" names 2 manifests (manifests[0], manifests[1])",
    );
}

#[test]
fn nested_indexes_are_bounded() {
    let t = tempfile::tempdir().unwrap();
    let md = write_layout(t.path(), Edits::default());
    let mb = std::fs::read(
        t.path()
            .join("blobs/sha256")
            .join(md.trim_start_matches("sha256:")),
    )
    .unwrap();
    let mut child = desc(MT_MANIFEST, &md, mb.len());
    for _ in 0..6 {
        let b = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [child]}),
        )
        .unwrap();
        child = desc(MT_OCI_INDEX, &put(t.path(), &b), b.len());
    }
    std::fs::write(
        t.path().join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [child]})).unwrap(),
    )
    .unwrap();
    let msg = format!("{:#}", open_dir(t.path(), None).err().unwrap());
    assert_has(&msg, "image indexes nested more than 4 deep");
}

// --- archives -------------------------------------------------------------------

/// Packs a directory's files (sorted) into a tar, with `extra` entries appended.
fn pack(dir: &Path, extra: impl FnOnce(TarBuilder) -> TarBuilder) -> Vec<u8> {
    let mut b = TarBuilder::new();
    let mut files: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect();
    files.sort();
    for p in files {
        let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
        b = b.file(&rel, &std::fs::read(&p).unwrap(), 0o644);
    }
    extra(b).build()
}

fn archive_error(open: fn(&Path) -> anyhow::Result<super::BaseImage>, tar: Vec<u8>) -> String {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("image.tar");
    std::fs::write(&p, tar).unwrap();
    match open(&p) {
        Ok(_) => panic!("the archive was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

fn open_oci_archive(p: &Path) -> anyhow::Result<super::BaseImage> {
    oci::open_layout_archive(p, None, &OpenOptions::default())
}

#[test]
fn oci_archive_entries_are_unambiguous() {
    let t = tempfile::tempdir().unwrap();
    write_layout(t.path(), Edits::default());
    // A second index.json after the first: tar extractors keep the last, others the first.
    let msg = archive_error(
        open_oci_archive,
        pack(t.path(), |b| b.file("./index.json", b"{}", 0o644)),
    );
    assert_has(&msg, "\"index.json\" appears twice in the archive");
    let msg = archive_error(
        open_oci_archive,
        pack(t.path(), |b| b.raw_file("../../evil", b"x", 0o644)),
    );
    assert_has(&msg, "\"../../evil\" leaves the archive");
    let msg = archive_error(
        open_oci_archive,
        pack(t.path(), |b| b.raw_file("/etc/evil", b"x", 0o644)),
    );
    assert_has(
        &msg,
        "\"/etc/evil\" is not a relative path inside the archive",
    );
    // Archives made with `tar -C layout .` name the root "./": fine.
    let t2 = tempfile::tempdir().unwrap();
    let p = t2.path().join("ok.tar");
    std::fs::write(&p, pack(t.path(), |b| b.dir(".", 0o755))).unwrap();
    assert!(open_oci_archive(&p).is_ok());
}

#[test]
fn oci_archive_blob_as_symlink_is_named() {
    let t = tempfile::tempdir().unwrap();
    let md = write_layout(t.path(), Edits::default());
    let rel = format!("blobs/sha256/{}", md.trim_start_matches("sha256:"));
    std::fs::remove_file(t.path().join(&rel)).unwrap();
    let msg = archive_error(
        open_oci_archive,
        pack(t.path(), |b| b.symlink(&rel, "/etc/passwd")),
    );
    assert_has(&msg, "is a symlink in the archive");
}

/// A docker-archive with one image; `edit` changes manifest.json before packing.
fn docker_archive(
    edit: impl FnOnce(&mut Value),
    extra: impl FnOnce(TarBuilder) -> TarBuilder,
) -> Vec<u8> {
    let l = layer();
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&l)]}}))
    .unwrap();
    let cname = format!(
        "{}.json",
        sha256_digest(&config).trim_start_matches("sha256:")
    );
    let mut mf =
        json!([{"Config": cname, "RepoTags": ["example.com/app:1"], "Layers": ["l0/layer.tar"]}]);
    edit(&mut mf);
    let b = TarBuilder::new()
        .file("manifest.json", &serde_json::to_vec(&mf).unwrap(), 0o644)
        .file(&cname, &config, 0o644)
        .file("l0/layer.tar", &l, 0o644);
    extra(b).build()
}

fn open_docker(p: &Path) -> anyhow::Result<super::BaseImage> {
    docker_archive::open(p, None)
}

#[test]
fn docker_archive_valid_opens() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("d.tar");
    std::fs::write(&p, docker_archive(|_| {}, |b| b)).unwrap();
    assert_eq!(docker_archive::open(&p, Some("1")).unwrap().layers.len(), 1);
    assert_eq!(
        docker_archive::open(&p, Some("app:1"))
            .unwrap()
            .layers
            .len(),
        1
    );
}

#[test]
fn docker_archive_paths_are_relative_and_present() {
    let msg = archive_error(
        open_docker,
        docker_archive(|m| m[0]["Layers"][0] = json!("../../etc/passwd"), |b| b),
    );
    assert_has(
        &msg,
        r#"manifest.json: [0].Layers[0]: "../../etc/passwd" leaves the archive"#,
    );
    let msg = archive_error(
        open_docker,
        docker_archive(|m| m[0]["Config"] = json!("/etc/passwd"), |b| b),
    );
    assert_has(
        &msg,
        r#"manifest.json: [0].Config: "/etc/passwd" is not a relative path"#,
    );
    let msg = archive_error(
        open_docker,
        docker_archive(
            |m| m[0]["Layers"] = json!(["l0/layer.tar", "l1/layer.tar"]),
            |b| b,
        ),
    );
    assert_has(
        &msg,
        "manifest.json: [0].Layers[1]: l1/layer.tar is missing from the archive",
    );
    let msg = archive_error(
        open_docker,
        docker_archive(
            |m| m[0]["Layers"] = json!(["l1/layer.tar"]),
            |b| b.symlink("l1/layer.tar", "../l0/layer.tar"),
        ),
    );
    assert_has(
        &msg,
        "manifest.json: [0].Layers[0]: l1/layer.tar is a symlink in the archive",
    );
    let msg = archive_error(
        open_docker,
        docker_archive(|_| {}, |b| b.file("l0/layer.tar", b"again", 0o644)),
    );
    assert_has(&msg, "\"l0/layer.tar\" appears twice in the archive");
}

#[test]
fn docker_archive_duplicates_are_refused() {
    // The same file twice in Layers, but the config says two different layers.
    let l = layer();
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&l), sha256_digest(b"x")]}}))
    .unwrap();
    let mf = json!([{"Config": "c.json", "Layers": ["l0/layer.tar", "./l0/layer.tar"]}]);
    let tar = TarBuilder::new()
        .file("manifest.json", &serde_json::to_vec(&mf).unwrap(), 0o644)
        .file("c.json", &config, 0o644)
        .file("l0/layer.tar", &l, 0o644)
        .build();
    let msg = archive_error(open_docker, tar);
    assert_has(&msg, "[0].Layers[1]: \"l0/layer.tar\" is also Layers[0], but the config gives them different diff_ids");
    // One tag on two images.
    let msg = archive_error(
        open_docker,
        docker_archive(
            |m| {
                let again = m[0].clone();
                m.as_array_mut().unwrap().push(again);
            },
            |b| b,
        ),
    );
    assert_has(
        &msg,
        "manifest.json: tag \"example.com/app:1\" is given to both [0] and [1]",
    );
}

#[test]
fn docker_archive_ambiguous_tag_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("d.tar");
    let tar = docker_archive(
        |m| {
            let mut again = m[0].clone();
            again["RepoTags"] = json!(["other.example/app:1"]);
            m.as_array_mut().unwrap().push(again);
        },
        |b| b,
    );
    std::fs::write(&p, tar).unwrap();
    let msg = format!(
        "{:#}",
        docker_archive::open(&p, Some("app:1")).err().unwrap()
    );
    assert_has(&msg, "manifest.json: tag \"app:1\" matches 2 images");
    assert!(docker_archive::open(&p, Some("other.example/app:1")).is_ok());
}

#[test]
fn docker_archive_config_named_by_digest_is_checked() {
    let l = layer();
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&l)]}}))
    .unwrap();
    let cname = format!(
        "{}.json",
        sha256_digest(b"something else").trim_start_matches("sha256:")
    );
    let mf = json!([{"Config": cname, "Layers": ["l.tar"]}]);
    let tar = TarBuilder::new()
        .file("manifest.json", &serde_json::to_vec(&mf).unwrap(), 0o644)
        .file(&cname, &config, 0o644)
        .file("l.tar", &l, 0o644)
        .build();
    let msg = archive_error(open_docker, tar);
    assert_has(&msg, "digest mismatch: its name says sha256:");
}

#[test]
fn docker_archive_manifest_errors_are_named() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let tar = TarBuilder::new()
        .file("manifest.json", deep.as_bytes(), 0o644)
        .build();
    let msg = archive_error(open_docker, tar);
    assert_has(&msg, "manifest.json: nesting too deep");
    let msg = archive_error(
        open_docker,
        docker_archive(|m| m[0]["Layers"] = json!("l0/layer.tar"), |b| b),
    );
    assert_has(
        &msg,
        "manifest.json: [0].Layers: expected an array, found a string",
    );
}

// --- the parsers on their own ---------------------------------------------------

#[test]
fn parsers_reject_what_go_would_misread() {
    // size beyond int64.
    let d = sha256_digest(b"");
    let big = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MT_MANIFEST}","digest":"{d}","size":18446744073709551615}}]}}"#
    );
    let e = parse_index(big.as_bytes(), "i", MT_OCI_INDEX).unwrap_err();
    assert_has(
        &e.to_string(),
        "i: manifests[0].size: expected a non-negative integer",
    );
    // Trailing data after the document.
    let e = parse_config(br#"{"a":1} {"b":2}"#, "c").unwrap_err();
    assert_has(&e.to_string(), "c: invalid JSON: trailing characters");
    // An index is not a manifest.
    let e = parse_manifest(br#"{"schemaVersion":2,"manifests":[]}"#, "m", MT_MANIFEST).unwrap_err();
    assert_has(&e.to_string(), r#"m: missing required field "config""#);
    // A manifest.json that is an object, not a list.
    let e = parse_docker_manifest(br#"{"Config":"c"}"#).unwrap_err();
    assert_has(
        &e.to_string(),
        "manifest.json: expected an array, found an object",
    );
    // Size limits hold whoever calls.
    let huge = vec![b' '; spec::MAX_MANIFEST_BYTES as usize + 1];
    let e = parse_index(&huge, "i", MT_OCI_INDEX).unwrap_err();
    assert_has(&e.to_string(), "more than the 4194304 bytes allowed");
}

#[test]
fn archive_paths_normalize() {
    assert_eq!(spec::archive_path("./a//b/./c").unwrap(), "a/b/c");
    for bad in ["", "/", "..", "a/../b", "/etc/passwd", "a/\u{1b}[2J"] {
        assert!(spec::archive_path(bad).is_err(), "{bad:?}");
    }
}

/// A base with deferred layers reports their count before they are fetched, fetches once,
/// and refuses a fetch that returns another number of layers than the manifest lists.
#[test]
fn deferred_layers_are_counted_then_fetched_once() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("layer.tar");
    std::fs::write(&p, TarBuilder::new().dir("etc", 0o755).build()).unwrap();
    let layer = |p: &Path| {
        LayerBlob::new(0, BlobLocation::whole(p).unwrap(), MT_OCI_LAYER, None, None).unwrap()
    };
    let image = |count, n: usize| {
        let p = p.clone();
        BaseImage {
            name: "registry://h/r@sha256:x".into(),
            manifest_digest: None,
            config: serde_json::json!({}),
            layers: Vec::new(),
            deferred: Some(DeferredLayers {
                count,
                descriptors: Vec::new(),
                location: None,
                fetch: Box::new(move |_| Ok((0..n).map(|_| layer(&p)).collect())),
            }),
            _scratch: None,
        }
    };
    let mut ok = image(1, 1);
    assert_eq!(ok.layer_count(), 1);
    assert!(ok.layers.is_empty());
    ok.ensure_layers().unwrap();
    assert_eq!((ok.layers.len(), ok.layer_count()), (1, 1));
    assert!(ok.deferred.is_none());
    ok.ensure_layers().unwrap();
    assert_eq!(ok.layers.len(), 1);
    let mut short = image(2, 1);
    let err = short.ensure_layers().err().unwrap();
    assert!(
        format!("{err:#}").contains("expected 2 layers, fetched 1"),
        "{err:#}"
    );
}
