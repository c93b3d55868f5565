//! The map raster: a heading-up, top-down image of the roads (by class), buildings, parks, the
//! depot and the route's remaining stops around the vehicle. It shows the road geometry ahead,
//! which the GPS history alone cannot.

use super::world::{Area, P2};
use crate::data::sample::{Rgb8, RoadClass};
use crate::draw::Canvas;

#[derive(Clone, Copy, Debug)]
pub struct RasterSpec {
    pub size: u32,
    pub m_per_px: f64,
    /// Pixel of the vehicle (x right, y down): below the centre, so more of the road ahead shows.
    pub anchor: [f64; 2],
}

impl Default for RasterSpec {
    fn default() -> Self {
        RasterSpec {
            size: 64,
            m_per_px: 4.0,
            anchor: [32.0, 44.0],
        }
    }
}

const GROUND: [u8; 3] = [236, 231, 218];
const PARK: [u8; 3] = [172, 208, 158];
const BUILDING: [u8; 3] = [176, 170, 164];
const LOCAL: [u8; 3] = [255, 255, 255];
const ARTERIAL: [u8; 3] = [247, 206, 112];
const HIGHWAY: [u8; 3] = [232, 140, 84];
const STOP: [u8; 3] = [214, 38, 38];
const JAM: [u8; 3] = [120, 30, 150];
const DEPOT: [u8; 3] = [38, 84, 214];

/// Renders the raster around `origin` (area meters) facing `heading_deg` (clockwise from north).
/// Jammed segments (`traffic` below 0.5) are drawn in the live-traffic colour over their road.
pub fn render(
    area: &Area,
    origin: P2,
    heading_deg: f64,
    stops: &[P2],
    traffic: &[f64],
    spec: &RasterSpec,
) -> Rgb8 {
    let n = spec.size as i32;
    let mut cv = Canvas::new(n, n, GROUND);
    let h = heading_deg.to_radians();
    let (sh, ch) = (h.sin(), h.cos());
    let m = spec.m_per_px;
    let to_px = |q: P2| -> [f64; 2] {
        let (e, nn) = (q[0] - origin[0], q[1] - origin[1]);
        let fwd = e * sh + nn * ch;
        let left = -e * ch + nn * sh;
        [spec.anchor[0] - left / m, spec.anchor[1] - fwd / m]
    };
    let reach = m * (spec.size as f64) * 0.9;
    let near = |lo: P2, hi: P2| {
        lo[0] <= origin[0] + reach
            && hi[0] >= origin[0] - reach
            && lo[1] <= origin[1] + reach
            && hi[1] >= origin[1] - reach
    };
    let rect = |r: &super::world::Rect| {
        [
            to_px(r.min),
            to_px([r.max[0], r.min[1]]),
            to_px(r.max),
            to_px([r.min[0], r.max[1]]),
        ]
    };
    for r in &area.parks {
        if near(r.min, r.max) {
            cv.convex(&rect(r), PARK);
        }
    }
    for r in &area.buildings {
        if near(r.min, r.max) {
            cv.convex(&rect(r), BUILDING);
        }
    }
    for class in [RoadClass::Local, RoadClass::Arterial, RoadClass::Highway] {
        let (color, width_m) = match class {
            RoadClass::Local => (LOCAL, 7.0),
            RoadClass::Arterial => (ARTERIAL, 11.0),
            RoadClass::Highway => (HIGHWAY, 15.0),
        };
        for (ei, e) in area
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.class == class)
        {
            let lo = [
                e.pts.iter().map(|p| p[0]).fold(f64::MAX, f64::min),
                e.pts.iter().map(|p| p[1]).fold(f64::MAX, f64::min),
            ];
            let hi = [
                e.pts.iter().map(|p| p[0]).fold(f64::MIN, f64::max),
                e.pts.iter().map(|p| p[1]).fold(f64::MIN, f64::max),
            ];
            if !near(lo, hi) {
                continue;
            }
            let jammed = traffic.get(ei).is_some_and(|&t| t < 0.5);
            for w in e.pts.windows(2) {
                cv.segment(
                    to_px(w[0]),
                    to_px(w[1]),
                    (width_m / m).max(1.0),
                    if jammed { JAM } else { color },
                );
            }
        }
    }
    let depot = area.nodes[area.depot];
    if near(depot, depot) {
        cv.disc(to_px(depot), (12.0 / m).max(1.5), DEPOT);
    }
    for &s in stops {
        if near(s, s) {
            cv.disc(to_px(s), (6.0 / m).max(1.0), STOP);
        }
    }
    Rgb8 {
        width: spec.size,
        height: spec.size,
        data: cv.data,
    }
}
