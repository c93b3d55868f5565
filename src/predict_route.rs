//! A request's route plan (`"plan_route": true`): the order of all its stops that a downstream
//! route planner acts on. The stops' zone plan (`route_plan::plan`: zones kept whole, moving
//! between neighbouring zones) can be driven from either end; the model picks the end it finds
//! likelier, by the sum of its next-stop log-probabilities over the decisions of each walk (the
//! evaluation's `route_plans.model`). Every decision of both walks is known before the model
//! runs (the vehicle at each stop in turn), so a plan is one batch of model inputs, prepared and
//! read back on the request threads like the request's own.

use crate::data::sample::Sample;
use crate::features::Features;
use crate::predict::{Codec, Prediction, PredictionMeta, RawOutput};
use serde::Serialize;

/// Most stops a request may ask to plan: each adds two decisions (one per direction) to the
/// model's work.
pub const MAX_PLAN_STOPS: usize = 1024;

/// Log-probability counted for a stop the model did not read (more stops than its capacity), as
/// evaluation's scorer counts it.
const UNREAD_LN_P: f64 = -20.723_265_836_946_41; // ln 1e-9

/// Smallest probability a read stop counts (the f32 softmax's smallest positive value), so that
/// one that underflowed to 0 does not make the sum minus infinity.
const MIN_READ_P: f64 = 1e-45;

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RoutePlan {
    /// Every stop id once, in the order to drive them.
    pub order: Vec<String>,
    /// The zones in the order they are driven (empty when the stops have none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// The model's log-likelihood of this order, and of the same plan driven from the other end.
    pub log_likelihood: f64,
    pub reverse_log_likelihood: f64,
}

/// The model inputs a request takes: its own, and with `plan_route`, one per stop for each of
/// the plan's two walks (known before anything is prepared, so a server can refuse the work
/// first).
pub fn inputs_of(s: &Sample) -> usize {
    1 + if s.plan_route { 2 * s.stops.len() } else { 0 }
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
        let plan = crate::route_plan::plan(s)?;
        let mut inputs = Vec::new();
        let mut decisions = Vec::new();
        let mut orders: [Vec<String>; 2] = Default::default();
        let mut zones: [Vec<String>; 2] = Default::default();
        for (d, order) in plan.orders().into_iter().enumerate() {
            orders[d] = order.iter().map(|&i| s.stops[i].id.clone()).collect();
            zones[d] = zone_sequence(s, order);
            crate::route_plan::walk_each(s, order, |decision, id| {
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
            ll[*d] += chosen_ln_p(meta, &r, id);
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

/// The model's log-probability of choosing stop `id` at a decision ([`UNREAD_LN_P`] for a stop
/// it did not read).
fn chosen_ln_p(meta: &PredictionMeta, r: &RawOutput, id: &str) -> f64 {
    let next = r.next_probabilities();
    let read = meta.stop_ids().len().min(next.len());
    match meta.stop_ids()[..read].iter().position(|s| s == id) {
        Some(j) => (next[j] as f64).max(MIN_READ_P).ln(),
        None => UNREAD_LN_P,
    }
}

/// The zones of `order`'s stops, each run of one zone once.
fn zone_sequence(s: &Sample, order: &[usize]) -> Vec<String> {
    let mut z: Vec<String> = Vec::new();
    for &i in order {
        if let Some(id) = &s.stops[i].zone
            && z.last() != Some(id)
        {
            z.push(id.clone());
        }
    }
    z
}
