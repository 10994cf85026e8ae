//! A subscription's table as a client keeps it from the events delivered to it, and its
//! comparison with a fresh snapshot (PROTOCOL.md, "Leaving a filter" and "Overload").
//!
//! Rows are keyed by (symbol, scan). A `new` or `update` whose `subscriptions` name the
//! subscription inserts or replaces its row; a `clear` naming it removes the row, and so
//! does any result whose `left` names it. A table started from a `snapshot` and kept so
//! must equal a fresh snapshot with the same filters taken at the same `seq`, whatever
//! results the server conflated on the way.
//!
//! Messages are parsed with serde_json, which only the table check pays for: the
//! benchmark's own path reads results by byte search ([`crate::msg`]).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// (symbol, scan).
pub type Key = (String, String);

/// What a table keeps of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// `seq` of the event that set the row.
    pub seq: u64,
    pub score: Option<f64>,
    pub price: Option<f64>,
}

/// The fields of one result's `data` a table needs, borrowed from the parsed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub seq: u64,
    /// `new`, `update` or `clear`.
    pub event: &'a str,
    pub symbol: &'a str,
    pub scan: &'a str,
    pub score: Option<f64>,
    pub price: Option<f64>,
    /// Subscriptions the result matched.
    pub subscriptions: Vec<&'a str>,
    /// Subscriptions the result leaves.
    pub left: Vec<&'a str>,
}

impl<'a> Event<'a> {
    /// From a result's `data` (or a snapshot's row); `None` when `seq`, `event`, `symbol`
    /// or `scan` is missing or mistyped.
    pub fn from_data(data: &'a Value) -> Option<Event<'a>> {
        let names = |k: &str| -> Option<Vec<&'a str>> {
            match data.get(k) {
                None | Some(Value::Null) => Some(Vec::new()),
                Some(v) => v.as_array()?.iter().map(Value::as_str).collect(),
            }
        };
        Some(Event {
            seq: data.get("seq")?.as_u64()?,
            event: data.get("event")?.as_str()?,
            symbol: data.get("symbol")?.as_str()?,
            scan: data.get("scan")?.as_str()?,
            score: data.get("score").and_then(Value::as_f64),
            price: data.get("price").and_then(Value::as_f64),
            subscriptions: names("subscriptions")?,
            left: names("left")?,
        })
    }

    fn key(&self) -> Key {
        (self.symbol.to_string(), self.scan.to_string())
    }

    fn row(&self) -> Row {
        Row {
            seq: self.seq,
            score: self.score,
            price: self.price,
        }
    }
}

/// Parses a whole message (the envelope) and hands back its `data`.
pub fn message_data(msg: &[u8]) -> Result<Value, String> {
    let mut v: Value = serde_json::from_slice(msg).map_err(|e| format!("not JSON: {e}"))?;
    match v.get_mut("data") {
        Some(d) if d.is_object() => Ok(d.take()),
        _ => Err("no data object".into()),
    }
}

/// What [`Table::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The row was inserted or replaced.
    Set,
    /// The row was removed (or was not there).
    Removed,
    /// The event is not for this subscription, or its `event` is unknown.
    Ignored,
}

/// One subscription's rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    rows: BTreeMap<Key, Row>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn get(&self, symbol: &str, scan: &str) -> Option<&Row> {
        self.rows.get(&(symbol.to_string(), scan.to_string()))
    }

    /// The table a `snapshot`'s `results` stand for.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = Event<'a>>) -> Table {
        Table {
            rows: rows.into_iter().map(|e| (e.key(), e.row())).collect(),
        }
    }

    /// Applies one delivered result to the table of subscription `name`.
    pub fn apply(&mut self, ev: &Event<'_>, name: &str) -> Applied {
        if ev.subscriptions.contains(&name) {
            match ev.event {
                "new" | "update" => {
                    self.rows.insert(ev.key(), ev.row());
                    Applied::Set
                }
                "clear" => {
                    self.rows.remove(&ev.key());
                    Applied::Removed
                }
                _ => Applied::Ignored,
            }
        } else if ev.left.contains(&name) {
            self.rows.remove(&ev.key());
            Applied::Removed
        } else {
            Applied::Ignored
        }
    }

    /// How this table differs from `snapshot`: keys on one side only, and prices that
    /// differ. Scores are rounded by the server and not compared.
    pub fn diff(&self, snapshot: &Table) -> Diff {
        let mut d = Diff::default();
        for (k, row) in &self.rows {
            match snapshot.rows.get(k) {
                None => d.only_table.push(k.clone()),
                Some(s) if !same_price(row.price, s.price) => {
                    d.price.push((k.clone(), row.price, s.price));
                }
                Some(_) => {}
            }
        }
        d.only_snapshot = snapshot
            .rows
            .keys()
            .filter(|k| !self.rows.contains_key(*k))
            .cloned()
            .collect();
        d
    }
}

/// Prices are exact on the wire: the same number printed by the same server parses to
/// the same `f64`.
fn same_price(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
        (None, None) => true,
        _ => false,
    }
}

/// The difference between a kept table and a fresh snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// Rows the table has and the snapshot does not.
    pub only_table: Vec<Key>,
    /// Rows the snapshot has and the table does not.
    pub only_snapshot: Vec<Key>,
    /// Rows on both sides whose price differs: (key, table's, snapshot's).
    pub price: Vec<(Key, Option<f64>, Option<f64>)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.only_table.is_empty() && self.only_snapshot.is_empty() && self.price.is_empty()
    }
}

/// At most this many keys of each kind are named.
const SHOWN: usize = 5;

/// One line: `2 only in the table (AAA/firehose, BBB/firehose); 1 price differs (...)`.
impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |ks: &mut dyn Iterator<Item = String>, n: usize| {
            let shown: Vec<String> = ks.take(SHOWN).collect();
            let more = if n > SHOWN { ", ..." } else { "" };
            format!("{}{more}", shown.join(", "))
        };
        let name = |k: &Key| format!("{}/{}", k.0, k.1);
        let price = |p: &Option<f64>| p.map_or("none".to_string(), |p| p.to_string());
        let mut parts = Vec::new();
        if !self.only_table.is_empty() {
            let n = self.only_table.len();
            let ks = keys(&mut self.only_table.iter().map(name), n);
            parts.push(format!("{n} only in the table ({ks})"));
        }
        if !self.only_snapshot.is_empty() {
            let n = self.only_snapshot.len();
            let ks = keys(&mut self.only_snapshot.iter().map(name), n);
            parts.push(format!("{n} only in the snapshot ({ks})"));
        }
        if !self.price.is_empty() {
            let n = self.price.len();
            let mut it = self
                .price
                .iter()
                .map(|(k, a, b)| format!("{}: table {}, snapshot {}", name(k), price(a), price(b)));
            parts.push(format!("{n} with another price ({})", keys(&mut it, n)));
        }
        if parts.is_empty() {
            f.write_str("equal")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// A `snapshot` message: its subscription, its `seq` and the table its results make.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub subscription: String,
    pub seq: u64,
    pub table: Table,
}

impl Snapshot {
    /// Parses a whole `snapshot` message.
    pub fn parse(msg: &[u8]) -> Result<Snapshot, String> {
        let data = message_data(msg)?;
        let subscription = data
            .get("subscription")
            .and_then(Value::as_str)
            .ok_or("snapshot without a subscription")?
            .to_string();
        let seq = data
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or("snapshot without a seq")?;
        let results = data
            .get("results")
            .and_then(Value::as_array)
            .ok_or("snapshot without results")?;
        let rows = results
            .iter()
            .map(|r| Event::from_data(r).ok_or("unreadable snapshot row"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot {
            subscription,
            seq,
            table: Table::from_rows(rows),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64, event: &str, symbol: &str, price: f64, subs: &[&str], left: &[&str]) -> Value {
        json!({"seq": seq, "event": event, "symbol": symbol, "scan": "volume_spike",
               "score": 1.5, "price": price, "change_pct": 1.0, "adhoc": false,
               "subscriptions": subs, "left": left})
    }

    fn apply(t: &mut Table, v: &Value, name: &str) -> Applied {
        t.apply(&Event::from_data(v).unwrap(), name)
    }

    #[test]
    fn new_update_and_clear_keep_the_rows_of_the_named_subscription() {
        let mut t = Table::default();
        assert_eq!(
            apply(&mut t, &ev(1, "new", "AAPL", 10.0, &["main"], &[]), "main"),
            Applied::Set
        );
        apply(
            &mut t,
            &ev(2, "new", "MSFT", 20.0, &["main", "x"], &[]),
            "main",
        );
        // Another subscription's result leaves this table alone.
        assert_eq!(
            apply(&mut t, &ev(3, "new", "TSLA", 30.0, &["x"], &[]), "main"),
            Applied::Ignored
        );
        apply(
            &mut t,
            &ev(4, "update", "AAPL", 11.0, &["main"], &[]),
            "main",
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("AAPL", "volume_spike").unwrap().price, Some(11.0));
        assert_eq!(t.get("AAPL", "volume_spike").unwrap().seq, 4);
        // An update for a row never seen inserts it (it entered the filter).
        apply(
            &mut t,
            &ev(5, "update", "NVDA", 40.0, &["main"], &[]),
            "main",
        );
        assert_eq!(t.len(), 3);
        assert_eq!(
            apply(
                &mut t,
                &ev(6, "clear", "MSFT", 20.0, &["main"], &[]),
                "main"
            ),
            Applied::Removed
        );
        assert!(t.get("MSFT", "volume_spike").is_none());
        // A clear of a row not in the table changes nothing.
        apply(&mut t, &ev(7, "clear", "ZZZ", 1.0, &["main"], &[]), "main");
        assert_eq!(t.len(), 2);
        // Unknown events are ignored.
        assert_eq!(
            apply(
                &mut t,
                &ev(8, "renamed", "AAPL", 1.0, &["main"], &[]),
                "main"
            ),
            Applied::Ignored
        );
    }

    #[test]
    fn left_removes_the_row() {
        let mut t = Table::default();
        apply(
            &mut t,
            &ev(1, "new", "AAPL", 10.0, &["main", "big"], &[]),
            "big",
        );
        apply(&mut t, &ev(2, "new", "MSFT", 10.0, &["big"], &[]), "big");
        let leave = ev(3, "update", "AAPL", 9.0, &["main"], &["big"]);
        assert_eq!(apply(&mut t, &leave, "big"), Applied::Removed);
        assert!(t.get("AAPL", "volume_spike").is_none());
        // The same result is an ordinary update for the subscription it still matches.
        let mut main = Table::default();
        assert_eq!(apply(&mut main, &leave, "main"), Applied::Set);
        // A result with "left" and no "subscriptions" at all.
        let v = json!({"seq": 4, "event": "update", "symbol": "MSFT", "scan": "volume_spike",
                       "price": 1.0, "left": ["big"]});
        assert_eq!(apply(&mut t, &v, "big"), Applied::Removed);
        assert!(t.is_empty());
    }

    fn snapshot_msg(name: &str, seq: u64, rows: &[Value]) -> Vec<u8> {
        let m = json!({"type": "snapshot", "timestamp": "2026-11-28T06:23:33.842294182Z",
                       "data": {"subscription": name, "seq": seq, "results": rows}});
        m.to_string().into_bytes()
    }

    #[test]
    fn a_kept_table_compares_with_a_fresh_snapshot() {
        let first = Snapshot::parse(&snapshot_msg(
            "main",
            10,
            &[ev(9, "new", "AAPL", 10.0, &[], &[])],
        ))
        .unwrap();
        assert_eq!((first.subscription.as_str(), first.seq), ("main", 10));
        let mut t = first.table;
        // Results after the snapshot, as a connection gets them (seq 12 was conflated).
        for v in [
            ev(11, "new", "MSFT", 20.0, &["main"], &[]),
            ev(13, "update", "AAPL", 12.5, &["main"], &[]),
            ev(14, "new", "TSLA", 30.0, &["main"], &[]),
            ev(15, "update", "TSLA", 31.0, &[], &["main"]),
        ] {
            apply(&mut t, &v, "main");
        }
        let fresh = |rows: &[Value]| Snapshot::parse(&snapshot_msg("check", 15, rows)).unwrap();
        let same = fresh(&[
            ev(11, "new", "MSFT", 20.0, &[], &[]),
            ev(13, "update", "AAPL", 12.5, &[], &[]),
        ]);
        let d = t.diff(&same.table);
        assert!(d.is_empty(), "{d}");
        assert_eq!(d.to_string(), "equal");

        let other = fresh(&[
            ev(13, "update", "AAPL", 12.0, &[], &[]),
            ev(14, "new", "TSLA", 30.0, &[], &[]),
        ]);
        let d = t.diff(&other.table);
        let key = |s: &str| (s.to_string(), "volume_spike".to_string());
        assert_eq!(d.only_table, vec![key("MSFT")]);
        assert_eq!(d.only_snapshot, vec![key("TSLA")]);
        assert_eq!(d.price, vec![(key("AAPL"), Some(12.5), Some(12.0))]);
        assert_eq!(
            d.to_string(),
            "1 only in the table (MSFT/volume_spike); 1 only in the snapshot \
             (TSLA/volume_spike); 1 with another price (AAPL/volume_spike: table 12.5, snapshot 12)"
        );
    }

    #[test]
    fn unreadable_messages_are_errors() {
        assert!(message_data(b"{").is_err());
        assert!(message_data(br#"{"type":"result"}"#).is_err());
        assert!(Snapshot::parse(br#"{"type":"snapshot","data":{"seq":1,"results":[]}}"#).is_err());
        let bad_row =
            br#"{"type":"snapshot","data":{"subscription":"a","seq":1,"results":[{"seq":1}]}}"#;
        assert!(Snapshot::parse(bad_row).is_err());
        let d = message_data(br#"{"type":"result","data":{"seq":1,"event":"new","symbol":"A","scan":"s","subscriptions":[1]}}"#).unwrap();
        assert!(Event::from_data(&d).is_none());
        let d = message_data(
            br#"{"type":"result","data":{"seq":1,"event":"new","symbol":"A","scan":"s"}}"#,
        )
        .unwrap();
        let e = Event::from_data(&d).unwrap();
        assert!(e.subscriptions.is_empty() && e.left.is_empty() && e.price.is_none());
    }
}
