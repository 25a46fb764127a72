//! Debian version comparison, as dpkg's `dpkg_version_compare` / `verrevcmp`.

use std::cmp::Ordering;

use anyhow::{bail, Result};

/// A parsed Debian version: `[epoch:]upstream[-revision]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version<'a> {
    epoch: u64,
    upstream: &'a str,
    revision: &'a str,
}

fn split(v: &str) -> Version<'_> {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(0), rest)
        }
        _ => (0, v),
    };
    let (upstream, revision) = match rest.rfind('-') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    Version {
        epoch,
        upstream,
        revision,
    }
}

/// Check a version string the way dpkg's `parseversion` does when it reads its
/// database, refusing what dpkg refuses there (it only warns about a first character
/// that is not a digit or about unusual characters): not empty, no whitespace, a
/// numeric epoch that fits in an `i32`, non-empty upstream version and revision.
/// Entry point for fuzzing the version parser; [`compare_versions`] accepts any string.
pub fn check_version(v: &str) -> Result<()> {
    if v.is_empty() {
        bail!("version string is empty");
    }
    if v.contains(|c: char| c.is_whitespace()) {
        bail!("version {v:?} has embedded spaces");
    }
    let rest = match v.split_once(':') {
        Some((e, rest)) => {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                bail!("version {v:?}: epoch is not a number");
            }
            if e.parse::<i32>().is_err() {
                bail!("version {v:?}: epoch is too big");
            }
            rest
        }
        None => v,
    };
    let (upstream, revision) = match rest.rfind('-') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if upstream.is_empty() {
        bail!("version {v:?}: nothing after the epoch");
    }
    if revision == Some("") {
        bail!("version {v:?}: revision number is empty");
    }
    Ok(())
}

/// dpkg's character ordering: `~` sorts before everything (even the end of the string),
/// letters sort before non-letters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0i32;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// Compare two Debian version strings like `dpkg --compare-versions`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let va = split(a);
    let vb = split(b);
    va.epoch
        .cmp(&vb.epoch)
        .then_with(|| verrevcmp(va.upstream, vb.upstream))
        .then_with(|| verrevcmp(va.revision, vb.revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_ordering() {
        let lt = [
            ("1.0", "1.1"),
            ("1.0~rc1", "1.0"),
            ("1.0", "1.0-1"),
            ("1.0-1", "1.0-2"),
            ("1:0.1", "2:0.0"),
            ("9.9", "1:0.1"),
            ("1.0~~", "1.0~"),
            ("1.0a", "1.0+"),
            ("1.2.3", "1.10"),
            ("2.36.1-8", "2.36.1-8+deb12u1"),
            ("12.2.0-14", "12.2.0-14+deb12u1"),
            ("0", "a"),
        ];
        for (a, b) in lt {
            assert_eq!(compare_versions(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare_versions(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(compare_versions("1.0", "1.00"), Ordering::Equal);
        assert_eq!(compare_versions("0:1.0-0", "1.0-0"), Ordering::Equal);
        // No revision compares like revision 0 (the `-` is not part of the revision).
        assert_eq!(compare_versions("1.0", "1.0-0"), Ordering::Equal);
    }

    /// Only a number before the first `:` is an epoch; anything else stays part of the
    /// upstream version and is compared with it.
    #[test]
    fn non_numeric_epoch_is_part_of_the_upstream_version() {
        for odd in [":1", "a:1"] {
            assert_eq!(compare_versions("1", odd), Ordering::Less, "{odd:?}");
            assert_eq!(compare_versions(odd, "1"), Ordering::Greater, "{odd:?}");
        }
    }

    /// Every ASCII non-letter but `~` (NUL included) sorts after the letters and after the
    /// end of the string, like dpkg's `order()`; `~` sorts before the end. (Not the
    /// separators `:` and `-`, nor whitespace, which is trimmed.)
    #[test]
    fn non_letters_sort_after_letters_and_the_end() {
        let plain =
            |c: &char| !(c.is_ascii_alphanumeric() || c.is_whitespace() || "~:-".contains(*c));
        for c in (0u8..128).map(char::from).filter(plain) {
            let v = format!("1{c}");
            assert_eq!(compare_versions("1", &v), Ordering::Less, "{v:?}");
            assert_eq!(compare_versions("1z", &v), Ordering::Less, "{v:?}");
        }
        assert_eq!(compare_versions("1~", "1"), Ordering::Less);
    }

    #[test]
    fn check_version_like_dpkg() {
        for v in [
            "1",
            "1:2.3~rc1+dfsg-1",
            "4:12.2.0-3",
            "2.36.1-8+deb12u1",
            "1.0-1-2",
            "0",
            "git-abc1",
        ] {
            check_version(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
        for (v, why) in [
            ("", "empty"),
            ("1 2", "embedded spaces"),
            (":1", "epoch is not a number"),
            ("a:1", "epoch is not a number"),
            ("99999999999:1", "epoch is too big"),
            ("1:", "nothing after the epoch"),
            ("1:-1", "nothing after the epoch"),
            ("1.0-", "revision number is empty"),
        ] {
            let e = check_version(v).unwrap_err().to_string();
            assert!(e.contains(why), "{v:?}: {e}");
        }
    }

    /// Odd strings never panic and compare as a total order (antisymmetric, reflexive),
    /// whether or not they are valid versions.
    #[test]
    fn comparison_of_odd_strings_is_total() {
        let long_digits = "9".repeat(100_000);
        let long_alpha = "a".repeat(100_000);
        let odd = [
            "",
            ":",
            "1:",
            ":1",
            "-",
            "1-",
            "-1",
            "~",
            "~~",
            "0~",
            "\u{e9}",
            "1\u{e9}",
            "99999999999999999999999:1",
            "1:2:3-4-5",
            "00",
            "0",
            "a",
            "+",
            "1.0~rc1",
            &long_digits,
            &long_alpha,
        ];
        for a in odd {
            assert_eq!(compare_versions(a, a), Ordering::Equal, "{a:?}");
            for b in odd {
                assert_eq!(
                    compare_versions(a, b),
                    compare_versions(b, a).reverse(),
                    "{a:?} {b:?}"
                );
            }
        }
    }
}
