//! The storage tests' commands: dfm run as a child process with a store's environment, the
//! tests' tiny world and run, and what a run folder holds (losses, last weights).

use super::dfm_bin;
use super::s3::Server;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn run(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let out: Output = Command::new(dfm_bin())
        .args(args)
        .envs(env.iter().cloned())
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// dfm started with a store's environment, its output dropped (a process the test kills).
pub fn spawn<S: AsRef<std::ffi::OsStr>>(
    env: &[(String, String)],
    args: &[S],
) -> std::process::Child {
    Command::new(dfm_bin())
        .args(args)
        .envs(env.iter().cloned())
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

pub fn ok(env: &[(String, String)], args: &[&str]) -> String {
    let (ok, out, err) = run(env, args);
    assert!(ok, "dfm {}:\n{out}\n{err}", args.join(" "));
    out
}

pub const SYNTH: [&str; 6] = [
    "--routes",
    "60",
    "--shard-size",
    "100",
    "--sample-every",
    "240",
];

/// The tests' tiny world (seed `seed`) simulated into `out`.
pub fn synth(env: &[(String, String)], out: &str, seed: &str, extra: &[&str]) {
    let mut a = vec!["data", "synth", "--out", out, "--seed", seed];
    a.extend(SYNTH);
    a.extend(extra);
    ok(env, &a);
}

pub fn train_args(data: &str, run: &Path) -> Vec<String> {
    let mut a = vec!["train".to_string()];
    for o in [
        format!("data.path={data}"),
        format!("run.dir={}", run.display()),
        "run.device=flex".into(),
        "data.image_size=16".into(),
        "data.shuffle_buffer=256".into(),
        "model.d_model=32".into(),
        "model.layers=1".into(),
        "model.heads=2".into(),
        "model.ff_mult=2".into(),
        "train.batch_size=16".into(),
        "train.max_steps=40".into(),
        "train.epochs=100".into(),
        "train.checkpoint_every=5".into(),
        "train.log_every=5".into(),
        "eval.batch_size=64".into(),
    ] {
        a.push("--set".into());
        a.push(o);
    }
    a
}

/// The losses a run logged (training and validation), in order.
pub fn losses(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for k in ["step", "loss", "val_loss"] {
            if let Some(x) = v.get(k) {
                out.push(format!("{k}={x}"));
            }
        }
    }
    assert!(out.iter().any(|l| l.starts_with("loss=")), "{text}");
    out
}

pub fn last_checkpoint(run: &Path) -> PathBuf {
    let (step, p) = dfm::checkpoint::list(run).unwrap().pop().unwrap();
    assert_eq!(step, 40, "the run reached its last step");
    p
}

/// The weights of a run's last checkpoint (its model built from the same dataset on disk: this
/// process has no credentials for the bucket).
pub fn final_weights(run: &Path, local: &Path) -> Vec<Vec<f32>> {
    let over = [format!("data.path={}", local.display())];
    let cfg = dfm::config::Config::load(Some(&run.join("config.toml")), &over).unwrap();
    let model = dfm::train::Setup::new(cfg)
        .unwrap()
        .new_model(&burn::prelude::Device::flex());
    super::weights(&dfm::checkpoint::load_model(model, &last_checkpoint(run)).unwrap())
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every local file of a dataset folder equals its object in the bucket.
pub fn assert_same_objects(s3: &Server, prefix: &str, local: &Path) {
    let files = super::file_bytes(local);
    let names: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    assert_eq!(s3.names(prefix), names, "the same files");
    for (n, bytes) in files {
        assert!(s3.get(&format!("{prefix}/{n}")) == bytes, "{n} differs");
    }
}

/// The kill -9 and resume of a run that reads its data from the bucket: killed after its first
/// checkpoints, resumed, it ends with the weights of the uninterrupted run.
pub fn killed_and_resumed(env: &[(String, String)], data: &str, run: &Path) {
    let mut child = spawn(env, &train_args(data, run));
    let t = Instant::now();
    let last = || dfm::checkpoint::list(run).map_or(0, |l| l.last().map_or(0, |c| c.0));
    while last() < 15 && child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(last() < 40, "killed before the end (at step {})", last());
    let resume = [
        "train".to_string(),
        "--resume".into(),
        run.display().to_string(),
    ];
    assert!(
        spawn(env, &resume).wait().unwrap().success(),
        "the resume finishes"
    );
}

/// The store environment of one "machine": its own `$TMPDIR`, where a run in a bucket keeps its
/// local copy.
pub fn machine(s3: &Server, dir: &Path) -> Vec<(String, String)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut env = s3.env();
    env.push(("TMPDIR".into(), dir.display().to_string()));
    env
}
