//! The streaming loader. Shards are read by worker threads (decode JSON, PNG and `.npy`,
//! validate, run a per-sample transform such as the feature code), then merged back in shard
//! order, so the stream is the same whatever the thread timing. A seeded shuffle buffer mixes
//! samples, batches are built and transformed (e.g. into burn tensors) on a prefetch thread
//! ahead of the consumer.
//!
//! The order of an epoch depends only on (seed, epoch): shard order is permuted per epoch, the
//! buffer draws from a per-epoch stream. Resuming a run in the middle of an epoch skips the
//! batches it had consumed and gets exactly the same batches after them.

use super::manifest::Manifest;
use super::sample::{Sample, Spec};
use super::shards::{decode, for_each_record};
use crate::error::DataError;
use crossbeam_channel::{Receiver, Sender, bounded};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::{Path, PathBuf};
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

/// A record that was skipped, for the `--skip-bad` report.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct BadRecord {
    pub file: String,
    pub key: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl From<&DataError> for BadRecord {
    fn from(e: &DataError) -> Self {
        BadRecord {
            file: e.file.display().to_string(),
            key: e.key.clone(),
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Loader {
    shards: Vec<(PathBuf, usize)>,
    spec: Spec,
    pub opts: LoaderOptions,
    bad: Arc<Mutex<Vec<BadRecord>>>,
}

enum Item<F> {
    Sample(F),
    EndShard,
    Err(DataError),
}

/// One pass over the data: an iterator of batches (or the first error).
pub struct Epoch<T> {
    rx: Receiver<Result<T, DataError>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl<T> Iterator for Epoch<T> {
    type Item = Result<T, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl<T> Drop for Epoch<T> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
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

    /// Samples listed for this loader's shards.
    pub fn num_samples(&self) -> usize {
        self.shards.iter().map(|s| s.1).sum()
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
    /// dropped without calling `per_batch` (mid-epoch resume).
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
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut order: Vec<(PathBuf, usize)> = self.shards.clone();
        let mut rng =
            ChaCha8Rng::seed_from_u64(opts.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if opts.shuffle_buffer > 0 {
            order.shuffle(&mut rng);
        }
        let workers = opts.workers.max(1).min(order.len().max(1));
        let mut threads = Vec::new();
        let mut worker_rx = Vec::new();
        for w in 0..workers {
            let (tx, rx) = bounded::<Item<F>>(256);
            worker_rx.push(rx);
            let mine: Vec<(PathBuf, usize)> =
                order.iter().skip(w).step_by(workers).cloned().collect();
            let per_sample = per_sample.clone();
            let spec = self.spec.clone();
            let stop = stop.clone();
            let skip_bad = opts.skip_bad;
            let bad = self.bad.clone();
            threads.push(std::thread::spawn(move || {
                worker(mine, spec, per_sample, tx, stop, skip_bad, bad)
            }));
        }
        let (out_tx, out_rx) = bounded::<Result<T, DataError>>(opts.prefetch.max(1));
        let shard_paths: Vec<PathBuf> = order.iter().map(|(p, _)| p.clone()).collect();
        let stop2 = stop.clone();
        threads.push(std::thread::spawn(move || {
            merge(
                shard_paths,
                worker_rx,
                rng,
                opts,
                skip_batches,
                per_batch,
                out_tx,
                stop2,
            )
        }));
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

fn worker<F>(
    shards: Vec<(PathBuf, usize)>,
    spec: Spec,
    per_sample: Arc<dyn Fn(Sample) -> F + Send + Sync>,
    tx: Sender<Item<F>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    skip_bad: bool,
    bad: Arc<Mutex<Vec<BadRecord>>>,
) {
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
    for (path, expected) in shards {
        let mut failed = false;
        // A panic while reading the shard or handling a record (a bug, or input nobody
        // foresaw) becomes an error naming the shard and the record, never a silent end.
        let mut last_key: Option<String> = None;
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for_each_record(&path, Some(expected), |rec| {
                if stopped() {
                    return false;
                }
                last_key = Some(rec.key.clone());
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    decode(&rec, &path, Some(&spec)).map(|s| per_sample(s))
                }))
                .unwrap_or_else(|p| {
                    Err(DataError::record(
                        &path,
                        &rec.key,
                        format!(
                            "reading the record panicked: {}",
                            crate::device::panic_text(&p)
                        ),
                    ))
                });
                match handled {
                    Ok(f) => tx.send(Item::Sample(f)).is_ok(),
                    Err(e) if skip_bad => {
                        bad.lock().unwrap().push(BadRecord::from(&e));
                        true
                    }
                    Err(e) => {
                        failed = true;
                        let _ = tx.send(Item::Err(e));
                        false
                    }
                }
            })
        }));
        let res = read.unwrap_or_else(|p| {
            let what = format!(
                "reading the shard panicked: {}",
                crate::device::panic_text(&p)
            );
            Err(match &last_key {
                Some(k) => DataError::record(&path, k, what),
                None => DataError::file(&path, what),
            })
        });
        if failed || stopped() {
            return;
        }
        if let Err(e) = res {
            if skip_bad {
                bad.lock().unwrap().push(BadRecord::from(&e));
            } else {
                let _ = tx.send(Item::Err(e));
                return;
            }
        }
        if tx.send(Item::EndShard).is_err() {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn merge<F, T>(
    shards: Vec<PathBuf>,
    worker_rx: Vec<Receiver<Item<F>>>,
    mut rng: ChaCha8Rng,
    opts: LoaderOptions,
    mut skip_batches: usize,
    per_batch: Arc<dyn Fn(Vec<F>) -> T + Send + Sync>,
    out: Sender<Result<T, DataError>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let bs = opts.batch_size.max(1);
    let mut buffer: Vec<F> = Vec::new();
    let mut batch: Vec<F> = Vec::with_capacity(bs);
    // A batch, or the error that replaces a panic while building it (`shard`: the shard being
    // merged, for the message).
    let build = |b: Vec<F>, shard: &Path| -> Result<T, DataError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| per_batch(b))).map_err(|p| {
            DataError::file(
                shard,
                format!(
                    "building a batch from this shard panicked: {}",
                    crate::device::panic_text(&p)
                ),
            )
        })
    };
    // Returns false when the consumer has gone or a batch failed.
    let mut emit = |item: F, batch: &mut Vec<F>, shard: &Path| -> bool {
        batch.push(item);
        if batch.len() == bs {
            let b = std::mem::replace(batch, Vec::with_capacity(bs));
            if skip_batches > 0 {
                skip_batches -= 1;
                return true;
            }
            let r = build(b, shard);
            let ok = r.is_ok();
            return out.send(r).is_ok() && ok;
        }
        true
    };
    let last = shards.last().cloned().unwrap_or_default();
    for (p, shard) in shards.iter().enumerate() {
        let rx = &worker_rx[p % worker_rx.len()];
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            match rx.recv() {
                Ok(Item::Sample(f)) => {
                    if opts.shuffle_buffer == 0 {
                        if !emit(f, &mut batch, shard) {
                            return;
                        }
                        continue;
                    }
                    buffer.push(f);
                    if buffer.len() >= opts.shuffle_buffer {
                        let j = rng.gen_range(0..buffer.len());
                        let item = buffer.swap_remove(j);
                        if !emit(item, &mut batch, shard) {
                            return;
                        }
                    }
                }
                Ok(Item::EndShard) => break,
                Ok(Item::Err(e)) => {
                    let _ = out.send(Err(e));
                    return;
                }
                Err(_) => {
                    // A worker hung up without finishing its shard and without an error: never
                    // read that as the end of the epoch.
                    if !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = out.send(Err(DataError::file(
                            shard,
                            "the loader's reader of this shard stopped before its end",
                        )));
                    }
                    return;
                }
            }
        }
    }
    while !buffer.is_empty() {
        let j = rng.gen_range(0..buffer.len());
        let item = buffer.swap_remove(j);
        if !emit(item, &mut batch, &last) {
            return;
        }
    }
    if !batch.is_empty() && !opts.drop_last && skip_batches == 0 {
        let _ = out.send(build(batch, &last));
    }
}
