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
//! - `recon`: mean squared error of reconstructed hidden history/IMU patches and stops, each
//!   channel standardized over the batch.
//! - `next`: the same for a sample's hidden latest history/IMU patches (next-patch prediction).
//! - `align`: symmetric InfoNCE between a sample's history view and its other modalities' view.

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

/// Self-supervised pretraining: reconstruction of randomly hidden tokens (`recon`), prediction of
/// a sample's hidden latest history/IMU patches (`next`), and contrastive alignment of the
/// history's view of a sample with the other modalities' view (`align`, when `views` is given).
pub fn pretrain(
    model_patches: (Tensor<3>, Tensor<3>),
    out: &Output,
    views: Option<(Tensor<2>, Tensor<2>)>,
    b: &Batch,
    m: &TokenMasks,
    w: &BTreeMap<String, f64>,
) -> LossParts {
    let (hist_target, imu_target) = model_patches;
    let device = b.hist.device();
    let [bs, nh, _] = hist_target.dims();
    let [_, ni, _] = imu_target.dims();
    // A history patch counts when it holds a fix (data of another sampling may have none early
    // on); IMU patches count when the sample has IMU.
    let hist_valid = b
        .hist_mask
        .clone()
        .reshape([bs, nh, b.hist_mask.dims()[1] / nh])
        .max_dim(2)
        .reshape([bs, nh]);
    let imu_valid = b.imu_mask.clone().unsqueeze_dim::<2>(1).repeat_dim(1, ni);
    let none = || Tensor::<2>::zeros([bs, 1], &device);
    let (next_hist, next_imu) = (
        m.next_hist.clone().unwrap_or_else(none),
        m.next_imu.clone().unwrap_or_else(none),
    );
    let mut recon = Vec::new();
    let mut next = Vec::new();
    if let (Some(pred), Some(hide)) = (&out.recon_hist, &m.hide_hist) {
        let se = patch_error(pred.clone(), standardized(hist_target, hist_valid.clone()));
        recon.push(masked_mean(
            se.clone(),
            (hide.clone() - next_hist.clone()) * hist_valid.clone(),
        ));
        next.push(masked_mean(se, next_hist * hist_valid.clone()));
    }
    if let (Some(pred), Some(hide)) = (&out.recon_imu, &m.hide_imu) {
        let se = patch_error(pred.clone(), standardized(imu_target, imu_valid.clone()));
        recon.push(masked_mean(
            se.clone(),
            (hide.clone() - next_imu.clone()) * imu_valid.clone(),
        ));
        next.push(masked_mean(se, next_imu * imu_valid));
    }
    if let (Some(pred), Some(hide)) = (&out.recon_stops, &m.hide_stops) {
        let target = standardized(b.stops.clone(), b.stops_mask.clone());
        let se = patch_error(pred.clone(), target);
        recon.push(masked_mean(se, hide.clone() * b.stops_mask.clone()));
    }
    let mut parts = BTreeMap::new();
    parts.insert("recon", mean_of(recon, &device));
    if m.next_hist.is_some() {
        parts.insert("next", mean_of(next, &device));
    }
    if let Some((za, zb)) = views {
        let has_history = hist_valid.max_dim(1).reshape([bs]);
        parts.insert("align", info_nce(za, zb, has_history));
    }
    weighted(parts, w)
}

/// A reconstruction target with each channel standardized over the batch's valid tokens
/// (`weight` [B, n]): every input channel counts alike, whatever its units (a zone-step count, a
/// log distance and a unit flag would otherwise weigh by their squares), as MAE's normalized
/// targets do. The decoders that predict it are dropped after pretraining.
fn standardized(x: Tensor<3>, weight: Tensor<2>) -> Tensor<3> {
    let w = weight.unsqueeze_dim::<3>(2); // [B, n, 1]
    let total = w.clone().sum().clamp_min(1.0).reshape([1, 1, 1]);
    let mean = (x.clone() * w.clone()).sum_dim(0).sum_dim(1) / total.clone(); // [1, 1, C]
    let centered = x - mean;
    let var = (centered.clone().powi_scalar(2) * w).sum_dim(0).sum_dim(1) / total;
    centered / (var + 1e-4).sqrt()
}

/// Mean squared error per token: [B, n, C] -> [B, n].
fn patch_error(pred: Tensor<3>, target: Tensor<3>) -> Tensor<2> {
    let [bs, n, _] = target.dims();
    (pred - target).powi_scalar(2).mean_dim(2).reshape([bs, n])
}

fn mean_of(terms: Vec<Tensor<1>>, device: &Device) -> Tensor<1> {
    let n = terms.len().max(1) as f32;
    terms
        .into_iter()
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| Tensor::zeros([1], device))
        / n
}

/// Temperature of the contrastive loss (CLIP's learned value settles near 0.01-0.1; fixed here,
/// as in SimCLR).
const ALIGN_TEMPERATURE: f32 = 0.1;

/// Symmetric InfoNCE between two views of the same samples, [B, d] each: each sample's view
/// should be nearer (in cosine) its own other view than any other sample's in the batch.
/// Samples with `valid` 0 neither anchor nor serve as negatives.
pub fn info_nce(za: Tensor<2>, zb: Tensor<2>, valid: Tensor<1>) -> Tensor<1> {
    let unit = |z: Tensor<2>| z.clone() / (z.powi_scalar(2).sum_dim(1).sqrt() + 1e-6);
    let [b, _] = za.dims();
    let device = za.device();
    let logits = unit(za).matmul(unit(zb).transpose()) / ALIGN_TEMPERATURE; // [B, B]
    let absent = valid
        .clone()
        .lower_elem(0.5)
        .unsqueeze_dim::<2>(0)
        .repeat_dim(0, b);
    let eye = Tensor::<2>::eye(b, &device);
    let side = |l: Tensor<2>| {
        let lp = log_softmax(l.mask_fill(absent.clone(), -1e4), 1);
        (lp * eye.clone()).sum_dim(1).reshape([b]).neg()
    };
    let both = (side(logits.clone()) + side(logits.transpose())) / 2.0;
    masked_mean(both, valid)
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn rows(v: &[[f32; 4]]) -> Tensor<2> {
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [v.len(), 4]), &Device::flex())
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]
    }

    fn valid(v: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
    }

    const Z: [[f32; 4]; 4] = [
        [1.0, 0.0, 0.0, 0.2],
        [0.0, 1.0, 0.1, 0.0],
        [0.0, -0.2, 1.0, 0.0],
        [0.3, 0.0, 0.0, -1.0],
    ];

    #[test]
    fn info_nce_rewards_matching_views_and_ignores_invalid_samples() {
        let all = valid(&[1.0; 4]);
        let matched = scalar(info_nce(rows(&Z), rows(&Z), all.clone()));
        let swapped = [Z[1], Z[0], Z[3], Z[2]];
        let mismatched = scalar(info_nce(rows(&Z), rows(&swapped), all));
        let chance = (4.0f32).ln();
        assert!(matched < 0.05 * chance, "{matched}");
        assert!(mismatched > chance, "{mismatched}");
        // A sample marked invalid neither anchors nor competes: the loss is that of the others.
        let mut noisy = Z;
        noisy[0] = [0.0, 1.0, 0.1, 0.0]; // the same as sample 1: would confuse it if it counted
        let masked = scalar(info_nce(
            rows(&noisy),
            rows(&Z),
            valid(&[0.0, 1.0, 1.0, 1.0]),
        ));
        let rest = scalar(info_nce(rows(&Z[1..]), rows(&Z[1..]), valid(&[1.0; 3])));
        assert!((masked - rest).abs() < 1e-5, "{masked} vs {rest}");
    }
}
