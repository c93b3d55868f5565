//! The retrieval token (`model.retrieval`): what the fleet's past trips near here did
//! (`features::retrieval`: the neighbours' mean future over constant velocity at the knots, and
//! how many there were), one token from a linear layer with an embedding of its own, attended
//! only where neighbours were found.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

#[derive(Config, Debug)]
pub struct RetrievalEncoderConfig {
    /// 2 values per knot and the count.
    pub input: usize,
    pub d_model: usize,
}

#[derive(Module, Debug)]
pub struct RetrievalEncoder {
    pub proj: Linear,
    /// The token's modality embedding: [d].
    pub embed: Param<Tensor<1>>,
}

impl RetrievalEncoderConfig {
    pub fn init(&self, device: &Device) -> RetrievalEncoder {
        RetrievalEncoder {
            proj: LinearConfig::new(self.input, self.d_model).init(device),
            embed: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([self.d_model], device),
        }
    }
}

impl RetrievalEncoder {
    /// [B, input] -> one token [B, 1, d].
    pub fn forward(&self, x: Tensor<2>) -> Tensor<3> {
        let d = self.embed.dims()[0];
        (self.proj.forward(x) + self.embed.val().reshape([1, d])).unsqueeze_dim::<3>(1)
    }
}
