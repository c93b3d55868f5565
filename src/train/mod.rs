//! Config-driven training runs (`dfm train`).
//!
//! A hand-written loop rather than burn-train's `SupervisedTraining`: the run must checkpoint by
//! step (not by epoch), resume exactly in the middle of an epoch after a `kill -9` with the same
//! data order and the same dropout draws, use a step-based warmup + cosine schedule, and stop or
//! skip on a non-finite loss naming the step. The learner checkpoints per epoch and restarts
//! epochs, so it fits none of these; the loop is short and uses burn's pieces (modules, AdamW,
//! gradient clipping, gradient accumulation, burnpack records).
//!
//! One file per job: [`setup`] (the run's data), [`trainer`] (the loop), [`step`] (one
//! micro-batch), [`masks`] (what a step hides), [`parallel`] (several devices), [`validate`]
//! (validation and the final evaluation), [`run_folder`] (lock, config, metrics files),
//! [`init`] (the initial model and the optimizer), [`baseline`] (the ridge baseline),
//! [`tracking`] (MLflow), [`ema`], [`losses`], [`schedule`], [`support`].

mod baseline;
pub mod ema;
pub mod init;
mod log_window;
pub mod losses;
pub mod masks;
pub mod parallel;
pub mod retrieval_index;
pub mod run_folder;
pub mod run_place;
pub mod schedule;
pub mod setup;
pub mod step;
pub mod support;
mod tracking;
pub mod trainer;
pub mod validate;

pub use init::{init_from, optimizer};
pub use masks::token_masks;
pub use parallel::with_precision;
pub use run_folder::{lock_run, resume_config};
pub use run_place::RunPlace;
pub use setup::{Setup, Source, ensure_dataset};
pub use step::{StepInput, batch_loss};
pub use validate::validate_sources;

use crate::config::Config;
use crate::eval::report::EvalReport;
use burn::prelude::*;
use std::path::PathBuf;

pub struct Outcome {
    pub run_dir: PathBuf,
    pub steps: usize,
    pub report: Option<EvalReport>,
    pub samples_per_s: f64,
}

/// Trains a run. With `resume`, continues the run in `cfg.run_dir()` from its last complete
/// checkpoint (see [`trainer::Trainer`]).
/// `cfg.run_dir()` may be a URL: the run is then written to a local copy and sent to the
/// bucket after every checkpoint ([`RunPlace`]).
pub fn train(cfg: Config, resume: bool, device: &Device, quiet: bool) -> anyhow::Result<Outcome> {
    let place = RunPlace::open(&cfg.run_dir())?;
    train_at(place, cfg, resume, device, quiet)
}

/// [`train`] at a place already opened (`dfm train --resume` reads the run's config there).
pub fn train_at(
    place: RunPlace,
    cfg: Config,
    resume: bool,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let out = trainer::Trainer::start(cfg, place, resume, device, quiet)?.run()?;
    if let Some(c) = crate::store::cache::current().filter(|_| !quiet) {
        println!("{}", c.report());
    }
    Ok(out)
}
