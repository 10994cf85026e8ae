//! RFC 3339 timestamps as the protocol writes them: UTC, nine fractional digits, `Z`.
//!
//! Every message carries one, so this is the single place that formats them; it never
//! allocates when given a buffer.

use std::io::Write;
use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// `2026-11-28T09:30:00.123456789Z`: fixed width, so clients can slice it and so the
/// byte length of a message never depends on the instant.
const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Appends the timestamp of `at` to `out`. Times outside the years 1970 to 9999 are
/// clamped to those ends, so the width stays fixed and nothing can panic.
pub fn write_rfc3339(out: &mut Vec<u8>, at: SystemTime) {
    const LAST: &[u8] = b"9999-12-31T23:59:59.999999999Z";
    let nanos = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    match OffsetDateTime::from_unix_timestamp_nanos(nanos as i128) {
        Ok(t) if t.year() <= 9999 => {
            // Writing into a Vec cannot fail; fall back to the epoch if it ever does.
            if t.format_into(out, FORMAT).is_err() {
                let _ = out.write_all(b"1970-01-01T00:00:00.000000000Z");
            }
        }
        _ => out.extend_from_slice(LAST),
    }
}

/// The timestamp of `at` as a string.
pub fn rfc3339(at: SystemTime) -> String {
    let mut out = Vec::with_capacity(30);
    write_rfc3339(&mut out, at);
    // The format only emits ASCII digits and separators.
    String::from_utf8(out).unwrap_or_default()
}

/// Reads a data source's time: RFC 3339 (`2024-01-02T09:30:00Z`, any offset), a date
/// and time taken as UTC (`2024-01-02 09:30:00`, seconds optional), or a date alone
/// (`2024-01-02` or `20240102`, midnight UTC). Times outside the years 1970 to 9999
/// (in UTC) are refused: they cannot be written back.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let t = parse_any(s)?;
    (1970..=9999)
        .contains(&t.to_offset(time::UtcOffset::UTC).year())
        .then(|| t.into())
}

fn parse_any(s: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    use time::{Date, PrimitiveDateTime};
    const DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");
    const COMPACT_DATE: &[BorrowedFormatItem<'static>] =
        format_description!("[year repr:full][month][day]");
    const DATE_TIME: &[BorrowedFormatItem<'static>] = format_description!(
        "[year]-[month]-[day][first [T][ ]][hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    if let Ok(t) = PrimitiveDateTime::parse(s, DATE_TIME) {
        return Some(t.assume_utc());
    }
    Date::parse(s, DATE)
        .or_else(|_| Date::parse(s, COMPACT_DATE))
        .ok()
        .map(|d| d.midnight().assume_utc())
}

/// Seconds since the Unix epoch (fractions allowed) as a time, if finite, positive and
/// before the year 10000.
pub fn from_unix_seconds(secs: f64) -> Option<SystemTime> {
    (0.0..253_402_300_800.0)
        .contains(&secs)
        .then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn parses_the_usual_data_times() {
        let at = |secs| Some(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(parse_time("2024-01-02"), at(1_704_153_600));
        assert_eq!(parse_time("2024-01-02 09:30"), at(1_704_187_800));
        assert_eq!(parse_time("2024-01-02 09:30:00"), at(1_704_187_800));
        assert_eq!(parse_time("2024-01-02T09:30:00"), at(1_704_187_800));
        assert_eq!(parse_time("2024-01-02T09:30:00Z"), at(1_704_187_800));
        assert_eq!(parse_time("2024-01-02T10:30:00+01:00"), at(1_704_187_800));
        assert_eq!(
            parse_time("2024-01-02T09:30:00.5Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_704_187_800_500))
        );
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-01-02 25:00",
            "1704187800",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(from_unix_seconds(1_704_187_800.0), at(1_704_187_800));
        assert_eq!(from_unix_seconds(f64::NAN), None);
        assert_eq!(from_unix_seconds(-1.0), None);
    }

    #[test]
    fn times_past_the_format_are_clamped_not_a_panic() {
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999999999Z");
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn formats_with_nanoseconds_and_z() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (1_795_858_200, 123_456_789, "2026-11-28T09:30:00.123456789Z"),
            (1_795_858_200, 5, "2026-11-28T09:30:00.000000005Z"),
        ];
        for (secs, nanos, want) in cases {
            let at = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(rfc3339(at), want);
        }
    }
}
