//! The learned linear baseline: ridge regression from the agent-centric history to the future's
//! offset from constant velocity (as the references in `shared/tools/window_refs.py` do).
//!
//! It reads the model's own feature arrays (`Features`: history rows with their mask, the
//! constant-velocity prior), so it sees what the model sees and runs wherever the model runs.
//! `dfm train` fits it on the run's training split (streaming: only the normal equations are
//! kept), picks the regularization on the validation split, and saves it as `ridge.json` beside
//! the checkpoints; export copies it into the bundle, so `dfm eval` compares the model with
//! the same linear model on any dataset.

use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::Manifest;
use crate::features::{Features, Featurizer, HIST_CH};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

pub const FILE: &str = "ridge.json";
/// Regularization strengths tried, on standardized inputs (correlation-matrix scale).
pub const LAMBDAS: [f64; 7] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];
/// Used when the data has no validation split to choose with.
const DEFAULT_LAMBDA: f64 = 1e-3;

/// A fitted ridge model. Inputs and outputs are in the model's feature units; `predict_m`
/// returns meters in the sample's local frame.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Ridge {
    pub history_len: usize,
    pub future_len: usize,
    pub lambda: f64,
    pub train_samples: u64,
    /// Validation mean squared error (feature units) per tried lambda.
    pub val_mse: Vec<(f64, f64)>,
    /// [inputs + 1][future_len * 2]; the last row is the intercept.
    pub weights: Vec<Vec<f64>>,
    /// The seconds ahead it answers at, when they are not the model's own horizons (a dataset
    /// read on another time grid, as a fine-tune on a new fleet reads it); empty: the model's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub horizons_s: Vec<f64>,
}

/// The regression inputs of a sample: the history's positions (absolute, like the references)
/// and their mask, the displacement between consecutive present fixes, the receiver's speed and
/// course channels where present, and the constant-velocity prior.
pub fn inputs(f: &Features) -> Vec<f64> {
    let h = f.hist_mask.len();
    let mut x = Vec::with_capacity(h * 10 + f.prior.len());
    x.extend(f.hist_abs.iter().map(|&v| v as f64));
    x.extend(f.hist_mask.iter().map(|&v| v as f64));
    for k in 0..h {
        x.extend(
            f.hist[k * HIST_CH + 2..k * HIST_CH + 7]
                .iter()
                .map(|&v| v as f64),
        );
    }
    for k in 1..h {
        let both = f.hist_mask[k] * f.hist_mask[k - 1];
        for c in 0..2 {
            let d = f.hist_abs[k * 2 + c] - f.hist_abs[(k - 1) * 2 + c];
            x.push((d * both) as f64);
        }
    }
    x.extend(f.prior.iter().map(|&v| v as f64));
    x
}

/// The target: the future minus the constant-velocity prior (feature units).
fn target(f: &Features) -> Option<Vec<f64>> {
    (f.future_mask > 0.5).then(|| {
        f.future
            .iter()
            .zip(&f.prior)
            .map(|(y, p)| (y - p) as f64)
            .collect()
    })
}

/// Streaming normal equations over [x, 1]: X'X, X'Y and the sum of Y'Y.
#[derive(Clone, Debug, Default)]
pub struct NormalEquations {
    pub n: u64,
    d: usize,
    o: usize,
    xtx: Vec<f64>,
    xty: Vec<f64>,
    yty: f64,
}

impl NormalEquations {
    pub fn add(&mut self, x: &[f64], y: &[f64]) {
        if self.n == 0 && self.xtx.is_empty() {
            self.d = x.len() + 1;
            self.o = y.len();
            self.xtx = vec![0.0; self.d * self.d];
            self.xty = vec![0.0; self.d * self.o];
        }
        let d = self.d;
        let xi = |j: usize| if j + 1 == d { 1.0 } else { x[j] };
        for j in 0..d {
            let a = xi(j);
            if a == 0.0 {
                continue;
            }
            for k in j..d {
                self.xtx[j * d + k] += a * xi(k);
            }
            for (o, yo) in y.iter().enumerate() {
                self.xty[j * self.o + o] += a * yo;
            }
        }
        self.yty += y.iter().map(|v| v * v).sum::<f64>();
        self.n += 1;
    }

    pub fn merge(&mut self, other: NormalEquations) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other;
            return;
        }
        for (a, b) in self.xtx.iter_mut().zip(&other.xtx) {
            *a += b;
        }
        for (a, b) in self.xty.iter_mut().zip(&other.xty) {
            *a += b;
        }
        self.yty += other.yty;
        self.n += other.n;
    }

    fn xtx_at(&self, j: usize, k: usize) -> f64 {
        let (a, b) = if j <= k { (j, k) } else { (k, j) };
        self.xtx[a * self.d + b]
    }

    /// Ridge weights [d][o] (last row the intercept) for `lambda` on standardized inputs; the
    /// intercept is not penalized.
    pub fn solve(&self, lambda: f64) -> Vec<Vec<f64>> {
        let (d, o, n) = (self.d, self.o, self.n.max(1) as f64);
        let p = d - 1;
        let mu: Vec<f64> = (0..p).map(|j| self.xtx_at(j, p) / n).collect();
        let ybar: Vec<f64> = (0..o).map(|c| self.xty[p * o + c] / n).collect();
        let sd: Vec<f64> = (0..p)
            .map(|j| {
                let v = self.xtx_at(j, j) / n - mu[j] * mu[j];
                if v > 1e-12 { v.sqrt() } else { 1.0 }
            })
            .collect();
        let mut a = vec![0.0; p * p];
        for j in 0..p {
            for k in 0..p {
                let cov = self.xtx_at(j, k) / n - mu[j] * mu[k];
                a[j * p + k] = cov / (sd[j] * sd[k]) + if j == k { lambda } else { 0.0 };
            }
        }
        let chol = cholesky(&a, p);
        let mut w = vec![vec![0.0; o]; d];
        for c in 0..o {
            let b: Vec<f64> = (0..p)
                .map(|j| (self.xty[j * o + c] / n - mu[j] * ybar[c]) / sd[j])
                .collect();
            let ws = cholesky_solve(&chol, p, &b);
            let mut icpt = ybar[c];
            for j in 0..p {
                w[j][c] = ws[j] / sd[j];
                icpt -= mu[j] * w[j][c];
            }
            w[p][c] = icpt;
        }
        w
    }

    /// Mean squared error per output coordinate of weights `w` on the data summarized here.
    pub fn mse(&self, w: &[Vec<f64>]) -> f64 {
        let (d, o) = (self.d, self.o);
        let mut sse = self.yty;
        for c in 0..o {
            for (j, wj) in w.iter().enumerate().take(d) {
                sse -= 2.0 * wj[c] * self.xty[j * o + c];
                for (k, wk) in w.iter().enumerate().take(d) {
                    sse += wj[c] * self.xtx_at(j, k) * wk[c];
                }
            }
        }
        sse.max(0.0) / (self.n.max(1) as f64 * o.max(1) as f64)
    }
}

/// Lower-triangular L with L L' = A (A symmetric positive definite, p x p, row-major).
fn cholesky(a: &[f64], p: usize) -> Vec<f64> {
    let mut l = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * p + k] * l[j * p + k]).sum();
            if i == j {
                l[i * p + i] = (a[i * p + i] - s).max(1e-12).sqrt();
            } else {
                l[i * p + j] = (a[i * p + j] - s) / l[j * p + j];
            }
        }
    }
    l
}

fn cholesky_solve(l: &[f64], p: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; p];
    for i in 0..p {
        let s: f64 = (0..i).map(|k| l[i * p + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * p + i];
    }
    let mut x = vec![0.0; p];
    for i in (0..p).rev() {
        let s: f64 = (i + 1..p).map(|k| l[k * p + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * p + i];
    }
    x
}

impl Ridge {
    /// Fits on `train`, choosing lambda by the mean squared error on `val` when it has samples.
    pub fn fit(
        train: &NormalEquations,
        val: Option<&NormalEquations>,
        history_len: usize,
        future_len: usize,
    ) -> Ridge {
        let mut val_mse = Vec::new();
        let (mut lambda, mut weights) = (DEFAULT_LAMBDA, None);
        if let Some(v) = val.filter(|v| v.n > 0) {
            let mut best = f64::INFINITY;
            for l in LAMBDAS {
                let w = train.solve(l);
                let m = v.mse(&w);
                val_mse.push((l, m));
                if m < best {
                    (best, lambda, weights) = (m, l, Some(w));
                }
            }
        }
        Ridge {
            history_len,
            future_len,
            lambda,
            train_samples: train.n,
            val_mse,
            weights: weights.unwrap_or_else(|| train.solve(lambda)),
            horizons_s: Vec::new(),
        }
    }

    /// Whether it answers for a sample at `horizons` (seconds ahead): its own horizons, or the
    /// model's (no `future_w` blend) for a ridge fitted there.
    pub fn answers_at(&self, horizons: &[f64], f: &Features) -> bool {
        if self.horizons_s.is_empty() {
            return f.future_w.is_empty();
        }
        horizons.len() == self.horizons_s.len()
            && horizons
                .iter()
                .zip(&self.horizons_s)
                .all(|(a, b)| (a - b).abs() < 1e-6)
    }

    /// The predicted future [F][x, y] in meters (local frame) for a sample's features; None
    /// when the features have another layout (other history or future lengths).
    pub fn predict_m(&self, f: &Features, traj_scale: f32) -> Option<Vec<[f64; 2]>> {
        let x = inputs(f);
        let p = self.weights.len() - 1;
        if x.len() != p || f.prior.len() != self.future_len * 2 {
            return None;
        }
        let out: Vec<f64> = (0..self.future_len * 2)
            .map(|c| {
                let lin: f64 = x.iter().zip(&self.weights).map(|(xj, w)| xj * w[c]).sum();
                (lin + self.weights[p][c] + f.prior[c] as f64) * traj_scale as f64
            })
            .collect();
        Some(out.chunks(2).map(|c| [c[0], c[1]]).collect())
    }

    pub fn load(path: &Path) -> anyhow::Result<Ridge> {
        let text = crate::util::read_text_bounded(path, crate::util::limits::METADATA)
            .with_context(|| format!("{}: cannot read the ridge baseline", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a ridge baseline", path.display()))
    }

    /// The ridge saved in a run folder or bundle, if any.
    pub fn load_from(dir: &Path) -> anyhow::Result<Option<Ridge>> {
        let p = dir.join(FILE);
        if p.is_file() {
            Ok(Some(Ridge::load(&p)?))
        } else {
            Ok(None)
        }
    }
}

/// Streams a split into normal equations (features computed in the loader's workers).
fn normal_equations(
    dir: &Path,
    manifest: &Manifest,
    split: &str,
    norm: &Arc<Featurizer>,
    workers: usize,
) -> anyhow::Result<NormalEquations> {
    let mut acc = NormalEquations::default();
    if manifest.split(split).is_none_or(|s| s.samples == 0) {
        return Ok(acc);
    }
    let opts = LoaderOptions {
        batch_size: 256,
        workers,
        shuffle_buffer: 0,
        drop_last: false,
        ..Default::default()
    };
    let loader = Loader::new(dir, manifest, split, opts)?;
    let n2 = norm.clone();
    let per_sample = Arc::new(move |s: crate::Sample| {
        let f = n2.features(&s);
        target(&f).map(|y| (inputs(&f), y))
    });
    let per_batch = Arc::new(|items: Vec<Option<(Vec<f64>, Vec<f64>)>>| {
        let mut part = NormalEquations::default();
        for (x, y) in items.into_iter().flatten() {
            part.add(&x, &y);
        }
        part
    });
    for part in loader.epoch(0, 0, per_sample, per_batch) {
        acc.merge(part?);
    }
    Ok(acc)
}

/// Fits the ridge baseline of a run on its training split (lambda chosen on `val`), or None
/// when the training split has no trajectory labels. It answers at the dataset's horizons:
/// the model's own, or (a dataset read on another time grid: a fine-tune on a new fleet, a
/// mixture's primary source) the dataset's labels' times, recorded in it.
pub fn fit_on(
    dir: &Path,
    manifest: &Manifest,
    norm: &Arc<Featurizer>,
    workers: usize,
) -> anyhow::Result<Option<Ridge>> {
    let (data, model) = (&manifest.spec, &norm.spec);
    let own_grid = data.future_len == model.future_len && data.future_step_s == model.future_step_s;
    let train = normal_equations(dir, manifest, "train", norm, workers)?;
    if train.n == 0 {
        return Ok(None);
    }
    let val = normal_equations(dir, manifest, "val", norm, workers)?;
    let mut r = Ridge::fit(&train, Some(&val), model.history_len, data.future_len);
    if !own_grid {
        let step = data.future_step_s as f64;
        r.horizons_s = crate::time_grid::knots(data.future_len, step);
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = 2 x0 - x1 + 3 (and a second output 0.5 x1) is recovered with a tiny lambda, and the
    /// validation MSE of the exact weights is zero.
    #[test]
    fn recovers_a_linear_map_and_scores_it() {
        let mut n = NormalEquations::default();
        let mut s = 1u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        for _ in 0..500 {
            let x = [rnd() * 10.0, rnd(), 7.0];
            n.add(&x, &[2.0 * x[0] - x[1] + 3.0, 0.5 * x[1]]);
        }
        let w = n.solve(1e-9);
        assert!((w[0][0] - 2.0).abs() < 1e-4, "{w:?}");
        assert!((w[1][0] + 1.0).abs() < 1e-3, "{w:?}");
        assert!(
            w[2][0].abs() < 1e-6,
            "a constant input gets no weight: {w:?}"
        );
        assert!((w[3][0] - 3.0).abs() < 1e-3, "intercept: {w:?}");
        assert!((w[1][1] - 0.5).abs() < 1e-4, "{w:?}");
        assert!(n.mse(&w) < 1e-8, "{}", n.mse(&w));
        // Heavy regularization shrinks toward the mean and costs error.
        let shrunk = n.solve(100.0);
        assert!(shrunk[0][0].abs() < 0.5 && n.mse(&shrunk) > 1.0);
        let r = Ridge::fit(&n, Some(&n), 1, 1);
        assert_eq!(r.lambda, LAMBDAS[0]);
        assert_eq!(r.val_mse.len(), LAMBDAS.len());
    }
}
