//! Checkpoints of a run folder, written atomically: everything goes into `NAME.tmp/`, files are
//! synced, and the folder is renamed into place; `state.json` is written last. A run killed in
//! the middle of a write (even `kill -9`) leaves at worst a `.tmp` folder, which is ignored and
//! cleaned up, and the previous checkpoint intact; a swap of `best/` interrupted between its two
//! renames is finished on resume ([`recover`]). Each checkpoint lists the SHA-256 of its weight
//! files in `checksums.json`; resume falls back to an older checkpoint when one does not match.
//! Weights that are not finite are never saved.
//!
//! Layout of `checkpoints/<run>/`:
//! - `config.toml`: the resolved config of the run
//! - `ckpt-00000500/`: `model.bpk`, `optim.bpk`, `state.json`, `config.toml` (the config it was
//!   trained with), and `ema.bpk` (the averaged weights) with `train.ema` (the last `keep_last`
//!   are kept)
//! - `best/`: `model.bpk`, `state.json` (lowest validation loss)
//! - `metrics.jsonl`, `loss.png`

use crate::model::DfmModel;
use anyhow::Context;
use burn::module::Module;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A checkpoint that loaded: its folder, its state and the model with its weights.
pub type Good = (PathBuf, TrainState, DfmModel);

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

/// Counts a module's float parameters holding NaN or an infinity.
struct NonFinite(usize);

impl burn::module::ModuleVisitor for NonFinite {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::Tensor<D>>) {
        let data = param.val().into_data().convert::<f32>();
        let ok = data
            .as_slice::<f32>()
            .map(|v| v.iter().all(|x| x.is_finite()))
            .unwrap_or(false);
        if !ok {
            self.0 += 1;
        }
    }
}

/// Parameter tensors of a model that hold NaN or an infinity.
pub fn non_finite_tensors(model: &DfmModel) -> usize {
    let mut v = NonFinite(0);
    model.visit(&mut v);
    v.0
}

/// Refuses to go on with weights that are not finite.
pub fn ensure_finite(model: &DfmModel, what: &str) -> anyhow::Result<()> {
    let n = non_finite_tensors(model);
    anyhow::ensure!(
        n == 0,
        "{what}: {n} weight tensors hold NaN or infinity (a step diverged); nothing was saved"
    );
    Ok(())
}

/// The files of a checkpoint whose SHA-256 is kept in `checksums.json`.
const CHECKED: [&str; 3] = ["model.bpk", "optim.bpk", EMA_FILE];

/// The averaged weights of a checkpoint (`train.ema`).
pub const EMA_FILE: &str = "ema.bpk";

fn save_checksums(dir: &Path) -> anyhow::Result<()> {
    let mut sums = std::collections::BTreeMap::new();
    for f in CHECKED {
        let p = dir.join(f);
        if p.is_file() {
            sums.insert(f.to_string(), crate::data::shards::sha256_file(&p)?);
        }
    }
    std::fs::write(
        dir.join("checksums.json"),
        serde_json::to_vec_pretty(&sums)?,
    )?;
    Ok(())
}

/// Checks a checkpoint's files against its `checksums.json` (older checkpoints without one
/// pass).
pub fn verify(dir: &Path) -> anyhow::Result<()> {
    let p = dir.join("checksums.json");
    if !p.is_file() {
        return Ok(());
    }
    let sums: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&crate::util::read_bounded(&p, crate::util::limits::SMALL)?)
            .with_context(|| format!("{} is not valid", p.display()))?;
    for (f, want) in sums {
        anyhow::ensure!(
            CHECKED.contains(&f.as_str()),
            "{}: lists `{f}`, not a checkpoint file",
            p.display()
        );
        let got = crate::data::shards::sha256_file(&dir.join(&f))
            .with_context(|| format!("{}: missing or unreadable", dir.join(&f).display()))?;
        anyhow::ensure!(
            got == want,
            "{}: SHA-256 differs from checksums.json (corrupted)",
            dir.join(&f).display()
        );
    }
    Ok(())
}

fn save_model(model: &DfmModel, dir: &Path) -> anyhow::Result<()> {
    save_weights(model, &dir.join("model.bpk"))
}

fn save_weights(model: &DfmModel, path: &Path) -> anyhow::Result<()> {
    model
        .clone()
        .into_record()
        .save(path)
        .map_err(|e| anyhow::anyhow!("saving {}: {e}", path.display()))
}

fn save_state(state: &TrainState, dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("state.json"), serde_json::to_vec_pretty(state)?)?;
    Ok(())
}

pub fn ckpt_name(step: usize) -> String {
    format!("ckpt-{step:08}")
}

/// What a resumable checkpoint holds: the weights (and their average, when the run keeps one),
/// the optimizer, where training stood, and the config the run was trained with (a resume
/// checks its config against it).
pub struct Saved<'a> {
    pub model: &'a DfmModel,
    pub ema: Option<&'a DfmModel>,
    pub optim: &'a crate::optim::Optim,
    pub state: &'a TrainState,
    pub config: &'a crate::config::Config,
}

/// Saves a resumable checkpoint and removes all but the last `keep` ones.
pub fn save(run: &Path, c: Saved, keep: usize) -> anyhow::Result<PathBuf> {
    ensure_finite(c.model, &format!("checkpoint at step {}", c.state.step))?;
    let dst = run.join(ckpt_name(c.state.step));
    let config = c.config.to_toml()?;
    crate::util::write_dir_atomic(&dst, |tmp| {
        save_model(c.model, tmp)?;
        if let Some(ema) = c.ema {
            save_weights(ema, &tmp.join(EMA_FILE))?;
        }
        c.optim.save(&tmp.join("optim.bpk"))?;
        std::fs::write(tmp.join("config.toml"), &config)?;
        save_checksums(tmp)?;
        save_state(c.state, tmp)
    })?;
    let all = list(run)?;
    for (_, p) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(p)?;
    }
    Ok(dst)
}

/// Saves the best model so far.
pub fn save_best(run: &Path, model: &DfmModel, state: &TrainState) -> anyhow::Result<()> {
    save_best_with(run, model, state, |_| {})
}

/// [`save_best`] calling `at` at each step of the folder swap (crash tests).
pub fn save_best_with(
    run: &Path,
    model: &DfmModel,
    state: &TrainState,
    at: impl FnMut(crate::util::SwapStep),
) -> anyhow::Result<()> {
    ensure_finite(model, &format!("best model at step {}", state.step))?;
    crate::util::write_dir_atomic_with(
        &run.join("best"),
        |tmp| {
            save_model(model, tmp)?;
            save_checksums(tmp)?;
            save_state(state, tmp)
        },
        at,
    )
}

/// Puts a run folder back in order after a crash: finishes folder swaps interrupted between
/// their renames (`best.old` + `best.tmp`), then removes what interrupted writes left
/// (`*.tmp`, `*.old`). Only the process that owns the run (it holds the run's lock) may call
/// this. Returns a line per swap it finished.
pub fn recover(run: &Path) -> anyhow::Result<Vec<String>> {
    let mut did = Vec::new();
    let mut stems = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(run)? {
        let p = e?.path();
        if p.is_dir()
            && p.extension().is_some_and(|x| x == "tmp" || x == "old")
            && let Some(stem) = p.file_stem()
        {
            stems.insert(run.join(stem));
        }
    }
    for dst in stems {
        if let Some(line) = crate::util::recover_dir(&dst)? {
            did.push(line);
        }
        // A `.tmp` with no swap in progress is an unfinished fill.
        let tmp = dst.with_file_name(format!(
            "{}.tmp",
            dst.file_name().and_then(|n| n.to_str()).unwrap_or("")
        ));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .with_context(|| format!("cannot remove {}", tmp.display()))?;
        }
    }
    Ok(did)
}

/// The newest checkpoint that passes its checksums and loads into `model`, with its state;
/// each one skipped is reported as a warning line. None when the run has no usable checkpoint.
pub fn load_latest_good(
    run: &Path,
    model: &DfmModel,
) -> anyhow::Result<(Option<Good>, Vec<String>)> {
    let mut warnings = Vec::new();
    for (_, dir) in list(run)?.into_iter().rev() {
        let attempt = verify(&dir)
            .and_then(|_| read_state(&dir))
            .and_then(|st| Ok((st, load_model(model.clone(), &dir)?)));
        match attempt {
            Ok((st, m)) => return Ok((Some((dir, st, m)), warnings)),
            Err(e) => warnings.push(format!(
                "checkpoint {} is unusable ({e:#}); falling back to the one before",
                dir.display()
            )),
        }
    }
    Ok((None, warnings))
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
    let bytes = crate::util::read_bounded(&p, crate::util::limits::SMALL)?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid training state", p.display()))
}

/// Loads model weights from a checkpoint folder (`model.bpk`) into `model`.
pub fn load_model(model: DfmModel, dir: &Path) -> anyhow::Result<DfmModel> {
    load_weights(model, &dir.join("model.bpk"))
}

/// Loads the weights of one record file into `model`.
pub fn load_weights(model: DfmModel, p: &Path) -> anyhow::Result<DfmModel> {
    let read =
        || burn::store::ModuleRecord::load(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    load_record(model, read, &p.display().to_string())
}

/// Loads model weights from the bytes of a `model.bpk` (`name` names it in errors).
pub fn load_model_bytes(model: DfmModel, bytes: Vec<u8>, name: &str) -> anyhow::Result<DfmModel> {
    let bytes = burn::tensor::Bytes::from_bytes_vec(bytes);
    let read = || {
        burn::store::ModuleRecord::from_bytes(bytes.clone())
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    load_record(model, read, name)
}

/// Parameters added after models were first saved, used by pretraining only: a model saved
/// before them loads with them freshly initialized (every other missing tensor is an error).
const ADDED_LATER: [&str; 1] = ["recon.align."];

fn load_record(
    model: DfmModel,
    read: impl Fn() -> anyhow::Result<burn::store::ModuleRecord>,
    name: &str,
) -> anyhow::Result<DfmModel> {
    let err = match model.clone().try_load_record(read()?) {
        Ok(m) => return Ok(m),
        Err(e) => e.to_string(),
    };
    let only_added_later = err
        .split_once("Missing tensors: [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .is_some_and(|(list, _)| {
            list.split(',')
                .map(|t| t.trim().trim_matches('"'))
                .all(|t| ADDED_LATER.iter().any(|a| t.starts_with(a)))
        });
    if only_added_later {
        return model
            .try_load_record(read()?.allow_partial(true))
            .map_err(|e| anyhow::anyhow!("{name}: does not fit this model: {e}"));
    }
    Err(anyhow::anyhow!("{name}: does not fit this model: {err}"))
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
