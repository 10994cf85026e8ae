//! A published result as bytes, for a bus between processes: the fields filters read, in
//! a fixed little-endian layout, then the message encoded once. An edge in another
//! process rebuilds the same [`ScanEvent`] without parsing or encoding any JSON.
//!
//! ```text
//! u8 version   u8 scan   u8 kind   u8 flags (1 adhoc, 2 rsi, 4 prior)
//! u64 seq   u64 published (Unix ns)   f64 score, price, change_pct, volume_ratio
//! [f64 rsi]   [f64 × 4 prior: score, price, change_pct, volume_ratio]
//! u16 symbol length, symbol   u32 data_start   u32 length, the encoded message head
//! ```
//!
//! Bytes from outside are checked: a short, unknown or inconsistent entry is an error,
//! never a panic.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{EventKind, FilterValues, Scan, ScanEvent};

const VERSION: u8 = 1;
/// The largest `seq` taken: a billion results a second for a century is below it.
const MAX_SEQ: u64 = 1 << 62;
const ADHOC: u8 = 1;
const RSI: u8 = 2;
const PRIOR: u8 = 4;

/// Why bytes are not a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad result entry: {0}")]
pub struct WireError(pub &'static str);

impl ScanEvent {
    /// Appends this result's bytes.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.adhoc {
            flags |= ADHOC;
        }
        if self.rsi.is_some() {
            flags |= RSI;
        }
        if self.prior.is_some() {
            flags |= PRIOR;
        }
        out.extend_from_slice(&[VERSION, self.scan.code(), kind_byte(self.kind), flags]);
        // A custom scan's number is this process's own: its name travels with it.
        if self.scan.is_custom() {
            let name = self.scan.name().as_bytes();
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&unix_nanos(self.published).to_le_bytes());
        for v in [self.score, self.price, self.change_pct, self.volume_ratio] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(rsi) = self.rsi {
            out.extend_from_slice(&rsi.to_le_bytes());
        }
        if let Some(p) = self.prior {
            for v in [p.score, p.price, p.change_pct, p.volume_ratio] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let symbol = self.symbol_key.as_bytes();
        let len = u16::try_from(symbol.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&symbol[..usize::from(len)]);
        let data_start = u32::try_from(self.data_start).unwrap_or(u32::MAX);
        out.extend_from_slice(&data_start.to_le_bytes());
        let len = u32::try_from(self.encoded.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.encoded);
    }

    /// The result `bytes` hold.
    pub fn read_wire(bytes: &[u8]) -> Result<ScanEvent, WireError> {
        let mut r = Reader(bytes);
        let [version, scan, kind, flags] = r.take::<4>()?;
        if version != VERSION {
            return Err(WireError("unknown version"));
        }
        let scan = match Scan::ALL.get(usize::from(scan)) {
            Some(scan) => *scan,
            None => {
                let [len] = r.take::<1>()?;
                let name = std::str::from_utf8(r.slice(usize::from(len))?)
                    .map_err(|_| WireError("scan name"))?;
                Scan::register(name).map_err(|_| WireError("scan name"))?
            }
        };
        let kind = match kind {
            0 => EventKind::New,
            1 => EventKind::Update,
            2 => EventKind::Clear,
            _ => return Err(WireError("unknown kind")),
        };
        let seq = r.u64()?;
        // Seqs count from 1 and stay far below the top of `u64`, so no arithmetic on them
        // downstream can overflow, whatever a corrupt entry holds.
        if !(1..=MAX_SEQ).contains(&seq) {
            return Err(WireError("seq out of range"));
        }
        let published = instant_of(r.u64()?);
        let [score, price, change_pct, volume_ratio] = [r.f64()?, r.f64()?, r.f64()?, r.f64()?];
        let rsi = if flags & RSI != 0 {
            Some(r.f64()?)
        } else {
            None
        };
        let prior = if flags & PRIOR != 0 {
            Some(FilterValues {
                score: r.f64()?,
                price: r.f64()?,
                change_pct: r.f64()?,
                volume_ratio: r.f64()?,
            })
        } else {
            None
        };
        let len = u16::from_le_bytes(r.take::<2>()?);
        let symbol = r.slice(usize::from(len))?;
        let symbol_key = std::str::from_utf8(symbol)
            .map_err(|_| WireError("symbol is not UTF-8"))?
            .into();
        let data_start = u32::from_le_bytes(r.take::<4>()?) as usize;
        let len = u32::from_le_bytes(r.take::<4>()?) as usize;
        let encoded: Box<[u8]> = r.slice(len)?.into();
        // `write_data` reads from `data_start` to the last byte, a `,`.
        if !r.0.is_empty() || data_start >= encoded.len() || encoded.last() != Some(&b',') {
            return Err(WireError("message and data offset disagree"));
        }
        Ok(ScanEvent {
            seq,
            symbol_key,
            scan,
            kind,
            score,
            price,
            change_pct,
            volume_ratio,
            rsi,
            adhoc: flags & ADHOC != 0,
            prior,
            published,
            encoded,
            data_start,
        })
    }
}

fn kind_byte(kind: EventKind) -> u8 {
    match kind {
        EventKind::New => 0,
        EventKind::Update => 1,
        EventKind::Clear => 2,
    }
}

/// When `published` was, on the wall clock, in ns since the Unix epoch.
fn unix_nanos(published: Instant) -> u64 {
    let at = SystemTime::now() - published.elapsed();
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The local instant of a wall-clock time in ns since the Unix epoch; hosts' clocks
/// differ, so across hosts this is as good as their clock sync, and never in the future.
fn instant_of(unix_ns: u64) -> Instant {
    let now = Instant::now();
    let at = UNIX_EPOCH + Duration::from_nanos(unix_ns);
    let ago = SystemTime::now().duration_since(at).unwrap_or_default();
    now.checked_sub(ago).unwrap_or(now)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn slice(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError("too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.slice(N)?);
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take::<8>()?))
    }

    fn f64(&mut self) -> Result<f64, WireError> {
        Ok(f64::from_le_bytes(self.take::<8>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ScanResult;

    fn event(adhoc: bool, rsi: Option<f64>, prior: bool) -> ScanEvent {
        let result = ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol: "brk.b".into(),
            scan: Scan::RsiOversold,
            event: EventKind::Update,
            score: 1.25,
            price: 101.5,
            change_pct: -3.5,
            volume: 12_345,
            volume_ratio: 2.5,
            rsi,
            source_ts: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            adhoc,
        };
        let prior = prior.then(|| FilterValues {
            score: 0.5,
            price: 99.0,
            change_pct: -1.0,
            volume_ratio: 1.5,
        });
        ScanEvent::publish(&result, 42, SystemTime::now()).with_prior(prior)
    }

    #[test]
    fn a_result_comes_back_the_same_through_its_bytes() {
        for (adhoc, rsi, prior) in [(false, Some(28.5), true), (true, None, false)] {
            let ev = event(adhoc, rsi, prior);
            let mut bytes = Vec::new();
            ev.write_wire(&mut bytes);
            let back = ScanEvent::read_wire(&bytes).expect("decodes");
            assert_eq!(back.seq, 42);
            assert_eq!(&*back.symbol_key, "BRK.B");
            assert_eq!(
                (back.scan, back.kind, back.adhoc),
                (ev.scan, ev.kind, adhoc)
            );
            assert_eq!(back.values(), ev.values());
            assert_eq!((back.rsi, back.prior), (ev.rsi, ev.prior));
            assert_eq!(back.message_head(), ev.message_head());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            ev.write_data(&mut a);
            back.write_data(&mut b);
            assert_eq!(a, b);
            assert!(back.published.elapsed() < Duration::from_secs(60));
        }
    }

    #[test]
    fn a_custom_scan_travels_by_name() {
        let scan = Scan::register("wire_test_scan").unwrap();
        let mut ev = event(false, None, false);
        ev.scan = scan;
        let mut bytes = Vec::new();
        ev.write_wire(&mut bytes);
        assert!(bytes.windows(14).any(|w| w == b"wire_test_scan"));
        let back = ScanEvent::read_wire(&bytes).expect("decodes");
        assert_eq!(back.scan, scan);
        for n in 0..bytes.len() {
            assert!(ScanEvent::read_wire(&bytes[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        event(false, Some(50.0), true).write_wire(&mut bytes);
        // Every truncation, and each header byte made unknown.
        for n in 0..bytes.len() {
            assert!(ScanEvent::read_wire(&bytes[..n]).is_err(), "cut at {n}");
        }
        for (at, value) in [(0, 9), (1, 200), (2, 7), (11, 0x80)] {
            let mut bad = bytes.clone();
            bad[at] = value;
            assert!(ScanEvent::read_wire(&bad).is_err(), "byte {at} = {value}");
        }
    }
}
