//! Losses. Every term is a masked mean: a head whose labels are absent in a batch contributes
//! exactly zero (and no gradient).
//! - `traj`: winner-takes-all regression: mean Euclidean error of the best of K modes (the mode
//!   closest to the truth in average displacement), as in MTR / Wayformer.
//! - `mode`: cross-entropy of the mode logits with the winning mode as the class.
//! - `point`: mean Euclidean error of the single most likely trajectory, on every sample (the
//!   prediction downstream systems act on; a winner-takes-all mode only learns from the samples
//!   it wins, so the most probable mode is no estimate of the likeliest future).
//! - `eta`: pinball loss of the P10 / P50 / P90 arrival quantiles per stop.
//! - `on_time`, `delivered`: binary cross-entropy with logits.
//! - `next_stop`: cross-entropy of the pointer over the stop tokens.
//! - `recon`: mean squared error of reconstructed hidden history/IMU patches and stops.

use crate::batch::{Batch, Targets};
use crate::model::{Output, TokenMasks};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softplus};
use std::collections::BTreeMap;

pub const QUANTILES: [f32; 3] = [0.1, 0.5, 0.9];

/// Sum(x * mask) / max(sum(mask), 1): zero when nothing is labelled.
pub fn masked_mean<const D: usize>(x: Tensor<D>, mask: Tensor<D>) -> Tensor<1> {
    let n = mask.clone().sum().clamp_min(1.0);
    (x * mask).sum() / n
}

/// Per-sample, per-mode average displacement error [B, K] (in the units of the inputs).
pub fn ade_per_mode(traj: Tensor<4>, future: Tensor<3>) -> Tensor<2> {
    let diff = traj - future.unsqueeze_dim::<4>(1);
    let dist = (diff.powi_scalar(2).sum_dim(3) + 1e-6).sqrt(); // [B, K, F, 1]
    let [b, k, _, _] = dist.dims();
    dist.mean_dim(2).reshape([b, k])
}

fn bce_with_logits<const D: usize>(logits: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
    softplus(logits.clone(), 1.0) - logits * y
}

pub struct LossParts {
    pub total: Tensor<1>,
    /// Each term before weighting, for logging.
    pub parts: BTreeMap<&'static str, Tensor<1>>,
}

pub fn supervised(out: &Output, t: &Targets, w: &BTreeMap<String, f64>) -> LossParts {
    let mut parts = BTreeMap::new();
    // Trajectory: winner takes all.
    let ade = ade_per_mode(out.traj.clone(), t.future.clone()); // [B, K]
    let (best, idx) = ade.min_dim_with_indices(1); // [B, 1]
    let [b, _] = best.dims();
    parts.insert(
        "traj",
        masked_mean(best.reshape([b]), t.future_mask.clone()),
    );
    let point = ade_per_mode(out.point.clone().unsqueeze_dim(1), t.future.clone()).reshape([b]);
    parts.insert("point", masked_mean(point, t.future_mask.clone()));
    let logp = log_softmax(out.mode_logits.clone(), 1);
    let nll = logp.gather(1, idx).reshape([b]).neg();
    parts.insert("mode", masked_mean(nll, t.future_mask.clone()));
    // ETA quantiles.
    let mut pin = Vec::new();
    for (i, q) in QUANTILES.iter().enumerate() {
        let [bb, n, _] = out.eta.dims();
        let pred = out.eta.clone().narrow(2, i, 1).reshape([bb, n]);
        let e = t.eta.clone() - pred;
        let l = (e.clone() * *q).max_pair(e * (*q - 1.0));
        pin.push(masked_mean(l, t.eta_mask.clone()));
    }
    parts.insert(
        "eta",
        (pin[0].clone() + pin[1].clone() + pin[2].clone()) / 3.0,
    );
    parts.insert(
        "on_time",
        masked_mean(
            bce_with_logits(out.on_time_logits.clone(), t.on_time.clone()),
            t.on_time_mask.clone(),
        ),
    );
    parts.insert(
        "delivered",
        masked_mean(
            bce_with_logits(out.delivered_logits.clone(), t.delivered.clone()),
            t.delivered_mask.clone(),
        ),
    );
    let lp = log_softmax(out.next_logits.clone(), 1);
    let pick = lp
        .gather(1, t.next_stop.clone().unsqueeze_dim(1))
        .reshape([b])
        .neg();
    parts.insert("next_stop", masked_mean(pick, t.next_stop_mask.clone()));
    weighted(parts, w)
}

/// Reconstruction of hidden tokens (pretraining).
pub fn pretrain(
    model_patches: (Tensor<3>, Tensor<3>),
    out: &Output,
    b: &Batch,
    m: &TokenMasks,
    w: &BTreeMap<String, f64>,
) -> LossParts {
    let (hist_target, imu_target) = model_patches;
    let mut parts = BTreeMap::new();
    let term = |pred: &Option<Tensor<3>>,
                target: Tensor<3>,
                hide: &Option<Tensor<2>>,
                valid: Tensor<2>|
     -> Option<Tensor<1>> {
        let (pred, hide) = (pred.clone()?, hide.clone()?);
        let [bs, n, c] = target.dims();
        let se = (pred - target).powi_scalar(2).mean_dim(2).reshape([bs, n]);
        let _ = c;
        Some(masked_mean(se, hide * valid))
    };
    let [bs, nh, _] = hist_target.dims();
    let [_, ni, _] = imu_target.dims();
    let hist_valid = Tensor::<2>::ones([bs, nh], &b.hist.device());
    let imu_valid = b.imu_mask.clone().unsqueeze_dim::<2>(1).repeat_dim(1, ni);
    let mut recon = Vec::new();
    if let Some(l) = term(&out.recon_hist, hist_target, &m.hide_hist, hist_valid) {
        recon.push(l);
    }
    if let Some(l) = term(&out.recon_imu, imu_target, &m.hide_imu, imu_valid) {
        recon.push(l);
    }
    if let Some(l) = term(
        &out.recon_stops,
        b.stops.clone(),
        &m.hide_stops,
        b.stops_mask.clone(),
    ) {
        recon.push(l);
    }
    let n = recon.len().max(1) as f32;
    let sum = recon
        .into_iter()
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| Tensor::zeros([1], &b.hist.device()));
    parts.insert("recon", sum / n);
    weighted(parts, w)
}

fn weighted(parts: BTreeMap<&'static str, Tensor<1>>, w: &BTreeMap<String, f64>) -> LossParts {
    let mut total: Option<Tensor<1>> = None;
    for (k, v) in &parts {
        let wk = w.get(*k).copied().unwrap_or(1.0);
        if wk == 0.0 {
            continue;
        }
        let term = v.clone() * wk;
        total = Some(match total {
            None => term,
            Some(t) => t + term,
        });
    }
    let device = parts
        .values()
        .next()
        .map(|t| t.device())
        .unwrap_or_default();
    LossParts {
        total: total.unwrap_or_else(|| Tensor::zeros([1], &device)),
        parts,
    }
}
