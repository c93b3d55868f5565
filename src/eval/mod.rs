//! Evaluation on held-out data (`dfm eval`): streams a split, runs the model and every baseline
//! on the same samples, and accumulates metrics overall, per slice (region, weather, peak day)
//! and per horizon step. Memory does not grow with the split: metrics are streaming accumulators
//! (binned where a metric needs a distribution), and only a few samples are kept for plots.

pub mod ablation;
pub mod baselines;
pub mod metrics;
pub mod plots;
pub mod report;
pub mod ridge;
pub mod rollout;
pub mod run;

pub use run::{EvalInputs, evaluate};
pub mod sequence;

use crate::batch::{Batch, FeatureBatcher};
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::Manifest;
use crate::data::sample::{ImageKind, Rgb8};
use crate::features::{Features, Featurizer};
use crate::model::{DfmModel, MODALITIES, TokenMasks};
use baselines::TrainStats;
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};
use metrics::{BinaryAcc, EtaAcc, ModeCalAcc, NextStopAcc, TrajAcc};
use report::{EvalReport, HorizonRow, Metrics, ModelInfo, Slice, Slices, TrajBlock};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub split: String,
    pub batch_size: usize,
    pub miss_threshold_m: f64,
    pub workers: usize,
    /// Modalities masked out: any of history, imu, image, stops, context, video.
    pub drop: Vec<String>,
    /// Write PNG plots here.
    pub plots: Option<PathBuf>,
}

impl EvalOptions {
    pub fn check(&self) -> anyhow::Result<()> {
        for d in &self.drop {
            if !MODALITIES.contains(&d.as_str()) {
                anyhow::bail!(
                    "--drop {d}: unknown modality; allowed: {}",
                    MODALITIES.join(", ")
                );
            }
        }
        Ok(())
    }
}

/// Keep flags [B, 6] (the order of `MODALITIES`): 0 for the dropped modalities.
pub fn keep_mask(drop: &[String], b: usize, device: &Device) -> Tensor<2> {
    let row: Vec<f32> = MODALITIES
        .iter()
        .map(|n| {
            if drop.iter().any(|d| d == n) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    Tensor::<1>::from_data(
        burn::tensor::TensorData::new(row, [MODALITIES.len()]),
        device,
    )
    .unsqueeze_dim::<2>(0)
    .repeat_dim(0, b)
}

/// What the baselines learn from the training split (region speeds, base rates).
pub fn train_stats(dir: &Path, manifest: &Manifest, workers: usize) -> anyhow::Result<TrainStats> {
    let mut st = TrainStats::default();
    let split = if manifest.splits.contains_key("train") {
        "train"
    } else {
        "all"
    };
    let opts = LoaderOptions {
        batch_size: 512,
        workers,
        shuffle_buffer: 0,
        ..Default::default()
    };
    let loader = Loader::new(dir, manifest, split, opts)?;
    let per_sample = Arc::new(|s: crate::Sample| {
        let mut t = TrainStats::default();
        t.add(&s);
        t
    });
    for part in loader.epoch(0, 0, per_sample, Arc::new(|v: Vec<TrainStats>| v)) {
        for t in part? {
            st.merge(&t);
        }
    }
    Ok(st)
}

/// Host-side facts of a sample beside its features: truth and baseline predictions (meters,
/// seconds, local frame) and what the plots need.
pub struct Truth {
    future: Option<Vec<[f64; 2]>>,
    cv: Vec<[f64; 2]>,
    ctrv: Vec<[f64; 2]>,
    ridge: Option<Vec<[f64; 2]>>,
    arrival: Vec<Option<f64>>,
    eta_base: Vec<f64>,
    on_time: Vec<Option<bool>>,
    delivered: Option<bool>,
    next: Option<usize>,
    nearest: Vec<f64>,
    same_zone: Vec<f64>,
    zone_neighbour: Vec<f64>,
    /// The vehicle's zone id follows the Amazon convention (neighbouring zones are known).
    zone_convention: bool,
    /// The raw decision, kept for route roll-outs (route datasets only).
    decision: Option<crate::Sample>,
    /// The sample listed more stops than the model reads (it saw the nearest ones).
    over_capacity: bool,
    slices: [String; 5],
    history: Vec<[f64; 2]>,
    raster: Option<(Rgb8, f32, [f32; 2])>,
}

/// The model's and the baselines' predictions for one sample.
struct Pred<'a> {
    t: &'a Truth,
    modes: Vec<Vec<[f64; 2]>>,
    /// The single most likely trajectory.
    point: Vec<[f64; 2]>,
    probs: Vec<f64>,
    eta: Vec<[f64; 3]>,
    on_time: Vec<f64>,
    delivered: f64,
    next: Vec<f64>,
}

#[derive(Clone, Debug, Default)]
struct MetricSums {
    samples: usize,
    traj_k: TrajAcc,
    traj_1: TrajAcc,
    traj_top: TrajAcc,
    mode_cal: ModeCalAcc,
    cv: TrajAcc,
    ctrv: TrajAcc,
    ridge: TrajAcc,
    eta: EtaAcc,
    eta_base: EtaAcc,
    on_time: BinaryAcc,
    on_time_base: BinaryAcc,
    delivered: BinaryAcc,
    delivered_base: BinaryAcc,
    next: NextStopAcc,
    next_base: NextStopAcc,
    next_zone: NextStopAcc,
    next_neighbour: NextStopAcc,
    /// Decisions whose vehicle zone follows the Amazon zone-id convention.
    zone_convention: u64,
}

fn top_mode(p: &[f64]) -> usize {
    (0..p.len()).fold(0, |a, m| if p[m] > p[a] { m } else { a })
}

impl MetricSums {
    fn add(&mut self, p: &Pred, stats: &TrainStats, miss: f64) {
        let t = p.t;
        self.samples += 1;
        if let Some(truth) = &t.future {
            self.traj_k.add(&p.modes, &p.probs, truth, miss);
            self.traj_1
                .add(std::slice::from_ref(&p.point), &[1.0], truth, miss);
            self.traj_top
                .add(&[p.modes[top_mode(&p.probs)].clone()], &[1.0], truth, miss);
            self.mode_cal.add(&p.probs, &p.modes, truth);
            self.cv
                .add(std::slice::from_ref(&t.cv), &[1.0], truth, miss);
            self.ctrv
                .add(std::slice::from_ref(&t.ctrv), &[1.0], truth, miss);
            if let Some(r) = &t.ridge {
                self.ridge.add(std::slice::from_ref(r), &[1.0], truth, miss);
            }
        }
        for (j, a) in t.arrival.iter().enumerate().take(p.eta.len()) {
            if let Some(a) = a {
                let q = p.eta[j];
                self.eta.add(q[1], Some((q[0], q[2])), *a);
                self.eta_base.add(t.eta_base[j], None, *a);
            }
        }
        for (j, y) in t.on_time.iter().enumerate().take(p.on_time.len()) {
            if let Some(y) = y {
                self.on_time.add(p.on_time[j], *y);
                self.on_time_base.add(stats.on_time_rate(), *y);
            }
        }
        if let Some(y) = t.delivered {
            self.delivered.add(p.delivered, y);
            self.delivered_base.add(stats.delivered_rate(), y);
        }
        let n = p.next.len().min(t.nearest.len());
        let order: Option<Vec<f64>> =
            (t.arrival.len() >= n && n >= 2 && t.arrival[..n].iter().all(Option::is_some))
                .then(|| t.arrival[..n].iter().map(|a| a.unwrap()).collect());
        if t.next.is_some() || order.is_some() {
            self.next.add(&p.next[..n], t.next, order.as_deref());
            self.next_base
                .add(&t.nearest[..n], t.next, order.as_deref());
            self.next_zone
                .add(&t.same_zone[..n], t.next, order.as_deref());
            self.next_neighbour
                .add(&t.zone_neighbour[..n], t.next, order.as_deref());
            self.zone_convention += t.zone_convention as u64;
        }
    }

    fn finish(&self, k: usize, miss: f64) -> (Metrics, BTreeMap<String, Metrics>) {
        (self.model_metrics(k, miss), self.baseline_metrics(miss))
    }

    fn model_metrics(&self, k: usize, miss: f64) -> Metrics {
        let trajectory = traj_block(&self.traj_k, Some(&self.traj_1), k, miss).map(|t| TrajBlock {
            top_mode: self.traj_top.finish(),
            mode_calibration: self.mode_cal.finish(),
            ..t
        });
        Metrics {
            trajectory,
            eta: self.eta.finish(true),
            on_time: self.on_time.finish(),
            delivered: self.delivered.finish(),
            next_stop: self.next.finish(),
        }
    }

    /// Every baseline by name, each with the metrics it answers.
    fn baseline_metrics(&self, miss: f64) -> BTreeMap<String, Metrics> {
        let trajectory = |acc: &TrajAcc| Metrics {
            trajectory: traj_block(acc, None, 1, miss),
            ..Default::default()
        };
        let next_stop = |acc: &NextStopAcc| Metrics {
            next_stop: acc.finish(),
            ..Default::default()
        };
        let mut b = BTreeMap::new();
        b.insert("constant_velocity".into(), trajectory(&self.cv));
        b.insert("constant_turn_rate".into(), trajectory(&self.ctrv));
        if self.ridge.n > 0 {
            b.insert("ridge".into(), trajectory(&self.ridge));
        }
        b.insert(
            "distance_over_speed".into(),
            Metrics {
                eta: self.eta_base.finish(false),
                ..Default::default()
            },
        );
        b.insert(
            "base_rate".into(),
            Metrics {
                on_time: self.on_time_base.finish(),
                delivered: self.delivered_base.finish(),
                ..Default::default()
            },
        );
        b.insert("nearest_stop_first".into(), next_stop(&self.next_base));
        b.insert("same_zone_nearest_first".into(), next_stop(&self.next_zone));
        // Only where zone ids say which zones are neighbours (else it is the rule above).
        if self.zone_convention > 0 {
            b.insert(
                "zone_neighbour_first".into(),
                next_stop(&self.next_neighbour),
            );
        }
        b
    }
}

/// The trajectory block of `at_k` (its K=1 from `at_1`, else `at_k` itself); None without
/// samples.
fn traj_block(at_k: &TrajAcc, at_1: Option<&TrajAcc>, k: usize, miss: f64) -> Option<TrajBlock> {
    let at_k = at_k.finish()?;
    Some(TrajBlock {
        k,
        miss_threshold_m: miss,
        at_1: at_1.and_then(|a| a.finish()).or_else(|| Some(at_k.clone())),
        top_mode: None,
        mode_calibration: None,
        at_k: Some(at_k),
    })
}

/// ETA calibration: for each quantile, how often the truth falls below it; and the mean truth
/// per bin of predicted P50.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    pub below: [u64; 3],
    pub n: u64,
    /// (sum predicted P50, sum truth, count) per log-spaced bin of predicted P50.
    pub p50_bins: Vec<(f64, f64, u64)>,
}

pub const P50_EDGES_S: [f64; 8] = [
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    2400.0,
    4800.0,
    f64::INFINITY,
];

/// Data the plots need, gathered while streaming (bounded).
#[derive(Default)]
pub struct PlotData {
    pub samples: Vec<PlotSample>,
    pub calibration: Calibration,
    pub on_time_reliability: Vec<(f64, f64, u64)>,
    pub delivered_reliability: Vec<(f64, f64, u64)>,
    pub horizon: Vec<HorizonRow>,
}

pub struct PlotSample {
    pub key: String,
    pub raster: Option<(Rgb8, f32, [f32; 2])>,
    pub history: Vec<[f64; 2]>,
    pub truth: Vec<[f64; 2]>,
    pub modes: Vec<Vec<[f64; 2]>>,
    pub probs: Vec<f64>,
    pub cv: Vec<[f64; 2]>,
}

const PLOT_SAMPLES: usize = 6;

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}
