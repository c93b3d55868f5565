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
    /// Train a model from a config file.
    Train(NotYet),
    /// Evaluate a model on held-out routes.
    Eval(NotYet),
    /// Export a trained model as a self-contained bundle.
    Export(NotYet),
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
        Cmd::Train(_) => not_yet("train", 3),
        Cmd::Eval(_) => not_yet("eval", 4),
        Cmd::Export(_) => not_yet("export", 6),
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
