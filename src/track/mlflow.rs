//! The calls dfm makes to an MLflow tracking server's REST API (2.0): find or create an
//! experiment, create / read / finish a run, log metrics, params and tags in batches, and upload
//! artifacts through the server's artifact proxy (`mlflow-artifacts:` URIs, what `mlflow server`
//! gives by default) or into a local artifact root the server shares with this machine.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// MLflow's limits per `runs/log-batch` request.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_PER_BATCH: usize = 100;
/// MLflow refuses longer param values (6,000 characters in its store); longer ones are cut.
pub const MAX_PARAM_VALUE: usize = 6000;

#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

/// A run on the server.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    pub artifact_uri: String,
    /// The last step the server holds for each metric when the run was opened (empty for a new
    /// run): a resumed run trains again from its last checkpoint, and the steps it repeats are
    /// not logged twice.
    #[serde(skip)]
    pub logged_up_to: std::collections::BTreeMap<String, u64>,
}

/// An error the server will answer the same way again (a bad request), or one worth retrying
/// (no connection, a timeout, a 5xx or 429).
#[derive(Debug)]
pub struct CallError {
    pub permanent: bool,
    pub error: anyhow::Error,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

fn transient(e: impl Into<anyhow::Error>) -> CallError {
    CallError {
        permanent: false,
        error: e.into(),
    }
}

/// A request that got no answer, with its causes ("error sending request" alone does not say
/// whether the connection was refused or timed out).
fn unsent(url: &str, e: reqwest::Error) -> CallError {
    let mut text = format!("{url}: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    transient(anyhow::anyhow!(text))
}

/// The largest answer dfm reads from a tracking server; a longer one is an error, not an
/// allocation (MLflow's answers to dfm's calls are a few KiB).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// MLflow's variable naming a CA bundle (PEM) that signs the tracking server's certificate.
pub const CA_ENV: &str = "MLFLOW_TRACKING_SERVER_CERT_PATH";

pub struct Client {
    base: String,
    http: reqwest::Client,
    auth: crate::config::tracking_uri::Credentials,
    /// A local folder the user allows artifacts to be written under (`run.track_artifact_root`).
    local_root: Option<PathBuf>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Client {
    /// A client of the server at `base` (without user-info), authenticating with `auth`, that
    /// writes artifacts into a local artifact root only under `local_root`. It does not follow
    /// redirects: they would carry the run's data (and drop its credentials) to another address
    /// than the one the user named.
    pub fn new(
        base: &str,
        auth: crate::config::tracking_uri::Credentials,
        local_root: Option<PathBuf>,
    ) -> anyhow::Result<Client> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(p) = std::env::var_os(CA_ENV).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            let pem = crate::util::read_bounded(&p, crate::util::limits::SMALL)
                .with_context(|| format!("${CA_ENV}"))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("${CA_ENV}: {} is not a PEM bundle", p.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http: b.build()?,
            auth,
            local_root,
        })
    }

    async fn answer(&self, what: &str, r: reqwest::Response) -> Result<Value, CallError> {
        let status = r.status();
        if status.is_redirection() {
            let to = r
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map_or(
                    "another address".into(),
                    crate::config::tracking_uri::redact,
                );
            return Err(CallError {
                permanent: true,
                error: anyhow::anyhow!(
                    "{what}: HTTP {status}: the server redirects to {to}; dfm does not follow redirects (the run's data would go elsewhere than the tracking URI says): point the tracking URI at the address that answers"
                ),
            });
        }
        let bytes = read_capped(what, r).await?;
        let text = String::from_utf8_lossy(&bytes);
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message: String = v["message"]
            .as_str()
            .unwrap_or(&text)
            .chars()
            .take(500)
            .collect();
        let code = v["error_code"].as_str().unwrap_or("").to_string();
        Err(CallError {
            permanent: status.is_client_error() && status.as_u16() != 429,
            error: anyhow::anyhow!("{what}: HTTP {status} {code} {message}"),
        })
    }

    async fn post(&self, api: &str, body: Value) -> Result<Value, CallError> {
        let url = format!("{}/api/2.0/mlflow/{api}", self.base);
        let r = self
            .auth
            .apply(self.http.post(&url))
            .json(&body)
            .send()
            .await
            .map_err(|e| unsent(&url, e))?;
        self.answer(api, r).await
    }

    async fn get(&self, api: &str, query: &[(&str, &str)]) -> Result<Value, CallError> {
        let url = format!("{}/api/2.0/mlflow/{api}", self.base);
        let r = self
            .auth
            .apply(self.http.get(&url))
            .query(query)
            .send()
            .await
            .map_err(|e| unsent(&url, e))?;
        self.answer(api, r).await
    }

    /// The id of the experiment called `name`, created when it does not exist yet.
    pub async fn experiment_id(&self, name: &str) -> Result<String, CallError> {
        match self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(v) => return id_of(&v["experiment"]["experiment_id"]),
            Err(e) if !e.permanent => return Err(e),
            Err(_) => {}
        }
        let v = self
            .post("experiments/create", json!({ "name": name }))
            .await?;
        id_of(&v["experiment_id"])
    }

    pub async fn create_run(
        &self,
        experiment_id: &str,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<RunInfo, CallError> {
        let v = self
            .post(
                "runs/create",
                json!({
                    "experiment_id": experiment_id,
                    "run_name": name,
                    "start_time": now_ms(),
                    "tags": pairs(tags),
                }),
            )
            .await?;
        run_info(&v["run"]["info"])
    }

    pub async fn get_run(&self, run_id: &str) -> Result<RunInfo, CallError> {
        let v = self.get("runs/get", &[("run_id", run_id)]).await?;
        let mut run = run_info(&v["run"]["info"])?;
        // `data.metrics` holds each metric's latest point: the one with the highest step.
        for m in v["run"]["data"]["metrics"].as_array().into_iter().flatten() {
            if let (Some(k), Some(step)) = (m["key"].as_str(), m["step"].as_u64()) {
                run.logged_up_to.insert(k.to_string(), step);
            }
        }
        Ok(run)
    }

    /// Sets a run's status: RUNNING, FINISHED, FAILED or KILLED (with an end time when over).
    pub async fn set_status(&self, run_id: &str, status: &str) -> Result<(), CallError> {
        let mut body = json!({ "run_id": run_id, "status": status });
        if status != "RUNNING" {
            body["end_time"] = json!(now_ms());
        }
        self.post("runs/update", body).await.map(|_| ())
    }

    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<(), CallError> {
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|m| {
                json!({"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp})
            })
            .collect();
        self.post(
            "runs/log-batch",
            json!({ "run_id": run_id, "metrics": metrics, "params": pairs(params), "tags": pairs(tags) }),
        )
        .await
        .map(|_| ())
    }

    /// Puts a local file at `dest` (a relative path) under the run's artifact root.
    pub async fn upload(&self, run: &RunInfo, local: &Path, dest: &str) -> Result<(), CallError> {
        let bytes = crate::util::read_bounded(local, MAX_ARTIFACT_BYTES)
            .with_context(|| format!("artifact {}", local.display()))
            .map_err(|error| CallError {
                permanent: true,
                error,
            })?;
        match artifact_root(&run.artifact_uri) {
            ArtifactRoot::Proxied(rel) => {
                let url = format!(
                    "{}/api/2.0/mlflow-artifacts/artifacts/{rel}/{dest}",
                    self.base
                );
                let r = self
                    .auth
                    .apply(self.http.put(&url))
                    .body(bytes)
                    .send()
                    .await
                    .map_err(|e| unsent(&url, e))?;
                self.answer("artifact upload", r).await.map(|_| ())
            }
            ArtifactRoot::Local(root) => {
                let to =
                    local_artifact(self.local_root.as_deref(), &root, dest).map_err(|error| {
                        CallError {
                            permanent: true,
                            error,
                        }
                    })?;
                let write = || -> anyhow::Result<()> {
                    if let Some(p) = to.parent() {
                        std::fs::create_dir_all(p)?;
                    }
                    std::fs::write(&to, &bytes)?;
                    Ok(())
                };
                write()
                    .with_context(|| format!("artifact root {}", to.display()))
                    .map_err(|error| CallError {
                        permanent: true,
                        error,
                    })
            }
            ArtifactRoot::Elsewhere => Err(CallError {
                permanent: true,
                error: anyhow::anyhow!(
                    "the server keeps artifacts at {}, which dfm cannot write: start `mlflow server` with artifact proxying (its default, `--serve-artifacts`)",
                    run.artifact_uri
                ),
            }),
        }
    }
}

/// The largest file dfm uploads as an artifact (a bundle's weights are far smaller).
pub const MAX_ARTIFACT_BYTES: u64 = 4 << 30;

/// Reads an answer's body, at most [`MAX_ANSWER_BYTES`] of it.
async fn read_capped(what: &str, mut r: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let too_big = || CallError {
        permanent: true,
        error: anyhow::anyhow!(
            "{what}: the server's answer is longer than {MAX_ANSWER_BYTES} bytes; dfm reads no more"
        ),
    };
    if r.content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(transient)? {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Where an artifact goes in a local artifact root the server named: only under the folder the
/// user allowed (`run.track_artifact_root`), never elsewhere on this machine because a server
/// said so.
fn local_artifact(allowed: Option<&Path>, root: &Path, dest: &str) -> anyhow::Result<PathBuf> {
    use std::path::Component;
    let plain = |p: &Path| {
        p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::RootDir))
    };
    let Some(allowed) = allowed else {
        bail!(
            "the server keeps artifacts in the local folder {}; dfm writes a server's local artifact root only under a folder you allow with run.track_artifact_root (or start `mlflow server` with artifact proxying, its default)",
            root.display()
        );
    };
    let to = root.join(dest);
    anyhow::ensure!(
        root.is_absolute() && plain(&to) && to.starts_with(allowed),
        "the server's artifact root {} is not inside run.track_artifact_root {}: not written",
        root.display(),
        allowed.display()
    );
    Ok(to)
}

#[derive(Debug, PartialEq)]
pub enum ArtifactRoot {
    /// `mlflow-artifacts:/1/<run>/artifacts` (or with a host): the server's proxy, at this path.
    Proxied(String),
    /// `file:///...` or a plain path: written directly.
    Local(PathBuf),
    /// Object stores (s3://, gs://, ...): not written by dfm.
    Elsewhere,
}

pub fn artifact_root(uri: &str) -> ArtifactRoot {
    if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
        // mlflow-artifacts:/path or mlflow-artifacts://host:port/path
        let path = match rest.strip_prefix("//") {
            Some(h) => h.split_once('/').map(|x| x.1).unwrap_or(""),
            None => rest.trim_start_matches('/'),
        };
        return ArtifactRoot::Proxied(path.trim_end_matches('/').to_string());
    }
    if let Some(p) = uri.strip_prefix("file://") {
        return ArtifactRoot::Local(PathBuf::from(p));
    }
    if uri.starts_with('/') {
        return ArtifactRoot::Local(PathBuf::from(uri));
    }
    ArtifactRoot::Elsewhere
}

fn pairs(kv: &[(String, String)]) -> Vec<Value> {
    kv.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

fn id_of(v: &Value) -> Result<String, CallError> {
    match v.as_str() {
        Some(s) => Ok(s.to_string()),
        None => Err(CallError {
            permanent: true,
            error: anyhow::anyhow!("the server's answer has no id: {v}"),
        }),
    }
}

fn run_info(v: &Value) -> Result<RunInfo, CallError> {
    let field = |k: &str| id_of(&v[k]);
    Ok(RunInfo {
        run_id: field("run_id")?,
        experiment_id: field("experiment_id")?,
        artifact_uri: field("artifact_uri")?,
        logged_up_to: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_roots() {
        assert_eq!(
            artifact_root("mlflow-artifacts:/1/abc/artifacts"),
            ArtifactRoot::Proxied("1/abc/artifacts".into())
        );
        assert_eq!(
            artifact_root("mlflow-artifacts://h:5000/1/abc/artifacts/"),
            ArtifactRoot::Proxied("1/abc/artifacts".into())
        );
        assert_eq!(
            artifact_root("file:///srv/mlruns/1/abc/artifacts"),
            ArtifactRoot::Local("/srv/mlruns/1/abc/artifacts".into())
        );
        assert_eq!(artifact_root("s3://b/1/abc"), ArtifactRoot::Elsewhere);
    }

    #[test]
    fn a_local_artifact_root_is_written_only_under_the_allowed_folder() {
        let root = Path::new("/srv/mlruns/1/abc/artifacts");
        assert!(local_artifact(None, root, "config.toml").is_err());
        let ok = local_artifact(Some(Path::new("/srv/mlruns")), root, "bundle/model.bpk");
        assert_eq!(ok.unwrap(), root.join("bundle/model.bpk"));
        for (allowed, root) in [
            ("/srv/mlruns", "/home/me/.cargo"),
            ("/srv/mlruns", "/srv/mlruns/../../home/me"),
            ("/srv/mlruns", "relative/path"),
        ] {
            let e = local_artifact(Some(Path::new(allowed)), Path::new(root), "config.toml");
            assert!(e.is_err(), "{root}");
        }
    }
}
