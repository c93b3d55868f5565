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
mod worker;

use crate::config::tracking_uri;
use crossbeam_channel::{Sender, TrySendError};
use mlflow::{Client, Metric, RunInfo};
use serde_json::Value;
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
pub struct TrackingServer {
    /// The server's address, without user-info (what dfm shows and keeps).
    pub uri: String,
    pub credentials: tracking_uri::Credentials,
    pub experiment: String,
    /// How long `finish` waits for queued events.
    pub flush: Duration,
    /// The local folder a server's local artifact root may lie in (`run.track_artifact_root`).
    pub artifact_root: Option<PathBuf>,
}

impl TrackingServer {
    /// The tracking server from the command line, else the config's `run.track`, else the
    /// environment's `MLFLOW_TRACKING_URI` (what MLflow users already set); None: no tracking.
    /// Credentials: the URI's user-info, else MLflow's environment variables ([`tracking_uri`]).
    pub fn resolve(
        flag: Option<&str>,
        cfg: &crate::config::Config,
    ) -> anyhow::Result<Option<Self>> {
        let env = std::env::var("MLFLOW_TRACKING_URI").ok();
        let (uri, creds) = match (flag, cfg.run.track.as_str(), env) {
            (Some(f), _, _) => tracking_uri::Credentials::split(f),
            (None, t, _) if !t.is_empty() => (t.to_string(), cfg.run.track_credentials.clone()),
            (None, _, Some(e)) => tracking_uri::Credentials::split(&e),
            _ => return Ok(None),
        };
        if uri.is_empty() {
            return Ok(None);
        }
        tracking_uri::check_uri(&uri)?;
        if !creds.is_empty() {
            note_uri_credentials();
        }
        let root = &cfg.run.track_artifact_root;
        Ok(Some(TrackingServer {
            uri,
            credentials: creds.or(tracking_uri::Credentials::from_env()),
            experiment: cfg.run.experiment.clone(),
            flush: Duration::from_secs_f64(cfg.run.track_flush_s),
            artifact_root: (!root.is_empty()).then(|| PathBuf::from(root)),
        }))
    }
}

/// Says once per process that credentials came in a URI (and where they are better kept).
fn note_uri_credentials() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "note: the tracking URI's credentials are used by this process only: dfm never writes, logs or prints them; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for resumed runs and other commands"
        );
    });
}

impl TrackingServer {
    /// For commands that add to a run (eval, export): the `--track` flag, else the
    /// environment's `MLFLOW_TRACKING_URI`; the experiment and flush time of `cfg`.
    pub fn from_flag(
        flag: Option<&str>,
        cfg: &crate::config::Config,
    ) -> anyhow::Result<Option<Self>> {
        let mut c = cfg.clone();
        c.run.track.clear();
        TrackingServer::resolve(flag, &c)
    }
}

/// A tracker that adds to the MLflow run a run folder names (when it names one on the same
/// server), else to a new run called `name`.
pub fn attach(
    target: &TrackingServer,
    run_dir: Option<&Path>,
    name: &str,
) -> anyhow::Result<Tracker> {
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
pub fn log_bundle(
    target: &TrackingServer,
    run_dir: &Path,
    bundle: &Path,
) -> anyhow::Result<Summary> {
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
        let text =
            crate::util::read_text_bounded(&run_dir.join(LINK_FILE), crate::util::limits::SMALL)
                .ok()?;
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
    /// When the end of the run stops waiting for the server (set by `finish`); the request in
    /// flight at that moment is cut off then, not at its own timeout.
    deadline: tokio::sync::watch::Sender<Option<Instant>>,
    flush: Duration,
}

impl Tracker {
    /// Starts the background sender; the run is created (or found) on the server there.
    /// `link_to`: the run folder that keeps the MLflow run's id.
    pub fn start(
        target: &TrackingServer,
        run: RunRef,
        link_to: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(MAX_QUEUED);
        let client = Client::new(
            &target.uri,
            target.credentials.clone(),
            target.artifact_root.clone(),
        )?;
        let (t, shed) = (target.clone(), Arc::new(AtomicUsize::new(0)));
        let (deadline, deadline_rx) = tokio::sync::watch::channel(None);
        let worker = std::thread::Builder::new()
            .name("dfm-tracking".into())
            .spawn(move || worker::Worker::new(client, t, run, link_to, deadline_rx).run(rx))?;
        Ok(Tracker {
            tx: Some(tx),
            worker: Some(worker),
            shed,
            shed_warned: AtomicBool::new(false),
            uri: target.uri.clone(),
            deadline,
            flush: target.flush,
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
            let end = Instant::now() + self.flush;
            self.deadline.send_replace(Some(end));
            let _ = tx.send_deadline(Event::Finish { status }, end);
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
        let t = TrackingServer {
            uri: "http://127.0.0.1:9".into(),
            credentials: Default::default(),
            experiment: "dfm".into(),
            flush: Duration::from_millis(600),
            artifact_root: None,
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
