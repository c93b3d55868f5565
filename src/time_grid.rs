//! The model's time grid, and how data of any sampling meets it.
//!
//! A model is trained on one grid, its training data's: history rows every `history_step_s`
//! ending at `t0`, IMU rows at `imu_rate_hz` over the same window, and trajectory knots every
//! `future_step_s` up to its horizon. Data of another sampling (a 10 s fleet for a model trained
//! at 2 s, a request with its own horizons) meets that grid by time, not by row: a history
//! position at a grid time is interpolated linearly between the fixes around it, and a
//! trajectory is asked at the data's (or the request's) own times, each a linear blend of the
//! two knots around it (the origin is a knot: the trajectory's offset there is 0). Data on the
//! model's grid passes through unchanged, so a token keeps one meaning, a fixed span of time
//! before `t0`, whatever the source's sampling.

use crate::data::sample::Spec;

/// Fraction of a step within which a time counts as on the grid (float noise of `t0 + k·step`).
pub const ON_GRID: f64 = 0.01;

/// Where time `t` falls among increasing `times`: the neighbours `(i, j)` and the weight of `j`
/// (`i == j`, weight 0, when `t` is within `tol` of a time); None outside their span.
pub fn locate(times: &[f64], t: f64, tol: f64) -> Option<(usize, usize, f64)> {
    let j = times.partition_point(|&x| x < t - tol);
    if j < times.len() && (times[j] - t).abs() <= tol {
        return Some((j, j, 0.0));
    }
    if j == 0 || j == times.len() {
        return None;
    }
    let i = j - 1;
    Some((i, j, (t - times[i]) / (times[j] - times[i])))
}

/// The knot times of a trajectory grid: `step`, `2 step` .. `n step`.
pub fn knots(n: usize, step: f64) -> Vec<f64> {
    (1..=n).map(|k| k as f64 * step).collect()
}

/// Whether `times` are exactly the knots (up to [`ON_GRID`]).
pub fn on_knots(times: &[f64], n: usize, step: f64) -> bool {
    times.len() == n
        && times
            .iter()
            .enumerate()
            .all(|(k, &t)| (t - (k + 1) as f64 * step).abs() <= ON_GRID * step)
}

/// Interpolation weights `[times.len(), n]` (row-major) turning `n` knots at `step` apart into
/// positions at `times`: between the origin (value 0) and knot 1, between knots, or the last
/// knot past it (callers refuse times past the horizon; this is the float-noise guard).
pub fn knot_weights(times: &[f64], n: usize, step: f64) -> Vec<f32> {
    let mut w = vec![0f32; times.len() * n];
    for (r, &t) in times.iter().enumerate() {
        let u = (t / step).max(0.0);
        let row = &mut w[r * n..(r + 1) * n];
        if u >= n as f64 {
            row[n - 1] = 1.0;
            continue;
        }
        let k = u.floor() as usize;
        let frac = (u - k as f64) as f32;
        if k > 0 {
            row[k - 1] = 1.0 - frac;
        }
        if frac > 0.0 {
            row[k] = frac;
        }
    }
    w
}

/// The horizon of a trajectory grid, seconds.
pub fn horizon(n: usize, step: f64) -> f64 {
    n as f64 * step
}

/// The grid of a model trained on several datasets: the first's steps and rates, long enough
/// for every source's history, IMU window and future (a lone dataset's spec is its own), and
/// room for every source's stops; clips as the first source with video has them.
pub fn model_spec(specs: &[&Spec]) -> Spec {
    let first = specs[0];
    let max = |f: &dyn Fn(&Spec) -> f64| specs.iter().map(|s| f(s)).fold(0.0, f64::max);
    let (hs, fs, rate) = (
        first.history_step_s as f64,
        first.future_step_s as f64,
        first.imu_rate_hz as f64,
    );
    let history_span = max(&|s| s.history_len.saturating_sub(1) as f64 * s.history_step_s as f64);
    let horizon_s = max(&|s| horizon(s.future_len, s.future_step_s as f64));
    let imu_span = max(&|s| s.imu_len as f64 / (s.imu_rate_hz as f64).max(1e-9));
    // A mixture's windows are a whole number of the first source's patches.
    let whole = |n: usize, of: usize| {
        let p = if specs.len() > 1 {
            crate::config::auto_patch(of)
        } else {
            1
        };
        n.div_ceil(p) * p
    };
    // Clips: the shape of the first source with video (other shapes are masked as absent).
    let video = specs
        .iter()
        .find(|s| s.video_frames > 0)
        .map_or((0, 0), |s| (s.video_frames, s.video_size));
    Spec {
        video_frames: video.0,
        video_size: video.1,
        history_len: whole((history_span / hs).round() as usize + 1, first.history_len),
        history_step_s: first.history_step_s,
        future_len: (horizon_s / fs - 1e-6).ceil() as usize,
        future_step_s: first.future_step_s,
        imu_len: whole((imu_span * rate).round() as usize, first.imu_len),
        imu_rate_hz: first.imu_rate_hz,
        max_stops: specs.iter().map(|s| s.max_stops).max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_snaps_interpolates_and_refuses_outside() {
        let t = [0.0, 10.0, 20.0];
        assert_eq!(locate(&t, 10.0000001, 0.02), Some((1, 1, 0.0)));
        let (i, j, w) = locate(&t, 14.0, 0.02).unwrap();
        assert_eq!((i, j), (1, 2));
        assert!((w - 0.4).abs() < 1e-12);
        assert_eq!(locate(&t, -2.0, 0.02), None);
        assert_eq!(locate(&t, 21.0, 0.02), None);
    }

    /// Knots at 2 s: times 1, 2, 5 and 6 s are half of knot 1 (the origin is 0), knot 1, the
    /// blend of knots 2 and 3, and knot 3; the knots themselves give the identity.
    #[test]
    fn knot_weights_blend_the_two_knots_around_a_time() {
        let w = knot_weights(&[1.0, 2.0, 5.0, 6.0], 3, 2.0);
        assert_eq!(
            w,
            vec![0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 1.0]
        );
        assert!(on_knots(&knots(3, 2.0), 3, 2.0));
        assert!(!on_knots(&[2.0, 4.0], 3, 2.0));
        assert!(!on_knots(&[5.0, 10.0, 15.0], 3, 2.0));
        let id = knot_weights(&knots(3, 2.0), 3, 2.0);
        assert_eq!(id, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    }

    /// The simulator (30 fixes at 1 s, 15 x 2 s ahead) with GeoLife-like 5 s data (13 fixes,
    /// 12 x 5 s ahead): the simulator's steps over a 60 s window (61 rows, rounded up to whole
    /// patches) and a 60 s horizon.
    #[test]
    fn a_mixture_grid_covers_every_source() {
        let sim = Spec::default();
        assert_eq!(model_spec(&[&sim]), sim);
        let geo = Spec {
            video_frames: 0,
            video_size: 0,
            history_len: 13,
            history_step_s: 5.0,
            future_len: 12,
            future_step_s: 5.0,
            imu_len: 0,
            imu_rate_hz: 10.0,
            max_stops: 0,
        };
        let m = model_spec(&[&sim, &geo]);
        let p = crate::config::auto_patch(sim.history_len);
        assert_eq!(
            (m.history_len, m.history_step_s),
            (61usize.div_ceil(p) * p, 1.0)
        );
        assert_eq!((m.future_len, m.future_step_s), (30, 2.0));
        assert_eq!((m.imu_len, m.max_stops), (sim.imu_len, sim.max_stops));
    }
}
