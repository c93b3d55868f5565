//! The Amazon Last Mile Routing Research Challenge layout: `route_data.json`,
//! `package_data.json`, `actual_sequences.json` and, when present, `travel_times.json`. The
//! files hold bare `NaN` tokens (as Python writes them), read here as missing values.
//!
//! Each route yields one next-stop sample per position of its actual sequence: the vehicle at
//! the previous stop (the station first), all remaining stops as stop tokens (with zone, time
//! window, planned service time, package count and volume), and the stop visited next as the
//! label. Times come from `travel_times.json` when present, else from straight-line distances
//! at `speed_mps`; they give the context's hour but are not labels (the data does not observe
//! them). Where `scan_status` is present, `delivered` comes from it. Splits are by route.

use super::ImportReport;
use crate::data::sample::{Context, Fix, Region, Sample, Spec, Stop, Target};
use crate::data::writer::DatasetWriter;
use crate::error::DataError;
use crate::frame::Enu;
use crate::seed as rng;
use chrono_tz::Tz;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(serde::Serialize, Clone, Debug)]
pub struct LmrcOptions {
    /// Travel speed assumed without travel times, m/s.
    pub speed_mps: f64,
    /// Most stop tokens per sample (0: as many as the longest route needs).
    pub max_stops: usize,
    pub val_frac: f64,
    pub test_frac: f64,
    /// Which block of `test_frac` of the hash-ordered routes is `test` (cross-validation:
    /// folds 0, 1, .. test disjoint routes); validation takes the routes after it.
    #[serde(skip_serializing_if = "is_zero")]
    pub fold: usize,
    pub seed: u64,
    pub shard_size: usize,
    /// IANA time zone of every route (e.g. `America/Chicago`); None: from the station code.
    pub tz: Option<String>,
    /// The part of the job this process does (`--shard-index`, `--num-shards`).
    #[serde(skip)]
    pub part: crate::data::part::Part,
}

impl Default for LmrcOptions {
    fn default() -> Self {
        LmrcOptions {
            part: Default::default(),
            speed_mps: 8.0,
            max_stops: 0,
            val_frac: 0.1,
            test_frac: 0.1,
            fold: 0,
            seed: 1,
            shard_size: 2000,
            tz: None,
        }
    }
}

/// The IANA time zone of an LMRC station code (`DLA9`: Los Angeles), for the metro areas of the
/// challenge's data (Los Angeles, Seattle, Chicago, Austin, Boston); None for another code.
pub fn station_tz(code: &str) -> Option<Tz> {
    let metro = code.get(1..3)?;
    Some(match metro {
        "LA" | "SE" => chrono_tz::America::Los_Angeles,
        "CH" | "AU" => chrono_tz::America::Chicago,
        "BO" => chrono_tz::America::New_York,
        _ => return None,
    })
}

use super::parse_tz;

/// Replaces bare `NaN`, `Infinity` and `-Infinity` tokens outside strings by `null`.
pub fn lenient_json(text: &str) -> String {
    const QUOTE: char = '\u{22}';
    const BACKSLASH: char = '\u{5c}';
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut esc) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            if esc {
                esc = false;
            } else if c == BACKSLASH {
                esc = true;
            } else if c == QUOTE {
                in_str = false;
            }
        } else if c == QUOTE {
            in_str = true;
        } else if let Some(tok) = ["-Infinity", "Infinity", "NaN"]
            .iter()
            .find(|t| rest.starts_with(**t))
        {
            out.push_str("null");
            rest = &rest[tok.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn read_json(path: &Path) -> Result<Value, DataError> {
    let text = crate::util::read_text_bounded(path, crate::util::limits::INPUT)
        .map_err(|e| DataError::file(path, format!("{e:#}")))?;
    serde_json::from_str(&lenient_json(&text))
        .map_err(|e| DataError::file(path, format!("not valid JSON: {e}")))
}

#[derive(Clone, Debug)]
pub struct StopInfo {
    pub id: String,
    pub lat: f64,
    pub lon: f64,
    pub station: bool,
    pub zone: Option<String>,
    pub tw: (Option<f64>, Option<f64>),
    pub service_s: Option<f64>,
    pub packages: u32,
    pub volume_l: Option<f64>,
    /// All packages delivered (from `scan_status`), when known.
    pub delivered: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct RouteData {
    pub id: String,
    pub departure: f64,
    /// The route's time zone (`--tz`, or from its station code).
    pub tz: Tz,
    pub stops: BTreeMap<String, StopInfo>,
    /// Stop ids in the driven order, the station first.
    pub actual: Vec<String>,
    pub travel: Option<BTreeMap<String, BTreeMap<String, f64>>>,
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) -> UNIX seconds.
fn parse_utc(s: &str) -> Option<f64> {
    let (d, t) = s.trim().split_once(' ')?;
    super::parse_date_time(d, t)
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// The parsed files of an LMRC folder, and where each came from (for errors).
struct Files {
    routes: Value,
    packages: Value,
    actual: Value,
    travel: Option<Value>,
    /// The time zone of every route (`--tz`), else each route's station's.
    tz: Option<Tz>,
    rpath: std::path::PathBuf,
    ppath: std::path::PathBuf,
    apath: std::path::PathBuf,
}

/// Reads and checks the three (or four) files.
pub fn read(
    dir: &Path,
    report: &mut ImportReport,
    skip_bad: bool,
) -> Result<Vec<RouteData>, DataError> {
    read_routes(dir, None, report, skip_bad)
}

/// [`read`], with every route in time zone `tz` when given.
pub fn read_routes(
    dir: &Path,
    tz: Option<Tz>,
    report: &mut ImportReport,
    skip_bad: bool,
) -> Result<Vec<RouteData>, DataError> {
    let tpath = dir.join("travel_times.json");
    let files = Files {
        tz,
        rpath: dir.join("route_data.json"),
        ppath: dir.join("package_data.json"),
        apath: dir.join("actual_sequences.json"),
        routes: read_json(&dir.join("route_data.json"))?,
        packages: read_json(&dir.join("package_data.json"))?,
        actual: read_json(&dir.join("actual_sequences.json"))?,
        travel: tpath.is_file().then(|| read_json(&tpath)).transpose()?,
    };
    report.files = 3 + files.travel.is_some() as usize;
    let robj = files
        .routes
        .as_object()
        .ok_or_else(|| DataError::file(&files.rpath, "expected an object of routes"))?;
    let mut out = Vec::new();
    for (rid, r) in robj {
        report.records_read += 1;
        match parse_route(&files, rid, r) {
            Ok(r) => {
                report.records_kept += 1;
                out.push(r)
            }
            Err(e) => report.bad(e, skip_bad)?,
        }
    }
    Ok(out)
}

/// One route of `route_data.json` with its packages, driven order and travel times.
fn parse_route(files: &Files, rid: &str, r: &Value) -> Result<RouteData, DataError> {
    let f = |field: &str, msg: &str| DataError::field(&files.rpath, rid, field, msg.to_string());
    let date = r["date_YYYY_MM_DD"]
        .as_str()
        .ok_or_else(|| f("date_YYYY_MM_DD", "missing or not a string"))?;
    let time = r["departure_time_utc"]
        .as_str()
        .ok_or_else(|| f("departure_time_utc", "missing or not a string"))?;
    let departure = super::parse_date_time(date, time)
        .ok_or_else(|| f("departure_time_utc", "not a date and time"))?;
    let sobj = r["stops"]
        .as_object()
        .ok_or_else(|| f("stops", "missing or not an object"))?;
    if sobj.len() < 2 {
        return Err(f(
            "stops",
            "a route needs its station and at least one stop (empty route)",
        ));
    }
    let mut stops = BTreeMap::new();
    for (sid, st) in sobj {
        stops.insert(sid.clone(), parse_stop(files, rid, sid, st)?);
    }
    let actual = driven_order(files, rid, &stops)?;
    Ok(RouteData {
        id: rid.to_string(),
        departure,
        tz: files
            .tz
            .or_else(|| r["station_code"].as_str().and_then(station_tz))
            .ok_or_else(|| {
                f(
                    "station_code",
                    "no known time zone for this station; pass --tz with an IANA zone name \
                     (e.g. America/Chicago)",
                )
            })?,
        stops,
        actual,
        travel: travel_matrix(files, rid),
    })
}

/// A stop of a route, with what its packages say (window, service time, volume, delivered).
fn parse_stop(files: &Files, rid: &str, sid: &str, s: &Value) -> Result<StopInfo, DataError> {
    let sf = |field: &str, msg: String| {
        DataError::field(&files.rpath, rid, format!("stops.{sid}.{field}"), msg)
    };
    let lat = num(&s["lat"]).ok_or_else(|| sf("lat", "missing or not a number".into()))?;
    let lon = num(&s["lng"]).ok_or_else(|| sf("lng", "missing or not a number".into()))?;
    let max = crate::data::sample::MAX_ABS_LAT;
    if !(-max..=max).contains(&lat) {
        return Err(sf(
            "lat",
            format!(
                "{lat} is not a latitude in [-85, 85] (the local frame cannot represent the polar caps)"
            ),
        ));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(sf(
            "lng",
            format!("{lon} is not a longitude in [-180, 180]"),
        ));
    }
    let p = package_info(files, rid, sid)?;
    Ok(StopInfo {
        id: sid.to_string(),
        lat,
        lon,
        station: s["type"].as_str() == Some("Station"),
        zone: s["zone_id"].as_str().map(str::to_string),
        tw: p.tw,
        service_s: p.service_s,
        packages: p.n,
        volume_l: p.volume_l.map(|v| (v * 10.0).round() / 10.0),
        delivered: p.delivered,
    })
}

/// What a stop's packages add up to.
#[derive(Default)]
struct PackageInfo {
    n: u32,
    tw: (Option<f64>, Option<f64>),
    service_s: Option<f64>,
    volume_l: Option<f64>,
    delivered: Option<bool>,
}

/// The packages of a stop: the tightest time window, total service time and volume, whether
/// all were delivered.
fn package_info(files: &Files, rid: &str, sid: &str) -> Result<PackageInfo, DataError> {
    let mut info = PackageInfo::default();
    let Some(pkgs) = files.packages[rid][sid].as_object() else {
        return Ok(info);
    };
    let time = |pid: &str, which: &str, v: &Value| -> Result<Option<f64>, DataError> {
        let Some(text) = v.as_str() else {
            return Ok(None);
        };
        parse_utc(text).map(Some).ok_or_else(|| {
            DataError::field(
                &files.ppath,
                rid,
                format!("{sid}.{pid}.time_window.{which}"),
                "not a date and time",
            )
        })
    };
    let (mut tw0, mut tw1) = (None::<f64>, None::<f64>);
    for (pid, p) in pkgs {
        info.n += 1;
        if let Some(a) = time(pid, "start_time_utc", &p["time_window"]["start_time_utc"])? {
            tw0 = Some(tw0.map_or(a, |x| x.max(a)));
        }
        if let Some(b) = time(pid, "end_time_utc", &p["time_window"]["end_time_utc"])? {
            tw1 = Some(tw1.map_or(b, |x| x.min(b)));
        }
        if let Some(st) = num(&p["planned_service_time_seconds"]) {
            info.service_s = Some(info.service_s.unwrap_or(0.0) + st);
        }
        let d = &p["dimensions"];
        if let (Some(x), Some(y), Some(z)) = (
            num(&d["depth_cm"]),
            num(&d["height_cm"]),
            num(&d["width_cm"]),
        ) {
            info.volume_l = Some(info.volume_l.unwrap_or(0.0) + x * y * z / 1000.0);
        }
        if let Some(status) = p["scan_status"].as_str() {
            info.delivered = Some(info.delivered.unwrap_or(true) && status == "DELIVERED");
        }
    }
    // A window that closes before it opens (packages with disjoint windows) is no window.
    info.tw = match (tw0, tw1) {
        (Some(a), Some(b)) if b < a => (None, None),
        w => w,
    };
    Ok(info)
}

/// The driven order of a route's stops (ids), the station first, checked against its stops.
fn driven_order(
    files: &Files,
    rid: &str,
    stops: &BTreeMap<String, StopInfo>,
) -> Result<Vec<String>, DataError> {
    let apath = &files.apath;
    let seq = files.actual[rid]["actual"]
        .as_object()
        .ok_or_else(|| DataError::field(apath, rid, "actual", "missing route or not an object"))?;
    let mut order: Vec<(i64, String)> = Vec::new();
    for (sid, pos) in seq {
        let field = format!("actual.{sid}");
        let p = pos
            .as_i64()
            .ok_or_else(|| DataError::field(apath, rid, &field, "not an integer position"))?;
        if !stops.contains_key(sid) {
            return Err(DataError::field(
                apath,
                rid,
                &field,
                "a stop route_data.json does not list",
            ));
        }
        order.push((p, sid.clone()));
    }
    order.sort();
    if order.len() != stops.len() || order.iter().enumerate().any(|(i, (p, _))| *p != i as i64) {
        return Err(DataError::field(
            apath,
            rid,
            "actual",
            format!(
                "positions are not 0..{} over all {} stops",
                stops.len(),
                stops.len()
            ),
        ));
    }
    let actual: Vec<String> = order.into_iter().map(|(_, s)| s).collect();
    if !stops[&actual[0]].station {
        return Err(DataError::field(
            apath,
            rid,
            "actual",
            format!("position 0 is `{}`, not the station", actual[0]),
        ));
    }
    Ok(actual)
}

/// The route's travel times between stops (seconds), when the folder has them.
fn travel_matrix(files: &Files, rid: &str) -> Option<BTreeMap<String, BTreeMap<String, f64>>> {
    let m = files.travel.as_ref()?[rid].as_object()?;
    Some(
        m.iter()
            .map(|(a, row)| {
                let row = row
                    .as_object()
                    .map(|r| {
                        r.iter()
                            .filter_map(|(b, v)| Some((b.clone(), num(v)?)))
                            .collect()
                    })
                    .unwrap_or_default();
                (a.clone(), row)
            })
            .collect(),
    )
}

fn dist_m(a: &StopInfo, b: &StopInfo) -> f64 {
    let (e, n) = Enu::new(a.lat, a.lon).to_en(b.lat, b.lon);
    (e * e + n * n).sqrt()
}

impl RouteData {
    /// Travel time between two stops: the route's matrix, or distance over `speed`.
    pub fn travel_s(&self, a: &str, b: &str, speed: f64) -> f64 {
        self.travel
            .as_ref()
            .and_then(|t| t.get(a)?.get(b).copied())
            .unwrap_or_else(|| dist_m(&self.stops[a], &self.stops[b]) / speed)
    }

    /// The sample of the vehicle at `at` (just leaving it, at time `t`) with `remaining` stops to
    /// visit; `next` labels the stop visited next. Stops are listed by id (the order carries no
    /// meaning).
    pub fn sample(
        &self,
        k: usize,
        at: &str,
        t: f64,
        remaining: &[&str],
        next: Option<&str>,
    ) -> Sample {
        let here = &self.stops[at];
        let mut listed: Vec<&str> = remaining.to_vec();
        listed.sort();
        // UTC when the zone is unknown (`import` refuses such routes).
        let (hour, weekday, _) = super::Clock::Zone(self.tz).local(t);
        let stops: Vec<Stop> = listed
            .iter()
            .map(|id| {
                let s = &self.stops[*id];
                Stop {
                    id: s.id.clone(),
                    lat: s.lat,
                    lon: s.lon,
                    tw_start: s.tw.0,
                    tw_end: s.tw.1,
                    service_s: s.service_s.map(|v| v as f32),
                    packages: Some(s.packages),
                    volume_l: s.volume_l.map(|v| v as f32),
                    zone: s.zone.clone(),
                }
            })
            .collect();
        let next_idx = next.and_then(|n| listed.iter().position(|s| *s == n));
        let delivered = next.and_then(|n| self.stops[n].delivered);
        Sample {
            video: None,
            key: format!("lm{}-{k:04}", safe_id(&self.id)),
            route_id: self.id.clone(),
            region: Region::Unknown,
            t0: t,
            context: Context {
                hour,
                weekday,
                zone: here.zone.clone().filter(|_| !here.station),
                depot: Some(crate::data::sample::LatLon {
                    lat: self.stops[&self.actual[0]].lat,
                    lon: self.stops[&self.actual[0]].lon,
                }),
                ..Default::default()
            },
            history: vec![Fix::at(t, here.lat, here.lon)],
            imu: None,
            images: Vec::new(),
            stops,
            horizons_s: Vec::new(),
            plan_route: false,
            target: Some(Target {
                next_stop: next_idx,
                delivered,
                ..Default::default()
            }),
        }
    }

    /// One sample per decision of the actual sequence.
    pub fn samples(&self, speed: f64) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut t = self.departure;
        for k in 1..self.actual.len() {
            let at = &self.actual[k - 1];
            if k > 1 {
                t += self.travel_s(&self.actual[k - 2], at, speed)
                    + self.stops[at].service_s.unwrap_or(0.0);
            }
            let remaining: Vec<&str> = self.actual[k..].iter().map(String::as_str).collect();
            out.push(self.sample(k, at, t, &remaining, Some(&self.actual[k])));
        }
        out
    }
}

fn safe_id(id: &str) -> String {
    id.trim_start_matches("RouteID_")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect()
}

/// The shapes of an LMRC import: one fix of history, all remaining stops as tokens.
pub fn spec(max_stops: usize) -> Spec {
    Spec {
        video_frames: 0,
        video_size: 0,
        history_len: 1,
        history_step_s: 1.0,
        future_len: 1,
        future_step_s: 1.0,
        imu_len: 1,
        imu_rate_hz: 1.0,
        max_stops,
    }
}

fn is_zero(x: &usize) -> bool {
    *x == 0
}

/// Splits routes: sorted by a hash of their id and `seed`, block `fold` of `test_frac` of them
/// (at least one route when there are three or more) goes to `test`, the next `val_frac` (after
/// it, wrapping around) to `val`, the rest to `train`. None when the fold starts past the routes.
pub fn route_splits(
    ids: &[&str],
    seed: u64,
    val_frac: f64,
    test_frac: f64,
    fold: usize,
) -> Option<BTreeMap<String, &'static str>> {
    let mut v: Vec<(u64, &str)> = ids
        .iter()
        .map(|id| (rng::hash(seed, id, &[]), *id))
        .collect();
    v.sort();
    let n = v.len();
    let at_least = |f: f64| {
        if n >= 3 {
            ((n as f64 * f).round() as usize).max(1)
        } else {
            0
        }
    };
    let (nt, nv) = (at_least(test_frac), at_least(val_frac));
    let first = fold * nt;
    if fold > 0 && (nt == 0 || first >= n) {
        return None;
    }
    // The last block may be short (the routes are not a multiple of it): no route is tested twice.
    let nt = nt.min(n - first);
    let splits = v
        .iter()
        .enumerate()
        .map(|(i, (_, id))| {
            let i = (i + n - first) % n.max(1);
            (
                id.to_string(),
                if i < nt {
                    "test"
                } else if i < nt + nv {
                    "val"
                } else {
                    "train"
                },
            )
        })
        .collect();
    Some(splits)
}

pub fn import(
    input: &Path,
    out: &Path,
    o: &LmrcOptions,
    skip_bad: bool,
    force: bool,
) -> anyhow::Result<ImportReport> {
    super::check_share("--val-frac", o.val_frac)?;
    super::check_share("--test-frac", o.test_frac)?;
    super::check_shard_size(o.shard_size)?;
    anyhow::ensure!(
        o.speed_mps.is_finite() && (0.1..=100.0).contains(&o.speed_mps),
        "--speed {} is outside [0.1, 100] m/s",
        o.speed_mps
    );
    let tz = o.tz.as_deref().map(parse_tz).transpose()?;
    let mut report = ImportReport::default();
    let routes = read_routes(input, tz, &mut report, skip_bad)?;
    anyhow::ensure!(!routes.is_empty(), "{}: no routes", input.display());
    let longest = routes.iter().map(|r| r.stops.len() - 1).max().unwrap_or(1);
    let max_stops = if o.max_stops == 0 {
        longest
    } else {
        o.max_stops
    };
    anyhow::ensure!(
        max_stops <= 1024,
        "--max-stops {max_stops}: at most 1024 stop tokens"
    );
    let ids: Vec<&str> = routes.iter().map(|r| r.id.as_str()).collect();
    let splits = route_splits(&ids, o.seed, o.val_frac, o.test_frac, o.fold).ok_or_else(|| {
        anyhow::anyhow!(
            "--fold {}: {} routes hold fewer folds of --test-frac {} (folds start at 0)",
            o.fold,
            ids.len(),
            o.test_frac
        )
    })?;
    let mut writer = DatasetWriter::new(out, spec(max_stops), o.shard_size, force)?;
    for r in o.part.select(&routes) {
        let split = splits[&r.id];
        for mut s in r.samples(o.speed_mps) {
            if s.stops.len() > max_stops {
                // Keep the nearest `max_stops` (the label is dropped when the next stop is not
                // among them: the choice must not depend on the label).
                s = crate::data::stop_set::fit(s, max_stops).0;
                if s.target.as_ref().is_some_and(|t| t.next_stop.is_none()) {
                    report.drop(
                        "next stop not among the nearest --max-stops (label dropped)",
                        1,
                    );
                }
            }
            writer.add(split, &s)?;
            *report.samples.entry(split.to_string()).or_default() += 1;
        }
    }
    let mut generator = o.part.generator(o)?;
    generator["report"] = serde_json::to_value(&report)?;
    generator["max_stops"] = max_stops.into();
    writer.finish("lmrc", generator)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nan_tokens_become_null_outside_strings() {
        let s = super::lenient_json(
            r#"{"a": NaN, "b": "NaN", "c": [Infinity, -Infinity, 1.5], "d": "x\"NaN"}"#,
        );
        assert_eq!(
            s,
            r#"{"a": null, "b": "NaN", "c": [null, null, 1.5], "d": "x\"NaN"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert!(v["a"].is_null() && v["b"] == "NaN");
    }

    #[test]
    fn folds_test_disjoint_routes_and_cover_them_all() {
        let ids: Vec<String> = (0..8).map(|i| format!("RouteID_{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut tested = Vec::new();
        for fold in 0..4 {
            let s = super::route_splits(&ids, 1, 0.125, 0.25, fold).unwrap();
            let count = |w: &str| s.values().filter(|v| **v == w).count();
            assert_eq!((count("test"), count("val"), count("train")), (2, 1, 5));
            tested.extend(
                s.iter()
                    .filter(|(_, v)| **v == "test")
                    .map(|(k, _)| k.clone()),
            );
        }
        tested.sort();
        tested.dedup();
        assert_eq!(tested.len(), 8, "four folds test every route once");
        // Fold 0 is the split without folds; a fold past the routes is refused.
        assert!(super::route_splits(&ids, 1, 0.125, 0.25, 4).is_none());
        // Seven routes: blocks of 2, the last one short; still every route tested once.
        let mut tested = Vec::new();
        for fold in 0..4 {
            let s = super::route_splits(&ids[..7], 1, 0.125, 0.25, fold).unwrap();
            tested.extend(
                s.iter()
                    .filter(|(_, v)| **v == "test")
                    .map(|(k, _)| k.clone()),
            );
        }
        assert_eq!(tested.len(), 7);
        tested.sort();
        tested.dedup();
        assert_eq!(tested.len(), 7, "no route is tested twice");
    }
}
