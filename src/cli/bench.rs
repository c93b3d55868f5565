//! `dfm bench loader | train | infer | serve`: figures, printed and optionally written as JSON.

use super::ranges::*;
use crate::predict::Predictor;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Input pipeline throughput (read, decode, features, batches) per worker count.
    Loader(LoaderArgs),
    /// Training step throughput, FLOPs, MFU against the device's matmul rate, step profile.
    Train(BenchTrainArgs),
    /// Forward latency per batch size.
    Infer(InferArgs),
    /// Serving throughput and latency at several concurrencies (server and client on loopback).
    Serve(BenchServeArgs),
}

#[derive(Args)]
pub struct InferArgs {
    /// An export bundle or a run folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Samples to use (default: the model's dataset, test split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(value_parser = usize_in(1, 65_536), long, value_delimiter = ',', default_value = "1,8,64")]
    pub batch_sizes: Vec<usize>,
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 50)]
    pub iterations: usize,
    /// auto | flex | wgpu | cuda[:N] (default: auto).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Experiment config (TOML); its data and model are used (the dataset is simulated when
    /// `data.path` holds none and `data.synth_routes` is set).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key (repeatable), e.g. --set train.batch_size=64.
    #[arg(long = "set", value_name = "KEY=VALUE", num_args = 1..)]
    pub set: Vec<String>,
    /// auto | flex | wgpu | cuda[:N] (default: the config's run.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Timed steps (after the warm-up).
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 30)]
    pub steps: usize,
    #[arg(value_parser = usize_in(0, 1_000_000), long, default_value_t = 5)]
    pub warmup: usize,
    /// Side of the square matmul that measures the device's peak (default 1024 on the CPU,
    /// 8192 on a GPU).
    #[arg(value_parser = usize_in(1, 16_384), long)]
    pub matmul_size: Option<usize>,
    /// Time the trainer's own loop instead (replicas, devices, loader, validation and
    /// checkpoints) for `--steps` steps, and print its rate per `--window` steps: whether it
    /// holds over a run.
    #[arg(long, conflicts_with_all = ["warmup", "matmul_size"])]
    pub whole_run: bool,
    /// Steps per window of `--whole-run`.
    #[arg(value_parser = usize_in(1, 100_000), long, default_value_t = 100, requires = "whole_run")]
    pub window: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct BenchServeArgs {
    /// An export bundle or a run folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Samples to send (default: the model's dataset, test split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(value_parser = usize_in(1, 1024), long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// Requests per concurrency level.
    #[arg(value_parser = usize_in(1, 10_000_000), long, default_value_t = 400)]
    pub requests: usize,
    #[arg(value_parser = usize_in(1, 4096), long, default_value_t = 32)]
    pub max_batch: usize,
    /// How long a forward pass waits for more requests (0: it takes what is queued; requests
    /// arriving meanwhile form the next batch).
    #[arg(value_parser = u64_in(0, 10_000), long, default_value_t = 0)]
    pub max_wait_ms: u64,
    /// Forward passes at once (0: one per core on a CPU, at most 16; one on a GPU).
    #[arg(value_parser = usize_in(0, 256), long, default_value_t = 0)]
    pub model_workers: usize,
    /// Ask each request for its route plan (`"plan_route": true`); only samples with two or
    /// more stops are sent.
    #[arg(long)]
    pub plan_route: bool,
    /// auto | flex | wgpu | cuda[:N] (default: auto).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct LoaderArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Worker counts to measure.
    #[arg(value_parser = usize_in(1, 256), long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    #[arg(value_parser = usize_in(1, 65_536), long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(value_parser = usize_in(8, 1024), long, default_value_t = 32)]
    pub image_size: usize,
    /// Stop each measurement after this many samples (0: the whole split).
    #[arg(value_parser = usize_in(0, 100_000_000), long, default_value_t = 0)]
    pub max_samples: usize,
    /// auto | flex | wgpu | cuda[:N] (default: auto).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Loader(a) => loader(a),
        BenchCmd::Train(a) => train(a),
        BenchCmd::Infer(a) => infer(a),
        BenchCmd::Serve(a) => serve(a),
    }
}

/// Prints a result and writes it as JSON when asked.
fn report(
    rendered: String,
    json: Option<&Path>,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    print!("{rendered}");
    if let Some(p) = json {
        crate::util::write_json(p, value)?;
        println!("written to {}", p.display());
    }
    Ok(())
}

/// Up to 64 samples of a dataset (default: the model's own; its test split when it has one).
fn bench_samples(p: &Predictor, data: Option<&Path>) -> anyhow::Result<Vec<crate::Sample>> {
    let dir = data
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(&p.loaded.cfg.data.path));
    let m = crate::data::manifest::Manifest::load(&dir)?;
    let split = if m.splits.contains_key("test") {
        "test"
    } else {
        "all"
    };
    crate::data::loader::first_samples(&dir, split, 64)
}

pub fn loader(a: LoaderArgs) -> anyhow::Result<()> {
    let sel = crate::device::choose(a.device.as_deref(), None)?;
    eprintln!("device: {}", sel.description);
    let res = crate::bench::loader::run(&crate::bench::loader::Options {
        data: &a.data,
        split: &a.split,
        workers: &a.workers,
        batch_size: a.batch_size,
        image_size: a.image_size,
        max_samples: a.max_samples,
        device: sel.device,
    })?;
    report(res.render(), a.json.as_deref(), &res)
}

pub fn train(a: BenchTrainArgs) -> anyhow::Result<()> {
    let cfg = crate::config::Config::load(Some(&a.config), &a.set)?;
    let sel = crate::device::choose(a.device.as_deref(), Some(cfg.run.device))?;
    println!("device: {}", sel.description);
    if a.whole_run {
        let name = a.config.display().to_string();
        let (device, description) = (&sel.device, &sel.description);
        let r = crate::bench::train_run::run(cfg, &name, device, description, a.steps, a.window)?;
        return report(r.render(), a.json.as_deref(), &r);
    }
    let cpu = sel.description.starts_with("flex");
    let o = crate::bench::train::Options {
        steps: a.steps,
        warmup: a.warmup,
        matmul_size: a.matmul_size.unwrap_or(if cpu { 1024 } else { 8192 }),
    };
    let r = crate::bench::train::run(
        cfg,
        &a.config.display().to_string(),
        &sel.device,
        &sel.description,
        &o,
    )?;
    report(r.render(), a.json.as_deref(), &r)
}

pub fn infer(a: InferArgs) -> anyhow::Result<()> {
    let sel = crate::device::choose(a.device.as_deref(), None)?;
    let p = Predictor::load(&a.model, sel.device.clone())?;
    let samples = bench_samples(&p, a.data.as_deref())?;
    let r = crate::bench::infer::run(
        &p,
        &samples,
        &a.model.display().to_string(),
        &sel.description,
        &a.batch_sizes,
        a.iterations,
        &sel.device,
    )?;
    report(r.render(), a.json.as_deref(), &r)
}

pub fn serve(a: BenchServeArgs) -> anyhow::Result<()> {
    let sel = crate::device::choose(a.device.as_deref(), None)?;
    let p = Predictor::load(&a.model, sel.device)?;
    let mut samples = bench_samples(&p, a.data.as_deref())?;
    if a.plan_route {
        samples.retain(|s| s.stops.len() >= 2);
        anyhow::ensure!(
            !samples.is_empty(),
            "--plan-route: no sample among the first 64 lists two or more stops"
        );
        for s in &mut samples {
            s.plan_route = true;
        }
    }
    let o = crate::serve::ServeOptions {
        max_batch: a.max_batch,
        max_wait_ms: a.max_wait_ms,
        model_workers: a.model_workers,
        ..Default::default()
    };
    let r = crate::bench::serve::run(
        p,
        &samples,
        &a.model.display().to_string(),
        &a.concurrency,
        a.requests,
        &o,
    )?;
    report(r.render(), a.json.as_deref(), &r)
}
