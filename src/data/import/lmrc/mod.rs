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
use crate::data::sample::{Context, Fix, Labels, Region, Sample, Spec, Stop};
use crate::data::writer::DatasetWriter;
use crate::seed as rng;
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::path::Path;

mod read;
use read::dist_m;
pub use read::{read, read_routes};

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
        let stops: Vec<Stop> = listed.iter().map(|id| self.stops[*id].stop()).collect();
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
            target: Some(Labels {
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

impl StopInfo {
    /// The stop as a sample lists it.
    fn stop(&self) -> Stop {
        Stop {
            id: self.id.clone(),
            lat: self.lat,
            lon: self.lon,
            tw_start: self.tw.0,
            tw_end: self.tw.1,
            service_s: self.service_s.map(|v| v as f32),
            packages: Some(self.packages),
            volume_l: self.volume_l.map(|v| v as f32),
            zone: self.zone.clone(),
        }
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

/// The options' shares, shard size and speed in range.
fn check_options(o: &LmrcOptions) -> anyhow::Result<()> {
    super::check_share("--val-frac", o.val_frac)?;
    super::check_share("--test-frac", o.test_frac)?;
    super::check_shard_size(o.shard_size)?;
    anyhow::ensure!(
        o.speed_mps.is_finite() && (0.1..=100.0).contains(&o.speed_mps),
        "--speed {} is outside [0.1, 100] m/s",
        o.speed_mps
    );
    Ok(())
}

pub fn import(
    input: &Path,
    out: &Path,
    o: &LmrcOptions,
    skip_bad: bool,
    force: bool,
) -> anyhow::Result<ImportReport> {
    check_options(o)?;
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
