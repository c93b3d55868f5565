//! A raster as model input: resized to the model's size and standardized per image and channel.

/// Bilinear resize of an RGB image to `size` x `size`, into CHW floats standardized per image
/// and channel (zero mean, unit variance): map rasters are mostly one light ground colour, and
/// raw pixel values would leave roads, jams and buildings a few percent apart.
pub(super) fn image_chw(px: &crate::data::sample::Rgb8, size: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * size * size];
    let (w, h) = (px.width as usize, px.height as usize);
    if (w, h) == (size, size) {
        // Same size: bilinear weights are exactly 1 and 0, so this is the same result, faster.
        for (i, rgb) in px.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * size * size + i] = rgb[c] as f32 / 255.0;
            }
        }
    } else {
        bilinear_chw(px, size, &mut out);
    }
    standardize_channels(&mut out, size * size);
    out
}

/// Each channel of a CHW image (`n` pixels a channel) to zero mean and unit variance (the
/// standard deviation floored at 0.02, so a flat image stays finite).
pub(super) fn standardize_channels(chw: &mut [f32], n: usize) {
    for ch in chw.chunks_mut(n) {
        let mean = ch.iter().sum::<f32>() / n as f32;
        let var = ch.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let inv = 1.0 / var.sqrt().max(0.02);
        for v in ch.iter_mut() {
            *v = (*v - mean) * inv;
        }
    }
}

/// Bilinear resize into `out` (CHW, values / 255). The source columns and weights of each
/// output column are computed once per image rather than per pixel and channel.
pub(super) fn bilinear_chw(px: &crate::data::sample::Rgb8, size: usize, out: &mut [f32]) {
    let (w, h) = (px.width as usize, px.height as usize);
    let taps = |n: usize, o: usize| {
        let f = ((o as f32 + 0.5) * (n as f32 / size as f32) - 0.5).clamp(0.0, (n - 1) as f32);
        let i0 = f.floor() as usize;
        (i0, (i0 + 1).min(n - 1), f.fract())
    };
    let cols: Vec<(usize, usize, f32)> = (0..size).map(|ox| taps(w, ox)).collect();
    for oy in 0..size {
        let (y0, y1, ty) = taps(h, oy);
        for (ox, &(x0, x1, tx)) in cols.iter().enumerate() {
            for c in 0..3 {
                let p = |x: usize, y: usize| px.data[(y * w + x) * 3 + c] as f32;
                let v = (p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx) * (1.0 - ty)
                    + (p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx) * ty;
                out[c * size * size + oy * size + ox] = v / 255.0;
            }
        }
    }
}
