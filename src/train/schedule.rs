//! How long a run is (optimizer steps per epoch and in all, samples per step) and its learning
//! rate: linear warmup, then cosine decay to 5% of the peak at the last step.

use crate::config::Config;
use crate::data::mixture::Mixture;
use anyhow::bail;

pub fn lr_at(step: usize, peak: f64, warmup: usize, total: usize) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = ((step - warmup.min(step)) as f64 / span as f64).min(1.0);
    let floor = 0.05 * peak;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Samples one optimizer step takes: a loader batch (a replica's part of `train.batch_size`)
/// `grad_accum` times on each device.
pub(super) fn samples_per_step(cfg: &Config, devices: usize) -> usize {
    let t = &cfg.train;
    t.batch_size / t.replicas.max(1) * t.grad_accum * devices
}

/// Optimizer steps per epoch and in the run (`train.epochs`, capped by `train.max_steps`): a
/// step takes `grad_accum` batches on each of the `devices`.
pub(super) fn run_length(
    cfg: &Config,
    loader: &Mixture,
    devices: usize,
) -> anyhow::Result<(usize, usize)> {
    let per_epoch = loader.num_batches() / (cfg.train.grad_accum * devices);
    if per_epoch == 0 {
        bail!(
            "the train split has {} samples: less than one step of {}",
            loader.num_samples(),
            samples_per_step(cfg, devices)
        );
    }
    let mut total = per_epoch * cfg.train.epochs;
    if cfg.train.max_steps > 0 {
        total = total.min(cfg.train.max_steps);
    }
    Ok((per_epoch, total))
}

#[cfg(test)]
mod tests {
    #[test]
    fn warmup_then_cosine() {
        let f = |s| super::lr_at(s, 1.0, 10, 110);
        assert!((f(0) - 0.1).abs() < 1e-12 && (f(9) - 1.0).abs() < 1e-12);
        assert!((f(10) - 1.0).abs() < 1e-12);
        assert!(f(60) < 0.6 && f(60) > 0.45);
        assert!((f(110) - 0.05).abs() < 1e-12 && (f(500) - 0.05).abs() < 1e-12);
    }
}
