//! Learning rate: linear warmup, then cosine decay to 5% of the peak at the last step.

pub fn lr_at(step: usize, peak: f64, warmup: usize, total: usize) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = ((step - warmup.min(step)) as f64 / span as f64).min(1.0);
    let floor = 0.05 * peak;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    #[test]
    fn warmup_then_cosine() {
        let f = |s| super::lr_at(s, 1.0, 10, 110);
        assert!((f(0) - 0.1).abs() < 1e-12 && (f(9) - 1.0).abs() < 1e-12);
        assert!((f(10) - 1.0).abs() < 1e-12);
        assert!(f(60) < 0.6 && f(60) > 0.45);
        assert!((f(110) - 0.05).abs() < 1e-12 && (f(500) - 0.05).abs() < 1e-12);
    }
}
