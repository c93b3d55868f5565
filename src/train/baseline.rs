//! The run's ridge baseline, the simple model a trained one must beat on held-out data.

use super::setup::Setup;
use crate::config::Objective;
use crate::eval::ridge::{self, Ridge};
use std::path::Path;
use std::time::Instant;

/// The run's ridge baseline: fitted on the training split when the run starts (lambda chosen
/// on `val`) and saved as `ridge.json`; read back on resume. None for data without trajectories
/// and for pretraining runs.
pub(super) fn ensure_ridge(
    setup: &Setup,
    run_dir: &Path,
    quiet: bool,
) -> anyhow::Result<Option<Ridge>> {
    if setup.cfg.train.objective != Objective::Supervised {
        return Ok(None);
    }
    if let Some(r) = Ridge::load_from(run_dir)? {
        return Ok(Some(r));
    }
    let t = Instant::now();
    let fitted = ridge::fit_on(
        &setup.primary().dir,
        &setup.primary().manifest,
        &setup.norm,
        setup.cfg.data.workers,
    )?;
    if let Some(r) = &fitted {
        crate::util::write_atomic(&run_dir.join(ridge::FILE), &serde_json::to_vec(r)?)?;
        if !quiet {
            println!(
                "ridge baseline fitted on {} training samples (lambda {:e}) in {:.1} s",
                r.train_samples,
                r.lambda,
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(fitted)
}
