//! The fused AdamW against burn's: the same parameters to 1e-6 over 20 steps, with per-tensor
//! clipping, weight decay, a parameter that gets a gradient only on some steps, and a switch
//! between the two optimizers through the saved record.

use super::*;
use burn::nn::{Linear, LinearConfig};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};

#[derive(Module, Debug)]
struct Toy {
    a: Linear,
    b: Linear,
    /// Used on even steps only: its moments start late and skip steps.
    sometimes: Linear,
}

const WD: f32 = 0.05;
const CLIP: f32 = 0.5;

fn toy(device: &Device) -> Toy {
    Toy {
        a: LinearConfig::new(6, 8).init(device),
        b: LinearConfig::new(8, 3).init(device),
        sometimes: LinearConfig::new(6, 3).init(device),
    }
}

fn grads(m: &Toy, step: usize, device: &Device) -> GradientsParams {
    // The batch from a generator of its own: the device's is shared with tests running at
    // the same time.
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(step as u64);
    let v: Vec<f32> = (0..30).map(|_| r.gen_range(-4.0f32..4.0)).collect();
    let x = Tensor::<2>::from_data(burn::tensor::TensorData::new(v, [5, 6]), device);
    let mut y =
        m.b.forward(burn::tensor::activation::relu(m.a.forward(x.clone())));
    if step % 2 == 1 {
        y = y + m.sometimes.forward(x);
    }
    // Large enough for some tensors' norms to pass CLIP.
    GradientsParams::from_grads((y.powi_scalar(2).mean() * 10.0).backward(), m)
}

fn burn_adamw() -> Optim {
    Optim::PerTensor(
        AdamWConfig::new()
            .with_weight_decay(WD)
            .with_grad_clipping(Some(GradientClippingConfig::Norm(CLIP)))
            .init(),
    )
}

fn fused() -> Optim {
    Optim::Fused(Box::new(FusedAdamW::new(Hyper {
        weight_decay: WD,
        clip_norm: Some(CLIP),
        ..Hyper::default()
    })))
}

use crate::optim::Optim;

/// Runs `steps` steps from `m` with `o`, step `s`'s batch the same for both.
fn run(o: &mut Optim, mut m: Toy, from: usize, steps: usize, device: &Device) -> Toy {
    for s in from..from + steps {
        let g = grads(&m, s, device);
        m = o.step(1e-2, m, g);
    }
    m
}

fn max_diff(x: &Toy, y: &Toy) -> f32 {
    let flat = |m: &Toy| {
        let mut v = Vec::new();
        for l in [&m.a, &m.b, &m.sometimes] {
            v.extend(l.weight.val().into_data().try_to_vec::<f32>().unwrap());
            v.extend(
                l.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
        }
        v
    };
    let (a, b) = (flat(x), flat(y));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

#[test]
fn equals_burns_adamw_over_20_steps() {
    let device = Device::flex().autodiff();
    device.seed(7);
    let start = toy(&device);
    let a = run(&mut burn_adamw(), start.clone(), 0, 20, &device);
    let b = run(&mut fused(), start.clone(), 0, 20, &device);
    let moved = max_diff(&a, &start);
    assert!(moved > 1e-2, "the parameters hardly moved ({moved})");
    let d = max_diff(&a, &b);
    assert!(d <= 1e-6, "fused AdamW differs from burn's by {d}");
    assert!(
        b.a.weight.val().is_require_grad(),
        "the parameters lost require_grad"
    );
}

#[test]
fn either_optimizer_resumes_the_others_record() {
    let device = Device::flex().autodiff();
    device.seed(11);
    let start = toy(&device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optim.bpk");
    let reference = run(&mut burn_adamw(), start.clone(), 0, 20, &device);
    for (first, then) in [(burn_adamw(), fused()), (fused(), burn_adamw())] {
        let mut first = first;
        let m = run(&mut first, start.clone(), 0, 10, &device);
        first.save(&path).unwrap();
        let mut then = then.load(&path, &device).unwrap();
        let m = run(&mut then, m, 10, 10, &device);
        let d = max_diff(&reference, &m);
        assert!(
            d <= 1e-6,
            "resumed through the other's record: differs by {d}"
        );
    }
}

#[test]
fn a_record_of_another_kind_is_refused_with_its_path() {
    let device = Device::flex().autodiff();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optim.bpk");
    std::fs::write(&path, b"not a burnpack file").unwrap();
    let err = fused().load(&path, &device).err().unwrap().to_string();
    assert!(err.contains("optim.bpk"), "{err}");
}
