//! Each modality's rows of a sample's features, in the agent-centric frame: history, IMU, the
//! map raster, stops, targets and context (the layouts: `features/mod.rs`).

use super::image::image_chw;
use super::*;

fn z(x: f32, (m, s): (f32, f32)) -> f32 {
    (x - m) / s
}

/// IMU rows at `rate` Hz ending at `t0`, put on `n` rows at `to_rate` Hz ending at `t0`:
/// linear in time between the rows around each time; times the data does not cover stay 0 (the
/// channel's mean once normalized). The same rate and length pass through unchanged.
fn imu_on_grid(rows: &[[f32; 4]], rate: f64, n: usize, to_rate: f64) -> Vec<[f32; 4]> {
    if rows.len() == n && (rate - to_rate).abs() <= 1e-6 * to_rate {
        return rows.to_vec();
    }
    let at = |len: usize, r: f64| -> Vec<f64> {
        (0..len).map(|i| -((len - 1 - i) as f64) / r).collect()
    };
    let (have, want) = (at(rows.len(), rate), at(n, to_rate));
    let tol = time_grid::ON_GRID / to_rate;
    want.iter()
        .map(|&t| match time_grid::locate(&have, t, tol) {
            None => [0.0; 4],
            Some((i, j, w)) => {
                let w = w as f32;
                std::array::from_fn(|c| rows[i][c] * (1.0 - w) + rows[j][c] * w)
            }
        })
        .collect()
}

impl Featurizer {
    /// The history's local positions at the model's grid times (`t0 - (H-1-k) step`, oldest
    /// first), with the fix whose other fields a row takes (the nearer one); None where the
    /// history does not reach.
    pub(super) fn history_on_grid(
        &self,
        s: &Sample,
        frame: &LocalFrame,
    ) -> Vec<Option<((f64, f64), usize)>> {
        let (h, step) = (self.spec.history_len, self.spec.history_step_s as f64);
        let local = history_local(frame, s);
        let times: Vec<f64> = s.history.iter().map(|f| f.t).collect();
        (0..h)
            .map(|k| {
                let t = s.t0 - (h - 1 - k) as f64 * step;
                let (i, j, w) = time_grid::locate(&times, t, time_grid::ON_GRID * step)?;
                let (a, b) = (local[i], local[j]);
                let p = (a.0 + (b.0 - a.0) * w, a.1 + (b.1 - a.1) * w);
                Some((p, if w < 0.5 { i } else { j }))
            })
            .collect()
    }

    /// History rows [H, HIST_CH] on the model's time grid (the last row is t0; rows before the
    /// first fix are masked), the absolute positions [H, 2] and the mask [H].
    pub(super) fn history(&self, s: &Sample, frame: &LocalFrame) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let h = self.spec.history_len;
        let mut hist = vec![0f32; h * HIST_CH];
        let mut hist_abs = vec![0f32; h * 2];
        let mut hist_mask = vec![0f32; h];
        let rows = self.history_on_grid(s, frame);
        let present: Vec<(usize, (f64, f64), usize)> = rows
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.map(|(p, src)| (k, p, src)))
            .collect();
        let path: f64 = present
            .windows(2)
            .map(|w| (w[1].1.0 - w[0].1.0).hypot(w[1].1.1 - w[0].1.1))
            .sum();
        let step_m = (path / present.len().saturating_sub(1).max(1) as f64).max(MIN_STEP_M);
        let span = step_m * h as f64;
        let log_scale = (span / self.pos_scale.max(1e-6) as f64).ln() as f32;
        for (n, &(k, (x, y), src)) in present.iter().enumerate() {
            let f = &s.history[src];
            hist_abs[k * 2] = x as f32 / self.pos_scale;
            hist_abs[k * 2 + 1] = y as f32 / self.pos_scale;
            let r = &mut hist[k * HIST_CH..(k + 1) * HIST_CH];
            r[hist_ch::X] = (x / span) as f32;
            r[hist_ch::Y] = (y / span) as f32;
            if let Some(v) = f.speed {
                r[hist_ch::SPEED] = z(v, self.speed);
                r[hist_ch::SPEED_PRESENT] = 1.0;
            }
            if let Some(hd) = f.heading {
                let rel = (hd as f64 - frame.heading_deg).to_radians();
                r[hist_ch::HEADING_COS] = rel.cos() as f32;
                r[hist_ch::HEADING_SIN] = -rel.sin() as f32; // left-positive, like y
                r[hist_ch::HEADING_PRESENT] = 1.0;
            }
            if let Some(a) = f.accuracy {
                r[hist_ch::ACCURACY] = z((1.0 + a).ln(), self.accuracy);
            }
            if n > 0 {
                let (px, py) = present[n - 1].1;
                r[hist_ch::DX] = ((x - px) / step_m) as f32;
                r[hist_ch::DY] = ((y - py) / step_m) as f32;
            }
            r[hist_ch::LOG_SCALE] = log_scale;
            hist_mask[k] = 1.0;
        }
        (hist, hist_abs, hist_mask)
    }

    /// IMU rows [T, IMU_CH] on the model's grid, normalized per channel.
    pub(super) fn imu_rows(&self, s: &Sample) -> (Vec<f32>, f32) {
        let mut imu = vec![0f32; self.spec.imu_len * IMU_CH];
        let Some(m) = s.imu.as_ref().filter(|m| !m.data.is_empty()) else {
            return (imu, 0.0);
        };
        let (rate, to_rate) = (m.rate_hz as f64, self.spec.imu_rate_hz as f64);
        for (k, row) in imu_on_grid(&m.data, rate, self.spec.imu_len, to_rate)
            .iter()
            .enumerate()
        {
            for c in 0..IMU_CH {
                imu[k * IMU_CH + c] = z(row[c], self.imu[c]);
            }
        }
        (imu, 1.0)
    }

    /// The first map or aerial raster as [3, S, S].
    pub(super) fn image(&self, s: &Sample) -> (Vec<f32>, f32) {
        let sz = self.image_size;
        match s
            .images
            .iter()
            .find(|im| matches!(im.kind, ImageKind::Map | ImageKind::Aerial))
            .and_then(|im| im.pixels.as_ref())
        {
            Some(px) => (image_chw(px, sz), 1.0),
            None => (vec![0f32; 3 * sz * sz], 0.0),
        }
    }

    /// Stop rows [N, STOP_CH] and their mask.
    pub(super) fn stops(&self, s: &Sample, frame: &LocalFrame) -> (Vec<f32>, Vec<f32>) {
        let ns = self.spec.max_stops;
        let mut stops = vec![0f32; ns * STOP_CH];
        let mut stops_mask = vec![0f32; ns];
        let listed = &s.stops[..s.stops.len().min(ns)];
        let local: Vec<(f64, f64)> = listed
            .iter()
            .map(|st| frame.to_local(st.lat, st.lon))
            .collect();
        let dist: Vec<f64> = local.iter().map(|(x, y)| (x * x + y * y).sqrt()).collect();
        let zone_ids: Vec<Option<&str>> = listed.iter().map(|st| st.zone.as_deref()).collect();
        let zf = crate::zones::zone_features(&dist, &zone_ids, s.context.zone.as_deref());
        for (i, st) in listed.iter().enumerate() {
            let r = &mut stops[i * STOP_CH..(i + 1) * STOP_CH];
            self.stop_row(r, s, st, local[i], &dist, i);
            r[stop_ch::RULE_RANK] = zf.rule_rank[i];
            r[stop_ch::ZONE_RANK] = zf.zone_rank[i];
            (r[stop_ch::ZONE_STEP], r[stop_ch::ZONE_STEP_PRESENT]) = zf.zone_step[i];
            stops_mask[i] = 1.0;
        }
        (stops, stops_mask)
    }

    /// One stop's own channels (position, window, attributes, distance and its rank, zone).
    pub(super) fn stop_row(
        &self,
        r: &mut [f32],
        s: &Sample,
        st: &crate::data::sample::Stop,
        (x, y): (f64, f64),
        dist: &[f64],
        i: usize,
    ) {
        r[stop_ch::X] = x as f32 / self.stop_scale;
        r[stop_ch::Y] = y as f32 / self.stop_scale;
        r[stop_ch::DIST] = (x * x + y * y).sqrt() as f32 / self.stop_scale;
        if let (Some(a), Some(b)) = (st.tw_start, st.tw_end) {
            r[stop_ch::TW_START] = (((a - s.t0) / 3600.0) as f32).clamp(-12.0, 12.0);
            r[stop_ch::TW_END] = (((b - s.t0) / 3600.0) as f32).clamp(-12.0, 12.0);
            r[stop_ch::TW_PRESENT] = 1.0;
        }
        if let Some(v) = st.service_s {
            r[stop_ch::SERVICE] = z(v, self.service);
        }
        if let Some(v) = st.packages {
            r[stop_ch::PACKAGES] = z(v as f32, self.packages);
        }
        if let Some(v) = st.volume_l {
            r[stop_ch::VOLUME] = z(v, self.volume);
        }
        let any = st.service_s.is_some() || st.packages.is_some() || st.volume_l.is_some();
        r[stop_ch::ATTRS_PRESENT] = any as u8 as f32;
        r[stop_ch::LOG_DIST] = (dist[i] / 100.0).ln_1p() as f32 / 3.0;
        let rank = dist
            .iter()
            .enumerate()
            .filter(|&(j, &d)| d < dist[i] || (d == dist[i] && j < i))
            .count();
        r[stop_ch::DIST_RANK] = rank as f32 / (dist.len().max(2) - 1) as f32;
        r[stop_ch::SAME_ZONE] = match (&s.context.zone, &st.zone) {
            (Some(a), Some(b)) if a == b => 1.0,
            (Some(_), Some(_)) => -1.0,
            _ => 0.0,
        };
    }

    /// The labels and their masks; `f` trajectory points (the labels' own, when present).
    pub(super) fn targets(&self, s: &Sample, frame: &LocalFrame, f: usize) -> LabelRows {
        let ns = self.spec.max_stops;
        let mut t = LabelRows {
            future: vec![0f32; f * 2],
            future_mask: 0.0,
            eta: vec![0f32; ns],
            eta_mask: vec![0f32; ns],
            on_time: vec![0f32; ns],
            on_time_mask: vec![0f32; ns],
            delivered: 0.0,
            delivered_mask: 0.0,
            next_stop: -1,
        };
        let Some(tg) = &s.target else {
            return t;
        };
        if tg.future.len() == f {
            for (k, p) in tg.future.iter().enumerate() {
                let (x, y) = frame.to_local(p[0], p[1]);
                t.future[2 * k] = x as f32 / self.traj_scale;
                t.future[2 * k + 1] = y as f32 / self.traj_scale;
            }
            t.future_mask = 1.0;
        }
        for (i, a) in tg.arrival_s.iter().take(ns).enumerate() {
            if let Some(a) = a {
                t.eta[i] = self.eta_encode(*a);
                t.eta_mask[i] = 1.0;
            }
        }
        for (i, o) in tg.on_time.iter().take(ns).enumerate() {
            if let Some(o) = o {
                t.on_time[i] = *o as u8 as f32;
                t.on_time_mask[i] = 1.0;
            }
        }
        if let Some(d) = tg.delivered {
            t.delivered = d as u8 as f32;
            t.delivered_mask = 1.0;
        }
        if let Some(k) = tg.next_stop.filter(|&k| k < ns) {
            t.next_stop = k as i64;
        }
        t
    }

    pub(super) fn context(&self, s: &Sample, frame: &LocalFrame) -> Vec<f32> {
        let c = &s.context;
        let mut v = vec![0f32; CTX_CH];
        let tau = std::f32::consts::TAU;
        v[0] = (tau * c.hour / 24.0).sin();
        v[1] = (tau * c.hour / 24.0).cos();
        v[2] = (tau * c.weekday as f32 / 7.0).sin();
        v[3] = (tau * c.weekday as f32 / 7.0).cos();
        if let Some(w) = c.weather {
            v[4 + w.index()] = 1.0;
            v[8] = 1.0;
        }
        if let Some(p) = c.peak_day {
            v[9] = p as u8 as f32;
            v[10] = 1.0;
        }
        if let Some(r) = c.road_class {
            v[11 + r.index()] = 1.0;
            v[11 + RoadClass::ALL.len()] = 1.0;
        }
        if let Some(d) = c.zone_density {
            v[15] = z(d, self.zone);
            v[16] = 1.0;
        }
        if let Some(d) = c.depot {
            let (x, y) = frame.to_local(d.lat, d.lon);
            let scale = 10.0 * self.stop_scale as f64;
            v[17] = (x / scale) as f32;
            v[18] = (y / scale) as f32;
            v[19] = ((x * x + y * y).sqrt() / scale) as f32;
            v[20] = 1.0;
        }
        v
    }
}
