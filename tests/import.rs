//! Importers on the real samples in `../shared/data` (skipped with a message when absent) and on
//! a generic GPS CSV built here: record counts, exact parsed values, held-out splits, bad records.

mod common;
use common::*;
use dfm::Sample;
use dfm::data::import::{ImportReport, geolife, gps_csv, lmrc};
use dfm::data::loader::{Loader, LoaderOptions};
use dfm::data::manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn shared(sub: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(sub);
    if p.is_dir() {
        Some(p)
    } else {
        skip(&format!(
            "{} is absent (the real data samples live outside the repository)",
            p.display()
        ));
        None
    }
}

/// Every sample of a split, in stored order.
fn split_samples(dir: &Path, split: &str) -> Vec<Sample> {
    let m = Manifest::load(dir).unwrap();
    if m.split(split).is_none_or(|s| s.samples == 0) {
        return Vec::new();
    }
    let opts = LoaderOptions {
        batch_size: 256,
        workers: 1,
        shuffle_buffer: 0,
        drop_last: false,
        ..Default::default()
    };
    Loader::new(dir, &m, split, opts)
        .unwrap()
        .epoch(0, 0, Arc::new(|s: Sample| s), Arc::new(|b: Vec<Sample>| b))
        .flat_map(|b| b.unwrap())
        .collect()
}

const SPLITS: [&str; 4] = ["train", "val", "test", "test_days"];

/// Route ids per split; asserts that no route id is in two splits and that the manifest's
/// counts match the samples and the report.
fn routes_by_split(dir: &Path, report: &ImportReport) -> BTreeMap<&'static str, BTreeSet<String>> {
    let m = Manifest::load(dir).unwrap();
    let mut out: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for split in SPLITS {
        let samples = split_samples(dir, split);
        assert_eq!(
            samples.len(),
            report.samples.get(split).copied().unwrap_or(0),
            "{split}: samples in shards vs report"
        );
        assert_eq!(
            samples.len(),
            m.split(split).map_or(0, |s| s.samples),
            "{split}: samples in shards vs manifest"
        );
        out.insert(split, samples.into_iter().map(|s| s.route_id).collect());
    }
    for (i, a) in SPLITS.iter().enumerate() {
        for b in &SPLITS[i + 1..] {
            let shared: Vec<_> = out[a].intersection(&out[b]).collect();
            assert!(shared.is_empty(), "{a} and {b} share routes {shared:?}");
        }
    }
    out
}

#[test]
fn geolife_counts_values_and_held_out_users() {
    let Some(input) = shared("geolife") else {
        return;
    };
    // Fixes per user: every line of every .plt after its six header lines.
    let counts = geolife::count_fixes(&input).unwrap();
    let expected: BTreeMap<String, usize> = [
        ("000", 3634),
        ("001", 19483),
        ("002", 24100),
        ("003", 13601),
        ("004", 4172),
        ("005", 15999),
        ("006", 12728),
        ("007", 13859),
    ]
    .into_iter()
    .map(|(u, n)| (u.to_string(), n))
    .collect();
    assert_eq!(counts, expected);

    // The first fixes of one file, exactly.
    let mut r = ImportReport::default();
    let fixes = geolife::read_plt(
        &input.join("000/Trajectory/20081023025304.plt"),
        &mut r,
        false,
    )
    .unwrap();
    assert_eq!((fixes[0].lat, fixes[0].lon), (39.984702, 116.318417));
    assert_eq!(fixes[0].t, 1_224_730_384.0, "2008-10-23 02:53:04 UTC");
    assert_eq!((fixes[1].lat, fixes[1].lon), (39.984683, 116.31845));
    assert_eq!(fixes[1].t, 1_224_730_390.0);
    assert_eq!(r.records_read, fixes.len());

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("geolife");
    let o = geolife::GeolifeOptions::default();
    let report = geolife::import(&input, &out, &o, false, false).unwrap();
    assert_eq!(report.records_read, 107_576);
    assert_eq!(
        report.records_kept + report.dropped.get("repeated timestamp").unwrap_or(&0),
        report.records_read
    );
    assert!(report.bad.is_empty());
    let routes = routes_by_split(&out, &report);
    // Route ids are USER-DAY: the held-out users (the last quarter, 006 and 007) only in test.
    let users = |split: &str| -> BTreeSet<String> {
        routes[split]
            .iter()
            .map(|r| r.split('-').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        users("test"),
        ["006", "007"].map(String::from).into_iter().collect()
    );
    for split in ["train", "val", "test_days"] {
        let u = users(split);
        assert!(
            !u.contains("006") && !u.contains("007"),
            "{split} has a held-out user: {u:?}"
        );
    }
    assert!(users("train").len() >= 5, "the other users train");
    assert!(!routes["val"].is_empty() && !routes["test_days"].is_empty());

    // The first window of that file starts at its first fix (resampling keeps the first point)
    // and steps 5 s.
    let train = split_samples(&out, "train");
    let first: Vec<&Sample> = train
        .iter()
        .filter(|s| s.key.starts_with("gl000-000-00-"))
        .collect();
    assert!(!first.is_empty(), "samples of 000/20081023025304.plt");
    let s = first[0];
    let h = &s.history;
    assert_eq!(h.len(), 12);
    assert_eq!(
        s.key, "gl000-000-00-00011",
        "the first window ends at the 12th point"
    );
    assert_eq!(
        (h[0].lat, h[0].lon, h[0].t),
        (39.984702, 116.318417, 1_224_730_384.0)
    );
    for w in h.windows(2) {
        assert_eq!(w[1].t - w[0].t, 5.0);
    }
    let t = s.target.as_ref().unwrap();
    assert_eq!(t.future.len(), 12);
    assert_eq!(t.future_step_s, Some(5.0));
    // Beijing local time (UTC+8): 02:53 UTC is 10:53 on a Thursday.
    assert!(
        (s.context.hour - 10.9).abs() < 0.2,
        "hour {}",
        s.context.hour
    );
    assert_eq!(s.context.weekday, 3);
}

/// A fleet CSV: renamed columns, one fix every 12 s, a gap, a bad row.
fn fleet_csv(dir: &Path, bad_row: bool) -> PathBuf {
    let mut text = String::from("vehicle,ts,latitude,longitude,spd\n");
    let day = 86_400.0 * 19_000.0; // 2022-01-08
    let dlat = 120.0 / 111_195.0; // 10 m/s north for 12 s
    let mut row = |id: &str, t: f64, k: f64, speed: &str| {
        text.push_str(&format!(
            "{id},{t},{:.9},{:.9},{speed}\n",
            48.0 + k * dlat,
            11.0
        ));
    };
    for k in 0..11 {
        row("truck A", day + 3600.0 + 12.0 * k as f64, k as f64, "10");
    }
    for k in 0..12 {
        // 120 s gap after the sixth fix: two pieces.
        let t = day + 7200.0 + 12.0 * k as f64 + if k >= 6 { 120.0 } else { 0.0 };
        row("b", t, k as f64, "");
    }
    for k in 0..11 {
        row("c", day + 2.0 * 86_400.0 + 12.0 * k as f64, k as f64, "");
    }
    if bad_row {
        text.push_str("c,1641600000,abc,11.0,\n");
    }
    let p = dir.join("fleet.csv");
    std::fs::write(&p, text).unwrap();
    p
}

fn csv_options() -> gps_csv::CsvOptions {
    let mut o = gps_csv::CsvOptions::default();
    o.columns.id = "vehicle".into();
    o.columns.time = "ts".into();
    o.columns.lat = "latitude".into();
    o.columns.lon = "longitude".into();
    o.columns.speed = "spd".into();
    o.window.step_s = 10.0;
    o.window.max_gap_s = 60.0;
    o.window.history_len = 3;
    o.window.future_len = 3;
    o.test_days = 0.5;
    o
}

/// The error a GPS CSV import stops with (it must stop).
fn gps_csv_error(input: &Path, out: &Path, o: &gps_csv::CsvOptions) -> String {
    gps_csv::import(input, out, o, false, false)
        .unwrap_err()
        .to_string()
}

#[test]
fn gps_csv_renamed_columns_sparse_fixes_gaps_and_bad_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let o = csv_options();

    // A bad row stops the import with the file, the row and the column named.
    let input = fleet_csv(tmp.path(), true);
    let err = gps_csv_error(&input, &tmp.path().join("x"), &o);
    assert!(
        err.contains("fleet.csv") && err.contains("row 36") && err.contains("latitude"),
        "{err}"
    );
    // A missing column names the flag that renames it.
    let mut wrong = o.clone();
    wrong.columns.lat = "lat".into();
    let err = gps_csv_error(&input, &tmp.path().join("y"), &wrong);
    assert!(err.contains("`lat`") && err.contains("--lat-col"), "{err}");

    // --skip-bad: skipped, counted, reported.
    let out = tmp.path().join("fleet");
    let report = gps_csv::import(&input, &out, &o, true, false).unwrap();
    assert_eq!(report.records_read, 35);
    assert_eq!(report.records_kept, 34);
    assert_eq!(report.dropped["bad record"], 1);
    assert_eq!(report.dropped["trajectory cut at a gap (cuts)"], 1);
    assert!(report.bad[0].contains("row 36"));
    // 12 s fixes resampled to 10 s: 120 s -> 13 points -> 8 windows of 3 + 3; the cut trip
    // gives two 60 s pieces of 7 points, 2 windows each.
    let routes = routes_by_split(&out, &report);
    assert_eq!(report.samples.values().sum::<usize>(), 8 + 2 * 2 + 8);
    // The last day's trajectory is held out as test_days.
    assert_eq!(routes["test_days"], ["c".to_string()].into_iter().collect());

    let all: Vec<Sample> = SPLITS.iter().flat_map(|s| split_samples(&out, s)).collect();
    let a = all
        .iter()
        .find(|s| s.key == "csvtruck~20A-000-00002")
        .expect("first window of truck A");
    let dlat = 120.0 / 111_195.0;
    let lat = |t: f64| 48.0 + dlat * t / 12.0;
    let t0 = 86_400.0 * 19_000.0 + 3600.0;
    assert_eq!(a.t0, t0 + 20.0);
    let hist: Vec<f64> = a.history.iter().map(|f| f.t - t0).collect();
    assert_eq!(hist, vec![0.0, 10.0, 20.0]);
    for (j, f) in a.history.iter().enumerate() {
        assert!((f.lat - lat(10.0 * j as f64)).abs() < 1e-7, "{j}");
        assert_eq!(f.speed, Some(10.0));
    }
    for (j, p) in a.target.as_ref().unwrap().future.iter().enumerate() {
        assert!((p[0] - lat(30.0 + 10.0 * j as f64)).abs() < 1e-7, "{j}");
        assert!((p[1] - 11.0).abs() < 1e-9);
    }
    let c = all.iter().find(|s| s.route_id == "c").unwrap();
    assert!(
        c.history.iter().all(|f| f.speed.is_none()),
        "empty speed cells are absent"
    );
}

/// The fleet CSV with its UNIX times rewritten by `fmt` (a chrono format) in Berlin time.
fn fleet_csv_dated(dir: &Path, fmt: &str) -> PathBuf {
    let unix = std::fs::read_to_string(fleet_csv(dir, false)).unwrap();
    let mut lines = unix.lines();
    let mut text = format!("{}\n", lines.next().unwrap());
    for line in lines {
        let mut cells: Vec<String> = line.split(',').map(String::from).collect();
        let t: f64 = cells[1].parse().unwrap();
        let utc = chrono::DateTime::from_timestamp(t as i64, 0).unwrap();
        cells[1] = utc
            .with_timezone(&chrono_tz::Europe::Berlin)
            .format(fmt)
            .to_string();
        text.push_str(&format!("{}\n", cells.join(",")));
    }
    let p = dir.join("fleet-dated.csv");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn gps_csv_reads_iso_date_times_local_or_with_an_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = csv_options();
    o.window.tz = Some("Europe/Berlin".into());
    let samples = |input: &Path, name: &str, o: &gps_csv::CsvOptions| -> Vec<serde_json::Value> {
        let out = tmp.path().join(name);
        gps_csv::import(input, &out, o, false, false).unwrap();
        SPLITS
            .iter()
            .flat_map(|s| split_samples(&out, s))
            .map(|s| serde_json::to_value(s).unwrap())
            .collect()
    };
    let unix = samples(&fleet_csv(tmp.path(), false), "unix", &o);
    assert_eq!(unix.len(), 8 + 2 * 2 + 8);
    // Local Berlin date-times without an offset (--tz says whose), and with one.
    for (fmt, name) in [
        ("%Y-%m-%d %H:%M:%S", "local"),
        ("%Y-%m-%dT%H:%M:%S%:z", "offset"),
    ] {
        let dated = fleet_csv_dated(tmp.path(), fmt);
        assert_eq!(samples(&dated, name, &o), unix, "{fmt}");
    }
    // Read as UTC, the local times are an hour off (Berlin is at +1 h in January).
    let mut utc = o.clone();
    utc.window.tz = None;
    let shifted = samples(
        &fleet_csv_dated(tmp.path(), "%Y-%m-%d %H:%M:%S"),
        "utc",
        &utc,
    );
    let t0 = |v: &[serde_json::Value]| v[0]["t0"].as_f64().unwrap();
    assert_eq!(t0(&shifted) - t0(&unix), 3600.0);
    // A date-time that is not one names the row and the column.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "vehicle,ts,latitude,longitude,spd\na,2022-01-08 25:00:00,48.0,11.0,\n",
    )
    .unwrap();
    let e = gps_csv_error(&bad, &tmp.path().join("b"), &o);
    assert!(
        e.contains("row 2") && e.contains("ts") && e.contains("ISO 8601"),
        "{e}"
    );
}

#[test]
fn lmrc_routes_decisions_nan_and_baseline() {
    let Some(input) = shared("lmrc-sample") else {
        return;
    };
    let mut r = ImportReport::default();
    let routes = lmrc::read(&input, &mut r, false).unwrap();
    assert_eq!(routes.len(), 8);
    let stops: usize = routes.iter().map(|r| r.stops.len()).sum();
    assert_eq!(stops, 193 + 133 + 166 + 151 + 168 + 182 + 187 + 140);
    let first = routes
        .iter()
        .find(|r| r.id == "RouteID_15baae2d-bf07-4967-956a-173d4036613f")
        .unwrap();
    assert_eq!(first.actual[0], "HJ");
    let hj = &first.stops["HJ"];
    assert!(hj.station);
    assert_eq!((hj.lat, hj.lon), (42.254346, -87.985697));
    assert_eq!(first.departure, 1_534_000_364.0, "2018-08-11 15:12:44 UTC");
    // Bare NaN tokens: a missing zone and a missing time window, not an error.
    assert_eq!(first.stops["AY"].zone, None);
    assert_eq!(first.stops["AV"].zone.as_deref(), Some("D-7.1J"));
    assert_eq!(first.stops["AH"].tw, (None, None));

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lmrc");
    let report = lmrc::import(&input, &out, &lmrc::LmrcOptions::default(), false, false).unwrap();
    // One decision per stop after the station.
    assert_eq!(report.samples.values().sum::<usize>(), stops - 8);
    assert_eq!(stops - 8, 1312);
    let by_split = routes_by_split(&out, &report);
    let n: Vec<usize> = ["train", "val", "test"]
        .iter()
        .map(|s| by_split[s].len())
        .collect();
    assert_eq!(n, vec![6, 1, 1], "routes per split");

    // The first decision of that route, exactly: at the station, 192 stops to go.
    let all: Vec<Sample> = SPLITS.iter().flat_map(|s| split_samples(&out, s)).collect();
    let s = all.iter().find(|s| s.key == "lm15baae2dbf07-0001").unwrap();
    assert_eq!(s.t0, 1_534_000_364.0);
    // Local time from the IANA zone of the station (DCH4: Chicago, daylight saving in August):
    // 15:12:44 UTC is 10:12:44 CDT, a Saturday.
    assert!(
        (s.context.hour - (10.0 + 12.0 / 60.0 + 44.0 / 3600.0)).abs() < 1e-4,
        "{}",
        s.context.hour
    );
    assert_eq!(s.context.weekday, 5);
    assert_eq!(
        (s.history[0].lat, s.history[0].lon),
        (42.254346, -87.985697)
    );
    assert_eq!(s.stops.len(), 192);
    let next = s.target.as_ref().unwrap().next_stop.unwrap();
    assert_eq!(s.stops[next].id, first.actual[1]);
    let ay = s.stops.iter().find(|x| x.id == "AY").unwrap();
    assert_eq!(ay.zone, None);
    assert!(
        s.stops
            .iter()
            .find(|x| x.id == "AH")
            .unwrap()
            .tw_start
            .is_none()
    );

    // Nearest-stop-first on the imported samples agrees with the same rule computed on the raw
    // files, so geometry and labels survived the import: the true next stop is at the minimum
    // distance in 802 of 1312 decisions; breaking ties by stop id (as the stored order does), 801.
    let (mut at_min, mut first_by_id) = (0, 0);
    for s in &all {
        let here = &s.history[0];
        let c = here.lat.to_radians().cos();
        let d = |x: &dfm::data::sample::Stop| {
            let (e, n) = ((x.lon - here.lon) * c, x.lat - here.lat);
            e * e + n * n
        };
        let next = s.target.as_ref().unwrap().next_stop.unwrap();
        let best = (0..s.stops.len())
            .min_by(|&i, &j| d(&s.stops[i]).total_cmp(&d(&s.stops[j])))
            .unwrap();
        at_min += (d(&s.stops[next]) == d(&s.stops[best])) as usize;
        first_by_id += (best == next) as usize;
    }
    assert_eq!((at_min, first_by_id), (802, 801));
}

#[test]
fn import_cli_reports_and_refuses_bad_records() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fleet_csv(tmp.path(), true);
    let out = tmp.path().join("cli");
    let base = [
        "data",
        "import",
        "gps-csv",
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--id-col",
        "vehicle",
        "--time-col",
        "ts",
        "--lat-col",
        "latitude",
        "--lon-col",
        "longitude",
        "--speed-col",
        "spd",
        "--history",
        "3",
        "--future",
        "3",
    ];
    let (ok, _, err) = dfm(&base);
    assert!(!ok, "a bad row fails the import");
    assert!(err.contains("row 36") && err.contains("latitude"), "{err}");
    let mut args = base.to_vec();
    args.push("--skip-bad");
    let (ok, stdout, err) = dfm(&args);
    assert!(ok, "{err}");
    let all = format!("{stdout}{err}");
    assert!(all.contains("records read:    35"), "{all}");
    assert!(all.contains("bad record"), "{all}");
    assert!(Manifest::load(&out).is_ok());
    // An existing dataset is not overwritten without --force.
    let (ok, _, err) = dfm(&args);
    assert!(!ok && err.contains("--force"), "{err}");
}

/// Zone plans on the 8 real routes: driven from the better end they order the stops as the
/// drivers did (Kendall's tau above 0.5 on average), where a greedy "same zone, then nearest"
/// from the station does not (below 0); starting from the end nearer the station or from the far
/// one is a coin flip on these routes (their Kendall's taus nearly cancel).
#[test]
fn zone_plans_order_real_routes_like_their_drivers() {
    use dfm::eval::{baselines, rollout};
    let Some(input) = shared("lmrc-sample") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lmrc");
    lmrc::import(&input, &out, &lmrc::LmrcOptions::default(), false, false).unwrap();
    let mut logs: BTreeMap<String, rollout::RouteLog> = BTreeMap::new();
    for s in SPLITS.iter().flat_map(|s| split_samples(&out, s)) {
        logs.entry(s.route_id.clone()).or_default().add(&s);
    }
    let indifferent = |b: &[Sample], _: &[usize]| vec![0.0; b.len()];
    let p = rollout::planned(&logs, &indifferent, 64).unwrap();
    let greedy = rollout::run(
        &logs,
        &rollout::rule_chooser(baselines::same_zone_nearest_scores),
        64,
    )
    .unwrap();
    assert_eq!((p["better_end_first"].routes, greedy.routes), (8, 8));
    let (best, near, far) = (
        p["better_end_first"].krc,
        p["nearest_end_first"].krc,
        p["far_end_first"].krc,
    );
    assert!(best > 0.5 && greedy.krc < 0.0, "{best} {greedy:?}");
    assert!((near + far).abs() < 0.5, "{near} {far}");
}

/// Stops are a set: a model trained on an import capped at 40 stop tokens evaluates on an import
/// of the same routes with every stop (up to 192): it reads the nearest 40 and says so.
#[test]
fn lmrc_model_reads_an_import_with_more_stops() {
    let Some(input) = shared("lmrc-sample") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    let capped = lmrc::LmrcOptions {
        max_stops: 40,
        ..Default::default()
    };
    lmrc::import(&input, &small, &capped, false, false).unwrap();
    let full = tmp.path().join("full");
    lmrc::import(&input, &full, &lmrc::LmrcOptions::default(), false, false).unwrap();
    assert_eq!(Manifest::load(&full).unwrap().spec.max_stops, 192);
    let run = tmp.path().join("run");
    let o: Vec<String> = vec![
        format!("data.path={}", small.display()),
        format!("run.dir={}", run.display()),
        "model.d_model=16".into(),
        "model.heads=2".into(),
        "model.layers=1".into(),
        "train.max_steps=10".into(),
    ];
    let cfg = dfm::config::Config::load(Some(Path::new("configs/lmrc.toml")), &o).unwrap();
    dfm::train::train(cfg, false, &burn::prelude::Device::flex(), true).unwrap();
    let json = tmp.path().join("r.json");
    let (ok, out, err) = dfm(&[
        "eval",
        "--device",
        "flex",
        "--model",
        run.to_str().unwrap(),
        "--data",
        full.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("list more stops than the model reads"),
        "{out}"
    );
    // Route data has no futures: one line says so instead of a table of "absent".
    assert!(
        out.contains("trajectory: absent") && !out.contains("model K=0"),
        "{out}"
    );
    assert!(out.contains("zone plan roll-out"), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["stop_capacity"], 40);
    let over = r["samples_over_stop_capacity"].as_u64().unwrap();
    assert!(over > 0 && over < r["samples"].as_u64().unwrap(), "{over}");
    assert!(r["next_stop"]["hr_at_3"].as_f64().is_some());
    // Routes are rolled out by zone plan too; with one test route (the default split of 8) the
    // model's direction is one of the two ends'.
    let plans = &r["route_plans"];
    let krc = |k: &str| plans[k]["krc"].as_f64().unwrap();
    assert_eq!(plans["model"]["routes"], 1);
    assert!(krc("model") == krc("nearest_end_first") || krc("model") == krc("far_end_first"));
    assert!(r["baselines"]["zone_neighbour_first"]["next_stop"]["accuracy"].is_f64());
}

/// A GPS CSV of another shape than any shipped config was written for trains with
/// `configs/gps-csv.toml` as it is: the patch sizes come from the dataset.
#[test]
fn gps_csv_config_trains_on_any_window() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("vehicle,ts,latitude,longitude,spd\n");
    let t0 = 86_400.0 * 19_000.0;
    for v in 0..24 {
        let speed = 3.0 + v as f64;
        for k in 0..40 {
            let t = t0 + 3600.0 * v as f64 + 10.0 * k as f64;
            let turn = (k as f64 * 0.05 * (v % 3) as f64).sin();
            let north = speed * 10.0 * k as f64 / 111_195.0;
            let east = 30.0 * turn / 74_000.0;
            text.push_str(&format!(
                "v{v},{t},{:.9},{:.9},{speed}\n",
                48.0 + north,
                11.0 + east
            ));
        }
    }
    let input = tmp.path().join("fleet.csv");
    std::fs::write(&input, text).unwrap();
    let mut o = csv_options();
    o.window.history_len = 7;
    o.window.future_len = 5;
    o.test_days = 0.0;
    let data = tmp.path().join("fleet");
    gps_csv::import(&input, &data, &o, false, false).unwrap();
    let run = tmp.path().join("run");
    let sets: Vec<String> = vec![
        format!("data.path={}", data.display()),
        format!("run.dir={}", run.display()),
        "train.max_steps=3".into(),
        "train.batch_size=8".into(),
    ];
    let cfg = dfm::config::Config::load(Some(Path::new("configs/gps-csv.toml")), &sets).unwrap();
    dfm::train::train(cfg, false, &burn::prelude::Device::flex(), true).unwrap();
    let saved = dfm::config::Config::load(Some(&run.join("config.toml")), &[]).unwrap();
    let spec = Manifest::load(&data).unwrap().spec;
    assert_eq!(spec.history_len, 7);
    assert_eq!(saved.model.history_patch, 1, "7 fixes: one per token");
    assert_eq!(spec.imu_len % saved.model.imu_patch, 0);
}

/// Hostile or broken input to the importers: an error naming the file, record and field, or a
/// flag's range; never a hang or a panic.
#[test]
fn hostile_flags_times_and_routes_are_errors_not_hangs_or_panics() {
    let tmp = tempfile::tempdir().unwrap();
    // Timestamps near 2e17 (where `t += step` no longer advances).
    let huge = tmp.path().join("huge.csv");
    let mut text = String::from("vehicle,ts,latitude,longitude,spd\n");
    for k in 0..20 {
        text.push_str(&format!(
            "a,{},48.0,{:.6},\n",
            2e17 + k as f64 * 10.0,
            11.0 + k as f64 * 1e-4
        ));
    }
    std::fs::write(&huge, text).unwrap();
    let e = gps_csv_error(&huge, &tmp.path().join("o1"), &csv_options());
    assert!(
        e.contains("row 2") && e.contains("ts") && e.contains("UNIX time"),
        "{e}"
    );
    // Window flags out of range, through the CLI.
    let good = fleet_csv(tmp.path(), false);
    for (flag, value, want) in [
        ("--step", "0", "--step 0 is outside"),
        ("--history", "0", "--history 0 is outside"),
        ("--future", "0", "--future 0 is outside"),
        ("--stride", "0", "--stride 0 is outside"),
        ("--max-gap", "1e9", "--max-gap"),
        ("--utc-offset", "99", "--utc-offset 99 is outside"),
        ("--tz", "Mars/Olympus", "not an IANA time zone"),
    ] {
        let out = tmp.path().join(format!("o{flag}"));
        let (ok, _, err) = dfm(&[
            "data",
            "import",
            "gps-csv",
            "--in",
            good.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--id-col",
            "vehicle",
            "--time-col",
            "ts",
            "--lat-col",
            "latitude",
            "--lon-col",
            "longitude",
            flag,
            value,
        ]);
        assert!(!ok, "{flag} {value} refused");
        // The flag's range is checked when the command line is parsed (clap names the flag), and
        // again by the library.
        let named = err.contains(want) || (err.contains(flag) && err.contains("is outside"));
        assert!(named && !err.contains("panicked"), "{flag}: {err}");
    }
    // GeoLife: a NaN time and 31 February are bad records (named), not panics.
    for (date, time) in [("2009-02-28", "NaN"), ("2009-02-31", "02:53:04")] {
        let root = tmp.path().join(format!("gl-{date}-{time}"));
        let dir = root.join("000").join("Trajectory");
        std::fs::create_dir_all(&dir).unwrap();
        let mut plt = String::from(
            "Geolife trajectory\nWGS 84\nAltitude is in Feet\nReserved 3\n0,2,255,My Track,0,0,2,8421376\n0\n",
        );
        for k in 0..30 {
            let t = k * 5;
            plt.push_str(&format!(
                "39.9{k:02},116.3,0,100,39872.1,2009-02-28,02:{:02}:{:02}\n",
                t / 60,
                t % 60
            ));
        }
        plt.push_str(&format!("39.99,116.3,0,100,39872.1,{date},{time}\n"));
        std::fs::write(dir.join("a.plt"), plt).unwrap();
        let o = dfm::data::import::geolife::GeolifeOptions::default();
        let e = dfm::data::import::geolife::import(&root, &root.join("out"), &o, false, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.plt") && e.contains("line 37") && e.contains("date,time"),
            "{e}"
        );
        let r =
            dfm::data::import::geolife::import(&root, &root.join("out2"), &o, true, false).unwrap();
        assert_eq!(r.dropped.get("bad record"), Some(&1), "{r:?}");
    }
    // LMRC: an empty route is a bad record naming the route and the field.
    let lm = tmp.path().join("lmrc");
    std::fs::create_dir_all(&lm).unwrap();
    std::fs::write(
        lm.join("route_data.json"),
        r#"{"R1": {"station_code": "DLA3", "date_YYYY_MM_DD": "2018-07-20", "departure_time_utc": "14:37:26", "stops": {}}}"#,
    )
    .unwrap();
    std::fs::write(lm.join("package_data.json"), r#"{"R1": {}}"#).unwrap();
    std::fs::write(
        lm.join("actual_sequences.json"),
        r#"{"R1": {"actual": {}}}"#,
    )
    .unwrap();
    let mut r = ImportReport::default();
    let e = lmrc::read(&lm, &mut r, false).unwrap_err().to_string();
    assert!(
        e.contains("R1") && e.contains("stops") && e.contains("empty route"),
        "{e}"
    );
    // An unknown station without --tz: named; with --tz: accepted.
    std::fs::write(
        lm.join("route_data.json"),
        r#"{"R1": {"station_code": "XYZ1", "date_YYYY_MM_DD": "2018-07-20", "departure_time_utc": "14:37:26", "stops": {"S": {"lat": 34.0, "lng": -118.0, "type": "Station", "zone_id": null}, "A": {"lat": 34.01, "lng": -118.0, "type": "Dropoff", "zone_id": "A-1.1A"}}}}"#,
    )
    .unwrap();
    std::fs::write(
        lm.join("actual_sequences.json"),
        r#"{"R1": {"actual": {"S": 0, "A": 1}}}"#,
    )
    .unwrap();
    let e = lmrc::import(
        &lm,
        &tmp.path().join("l1"),
        &lmrc::LmrcOptions::default(),
        false,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("station_code") && e.contains("--tz"), "{e}");
    let o = lmrc::LmrcOptions {
        tz: Some("America/Los_Angeles".into()),
        val_frac: 0.0,
        test_frac: 0.0,
        ..Default::default()
    };
    lmrc::import(&lm, &tmp.path().join("l2"), &o, false, false).unwrap();
    let s = &split_samples(&tmp.path().join("l2"), "train")[0];
    // 14:37:26 UTC on 2018-07-20 is 07:37:26 PDT (the longitude rule said 06:37).
    assert!(
        (s.context.hour - (7.0 + 37.0 / 60.0 + 26.0 / 3600.0)).abs() < 1e-4,
        "{}",
        s.context.hour
    );
    let bad = lmrc::LmrcOptions {
        tz: Some("Mars/Olympus".into()),
        ..Default::default()
    };
    let e = lmrc::import(&lm, &tmp.path().join("l3"), &bad, false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tz") && e.contains("Mars/Olympus"), "{e}");
}

/// An import run as an array job (`--shard-index 0|1 --num-shards 2`: each part takes every
/// other trajectory or route), merged with `dfm data merge`, is the one-process import: same
/// samples in the same splits, same statistics to the manifest's precision.
#[test]
fn a_sharded_import_merged_equals_the_one_process_import() {
    let tmp = tempfile::tempdir().unwrap();
    let merged_parts = |name: &str, import: &dyn Fn(&Path, dfm::data::part::Part)| {
        let whole = tmp.path().join(format!("{name}-whole"));
        import(&whole, dfm::data::part::Part::WHOLE);
        let parts: Vec<PathBuf> = (0..2)
            .map(|i| {
                let p = tmp.path().join(format!("{name}-part{i}"));
                import(&p, dfm::data::part::Part::new(i, 2).unwrap());
                p
            })
            .collect();
        let merged = tmp.path().join(format!("{name}-merged"));
        dfm::data::merge::merge(&merged, &parts, false).unwrap();
        for p in &parts {
            let m = dfm::data::manifest::Manifest::load(p).unwrap();
            assert!(m.coverage.samples > 0, "{name}: every part has samples");
            assert_eq!(m.generator["part"]["num_shards"], 2);
        }
        assert_same_dataset(&whole, &merged);
    };
    let csv = fleet_csv(tmp.path(), false);
    merged_parts("csv", &|out, part| {
        let o = gps_csv::CsvOptions {
            part,
            ..csv_options()
        };
        gps_csv::import(&csv, out, &o, false, false).unwrap();
    });
    if let Some(input) = shared("lmrc-sample") {
        merged_parts("lmrc", &|out, part| {
            let o = lmrc::LmrcOptions {
                part,
                ..Default::default()
            };
            lmrc::import(&input, out, &o, false, false).unwrap();
        });
    }
}
