//! The forward-facing dashcam: small RGB frames from a pinhole camera on the vehicle.
//!
//! Each pixel below the horizon looks at the ground: asphalt where a road is (lane edges in
//! white), grass elsewhere, haze far away; above it, sky. On top, nearest last: traffic lights
//! (a dark housing over the intersection with the lit lamp, red on top or green below, when the
//! head faces the camera), the
//! queue of vehicles on jammed roads, and a parked van at each stop still ahead. Objects are
//! drawn at least one pixel wide, as a bright lamp still tints the pixel of a small frame. The
//! map raster shows neither the lights nor the queues: here the clip is the only early sign of
//! a stop at a red light.

use super::lights::{Lights, Phase};
use super::motion::DrivenPath;
use super::world::{Area, P2};
use crate::data::video::Frames;
use crate::seed;

/// The camera: frame side (pixels), horizontal field of view, mounting height.
#[derive(Clone, Copy, Debug)]
pub struct Camera {
    pub size: usize,
    pub fov_deg: f64,
    pub height_m: f64,
}

impl Camera {
    pub fn new(size: usize) -> Self {
        Camera {
            size,
            fov_deg: FOV_DEG,
            height_m: 1.5,
        }
    }

    /// Focal length in pixels.
    fn focal(&self) -> f64 {
        self.size as f64 / 2.0 / (self.fov_deg.to_radians() / 2.0).tan()
    }
}

/// Horizontal field of view, degrees: narrow enough that a light 40 m ahead is a pixel.
pub const FOV_DEG: f64 = 60.0;
/// Seconds between frames.
pub const FRAME_STEP_S: f64 = 0.5;
/// Farthest ground drawn, meters (haze beyond).
const FAR_M: f64 = 150.0;
/// Objects farther than this are not drawn.
const OBJECT_M: f64 = 200.0;
/// Lights hang on the far side of their intersection, seen from the approach: this far past
/// the node along the view (a vehicle held at the stop line still sees its light).
const FAR_SIDE_M: f64 = 12.0;
/// A signal head faces the traffic coming at it: its lit lamp shows only within this bearing
/// of the camera's axis (the heads of cross streets are seen edge-on: housing only).
const FACING_DEG: f64 = 12.0;

const SKY: [u8; 3] = [150, 190, 230];
const HAZE: [u8; 3] = [170, 180, 175];
const GRASS: [u8; 3] = [95, 140, 70];
const ASPHALT: [u8; 3] = [88, 88, 94];
const LANE: [u8; 3] = [235, 235, 225];
const HOUSING: [u8; 3] = [25, 25, 25];
const RED: [u8; 3] = [240, 30, 30];
const GREEN: [u8; 3] = [40, 230, 70];
const VAN: [u8; 3] = [245, 245, 245];
/// Seconds between the cars of a queue passing one point, and their spacing, meters.
const QUEUE_SPEED: f64 = 1.5;
const QUEUE_GAP_M: f64 = 9.0;

/// What the camera sees besides the roads: the route's lights and the stops still ahead.
pub struct Scene<'a> {
    pub area: &'a Area,
    pub track: &'a DrivenPath,
    pub traffic: &'a [f64],
    pub lights: &'a Lights<'a>,
    pub stops_ahead: &'a [P2],
    pub seed: u64,
}

/// The vehicle's view: position, unit forward and right vectors.
struct Pose {
    p: P2,
    fwd: P2,
    right: P2,
}

/// A box standing on the ground (or hanging, from `z0`): centre, width, heights, colour.
struct Sprite {
    at: P2,
    width: f64,
    z0: f64,
    z1: f64,
    color: [u8; 3],
    /// A lit lamp: it also tints the pixels around it by half (glare, as a bright lamp does in
    /// a small frame).
    glow: bool,
}

/// The frames at `times` ([T, S, S, 3], uint8).
pub fn clip(scene: &Scene, cam: &Camera, times: &[f64]) -> Frames {
    let s = cam.size;
    let mut data = Vec::with_capacity(times.len() * s * s * 3);
    for &t in times {
        data.extend(frame(scene, cam, t));
    }
    Frames {
        count: times.len(),
        height: s,
        width: s,
        data,
    }
}

fn frame(scene: &Scene, cam: &Camera, t: f64) -> Vec<u8> {
    let st = scene.track.state_at(t);
    let (sy, cy) = st.yaw.sin_cos();
    let pose = Pose {
        p: st.p,
        fwd: [cy, sy],
        right: [sy, -cy],
    };
    let s = cam.size;
    let f = cam.focal();
    let roads = nearby_segments(scene.area, pose.p, FAR_M);
    let mut px = vec![0u8; s * s * 3];
    for v in 0..s {
        let up = (s as f64 / 2.0 - v as f64 - 0.5) / f;
        for u in 0..s {
            let right = (u as f64 + 0.5 - s as f64 / 2.0) / f;
            let c = if up >= 0.0 {
                SKY
            } else {
                let d = cam.height_m / -up;
                if d > FAR_M {
                    HAZE
                } else {
                    let q = [
                        pose.p[0] + pose.fwd[0] * d + pose.right[0] * d * right,
                        pose.p[1] + pose.fwd[1] * d + pose.right[1] * d * right,
                    ];
                    ground(&roads, q)
                }
            };
            px[(v * s + u) * 3..(v * s + u) * 3 + 3].copy_from_slice(&c);
        }
    }
    let mut sprites = sprites(scene, &pose, t);
    // Far first, so nearer objects cover them.
    sprites.sort_by(|a, b| depth(&pose, b.at).total_cmp(&depth(&pose, a.at)));
    for sp in &sprites {
        draw(&mut px, cam, f, &pose, sp);
    }
    px
}

fn depth(pose: &Pose, q: P2) -> f64 {
    (q[0] - pose.p[0]) * pose.fwd[0] + (q[1] - pose.p[1]) * pose.fwd[1]
}

/// Meters to the right of the camera's axis.
fn lateral(pose: &Pose, q: P2) -> f64 {
    (q[0] - pose.p[0]) * pose.right[0] + (q[1] - pose.p[1]) * pose.right[1]
}

/// Road segments (a, b, half width) with a point within `reach` of `p`.
fn nearby_segments(area: &Area, p: P2, reach: f64) -> Vec<(P2, P2, f64)> {
    let mut out = Vec::new();
    for e in &area.edges {
        let half = match e.class {
            crate::data::sample::RoadClass::Local => 3.5,
            crate::data::sample::RoadClass::Arterial => 5.5,
            crate::data::sample::RoadClass::Highway => 7.5,
        };
        for w in e.pts.windows(2) {
            if seg_dist(p, w[0], w[1]) <= reach + half {
                out.push((w[0], w[1], half));
            }
        }
    }
    out
}

/// Distance from `q` to the segment `a`-`b`.
fn seg_dist(q: P2, a: P2, b: P2) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let u = if len2 > 0.0 {
        (((q[0] - a[0]) * dx + (q[1] - a[1]) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (x, y) = (a[0] + u * dx - q[0], a[1] + u * dy - q[1]);
    (x * x + y * y).sqrt()
}

/// The ground's colour at `q`: asphalt on a road (a white line along its edges), grass off it.
fn ground(roads: &[(P2, P2, f64)], q: P2) -> [u8; 3] {
    let mut best = GRASS;
    for &(a, b, half) in roads {
        let d = seg_dist(q, a, b);
        if d <= half {
            // Inside one road; the edge line unless another road covers this point too.
            if (d - (half - 0.5)).abs() < 0.3 {
                best = LANE;
            } else {
                return ASPHALT;
            }
        }
    }
    best
}

/// The lights, queued cars and vans in front of the camera at time `t`.
fn sprites(scene: &Scene, pose: &Pose, t: f64) -> Vec<Sprite> {
    let in_view = |q: P2| {
        let d = depth(pose, q);
        d > 2.0 && d < OBJECT_M
    };
    let mut out = Vec::new();
    light_sprites(scene, pose, t, &in_view, &mut out);
    queue_sprites(scene, t, &in_view, &mut out);
    for &q in scene.stops_ahead {
        if in_view(q) {
            out.push(Sprite {
                at: q,
                width: 2.0,
                z0: 0.0,
                z1: 2.6,
                color: VAN,
                glow: false,
            });
        }
    }
    out
}

/// Each traffic light in view: its housing, and its lamp where the camera faces it.
fn light_sprites(
    scene: &Scene,
    pose: &Pose,
    t: f64,
    in_view: &dyn Fn(P2) -> bool,
    out: &mut Vec<Sprite>,
) {
    let area = scene.area;
    for (node, &n) in area.nodes.iter().enumerate() {
        let q = [
            n[0] + pose.fwd[0] * FAR_SIDE_M,
            n[1] + pose.fwd[1] * FAR_SIDE_M,
        ];
        if !area.halts[node] || !in_view(q) || depth(pose, n) < -FAR_SIDE_M / 2.0 {
            continue;
        }
        out.push(Sprite {
            at: q,
            width: 1.0,
            z0: 3.8,
            z1: 5.6,
            color: HOUSING,
            glow: false,
        });
        let (ahead, side) = (depth(pose, q), lateral(pose, q));
        if side.atan2(ahead.max(1e-6)).abs() > FACING_DEG.to_radians() {
            continue;
        }
        let (z0, color) = match scene.lights.phase(node, t) {
            Phase::Red => (4.9, RED),
            Phase::Green => (3.9, GREEN),
        };
        out.push(Sprite {
            at: q,
            width: 0.7,
            z0,
            z1: z0 + 0.6,
            color,
            glow: true,
        });
    }
}

/// The cars queued on jammed edges (traffic under half speed), moving with time.
fn queue_sprites(scene: &Scene, t: f64, in_view: &dyn Fn(P2) -> bool, out: &mut Vec<Sprite>) {
    let area = scene.area;
    for (ei, e) in area.edges.iter().enumerate() {
        if scene.traffic.get(ei).is_none_or(|&x| x >= 0.5) {
            continue;
        }
        let h = seed::hash(scene.seed, "queue", &[area.id as u64, ei as u64]);
        let shift = (seed::unit(h) * QUEUE_GAP_M + QUEUE_SPEED * t).rem_euclid(QUEUE_GAP_M);
        let mut s = shift;
        while s < e.len {
            let q = area.point_on_edge(ei, s / e.len);
            if in_view(q) {
                let shade = (seed::mix(h ^ (s / QUEUE_GAP_M) as u64) % 120) as u8;
                out.push(Sprite {
                    at: q,
                    width: 1.8,
                    z0: 0.0,
                    z1: 1.5,
                    color: [60 + shade, 40, 140 - shade],
                    glow: false,
                });
            }
            s += QUEUE_GAP_M;
        }
    }
}

/// Paints a sprite: the box it covers on screen, at least one pixel a side.
fn draw(px: &mut [u8], cam: &Camera, f: f64, pose: &Pose, sp: &Sprite) {
    let s = cam.size as f64;
    let rel = [sp.at[0] - pose.p[0], sp.at[1] - pose.p[1]];
    let d = rel[0] * pose.fwd[0] + rel[1] * pose.fwd[1];
    let r = rel[0] * pose.right[0] + rel[1] * pose.right[1];
    let u = s / 2.0 + f * r / d;
    let half_w = (f * sp.width / 2.0 / d).max(0.5);
    let v_top = s / 2.0 - f * (sp.z1 - cam.height_m) / d;
    let v_bot = (s / 2.0 - f * (sp.z0 - cam.height_m) / d).max(v_top + 1.0);
    let (u0, u1) = ((u - half_w).round() as i64, (u + half_w).round() as i64);
    let (v0, v1) = (v_top.round() as i64, v_bot.round() as i64);
    let n = cam.size as i64;
    let (v1, u1) = (v1.max(v0 + 1), u1.max(u0 + 1));
    let g = sp.glow as i64;
    for v in (v0 - g).max(0)..(v1 + g).min(n) {
        for x in (u0 - g).max(0)..(u1 + g).min(n) {
            let i = ((v * n + x) * 3) as usize;
            let inside = (v0..v1).contains(&v) && (u0..u1).contains(&x);
            for c in 0..3 {
                px[i + c] = if inside {
                    sp.color[c]
                } else {
                    ((px[i + c] as u16 + sp.color[c] as u16) / 2) as u8
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A light straight ahead shows its colour in the frame, above the horizon and in the
    /// middle columns; the road below is asphalt.
    #[test]
    fn a_light_ahead_shows_its_colour() {
        let cam = Camera::new(32);
        let f = cam.focal();
        let pose = Pose {
            p: [0.0, 0.0],
            fwd: [1.0, 0.0],
            right: [0.0, -1.0],
        };
        let mut px = vec![0u8; 32 * 32 * 3];
        draw(
            &mut px,
            &cam,
            f,
            &pose,
            &Sprite {
                at: [30.0, 0.0],
                width: 0.7,
                z0: 5.6,
                z1: 6.3,
                color: RED,
                glow: true,
            },
        );
        let red: Vec<(usize, usize)> = (0..32 * 32)
            .filter(|i| px[i * 3..i * 3 + 3] == RED)
            .map(|i| (i / 32, i % 32))
            .collect();
        assert!(!red.is_empty());
        assert!(
            red.iter().all(|&(v, u)| v < 16 && (15..=16).contains(&u)),
            "{red:?}"
        );
        // The glare around it: half red over the black frame.
        let (v, u) = red[0];
        let left = (v * 32 + u - 1) * 3;
        assert_eq!(px[left..left + 3], [120, 15, 15]);
        let roads = vec![([-10.0, 0.0], [200.0, 0.0], 3.5)];
        assert_eq!(ground(&roads, [20.0, 0.5]), ASPHALT);
        assert_eq!(ground(&roads, [20.0, 3.1]), LANE);
        assert_eq!(ground(&roads, [20.0, 9.0]), GRASS);
    }
}
