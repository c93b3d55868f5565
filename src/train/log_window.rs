//! The losses and samples between two log lines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Losses and samples since the last log line.
pub(super) struct LogWindow {
    pub(super) sums: BTreeMap<&'static str, f64>,
    pub(super) steps: usize,
    pub(super) samples: usize,
    pub(super) since: Instant,
    /// Time inside the window that was not training (validation, checkpoints).
    paused: Duration,
}

impl LogWindow {
    pub(super) fn new() -> Self {
        LogWindow {
            sums: BTreeMap::new(),
            steps: 0,
            samples: 0,
            since: Instant::now(),
            paused: Duration::ZERO,
        }
    }

    /// Training samples per second of training time (validation and checkpoints left out, so
    /// that windows compare).
    pub(super) fn samples_per_s(&self) -> f64 {
        let training = self.since.elapsed().saturating_sub(self.paused);
        self.samples as f64 / training.as_secs_f64().max(1e-9)
    }

    /// Leaves out of the rate the time since `start` (work that was not training).
    pub(super) fn pause_since(&mut self, start: Instant) {
        self.paused += start.elapsed();
    }

    pub(super) fn mean(&self, key: &str) -> f64 {
        self.sums.get(key).copied().unwrap_or(0.0) / self.steps.max(1) as f64
    }

    /// Adds one optimizer step: the mean of its micro-batches' losses.
    pub(super) fn add_step(&mut self, losses: Vec<(f64, BTreeMap<&'static str, f64>)>) {
        let per = losses.len().max(1) as f64;
        for (lv, parts) in losses {
            *self.sums.entry("loss").or_default() += lv / per;
            for (k, v) in parts {
                *self.sums.entry(k).or_default() += v / per;
            }
        }
        self.steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_leaves_out_paused_time() {
        let mut w = LogWindow::new();
        w.samples = 100;
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let with_pause_time = w.samples_per_s();
        w.pause_since(start);
        // 100 samples over 60 ms of validation counted: at most ~1,700/s; with it left out,
        // the window has trained for almost no time.
        assert!(with_pause_time < 2000.0, "{with_pause_time}");
        assert!(w.samples_per_s() > 100_000.0, "{}", w.samples_per_s());
    }
}
