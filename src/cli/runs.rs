//! `dfm runs list|compare` and `dfm sweep`.

use super::ranges::*;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum RunsCmd {
    /// One line per run folder under DIR: steps, best validation loss, headline test metrics,
    /// status.
    List {
        #[arg(default_value = "checkpoints")]
        dir: PathBuf,
    },
    /// Runs' evaluations side by side with their differences from the first, and one PNG
    /// overlaying their loss curves.
    Compare {
        #[arg(num_args = 2.., required = true)]
        runs: Vec<PathBuf>,
        /// The overlay plot (default: compare.png in the runs' common folder).
        #[arg(long)]
        png: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct SweepArgs {
    /// The config every run starts from.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// An axis of the grid: --grid train.lr=1e-3,3e-4 (repeatable; every combination runs).
    #[arg(long = "grid", value_name = "KEY=V1,V2", required = true)]
    pub grid: Vec<crate::sweep::Axis>,
    /// Run each combination with seeds 1..=N (default: the config's seed).
    #[arg(value_parser = usize_in(1, 100), long)]
    pub seeds: Option<usize>,
    /// Override a config key in every run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", num_args = 1..)]
    pub set: Vec<String>,
    /// The sweep's folder (default: checkpoints/sweep-<run.name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one `dfm train` command per run (for an array job) instead of running them.
    #[arg(long)]
    pub print: bool,
    /// Log every run to this MLflow server.
    #[arg(long, value_name = "URI")]
    pub track: Option<String>,
    /// auto | flex | wgpu | cuda[:N] (default: the config's run.device).
    #[arg(long)]
    pub device: Option<String>,
}

pub fn runs(cmd: RunsCmd) -> anyhow::Result<()> {
    match cmd {
        RunsCmd::List { dir } => {
            let found = crate::runs::find(&dir)?;
            // A broken run folder is reported and the others listed.
            let runs: Vec<_> = found
                .iter()
                .filter_map(|d| {
                    crate::runs::summarize(d)
                        .map_err(|e| eprintln!("warning: {e:#}; not listed"))
                        .ok()
                })
                .collect();
            print!("{}", crate::runs::render_list(&dir, &runs));
            if runs.is_empty() {
                println!("(no run folders under {})", dir.display());
            }
            Ok(())
        }
        RunsCmd::Compare { runs, png } => compare(&runs, png),
    }
}

fn compare(dirs: &[PathBuf], png: Option<PathBuf>) -> anyhow::Result<()> {
    let runs = dirs
        .iter()
        .map(|d| crate::runs::summarize(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, r) in runs.iter().enumerate() {
        println!("{}: {}", i + 1, r.dir.display());
    }
    print!("{}", crate::runs::render_compare(&runs));
    let png = png.unwrap_or_else(|| crate::runs::common_folder(dirs).join("compare.png"));
    crate::runs::overlay_losses(&runs, &png)?;
    println!("loss curves overlaid in {}", png.display());
    Ok(())
}

pub fn sweep(a: SweepArgs) -> anyhow::Result<()> {
    let mut sets = a.set.clone();
    if let Some(uri) = &a.track {
        sets.push(format!("run.track={uri}"));
    }
    let base = crate::config::Config::load(a.config.as_deref(), &sets)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("checkpoints").join(format!("sweep-{}", base.run.name)));
    let seeds: Vec<u64> = (1..=a.seeds.unwrap_or(0) as u64).collect();
    let planned = crate::sweep::plan(a.config.as_deref(), &sets, &a.grid, &seeds, &out)?;
    if a.print {
        for p in &planned {
            println!("{}", crate::sweep::command(a.config.as_deref(), p));
        }
        return Ok(());
    }
    let sel = crate::device::choose(a.device.as_deref(), Some(base.run.device))?;
    println!("device: {}", sel.description);
    println!("sweep of {} runs in {}", planned.len(), out.display());
    let failed = crate::sweep::run(a.config.as_deref(), &planned, &sel.device);
    let dirs: Vec<PathBuf> = planned
        .iter()
        .map(|p| p.dir.clone())
        .filter(|d| !failed.iter().any(|(f, _)| f == d))
        .collect();
    if dirs.len() >= 2 {
        compare(&dirs, Some(out.join("compare.png")))?;
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} sweep runs failed: {}",
        failed.len(),
        planned.len(),
        failed
            .iter()
            .map(|(d, e)| format!("{} ({e:#})", d.display()))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}
