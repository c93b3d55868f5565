//! A dataset with a share of another's training routes (`dfm data subset`): how a model does
//! with 1% or 10% of a source's training data (fine-tuning curves, transfer reports). The other
//! splits are kept whole, so every subset is scored on the same held-out data; the statistics
//! are the kept training routes' own.

use super::loader::{Loader, LoaderOptions};
use super::manifest::Manifest;
use super::writer::DatasetWriter;
use std::path::Path;
use std::sync::Arc;

/// A route's draw in [0, 1) for `seed`: the routes drawn below `fraction` are kept, so the 1%
/// subset is inside the 10% one for the same seed.
fn draw(seed: u64, route: &str) -> f64 {
    crate::seed::unit(crate::seed::hash(seed, &format!("subset:{route}"), &[]))
}

/// Writes `out`: the `fraction` (in (0, 1]) of `input`'s training routes picked by `seed`
/// (at least one), every other split whole. Returns the new manifest.
pub fn subset(
    input: &Path,
    out: &Path,
    fraction: f64,
    seed: u64,
    force: bool,
) -> anyhow::Result<Manifest> {
    anyhow::ensure!(
        fraction > 0.0 && fraction <= 1.0,
        "--fraction {fraction} is outside (0, 1]"
    );
    let m = Manifest::load(input)?;
    let train_routes = m
        .split("train")
        .map(|s| s.routes.clone())
        .unwrap_or_default();
    let mut keep: Vec<&String> = train_routes
        .iter()
        .filter(|r| draw(seed, r) < fraction)
        .collect();
    if keep.is_empty()
        && let Some(first) = train_routes
            .iter()
            .min_by(|a, b| draw(seed, a).total_cmp(&draw(seed, b)))
    {
        keep.push(first);
    }
    let keep: std::collections::BTreeSet<&String> = keep.into_iter().collect();
    let mut w = DatasetWriter::new(out, m.spec.clone(), 1000, force)?;
    for split in m.splits.keys() {
        let opts = LoaderOptions {
            batch_size: 256,
            shuffle_buffer: 0,
            ..Default::default()
        };
        let loader = Loader::new(input, &m, split, opts)?;
        for batch in loader.epoch(0, 0, Arc::new(|s| s), Arc::new(|b| b)) {
            for s in batch? {
                if split != "train" || keep.contains(&s.route_id) {
                    w.add(split, &s)?;
                }
            }
        }
    }
    let generator = serde_json::json!({
        "subset_of": input.display().to_string(),
        "fraction": fraction,
        "seed": seed,
        "train_routes": keep.len(),
    });
    w.finish(&m.source, generator)
}
