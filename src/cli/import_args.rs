//! The flags every `dfm data import` shares: output, bad records, seed, the job's part, and how
//! trajectories become windows.

use super::ranges::{f64_in, usize_in};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ImportCommon {
    /// Output dataset folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Skip bad records (counted, listed in the report) instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Replace a dataset already in the output folder.
    #[arg(long)]
    pub force: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// This process's part of the job (array jobs): every --num-shards-th unit of work from this
    /// one, written as a dataset of its own; `dfm data merge` joins the parts.
    #[arg(value_parser = usize_in(0, 999_999), long, default_value_t = 0)]
    pub shard_index: usize,
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 1)]
    pub num_shards: usize,
}

#[derive(Args)]
pub struct WindowArgs {
    /// Resampling step, seconds.
    #[arg(value_parser = f64_in(0.01, 3600.0), long)]
    pub step: Option<f64>,
    /// Gaps longer than this (seconds) cut a trajectory.
    #[arg(value_parser = f64_in(0.01, 36_000_000.0), long)]
    pub max_gap: Option<f64>,
    /// Fixes of history / future per sample.
    #[arg(value_parser = usize_in(2, 10_000), long)]
    pub history: Option<usize>,
    #[arg(value_parser = usize_in(1, 10_000), long)]
    pub future: Option<usize>,
    /// Steps between consecutive windows.
    #[arg(value_parser = usize_in(1, 1_000_000), long)]
    pub stride: Option<usize>,
    /// Local time = UTC + this many hours (no daylight saving; prefer --tz).
    #[arg(value_parser = f64_in(-14.0, 14.0), long, conflicts_with = "tz")]
    pub utc_offset: Option<f64>,
    /// IANA time zone of the data, e.g. Europe/Berlin (local hours with daylight saving).
    #[arg(long)]
    pub tz: Option<String>,
}

impl WindowArgs {
    pub fn apply(&self, w: &mut crate::data::import::WindowOptions) {
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

impl ImportCommon {
    pub fn part(&self) -> anyhow::Result<crate::data::part::Part> {
        crate::data::part::Part::new(self.shard_index, self.num_shards)
    }
}
