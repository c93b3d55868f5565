//! Where a model to evaluate (or serve) comes from: a run folder (its best checkpoint) or an
//! export bundle; and the checks that the data fits what the model was trained with.

use super::export;
use crate::checkpoint;
use crate::config::Config;
use crate::data::manifest::Manifest;
use crate::eval::ridge::Ridge;
use crate::features::Featurizer;
use crate::model::DfmModel;
use crate::normalization::{NORMALIZATION, NormalizationFile, check_data, check_features};
use anyhow::{Context, bail};
use burn::prelude::*;
use std::path::Path;

pub struct LoadedModel {
    pub model: DfmModel,
    pub cfg: Config,
    pub normalization: NormalizationFile,
    pub featurizer: Featurizer,
    /// What was loaded, for reports ("run checkpoints/x, step 3129" / "bundle ...").
    pub description: String,
    pub step: Option<usize>,
    /// The learned linear baseline fitted with the run (absent in runs made before it existed).
    pub ridge: Option<Ridge>,
}

/// Loads a run folder's best checkpoint, or an export bundle (verified).
/// `path` may be a URL: the folder is copied to this machine first (`remote::fetched`).
pub fn load_trained(path: &Path, device: &Device) -> anyhow::Result<LoadedModel> {
    if crate::store::is_remote(path) {
        let local = super::remote::fetched(path)?;
        let mut m = load_trained(&local.path, device)?;
        let shown = crate::store::scrub(&path.display().to_string());
        m.description = m
            .description
            .replace(&local.path.display().to_string(), &shown);
        return Ok(m);
    }
    if path.join("bundle.json").is_file() {
        let b = export::read_bundle(path, device)?;
        return Ok(LoadedModel {
            description: format!("bundle {} (step {})", path.display(), b.meta.step),
            step: Some(b.meta.step),
            ridge: b.ridge,
            model: b.model,
            cfg: b.cfg,
            normalization: b.normalization,
            featurizer: b.featurizer,
        });
    }
    if !path.join("config.toml").is_file() {
        bail!(
            "{}: neither a run folder (config.toml) nor an export bundle (bundle.json)",
            path.display()
        );
    }
    let cfg = Config::load(Some(&path.join("config.toml")), &[])?;
    check_no_retrieval(&cfg, path)?;
    let normalization = NormalizationFile::load(&path.join(NORMALIZATION))?;
    check_features(&normalization, path)?;
    let dir = checkpoint::best_or_last(path)?;
    let state = checkpoint::read_state(&dir)?;
    let model = DfmModel::new(&cfg.model, &normalization.spec, cfg.data.image_size, device);
    let model = checkpoint::load_model(model, &dir)?;
    let featurizer = Featurizer::new(
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
        featurizer,
    })
}

impl LoadedModel {
    pub fn check(&self, manifest: &Manifest, data: &Path, allow_shift: bool) -> anyhow::Result<()> {
        check_data(manifest, data, &self.normalization, allow_shift)
            .context("the data does not fit the model")
    }
}

/// Refuses a model trained with `model.retrieval`: its index is not saved with the run or a
/// bundle yet, and without it the model would silently read no neighbours.
pub fn check_no_retrieval(cfg: &Config, run: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !cfg.model.retrieval,
        "{}: a model trained with model.retrieval cannot be exported or loaded for inference yet (its index of training windows is not saved with the run); its evaluation is in the run's eval_test.json",
        run.display()
    );
    Ok(())
}
