//! A generic GPS CSV: a header and at least `trajectory_id,timestamp,lat,lon` (UNIX seconds or
//! ISO 8601 date-times, see [`super::timestamp`]), optionally `speed` (m/s) and `heading`
//! (degrees); column names can be changed. Fleet data is often sparse (one fix every 10-15 s):
//! trajectories are cut at gaps longer than `max_gap_s` and resampled to `step_s`. Splits: trajectories starting on the last days of the data go to
//! `test_days`; the others to `train`, `val` or `test` by a hash of their id.

use super::{Clock, ImportReport, RawFix, WindowOptions, hash_split, local_day, resample, windows};
use crate::data::sample::Region;
use crate::data::writer::DatasetWriter;
use crate::error::DataError;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(serde::Serialize, Clone, Debug)]
pub struct Columns {
    pub id: String,
    pub time: String,
    pub lat: String,
    pub lon: String,
    pub speed: String,
    pub heading: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            id: "trajectory_id".into(),
            time: "timestamp".into(),
            lat: "lat".into(),
            lon: "lon".into(),
            speed: "speed".into(),
            heading: "heading".into(),
        }
    }
}

#[derive(serde::Serialize, Clone, Debug)]
pub struct CsvOptions {
    pub columns: Columns,
    pub window: WindowOptions,
    pub val_frac: f64,
    pub test_frac: f64,
    /// Share of the distinct days (latest first) held out as `test_days`.
    pub test_days: f64,
    pub seed: u64,
    pub shard_size: usize,
    /// The part of the job this process does (`--shard-index`, `--num-shards`).
    #[serde(skip)]
    pub part: crate::data::part::Part,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            part: Default::default(),
            columns: Columns::default(),
            window: WindowOptions {
                step_s: 10.0,
                max_gap_s: 60.0,
                history_len: 6,
                future_len: 6,
                stride: 1,
                min_move_m: 5.0,
                utc_offset_h: 0.0,
                tz: None,
            },
            val_frac: 0.1,
            test_frac: 0.1,
            test_days: 0.1,
            seed: 1,
            shard_size: 2000,
        }
    }
}

/// Reads the CSV into trajectories (sorted by time). Bad rows are errors naming the file, the
/// row and the column. Date-times without an offset are local times on `clock`.
pub fn read(
    path: &Path,
    c: &Columns,
    clock: &Clock,
    report: &mut ImportReport,
    skip_bad: bool,
) -> Result<BTreeMap<String, Vec<RawFix>>, DataError> {
    let file = super::open_regular(path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(LineCap::new(std::io::BufReader::new(file)));
    let cols = RowColumns::find(&mut rdr, c, path)?;
    let mut out: BTreeMap<String, Vec<RawFix>> = BTreeMap::new();
    for (i, row) in rdr.records().enumerate() {
        report.records_read += 1;
        let key = format!("row {}", i + 2);
        let row = match row {
            Ok(r) => r,
            // A read error (an over-long line among them) ends the file: no row after it can
            // be found.
            Err(e) if e.is_io_error() => {
                return Err(DataError::record(path, &key, format!("cannot read: {e}")));
            }
            Err(e) => {
                report.bad(
                    DataError::record(path, &key, format!("malformed row: {e}")),
                    skip_bad,
                )?;
                continue;
            }
        };
        let parsed = parse_row(&row, &cols, c, clock, path, &key);
        match parsed {
            Ok((id, f)) => out.entry(id).or_default().push(f),
            Err(e) => report.bad(e, skip_bad)?,
        }
    }
    for v in out.values_mut() {
        *v = super::geolife::clean(std::mem::take(v), report);
    }
    Ok(out)
}

/// The longest line of a GPS CSV (a row is a few dozen bytes; a file with no line breaks would
/// otherwise be read into memory whole).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A reader that fails once a line grows past [`MAX_LINE_BYTES`].
struct LineCap<R> {
    inner: R,
    run: usize,
}

impl<R> LineCap<R> {
    fn new(inner: R) -> Self {
        LineCap { inner, run: 0 }
    }
}

impl<R: std::io::Read> std::io::Read for LineCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            self.run = if b == b'\n' { 0 } else { self.run + 1 };
            if self.run > MAX_LINE_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a line longer than {MAX_LINE_BYTES} bytes"),
                ));
            }
        }
        Ok(n)
    }
}

/// Where each field is in a row.
struct RowColumns {
    id: Option<usize>,
    time: usize,
    lat: usize,
    lon: usize,
    speed: Option<usize>,
    heading: Option<usize>,
}

impl RowColumns {
    /// The columns named by `c` in the header row (a missing one names the flag that renames
    /// it).
    fn find<R: std::io::Read>(
        rdr: &mut csv::Reader<R>,
        c: &Columns,
        path: &Path,
    ) -> Result<RowColumns, DataError> {
        let headers = rdr
            .headers()
            .map_err(|e| DataError::file(path, format!("no header row: {e}")))?
            .clone();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let need = |name: &str, flag: &str| {
            col(name).ok_or_else(|| {
                DataError::field(
                    path,
                    "header",
                    name,
                    format!(
                        "column `{name}` is missing (columns: {}); rename with {flag}",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        };
        // No id column: the file is one trajectory (id "").
        let ci = if c.id.is_empty() {
            None
        } else {
            Some(need(&c.id, "--id-col")?)
        };
        let (ct, cla, clo) = (
            need(&c.time, "--time-col")?,
            need(&c.lat, "--lat-col")?,
            need(&c.lon, "--lon-col")?,
        );
        let (cs, ch) = (col(&c.speed), col(&c.heading));
        Ok(RowColumns {
            id: ci,
            time: ct,
            lat: cla,
            lon: clo,
            speed: cs,
            heading: ch,
        })
    }
}

/// One row: its trajectory id and fix, checked (errors name the row and the column).
fn parse_row(
    row: &csv::StringRecord,
    cols: &RowColumns,
    c: &Columns,
    clock: &Clock,
    path: &Path,
    key: &str,
) -> Result<(String, RawFix), DataError> {
    let get = |idx: usize, name: &str| -> Result<f64, DataError> {
        let v = row.get(idx).unwrap_or("");
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                DataError::field(
                    path,
                    key,
                    name,
                    format!("`{v}` is not finite or not numeric"),
                )
            })
    };
    let opt = |idx: Option<usize>, name: &str| -> Result<Option<f32>, DataError> {
        match idx.and_then(|i| row.get(i)).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(_) => get(idx.unwrap(), name).map(|x| Some(x as f32)),
        }
    };
    let lat = get(cols.lat, &c.lat)?;
    let lon = get(cols.lon, &c.lon)?;
    super::check_position(lat, lon, (&c.lat, &c.lon))
        .map_err(|(col, m)| DataError::field(path, key, col, m))?;
    let speed = opt(cols.speed, &c.speed)?;
    if speed.is_some_and(|v| v < 0.0) {
        return Err(DataError::field(path, key, &c.speed, "negative speed"));
    }
    let heading = opt(cols.heading, &c.heading)?.map(|h| h.rem_euclid(360.0));
    let id = cols.id.map_or("", |i| row.get(i).unwrap_or("")).to_string();
    if id.is_empty() && cols.id.is_some() {
        return Err(DataError::field(path, key, &c.id, "empty trajectory id"));
    }
    let t = super::timestamp::parse(row.get(cols.time).unwrap_or(""), clock)
        .map_err(|m| DataError::field(path, key, &c.time, m))?;
    Ok((
        id,
        RawFix {
            t,
            lat,
            lon,
            speed,
            heading,
        },
    ))
}

/// The first local day held out as `test_days`: the last `test_days` share of the days the
/// trajectories start on (never all of them); `i64::MAX` when none is held out.
fn first_held_day(trajs: &BTreeMap<String, Vec<RawFix>>, clock: Clock, test_days: f64) -> i64 {
    let mut days: Vec<i64> = trajs
        .values()
        .filter_map(|v| v.first())
        .map(|f| local_day(f.t, clock))
        .collect();
    days.sort();
    days.dedup();
    let held = ((days.len() as f64 * test_days).floor() as usize).min(days.len().saturating_sub(1));
    days.get(days.len() - held).copied().unwrap_or(i64::MAX)
}

pub fn import(
    input: &Path,
    out: &Path,
    o: &CsvOptions,
    skip_bad: bool,
    force: bool,
) -> anyhow::Result<ImportReport> {
    let shares = [
        ("val_frac", o.val_frac),
        ("test_frac", o.test_frac),
        ("test_days", o.test_days),
    ];
    let clock = super::check_trajectory_import(&o.window, &shares, o.shard_size)?;
    let mut report = ImportReport {
        files: 1,
        ..Default::default()
    };
    let trajs = read(input, &o.columns, &clock, &mut report, skip_bad)?;
    anyhow::ensure!(!trajs.is_empty(), "{}: no trajectories", input.display());
    let first_held = first_held_day(&trajs, clock, o.test_days);
    let spec = super::geolife::spec(&o.window);
    let mut writer = DatasetWriter::new(out, spec, o.shard_size, force)?;
    for (id, fixes) in o.part.select(&trajs) {
        report.records_kept += fixes.len();
        let split = if local_day(fixes[0].t, clock) >= first_held {
            "test_days"
        } else {
            hash_split(o.seed, id, o.val_frac, o.test_frac)
        };
        let (pieces, cuts) = resample(fixes, &o.window);
        report.drop("trajectory cut at a gap (cuts)", cuts);
        let safe = super::key_part(id);
        for (pi, piece) in pieces.iter().enumerate() {
            let (samples, still) = windows(
                piece,
                &o.window,
                clock,
                id,
                &format!("csv{safe}-{pi:03}"),
                Region::Unknown,
            );
            report.drop("window does not move", still);
            for s in &samples {
                writer.add(split, s)?;
                *report.samples.entry(split.to_string()).or_default() += 1;
            }
        }
    }
    let mut generator = o.part.generator(o)?;
    generator["report"] = serde_json::to_value(&report)?;
    writer.finish("gps-csv", generator)?;
    Ok(report)
}
