//! Three version strings (newline-separated): the comparison must be a total order
//! (reflexive, antisymmetric, transitive), or `>=` relations would contradict.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nemoclaw_build::dpkg::compare_versions as cmp;
use std::cmp::Ordering::*;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let mut it = s.splitn(3, '\n');
    let (a, b, c) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
    assert_eq!(cmp(a, a), Equal, "{a:?}");
    assert_eq!(cmp(a, b), cmp(b, a).reverse(), "{a:?} {b:?}");
    if cmp(a, b) != Greater && cmp(b, c) != Greater {
        assert_ne!(cmp(a, c), Greater, "{a:?} <= {b:?} <= {c:?}");
    }
});
