//! wgpu gives the same numbers as flex on a forward pass of the real model over a real batch
//! (CI runs it on Mesa's lavapipe CPU Vulkan driver). Skips with a message when no Vulkan/Metal/
//! DX12 adapter exists (OpenGL is never used), and fails instead in CI.

mod common;
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use common::*;
use dfm::batch::FeatureBatcher;
use dfm::config::Config;
use dfm::data::loader::{Loader, LoaderOptions};
use dfm::data::manifest::Manifest;
use dfm::features::Featurizer;
use dfm::model::{DfmModel, TokenMasks};
use std::sync::Arc;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// A tiny world's spec and the features of the first 8 samples of `split` (16 px images).
fn first_batch(dir: &std::path::Path, split: &str) -> (Manifest, Vec<dfm::features::Features>) {
    let m = Manifest::load(dir).unwrap();
    let norm = Featurizer::new(&m.spec, &m.norm, 16);
    let opts = LoaderOptions {
        batch_size: 8,
        shuffle_buffer: 0,
        ..Default::default()
    };
    let loader = Loader::new(dir, &m, split, opts).unwrap();
    let feats = loader
        .epoch(0, 0, Arc::new(move |s| norm.features(&s)), Arc::new(|b| b))
        .next()
        .unwrap()
        .unwrap();
    (m, feats)
}

#[test]
fn wgpu_agrees_with_flex_on_a_model_forward_pass() {
    let Some(wgpu) = wgpu_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 41);
    let (m, feats) = first_batch(&dir, "val");
    let cfg = Config::load(
        None,
        &[
            "model.d_model=32".into(),
            "model.heads=2".into(),
            "data.image_size=16".into(),
        ],
    )
    .unwrap();

    let flex = Device::flex();
    flex.seed(3);
    let model = DfmModel::new(&cfg.model, &m.spec, 16, &flex);
    let run = |model: &DfmModel, device: &Device| {
        let b = FeatureBatcher.batch(feats.clone(), device);
        let masks = TokenMasks::keep(dfm::eval::keep_mask(&[], b.len(), device));
        let out = model.forward(&b, &masks);
        [
            values(out.traj),
            values(out.mode_logits),
            values(out.eta),
            values(out.next_logits),
            values(out.delivered_logits),
        ]
    };
    let on_flex = run(&model, &flex);
    let on_wgpu = run(&model.clone().to_device(&wgpu), &wgpu);
    for (i, (a, b)) in on_flex.iter().zip(&on_wgpu).enumerate() {
        assert_eq!(a.len(), b.len());
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("output {i}: max |flex - wgpu| = {d:e}");
        assert!(d < 1e-3, "output {i}: flex and wgpu disagree by {d}");
    }
    assert!(
        on_flex[0].iter().any(|&v| v.abs() > 1e-3),
        "the forward pass produced something"
    );

    // Predictions: on a GPU a batch of 5 runs padded to 8 (one compiled shape per power of
    // two); the padding must not change any sample's prediction, nor add any.
    let samples = dfm::data::loader::first_samples(&dir, "val", 5).unwrap();
    assert_eq!(dfm::predict::batch_bucket(5, false), 8);
    assert_eq!(dfm::predict::batch_bucket(5, true), 5);
    let predictor = |device: &Device| {
        let featurizer = Featurizer::new(&m.spec, &m.norm, 16);
        let loaded = dfm::bundle::LoadedModel {
            model: model.clone(),
            cfg: cfg.clone(),
            normalization: dfm::normalization::NormalizationFile {
                schema_version: dfm::data::sample::SCHEMA_VERSION,
                manifest_sha256: String::new(),
                spec: m.spec.clone(),
                norm: m.norm.clone(),
                features_version: Some(dfm::features::FEATURES_VERSION),
            },
            featurizer,
            description: "test".into(),
            step: None,
            ridge: None,
        };
        dfm::predict::Predictor::new(loaded, device.clone())
    };
    let (a, b) = (
        predictor(&flex).predict(&samples),
        predictor(&wgpu).predict(&samples),
    );
    assert_eq!((a.len(), b.len()), (5, 5), "one prediction per sample");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.key, y.key);
        for (p, q) in x.most_likely.local_m.iter().zip(&y.most_likely.local_m) {
            let d = (p[0] - q[0]).abs().max((p[1] - q[1]).abs());
            assert!(
                d < 1e-2 * (1.0 + p[0].abs().max(p[1].abs())),
                "{}: {p:?} vs {q:?}",
                x.key
            );
        }
        for (p, q) in x.modes.iter().zip(&y.modes) {
            assert!((p.probability - q.probability).abs() < 1e-3, "{}", x.key);
        }
    }
}

#[test]
fn data_parallel_run_across_flex_and_wgpu() {
    if wgpu_or_skip().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_dataset(tmp.path(), 42);
    let run = tmp.path().join("dp");
    let o: Vec<String> = [
        format!("data.path={}", data.display()),
        format!("run.dir={}", run.display()),
        "data.image_size=16".into(),
        "model.d_model=32".into(),
        "model.layers=1".into(),
        "model.heads=2".into(),
        "train.batch_size=8".into(),
        "train.max_steps=4".into(),
        "train.log_every=1".into(),
        "train.devices=[\"flex\", \"wgpu\"]".into(),
        "eval.split=val".into(),
    ]
    .to_vec();
    let out = dfm::train::train(
        Config::load(None, &o).unwrap(),
        false,
        &Device::flex(),
        true,
    )
    .unwrap();
    assert_eq!(out.steps, 4);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logged: Vec<f64> = rows.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().all(|l| l.is_finite()));
    // Two devices, one batch of 8 each per step: 8 batches (64 samples) in 4 steps.
    let (step, last) = dfm::checkpoint::list(&run).unwrap().pop().unwrap();
    assert_eq!(step, 4);
    let state = dfm::checkpoint::read_state(&last).unwrap();
    assert_eq!(state.batches_in_epoch, 8, "one batch per device per step");
    assert!(
        out.report.is_some(),
        "the gathered model evaluates on one device"
    );
}

/// Where no Vulkan/Metal/DX12 adapter exists (a machine with only Mesa's OpenGL, say), asking for
/// wgpu is a clear error, never a panic, and `auto` runs on flex; where one exists, it is never
/// wgpu's OpenGL backend.
#[test]
fn wgpu_is_a_compute_api_or_a_clear_error() {
    match dfm::device::open_wgpu() {
        Ok((_, name, _)) => {
            eprintln!("wgpu adapter: {name}");
            assert!(!name.ends_with("Gl"), "OpenGL adapter opened: {name}");
        }
        Err(e) => {
            assert!(e.contains("no GPU adapter"), "{e}");
            let (ok, _, err) = dfm(&[
                "train",
                "--config",
                "configs/quickstart.toml",
                "--device",
                "wgpu",
            ]);
            assert!(!ok, "training on a missing adapter failed");
            assert!(!err.contains("panicked"), "{err}");
            assert!(err.contains("no GPU adapter"), "{err}");
            let sel = dfm::device::select(dfm::config::DeviceChoice::Auto, 0).unwrap();
            assert!(sel.description.starts_with("flex"), "{}", sel.description);
            skip(&format!(
                "the wgpu half of this test: no wgpu adapter ({e}); install mesa-vulkan-drivers"
            ));
        }
    }
}

/// One training step (loss, gradients, AdamW) from the same weights on the same batch gives the
/// same loss and the same updated predictions on wgpu (with burn's fusion and autotuning on) as
/// on flex.
#[test]
fn wgpu_trains_like_flex() {
    let Some(wgpu) = wgpu_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (m, feats) = first_batch(&tiny_dataset(tmp.path(), 43), "train");
    let cfg = Config::load(
        None,
        &[
            "model.d_model=32".into(),
            "model.heads=2".into(),
            "model.layers=1".into(),
            "model.dropout=0.0".into(),
            "model.modality_dropout=0.0".into(),
            "data.image_size=16".into(),
        ],
    )
    .unwrap();
    let flex = Device::flex();
    flex.seed(5);
    // Trainable weights on flex, forked (as data-parallel training does) to each device.
    let model = DfmModel::new(&cfg.model, &m.spec, 16, &flex.clone().autodiff());
    let step = |device: &Device| {
        let ad = device.clone().autodiff();
        let net = model.clone().fork(&ad);
        let b = FeatureBatcher.batch(feats.clone(), &ad);
        let masks = TokenMasks::keep(dfm::eval::keep_mask(&[], b.len(), &ad));
        let loss = dfm::train::batch_loss(&net, &b, &masks, &cfg).total;
        let l = values(loss.clone())[0];
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &net);
        let net = dfm::train::optimizer(&cfg).step(1e-3, net, grads).valid();
        let b = FeatureBatcher.batch(feats.clone(), device);
        let masks = TokenMasks {
            keep: dfm::eval::keep_mask(&[], b.len(), device),
            ..masks
        };
        let out = net.forward(&b, &masks);
        (l, values(out.point), values(out.traj))
    };
    let (l_flex, p_flex, t_flex) = step(&flex);
    let (l_wgpu, p_wgpu, t_wgpu) = step(&wgpu);
    eprintln!("training loss: flex {l_flex}, wgpu {l_wgpu}");
    assert!(l_flex.is_finite() && (l_flex - l_wgpu).abs() < 1e-3 * l_flex.abs().max(1.0));
    for (a, b) in [(p_flex, p_wgpu), (t_flex, t_wgpu)] {
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("after one step: max |flex - wgpu| = {d:e}");
        assert!(
            d < 1e-3,
            "flex and wgpu disagree after a training step by {d}"
        );
    }
}

/// The fused AdamW equals burn's on the GPU path too: the real model's gradients on wgpu, the
/// same ones given to both optimizers each step, the weights within 1e-6 after 20 steps.
#[test]
fn fused_adamw_equals_burns_on_wgpu() {
    let wgpu = if std::env::var("DBG_FLEX").is_ok() {
        Device::flex()
    } else {
        let Some(w) = wgpu_or_skip() else {
            return;
        };
        w
    };
    let tmp = tempfile::tempdir().unwrap();
    let (m, mut feats) = first_batch(&tiny_dataset(tmp.path(), 44), "train");
    feats.truncate(4);
    let set = |o: &str| -> Vec<String> {
        [
            "model.d_model=32",
            "model.heads=2",
            "model.layers=1",
            "model.dropout=0.0",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "model.modality_dropout=0.0".into(),
            "data.image_size=16".into(),
        ])
        .chain([
            format!("train.optimizer={o}"),
            "train.weight_decay=0.05".into(),
        ])
        .collect()
    };
    let per_tensor_cfg = Config::load(None, &set("adamw")).unwrap();
    let fused_cfg = Config::load(None, &set("adamw_fused")).unwrap();
    let ad = wgpu.clone().autodiff();
    wgpu.seed(6);
    let start = DfmModel::new(&per_tensor_cfg.model, &m.spec, 16, &ad);
    let b = FeatureBatcher.batch(feats, &ad);
    let masks = TokenMasks::keep(dfm::eval::keep_mask(&[], b.len(), &ad));
    // One backward pass per step, its gradients given to both (a GPU's reductions need not
    // repeat to the bit, and AdamW turns a difference in a near-zero gradient into a full step).
    let grads = |net: &DfmModel| {
        let loss = dfm::train::batch_loss(net, &b, &masks, &per_tensor_cfg).total;
        let mut g = Twice(
            burn::optim::GradientsParams::from_grads(loss.backward(), net),
            Default::default(),
        );
        net.visit(&mut g);
        (g.0, g.1)
    };
    let (mut a, mut f) = (start.clone(), start.clone());
    let mut per_tensor = dfm::train::optimizer(&per_tensor_cfg);
    let mut fused = dfm::train::optimizer(&fused_cfg);
    for _ in 0..20 {
        let (ga, gf) = grads(&a);
        a = per_tensor.step(3e-3, a, ga);
        f = fused.step(3e-3, f, gf);
    }
    let w = |net: &DfmModel| values(net.heads.point2.weight.val().inner());
    let flat = |net: &DfmModel| {
        let mut all = Vec::new();
        net.visit(&mut Collect(&mut all));
        all
    };
    let moved = w(&a)
        .iter()
        .zip(w(&start))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(moved > 1e-3, "training moved the weights ({moved})");
    let d = flat(&a)
        .iter()
        .zip(flat(&f))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    eprintln!("wgpu: max |burn AdamW - fused| over every weight after 20 steps = {d:e}");
    assert!(
        d <= 1e-6,
        "the fused AdamW differs from burn's on wgpu by {d}"
    );
}

/// Copies each parameter's gradient into a second set.
struct Twice(burn::optim::GradientsParams, burn::optim::GradientsParams);

impl burn::module::ModuleVisitor for Twice {
    fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
        if let Some(g) = self.0.get::<D>(p.id) {
            self.1.register(p.id, g);
        }
    }
}

/// Every float parameter's values, in module order.
struct Collect<'a>(&'a mut Vec<f32>);

impl burn::module::ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
        self.0.extend(values(p.val().inner()));
    }
}
