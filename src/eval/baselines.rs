//! Baselines, computed from the raw sample with the same local frame as the model.
//! - Constant velocity: the last fix's ground speed along its course (the receiver's Doppler
//!   velocity); along the frame heading when only the speed is reported; the displacement
//!   between the last two fixes when neither is.
//! - ETA: straight-line distance to each stop over the region's mean speed, where the mean speed
//!   of a region is total distance over total arrival time on the training split.

use crate::data::sample::{Region, Sample};
use crate::frame::LocalFrame;
use std::collections::BTreeMap;

/// Velocity (forward, left) in m/s in the sample's local frame.
pub fn velocity(s: &Sample, frame: &LocalFrame) -> (f64, f64) {
    let last = s.history.last().expect("validated");
    if let (Some(v), Some(h)) = (last.speed, last.heading) {
        let rel = (h as f64 - frame.heading_deg).to_radians();
        return (v as f64 * rel.cos(), -(v as f64) * rel.sin());
    }
    if let Some(v) = last.speed {
        // No course (receivers drop it when slow): the speed along the frame's heading, which
        // then comes from the positions.
        return (v as f64, 0.0);
    }
    if s.history.len() >= 2 {
        let prev = &s.history[s.history.len() - 2];
        let (x, y) = frame.to_local(prev.lat, prev.lon);
        let dt = (last.t - prev.t).max(1e-3);
        return (-x / dt, -y / dt);
    }
    (0.0, 0.0)
}

/// Constant-velocity future positions (meters, local frame) at `step` seconds apart.
pub fn constant_velocity(s: &Sample, frame: &LocalFrame, n: usize, step: f64) -> Vec<[f64; 2]> {
    let (vx, vy) = velocity(s, frame);
    (1..=n)
        .map(|k| [vx * k as f64 * step, vy * k as f64 * step])
        .collect()
}

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
