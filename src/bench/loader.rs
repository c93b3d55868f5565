//! `dfm bench loader`: samples per second of the whole input pipeline (read shards, decode JSON,
//! PNG and `.npy`, validate, compute features with images resized, build burn batches) for
//! several worker counts.

use crate::batch::FeatureBatcher;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::Manifest;
use crate::features::Featurizer;
use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[derive(Serialize, Debug)]
pub struct Row {
    pub workers: usize,
    pub samples: usize,
    pub seconds: f64,
    pub samples_per_s: f64,
}

#[derive(Serialize, Debug)]
pub struct LoaderBench {
    pub bench: &'static str,
    pub data: String,
    pub split: String,
    pub batch_size: usize,
    pub image_size: usize,
    /// Best over the worker counts.
    pub samples_per_s: f64,
    pub rows: Vec<Row>,
}

pub struct Options<'a> {
    pub data: &'a Path,
    pub split: &'a str,
    pub workers: &'a [usize],
    pub batch_size: usize,
    pub image_size: usize,
    pub max_samples: usize,
    pub device: Device,
}

pub fn run(o: &Options) -> anyhow::Result<LoaderBench> {
    let manifest = Manifest::load(o.data)?;
    let norm = Arc::new(Featurizer::new(
        &manifest.spec,
        &manifest.norm,
        o.image_size,
    ));
    let mut rows = Vec::new();
    for &w in o.workers {
        let opts = LoaderOptions {
            batch_size: o.batch_size,
            workers: w,
            shuffle_buffer: 1024,
            prefetch: 4,
            ..Default::default()
        };
        let loader = Loader::new(o.data, &manifest, o.split, opts)?;
        let n2 = norm.clone();
        let device = o.device.clone();
        let t = Instant::now();
        let mut n = 0;
        for b in loader.epoch(
            0,
            0,
            Arc::new(move |s| n2.features(&s)),
            Arc::new(move |items| FeatureBatcher.batch(items, &device)),
        ) {
            n += b?.len();
            if o.max_samples > 0 && n >= o.max_samples {
                break;
            }
        }
        rows.push(Row::timed(w, n, t.elapsed().as_secs_f64()));
    }
    let best = rows.iter().map(|r| r.samples_per_s).fold(0.0, f64::max);
    Ok(LoaderBench {
        bench: "loader",
        data: o.data.display().to_string(),
        split: o.split.to_string(),
        batch_size: o.batch_size,
        image_size: o.image_size,
        samples_per_s: best,
        rows,
    })
}

impl Row {
    fn timed(workers: usize, samples: usize, seconds: f64) -> Row {
        Row {
            workers,
            samples,
            seconds,
            samples_per_s: samples as f64 / seconds.max(1e-9),
        }
    }
}

impl LoaderBench {
    pub fn render(&self) -> String {
        let mut s = format!(
            "loader: {} split `{}`, batch {}, images resized to {}px, features + burn batches\n{:>8} {:>9} {:>9} {:>12}\n",
            self.data,
            self.split,
            self.batch_size,
            self.image_size,
            "workers",
            "samples",
            "seconds",
            "samples/s"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:>8} {:>9} {:>9.2} {:>12.0}\n",
                r.workers, r.samples, r.seconds, r.samples_per_s
            ));
        }
        s
    }
}
