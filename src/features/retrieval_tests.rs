//! The retrieval index on hand-made windows: where the neighbours' futures come from, and who
//! is not a neighbour.

use super::*;
use crate::data::sample::{Fix, Labels};

/// A window of route `route` ending at (`east`, `north`) m from (48, 11), driving at `v` m/s on
/// `heading` degrees for 6 fixes 10 s apart, then turning left: its future at 10 s steps
/// goes `v` m/s to the left of its heading.
fn window(route: &str, east: f64, north: f64, heading: f64, v: f64) -> Sample {
    let enu = Enu::new(48.0, 11.0);
    let (s, c) = heading.to_radians().sin_cos();
    let at = |along: f64, left: f64| {
        let e = east + along * s - left * c;
        let n = north + along * c + left * s;
        enu.to_lat_lon(e, n)
    };
    let history: Vec<Fix> = (0..6)
        .map(|k| {
            let (lat, lon) = at(-(5 - k) as f64 * 10.0 * v, 0.0);
            Fix::at(1000.0 + k as f64 * 10.0, lat, lon)
        })
        .collect();
    let future: Vec<[f64; 2]> = (1..=6)
        .map(|k| {
            let (lat, lon) = at(0.0, k as f64 * 10.0 * v);
            [lat, lon]
        })
        .collect();
    let mut w = Sample::bare(&format!("{route}-{east}"), 1050.0, history);
    w.route_id = route.into();
    w.target = Some(Labels {
        future_step_s: Some(10.0),
        future,
        ..Labels::default()
    });
    w
}

const SET: Settings = Settings {
    radius_m: 50.0,
    heading_deg: 30.0,
    min_neighbours: 2,
};

/// Each window's offset is its future minus constant velocity at the knots, in its own frame.
#[test]
fn an_entry_is_its_future_over_constant_velocity_at_the_knots() {
    let e = entry(&window("a", 0.0, 0.0, 90.0, 5.0), 3, 20.0).unwrap();
    assert_eq!(e.offsets.len(), 6);
    // At 20, 40, 60 s: the future is 100, 200, 300 m to the left; constant velocity 100,
    // 200, 300 m ahead.
    for (k, pair) in e.offsets.chunks(2).enumerate() {
        let d = 100.0 * (k + 1) as f32;
        assert!(
            (pair[0] + d).abs() < 0.5 && (pair[1] - d).abs() < 0.5,
            "{pair:?}"
        );
    }
    assert!((e.heading_deg - 90.0).abs() < 0.1 && (e.speed - 5.0).abs() < 0.1);
    // Knots between labels are interpolated; a horizon past the labels has no entry.
    let half = entry(&window("a", 0.0, 0.0, 90.0, 5.0), 12, 5.0).unwrap();
    assert!(
        (half.offsets[1] - 25.0).abs() < 0.5,
        "{:?}",
        &half.offsets[..2]
    );
    assert!(entry(&window("a", 0.0, 0.0, 90.0, 5.0), 7, 10.0).is_none());
}

/// Only windows near, heading the same way at a similar speed, and (in training) of another
/// route are neighbours; too few give zeros with their count.
#[test]
fn neighbours_are_near_alike_and_of_other_routes() {
    let mk = |route, e, n, h, v| entry(&window(route, e, n, h, v), 3, 20.0).unwrap();
    let idx = Index::build(
        vec![
            mk("a", 0.0, 0.0, 90.0, 5.0),
            mk("b", 30.0, 10.0, 100.0, 6.0),
            mk("c", -20.0, 0.0, 80.0, 4.0),
            mk("far", 200.0, 0.0, 90.0, 5.0),
            mk("back", 0.0, 5.0, 270.0, 5.0),
            mk("slow", 0.0, -5.0, 90.0, 0.5),
        ],
        3,
        SET,
    );
    let q = window("b", 10.0, 0.0, 95.0, 5.0);
    let found = idx.query(&window("q", 10.0, 0.0, 95.0, 5.0));
    assert_eq!(found.count, 3, "a, b and c");
    let d = 100.0f32;
    assert!(
        (found.offsets[0] + d).abs() < 30.0 && found.offsets[1] > 50.0,
        "{found:?}"
    );
    // Its own route is left out.
    assert_eq!(idx.query(&q).count, 2);
    // Headings wrap around north.
    let wrap = Index::build(
        vec![mk("a", 0.0, 0.0, 355.0, 5.0), mk("b", 0.0, 0.0, 5.0, 5.0)],
        3,
        SET,
    );
    assert_eq!(wrap.query(&window("q", 0.0, 0.0, 0.0, 5.0)).count, 2);
    // Fewer than min_neighbours: zeros, and the count says so.
    let lone = idx.query(&window("q", 1000.0, 0.0, 90.0, 5.0));
    assert_eq!((lone.count, lone.offsets), (0, vec![0.0; 6]));
    let one = Index::build(vec![mk("a", 0.0, 0.0, 90.0, 5.0)], 3, SET);
    let f = one.query(&q);
    assert_eq!((f.count, f.offsets), (1, vec![0.0; 6]));
}

/// Neighbours in the cells around a query are found across cell borders (the grid is only a
/// way to read fewer windows: the same as a scan of all of them).
#[test]
fn the_grid_finds_what_a_scan_finds() {
    let mut entries = Vec::new();
    for i in 0..400 {
        let (e, n) = ((i * 37 % 301) as f64 - 150.0, (i * 53 % 299) as f64 - 150.0);
        let h = (i * 29 % 360) as f64;
        entries.push(entry(&window(&format!("r{i}"), e, n, h, 5.0), 3, 20.0).unwrap());
    }
    let idx = Index::build(entries.clone(), 3, SET);
    let enu = Enu::new(48.0, 11.0);
    for q in 0..50 {
        let (e, n, h) = (
            (q * 41 % 300) as f64 - 150.0,
            (q * 17 % 300) as f64 - 150.0,
            (q * 71 % 360) as f64,
        );
        let (lat, lon) = enu.to_lat_lon(e, n);
        let got = idx.near(lat, lon, h, 5.0, None).count;
        let scan = entries
            .iter()
            .filter(|x| {
                let (xe, xn) = enu.to_en(x.lat, x.lon);
                let dh = (x.heading_deg - h + 540.0).rem_euclid(360.0) - 180.0;
                (xe - e).hypot(xn - n) <= 50.0 && dh.abs() < 30.0
            })
            .count();
        assert_eq!(got, scan, "query {q}");
    }
}
