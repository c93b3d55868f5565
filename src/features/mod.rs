//! Sample -> normalized arrays, in the agent-centric frame (x forward, y left, meters, origin at
//! the last fix). The one place this happens: training, evaluation, serving and the dataset's
//! normalization statistics all call it, so there is no train/serve skew.
//!
//! Layouts (per sample):
//! - `hist`  [H, HIST_CH]: x, y, speed, speed present, cos/sin of heading relative to the frame,
//!   heading present, log accuracy, displacement from the previous fix (x, y; 0 for the first
//!   fix), log of the motion scale. Positions and displacements are in units of the sample's own
//!   motion (its mean displacement per step `m`, at least `MIN_STEP_M`; positions over `m * H`),
//!   so a faster mover (a bus where training saw walkers) looks like the same shape, not like
//!   inputs never seen; the scale itself is the last channel, `ln(m * H / pos_scale)`.
//! - `hist_abs` [H, 2]: x, y over `pos_scale` (absolute; the ridge baseline's inputs).
//! - `imu`   [T, 4] normalized per channel, resampled to the spec's length; absent -> mask 0.
//! - `image` [3, S, S], the first map/aerial raster, resized to S and standardized per image and
//!   channel; absent -> mask 0.
//! - `stops` [N, STOP_CH]: x, y, distance (scaled), window start/end relative to t0 (hours),
//!   has window, service, packages, volume (normalized), attributes present, ln(1 + d / 100 m),
//!   rank by distance among the listed stops (0 nearest .. 1 farthest), same zone as the
//!   vehicle (+1 / -1, 0 unknown), rank under "same zone, then neighbouring zone, then
//!   nearest", rank of the stop's zone by distance, zone-id steps from the vehicle's zone and its presence (`zones.rs`);
//!   mask per stop.
//! - `ctx`   [CTX_CH]: groups listed in `CTX_GROUPS` (time, weather, peak, road, zone, depot).
//! - `prior` [F, 2]: the constant-velocity extrapolation (scaled like the future); the model
//!   predicts its modes as offsets from it.
//! - targets: future [F, 2] (scaled by `traj_scale`), ETA per stop as `ln(1 + t / 60 s)`
//!   (scaled by `eta_scale`; quantiles survive the monotone transform, and the log scale weighs
//!   a minute's error at a 2-minute stop more than at a 2-hour one), on-time per stop,
//!   delivered, next-stop index; each with a mask.

use crate::data::manifest::{NormStats, StatsAcc};
use crate::data::sample::{ImageKind, Region, RoadClass, Sample, Spec, Weather};
use crate::frame::LocalFrame;
use crate::time_grid;
use std::ops::Range;

/// The version of what this feature code computes. A model reads the features of the version
/// it was trained with (`Normalization::features_version`): bump it whenever an input changes
/// meaning for some data, and say what changed in [`FEATURE_CHANGES`].
pub const FEATURES_VERSION: u32 = 2;

/// What each version changed from the one before it.
pub const FEATURE_CHANGES: [(u32, &str); 1] = [(
    2,
    "the stop's rule rank (and `model.next_stop_prior`) is \"same zone, then neighbouring zone, \
     then nearest\" where zone ids follow Amazon's convention (LMRC), was \"same zone, then \
     nearest\"",
)];

/// The changes after version `v`, one per line (empty when none is known).
pub fn feature_changes_since(v: u32) -> String {
    FEATURE_CHANGES
        .iter()
        .filter(|(at, _)| *at > v)
        .map(|(at, what)| format!("  version {at}: {what}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub const HIST_CH: usize = 11;

/// History channels (see the layout above).
pub mod hist_ch {
    pub const X: usize = 0;
    pub const Y: usize = 1;
    pub const SPEED: usize = 2;
    pub const SPEED_PRESENT: usize = 3;
    pub const HEADING_COS: usize = 4;
    pub const HEADING_SIN: usize = 5;
    pub const HEADING_PRESENT: usize = 6;
    pub const ACCURACY: usize = 7;
    pub const DX: usize = 8;
    pub const DY: usize = 9;
    pub const LOG_SCALE: usize = 10;
}

/// Stop channels (see the layout above).
pub mod stop_ch {
    pub const X: usize = 0;
    pub const Y: usize = 1;
    pub const DIST: usize = 2;
    pub const TW_START: usize = 3;
    pub const TW_END: usize = 4;
    pub const TW_PRESENT: usize = 5;
    pub const SERVICE: usize = 6;
    pub const PACKAGES: usize = 7;
    pub const VOLUME: usize = 8;
    pub const ATTRS_PRESENT: usize = 9;
    pub const LOG_DIST: usize = 10;
    pub const DIST_RANK: usize = 11;
    pub const SAME_ZONE: usize = 12;
    pub const RULE_RANK: usize = 13;
    pub const ZONE_RANK: usize = 14;
    pub const ZONE_STEP: usize = 15;
    pub const ZONE_STEP_PRESENT: usize = 16;
}

/// The labels of a sample, before they join its features.
struct Targets {
    future: Vec<f32>,
    future_mask: f32,
    eta: Vec<f32>,
    eta_mask: Vec<f32>,
    on_time: Vec<f32>,
    on_time_mask: Vec<f32>,
    delivered: f32,
    delivered_mask: f32,
    next_stop: i64,
}
/// Floor of a history's motion scale (meters per step): a standing vehicle's noise is no scale.
pub const MIN_STEP_M: f64 = 0.5;
pub const IMU_CH: usize = 4;
pub const STOP_CH: usize = 17;
pub const CTX_CH: usize = 21;
/// Time constant of the ETA transform `ln(1 + t / ETA_TAU_S)`.
pub const ETA_TAU_S: f64 = 60.0;
/// Named slices of the context vector; the model turns each into one token.
pub const CTX_GROUPS: [(&str, Range<usize>); 6] = [
    ("time", 0..4),
    ("weather", 4..9),
    ("peak", 9..11),
    ("road", 11..15),
    ("zone", 15..17),
    ("depot", 17..21),
];

/// Everything the feature code needs besides the sample: shapes and statistics.
#[derive(Clone, Debug)]
pub struct Normalizer {
    pub spec: Spec,
    pub image_size: usize,
    pub pos_scale: f32,
    pub stop_scale: f32,
    pub traj_scale: f32,
    pub eta_scale: f32,
    speed: (f32, f32),
    accuracy: (f32, f32),
    imu: [(f32, f32); 4],
    service: (f32, f32),
    packages: (f32, f32),
    volume: (f32, f32),
    zone: (f32, f32),
}

impl Normalizer {
    pub fn new(spec: &Spec, norm: &NormStats, image_size: usize) -> Self {
        Normalizer {
            spec: spec.clone(),
            image_size,
            pos_scale: norm.rms(&["hist_x", "hist_y"]),
            stop_scale: norm.rms(&["stop_x", "stop_y"]),
            traj_scale: norm.rms(&["future_x", "future_y"]),
            eta_scale: norm.rms(&["log_arrival"]),
            speed: norm.get("speed"),
            accuracy: norm.get("log_accuracy"),
            imu: [
                norm.get("imu_ax"),
                norm.get("imu_ay"),
                norm.get("imu_az"),
                norm.get("imu_gz"),
            ],
            service: norm.get("service_s"),
            packages: norm.get("packages"),
            volume: norm.get("volume_l"),
            zone: norm.get("zone_density"),
        }
    }
}

/// Facts about a sample kept beside its tensors: for slices, and to turn predictions back into
/// meters, seconds and lat/lon.
#[derive(Clone, Debug)]
pub struct SampleMeta {
    pub key: String,
    pub route_id: String,
    pub region: Region,
    pub weather: Option<Weather>,
    pub peak_day: Option<bool>,
    pub t0: f64,
    pub frame: LocalFrame,
    pub n_stops: usize,
    /// Seconds after `t0` of the trajectory's points (the labels' times, a request's horizons,
    /// or the model's knots): `prior`, `future` and the model's trajectories have one point each.
    pub horizons_s: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct Features {
    pub hist: Vec<f32>,
    pub hist_abs: Vec<f32>,
    pub hist_mask: Vec<f32>,
    pub imu: Vec<f32>,
    pub imu_mask: f32,
    pub image: Vec<f32>,
    pub image_mask: f32,
    /// [T, S, S, 3] (empty when the dataset has no video), its mask, and (T, S).
    pub video: Vec<f32>,
    pub video_mask: f32,
    pub video_shape: (usize, usize),
    pub stops: Vec<f32>,
    pub stops_mask: Vec<f32>,
    pub ctx: Vec<f32>,
    pub prior: Vec<f32>,
    /// [F, G] weights of the model's G trajectory knots at the F horizons (`time_grid`); empty
    /// when the horizons are the knots.
    pub future_w: Vec<f32>,
    pub future: Vec<f32>,
    pub future_mask: f32,
    pub eta: Vec<f32>,
    pub eta_mask: Vec<f32>,
    pub on_time: Vec<f32>,
    pub on_time_mask: Vec<f32>,
    pub delivered: f32,
    pub delivered_mask: f32,
    /// Index of the next stop, or -1.
    pub next_stop: i64,
    pub meta: SampleMeta,
}

fn z(x: f32, (m, s): (f32, f32)) -> f32 {
    (x - m) / s
}

/// Local (forward, left) coordinates of the history fixes, oldest first.
fn history_local(frame: &LocalFrame, s: &Sample) -> Vec<(f64, f64)> {
    s.history
        .iter()
        .map(|f| frame.to_local(f.lat, f.lon))
        .collect()
}

/// Feeds the raw (pre-normalization) feature values of a sample into the statistics.
pub fn accumulate_stats(s: &Sample, acc: &mut StatsAcc) {
    let frame = LocalFrame::from_history(&s.history);
    let n = s.history.len();
    for (i, (x, y)) in history_local(&frame, s).into_iter().enumerate() {
        if i + 1 < n {
            acc.push("hist_x", x);
            acc.push("hist_y", y);
        }
    }
    for f in &s.history {
        if let Some(v) = f.speed {
            acc.push("speed", v as f64);
        }
        if let Some(a) = f.accuracy {
            acc.push("log_accuracy", (1.0 + a as f64).ln());
        }
    }
    if let Some(imu) = &s.imu {
        for r in &imu.data {
            acc.push("imu_ax", r[0] as f64);
            acc.push("imu_ay", r[1] as f64);
            acc.push("imu_az", r[2] as f64);
            acc.push("imu_gz", r[3] as f64);
        }
    }
    for st in &s.stops {
        let (x, y) = frame.to_local(st.lat, st.lon);
        acc.push("stop_x", x);
        acc.push("stop_y", y);
        if let Some(v) = st.service_s {
            acc.push("service_s", v as f64);
        }
        if let Some(v) = st.packages {
            acc.push("packages", v as f64);
        }
        if let Some(v) = st.volume_l {
            acc.push("volume_l", v as f64);
        }
    }
    if let Some(d) = s.context.zone_density {
        acc.push("zone_density", d as f64);
    }
    if let Some(t) = &s.target {
        for p in &t.future {
            let (x, y) = frame.to_local(p[0], p[1]);
            acc.push("future_x", x);
            acc.push("future_y", y);
        }
        for a in t.arrival_s.iter().flatten() {
            acc.push("arrival_s", *a);
            acc.push("log_arrival", (1.0 + a.max(0.0) / ETA_TAU_S).ln());
        }
    }
}

/// Bilinear resize of an RGB image to `size` x `size`, into CHW floats standardized per image
/// and channel (zero mean, unit variance): map rasters are mostly one light ground colour, and
/// raw pixel values would leave roads, jams and buildings a few percent apart.
fn image_chw(px: &crate::data::sample::Rgb8, size: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * size * size];
    let (w, h) = (px.width as usize, px.height as usize);
    if (w, h) == (size, size) {
        // Same size: bilinear weights are exactly 1 and 0, so this is the same result, faster.
        for (i, rgb) in px.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * size * size + i] = rgb[c] as f32 / 255.0;
            }
        }
    } else {
        bilinear_chw(px, size, &mut out);
    }
    standardize_channels(&mut out, size * size);
    out
}

/// Each channel of a CHW image (`n` pixels a channel) to zero mean and unit variance (the
/// standard deviation floored at 0.02, so a flat image stays finite).
fn standardize_channels(chw: &mut [f32], n: usize) {
    for ch in chw.chunks_mut(n) {
        let mean = ch.iter().sum::<f32>() / n as f32;
        let var = ch.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let inv = 1.0 / var.sqrt().max(0.02);
        for v in ch.iter_mut() {
            *v = (*v - mean) * inv;
        }
    }
}

/// Bilinear resize into `out` (CHW, values / 255). The source columns and weights of each
/// output column are computed once per image rather than per pixel and channel.
fn bilinear_chw(px: &crate::data::sample::Rgb8, size: usize, out: &mut [f32]) {
    let (w, h) = (px.width as usize, px.height as usize);
    let taps = |n: usize, o: usize| {
        let f = ((o as f32 + 0.5) * (n as f32 / size as f32) - 0.5).clamp(0.0, (n - 1) as f32);
        let i0 = f.floor() as usize;
        (i0, (i0 + 1).min(n - 1), f.fract())
    };
    let cols: Vec<(usize, usize, f32)> = (0..size).map(|ox| taps(w, ox)).collect();
    for oy in 0..size {
        let (y0, y1, ty) = taps(h, oy);
        for (ox, &(x0, x1, tx)) in cols.iter().enumerate() {
            for c in 0..3 {
                let p = |x: usize, y: usize| px.data[(y * w + x) * 3 + c] as f32;
                let v = (p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx) * (1.0 - ty)
                    + (p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx) * ty;
                out[c * size * size + oy * size + ox] = v / 255.0;
            }
        }
    }
}

/// IMU rows at `rate` Hz ending at `t0`, put on `n` rows at `to_rate` Hz ending at `t0`:
/// linear in time between the rows around each time; times the data does not cover stay 0 (the
/// channel's mean once normalized). The same rate and length pass through unchanged.
fn imu_on_grid(rows: &[[f32; 4]], rate: f64, n: usize, to_rate: f64) -> Vec<[f32; 4]> {
    if rows.len() == n && (rate - to_rate).abs() <= 1e-6 * to_rate {
        return rows.to_vec();
    }
    let at = |len: usize, r: f64| -> Vec<f64> {
        (0..len).map(|i| -((len - 1 - i) as f64) / r).collect()
    };
    let (have, want) = (at(rows.len(), rate), at(n, to_rate));
    let tol = time_grid::ON_GRID / to_rate;
    want.iter()
        .map(|&t| match time_grid::locate(&have, t, tol) {
            None => [0.0; 4],
            Some((i, j, w)) => {
                let w = w as f32;
                std::array::from_fn(|c| rows[i][c] * (1.0 - w) + rows[j][c] * w)
            }
        })
        .collect()
}

impl Normalizer {
    /// Seconds -> the model's ETA units.
    pub fn eta_encode(&self, seconds: f64) -> f32 {
        ((1.0 + seconds.max(0.0) / ETA_TAU_S).ln() as f32) / self.eta_scale
    }

    /// Trajectory `index` of a flat model output of `[.., f, 2]` trajectories -> meters in the
    /// sample's local frame.
    pub fn traj_m(&self, flat: &[f32], index: usize, f: usize) -> Vec<[f64; 2]> {
        flat[index * f * 2..(index + 1) * f * 2]
            .chunks(2)
            .map(|p| {
                [
                    (p[0] * self.traj_scale) as f64,
                    (p[1] * self.traj_scale) as f64,
                ]
            })
            .collect()
    }

    /// The model's ETA units -> seconds.
    pub fn eta_decode(&self, v: f32) -> f64 {
        ETA_TAU_S * (((v * self.eta_scale) as f64).exp() - 1.0)
    }

    /// The feature arrays of a validated sample. Labels are read when present; serving calls
    /// this on samples without them.
    pub fn features(&self, s: &Sample) -> Features {
        let frame = LocalFrame::from_history(&s.history);
        let (hist, hist_abs, hist_mask) = self.history(s, &frame);
        let (imu, imu_mask) = self.imu_rows(s);
        let (image, image_mask) = self.image(s);
        let (video, video_mask) = crate::data::video::features(
            s.video.as_ref(),
            (self.spec.video_frames, self.spec.video_size),
        );
        let (stops, stops_mask) = self.stops(s, &frame);
        let ctx = self.context(s, &frame);
        let sp = &self.spec;
        let horizons = self.horizons(s);
        let (knots, knot_step) = (sp.future_len, sp.future_step_s as f64);
        let future_w = if time_grid::on_knots(&horizons, knots, knot_step) {
            Vec::new()
        } else {
            time_grid::knot_weights(&horizons, knots, knot_step)
        };
        let prior: Vec<f32> = crate::kinematics::constant_velocity_at(s, &frame, &horizons)
            .iter()
            .flat_map(|p| [p[0] as f32 / self.traj_scale, p[1] as f32 / self.traj_scale])
            .collect();
        let t = self.targets(s, &frame, horizons.len());
        Features {
            hist,
            hist_abs,
            hist_mask,
            imu,
            imu_mask,
            image,
            image_mask,
            video,
            video_mask,
            video_shape: (self.spec.video_frames, self.spec.video_size),
            stops,
            stops_mask,
            ctx,
            prior,
            future_w,
            future: t.future,
            future_mask: t.future_mask,
            eta: t.eta,
            eta_mask: t.eta_mask,
            on_time: t.on_time,
            on_time_mask: t.on_time_mask,
            delivered: t.delivered,
            delivered_mask: t.delivered_mask,
            next_stop: t.next_stop,
            meta: SampleMeta {
                key: s.key.clone(),
                route_id: s.route_id.clone(),
                region: s.region,
                weather: s.context.weather,
                peak_day: s.context.peak_day,
                t0: s.t0,
                frame,
                n_stops: s.stops.len().min(sp.max_stops),
                horizons_s: horizons,
            },
        }
    }

    /// The model's trajectory horizon, seconds (its last knot).
    pub fn horizon_s(&self) -> f64 {
        time_grid::horizon(self.spec.future_len, self.spec.future_step_s as f64)
    }

    /// The seconds after `t0` at which a sample's trajectory is wanted: its labels' times, else
    /// a request's `horizons_s`, else the model's knots.
    pub fn horizons(&self, s: &Sample) -> Vec<f64> {
        let sp = &self.spec;
        if let Some(t) = s.target.as_ref().filter(|t| !t.future.is_empty()) {
            let step = t.future_step_s.unwrap_or(sp.future_step_s) as f64;
            return time_grid::knots(t.future.len(), step);
        }
        if !s.horizons_s.is_empty() {
            return s.horizons_s.clone();
        }
        time_grid::knots(sp.future_len, sp.future_step_s as f64)
    }

    /// The history's local positions at the model's grid times (`t0 - (H-1-k) step`, oldest
    /// first), with the fix whose other fields a row takes (the nearer one); None where the
    /// history does not reach.
    fn history_on_grid(&self, s: &Sample, frame: &LocalFrame) -> Vec<Option<((f64, f64), usize)>> {
        let (h, step) = (self.spec.history_len, self.spec.history_step_s as f64);
        let local = history_local(frame, s);
        let times: Vec<f64> = s.history.iter().map(|f| f.t).collect();
        (0..h)
            .map(|k| {
                let t = s.t0 - (h - 1 - k) as f64 * step;
                let (i, j, w) = time_grid::locate(&times, t, time_grid::ON_GRID * step)?;
                let (a, b) = (local[i], local[j]);
                let p = (a.0 + (b.0 - a.0) * w, a.1 + (b.1 - a.1) * w);
                Some((p, if w < 0.5 { i } else { j }))
            })
            .collect()
    }

    /// History rows [H, HIST_CH] on the model's time grid (the last row is t0; rows before the
    /// first fix are masked), the absolute positions [H, 2] and the mask [H].
    fn history(&self, s: &Sample, frame: &LocalFrame) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let h = self.spec.history_len;
        let mut hist = vec![0f32; h * HIST_CH];
        let mut hist_abs = vec![0f32; h * 2];
        let mut hist_mask = vec![0f32; h];
        let rows = self.history_on_grid(s, frame);
        let present: Vec<(usize, (f64, f64), usize)> = rows
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.map(|(p, src)| (k, p, src)))
            .collect();
        let path: f64 = present
            .windows(2)
            .map(|w| (w[1].1.0 - w[0].1.0).hypot(w[1].1.1 - w[0].1.1))
            .sum();
        let step_m = (path / present.len().saturating_sub(1).max(1) as f64).max(MIN_STEP_M);
        let span = step_m * h as f64;
        let log_scale = (span / self.pos_scale.max(1e-6) as f64).ln() as f32;
        for (n, &(k, (x, y), src)) in present.iter().enumerate() {
            let f = &s.history[src];
            hist_abs[k * 2] = x as f32 / self.pos_scale;
            hist_abs[k * 2 + 1] = y as f32 / self.pos_scale;
            let r = &mut hist[k * HIST_CH..(k + 1) * HIST_CH];
            r[hist_ch::X] = (x / span) as f32;
            r[hist_ch::Y] = (y / span) as f32;
            if let Some(v) = f.speed {
                r[hist_ch::SPEED] = z(v, self.speed);
                r[hist_ch::SPEED_PRESENT] = 1.0;
            }
            if let Some(hd) = f.heading {
                let rel = (hd as f64 - frame.heading_deg).to_radians();
                r[hist_ch::HEADING_COS] = rel.cos() as f32;
                r[hist_ch::HEADING_SIN] = -rel.sin() as f32; // left-positive, like y
                r[hist_ch::HEADING_PRESENT] = 1.0;
            }
            if let Some(a) = f.accuracy {
                r[hist_ch::ACCURACY] = z((1.0 + a).ln(), self.accuracy);
            }
            if n > 0 {
                let (px, py) = present[n - 1].1;
                r[hist_ch::DX] = ((x - px) / step_m) as f32;
                r[hist_ch::DY] = ((y - py) / step_m) as f32;
            }
            r[hist_ch::LOG_SCALE] = log_scale;
            hist_mask[k] = 1.0;
        }
        (hist, hist_abs, hist_mask)
    }

    /// IMU rows [T, IMU_CH] on the model's grid, normalized per channel.
    fn imu_rows(&self, s: &Sample) -> (Vec<f32>, f32) {
        let mut imu = vec![0f32; self.spec.imu_len * IMU_CH];
        let Some(m) = s.imu.as_ref().filter(|m| !m.data.is_empty()) else {
            return (imu, 0.0);
        };
        let (rate, to_rate) = (m.rate_hz as f64, self.spec.imu_rate_hz as f64);
        for (k, row) in imu_on_grid(&m.data, rate, self.spec.imu_len, to_rate)
            .iter()
            .enumerate()
        {
            for c in 0..IMU_CH {
                imu[k * IMU_CH + c] = z(row[c], self.imu[c]);
            }
        }
        (imu, 1.0)
    }

    /// The first map or aerial raster as [3, S, S].
    fn image(&self, s: &Sample) -> (Vec<f32>, f32) {
        let sz = self.image_size;
        match s
            .images
            .iter()
            .find(|im| matches!(im.kind, ImageKind::Map | ImageKind::Aerial))
            .and_then(|im| im.pixels.as_ref())
        {
            Some(px) => (image_chw(px, sz), 1.0),
            None => (vec![0f32; 3 * sz * sz], 0.0),
        }
    }

    /// Stop rows [N, STOP_CH] and their mask.
    fn stops(&self, s: &Sample, frame: &LocalFrame) -> (Vec<f32>, Vec<f32>) {
        let ns = self.spec.max_stops;
        let mut stops = vec![0f32; ns * STOP_CH];
        let mut stops_mask = vec![0f32; ns];
        let listed = &s.stops[..s.stops.len().min(ns)];
        let local: Vec<(f64, f64)> = listed
            .iter()
            .map(|st| frame.to_local(st.lat, st.lon))
            .collect();
        let dist: Vec<f64> = local.iter().map(|(x, y)| (x * x + y * y).sqrt()).collect();
        let zone_ids: Vec<Option<&str>> = listed.iter().map(|st| st.zone.as_deref()).collect();
        let zf = crate::zones::zone_features(&dist, &zone_ids, s.context.zone.as_deref());
        for (i, st) in listed.iter().enumerate() {
            let r = &mut stops[i * STOP_CH..(i + 1) * STOP_CH];
            self.stop_row(r, s, st, local[i], &dist, i);
            r[stop_ch::RULE_RANK] = zf.rule_rank[i];
            r[stop_ch::ZONE_RANK] = zf.zone_rank[i];
            (r[stop_ch::ZONE_STEP], r[stop_ch::ZONE_STEP_PRESENT]) = zf.zone_step[i];
            stops_mask[i] = 1.0;
        }
        (stops, stops_mask)
    }

    /// One stop's own channels (position, window, attributes, distance and its rank, zone).
    fn stop_row(
        &self,
        r: &mut [f32],
        s: &Sample,
        st: &crate::data::sample::Stop,
        (x, y): (f64, f64),
        dist: &[f64],
        i: usize,
    ) {
        r[stop_ch::X] = x as f32 / self.stop_scale;
        r[stop_ch::Y] = y as f32 / self.stop_scale;
        r[stop_ch::DIST] = (x * x + y * y).sqrt() as f32 / self.stop_scale;
        if let (Some(a), Some(b)) = (st.tw_start, st.tw_end) {
            r[stop_ch::TW_START] = (((a - s.t0) / 3600.0) as f32).clamp(-12.0, 12.0);
            r[stop_ch::TW_END] = (((b - s.t0) / 3600.0) as f32).clamp(-12.0, 12.0);
            r[stop_ch::TW_PRESENT] = 1.0;
        }
        if let Some(v) = st.service_s {
            r[stop_ch::SERVICE] = z(v, self.service);
        }
        if let Some(v) = st.packages {
            r[stop_ch::PACKAGES] = z(v as f32, self.packages);
        }
        if let Some(v) = st.volume_l {
            r[stop_ch::VOLUME] = z(v, self.volume);
        }
        let any = st.service_s.is_some() || st.packages.is_some() || st.volume_l.is_some();
        r[stop_ch::ATTRS_PRESENT] = any as u8 as f32;
        r[stop_ch::LOG_DIST] = (dist[i] / 100.0).ln_1p() as f32 / 3.0;
        let rank = dist
            .iter()
            .enumerate()
            .filter(|&(j, &d)| d < dist[i] || (d == dist[i] && j < i))
            .count();
        r[stop_ch::DIST_RANK] = rank as f32 / (dist.len().max(2) - 1) as f32;
        r[stop_ch::SAME_ZONE] = match (&s.context.zone, &st.zone) {
            (Some(a), Some(b)) if a == b => 1.0,
            (Some(_), Some(_)) => -1.0,
            _ => 0.0,
        };
    }

    /// The labels and their masks; `f` trajectory points (the labels' own, when present).
    fn targets(&self, s: &Sample, frame: &LocalFrame, f: usize) -> Targets {
        let ns = self.spec.max_stops;
        let mut t = Targets {
            future: vec![0f32; f * 2],
            future_mask: 0.0,
            eta: vec![0f32; ns],
            eta_mask: vec![0f32; ns],
            on_time: vec![0f32; ns],
            on_time_mask: vec![0f32; ns],
            delivered: 0.0,
            delivered_mask: 0.0,
            next_stop: -1,
        };
        let Some(tg) = &s.target else {
            return t;
        };
        if tg.future.len() == f {
            for (k, p) in tg.future.iter().enumerate() {
                let (x, y) = frame.to_local(p[0], p[1]);
                t.future[2 * k] = x as f32 / self.traj_scale;
                t.future[2 * k + 1] = y as f32 / self.traj_scale;
            }
            t.future_mask = 1.0;
        }
        for (i, a) in tg.arrival_s.iter().take(ns).enumerate() {
            if let Some(a) = a {
                t.eta[i] = self.eta_encode(*a);
                t.eta_mask[i] = 1.0;
            }
        }
        for (i, o) in tg.on_time.iter().take(ns).enumerate() {
            if let Some(o) = o {
                t.on_time[i] = *o as u8 as f32;
                t.on_time_mask[i] = 1.0;
            }
        }
        if let Some(d) = tg.delivered {
            t.delivered = d as u8 as f32;
            t.delivered_mask = 1.0;
        }
        if let Some(k) = tg.next_stop.filter(|&k| k < ns) {
            t.next_stop = k as i64;
        }
        t
    }

    fn context(&self, s: &Sample, frame: &LocalFrame) -> Vec<f32> {
        let c = &s.context;
        let mut v = vec![0f32; CTX_CH];
        let tau = std::f32::consts::TAU;
        v[0] = (tau * c.hour / 24.0).sin();
        v[1] = (tau * c.hour / 24.0).cos();
        v[2] = (tau * c.weekday as f32 / 7.0).sin();
        v[3] = (tau * c.weekday as f32 / 7.0).cos();
        if let Some(w) = c.weather {
            v[4 + w.index()] = 1.0;
            v[8] = 1.0;
        }
        if let Some(p) = c.peak_day {
            v[9] = p as u8 as f32;
            v[10] = 1.0;
        }
        if let Some(r) = c.road_class {
            v[11 + r.index()] = 1.0;
            v[11 + RoadClass::ALL.len()] = 1.0;
        }
        if let Some(d) = c.zone_density {
            v[15] = z(d, self.zone);
            v[16] = 1.0;
        }
        if let Some(d) = c.depot {
            let (x, y) = frame.to_local(d.lat, d.lon);
            let scale = 10.0 * self.stop_scale as f64;
            v[17] = (x / scale) as f32;
            v[18] = (y / scale) as f32;
            v[19] = ((x * x + y * y).sqrt() / scale) as f32;
            v[20] = 1.0;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::{Context, Fix, Stop, Target};
    use crate::frame::Enu;

    /// The same-size copy is exactly the bilinear resize it replaces, and a resize keeps a
    /// constant-coloured image constant (then standardized to zeros).
    #[test]
    fn image_copy_equals_bilinear_at_the_same_size() {
        let (w, h) = (7usize, 7usize);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let px = crate::data::sample::Rgb8 {
            width: w as u32,
            height: h as u32,
            data,
        };
        let mut slow = vec![0f32; 3 * w * h];
        bilinear_chw(&px, w, &mut slow);
        standardize_channels(&mut slow, w * h);
        assert_eq!(image_chw(&px, w), slow);
        let flat = crate::data::sample::Rgb8 {
            width: 5,
            height: 9,
            data: vec![90; 5 * 9 * 3],
        };
        let mut out = vec![0f32; 3 * 4 * 4];
        bilinear_chw(&flat, 4, &mut out);
        assert!(
            out.iter().all(|v| (v - 90.0 / 255.0).abs() < 1e-6),
            "{out:?}"
        );
    }

    /// A vehicle driving north at 10 m/s (fixes 10 m apart), one stop 30 m ahead in its own
    /// zone, the truth 20 m ahead after one step; unit statistics (every scale 1).
    #[test]
    fn features_of_a_hand_made_sample() {
        let enu = Enu::new(48.0, 11.0);
        let at = |n: f64| enu.to_lat_lon(0.0, n);
        let fix = |t: f64, n: f64| {
            let (lat, lon) = at(n);
            Fix {
                speed: Some(10.0),
                ..Fix::at(t, lat, lon)
            }
        };
        let (slat, slon) = at(30.0);
        let (flat, flon) = at(20.0);
        let s = Sample {
            context: Context {
                zone: Some("A-1.1A".into()),
                ..Default::default()
            },
            stops: vec![Stop {
                zone: Some("A-1.1A".into()),
                ..Stop::at("s", slat, slon)
            }],
            target: Some(Target {
                future: vec![[flat, flon]],
                ..Default::default()
            }),
            ..Sample::bare("k", 1.0, vec![fix(0.0, -10.0), fix(1.0, 0.0)])
        };
        let spec = Spec {
            video_frames: 0,
            video_size: 0,
            history_len: 2,
            history_step_s: 1.0,
            future_len: 1,
            future_step_s: 1.0,
            imu_len: 1,
            imu_rate_hz: 1.0,
            max_stops: 2,
        };
        let f = Normalizer::new(&spec, &NormStats::default(), 8).features(&s);
        let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
        let row = |k: usize| &f.hist[k * HIST_CH..(k + 1) * HIST_CH];
        // Motion scale: 10 m per step, positions over 10 m x 2 fixes = 20 m.
        assert!(close(row(0)[hist_ch::X], -0.5) && close(row(0)[hist_ch::Y], 0.0));
        assert!(close(row(1)[hist_ch::X], 0.0));
        assert_eq!(
            row(0)[hist_ch::DX],
            0.0,
            "no displacement for the first fix"
        );
        assert!(close(row(1)[hist_ch::DX], 1.0) && close(row(1)[hist_ch::DY], 0.0));
        assert!(close(row(1)[hist_ch::LOG_SCALE], 20f32.ln()));
        assert!(close(row(1)[hist_ch::SPEED], 10.0) && row(1)[hist_ch::SPEED_PRESENT] == 1.0);
        assert_eq!(row(1)[hist_ch::HEADING_PRESENT], 0.0);
        assert_eq!(f.hist_mask, vec![1.0, 1.0]);
        // The stop: 30 m ahead, nearest, same zone; the second slot is masked.
        let st = &f.stops[..STOP_CH];
        assert!(close(st[stop_ch::X], 30.0) && close(st[stop_ch::Y], 0.0));
        assert!(close(st[stop_ch::DIST], 30.0));
        assert!(close(st[stop_ch::LOG_DIST], (1.3f64.ln() / 3.0) as f32));
        assert_eq!(st[stop_ch::DIST_RANK], 0.0);
        assert_eq!(st[stop_ch::SAME_ZONE], 1.0);
        assert_eq!(st[stop_ch::ATTRS_PRESENT], 0.0);
        assert_eq!(f.stops_mask, vec![1.0, 0.0]);
        // The truth and the constant-velocity prior: 20 m and 10 m ahead.
        assert!(close(f.future[0], 20.0) && close(f.future[1], 0.0) && f.future_mask == 1.0);
        assert!(close(f.prior[0], 10.0) && close(f.prior[1], 0.0));
        assert_eq!((f.image_mask, f.imu_mask), (0.0, 0.0));
    }

    /// A vehicle driving north at 10 m/s sampled every 1 s and every 2 s over the same 4 s: on
    /// a model's 1 s grid both give the same history rows (linear motion interpolates exactly),
    /// and a history that starts later leaves the earlier rows masked. Labels at 3 s steps are
    /// blended from the model's 2 s knots.
    #[test]
    fn any_sampling_meets_the_model_grid_by_time() {
        let enu = Enu::new(48.0, 11.0);
        let sample = |times: &[f64]| {
            let history = times
                .iter()
                .map(|&t| {
                    let (lat, lon) = enu.to_lat_lon(0.0, 10.0 * t);
                    Fix {
                        speed: Some(10.0),
                        ..Fix::at(t, lat, lon)
                    }
                })
                .collect();
            let future = [30.0, 60.0].map(|n| {
                let (lat, lon) = enu.to_lat_lon(0.0, n);
                [lat, lon]
            });
            Sample {
                video: None,
                key: "k".into(),
                route_id: "r".into(),
                region: Region::Urban,
                t0: 0.0,
                context: Context::default(),
                history,
                imu: None,
                images: Vec::new(),
                stops: Vec::new(),
                horizons_s: Vec::new(),
                plan_route: false,
                target: Some(Target {
                    future_step_s: Some(3.0),
                    future: future.to_vec(),
                    ..Default::default()
                }),
            }
        };
        let spec = Spec {
            video_frames: 0,
            video_size: 0,
            history_len: 5,
            history_step_s: 1.0,
            future_len: 3,
            future_step_s: 2.0,
            imu_len: 1,
            imu_rate_hz: 1.0,
            max_stops: 1,
        };
        let n = Normalizer::new(&spec, &NormStats::default(), 8);
        let every_1s = n.features(&sample(&[-4.0, -3.0, -2.0, -1.0, 0.0]));
        let every_2s = n.features(&sample(&[-4.0, -2.0, 0.0]));
        assert_eq!(every_2s.hist_mask, vec![1.0; 5]);
        for (a, b) in every_1s.hist.iter().zip(&every_2s.hist) {
            assert!(
                (a - b).abs() < 1e-5,
                "{:?}\nvs {:?}",
                every_1s.hist,
                every_2s.hist
            );
        }
        let late = n.features(&sample(&[-2.0, 0.0]));
        assert_eq!(late.hist_mask, vec![0.0, 0.0, 1.0, 1.0, 1.0]);
        // Labels at 3 s and 6 s: knots at 2, 4, 6 s; 3 s is half of knots 1 and 2.
        assert_eq!(every_1s.meta.horizons_s, vec![3.0, 6.0]);
        assert_eq!(every_1s.future_w, vec![0.5, 0.5, 0.0, 0.0, 0.0, 1.0]);
        assert!((every_1s.prior[0] - 30.0).abs() < 1e-3 && (every_1s.prior[2] - 60.0).abs() < 1e-3);
    }
}
