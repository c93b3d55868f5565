//! What a run starts from: a new model (or another run's weights, `train.init_from`), frozen
//! encoders, the support guard, and the optimizer.

use super::setup::Setup;
use crate::checkpoint;
use crate::config::{Config, Objective};
use crate::model::DfmModel;
use crate::optim::Optim;
use anyhow::Context;
use burn::prelude::*;
use std::path::Path;

/// The optimizer `train.optimizer` names.
pub fn optimizer(cfg: &Config) -> Optim {
    Optim::new(cfg)
}

/// Starts `model` from another run's best (or last) weights: the whole model when that run
/// was supervised (a foundation model fine-tuned on a new source keeps its trajectory and
/// outcome heads), its encoders only after self-supervised pretraining (whose heads never
/// trained). Returns the model and what was taken.
pub fn init_from(
    model: DfmModel,
    run: &Path,
    setup: &Setup,
    device: &Device,
) -> anyhow::Result<(DfmModel, &'static str)> {
    let pcfg = Config::load(Some(&run.join("config.toml")), &[])
        .with_context(|| format!("init_from {}: cannot read its config", run.display()))?;
    let pm = DfmModel::new(&pcfg.model, &setup.spec, pcfg.data.image_size, device);
    let dir = checkpoint::best_or_last(run)?;
    let pm = checkpoint::load_model(pm, &dir).with_context(|| {
        format!("init_from {}: its model does not fit this config (model.* keys must match the pretrained run's)", run.display())
    })?;
    if pcfg.train.objective == Objective::Supervised {
        return Ok((pm, "the whole model"));
    }
    let mut model = model;
    model.enc = pm.enc;
    Ok((model, "the encoders"))
}

/// A new model, with a pretrained run's encoders (`train.init_from`, new runs only) and frozen
/// encoders when asked.
pub(super) fn initial_model(
    setup: &Setup,
    device: &Device,
    run_dir: &Path,
    resume: bool,
) -> anyhow::Result<DfmModel> {
    let cfg = &setup.cfg;
    let mut model = setup.new_model(device);
    if !cfg.train.init_from.is_empty() && !resume {
        let (m, what) = init_from(model, Path::new(&cfg.train.init_from), setup, device)?;
        model = m;
        println!("initialized {what} from {}", cfg.train.init_from);
    }
    if cfg.train.freeze_encoders {
        model.enc = model.enc.no_grad();
    }
    if cfg.model.support_guard {
        // A new run keeps the speeds its initial model trained on (`train.init_from`).
        let inherited = (!resume && !cfg.train.init_from.is_empty())
            .then(|| model.support_q99_set())
            .flatten();
        set_support(&mut model, setup, run_dir, device, resume, inherited)?;
    } else {
        // An initial model's guard goes with it only where this run's config asks for one.
        model.support_q99 = None;
    }
    Ok(model)
}

/// The training data's range of motion for `model.support_guard` (or the initial model's, where
/// larger): measured when the run starts, read back from `support.json` when it resumes.
pub(super) fn set_support(
    model: &mut DfmModel,
    setup: &Setup,
    run_dir: &Path,
    device: &Device,
    resume: bool,
    inherited: Option<f32>,
) -> anyhow::Result<()> {
    let Some((q, measured)) = super::support::ensure(setup, run_dir, resume, inherited)? else {
        eprintln!("warning: model.support_guard: no training history moves; the guard is off");
        return Ok(());
    };
    model.set_support_q99(q, device);
    let mps = |q: f32| crate::model::motion_scale_mps(q, &setup.norm);
    match measured {
        Some(m) if m < q => println!(
            "support guard: 99% of the training histories move at most {:.1} m/s; the initial model's reach {:.1} m/s, which the run keeps: the most likely trajectory is constant velocity from {:.1} m/s",
            mps(m),
            mps(q),
            2.0 * mps(q)
        ),
        Some(_) => println!(
            "support guard: 99% of the training histories move at most {:.1} m/s; the most likely trajectory is constant velocity from {:.1} m/s",
            mps(q),
            2.0 * mps(q)
        ),
        None => {}
    }
    Ok(())
}
