//! `dfm bench infer`: latency per batch size after warm-up, in three parts: the forward pass
//! alone (features and batch built once; reading the outputs back included), preparing a batch
//! from request JSON (parse, validate, features, tensors), and what a caller sees (parse, then
//! `Predictor::predict`: features, forward, predictions in both frames). Where a server runs
//! several forward passes at once (a CPU: [`crate::forward_pools::plan`]), also the
//! throughput of that many passes side by side.

use crate::batch::FeatureBatcher;
use crate::model::TokenMasks;
use crate::predict::Predictor;
use crate::util::percentile;
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize, Debug)]
pub struct Row {
    pub batch_size: usize,
    pub iterations: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub samples_per_s: f64,
    /// Parsing request JSON, validating, features and batch tensors (median).
    pub prepare_p50_ms: f64,
    /// Parse + `Predictor::predict` (median): the latency a caller sees without HTTP.
    pub caller_p50_ms: f64,
    /// The server's worker plan's passes side by side (None for one worker).
    pub side_by_side_samples_per_s: Option<f64>,
}

#[derive(Serialize, Debug)]
pub struct InferBench {
    pub bench: &'static str,
    pub model: String,
    pub device: String,
    /// Best over the batch sizes.
    pub samples_per_s: f64,
    /// At the smallest batch size.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Forward passes a server runs at once on this device, and threads per pass.
    pub workers: usize,
    pub threads_per_worker: usize,
    pub rows: Vec<Row>,
}

pub fn run(
    p: &Predictor,
    samples: &[crate::Sample],
    model: &str,
    device_name: &str,
    batch_sizes: &[usize],
    iterations: usize,
    device: &Device,
) -> anyhow::Result<InferBench> {
    anyhow::ensure!(!samples.is_empty(), "no samples");
    let norm = &p.loaded.featurizer;
    let m = p.loaded.model.valid().to_device(device);
    let plan = crate::forward_pools::plan_for(0, device);
    let mut rows = Vec::new();
    for &bs in batch_sizes {
        let (b, masks) = batch_of(norm, samples, bs, device);
        let run = || {
            let out = m.forward(&b, &masks);
            let _ = out.traj.into_data();
            let _ = out.eta.into_data();
        };
        let lat = latencies_ms(&run, iterations);
        let side = (plan.workers > 1)
            .then(|| side_by_side(&run, bs, plan, iterations))
            .transpose()?;
        let (prepare, caller) = caller_side(p, samples, bs, iterations, device)?;
        rows.push(Row {
            prepare_p50_ms: prepare,
            caller_p50_ms: caller,
            side_by_side_samples_per_s: side,
            ..Row::of_latencies(&lat, bs)
        });
    }
    let (best, p50, p99) =
        super::headline(rows.iter().map(|r| (r.samples_per_s, r.p50_ms, r.p99_ms)));
    Ok(InferBench {
        bench: "infer",
        model: model.into(),
        device: device_name.into(),
        samples_per_s: best,
        p50_ms: p50,
        p99_ms: p99,
        workers: plan.workers,
        threads_per_worker: plan.threads,
        rows,
    })
}

impl Row {
    /// A batch size's row from its sorted pass latencies (the caller's side and the passes side
    /// by side left out).
    fn of_latencies(lat: &[f64], bs: usize) -> Row {
        let p50 = percentile(lat, 0.5);
        Row {
            batch_size: bs,
            iterations: lat.len(),
            p50_ms: p50,
            p99_ms: percentile(lat, 0.99),
            samples_per_s: bs as f64 / (p50 / 1e3),
            prepare_p50_ms: 0.0,
            caller_p50_ms: 0.0,
            side_by_side_samples_per_s: None,
        }
    }
}

/// A batch of `bs` samples (cycling through `samples`) with every modality kept.
fn batch_of(
    norm: &crate::features::Featurizer,
    samples: &[crate::Sample],
    bs: usize,
    device: &Device,
) -> (crate::batch::Batch, TokenMasks) {
    let feats: Vec<_> = (0..bs)
        .map(|i| norm.features(&samples[i % samples.len()]))
        .collect();
    let b = FeatureBatcher.batch(feats, device);
    (b, TokenMasks::keep(crate::eval::keep_mask(&[], bs, device)))
}

/// Sorted latencies (ms) of `iterations` calls of `run`, after 5 warm-up calls.
fn latencies_ms(run: &dyn Fn(), iterations: usize) -> Vec<f64> {
    for _ in 0..5 {
        run();
    }
    let mut lat = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        run();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    lat
}

/// Samples/s of a server's passes side by side: each worker runs `run` (one pass of `bs`
/// samples) `iterations` times.
fn side_by_side(
    run: &(dyn Fn() + Sync),
    bs: usize,
    plan: crate::forward_pools::Plan,
    iterations: usize,
) -> anyhow::Result<f64> {
    let passes = crate::forward_pools::Passes::new(plan)?;
    let t = Instant::now();
    passes.each(&|_| (0..iterations).for_each(|_| run()));
    let n = passes.workers() * iterations * bs;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Medians (ms) of preparing a batch from request JSON, and of parse + predict.
fn caller_side(
    p: &Predictor,
    samples: &[crate::Sample],
    bs: usize,
    iterations: usize,
    device: &Device,
) -> anyhow::Result<(f64, f64)> {
    let bodies: Vec<Vec<u8>> = (0..bs)
        .map(|i| {
            let v = crate::predict::to_request_json(&samples[i % samples.len()])?;
            Ok(serde_json::to_vec(&v)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let limits = p.limits();
    let parse = || -> Vec<crate::Sample> {
        bodies
            .iter()
            .map(|b| crate::predict::parse_sample(b, &limits).expect("a stored sample parses"))
            .collect()
    };
    let norm = &p.loaded.featurizer;
    let (mut prep, mut caller) = (Vec::new(), Vec::new());
    for i in 0..iterations + 2 {
        let t = Instant::now();
        let feats: Vec<_> = parse().iter().map(|s| norm.features(s)).collect();
        let _ = FeatureBatcher.batch(feats, device);
        let t_prep = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let _ = p.predict(&parse());
        let t_caller = t.elapsed().as_secs_f64() * 1e3;
        if i >= 2 {
            prep.push(t_prep);
            caller.push(t_caller);
        }
    }
    prep.sort_by(f64::total_cmp);
    caller.sort_by(f64::total_cmp);
    Ok((percentile(&prep, 0.5), percentile(&caller, 0.5)))
}

impl InferBench {
    pub fn render(&self) -> String {
        let mut s = format!(
            "infer: {} on {}\n{:>11} {:>6} {:>9} {:>9} {:>12} {:>12} {:>12} {:>14}\n",
            self.model,
            self.device,
            "batch size",
            "iters",
            "p50 ms",
            "p99 ms",
            "samples/s",
            "prepare ms",
            "caller ms",
            format!("{} at once/s", self.workers)
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:>11} {:>6} {:>9.2} {:>9.2} {:>12.0} {:>12.2} {:>12.2} {:>14}\n",
                r.batch_size,
                r.iterations,
                r.p50_ms,
                r.p99_ms,
                r.samples_per_s,
                r.prepare_p50_ms,
                r.caller_p50_ms,
                r.side_by_side_samples_per_s
                    .map_or("-".to_string(), |v| format!("{v:.0}"))
            ));
        }
        s.push_str(
            "(p50/p99/samples/s: the forward pass; prepare: request JSON to batch tensors; caller: parse + predict)\n",
        );
        s.push_str(&format!(
            "(at once: {} passes side by side, {} thread(s) each, as `dfm serve` runs them here)\n",
            self.workers, self.threads_per_worker
        ));
        s
    }
}
