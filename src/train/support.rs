//! The training data's range of motion, for `model.support_guard`: the 99th percentile of the
//! training histories' motion scale (the feature the model reads: the history's mean step over
//! the position scale), measured when a run starts and kept in the model.

use super::Setup;
use crate::data::loader::{Loader, LoaderOptions};
use crate::features::{Features, HIST_CH, hist_ch};

/// The share of training histories that move no faster than the guard's threshold.
pub const QUANTILE: f64 = 0.99;

/// A sample's motion scale: the one its last present history row carries; None with fewer than
/// two present rows (no motion to measure).
pub fn motion_scale(f: &Features) -> Option<f32> {
    let present: Vec<usize> = (0..f.hist_mask.len())
        .filter(|&k| f.hist_mask[k] > 0.5)
        .collect();
    let last = *present.last()?;
    (present.len() >= 2).then(|| f.hist[last * HIST_CH + hist_ch::LOG_SCALE].exp())
}

/// The `q` quantile of the finite values (nearest rank, `util::percentile`); None when there are
/// none.
pub fn quantile(v: Vec<f32>, q: f64) -> Option<f32> {
    let mut v: Vec<f64> = v
        .into_iter()
        .filter(|x| x.is_finite())
        .map(f64::from)
        .collect();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| crate::util::percentile(&v, q) as f32)
}

/// The [`QUANTILE`] of the motion scale over every source's training split; None when no
/// training sample has a moving history.
pub fn motion_q99(setup: &Setup) -> anyhow::Result<Option<f32>> {
    let mut all = Vec::new();
    for src in &setup.sources {
        if src.manifest.split("train").is_none_or(|s| s.samples == 0) {
            continue;
        }
        let opts = LoaderOptions {
            batch_size: 256,
            workers: setup.cfg.data.workers,
            shuffle_buffer: 0,
            drop_last: false,
            ..Default::default()
        };
        let loader = Loader::new(&src.dir, &src.manifest, "train", opts)?;
        let norm = setup.norm.clone();
        let per_sample =
            std::sync::Arc::new(move |s: crate::Sample| motion_scale(&norm.features(&s)));
        let per_batch = std::sync::Arc::new(|items: Vec<Option<f32>>| items);
        for part in loader.epoch(0, 0, per_sample, per_batch) {
            all.extend(part?.into_iter().flatten());
        }
    }
    Ok(quantile(all, QUANTILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_by_nearest_rank() {
        let v: Vec<f32> = (1..=101).map(|x| x as f32).collect();
        assert_eq!(quantile(v.clone(), 0.99), Some(100.0));
        assert_eq!(quantile(v, 0.0), Some(1.0));
        assert_eq!(quantile(vec![f32::NAN, 2.0], 0.99), Some(2.0));
        assert_eq!(quantile(Vec::new(), 0.99), None);
    }
}
