//! GeoLife (Microsoft Research Asia) `.plt` trees: `USER/Trajectory/*.plt`, six header lines,
//! then `lat,lon,0,altitude_ft,days_since_1899,date,time` (UTC). Each file is a trip; trips are
//! cut at gaps longer than `max_gap_s`, resampled to `step_s`, and cut into history -> future
//! windows that move. Splits: the last quarter of the users (sorted by id) is `test` (users
//! never seen in training); the other users' days go to `train`, `val` or `test_days` by a hash
//! of user and day.

use super::{
    ImportReport, RawFix, WindowOptions, hash_split, local_day, parse_date_time, resample, windows,
};
use crate::data::sample::{Region, Spec};
use crate::data::writer::DatasetWriter;
use crate::error::DataError;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(serde::Serialize, Clone, Debug)]
pub struct GeolifeOptions {
    pub window: WindowOptions,
    /// Share of users held out as `test` (at least one).
    pub test_users: f64,
    /// Shares of the other users' days held out as `val` and `test_days`.
    pub val_days: f64,
    pub test_days: f64,
    pub seed: u64,
    pub shard_size: usize,
    /// The part of the job this process does (`--shard-index`, `--num-shards`).
    #[serde(skip)]
    pub part: crate::data::part::Part,
}

impl Default for GeolifeOptions {
    fn default() -> Self {
        GeolifeOptions {
            part: Default::default(),
            window: WindowOptions {
                step_s: 5.0,
                max_gap_s: 30.0,
                history_len: 12,
                future_len: 12,
                stride: 2,
                min_move_m: 5.0,
                utc_offset_h: 8.0,
                tz: Some("Asia/Shanghai".into()),
            },
            test_users: 0.25,
            val_days: 0.1,
            test_days: 0.1,
            seed: 1,
            shard_size: 2000,
        }
    }
}

/// The dataset shapes of a GeoLife import: no IMU, images or stops (one placeholder IMU patch
/// and stop slot, always masked).
pub fn spec(w: &WindowOptions) -> Spec {
    Spec {
        video_frames: 0,
        video_size: 0,
        history_len: w.history_len,
        history_step_s: w.step_s as f32,
        future_len: w.future_len,
        future_step_s: w.step_s as f32,
        imu_len: w.history_len,
        imu_rate_hz: (1.0 / w.step_s) as f32,
        max_stops: 1,
    }
}

/// Reads one `.plt` file. Bad lines are errors naming the file, the line and the field.
pub fn read_plt(
    path: &Path,
    report: &mut ImportReport,
    skip_bad: bool,
) -> Result<Vec<RawFix>, DataError> {
    let text = crate::util::read_text_bounded(path, crate::util::limits::INPUT)
        .map_err(|e| DataError::file(path, format!("{e:#}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(6) {
        if line.trim().is_empty() {
            continue;
        }
        report.records_read += 1;
        match parse_plt_line(path, &format!("line {}", i + 1), line) {
            Ok(f) => out.push(f),
            Err(e) => report.bad(e, skip_bad)?,
        }
    }
    Ok(out)
}

/// One fix of a `.plt` file: `lat,lon,0,altitude,days,date,time`; `key` names the line.
fn parse_plt_line(path: &Path, key: &str, line: &str) -> Result<RawFix, DataError> {
    let cols: Vec<&str> = line.split(',').collect();
    if cols.len() < 7 {
        return Err(DataError::field(
            path,
            key,
            "(line)",
            format!("{} columns, expected 7", cols.len()),
        ));
    }
    let num = |c: usize, name: &str| -> Result<f64, DataError> {
        cols[c].trim().parse::<f64>().map_err(|_| {
            DataError::field(
                path,
                key,
                name,
                format!("`{}` is not numeric", cols[c].trim()),
            )
        })
    };
    let lat = num(0, "lat")?;
    let lon = num(1, "lon")?;
    super::check_position(lat, lon, ("lat", "lon"))
        .map_err(|(field, m)| DataError::field(path, key, field, m))?;
    let t = parse_date_time(cols[5], cols[6]).ok_or_else(|| {
        DataError::field(
            path,
            key,
            "date,time",
            format!("`{} {}` is not a UTC date and time", cols[5], cols[6]),
        )
    })?;
    Ok(RawFix {
        t,
        lat,
        lon,
        speed: None,
        heading: None,
    })
}

/// Sorts by time and drops repeated timestamps.
pub fn clean(mut fixes: Vec<RawFix>, report: &mut ImportReport) -> Vec<RawFix> {
    fixes.sort_by(|a, b| a.t.total_cmp(&b.t));
    let n = fixes.len();
    fixes.dedup_by(|b, a| b.t <= a.t);
    report.drop("repeated timestamp", n - fixes.len());
    fixes
}

fn user_dirs(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut users = Vec::new();
    for e in std::fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))? {
        let p = e?.path();
        if p.join("Trajectory").is_dir() {
            users.push((
                p.file_name().unwrap().to_string_lossy().to_string(),
                p.join("Trajectory"),
            ));
        }
    }
    users.sort();
    anyhow::ensure!(
        !users.is_empty(),
        "{}: no GeoLife user folders (USER/Trajectory/*.plt)",
        root.display()
    );
    Ok(users)
}

pub fn import(
    input: &Path,
    out: &Path,
    o: &GeolifeOptions,
    skip_bad: bool,
    force: bool,
) -> anyhow::Result<ImportReport> {
    let shares = [
        ("test_users", o.test_users),
        ("val_days", o.val_days),
        ("test_days", o.test_days),
    ];
    let clock = super::check_trajectory_import(&o.window, &shares, o.shard_size)?;
    let users = user_dirs(input)?;
    let n_test = ((users.len() as f64 * o.test_users).ceil() as usize)
        .clamp(1, users.len().saturating_sub(1).max(1));
    let test_users: Vec<&String> = users.iter().rev().take(n_test).map(|u| &u.0).collect();
    let mut writer = DatasetWriter::new(out, spec(&o.window), o.shard_size, force)?;
    let mut report = ImportReport::default();
    let bar = crate::progress::bar(users.len() as u64, "importing users");
    for (user, dir) in o.part.select(&users) {
        for (fi, f) in plt_files(dir)?.iter().enumerate() {
            report.files += 1;
            let fixes = clean(read_plt(f, &mut report, skip_bad)?, &mut report);
            report.records_kept += fixes.len();
            let (pieces, cuts) = resample(&fixes, &o.window);
            report.drop("trip cut at a gap (cuts)", cuts);
            for (pi, piece) in pieces.iter().enumerate() {
                let day = local_day(piece[0].t, clock);
                let route = format!("{user}-{day}");
                let split = split_of(&route, test_users.contains(&user), o);
                let prefix = format!("gl{}-{fi:03}-{pi:02}", super::key_part(user));
                let (samples, still) =
                    windows(piece, &o.window, clock, &route, &prefix, Region::Unknown);
                report.drop("window does not move", still);
                for s in &samples {
                    writer.add(split, s)?;
                    *report.samples.entry(split.to_string()).or_default() += 1;
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut generator = o.part.generator(o)?;
    generator["report"] = serde_json::to_value(&report)?;
    generator["test_users"] = serde_json::to_value(&test_users)?;
    writer.finish("geolife", generator)?;
    Ok(report)
}

/// A user's `.plt` files, sorted.
fn plt_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "plt"))
        .collect();
    files.sort();
    Ok(files)
}

/// A route's split: `test` for the held-out users; else by the route's hash, its `test` share
/// held out as `test_days` (the same users on other days).
fn split_of(route: &str, test_user: bool, o: &GeolifeOptions) -> &'static str {
    if test_user {
        return "test";
    }
    match hash_split(o.seed, route, o.val_days, o.test_days) {
        "test" => "test_days",
        s => s,
    }
}

/// Per-user counts of a raw tree (for reports and tests).
pub fn count_fixes(input: &Path) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut m = BTreeMap::new();
    for (user, dir) in user_dirs(input)? {
        let mut r = ImportReport::default();
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "plt") {
                read_plt(&p, &mut r, true)?;
            }
        }
        m.insert(user, r.records_read);
    }
    Ok(m)
}
