//! Validation at the end of every epoch (the loss on each source's `val` split, the best
//! model) and the final evaluation of the best model on `eval.split`.

use super::masks::token_masks;
use super::run_folder::append_metrics;
use super::setup::{Setup, Source};
use super::step::{batch_loss, scalar, step_rng};
use crate::batch::FeatureBatcher;
use crate::checkpoint::{self, TrainState};
use crate::data::loader::Loader;
use crate::eval::EvalOptions;
use crate::eval::report::EvalReport;
use crate::eval::ridge::Ridge;
use crate::model::DfmModel;
use burn::data::dataloader::batcher::Batcher;

use burn::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Mean validation loss of each source with a `val` split (deterministic masks), by name.
pub fn validate_sources(
    model: &DfmModel,
    setup: &Setup,
    device: &Device,
) -> anyhow::Result<Vec<(String, f64)>> {
    // After a data-parallel step parameters may sit on several devices: gather them.
    let model = model.valid().to_device(device);
    let mut out = Vec::new();
    for s in &setup.sources {
        if !s.manifest.splits.contains_key("val") {
            continue;
        }
        let opts = setup.loader_options(setup.cfg.eval.batch_size, false);
        let loader = Loader::new(&s.dir, &s.manifest, "val", opts)?;
        if let Some(v) = validation_loss(&model, &loader, setup, device)? {
            out.push((s.name.clone(), v));
        }
    }
    Ok(out)
}

/// The validation loss of the run: the sources' losses weighted like their training batches
/// (a lone source's own). None without a `val` split.
pub(super) fn weighted_loss(setup: &Setup, by_source: &[(String, f64)]) -> Option<f64> {
    let weight = |n: &str| {
        setup
            .sources
            .iter()
            .find(|s| s.name == n)
            .map_or(0.0, |s| s.weight)
    };
    let total: f64 = by_source.iter().map(|(n, _)| weight(n)).sum();
    (total > 0.0).then(|| by_source.iter().map(|(n, v)| weight(n) * v).sum::<f64>() / total)
}

/// Mean loss over one loader's batches.
pub(super) fn validation_loss(
    model: &DfmModel,
    loader: &Loader,
    setup: &Setup,
    device: &Device,
) -> anyhow::Result<Option<f64>> {
    let cfg = &setup.cfg;
    let (mut sum, mut n) = (0.0, 0usize);
    let norm = setup.norm.clone();
    let dev = device.clone();
    for (i, b) in loader
        .epoch(
            0,
            0,
            Arc::new(move |s| norm.features(&s)),
            Arc::new(move |items| FeatureBatcher.batch(items, &dev)),
        )
        .enumerate()
    {
        let b = b?;
        let mut rng = step_rng(cfg.run.seed ^ 0x5A17, i);
        let masks = token_masks(&b, model, cfg, &mut rng, false, device);
        let l = batch_loss(model, &b, &masks, cfg);
        sum += scalar(&l.total) * b.len() as f64;
        n += b.len();
    }
    Ok((n > 0).then(|| sum / n as f64))
}

/// Validates a run and evaluates its best model: where, and where the results go.
pub struct Validator {
    pub run_dir: PathBuf,
    pub metrics_path: PathBuf,
    /// Where validation and the final evaluation run.
    pub device: Device,
    pub quiet: bool,
}

impl Validator {
    /// The end of an epoch: the validation loss of `model` (the weights the run keeps), logged
    /// to `metrics.jsonl` and returned as that line; a new best is saved as the best model.
    pub fn end_of_epoch(
        &self,
        model: &DfmModel,
        setup: &Setup,
        state: &mut TrainState,
        epoch: usize,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let by_source = validate_sources(model, setup, &self.device)?;
        let Some(v) = weighted_loss(setup, &by_source) else {
            state.val_loss = None;
            return Ok(None);
        };
        state.val_loss = Some(v);
        let mut line = json!({"step": state.step, "epoch": epoch, "val_loss": v});
        if setup.sources.len() > 1 {
            line["val_loss_by_source"] =
                json!(by_source.iter().cloned().collect::<BTreeMap<_, _>>());
        }
        append_metrics(&self.metrics_path, &line)?;
        if !self.quiet {
            println!("step {} epoch {epoch}: validation loss {v:.4}", state.step);
            if setup.sources.len() > 1 {
                for (name, l) in &by_source {
                    println!("  {name}: {l:.4}");
                }
            }
        }
        if !v.is_finite() {
            eprintln!(
                "warning: validation loss is {v} at step {}: not a best model",
                state.step
            );
        } else if state.best_val.is_none_or(|b| v < b) {
            state.best_val = Some(v);
            state.best_step = Some(state.step);
            checkpoint::save_best(&self.run_dir, model, state)?;
        }
        Ok(Some(line))
    }

    /// The best model's evaluation on a source's `eval.split`, written as
    /// `eval_<split>.json` for the primary and `eval_<split>_<source>.json` for the others.
    pub fn final_report(
        &self,
        setup: &Setup,
        ridge: Option<&Ridge>,
        src: &Source,
        primary: bool,
    ) -> anyhow::Result<EvalReport> {
        let (cfg, device) = (&setup.cfg, &self.device);
        let best_dir = checkpoint::best_or_last(&self.run_dir)?;
        let best = checkpoint::load_model(setup.new_model(device), &best_dir)?;
        let mut stats = crate::eval::train_stats(&src.dir, &src.manifest, cfg.data.workers)?;
        // The ridge was fitted on the primary's training split, on the model's knots.
        stats.ridge = ridge.cloned().filter(|_| primary).map(Arc::new);
        let o = EvalOptions {
            split: cfg.eval.split.clone(),
            batch_size: cfg.eval.batch_size,
            miss_threshold_m: cfg.eval.miss_threshold_m,
            workers: cfg.data.workers,
            drop: vec![],
            plots: None,
        };
        let info = crate::eval::report::ModelInfo {
            source: format!(
                "run {} ({})",
                self.run_dir.display(),
                best_dir.file_name().and_then(|n| n.to_str()).unwrap_or("")
            ),
            step: checkpoint::read_state(&best_dir).ok().map(|s| s.step),
            dropped: vec![],
            support_guard_mps: best.support_guard_mps(&setup.norm),
        };
        let inputs = crate::eval::EvalInputs {
            model: &best,
            norm: &setup.norm,
            data: &src.dir,
            manifest: &src.manifest,
            stats: &stats,
            device,
        };
        let (r, _) = crate::eval::evaluate(&inputs, info, &o)?;
        let name = if primary {
            format!("eval_{}.json", o.split)
        } else {
            format!("eval_{}_{}.json", o.split, src.name)
        };
        crate::util::write_json(&self.run_dir.join(name), &r)?;
        if !primary && !self.quiet {
            println!("{}", crate::eval::report::one_line(&src.name, &r));
        }
        Ok(r)
    }
}
