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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
