//! `dfm eval`: a model on a split of a dataset, next to the baselines; with `--ablation`, once
//! more per masked modality.

use super::ranges::*;
use crate::bundle::LoadedModel;
use crate::data::manifest::Manifest;
use crate::eval::EvalOptions;
use crate::eval::baselines::TrainStats;
use crate::eval::report::{EvalReport as Report, ModelInfo};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder (its best checkpoint) or an export bundle.
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset folder (default: the one the model was trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// train | val | test | test_days | all
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Write the report as JSON (schema in README).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write PNG plots into this folder.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Mask a modality out: history | imu | image | stops | context | video (repeatable).
    #[arg(long)]
    pub drop: Vec<String>,
    /// Evaluate with each single modality masked out, next to the full model.
    #[arg(long)]
    pub ablation: bool,
    /// Final-displacement threshold of the miss rate, meters (default: the model's eval config).
    #[arg(value_parser = f64_in(0.001, 1e6), long)]
    pub miss_threshold: Option<f64>,
    #[arg(value_parser = usize_in(1, 65_536), long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(value_parser = usize_in(1, 256), long, default_value_t = 2)]
    pub workers: usize,
    /// auto | flex | wgpu | cuda[:N] (default: auto).
    #[arg(long)]
    pub device: Option<String>,
    /// Evaluate even when the data's feature statistics differ from the model's (out of domain).
    #[arg(long)]
    pub allow_shift: bool,
    /// Log the evaluation to this MLflow server: into the run's MLflow run when the model is a
    /// run folder tracked there, else a new run (default: $MLFLOW_TRACKING_URI).
    #[arg(long, value_name = "URI")]
    pub track: Option<String>,
}

/// What every evaluation of one `dfm eval` shares.
struct Ctx<'a> {
    m: &'a LoadedModel,
    norm: std::sync::Arc<crate::features::Featurizer>,
    data: &'a Path,
    manifest: &'a Manifest,
    stats: &'a TrainStats,
    device: &'a burn::tensor::Device,
}

impl Ctx<'_> {
    /// One evaluation with these options.
    fn evaluate(&self, o: &EvalOptions) -> anyhow::Result<Report> {
        let info = ModelInfo {
            source: self.m.description.clone(),
            step: self.m.step,
            dropped: o.drop.clone(),
            support_guard_mps: self.m.model.support_guard_mps(&self.norm),
        };
        let inputs = crate::eval::EvalInputs {
            model: &self.m.model,
            norm: &self.norm,
            data: self.data,
            manifest: self.manifest,
            stats: self.stats,
            device: self.device,
        };
        let (r, _) = crate::eval::evaluate(&inputs, info, o)?;
        Ok(r)
    }
}

pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let sel = crate::device::choose(a.device.as_deref(), None)?;
    eprintln!("device: {}", sel.description);
    let m = crate::bundle::load_trained(&a.model, &sel.device)?;
    let data = a
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(&m.cfg.data.path));
    let manifest = Manifest::load(&data)?;
    m.check(&manifest, &data, a.allow_shift)?;
    let mut stats = crate::eval::train_stats(&data, &manifest, a.workers)?;
    stats.ridge = m.ridge.clone().map(std::sync::Arc::new);
    let o = EvalOptions {
        split: a.split.clone(),
        batch_size: a.batch_size,
        miss_threshold_m: a.miss_threshold.unwrap_or(m.cfg.eval.miss_threshold_m),
        workers: a.workers,
        drop: a.drop.clone(),
        plots: a.plots.clone(),
    };
    o.check()?;
    let ctx = Ctx {
        m: &m,
        norm: std::sync::Arc::new(m.featurizer.clone()),
        data: &data,
        manifest: &manifest,
        stats: &stats,
        device: &sel.device,
    };
    let full = ctx.evaluate(&o)?;
    print!("{}", full.render());
    if let Some(p) = &a.plots {
        println!("\nplots written to {}", p.display());
    }
    let mut json = serde_json::to_value(&full)?;
    if a.ablation {
        let rows = ablation(&ctx, &o)?;
        println!();
        print!("{}", crate::eval::ablation::render(&full, &rows));
        json["ablation"] = serde_json::to_value(&rows)?;
    }
    if let Some(p) = &a.json {
        crate::util::write_json(p, &json)?;
        println!("report written to {}", p.display());
    }
    if let Some(target) = crate::track::TrackingServer::from_flag(a.track.as_deref(), &m.cfg)? {
        track(&target, &a, &data, &json, m.step)?;
    }
    Ok(())
}

/// Logs an evaluation to MLflow: its numbers as metrics named `<split>.<path>` (prefixed by the
/// data folder's name when it is not the model's own data), the report and plots as artifacts.
fn track(
    target: &crate::track::TrackingServer,
    a: &EvalArgs,
    data: &Path,
    json: &serde_json::Value,
    step: Option<usize>,
) -> anyhow::Result<()> {
    let run_dir = a
        .model
        .join("config.toml")
        .is_file()
        .then_some(a.model.as_path());
    let own = crate::config::Config::load(Some(&a.model.join("config.toml")), &[])
        .ok()
        .is_some_and(|c| Path::new(&c.data.path) == data);
    let prefix = match own {
        true => a.split.clone(),
        false => format!(
            "{}.{}",
            crate::config::folder_name(&data.to_string_lossy()),
            a.split
        ),
    };
    let name = format!("eval {}", a.model.display());
    let t = crate::track::attach(target, run_dir, &name)?;
    t.metrics(&prefix, step.unwrap_or(0) as u64, json);
    let report = std::env::temp_dir().join(format!("dfm-eval-{}.json", std::process::id()));
    crate::util::write_json(&report, json)?;
    t.artifact(&report, &format!("eval/{prefix}.json"));
    if let Some(p) = &a.plots {
        t.artifact_dir(p, &format!("eval/{prefix}_plots"));
    }
    let s = t.finish(true);
    let _ = std::fs::remove_file(&report);
    println!("{}", s.render());
    Ok(())
}

/// The evaluation once per modality masked out.
fn ablation(ctx: &Ctx, o: &EvalOptions) -> anyhow::Result<Vec<Report>> {
    let has_video = ctx.m.model.enc.video.is_some();
    crate::modality::MODALITIES
        .iter()
        .filter(|d| has_video || **d != crate::modality::Modality::Video.name())
        .map(|d| {
            let mut od = o.clone();
            od.drop = vec![d.to_string()];
            od.plots = None;
            ctx.evaluate(&od)
        })
        .collect()
}
