//! Streaming metric accumulators (memory does not grow with the split).
//! Trajectory metrics follow Argoverse 2: minADE_K / minFDE_K pick, per sample, the mode with the
//! smallest final displacement; ADE is the mean over steps of the Euclidean error of that mode;
//! the miss rate is the share of samples whose minFDE exceeds the threshold; brier-minFDE adds
//! (1 - p)^2 of that mode's probability.

use super::sequence::kendall_tau;
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

/// Are the mode probabilities calibrated? Per sample, the most probable mode's probability
/// against whether it was the best mode (smallest final error): binned by probability, the
/// expected and the observed frequency.
#[derive(Clone, Debug, Default)]
pub struct ModeCalAcc {
    /// Per tenth of probability: (sum of p, hits, count).
    bins: [(f64, u64, u64); 10],
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ModeCalibration {
    /// Mean probability of the most probable mode (the frequency it claims to be best).
    pub mean_top_probability: f64,
    /// How often the most probable mode was the best of the K.
    pub top_is_best_rate: f64,
    /// Expected calibration error over ten probability bins.
    pub ece: f64,
}

impl ModeCalAcc {
    pub fn add(&mut self, probs: &[f64], modes: &[Vec<[f64; 2]>], truth: &[[f64; 2]]) {
        let last = truth.len() - 1;
        let fde = |m: &Vec<[f64; 2]>| {
            ((m[last][0] - truth[last][0]).powi(2) + (m[last][1] - truth[last][1]).powi(2)).sqrt()
        };
        let arg = |f: &dyn Fn(usize) -> f64, better: fn(f64, f64) -> bool| {
            (0..modes.len()).fold(0, |a, k| if better(f(k), f(a)) { k } else { a })
        };
        let top = arg(&|k| probs[k], |x, y| x > y);
        let best = arg(&|k| fde(&modes[k]), |x, y| x < y);
        let p = probs[top].clamp(0.0, 1.0);
        let b = &mut self.bins[((p * 10.0) as usize).min(9)];
        b.0 += p;
        b.1 += (top == best) as u64;
        b.2 += 1;
    }

    pub fn finish(&self) -> Option<ModeCalibration> {
        let n: u64 = self.bins.iter().map(|b| b.2).sum();
        (n > 0).then(|| {
            let nf = n as f64;
            ModeCalibration {
                mean_top_probability: self.bins.iter().map(|b| b.0).sum::<f64>() / nf,
                top_is_best_rate: self.bins.iter().map(|b| b.1).sum::<u64>() as f64 / nf,
                ece: self
                    .bins
                    .iter()
                    .filter(|b| b.2 > 0)
                    .map(|b| (b.0 - b.1 as f64).abs() / nf)
                    .sum(),
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

/// Binary outcome metrics from probabilities, in constant memory: AUROC from a fine histogram
/// of scores per class (exact up to ties within a bin, which count one half), Brier score,
/// expected calibration error over 15 equal-width bins, accuracy at 0.5.
#[derive(Clone, Debug)]
pub struct BinaryAcc {
    pos: Vec<u64>,
    neg: Vec<u64>,
    brier: f64,
    correct: u64,
    cal: [(u64, f64, f64); ECE_BINS],
}

pub const AUC_BINS: usize = 4096;
pub const ECE_BINS: usize = 15;

impl Default for BinaryAcc {
    fn default() -> Self {
        BinaryAcc {
            pos: vec![0; AUC_BINS],
            neg: vec![0; AUC_BINS],
            brier: 0.0,
            correct: 0,
            cal: [(0, 0.0, 0.0); ECE_BINS],
        }
    }
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct BinaryMetrics {
    pub count: u64,
    pub positive_rate: f64,
    /// Absent when only one class occurs.
    pub auroc: Option<f64>,
    pub brier: f64,
    pub ece: f64,
    pub accuracy: f64,
}

impl BinaryAcc {
    pub fn add(&mut self, p: f64, y: bool) {
        let p = p.clamp(0.0, 1.0);
        let bin = ((p * AUC_BINS as f64) as usize).min(AUC_BINS - 1);
        if y {
            self.pos[bin] += 1;
        } else {
            self.neg[bin] += 1;
        }
        let t = y as u8 as f64;
        self.brier += (p - t).powi(2);
        self.correct += ((p >= 0.5) == y) as u64;
        let c = &mut self.cal[((p * ECE_BINS as f64) as usize).min(ECE_BINS - 1)];
        c.0 += 1;
        c.1 += p;
        c.2 += t;
    }

    /// Reliability diagram: per bin (mean predicted, observed frequency, count).
    pub fn reliability(&self) -> Vec<(f64, f64, u64)> {
        self.cal
            .iter()
            .filter(|c| c.0 > 0)
            .map(|c| (c.1 / c.0 as f64, c.2 / c.0 as f64, c.0))
            .collect()
    }

    pub fn finish(&self) -> Option<BinaryMetrics> {
        let np: u64 = self.pos.iter().sum();
        let nn: u64 = self.neg.iter().sum();
        let n = np + nn;
        if n == 0 {
            return None;
        }
        // P(score_pos > score_neg) + 0.5 P(tie), bins from low to high.
        let auroc = (np > 0 && nn > 0).then(|| {
            let (mut below, mut s) = (0u64, 0f64);
            for b in 0..AUC_BINS {
                s += self.pos[b] as f64 * (below as f64 + 0.5 * self.neg[b] as f64);
                below += self.neg[b];
            }
            s / (np as f64 * nn as f64)
        });
        let ece = self
            .cal
            .iter()
            .filter(|c| c.0 > 0)
            .map(|c| (c.1 - c.2).abs())
            .sum::<f64>()
            / n as f64;
        Some(BinaryMetrics {
            count: n,
            positive_rate: np as f64 / n as f64,
            auroc,
            brier: self.brier / n as f64,
            ece,
            accuracy: self.correct as f64 / n as f64,
        })
    }
}

/// Next-stop metrics: HR@3 (the true next stop among the three highest scores), accuracy
/// (top-1), and Kendall's rank correlation between the predicted order of the listed stops
/// (by score) and their true visiting order, averaged over samples with two or more stops.
#[derive(Clone, Debug, Default)]
pub struct NextStopAcc {
    n: u64,
    hit3: u64,
    top1: u64,
    krc_sum: f64,
    krc_n: u64,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct NextStopMetrics {
    pub samples: u64,
    pub hr_at_3: f64,
    pub accuracy: f64,
    /// Absent when no sample has the true order of two or more stops.
    pub krc: Option<f64>,
    /// Greedy roll-out of whole routes (route datasets only).
    pub rollout: Option<super::rollout::RolloutMetrics>,
    /// The model's roll-out decoded zone first: its pick among the stops of the vehicle's zone
    /// while any remain (the model's only; absent for the rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_zone_first: Option<super::rollout::RolloutMetrics>,
}

impl NextStopAcc {
    /// `scores` per listed stop (higher = sooner), the true next index, and the true order
    /// keys when known (e.g. arrival times: lower = sooner).
    pub fn add(&mut self, scores: &[f64], next: Option<usize>, order: Option<&[f64]>) {
        if let Some(k) = next {
            self.n += 1;
            let better = scores.iter().filter(|&&s| s > scores[k]).count();
            let ties_before = scores[..k].iter().filter(|&&s| s == scores[k]).count();
            let rank = better + ties_before; // ties resolved by list order
            self.hit3 += (rank < 3) as u64;
            self.top1 += (rank == 0) as u64;
        }
        if let Some(o) = order
            && o.len() >= 2
        {
            let neg: Vec<f64> = o.iter().map(|v| -v).collect();
            if let Some(t) = kendall_tau(scores, &neg) {
                self.krc_sum += t;
                self.krc_n += 1;
            }
        }
    }

    pub fn finish(&self) -> Option<NextStopMetrics> {
        (self.n > 0 || self.krc_n > 0).then(|| NextStopMetrics {
            samples: self.n,
            hr_at_3: self.hit3 as f64 / self.n.max(1) as f64,
            accuracy: self.top1 as f64 / self.n.max(1) as f64,
            krc: (self.krc_n > 0).then(|| self.krc_sum / self.krc_n as f64),
            rollout: None,
            rollout_zone_first: None,
        })
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    #[test]
    fn binary_metrics_by_hand() {
        let mut a = BinaryAcc::default();
        // scores 0.9 (pos), 0.8 (neg), 0.3 (pos), 0.1 (neg): pairs pos>neg: (0.9,0.8) (0.9,0.1) (0.3,0.1) = 3 of 4.
        for (p, y) in [(0.9, true), (0.8, false), (0.3, true), (0.1, false)] {
            a.add(p, y);
        }
        let m = a.finish().unwrap();
        assert!((m.auroc.unwrap() - 0.75).abs() < 1e-12);
        assert!((m.brier - (0.01 + 0.64 + 0.49 + 0.01) / 4.0).abs() < 1e-12);
        assert_eq!(m.accuracy, 0.5);
        assert_eq!(m.positive_rate, 0.5);
        // ECE: bins 13 (0.9: 1 pos), 12 (0.8: 0), 4 (0.3: 1), 1 (0.1: 0): |0.9-1|+|0.8-0|+|0.3-1|+|0.1-0| over 4.
        assert!((m.ece - (0.1 + 0.8 + 0.7 + 0.1) / 4.0).abs() < 1e-12);
    }

    #[test]
    fn auroc_ties_count_half_and_one_class_is_absent() {
        let mut a = BinaryAcc::default();
        a.add(0.5, true);
        a.add(0.5, false);
        assert!((a.finish().unwrap().auroc.unwrap() - 0.5).abs() < 1e-12);
        let mut b = BinaryAcc::default();
        b.add(0.7, true);
        assert_eq!(b.finish().unwrap().auroc, None);
        assert!(BinaryAcc::default().finish().is_none());
    }

    #[test]
    fn kendall_by_hand() {
        assert_eq!(kendall_tau(&[3.0, 2.0, 1.0], &[3.0, 2.0, 1.0]), Some(1.0));
        assert_eq!(kendall_tau(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]), Some(-1.0));
        // One discordant pair of three: (2 - 1) / 3.
        assert!(
            (kendall_tau(&[3.0, 2.0, 1.0], &[3.0, 1.0, 2.0]).unwrap() - 1.0 / 3.0).abs() < 1e-12
        );
        // tau-b with a tie in one list: conc 2, disc 0, one tie in a -> 2 / sqrt(3 * 2).
        assert!(
            (kendall_tau(&[2.0, 2.0, 1.0], &[3.0, 2.0, 1.0]).unwrap() - 2.0 / 6f64.sqrt()).abs()
                < 1e-12
        );
        assert_eq!(kendall_tau(&[1.0, 1.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn next_stop_by_hand() {
        let mut a = NextStopAcc::default();
        a.add(
            &[0.1, 0.5, 0.3, 0.2],
            Some(2),
            Some(&[40.0, 10.0, 20.0, 30.0]),
        );
        a.add(&[0.9, 0.1, 0.1, 0.1], Some(3), None); // rank 1 (tie with idx 1, 2 before it) -> 3: miss
        let m = a.finish().unwrap();
        assert_eq!((m.samples, m.hr_at_3, m.accuracy), (2, 0.5, 0.0));
        // Scores order 1,2,3,0 and true order 1,2,3,0: tau 1.
        assert_eq!(m.krc, Some(1.0));
    }
}
