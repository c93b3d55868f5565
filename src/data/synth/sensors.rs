//! Sensor models: GPS fixes with time-correlated noise that grows with building density (urban
//! canyons), Doppler speed and course, and an IMU derived from the motion (braking before a stop
//! shows in `ax`, turning in `ay` and `gz`).

use super::motion::DrivenPath;
use super::world::Area;
use crate::data::sample::Fix;
use crate::frame::bearing_deg;
use crate::seed::{self as rng, SimRng, normal, uniform};

/// Correlated GPS error along a route, on a 1 s grid.
pub struct GpsNoise {
    t0: f64,
    err: Vec<[f64; 2]>,
    sigma: Vec<f64>,
}

impl GpsNoise {
    pub fn new(seed: u64, route_index: usize, area: &Area, track: &DrivenPath) -> Self {
        let mut rng = rng::stream(seed, "gps", &[route_index as u64]);
        let t0 = track.pts[0].t;
        let n = (track.end_time() - t0).ceil() as usize + 2;
        let rho: f64 = 0.93;
        let innov = (1.0 - rho * rho).sqrt();
        let mut err = Vec::with_capacity(n);
        let mut sigma = Vec::with_capacity(n);
        let mut e = [0.0, 0.0];
        for k in 0..n {
            let s = track.state_at(t0 + k as f64);
            let density = area.zone_density[area.zone_of(s.p)] as f64;
            let sg = area.params.gps_sigma_m * (0.5 + density);
            if k == 0 {
                e = [normal(&mut rng) * sg, normal(&mut rng) * sg];
            } else {
                e = [
                    rho * e[0] + innov * sg * normal(&mut rng),
                    rho * e[1] + innov * sg * normal(&mut rng),
                ];
            }
            err.push(e);
            sigma.push(sg);
        }
        GpsNoise { t0, err, sigma }
    }

    fn at(&self, t: f64) -> ([f64; 2], f64) {
        let x = (t - self.t0).max(0.0);
        let i = (x.floor() as usize).min(self.err.len() - 2);
        let u = (x - i as f64).clamp(0.0, 1.0);
        let (a, b) = (self.err[i], self.err[i + 1]);
        (
            [a[0] + u * (b[0] - a[0]), a[1] + u * (b[1] - a[1])],
            self.sigma[i],
        )
    }

    /// A GPS fix at time `t`, in area meters (east, north) plus the reported fields.
    pub fn fix(
        &self,
        area: &Area,
        track: &DrivenPath,
        t: f64,
        rng: &mut SimRng,
    ) -> (Fix, [f64; 2]) {
        let s = track.state_at(t);
        let (e, sg) = self.at(t);
        let p = [s.p[0] + e[0], s.p[1] + e[1]];
        let (lat, lon) = area.lat_lon(p);
        let speed = (s.v + 0.2 * normal(rng)).max(0.0);
        let heading = if s.v > 0.7 {
            let course = bearing_deg(s.yaw.cos(), s.yaw.sin());
            Some(
                ((course + normal(rng) * (2.0 + 6.0 / s.v.max(1.0))).rem_euclid(360.0) * 10.0)
                    .round()
                    / 10.0,
            )
        } else {
            None
        };
        let fix = Fix {
            t,
            lat: round7(lat),
            lon: round7(lon),
            speed: Some(((speed * 100.0).round() / 100.0) as f32),
            heading: heading.map(|h| (h % 360.0) as f32),
            accuracy: Some(((sg * uniform(rng, 0.8, 1.25)) * 10.0).round() as f32 / 10.0),
        };
        (fix, p)
    }
}

pub fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

/// Per-route IMU bias and road roughness.
pub struct ImuModel {
    pub gyro_bias: f64,
    pub roughness: f64,
}

impl ImuModel {
    pub fn new(rng: &mut SimRng, area: &Area) -> Self {
        let roughness = match area.region {
            crate::data::sample::Region::Rural => 0.35,
            crate::data::sample::Region::Suburban => 0.2,
            _ => 0.15,
        };
        ImuModel {
            gyro_bias: 0.004 * normal(rng),
            roughness,
        }
    }

    /// Rows `[ax, ay, az, gz]` at `rate` Hz, `n` of them, the last at `t_end`.
    pub fn read(
        &self,
        track: &DrivenPath,
        t_end: f64,
        rate: f64,
        n: usize,
        rng: &mut SimRng,
    ) -> Vec<[f32; 4]> {
        (0..n)
            .map(|k| {
                let t = t_end - (n - 1 - k) as f64 / rate;
                let s = track.state_at(t);
                let vib = self.roughness * (s.v / 10.0).min(2.0);
                [
                    (s.accel + 0.06 * normal(rng) + 0.3 * vib * normal(rng)) as f32,
                    (s.v * s.yaw_rate + 0.06 * normal(rng) + 0.3 * vib * normal(rng)) as f32,
                    (9.81 + 0.05 * normal(rng) + vib * normal(rng)) as f32,
                    (s.yaw_rate + self.gyro_bias + 0.004 * normal(rng)) as f32,
                ]
            })
            .collect()
    }
}
