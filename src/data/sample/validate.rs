//! A sample's checks: every field in range, lists of the lengths the dataset's spec says, errors
//! naming the field (`history[3].lat`).

use super::*;

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
            let expected = spec.map(|s| crate::data::video::Expected {
                frames: s.video_frames,
                size: s.video_size,
                window_s: s.history_len as f64 * s.history_step_s as f64,
            });
            crate::data::video::validate(v, self.t0, expected).map_err(|(f, m)| err(f, m))?;
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

    fn validate_target(&self, t: &Labels, spec: Option<&Spec>) -> Result<(), FieldError> {
        validate_future(t, spec)?;
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

/// A target's future: its step given, positions on the dataset's spec, each a valid position.
fn validate_future(t: &Labels, spec: Option<&Spec>) -> Result<(), FieldError> {
    if t.future.is_empty() {
        return Ok(());
    }
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
    Ok(())
}
