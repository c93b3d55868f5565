//! Checkpoints of a run folder, written atomically: everything goes into `NAME.tmp/`, files are
//! synced, and the folder is renamed into place; `state.json` is written last. A run killed in
//! the middle of a write (even `kill -9`) leaves at worst a `.tmp` folder, which is ignored and
//! cleaned up, and the previous checkpoint intact.
//!
//! Layout of `checkpoints/<run>/`:
//! - `config.toml`: the resolved config of the run
//! - `ckpt-00000500/`: `model.bpk`, `optim.bpk`, `state.json` (the last `keep_last` are kept)
//! - `best/`: `model.bpk`, `state.json` (lowest validation loss)
//! - `metrics.jsonl`, `loss.png`

use crate::model::DfmModel;
use anyhow::Context;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the training stood when the checkpoint was taken.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// Epoch in progress, and micro-batches of it already consumed.
    pub epoch: usize,
    pub batches_in_epoch: usize,
    pub best_val: Option<f64>,
    pub best_step: Option<usize>,
    /// Steps skipped because of a non-finite loss.
    pub skipped_steps: usize,
    /// Validation loss of this model, when measured.
    pub val_loss: Option<f64>,
    pub manifest_sha256: String,
}

fn save_model(model: &DfmModel, dir: &Path) -> anyhow::Result<()> {
    model
        .clone()
        .into_record()
        .save(dir.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("saving model: {e}"))
}

fn save_state(state: &TrainState, dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("state.json"), serde_json::to_vec_pretty(state)?)?;
    Ok(())
}

pub fn ckpt_name(step: usize) -> String {
    format!("ckpt-{step:08}")
}

/// Saves a resumable checkpoint and removes all but the last `keep` ones.
pub fn save(
    run: &Path,
    model: &DfmModel,
    optim: &ModuleOptimizer,
    state: &TrainState,
    keep: usize,
) -> anyhow::Result<PathBuf> {
    let dst = run.join(ckpt_name(state.step));
    crate::util::write_dir_atomic(&dst, |tmp| {
        save_model(model, tmp)?;
        optim
            .save(tmp.join("optim.bpk"))
            .map_err(|e| anyhow::anyhow!("saving optimizer: {e}"))?;
        save_state(state, tmp)
    })?;
    let all = list(run)?;
    for (_, p) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(p)?;
    }
    Ok(dst)
}

/// Saves the best model so far.
pub fn save_best(run: &Path, model: &DfmModel, state: &TrainState) -> anyhow::Result<()> {
    crate::util::write_dir_atomic(&run.join("best"), |tmp| {
        save_model(model, tmp)?;
        save_state(state, tmp)
    })
}

/// Removes folders left by interrupted writes (`*.tmp`). Only the process that owns the run
/// (a resuming `dfm train`) may call this.
pub fn clean_partial(run: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(run)? {
        let p = e?.path();
        if p.is_dir() && p.extension().is_some_and(|x| x == "tmp" || x == "old") {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    Ok(())
}

/// Complete checkpoints (with a `state.json`), oldest first. Partial `.tmp` folders are not
/// checkpoints.
pub fn list(run: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    let mut v = Vec::new();
    if !run.exists() {
        return Ok(v);
    }
    for e in std::fs::read_dir(run)? {
        let p = e?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if let Some(step) = name
            .strip_prefix("ckpt-")
            .and_then(|s| s.parse::<usize>().ok())
            && p.join("state.json").is_file()
        {
            v.push((step, p));
        }
    }
    v.sort();
    Ok(v)
}

pub fn read_state(dir: &Path) -> anyhow::Result<TrainState> {
    let p = dir.join("state.json");
    let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid training state", p.display()))
}

/// Loads model weights from a checkpoint folder (`model.bpk`) into `model`.
pub fn load_model(model: DfmModel, dir: &Path) -> anyhow::Result<DfmModel> {
    let p = dir.join("model.bpk");
    let rec =
        burn::store::ModuleRecord::load(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    model
        .try_load_record(rec)
        .map_err(|e| anyhow::anyhow!("{}: does not fit this model: {e}", p.display()))
}

/// The folder holding a run's best model, or its last checkpoint when none is marked best.
pub fn best_or_last(run: &Path) -> anyhow::Result<PathBuf> {
    let best = run.join("best");
    if best.join("model.bpk").is_file() {
        return Ok(best);
    }
    list(run)?.pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no checkpoint found (is it a run folder made by `dfm train`?)",
            run.display()
        )
    })
}
