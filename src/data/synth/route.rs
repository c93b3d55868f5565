//! One simulated delivery route: its stops (with time windows, service times, parcels), the
//! driver's hidden ordering policy (zone by zone, time windows first, some noise), the drive
//! between stops, the service at each stop and the outcome of each delivery attempt.

use super::motion::{DrivenPath, Driver, PathPt};
use super::world::{Area, P2, dist};
use crate::data::sample::{Region, RoadClass, Weather};
use crate::seed::{self as rng, SimRng, chance, lognormal, poisson, uniform};
use rand::Rng;

/// Midnight (local) of day 0 of the simulated calendar: Monday 2026-03-02, in UTC seconds.
pub const DAY0_UTC: f64 = 1_772_409_600.0;

#[derive(Clone, Debug)]
pub struct StopSpec {
    pub id: String,
    pub edge: usize,
    pub frac: f64,
    pub pos: P2,
    pub zone: usize,
    /// Time window, UTC seconds.
    pub tw: Option<(f64, f64)>,
    pub service_s: f64,
    pub packages: u32,
    pub volume_l: f64,
}

/// What happened at a stop.
#[derive(Clone, Debug)]
pub struct Visit {
    pub stop: usize,
    pub arrival: f64,
    pub service_start: f64,
    pub departure: f64,
    pub delivered: bool,
}

/// Conditions of a day in an area (shared by every route there that day).
#[derive(Clone, Copy, Debug)]
pub struct DayConditions {
    pub weather: Weather,
    pub peak: bool,
}

impl DayConditions {
    pub fn draw(seed: u64, area: &Area, day: u32) -> Self {
        let peak = rng::unit(rng::hash(seed, "peak", &[day as u64])) < 0.15;
        let u = rng::unit(rng::hash(seed, "weather", &[area.id as u64, day as u64]));
        let cold = area.enu.lat0 > 38.0;
        let weather = if u < 0.58 {
            Weather::Clear
        } else if u < 0.83 {
            Weather::Rain
        } else if u < 0.92 {
            if cold { Weather::Snow } else { Weather::Rain }
        } else {
            Weather::Fog
        };
        DayConditions { weather, peak }
    }
    pub fn speed_factor(&self) -> f64 {
        let w = match self.weather {
            Weather::Clear => 1.0,
            Weather::Rain => 0.86,
            Weather::Snow => 0.66,
            Weather::Fog => 0.8,
        };
        w * if self.peak { 0.85 } else { 1.0 }
    }
    pub fn service_factor(&self) -> f64 {
        let w = match self.weather {
            Weather::Clear => 1.0,
            Weather::Rain => 1.12,
            Weather::Snow => 1.35,
            Weather::Fog => 1.05,
        };
        w * if self.peak { 1.15 } else { 1.0 }
    }
    pub fn fail_factor(&self) -> f64 {
        let w = match self.weather {
            Weather::Clear => 1.0,
            Weather::Rain => 1.5,
            Weather::Snow => 2.6,
            Weather::Fog => 1.3,
        };
        w * if self.peak { 1.7 } else { 1.0 }
    }
}

pub struct Route {
    pub id: String,
    pub day: u32,
    pub cond: DayConditions,
    pub departure: f64,
    pub stops: Vec<StopSpec>,
    pub visits: Vec<Visit>,
    pub track: DrivenPath,
    pub depot: P2,
    /// Traffic of the day per edge: 1 for free-flowing, below 0.5 for a jam.
    pub traffic: Vec<f64>,
    /// Whether the vehicle's GPS receiver reports speed and course (a third of phones do not).
    pub gps_reports_motion: bool,
}

/// Share of road segments jammed on a given day in an area.
pub const JAM_SHARE: f64 = 0.07;

/// Traffic jams of a day in an area (the same for every route there that day).
pub fn day_traffic(seed: u64, area: &Area, day: u32) -> Vec<f64> {
    (0..area.edges.len())
        .map(|e| {
            let h = rng::hash(seed, "jam", &[area.id as u64, day as u64, e as u64]);
            if rng::unit(h) < JAM_SHARE {
                0.2 + 0.25 * rng::unit(rng::mix(h))
            } else {
                1.0
            }
        })
        .collect()
}

/// Local hour of day at UTC time `t` in an area.
pub fn local_hour(area: &Area, t: f64) -> f64 {
    ((t + area.utc_offset_s).rem_euclid(86_400.0)) / 3600.0
}

/// Rush-hour congestion: a speed factor in (0, 1].
pub fn congestion(area: &Area, t: f64) -> f64 {
    let h = local_hour(area, t);
    let rush = (-((h - 8.0) / 1.2).powi(2)).exp() + (-((h - 17.3) / 1.5).powi(2)).exp();
    1.0 - area.params.rush * rush.min(1.0)
        - 0.5 * area.params.rush * (-((h - 12.5) / 1.5).powi(2)).exp()
}

/// The route's driver: how hard they accelerate, brake and take corners (m/s²).
fn draw_driver(rng: &mut SimRng) -> Driver {
    Driver {
        accel: uniform(rng, 1.1, 2.0),
        decel: uniform(rng, 2.0, 3.0),
        lateral: uniform(rng, 2.0, 3.2),
    }
}

/// How many stops a route has: drawn in the area's range, a fifth more on a peak day, 20 to 150.
fn stop_count(rng: &mut SimRng, (lo, hi): (usize, usize), peak: bool) -> usize {
    let mut n_stops = rng.gen_range(lo..=hi);
    if peak {
        n_stops = (n_stops as f64 * 1.2) as usize;
    }
    n_stops.clamp(20, 150)
}

/// Each edge's slowness (parked cars, works) as the driver plans with it (drawn per route) and
/// as the drive meets it (times the day's `traffic` jams: a van keeps its planned route).
fn edge_factors(rng: &mut SimRng, edges: usize, traffic: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let plan: Vec<f64> = (0..edges).map(|_| uniform(rng, 0.82, 1.05)).collect();
    let drive = plan.iter().zip(traffic).map(|(p, t)| p * t).collect();
    (plan, drive)
}

pub fn simulate(seed: u64, area: &Area, index: usize, day: u32) -> Route {
    let mut rng = rng::stream(seed, "route", &[index as u64]);
    let cond = DayConditions::draw(seed, area, day);
    let n_stops = stop_count(&mut rng, area.params.stops, cond.peak);
    let local_dep = uniform(&mut rng, 7.5, 10.5) * 3600.0;
    let departure = DAY0_UTC + day as f64 * 86_400.0 + local_dep - area.utc_offset_s;
    let stops = place_stops(area, &mut rng, n_stops, departure, &cond, index);
    let driver = draw_driver(&mut rng);
    let pace = uniform(&mut rng, 0.9, 1.08);
    // The day's jams slow the drive but are not in the plan: only the map raster shows them.
    let traffic = day_traffic(seed, area, day);
    let (plan_factor, drive_factor) = edge_factors(&mut rng, area.edges.len(), &traffic);
    let edge_factor = (plan_factor.as_slice(), drive_factor.as_slice());
    let depot = area.nodes[area.depot];
    let mut track = DrivenPath::standing(departure, depot, RoadClass::Arterial);
    let speed = |t: f64| congestion(area, t) * cond.speed_factor() * pace;
    let mut remaining: Vec<usize> = (0..stops.len()).collect();
    let mut visits = Vec::with_capacity(stops.len());
    let mut at = Loc::Node(area.depot);
    let mut zone: Option<usize> = None;
    while !remaining.is_empty() {
        let now = track.end_time();
        let here = track.last().p;
        let k = choose_next(area, &stops, &remaining, here, now, zone, &mut rng);
        let s = remaining.remove(k);
        let st = &stops[s];
        let path = plan_path(area, at, Loc::Edge(st.edge, st.frac), edge_factor, &mut rng);
        track.drive(&path, &driver, &speed);
        let arrival = track.end_time();
        let (service_start, departure_t, delivered) = serve(area, st, arrival, &cond, &mut rng);
        track.dwell_until(departure_t);
        visits.push(Visit {
            stop: s,
            arrival,
            service_start,
            departure: departure_t,
            delivered,
        });
        at = Loc::Edge(st.edge, st.frac);
        zone = Some(st.zone);
    }
    // Back to the depot, where the van stands 10 minutes.
    let path = plan_path(area, at, Loc::Node(area.depot), edge_factor, &mut rng);
    track.drive(&path, &driver, &speed);
    track.dwell_until(track.end_time() + 600.0);
    let gps_reports_motion = rng::unit(rng::hash(seed, "gps-motion", &[index as u64])) >= 0.33;
    Route {
        id: format!("syn{index:06}"),
        day,
        cond,
        departure,
        stops,
        visits,
        track,
        depot,
        traffic,
        gps_reports_motion,
    }
}

/// A stop's service for a van arriving at `arrival`: when it starts (an early van waits up to
/// 20 min for the window to open), when the van leaves, and whether the delivery succeeds (less
/// often outside the window, in the evening, in dense zones and on hard days).
fn serve(
    area: &Area,
    st: &StopSpec,
    arrival: f64,
    cond: &DayConditions,
    rng: &mut SimRng,
) -> (f64, f64, bool) {
    let p = &area.params;
    let mut service_start = arrival;
    if let Some((a, _)) = st.tw
        && arrival < a
        && a - arrival < 20.0 * 60.0
    {
        service_start = a; // early: wait for the window to open
    }
    let in_window = st
        .tw
        .is_none_or(|(a, b)| service_start >= a && service_start <= b);
    let hour = local_hour(area, service_start);
    let density = area.zone_density[st.zone] as f64;
    let mut fail = p.fail_p * cond.fail_factor() * (0.6 + 0.9 * density);
    if !in_window {
        fail *= 2.2;
    }
    if hour >= 18.0 {
        fail *= 1.6;
    }
    if st.packages >= 4 {
        fail *= 0.8;
    }
    let delivered = !chance(rng, fail.min(0.9));
    let dwell = st.service_s
        * cond.service_factor()
        * lognormal(rng, 0.3)
        * if delivered { 1.0 } else { 0.7 };
    (service_start, service_start + dwell, delivered)
}

/// A stop's time window, for 40% of the stops: 1, 2 or 4 hours starting on the half hour
/// within the shift.
fn time_window(rng: &mut SimRng, departure: f64) -> Option<(f64, f64)> {
    if !chance(rng, 0.4) {
        return None;
    }
    let len = [3600.0, 7200.0, 7200.0, 14_400.0][rng.gen_range(0..4)];
    let start = ((departure + uniform(rng, -0.5, 6.0) * 3600.0) / 1800.0).round() * 1800.0;
    Some((start, start + len))
}

/// Planned service seconds: a base, per package, more in dense zones, more in the country.
fn service_time(packages: u32, density: f64, rural: bool) -> f64 {
    40.0 + 25.0 * packages as f64 + 90.0 * density + if rural { 30.0 } else { 0.0 }
}

fn place_stops(
    area: &Area,
    rng: &mut SimRng,
    n: usize,
    departure: f64,
    cond: &DayConditions,
    index: usize,
) -> Vec<StopSpec> {
    let p = &area.params;
    let size = p.size_m;
    let center = [uniform(rng, 0.2, 0.8) * size, uniform(rng, 0.2, 0.8) * size];
    let mut radius = p.block_m * (n as f64).sqrt() * 0.9;
    let mut stops: Vec<StopSpec> = Vec::with_capacity(n);
    let mut tries = 0;
    while stops.len() < n && tries < n * 60 {
        tries += 1;
        if tries % (n * 10) == 0 {
            radius *= 1.4;
        }
        let Some(e) = area.random_street(rng, center, radius) else {
            radius *= 1.5;
            continue;
        };
        let frac = uniform(rng, 0.15, 0.85);
        let pos = area.point_on_edge(e, frac);
        if stops
            .iter()
            .any(|s| dist(s.pos, pos) < p.min_stop_spacing_m)
        {
            continue;
        }
        let zone = area.zone_of(pos);
        let density = area.zone_density[zone] as f64;
        let tw = time_window(rng, departure);
        let packages = 1 + poisson(rng, if cond.peak { 1.3 } else { 0.8 });
        let volume_l = (0..packages)
            .map(|_| 3.0 * lognormal(rng, 0.8))
            .sum::<f64>();
        let service_s = service_time(packages, density, area.region == Region::Rural);
        stops.push(StopSpec {
            id: format!("s{index:06}{:03}", stops.len()),
            edge: e,
            frac,
            pos,
            zone,
            tw,
            service_s: service_s.round(),
            packages,
            volume_l: (volume_l * 10.0).round() / 10.0,
        });
    }
    stops
}

/// The driver's hidden policy: stay in the current zone (nearest stop first, with noise),
/// rush to stops whose window is closing, avoid stops whose window has not opened, and when the
/// zone is done go to the nearest zone.
fn choose_next(
    area: &Area,
    stops: &[StopSpec],
    remaining: &[usize],
    here: P2,
    now: f64,
    zone: Option<usize>,
    rng: &mut SimRng,
) -> usize {
    let v_est = area.params.local_mps * 0.6;
    let mut best = (f64::INFINITY, 0);
    for (k, &s) in remaining.iter().enumerate() {
        let st = &stops[s];
        let d = dist(here, st.pos);
        let mut cost = d * lognormal(rng, 0.25);
        if zone.is_some_and(|z| z != st.zone) {
            cost = cost * 2.0 + 2.0 * area.params.block_m;
        }
        if let Some((a, b)) = st.tw {
            let eta = now + d / v_est;
            let slack = b - eta;
            if slack < 2400.0 {
                cost -= (2400.0 - slack.max(-1800.0)) * v_est * 0.6;
            }
            if a - eta > 900.0 {
                cost += (a - eta - 900.0) * v_est * 0.8;
            }
        }
        if cost < best.0 {
            best = (cost, k);
        }
    }
    best.1
}

#[derive(Clone, Copy)]
enum Loc {
    Node(usize),
    Edge(usize, f64),
}

/// The intersection `node` a path enters its next edge from (the path's last point so far): where
/// traffic may halt the vehicle there is a light, and it holds the vehicle 45% of the time (red;
/// else green). Not at the path's very start.
fn at_intersection(out: &mut [PathPt], area: &Area, node: usize, rng: &mut SimRng) {
    let started = out.len() > 1;
    let Some(last) = out.last_mut() else {
        return;
    };
    if !(area.halts[node] && started) {
        return;
    }
    if chance(rng, 0.45) {
        last.halt_s = uniform(rng, 4.0, 40.0);
    }
    last.light = Some(node);
}

/// Fastest path between two locations as planned with `(plan, drive)` speed factors per
/// edge: the path is chosen with `plan`, the speed limits come from `drive`.
fn plan_path(
    area: &Area,
    from: Loc,
    to: Loc,
    (edge_factor, drive_factor): (&[f64], &[f64]),
    rng: &mut SimRng,
) -> Vec<PathPt> {
    let pt = |p: P2, e: usize| {
        let ed = &area.edges[e];
        PathPt {
            p,
            limit: ed.speed_mps * drive_factor[e],
            class: ed.class,
            halt_s: 0.0,
            light: None,
        }
    };
    // Same edge: drive straight along it.
    if let (Loc::Edge(e0, f0), Loc::Edge(e1, f1)) = (from, to)
        && e0 == e1
    {
        return area
            .edge_piece(e0, f0, f1)
            .into_iter()
            .map(|p| pt(p, e0))
            .collect();
    }
    let (start_node, edges) = fastest_edges(area, from, to, edge_factor);
    let mut out: Vec<PathPt> = Vec::new();
    if let Loc::Edge(e, f) = from {
        let to_f = if area.edges[e].a == start_node {
            0.0
        } else {
            1.0
        };
        out.extend(area.edge_piece(e, f, to_f).into_iter().map(|p| pt(p, e)));
    } else {
        let first = edges.first().copied().unwrap_or(0);
        out.push(pt(area.nodes[start_node], first));
    }
    let node = drive_edges(&mut out, area, start_node, &edges, &pt, rng);
    if let Loc::Edge(e, f) = to {
        let from_f = if area.edges[e].a == node { 0.0 } else { 1.0 };
        take_limit_of(&mut out, e, &pt);
        out.extend(
            area.edge_piece(e, from_f, f)
                .into_iter()
                .skip(1)
                .map(|p| pt(p, e)),
        );
    }
    out
}

/// The fastest way between two places (Dijkstra on the edges' times at `edge_factor`): the node
/// it leaves `from` by and the edges from there, in order.
fn fastest_edges(area: &Area, from: Loc, to: Loc, edge_factor: &[f64]) -> (usize, Vec<usize>) {
    let time = |e: usize, f0: f64, f1: f64| {
        area.edges[e].len * (f1 - f0).abs() / (area.edges[e].speed_mps * edge_factor[e])
    };
    let sources: Vec<(usize, f64)> = match from {
        Loc::Node(n) => vec![(n, 0.0)],
        Loc::Edge(e, f) => vec![
            (area.edges[e].a, time(e, f, 0.0)),
            (area.edges[e].b, time(e, f, 1.0)),
        ],
    };
    let (cost, prev) = area.dijkstra(&sources, edge_factor);
    let end_node = match to {
        Loc::Node(n) => n,
        Loc::Edge(e, f) => {
            let (a, b) = (area.edges[e].a, area.edges[e].b);
            let ca = cost[a] + time(e, 0.0, f);
            let cb = cost[b] + time(e, f, 1.0);
            if ca <= cb { a } else { b }
        }
    };
    // Walk back the edges from end_node to a source.
    let mut edges = Vec::new();
    let mut n = end_node;
    while let Some(e) = prev[n] {
        edges.push(e);
        let ed = &area.edges[e];
        n = if ed.a == n { ed.b } else { ed.a };
    }
    edges.reverse();
    (n, edges)
}

/// Drives `edges` from `node` (each intersection with its halt or light), appending their
/// points; the node it ends at.
fn drive_edges(
    out: &mut Vec<PathPt>,
    area: &Area,
    mut node: usize,
    edges: &[usize],
    pt: &impl Fn(P2, usize) -> PathPt,
    rng: &mut SimRng,
) -> usize {
    for &e in edges {
        let ed = &area.edges[e];
        let forward = ed.a == node;
        let mut geo = ed.pts.clone();
        if !forward {
            geo.reverse();
        }
        at_intersection(out, area, node, rng);
        take_limit_of(out, e, pt);
        for p in geo.into_iter().skip(1) {
            out.push(pt(p, e));
        }
        node = if forward { ed.b } else { ed.a };
    }
    node
}

/// A point's limit is that of the segment starting there: the last point (the intersection we
/// leave) takes edge `e`'s, keeping its halt and light.
fn take_limit_of(out: &mut [PathPt], e: usize, pt: &impl Fn(P2, usize) -> PathPt) {
    if let Some(last) = out.last_mut() {
        *last = PathPt {
            halt_s: last.halt_s,
            light: last.light,
            ..pt(last.p, e)
        };
    }
}
