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
pub mod sequence;
pub mod source;

use crate::batch::{Batch, FeatureBatcher};
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::Manifest;
use crate::data::sample::{ImageKind, Rgb8};
use crate::features::{Features, Normalizer};
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
    /// Modalities masked out: any of history, imu, image, stops, context.
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

/// Keep flags [B, 5] (history, imu, image, stops, context): 0 for the dropped modalities.
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
    /// The raw decision, kept for route roll-outs (route datasets only).
    decision: Option<crate::Sample>,
    /// The sample listed more stops than the model reads (it saw the nearest ones).
    over_capacity: bool,
    slices: [String; 3],
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
struct Acc {
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
}

fn top_mode(p: &[f64]) -> usize {
    (0..p.len()).fold(0, |a, m| if p[m] > p[a] { m } else { a })
}

impl Acc {
    fn add(&mut self, p: &Pred, stats: &TrainStats, miss: f64) {
        let t = p.t;
        self.samples += 1;
        if let Some(truth) = &t.future {
            self.traj_k.add(&p.modes, &p.probs, truth, miss);
            self.traj_1.add(&[p.point.clone()], &[1.0], truth, miss);
            self.traj_top
                .add(&[p.modes[top_mode(&p.probs)].clone()], &[1.0], truth, miss);
            self.mode_cal.add(&p.probs, &p.modes, truth);
            self.cv.add(&[t.cv.clone()], &[1.0], truth, miss);
            self.ctrv.add(&[t.ctrv.clone()], &[1.0], truth, miss);
            if let Some(r) = &t.ridge {
                self.ridge.add(&[r.clone()], &[1.0], truth, miss);
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
        }
    }

    fn finish(&self, k: usize, miss: f64) -> (Metrics, BTreeMap<String, Metrics>) {
        let traj = |at_k: &TrajAcc, at_1: Option<&TrajAcc>, k: usize| {
            let at_k = at_k.finish();
            at_k.is_some().then(|| TrajBlock {
                k,
                miss_threshold_m: miss,
                at_1: at_1.and_then(|a| a.finish()).or_else(|| at_k.clone()),
                top_mode: None,
                mode_calibration: None,
                at_k,
            })
        };
        let model_traj = traj(&self.traj_k, Some(&self.traj_1), k).map(|t| TrajBlock {
            top_mode: self.traj_top.finish(),
            mode_calibration: self.mode_cal.finish(),
            ..t
        });
        let model = Metrics {
            trajectory: model_traj,
            eta: self.eta.finish(true),
            on_time: self.on_time.finish(),
            delivered: self.delivered.finish(),
            next_stop: self.next.finish(),
        };
        let mut b = BTreeMap::new();
        b.insert(
            "constant_velocity".into(),
            Metrics {
                trajectory: traj(&self.cv, None, 1),
                ..Default::default()
            },
        );
        b.insert(
            "constant_turn_rate".into(),
            Metrics {
                trajectory: traj(&self.ctrv, None, 1),
                ..Default::default()
            },
        );
        if self.ridge.n > 0 {
            b.insert(
                "ridge".into(),
                Metrics {
                    trajectory: traj(&self.ridge, None, 1),
                    ..Default::default()
                },
            );
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
        b.insert(
            "nearest_stop_first".into(),
            Metrics {
                next_stop: self.next_base.finish(),
                ..Default::default()
            },
        );
        b.insert(
            "same_zone_nearest_first".into(),
            Metrics {
                next_stop: self.next_zone.finish(),
                ..Default::default()
            },
        );
        (model, b)
    }
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

/// Runs the evaluation of `model` (with the normalization it was trained with) on a split.
pub fn evaluate(
    model: &DfmModel,
    norm: &Arc<Normalizer>,
    info: ModelInfo,
    dir: &Path,
    manifest: &Manifest,
    stats: &TrainStats,
    o: &EvalOptions,
    device: &Device,
) -> anyhow::Result<(EvalReport, PlotData)> {
    o.check()?;
    let spec = norm.spec.clone();
    let step = spec.future_step_s as f64;
    let routes_mode = manifest.source == "lmrc";
    let stats2 = stats.clone();
    let n2 = norm.clone();
    let cap = spec.max_stops;
    let per_sample = Arc::new(move |orig: crate::Sample| {
        // The decision keeps every stop for the route roll-out; the model reads its capacity.
        let decision = routes_mode.then(|| orig.clone());
        let (s, kept) = crate::data::stop_set::fit(orig, cap);
        let f = n2.features(&s);
        let frame = f.meta.frame;
        let local = |lat: f64, lon: f64| {
            let (x, y) = frame.to_local(lat, lon);
            [x, y]
        };
        let t = s.target.as_ref();
        let raster = s
            .images
            .iter()
            .find(|im| im.kind == ImageKind::Map && im.m_per_px.is_some() && im.anchor_px.is_some())
            .and_then(|im| Some((im.pixels.clone()?, im.m_per_px?, im.anchor_px?)));
        let truth = Truth {
            future: t
                .filter(|t| t.future.len() == spec.future_len)
                .map(|t| t.future.iter().map(|p| local(p[0], p[1])).collect()),
            cv: baselines::constant_velocity(&s, &frame, spec.future_len, step),
            ctrv: baselines::constant_turn_rate(&s, &frame, spec.future_len, step),
            ridge: stats2
                .ridge
                .as_ref()
                .and_then(|r| r.predict_m(&f, n2.traj_scale)),
            arrival: t.map(|t| t.arrival_s.clone()).unwrap_or_default(),
            eta_base: baselines::eta_distance_over_speed(&s, &frame, stats2.speeds.speed(s.region)),
            on_time: t.map(|t| t.on_time.clone()).unwrap_or_default(),
            delivered: t.and_then(|t| t.delivered),
            next: t.and_then(|t| t.next_stop),
            nearest: baselines::nearest_first_scores(&s, &frame),
            same_zone: baselines::same_zone_nearest_scores(&s, &frame),
            decision,
            over_capacity: kept.is_some(),
            slices: [
                s.region.name().to_string(),
                s.context
                    .weather
                    .map(|w| w.name().to_string())
                    .unwrap_or_else(|| "unknown".into()),
                s.context
                    .peak_day
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown".into()),
            ],
            history: s.history.iter().map(|h| local(h.lat, h.lon)).collect(),
            raster,
        };
        (f, truth)
    });
    let dev = device.clone();
    let per_batch = Arc::new(move |items: Vec<(Features, Truth)>| {
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
    let k = model.modes;
    let fl = model.future_len;
    let n = spec.max_stops;
    let miss = o.miss_threshold_m;
    let mut all = Acc::default();
    let mut groups: [BTreeMap<String, Acc>; 3] = Default::default();
    let mut horizon = vec![[0f64; 6]; fl];
    let mut horizon_n = 0u64;
    let mut route_logs: BTreeMap<String, rollout::RouteLog> = BTreeMap::new();
    let mut over_capacity = 0usize;
    let mut plot = PlotData {
        calibration: Calibration {
            p50_bins: vec![(0.0, 0.0, 0); P50_EDGES_S.len()],
            ..Default::default()
        },
        ..Default::default()
    };
    for item in loader.epoch(0, 0, per_sample, per_batch) {
        let (batch, truths): (Batch, Vec<Truth>) = item?;
        let b = batch.len();
        let masks = TokenMasks {
            keep: keep_mask(&o.drop, b, device),
            hide_hist: None,
            hide_imu: None,
            hide_stops: None,
        };
        let out = model.forward(&batch, &masks);
        let traj = to_vec(out.traj);
        let point = to_vec(out.point);
        let probs = to_vec(softmax(out.mode_logits, 1));
        let eta_q = to_vec(out.eta);
        let on_time = to_vec(sigmoid(out.on_time_logits));
        let delivered = to_vec(sigmoid(out.delivered_logits));
        let next = to_vec(out.next_logits);
        for (i, t) in truths.iter().enumerate() {
            let pred = Pred {
                t,
                modes: (0..k).map(|m| norm.traj_m(&traj, i * k + m)).collect(),
                point: norm.traj_m(&point, i),
                probs: probs[i * k..(i + 1) * k]
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                eta: (0..n)
                    .map(|j| std::array::from_fn(|c| norm.eta_decode(eta_q[(i * n + j) * 3 + c])))
                    .collect(),
                on_time: on_time[i * n..(i + 1) * n]
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                delivered: delivered[i] as f64,
                next: next[i * n..(i + 1) * n].iter().map(|&x| x as f64).collect(),
            };
            all.add(&pred, stats, miss);
            over_capacity += t.over_capacity as usize;
            if let Some(d) = &t.decision {
                route_logs.entry(d.route_id.clone()).or_default().add(d);
            }
            for (g, key) in groups.iter_mut().zip(&t.slices) {
                g.entry(key.clone()).or_default().add(&pred, stats, miss);
            }
            if let Some(truth) = &t.future {
                let err = |p: &[f64; 2], q: &[f64; 2]| {
                    ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt()
                };
                let last = fl - 1;
                let best = (0..k).fold(0, |a, m| {
                    if err(&pred.modes[m][last], &truth[last])
                        < err(&pred.modes[a][last], &truth[last])
                    {
                        m
                    } else {
                        a
                    }
                });
                let top = top_mode(&pred.probs);
                for s in 0..fl {
                    horizon[s][0] += err(&pred.modes[best][s], &truth[s]);
                    horizon[s][1] += err(&pred.point[s], &truth[s]);
                    horizon[s][5] += err(&pred.modes[top][s], &truth[s]);
                    horizon[s][2] += err(&t.cv[s], &truth[s]);
                    horizon[s][3] += err(&t.ctrv[s], &truth[s]);
                    if let Some(r) = &t.ridge {
                        horizon[s][4] += err(&r[s], &truth[s]);
                    }
                }
                horizon_n += 1;
                if o.plots.is_some() && plot.samples.len() < PLOT_SAMPLES && t.raster.is_some() {
                    plot.samples.push(PlotSample {
                        key: batch.meta[i].key.clone(),
                        raster: t.raster.clone(),
                        history: t.history.clone(),
                        truth: truth.clone(),
                        modes: pred.modes.clone(),
                        probs: pred.probs.clone(),
                        cv: t.cv.clone(),
                    });
                }
            }
            for (j, a) in t.arrival.iter().enumerate().take(n) {
                if let Some(a) = a {
                    let c = &mut plot.calibration;
                    c.n += 1;
                    for (q, below) in c.below.iter_mut().enumerate() {
                        *below += (*a <= pred.eta[j][q]) as u64;
                    }
                    let p50 = pred.eta[j][1];
                    let bin = P50_EDGES_S
                        .iter()
                        .position(|&e| p50 < e)
                        .unwrap_or(P50_EDGES_S.len() - 1);
                    let e = &mut c.p50_bins[bin];
                    e.0 += p50;
                    e.1 += a;
                    e.2 += 1;
                }
            }
        }
    }
    let (mut model_m, mut baselines) = all.finish(k, miss);
    if !route_logs.is_empty() {
        let bs = o.batch_size;
        let chooser = rollout::model_chooser(&model, norm, device, false);
        let zone_first = rollout::model_chooser(&model, norm, device, true);
        if let Some(m) = model_m.next_stop.as_mut() {
            m.rollout_zone_first = rollout::run(&route_logs, &zone_first, bs);
        }
        let runs: [(&str, Option<rollout::RolloutMetrics>); 3] = [
            ("model", rollout::run(&route_logs, &chooser, bs)),
            (
                "nearest_stop_first",
                rollout::run(&route_logs, &rollout::nearest_chooser(false), bs),
            ),
            (
                "same_zone_nearest_first",
                rollout::run(&route_logs, &rollout::nearest_chooser(true), bs),
            ),
        ];
        for (who, r) in runs {
            let m = if who == "model" {
                model_m.next_stop.as_mut()
            } else {
                baselines.get_mut(who).and_then(|b| b.next_stop.as_mut())
            };
            if let Some(m) = m {
                m.rollout = r;
            }
        }
    }
    let slice_map = |g: &BTreeMap<String, Acc>| -> BTreeMap<String, Slice> {
        g.iter()
            .map(|(name, acc)| {
                let (m, b) = acc.finish(k, miss);
                (
                    name.clone(),
                    Slice {
                        samples: acc.samples,
                        model: m,
                        baselines: b,
                    },
                )
            })
            .collect()
    };
    let hz = horizon_n.max(1) as f64;
    let horizon: Vec<HorizonRow> = (0..if horizon_n > 0 { fl } else { 0 })
        .map(|s| HorizonRow {
            step: s + 1,
            t_s: (s + 1) as f64 * step,
            model_best_of_k_m: horizon[s][0] / hz,
            model_top1_m: horizon[s][1] / hz,
            model_top_mode_m: horizon[s][5] / hz,
            constant_velocity_m: horizon[s][2] / hz,
            constant_turn_rate_m: horizon[s][3] / hz,
            ridge_m: (all.ridge.n > 0).then(|| horizon[s][4] / all.ridge.n as f64),
        })
        .collect();
    plot.on_time_reliability = all.on_time.reliability();
    plot.delivered_reliability = all.delivered.reliability();
    plot.horizon = horizon.clone();
    let report = EvalReport {
        split: o.split.clone(),
        samples: all.samples,
        stop_capacity: cap,
        samples_over_stop_capacity: over_capacity,
        model: info,
        trajectory: model_m.trajectory,
        eta: model_m.eta,
        on_time: model_m.on_time,
        delivered: model_m.delivered,
        next_stop: model_m.next_stop,
        baselines,
        slices: Slices {
            region: slice_map(&groups[0]),
            weather: slice_map(&groups[1]),
            peak_day: slice_map(&groups[2]),
            horizon,
        },
    };
    if let Some(dir) = &o.plots {
        plots::write_all(dir, &plot)?;
    }
    Ok((report, plot))
}
