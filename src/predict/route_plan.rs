//! Route plans: an order of all the remaining stops of a route that keeps every zone whole and
//! moves between neighbouring zones, as drivers of the Amazon routing data do (a greedy roll-out
//! starts at the stop nearest the station, often in the middle of the route, and never recovers).
//!
//! The zones are ordered as one open path of least cost, where the cost between two zones is the
//! distance between their nearest stops plus [`ZONE_JUMP_M`] when their ids are not neighbours in
//! the zone-id convention (`zones::zone_step` of 1); inside a zone the stops follow nearest first
//! from where the vehicle enters it. Stops without a zone join the zone of their nearest stop that
//! has one; a route without zones is planned stop by stop. A path can be driven from either end:
//! [`plan`] gives both, and a caller picks the direction (the model's likelier one, or a rule).

use crate::data::sample::{Fix, Sample};
use crate::frame::Enu;
use std::collections::BTreeMap;

/// Most stops a request may ask to plan: each adds two decisions (one per direction) to the
/// model's work, and the planner's starts and 2-opt passes are bounded for this many.
pub const MAX_PLAN_STOPS: usize = 1024;

/// Extra cost, in metres, of moving between two zones whose ids are not neighbours.
pub const ZONE_JUMP_M: f64 = 1000.0;

/// Speed assumed between stops, m/s (the LMRC importer's default): the clock of a walk along
/// a route ([`advance`]).
pub const TRAVEL_SPEED_MPS: f64 = 8.0;

/// At most this many zones start a nearest-neighbour path (evenly spaced over the zones), each
/// improved by 2-opt; the cheapest path is kept. Above [`FULL_STARTS_UP_TO`] zones the starts
/// shrink with the square of the zones (a route without zones plans each stop as a zone), so
/// the work stays bounded.
const MAX_STARTS: usize = 32;
const FULL_STARTS_UP_TO: usize = 64;

/// Most 2-opt passes over a path (each O(zones²)); a route's few dozen zones settle in a handful.
const MAX_TWO_OPT_PASSES: usize = 100;

/// The two directions of a plan: indices into the sample's stops, every stop once.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub forward: Vec<usize>,
    pub reverse: Vec<usize>,
}

impl Plan {
    /// Both orders, forward first.
    pub fn orders(&self) -> [&Vec<usize>; 2] {
        [&self.forward, &self.reverse]
    }
}

/// The plan of the stops of `s` from the vehicle's position (its last fix); None without stops or
/// history.
pub fn plan(s: &Sample) -> Option<Plan> {
    let here = s.history.last()?;
    if s.stops.is_empty() {
        return None;
    }
    let enu = Enu::new(here.lat, here.lon);
    let pos: Vec<(f64, f64)> = s.stops.iter().map(|st| enu.to_en(st.lat, st.lon)).collect();
    let zones = zone_members(s, &pos);
    let names: Vec<Option<&str>> = zones.iter().map(|(z, _)| z.as_deref()).collect();
    let members: Vec<&Vec<usize>> = zones.iter().map(|(_, m)| m).collect();
    let cost = zone_costs(&names, &members, &pos);
    let path = zone_path(&cost);
    let expand = |path: &[usize]| {
        let mut at = (0.0, 0.0);
        let mut order = Vec::with_capacity(pos.len());
        for &z in path {
            for i in nearest_first(members[z], &pos, at) {
                order.push(i);
                at = pos[i];
            }
        }
        order
    };
    let reversed: Vec<usize> = path.iter().rev().copied().collect();
    Some(Plan {
        forward: expand(&path),
        reverse: expand(&reversed),
    })
}

/// The decision after visiting stop `idx` of `s`.
pub fn advance(s: &Sample, idx: usize) -> Sample {
    let st = &s.stops[idx];
    let here = s.history.last().expect("validated");
    let (e, n) = Enu::new(here.lat, here.lon).to_en(st.lat, st.lon);
    let dt = (e * e + n * n).sqrt() / TRAVEL_SPEED_MPS + st.service_s.unwrap_or(0.0) as f64;
    let mut next = s.clone();
    next.t0 = s.t0 + dt;
    next.history = vec![Fix::at(next.t0, st.lat, st.lon)];
    next.context.zone = st.zone.clone();
    let h = next.context.hour as f64 + dt / 3600.0;
    next.context.hour = (h.rem_euclid(24.0) as f32).min(23.999);
    next.context.weekday =
        ((next.context.weekday as i64 + (h / 24.0).floor() as i64).rem_euclid(7)) as u8;
    next.stops.remove(idx);
    next.target = None;
    // The sensors and images were of the start: at the stop there are none.
    next.imu = None;
    next.video = None;
    next.images.clear();
    next
}

/// The decisions of driving `order` (indices into `start`'s stops) from `start`, each with the
/// id of the stop it chooses: `start` itself, then the vehicle at each stop visited, with the
/// stops left ([`advance`]).
pub fn walk(start: &Sample, order: &[usize]) -> Vec<(Sample, String)> {
    let mut out = Vec::with_capacity(order.len());
    walk_each(start, order, |d, id| out.push((d, id.to_string())));
    out
}

/// [`walk`], handing each decision to `f` as it is made (one decision in memory at a time).
pub fn walk_each(start: &Sample, order: &[usize], mut f: impl FnMut(Sample, &str)) {
    let ids: Vec<&String> = order.iter().map(|&i| &start.stops[i].id).collect();
    let mut s = start.clone();
    for id in ids {
        let k = s
            .stops
            .iter()
            .position(|st| &st.id == id)
            .expect("each stop of the order once");
        let next = advance(&s, k);
        f(std::mem::replace(&mut s, next), id);
    }
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

/// The zones (by id, ascending; stops without one join their nearest zoned stop's zone) and
/// their stops. Without any zone, every stop is a zone of its own (named None).
fn zone_members(s: &Sample, pos: &[(f64, f64)]) -> Vec<(Option<String>, Vec<usize>)> {
    let zoned: Vec<usize> = (0..s.stops.len())
        .filter(|&i| s.stops[i].zone.is_some())
        .collect();
    if zoned.is_empty() {
        return (0..s.stops.len()).map(|i| (None, vec![i])).collect();
    }
    let mut by_zone: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, st) in s.stops.iter().enumerate() {
        let z = match &st.zone {
            Some(z) => z.clone(),
            None => {
                let near = zoned
                    .iter()
                    .copied()
                    .min_by(|&a, &b| dist(pos[i], pos[a]).total_cmp(&dist(pos[i], pos[b])))
                    .expect("some stop has a zone");
                s.stops[near].zone.clone().expect("zoned")
            }
        };
        by_zone.entry(z).or_default().push(i);
    }
    by_zone.into_iter().map(|(z, m)| (Some(z), m)).collect()
}

/// Symmetric costs between zones: the distance of their nearest stops, plus [`ZONE_JUMP_M`] when
/// both ids follow the zone-id convention and are not neighbours.
fn zone_costs(
    names: &[Option<&str>],
    members: &[&Vec<usize>],
    pos: &[(f64, f64)],
) -> Vec<Vec<f64>> {
    let n = names.len();
    let mut c = vec![vec![0.0; n]; n];
    for a in 0..n {
        for b in a + 1..n {
            let near = members[a]
                .iter()
                .flat_map(|&i| members[b].iter().map(move |&j| dist(pos[i], pos[j])))
                .fold(f64::INFINITY, f64::min);
            let step = match (names[a], names[b]) {
                (Some(x), Some(y)) => crate::zones::zone_step(x, y),
                _ => None,
            };
            let jump = if step.is_some_and(|s| s != 1.0) {
                ZONE_JUMP_M
            } else {
                0.0
            };
            c[a][b] = near + jump;
            c[b][a] = near + jump;
        }
    }
    c
}

fn path_cost(c: &[Vec<f64>], p: &[usize]) -> f64 {
    p.windows(2).map(|w| c[w[0]][w[1]]).sum()
}

/// An open path through all nodes of least cost found: nearest neighbour from several starts,
/// each improved by 2-opt.
pub fn zone_path(c: &[Vec<f64>]) -> Vec<usize> {
    let n = c.len();
    if n <= 2 {
        return (0..n).collect();
    }
    let full = FULL_STARTS_UP_TO * FULL_STARTS_UP_TO;
    let starts = n.min(MAX_STARTS * full / (n * n).max(full)).max(1);
    let mut best: Option<(f64, Vec<usize>)> = None;
    for k in 0..starts {
        let mut p = nearest_neighbour(c, k * n / starts);
        two_opt(c, &mut p);
        let l = path_cost(c, &p);
        if best.as_ref().is_none_or(|(b, _)| l < *b - 1e-9) {
            best = Some((l, p));
        }
    }
    best.expect("n > 2").1
}

fn nearest_neighbour(c: &[Vec<f64>], start: usize) -> Vec<usize> {
    let n = c.len();
    let mut left = vec![true; n];
    let mut p = vec![start];
    left[start] = false;
    while p.len() < n {
        let at = *p.last().expect("non-empty");
        let next = (0..n)
            .filter(|&j| left[j])
            .min_by(|&a, &b| c[at][a].total_cmp(&c[at][b]).then(a.cmp(&b)))
            .expect("a node is left");
        left[next] = false;
        p.push(next);
    }
    p
}

/// 2-opt on an open path with free ends: reverse a segment while that shortens the path.
fn two_opt(c: &[Vec<f64>], p: &mut [usize]) {
    let n = p.len();
    // Each pass either improves or stops; the bound keeps a path of a thousand stops cheap.
    for _ in 0..MAX_TWO_OPT_PASSES {
        let mut improved = false;
        for i in 0..n - 1 {
            for j in i + 1..n {
                if i == 0 && j == n - 1 {
                    continue;
                }
                let mut delta = 0.0;
                if i > 0 {
                    delta += c[p[i - 1]][p[j]] - c[p[i - 1]][p[i]];
                }
                if j + 1 < n {
                    delta += c[p[i]][p[j + 1]] - c[p[j]][p[j + 1]];
                }
                if delta < -1e-9 {
                    p[i..=j].reverse();
                    improved = true;
                }
            }
        }
        if !improved {
            return;
        }
    }
}

/// The stops `m` nearest first from `at`.
fn nearest_first(m: &[usize], pos: &[(f64, f64)], mut at: (f64, f64)) -> Vec<usize> {
    let mut left: Vec<usize> = m.to_vec();
    let mut out = Vec::with_capacity(m.len());
    while !left.is_empty() {
        let k = (0..left.len())
            .min_by(|&a, &b| {
                dist(at, pos[left[a]])
                    .total_cmp(&dist(at, pos[left[b]]))
                    .then(left[a].cmp(&left[b]))
            })
            .expect("non-empty");
        let i = left.remove(k);
        at = pos[i];
        out.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::{Fix, Stop};

    /// A station at the origin and stops on a grid of zones `A-1.{row}{col}`, two stops per zone,
    /// listed in a scrambled order.
    fn grid_route() -> Sample {
        let mut stops = Vec::new();
        for (ci, col) in ['B', 'C', 'D'].iter().enumerate() {
            for row in 1..=2 {
                for k in 0..2 {
                    let lat = 40.0 + 0.002 * row as f64 + 0.0002 * k as f64;
                    let lon = 0.01 + 0.003 * ci as f64;
                    let mut st = Stop::at(format!("{col}{row}{k}"), lat, lon);
                    st.zone = Some(format!("A-1.{row}{col}"));
                    stops.push(st);
                }
            }
        }
        stops.reverse();
        stops.swap(1, 7);
        sample(stops)
    }

    fn sample(stops: Vec<Stop>) -> Sample {
        Sample {
            stops,
            ..Sample::bare("r-0001", 0.0, vec![Fix::at(0.0, 40.0, 0.0)])
        }
    }

    fn zones_of(s: &Sample, order: &[usize]) -> Vec<String> {
        let mut z: Vec<String> = Vec::new();
        for &i in order {
            let id = s.stops[i].zone.clone().unwrap();
            if z.last() != Some(&id) {
                z.push(id);
            }
        }
        z
    }

    #[test]
    fn a_plan_keeps_zones_whole_and_snakes_through_neighbours() {
        let s = grid_route();
        let p = plan(&s).unwrap();
        for o in p.orders() {
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..s.stops.len()).collect::<Vec<_>>());
            let z = zones_of(&s, o);
            assert_eq!(z.len(), 6, "each zone once: {z:?}");
            for w in z.windows(2) {
                assert_eq!(crate::zones::zone_step(&w[0], &w[1]), Some(1.0), "{z:?}");
            }
        }
        let (f, r) = (zones_of(&s, &p.forward), zones_of(&s, &p.reverse));
        let mut back = r.clone();
        back.reverse();
        assert_eq!(
            f, back,
            "the reverse plan drives the same zones the other way"
        );
    }

    #[test]
    fn the_zone_path_is_the_cheapest_open_path() {
        // Four points on a line, listed out of order: the path is the line.
        let x = [0.0, 3.0, 1.0, 2.0];
        let c: Vec<Vec<f64>> = x
            .iter()
            .map(|a: &f64| x.iter().map(|b| (a - b).abs()).collect())
            .collect();
        let p = zone_path(&c);
        assert!((path_cost(&c, &p) - 3.0).abs() < 1e-12, "{p:?}");
        // 2-opt alone mends a crossed path.
        let mut p = vec![2, 0, 3, 1];
        two_opt(&c, &mut p);
        assert!((path_cost(&c, &p) - 3.0).abs() < 1e-12, "{p:?}");
    }

    #[test]
    fn stops_without_zones_are_planned_one_by_one() {
        let mut s = grid_route();
        for st in &mut s.stops {
            st.zone = None;
        }
        let p = plan(&s).unwrap();
        let mut sorted = p.forward.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..s.stops.len()).collect::<Vec<_>>());
        assert!(plan(&sample(Vec::new())).is_none());
    }

    /// The largest plan a request may ask for, without zones (every stop a zone of its own: the
    /// path's starts and 2-opt passes are bounded), orders every stop once.
    #[test]
    fn a_thousand_stops_without_zones_are_planned() {
        let n = MAX_PLAN_STOPS;
        let stops: Vec<Stop> = (0..n)
            .map(|i| {
                let (row, col) = ((i / 32) as f64, (i % 32) as f64);
                Stop::at(format!("s{i}"), 40.0 + 0.0005 * row, 0.0005 * col)
            })
            .collect();
        let p = plan(&sample(stops)).unwrap();
        let mut sorted = p.forward.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    }
}
