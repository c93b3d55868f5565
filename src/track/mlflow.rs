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

pub struct Client {
    base: String,
    http: reqwest::Client,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    async fn answer(&self, what: &str, r: reqwest::Response) -> Result<Value, CallError> {
        let status = r.status();
        let text = r.text().await.map_err(transient)?;
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = v["message"].as_str().unwrap_or(&text).to_string();
        let code = v["error_code"].as_str().unwrap_or("").to_string();
        Err(CallError {
            permanent: status.is_client_error() && status.as_u16() != 429,
            error: anyhow::anyhow!("{what}: HTTP {status} {code} {message}"),
        })
    }

    async fn post(&self, api: &str, body: Value) -> Result<Value, CallError> {
        let url = format!("{}/api/2.0/mlflow/{api}", self.base);
        let r = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| unsent(&url, e))?;
        self.answer(api, r).await
    }

    async fn get(&self, api: &str, query: &[(&str, &str)]) -> Result<Value, CallError> {
        let url = format!("{}/api/2.0/mlflow/{api}", self.base);
        let r = self
            .http
            .get(&url)
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
        let bytes = std::fs::read(local)
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
                    .http
                    .put(&url)
                    .body(bytes)
                    .send()
                    .await
                    .map_err(|e| unsent(&url, e))?;
                self.answer("artifact upload", r).await.map(|_| ())
            }
            ArtifactRoot::Local(root) => {
                let to = root.join(dest);
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

/// Checks a tracking URI: an MLflow server's http(s) address.
pub fn check_uri(uri: &str) -> anyhow::Result<()> {
    let ok = (uri.starts_with("http://") || uri.starts_with("https://"))
        && reqwest::Url::parse(uri).is_ok_and(|u| u.host().is_some());
    if !ok {
        bail!(
            "tracking URI {uri:?}: an MLflow tracking server's address, like http://127.0.0.1:5000"
        );
    }
    Ok(())
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
    fn tracking_uris() {
        assert!(check_uri("http://127.0.0.1:5000").is_ok());
        assert!(check_uri("https://mlflow.example.com/").is_ok());
        for bad in ["", "file:///tmp/mlruns", "127.0.0.1:5000", "http://"] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }
}
