#![allow(dead_code)]
//! Shared helpers for integration tests: tiny simulated datasets, a fake MLflow server.

pub mod fake_mlflow;
pub mod s3;
pub mod serving;
pub mod store_cli;

use dfm::data::synth::{SynthConfig, generate};
use std::path::{Path, PathBuf};

/// A small but complete world: every region, every split, a few shards per split.
pub fn tiny_config(seed: u64) -> SynthConfig {
    SynthConfig {
        routes: 60,
        seed,
        sample_every_s: 240.0,
        shard_size: 100,
        ..Default::default()
    }
}

/// The tiny world sampled otherwise: history every 2 s (15 fixes), `future_len` positions every
/// `future_step_s`, IMU at 5 Hz (the simulator's own: 1 s, 2 s, 10 Hz).
pub fn resampled_config(seed: u64, future_len: usize, future_step_s: f32) -> SynthConfig {
    let mut cfg = tiny_config(seed);
    cfg.spec.history_len = 15;
    cfg.spec.history_step_s = 2.0;
    cfg.spec.future_len = future_len;
    cfg.spec.future_step_s = future_step_s;
    cfg.spec.imu_len = 150;
    cfg.spec.imu_rate_hz = 5.0;
    cfg
}

/// The tiny model and optimizer of the training tests (config overrides).
pub fn tiny_model() -> Vec<String> {
    [
        "data.image_size=16",
        "data.shuffle_buffer=256",
        "model.d_model=32",
        "model.layers=1",
        "model.heads=2",
        "model.ff_mult=2",
        "train.batch_size=16",
    ]
    .map(String::from)
    .to_vec()
}

/// Trains a run from config overrides on the CPU (quietly).
pub fn train_with(overrides: &[String]) -> dfm::train::Outcome {
    let cfg = dfm::config::Config::load(None, overrides).expect("a valid config");
    dfm::train::train(cfg, false, &burn::prelude::Device::flex(), true).expect("training")
}

/// Collects a module's float parameters.
pub struct Collect(pub Vec<Vec<f32>>);

impl burn::module::ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<burn::prelude::Tensor<D>>) {
        self.0.push(
            p.val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap(),
        );
    }
}

/// A module's float parameters, in visiting order.
pub fn weights<M: burn::module::Module>(m: &M) -> Vec<Vec<f32>> {
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

pub fn tiny_dataset(dir: &Path, seed: u64) -> PathBuf {
    let out = dir.join(format!("world{seed}"));
    generate(&out, &tiny_config(seed), false).expect("synth");
    out
}

pub fn dfm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dfm")
}

/// Runs the CLI; returns (exit success, stdout, stderr).
pub fn dfm(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(dfm_bin())
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("run dfm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Every file of a folder, name and bytes, sorted by name.
pub fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// A test that cannot run here (no GPU driver, no real data, no server): on a developer's machine
/// it skips with a message; in CI (`CI` set, where `.ci/run` installs what the tests need) it
/// fails instead, so a missing install step cannot pass as green.
pub fn skip(reason: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        panic!("CI must run this test, but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Rewrites the JSON of every record of a split's shards with `f`.
pub fn edit_records(dir: &Path, split: &str, f: impl Fn(&mut serde_json::Value)) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with(&format!("{split}-")) {
            continue;
        }
        let mut ar = tar::Archive::new(std::fs::File::open(&p).unwrap());
        let members: Vec<(String, Vec<u8>)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let n = e.path().unwrap().to_string_lossy().to_string();
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut b).unwrap();
                if n.ends_with(".json") {
                    let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                    f(&mut v);
                    b = serde_json::to_vec(&v).unwrap();
                }
                (n, b)
            })
            .collect();
        let mut w = tar::Builder::new(std::fs::File::create(&p).unwrap());
        for (n, b) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(b.len() as u64);
            h.set_mode(0o644);
            w.append_data(&mut h, n, b.as_slice()).unwrap();
        }
        w.finish().unwrap();
    }
}

/// Rewrites a dataset's manifest with `f`.
pub fn edit_manifest(dir: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Every sample of a dataset, by split then key (the stored samples, decoded).
pub fn all_samples(
    dir: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, dfm::Sample>> {
    use dfm::data::loader::{Loader, LoaderOptions};
    let m = dfm::data::manifest::Manifest::load(dir).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for split in m.splits.keys() {
        let opts = LoaderOptions {
            shuffle_buffer: 0,
            ..Default::default()
        };
        let l = Loader::new(dir, &m, split, opts).unwrap();
        let samples: std::collections::BTreeMap<String, dfm::Sample> = l
            .epoch(0, 0, std::sync::Arc::new(|s| s), std::sync::Arc::new(|b| b))
            .flat_map(|b| b.unwrap())
            .map(|s: dfm::Sample| (s.key.clone(), s))
            .collect();
        out.insert(split.clone(), samples);
    }
    out
}

/// Two datasets hold the same samples in the same splits, the same route lists and coverage,
/// and normalization statistics equal to the manifest's precision.
pub fn assert_same_dataset(a: &Path, b: &Path) {
    let (ma, mb) = (
        dfm::data::manifest::Manifest::load(a).unwrap(),
        dfm::data::manifest::Manifest::load(b).unwrap(),
    );
    assert_eq!(ma.spec, mb.spec);
    assert_eq!(ma.coverage, mb.coverage);
    for (name, s) in &ma.splits {
        assert_eq!(s.samples, mb.splits[name].samples, "{name} samples");
        assert_eq!(s.routes, mb.splits[name].routes, "{name} routes");
    }
    assert_eq!(ma.splits.len(), mb.splits.len());
    assert_eq!(
        ma.norm.channels.keys().collect::<Vec<_>>(),
        mb.norm.channels.keys().collect::<Vec<_>>()
    );
    for (k, x) in &ma.norm.channels {
        let y = &mb.norm.channels[k];
        assert_eq!(x.count, y.count, "{k}");
        let near = |p: f64, q: f64| (p - q).abs() <= 1e-5 * p.abs().max(q.abs()) + 1e-9;
        assert!(
            near(x.mean, y.mean) && near(x.std, y.std),
            "{k}: {x:?} vs {y:?}"
        );
    }
    let (sa, sb) = (all_samples(a), all_samples(b));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (split, samples) in &sa {
        assert_eq!(samples.len(), sb[split].len(), "{split}");
        for (k, s) in samples {
            assert!(
                sb[split].get(k) == Some(s),
                "{split}: sample {k} differs or is missing"
            );
        }
    }
}

/// The wgpu device (its adapter's name printed), or None after `skip` says there is none (a
/// failure in CI, which installs Mesa's Vulkan driver).
pub fn wgpu_or_skip() -> Option<burn::prelude::Device> {
    match dfm::device::open_wgpu() {
        Ok((d, name, _)) => {
            eprintln!("wgpu adapter: {name}");
            Some(d)
        }
        Err(e) => {
            skip(&format!(
                "no wgpu adapter on this machine ({e}); install mesa-vulkan-drivers to run this test on the CPU"
            ));
            None
        }
    }
}

/// Members of a tar, in order.
pub fn read_tar(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(std::fs::File::open(p).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().to_string();
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut b).unwrap();
            (name, b)
        })
        .collect()
}

pub fn write_tar(p: &Path, members: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(p).unwrap());
    for (name, bytes) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

/// A copy of the dataset, and the first train shard of the copy.
pub fn copy(src: &Path, tmp: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dst = tmp.join(name);
    copy_dir(src, &dst);
    let shard = dst.join("train-000000.tar");
    (dst, shard)
}

/// Edits the `n`-th member whose name ends with `suffix`; returns the record key.
pub fn edit_member(shard: &Path, suffix: &str, n: usize, f: impl Fn(&mut Vec<u8>)) -> String {
    let mut m = read_tar(shard);
    let (name, bytes) = m
        .iter_mut()
        .filter(|(name, _)| name.ends_with(suffix))
        .nth(n)
        .expect("member");
    f(bytes);
    let key = name.split('.').next().unwrap().to_string();
    write_tar(shard, &m);
    key
}

/// The error `dfm data inspect` gives for a dataset (the library's and the binary's, which must
/// show it, exit non-zero and not panic).
pub fn inspect_err(dir: &Path) -> String {
    let e = dfm::data::inspect::inspect(dir, false, 2).expect_err("bad data must fail");
    let lib = e.to_string();
    let (ok, _out, err) = dfm(&["data", "inspect", dir.to_str().unwrap()]);
    assert!(!ok, "non-zero exit");
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert!(err.contains(&lib), "CLI shows the error: {err} / {lib}");
    lib
}

/// CRC-32 (PNG's) of a chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &x in bytes {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A tiny PNG file whose header claims `side` x `side` pixels (a decompression bomb's header).
pub fn png_claiming(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::GrayImage::new(8, 8)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    // IHDR: signature (8), length (4), "IHDR" (4), width, height, ..., CRC at 29.
    out[16..20].copy_from_slice(&side.to_be_bytes());
    out[20..24].copy_from_slice(&side.to_be_bytes());
    let crc = crc32(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}
