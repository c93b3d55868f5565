//! `train.precision = "bf16"`: a few training steps on the wgpu device (CI: Mesa's lavapipe) in
//! bfloat16 train (the loss falls and stays finite). Skips with a message where there is no
//! Vulkan/Metal/DX12 adapter (and fails instead in CI), and where the adapter does not compute in
//! bf16 (a property of the driver: reported, also in CI). Its own test binary: burn sets a
//! device's float type once per process, before the device's first tensor. flex refuses half
//! precision, and f16 is refused everywhere with the reason.

mod common;
use common::*;

fn losses(run: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect()
}

#[test]
fn bf16_steps_train_on_wgpu_and_f16_or_flex_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_dataset(tmp.path(), 5);
    let run = tmp.path().join("run");
    let mut o = tiny_model();
    o.extend([
        format!("data.path={}", data.display()),
        format!("run.dir={}", run.display()),
        "train.precision=bf16".into(),
        "train.lr=3e-3".into(),
        "train.warmup_steps=5".into(),
        "train.max_steps=40".into(),
        "train.log_every=5".into(),
        "eval.split=val".into(),
    ]);
    let cfg = dfm::config::Config::load(None, &o).unwrap();
    let err = dfm::train::train(cfg.clone(), false, &burn::prelude::Device::flex(), true)
        .err()
        .expect("flex refuses bf16")
        .to_string();
    assert!(err.contains("needs a GPU device"), "{err}");
    let mut f16 = cfg.clone();
    f16.train.precision = dfm::config::Precision::F16;
    let err = dfm::train::train(f16, false, &burn::prelude::Device::flex(), true)
        .err()
        .expect("f16 is refused")
        .to_string();
    assert!(err.contains("underflows in f16"), "{err}");

    let Some(wgpu) = wgpu_or_skip() else {
        return;
    };
    if !wgpu.supports_dtype(burn::tensor::FloatDType::BF16) {
        eprintln!("SKIPPED: this wgpu adapter does not compute in bf16 (burn: supports_dtype)");
        return;
    }
    std::fs::remove_dir_all(&run).ok();
    dfm::train::train(cfg, false, &wgpu, true).expect("bf16 training");
    let l = losses(&run);
    eprintln!("bf16 losses: {l:?}");
    assert!(l.len() >= 6 && l.iter().all(|x| x.is_finite()), "{l:?}");
    let (first, last) = (l[0], l[l.len() - 2..].iter().sum::<f64>() / 2.0);
    assert!(
        last < 0.9 * first,
        "the loss falls in bf16: {first} -> {last}"
    );
}
