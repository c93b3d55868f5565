//! The model's inputs as named arrays, exactly as a forward pass gets them: what Python's
//! `dfm.features` and the server's `/v1/features` return (so that another runtime can be fed
//! what dfm's own feature code computes; there is no second implementation of it).

use crate::batch::Batch;
use crate::features::Features;
use burn::prelude::*;
use serde::Serialize;

/// One input of the model: its name (a field of [`Batch`]), shape (batch first) and values
/// (row-major).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputArray {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn array<const D: usize>(name: &'static str, t: &Tensor<D>) -> InputArray {
    InputArray {
        name,
        shape: t.dims().to_vec(),
        data: super::values(t.clone()),
    }
}

/// Every input tensor of `b`, in a fixed order; `video` and `future_w` only where the batch
/// has them.
pub fn input_arrays(b: &Batch) -> Vec<InputArray> {
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
pub fn model_inputs(features: Vec<Features>, device: &Device) -> Vec<InputArray> {
    if features.is_empty() {
        return Vec::new();
    }
    input_arrays(&super::model_batch(features, device, false).0)
}
