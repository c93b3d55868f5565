//! The training data's range of motion, for `model.support_guard`: the 99th percentile of the
//! training histories' motion scale (the feature the model reads: the history's mean step over
//! the position scale), measured when a run starts, kept in the run folder (`support.json`, so a
//! resumed run does not measure it again) and in the model.

use std::path::Path;

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

/// The run folder's record of the threshold.
pub const FILE: &str = "support.json";

/// What `support.json` holds: the quantile, the threshold and the data it was measured on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Threshold {
    pub quantile: f64,
    /// The run's threshold: the training data's, or the initial model's where that is larger.
    pub motion_scale: f32,
    pub manifest_sha256: String,
    /// The initial model's threshold (`train.init_from`), when it had one: what it trained on
    /// is the run's support too, so a fine-tune on a few slow routes keeps the speeds its
    /// initial model learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<f32>,
}

/// The run's threshold: the one `support.json` in `run_dir` keeps for this data (a resumed run,
/// or a new one from the same initial model), else the larger of [`motion_q99`] and
/// `inherited`, written there. `Ok(None)` when neither exists; `Ok(Some((q, measured)))`
/// otherwise, `measured` being the training data's own value when it was measured now.
pub fn ensure(
    setup: &Setup,
    run_dir: &Path,
    resume: bool,
    inherited: Option<f32>,
) -> anyhow::Result<Option<(f32, Option<f32>)>> {
    let path = run_dir.join(FILE);
    if let Some(t) = load(&path)?
        && t.manifest_sha256 == setup.manifest_sha256
        && t.quantile == QUANTILE
        && (resume || t.inherited == inherited)
    {
        return Ok(Some((t.motion_scale, None)));
    }
    let measured = motion_q99(setup)?;
    let Some(q) = measured.into_iter().chain(inherited).reduce(f32::max) else {
        return Ok(None);
    };
    let t = Threshold {
        quantile: QUANTILE,
        motion_scale: q,
        manifest_sha256: setup.manifest_sha256.clone(),
        inherited,
    };
    crate::util::write_atomic(&path, &serde_json::to_vec_pretty(&t)?)?;
    Ok(Some((q, measured)))
}

/// `support.json`, when the run has one; an unreadable one is an error naming the file.
fn load(path: &Path) -> anyhow::Result<Option<Threshold>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = crate::util::read_bounded(path, crate::util::limits::SMALL)?;
    let t: Threshold = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a support threshold: {e}", path.display()))?;
    if !(t.motion_scale.is_finite() && t.motion_scale > 0.0) {
        anyhow::bail!(
            "{}: motion_scale {} is not a positive number",
            path.display(),
            t.motion_scale
        );
    }
    Ok(Some(t))
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

    #[test]
    fn a_bad_support_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        assert_eq!(load(&p).unwrap(), None, "no file: measure");
        for bad in [
            "{",
            r#"{"quantile":0.99,"motion_scale":-1.0,"manifest_sha256":"x"}"#,
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = load(&p).unwrap_err().to_string();
            assert!(e.contains("support.json"), "{e}");
        }
        let t = Threshold {
            quantile: QUANTILE,
            motion_scale: 1.25,
            manifest_sha256: "abc".into(),
            inherited: None,
        };
        std::fs::write(&p, serde_json::to_vec(&t).unwrap()).unwrap();
        assert_eq!(load(&p).unwrap(), Some(t));
    }
}
