//! The result history ring and the active set, owned by the reactor.
//!
//! The ring keeps the last N published results so a reconnecting client resumes with
//! `since` and loses nothing; the active set holds the opportunities open now (kept from
//! `new`/`update`/`clear`) and answers `snapshot`. Both share the scanner's encoded
//! events; nothing here serialises.

use std::collections::VecDeque;
use std::sync::Arc;

use ahash::AHashMap;

use crate::event::{EventKind, Scan, ScanEvent};
use crate::protocol::Filter;

/// Where a resuming subscription starts, and whether nothing was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// First sequence number to replay (may be past the newest: nothing to replay).
    pub from: u64,
    /// False when the history no longer reaches back to `since + 1`, or the epoch differs.
    pub recovered: bool,
}

/// Ring of recent results plus the active set. A clone shares the results (`Arc`s): it is
/// how a late edge gets the producer's cut.
#[derive(Debug, Clone)]
pub struct History {
    ring: VecDeque<Arc<ScanEvent>>,
    capacity: usize,
    /// Newest sequence number published this run; 0 before the first.
    head: u64,
    epoch: String,
    active: AHashMap<(Box<str>, Scan), Arc<ScanEvent>>,
}

impl History {
    /// An empty history keeping at most `capacity` results, for run `epoch`.
    pub fn new(capacity: usize, epoch: String) -> History {
        History {
            ring: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            head: 0,
            epoch,
            active: AHashMap::new(),
        }
    }

    /// A history that continues one kept elsewhere (a bus between processes): newest
    /// result `head`, the retained `tail` (consecutive, oldest first; results not
    /// consecutive up to `head` are left out) and the open opportunities `active`, which
    /// may reach back before the tail.
    pub fn restore(
        capacity: usize,
        epoch: String,
        head: u64,
        tail: Vec<Arc<ScanEvent>>,
        active: Vec<Arc<ScanEvent>>,
    ) -> History {
        let mut history = History::new(capacity, epoch);
        history.head = head;
        // Only the run that ends at `head` without a gap can be replayed.
        let mut expect = head;
        let mut kept: Vec<Arc<ScanEvent>> = Vec::new();
        for ev in tail.into_iter().rev() {
            if ev.seq != expect || kept.len() == history.capacity || expect == 0 {
                break;
            }
            expect -= 1;
            kept.push(ev);
        }
        history.ring.extend(kept.into_iter().rev());
        for ev in active {
            if !ev.adhoc && ev.kind != EventKind::Clear {
                history.active.insert((ev.symbol_key.clone(), ev.scan), ev);
            }
        }
        history
    }

    /// The open opportunities, in no order.
    pub fn active(&self) -> impl Iterator<Item = &Arc<ScanEvent>> {
        self.active.values()
    }

    /// This run's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Newest sequence number; 0 when nothing was published yet.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Oldest retained sequence number (`head + 1` when empty).
    pub fn oldest(&self) -> u64 {
        self.ring.front().map_or(self.head + 1, |e| e.seq)
    }

    /// Number of retained results.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True before anything is retained.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Number of open opportunities.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Appends a newly published result and updates the active set. Sequence numbers
    /// arrive consecutively from the scanner; after a gap the ring starts again.
    pub fn push(&mut self, ev: Arc<ScanEvent>) {
        self.append(ev, true);
    }

    /// Appends a result a lagging edge skipped (PROTOCOL.md, "Overload"): the ring keeps
    /// it for resumes, but the active set stays as live subscribers hold it, so a
    /// snapshot taken before the result that supersedes this one goes out still equals
    /// their tables.
    pub fn push_skipped(&mut self, ev: Arc<ScanEvent>) {
        self.append(ev, false);
    }

    fn append(&mut self, ev: Arc<ScanEvent>, shown: bool) {
        // A result after a gap (a bus that lost some) cannot be replayed from before it.
        if self.ring.back().is_some_and(|last| last.seq + 1 != ev.seq) {
            self.ring.clear();
        }
        self.head = ev.seq;
        // Ad-hoc results are answers to a request, not state: they never open or close rows.
        if shown && !ev.adhoc {
            let key = (ev.symbol_key.clone(), ev.scan);
            match ev.kind {
                EventKind::New | EventKind::Update => {
                    self.active.insert(key, Arc::clone(&ev));
                }
                EventKind::Clear => {
                    self.active.remove(&key);
                }
            }
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(ev);
    }

    /// Where to resume a client that saw everything up to `since` in run `epoch`.
    ///
    /// A different epoch means the server restarted: every result of this run is new to
    /// the client, so replay all that is retained and report the loss. Likewise when the
    /// ring no longer reaches back to `since + 1`. A `since` beyond the newest result of
    /// this run cannot come from this run either.
    pub fn resume(&self, since: u64, epoch: Option<&str>) -> Resume {
        let oldest = self.oldest();
        if epoch.is_some_and(|e| e != self.epoch) || since > self.head {
            return Resume {
                from: oldest,
                recovered: false,
            };
        }
        if since + 1 < oldest {
            return Resume {
                from: oldest,
                recovered: false,
            };
        }
        Resume {
            from: since + 1,
            recovered: true,
        }
    }

    /// Counts retained results in `from..=to` that a subscription with `filter` would be
    /// sent: those it matches, and those that leave it.
    pub fn count_matching(&self, from: u64, to: u64, filter: &Filter) -> usize {
        self.range(from, to).filter(|e| sent(e, filter)).count()
    }

    /// As [`count_matching`](History::count_matching), over `results` from `from` on.
    pub fn count_in(results: &[Arc<ScanEvent>], from: u64, filter: &Filter) -> usize {
        results
            .iter()
            .filter(|e| e.seq >= from && sent(e, filter))
            .count()
    }

    /// Retained results in `from..=to`, oldest first.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &Arc<ScanEvent>> {
        let first = self.oldest();
        let skip = from.saturating_sub(first);
        let take = (to + 1).saturating_sub(from.max(first));
        self.ring
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(usize::try_from(take).unwrap_or(usize::MAX))
    }

    /// The open opportunities `filter` matches, oldest first.
    pub fn active_matching(&self, filter: &Filter) -> Vec<&Arc<ScanEvent>> {
        let mut rows: Vec<_> = self.active.values().filter(|e| filter.matches(e)).collect();
        rows.sort_unstable_by_key(|e| e.seq);
        rows
    }
}

/// Would a subscription with `filter` be sent `e` (it matches, or it leaves)?
fn sent(e: &ScanEvent, filter: &Filter) -> bool {
    filter.matches(e) || filter.leaves(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ScanResult;
    use std::time::SystemTime;

    fn ev(seq: u64, symbol: &str, kind: EventKind) -> Arc<ScanEvent> {
        let r = ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol: symbol.into(),
            scan: Scan::Firehose,
            event: kind,
            score: 1.0,
            price: 1.0,
            change_pct: 0.0,
            volume: 1,
            volume_ratio: 1.0,
            rsi: None,
            source_ts: None,
            adhoc: false,
        };
        Arc::new(ScanEvent::publish(&r, seq, SystemTime::now()))
    }

    fn filled(capacity: usize, n: u64) -> History {
        let mut h = History::new(capacity, "e".into());
        for seq in 1..=n {
            h.push(ev(seq, "S", EventKind::Update));
        }
        h
    }

    #[test]
    fn resume_cases() {
        let h = filled(5, 10); // retains 6..=10
        let cases = [
            (10, Some("e"), 11, true),
            (7, Some("e"), 8, true),
            (5, Some("e"), 6, true),
            (5, None, 6, true),
            (4, Some("e"), 6, false),
            (0, Some("e"), 6, false),
            (7, Some("other"), 6, false),
            (11, Some("e"), 6, false),
        ];
        for (since, epoch, from, recovered) in cases {
            let got = h.resume(since, epoch);
            assert_eq!(
                got,
                Resume { from, recovered },
                "since {since} epoch {epoch:?}"
            );
        }
    }

    #[test]
    fn ring_keeps_the_newest_and_indexes_by_seq() {
        let h = filled(5, 10);
        assert_eq!((h.oldest(), h.head(), h.len()), (6, 10, 5));
        let seqs: Vec<u64> = h.range(8, 20).map(|e| e.seq).collect();
        assert_eq!(seqs, [8, 9, 10]);
        let seqs: Vec<u64> = h.range(1, 7).map(|e| e.seq).collect();
        assert_eq!(seqs, [6, 7]);
        assert_eq!(h.range(11, 20).count(), 0);
    }

    #[test]
    fn active_set_follows_new_update_clear() {
        let mut h = History::new(100, "e".into());
        h.push(ev(1, "A", EventKind::New));
        h.push(ev(2, "B", EventKind::New));
        h.push(ev(3, "A", EventKind::Update));
        h.push(ev(4, "B", EventKind::Clear));
        let all = Filter::default();
        let rows: Vec<u64> = h.active_matching(&all).iter().map(|e| e.seq).collect();
        assert_eq!(rows, [3]);
        assert_eq!(h.active_len(), 1);
    }

    #[test]
    fn a_skipped_result_is_replayed_but_changes_no_row() {
        let mut h = History::new(100, "e".into());
        h.push(ev(1, "A", EventKind::New));
        h.push_skipped(ev(2, "A", EventKind::Update));
        h.push_skipped(ev(3, "B", EventKind::New));
        let all = Filter::default();
        let rows =
            |h: &History| -> Vec<u64> { h.active_matching(&all).iter().map(|e| e.seq).collect() };
        assert_eq!(
            rows(&h),
            [1],
            "live subscribers still hold A from 1, and no B"
        );
        assert_eq!(h.head(), 3);
        let replayed: Vec<u64> = h.range(1, 3).map(|e| e.seq).collect();
        assert_eq!(replayed, [1, 2, 3]);
        // What superseded them goes out and brings the rows to the present.
        h.push(ev(4, "A", EventKind::Update));
        h.push(ev(5, "B", EventKind::Clear));
        assert_eq!(rows(&h), [4]);
    }

    #[test]
    fn a_restored_history_continues_at_its_head_with_its_gapless_tail() {
        let tail: Vec<_> = [3, 5, 6, 7]
            .into_iter()
            .map(|seq| ev(seq, &format!("S{seq}"), EventKind::New))
            .collect();
        let open = vec![
            ev(1, "OLD", EventKind::New),
            ev(2, "GONE", EventKind::Clear),
        ];
        let mut h = History::restore(10, "e1".into(), 7, tail, open);
        assert_eq!((h.head(), h.oldest(), h.len()), (7, 5, 3));
        assert_eq!(h.active_len(), 1, "only the open row from before the tail");
        assert!(h.resume(5, Some("e1")).recovered);
        assert!(
            !h.resume(3, Some("e1")).recovered,
            "6 and 7 without 4 and 5"
        );
        h.push(ev(8, "NEXT", EventKind::New));
        assert_eq!((h.head(), h.oldest()), (8, 5));
        // A gap: the ring starts again after it.
        h.push(ev(10, "LATER", EventKind::New));
        assert_eq!((h.head(), h.oldest(), h.len()), (10, 10, 1));
    }
}
