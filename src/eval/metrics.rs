//! Streaming metric accumulators (memory does not grow with the split).
//! Trajectory metrics follow Argoverse 2: minADE_K / minFDE_K pick, per sample, the mode with the
//! smallest final displacement; ADE is the mean over steps of the Euclidean error of that mode;
//! the miss rate is the share of samples whose minFDE exceeds the threshold; brier-minFDE adds
//! (1 - p)^2 of that mode's probability.

use serde::Serialize;

#[derive(Clone, Debug, Default)]
pub struct TrajAcc {
    pub n: usize,
    ade: f64,
    fde: f64,
    brier_fde: f64,
    misses: usize,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct TrajMetrics {
    pub samples: usize,
    pub min_ade_m: f64,
    pub min_fde_m: f64,
    pub miss_rate: f64,
    pub brier_min_fde_m: f64,
}

impl TrajAcc {
    /// `modes`: K predicted trajectories (meters), `probs`: their probabilities, `truth`.
    pub fn add(&mut self, modes: &[Vec<[f64; 2]>], probs: &[f64], truth: &[[f64; 2]], miss_m: f64) {
        let err = |m: &Vec<[f64; 2]>, i: usize| {
            ((m[i][0] - truth[i][0]).powi(2) + (m[i][1] - truth[i][1]).powi(2)).sqrt()
        };
        let last = truth.len() - 1;
        // Mode with the smallest final error; ties go to the first.
        let (best, fde) = modes
            .iter()
            .enumerate()
            .map(|(k, m)| (k, err(m, last)))
            .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
        let ade = (0..truth.len()).map(|i| err(&modes[best], i)).sum::<f64>() / truth.len() as f64;
        self.n += 1;
        self.ade += ade;
        self.fde += fde;
        self.brier_fde += fde + (1.0 - probs[best]).powi(2);
        self.misses += (fde > miss_m) as usize;
    }
    pub fn finish(&self) -> Option<TrajMetrics> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            TrajMetrics {
                samples: self.n,
                min_ade_m: self.ade / n,
                min_fde_m: self.fde / n,
                miss_rate: self.misses as f64 / n,
                brier_min_fde_m: self.brier_fde / n,
            }
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct EtaAcc {
    pub n: usize,
    abs: f64,
    sq: f64,
    ape: f64,
    ape_n: usize,
    covered: usize,
    within: [usize; 3],
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct EtaMetrics {
    pub stops: usize,
    pub mae_s: f64,
    pub rmse_s: f64,
    /// Mean absolute percentage error over arrivals of at least 60 s.
    pub mape: f64,
    /// Share of truths inside [P10, P90] (absent for point predictions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p10_p90_coverage: Option<f64>,
    pub within_5_min: f64,
    pub within_10_min: f64,
    pub within_20_min: f64,
}

impl EtaAcc {
    /// A point prediction (P50), with its interval when the predictor has one.
    pub fn add(&mut self, pred: f64, interval: Option<(f64, f64)>, truth: f64) {
        let e = (pred - truth).abs();
        self.n += 1;
        self.abs += e;
        self.sq += e * e;
        if truth >= 60.0 {
            self.ape += e / truth;
            self.ape_n += 1;
        }
        if let Some((lo, hi)) = interval {
            self.covered += (truth >= lo && truth <= hi) as usize;
        }
        for (i, m) in [300.0, 600.0, 1200.0].iter().enumerate() {
            self.within[i] += (e <= *m) as usize;
        }
    }
    pub fn finish(&self, with_interval: bool) -> Option<EtaMetrics> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            EtaMetrics {
                stops: self.n,
                mae_s: self.abs / n,
                rmse_s: (self.sq / n).sqrt(),
                mape: if self.ape_n > 0 {
                    self.ape / self.ape_n as f64
                } else {
                    f64::NAN
                },
                p10_p90_coverage: with_interval.then(|| self.covered as f64 / n),
                within_5_min: self.within[0] as f64 / n,
                within_10_min: self.within[1] as f64 / n,
                within_20_min: self.within[2] as f64 / n,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traj_metrics_by_hand() {
        let truth = vec![[1.0, 0.0], [2.0, 0.0]];
        let a = vec![[1.0, 1.0], [2.0, 3.0]]; // errors 1, 3
        let b = vec![[1.0, 0.0], [2.0, 1.0]]; // errors 0, 1 -> best
        let mut acc = TrajAcc::default();
        acc.add(&[a.clone(), b], &[0.75, 0.25], &truth, 2.0);
        let m = acc.finish().unwrap();
        assert_eq!(m.min_fde_m, 1.0);
        assert_eq!(m.min_ade_m, 0.5);
        assert_eq!(m.miss_rate, 0.0);
        assert_eq!(m.brier_min_fde_m, 1.0 + 0.75f64.powi(2));
        // A single mode: K = 1; a miss above 2 m.
        acc.add(&[a], &[1.0], &truth, 2.0);
        let m = acc.finish().unwrap();
        assert_eq!(
            (m.samples, m.min_fde_m, m.min_ade_m, m.miss_rate),
            (2, 2.0, 1.25, 0.5)
        );
    }

    #[test]
    fn ties_pick_the_first_mode() {
        let truth = vec![[0.0, 0.0], [0.0, 0.0]];
        let a = vec![[1.0, 0.0], [1.0, 0.0]];
        let b = vec![[5.0, 0.0], [-1.0, 0.0]];
        let mut acc = TrajAcc::default();
        acc.add(&[a, b], &[0.4, 0.6], &truth, 2.0);
        let m = acc.finish().unwrap();
        assert_eq!(m.min_ade_m, 1.0, "first of the tied modes (ADE 1, not 3)");
        assert_eq!(m.brier_min_fde_m, 1.0 + 0.36);
    }

    #[test]
    fn eta_metrics_by_hand() {
        let mut acc = EtaAcc::default();
        acc.add(100.0, Some((50.0, 150.0)), 120.0);
        acc.add(1000.0, Some((900.0, 950.0)), 200.0);
        let m = acc.finish(true).unwrap();
        assert_eq!(m.mae_s, 410.0);
        assert!((m.rmse_s - ((400.0 + 640000.0) / 2.0f64).sqrt()).abs() < 1e-9);
        assert!((m.mape - (20.0 / 120.0 + 4.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.p10_p90_coverage, Some(0.5));
        assert_eq!(
            (m.within_5_min, m.within_10_min, m.within_20_min),
            (0.5, 0.5, 1.0)
        );
        assert!(EtaAcc::default().finish(true).is_none(), "absent, not zero");
    }
}
