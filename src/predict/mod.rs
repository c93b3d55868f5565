//! Inference for downstream systems: samples in (the same JSON as a sample stored in the shards,
//! with images inline as base64 and IMU rows inline), predictions out. The feature code is the
//! one training used. `dfm predict` and `dfm serve` both go through [`Predictor`].
//!
//! [`codec`] turns samples into model inputs and outputs into predictions; [`route`] and
//! [`route_plan`] answer a request's route plan; [`data`] predicts a whole dataset split, written
//! as a Parquet [`table`].

pub mod arrays;
pub mod codec;
pub mod data;
pub mod route;
pub mod route_plan;
pub mod table;

use crate::batch::FeatureBatcher;
use crate::bundle::LoadedModel;
use crate::data::sample::Sample;
use crate::data::shards::{parse_json, png_bytes, resolve};
use crate::features::Features;
use crate::model::{DfmModel, TokenMasks};
use base64::Engine;
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};
use serde::Serialize;

pub use arrays::{NamedArray, input_arrays, model_inputs, output_arrays};
pub use codec::{Codec, Mode, Prediction, PredictionMeta, RawOutput, StopPrediction, Trajectory};

/// A bad input: the field (path such as `history[3].lat`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputError {
    pub field: String,
    pub error: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.error)
    }
}

/// What a model can take in a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestLimits {
    /// See [`max_image_side`].
    pub max_image_side: u32,
    /// The model's trajectory horizon, seconds: `horizons_s` may not reach past it.
    pub max_horizon_s: f64,
    /// The clips the model reads, (frames, side), from its spec; None: it reads no video (a
    /// clip in a request is then checked and ignored).
    pub video: Option<(usize, usize)>,
}

/// Parses and validates one request sample (targets, if present, are ignored).
pub fn parse_sample(json: &[u8], limits: &RequestLimits) -> Result<Sample, InputError> {
    let s = parse_json(json).map_err(|(field, error)| InputError { field, error })?;
    sample_from_request(s, limits)
}

/// Resolves inline images/IMU, validates values, drops targets. Only the image the model reads
/// (the first map or aerial raster, as the feature code picks it) is decoded, at most
/// `max_image_side` pixels a side; other images (photos) are dropped undecoded.
pub fn sample_from_request(mut s: Sample, limits: &RequestLimits) -> Result<Sample, InputError> {
    s.target = None;
    check_plan_request(&s)?;
    check_horizons(&s, limits)?;
    let used = keep_model_image(&mut s);
    check_inline(&s, used)?;
    let s = resolve(s, &|_| None, None, limits.max_image_side).map_err(|(field, mut error)| {
        // Name the image by its place in the request.
        let field = match (field.strip_prefix("images[0]"), used) {
            (Some(rest), Some(u)) => format!("images[{u}]{rest}"),
            _ => field,
        };
        if error.is_empty() {
            error = "invalid".into();
        }
        InputError { field, error }
    })?;
    check_clip_shape(&s, limits)?;
    Ok(s)
}

/// Every horizon a request asks for is within the model's.
fn check_horizons(s: &Sample, limits: &RequestLimits) -> Result<(), InputError> {
    match s
        .horizons_s
        .iter()
        .position(|&h| h > limits.max_horizon_s * (1.0 + 1e-9))
    {
        None => Ok(()),
        Some(i) => Err(InputError {
            field: format!("horizons_s[{i}]"),
            error: format!(
                "{} s is past the model's horizon of {} s",
                s.horizons_s[i], limits.max_horizon_s
            ),
        }),
    }
}

/// Keeps only the image the model reads (the first map or aerial raster) and returns its place
/// in the request.
fn keep_model_image(s: &mut Sample) -> Option<usize> {
    let used = s.images.iter().position(|im| {
        matches!(
            im.kind,
            crate::data::sample::ImageKind::Map | crate::data::sample::ImageKind::Aerial
        )
    });
    let images = std::mem::take(&mut s.images);
    s.images = images
        .into_iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) == used)
        .map(|(_, im)| im)
        .collect();
    used
}

/// A request carries its image, IMU rows and clip inline (it has no tar members).
fn check_inline(s: &Sample, used: Option<usize>) -> Result<(), InputError> {
    for (i, im) in s.images.iter().enumerate() {
        if im.png_base64.is_none() && im.pixels.is_none() {
            return Err(InputError {
                field: format!("images[{}].png_base64", used.unwrap_or(i)),
                error: "required inline (a request has no tar members)".into(),
            });
        }
    }
    if let Some(imu) = &s.imu
        && imu.data.is_empty()
        && imu.npy_base64.is_none()
    {
        return Err(InputError {
            field: "imu.npy_base64".into(),
            error: "required inline when imu is given (or the rows as imu.data)".into(),
        });
    }
    if let Some(v) = &s.video
        && v.npy_base64.is_none()
        && v.frames.is_none()
    {
        return Err(InputError {
            field: "video.npy_base64".into(),
            error: "required inline when video is given (a request has no tar members)".into(),
        });
    }
    Ok(())
}

/// A route plan needs stops to order, and at most `MAX_PLAN_STOPS` of them.
fn check_plan_request(s: &Sample) -> Result<(), InputError> {
    use route_plan::MAX_PLAN_STOPS;
    if !s.plan_route {
        return Ok(());
    }
    let mut ids: Vec<&str> = s.stops.iter().map(|st| st.id.as_str()).collect();
    ids.sort_unstable();
    let twice = ids.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
    let error = if s.stops.is_empty() {
        "a route plan needs stops: the request lists none".to_string()
    } else if s.stops.len() > MAX_PLAN_STOPS {
        format!(
            "{} stops: a route plan orders at most {MAX_PLAN_STOPS}",
            s.stops.len()
        )
    } else if let Some(id) = twice {
        format!("stop id {id:?} is listed twice: a route plan names each stop by its id")
    } else {
        return Ok(());
    };
    Err(InputError {
        field: "plan_route".into(),
        error,
    })
}

/// A clip for a model that reads video has the frame count and size of the model's spec.
fn check_clip_shape(s: &Sample, limits: &RequestLimits) -> Result<(), InputError> {
    let (Some((frames, side)), Some(fr)) = (
        limits.video,
        s.video.as_ref().and_then(|v| v.frames.as_ref()),
    ) else {
        return Ok(());
    };
    if (fr.count, fr.height, fr.width) != (frames, side, side) {
        return Err(InputError {
            field: "video.npy_base64".into(),
            error: format!(
                "{} frames of {}x{}, the model reads {frames} frames of {side}x{side}",
                fr.count, fr.height, fr.width
            ),
        });
    }
    Ok(())
}

/// A sample as a request body: pixels as base64 PNG, the IMU and the clip as base64 `.npy`, no
/// tar references.
pub fn to_request_json(s: &Sample) -> anyhow::Result<serde_json::Value> {
    let mut s = s.clone();
    for im in s.images.iter_mut() {
        if let Some(px) = im.pixels.take() {
            im.png_base64 = Some(base64::engine::general_purpose::STANDARD.encode(png_bytes(&px)?));
        }
        im.file = None;
    }
    if let Some(imu) = s.imu.as_mut() {
        imu.npy_base64 = Some(base64::engine::general_purpose::STANDARD.encode(imu.to_npy()));
        imu.data.clear();
        imu.file = None;
    }
    if let Some(v) = s.video.as_mut() {
        if let Some(fr) = v.frames.take() {
            v.npy_base64 = Some(base64::engine::general_purpose::STANDARD.encode(fr.to_npy()));
        }
        v.file = None;
    }
    Ok(serde_json::to_value(&s)?)
}

/// Inputs per forward pass when route plans add their decisions to a prediction.
pub const PLAN_BATCH: usize = 32;

/// A model ready for inference on one device.
pub struct Predictor {
    pub loaded: LoadedModel,
    model: DfmModel,
    device: Device,
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// Largest image side a request may send, pixels: rasters are resized to the model's
/// `image_size`, so more than 4x that (at least 256) carries nothing the model can use.
pub fn max_image_side(image_size: usize) -> u32 {
    (4 * image_size).max(256) as u32
}

impl Predictor {
    /// See [`max_image_side`].
    pub fn max_image_side(&self) -> u32 {
        max_image_side(self.loaded.cfg.data.image_size)
    }

    /// What this model takes in a request.
    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn limits(&self) -> RequestLimits {
        let spec = &self.loaded.featurizer.spec;
        RequestLimits {
            max_image_side: self.max_image_side(),
            max_horizon_s: self.loaded.featurizer.horizon_s(),
            video: (spec.video_frames > 0).then_some((spec.video_frames, spec.video_size)),
        }
    }

    /// Loads a bundle or a run folder onto a device.
    pub fn load(model: &std::path::Path, device: Device) -> anyhow::Result<Self> {
        Ok(Predictor::new(
            crate::bundle::load_trained(model, &device)?,
            device,
        ))
    }

    pub fn new(loaded: LoadedModel, device: Device) -> Self {
        let model = loaded.model.valid().to_device(&device);
        Predictor {
            loaded,
            model,
            device,
        }
    }

    /// What turns samples into model inputs and model outputs into predictions (cheap to
    /// clone: the server's request threads hold one).
    pub fn codec(&self) -> Codec {
        Codec::new(self.loaded.featurizer.clone(), self.model.modes)
    }

    /// Predictions for validated samples, in order: one forward pass for the samples, then
    /// each route plan asked for on its own, [`PLAN_BATCH`] of its decisions per pass (memory
    /// holds one plan's inputs at a time).
    pub fn predict(&self, samples: &[Sample]) -> Vec<Prediction> {
        let codec = self.codec();
        let (features, metas): (Vec<_>, Vec<_>) =
            samples.iter().map(|s| codec.prepare(s.clone())).unzip();
        let raw = self.forward(features);
        metas
            .into_iter()
            .zip(raw)
            .zip(samples)
            .map(|((m, r), s)| {
                let mut pred = codec.finish(m, r);
                pred.route_plan = codec
                    .prepare_plan(s)
                    .map(|(inputs, plan)| codec.finish_plan(plan, self.forward_many(inputs)));
                pred
            })
            .collect()
    }

    /// The model's outputs for many prepared inputs (a plan's decisions), in order: forward
    /// passes of [`PLAN_BATCH`], inputs of similar stop counts together (on the CPU a pass reads
    /// only the stop slots its inputs list).
    fn forward_many(&self, inputs: Vec<Features>) -> std::vec::IntoIter<RawOutput> {
        let n = inputs.len();
        let listed = |f: &Features| f.stops_mask.iter().filter(|&&m| m > 0.0).count();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(listed(&inputs[i])));
        let mut slots: Vec<Option<Features>> = inputs.into_iter().map(Some).collect();
        let mut out: Vec<Option<RawOutput>> = (0..n).map(|_| None).collect();
        for chunk in order.chunks(PLAN_BATCH) {
            let batch = chunk
                .iter()
                .map(|&i| slots[i].take().expect("once"))
                .collect();
            for (&i, r) in chunk.iter().zip(self.forward(batch)) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.expect("every input once"))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The model's inputs for prepared samples, as [`Predictor::forward`] gives them to the
    /// model (no padding).
    pub fn inputs(&self, features: Vec<Features>) -> Vec<NamedArray> {
        arrays::model_inputs(features, &self.device)
    }

    /// The model's outputs for prepared samples (one forward pass): the only part of a
    /// prediction that needs the model, so that a server runs the rest on its request threads.
    pub fn forward(&self, features: Vec<Features>) -> Vec<RawOutput> {
        let n = features.len();
        if n == 0 {
            return Vec::new();
        }
        let (b, ns) = model_batch(features, &self.device, true);
        let masks = TokenMasks::keep(crate::eval::keep_mask(&[], b.len(), &self.device));
        let out = self.model.forward(&b, &masks);
        let k = self.model.modes;
        let fb = out.point.dims()[1];
        let traj = values(out.traj);
        let point = values(out.point);
        let probs = values(softmax(out.mode_logits, 1));
        let eta = values(out.eta);
        let on_time = values(sigmoid(out.on_time_logits));
        let next = values(softmax(out.next_logits, 1));
        let delivered = values(sigmoid(out.delivered_logits));
        let part = |v: &[f32], i: usize, per: usize| v[i * per..(i + 1) * per].to_vec();
        (0..n)
            .map(|i| RawOutput {
                points: fb,
                traj: part(&traj, i, k * fb * 2),
                point: part(&point, i, fb * 2),
                probs: part(&probs, i, k),
                eta: part(&eta, i, ns * 3),
                on_time: part(&on_time, i, ns),
                next: part(&next, i, ns),
                delivered: delivered[i],
            })
            .collect()
    }
}

/// The batch size a forward pass of `n` samples runs at: `n` on the CPU, else the next power of
/// two.
pub fn batch_bucket(n: usize, cpu: bool) -> usize {
    if cpu { n } else { n.next_power_of_two() }
}

/// The batch of a forward pass on `device` and its stop slots. On a GPU every new batch shape
/// compiles (and autotunes) new kernels: seconds each. With `pad` a batch is padded to the next
/// power of two there (repeating its last sample), so a server meets at most log2(max batch) + 1
/// shapes; the CPU runs any shape as is.
pub fn model_batch(
    mut features: Vec<Features>,
    device: &Device,
    pad: bool,
) -> (crate::batch::Batch, usize) {
    let n = features.len();
    let cpu = crate::model::dropout::on_cpu(device);
    let padded = if pad { batch_bucket(n, cpu) } else { n };
    if padded > n {
        let last = features[n - 1].clone();
        features.resize(padded, last);
    }
    // On the CPU only the stop slots the batch lists (a route model's capacity is far above
    // most decisions' stops); a GPU keeps the capacity, one stop shape.
    let ns = crate::batch::stop_slots(&features, cpu);
    for f in &mut features {
        crate::batch::keep_stop_slots(f, ns);
    }
    (FeatureBatcher.batch(features, device), ns)
}

/// Predictions for a JSON-lines file of samples (one per line; empty lines skipped), as JSON
/// lines, `batch` samples per forward pass. Returns the text and the number of predictions. A
/// bad line is an error naming the file, the line and the field.
pub fn predict_jsonl(
    p: &Predictor,
    input: &std::path::Path,
    batch: usize,
) -> anyhow::Result<(String, usize)> {
    let text = crate::util::read_text_bounded(input, crate::util::limits::INPUT)?;
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let s = parse_sample(line.as_bytes(), &p.limits())
            .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", input.display(), i + 1))?;
        samples.push(s);
    }
    let mut out = String::new();
    for chunk in samples.chunks(batch.max(1)) {
        for pred in p.predict(chunk) {
            out.push_str(&serde_json::to_string(&pred)?);
            out.push('\n');
        }
    }
    Ok((out, samples.len()))
}

/// The first `limit` samples of a split as request-ready JSON lines (`dfm data sample`).
pub fn request_lines(data: &std::path::Path, split: &str, limit: usize) -> anyhow::Result<String> {
    let mut out = String::new();
    for s in crate::data::loader::first_samples(data, split, limit)? {
        out.push_str(&serde_json::to_string(&to_request_json(&s)?)?);
        out.push('\n');
    }
    Ok(out)
}
