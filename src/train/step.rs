//! One micro-batch on one device: the loss under the run's objective, then forward and
//! backward with dropout and masks seeded by (run seed, micro-batch, device).

use super::losses;
use super::masks::{token_masks, weight};
use super::setup::DEVICE_SEED;
use crate::batch::Batch;
use crate::config::{Config, Objective};
use crate::modality::Modality;
use crate::model::{DfmModel, TokenMasks};
use crate::seed::hash;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Contrastive views of a batch: the fused summary of its history alone and of everything
/// else (IMU, map, stops, context) alone, each projected for alignment: ([B, d], [B, d]).
pub(super) fn alignment_views(model: &DfmModel, b: &Batch) -> (Tensor<2>, Tensor<2>) {
    let device = b.hist.device();
    let only = |history: bool| {
        let row: Vec<f32> = crate::model::MODALITIES
            .iter()
            .enumerate()
            .map(|(i, _)| ((i == Modality::History.index()) == history) as u8 as f32)
            .collect();
        let nm = row.len();
        let keep = Tensor::<1>::from_data(TensorData::new(row, [nm]), &device)
            .unsqueeze_dim::<2>(0)
            .repeat_dim(0, b.len());
        let out = model.forward(b, &TokenMasks::keep(keep));
        model.recon.align.forward(out.summary)
    };
    (only(true), only(false))
}

/// The loss of a batch under the run's objective.
pub fn batch_loss(
    model: &DfmModel,
    b: &Batch,
    masks: &TokenMasks,
    cfg: &Config,
) -> losses::LossParts {
    let out = model.forward(b, masks);
    match cfg.train.objective {
        Objective::Supervised => losses::supervised(&out, &b.targets, &cfg.train.loss_weights),
        Objective::Pretrain => {
            let targets = (
                model.enc.hist.patches(b.hist.clone()),
                model.enc.imu.patches(b.imu.clone()),
            );
            let views = (weight(cfg, "align") > 0.0).then(|| alignment_views(model, b));
            losses::pretrain(targets, &out, views, b, masks, &cfg.train.loss_weights)
        }
    }
}

/// A loader batch: tensors ready on the (single) training device, or host features for the
/// device threads of a data-parallel run.
pub enum StepInput {
    Ready(Box<Batch>),
    Host(Vec<crate::features::Features>),
}

/// What one device computed on one batch.
pub(super) struct Micro {
    pub(super) loss: f64,
    pub(super) parts: BTreeMap<&'static str, f64>,
    pub(super) grads: Option<GradientsParams>,
    pub(super) samples: usize,
}

/// The most devices one step can use: each (micro-batch, device) pair gets its own mask stream
/// `micro * MAX_DEVICES + device`, so streams never collide (and a one-device run keeps the
/// streams it always had).
const MAX_DEVICES: usize = 64;

/// Forward and backward of one batch. Dropout and masks are seeded by (run seed, micro-batch,
/// device), so a resumed run draws exactly what an uninterrupted one draws.
pub(super) fn micro_step(
    model: &DfmModel,
    b: &Batch,
    cfg: &Config,
    micro: usize,
    dev_idx: usize,
    device: &Device,
    scale: f32,
) -> Micro {
    let dropout_seed = hash(cfg.run.seed, "dropout", &[micro as u64, dev_idx as u64]);
    let held = DEVICE_SEED.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(dropout_seed);
    // burn draws a parameter's initial value at its first use, from this generator: until the
    // model holds its values, the generator stays held through the step, so that another run in
    // the process cannot seed it in between.
    let _held = (!initialized(model)).then_some(held);
    crate::model::dropout::reseed(dropout_seed);
    let mut rng = step_rng(cfg.run.seed, micro * MAX_DEVICES + dev_idx);
    let masks = token_masks(b, model, cfg, &mut rng, true, device);
    let l = batch_loss(model, b, &masks, cfg);
    let loss = scalar(&l.total);
    let parts = l.parts.iter().map(|(k, v)| (*k, scalar(v))).collect();
    let grads = loss
        .is_finite()
        .then(|| GradientsParams::from_grads((l.total * scale).backward(), model));
    Micro {
        loss,
        parts,
        grads,
        samples: b.len(),
    }
}

pub(super) fn step_rng(seed: u64, micro: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(hash(seed, "step", &[micro as u64]))
}

pub(super) fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f32>() as f64
}

/// The micro-batches of the optimizer step being gathered.
pub(super) struct StepAcc {
    pub(super) micro: usize,
    pub(super) losses: Vec<(f64, BTreeMap<&'static str, f64>)>,
    pub(super) finite: bool,
    /// Host batches waiting for every device to have one (data parallelism).
    pub(super) pending: Vec<Vec<crate::features::Features>>,
}

impl StepAcc {
    pub(super) fn new() -> Self {
        StepAcc {
            micro: 0,
            losses: Vec::new(),
            finite: true,
            pending: Vec::new(),
        }
    }
}

/// Whether every parameter of `model` holds its value (burn initializes them on first use).
pub(super) fn initialized(model: &DfmModel) -> bool {
    struct All(bool);
    impl burn::module::ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0 &= p.is_initialized();
        }
    }
    let mut all = All(true);
    model.visit(&mut all);
    all.0
}
