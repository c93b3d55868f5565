//! Experiment tracking in MLflow. A `Tracker` hands what a run logs (params, tags, metrics with
//! their step, artifacts) to a background thread that sends it to the tracking server
//! (`mlflow.rs`), so training never waits on the network. A server that is slow or goes away
//! does not stop training: events queue (up to `MAX_QUEUED` of them; beyond, they are dropped and
//! counted), sends are retried with backoff, a warning is printed once, and `finish` waits at
//! most `run.track_flush_s` for the queue to drain, then says what could not be logged.
//!
//! A run's MLflow id is kept in its folder (`tracking.json`), so a resumed run, `dfm eval
//! --track` and `dfm export --track` log into the same MLflow run.

pub mod mlflow;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use mlflow::{Client, Metric, RunInfo};
use serde_json::Value;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The most events waiting to be sent; a longer outage drops the newest and counts them.
pub const MAX_QUEUED: usize = 10_000;
/// The file in a run folder that names its MLflow run.
pub const LINK_FILE: &str = "tracking.json";
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where to log: the server and the experiment.
#[derive(Clone, Debug)]
pub struct Target {
    pub uri: String,
    pub experiment: String,
    /// How long `finish` waits for queued events.
    pub flush: Duration,
}

impl Target {
    /// The tracking server from the command line, else the config's `run.track`, else the
    /// environment's `MLFLOW_TRACKING_URI` (what MLflow users already set); None: no tracking.
    pub fn resolve(
        flag: Option<&str>,
        cfg: &crate::config::Config,
    ) -> anyhow::Result<Option<Self>> {
        let env = std::env::var("MLFLOW_TRACKING_URI").ok();
        let uri = flag
            .map(str::to_string)
            .or_else(|| (!cfg.run.track.is_empty()).then(|| cfg.run.track.clone()))
            .or(env)
            .filter(|u| !u.is_empty());
        let Some(uri) = uri else {
            return Ok(None);
        };
        mlflow::check_uri(&uri)?;
        Ok(Some(Target {
            uri,
            experiment: cfg.run.experiment.clone(),
            flush: Duration::from_secs_f64(cfg.run.track_flush_s),
        }))
    }
}

impl Target {
    /// For commands that add to a run (eval, export): the `--track` flag, else the
    /// environment's `MLFLOW_TRACKING_URI`; the experiment and flush time of `cfg`.
    pub fn from_flag(
        flag: Option<&str>,
        cfg: &crate::config::Config,
    ) -> anyhow::Result<Option<Self>> {
        let mut c = cfg.clone();
        c.run.track.clear();
        Target::resolve(flag, &c)
    }
}

/// A tracker that adds to the MLflow run a run folder names (when it names one on the same
/// server), else to a new run called `name`.
pub fn attach(target: &Target, run_dir: Option<&Path>, name: &str) -> anyhow::Result<Tracker> {
    let link = run_dir.and_then(Link::load).filter(|l| l.uri == target.uri);
    let want = match link {
        Some(l) => RunRef::Existing(l.run.run_id),
        None => RunRef::New {
            name: name.to_string(),
            tags: standard_tags("", "")
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        },
    };
    Tracker::start(target, want, None)
}

/// Logs an exported bundle's files under `bundle/` of the run's MLflow run (or a new run).
pub fn log_bundle(target: &Target, run_dir: &Path, bundle: &Path) -> anyhow::Result<Summary> {
    let t = attach(
        target,
        Some(run_dir),
        &format!("{} export", run_dir.display()),
    )?;
    t.artifact_dir(bundle, "bundle");
    Ok(t.finish(true))
}

/// Which MLflow run to log into.
#[derive(Clone, Debug)]
pub enum RunRef {
    /// A new run with this name and these tags.
    New {
        name: String,
        tags: Vec<(String, String)>,
    },
    /// A run that exists on the server (a resumed training run).
    Existing(String),
}

/// The link a run folder keeps to its MLflow run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub uri: String,
    #[serde(flatten)]
    pub run: RunInfo,
}

impl Link {
    pub fn load(run_dir: &Path) -> Option<Link> {
        let text = std::fs::read_to_string(run_dir.join(LINK_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// What reached the server and what did not.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub uri: String,
    pub run: Option<RunInfo>,
    pub metrics_sent: usize,
    pub params_sent: usize,
    pub artifacts_sent: Vec<String>,
    pub metrics_lost: usize,
    pub params_lost: usize,
    pub artifacts_lost: Vec<String>,
    /// Points of steps the server already held (a resumed run's repeated steps), not re-sent.
    pub metrics_already_logged: usize,
    pub last_error: Option<String>,
}

impl Summary {
    pub fn complete(&self) -> bool {
        self.run.is_some()
            && self.metrics_lost == 0
            && self.params_lost == 0
            && self.artifacts_lost.is_empty()
    }

    /// One line for the terminal.
    pub fn render(&self) -> String {
        let place = match &self.run {
            Some(r) => format!(
                "{}/#/experiments/{}/runs/{}",
                self.uri.trim_end_matches('/'),
                r.experiment_id,
                r.run_id
            ),
            None => self.uri.clone(),
        };
        let mut s = format!(
            "tracking: {} metric points, {} params, {} artifacts logged to {place}",
            self.metrics_sent,
            self.params_sent,
            self.artifacts_sent.len()
        );
        if self.metrics_already_logged > 0 {
            s.push_str(&format!(
                " ({} points of steps the run had logged before its last checkpoint not sent again)",
                self.metrics_already_logged
            ));
        }
        if !self.complete() {
            s.push_str(&format!(
                "; NOT logged: {} metric points, {} params, artifacts [{}]{} (last error: {})",
                self.metrics_lost,
                self.params_lost,
                self.artifacts_lost.join(", "),
                if self.run.is_none() {
                    ", no run could be created"
                } else {
                    ""
                },
                self.last_error.as_deref().unwrap_or("none")
            ));
        }
        s
    }
}

enum Event {
    Metrics(Vec<Metric>),
    Params(Vec<(String, String)>),
    Tags(Vec<(String, String)>),
    Artifact { local: PathBuf, dest: String },
    Finish { status: &'static str },
}

impl Event {
    fn lose(&self, s: &mut Summary) {
        match self {
            Event::Metrics(m) => s.metrics_lost += m.len(),
            Event::Params(p) => s.params_lost += p.len(),
            Event::Artifact { dest, .. } => s.artifacts_lost.push(dest.clone()),
            Event::Tags(_) | Event::Finish { .. } => {}
        }
    }
}

pub struct Tracker {
    tx: Option<Sender<Event>>,
    worker: Option<std::thread::JoinHandle<Summary>>,
    /// Metric points dropped because the queue was full.
    shed: Arc<AtomicUsize>,
    shed_warned: AtomicBool,
    uri: String,
}

impl Tracker {
    /// Starts the background sender; the run is created (or found) on the server there.
    /// `link_to`: the run folder that keeps the MLflow run's id.
    pub fn start(target: &Target, run: RunRef, link_to: Option<PathBuf>) -> anyhow::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(MAX_QUEUED);
        let client = Client::new(&target.uri)?;
        let (t, shed) = (target.clone(), Arc::new(AtomicUsize::new(0)));
        let worker = std::thread::Builder::new()
            .name("dfm-tracking".into())
            .spawn(move || Worker::new(client, t, run, link_to).run(rx))?;
        Ok(Tracker {
            tx: Some(tx),
            worker: Some(worker),
            shed,
            shed_warned: AtomicBool::new(false),
            uri: target.uri.clone(),
        })
    }

    fn send(&self, e: Event) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(e) | TrySendError::Disconnected(e)) = tx.try_send(e) {
            if let Event::Metrics(m) = &e {
                self.shed.fetch_add(m.len(), Ordering::Relaxed);
            }
            if !self.shed_warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "warning: tracking to {}: {MAX_QUEUED} events are waiting; dropping new ones until the server catches up",
                    self.uri
                );
            }
        }
    }

    pub fn params(&self, kv: Vec<(String, String)>) {
        for chunk in kv.chunks(mlflow::MAX_PARAMS_PER_BATCH) {
            let chunk = chunk
                .iter()
                .map(|(k, v)| {
                    let v: String = v.chars().take(mlflow::MAX_PARAM_VALUE).collect();
                    (k.clone(), v)
                })
                .collect();
            self.send(Event::Params(chunk));
        }
    }

    pub fn tags(&self, kv: Vec<(String, String)>) {
        self.send(Event::Tags(kv));
    }

    /// Metrics at a step: every finite number of `values`, nested objects flattened with dots
    /// (`val_loss_by_source.geolife`), keys prefixed by `prefix` when not empty.
    pub fn metrics(&self, prefix: &str, step: u64, values: &Value) {
        let now = mlflow::now_ms();
        let mut out = Vec::new();
        flatten(prefix, values, &mut out);
        let ms: Vec<Metric> = out
            .into_iter()
            .map(|(key, value)| Metric {
                key,
                value,
                step,
                timestamp: now,
            })
            .collect();
        for chunk in ms.chunks(mlflow::MAX_METRICS_PER_BATCH) {
            self.send(Event::Metrics(chunk.to_vec()));
        }
    }

    /// A `metrics.jsonl` line: its step, and every other number as a metric at that step.
    pub fn metrics_line(&self, line: &Value) {
        let step = line["step"].as_u64().unwrap_or(0);
        let mut rest = line.clone();
        if let Some(o) = rest.as_object_mut() {
            o.remove("step");
        }
        self.metrics("", step, &rest);
    }

    /// A file, put at `dest` under the run's artifacts (skipped when it does not exist).
    pub fn artifact(&self, local: &Path, dest: &str) {
        if local.is_file() {
            self.send(Event::Artifact {
                local: local.to_path_buf(),
                dest: dest.to_string(),
            });
        }
    }

    /// Every file under `dir`, at `dest/<relative path>`.
    pub fn artifact_dir(&self, dir: &Path, dest: &str) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(dir) {
                    let rel = rel.to_string_lossy().replace('\\', "/");
                    self.artifact(&p, &format!("{dest}/{rel}"));
                }
            }
        }
    }

    /// Marks the run FINISHED (or FAILED), waits for the queue to drain (at most the target's
    /// flush time) and says what reached the server.
    pub fn finish(mut self, ok: bool) -> Summary {
        self.close(if ok { "FINISHED" } else { "FAILED" })
    }

    fn close(&mut self, status: &'static str) -> Summary {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send_timeout(Event::Finish { status }, Duration::from_secs(5));
        }
        let mut s = match self.worker.take().map(|w| w.join()) {
            Some(Ok(s)) => s,
            _ => Summary {
                uri: self.uri.clone(),
                last_error: Some("the tracking thread stopped".into()),
                ..Default::default()
            },
        };
        s.metrics_lost += self.shed.load(Ordering::Relaxed);
        s
    }
}

impl Drop for Tracker {
    /// A run that ends in an error is marked FAILED.
    fn drop(&mut self) {
        if self.tx.is_some() {
            let s = self.close("FAILED");
            eprintln!("{}", s.render());
        }
    }
}

/// Numbers of a JSON value as (dotted key, value); non-finite numbers and other types skipped.
pub fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let k = metric_name(k);
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                out.push((prefix.to_string(), x));
            }
        }
        _ => {}
    }
}

/// A key as MLflow accepts it in a metric name (alphanumerics, `_ - . : /` and spaces): any other
/// character becomes `_`. Keys come from data too (slice values such as a region's name, the
/// speed band `15+ m/s`), and one bad name makes MLflow refuse the whole batch it is in.
fn metric_name(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.:/ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What the sender's channel gave.
enum Next {
    Event(Event),
    /// Nothing within the wait.
    Idle,
    /// Every sender is gone.
    Closed,
}

/// The background sender.
struct Worker {
    client: Client,
    target: Target,
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
}

impl Worker {
    fn new(client: Client, target: Target, want: RunRef, link_to: Option<PathBuf>) -> Self {
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
        }
    }

    fn run(mut self, rx: Receiver<Event>) -> Summary {
        let mut finish: Option<(&'static str, Instant)> = None;
        loop {
            if finish.is_none() {
                let flush = self.target.flush;
                let end = |status| Some((status, Instant::now() + flush));
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
            if let Some((status, deadline)) = finish {
                if self.pending.is_empty() || Instant::now() >= deadline {
                    self.close(status);
                    break;
                }
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
            match self
                .rt
                .block_on(open_run(&self.client, &self.target, &self.want))
            {
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
        let r = self.rt.block_on(async {
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
        if let Some(r) = &self.run {
            if let Err(e) = self.rt.block_on(self.client.set_status(&r.run_id, status)) {
                self.summary.last_error = Some(e.to_string());
            }
        }
    }

    fn write_link(&self, run: &RunInfo) {
        let Some(dir) = &self.link_to else { return };
        let link = Link {
            uri: self.target.uri.clone(),
            run: run.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&link) {
            if let Err(e) = crate::util::write_atomic(&dir.join(LINK_FILE), &bytes) {
                eprintln!(
                    "warning: tracking: cannot write {}: {e:#}",
                    dir.join(LINK_FILE).display()
                );
            }
        }
    }
}

/// Creates the run (in the experiment, made when missing) or finds an existing one and marks it
/// running again.
async fn open_run(c: &Client, t: &Target, want: &RunRef) -> Result<RunInfo, mlflow::CallError> {
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

/// dfm's own tags on a run: its version and git commit, the data's hash, the device.
pub fn standard_tags(data_sha256: &str, device: &str) -> Vec<(String, String)> {
    vec![
        ("mlflow.source.name".into(), "dfm".into()),
        ("dfm.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("dfm.git_commit".into(), env!("DFM_GIT_COMMIT").into()),
        ("dfm.data_sha256".into(), data_sha256.into()),
        ("dfm.device".into(), device.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_takes_finite_numbers_with_dotted_keys() {
        let v = serde_json::json!({"loss": 1.5, "by": {"a": 2, "b": null, "15+ m/s": 3, "Zürich": 4}, "name": "x", "nan": f64::NAN});
        let mut out = Vec::new();
        flatten("test", &v, &mut out);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            out,
            vec![
                ("test.by.15_ m/s".to_string(), 3.0),
                ("test.by.Z_rich".to_string(), 4.0),
                ("test.by.a".to_string(), 2.0),
                ("test.loss".to_string(), 1.5)
            ]
        );
    }

    #[test]
    fn an_unreachable_server_loses_nothing_silently() {
        // Nothing listens on port 9 of loopback (discard; closed on test machines).
        let t = Target {
            uri: "http://127.0.0.1:9".into(),
            experiment: "dfm".into(),
            flush: Duration::from_millis(600),
        };
        let tr = Tracker::start(
            &t,
            RunRef::New {
                name: "x".into(),
                tags: vec![],
            },
            None,
        )
        .unwrap();
        tr.metrics("", 1, &serde_json::json!({"a": 1.0, "b": 2.0}));
        tr.params(vec![("k".into(), "v".into())]);
        let started = Instant::now();
        let s = tr.finish(true);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!((s.metrics_lost, s.params_lost, s.metrics_sent), (2, 1, 0));
        assert!(
            !s.complete() && s.render().contains("NOT logged"),
            "{}",
            s.render()
        );
    }
}
