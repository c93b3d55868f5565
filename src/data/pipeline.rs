//! The loader's threads for one epoch.
//!
//! - A **reader** walks the shards in the epoch's order and hands out their raw records (tar
//!   members: bytes, cheap to read), each numbered in that order.
//! - **Decoders** (the loader's workers) turn records into samples (JSON, PNG, `.npy`,
//!   validation) and run the per-sample transform (features), in whatever order they finish.
//! - The **merger** puts them back in sequence, then shuffles and batches (`loader::merge`).
//!
//! Work is shared record by record, so every worker is busy whatever the shard sizes (one
//! shard is enough for all of them), and the sequence the merger sees (hence every batch) is
//! the same for any number of workers. A window of credits bounds what is in flight between
//! the reader and the merger: memory stays bounded however the threads are timed.

use super::sample::{Sample, Spec};
use super::shards::{Record, ShardRef, ShardStream, decode, open_listed, records_of};
use crate::error::DataError;
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Items in flight per worker (read but not yet taken by the merger): enough to keep each
/// worker busy while the merger waits for a slow record, small enough for base-size samples
/// (~60 KB each) to stay at a few MB per worker.
pub const WINDOW_PER_WORKER: usize = 32;

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

/// What the reader hands out, in sequence.
pub enum Job {
    Record {
        shard: usize,
        rec: Record,
    },
    /// Reading the shard failed after the records already handed out.
    ShardError(DataError),
    EndShard,
}

/// What the merger takes, in the same sequence.
pub enum Item<F> {
    Sample(F),
    /// A bad record or shard, skipped (`skip_bad`).
    Skipped(BadRecord),
    EndShard,
    Err(DataError),
}

/// The reader: every record of `shards`, in order, then each shard's end. Each job first takes
/// a credit (the merger returns one per item it takes), so at most the channel's capacity of
/// jobs is ahead of the merger. Returns early when `stop` is set or the others have gone.
pub fn read_shards(
    shards: Vec<ShardRef>,
    jobs: Sender<(u64, Job)>,
    credits: Sender<()>,
    stop: Arc<AtomicBool>,
    skip_bad: bool,
) {
    let mut seq = 0u64;
    let mut send = |job: Job| -> bool {
        let ok = credits.send(()).is_ok() && jobs.send((seq, job)).is_ok();
        seq += 1;
        ok
    };
    let ahead = shards_ahead(&shards);
    let mut opened: VecDeque<Result<ShardStream, DataError>> = VecDeque::new();
    for (shard, s) in shards.iter().enumerate() {
        let (path, expected) = (&s.path, &s.info.samples);
        while opened.len() <= ahead && shard + opened.len() < shards.len() {
            opened.push_back(open_listed(&shards[shard + opened.len()]));
        }
        let this = opened.pop_front().expect("this shard was opened");
        let mut alive = true;
        // A panic while reading (a bug, or input nobody foresaw) becomes an error naming the
        // shard and the last record read, never a silent end.
        let mut last_key: Option<String> = None;
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            records_of(path, this?, Some(*expected), |rec| {
                if stop.load(Ordering::Relaxed) {
                    alive = false;
                } else {
                    last_key = Some(rec.key.clone());
                    alive = send(Job::Record { shard, rec });
                }
                alive
            })
        }));
        if !alive {
            return;
        }
        let read = read.unwrap_or_else(|p| {
            let what = format!(
                "reading the shard panicked: {}",
                crate::util::panic_text(&p)
            );
            Err(match &last_key {
                Some(k) => DataError::record(path, k, what),
                None => DataError::file(path, what),
            })
        });
        if let Err(e) = read
            && (!send(Job::ShardError(e)) || !skip_bad)
        {
            return;
        }
        if !send(Job::EndShard) {
            return;
        }
    }
}

/// Shards opened ahead of the one being read: in an object store a few
/// (`DFM_STORE_PREFETCH`), so that their bytes are on the way while this one is read (each
/// buffers a bounded number of chunks); on disk none.
fn shards_ahead(shards: &[ShardRef]) -> usize {
    match shards.iter().any(|s| crate::store::is_remote(&s.path)) {
        true => crate::store::Settings::from_env().map_or(4, |s| s.prefetch),
        false => 0,
    }
}

/// A decoder: takes jobs until the reader is done, turns records into `per_sample` outputs.
pub fn decode_jobs<F>(
    jobs: Receiver<(u64, Job)>,
    done: Sender<(u64, Item<F>)>,
    paths: Arc<Vec<PathBuf>>,
    spec: Spec,
    per_sample: Arc<dyn Fn(Sample) -> F + Send + Sync>,
    skip_bad: bool,
) {
    let failed = |e: DataError| {
        if skip_bad {
            Item::Skipped(BadRecord::from(&e))
        } else {
            Item::Err(e)
        }
    };
    for (seq, job) in jobs {
        let item = match job {
            Job::Record { shard, rec } => {
                match decode_record(&rec, &paths[shard], &spec, per_sample.as_ref()) {
                    Ok(f) => Item::Sample(f),
                    Err(e) => failed(e),
                }
            }
            Job::ShardError(e) => failed(e),
            Job::EndShard => Item::EndShard,
        };
        if done.send((seq, item)).is_err() {
            return;
        }
    }
}

/// One record decoded and transformed; a panic in either becomes an error naming the record.
fn decode_record<F>(
    rec: &Record,
    path: &Path,
    spec: &Spec,
    per_sample: &(dyn Fn(Sample) -> F + Send + Sync),
) -> Result<F, DataError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode(rec, path, Some(spec)).map(per_sample)
    }))
    .unwrap_or_else(|p| {
        Err(DataError::record(
            path,
            &rec.key,
            format!(
                "reading the record panicked: {}",
                crate::util::panic_text(&p)
            ),
        ))
    })
}

/// The decoders' outputs back in sequence; each item taken returns the reader one credit.
pub struct InOrder<F> {
    done: Receiver<(u64, Item<F>)>,
    credits: Receiver<()>,
    next: u64,
    pending: BTreeMap<u64, Item<F>>,
}

impl<F> InOrder<F> {
    pub fn new(done: Receiver<(u64, Item<F>)>, credits: Receiver<()>) -> Self {
        InOrder {
            done,
            credits,
            next: 0,
            pending: BTreeMap::new(),
        }
    }

    /// The next item in sequence; `None` when the decoders have all gone without it.
    pub fn next_item(&mut self) -> Option<Item<F>> {
        loop {
            if let Some(item) = self.pending.remove(&self.next) {
                self.next += 1;
                let _ = self.credits.recv();
                return Some(item);
            }
            let (seq, item) = self.done.recv().ok()?;
            self.pending.insert(seq, item);
        }
    }
}
