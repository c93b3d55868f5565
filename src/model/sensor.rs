//! Sensor tokens: a time series [B, T, C] cut into temporal patches of `patch` rows, each patch
//! projected to one token, plus a learned position per patch.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct PatchEncoder {
    pub proj: Linear,
    pub pos: Param<Tensor<2>>,
    pub patch: usize,
    pub channels: usize,
}

/// A sensor series' patch encoder: `len` rows of `channels`, cut into patches of `patch` rows,
/// each projected to `d_model`.
#[derive(Config, Debug)]
pub struct PatchEncoderConfig {
    pub len: usize,
    pub channels: usize,
    pub patch: usize,
    pub d_model: usize,
}

impl PatchEncoderConfig {
    pub fn init(&self, device: &Device) -> PatchEncoder {
        let (len, channels, patch, d) = (self.len, self.channels, self.patch, self.d_model);
        assert!(
            len.is_multiple_of(patch),
            "sequence length {len} is not a multiple of the patch {patch}"
        );
        PatchEncoder {
            proj: LinearConfig::new(patch * channels, d).init(device),
            pos: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([len / patch, d], device),
            patch,
            channels,
        }
    }
}

impl PatchEncoder {
    pub fn tokens(&self) -> usize {
        self.pos.dims()[0]
    }

    /// Raw patches [B, n, patch * C] (also the reconstruction target of pretraining).
    pub fn patches(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, _, _] = x.dims();
        x.reshape([b, self.tokens(), self.patch * self.channels])
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let p = self.patches(x);
        self.proj.forward(p) + self.pos.val().unsqueeze_dim(0)
    }
}
