//! What unit tests of the model and of training share: a small model and a tiny data shape.

use super::DfmModel;
use crate::config::ModelConfig;
use crate::data::sample::Spec;
use burn::tensor::Device;

/// A model of `cfg` on `spec` with one history and IMU row per token and no dropout.
pub fn small_model(cfg: ModelConfig, spec: &Spec) -> DfmModel {
    let cfg = ModelConfig {
        history_patch: 1,
        imu_patch: 1,
        dropout: 0.0,
        ..cfg
    };
    DfmModel::new(&cfg, spec, 8, &Device::flex())
}

/// Two 1 s history fixes, two 1 s future steps, one IMU row, `max_stops` stop slots.
pub fn tiny_spec(max_stops: usize) -> Spec {
    Spec {
        history_len: 2,
        history_step_s: 1.0,
        future_len: 2,
        future_step_s: 1.0,
        imu_len: 1,
        imu_rate_hz: 1.0,
        max_stops,
        ..Spec::default()
    }
}
