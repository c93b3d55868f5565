//! The `dfm` command line.

use clap::{Args, Parser, Subcommand};
use dfm::data::synth::SynthConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc keeps freed tensor buffers for reuse. With the system allocator every large tensor
/// of a training step was a fresh `mmap`, paid again in page faults and zeroing: mimalloc made
/// the quickstart's training step about 5% faster on flex (README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Predict(PredictArgs),
    /// Serve a model over HTTP.
    Serve(ServeArgs),
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
    #[arg(long = "set", value_name = "KEY=VALUE", num_args = 1..)]
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
    #[arg(value_parser = f64_in(0.001, 1e6), long)]
    miss_threshold: Option<f64>,
    #[arg(value_parser = usize_in(1, 65_536), long, default_value_t = 64)]
    batch_size: usize,
    #[arg(value_parser = usize_in(1, 256), long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Evaluate even when the data's feature statistics differ from the model's (out of domain).
    #[arg(long)]
    allow_shift: bool,
}

#[derive(Args)]
struct PredictArgs {
    /// An export bundle or a run folder.
    #[arg(long)]
    model: PathBuf,
    /// JSON lines, one sample per line (images inline as png_base64, IMU rows inline).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the predictions (JSON lines); standard output by default.
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(value_parser = usize_in(1, 65_536), long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value = "flex")]
    device: String,
}

#[derive(Args)]
struct ServeArgs {
    /// An export bundle or a run folder.
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    #[arg(value_parser = usize_in(1, 4096), long, default_value_t = 32)]
    max_batch: usize,
    /// How long a forward pass waits for more requests (0: it takes what is queued; requests
    /// arriving meanwhile form the next batch).
    #[arg(value_parser = u64_in(0, 10_000), long, default_value_t = 0)]
    max_wait_ms: u64,
    /// Largest request body, bytes.
    #[arg(value_parser = usize_in(1024, 1 << 30), long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Most samples in one request (413 above).
    #[arg(value_parser = usize_in(1, 100_000), long, default_value_t = 256)]
    max_samples: usize,
    /// Most samples waiting for the model, all requests together (503 with Retry-After above).
    #[arg(value_parser = usize_in(1, 10_000_000), long, default_value_t = 4096)]
    max_queue_samples: usize,
    /// Longest a request may take, milliseconds (408 after).
    #[arg(value_parser = u64_in(1, 3_600_000), long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Longest a client may take to send its request headers, milliseconds.
    #[arg(value_parser = u64_in(1, 600_000), long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Longest shutdown waits for in-flight requests, milliseconds.
    #[arg(value_parser = u64_in(0, 3_600_000), long, default_value_t = 10_000)]
    shutdown_grace_ms: u64,
    /// A file holding a bearer token that requests must present.
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[arg(long, default_value = "flex")]
    device: String,
}

#[derive(Args)]
struct SampleArgs {
    /// Dataset folder.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "test")]
    split: String,
    #[arg(value_parser = usize_in(1, 10_000_000), long, default_value_t = 10)]
    limit: usize,
    /// JSON lines of request-ready samples (images inline); standard output by default.
    #[arg(long)]
    out: Option<PathBuf>,
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
    #[arg(long = "set", value_name = "KEY=VALUE", num_args = 1..)]
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
    /// Write samples of a dataset as request-ready JSON lines (for predict and serve).
    Sample(SampleArgs),
    /// Import real data (GeoLife, GPS CSV, Amazon LMRC) into a sharded dataset.
    Import {
        #[command(subcommand)]
        cmd: ImportCmd,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// GeoLife `.plt` trees (USER/Trajectory/*.plt).
    Geolife(GeolifeArgs),
    /// A CSV of GPS fixes: trajectory_id,timestamp,lat,lon[,speed,heading].
    GpsCsv(GpsCsvArgs),
    /// Amazon Last Mile Routing Research Challenge files.
    Lmrc(LmrcArgs),
}

#[derive(Args)]
struct ImportCommon {
    /// Output dataset folder.
    #[arg(long)]
    out: PathBuf,
    /// Skip bad records (counted, listed in the report) instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Replace a dataset already in the output folder.
    #[arg(long)]
    force: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct WindowArgs {
    /// Resampling step, seconds.
    #[arg(value_parser = f64_in(0.01, 3600.0), long)]
    step: Option<f64>,
    /// Gaps longer than this (seconds) cut a trajectory.
    #[arg(value_parser = f64_in(0.01, 36_000_000.0), long)]
    max_gap: Option<f64>,
    /// Fixes of history / future per sample.
    #[arg(value_parser = usize_in(2, 10_000), long)]
    history: Option<usize>,
    #[arg(value_parser = usize_in(1, 10_000), long)]
    future: Option<usize>,
    /// Steps between consecutive windows.
    #[arg(value_parser = usize_in(1, 1_000_000), long)]
    stride: Option<usize>,
    /// Local time = UTC + this many hours (no daylight saving; prefer --tz).
    #[arg(value_parser = f64_in(-14.0, 14.0), long, conflicts_with = "tz")]
    utc_offset: Option<f64>,
    /// IANA time zone of the data, e.g. Europe/Berlin (local hours with daylight saving).
    #[arg(long)]
    tz: Option<String>,
}

impl WindowArgs {
    fn apply(&self, w: &mut dfm::data::import::WindowOptions) {
        if let Some(v) = self.step {
            w.step_s = v;
        }
        if let Some(v) = self.max_gap {
            w.max_gap_s = v;
        }
        if let Some(v) = self.history {
            w.history_len = v;
        }
        if let Some(v) = self.future {
            w.future_len = v;
        }
        if let Some(v) = self.stride {
            w.stride = v;
        }
        if let Some(v) = &self.tz {
            w.tz = Some(v.clone());
        }
        if let Some(v) = self.utc_offset {
            w.utc_offset_h = v;
            w.tz = None;
        }
    }
}

#[derive(Args)]
struct GeolifeArgs {
    /// The folder holding the user folders.
    #[arg(long = "in")]
    input: PathBuf,
    #[command(flatten)]
    common: ImportCommon,
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Args)]
struct GpsCsvArgs {
    #[arg(long = "in")]
    input: PathBuf,
    #[command(flatten)]
    common: ImportCommon,
    #[command(flatten)]
    window: WindowArgs,
    #[arg(long, default_value = "trajectory_id")]
    id_col: String,
    #[arg(long, default_value = "timestamp")]
    time_col: String,
    #[arg(long, default_value = "lat")]
    lat_col: String,
    #[arg(long, default_value = "lon")]
    lon_col: String,
    #[arg(long, default_value = "speed")]
    speed_col: String,
    #[arg(long, default_value = "heading")]
    heading_col: String,
}

#[derive(Args)]
struct LmrcArgs {
    /// The folder holding route_data.json, package_data.json, actual_sequences.json.
    #[arg(long = "in")]
    input: PathBuf,
    #[command(flatten)]
    common: ImportCommon,
    /// Travel speed assumed without travel_times.json, m/s.
    #[arg(value_parser = f64_in(0.1, 100.0), long, default_value_t = 8.0)]
    speed: f64,
    /// Most stop tokens per sample (0: all remaining stops).
    #[arg(value_parser = usize_in(0, 1024), long, default_value_t = 0)]
    max_stops: usize,
    /// Share of the routes held out for validation / test (by a hash of the route id and
    /// --seed; at least one route each when there are three or more).
    #[arg(value_parser = f64_in(0.0, 0.99), long, default_value_t = 0.1)]
    val_frac: f64,
    #[arg(value_parser = f64_in(0.0, 0.99), long, default_value_t = 0.1)]
    test_frac: f64,
    /// IANA time zone of every route (e.g. America/Chicago); default: from each route's station
    /// code (the challenge's Los Angeles, Seattle, Chicago, Austin and Boston stations).
    #[arg(long)]
    tz: Option<String>,
}

#[derive(Args)]
struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 300)]
    routes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Samples per shard.
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 1000)]
    shard_size: usize,
    /// Mean seconds between decision points on a route.
    #[arg(value_parser = f64_in(0.1, 86_400.0), long)]
    sample_every: Option<f64>,
    /// Replace a dataset already in the folder.
    #[arg(long)]
    force: bool,
    /// Sample shapes (defaults: 30 history fixes at 1 s, 15 future positions at 2 s, 300 IMU
    /// rows at 10 Hz, 8 stops). Match another dataset's shapes to pretrain for it, e.g. GeoLife:
    /// --history-len 12 --history-step 5 --future-len 12 --future-step 5 --imu-len 12 --imu-rate 0.2
    #[arg(value_parser = usize_in(2, 10_000), long)]
    history_len: Option<usize>,
    #[arg(value_parser = f32_in(0.01, 3600.0), long)]
    history_step: Option<f32>,
    #[arg(value_parser = usize_in(1, 10_000), long)]
    future_len: Option<usize>,
    #[arg(value_parser = f32_in(0.01, 3600.0), long)]
    future_step: Option<f32>,
    #[arg(value_parser = usize_in(1, 100_000), long)]
    imu_len: Option<usize>,
    #[arg(value_parser = f32_in(0.01, 10_000.0), long)]
    imu_rate: Option<f32>,
    #[arg(value_parser = usize_in(1, 1024), long)]
    max_stops: Option<usize>,
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
    #[arg(value_parser = usize_in(1, 256), long, default_value_t = 2)]
    workers: usize,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Input pipeline throughput (read, decode, features, batches) per worker count.
    Loader(LoaderArgs),
    /// Training step throughput, FLOPs, MFU against the device's matmul rate, step profile.
    Train(BenchTrainArgs),
    /// Forward latency per batch size.
    Infer(InferArgs),
    /// Serving throughput and latency at several concurrencies (server and client on loopback).
    Serve(BenchServeArgs),
}

#[derive(Args)]
struct InferArgs {
    /// An export bundle or a run folder.
    #[arg(long)]
    model: PathBuf,
    /// Samples to use (default: the model's dataset, test split).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(value_parser = usize_in(1, 65_536), long, value_delimiter = ',', default_value = "1,8,64")]
    batch_sizes: Vec<usize>,
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 50)]
    iterations: usize,
    #[arg(long, default_value = "flex")]
    device: String,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct BenchTrainArgs {
    /// Experiment config (TOML); its data and model are used (the dataset is simulated when
    /// `data.path` holds none and `data.synth_routes` is set).
    #[arg(long)]
    config: PathBuf,
    /// Override a config key (repeatable), e.g. --set train.batch_size=64.
    #[arg(long = "set", value_name = "KEY=VALUE", num_args = 1..)]
    set: Vec<String>,
    /// auto | flex | wgpu | cuda[:N] (default: the config's run.device).
    #[arg(long)]
    device: Option<String>,
    /// Timed steps (after the warm-up).
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 30)]
    steps: usize,
    #[arg(value_parser = usize_in(0, 1_000_000), long, default_value_t = 5)]
    warmup: usize,
    /// Side of the square matmul that measures the device's peak (default 1024 on the CPU,
    /// 8192 on a GPU).
    #[arg(value_parser = usize_in(1, 16_384), long)]
    matmul_size: Option<usize>,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct BenchServeArgs {
    /// An export bundle or a run folder.
    #[arg(long)]
    model: PathBuf,
    /// Samples to send (default: the model's dataset, test split).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(value_parser = usize_in(1, 1024), long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Requests per concurrency level.
    #[arg(value_parser = usize_in(1, 10_000_000), long, default_value_t = 400)]
    requests: usize,
    #[arg(value_parser = usize_in(1, 4096), long, default_value_t = 32)]
    max_batch: usize,
    /// How long a forward pass waits for more requests (0: it takes what is queued; requests
    /// arriving meanwhile form the next batch).
    #[arg(value_parser = u64_in(0, 10_000), long, default_value_t = 0)]
    max_wait_ms: u64,
    #[arg(long, default_value = "flex")]
    device: String,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct LoaderArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// Worker counts to measure.
    #[arg(value_parser = usize_in(1, 256), long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    #[arg(value_parser = usize_in(1, 65_536), long, default_value_t = 32)]
    batch_size: usize,
    #[arg(value_parser = usize_in(8, 1024), long, default_value_t = 32)]
    image_size: usize,
    /// Stop each measurement after this many samples (0: the whole split).
    #[arg(value_parser = usize_in(0, 100_000_000), long, default_value_t = 0)]
    max_samples: usize,
    #[arg(long, default_value = "flex")]
    device: String,
    #[arg(long)]
    json: Option<PathBuf>,
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
            let sp = &mut cfg.spec;
            sp.history_len = a.history_len.unwrap_or(sp.history_len);
            sp.history_step_s = a.history_step.unwrap_or(sp.history_step_s);
            sp.future_len = a.future_len.unwrap_or(sp.future_len);
            sp.future_step_s = a.future_step.unwrap_or(sp.future_step_s);
            sp.imu_len = a.imu_len.unwrap_or(sp.imu_len);
            sp.imu_rate_hz = a.imu_rate.unwrap_or(sp.imu_rate_hz);
            sp.max_stops = a.max_stops.unwrap_or(sp.max_stops);
            anyhow::ensure!(
                sp.history_len >= 2
                    && sp.future_len >= 1
                    && sp.imu_len >= 1
                    && sp.max_stops >= 1
                    && sp.history_step_s > 0.0
                    && sp.future_step_s > 0.0
                    && sp.imu_rate_hz > 0.0,
                "synth: lengths must be at least 1 (history 2) and steps and rates positive"
            );
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
            cmd: DataCmd::Import { cmd },
        } => import(cmd),
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
        Cmd::Predict(a) => predict(a),
        Cmd::Serve(a) => serve(a),
        Cmd::Data {
            cmd: DataCmd::Sample(a),
        } => {
            let m = dfm::data::manifest::Manifest::load(&a.data)?;
            let opts = dfm::data::loader::LoaderOptions {
                batch_size: 64,
                shuffle_buffer: 0,
                ..Default::default()
            };
            let loader = dfm::data::loader::Loader::new(&a.data, &m, &a.split, opts)?;
            let mut out = String::new();
            let mut n = 0;
            'outer: for b in
                loader.epoch(0, 0, std::sync::Arc::new(|s| s), std::sync::Arc::new(|b| b))
            {
                for s in b? {
                    out.push_str(&serde_json::to_string(&dfm::predict::to_request_json(&s)?)?);
                    out.push('\n');
                    n += 1;
                    if n >= a.limit {
                        break 'outer;
                    }
                }
            }
            match &a.out {
                Some(p) => dfm::util::write_atomic(p, out.as_bytes())?,
                None => print!("{out}"),
            }
            Ok(())
        }
        Cmd::Bench {
            cmd: BenchCmd::Train(a),
        } => {
            let cfg = dfm::config::Config::load(Some(&a.config), &a.set)?;
            let (choice, index) = match &a.device {
                Some(d) => dfm::device::parse(d)?,
                None => (cfg.run.device, 0),
            };
            let sel = dfm::device::select(choice, index)?;
            println!("device: {}", sel.description);
            let cpu = sel.description.starts_with("flex");
            let o = dfm::bench::train::Options {
                steps: a.steps.max(1),
                warmup: a.warmup,
                matmul_size: a.matmul_size.unwrap_or(if cpu { 1024 } else { 8192 }),
            };
            let r = dfm::bench::train::run(
                cfg,
                &a.config.display().to_string(),
                &sel.device,
                &sel.description,
                &o,
            )?;
            print!("{}", r.render());
            if let Some(j) = a.json {
                dfm::util::write_atomic(&j, serde_json::to_string_pretty(&r)?.as_bytes())?;
                println!("written to {}", j.display());
            }
            Ok(())
        }
        Cmd::Bench {
            cmd: BenchCmd::Infer(a),
        } => {
            let (choice, index) = dfm::device::parse(&a.device)?;
            let sel = dfm::device::select(choice, index)?;
            let p = dfm::predict::Predictor::new(
                dfm::eval::source::load(&a.model, &sel.device)?,
                sel.device.clone(),
            );
            let samples = bench_samples(&p, a.data.as_deref(), 64)?;
            let r = dfm::bench::infer::run(
                &p,
                &samples,
                &a.model.display().to_string(),
                &sel.description,
                &a.batch_sizes,
                a.iterations,
                &sel.device,
            )?;
            print!("{}", r.render());
            if let Some(j) = a.json {
                dfm::util::write_atomic(&j, serde_json::to_string_pretty(&r)?.as_bytes())?;
            }
            Ok(())
        }
        Cmd::Bench {
            cmd: BenchCmd::Serve(a),
        } => {
            let (choice, index) = dfm::device::parse(&a.device)?;
            let sel = dfm::device::select(choice, index)?;
            let p = dfm::predict::Predictor::new(
                dfm::eval::source::load(&a.model, &sel.device)?,
                sel.device,
            );
            let samples = bench_samples(&p, a.data.as_deref(), 64)?;
            let o = dfm::serve::ServeOptions {
                max_batch: a.max_batch,
                max_wait_ms: a.max_wait_ms,
                ..Default::default()
            };
            let r = dfm::bench::serve::run(
                p,
                &samples,
                &a.model.display().to_string(),
                &a.concurrency,
                a.requests,
                &o,
            )?;
            print!("{}", r.render());
            if let Some(j) = a.json {
                dfm::util::write_atomic(&j, serde_json::to_string_pretty(&r)?.as_bytes())?;
            }
            Ok(())
        }
    }
}

fn import(cmd: ImportCmd) -> anyhow::Result<()> {
    use dfm::data::import::{geolife, gps_csv, lmrc};
    let (report, out, skipped) = match cmd {
        ImportCmd::Geolife(a) => {
            let mut o = geolife::GeolifeOptions {
                seed: a.common.seed,
                ..Default::default()
            };
            a.window.apply(&mut o.window);
            (
                geolife::import(
                    &a.input,
                    &a.common.out,
                    &o,
                    a.common.skip_bad,
                    a.common.force,
                )?,
                a.common.out,
                a.common.skip_bad,
            )
        }
        ImportCmd::GpsCsv(a) => {
            let mut o = gps_csv::CsvOptions {
                seed: a.common.seed,
                ..Default::default()
            };
            a.window.apply(&mut o.window);
            o.columns = gps_csv::Columns {
                id: a.id_col,
                time: a.time_col,
                lat: a.lat_col,
                lon: a.lon_col,
                speed: a.speed_col,
                heading: a.heading_col,
            };
            (
                gps_csv::import(
                    &a.input,
                    &a.common.out,
                    &o,
                    a.common.skip_bad,
                    a.common.force,
                )?,
                a.common.out,
                a.common.skip_bad,
            )
        }
        ImportCmd::Lmrc(a) => {
            for (flag, v) in [("--val-frac", a.val_frac), ("--test-frac", a.test_frac)] {
                if !(0.0..1.0).contains(&v) {
                    anyhow::bail!("{flag}: {v} is outside [0, 1)");
                }
            }
            if a.val_frac + a.test_frac >= 1.0 {
                anyhow::bail!("--val-frac + --test-frac must leave routes for training");
            }
            let o = lmrc::LmrcOptions {
                seed: a.common.seed,
                speed_mps: a.speed,
                max_stops: a.max_stops,
                val_frac: a.val_frac,
                test_frac: a.test_frac,
                tz: a.tz.clone(),
                ..Default::default()
            };
            (
                lmrc::import(
                    &a.input,
                    &a.common.out,
                    &o,
                    a.common.skip_bad,
                    a.common.force,
                )?,
                a.common.out,
                a.common.skip_bad,
            )
        }
    };
    print!("{}", report.render());
    if skipped && !report.bad.is_empty() {
        let p = out.join("bad_records.txt");
        dfm::util::write_atomic(&p, (report.bad.join("\n") + "\n").as_bytes())?;
        println!("bad records listed in {}", p.display());
    }
    println!("dataset written to {}", out.display());
    Ok(())
}

/// Up to `n` samples of a dataset (default: the model's own, test split) for benchmarks.
fn bench_samples(
    p: &dfm::predict::Predictor,
    data: Option<&std::path::Path>,
    n: usize,
) -> anyhow::Result<Vec<dfm::Sample>> {
    let dir = data
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(&p.loaded.cfg.data.path));
    let m = dfm::data::manifest::Manifest::load(&dir)?;
    let split = if m.splits.contains_key("test") {
        "test"
    } else {
        "all"
    };
    let opts = dfm::data::loader::LoaderOptions {
        batch_size: n,
        shuffle_buffer: 0,
        ..Default::default()
    };
    let l = dfm::data::loader::Loader::new(&dir, &m, split, opts)?;
    let first = l
        .epoch(0, 0, std::sync::Arc::new(|s| s), std::sync::Arc::new(|b| b))
        .next();
    Ok(first.transpose()?.unwrap_or_default())
}

fn predict(a: PredictArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let (choice, index) = dfm::device::parse(&a.device)?;
    let sel = dfm::device::select(choice, index)?;
    let p =
        dfm::predict::Predictor::new(dfm::eval::source::load(&a.model, &sel.device)?, sel.device);
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let s = dfm::predict::parse_sample(line.as_bytes(), p.max_image_side())
            .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", a.input.display(), i + 1))?;
        samples.push(s);
    }
    let mut out = String::new();
    for chunk in samples.chunks(a.batch_size.max(1)) {
        for pred in p.predict(chunk) {
            out.push_str(&serde_json::to_string(&pred)?);
            out.push('\n');
        }
    }
    match &a.output {
        Some(path) => {
            dfm::util::write_atomic(path, out.as_bytes())?;
            eprintln!(
                "{} predictions written to {}",
                samples.len(),
                path.display()
            );
        }
        None => print!("{out}"),
    }
    Ok(())
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let (choice, index) = dfm::device::parse(&a.device)?;
    let sel = dfm::device::select(choice, index)?;
    let p =
        dfm::predict::Predictor::new(dfm::eval::source::load(&a.model, &sel.device)?, sel.device);
    let token = match &a.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .trim()
                .to_string();
            anyhow::ensure!(!t.is_empty(), "{}: the token file is empty", f.display());
            Some(t)
        }
        None => None,
    };
    if !a.addr.ip().is_loopback() {
        eprintln!(
            "warning: listening on {} (not loopback): anyone who can reach it can call the model{}",
            a.addr,
            if token.is_none() {
                "; consider --token-file"
            } else {
                ""
            }
        );
    }
    let o = dfm::serve::ServeOptions {
        addr: a.addr,
        max_batch: a.max_batch,
        max_wait_ms: a.max_wait_ms,
        max_body_bytes: a.max_body_bytes,
        max_samples: a.max_samples,
        max_queue_samples: a.max_queue_samples,
        request_timeout_ms: a.request_timeout_ms,
        header_timeout_ms: a.header_timeout_ms,
        shutdown_grace_ms: a.shutdown_grace_ms,
        token,
    };
    o.validate()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(o.addr)
            .await
            .with_context(|| format!("cannot listen on {}", o.addr))?;
        eprintln!(
            "serving {} on http://{} (max_batch {}, max_wait {} ms)",
            a.model.display(),
            listener.local_addr()?,
            o.max_batch,
            o.max_wait_ms
        );
        dfm::serve::run(listener, p, &o, dfm::serve::shutdown_signal()).await?;
        eprintln!("stopped");
        anyhow::Ok(())
    })
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
    let mut stats = dfm::eval::train_stats(&data, &manifest, a.workers)?;
    stats.ridge = m.ridge.clone().map(std::sync::Arc::new);
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

/// A clap value parser for an integer in [lo, hi] (the flag is named in clap's error).
fn usize_in(lo: usize, hi: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |v: &str| {
        let x: usize = v
            .trim()
            .parse()
            .map_err(|e| format!("`{v}` is not a whole number ({e})"))?;
        if (lo..=hi).contains(&x) {
            Ok(x)
        } else {
            Err(format!("{x} is outside [{lo}, {hi}]"))
        }
    }
}

fn u64_in(lo: u64, hi: u64) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |v: &str| usize_in(lo as usize, hi as usize)(v).map(|x| x as u64)
}

/// A clap value parser for a finite number in [lo, hi].
fn f64_in(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |v: &str| {
        let x: f64 = v
            .trim()
            .parse()
            .map_err(|e| format!("`{v}` is not a number ({e})"))?;
        if x.is_finite() && (lo..=hi).contains(&x) {
            Ok(x)
        } else {
            Err(format!("{x} is outside [{lo}, {hi}]"))
        }
    }
}

fn f32_in(lo: f32, hi: f32) -> impl Fn(&str) -> Result<f32, String> + Clone {
    move |v: &str| {
        let x: f32 = v
            .trim()
            .parse()
            .map_err(|e| format!("`{v}` is not a number ({e})"))?;
        if x.is_finite() && (lo..=hi).contains(&x) {
            Ok(x)
        } else {
            Err(format!("{x} is outside [{lo}, {hi}]"))
        }
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
