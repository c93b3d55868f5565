//! `dfm serve`: the model over HTTP (tokio + axum on hyper).
//!
//! - `POST /v1/predict`: one sample or a list, in the JSON of a stored sample (images inline as
//!   `png_base64`, the IMU as `npy_base64` or rows in `data`; targets, if present, are
//!   ignored). Answers one prediction or a list, in the same order.
//! - `GET /healthz` (liveness), `GET /readyz` (readiness), `GET /metrics` (Prometheus text),
//!   `GET /v1/model` (bundle metadata).
//!
//! Concurrent requests are batched: a model thread takes the first waiting request, gathers
//! more until `max_batch` samples (or its share of the queue) or `max_wait_ms`, and runs one
//! forward pass for all of them; on a CPU several model threads do so at once
//! ([`crate::forward_pools`]).
//! Bad requests get a 4xx with `{"error": ..., "field": ...}`; the server keeps serving.
//! Hostile clients are bounded: body size, samples per request, samples queued, decoded image
//! size, time to send the headers and time per request; the token is checked before the body
//! is read. SIGTERM or Ctrl-C stops accepting and lets in-flight requests finish, for at most
//! `shutdown_grace_ms`.

pub mod handlers;
pub mod metrics;
pub mod model_thread;
pub mod v2;
mod v2_outputs;

use crate::predict::Predictor;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use handlers::AppState;
use metrics::Metrics;
use model_thread::{Job, Shared};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Most samples per forward pass.
    pub max_batch: usize,
    /// Longest a request waits for others to share its forward pass.
    pub max_wait_ms: u64,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Most samples in one request (413 above).
    pub max_samples: usize,
    /// Most samples waiting for the model, all requests together (503 + Retry-After above).
    pub max_queue_samples: usize,
    /// Longest a request may take from its headers to its answer (408 after).
    pub request_timeout_ms: u64,
    /// Longest a client may take to send a request's headers (the connection is closed after).
    pub header_timeout_ms: u64,
    /// Longest shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Bearer token required on /v1/* and /metrics (None: no auth).
    pub token: Option<String>,
    /// Forward passes that run at once (0: [`crate::forward_pools::plan`] picks from the device and
    /// the cores).
    pub model_workers: usize,
    /// The model's name in the Open Inference Protocol (`/v2/models/{name}`).
    pub model_name: String,
    /// SageMaker's container contract too: `GET /ping`, `POST /invocations`.
    pub sagemaker: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: "127.0.0.1:8080".parse().unwrap(),
            max_batch: 32,
            max_wait_ms: 0,
            max_body_bytes: 8 << 20,
            max_samples: 256,
            max_queue_samples: 4096,
            request_timeout_ms: 30_000,
            header_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            token: None,
            model_workers: 0,
            model_name: "dfm".into(),
            sagemaker: false,
        }
    }
}

impl ServeOptions {
    /// Checks every number's range, naming its flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        let check = |flag: &str, v: u64, lo: u64, hi: u64| -> anyhow::Result<()> {
            anyhow::ensure!((lo..=hi).contains(&v), "{flag} {v} is outside [{lo}, {hi}]");
            Ok(())
        };
        check("--max-batch", self.max_batch as u64, 1, 4096)?;
        check("--max-wait-ms", self.max_wait_ms, 0, 10_000)?;
        check(
            "--max-body-bytes",
            self.max_body_bytes as u64,
            1024,
            1 << 30,
        )?;
        check("--max-samples", self.max_samples as u64, 1, 100_000)?;
        check(
            "--max-queue-samples",
            self.max_queue_samples as u64,
            self.max_samples as u64,
            10_000_000,
        )?;
        check(
            "--request-timeout-ms",
            self.request_timeout_ms,
            1,
            3_600_000,
        )?;
        check("--header-timeout-ms", self.header_timeout_ms, 1, 600_000)?;
        check("--shutdown-grace-ms", self.shutdown_grace_ms, 0, 3_600_000)?;
        check("--model-workers", self.model_workers as u64, 0, 256)?;
        let name_ok = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        anyhow::ensure!(
            (1..=64).contains(&self.model_name.len()) && self.model_name.chars().all(name_ok),
            "--model-name {:?}: 1 to 64 letters, digits, '_', '.' or '-' (it is part of a URL path)",
            self.model_name
        );
        Ok(())
    }
}

/// The nice value of a server's forward passes: below its request threads.
const PASS_NICE: i32 = 10;

/// What `GET /v1/model` answers (no file paths of the server).
pub fn model_info_json(p: &Predictor) -> Value {
    let l = &p.loaded;
    json!({
        "step": l.step,
        "schema_version": l.normalization.schema_version,
        "training_data_manifest_sha256": l.normalization.manifest_sha256,
        "spec": l.normalization.spec,
        "model": l.cfg.model,
        "image_size": l.cfg.data.image_size,
        "max_image_side": p.max_image_side(),
        "max_horizon_s": p.loaded.featurizer.horizon_s(),
        "dfm_version": env!("CARGO_PKG_VERSION"),
    })
}

fn router(state: AppState, o: &ServeOptions) -> Router {
    let mut protected = Router::new()
        .route("/v1/predict", post(handlers::predict))
        .route("/v1/features", post(handlers::features))
        .route("/v1/model", get(handlers::model_info))
        .route("/metrics", get(handlers::metrics_text))
        .merge(v2_models());
    let mut open = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::server_ready));
    if o.sagemaker {
        protected = protected.route("/invocations", post(handlers::predict));
        open = open.route("/ping", get(handlers::readyz));
    }
    let protected = protected.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        handlers::require_token,
    ));
    Router::new()
        .merge(protected)
        .merge(open)
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(o.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(o.request_timeout_ms),
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::count_predictions,
        ))
        .with_state(state)
}

/// The Open Inference Protocol's model endpoints ([`v2`]), with and without a version.
fn v2_models() -> Router<AppState> {
    Router::new()
        .route("/v2/models/{name}", get(v2::model_metadata))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/infer", post(v2::infer))
        .route("/v2/models/{name}/versions/{v}", get(v2::model_metadata))
        .route("/v2/models/{name}/versions/{v}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/versions/{v}/infer", post(v2::infer))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests (for at most
/// `shutdown_grace_ms`) and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    predictor: Predictor,
    o: &ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Arc<Metrics>> {
    o.validate()?;
    let metrics = Arc::new(Metrics::default());
    let info = Arc::new(model_info_json(&predictor));
    let limits = predictor.limits();
    let codec = predictor.codec();
    let shared = Arc::new(Shared::default());
    shared
        .alive
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The queue's bound in jobs is a backstop; its bound in samples is `max_queue_samples`.
    let (tx, rx) = crossbeam_channel::bounded::<Job>(o.max_queue_samples.max(1));
    let plan = crate::forward_pools::plan_for(o.model_workers, predictor.device());
    tracing::info!(
        "{} forward pass(es) at once, {} thread(s) each",
        plan.workers,
        plan.threads
    );
    let passes = crate::forward_pools::Passes::niced(plan, PASS_NICE)?;
    let (max_batch, max_wait) = (o.max_batch, Duration::from_millis(o.max_wait_ms));
    let (m2, s2) = (metrics.clone(), shared.clone());
    let worker = std::thread::Builder::new()
        .name("dfm-model".into())
        .spawn(move || {
            passes.each(&|_| {
                let (rx, m, s) = (rx.clone(), m2.clone(), s2.clone());
                model_thread::batch_loop(|f| predictor.forward(f), rx, max_batch, max_wait, m, s)
            })
        })?;
    let state = AppState {
        jobs: tx,
        metrics: metrics.clone(),
        token_sha: o.token.as_deref().map(|t| Arc::new(handlers::token_sha(t))),
        info,
        max_body: o.max_body_bytes,
        max_samples: o.max_samples,
        max_queue_samples: o.max_queue_samples,
        limits,
        shared,
        codec,
        model_name: Arc::from(o.model_name.as_str()),
    };
    let app = router(state, o);
    accept_loop(listener, app, o, shutdown).await;
    // The router (and its job sender) is gone: the model threads drain and stop.
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    Ok(metrics)
}

/// Accepts connections until `shutdown`, each served by hyper with a header read timeout; then
/// waits for open connections to finish their requests, at most `shutdown_grace_ms`.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    o: &ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = Duration::from_millis(o.header_timeout_ms);
    let mut shutdown = std::pin::pin!(shutdown);
    // The connections' tasks: those still open when the grace period ends are aborted, so that
    // the process exits within the time it announces (a client that sent its headers and no
    // body would otherwise hold the server until its request timeout).
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let svc = app.clone().map_request(|r: axum::http::Request<hyper::body::Incoming>| {
                    r.map(axum::body::Body::new)
                });
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                conns.spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = Duration::from_millis(o.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "shutdown: {} connection(s) still open after {} ms; closing them",
            conns.len(),
            o.shutdown_grace_ms
        );
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Reads a bearer token from a file (trimmed; an empty file is an error).
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let t = crate::util::read_text_bounded(path, crate::util::limits::SMALL)?
        .trim()
        .to_string();
    anyhow::ensure!(!t.is_empty(), "{}: the token file is empty", path.display());
    Ok(t)
}

/// Serves `p` on `o.addr` on a runtime of its own until SIGTERM or Ctrl-C (`what` names the
/// model in the log).
pub fn serve_blocking(p: Predictor, o: &ServeOptions, what: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    o.validate()?;
    if !o.addr.ip().is_loopback() {
        eprintln!(
            "warning: listening on {} (not loopback): anyone who can reach it can call the model{}",
            o.addr,
            if o.token.is_none() {
                "; consider --token-file"
            } else {
                ""
            }
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(o.addr)
            .await
            .with_context(|| format!("cannot listen on {}", o.addr))?;
        eprintln!(
            "serving {what} on http://{} (max_batch {}, max_wait {} ms)",
            listener.local_addr()?,
            o.max_batch,
            o.max_wait_ms
        );
        run(listener, p, o, shutdown_signal()).await?;
        eprintln!("stopped");
        anyhow::Ok(())
    })
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("shutting down: finishing in-flight requests");
}
