//! The model on hand-made batches: priors, the support guard, relative offsets, video tokens.

use super::testing::{small_model, tiny_spec};
use super::*;
use crate::data::manifest::ChannelStats;
use crate::data::sample::{Context, Fix, Sample, Stop};
use crate::features::Featurizer;
use crate::frame::Enu;
use burn::data::dataloader::batcher::Batcher;

/// The features of two samples going north, at 1 and at 10 m/s (two 1 s fixes each).
fn two_movers(spec: &Spec) -> Vec<crate::features::Features> {
    let n = Featurizer::new(spec, &ChannelStats::default(), 8);
    let mover = |m_per_s: f64| {
        Sample::bare(
            "k",
            1.0,
            vec![fix_north(0.0, -m_per_s), fix_north(1.0, 0.0)],
        )
    };
    vec![n.features(&mover(1.0)), n.features(&mover(10.0))]
}

/// The most likely trajectory of each sample of `b`, flat, with the modalities in `drop`
/// masked.
fn point_of(model: &DfmModel, b: &Batch, drop: &[&str]) -> Vec<f32> {
    let drop: Vec<String> = drop.iter().map(|d| d.to_string()).collect();
    let keep = crate::eval::keep_mask(&drop, b.prior.dims()[0], &b.prior.device());
    model
        .forward(b, &TokenMasks::keep(keep))
        .point
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// A fix `north` meters north of (47.6, -122.3) at time `t`.
fn fix_north(t: f64, north: f64) -> Fix {
    let (lat, lon) = Enu::new(47.6, -122.3).to_lat_lon(0.0, north);
    Fix::at(t, lat, lon)
}

/// Four stops around a vehicle in zone A-1.1A (two of them in its zone), two padding slots:
/// the prior is `-ln(1 + place)` in the rule's order and 0 on padding.
#[test]
fn the_rule_prior_follows_same_zone_then_nearest() {
    let enu = Enu::new(47.6, -122.3);
    let fix = |t: f64, n: f64| Fix {
        speed: Some(10.0),
        ..fix_north(t, n)
    };
    let stop = |e: f64, zone: &str| {
        let (lat, lon) = enu.to_lat_lon(e, 0.0);
        Stop {
            zone: Some(zone.into()),
            ..Stop::at(format!("{e}"), lat, lon)
        }
    };
    let s = Sample {
        context: Context {
            zone: Some("A-1.1A".into()),
            ..Default::default()
        },
        // Nearest is in another zone; the rule takes the same zone's 50 m stop, then 80 m.
        stops: vec![
            stop(20.0, "A-1.2A"),
            stop(80.0, "A-1.1A"),
            stop(50.0, "A-1.1A"),
            stop(200.0, "A-1.3A"),
        ],
        ..Sample::bare("k", 1.0, vec![fix(0.0, -10.0), fix(1.0, 0.0)])
    };
    let spec = tiny_spec(6);
    let device = Device::flex();
    let n = Featurizer::new(&spec, &ChannelStats::default(), 8);
    let b = crate::batch::FeatureBatcher.batch(vec![n.features(&s)], &device);
    let valid = b.stops_mask.clone();
    let got: Vec<f32> = rule_prior(&b, &valid, Tensor::from_data([2.0f32], &device))
        .into_data()
        .try_to_vec()
        .unwrap();
    let want = [
        -2.0 * 3f32.ln(),
        -2.0 * 2f32.ln(),
        0.0,
        -2.0 * 4f32.ln(),
        0.0,
        0.0,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

#[test]
fn support_factor_keeps_the_correction_inside_the_training_motion() {
    let device = Device::flex();
    let s = Tensor::<1>::from_data([0.5f32, 1.0, 1.5, 2.0, 3.0], &device);
    let q = Tensor::<1>::from_data([2.0f32], &device);
    let g: Vec<f32> = support_factor(s.clone() * 2.0, q)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(g, vec![1.0, 1.0, 0.5, 0.0, 0.0]);
    let unset = Tensor::<1>::from_data([UNSET_SUPPORT], &device);
    let g: Vec<f32> = support_factor(s, unset)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(g, vec![1.0; 5], "a threshold never set shrinks nothing");
}

/// `model.support_guard`: at inference a history moving faster than twice the threshold gets
/// constant velocity as its most likely trajectory, a slower one the model's own; training
/// (autodiff) sees the model's own for both.
#[test]
fn the_support_guard_falls_back_to_constant_velocity_beyond_the_training_motion() {
    let (spec, device) = (tiny_spec(2), Device::flex());
    let mut model = small_model(
        ModelConfig {
            support_guard: true,
            ..Default::default()
        },
        &spec,
    );
    let feats = two_movers(&spec);
    let b = crate::batch::FeatureBatcher.batch(feats.clone(), &device);
    let point = |model: &DfmModel, b: &Batch| point_of(model, b, &[]);
    let own = point(&model, &b);
    // The slow mover is at the threshold, the fast one ten times beyond it.
    let slow: Vec<f32> = motion_scale(&b).into_data().try_into_vec::<f32>().unwrap();
    model.set_support_q99(slow[0], &device);
    let guarded = point(&model, &b);
    let f2 = spec.future_len * 2;
    let cv: Vec<f32> = b
        .prior
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    assert_eq!(&guarded[..f2], &own[..f2], "inside the training motion");
    for (g, c) in guarded[f2..].iter().zip(&cv[f2..]) {
        assert!(
            (g - c).abs() < 1e-6,
            "beyond it: constant velocity {g} vs {c}"
        );
    }
    assert!(
        own[f2..]
            .iter()
            .zip(&cv[f2..])
            .any(|(o, c)| (o - c).abs() > 1e-3)
    );
    // Training forward passes (autodiff) are not guarded.
    let ad = device.clone().autodiff();
    let b_ad = crate::batch::FeatureBatcher.batch(feats, &ad);
    let trained = point(&model.clone().fork(&ad), &b_ad);
    for (t, o) in trained.iter().zip(&own) {
        assert!((t - o).abs() < 1e-5, "{t} vs {o}");
    }
}

/// With `model.relative_offsets`, the relative decoders' output is multiplied by each
/// sample's motion scale: a mover ten times as fast gets ten times the relative offset (a
/// linear model of the history scales the same way), and none without its history.
#[test]
fn relative_offsets_scale_with_the_history_motion() {
    let (spec, device) = (tiny_spec(2), Device::flex());
    let mut model = small_model(
        ModelConfig {
            relative_offsets: true,
            ..Default::default()
        },
        &spec,
    );
    let b = crate::batch::FeatureBatcher.batch(two_movers(&spec), &device);
    let before = point_of(&model, &b, &[]);
    let dropped = point_of(&model, &b, &["history"]);
    // Relative outputs of 1 everywhere (zero weights, unit bias).
    let f2 = spec.future_len * 2;
    let pr = model.heads.point_rel.as_mut().expect("relative decoders");
    pr.bias = Some(Param::from_tensor(Tensor::ones([f2], &device)));
    let after = point_of(&model, &b, &[]);
    let scale: Vec<f32> = motion_scale(&b).into_data().try_into_vec().unwrap();
    assert!((scale[1] / scale[0] - 10.0).abs() < 1e-3, "{scale:?}");
    for i in 0..2 {
        for j in 0..f2 {
            let d = after[i * f2 + j] - before[i * f2 + j];
            assert!(
                (d - scale[i]).abs() < 1e-3 * scale[i].max(1.0),
                "{d} vs {scale:?}"
            );
        }
    }
    assert_eq!(
        point_of(&model, &b, &["history"]),
        dropped,
        "no history, no relative part"
    );
}

/// A vehicle heading north with a 4-frame 16 x 16 clip of one grey `value`.
fn with_clip(value: u8) -> Sample {
    use crate::data::video::{Frames, Video};
    Sample {
        video: Some(Video {
            t: vec![0.25, 0.5, 0.75, 1.0],
            frames: Some(Frames {
                count: 4,
                height: 16,
                width: 16,
                data: vec![value; 4 * 16 * 16 * 3],
            }),
            ..Default::default()
        }),
        ..Sample::bare("k", 1.0, vec![fix_north(0.0, -10.0), fix_north(1.0, 0.0)])
    }
}

/// A clip changes the outputs when video is kept, and not when the video modality is
/// dropped; a model of a dataset without video has no video tokens.
#[test]
fn video_tokens_are_read_and_masked() {
    let spec = Spec {
        video_frames: 4,
        video_size: 16,
        ..tiny_spec(2)
    };
    let cfg = ModelConfig {
        history_patch: 1,
        imu_patch: 1,
        video_tubelet: 2,
        video_patch: 8,
        ..Default::default()
    };
    let device = Device::flex();
    let model = DfmModel::new(&cfg, &spec, 8, &device);
    assert_eq!(model.enc.video.as_ref().unwrap().tokens(), 2 * 2 * 2);
    let plain = DfmModel::new(
        &cfg,
        &Spec {
            video_frames: 0,
            video_size: 0,
            ..spec.clone()
        },
        8,
        &device,
    );
    assert!(plain.enc.video.is_none());
    assert_eq!(model.token_count(2), plain.token_count(2) + 8);

    let n = Featurizer::new(&spec, &ChannelStats::default(), 8);
    let traj = |value: u8, keep_video: f32| -> Vec<f32> {
        let b = crate::batch::FeatureBatcher.batch(vec![n.features(&with_clip(value))], &device);
        let mut row = vec![1.0f32; MODALITIES.len()];
        row[Modality::Video.index()] = keep_video;
        let keep = Tensor::<2>::from_data(
            burn::tensor::TensorData::new(row, [1, MODALITIES.len()]),
            &device,
        );
        model
            .forward(&b, &TokenMasks::keep(keep))
            .traj
            .into_data()
            .try_to_vec()
            .unwrap()
    };
    assert_ne!(traj(10, 1.0), traj(200, 1.0), "the clip is read");
    assert_eq!(traj(10, 0.0), traj(200, 0.0), "a dropped clip is not");
}
