//! Fan-out of one encoded result to one connection: which of its subscriptions match,
//! and the frame spliced from the shared bytes and the per-connection tail.
//!
//! This is the hot path: it must not allocate or serialise. The result's JSON head is
//! copied as it is; only the frame header and `"subscriptions":[…]}}` are written here.

use super::websocket::text_frame_header;
use crate::event::ScanEvent;
use crate::protocol::Filter;

/// One named subscription.
#[derive(Debug)]
pub struct Subscription {
    /// The client's name for it.
    pub name: Box<str>,
    /// The name as a JSON string literal, ready to splice into result frames.
    pub name_json: Box<str>,
    /// What it matches.
    pub filter: Filter,
    /// First sequence number it takes: results before it were sent (or replaced by a
    /// snapshot) before it existed or while another subscription replayed.
    pub start: u64,
}

const TAIL_OPEN: &[u8] = br#""subscriptions":["#;
const TAIL_LEFT: &[u8] = br#"],"left":["#;
const TAIL_CLOSE: &[u8] = b"]}}";

/// Which of a connection's subscriptions one result goes to, a bit per subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Subscriptions the result matches (`subscriptions`).
    pub takes: u64,
    /// Subscriptions it leaves: an `update` that drops out of their value filters
    /// (`left`; PROTOCOL.md, "Leaving a filter").
    pub left: u64,
}

impl Delivery {
    /// Nothing for this connection.
    pub fn is_empty(self) -> bool {
        self.takes | self.left == 0
    }
}

/// The subscriptions that take `ev` or leave with it, among those that start at or
/// before it.
pub fn delivery(subs: &[Subscription], ev: &ScanEvent) -> Delivery {
    let mut d = Delivery::default();
    // Most results cannot leave anything (new, clear, a first update): ask once.
    let may_leave = ev.may_leave();
    for (i, sub) in subs.iter().enumerate() {
        if sub.start > ev.seq {
            continue;
        }
        if sub.filter.matches(ev) {
            d.takes |= 1 << i;
        } else if may_leave && sub.filter.leaves(ev) {
            d.left |= 1 << i;
        }
    }
    d
}

/// The per-connection tail of a result, `"subscriptions":[…]}}` (with `"left":[…]`
/// when some subscription leaves), kept for the last delivery it was built for: most
/// results name the same subscriptions as the one before, so delivering one is a header
/// and two copies.
#[derive(Debug, Default)]
pub struct Tail {
    /// The delivery `bytes` names; empty is "nothing built" (a delivery names one
    /// subscription at least).
    built: Delivery,
    bytes: Vec<u8>,
}

impl Tail {
    /// Forgets the tail: the subscriptions changed.
    pub fn reset(&mut self) {
        self.built = Delivery::default();
    }

    fn get(&mut self, subs: &[Subscription], d: Delivery) -> &[u8] {
        if self.built != d {
            self.built = d;
            self.bytes.clear();
            self.bytes.extend_from_slice(TAIL_OPEN);
            write_names(&mut self.bytes, subs, d.takes);
            if d.left != 0 {
                self.bytes.extend_from_slice(TAIL_LEFT);
                write_names(&mut self.bytes, subs, d.left);
            }
            self.bytes.extend_from_slice(TAIL_CLOSE);
        }
        &self.bytes
    }
}

/// Appends the JSON names of the subscriptions whose bits are set in `mask`, with commas.
fn write_names(out: &mut Vec<u8>, subs: &[Subscription], mask: u64) {
    let named = subs
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0);
    for (n, (_, sub)) in named.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(sub.name_json.as_bytes());
    }
}

/// Appends one `result` frame for delivery `d`.
pub fn write_result(
    out: &mut Vec<u8>,
    ev: &ScanEvent,
    subs: &[Subscription],
    d: Delivery,
    tail: &mut Tail,
) {
    let tail = tail.get(subs, d);
    let head = ev.message_head();
    let (header, used) = text_frame_header(head.len() + tail.len());
    out.reserve(used + head.len() + tail.len());
    out.extend_from_slice(&header[..used]);
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::event::{EventKind, FilterValues, Scan, ScanResult};
    use crate::protocol::json_string;
    use serde_json::{Value, json};
    use std::time::SystemTime;

    pub(in crate::reactor) fn sub(name: &str, filters: Value) -> Subscription {
        Subscription {
            name: name.into(),
            name_json: json_string(name),
            filter: Filter::from_json(Some(filters), 16).unwrap(),
            start: 0,
        }
    }

    fn takes(mask: u64) -> Delivery {
        Delivery {
            takes: mask,
            left: 0,
        }
    }

    fn event(symbol: &str) -> ScanEvent {
        ScanEvent::publish(&result(symbol), 9, SystemTime::now())
    }

    pub(in crate::reactor) fn result(symbol: &str) -> ScanResult {
        ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol: symbol.into(),
            scan: Scan::NewHigh,
            event: EventKind::New,
            score: 2.0,
            price: 10.0,
            change_pct: 1.0,
            volume: 5,
            volume_ratio: 1.0,
            rsi: None,
            source_ts: None,
            adhoc: false,
        }
    }

    /// Parses one unmasked frame written by `write_result`.
    fn payload(frame: &[u8]) -> Value {
        assert_eq!(frame[0], 0x81);
        let (len, start) = match frame[1] {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert_eq!(frame.len(), start + len, "declared length");
        serde_json::from_slice(&frame[start..]).unwrap()
    }

    #[test]
    fn one_frame_names_every_matching_subscription() {
        let subs = vec![
            sub("all", json!({})),
            sub("msft", json!({"symbols": ["MSFT"]})),
            sub("we\"ird", json!({"min_score": 1})),
        ];
        let ev = event("AAPL");
        let d = delivery(&subs, &ev);
        assert_eq!(d, takes(0b101));
        let mut out = Vec::new();
        write_result(&mut out, &ev, &subs, d, &mut Tail::default());
        let v = payload(&out);
        assert_eq!(v["data"]["subscriptions"], json!(["all", "we\"ird"]));
        assert!(v["data"].get("left").is_none());
        assert_eq!(v["data"]["seq"], 9);
    }

    #[test]
    fn the_tail_follows_the_mask() {
        let subs = vec![sub("a", json!({})), sub("b", json!({}))];
        let ev = event("X");
        let mut tail = Tail::default();
        for (mask, want) in [
            (0b01, json!(["a"])),
            (0b11, json!(["a", "b"])),
            (0b10, json!(["b"])),
            (0b10, json!(["b"])),
        ] {
            let mut out = Vec::new();
            write_result(&mut out, &ev, &subs, takes(mask), &mut tail);
            assert_eq!(
                payload(&out)["data"]["subscriptions"],
                want,
                "mask {mask:b}"
            );
        }
    }

    #[test]
    fn subscriptions_take_results_from_their_start() {
        let mut subs = vec![sub("a", json!({})), sub("b", json!({}))];
        subs[0].start = 10; // the event is seq 9
        assert_eq!(delivery(&subs, &event("X")), takes(0b10));
    }

    #[test]
    fn an_update_that_drops_below_a_filter_names_it_in_left() {
        let subs = vec![
            sub("all", json!({})),
            sub("big", json!({"min_score": 2})),
            sub("msft", json!({"min_score": 2, "symbols": ["MSFT"]})),
            sub("cheap", json!({"max_price": 5})),
        ];
        // Score 1.5 after 2.5: `big` held the row and must drop it; `msft` never had it,
        // `cheap` did not match before and does not now.
        let prior = FilterValues {
            score: 2.5,
            price: 10.0,
            change_pct: 1.0,
            volume_ratio: 1.0,
        };
        let mut r = result("AAPL");
        r.event = EventKind::Update;
        r.score = 1.5;
        let ev = ScanEvent::publish(&r, 9, SystemTime::now()).with_prior(Some(prior));
        let d = delivery(&subs, &ev);
        assert_eq!(
            d,
            Delivery {
                takes: 0b0001,
                left: 0b0010
            }
        );
        let mut tail = Tail::default();
        let mut out = Vec::new();
        write_result(&mut out, &ev, &subs, d, &mut tail);
        let data = &payload(&out)["data"];
        assert_eq!(data["subscriptions"], json!(["all"]));
        assert_eq!(data["left"], json!(["big"]));
        // Left alone: an empty `subscriptions`; and the tail is rebuilt for the next one.
        let d = Delivery {
            takes: 0,
            left: 0b0010,
        };
        out.clear();
        write_result(&mut out, &ev, &subs, d, &mut tail);
        let data = &payload(&out)["data"];
        assert_eq!(
            (&data["subscriptions"], &data["left"]),
            (&json!([]), &json!(["big"]))
        );
        out.clear();
        write_result(&mut out, &ev, &subs, takes(0b0001), &mut tail);
        assert!(payload(&out)["data"].get("left").is_none());
    }

    #[test]
    fn no_allocation_once_the_buffer_has_room() {
        let subs = vec![sub("main", json!({}))];
        let ev = event("AAPL");
        let mut out = Vec::with_capacity(4096);
        let mut tail = Tail::default();
        write_result(&mut out, &ev, &subs, takes(1), &mut tail);
        let before = out.as_ptr();
        for _ in 0..4 {
            write_result(&mut out, &ev, &subs, takes(1), &mut tail);
        }
        assert_eq!(out.as_ptr(), before, "the buffer was reallocated");
    }
}
