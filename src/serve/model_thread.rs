//! The model thread: gathers queued requests into batches and runs one forward pass for them.
//! A panic in a forward pass fails only the requests that cause it: the batch is retried one
//! request at a time. Requests whose client has gone (disconnected or timed out) are dropped
//! unrun. Queued work is counted in samples, so the queue's bound is a bound on work.

use super::metrics::Metrics;
use crate::data::sample::Sample;
use crate::predict::Prediction;
use crossbeam_channel::Receiver;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A request's samples and where its answers go (`T`: a prediction; tests use other types).
pub struct Job<T = Prediction> {
    pub samples: Vec<Sample>,
    pub reply: oneshot::Sender<Result<Vec<T>, String>>,
}

/// What the HTTP side and the model thread share.
#[derive(Default)]
pub struct Shared {
    /// Samples waiting in the queue or being predicted.
    pub queued_samples: AtomicUsize,
    /// False once the model thread has stopped (for `/healthz` and `/readyz`).
    pub alive: AtomicBool,
}

/// Marks the model thread stopped however it ends (return or panic).
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

/// Runs a batch of samples, `max_batch` at a time; a panic is caught and returned as Err.
fn run_samples<T>(
    predict: &dyn Fn(&[Sample]) -> Vec<T>,
    samples: &[Sample],
    max_batch: usize,
    metrics: &Metrics,
) -> Result<Vec<T>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut out = Vec::with_capacity(samples.len());
        for chunk in samples.chunks(max_batch.max(1)) {
            metrics.batch(chunk.len());
            out.extend(predict(chunk));
        }
        out
    }))
    .map_err(|p| crate::device::panic_text(&p))
}

/// Answers every job of a batch: one forward pass for all; when it panics, each job alone, so
/// only the jobs that fail get an error.
fn answer<T>(
    predict: &dyn Fn(&[Sample]) -> Vec<T>,
    jobs: Vec<Job<T>>,
    max_batch: usize,
    metrics: &Metrics,
) {
    let all: Vec<Sample> = jobs
        .iter()
        .flat_map(|j| j.samples.iter().cloned())
        .collect();
    match run_samples(predict, &all, max_batch, metrics) {
        Ok(mut preds) => {
            for j in jobs {
                let rest = preds.split_off(j.samples.len());
                let _ = j.reply.send(Ok(std::mem::replace(&mut preds, rest)));
            }
        }
        Err(_) => {
            metrics.panic();
            for j in jobs {
                let r = if j.reply.is_closed() {
                    continue;
                } else {
                    run_samples(predict, &j.samples, max_batch, metrics)
                };
                if let Err(e) = &r {
                    metrics.panic();
                    tracing::error!("the model failed on a request: {e}");
                }
                let _ = j
                    .reply
                    .send(r.map_err(|_| "the model failed on this request".to_string()));
            }
        }
    }
}

/// The model thread's loop, until every sender is gone.
pub fn batch_loop<T>(
    predict: impl Fn(&[Sample]) -> Vec<T>,
    rx: Receiver<Job<T>>,
    max_batch: usize,
    max_wait: Duration,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
) {
    shared.alive.store(true, Ordering::SeqCst);
    let _guard = AliveGuard(shared.clone());
    // Takes a job off the queue, dropping it (and its count) when its client has gone.
    let take = |j: Job<T>, jobs: &mut Vec<Job<T>>| -> usize {
        if j.reply.is_closed() {
            shared
                .queued_samples
                .fetch_sub(j.samples.len(), Ordering::SeqCst);
            metrics.dropped();
            return 0;
        }
        let n = j.samples.len();
        jobs.push(j);
        n
    };
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + max_wait;
        let mut jobs = Vec::new();
        let mut count = take(first, &mut jobs);
        while count < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(j) => count += take(j, &mut jobs),
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let n: usize = jobs.iter().map(|j| j.samples.len()).sum();
        answer(&predict, jobs, max_batch, &metrics);
        shared.queued_samples.fetch_sub(n, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::Region;

    fn sample(key: &str) -> Sample {
        Sample {
            key: key.into(),
            route_id: "r".into(),
            region: Region::Unknown,
            t0: 0.0,
            context: Default::default(),
            history: Vec::new(),
            imu: None,
            images: Vec::new(),
            stops: Vec::new(),
            horizons_s: Vec::new(),
            target: None,
        }
    }

    #[test]
    fn a_panicking_request_fails_alone_and_gone_clients_are_dropped() {
        let (tx, rx) = crossbeam_channel::unbounded::<Job<String>>();
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared::default());
        let mut replies = Vec::new();
        for keys in [vec!["a", "b"], vec!["boom"], vec!["c"], vec!["gone"]] {
            let (rtx, rrx) = oneshot::channel();
            let samples: Vec<Sample> = keys.iter().map(|k| sample(k)).collect();
            shared
                .queued_samples
                .fetch_add(samples.len(), Ordering::SeqCst);
            tx.send(Job {
                samples,
                reply: rtx,
            })
            .unwrap();
            replies.push(rrx);
        }
        drop(replies.pop()); // the last client disconnects before its turn
        drop(tx);
        let predict = |b: &[Sample]| -> Vec<String> {
            if b.iter().any(|s| s.key == "boom") {
                panic!("model failure");
            }
            b.iter().map(|s| s.key.to_uppercase()).collect()
        };
        batch_loop(
            predict,
            rx,
            64,
            Duration::from_millis(50),
            metrics.clone(),
            shared.clone(),
        );
        let got: Vec<_> = replies
            .into_iter()
            .map(|mut r| r.try_recv().unwrap())
            .collect();
        assert_eq!(got[0], Ok(vec!["A".to_string(), "B".to_string()]));
        assert!(got[1].is_err(), "only the panicking request fails");
        assert_eq!(got[2], Ok(vec!["C".to_string()]));
        let text = metrics.render();
        assert!(text.contains("dfm_model_panics_total 2"), "{text}");
        assert!(text.contains("dfm_requests_dropped_total 1"), "{text}");
        assert_eq!(shared.queued_samples.load(Ordering::SeqCst), 0);
        assert!(
            !shared.alive.load(Ordering::SeqCst),
            "stopped when the senders went"
        );
    }
}
