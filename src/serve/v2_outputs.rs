//! The Open Inference Protocol's answer: the predictions as named output tensors
//! ([`OUTPUTS`]), each flattened in row-major order as the protocol's JSON carries
//! them.

// Errors are the HTTP answers themselves (axum's `Response`), as the handlers return them.
#![allow(clippy::result_large_err)]

use super::handlers::error;
use crate::predict::Prediction;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

/// The only version of the served model.
pub const VERSION: &str = "1";
/// The outputs: name, datatype, shape (`-1`: any length; `K` the model's modes, `H` the
/// request's horizons). `most_likely_lat_lon` and `modes_lat_lon` need every sample of a
/// request to ask for the same number of horizons.
pub const OUTPUTS: [(&str, &str, &str); 6] = [
    ("prediction", "BYTES", "[N]"),
    ("key", "BYTES", "[N]"),
    ("delivered_probability", "FP64", "[N]"),
    ("mode_probability", "FP64", "[N, K]"),
    ("most_likely_lat_lon", "FP64", "[N, H, 2]"),
    ("modes_lat_lon", "FP64", "[N, K, H, 2]"),
];

/// The response body for `preds`, with the outputs `wanted` (in that order). The trajectory
/// outputs need one horizon count for all samples: when the request named them, other counts
/// are a 400; when it named no outputs, they are left out.
pub fn response(
    model: &str,
    id: Option<String>,
    wanted: &[&str],
    explicit: bool,
    preds: &[Prediction],
) -> Result<Vec<u8>, Response> {
    let horizons = one_horizon_count(preds);
    let mut outputs = Vec::with_capacity(wanted.len());
    for &name in wanted {
        let trajectory = name.ends_with("lat_lon");
        match (trajectory, horizons) {
            (true, None) if explicit => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    None,
                    format!(
                        "outputs: {name} needs every sample to ask for the same number of horizons (horizons_s); read the trajectories from `prediction` instead"
                    ),
                ));
            }
            (true, None) => continue,
            _ => outputs.push(output(name, preds, horizons.unwrap_or(0))),
        }
    }
    let mut body = json!({"model_name": model, "model_version": VERSION, "outputs": outputs});
    if let Some(id) = id {
        body["id"] = Value::String(id);
    }
    serde_json::to_vec(&body)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()))
}

/// The number of horizons when every prediction has the same.
fn one_horizon_count(preds: &[Prediction]) -> Option<usize> {
    let h = preds.first()?.horizons_s.len();
    preds.iter().all(|p| p.horizons_s.len() == h).then_some(h)
}

/// One output tensor (`h`: the horizons of every sample, for the trajectory outputs).
fn output(name: &str, preds: &[Prediction], h: usize) -> Value {
    let n = preds.len();
    let k = preds.first().map_or(0, |p| p.modes.len());
    let fp64 = |shape: Vec<usize>, data: Vec<f64>| json!({"name": name, "datatype": "FP64", "shape": shape, "data": data});
    let bytes =
        |data: Vec<String>| json!({"name": name, "datatype": "BYTES", "shape": [n], "data": data});
    let points = |pts: &[[f64; 2]]| pts.iter().flatten().copied().collect::<Vec<f64>>();
    match name {
        "prediction" => bytes(
            preds
                .iter()
                .map(|p| serde_json::to_string(p).unwrap_or_default())
                .collect(),
        ),
        "key" => bytes(preds.iter().map(|p| p.key.clone()).collect()),
        "delivered_probability" => fp64(
            vec![n],
            preds.iter().map(|p| p.delivered_probability).collect(),
        ),
        "mode_probability" => fp64(
            vec![n, k],
            preds
                .iter()
                .flat_map(|p| p.modes.iter().map(|m| m.probability))
                .collect(),
        ),
        "most_likely_lat_lon" => fp64(
            vec![n, h, 2],
            preds
                .iter()
                .flat_map(|p| points(&p.most_likely.lat_lon))
                .collect(),
        ),
        "modes_lat_lon" => fp64(
            vec![n, k, h, 2],
            preds
                .iter()
                .flat_map(|p| p.modes.iter().flat_map(|m| points(&m.lat_lon)))
                .collect(),
        ),
        other => unreachable!("{other} is not one of OUTPUTS"),
    }
}
