//! Stops are a set: a model reads any number of them up to its capacity (the `max_stops` it was
//! trained with; fewer are padding). A sample that lists more keeps the nearest `cap` stops
//! (straight-line distance from the last fix) in their listed order, with their labels; reports
//! and responses say how many were left out.

use crate::data::sample::Sample;
use crate::frame::LocalFrame;

/// The indices (into `s.stops`, ascending) of the `cap` nearest stops, or None when all fit.
pub fn nearest(s: &Sample, cap: usize) -> Option<Vec<usize>> {
    if s.stops.len() <= cap || s.history.is_empty() {
        return None;
    }
    let frame = LocalFrame::from_history(&s.history);
    let mut by_dist: Vec<(f64, usize)> = s
        .stops
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let (x, y) = frame.to_local(st.lat, st.lon);
            (x * x + y * y, i)
        })
        .collect();
    by_dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut keep: Vec<usize> = by_dist[..cap].iter().map(|&(_, i)| i).collect();
    keep.sort_unstable();
    Some(keep)
}

/// The sample restricted to the stops at `keep` (labels aligned; a next stop that is left out
/// becomes unknown).
pub fn restrict(s: &Sample, keep: &[usize]) -> Sample {
    let mut out = s.clone();
    out.stops = keep.iter().map(|&i| s.stops[i].clone()).collect();
    if let (Some(t), Some(src)) = (out.target.as_mut(), s.target.as_ref()) {
        t.arrival_s = pick(&src.arrival_s, keep, s.stops.len());
        t.on_time = pick(&src.on_time, keep, s.stops.len());
        t.next_stop = src
            .next_stop
            .and_then(|n| keep.iter().position(|&i| i == n));
    }
    out
}

/// The entries of a per-stop label list at `keep` (empty when the list does not cover the stops).
fn pick<T: Copy>(v: &[T], keep: &[usize], n: usize) -> Vec<T> {
    if v.len() == n {
        keep.iter().map(|&i| v[i]).collect()
    } else {
        Vec::new()
    }
}

/// The sample as a model of capacity `cap` reads it, and the kept indices when stops were left
/// out.
pub fn fit(s: Sample, cap: usize) -> (Sample, Option<Vec<usize>>) {
    match nearest(&s, cap) {
        None => (s, None),
        Some(keep) => (restrict(&s, &keep), Some(keep)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::{Fix, Labels, Stop};

    #[test]
    fn keeps_the_nearest_in_listed_order_with_their_labels() {
        let enu = crate::frame::Enu::new(40.0, -3.0);
        let at = |e: f64, n: f64| enu.to_lat_lon(e, n);
        let history: Vec<Fix> = [(0.0, -10.0), (1.0, 0.0)]
            .iter()
            .map(|&(t, n)| {
                let (lat, lon) = at(0.0, n);
                Fix::at(t, lat, lon)
            })
            .collect();
        // Distances 500, 100, 300, 50 m: capacity 2 keeps stops 1 and 3.
        let stops: Vec<Stop> = [500.0, 100.0, 300.0, 50.0]
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let (lat, lon) = at(d, 0.0);
                Stop::at(format!("s{i}"), lat, lon)
            })
            .collect();
        let s = Sample {
            stops,
            target: Some(Labels {
                arrival_s: vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0)],
                on_time: vec![None, Some(true), None, Some(false)],
                next_stop: Some(3),
                ..Default::default()
            }),
            ..Sample::bare("k", 1.0, history)
        };
        assert!(fit(s.clone(), 4).1.is_none());
        let (f, keep) = fit(s.clone(), 2);
        assert_eq!(keep, Some(vec![1, 3]));
        let ids: Vec<_> = f.stops.iter().map(|st| st.id.as_str()).collect();
        assert_eq!(ids, ["s1", "s3"]);
        let t = f.target.unwrap();
        assert_eq!(t.arrival_s, vec![Some(2.0), Some(4.0)]);
        assert_eq!(t.on_time, vec![Some(true), Some(false)]);
        assert_eq!(t.next_stop, Some(1));
        // The next stop left out is unknown, not another stop.
        let mut far = s;
        far.target.as_mut().unwrap().next_stop = Some(0);
        assert_eq!(fit(far, 2).0.target.unwrap().next_stop, None);
    }
}
