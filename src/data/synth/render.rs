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
    let view = View::new(origin, heading_deg, spec);
    let mut cv = Canvas::new(spec.size as i32, spec.size as i32, GROUND);
    draw_blocks(&mut cv, &view, area);
    draw_roads(&mut cv, &view, area, traffic);
    draw_markers(&mut cv, &view, area, stops);
    Rgb8 {
        width: spec.size,
        height: spec.size,
        data: cv.data,
    }
}

/// Where the raster looks: area meters to pixels, heading up, and what is near enough to draw.
struct View {
    origin: P2,
    sin_cos: (f64, f64),
    m_per_px: f64,
    anchor: [f64; 2],
    reach: f64,
}

impl View {
    fn new(origin: P2, heading_deg: f64, spec: &RasterSpec) -> Self {
        let h = heading_deg.to_radians();
        View {
            origin,
            sin_cos: (h.sin(), h.cos()),
            m_per_px: spec.m_per_px,
            anchor: spec.anchor,
            reach: spec.m_per_px * (spec.size as f64) * 0.9,
        }
    }

    fn to_px(&self, q: P2) -> [f64; 2] {
        let (sh, ch) = self.sin_cos;
        let (e, nn) = (q[0] - self.origin[0], q[1] - self.origin[1]);
        let fwd = e * sh + nn * ch;
        let left = -e * ch + nn * sh;
        [
            self.anchor[0] - left / self.m_per_px,
            self.anchor[1] - fwd / self.m_per_px,
        ]
    }

    /// Whether a box (area meters) may show in the raster.
    fn near(&self, lo: P2, hi: P2) -> bool {
        let (o, r) = (self.origin, self.reach);
        lo[0] <= o[0] + r && hi[0] >= o[0] - r && lo[1] <= o[1] + r && hi[1] >= o[1] - r
    }

    fn rect(&self, r: &super::world::Rect) -> [[f64; 2]; 4] {
        [
            self.to_px(r.min),
            self.to_px([r.max[0], r.min[1]]),
            self.to_px(r.max),
            self.to_px([r.min[0], r.max[1]]),
        ]
    }

    /// A width in meters as pixels, at least `min_px`.
    fn px(&self, meters: f64, min_px: f64) -> f64 {
        (meters / self.m_per_px).max(min_px)
    }
}

/// Parks, then buildings.
fn draw_blocks(cv: &mut Canvas, view: &View, area: &Area) {
    for (rects, color) in [(&area.parks, PARK), (&area.buildings, BUILDING)] {
        for r in rects.iter().filter(|r| view.near(r.min, r.max)) {
            cv.convex(&view.rect(r), color);
        }
    }
}

/// Roads by class, the larger over the smaller; jammed edges in the live-traffic colour.
fn draw_roads(cv: &mut Canvas, view: &View, area: &Area, traffic: &[f64]) {
    for class in [RoadClass::Local, RoadClass::Arterial, RoadClass::Highway] {
        let (color, width_m) = match class {
            RoadClass::Local => (LOCAL, 7.0),
            RoadClass::Arterial => (ARTERIAL, 11.0),
            RoadClass::Highway => (HIGHWAY, 15.0),
        };
        for (ei, e) in area.edges.iter().enumerate() {
            if e.class != class {
                continue;
            }
            let (lo, hi) = bounding_box(&e.pts);
            if !view.near(lo, hi) {
                continue;
            }
            let jammed = traffic.get(ei).is_some_and(|&t| t < 0.5);
            for w in e.pts.windows(2) {
                let (a, b) = (view.to_px(w[0]), view.to_px(w[1]));
                cv.segment(
                    a,
                    b,
                    view.px(width_m, 1.0),
                    if jammed { JAM } else { color },
                );
            }
        }
    }
}

/// The points' bounding box: its lowest and highest corner.
fn bounding_box(pts: &[P2]) -> (P2, P2) {
    let fold = |axis: usize, start: f64, pick: fn(f64, f64) -> f64| {
        pts.iter().map(|p| p[axis]).fold(start, pick)
    };
    (
        [fold(0, f64::MAX, f64::min), fold(1, f64::MAX, f64::min)],
        [fold(0, f64::MIN, f64::max), fold(1, f64::MIN, f64::max)],
    )
}

/// The depot, then the route's remaining stops.
fn draw_markers(cv: &mut Canvas, view: &View, area: &Area, stops: &[P2]) {
    let depot = area.nodes[area.depot];
    if view.near(depot, depot) {
        cv.disc(view.to_px(depot), view.px(12.0, 1.5), DEPOT);
    }
    for &s in stops.iter().filter(|&&s| view.near(s, s)) {
        cv.disc(view.to_px(s), view.px(6.0, 1.0), STOP);
    }
}
