//! `dfm bench train --whole-run`: the trainer's own loop (with its replicas or devices, its
//! loader, validation and checkpoints) for a number of steps in a scratch run folder, and its
//! training rate per log window (validation and checkpoints left out): whether the rate holds
//! from the first window to the last, or falls as a run goes on.

use crate::config::Config;
use burn::prelude::*;
use serde::Serialize;

/// The rate of each window of a run.
#[derive(Serialize)]
pub struct RunRate {
    pub bench: &'static str,
    pub config: String,
    pub device: String,
    /// `train.replicas` and `train.devices` as the run had them.
    pub replicas: usize,
    pub devices: Vec<String>,
    /// The steps the run took.
    pub steps: usize,
    pub window_steps: usize,
    /// (last step of the window, samples/s).
    pub windows: Vec<(usize, f64)>,
    /// The last window's rate over the first's.
    pub last_over_first: f64,
}

/// A training run of `steps` steps with a log line every `window` steps; its windows' rates.
pub fn run(
    mut cfg: Config,
    config_name: &str,
    device: &Device,
    device_name: &str,
    steps: usize,
    window: usize,
) -> anyhow::Result<RunRate> {
    anyhow::ensure!(
        steps >= 2 * window,
        "--steps {steps}: a whole run needs at least two windows of --window {window} steps"
    );
    let scratch = Scratch::new()?;
    cfg.run.dir = scratch.0.join("run").display().to_string();
    cfg.run.track = String::new();
    cfg.train.max_steps = steps;
    // Epochs enough for every step, whatever the dataset's size and the devices' count.
    cfg.train.epochs = steps;
    cfg.train.log_every = window;
    cfg.train.checkpoint_every = steps;
    let (replicas, devices) = (cfg.train.replicas, cfg.train.devices.clone());
    let out = crate::train::train(cfg, false, device, true)?;
    let text = std::fs::read_to_string(out.run_dir.join("metrics.jsonl"))?;
    let windows: Vec<(usize, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()? as usize, v["samples_per_s"].as_f64()?)))
        .filter(|(step, _)| step.is_multiple_of(window))
        .collect();
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        anyhow::bail!("the run logged no training windows");
    };
    Ok(RunRate {
        bench: "train_run",
        config: config_name.to_string(),
        device: device_name.to_string(),
        replicas,
        devices,
        steps: out.steps,
        window_steps: window,
        last_over_first: last.1 / first.1,
        windows,
    })
}

/// A scratch folder for the run, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("dfm-bench-run-{}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RunRate {
    pub fn render(&self) -> String {
        let parallel = if self.devices.len() > 1 {
            format!("devices {}", self.devices.join(", "))
        } else {
            format!("{} replica(s)", self.replicas)
        };
        let mut s = format!(
            "training run of {} on {} ({parallel}): {} steps, samples/s per {}-step window (validation and checkpoints left out)\n",
            self.config, self.device, self.steps, self.window_steps
        );
        for (step, rate) in &self.windows {
            s += &format!(
                "  steps {:>6}-{:<6} {rate:>9.1}\n",
                step + 1 - self.window_steps,
                step
            );
        }
        let holds = if (self.last_over_first - 1.0).abs() <= 0.10 {
            "holds within 10%"
        } else {
            "does not hold within 10%"
        };
        s += &format!(
            "last window / first: {:.3} (the rate {holds})\n",
            self.last_over_first
        );
        s
    }
}
