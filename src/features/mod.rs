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

use crate::data::manifest::ChannelStats;
use crate::data::sample::{ImageKind, Region, RoadClass, Sample, Spec, Weather};
use crate::data::stats::history_local;
use crate::frame::LocalFrame;
use crate::time_grid;
use std::ops::Range;

mod image;
pub mod retrieval;
mod rows;
#[cfg(test)]
mod tests;

/// The version of what this feature code computes. A model reads the features of the version
/// it was trained with (`NormalizationFile::features_version`): bump it whenever an input changes
/// meaning for some data, and say what changed in [`FEATURE_CHANGES`].
pub const FEATURES_VERSION: u32 = 2;

/// What each version changed from the one before it.
pub const FEATURE_CHANGES: [(u32, &str); 1] = [(
    2,
    "the stop's rule rank (and `model.next_stop_prior`) is \"same zone, then neighbouring zone, then nearest\" where zone ids follow Amazon's convention (LMRC), was \"same zone, then nearest\"",
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
struct LabelRows {
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
pub use crate::data::stats::ETA_TAU_S;
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
pub struct Featurizer {
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
    /// The fleet's past trips (`model.retrieval`), queried for every sample.
    pub retrieval: Option<std::sync::Arc<retrieval::Index>>,
}

impl Featurizer {
    pub fn new(spec: &Spec, norm: &ChannelStats, image_size: usize) -> Self {
        Featurizer {
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
            retrieval: None,
        }
    }

    /// The same feature code reading the fleet's past trips too (`model.retrieval`).
    pub fn with_retrieval(mut self, index: std::sync::Arc<retrieval::Index>) -> Self {
        self.retrieval = Some(index);
        self
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
    /// [2 G + 1]: the neighbours' mean offset at the knots over `traj_scale`, and their count
    /// (`retrieval::input`); empty without an index. The mask is 1 where neighbours were found.
    pub retr: Vec<f32>,
    pub retr_mask: f32,
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

impl Featurizer {
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
        let (future_w, prior) = self.trajectory_inputs(s, &frame, &horizons);
        let t = self.targets(s, &frame, horizons.len());
        let (retr, retr_mask) = self.retrieval.as_ref().map_or((Vec::new(), 0.0), |idx| {
            retrieval::input(&idx.query(s), idx.set.min_neighbours, self.traj_scale)
        });
        Features {
            retr,
            retr_mask,
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

    /// The weights of the model's knots at the sample's horizons (empty when they are the
    /// knots) and the constant-velocity prior at them, scaled like the future.
    fn trajectory_inputs(
        &self,
        s: &Sample,
        frame: &LocalFrame,
        horizons: &[f64],
    ) -> (Vec<f32>, Vec<f32>) {
        let (knots, knot_step) = (self.spec.future_len, self.spec.future_step_s as f64);
        let future_w = if time_grid::on_knots(horizons, knots, knot_step) {
            Vec::new()
        } else {
            time_grid::knot_weights(horizons, knots, knot_step)
        };
        let prior: Vec<f32> = crate::kinematics::constant_velocity_at(s, frame, horizons)
            .iter()
            .flat_map(|p| [p[0] as f32 / self.traj_scale, p[1] as f32 / self.traj_scale])
            .collect();
        (future_w, prior)
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
}
