//! Geospatial and context tokens. One token per stop: its features plus Fourier features of its
//! local coordinates (so the model resolves positions from tens of meters to kilometers), through
//! a small MLP. One token per context group (time, weather, peak day, road, zone, depot).

use crate::features::{CTX_GROUPS, STOP_CH};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;

/// Frequencies of the Fourier features (powers of two).
pub const FOURIER: usize = 6;

#[derive(Module, Debug)]
pub struct StopEncoder {
    pub fc1: Linear,
    pub fc2: Linear,
    pub freqs: Tensor<1>,
}

impl StopEncoder {
    pub fn new(d: usize, device: &Device) -> Self {
        let f: Vec<f32> = (0..FOURIER)
            .map(|k| std::f32::consts::PI * (1 << k) as f32)
            .collect();
        StopEncoder {
            fc1: LinearConfig::new(STOP_CH + 4 * FOURIER, d).init(device),
            fc2: LinearConfig::new(d, d).init(device),
            freqs: Tensor::from_data(burn::tensor::TensorData::new(f, [FOURIER]), device),
        }
    }

    /// [B, N, STOP_CH] -> [B, N, d]
    pub fn forward(&self, stops: Tensor<3>) -> Tensor<3> {
        let [b, n, _] = stops.dims();
        let xy = stops.clone().narrow(2, 0, 2); // [B, N, 2]
        let ang = xy.unsqueeze_dim::<4>(3) * self.freqs.clone().reshape([1, 1, 1, FOURIER]); // [B,N,2,F]
        let four = Tensor::cat(vec![ang.clone().sin(), ang.cos()], 3).reshape([b, n, 4 * FOURIER]);
        let x = Tensor::cat(vec![stops, four], 2);
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

#[derive(Module, Debug)]
pub struct ContextEncoder {
    pub groups: Vec<Linear>,
}

impl ContextEncoder {
    pub fn new(d: usize, device: &Device) -> Self {
        ContextEncoder {
            groups: CTX_GROUPS
                .iter()
                .map(|(_, r)| LinearConfig::new(r.len(), d).init(device))
                .collect(),
        }
    }

    pub fn tokens(&self) -> usize {
        self.groups.len()
    }

    /// [B, CTX_CH] -> [B, groups, d]
    pub fn forward(&self, ctx: Tensor<2>) -> Tensor<3> {
        let toks: Vec<Tensor<3>> = CTX_GROUPS
            .iter()
            .zip(&self.groups)
            .map(|((_, r), lin)| {
                lin.forward(ctx.clone().narrow(1, r.start, r.len()))
                    .unsqueeze_dim(1)
            })
            .collect();
        Tensor::cat(toks, 1)
    }
}
