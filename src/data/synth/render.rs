//! The map raster: a heading-up, top-down image of the roads (by class), buildings, parks, the
//! depot and the route's remaining stops around the vehicle. It shows the road geometry ahead,
//! which the GPS history alone cannot.

use super::world::{Area, P2};
use crate::data::sample::{Rgb8, RoadClass};

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
const DEPOT: [u8; 3] = [38, 84, 214];

struct Canvas {
    w: i32,
    h: i32,
    data: Vec<u8>,
}

impl Canvas {
    fn put(&mut self, x: i32, y: i32, c: [u8; 3]) {
        if x >= 0 && y >= 0 && x < self.w && y < self.h {
            let i = ((y * self.w + x) * 3) as usize;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    fn bbox(&self, pts: &[[f64; 2]], pad: f64) -> Option<(i32, i32, i32, i32)> {
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for p in pts {
            x0 = x0.min(p[0]);
            y0 = y0.min(p[1]);
            x1 = x1.max(p[0]);
            y1 = y1.max(p[1]);
        }
        let (x0, y0) = (
            (x0 - pad).floor().max(0.0) as i32,
            (y0 - pad).floor().max(0.0) as i32,
        );
        let (x1, y1) = (
            (x1 + pad).ceil().min(self.w as f64 - 1.0) as i32,
            (y1 + pad).ceil().min(self.h as f64 - 1.0) as i32,
        );
        (x0 <= x1 && y0 <= y1).then_some((x0, y0, x1, y1))
    }

    /// Fills a convex polygon (pixel centres inside).
    fn convex(&mut self, poly: &[[f64; 2]], c: [u8; 3]) {
        let Some((x0, y0, x1, y1)) = self.bbox(poly, 0.0) else {
            return;
        };
        let n = poly.len();
        let area2: f64 = (0..n)
            .map(|i| {
                let (a, b) = (poly[i], poly[(i + 1) % n]);
                a[0] * b[1] - b[0] * a[1]
            })
            .sum();
        let sign = area2.signum();
        for y in y0..=y1 {
            for x in x0..=x1 {
                let p = [x as f64 + 0.5, y as f64 + 0.5];
                let inside = (0..n).all(|i| {
                    let (a, b) = (poly[i], poly[(i + 1) % n]);
                    sign * ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])) >= 0.0
                });
                if inside {
                    self.put(x, y, c);
                }
            }
        }
    }

    /// A segment of the given width (pixels).
    fn segment(&mut self, a: [f64; 2], b: [f64; 2], width: f64, c: [u8; 3]) {
        let r = width / 2.0;
        let Some((x0, y0, x1, y1)) = self.bbox(&[a, b], r + 1.0) else {
            return;
        };
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let l2 = (dx * dx + dy * dy).max(1e-12);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let p = [x as f64 + 0.5, y as f64 + 0.5];
                let u = (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l2).clamp(0.0, 1.0);
                let (qx, qy) = (a[0] + u * dx - p[0], a[1] + u * dy - p[1]);
                if qx * qx + qy * qy <= r * r {
                    self.put(x, y, c);
                }
            }
        }
    }

    fn disc(&mut self, c0: [f64; 2], r: f64, c: [u8; 3]) {
        self.segment(c0, c0, 2.0 * r, c);
    }
}

/// Renders the raster around `origin` (area meters) facing `heading_deg` (clockwise from north).
pub fn render(area: &Area, origin: P2, heading_deg: f64, stops: &[P2], spec: &RasterSpec) -> Rgb8 {
    let n = spec.size as i32;
    let mut cv = Canvas {
        w: n,
        h: n,
        data: GROUND
            .iter()
            .copied()
            .cycle()
            .take((n * n * 3) as usize)
            .collect(),
    };
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
        for e in area.edges.iter().filter(|e| e.class == class) {
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
            for w in e.pts.windows(2) {
                cv.segment(to_px(w[0]), to_px(w[1]), (width_m / m).max(1.0), color);
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
