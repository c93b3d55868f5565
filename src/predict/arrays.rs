//! The model's inputs and outputs as named arrays. The inputs exactly as a forward pass gets
//! them: what Python's `dfm.features` and the server's `/v1/features` return (so that another
//! runtime can be fed what dfm's own feature code computes; there is no second implementation
//! of it). The outputs as the forward pass gives them, before they are decoded into
//! predictions: what Python's `Predictor.outputs` returns.

use super::RawOutput;
use crate::batch::Batch;
use crate::features::Features;
use burn::prelude::*;
use serde::Serialize;

/// One input or output of the model: its name (an input: a field of [`Batch`]), shape (batch
/// first) and values (row-major).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedArray {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn array<const D: usize>(name: &'static str, t: &Tensor<D>) -> NamedArray {
    NamedArray {
        name,
        shape: t.dims().to_vec(),
        data: super::values(t.clone()),
    }
}

/// Every input tensor of `b`, in a fixed order; `video` and `future_w` only where the batch
/// has them.
pub fn input_arrays(b: &Batch) -> Vec<NamedArray> {
    let mut out = vec![
        array("hist", &b.hist),
        array("hist_mask", &b.hist_mask),
        array("imu", &b.imu),
        array("imu_mask", &b.imu_mask),
        array("image", &b.image),
        array("image_mask", &b.image_mask),
    ];
    if let Some(v) = &b.video {
        out.push(array("video", v));
    }
    out.extend([
        array("video_mask", &b.video_mask),
        array("stops", &b.stops),
        array("stops_mask", &b.stops_mask),
        array("ctx", &b.ctx),
        array("prior", &b.prior),
    ]);
    if let Some(w) = &b.future_w {
        out.push(array("future_w", w));
    }
    out
}

/// The model's inputs for prepared samples on `device`, as a forward pass there gets them
/// (without a GPU's padding of the batch). Empty for no samples.
pub fn model_inputs(features: Vec<Features>, device: &Device) -> Vec<NamedArray> {
    if features.is_empty() {
        return Vec::new();
    }
    input_arrays(&super::model_batch(features, device, false).0)
}

/// The outputs of one forward pass stacked over its samples: `traj` [B, K, F, 2] and `point`
/// [B, F, 2] (normalized offsets in each sample's frame at its horizons), `mode_probability`
/// [B, K], `eta` [B, N, 3] (the model's ETA units), `on_time_probability` and
/// `next_probability` [B, N], `delivered_probability` [B].
pub fn output_arrays(raw: &[RawOutput]) -> Vec<NamedArray> {
    let b = raw.len();
    let (f, k, n) = raw
        .first()
        .map_or((0, 0, 0), |r| (r.points, r.probs.len(), r.on_time.len()));
    let cat = |name, shape, part: fn(&RawOutput) -> &[f32]| NamedArray {
        name,
        shape,
        data: raw.iter().flat_map(|r| part(r).iter().copied()).collect(),
    };
    vec![
        cat("traj", vec![b, k, f, 2], |r| &r.traj),
        cat("point", vec![b, f, 2], |r| &r.point),
        cat("mode_probability", vec![b, k], |r| &r.probs),
        cat("eta", vec![b, n, 3], |r| &r.eta),
        cat("on_time_probability", vec![b, n], |r| &r.on_time),
        cat("next_probability", vec![b, n], |r| &r.next),
        cat("delivered_probability", vec![b], |r| {
            std::slice::from_ref(&r.delivered)
        }),
    ]
}
