//! Config-driven training runs (`dfm train`).
//!
//! A hand-written loop rather than burn-train's `SupervisedTraining`: the run must checkpoint by
//! step (not by epoch), resume exactly in the middle of an epoch after a `kill -9` with the same
//! data order and the same dropout draws, use a step-based warmup + cosine schedule, and stop or
//! skip on a non-finite loss naming the step. The learner checkpoints per epoch and restarts
//! epochs, so it fits none of these; the loop is short and uses burn's pieces (modules, AdamW,
//! gradient clipping, gradient accumulation, burnpack records).

pub mod checkpoint;
pub mod ema;
pub mod losses;
pub mod schedule;
pub mod support;
pub mod trainer;

use crate::batch::{Batch, FeatureBatcher};
use crate::config::{Config, Objective};
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::{Manifest, NormStats};
use crate::data::mixture::Mixture;
use crate::data::sample::Spec;
use crate::eval::report::EvalReport;
use crate::eval::ridge::{self, Ridge};
use crate::features::Normalizer;
use crate::modality::Modality;
use crate::model::{DfmModel, TokenMasks};
use crate::seed::hash;
use anyhow::{Context, bail};
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use checkpoint::TrainState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub struct Outcome {
    pub run_dir: PathBuf,
    pub steps: usize,
    pub report: Option<EvalReport>,
    pub samples_per_s: f64,
}

/// The dataset folder of a config; simulates it first when missing and `data.synth_routes > 0`.
pub fn ensure_dataset(cfg: &Config) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(&cfg.data.path);
    if Manifest::path(&dir).is_file() {
        return Ok(dir);
    }
    if cfg.data.synth_routes == 0 {
        bail!(
            "{}: no dataset (no manifest.json); make one with `dfm data synth --out {}` or set data.synth_routes",
            dir.display(),
            dir.display()
        );
    }
    println!(
        "no dataset at {}: simulating {} routes (seed {})",
        dir.display(),
        cfg.data.synth_routes,
        cfg.data.synth_seed
    );
    let mut sc = crate::data::synth::SynthConfig {
        routes: cfg.data.synth_routes,
        seed: cfg.data.synth_seed,
        ..Default::default()
    };
    if cfg.data.synth_video {
        sc = sc.with_video();
    }
    let m = crate::data::synth::generate(&dir, &sc, false)?;
    println!("  {} samples written", m.coverage.samples);
    Ok(dir)
}

/// Held while a device's (process-wide) random generator is seeded, and by `Setup::new_model`
/// while the initialization draws from it.
static DEVICE_SEED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One dataset of a run (`data.path`, or each of `data.sources`).
pub struct Source {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Relative share of the training batches.
    pub weight: f64,
}

/// Everything a run needs from its data and config.
pub struct Setup {
    pub cfg: Config,
    /// The data the model is tied to: the primary's manifest hash, or for a mixture the hash of
    /// every source's name and manifest hash.
    pub manifest_sha256: String,
    /// The model's time grid and stop capacity (`time_grid::model_spec` of the sources).
    pub spec: Spec,
    /// The normalization statistics (`NormStats::mix` of the sources).
    pub stats: NormStats,
    pub norm: Arc<Normalizer>,
    /// Every dataset of the run, the primary first.
    pub sources: Vec<Source>,
}

/// The run's datasets: the primary (simulated first when missing and the config says so),
/// then the other `data.sources`, each of which must exist.
fn load_sources(cfg: &Config) -> anyhow::Result<Vec<Source>> {
    let data_dir = ensure_dataset(cfg)?;
    let first = cfg.data.sources.first();
    let mut out = vec![Source {
        name: first.map_or_else(|| crate::config::folder_name(&cfg.data.path), |f| f.name()),
        manifest: Manifest::load(&data_dir)?,
        dir: data_dir,
        weight: first.map_or(1.0, |f| f.weight),
    }];
    for (i, sc) in cfg.data.sources.iter().enumerate().skip(1) {
        let dir = PathBuf::from(&sc.path);
        let manifest = Manifest::load(&dir)
            .with_context(|| format!("key `data.sources[{i}].path`: no dataset at {}", sc.path))?;
        out.push(Source {
            name: sc.name(),
            dir,
            manifest,
            weight: sc.weight,
        });
    }
    Ok(out)
}

/// A run that starts from another (`train.init_from`) keeps its time grid and normalization:
/// the features must mean what they meant when its weights learned them, whatever the new
/// data's sampling (which must fit within its horizon). Its stop capacity grows to the new
/// data's (stops are a set: no weight depends on how many there are), so a foundation model
/// trained where routes list 8 stops fine-tunes on routes that list 200.
fn inherited_grid(
    cfg: &Config,
    sources: &[Source],
) -> anyhow::Result<Option<crate::bundle::Normalization>> {
    if cfg.train.init_from.is_empty() {
        return Ok(None);
    }
    let p = Path::new(&cfg.train.init_from).join(crate::bundle::NORMALIZATION);
    let n = crate::bundle::Normalization::load(&p).with_context(|| {
        format!(
            "key `train.init_from`: {} is not a run folder",
            cfg.train.init_from
        )
    })?;
    for s in sources {
        crate::bundle::check_data(&s.manifest, &s.dir, &n, true)
            .with_context(|| format!("train.init_from {}", cfg.train.init_from))?;
    }
    if n.features_version != Some(crate::features::FEATURES_VERSION) {
        eprintln!(
            "warning: train.init_from {}: trained on feature version {}; fine-tuning it on this dfm's version {}, where inputs changed meaning:\n{}",
            cfg.train.init_from,
            n.features_version
                .map_or("unknown (before versions were recorded)".into(), |v| v
                    .to_string()),
            crate::features::FEATURES_VERSION,
            crate::features::feature_changes_since(n.features_version.unwrap_or(1))
        );
    }
    let mut n = n;
    n.spec.max_stops = sources
        .iter()
        .map(|s| s.manifest.spec.max_stops)
        .fold(n.spec.max_stops, usize::max);
    Ok(Some(n))
}

/// The hash a model records of its training data.
fn data_hash(sources: &[Source]) -> anyhow::Result<String> {
    if let [one] = sources {
        return Ok(Manifest::hash(&one.dir)?);
    }
    let mut all = String::new();
    for s in sources {
        all.push_str(&format!("{}={}\n", s.name, Manifest::hash(&s.dir)?));
    }
    use sha2::Digest;
    Ok(crate::data::shards::hex(&sha2::Sha256::digest(
        all.as_bytes(),
    )))
}

impl Setup {
    pub fn new(cfg: Config) -> anyhow::Result<Setup> {
        let mut cfg = cfg;
        let sources = load_sources(&cfg)?;
        let (spec, stats) = match inherited_grid(&cfg, &sources)? {
            Some(n) => (n.spec, n.norm),
            None => {
                let specs: Vec<&Spec> = sources.iter().map(|s| &s.manifest.spec).collect();
                let parts: Vec<(&NormStats, f64)> = sources
                    .iter()
                    .map(|s| (&s.manifest.norm, s.weight))
                    .collect();
                (crate::time_grid::model_spec(&specs), NormStats::mix(&parts))
            }
        };
        // The run's config names the patch sizes it derived, so the model is rebuilt the same.
        cfg.model = cfg.model.for_spec(&spec);
        DfmModel::check_shapes(&cfg.model, &spec, cfg.data.image_size)?;
        let manifest_sha256 = data_hash(&sources)?;
        let norm = Arc::new(Normalizer::new(&spec, &stats, cfg.data.image_size));
        Ok(Setup {
            cfg,
            manifest_sha256,
            spec,
            stats,
            norm,
            sources,
        })
    }

    /// The primary dataset (the first source).
    pub fn primary(&self) -> &Source {
        &self.sources[0]
    }

    /// A split's loader options as the config sets them.
    fn loader_options(&self, batch_size: usize, train: bool) -> LoaderOptions {
        let cfg = &self.cfg;
        LoaderOptions {
            batch_size,
            workers: cfg.data.workers,
            prefetch: cfg.data.prefetch,
            shuffle_buffer: if train { cfg.data.shuffle_buffer } else { 0 },
            seed: cfg.run.seed,
            skip_bad: cfg.data.skip_bad,
            drop_last: train,
        }
    }

    /// The training split's batches (shuffled, seeded, full batches), drawn from the sources
    /// by weight.
    pub fn train_loader(&self) -> anyhow::Result<Mixture> {
        // With replicas, each batch the loader makes is one replica's part of a step's batch.
        let part = self.cfg.train.batch_size / self.cfg.train.replicas.max(1);
        let opts = self.loader_options(part, true);
        let mut loaders = Vec::new();
        for s in &self.sources {
            loaders.push(Loader::new(&s.dir, &s.manifest, "train", opts.clone())?);
        }
        let weights = self.sources.iter().map(|s| s.weight).collect();
        Ok(Mixture::new(loaders, weights, self.cfg.run.seed))
    }

    pub fn new_model(&self, device: &Device) -> DfmModel {
        // Seeding and the draws of the initialization hold the device generator together: a
        // device's generator is shared by every thread of the process, and another run seeding
        // it in between (two trainings in one test binary) would change these weights.
        let _held = DEVICE_SEED.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(self.cfg.run.seed);
        DfmModel::new(
            &self.cfg.model,
            &self.spec,
            self.cfg.data.image_size,
            device,
        )
    }
}

/// Per-step host-side randomness: modality dropout and pretraining masks.
pub fn token_masks(
    b: &Batch,
    model: &DfmModel,
    cfg: &Config,
    rng: &mut ChaCha8Rng,
    train: bool,
    device: &Device,
) -> TokenMasks {
    let bs = b.len();
    let p = if train {
        cfg.model.modality_dropout
    } else {
        0.0
    };
    let nm = crate::model::MODALITIES.len();
    let always_off: Vec<bool> = crate::model::MODALITIES
        .iter()
        .map(|m| cfg.train.drop_modalities.iter().any(|d| d == m))
        .collect();
    // A model without video draws nothing for it, so its stream is what it was before video.
    let has = |m: usize| m != Modality::Video.index() || model.enc.video.is_some();
    let keep: Vec<f32> = (0..bs * nm)
        .map(|i| {
            if !has(i % nm) {
                return 0.0;
            }
            let dropped = rng.r#gen::<f64>() < p;
            if dropped || always_off[i % nm] {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let keep = Tensor::from_data(TensorData::new(keep, [bs, nm]), device);
    if cfg.train.objective != Objective::Pretrain {
        return TokenMasks::keep(keep);
    }
    // Next-patch view: a share of the samples hide the latest third of their history and IMU
    // tokens (predicting what comes next from what came before, the shape of the downstream
    // forecast); the others hide tokens at random (reconstruction).
    let forecast: Vec<bool> = (0..bs)
        .map(|_| weight(cfg, "next") > 0.0 && rng.r#gen::<f64>() < NEXT_VIEW_SHARE)
        .collect();
    let mut hide = |n: usize, temporal: bool| {
        let tail = n.div_ceil(3);
        let (mut hide, mut next) = (vec![0.0f32; bs * n], vec![0.0f32; bs * n]);
        for s in 0..bs {
            for t in 0..n {
                let i = s * n + t;
                if temporal && forecast[s] {
                    if t >= n - tail {
                        (hide[i], next[i]) = (1.0, 1.0);
                    }
                } else if rng.r#gen::<f64>() < MASK_RATE {
                    hide[i] = 1.0;
                }
            }
        }
        let t = |v: Vec<f32>| Some(Tensor::<2>::from_data(TensorData::new(v, [bs, n]), device));
        (t(hide), t(next))
    };
    let (hide_hist, next_hist) = hide(model.enc.hist.tokens(), true);
    let (hide_imu, next_imu) = hide(model.enc.imu.tokens(), true);
    let (hide_stops, _) = hide(b.stops.dims()[1], false);
    // Pretraining keeps every modality: hiding does the masking.
    TokenMasks {
        keep: keep.ones_like(),
        hide_hist,
        hide_imu,
        hide_stops,
        next_hist,
        next_imu,
    }
}

/// Share of the tokens hidden at random for reconstruction (as in masked autoencoders of
/// sequences; 30% keeps enough context at ~6 tokens per modality).
const MASK_RATE: f64 = 0.3;
/// Share of pretraining samples that hide their latest patches instead (when `next` counts).
const NEXT_VIEW_SHARE: f64 = 0.5;

fn weight(cfg: &Config, head: &str) -> f64 {
    cfg.train.loss_weights.get(head).copied().unwrap_or(1.0)
}

/// Contrastive views of a batch: the fused summary of its history alone and of everything
/// else (IMU, map, stops, context) alone, each projected for alignment: ([B, d], [B, d]).
fn alignment_views(model: &DfmModel, b: &Batch) -> (Tensor<2>, Tensor<2>) {
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
    Ready(Batch),
    Host(Vec<crate::features::Features>),
}

/// What one device computed on one batch.
struct Micro {
    loss: f64,
    parts: BTreeMap<&'static str, f64>,
    grads: Option<GradientsParams>,
    samples: usize,
}

/// The most devices one step can use: each (micro-batch, device) pair gets its own mask stream
/// `micro * MAX_DEVICES + device`, so streams never collide (and a one-device run keeps the
/// streams it always had).
const MAX_DEVICES: usize = 64;

/// Forward and backward of one batch. Dropout and masks are seeded by (run seed, micro-batch,
/// device), so a resumed run draws exactly what an uninterrupted one draws.
fn micro_step(
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

/// Data parallelism as burn's multi-device strategy does it: the model is forked to each device,
/// each device computes the gradients of its own batch on its own thread, and the optimizer sums
/// them (`ModuleOptimizer::step_multi`). With `passes` (the CPU, `train.replicas`) device `i`
/// computes in pool `i`.
fn parallel_micro_step(
    model: &DfmModel,
    work: Vec<Vec<crate::features::Features>>,
    cfg: &Config,
    micro: usize,
    devices: &[Device],
    scale: f32,
    passes: Option<&crate::passes::Passes>,
) -> Vec<Micro> {
    let mut work: Vec<_> = work.into_iter().zip(devices).enumerate().collect();
    // burn draws a parameter's initial value when it is first used, from the device's generator
    // as it stands then; a fork would draw them at once, in another order. So while the model
    // is still uninitialized, the first device's micro-batch runs on the model itself, first,
    // and the model starts from the weights one device would draw.
    let mut first = Vec::new();
    if !initialized(model) && !work.is_empty() {
        let (i, (feats, d)) = work.remove(0);
        let b = FeatureBatcher.batch(feats, d);
        first.push(micro_step(model, &b, cfg, micro, i, d, scale));
    }
    let rest: Vec<Micro> = std::thread::scope(|sc| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|(i, (feats, d))| {
                let replica = replica_of(model, d);
                sc.spawn(move || {
                    let run = || {
                        let b = FeatureBatcher.batch(feats, d);
                        micro_step(&replica, &b, cfg, micro, i, d, scale)
                    };
                    match passes {
                        Some(p) => p.install(i, run),
                        None => run(),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("device thread panicked"))
            .collect()
    });
    first.extend(rest);
    first
}

/// A copy of `model` on `device` for a replica or another device. Its parameters are detached
/// before `fork`: burn's `fork` records its copy as an operation under each trainable parameter
/// of the model it copies, and the records under parameters that get no gradient (the
/// pretraining decoders in a supervised run) were never freed. Every backward pass walked the
/// growing list: a run with two replicas slowed from 600 to 113 samples/s over 3,100 steps.
fn replica_of(model: &DfmModel, device: &Device) -> DfmModel {
    struct Detach;
    impl burn::module::ModuleMapper for Detach {
        fn map_float<const D: usize>(
            &mut self,
            p: burn::module::Param<Tensor<D>>,
        ) -> burn::module::Param<Tensor<D>> {
            p.map(|t| {
                let grad = t.is_require_grad();
                let t = t.detach();
                if grad { t.require_grad() } else { t }
            })
        }
    }
    model.clone().map(&mut Detach).fork(device)
}

/// Whether every parameter of `model` holds its value (burn initializes them on first use).
fn initialized(model: &DfmModel) -> bool {
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

/// One rayon pool per device, each with its share of the cores, where every device is the CPU
/// (`train.replicas`); None otherwise.
pub(crate) fn replica_pools(devices: &[Device]) -> anyhow::Result<Option<crate::passes::Passes>> {
    if devices.len() < 2 || !devices.iter().all(crate::model::dropout::on_cpu) {
        return Ok(None);
    }
    let plan = crate::passes::plan_for(devices.len(), &devices[0]);
    Ok(Some(crate::passes::Passes::new(plan)?))
}

/// The autodiff devices of a run: `train.devices` when it names more than one, else `device`;
/// each set to compute in `train.precision`.
fn training_devices(cfg: &Config, device: &Device) -> anyhow::Result<Vec<Device>> {
    let p = cfg.train.precision;
    let replicas = cfg.train.replicas;
    if replicas > 1 {
        anyhow::ensure!(
            crate::model::dropout::on_cpu(device),
            "train.replicas = {replicas} splits batches on the CPU (flex); on a GPU use train.devices"
        );
        println!("{replicas} replicas on the CPU: each computes 1/{replicas} of every batch");
        return Ok(vec![
            with_precision(device.clone(), p)?.autodiff();
            replicas
        ]);
    }
    if cfg.train.devices.len() <= 1 {
        return Ok(vec![with_precision(device.clone(), p)?.autodiff()]);
    }
    let mut out = Vec::new();
    for d in &cfg.train.devices {
        let (choice, index) = crate::device::parse(d)?;
        let sel = crate::device::select(choice, index)
            .with_context(|| format!("train.devices: `{d}`"))?;
        println!("data-parallel device {}: {}", out.len(), sel.description);
        out.push(with_precision(sel.device, p)?.autodiff());
    }
    Ok(out)
}

/// `device` set to compute in `precision` (burn: its default float type), or an error saying
/// why it cannot: flex computes in f32; a GPU may store a type it cannot compute in.
pub fn with_precision(
    mut device: Device,
    precision: crate::config::Precision,
) -> anyhow::Result<Device> {
    use burn::tensor::FloatDType;
    let dtype = match precision {
        crate::config::Precision::F32 => return Ok(device),
        // burn 0.22 keeps parameters and optimizer state in the device's float type: in f16,
        // AdamW's epsilon (1e-8) and small second moments underflow to 0 and the first steps
        // divide by zero (on lavapipe the loss was non-finite at step 5). bf16 has f32's range.
        crate::config::Precision::F16 => anyhow::bail!(
            "train.precision = \"f16\" does not train: burn 0.22 has no f32 master weights or \
             loss scaling, and AdamW's state underflows in f16; use \"bf16\" on a GPU that \
             computes in it, or \"f32\""
        ),
        crate::config::Precision::Bf16 => FloatDType::BF16,
    };
    let name = format!("{precision:?}").to_lowercase();
    anyhow::ensure!(
        !crate::model::dropout::on_cpu(&device),
        "train.precision = \"{name}\" needs a GPU device (wgpu or cuda): flex computes in f32"
    );
    anyhow::ensure!(
        device.supports_dtype(dtype),
        "train.precision = \"{name}\": this device does not compute in {name} (it may store it, \
         not do arithmetic in it); use f32"
    );
    device.configure(dtype).map_err(|e| {
        anyhow::anyhow!(
            "train.precision = \"{name}\": {e:?} (the device's float type is set before its \
             first tensor; run training in a fresh process)"
        )
    })?;
    Ok(device)
}

fn step_rng(seed: u64, micro: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(hash(seed, "step", &[micro as u64]))
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f32>() as f64
}

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
fn weighted_loss(setup: &Setup, by_source: &[(String, f64)]) -> Option<f64> {
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
fn validation_loss(
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

fn append_metrics(path: &Path, v: &serde_json::Value) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{v}")?;
    Ok(())
}

/// Drops metric lines past `step` (after resuming from a checkpoint at `step`).
fn truncate_metrics(path: &Path, step: usize) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = crate::util::read_text_bounded(path, crate::util::limits::METRICS)?;
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::util::write_atomic(path, kept.as_bytes())
}

pub fn optimizer(cfg: &Config) -> ModuleOptimizer {
    let clip = (cfg.train.grad_clip > 0.0)
        .then(|| GradientClippingConfig::Norm(cfg.train.grad_clip as f32));
    AdamWConfig::new()
        .with_weight_decay(cfg.train.weight_decay as f32)
        .with_grad_clipping(clip)
        .init()
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

/// Keys a resumed run may change (`--resume RUN --set KEY=VALUE`): how long it runs, how it logs
/// and checkpoints, how it reads data, where it runs, how it is evaluated. The others (the
/// model's shapes, the data, the optimizer, the objective) are fixed by its checkpoints.
const RESUMABLE_KEYS: [&str; 14] = [
    "run.device",
    "run.track",
    "run.track_flush_s",
    "run.track_artifact_root",
    "train.epochs",
    "train.max_steps",
    "train.checkpoint_every",
    "train.keep_last",
    "train.log_every",
    "train.on_nan",
    "data.workers",
    "data.prefetch",
    "data.skip_bad",
    "eval.",
];

/// Dotted keys and values of a config, for comparing two.
pub(crate) fn flat_keys(cfg: &Config) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match v.as_object() {
            Some(o) => {
                for (k, x) in o {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            None => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", &serde_json::to_value(cfg)?, &mut out);
    Ok(out)
}

/// The config a resumed run goes on with: the config its newest checkpoint was trained with
/// (`ckpt-N/config.toml`; the run's `config.toml` for checkpoints saved before they kept one),
/// with the changes `given` makes to it (`--set train.epochs=8`, or an edit of the run's
/// `config.toml`) when they are among [`RESUMABLE_KEYS`]; they are recorded in the run's
/// `config.toml`. Any other change is refused, naming the key and the checkpoint: a run's
/// checkpoints are never overwritten by another model.
pub fn resume_config(run_dir: &Path, given: Config) -> anyhow::Result<Config> {
    let p = run_dir.join("config.toml");
    let newest = checkpoint::list(run_dir)?
        .pop()
        .map(|(_, d)| d.join("config.toml"))
        .filter(|c| c.is_file());
    let from = newest.as_deref().unwrap_or(&p);
    let mut saved = Config::load(Some(from), &[])
        .with_context(|| format!("--resume: {} is not a run folder", run_dir.display()))?;
    saved.run.dir = run_dir.display().to_string();
    let mut given = given;
    given.run.dir = saved.run.dir.clone();
    let (a, b) = (flat_keys(&saved)?, flat_keys(&given)?);
    let changed: Vec<&String> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    let fixed: Vec<String> = changed
        .iter()
        .filter(|k| {
            !RESUMABLE_KEYS
                .iter()
                .any(|r| **k == r || (r.ends_with('.') && k.starts_with(r)))
        })
        .map(|k| {
            let was = a.get(*k).map_or("unset".into(), |v| v.to_string());
            format!("`{k}` (it was {was}, now {})", b[*k])
        })
        .collect();
    if !fixed.is_empty() {
        bail!(
            "--resume: {} cannot change when a run resumes: {} was trained with the values it was and does not fit the new ones. Keys a resumed run may change: {}; start a new run (another run.dir) for the rest, or put {} back as it was",
            fixed.join(", "),
            from.parent()
                .filter(|_| newest.is_some())
                .map_or(format!("the run in {}", run_dir.display()), |d| d
                    .display()
                    .to_string()),
            RESUMABLE_KEYS.join(", "),
            p.display()
        );
    }
    if changed.is_empty() {
        saved.run.track_credentials = given.run.track_credentials.clone();
        if !given.run.track_credentials.is_empty() {
            // A config.toml written before credentials were kept out of it loses them now.
            crate::util::write_atomic(&p, given.to_toml()?.as_bytes())?;
        }
        return Ok(saved);
    }
    println!(
        "resume applies: {}",
        changed
            .iter()
            .map(|k| format!("{k} = {}", b[*k]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::util::write_atomic(&p, given.to_toml()?.as_bytes())?;
    Ok(given)
}

/// Takes the run folder's lock (an OS file lock on `RUN/.lock`, released when the process
/// ends, even by `kill -9`): two trainings of one run folder at once would corrupt it.
pub fn lock_run(run_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let p = run_dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("cannot open {}", p.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by another dfm process (it holds {}); wait for it to finish or stop it",
            run_dir.display(),
            p.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::anyhow!("cannot lock {}: {e}", p.display()))
        }
    }
}

/// Trains a run. With `resume`, continues the run in `cfg.run_dir()` from its last complete
/// checkpoint (see [`trainer::Trainer`]).
pub fn train(cfg: Config, resume: bool, device: &Device, quiet: bool) -> anyhow::Result<Outcome> {
    trainer::Trainer::start(cfg, resume, device, quiet)?.run()
}

/// The run's ridge baseline: fitted on the training split when the run starts (lambda chosen
/// on `val`) and saved as `ridge.json`; read back on resume. None for data without trajectories
/// and for pretraining runs.
fn ensure_ridge(setup: &Setup, run_dir: &Path, quiet: bool) -> anyhow::Result<Option<Ridge>> {
    if setup.cfg.train.objective != Objective::Supervised {
        return Ok(None);
    }
    if let Some(r) = Ridge::load_from(run_dir)? {
        return Ok(Some(r));
    }
    let t = Instant::now();
    let fitted = ridge::fit_on(
        &setup.primary().dir,
        &setup.primary().manifest,
        &setup.norm,
        setup.cfg.data.workers,
    )?;
    if let Some(r) = &fitted {
        crate::util::write_atomic(&run_dir.join(ridge::FILE), &serde_json::to_vec(r)?)?;
        if !quiet {
            println!(
                "ridge baseline fitted on {} training samples (lambda {:e}) in {:.1} s",
                r.train_samples,
                r.lambda,
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(fitted)
}

fn end_of_epoch(
    model: &DfmModel,
    setup: &Setup,
    device: &Device,
    state: &mut TrainState,
    epoch: usize,
    run_dir: &Path,
    metrics_path: &Path,
    quiet: bool,
) -> anyhow::Result<Option<serde_json::Value>> {
    let by_source = validate_sources(model, setup, device)?;
    let val = weighted_loss(setup, &by_source);
    state.val_loss = val;
    let mut logged = None;
    if let Some(v) = val {
        let mut line = json!({"step": state.step, "epoch": epoch, "val_loss": v});
        if setup.sources.len() > 1 {
            line["val_loss_by_source"] =
                json!(by_source.iter().cloned().collect::<BTreeMap<_, _>>());
        }
        append_metrics(metrics_path, &line)?;
        logged = Some(line);
        if !quiet {
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
            checkpoint::save_best(run_dir, model, state)?;
        }
    }
    Ok(logged)
}
