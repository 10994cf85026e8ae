//! Conflation of a lagging edge's input (PROTOCOL.md, "Overload"): when results wait
//! longer than `max_lag`, the edge takes its whole input into a [`Backlog`] and skips
//! what a later event of the same (symbol, scan) in it makes moot, so subscribers get
//! fresh state instead of a queue of stale updates. Sans-IO: events in, plans out.
//!
//! - An `update` followed by any later event of its key is skipped; the next `update`
//!   takes over its previous state (a subscription judges `left` from what it last saw).
//! - A `new` whose `clear` follows is skipped, and so is the `clear`: the row would
//!   appear and vanish unseen.
//! - Ad-hoc results and every other event pass untouched, in order; every result still
//!   enters the history ring, so a resume replays everything.
//!
//! A subscription that saw a skipped event all the same (from a replay taken while the
//! backlog was being sent; a snapshot shows only what live subscribers were sent) is told
//! what it needs: its connection is "live from" a later `seq`, and the plans below answer
//! by that.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;

use super::broadcast::{Delivery, Subscription, delivery};
use crate::bus::Event;
use crate::event::{EventKind, FilterValues, ScanEvent};

/// What goes to the subscriptions of one held result.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Every subscription it matches, as when the edge keeps up.
    Send,
    /// None: a later event of its key made it moot (the history still keeps it).
    Skip,
    /// A `clear` whose `new` (this `seq`) was skipped: only a connection that replayed
    /// past that `new` can hold the row.
    ClearAfter(u64),
    /// An `update` that took over skipped updates: each one's `seq` and previous state,
    /// oldest first. A subscription whose row any of those states (or this one's own
    /// previous state) matched is told it `left` when this one does not match.
    Superseding(Vec<(u64, Option<FilterValues>)>),
}

/// A held event and, for a result, its plan.
#[derive(Debug)]
pub struct Held {
    pub event: Event,
    pub plan: Plan,
}

/// A result's (symbol, scan), compared through the result itself (no copy of the name).
#[derive(Debug, Clone)]
struct Key(Arc<ScanEvent>);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.scan == other.0.scan && self.0.symbol_key == other.0.symbol_key
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.symbol_key.hash(h);
        self.0.scan.hash(h);
    }
}

/// Where a key's unsent results stand, by position in the backlog (counted from the
/// first event ever held).
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Its last result not skipped.
    last: u64,
    /// Its `new`, while unsent and not skipped.
    new_at: Option<u64>,
}

/// Events taken from the input and not yet sent, conflated as they come.
#[derive(Debug, Default)]
pub struct Backlog {
    queue: VecDeque<Held>,
    /// Position of `queue[0]`.
    front: u64,
    open: AHashMap<Key, Open>,
    /// Results skipped since last asked (a `clear` sent only to connections that
    /// replayed past its `new` counts).
    conflated: u64,
}

impl Backlog {
    /// Events held.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Results skipped since the last call.
    pub fn take_conflated(&mut self) -> u64 {
        std::mem::take(&mut self.conflated)
    }

    /// When the oldest held result was published.
    pub fn oldest_result(&self) -> Option<Instant> {
        self.queue.iter().find_map(|h| match &h.event {
            Event::Result(ev) => Some(ev.published),
            _ => None,
        })
    }

    /// Holds `event` behind the others, skipping what it makes moot.
    pub fn push(&mut self, event: Event) {
        let at = self.front + self.queue.len() as u64;
        let plan = match &event {
            Event::Result(ev) if !ev.adhoc => self.conflate(ev, at),
            // A late edge's start (or a bus that skipped ahead): what came before it is
            // another stretch of the run, never superseded from across it.
            Event::Cut(_) => {
                self.open.clear();
                Plan::Send
            }
            _ => Plan::Send,
        };
        self.queue.push_back(Held { event, plan });
    }

    /// The next event to send, in order.
    pub fn pop(&mut self) -> Option<Held> {
        let held = self.queue.pop_front()?;
        let at = self.front;
        self.front += 1;
        if let Event::Result(ev) = &held.event {
            let key = Key(Arc::clone(ev));
            if let Some(open) = self.open.get_mut(&key) {
                if open.last == at {
                    self.open.remove(&key);
                } else if open.new_at == Some(at) {
                    open.new_at = None;
                }
            }
        }
        Some(held)
    }

    /// `ev`'s plan, at position `at`, after skipping what it supersedes.
    fn conflate(&mut self, ev: &Arc<ScanEvent>, at: u64) -> Plan {
        let key = Key(Arc::clone(ev));
        let Some(open) = self.open.get(&key).copied() else {
            let new_at = (ev.kind == EventKind::New).then_some(at);
            if ev.kind != EventKind::Clear {
                self.open.insert(key, Open { last: at, new_at });
            }
            return Plan::Send;
        };
        // An unsent update before this event is moot: skip it, and carry what it took
        // over, with its own previous state, to this one.
        let mut chain = Vec::new();
        if let Some(prev) = self.at_mut(open.last) {
            if let Event::Result(p) = &prev.event {
                if p.kind == EventKind::Update {
                    let (seq, prior) = (p.seq, p.prior);
                    if let Plan::Superseding(taken) = std::mem::replace(&mut prev.plan, Plan::Skip)
                    {
                        chain = taken;
                    }
                    chain.push((seq, prior));
                    self.conflated += 1;
                }
            }
        }
        match ev.kind {
            EventKind::Clear => {
                self.open.remove(&key);
                match open.new_at.and_then(|n| self.skip_new(n)) {
                    Some(new_seq) => {
                        self.conflated += 1;
                        Plan::ClearAfter(new_seq)
                    }
                    None => Plan::Send,
                }
            }
            kind => {
                let new_at = if kind == EventKind::New {
                    Some(at)
                } else {
                    open.new_at
                };
                self.open.insert(key, Open { last: at, new_at });
                if chain.is_empty() {
                    Plan::Send
                } else {
                    Plan::Superseding(chain)
                }
            }
        }
    }

    /// Skips the held `new` at `at`; its `seq`.
    fn skip_new(&mut self, at: u64) -> Option<u64> {
        let held = self.at_mut(at)?;
        let Event::Result(ev) = &held.event else {
            return None;
        };
        let seq = ev.seq;
        held.plan = Plan::Skip;
        self.conflated += 1;
        Some(seq)
    }

    fn at_mut(&mut self, at: u64) -> Option<&mut Held> {
        let i = at.checked_sub(self.front)?;
        self.queue.get_mut(usize::try_from(i).ok()?)
    }
}

/// The updates that took skipped ones over, while the history holds them, with the
/// states they took over: a replay from the history (another subscription of the
/// connection resumed, or the client itself) judges their `left` as the live stream did.
#[derive(Debug, Default)]
pub struct Superseded {
    priors: BTreeMap<u64, Box<[Option<FilterValues>]>>,
}

impl Superseded {
    /// `ev` went out under `plan`; the history now starts at `oldest`.
    pub fn record(&mut self, ev: &ScanEvent, plan: &Plan, oldest: u64) {
        if let Plan::Superseding(chain) = plan {
            let priors = chain.iter().map(|(_, prior)| *prior).collect();
            self.priors.insert(ev.seq, priors);
        }
        while self
            .priors
            .first_key_value()
            .is_some_and(|(&seq, _)| seq < oldest)
        {
            self.priors.pop_first();
        }
    }

    /// Which of `subs` a result replayed from the history goes to.
    pub fn delivery(&self, subs: &[Subscription], ev: &ScanEvent) -> Delivery {
        match self.priors.get(&ev.seq) {
            Some(priors) => superseding(subs, ev, priors.iter().copied()),
            None => delivery(subs, ev),
        }
    }
}

/// Which of a connection's subscriptions `ev` goes to under `plan`; the connection has
/// taken results live (not from a replay) from `seq` `live_from` on.
pub fn planned_delivery(
    subs: &[Subscription],
    live_from: u64,
    ev: &ScanEvent,
    plan: &Plan,
) -> Delivery {
    let mut d = Delivery::default();
    match plan {
        Plan::Send => return delivery(subs, ev),
        Plan::Skip => {}
        Plan::ClearAfter(new_seq) => {
            // Only a replay sends a skipped `new`. Every subscription of a connection that
            // replayed past it is told (one that took its name over holds its rows; any
            // other removes nothing).
            for (i, sub) in subs.iter().enumerate() {
                if sub.start <= ev.seq && live_from > *new_seq && sub.filter.matches(ev) {
                    d.takes |= 1 << i;
                }
            }
        }
        Plan::Superseding(chain) => {
            return superseding(subs, ev, chain.iter().map(|(_, prior)| *prior));
        }
    }
    d
}

/// [`delivery`] for an update that took over skipped ones whose previous states were
/// `priors`. The subscription last saw one of those states (the one before the skipped
/// updates, or one it had from the history: a snapshot or a replay taken meanwhile), or
/// this update's own previous state. If any held its row, it leaves; a `left` for a row a
/// client does not hold removes nothing.
fn superseding(
    subs: &[Subscription],
    ev: &ScanEvent,
    priors: impl Iterator<Item = Option<FilterValues>> + Clone,
) -> Delivery {
    let mut d = Delivery::default();
    for (i, sub) in subs.iter().enumerate() {
        if sub.start > ev.seq {
            continue;
        }
        if sub.filter.matches(ev) {
            d.takes |= 1 << i;
        } else if std::iter::once(ev.prior)
            .chain(priors.clone())
            .any(|prior| sub.filter.leaves_from(ev, prior))
        {
            d.left |= 1 << i;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;
    use serde_json::json;

    use super::*;
    use crate::reactor::broadcast::tests::{result, sub};

    /// Result `seq` of `symbol`, `kind`, `score`, after the key's state `prior`.
    fn ev(seq: u64, symbol: &str, kind: EventKind, score: f64, prior: Option<f64>) -> Event {
        let mut r = result(symbol);
        r.event = kind;
        r.score = score;
        let values = |score| FilterValues {
            score,
            price: r.price,
            change_pct: r.change_pct,
            volume_ratio: r.volume_ratio,
        };
        let prior = prior.map(values);
        Event::Result(Arc::new(
            ScanEvent::publish(&r, seq, SystemTime::now()).with_prior(prior),
        ))
    }

    fn plans(backlog: &mut Backlog) -> Vec<Plan> {
        std::iter::from_fn(|| backlog.pop().map(|h| h.plan)).collect()
    }

    fn prior(score: f64) -> Option<FilterValues> {
        let r = result("X");
        Some(FilterValues {
            score,
            price: r.price,
            change_pct: r.change_pct,
            volume_ratio: r.volume_ratio,
        })
    }

    #[test]
    fn an_update_is_skipped_for_a_later_event_of_its_key_and_handed_its_prior() {
        use EventKind::*;
        let mut b = Backlog::default();
        b.push(ev(1, "A", New, 1.0, None));
        b.push(ev(2, "A", Update, 2.0, Some(1.0)));
        b.push(ev(3, "B", New, 1.0, None));
        b.push(ev(4, "A", Update, 3.0, Some(2.0)));
        b.push(ev(5, "A", Update, 4.0, Some(3.0)));
        assert_eq!(b.take_conflated(), 2);
        assert_eq!(
            plans(&mut b),
            [
                Plan::Send,
                Plan::Skip,
                Plan::Send,
                Plan::Skip,
                Plan::Superseding(vec![(2, prior(1.0)), (4, prior(2.0))]),
            ]
        );
        assert_eq!(b.take_conflated(), 0);
    }

    #[test]
    fn a_new_and_its_clear_both_held_are_skipped() {
        use EventKind::*;
        let mut b = Backlog::default();
        b.push(ev(1, "A", New, 1.0, None));
        b.push(ev(2, "A", Update, 2.0, Some(1.0)));
        b.push(ev(3, "A", Clear, 2.0, None));
        b.push(ev(4, "A", New, 5.0, None));
        assert_eq!(b.take_conflated(), 3);
        assert_eq!(
            plans(&mut b),
            [Plan::Skip, Plan::Skip, Plan::ClearAfter(1), Plan::Send]
        );
    }

    #[test]
    fn what_was_sent_is_not_conflated_against() {
        use EventKind::*;
        let mut b = Backlog::default();
        b.push(ev(1, "A", New, 1.0, None));
        b.push(ev(2, "A", Update, 2.0, Some(1.0)));
        assert_eq!(plans(&mut b), [Plan::Send, Plan::Send]);
        b.push(ev(3, "A", Update, 3.0, Some(2.0)));
        b.push(ev(4, "A", Clear, 3.0, None));
        // The new went out: its clear must too.
        assert_eq!(plans(&mut b), [Plan::Skip, Plan::Send]);
    }

    #[test]
    fn ad_hoc_results_and_other_events_pass_untouched() {
        use EventKind::*;
        let mut b = Backlog::default();
        let adhoc = |seq, kind, prior| {
            let Event::Result(e) = ev(seq, "A", kind, 1.0, prior) else {
                unreachable!()
            };
            let mut r = result("A");
            r.event = kind;
            r.adhoc = true;
            Event::Result(Arc::new(
                ScanEvent::publish(&r, e.seq, SystemTime::now()).with_prior(e.prior),
            ))
        };
        b.push(adhoc(1, New, None));
        b.push(Event::Status(crate::scanner::ScannerStatus::initial()));
        b.push(adhoc(2, Update, Some(1.0)));
        b.push(adhoc(3, Clear, None));
        assert_eq!(b.take_conflated(), 0);
        assert_eq!(plans(&mut b), vec![Plan::Send; 4]);
    }

    #[test]
    fn a_replay_judges_a_superseding_update_as_the_live_stream_did() {
        use EventKind::*;
        let subs = vec![sub("big", json!({"min_score": 2}))];
        let mut b = Backlog::default();
        b.push(ev(1, "A", Update, 1.0, Some(4.0)));
        b.push(ev(2, "A", Update, 1.5, Some(1.0)));
        let mut superseded = Superseded::default();
        let mut replayed = Vec::new();
        while let Some(held) = b.pop() {
            let Event::Result(e) = held.event else {
                unreachable!()
            };
            superseded.record(&e, &held.plan, 1);
            replayed.push(e);
        }
        // From the history: the skipped update as it was, and the last with `left`
        // for a subscription that held the row at 4.
        assert_eq!(superseded.delivery(&subs, &replayed[0]).left, 1);
        assert_eq!(superseded.delivery(&subs, &replayed[1]).left, 1);
        assert_eq!(delivery(&subs, &replayed[1]).left, 0);
        // Once the history no longer holds it, it is forgotten.
        superseded.record(&replayed[0], &Plan::Send, 3);
        assert_eq!(superseded.delivery(&subs, &replayed[1]).left, 0);
    }

    #[test]
    fn a_cut_parts_what_came_before_it_from_what_follows() {
        use EventKind::*;
        let mut b = Backlog::default();
        b.push(ev(1, "A", Update, 2.0, Some(1.0)));
        b.push(Event::Cut(Box::new(crate::bus::Cut {
            history: crate::history::History::new(16, "next".into()),
            status: crate::scanner::ScannerStatus::initial(),
            alerts: Vec::new(),
            alert_stats: Default::default(),
            symbols: Vec::new(),
        })));
        b.push(ev(2, "A", Update, 3.0, Some(2.0)));
        assert_eq!(b.len(), 3);
        assert_eq!(b.take_conflated(), 0);
        assert_eq!(plans(&mut b), vec![Plan::Send; 3]);
    }

    #[test]
    fn left_is_judged_from_what_each_subscription_last_saw() {
        use EventKind::*;
        let subs = vec![sub("all", json!({})), sub("big", json!({"min_score": 2}))];
        // `big` saw score 2.5; the skipped update went to 1.0 and the survivor is 1.5.
        let Event::Result(last) = ev(7, "A", Update, 1.5, Some(1.0)) else {
            unreachable!()
        };
        let plan = Plan::Superseding(vec![(6, prior(2.5))]);
        let d = planned_delivery(&subs, 0, &last, &plan);
        assert_eq!((d.takes, d.left), (0b01, 0b10));
        // Against its own prior it would leave nothing: the row would stay.
        assert_eq!(delivery(&subs, &last).left, 0);
        // Whatever the connection saw in between, the row goes: a client without it
        // removes nothing.
        assert_eq!(planned_delivery(&subs, 7, &last, &plan).left, 0b10);
    }

    #[test]
    fn a_skipped_pairs_clear_reaches_only_who_saw_the_new() {
        use EventKind::*;
        let mut subs = vec![sub("old", json!({})), sub("late", json!({}))];
        subs[1].start = 5; // took a snapshot after the new (seq 4) entered the history
        let Event::Result(clear) = ev(8, "A", Clear, 1.0, None) else {
            unreachable!()
        };
        // Live all along, or replayed up to before the new: nobody was sent it.
        for live_from in [0, 3, 4] {
            let d = planned_delivery(&subs, live_from, &clear, &Plan::ClearAfter(4));
            assert!(d.is_empty(), "live from {live_from}");
        }
        // Replayed past it: the replay sent it.
        let d = planned_delivery(&subs, 5, &clear, &Plan::ClearAfter(4));
        assert_eq!((d.takes, d.left), (0b11, 0));
        assert!(planned_delivery(&subs, 5, &clear, &Plan::Skip).is_empty());
    }

    /// Rows by symbol: the score each shows.
    type Table = BTreeMap<String, f64>;

    /// A client's view: its subscription, and the table kept from what it was sent.
    struct Client {
        sub: Subscription,
        live_from: u64,
        /// Taking results from the history, not live: another subscription of its
        /// connection resumed.
        replaying: bool,
        table: Table,
    }

    impl Client {
        fn apply(&mut self, e: &ScanEvent, d: Delivery) {
            if d.left != 0 || (d.takes != 0 && e.kind == EventKind::Clear) {
                self.table.remove(&*e.symbol_key);
            } else if d.takes != 0 {
                self.table.insert(e.symbol_key.to_string(), e.score);
            }
        }
    }

    /// The rows a snapshot with `filter` holds, from each key's last event (of those sent
    /// live, for a fresh snapshot; of all, for a replay).
    fn snapshot(last: &BTreeMap<String, Arc<ScanEvent>>, sub: &Subscription) -> Table {
        last.iter()
            .filter(|(_, e)| e.kind != EventKind::Clear && sub.filter.matches(e))
            .map(|(s, e)| (s.clone(), e.score))
            .collect()
    }

    #[test]
    fn tables_kept_from_conflated_events_equal_a_fresh_snapshot() {
        use EventKind::*;
        let filters = [
            json!({}),
            json!({"min_score": 2}),
            json!({"min_score": 3}),
            json!({"symbols": ["A", "B"], "min_score": 2}),
        ];
        for seed in 0..300u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut b = Backlog::default();
            // Each key's score while open.
            let mut open: BTreeMap<&str, f64> = BTreeMap::new();
            let n = rng.random_range(1..60);
            for seq in 1..=n {
                let symbol = ["A", "B", "C"][rng.random_range(0..3)];
                let score = [1.0, 2.5, 4.0][rng.random_range(0..3)];
                let event = match open.get(symbol).copied() {
                    None => {
                        open.insert(symbol, score);
                        ev(seq, symbol, New, score, None)
                    }
                    Some(was) if rng.random_bool(0.25) => {
                        open.remove(symbol);
                        ev(seq, symbol, Clear, was, None)
                    }
                    Some(was) => {
                        open.insert(symbol, score);
                        ev(seq, symbol, Update, score, Some(was))
                    }
                };
                b.push(event);
            }
            // Clients that joined before any of it, and more that join while it is sent:
            // by a snapshot (their start) or by a replay (the connection goes live).
            // Each key's last event, and its last one not skipped (what snapshots show).
            let mut last: BTreeMap<String, Arc<ScanEvent>> = BTreeMap::new();
            let mut shown: BTreeMap<String, Arc<ScanEvent>> = BTreeMap::new();
            let mut clients: Vec<Client> = filters
                .iter()
                .map(|f| Client {
                    sub: sub("s", f.clone()),
                    live_from: 0,
                    replaying: false,
                    table: Table::new(),
                })
                .collect();
            let mut head = 0;
            let mut superseded = Superseded::default();
            while let Some(held) = b.pop() {
                if rng.random_bool(0.1) {
                    let mut s = sub("s", filters[rng.random_range(0..filters.len())].clone());
                    let by_replay = rng.random_bool(0.5);
                    s.start = if by_replay { 1 } else { head + 1 };
                    clients.push(Client {
                        table: snapshot(if by_replay { &last } else { &shown }, &s),
                        sub: s,
                        live_from: if by_replay { head + 1 } else { 0 },
                        replaying: false,
                    });
                }
                // A live client's connection starts replaying (another subscription of
                // it resumed): it takes what comes from the history, every result with
                // its own previous state, until the replay catches up.
                if let Some(c) = clients.get_mut(rng.random_range(0..filters.len() * 4)) {
                    if c.replaying {
                        c.replaying = false;
                        c.live_from = head + 1;
                    } else {
                        c.replaying = true;
                        c.sub.start = c.sub.start.max(head + 1);
                    }
                }
                let Event::Result(e) = held.event else {
                    continue;
                };
                head = e.seq;
                superseded.record(&e, &held.plan, 1);
                for c in &mut clients {
                    let subs = std::slice::from_ref(&c.sub);
                    let d = if c.replaying {
                        superseded.delivery(subs, &e)
                    } else {
                        planned_delivery(subs, c.live_from, &e, &held.plan)
                    };
                    c.apply(&e, d);
                }
                if held.plan != Plan::Skip {
                    shown.insert(e.symbol_key.to_string(), Arc::clone(&e));
                }
                last.insert(e.symbol_key.to_string(), e);
            }
            assert_eq!(
                snapshot(&last, &clients[0].sub),
                snapshot(&shown, &clients[0].sub)
            );
            for c in &clients {
                assert_eq!(
                    c.table,
                    snapshot(&last, &c.sub),
                    "seed {seed}, filter {:?}, live from {}",
                    c.sub.filter,
                    c.live_from
                );
            }
        }
    }
}
