//! Where each parameter lies in the fused optimizer's flat buffers.
//!
//! Parameters are laid end to end in module order, each padded with zeros to a whole number
//! of chunks, so that a per-parameter sum (the clipping norm) is two parallel reductions: the
//! sum of each chunk, then the sum of each parameter's chunks (a masked sum over a
//! [parameters, chunks] matrix). Zeros in the padding stay zero through AdamW (no gradient, no
//! moment, no update).

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::TensorData;

/// Chunks at most this many, whatever the model's size (the owner matrix is P × chunks).
const MAX_CHUNKS: usize = 4096;
const MIN_CHUNK: usize = 256;

pub(super) struct Layout {
    pub ids: Vec<ParamId>,
    pub shapes: Vec<Vec<usize>>,
    /// Elements of each parameter, and where its segment starts.
    pub lens: Vec<usize>,
    offsets: Vec<usize>,
    chunk: usize,
    /// Zeros after each parameter up to its segment's end (None: it fills whole chunks).
    pads: Vec<Option<Tensor<1>>>,
    /// The parameter of each element ([N], for spreading per-parameter values).
    segment: Tensor<1, Int>,
    /// 1 where chunk `c` belongs to parameter `p` ([P, chunks]).
    owner: Tensor<2>,
}

impl Layout {
    pub fn new(ids: &[ParamId], shapes: &[Vec<usize>], device: &Device) -> Self {
        let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let total: usize = lens.iter().sum();
        let chunk = total
            .div_ceil(MAX_CHUNKS)
            .next_power_of_two()
            .max(MIN_CHUNK);
        let padded: Vec<usize> = lens
            .iter()
            .map(|n| n.div_ceil(chunk).max(1) * chunk)
            .collect();
        let mut offsets = Vec::with_capacity(lens.len());
        let mut at = 0;
        for p in &padded {
            offsets.push(at);
            at += p;
        }
        let rows = at / chunk;
        let mut segment = Vec::with_capacity(at);
        let mut owner = vec![0f32; lens.len() * rows];
        for (i, p) in padded.iter().enumerate() {
            segment.extend(std::iter::repeat_n(i as i64, *p));
            for r in offsets[i] / chunk..(offsets[i] + p) / chunk {
                owner[i * rows + r] = 1.0;
            }
        }
        let pads = lens
            .iter()
            .zip(&padded)
            .map(|(n, p)| (p > n).then(|| Tensor::zeros([p - n], device)))
            .collect();
        Self {
            ids: ids.to_vec(),
            shapes: shapes.to_vec(),
            segment: Tensor::from_data(TensorData::new(segment, [at]), device),
            owner: Tensor::from_data(TensorData::new(owner, [lens.len(), rows]), device),
            lens,
            offsets,
            chunk,
            pads,
        }
    }

    /// One flat buffer from one tensor per parameter (flattened, in layout order).
    pub fn join(&self, parts: Vec<Tensor<1>>) -> Tensor<1> {
        let mut all = Vec::with_capacity(2 * parts.len());
        for (t, pad) in parts.into_iter().zip(&self.pads) {
            all.push(t);
            all.extend(pad.clone());
        }
        Tensor::cat(all, 0)
    }

    /// Parameter `i`'s elements of a flat buffer.
    pub fn part(&self, flat: &Tensor<1>, i: usize) -> Tensor<1> {
        flat.clone().narrow(0, self.offsets[i], self.lens[i])
    }

    /// The sum of each parameter's elements ([P]).
    pub fn sums(&self, flat: Tensor<1>) -> Tensor<1> {
        let rows = flat.dims()[0] / self.chunk;
        let chunks = flat
            .reshape([rows, self.chunk])
            .sum_dim(1)
            .reshape([1, rows]);
        let p = self.lens.len();
        (self.owner.clone() * chunks).sum_dim(1).reshape([p])
    }

    /// A per-parameter value ([P]) at each element of its segment ([N]).
    pub fn spread(&self, per: Tensor<1>) -> Tensor<1> {
        per.select(0, self.segment.clone())
    }
}
