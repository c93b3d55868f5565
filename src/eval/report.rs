//! The evaluation report: its JSON schema (stable; documented in README) and the printed tables.
//!
//! Top-level keys: `split`, `samples`, `model`, `trajectory`, `eta`, `on_time`, `delivered`,
//! `next_stop`, `baselines` (each baseline with the same keys as the model, null where it makes
//! no such prediction), `slices` (`region`, `weather`, `peak_day`, and `light_ahead` where
//! samples approach a traffic light, `speed`: samples with a future to score, by the band of
//! their history's mean speed: per value the sample count, the model's and the baselines'
//! metrics; `horizon`: errors per future step). A metric whose
//! labels are absent is null, not zero.

use super::metrics::{BinaryMetrics, EtaMetrics, ModeCalibration, NextStopMetrics, TrajMetrics};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct TrajBlock {
    /// Modes of the model (1 for a single-trajectory baseline).
    pub k: usize,
    pub miss_threshold_m: f64,
    /// Best of the K modes (Argoverse minADE_K, minFDE_K, miss rate, brier-minFDE).
    pub at_k: Option<TrajMetrics>,
    /// The single most likely trajectory: the model's point prediction (for a baseline, its
    /// one trajectory).
    pub at_1: Option<TrajMetrics>,
    /// The most probable of the K modes alone (null for a single-trajectory baseline).
    pub top_mode: Option<TrajMetrics>,
    /// Calibration of the mode probabilities (null for a single-trajectory baseline).
    pub mode_calibration: Option<ModeCalibration>,
}

/// What one predictor scored; null where it makes no such prediction or labels are absent.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct Metrics {
    pub trajectory: Option<TrajBlock>,
    pub eta: Option<EtaMetrics>,
    pub on_time: Option<BinaryMetrics>,
    pub delivered: Option<BinaryMetrics>,
    pub next_stop: Option<NextStopMetrics>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Slice {
    pub samples: usize,
    pub model: Metrics,
    pub baselines: BTreeMap<String, Metrics>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct HorizonRow {
    pub step: usize,
    pub t_s: f64,
    /// Mean displacement error at this step: the model's minFDE-selected mode, its most likely
    /// trajectory (K=1), its most probable mode, constant velocity, constant turn rate, ridge
    /// regression.
    pub model_best_of_k_m: f64,
    pub model_top1_m: f64,
    pub model_top_mode_m: f64,
    pub constant_velocity_m: f64,
    pub constant_turn_rate_m: f64,
    /// The run's ridge regression (null when the model has none).
    pub ridge_m: Option<f64>,
}

#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct Slices {
    pub region: BTreeMap<String, Slice>,
    pub weather: BTreeMap<String, Slice>,
    pub peak_day: BTreeMap<String, Slice>,
    /// Decision points approaching a traffic light, by its colour at `t0` (simulated worlds
    /// with video); absent elsewhere.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub light_ahead: BTreeMap<String, Slice>,
    /// Samples with a future to score, by their history's mean speed
    /// ([`crate::kinematics::speed_band`]); absent without trajectories.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub speed: BTreeMap<String, Slice>,
    pub horizon: Vec<HorizonRow>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub source: String,
    pub step: Option<usize>,
    /// Modalities masked out for this evaluation.
    pub dropped: Vec<String>,
    /// `model.support_guard`: the mean speed (m/s) from which the most likely trajectory's
    /// correction shrinks (to none at twice it); absent without the guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_guard_mps: Option<f64>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub split: String,
    pub samples: usize,
    /// Stops the model reads per sample; samples listing more were read as their nearest
    /// `stop_capacity` stops (counted here).
    pub stop_capacity: usize,
    pub samples_over_stop_capacity: usize,
    pub model: ModelInfo,
    pub trajectory: Option<TrajBlock>,
    pub eta: Option<EtaMetrics>,
    pub on_time: Option<BinaryMetrics>,
    pub delivered: Option<BinaryMetrics>,
    pub next_stop: Option<NextStopMetrics>,
    pub baselines: BTreeMap<String, Metrics>,
    /// Planned roll-outs of whole routes (route datasets only; `rollout::planned`): each
    /// route's zone plan driven in the direction the model finds likelier, or by a rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_plans: Option<BTreeMap<String, super::rollout::RolloutMetrics>>,
    pub slices: Slices,
}

fn f(x: Option<f64>, w: usize, p: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:>w$.p$}"),
        Some(_) => format!("{:>w$}", "nan"),
        None => format!("{:>w$}", "absent"),
    }
}

fn traj_row(s: &mut String, name: &str, m: Option<&TrajMetrics>) {
    let _ = writeln!(
        s,
        "  {name:<26}{}{}{}{}",
        f(m.map(|m| m.min_ade_m), 10, 2),
        f(m.map(|m| m.min_fde_m), 10, 2),
        f(m.map(|m| m.miss_rate), 10, 3),
        f(m.map(|m| m.brier_min_fde_m), 10, 2)
    );
}

fn rollout_rows(s: &mut String, title: &str, rows: &[(&str, &super::rollout::RolloutMetrics)]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{title:<28}{:>9}{:>9}{:>9}", "routes", "KRC", "score");
    for (n, r) in rows {
        let _ = writeln!(
            s,
            "  {n:<26}{:>9}{:>9.3}{:>9.4}",
            r.routes, r.krc, r.sequence_score
        );
    }
}

fn eta_row(s: &mut String, name: &str, m: Option<&EtaMetrics>) {
    let _ = writeln!(
        s,
        "  {name:<26}{}{}{}{}{}{}{}",
        f(m.map(|m| m.mae_s), 9, 1),
        f(m.map(|m| m.rmse_s), 9, 1),
        f(m.map(|m| m.mape), 8, 3),
        f(m.and_then(|m| m.p10_p90_coverage), 8, 3),
        f(m.map(|m| m.within_5_min), 8, 3),
        f(m.map(|m| m.within_10_min), 8, 3),
        f(m.map(|m| m.within_20_min), 8, 3)
    );
}

fn bin_row(s: &mut String, name: &str, m: Option<&BinaryMetrics>) {
    let _ = writeln!(
        s,
        "  {name:<26}{}{}{}{}{}",
        f(m.and_then(|m| m.auroc), 9, 3),
        f(m.map(|m| m.brier), 9, 4),
        f(m.map(|m| m.ece), 9, 4),
        f(m.map(|m| m.accuracy), 9, 3),
        f(m.map(|m| m.positive_rate), 9, 3)
    );
}

fn next_row(s: &mut String, name: &str, m: Option<&NextStopMetrics>) {
    let _ = writeln!(
        s,
        "  {name:<26}{}{}{}",
        f(m.map(|m| m.hr_at_3), 9, 3),
        f(m.map(|m| m.accuracy), 9, 3),
        f(m.and_then(|m| m.krc), 9, 3)
    );
}

/// A report in one line (a mixture's other sources at the end of training): the most likely
/// trajectory's and the best of K's final error against constant velocity, and the next stop.
pub fn one_line(source: &str, r: &EvalReport) -> String {
    let fde = |t: Option<&TrajBlock>, k1: bool| {
        t.and_then(|t| if k1 { t.at_1.as_ref() } else { t.at_k.as_ref() })
            .map(|m| format!("{:.2} m", m.min_fde_m))
            .unwrap_or_else(|| "absent".into())
    };
    let cv = r
        .baseline("constant_velocity")
        .and_then(|m| m.trajectory.as_ref());
    let next = r
        .next_stop
        .as_ref()
        .map(|n| format!("{:.3}", n.hr_at_3))
        .unwrap_or_else(|| "absent".into());
    format!(
        "evaluation on {source} `{}`: {} samples; minFDE K=1 {} (constant velocity {}), best of K {}; next stop HR@3 {next}",
        r.split,
        r.samples,
        fde(r.trajectory.as_ref(), true),
        fde(cv, false),
        fde(r.trajectory.as_ref(), false),
    )
}

impl EvalReport {
    pub fn baseline(&self, name: &str) -> Option<&Metrics> {
        self.baselines.get(name)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_header(&mut s);
        self.render_trajectory(&mut s);
        self.render_eta(&mut s);
        self.render_outcomes(&mut s);
        self.render_next_stop(&mut s);
        self.render_slices(&mut s);
        self.render_speed(&mut s);
        self.render_horizon(&mut s);
        s
    }

    /// What was evaluated on what.
    fn render_header(&self, s: &mut String) {
        let dropped = if self.model.dropped.is_empty() {
            String::new()
        } else {
            format!(", without {}", self.model.dropped.join(", "))
        };
        let _ = writeln!(
            s,
            "evaluation of {} on `{}`: {} samples{dropped}",
            self.model.source, self.split, self.samples
        );
        if let Some(v) = self.model.support_guard_mps {
            let _ = writeln!(
                s,
                "  support guard: the most likely trajectory's correction shrinks from {v:.1} m/s (the training histories' 99th percentile, or its initial model's where larger) to none at {:.1} m/s",
                2.0 * v
            );
        }
        if self.samples_over_stop_capacity > 0 {
            let _ = writeln!(
                s,
                "  {} samples list more stops than the model reads ({}): model and baselines saw their nearest {}",
                self.samples_over_stop_capacity, self.stop_capacity, self.stop_capacity
            );
        }
    }

    /// Trajectory errors of the model (K, most likely, most probable mode) and the baselines.
    fn render_trajectory(&self, s: &mut String) {
        let b = |n: &str| self.baselines.get(n);
        let Some(k) = self.trajectory.as_ref().map(|t| t.k) else {
            let _ = writeln!(s, "\ntrajectory: absent (the data has no futures)");
            return;
        };
        let miss = self
            .trajectory
            .as_ref()
            .map(|t| t.miss_threshold_m)
            .unwrap_or(2.0);
        let _ = writeln!(
            s,
            "\ntrajectory{:<18}{:>10}{:>10}{:>10}{:>10}",
            "",
            "minADE m",
            "minFDE m",
            format!("miss@{miss}m"),
            "brierFDE"
        );
        let t = self.trajectory.as_ref();
        traj_row(s, &format!("model K={k}"), t.and_then(|t| t.at_k.as_ref()));
        traj_row(s, "model K=1", t.and_then(|t| t.at_1.as_ref()));
        traj_row(s, "model top mode", t.and_then(|t| t.top_mode.as_ref()));
        for (n, label) in [
            ("constant_velocity", "constant velocity"),
            ("constant_turn_rate", "constant turn rate"),
            ("ridge", "ridge regression"),
        ] {
            if n == "ridge" && b(n).is_none() {
                continue;
            }
            traj_row(
                s,
                label,
                b(n).and_then(|m| m.trajectory.as_ref())
                    .and_then(|t| t.at_k.as_ref()),
            );
        }
        if let Some(c) = t.and_then(|t| t.mode_calibration.as_ref()) {
            let _ = writeln!(
                s,
                "  mode probabilities: the top mode claims {:.3}, is the best mode {:.3} of the time (ECE {:.3})",
                c.mean_top_probability, c.top_is_best_rate, c.ece
            );
        }
    }

    /// ETA errors.
    fn render_eta(&self, s: &mut String) {
        let b = |n: &str| self.baselines.get(n);
        if self.eta.is_none() {
            let _ = writeln!(s, "\nETA: absent (the data has no arrival times)");
            return;
        }
        let _ = writeln!(
            s,
            "\nETA{:<25}{:>9}{:>9}{:>8}{:>8}{:>8}{:>8}{:>8}",
            "", "MAE s", "RMSE s", "MAPE", "P10-P90", "<=5min", "<=10min", "<=20min"
        );
        eta_row(s, "model P50", self.eta.as_ref());
        eta_row(
            s,
            "distance / region speed",
            b("distance_over_speed").and_then(|m| m.eta.as_ref()),
        );
    }

    /// On-time and delivered.
    fn render_outcomes(&self, s: &mut String) {
        let b = |n: &str| self.baselines.get(n);
        if self.on_time.is_none() && self.delivered.is_none() {
            let _ = writeln!(
                s,
                "\noutcomes: absent (the data has no on-time or delivered labels)"
            );
            return;
        }
        let _ = writeln!(
            s,
            "\noutcomes{:<20}{:>9}{:>9}{:>9}{:>9}{:>9}",
            "", "AUROC", "Brier", "ECE", "accuracy", "rate"
        );
        bin_row(s, "on-time: model", self.on_time.as_ref());
        bin_row(
            s,
            "on-time: base rate",
            b("base_rate").and_then(|m| m.on_time.as_ref()),
        );
        bin_row(s, "delivered: model", self.delivered.as_ref());
        bin_row(
            s,
            "delivered: base rate",
            b("base_rate").and_then(|m| m.delivered.as_ref()),
        );
        if self.on_time.is_some() || self.delivered.is_some() {
            let _ = writeln!(
                s,
                "  (AUROC from {} probability bins, ECE from {}: streaming, memory bounded)",
                super::metrics::AUC_BINS,
                super::metrics::ECE_BINS
            );
        }
    }

    /// Next stop, and the route roll-outs.
    fn render_next_stop(&self, s: &mut String) {
        let b = |n: &str| self.baselines.get(n);
        let _ = writeln!(
            s,
            "\nnext stop{:<19}{:>9}{:>9}{:>9}",
            "", "HR@3", "accuracy", "KRC"
        );
        next_row(s, "model", self.next_stop.as_ref());
        next_row(
            s,
            "nearest stop first",
            b("nearest_stop_first").and_then(|m| m.next_stop.as_ref()),
        );
        next_row(
            s,
            "same zone, then nearest",
            b("same_zone_nearest_first").and_then(|m| m.next_stop.as_ref()),
        );
        if let Some(m) = b("zone_neighbour_first").and_then(|m| m.next_stop.as_ref()) {
            next_row(s, "same zone, neighbour zone", Some(m));
        }
        let zone_first = self
            .next_stop
            .as_ref()
            .and_then(|m| m.rollout_zone_first.as_ref());
        let rollouts: Vec<(&str, &super::rollout::RolloutMetrics)> = [
            ("model", self.next_stop.as_ref()),
            (
                "nearest stop first",
                b("nearest_stop_first").and_then(|m| m.next_stop.as_ref()),
            ),
            (
                "same zone, then nearest",
                b("same_zone_nearest_first").and_then(|m| m.next_stop.as_ref()),
            ),
            (
                "same zone, neighbour zone",
                b("zone_neighbour_first").and_then(|m| m.next_stop.as_ref()),
            ),
        ]
        .into_iter()
        .filter_map(|(n, m)| Some((n, m?.rollout.as_ref()?)))
        .chain(zone_first.map(|r| ("model, zone first", r)))
        .collect();
        rollout_rows(s, "route roll-out (greedy)", &rollouts);
        if let Some(p) = &self.route_plans {
            rollout_rows(s, "zone plan roll-out", &plan_rows(p));
        }
    }

    /// Per region, weather, peak day and light ahead.
    fn render_slices(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\nslices{:<22}{:>8}{:>10}{:>10}{:>9}{:>9}{:>9}{:>9}{:>8}",
            "",
            "samples",
            "minADE_K",
            "CV minADE",
            "ETA MAE",
            "base MAE",
            "on-time",
            "deliv.",
            "HR@3"
        );
        for (group, map) in [
            ("region", &self.slices.region),
            ("weather", &self.slices.weather),
            ("peak_day", &self.slices.peak_day),
            ("light_ahead", &self.slices.light_ahead),
        ] {
            for (name, sl) in map {
                let cv = sl
                    .baselines
                    .get("constant_velocity")
                    .and_then(|m| m.trajectory.as_ref())
                    .and_then(|t| t.at_k.as_ref());
                let be = sl
                    .baselines
                    .get("distance_over_speed")
                    .and_then(|m| m.eta.as_ref());
                let _ = writeln!(
                    s,
                    "  {:<26}{:>8}{}{}{}{}{}{}{}",
                    format!("{group}={name}"),
                    sl.samples,
                    f(
                        sl.model
                            .trajectory
                            .as_ref()
                            .and_then(|t| t.at_k.as_ref())
                            .map(|m| m.min_ade_m),
                        10,
                        2
                    ),
                    f(cv.map(|m| m.min_ade_m), 10, 2),
                    f(sl.model.eta.as_ref().map(|m| m.mae_s), 9, 1),
                    f(be.map(|m| m.mae_s), 9, 1),
                    f(sl.model.on_time.as_ref().and_then(|m| m.auroc), 9, 3),
                    f(sl.model.delivered.as_ref().and_then(|m| m.auroc), 9, 3),
                    f(sl.model.next_stop.as_ref().map(|m| m.hr_at_3), 8, 3)
                );
            }
        }
    }

    /// Final displacement by the history's speed: where the model gains on the baselines and
    /// where it does not.
    fn render_speed(&self, s: &mut String) {
        if self.slices.speed.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "
minFDE m by speed{:<11}{:>8}{:>10}{:>10}{:>10}{:>10}",
            "", "samples", "best of K", "K=1", "CV", "ridge"
        );
        let fde = |m: Option<&Metrics>, at_1: bool| {
            m.and_then(|m| m.trajectory.as_ref())
                .and_then(|t| {
                    if at_1 {
                        t.at_1.as_ref()
                    } else {
                        t.at_k.as_ref()
                    }
                })
                .map(|t| t.min_fde_m)
        };
        for (band, sl) in &self.slices.speed {
            let _ = writeln!(
                s,
                "  {:<26}{:>8}{}{}{}{}",
                format!("speed={band}"),
                sl.samples,
                f(fde(Some(&sl.model), false), 10, 2),
                f(fde(Some(&sl.model), true), 10, 2),
                f(fde(sl.baselines.get("constant_velocity"), false), 10, 2),
                f(fde(sl.baselines.get("ridge"), false), 10, 2)
            );
        }
    }

    /// Errors per horizon step.
    fn render_horizon(&self, s: &mut String) {
        if !self.slices.horizon.is_empty() {
            let _ = writeln!(
                s,
                "\nerror by horizon (m){:<8}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
                "", "best of K", "K=1", "top mode", "CV", "CTRV", "ridge"
            );
            for h in &self.slices.horizon {
                let _ = writeln!(
                    s,
                    "  {:<26}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{}",
                    format!("step {} ({:.0} s)", h.step, h.t_s),
                    h.model_best_of_k_m,
                    h.model_top1_m,
                    h.model_top_mode_m,
                    h.constant_velocity_m,
                    h.constant_turn_rate_m,
                    f(h.ridge_m, 10, 2)
                );
            }
        }
    }
}

/// The zone plan's roll-outs in the report's order, each under its readable name.
fn plan_rows(
    p: &BTreeMap<String, super::rollout::RolloutMetrics>,
) -> Vec<(&'static str, &super::rollout::RolloutMetrics)> {
    fn name(k: &str) -> &'static str {
        match k {
            "model" => "model's likelier way",
            "nearest_end_first" => "nearest end first",
            "far_end_first" => "far end first",
            _ => "better end (reads truth)",
        }
    }
    let order = [
        "model",
        "nearest_end_first",
        "far_end_first",
        "better_end_first",
    ];
    order
        .iter()
        .filter_map(|k| Some((name(k), p.get(*k)?)))
        .collect()
}
