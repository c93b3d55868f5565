//! The HTTP endpoints. The bearer token is checked from the headers, before any body is read;
//! the comparison takes the same time whatever the token (SHA-256 of both, compared in constant
//! time). Work is bounded per request (`max_samples`) and in the queue (`max_queue_samples`):
//! over it, 413 or 503 with `Retry-After`.

use super::metrics::Metrics;
use super::model_thread::{Job, Shared};
use crate::data::sample::Sample;
use crate::predict::{
    Codec, InputError, Prediction, RawOutput, RequestLimits, sample_from_request,
};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crossbeam_channel::{Sender, TrySendError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

#[derive(Clone)]
pub struct AppState {
    pub jobs: Sender<Job>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of the bearer token, when one is required.
    pub token_sha: Option<Arc<[u8; 32]>>,
    pub info: Arc<Value>,
    pub max_body: usize,
    pub max_samples: usize,
    pub max_queue_samples: usize,
    pub limits: RequestLimits,
    pub shared: Arc<Shared>,
    /// Features in, predictions out, on the request threads (the model thread only runs the
    /// model).
    pub codec: Codec,
    /// The model's name in the Open Inference Protocol.
    pub model_name: Arc<str>,
}

/// A `/v1/predict` request counted in [`Shared::arriving`] from its headers until it is queued
/// for the model (or answered without it): the last clone to go takes it off.
#[derive(Clone)]
pub struct Arriving {
    _count: Arc<ArrivingCount>,
}

pub struct ArrivingCount(Arc<Shared>);

impl Arriving {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.arriving.fetch_add(1, Ordering::SeqCst);
        Arriving {
            _count: Arc::new(ArrivingCount(shared.clone())),
        }
    }
}

impl Drop for ArrivingCount {
    fn drop(&mut self) {
        self.0.arriving.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn error(status: StatusCode, field: Option<&str>, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": msg.into(), "field": field})),
    )
        .into_response()
}

/// A 503 that tells the client when to try again.
pub(super) fn busy(msg: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, None, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn token_sha(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn authorized(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(want) = &st.token_sha else {
        return true;
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    token_sha(got).ct_eq(&want[..]).into()
}

/// Middleware on the protected routes: 401 before the body is read.
pub async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !authorized(&st, req.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        );
    }
    next.run(req).await
}

fn unprocessable(field: String, error: String) -> (StatusCode, InputError) {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        InputError { field, error },
    )
}

/// Parses a body holding one sample or a list. Syntax errors are 400, schema errors 422; the
/// field is named either way (`[2].history[0].lat` in a list). More than `max_samples` is 413.
pub fn parse_body(
    body: &[u8],
    max_samples: usize,
    limits: &RequestLimits,
) -> Result<(Vec<Sample>, bool), (StatusCode, InputError)> {
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
        let field = if field == "." { String::new() } else { field };
        (status, InputError { field, error: msg })
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    let raw: Vec<Sample> = if list {
        serde_path_to_error::deserialize(de).map_err(classify)?
    } else {
        vec![serde_path_to_error::deserialize(de).map_err(classify)?]
    };
    if raw.is_empty() {
        return Err(unprocessable(
            String::new(),
            "an empty list of samples".into(),
        ));
    }
    if raw.len() > max_samples {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            InputError {
                field: String::new(),
                error: format!(
                    "{} samples: at most {max_samples} per request (split the list)",
                    raw.len()
                ),
            },
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        out.push(sample_from_request(s, limits).map_err(|e| {
            let field = if list {
                format!("[{i}].{}", e.field)
            } else {
                e.field
            };
            unprocessable(field, e.error)
        })?);
    }
    Ok((out, list))
}

/// The endpoints that run the model: `/v1/predict`, the Open Inference Protocol's `infer` and
/// SageMaker's `/invocations`.
fn is_predict(path: &str) -> bool {
    path == "/v1/predict"
        || path == "/invocations"
        || (path.starts_with("/v2/models/") && path.ends_with("/infer"))
}

/// Middleware around everything: counts the predict endpoints' answers ([`is_predict`]) by status (401, 408 and 503
/// included) with their latency.
pub async fn count_predictions(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let counted = is_predict(req.uri().path());
    if counted {
        req.extensions_mut().insert(Arriving::new(&st.shared));
    }
    let t = Instant::now();
    let resp = next.run(req).await;
    if counted {
        st.metrics
            .request(resp.status().as_u16(), t.elapsed().as_secs_f64());
    }
    resp
}

/// Takes `n` samples' room in the queue, or None when it is full.
fn reserve(st: &AppState, n: usize) -> Option<()> {
    let before = st.shared.queued_samples.fetch_add(n, Ordering::SeqCst);
    if before + n > st.max_queue_samples && before > 0 {
        st.shared.queued_samples.fetch_sub(n, Ordering::SeqCst);
        return None;
    }
    Some(())
}

/// Room taken in the queue ([`Shared::queued_samples`]), given back when dropped unless handed
/// over to the model thread with its job.
struct Reservation<'a> {
    shared: &'a Shared,
    n: usize,
}

impl<'a> Reservation<'a> {
    fn take(st: &'a AppState, n: usize) -> Option<Self> {
        reserve(st, n)?;
        Some(Reservation {
            shared: &st.shared,
            n,
        })
    }

    /// The room of `n` samples instead (what the job holds once prepared).
    fn resize(&mut self, n: usize) {
        self.shared.queued_samples.fetch_add(n, Ordering::SeqCst);
        self.shared
            .queued_samples
            .fetch_sub(self.n, Ordering::SeqCst);
        self.n = n;
    }

    fn hand_over(mut self) {
        self.n = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shared
            .queued_samples
            .fetch_sub(self.n, Ordering::SeqCst);
    }
}

/// Every sample's model inputs, in order, and what its prediction needs.
fn prepare_all(
    codec: &Codec,
    samples: Vec<Sample>,
) -> (
    Vec<crate::features::Features>,
    Vec<crate::predict::codec::RequestMeta>,
) {
    let mut inputs = Vec::new();
    let mut metas = Vec::with_capacity(samples.len());
    for s in samples {
        let (f, m) = codec.prepare_request(s);
        inputs.extend(f);
        metas.push(m);
    }
    (inputs, metas)
}

pub async fn predict(
    State(st): State<AppState>,
    arriving: Option<axum::Extension<Arriving>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (samples, list) = match read_request(&st, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match run_samples(&st, samples, arriving).await {
        Ok(preds) => answer(preds, list),
        Err(r) => r,
    }
}

/// `POST /v1/features`: the model's input arrays (`[{name, shape, data}]`, batch first) for the
/// samples of a `/v1/predict` body, computed as on the CPU by dfm's feature code (what Python's
/// `dfm.features` returns): for feeding another runtime, or checking one.
pub async fn features(
    State(st): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (samples, _) = match read_request(&st, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let codec = st.codec.clone();
    let work = move || {
        let feats = samples.into_iter().map(|s| codec.prepare(s).0).collect();
        crate::predict::model_inputs(feats, &burn::prelude::Device::flex())
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(arrays) => json_bytes(
            serde_json::to_vec(&serde_json::json!({ "inputs": arrays })).unwrap_or_default(),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "computing the features failed",
        ),
    }
}

/// The predictions of validated samples, in order, through the queue and the model threads
/// (what every protocol's predict endpoint runs); an error response when the work does not fit
/// or the model fails.
pub(super) async fn run_samples(
    st: &AppState,
    samples: Vec<Sample>,
    arriving: Option<axum::Extension<Arriving>>,
) -> Result<Vec<Prediction>, Response> {
    // A route plan adds its decisions to the request's work: more than the queue holds is
    // refused before anything is prepared.
    let need: usize = samples.iter().map(crate::predict::route::inputs_of).sum();
    if need > st.max_queue_samples {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!(
                "the request needs {need} model inputs (a route plan takes 2 per stop), more than the queue holds ({}): split it",
                st.max_queue_samples
            ),
        ));
    }
    // Room is taken before the inputs are prepared (a full queue costs no memory) and given
    // back however the request ends before its job is queued.
    let Some(mut room) = Reservation::take(st, need) else {
        return Err(busy("overloaded: the queue is full; retry after a moment"));
    };
    let (inputs, metas) = prepare(st, samples, need).await?;
    room.resize(inputs.len());
    let (tx, rx) = oneshot::channel();
    let sent = st.jobs.try_send(Job { inputs, reply: tx });
    drop(arriving);
    match sent {
        // The model thread gives the room back once it has run (or dropped) the job.
        Ok(()) => room.hand_over(),
        Err(TrySendError::Full(_)) => return Err(busy("overloaded: too many requests waiting")),
        Err(TrySendError::Disconnected(_)) => return Err(busy("the model is not running")),
    }
    match rx.await {
        Ok(Ok(raw)) => Ok(finish(st, metas, raw)),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, None, e)),
        Err(_) => Err(busy("the model stopped")),
    }
}

/// The request's body, or the error response for one too large or unreadable.
#[allow(clippy::result_large_err)]
pub(super) fn body_bytes(
    st: &AppState,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, Response> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!("body larger than {} bytes", st.max_body),
        ),
        status => error(status, None, e.body_text()),
    })
}

/// The request's samples and whether it sent a list; an error response for a body too large or
/// not a valid request. (The error is axum's `Response`, as handlers return it.)
#[allow(clippy::result_large_err)]
fn read_request(
    st: &AppState,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(Vec<Sample>, bool), Response> {
    let body = body_bytes(st, body)?;
    parse_body(&body, st.max_samples, &st.limits).map_err(|(status, e)| {
        error(
            status,
            (!e.field.is_empty()).then_some(e.field.as_str()),
            e.error,
        )
    })
}

/// The samples' model inputs. A route plan's preparation is CPU work (the plan, two walks of
/// features): it runs off the async threads, which keep answering other clients and the probes
/// meanwhile.
async fn prepare(
    st: &AppState,
    samples: Vec<Sample>,
    need: usize,
) -> Result<
    (
        Vec<crate::features::Features>,
        Vec<crate::predict::codec::RequestMeta>,
    ),
    Response,
> {
    if need <= samples.len() {
        return Ok(prepare_all(&st.codec, samples));
    }
    let codec = st.codec.clone();
    tokio::task::spawn_blocking(move || prepare_all(&codec, samples))
        .await
        .map_err(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "preparing the request failed",
            )
        })
}

/// The predictions of the request's samples from the model's raw outputs (in order).
fn finish(
    st: &AppState,
    metas: Vec<crate::predict::codec::RequestMeta>,
    raw: Vec<RawOutput>,
) -> Vec<Prediction> {
    let mut raw = raw.into_iter();
    metas
        .into_iter()
        .map(|m| {
            let mine = raw.by_ref().take(m.inputs()).collect();
            st.codec.finish_request(m, mine)
        })
        .collect()
}

/// The predictions as JSON: a list when the request sent one.
fn answer(preds: Vec<Prediction>, list: bool) -> Response {
    // Serialized once, straight to bytes (not through a `Value`).
    let body = if list {
        serde_json::to_vec(&preds)
    } else {
        serde_json::to_vec(&preds[0])
    };
    match body {
        Ok(v) => json_bytes(v),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
    }
}

/// A 200 with a JSON body already serialized.
pub(super) fn json_bytes(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Liveness: the process serves and its model thread runs (a server whose model thread has
/// gone cannot recover: restart it).
pub async fn healthz(State(st): State<AppState>) -> Response {
    if st.shared.alive.load(Ordering::SeqCst) {
        axum::Json(json!({"status": "ok"})).into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "the model thread has stopped",
        )
    }
}

/// Readiness: alive, and room in the queue for more work.
pub async fn readyz(State(st): State<AppState>) -> Response {
    match ready(&st) {
        Ok(queued) => {
            axum::Json(json!({"status": "ready", "queued_samples": queued})).into_response()
        }
        Err(why) => busy(why),
    }
}

/// The samples queued when the server is ready for more work, else why it is not.
pub(super) fn ready(st: &AppState) -> Result<usize, &'static str> {
    let queued = st.shared.queued_samples.load(Ordering::SeqCst);
    if !st.shared.alive.load(Ordering::SeqCst) {
        Err("the model thread has stopped")
    } else if queued >= st.max_queue_samples {
        Err("the queue is full")
    } else {
        Ok(queued)
    }
}

pub async fn metrics_text(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        axum::body::Body::from(st.metrics.render()),
    )
        .into_response()
}

pub async fn model_info(State(st): State<AppState>) -> Response {
    axum::Json((*st.info).clone()).into_response()
}

pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        None,
        "no such endpoint (POST /v1/predict, GET /v1/model, /healthz, /readyz, /metrics; the Open Inference Protocol under /v2)",
    )
}
