//! The run's retrieval index (`model.retrieval`, `features::retrieval`): every training window
//! of every source, at the model's knots, read once when the run starts (a resumed run reads
//! the same data, so it builds the same index).

use crate::config::Config;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::manifest::Manifest;
use crate::data::sample::Spec;
use crate::features::retrieval::{Index, Settings, entry};
use std::path::Path;
use std::sync::Arc;

/// Training windows an index keeps at most (the first ones read; each takes about
/// `90 + 8 knots` bytes: 420 MB for 2,000,000 windows of 15 knots).
pub const MAX_ENTRIES: usize = 2_000_000;
/// Neighbours must head within this many degrees of the sample.
pub const HEADING_DEG: f64 = 30.0;
/// Fewer neighbours than this count as none.
pub const MIN_NEIGHBOURS: usize = 3;

/// The index of the training splits of the datasets (folder and manifest) a run reads.
pub fn build(cfg: &Config, spec: &Spec, sources: &[(&Path, &Manifest)]) -> anyhow::Result<Index> {
    let (knots, step) = (spec.future_len, spec.future_step_s as f64);
    let mut entries = Vec::new();
    for &(dir, manifest) in sources.iter().filter(|s| s.1.splits.contains_key("train")) {
        let opts = LoaderOptions {
            batch_size: 4096,
            workers: cfg.data.workers,
            shuffle_buffer: 0,
            skip_bad: cfg.data.skip_bad,
            ..Default::default()
        };
        let l = Loader::new(dir, manifest, "train", opts)?;
        let per = Arc::new(move |s: crate::data::sample::Sample| entry(&s, knots, step));
        for b in l.epoch(0, 0, per, Arc::new(|b| b)) {
            entries.extend(b?.into_iter().flatten());
            if entries.len() >= MAX_ENTRIES {
                entries.truncate(MAX_ENTRIES);
                break;
            }
        }
    }
    let set = Settings {
        radius_m: cfg.model.retrieval_radius_m,
        heading_deg: HEADING_DEG,
        min_neighbours: MIN_NEIGHBOURS,
    };
    Ok(Index::build(entries, knots, set))
}
