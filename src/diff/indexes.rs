//! `diff` of two image indexes (issue 13): their platforms are paired by name and
//! each pair is compared like two images; a platform only one side has is a
//! difference. Used when both sides are local indexes and no `--platform` is given.
use super::{diff_images, render, Report};
use crate::imageref::ImageRef;
use crate::progress::Progress;
use crate::source::{index_platforms, OpenOptions};
use anyhow::Result;
use std::collections::BTreeMap;

/// The comparison of two indexes, platform by platform.
#[derive(Debug, serde::Serialize)]
pub struct IndexReport {
    pub platforms: BTreeMap<String, Report>,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub identical: bool,
}

/// The platforms of both sides when both are local image indexes (None otherwise:
/// compare them as single images).
pub fn both_indexes(a: &str, b: &str) -> Option<(Vec<String>, Vec<String>)> {
    let list = |r: &str| {
        let r = ImageRef::parse(r).ok()?;
        matches!(r, ImageRef::OciDir { .. } | ImageRef::OciArchive { .. })
            .then(|| index_platforms(&r, &OpenOptions::default()).ok())
            .flatten()
    };
    Some((list(a)?, list(b)?))
}

/// Compares each platform both indexes have; lists the others.
pub fn compare_indexes(
    (a, b): (&str, &str),
    (pa, pb): (Vec<String>, Vec<String>),
    ignore_timestamps: bool,
    progress: &Progress,
) -> Result<IndexReport> {
    let mut platforms = BTreeMap::new();
    for p in pa.iter().filter(|p| pb.contains(p)) {
        let opts = OpenOptions {
            platform: Some(p.clone()),
            ..Default::default()
        };
        let r = diff_images(a, b, ignore_timestamps, &opts, progress)?;
        platforms.insert(p.clone(), r);
    }
    let only_in_a: Vec<String> = pa.iter().filter(|p| !pb.contains(p)).cloned().collect();
    let only_in_b: Vec<String> = pb.iter().filter(|p| !pa.contains(p)).cloned().collect();
    let identical =
        only_in_a.is_empty() && only_in_b.is_empty() && platforms.values().all(|r| r.identical);
    Ok(IndexReport {
        platforms,
        only_in_a,
        only_in_b,
        identical,
    })
}

/// The text report: one section per platform, then the unpaired platforms.
pub fn render_index(r: &IndexReport, all: bool) -> String {
    let mut s = String::new();
    for (p, rep) in &r.platforms {
        s.push_str(&format!("platform {p}:\n"));
        s.push_str(&render(rep, all));
    }
    for p in &r.only_in_a {
        s.push_str(&format!("platform {p}: only in the first index\n"));
    }
    for p in &r.only_in_b {
        s.push_str(&format!("platform {p}: only in the second index\n"));
    }
    s.push_str(if r.identical {
        "indexes: identical platforms\n"
    } else {
        "indexes: differ\n"
    });
    s
}
