//! Package relationship fields (`Depends`, `Pre-Depends`, `Provides`, ...).

use std::cmp::Ordering;

use anyhow::{bail, Result};

use super::version::{check_version, compare_versions};
use super::{check_arch_name, check_package_name};

/// Version relation operator of a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum VersionOp {
    /// `<<`
    Lt,
    /// `<=` (also the obsolete `<`)
    Le,
    /// `=`
    Eq,
    /// `>=` (also the obsolete `>`)
    Ge,
    /// `>>`
    Gt,
}

impl VersionOp {
    fn parse(s: &str) -> Option<VersionOp> {
        Some(match s {
            "<<" => VersionOp::Lt,
            "<=" | "<" => VersionOp::Le,
            "=" => VersionOp::Eq,
            ">=" | ">" => VersionOp::Ge,
            ">>" => VersionOp::Gt,
            _ => return None,
        })
    }

    /// The operator as written in control files.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionOp::Lt => "<<",
            VersionOp::Le => "<=",
            VersionOp::Eq => "=",
            VersionOp::Ge => ">=",
            VersionOp::Gt => ">>",
        }
    }

    /// Whether `have OP want` holds.
    pub fn holds(self, have: &str, want: &str) -> bool {
        let c = compare_versions(have, want);
        match self {
            VersionOp::Lt => c == Ordering::Less,
            VersionOp::Le => c != Ordering::Greater,
            VersionOp::Eq => c == Ordering::Equal,
            VersionOp::Ge => c != Ordering::Less,
            VersionOp::Gt => c == Ordering::Greater,
        }
    }
}

/// One atom of a relationship field: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Relation {
    pub name: String,
    /// Architecture qualifier (`any`, `native` or an architecture name).
    pub arch: Option<String>,
    pub version: Option<(VersionOp, String)>,
}

impl std::fmt::Display for Relation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(a) = &self.arch {
            write!(f, ":{a}")?;
        }
        if let Some((op, v)) = &self.version {
            write!(f, " ({} {v})", op.as_str())?;
        }
        Ok(())
    }
}

/// A conjunction of or-groups: `a | b, c`.
pub type RelationList = Vec<Vec<Relation>>;

fn parse_atom(atom: &str) -> Result<Relation> {
    let atom = atom.trim();
    // Strip architecture restrictions `[...]` and build profiles `<...>`: they do not
    // appear in installed packages' fields, but tolerate them.
    let mut s = String::with_capacity(atom.len());
    let mut depth_sq = 0usize;
    let mut depth_ang = 0usize;
    let mut in_paren = false;
    for c in atom.chars() {
        match c {
            '(' => {
                in_paren = true;
                s.push(c)
            }
            ')' => {
                in_paren = false;
                s.push(c)
            }
            '[' if !in_paren => depth_sq += 1,
            ']' if !in_paren => depth_sq = depth_sq.saturating_sub(1),
            '<' if !in_paren => depth_ang += 1,
            '>' if !in_paren => depth_ang = depth_ang.saturating_sub(1),
            _ if depth_sq > 0 || depth_ang > 0 => {}
            _ => s.push(c),
        }
    }
    let s = s.trim();
    let (name_part, ver_part) = match s.find('(') {
        Some(i) => {
            let rest = &s[i + 1..];
            let Some(end) = rest.find(')') else {
                bail!("unterminated version in relation {atom:?}");
            };
            if !rest[end + 1..].trim().is_empty() {
                bail!("trailing text after version in relation {atom:?}");
            }
            (s[..i].trim(), Some(rest[..end].trim()))
        }
        None => (s, None),
    };
    let (name, arch) = match name_part.split_once(':') {
        Some((n, a)) => (n, Some(a.to_string())),
        None => (name_part, None),
    };
    if check_package_name(name).is_err() {
        bail!("invalid package name in relation {atom:?}");
    }
    if let Some(a) = &arch {
        if !matches!(a.as_str(), "any" | "native") && check_arch_name(a).is_err() {
            bail!("invalid architecture qualifier in relation {atom:?}");
        }
    }
    let version = match ver_part {
        None => None,
        Some(v) => {
            let op_len = v
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .unwrap_or(v.len());
            let Some(op) = VersionOp::parse(&v[..op_len]) else {
                bail!("invalid version operator in relation {atom:?}");
            };
            let ver = v[op_len..].trim();
            if ver.is_empty() {
                bail!("missing version in relation {atom:?}");
            }
            if let Err(e) = check_version(ver) {
                bail!("invalid version in relation {atom:?}: {e}");
            }
            Some((op, ver.to_string()))
        }
    };
    Ok(Relation {
        name: name.to_string(),
        arch,
        version,
    })
}

/// Parse a relationship field such as `Depends`.
pub fn parse_relations(value: &str) -> Result<RelationList> {
    let mut out = Vec::new();
    for group in value.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for atom in group.split('|') {
            alts.push(parse_atom(atom)?);
        }
        out.push(alts);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_versions_and_arch() {
        let r = parse_relations(
            "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, python3:any (<< 3.12),\n perl:native",
        )
        .unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0][0].name, "libc6");
        assert_eq!(r[0][0].version, Some((VersionOp::Ge, "2.34".into())));
        assert_eq!(r[1].len(), 2);
        assert_eq!(r[1][1].name, "debconf-2.0");
        assert_eq!(r[2][0].arch.as_deref(), Some("any"));
        assert_eq!(r[2][0].version, Some((VersionOp::Lt, "3.12".into())));
        assert_eq!(r[3][0].arch.as_deref(), Some("native"));
        assert_eq!(r[0][0].to_string(), "libc6 (>= 2.34)");
        assert!(parse_relations("foo (>= 1").is_err());
        assert!(parse_relations("foo (~ 1)").is_err());
        let p = parse_relations("foo [amd64] <!nocheck>, bar").unwrap();
        assert_eq!(p[0][0].name, "foo");
    }

    /// Every operator dpkg accepts (`<` and `>` are the obsolete `<=` and `>=`),
    /// written back in its canonical form, and what it holds for.
    #[test]
    fn operators_parse_and_hold_like_dpkg() {
        for (text, canonical, holds_for_1_2_3) in [
            ("<<", "<<", [true, false, false]),
            ("<=", "<=", [true, true, false]),
            ("<", "<=", [true, true, false]),
            ("=", "=", [false, true, false]),
            (">=", ">=", [false, true, true]),
            (">", ">=", [false, true, true]),
            (">>", ">>", [false, false, true]),
        ] {
            let r = parse_relations(&format!("a ({text} 2)")).unwrap();
            let rel = &r[0][0];
            assert_eq!(rel.to_string(), format!("a ({canonical} 2)"));
            let (op, v) = rel.version.as_ref().unwrap();
            let got = ["1", "2", "3"].map(|have| op.holds(have, v));
            assert_eq!(got, holds_for_1_2_3, "{text}");
        }
    }

    /// Architecture restrictions and build profiles after the version are dropped;
    /// `<`/`>` inside the parentheses are operators, not profile brackets.
    #[test]
    fn restrictions_and_profiles_around_versions() {
        let r =
            parse_relations("foo (<< 1) [amd64 i386] <!nocheck> <cross>, bar:any (>> 2) <stage1>")
                .unwrap();
        assert_eq!(r[0][0].to_string(), "foo (<< 1)");
        assert_eq!(r[1][0].to_string(), "bar:any (>> 2)");
    }

    /// Restriction and profile brackets are dropped wherever they stand in the atom,
    /// even before the version; inside the parentheses `[` and `]` are version text.
    #[test]
    fn brackets_outside_versions_are_dropped_inside_kept() {
        let r = parse_relations("a [amd64] (>= 1), b <cross> (<< 2), c (>= 1[x])").unwrap();
        let got: Vec<String> = r.iter().map(|g| g[0].to_string()).collect();
        assert_eq!(got, ["a (>= 1)", "b (<< 2)", "c (>= 1[x])"]);
    }

    /// Odd input from a hostile status file: clear errors, never a panic or a
    /// relation with an empty or path-like name.
    #[test]
    fn odd_relations_are_refused() {
        for (v, why) in [
            ("|", "invalid package name"),
            ("a |", "invalid package name"),
            ("| a", "invalid package name"),
            ("a,|b", "invalid package name"),
            (")", "invalid package name"),
            (":", "invalid package name"),
            ("../../etc/passwd", "invalid package name"),
            ("\u{e9} (>= 1)", "invalid package name"),
            ("a:", "invalid architecture qualifier"),
            ("a:b/c", "invalid architecture qualifier"),
            ("a (", "unterminated version"),
            ("a (>=", "unterminated version"),
            ("a (>= 1 (", "unterminated version"),
            ("a (>= 1) )", "trailing text"),
            ("a ((>= 1))", "trailing text"),
            ("a (>= )", "missing version"),
            ("a (\u{e9})", "invalid version operator"),
            ("a (>= 1 2)", "invalid version"),
        ] {
            let e = parse_relations(v).unwrap_err().to_string();
            assert!(e.contains(why), "{v:?}: {e}");
        }
        assert_eq!(parse_relations("").unwrap(), RelationList::new());
        assert_eq!(parse_relations(" , ,").unwrap(), RelationList::new());
        let huge = format!("a (>= {})", "9".repeat(100_000));
        assert_eq!(parse_relations(&huge).unwrap()[0][0].name, "a");
    }
}
