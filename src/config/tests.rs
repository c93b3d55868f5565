//! The config's loading, overrides and checks.

use super::*;

/// Every shipped config parses and passes validation; the foundation family shares one model.
#[test]
fn shipped_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            Config::load(Some(&p), &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 10, "{n} configs");
    let model = |f: &str| Config::load(Some(&dir.join(f)), &[]).unwrap().model;
    for f in [
        "foundation-pretrain.toml",
        "finetune-fleet.toml",
        "finetune-lmrc.toml",
    ] {
        assert_eq!(model(f), model("foundation.toml"), "{f}");
    }
}

#[test]
fn overrides_apply_and_types_parse() {
    let c = Config::load(
        None,
        &[
            "train.lr=3e-4".into(),
            "data.path=/tmp/x".into(),
            "run.device=flex".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.train.lr, 3e-4);
    assert_eq!(c.data.path, "/tmp/x");
    assert_eq!(c.run.device, DeviceChoice::Flex);
    assert_eq!(c.run_dir(), PathBuf::from("checkpoints/run"));
}

#[test]
fn every_number_has_a_range_named_by_its_key() {
    for (set, key) in [
        ("data.workers=0", "data.workers"),
        ("data.workers=100000", "data.workers"),
        ("data.image_size=100000", "data.image_size"),
        ("model.modes=1000", "model.modes"),
        ("model.d_model=0", "model.d_model"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.epochs=0", "train.epochs"),
        ("train.lr=inf", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("train.grad_clip=nan", "train.grad_clip"),
        ("train.mirror=1.5", "train.mirror"),
        ("train.ema=1", "train.ema"),
        ("train.loss_weights.point=1e9", "train.loss_weights.point"),
        ("eval.miss_threshold_m=0", "eval.miss_threshold_m"),
        ("eval.batch_size=0", "eval.batch_size"),
    ] {
        let e = Config::load(None, &[set.to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("outside"), "{set}: {e}");
    }
}

#[test]
fn run_names_are_folder_names_and_tracking_keys_are_checked() {
    for bad in [
        "run.name=\"\"",
        "run.name=\"..\"",
        "run.name=\"../x\"",
        "run.name=\"/etc\"",
    ] {
        let e = Config::load(None, &[bad.to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("run.name") && e.contains("folder name"),
            "{bad}: {e}"
        );
    }
    assert!(Config::load(None, &["run.name=\"lr 3e-4\"".into()]).is_ok());
    let e = Config::load(None, &["run.track_artifact_root=\"rel/dir\"".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("run.track_artifact_root") && e.contains("absolute"),
        "{e}"
    );
    let c = Config::load(None, &["run.track=\"http://u:pw@127.0.0.1:5000\"".into()]).unwrap();
    assert_eq!(c.run.track, "http://127.0.0.1:5000");
    assert!(!c.run.track_credentials.is_empty());
    assert!(!c.to_toml().unwrap().contains("pw"));
}

#[test]
fn zero_intervals_are_refused_and_patches_derive() {
    for key in ["train.log_every", "train.checkpoint_every"] {
        let e = Config::load(None, &[format!("{key}=0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("outside [1,"), "{e}");
    }
    assert_eq!(auto_patch(12), 2);
    assert_eq!(auto_patch(30), 5);
    assert_eq!(auto_patch(7), 1);
    assert_eq!(auto_patch(1), 1);
    assert_eq!(auto_patch(250), 50);
    let spec = crate::data::sample::Spec {
        history_len: 6,
        imu_len: 12,
        ..Default::default()
    };
    let c = ModelConfig::default().for_spec(&spec);
    assert_eq!((c.history_patch, c.imu_patch), (1, 2));
    let set = ModelConfig {
        history_patch: 3,
        ..Default::default()
    };
    assert_eq!(set.for_spec(&spec).history_patch, 3, "a set patch is kept");
}

#[test]
fn unknown_key_names_key_and_allowed() {
    let e = Config::load(None, &["train.lrr=1".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train") && e.contains("lrr") && e.contains("`lr`"),
        "{e}"
    );
    let e = Config::load(None, &["run.device=tpu".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("run.device") && e.contains("wgpu"), "{e}");
    let e = Config::load(None, &["model.heads=3".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.d_model"), "{e}");
    let e = Config::load(None, &["train.loss_weights.foo=1".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.loss_weights.foo") && e.contains("next_stop"),
        "{e}"
    );
}

/// `data.sources`: the first names `data.path`; weights, names and the count are checked,
/// naming the entry.
#[test]
fn sources_are_checked_and_the_first_is_the_path() {
    let c = Config::load(
        None,
        &[r#"data.sources=[{path = "a/geo"}, {path = "b", weight = 2.0}]"#.into()],
    )
    .unwrap();
    assert_eq!(c.data.path, "a/geo");
    assert_eq!(c.data.sources[0].name(), "geo");
    assert_eq!(c.data.sources[0].weight, 1.0);
    for (set, want) in [
        (
            r#"data.sources=[{path = "a", weight = 0.0}]"#,
            "data.sources[0].weight",
        ),
        (
            r#"data.sources=[{path = "a"}, {path = "x/a"}]"#,
            "data.sources[1].name",
        ),
        (
            r#"data.sources=[{path = "a", name = "../up"}]"#,
            "data.sources[0].name",
        ),
        (r#"data.sources=[{path = ""}]"#, "data.sources[0].path"),
        (r#"data.sources=[{path = "a", colour = 1}]"#, "colour"),
    ] {
        let e = Config::load(None, &[set.to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{set}: {e}");
    }
    let e = Config::load(
        None,
        &[
            "data.path=elsewhere".into(),
            r#"data.sources=[{path = "a"}]"#.into(),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("data.path") && e.contains("first source"), "{e}");
}

#[test]
fn a_run_url_carries_no_secret_and_is_writable() {
    for (dir, says) in [
        ("s3://key:secret@bucket/runs/r1", "credentials"),
        ("s3://bucket/runs/r1?X-Amz-Signature=abc", "credentials"),
        ("https://host/runs/r1", "does not write"),
    ] {
        let e = Config::load(None, &[format!("run.dir={dir}")])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("run.dir") && e.contains(says), "{dir}: {e}");
        assert!(!e.contains("secret") && !e.contains("abc"), "{e}");
    }
    let c = Config::load(None, &["run.dir=s3://bucket/runs/r1".into()]).unwrap();
    assert_eq!(c.run_dir(), PathBuf::from("s3://bucket/runs/r1"));
}
