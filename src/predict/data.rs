//! `dfm predict --data`: a dataset split through the model, streamed by the loader's workers
//! (decoding and features off the model's thread) and written as Parquet (`table.rs`).
//!
//! `--shard-index I --num-shards N` takes every N-th shard of the split from the I-th, so that N
//! processes (an indexed Kubernetes job, a Slurm array, AWS Batch) write N files that together
//! hold every sample once, with no coordinator: `predictions-0000I-of-0000N.parquet`.
//!
//! On a CPU several batches go through the model at once ([`crate::forward_pools`]), and their rows
//! are written in the loader's order.
//!
//! Samples are predicted as requests are: their labels are dropped first, so that the
//! trajectory is given at the model's own horizons (or the sample's `horizons_s`), exactly as
//! `dfm predict --input` and the server give it.

use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::Manifest;
use crate::predict::Predictor;
use crate::predict::table::{ParquetOut, Rows};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub struct DataPredict<'a> {
    pub data: &'a Path,
    pub split: &'a str,
    /// The folder the part's file goes to (created when missing).
    pub out: &'a Path,
    pub shard_index: usize,
    pub num_shards: usize,
    pub batch_size: usize,
    pub workers: usize,
    /// Predict data whose statistics differ from the model's training data.
    pub allow_shift: bool,
}

/// What a part wrote.
#[derive(Debug)]
pub struct Written {
    pub file: PathBuf,
    pub rows: usize,
    pub shards: usize,
    pub seconds: f64,
}

impl Written {
    pub fn samples_per_s(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }
}

/// The file part `index` of `count` writes.
pub fn part_file(out: &Path, index: usize, count: usize) -> PathBuf {
    out.join(format!("predictions-{index:05}-of-{count:05}.parquet"))
}

/// Where this part's file is written: under `--out`, or for an `--out` in an object store in a
/// local staging folder (returned with it), to be uploaded when complete.
fn local_file(o: &DataPredict) -> anyhow::Result<(Option<crate::store::Staging>, PathBuf)> {
    let staging = match crate::store::is_remote(o.out) {
        true => {
            crate::store::check_writable(o.out)?;
            Some(crate::store::Staging::new("predict")?)
        }
        false => None,
    };
    let dir = staging.as_ref().map_or(o.out, |s| s.path());
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--out {}: cannot create the folder", o.out.display()))?;
    let file = part_file(dir, o.shard_index, o.num_shards);
    Ok((staging, file))
}

/// Predicts this part's shards of the split and writes them as one Parquet file.
pub fn run(p: &Predictor, o: &DataPredict) -> anyhow::Result<Written> {
    let part = crate::data::part::Part::new(o.shard_index, o.num_shards)?;
    let t = Instant::now();
    let m = Manifest::load(o.data)?;
    p.loaded.check(&m, o.data, o.allow_shift)?;
    let opts = LoaderOptions {
        batch_size: o.batch_size,
        workers: o.workers,
        shuffle_buffer: 0,
        ..Default::default()
    };
    let loader = Loader::new(o.data, &m, o.split, opts)?.part(part);
    let (staging, file) = local_file(o)?;
    let mut out = ParquetOut::create(&file);
    let mut rows = Rows::default();
    let codec = p.codec();
    let prepare = codec.clone();
    let per_sample = Arc::new(move |mut s: crate::Sample| {
        s.target = None;
        prepare.prepare(s)
    });
    let passes = crate::forward_pools::Passes::new(crate::forward_pools::plan_for(0, p.device()))?;
    passes.stream(
        loader.epoch(0, 0, per_sample, Arc::new(|b| b)),
        &|batch: Vec<_>| {
            let (features, metas): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            metas
                .into_iter()
                .zip(p.forward(features))
                .collect::<Vec<_>>()
        },
        |predicted| {
            for (meta, raw) in predicted {
                rows.push(&codec.finish(meta, raw));
            }
            out.write(&rows.finish()?)
        },
    )?;
    let n = out.finish(&mut rows)?;
    let file = match staging {
        Some(_) => {
            let dst = part_file(o.out, o.shard_index, o.num_shards);
            crate::store::upload(&file, &dst)?;
            dst
        }
        None => file,
    };

    Ok(Written {
        file,
        rows: n,
        shards: loader.num_shards(),
        seconds: t.elapsed().as_secs_f64(),
    })
}
