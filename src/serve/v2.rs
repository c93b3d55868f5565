//! The Open Inference Protocol (KServe v2: what Triton, KServe, Seldon and OpenVINO speak), over
//! the same queue, model threads, limits, auth and metrics as `/v1/predict`:
//! - `GET /v2` (server metadata), `/v2/health/live`, `/v2/health/ready` (no token, as probes);
//! - `GET /v2/models/{name}` (inputs, outputs, shapes, datatypes), `/v2/models/{name}/ready`;
//! - `POST /v2/models/{name}/infer`: the input `samples`, `BYTES` of shape `[N]`, each element
//!   one sample's JSON (what `/v1/predict` takes), as JSON data or in Triton's binary tensor
//!   extension (`Inference-Header-Content-Length`). The outputs are named tensors ([`OUTPUTS`]):
//!   `prediction` holds each sample's whole `/v1` answer as JSON; the others hold its numbers.
//!
//! The model has one version, `1`; `/v2/models/{name}/versions/1/...` is the same model.

// Errors are the HTTP answers themselves (axum's `Response`), as the handlers return them.
#![allow(clippy::result_large_err)]

use super::handlers::{
    AppState, Arriving, body_bytes, error, json_bytes, parse_body, ready, run_samples,
};
pub use super::v2_outputs::{OUTPUTS, VERSION};
use crate::data::sample::Sample;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The input every request sends.
pub const INPUT: &str = "samples";
/// The header of Triton's binary tensor extension: the length of the JSON before the tensors.
const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<serde_json::Map<String, Value>>,
}

fn bad(msg: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, None, msg)
}

/// The 404 of a model or version this server does not serve; None when it serves it.
fn unknown(st: &AppState, name: &str, version: Option<&str>) -> Option<Response> {
    if name != &*st.model_name {
        return Some(error(
            StatusCode::NOT_FOUND,
            None,
            format!(
                "no model named {name:?}: this server serves {:?}",
                st.model_name
            ),
        ));
    }
    match version {
        Some(v) if v != VERSION => Some(error(
            StatusCode::NOT_FOUND,
            None,
            format!("model {name:?} has no version {v:?}: it has version {VERSION} only"),
        )),
        _ => None,
    }
}

pub async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "dfm",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
    .into_response()
}

pub async fn live(State(st): State<AppState>) -> Response {
    super::handlers::healthz(State(st)).await
}

pub async fn server_ready(State(st): State<AppState>) -> Response {
    match ready(&st) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(why) => super::handlers::busy(why),
    }
}

/// A model route's path: `name`, and `v` on the versioned routes.
type ModelPath = Path<HashMap<String, String>>;

/// The 404 of a path's model or version when this server does not serve it.
fn unknown_path(st: &AppState, p: &HashMap<String, String>) -> Option<Response> {
    let name = p.get("name").map_or("", String::as_str);
    unknown(st, name, p.get("v").map(String::as_str))
}

pub async fn model_ready(State(st): State<AppState>, Path(p): ModelPath) -> Response {
    match unknown_path(&st, &p) {
        Some(r) => r,
        None => server_ready(State(st)).await,
    }
}

/// What `GET /v2/models/{name}` answers for a model of `modes` modes (`-1`: any length).
pub fn model_metadata_json(name: &str, modes: usize) -> Value {
    let shape = |s: &str| -> Vec<i64> {
        let dims = s.trim_matches(['[', ']']).split(", ");
        let dim = |d: &str| match d {
            "K" => modes as i64,
            _ => d.parse().unwrap_or(-1),
        };
        dims.map(dim).collect()
    };
    let outputs: Vec<Value> = OUTPUTS
        .iter()
        .map(|(n, t, s)| json!({"name": n, "datatype": t, "shape": shape(s)}))
        .collect();
    json!({
        "name": name,
        "versions": [VERSION],
        "platform": "dfm",
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": outputs,
    })
}

pub async fn model_metadata(State(st): State<AppState>, Path(p): ModelPath) -> Response {
    unknown_path(&st, &p).unwrap_or_else(|| {
        axum::Json(model_metadata_json(&st.model_name, st.codec.modes())).into_response()
    })
}

pub async fn infer(
    State(st): State<AppState>,
    Path(p): ModelPath,
    arriving: Option<axum::Extension<Arriving>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Some(r) = unknown_path(&st, &p) {
        return r;
    }
    infer_model(st, arriving, headers, body).await
}

async fn infer_model(
    st: AppState,
    arriving: Option<axum::Extension<Arriving>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body_bytes(&st, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (req, samples) = match read_infer(&st, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let wanted = match wanted_outputs(&req) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let preds = match run_samples(&st, samples, arriving).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let explicit = req.outputs.is_some();
    match super::v2_outputs::response(&st.model_name, req.id, &wanted, explicit, &preds) {
        Ok(v) => json_bytes(v),
        Err(r) => r,
    }
}

/// The names of the outputs the request asks for (all of them when it names none).
fn wanted_outputs(req: &InferRequest) -> Result<Vec<&'static str>, Response> {
    let Some(asked) = &req.outputs else {
        return Ok(OUTPUTS.iter().map(|o| o.0).collect());
    };
    asked
        .iter()
        .map(|o| {
            OUTPUTS
                .iter()
                .find(|(n, _, _)| *n == o.name)
                .map(|(n, _, _)| *n)
                .ok_or_else(|| {
                    let names: Vec<&str> = OUTPUTS.iter().map(|o| o.0).collect();
                    bad(format!(
                        "outputs: no output named {:?} (the outputs are {})",
                        o.name,
                        names.join(", ")
                    ))
                })
        })
        .collect()
}

/// The request and its validated samples, from JSON or the binary tensor extension.
fn read_infer(
    st: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(InferRequest, Vec<Sample>), Response> {
    let (json_part, binary) = split_binary(headers, body)?;
    let req: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| bad(format!("not an inference request: {e}")))?;
    if let Some(p) = &req.parameters
        && let Some(k) = p.keys().find(|k| !k.starts_with("binary_data"))
    {
        return Err(bad(format!(
            "parameters: {k:?} is not a parameter dfm knows"
        )));
    }
    let [input] = req.inputs.as_slice() else {
        return Err(bad(format!(
            "inputs: one input, {INPUT:?}, was expected; the request has {}",
            req.inputs.len()
        )));
    };
    let elements = input_elements(input, binary, st.max_samples)?;
    let mut samples = Vec::with_capacity(elements.len());
    for (i, e) in elements.iter().enumerate() {
        samples.push(one_sample(st, e, i)?);
    }
    Ok((req, samples))
}

/// The request's JSON and, with the binary tensor extension, the bytes after it.
fn split_binary<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), Response> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let n: usize = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| bad(format!("{HEADER_LENGTH}: not a length")))?;
    if n > body.len() {
        return Err(bad(format!(
            "{HEADER_LENGTH}: {n} is longer than the body ({} bytes)",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

/// The input's elements (each one sample's JSON), checked against its name, datatype and shape.
fn input_elements(
    input: &RequestInput,
    binary: &[u8],
    max_samples: usize,
) -> Result<Vec<Vec<u8>>, Response> {
    if input.name != INPUT || input.datatype != "BYTES" {
        return Err(bad(format!(
            "inputs[0]: the input is {INPUT:?} of datatype BYTES, not {:?} of {}",
            input.name, input.datatype
        )));
    }
    let n = match input.shape.as_slice() {
        [n] | [n, 1] if *n >= 1 => *n as usize,
        _ => {
            return Err(bad(format!(
                "inputs[0].shape: {:?} is not [N] with N >= 1 (one element per sample)",
                input.shape
            )));
        }
    };
    if n > max_samples {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!("{n} samples: at most {max_samples} per request (split the tensor)"),
        ));
    }
    let binary_size = input
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
        .and_then(Value::as_u64);
    let elements = match (&input.data, binary_size) {
        (Some(data), None) => json_elements(data, n)?,
        (None, Some(size)) => binary_elements(binary, size, n)?,
        _ => {
            return Err(bad(
                "inputs[0]: give the elements either as `data` or as binary data (parameters.binary_data_size), one of the two",
            ));
        }
    };
    if elements.len() != n {
        return Err(bad(format!(
            "inputs[0]: the shape says {n} elements, the data holds {}",
            elements.len()
        )));
    }
    Ok(elements)
}

/// The error of data holding more elements than its shape says.
fn too_many(n: usize) -> Response {
    bad(format!(
        "inputs[0]: the shape says {n} elements, the data holds more"
    ))
}

/// Elements given as JSON: strings, in a flat or nested list (no more than `n` are kept).
fn json_elements(data: &Value, n: usize) -> Result<Vec<Vec<u8>>, Response> {
    let mut out = Vec::new();
    let mut stack = vec![data];
    while let Some(v) = stack.pop() {
        if out.len() > n {
            return Err(too_many(n));
        }
        match v {
            Value::String(s) => out.push(s.as_bytes().to_vec()),
            Value::Array(items) => stack.extend(items.iter().rev()),
            _ => {
                return Err(bad(
                    "inputs[0].data: each element is a string holding one sample's JSON",
                ));
            }
        }
    }
    Ok(out)
}

/// Elements in the binary tensor extension: each a little-endian u32 length, then its bytes (no
/// more than `n` are kept).
fn binary_elements(binary: &[u8], size: u64, n: usize) -> Result<Vec<Vec<u8>>, Response> {
    if size != binary.len() as u64 {
        return Err(bad(format!(
            "inputs[0].parameters.binary_data_size: {size}, but {} bytes follow the JSON",
            binary.len()
        )));
    }
    let mut out = Vec::new();
    let mut rest = binary;
    while !rest.is_empty() {
        if out.len() == n {
            return Err(too_many(n));
        }
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("inputs[0]: binary data cut inside an element's length"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(bad(format!(
                "inputs[0]: element {} claims {len} bytes, {} are left",
                out.len(),
                tail.len()
            )));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(out)
}

/// One element's sample, validated as `/v1/predict` validates it; errors name the element.
fn one_sample(st: &AppState, element: &[u8], i: usize) -> Result<Sample, Response> {
    let at = |field: &str| {
        if field.is_empty() {
            format!("samples[{i}]")
        } else {
            format!("samples[{i}].{field}")
        }
    };
    match parse_body(element, 1, &st.limits) {
        Ok((mut s, false)) => Ok(s.remove(0)),
        Ok((_, true)) => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(&at("")),
            "each element is one sample (a JSON object), not a list",
        )),
        Err((status, e)) => Err(error(status, Some(&at(&e.field)), e.error)),
    }
}
