//! Video tokens (ViViT/VideoMAE-style tubelets): a per-pixel stem (a 1x1x1 convolution: colour
//! to a few features, so a small bright lamp stands out of its patch), then one token per
//! tubelet (`tubelet` frames x `patch` x `patch` pixels) through a dense layer over the
//! tubelet's stem features: the 3D convolution whose kernel and stride are one tubelet, written
//! as a reshape and a matrix product (on the CPU backend the matmul is several times faster
//! than burn's direct 3D convolution), plus a projection of the largest value over the tubelet
//! of each of a wider set of per-pixel colour features (a lamp of one pixel moves that maximum
//! wherever it is, where it is one input in thousands of the dense layer). Plus a learned position per tubelet and the
//! modality's own embedding. Built only for datasets with clips, and drawn after every other weight, so
//! models without video start from the same weights as before video existed.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;

#[derive(Module, Debug)]
pub struct VideoEncoder {
    /// Per pixel: RGB -> `STEM` features.
    pub stem: Linear,
    /// Per tubelet: `tubelet * patch * patch * STEM` -> d.
    pub tubelet: Linear,
    /// Per pixel: RGB -> `PEAK` features whose largest value over each tubelet is kept.
    pub peak_stem: Linear,
    /// Per tubelet: the largest value of each peak feature over it -> d (a small lamp anywhere
    /// in the tubelet shows, whatever its pixel).
    pub peak: Linear,
    pub pos: Param<Tensor<2>>,
    /// The video modality's embedding: [d].
    pub modality: Param<Tensor<1>>,
    pub frames_per_token: usize,
    pub patch: usize,
}

/// Features per pixel after the stem.
pub const STEM: usize = 4;
/// Colour features per pixel whose maximum over a tubelet is a token input. Many more than
/// `STEM` (they cost 3 x PEAK multiply-adds a pixel): a maximum passes gradient to one pixel,
/// so a colour feature learns to pick out a lamp only if it already favours the lamp's colour
/// over the rest of the tubelet; with 4 features, 2 of 3 seeds never learned to read the
/// lights in 3 epochs.
pub const PEAK: usize = 16;

/// A video encoder for clips of `frames` frames of `size` x `size` pixels, cut into tubelets
/// of `tubelet` frames by `patch` x `patch` pixels.
#[derive(Config, Debug)]
pub struct VideoEncoderConfig {
    pub frames: usize,
    pub size: usize,
    pub tubelet: usize,
    pub patch: usize,
    pub d_model: usize,
}

impl VideoEncoderConfig {
    pub fn init(&self, device: &Device) -> VideoEncoder {
        let (frames, size, tubelet) = (self.frames, self.size, self.tubelet);
        let (patch, d) = (self.patch, self.d_model);
        let n = (frames / tubelet) * (size / patch) * (size / patch);
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        VideoEncoder {
            stem: LinearConfig::new(3, STEM).init(device),
            tubelet: LinearConfig::new(tubelet * patch * patch * STEM, d).init(device),
            peak_stem: LinearConfig::new(3, PEAK).init(device),
            peak: LinearConfig::new(PEAK, d).init(device),
            pos: init.init([n, d], device),
            modality: init.init([d], device),
            frames_per_token: tubelet,
            patch,
        }
    }
}

impl VideoEncoder {
    pub fn tokens(&self) -> usize {
        self.pos.dims()[0]
    }

    /// [B, T, S, S, 3] (frames as numpy stores them) -> [B, (T/t) (S/p)^2, d], with positions
    /// and the modality embedding; tokens in (time, row, column) order.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<3> {
        let f = gelu(self.stem.forward(x.clone())); // [B, T, H, W, STEM]
        let tubes = tubelets(f, self.frames_per_token, self.patch);
        let colours = gelu(self.peak_stem.forward(x)); // [B, T, H, W, PEAK]
        let colours = tubelets(colours, self.frames_per_token, self.patch);
        let [b, n, k] = colours.dims();
        let peaks = colours
            .reshape([b, n, k / PEAK, PEAK])
            .max_dim(2)
            .reshape([b, n, PEAK]);
        let tokens = self.tubelet.forward(tubes) + self.peak.forward(peaks);
        let d = self.pos.dims()[1];
        tokens + self.pos.val().unsqueeze_dim(0) + self.modality.val().reshape([1, 1, d])
    }
}

/// Cuts [B, T, H, W, C] into tubelets of `ft` frames x `p` x `p` pixels: [B, n, ft p p C], in
/// (time, row, column) order, each tubelet's values in (frame, row, column, channel) order.
pub fn tubelets(x: Tensor<5>, ft: usize, p: usize) -> Tensor<3> {
    let [b, t, h, w, c] = x.dims();
    let (gt, gh, gw) = (t / ft, h / p, w / p);
    x.reshape([b * gt, ft, gh, p, gw * p * c])
        .permute([0, 2, 1, 3, 4]) // [B gt, gh, ft, p, gw p C]
        .reshape([b * gt * gh, ft * p, gw, p * c])
        .swap_dims(1, 2) // [B gt gh, gw, ft p, p C]
        .reshape([b, gt * gh * gw, ft * p * p * c])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value lands in its tubelet, in order, against an index-by-index cut.
    #[test]
    fn tubelets_cut_time_rows_and_columns() {
        let (b, t, h, w, c, ft, p) = (2, 4, 6, 9, 2, 2, 3);
        let n = b * t * h * w * c;
        let at = |bi: usize, ti: usize, y: usize, x: usize, ci: usize| {
            (((bi * t + ti) * h + y) * w + x) * c + ci
        };
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let x = Tensor::<5>::from_data(
            burn::tensor::TensorData::new(data, [b, t, h, w, c]),
            &Device::flex(),
        );
        let got: Vec<f32> = tubelets(x, ft, p).into_data().try_to_vec().unwrap();
        let mut want = Vec::new();
        for bi in 0..b {
            for gt in 0..t / ft {
                for gy in 0..h / p {
                    for gx in 0..w / p {
                        for dt in 0..ft {
                            for dy in 0..p {
                                for dx in 0..p {
                                    for ci in 0..c {
                                        let i = at(bi, gt * ft + dt, gy * p + dy, gx * p + dx, ci);
                                        want.push(i as f32);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(got, want);
    }
}
