//! Scan result events: what the scanner found, and the published form the reactor fans out.
//!
//! A [`ScanEvent`] is serialised exactly once, on the scanner thread, into the bytes of a
//! `result` message up to its per-connection tail. The reactor only ever copies those
//! bytes; it must never serialise a result again.

use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::expr::{Frame, Indicator};
use crate::timefmt::write_rfc3339;

mod scan;
mod wire;

pub use scan::{MAX_CUSTOM, Scan, ScanNameError};
pub use wire::WireError;

/// What happened to a (symbol, scan) condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The condition starts.
    New,
    /// It persists and changed materially.
    Update,
    /// It ended.
    Clear,
}

/// A result as the scanner finds it, before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanResult {
    /// Ticker as the source spells it; inline when short, so a scan cycle copies it
    /// without touching the heap.
    pub symbol: SmolStr,
    /// Which scan fired.
    pub scan: Scan,
    /// New, update or clear.
    pub event: EventKind,
    /// How far past its threshold, so `min_score` filters mean something.
    pub score: f64,
    /// Last price.
    pub price: f64,
    /// Change from the reference price, in percent.
    pub change_pct: f64,
    /// Volume of the update.
    pub volume: u64,
    /// Volume over its recent average.
    pub volume_ratio: f64,
    /// RSI(14), once there is enough data for it.
    pub rsi: Option<f64>,
    /// The source's own time of the update that caused the result.
    pub source_ts: Option<SystemTime>,
    /// Produced by an ad-hoc scan request rather than the paced cycle.
    pub adhoc: bool,
    /// Every indicator the scan's definition names, as computed at this bar, so a user
    /// sees why it fired (custom scans; empty for the built-in ones).
    pub values: Vec<(Indicator, f64)>,
    /// What the alert rules read of the symbol on this bar (a market scanner's results;
    /// never sent, never rounded: rules judge the exact values, as scans do).
    pub rule_frame: Option<Frame>,
}

impl ScanResult {
    /// With `score`, `change_pct`, `volume_ratio` and `rsi` at 4 decimals, as PROTOCOL.md
    /// has results carry them. The scanner rounds before it publishes, so filters, `left`
    /// and alerts judge the very values clients see.
    pub fn rounded(mut self) -> ScanResult {
        self.score = round4(self.score);
        self.change_pct = round4(self.change_pct);
        self.volume_ratio = round4(self.volume_ratio);
        self.rsi = self.rsi.map(round4);
        for (_, v) in &mut self.values {
            *v = round4(*v);
        }

        self
    }
}

fn round4(x: f64) -> f64 {
    // Past 1e15 an f64 holds no fourth decimal, and scaling could overflow.
    if x.abs() < 1e15 {
        // `+ 0.0` turns a rounded -0.0 into 0.0, so no `-0.0` goes on the wire.
        (x * 1e4).round() / 1e4 + 0.0
    } else {
        x
    }
}

/// The values a subscription's value filters look at (`min_score`, `min_price`,
/// `max_price`, `min_abs_change_pct`, `min_volume_ratio`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterValues {
    /// Score.
    pub score: f64,
    /// Last price.
    pub price: f64,
    /// Change in percent.
    pub change_pct: f64,
    /// Volume ratio.
    pub volume_ratio: f64,
}

impl FilterValues {
    /// The filter values of a result.
    pub fn of(r: &ScanResult) -> FilterValues {
        FilterValues {
            score: r.score,
            price: r.price,
            change_pct: r.change_pct,
            volume_ratio: r.volume_ratio,
        }
    }
}

/// A published result: the fields filters look at, and the message encoded once.
#[derive(Debug)]
pub struct ScanEvent {
    /// Position in this run's result sequence; consecutive from 1.
    pub seq: u64,
    /// The symbol in upper case, for case-insensitive matching.
    pub symbol_key: Box<str>,
    /// Which scan fired.
    pub scan: Scan,
    /// New, update or clear.
    pub kind: EventKind,
    /// Score (see [`ScanResult::score`]).
    pub score: f64,
    /// Last price.
    pub price: f64,
    /// Change in percent.
    pub change_pct: f64,
    /// Volume ratio.
    pub volume_ratio: f64,
    /// RSI, when known.
    pub rsi: Option<f64>,
    /// From an ad-hoc request: replayed like any result, but never part of the active set.
    pub adhoc: bool,
    /// For an `update`: the filter values of the (symbol, scan)'s previous published state,
    /// so a subscription whose filters that state matched and this one does not is told
    /// it `left`, the same way live and in a replay. `None` for anything else.
    pub prior: Option<FilterValues>,
    /// When the scanner published it, for the publish-to-flush histogram.
    pub published: Instant,
    /// `{"type":"result","timestamp":"…","data":{"seq":…,…,"adhoc":false,`: the shared
    /// head of every delivery; the connection appends `"subscriptions":[…]}}`.
    encoded: Box<[u8]>,
    /// Offset of the `{` that opens `data` in `encoded`.
    data_start: usize,
}

/// The serialised `data` object, in the field order of PROTOCOL.md.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    event: EventKind,
    symbol: &'a str,
    scan: Scan,
    score: f64,
    price: f64,
    change_pct: f64,
    volume: u64,
    volume_ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rsi: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_ts: Option<Timestamp>,
    adhoc: bool,
    #[serde(skip_serializing_if = "Values::is_empty")]
    values: Values<'a>,
}

/// A result's indicator values, as an object keyed by each indicator as written
/// (`"rsi(14)"`); a value not defined yet is `null`.
struct Values<'a>(&'a [(Indicator, f64)]);

impl Values<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Values<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (ind, v) in self.0 {
            map.serialize_entry(&ind.to_string(), &v.is_finite().then_some(*v))?;
        }
        map.end()
    }
}

/// A `SystemTime` that serialises as an RFC 3339 string.
struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::with_capacity(30);
        write_rfc3339(&mut buf, self.0);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

impl ScanEvent {
    /// Numbers `result` as `seq`, stamps it `at` and encodes it.
    pub fn publish(result: &ScanResult, seq: u64, at: SystemTime) -> ScanEvent {
        let mut encoded = Vec::with_capacity(320);
        encoded.extend_from_slice(br#"{"type":"result","timestamp":""#);
        write_rfc3339(&mut encoded, at);
        encoded.extend_from_slice(br#"","data":"#);
        let data_start = encoded.len();
        let body = Body {
            seq,
            event: result.event,
            symbol: &result.symbol,
            scan: result.scan,
            score: result.score,
            price: result.price,
            change_pct: result.change_pct,
            volume: result.volume,
            volume_ratio: result.volume_ratio,
            rsi: result.rsi,
            source_ts: result.source_ts.map(Timestamp),
            adhoc: result.adhoc,
            values: Values(&result.values),
        };
        // Serialising plain numbers, strings and bools into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut encoded, &body);
        // Turn the closing `}` into `,` so the per-connection tail can follow.
        if let Some(last) = encoded.last_mut() {
            *last = b',';
        }
        ScanEvent {
            seq,
            symbol_key: result.symbol.to_ascii_uppercase().into_boxed_str(),
            scan: result.scan,
            kind: result.event,
            score: result.score,
            price: result.price,
            change_pct: result.change_pct,
            volume_ratio: result.volume_ratio,
            rsi: result.rsi,
            adhoc: result.adhoc,
            prior: None,
            published: Instant::now(),
            encoded: encoded.into_boxed_slice(),
            data_start,
        }
    }

    /// This result's own filter values.
    pub fn values(&self) -> FilterValues {
        FilterValues {
            score: self.score,
            price: self.price,
            change_pct: self.change_pct,
            volume_ratio: self.volume_ratio,
        }
    }

    /// Can this result leave a filter: an `update` of the paced cycle with a previous
    /// published state?
    #[inline]
    pub fn may_leave(&self) -> bool {
        self.kind == EventKind::Update && !self.adhoc && self.prior.is_some()
    }

    /// The same result, with the filter values of its previous published state.
    pub fn with_prior(mut self, prior: Option<FilterValues>) -> ScanEvent {
        self.prior = prior;
        self
    }

    /// The shared head of the `result` message (see the field's doc).
    pub fn message_head(&self) -> &[u8] {
        &self.encoded
    }

    /// Appends the `data` object alone, as `snapshot` lists it (no `subscriptions`).
    pub fn write_data(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encoded[self.data_start..self.encoded.len() - 1]);
        out.push(b'}');
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rounding_keeps_four_decimals_and_leaves_the_price() {
        let mut r = sample();
        (r.score, r.price, r.change_pct) = (1.234_56, 191.123_456, -0.000_04);
        (r.volume_ratio, r.rsi) = (1e300, Some(f64::NAN));
        let r = r.rounded();
        assert_eq!((r.score, r.price, r.change_pct), (1.2346, 191.123_456, 0.0));
        assert!(r.change_pct.is_sign_positive());
        assert_eq!(r.volume_ratio, 1e300);
        assert!(r.rsi.is_some_and(f64::is_nan));
        // What alert rules read stays exact: `close > 0.00003` must see 0.00004.
        let mut r = sample();
        r.values = vec![(Indicator::Close, 0.000_04)];
        r.rule_frame = Some(Frame {
            values: vec![0.000_04].into(),
            crosses: Box::new([]),
        });
        let r = r.rounded();
        assert_eq!(r.values[0].1, 0.0, "values are sent at 4 decimals");
        assert_eq!(r.rule_frame.unwrap().values[0], 0.000_04);
    }

    pub(crate) fn sample() -> ScanResult {
        ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol: "aapl".into(),
            scan: Scan::VolumeSpike,
            event: EventKind::New,
            score: 3.4,
            price: 191.25,
            change_pct: 2.1,
            volume: 1_250_000,
            volume_ratio: 3.4,
            rsi: Some(64.2),
            source_ts: Some(UNIX_EPOCH + Duration::new(1_795_858_199, 998_000_000)),
            adhoc: false,
        }
    }

    #[test]
    fn head_plus_tail_is_the_protocol_message() {
        let at = UNIX_EPOCH + Duration::new(1_795_858_200, 123_456_789);
        let ev = ScanEvent::publish(&sample(), 1042, at);
        let mut msg = ev.message_head().to_vec();
        msg.extend_from_slice(br#""subscriptions":["main"]}}"#);
        let v: serde_json::Value = serde_json::from_slice(&msg).unwrap();
        assert_eq!(v["type"], "result");
        assert_eq!(v["timestamp"], "2026-11-28T09:30:00.123456789Z");
        let d = &v["data"];
        assert_eq!(d["seq"], 1042);
        assert_eq!(d["event"], "new");
        assert_eq!(d["symbol"], "aapl");
        assert_eq!(d["scan"], "volume_spike");
        assert_eq!(d["volume"], 1_250_000);
        assert_eq!(d["rsi"], 64.2);
        assert_eq!(d["source_ts"], "2026-11-28T09:29:59.998000000Z");
        assert_eq!(d["adhoc"], false);
        assert_eq!(d["subscriptions"], serde_json::json!(["main"]));
        assert_eq!(&*ev.symbol_key, "AAPL");
    }

    #[test]
    fn data_alone_is_an_object_without_subscriptions() {
        let ev = ScanEvent::publish(&sample(), 7, SystemTime::now());
        let mut out = Vec::new();
        ev.write_data(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["seq"], 7);
        assert!(v.get("subscriptions").is_none());
    }

    #[test]
    fn scan_names_round_trip() {
        for scan in Scan::ALL {
            assert_eq!(Scan::from_name(scan.name()), Some(scan));
        }
        assert_eq!(Scan::from_name("nope"), None);
    }
}
