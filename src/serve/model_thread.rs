//! The model threads: each gathers queued requests into a batch and runs one forward pass for
//! them; on a CPU several run at once ([`crate::forward_pools`]), each taking its share of the queue.
//! Requests arrive prepared (features computed on the request threads) and leave as raw model
//! outputs (turned into predictions there too): this thread only runs the model.
//! A panic in a forward pass fails only the requests that cause it: the batch is retried one
//! request at a time. Requests whose client has gone (disconnected or timed out) are dropped
//! unrun. Queued work is counted in samples, so the queue's bound is a bound on work.

use super::metrics::Metrics;
use crate::features::Features;
use crate::predict::RawOutput;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A request's model inputs and where its outputs go (tests use other types).
pub struct Job<I = Features, T = RawOutput> {
    pub inputs: Vec<I>,
    pub reply: oneshot::Sender<Result<Vec<T>, String>>,
}

/// What the HTTP side and the model thread share.
#[derive(Default)]
pub struct Shared {
    /// Samples waiting in the queue or being predicted.
    pub queued_samples: AtomicUsize,
    /// False once the model thread has stopped (for `/healthz` and `/readyz`).
    pub alive: AtomicBool,
    /// Requests being prepared on the request threads, about to be queued: a forward pass
    /// waits a moment for them rather than leave them to a pass of their own.
    pub arriving: AtomicUsize,
    /// Samples in forward passes now.
    pub in_pass: AtomicUsize,
    /// Model workers waiting for a request.
    pub idle_workers: AtomicUsize,
}

/// Longest a forward pass waits for requests still being prepared (parsing, features: well
/// under a millisecond each), so that a burst of requests shares one pass rather than a first
/// pass of one or two requests and a second of the rest.
pub const ARRIVING_WAIT: Duration = Duration::from_millis(5);

/// Marks the model thread stopped however it ends (return or panic).
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

/// Runs inputs through the model, `max_batch` at a time; a panic is caught and returned as Err.
fn run_inputs<I, T>(
    predict: &dyn Fn(Vec<I>) -> Vec<T>,
    mut inputs: Vec<I>,
    max_batch: usize,
    metrics: &Metrics,
) -> Result<Vec<T>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut out = Vec::with_capacity(inputs.len());
        while !inputs.is_empty() {
            let rest = inputs.split_off(inputs.len().min(max_batch.max(1)));
            metrics.batch(inputs.len());
            out.extend(predict(std::mem::replace(&mut inputs, rest)));
        }
        out
    }))
    .map_err(|p| crate::util::panic_text(&p))
}

/// Answers every job of a batch: one forward pass for all; when it panics, each job alone, so
/// only the jobs that fail get an error.
///
/// `release(n)` gives back the queue's room of `n` answered samples before their replies go
/// out: a client that sends again the moment it is answered finds the room free.
fn answer<I: Clone, T>(
    predict: &dyn Fn(Vec<I>) -> Vec<T>,
    jobs: Vec<Job<I, T>>,
    max_batch: usize,
    metrics: &Metrics,
    release: &dyn Fn(usize),
) {
    let all: Vec<I> = jobs.iter().flat_map(|j| j.inputs.iter().cloned()).collect();
    let total = all.len();
    match run_inputs(predict, all, max_batch, metrics) {
        Ok(mut preds) => {
            release(total);
            for j in jobs {
                let rest = preds.split_off(j.inputs.len());
                let _ = j.reply.send(Ok(std::mem::replace(&mut preds, rest)));
            }
        }
        Err(_) => {
            metrics.panic();
            for j in jobs {
                let n = j.inputs.len();
                let r = if j.reply.is_closed() {
                    release(n);
                    continue;
                } else {
                    run_inputs(predict, j.inputs, max_batch, metrics)
                };
                release(n);
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

/// The most samples a pass starting now takes (`max_batch`, or with no `max_wait` and other
/// workers idle, its share of the waiting samples among them and itself): two passes of 16
/// start rather than one of 30 and one of 2.
fn share(shared: &Shared, max_batch: usize, max_wait: Duration) -> usize {
    let free = shared.idle_workers.load(Ordering::SeqCst) + 1;
    if free == 1 || !max_wait.is_zero() {
        return max_batch;
    }
    let waiting = shared
        .queued_samples
        .load(Ordering::SeqCst)
        .saturating_sub(shared.in_pass.load(Ordering::SeqCst));
    waiting.div_ceil(free).clamp(1, max_batch.max(1))
}

/// How often a waiting forward pass looks again at the requests still arriving.
const ARRIVING_POLL: Duration = Duration::from_micros(250);

/// The model thread's loop, until every sender is gone. A forward pass takes what is queued,
/// waits up to `max_wait` for more, then up to [`ARRIVING_WAIT`] (from its first request) for
/// requests still being prepared; at most `max_batch` samples.
pub fn batch_loop<I: Clone, T>(
    predict: impl Fn(Vec<I>) -> Vec<T>,
    rx: Receiver<Job<I, T>>,
    max_batch: usize,
    max_wait: Duration,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
) {
    shared.alive.store(true, Ordering::SeqCst);
    let _guard = AliveGuard(shared.clone());
    // Takes a job off the queue, dropping it (and its count) when its client has gone.
    let take = |j: Job<I, T>, jobs: &mut Vec<Job<I, T>>| -> usize {
        if j.reply.is_closed() {
            shared
                .queued_samples
                .fetch_sub(j.inputs.len(), Ordering::SeqCst);
            metrics.dropped();
            return 0;
        }
        let n = j.inputs.len();
        jobs.push(j);
        n
    };
    loop {
        shared.idle_workers.fetch_add(1, Ordering::SeqCst);
        let first = rx.recv();
        shared.idle_workers.fetch_sub(1, Ordering::SeqCst);
        let Ok(first) = first else { break };
        let start = Instant::now();
        let cap = share(&shared, max_batch, max_wait);
        let (deadline, arriving_deadline) = (start + max_wait, start + max_wait.max(ARRIVING_WAIT));
        let mut jobs = Vec::new();
        let mut count = take(first, &mut jobs);
        while count < cap {
            let now = Instant::now();
            let wait = if now < deadline {
                deadline - now
            } else if now < arriving_deadline && shared.arriving.load(Ordering::SeqCst) > 0 {
                (arriving_deadline - now).min(ARRIVING_POLL)
            } else {
                Duration::ZERO
            };
            match rx.recv_timeout(wait) {
                Ok(j) => count += take(j, &mut jobs),
                Err(RecvTimeoutError::Timeout) if !wait.is_zero() => {}
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let n: usize = jobs.iter().map(|j| j.inputs.len()).sum();
        shared.in_pass.fetch_add(n, Ordering::SeqCst);
        let release = |k: usize| {
            shared.in_pass.fetch_sub(k, Ordering::SeqCst);
            shared.queued_samples.fetch_sub(k, Ordering::SeqCst);
        };
        answer(&predict, jobs, max_batch, &metrics, &release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_takes_its_share_when_other_workers_are_idle() {
        let shared = Shared::default();
        shared.queued_samples.store(40, Ordering::SeqCst);
        shared.in_pass.store(10, Ordering::SeqCst);
        let zero = Duration::ZERO;
        assert_eq!(share(&shared, 32, zero), 32, "alone: up to max_batch");
        shared.idle_workers.store(1, Ordering::SeqCst);
        assert_eq!(share(&shared, 32, zero), 15, "30 waiting, two free workers");
        shared.idle_workers.store(3, Ordering::SeqCst);
        assert_eq!(share(&shared, 32, zero), 8);
        assert_eq!(share(&shared, 4, zero), 4, "never over max_batch");
        let wait = Duration::from_millis(5);
        assert_eq!(share(&shared, 32, wait), 32, "a pass told to wait fills up");
        shared.queued_samples.store(10, Ordering::SeqCst);
        assert_eq!(share(&shared, 32, zero), 1, "nothing waiting: at least one");
    }

    #[test]
    fn a_panicking_request_fails_alone_and_gone_clients_are_dropped() {
        let (tx, rx) = crossbeam_channel::unbounded::<Job<String, String>>();
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared::default());
        let mut replies = Vec::new();
        for keys in [vec!["a", "b"], vec!["boom"], vec!["c"], vec!["gone"]] {
            let (rtx, rrx) = oneshot::channel();
            let inputs: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            shared
                .queued_samples
                .fetch_add(inputs.len(), Ordering::SeqCst);
            tx.send(Job { inputs, reply: rtx }).unwrap();
            replies.push(rrx);
        }
        drop(replies.pop()); // the last client disconnects before its turn
        drop(tx);
        let predict = |b: Vec<String>| -> Vec<String> {
            if b.iter().any(|k| k == "boom") {
                panic!("model failure");
            }
            b.iter().map(|k| k.to_uppercase()).collect()
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

    /// A client answered finds its samples' room free: the room is given back before the reply
    /// goes out (after it, a client sending again at once was turned away with 503 on a loaded
    /// machine, its own answered samples still counted).
    #[test]
    fn the_queue_room_is_free_when_the_reply_arrives() {
        let (tx, rx) = crossbeam_channel::unbounded::<Job<String, String>>();
        let shared = Arc::new(Shared::default());
        let (s2, metrics) = (shared.clone(), Arc::new(Metrics::default()));
        let slow = |b: Vec<String>| -> Vec<String> {
            std::thread::sleep(Duration::from_millis(20));
            b
        };
        let worker = std::thread::spawn(move || {
            batch_loop(slow, rx, 64, Duration::ZERO, metrics, s2);
        });
        for round in 0..20 {
            let (rtx, rrx) = oneshot::channel();
            shared.queued_samples.fetch_add(3, Ordering::SeqCst);
            let inputs = vec!["a".to_string(); 3];
            tx.send(Job { inputs, reply: rtx }).unwrap();
            assert_eq!(rrx.blocking_recv().unwrap().unwrap().len(), 3);
            assert_eq!(
                shared.queued_samples.load(Ordering::SeqCst),
                0,
                "round {round}"
            );
            assert_eq!(shared.in_pass.load(Ordering::SeqCst), 0, "round {round}");
        }
        drop(tx);
        worker.join().unwrap();
    }
}
