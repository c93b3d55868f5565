//! Training-time augmentation: a sample mirrored about its heading, left and right swapped.
//!
//! Motion seen from the vehicle has no preferred side worth learning from a handful of people or
//! drivers: a left turn mirrored is a right turn as plausible. Mirroring reflects every position
//! (history, future, stops, depot) across the line through the last fix along the frame's
//! heading, turns each course `c` into `2h - c`, and negates the IMU's left acceleration and yaw
//! rate. The frame itself (last fix, heading) is unchanged, so the features see the same motion
//! with its lateral coordinates negated. Samples with a map or aerial raster are left as they
//! are (a raster would have to be resampled with them); photos need nothing.
//!
//! Which samples are mirrored depends only on (seed, epoch, key): the same for any number of
//! loader workers and on a resumed run.

use crate::data::sample::{ImageKind, Sample};
use crate::frame::LocalFrame;

/// Whether the training sample `key` is mirrored in `epoch`, with probability `p`.
pub fn chosen(p: f64, seed: u64, epoch: u64, key: &str) -> bool {
    p > 0.0 && crate::seed::unit(crate::seed::hash(seed, &format!("mirror:{key}"), &[epoch])) < p
}

/// Whether a sample can be mirrored without resampling an image.
pub fn mirrorable(s: &Sample) -> bool {
    !s.history.is_empty()
        && !s
            .images
            .iter()
            .any(|i| matches!(i.kind, ImageKind::Map | ImageKind::Aerial))
}

/// `s` mirrored about its heading (unchanged when it is not [`mirrorable`]).
pub fn mirrored(mut s: Sample) -> Sample {
    if !mirrorable(&s) {
        return s;
    }
    let frame = LocalFrame::from_history(&s.history);
    let reflect = |lat: f64, lon: f64| {
        let (f, l) = frame.to_local(lat, lon);
        frame.to_lat_lon(f, -l)
    };
    let h = frame.heading_deg;
    for fix in &mut s.history {
        (fix.lat, fix.lon) = reflect(fix.lat, fix.lon);
        if let Some(c) = fix.heading.filter(|c| c.is_finite()) {
            fix.heading = Some((2.0 * h - c as f64).rem_euclid(360.0) as f32);
        }
    }
    for stop in &mut s.stops {
        (stop.lat, stop.lon) = reflect(stop.lat, stop.lon);
    }
    if let Some(d) = &mut s.context.depot {
        (d.lat, d.lon) = reflect(d.lat, d.lon);
    }
    if let Some(t) = &mut s.target {
        for p in &mut t.future {
            (p[0], p[1]) = reflect(p[0], p[1]);
        }
    }
    if let Some(imu) = &mut s.imu {
        for row in &mut imu.data {
            row[1] = -row[1];
            row[3] = -row[3];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::{Fix, Image, Imu, Labels, LatLon, Region, Stop};
    use crate::frame::Enu;

    /// A vehicle turning left on a circle (10 m/s, 0.05 rad/s, fixes every 5 s, with courses),
    /// with two stops, a depot, its future on the same circle and IMU rows.
    fn turning() -> Sample {
        let enu = Enu::new(40.0, 116.0);
        let w = 0.05;
        let at = |t: f64| {
            let (x, y) = ((w * t).sin() * 10.0 / w, (1.0 - (w * t).cos()) * 10.0 / w);
            enu.to_lat_lon(x, y)
        };
        let course = |t: f64| (90.0 - (w * t).to_degrees()).rem_euclid(360.0) as f32;
        let history = (0..6)
            .map(|k| {
                let t = 5.0 * k as f64;
                let (lat, lon) = at(t);
                Fix {
                    t,
                    lat,
                    lon,
                    speed: Some(10.0),
                    heading: Some(course(t)),
                    accuracy: None,
                }
            })
            .collect();
        let stop = |id: &str, e: f64, n: f64| {
            let (lat, lon) = enu.to_lat_lon(e, n);
            Stop::at(id, lat, lon)
        };
        let (dlat, dlon) = enu.to_lat_lon(-300.0, 40.0);
        let mut s = Sample {
            video: None,
            key: "k".into(),
            route_id: "r".into(),
            region: Region::Unknown,
            t0: 25.0,
            context: Default::default(),
            history,
            imu: Some(Imu {
                rate_hz: 1.0,
                file: None,
                npy_base64: None,
                data: vec![[0.1, 0.5, 9.8, 0.05]; 4],
            }),
            images: Vec::new(),
            stops: vec![stop("a", 200.0, 150.0), stop("b", 100.0, -80.0)],
            horizons_s: Vec::new(),
            plan_route: false,
            target: Some(Labels {
                future_step_s: Some(5.0),
                future: (1..=6)
                    .map(|k| at(25.0 + 5.0 * k as f64))
                    .map(|(a, b)| [a, b])
                    .collect(),
                ..Default::default()
            }),
        };
        s.context.depot = Some(LatLon {
            lat: dlat,
            lon: dlon,
        });
        s
    }

    fn local(frame: &LocalFrame, lat: f64, lon: f64) -> (f64, f64) {
        frame.to_local(lat, lon)
    }

    #[test]
    fn mirroring_negates_every_lateral_coordinate_in_the_same_frame() {
        let s = turning();
        let m = mirrored(s.clone());
        let (f0, f1) = (
            LocalFrame::from_history(&s.history),
            LocalFrame::from_history(&m.history),
        );
        assert!(
            (f0.heading_deg - f1.heading_deg).abs() < 1e-6,
            "same heading"
        );
        let pairs = s
            .history
            .iter()
            .map(|f| (f.lat, f.lon))
            .zip(m.history.iter().map(|f| (f.lat, f.lon)))
            .chain(
                s.stops
                    .iter()
                    .map(|x| (x.lat, x.lon))
                    .zip(m.stops.iter().map(|x| (x.lat, x.lon))),
            )
            .chain(
                s.target
                    .as_ref()
                    .unwrap()
                    .future
                    .iter()
                    .map(|p| (p[0], p[1]))
                    .zip(
                        m.target
                            .as_ref()
                            .unwrap()
                            .future
                            .iter()
                            .map(|p| (p[0], p[1])),
                    ),
            )
            .chain(std::iter::once((
                (s.context.depot.unwrap().lat, s.context.depot.unwrap().lon),
                (m.context.depot.unwrap().lat, m.context.depot.unwrap().lon),
            )));
        let mut lateral = 0.0;
        for ((a, b), (c, d)) in pairs {
            let (x0, y0) = local(&f0, a, b);
            let (x1, y1) = local(&f0, c, d);
            assert!(
                (x0 - x1).abs() < 1e-6 && (y0 + y1).abs() < 1e-6,
                "({x0},{y0}) -> ({x1},{y1})"
            );
            lateral += y0.abs();
        }
        assert!(lateral > 100.0, "the sample has lateral extent to mirror");
        // A left turn becomes a right turn of the same rate, seen from positions and courses alike.
        let (w0, w1) = (
            crate::kinematics::yaw_rate(&s),
            crate::kinematics::yaw_rate(&m),
        );
        assert!(w0 > 0.04 && (w0 + w1).abs() < 1e-6, "{w0} {w1}");
        for (a, b) in s.history.iter().zip(&m.history) {
            let sum = (a.heading.unwrap() + b.heading.unwrap()) as f64;
            assert!(
                ((sum - 2.0 * f0.heading_deg).rem_euclid(360.0))
                    .min((2.0 * f0.heading_deg - sum).rem_euclid(360.0))
                    < 1e-3
            );
        }
        assert_eq!(m.imu.as_ref().unwrap().data[0], [0.1, -0.5, 9.8, -0.05]);
        // Twice is the original.
        let back = mirrored(m);
        for (a, b) in s.history.iter().zip(&back.history) {
            assert!((a.lat - b.lat).abs() < 1e-9 && (a.lon - b.lon).abs() < 1e-9);
        }
    }

    #[test]
    fn a_sample_with_a_map_raster_is_left_alone() {
        let mut s = turning();
        s.images.push(Image {
            kind: ImageKind::Map,
            m_per_px: Some(1.0),
            heading_deg: None,
            anchor_px: None,
            file: None,
            png_base64: None,
            pixels: None,
        });
        assert!(!mirrorable(&s));
        assert_eq!(mirrored(s.clone()), s);
    }

    #[test]
    fn the_choice_is_a_fair_coin_per_key_and_epoch() {
        let keys: Vec<String> = (0..4000).map(|i| format!("route-{i}-w{}", i % 7)).collect();
        let picked = |p, seed, epoch| keys.iter().filter(|k| chosen(p, seed, epoch, k)).count();
        let half = picked(0.5, 1, 0);
        assert!((1850..2150).contains(&half), "{half}");
        assert_eq!(picked(0.0, 1, 0), 0);
        assert_eq!(picked(1.0, 1, 0), keys.len());
        assert_eq!(half, picked(0.5, 1, 0), "deterministic");
        let both = keys
            .iter()
            .filter(|k| chosen(0.5, 1, 0, k) && chosen(0.5, 1, 1, k))
            .count();
        assert!((850..1150).contains(&both), "epochs draw anew: {both}");
    }
}
