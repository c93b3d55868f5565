//! `dfm bench train`: the training step of a config, timed part by part (data wait, forward,
//! backward, optimizer), its FLOPs counted from the config (`model::flops`), and the same
//! device's matrix-multiply rate measured in the same run; their ratio is the model FLOP
//! utilization (MFU). The step is the training loop's own (`train::micro_step` parts, the same
//! loader, masks and optimizer), so what is measured is what `dfm train` runs.

use crate::batch::FeatureBatcher;
use crate::config::{Config, Objective};
use crate::model::flops;
use crate::train::{Setup, StepInput, batch_loss, optimizer, token_masks};
use burn::data::dataloader::batcher::Batcher;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Mean milliseconds per step of each part.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Profile {
    /// Waiting for the loader's next batch (reading, decoding, features, tensors are built on
    /// the loader's threads ahead of time; this is only what the step waited).
    pub data_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    pub step_ms: f64,
}

impl Profile {
    /// The step profile: each part's mean time and share, the slowest marked.
    fn render(&self, s: &mut String) {
        use std::fmt::Write as _;
        let p = self;
        let _ = writeln!(s, "step profile (mean ms per step):");
        let parts = [
            ("data wait", p.data_ms),
            ("forward", p.forward_ms),
            ("backward", p.backward_ms),
            ("optimizer", p.optimizer_ms),
        ];
        let slowest = parts
            .iter()
            .fold(parts[0], |a, b| if b.1 > a.1 { *b } else { a })
            .0;
        for (name, ms) in parts {
            let _ = writeln!(
                s,
                "  {name:<10} {ms:>9.2} ms {:>5.1}%{}",
                100.0 * ms / p.step_ms.max(1e-12),
                if name == slowest { "  <- slowest" } else { "" }
            );
        }
        let _ = writeln!(s, "  step       {:>9.2} ms", p.step_ms);
    }
}

impl Profile {
    /// The totals of `steps` timed steps (taking `secs` in all) as the mean of one.
    fn per_step(mut self, steps: f64, secs: f64) -> Profile {
        self.data_ms /= steps;
        self.forward_ms /= steps;
        self.backward_ms /= steps;
        self.optimizer_ms /= steps;
        self.step_ms = secs * 1e3 / steps;
        self
    }
}

/// What a step of the run's objective computes, for the FLOP count.
fn work_of(cfg: &Config) -> flops::Work {
    match cfg.train.objective {
        Objective::Supervised => flops::Work::Supervised,
        Objective::Pretrain => flops::Work::Pretrain {
            align: cfg.train.loss_weights.get("align").is_none_or(|w| *w > 0.0),
        },
    }
}

#[derive(Serialize, Debug)]
pub struct TrainBench {
    pub bench: &'static str,
    pub config: String,
    pub device: String,
    pub objective: String,
    /// The float type the step computes in (`train.precision`).
    pub precision: String,
    pub batch_size: usize,
    pub steps: usize,
    pub warmup_steps: usize,
    pub params: usize,
    pub tokens_per_sample: usize,
    pub samples_per_s: f64,
    /// Samples per second of the model's step alone (forward, backward, optimizer; no data
    /// wait): what a PyTorch reference timing a prebuilt batch compares with.
    pub compute_samples_per_s: f64,
    pub tokens_per_s: f64,
    /// Forward FLOPs per sample x 3 (forward + backward).
    pub flops_per_sample: f64,
    pub forward_flops_per_sample: f64,
    /// FLOP/s the training step achieved (compute time and data wait included).
    pub achieved_flops: f64,
    /// The device's measured matmul rate (`matmul_size`^3 square products).
    pub peak_flops: f64,
    pub matmul_size: usize,
    /// FLOP/s of the model's own largest product on the same device: the feed-forward input
    /// layer, (batch x tokens) x d_model by d_model x ff (the roof for this model's shapes).
    pub model_shape_flops: f64,
    pub model_shape: [usize; 3],
    pub mfu: f64,
    /// MFU over the step without its data wait (what the model code reaches).
    pub mfu_compute: f64,
    pub profile: Profile,
    /// Peak bytes the device allocator reserved (sampled after each part), when it reports it.
    pub peak_device_mib: Option<f64>,
    /// Peak resident memory of this process (Linux), MiB.
    pub peak_rss_mib: Option<f64>,
    /// The largest FLOP terms, per sample, forward.
    pub flops_by_part: BTreeMap<String, f64>,
}

/// FLOP/s of an `n x n` by `n x n` matmul on `device` (after one warm-up product).
pub fn matmul_peak(device: &Device, n: usize, reps: usize) -> f64 {
    matmul_rate(device, [n, n, n], reps)
}

/// FLOP/s of an `m x k` by `k x n` matmul on `device`, best of `reps` after one warm-up
/// product (the time includes reading back a sum of the product, negligible at these sizes).
pub fn matmul_rate(device: &Device, [m, k, n]: [usize; 3], reps: usize) -> f64 {
    let a = Tensor::<2>::random([m, k], Distribution::Default, device);
    let b = Tensor::<2>::random([k, n], Distribution::Default, device);
    let _ = a.clone().matmul(b.clone()).sum().into_scalar::<f32>();
    // The best of the timed repetitions: a peak, not an average, so that a moment of
    // contention (another process, the loader's threads winding down) does not lower it.
    let mut best = f64::INFINITY;
    for i in 0..reps.max(1) {
        // A fresh left operand each time, so nothing is cached.
        let a = a.clone() + i as f32;
        device.sync().ok();
        let t = Instant::now();
        let _ = a.matmul(b.clone()).sum().into_scalar::<f32>();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub struct Options {
    pub steps: usize,
    pub warmup: usize,
    pub matmul_size: usize,
}

pub fn run(
    cfg: Config,
    config_name: &str,
    device: &Device,
    device_name: &str,
    o: &Options,
) -> anyhow::Result<TrainBench> {
    let setup = Setup::new(cfg)?;
    let cfg = &setup.cfg;
    // The same float type as `dfm train` (bf16 where the GPU computes in it, else refused);
    // the matmul peaks below then measure that type too.
    let device = &crate::train::with_precision(device.clone(), cfg.train.precision)?;
    let spec = &setup.spec;
    let work = work_of(cfg);
    let fwd = flops::forward_flops(&cfg.model, spec, cfg.data.image_size, work);
    let tokens = flops::tokens(&cfg.model, spec, cfg.data.image_size).total;
    let (timed, params) = measure(&setup, device, o)?;
    let (secs, peak_dev) = (timed.secs, timed.peak_device);
    let prof = timed.profile.per_step(o.steps.max(1) as f64, secs);
    let samples_per_s = timed.samples as f64 / secs;
    let compute_s = (prof.forward_ms + prof.backward_ms + prof.optimizer_ms) / 1e3;
    let compute_samples_per_s = cfg.train.batch_size as f64 / compute_s.max(1e-12);
    let peak = matmul_peak(device, o.matmul_size, 10);
    let d = cfg.model.d_model;
    let model_shape = [cfg.train.batch_size * tokens, d, d * cfg.model.ff_mult];
    let model_shape_flops = matmul_rate(device, model_shape, 20);
    let achieved = 3.0 * fwd * samples_per_s;
    let parts = flops_by_part(cfg, spec, work);
    Ok(TrainBench {
        bench: "train",
        config: config_name.to_string(),
        device: device_name.to_string(),
        objective: format!("{:?}", cfg.train.objective).to_lowercase(),
        precision: format!("{:?}", cfg.train.precision).to_lowercase(),
        batch_size: cfg.train.batch_size,
        steps: o.steps,
        warmup_steps: o.warmup,
        params,
        tokens_per_sample: tokens,
        samples_per_s,
        compute_samples_per_s,
        tokens_per_s: samples_per_s * tokens as f64,
        flops_per_sample: 3.0 * fwd,
        forward_flops_per_sample: fwd,
        achieved_flops: achieved,
        peak_flops: peak,
        matmul_size: o.matmul_size,
        model_shape_flops,
        model_shape,
        mfu: achieved / peak,
        mfu_compute: 3.0 * fwd * compute_samples_per_s / peak,
        profile: prof,
        peak_device_mib: peak_dev.map(|b| b as f64 / (1024.0 * 1024.0)),
        peak_rss_mib: peak_rss_mib(),
        flops_by_part: parts,
    })
}

/// A new model's timed steps on `device`, and its parameter count.
fn measure(setup: &Setup, device: &Device, o: &Options) -> anyhow::Result<(Timed, usize)> {
    let ad = device.clone().autodiff();
    let model = setup.new_model(&ad);
    let mut optim = optimizer(&setup.cfg);
    let loader = setup.train_loader()?;
    anyhow::ensure!(
        loader.num_batches() > 0,
        "the train split has less than one batch"
    );
    let (timed, model) = timed_steps(setup, &loader, &ad, model, &mut optim, o)?;
    Ok((timed, model.num_params()))
}

/// What the timed steps measured.
struct Timed {
    profile: Profile,
    secs: f64,
    samples: usize,
    peak_device: Option<u64>,
}

/// `o.warmup` untimed steps, then `o.steps` timed ones (data, forward, backward, optimizer).
/// An epoch's batches, built ahead on the loader's threads as in `dfm train` on one device.
fn epoch_batches(
    setup: &Setup,
    loader: &crate::data::mixture::Mixture,
    ad: &Device,
    epoch: u64,
) -> crate::data::mixture::MixEpoch<crate::features::Features, StepInput> {
    let norm = setup.norm.clone();
    let dev = ad.clone();
    loader.epoch(
        epoch,
        0,
        Arc::new(move |s| norm.features(&s)),
        Arc::new(move |items| StepInput::Ready(Box::new(FeatureBatcher.batch(items, &dev)))),
    )
}

fn timed_steps(
    setup: &Setup,
    loader: &crate::data::mixture::Mixture,
    ad: &Device,
    mut model: crate::model::DfmModel,
    optim: &mut crate::optim::Optim,
    o: &Options,
) -> anyhow::Result<(Timed, crate::model::DfmModel)> {
    let cfg = &setup.cfg;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.run.seed);
    let mut prof = Profile::default();
    let mut peak_dev: Option<u64> = None;
    let (mut done, mut epoch) = (0usize, 0u64);
    let total = o.warmup + o.steps;
    let mut timed_start: Option<Instant> = None;
    let mut timed_samples = 0usize;
    while done < total {
        let mut batches = epoch_batches(setup, loader, ad, epoch);
        loop {
            if done == o.warmup && timed_start.is_none() {
                ad.sync().ok();
                timed_start = Some(Instant::now());
                prof = Profile::default();
            }
            let t0 = Instant::now();
            let Some(item) = batches.next() else { break };
            let StepInput::Ready(b) = item? else {
                unreachable!("one device")
            };
            prof.data_ms += (Instant::now() - t0).as_secs_f64() * 1e3;
            let n = b.len();
            let mut step = Step {
                cfg,
                ad,
                optim: &mut *optim,
                peak: &mut peak_dev,
            };
            model = step.run(model, *b, &mut rng, &mut prof, done)?;
            done += 1;
            if done > o.warmup {
                timed_samples += n;
            }
            if done >= total {
                break;
            }
        }
        epoch += 1;
    }
    let secs = timed_start.expect("timed steps ran").elapsed();
    let timed = Timed {
        profile: prof,
        secs: secs.as_secs_f64(),
        samples: timed_samples,
        peak_device: peak_dev,
    };
    Ok((timed, model))
}

/// One measured training step on a batch that is ready.
struct Step<'a> {
    cfg: &'a Config,
    ad: &'a Device,
    optim: &'a mut crate::optim::Optim,
    /// The largest device memory reserved so far, bytes.
    peak: &'a mut Option<u64>,
}

impl Step<'_> {
    fn sample_memory(&mut self) {
        if let Some(u) = self.ad.memory_pool_usage() {
            *self.peak = Some(self.peak.unwrap_or(0).max(u.bytes_reserved));
        }
    }

    /// Forward, backward and optimizer, each timed into `prof` (the device synced after each).
    fn run(
        &mut self,
        model: crate::model::DfmModel,
        b: crate::batch::Batch,
        rng: &mut rand_chacha::ChaCha8Rng,
        prof: &mut Profile,
        done: usize,
    ) -> anyhow::Result<crate::model::DfmModel> {
        let (cfg, ad) = (self.cfg, self.ad);
        let t1 = Instant::now();
        let masks = token_masks(&b, &model, cfg, rng, true, ad);
        let l = batch_loss(&model, &b, &masks, cfg);
        let loss = l.total.clone().into_scalar::<f32>();
        anyhow::ensure!(loss.is_finite(), "non-finite loss {loss} at step {done}");
        self.sample_memory();
        let t2 = Instant::now();
        let grads = GradientsParams::from_grads(l.total.backward(), &model);
        ad.sync().ok();
        self.sample_memory();
        let t3 = Instant::now();
        let model = self.optim.step(cfg.train.lr, model, grads);
        ad.sync().ok();
        self.sample_memory();
        let t4 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        prof.forward_ms += ms(t1, t2);
        prof.backward_ms += ms(t2, t3);
        prof.optimizer_ms += ms(t3, t4);
        Ok(model)
    }
}

/// Forward FLOPs per sample by part of the model (per-layer terms grouped).
fn flops_by_part(
    cfg: &Config,
    spec: &crate::data::sample::Spec,
    work: flops::Work,
) -> BTreeMap<String, f64> {
    let mut parts: BTreeMap<String, f64> = BTreeMap::new();
    for t in flops::terms(&cfg.model, spec, cfg.data.image_size, work) {
        // Group per-layer terms: "layer 0 mlp in" -> "transformer mlp".
        let name = if t.name.starts_with("layer ") {
            format!(
                "transformer {}",
                t.name.splitn(3, ' ').nth(2).unwrap_or_default()
            )
        } else {
            t.name.clone()
        };
        *parts.entry(name).or_default() += t.flops;
    }
    parts.retain(|_, f| *f > 0.0);
    parts
}

impl TrainBench {
    /// The peak memory of the device and of the process, where known.
    fn render_memory(&self, s: &mut String) {
        use std::fmt::Write as _;
        if let Some(m) = self.peak_device_mib {
            let _ = writeln!(s, "  peak device memory   {m:>12.1} MiB");
        }
        if let Some(m) = self.peak_rss_mib {
            let _ = writeln!(s, "  peak host memory     {m:>12.1} MiB (process RSS)");
        }
    }

    /// The forward pass's FLOPs by part, the largest eight.
    fn render_flops_by_part(&self, s: &mut String) {
        use std::fmt::Write as _;
        let total: f64 = self.flops_by_part.values().sum();
        let mut by: Vec<(&String, &f64)> = self.flops_by_part.iter().collect();
        by.sort_by(|a, b| b.1.total_cmp(a.1));
        let _ = writeln!(s, "forward FLOPs by part:");
        for (name, f) in by.iter().take(8) {
            let _ = writeln!(
                s,
                "  {name:<28} {:>9.3} MFLOP {:>5.1}%",
                *f / 1e6,
                100.0 * *f / total
            );
        }
    }

    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "training step of {} on {} ({} objective, {}): batch {}, {} parameters, {} tokens/sample, {} timed steps after {} warm-up",
            self.config,
            self.device,
            self.objective,
            self.precision,
            self.batch_size,
            self.params,
            self.tokens_per_sample,
            self.steps,
            self.warmup_steps
        );
        let _ = writeln!(s, "  samples/s            {:>12.1}", self.samples_per_s);
        let _ = writeln!(
            s,
            "  samples/s (compute)  {:>12.1}  (forward + backward + optimizer only)",
            self.compute_samples_per_s
        );
        let _ = writeln!(s, "  tokens/s             {:>12.0}", self.tokens_per_s);
        let _ = writeln!(
            s,
            "  FLOPs/sample (train) {:>12.3} MFLOP  (forward {:.3} MFLOP x 3)",
            self.flops_per_sample / 1e6,
            self.forward_flops_per_sample / 1e6
        );
        let _ = writeln!(
            s,
            "  achieved             {:>12.2} GFLOP/s",
            self.achieved_flops / 1e9
        );
        let _ = writeln!(
            s,
            "  matmul peak          {:>12.2} GFLOP/s  ({}^3 matmul, same device)",
            self.peak_flops / 1e9,
            self.matmul_size
        );
        let [m, k, n] = self.model_shape;
        let _ = writeln!(
            s,
            "  matmul, model shape  {:>12.2} GFLOP/s  ({m}x{k} by {k}x{n}: the feed-forward layer's product)",
            self.model_shape_flops / 1e9
        );
        let _ = writeln!(
            s,
            "  MFU                  {:>12.3}  (without data wait: {:.3})",
            self.mfu, self.mfu_compute
        );
        self.render_memory(&mut s);
        self.profile.render(&mut s);
        self.render_flops_by_part(&mut s);
        s
    }
}
