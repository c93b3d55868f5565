//! The optimizer a run trains with (`train.optimizer`): burn's AdamW, which updates one
//! parameter tensor at a time, or the same AdamW over all parameters at once
//! ([`FusedAdamW`]). Both save the same record (`optim.bpk`), so a run may switch at a resume.

mod fused_adamw;
mod fused_state;
mod layout;

pub use fused_adamw::{FusedAdamW, Hyper};

use crate::config::{Config, OptimizerKind};
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradAdaptor, ModuleOptimizer};
use burn::prelude::*;
use std::path::Path;

pub enum Optim {
    /// burn's `ModuleOptimizer` with AdamW (one tensor at a time).
    PerTensor(ModuleOptimizer),
    Fused(Box<FusedAdamW>),
}

impl Optim {
    /// The optimizer `cfg` asks for, with its weight decay and gradient clipping.
    pub fn new(cfg: &Config) -> Self {
        let t = &cfg.train;
        let clip = (t.grad_clip > 0.0).then_some(t.grad_clip as f32);
        match t.optimizer {
            OptimizerKind::Adamw => Self::PerTensor(
                AdamWConfig::new()
                    .with_weight_decay(t.weight_decay as f32)
                    .with_grad_clipping(clip.map(GradientClippingConfig::Norm))
                    .init(),
            ),
            OptimizerKind::AdamwFused => Self::Fused(Box::new(FusedAdamW::new(Hyper {
                weight_decay: t.weight_decay as f32,
                clip_norm: clip,
                ..Hyper::default()
            }))),
        }
    }

    /// One update of `module` with the gradients of one device or several.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: impl Into<GradAdaptor>) -> M {
        match (self, grads.into()) {
            (Self::PerTensor(o), GradAdaptor::Single(g)) => o.step(lr, module, g),
            (Self::PerTensor(o), GradAdaptor::Multi(g)) => o.step_multi(lr, module, g),
            (Self::Fused(o), g) => o.step(lr, module, g),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        match self {
            Self::PerTensor(o) => o
                .save(path)
                .map_err(|e| anyhow::anyhow!("saving optimizer {}: {e}", path.display())),
            Self::Fused(o) => o.save(path),
        }
    }

    /// Loads the state saved by either optimizer (the record format is the same).
    pub fn load(self, path: &Path, device: &Device) -> anyhow::Result<Self> {
        Ok(match self {
            Self::PerTensor(o) => Self::PerTensor(
                o.load(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            ),
            Self::Fused(o) => Self::Fused(Box::new(o.load(path, device)?)),
        })
    }
}
