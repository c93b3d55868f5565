//! Comparing runs without a tracking server: `dfm runs list` (one line per run folder) and
//! `dfm runs compare` (their evaluations side by side with differences, and their loss curves
//! overlaid in one PNG). Everything comes from the run folders' own files: `config.toml`,
//! `metrics.jsonl`, `eval_<split>.json`, `loss.png` (written when a run finishes) and `.lock`.

use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One run folder, summarized.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub objective: String,
    /// The last logged step.
    pub steps: u64,
    pub best_val_loss: Option<f64>,
    /// The evaluation the run wrote when it finished (`eval_<eval.split>.json`).
    pub eval: Option<Value>,
    pub status: Status,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// A dfm process holds the run's lock.
    Running,
    /// The run ended (its loss plot is written at the end).
    Finished,
    /// Stopped before the end (killed, failed, or not started): `dfm train --resume` goes on.
    Stopped,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Stopped => "stopped",
        }
    }
}

/// The headline numbers of an evaluation: (label, JSON path).
pub const HEADLINE: [(&str, &str); 14] = [
    ("samples", "samples"),
    ("minFDE K=1 (m)", "trajectory.at_1.min_fde_m"),
    ("minADE K=1 (m)", "trajectory.at_1.min_ade_m"),
    ("minFDE best of K (m)", "trajectory.at_k.min_fde_m"),
    ("miss rate best of K", "trajectory.at_k.miss_rate"),
    (
        "CV minFDE K=1 (m)",
        "baselines.constant_velocity.trajectory.at_1.min_fde_m",
    ),
    (
        "ridge minFDE K=1 (m)",
        "baselines.ridge.trajectory.at_1.min_fde_m",
    ),
    ("ETA MAE (s)", "eta.mae_s"),
    ("ETA P10-P90 coverage", "eta.p10_p90_coverage"),
    ("on-time AUROC", "on_time.auroc"),
    ("delivered AUROC", "delivered.auroc"),
    ("next stop HR@3", "next_stop.hr_at_3"),
    ("next stop accuracy", "next_stop.accuracy"),
    ("mode calibration ECE", "trajectory.mode_calibration.ece"),
];

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A headline number of an evaluation, when it has it.
pub fn headline(eval: &Value, path: &str) -> Option<f64> {
    at(eval, path)?.as_f64().filter(|x| x.is_finite())
}

fn metrics(dir: &Path) -> Vec<Value> {
    let p = dir.join("metrics.jsonl");
    crate::plot::metric_rows(
        &crate::util::read_text_bounded(&p, crate::util::limits::METRICS).unwrap_or_default(),
    )
}

fn locked(dir: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(".lock"))
    else {
        return false;
    };
    matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Reads one run folder.
pub fn summarize(dir: &Path) -> anyhow::Result<RunSummary> {
    let cfg = crate::config::Config::load(Some(&dir.join("config.toml")), &[])
        .with_context(|| format!("{} is not a run folder", dir.display()))?;
    let lines = metrics(dir);
    let steps = lines
        .iter()
        .filter_map(|l| l["step"].as_u64())
        .max()
        .unwrap_or(0);
    let best_val_loss = lines
        .iter()
        .filter_map(|l| l["val_loss"].as_f64())
        .filter(|x| x.is_finite())
        .reduce(f64::min);
    let eval_path = dir.join(format!("eval_{}.json", cfg.eval.split));
    let eval = crate::util::read_text_bounded(&eval_path, crate::util::limits::METADATA)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let status = if locked(dir) {
        Status::Running
    } else if dir.join("loss.png").is_file() {
        Status::Finished
    } else {
        Status::Stopped
    };
    Ok(RunSummary {
        dir: dir.to_path_buf(),
        objective: format!("{:?}", cfg.train.objective).to_lowercase(),
        steps,
        best_val_loss,
        eval,
        status,
    })
}

/// Every run folder under `root` (folders holding a `config.toml`, at most 4 levels down),
/// sorted by path.
pub fn find(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(root.is_dir(), "{} is not a folder", root.display());
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        if d.join("config.toml").is_file() && d.join("metrics.jsonl").exists() {
            out.push(d);
            continue;
        }
        if depth == 4 {
            continue;
        }
        for e in std::fs::read_dir(&d)?.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn num(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 || v == v.trunc() => format!("{v:.0}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn name(dir: &Path, root: &Path) -> String {
    dir.strip_prefix(root)
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(dir)
        .display()
        .to_string()
}

/// `dfm runs list`: one line per run under `root`.
pub fn render_list(root: &Path, runs: &[RunSummary]) -> String {
    let mut s = format!(
        "{:<32} {:<10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9}  status\n",
        "run", "objective", "steps", "best val", "K=1 FDE", "best-of-K", "CV K=1", "next@1"
    );
    for r in runs {
        let e = |p: &str| r.eval.as_ref().and_then(|e| headline(e, p));
        s.push_str(&format!(
            "{:<32} {:<10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9}  {}\n",
            name(&r.dir, root),
            r.objective,
            r.steps,
            num(r.best_val_loss),
            num(e("trajectory.at_1.min_fde_m")),
            num(e("trajectory.at_k.min_fde_m")),
            num(e("baselines.constant_velocity.trajectory.at_1.min_fde_m")),
            num(e("next_stop.accuracy")),
            r.status.name()
        ));
    }
    s
}

/// `dfm runs compare`: the runs' evaluations side by side; every run after the first gets its
/// difference from the first (and the relative difference).
pub fn render_compare(runs: &[RunSummary]) -> String {
    let root = common_root(runs);
    let names: Vec<String> = runs.iter().map(|r| name(&r.dir, &root)).collect();
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(14, 28);
    let mut s = format!("{:<26}", "");
    for (i, n) in names.iter().enumerate() {
        s.push_str(&format!(" {:>w$}", short(n, w)));
        if i > 0 {
            s.push_str(&format!(" {:>18}", format!("diff vs {}", 1)));
        }
    }
    s.push('\n');
    let mut rows: Vec<(String, Vec<Option<f64>>)> = vec![
        (
            "steps".into(),
            runs.iter().map(|r| Some(r.steps as f64)).collect(),
        ),
        (
            "best validation loss".into(),
            runs.iter().map(|r| r.best_val_loss).collect(),
        ),
    ];
    for (label, path) in HEADLINE {
        let v: Vec<Option<f64>> = runs
            .iter()
            .map(|r| r.eval.as_ref().and_then(|e| headline(e, path)))
            .collect();
        if v.iter().any(Option::is_some) {
            rows.push((label.to_string(), v));
        }
    }
    for (label, v) in rows {
        s.push_str(&format!("{label:<26}"));
        for (i, x) in v.iter().enumerate() {
            s.push_str(&format!(" {:>w$}", num(*x)));
            if i > 0 {
                s.push_str(&format!(" {:>18}", diff(v[0], *x)));
            }
        }
        s.push('\n');
    }
    let missing: Vec<String> = runs
        .iter()
        .filter(|r| r.eval.is_none())
        .map(|r| r.dir.display().to_string())
        .collect();
    if !missing.is_empty() {
        s.push_str(&format!("no evaluation yet: {}\n", missing.join(", ")));
    }
    s
}

fn diff(base: Option<f64>, x: Option<f64>) -> String {
    match (base, x) {
        (Some(b), Some(x)) if b != 0.0 => {
            format!("{:+.4} ({:+.1}%)", x - b, 100.0 * (x - b) / b.abs())
        }
        (Some(b), Some(x)) => format!("{:+.4}", x - b),
        _ => "-".into(),
    }
}

fn short(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n {
        return s.to_string();
    }
    format!("…{}", c[c.len() - (n - 1)..].iter().collect::<String>())
}

fn common_root(runs: &[RunSummary]) -> PathBuf {
    let dirs: Vec<PathBuf> = runs.iter().map(|r| r.dir.clone()).collect();
    common_folder(&dirs)
}

/// The deepest folder holding all of `dirs` ("." when they share none).
pub fn common_folder(dirs: &[PathBuf]) -> PathBuf {
    let mut root = dirs
        .first()
        .and_then(|d| d.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    while !dirs.iter().all(|d| d.starts_with(&root)) && root.pop() {}
    if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    }
}

/// Training and validation loss of each run on one plot.
pub fn overlay_losses(runs: &[RunSummary], out: &Path) -> anyhow::Result<()> {
    let root = common_root(runs);
    let mut curves = Vec::new();
    for r in runs {
        let lines = metrics(&r.dir);
        let series = |key: &str| crate::plot::series(&lines, key);
        let n = name(&r.dir, &root);
        curves.push(crate::plot::Curve {
            label: format!("{n} train"),
            points: series("loss"),
            bold: false,
        });
        curves.push(crate::plot::Curve {
            label: format!("{n} validation"),
            points: series("val_loss"),
            bold: true,
        });
    }
    curves.retain(|c| !c.points.is_empty());
    crate::plot::curves("loss by step (log scale)", &curves, out)
}
