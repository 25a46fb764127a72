//! Regression tests for layer-reader differentials (issue 12): each crafted layer is
//! read differently by GNU tar, Python's tarfile or containerd than by a naive
//! reader; the model must see what they see or refuse the layer, naming it.
use crate::pipeline::{build, index_base_spilling, PurgeMode};
use crate::pipeline_tests::{final_fs, opts, write_layout};
use crate::progress::Progress;
use crate::recipe::Packages;
use crate::rootfs::{IndexOptions, Kind, Rootfs};
use crate::testutil::{Raw, TarBuilder};

fn index(layers: &[Vec<u8>]) -> anyhow::Result<Rootfs> {
    let mut fs = Rootfs::new();
    for (i, l) in layers.iter().enumerate() {
        let label = format!("layer {} (test)", i + 1);
        fs.apply_layer(i, &label, &l[..], &IndexOptions::default())?;
    }
    Ok(fs)
}

fn refused(layers: &[Vec<u8>], needles: &[&str]) {
    let err = match index(layers) {
        Ok(fs) => panic!(
            "layer accepted, expected a refusal mentioning {needles:?}; model: {:?}",
            fs.nodes.keys().collect::<Vec<_>>()
        ),
        Err(e) => format!("{e:#}"),
    };
    for n in needles {
        assert!(err.contains(n), "error should mention '{n}': {err}");
    }
}

/// A complete member (header + one data block) for `usr/bin/gcc`: what other
/// readers find inside the "data" of a non-file entry.
fn smuggled_member() -> Vec<u8> {
    TarBuilder::new()
        .file("usr/bin/gcc", b"\x7fELF smuggled", 0o755)
        .build()[..1024]
        .to_vec()
}

#[test]
fn non_files_with_data_are_refused() {
    for (t, what) in [
        (b'5', "directory"),
        (b'2', "symlink"),
        (b'6', "FIFO"),
        (b'3', "character device"),
        (b'4', "block device"),
    ] {
        let l = TarBuilder::new()
            .raw(
                Raw::new(t, b"usr/share/x", 1024).link(b"target"),
                &smuggled_member(),
            )
            .build();
        refused(
            &[l],
            &[
                "layer 1 (test): entry 'usr/share/x'",
                &format!("a {what} with 1024 bytes of data"),
            ],
        );
    }
    // A hardlink to an existing file with data, and a PAX size on a directory.
    let l = TarBuilder::new()
        .file("a", b"a", 0o644)
        .raw(Raw::new(b'1', b"b", 1024).link(b"a"), &smuggled_member())
        .build();
    refused(&[l], &["entry 'b'", "a hardlink with 1024 bytes of data"]);
    let l = TarBuilder::new()
        .pax(&[("size", b"1024")])
        .raw(Raw::new(b'5', b"d/", 0), &smuggled_member())
        .build();
    refused(&[l], &["entry 'd/'", "a directory with 1024 bytes of data"]);
}

#[test]
fn sparse_renames_are_refused() {
    // GNU sparse 1.0: Python and GNU tar rename the entry to GNU.sparse.name.
    let l = TarBuilder::new()
        .pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"usr/bin/gcc"),
            ("GNU.sparse.realsize", b"4"),
        ])
        .file("GNUSparseFile.0/gcc", b"1\n0\n4\n", 0o755)
        .build();
    refused(&[l], &["entry 'GNUSparseFile.0/gcc'", "GNU sparse file"]);
    // Old GNU sparse type 'S'.
    let l = TarBuilder::new()
        .raw(Raw::new(b'S', b"usr/bin/gcc", 0), &[])
        .build();
    refused(&[l], &["entry 'usr/bin/gcc'", "sparse"]);
}

#[test]
fn gnu_long_name_and_pax_path_together_are_refused() {
    // Python takes the outer of the two, the tar crate the long name.
    let l = TarBuilder::new()
        .gnu_long(b'L', b"usr/bin/gcc\0")
        .pax(&[("path", b"usr/bin/true")])
        .file("short", b"x", 0o755)
        .build();
    refused(
        &[l],
        &["entry 'short'", "both a GNU long name and a PAX path"],
    );
}

#[test]
fn duplicate_pax_keys_are_refused() {
    // The tar crate took the first, Python, GNU tar and Go the last.
    let mut data = crate::testutil::pax_records(&[("path", b"usr/bin/true")]);
    data.extend(crate::testutil::pax_records(&[("path", b"usr/bin/gcc")]));
    let l = TarBuilder::new()
        .pax_data(b'x', &data)
        .file("short", b"x", 0o755)
        .build();
    refused(&[l], &["entry 'short'", "duplicate record 'path'"]);
}

#[test]
fn lenient_pax_numbers_are_refused() {
    // Python reads int("+5") as 5; the tar crate ignored the record.
    let l = TarBuilder::new()
        .pax(&[("uid", b"+0")])
        .file_owned("f", b"x", 0o4755, 1000, 1000)
        .build();
    refused(&[l], &["entry 'f'", "not a plain decimal number"]);
}

#[test]
fn global_pax_records_are_refused() {
    // Python renames every later entry, containerd ignores the header.
    let l = TarBuilder::new()
        .pax_data(
            b'g',
            &crate::testutil::pax_records(&[("path", b"usr/bin/gcc")]),
        )
        .file("f", b"x", 0o644)
        .build();
    refused(&[l], &["layer 1 (test): global PAX header", "sets 'path'"]);
}

#[test]
fn name_prefix_outside_ustar_is_refused() {
    // Python applies the prefix field of a GNU header, GNU tar and Go do not.
    let l = TarBuilder::new()
        .raw(Raw::new(b'0', b"gcc", 1).field(345, b"usr/bin"), b"x")
        .build();
    refused(&[l], &["entry 'gcc'", "name prefix but is not POSIX ustar"]);
}

#[test]
fn regular_file_named_like_a_directory_is_refused() {
    // Python and GNU tar make an old-style regular file ending in '/' a directory.
    let l = TarBuilder::new()
        .raw(Raw::new(b'\0', b"etc/x/", 0), &[])
        .build();
    refused(
        &[l],
        &["entry 'etc/x/'", "regular file whose name ends with '/'"],
    );
}

#[test]
fn pax_records_are_read_by_their_length() {
    // One comment record whose value holds a newline and a well-formed "path"
    // record: Python and Go read a comment; splitting on newlines forges a path.
    let value = b"x\n19 path=usr/bin/gcc\n";
    let l = TarBuilder::new()
        .pax(&[("comment", value)])
        .file("usr/bin/true", b"x", 0o755)
        .build();
    let fs = index(&[l]).unwrap();
    assert!(fs.get("usr/bin/true").is_some());
    assert!(fs.get("usr/bin/gcc").is_none());
    // A PAX path with uid/gid overrides is applied (long names via PAX).
    let long = format!("opt/{}/bin", "d".repeat(150));
    let l = TarBuilder::new()
        .pax(&[("path", long.as_bytes()), ("uid", b"1000")])
        .file("short", b"x", 0o755)
        .build();
    let fs = index(&[l]).unwrap();
    assert_eq!(fs.get(&long).map(|n| n.uid), Some(1000));
}

#[test]
fn unknown_types_are_refused() {
    for t in [b'Z', b'7', b'X', b'V', b'N'] {
        let l = TarBuilder::new()
            .raw(Raw::new(t, b"usr/bin/gcc", 5), b"\x7fELF!")
            .build();
        refused(&[l], &["layer 1 (test): entry 'usr/bin/gcc'"]);
    }
    let l = TarBuilder::new()
        .raw(Raw::new(b'Z', b"usr/bin/gcc", 5), b"\x7fELF!")
        .build();
    refused(&[l], &["unknown entry type 'Z'"]);
    // A GNU long name header without GNU magic: the tar crate passed it on as an entry.
    let l = TarBuilder::new()
        .raw(
            Raw::new(b'L', b"././@LongLink", 12).ustar(),
            b"usr/bin/gcc\0",
        )
        .file("x", b"x", 0o644)
        .build();
    refused(&[l], &["GNU long name", "not in a GNU header"]);
}

#[test]
fn unknown_types_are_refused_by_the_diff_reader_too() {
    let t = tempfile::tempdir().unwrap();
    let l = TarBuilder::new()
        .raw(Raw::new(b'Z', b"usr/bin/gcc", 5), b"\x7fELF!")
        .build();
    write_layout(t.path(), &[l]);
    let img = crate::source::open_image(
        &crate::imageref::ImageRef::parse(&format!("oci:{}", t.path().display())).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let err = crate::diff::layer_entries(&img.layers[0]).unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown entry type 'Z'"),
        "{err:#}"
    );
}

#[test]
fn whiteout_in_the_same_layer_does_not_hide() {
    let l0 = TarBuilder::new().file("etc/old", b"o", 0o644).build();
    // Whiteout after and before the file it names, in the same layer.
    let l1 = TarBuilder::new()
        .file("etc/a", b"a", 0o644)
        .file("etc/.wh.a", b"", 0o644)
        .file("etc/.wh.b", b"", 0o644)
        .file("etc/b", b"b", 0o644)
        .file("etc/.wh.old", b"", 0o644)
        .build();
    let fs = index(&[l0, l1]).unwrap();
    assert!(fs.get("etc/a").is_some(), "same-layer whiteout hid etc/a");
    assert!(fs.get("etc/b").is_some(), "same-layer whiteout hid etc/b");
    assert!(fs.get("etc/old").is_none(), "lower-layer file stays hidden");
}

#[test]
fn same_layer_whiteouts_are_reported_by_audit() {
    let l0 = TarBuilder::new().file("etc/old", b"o", 0o644).build();
    let l1 = TarBuilder::new()
        .file("etc/a", b"a", 0o644)
        .file("etc/.wh.a", b"", 0o644)
        .file("etc/.wh.b", b"", 0o644)
        .file("etc/b", b"b", 0o644)
        .file("etc/.wh.old", b"", 0o644)
        .build();
    let fs = index(&[l0, l1]).unwrap();
    let recipe = crate::recipe::Recipe::default();
    let found = crate::audit::findings(&fs, &serde_json::json!({}), &recipe).unwrap();
    let same: Vec<(&str, &str)> = found
        .iter()
        .filter(|f| f.id == "whiteout-same-layer")
        .map(|f| (f.path.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(same.len(), 2, "{same:?}");
    assert!(
        same[0].0 == "/etc/a" && same[0].1.contains("layer 2"),
        "{same:?}"
    );
    assert!(
        same[1].0 == "/etc/b" && same[1].1.contains("/etc/.wh.b"),
        "{same:?}"
    );
}

#[test]
fn entry_limit_counts_all_layers() {
    let layer = |p: &str| {
        (0..4)
            .fold(TarBuilder::new(), |b, i| {
                b.file(&format!("{p}{i}"), b"", 0o644)
            })
            .build()
    };
    let mut fs = Rootfs::new();
    let o = IndexOptions {
        max_entries: 6,
        ..Default::default()
    };
    fs.apply_layer(0, "layer 1 (test)", &layer("a")[..], &o)
        .unwrap();
    let err = fs
        .apply_layer(1, "layer 2 (test)", &layer("b")[..], &o)
        .unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("layer 2 (test): the image has more than 6 tar entries (--max-entries)"),
        "{err:#}"
    );
}

#[test]
fn invalid_whiteout_names_are_refused() {
    // containerd would remove the directory itself or its parent.
    for name in ["etc/sub/.wh..", "etc/sub/.wh..."] {
        let l = TarBuilder::new().raw_file(name, b"", 0o644).build();
        refused(&[l], &["invalid whiteout name"]);
    }
}

#[test]
fn non_utf8_names_are_refused() {
    // Lossy decoding made both names "caf\u{fffd}".
    let l = TarBuilder::new()
        .raw(Raw::new(b'0', b"caf\xe9", 1), b"1")
        .raw(Raw::new(b'0', b"caf\xe8", 1), b"2")
        .build();
    refused(
        &[l],
        &["layer 1 (test): entry 'caf\\xe9'", "not valid UTF-8"],
    );
    let l = TarBuilder::new()
        .raw(Raw::new(b'2', b"link", 0).link(b"caf\xe9"), &[])
        .build();
    refused(&[l], &["entry 'link'", "not valid UTF-8"]);
}

#[test]
fn entries_below_a_symlink_anywhere_up_are_refused() {
    let l = TarBuilder::new()
        .symlink("etc/evil", "/abs")
        .file("etc/evil/sub/x", b"x", 0o644)
        .build();
    refused(
        &[l],
        &["entry 'etc/evil/sub/x' lies below '/etc/evil', which is a symlink"],
    );
    // Across layers, and for whiteouts (a runtime would delete through the link).
    let l0 = TarBuilder::new().symlink("etc/evil", "/abs").build();
    let l1 = TarBuilder::new()
        .file("etc/evil/sub/.wh.x", b"", 0o644)
        .build();
    refused(&[l0, l1], &["layer 2 (test)", "which is a symlink"]);
    // Below a regular file.
    let l = TarBuilder::new()
        .file("etc/passwd", b"x", 0o644)
        .file("etc/passwd/x", b"x", 0o644)
        .build();
    refused(&[l], &["lies below '/etc/passwd', which is a File"]);
}

#[test]
fn hardlinks_to_directories_and_missing_targets_are_refused() {
    let l = TarBuilder::new()
        .dir("usr/lib", 0o755)
        .hardlink("x", "usr/lib")
        .build();
    refused(&[l], &["entry 'x'", "hardlink to '/usr/lib', a directory"]);
    let l = TarBuilder::new().hardlink("x", "nowhere").build();
    refused(&[l], &["entry 'x'", "does not exist"]);
}

#[test]
fn hardlink_target_replaced_in_the_same_layer_is_refused() {
    // Python rewrites the shared inode in place; GNU tar and containerd replace it.
    let l = TarBuilder::new()
        .file("t", b"old", 0o644)
        .hardlink("h", "t")
        .file("t", b"new", 0o644)
        .build();
    refused(&[l], &["entry 't'", "hardlink earlier in this layer"]);
}

#[test]
fn kind_changes_within_a_layer_are_refused() {
    // GNU tar and Python fail; containerd replaces the directory.
    let l = TarBuilder::new()
        .dir("opt/x", 0o755)
        .file("opt/x", b"f", 0o644)
        .build();
    refused(&[l], &["entry 'opt/x'", "earlier in the same layer"]);
    let l = TarBuilder::new()
        .file("opt/x/y", b"y", 0o644)
        .file("opt/x", b"f", 0o644)
        .build();
    refused(&[l], &["entry 'opt/x'", "earlier in the same layer"]);
}

fn gate() -> Packages {
    Packages {
        forbid_elf: vec![r"^(.*-)?(gcc|cc1)(-[0-9.]+)?$".into()],
        ..Packages::default()
    }
}

#[test]
fn hardlinks_to_elf_files_trip_the_gate() {
    // The ELF is named harmlessly; a hardlink gives it a compiler's name.
    let l = TarBuilder::new()
        .file("usr/lib/x/blob", b"\x7fELF....", 0o755)
        .hardlink("usr/libexec/gcc", "usr/lib/x/blob")
        .build();
    let mut fs = index(&[l]).unwrap();
    let hits = crate::scan::forbidden(&fs, &gate()).unwrap();
    assert!(
        hits.iter()
            .any(|h| h.path == "/usr/libexec/gcc" && h.rule == "toolchain ELF"),
        "{hits:?}"
    );
    // Still a hit when the build removes the target the link shares.
    fs.remove("usr/lib/x/blob");
    let hits = crate::scan::forbidden(&fs, &gate()).unwrap();
    assert!(
        hits.iter().any(|h| h.path == "/usr/libexec/gcc"),
        "{hits:?}"
    );
}

#[test]
fn trailing_data_after_the_archive_is_refused() {
    let mut l = TarBuilder::new().file("a", b"a", 0o644).build();
    l.extend_from_slice(&[0u8; 4096]);
    index(std::slice::from_ref(&l)).expect("zeros after the end are padding");
    // Entries hidden after the end marker (found by `tar -i`).
    l.extend(
        TarBuilder::new()
            .file("usr/bin/gcc", b"\x7fELF", 0o755)
            .build(),
    );
    refused(&[l], &["layer 1 (test): non-zero data at byte"]);
}

#[test]
fn hardlink_to_a_file_purged_in_a_lower_layer_carries_its_bytes() {
    let t = tempfile::tempdir().unwrap();
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    let l0 = TarBuilder::new()
        .file("etc/passwd", passwd, 0o644)
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .file("usr/share/doc/b", b"bee", 0o644)
        .build();
    let l1 = TarBuilder::new()
        .hardlink("usr/bin/bee", "usr/share/doc/b")
        .build();
    write_layout(&t.path().join("base"), &[l0, l1]);
    let out = t.path().join("out");
    // The recipe removes /usr/share/doc/b.
    build(opts(
        &format!("oci:{}", t.path().join("base").display()),
        &format!("oci:{}", out.display()),
        PurgeMode::Rewrite,
        None,
    ))
    .unwrap();
    let image = format!("oci:{}", out.display());
    let mut img = crate::source::open_image(
        &crate::imageref::ImageRef::parse(&image).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let all = IndexOptions {
        capture: |_, _| true,
        ..Default::default()
    };
    let fs = crate::pipeline::index_base(&mut img, &all, &Progress::silent())
        .expect("the rewritten image must unpack");
    assert!(fs.get("usr/share/doc/b").is_none());
    let bee = fs.get("usr/bin/bee").unwrap();
    assert_eq!(bee.kind(), Kind::File);
    assert_eq!(fs.read("usr/bin/bee").unwrap(), b"bee");
    assert_eq!(final_fs(&image).nodes.len(), fs.nodes.len());
}

#[test]
fn spill_stops_at_the_end_of_the_archive() {
    let t = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new().file("a", &[7u8; 3000], 0o644).build();
    let mut layer = tar.clone();
    layer.resize(tar.len() + (8 << 20), 0); // 8 MiB of zeros after the end marker
    write_layout(&t.path().join("img"), &[layer]);
    let mut img = crate::source::open_image(
        &crate::imageref::ImageRef::parse(&format!("oci:{}", t.path().join("img").display()))
            .unwrap(),
        &Default::default(),
    )
    .unwrap();
    let spill = t.path().join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    index_base_spilling(
        &mut img,
        &IndexOptions::default(),
        &Progress::silent(),
        Some(&spill),
    )
    .unwrap();
    let p = img.layers[0].spill.clone().expect("a spilled copy");
    let len = std::fs::metadata(&p).unwrap().len();
    assert!(
        len <= tar.len() as u64,
        "spill is {len} bytes for a {}-byte archive",
        tar.len()
    );
}

/// Files held in memory while indexing are bounded over all layers: a crafted base of
/// many large `etc/` files (a few bytes compressed) is refused naming the entry, and
/// a setid file past the budget is left in its layer (loaded later), not refused.
#[test]
fn captured_bytes_are_bounded_over_all_layers() {
    let o = IndexOptions {
        max_captured: 150,
        ..Default::default()
    };
    let l0 = TarBuilder::new().file("etc/a", &[1; 100], 0o644).build();
    let l1 = TarBuilder::new()
        .file("usr/bin/su", &[2; 100], 0o4755)
        .file("etc/b", &[3; 100], 0o644)
        .build();
    let mut fs = Rootfs::new();
    fs.apply_layer(0, "layer 1 (test)", &l0[..], &o).unwrap();
    let err = fs
        .apply_layer(1, "layer 2 (test)", &l1[..], &o)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("layer 2 (test): entry 'etc/b'") && msg.contains("exceed 150 bytes"),
        "{msg}"
    );
    let su = fs
        .nodes
        .get("usr/bin/su")
        .expect("su indexed before the refusal");
    assert!(
        matches!(su.content(), Some(crate::rootfs::Content::Layer { .. })),
        "a setid file past the budget was held: {:?}",
        su.content()
    );
    let within = IndexOptions {
        max_captured: 300,
        ..Default::default()
    };
    let mut fs = Rootfs::new();
    fs.apply_layer(0, "layer 1 (test)", &l0[..], &within)
        .unwrap();
    fs.apply_layer(1, "layer 2 (test)", &l1[..], &within)
        .unwrap();
    assert_eq!(fs.captured, 300, "etc/a, su and etc/b are all held");
}
