//! Whole-route sequence metrics.
//! - The Amazon Last Mile Routing Research Challenge score (lower is better; 0 = the actual
//!   sequence): sequence deviation times the edit distance with real penalty (ERP) per edit,
//!   on the route's travel-time matrix normalized to mean 0, std 1, then shifted to a minimum
//!   of 0; gap penalty 1000. This follows the challenge's published scoring code (`score.py`
//!   of the MIT-CAVE rc-cli), as a dynamic program over suffixes with the same tie-breaking.
//! - Kendall's rank correlation between the predicted and the actual positions of the stops.

/// Normalizes a cost matrix as the challenge does: z-score over all entries (the diagonal
/// included), then shift so the minimum is 0.
pub fn normalize(m: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let all: Vec<f64> = m.iter().flatten().copied().collect();
    let n = all.len() as f64;
    let mean = all.iter().sum::<f64>() / n;
    let std = (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
        .sqrt()
        .max(1e-12);
    let z: Vec<Vec<f64>> = m
        .iter()
        .map(|r| r.iter().map(|x| (x - mean) / std).collect())
        .collect();
    let min = z.iter().flatten().copied().fold(f64::INFINITY, f64::min);
    z.into_iter()
        .map(|r| r.into_iter().map(|x| x - min).collect())
        .collect()
}

/// Sequence deviation of `sub` against `actual` (both start and end at the station, index 0).
pub fn seq_dev(actual: &[usize], sub: &[usize]) -> f64 {
    let a = &actual[1..actual.len() - 1];
    let s = &sub[1..sub.len() - 1];
    let n = a.len();
    if n < 2 {
        return 0.0;
    }
    let pos: Vec<usize> = s
        .iter()
        .map(|x| a.iter().position(|y| y == x).expect("same stops"))
        .collect();
    let sum: f64 = pos
        .windows(2)
        .map(|w| (w[1] as f64 - w[0] as f64).abs() - 1.0)
        .sum();
    2.0 / (n as f64 * (n as f64 - 1.0)) * sum
}

/// ERP between the sequences and the number of edits of the optimal alignment.
pub fn erp_count(actual: &[usize], sub: &[usize], m: &[Vec<f64>], g: f64) -> (f64, usize) {
    let (na, ns) = (actual.len(), sub.len());
    // d[i][j]: ERP of actual[i..] against sub[j..].
    let mut d = vec![vec![0.0f64; ns + 1]; na + 1];
    let mut c = vec![vec![0usize; ns + 1]; na + 1];
    for i in (0..=na).rev() {
        for j in (0..=ns).rev() {
            if j == ns {
                d[i][j] = g * (na - i) as f64;
                c[i][j] = na - i;
            } else if i == na {
                d[i][j] = g * (ns - j) as f64;
                c[i][j] = ns - j;
            } else {
                let o1 = d[i + 1][j + 1] + m[actual[i]][sub[j]];
                let o2 = d[i + 1][j] + g;
                let o3 = d[i][j + 1] + g;
                let best = o1.min(o2).min(o3);
                d[i][j] = best;
                c[i][j] = if best == o1 {
                    c[i + 1][j + 1] + (actual[i] != sub[j]) as usize
                } else if best == o2 {
                    c[i + 1][j] + 1
                } else {
                    c[i][j + 1] + 1
                };
            }
        }
    }
    (d[0][0], c[0][0])
}

/// The challenge score of a submitted sequence (indices into the cost matrix; both sequences
/// start at the station and end back at it).
pub fn lmrc_score(actual: &[usize], sub: &[usize], cost: &[Vec<f64>]) -> f64 {
    let norm = normalize(cost);
    let (erp, count) = erp_count(actual, sub, &norm, 1000.0);
    let per_edit = if count == 0 { 0.0 } else { erp / count as f64 };
    seq_dev(actual, sub) * per_edit
}

/// Kendall's tau between the positions of the stops in two orders of the same stops.
pub fn order_krc(actual: &[usize], sub: &[usize]) -> Option<f64> {
    let pos_a: Vec<f64> = actual
        .iter()
        .map(|x| actual.iter().position(|y| y == x).unwrap() as f64)
        .collect();
    let pos_s: Vec<f64> = actual
        .iter()
        .map(|x| sub.iter().position(|y| y == x).unwrap_or(usize::MAX) as f64)
        .collect();
    kendall_tau(&pos_a, &pos_s)
}

/// Kendall's tau-b between two score lists (higher = earlier), ties counted per tau-b.
pub fn kendall_tau(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len();
    let (mut conc, mut disc, mut ta, mut tb) = (0f64, 0f64, 0f64, 0f64);
    for i in 0..n {
        for j in i + 1..n {
            let da = (a[i] - a[j]).signum() * ((a[i] - a[j]).abs() > 0.0) as u8 as f64;
            let db = (b[i] - b[j]).signum() * ((b[i] - b[j]).abs() > 0.0) as u8 as f64;
            if da == 0.0 && db == 0.0 {
                continue;
            } else if da == 0.0 {
                ta += 1.0;
            } else if db == 0.0 {
                tb += 1.0;
            } else if da == db {
                conc += 1.0;
            } else {
                disc += 1.0;
            }
        }
    }
    let denom = ((conc + disc + ta) * (conc + disc + tb)).sqrt();
    (denom > 0.0).then(|| (conc - disc) / denom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (i as f64 - j as f64).abs() * 10.0 + ((i * 7 + j * 3) % 5) as f64)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn identical_sequence_scores_zero() {
        let a = vec![0, 1, 2, 3, 4, 0];
        assert_eq!(lmrc_score(&a, &a, &cost(5)), 0.0);
        assert_eq!(seq_dev(&a, &a), 0.0);
        assert_eq!(order_krc(&a[..5], &a[..5]), Some(1.0));
    }

    #[test]
    fn by_hand_small_route() {
        // actual 0 1 2 3 0, submitted 0 2 1 3 0: inner positions [1, 0, 2]:
        // seq_dev = 2 / (3 * 2) * ((|0-1| - 1) + (|2-0| - 1)) = 1/3.
        let a = vec![0, 1, 2, 3, 0];
        let s = vec![0, 2, 1, 3, 0];
        assert!((seq_dev(&a, &s) - 1.0 / 3.0).abs() < 1e-12);
        // ERP with a tiny matrix: substitutions cost m[a][s]; the optimal alignment here is the
        // diagonal (2 edits, gap penalty 1000 is never worth it).
        let m = vec![
            vec![0.0, 1.0, 2.0, 3.0],
            vec![1.0, 0.0, 1.0, 2.0],
            vec![2.0, 1.0, 0.0, 1.0],
            vec![3.0, 2.0, 1.0, 0.0],
        ];
        let (erp, count) = erp_count(&a, &s, &m, 1000.0);
        assert_eq!((erp, count), (2.0, 2));
        // The score normalizes the matrix first: mean 1.25, population std; shifted min 0.
        let norm = normalize(&m);
        let expected = 1.0 / 3.0 * ((norm[1][2] + norm[2][1]) / 2.0);
        assert!((lmrc_score(&a, &s, &m) - expected).abs() < 1e-12);
        assert!((order_krc(&a[..4], &s[..4]).unwrap() - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn normalization_is_scale_free() {
        let m = cost(6);
        let m2: Vec<Vec<f64>> = m
            .iter()
            .map(|r| r.iter().map(|x| x * 3.7).collect())
            .collect();
        let a = vec![0, 1, 2, 3, 4, 5, 0];
        let s = vec![0, 2, 1, 5, 4, 3, 0];
        assert!((lmrc_score(&a, &s, &m) - lmrc_score(&a, &s, &m2)).abs() < 1e-9);
    }
}
