//! Samples to model inputs (the training feature code) and model outputs to predictions: the
//! part of a prediction that needs no model, shared by `dfm predict`, the server's request
//! threads and route plans (a request's own inputs, then its plan's decisions).

use crate::data::sample::Sample;
use crate::features::Features;
use crate::predict::route::{RoutePlan, chosen_ln_p, zone_sequence};
use serde::Serialize;

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Mode {
    pub probability: f64,
    /// Future positions `[lat, lon]`, one per horizon.
    pub lat_lon: Vec<[f64; 2]>,
    /// The same in the vehicle frame: meters forward, meters to the left.
    pub local_m: Vec<[f64; 2]>,
}

/// Local-frame points -> `[lat, lon]`.
fn lat_lon(frame: &crate::frame::LocalFrame, local_m: &[[f64; 2]]) -> Vec<[f64; 2]> {
    local_m
        .iter()
        .map(|p| {
            let (lat, lon) = frame.to_lat_lon(p[0], p[1]);
            [lat, lon]
        })
        .collect()
}

/// One predicted trajectory, in both frames.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Trajectory {
    /// Future positions `[lat, lon]`, one per horizon.
    pub lat_lon: Vec<[f64; 2]>,
    /// The same in the vehicle frame: meters forward, meters to the left.
    pub local_m: Vec<[f64; 2]>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct StopPrediction {
    pub stop_id: String,
    pub eta_p10_s: f64,
    pub eta_p50_s: f64,
    pub eta_p90_s: f64,
    pub on_time_probability: f64,
    /// Probability that this stop is visited next.
    pub next_probability: f64,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Prediction {
    pub key: String,
    pub t0: f64,
    /// Seconds after `t0` of each trajectory point (the request's `horizons_s`, else the
    /// model's own).
    pub horizons_s: Vec<f64>,
    /// The single most likely trajectory (the one to act on: a plan, an ETA, a promise).
    pub most_likely: Trajectory,
    /// Trajectory modes, most probable first (the spread of futures).
    pub modes: Vec<Mode>,
    /// Per listed stop, in the request's order.
    pub stops: Vec<StopPrediction>,
    /// Stop ids, most likely next first.
    pub next_stop_ranking: Vec<String>,
    pub delivered_probability: f64,
    /// Listed stops the model did not read: more than its capacity were listed, and it read the
    /// nearest ones (absent when every stop was read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stops_not_scored: Vec<String>,
    /// The order to drive all the stops in, when the request asked (`"plan_route": true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_plan: Option<crate::predict::route::RoutePlan>,
}

/// One sample's model outputs, as the model gives them (normalized units).
#[derive(Clone, Debug)]
pub struct RawOutput {
    /// Trajectory points per mode (the batch's longest horizon list).
    pub(crate) points: usize,
    pub(crate) traj: Vec<f32>,
    pub(crate) point: Vec<f32>,
    pub(crate) probs: Vec<f32>,
    pub(crate) eta: Vec<f32>,
    pub(crate) on_time: Vec<f32>,
    pub(crate) next: Vec<f32>,
    pub(crate) delivered: f32,
}

impl RawOutput {
    /// The next-stop probabilities, one per stop slot the model reads.
    pub fn next_probabilities(&self) -> &[f32] {
        &self.next
    }
}

/// What a prediction needs from its sample besides the model's outputs.
#[derive(Clone, Debug)]
pub struct PredictionMeta {
    key: String,
    t0: f64,
    frame: crate::frame::LocalFrame,
    horizons_s: Vec<f64>,
    /// The stops the model read, in the request's order.
    stop_ids: Vec<String>,
    not_scored: Vec<String>,
}

impl PredictionMeta {
    /// The listed stops the model reads, in the request's order.
    pub fn stop_ids(&self) -> &[String] {
        &self.stop_ids
    }
}

/// Samples to model inputs (the training feature code) and model outputs to predictions.
#[derive(Clone)]
pub struct Codec {
    norm: std::sync::Arc<crate::features::Featurizer>,
    modes: usize,
}

impl Codec {
    /// A codec for a model with `modes` trajectory modes and this feature code.
    pub fn new(norm: crate::features::Featurizer, modes: usize) -> Self {
        Codec {
            norm: std::sync::Arc::new(norm),
            modes,
        }
    }

    /// The model's trajectory modes.
    pub fn modes(&self) -> usize {
        self.modes
    }

    /// A sample's model inputs and what its prediction will need. Stops beyond the model's
    /// capacity: it reads the nearest ones and the prediction says which it left.
    pub fn prepare(&self, s: Sample) -> (Features, PredictionMeta) {
        let listed: Vec<String> = s.stops.iter().map(|st| st.id.clone()).collect();
        let (fitted, keep) = crate::data::stop_set::fit(s, self.norm.spec.max_stops);
        let not_scored = match keep {
            None => Vec::new(),
            Some(keep) => (0..listed.len())
                .filter(|i| !keep.contains(i))
                .map(|i| listed[i].clone())
                .collect(),
        };
        let f = self.norm.features(&fitted);
        let meta = PredictionMeta {
            key: fitted.key,
            t0: fitted.t0,
            frame: f.meta.frame,
            horizons_s: f.meta.horizons_s.clone(),
            stop_ids: fitted.stops.into_iter().map(|st| st.id).collect(),
            not_scored,
        };
        (f, meta)
    }

    /// A prediction from a sample's outputs: local and lat/lon trajectories, modes most
    /// probable first, per-stop ETAs and probabilities, the next-stop ranking.
    pub fn finish(&self, m: PredictionMeta, r: RawOutput) -> Prediction {
        let (norm, k, n) = (&self.norm, self.modes, m.horizons_s.len());
        let frame = m.frame;
        let mut modes: Vec<Mode> = (0..k)
            .map(|j| {
                let mut local_m = norm.traj_m(&r.traj, j, r.points);
                local_m.truncate(n);
                Mode {
                    probability: r.probs[j] as f64,
                    lat_lon: lat_lon(&frame, &local_m),
                    local_m,
                }
            })
            .collect();
        modes.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        let mut local_m = norm.traj_m(&r.point, 0, r.points);
        local_m.truncate(n);
        let most_likely = Trajectory {
            lat_lon: lat_lon(&frame, &local_m),
            local_m,
        };
        let listed = m.stop_ids.len().min(r.on_time.len());
        let stops: Vec<StopPrediction> = m.stop_ids[..listed]
            .iter()
            .enumerate()
            .map(|(j, id)| {
                let q = |c: usize| norm.eta_decode(r.eta[j * 3 + c]);
                StopPrediction {
                    stop_id: id.clone(),
                    eta_p10_s: q(0),
                    eta_p50_s: q(1),
                    eta_p90_s: q(2),
                    on_time_probability: r.on_time[j] as f64,
                    next_probability: r.next[j] as f64,
                }
            })
            .collect();
        let mut ranking: Vec<&StopPrediction> = stops.iter().collect();
        ranking.sort_by(|a, b| b.next_probability.total_cmp(&a.next_probability));
        Prediction {
            key: m.key,
            t0: m.t0,
            horizons_s: m.horizons_s,
            most_likely,
            modes,
            next_stop_ranking: ranking.iter().map(|p| p.stop_id.clone()).collect(),
            stops,
            delivered_probability: r.delivered as f64,
            stops_not_scored: m.not_scored,
            route_plan: None,
        }
    }
}

/// What a request's prediction needs besides the model's outputs: its own, and its plan's.
pub struct RequestMeta {
    own: PredictionMeta,
    plan: Option<PlanMeta>,
}

/// What a plan needs besides the model's outputs: both orders and their zones, and per decision
/// (forward walk, then reverse) which walk it belongs to, what the model reads of it and the
/// stop it chooses.
pub struct PlanMeta {
    orders: [Vec<String>; 2],
    zones: [Vec<String>; 2],
    decisions: Vec<(usize, PredictionMeta, String)>,
}

impl PlanMeta {
    /// Model inputs of the plan.
    pub fn inputs(&self) -> usize {
        self.decisions.len()
    }
}

impl RequestMeta {
    /// Model inputs this request takes (its own and its plan's decisions).
    pub fn inputs(&self) -> usize {
        1 + self.plan.as_ref().map_or(0, PlanMeta::inputs)
    }
}

impl Codec {
    /// A request's model inputs: its own, then (with `plan_route`) its plan's.
    pub fn prepare_request(&self, s: Sample) -> (Vec<Features>, RequestMeta) {
        let (mut inputs, plan) = match self.prepare_plan(&s) {
            Some((f, m)) => (f, Some(m)),
            None => (Vec::new(), None),
        };
        let (f, own) = self.prepare(s);
        inputs.insert(0, f);
        (inputs, RequestMeta { own, plan })
    }

    /// The prediction of a request from its outputs (as many as its inputs, in order).
    pub fn finish_request(&self, m: RequestMeta, raw: Vec<RawOutput>) -> Prediction {
        let mut raw = raw.into_iter();
        let mut pred = self.finish(m.own, raw.next().expect("the request's own output"));
        pred.route_plan = m.plan.map(|p| self.finish_plan(p, raw));
        pred
    }

    /// The model inputs of a request's plan (every decision of its two walks), when it asks for
    /// one (`plan_route`) and has stops.
    pub fn prepare_plan(&self, s: &Sample) -> Option<(Vec<Features>, PlanMeta)> {
        if !s.plan_route {
            return None;
        }
        let plan = crate::predict::route_plan::plan(s)?;
        let mut inputs = Vec::new();
        let mut decisions = Vec::new();
        let mut orders: [Vec<String>; 2] = Default::default();
        let mut zones: [Vec<String>; 2] = Default::default();
        for (d, order) in plan.orders().into_iter().enumerate() {
            orders[d] = order.iter().map(|&i| s.stops[i].id.clone()).collect();
            zones[d] = zone_sequence(s, order);
            crate::predict::route_plan::walk_each(s, order, |decision, id| {
                let (f, m) = self.prepare(decision);
                inputs.push(f);
                decisions.push((d, m, id.to_string()));
            });
        }
        let meta = PlanMeta {
            orders,
            zones,
            decisions,
        };
        Some((inputs, meta))
    }

    /// A plan from its decisions' outputs: the direction of the higher summed log-probability.
    pub fn finish_plan(&self, p: PlanMeta, raw: impl Iterator<Item = RawOutput>) -> RoutePlan {
        let mut ll = [0.0f64; 2];
        for ((d, meta, id), r) in p.decisions.iter().zip(raw) {
            ll[*d] += chosen_ln_p(meta.stop_ids(), r.next_probabilities(), id);
        }
        let d = if ll[0] >= ll[1] { 0 } else { 1 };
        let [a, b] = p.orders;
        let [za, zb] = p.zones;
        let (order, zones) = if d == 0 { (a, za) } else { (b, zb) };
        RoutePlan {
            order,
            zones,
            log_likelihood: ll[d],
            reverse_log_likelihood: ll[1 - d],
        }
    }
}
