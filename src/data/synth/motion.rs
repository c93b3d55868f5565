//! Vehicle kinematics along a planned path: corners are rounded (quadratic fillets), the speed
//! limit comes from the road, the curvature (lateral acceleration), halts at intersections and
//! the conditions (congestion, weather, peak day, driver), and a forward/backward pass enforces
//! acceleration and braking limits. The result is a time-stamped track that can be queried at
//! any time for position, speed, heading, longitudinal acceleration and yaw rate.

use super::world::{P2, dist};
use crate::data::sample::RoadClass;

/// One vertex of a planned path.
#[derive(Clone, Copy, Debug)]
pub struct PathPt {
    pub p: P2,
    /// Speed limit on the segment that starts here, m/s.
    pub limit: f64,
    pub class: RoadClass,
    /// Seconds the vehicle is held here (red light, stop sign); 0 for none.
    pub halt_s: f64,
    /// The traffic light of the intersection here (its node), if it has one.
    pub light: Option<usize>,
}

/// The vehicle reaching a traffic light: when, where, and how long it was held (0 = it was
/// green and the vehicle drove through).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LightPass {
    pub node: usize,
    pub p: P2,
    pub t: f64,
    pub halt_s: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct DrivenPt {
    pub t: f64,
    pub p: P2,
    pub v: f64,
    /// Heading in radians, math convention (counter-clockwise from east).
    pub yaw: f64,
    pub class: RoadClass,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct State {
    pub p: P2,
    pub v: f64,
    pub yaw: f64,
    pub accel: f64,
    pub yaw_rate: f64,
}

pub struct Driver {
    pub accel: f64,
    pub decel: f64,
    pub lateral: f64,
}

#[cfg(test)]
impl Driver {
    /// The driver of the tests: 1.5 m/s² up, 2.5 m/s² braking and sideways.
    pub const TEST: Driver = Driver {
        accel: 1.5,
        decel: 2.5,
        lateral: 2.5,
    };
}

/// The whole route's track, strictly ordered in time (dwells are two points at one place).
#[derive(Default)]
pub struct DrivenPath {
    pub pts: Vec<DrivenPt>,
    /// The traffic lights reached, in time order.
    pub lights: Vec<LightPass>,
}

fn wrap(a: f64) -> f64 {
    let t = std::f64::consts::TAU;
    (a + std::f64::consts::PI).rem_euclid(t) - std::f64::consts::PI
}

impl DrivenPath {
    /// A track that starts standing at `p` at time `t`, heading east.
    pub fn standing(t: f64, p: P2, class: RoadClass) -> DrivenPath {
        DrivenPath {
            pts: vec![DrivenPt {
                t,
                p,
                v: 0.0,
                yaw: 0.0,
                class,
            }],
            lights: Vec::new(),
        }
    }

    pub fn end_time(&self) -> f64 {
        self.pts.last().map(|p| p.t).unwrap_or(0.0)
    }
    pub fn last(&self) -> DrivenPt {
        *self.pts.last().expect("track has points")
    }

    /// Stay in place until `t`.
    pub fn dwell_until(&mut self, t: f64) {
        let mut last = self.last();
        if t > last.t {
            last.t = t;
            last.v = 0.0;
            self.pts.push(last);
        }
    }

    /// Position, speed, heading, acceleration and yaw rate at time `t` (clamped to the track).
    pub fn state_at(&self, t: f64) -> State {
        let pts = &self.pts;
        if t <= pts[0].t {
            let p = pts[0];
            return State {
                p: p.p,
                v: p.v,
                yaw: p.yaw,
                accel: 0.0,
                yaw_rate: 0.0,
            };
        }
        let i = pts.partition_point(|q| q.t <= t);
        if i >= pts.len() {
            let p = *pts.last().unwrap();
            return State {
                p: p.p,
                v: 0.0,
                yaw: p.yaw,
                accel: 0.0,
                yaw_rate: 0.0,
            };
        }
        let (a, b) = (pts[i - 1], pts[i]);
        let dt = (b.t - a.t).max(1e-9);
        let u = (t - a.t) / dt;
        let dyaw = wrap(b.yaw - a.yaw);
        State {
            p: [
                a.p[0] + u * (b.p[0] - a.p[0]),
                a.p[1] + u * (b.p[1] - a.p[1]),
            ],
            v: a.v + u * (b.v - a.v),
            yaw: wrap(a.yaw + u * dyaw),
            accel: (b.v - a.v) / dt,
            yaw_rate: if a.v + b.v > 0.05 { dyaw / dt } else { 0.0 },
        }
    }

    /// Road class at time `t`.
    pub fn class_at(&self, t: f64) -> RoadClass {
        let i = self
            .pts
            .partition_point(|q| q.t <= t)
            .clamp(1, self.pts.len());
        self.pts[i - 1].class
    }

    /// Drive along `path` from the track's end (standing still) to the path's end (stopping).
    /// `factor(t)` scales speed limits for the conditions at time t (congestion, weather...).
    pub fn drive(&mut self, path: &[PathPt], driver: &Driver, factor: &dyn Fn(f64) -> f64) {
        let pts = resample(&smooth(path), 2.0);
        if pts.len() < 2 {
            return;
        }
        let n = pts.len();
        let t_start = self.end_time();
        let f = factor(t_start);
        let v = speed_profile(&pts, driver, f);
        let mut t = t_start;
        let mut yaw = self.pts.last().map(|q| q.yaw).unwrap_or(0.0);
        for i in 0..n {
            if i > 0 {
                let ds = dist(pts[i - 1].p, pts[i].p);
                let vs = v[i - 1] + v[i];
                t += if ds <= 0.0 {
                    0.0
                } else {
                    2.0 * ds / vs.max(0.1)
                };
            }
            if i + 1 < n && dist(pts[i].p, pts[i + 1].p) > 1e-6 {
                yaw = (pts[i + 1].p[1] - pts[i].p[1]).atan2(pts[i + 1].p[0] - pts[i].p[0]);
            }
            let class = pts[i].class;
            let last_t = self.end_time();
            self.pts.push(DrivenPt {
                t: t.max(last_t + 1e-3),
                p: pts[i].p,
                v: v[i],
                yaw,
                class,
            });
            t = t.max(last_t + 1e-3);
            if let Some(node) = pts[i].light {
                let held = if i + 1 < n { pts[i].halt_s } else { 0.0 };
                self.lights.push(LightPass {
                    node,
                    p: pts[i].p,
                    t,
                    halt_s: held,
                });
            }
            if pts[i].halt_s > 0.0 && i + 1 < n {
                t += pts[i].halt_s;
                self.dwell_until(t);
            }
        }
    }
}

/// The speed at each point of a resampled path: the limit (times `f`), slower in curves (the
/// driver's lateral acceleration), zero at halts and both ends, reached and left within the
/// driver's acceleration and braking.
fn speed_profile(pts: &[PathPt], driver: &Driver, f: f64) -> Vec<f64> {
    let n = pts.len();
    // Curvature limit from the heading change over neighbouring points.
    let mut vmax: Vec<f64> = pts.iter().map(|q| q.limit * f).collect();
    for i in 1..n - 1 {
        let (a, b, c) = (pts[i - 1].p, pts[i].p, pts[i + 1].p);
        let h1 = (b[1] - a[1]).atan2(b[0] - a[0]);
        let h2 = (c[1] - b[1]).atan2(c[0] - b[0]);
        let ds = 0.5 * (dist(a, b) + dist(b, c));
        let kappa = wrap(h2 - h1).abs() / ds.max(0.1);
        if kappa > 1e-4 {
            vmax[i] = vmax[i].min((driver.lateral / kappa).sqrt().max(1.0));
        }
    }
    for (i, q) in pts.iter().enumerate() {
        if q.halt_s > 0.0 {
            vmax[i] = 0.0;
        }
    }
    vmax[0] = 0.0;
    vmax[n - 1] = 0.0;
    let mut v = vmax.clone();
    for i in 1..n {
        let ds = dist(pts[i - 1].p, pts[i].p);
        v[i] = v[i].min((v[i - 1] * v[i - 1] + 2.0 * driver.accel * ds).sqrt());
    }
    for i in (0..n - 1).rev() {
        let ds = dist(pts[i].p, pts[i + 1].p);
        v[i] = v[i].min((v[i + 1] * v[i + 1] + 2.0 * driver.decel * ds).sqrt());
    }
    v
}

/// Rounds every corner with a quadratic Bezier fillet (cut back up to 12 m or 45% of the
/// adjacent segments), so heading changes over a turn instead of jumping.
fn smooth(path: &[PathPt]) -> Vec<PathPt> {
    if path.len() < 3 {
        return path.to_vec();
    }
    let mut out = vec![path[0]];
    for i in 1..path.len() - 1 {
        let (a, b, c) = (path[i - 1].p, path[i].p, path[i + 1].p);
        let (l1, l2) = (dist(a, b), dist(b, c));
        if l1 < 1e-6 || l2 < 1e-6 {
            out.push(path[i]);
            continue;
        }
        let cut = 12.0_f64.min(0.45 * l1).min(0.45 * l2);
        let p0 = [
            b[0] + (a[0] - b[0]) * cut / l1,
            b[1] + (a[1] - b[1]) * cut / l1,
        ];
        let p2 = [
            b[0] + (c[0] - b[0]) * cut / l2,
            b[1] + (c[1] - b[1]) * cut / l2,
        ];
        // The incoming segment's attributes hold until the corner's middle.
        let prev = path[i - 1];
        for k in 0..=6 {
            let u = k as f64 / 6.0;
            let w = [(1.0 - u) * (1.0 - u), 2.0 * u * (1.0 - u), u * u];
            let p = [
                w[0] * p0[0] + w[1] * b[0] + w[2] * p2[0],
                w[0] * p0[1] + w[1] * b[1] + w[2] * p2[1],
            ];
            let attrs = if k < 3 { prev } else { path[i] };
            let (halt_s, light) = if k == 3 {
                (path[i].halt_s, path[i].light)
            } else {
                (0.0, None)
            };
            out.push(PathPt {
                p,
                limit: attrs.limit.min(path[i].limit),
                class: attrs.class,
                halt_s,
                light,
            });
        }
    }
    out.push(*path.last().unwrap());
    out
}

/// Inserts points so no segment is longer than `step` meters; drops repeated points.
fn resample(path: &[PathPt], step: f64) -> Vec<PathPt> {
    let mut out: Vec<PathPt> = Vec::new();
    for (i, q) in path.iter().enumerate() {
        if let Some(last) = out.last().copied() {
            let d = dist(last.p, q.p);
            if d < 1e-6 {
                let last = out.last_mut().unwrap();
                if q.halt_s > 0.0 {
                    last.halt_s = q.halt_s;
                }
                last.light = last.light.or(q.light);
                continue;
            }
            let k = (d / step).ceil() as usize;
            for j in 1..k {
                let u = j as f64 / k as f64;
                out.push(PathPt {
                    p: [
                        last.p[0] + u * (q.p[0] - last.p[0]),
                        last.p[1] + u * (q.p[1] - last.p[1]),
                    ],
                    halt_s: 0.0,
                    light: None,
                    ..path[i - 1]
                });
            }
        }
        out.push(*q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pp(x: f64, y: f64) -> PathPt {
        PathPt {
            p: [x, y],
            limit: 14.0,
            class: RoadClass::Local,
            halt_s: 0.0,
            light: None,
        }
    }

    #[test]
    fn respects_limits_and_slows_for_corners() {
        let mut tr = DrivenPath::standing(0.0, [0.0, 0.0], RoadClass::Local);
        let d = Driver::TEST;
        tr.drive(
            &[pp(0.0, 0.0), pp(300.0, 0.0), pp(300.0, 300.0)],
            &d,
            &|_| 1.0,
        );
        let mut vmax: f64 = 0.0;
        for w in tr.pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(b.t > a.t, "time increases");
            let acc = (b.v - a.v) / (b.t - a.t);
            assert!(
                acc < 1.5 + 1e-6 && acc > -2.5 - 1e-6,
                "acceleration {acc} within limits"
            );
            vmax = vmax.max(b.v);
        }
        assert!(vmax <= 14.0 + 1e-9 && vmax > 12.0);
        let corner = tr
            .pts
            .iter()
            .min_by(|a, b| dist(a.p, [300.0, 0.0]).total_cmp(&dist(b.p, [300.0, 0.0])))
            .unwrap();
        assert!(corner.v < 7.0, "slows in the corner: {}", corner.v);
        assert_eq!(tr.last().v, 0.0);
        let s = tr.state_at(tr.end_time() / 2.0);
        assert!(s.v > 0.0);
    }
}
