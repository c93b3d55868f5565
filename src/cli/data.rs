//! `dfm data synth | import | inspect | sample`.

use super::import_args::{ImportCommon, WindowArgs};
use super::ranges::*;
use super::serve::SampleArgs;
use crate::data::import::{ImportReport, geolife, gps_csv, lmrc};
use crate::data::synth::SynthConfig;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum DataCmd {
    /// Simulate a delivery world into a sharded dataset (deterministic for a seed).
    Synth(SynthArgs),
    /// Validate every record of a dataset and print its counts and coverage.
    Inspect(InspectArgs),
    /// Write samples of a dataset as request-ready JSON lines (for predict and serve).
    Sample(SampleArgs),
    /// A copy of a dataset with a share of its training routes (the other splits whole).
    Subset(SubsetArgs),
    /// One dataset from the parts of a sharded synth or import (--shard-index/--num-shards).
    Merge(MergeArgs),
    /// Import real data (GeoLife, GPS CSV, Amazon LMRC) into a sharded dataset.
    Import {
        #[command(subcommand)]
        cmd: ImportCmd,
    },
}

#[derive(Subcommand)]
pub enum ImportCmd {
    /// GeoLife `.plt` trees (USER/Trajectory/*.plt).
    Geolife(GeolifeArgs),
    /// A CSV of GPS fixes: trajectory_id,timestamp,lat,lon[,speed,heading].
    GpsCsv(GpsCsvArgs),
    /// Amazon Last Mile Routing Research Challenge files.
    Lmrc(LmrcArgs),
    /// Dashcam trips: a folder per trip with gps.csv and frames/ (images named by UNIX seconds).
    Dashcam(super::dashcam::DashcamArgs),
}

#[derive(Args)]
pub struct GeolifeArgs {
    /// The folder holding the user folders.
    #[arg(long = "in")]
    pub input: PathBuf,
    #[command(flatten)]
    pub common: ImportCommon,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(Args)]
pub struct GpsCsvArgs {
    #[arg(long = "in")]
    pub input: PathBuf,
    #[command(flatten)]
    pub common: ImportCommon,
    #[command(flatten)]
    pub window: WindowArgs,
    #[arg(long, default_value = "trajectory_id")]
    pub id_col: String,
    /// The time column: UNIX seconds or ISO 8601 date-times (`2008-10-23T02:53:04Z`,
    /// `2008-10-23 10:53:04+08:00`; without an offset, local time on --tz / --utc-offset).
    #[arg(long, default_value = "timestamp")]
    pub time_col: String,
    #[arg(long, default_value = "lat")]
    pub lat_col: String,
    #[arg(long, default_value = "lon")]
    pub lon_col: String,
    #[arg(long, default_value = "speed")]
    pub speed_col: String,
    #[arg(long, default_value = "heading")]
    pub heading_col: String,
    /// Shares of the trajectories (by a hash of their id) held out as `val` and `test`.
    #[arg(value_parser = f64_in(0.0, 0.99), long, default_value_t = 0.1)]
    pub val_frac: f64,
    #[arg(value_parser = f64_in(0.0, 0.99), long, default_value_t = 0.1)]
    pub test_frac: f64,
}

#[derive(Args)]
pub struct LmrcArgs {
    /// The folder holding route_data.json, package_data.json, actual_sequences.json.
    #[arg(long = "in")]
    pub input: PathBuf,
    #[command(flatten)]
    pub common: ImportCommon,
    /// Travel speed assumed without travel_times.json, m/s.
    #[arg(value_parser = f64_in(0.1, 100.0), long, default_value_t = 8.0)]
    pub speed: f64,
    /// Most stop tokens per sample (0: all remaining stops).
    #[arg(value_parser = usize_in(0, 1024), long, default_value_t = 0)]
    pub max_stops: usize,
    /// Share of the routes held out for validation / test (by a hash of the route id and
    /// --seed; at least one route each when there are three or more).
    #[arg(value_parser = f64_in(0.0, 0.99), long, default_value_t = 0.1)]
    pub val_frac: f64,
    #[arg(value_parser = f64_in(0.0, 0.99), long, default_value_t = 0.1)]
    pub test_frac: f64,
    /// Cross-validation: test on block FOLD (0, 1, ..) of --test-frac of the hash-ordered routes
    /// instead of the first; validation takes the routes after it. The same --seed with folds
    /// 0, 1, .. tests disjoint routes.
    #[arg(value_parser = usize_in(0, 1024), long, default_value_t = 0)]
    pub fold: usize,
    /// IANA time zone of every route (e.g. America/Chicago); default: from each route's station
    /// code (the challenge's Los Angeles, Seattle, Chicago, Austin and Boston stations).
    #[arg(long)]
    pub tz: Option<String>,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 300)]
    pub routes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Samples per shard.
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 1000)]
    pub shard_size: usize,
    /// Mean seconds between decision points on a route.
    #[arg(value_parser = f64_in(0.1, 86_400.0), long)]
    pub sample_every: Option<f64>,
    /// Replace a dataset already in the folder.
    #[arg(long)]
    pub force: bool,
    /// Sample shapes (defaults: 30 history fixes at 1 s, 15 future positions at 2 s, 300 IMU
    /// rows at 10 Hz, 8 stops). Match another dataset's shapes to pretrain for it, e.g. GeoLife:
    /// --history-len 12 --history-step 5 --future-len 12 --future-step 5 --imu-len 12 --imu-rate 0.2
    #[arg(value_parser = usize_in(2, 10_000), long)]
    pub history_len: Option<usize>,
    #[arg(value_parser = f32_in(0.01, 3600.0), long)]
    pub history_step: Option<f32>,
    #[arg(value_parser = usize_in(1, 10_000), long)]
    pub future_len: Option<usize>,
    #[arg(value_parser = f32_in(0.01, 3600.0), long)]
    pub future_step: Option<f32>,
    #[arg(value_parser = usize_in(1, 100_000), long)]
    pub imu_len: Option<usize>,
    #[arg(value_parser = f32_in(0.01, 10_000.0), long)]
    pub imu_rate: Option<f32>,
    #[arg(value_parser = usize_in(1, 1024), long)]
    pub max_stops: Option<usize>,
    /// Write a dashcam clip per sample (8 frames of 32x32 over the last 3.5 s): traffic lights,
    /// queues on jammed roads and vans at stops, which only the camera shows.
    #[arg(long)]
    pub video: bool,
    /// This process's part of the job (array jobs): every --num-shards-th unit of work from this
    /// one, written as a dataset of its own; `dfm data merge` joins the parts.
    #[arg(value_parser = usize_in(0, 999_999), long, default_value_t = 0)]
    pub shard_index: usize,
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 1)]
    pub num_shards: usize,
}

#[derive(Args)]
pub struct MergeArgs {
    /// Output dataset folder.
    #[arg(long)]
    pub out: PathBuf,
    /// The parts' dataset folders.
    #[arg(required = true, num_args = 1..)]
    pub parts: Vec<PathBuf>,
    /// Replace a dataset already in the output folder.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct SubsetArgs {
    /// Dataset folder to read.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Output dataset folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Share of the training routes kept, in (0, 1] (at least one route).
    #[arg(value_parser = f64_in(1e-6, 1.0), long)]
    pub fraction: f64,
    /// Which routes: subsets of one seed are nested (the 1% inside the 10%).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replace a dataset already in the output folder.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Dataset folder.
    pub dir: PathBuf,
    /// Skip bad records, count them and write them to the report instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Where `--skip-bad` writes the bad records (JSON lines).
    #[arg(long, default_value = "bad_records.jsonl")]
    pub report: PathBuf,
    #[arg(value_parser = usize_in(1, 256), long, default_value_t = 2)]
    pub workers: usize,
}

pub fn run(cmd: DataCmd) -> anyhow::Result<()> {
    match cmd {
        DataCmd::Synth(a) => synth(a),
        DataCmd::Inspect(a) => inspect(a),
        DataCmd::Sample(a) => super::serve::sample(a),
        DataCmd::Subset(a) => {
            let m = crate::data::subset::subset(&a.input, &a.out, a.fraction, a.seed, a.force)?;
            let n = |s: &str| m.split(s).map_or(0, |i| i.samples);
            println!(
                "{}: {} training samples ({} routes), {} validation, {} test",
                a.out.display(),
                n("train"),
                m.split("train").map_or(0, |i| i.routes.len()),
                n("val"),
                n("test")
            );
            Ok(())
        }
        DataCmd::Import { cmd } => import(cmd),
        DataCmd::Merge(a) => {
            let m = crate::data::merge::merge(&a.out, &a.parts, a.force)?;
            println!(
                "{} parts merged into {}: {} samples",
                a.parts.len(),
                a.out.display(),
                m.coverage.samples
            );
            Ok(())
        }
    }
}

/// The simulator's config from the flags.
fn synth_config(a: &SynthArgs) -> SynthConfig {
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
    if a.video {
        cfg = cfg.with_video();
    }
    cfg
}

/// `dfm data synth`.
pub fn synth(a: SynthArgs) -> anyhow::Result<()> {
    let cfg = synth_config(&a);
    let t = std::time::Instant::now();
    let part = crate::data::part::Part::new(a.shard_index, a.num_shards)?;
    let m = crate::data::synth::generate_part(&a.out, &cfg, a.force, part)?;
    let shards: usize = m.splits.values().map(|s| s.shards.len()).sum();
    let routes: usize = m.splits.values().map(|s| s.routes.len()).sum();
    println!(
        "wrote {} samples from {} routes in {} shards to {} ({:.1} s)",
        m.coverage.samples,
        routes,
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

/// `dfm data inspect`.
pub fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let rep = crate::data::inspect::inspect(&a.dir, a.skip_bad, a.workers)?;
    print!("{}", rep.render());
    if a.skip_bad && !rep.bad.is_empty() {
        let mut s = String::new();
        for b in &rep.bad {
            s.push_str(&serde_json::to_string(b)?);
            s.push('\n');
        }
        crate::util::write_atomic(&a.report, s.as_bytes())?;
        println!("bad records written to {}", a.report.display());
    }
    anyhow::ensure!(
        rep.shared_routes.is_empty(),
        "{}: splits share {} route ids",
        a.dir.display(),
        rep.shared_routes.len()
    );
    anyhow::ensure!(
        rep.duplicate_keys.is_empty(),
        "{}: {} sample keys are used more than once",
        a.dir.display(),
        rep.duplicate_keys.len()
    );
    Ok(())
}

/// `dfm data import geolife | gps-csv | lmrc`.
pub fn import(cmd: ImportCmd) -> anyhow::Result<()> {
    let (report, common) = match cmd {
        ImportCmd::Geolife(a) => {
            let mut o = geolife::GeolifeOptions {
                seed: a.common.seed,
                part: a.common.part()?,
                ..Default::default()
            };
            a.window.apply(&mut o.window);
            let c = &a.common;
            (
                geolife::import(&a.input, &c.out, &o, c.skip_bad, c.force)?,
                a.common,
            )
        }
        ImportCmd::GpsCsv(a) => {
            let o = gps_csv_options(&a)?;
            let c = &a.common;
            (
                gps_csv::import(&a.input, &c.out, &o, c.skip_bad, c.force)?,
                a.common,
            )
        }
        ImportCmd::Dashcam(a) => {
            let o = a.options()?;
            let c = &a.common;
            (
                crate::data::import::dashcam::import(&a.input, &c.out, &o, c.skip_bad, c.force)?,
                a.common,
            )
        }
        ImportCmd::Lmrc(a) => {
            let o = lmrc_options(&a)?;
            let c = &a.common;
            (
                lmrc::import(&a.input, &c.out, &o, c.skip_bad, c.force)?,
                a.common,
            )
        }
    };
    finish_import(&report, &common.out, common.skip_bad)
}

fn gps_csv_options(a: &GpsCsvArgs) -> anyhow::Result<gps_csv::CsvOptions> {
    anyhow::ensure!(
        a.val_frac + a.test_frac < 1.0,
        "--val-frac {} + --test-frac {} leave no training data",
        a.val_frac,
        a.test_frac
    );
    let mut o = gps_csv::CsvOptions {
        seed: a.common.seed,
        part: a.common.part()?,
        val_frac: a.val_frac,
        test_frac: a.test_frac,
        ..Default::default()
    };
    a.window.apply(&mut o.window);
    o.columns = gps_csv::Columns {
        id: a.id_col.clone(),
        time: a.time_col.clone(),
        lat: a.lat_col.clone(),
        lon: a.lon_col.clone(),
        speed: a.speed_col.clone(),
        heading: a.heading_col.clone(),
    };
    Ok(o)
}

fn lmrc_options(a: &LmrcArgs) -> anyhow::Result<lmrc::LmrcOptions> {
    anyhow::ensure!(
        a.val_frac + a.test_frac < 1.0,
        "--val-frac + --test-frac must leave routes for training"
    );
    Ok(lmrc::LmrcOptions {
        seed: a.common.seed,
        part: a.common.part()?,
        speed_mps: a.speed,
        max_stops: a.max_stops,
        val_frac: a.val_frac,
        test_frac: a.test_frac,
        fold: a.fold,
        tz: a.tz.clone(),
        ..Default::default()
    })
}

/// Prints an import's report and lists the skipped records beside the dataset.
fn finish_import(report: &ImportReport, out: &Path, skipped: bool) -> anyhow::Result<()> {
    print!("{}", report.render());
    if skipped && !report.bad.is_empty() {
        let p = out.join("bad_records.txt");
        crate::util::write_atomic(&p, (report.bad.join("\n") + "\n").as_bytes())?;
        println!("bad records listed in {}", p.display());
    }
    println!("dataset written to {}", out.display());
    Ok(())
}
