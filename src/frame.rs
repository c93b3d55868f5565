//! The agent-centric local frame: meters, origin at the vehicle's last fix, x forward along its
//! heading, y to its left. A local tangent plane around the origin, scaled by the WGS84
//! ellipsoid's radii of curvature there (meridional for north, prime vertical for east), is
//! within 0.05% of the geodesic distance over the 2 km a sample spans up to 70 degrees of
//! latitude, 0.005% over 200 m (a test checks it against GeographicLib); a sphere was off by up
//! to 0.56%. It costs a few multiplications, which matters because every fix,
//! stop and future point of every sample goes through it.

use crate::data::sample::Fix;

/// WGS84 semi-major axis, meters.
pub const WGS84_A: f64 = 6_378_137.0;
/// WGS84 flattening.
pub const WGS84_F: f64 = 1.0 / 298.257_223_563;

/// East/north meters from an origin, through a local tangent plane.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Enu {
    pub lat0: f64,
    pub lon0: f64,
    m_per_deg_lat: f64,
    m_per_deg_lon: f64,
}

impl Enu {
    pub fn new(lat0: f64, lon0: f64) -> Self {
        let e2 = WGS84_F * (2.0 - WGS84_F);
        let phi = lat0.to_radians();
        let w = (1.0 - e2 * phi.sin().powi(2)).sqrt();
        // Radii of curvature at the origin: meridional (north) and prime vertical (east).
        let meridional = WGS84_A * (1.0 - e2) / (w * w * w);
        let prime_vertical = WGS84_A / w;
        Enu {
            lat0,
            lon0,
            m_per_deg_lat: meridional.to_radians(),
            m_per_deg_lon: prime_vertical.to_radians() * phi.cos(),
        }
    }
    /// (east, north) meters of a point.
    pub fn to_en(&self, lat: f64, lon: f64) -> (f64, f64) {
        let mut dlon = lon - self.lon0;
        if dlon > 180.0 {
            dlon -= 360.0;
        } else if dlon < -180.0 {
            dlon += 360.0;
        }
        (
            dlon * self.m_per_deg_lon,
            (lat - self.lat0) * self.m_per_deg_lat,
        )
    }
    /// (lat, lon) of a point given in (east, north) meters.
    pub fn to_lat_lon(&self, east: f64, north: f64) -> (f64, f64) {
        let lat = self.lat0 + north / self.m_per_deg_lat;
        let mut lon = self.lon0 + east / self.m_per_deg_lon;
        if lon > 180.0 {
            lon -= 360.0;
        } else if lon < -180.0 {
            lon += 360.0;
        }
        (lat, lon)
    }
}

/// The vehicle frame: origin and heading (degrees clockwise from north).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocalFrame {
    pub enu: Enu,
    pub heading_deg: f64,
    sin_h: f64,
    cos_h: f64,
}

impl LocalFrame {
    pub fn new(lat0: f64, lon0: f64, heading_deg: f64) -> Self {
        let h = heading_deg.to_radians();
        LocalFrame {
            enu: Enu::new(lat0, lon0),
            heading_deg,
            sin_h: h.sin(),
            cos_h: h.cos(),
        }
    }

    /// The frame a sample's history defines: the last fix, and the heading from
    /// [`frame_heading`]. The simulator renders its rasters in this same frame.
    pub fn from_history(history: &[Fix]) -> Self {
        let last = history.last().expect("history is validated non-empty");
        Self::new(last.lat, last.lon, frame_heading(history))
    }

    /// (forward, left) meters of a point.
    pub fn to_local(&self, lat: f64, lon: f64) -> (f64, f64) {
        let (e, n) = self.enu.to_en(lat, lon);
        self.rotate_en(e, n)
    }
    /// Rotates an (east, north) vector into (forward, left).
    pub fn rotate_en(&self, e: f64, n: f64) -> (f64, f64) {
        (
            e * self.sin_h + n * self.cos_h,
            -e * self.cos_h + n * self.sin_h,
        )
    }
    /// (lat, lon) of a point given in (forward, left) meters.
    pub fn to_lat_lon(&self, fwd: f64, left: f64) -> (f64, f64) {
        let e = fwd * self.sin_h - left * self.cos_h;
        let n = fwd * self.cos_h + left * self.sin_h;
        self.enu.to_lat_lon(e, n)
    }
}

/// Bearing (degrees clockwise from north, in [0, 360)) of an (east, north) vector.
pub fn bearing_deg(e: f64, n: f64) -> f64 {
    e.atan2(n).to_degrees().rem_euclid(360.0)
}

/// Minimum speed (m/s) at which a receiver's course over ground is trusted.
const MIN_SPEED_FOR_COURSE: f32 = 1.0;
/// Minimum displacement (m) for a heading taken from positions.
const MIN_DISPLACEMENT_M: f64 = 5.0;

/// Heading of the frame: the receiver's course at the last fix when moving; otherwise the
/// direction from the latest fix at least 5 m back to the last one; otherwise the last reported
/// course; otherwise north.
pub fn frame_heading(history: &[Fix]) -> f64 {
    let Some(last) = history.last() else {
        return 0.0;
    };
    if let (Some(h), Some(v)) = (last.heading, last.speed)
        && v >= MIN_SPEED_FOR_COURSE
        && h.is_finite()
    {
        return (h as f64).rem_euclid(360.0);
    }
    let enu = Enu::new(last.lat, last.lon);
    for f in history.iter().rev().skip(1) {
        let (e, n) = enu.to_en(f.lat, f.lon);
        if (e * e + n * n).sqrt() >= MIN_DISPLACEMENT_M {
            return bearing_deg(-e, -n);
        }
    }
    history
        .iter()
        .rev()
        .find_map(|f| f.heading)
        .map(|h| (h as f64).rem_euclid(360.0))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_axes() {
        let f = LocalFrame::new(47.6, -122.3, 90.0); // heading east
        let (lat, lon) = f.to_lat_lon(100.0, 0.0);
        assert!(lon > -122.3 && (lat - 47.6).abs() < 1e-9, "forward is east");
        let (x, y) = f.to_local(lat, lon);
        assert!((x - 100.0).abs() < 1e-6 && y.abs() < 1e-6);
        let (lat, lon) = f.to_lat_lon(0.0, 50.0);
        assert!(
            lat > 47.6 && (lon + 122.3).abs() < 1e-9,
            "left of east is north"
        );
        let (x, y) = f.to_local(lat, lon);
        assert!(x.abs() < 1e-6 && (y - 50.0).abs() < 1e-6);
    }

    /// Points a geodesic distance `s` away on the WGS84 ellipsoid (GeographicLib's direct
    /// problem) against the local frame's (east, north): the largest error relative to `s`.
    fn worst_relative_error(s: f64) -> f64 {
        use geographiclib_rs::{DirectGeodesic, Geodesic};
        let g = Geodesic::wgs84();
        let mut worst: f64 = 0.0;
        for lat0 in [-70.0, -33.9, 0.0, 23.1, 39.9, 47.6, 60.0, 70.0] {
            let enu = Enu::new(lat0, 116.3);
            for k in 0..12 {
                let azi = 30.0 * k as f64;
                let (lat, lon): (f64, f64) = g.direct(lat0, 116.3, azi, s);
                let (e, n) = enu.to_en(lat, lon);
                let (we, wn) = (s * azi.to_radians().sin(), s * azi.to_radians().cos());
                worst = worst.max((e - we).hypot(n - wn) / s);
            }
        }
        worst
    }

    #[test]
    fn the_tangent_plane_follows_the_wgs84_ellipsoid() {
        // A sphere of the mean radius is off by up to 0.5% (north at the equator, east at the
        // poles); the ellipsoid's radii at the origin leave only the plane's curvature error.
        let (near, far) = (worst_relative_error(200.0), worst_relative_error(2_000.0));
        // What is left grows with the distance and the latitude: 0.049% at 2 km at 70 degrees.
        assert!(near < 6e-5, "200 m: {near}");
        assert!(far < 6e-4, "2 km: {far}");
    }

    #[test]
    fn heading_from_positions_when_slow() {
        let enu = Enu::new(10.0, 20.0);
        let mk = |e: f64, n: f64, t: f64| {
            let (lat, lon) = enu.to_lat_lon(e, n);
            Fix {
                t,
                lat,
                lon,
                speed: Some(0.2),
                heading: Some(270.0),
                accuracy: None,
            }
        };
        let h = vec![
            mk(-20.0, -20.0, 0.0),
            mk(-1.0, -1.0, 1.0),
            mk(0.0, 0.0, 2.0),
        ];
        assert!((frame_heading(&h) - 45.0).abs() < 0.01);
    }
}
