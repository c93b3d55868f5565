//! The fusion transformer: a pre-norm encoder over all tokens.
//!
//! It computes what burn's `TransformerEncoder` (pre-norm, GELU, dropout on attention weights,
//! the feed-forward's hidden layer and both residual branches) computes, with the same
//! parameter names (`layers.N.mha.query`, `pwff.linear_inner`, `norm_1`, ...), so checkpoints
//! written with burn's encoder load unchanged. Two things are ours, both for speed:
//! - dropout draws its masks on the host on CPU backends (`super::dropout`), which made the
//!   quickstart's training step 1.4x faster on flex;
//! - at inference on CPU, attention runs as one fused kernel (`burn::tensor::module::attention`)
//!   instead of scores, mask, softmax and product as separate tensors.

use super::dropout::{active, dropout, on_cpu};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

/// Masked scores are set to this before the softmax (as burn's attention does).
const MIN_SCORE: f32 = -1.0e4;

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
    pub n_heads: usize,
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct FeedForward {
    pub linear_inner: Linear,
    pub linear_outer: Linear,
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct FusionLayer {
    pub mha: SelfAttention,
    pub pwff: FeedForward,
    /// Normalizes before the feed-forward block.
    pub norm_1: LayerNorm,
    /// Normalizes before the attention block (burn's names, kept for the checkpoints).
    pub norm_2: LayerNorm,
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct FusionEncoder {
    pub layers: Vec<FusionLayer>,
}

/// The fusion encoder's shape (burn's `Config` idiom: named fields, then `init`).
#[derive(Config, Debug)]
pub struct FusionEncoderConfig {
    pub d_model: usize,
    /// Width of each layer's feed-forward hidden layer.
    pub d_ff: usize,
    pub heads: usize,
    pub layers: usize,
    /// Dropout on attention weights, the feed-forward hidden layer and both residual branches.
    pub dropout: f64,
}

impl FusionEncoderConfig {
    pub fn init(&self, device: &Device) -> FusionEncoder {
        let (d, d_ff, heads, p) = (self.d_model, self.d_ff, self.heads, self.dropout);
        assert!(
            d.is_multiple_of(heads),
            "d_model {d} is not a multiple of heads {heads}"
        );
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        FusionEncoder {
            layers: (0..self.layers)
                .map(|_| FusionLayer {
                    mha: SelfAttention {
                        query: lin(d, d),
                        key: lin(d, d),
                        value: lin(d, d),
                        output: lin(d, d),
                        n_heads: heads,
                        dropout: p,
                    },
                    pwff: FeedForward {
                        linear_inner: lin(d, d_ff),
                        linear_outer: lin(d_ff, d),
                        dropout: p,
                    },
                    norm_1: LayerNormConfig::new(d).init(device),
                    norm_2: LayerNormConfig::new(d).init(device),
                    dropout: p,
                })
                .collect(),
        }
    }
}

impl FusionEncoder {
    /// x [B, n, d]; pad [B, n] true where a token is padding (no query attends to it).
    pub fn forward(&self, mut x: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<3> {
        for layer in &self.layers {
            x = layer.forward(x, pad.clone());
        }
        x
    }
}

impl FusionLayer {
    fn forward(&self, x: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<3> {
        let a = self.mha.forward(self.norm_2.forward(x.clone()), pad);
        let x = x + dropout(a, self.dropout);
        let f = self.pwff.forward(self.norm_1.forward(x.clone()));
        x + dropout(f, self.dropout)
    }
}

impl FeedForward {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = dropout(gelu(self.linear_inner.forward(x)), self.dropout);
        self.linear_outer.forward(h)
    }
}

impl SelfAttention {
    /// [B, n, d] -> [B, heads, n, d / heads]
    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, d] = x.dims();
        x.reshape([b, n, self.n_heads, d / self.n_heads])
            .swap_dims(1, 2)
    }

    fn forward(&self, x: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let device = x.device();
        let q = self.heads(self.query.forward(x.clone()));
        let k = self.heads(self.key.forward(x.clone()));
        let v = self.heads(self.value.forward(x));
        // The fused kernel has no dropout on the weights: used only where none would apply.
        let ctx = if !active(&device, self.dropout) && on_cpu(&device) {
            let mask = pad.reshape([b, 1, 1, n]).expand([b, self.n_heads, n, n]);
            attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
        } else {
            self.attend(q, k, v, pad)
        };
        self.output.forward(ctx.swap_dims(1, 2).reshape([b, n, d]))
    }

    /// softmax(q kᵀ / √dₖ, masked) v, with dropout on the weights when training.
    fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, pad: Tensor<2, Bool>) -> Tensor<4> {
        let [b, _, _, dk] = q.dims();
        let [_, n] = pad.dims();
        let scores = q.matmul(k.swap_dims(2, 3)) / (dk as f32).sqrt();
        let scores = scores.mask_fill(pad.reshape([b, 1, 1, n]), MIN_SCORE);
        let w = dropout(softmax(scores, 3), self.dropout);
        w.matmul(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::transformer::{
        TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
    };
    use burn::tensor::{Distribution, Tolerance};

    fn pad(device: &Device) -> Tensor<2, Bool> {
        // Sample 0 pads its last three tokens, sample 1 none.
        let v: Vec<bool> = (0..2 * 9).map(|i| (6..9).contains(&i)).collect();
        Tensor::from_data(burn::tensor::TensorData::new(v, [2, 9]), device)
    }

    /// The same weights in burn's encoder and ours give the same output at inference (fused
    /// attention on flex), and our decomposed attention agrees with the fused one.
    #[test]
    fn matches_burns_encoder_and_loads_its_record() {
        let device = Device::flex();
        device.seed(5);
        let burn_enc: TransformerEncoder = TransformerEncoderConfig::new(16, 64, 4, 2)
            .with_norm_first(true)
            .with_dropout(0.1)
            .init(&device);
        let ours = FusionEncoderConfig::new(16, 64, 4, 2, 0.1)
            .init(&device)
            .try_load_record(burn_enc.clone().into_record())
            .expect("burn's encoder record fits ours");
        let x = Tensor::<3>::random([2, 9, 16], Distribution::Normal(0.0, 1.0), &device);
        let want = burn_enc.forward(TransformerEncoderInput::new(x.clone()).mask_pad(pad(&device)));
        let got = ours.forward(x.clone(), pad(&device));
        got.clone()
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-4));

        let mha = &ours.layers[0].mha;
        let h = |l: &Linear| mha.heads(l.forward(x.clone()));
        let (q, k, v) = (h(&mha.query), h(&mha.key), h(&mha.value));
        let mask = pad(&device).reshape([2, 1, 1, 9]).expand([2, 4, 9, 9]);
        let fused = attention(
            q.clone(),
            k.clone(),
            v.clone(),
            Some(mask),
            None,
            Default::default(),
        );
        let plain = mha.attend(q, k, v, pad(&device));
        fused
            .into_data()
            .assert_approx_eq::<f32>(&plain.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn dropout_only_when_training() {
        let device = Device::flex();
        device.seed(1);
        let enc = FusionEncoderConfig::new(16, 64, 4, 1, 0.5).init(&device);
        let x = Tensor::<3>::random([2, 9, 16], Distribution::Normal(0.0, 1.0), &device);
        let a = enc.forward(x.clone(), pad(&device)).into_data();
        let b = enc.forward(x.clone(), pad(&device)).into_data();
        assert_eq!(a, b, "inference is deterministic");
        let ad = device.autodiff();
        let enc_ad = enc.clone().fork(&ad);
        let t = enc_ad
            .forward(x.clone().to_device(&ad), pad(&ad))
            .inner()
            .into_data();
        let diff = t
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .zip(a.as_slice::<f32>().unwrap())
            .filter(|(p, q)| (*p - *q).abs() > 1e-4)
            .count();
        assert!(
            diff > 100,
            "training output differs from inference ({diff} of 288)"
        );
    }
}
