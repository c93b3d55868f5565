#![allow(dead_code)]
//! Shared helpers for integration tests: tiny simulated datasets.

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
