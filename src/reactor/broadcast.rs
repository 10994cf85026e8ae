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
const TAIL_CLOSE: &[u8] = b"]}}";

/// A bit per subscription that takes `ev`: it starts at or before it and matches it.
pub fn matching_mask(subs: &[Subscription], ev: &ScanEvent) -> u64 {
    let mut mask = 0;
    for (i, sub) in subs.iter().enumerate() {
        if sub.start <= ev.seq && sub.filter.matches(ev) {
            mask |= 1 << i;
        }
    }
    mask
}

/// The per-connection tail of a result, `"subscriptions":[…]}}`, kept for the last set
/// of subscriptions it was built for: most results name the same ones as the one before,
/// so delivering one is a header and two copies.
#[derive(Debug, Default)]
pub struct Tail {
    /// The subscription bits `bytes` names; 0 is "nothing built" (a delivery names one
    /// subscription at least).
    mask: u64,
    bytes: Vec<u8>,
}

impl Tail {
    /// Forgets the tail: the subscriptions changed.
    pub fn reset(&mut self) {
        self.mask = 0;
    }

    fn get(&mut self, subs: &[Subscription], mask: u64) -> &[u8] {
        if self.mask != mask {
            self.mask = mask;
            self.bytes.clear();
            self.bytes.extend_from_slice(TAIL_OPEN);
            let named = subs
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0);
            for (n, (_, sub)) in named.enumerate() {
                if n > 0 {
                    self.bytes.push(b',');
                }
                self.bytes.extend_from_slice(sub.name_json.as_bytes());
            }
            self.bytes.extend_from_slice(TAIL_CLOSE);
        }
        &self.bytes
    }
}

/// Appends one `result` frame naming the subscriptions whose bits are set in `mask`.
pub fn write_result(
    out: &mut Vec<u8>,
    ev: &ScanEvent,
    subs: &[Subscription],
    mask: u64,
    tail: &mut Tail,
) {
    let tail = tail.get(subs, mask);
    let head = ev.message_head();
    let (header, used) = text_frame_header(head.len() + tail.len());
    out.reserve(used + head.len() + tail.len());
    out.extend_from_slice(&header[..used]);
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Scan, ScanResult};
    use crate::protocol::json_string;
    use serde_json::{Value, json};
    use std::time::SystemTime;

    fn sub(name: &str, filters: Value) -> Subscription {
        Subscription {
            name: name.into(),
            name_json: json_string(name),
            filter: Filter::from_json(Some(filters), 16).unwrap(),
            start: 0,
        }
    }

    fn event(symbol: &str) -> ScanEvent {
        let r = ScanResult {
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
        };
        ScanEvent::publish(&r, 9, SystemTime::now())
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
        let mask = matching_mask(&subs, &ev);
        assert_eq!(mask, 0b101);
        let mut out = Vec::new();
        write_result(&mut out, &ev, &subs, mask, &mut Tail::default());
        let v = payload(&out);
        assert_eq!(v["data"]["subscriptions"], json!(["all", "we\"ird"]));
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
            write_result(&mut out, &ev, &subs, mask, &mut tail);
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
        assert_eq!(matching_mask(&subs, &event("X")), 0b10);
    }

    #[test]
    fn no_allocation_once_the_buffer_has_room() {
        let subs = vec![sub("main", json!({}))];
        let ev = event("AAPL");
        let mut out = Vec::with_capacity(4096);
        let mut tail = Tail::default();
        write_result(&mut out, &ev, &subs, 1, &mut tail);
        let before = out.as_ptr();
        for _ in 0..4 {
            write_result(&mut out, &ev, &subs, 1, &mut tail);
        }
        assert_eq!(out.as_ptr(), before, "the buffer was reallocated");
    }
}
