//! The tracker's background sender: it opens the MLflow run (or finds the one a resumed run
//! names), sends queued events oldest first with retries and backoff, drops the steps a server
//! already holds, and at the end marks the run FINISHED or FAILED, cutting off any request at
//! the flush deadline.

use super::mlflow::{self, Client, RunInfo};
use super::{Event, LINK_FILE, Link, MAX_BACKOFF, MAX_QUEUED, RunRef, Summary, TrackingServer};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the sender's channel gave.
enum Next {
    Event(Event),
    /// Nothing within the wait.
    Idle,
    /// Every sender is gone.
    Closed,
}

/// The background sender.
pub(super) struct Worker {
    client: Client,
    target: TrackingServer,
    want: RunRef,
    link_to: Option<PathBuf>,
    rt: tokio::runtime::Runtime,
    run: Option<RunInfo>,
    pending: VecDeque<Event>,
    summary: Summary,
    backoff: Duration,
    /// Failed sends in a row.
    failures: usize,
    warned: bool,
    /// The end of the flush, once the run finishes (see [`Tracker::finish`]).
    deadline: tokio::sync::watch::Receiver<Option<Instant>>,
}

impl Worker {
    pub(super) fn new(
        client: Client,
        target: TrackingServer,
        want: RunRef,
        link_to: Option<PathBuf>,
        deadline: tokio::sync::watch::Receiver<Option<Instant>>,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the tracking thread");
        Worker {
            client,
            summary: Summary {
                uri: target.uri.clone(),
                ..Default::default()
            },
            target,
            want,
            link_to,
            rt,
            run: None,
            pending: VecDeque::new(),
            backoff: Duration::ZERO,
            failures: 0,
            warned: false,
            deadline,
        }
    }

    /// Runs one call to the server, cut off at the flush deadline once there is one.
    fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, mlflow::CallError>>,
    ) -> Result<T, mlflow::CallError> {
        let mut deadline = self.deadline.clone();
        self.rt.block_on(async move {
            let until = async {
                loop {
                    let end = *deadline.borrow_and_update();
                    if let Some(end) = end {
                        tokio::time::sleep_until(end.into()).await;
                        return;
                    }
                    if deadline.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                r = fut => r,
                _ = until => Err(mlflow::CallError {
                    permanent: false,
                    error: anyhow::anyhow!(
                        "no answer before the end of run.track_flush_s: given up"
                    ),
                }),
            }
        })
    }

    pub(super) fn run(mut self, rx: Receiver<Event>) -> Summary {
        let mut finish: Option<(&'static str, Instant)> = None;
        loop {
            if finish.is_none() {
                let flush = self.target.flush;
                let set = *self.deadline.borrow();
                let end = |status| Some((status, set.unwrap_or_else(|| Instant::now() + flush)));
                match self.next_event(&rx) {
                    Next::Event(Event::Finish { status }) => finish = end(status),
                    Next::Event(e) => self.queue(e),
                    Next::Idle => {}
                    // Every sender is gone without a finish: the process is ending.
                    Next::Closed => finish = end("FAILED"),
                }
                while let Ok(e) = rx.try_recv() {
                    match e {
                        Event::Finish { status } => finish = end(status),
                        e => self.queue(e),
                    }
                }
            } else if let Some((_, deadline)) = finish {
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(self.backoff.min(left));
            }
            if let Some((status, deadline)) = finish
                && (self.pending.is_empty() || Instant::now() >= deadline)
            {
                self.close(status);
                break;
            }
            self.send_one();
        }
        let mut s = self.summary;
        s.run = self.run;
        s
    }

    /// Waits for the next event: without limit when there is nothing to send, for the backoff
    /// after a failure, not at all otherwise.
    fn next_event(&self, rx: &Receiver<Event>) -> Next {
        let got = if self.pending.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(self.backoff)
        };
        match got {
            Ok(e) => Next::Event(e),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    fn queue(&mut self, e: Event) {
        if self.pending.len() >= MAX_QUEUED {
            e.lose(&mut self.summary);
        } else {
            self.pending.push_back(e);
        }
    }

    fn failed(&mut self, e: &mlflow::CallError) {
        self.summary.last_error = Some(e.to_string());
        self.failures += 1;
        // One failure is often a pooled connection the server closed; warn when it persists.
        if self.failures >= 2 && !self.warned {
            eprintln!(
                "warning: tracking server {}: {e}; training goes on, retrying in the background",
                self.target.uri
            );
            self.warned = true;
        }
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(250), MAX_BACKOFF);
    }

    /// Sends the oldest queued event (creating the run first when needed).
    fn send_one(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.run.is_none() {
            match self.call(open_run(&self.client, &self.target, &self.want)) {
                Ok(r) => {
                    self.write_link(&r);
                    self.run = Some(r);
                }
                Err(e) => return self.failed(&e),
            }
        }
        let run = self.run.clone().expect("opened");
        self.drop_repeated_steps(&run);
        let e = self.pending.front().expect("not empty");
        let c = &self.client;
        let r = self.call(async {
            match e {
                Event::Metrics(m) => c.log_batch(&run.run_id, m, &[], &[]).await,
                Event::Params(p) => c.log_batch(&run.run_id, &[], p, &[]).await,
                Event::Tags(t) => c.log_batch(&run.run_id, &[], &[], t).await,
                Event::Artifact { local, dest } => c.upload(&run, local, dest).await,
                Event::Finish { .. } => Ok(()),
            }
        });
        match r {
            Ok(()) => {
                let e = self.pending.pop_front().expect("not empty");
                match e {
                    Event::Metrics(m) => self.summary.metrics_sent += m.len(),
                    Event::Params(p) => self.summary.params_sent += p.len(),
                    Event::Artifact { dest, .. } => self.summary.artifacts_sent.push(dest),
                    _ => {}
                }
                self.backoff = Duration::ZERO;
                self.failures = 0;
            }
            Err(err) if err.permanent => {
                // The server will refuse it again: count it as lost and go on.
                self.summary.last_error = Some(err.to_string());
                eprintln!("warning: tracking: {err}");
                let e = self.pending.pop_front().expect("not empty");
                e.lose(&mut self.summary);
            }
            Err(err) => self.failed(&err),
        }
    }

    /// Leaves out of the oldest queued metrics the points at or before the step the server
    /// already holds for their key (a resumed run repeats the steps after its last checkpoint).
    fn drop_repeated_steps(&mut self, run: &RunInfo) {
        if run.logged_up_to.is_empty() {
            return;
        }
        if let Some(Event::Metrics(m)) = self.pending.front_mut() {
            let before = m.len();
            m.retain(|p| run.logged_up_to.get(&p.key).is_none_or(|&s| p.step > s));
            self.summary.metrics_already_logged += before - m.len();
        }
    }

    fn close(&mut self, status: &'static str) {
        for e in std::mem::take(&mut self.pending) {
            e.lose(&mut self.summary);
        }
        if let Some(r) = &self.run
            && let Err(e) = self.call(self.client.set_status(&r.run_id, status))
        {
            self.summary.last_error = Some(e.to_string());
        }
    }

    fn write_link(&self, run: &RunInfo) {
        let Some(dir) = &self.link_to else { return };
        let link = Link {
            uri: self.target.uri.clone(),
            run: run.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&link)
            && let Err(e) = crate::util::write_atomic(&dir.join(LINK_FILE), &bytes)
        {
            eprintln!(
                "warning: tracking: cannot write {}: {e:#}",
                dir.join(LINK_FILE).display()
            );
        }
    }
}

/// Creates the run (in the experiment, made when missing) or finds an existing one and marks it
/// running again.
async fn open_run(
    c: &Client,
    t: &TrackingServer,
    want: &RunRef,
) -> Result<RunInfo, mlflow::CallError> {
    match want {
        RunRef::New { name, tags } => {
            let exp = c.experiment_id(&t.experiment).await?;
            c.create_run(&exp, name, tags).await
        }
        RunRef::Existing(id) => {
            let r = c.get_run(id).await?;
            c.set_status(id, "RUNNING").await?;
            Ok(r)
        }
    }
}
