//! Reads the few fields the load generator needs from a message by byte search, with no
//! JSON parse: the envelope `type`, the envelope `timestamp` and `data.seq`. The server
//! writes compact JSON with `type` and `timestamp` ahead of `data`, and a result's data
//! holds no other `"timestamp"` or `"seq"` key, so the first match of each is the right one.

/// What a text message is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A result: its `seq` and its envelope timestamp in nanoseconds since the Unix epoch.
    Result { seq: u64, ts_ns: i64 },
    /// A result whose `seq` or `timestamp` could not be read.
    BadResult,
    /// Any other type (`subscribed`, `status`, `pong`, `error`, ...).
    Other(&'a [u8]),
    /// No `"type":"..."` at all.
    Untyped,
}

const TYPE: &[u8] = b"\"type\":\"";
const TIMESTAMP: &[u8] = b"\"timestamp\":\"";
const SEQ: &[u8] = b"\"seq\":";

/// Classifies one text message. Always inlined: it is most of the per-frame path, which
/// is fastest as one function (see `loadgen::conn::frames`).
#[inline(always)]
pub fn classify(msg: &[u8]) -> Kind<'_> {
    let Some(t) = find(msg, TYPE) else {
        return Kind::Untyped;
    };
    let value = &msg[t + TYPE.len()..];
    if !value.starts_with(b"result\"") {
        let end = value.iter().position(|&b| b == b'"').unwrap_or(value.len());
        return Kind::Other(&value[..end]);
    }
    let ts = find(msg, TIMESTAMP).and_then(|i| parse_rfc3339(&msg[i + TIMESTAMP.len()..]));
    let seq = find(msg, SEQ).and_then(|i| parse_u64(&msg[i + SEQ.len()..]));
    match (seq, ts) {
        (Some(seq), Some(ts_ns)) => Kind::Result { seq, ts_ns },
        _ => Kind::BadResult,
    }
}

/// The first position of `needle` (non-empty) in `hay`. Matches sit a few dozen bytes
/// into a message, so a scan for the first byte plus a compare beats anything cleverer.
#[inline]
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last_start {
        let p = hay[i..=last_start].iter().position(|&b| b == first)?;
        i += p;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// A JSON unsigned integer at the start of `s` (leading spaces allowed); `None` when
/// there are no digits or it overflows.
#[inline]
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let start = s.iter().position(|&b| b != b' ')?;
    let mut v: u64 = 0;
    let mut digits = 0;
    for &b in &s[start..] {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
        digits += 1;
    }
    (digits > 0).then_some(v)
}

#[inline]
fn digits2(s: &[u8], at: usize) -> Option<i64> {
    let a = s[at].wrapping_sub(b'0');
    let b = s[at + 1].wrapping_sub(b'0');
    (a <= 9 && b <= 9).then_some(i64::from(a) * 10 + i64::from(b))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01, the inverse of `days_from_civil`.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// An RFC 3339 time at the start of `s` (`YYYY-MM-DDTHH:MM:SS`, an optional fraction of up
/// to 9 digits, then `Z` or `+HH:MM`/`-HH:MM`) as nanoseconds since the Unix epoch. Fixed
/// positions, no allocation; anything malformed gives `None`.
#[inline]
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let year = digits2(s, 0)? * 100 + digits2(s, 2)?;
    let (mon, day) = (digits2(s, 5)?, digits2(s, 8)?);
    let (h, min, sec) = (digits2(s, 11)?, digits2(s, 14)?, digits2(s, 17)?);
    if !(1..=12).contains(&mon) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if s[i] == b'.' {
        i += 1;
        let mut scale = 100_000_000i64;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            // Digits past the ninth are below a nanosecond: read and dropped.
            nanos += i64::from(s[i] - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_s = match *s.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            if s.len() < i + 6 || s[i + 3] != b':' {
                return None;
            }
            let off = digits2(s, i + 1)? * 3600 + digits2(s, i + 4)? * 60;
            if sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, mon, day);
    let secs = days * 86_400 + h * 3600 + min * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Writes `ns` since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (30 bytes), the
/// server's format; the self-test's sender stamps its frames with it.
pub fn format_rfc3339(ns: i64, out: &mut [u8; 30]) {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for k in (0..width).rev() {
            out[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y.clamp(0, 9999), 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, sod / 3600, 2);
    put(14, sod / 60 % 60, 2);
    put(17, sod % 60, 2);
    put(20, frac, 9);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[29] = b'Z';
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = br#"{"type":"result","timestamp":"2026-11-28T06:23:33.842294182Z","data":{"seq":7,"event":"new","symbol":"SHM","scan":"firehose","score":8.75,"price":342.92,"change_pct":2.96,"volume":4849400,"volume_ratio":9.4,"rsi":85.03,"source_ts":"2026-11-28T06:23:33.842292510Z","adhoc":false,"subscriptions":["default"]}}"#;

    // `date -u -d 2026-11-28T06:23:33Z +%s` prints 1795847013.
    const SAMPLE_NS: i64 = 1_795_847_013_842_294_182;

    #[test]
    fn timestamp_parses_to_the_known_instant() {
        assert_eq!(
            parse_rfc3339(b"2026-11-28T06:23:33.842294182Z\""),
            Some(SAMPLE_NS)
        );
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339(b"1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2026-11-28T08:23:33.842294182+02:00"),
            Some(SAMPLE_NS)
        );
        for bad in [
            &b"2026-11-28T06:23:33.842294182"[..],
            b"2026-13-28T06:23:33Z",
            b"2026-11-28T06:23:3xZ",
            b"2026-11-28T06:23:33.Z",
            b"2026-11-28",
            b"",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn format_and_parse_round_trip() {
        let mut out = [0u8; 30];
        format_rfc3339(SAMPLE_NS, &mut out);
        assert_eq!(&out, b"2026-11-28T06:23:33.842294182Z");
        for ns in [0, 951_868_800_000_000_001, 4_102_444_799_999_999_999] {
            format_rfc3339(ns, &mut out);
            assert_eq!(parse_rfc3339(&out), Some(ns));
        }
    }

    #[test]
    fn classify_reads_seq_and_envelope_timestamp() {
        assert_eq!(
            classify(SAMPLE),
            Kind::Result {
                seq: 7,
                ts_ns: SAMPLE_NS
            }
        );
        let sub = br#"{"type":"subscribed","timestamp":"2026-11-28T06:23:33.842294182Z","data":{"seq":1}}"#;
        assert_eq!(classify(sub), Kind::Other(b"subscribed"));
        assert_eq!(classify(b"{}"), Kind::Untyped);
        assert_eq!(
            classify(br#"{"type":"result","data":{"seq":1}}"#),
            Kind::BadResult
        );
        assert_eq!(
            classify(br#"{"type":"result","timestamp":"2026-11-28T06:23:33Z","data":{"seq":x}}"#),
            Kind::BadResult
        );
        // Truncated anywhere, nothing panics.
        for cut in 0..SAMPLE.len() {
            let _ = classify(&SAMPLE[..cut]);
        }
    }

    #[test]
    fn find_and_integers() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"aaab", b"ab"), Some(2));
        assert_eq!(parse_u64(b"123,"), Some(123));
        assert_eq!(parse_u64(b" 42}"), Some(42));
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
    }
}
