//! Short-term kinematics of a vehicle from its GPS history, in the local frame: its velocity,
//! yaw rate, and constant-velocity / constant-turn-rate extrapolations. The constant-velocity
//! extrapolation is both the model's trajectory prior (the modes are offsets from it) and a
//! baseline of the evaluation; one implementation serves both.

use crate::data::sample::Sample;
use crate::frame::{Enu, LocalFrame};

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

/// Mean ground speed (m/s) over the history: the path's length over its time span; None with
/// fewer than two fixes or no time between them.
pub fn history_speed(s: &Sample, frame: &LocalFrame) -> Option<f64> {
    let pts: Vec<(f64, f64, f64)> = s
        .history
        .iter()
        .map(|h| {
            let (x, y) = frame.to_local(h.lat, h.lon);
            (h.t, x, y)
        })
        .collect();
    let span = pts.last()?.0 - pts.first()?.0;
    (pts.len() >= 2 && span > 0.0).then(|| {
        let path: f64 = pts
            .windows(2)
            .map(|w| (w[1].1 - w[0].1).hypot(w[1].2 - w[0].2))
            .sum();
        path / span
    })
}

/// The speed band of a mean speed, for evaluation slices: walking or standing, cycling or
/// crawling traffic, driving in town, fast roads and rail.
pub fn speed_band(v: f64) -> &'static str {
    match v {
        v if v < 2.0 => "00-02 m/s",
        v if v < 6.0 => "02-06 m/s",
        v if v < 15.0 => "06-15 m/s",
        _ => "15+ m/s",
    }
}

/// Constant-velocity future positions (meters, local frame) at `step` seconds apart.
pub fn constant_velocity(s: &Sample, frame: &LocalFrame, n: usize, step: f64) -> Vec<[f64; 2]> {
    let times: Vec<f64> = (1..=n).map(|k| k as f64 * step).collect();
    constant_velocity_at(s, frame, &times)
}

/// Constant-velocity positions (meters, local frame) at the given seconds after `t0`.
pub fn constant_velocity_at(s: &Sample, frame: &LocalFrame, times: &[f64]) -> Vec<[f64; 2]> {
    let (vx, vy) = velocity(s, frame);
    times.iter().map(|&t| [vx * t, vy * t]).collect()
}

/// Yaw rate (rad/s, counter-clockwise positive, as in the local frame) from the last reported
/// courses of a moving vehicle; when courses are not reported (GeoLife, many fleet CSVs), from
/// the turn between the last two displacements; 0 when neither is usable.
pub fn yaw_rate(s: &Sample) -> f64 {
    let moving: Vec<_> = s
        .history
        .iter()
        .filter(|f| f.heading.is_some() && f.speed.is_some_and(|v| v >= 1.0))
        .collect();
    if moving.len() < 2 {
        return yaw_rate_from_positions(s);
    }
    let k = moving.len().min(3);
    let (a, b) = (moving[moving.len() - k], moving[moving.len() - 1]);
    let dt = b.t - a.t;
    if dt <= 0.0 || dt > 10.0 {
        return 0.0;
    }
    let dh = ((b.heading.unwrap() - a.heading.unwrap()) as f64 + 540.0).rem_euclid(360.0) - 180.0;
    // Heading grows clockwise; the local frame's angle grows counter-clockwise.
    (-dh.to_radians() / dt).clamp(-0.5, 0.5)
}

/// Yaw rate from the last three fixes: the change of direction between the two displacements
/// over the time between their midpoints. 0 when the vehicle moves slower than 1 m/s on either
/// (GPS jitter would dominate) or the fixes are more than 30 s apart.
fn yaw_rate_from_positions(s: &Sample) -> f64 {
    let n = s.history.len();
    if n < 3 {
        return 0.0;
    }
    let (a, b, c) = (&s.history[n - 3], &s.history[n - 2], &s.history[n - 1]);
    let (dt1, dt2) = (b.t - a.t, c.t - b.t);
    if dt1 <= 0.0 || dt2 <= 0.0 || dt1 > 30.0 || dt2 > 30.0 {
        return 0.0;
    }
    let enu = Enu::new(c.lat, c.lon);
    let (pa, pb) = (enu.to_en(a.lat, a.lon), enu.to_en(b.lat, b.lon));
    let (d1, d2) = ((pb.0 - pa.0, pb.1 - pa.1), (-pb.0, -pb.1));
    if d1.0.hypot(d1.1) < dt1 || d2.0.hypot(d2.1) < dt2 {
        return 0.0;
    }
    let dth = (d2.1.atan2(d2.0) - d1.1.atan2(d1.0) + 3.0 * std::f64::consts::PI)
        .rem_euclid(2.0 * std::f64::consts::PI)
        - std::f64::consts::PI;
    (dth / (0.5 * (dt1 + dt2))).clamp(-0.5, 0.5)
}

/// Constant speed and turn rate future positions (meters, local frame).
pub fn constant_turn_rate(s: &Sample, frame: &LocalFrame, n: usize, step: f64) -> Vec<[f64; 2]> {
    let (vx, vy) = velocity(s, frame);
    let v = (vx * vx + vy * vy).sqrt();
    let mut th = vy.atan2(vx);
    let w = yaw_rate(s);
    let (mut x, mut y) = (0.0, 0.0);
    let sub = 10;
    let dt = step / sub as f64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        for _ in 0..sub {
            x += v * dt * (th + 0.5 * w * dt).cos();
            y += v * dt * (th + 0.5 * w * dt).sin();
            th += w * dt;
        }
        out.push([x, y]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::Fix;

    /// A vehicle on a circle: 10 m/s, turning left at `w` rad/s, fixes every 5 s, no courses.
    fn circle(w: f64) -> Sample {
        let enu = Enu::new(40.0, 116.0);
        let history = (0..6)
            .map(|k| {
                let t = 5.0 * k as f64;
                let (x, y) = if w == 0.0 {
                    (10.0 * t, 0.0)
                } else {
                    ((w * t).sin() * 10.0 / w, (1.0 - (w * t).cos()) * 10.0 / w)
                };
                let (lat, lon) = enu.to_lat_lon(x, y);
                Fix::at(t, lat, lon)
            })
            .collect();
        Sample {
            video: None,
            key: "k".into(),
            route_id: "r".into(),
            region: crate::data::sample::Region::Unknown,
            t0: 25.0,
            context: Default::default(),
            history,
            imu: None,
            images: Vec::new(),
            stops: Vec::new(),
            horizons_s: Vec::new(),
            plan_route: false,
            target: None,
        }
    }

    #[test]
    fn turn_rate_from_positions_when_courses_are_missing() {
        for w in [0.05, -0.08, 0.0] {
            let got = yaw_rate(&circle(w));
            assert!((got - w).abs() < 1e-3, "{w}: {got}");
        }
        // A parked vehicle's jitter is not a turn.
        let mut s = circle(0.05);
        for (k, f) in s.history.iter_mut().enumerate() {
            f.lat = 40.0 + 1e-6 * (k % 2) as f64;
            f.lon = 116.0 + 1e-6 * (k % 3) as f64;
        }
        assert_eq!(yaw_rate(&s), 0.0);
    }

    #[test]
    fn history_speed_is_the_path_over_the_time() {
        let s = circle(0.05);
        let frame = LocalFrame::new(40.0, 116.0, 0.0);
        // Chords of a 10 m/s circle: a little under 10 m/s.
        let v = history_speed(&s, &frame).unwrap();
        assert!((9.8..10.0).contains(&v), "{v}");
        assert_eq!(speed_band(v), "06-15 m/s");
        assert_eq!(speed_band(1.0), "00-02 m/s");
        assert_eq!(speed_band(30.0), "15+ m/s");
        let mut one = s.clone();
        one.history.truncate(1);
        assert_eq!(history_speed(&one, &frame), None);
    }
}
