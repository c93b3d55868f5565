//! The run folder: its lock, the config a new or resumed run goes on with (a resumed run's
//! checkpoints are never overwritten by another model), and the files it keeps
//! (`config.toml`, `normalization.json`, `metrics.jsonl`).

use super::setup::Setup;
use crate::checkpoint;
use crate::config::Config;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Takes the run folder's lock (an OS file lock on `RUN/.lock`, released when the process
/// ends, even by `kill -9`): two trainings of one run folder at once would corrupt it.
pub fn lock_run(run_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let p = run_dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("cannot open {}", p.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by another dfm process (it holds {}); wait for it to finish or stop it",
            run_dir.display(),
            p.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::anyhow!("cannot lock {}: {e}", p.display()))
        }
    }
}

pub(super) fn append_metrics(path: &Path, v: &serde_json::Value) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{v}")?;
    Ok(())
}

/// Drops metric lines past `step` (after resuming from a checkpoint at `step`).
pub(super) fn truncate_metrics(path: &Path, step: usize) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = crate::util::read_text_bounded(path, crate::util::limits::METRICS)?;
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::util::write_atomic(path, kept.as_bytes())
}

/// Keys a resumed run may change (`--resume RUN --set KEY=VALUE`): how long it runs, how it logs
/// and checkpoints, how it reads data, where it runs, how it is evaluated. The others (the
/// model's shapes, the data, the optimizer, the objective) are fixed by its checkpoints.
const RESUMABLE_KEYS: [&str; 17] = [
    "run.device",
    "run.track",
    "run.track_flush_s",
    "run.track_artifact_root",
    "train.epochs",
    "train.max_steps",
    "train.checkpoint_every",
    "train.keep_last",
    "train.log_every",
    "train.on_nan",
    "train.optimizer",
    "data.workers",
    "data.prefetch",
    "data.skip_bad",
    "data.cache_dir",
    "data.cache_gb",
    "eval.",
];

/// Dotted keys and values of a config, for comparing two.
pub(crate) fn flat_keys(cfg: &Config) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match v.as_object() {
            Some(o) => {
                for (k, x) in o {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            None => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", &serde_json::to_value(cfg)?, &mut out);
    Ok(out)
}

/// The config a resumed run goes on with: the config its newest checkpoint was trained with
/// (`ckpt-N/config.toml`; the run's `config.toml` for checkpoints saved before they kept one),
/// with the changes `given` makes to it (`--set train.epochs=8`, or an edit of the run's
/// `config.toml`) when they are among [`RESUMABLE_KEYS`]; they are recorded in the run's
/// `config.toml`. Any other change is refused, naming the key and the checkpoint: a run's
/// checkpoints are never overwritten by another model.
pub fn resume_config(run_dir: &Path, given: Config) -> anyhow::Result<Config> {
    let p = run_dir.join("config.toml");
    let newest = checkpoint::list(run_dir)?
        .pop()
        .map(|(_, d)| d.join("config.toml"))
        .filter(|c| c.is_file());
    let from = newest.as_deref().unwrap_or(&p);
    let mut saved = Config::load(Some(from), &[])
        .with_context(|| format!("--resume: {} is not a run folder", run_dir.display()))?;
    // The run's name: its folder, or the URL of a run in a bucket (read from its local copy).
    saved.run.dir = match crate::store::is_remote(Path::new(&given.run.dir)) {
        true => given.run.dir.clone(),
        false => run_dir.display().to_string(),
    };
    let mut given = given;
    given.run.dir = saved.run.dir.clone();
    let (a, b) = (flat_keys(&saved)?, flat_keys(&given)?);
    let changed: Vec<&String> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    let fixed: Vec<String> = changed
        .iter()
        .filter(|k| {
            !RESUMABLE_KEYS
                .iter()
                .any(|r| **k == r || (r.ends_with('.') && k.starts_with(r)))
        })
        .map(|k| {
            let was = a.get(*k).map_or("unset".into(), |v| v.to_string());
            format!("`{k}` (it was {was}, now {})", b[*k])
        })
        .collect();
    if !fixed.is_empty() {
        bail!(
            "--resume: {} cannot change when a run resumes: {} was trained with the values it was and does not fit the new ones. Keys a resumed run may change: {}; start a new run (another run.dir) for the rest, or put {} back as it was",
            fixed.join(", "),
            from.parent()
                .filter(|_| newest.is_some())
                .map_or(format!("the run in {}", run_dir.display()), |d| d
                    .display()
                    .to_string()),
            RESUMABLE_KEYS.join(", "),
            p.display()
        );
    }
    if changed.is_empty() {
        saved.run.track_credentials = given.run.track_credentials.clone();
        if !given.run.track_credentials.is_empty() {
            // A config.toml written before credentials were kept out of it loses them now.
            crate::util::write_atomic(&p, given.to_toml()?.as_bytes())?;
        }
        return Ok(saved);
    }
    println!(
        "resume applies: {}",
        changed
            .iter()
            .map(|k| format!("{k} = {}", b[*k]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::util::write_atomic(&p, given.to_toml()?.as_bytes())?;
    Ok(given)
}

/// The config of the run: a resumed run's saved one (with the changes `--set` may make), or the
/// given one for a new run in a folder without checkpoints.
pub(super) fn settle_config(cfg: Config, run_dir: &Path, resume: bool) -> anyhow::Result<Config> {
    if resume {
        return resume_config(run_dir, cfg);
    }
    if !checkpoint::list(run_dir)?.is_empty() {
        bail!(
            "{} already holds a run; continue it with --resume {} or choose another run.dir",
            run_dir.display(),
            run_dir.display()
        );
    }
    check_run_folder(run_dir)?;
    Ok(cfg)
}

/// A new run goes into a new or empty folder, or one a run of dfm started (its `config.toml`
/// is a dfm config): it writes `config.toml`, `metrics.jsonl` and plots there, which would
/// overwrite a user's files of those names.
pub(super) fn check_run_folder(run_dir: &Path) -> anyhow::Result<()> {
    if !run_dir.is_dir() {
        return Ok(());
    }
    let mut names: Vec<String> = std::fs::read_dir(run_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
        .collect::<Result<_, _>>()?;
    // The lock, and what a write cut by a crash leaves (`util::write_atomic`), are dfm's.
    names.retain(|n| n != ".lock" && !(n.starts_with('.') && n.ends_with(".tmp")));
    let started_by_dfm = Config::load(Some(&run_dir.join("config.toml")), &[]).is_ok();
    if names.is_empty() || started_by_dfm {
        return Ok(());
    }
    names.sort();
    names.truncate(5);
    bail!(
        "run.dir {} holds files ({}) and is not a dfm run folder: a new run needs a new or empty folder",
        run_dir.display(),
        names.join(", ")
    )
}

/// `config.toml` (new runs) and `normalization.json` (new runs, and runs killed before they
/// wrote it).
pub(super) fn write_run_files(setup: &Setup, run_dir: &Path, resume: bool) -> anyhow::Result<()> {
    if !resume {
        crate::util::write_atomic(
            &run_dir.join("config.toml"),
            setup.cfg.to_toml()?.as_bytes(),
        )?;
    }
    let norm_path = run_dir.join(crate::normalization::NORMALIZATION);
    if !resume || !norm_path.is_file() {
        let n = crate::normalization::NormalizationFile {
            schema_version: setup.primary().manifest.schema_version,
            manifest_sha256: setup.manifest_sha256.clone(),
            spec: setup.spec.clone(),
            norm: setup.stats.clone(),
            features_version: Some(crate::features::FEATURES_VERSION),
        };
        crate::util::write_json(&norm_path, &n)?;
    }
    Ok(())
}
