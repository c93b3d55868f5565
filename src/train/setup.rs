//! A run's data: its datasets (`data.path` or `data.sources`, simulated first when the config
//! says so), the model's time grid and normalization, and the loaders and new models built
//! from them.

use crate::config::Config;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::{ChannelStats, Manifest};
use crate::data::mixture::Mixture;
use crate::data::sample::Spec;
use crate::features::Featurizer;
use crate::model::DfmModel;
use anyhow::{Context, bail};
use burn::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The dataset folder of a config; simulates it first when missing and `data.synth_routes > 0`.
pub fn ensure_dataset(cfg: &Config) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(&cfg.data.path);
    if crate::store::exists(&Manifest::path(&dir))? {
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
pub(super) static DEVICE_SEED: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    /// The normalization statistics (`ChannelStats::mix` of the sources).
    pub stats: ChannelStats,
    pub norm: Arc<Featurizer>,
    /// Every dataset of the run, the primary first.
    pub sources: Vec<Source>,
}

/// The run's datasets: the primary (simulated first when missing and the config says so),
/// then the other `data.sources`, each of which must exist.
fn load_sources(cfg: &Config) -> anyhow::Result<Vec<Source>> {
    if !cfg.data.cache_dir.is_empty() {
        crate::store::cache::configure(Some(Path::new(&cfg.data.cache_dir)), cfg.data.cache_gb)?;
    }
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
) -> anyhow::Result<Option<crate::normalization::NormalizationFile>> {
    if cfg.train.init_from.is_empty() {
        return Ok(None);
    }
    let p = Path::new(&cfg.train.init_from).join(crate::normalization::NORMALIZATION);
    let n = crate::normalization::NormalizationFile::load(&p).with_context(|| {
        format!(
            "key `train.init_from`: {} is not a run folder",
            cfg.train.init_from
        )
    })?;
    for s in sources {
        crate::normalization::check_data(&s.manifest, &s.dir, &n, true)
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
        return Manifest::hash(&one.dir);
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
                let parts: Vec<(&ChannelStats, f64)> = sources
                    .iter()
                    .map(|s| (&s.manifest.norm, s.weight))
                    .collect();
                (
                    crate::time_grid::model_spec(&specs),
                    ChannelStats::mix(&parts),
                )
            }
        };
        // The run's config names the patch sizes it derived, so the model is rebuilt the same.
        cfg.model = cfg.model.for_spec(&spec);
        DfmModel::check_shapes(&cfg.model, &spec, cfg.data.image_size)?;
        let manifest_sha256 = data_hash(&sources)?;
        let mut norm = Featurizer::new(&spec, &stats, cfg.data.image_size);
        if cfg.model.retrieval {
            let dirs: Vec<_> = sources
                .iter()
                .map(|s| (s.dir.as_path(), &s.manifest))
                .collect();
            let index = super::retrieval_index::build(&cfg, &spec, &dirs)?;
            norm = norm.with_retrieval(Arc::new(index));
        }
        let norm = Arc::new(norm);
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
    pub(super) fn loader_options(&self, batch_size: usize, train: bool) -> LoaderOptions {
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
