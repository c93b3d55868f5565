//! Experiment configs: TOML files with `run`, `data`, `model`, `train` and `eval` sections.
//! Every key has a default; `--set section.key=value` overrides any of them; an unknown key or a
//! bad value is an error that names the key and what is allowed.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub run: RunConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// A GPU adapter if one exists (CUDA when built with it, else wgpu), otherwise flex.
    Auto,
    /// burn's pure-Rust CPU backend.
    Flex,
    Wgpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "flex" | "cpu" => Ok(DeviceChoice::Flex),
            "wgpu" => Ok(DeviceChoice::Wgpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            o => Err(format!(
                "unknown device `{o}`; allowed: auto, flex, wgpu, cuda"
            )),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Name of the run; the run folder defaults to `checkpoints/<name>`.
    pub name: String,
    /// Where the run is written (empty: `checkpoints/<name>`).
    pub dir: String,
    pub seed: u64,
    pub device: DeviceChoice,
    /// An MLflow tracking server to log the run to (`--track`; empty: the environment's
    /// `MLFLOW_TRACKING_URI`, else no tracking).
    pub track: String,
    /// The MLflow experiment the run is logged in.
    pub experiment: String,
    /// How long the end of a run waits for queued tracking events, seconds.
    pub track_flush_s: f64,
    /// A local folder under which dfm may write a tracking server's local artifact root (a
    /// server started with `--no-serve-artifacts` on a shared file system); empty: never.
    pub track_artifact_root: String,
    /// Credentials that came in `track`'s URI: used for this process, never written.
    #[serde(skip)]
    pub track_credentials: crate::track::auth::Credentials,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            name: "run".into(),
            dir: String::new(),
            seed: 42,
            device: DeviceChoice::Auto,
            track: String::new(),
            experiment: "dfm".into(),
            track_flush_s: 30.0,
            track_artifact_root: String::new(),
            track_credentials: Default::default(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset folder (holding `manifest.json`).
    pub path: String,
    /// When `path` holds no dataset, simulate one with this many routes (0: fail instead).
    pub synth_routes: usize,
    pub synth_seed: u64,
    /// Simulate dashcam clips too (`dfm data synth --video`: 8 frames of 32 px over the last
    /// 3.5 s), when the dataset is simulated.
    pub synth_video: bool,
    pub workers: usize,
    pub prefetch: usize,
    pub shuffle_buffer: usize,
    /// Side of the image fed to the model (rasters are resized to it).
    pub image_size: usize,
    pub skip_bad: bool,
    /// Several datasets trained together (a mixture); the first is the primary: the model's
    /// time grid starts from its sampling, its training split fits the ridge baseline, and
    /// `data.path` names it. Empty: `data.path` alone.
    pub sources: Vec<SourceConfig>,
}

/// One dataset of a mixture (`[[data.sources]]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Dataset folder (holding `manifest.json`).
    pub path: String,
    /// Share of the training batches drawn from this source (relative to the others' weights).
    #[serde(default = "one")]
    pub weight: f64,
    /// Name in metrics and reports (default: the folder's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// Most datasets one mixture may hold.
pub const MAX_SOURCES: usize = 16;

impl SourceConfig {
    /// The source's name: given, or its folder's.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| folder_name(&self.path))
    }
}

/// The last component of a dataset path (the default name of a source).
pub fn folder_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
        .to_string()
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            path: "datasets/quickstart".into(),
            synth_routes: 0,
            synth_seed: 1,
            synth_video: false,
            workers: 2,
            prefetch: 4,
            shuffle_buffer: 2048,
            image_size: 32,
            skip_bad: false,
            sources: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    /// Feed-forward width as a multiple of d_model.
    pub ff_mult: usize,
    pub dropout: f64,
    /// Trajectory modes K.
    pub modes: usize,
    /// Image patch side in pixels.
    pub image_patch: usize,
    /// GPS fixes per history token; 0 (the default) derives it from the dataset's history
    /// length (see `ModelConfig::for_spec`).
    pub history_patch: usize,
    /// IMU rows per IMU token; 0 (the default) derives it from the dataset's IMU length.
    pub imu_patch: usize,
    /// Probability of dropping each modality of a training sample.
    pub modality_dropout: f64,
    /// Start the next-stop pointer from the rule "same zone, then neighbouring zone, then
    /// nearest" (`zones::rule_key`; "same zone, then nearest" where zone ids do not follow the
    /// Amazon convention): a learned scale
    /// times `-ln(1 + the stop's rank under the rule)` is added to its logits.
    pub next_stop_prior: bool,
    /// Give each trajectory offset a second part in units of the history's own motion (the
    /// decoders' relative outputs times the sample's motion scale): a linear model of the
    /// history scales its answer with the speed; this lets the modes do the same.
    pub relative_offsets: bool,
    /// At inference (evaluation, prediction, serving), shrink the most likely trajectory's
    /// learned correction towards constant velocity for histories moving faster than the
    /// training data covers: fully learned up to the training histories' 99th percentile of
    /// motion (or a fine-tune's initial model's, where larger), constant velocity from twice that
    /// (`model::support_factor`). Training fits the correction everywhere.
    pub support_guard: bool,
    /// Video tubelets (ViViT-style): frames and pixels a side per token, when the dataset has
    /// clips.
    pub video_tubelet: usize,
    pub video_patch: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            d_model: 64,
            layers: 2,
            heads: 4,
            ff_mult: 4,
            dropout: 0.1,
            modes: 6,
            image_patch: 8,
            history_patch: 0,
            imu_patch: 0,
            modality_dropout: 0.1,
            next_stop_prior: false,
            relative_offsets: false,
            support_guard: false,
            video_tubelet: 4,
            video_patch: 8,
        }
    }
}

/// Tokens a derived patch size aims at for a series (history, IMU).
pub const AUTO_PATCH_TOKENS: usize = 6;

/// The divisor of `len` whose token count `len / p` is closest to `AUTO_PATCH_TOKENS` (fewer
/// tokens on a tie): any length gets a patch that divides it.
pub fn auto_patch(len: usize) -> usize {
    (1..=len.max(1))
        .filter(|p| len.max(1) % p == 0)
        .min_by_key(|p| {
            let t = len.max(1) / p;
            (t.abs_diff(AUTO_PATCH_TOKENS), t)
        })
        .unwrap_or(1)
}

impl ModelConfig {
    /// This config with derived patch sizes (`0`) filled in for a dataset's shapes.
    pub fn for_spec(&self, spec: &crate::data::sample::Spec) -> ModelConfig {
        let mut c = self.clone();
        if c.history_patch == 0 {
            c.history_patch = auto_patch(spec.history_len);
        }
        if c.imu_patch == 0 {
            c.imu_patch = auto_patch(spec.imu_len);
        }
        c
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    Supervised,
    Pretrain,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnNan {
    Stop,
    Skip,
}

/// The float type a run computes and stores its model in. burn 0.22 sets it per device (every
/// float tensor, the parameters and the optimizer state included); it has no mixed precision
/// with f32 master weights and no loss scaling. GPU backends only, where the device computes in
/// that type; flex computes in f32.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub objective: Objective,
    pub epochs: usize,
    /// Stop after this many optimizer steps (0: run all epochs).
    pub max_steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    pub grad_clip: f64,
    pub grad_accum: usize,
    pub checkpoint_every: usize,
    pub keep_last: usize,
    pub log_every: usize,
    /// A run folder to initialize the encoders from (pretrain -> finetune).
    pub init_from: String,
    pub freeze_encoders: bool,
    pub on_nan: OnNan,
    /// Devices for data-parallel training (empty: `run.device`).
    pub devices: Vec<String>,
    /// On the CPU, parts each batch is split into, computed side by side (each on its own
    /// cores); the step's gradient is their mean. 1: one part. flex's kernels use more cores
    /// for little within one pass, so 2 parts train 1.6-1.7x faster on 2 cores.
    pub replicas: usize,
    /// Modalities always masked out in training (to study what each input can do alone).
    pub drop_modalities: Vec<String>,
    pub loss_weights: BTreeMap<String, f64>,
    /// f32 (default), or f16 / bf16 on a GPU that computes in it (see [`Precision`]).
    pub precision: Precision,
    /// Probability that a training sample is mirrored about its heading (`data::augment`).
    pub mirror: f64,
    /// Decay of an exponential moving average of the weights (`train::ema`), 0: off. With it,
    /// validation, `best/` and so every evaluation and export use the averaged weights.
    pub ema: f64,
}

pub const LOSS_HEADS: [&str; 10] = [
    "traj",
    "point",
    "mode",
    "eta",
    "on_time",
    "delivered",
    "next_stop",
    "recon",
    "next",
    "align",
];

impl TrainConfig {
    /// `replicas`: in range, dividing the batch, not with several devices.
    fn validate_replicas(&self) -> anyhow::Result<()> {
        int_in("train.replicas", self.replicas, 1, 64)?;
        if self.batch_size % self.replicas != 0 {
            bail!(
                "key `train.replicas`: {} does not divide train.batch_size {} (each replica computes an equal part of the batch)",
                self.replicas,
                self.batch_size
            );
        }
        if self.replicas > 1 && self.devices.len() > 1 {
            bail!(
                "key `train.replicas`: set it or `train.devices`, not both (replicas split a batch on the CPU; devices take one batch each)"
            );
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            objective: Objective::Supervised,
            epochs: 4,
            max_steps: 0,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 0.01,
            warmup_steps: 100,
            grad_clip: 1.0,
            grad_accum: 1,
            checkpoint_every: 200,
            keep_last: 3,
            log_every: 50,
            init_from: String::new(),
            freeze_encoders: false,
            on_nan: OnNan::Stop,
            devices: Vec::new(),
            replicas: 1,
            drop_modalities: Vec::new(),
            loss_weights: LOSS_HEADS.iter().map(|h| (h.to_string(), 1.0)).collect(),
            precision: Precision::F32,
            mirror: 0.0,
            ema: 0.0,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub split: String,
    pub batch_size: usize,
    /// Final-displacement threshold of the miss rate, meters.
    pub miss_threshold_m: f64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            split: "test".into(),
            batch_size: 64,
            miss_threshold_m: 2.0,
        }
    }
}

/// With `data.sources` and no `data.path`, `data.path` names the first source.
fn default_path_to_first_source(table: &mut toml::Table) {
    let Some(data) = table.get_mut("data").and_then(|d| d.as_table_mut()) else {
        return;
    };
    if data.contains_key("path") {
        return;
    }
    let first = data
        .get("sources")
        .and_then(|s| s.as_array())
        .and_then(|a| a.first())
        .and_then(|f| f.get("path"))
        .cloned();
    if let Some(p) = first {
        data.insert("path".into(), p);
    }
}

/// Parses `a.b=value`: the value as a TOML value when it is one (`3e-4`, `true`, `[1, 2]`,
/// `"x"`), else as a plain string.
fn parse_override(s: &str) -> anyhow::Result<(Vec<String>, toml::Value)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("--set `{s}`: expected section.key=value"))?;
    let path: Vec<String> = k.trim().split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        bail!("--set `{s}`: bad key `{k}`");
    }
    let v = v.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => toml::Value::String(v.to_string()),
    };
    Ok((path, value))
}

fn apply(root: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    let mut t = root;
    for (i, k) in path[..path.len() - 1].iter().enumerate() {
        let e = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        t = e.as_table_mut().with_context(|| {
            format!(
                "--set {}: `{}` is not a section",
                path.join("."),
                path[..=i].join(".")
            )
        })?;
    }
    t.insert(path[path.len() - 1].clone(), value);
    Ok(())
}

/// An integer key's value inside [lo, hi], or an error naming the key.
fn int_in(key: &str, v: usize, lo: usize, hi: usize) -> anyhow::Result<()> {
    if !(lo..=hi).contains(&v) {
        bail!("key `{key}`: {v} is outside [{lo}, {hi}]");
    }
    Ok(())
}

/// A real key's value finite and inside [lo, hi], or an error naming the key.
fn real_in(key: &str, v: f64, lo: f64, hi: f64) -> anyhow::Result<()> {
    if !(v.is_finite() && (lo..=hi).contains(&v)) {
        bail!("key `{key}`: {v} is outside [{lo}, {hi}]");
    }
    Ok(())
}

impl Config {
    /// Loads a config file (or the defaults when `path` is None), applies `--set` overrides and
    /// validates the result.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> anyhow::Result<Config> {
        let (table, origin) = match path {
            Some(p) => {
                let text = crate::util::read_text_bounded(p, crate::util::limits::SMALL)
                    .with_context(|| format!("cannot read config {}", p.display()))?;
                let t: toml::Table =
                    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                (t, p.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        Self::from_table(table, &origin, overrides)
    }

    /// Parses a config's text (`origin` names it in errors), validated.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        let t: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Self::from_table(t, origin, &[])
    }

    fn from_table(
        mut table: toml::Table,
        origin: &str,
        overrides: &[String],
    ) -> anyhow::Result<Config> {
        for o in overrides {
            let (k, v) = parse_override(o)?;
            apply(&mut table, &k, v)?;
        }
        default_path_to_first_source(&mut table);
        let mut cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                anyhow::anyhow!("{origin}: key `{key}`: {}", e.into_inner())
            })?;
        let (uri, creds) = crate::track::auth::Credentials::split(&cfg.run.track);
        cfg.run.track = uri;
        cfg.run.track_credentials = creds;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(cfg)
    }

    /// `data.sources`: at most `MAX_SOURCES`, each with a path and a positive weight, names
    /// unique and plain (they name files), the first at `data.path`.
    fn validate_sources(&self) -> anyhow::Result<()> {
        let src = &self.data.sources;
        if src.len() > MAX_SOURCES {
            bail!(
                "key `data.sources`: {} sources, at most {MAX_SOURCES}",
                src.len()
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in src.iter().enumerate() {
            let key = format!("data.sources[{i}]");
            if s.path.is_empty() {
                bail!("key `{key}.path`: must not be empty");
            }
            if !(s.weight.is_finite() && s.weight > 0.0 && s.weight <= 1e6) {
                bail!("key `{key}.weight`: {} is outside (0, 1e6]", s.weight);
            }
            let name = s.name();
            if !crate::util::plain_file_name(&name) || name.starts_with('.') {
                bail!("key `{key}.name`: {name:?} must be a plain name (letters, digits, - _ .)");
            }
            if !names.insert(name.clone()) {
                bail!("key `{key}.name`: {name:?} names two sources (give each a `name`)");
            }
        }
        if let Some(first) = src.first()
            && first.path != self.data.path
        {
            bail!(
                "key `data.path`: {:?} is not the first source's path {:?} (with data.sources, data.path names the first)",
                self.data.path,
                first.path
            );
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        // Every number a user can set has a range, named with its key.
        self.validate_data()?;
        self.validate_model()?;
        self.validate_train()?;
        self.validate_eval()?;
        self.validate_run()
    }

    fn validate_data(&self) -> anyhow::Result<()> {
        let d = &self.data;
        int_in("data.synth_routes", d.synth_routes, 0, 10_000_000)?;
        int_in("data.workers", d.workers, 1, 256)?;
        int_in("data.prefetch", d.prefetch, 1, 1024)?;
        int_in("data.shuffle_buffer", d.shuffle_buffer, 0, 10_000_000)?;
        int_in("data.image_size", d.image_size, 8, 1024)?;
        self.validate_sources()
    }

    fn validate_model(&self) -> anyhow::Result<()> {
        let m = &self.model;
        let int = int_in;
        int("model.d_model", m.d_model, 1, 8192)?;
        int("model.layers", m.layers, 1, 128)?;
        int("model.heads", m.heads, 1, 256)?;
        int("model.ff_mult", m.ff_mult, 1, 64)?;
        int("model.modes", m.modes, 1, 64)?;
        int("model.image_patch", m.image_patch, 1, self.data.image_size)?;
        // 0: derive from the data.
        int("model.history_patch", m.history_patch, 0, 100_000)?;
        int("model.imu_patch", m.imu_patch, 0, 100_000)?;
        let video = (crate::data::video::MAX_FRAMES, crate::data::video::MAX_SIDE);
        int("model.video_tubelet", m.video_tubelet, 1, video.0)?;
        int("model.video_patch", m.video_patch, 1, video.1)?;
        if m.d_model % m.heads != 0 {
            bail!(
                "key `model.d_model`: {} is not divisible by model.heads = {}",
                m.d_model,
                m.heads
            );
        }
        if self.data.image_size % m.image_patch != 0 {
            bail!(
                "key `model.image_patch`: {} does not divide data.image_size = {}",
                m.image_patch,
                self.data.image_size
            );
        }
        for (key, v) in [
            ("model.dropout", m.dropout),
            ("model.modality_dropout", m.modality_dropout),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("key `{key}`: {v} is outside [0, 1)");
            }
        }
        Ok(())
    }

    fn validate_train(&self) -> anyhow::Result<()> {
        let t = &self.train;
        let (int, real) = (int_in, real_in);
        const BIG: usize = 1_000_000_000;
        int("train.epochs", t.epochs, 1, 1_000_000)?;
        int("train.max_steps", t.max_steps, 0, BIG)?;
        int("train.batch_size", t.batch_size, 1, 65_536)?;
        int("train.warmup_steps", t.warmup_steps, 0, BIG)?;
        int("train.grad_accum", t.grad_accum, 1, 4096)?;
        t.validate_replicas()?;
        int("train.checkpoint_every", t.checkpoint_every, 1, BIG)?;
        int("train.keep_last", t.keep_last, 1, 1000)?;
        int("train.log_every", t.log_every, 1, BIG)?;
        real("train.lr", t.lr, 1e-12, 1e6)?;
        real("train.weight_decay", t.weight_decay, 0.0, 10.0)?;
        real("train.grad_clip", t.grad_clip, 0.0, 1e6)?;
        real("train.mirror", t.mirror, 0.0, 1.0)?;
        real("train.ema", t.ema, 0.0, 0.99999)?;
        for (k, v) in &t.loss_weights {
            if !LOSS_HEADS.contains(&k.as_str()) {
                bail!(
                    "key `train.loss_weights.{k}`: unknown head; allowed: {}",
                    LOSS_HEADS.join(", ")
                );
            }
            real(&format!("train.loss_weights.{k}"), *v, 0.0, 1e6)?;
        }
        for d in &t.devices {
            d.split(':')
                .next()
                .unwrap_or("")
                .parse::<DeviceChoice>()
                .map_err(|e| anyhow::anyhow!("key `train.devices`: {e}"))?;
        }
        for m in &t.drop_modalities {
            if !crate::modality::MODALITIES.contains(&m.as_str()) {
                bail!(
                    "key `train.drop_modalities`: `{m}`; allowed: {}",
                    crate::modality::MODALITIES.join(", ")
                );
            }
        }
        Ok(())
    }

    fn validate_eval(&self) -> anyhow::Result<()> {
        let e = &self.eval;
        int_in("eval.batch_size", e.batch_size, 1, 65_536)?;
        real_in("eval.miss_threshold_m", e.miss_threshold_m, 1e-3, 1e6)?;
        const SPLITS: [&str; 5] = ["train", "val", "test", "test_days", "all"];
        if !SPLITS.contains(&e.split.as_str()) {
            bail!(
                "key `eval.split`: `{}`; allowed: {}",
                e.split,
                SPLITS.join(", ")
            );
        }
        Ok(())
    }

    fn validate_run(&self) -> anyhow::Result<()> {
        real_in("run.track_flush_s", self.run.track_flush_s, 0.0, 3600.0)?;
        if !self.run.track.is_empty() {
            crate::track::mlflow::check_uri(&self.run.track)
                .map_err(|e| anyhow::anyhow!("key `run.track`: {e}"))?;
        }
        let name = &self.run.name;
        let plain = !name.is_empty()
            && name.len() <= 200
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control());
        if !plain {
            bail!(
                "key `run.name`: {name:?} must be a folder name (1 to 200 bytes, no `/`, `\\` or `..`): runs go to checkpoints/<run.name>"
            );
        }
        let exp = &self.run.experiment;
        if exp.trim().is_empty() || exp.len() > 500 {
            bail!("key `run.experiment`: {exp:?} must be 1 to 500 characters");
        }
        let root = Path::new(&self.run.track_artifact_root);
        if !self.run.track_artifact_root.is_empty() && !root.is_absolute() {
            bail!(
                "key `run.track_artifact_root`: {:?} must be an absolute path",
                self.run.track_artifact_root
            );
        }
        Ok(())
    }

    /// The run folder: `run.dir`, or `checkpoints/<run.name>`.
    pub fn run_dir(&self) -> PathBuf {
        if self.run.dir.is_empty() {
            Path::new("checkpoints").join(&self.run.name)
        } else {
            PathBuf::from(&self.run.dir)
        }
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped config parses and passes validation; the foundation family shares one model.
    #[test]
    fn shipped_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Config::load(Some(&p), &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 10, "{n} configs");
        let model = |f: &str| Config::load(Some(&dir.join(f)), &[]).unwrap().model;
        for f in [
            "foundation-pretrain.toml",
            "finetune-fleet.toml",
            "finetune-lmrc.toml",
        ] {
            assert_eq!(model(f), model("foundation.toml"), "{f}");
        }
    }

    #[test]
    fn overrides_apply_and_types_parse() {
        let c = Config::load(
            None,
            &[
                "train.lr=3e-4".into(),
                "data.path=/tmp/x".into(),
                "run.device=flex".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.lr, 3e-4);
        assert_eq!(c.data.path, "/tmp/x");
        assert_eq!(c.run.device, DeviceChoice::Flex);
        assert_eq!(c.run_dir(), PathBuf::from("checkpoints/run"));
    }

    #[test]
    fn every_number_has_a_range_named_by_its_key() {
        for (set, key) in [
            ("data.workers=0", "data.workers"),
            ("data.workers=100000", "data.workers"),
            ("data.image_size=100000", "data.image_size"),
            ("model.modes=1000", "model.modes"),
            ("model.d_model=0", "model.d_model"),
            ("train.batch_size=0", "train.batch_size"),
            ("train.epochs=0", "train.epochs"),
            ("train.lr=inf", "train.lr"),
            ("train.lr=nan", "train.lr"),
            ("train.lr=0", "train.lr"),
            ("train.weight_decay=-1", "train.weight_decay"),
            ("train.grad_clip=nan", "train.grad_clip"),
            ("train.mirror=1.5", "train.mirror"),
            ("train.ema=1", "train.ema"),
            ("train.loss_weights.point=1e9", "train.loss_weights.point"),
            ("eval.miss_threshold_m=0", "eval.miss_threshold_m"),
            ("eval.batch_size=0", "eval.batch_size"),
        ] {
            let e = Config::load(None, &[set.to_string()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("outside"), "{set}: {e}");
        }
    }

    #[test]
    fn run_names_are_folder_names_and_tracking_keys_are_checked() {
        for bad in [
            "run.name=\"\"",
            "run.name=\"..\"",
            "run.name=\"../x\"",
            "run.name=\"/etc\"",
        ] {
            let e = Config::load(None, &[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("run.name") && e.contains("folder name"),
                "{bad}: {e}"
            );
        }
        assert!(Config::load(None, &["run.name=\"lr 3e-4\"".into()]).is_ok());
        let e = Config::load(None, &["run.track_artifact_root=\"rel/dir\"".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("run.track_artifact_root") && e.contains("absolute"),
            "{e}"
        );
        let c = Config::load(None, &["run.track=\"http://u:pw@127.0.0.1:5000\"".into()]).unwrap();
        assert_eq!(c.run.track, "http://127.0.0.1:5000");
        assert!(!c.run.track_credentials.is_empty());
        assert!(!c.to_toml().unwrap().contains("pw"));
    }

    #[test]
    fn zero_intervals_are_refused_and_patches_derive() {
        for key in ["train.log_every", "train.checkpoint_every"] {
            let e = Config::load(None, &[format!("{key}=0")])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("outside [1,"), "{e}");
        }
        assert_eq!(auto_patch(12), 2);
        assert_eq!(auto_patch(30), 5);
        assert_eq!(auto_patch(7), 1);
        assert_eq!(auto_patch(1), 1);
        assert_eq!(auto_patch(250), 50);
        let spec = crate::data::sample::Spec {
            history_len: 6,
            imu_len: 12,
            ..Default::default()
        };
        let c = ModelConfig::default().for_spec(&spec);
        assert_eq!((c.history_patch, c.imu_patch), (1, 2));
        let set = ModelConfig {
            history_patch: 3,
            ..Default::default()
        };
        assert_eq!(set.for_spec(&spec).history_patch, 3, "a set patch is kept");
    }

    #[test]
    fn unknown_key_names_key_and_allowed() {
        let e = Config::load(None, &["train.lrr=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train") && e.contains("lrr") && e.contains("`lr`"),
            "{e}"
        );
        let e = Config::load(None, &["run.device=tpu".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("run.device") && e.contains("wgpu"), "{e}");
        let e = Config::load(None, &["model.heads=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.d_model"), "{e}");
        let e = Config::load(None, &["train.loss_weights.foo=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.loss_weights.foo") && e.contains("next_stop"),
            "{e}"
        );
    }

    /// `data.sources`: the first names `data.path`; weights, names and the count are checked,
    /// naming the entry.
    #[test]
    fn sources_are_checked_and_the_first_is_the_path() {
        let c = Config::load(
            None,
            &[r#"data.sources=[{path = "a/geo"}, {path = "b", weight = 2.0}]"#.into()],
        )
        .unwrap();
        assert_eq!(c.data.path, "a/geo");
        assert_eq!(c.data.sources[0].name(), "geo");
        assert_eq!(c.data.sources[0].weight, 1.0);
        for (set, want) in [
            (
                r#"data.sources=[{path = "a", weight = 0.0}]"#,
                "data.sources[0].weight",
            ),
            (
                r#"data.sources=[{path = "a"}, {path = "x/a"}]"#,
                "data.sources[1].name",
            ),
            (
                r#"data.sources=[{path = "a", name = "../up"}]"#,
                "data.sources[0].name",
            ),
            (r#"data.sources=[{path = ""}]"#, "data.sources[0].path"),
            (r#"data.sources=[{path = "a", colour = 1}]"#, "colour"),
        ] {
            let e = Config::load(None, &[set.to_string()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{set}: {e}");
        }
        let e = Config::load(
            None,
            &[
                "data.path=elsewhere".into(),
                r#"data.sources=[{path = "a"}]"#.into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.path") && e.contains("first source"), "{e}");
    }
}
