//! The embedded delivery-world simulator: `dfm data synth`. Deterministic for a seed: routes are
//! simulated in parallel, each from its own random stream, and written in route order.

pub mod camera;
pub mod lights;
pub mod motion;
pub mod render;
use crate::seed as rng;
pub mod route;
pub mod samples;
pub mod sensors;
pub mod world;

use crate::data::manifest::{Coverage, Manifest, StatsAcc};
use crate::data::sample::Spec;
use crate::data::shards::{Record, encode};
use crate::data::stats::accumulate_stats;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    pub routes: usize,
    pub seed: u64,
    /// Delivery areas in the world (urban, suburban, rural in turn).
    pub areas: usize,
    /// Days in the simulated calendar.
    pub days: u32,
    /// The last `held_out_days` days form the `test_days` split.
    pub held_out_days: u32,
    pub val_frac: f64,
    pub test_frac: f64,
    /// Mean spacing of decision points along a route, seconds.
    pub sample_every_s: f64,
    pub imu_p: f64,
    pub image_p: f64,
    pub stationary_keep_p: f64,
    pub shard_size: usize,
    pub raster_size: u32,
    pub raster_m_per_px: f64,
    pub spec: Spec,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            routes: 300,
            seed: 1,
            areas: 6,
            days: 30,
            held_out_days: 5,
            val_frac: 0.1,
            test_frac: 0.1,
            sample_every_s: 75.0,
            imu_p: 0.85,
            image_p: 0.9,
            stationary_keep_p: 0.08,
            shard_size: 1000,
            raster_size: 64,
            raster_m_per_px: 4.0,
            spec: Spec::default(),
        }
    }
}

/// Clips of `dfm data synth --video`: frames and side.
pub const VIDEO_FRAMES: usize = 8;
pub const VIDEO_SIZE: usize = 32;

impl SynthConfig {
    /// The same world with dashcam clips (`VIDEO_FRAMES` frames of `VIDEO_SIZE` pixels).
    pub fn with_video(mut self) -> Self {
        self.spec.video_frames = VIDEO_FRAMES;
        self.spec.video_size = VIDEO_SIZE;
        self
    }

    pub fn split_of(&self, index: usize, day: u32) -> &'static str {
        if day + self.held_out_days >= self.days {
            return "test_days";
        }
        let u = rng::unit(rng::hash(self.seed, "split", &[index as u64]));
        if u < self.test_frac {
            "test"
        } else if u < self.test_frac + self.val_frac {
            "val"
        } else {
            "train"
        }
    }

    pub fn day_of(&self, index: usize) -> u32 {
        (rng::hash(self.seed, "day", &[index as u64]) % self.days.max(1) as u64) as u32
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.routes > 0, "--routes must be at least 1");
        anyhow::ensure!(self.areas > 0, "areas must be at least 1");
        anyhow::ensure!(
            self.days > self.held_out_days,
            "days ({}) must exceed held_out_days ({})",
            self.days,
            self.held_out_days
        );
        anyhow::ensure!(self.sample_every_s > 0.0, "sample_every_s must be positive");
        anyhow::ensure!(self.shard_size > 0, "shard_size must be positive");
        anyhow::ensure!(
            self.val_frac + self.test_frac < 1.0,
            "val_frac + test_frac must be below 1"
        );
        Ok(())
    }
}

struct RouteOut {
    split: &'static str,
    route_id: String,
    records: Vec<Record>,
    stats: StatsAcc,
    coverage: Coverage,
}

fn simulate_route(
    cfg: &SynthConfig,
    areas: &[world::Area],
    index: usize,
) -> anyhow::Result<RouteOut> {
    let area = &areas[index % areas.len()];
    let day = cfg.day_of(index);
    let split = cfg.split_of(index, day);
    let route = route::simulate(cfg.seed, area, index, day);
    let opts = samples::CutOptions {
        spec: cfg.spec.clone(),
        raster: render::RasterSpec {
            size: cfg.raster_size,
            m_per_px: cfg.raster_m_per_px,
            anchor: [
                cfg.raster_size as f64 / 2.0,
                cfg.raster_size as f64 * 0.6875,
            ],
        },
        sample_every_s: cfg.sample_every_s,
        imu_p: cfg.imu_p,
        image_p: cfg.image_p,
        stationary_keep_p: cfg.stationary_keep_p,
    };
    let samples = samples::cut(cfg.seed, index, area, &route, &opts);
    let mut stats = StatsAcc::default();
    let mut coverage = Coverage::default();
    let mut records = Vec::with_capacity(samples.len());
    for s in &samples {
        s.validate(Some(&cfg.spec))
            .map_err(|e| anyhow::anyhow!("simulator produced a bad sample {}: {e}", s.key))?;
        if split == "train" {
            accumulate_stats(s, &mut stats);
        }
        coverage.add(s);
        records.push(encode(s)?);
    }
    Ok(RouteOut {
        split,
        route_id: route.id,
        records,
        stats,
        coverage,
    })
}

/// Simulates the world and writes the sharded dataset into `out`.
pub fn generate(out: &Path, cfg: &SynthConfig, force: bool) -> anyhow::Result<Manifest> {
    generate_part(out, cfg, force, crate::data::part::Part::WHOLE)
}

/// The routes `ids`, simulated on `threads` threads, in the order of their ids.
fn simulate_chunk(
    cfg: &SynthConfig,
    areas: &[world::Area],
    ids: &[usize],
    threads: usize,
    bar: &indicatif::ProgressBar,
) -> Vec<anyhow::Result<RouteOut>> {
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                sc.spawn(move || {
                    ids.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&i| {
                            let r = simulate_route(cfg, areas, i);
                            bar.inc(1);
                            (i, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, anyhow::Result<RouteOut>)> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation thread panicked"))
            .collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    })
}

/// One part of the simulation (`Part`: every `num_shards`-th route from `shard_index`); the
/// parts of a job, merged, hold the whole job's samples and statistics.
pub fn generate_part(
    out: &Path,
    cfg: &SynthConfig,
    force: bool,
    part: crate::data::part::Part,
) -> anyhow::Result<Manifest> {
    cfg.validate()?;
    let mut writer =
        crate::data::writer::DatasetWriter::new(out, cfg.spec.clone(), cfg.shard_size, force)?;
    let areas: Vec<world::Area> = (0..cfg.areas)
        .map(|i| world::Area::generate(cfg.seed, i))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let chunk = (threads * 4).max(8);
    let routes: Vec<usize> = part.select(0..cfg.routes).collect();
    let bar = crate::progress::bar(routes.len() as u64, "simulating routes");
    for (ci, ids) in routes.chunks(chunk).enumerate() {
        let outs = simulate_chunk(cfg, &areas, ids, threads, &bar);
        // Mix the samples of the routes of this chunk inside each split, deterministically.
        let mut per_split: BTreeMap<&'static str, Vec<(String, Record)>> = BTreeMap::new();
        for o in outs {
            let o = o?;
            writer.merge_stats(&o.stats, &o.coverage);
            let id = o.route_id;
            per_split
                .entry(o.split)
                .or_default()
                .extend(o.records.into_iter().map(|r| (id.clone(), r)));
        }
        for (split, mut recs) in per_split {
            let mut r = rng::stream(
                cfg.seed,
                "shuffle",
                &[ci as u64, split.len() as u64, split.as_bytes()[0] as u64],
            );
            recs.shuffle(&mut r);
            for (id, rec) in &recs {
                writer.add_encoded(split, id, rec)?;
            }
        }
    }
    bar.finish_and_clear();
    let generator = part.generator(cfg)?;
    let manifest = writer.finish("synth", generator)?;
    Ok(manifest)
}
