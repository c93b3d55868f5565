//! How patient dfm is with an object store, from the environment:
//! - `DFM_STORE_TIMEOUT_S` (1..=3600, default 60): a request that gets no answer, or a body
//!   that delivers no byte, for this long has failed;
//! - `DFM_STORE_RETRIES` (0..=20, default 4): failed reads are tried again this many times,
//!   with exponential backoff, resuming where the bytes stopped;
//! - `DFM_STORE_PREFETCH` (0..=64, default 4): shards opened ahead of the one being read.

use anyhow::Context;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub timeout: Duration,
    pub retries: usize,
    pub prefetch: usize,
}

impl Settings {
    /// The settings of this process's environment (an unset variable takes its default; a
    /// value out of its range is an error naming the variable).
    pub fn from_env() -> anyhow::Result<Settings> {
        Ok(Settings {
            timeout: Duration::from_secs(var("DFM_STORE_TIMEOUT_S", 60, 1, 3600)?),
            retries: var("DFM_STORE_RETRIES", 4, 0, 20)? as usize,
            prefetch: var("DFM_STORE_PREFETCH", 4, 0, 64)? as usize,
        })
    }

    /// The wait before retry `n` (1, 2, ...): 250 ms doubling, at most 8 s.
    pub fn backoff(n: usize) -> Duration {
        Duration::from_millis(250u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(8))
    }
}

fn var(name: &str, default: u64, lo: u64, hi: u64) -> anyhow::Result<u64> {
    parse(name, std::env::var(name).ok().as_deref(), default, lo, hi)
}

fn parse(name: &str, v: Option<&str>, default: u64, lo: u64, hi: u64) -> anyhow::Result<u64> {
    let Some(v) = v else {
        return Ok(default);
    };
    let n: u64 = v
        .trim()
        .parse()
        .with_context(|| format!("{name}={v:?}: not a whole number"))?;
    anyhow::ensure!(
        (lo..=hi).contains(&n),
        "{name}={n}: out of range ({lo}..={hi})"
    );
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(Settings::backoff(1), Duration::from_millis(250));
        assert_eq!(Settings::backoff(2), Duration::from_millis(500));
        assert_eq!(Settings::backoff(20), Duration::from_secs(8));
    }

    #[test]
    fn values_out_of_range_are_refused() {
        assert_eq!(parse("X", None, 7, 0, 9).unwrap(), 7);
        assert_eq!(parse("X", Some(" 3 "), 7, 0, 9).unwrap(), 3);
        let e = parse("DFM_STORE_RETRIES", Some("99"), 1, 0, 20).unwrap_err();
        assert!(
            e.to_string().contains("DFM_STORE_RETRIES") && e.to_string().contains("0..=20"),
            "{e}"
        );
        let e = parse("DFM_STORE_RETRIES", Some("-1"), 1, 0, 20).unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
    }
}
