//! The multimodal fusion transformer.
//!
//! Each modality becomes tokens (history and IMU patches, image patches, one token per stop,
//! one per context group), each token gets its modality's learned embedding, and learned query
//! tokens (one per trajectory mode, one for the single most likely trajectory, one for the
//! delivery outcome) join them. A pre-norm
//! transformer encoder fuses everything; masked tokens (missing modalities, absent stops) are
//! padding the attention never looks at. Heads read the query tokens (trajectory modes and
//! their logits, delivery outcome) and the stop tokens (ETA quantiles, on-time, next-stop
//! pointer). For pretraining, masked history/IMU patches and stops are reconstructed.

pub mod dropout;
pub mod flops;
pub mod fusion;
pub mod heads;
pub mod image;
pub mod retrieval;
pub mod sensor;
pub mod stop_context;
pub mod support;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
pub mod video;

use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::data::sample::Spec;
use crate::features::{HIST_CH, IMU_CH, STOP_CH};
use burn::module::Param;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::prelude::*;
use fusion::{FusionEncoder, FusionEncoderConfig};
use heads::{Heads, Recon};
use image::{ImageEncoder, ImageEncoderConfig};
use sensor::{PatchEncoder, PatchEncoderConfig};
use stop_context::{ContextEncoder, StopEncoder};
use video::{VideoEncoder, VideoEncoderConfig};

pub use support::{UNSET_SUPPORT, motion_scale_mps, support_factor};

/// Modalities, in token order.
pub use crate::modality::{MODALITIES, Modality};
/// The query tokens' row of the modality table (after the five modalities every model has;
/// video keeps its embedding in its encoder).
pub const QUERY: usize = 5;

#[derive(Module, Debug)]
pub struct Encoders {
    pub hist: PatchEncoder,
    pub imu: PatchEncoder,
    pub image: ImageEncoder,
    pub stops: StopEncoder,
    pub ctx: ContextEncoder,
    /// Dashcam clips (datasets with video only).
    pub video: Option<VideoEncoder>,
    /// What the fleet's past trips near here did (`model.retrieval` only).
    pub retrieval: Option<retrieval::RetrievalEncoder>,
    /// Learned embedding per modality (+ one for the queries): [6, d].
    pub modality: Param<Tensor<2>>,
    /// Stands in for a masked token in pretraining: [d].
    pub mask_token: Param<Tensor<1>>,
    pub fusion: FusionEncoder,
    pub norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct DfmModel {
    pub enc: Encoders,
    /// Query tokens: K trajectory modes, the most likely trajectory, the outcome: [K + 2, d].
    pub queries: Param<Tensor<2>>,
    pub heads: Heads,
    /// How much of the constant-velocity prior each mode starts from (learned; mode 0 starts
    /// on it, the others free, so the modes do not collapse onto one another), and the most
    /// likely trajectory (last; starts on it): [K + 1].
    pub prior_gate: Param<Tensor<1>>,
    pub recon: Recon,
    /// The scale of the rule prior on next-stop logits (`model.next_stop_prior`): [1].
    pub next_prior: Option<Param<Tensor<1>>>,
    /// `model.support_guard`: the training histories' 99th percentile of motion scale (or the
    /// initial model's, where larger), set when training starts (never trained;
    /// [`UNSET_SUPPORT`] until then): [1].
    pub support_q99: Option<Param<Tensor<1>>>,
    pub modes: usize,
    /// Trajectory knots (the training data's future grid; other times are blended from them).
    pub future_len: usize,
}

/// Per-sample keep flags (1 keep, 0 drop) for modalities, and per-token pretraining masks
/// (1 = masked, to reconstruct). Built on the host so they are reproducible per step.
#[derive(Clone, Debug)]
pub struct TokenMasks {
    /// [B, 6]: history, imu, image, stops, context, video kept (the order of `MODALITIES`).
    pub keep: Tensor<2>,
    /// [B, n_hist], [B, n_imu], [B, N] masked for reconstruction (None outside pretraining).
    pub hide_hist: Option<Tensor<2>>,
    pub hide_imu: Option<Tensor<2>>,
    pub hide_stops: Option<Tensor<2>>,
    /// [B, n_hist], [B, n_imu]: the hidden tokens that are the latest patches of a sample whose
    /// whole tail is hidden (next-patch prediction); the other hidden tokens are reconstruction.
    pub next_hist: Option<Tensor<2>>,
    pub next_imu: Option<Tensor<2>>,
}

impl TokenMasks {
    /// Modalities kept per `keep` [B, 6], nothing hidden (inference, supervised training).
    pub fn keep(keep: Tensor<2>) -> Self {
        TokenMasks {
            keep,
            hide_hist: None,
            hide_imu: None,
            hide_stops: None,
            next_hist: None,
            next_imu: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Output {
    /// [B, K, F, 2] in units of `traj_scale`: the constant-velocity prior plus each mode's
    /// learned offset.
    pub traj: Tensor<4>,
    /// [B, F, 2]: the single most likely trajectory (regressed on every sample, unlike the
    /// modes, which each learn from the samples they win), same units and prior.
    pub point: Tensor<3>,
    /// [B, K]
    pub mode_logits: Tensor<2>,
    /// [B, N, 3]: P10, P50, P90 of the arrival time, in `Featurizer::eta_encode` units (monotone).
    pub eta: Tensor<3>,
    /// [B, N]
    pub on_time_logits: Tensor<2>,
    /// [B, N]; absent stops carry a large negative logit.
    pub next_logits: Tensor<2>,
    /// [B]
    pub delivered_logits: Tensor<1>,
    /// Pretraining reconstructions: history patches [B, n_hist, p*C], IMU patches, stops.
    pub recon_hist: Option<Tensor<3>>,
    pub recon_imu: Option<Tensor<3>>,
    pub recon_stops: Option<Tensor<3>>,
    /// [B, d]: the fused outcome token, the sample's summary (what contrastive alignment
    /// compares between two views of a sample).
    pub summary: Tensor<2>,
}

impl DfmModel {
    pub fn new(cfg: &ModelConfig, spec: &Spec, image_size: usize, device: &Device) -> Self {
        let cfg = &cfg.for_spec(spec);
        let d = cfg.d_model;
        let fusion = FusionEncoderConfig {
            d_model: d,
            d_ff: d * cfg.ff_mult,
            heads: cfg.heads,
            layers: cfg.layers,
            dropout: cfg.dropout,
        }
        .init(device);
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let hist = PatchEncoderConfig::new(spec.history_len, HIST_CH, cfg.history_patch, d);
        let hist = hist.init(device);
        let imu = PatchEncoderConfig::new(spec.imu_len, IMU_CH, cfg.imu_patch, d).init(device);
        let decoders = Recon::decoders(
            d,
            cfg.history_patch * HIST_CH,
            cfg.imu_patch * IMU_CH,
            STOP_CH,
            device,
        );
        let model = DfmModel {
            recon: decoders,
            enc: Encoders {
                hist,
                imu,
                image: ImageEncoderConfig::new(image_size, cfg.image_patch, d).init(device),
                stops: StopEncoder::new(d, device),
                ctx: ContextEncoder::new(d, device),
                video: None,
                retrieval: None,
                modality: init.init([QUERY + 1, d], device),
                mask_token: init.init([d], device),
                fusion,
                norm: LayerNormConfig::new(d).init(device),
            },
            queries: init.init([cfg.modes + 2, d], device),
            heads: Heads::new(d, spec.future_len, device),
            prior_gate: first_and_last_gate(cfg.modes, device),
            next_prior: None,
            support_q99: None,
            modes: cfg.modes,
            future_len: spec.future_len,
        };
        model.with_options(cfg, spec, device)
    }

    /// The parts a config or the data adds to a new model, drawn after the others.
    fn with_options(self, cfg: &ModelConfig, spec: &Spec, device: &Device) -> Self {
        let (d, mut model) = (cfg.d_model, self);
        // Drawn last, so every other weight starts as it did before alignment existed (a seeded
        // run trains the same model it always did).
        model.recon.align = burn::nn::LinearConfig::new(d, d).init(device);
        if cfg.next_stop_prior {
            model.next_prior = Some(Param::from_tensor(Tensor::from_data([1.0f32], device)));
        }
        if cfg.relative_offsets {
            model.heads = model.heads.with_relative_offsets(d, device);
        }
        if cfg.support_guard {
            model.set_support_q99(UNSET_SUPPORT, device);
        }
        if spec.video_frames > 0 {
            let video = VideoEncoderConfig {
                frames: spec.video_frames,
                size: spec.video_size,
                tubelet: cfg.video_tubelet,
                patch: cfg.video_patch,
                d_model: d,
            };
            model.enc.video = Some(video.init(device));
        }
        if cfg.retrieval {
            let input = crate::features::retrieval::input_len(spec.future_len);
            model.enc.retrieval =
                Some(retrieval::RetrievalEncoderConfig::new(input, d).init(device));
        }
        model
    }

    /// Checks that a model config fits a dataset's shapes, with the key to change.
    pub fn check_shapes(cfg: &ModelConfig, spec: &Spec, image_size: usize) -> anyhow::Result<()> {
        let cfg = &cfg.for_spec(spec);
        if !spec.history_len.is_multiple_of(cfg.history_patch) {
            anyhow::bail!(
                "key `model.history_patch`: {} does not divide the dataset's history_len {}",
                cfg.history_patch,
                spec.history_len
            );
        }
        if !spec.imu_len.is_multiple_of(cfg.imu_patch) {
            anyhow::bail!(
                "key `model.imu_patch`: {} does not divide the dataset's imu_len {}",
                cfg.imu_patch,
                spec.imu_len
            );
        }
        if spec.video_frames > 0 && !spec.video_frames.is_multiple_of(cfg.video_tubelet) {
            anyhow::bail!(
                "key `model.video_tubelet`: {} does not divide the dataset's video_frames {}",
                cfg.video_tubelet,
                spec.video_frames
            );
        }
        if spec.video_frames > 0 && !spec.video_size.is_multiple_of(cfg.video_patch) {
            anyhow::bail!(
                "key `model.video_patch`: {} does not divide the dataset's video_size {}",
                cfg.video_patch,
                spec.video_size
            );
        }
        if !image_size.is_multiple_of(cfg.image_patch) {
            anyhow::bail!(
                "key `model.image_patch`: {} does not divide data.image_size {image_size}",
                cfg.image_patch
            );
        }
        Ok(())
    }

    /// Total tokens the fusion transformer sees for a dataset spec.
    pub fn token_count(&self, max_stops: usize) -> usize {
        self.enc.hist.tokens()
            + self.enc.imu.tokens()
            + self.enc.image.tokens()
            + max_stops
            + self.enc.ctx.tokens()
            + self.enc.video.as_ref().map_or(0, |v| v.tokens())
            + self.enc.retrieval.as_ref().map_or(0, |_| 1)
            + self.modes
            + 2
    }

    fn with_modality(&self, x: Tensor<3>, m: usize) -> Tensor<3> {
        let [_, d] = self.enc.modality.dims();
        x + self.enc.modality.val().narrow(0, m, 1).reshape([1, 1, d])
    }

    /// Replaces hidden tokens by the mask token: x * (1 - h) + mask * h.
    fn hide(&self, x: Tensor<3>, hide: &Option<Tensor<2>>) -> Tensor<3> {
        match hide {
            None => x,
            Some(h) => {
                let [_, _, d] = x.dims();
                let h = h.clone().unsqueeze_dim::<3>(2);
                let m = self.enc.mask_token.val().reshape([1, 1, d]);
                x * (h.clone().neg() + 1.0) + m * h
            }
        }
    }

    /// Modes are offsets from the constant-velocity prior (which comes from the history, so it
    /// goes when the history is dropped: `hist_keep` [B]), each by its learned gate; with
    /// `model.support_guard`, at inference, the most likely trajectory keeps only the share of
    /// its correction that the training data's range of motion supports.
    fn add_prior(&self, out: &mut Output, b: &Batch, hist_keep: Tensor<1>) {
        let [bs, f, _] = b.prior.dims();
        let cv = b.prior.clone() * hist_keep.reshape([bs, 1, 1]);
        let k = self.modes;
        let gate = self.prior_gate.val();
        let mode_gate = gate.clone().narrow(0, 0, k).reshape([1, k, 1, 1]);
        let point_gate = gate.narrow(0, k, 1).reshape([1, 1, 1]);
        out.point = out.point.clone() + cv.clone() * point_gate;
        out.traj = out.traj.clone() + cv.clone().reshape([bs, 1, f, 2]) * mode_gate;
        if let Some(q) = &self.support_q99
            && !b.prior.device().is_autodiff()
        {
            let g = support_factor(motion_scale(b), q.val()).reshape([bs, 1, 1]);
            out.point = cv.clone() + (out.point.clone() - cv) * g;
        }
    }

    pub fn forward(&self, b: &Batch, masks: &TokenMasks) -> Output {
        let (tokens, valid, at) = self.tokens(b, masks);
        let pad = valid.lower_elem(0.5);
        let h = self.enc.fusion.forward(tokens, pad);
        let h = self.enc.norm.forward(h);
        self.read_out(h, &at, b, masks)
    }

    /// Every modality's tokens, then the queries, in one sequence [B, n, d], with validity
    /// [B, n] (1 = attend) and where each part sits. `n_late` counts the tokens between the
    /// context and the queries (video tubelets, the retrieval token).
    fn tokens(&self, b: &Batch, masks: &TokenMasks) -> (Tensor<3>, Tensor<2>, TokenLayout) {
        let e = &self.enc;
        let [bs, n_stops, _] = b.stops.dims();
        let device = b.hist.device();
        let keep = |m: Modality| masks.keep.clone().narrow(1, m.index(), 1); // [B, 1]
        let (hist_t, hist_valid) = self.history_tokens(b, masks, keep(Modality::History));
        let nh = e.hist.tokens();
        let imu_t = self.with_modality(
            self.hide(e.imu.forward(b.imu.clone()), &masks.hide_imu),
            Modality::Imu.index(),
        );
        let ni = e.imu.tokens();
        let imu_valid =
            (b.imu_mask.clone().unsqueeze_dim::<2>(1) * keep(Modality::Imu)).repeat_dim(1, ni);
        let img_t = self.with_modality(e.image.forward(b.image.clone()), Modality::Image.index());
        let ng = e.image.tokens();
        let img_valid =
            (b.image_mask.clone().unsqueeze_dim::<2>(1) * keep(Modality::Image)).repeat_dim(1, ng);
        let stop_t = self.with_modality(
            self.hide(e.stops.forward(b.stops.clone()), &masks.hide_stops),
            Modality::Stops.index(),
        );
        let stop_valid = b.stops_mask.clone() * keep(Modality::Stops);
        let ctx_t = self.with_modality(e.ctx.forward(b.ctx.clone()), Modality::Context.index());
        let nc = e.ctx.tokens();
        let ctx_valid = keep(Modality::Context).repeat_dim(1, nc);
        let nq = self.modes + 2;
        let q = self.queries.val().unsqueeze_dim::<3>(0).repeat_dim(0, bs);
        let q_t = self.with_modality(q, QUERY);
        let mut tokens = vec![hist_t, imu_t, img_t, stop_t, ctx_t];
        let mut valid = vec![
            hist_valid,
            imu_valid,
            img_valid,
            stop_valid.clone(),
            ctx_valid,
        ];
        let mut n_late = 0;
        if let Some((t, v)) = self.video_tokens(b, keep(Modality::Video)) {
            n_late = t.dims()[1];
            tokens.push(t);
            valid.push(v);
        }
        if let (Some(enc), Some(x)) = (&e.retrieval, &b.retr) {
            n_late += 1;
            tokens.push(enc.forward(x.clone()));
            valid.push(b.retr_mask.clone().unsqueeze_dim::<2>(1));
        }
        tokens.push(q_t);
        valid.push(Tensor::<2>::ones([bs, nq], &device));
        let at = TokenLayout {
            nh,
            ni,
            stop0: nh + ni + ng,
            n_stops,
            q0: nh + ni + ng + n_stops + nc + n_late,
            stop_valid,
        };
        (Tensor::cat(tokens, 1), Tensor::cat(valid, 1), at)
    }

    /// The history's patch tokens (hidden where pretraining hides them) and their validity
    /// [B, patches]: a patch counts when any of its rows is present and the modality is kept.
    fn history_tokens(
        &self,
        b: &Batch,
        masks: &TokenMasks,
        keep: Tensor<2>,
    ) -> (Tensor<3>, Tensor<2>) {
        let e = &self.enc;
        let bs = b.len();
        let t = self.with_modality(
            self.hide(e.hist.forward(b.hist.clone()), &masks.hide_hist),
            Modality::History.index(),
        );
        let (nh, p) = (e.hist.tokens(), e.hist.patch);
        let valid = b
            .hist_mask
            .clone()
            .reshape([bs, nh, p])
            .max_dim(2)
            .reshape([bs, nh])
            * keep;
        (t, valid)
    }

    /// The clip's tubelet tokens and their validity, for a model and batch with video.
    fn video_tokens(&self, b: &Batch, keep: Tensor<2>) -> Option<(Tensor<3>, Tensor<2>)> {
        let (Some(enc), Some(clip)) = (&self.enc.video, &b.video) else {
            return None;
        };
        let nv = enc.tokens();
        let valid = (b.video_mask.clone().unsqueeze_dim::<2>(1) * keep).repeat_dim(1, nv);
        Some((enc.forward(clip.clone()), valid))
    }

    /// The heads on the fused tokens `h`: trajectories (at the batch's times), mode and stop
    /// scores with their priors, and the reconstructions when tokens were hidden.
    fn read_out(&self, h: Tensor<3>, at: &TokenLayout, b: &Batch, masks: &TokenMasks) -> Output {
        let [bs, _, d] = h.dims();
        let keep_hist = || {
            masks
                .keep
                .clone()
                .narrow(1, Modality::History.index(), 1)
                .reshape([bs])
        };
        let stop_h = h.clone().narrow(1, at.stop0, at.n_stops);
        let mode_h = h.clone().narrow(1, at.q0, self.modes + 1);
        let out_h = h
            .clone()
            .narrow(1, at.q0 + self.modes + 1, 1)
            .reshape([bs, d]);
        let mut out = self
            .heads
            .forward(mode_h, out_h, stop_h, at.stop_valid.clone(), || {
                motion_scale(b) * keep_hist()
            });
        if let Some(scale) = &self.next_prior {
            out.next_logits = out.next_logits + rule_prior(b, &at.stop_valid, scale.val());
        }
        // The heads give the trajectories at the model's knots; a batch asking for other times
        // blends the two knots around each (`time_grid`).
        if let Some(w) = &b.future_w {
            let k = self.modes;
            out.traj = w
                .clone()
                .unsqueeze_dim::<4>(1)
                .repeat_dim(1, k)
                .matmul(out.traj);
            out.point = w.clone().matmul(out.point);
        }
        self.add_prior(&mut out, b, keep_hist());
        if masks.hide_hist.is_some() || masks.hide_imu.is_some() || masks.hide_stops.is_some() {
            let (nh, ni) = (at.nh, at.ni);
            out.recon_hist = Some(self.recon.hist.forward(h.clone().narrow(1, 0, nh)));
            out.recon_imu = Some(self.recon.imu.forward(h.clone().narrow(1, nh, ni)));
            out.recon_stops = Some(self.recon.stops.forward(h.narrow(1, at.stop0, at.n_stops)));
        }
        out
    }
}

/// Where the parts of the token sequence sit: history tokens from 0 (`nh`), then IMU (`ni`),
/// image, stops (`n_stops` from `stop0`, valid where `stop_valid`), context, video, the
/// retrieval token, and the queries from `q0`.
struct TokenLayout {
    nh: usize,
    ni: usize,
    stop0: usize,
    n_stops: usize,
    q0: usize,
    stop_valid: Tensor<2>,
}

/// A gate [K + 1] that is 1 for mode 0 and the most likely trajectory (the last) and 0 for the
/// other modes: those two start on the prior it scales, the others free, so the modes do not
/// collapse onto one another.
fn first_and_last_gate(modes: usize, device: &Device) -> Param<Tensor<1>> {
    let g: Vec<f32> = (0..=modes)
        .map(|m| if m == 0 || m == modes { 1.0 } else { 0.0 })
        .collect();
    Param::from_tensor(Tensor::from_data(
        burn::tensor::TensorData::new(g, [modes + 1]),
        device,
    ))
}

/// Each sample's motion scale [B]: the span of its history in its own motion (`features`:
/// the log of it is the last history row's `LOG_SCALE` channel), over the dataset's position
/// scale.
pub fn motion_scale(b: &Batch) -> Tensor<1> {
    let [bs, h, _] = b.hist.dims();
    b.hist
        .clone()
        .narrow(1, h - 1, 1)
        .narrow(2, crate::features::hist_ch::LOG_SCALE, 1)
        .reshape([bs])
        .exp()
}

/// The rule "same zone, then neighbouring zone, then nearest" (`zones::rule_key`) as next-stop
/// logits: `-scale * ln(1 + rank)`, where rank is the stop's place in the rule's order among the
/// listed stops (0 = the rule's pick); zero on padding. [B, N].
fn rule_prior(b: &Batch, stop_valid: &Tensor<2>, scale: Tensor<1>) -> Tensor<2> {
    let [bs, n, _] = b.stops.dims();
    let scaled = b
        .stops
        .clone()
        .narrow(2, crate::features::stop_ch::RULE_RANK, 1)
        .reshape([bs, n]);
    // The feature is the place over (listed stops - 1); the listed stops are the unmasked ones.
    let listed = b.stops_mask.clone().sum_dim(1);
    let place = scaled * (listed - 1.0).clamp_min(0.0);
    (place + 1.0).log() * scale.reshape([1, 1]).neg() * stop_valid.clone()
}
