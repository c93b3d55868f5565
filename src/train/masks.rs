//! What a step hides from the model: modality dropout, `train.drop_modalities`, and the
//! pretraining masks (random tokens for reconstruction, the latest patches for next-patch
//! prediction). Host-side and seeded per step, so a resumed run draws what an uninterrupted
//! one draws.

use crate::batch::Batch;
use crate::config::{Config, Objective};
use crate::modality::Modality;
use crate::model::{DfmModel, TokenMasks};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Per-step host-side randomness: modality dropout and pretraining masks.
pub fn token_masks(
    b: &Batch,
    model: &DfmModel,
    cfg: &Config,
    rng: &mut ChaCha8Rng,
    train: bool,
    device: &Device,
) -> TokenMasks {
    let keep = kept_modalities(b.len(), model, cfg, rng, train, device);
    if cfg.train.objective != Objective::Pretrain {
        return TokenMasks::keep(keep);
    }
    // Next-patch view: a share of the samples hide the latest third of their history and IMU
    // tokens (predicting what comes next from what came before, the shape of the downstream
    // forecast); the others hide tokens at random (reconstruction).
    let forecast: Vec<bool> = (0..b.len())
        .map(|_| weight(cfg, "next") > 0.0 && rng.r#gen::<f64>() < NEXT_VIEW_SHARE)
        .collect();
    let mut hide = |n: usize, temporal: bool| hidden(&forecast, n, temporal, rng, device);
    let (hide_hist, next_hist) = hide(model.enc.hist.tokens(), true);
    let (hide_imu, next_imu) = hide(model.enc.imu.tokens(), true);
    let (hide_stops, _) = hide(b.stops.dims()[1], false);
    // Pretraining keeps every modality: hiding does the masking.
    TokenMasks {
        keep: keep.ones_like(),
        hide_hist,
        hide_imu,
        hide_stops,
        next_hist,
        next_imu,
    }
}

/// Which modalities each sample keeps, [B, modalities]: modality dropout while training,
/// `train.drop_modalities` always.
fn kept_modalities(
    bs: usize,
    model: &DfmModel,
    cfg: &Config,
    rng: &mut ChaCha8Rng,
    train: bool,
    device: &Device,
) -> Tensor<2> {
    let p = if train {
        cfg.model.modality_dropout
    } else {
        0.0
    };
    let nm = crate::model::MODALITIES.len();
    let always_off: Vec<bool> = crate::model::MODALITIES
        .iter()
        .map(|m| cfg.train.drop_modalities.iter().any(|d| d == m))
        .collect();
    // A model without video draws nothing for it, so its stream is what it was before video.
    let has = |m: usize| m != Modality::Video.index() || model.enc.video.is_some();
    let keep: Vec<f32> = (0..bs * nm)
        .map(|i| {
            if !has(i % nm) {
                return 0.0;
            }
            let dropped = rng.r#gen::<f64>() < p;
            if dropped || always_off[i % nm] {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    Tensor::from_data(TensorData::new(keep, [bs, nm]), device)
}

/// The hidden tokens of `n` per sample, and those of them to predict as the next patches:
/// a forecasting sample of a `temporal` modality hides its latest third, the others hide
/// tokens at random.
fn hidden(
    forecast: &[bool],
    n: usize,
    temporal: bool,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> (Option<Tensor<2>>, Option<Tensor<2>>) {
    let bs = forecast.len();
    let tail = n.div_ceil(3);
    let (mut hide, mut next) = (vec![0.0f32; bs * n], vec![0.0f32; bs * n]);
    for (s, &ahead) in forecast.iter().enumerate() {
        for t in 0..n {
            let i = s * n + t;
            if temporal && ahead {
                if t >= n - tail {
                    (hide[i], next[i]) = (1.0, 1.0);
                }
            } else if rng.r#gen::<f64>() < MASK_RATE {
                hide[i] = 1.0;
            }
        }
    }
    let t = |v: Vec<f32>| Some(Tensor::<2>::from_data(TensorData::new(v, [bs, n]), device));
    (t(hide), t(next))
}

/// Share of the tokens hidden at random for reconstruction (as in masked autoencoders of
/// sequences; 30% keeps enough context at ~6 tokens per modality).
const MASK_RATE: f64 = 0.3;
/// Share of pretraining samples that hide their latest patches instead (when `next` counts).
const NEXT_VIEW_SHARE: f64 = 0.5;

pub(super) fn weight(cfg: &Config, head: &str) -> f64 {
    cfg.train.loss_weights.get(head).copied().unwrap_or(1.0)
}
