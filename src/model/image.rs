//! Image tokens (ViT-style): a 3x3 convolution stem keeps thin roads visible, then a strided
//! convolution cuts the image into `patch` x `patch` patches, one token each, plus a learned
//! position per patch.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::gelu;

#[derive(Module, Debug)]
pub struct ImageEncoder {
    pub stem: Conv2d,
    pub patchify: Conv2d,
    pub pos: Param<Tensor<2>>,
}

const STEM: usize = 16;

/// An image encoder for `size` x `size` images cut into `patch` x `patch` patches.
#[derive(Config, Debug)]
pub struct ImageEncoderConfig {
    pub size: usize,
    pub patch: usize,
    pub d_model: usize,
}

impl ImageEncoderConfig {
    pub fn init(&self, device: &Device) -> ImageEncoder {
        let (patch, d) = (self.patch, self.d_model);
        let g = self.size / patch;
        ImageEncoder {
            stem: Conv2dConfig::new([3, STEM], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            patchify: Conv2dConfig::new([STEM, d], [patch, patch])
                .with_stride([patch, patch])
                .init(device),
            pos: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([g * g, d], device),
        }
    }
}

impl ImageEncoder {
    pub fn tokens(&self) -> usize {
        self.pos.dims()[0]
    }

    /// [B, 3, S, S] -> [B, (S/p)^2, d]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let h = self.patchify.forward(gelu(self.stem.forward(x)));
        let [b, d, gh, gw] = h.dims();
        h.reshape([b, d, gh * gw]).swap_dims(1, 2) + self.pos.val().unsqueeze_dim(0)
    }
}
