//! Commands through the binary on a tiny world: `dfm quickstart` (simulate, train, evaluate,
//! export, and continue a finished run), `dfm data sample` -> `dfm predict`, and `dfm eval`
//! on every split (`--split all`) with a JSON report.

mod common;
use common::*;
use std::path::Path;

/// The quickstart config on a tiny world and model, everything under `dir`.
fn quickstart_args(dir: &Path) -> Vec<String> {
    let mut a = vec![
        "quickstart".to_string(),
        "--config".into(),
        "configs/quickstart.toml".into(),
        "--device".into(),
        "flex".into(),
    ];
    for s in [
        format!("data.path={}", dir.join("world").display()),
        format!("run.dir={}", dir.join("run").display()),
        "data.synth_routes=40".into(),
        "data.image_size=16".into(),
        "model.d_model=32".into(),
        "model.layers=1".into(),
        "model.heads=2".into(),
        "train.epochs=1".into(),
        "train.max_steps=30".into(),
        "train.warmup_steps=5".into(),
    ] {
        a.push("--set".into());
        a.push(s);
    }
    a
}

#[test]
fn quickstart_sample_predict_and_eval_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let args = quickstart_args(tmp.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = dfm(&args);
    assert!(ok, "{out}\n{err}");
    // The job's own report: the trained steps, the evaluation next to the baselines, the bundle.
    assert!(out.contains("trained 30 steps"), "{out}");
    assert!(
        out.contains("model K=6") && out.contains("constant velocity"),
        "{out}"
    );
    assert!(out.contains("exported the best model"), "{out}");
    let run = tmp.path().join("run");
    for f in [
        "config.toml",
        "metrics.jsonl",
        "eval_test.json",
        "export/bundle.json",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    // Again: the run is complete, nothing is trained twice.
    let (ok, out, _) = dfm(&args);
    assert!(ok);
    assert!(out.contains("already complete (30 steps)"), "{out}");

    // Request-ready samples, then predictions for each.
    let world = tmp.path().join("world");
    let samples = tmp.path().join("samples.jsonl");
    let (ok, _, err) = dfm(&[
        "data",
        "sample",
        "--data",
        world.to_str().unwrap(),
        "--split",
        "test",
        "--limit",
        "5",
        "--out",
        samples.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&samples)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|v| v["history"].is_array()));
    // A reader that stops early (`dfm data sample | head -1`) ends the command quietly.
    {
        use std::io::BufRead;
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::process::Command::new(dfm_bin())
            .args([
                "data",
                "sample",
                "--data",
                world.to_str().unwrap(),
                "--limit",
                "500",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with('{'), "{first}");
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            out.status.success() || out.status.signal() == Some(13),
            "{:?}: {err}",
            out.status
        );
    }
    let preds = tmp.path().join("predictions.jsonl");
    let bundle = run.join("export");
    let (ok, _, err) = dfm(&[
        "predict",
        "--model",
        bundle.to_str().unwrap(),
        "--input",
        samples.to_str().unwrap(),
        "--output",
        preds.to_str().unwrap(),
        "--device",
        "flex",
    ]);
    assert!(ok, "{err}");
    let p: Vec<serde_json::Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(p.len(), 5);
    for (s, q) in lines.iter().zip(&p) {
        assert_eq!(s["key"], q["key"], "same order");
        assert_eq!(q["modes"].as_array().unwrap().len(), 6);
    }

    // Every split at once, as JSON.
    let report = tmp.path().join("all.json");
    let (ok, _, err) = dfm(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--split",
        "all",
        "--device",
        "flex",
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let test: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval_test.json")).unwrap())
            .unwrap();
    assert_eq!(all["split"], "all");
    assert!(
        all["samples"].as_u64().unwrap() > test["samples"].as_u64().unwrap(),
        "all splits hold more samples than the test split"
    );
}
