use super::*;
use crate::cache::Cache;
use crate::imageref::ImageRef;
use crate::index::{index_via_records, RecordCache};
use crate::progress::Progress;
use crate::source::{open_image, BaseImage, DeferredLayers, LayerDescriptor, OpenOptions};
use crate::testutil::{LayoutBuilder, TarBuilder};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An x86-64 ELF header: enough for the ELF flag and machine.
fn elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    h[18] = 62;
    h.extend_from_slice(&[9u8; 100]);
    h
}

fn layers() -> Vec<Vec<u8>> {
    let l0 = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .file("etc/issue", b"Debian", 0o644)
        .file(
            "var/lib/dpkg/status",
            b"Package: a\nStatus: install ok installed\n",
            0o644,
        )
        .file_owned("usr/bin/tool", &elf(), 0o4755, 0, 0)
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .symlink("bin", "usr/bin")
        .file("usr/bin/sh", &elf(), 0o755)
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/a", b"a", 0o644)
        .file("usr/share/doc/b", b"b", 0o644)
        .file("opt/big", &[7u8; 70_000], 0o600)
        .build();
    let l1 = TarBuilder::new()
        .file("etc/.wh.issue", b"", 0o644)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nx:x:1:1::/:/bin/false\n",
            0o644,
        )
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/.wh..wh..opq", b"", 0o644)
        .file("usr/share/doc/new", b"n", 0o644)
        .pax(&[("SCHILY.xattr.user.k", b"v")])
        .file("opt/x", b"x", 0o644)
        .build();
    vec![l0, l1]
}

fn layout(dir: &Path) -> String {
    let mut b = LayoutBuilder::new();
    for l in layers() {
        b = b.layer(&l);
    }
    b.write(dir);
    format!("oci:{}:latest", dir.display())
}

fn open(r: &str) -> BaseImage {
    open_image(&ImageRef::parse(r).unwrap(), &OpenOptions::default()).unwrap()
}

fn quiet() -> Progress {
    Progress::silent()
}

fn via_records(base: &mut BaseImage, cache: Option<&Cache>) -> crate::index::Indexed {
    let ro = Default::default();
    let rc = RecordCache {
        cache,
        from: &[],
        registry: &ro,
    };
    index_via_records(base, crate::tarread::max_entries(), &rc, &quiet()).unwrap()
}

/// Every observable part of a model, for comparing two.
fn dump(fs: &Rootfs) -> String {
    let mut s = String::new();
    for (k, n) in &fs.nodes {
        let content = match n.content() {
            Some(crate::rootfs::Content::Bytes(b)) => format!("bytes:{}", hex::encode(&b[..])),
            Some(crate::rootfs::Content::Layer { layer, size }) => format!("layer:{layer}:{size}"),
            Some(crate::rootfs::Content::Empty) | None => "empty".into(),
            Some(crate::rootfs::Content::Host(_)) => "host".into(),
        };
        s += &format!(
            "{k} {:?} {:o} {} {} {} {} {content} {:?} {} {} {} {:?} {:?} {:?} {:?} {:?}\n",
            n.kind(),
            n.mode,
            n.uid,
            n.gid,
            n.mtime,
            n.size(),
            n.layer(),
            n.in_layers(),
            n.elf(),
            n.machine(),
            n.link(),
            n.xattrs(),
            n.dev(),
            n.sha256(),
            n.modified
        );
    }
    s += &format!(
        "removed {:?} hidden {:?} layers {} mask {} links {:?} same {:?} entries {}",
        fs.removed,
        fs.hidden,
        fs.layers,
        fs.removed_mask,
        fs.links
            .iter()
            .map(|l| (l.layer, &l.path, &l.target))
            .collect::<Vec<_>>(),
        fs.same_layer_whiteouts,
        fs.entries
    );
    s
}

/// Replaying the records gives the model reading the layers gives, field for field.
#[test]
fn replay_builds_the_same_model_as_reading() {
    let t = tempfile::tempdir().unwrap();
    let r = layout(&t.path().join("base"));
    let mut read = open(&r);
    let o = super::index_options(crate::tarread::max_entries());
    let want = crate::index::index_base(&mut read, &o, &quiet()).unwrap();
    let got = via_records(&mut open(&r), None);
    assert_eq!(dump(&got.fs), dump(&want));
    assert!(got.fs.get("usr/bin/tool").unwrap().elf());
    assert_eq!(got.fs.get("usr/bin/tool").unwrap().machine(), 62);
    assert_eq!(got.fs.read("etc/passwd").unwrap(), read_passwd(&want));
    assert!(matches!(
        got.fs.get("opt/big").unwrap().content(),
        Some(crate::rootfs::Content::Layer { layer: 0, .. })
    ));
    assert_eq!(got.from_cache, 0);
    for (l, b) in got.layers.iter().zip(&read.layers) {
        assert_eq!(Some(&l.digest), b.digest.as_ref());
        assert_eq!(Some(&l.diff_id), b.diff_id.as_ref());
        assert_eq!(l.compression, Compression::Gzip);
    }
}

fn read_passwd(fs: &Rootfs) -> Vec<u8> {
    fs.read("etc/passwd").unwrap()
}

/// Records are canonical: the same layer gives the same bytes, each line sorted JSON.
#[test]
fn records_are_canonical_and_deterministic() {
    let tar = &layers()[1];
    let z = crate::testutil::gzip(tar);
    let d = crate::testutil::digest(&z);
    let scan_once = || {
        scan(
            Box::new(std::io::Cursor::new(z.clone())),
            Some(&d),
            Some(z.len() as u64),
            "layer 2",
            1000,
            crate::progress::Task::hidden(),
        )
        .unwrap()
    };
    let (a, b) = (scan_once(), scan_once());
    assert_eq!(a.blob, b.blob);
    assert_eq!(a.digest, d);
    assert_eq!(a.diff_id, crate::testutil::digest(tar));
    let text = zstd::decode_all(&a.blob[..]).unwrap();
    for line in text.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(crate::image::canonical(&v), line, "sorted keys, no spaces");
    }
    let rec = LayerRecord::parse(&a.blob).unwrap();
    assert_eq!(rec.entries() as u64, a.entries);
    assert_eq!(rec.layer, d);
}

/// A layer whose bytes do not match its digest gives no record.
#[test]
fn a_digest_mismatch_gives_no_record() {
    let z = crate::testutil::gzip(&layers()[0]);
    let other = crate::testutil::digest(b"other");
    let e = scan(
        Box::new(std::io::Cursor::new(z.clone())),
        Some(&other),
        Some(z.len() as u64),
        "layer 1",
        1000,
        crate::progress::Task::hidden(),
    )
    .err()
    .map(|e| format!("{e:#}"));
    assert!(e.as_deref().is_some_and(|e| e.contains("layer 1")), "{e:?}");
}

/// A change to a record's text.
type Edit = dyn Fn(&str) -> String;

/// Lines a tar read could not have given are refused: a path outside model form,
/// captured bytes the policy does not keep (or missing where it does), bytes that
/// do not match their digest, a wrong count, a cut-off record.
#[test]
fn forged_or_damaged_records_are_refused() {
    let z = crate::testutil::gzip(&layers()[0]);
    let sc = scan(
        Box::new(std::io::Cursor::new(z.clone())),
        None,
        None,
        "layer 1",
        1000,
        crate::progress::Task::hidden(),
    )
    .unwrap();
    let text = String::from_utf8(zstd::decode_all(&sc.blob[..]).unwrap()).unwrap();
    let redo = |f: &dyn Fn(&str) -> String| {
        let t = f(&text);
        assert_ne!(t, text, "the edit applies");
        LayerRecord::parse(&zstd::encode_all(t.as_bytes(), 3).unwrap())
            .err()
            .map(|e| format!("{e:#}"))
    };
    assert!(LayerRecord::parse(&sc.blob).is_ok());
    let cases: Vec<(&str, Box<Edit>)> = vec![
        (
            "model form",
            Box::new(|t| t.replace(r#""p":"opt/big""#, r#""p":"opt//big""#)),
        ),
        (
            "capture",
            Box::new(|t| t.replace(r#""p":"etc/group""#, r#""p":"usr/group""#)),
        ),
        (
            "do not match",
            Box::new(|t| t.replacen("cm9vdDp4OjA6", "cm9vdDp4OjE6", 1)),
        ),
        (
            "counts",
            Box::new(|t| t.replace(r#""entries":"#, r#""entries":1"#)),
        ),
        (
            "no end line",
            Box::new(|t| t[..t.find(r#"{"end""#).unwrap()].to_string()),
        ),
        (
            "format",
            Box::new(|t| t.replace(FORMAT, "nemoclaw-layer-index/0")),
        ),
        // The setuid tool's held bytes moved off it: the policy says they belong there.
        (
            "held bytes",
            Box::new(|t| {
                let mut out = String::new();
                for line in t.lines() {
                    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if v["entry"]["p"] == "usr/bin/tool" {
                        v["entry"].as_object_mut().unwrap().remove("b");
                    }
                    out += &String::from_utf8(crate::image::canonical(&v)).unwrap();
                    out.push('\n');
                }
                out
            }),
        ),
    ];
    for (want, edit) in cases {
        let e = redo(&*edit);
        assert!(
            e.as_deref().is_some_and(|e| e.contains(want)),
            "{want}: {e:?}"
        );
    }
    assert!(LayerRecord::parse(b"not zstd").is_err());
}

/// Layer files of an opened base, removed: any read of them now fails.
fn remove_layer_files(base: &BaseImage) {
    for l in &base.layers {
        std::fs::remove_file(&l.location.path).unwrap();
    }
}

/// With the records cached, the base is not read at all: the same model comes out of
/// a base whose layer files are gone. Without them, that base cannot be indexed.
#[test]
fn a_known_base_reads_no_layer() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(Some(&t.path().join("cache"))).unwrap();
    let r = layout(&t.path().join("base"));
    let first = via_records(&mut open(&r), Some(&c));
    assert_eq!(first.from_cache, 0);
    let mut gone = open(&r);
    remove_layer_files(&gone);
    let second = via_records(&mut gone, Some(&c));
    assert_eq!(second.from_cache, 2);
    assert_eq!(dump(&second.fs), dump(&first.fs));
    let fresh = Cache::open(Some(&t.path().join("cache2"))).unwrap();
    let ro = Default::default();
    let rc = RecordCache {
        cache: Some(&fresh),
        from: &[],
        registry: &ro,
    };
    assert!(index_via_records(&mut gone, 1000, &rc, &quiet()).is_err());
}

/// A cached record changed on disk, or one that describes another layer, is ignored
/// with a warning, the layer read again and the entry rebuilt (then served again).
#[test]
fn corrupt_or_mismatched_records_are_ignored_and_rebuilt() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(Some(&t.path().join("cache"))).unwrap();
    let r = layout(&t.path().join("base"));
    let base = open(&r);
    let digests: Vec<String> = base
        .layers
        .iter()
        .map(|l| l.digest.clone().unwrap())
        .collect();
    let want = dump(&via_records(&mut open(&r), Some(&c)).fs);
    let ptr = |l: &str| {
        c.get_json("layer-index", &key(l)).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let p = Progress::silent();
    let ro = Default::default();
    let rc = RecordCache {
        cache: Some(&c),
        from: &[],
        registry: &ro,
    };
    // Point layer 2's key at layer 1's (valid) record: it describes another layer.
    c.put_json(
        "layer-index",
        &key(&digests[1]),
        &serde_json::json!({"digest": ptr(&digests[0])}),
    )
    .unwrap();
    let again = index_via_records(&mut open(&r), 1000, &rc, &p).unwrap();
    assert_eq!(again.from_cache, 1, "layer 2's record was not served");
    assert_eq!(dump(&again.fs), want);
    let warnings = p.warning_messages().join("\n");
    assert!(warnings.contains("describes layer"), "{warnings}");
    // Flip a byte of layer 1's record blob.
    let p1 = c.blob_path(&ptr(&digests[0])).unwrap();
    let mut bytes = std::fs::read(&p1).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&p1, &bytes).unwrap();
    let p = Progress::silent();
    let again = index_via_records(&mut open(&r), 1000, &rc, &p).unwrap();
    assert_eq!(again.from_cache, 1, "layer 1's record was not served");
    assert_eq!(dump(&again.fs), want);
    let warnings = p.warning_messages().join("\n");
    assert!(
        warnings.contains(&crate::registry::short(&digests[0])),
        "{warnings}"
    );
    assert!(warnings.contains("ignored"), "{warnings}");
    // A blob whose digest is right but that is no record: found when its layer is
    // replayed, removed, the layer read then.
    let junk = store::local_put(&c, &digests[0], b"not a record").unwrap();
    let p = Progress::silent();
    let again = index_via_records(&mut open(&r), 1000, &rc, &p).unwrap();
    assert_eq!(again.from_cache, 1, "the junk was not served");
    assert_eq!(dump(&again.fs), want);
    assert!(c.blob(&junk).is_none(), "junk removed from the cache");
    assert!(p.warning_messages().join("\n").contains("ignored"));
    // Rebuilt: both are served from the cache now, the layer files untouched.
    let mut gone = open(&r);
    remove_layer_files(&gone);
    let third = via_records(&mut gone, Some(&c));
    assert_eq!((third.from_cache, dump(&third.fs)), (2, want));
}

/// A deferred (registry-like) base: layers fetched on first use, fetches counted; a
/// tee gets its layer as a download would pass it on (first attempt cut short and
/// retried, so the tee sees overlapping offers).
pub(crate) fn deferred(r: &str, fetches: std::sync::Arc<AtomicUsize>) -> BaseImage {
    deferred_with(r, fetches, |b| b)
}

fn deferred_with(
    r: &str,
    fetches: std::sync::Arc<AtomicUsize>,
    wire: fn(Vec<u8>) -> Vec<u8>,
) -> BaseImage {
    let mut b = open(r);
    let layers = std::mem::take(&mut b.layers);
    let descriptors = layers
        .iter()
        .map(|l| LayerDescriptor {
            digest: l.digest.clone().unwrap(),
            size: l.size,
            media_type: l.media_type.clone(),
            diff_id: l.diff_id.clone(),
        })
        .collect();
    b.deferred = Some(DeferredLayers {
        count: layers.len(),
        descriptors,
        location: Some("127.0.0.1:9/base".into()),
        fetch: Box::new(move |tees| {
            fetches.fetch_add(1, Ordering::SeqCst);
            let rt = crate::registry::runtime()?;
            for (l, tee) in layers.iter().zip(tees) {
                let Some(mut tee) = tee else { continue };
                let bytes = wire(std::fs::read(&l.location.path)?);
                rt.block_on(async {
                    let half = bytes.len() / 2;
                    for (off, chunk) in
                        [(0, &bytes[..half]), (0, &bytes[..]), (half, &bytes[half..])]
                    {
                        tee.offer(off as u64, chunk).await;
                    }
                });
            }
            Ok(layers)
        }),
    });
    b
}

/// A deferred base seen before is not fetched for its index; unseen, it is.
#[test]
fn deferred_layers_are_fetched_only_without_records() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(Some(&t.path().join("cache"))).unwrap();
    let r = layout(&t.path().join("base"));
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let mut b = deferred(&r, n.clone());
    let first = via_records(&mut b, Some(&c));
    assert_eq!((n.load(Ordering::SeqCst), first.from_cache), (1, 0));
    let n2 = std::sync::Arc::new(AtomicUsize::new(0));
    let mut b2 = deferred(&r, n2.clone());
    let second = via_records(&mut b2, Some(&c));
    assert_eq!((n2.load(Ordering::SeqCst), second.from_cache), (0, 2));
    assert!(b2.deferred.is_some(), "never fetched");
    assert_eq!(dump(&second.fs), dump(&first.fs));
}

/// The same whiteout image with no cache, a cold one (records made), and a warm one
/// (records served, the build cache's own entry removed so the base is re-modelled).
#[test]
fn output_is_identical_with_and_without_the_index_cache() {
    use crate::pipeline::{build, PurgeMode};
    let t = tempfile::tempdir().unwrap();
    let r = layout(&t.path().join("base"));
    let art = t.path().join("art");
    std::fs::create_dir_all(art.join("dist")).unwrap();
    std::fs::write(art.join("dist/x.js"), b"1").unwrap();
    let cache_dir = t.path().join("cache");
    let run = |name: &str, cache: bool| {
        let mut o = crate::pipeline_tests::opts(
            &r,
            &format!("oci:{}", t.path().join(name).display()),
            PurgeMode::Whiteout,
            Some(&art),
        );
        if cache {
            o.cache = Some(Cache::open(Some(&cache_dir)).unwrap());
        }
        let s = build(o).unwrap();
        assert!(!s.cache_hit, "{name}");
        s
    };
    let none = run("none", false);
    let cold = run("cold", true);
    let c = Cache::open(Some(&cache_dir)).unwrap();
    let base = open(&r);
    for l in &base.layers {
        assert!(store::local_get(&c, l.digest.as_ref().unwrap(), &quiet()).is_some());
    }
    std::fs::remove_dir_all(cache_dir.join("derived/prepared")).unwrap();
    let warm = run("warm", true);
    assert!(!warm.warnings.iter().any(|w| w.contains("layer index")));
    assert_eq!(none.digest, cold.digest);
    assert_eq!(none.digest, warm.digest);
}

/// An unseen deferred base is streamed into its records (the download passes each
/// layer on as it arrives); bytes that do not match the digest fail the pass and
/// leave no record in the cache.
#[test]
fn streamed_pass_verifies_before_anything_is_cached() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(Some(&t.path().join("cache"))).unwrap();
    let r = layout(&t.path().join("base"));
    let want = dump(&via_records(&mut open(&r), None).fs);
    let flip = |mut b: Vec<u8>| {
        let k = b.len() / 2;
        b[k] ^= 1;
        b
    };
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let mut bad = deferred_with(&r, n.clone(), flip);
    let ro = Default::default();
    let rc = RecordCache {
        cache: Some(&c),
        from: &[],
        registry: &ro,
    };
    let e = index_via_records(&mut bad, 1000, &rc, &quiet())
        .err()
        .map(|e| format!("{e:#}"));
    assert!(e.as_deref().is_some_and(|e| e.contains("layer 1")), "{e:?}");
    for l in open(&r).layers {
        let d = l.digest.unwrap();
        assert!(
            store::local_get(&c, &d, &quiet()).is_none(),
            "no record for {d}"
        );
    }
    let mut good = deferred(&r, n.clone());
    let got = via_records(&mut good, Some(&c));
    assert_eq!((got.from_cache, dump(&got.fs)), (0, want));
    assert_eq!(n.load(Ordering::SeqCst), 2);
}
