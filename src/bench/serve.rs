//! `dfm bench serve`: starts the server in this process on loopback, drives it from a client
//! at several concurrencies (a bounded number of single-sample requests each), and prints
//! throughput and latency percentiles. Client and server share the machine's cores.

use crate::predict::{Predictor, to_request_json};
use crate::serve::ServeOptions;
use crate::util::percentile;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize, Debug)]
pub struct Row {
    pub concurrency: usize,
    pub requests: usize,
    pub samples_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Mean samples per forward pass at this concurrency (the server's batch histogram).
    pub mean_batch: f64,
}

#[derive(Serialize, Debug)]
pub struct ServeBench {
    pub bench: &'static str,
    pub model: String,
    pub max_batch: usize,
    pub max_wait_ms: u64,
    /// Forward passes the server ran at once, and threads per pass.
    pub model_workers: usize,
    pub threads_per_worker: usize,
    /// Each request asked for its route plan (`--plan-route`: 2 x its stops more model inputs).
    pub route_plans: bool,
    /// Best throughput over the concurrencies.
    pub samples_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rows: Vec<Row>,
}

/// Sends `requests` single-sample requests from `concurrency` clients at once; their
/// latencies, ms.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    bodies: &[Vec<u8>],
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<Vec<f64>> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies = std::sync::Arc::new(bodies.to_vec());
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, url, next, bodies) = (
                client.clone(),
                url.to_string(),
                next.clone(),
                bodies.clone(),
            );
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .await?;
                    anyhow::ensure!(r.status().is_success(), "status {}", r.status());
                    let _ = r.bytes().await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in tasks {
        lat.extend(h.await??);
    }
    Ok(lat)
}

/// The server's forward passes and the samples they held so far (from `/metrics`).
async fn batch_totals(client: &reqwest::Client, url: &str) -> anyhow::Result<(f64, f64)> {
    let text = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok((value("dfm_batch_size_count "), value("dfm_batch_size_sum ")))
}

pub fn run(
    predictor: Predictor,
    samples: &[crate::Sample],
    model: &str,
    concurrencies: &[usize],
    requests: usize,
    o: &ServeOptions,
) -> anyhow::Result<ServeBench> {
    anyhow::ensure!(!samples.is_empty(), "no samples to send");
    let bodies: Vec<Vec<u8>> = samples
        .iter()
        .map(|s| Ok(serde_json::to_vec(&to_request_json(s)?)?))
        .collect::<anyhow::Result<_>>()?;
    compile_batch_shapes(&predictor, samples, o.max_batch);
    let plan = crate::forward_pools::plan_for(o.model_workers, predictor.device());
    let rt = tokio::runtime::Runtime::new()?;
    let rows = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let o2 = o.clone();
        let server = tokio::spawn(async move {
            crate::serve::run(listener, predictor, &o2, async move {
                let _ = stop_rx.await;
            })
            .await
        });
        let rows = load_rows(&format!("http://{addr}"), &bodies, concurrencies, requests).await;
        let _ = stop_tx.send(());
        server.await??;
        rows
    })?;
    let (best, p50, p99) =
        super::headline(rows.iter().map(|r| (r.samples_per_s, r.p50_ms, r.p99_ms)));
    Ok(ServeBench {
        bench: "serve",
        model: model.to_string(),
        max_batch: o.max_batch,
        max_wait_ms: o.max_wait_ms,
        model_workers: plan.workers,
        threads_per_worker: plan.threads,
        route_plans: samples.iter().all(|s| s.plan_route),
        samples_per_s: best,
        p50_ms: p50,
        p99_ms: p99,
        rows,
    })
}

/// On a GPU each batch shape compiles its kernels the first time (seconds): runs every shape the
/// server can meet (batches are padded to powers of two) before anything is timed.
fn compile_batch_shapes(predictor: &Predictor, samples: &[crate::Sample], max_batch: usize) {
    let mut k = 1;
    while k <= max_batch.next_power_of_two() {
        let batch: Vec<crate::Sample> = samples.iter().cycle().take(k).cloned().collect();
        predictor.predict(&batch);
        k *= 2;
    }
}

/// Warms the server at `base`, then measures one row per concurrency.
async fn load_rows(
    base: &str,
    bodies: &[Vec<u8>],
    concurrencies: &[usize],
    requests: usize,
) -> anyhow::Result<Vec<Row>> {
    let url = format!("{base}/v1/predict");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    // Warm-up: sequential requests, then a burst at the highest concurrency, so that every
    // forward-pass thread has run passes of the sizes it will meet.
    for b in bodies.iter().take(8) {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    let top = concurrencies.iter().copied().max().unwrap_or(1);
    drive(&client, &url, bodies, top, 4 * top).await?;
    let metrics_url = format!("{base}/metrics");
    let mut rows = Vec::new();
    for &c in concurrencies {
        let (passes0, samples0) = batch_totals(&client, &metrics_url).await?;
        let t = Instant::now();
        let mut lat = drive(&client, &url, bodies, c, requests).await?;
        let secs = t.elapsed().as_secs_f64();
        let (passes1, samples1) = batch_totals(&client, &metrics_url).await?;
        lat.sort_by(f64::total_cmp);
        rows.push(Row {
            concurrency: c,
            requests: lat.len(),
            samples_per_s: lat.len() as f64 / secs,
            p50_ms: percentile(&lat, 0.5),
            p95_ms: percentile(&lat, 0.95),
            p99_ms: percentile(&lat, 0.99),
            mean_batch: (samples1 - samples0) / (passes1 - passes0).max(1.0),
        });
    }
    Ok(rows)
}

impl ServeBench {
    pub fn render(&self) -> String {
        let mut s = format!(
            "serve: {} on loopback, max_batch {}, max_wait {} ms, {} forward pass(es) at once ({} thread(s) each), one sample per request{}\n{:>12} {:>9} {:>12} {:>9} {:>9} {:>9} {:>11}\n",
            self.model,
            self.max_batch,
            self.max_wait_ms,
            self.model_workers,
            self.threads_per_worker,
            if self.route_plans {
                ", each with its route plan"
            } else {
                ""
            },
            "concurrency",
            "requests",
            "samples/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "mean batch"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:>12} {:>9} {:>12.1} {:>9.2} {:>9.2} {:>9.2} {:>11.1}\n",
                r.concurrency,
                r.requests,
                r.samples_per_s,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                r.mean_batch
            ));
        }
        s
    }
}
