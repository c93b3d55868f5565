//! An exponential moving average of the weights (`train.ema`, Polyak averaging): after every
//! optimizer step each averaged weight moves towards the trained one,
//! `avg = keep * avg + (1 - keep) * w`, with `keep = min(decay, (1 + n) / (10 + n))` after `n`
//! updates, so the first steps are not held near the initial weights. The average is what
//! validation measures and what `best/` keeps: a small, noisy run ends on a smoother model.
//! Checkpoints keep it (`ema.bpk`) so that `--resume` goes on exactly.

use crate::model::DfmModel;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use std::collections::HashMap;

pub struct Ema {
    pub model: DfmModel,
    decay: f64,
}

impl Ema {
    /// Starts the average at `model`'s weights (a copy that takes no part in training).
    pub fn new(model: &DfmModel, decay: f64) -> Self {
        Ema {
            model: blend(model.clone(), &weights(model), 0.0),
            decay,
        }
    }

    /// An average restored from a checkpoint.
    pub fn restored(model: DfmModel, decay: f64) -> Self {
        Ema { model, decay }
    }

    /// The share of the average kept after `n` updates.
    pub fn keep(&self, n: usize) -> f64 {
        self.decay.min((1.0 + n as f64) / (10.0 + n as f64))
    }

    /// Moves the average towards `model`'s weights (`n`: updates so far).
    pub fn update(&mut self, model: &DfmModel, n: usize) {
        let keep = self.keep(n);
        let avg = std::mem::replace(&mut self.model, model.clone());
        self.model = blend(avg, &weights(model), keep);
    }
}

/// A model's initialized float weights by id, flattened, off the autodiff graph.
fn weights(model: &DfmModel) -> HashMap<ParamId, Tensor<1>> {
    struct Collect(HashMap<ParamId, Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if p.is_initialized() {
                let t = p.val().inner();
                let n = t.shape().num_elements();
                self.0.insert(p.id, t.reshape([n]));
            }
        }
    }
    let mut c = Collect(HashMap::new());
    model.visit(&mut c);
    c.0
}

/// `avg`'s weights moved to `keep * avg + (1 - keep) * w` (weights `w` lacks, and weights not
/// yet initialized, stay as they are; none records a gradient).
fn blend(avg: DfmModel, w: &HashMap<ParamId, Tensor<1>>, keep: f64) -> DfmModel {
    struct Blend<'a>(&'a HashMap<ParamId, Tensor<1>>, f64);
    impl ModuleMapper for Blend<'_> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some(w) = self.0.get(&p.id).filter(|_| p.is_initialized()) else {
                return p;
            };
            let keep = self.1;
            p.map(|t| {
                let (grad, autodiff) = (t.is_require_grad(), t.is_autodiff());
                // On the inner backend: the result is a leaf that records nothing. After a
                // data-parallel step a weight may sit on another device than its average.
                let t = t.inner();
                let w = w.clone().reshape(t.shape()).to_device(&t.device());
                let t = if keep == 0.0 {
                    w
                } else {
                    t.mul_scalar(keep) + w.mul_scalar(1.0 - keep)
                };
                let t = if autodiff { t.autodiff() } else { t };
                if grad { t.require_grad() } else { t }
            })
        }
    }
    avg.map(&mut Blend(w, keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    /// A small model with every weight drawn (burn draws each at its first use).
    fn model() -> DfmModel {
        let spec = crate::model::testing::tiny_spec(2);
        crate::model::testing::small_model(ModelConfig::default(), &spec).map(&mut Shift(0.0))
    }

    /// Every weight plus a constant.
    struct Shift(f32);
    impl ModuleMapper for Shift {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let c = self.0;
            p.map(|t| t.add_scalar(c))
        }
    }

    /// All weights, in id order.
    fn flat(m: &DfmModel) -> Vec<f32> {
        let w = weights(m);
        let mut ids: Vec<_> = w.keys().copied().collect();
        ids.sort_by_key(|i| i.val());
        ids.iter()
            .flat_map(|i| {
                w[i].clone()
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn the_average_moves_by_one_minus_keep_towards_the_weights() {
        let a = model();
        let b = a.clone().map(&mut Shift(1.0));
        let (wa, wb) = (flat(&a), flat(&b));
        assert!(wa.len() > 1000 && wa.len() == wb.len());
        let mut ema = Ema::new(&a, 0.9);
        assert_eq!(flat(&ema.model), wa);
        // Early updates keep little of the start; after 100, keep = min(0.9, 101/110) = 0.9.
        assert!(ema.keep(0) < 0.11 && (ema.keep(100) - 0.9).abs() < 1e-12);
        ema.update(&b, 100);
        for ((x, y), z) in wa.iter().zip(&wb).zip(flat(&ema.model)) {
            assert!((z - (0.9 * x + 0.1 * y)).abs() < 1e-5, "{z} vs {x} {y}");
        }
        // The models it averages are untouched.
        assert_eq!(flat(&a), wa);
        assert_eq!(flat(&b), wb);
    }
}
