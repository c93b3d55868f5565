//! AdamW over all parameters at once (`train.optimizer = "adamw_fused"`).
//!
//! burn's `ModuleOptimizer` updates one parameter tensor at a time: about a dozen small
//! operations per tensor (moments, bias correction, decay, clipping), so a model of P tensors
//! launches ~12·P kernels per step on a GPU. This optimizer keeps both moments of every
//! parameter in two flat buffers and runs the same arithmetic once over all of them: the
//! gradients and parameters are concatenated, updated by a fixed number of operations whatever
//! P is, and sliced back. Per-tensor quantities (the clipping norm, the step count of a
//! parameter that first got a gradient later than the others) are kept per segment of the
//! buffers and spread with one gather.
//!
//! The arithmetic is burn's AdamW ([`burn::optim::AdamW`]) operation for operation, including
//! its per-tensor gradient clipping by norm, and the state is saved in burn's record format
//! (`optim.bpk`, keyed by parameter id), so a run can switch between the two optimizers at a
//! resume.

use super::fused_state::{Moments, read_record, write_record};
use super::layout::Layout;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradAdaptor;
use burn::prelude::*;
use burn::tensor::TensorData;
use std::collections::HashMap;
use std::path::Path;

/// AdamW's hyper-parameters, as `burn::optim::AdamWConfig` names them.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this L2 norm (burn's `GradientClipping::Norm`).
    pub clip_norm: Option<f32>,
}

impl Default for Hyper {
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay: 1e-4,
            clip_norm: None,
        }
    }
}

/// The moments of the parameters updated in the last step, in one buffer each.
struct Flat {
    layout: Layout,
    /// Steps each parameter has taken (burn's per-parameter `time`).
    times: Vec<usize>,
    m: Tensor<1>,
    v: Tensor<1>,
}

impl Flat {
    /// Each parameter's moments, sliced out of the flat buffers.
    fn split(&self) -> Vec<(ParamId, Moments)> {
        let l = &self.layout;
        (0..l.ids.len())
            .map(|i| {
                let m = l.part(&self.m, i);
                let v = l.part(&self.v, i);
                let (time, shape) = (self.times[i], l.shapes[i].clone());
                (l.ids[i], Moments { m, v, time, shape })
            })
            .collect()
    }
}

pub struct FusedAdamW {
    hyper: Hyper,
    flat: Option<Flat>,
    /// Moments of parameters that are not in `flat` (loaded from a record, or without a
    /// gradient in the last step).
    parked: HashMap<ParamId, Moments>,
}

/// One parameter with a gradient in this step.
struct Part {
    id: ParamId,
    shape: Vec<usize>,
    grad: Tensor<1>,
    value: Tensor<1>,
}

impl FusedAdamW {
    pub fn new(hyper: Hyper) -> Self {
        Self {
            hyper,
            flat: None,
            parked: HashMap::new(),
        }
    }

    /// Updates `module` with `grads` (one device's or several's, summed per parameter on the
    /// parameter's device), as burn's `ModuleOptimizer::step` does with AdamW.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: impl Into<GradAdaptor>) -> M {
        let mut gather = Gather {
            grads: grads.into(),
            parts: Vec::new(),
        };
        module.visit(&mut gather);
        let parts = gather.parts;
        if parts.is_empty() {
            return module;
        }
        let ids: Vec<ParamId> = parts.iter().map(|p| p.id).collect();
        let shapes: Vec<Vec<usize>> = parts.iter().map(|p| p.shape.clone()).collect();
        let device = parts[0].value.device();
        let flat = self.aligned(&ids, &shapes, &device);
        let (grads, values): (Vec<_>, Vec<_>) =
            parts.into_iter().map(|p| (p.grad, p.value)).unzip();
        let grad = self.clipped(flat.layout.join(grads), &flat.layout);
        let value = flat.layout.join(values);
        let updated = self.update(flat, grad, value, lr);
        let layout = &self.flat.as_ref().expect("just stored").layout;
        let parts = (0..ids.len()).map(|i| (ids[i], layout.part(&updated, i)));
        module.map(&mut Scatter {
            updated: parts.collect(),
        })
    }

    /// The moments laid out for this step's parameters (the last step's layout when it is the
    /// same, which is the usual case).
    fn aligned(&mut self, ids: &[ParamId], shapes: &[Vec<usize>], device: &Device) -> Flat {
        if let Some(f) = self.flat.take() {
            if f.layout.ids == ids && f.layout.shapes == shapes {
                return f;
            }
            self.park(f);
        }
        let (mut ms, mut vs, mut times) = (Vec::new(), Vec::new(), Vec::new());
        for (id, shape) in ids.iter().zip(shapes) {
            let got = self.parked.remove(id).filter(|s| s.shape == *shape);
            let s = got.unwrap_or_else(|| Moments::zeros(shape, device));
            ms.push(s.m.to_device(device));
            vs.push(s.v.to_device(device));
            times.push(s.time);
        }
        let layout = Layout::new(ids, shapes, device);
        Flat {
            m: layout.join(ms),
            v: layout.join(vs),
            layout,
            times,
        }
    }

    /// Splits the flat moments back into one entry per parameter.
    fn park(&mut self, f: Flat) {
        for (id, s) in f.split() {
            self.parked.insert(id, s);
        }
    }

    /// burn's `clip_by_norm` on each parameter's segment: `g · min(1, c / (‖g‖ + tiny))`.
    fn clipped(&self, grad: Tensor<1>, layout: &Layout) -> Tensor<1> {
        let Some(threshold) = self.hyper.clip_norm else {
            return grad;
        };
        let norms = layout.sums(grad.clone().square()).sqrt();
        let coef = (threshold / norms.add_scalar(f32::MIN_POSITIVE)).clamp_max(1.0);
        grad * layout.spread(coef)
    }

    /// The AdamW step on the flat buffers; stores the new moments and returns the new values.
    fn update(&mut self, mut f: Flat, grad: Tensor<1>, value: Tensor<1>, lr: f64) -> Tensor<1> {
        let h = self.hyper;
        f.m =
            f.m.mul_scalar(h.beta_1)
                .add(grad.clone().mul_scalar(1.0 - h.beta_1));
        f.v =
            f.v.mul_scalar(h.beta_2)
                .add(grad.square().mul_scalar(1.0 - h.beta_2));
        for t in &mut f.times {
            *t += 1;
        }
        let m_hat = self.corrected(f.m.clone(), h.beta_1, &f);
        let v_hat = self.corrected(f.v.clone(), h.beta_2, &f);
        let delta = m_hat.div(v_hat.sqrt().add_scalar(h.epsilon));
        let decay = lr * h.weight_decay as f64;
        let decayed = if decay == 0.0 {
            value
        } else {
            value.mul_scalar(1.0 - decay)
        };
        let updated = decayed - delta.mul_scalar(lr);
        self.flat = Some(f);
        updated
    }

    /// A moment divided by its bias correction `1 - beta^t` (per parameter when their step
    /// counts differ).
    fn corrected(&self, moment: Tensor<1>, beta: f32, f: &Flat) -> Tensor<1> {
        let factor = |t: usize| 1f32 - beta.powi(t as i32);
        if f.times.iter().all(|t| *t == f.times[0]) {
            return moment.div_scalar(factor(f.times[0]));
        }
        let per: Vec<f32> = f.times.iter().map(|t| factor(*t)).collect();
        let p = per.len();
        let per = Tensor::<1>::from_data(TensorData::new(per, [p]), &moment.device());
        moment.div(f.layout.spread(per))
    }

    /// Saves the moments in burn's optimizer record format.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut all: Vec<(ParamId, Moments)> =
            self.parked.iter().map(|(id, s)| (*id, s.clone())).collect();
        if let Some(f) = &self.flat {
            all.extend(f.split());
        }
        write_record(path, all)
    }

    /// Loads moments saved by [`FusedAdamW::save`] or by burn's `ModuleOptimizer` with AdamW.
    pub fn load(mut self, path: &Path, device: &Device) -> anyhow::Result<Self> {
        self.flat = None;
        self.parked = read_record(path, device)?;
        Ok(self)
    }
}

/// Takes each parameter's gradient and flattened value, in module order.
struct Gather {
    grads: GradAdaptor,
    parts: Vec<Part>,
}

impl ModuleVisitor for Gather {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some((grad, _)) = self.grads.remove::<D>(param.id) else {
            return;
        };
        let value = param.val().inner();
        let n = value.shape().num_elements();
        let grad = grad.to_device(&value.device());
        self.parts.push(Part {
            id: param.id,
            shape: value.dims().to_vec(),
            grad: grad.reshape([n]),
            value: value.reshape([n]),
        });
    }
}

/// Puts each updated parameter back, with the autodiff state it had.
struct Scatter {
    updated: HashMap<ParamId, Tensor<1>>,
}

impl ModuleMapper for Scatter {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(updated) = self.updated.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let shape = tensor.shape();
        let require_grad = tensor.is_require_grad();
        let checkpointing = tensor.gradient_checkpointing_strategy();
        let distributed = tensor.is_distributed();
        let value: Tensor<D> = updated.reshape(shape);
        let mut value = Tensor::from_inner(value);
        if let Some(s) = checkpointing {
            value = value.with_gradient_checkpointing_strategy(s);
        }
        if require_grad {
            value = value.require_grad();
        }
        if distributed {
            value = value.set_distributed(id);
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

#[cfg(test)]
#[path = "fused_adamw_tests.rs"]
mod tests;
