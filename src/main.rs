//! The `dfm` command line.

use clap::{Args, Parser, Subcommand};
use dfm::data::synth::SynthConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dfm",
    version,
    about = "Delivery foundation-model trainer: simulate or import delivery data, train, evaluate, export, serve"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make, import and check datasets.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
    /// Train a model from a config file (or continue a run with --resume).
    Train(TrainArgs),
    /// Evaluate a model on held-out routes, next to the baselines.
    Eval(EvalArgs),
    /// Export a trained model as a self-contained bundle.
    Export(ExportArgs),
    /// The main job: simulate a delivery world, train the quickstart model, evaluate it on
    /// held-out routes and export it.
    Quickstart(QuickstartArgs),
    /// Predict for samples in a JSON-lines file.
    Predict(NotYet),
    /// Serve a model over HTTP.
    Serve(NotYet),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// Experiment config (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key: --set train.lr=3e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// auto | flex | wgpu | cuda[:N] (default: the config's run.device).
    #[arg(long)]
    device: Option<String>,
    /// Continue the run in this folder from its last complete checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// A run folder (its best checkpoint) or an export bundle.
    #[arg(long)]
    model: PathBuf,
    /// Dataset folder (default: the one the model was trained on).
    #[arg(long)]
    data: Option<PathBuf>,
    /// train | val | test | test_days | all
    #[arg(long, default_value = "test")]
    split: String,
    /// Write the report as JSON (schema in README).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write PNG plots into this folder.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Mask a modality out: history | imu | image | stops | context (repeatable).
    #[arg(long)]
    drop: Vec<String>,
    /// Evaluate with each single modality masked out, next to the full model.
    #[arg(long)]
    ablation: bool,
    /// Final-displacement threshold of the miss rate, meters (default: the model's eval config).
    #[arg(long)]
    miss_threshold: Option<f64>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Evaluate even when the data's feature statistics differ from the model's (out of domain).
    #[arg(long)]
    allow_shift: bool,
}

#[derive(Args)]
struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// Export the best model by validation loss (the default).
    #[arg(long, conflicts_with_all = ["step", "last"])]
    best: bool,
    /// Export the last checkpoint.
    #[arg(long)]
    last: bool,
    /// Export the checkpoint of this step.
    #[arg(long)]
    step: Option<usize>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct QuickstartArgs {
    #[arg(long, default_value = "configs/quickstart.toml")]
    config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    device: Option<String>,
}

#[derive(Subcommand)]
enum DataCmd {
    /// Simulate a delivery world into a sharded dataset (deterministic for a seed).
    Synth(SynthArgs),
    /// Validate every record of a dataset and print its counts and coverage.
    Inspect(InspectArgs),
}

#[derive(Args)]
struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 300)]
    routes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Samples per shard.
    #[arg(long, default_value_t = 1000)]
    shard_size: usize,
    /// Mean seconds between decision points on a route.
    #[arg(long)]
    sample_every: Option<f64>,
    /// Replace a dataset already in the folder.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// Dataset folder.
    dir: PathBuf,
    /// Skip bad records, count them and write them to the report instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Where `--skip-bad` writes the bad records (JSON lines).
    #[arg(long, default_value = "bad_records.jsonl")]
    report: PathBuf,
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Input pipeline throughput (read, decode, features, batches) per worker count.
    Loader(LoaderArgs),
    /// Training step throughput and MFU (not built yet).
    Train(NotYet),
    /// Inference latency (not built yet).
    Infer(NotYet),
    /// Serving latency and throughput (not built yet).
    Serve(NotYet),
}

#[derive(Args)]
struct LoaderArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Stop each measurement after this many samples (0: the whole split).
    #[arg(long, default_value_t = 0)]
    max_samples: usize,
    #[arg(long, default_value = "flex")]
    device: String,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A command that is not built yet: it says so and exits non-zero.
#[derive(Args)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

fn not_yet(what: &str, issue: u32) -> anyhow::Result<()> {
    anyhow::bail!("`dfm {what}` is not built yet (tracked in issue {issue})")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Data {
            cmd: DataCmd::Synth(a),
        } => {
            let mut cfg = SynthConfig {
                routes: a.routes,
                seed: a.seed,
                shard_size: a.shard_size,
                ..Default::default()
            };
            if let Some(s) = a.sample_every {
                cfg.sample_every_s = s;
            }
            let t = std::time::Instant::now();
            let m = dfm::data::synth::generate(&a.out, &cfg, a.force)?;
            let shards: usize = m.splits.values().map(|s| s.shards.len()).sum();
            println!(
                "wrote {} samples from {} routes in {} shards to {} ({:.1} s)",
                m.coverage.samples,
                cfg.routes,
                shards,
                a.out.display(),
                t.elapsed().as_secs_f64()
            );
            for (name, s) in &m.splits {
                println!(
                    "  {name:<10} {:>7} samples {:>5} routes",
                    s.samples,
                    s.routes.len()
                );
            }
            Ok(())
        }
        Cmd::Data {
            cmd: DataCmd::Inspect(a),
        } => {
            let rep = dfm::data::inspect::inspect(&a.dir, a.skip_bad, a.workers)?;
            print!("{}", rep.render());
            if a.skip_bad && !rep.bad.is_empty() {
                let mut s = String::new();
                for b in &rep.bad {
                    s.push_str(&serde_json::to_string(b)?);
                    s.push('\n');
                }
                dfm::util::write_atomic(&a.report, s.as_bytes())?;
                println!("bad records written to {}", a.report.display());
            }
            if !rep.shared_routes.is_empty() {
                anyhow::bail!(
                    "{}: splits share {} route ids",
                    a.dir.display(),
                    rep.shared_routes.len()
                );
            }
            Ok(())
        }
        Cmd::Bench {
            cmd: BenchCmd::Loader(a),
        } => {
            let (choice, index) = dfm::device::parse(&a.device)?;
            let sel = dfm::device::select(choice, index)?;
            eprintln!("device: {}", sel.description);
            let res = dfm::bench::loader::run(&dfm::bench::loader::Options {
                data: &a.data,
                split: &a.split,
                workers: &a.workers,
                batch_size: a.batch_size,
                image_size: a.image_size,
                max_samples: a.max_samples,
                device: sel.device,
            })?;
            print!("{}", res.render());
            if let Some(p) = a.json {
                dfm::util::write_atomic(&p, serde_json::to_string_pretty(&res)?.as_bytes())?;
            }
            Ok(())
        }
        Cmd::Export(a) => {
            let which = match (a.step, a.last) {
                (Some(n), _) => dfm::export::Which::Step(n),
                (None, true) => dfm::export::Which::Last,
                _ => dfm::export::Which::Best,
            };
            let m = dfm::export::export(&a.run, which, &a.out)?;
            println!(
                "exported step {} of {} to {} ({} files, hashes in bundle.json)",
                m.step,
                a.run.display(),
                a.out.display(),
                m.files.len() + 1
            );
            Ok(())
        }
        Cmd::Quickstart(a) => quickstart(a),
        Cmd::Eval(a) => eval(a),
        Cmd::Train(a) => {
            let (cfg, resume) = match &a.resume {
                Some(run) => {
                    let p = run.join("config.toml");
                    let mut c = dfm::config::Config::load(Some(&p), &a.set)?;
                    c.run.dir = run.display().to_string();
                    (c, true)
                }
                None => (
                    dfm::config::Config::load(a.config.as_deref(), &a.set)?,
                    false,
                ),
            };
            let (choice, index) = match &a.device {
                Some(d) => dfm::device::parse(d)?,
                None => (cfg.run.device, 0),
            };
            let sel = dfm::device::select(choice, index)?;
            println!("device: {}", sel.description);
            let out = dfm::train::train(cfg, resume, &sel.device, false)?;
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
        Cmd::Predict(_) => not_yet("predict", 6),
        Cmd::Serve(_) => not_yet("serve", 6),
        Cmd::Bench {
            cmd: BenchCmd::Train(_),
        } => not_yet("bench train", 7),
        Cmd::Bench {
            cmd: BenchCmd::Infer(_),
        } => not_yet("bench infer", 7),
        Cmd::Bench {
            cmd: BenchCmd::Serve(_),
        } => not_yet("bench serve", 6),
    }
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    use dfm::eval::{EvalOptions, report::ModelInfo};
    let (choice, index) = dfm::device::parse(&a.device)?;
    let sel = dfm::device::select(choice, index)?;
    eprintln!("device: {}", sel.description);
    let m = dfm::eval::source::load(&a.model, &sel.device)?;
    let data = a
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(&m.cfg.data.path));
    let manifest = dfm::data::manifest::Manifest::load(&data)?;
    m.check(&manifest, &data, a.allow_shift)?;
    let stats = dfm::eval::train_stats(&data, &manifest, a.workers)?;
    let norm = std::sync::Arc::new(m.normalizer.clone());
    let o = EvalOptions {
        split: a.split.clone(),
        batch_size: a.batch_size,
        miss_threshold_m: a.miss_threshold.unwrap_or(m.cfg.eval.miss_threshold_m),
        workers: a.workers,
        drop: a.drop.clone(),
        plots: a.plots.clone(),
    };
    o.check()?;
    let info = |dropped: Vec<String>| ModelInfo {
        source: m.description.clone(),
        step: m.step,
        dropped,
    };
    let (full, _) = dfm::eval::evaluate(
        &m.model,
        &norm,
        info(a.drop.clone()),
        &data,
        &manifest,
        &stats,
        &o,
        &sel.device,
    )?;
    print!("{}", full.render());
    if a.plots.is_some() {
        println!("\nplots written to {}", a.plots.as_ref().unwrap().display());
    }
    let mut json = serde_json::to_value(&full)?;
    if a.ablation {
        let mut rows = Vec::new();
        for d in dfm::model::MODALITIES {
            let mut od = o.clone();
            od.drop = vec![d.to_string()];
            od.plots = None;
            let (r, _) = dfm::eval::evaluate(
                &m.model,
                &norm,
                info(od.drop.clone()),
                &data,
                &manifest,
                &stats,
                &od,
                &sel.device,
            )?;
            rows.push(r);
        }
        println!();
        print!("{}", dfm::eval::ablation::render(&full, &rows));
        json["ablation"] = serde_json::to_value(&rows)?;
    }
    if let Some(p) = &a.json {
        dfm::util::write_atomic(p, serde_json::to_string_pretty(&json)?.as_bytes())?;
        println!("report written to {}", p.display());
    }
    Ok(())
}

/// Simulate (if needed), train (or continue an unfinished run), evaluate, export.
fn quickstart(a: QuickstartArgs) -> anyhow::Result<()> {
    let cfg = dfm::config::Config::load(Some(&a.config), &a.set)?;
    let (choice, index) = match &a.device {
        Some(d) => dfm::device::parse(d)?,
        None => (cfg.run.device, 0),
    };
    let sel = dfm::device::select(choice, index)?;
    println!("device: {}", sel.description);
    let run = cfg.run_dir();
    let resume = !dfm::train::checkpoint::list(&run)?.is_empty();
    if resume {
        println!(
            "{} holds a run already: continuing it (delete the folder to start over)",
            run.display()
        );
    }
    let t = std::time::Instant::now();
    let out = dfm::train::train(cfg, resume, &sel.device, false)?;
    if out.samples_per_s > 0.0 {
        println!(
            "trained {} steps in {:.1} min ({:.0} samples/s)",
            out.steps,
            t.elapsed().as_secs_f64() / 60.0,
            out.samples_per_s
        );
    } else {
        println!("the run was already complete ({} steps)", out.steps);
    }
    if let Some(r) = &out.report {
        print!("{}", r.render());
    }
    let bundle = out.run_dir.join("export");
    let m = dfm::export::export(&out.run_dir, dfm::export::Which::Best, &bundle)?;
    println!(
        "exported the best model (step {}) to {}",
        m.step,
        bundle.display()
    );
    println!(
        "run folder: {} (config.toml, metrics.jsonl, loss.png, eval_test.json, checkpoints)",
        out.run_dir.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
