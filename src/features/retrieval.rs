//! What a fleet's own past trips know (issue 39): the futures of training windows that ended
//! their history near the same place, heading the same way at a similar speed. Taxis follow
//! roads, and a fleet's past trips are a map of them; the ECML/PKDD 2015 taxi challenge was won
//! by matching a trip against similar historical trips.
//!
//! `scripts/retrieval_probe.py` measured it before it was built (Porto sample, test split, K=1
//! minFDE over constant velocity): the neighbours' mean future alone 0.728, gradient boosting on
//! the history 0.821, boosting with the neighbours' mean as features 0.659. On GeoLife's
//! held-out users 3% of windows have neighbours (they travel elsewhere) and it neither helps nor
//! hurts (0.769 against 0.773).
//!
//! An [`Index`] holds, per training window, where its history ended, its heading and speed, its
//! route, and where it went: its future minus the constant-velocity extrapolation, in its own
//! frame (forward, left meters) at the model's knots. A query takes the windows within
//! `radius_m` whose heading differs by less than `heading_deg` and whose speed is within a
//! factor of two (plus 1 m/s), leaving out the sample's own route in training, and returns
//! their mean offset when there are at least `min_neighbours`. Lookups go through a grid of
//! `radius_m` cells, so a query reads the 3 x 3 cells around it.

use crate::data::sample::Sample;
use crate::frame::{Enu, LocalFrame};
use std::collections::HashMap;

/// How neighbours are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub radius_m: f64,
    pub heading_deg: f64,
    pub min_neighbours: usize,
}

/// One training window, as the index keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub lat: f64,
    pub lon: f64,
    pub heading_deg: f64,
    pub speed: f64,
    /// A hash of the route id (a query in training leaves out its own route).
    pub route: u64,
    /// Future minus constant velocity at the knots, (forward, left) meters, `2 * knots` values.
    pub offsets: Vec<f32>,
}

/// What a query found: the neighbours' mean offset at the knots (zeros with too few) and how
/// many there were.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub offsets: Vec<f32>,
    pub count: usize,
}

pub struct Index {
    pub set: Settings,
    pub knots: usize,
    enu: Enu,
    xy: Vec<[f64; 2]>,
    entries: Vec<Entry>,
    grid: HashMap<(i64, i64), Vec<u32>>,
}

/// A stable hash of a route id.
pub fn route_hash(id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(id.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Where a sample's history ends, its heading (degrees from north) and mean speed (m/s).
fn anchor(s: &Sample) -> (LocalFrame, f64) {
    let frame = LocalFrame::from_history(&s.history);
    let speed = crate::kinematics::history_speed(s, &frame).unwrap_or(0.0);
    (frame, speed)
}

/// The entry of a training sample whose labels reach the last knot (`knots` at `step` s);
/// None without such a future.
pub fn entry(s: &Sample, knots: usize, step: f64) -> Option<Entry> {
    let t = s.target.as_ref()?;
    let fstep = t.future_step_s.map_or(step, |x| x as f64);
    let times: Vec<f64> = (1..=t.future.len()).map(|k| k as f64 * fstep).collect();
    let (frame, speed) = anchor(s);
    let at = crate::time_grid::knots(knots, step);
    let cv = crate::kinematics::constant_velocity_at(s, &frame, &at);
    let p = |n: usize| frame.to_local(t.future[n][0], t.future[n][1]);
    let tol = crate::time_grid::ON_GRID * fstep;
    // A position at a knot: between the last fix (the origin) and the first label, or between
    // the labels around it; None past the last label.
    let at_time = |tk: f64| -> Option<(f64, f64)> {
        if tk < *times.first()? - tol {
            let (a, w) = (p(0), tk / times[0]);
            return Some((a.0 * w, a.1 * w));
        }
        let (i, j, w) = crate::time_grid::locate(&times, tk, tol)?;
        let (a, b) = (p(i), p(j));
        Some((a.0 + (b.0 - a.0) * w, a.1 + (b.1 - a.1) * w))
    };
    let mut offsets = Vec::with_capacity(2 * knots);
    for (k, &tk) in at.iter().enumerate() {
        let (x, y) = at_time(tk)?;
        offsets.push((x - cv[k][0]) as f32);
        offsets.push((y - cv[k][1]) as f32);
    }
    let last = s.history.last()?;
    Some(Entry {
        lat: last.lat,
        lon: last.lon,
        heading_deg: frame.heading_deg,
        speed,
        route: route_hash(&s.route_id),
        offsets,
    })
}

fn cell(xy: [f64; 2], size: f64) -> (i64, i64) {
    ((xy[0] / size).floor() as i64, (xy[1] / size).floor() as i64)
}

impl Index {
    /// An index of `entries` (each with `2 * knots` offsets), its plane centred on the first.
    pub fn build(entries: Vec<Entry>, knots: usize, set: Settings) -> Index {
        let enu = entries
            .first()
            .map_or(Enu::new(0.0, 0.0), |e| Enu::new(e.lat, e.lon));
        let xy: Vec<[f64; 2]> = entries
            .iter()
            .map(|e| {
                let (x, y) = enu.to_en(e.lat, e.lon);
                [x, y]
            })
            .collect();
        let mut grid: HashMap<(i64, i64), Vec<u32>> = HashMap::new();
        for (i, p) in xy.iter().enumerate() {
            grid.entry(cell(*p, set.radius_m))
                .or_default()
                .push(i as u32);
        }
        Index {
            set,
            knots,
            enu,
            xy,
            entries,
            grid,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The neighbours of a sample, its own route left out (in training its own trip, whose
    /// windows overlap it; elsewhere a route the index has not seen, so nothing).
    pub fn query(&self, s: &Sample) -> Found {
        let (frame, speed) = anchor(s);
        let last = s.history.last().expect("validated");
        let own = Some(route_hash(&s.route_id));
        self.near(last.lat, last.lon, frame.heading_deg, speed, own)
    }

    /// The neighbours of a point, heading and speed, leaving out route `own`.
    pub fn near(&self, lat: f64, lon: f64, heading: f64, speed: f64, own: Option<u64>) -> Found {
        let (x, y) = self.enu.to_en(lat, lon);
        let (cx, cy) = cell([x, y], self.set.radius_m);
        let mut sum = vec![0f64; 2 * self.knots];
        let mut count = 0;
        for gx in cx - 1..=cx + 1 {
            for gy in cy - 1..=cy + 1 {
                for &i in self.grid.get(&(gx, gy)).map_or(&[][..], |v| &v[..]) {
                    let e = &self.entries[i as usize];
                    let p = self.xy[i as usize];
                    let dh = (e.heading_deg - heading + 540.0).rem_euclid(360.0) - 180.0;
                    let ok = (p[0] - x).hypot(p[1] - y) <= self.set.radius_m
                        && dh.abs() < self.set.heading_deg
                        && e.speed < 2.0 * speed + 1.0
                        && 2.0 * e.speed + 1.0 > speed
                        && own != Some(e.route);
                    if ok {
                        count += 1;
                        for (s, o) in sum.iter_mut().zip(&e.offsets) {
                            *s += *o as f64;
                        }
                    }
                }
            }
        }
        let offsets = match count >= self.set.min_neighbours.max(1) {
            true => sum.iter().map(|s| (*s / count as f64) as f32).collect(),
            false => vec![0.0; 2 * self.knots],
        };
        Found { offsets, count }
    }
}

/// Values the model reads per sample: 2 per knot and the count.
pub fn input_len(knots: usize) -> usize {
    2 * knots + 1
}

/// What the model reads of a query: the mean offsets over `traj_scale` and `ln(1 + count)`
/// over `ln(101)`, with a mask of 1 where at least `min` neighbours were found.
pub fn input(f: &Found, min: usize, traj_scale: f32) -> (Vec<f32>, f32) {
    let mut v: Vec<f32> = f.offsets.iter().map(|o| o / traj_scale).collect();
    v.push(((1.0 + f.count as f64).ln() / 101f64.ln()) as f32);
    (v, (f.count >= min.max(1)) as u8 as f32)
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Index({} windows, {:?})", self.entries.len(), self.set)
    }
}

#[cfg(test)]
#[path = "retrieval_tests.rs"]
mod tests;
