//! Evaluation on held-out data: streams a split, runs the model and the baselines on the same
//! samples, and accumulates metrics.

pub mod baselines;
pub mod metrics;

use crate::batch::{Batch, FeatureBatcher};
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::Manifest;
use crate::features::Normalizer;
use crate::frame::LocalFrame;
use crate::model::{DfmModel, TokenMasks};
use baselines::RegionSpeed;
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use metrics::{EtaAcc, EtaMetrics, TrajAcc, TrajMetrics};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub split: String,
    pub batch_size: usize,
    pub miss_threshold_m: f64,
    pub workers: usize,
    /// Modalities masked out: any of history, imu, image, stops.
    pub drop: Vec<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct TrajReport {
    pub k: usize,
    #[serde(rename = "at_k")]
    pub at_k: Option<TrajMetrics>,
    pub at_1: Option<TrajMetrics>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Baselines {
    pub constant_velocity: Option<TrajMetrics>,
    pub eta_distance_over_speed: Option<EtaMetrics>,
}

#[derive(Serialize, Clone, Debug)]
pub struct EvalReport {
    pub split: String,
    pub samples: usize,
    pub trajectory: TrajReport,
    pub eta: Option<EtaMetrics>,
    pub baselines: Baselines,
}

/// What the baselines need of a raw sample, computed next to its features.
struct Truth {
    frame: LocalFrame,
    future: Option<Vec<[f64; 2]>>,
    cv: Vec<[f64; 2]>,
    arrival: Vec<Option<f64>>,
    eta_base: Vec<f64>,
}

/// Mean speed per region on the training split (for the ETA baseline).
pub fn region_speeds(
    dir: &Path,
    manifest: &Manifest,
    workers: usize,
) -> anyhow::Result<RegionSpeed> {
    let mut rs = RegionSpeed::default();
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
    for part in loader.epoch(
        0,
        0,
        Arc::new(|s| {
            let mut r = RegionSpeed::default();
            r.add(&s);
            r
        }),
        Arc::new(|v: Vec<RegionSpeed>| v),
    ) {
        for r in part? {
            rs.merge(&r);
        }
    }
    Ok(rs)
}

pub fn keep_mask(drop: &[String], b: usize, device: &Device) -> Tensor<2> {
    let names = ["history", "imu", "image", "stops"];
    let row: Vec<f32> = names
        .iter()
        .map(|n| {
            if drop.iter().any(|d| d == n) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    Tensor::<1>::from_data(burn::tensor::TensorData::new(row, [4]), device)
        .unsqueeze_dim::<2>(0)
        .repeat_dim(0, b)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

pub fn evaluate(
    model: &DfmModel,
    norm: &Arc<Normalizer>,
    dir: &Path,
    manifest: &Manifest,
    speeds: &RegionSpeed,
    o: &EvalOptions,
    device: &Device,
) -> anyhow::Result<EvalReport> {
    let spec = manifest.spec.clone();
    let step = spec.future_step_s as f64;
    let speeds = speeds.clone();
    let n2 = norm.clone();
    let per_sample = Arc::new(move |s: crate::Sample| {
        let f = n2.features(&s);
        let frame = f.meta.frame;
        let future = s
            .target
            .as_ref()
            .filter(|t| t.future.len() == spec.future_len)
            .map(|t| {
                t.future
                    .iter()
                    .map(|p| {
                        let (x, y) = frame.to_local(p[0], p[1]);
                        [x, y]
                    })
                    .collect()
            });
        let truth = Truth {
            frame,
            cv: baselines::constant_velocity(&s, &frame, spec.future_len, step),
            future,
            arrival: s
                .target
                .as_ref()
                .map(|t| t.arrival_s.clone())
                .unwrap_or_default(),
            eta_base: baselines::eta_distance_over_speed(&s, &frame, speeds.speed(s.region)),
        };
        (f, truth)
    });
    let dev = device.clone();
    let per_batch = Arc::new(move |items: Vec<(crate::features::Features, Truth)>| {
        let (f, t): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        (FeatureBatcher.batch(f, &dev), t)
    });
    let opts = LoaderOptions {
        batch_size: o.batch_size,
        workers: o.workers,
        shuffle_buffer: 0,
        ..Default::default()
    };
    let loader = Loader::new(dir, manifest, &o.split, opts)?;
    let model = model.valid().to_device(device);
    let (mut traj_k, mut traj_1, mut cv) =
        (TrajAcc::default(), TrajAcc::default(), TrajAcc::default());
    let (mut eta, mut eta_base) = (EtaAcc::default(), EtaAcc::default());
    let mut samples = 0;
    let k = model.modes;
    for item in loader.epoch(0, 0, per_sample, per_batch) {
        let (batch, truths): (Batch, Vec<Truth>) = item?;
        let b = batch.len();
        samples += b;
        let masks = TokenMasks {
            keep: keep_mask(&o.drop, b, device),
            hide_hist: None,
            hide_imu: None,
            hide_stops: None,
        };
        let out = model.forward(&batch, &masks);
        let traj = to_vec(out.traj);
        let probs = to_vec(softmax(out.mode_logits, 1));
        let eta_q = to_vec(out.eta);
        let fl = model.future_len;
        let n = spec.max_stops;
        for (i, t) in truths.iter().enumerate() {
            let _ = t.frame;
            if let Some(truth) = &t.future {
                let modes: Vec<Vec<[f64; 2]>> = (0..k)
                    .map(|m| {
                        (0..fl)
                            .map(|s| {
                                let o = ((i * k + m) * fl + s) * 2;
                                [
                                    (traj[o] * norm.traj_scale) as f64,
                                    (traj[o + 1] * norm.traj_scale) as f64,
                                ]
                            })
                            .collect()
                    })
                    .collect();
                let p: Vec<f64> = probs[i * k..(i + 1) * k]
                    .iter()
                    .map(|&x| x as f64)
                    .collect();
                traj_k.add(&modes, &p, truth, o.miss_threshold_m);
                let top = (0..k).fold(0, |a, m| if p[m] > p[a] { m } else { a });
                traj_1.add(&[modes[top].clone()], &[1.0], truth, o.miss_threshold_m);
                cv.add(&[t.cv.clone()], &[1.0], truth, o.miss_threshold_m);
            }
            for (j, a) in t.arrival.iter().enumerate().take(n) {
                if let Some(a) = a {
                    let q = |c: usize| norm.eta_decode(eta_q[(i * n + j) * 3 + c]);
                    eta.add(q(1), Some((q(0), q(2))), *a);
                    eta_base.add(t.eta_base[j], None, *a);
                }
            }
        }
    }
    Ok(EvalReport {
        split: o.split.clone(),
        samples,
        trajectory: TrajReport {
            k,
            at_k: traj_k.finish(),
            at_1: traj_1.finish(),
        },
        eta: eta.finish(true),
        baselines: Baselines {
            constant_velocity: cv.finish(),
            eta_distance_over_speed: eta_base.finish(false),
        },
    })
}

impl EvalReport {
    pub fn render(&self) -> String {
        let mut s = format!(
            "evaluation on `{}` ({} samples)\n",
            self.split, self.samples
        );
        let f = |x: Option<f64>| {
            x.map(|v| format!("{v:>9.2}"))
                .unwrap_or_else(|| format!("{:>9}", "absent"))
        };
        s.push_str(&format!(
            "{:<28} {:>9} {:>9} {:>9} {:>9}\n",
            "trajectory", "minADE m", "minFDE m", "miss", "brierFDE"
        ));
        let row = |name: &str, m: &Option<TrajMetrics>| {
            format!(
                "{:<28} {} {} {} {}\n",
                name,
                f(m.as_ref().map(|m| m.min_ade_m)),
                f(m.as_ref().map(|m| m.min_fde_m)),
                f(m.as_ref().map(|m| m.miss_rate)),
                f(m.as_ref().map(|m| m.brier_min_fde_m))
            )
        };
        s.push_str(&row(
            &format!("model K={}", self.trajectory.k),
            &self.trajectory.at_k,
        ));
        s.push_str(&row("model K=1", &self.trajectory.at_1));
        s.push_str(&row("constant velocity", &self.baselines.constant_velocity));
        s.push_str(&format!(
            "{:<28} {:>9} {:>9} {:>9} {:>9}\n",
            "ETA", "MAE s", "RMSE s", "P10-P90", "<=5 min"
        ));
        let erow = |name: &str, m: &Option<EtaMetrics>| {
            format!(
                "{:<28} {} {} {} {}\n",
                name,
                f(m.as_ref().map(|m| m.mae_s)),
                f(m.as_ref().map(|m| m.rmse_s)),
                f(m.as_ref().and_then(|m| m.p10_p90_coverage)),
                f(m.as_ref().map(|m| m.within_5_min))
            )
        };
        s.push_str(&erow("model P50", &self.eta));
        s.push_str(&erow(
            "distance / region speed",
            &self.baselines.eta_distance_over_speed,
        ));
        s
    }
}
