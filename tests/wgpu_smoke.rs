//! wgpu gives the same numbers as flex on a forward pass of the real model over a real batch
//! (CI runs it on Mesa's lavapipe CPU Vulkan driver). Skips with a message when no wgpu adapter
//! exists.

mod common;
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use common::*;
use dfm::batch::FeatureBatcher;
use dfm::config::Config;
use dfm::data::loader::{Loader, LoaderOptions};
use dfm::data::manifest::Manifest;
use dfm::features::Normalizer;
use dfm::model::{DfmModel, TokenMasks};
use std::sync::Arc;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn wgpu_agrees_with_flex_on_a_model_forward_pass() {
    let wgpu = match dfm::device::open_wgpu() {
        Ok((d, name, _)) => {
            eprintln!("wgpu adapter: {name}");
            d
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: no wgpu adapter on this machine ({e}); install mesa-vulkan-drivers to run this test on the CPU"
            );
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 41);
    let m = Manifest::load(&dir).unwrap();
    let cfg = Config::load(
        None,
        &[
            "model.d_model=32".into(),
            "model.heads=2".into(),
            "data.image_size=16".into(),
        ],
    )
    .unwrap();
    let norm = Normalizer::new(&m.spec, &m.norm, 16);
    let loader = Loader::new(
        &dir,
        &m,
        "val",
        LoaderOptions {
            batch_size: 8,
            shuffle_buffer: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let feats: Vec<_> = loader
        .epoch(0, 0, Arc::new(move |s| norm.features(&s)), Arc::new(|b| b))
        .next()
        .unwrap()
        .unwrap();

    let flex = Device::flex();
    flex.seed(3);
    let model = DfmModel::new(&cfg.model, &m.spec, 16, &flex);
    let run = |model: &DfmModel, device: &Device| {
        let b = FeatureBatcher.batch(feats.clone(), device);
        let masks = TokenMasks {
            keep: dfm::eval::keep_mask(&[], b.len(), device),
            hide_hist: None,
            hide_imu: None,
            hide_stops: None,
        };
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
}
