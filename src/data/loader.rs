//! The streaming loader. Worker threads decode records (JSON, PNG and `.npy`, validation) and
//! run a per-sample transform such as the feature code, record by record; the records are put
//! back in shard order (`pipeline`), so the stream is the same whatever the thread timing and
//! the number of workers. A seeded shuffle buffer mixes samples, batches are built and
//! transformed (e.g. into burn tensors) on a prefetch thread ahead of the consumer.
//!
//! The order of an epoch depends only on (seed, epoch): shard order is permuted per epoch, the
//! buffer draws from a per-epoch stream. Resuming a run in the middle of an epoch skips the
//! batches it had consumed and gets exactly the same batches after them.

use super::manifest::Manifest;
use super::pipeline::{self, Item};
use super::sample::{Sample, Spec};
use super::shards::ShardRef;
use crate::error::DataError;
use crossbeam_channel::{Receiver, Sender, bounded};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Decoding threads (at least 1).
    pub workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Samples in the shuffle buffer; 0 keeps the stored order (evaluation).
    pub shuffle_buffer: usize,
    pub seed: u64,
    /// Skip bad records (and unreadable shards), counting them, instead of failing.
    pub skip_bad: bool,
    /// Drop a last incomplete batch (training).
    pub drop_last: bool,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 32,
            workers: 2,
            prefetch: 4,
            shuffle_buffer: 2048,
            seed: 0,
            skip_bad: false,
            drop_last: false,
        }
    }
}

pub use super::pipeline::BadRecord;

#[derive(Clone)]
pub struct Loader {
    shards: Vec<ShardRef>,
    spec: Spec,
    pub opts: LoaderOptions,
    bad: Arc<Mutex<Vec<BadRecord>>>,
}

/// One pass over the data: an iterator of batches (or the first error).
pub struct Epoch<T> {
    rx: Receiver<Result<T, DataError>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl<T> Iterator for Epoch<T> {
    type Item = Result<T, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl<T> Drop for Epoch<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Drain so blocked senders wake up and see the stop flag.
        while self.rx.try_recv().is_ok() {}
        for t in self.threads.drain(..) {
            while !t.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = t.join();
        }
    }
}

impl Loader {
    /// A loader over one split (`train`, `val`, `test`, `test_days`, or `all`) of a dataset.
    pub fn new(
        dir: &Path,
        manifest: &Manifest,
        split: &str,
        opts: LoaderOptions,
    ) -> Result<Self, DataError> {
        let shards = manifest.shards(dir, split)?;
        Ok(Loader {
            shards,
            spec: manifest.spec.clone(),
            opts,
            bad: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// This part's shards (`Part::select`, manifest order), so that the parts of an array job
    /// together hold each shard once.
    pub fn part(mut self, part: super::part::Part) -> Self {
        self.shards = part.select(std::mem::take(&mut self.shards)).collect();
        self
    }

    /// Shards this loader reads.
    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    /// Samples listed for this loader's shards.
    pub fn num_samples(&self) -> usize {
        self.shards.iter().map(|s| s.info.samples).sum()
    }

    /// Batches per epoch (from the manifest's counts).
    pub fn num_batches(&self) -> usize {
        let n = self.num_samples();
        let b = self.opts.batch_size.max(1);
        if self.opts.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Bad records skipped so far (with `skip_bad`).
    pub fn bad_records(&self) -> Vec<BadRecord> {
        self.bad.lock().unwrap().clone()
    }

    /// Writes the skipped records as JSON lines.
    pub fn write_bad_report(&self, path: &Path) -> anyhow::Result<()> {
        let mut s = String::new();
        for b in self.bad_records() {
            s.push_str(&serde_json::to_string(&b)?);
            s.push('\n');
        }
        crate::util::write_atomic(path, s.as_bytes())
    }

    /// Starts an epoch. `per_sample` runs on the worker threads for each valid sample,
    /// `per_batch` on the prefetch thread for each batch; the first `skip_batches` batches are
    /// dropped without calling `per_batch` (mid-epoch resume). The threads: `pipeline`'s.
    pub fn epoch<F, T>(
        &self,
        epoch: u64,
        skip_batches: usize,
        per_sample: Arc<dyn Fn(Sample) -> F + Send + Sync>,
        per_batch: Arc<dyn Fn(Vec<F>) -> T + Send + Sync>,
    ) -> Epoch<T>
    where
        F: Send + 'static,
        T: Send + 'static,
    {
        let opts = self.opts.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut order: Vec<ShardRef> = self.shards.clone();
        let mut rng =
            ChaCha8Rng::seed_from_u64(opts.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if opts.shuffle_buffer > 0 {
            order.shuffle(&mut rng);
        }
        let workers = opts.workers.max(1);
        let window = (workers * pipeline::WINDOW_PER_WORKER).max(64);
        let (jobs_tx, jobs_rx) = bounded(window);
        let (done_tx, done_rx) = bounded(window);
        let (credits_tx, credits_rx) = bounded(window);
        let paths: Arc<Vec<PathBuf>> = Arc::new(order.iter().map(|s| s.path.clone()).collect());
        let mut threads = Vec::new();
        let (stop_r, skip_bad) = (stop.clone(), opts.skip_bad);
        threads.push(std::thread::spawn(move || {
            pipeline::read_shards(order, jobs_tx, credits_tx, stop_r, skip_bad)
        }));
        for _ in 0..workers {
            let (jobs, done, paths) = (jobs_rx.clone(), done_tx.clone(), paths.clone());
            let (spec, per_sample) = (self.spec.clone(), per_sample.clone());
            threads.push(std::thread::spawn(move || {
                pipeline::decode_jobs(jobs, done, paths, spec, per_sample, skip_bad)
            }));
        }
        drop((jobs_rx, done_tx));
        let (out_tx, out_rx) = bounded::<Result<T, DataError>>(opts.prefetch.max(1));
        let merger = Merger {
            shards: paths,
            rng,
            opts,
            skip_batches,
            per_batch,
            out: out_tx,
            stop: stop.clone(),
            bad: self.bad.clone(),
        };
        let items = pipeline::InOrder::new(done_rx, credits_rx);
        threads.push(std::thread::spawn(move || merger.run(items)));
        Epoch {
            rx: out_rx,
            threads,
            stop,
        }
    }
}

/// The first `n` samples of a split, in stored order (requests, benchmarks).
pub fn first_samples(dir: &Path, split: &str, n: usize) -> anyhow::Result<Vec<Sample>> {
    let m = Manifest::load(dir)?;
    let opts = LoaderOptions {
        batch_size: n.max(1),
        shuffle_buffer: 0,
        ..Default::default()
    };
    let l = Loader::new(dir, &m, split, opts)?;
    let first = l.epoch(0, 0, Arc::new(|s| s), Arc::new(|b| b)).next();
    Ok(first.transpose()?.unwrap_or_default())
}

/// The merging thread: the epoch's items in sequence, through the shuffle buffer, into
/// batches built by `per_batch`.
struct Merger<F, T> {
    shards: Arc<Vec<PathBuf>>,
    rng: ChaCha8Rng,
    opts: LoaderOptions,
    skip_batches: usize,
    per_batch: Arc<dyn Fn(Vec<F>) -> T + Send + Sync>,
    out: Sender<Result<T, DataError>>,
    stop: Arc<AtomicBool>,
    bad: Arc<Mutex<Vec<BadRecord>>>,
}

impl<F, T> Merger<F, T> {
    fn run(mut self, mut items: pipeline::InOrder<F>) {
        let bs = self.opts.batch_size.max(1);
        let mut buffer: Vec<F> = Vec::new();
        let mut batch: Vec<F> = Vec::with_capacity(bs);
        let mut shard = 0;
        while shard < self.shards.len() {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(item) = items.next_item() else {
                // The reader or a decoder hung up without finishing the shard and without an
                // error: never read that as the end of the epoch.
                if !self.stop.load(Ordering::Relaxed) {
                    let what = "the loader's reader of this shard stopped before its end";
                    let _ = self
                        .out
                        .send(Err(DataError::file(&self.shards[shard], what)));
                }
                return;
            };
            let shard_path = self.shards[shard].clone();
            match item {
                Item::Sample(f) if self.opts.shuffle_buffer == 0 => {
                    if !self.emit(f, &mut batch, &shard_path) {
                        return;
                    }
                }
                Item::Sample(f) => {
                    buffer.push(f);
                    if buffer.len() >= self.opts.shuffle_buffer {
                        let j = self.rng.gen_range(0..buffer.len());
                        let item = buffer.swap_remove(j);
                        if !self.emit(item, &mut batch, &shard_path) {
                            return;
                        }
                    }
                }
                Item::Skipped(b) => self.bad.lock().unwrap().push(b),
                Item::EndShard => shard += 1,
                Item::Err(e) => {
                    let _ = self.out.send(Err(e));
                    return;
                }
            }
        }
        let last = self.shards.last().cloned().unwrap_or_default();
        while !buffer.is_empty() {
            let j = self.rng.gen_range(0..buffer.len());
            let item = buffer.swap_remove(j);
            if !self.emit(item, &mut batch, &last) {
                return;
            }
        }
        if !batch.is_empty() && !self.opts.drop_last && self.skip_batches == 0 {
            let _ = self.out.send(self.build(batch, &last));
        }
    }

    /// Adds an item to the batch and sends the batch when full; false when the consumer has
    /// gone or the batch failed.
    fn emit(&mut self, item: F, batch: &mut Vec<F>, shard: &Path) -> bool {
        batch.push(item);
        if batch.len() < self.opts.batch_size.max(1) {
            return true;
        }
        let b = std::mem::replace(batch, Vec::with_capacity(self.opts.batch_size.max(1)));
        if self.skip_batches > 0 {
            self.skip_batches -= 1;
            return true;
        }
        let r = self.build(b, shard);
        let ok = r.is_ok();
        self.out.send(r).is_ok() && ok
    }

    /// A batch, or the error that replaces a panic while building it (`shard`: the shard being
    /// merged, for the message).
    fn build(&self, b: Vec<F>, shard: &Path) -> Result<T, DataError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.per_batch)(b))).map_err(
            |p| {
                DataError::file(
                    shard,
                    format!(
                        "building a batch from this shard panicked: {}",
                        crate::util::panic_text(&p)
                    ),
                )
            },
        )
    }
}
