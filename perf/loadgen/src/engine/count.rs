//! What a frame means to the benchmark: a result is timed against its `timestamp` and its
//! `seq` checked against the connection's chain; other messages are counted by `type`.
//! These functions are the hot path, called for every frame [`crate::conn`] parses; they
//! never allocate for a result and never touch a socket.

use std::collections::{BTreeMap, HashMap};

use super::check::{CheckTally, TableCheck};
use crate::msg::{self, Kind};
use crate::seq::{Seq, Tally};
use crate::stats::Histogram;
use crate::ws::{Frame, WsError};

/// Counters of the whole run, updated from the hot path.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) messages: u64,
    pub(super) bytes: u64,
    pub(super) hist: Histogram,
    pub(super) negative: u64,
    pub(super) seq: Tally,
    pub(super) bad_results: u64,
    pub(super) others: HashMap<Vec<u8>, u64>,
    pub(super) disconnects: u64,
    pub(super) close_codes: BTreeMap<u16, u64>,
    pub(super) protocol_errors: u64,
    pub(super) last_protocol_error: Option<String>,
    pub(super) connected: u64,
    pub(super) connect_errors: BTreeMap<String, u64>,
    pub(super) cycles: u64,
    pub(super) cycles_total: u64,
    pub(super) cycle_hist: Histogram,
    pub(super) churn_errors: BTreeMap<String, u64>,
    pub(super) churn_errors_in_window: u64,
    /// The table check (`--check-table`).
    pub(super) check: CheckTally,
}

/// What the benchmark follows on one connection, apart from its socket.
#[derive(Debug, Default)]
pub(super) struct Track {
    pub(super) seq: Seq,
    /// Results received in the window.
    pub(super) window_msgs: u64,
    /// Inside a fragmented message: its frames are skipped, the message counted once.
    pub(super) fragmented: bool,
    /// A `subscribed` reply arrived.
    pub(super) subscribed: bool,
    /// The connection's table, when it is in the table check's sample.
    pub(super) table: Option<Box<TableCheck>>,
}

/// Counts one frame received at `now_ns` (wall clock); results count for rates and
/// latency only `in_window`, while `seq` continuity spans the whole run. Pings and close
/// frames never come here: the connection answers and ends on them. Always inlined, into
/// [`crate::conn::frames`]: see there why.
#[inline(always)]
pub(super) fn on_frame(
    frame: Frame<'_>,
    now_ns: i64,
    in_window: bool,
    t: &mut Track,
    c: &mut Counters,
) -> Result<(), WsError> {
    match frame {
        Frame::Text { fin: true, payload } if !t.fragmented => match msg::classify(payload) {
            Kind::Result { seq, ts_ns } => {
                c.seq.add(t.seq.observe(seq));
                if let Some(tc) = t.table.as_deref_mut() {
                    tc.on_result(payload, &mut c.check);
                }
                if in_window {
                    c.messages += 1;
                    t.window_msgs += 1;
                    let lat = now_ns - ts_ns;
                    if lat < 0 {
                        c.negative += 1;
                    }
                    c.hist.record(lat.max(0) as u64);
                }
            }
            Kind::BadResult => {
                c.bad_results += 1;
                if let Some(tc) = t.table.as_deref_mut() {
                    tc.on_result(payload, &mut c.check);
                }
            }
            Kind::Other(ty) => {
                if ty == b"subscribed" {
                    t.subscribed = true;
                }
                if let Some(tc) = t.table.as_deref_mut() {
                    tc.on_other(ty, payload, &mut c.check);
                }
                count_other(c, ty)
            }
            Kind::Untyped => count_other(c, b"(untyped)"),
        },
        Frame::Text { fin: false, .. } | Frame::Binary { fin: false, .. } if !t.fragmented => {
            t.fragmented = true;
        }
        Frame::Continuation { fin, .. } if t.fragmented => {
            if fin {
                t.fragmented = false;
                count_other(c, b"(fragmented)");
            }
        }
        Frame::Text { .. } | Frame::Binary { .. } | Frame::Continuation { .. } => {
            return Err(WsError::Protocol(if t.fragmented {
                "new message inside a fragmented one"
            } else {
                "continuation without a message"
            }));
        }
        Frame::Pong(_) => count_other(c, b"(pong frame)"),
        Frame::Ping(_) | Frame::Close(_) => {}
    }
    Ok(())
}

#[cold]
fn count_other(c: &mut Counters, t: &[u8]) {
    match c.others.get_mut(t) {
        Some(n) => *n += 1,
        None => {
            c.others.insert(t.to_vec(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{End, Handled, Outbox, frames};
    use crate::rng::Rng;
    use crate::seq::Outcome;
    use crate::ws;

    fn text(payload: &[u8], fin: bool, opcode: u8) -> Vec<u8> {
        ws::server_frame(opcode, payload, fin)
    }

    fn result(seq: u64) -> Vec<u8> {
        let body = format!(
            r#"{{"type":"result","timestamp":"2026-11-28T06:23:33.842294182Z","data":{{"seq":{seq},"symbol":"X"}}}}"#
        );
        text(body.as_bytes(), true, 1)
    }

    /// One connection's frames as the engine counts them, without a socket.
    struct Fed {
        t: Track,
        c: Counters,
        out: Outbox,
    }

    impl Fed {
        fn new() -> Fed {
            Fed {
                t: Track::default(),
                c: Counters::default(),
                out: Outbox::new(1),
            }
        }

        fn feed(&mut self, buf: &[u8], now_ns: i64, in_window: bool, max: usize) -> Handled {
            let Fed { t, c, out } = self;
            frames(buf, max, out, |f| on_frame(f, now_ns, in_window, t, c))
        }
    }

    #[test]
    fn frames_across_reads_count_results_gaps_and_pings() {
        let mut f = Fed::new();
        let mut stream = Vec::new();
        for seq in [1, 2, 3, 5, 5, 6] {
            stream.extend(result(seq));
        }
        stream.extend(text(b"hb", true, 9));
        stream.extend(text(br#"{"type":"status","data":{}}"#, true, 1));
        // Fragmented message: skipped as a whole, counted once.
        stream.extend(text(br#"{"type":"res"#, false, 1));
        stream.extend(text(br#"ult"}"#, true, 0));
        stream.extend(result(7));
        let ts = 1_795_847_013_842_294_182i64;
        // Feed it in awkward pieces, carrying the unused tail as a read does.
        let mut carry: Vec<u8> = Vec::new();
        for piece in stream.chunks(37) {
            carry.extend_from_slice(piece);
            let h = f.feed(&carry, ts + 1_000_000, true, 1 << 20);
            assert!(h.end.is_none());
            assert!(h.need > carry.len() - h.used || h.used == carry.len());
            carry.drain(..h.used);
        }
        assert!(carry.is_empty());
        let c = &f.c;
        assert_eq!(c.messages, 7);
        assert_eq!(f.t.window_msgs, 7);
        assert_eq!(c.seq.lost, 1);
        assert_eq!(c.seq.duplicated, 1);
        assert_eq!(c.hist.max(), 1_000_000);
        assert_eq!(c.others.get(&b"status"[..]), Some(&1));
        assert_eq!(c.others.get(&b"(fragmented)"[..]), Some(&1));
        // The ping was answered with a masked pong carrying its payload.
        let out = f.out.bytes();
        assert_eq!(&out[..2], &[0x8A, 0x82]);
        let m = &out[2..6];
        assert_eq!([out[6] ^ m[0], out[7] ^ m[1]], *b"hb");
    }

    #[test]
    fn close_and_protocol_errors_end_the_connection() {
        let mut f = Fed::new();
        let mut buf = result(1);
        buf.extend(text(&[0x0F, 0xA0], true, 8)); // close 4000
        buf.extend(result(2));
        let h = f.feed(&buf, 0, false, 1 << 20);
        assert!(matches!(h.end, Some(End::CloseFrame(Some(4000)))));
        assert!(h.used < buf.len());
        // Outside the window nothing is counted, but seq continuity is kept.
        assert_eq!(f.c.messages, 0);
        assert_eq!(f.t.seq.observe(3), Outcome::Gap(1));

        let h = f.feed(&text(b"x", true, 0), 0, true, 64);
        assert!(matches!(h.end, Some(End::Protocol(_))));
        assert_eq!(h.used, 3);
        let h = f.feed(&[0x81, 127, 0xFF, 0, 0, 0, 0, 0, 0, 0], 0, true, 64);
        assert!(matches!(h.end, Some(End::Protocol(WsError::TooBig(_)))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut f = Fed::new();
        let mut rng = Rng::new(0x1234_5678);
        let mut buf = Vec::new();
        for round in 0..2000u32 {
            buf.clear();
            // Mostly valid-looking headers with random bytes around them.
            for _ in 0..(round % 64) {
                let x = rng.next_u64();
                buf.push(x as u8);
                if x.is_multiple_of(7) {
                    buf.extend(result(x));
                }
            }
            f.t.fragmented = round.is_multiple_of(3);
            let h = f.feed(&buf, 0, true, 4096);
            assert!(h.used <= buf.len());
        }
    }
}
