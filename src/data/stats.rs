//! The raw (pre-normalization) values of a sample's feature channels, gathered into a dataset's
//! statistics (`manifest.json`'s `norm`) as its shards are written; the feature code
//! (`features/`) normalizes with them. Both read positions in the same local frame.

use super::manifest::StatsAcc;
use super::sample::Sample;
use crate::frame::LocalFrame;

/// Time constant of the ETA transform `ln(1 + t / ETA_TAU_S)`.
pub const ETA_TAU_S: f64 = 60.0;

/// Local (forward, left) coordinates of the history fixes, oldest first.
pub fn history_local(frame: &LocalFrame, s: &Sample) -> Vec<(f64, f64)> {
    s.history
        .iter()
        .map(|f| frame.to_local(f.lat, f.lon))
        .collect()
}

/// Feeds the raw (pre-normalization) feature values of a sample into the statistics.
pub fn accumulate_stats(s: &Sample, acc: &mut StatsAcc) {
    let frame = LocalFrame::from_history(&s.history);
    let n = s.history.len();
    for (i, (x, y)) in history_local(&frame, s).into_iter().enumerate() {
        if i + 1 < n {
            acc.push("hist_x", x);
            acc.push("hist_y", y);
        }
    }
    for f in &s.history {
        if let Some(v) = f.speed {
            acc.push("speed", v as f64);
        }
        if let Some(a) = f.accuracy {
            acc.push("log_accuracy", (1.0 + a as f64).ln());
        }
    }
    if let Some(imu) = &s.imu {
        for r in &imu.data {
            acc.push("imu_ax", r[0] as f64);
            acc.push("imu_ay", r[1] as f64);
            acc.push("imu_az", r[2] as f64);
            acc.push("imu_gz", r[3] as f64);
        }
    }
    for st in &s.stops {
        let (x, y) = frame.to_local(st.lat, st.lon);
        acc.push("stop_x", x);
        acc.push("stop_y", y);
        if let Some(v) = st.service_s {
            acc.push("service_s", v as f64);
        }
        if let Some(v) = st.packages {
            acc.push("packages", v as f64);
        }
        if let Some(v) = st.volume_l {
            acc.push("volume_l", v as f64);
        }
    }
    if let Some(d) = s.context.zone_density {
        acc.push("zone_density", d as f64);
    }
    if let Some(t) = &s.target {
        for p in &t.future {
            let (x, y) = frame.to_local(p[0], p[1]);
            acc.push("future_x", x);
            acc.push("future_y", y);
        }
        for a in t.arrival_s.iter().flatten() {
            acc.push("arrival_s", *a);
            acc.push("log_arrival", (1.0 + a.max(0.0) / ETA_TAU_S).ln());
        }
    }
}
