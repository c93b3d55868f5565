//! Where a model to evaluate (or serve) comes from: a run folder (its best checkpoint) or an
//! export bundle; and the checks that the data fits what the model was trained with.

use super::export::{self, NORMALIZATION, Normalization};
use crate::config::Config;
use crate::data::manifest::Manifest;
use crate::eval::ridge::Ridge;
use crate::features::Normalizer;
use crate::model::DfmModel;
use crate::train::checkpoint;
use anyhow::{Context, bail};
use burn::prelude::*;
use std::path::Path;

pub struct LoadedModel {
    pub model: DfmModel,
    pub cfg: Config,
    pub normalization: Normalization,
    pub normalizer: Normalizer,
    /// What was loaded, for reports ("run checkpoints/x, step 3129" / "bundle ...").
    pub description: String,
    pub step: Option<usize>,
    /// The learned linear baseline fitted with the run (absent in runs made before it existed).
    pub ridge: Option<Ridge>,
}

/// Loads a run folder's best checkpoint, or an export bundle (verified).
pub fn load(path: &Path, device: &Device) -> anyhow::Result<LoadedModel> {
    if path.join("bundle.json").is_file() {
        let b = export::load(path, device)?;
        return Ok(LoadedModel {
            description: format!("bundle {} (step {})", path.display(), b.meta.step),
            step: Some(b.meta.step),
            ridge: b.ridge,
            model: b.model,
            cfg: b.cfg,
            normalization: b.normalization,
            normalizer: b.normalizer,
        });
    }
    if !path.join("config.toml").is_file() {
        bail!(
            "{}: neither a run folder (config.toml) nor an export bundle (bundle.json)",
            path.display()
        );
    }
    let cfg = Config::load(Some(&path.join("config.toml")), &[])?;
    let normalization = Normalization::load(&path.join(NORMALIZATION))?;
    check_features(&normalization, path)?;
    let dir = checkpoint::best_or_last(path)?;
    let state = checkpoint::read_state(&dir)?;
    let model = DfmModel::new(&cfg.model, &normalization.spec, cfg.data.image_size, device);
    let model = checkpoint::load_model(model, &dir)?;
    let normalizer = Normalizer::new(
        &normalization.spec,
        &normalization.norm,
        cfg.data.image_size,
    );
    Ok(LoadedModel {
        description: format!(
            "run {} ({}, step {})",
            path.display(),
            dir.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            state.step
        ),
        step: Some(state.step),
        ridge: Ridge::load_from(path)?,
        model,
        cfg,
        normalization,
        normalizer,
    })
}

/// A model reads the features it was trained on: a model of another feature version is refused
/// (naming what changed), one made before versions were recorded is loaded with a warning that
/// lists what may differ.
pub fn check_features(n: &Normalization, model: &Path) -> anyhow::Result<()> {
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
    n: &Normalization,
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

impl LoadedModel {
    pub fn check(&self, manifest: &Manifest, data: &Path, allow_shift: bool) -> anyhow::Result<()> {
        check_data(manifest, data, &self.normalization, allow_shift)
            .context("the data does not fit the model")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FEATURES_VERSION;

    fn of_version(v: Option<u32>) -> Normalization {
        Normalization {
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
