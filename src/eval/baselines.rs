//! Baselines, computed from the raw sample with the same local frame as the model.
//! - Constant velocity: the last fix's ground speed along its course (the receiver's Doppler
//!   velocity); along the frame heading when only the speed is reported; the displacement
//!   between the last two fixes when neither is.
//! - Constant turn rate (CTRV): the same speed, turning at the yaw rate of the last reported
//!   courses (clamped to +-0.5 rad/s).
//! - ETA: straight-line distance to each stop over the region's mean speed, where the mean speed
//!   of a region is total distance over total arrival time on the training split.
//! - Outcomes: the training split's base rates of on-time and delivered.
//! - Ridge: a linear model of the history (`ridge.rs`), fitted with the run.
//! - Next stop: nearest stop first (straight-line distance); same zone then nearest (stops in
//!   the vehicle's delivery zone first).

use crate::data::sample::{Region, Sample};
use crate::frame::LocalFrame;
pub use crate::kinematics::{
    constant_turn_rate, constant_velocity, constant_velocity_at, velocity, yaw_rate,
};
use std::collections::BTreeMap;

/// Mean speed per region (m/s) from (distance, arrival) pairs.
#[derive(Clone, Debug, Default)]
pub struct RegionSpeed {
    sums: BTreeMap<Region, (f64, f64)>,
}

impl RegionSpeed {
    pub fn add(&mut self, s: &Sample) {
        let Some(t) = &s.target else { return };
        let frame = LocalFrame::from_history(&s.history);
        for (st, a) in s.stops.iter().zip(&t.arrival_s) {
            if let Some(a) = a {
                let (x, y) = frame.to_local(st.lat, st.lon);
                let e = self.sums.entry(s.region).or_default();
                e.0 += (x * x + y * y).sqrt();
                e.1 += a;
            }
        }
    }
    pub fn merge(&mut self, o: &RegionSpeed) {
        for (r, (d, t)) in &o.sums {
            let e = self.sums.entry(*r).or_default();
            e.0 += d;
            e.1 += t;
        }
    }
    /// Mean speed of a region; the all-region mean for a region never seen.
    pub fn speed(&self, r: Region) -> f64 {
        let (d, t) = self.sums.get(&r).copied().unwrap_or_else(|| {
            self.sums
                .values()
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        if t > 0.0 { (d / t).max(0.1) } else { 5.0 }
    }
}

/// Distance-over-mean-speed ETA for each stop, seconds.
pub fn eta_distance_over_speed(s: &Sample, frame: &LocalFrame, speed: f64) -> Vec<f64> {
    s.stops
        .iter()
        .map(|st| {
            let (x, y) = frame.to_local(st.lat, st.lon);
            (x * x + y * y).sqrt() / speed
        })
        .collect()
}

/// Scores for nearest-stop-first (higher = sooner): minus the distance.
pub fn nearest_first_scores(s: &Sample, frame: &LocalFrame) -> Vec<f64> {
    s.stops
        .iter()
        .map(|st| {
            let (x, y) = frame.to_local(st.lat, st.lon);
            -(x * x + y * y).sqrt()
        })
        .collect()
}

/// Scores for same-zone-then-nearest: stops in the vehicle's zone before all others.
pub fn same_zone_nearest_scores(s: &Sample, frame: &LocalFrame) -> Vec<f64> {
    nearest_first_scores(s, frame)
        .into_iter()
        .zip(&s.stops)
        .map(|(d, st)| {
            if s.context.zone.is_some() && st.zone != s.context.zone {
                d - 1e9
            } else {
                d
            }
        })
        .collect()
}

/// Scores for "same zone, then neighbouring zone, then nearest" (`zones::rule_key`: zone ids one
/// row or column apart in the Amazon convention are neighbours; without that convention it is
/// "same zone, then nearest").
pub fn zone_neighbour_scores(s: &Sample, frame: &LocalFrame) -> Vec<f64> {
    let here = s.context.zone.as_deref();
    nearest_first_scores(s, frame)
        .into_iter()
        .zip(&s.stops)
        .map(|(d, st)| -crate::zones::rule_key(-d, st.zone.as_deref(), here))
        .collect()
}

/// What the baselines learn from the training split: mean speed per region, base rates.
#[derive(Clone, Debug, Default)]
pub struct TrainStats {
    /// The run's ridge regression (fitted on the run's training split, not the evaluated one).
    pub ridge: Option<std::sync::Arc<super::ridge::Ridge>>,
    pub speeds: RegionSpeed,
    pub on_time: (u64, u64),
    pub delivered: (u64, u64),
}

impl TrainStats {
    pub fn add(&mut self, s: &Sample) {
        self.speeds.add(s);
        if let Some(t) = &s.target {
            for o in t.on_time.iter().flatten() {
                self.on_time.0 += 1;
                self.on_time.1 += *o as u64;
            }
            if let Some(d) = t.delivered {
                self.delivered.0 += 1;
                self.delivered.1 += d as u64;
            }
        }
    }
    pub fn merge(&mut self, o: &TrainStats) {
        self.speeds.merge(&o.speeds);
        self.on_time.0 += o.on_time.0;
        self.on_time.1 += o.on_time.1;
        self.delivered.0 += o.delivered.0;
        self.delivered.1 += o.delivered.1;
    }
    pub fn on_time_rate(&self) -> f64 {
        if self.on_time.0 == 0 {
            0.5
        } else {
            self.on_time.1 as f64 / self.on_time.0 as f64
        }
    }
    pub fn delivered_rate(&self) -> f64 {
        if self.delivered.0 == 0 {
            0.5
        } else {
            self.delivered.1 as f64 / self.delivered.0 as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::{Context, Fix, Region};

    /// (t, lat, lon, speed, heading) of each fix.
    type FixRow = (f64, f64, f64, Option<f32>, Option<f32>);

    fn sample(fixes: Vec<FixRow>) -> Sample {
        let enu = crate::frame::Enu::new(40.0, -3.0);
        let history = fixes
            .into_iter()
            .map(|(t, e, n, v, h)| {
                let (lat, lon) = enu.to_lat_lon(e, n);
                Fix {
                    t,
                    lat,
                    lon,
                    speed: v,
                    heading: h,
                    accuracy: None,
                }
            })
            .collect::<Vec<_>>();
        Sample {
            video: None,
            key: "k".into(),
            route_id: "r".into(),
            region: Region::Urban,
            t0: history.last().unwrap().t,
            context: Context {
                hour: 10.0,
                weekday: 0,
                weather: None,
                peak_day: None,
                road_class: None,
                zone: None,
                zone_density: None,
                depot: None,
            },
            history,
            imu: None,
            images: vec![],
            stops: vec![],
            horizons_s: Vec::new(),
            plan_route: false,
            target: None,
        }
    }

    #[test]
    fn cv_and_ctrv_follow_speed_course_and_turn() {
        // Heading east at 10 m/s, turning right (clockwise) by 10 degrees per second.
        let s = sample(vec![
            (0.0, -20.0, 0.0, Some(10.0), Some(70.0)),
            (1.0, -10.0, 0.0, Some(10.0), Some(80.0)),
            (2.0, 0.0, 0.0, Some(10.0), Some(90.0)),
        ]);
        let f = LocalFrame::from_history(&s.history);
        assert!((f.heading_deg - 90.0).abs() < 1e-6);
        let cv = constant_velocity(&s, &f, 2, 1.0);
        assert!((cv[1][0] - 20.0).abs() < 1e-6 && cv[1][1].abs() < 1e-6);
        let w = yaw_rate(&s);
        assert!(
            (w + 10f64.to_radians()).abs() < 1e-9,
            "right turn is negative yaw: {w}"
        );
        let ctrv = constant_turn_rate(&s, &f, 9, 1.0);
        // After 9 s at -10 deg/s the course has turned 90 degrees to the right: the arc of radius
        // v/|w| ends at (r, -r).
        let r = 10.0 / 10f64.to_radians();
        assert!(
            (ctrv[8][0] - r).abs() < 0.05 && (ctrv[8][1] + r).abs() < 0.05,
            "{:?}",
            ctrv[8]
        );
        // Without course, the speed goes along the frame heading from the positions.
        let s2 = sample(vec![
            (0.0, 0.0, -30.0, Some(3.0), None),
            (1.0, 0.0, 0.0, Some(3.0), None),
        ]);
        let f2 = LocalFrame::from_history(&s2.history);
        assert!((f2.heading_deg - 0.0).abs() < 1e-6);
        assert_eq!(constant_velocity(&s2, &f2, 1, 2.0)[0], [6.0, 0.0]);
        assert_eq!(yaw_rate(&s2), 0.0);
    }
}
