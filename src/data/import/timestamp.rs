//! A GPS CSV's timestamps: UNIX seconds, or ISO 8601 date-times, with an offset (`Z`, `+08:00`,
//! `+0800`) or without one (then in the import's local time: `--tz` or `--utc-offset`).

use super::{Clock, check_unix_time, unix_seconds};
use chrono::{DateTime, NaiveDateTime};

/// Date-time layouts without an offset (a space may stand for the `T`).
const NAIVE: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"];

/// UNIX seconds of a timestamp cell; the error says what was expected.
pub fn parse(v: &str, clock: &Clock) -> Result<f64, String> {
    if let Ok(t) = v.parse::<f64>() {
        return check_unix_time(t);
    }
    // ISO 8601 allows a space for the `T` (as SQL and pandas write them).
    let iso: String = v
        .char_indices()
        .map(|(i, c)| if i == 10 && c == ' ' { 'T' } else { c })
        .collect();
    let t = if let Ok(dt) = DateTime::parse_from_rfc3339(&iso)
        .or_else(|_| DateTime::parse_from_str(&iso, "%Y-%m-%dT%H:%M:%S%.f%z"))
    {
        unix_seconds(&dt)
    } else if let Some(n) = NAIVE
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&iso, f).ok())
    {
        clock.utc_of(n).map_err(|e| format!("`{v}`: {e}"))?
    } else {
        return Err(format!(
            "`{v}` is neither UNIX seconds nor an ISO 8601 date-time (2008-10-23T02:53:04Z, 2008-10-23 10:53:04+08:00, or 2008-10-23 10:53:04 in the --tz / --utc-offset time)"
        ));
    };
    check_unix_time(t).map_err(|_| format!("`{v}` is not between 1970 and 2100"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: f64 = 1_224_730_384.0; // 2008-10-23 02:53:04 UTC

    #[test]
    fn unix_seconds_and_iso_date_times() {
        let utc = Clock::Offset(0.0);
        assert_eq!(parse("1224730384", &utc), Ok(T));
        assert_eq!(parse("1224730384.5", &utc), Ok(T + 0.5));
        for v in [
            "2008-10-23T02:53:04Z",
            "2008-10-23 02:53:04Z",
            "2008-10-23T10:53:04+08:00",
            "2008-10-23 10:53:04+0800",
            "2008-10-23T02:53:04",
        ] {
            assert_eq!(parse(v, &utc), Ok(T), "{v}");
        }
        assert_eq!(parse("2008-10-23T02:53:04.250Z", &utc), Ok(T + 0.25));
        assert_eq!(parse("2008-10-23 02:53", &utc), Ok(T - 4.0));
    }

    #[test]
    fn local_date_times_follow_the_clock() {
        // Without an offset a date-time is local: Beijing (+8) or a fixed offset.
        let bj = Clock::Zone("Asia/Shanghai".parse().unwrap());
        assert_eq!(parse("2008-10-23 10:53:04", &bj), Ok(T));
        assert_eq!(parse("2008-10-23 10:53:04", &Clock::Offset(8.0)), Ok(T));
        // An explicit offset wins over the clock.
        assert_eq!(parse("2008-10-23T02:53:04Z", &bj), Ok(T));
        // Berlin: 2021-03-28 02:30 does not exist; 2021-10-31 02:30 happens twice (the first,
        // still summer time at +2 h, is taken).
        let berlin = Clock::Zone("Europe/Berlin".parse().unwrap());
        let e = parse("2021-03-28 02:30:00", &berlin).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(
            parse("2021-10-31 02:30:00", &berlin),
            parse("2021-10-31T00:30:00Z", &berlin)
        );
    }

    #[test]
    fn bad_timestamps_say_what_is_expected() {
        let utc = Clock::Offset(0.0);
        for v in [
            "",
            "yesterday",
            "2008-13-23T02:53:04Z",
            "NaN",
            "23/10/2008 02:53",
        ] {
            let e = parse(v, &utc).unwrap_err();
            assert!(e.contains("UNIX") || e.contains("1970"), "{v}: {e}");
        }
        let e = parse("1899-12-30T00:00:00Z", &utc).unwrap_err();
        assert!(e.contains("1970 and 2100"), "{e}");
    }
}
