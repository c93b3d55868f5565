//! `dfm train`, `dfm quickstart`, `dfm export`.

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// Experiment config (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config key: --set train.lr=3e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", num_args = 1..)]
    pub set: Vec<String>,
    /// auto | flex | wgpu | cuda[:N] (default: the config's run.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Continue the run in this folder from its last complete checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// Log the run to this MLflow tracking server (sets run.track; default: the config's, else
    /// $MLFLOW_TRACKING_URI).
    #[arg(long, value_name = "URI")]
    pub track: Option<String>,
}

#[derive(Args)]
pub struct QuickstartArgs {
    #[arg(long, default_value = "configs/quickstart.toml")]
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE", num_args = 1..)]
    pub set: Vec<String>,
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Export the best model by validation loss (the default).
    #[arg(long, conflicts_with_all = ["step", "last"])]
    pub best: bool,
    /// Export the last checkpoint.
    #[arg(long)]
    pub last: bool,
    /// Export the checkpoint of this step.
    #[arg(long)]
    pub step: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    /// Log the bundle's files to this MLflow server, into the run's MLflow run when it has one
    /// there (default: $MLFLOW_TRACKING_URI).
    #[arg(long, value_name = "URI")]
    pub track: Option<String>,
}

/// `dfm train`: a new run from a config, or `--resume RUN` (with `--set` keys a resumed run may
/// change).
pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let mut a = a;
    if let Some(uri) = &a.track {
        a.set.push(format!("run.track={uri}"));
    }
    let (cfg, place) = match &a.resume {
        Some(run) => {
            // A run in a bucket is pulled to its local copy first.
            let place = crate::train::RunPlace::open(run)?;
            let p = place.local.join("config.toml");
            anyhow::ensure!(
                !place.is_remote() || p.is_file(),
                "--resume {}: no run there (it holds no config.toml)",
                crate::store::scrub(&run.display().to_string())
            );
            let mut c =
                crate::config::Config::load(Some(&p), &a.set).map_err(|e| place.named(e))?;
            c.run.dir = run.display().to_string();
            (c, Some(place))
        }
        None => (
            crate::config::Config::load(a.config.as_deref(), &a.set)?,
            None,
        ),
    };
    let sel = crate::device::choose(a.device.as_deref(), Some(cfg.run.device))?;
    println!("device: {}", sel.description);
    let out = match place {
        Some(place) => crate::train::train_at(place, cfg, true, &sel.device, false)?,
        None => crate::train::train(cfg, false, &sel.device, false)?,
    };
    println!(
        "run written to {} ({} steps, {:.0} train samples/s)",
        out.run_dir.display(),
        out.steps,
        out.samples_per_s
    );
    if let Some(r) = out.report {
        print!("{}", r.render());
    }
    Ok(())
}

/// `dfm quickstart`: simulate (if needed), train (or continue an unfinished run), evaluate,
/// export.
pub fn quickstart(a: QuickstartArgs) -> anyhow::Result<()> {
    let cfg = crate::config::Config::load(Some(&a.config), &a.set)?;
    let sel = crate::device::choose(a.device.as_deref(), Some(cfg.run.device))?;
    println!("device: {}", sel.description);
    crate::quickstart::run(cfg, &sel.device)
}

/// `dfm export`: a run's best (or last, or a given step's) checkpoint as a bundle.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let which = match (a.step, a.last) {
        (Some(n), _) => crate::bundle::Which::Step(n),
        (None, true) => crate::bundle::Which::Last,
        _ => crate::bundle::Which::Best,
    };
    // A run or bundle at a URL is read and written through local copies.
    crate::bundle::remote::export_via(&a.run, &a.out, |run, out| {
        let m = crate::bundle::export(run, which, out)?;
        println!(
            "exported step {} of {} to {} ({} files, hashes in bundle.json)",
            m.step,
            crate::store::scrub(&a.run.display().to_string()),
            crate::store::scrub(&a.out.display().to_string()),
            m.files.len() + 1
        );
        let cfg = crate::config::Config::load(Some(&run.join("config.toml")), &[])?;
        if let Some(target) = crate::track::TrackingServer::from_flag(a.track.as_deref(), &cfg)? {
            println!("{}", crate::track::log_bundle(&target, run, out)?.render());
        }
        Ok(())
    })
}
