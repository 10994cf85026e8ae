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

/// Appends the timestamp of `at` to `out`.
pub fn write_rfc3339(out: &mut Vec<u8>, at: SystemTime) {
    let at = OffsetDateTime::from(at);
    // Writing into a Vec cannot fail, and every field of a SystemTime fits the format
    // (years 1970 to 9999 for any clock this will meet); fall back to the epoch if not.
    if at.format_into(out, FORMAT).is_err() {
        let _ = out.write_all(b"1970-01-01T00:00:00.000000000Z");
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
/// (`2024-01-02`, midnight UTC).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    use time::format_description::well_known::Rfc3339;
    use time::{Date, PrimitiveDateTime};
    const DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");
    const DATE_TIME: &[BorrowedFormatItem<'static>] = format_description!(
        "[year]-[month]-[day][first [T][ ]][hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.into());
    }
    if let Ok(t) = PrimitiveDateTime::parse(s, DATE_TIME) {
        return Some(t.assume_utc().into());
    }
    Date::parse(s, DATE)
        .ok()
        .map(|d| d.midnight().assume_utc().into())
}

/// Seconds since the Unix epoch (fractions allowed) as a time, if finite and positive.
pub fn from_unix_seconds(secs: f64) -> Option<SystemTime> {
    (0.0..1e11)
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
