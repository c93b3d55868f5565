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
    /// [B, N, STOP_CH] and [B, N]
    pub stops: Tensor<3>,
    pub stops_mask: Tensor<2>,
    /// [B, CTX_CH]
    pub ctx: Tensor<2>,
    /// [B, F, 2] constant-velocity prior of the trajectory, scaled like the targets.
    pub prior: Tensor<3>,

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

impl Batcher<Features, Batch> for FeatureBatcher {
    fn batch(&self, items: Vec<Features>, device: &Device) -> Batch {
        let b = items.len();
        let f0 = &items[0];
        let h = f0.hist_mask.len();
        let t = f0.imu.len() / IMU_CH;
        let s = ((f0.image.len() / 3) as f64).sqrt() as usize;
        let n = f0.stops_mask.len();
        let fl = f0.future.len() / 2;
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
            stops: stack(&items, [b, n, STOP_CH], |f| &f.stops, device),
            stops_mask: stack(&items, [b, n], |f| &f.stops_mask, device),
            ctx: stack(&items, [b, CTX_CH], |f| &f.ctx, device),
            prior: stack(&items, [b, fl, 2], |f| &f.prior, device),
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
