//! Prediction heads on the fused tokens.

use super::Output;
use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softplus};

#[derive(Module, Debug)]
pub struct Heads {
    /// Per mode token: future offsets [F * 2] through a two-layer MLP.
    pub traj1: Linear,
    pub traj2: Linear,
    /// The most likely trajectory's own decoder (shared with the modes, it pulled them toward
    /// the mean future).
    pub point1: Linear,
    pub point2: Linear,
    pub mode: Linear,
    pub delivered: Linear,
    /// Per stop token: ETA (3 raw values made monotone), on-time, next-stop pointer.
    pub stop1: Linear,
    pub eta: Linear,
    pub on_time: Linear,
    pub next: Linear,
    /// `model.relative_offsets`: a second output of the trajectory and point decoders, in units
    /// of the history's own motion (times the sample's motion scale; see `forward`).
    pub traj_rel: Option<Linear>,
    pub point_rel: Option<Linear>,
    pub future_len: usize,
}

impl Heads {
    pub fn new(d: usize, future_len: usize, device: &Device) -> Self {
        Heads {
            traj1: LinearConfig::new(d, 2 * d).init(device),
            traj2: LinearConfig::new(2 * d, future_len * 2).init(device),
            point1: LinearConfig::new(d, 2 * d).init(device),
            point2: LinearConfig::new(2 * d, future_len * 2).init(device),
            mode: LinearConfig::new(d, 1).init(device),
            delivered: LinearConfig::new(d, 1).init(device),
            stop1: LinearConfig::new(d, d).init(device),
            eta: LinearConfig::new(d, 3).init(device),
            on_time: LinearConfig::new(d, 1).init(device),
            next: LinearConfig::new(d, 1).init(device),
            traj_rel: None,
            point_rel: None,
            future_len,
        }
    }

    /// Adds the relative offset decoders, starting at zero (the model starts as it would
    /// without them, and no weight is drawn, so every other weight of a seeded run is the same).
    pub fn with_relative_offsets(mut self, d: usize, device: &Device) -> Self {
        let zero = || Linear {
            weight: Param::from_tensor(Tensor::zeros([2 * d, self.future_len * 2], device)),
            bias: Some(Param::from_tensor(Tensor::zeros(
                [self.future_len * 2],
                device,
            ))),
        };
        self.traj_rel = Some(zero());
        self.point_rel = Some(zero());
        self
    }

    /// mode_h [B, K + 1, d] (the K mode tokens, then the most-likely token, decoded by its own
    /// MLP; only the K modes get logits), out_h [B, d], stop_h [B, N, d], stop_valid [B, N];
    /// `motion` [B]: each sample's motion scale, which the relative offsets are multiplied by
    /// (computed only when the heads have them).
    pub fn forward(
        &self,
        mode_h: Tensor<3>,
        out_h: Tensor<2>,
        stop_h: Tensor<3>,
        stop_valid: Tensor<2>,
        motion: impl FnOnce() -> Tensor<1>,
    ) -> Output {
        let [b, k1, _] = mode_h.dims();
        let k = k1 - 1;
        let [_, n, _] = stop_h.dims();
        let f = self.future_len;
        // In this order: burn draws a weight when it is first used, so the order of first use
        // is what a seeded run's initial weights depend on.
        let modes_h = gelu(self.traj1.forward(mode_h.clone().narrow(1, 0, k)));
        let mut traj = self.traj2.forward(modes_h.clone()).reshape([b, k, f, 2]);
        let point_h = gelu(self.point1.forward(mode_h.clone().narrow(1, k, 1)));
        let mut point = self.point2.forward(point_h.clone()).reshape([b, f, 2]);
        if let (Some(tr), Some(pr)) = (&self.traj_rel, &self.point_rel) {
            let m = motion().reshape([b, 1, 1]);
            let rel = tr.forward(modes_h).reshape([b, k, f, 2]);
            traj = traj + rel * m.clone().unsqueeze_dim::<4>(1);
            point = point + pr.forward(point_h).reshape([b, f, 2]) * m;
        }
        let mode_logits = self.mode.forward(mode_h.narrow(1, 0, k)).reshape([b, k]);
        let summary = out_h.clone();
        let delivered_logits = self.delivered.forward(out_h).reshape([b]);
        let s = gelu(self.stop1.forward(stop_h));
        let raw = self.eta.forward(s.clone()); // [B, N, 3]
        let mid = raw.clone().narrow(2, 1, 1);
        let lo = mid.clone() - softplus(raw.clone().narrow(2, 0, 1), 1.0);
        let hi = mid.clone() + softplus(raw.narrow(2, 2, 1), 1.0);
        let eta = Tensor::cat(vec![lo, mid, hi], 2);
        let on_time_logits = self.on_time.forward(s.clone()).reshape([b, n]);
        let next = self.next.forward(s).reshape([b, n]);
        let next_logits = next.mask_fill(stop_valid.lower_elem(0.5), -1e4);
        Output {
            traj,
            point,
            mode_logits,
            eta,
            on_time_logits,
            next_logits,
            delivered_logits,
            recon_hist: None,
            recon_imu: None,
            recon_stops: None,
            summary,
        }
    }
}

/// Linear decoders from fused tokens back to raw inputs (self-supervised pretraining).
#[derive(Module, Debug)]
pub struct Recon {
    pub hist: Linear,
    pub imu: Linear,
    pub stops: Linear,
    /// Projection of a view's summary token for contrastive alignment.
    pub align: Linear,
}

impl Recon {
    /// The decoders, drawn in this order; the alignment projection is a placeholder without
    /// weights drawn (`DfmModel::new` draws it last).
    pub fn decoders(d: usize, hist: usize, imu: usize, stops: usize, device: &Device) -> Self {
        let hist = LinearConfig::new(d, hist).init(device);
        let imu = LinearConfig::new(d, imu).init(device);
        let stops = LinearConfig::new(d, stops).init(device);
        let align = Linear {
            weight: Param::from_tensor(Tensor::zeros([d, d], device)),
            bias: None,
        };
        Recon {
            hist,
            imu,
            stops,
            align,
        }
    }
}
