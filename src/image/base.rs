//! A base image as every transport hands it over: its config plus layer blobs that
//! are *streamed* from where they already are (a file, or a byte range inside an
//! archive), decompressed on a thread of their own. Nothing is extracted.
use crate::digest::VerifyingReader;
use crate::progress::Task;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A byte range of a file on the host holding one blob.
#[derive(Debug, Clone)]
pub struct BlobLocation {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl BlobLocation {
    pub fn whole(path: &Path) -> Result<BlobLocation> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        Ok(BlobLocation {
            path: path.to_path_buf(),
            offset: 0,
            len,
        })
    }
    pub fn open(&self) -> Result<io::Take<BufReader<File>>> {
        let mut f = File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        Ok(BufReader::with_capacity(256 * 1024, f).take(self.len))
    }
    pub fn read_all(&self, limit: u64, what: &str) -> Result<Vec<u8>> {
        if self.len > limit {
            bail!(
                "{what} is {} bytes, more than the {limit} bytes allowed",
                self.len
            );
        }
        let mut buf = Vec::with_capacity(self.len as usize);
        self.open()?.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// Compression detected from a blob's first bytes (media types lie; magic numbers don't).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// One layer of a base image.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Human name used in every error: "layer 2 (sha256:abcd1234)".
    pub label: String,
    pub media_type: String,
    /// Digest of the blob as stored (compressed); None when unknown (plain tarball base).
    pub digest: Option<String>,
    pub size: u64,
    /// Digest of the uncompressed tar, when the config says it.
    pub diff_id: Option<String>,
    pub compression: Compression,
    pub location: BlobLocation,
    /// An uncompressed copy made while indexing (rewrite mode), so a layer that is
    /// rewritten is inflated once, not twice.
    pub spill: Option<PathBuf>,
}

impl LayerBlob {
    pub fn new(
        index: usize,
        location: BlobLocation,
        media_type: &str,
        digest: Option<String>,
        diff_id: Option<String>,
    ) -> Result<LayerBlob> {
        let mut head = [0u8; 4];
        let mut r = location.open()?;
        let n = read_up_to(&mut r, &mut head)?;
        let compression = sniff_compression(&head[..n]);
        let short = digest.as_deref().map(|d| {
            d.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        });
        let label = match short {
            Some(s) => format!("layer {} (sha256:{s})", index + 1),
            None => format!("layer {} ({})", index + 1, location.path.display()),
        };
        Ok(LayerBlob {
            label,
            media_type: media_type.to_string(),
            digest,
            size: location.len,
            diff_id,
            compression,
            location,
            spill: None,
        })
    }

    /// The stored bytes, verified against the descriptor digest and size at EOF.
    pub fn open_raw(&self) -> Result<Box<dyn Read + Send>> {
        let r = self.location.open()?;
        Ok(match &self.digest {
            Some(d) => Box::new(VerifyingReader::new(r, d, Some(self.size), &self.label)),
            None => Box::new(r),
        })
    }

    /// The uncompressed tar stream.
    pub fn open_tar(&self) -> Result<Box<dyn Read + Send>> {
        self.open_tar_progress(&Task::hidden())
    }

    /// Like `open_tar`, advancing `bar` as the layer is read (its length becomes the
    /// spilled tar's size when the uncompressed copy is read), so a long rewrite shows
    /// progress instead of sitting at zero.
    pub fn open_tar_progress(&self, bar: &Task) -> Result<Box<dyn Read + Send>> {
        if let Some(p) = &self.spill {
            let f = File::open(p)
                .with_context(|| format!("{}: cannot reopen {}", self.label, p.display()))?;
            if let Ok(m) = f.metadata() {
                bar.set_total(m.len());
            }
            return Ok(Box::new(
                bar.wrap_read(BufReader::with_capacity(1 << 20, f)),
            ));
        }
        if self.compression == Compression::None {
            return Ok(Box::new(bar.wrap_read(self.open_raw()?)));
        }
        // Inflate on a thread of its own, overlapping whatever consumes the tar.
        Ok(Box::new(ThreadedDecoder::spawn(self, bar.clone(), None)?))
    }
}

/// Decompresses a layer on its own thread and hands over 1 MiB chunks, so that
/// inflating overlaps tar parsing and hashing. Optionally tees the uncompressed
/// bytes into `spill`. The compressed bytes are hashed (and verified against the
/// descriptor by `open_raw`) on the same thread; `finish` returns their digest.
pub struct ThreadedDecoder {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    handle: Option<std::thread::JoinHandle<io::Result<String>>>,
}

impl ThreadedDecoder {
    pub fn spawn(layer: &LayerBlob, bar: Task, spill: Option<File>) -> Result<ThreadedDecoder> {
        Ok(Self::spawn_raw(
            layer.open_raw()?,
            layer.compression,
            bar,
            spill,
        ))
    }

    /// Like [`ThreadedDecoder::spawn`], over any stream of stored bytes (a download
    /// in flight: the streamed index pass).
    pub fn spawn_raw(
        raw: Box<dyn Read + Send>,
        compression: Compression,
        bar: Task,
        mut spill: Option<File>,
    ) -> ThreadedDecoder {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        let handle = std::thread::spawn(move || -> io::Result<String> {
            let mut raw = crate::digest::HashingReader::new(bar.wrap_read(raw));
            let mut run = |raw: &mut crate::digest::HashingReader<_>,
                           tx: &std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>|
             -> io::Result<()> {
                let mut dec: Box<dyn Read> = match compression {
                    Compression::None => Box::new(&mut *raw),
                    Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut *raw)),
                    Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut *raw)?),
                };
                loop {
                    let mut buf = vec![0u8; 1 << 20];
                    let n = read_up_to(&mut dec, &mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.truncate(n);
                    if let Some(f) = spill.as_mut() {
                        io::Write::write_all(f, &buf)?;
                    }
                    if tx.send(Ok(buf)).is_err() {
                        return Err(io::Error::other("layer reader stopped"));
                    }
                }
            };
            let res =
                run(&mut raw, &tx).and_then(|_| io::copy(&mut raw, &mut io::sink()).map(|_| ()));
            match res {
                Ok(()) => Ok(raw.finish().0),
                Err(e) => {
                    let msg = e.to_string();
                    let _ = tx.send(Err(e));
                    Err(io::Error::other(msg))
                }
            }
        });
        ThreadedDecoder {
            rx,
            cur: Vec::new(),
            pos: 0,
            handle: Some(handle),
        }
    }

    /// Waits for the decoder thread; the digest of the stored (compressed) bytes.
    pub fn finish(mut self) -> Result<String> {
        // Drain whatever is left so the thread can reach EOF and verify.
        while self.rx.recv().is_ok() {}
        let h = self
            .handle
            .take()
            .ok_or_else(|| anyhow::anyhow!("decoder already finished"))?;
        h.join()
            .map_err(|_| anyhow::anyhow!("decoder thread panicked"))?
            .map_err(Into::into)
    }
}

impl Read for ThreadedDecoder {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    self.cur = buf;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A base image reduced to what the pipeline needs.
pub struct BaseImage {
    /// The reference as the user wrote it (recorded in annotations).
    pub name: String,
    /// Manifest digest when the source has one (annotation `org.opencontainers.image.base.digest`).
    pub manifest_digest: Option<String>,
    /// The image config as JSON (OCI or Docker; the fields we touch are shared).
    pub config: serde_json::Value,
    pub layers: Vec<LayerBlob>,
    /// Layers known by descriptor only, fetched when first read ([`BaseImage::ensure_layers`]):
    /// a registry base opened with `lazy_layers`, so a cache hit never downloads them.
    pub deferred: Option<DeferredLayers>,
    /// Keeps downloaded/unpacked temporary files alive as long as the image is used.
    pub _scratch: Option<tempfile::TempDir>,
}

/// Passes a layer's stored bytes on while they are downloaded, so the index pass
/// reads them as they arrive (issue 17.3: no download-then-read). A retried download
/// passes on only what it had not passed yet; the reader verifies the digest of what
/// it got, the downloader that of the file it caches.
pub struct Tee {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    sent: u64,
    closed: bool,
}

/// The reading end of a [`Tee`]: EOF when the download ends (or fails).
pub struct TeeReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Tee {
    pub fn channel() -> (Tee, TeeReader) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let tee = Tee {
            tx,
            sent: 0,
            closed: false,
        };
        let r = TeeReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        (tee, r)
    }
    /// Passes on the part of `chunk` (at `offset` in the blob) not passed on yet. A
    /// reader that stopped (its layer failed) is no error here: the download goes on.
    pub async fn offer(&mut self, offset: u64, chunk: &[u8]) {
        let end = offset + chunk.len() as u64;
        if self.closed || end <= self.sent {
            return;
        }
        let from = (self.sent.saturating_sub(offset)) as usize;
        if self.tx.send(chunk[from..].to_vec()).await.is_err() {
            self.closed = true;
        }
        self.sent = end;
    }
}

impl Read for TeeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(buf) => {
                    self.cur = buf;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Per layer, where its bytes also go while fetched (None: only to the cache).
pub type Tees = Vec<Option<Tee>>;

/// The layers of a base that were not fetched yet.
pub struct DeferredLayers {
    pub count: usize,
    /// Their descriptors, in order (empty when the source did not say).
    pub descriptors: Vec<LayerDescriptor>,
    /// `HOST[:PORT]/REPO` holding them: a registry push may mount them from there.
    pub location: Option<String>,
    pub fetch: Box<dyn FnOnce(Tees) -> Result<Vec<LayerBlob>> + Send>,
}

/// A layer known by its manifest descriptor only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// The config's diff_id for it.
    pub diff_id: Option<String>,
}

impl BaseImage {
    /// How many layers the base has, fetched or not.
    pub fn layer_count(&self) -> usize {
        self.deferred
            .as_ref()
            .map_or(self.layers.len(), |d| d.count)
    }
    /// Fetches deferred layers (a no-op when there are none).
    pub fn ensure_layers(&mut self) -> Result<()> {
        self.fetch_streaming(Vec::new())
    }
    /// Like [`BaseImage::ensure_layers`], passing layer `i` on to `tees[i]` as it
    /// arrives (a tee given for layers that are not deferred gets nothing: EOF).
    pub fn fetch_streaming(&mut self, tees: Tees) -> Result<()> {
        if let Some(d) = self.deferred.take() {
            self.layers = (d.fetch)(tees)?;
            if self.layers.len() != d.count {
                bail!(
                    "{}: expected {} layers, fetched {}",
                    self.name,
                    d.count,
                    self.layers.len()
                );
            }
        }
        Ok(())
    }
}
