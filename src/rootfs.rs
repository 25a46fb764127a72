//! The rootfs model: the final, whiteout-applied filesystem of an image as a sorted
//! map `path -> metadata + where its bytes live`. Built by streaming each layer once;
//! nothing is ever extracted to the host, so hostile paths and symlinks in a layer
//! can't touch the machine. Small files the steps need (`/etc`, the dpkg database)
//! are captured in memory while indexing; everything else stays a reference into
//! its layer, so memory grows with the number of files, not their bytes.
pub use crate::fspath::{normalize, parent_of, Kind};
use crate::tarread::{TarEntry, TarReader};
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Bound;
use std::sync::Arc;

/// Where a regular file's bytes live. The length is part of the content, so a file's
/// size cannot disagree with its bytes.
#[derive(Debug, Clone)]
pub enum Content {
    /// No bytes.
    Empty,
    /// `size` bytes in base layer `layer` (0-based) at this path.
    Layer {
        layer: u32,
        size: u64,
    },
    Bytes(Arc<Vec<u8>>),
    /// Builder artifact bytes, copied once from the host into a private spill file
    /// (boxed: rare, and it would double the size of every node).
    Host(Box<crate::spill::Spilled>),
}

impl Content {
    /// `size` bytes of base layer `layer`.
    pub fn layer(layer: usize, size: u64) -> Content {
        Content::Layer {
            layer: u32::try_from(layer).unwrap_or(u32::MAX),
            size,
        }
    }
    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Empty => 0,
            Content::Layer { size, .. } => *size,
            Content::Bytes(b) => b.len() as u64,
            Content::Host(h) => h.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The base layer holding the bytes, when they were not captured.
    pub fn base_layer(&self) -> Option<usize> {
        match self {
            Content::Layer { layer, .. } => Some(*layer as usize),
            _ => None,
        }
    }
}

/// What only a regular file has: its bytes and the facts read from them.
#[derive(Debug, Clone)]
pub struct FileData {
    pub content: Content,
    /// Starts with the ELF magic.
    pub elf: bool,
    /// The ELF `e_machine` (0: not ELF, or too short to say), checked against the
    /// image's architecture.
    pub machine: u16,
    /// Content digest (captured or `hash_contents` files only). Boxed: only `diff`
    /// hashes every file.
    pub sha256: Option<Box<[u8; 32]>>,
}

impl FileData {
    /// A file of `content`; ELF facts are read from bytes held in memory.
    pub fn new(content: Content) -> FileData {
        let (elf, machine) = match &content {
            Content::Bytes(b) => (
                b.starts_with(b"\x7fELF"),
                crate::elf::machine(b).unwrap_or(0),
            ),
            _ => (false, 0),
        };
        FileData {
            content,
            elf,
            machine,
            sha256: None,
        }
    }
}

/// What only a hardlink has: its target and the content facts of the file it shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardlinkData {
    /// Target path (normalized model key).
    pub target: Box<str>,
    pub elf: bool,
    pub sha256: Option<Box<[u8; 32]>>,
}

/// The kind of a node with the fields only that kind has, so a directory cannot
/// carry a link target or a file device numbers.
#[derive(Debug, Clone)]
pub enum Body {
    File(FileData),
    Dir,
    /// Target as stored in the layer.
    Symlink(Box<str>),
    /// Boxed: hardlinks are rare, and inline they would grow every node.
    Hardlink(Box<HardlinkData>),
    /// (major, minor).
    Char((u32, u32)),
    Block((u32, u32)),
    Fifo,
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::File(_) => Kind::File,
            Body::Dir => Kind::Dir,
            Body::Symlink(_) => Kind::Symlink,
            Body::Hardlink(_) => Kind::Hardlink,
            Body::Char(_) => Kind::Char,
            Body::Block(_) => Kind::Block,
            Body::Fifo => Kind::Fifo,
        }
    }
    /// A hardlink to `target` (a model key) with no content facts yet.
    pub fn hardlink(target: &str) -> Body {
        Body::Hardlink(Box::new(HardlinkData {
            target: target.into(),
            elf: false,
            sha256: None,
        }))
    }
}

/// Sentinel of [`Node::layer`]: the build added the node.
const NO_LAYER: u16 = u16::MAX;

/// The most base layers the model indexes ([`Node::layer`] is 16 bits).
pub const MAX_LAYERS: usize = NO_LAYER as usize;

/// One path of the model: the metadata every kind has, and a [`Body`] per kind. A
/// base has up to a million of these, so the node is kept small (88 bytes, see the
/// `node_stays_small` test): xattrs and hardlink data are boxed, the layer index is
/// 16 bits and the layer mask is two words.
#[derive(Debug, Clone)]
pub struct Node {
    /// Permission bits including setuid/setgid/sticky (mask 0o7777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Base layer whose entry defines this node ([`NO_LAYER`]: the build added it).
    layer: u16,
    /// Changed by a build step: must be written into the new layer.
    pub modified: bool,
    /// Bitmask of base layers that carry an entry at this path (shadowed copies
    /// included): a rewrite must drop the path from all of them. Two words rather
    /// than a `u128`, whose 16-byte alignment would pad every node.
    in_layers: [u64; 2],
    /// Never `Some` of an empty map. Boxed on purpose: 8 bytes instead of 24 in
    /// every node, for a field that few files set.
    #[allow(clippy::box_collection)]
    xattrs: Option<Box<BTreeMap<String, Vec<u8>>>>,
    body: Body,
}

/// What [`Node::xattrs`] returns for a node without any.
static NO_XATTRS: BTreeMap<String, Vec<u8>> = BTreeMap::new();

impl Node {
    pub fn dir(mode: u32, uid: u64, gid: u64) -> Node {
        Node::new(Body::Dir, mode, uid, gid)
    }
    pub fn file(mode: u32, uid: u64, gid: u64, bytes: Vec<u8>) -> Node {
        let data = FileData::new(Content::Bytes(Arc::new(bytes)));
        Node::new(Body::File(data), mode, uid, gid)
    }
    pub fn symlink(target: &str) -> Node {
        Node::new(Body::Symlink(target.into()), 0o777, 0, 0)
    }
    /// A node the build adds (modified, in no base layer); mtime 0.
    pub fn new(body: Body, mode: u32, uid: u64, gid: u64) -> Node {
        Node {
            mode,
            uid,
            gid,
            mtime: 0,
            layer: NO_LAYER,
            modified: true,
            in_layers: [0; 2],
            xattrs: None,
            body,
        }
    }
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir)
    }
    pub fn body(&self) -> &Body {
        &self.body
    }
    pub fn body_mut(&mut self) -> &mut Body {
        &mut self.body
    }
    /// Replaces the kind and its fields, keeping the common metadata.
    pub fn set_body(&mut self, body: Body) {
        self.body = body;
    }
    /// The file part of a regular file.
    pub fn as_file(&self) -> Option<&FileData> {
        match &self.body {
            Body::File(f) => Some(f),
            _ => None,
        }
    }
    pub fn as_file_mut(&mut self) -> Option<&mut FileData> {
        match &mut self.body {
            Body::File(f) => Some(f),
            _ => None,
        }
    }
    /// A regular file's content; None for every other kind.
    pub fn content(&self) -> Option<&Content> {
        self.as_file().map(|f| &f.content)
    }
    /// Bytes of data: a regular file's size, 0 for every other kind (as in tar).
    pub fn size(&self) -> u64 {
        self.content().map_or(0, Content::len)
    }
    /// Starts with the ELF magic (a hardlink: the file it shares).
    pub fn elf(&self) -> bool {
        match &self.body {
            Body::File(f) => f.elf,
            Body::Hardlink(h) => h.elf,
            _ => false,
        }
    }
    /// A regular file's ELF `e_machine` (0: not known).
    pub fn machine(&self) -> u16 {
        self.as_file().map_or(0, |f| f.machine)
    }

    /// Base layer whose entry defines this node; None when the build added it.
    pub fn layer(&self) -> Option<usize> {
        (self.layer != NO_LAYER).then_some(self.layer as usize)
    }
    /// Sets [`Node::layer`] ([`Node::in_layers`] is left alone); layers past
    /// [`MAX_LAYERS`] are refused by [`Rootfs::apply_tar`] before they get here.
    pub fn set_layer(&mut self, layer: Option<usize>) {
        self.layer = match layer {
            Some(l) => u16::try_from(l).unwrap_or(NO_LAYER - 1).min(NO_LAYER - 1),
            None => NO_LAYER,
        };
    }
    /// Bitmask of base layers with an entry at this path (layer 127 and up share a bit).
    pub fn in_layers(&self) -> u128 {
        u128::from(self.in_layers[0]) | u128::from(self.in_layers[1]) << 64
    }
    pub fn add_in_layers(&mut self, mask: u128) {
        self.in_layers[0] |= mask as u64;
        self.in_layers[1] |= (mask >> 64) as u64;
    }

    /// Symlink target, or hardlink target path (normalized, relative).
    pub fn link(&self) -> Option<&str> {
        match &self.body {
            Body::Symlink(t) => Some(t),
            Body::Hardlink(h) => Some(&h.target),
            _ => None,
        }
    }
    pub fn xattrs(&self) -> &BTreeMap<String, Vec<u8>> {
        self.xattrs.as_deref().unwrap_or(&NO_XATTRS)
    }
    pub fn set_xattrs(&mut self, xattrs: BTreeMap<String, Vec<u8>>) {
        self.xattrs = (!xattrs.is_empty()).then(|| Box::new(xattrs));
    }
    pub fn insert_xattr(&mut self, name: &str, value: Vec<u8>) {
        self.xattrs
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), value);
    }
    pub fn remove_xattr(&mut self, name: &str) -> Option<Vec<u8>> {
        let m = self.xattrs.as_mut()?;
        let old = m.remove(name);
        if m.is_empty() {
            self.xattrs = None;
        }
        old
    }
    /// Device numbers (major, minor) of a character or block device; (0, 0) otherwise.
    pub fn dev(&self) -> (u32, u32) {
        match self.body {
            Body::Char(d) | Body::Block(d) => d,
            _ => (0, 0),
        }
    }
    /// Content digest (`sha256:<hex>`), when the indexer hashed this file.
    pub fn sha256(&self) -> Option<String> {
        self.sha256_bytes()
            .map(|d| format!("sha256:{}", hex::encode(d)))
    }
    /// A file's digest, or a hardlink's (the file it shares).
    pub fn sha256_bytes(&self) -> Option<&[u8; 32]> {
        match &self.body {
            Body::File(f) => f.sha256.as_deref(),
            Body::Hardlink(h) => h.sha256.as_deref(),
            _ => None,
        }
    }
}

/// A file hidden by a whiteout in a later layer: invisible, but its bytes still ship.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hidden {
    pub path: String,
    pub layer: usize,
    pub size: u64,
    pub elf: bool,
}

/// What to keep in memory while indexing.
#[derive(Clone)]
pub struct IndexOptions {
    /// Capture the bytes of regular files for which this returns true (path, size).
    pub capture: fn(&str, u64) -> bool,
    /// Hash every regular file's content (for `diff`).
    pub hash_contents: bool,
    /// Also capture setid and file-capability files (up to [`MAX_SPECIAL_CAPTURE`]):
    /// `[sanitize]` rewrites them, and holding their few bytes spares the build a
    /// second full pass over the layer to load them.
    pub capture_special: bool,
    /// The most bytes held in memory over all layers (captured files). A crafted
    /// layer of many large files under `etc/` or with setid bits compresses to
    /// nearly nothing; past this it is refused instead of filling memory.
    pub max_captured: u64,
    /// Refuse images with more tar entries than this, over all layers (`--max-entries`):
    /// the model costs memory per entry, and a small layer can hold millions.
    pub max_entries: u64,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            capture: default_capture,
            hash_contents: false,
            capture_special: true,
            max_captured: MAX_CAPTURED,
            max_entries: crate::tarread::max_entries(),
        }
    }
}

/// The largest setid or file-capability file captured while indexing (see
/// [`IndexOptions::capture_special`]); a larger one is loaded by a later pass.
pub const MAX_SPECIAL_CAPTURE: u64 = 16 << 20;

/// Default of [`IndexOptions::max_captured`]: far above what a Debian base holds in
/// `/etc` and the dpkg database (tens of MiB).
pub const MAX_CAPTURED: u64 = 256 << 20;

/// Whether a regular file is setid or carries file capabilities.
pub fn is_special(mode: u32, xattrs: &BTreeMap<String, Vec<u8>>) -> bool {
    mode & 0o6000 != 0 || xattrs.contains_key("security.capability")
}

impl IndexOptions {
    /// Whether `e` is a setid or file-capability file to capture whatever `capture`
    /// says (see [`IndexOptions::capture_special`]).
    fn holds_special(&self, e: &crate::tarread::TarEntry) -> bool {
        self.capture_special && e.size <= MAX_SPECIAL_CAPTURE && is_special(e.mode, &e.xattrs)
    }
}

/// Text the build steps edit: account files, shell init, the dpkg/apt databases.
pub fn default_capture(path: &str, size: u64) -> bool {
    size <= 32 << 20
        && (path.starts_with("etc/")
            || path.starts_with("var/lib/dpkg/")
            || path == "var/lib/apt/extended_states"
            || path.starts_with("usr/lib/os-release")
            || path.starts_with("sandbox/"))
}

#[derive(Debug, Default, Clone)]
pub struct Rootfs {
    /// Boxed values and `Box<str>` keys (16 bytes, not 24): a B-tree leaf holds 11
    /// slots and sorted inserts leave it about half full, so each byte of a slot costs
    /// nearly two.
    pub nodes: BTreeMap<Box<str>, Box<Node>>,
    /// Paths present in the base that the build removed.
    pub removed: BTreeSet<String>,
    /// Bytes captured into memory while indexing, over all layers (bounded by
    /// [`IndexOptions::max_captured`]).
    pub captured: u64,
    pub hidden: Vec<Hidden>,
    pub layers: usize,
    /// Union of `in_layers` of removed paths: the base layers a rewrite must touch.
    pub removed_mask: u128,
    /// Every hardlink entry of the base layers, shadowed ones included: a rewrite
    /// that drops a target must carry its bytes into the links.
    pub links: Vec<LinkEntry>,
    /// Whiteouts next to an entry they name in the same layer (see [`SameLayerWhiteout`]).
    pub same_layer_whiteouts: Vec<SameLayerWhiteout>,
    /// Tar entries read so far, over all layers.
    pub entries: u64,
}

/// A hardlink entry of base layer `layer`: `path` -> `target` (model keys).
#[derive(Debug, Clone)]
pub struct LinkEntry {
    pub layer: usize,
    pub path: String,
    pub target: String,
}

/// A whiteout and an entry it names in the same layer. The OCI spec applies
/// whiteouts to lower layers only, so the entry stays visible (and the model keeps
/// it); runtimes differ (overlayfs unpacking fails, naive unpacking deletes it), so
/// `audit` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SameLayerWhiteout {
    pub layer: usize,
    /// The whiteout entry (`etc/.wh.passwd`).
    pub whiteout: String,
    /// The same-layer entry at or below the path it names.
    pub path: String,
}

/// What an OCI whiteout entry does.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout {
    /// `DIR/.wh..wh..opq`: hide everything lower layers have below DIR.
    Opaque(String),
    /// `DIR/.wh.NAME`: hide DIR/NAME (and below) of lower layers.
    Path(String),
}

/// The whiteout meaning of a model key, if its last component is a whiteout name.
/// `.wh.`, `.wh..` and `.wh...` are refused: a runtime would remove nothing, the
/// directory itself, or its parent.
pub fn whiteout_of(key: &str) -> std::result::Result<Option<Whiteout>, String> {
    let (dir, name) = match key.rfind('/') {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => ("", key),
    };
    if name == ".wh..wh..opq" {
        return Ok(Some(Whiteout::Opaque(dir.to_string())));
    }
    let Some(target) = name.strip_prefix(".wh.") else {
        return Ok(None);
    };
    if matches!(target, "" | "." | "..") {
        return Err(format!("invalid whiteout name '{name}'"));
    }
    Ok(Some(Whiteout::Path(if dir.is_empty() {
        target.to_string()
    } else {
        format!("{dir}/{target}")
    })))
}

/// `a/b/c`, `a/b`, `a` (the key itself first, the root excluded).
fn ancestors_and_self(key: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(key).filter(|k| !k.is_empty()), |k| {
        parent_of(k).filter(|p| !p.is_empty())
    })
}

fn under(dir: &str) -> String {
    format!("{dir}/")
}

impl Rootfs {
    pub fn new() -> Rootfs {
        Rootfs::default()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(normalize(path).ok()?.as_str()).map(|n| &**n)
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        let key = normalize(path).ok()?;
        self.nodes.get_mut(key.as_str()).map(|n| &mut **n)
    }

    /// Paths strictly below `dir` (sorted).
    pub fn descendants<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            under(dir)
        };
        self.nodes
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, n)| (&**k, &**n))
    }

    fn descendant_keys(&self, dir: &str) -> Vec<String> {
        self.descendants(dir).map(|(k, _)| k.to_string()).collect()
    }

    /// Removes a path and everything below it; records base paths as removed.
    pub fn remove(&mut self, path: &str) -> usize {
        let Ok(key) = normalize(path) else { return 0 };
        let mut keys = self.descendant_keys(&key);
        keys.push(key);
        let mut n = 0;
        for k in keys {
            if let Some(node) = self.nodes.remove(k.as_str()) {
                n += 1;
                if node.layer().is_some() {
                    self.removed_mask |= node.in_layers();
                    self.removed.insert(k);
                }
            }
        }
        n
    }

    /// Inserts (or replaces) a node, creating missing parents as root:root 0755 dirs.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<()> {
        let key = normalize(path)?;
        if key.is_empty() {
            bail!("cannot replace the root directory");
        }
        self.ensure_parents(&key)?;
        if let Some(old) = self.nodes.get(key.as_str()) {
            if old.is_dir() && !node.is_dir() {
                self.remove(&key);
            }
        }
        self.removed.remove(&key);
        self.nodes.insert(key.into(), Box::new(node));
        Ok(())
    }

    fn ensure_parents(&mut self, key: &str) -> Result<()> {
        let mut acc = String::new();
        let comps: Vec<&str> = key.split('/').collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            match self.nodes.get(acc.as_str()) {
                Some(n) if n.is_dir() => {}
                Some(n) => bail!(
                    "cannot create '/{key}': '/{acc}' is a {:?}, not a directory",
                    n.kind()
                ),
                None => {
                    self.removed.remove(&acc);
                    self.nodes
                        .insert(acc.as_str().into(), Box::new(Node::dir(0o755, 0, 0)));
                }
            }
        }
        Ok(())
    }

    /// Bytes of a regular file, if held in memory or on the host.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let key = normalize(path)?;
        let node = self
            .nodes
            .get(key.as_str())
            .ok_or_else(|| anyhow!("/{key} does not exist in the image"))?;
        match node.content() {
            Some(Content::Bytes(b)) => Ok(b.as_ref().clone()),
            Some(Content::Empty) => Ok(Vec::new()),
            Some(Content::Host(h)) => h
                .read_all()
                .with_context(|| format!("/{key}: cannot read the artifacts spill file")),
            Some(Content::Layer { layer, .. }) => {
                bail!(
                    "/{key}: content in layer {} was not captured",
                    *layer as u64 + 1
                )
            }
            None => bail!("/{key} is a {:?}, not a regular file", node.kind()),
        }
    }

    /// Replaces a regular file's content, keeping its metadata (or creating it 0644 root).
    pub fn write(&mut self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let key = normalize(path)?;
        match self.nodes.get_mut(key.as_str()) {
            Some(n) if n.kind() == Kind::File => {
                n.set_body(Body::File(FileData::new(Content::Bytes(Arc::new(bytes)))));
                n.modified = true;
                Ok(())
            }
            Some(n) => bail!("cannot write /{key}: it is a {:?}", n.kind()),
            None => self.insert(&key, Node::file(0o644, 0, 0, bytes)),
        }
    }

    /// Follows symlinks inside the image (chroot semantics: `..` and absolute targets
    /// stay inside the root). Returns the final path, which may not exist.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect();
        pending.reverse();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            let key = cur.join("/");
            if let Some(n) = self.nodes.get(key.as_str()) {
                if n.kind() == Kind::Symlink {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    let target = n.link().unwrap_or_default().to_string();
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    let mut t: Vec<String> = target
                        .split('/')
                        .filter(|c| !c.is_empty() && *c != ".")
                        .map(str::to_string)
                        .collect();
                    t.reverse();
                    pending.extend(t);
                }
            }
        }
        Some(cur.join("/"))
    }

    /// Streams one layer's tar into the model, applying OCI whiteouts.
    pub fn apply_layer(
        &mut self,
        layer: usize,
        label: &str,
        reader: impl Read,
        opts: &IndexOptions,
    ) -> Result<LayerStats> {
        let tar = TarReader::new(reader, label).max_entries(opts.max_entries);
        self.apply_tar(layer, label, tar, opts)
    }

    /// Like [`Rootfs::apply_layer`], from a reader set up by the caller (spill file).
    /// The entries come from [`TarReader`], which refuses what readers disagree on;
    /// this adds the rules that need the model: whiteouts, parents, hardlinks.
    pub fn apply_tar(
        &mut self,
        layer: usize,
        label: &str,
        mut tar: impl EntrySource,
        opts: &IndexOptions,
    ) -> Result<LayerStats> {
        if layer >= MAX_LAYERS {
            bail!("{label}: the image has more than {MAX_LAYERS} layers; refusing to index it");
        }
        let mut stats = LayerStats::default();
        let mut seen = LayerPaths::default();
        while let Some(e) = tar.next_entry()? {
            stats.entries += 1;
            self.count_entry(label, opts)?;
            let key = e.path.clone();
            let fail = |msg: String| anyhow!("{label}: entry '{}': {msg}", e.name);
            self.check_parents(&key, label, &e.name)?;
            if let Some(w) = whiteout_of(&key).map_err(&fail)? {
                self.apply_whiteout(layer, &key, w, &mut seen);
                stats.whiteouts += 1;
                continue;
            }
            if key.is_empty() {
                if e.kind != Kind::Dir {
                    return Err(fail(format!(
                        "replaces the root directory with a {:?}",
                        e.kind
                    )));
                }
                continue;
            }
            self.note_whited_parent(layer, &key, &seen);
            self.check_replacement(layer, &key, &e, &seen, &mut stats)
                .map_err(&fail)?;
            let mut node = self.entry_node(layer, &key, &e, &mut seen).map_err(&fail)?;
            if e.kind == Kind::File {
                self.file_data(&mut tar, &mut node, &key, &e, label, opts)?;
                stats.bytes += node.size();
            }
            // A non-directory replaces a directory together with its lower children.
            if e.kind != Kind::Dir {
                for k in self.descendant_keys(&key) {
                    self.hide(&k, layer);
                }
            }
            self.nodes.insert(key.into(), Box::new(node));
        }
        // Drain to EOF so compressed-stream trailers and blob digests get verified.
        tar.finish_entries()?;
        self.layers = self.layers.max(layer + 1);
        Ok(stats)
    }

    /// Counts an entry of the image against `--max-entries`.
    fn count_entry(&mut self, label: &str, opts: &IndexOptions) -> Result<()> {
        self.entries += 1;
        if self.entries > opts.max_entries {
            bail!(
                "{label}: the image has more than {} tar entries (--max-entries); refusing to index it",
                opts.max_entries
            );
        }
        Ok(())
    }

    /// Nothing may be written through a symlink or below a non-directory. The
    /// symlink case is its own error: it names the symlink, not the entry's kind.
    fn check_parents(&self, key: &str, label: &str, name: &str) -> Result<()> {
        let Some((p, n)) = self.non_dir_ancestor(key) else {
            return Ok(());
        };
        if n.kind() == Kind::Symlink {
            bail!("{label}: entry '{name}' lies below '/{p}', which is a symlink");
        }
        bail!(
            "{label}: entry '{name}': lies below '/{p}', which is a {:?}, not a directory",
            n.kind()
        )
    }

    /// A whiteout hides what lower layers have at its path (an opaque one: below
    /// its directory); a same-layer victim is noted as an ambiguity.
    fn apply_whiteout(&mut self, layer: usize, key: &str, w: Whiteout, seen: &mut LayerPaths) {
        match w {
            Whiteout::Opaque(dir) => {
                let lower: Vec<String> = self
                    .descendants(&dir)
                    .filter(|(_, n)| n.layer().is_some_and(|l| l < layer))
                    .map(|(k, _)| k.to_string())
                    .collect();
                for k in lower {
                    self.hide(&k, layer);
                }
            }
            Whiteout::Path(victim) => {
                let mut keys = vec![victim.clone()];
                keys.extend(self.descendant_keys(&victim));
                for k in keys {
                    match self.nodes.get(k.as_str()).and_then(|n| n.layer()) {
                        Some(l) if l < layer => self.hide(&k, layer),
                        Some(l) if l == layer => self.same_layer(layer, key, &k),
                        _ => {}
                    }
                }
                seen.whited.insert(victim);
            }
        }
    }

    /// An entry at or below a path this layer whited out earlier: readers differ
    /// on which comes first, so it is noted as a same-layer whiteout.
    fn note_whited_parent(&mut self, layer: usize, key: &str, seen: &LayerPaths) {
        if seen.whited.is_empty() {
            return;
        }
        if let Some(w) = ancestors_and_self(key).find(|p| seen.whited.contains(*p)) {
            let wh = match parent_of(w) {
                Some("") | None => format!(".wh.{w}"),
                Some(d) => format!("{d}/.wh.{}", &w[d.len() + 1..]),
            };
            self.same_layer(layer, &wh, key);
        }
    }

    /// Replacements that readers resolve differently within one layer are refused:
    /// a file a hardlink shares, a kind change, a directory with entries.
    fn check_replacement(
        &self,
        layer: usize,
        key: &str,
        e: &TarEntry,
        seen: &LayerPaths,
        stats: &mut LayerStats,
    ) -> Result<(), String> {
        if seen.linked.contains(key) {
            return Err(format!(
                "replaces '/{key}', which a hardlink earlier in this layer shares (Python rewrites the shared file, GNU tar and containerd replace it)"
            ));
        }
        if let Some(o) = self.nodes.get(key).filter(|o| o.layer() == Some(layer)) {
            stats.duplicates += 1;
            if o.is_dir() != (e.kind == Kind::Dir) {
                return Err(format!(
                    "a {:?} replacing a {:?} earlier in the same layer (GNU tar and Python fail, containerd replaces it)",
                    e.kind,
                    o.kind()
                ));
            }
        }
        if e.kind != Kind::Dir && self.descendants(key).any(|(_, n)| n.layer() == Some(layer)) {
            return Err(format!(
                "a {:?} replacing a directory that has entries earlier in the same layer",
                e.kind
            ));
        }
        Ok(())
    }

    /// The entry's node, carrying the layers its path was in before; a hardlink
    /// takes its target's content facts and is recorded.
    fn entry_node(
        &mut self,
        layer: usize,
        key: &str,
        e: &TarEntry,
        seen: &mut LayerPaths,
    ) -> Result<Node, String> {
        let mut node = e.node(layer);
        node.add_in_layers(self.nodes.get(key).map(|o| o.in_layers()).unwrap_or(0));
        if let (Kind::Hardlink, Some(t)) = (e.kind, &e.link) {
            let (file, target) = self.hardlink_target(key, t)?;
            let (elf, sha256) = (target.elf(), target.sha256_bytes().map(|d| Box::new(*d)));
            if let Body::Hardlink(h) = node.body_mut() {
                (h.elf, h.sha256) = (elf, sha256);
            }
            seen.linked.insert(t.clone());
            seen.linked.insert(file);
            self.links.push(LinkEntry {
                layer,
                path: key.to_string(),
                target: t.clone(),
            });
        }
        Ok(node)
    }

    /// Captures, hashes or sniffs (ELF magic) a regular file's data, as `opts` asks.
    pub(crate) fn read_content(
        node: &mut FileData,
        key: &str,
        name: &str,
        data: &mut impl Read,
        label: &str,
        opts: &IndexOptions,
    ) -> Result<()> {
        let size = node.content.len();
        let capture = (opts.capture)(key, size);
        let truncated = || format!("{label}: entry '{name}': truncated data");
        if capture || opts.hash_contents {
            let mut buf = Vec::with_capacity(if capture { size as usize } else { 0 });
            let mut hasher = Sha256::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let mut first = true;
            loop {
                let n = data.read(&mut chunk).with_context(truncated)?;
                if n == 0 {
                    break;
                }
                if first {
                    node.elf = chunk[..n].starts_with(b"\x7fELF");
                    node.machine = crate::elf::machine(&chunk[..n]).unwrap_or(0);
                    first = false;
                }
                hasher.update(&chunk[..n]);
                if capture {
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            node.sha256 = Some(Box::new(hasher.finalize().into()));
            if capture {
                node.content = Content::Bytes(Arc::new(buf));
            }
        } else if size >= 4 {
            let mut head = [0u8; crate::elf::HEAD_LEN];
            let len = (size as usize).min(head.len());
            data.read_exact(&mut head[..len]).with_context(truncated)?;
            node.elf = head.starts_with(b"\x7fELF");
            node.machine = crate::elf::machine(&head[..len]).unwrap_or(0);
        }
        Ok(())
    }

    /// Reads a regular file's data into `node` as `opts` asks, holding setid and
    /// file-capability files too while the capture budget allows, and counting what
    /// is held: past [`IndexOptions::max_captured`] the image is refused.
    fn file_data(
        &mut self,
        tar: &mut impl EntrySource,
        node: &mut Node,
        key: &str,
        e: &TarEntry,
        label: &str,
        opts: &IndexOptions,
    ) -> Result<()> {
        let Some(f) = node.as_file_mut() else {
            return Ok(());
        };
        let all;
        let o = if opts.holds_special(e) && self.captured + e.size <= opts.max_captured {
            all = IndexOptions {
                capture: |_, _| true,
                ..opts.clone()
            };
            &all
        } else {
            opts
        };
        tar.file_content(f, key, &e.name, label, o)?;
        if let Content::Bytes(b) = &f.content {
            self.captured += b.len() as u64;
            if self.captured > opts.max_captured {
                bail!(
                    "{label}: entry '{}': the files read into memory while indexing (account files, \
                     dpkg database, setid files) exceed {} bytes; refusing the image",
                    e.name,
                    opts.max_captured
                );
            }
        }
        Ok(())
    }

    /// The topmost ancestor of `key` in the model that is not a directory.
    fn non_dir_ancestor<'k>(&self, key: &'k str) -> Option<(&'k str, &Node)> {
        ancestors_and_self(key)
            .skip(1)
            .filter_map(|p| self.nodes.get(p).filter(|n| !n.is_dir()).map(|n| (p, &**n)))
            .last()
    }

    /// The regular file a new hardlink `key -> target` shares, following chains of
    /// hardlinks. Refused: missing targets, itself, directories (a runtime cannot
    /// link them) and anything but regular files (a hardlinked symlink would be
    /// followed by a runtime but not by the model).
    pub fn hardlink_target(
        &self,
        key: &str,
        target: &str,
    ) -> std::result::Result<(String, &Node), String> {
        if target == key {
            return Err("hardlink to itself".into());
        }
        let mut cur = target.to_string();
        for _ in 0..64 {
            let Some(n) = self.nodes.get(cur.as_str()) else {
                return Err(format!(
                    "hardlink to '/{target}', which does not exist in this or a lower layer"
                ));
            };
            match (n.kind(), n.link()) {
                (Kind::File, _) => return Ok((cur, n)),
                (Kind::Hardlink, Some(next)) => cur = next.to_string(),
                (Kind::Dir, _) => return Err(format!("hardlink to '/{target}', a directory")),
                (k, _) => {
                    return Err(format!(
                        "hardlink to '/{target}', a {k:?}, not a regular file"
                    ))
                }
            }
        }
        Err(format!("hardlink chain from '/{target}' is too long"))
    }

    /// The regular file a hardlink node ultimately shares, if it is still in the model.
    pub fn link_file(&self, key: &str) -> Option<&Node> {
        let mut n = self.nodes.get(key)?;
        for _ in 0..64 {
            match (n.kind(), n.link()) {
                (Kind::Hardlink, Some(t)) => n = self.nodes.get(t)?,
                (Kind::File, _) => return Some(n),
                _ => return None,
            }
        }
        None
    }

    fn same_layer(&mut self, layer: usize, whiteout: &str, path: &str) {
        self.same_layer_whiteouts.push(SameLayerWhiteout {
            layer,
            whiteout: whiteout.to_string(),
            path: path.to_string(),
        });
    }

    fn hide(&mut self, key: &str, by_layer: usize) {
        if let Some(n) = self.nodes.remove(key) {
            if let Some(l) = n.layer() {
                if l < by_layer && n.kind() == Kind::File {
                    self.hidden.push(Hidden {
                        path: key.to_string(),
                        layer: l,
                        size: n.size(),
                        elf: n.elf(),
                    });
                }
            }
        }
    }

    /// Total bytes of regular files.
    pub fn file_bytes(&self) -> u64 {
        self.nodes.values().map(|n| n.size()).sum()
    }
}

/// Paths one layer has whited out and hardlinked so far: later entries of the
/// same layer at these paths are what readers disagree on.
#[derive(Default)]
struct LayerPaths {
    whited: BTreeSet<String>,
    linked: BTreeSet<String>,
}

/// Where [`Rootfs::apply_tar`] takes a layer's entries from: its tar stream, or a
/// layer index record ([`crate::layer_index`]) holding what reading it learned.
pub trait EntrySource {
    fn next_entry(&mut self) -> Result<Option<TarEntry>>;
    /// What the data of the regular file just returned says: ELF flag and machine,
    /// and (as `opts` asks) its digest and captured bytes.
    fn file_content(
        &mut self,
        node: &mut FileData,
        key: &str,
        name: &str,
        label: &str,
        opts: &IndexOptions,
    ) -> Result<()>;
    /// After the last entry: verify what is left (trailers, digests).
    fn finish_entries(self) -> Result<()>;
}

impl<R: Read> EntrySource for TarReader<R> {
    fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        TarReader::next_entry(self)
    }
    fn file_content(
        &mut self,
        node: &mut FileData,
        key: &str,
        name: &str,
        label: &str,
        opts: &IndexOptions,
    ) -> Result<()> {
        Rootfs::read_content(node, key, name, self, label, opts)
    }
    fn finish_entries(self) -> Result<()> {
        self.finish().map(|_| ())
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct LayerStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub duplicates: u64,
    pub bytes: u64,
}

/// The model node of a tar entry of base layer `layer` (content stays in the layer).
impl TarEntry {
    /// The model node for this entry of base layer `layer` (content stays in the layer).
    pub fn node(&self, layer: usize) -> Node {
        let link = || self.link.as_deref().unwrap_or_default();
        let body = match self.kind {
            Kind::File => Body::File(FileData::new(Content::layer(layer, self.size))),
            Kind::Dir => Body::Dir,
            Kind::Symlink => Body::Symlink(link().into()),
            Kind::Hardlink => Body::hardlink(link()),
            Kind::Char => Body::Char(self.dev),
            Kind::Block => Body::Block(self.dev),
            Kind::Fifo => Body::Fifo,
        };
        let mut n = Node::new(body, self.mode, self.uid, self.gid);
        n.mtime = self.mtime;
        n.modified = false;
        n.set_layer(Some(layer));
        n.add_in_layers(1u128 << layer.min(127));
        if !self.xattrs.is_empty() {
            n.set_xattrs(self.xattrs.clone());
        }
        n
    }
}

/// `debug list-layer FILE`: this reader's view of one layer tar (plain, gzip or
/// zstd), one JSON object per entry in stream order, once the model (whiteouts,
/// parents, hardlinks) has accepted the layer as a single-layer image. Used by
/// scripts/e2e-tar-differential.sh to compare with GNU tar and Python's tarfile.
pub fn list_layer(path: &std::path::Path, out: &mut dyn std::io::Write) -> Result<()> {
    let label = format!("layer 1 ({})", path.display());
    let open = || -> Result<Box<dyn Read>> {
        let mut f = std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        );
        let magic = std::io::BufRead::fill_buf(&mut f)?.to_vec();
        Ok(if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::new(f)?)
        } else {
            Box::new(f)
        })
    };
    let mut fs = Rootfs::new();
    fs.apply_layer(0, &label, open()?, &IndexOptions::default())?;
    let mut tar = TarReader::new(open()?, &label);
    while let Some(e) = tar.next_entry()? {
        let v = serde_json::json!({
            "path": e.path,
            "type": serde_json::to_value(e.kind)?,
            "mode": e.mode,
            "uid": e.uid,
            "gid": e.gid,
            "size": e.size,
            "mtime": e.mtime,
            "link": e.link,
            "dev": [e.dev.0, e.dev.1],
        });
        writeln!(out, "{v}")?;
    }
    tar.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TarBuilder;

    /// A model of `layers` (tar bytes, bottom first), indexed with the default options.
    fn indexed(layers: &[&[u8]]) -> Rootfs {
        let mut fs = Rootfs::new();
        for (i, l) in layers.iter().enumerate() {
            let label = format!("layer {}", i + 1);
            fs.apply_layer(i, &label, *l, &IndexOptions::default())
                .unwrap();
        }
        fs
    }

    /// The model costs this per path; a base has up to a million (issue 16.6). 88
    /// bytes is what a 96-byte malloc chunk holds.
    #[test]
    fn node_stays_small() {
        let sizes = (
            std::mem::size_of::<Node>(),
            std::mem::size_of::<Body>(),
            std::mem::size_of::<Content>(),
        );
        assert!(sizes.0 <= 88 && sizes.1 <= 32 && sizes.2 <= 16, "{sizes:?}");
    }

    /// Each kind answers only for the fields it has; the others read as empty.
    #[test]
    fn kind_fields_belong_to_their_kind() {
        let dev = Node::new(Body::Char((1, 3)), 0o666, 0, 0);
        assert_eq!((dev.kind(), dev.dev(), dev.size()), (Kind::Char, (1, 3), 0));
        assert!(dev.link().is_none() && dev.content().is_none() && dev.sha256().is_none());
        let dir = Node::dir(0o755, 0, 0);
        assert_eq!(
            (dir.kind(), dir.dev(), dir.link()),
            (Kind::Dir, (0, 0), None)
        );
        let sym = Node::symlink("usr/bin");
        assert_eq!(
            (sym.kind(), sym.link(), sym.size()),
            (Kind::Symlink, Some("usr/bin"), 0)
        );
        let mut link = Node::new(Body::hardlink("usr/bin/su"), 0o4755, 0, 0);
        if let Body::Hardlink(h) = link.body_mut() {
            (h.elf, h.sha256) = (true, Some(Box::new([7; 32])));
        }
        assert_eq!(
            (link.kind(), link.link()),
            (Kind::Hardlink, Some("usr/bin/su"))
        );
        assert!(link.elf() && link.sha256_bytes() == Some(&[7; 32]));
        assert_eq!((link.size(), link.machine(), link.dev()), (0, 0, (0, 0)));
        // Turning the hardlink into a file drops its target and facts.
        link.set_body(Body::File(FileData::new(Content::Bytes(Arc::new(
            b"ab".to_vec(),
        )))));
        assert_eq!(
            (link.kind(), link.link(), link.size()),
            (Kind::File, None, 2)
        );
        assert!(!link.elf() && link.sha256().is_none());
    }

    /// A file's size is its content's length, whatever holds the bytes.
    #[test]
    fn file_size_is_its_content_length() {
        let elf = Node::file(0o755, 0, 0, b"\x7fELF\x02\x01\x01".to_vec());
        assert_eq!((elf.size(), elf.elf()), (7, true));
        let base = Node::new(
            Body::File(FileData::new(Content::layer(2, 4096))),
            0o644,
            0,
            0,
        );
        assert_eq!(base.size(), 4096);
        assert_eq!(base.content().and_then(Content::base_layer), Some(2));
        assert!(!base.elf(), "bytes not read yet: no ELF facts");
        let empty = Node::new(Body::File(FileData::new(Content::Empty)), 0o644, 0, 0);
        assert_eq!(empty.size(), 0);
        // Emptiness follows the length too, not the variant: zero bytes in a layer
        // or in memory are empty, one byte is not.
        assert!(Content::Empty.is_empty() && Content::layer(0, 0).is_empty());
        assert!(Content::Bytes(Arc::new(Vec::new())).is_empty());
        assert!(!Content::layer(0, 1).is_empty() && !Content::Bytes(Arc::new(vec![0])).is_empty());
    }

    #[test]
    fn xattrs_and_layers_round_trip() {
        let mut n = Node::dir(0o755, 0, 0);
        assert!(n.xattrs.is_none() && n.xattrs().is_empty());
        n.insert_xattr("user.a", vec![1]);
        assert_eq!(n.xattrs().get("user.a"), Some(&vec![1]));
        assert_eq!(n.remove_xattr("user.a"), Some(vec![1]));
        assert_eq!(n.remove_xattr("user.a"), None);
        assert!(n.xattrs.is_none(), "all empty again: no box kept");
        n.set_xattrs(BTreeMap::new());
        assert!(n.xattrs.is_none(), "an empty map is not boxed");
        n.set_layer(Some(3));
        n.add_in_layers(1 << 3 | 1 << 100);
        assert_eq!((n.layer(), n.in_layers()), (Some(3), 1 << 3 | 1 << 100));
        n.set_layer(None);
        assert_eq!(n.layer(), None);
    }

    /// A layer number past the 16-bit index is clamped to the last one, never to the
    /// sentinel: a base node must not read as one the build added (it would be written
    /// into the new layer and its base copies never dropped).
    #[test]
    fn a_base_node_never_reads_as_build_added() {
        let mut n = Node::dir(0o755, 0, 0);
        for l in [MAX_LAYERS, MAX_LAYERS + 1, usize::MAX] {
            n.set_layer(Some(l));
            assert_eq!(n.layer(), Some(MAX_LAYERS - 1), "layer {l}");
        }
    }

    /// What a layer says about a file reaches its node: a file capability (PAX
    /// xattr, which `[sanitize]` and `audit` look for) and, when `diff` asks for
    /// digests, the `sha256:` of its bytes.
    #[test]
    fn layer_xattrs_and_digests_reach_the_node() {
        let l0 = TarBuilder::new()
            .pax(&[("SCHILY.xattr.security.capability", b"\x01\0\0\x02")])
            .file("usr/bin/ping", b"ping", 0o755)
            .file("usr/share/doc/a", b"doc", 0o644)
            .build();
        let mut fs = Rootfs::new();
        let o = IndexOptions {
            hash_contents: true,
            ..IndexOptions::default()
        };
        fs.apply_layer(0, "layer 1", &l0[..], &o).unwrap();
        let ping = fs.get("usr/bin/ping").unwrap();
        assert_eq!(
            ping.xattrs().get("security.capability").map(Vec::as_slice),
            Some(&b"\x01\0\0\x02"[..])
        );
        assert_eq!(ping.sha256(), Some(crate::testutil::digest(b"ping")));
        let doc = fs.get("usr/share/doc/a").unwrap();
        assert!(doc.xattrs().is_empty());
        assert_eq!(doc.sha256(), Some(crate::testutil::digest(b"doc")));
    }

    /// Indexing holds in memory the text the steps and the SBOM read (accounts,
    /// dpkg and apt state, os-release, the sandbox tree), and nothing else.
    #[test]
    fn indexing_holds_the_text_the_steps_read() {
        let held: [(&str, &[u8]); 5] = [
            ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            ("var/lib/dpkg/status", b"Package: base-files\n"),
            (
                "var/lib/apt/extended_states",
                b"Package: libc6\nAuto-Installed: 1\n",
            ),
            ("usr/lib/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
            ("sandbox/policy.yaml", b"version: 1\n"),
        ];
        let mut l0 = TarBuilder::new();
        for (p, text) in held {
            l0 = l0.file(p, text, 0o644);
        }
        let l0 = l0
            .symlink("etc/os-release", "../usr/lib/os-release")
            .file("usr/share/doc/x", b"doc", 0o644)
            .build();
        let fs = indexed(&[&l0]);
        for (p, text) in held {
            assert_eq!(fs.read(p).ok().as_deref(), Some(text), "{p}");
        }
        assert!(fs.read("usr/share/doc/x").is_err(), "not held");
        assert_eq!(
            crate::sbom::os_release(&fs),
            Some(("debian".to_string(), "12".to_string())),
            "the SBOM names the distribution"
        );
    }

    /// Setid and file-capability files are held whatever their path (`[sanitize]`
    /// rewrites them); an ordinary executable stays in its layer, so memory follows
    /// the number of files, not their bytes.
    #[test]
    fn only_special_files_are_held_outside_the_captured_paths() {
        let l0 = TarBuilder::new()
            .file("usr/bin/su", b"su", 0o4755)
            .file("usr/bin/wall", b"wall", 0o2755)
            .pax(&[("SCHILY.xattr.security.capability", b"\x01\0\0\x02")])
            .file("usr/bin/ping", b"ping", 0o755)
            .file("usr/bin/ls", b"ls-bytes", 0o755)
            .file("usr/bin/sticky", b"t", 0o1755)
            .build();
        let fs = indexed(&[&l0]);
        for p in ["usr/bin/su", "usr/bin/wall", "usr/bin/ping"] {
            assert!(fs.read(p).is_ok(), "{p} held");
        }
        for p in ["usr/bin/ls", "usr/bin/sticky"] {
            assert!(fs.read(p).is_err(), "{p} stays in its layer");
        }
        assert_eq!(fs.captured, 10, "su + wall + ping");
    }

    /// `insert` creates missing parents as root 0755 directories, refuses a path
    /// below a non-directory, keeps a directory's children when a directory replaces
    /// it and drops them when a file does.
    #[test]
    fn insert_creates_parents_and_replaces_directories() {
        let mut fs = Rootfs::new();
        fs.insert("opt/app/bin/tool", Node::file(0o755, 0, 0, b"t".to_vec()))
            .unwrap();
        for p in ["opt", "opt/app", "opt/app/bin"] {
            let n = fs.get(p).unwrap();
            assert_eq!(
                (n.kind(), n.mode, n.uid, n.gid),
                (Kind::Dir, 0o755, 0, 0),
                "{p}"
            );
        }
        let err = fs
            .insert("opt/app/bin/tool/x", Node::dir(0o755, 0, 0))
            .unwrap_err();
        assert!(format!("{err:#}").contains("not a directory"), "{err:#}");
        assert!(fs.get("opt/app/bin/tool/x").is_none());
        fs.insert("opt/app", Node::dir(0o700, 1, 1)).unwrap();
        assert!(
            fs.get("opt/app/bin/tool").is_some(),
            "a dir over a dir keeps children"
        );
        assert_eq!(fs.get("opt/app").unwrap().mode, 0o700);
        fs.insert("opt/app", Node::file(0o644, 0, 0, b"f".to_vec()))
            .unwrap();
        assert_eq!(fs.get("opt/app").unwrap().kind(), Kind::File);
        assert_eq!(
            fs.descendants("opt/app").count(),
            0,
            "a file over a dir drops them"
        );
    }

    /// `get_mut` edits the node the model holds (the way `[[fs]]` and `[sanitize]`
    /// change modes and owners), by any spelling of its path; an unsafe path has none.
    #[test]
    fn get_mut_edits_the_node_in_place() {
        let mut fs = Rootfs::new();
        fs.insert("usr/bin/su", Node::file(0o4755, 0, 0, b"su".to_vec()))
            .unwrap();
        fs.get_mut("/usr//bin/./su").unwrap().mode = 0o755;
        assert_eq!(fs.get("usr/bin/su").unwrap().mode, 0o755);
        assert!(fs.get_mut("../usr/bin/su").is_none());
    }

    /// `write` replaces a file's bytes and keeps its metadata, creates a missing file
    /// 0644 root, and never turns a directory or a symlink into a file.
    #[test]
    fn write_keeps_metadata_and_refuses_non_files() {
        let l0 = TarBuilder::new()
            .file_owned("etc/motd", b"old", 0o640, 5, 6)
            .symlink("etc/issue", "issue.net")
            .dir("etc/skel", 0o755)
            .build();
        let mut fs = indexed(&[&l0]);
        fs.write("etc/motd", b"new".to_vec()).unwrap();
        let n = fs.get("etc/motd").unwrap();
        assert_eq!((n.mode, n.uid, n.gid, n.modified), (0o640, 5, 6, true));
        assert_eq!(fs.read("etc/motd").unwrap(), b"new");
        fs.write("etc/new", b"n".to_vec()).unwrap();
        let n = fs.get("etc/new").unwrap();
        assert_eq!((n.kind(), n.mode, n.uid, n.gid), (Kind::File, 0o644, 0, 0));
        for p in ["etc/issue", "etc/skel"] {
            assert!(fs.write(p, b"x".to_vec()).is_err(), "{p}");
        }
        assert_eq!(fs.get("etc/issue").unwrap().kind(), Kind::Symlink);
        assert_eq!(fs.get("etc/skel").unwrap().kind(), Kind::Dir);
    }

    /// `remove` answers how many paths it removed and records the base ones (the
    /// rewrite must drop them from their layers); a path the build added is not.
    #[test]
    fn remove_counts_paths_and_records_base_ones() {
        let l0 = TarBuilder::new()
            .dir("usr/share/doc", 0o755)
            .file("usr/share/doc/a", b"a", 0o644)
            .file("usr/share/doc/b", b"b", 0o644)
            .build();
        let mut fs = indexed(&[&l0]);
        fs.insert("usr/share/doc/c", Node::file(0o644, 0, 0, b"c".to_vec()))
            .unwrap();
        assert_eq!(fs.remove("usr/share/doc"), 4);
        let removed: Vec<&str> = fs.removed.iter().map(String::as_str).collect();
        assert_eq!(
            removed,
            ["usr/share/doc", "usr/share/doc/a", "usr/share/doc/b"]
        );
        assert_eq!(fs.removed_mask, 1);
        assert_eq!(fs.remove("usr/share/doc"), 0);
    }

    /// The layer index is 16 bits: images past [`MAX_LAYERS`] are refused, not folded.
    #[test]
    fn too_many_layers_is_an_error() {
        let l = TarBuilder::new().file("a", b"a", 0o644).build();
        let err = Rootfs::new()
            .apply_layer(MAX_LAYERS, "layer x", &l[..], &IndexOptions::default())
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("more than 65535 layers"),
            "{err:#}"
        );
        let mut fs = Rootfs::new();
        fs.apply_layer(MAX_LAYERS - 1, "layer y", &l[..], &IndexOptions::default())
            .unwrap();
        assert_eq!(fs.get("a").and_then(Node::layer), Some(MAX_LAYERS - 1));
    }

    #[test]
    fn normalize_refuses_dotdot() {
        assert_eq!(normalize("./usr//bin/").unwrap(), "usr/bin");
        assert_eq!(normalize("/").unwrap(), "");
        assert!(normalize("../../etc/x").is_err());
        assert!(normalize("a/../../b").is_err());
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let l0 = TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/issue", b"Debian", 0o644)
            .file("etc/keep", b"k", 0o644)
            .dir("usr/share/doc", 0o755)
            .file("usr/share/doc/a", b"a", 0o644)
            .dir("usr/share/doc/b", 0o755)
            .file("usr/share/doc/b/c", b"c", 0o644)
            .build();
        let l1 = TarBuilder::new()
            .file("etc/.wh.issue", b"", 0o644)
            .dir("usr/share/doc", 0o755)
            .file("usr/share/doc/.wh..wh..opq", b"", 0o644)
            .file("usr/share/doc/new", b"n", 0o644)
            .build();
        let fs = indexed(&[&l0, &l1]);
        assert!(fs.get("/etc/issue").is_none());
        assert!(fs.get("/etc/keep").is_some());
        let doc: Vec<&str> = fs.descendants("usr/share/doc").map(|(k, _)| k).collect();
        assert_eq!(doc, vec!["usr/share/doc/new"]);
        // Hidden files only (their bytes still ship), not the hidden directory b.
        let hidden: Vec<&str> = fs.hidden.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(hidden.len(), 3, "{hidden:?}");
        assert!(!hidden.contains(&"usr/share/doc/b"), "{hidden:?}");
        assert_eq!(fs.read("/etc/keep").unwrap(), b"k");
    }

    /// A hardlink resolves to the regular file it shares, through a chain of links;
    /// anything else resolves to nothing.
    #[test]
    fn link_file_follows_hardlink_chains_to_the_file() {
        let mut fs = Rootfs::new();
        fs.insert("bin/gcc", Node::file(0o755, 0, 0, b"x".to_vec()))
            .unwrap();
        fs.insert("bin/cc", Node::new(Body::hardlink("bin/gcc"), 0o755, 0, 0))
            .unwrap();
        fs.insert("bin/c99", Node::new(Body::hardlink("bin/cc"), 0o755, 0, 0))
            .unwrap();
        let gcc = fs.get("bin/gcc").unwrap();
        for k in ["bin/c99", "bin/cc", "bin/gcc"] {
            assert!(fs.link_file(k).is_some_and(|n| std::ptr::eq(n, gcc)), "{k}");
        }
        assert!(fs.link_file("bin").is_none());
        assert!(fs.link_file("bin/nothere").is_none());
    }

    /// An opaque whiteout hides what lower layers have below its directory, not
    /// the entries its own layer put there, whichever comes first in the tar.
    #[test]
    fn an_opaque_whiteout_keeps_its_own_layer() {
        let l0 = TarBuilder::new()
            .dir("opt/app", 0o755)
            .file("opt/app/old", b"o", 0o644)
            .build();
        let l1 = TarBuilder::new()
            .dir("opt/app", 0o755)
            .file("opt/app/new", b"n", 0o644)
            .file("opt/app/.wh..wh..opq", b"", 0o644)
            .build();
        let fs = indexed(&[&l0, &l1]);
        let app: Vec<&str> = fs.descendants("opt/app").map(|(k, _)| k).collect();
        assert_eq!(app, ["opt/app/new"]);
        assert!(fs.get("opt/app").is_some(), "the directory itself stays");
    }

    #[test]
    fn file_replacing_dir_drops_children() {
        let l0 = TarBuilder::new().file("opt/x/y", b"y", 0o644).build();
        let l1 = TarBuilder::new()
            .file("opt/x", b"now a file", 0o644)
            .build();
        let fs = indexed(&[&l0, &l1]);
        assert!(fs.get("opt/x/y").is_none());
        assert_eq!(fs.get("opt/x").unwrap().kind(), Kind::File);
    }

    #[test]
    fn rejects_traversal_and_symlink_parents() {
        let bad = TarBuilder::new()
            .raw_file("../../etc/x", b"x", 0o644)
            .build();
        let err = Rootfs::new()
            .apply_layer(0, "layer 1", &bad[..], &IndexOptions::default())
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("layer 1: unsafe entry '../../etc/x'"),
            "{err:#}"
        );
        let via_link = TarBuilder::new()
            .symlink("evil", "/etc")
            .file("evil/passwd", b"x", 0o644)
            .build();
        let err = Rootfs::new()
            .apply_layer(0, "layer 1", &via_link[..], &IndexOptions::default())
            .unwrap_err();
        assert!(format!("{err:#}").contains("which is a symlink"), "{err:#}");
    }

    #[test]
    fn resolve_stays_inside_root() {
        let mut fs = Rootfs::new();
        fs.insert(
            "usr/bin/gcc-12",
            Node::file(0o755, 0, 0, b"\x7fELF".to_vec()),
        )
        .unwrap();
        fs.insert("bin", Node::symlink("usr/bin")).unwrap();
        fs.insert("usr/bin/gcc", Node::symlink("gcc-12")).unwrap();
        fs.insert("etc/alternatives/cc", Node::symlink("/usr/bin/gcc"))
            .unwrap();
        fs.insert("usr/bin/cc", Node::symlink("/etc/alternatives/cc"))
            .unwrap();
        fs.insert("escape", Node::symlink("../../../../usr/bin/gcc"))
            .unwrap();
        assert_eq!(fs.resolve("/bin/cc").unwrap(), "usr/bin/gcc-12");
        assert_eq!(fs.resolve("/escape").unwrap(), "usr/bin/gcc-12");
    }

    /// Like Linux (40 symlinks per lookup), a chain of 40 links resolves and one
    /// more, or a loop, gives no path instead of spinning.
    #[test]
    fn resolve_follows_forty_links_and_stops_on_loops() {
        let mut fs = Rootfs::new();
        fs.insert("target", Node::file(0o644, 0, 0, b"t".to_vec()))
            .unwrap();
        fs.insert("l0", Node::symlink("target")).unwrap();
        for i in 1..=40 {
            fs.insert(&format!("l{i}"), Node::symlink(&format!("l{}", i - 1)))
                .unwrap();
        }
        assert_eq!(fs.resolve("l39").as_deref(), Some("target"), "40 links");
        assert_eq!(fs.resolve("l40"), None, "41 links");
        fs.insert("a", Node::symlink("b")).unwrap();
        fs.insert("b", Node::symlink("/a")).unwrap();
        assert_eq!(fs.resolve("a/x"), None);
    }

    /// What indexing reports per layer (the "indexed layer N: E entries, W
    /// whiteouts" line): every entry counts, a whiteout also as a whiteout, a path
    /// repeated in the layer as a duplicate, and file bytes as they are stored.
    #[test]
    fn layer_stats_count_what_the_layer_holds() {
        let l0 = TarBuilder::new().file("etc/b", b"b", 0o644).build();
        let l1 = TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/a", b"one", 0o644)
            .file("etc/a", b"three", 0o644)
            .file("etc/.wh.b", b"", 0o644)
            .build();
        let mut fs = Rootfs::new();
        let o = IndexOptions::default();
        fs.apply_layer(0, "layer 1", &l0[..], &o).unwrap();
        let s = fs.apply_layer(1, "layer 2", &l1[..], &o).unwrap();
        assert_eq!(
            (s.entries, s.whiteouts, s.duplicates, s.bytes),
            (4, 1, 1, 8)
        );
        assert_eq!((fs.entries, fs.layers), (5, 2));
        assert_eq!(fs.read("etc/a").unwrap(), b"three", "the last copy wins");
        assert_eq!(fs.file_bytes(), 5);
    }

    /// A `./` directory entry (how `tar -C dir .` starts a layer) is the root and
    /// is accepted; any other kind at the root is refused, not skipped.
    #[test]
    fn the_root_entry_may_only_be_a_directory() {
        let ok = TarBuilder::new()
            .dir(".", 0o755)
            .file("./etc/hostname", b"h", 0o644)
            .build();
        let mut fs = Rootfs::new();
        fs.apply_layer(0, "layer 1", &ok[..], &IndexOptions::default())
            .unwrap();
        assert_eq!(fs.read("etc/hostname").unwrap(), b"h");
        let bad = TarBuilder::new().raw_file(".", b"x", 0o644).build();
        let err = Rootfs::new()
            .apply_layer(0, "layer 1", &bad[..], &IndexOptions::default())
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("replaces the root directory with a File"),
            "{err:#}"
        );
    }

    /// `--max-entries` is a bound over all layers: exactly that many entries are
    /// indexed, one more is refused.
    #[test]
    fn exactly_max_entries_are_indexed() {
        let layer = |p: &str| {
            TarBuilder::new()
                .file(p, b"", 0o644)
                .file(&format!("{p}2"), b"", 0o644)
                .build()
        };
        let o = IndexOptions {
            max_entries: 4,
            ..IndexOptions::default()
        };
        let mut fs = Rootfs::new();
        fs.apply_layer(0, "layer 1", &layer("a")[..], &o).unwrap();
        fs.apply_layer(1, "layer 2", &layer("b")[..], &o).unwrap();
        let err = fs
            .apply_layer(2, "layer 3", &layer("c")[..], &o)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("more than 4 tar entries"),
            "{err:#}"
        );
    }

    /// `debug list-layer` (the tar differential's view): one JSON object per entry
    /// in stream order, the same for a plain and a gzip layer, and nothing for a
    /// layer the model refuses.
    #[test]
    fn list_layer_prints_each_entry_once_accepted() {
        let t = tempfile::tempdir().unwrap();
        let tar = TarBuilder::new()
            .file_owned("etc/motd", b"hi", 0o640, 1, 2)
            .symlink("etc/issue", "motd")
            .build();
        let mut outs = Vec::new();
        for (name, bytes) in [
            ("l.tar", tar.clone()),
            ("l.tar.gz", crate::testutil::gzip(&tar)),
        ] {
            std::fs::write(t.path().join(name), bytes).unwrap();
            let mut out = Vec::new();
            list_layer(&t.path().join(name), &mut out).unwrap();
            outs.push(String::from_utf8(out).unwrap());
        }
        assert_eq!(outs[0], outs[1]);
        let lines: Vec<serde_json::Value> = outs[0]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (
                &lines[0]["path"],
                &lines[0]["mode"],
                &lines[0]["uid"],
                &lines[0]["size"]
            ),
            (
                &serde_json::json!("etc/motd"),
                &serde_json::json!(0o640),
                &serde_json::json!(1),
                &serde_json::json!(2)
            )
        );
        assert_eq!(lines[1]["link"], "motd");
        let bad = TarBuilder::new()
            .symlink("evil", "/etc")
            .file("evil/passwd", b"x", 0o644)
            .build();
        std::fs::write(t.path().join("bad.tar"), bad).unwrap();
        let mut out = Vec::new();
        assert!(list_layer(&t.path().join("bad.tar"), &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn truncated_layer_is_an_error() {
        let l0 = TarBuilder::new().file("a", &[7u8; 5000], 0o644).build();
        let cut = &l0[..2000];
        let err = Rootfs::new()
            .apply_layer(0, "layer 1", cut, &IndexOptions::default())
            .err()
            .map(|e| format!("{e:#}"));
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("layer 1: ") && e.contains("truncated tar stream")),
            "{err:?}"
        );
    }
}
