//! A batch of samples as burn tensors, with masks for missing modalities and absent labels.
//! Built from [`Features`] by [`FeatureBatcher`] (burn's `Batcher`), on the loader's prefetch
//! thread during training and in the request path when serving.

use crate::features::{CTX_CH, Features, HIST_CH, IMU_CH, STOP_CH, SampleMeta};
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::TensorData;

/// Labels of a batch; each `*_mask` is 1 where the label exists.
#[derive(Clone, Debug)]
pub struct Targets {
    /// [B, F, 2] future positions in the local frame, divided by `traj_scale`.
    pub future: Tensor<3>,
    /// [B]
    pub future_mask: Tensor<1>,
    /// [B, N] arrival time at each stop, `Normalizer::eta_encode`d.
    pub eta: Tensor<2>,
    pub eta_mask: Tensor<2>,
    /// [B, N]
    pub on_time: Tensor<2>,
    pub on_time_mask: Tensor<2>,
    /// [B]
    pub delivered: Tensor<1>,
    pub delivered_mask: Tensor<1>,
    /// [B] index of the next stop (0 where unknown; see the mask).
    pub next_stop: Tensor<1, Int>,
    pub next_stop_mask: Tensor<1>,
}

#[derive(Clone, Debug)]
pub struct Batch {
    /// [B, H, HIST_CH] and [B, H]
    pub hist: Tensor<3>,
    pub hist_mask: Tensor<2>,
    /// [B, T, 4] and [B]
    pub imu: Tensor<3>,
    pub imu_mask: Tensor<1>,
    /// [B, 3, S, S] and [B]
    pub image: Tensor<4>,
    pub image_mask: Tensor<1>,
    /// [B, T, S, S, 3] and [B]: dashcam clips (None when the dataset has none).
    pub video: Option<Tensor<5>>,
    pub video_mask: Tensor<1>,
    /// [B, N, STOP_CH] and [B, N]
    pub stops: Tensor<3>,
    pub stops_mask: Tensor<2>,
    /// [B, CTX_CH]
    pub ctx: Tensor<2>,
    /// [B, F, 2] constant-velocity prior of the trajectory at the samples' horizons, scaled
    /// like the targets.
    pub prior: Tensor<3>,
    /// [B, F, G]: the model's G knots -> the F horizons (`time_grid`); None when every sample's
    /// horizons are the knots.
    pub future_w: Option<Tensor<3>>,

    pub targets: Targets,
    pub meta: Vec<SampleMeta>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.meta.len()
    }
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct FeatureBatcher;

fn stack<const D: usize>(
    items: &[Features],
    shape: [usize; D],
    get: impl Fn(&Features) -> &[f32],
    device: &Device,
) -> Tensor<D> {
    let per: usize = shape[1..].iter().product();
    let mut v = Vec::with_capacity(shape[0] * per);
    for it in items {
        let s = get(it);
        debug_assert_eq!(s.len(), per);
        v.extend_from_slice(s);
    }
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Repeats a sample's last horizon (prior, labels, knot weights) up to `fl` points.
fn pad_horizons(mut f: Features, fl: usize) -> Features {
    let have = f.prior.len() / 2;
    if have == fl || have == 0 {
        return f;
    }
    let g = f.future_w.len() / have;
    for _ in have..fl {
        f.prior.extend_from_within((have - 1) * 2..have * 2);
        f.future.extend_from_within((have - 1) * 2..have * 2);
        if g > 0 {
            f.future_w.extend_from_within((have - 1) * g..have * g);
        }
    }
    f
}

/// The batch's knot weights [B, F, G], None when every sample is on the knots (the identity
/// for those among others).
fn stack_knot_weights(items: &[Features], fl: usize, device: &Device) -> Option<Tensor<3>> {
    let g = items
        .iter()
        .find(|f| !f.future_w.is_empty())?
        .future_w
        .len()
        / fl;
    let mut w = Vec::with_capacity(items.len() * fl * g);
    for f in items {
        if f.future_w.is_empty() {
            // On the knots: the identity (padded rows repeat the last knot).
            w.extend((0..fl).flat_map(|r| (0..g).map(move |c| (c == r.min(g - 1)) as u8 as f32)));
        } else {
            w.extend_from_slice(&f.future_w);
        }
    }
    Some(Tensor::from_data(
        TensorData::new(w, [items.len(), fl, g]),
        device,
    ))
}

impl Batcher<Features, Batch> for FeatureBatcher {
    fn batch(&self, items: Vec<Features>, device: &Device) -> Batch {
        let b = items.len();
        let f0 = &items[0];
        let h = f0.hist_mask.len();
        let t = f0.imu.len() / IMU_CH;
        let s = ((f0.image.len() / 3) as f64).sqrt() as usize;
        let n = f0.stops_mask.len();
        let (vt, vs) = f0.video_shape;
        // Samples asking for fewer horizons than others repeat their last (callers read each
        // sample's own `meta.horizons_s`).
        let fl = items.iter().map(|f| f.prior.len() / 2).max().unwrap_or(0);
        let items: Vec<Features> = items.into_iter().map(|f| pad_horizons(f, fl)).collect();
        let scalar = |get: &dyn Fn(&Features) -> f32| {
            Tensor::<1>::from_data(
                TensorData::new(items.iter().map(get).collect::<Vec<f32>>(), [b]),
                device,
            )
        };
        let next: Vec<i64> = items.iter().map(|f| f.next_stop.max(0)).collect();
        Batch {
            hist: stack(&items, [b, h, HIST_CH], |f| &f.hist, device),
            hist_mask: stack(&items, [b, h], |f| &f.hist_mask, device),
            imu: stack(&items, [b, t, IMU_CH], |f| &f.imu, device),
            imu_mask: scalar(&|f| f.imu_mask),
            image: stack(&items, [b, 3, s, s], |f| &f.image, device),
            image_mask: scalar(&|f| f.image_mask),
            video: (vt > 0).then(|| stack(&items, [b, vt, vs, vs, 3], |f| &f.video, device)),
            video_mask: scalar(&|f| f.video_mask),
            stops: stack(&items, [b, n, STOP_CH], |f| &f.stops, device),
            stops_mask: stack(&items, [b, n], |f| &f.stops_mask, device),
            ctx: stack(&items, [b, CTX_CH], |f| &f.ctx, device),
            prior: stack(&items, [b, fl, 2], |f| &f.prior, device),
            future_w: stack_knot_weights(&items, fl, device),
            targets: Targets {
                future: stack(&items, [b, fl, 2], |f| &f.future, device),
                future_mask: scalar(&|f| f.future_mask),
                eta: stack(&items, [b, n], |f| &f.eta, device),
                eta_mask: stack(&items, [b, n], |f| &f.eta_mask, device),
                on_time: stack(&items, [b, n], |f| &f.on_time, device),
                on_time_mask: stack(&items, [b, n], |f| &f.on_time_mask, device),
                delivered: scalar(&|f| f.delivered),
                delivered_mask: scalar(&|f| f.delivered_mask),
                next_stop: Tensor::from_data(TensorData::new(next, [b]), device),
                next_stop_mask: scalar(&|f| (f.next_stop >= 0) as u8 as f32),
            },
            meta: items.into_iter().map(|f| f.meta).collect(),
        }
    }
}
