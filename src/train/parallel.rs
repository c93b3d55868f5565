//! Several devices: data parallelism over `train.devices` (GPUs) or `train.replicas` (CPU
//! thread pools), each device with a fork of the model; and the precision a device computes in.

use super::step::{Micro, initialized, micro_step};
use crate::batch::FeatureBatcher;
use crate::config::Config;
use crate::model::DfmModel;
use anyhow::Context;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::prelude::*;

/// Data parallelism as burn's multi-device strategy does it: the model is forked to each device,
/// each device computes the gradients of its own batch on its own thread, and the optimizer sums
/// them (`ModuleOptimizer::step_multi`). With `passes` (the CPU, `train.replicas`) device `i`
/// computes in pool `i`.
pub(super) fn parallel_micro_step(
    model: &DfmModel,
    work: Vec<Vec<crate::features::Features>>,
    cfg: &Config,
    micro: usize,
    devices: &[Device],
    scale: f32,
    passes: Option<&crate::forward_pools::Passes>,
) -> Vec<Micro> {
    let mut work: Vec<_> = work.into_iter().zip(devices).enumerate().collect();
    // burn draws a parameter's initial value when it is first used, from the device's generator
    // as it stands then; a fork would draw them at once, in another order. So while the model
    // is still uninitialized, the first device's micro-batch runs on the model itself, first,
    // and the model starts from the weights one device would draw.
    let mut first = Vec::new();
    if !initialized(model) && !work.is_empty() {
        let (i, (feats, d)) = work.remove(0);
        let b = FeatureBatcher.batch(feats, d);
        first.push(micro_step(model, &b, cfg, micro, i, d, scale));
    }
    let rest: Vec<Micro> = std::thread::scope(|sc| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|(i, (feats, d))| {
                let replica = replica_of(model, d);
                sc.spawn(move || {
                    let run = || {
                        let b = FeatureBatcher.batch(feats, d);
                        micro_step(&replica, &b, cfg, micro, i, d, scale)
                    };
                    match passes {
                        Some(p) => p.install(i, run),
                        None => run(),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("device thread panicked"))
            .collect()
    });
    first.extend(rest);
    first
}

/// A copy of `model` on `device` for a replica or another device. Its parameters are detached
/// before `fork`: burn's `fork` records its copy as an operation under each trainable parameter
/// of the model it copies, and the records under parameters that get no gradient (the
/// pretraining decoders in a supervised run) were never freed, and every backward pass walked the
/// growing list, so a run slowed step by step (docs/training.md).
fn replica_of(model: &DfmModel, device: &Device) -> DfmModel {
    struct Detach;
    impl burn::module::ModuleMapper for Detach {
        fn map_float<const D: usize>(
            &mut self,
            p: burn::module::Param<Tensor<D>>,
        ) -> burn::module::Param<Tensor<D>> {
            p.map(|t| {
                let grad = t.is_require_grad();
                let t = t.detach();
                if grad { t.require_grad() } else { t }
            })
        }
    }
    model.clone().map(&mut Detach).fork(device)
}

/// One rayon pool per device, each with its share of the cores, where every device is the CPU
/// (`train.replicas`); None otherwise.
pub(crate) fn replica_pools(
    devices: &[Device],
) -> anyhow::Result<Option<crate::forward_pools::Passes>> {
    if devices.len() < 2 || !devices.iter().all(crate::model::dropout::on_cpu) {
        return Ok(None);
    }
    let plan = crate::forward_pools::plan_for(devices.len(), &devices[0]);
    Ok(Some(crate::forward_pools::Passes::new(plan)?))
}

/// The autodiff devices of a run: `train.devices` when it names more than one, else `device`;
/// each set to compute in `train.precision`.
pub(super) fn training_devices(cfg: &Config, device: &Device) -> anyhow::Result<Vec<Device>> {
    let p = cfg.train.precision;
    let replicas = cfg.train.replicas;
    if replicas > 1 {
        anyhow::ensure!(
            crate::model::dropout::on_cpu(device),
            "train.replicas = {replicas} splits batches on the CPU (flex); on a GPU use train.devices"
        );
        println!("{replicas} replicas on the CPU: each computes 1/{replicas} of every batch");
        return Ok(vec![
            with_precision(device.clone(), p)?.autodiff();
            replicas
        ]);
    }
    if cfg.train.devices.len() <= 1 {
        return Ok(vec![with_precision(device.clone(), p)?.autodiff()]);
    }
    let mut out = Vec::new();
    for d in &cfg.train.devices {
        let (choice, index) = crate::device::parse(d)?;
        let sel = crate::device::select(choice, index)
            .with_context(|| format!("train.devices: `{d}`"))?;
        println!("data-parallel device {}: {}", out.len(), sel.description);
        out.push(with_precision(sel.device, p)?.autodiff());
    }
    Ok(out)
}

/// `device` set to compute in `precision` (burn: its default float type), or an error saying
/// why it cannot: flex computes in f32; a GPU may store a type it cannot compute in.
pub fn with_precision(
    mut device: Device,
    precision: crate::config::Precision,
) -> anyhow::Result<Device> {
    use burn::tensor::FloatDType;
    let dtype = match precision {
        crate::config::Precision::F32 => return Ok(device),
        // burn 0.22 keeps parameters and optimizer state in the device's float type: in f16,
        // AdamW's epsilon (1e-8) and small second moments underflow to 0 and the first steps
        // divide by zero (on lavapipe the loss was non-finite at step 5). bf16 has f32's range.
        crate::config::Precision::F16 => anyhow::bail!(
            "train.precision = \"f16\" does not train: burn 0.22 has no f32 master weights or loss scaling, and AdamW's state underflows in f16; use \"bf16\" on a GPU that computes in it, or \"f32\""
        ),
        crate::config::Precision::Bf16 => FloatDType::BF16,
    };
    let name = format!("{precision:?}").to_lowercase();
    anyhow::ensure!(
        !crate::model::dropout::on_cpu(&device),
        "train.precision = \"{name}\" needs a GPU device (wgpu or cuda): flex computes in f32"
    );
    anyhow::ensure!(
        device.supports_dtype(dtype),
        "train.precision = \"{name}\": this device does not compute in {name} (it may store it, not do arithmetic in it); use f32"
    );
    device.configure(dtype).map_err(|e| {
        anyhow::anyhow!(
            "train.precision = \"{name}\": {e:?} (the device's float type is set before its first tensor; run training in a fresh process)"
        )
    })?;
    Ok(device)
}
