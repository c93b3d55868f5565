//! Traffic-light phases, consistent with the route the vehicle drove.
//!
//! Every intersection that may halt the vehicle (`Area::halts`) has a light. Where the route
//! reaches one ([`LightPass`]), its phase follows what the vehicle did: held there, the light
//! turned red 20 to 30 s before the vehicle reached it (and before it began to brake, so a
//! camera sees red before the IMU and GPS see braking) and stayed red until it left; driven
//! through, it was green over the approach. Either way the colour on the approach tells what the
//! vehicle will do there, which nothing else in a sample does. Elsewhere in time a light cycles on its own fixed phase. Nothing here draws from a
//! route's random stream: a dataset with video has the same trajectories as one without.

use super::motion::{DrivenPath, LightPass};
use crate::seed;

/// The colour a light shows.
pub use crate::data::sample::Light as Phase;

/// Seconds of green shown on the approach to a light the vehicle drives through, and before a
/// light it is held at turns red.
const APPROACH_S: f64 = 40.0;
/// Least seconds a light the vehicle is held at shows red before the vehicle gets there.
const RED_LEAD_S: f64 = 20.0;
/// Seconds a light stays green after the vehicle passed it.
const AFTER_S: f64 = 3.0;
/// The free-running cycle of a light nobody is approaching, seconds, and its red share.
const CYCLE_S: f64 = 60.0;
const RED_SHARE: f64 = 0.45;

/// The lights of one route's track.
pub struct Lights<'a> {
    seed: u64,
    route: u64,
    track: &'a DrivenPath,
    /// When each pass's light turned red (held passes; `f64::INFINITY` for green passes).
    red_from: Vec<f64>,
}

impl<'a> Lights<'a> {
    pub fn new(seed: u64, route: usize, track: &'a DrivenPath) -> Self {
        let red_from = track
            .lights
            .iter()
            .enumerate()
            .map(|(i, pass)| {
                if pass.halt_s <= 0.0 {
                    return f64::INFINITY;
                }
                // Red shows 20 to 30 s before the vehicle gets there, and at least 1.5 s before
                // it starts braking.
                let h = seed::hash(seed, "light-lead", &[route as u64, i as u64]);
                let lead = pass.t - RED_LEAD_S - 10.0 * seed::unit(h);
                lead.min(braking_start(track, pass.t) - 1.5)
            })
            .collect();
        Lights {
            seed,
            route: route as u64,
            track,
            red_from,
        }
    }

    /// The phase of the light at `node` at time `t`.
    pub fn phase(&self, node: usize, t: f64) -> Phase {
        let mut green = false;
        for (pass, &red_from) in self.track.lights.iter().zip(&self.red_from) {
            if pass.node != node {
                continue;
            }
            if t >= red_from && t <= pass.t + pass.halt_s {
                return Phase::Red;
            }
            let start = red_from.min(pass.t) - APPROACH_S;
            let end = if pass.halt_s > 0.0 {
                red_from
            } else {
                pass.t + AFTER_S
            };
            green |= t >= start && t < end;
        }
        if green {
            return Phase::Green;
        }
        let h = seed::hash(self.seed, "light-offset", &[self.route, node as u64]);
        if (t + CYCLE_S * seed::unit(h)).rem_euclid(CYCLE_S) < RED_SHARE * CYCLE_S {
            Phase::Red
        } else {
            Phase::Green
        }
    }

    /// The next light the vehicle reaches (or is held at) between `t0` and `until`, with its
    /// phase at `t0`.
    pub fn ahead(&self, t0: f64, until: f64) -> Option<(LightPass, Phase)> {
        self.track
            .lights
            .iter()
            .find(|p| p.t + p.halt_s > t0 && p.t <= until)
            .map(|p| (*p, self.phase(p.node, t0)))
    }
}

/// When the vehicle began braking for a halt reached at `t`: walking back from `t`, the last
/// time its speed was not higher than just before.
fn braking_start(track: &DrivenPath, t: f64) -> f64 {
    let pts = &track.pts;
    let mut j = pts.partition_point(|q| q.t < t).min(pts.len() - 1);
    while j > 0 && pts[j - 1].v > pts[j].v {
        j -= 1;
    }
    pts[j].t
}

#[cfg(test)]
mod tests {
    use super::super::motion::{Driver, PathPt};
    use super::*;
    use crate::data::sample::RoadClass;

    fn track(halt_s: f64) -> DrivenPath {
        let pp = |x: f64, light: Option<usize>, halt_s: f64| PathPt {
            p: [x, 0.0],
            limit: 14.0,
            class: RoadClass::Local,
            halt_s,
            light,
        };
        let mut tr = DrivenPath::standing(0.0, [0.0, 0.0], RoadClass::Local);
        let d = Driver::TEST;
        tr.drive(
            &[
                pp(0.0, None, 0.0),
                pp(400.0, Some(7), halt_s),
                pp(800.0, None, 0.0),
            ],
            &d,
            &|_| 1.0,
        );
        tr
    }

    /// Held at a light: red from before the braking until it leaves, green on the approach
    /// before; the pass is recorded where the vehicle stood.
    #[test]
    fn a_held_vehicle_sees_red_before_it_brakes() {
        let tr = track(20.0);
        assert_eq!(tr.lights.len(), 1);
        let pass = tr.lights[0];
        assert_eq!((pass.node, pass.halt_s), (7, 20.0));
        assert!((pass.p[0] - 400.0).abs() < 1e-6);
        let lights = Lights::new(1, 0, &tr);
        let brake = braking_start(&tr, pass.t);
        assert!(pass.t - brake > 3.0, "braking takes seconds at 14 m/s");
        // Cruising before braking starts, and the speed only falls after it.
        assert!((tr.state_at(brake - 0.5).v - 14.0).abs() < 1e-6);
        assert_eq!(lights.phase(7, brake - 1.0), Phase::Red);
        assert_eq!(lights.phase(7, pass.t - RED_LEAD_S + 0.1), Phase::Red);
        assert_eq!(lights.phase(7, pass.t + 19.0), Phase::Red);
        assert_eq!(lights.phase(7, pass.t - RED_LEAD_S - 10.5), Phase::Green);
        let (p, ph) = lights.ahead(brake - 1.0, brake + 30.0).unwrap();
        assert_eq!((p.node, ph), (7, Phase::Red));
    }

    /// Driven through: green all the way; nothing ahead after it.
    #[test]
    fn a_vehicle_driving_through_sees_green() {
        let tr = track(0.0);
        let pass = tr.lights[0];
        let lights = Lights::new(1, 0, &tr);
        for dt in [-30.0, -10.0, -1.0, 0.0, 2.0] {
            assert_eq!(lights.phase(7, pass.t + dt), Phase::Green, "at {dt}");
        }
        assert_eq!(
            lights.ahead(pass.t - 10.0, pass.t + 5.0).unwrap().1,
            Phase::Green
        );
        assert!(lights.ahead(pass.t + 1.0, pass.t + 30.0).is_none());
        assert!(lights.ahead(pass.t - 30.0, pass.t - 1.0).is_none());
    }
}
