//! The run's MLflow run (`run.track`): opened when training starts, given the run's files when
//! it ends.

use super::run_folder::flat_keys;
use super::setup::Setup;
use crate::track::{Link, RunRef, Tracker, TrackingServer};
use burn::prelude::*;
use std::path::Path;

/// Opens the run's MLflow run when tracking is on: a new one (with the resolved config as
/// params and dfm's tags), or on resume the one the run folder names.
pub(super) fn start_tracking(
    setup: &Setup,
    run_dir: &Path,
    resume: bool,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<Option<Tracker>> {
    let Some(target) = TrackingServer::resolve(None, &setup.cfg)? else {
        return Ok(None);
    };
    let existing = Link::load(run_dir).filter(|l| resume && l.uri == target.uri);
    let name = run_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&setup.cfg.run.name)
        .to_string();
    let want = match &existing {
        Some(l) => RunRef::Existing(l.run.run_id.clone()),
        None => RunRef::New {
            name,
            tags: crate::track::standard_tags(&setup.manifest_sha256, &format!("{device:?}")),
        },
    };
    let t = Tracker::start(&target, want, Some(run_dir.to_path_buf()))?;
    if existing.is_none() {
        let params = flat_keys(&setup.cfg)?
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                v => (k, v.to_string()),
            })
            .collect();
        t.params(params);
    }
    if !quiet {
        println!(
            "tracking to {} (experiment {:?})",
            target.uri, setup.cfg.run.experiment
        );
    }
    Ok(Some(t))
}

/// The run's files a tracker keeps: config, normalization, metrics, loss plot, ridge baseline,
/// evaluations.
pub(super) fn log_run_artifacts(t: &Tracker, run_dir: &Path) {
    for f in [
        "config.toml",
        crate::normalization::NORMALIZATION,
        "metrics.jsonl",
        "loss.png",
        crate::eval::ridge::FILE,
        super::support::FILE,
    ] {
        t.artifact(&run_dir.join(f), f);
    }
    if let Ok(rd) = std::fs::read_dir(run_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("eval_") && name.ends_with(".json") {
                t.artifact(&e.path(), &name);
            }
        }
    }
}
