//! The checks of a config: every number a user can set has a range, named with its key; names,
//! paths, devices and the tracking URI are checked before anything runs.

use super::{Config, DeviceChoice, LOSS_HEADS, MAX_SOURCES, TrainConfig};
use anyhow::bail;
use std::path::Path;

/// An integer key's value inside [lo, hi], or an error naming the key.
fn int_in(key: &str, v: usize, lo: usize, hi: usize) -> anyhow::Result<()> {
    if !(lo..=hi).contains(&v) {
        bail!("key `{key}`: {v} is outside [{lo}, {hi}]");
    }
    Ok(())
}

/// A real key's value finite and inside [lo, hi], or an error naming the key.
fn real_in(key: &str, v: f64, lo: f64, hi: f64) -> anyhow::Result<()> {
    if !(v.is_finite() && (lo..=hi).contains(&v)) {
        bail!("key `{key}`: {v} is outside [{lo}, {hi}]");
    }
    Ok(())
}

impl TrainConfig {
    /// `replicas`: in range, dividing the batch, not with several devices.
    fn validate_replicas(&self) -> anyhow::Result<()> {
        int_in("train.replicas", self.replicas, 1, 64)?;
        if !self.batch_size.is_multiple_of(self.replicas) {
            bail!(
                "key `train.replicas`: {} does not divide train.batch_size {} (each replica computes an equal part of the batch)",
                self.replicas,
                self.batch_size
            );
        }
        if self.replicas > 1 && self.devices.len() > 1 {
            bail!(
                "key `train.replicas`: set it or `train.devices`, not both (replicas split a batch on the CPU; devices take one batch each)"
            );
        }
        Ok(())
    }
}

impl Config {
    /// `data.sources`: at most `MAX_SOURCES`, each with a path and a positive weight, names
    /// unique and plain (they name files), the first at `data.path`.
    fn validate_sources(&self) -> anyhow::Result<()> {
        let src = &self.data.sources;
        if src.len() > MAX_SOURCES {
            bail!(
                "key `data.sources`: {} sources, at most {MAX_SOURCES}",
                src.len()
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in src.iter().enumerate() {
            let key = format!("data.sources[{i}]");
            if s.path.is_empty() {
                bail!("key `{key}.path`: must not be empty");
            }
            if !(s.weight.is_finite() && s.weight > 0.0 && s.weight <= 1e6) {
                bail!("key `{key}.weight`: {} is outside (0, 1e6]", s.weight);
            }
            let name = s.name();
            if !crate::util::plain_file_name(&name) || name.starts_with('.') {
                bail!("key `{key}.name`: {name:?} must be a plain name (letters, digits, - _ .)");
            }
            if !names.insert(name.clone()) {
                bail!("key `{key}.name`: {name:?} names two sources (give each a `name`)");
            }
        }
        if let Some(first) = src.first()
            && first.path != self.data.path
        {
            bail!(
                "key `data.path`: {:?} is not the first source's path {:?} (with data.sources, data.path names the first)",
                self.data.path,
                first.path
            );
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        // Every number a user can set has a range, named with its key.
        self.validate_data()?;
        self.validate_model()?;
        self.validate_train()?;
        self.validate_eval()?;
        self.validate_run()
    }

    fn validate_data(&self) -> anyhow::Result<()> {
        let d = &self.data;
        int_in("data.synth_routes", d.synth_routes, 0, 10_000_000)?;
        int_in("data.workers", d.workers, 1, 256)?;
        int_in("data.prefetch", d.prefetch, 1, 1024)?;
        int_in("data.shuffle_buffer", d.shuffle_buffer, 0, 10_000_000)?;
        int_in("data.image_size", d.image_size, 8, 1024)?;
        let max_gb = crate::store::cache::MAX_GB;
        if !(d.cache_gb.is_finite() && d.cache_gb > 0.0 && d.cache_gb <= max_gb) {
            bail!(
                "key `data.cache_gb`: {} is outside (0, {max_gb}]",
                d.cache_gb
            );
        }
        // A config is saved in its run folder and bundle: a dataset URL must not carry secrets.
        let paths = std::iter::once(("data.path".to_string(), &d.path)).chain(
            d.sources
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("data.sources[{i}].path"), &s.path)),
        );
        for (key, path) in paths {
            if crate::store::has_credentials(path) {
                bail!(
                    "key `{key}`: {}: credentials in a dataset URL are refused; give them through the store's environment variables (AWS_*, GOOGLE_*, AZURE_*)",
                    crate::store::scrub(path)
                );
            }
        }
        self.validate_sources()
    }

    fn validate_model(&self) -> anyhow::Result<()> {
        let m = &self.model;
        let int = int_in;
        int("model.d_model", m.d_model, 1, 8192)?;
        real_in(
            "model.retrieval_radius_m",
            m.retrieval_radius_m,
            1.0,
            10_000.0,
        )?;
        int("model.layers", m.layers, 1, 128)?;
        int("model.heads", m.heads, 1, 256)?;
        int("model.ff_mult", m.ff_mult, 1, 64)?;
        int("model.modes", m.modes, 1, 64)?;
        int("model.image_patch", m.image_patch, 1, self.data.image_size)?;
        // 0: derive from the data.
        int("model.history_patch", m.history_patch, 0, 100_000)?;
        int("model.imu_patch", m.imu_patch, 0, 100_000)?;
        let video = (crate::data::video::MAX_FRAMES, crate::data::video::MAX_SIDE);
        int("model.video_tubelet", m.video_tubelet, 1, video.0)?;
        int("model.video_patch", m.video_patch, 1, video.1)?;
        if !m.d_model.is_multiple_of(m.heads) {
            bail!(
                "key `model.d_model`: {} is not divisible by model.heads = {}",
                m.d_model,
                m.heads
            );
        }
        if !self.data.image_size.is_multiple_of(m.image_patch) {
            bail!(
                "key `model.image_patch`: {} does not divide data.image_size = {}",
                m.image_patch,
                self.data.image_size
            );
        }
        for (key, v) in [
            ("model.dropout", m.dropout),
            ("model.modality_dropout", m.modality_dropout),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("key `{key}`: {v} is outside [0, 1)");
            }
        }
        Ok(())
    }

    fn validate_train(&self) -> anyhow::Result<()> {
        let t = &self.train;
        let (int, real) = (int_in, real_in);
        const BIG: usize = 1_000_000_000;
        int("train.epochs", t.epochs, 1, 1_000_000)?;
        int("train.max_steps", t.max_steps, 0, BIG)?;
        int("train.batch_size", t.batch_size, 1, 65_536)?;
        int("train.warmup_steps", t.warmup_steps, 0, BIG)?;
        int("train.grad_accum", t.grad_accum, 1, 4096)?;
        t.validate_replicas()?;
        int("train.checkpoint_every", t.checkpoint_every, 1, BIG)?;
        int("train.keep_last", t.keep_last, 1, 1000)?;
        int("train.log_every", t.log_every, 1, BIG)?;
        real("train.lr", t.lr, 1e-12, 1e6)?;
        real("train.weight_decay", t.weight_decay, 0.0, 10.0)?;
        real("train.grad_clip", t.grad_clip, 0.0, 1e6)?;
        real("train.mirror", t.mirror, 0.0, 1.0)?;
        real("train.ema", t.ema, 0.0, 0.99999)?;
        for (k, v) in &t.loss_weights {
            if !LOSS_HEADS.contains(&k.as_str()) {
                bail!(
                    "key `train.loss_weights.{k}`: unknown head; allowed: {}",
                    LOSS_HEADS.join(", ")
                );
            }
            real(&format!("train.loss_weights.{k}"), *v, 0.0, 1e6)?;
        }
        for d in &t.devices {
            d.split(':')
                .next()
                .unwrap_or("")
                .parse::<DeviceChoice>()
                .map_err(|e| anyhow::anyhow!("key `train.devices`: {e}"))?;
        }
        for m in &t.drop_modalities {
            if !crate::modality::MODALITIES.contains(&m.as_str()) {
                bail!(
                    "key `train.drop_modalities`: `{m}`; allowed: {}",
                    crate::modality::MODALITIES.join(", ")
                );
            }
        }
        Ok(())
    }

    fn validate_eval(&self) -> anyhow::Result<()> {
        let e = &self.eval;
        int_in("eval.batch_size", e.batch_size, 1, 65_536)?;
        real_in("eval.miss_threshold_m", e.miss_threshold_m, 1e-3, 1e6)?;
        const SPLITS: [&str; 5] = ["train", "val", "test", "test_days", "all"];
        if !SPLITS.contains(&e.split.as_str()) {
            bail!(
                "key `eval.split`: `{}`; allowed: {}",
                e.split,
                SPLITS.join(", ")
            );
        }
        Ok(())
    }

    fn validate_run(&self) -> anyhow::Result<()> {
        real_in("run.track_flush_s", self.run.track_flush_s, 0.0, 3600.0)?;
        if !self.run.track.is_empty() {
            super::tracking_uri::check_uri(&self.run.track)
                .map_err(|e| anyhow::anyhow!("key `run.track`: {e}"))?;
        }
        let name = &self.run.name;
        let plain = !name.is_empty()
            && name.len() <= 200
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control());
        if !plain {
            bail!(
                "key `run.name`: {name:?} must be a folder name (1 to 200 bytes, no `/`, `\\` or `..`): runs go to checkpoints/<run.name>"
            );
        }
        if crate::store::has_credentials(&self.run.dir) {
            bail!(
                "key `run.dir`: {}: credentials in a run URL are refused; give them through the store's environment variables (AWS_*, GOOGLE_*, AZURE_*)",
                crate::store::scrub(&self.run.dir)
            );
        }
        let lower = self.run.dir.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            bail!(
                "key `run.dir`: {}: dfm reads over plain http(s) but does not write there; give a folder or an s3, gs or az URL",
                crate::store::scrub(&self.run.dir)
            );
        }
        let exp = &self.run.experiment;
        if exp.trim().is_empty() || exp.len() > 500 {
            bail!("key `run.experiment`: {exp:?} must be 1 to 500 characters");
        }
        let root = Path::new(&self.run.track_artifact_root);
        if !self.run.track_artifact_root.is_empty() && !root.is_absolute() {
            bail!(
                "key `run.track_artifact_root`: {:?} must be an absolute path",
                self.run.track_artifact_root
            );
        }
        Ok(())
    }
}
