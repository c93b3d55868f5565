//! wgpu gives the same numbers as flex on a small forward pass (CI runs it on Mesa's lavapipe
//! CPU Vulkan driver). Skips with a message when no wgpu adapter exists.

use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

#[derive(Module, Debug)]
struct Net {
    embed: Linear,
    enc: TransformerEncoder,
    head: Linear,
}

impl Net {
    fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let h = self
            .enc
            .forward(TransformerEncoderInput::new(self.embed.forward(x)));
        burn::tensor::activation::softmax(self.head.forward(h.mean_dim(1).squeeze_dim(1)), 1)
    }
}

#[test]
fn wgpu_agrees_with_flex_on_a_forward_pass() {
    let wgpu = match dfm::device::open_wgpu() {
        Ok((d, name, _)) => {
            eprintln!("wgpu adapter: {name}");
            d
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: no wgpu adapter on this machine ({e}); install mesa-vulkan-drivers to run this test on the CPU"
            );
            return;
        }
    };
    let flex = Device::flex();
    flex.seed(3);
    let net = Net {
        embed: LinearConfig::new(8, 32).init(&flex),
        enc: TransformerEncoderConfig::new(32, 64, 4, 2)
            .with_norm_first(true)
            .with_dropout(0.0)
            .init(&flex),
        head: LinearConfig::new(32, 5).init(&flex),
    };
    let x = Tensor::<3>::random([4, 12, 8], Distribution::Normal(0.0, 1.0), &flex);
    let on_flex: Vec<f32> = net
        .forward(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let net_gpu = net.to_device(&wgpu);
    let on_wgpu: Vec<f32> = net_gpu
        .forward(x.to_device(&wgpu))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(on_flex.len(), on_wgpu.len());
    let max_diff = on_flex
        .iter()
        .zip(&on_wgpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("max |flex - wgpu| = {max_diff:e}");
    assert!(max_diff < 1e-4, "flex and wgpu disagree by {max_diff}");
    assert!(
        on_flex.iter().any(|&v| (v - 0.2).abs() > 1e-3),
        "the output is not trivially uniform"
    );
}
