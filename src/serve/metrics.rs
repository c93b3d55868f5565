//! Server metrics in the Prometheus text format: requests by status, request latency and batch
//! size histograms, samples predicted, model panics, requests dropped for gone clients.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    n: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, b) in buckets.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.n += 1;
    }

    fn render(&self, s: &mut String, name: &str, buckets: &[f64]) {
        for (i, b) in buckets.iter().enumerate() {
            let _ = writeln!(
                s,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {}", self.n);
        let _ = writeln!(s, "{name}_sum {}", self.sum);
        let _ = writeln!(s, "{name}_count {}", self.n);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
    batch: Histogram,
    samples: u64,
    panics: u64,
    dropped: u64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn request(&self, status: u16, seconds: f64) {
        let mut m = self.inner.lock().unwrap();
        *m.requests.entry(status).or_default() += 1;
        m.latency.observe(&LATENCY_BUCKETS_S, seconds);
    }

    pub fn batch(&self, size: usize) {
        let mut m = self.inner.lock().unwrap();
        m.batch.observe(&BATCH_BUCKETS, size as f64);
        m.samples += size as u64;
    }

    /// A forward pass panicked (the server goes on).
    pub fn panic(&self) {
        self.inner.lock().unwrap().panics += 1;
    }

    /// A queued request dropped unrun because its client had gone.
    pub fn dropped(&self) {
        self.inner.lock().unwrap().dropped += 1;
    }

    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap();
        let mut s = String::new();
        s.push_str("# HELP dfm_requests_total HTTP requests by status code.\n# TYPE dfm_requests_total counter\n");
        for (code, n) in &m.requests {
            let _ = writeln!(s, "dfm_requests_total{{code=\"{code}\"}} {n}");
        }
        s.push_str("# HELP dfm_request_duration_seconds Request latency.\n# TYPE dfm_request_duration_seconds histogram\n");
        m.latency
            .render(&mut s, "dfm_request_duration_seconds", &LATENCY_BUCKETS_S);
        s.push_str("# HELP dfm_batch_size Samples per model forward pass.\n# TYPE dfm_batch_size histogram\n");
        m.batch.render(&mut s, "dfm_batch_size", &BATCH_BUCKETS);
        s.push_str(
            "# HELP dfm_samples_total Samples predicted.\n# TYPE dfm_samples_total counter\n",
        );
        let _ = writeln!(s, "dfm_samples_total {}", m.samples);
        s.push_str("# HELP dfm_model_panics_total Forward passes that panicked (batch or request).\n# TYPE dfm_model_panics_total counter\n");
        let _ = writeln!(s, "dfm_model_panics_total {}", m.panics);
        s.push_str("# HELP dfm_requests_dropped_total Queued requests dropped unrun: the client had gone.\n# TYPE dfm_requests_dropped_total counter\n");
        let _ = writeln!(s, "dfm_requests_dropped_total {}", m.dropped);
        s
    }
}
