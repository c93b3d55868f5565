//! The losses and samples between two log lines.

use std::collections::BTreeMap;
use std::time::Instant;

/// Losses and samples since the last log line.
pub(super) struct LogWindow {
    pub(super) sums: BTreeMap<&'static str, f64>,
    pub(super) steps: usize,
    pub(super) samples: usize,
    pub(super) since: Instant,
}

impl LogWindow {
    pub(super) fn new() -> Self {
        LogWindow {
            sums: BTreeMap::new(),
            steps: 0,
            samples: 0,
            since: Instant::now(),
        }
    }

    pub(super) fn samples_per_s(&self) -> f64 {
        self.samples as f64 / self.since.elapsed().as_secs_f64().max(1e-9)
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
