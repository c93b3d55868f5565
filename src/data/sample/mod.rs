//! The sample: one decision point on one route. It is the contract between data and model
//! (DESIGN.md section 3): the simulator, the importers, the shards, the loader, the serving API
//! and the feature code all speak this one type.
//!
//! Conventions
//! - Coordinates are WGS84 degrees (`lat` in [-85, 85]: the local frame cannot represent the
//!   polar caps; `lon` in [-180, 180]).
//! - Times are UTC seconds since the UNIX epoch (`f64`); durations are seconds.
//! - Headings are degrees clockwise from north, in [0, 360).
//! - A field that a source does not have is absent (`None` / empty), never filled with a fake
//!   value: the feature code turns absence into a mask.
//!
//! In a shard, pixels and IMU arrays live in their own tar members (`KEY.map.png`,
//! `KEY.imu.npy`); the JSON names them through `file`. In a serving request they may be given
//! inline (`png_base64`, `data`).

use serde::{Deserialize, Serialize};

mod validate;
pub use validate::{FieldError, MAX_ABS_LAT};

/// Version of this schema, written into every manifest and export bundle.
/// Bump it when a field changes meaning or is added (v2: `context.zone`).
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Unique key of the sample inside its dataset (no `.` and no `/`: it is the WebDataset key).
    pub key: String,
    /// The route (or trip) this sample belongs to; splits never share a route id.
    pub route_id: String,
    /// Kind of area the route runs in.
    pub region: Region,
    /// Decision time, UTC seconds. The last history fix is at `t0`.
    pub t0: f64,
    /// Time, weather, peak-day and geospatial context.
    pub context: Context,
    /// GPS fixes before and at `t0`, oldest first, resampled to the dataset's fixed step.
    pub history: Vec<Fix>,
    /// Inertial readings over the history window (may be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imu: Option<Imu>,
    /// A dashcam clip over the history window (may be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<super::video::Video>,
    /// Raster patches around the vehicle or photos (may be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// The next planned stops (a set; their order carries no meaning). May be empty.
    #[serde(default)]
    pub stops: Vec<Stop>,
    /// Labels from the truth; absent at serving time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Labels>,
    /// A request's own question: the seconds after `t0` at which the trajectory is wanted
    /// (increasing, each at most the model's horizon). Empty: the model's own horizons. Stored
    /// samples never carry it (their labels' times are the horizons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub horizons_s: Vec<f64>,
    /// A request's own question: also plan the route through all its stops (`route_plan`; the
    /// prediction's `route_plan`). Stored samples never carry it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plan_route: bool,
}

/// Most horizons one request may ask for.
pub const MAX_HORIZONS: usize = 256;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    Urban,
    Suburban,
    Rural,
    /// A source that does not say (e.g. a GPS dump with no area information).
    Unknown,
}

impl Region {
    pub const ALL: [Region; 4] = [
        Region::Urban,
        Region::Suburban,
        Region::Rural,
        Region::Unknown,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Region::Urban => "urban",
            Region::Suburban => "suburban",
            Region::Rural => "rural",
            Region::Unknown => "unknown",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Weather {
    Clear,
    Rain,
    Snow,
    Fog,
}

impl Weather {
    pub const ALL: [Weather; 4] = [Weather::Clear, Weather::Rain, Weather::Snow, Weather::Fog];
    pub fn name(self) -> &'static str {
        match self {
            Weather::Clear => "clear",
            Weather::Rain => "rain",
            Weather::Snow => "snow",
            Weather::Fog => "fog",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RoadClass {
    Local,
    Arterial,
    Highway,
}

impl RoadClass {
    pub const ALL: [RoadClass; 3] = [RoadClass::Local, RoadClass::Arterial, RoadClass::Highway];
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Local hour of day at `t0`, in [0, 24).
    pub hour: f32,
    /// Local day of week at `t0`, 0 = Monday .. 6 = Sunday.
    pub weekday: u8,
    /// Weather over the area that day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weather: Option<Weather>,
    /// A peak day (holiday season, sales event): more parcels, more traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_day: Option<bool>,
    /// Class of the road the vehicle is on at `t0` (map-matched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub road_class: Option<RoadClass>,
    /// Delivery zone the vehicle is in (same naming as `stops[].zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Building density of the delivery zone around the vehicle, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_density: Option<f32>,
    /// The route's depot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depot: Option<LatLon>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fix {
    /// UTC seconds.
    pub t: f64,
    pub lat: f64,
    pub lon: f64,
    /// Ground speed reported by the receiver, m/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
    /// Course over ground, degrees clockwise from north.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<f32>,
    /// Horizontal accuracy (1 sigma) reported by the receiver, meters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f32>,
}

impl Fix {
    /// A fix with a time and a position, nothing else reported.
    pub fn at(t: f64, lat: f64, lon: f64) -> Fix {
        Fix {
            t,
            lat,
            lon,
            speed: None,
            heading: None,
            accuracy: None,
        }
    }
}

/// Inertial readings in the vehicle frame over the history window, oldest first, ending at `t0`.
/// Each row: `[ax, ay, az, gz]`: acceleration forward, left and up (m/s^2, gravity included in
/// `az`) and yaw rate (rad/s, counter-clockwise positive).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Imu {
    pub rate_hz: f32,
    /// Tar member holding the array (`imu.npy`, float32, shape [n, 4]) inside a shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The same array inline in a request: the `.npy` file's bytes in base64 (what a request
    /// body carries by default: a tenth of the parsing of `data` rows written as JSON numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npy_base64: Option<String>,
    /// The rows, when given inline (serving) or once loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<[f32; 4]>,
}

impl Imu {
    /// The rows as a `.npy` file (float32 [n, 4]): a shard's `imu.npy` member, or a request's
    /// `npy_base64` once encoded.
    pub fn to_npy(&self) -> Vec<u8> {
        let flat: Vec<f32> = self.data.iter().flatten().copied().collect();
        super::npy::write_f32(&flat, &[self.data.len(), 4])
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// Rendered map raster (roads, buildings, parks, stops).
    Map,
    /// Aerial or satellite imagery.
    Aerial,
    /// A photo taken at a stop.
    Photo,
}

impl ImageKind {
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Map => "map",
            ImageKind::Aerial => "aerial",
            ImageKind::Photo => "photo",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub kind: ImageKind,
    /// Ground resolution of a raster, meters per pixel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m_per_px: Option<f32>,
    /// Bearing of the image's "up" direction in degrees (None: north-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f32>,
    /// Pixel (x right, y down, from the top-left corner) where the vehicle is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_px: Option<[f32; 2]>,
    /// Tar member holding the PNG inside a shard (e.g. `map.png`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The PNG, base64-encoded, when given inline (serving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png_base64: Option<String>,
    /// Decoded pixels, once loaded (never serialized).
    #[serde(skip)]
    pub pixels: Option<Rgb8>,
}

/// A decoded RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    pub id: String,
    pub lat: f64,
    pub lon: f64,
    /// Delivery time window (UTC seconds); absent when the stop has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tw_start: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tw_end: Option<f64>,
    /// Planned service (dwell) time, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_s: Option<f32>,
    /// Number of packages for the stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<u32>,
    /// Total package volume, liters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_l: Option<f32>,
    /// Delivery zone identifier (as in the LMRC data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Stop {
    /// A stop with an id and a position, no attribute known.
    pub fn at(id: impl Into<String>, lat: f64, lon: f64) -> Stop {
        Stop {
            id: id.into(),
            lat,
            lon,
            tw_start: None,
            tw_end: None,
            service_s: None,
            packages: None,
            volume_l: None,
            zone: None,
        }
    }
}

/// Labels. Every part is optional: a head whose labels are absent contributes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// Step between future positions, seconds (the first position is at `t0 + future_step_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future_step_s: Option<f32>,
    /// True future positions `[lat, lon]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub future: Vec<[f64; 2]>,
    /// Seconds from `t0` to the arrival at each stop (same order as `stops`; null = unknown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrival_s: Vec<Option<f64>>,
    /// Arrival inside the stop's time window (null where the stop has no window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_time: Vec<Option<bool>>,
    /// Success of the next delivery attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<bool>,
    /// Index into `stops` of the stop visited next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_stop: Option<usize>,
    /// The colour at `t0` of the next traffic light the vehicle reaches within the future
    /// window (simulated worlds with video; evaluation slices by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light_ahead: Option<Light>,
}

/// The colour of a traffic light.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Light {
    Red,
    Green,
}

impl Light {
    pub fn name(self) -> &'static str {
        match self {
            Light::Red => "red",
            Light::Green => "green",
        }
    }
}

/// The fixed shapes a dataset promises (stored in its manifest, checked per record).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub history_len: usize,
    pub history_step_s: f32,
    pub future_len: usize,
    pub future_step_s: f32,
    /// Rows of IMU data when present (rate x history duration).
    pub imu_len: usize,
    pub imu_rate_hz: f32,
    pub max_stops: usize,
    /// Frames of a video clip and their side in pixels (0: the dataset has no video).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub video_frames: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub video_size: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            history_len: 30,
            history_step_s: 1.0,
            future_len: 15,
            future_step_s: 2.0,
            imu_len: 300,
            imu_rate_hz: 10.0,
            max_stops: 8,
            video_frames: 0,
            video_size: 0,
        }
    }
}
