//! Which platforms a `build` makes, from `--base [PLATFORM=]REF` (repeatable),
//! `--platform P[,P...]|all` and `--artifacts [PLATFORM=]PATH` (repeatable). A plain
//! `--base REF` is today's single-platform build; anything ambiguous is refused
//! before any work, with the flag that is wrong.
use anyhow::{bail, Context, Result};
use nemoclaw_build::imageref::ImageRef;
use nemoclaw_build::platform::Platform;
use nemoclaw_build::targets::Target;
use std::path::PathBuf;

/// What to build.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// One image (one manifest), as before multi-arch.
    Single {
        base: ImageRef,
        platform: Option<String>,
        artifacts: Option<PathBuf>,
    },
    /// One image per platform, published as an image index.
    Multi(Vec<Target>),
}

/// `linux/...=VALUE` -> (platform, VALUE); anything else is a plain value.
fn split_platform(flag: &str, v: &str) -> Result<(Option<Platform>, String)> {
    match v.split_once('=') {
        Some((p, rest)) if p.starts_with("linux/") => {
            let platform = Platform::parse(p).with_context(|| format!("{flag} '{v}'"))?;
            Ok((Some(platform), rest.to_string()))
        }
        _ => Ok((None, v.to_string())),
    }
}

/// The platforms and bases: per-platform bases, or one base with a platform list
/// (`all`: every supported platform of an index base, listed by `list`).
fn platform_bases(
    bases: &[String],
    platform: Option<&str>,
    list: &dyn Fn(&ImageRef) -> Result<Vec<String>>,
) -> Result<Vec<(Option<Platform>, ImageRef)>> {
    let mut split = Vec::new();
    for b in bases {
        let (p, r) = split_platform("--base", b)?;
        split.push((
            p,
            ImageRef::parse(&r).with_context(|| format!("--base '{b}'"))?,
        ));
    }
    let per = split.iter().filter(|(p, _)| p.is_some()).count();
    if per > 0 && per < split.len() {
        bail!("--base: give every base as PLATFORM=REF, or one plain REF (a mix is ambiguous)");
    }
    if per > 0 {
        if let Some(p) = platform {
            bail!("--platform {p}: the platforms are already given by --base PLATFORM=REF");
        }
        return Ok(split);
    }
    let [(_, base)] = &split[..] else {
        bail!(
            "--base given {} times: give one REF, or PLATFORM=REF for each platform",
            split.len()
        );
    };
    let names: Vec<String> = match platform {
        // One platform: the base picks it (or says which it has), as before.
        None => return Ok(vec![(None, base.clone())]),
        Some(p) if p != "all" && !p.contains(',') => return Ok(vec![(None, base.clone())]),
        Some("all") => list(base)?
            .into_iter()
            .filter(|p| Platform::parse(p).is_ok())
            .collect(),
        Some(p) => p.split(',').map(|s| s.trim().to_string()).collect(),
    };
    if names.is_empty() {
        bail!("--platform all: {base} has no linux/amd64 or linux/arm64 image");
    }
    let mut out = Vec::new();
    for n in names {
        let p = Platform::parse(&n).with_context(|| "--platform".to_string())?;
        out.push((Some(p), base.clone()));
    }
    Ok(out)
}

/// Each platform's artifacts: none, one plain PATH for all, or PLATFORM=PATH for
/// every platform (no more, no fewer). Platforms pair as containerd matches them, so
/// `--artifacts linux/arm64=DIR` serves a `linux/arm64/v8` base and the reverse.
fn platform_artifacts(
    artifacts: &[String],
    platforms: &[Option<Platform>],
) -> Result<Vec<Option<PathBuf>>> {
    let mut plain = Vec::new();
    let mut per: Vec<(Platform, PathBuf)> = Vec::new();
    for a in artifacts {
        match split_platform("--artifacts", a)? {
            (Some(p), path) => {
                if let Some((q, _)) = per.iter().find(|(q, _)| q.matches(&p)) {
                    bail!("--artifacts: platform {p} is given twice (as {q} and {p})");
                }
                per.push((p, path.into()));
            }
            (None, path) => plain.push(PathBuf::from(path)),
        }
    }
    if !per.is_empty() && !plain.is_empty() {
        bail!("--artifacts: give every artifacts path as PLATFORM=PATH, or one plain PATH for all platforms");
    }
    if plain.len() > 1 {
        bail!(
            "--artifacts given {} times: give one PATH, or PLATFORM=PATH per platform",
            plain.len()
        );
    }
    if per.is_empty() {
        return Ok(platforms.iter().map(|_| plain.first().cloned()).collect());
    }
    let mut out = Vec::new();
    for p in platforms {
        let Some(p) = p else {
            bail!("--artifacts PLATFORM=PATH needs a platform for the build: give --platform or --base PLATFORM=REF");
        };
        let Some(i) = per.iter().position(|(q, _)| q.matches(p)) else {
            let have: Vec<String> = artifacts.iter().map(|a| a.to_string()).collect();
            bail!("platform {p} has no artifacts: every platform needs --artifacts {p}=PATH when any has one (given: {})", have.join(", "));
        };
        out.push(Some(per.remove(i).1));
    }
    if let Some((p, _)) = per.first() {
        bail!("--artifacts {p}=...: this build has no platform {p}");
    }
    Ok(out)
}

/// The build plan from the command line.
pub fn plan(
    bases: &[String],
    platform: Option<&str>,
    artifacts: &[String],
    list: &dyn Fn(&ImageRef) -> Result<Vec<String>>,
) -> Result<Plan> {
    let pb = platform_bases(bases, platform, list)?;
    let platforms: Vec<Option<Platform>> = pb.iter().map(|(p, _)| p.clone()).collect();
    let arts = platform_artifacts(artifacts, &platforms)?;
    if pb.len() == 1 {
        let (p, base) = pb.into_iter().next().expect("one base");
        return Ok(Plan::Single {
            base,
            platform: match p {
                Some(p) => Some(p.to_string()),
                None => platform.map(str::to_string),
            },
            artifacts: arts.into_iter().next().flatten(),
        });
    }
    Ok(Plan::Multi(
        pb.into_iter()
            .zip(arts)
            .map(|((p, base), artifacts)| Target {
                platform: p.expect("platform of a multi-platform build"),
                base,
                artifacts,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }
    fn no_list(_: &ImageRef) -> Result<Vec<String>> {
        bail!("not an index")
    }
    fn err(bases: &[&str], platform: Option<&str>, arts: &[&str]) -> String {
        format!(
            "{:#}",
            plan(&s(bases), platform, &s(arts), &no_list).unwrap_err()
        )
    }

    #[test]
    fn plain_base_stays_single_platform() {
        let p = plan(&s(&["tar:a.tar"]), None, &s(&["dist"]), &no_list).unwrap();
        assert_eq!(
            p,
            Plan::Single {
                base: ImageRef::parse("tar:a.tar").unwrap(),
                platform: None,
                artifacts: Some("dist".into())
            }
        );
        // One --platform is passed to the base, which picks it or names what it has.
        let p = plan(&s(&["oci:idx"]), Some("linux/s390x"), &[], &no_list).unwrap();
        assert!(
            matches!(&p, Plan::Single { platform: Some(x), .. } if x == "linux/s390x"),
            "{p:?}"
        );
        // One PLATFORM=REF is one image of that platform.
        let p = plan(&s(&["linux/arm64=tar:b.tar"]), None, &[], &no_list).unwrap();
        assert!(
            matches!(&p, Plan::Single { platform: Some(x), .. } if x == "linux/arm64"),
            "{p:?}"
        );
    }

    #[test]
    fn per_platform_bases_and_artifacts() {
        let p = plan(
            &s(&["linux/arm64=tar:b.tar", "linux/amd64=tar:a.tar"]),
            None,
            &s(&["linux/amd64=da", "linux/arm64=db"]),
            &no_list,
        )
        .unwrap();
        let Plan::Multi(t) = p else { panic!("{p:?}") };
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].platform.to_string(), "linux/arm64");
        assert_eq!(t[0].artifacts, Some("db".into()));
        assert_eq!(t[1].artifacts, Some("da".into()));
        // One plain PATH serves every platform.
        let p = plan(
            &s(&["linux/arm64=tar:b.tar", "linux/amd64=tar:a.tar"]),
            None,
            &s(&["dist"]),
            &no_list,
        )
        .unwrap();
        let Plan::Multi(t) = p else { panic!() };
        assert!(t.iter().all(|t| t.artifacts == Some("dist".into())));
        // Spellings pair as containerd matches them: arm64 is arm64/v8.
        let p = plan(
            &s(&["linux/arm64/v8=tar:b.tar", "linux/amd64=tar:a.tar"]),
            None,
            &s(&["linux/amd64/v1=da", "linux/arm64=db"]),
            &no_list,
        )
        .unwrap();
        let Plan::Multi(t) = p else { panic!("{p:?}") };
        assert_eq!(t[0].platform.to_string(), "linux/arm64/v8");
        assert_eq!(t[0].artifacts, Some("db".into()));
        assert_eq!(t[1].artifacts, Some("da".into()));
    }

    #[test]
    fn platform_list_and_all_on_one_index_base() {
        let p = plan(
            &s(&["oci:idx"]),
            Some("linux/amd64,linux/arm64"),
            &[],
            &no_list,
        )
        .unwrap();
        let Plan::Multi(t) = p else { panic!() };
        assert_eq!(t.len(), 2);
        assert!(t
            .iter()
            .all(|t| t.base == ImageRef::parse("oci:idx").unwrap()));
        let list = |_: &ImageRef| -> Result<Vec<String>> {
            Ok(s(&["linux/amd64", "linux/s390x", "linux/arm64/v8"]))
        };
        let Plan::Multi(t) = plan(&s(&["oci:idx"]), Some("all"), &[], &list).unwrap() else {
            panic!()
        };
        let names: Vec<String> = t.iter().map(|t| t.platform.to_string()).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64/v8"]);
        let e = err(&["tar:a.tar"], Some("all"), &[]);
        assert!(e.contains("not an index"), "{e}");
    }

    #[test]
    fn ambiguous_inputs_are_refused() {
        let e = err(&["linux/amd64=tar:a.tar", "tar:b.tar"], None, &[]);
        assert!(e.contains("a mix is ambiguous"), "{e}");
        let e = err(&["tar:a.tar", "tar:b.tar"], None, &[]);
        assert!(e.contains("--base given 2 times"), "{e}");
        let e = err(
            &["linux/amd64=tar:a.tar", "linux/arm64=tar:b.tar"],
            Some("linux/arm64"),
            &[],
        );
        assert!(e.contains("already given by --base"), "{e}");
        let e = err(&["linux/s390x=tar:a.tar"], None, &[]);
        assert!(e.contains("s390x"), "{e}");
        let two = ["linux/amd64=tar:a.tar", "linux/arm64=tar:b.tar"];
        let e = err(&two, None, &["linux/amd64=da"]);
        assert!(e.contains("platform linux/arm64 has no artifacts"), "{e}");
        let e = err(&two, None, &["linux/amd64=da", "dist"]);
        assert!(e.contains("PLATFORM=PATH, or one plain PATH"), "{e}");
        let e = err(
            &two,
            None,
            &["linux/amd64=da", "linux/arm64=db", "linux/arm64/v8=dc"],
        );
        assert!(
            e.contains("given twice (as linux/arm64 and linux/arm64/v8)"),
            "{e}"
        );
        let e = err(
            &two,
            None,
            &["linux/amd64=da", "linux/arm64=db", "linux/riscv64=dc"],
        );
        assert!(e.contains("riscv64"), "{e}");
        let e = err(&["tar:a.tar"], None, &["linux/amd64=da"]);
        assert!(e.contains("needs a platform"), "{e}");
    }
}
