//! The model's FLOPs per sample, counted from its config and the dataset's shapes: every matrix
//! multiply and convolution of the forward pass (2 FLOPs per multiply-add; element-wise work,
//! softmax and norms are not counted, as usual for MFU). A training step costs about 3x the
//! forward (the backward computes two products per forward product).
//!
//! Each term also carries the parameters of the layer it counts, so a test can check that the
//! count covers every parameter of the real model: a layer added to the model and not here
//! makes the totals disagree.

use super::QUERY;
use super::stop_context::FOURIER;
use crate::config::ModelConfig;
use crate::data::sample::Spec;
use crate::features::{CTX_GROUPS, HIST_CH, IMU_CH, STOP_CH};
use serde::Serialize;

/// One counted part of the model.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Term {
    pub name: String,
    /// Forward FLOPs per sample.
    pub flops: f64,
    pub params: usize,
}

/// Token counts per modality for a config and dataset.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Tokens {
    pub history: usize,
    pub imu: usize,
    pub image: usize,
    pub stops: usize,
    pub context: usize,
    /// Video tubelets (0 without video).
    pub video: usize,
    pub queries: usize,
    pub total: usize,
}

pub fn tokens(cfg: &ModelConfig, spec: &Spec, image_size: usize) -> Tokens {
    let cfg = &cfg.for_spec(spec);
    let g = image_size / cfg.image_patch;
    let t = Tokens {
        history: spec.history_len / cfg.history_patch,
        imu: spec.imu_len / cfg.imu_patch,
        image: g * g,
        stops: spec.max_stops,
        context: CTX_GROUPS.len(),
        video: if spec.video_frames > 0 {
            (spec.video_frames / cfg.video_tubelet) * (spec.video_size / cfg.video_patch).pow(2)
        } else {
            0
        },
        queries: cfg.modes + 2,
        total: 0,
    };
    Tokens {
        total: t.history + t.imu + t.image + t.stops + t.context + t.video + t.queries,
        ..t
    }
}

/// A dense layer `inp -> out` (with bias) applied to `n` tokens.
fn linear(name: &str, n: usize, inp: usize, out: usize) -> Term {
    Term {
        name: name.into(),
        flops: 2.0 * (n * inp * out) as f64,
        params: inp * out + out,
    }
}

fn params(name: &str, params: usize) -> Term {
    Term {
        name: name.into(),
        flops: 0.0,
        params,
    }
}

/// What a training step runs per sample, beyond the supervised forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Supervised,
    /// Self-supervised pretraining: the reconstruction decoders, and with `align` two more
    /// forward passes (the history alone, the other modalities alone) for contrastive alignment.
    Pretrain {
        align: bool,
    },
}

/// Every term of the forward pass under `work` (the reconstruction decoders' and the alignment
/// projection's parameters are always counted).
pub fn terms(cfg: &ModelConfig, spec: &Spec, image_size: usize, work: Work) -> Vec<Term> {
    let pretrain = work != Work::Supervised;
    let cfg = &cfg.for_spec(spec);
    let d = cfg.d_model;
    let ff = d * cfg.ff_mult;
    let t = tokens(cfg, spec, image_size);
    let n = t.total;
    let (hp, ip, p) = (cfg.history_patch, cfg.imu_patch, cfg.image_patch);
    let stem = 16;
    let mut v = vec![
        linear("history patches", t.history, hp * HIST_CH, d),
        params("history positions", t.history * d),
        linear("imu patches", t.imu, ip * IMU_CH, d),
        params("imu positions", t.imu * d),
        Term {
            name: "image stem conv 3x3".into(),
            flops: 2.0 * (image_size * image_size * 3 * 9 * stem) as f64,
            params: 3 * 9 * stem + stem,
        },
        Term {
            name: "image patch conv".into(),
            flops: 2.0 * (t.image * stem * p * p * d) as f64,
            params: stem * p * p * d + d,
        },
        params("image positions", t.image * d),
        linear("stop mlp 1", t.stops, STOP_CH + 4 * FOURIER, d),
        linear("stop mlp 2", t.stops, d, d),
    ];
    for (g, r) in CTX_GROUPS.iter() {
        v.push(linear(&format!("context {g}"), 1, r.len(), d));
    }
    if t.video > 0 {
        v.extend(video_terms(cfg, spec, t.video));
    }
    v.push(params("modality embeddings", (QUERY + 1) * d));
    v.push(params("mask token", d));
    v.push(params("queries", (cfg.modes + 2) * d));
    v.push(params("prior gate", cfg.modes + 1));
    if cfg.next_stop_prior {
        v.push(params("next-stop rule prior", 1));
    }
    for l in 0..cfg.layers {
        v.push(Term {
            params: 4 * (d * d + d),
            ..linear(&format!("layer {l} q,k,v,o"), 4 * n, d, d)
        });
        v.push(Term {
            name: format!("layer {l} attention"),
            // Q K^T and the weighted sum of V: 2 * n^2 * d each.
            flops: 4.0 * (n * n * d) as f64,
            params: 0,
        });
        v.push(linear(&format!("layer {l} mlp in"), n, d, ff));
        v.push(linear(&format!("layer {l} mlp out"), n, ff, d));
        v.push(params(&format!("layer {l} norms"), 2 * 2 * d));
    }
    v.push(params("final norm", 2 * d));
    let k = cfg.modes;
    let f = spec.future_len;
    v.extend([
        linear("trajectory head 1", k, d, 2 * d),
        linear("trajectory head 2", k, 2 * d, 2 * f),
        linear("most likely head 1", 1, d, 2 * d),
        linear("most likely head 2", 1, 2 * d, 2 * f),
        linear("mode head", k, d, 1),
        linear("delivered head", 1, d, 1),
        linear("stop head", t.stops, d, d),
        linear("eta head", t.stops, d, 3),
        linear("on-time head", t.stops, d, 1),
        linear("next-stop head", t.stops, d, 1),
    ]);
    if cfg.relative_offsets {
        v.push(linear("relative trajectory head", k, 2 * d, 2 * f));
        v.push(linear("relative most likely head", 1, 2 * d, 2 * f));
    }
    for mut r in [
        linear("reconstruct history", t.history, d, hp * HIST_CH),
        linear("reconstruct imu", t.imu, d, ip * IMU_CH),
        linear("reconstruct stops", t.stops, d, STOP_CH),
    ] {
        if !pretrain {
            r.flops = 0.0;
        }
        v.push(r);
    }
    let mut align = linear("alignment projection", 2, d, d);
    if work == (Work::Pretrain { align: true }) {
        // The two views run the model again with a share of the tokens padded; attention and
        // the layers still cost their full size.
        let once: f64 = v.iter().map(|t| t.flops).sum::<f64>()
            - v.iter()
                .filter(|t| t.name.starts_with("reconstruct"))
                .map(|t| t.flops)
                .sum::<f64>();
        v.push(Term {
            name: "alignment views (2 more forward passes)".into(),
            flops: 2.0 * once,
            params: 0,
        });
    } else {
        align.flops = 0.0;
    }
    v.push(align);
    v
}

/// The video encoder: the per-pixel stems, the tubelet convolution, the peaks' projection,
/// positions and the modality embedding.
fn video_terms(cfg: &ModelConfig, spec: &Spec, tokens: usize) -> Vec<Term> {
    let d = cfg.d_model;
    let (stem, peak) = (super::video::STEM, super::video::PEAK);
    let pixels = spec.video_frames * spec.video_size * spec.video_size;
    let kernel = cfg.video_tubelet * cfg.video_patch * cfg.video_patch;
    // A dense layer from RGB on every pixel of the clip.
    let per_pixel = |name: &str, out: usize| Term {
        name: name.into(),
        flops: 2.0 * (pixels * 3 * out) as f64,
        params: 3 * out + out,
    };
    vec![
        per_pixel("video stem (per pixel)", stem),
        Term {
            name: "video tubelets".into(),
            flops: 2.0 * (tokens * stem * kernel * d) as f64,
            params: stem * kernel * d + d,
        },
        per_pixel("video peak colours (per pixel)", peak),
        linear("video tubelet peaks", tokens, peak, d),
        params("video positions", tokens * d),
        params("video modality embedding", d),
    ]
}

/// Forward FLOPs per sample.
pub fn forward_flops(cfg: &ModelConfig, spec: &Spec, image_size: usize, work: Work) -> f64 {
    terms(cfg, spec, image_size, work)
        .iter()
        .map(|t| t.flops)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DfmModel;
    use burn::prelude::*;

    fn check(cfg: &ModelConfig, spec: &Spec, image_size: usize) {
        let m = DfmModel::new(cfg, spec, image_size, &Device::flex());
        let counted: usize = terms(cfg, spec, image_size, Work::Supervised)
            .iter()
            .map(|t| t.params)
            .sum();
        assert_eq!(counted, m.num_params(), "every parameter is counted");
        let t = tokens(cfg, spec, image_size);
        assert_eq!(t.total, m.token_count(spec.max_stops));
    }

    #[test]
    fn terms_cover_every_parameter() {
        let spec = Spec::default();
        check(&ModelConfig::default(), &spec, 32);
        let relative = ModelConfig {
            relative_offsets: true,
            ..Default::default()
        };
        check(&relative, &spec, 32);
        let big = ModelConfig {
            d_model: 96,
            layers: 3,
            heads: 4,
            ff_mult: 2,
            modes: 3,
            image_patch: 4,
            history_patch: 3,
            imu_patch: 30,
            ..Default::default()
        };
        check(&big, &spec, 16);
        let video = Spec {
            video_frames: 8,
            video_size: 32,
            ..Spec::default()
        };
        check(&ModelConfig::default(), &video, 32);
        let tubelets = ModelConfig {
            video_tubelet: 2,
            video_patch: 16,
            ..big
        };
        check(&tubelets, &video, 16);
        assert_eq!(tokens(&tubelets, &video, 16).video, 4 * 4);
    }

    #[test]
    fn transformer_flops_by_hand() {
        // One layer, d 64, ff 4x, n tokens: 2 n (4 d^2 + 2 * 4 d^2) + 4 n^2 d.
        let cfg = ModelConfig {
            layers: 1,
            ..Default::default()
        };
        let spec = Spec::default();
        let n = tokens(&cfg, &spec, 32).total as f64;
        let d = 64.0;
        let layer: f64 = terms(&cfg, &spec, 32, Work::Supervised)
            .iter()
            .filter(|t| t.name.starts_with("layer 0"))
            .map(|t| t.flops)
            .sum();
        assert_eq!(
            layer,
            2.0 * n * (4.0 * d * d + 8.0 * d * d) + 4.0 * n * n * d
        );
        // Pretraining adds the decoders, and alignment two more passes of everything else.
        let f = |w| forward_flops(&cfg, &spec, 32, w);
        let (sup, rec) = (f(Work::Supervised), f(Work::Pretrain { align: false }));
        assert!(rec > sup);
        let aligned = f(Work::Pretrain { align: true });
        let projection = 2.0 * (2 * cfg.d_model * cfg.d_model) as f64;
        assert!((aligned - rec - 2.0 * sup - projection).abs() < 1e-6 * aligned);
    }
}
