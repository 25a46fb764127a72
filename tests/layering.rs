//! The library's shape, checked on its source: top-level modules form layers (each
//! `crate::` use outside test code points to the same or a lower layer, and the
//! module graph has no cycle), and no function outgrows what a reader can hold.
//!
//! Why a source scan and not `syn`: the checks need only comments, strings, braces
//! and `crate::` paths, and a dependency-free scanner keeps the test fast to build.
//! Test code (`#[cfg(test)]` items, `*tests.rs`, `testutil.rs`) is left out: tests may
//! reach anywhere. The binary (`main.rs`, `cli/`) sits above every layer.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use modules of its own layer or of any
/// lower one; within a layer the graph must still be acyclic. A new module must be
/// placed here, which is the point: its place in the order is a design decision.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves: formats, names and parsed inputs, no image access",
        &[
            "digest",
            "oci",
            "fspath",
            "elf",
            "platform",
            "account_fields",
            "finding",
            "imageref",
            "progress",
            "scratch",
            "hostfs",
            "recipe",
            "record",
        ],
    ),
    (
        "image access and transports",
        &[
            "compress",
            "tarread",
            "image",
            "cache",
            "transfer",
            "oci_layout",
            "registry",
            "source",
        ],
    ),
    (
        "the rootfs model and the work on it",
        &[
            "spill",
            "rootfs",
            "index",
            "layer_index",
            "dpkg",
            "scan",
            "checks",
            "steps",
            "contract",
            "layer",
        ],
    ),
    (
        "the build's phases and the commands",
        &[
            "attest",
            "remote_cache",
            "build_model",
            "build_cache",
            "assemble",
            "sbom",
            "sink",
            "pipeline",
            "targets",
            "fanout",
            "diff",
            "audit",
            "verify",
        ],
    ),
];

/// Longest function (lines from `fn` to its closing brace) outside test code.
const MAX_FN_LINES: usize = 80;

/// Files whose functions the size check skips for now, with the reason.
const FN_SIZE_EXEMPT_FILES: &[(&str, &str)] = &[];

/// Functions allowed over [`MAX_FN_LINES`], as `file:name`, with the reason.
const FN_SIZE_ALLOWED: &[(&str, &str)] = &[];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Library source files that are not test code, with their text.
fn library_files() -> Vec<(PathBuf, String)> {
    let src = src_dir();
    source_files()
        .into_iter()
        .filter(|(p, _)| {
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            !(rel == Path::new("main.rs") || first == "cli")
        })
        .collect()
}

/// Source files of the library and the binary that are not test code.
fn source_files() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read src/") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = src_dir();
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    paths.sort();
    let test_mods = test_only_files(&paths);
    paths
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(&src).unwrap();
            let name = rel.file_name().unwrap().to_string_lossy();
            !(name.ends_with("tests.rs")
                || name == "testutil.rs"
                || name == "lib.rs"
                || rel.components().any(|c| c.as_os_str() == "tests")
                || test_mods.contains(p))
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            (p, text)
        })
        .collect()
}

/// Files declared as `#[cfg(test)] mod name;` (test-only module files).
fn test_only_files(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for p in paths {
        let text = std::fs::read_to_string(p).expect("read source");
        let clean = blank_comments_and_strings(&text);
        let dir = if p
            .file_name()
            .is_some_and(|n| n == "lib.rs" || n == "mod.rs")
        {
            p.parent().unwrap().to_path_buf()
        } else {
            p.with_extension("")
        };
        for (start, end) in test_regions(&clean) {
            let item = &clean[start..end];
            if let Some(rest) = item.split("mod ").nth(1) {
                let name = rest.trim_end_matches(';').trim();
                if item.trim_end().ends_with(';') {
                    out.insert(dir.join(format!("{name}.rs")));
                    out.insert(dir.join(name).join("mod.rs"));
                }
            }
        }
    }
    out
}

/// The source with comments and the contents of string and char literals replaced
/// by spaces (newlines kept), so braces and paths can be found by plain scanning.
fn blank_comments_and_strings(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in out.iter_mut().take(to).skip(from) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        if c[i] == '/' && at(i + 1) == '/' {
            let end = (i..c.len()).find(|&k| c[k] == '\n').unwrap_or(c.len());
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && at(i + 1) == '*' {
            let (mut depth, mut k) = (1, i + 2);
            while k < c.len() && depth > 0 {
                if c[k] == '/' && at(k + 1) == '*' {
                    depth += 1;
                    k += 2;
                } else if c[k] == '*' && at(k + 1) == '/' {
                    depth -= 1;
                    k += 2;
                } else {
                    k += 1;
                }
            }
            blank(&mut out, i, k);
            i = k;
        } else if c[i] == 'r'
            && (at(i + 1) == '#' || at(i + 1) == '"')
            && !ident_char(at(i.wrapping_sub(1)))
            || (c[i] == 'b' && at(i + 1) == 'r' && (at(i + 2) == '#' || at(i + 2) == '"'))
        {
            // Raw string r#"..."# (or br"..."): ends at a quote followed by as many #.
            let mut k = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while at(k) == '#' {
                hashes += 1;
                k += 1;
            }
            if at(k) != '"' {
                i += 1; // r#ident (raw identifier)
                continue;
            }
            let open = k + 1;
            let mut j = open;
            while j < c.len() && !(c[j] == '"' && (1..=hashes).all(|h| at(j + h) == '#')) {
                j += 1;
            }
            blank(&mut out, open, j);
            i = j + 1 + hashes;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j);
            i = j + 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                // An escape is at least two chars ('\'', '\n'): the quote after them.
                let j = (i + 3..c.len()).find(|&k| c[k] == '\'').unwrap_or(c.len());
                blank(&mut out, i + 1, j);
                i = j + 1;
            } else if at(i + 2) == '\'' {
                blank(&mut out, i + 1, i + 2);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Byte ranges of items under `#[cfg(test)]` (or `#[cfg(any(test, ...))]`): the
/// attribute through the item's closing brace or semicolon.
fn test_regions(clean: &str) -> Vec<(usize, usize)> {
    let b = clean.as_bytes();
    let mut out = Vec::new();
    for marker in ["#[cfg(test)]", "#[cfg(any(test"] {
        let mut from = 0;
        while let Some(pos) = clean[from..].find(marker) {
            let start = from + pos;
            let attr_end = start + clean[start..].find(']').unwrap() + 1;
            let end = item_end(b, attr_end);
            out.push((start, end));
            from = end.max(start + 1);
        }
    }
    out
}

/// From `from`, the end of the next item: its `;` at bracket depth 0, or the
/// brace that closes its first `{`.
fn item_end(b: &[u8], from: usize) -> usize {
    let mut depth = 0i32;
    let mut k = from;
    while k < b.len() {
        match b[k] {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b';' if depth == 0 => return k + 1,
            b'{' if depth == 0 => return matching_brace(b, k) + 1,
            _ => {}
        }
        k += 1;
    }
    b.len()
}

fn matching_brace(b: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (k, &ch) in b.iter().enumerate().skip(open) {
        match ch {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    b.len()
}

/// The source with test items blanked too (newlines kept, so lines still count).
fn non_test_code(text: &str) -> String {
    let clean = blank_comments_and_strings(text);
    let regions = test_regions(&clean);
    let mut bytes = clean.into_bytes();
    for (s, e) in regions {
        for ch in &mut bytes[s..e] {
            if *ch != b'\n' {
                *ch = b' ';
            }
        }
    }
    String::from_utf8(bytes).unwrap()
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The top-level module a library file belongs to (`src/steps/fsops.rs` -> `steps`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src_dir()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn rel(path: &Path) -> String {
    path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .display()
        .to_string()
}

/// One use of another module: `from -> to` at `file:line`.
struct Edge {
    from: String,
    to: String,
    at: String,
}

/// Every `crate::m` (and `use crate::{m, ...}`) in non-test code, as module edges.
fn edges() -> Vec<Edge> {
    let mut out = Vec::new();
    for (path, text) in library_files() {
        let code = non_test_code(&text);
        let from = module_of(&path);
        let b = code.as_bytes();
        let mut search = 0;
        while let Some(pos) = code[search..].find("crate::") {
            let start = search + pos;
            search = start + 7;
            if start > 0 && (ident_char(b[start - 1] as char) || b[start - 1] == b'$') {
                continue;
            }
            let after = &code[start + 7..];
            let targets: Vec<String> = if let Some(group) = after.strip_prefix('{') {
                top_level_names(group)
            } else {
                vec![leading_ident(after)]
            };
            for to in targets {
                if !to.is_empty() && to != from {
                    let at = format!("{}:{}", rel(&path), line_of(&code, start));
                    out.push(Edge {
                        from: from.clone(),
                        to,
                        at,
                    });
                }
            }
        }
    }
    out
}

fn leading_ident(s: &str) -> String {
    s.chars().take_while(|&c| ident_char(c)).collect()
}

/// The first path segment of each entry of a `{a::b, c, d::{e, f}}` group.
fn top_level_names(group: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut at_entry_start = true;
    for (k, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_entry_start = true,
            c if at_entry_start && ident_char(c) => {
                names.push(leading_ident(&group[k..]));
                at_entry_start = false;
            }
            _ => {}
        }
    }
    names
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct St<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn module_graph_has_no_cycle() {
    let edges = edges();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &edges {
        graph
            .entry(e.from.clone())
            .or_default()
            .insert(e.to.clone());
        graph.entry(e.to.clone()).or_default();
    }
    let mut report = String::new();
    for comp in cycles(&graph) {
        report += &format!(
            "cycle of {} modules: {}\n",
            comp.len(),
            comp.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        let mut seen = BTreeSet::new();
        for e in edges
            .iter()
            .filter(|e| comp.contains(&e.from) && comp.contains(&e.to))
        {
            if seen.insert((e.from.as_str(), e.to.as_str())) {
                report += &format!("  {} -> {}  ({})\n", e.from, e.to, e.at);
            }
        }
    }
    assert!(
        report.is_empty(),
        "module cycles (first use of each edge shown):\n{report}"
    );
}

#[test]
fn modules_use_only_their_own_or_lower_layers() {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i)))
        .collect();
    let mut report = String::new();
    let mut unplaced = BTreeSet::new();
    for (path, _) in library_files() {
        let m = module_of(&path);
        if !layer_of.contains_key(m.as_str()) {
            unplaced.insert(m);
        }
    }
    for m in &unplaced {
        report += &format!("module `{m}` is in no layer: add it to LAYERS\n");
    }
    let mut upward = BTreeSet::new();
    for e in edges() {
        let (Some(&f), Some(&t)) = (layer_of.get(e.from.as_str()), layer_of.get(e.to.as_str()))
        else {
            continue;
        };
        if t > f {
            upward.insert(format!(
                "{} ({}) -> {} ({})  at {}\n",
                e.from, LAYERS[f].0, e.to, LAYERS[t].0, e.at
            ));
        }
    }
    report.extend(upward);
    assert!(
        report.is_empty(),
        "uses that point up the layers:\n{report}"
    );
}

/// Every non-test `fn` with a body: (file:line, name, length in lines).
fn functions() -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for (path, text) in source_files() {
        let code = non_test_code(&text);
        let b = code.as_bytes();
        let mut search = 0;
        while let Some(pos) = code[search..].find("fn ") {
            let start = search + pos;
            search = start + 3;
            if start > 0 && ident_char(b[start - 1] as char) {
                continue;
            }
            let name = leading_ident(code[start + 3..].trim_start());
            if name.is_empty() {
                continue;
            }
            let end = item_end(b, start);
            if b.get(end - 1) != Some(&b'}') {
                continue; // a declaration without a body
            }
            let (first, last) = (line_of(&code, start), line_of(&code, end - 1));
            out.push((format!("{}:{first}", rel(&path)), name, last - first + 1));
        }
    }
    out
}

#[test]
fn functions_stay_short() {
    let mut report = String::new();
    for (at, name, lines) in functions() {
        let file = at.split(':').next().unwrap();
        if lines <= MAX_FN_LINES
            || FN_SIZE_EXEMPT_FILES.iter().any(|(f, _)| *f == file)
            || FN_SIZE_ALLOWED
                .iter()
                .any(|(f, _)| *f == format!("{file}:{name}"))
        {
            continue;
        }
        report += &format!("{at} fn {name}: {lines} lines\n");
    }
    assert!(
        report.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named steps):\n{report}"
    );
}

/// The scanner itself: a cycle planted in a tiny graph is found, and literals and
/// comments do not count as uses.
#[test]
fn scanner_finds_cycles_and_ignores_literals() {
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .iter()
        .fold(BTreeMap::new(), |mut g, (f, t)| {
            g.entry(f.to_string())
                .or_insert_with(BTreeSet::new)
                .insert(t.to_string());
            g.entry(t.to_string()).or_default();
            g
        });
    let found = cycles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0],
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    );

    let src = "// crate::x\nlet s = \"crate::y {\"; let c = '{'; let q = '\\''; fn f<'a>() { r#\"crate::z\"# }\n#[cfg(test)]\nmod tests { use crate::w; }\n";
    let code = non_test_code(src);
    assert!(!code.contains("crate::"), "{code}");
    assert_eq!(code.matches('{').count(), code.matches('}').count());
    assert_eq!(top_level_names("a::b, c, d::{e, f}}; use"), ["a", "c", "d"]);
}

/// Prints each module's uses, for finding one's place in [`LAYERS`]:
/// `cargo test --test layering -- --ignored --nocapture print_module_graph`.
#[test]
#[ignore]
fn print_module_graph() {
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for e in edges() {
        graph.entry(e.from).or_default().entry(e.to).or_insert(e.at);
    }
    for (from, tos) in graph {
        println!("{from}:");
        for (to, at) in tos {
            println!("  -> {to}  ({at})");
        }
    }
}
