//! Benchmarks (`dfm bench ...`): each prints a table and can write `--json`.

pub mod infer;
pub mod loader;
pub mod serve;
pub mod train;
pub mod train_run;

/// A latency benchmark's headline from its rows' (samples/s, p50 ms, p99 ms): the best
/// throughput, and the first row's latencies (the smallest batch or concurrency; NaN without
/// rows).
pub fn headline(rows: impl IntoIterator<Item = (f64, f64, f64)>) -> (f64, f64, f64) {
    let mut rows = rows.into_iter();
    let (best, p50, p99) = rows.next().unwrap_or((0.0, f64::NAN, f64::NAN));
    (rows.fold(best.max(0.0), |b, r| b.max(r.0)), p50, p99)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_headline_is_the_best_throughput_and_the_first_rows_latency() {
        let rows = [(100.0, 1.0, 2.0), (400.0, 3.0, 9.0), (250.0, 5.0, 7.0)];
        assert_eq!(super::headline(rows), (400.0, 1.0, 2.0));
        let (best, p50, p99) = super::headline([]);
        assert_eq!(best, 0.0);
        assert!(p50.is_nan() && p99.is_nan());
    }
}
