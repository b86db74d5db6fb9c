//! Calendar days without a time zone database: days since 1970-01-01 and back (proleptic
//! Gregorian, Howard Hinnant's algorithms), for the ledger's days and for timestamps upstreams
//! send (`2026-12-07T19:00:00Z`).

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month 1–12, day) → days since 1970-01-01 (the inverse of [`civil_from_days`] for
/// valid dates).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → `YYYY-MM-DD`.
pub fn day_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD` → days since 1970-01-01 (the inverse of [`day_string`]); `None` if malformed.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // reject 2025-02-31 and the like
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// An RFC 3339 UTC time (`2026-12-07T19:00:00Z`, fractions of a second ignored) → seconds since
/// 1970-01-01; `None` if malformed or before 1970.
pub fn unix_secs(t: &str) -> Option<u64> {
    let (day, time) = t.trim().split_once('T')?;
    let days = parse_day(day)?;
    let time = time.strip_suffix('Z')?;
    let mut hms = time.splitn(3, ':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.split('.').next()?.parse().ok()?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..61).contains(&s) {
        return None;
    }
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
}

/// Milliseconds since 1970-01-01 → an RFC 3339 UTC time to the millisecond
/// (`2026-12-07T19:00:00.250Z`), which [`unix_secs`] reads back.
pub fn rfc3339_ms(ms: i64) -> String {
    const DAY_MS: i64 = 86_400_000;
    let t = ms.rem_euclid(DAY_MS);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        day_string(ms.div_euclid(DAY_MS)),
        t / 3_600_000,
        t / 60_000 % 60,
        t / 1000 % 60,
        t % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3339_times_are_read_to_the_second() {
        assert_eq!(unix_secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_secs("2026-12-07T19:00:00Z"), Some(1_796_670_000));
        assert_eq!(unix_secs("2024-02-29T12:34:56.789Z"), Some(1_709_210_096));
        assert_eq!(unix_secs("2025-02-31T00:00:00Z"), None);
        assert_eq!(unix_secs("2026-12-07T19:00:00+01:00"), None);
        assert_eq!(unix_secs("not a time"), None);
    }

    #[test]
    fn rfc_3339_times_are_written_to_the_millisecond_and_read_back() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        let t = 1_796_670_000_250;
        assert_eq!(unix_secs(&rfc3339_ms(t)), Some(1_796_670_000));
    }
}
