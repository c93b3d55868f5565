//! The training loop as a `Trainer`, read top to bottom: [`Trainer::start`] opens a new run or
//! resumes one, [`Trainer::run`] goes through epochs of optimizer steps (each gathering
//! `grad_accum` micro-batches on one or several devices), logs, checkpoints, validates at the
//! end of every epoch, and [`Trainer::finish`] plots the losses and evaluates the best model.

use super::Outcome;
use super::baseline::ensure_ridge;
use super::ema::Ema;
use super::init::{initial_model, optimizer};
use super::log_window::LogWindow;
use super::parallel::{parallel_micro_step, replica_pools, training_devices};
use super::run_folder::{
    append_metrics, lock_run, settle_config, truncate_metrics, write_run_files,
};
use super::run_place::RunPlace;
use super::schedule::{self, run_length, samples_per_step};
use super::setup::Setup;
use super::step::{Micro, StepAcc, StepInput, micro_step};
use super::tracking::{log_run_artifacts, start_tracking};
use super::validate::Validator;
use crate::batch::FeatureBatcher;
use crate::checkpoint::{self, TrainState};
use crate::config::{Config, Objective, OnNan};
use crate::data::augment;
use crate::data::mixture::{MixEpoch, Mixture};
use crate::eval::ridge::Ridge;
use crate::model::DfmModel;
use crate::optim::Optim;
use crate::track::Tracker;
use anyhow::bail;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, MultiGradientsParams};
use burn::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub struct Trainer {
    setup: Setup,
    /// Where the run's files are written (its folder, or the local copy of a run in a bucket).
    run_dir: PathBuf,
    /// The run's folder or URL, its files sent there after each checkpoint.
    place: RunPlace,
    /// Validation after each epoch and the final evaluation.
    validator: Validator,
    /// The autodiff devices (several: data parallelism).
    devices: Vec<Device>,
    /// The replicas' thread pools (`train.replicas` on the CPU).
    pools: Option<crate::forward_pools::Passes>,
    /// Taken out during an optimizer step (which consumes it) and put back.
    model: Option<DfmModel>,
    /// The average of the weights (`train.ema`), from the first step on.
    ema: Option<Ema>,
    optim: Optim,
    state: TrainState,
    ridge: Option<Ridge>,
    loader: Mixture,
    /// Optimizer steps per epoch and in the whole run.
    per_epoch: usize,
    total: usize,
    last_ckpt: Option<PathBuf>,
    accumulators: Vec<GradientsAccumulator<DfmModel>>,
    window: LogWindow,
    all_samples: usize,
    started: Instant,
    bar: indicatif::ProgressBar,
    quiet: bool,
    /// The MLflow run this run logs to (`run.track`).
    tracker: Option<Tracker>,
    /// The run folder's lock, held until the trainer is dropped.
    _lock: std::fs::File,
}

impl Trainer {
    /// Opens a run at `place` (`cfg.run_dir()`): a new one, or with `resume` the one there,
    /// from its last good checkpoint (or from step 0 when it has none).
    pub fn start(
        cfg: Config,
        mut place: RunPlace,
        resume: bool,
        device: &Device,
        quiet: bool,
    ) -> anyhow::Result<Self> {
        let run_dir = place.local.clone();
        let early = place.lock_existing()?;
        let cfg = settle_config(cfg, &run_dir, resume).map_err(|e| place.named(e))?;
        let setup = Setup::new(cfg)?;
        let lock = match early {
            Some(l) => l,
            None => lock_run(&run_dir)?,
        };
        write_run_files(&setup, &run_dir, resume)?;
        let ridge = ensure_ridge(&setup, &run_dir, quiet)?;
        let devices = training_devices(&setup.cfg, device)?;
        let model = initial_model(&setup, &devices[0], &run_dir, resume)?;
        let loader = setup.train_loader()?;
        let (per_epoch, total) = run_length(&setup.cfg, &loader, devices.len())?;
        let tracker = start_tracking(&setup, &run_dir, resume, device, quiet)?;
        let mut t = Trainer {
            tracker,
            optim: optimizer(&setup.cfg),
            state: fresh_state(&setup),
            accumulators: devices
                .iter()
                .map(|_| GradientsAccumulator::new())
                .collect(),
            bar: crate::progress::bar(total as u64, "training"),
            model: Some(model),
            ema: None,
            validator: Validator {
                run_dir: run_dir.clone(),
                metrics_path: run_dir.join("metrics.jsonl"),
                device: device.clone(),
                quiet,
            },
            last_ckpt: None,
            window: LogWindow::new(),
            all_samples: 0,
            started: Instant::now(),
            _lock: lock,
            setup,
            run_dir,
            place,
            pools: replica_pools(&devices)?,
            devices,
            ridge,
            loader,
            per_epoch,
            total,
            quiet,
        };
        t.position(resume)?;
        t.print_plan();
        Ok(t)
    }

    /// Where the run stands: a resumed run at its newest good checkpoint, a new one at step 0
    /// (without the metrics of a run that started there before and had no checkpoint).
    fn position(&mut self, resume: bool) -> anyhow::Result<()> {
        if resume {
            self.resume()?;
        } else if self.metrics_path().exists() {
            std::fs::remove_file(self.metrics_path())?;
        }
        self.last_ckpt = checkpoint::list(&self.run_dir)?.pop().map(|x| x.1);
        self.bar.set_position(self.state.step as u64);
        Ok(())
    }

    fn model(&self) -> &DfmModel {
        self.model
            .as_ref()
            .expect("the model is back after each step")
    }

    /// `metrics.jsonl` of the run (the validator appends its validation lines there too).
    fn metrics_path(&self) -> &Path {
        &self.validator.metrics_path
    }

    fn cfg(&self) -> &Config {
        &self.setup.cfg
    }

    /// Continues from the newest checkpoint that passes its checksums, after finishing any
    /// folder swap a crash interrupted; without one, the run starts again from step 0.
    fn resume(&mut self) -> anyhow::Result<()> {
        for line in checkpoint::recover(&self.run_dir)? {
            println!("{line}");
        }
        let (found, warnings) = checkpoint::load_latest_good(&self.run_dir, self.model())?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        let Some((dir, state, model)) = found else {
            let kept = checkpoint::list(&self.run_dir)?;
            if let Some((_, newest)) = kept.last() {
                bail!(
                    "--resume: none of the {} checkpoints of {} loads into the model of this run (newest: {}; see the warnings above); starting again would overwrite them: start a new run (another run.dir) or move them away",
                    kept.len(),
                    self.place.name.display(),
                    newest.display()
                );
            }
            println!(
                "{} has no checkpoint yet: starting it again from step 0",
                self.place.name.display()
            );
            if self.metrics_path().exists() {
                std::fs::remove_file(self.metrics_path())?;
            }
            return Ok(());
        };
        if state.manifest_sha256 != self.setup.manifest_sha256 {
            bail!(
                "--resume: the dataset at {} changed since the run started (manifest hash differs)",
                self.setup.primary().dir.display()
            );
        }
        self.state = state;
        self.ema = self.restored_ema(&dir, &model)?;
        self.model = Some(model);
        self.optim = optimizer(self.cfg()).load(&dir.join("optim.bpk"), &self.devices[0])?;
        truncate_metrics(self.metrics_path(), self.state.step)?;
        println!(
            "resuming {} from step {} (epoch {}, batch {})",
            self.place.name.display(),
            self.state.step,
            self.state.epoch,
            self.state.batches_in_epoch
        );
        Ok(())
    }

    /// The average saved in a checkpoint (`train.ema`); a checkpoint saved without one starts
    /// it again from the checkpoint's weights, with a warning.
    fn restored_ema(&self, dir: &Path, model: &DfmModel) -> anyhow::Result<Option<Ema>> {
        let decay = self.cfg().train.ema;
        if decay == 0.0 || self.state.step == 0 {
            return Ok(None);
        }
        let p = dir.join(checkpoint::EMA_FILE);
        if !p.is_file() {
            eprintln!(
                "warning: {} has no averaged weights (train.ema was off when it was saved): the average starts again from its weights",
                dir.display()
            );
            return Ok(Some(Ema::new(model, decay)));
        }
        let avg = checkpoint::load_weights(model.clone(), &p)?;
        Ok(Some(Ema::restored(avg, decay)))
    }

    fn print_plan(&self) {
        if self.quiet {
            return;
        }
        println!(
            "training {} ({} parameters, {} tokens) on {} samples: {} steps of {} samples",
            self.place.name.display(),
            self.model().num_params(),
            self.model().token_count(self.setup.spec.max_stops),
            self.loader.num_samples(),
            self.total,
            samples_per_step(self.cfg(), self.devices.len())
        );
    }

    /// Trains to the last step, then [`Trainer::finish`]es.
    pub fn run(mut self) -> anyhow::Result<Outcome> {
        while self.state.step < self.total {
            self.epoch()?;
        }
        self.finish()
    }

    /// One pass over the training data (or the rest of it after a resume), then validation, the
    /// best model and a checkpoint.
    fn epoch(&mut self) -> anyhow::Result<()> {
        let epoch = self.state.epoch;
        let batches = self.batches(epoch);
        let mut acc = StepAcc::new();
        // Whether the loader ran out of batches (the epoch is over even when bad records were
        // skipped and it held fewer than the manifest says).
        let mut exhausted = true;
        for item in batches {
            let Some(results) = self.micro_batch(item?, &mut acc) else {
                continue;
            };
            self.gather(results, &mut acc);
            acc.micro += 1;
            if acc.micro < self.cfg().train.grad_accum {
                continue;
            }
            self.optimizer_step(&mut acc, epoch)?;
            if self.state.step >= self.total {
                exhausted = false;
                break;
            }
        }
        let per_step = self.cfg().train.grad_accum * self.devices.len();
        if exhausted || self.state.batches_in_epoch >= self.per_epoch * per_step {
            self.state.epoch += 1;
            self.state.batches_in_epoch = 0;
        }
        let start = std::time::Instant::now();
        let kept = match &self.ema {
            Some(e) => &e.model,
            None => self.model.as_ref().expect("model"),
        };
        let line = self
            .validator
            .end_of_epoch(kept, &self.setup, &mut self.state, epoch)?;
        if let (Some(t), Some(line)) = (&self.tracker, line) {
            t.metrics_line(&line);
        }
        self.checkpoint()?;
        self.window.pause_since(start);
        Ok(())
    }

    /// The epoch's batches, from where the run stands in it. One device: tensors are built
    /// ahead on the loader's prefetch thread; several: each device thread builds its own.
    fn batches(&self, epoch: usize) -> MixEpoch<crate::features::Features, StepInput> {
        let norm = self.setup.norm.clone();
        let dev = self.devices[0].clone();
        let multi = self.devices.len() > 1;
        let (mirror, seed) = (self.setup.cfg.train.mirror, self.setup.cfg.run.seed);
        self.loader.epoch(
            epoch as u64,
            self.state.batches_in_epoch,
            Arc::new(move |s| {
                if augment::chosen(mirror, seed, epoch as u64, &s.key) {
                    norm.features(&augment::mirrored(s))
                } else {
                    norm.features(&s)
                }
            }),
            Arc::new(move |items| {
                if multi {
                    StepInput::Host(items)
                } else {
                    StepInput::Ready(Box::new(FeatureBatcher.batch(items, &dev)))
                }
            }),
        )
    }

    /// Forward and backward of one micro-batch (or, with several devices, of one batch per
    /// device once each has one; None while waiting).
    fn micro_batch(&self, input: StepInput, acc: &mut StepAcc) -> Option<Vec<Micro>> {
        let cfg = self.cfg();
        let micro = self.state.step * cfg.train.grad_accum + acc.micro;
        let scale = 1.0 / (cfg.train.grad_accum * self.devices.len()) as f32;
        match input {
            StepInput::Ready(b) => Some(vec![micro_step(
                self.model(),
                &b,
                cfg,
                micro,
                0,
                &self.devices[0],
                scale,
            )]),
            StepInput::Host(f) => {
                acc.pending.push(f);
                if acc.pending.len() < self.devices.len() {
                    return None;
                }
                let work: Vec<_> = acc.pending.drain(..).collect();
                Some(parallel_micro_step(
                    self.model(),
                    work,
                    cfg,
                    micro,
                    &self.devices,
                    scale,
                    self.pools.as_ref(),
                ))
            }
        }
    }

    /// Adds micro-batch results to the step: losses, counts, gradients (while all are finite).
    fn gather(&mut self, results: Vec<Micro>, acc: &mut StepAcc) {
        for (i, r) in results.into_iter().enumerate() {
            acc.finite &= r.loss.is_finite();
            acc.losses.push((r.loss, r.parts));
            self.state.batches_in_epoch += 1;
            self.all_samples += r.samples;
            self.window.samples += r.samples;
            if acc.finite
                && let Some(g) = r.grads
            {
                let model = self.model.as_ref().expect("model");
                self.accumulators[i].accumulate(model, g);
            }
        }
    }

    /// Applies the gathered gradients (or applies the NaN policy), then logs and checkpoints.
    fn optimizer_step(&mut self, acc: &mut StepAcc, epoch: usize) -> anyhow::Result<()> {
        let mut grads = MultiGradientsParams::default();
        for (a, d) in self.accumulators.iter_mut().zip(&self.devices) {
            grads.grads.push((a.grads(), d.clone()));
        }
        let c = &self.setup.cfg.train;
        let lr = schedule::lr_at(self.state.step, c.lr, c.warmup_steps, self.total);
        if acc.finite {
            let model = self.model.take().expect("model");
            self.model = Some(if grads.grads.len() == 1 {
                self.optim.step(lr, model, grads.grads.pop().unwrap().0)
            } else {
                self.optim.step(lr, model, grads)
            });
            self.average();
        } else {
            self.non_finite(epoch)?;
        }
        let losses = std::mem::take(&mut acc.losses);
        *acc = StepAcc {
            pending: std::mem::take(&mut acc.pending),
            ..StepAcc::new()
        };
        self.state.step += 1;
        self.window.add_step(losses);
        self.after_step(epoch, lr)
    }

    /// Moves the average of the weights (`train.ema`) after an optimizer step.
    fn average(&mut self) {
        let decay = self.cfg().train.ema;
        if decay == 0.0 {
            return;
        }
        let model = self.model.as_ref().expect("model");
        match &mut self.ema {
            Some(e) => e.update(model, self.state.step),
            None => self.ema = Some(Ema::new(model, decay)),
        }
    }

    /// A step with a non-finite loss: stop naming the step and the last good checkpoint, or
    /// skip it (`train.on_nan`).
    fn non_finite(&mut self, epoch: usize) -> anyhow::Result<()> {
        let where_ = self
            .last_ckpt
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none yet".into());
        match self.cfg().train.on_nan {
            OnNan::Stop => bail!(
                "non-finite loss at step {} (epoch {}): stopping; the last good checkpoint is {} (set train.on_nan = \"skip\" to skip such steps)",
                self.state.step,
                epoch,
                where_
            ),
            OnNan::Skip => {
                self.state.skipped_steps += 1;
                eprintln!(
                    "warning: non-finite loss at step {}: step skipped ({} so far)",
                    self.state.step, self.state.skipped_steps
                );
                Ok(())
            }
        }
    }

    /// Progress, the log line every `log_every` steps, a checkpoint every `checkpoint_every`.
    fn after_step(&mut self, epoch: usize, lr: f64) -> anyhow::Result<()> {
        let step = self.state.step;
        self.bar.set_position(step as u64);
        let tty = crate::progress::is_tty();
        if tty {
            self.bar.set_message(format!(
                "loss {:.4} lr {lr:.1e} {:.0} samples/s",
                self.window.mean("loss"),
                self.window.samples_per_s()
            ));
        }
        if step.is_multiple_of(self.cfg().train.log_every) || step == self.total {
            self.log(epoch, lr, tty)?;
        }
        if step.is_multiple_of(self.cfg().train.checkpoint_every) && step < self.total {
            let start = std::time::Instant::now();
            self.checkpoint()?;
            self.window.pause_since(start);
        }
        Ok(())
    }

    /// Appends the window's means to `metrics.jsonl` (and prints them without a terminal).
    fn log(&mut self, epoch: usize, lr: f64, tty: bool) -> anyhow::Result<()> {
        let sps = self.window.samples_per_s();
        let mut v =
            json!({"step": self.state.step, "epoch": epoch, "lr": lr, "samples_per_s": sps});
        for k in self.window.sums.keys() {
            v[*k] = json!(self.window.mean(k));
        }
        append_metrics(self.metrics_path(), &v)?;
        if let Some(t) = &self.tracker {
            t.metrics_line(&v);
        }
        if !tty && !self.quiet {
            println!(
                "step {}/{} epoch {} loss {:.4} lr {:.2e} {:.0} samples/s",
                self.state.step,
                self.total,
                epoch,
                self.window.mean("loss"),
                lr,
                sps
            );
        }
        self.window = LogWindow::new();
        Ok(())
    }

    fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.last_ckpt = Some(checkpoint::save(
            &self.run_dir,
            checkpoint::Saved {
                model: self.model.as_ref().expect("model"),
                ema: self.ema.as_ref().map(|e| &e.model),
                optim: &self.optim,
                state: &self.state,
                config: &self.setup.cfg,
            },
            self.cfg().train.keep_last,
        )?);
        self.place.push()
    }

    /// The loss plot and, for supervised runs, the best model's evaluation on `eval.split`
    /// (written as `eval_<split>.json`).
    pub fn finish(mut self) -> anyhow::Result<Outcome> {
        self.bar.finish_and_clear();
        let sps = self.all_samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        if let Err(e) =
            crate::plot::loss_curves(self.metrics_path(), &self.run_dir.join("loss.png"))
        {
            eprintln!("warning: no loss plot: {e:#}");
        }
        // Without validation nothing was marked best: the average is the run's model.
        if let Some(e) = &self.ema
            && !self.run_dir.join("best").join("model.bpk").is_file()
        {
            checkpoint::save_best(&self.run_dir, &e.model, &self.state)?;
        }
        let cfg = self.cfg();
        let mut report = None;
        if cfg.train.objective == Objective::Supervised {
            for (i, src) in self.setup.sources.iter().enumerate() {
                if !src.manifest.splits.contains_key(&cfg.eval.split) {
                    continue;
                }
                let r =
                    self.validator
                        .final_report(&self.setup, self.ridge.as_ref(), src, i == 0)?;
                if let Some(t) = &self.tracker {
                    let prefix = match i {
                        0 => cfg.eval.split.clone(),
                        _ => format!("{}.{}", cfg.eval.split, src.name),
                    };
                    t.metrics(&prefix, self.state.step as u64, &serde_json::to_value(&r)?);
                }
                if i == 0 {
                    report = Some(r);
                }
            }
        }
        if let Some(t) = self.tracker.take() {
            log_run_artifacts(&t, &self.run_dir);
            let s = t.finish(true);
            if !self.quiet || !s.complete() {
                println!("{}", s.render());
            }
        }
        self.place.push()?;
        Ok(Outcome {
            run_dir: self.place.name.clone(),
            steps: self.state.step,
            report,
            samples_per_s: sps,
        })
    }
}

fn fresh_state(setup: &Setup) -> TrainState {
    TrainState {
        step: 0,
        epoch: 0,
        batches_in_epoch: 0,
        best_val: None,
        best_step: None,
        skipped_steps: 0,
        val_loss: None,
        manifest_sha256: setup.manifest_sha256.clone(),
    }
}
