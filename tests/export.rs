//! Export bundles: a bundle loads back to the same predictions as the trained model, and a
//! tampered or mismatched bundle is refused with a message naming the file.

mod common;
use burn::prelude::*;
use common::*;
use dfm::checkpoint;
use dfm::config::Config;
use dfm::train::Setup;
use std::path::Path;

fn tiny_run(tmp: &Path) -> std::path::PathBuf {
    let data = tiny_dataset(tmp, 51);
    let run = tmp.join("run");
    let o: Vec<String> = [
        format!("data.path={}", data.display()),
        format!("run.dir={}", run.display()),
        "data.image_size=16".into(),
        "model.d_model=32".into(),
        "model.layers=1".into(),
        "model.heads=2".into(),
        "train.batch_size=16".into(),
        "train.max_steps=30".into(),
        "eval.split=val".into(),
    ]
    .to_vec();
    train_with(&o);
    run
}

fn eval_json(
    model: &dfm::model::DfmModel,
    norm: &dfm::features::Featurizer,
    data: &Path,
) -> String {
    let m = dfm::data::manifest::Manifest::load(data).unwrap();
    let o = dfm::eval::EvalOptions {
        split: "val".into(),
        batch_size: 64,
        miss_threshold_m: 2.0,
        workers: 2,
        drop: vec![],
        plots: None,
    };
    let stats = dfm::eval::train_stats(data, &m, 2).unwrap();
    let info = dfm::eval::report::ModelInfo {
        source: "x".into(),
        step: None,
        dropped: vec![],
        support_guard_mps: None,
    };
    let norm = std::sync::Arc::new(norm.clone());
    let inputs = dfm::eval::EvalInputs {
        model,
        norm: &norm,
        data,
        manifest: &m,
        stats: &stats,
        device: &Device::flex(),
    };
    let (r, _) = dfm::eval::evaluate(&inputs, info, &o).unwrap();
    serde_json::to_string(&r).unwrap()
}

#[test]
fn bundle_round_trips_and_tampering_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path());
    let out = tmp.path().join("bundle");
    let (ok, stdout, err) = dfm(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{err}");
    for f in [
        "model.bpk",
        "model.safetensors",
        "config.toml",
        "normalization.json",
        "ridge.json",
        "bundle.json",
    ] {
        assert!(out.join(f).is_file(), "{f} in the bundle");
    }
    // The ridge baseline travels with the model, hashed like the weights.
    let loaded = dfm::bundle::load_trained(&out, &Device::flex()).unwrap();
    let from_run = dfm::eval::ridge::Ridge::load_from(&run).unwrap();
    assert!(loaded.ridge.is_some() && loaded.ridge == from_run);
    let b = dfm::bundle::read_bundle(&out, &Device::flex()).unwrap();
    assert_eq!(b.meta.schema_version, dfm::SCHEMA_VERSION);
    // The bundle predicts exactly as the run's best checkpoint.
    let setup = Setup::new(Config::load(Some(&run.join("config.toml")), &[]).unwrap()).unwrap();
    let ckpt = checkpoint::load_model(
        setup.new_model(&Device::flex()),
        &checkpoint::best_or_last(&run).unwrap(),
    )
    .unwrap();
    let data = std::path::PathBuf::from(&setup.cfg.data.path);
    assert_eq!(
        eval_json(&b.model, &b.featurizer, &data),
        eval_json(&ckpt, &setup.norm, &data)
    );

    // model.safetensors: one tensor per parameter, named by its module path, with its shape.
    let st = std::fs::read(out.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    let names: Vec<&String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .collect();
    let mut params = Vec::new();
    struct Names<'a>(&'a mut Vec<(usize, Vec<usize>)>);
    impl burn::module::ModuleVisitor for Names<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0
                .push((p.val().shape().num_elements(), p.val().dims().to_vec()));
        }
    }
    b.model.visit(&mut Names(&mut params));
    assert_eq!(names.len(), params.len(), "one tensor per parameter");
    let mut shapes: Vec<Vec<usize>> = names
        .iter()
        .map(|k| {
            header[k.as_str()]["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect()
        })
        .collect();
    let mut want: Vec<Vec<usize>> = params.iter().map(|p| p.1.clone()).collect();
    shapes.sort();
    want.sort();
    assert_eq!(shapes, want, "the same shapes as the model's parameters");
    for prefix in ["enc.hist.", "enc.stops.", "enc.ctx.", "heads."] {
        assert!(
            names.iter().any(|k| k.starts_with(prefix)),
            "{prefix} in {names:?}"
        );
    }
    assert_eq!(header["__metadata__"]["format"], "dfm-model");

    // One flipped byte in the weights: refused, naming the file.
    let bad = tmp.path().join("tampered");
    copy_dir(&out, &bad);
    let p = bad.join("model.bpk");
    let mut bytes = std::fs::read(&p).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
    let e = dfm::bundle::read_bundle(&bad, &Device::flex())
        .err()
        .expect("tampered bundle refused")
        .to_string();
    assert!(e.contains("model.bpk") && e.contains("SHA-256"), "{e}");

    // A bundle made for another schema version: refused.
    let old = tmp.path().join("old");
    copy_dir(&out, &old);
    let meta = std::fs::read_to_string(old.join("bundle.json")).unwrap();
    let v = dfm::SCHEMA_VERSION;
    std::fs::write(
        old.join("bundle.json"),
        meta.replace(
            &format!("\"schema_version\": {v}"),
            &format!("\"schema_version\": {}", v + 1),
        ),
    )
    .unwrap();
    let e = dfm::bundle::read_bundle(&old, &Device::flex())
        .err()
        .expect("schema mismatch refused")
        .to_string();
    assert!(e.contains("schema version"), "{e}");

    // File names in bundle.json: only plain names inside the bundle, only regular files. A
    // listed `/dev/zero` (which would never end) or `../x` is refused at once, as is a link.
    let names = tmp.path().join("names");
    copy_dir(&out, &names);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(names.join("bundle.json")).unwrap()).unwrap();
    let with_file = |name: &str| {
        let mut m = meta.clone();
        m["files"][name] = serde_json::json!("00");
        std::fs::write(names.join("bundle.json"), m.to_string()).unwrap();
        dfm::bundle::read_bundle(&names, &Device::flex())
            .err()
            .expect("refused")
            .to_string()
    };
    for bad in ["/dev/zero", "../model.bpk", "sub/x", ".."] {
        let e = with_file(bad);
        assert!(e.contains("not a plain file name"), "{bad}: {e}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/zero", names.join("zero")).unwrap();
        let e = with_file("zero");
        assert!(e.contains("not a regular file"), "{e}");
    }

    // --step of a checkpoint that does not exist names the steps kept.
    let (ok, _, err) = dfm(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--step",
        "7",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("no checkpoint at step 7"), "{err}");

    // An export replaces an older bundle, never a folder holding other files.
    let export_to = |to: &Path| {
        let (r, t) = (run.to_str().unwrap(), to.to_str().unwrap());
        dfm(&["export", "--run", r, "--out", t])
    };
    let (ok, _, err) = export_to(&out);
    assert!(ok, "a bundle is replaced: {err}");
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("thesis.tex"), "years of work").unwrap();
    let (ok, _, err) = export_to(&mine);
    assert!(!ok && err.contains("thesis.tex"), "{err}");
    assert_eq!(
        std::fs::read_to_string(mine.join("thesis.tex")).unwrap(),
        "years of work"
    );
    std::fs::write(out.join("notes.md"), "mine").unwrap();
    let (ok, _, err) = export_to(&out);
    assert!(!ok && err.contains("notes.md"), "{err}");
    assert!(out.join("notes.md").is_file() && out.join("bundle.json").is_file());
}
