//! Importers of real public formats into the same sharded datasets as the simulator:
//! GeoLife `.plt` trees, generic GPS CSV, and the Amazon Last Mile Routing Research Challenge.
//! Each reports records read, kept and dropped (with the reason), and stops at the first bad
//! record with an error naming the file, the record and the field, unless `skip_bad`.

pub mod dashcam;
pub mod geolife;
pub mod gps_csv;
pub mod lmrc;
pub mod timestamp;

use crate::data::sample::{Context, Fix, Labels, Region, Sample};
use crate::error::DataError;
use crate::frame::Enu;
use crate::seed as rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// What an import did, for the user and the manifest.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    pub files: usize,
    pub records_read: usize,
    pub records_kept: usize,
    /// Records (or samples) dropped, by reason.
    pub dropped: BTreeMap<String, usize>,
    pub samples: BTreeMap<String, usize>,
    /// Bad records skipped with `--skip-bad` (file, record, field, message).
    pub bad: Vec<String>,
}

impl ImportReport {
    pub fn drop(&mut self, reason: &str, n: usize) {
        if n > 0 {
            *self.dropped.entry(reason.to_string()).or_default() += n;
        }
    }

    /// Handles a bad record: an error, or (with `skip_bad`) a count and a line in the report.
    pub fn bad(&mut self, e: DataError, skip_bad: bool) -> Result<(), DataError> {
        if !skip_bad {
            return Err(e);
        }
        self.drop("bad record", 1);
        self.bad.push(e.to_string());
        Ok(())
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "files read:      {}", self.files);
        let _ = writeln!(s, "records read:    {}", self.records_read);
        let _ = writeln!(s, "records kept:    {}", self.records_kept);
        for (r, n) in &self.dropped {
            let _ = writeln!(s, "  dropped {n:>8}  {r}");
        }
        let total: usize = self.samples.values().sum();
        let _ = writeln!(s, "samples written: {total}");
        for (split, n) in &self.samples {
            let _ = writeln!(s, "  {split:<10} {n:>8}");
        }
        for b in self.bad.iter().take(5) {
            let _ = writeln!(s, "  skipped: {b}");
        }
        if self.bad.len() > 5 {
            let _ = writeln!(s, "  ... and {} more bad records", self.bad.len() - 5);
        }
        s
    }
}

/// A raw fix as read from a file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawFix {
    pub t: f64,
    pub lat: f64,
    pub lon: f64,
    pub speed: Option<f32>,
    pub heading: Option<f32>,
}

/// How trajectories become samples.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct WindowOptions {
    /// Resampling step, seconds.
    pub step_s: f64,
    /// A gap longer than this cuts the trip (no interpolation across it).
    pub max_gap_s: f64,
    pub history_len: usize,
    pub future_len: usize,
    /// Steps between consecutive windows.
    pub stride: usize,
    /// Keep a window only if some point lies this far from the position at t0.
    pub min_move_m: f64,
    /// Local time = UTC + this, hours (for the context's hour and weekday), when `tz` is None.
    pub utc_offset_h: f64,
    /// IANA time zone of the data (e.g. `Asia/Shanghai`): local time with daylight saving.
    pub tz: Option<String>,
}

/// How UTC becomes local time: a fixed offset, or an IANA zone (daylight saving included).
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    Offset(f64),
    Zone(chrono_tz::Tz),
}

impl Clock {
    /// Local (hour in [0, 24), weekday with Monday = 0, day number since 1970-01-01) of a UNIX
    /// time.
    pub fn local(&self, t: f64) -> (f32, u8, i64) {
        let local_s = match self {
            Clock::Offset(h) => t + h * 3600.0,
            Clock::Zone(tz) => {
                use chrono::{Offset, TimeZone};
                let secs = t.floor() as i64;
                let off = chrono::DateTime::from_timestamp(secs, 0)
                    .map(|utc| tz.offset_from_utc_datetime(&utc.naive_utc()).fix())
                    .map_or(0, |o| o.local_minus_utc());
                t + off as f64
            }
        };
        let day = local_s.div_euclid(86_400.0) as i64;
        (
            ((local_s.rem_euclid(86_400.0) / 3600.0) as f32).min(23.999),
            // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
            ((day + 3).rem_euclid(7)) as u8,
            day,
        )
    }

    /// The inverse of [`Clock::local`]: UNIX seconds of a local date-time. In a zone's
    /// daylight-saving overlap the earlier of the two instants; a time its gap skips is an error.
    pub fn utc_of(&self, n: chrono::NaiveDateTime) -> Result<f64, String> {
        use chrono::TimeZone;
        match self {
            Clock::Offset(h) => Ok(unix_seconds(&n.and_utc()) - h * 3600.0),
            Clock::Zone(tz) => tz
                .from_local_datetime(&n)
                .earliest()
                .map(|dt| unix_seconds(&dt))
                .ok_or_else(|| format!("this local time does not exist in {tz} (daylight saving)")),
        }
    }
}

/// UNIX seconds (with the fraction) of a chrono date-time.
pub fn unix_seconds<Tz: chrono::TimeZone>(dt: &chrono::DateTime<Tz>) -> f64 {
    dt.timestamp() as f64 + dt.timestamp_subsec_nanos() as f64 * 1e-9
}

/// Parses an IANA time zone name, naming the flag.
pub fn parse_tz(name: &str) -> anyhow::Result<chrono_tz::Tz> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|e| anyhow::anyhow!("--tz `{name}`: not an IANA time zone ({e})"))
}

/// The latest time an importer accepts (2100-01-01 UTC), UNIX seconds; the earliest is 1970.
pub const MAX_UNIX_S: f64 = 4_102_444_800.0;

/// A time read from a file, checked: finite and between 1970 and 2100 (UNIX seconds).
pub fn check_unix_time(t: f64) -> Result<f64, String> {
    if t.is_finite() && (0.0..=MAX_UNIX_S).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "`{t}` is not a UNIX time in seconds between 1970 and 2100"
        ))
    }
}

/// Interpolated steps allowed across one gap (`max_gap_s / step_s`), so that flags cannot make
/// one pair of fixes expand into millions of points.
pub const MAX_STEPS_PER_GAP: f64 = 10_000.0;

impl WindowOptions {
    /// Checks every window flag's range, naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        let real = |flag: &str, v: f64, lo: f64, hi: f64| -> anyhow::Result<()> {
            anyhow::ensure!(
                v.is_finite() && (lo..=hi).contains(&v),
                "{flag} {v} is outside [{lo}, {hi}]"
            );
            Ok(())
        };
        let int = |flag: &str, v: usize, lo: usize, hi: usize| -> anyhow::Result<()> {
            anyhow::ensure!((lo..=hi).contains(&v), "{flag} {v} is outside [{lo}, {hi}]");
            Ok(())
        };
        real("--step", self.step_s, 0.01, 3600.0)?;
        real(
            "--max-gap",
            self.max_gap_s,
            self.step_s,
            self.step_s * MAX_STEPS_PER_GAP,
        )?;
        int("--history", self.history_len, 2, 10_000)?;
        int("--future", self.future_len, 1, 10_000)?;
        int("--stride", self.stride, 1, 1_000_000)?;
        real("min_move_m", self.min_move_m, 0.0, 1e6)?;
        real("--utc-offset", self.utc_offset_h, -14.0, 14.0)?;
        self.clock()?;
        Ok(())
    }

    /// The clock of these options: the IANA zone when given, else the fixed offset.
    pub fn clock(&self) -> anyhow::Result<Clock> {
        Ok(match &self.tz {
            Some(name) => Clock::Zone(parse_tz(name)?),
            None => Clock::Offset(self.utc_offset_h),
        })
    }
}

/// Checks that a held-out share is in [0, 1], naming the flag.
pub fn check_share(flag: &str, v: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        v.is_finite() && (0.0..=1.0).contains(&v),
        "{flag} {v} is outside [0, 1]"
    );
    Ok(())
}

/// Checks a trajectory import's options (window flags, held-out shares, shard size) and returns
/// its clock.
pub fn check_trajectory_import(
    window: &WindowOptions,
    shares: &[(&str, f64)],
    shard_size: usize,
) -> anyhow::Result<Clock> {
    window.validate()?;
    for (name, v) in shares {
        check_share(name, *v)?;
    }
    check_shard_size(shard_size)?;
    window.clock()
}

/// Checks a shard size (samples per shard), naming the flag.
pub fn check_shard_size(v: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1_000_000).contains(&v),
        "--shard-size {v} is outside [1, 1000000]"
    );
    Ok(())
}

fn lerp_angle(a: f32, b: f32, u: f64) -> f32 {
    let d = ((b - a + 540.0) % 360.0) - 180.0;
    (a + d * u as f32).rem_euclid(360.0)
}

/// Cuts a time-sorted trajectory at gaps and resamples each piece to the step (linear in
/// position and speed, circular in heading). Returns the pieces and the number of cuts.
pub fn resample(fixes: &[RawFix], o: &WindowOptions) -> (Vec<Vec<RawFix>>, usize) {
    let mut pieces: Vec<&[RawFix]> = Vec::new();
    let mut start = 0;
    let mut cuts = 0;
    for i in 1..=fixes.len() {
        if i == fixes.len() || fixes[i].t - fixes[i - 1].t > o.max_gap_s {
            if i < fixes.len() {
                cuts += 1;
            }
            pieces.push(&fixes[start..i]);
            start = i;
        }
    }
    let out = pieces
        .into_iter()
        .filter(|p| p.len() >= 2)
        .map(|p| {
            let mut v = Vec::new();
            let mut j = 0;
            // Times are t0 + k * step (k counted, not summed), so a step too small for the
            // magnitude of t can never stall the loop.
            let span = p[p.len() - 1].t - p[0].t;
            let n = (span / o.step_s + 1e-9).floor().max(0.0) as usize;
            for k in 0..=n {
                let t = p[0].t + k as f64 * o.step_s;
                while j + 1 < p.len() - 1 && p[j + 1].t < t {
                    j += 1;
                }
                let (a, b) = (p[j], p[(j + 1).min(p.len() - 1)]);
                let u = if b.t > a.t {
                    ((t - a.t) / (b.t - a.t)).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                v.push(RawFix {
                    t,
                    lat: a.lat + u * (b.lat - a.lat),
                    lon: a.lon + u * (b.lon - a.lon),
                    speed: match (a.speed, b.speed) {
                        (Some(x), Some(y)) => Some(x + (y - x) * u as f32),
                        _ => None,
                    },
                    heading: match (a.heading, b.heading) {
                        (Some(x), Some(y)) => Some(lerp_angle(x, y, u)),
                        _ => None,
                    },
                });
            }
            v
        })
        .filter(|v| v.len() >= 2)
        .collect();
    (out, cuts)
}

/// Opens an input file that must be a regular file (a FIFO or a device would block or never
/// end), with an error naming it.
pub fn open_regular(path: &Path) -> Result<std::fs::File, DataError> {
    let md =
        std::fs::metadata(path).map_err(|e| DataError::file(path, format!("cannot read: {e}")))?;
    if !md.is_file() {
        return Err(DataError::file(path, "not a regular file"));
    }
    std::fs::File::open(path).map_err(|e| DataError::file(path, format!("cannot read: {e}")))
}

/// An id (a trajectory id, a folder name) as a part of a sample key: letters, digits, `-` and
/// `_` as they are, every other byte as `~` and two hex digits (`a b` -> `a~20b`, `a/b` ->
/// `a~2fb`). Distinct ids stay distinct keys, and a key holds no `.` or `/`.
pub fn key_part(id: &str) -> String {
    crate::util::escape(id, |b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

/// A position an importer may keep: a latitude the local frame can represent and a longitude.
/// Else the name (of `names`: latitude's, longitude's) of the coordinate that is wrong, and why.
pub(crate) fn check_position<'a>(
    lat: f64,
    lon: f64,
    (lat_name, lon_name): (&'a str, &'a str),
) -> Result<(), (&'a str, String)> {
    let max = crate::data::sample::MAX_ABS_LAT;
    if !(-max..=max).contains(&lat) {
        return Err((
            lat_name,
            format!(
                "{lat} is not a latitude in [-85, 85] (the local frame cannot represent the polar caps)"
            ),
        ));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err((lon_name, format!("{lon} is not a longitude in [-180, 180]")));
    }
    Ok(())
}

/// Whether any fix of a window is more than `min_move_m` from `now`.
fn moves(window: &[RawFix], now: RawFix, min_move_m: f64) -> bool {
    let enu = Enu::new(now.lat, now.lon);
    window.iter().any(|p| {
        let (e, n) = enu.to_en(p.lat, p.lon);
        (e * e + n * n).sqrt() > min_move_m
    })
}

impl RawFix {
    /// The fix as a sample's history holds it (positions to 7 decimals, about a centimetre).
    fn fix(&self) -> Fix {
        Fix {
            t: self.t,
            lat: round7(self.lat),
            lon: round7(self.lon),
            speed: self.speed,
            heading: self.heading,
            accuracy: None,
        }
    }
}

/// Trajectory samples (history -> future) over a resampled piece. Returns the samples and the
/// number of windows dropped for not moving.
pub fn windows(
    piece: &[RawFix],
    o: &WindowOptions,
    clock: Clock,
    route_id: &str,
    key_prefix: &str,
    region: Region,
) -> (Vec<Sample>, usize) {
    let (h, f) = (o.history_len, o.future_len);
    let mut out = Vec::new();
    let mut still = 0;
    if piece.len() < h + f {
        return (out, 0);
    }
    let mut i = h - 1;
    while i + f < piece.len() {
        let now = piece[i];
        if !moves(&piece[i + 1 - h..=i + f], now, o.min_move_m) {
            still += 1;
            i += o.stride.max(1);
            continue;
        }
        let (hour, weekday, _) = clock.local(now.t);
        let history = piece[i + 1 - h..=i].iter().map(RawFix::fix).collect();
        out.push(Sample {
            video: None,
            key: format!("{key_prefix}-{i:05}"),
            route_id: route_id.to_string(),
            region,
            t0: now.t,
            context: Context {
                hour,
                weekday,
                ..Default::default()
            },
            history,
            imu: None,
            images: Vec::new(),
            stops: Vec::new(),
            horizons_s: Vec::new(),
            plan_route: false,
            target: Some(Labels {
                future_step_s: Some(o.step_s as f32),
                future: piece[i + 1..=i + f]
                    .iter()
                    .map(|p| [round7(p.lat), round7(p.lon)])
                    .collect(),
                ..Default::default()
            }),
        });
        i += o.stride.max(1);
    }
    (out, still)
}

/// The local day number (days since 1970-01-01) of a time.
pub fn local_day(t: f64, clock: Clock) -> i64 {
    clock.local(t).2
}

/// Deterministic split of a unit (a route, a user-day, a trajectory) by hashing its id:
/// `test_frac`, then `val_frac`, then train.
pub fn hash_split(seed: u64, id: &str, val_frac: f64, test_frac: f64) -> &'static str {
    let mut h = rng::mix(seed);
    for b in id.bytes() {
        h = rng::mix(h ^ b as u64);
    }
    let u = rng::unit(h);
    if u < test_frac {
        "test"
    } else if u < test_frac + val_frac {
        "val"
    } else {
        "train"
    }
}

/// Parses `YYYY-MM-DD` and `HH:MM:SS[.fff]` (UTC) into UNIX seconds, with chrono: 31 February,
/// `NaN` or a time outside 1970-2100 is None.
pub fn parse_date_time(date: &str, time: &str) -> Option<f64> {
    let d = chrono::NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").ok()?;
    let t = chrono::NaiveTime::parse_from_str(time.trim(), "%H:%M:%S%.f").ok()?;
    check_unix_time(unix_seconds(&d.and_time(t).and_utc())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(parse_date_time("1970-01-01", "00:00:00"), Some(0.0));
        assert_eq!(
            parse_date_time("2008-10-23", "02:53:04"),
            Some(1_224_730_384.0)
        );
        assert_eq!(parse_date_time("2008-13-23", "02:53:04"), None);
        assert_eq!(
            parse_date_time("2009-02-31", "02:53:04"),
            None,
            "31 February"
        );
        assert_eq!(parse_date_time("2009-02-28", "NaN"), None);
        assert_eq!(parse_date_time("2009-02-28", "02:53:NaN"), None);
        assert_eq!(
            parse_date_time("1969-12-31", "23:59:59"),
            None,
            "before 1970"
        );
        assert_eq!(
            parse_date_time("2008-10-23", "02:53:04.5"),
            Some(1_224_730_384.5)
        );
    }

    #[test]
    fn clocks_follow_the_zone_and_its_daylight_saving() {
        // 2018-07-20 14:37:26 UTC: 07:37 in Los Angeles (PDT), 06:37 with a fixed -8 h.
        let t = parse_date_time("2018-07-20", "14:37:26").unwrap();
        let la = Clock::Zone(parse_tz("America/Los_Angeles").unwrap()).local(t);
        assert!((la.0 - (7.0 + 37.0 / 60.0 + 26.0 / 3600.0)).abs() < 1e-4);
        assert_eq!(la.1, 4, "a Friday");
        let fixed = Clock::Offset(-8.0).local(t);
        assert!((fixed.0 - la.0 + 1.0).abs() < 1e-4);
        // In January Los Angeles is at -8 h.
        let w = parse_date_time("2018-01-20", "14:37:26").unwrap();
        let la = Clock::Zone(parse_tz("America/Los_Angeles").unwrap()).local(w);
        assert_eq!(la, Clock::Offset(-8.0).local(w));
        assert!(parse_tz("Mars/Olympus").is_err());
    }

    #[test]
    fn gaps_cut_and_resampling_interpolates() {
        let o = WindowOptions {
            step_s: 5.0,
            max_gap_s: 30.0,
            history_len: 2,
            future_len: 2,
            stride: 1,
            min_move_m: 5.0,
            utc_offset_h: 0.0,
            tz: None,
        };
        let f = |t: f64, lat: f64| RawFix {
            t,
            lat,
            lon: 0.0,
            speed: None,
            heading: None,
        };
        let fixes = vec![
            f(0.0, 0.0),
            f(10.0, 0.001),
            f(100.0, 0.002),
            f(103.0, 0.003),
            f(110.0, 0.004),
        ];
        let (pieces, cuts) = resample(&fixes, &o);
        assert_eq!(cuts, 1);
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[0].iter().map(|p| p.t).collect::<Vec<_>>(),
            vec![0.0, 5.0, 10.0]
        );
        assert!((pieces[0][1].lat - 0.0005).abs() < 1e-12);
        assert_eq!(
            pieces[1].iter().map(|p| p.t).collect::<Vec<_>>(),
            vec![100.0, 105.0, 110.0]
        );
        // 105 s lies between 103 (0.003) and 110 (0.004).
        assert!((pieces[1][1].lat - (0.003 + 0.001 * 2.0 / 7.0)).abs() < 1e-12);
    }
}
