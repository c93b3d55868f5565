//! Sweeps from one config: every combination of `--grid KEY=V1,V2` values (times `--seeds N`)
//! as a normal run folder under one sweep folder, trained one after another (or printed as
//! commands for an array job), then compared (`runs::render_compare`). Running a sweep again goes
//! on where it stopped: finished runs are kept, stopped ones resumed.

use crate::config::Config;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The most runs one sweep may plan.
pub const MAX_RUNS: usize = 256;

/// One `--grid` axis: a config key and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

impl std::str::FromStr for Axis {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Axis> {
        let (key, values) = s
            .split_once('=')
            .with_context(|| format!("--grid {s:?}: expected KEY=V1,V2,..."))?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if key.trim().is_empty() || values.iter().any(String::is_empty) {
            bail!("--grid {s:?}: expected KEY=V1,V2,... with no empty value");
        }
        Ok(Axis {
            key: key.trim().to_string(),
            values,
        })
    }
}

/// One planned run: its folder and the overrides that make it.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub dir: PathBuf,
    pub sets: Vec<String>,
}

/// Every combination of the axes' values, per seed, each checked as a config (a bad key or
/// value is refused before anything runs). `seeds` empty: the config's own seed.
pub fn plan(
    config: Option<&Path>,
    base_sets: &[String],
    axes: &[Axis],
    seeds: &[u64],
    out: &Path,
) -> anyhow::Result<Vec<Planned>> {
    let n = count_runs(axes, seeds)?;
    let mut combos: Vec<Vec<(String, String)>> = vec![vec![]];
    for a in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                a.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((a.key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    let seeds: Vec<Option<u64>> = match seeds {
        [] => vec![None],
        s => s.iter().copied().map(Some).collect(),
    };
    let mut out_runs: Vec<Planned> = Vec::with_capacity(n);
    for c in &combos {
        for seed in &seeds {
            let mut name: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut sets: Vec<String> = base_sets.to_vec();
            sets.extend(c.iter().map(|(k, v)| format!("{k}={v}")));
            if let Some(s) = seed {
                name.push(format!("seed={s}"));
                sets.push(format!("run.seed={s}"));
            }
            let folder = if name.is_empty() {
                "run".to_string()
            } else {
                folder_name(&name.join(","))
            };
            let dir = out.join(folder);
            check_own_folder(&out_runs, &dir, &sets)?;
            sets.push(format!("run.dir={}", dir.display()));
            Config::load(config, &sets).with_context(|| format!("sweep run {}", dir.display()))?;
            out_runs.push(Planned { dir, sets });
        }
    }
    Ok(out_runs)
}

/// No two runs of a sweep share a folder.
fn check_own_folder(planned: &[Planned], dir: &Path, sets: &[String]) -> anyhow::Result<()> {
    let Some(twin) = planned.iter().find(|p| p.dir == dir) else {
        return Ok(());
    };
    let shown_all = |sets: &[String]| sets.iter().map(|s| shown(s)).collect::<Vec<_>>().join(" ");
    bail!(
        "sweep runs {} and {} would share the folder {}",
        shown_all(&twin.sets),
        shown_all(sets),
        dir.display()
    )
}

/// How many runs the axes and seeds make, counted before any is built: at most `MAX_RUNS`.
fn count_runs(axes: &[Axis], seeds: &[u64]) -> anyhow::Result<usize> {
    let n = axes
        .iter()
        .map(|a| a.values.len())
        .chain([seeds.len().max(1)])
        .try_fold(1usize, |n, k| n.checked_mul(k).filter(|&n| n <= MAX_RUNS));
    n.with_context(|| {
        format!(
            "the sweep has more than {MAX_RUNS} runs ({}): at most {MAX_RUNS}",
            axes.iter()
                .map(|a| format!("{} values of {}", a.values.len(), a.key))
                .chain((!seeds.is_empty()).then(|| format!("{} seeds", seeds.len())))
                .collect::<Vec<_>>()
                .join(" x ")
        )
    })
}

/// A run's folder name from its settings: letters, digits and `-_.=,+:` as they are, every
/// other byte as `~` and two hex digits, so that distinct settings never share a folder; a
/// name too long for a file system ends in a digest of the whole.
fn folder_name(settings: &str) -> String {
    let mut s = crate::util::escape(settings, |b| {
        b.is_ascii_alphanumeric() || b"-_.=,+:".contains(&b)
    });
    if s.len() > 200 {
        use sha2::Digest;
        let d = crate::data::shards::hex(&sha2::Sha256::digest(settings.as_bytes()));
        s.truncate(180);
        s = format!("{s}~{}", &d[..16]);
    }
    s
}

/// The `dfm train` command line of a planned run (for array jobs).
pub fn command(config: Option<&Path>, p: &Planned) -> String {
    let mut s = "dfm train".to_string();
    if let Some(c) = config {
        s.push_str(&format!(
            " --config {}",
            shell_word(&c.display().to_string())
        ));
    }
    for x in &p.sets {
        s.push_str(&format!(" --set {}", shell_word(&shown(x))));
    }
    s
}

/// A `--set` as it may be printed: a tracking URI without its credentials.
fn shown(set: &str) -> String {
    match set.strip_prefix("run.track=") {
        Some(uri) => format!("run.track={}", crate::config::tracking_uri::redact(uri)),
        None => set.to_string(),
    }
}

fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.=/:,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Trains every planned run in turn: a finished one is kept, a stopped one resumed. A run that
/// fails is reported and the sweep goes on; returns the runs that failed, with their errors.
pub fn run(
    config: Option<&Path>,
    planned: &[Planned],
    device: &burn::tensor::Device,
) -> Vec<(PathBuf, anyhow::Error)> {
    let mut failed = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        println!("[{}/{}] {}", i + 1, planned.len(), p.dir.display());
        if let Err(e) = run_one(config, p, device) {
            eprintln!(
                "sweep run {} failed: {e:#}; going on with the others",
                p.dir.display()
            );
            failed.push((p.dir.clone(), e));
        }
    }
    failed
}

/// One planned run: kept when finished, resumed when stopped, else started.
fn run_one(
    config: Option<&Path>,
    p: &Planned,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let status = p
        .dir
        .join("config.toml")
        .is_file()
        .then(|| crate::runs::summarize(&p.dir).map(|s| s.status))
        .transpose()?;
    let (cfg, resume) = match status {
        Some(crate::runs::Status::Finished) => {
            println!("  finished before: kept");
            return Ok(());
        }
        Some(_) => {
            let c = Config::load(Some(&p.dir.join("config.toml")), &[])?;
            (c, true)
        }
        None => (Config::load(config, &p.sets)?, false),
    };
    crate::train::train(cfg, resume, device, false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_every_combination_per_seed() {
        let axes: Vec<Axis> = ["train.lr=1e-3,3e-4", "model.d_model=32,64"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let p = plan(None, &[], &axes, &[1, 2], Path::new("sw")).unwrap();
        assert_eq!(p.len(), 8);
        assert_eq!(
            p[0].dir,
            Path::new("sw/train.lr=1e-3,model.d_model=32,seed=1")
        );
        assert!(p[7].sets.contains(&"model.d_model=64".to_string()));
        assert!(p[7].sets.contains(&"run.seed=2".to_string()));
        let dirs: std::collections::BTreeSet<_> = p.iter().map(|x| x.dir.clone()).collect();
        assert_eq!(dirs.len(), 8, "one folder each");
        assert!(
            command(Some(Path::new("configs/q.toml")), &p[0]).starts_with(
                "dfm train --config configs/q.toml --set train.lr=1e-3 --set model.d_model=32"
            )
        );
    }

    #[test]
    fn bad_axes_are_refused_before_anything_runs() {
        assert!("train.lr".parse::<Axis>().is_err());
        assert!("train.lr=1e-3,".parse::<Axis>().is_err());
        let bad: Axis = "train.lr=-1".parse().unwrap();
        let e = format!(
            "{:#}",
            plan(None, &[], &[bad], &[], Path::new("sw")).unwrap_err()
        );
        assert!(e.contains("sweep run") && e.contains("train.lr"), "{e}");
        let big: Axis = format!(
            "train.lr={}",
            (1..=300)
                .map(|i| format!("{i}e-5"))
                .collect::<Vec<_>>()
                .join(",")
        )
        .parse()
        .unwrap();
        assert!(plan(None, &[], &[big], &[], Path::new("sw")).is_err());
        // Counted before any combination is built: 2,000^3 runs are refused at once.
        let huge: Axis = format!(
            "train.lr={}",
            (1..=2000)
                .map(|i| format!("{i}e-6"))
                .collect::<Vec<_>>()
                .join(",")
        )
        .parse()
        .unwrap();
        let e = plan(
            None,
            &[],
            &[huge.clone(), huge.clone(), huge],
            &[],
            Path::new("sw"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("more than 256 runs") && e.contains("2000 values"),
            "{e}"
        );
    }

    #[test]
    fn distinct_settings_get_distinct_folders() {
        let names: Axis = "run.experiment=a b,a_b,a/b,a~20b".parse().unwrap();
        let p = plan(None, &[], &[names], &[], Path::new("sw")).unwrap();
        let dirs: std::collections::BTreeSet<_> = p.iter().map(|x| x.dir.clone()).collect();
        assert_eq!(dirs.len(), 4, "{dirs:?}");
        assert_eq!(p[1].dir, Path::new("sw/run.experiment=a_b"));
        assert!(dirs.iter().all(|d| d.parent() == Some(Path::new("sw"))));
        let long = format!("run.experiment={},{}x", "y".repeat(300), "y".repeat(300));
        let p = plan(None, &[], &[long.parse().unwrap()], &[], Path::new("sw")).unwrap();
        assert_ne!(p[0].dir, p[1].dir);
        assert!(p[0].dir.file_name().unwrap().len() <= 200);
    }
}
