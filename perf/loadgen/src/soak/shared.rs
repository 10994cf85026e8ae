//! What all soak clients share: the report's counters as they fill, the reply times, the
//! `seq` tally, and the symbols and alert ids seen in results and alerts, from which
//! `scan` and `ack` requests are drawn. Plain data; no client state and no I/O.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use super::report::SoakReport;
use crate::msg;
use crate::seq::Tally;
use crate::stats::Histogram;

/// Symbols and alert ids remembered for `scan` and `ack` requests.
const SYMBOL_POOL: usize = 1000;
const ALERT_POOL: usize = 256;

/// Counters, and the symbols and alert ids seen, shared by all clients.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) r: SoakReport,
    pub(super) reply_hist: Histogram,
    /// `seq` values lost and duplicated, over every client.
    pub(super) seq: Tally,
    pub(super) symbols: Vec<Box<str>>,
    symbol_set: HashSet<Box<str>>,
    pub(super) alert_ids: VecDeque<Box<str>>,
}

impl Shared {
    pub(super) fn unexpected(&mut self, what: String) {
        self.r.unexpected_errors += 1;
        self.r.last_unexpected = Some(what);
    }

    /// A reply of type `ty` to a request sent at `sent`.
    pub(super) fn reply(&mut self, ty: &str, sent: Instant, now: Instant) {
        *self.r.replies.entry(ty.to_string()).or_default() += 1;
        self.reply_hist
            .record(now.saturating_duration_since(sent).as_nanos() as u64);
    }

    /// Remembers the symbol of a result now and then: every one of the first 32, then
    /// one result in 64, until the pool is full.
    pub(super) fn sample_symbol(&mut self, payload: &[u8]) {
        if self.symbols.len() < SYMBOL_POOL
            && (self.symbols.len() < 32 || self.r.results.is_multiple_of(64))
        {
            self.learn_symbol(payload);
        }
    }

    fn learn_symbol(&mut self, payload: &[u8]) {
        const KEY: &[u8] = b"\"symbol\":\"";
        let Some(at) = msg::find(payload, KEY) else {
            return;
        };
        let rest = &payload[at + KEY.len()..];
        let Some(end) = rest.iter().position(|&b| b == b'"') else {
            return;
        };
        let Ok(sym) = std::str::from_utf8(&rest[..end]) else {
            return;
        };
        if !sym.is_empty() && !self.symbol_set.contains(sym) {
            self.symbol_set.insert(sym.into());
            self.symbols.push(sym.into());
        }
    }

    /// Remembers an alert id, forgetting the oldest once the pool is full.
    pub(super) fn learn_alert(&mut self, id: &str) {
        if self.alert_ids.len() == ALERT_POOL {
            self.alert_ids.pop_front();
        }
        self.alert_ids.push_back(id.into());
    }
}
