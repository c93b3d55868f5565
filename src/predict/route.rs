//! A request's route plan (`"plan_route": true`): the order of all its stops that a downstream
//! route planner acts on. The stops' zone plan (`route_plan::plan`: zones kept whole, moving
//! between neighbouring zones) can be driven from either end; the model picks the end it finds
//! likelier, by the sum of its next-stop log-probabilities over the decisions of each walk (the
//! evaluation's `route_plans.model`). Every decision of both walks is known before the model
//! runs (the vehicle at each stop in turn), so a plan is one batch of model inputs, prepared and
//! read back like the request's own (`codec.rs`: `Codec::prepare_plan`, `Codec::finish_plan`).

use crate::data::sample::Sample;
use serde::Serialize;

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

/// The model's log-probability of choosing stop `id` at a decision ([`UNREAD_LN_P`] for a stop
/// it did not read).
pub fn chosen_ln_p(stop_ids: &[String], next: &[f32], id: &str) -> f64 {
    let read = stop_ids.len().min(next.len());
    match stop_ids[..read].iter().position(|s| s == id) {
        Some(j) => (next[j] as f64).max(MIN_READ_P).ln(),
        None => UNREAD_LN_P,
    }
}

/// The zones of `order`'s stops, each run of one zone once.
pub fn zone_sequence(s: &Sample, order: &[usize]) -> Vec<String> {
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
