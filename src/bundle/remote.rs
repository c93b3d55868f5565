//! Run folders and bundles at URLs (`s3://`, `gs://`, `az://`; `http(s)://` to read). A model
//! is read from a URL by copying its folder to a staging folder first, without the optimizer's
//! state (only a resumed training reads it). An export bound for a bucket is written to a
//! staging folder and sent: its files first, `bundle.json` last (`store::mirror`), after the
//! check a local `--out` gets (a prefix holding anything but a bundle is refused).

use super::export::BundleMeta;
use crate::store::{self, Staging, mirror::Mirror};
use std::path::{Path, PathBuf};

/// Objects a bundle's prefix may hold before an export replaces it.
const MAX_OBJECTS: usize = 10_000;

/// A folder on this machine: the given one, or a staged copy of one at a URL (removed when
/// this is dropped).
pub struct Local {
    pub path: PathBuf,
    _staging: Option<Staging>,
}

/// The run folder or bundle at `p` as a local folder.
pub fn fetched(p: &Path) -> anyhow::Result<Local> {
    if !store::is_remote(p) {
        return Ok(Local {
            path: p.to_path_buf(),
            _staging: None,
        });
    }
    let staging = Staging::new("model")?;
    let path = staging.path().join("model");
    Mirror::pull(p, &path, |rel| rel.ends_with("optim.bpk"))?;
    Ok(Local {
        path,
        _staging: Some(staging),
    })
}

/// Runs `f` (an export) with local folders for the run at `run` and the bundle at `out`, then
/// sends the bundle to `out` when that is a URL.
pub fn export_via<T>(
    run: &Path,
    out: &Path,
    f: impl FnOnce(&Path, &Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let run_local = fetched(run)?;
    if !store::is_remote(out) {
        return f(&run_local.path, out);
    }
    store::check_writable(out)?;
    check_replaceable(out)?;
    let staging = Staging::new("bundle")?;
    let local = staging.path().join("bundle");
    let r = f(&run_local.path, &local)?;
    Mirror::over(out, &local)?.push()?;
    Ok(r)
}

/// A prefix an export may replace: empty, or a bundle holding its own files only.
fn check_replaceable(out: &Path) -> anyhow::Result<()> {
    let listed = store::list_tree(out, MAX_OBJECTS)?;
    if listed.is_empty() {
        return Ok(());
    }
    let own: Vec<String> = store::read_bounded(&out.join("bundle.json"), 1 << 20)
        .ok()
        .and_then(|b| serde_json::from_slice::<BundleMeta>(&b).ok())
        .map(|m| m.files.into_keys().collect())
        .unwrap_or_default();
    let mut others: Vec<&str> = listed
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "bundle.json" && !own.iter().any(|o| o == n))
        .collect();
    others.truncate(5);
    anyhow::ensure!(
        others.is_empty(),
        "--out {} holds objects that are not a bundle's ({}): an export replaces the bundle as a whole; choose an empty or new prefix",
        store::scrub(&out.display().to_string()),
        others.join(", ")
    );
    Ok(())
}
