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
    pub target: Option<Target>,
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
pub struct Target {
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

/// A field of a record that failed validation: `field` is a path such as `history[3].lat`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.message)
    }
}

/// Largest |latitude| a sample may have, degrees: the local frame's longitude scale (cos lat)
/// vanishes at the poles, where a few meters east would be degrees of longitude.
pub const MAX_ABS_LAT: f64 = 85.0;

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn check_lat_lon(field: &str, lat: f64, lon: f64) -> Result<(), FieldError> {
    if !lat.is_finite() || !(-MAX_ABS_LAT..=MAX_ABS_LAT).contains(&lat) {
        return Err(err(
            format!("{field}.lat"),
            format!(
                "{lat} is not a latitude in [-85, 85] (the local frame cannot represent the polar caps)"
            ),
        ));
    }
    if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
        return Err(err(
            format!("{field}.lon"),
            format!("{lon} is not a longitude in [-180, 180]"),
        ));
    }
    Ok(())
}

fn check_finite(field: impl Into<String>, v: f64) -> Result<(), FieldError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(err(field, format!("{v} is not a finite number")))
    }
}

fn check_opt_range(field: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<(), FieldError> {
    match v {
        Some(x) if !x.is_finite() || x < lo || x > hi => {
            Err(err(field, format!("{x} is outside [{lo}, {hi}]")))
        }
        _ => Ok(()),
    }
}

impl Sample {
    /// A sample of route "r" in an urban area with only an identity, a decision time and a
    /// history: every other part absent (set the rest with struct update syntax).
    pub fn bare(key: &str, t0: f64, history: Vec<Fix>) -> Sample {
        Sample {
            key: key.into(),
            route_id: "r".into(),
            region: Region::Urban,
            t0,
            context: Context::default(),
            history,
            imu: None,
            video: None,
            images: Vec::new(),
            stops: Vec::new(),
            target: None,
            horizons_s: Vec::new(),
            plan_route: false,
        }
    }

    /// Checks values and, with a spec, shapes. Returns the first bad field.
    pub fn validate(&self, spec: Option<&Spec>) -> Result<(), FieldError> {
        self.validate_ids_and_context()?;
        self.validate_history(spec)?;
        self.validate_imu(spec)?;
        if let Some(v) = &self.video {
            let expected = spec.map(|s| super::video::Expected {
                frames: s.video_frames,
                size: s.video_size,
                window_s: s.history_len as f64 * s.history_step_s as f64,
            });
            super::video::validate(v, self.t0, expected).map_err(|(f, m)| err(f, m))?;
        }
        self.validate_images()?;
        self.validate_stops(spec)?;
        if let Some(t) = &self.target {
            self.validate_target(t, spec)?;
        }
        self.validate_horizons(spec.is_some())
    }

    /// The requested horizons: at most `MAX_HORIZONS`, positive, increasing, within a day; a
    /// request field only (`in_dataset`: a stored record, which must not carry it).
    fn validate_horizons(&self, in_dataset: bool) -> Result<(), FieldError> {
        let h = &self.horizons_s;
        if h.is_empty() {
            return Ok(());
        }
        if in_dataset {
            return Err(err(
                "horizons_s",
                "is a request field: a stored sample's horizons are its labels' times",
            ));
        }
        if h.len() > MAX_HORIZONS {
            return Err(err(
                "horizons_s",
                format!("{} horizons, at most {MAX_HORIZONS}", h.len()),
            ));
        }
        let mut prev = 0.0;
        for (i, &v) in h.iter().enumerate() {
            if !v.is_finite() || v <= prev || v > 86_400.0 {
                return Err(err(
                    format!("horizons_s[{i}]"),
                    format!("{v}: horizons must increase, each in (0, 86400] seconds"),
                ));
            }
            prev = v;
        }
        Ok(())
    }

    /// Key, route id, t0 and the context.
    fn validate_ids_and_context(&self) -> Result<(), FieldError> {
        if self.key.is_empty() || self.key.contains(['.', '/']) {
            return Err(err(
                "key",
                format!("{:?} must be non-empty without '.' or '/'", self.key),
            ));
        }
        if self.route_id.is_empty() {
            return Err(err("route_id", "must not be empty"));
        }
        check_finite("t0", self.t0)?;
        let c = &self.context;
        if !c.hour.is_finite() || !(0.0..24.0).contains(&c.hour) {
            return Err(err(
                "context.hour",
                format!("{} is outside [0, 24)", c.hour),
            ));
        }
        if c.weekday > 6 {
            return Err(err(
                "context.weekday",
                format!("{} is outside 0..=6", c.weekday),
            ));
        }
        check_opt_range("context.zone_density", c.zone_density, 0.0, 1.0)?;
        if let Some(d) = &c.depot {
            check_lat_lon("context.depot", d.lat, d.lon)?;
        }
        Ok(())
    }

    /// The GPS fixes: times increasing to t0, positions, speeds, headings, accuracies.
    fn validate_history(&self, spec: Option<&Spec>) -> Result<(), FieldError> {
        if self.history.is_empty() {
            return Err(err("history", "must hold at least one fix"));
        }
        if let Some(s) = spec
            && self.history.len() != s.history_len
        {
            return Err(err(
                "history",
                format!(
                    "has {} fixes, the dataset's spec says {}",
                    self.history.len(),
                    s.history_len
                ),
            ));
        }
        let mut prev_t = f64::NEG_INFINITY;
        for (i, f) in self.history.iter().enumerate() {
            let p = format!("history[{i}]");
            check_finite(format!("{p}.t"), f.t)?;
            if f.t <= prev_t {
                return Err(err(format!("{p}.t"), "times must increase"));
            }
            prev_t = f.t;
            check_lat_lon(&p, f.lat, f.lon)?;
            check_opt_range(&format!("{p}.speed"), f.speed, 0.0, 150.0)?;
            check_opt_range(&format!("{p}.heading"), f.heading, 0.0, 360.0)?;
            check_opt_range(&format!("{p}.accuracy"), f.accuracy, 0.0, 10_000.0)?;
        }
        if (self.history.last().unwrap().t - self.t0).abs() > 1e-3 {
            return Err(err("history", "the last fix must be at t0"));
        }
        Ok(())
    }

    /// The IMU rows, when given.
    fn validate_imu(&self, spec: Option<&Spec>) -> Result<(), FieldError> {
        let Some(imu) = &self.imu else {
            return Ok(());
        };
        if !imu.rate_hz.is_finite() || imu.rate_hz <= 0.0 {
            return Err(err(
                "imu.rate_hz",
                format!("{} must be positive", imu.rate_hz),
            ));
        }
        if imu.data.is_empty() {
            return Err(err("imu.data", "no rows (missing or empty array)"));
        }
        if let Some(s) = spec
            && imu.data.len() != s.imu_len
        {
            return Err(err(
                "imu.data",
                format!(
                    "has {} rows, the dataset's spec says {}",
                    imu.data.len(),
                    s.imu_len
                ),
            ));
        }
        for (i, row) in imu.data.iter().enumerate() {
            if row.iter().any(|v| !v.is_finite() || v.abs() > 1_000.0) {
                return Err(err(
                    format!("imu.data[{i}]"),
                    format!("{row:?} is not finite or out of range"),
                ));
            }
        }
        Ok(())
    }

    /// Image metadata and decoded pixels.
    fn validate_images(&self) -> Result<(), FieldError> {
        for (i, im) in self.images.iter().enumerate() {
            check_opt_range(&format!("images[{i}].m_per_px"), im.m_per_px, 1e-3, 1e4)?;
            check_opt_range(
                &format!("images[{i}].heading_deg"),
                im.heading_deg,
                0.0,
                360.0,
            )?;
            match &im.pixels {
                Some(px)
                    if px.data.len() == (px.width * px.height * 3) as usize && px.width > 0 => {}
                Some(_) => {
                    return Err(err(
                        format!("images[{i}]"),
                        "pixel buffer does not match its size",
                    ));
                }
                None => {
                    return Err(err(
                        format!("images[{i}]"),
                        "no pixels (missing or undecoded image)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The stops: capacity, positions, windows, service times, volumes.
    fn validate_stops(&self, spec: Option<&Spec>) -> Result<(), FieldError> {
        if let Some(s) = spec
            && self.stops.len() > s.max_stops
        {
            return Err(err(
                "stops",
                format!(
                    "{} stops, the spec allows {}",
                    self.stops.len(),
                    s.max_stops
                ),
            ));
        }
        for (i, st) in self.stops.iter().enumerate() {
            let p = format!("stops[{i}]");
            check_lat_lon(&p, st.lat, st.lon)?;
            for (name, v) in [("tw_start", st.tw_start), ("tw_end", st.tw_end)] {
                if let Some(v) = v {
                    check_finite(format!("{p}.{name}"), v)?;
                }
            }
            if let (Some(a), Some(b)) = (st.tw_start, st.tw_end)
                && b < a
            {
                return Err(err(format!("{p}.tw_end"), "ends before tw_start"));
            }
            check_opt_range(&format!("{p}.service_s"), st.service_s, 0.0, 86_400.0)?;
            check_opt_range(&format!("{p}.volume_l"), st.volume_l, 0.0, 1e6)?;
        }
        Ok(())
    }

    fn validate_target(&self, t: &Target, spec: Option<&Spec>) -> Result<(), FieldError> {
        if !t.future.is_empty() {
            let step = t
                .future_step_s
                .ok_or_else(|| err("target.future_step_s", "required with target.future"))?;
            if let Some(s) = spec {
                if t.future.len() != s.future_len {
                    return Err(err(
                        "target.future",
                        format!(
                            "has {} positions, the dataset's spec says {}",
                            t.future.len(),
                            s.future_len
                        ),
                    ));
                }
                if (step - s.future_step_s).abs() > 1e-4 {
                    return Err(err(
                        "target.future_step_s",
                        format!("{step}, the spec says {}", s.future_step_s),
                    ));
                }
            }
            for (i, p) in t.future.iter().enumerate() {
                check_lat_lon(&format!("target.future[{i}]"), p[0], p[1])?;
            }
        }
        let n = self.stops.len();
        if !t.arrival_s.is_empty() && t.arrival_s.len() != n {
            return Err(err(
                "target.arrival_s",
                format!("has {} entries for {n} stops", t.arrival_s.len()),
            ));
        }
        for (i, a) in t.arrival_s.iter().enumerate() {
            if let Some(a) = a {
                check_finite(format!("target.arrival_s[{i}]"), *a)?;
                if *a < 0.0 {
                    return Err(err(
                        format!("target.arrival_s[{i}]"),
                        format!("{a} is negative"),
                    ));
                }
            }
        }
        if !t.on_time.is_empty() && t.on_time.len() != n {
            return Err(err(
                "target.on_time",
                format!("has {} entries for {n} stops", t.on_time.len()),
            ));
        }
        if let Some(k) = t.next_stop
            && k >= n
        {
            return Err(err(
                "target.next_stop",
                format!("{k} but there are {n} stops"),
            ));
        }
        Ok(())
    }
}
