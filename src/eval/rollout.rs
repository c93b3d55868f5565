//! Greedy roll-out of whole routes (route datasets such as the LMRC import, whose samples are
//! the decisions of a route: the vehicle at a stop, the remaining stops, the next one). From each
//! route's first decision, the predictor picks the next stop, the vehicle moves there (time
//! advances by the travel time and the stop's service time), and so on until every stop is
//! ordered; the order is compared with the driven one (Kendall's tau, challenge score).

use super::sequence::{lmrc_score, order_krc};
use crate::batch::FeatureBatcher;
use crate::data::sample::Sample;
use crate::features::Featurizer;
use crate::frame::{Enu, LocalFrame};
use crate::model::{DfmModel, TokenMasks};
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// Speed assumed for travel between stops, m/s (as the LMRC importer's default).
pub const SPEED_MPS: f64 = crate::predict::route_plan::TRAVEL_SPEED_MPS;

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RolloutMetrics {
    pub routes: usize,
    /// Kendall's tau between predicted and driven positions, mean over routes.
    pub krc: f64,
    /// The challenge's score (lower is better), mean over routes.
    pub sequence_score: f64,
}

/// What a route needs for its roll-out, gathered while streaming its decisions.
#[derive(Default)]
pub struct RouteLog {
    /// The decision with the most stops (the first one: all stops remain).
    pub start: Option<Sample>,
    /// (decision key, next stop id) of every decision.
    pub nexts: Vec<(String, String)>,
}

impl RouteLog {
    pub fn add(&mut self, s: &Sample) {
        if let Some(k) = s.target.as_ref().and_then(|t| t.next_stop) {
            self.nexts.push((s.key.clone(), s.stops[k].id.clone()));
        }
        if self
            .start
            .as_ref()
            .is_none_or(|st| s.stops.len() > st.stops.len())
        {
            let mut st = s.clone();
            st.target = None;
            self.start = Some(st);
        }
    }

    /// The driven order of the stops (ids), when the log covers the whole route.
    fn actual(&self) -> Option<Vec<String>> {
        let start = self.start.as_ref()?;
        let mut n = self.nexts.clone();
        n.sort();
        let order: Vec<String> = n.into_iter().map(|x| x.1).collect();
        // The decisions must cover exactly the start's stops, each once.
        let mut a: Vec<&String> = order.iter().collect();
        let mut b: Vec<&String> = start.stops.iter().map(|s| &s.id).collect();
        a.sort();
        b.sort();
        (a == b).then_some(order)
    }
}

pub use crate::predict::route_plan::advance;

/// Picks the next stop of a decision: the index of the highest score.
pub type Chooser<'a> = dyn Fn(&[Sample]) -> Vec<usize> + 'a;

/// The log-probability of choosing stop `idx` at each decision.
pub type Scorer<'a> = dyn Fn(&[Sample], &[usize]) -> Vec<f64> + 'a;

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |a, i| if v[i] > v[a] { i } else { a })
}

/// The model's next-stop logits of each decision, one per listed stop (minus infinity for the
/// stops a model of smaller capacity leaves out: it reads the nearest `max_stops`).
pub fn pointer_logits(
    model: &DfmModel,
    norm: &Featurizer,
    device: &Device,
    batch: &[Sample],
) -> Vec<Vec<f64>> {
    let n = norm.spec.max_stops;
    let fitted: Vec<_> = batch
        .iter()
        .map(|s| crate::data::stop_set::fit(s.clone(), n))
        .collect();
    let feats: Vec<_> = fitted.iter().map(|(s, _)| norm.features(s)).collect();
    let b = FeatureBatcher.batch(feats, device);
    let masks = TokenMasks::keep(super::keep_mask(&[], batch.len(), device));
    let logits: Vec<f32> = model
        .forward(&b, &masks)
        .next_logits
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32");
    batch
        .iter()
        .zip(&fitted)
        .enumerate()
        .map(|(i, (s, (f, keep)))| {
            let mut out = vec![f64::NEG_INFINITY; s.stops.len()];
            for j in 0..f.stops.len().min(n) {
                out[keep.as_ref().map_or(j, |k| k[j])] = logits[i * n + j] as f64;
            }
            out
        })
        .collect()
}

/// The model's next-stop pointer as a chooser; with `zone_first`, its pick among the stops of
/// the vehicle's zone while any remain (decoding that keeps the zone sequence whole, as drivers
/// do), among all stops otherwise.
pub fn model_chooser<'a>(
    model: &'a DfmModel,
    norm: &'a Featurizer,
    device: &'a Device,
    zone_first: bool,
) -> impl Fn(&[Sample]) -> Vec<usize> + 'a {
    move |batch: &[Sample]| {
        pointer_logits(model, norm, device, batch)
            .into_iter()
            .zip(batch)
            .map(|(logits, s)| {
                let here = s.context.zone.as_deref();
                let in_zone = |j: usize| here.is_some() && s.stops[j].zone.as_deref() == here;
                let read = |j: usize| logits[j].is_finite();
                let restrict = zone_first && (0..s.stops.len()).any(|j| read(j) && in_zone(j));
                let scores: Vec<f64> = (0..s.stops.len())
                    .map(|j| {
                        if restrict && !in_zone(j) {
                            f64::NEG_INFINITY
                        } else {
                            logits[j]
                        }
                    })
                    .collect();
                argmax(&scores)
            })
            .collect()
    }
}

/// The model's log-probability of each decision's choice (a stop it does not read: ln 1e-9).
pub fn model_scorer<'a>(
    model: &'a DfmModel,
    norm: &'a Featurizer,
    device: &'a Device,
) -> impl Fn(&[Sample], &[usize]) -> Vec<f64> + 'a {
    move |batch: &[Sample], chosen: &[usize]| {
        pointer_logits(model, norm, device, batch)
            .into_iter()
            .zip(chosen)
            .map(|(l, &k)| {
                // Over the stops it reads (finite logits); a stop it does not read counts as one
                // it gives a billionth.
                let read = || l.iter().copied().filter(|v| v.is_finite());
                let max = read().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = read().map(|v| (v - max).exp()).sum();
                if l[k].is_finite() {
                    l[k] - max - z.ln()
                } else {
                    1e-9f64.ln()
                }
            })
            .collect()
    }
}

/// A rule's scores of a decision's stops (higher = sooner; the baselines' scores).
pub type RuleScores = fn(&Sample, &LocalFrame) -> Vec<f64>;

/// A rule as a chooser: the stop of the highest score under `scores`.
pub fn rule_chooser(scores: RuleScores) -> impl Fn(&[Sample]) -> Vec<usize> {
    move |batch: &[Sample]| {
        batch
            .iter()
            .map(|s| argmax(&scores(s, &LocalFrame::from_history(&s.history))))
            .collect()
    }
}

/// A route to roll out: its first decision and the driven order of its stops (ids).
struct Route {
    start: Sample,
    actual: Vec<String>,
}

/// The routes whose logs cover a whole route of two or more stops.
fn routes_of(logs: &BTreeMap<String, RouteLog>) -> Vec<Route> {
    logs.values()
        .filter_map(|r| {
            Some(Route {
                start: r.start.clone()?,
                actual: r.actual()?,
            })
        })
        .filter(|r| r.start.stops.len() >= 2)
        .collect()
}

/// Rolls every route out with `choose` (routes advance together, `batch` decisions at a time).
pub fn run(
    routes: &BTreeMap<String, RouteLog>,
    choose: &Chooser,
    batch: usize,
) -> Option<RolloutMetrics> {
    let routes = routes_of(routes);
    if routes.is_empty() {
        return None;
    }
    let mut items: Vec<(Sample, Vec<String>)> = routes
        .iter()
        .map(|r| (r.start.clone(), Vec::new()))
        .collect();
    loop {
        let active: Vec<usize> = (0..items.len())
            .filter(|&i| !items[i].0.stops.is_empty())
            .collect();
        if active.is_empty() {
            break;
        }
        for chunk in active.chunks(batch.max(1)) {
            let samples: Vec<Sample> = chunk.iter().map(|&i| items[i].0.clone()).collect();
            for (&i, k) in chunk.iter().zip(choose(&samples)) {
                let (s, order) = &mut items[i];
                order.push(s.stops[k].id.clone());
                *s = advance(s, k);
            }
        }
    }
    let scored: Vec<(f64, f64)> = routes
        .iter()
        .zip(&items)
        .map(|(r, (_, order))| route_metrics(r, order))
        .collect();
    Some(mean_metrics(&scored))
}

/// Planned roll-outs (`route_plan`): each route's zone plan driven in the direction the model
/// finds likelier (`model`: the sum of its log-probabilities over the route's decisions), from
/// the end nearer the station (`nearest_end_first`), from the farther end (`far_end_first`), and
/// in the direction that matches the driven order better (`better_end_first`: it reads the
/// answer, a bound on what choosing the direction can reach).
pub fn planned(
    logs: &BTreeMap<String, RouteLog>,
    score: &Scorer,
    batch: usize,
) -> Option<BTreeMap<String, RolloutMetrics>> {
    let routes = routes_of(logs);
    if routes.is_empty() {
        return None;
    }
    let plans: Vec<crate::predict::route_plan::Plan> = routes
        .iter()
        .map(|r| crate::predict::route_plan::plan(&r.start).expect("two or more stops and a fix"))
        .collect();
    let ids = |r: &Route, o: &[usize]| -> Vec<String> {
        o.iter().map(|&i| r.start.stops[i].id.clone()).collect()
    };
    // Per route: (forward, reverse) metrics, and the first stop's distance from the start.
    let mut both = Vec::new();
    let mut first_dist = Vec::new();
    let mut walks = Vec::new();
    for (r, p) in routes.iter().zip(&plans) {
        let [f, b] = p.orders().map(|o| ids(r, o));
        both.push((route_metrics(r, &f), route_metrics(r, &b)));
        let here = r.start.history.last().expect("validated");
        let enu = Enu::new(here.lat, here.lon);
        let d = |o: &[usize]| {
            let st = &r.start.stops[o[0]];
            let (e, n) = enu.to_en(st.lat, st.lon);
            e.hypot(n)
        };
        first_dist.push((d(&p.forward), d(&p.reverse)));
        walks.push((r.start.clone(), f));
        walks.push((r.start.clone(), b));
    }
    let ll = log_likelihoods(walks, score, batch);
    let pick = |choose: &dyn Fn(usize) -> bool| -> RolloutMetrics {
        let v: Vec<(f64, f64)> = (0..routes.len())
            .map(|i| if choose(i) { both[i].0 } else { both[i].1 })
            .collect();
        mean_metrics(&v)
    };
    let forward_nearer = |i: usize| first_dist[i].0 <= first_dist[i].1;
    Some(BTreeMap::from([
        ("model".into(), pick(&|i| ll[2 * i] >= ll[2 * i + 1])),
        ("nearest_end_first".into(), pick(&forward_nearer)),
        ("far_end_first".into(), pick(&|i| !forward_nearer(i))),
        (
            "better_end_first".into(),
            pick(&|i| both[i].0.0 >= both[i].1.0),
        ),
    ]))
}

/// The sum of `score` over the decisions of each walk (a first decision and the order, by stop
/// id, in which its stops are visited); walks advance together, `batch` decisions at a time.
fn log_likelihoods(walks: Vec<(Sample, Vec<String>)>, score: &Scorer, batch: usize) -> Vec<f64> {
    let mut ll = vec![0.0; walks.len()];
    let mut state: Vec<(Sample, usize)> = walks.iter().map(|(s, _)| (s.clone(), 0)).collect();
    loop {
        let active: Vec<usize> = (0..state.len())
            .filter(|&i| state[i].1 < walks[i].1.len())
            .collect();
        if active.is_empty() {
            return ll;
        }
        for chunk in active.chunks(batch.max(1)) {
            let samples: Vec<Sample> = chunk.iter().map(|&i| state[i].0.clone()).collect();
            let chosen: Vec<usize> = chunk
                .iter()
                .map(|&i| {
                    let (s, k) = &state[i];
                    let id = &walks[i].1[*k];
                    s.stops
                        .iter()
                        .position(|st| &st.id == id)
                        .expect("a listed stop")
                })
                .collect();
            for ((&i, &k), l) in chunk.iter().zip(&chosen).zip(score(&samples, &chosen)) {
                ll[i] += l;
                let (s, step) = &mut state[i];
                *s = advance(s, k);
                *step += 1;
            }
        }
    }
}

fn mean_metrics(v: &[(f64, f64)]) -> RolloutMetrics {
    let n = v.len().max(1) as f64;
    RolloutMetrics {
        routes: v.len(),
        krc: v.iter().map(|x| x.0).sum::<f64>() / n,
        sequence_score: v.iter().map(|x| x.1).sum::<f64>() / n,
    }
}

/// Kendall's tau and the challenge's score of a predicted order (stop ids) of a route.
fn route_metrics(r: &Route, predicted: &[String]) -> (f64, f64) {
    let (start, actual) = (&r.start, &r.actual);
    // Index 0 is the station (the start's position); stops follow in driven order.
    let here = start.history.last().unwrap();
    let pos: Vec<(f64, f64)> = std::iter::once((here.lat, here.lon))
        .chain(actual.iter().map(|id| {
            let st = start
                .stops
                .iter()
                .find(|s| &s.id == id)
                .expect("the driven stops are the start's stops");
            (st.lat, st.lon)
        }))
        .collect();
    let idx = |id: &String| actual.iter().position(|a| a == id).unwrap() + 1;
    let cost: Vec<Vec<f64>> = pos
        .iter()
        .map(|a| {
            let enu = Enu::new(a.0, a.1);
            pos.iter()
                .map(|b| {
                    let (e, n) = enu.to_en(b.0, b.1);
                    (e * e + n * n).sqrt() / SPEED_MPS
                })
                .collect()
        })
        .collect();
    let a: Vec<usize> = std::iter::once(0)
        .chain(1..=actual.len())
        .chain(std::iter::once(0))
        .collect();
    let p: Vec<usize> = std::iter::once(0)
        .chain(predicted.iter().map(idx))
        .chain(std::iter::once(0))
        .collect();
    let score = lmrc_score(&a, &p, &cost);
    let krc = order_krc(&a[1..a.len() - 1], &p[1..p.len() - 1]).unwrap_or(0.0);
    (krc, score)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::{Fix, Labels, Stop};

    /// A route along a street east of the station: stops 100 m apart, driven in `order`.
    fn route(order: &[usize]) -> RouteLog {
        let stops: Vec<Stop> = (0..4)
            .map(|i| Stop {
                service_s: Some(30.0),
                packages: Some(1),
                ..Stop::at(format!("s{i}"), 40.0, 0.0 + 0.001_2 * (i + 1) as f64)
            })
            .collect();
        let mut s = Sample {
            stops,
            ..Sample::bare("r-0001", 0.0, vec![Fix::at(0.0, 40.0, 0.0)])
        };
        let mut log = RouteLog::default();
        for (k, &next) in order.iter().enumerate() {
            let idx = s
                .stops
                .iter()
                .position(|x| x.id == format!("s{next}"))
                .unwrap();
            let mut d = s.clone();
            d.key = format!("r-{:04}", k + 1);
            d.target = Some(Labels {
                next_stop: Some(idx),
                ..Default::default()
            });
            log.add(&d);
            s = advance(&s, idx);
        }
        log
    }

    fn roll(order: &[usize]) -> RolloutMetrics {
        let routes: BTreeMap<String, RouteLog> = [("r".to_string(), route(order))].into();
        run(
            &routes,
            &rule_chooser(super::super::baselines::nearest_first_scores),
            4,
        )
        .unwrap()
    }

    #[test]
    fn nearest_first_matches_a_driver_who_drives_outwards() {
        let m = roll(&[0, 1, 2, 3]);
        assert_eq!(m.routes, 1);
        assert!((m.krc - 1.0).abs() < 1e-12);
        assert!(m.sequence_score.abs() < 1e-12);
    }

    #[test]
    fn other_drivers_give_lower_kendall() {
        let m = roll(&[3, 2, 1, 0]);
        assert!((m.krc + 1.0).abs() < 1e-12, "{}", m.krc);
        // The challenge's sequence deviation counts jumps between driven neighbours, so the
        // reverse of the driven order scores 0, as in the official scorer.
        assert!(m.sequence_score.abs() < 1e-12);
        // One swap: tau = 1 - 2 * 1 / 6, and a jump (nearest-first visits s0 before s1).
        let m = roll(&[1, 0, 2, 3]);
        assert!((m.krc - 2.0 / 3.0).abs() < 1e-12, "{}", m.krc);
        assert!(m.sequence_score > 0.0);
    }

    #[test]
    fn an_incomplete_route_is_not_rolled_out() {
        let mut log = route(&[0, 1, 2, 3]);
        log.nexts.pop();
        let routes: BTreeMap<String, RouteLog> = [("r".to_string(), log)].into();
        assert!(
            run(
                &routes,
                &rule_chooser(super::super::baselines::nearest_first_scores),
                4
            )
            .is_none()
        );
    }

    #[test]
    fn planned_roll_outs_drive_the_plan_the_way_the_scorer_prefers() {
        let routes: BTreeMap<String, RouteLog> = [("r".to_string(), route(&[0, 1, 2, 3]))].into();
        // Log-probability -(stops left) * (metres from the station): far stops late is likelier.
        let near_first = |batch: &[Sample], chosen: &[usize]| -> Vec<f64> {
            batch
                .iter()
                .zip(chosen)
                .map(|(s, &k)| {
                    let (e, n) = Enu::new(40.0, 0.0).to_en(s.stops[k].lat, s.stops[k].lon);
                    -(s.stops.len() as f64) * e.hypot(n)
                })
                .collect()
        };
        let far_first = |batch: &[Sample], chosen: &[usize]| -> Vec<f64> {
            near_first(batch, chosen).into_iter().map(|x| -x).collect()
        };
        let p = planned(&routes, &near_first, 3).unwrap();
        assert!((p["better_end_first"].krc - 1.0).abs() < 1e-12);
        assert!((p["nearest_end_first"].krc - 1.0).abs() < 1e-12);
        assert!((p["far_end_first"].krc + 1.0).abs() < 1e-12);
        assert_eq!(p["model"], p["nearest_end_first"]);
        let p = planned(&routes, &far_first, 3).unwrap();
        assert_eq!(p["model"], p["far_end_first"]);
    }

    #[test]
    fn advancing_moves_the_vehicle_and_the_clock() {
        let log = route(&[0, 1, 2, 3]);
        let mut s = log.start.unwrap();
        s.imu = Some(crate::data::sample::Imu {
            rate_hz: 1.0,
            file: None,
            npy_base64: None,
            data: vec![[0.0; 4]],
        });
        let n = advance(&s, 1);
        assert!(n.imu.is_none(), "the start's sensors stay at the start");
        assert_eq!(n.stops.len(), 3);
        assert_eq!(n.history[0].lon, s.stops[1].lon);
        let (e, _) = Enu::new(40.0, 0.0).to_en(40.0, s.stops[1].lon);
        assert!((n.t0 - (e / SPEED_MPS + 30.0)).abs() < 1e-9);
    }
}
