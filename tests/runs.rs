//! Comparing runs without a server (`dfm runs list`, `dfm runs compare`) and sweeps from one
//! config (`dfm sweep`): the numbers printed are the run folders' own, the overlay plot is a
//! PNG, a sweep trains every combination once (running it again keeps what finished).

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn k1(run: &Path) -> f64 {
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval_test.json")).unwrap())
            .unwrap();
    r["trajectory"]["at_1"]["min_fde_m"].as_f64().unwrap()
}

fn tiny(data: &Path) -> Vec<String> {
    let mut o = tiny_model();
    o.extend([
        format!("data.path={}", data.display()),
        "train.max_steps=20".into(),
        "train.log_every=5".into(),
    ]);
    o
}

#[test]
fn runs_list_and_compare_show_the_run_folders_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_dataset(tmp.path(), 71);
    let root = tmp.path().join("runs");
    for seed in [1, 2] {
        let mut o = tiny(&data);
        o.push(format!("run.seed={seed}"));
        o.push(format!(
            "run.dir={}",
            root.join(format!("s{seed}")).display()
        ));
        train_with(&o);
    }
    let (a, b) = (root.join("s1"), root.join("s2"));
    let (ka, kb) = (k1(&a), k1(&b));
    assert_ne!(ka, kb, "two seeds, two models");

    let (ok, out, err) = dfm(&["runs", "list", root.to_str().unwrap()]);
    assert!(ok, "{err}");
    for (name, k) in [("s1", ka), ("s2", kb)] {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} listed: {out}"));
        assert!(line.contains(&format!("{k:.4}")), "{line}");
        assert!(line.ends_with("finished"), "{line}");
    }

    let png = tmp.path().join("overlay.png");
    let (ok, out, err) = dfm(&[
        "runs",
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("minFDE K=1 (m)"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains(&format!("{ka:.4}"))
            && row.contains(&format!("{kb:.4}"))
            && row.contains(&format!("{:+.4}", kb - ka)),
        "{row}"
    );
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (900, 560));

    // Not a run folder: a clear error.
    let (ok, _, err) = dfm(&[
        "runs",
        "compare",
        a.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("is not a run folder"), "{err}");

    // --png naming a folder: a clear error, and no temporary file left in it.
    let folder = tmp.path().join("plots");
    std::fs::create_dir_all(&folder).unwrap();
    let (ab, f) = (
        (a.to_str().unwrap(), b.to_str().unwrap()),
        folder.to_str().unwrap(),
    );
    let (ok, _, err) = dfm(&["runs", "compare", ab.0, ab.1, "--png", f]);
    assert!(!ok && err.contains("is a folder"), "{err}");
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        0,
        "nothing left in it"
    );

    // A broken run folder among the runs: reported, the others listed.
    let broken = root.join("s3");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.toml"), "[model]\nd_model = -1\n").unwrap();
    std::fs::write(broken.join("metrics.jsonl"), "").unwrap();
    let (ok, out, err) = dfm(&["runs", "list", root.to_str().unwrap()]);
    assert!(ok, "{err}");
    let listed = |n: &str| out.lines().any(|l| l.starts_with(n));
    assert!(listed("s1") && listed("s2") && !listed("s3"), "{out}");
    assert!(err.contains("s3") && err.contains("not listed"), "{err}");
}

#[test]
fn a_sweep_trains_every_combination_once_and_compares_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_dataset(tmp.path(), 72);
    let out = tmp.path().join("sweep");
    let mut args: Vec<String> = [
        "sweep",
        "--grid",
        "train.lr=1e-3,3e-3",
        "--seeds",
        "1",
        "--device",
        "flex",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(out.display().to_string());
    for s in tiny(&data) {
        args.push("--set".into());
        args.push(s);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut print = argv.clone();
    print.push("--print");
    let (ok, text, err) = dfm(&print);
    assert!(ok, "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("dfm train") && lines[0].contains("--set train.lr=1e-3"));
    assert!(!out.exists(), "--print runs nothing");

    let (ok, text, err) = dfm(&argv);
    assert!(ok, "{text}{err}");
    let runs = ["train.lr=1e-3,seed=1", "train.lr=3e-3,seed=1"];
    for r in runs {
        assert!(out.join(r).join("eval_test.json").is_file(), "{r}: {text}");
    }
    assert!(text.contains("diff vs 1"), "compared: {text}");
    assert!(out.join("compare.png").is_file());
    let cfg = std::fs::read_to_string(out.join(runs[1]).join("config.toml")).unwrap();
    assert!(cfg.contains("lr = 0.003"), "{cfg}");

    // Again: nothing retrains.
    let (ok, text, err) = dfm(&argv);
    assert!(ok, "{err}");
    assert_eq!(text.matches("finished before: kept").count(), 2, "{text}");

    let (ok, _, err) = dfm(&["sweep", "--grid", "train.lr=oops", "--out", "x"]);
    assert!(!ok && err.contains("train.lr"), "{err}");

    // A run that fails (its data's manifest is broken) is reported, the others still train,
    // and the sweep ends in an error naming it.
    let bad = tmp.path().join("bad-data");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("manifest.json"), "{").unwrap();
    let out2 = tmp.path().join("sweep2");
    let grid = format!("data.path={},{}", data.display(), bad.display());
    let mut args: Vec<String> = ["sweep", "--device", "flex", "--grid", &grid, "--out"]
        .map(String::from)
        .to_vec();
    args.push(out2.display().to_string());
    for s in tiny(&data) {
        args.extend(["--set".into(), s]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text, err) = dfm(&argv);
    assert!(!ok, "{text}");
    assert!(
        err.contains("1 of 2 sweep runs failed") && err.contains("bad-data"),
        "{err}"
    );
    assert!(
        text.contains("[1/2]") && text.contains("[2/2]"),
        "both runs tried: {text}"
    );
    let trained = std::fs::read_dir(&out2)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("eval_test.json").is_file())
        .count();
    assert_eq!(trained, 1, "the good run trained");
}
