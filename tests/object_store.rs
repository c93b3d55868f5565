//! Datasets in object storage, against a real S3-compatible server on loopback (`moto_server`)
//! and Python's `http.server`: a dataset simulated into a bucket is byte for byte the one
//! simulated on disk; training, a kill -9 and resume, evaluation and prediction from the bucket
//! give what they give from the disk; parts written by separate processes merge in the bucket;
//! a missing, corrupt or stalled object is an error naming its URL, never a hang.

mod common;

use common::s3;
use common::skip;
use common::store_cli::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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
    let sample = |env: &[(String, String)], d: &str| {
        ok(
            env,
            &[
                "data", "sample", "--data", d, "--split", "test", "--limit", "5",
            ],
        )
    };
    let requests = sample(&[], local.to_str().unwrap());
    assert_eq!(requests.lines().count(), 5);
    assert_eq!(sample(&env, &url), requests, "data sample from the bucket");
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

/// A run whose folder is in the bucket (`run.dir = s3://...`), killed with kill -9 on one
/// machine once the bucket holds a checkpoint and resumed on another from the bucket alone,
/// ends with the losses and weights of the same run on disk; a checkpoint cut off before its
/// `state.json` is passed over; bundles are exported to, evaluated from and refused in the
/// bucket as in folders.
#[test]
fn a_run_in_a_bucket_resumes_on_another_machine() {
    let Some(s3) = s3::moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let world = tmp.path().join("world");
    synth(&[], world.to_str().unwrap(), "7", &[]);
    let data = world.to_str().unwrap();
    let a = tmp.path().join("a");
    ok(&[], &strs(&train_args(data, &a)));

    let url = s3.url("runs/r1");
    let (m1, m2) = (
        machine(&s3, &tmp.path().join("m1")),
        machine(&s3, &tmp.path().join("m2")),
    );
    let args = train_args(data, Path::new(&url));
    let mut child = spawn(&m1, &args);
    let t = Instant::now();
    let has = |rel: &str| s3.tree("runs/r1").iter().any(|n| n == rel);
    while !has("ckpt-00000015/state.json") && child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!has("ckpt-00000040/state.json"), "killed before the end");
    let (again, _, err) = run(&m2, &strs(&args));
    assert!(
        !again && err.contains(&format!("--resume {url}")),
        "a new run over it: {err}"
    );
    ok(&m2, &["train", "--resume", &url]);
    let b = tmp.path().join("b");
    s3.download("runs/r1", &b);
    assert_eq!(losses(&a), losses(&b), "the same losses");
    assert!(
        final_weights(&a, &world) == final_weights(&b, &world),
        "the same weights"
    );
    let left = std::fs::read_dir(tmp.path().join("m2/dfm-runs")).unwrap();
    assert!(
        left.flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .next()
            .is_none(),
        "the local copy is removed once the bucket holds the run"
    );

    // A checkpoint cut off before its state.json: the resume goes back to the one before.
    s3.delete("runs/r1/ckpt-00000040/state.json");
    let out = ok(&m1, &["train", "--resume", &url]);
    assert!(out.contains("from step 35"), "{out}");
    let c = tmp.path().join("c");
    s3.download("runs/r1", &c);
    assert!(final_weights(&a, &world) == final_weights(&c, &world));
    let tops = |names: Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = names
            .iter()
            .map(|n| n.split('/').next().unwrap().into())
            .collect();
        v.dedup();
        v
    };
    let mut on_disk: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != ".lock")
        .collect();
    on_disk.sort();
    assert_eq!(
        tops(s3.tree("runs/r1")),
        on_disk,
        "the bucket holds what the folder holds"
    );

    // Export into the bucket, evaluate from it; a prefix holding other objects is refused.
    let bundle = s3.url("bundles/b1");
    ok(&m1, &["export", "--run", &url, "--out", &bundle]);
    let bl = tmp.path().join("bl");
    ok(
        &[],
        &[
            "export",
            "--run",
            a.to_str().unwrap(),
            "--out",
            bl.to_str().unwrap(),
        ],
    );
    let files = common::file_bytes(&bl);
    let names: Vec<&String> = files.iter().map(|f| &f.0).collect();
    assert_eq!(s3.tree("bundles/b1").iter().collect::<Vec<_>>(), names);
    let bb = tmp.path().join("bb");
    s3.download("bundles/b1", &bb);
    let w = |d: &Path| {
        let b = dfm::bundle::read_bundle(d, &burn::prelude::Device::flex()).unwrap();
        common::weights(&b.model)
    };
    assert!(
        w(&bl) == w(&bb),
        "the bundle in the bucket holds the same weights"
    );
    let eval = |env: &[(String, String)], model: &str, json: &Path| {
        let j = json.to_str().unwrap();
        ok(
            env,
            &[
                "eval", "--model", model, "--data", data, "--split", "test", "--json", j,
            ],
        );
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        v.as_object_mut()
            .unwrap()
            .retain(|k, _| !k.contains("model") && !k.contains("path"));
        v
    };
    let (ea, eb) = (tmp.path().join("ea.json"), tmp.path().join("eb.json"));
    assert_eq!(eval(&[], a.to_str().unwrap(), &ea), eval(&m1, &bundle, &eb));
    s3.put("bundles/b2/notes.txt", b"mine".to_vec());
    let (done, _, err) = run(
        &m1,
        &["export", "--run", &url, "--out", &s3.url("bundles/b2")],
    );
    assert!(!done && err.contains("notes.txt"), "{err}");
    assert_eq!(
        s3.tree("bundles/b2"),
        ["notes.txt"],
        "nothing of the user's is touched"
    );
}

/// A dataset bound for a bucket goes there a shard at a time as it is written (this machine
/// never holds it whole): a writer killed half way has uploaded shards but no manifest, so the
/// prefix holds no dataset; the next writer of that prefix writes its dataset and removes them.
#[test]
fn shards_go_up_as_they_are_written_and_a_killed_writer_leaves_no_dataset() {
    let Some(s3) = s3::moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let env = machine(&s3, &tmp.path().join("m"));
    let url = s3.url("big/w");
    let args = [
        "data",
        "synth",
        "--out",
        &url,
        "--routes",
        "2000",
        "--shard-size",
        "20",
    ];
    let mut child = spawn(&env, &args);
    let t = Instant::now();
    while s3.names("big/w").len() < 3 && child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let names = s3.names("big/w");
    assert!(
        names.len() >= 3,
        "shards are in the bucket while it writes: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "manifest.json"),
        "killed before the end"
    );
    let (inspected, _, err) = run(&env, &["data", "inspect", &url]);
    assert!(!inspected && err.contains("manifest"), "{err}");
    ok(
        &env,
        &[
            "data",
            "synth",
            "--out",
            &url,
            "--routes",
            "60",
            "--shard-size",
            "20",
        ],
    );
    let m: serde_json::Value = serde_json::from_slice(&s3.get("big/w/manifest.json")).unwrap();
    let mut listed: Vec<String> = m["splits"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s["shards"].as_array().unwrap().iter())
        .map(|sh| sh["file"].as_str().unwrap().to_string())
        .chain(["manifest.json".to_string()])
        .collect();
    listed.sort();
    assert_eq!(
        s3.names("big/w"),
        listed,
        "the new dataset and nothing else"
    );
    ok(&env, &["data", "inspect", &url]);
}
