//! `model.support_guard`: the learned correction shrinks to nothing beyond the training data's
//! range of motion, so the most likely trajectory falls back to constant velocity where no
//! training data says otherwise.

use super::DfmModel;
use burn::module::Param;
use burn::prelude::*;

/// The support guard's threshold before training sets it: so large that nothing is shrunk.
pub const UNSET_SUPPORT: f32 = 1e30;

/// A motion scale as a mean speed (m/s) for data read by `norm`: the motion scale is the
/// history's mean step times its rows over the position scale.
pub fn motion_scale_mps(q: f32, norm: &crate::features::Featurizer) -> f64 {
    let (h, step) = (
        norm.spec.history_len as f64,
        norm.spec.history_step_s as f64,
    );
    q as f64 * norm.pos_scale as f64 / (h * step)
}

/// `model.support_guard`: how much of the learned correction a sample keeps [B], from its
/// motion scale `s` [B] and the training histories' 99th percentile `q` [1]: 1 up to `q`,
/// falling linearly to 0 at `2 q` (constant velocity beyond: no training data says otherwise).
pub fn support_factor(s: Tensor<1>, q: Tensor<1>) -> Tensor<1> {
    let [bs] = s.dims();
    let q = q.repeat_dim(0, bs);
    (q.clone().mul_scalar(2.0) - s).div(q).clamp(0.0, 1.0)
}

impl DfmModel {
    /// The support guard's threshold as a mean speed (m/s) for data read by `norm`. None without
    /// the guard or before training set it.
    pub fn support_guard_mps(&self, norm: &crate::features::Featurizer) -> Option<f64> {
        Some(motion_scale_mps(self.support_q99_set()?, norm))
    }

    /// The support guard's threshold (a motion scale), once training has set it.
    pub fn support_q99_set(&self) -> Option<f32> {
        let q = self.support_q99.as_ref()?.val().into_scalar::<f32>();
        (q < UNSET_SUPPORT / 2.0).then_some(q)
    }

    /// Sets the support guard's threshold (`model.support_guard`; a fixed value, not trained).
    pub fn set_support_q99(&mut self, q: f32, device: &Device) {
        let t = Tensor::from_data([q], device);
        self.support_q99 = Some(Param::from_tensor(t).set_require_grad(false));
    }
}
