//! `dfm serve`: the model over HTTP (tokio + axum).
//!
//! - `POST /v1/predict`: one sample or a list, in the JSON of a stored sample (images inline as
//!   `png_base64`, IMU rows inline as `data`; targets, if present, are ignored). Answers one
//!   prediction or a list, in the same order.
//! - `GET /healthz`, `GET /metrics` (Prometheus text), `GET /v1/model` (bundle metadata).
//!
//! Concurrent requests are batched: a model thread takes the first waiting request, gathers
//! more until `max_batch` samples or `max_wait_ms`, and runs one forward pass for all of them.
//! Bad requests get a 4xx with `{"error": ..., "field": ...}`; the server keeps serving.
//! Optional bearer-token auth; loopback by default; SIGTERM or Ctrl-C stops accepting and lets
//! in-flight requests finish.

pub mod metrics;

use crate::data::sample::Sample;
use crate::predict::{InputError, Prediction, Predictor, sample_from_request};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use metrics::Metrics;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Most samples per forward pass.
    pub max_batch: usize,
    /// Longest a request waits for others to share its forward pass.
    pub max_wait_ms: u64,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Bearer token required on /v1/* and /metrics (None: no auth).
    pub token: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: "127.0.0.1:8080".parse().unwrap(),
            max_batch: 32,
            max_wait_ms: 0,
            max_body_bytes: 8 << 20,
            token: None,
        }
    }
}

struct Job {
    samples: Vec<Sample>,
    reply: oneshot::Sender<Result<Vec<Prediction>, String>>,
}

#[derive(Clone)]
struct AppState {
    jobs: Sender<Job>,
    metrics: Arc<Metrics>,
    token: Option<Arc<String>>,
    info: Arc<Value>,
    max_body: usize,
}

/// The model thread: gathers requests into batches and runs them.
fn batch_loop(
    predictor: Predictor,
    rx: Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
    metrics: Arc<Metrics>,
) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + max_wait;
        let mut count = first.samples.len();
        let mut jobs = vec![first];
        while count < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(j) => {
                    count += j.samples.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let all: Vec<Sample> = jobs
            .iter()
            .flat_map(|j| j.samples.iter().cloned())
            .collect();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = Vec::with_capacity(all.len());
            for chunk in all.chunks(max_batch.max(1)) {
                metrics.batch(chunk.len());
                out.extend(predictor.predict(chunk));
            }
            out
        }));
        match run {
            Ok(mut preds) => {
                for j in jobs {
                    let rest = preds.split_off(j.samples.len());
                    let _ = j.reply.send(Ok(std::mem::replace(&mut preds, rest)));
                }
            }
            Err(_) => {
                for j in jobs {
                    let _ = j.reply.send(Err("the model failed on this batch".into()));
                }
            }
        }
    }
}

fn error(status: StatusCode, field: Option<&str>, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": msg.into(), "field": field})),
    )
        .into_response()
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match got {
        // Compare all bytes whatever the first difference (no early exit on the secret).
        Some(g) if g.len() == token.len() => {
            g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        }
        _ => false,
    }
}

/// Parses a body holding one sample or a list. Syntax errors are 400, schema errors 422; the
/// field is named either way (`[2].history[0].lat` in a list).
fn parse_body(body: &[u8]) -> Result<(Vec<Sample>, bool), (StatusCode, InputError)> {
    let list = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let classify = |e: serde_path_to_error::Error<serde_json::Error>| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let status = match inner.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut msg = inner.to_string();
        if msg.starts_with("expected value") {
            msg.push_str(" (not a JSON value: NaN and Infinity are not numbers in JSON)");
        }
        (
            status,
            InputError {
                field: if field == "." { String::new() } else { field },
                error: msg,
            },
        )
    };
    let raw: Vec<Sample> = if list {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .map_err(classify)?
    } else {
        vec![
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
                .map_err(classify)?,
        ]
    };
    if raw.is_empty() {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            InputError {
                field: String::new(),
                error: "an empty list of samples".into(),
            },
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        out.push(sample_from_request(s).map_err(|e| {
            let field = if list {
                format!("[{i}].{}", e.field)
            } else {
                e.field
            };
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                InputError {
                    field,
                    error: e.error,
                },
            )
        })?);
    }
    Ok((out, list))
}

async fn predict(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let t = Instant::now();
    let resp = predict_inner(&st, &headers, body).await;
    st.metrics
        .request(resp.status().as_u16(), t.elapsed().as_secs_f64());
    resp
}

async fn predict_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if !authorized(st, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                format!("body larger than {} bytes", st.max_body),
            );
        }
        Err(e) => return error(e.status(), None, e.body_text()),
    };
    let (samples, list) = match parse_body(&body) {
        Ok(x) => x,
        Err((status, e)) => {
            return error(
                status,
                (!e.field.is_empty()).then_some(e.field.as_str()),
                e.error,
            );
        }
    };
    let (tx, rx) = oneshot::channel();
    match st.jobs.try_send(Job { samples, reply: tx }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "overloaded: too many requests waiting",
            );
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "the model is not running",
            );
        }
    }
    match rx.await {
        Ok(Ok(preds)) => {
            let body = if list {
                serde_json::to_value(&preds)
            } else {
                serde_json::to_value(&preds[0])
            };
            match body {
                Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
            }
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, None, "the model stopped"),
    }
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn metrics_text(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Body::from(st.metrics.render()),
    )
        .into_response()
}

async fn model_info(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        );
    }
    axum::Json((*st.info).clone()).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        None,
        "no such endpoint (POST /v1/predict, GET /v1/model, /healthz, /metrics)",
    )
}

/// What `GET /v1/model` answers.
pub fn model_info_json(p: &Predictor) -> Value {
    let l = &p.loaded;
    json!({
        "source": l.description,
        "step": l.step,
        "schema_version": l.normalization.schema_version,
        "training_data_manifest_sha256": l.normalization.manifest_sha256,
        "spec": l.normalization.spec,
        "model": l.cfg.model,
        "image_size": l.cfg.data.image_size,
        "dfm_version": env!("CARGO_PKG_VERSION"),
    })
}

/// Serves until `shutdown` resolves, then finishes in-flight requests and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    predictor: Predictor,
    o: &ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Arc<Metrics>> {
    let metrics = Arc::new(Metrics::default());
    let info = Arc::new(model_info_json(&predictor));
    let (tx, rx) = bounded::<Job>(1024);
    let m2 = metrics.clone();
    let (max_batch, max_wait) = (o.max_batch.max(1), Duration::from_millis(o.max_wait_ms));
    let worker = std::thread::Builder::new()
        .name("dfm-model".into())
        .spawn(move || batch_loop(predictor, rx, max_batch, max_wait, m2))?;
    let state = AppState {
        jobs: tx,
        metrics: metrics.clone(),
        token: o.token.clone().map(Arc::new),
        info,
        max_body: o.max_body_bytes,
    };
    let app = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/model", get(model_info))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(o.max_body_bytes))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    // The router (and its job sender) is gone: the model thread drains and stops.
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    Ok(metrics)
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
