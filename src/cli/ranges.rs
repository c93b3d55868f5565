//! Range-checked value parsers for numeric flags: a value outside its range is clap's error,
//! naming the flag (`invalid value '0' for '--max-batch': 0 is outside [1, 4096]`).

/// A clap value parser for an integer in [lo, hi] (the flag is named in clap's error).
pub fn usize_in(lo: usize, hi: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |v: &str| {
        let x: usize = v
            .trim()
            .parse()
            .map_err(|e| format!("`{v}` is not a whole number ({e})"))?;
        if (lo..=hi).contains(&x) {
            Ok(x)
        } else {
            Err(format!("{x} is outside [{lo}, {hi}]"))
        }
    }
}

pub fn u64_in(lo: u64, hi: u64) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |v: &str| usize_in(lo as usize, hi as usize)(v).map(|x| x as u64)
}

/// A clap value parser for a finite number in [lo, hi].
pub fn real_in<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display + Into<f64>,
    T::Err: std::fmt::Display,
{
    move |v: &str| {
        let x: T = v
            .trim()
            .parse()
            .map_err(|e| format!("`{v}` is not a number ({e})"))?;
        if x.into().is_finite() && lo <= x && x <= hi {
            Ok(x)
        } else {
            Err(format!("{x} is outside [{lo}, {hi}]"))
        }
    }
}

pub fn f64_in(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    real_in(lo, hi)
}

pub fn f32_in(lo: f32, hi: f32) -> impl Fn(&str) -> Result<f32, String> + Clone {
    real_in(lo, hi)
}
