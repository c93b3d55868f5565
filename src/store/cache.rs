//! A size-bounded local cache of shards read from an object store (`data.cache_dir` and
//! `data.cache_gb`, or `DFM_STORE_CACHE_DIR` and `DFM_STORE_CACHE_GB` for any command). Shards
//! are kept under their SHA-256 (`<sha256>.tar`), the name the manifest gives their content: a
//! shard is fetched once, written to the cache as it streams through (a copy whose hash or size
//! does not match is dropped, never kept), and read from the disk afterwards; the least
//! recently used shards are deleted when the cache passes its size. Several processes may share
//! a cache: files appear by rename, complete.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    pub hits: AtomicU64,
    pub fetched: AtomicU64,
    /// Serializes eviction within the process.
    evicting: Mutex<()>,
}

static CACHE: OnceLock<Mutex<Option<Arc<Cache>>>> = OnceLock::new();

/// Largest cache size, GB.
pub const MAX_GB: f64 = 1e6;

/// Sets this process's cache (`None`: no cache).
pub fn configure(dir: Option<&Path>, gb: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        gb.is_finite() && gb > 0.0 && gb <= MAX_GB,
        "a shard cache of {gb} GB: the size must be in (0, {MAX_GB}]"
    );
    let cache = match dir {
        None => None,
        Some(d) => Some(Cache::new(d.to_path_buf(), gb)?),
    };
    *CACHE.get_or_init(from_env).lock().unwrap() = cache;
    Ok(())
}

/// The environment's cache, if `DFM_STORE_CACHE_DIR` names one (a bad size is reported and
/// leaves the cache off).
fn from_env() -> Mutex<Option<Arc<Cache>>> {
    let dir = std::env::var_os("DFM_STORE_CACHE_DIR").filter(|d| !d.is_empty());
    let gb = std::env::var("DFM_STORE_CACHE_GB").map_or(Ok(50.0), |v| v.trim().parse::<f64>());
    let cache = match (dir, gb) {
        (None, _) => None,
        (Some(_), Err(e)) => {
            eprintln!("warning: DFM_STORE_CACHE_GB: {e}; no shard cache");
            None
        }
        (Some(d), Ok(gb)) if gb.is_finite() && gb > 0.0 && gb <= MAX_GB => {
            match Cache::new(PathBuf::from(d), gb) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("warning: DFM_STORE_CACHE_DIR: {e:#}; no shard cache");
                    None
                }
            }
        }
        (Some(_), Ok(gb)) => {
            eprintln!("warning: DFM_STORE_CACHE_GB={gb} is outside (0, {MAX_GB}]; no shard cache");
            None
        }
    };
    Mutex::new(cache)
}

/// This process's cache, if any.
pub fn current() -> Option<Arc<Cache>> {
    CACHE.get_or_init(from_env).lock().unwrap().clone()
}

impl Cache {
    /// A cache in `dir` (created when missing) of `gb` GB.
    fn new(dir: PathBuf, gb: f64) -> anyhow::Result<Arc<Cache>> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the shard cache {}", dir.display()))?;
        Ok(Arc::new(Cache {
            dir,
            max_bytes: (gb * 1e9) as u64,
            hits: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            evicting: Mutex::new(()),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the cache did in this process, as a line.
    pub fn report(&self) -> String {
        format!(
            "shard cache {}: {} shard reads from it, {} from the store",
            self.dir.display(),
            self.hits.load(Ordering::Relaxed),
            self.fetched.load(Ordering::Relaxed)
        )
    }

    /// The shard with this hash and size: from the cache, else from `fetch`, kept as it is read.
    pub fn open(
        self: &Arc<Self>,
        sha256: &str,
        bytes: u64,
        fetch: impl FnOnce() -> anyhow::Result<(Box<dyn Read + Send>, u64)>,
    ) -> anyhow::Result<(Box<dyn Read + Send>, u64)> {
        let file = self.dir.join(format!("{sha256}.tar"));
        if let Ok(f) = std::fs::File::open(&file)
            && f.metadata().is_ok_and(|m| m.len() == bytes)
        {
            // The time of last use orders eviction.
            let _ = f.set_modified(std::time::SystemTime::now());
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((
                Box::new(std::io::BufReader::with_capacity(1 << 16, f)),
                bytes,
            ));
        }
        let (inner, len) = fetch()?;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        if len != bytes
            || bytes > self.max_bytes
            || !crate::util::plain_file_name(&format!("{sha256}.tar"))
        {
            return Ok((inner, len));
        }
        let n = PARTIAL.fetch_add(1, Ordering::Relaxed);
        let partial = self
            .dir
            .join(format!(".{sha256}.{}-{n}.partial", std::process::id()));
        match std::fs::File::create(&partial) {
            Ok(out) => Ok((
                Box::new(Tee {
                    inner,
                    out: Some(std::io::BufWriter::new(out)),
                    hash: Sha256::new(),
                    seen: 0,
                    partial,
                    file,
                    sha256: sha256.to_string(),
                    bytes,
                    cache: self.clone(),
                }),
                len,
            )),
            Err(_) => Ok((inner, len)),
        }
    }

    /// Deletes the least recently used shards until the cache holds at most its size.
    fn evict(&self) {
        let _g = self.evicting.lock().unwrap();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, p) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&p).is_ok() {
                total -= len;
            }
        }
    }
}

static PARTIAL: AtomicU64 = AtomicU64::new(0);

/// Reads through `inner` and copies what it reads into the cache; a complete copy with the
/// right hash becomes the cached shard, anything else is removed.
struct Tee {
    inner: Box<dyn Read + Send>,
    out: Option<std::io::BufWriter<std::fs::File>>,
    hash: Sha256,
    seen: u64,
    partial: PathBuf,
    file: PathBuf,
    sha256: String,
    bytes: u64,
    cache: Arc<Cache>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(out) = self.out.as_mut() {
            if out.write_all(&buf[..n]).is_err() {
                self.out = None; // a full disk ends the copy, not the read
            }
            self.hash.update(&buf[..n]);
            self.seen += n as u64;
        }
        if n == 0 {
            self.finish();
        }
        Ok(n)
    }
}

impl Tee {
    fn finish(&mut self) {
        let Some(out) = self.out.take() else {
            return;
        };
        let hash = format!("{:x}", std::mem::take(&mut self.hash).finalize());
        let complete = self.seen == self.bytes && hash == self.sha256;
        let kept = complete
            && out.into_inner().is_ok_and(|f| f.sync_all().is_ok())
            && std::fs::rename(&self.partial, &self.file).is_ok();
        if kept {
            self.cache.evict();
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.out = None;
        let _ = std::fs::remove_file(&self.partial);
    }
}
