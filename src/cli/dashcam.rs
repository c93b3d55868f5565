//! `dfm data import dashcam`: its flags.

use super::import_args::{ImportCommon, WindowArgs};
use super::ranges::{f64_in, usize_in};
use crate::data::import::dashcam::DashcamOptions;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct DashcamArgs {
    /// The folder holding one folder per trip (gps.csv and frames/ named by UNIX seconds).
    #[arg(long = "in")]
    pub input: PathBuf,
    #[command(flatten)]
    pub common: ImportCommon,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Frames per clip, the last at t0.
    #[arg(value_parser = usize_in(1, crate::data::video::MAX_FRAMES), long, default_value_t = 8)]
    pub frames: usize,
    /// Seconds between a clip's frames.
    #[arg(value_parser = f64_in(0.01, 3600.0), long, default_value_t = 0.5)]
    pub frame_step: f64,
    /// Side of the square frames, pixels (centre-cropped, then resized).
    #[arg(value_parser = usize_in(1, crate::data::video::MAX_SIDE), long, default_value_t = 32)]
    pub size: usize,
    /// Shares of the trips (by a hash of their folder name) held out as `val` and `test`.
    #[arg(value_parser = f64_in(0.0, 0.99), long, default_value_t = 0.1)]
    pub val_frac: f64,
    #[arg(value_parser = f64_in(0.0, 0.99), long, default_value_t = 0.1)]
    pub test_frac: f64,
}

impl DashcamArgs {
    pub fn options(&self) -> anyhow::Result<DashcamOptions> {
        anyhow::ensure!(
            self.val_frac + self.test_frac < 1.0,
            "--val-frac {} + --test-frac {} leave no training data",
            self.val_frac,
            self.test_frac
        );
        let mut o = DashcamOptions {
            seed: self.common.seed,
            part: self.common.part()?,
            frames: self.frames,
            frame_step_s: self.frame_step,
            size: self.size,
            val_frac: self.val_frac,
            test_frac: self.test_frac,
            ..Default::default()
        };
        self.window.apply(&mut o.window);
        Ok(o)
    }
}
