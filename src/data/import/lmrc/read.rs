//! Reading an LMRC folder: the route, package, sequence and travel-time files, bounded, with
//! errors naming the file, the route and the field.

use super::{RouteData, StopInfo, lenient_json, station_tz};
use crate::data::import::{ImportReport, parse_date_time};
use crate::error::DataError;
use crate::frame::Enu;
use chrono_tz::Tz;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn read_json(path: &Path) -> Result<Value, DataError> {
    let text = crate::util::read_text_bounded(path, crate::util::limits::INPUT)
        .map_err(|e| DataError::file(path, format!("{e:#}")))?;
    serde_json::from_str(&lenient_json(&text))
        .map_err(|e| DataError::file(path, format!("not valid JSON: {e}")))
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) -> UNIX seconds.
fn parse_utc(s: &str) -> Option<f64> {
    let (d, t) = s.trim().split_once(' ')?;
    parse_date_time(d, t)
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
    let departure = parse_date_time(date, time)
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
                    "no known time zone for this station; pass --tz with an IANA zone name (e.g. America/Chicago)",
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
    crate::data::import::check_position(lat, lon, ("lat", "lng")).map_err(|(f, m)| sf(f, m))?;
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

pub(super) fn dist_m(a: &StopInfo, b: &StopInfo) -> f64 {
    let (e, n) = Enu::new(a.lat, a.lon).to_en(b.lat, b.lon);
    (e * e + n * n).sqrt()
}
