//! Dropout with masks drawn on the host on CPU backends.
//!
//! burn's `Dropout` draws its mask with `random_like(Bernoulli)`, which on the flex CPU backend
//! runs a ChaCha generator per element: on the quickstart model that was 17% of a training step
//! (`perf`, see README "Performance"). Here the mask is drawn with SplitMix64 (four 16-bit
//! uniforms per draw) straight into the scaled mask `keep / (1 - p)`, so one multiply applies
//! it. GPU backends keep burn's on-device generator (no host upload).
//!
//! The host stream is per thread and reseeded by the training step (`reseed`), so a resumed run
//! draws exactly what an uninterrupted one draws, as with `device.seed`.

use crate::seed::mix;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
}

/// Restarts this thread's dropout stream (called with the per-step dropout seed).
pub fn reseed(seed: u64) {
    STATE.with(|s| s.set(seed ^ 0x9E37_79B9_7F4A_7C15));
}

/// The SplitMix64 step: the next 64 random bits (the simulator's `mix` of the state, which then
/// advances by the golden-ratio increment).
fn splitmix(state: &mut u64) -> u64 {
    let r = mix(*state);
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    r
}

/// `n` mask values, each `1 / (1 - p)` with probability `1 - p` and 0 otherwise.
pub fn host_mask(n: usize, p: f64) -> Vec<f32> {
    let scale = (1.0 / (1.0 - p)) as f32;
    // An element is dropped when its 16-bit uniform is below this threshold.
    let threshold = (p * 65536.0).round() as u32;
    let mut out = vec![0.0f32; n];
    STATE.with(|s| {
        let mut st = s.get();
        for chunk in out.chunks_mut(4) {
            let r = splitmix(&mut st);
            for (k, v) in chunk.iter_mut().enumerate() {
                // Branch-free: kept (1.0) or dropped (0.0), times the scale.
                let kept = (((r >> (16 * k)) & 0xFFFF) as u32 >= threshold) as u32 as f32;
                *v = kept * scale;
            }
        }
        s.set(st);
    });
    out
}

/// Whether `device` (or the device an autodiff device wraps) is the flex CPU backend.
pub fn on_cpu(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// Whether dropout of rate `p` applies on `device`: only when training (an autodiff device).
pub fn active(device: &Device, p: f64) -> bool {
    p > 0.0 && device.is_autodiff()
}

/// Drops each element with probability `p` and scales the rest by `1 / (1 - p)`, when `x` is on
/// an autodiff (training) device; the identity otherwise.
pub fn dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    let device = x.device();
    if !active(&device, p) {
        return x;
    }
    let mask = if on_cpu(&device) {
        let shape = x.shape();
        let n = shape.num_elements();
        Tensor::<D>::from_data(TensorData::new(host_mask(n, p), shape), &device)
    } else {
        x.random_like(Distribution::Bernoulli(1.0 - p)) * (1.0 / (1.0 - p))
    };
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_has_the_asked_rate_and_keeps_the_mean() {
        reseed(3);
        let m = host_mask(200_001, 0.1);
        assert_eq!(m.len(), 200_001);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.1).abs() < 0.003, "dropped {dropped}");
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
        assert!((mean - 1.0).abs() < 0.004, "mean {mean}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
    }

    #[test]
    fn reseeding_repeats_the_stream_and_streams_differ() {
        reseed(7);
        let a = host_mask(1000, 0.5);
        let a2 = host_mask(1000, 0.5);
        reseed(7);
        let b = host_mask(1000, 0.5);
        reseed(8);
        let c = host_mask(1000, 0.5);
        assert_eq!(a, b);
        assert_ne!(a, a2);
        assert_ne!(a, c);
    }

    #[test]
    fn identity_without_autodiff_and_masks_with_it() {
        let x = Tensor::<2>::ones([4, 512], &Device::flex());
        let y = dropout(x.clone(), 0.5);
        assert_eq!(y.into_data(), x.into_data());
        let ad = Device::flex().autodiff();
        reseed(1);
        let y = dropout(Tensor::<2>::ones([4, 512], &ad), 0.5).into_data();
        let v = y.as_slice::<f32>().unwrap();
        let zeros = v.iter().filter(|&&x| x == 0.0).count();
        assert!((800..1250).contains(&zeros), "zeros {zeros} of 2048");
        assert!(v.iter().all(|&x| x == 0.0 || x == 2.0));
    }
}
