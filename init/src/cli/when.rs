//! Times on the command line (`--since WHEN`) and in the output, in UTC, without a calendar
//! crate.
//!
//! WHEN is one of: how long ago (`30s`, `5m`, `2h`, `1d`, or a sum such as `1h30m`), an
//! RFC 3339 time (`2026-11-28T18:00:00Z`, fractions and numeric offsets allowed), or Unix
//! seconds (`1795888800`).

use std::time::Duration;

/// A point in time given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// That long before now.
    Ago(Duration),
    /// Milliseconds since the Unix epoch.
    At(i64),
}

impl When {
    /// Milliseconds since the Unix epoch, given the current time in the same unit.
    #[must_use]
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            When::Ago(d) => now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            When::At(ms) => ms,
        }
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// Parses WHEN; the error is a one-line reason.
pub fn parse_when(s: &str) -> Result<When, String> {
    let bad = |why: &str| format!("--since `{s}`: {why}");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().map_err(|_| bad("too large"))?;
        return secs
            .checked_mul(1000)
            .map(When::At)
            .ok_or_else(|| bad("too large"));
    }
    if s.bytes().next().is_some_and(|b| b.is_ascii_digit()) && s.len() >= 10 && s.contains('-') {
        return parse_rfc3339(s).map(When::At).map_err(|why| bad(&why));
    }
    parse_ago(s)
        .map(When::Ago)
        .ok_or_else(|| bad("not a duration (30s, 5m, 2h, 1d), an RFC 3339 time or Unix seconds"))
}

/// `30s`, `5m`, `2h`, `1d`, `1h30m`: a sum of numbers each followed by a unit.
fn parse_ago(s: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        total = total.checked_add(num.take()?.checked_mul(unit)?)?;
    }
    if num.is_some() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the era-based algorithm published by
/// Howard Hinnant, in its well-known form).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A fixed-width run of ASCII digits at `at`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = b.get(at..at.checked_add(n)?)?;
    if !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(part).ok()?.parse().ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let b = s.as_bytes();
    let field = |at, n, what: &str| digits(b, at, n).ok_or_else(|| format!("bad {what}"));
    let sep = |at: usize, want: &[u8], what: &str| match b.get(at) {
        Some(c) if want.contains(c) => Ok(()),
        _ => Err(format!("expected {what} at byte {at}")),
    };
    let year = field(0, 4, "year")?;
    sep(4, b"-", "`-`")?;
    let month = field(5, 2, "month")?;
    sep(7, b"-", "`-`")?;
    let day = field(8, 2, "day")?;
    sep(10, b"Tt", "`T`")?;
    let hour = field(11, 2, "hour")?;
    sep(13, b":", "`:`")?;
    let minute = field(14, 2, "minute")?;
    sep(16, b":", "`:`")?;
    let second = field(17, 2, "second")?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date".to_owned());
    }
    // 60 is a leap second: count it as the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day".to_owned());
    }
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b.get(at).map_or(0, |d| d - b'0'));
            }
            at += 1;
        }
        if at == start {
            return Err("empty fraction of a second".to_owned());
        }
        for _ in (at - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&c @ (b'+' | b'-')) => {
            let oh = field(at + 1, 2, "offset hours")?;
            sep(at + 3, b":", "`:` in the offset")?;
            let om = field(at + 4, 2, "offset minutes")?;
            if oh > 23 || om > 59 {
                return Err("bad offset".to_owned());
            }
            at += 6;
            let m = oh * 60 + om;
            if c == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return Err("needs a zone: `Z` or an offset such as +01:00".to_owned()),
    };
    if at != b.len() {
        return Err("trailing characters".to_owned());
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Ok(secs * 1000 + millis)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[must_use]
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_forms() {
        let cases: &[(&str, When)] = &[
            ("30s", When::Ago(Duration::from_secs(30))),
            ("5m", When::Ago(Duration::from_secs(300))),
            ("2h", When::Ago(Duration::from_secs(7200))),
            ("1d", When::Ago(Duration::from_secs(86_400))),
            ("1w", When::Ago(Duration::from_secs(604_800))),
            ("1h30m", When::Ago(Duration::from_secs(5400))),
            ("0s", When::Ago(Duration::ZERO)),
            ("1795888800", When::At(1_795_888_800_000)),
            ("0", When::At(0)),
            ("2026-11-28T18:00:00Z", When::At(1_795_888_800_000)),
            ("2026-11-28t18:00:00z", When::At(1_795_888_800_000)),
            ("2026-11-28T18:00:00.5Z", When::At(1_795_888_800_500)),
            ("2026-11-28T18:00:00.123456Z", When::At(1_795_888_800_123)),
            ("2026-11-28T19:00:00+01:00", When::At(1_795_888_800_000)),
            ("2026-11-28T17:30:00-00:30", When::At(1_795_888_800_000)),
            ("1970-01-01T00:00:00Z", When::At(0)),
            ("1969-12-31T23:59:59Z", When::At(-1000)),
            ("2000-02-29T00:00:00Z", When::At(951_782_400_000)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_when(s), Ok(*want), "{s}");
        }
    }

    #[test]
    fn bad_whens() {
        for s in [
            "",
            "yesterday",
            "5x",
            "m",
            "5m3",
            "-5m",
            "1.5h",
            "2026-11-28",
            "2026-11-28T18:00:00",
            "2026-11-28 18:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T18:60:00Z",
            "2026-11-28T18:00:00.Z",
            "2026-11-28T18:00:00+1:00",
            "2026-11-28T18:00:00Zjunk",
            "99999999999999999999",
            "99999999999999999999s",
        ] {
            assert!(parse_when(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn resolve() {
        let now = 1_795_888_800_000;
        assert_eq!(
            When::Ago(Duration::from_secs(300)).resolve(now),
            now - 300_000
        );
        assert_eq!(When::At(42).resolve(now), 42);
        assert_eq!(When::Ago(Duration::MAX).resolve(now), now - i64::MAX);
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_795_888_800_123),
            "2026-11-28T18:00:00.123Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_rfc3339_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        // Every day over a few centuries survives a round trip.
        let mut ms = days_from_civil(1900, 1, 1) * MS_PER_DAY + 45_296_789;
        let end = days_from_civil(2300, 1, 1) * MS_PER_DAY;
        while ms < end {
            let s = format_rfc3339_ms(ms);
            assert_eq!(parse_rfc3339(&s), Ok(ms), "{s}");
            ms += MS_PER_DAY;
        }
    }
}
