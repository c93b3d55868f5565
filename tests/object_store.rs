//! Datasets in object storage, against a real S3-compatible server on loopback (`moto_server`)
//! and Python's `http.server`: a dataset simulated into a bucket is byte for byte the one
//! simulated on disk; training, a kill -9 and resume, evaluation and prediction from the bucket
//! give what they give from the disk; parts written by separate processes merge in the bucket;
//! a missing, corrupt or stalled object is an error naming its URL, never a hang.

mod common;

use common::s3::{self, Server};
use common::{dfm_bin, skip};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
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

fn ok(env: &[(String, String)], args: &[&str]) -> String {
    let (ok, out, err) = run(env, args);
    assert!(ok, "dfm {}:\n{out}\n{err}", args.join(" "));
    out
}

const SYNTH: [&str; 6] = [
    "--routes",
    "60",
    "--shard-size",
    "100",
    "--sample-every",
    "240",
];

/// The tests' tiny world (seed `seed`) simulated into `out`.
fn synth(env: &[(String, String)], out: &str, seed: &str, extra: &[&str]) {
    let mut a = vec!["data", "synth", "--out", out, "--seed", seed];
    a.extend(SYNTH);
    a.extend(extra);
    ok(env, &a);
}

fn train_args(data: &str, run: &Path) -> Vec<String> {
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
fn losses(run: &Path) -> Vec<String> {
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

fn last_checkpoint(run: &Path) -> PathBuf {
    let (step, p) = dfm::checkpoint::list(run).unwrap().pop().unwrap();
    assert_eq!(step, 40, "the run reached its last step");
    p
}

/// The weights of a run's last checkpoint (its model built from the same dataset on disk: this
/// process has no credentials for the bucket).
fn final_weights(run: &Path, local: &Path) -> Vec<Vec<f32>> {
    let over = [format!("data.path={}", local.display())];
    let cfg = dfm::config::Config::load(Some(&run.join("config.toml")), &over).unwrap();
    let model = dfm::train::Setup::new(cfg)
        .unwrap()
        .new_model(&burn::prelude::Device::flex());
    common::weights(&dfm::checkpoint::load_model(model, &last_checkpoint(run)).unwrap())
}

/// Every local file of a dataset folder equals its object in the bucket.
fn assert_same_objects(s3: &Server, prefix: &str, local: &Path) {
    let files = common::file_bytes(local);
    let names: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    assert_eq!(s3.names(prefix), names, "the same files");
    for (n, bytes) in files {
        assert!(s3.get(&format!("{prefix}/{n}")) == bytes, "{n} differs");
    }
}

/// The kill -9 and resume of a run that reads its data from the bucket: killed after its first
/// checkpoints, resumed, it ends with the weights of the uninterrupted run.
fn killed_and_resumed(env: &[(String, String)], data: &str, run: &Path) {
    let spawn = |args: &[String]| {
        Command::new(dfm_bin())
            .args(args)
            .envs(env.iter().cloned())
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn(&train_args(data, run));
    let t = Instant::now();
    let last = || dfm::checkpoint::list(run).map_or(0, |l| l.last().map_or(0, |c| c.0));
    while last() < 15 && child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(last() < 40, "killed before the end (at step {})", last());
    let resume = ["train".into(), "--resume".into(), run.display().to_string()];
    assert!(
        spawn(&resume).wait().unwrap().success(),
        "the resume finishes"
    );
}

#[test]
fn a_dataset_in_a_bucket_is_used_as_the_same_dataset_on_disk() {
    let Some(s3) = s3::moto() else { return };
    let env = s3.env();
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("world");
    let url = s3.url("worlds/w7");
    synth(&[], local.to_str().unwrap(), "7", &[]);
    synth(&env, &url, "7", &[]);
    assert_same_objects(&s3, "worlds/w7", &local);
    let out = ok(&env, &["data", "inspect", &url]);
    assert!(out.contains("train"), "{out}");
    let (ok2, _, err) = run(&env, &["data", "synth", "--out", &url]);
    assert!(
        !ok2 && err.contains("--force"),
        "a dataset is not overwritten: {err}"
    );

    // Training from the bucket and from the disk: the same losses, the same weights.
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    ok(&[], &strs(&train_args(local.to_str().unwrap(), &a)));
    ok(&env, &strs(&train_args(&url, &b)));
    assert_eq!(losses(&a), losses(&b), "the same losses from the bucket");
    let weights = |r: &Path| final_weights(r, &local);
    assert!(
        weights(&a) == weights(&b),
        "the same weights from the bucket"
    );
    killed_and_resumed(&env, &url, &c);
    assert!(
        weights(&a) == weights(&c),
        "a killed run resumed from the bucket"
    );

    // Evaluation and prediction from the bucket.
    let eval = |env: &[(String, String)], data: &str, json: &Path| {
        let args = [
            "eval",
            "--model",
            a.to_str().unwrap(),
            "--data",
            data,
            "--split",
            "test",
        ];
        ok(
            env,
            &[&args[..], &["--json", json.to_str().unwrap()]].concat(),
        );
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        v.as_object_mut()
            .unwrap()
            .retain(|k, _| !k.contains("data") && !k.contains("path"));
        v
    };
    let (el, eb) = (tmp.path().join("el.json"), tmp.path().join("eb.json"));
    assert_eq!(
        eval(&[], local.to_str().unwrap(), &el),
        eval(&env, &url, &eb)
    );
    let predict = |env: &[(String, String)], data: &str, out: &Path| {
        let m = a.to_str().unwrap();
        ok(
            env,
            &[
                "predict",
                "--model",
                m,
                "--data",
                data,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        let files = common::file_bytes(out);
        assert!(!files.is_empty());
        files
    };
    let (pl, pb) = (tmp.path().join("pl"), tmp.path().join("pb"));
    let files = predict(&[], local.to_str().unwrap(), &pl);
    assert!(files == predict(&env, &url, &pb));
    let m = a.to_str().unwrap();
    ok(
        &env,
        &[
            "predict",
            "--model",
            m,
            "--data",
            &url,
            "--out",
            &s3.url("preds"),
        ],
    );
    assert!(
        s3.get(&format!("preds/{}", files[0].0)) == files[0].1,
        "--out in the bucket"
    );

    // --force replaces the dataset: never a mix, no old shard left behind.
    synth(&env, &url, "8", &["--force"]);
    let names = s3.names("worlds/w7");
    let m: serde_json::Value = serde_json::from_slice(&s3.get("worlds/w7/manifest.json")).unwrap();
    let listed = m["splits"].as_object().unwrap().values();
    let mut files: Vec<String> = listed
        .flat_map(|s| s["shards"].as_array().unwrap().iter())
        .map(|sh| sh["file"].as_str().unwrap().to_string())
        .collect();
    files.push("manifest.json".into());
    files.sort();
    assert_eq!(
        names, files,
        "the bucket holds the new dataset and nothing else"
    );
    ok(&env, &["data", "inspect", &url]);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// An array job's parts, each written into the bucket by a process of its own, merge there into
/// the dataset that merging them on disk gives.
#[test]
fn parts_written_by_separate_processes_merge_in_the_bucket() {
    let Some(s3) = s3::moto() else { return };
    let env = s3.env();
    let tmp = tempfile::tempdir().unwrap();
    let part = |i: usize| {
        [
            "--shard-index".to_string(),
            i.to_string(),
            "--num-shards".into(),
            "2".into(),
        ]
    };
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let (env, url) = (env.clone(), s3.url(&format!("job/p{i}")));
            std::thread::spawn(move || synth(&env, &url, "9", &strs(&part(i))))
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let local: Vec<String> = (0..2)
        .map(|i| {
            let p = tmp.path().join(format!("p{i}"));
            synth(&[], p.to_str().unwrap(), "9", &strs(&part(i)));
            p.display().to_string()
        })
        .collect();
    let merged = tmp.path().join("merged");
    let (u0, u1, um) = (s3.url("job/p0"), s3.url("job/p1"), s3.url("job/all"));
    ok(
        &[],
        &[
            "data",
            "merge",
            "--out",
            merged.to_str().unwrap(),
            &local[0],
            &local[1],
        ],
    );
    ok(&env, &["data", "merge", "--out", &um, &u0, &u1]);
    assert_same_objects(&s3, "job/all", &merged);
    ok(&env, &["data", "inspect", &um]);
    // A bucket part merges into a local folder too.
    let mixed = tmp.path().join("mixed");
    ok(
        &env,
        &[
            "data",
            "merge",
            "--out",
            mixed.to_str().unwrap(),
            &u0,
            &local[1],
        ],
    );
    assert_eq!(
        std::fs::read(mixed.join("manifest.json")).unwrap(),
        std::fs::read(merged.join("manifest.json")).unwrap()
    );
}

/// A shard gone or changed in the bucket, a server that stops answering, credentials in a URL:
/// each is an error that names the URL (and no secret), never a hang.
#[test]
fn a_broken_bucket_is_an_error_naming_the_url() {
    let Some(s3) = s3::moto() else { return };
    let env = s3.env();
    let url = s3.url("broken/w");
    synth(&env, &url, "11", &[]);
    let m: serde_json::Value = serde_json::from_slice(&s3.get("broken/w/manifest.json")).unwrap();
    let shard = m["splits"]["test"]["shards"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let key = format!("broken/w/{shard}");
    let shard_url = format!("{url}/{shard}");

    // One flipped byte (in the archive's end blocks, so every record still decodes), same
    // size: inspect names the shard and its hash.
    let good = s3.get(&key);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x55;
    s3.put(&key, bad);
    let (okk, out, err) = run(&env, &["data", "inspect", &url]);
    assert!(
        !okk && err.contains(&shard_url) && err.contains("SHA-256"),
        "{out}\n{err}"
    );

    // Gone: the evaluation's reader names it (the listing catches it first).
    s3.delete(&key);
    let (okk, _, err) = run(&env, &["data", "inspect", &url]);
    assert!(
        !okk && err.contains(&shard) && err.contains("missing"),
        "{err}"
    );
    s3.put(&key, good);
    ok(&env, &["data", "inspect", &url]);

    // A server that accepts and never answers: a timeout, then an error naming the URL.
    let port = s3::silent_server();
    let stalled = format!("http://127.0.0.1:{port}/w");
    let quick = [
        ("DFM_STORE_TIMEOUT_S".to_string(), "1".to_string()),
        ("DFM_STORE_RETRIES".to_string(), "1".to_string()),
    ];
    let t = Instant::now();
    let (okk, _, err) = run(&quick, &["data", "inspect", &stalled]);
    assert!(
        !okk && err.contains(&stalled) && err.contains("no answer"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "a stalled server is not a hang"
    );
    let bad_range = [("DFM_STORE_RETRIES".to_string(), "100".to_string())];
    let (okk, _, err) = run(&bad_range, &["data", "inspect", &url]);
    assert!(!okk && err.contains("DFM_STORE_RETRIES"), "{err}");

    // Credentials belong in the environment, never in a URL (nor in a message).
    let (okk, out, err) = run(
        &env,
        &["data", "inspect", "https://user:hunter2@example.org/w"],
    );
    assert!(!okk && err.contains("credentials"), "{err}");
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));
    let secret = "testing-secret-do-not-print";
    let (_, out, err) = run(&env, &["data", "inspect", &url]);
    assert!(!out.contains(secret) && !err.contains(secret));
}

/// A dataset served over plain HTTP (read-only, as `https://` is): inspected and evaluated as
/// from the disk.
#[test]
fn a_dataset_over_http_reads_as_from_disk() {
    if Command::new("python3").arg("--version").output().is_err() {
        skip("python3 is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("world");
    synth(&[], local.to_str().unwrap(), "13", &[]);
    let http = s3::http_server(tmp.path());
    let url = format!("http://127.0.0.1:{}/world", http.port);
    let a = ok(&[], &["data", "inspect", local.to_str().unwrap()]);
    let b = ok(&[], &["data", "inspect", &url]);
    let counts = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("world"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&a), counts(&b));
    let (okk, _, err) = run(&[], &["data", "synth", "--out", &url]);
    assert!(!okk && err.contains(&url), "plain HTTP is read-only: {err}");
}

/// The total size of the `.tar` files in a folder, and their names.
fn cached(dir: &Path) -> (u64, Vec<String>) {
    let mut names = Vec::new();
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().to_string();
        assert!(!n.ends_with(".partial"), "no partial copy left: {n}");
        total += e.metadata().unwrap().len();
        names.push(n);
    }
    names.sort();
    (total, names)
}

/// A shard cache keeps what a command read from the bucket under each shard's SHA-256, so that
/// a run with `data.cache_dir` reads it from the disk, with the same losses; it stays within its
/// size (`DFM_STORE_CACHE_DIR`/`_GB` for any command).
#[test]
fn a_shard_cache_serves_the_next_run_and_keeps_its_size() {
    let Some(s3) = s3::moto() else { return };
    let env = s3.env();
    let tmp = tempfile::tempdir().unwrap();
    let url = s3.url("cached/w");
    synth(&env, &url, "15", &[]);
    let m: serde_json::Value = serde_json::from_slice(&s3.get("cached/w/manifest.json")).unwrap();
    let shards: Vec<(String, String, u64)> = m["splits"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s["shards"].as_array().unwrap().clone())
        .map(|sh| {
            let f = sh["file"].as_str().unwrap().to_string();
            (
                f,
                sh["sha256"].as_str().unwrap().to_string(),
                sh["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    // Any command fills it (inspect reads every shard to its end)...
    let cache = tmp.path().join("cache");
    let env_cache = |dir: &Path, gb: f64| {
        let mut e = env.clone();
        e.push(("DFM_STORE_CACHE_DIR".into(), dir.display().to_string()));
        e.push(("DFM_STORE_CACHE_GB".into(), format!("{gb}")));
        e
    };
    ok(&env_cache(&cache, 1.0), &["data", "inspect", &url]);
    let (_, names) = cached(&cache);
    for (file, sha, _) in &shards {
        let n = format!("{sha}.tar");
        assert!(names.contains(&n), "{file} is cached as {n}: {names:?}");
        let here = std::fs::read(cache.join(&n)).unwrap();
        assert!(
            here == s3.get(&format!("cached/w/{file}")),
            "{file}: the cached copy is the shard"
        );
    }
    // ... and a run with `data.cache_dir` reads it instead of the bucket, learning the same.
    let (r1, r2) = (tmp.path().join("r1"), tmp.path().join("r2"));
    let mut a = train_args(&url, &r1);
    a.extend([
        "--set".into(),
        format!("data.cache_dir={}", cache.display()),
    ]);
    a.extend(["--set".into(), "train.max_steps=10".into()]);
    let out = ok(&env, &strs(&a));
    assert!(
        out.contains(" 0 from the store"),
        "the run reads the cache: {out}"
    );
    let mut b = train_args(&url, &r2);
    b.extend(["--set".into(), "train.max_steps=10".into()]);
    ok(&env, &strs(&b));
    assert_eq!(
        losses(&r1),
        losses(&r2),
        "and learns what it learns from the bucket"
    );

    // A cache smaller than the dataset keeps within its size.
    let largest = shards.iter().map(|s| s.2).max().unwrap();
    let bound = largest * 5 / 2;
    assert!(
        bound < shards.iter().map(|s| s.2).sum::<u64>(),
        "the bound evicts"
    );
    let small = tmp.path().join("small");
    let limits = env_cache(&small, bound as f64 / 1e9);
    ok(&limits, &["data", "inspect", &url]);
    let (total, names) = cached(&small);
    assert!(
        total <= bound && !names.is_empty(),
        "{total} bytes in {names:?}, bound {bound}"
    );
}
