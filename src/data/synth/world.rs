//! The procedural world: a few delivery areas, each a road graph on a jittered grid with
//! buildings, parks, delivery zones and a depot. Urban, suburban and rural areas differ in road
//! density, speed limits, stop spacing, building density and GPS quality.

use crate::data::sample::{Region, RoadClass};
use crate::frame::Enu;
use crate::seed::{self as rng, SimRng, chance, normal, uniform};
use rand::Rng;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub type P2 = [f64; 2];

pub fn dist(a: P2, b: P2) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// What makes a region a region.
#[derive(Clone, Debug)]
pub struct RegionParams {
    pub block_m: f64,
    pub jitter_m: f64,
    /// Probability that a local road segment does not exist.
    pub drop_p: f64,
    /// Every n-th grid line is an arterial.
    pub arterial_every: usize,
    pub local_mps: f64,
    pub arterial_mps: f64,
    pub size_m: f64,
    pub zone_m: f64,
    /// GPS noise (1 sigma, meters) in a zone of density 0.5.
    pub gps_sigma_m: f64,
    /// Probability that an intersection on the way has a traffic light / stop that halts.
    pub halt_p: f64,
    pub building_density: f64,
    pub stops: (usize, usize),
    pub min_stop_spacing_m: f64,
    /// Base probability of a failed delivery attempt.
    pub fail_p: f64,
    /// Strength of rush-hour congestion (0: none).
    pub rush: f64,
    /// Probability that a local road bends (its middle is offset).
    pub bend_p: f64,
}

impl RegionParams {
    pub fn for_region(r: Region) -> Self {
        match r {
            Region::Urban => RegionParams {
                block_m: 110.0,
                jitter_m: 8.0,
                drop_p: 0.10,
                arterial_every: 4,
                local_mps: 30.0 / 3.6,
                arterial_mps: 50.0 / 3.6,
                size_m: 3300.0,
                zone_m: 440.0,
                gps_sigma_m: 6.0,
                halt_p: 0.30,
                building_density: 0.8,
                stops: (60, 150),
                min_stop_spacing_m: 20.0,
                fail_p: 0.07,
                rush: 0.40,
                bend_p: 0.05,
            },
            Region::Suburban => RegionParams {
                block_m: 210.0,
                jitter_m: 20.0,
                drop_p: 0.22,
                arterial_every: 4,
                local_mps: 40.0 / 3.6,
                arterial_mps: 65.0 / 3.6,
                size_m: 5500.0,
                zone_m: 840.0,
                gps_sigma_m: 3.5,
                halt_p: 0.18,
                building_density: 0.45,
                stops: (40, 120),
                min_stop_spacing_m: 35.0,
                fail_p: 0.04,
                rush: 0.25,
                bend_p: 0.35,
            },
            Region::Rural | Region::Unknown => RegionParams {
                block_m: 700.0,
                jitter_m: 70.0,
                drop_p: 0.30,
                arterial_every: 3,
                local_mps: 60.0 / 3.6,
                arterial_mps: 90.0 / 3.6,
                size_m: 11_000.0,
                zone_m: 2800.0,
                gps_sigma_m: 2.5,
                halt_p: 0.06,
                building_density: 0.12,
                stops: (20, 60),
                min_stop_spacing_m: 120.0,
                fail_p: 0.05,
                rush: 0.05,
                bend_p: 0.55,
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct Edge {
    pub a: usize,
    pub b: usize,
    pub class: RoadClass,
    pub speed_mps: f64,
    /// Geometry from node a to node b (2 or 3 points).
    pub pts: Vec<P2>,
    pub len: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct Rect {
    pub min: P2,
    pub max: P2,
}

pub struct Area {
    pub id: usize,
    pub region: Region,
    pub params: RegionParams,
    pub enu: Enu,
    pub utc_offset_s: f64,
    pub nodes: Vec<P2>,
    pub edges: Vec<Edge>,
    /// For each node: (edge index, other node).
    pub adj: Vec<Vec<(usize, usize)>>,
    /// Nodes reachable from the depot.
    pub reachable: Vec<bool>,
    /// Intersections where traffic may halt the vehicle.
    pub halts: Vec<bool>,
    pub depot: usize,
    pub buildings: Vec<Rect>,
    pub parks: Vec<Rect>,
    pub zones_per_side: usize,
    pub zone_density: Vec<f32>,
}

/// Where the areas of the world are (a fictional set of cities, one per slot).
const ORIGINS: [(f64, f64, f64); 6] = [
    (47.61, -122.33, -8.0),
    (41.88, -87.63, -6.0),
    (33.75, -84.39, -5.0),
    (39.74, -104.99, -7.0),
    (45.50, -73.57, -5.0),
    (30.27, -97.74, -6.0),
];

/// Region of the i-th area: the three regions in turn, so every world has all of them.
pub fn area_region(i: usize) -> Region {
    [Region::Urban, Region::Suburban, Region::Rural][i % 3]
}

impl Area {
    pub fn generate(seed: u64, id: usize) -> Area {
        let region = area_region(id);
        let p = RegionParams::for_region(region);
        let mut rng = rng::stream(seed, "area", &[id as u64]);
        let (lat, lon, tz) = ORIGINS[id % ORIGINS.len()];
        let lat = lat + 0.3 * (id / ORIGINS.len()) as f64;
        let n = (p.size_m / p.block_m).round() as usize + 1;
        let nodes = grid_nodes(&p, n, &mut rng);
        let edges = grid_edges(&p, n, &nodes, region, &mut rng);
        let mut adj = vec![Vec::new(); nodes.len()];
        for (e, ed) in edges.iter().enumerate() {
            adj[ed.a].push((e, ed.b));
            adj[ed.b].push((e, ed.a));
        }
        let depot = pick_depot(&p, n, &nodes, &mut rng);
        let reachable = reachable_from(depot, &adj);
        let halts = (0..nodes.len())
            .map(|k| adj[k].len() >= 3 && chance(&mut rng, 0.7))
            .collect();
        let zones_per_side = (p.size_m / p.zone_m).ceil().max(1.0) as usize;
        let zone_density = (0..zones_per_side * zones_per_side)
            .map(|_| (p.building_density + 0.18 * normal(&mut rng)).clamp(0.02, 1.0) as f32)
            .collect::<Vec<f32>>();
        let (buildings, parks) = blocks(&p, n, &nodes, &zone_density, zones_per_side, &mut rng);
        Area {
            id,
            region,
            enu: Enu::new(lat, lon),
            utc_offset_s: tz * 3600.0,
            nodes,
            edges,
            adj,
            reachable,
            halts,
            depot,
            buildings,
            parks,
            zones_per_side,
            zone_density,
            params: p,
        }
    }

    pub fn zone_of(&self, p: P2) -> usize {
        let zs = self.zones_per_side;
        let zx = ((p[0] / self.params.zone_m).floor().max(0.0) as usize).min(zs - 1);
        let zy = ((p[1] / self.params.zone_m).floor().max(0.0) as usize).min(zs - 1);
        zy * zs + zx
    }

    pub fn zone_name(&self, z: usize) -> String {
        let zs = self.zones_per_side;
        format!(
            "{}-{}.{}",
            (b'A' + (self.id % 26) as u8) as char,
            z / zs,
            z % zs
        )
    }

    pub fn zone_center(&self, z: usize) -> P2 {
        let zs = self.zones_per_side;
        let m = self.params.zone_m;
        [((z % zs) as f64 + 0.5) * m, ((z / zs) as f64 + 0.5) * m]
    }

    pub fn lat_lon(&self, p: P2) -> (f64, f64) {
        self.enu.to_lat_lon(p[0], p[1])
    }

    /// Point at fraction `f` of an edge's length, measured from node `a`.
    pub fn point_on_edge(&self, e: usize, f: f64) -> P2 {
        let ed = &self.edges[e];
        let mut rest = f.clamp(0.0, 1.0) * ed.len;
        for w in ed.pts.windows(2) {
            let l = dist(w[0], w[1]);
            if rest <= l || l == 0.0 {
                let t = if l > 0.0 { rest / l } else { 0.0 };
                return [
                    w[0][0] + t * (w[1][0] - w[0][0]),
                    w[0][1] + t * (w[1][1] - w[0][1]),
                ];
            }
            rest -= l;
        }
        *ed.pts.last().unwrap()
    }

    /// Geometry of an edge between fractions `f0` and `f1` (either direction).
    pub fn edge_piece(&self, e: usize, f0: f64, f1: f64) -> Vec<P2> {
        let ed = &self.edges[e];
        let mut cum = vec![0.0];
        for w in ed.pts.windows(2) {
            cum.push(cum.last().unwrap() + dist(w[0], w[1]));
        }
        let (lo, hi) = (f0.min(f1) * ed.len, f0.max(f1) * ed.len);
        let mut out = vec![self.point_on_edge(e, lo / ed.len.max(1e-9))];
        for (k, &c) in cum.iter().enumerate() {
            if c > lo && c < hi {
                out.push(ed.pts[k]);
            }
        }
        out.push(self.point_on_edge(e, hi / ed.len.max(1e-9)));
        if f0 > f1 {
            out.reverse();
        }
        out
    }

    /// Travel-time shortest paths from a set of (node, initial cost) sources, with each edge's
    /// speed scaled by `factor` (the traffic the driver's navigation knows about).
    /// Returns per node (cost, previous edge).
    pub fn dijkstra(
        &self,
        sources: &[(usize, f64)],
        factor: &[f64],
    ) -> (Vec<f64>, Vec<Option<usize>>) {
        #[derive(PartialEq)]
        struct Item(f64, usize);
        impl Eq for Item {}
        impl PartialOrd for Item {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Item {
            fn cmp(&self, o: &Self) -> Ordering {
                o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
            }
        }
        let mut cost = vec![f64::INFINITY; self.nodes.len()];
        let mut prev = vec![None; self.nodes.len()];
        let mut heap = BinaryHeap::new();
        for &(s, c) in sources {
            if c < cost[s] {
                cost[s] = c;
                heap.push(Item(c, s));
            }
        }
        while let Some(Item(c, u)) = heap.pop() {
            if c > cost[u] {
                continue;
            }
            for &(e, v) in &self.adj[u] {
                let nc = c + self.edges[e].len / (self.edges[e].speed_mps * factor[e]);
                if nc < cost[v] {
                    cost[v] = nc;
                    prev[v] = Some(e);
                    heap.push(Item(nc, v));
                }
            }
        }
        (cost, prev)
    }

    /// A random reachable edge that is not a highway, weighted by length.
    pub fn random_street(&self, rng: &mut SimRng, center: P2, radius: f64) -> Option<usize> {
        let cands: Vec<usize> = (0..self.edges.len())
            .filter(|&e| {
                let ed = &self.edges[e];
                ed.class != RoadClass::Highway
                    && self.reachable[ed.a]
                    && dist(self.point_on_edge(e, 0.5), center) <= radius
            })
            .collect();
        if cands.is_empty() {
            return None;
        }
        Some(cands[rng.gen_range(0..cands.len())])
    }
}

/// Buildings and parks inside the blocks of the grid.
fn blocks(
    p: &RegionParams,
    n: usize,
    nodes: &[P2],
    zone_density: &[f32],
    zps: usize,
    rng: &mut SimRng,
) -> (Vec<Rect>, Vec<Rect>) {
    let mut buildings = Vec::new();
    let mut parks = Vec::new();
    let margin = 9.0;
    for j in 0..n - 1 {
        for i in 0..n - 1 {
            let c = [
                nodes[j * n + i],
                nodes[j * n + i + 1],
                nodes[(j + 1) * n + i],
                nodes[(j + 1) * n + i + 1],
            ];
            let min = [c[0][0].max(c[2][0]) + margin, c[0][1].max(c[1][1]) + margin];
            let max = [c[1][0].min(c[3][0]) - margin, c[2][1].min(c[3][1]) - margin];
            if max[0] - min[0] < 10.0 || max[1] - min[1] < 10.0 {
                continue;
            }
            let mid = [(min[0] + max[0]) / 2.0, (min[1] + max[1]) / 2.0];
            let zx = ((mid[0] / p.zone_m) as usize).min(zps - 1);
            let zy = ((mid[1] / p.zone_m) as usize).min(zps - 1);
            let density = zone_density[zy * zps + zx] as f64;
            if chance(rng, 0.07) {
                parks.push(Rect { min, max });
                continue;
            }
            // Lots along the block, filled according to the zone's density.
            let lot = (p.block_m / 4.0).clamp(18.0, 60.0);
            let nx = ((max[0] - min[0]) / lot).floor().max(1.0) as usize;
            let ny = ((max[1] - min[1]) / lot).floor().max(1.0) as usize;
            let (wx, wy) = ((max[0] - min[0]) / nx as f64, (max[1] - min[1]) / ny as f64);
            for by in 0..ny {
                for bx in 0..nx {
                    if !chance(rng, density) {
                        continue;
                    }
                    let fill = 0.55 + 0.4 * density * rng.r#gen::<f64>();
                    let (sx, sy) = (wx * fill, wy * fill);
                    let x0 = min[0] + bx as f64 * wx + (wx - sx) * rng.r#gen::<f64>();
                    let y0 = min[1] + by as f64 * wy + (wy - sy) * rng.r#gen::<f64>();
                    buildings.push(Rect {
                        min: [x0, y0],
                        max: [x0 + sx, y0 + sy],
                    });
                }
            }
        }
    }
    (buildings, parks)
}

/// The street grid's intersections, jittered inside the area (not on its border).
fn grid_nodes(p: &RegionParams, n: usize, rng: &mut SimRng) -> Vec<P2> {
    let mut nodes = Vec::with_capacity(n * n);
    for j in 0..n {
        for i in 0..n {
            let jx = if i == 0 || i == n - 1 {
                0.0
            } else {
                normal(rng) * p.jitter_m * 0.5
            };
            let jy = if j == 0 || j == n - 1 {
                0.0
            } else {
                normal(rng) * p.jitter_m * 0.5
            };
            nodes.push([i as f64 * p.block_m + jx, j as f64 * p.block_m + jy]);
        }
    }
    nodes
}

/// The streets between neighbouring intersections: class by grid line (a highway through a
/// rural area, arterials every few lines), some local streets missing, some bent.
fn grid_edges(
    p: &RegionParams,
    n: usize,
    nodes: &[P2],
    region: Region,
    rng: &mut SimRng,
) -> Vec<Edge> {
    let idx = |i: usize, j: usize| j * n + i;
    let mut edges = Vec::new();
    let highway_line = if region == Region::Rural {
        Some(n / 2)
    } else {
        None
    };
    let add = |a: usize, b: usize, line: usize, rng: &mut SimRng, edges: &mut Vec<Edge>| {
        let class = if Some(line) == highway_line {
            RoadClass::Highway
        } else if line.is_multiple_of(p.arterial_every) {
            RoadClass::Arterial
        } else {
            RoadClass::Local
        };
        if class == RoadClass::Local && chance(rng, p.drop_p) {
            return;
        }
        let speed_mps = match class {
            RoadClass::Local => p.local_mps,
            RoadClass::Arterial => p.arterial_mps,
            RoadClass::Highway => 100.0 / 3.6,
        };
        let (pa, pb) = (nodes[a], nodes[b]);
        let mut pts = vec![pa];
        if class != RoadClass::Highway && chance(rng, p.bend_p) {
            let (dx, dy) = (pb[0] - pa[0], pb[1] - pa[1]);
            let off = uniform(rng, -0.18, 0.18);
            pts.push([pa[0] + 0.5 * dx - off * dy, pa[1] + 0.5 * dy + off * dx]);
        }
        pts.push(pb);
        let len = pts.windows(2).map(|w| dist(w[0], w[1])).sum();
        edges.push(Edge {
            a,
            b,
            class,
            speed_mps,
            pts,
            len,
        });
    };
    for j in 0..n {
        for i in 0..n {
            if i + 1 < n {
                add(idx(i, j), idx(i + 1, j), j, rng, &mut edges);
            }
            if j + 1 < n {
                add(idx(i, j), idx(i, j + 1), i, rng, &mut edges);
            }
        }
    }
    edges
}

/// The depot: the arterial intersection nearest to a point off-centre.
fn pick_depot(p: &RegionParams, n: usize, nodes: &[P2], rng: &mut SimRng) -> usize {
    let target = [
        p.size_m * uniform(rng, 0.3, 0.7),
        p.size_m * uniform(rng, 0.3, 0.7),
    ];
    (0..nodes.len())
        .filter(|&k| {
            (k % n).is_multiple_of(p.arterial_every) && (k / n).is_multiple_of(p.arterial_every)
        })
        .min_by(|&a, &b| dist(nodes[a], target).total_cmp(&dist(nodes[b], target)))
        .unwrap_or(0)
}

/// Which intersections the depot reaches.
fn reachable_from(depot: usize, adj: &[Vec<(usize, usize)>]) -> Vec<bool> {
    let mut reachable = vec![false; adj.len()];
    let mut stack = vec![depot];
    reachable[depot] = true;
    while let Some(u) = stack.pop() {
        for &(_, v) in &adj[u] {
            if !reachable[v] {
                reachable[v] = true;
                stack.push(v);
            }
        }
    }
    reachable
}
