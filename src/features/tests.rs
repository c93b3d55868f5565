//! The feature code on hand-made samples.

use super::image::{bilinear_chw, image_chw, standardize_channels};
use super::*;
use crate::data::sample::{Context, Fix, Labels, Stop};
use crate::frame::Enu;

/// The same-size copy is exactly the bilinear resize it replaces, and a resize keeps a
/// constant-coloured image constant (then standardized to zeros).
#[test]
fn image_copy_equals_bilinear_at_the_same_size() {
    let (w, h) = (7usize, 7usize);
    let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
    let px = crate::data::sample::Rgb8 {
        width: w as u32,
        height: h as u32,
        data,
    };
    let mut slow = vec![0f32; 3 * w * h];
    bilinear_chw(&px, w, &mut slow);
    standardize_channels(&mut slow, w * h);
    assert_eq!(image_chw(&px, w), slow);
    let flat = crate::data::sample::Rgb8 {
        width: 5,
        height: 9,
        data: vec![90; 5 * 9 * 3],
    };
    let mut out = vec![0f32; 3 * 4 * 4];
    bilinear_chw(&flat, 4, &mut out);
    assert!(
        out.iter().all(|v| (v - 90.0 / 255.0).abs() < 1e-6),
        "{out:?}"
    );
}

/// The hand-made sample of [`features_of_a_hand_made_sample`] and its spec.
fn north_at_10_mps() -> (Sample, Spec) {
    let enu = Enu::new(48.0, 11.0);
    let at = |n: f64| enu.to_lat_lon(0.0, n);
    let fix = |t: f64, n: f64| {
        let (lat, lon) = at(n);
        Fix {
            speed: Some(10.0),
            ..Fix::at(t, lat, lon)
        }
    };
    let (slat, slon) = at(30.0);
    let (flat, flon) = at(20.0);
    let s = Sample {
        context: Context {
            zone: Some("A-1.1A".into()),
            ..Default::default()
        },
        stops: vec![Stop {
            zone: Some("A-1.1A".into()),
            ..Stop::at("s", slat, slon)
        }],
        target: Some(Labels {
            future: vec![[flat, flon]],
            ..Default::default()
        }),
        ..Sample::bare("k", 1.0, vec![fix(0.0, -10.0), fix(1.0, 0.0)])
    };
    let spec = Spec {
        video_frames: 0,
        video_size: 0,
        history_len: 2,
        history_step_s: 1.0,
        future_len: 1,
        future_step_s: 1.0,
        imu_len: 1,
        imu_rate_hz: 1.0,
        max_stops: 2,
    };
    (s, spec)
}

/// A vehicle driving north at 10 m/s (fixes 10 m apart), one stop 30 m ahead in its own
/// zone, the truth 20 m ahead after one step; unit statistics (every scale 1).
#[test]
fn features_of_a_hand_made_sample() {
    let (s, spec) = north_at_10_mps();
    let f = Featurizer::new(&spec, &ChannelStats::default(), 8).features(&s);
    let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
    let row = |k: usize| &f.hist[k * HIST_CH..(k + 1) * HIST_CH];
    // Motion scale: 10 m per step, positions over 10 m x 2 fixes = 20 m.
    assert!(close(row(0)[hist_ch::X], -0.5) && close(row(0)[hist_ch::Y], 0.0));
    assert!(close(row(1)[hist_ch::X], 0.0));
    assert_eq!(
        row(0)[hist_ch::DX],
        0.0,
        "no displacement for the first fix"
    );
    assert!(close(row(1)[hist_ch::DX], 1.0) && close(row(1)[hist_ch::DY], 0.0));
    assert!(close(row(1)[hist_ch::LOG_SCALE], 20f32.ln()));
    assert!(close(row(1)[hist_ch::SPEED], 10.0) && row(1)[hist_ch::SPEED_PRESENT] == 1.0);
    assert_eq!(row(1)[hist_ch::HEADING_PRESENT], 0.0);
    assert_eq!(f.hist_mask, vec![1.0, 1.0]);
    // The stop: 30 m ahead, nearest, same zone; the second slot is masked.
    let st = &f.stops[..STOP_CH];
    assert!(close(st[stop_ch::X], 30.0) && close(st[stop_ch::Y], 0.0));
    assert!(close(st[stop_ch::DIST], 30.0));
    assert!(close(st[stop_ch::LOG_DIST], (1.3f64.ln() / 3.0) as f32));
    assert_eq!(st[stop_ch::DIST_RANK], 0.0);
    assert_eq!(st[stop_ch::SAME_ZONE], 1.0);
    assert_eq!(st[stop_ch::ATTRS_PRESENT], 0.0);
    assert_eq!(f.stops_mask, vec![1.0, 0.0]);
    // The truth and the constant-velocity prior: 20 m and 10 m ahead.
    assert!(close(f.future[0], 20.0) && close(f.future[1], 0.0) && f.future_mask == 1.0);
    assert!(close(f.prior[0], 10.0) && close(f.prior[1], 0.0));
    assert_eq!((f.image_mask, f.imu_mask), (0.0, 0.0));
}

/// A vehicle driving north at 10 m/s sampled every 1 s and every 2 s over the same 4 s: on
/// a model's 1 s grid both give the same history rows (linear motion interpolates exactly),
/// and a history that starts later leaves the earlier rows masked. Labels at 3 s steps are
/// blended from the model's 2 s knots.
#[test]
fn any_sampling_meets_the_model_grid_by_time() {
    let enu = Enu::new(48.0, 11.0);
    let sample = |times: &[f64]| {
        let history = times
            .iter()
            .map(|&t| {
                let (lat, lon) = enu.to_lat_lon(0.0, 10.0 * t);
                Fix {
                    speed: Some(10.0),
                    ..Fix::at(t, lat, lon)
                }
            })
            .collect();
        let future = [30.0, 60.0].map(|n| {
            let (lat, lon) = enu.to_lat_lon(0.0, n);
            [lat, lon]
        });
        Sample {
            video: None,
            key: "k".into(),
            route_id: "r".into(),
            region: Region::Urban,
            t0: 0.0,
            context: Context::default(),
            history,
            imu: None,
            images: Vec::new(),
            stops: Vec::new(),
            horizons_s: Vec::new(),
            plan_route: false,
            target: Some(Labels {
                future_step_s: Some(3.0),
                future: future.to_vec(),
                ..Default::default()
            }),
        }
    };
    let spec = Spec {
        video_frames: 0,
        video_size: 0,
        history_len: 5,
        history_step_s: 1.0,
        future_len: 3,
        future_step_s: 2.0,
        imu_len: 1,
        imu_rate_hz: 1.0,
        max_stops: 1,
    };
    let n = Featurizer::new(&spec, &ChannelStats::default(), 8);
    let every_1s = n.features(&sample(&[-4.0, -3.0, -2.0, -1.0, 0.0]));
    let every_2s = n.features(&sample(&[-4.0, -2.0, 0.0]));
    assert_eq!(every_2s.hist_mask, vec![1.0; 5]);
    for (a, b) in every_1s.hist.iter().zip(&every_2s.hist) {
        assert!(
            (a - b).abs() < 1e-5,
            "{:?}\nvs {:?}",
            every_1s.hist,
            every_2s.hist
        );
    }
    let late = n.features(&sample(&[-2.0, 0.0]));
    assert_eq!(late.hist_mask, vec![0.0, 0.0, 1.0, 1.0, 1.0]);
    // Labels at 3 s and 6 s: knots at 2, 4, 6 s; 3 s is half of knots 1 and 2.
    assert_eq!(every_1s.meta.horizons_s, vec![3.0, 6.0]);
    assert_eq!(every_1s.future_w, vec![0.5, 0.5, 0.0, 0.0, 0.0, 1.0]);
    assert!((every_1s.prior[0] - 30.0).abs() < 1e-3 && (every_1s.prior[2] - 60.0).abs() < 1e-3);
}
