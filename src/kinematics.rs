//! Short-term kinematics of a vehicle from its GPS history, in the local frame: its velocity,
//! yaw rate, and constant-velocity / constant-turn-rate extrapolations. The constant-velocity
//! extrapolation is both the model's trajectory prior (the modes are offsets from it) and a
//! baseline of the evaluation; one implementation serves both.

use crate::data::sample::Sample;
use crate::frame::LocalFrame;

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

/// Yaw rate (rad/s, counter-clockwise positive, as in the local frame) from the last reported
/// courses of a moving vehicle; 0 when they are missing.
pub fn yaw_rate(s: &Sample) -> f64 {
    let moving: Vec<_> = s
        .history
        .iter()
        .filter(|f| f.heading.is_some() && f.speed.is_some_and(|v| v >= 1.0))
        .collect();
    if moving.len() < 2 {
        return 0.0;
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
