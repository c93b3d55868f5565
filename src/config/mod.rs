//! Experiment configs: TOML files with `run`, `data`, `model`, `train` and `eval` sections.
//! Every key has a default; `--set section.key=value` overrides any of them; an unknown key or a
//! bad value is an error that names the key and what is allowed.

mod check;
mod load;
#[cfg(test)]
mod tests;
pub mod tracking_uri;

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
    pub track_credentials: tracking_uri::Credentials,
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
    /// A local folder that keeps the shards read from an object store (a size-bounded cache,
    /// least recently used out first); empty: none (`DFM_STORE_CACHE_DIR` for other commands).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cache_dir: String,
    /// The cache's size, GB, in (0, 1e6].
    #[serde(skip_serializing_if = "is_default_cache_gb")]
    pub cache_gb: f64,
}

fn is_default_cache_gb(gb: &f64) -> bool {
    *gb == DEFAULT_CACHE_GB
}

/// The shard cache's size unless a config says otherwise, GB.
pub const DEFAULT_CACHE_GB: f64 = 50.0;

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
            cache_dir: String::new(),
            cache_gb: DEFAULT_CACHE_GB,
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
    /// Read what the fleet's past trips did near each sample (`features::retrieval`): the
    /// training windows whose history ended within `retrieval_radius_m`, heading the same way
    /// at a similar speed, as one token.
    pub retrieval: bool,
    pub retrieval_radius_m: f64,
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
            retrieval: false,
            retrieval_radius_m: 100.0,
        }
    }
}

/// Tokens a derived patch size aims at for a series (history, IMU).
pub const AUTO_PATCH_TOKENS: usize = 6;

/// The divisor of `len` whose token count `len / p` is closest to `AUTO_PATCH_TOKENS` (fewer
/// tokens on a tie): any length gets a patch that divides it.
pub fn auto_patch(len: usize) -> usize {
    (1..=len.max(1))
        .filter(|p| len.max(1).is_multiple_of(*p))
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

/// The optimizer (`crate::optim`): burn's AdamW, one parameter tensor at a time, or the same
/// arithmetic over all parameters at once (fewer, larger kernels: for GPUs).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Adamw,
    AdamwFused,
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
    /// `adamw` (default) or `adamw_fused`; a resume may switch (the state is the same).
    pub optimizer: OptimizerKind,
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

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            objective: Objective::Supervised,
            epochs: 4,
            max_steps: 0,
            batch_size: 32,
            lr: 1e-3,
            optimizer: OptimizerKind::default(),
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

impl Config {
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
