//! Deterministic randomness from seeds, for everything that must reproduce: the simulator (every
//! route, area and day draws from its own stream derived from the world seed, so routes can be
//! simulated in parallel and in any order and still give byte-identical output), the importers'
//! hash splits, the model's dropout masks and the trainer's per-step seeds.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub type SimRng = ChaCha8Rng;

/// SplitMix64 finalizer: a good 64-bit mix for deriving independent seeds.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stream for (seed, purpose, index...).
pub fn stream(seed: u64, purpose: &str, parts: &[u64]) -> SimRng {
    SimRng::seed_from_u64(hash(seed, purpose, parts))
}

pub fn hash(seed: u64, purpose: &str, parts: &[u64]) -> u64 {
    let mut h = mix(seed ^ 0xD1B5_4A32_D192_ED03);
    for b in purpose.bytes() {
        h = mix(h ^ b as u64);
    }
    for &p in parts {
        h = mix(h ^ p);
    }
    h
}

/// A uniform number in [0, 1) from a hash.
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

pub fn normal(rng: &mut SimRng) -> f64 {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    let u1: f64 = 1.0 - rng.r#gen::<f64>();
    let u2: f64 = rng.r#gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub fn lognormal(rng: &mut SimRng, sigma: f64) -> f64 {
    (sigma * normal(rng) - 0.5 * sigma * sigma).exp()
}

pub fn poisson(rng: &mut SimRng, lambda: f64) -> u32 {
    let l = (-lambda).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.r#gen::<f64>();
        if p <= l || k > 1000 {
            return k;
        }
        k += 1;
    }
}

pub fn uniform(rng: &mut SimRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.r#gen::<f64>()
}

pub fn chance(rng: &mut SimRng, p: f64) -> bool {
    rng.r#gen::<f64>() < p
}
