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
    /// [B, N] arrival time at each stop, `Featurizer::eta_encode`d.
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
    /// [B, 2 G + 1] and [B]: the fleet's past trips near each sample (`features::retrieval`;
    /// None when the model reads none).
    pub retr: Option<Tensor<2>>,
    pub retr_mask: Tensor<1>,
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

/// The stop slots a batch of `items` needs: the most stops any of them lists (listed stops come
/// first, padding after), at least one; rounded up to a power of two, at most the capacity,
/// unless `exact` (on a GPU every new shape compiles its kernels).
pub fn stop_slots(items: &[Features], exact: bool) -> usize {
    let cap = items.first().map_or(1, |f| f.stops_mask.len()).max(1);
    let listed = items
        .iter()
        .map(|f| {
            f.stops_mask
                .iter()
                .rposition(|&m| m > 0.0)
                .map_or(0, |i| i + 1)
        })
        .max()
        .unwrap_or(0)
        .max(1);
    if exact {
        listed
    } else {
        listed.next_power_of_two().min(cap)
    }
}

/// Drops a sample's stop slots past `n` (padding only when `n` is at least its listed stops:
/// the model never attends to padding, so its outputs for the listed stops are the same).
pub fn keep_stop_slots(f: &mut Features, n: usize) {
    f.stops.truncate(n * STOP_CH);
    for v in [
        &mut f.stops_mask,
        &mut f.eta,
        &mut f.eta_mask,
        &mut f.on_time,
        &mut f.on_time_mask,
    ] {
        v.truncate(n);
    }
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
        let nr = f0.retr.len();
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
            retr: (nr > 0).then(|| stack(&items, [b, nr], |f| &f.retr, device)),
            retr_mask: scalar(&|f| f.retr_mask),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::manifest::ChannelStats;
    use crate::data::sample::{Fix, Sample, Spec, Stop};
    use crate::features::Featurizer;

    fn with_stops(n: usize) -> Features {
        let spec = Spec {
            max_stops: 12,
            ..Spec::default()
        };
        let s = Sample {
            stops: (0..n)
                .map(|i| Stop::at(format!("s{i}"), 40.0 + 0.001 * i as f64, 0.0))
                .collect(),
            ..Sample::bare("k", 0.0, vec![Fix::at(0.0, 40.0, 0.0)])
        };
        Featurizer::new(&spec, &ChannelStats::default(), 8).features(&s)
    }

    /// A batch needs as many stop slots as its most listed stops (a power of two at most the
    /// capacity, unless exact); trimming keeps the listed stops' rows whole.
    #[test]
    fn stop_slots_cover_the_listed_stops() {
        let items = vec![with_stops(2), with_stops(5), with_stops(0)];
        assert_eq!(stop_slots(&items, true), 5);
        assert_eq!(stop_slots(&items, false), 8);
        assert_eq!(
            stop_slots(&[with_stops(11)], false),
            12,
            "at most the capacity"
        );
        assert_eq!(stop_slots(&[with_stops(0)], true), 1, "at least one slot");
        let full = with_stops(5);
        let mut f = full.clone();
        keep_stop_slots(&mut f, 5);
        assert_eq!(f.stops[..], full.stops[..5 * STOP_CH]);
        assert_eq!(f.stops_mask, vec![1.0; 5]);
        assert_eq!(f.eta.len(), 5);
        let b = FeatureBatcher.batch(vec![f], &Device::flex());
        assert_eq!(b.stops.dims(), [1, 5, STOP_CH]);
    }
}
