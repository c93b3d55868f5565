//! `normalization.json`: the dataset spec and feature statistics a model was trained with, kept
//! in its run folder and its bundle; and the checks that a model reads the features it was
//! trained on and that data fits it. Below both training and bundles: each writes or reads it.

use crate::data::manifest::{ChannelStats, Manifest};
use crate::data::sample::Spec;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's name in a run folder and a bundle.
pub const NORMALIZATION: &str = "normalization.json";

/// The spec and statistics a model was trained with (also kept in the run folder).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NormalizationFile {
    pub schema_version: u32,
    pub manifest_sha256: String,
    pub spec: Spec,
    pub norm: ChannelStats,
    /// The feature code's version the model was trained with (`features::FEATURES_VERSION`);
    /// absent in runs made before versions were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features_version: Option<u32>,
}

impl NormalizationFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = crate::util::read_bounded(path, crate::util::limits::METADATA)?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid", path.display()))
    }
}

/// A model reads the features it was trained on: a model of another feature version is refused
/// (naming what changed), one made before versions were recorded is loaded with a warning that
/// lists what may differ.
pub fn check_features(n: &NormalizationFile, model: &Path) -> anyhow::Result<()> {
    use crate::features::{FEATURES_VERSION, feature_changes_since};
    match n.features_version {
        Some(v) if v == FEATURES_VERSION => Ok(()),
        Some(v) if v > FEATURES_VERSION => bail!(
            "{}: the model was trained on feature version {v}, made by a newer dfm than this one (version {FEATURES_VERSION}): use that dfm",
            model.display()
        ),
        Some(v) => bail!(
            "{}: the model was trained on feature version {v}; this dfm computes version {FEATURES_VERSION}, where inputs changed meaning:\n{}\nretrain it with this dfm (`train.init_from` fine-tunes it), or use the dfm that made it",
            model.display(),
            feature_changes_since(v)
        ),
        None => {
            eprintln!(
                "warning: {}: made before feature versions were recorded; if it is older than one of these changes, its inputs now mean something else:\n{}",
                model.display(),
                feature_changes_since(1)
            );
            Ok(())
        }
    }
}

/// Checks that a dataset can be fed to a model: same schema version, a future within the
/// model's horizon (any sampling rate and history length is put on the model's time grid; stops
/// are a set: any number is read, the nearest `max_stops` of the model when more),
/// and feature statistics of the same scale (a 3x difference in a position, speed or time
/// scale means other units, another sampling or another kind of movement). `allow_shift`
/// accepts different statistics (evaluating out of domain on purpose).
pub fn check_data(
    manifest: &Manifest,
    data: &Path,
    n: &NormalizationFile,
    allow_shift: bool,
) -> anyhow::Result<()> {
    let mpath = Manifest::path(data);
    if manifest.schema_version != n.schema_version {
        bail!(
            "{}: schema version {} differs from the model's {}: re-create the dataset or the model with the same dfm",
            mpath.display(),
            manifest.schema_version,
            n.schema_version
        );
    }
    // Any sampling meets the model's grid by time (`time_grid`); only a future past the
    // model's horizon is out of its reach.
    let (a, b) = (&manifest.spec, &n.spec);
    let (data_h, model_h) = (
        crate::time_grid::horizon(a.future_len, a.future_step_s as f64),
        crate::time_grid::horizon(b.future_len, b.future_step_s as f64),
    );
    if data_h > model_h * (1.0 + 1e-6) {
        bail!(
            "{}: the data's future reaches {data_h} s (spec.future_len {} x future_step_s {}), past the model's horizon of {model_h} s",
            mpath.display(),
            a.future_len,
            a.future_step_s
        );
    }
    if allow_shift || manifest.norm.channels.is_empty() {
        return Ok(());
    }
    for ch in ["hist_x", "speed", "future_x", "stop_x", "log_arrival"] {
        let (Some(x), Some(y)) = (manifest.norm.channels.get(ch), n.norm.channels.get(ch)) else {
            continue;
        };
        if x.count < 10 || y.count < 10 {
            continue;
        }
        let scale =
            |m: &crate::data::manifest::Moments| (m.std * m.std + m.mean * m.mean).sqrt().max(1e-9);
        let r = scale(x) / scale(y);
        if !(1.0 / 3.0..=3.0).contains(&r) {
            bail!(
                "{}: the data's normalization differs from the model's: channel `{ch}` has scale {:.3} in the data and {:.3} in the model's training data; pass --allow-shift to evaluate out of domain anyway",
                mpath.display(),
                scale(x),
                scale(y)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FEATURES_VERSION;

    fn of_version(v: Option<u32>) -> NormalizationFile {
        NormalizationFile {
            schema_version: crate::SCHEMA_VERSION,
            manifest_sha256: String::new(),
            spec: Default::default(),
            norm: Default::default(),
            features_version: v,
        }
    }

    /// The current version loads; an older one is refused naming what changed since; a newer
    /// one is refused as a newer dfm's; one without a version loads (with a warning).
    #[test]
    fn models_of_another_feature_version_are_refused_naming_the_change() {
        let at = Path::new("runs/x");
        check_features(&of_version(Some(FEATURES_VERSION)), at).unwrap();
        check_features(&of_version(None), at).unwrap();
        let old = check_features(&of_version(Some(1)), at)
            .unwrap_err()
            .to_string();
        assert!(
            old.contains("runs/x")
                && old.contains("feature version 1")
                && old.contains("neighbouring zone"),
            "{old}"
        );
        let newer = check_features(&of_version(Some(FEATURES_VERSION + 1)), at)
            .unwrap_err()
            .to_string();
        assert!(newer.contains("newer dfm"), "{newer}");
        assert_eq!(crate::features::feature_changes_since(FEATURES_VERSION), "");
    }
}
