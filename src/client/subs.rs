//! The subscription manager: the subscriptions a caller wants, where each one stands, and
//! the routing of what arrives for them. Sans-IO: it takes parsed server messages and
//! gives back the messages to send and the events to report.
//!
//! Subscriptions are desired state. On every connect each one is sent again, with `since`
//! and `epoch` of the last result it delivered, so the server replays what the client
//! missed and nothing is lost or delivered twice. A subscription that keeps a live table
//! asks for a `snapshot` when it has nothing to resume from, and again after a gap, since
//! a replay cannot repair a table that missed results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use super::message::{Event, ResultMessage, Subscribed};
use crate::event::EventKind;
use crate::protocol::{Filter, FilterError, FilterSpec};

/// A caller's per-subscription callback; runs on the client thread.
pub type Callback = Box<dyn FnMut(&Event) + Send>;

/// The active opportunities of one subscription, by (symbol, scan): kept from `snapshot`
/// plus `new`/`update`/`clear`.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: HashMap<(String, String), ResultMessage>,
    /// The result the table is current to.
    pub seq: u64,
}

impl Table {
    /// The rows, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = &ResultMessage> {
        self.rows.values()
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row for `symbol` and `scan`.
    pub fn get(&self, symbol: &str, scan: &str) -> Option<&ResultMessage> {
        self.rows.get(&(symbol.to_owned(), scan.to_owned()))
    }

    fn reset(&mut self, seq: u64, results: &[ResultMessage]) {
        self.rows = results
            .iter()
            .map(|r| ((r.symbol.clone(), r.scan.clone()), r.clone()))
            .collect();
        self.seq = seq;
    }

    /// `r` leaves this table's filters: its row goes.
    fn leave(&mut self, r: &ResultMessage) {
        self.seq = r.seq;
        self.rows.remove(&(r.symbol.clone(), r.scan.clone()));
    }

    fn apply(&mut self, r: &ResultMessage) {
        self.seq = r.seq;
        // An ad-hoc result answers a request: the server keeps it out of the open set (and
        // so out of snapshots), and no `clear` will ever end it.
        if r.adhoc {
            return;
        }
        let key = (r.symbol.clone(), r.scan.clone());
        match r.event {
            EventKind::New | EventKind::Update => {
                self.rows.insert(key, r.clone());
            }
            EventKind::Clear => {
                self.rows.remove(&key);
            }
        }
    }
}

/// A shared handle on a subscription's live table, readable from any thread.
#[derive(Debug, Clone, Default)]
pub struct TableHandle(Arc<Mutex<Table>>);

impl TableHandle {
    /// Locks the table for reading.
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        // A callback that panicked mid-update leaves a table still worth reading.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Sub {
    name: String,
    filters: FilterSpec,
    table: Option<TableHandle>,
    callback: Option<Callback>,
    /// Where the subscription stands: the run, and the last result delivered (or the
    /// newest result when it was subscribed, which stands for everything before it).
    epoch: Option<String>,
    last: u64,
    /// Its `subscribed` came on this connection: from then on the connection's results
    /// arrive in `seq` order, and one that does not name it is one it did not match.
    live: bool,
}

impl Sub {
    fn position(&self) -> Option<(u64, &str)> {
        self.epoch.as_deref().map(|e| (self.last, e))
    }
}

/// The subscriptions, their positions and tables.
#[derive(Default)]
pub struct SubscriptionManager {
    subs: Vec<Sub>,
    /// The largest symbol list the server takes; checked here so a mistake is the
    /// caller's error at once rather than a `bad_filter` later.
    max_symbols: Option<usize>,
    next_id: u64,
    /// Subscribe request ids still unanswered, with their subscription.
    pending: HashMap<String, String>,
}

impl std::fmt::Debug for SubscriptionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.subs.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("SubscriptionManager")
            .field("subscriptions", &names)
            .finish()
    }
}

impl SubscriptionManager {
    /// An empty manager.
    pub fn new() -> SubscriptionManager {
        SubscriptionManager::default()
    }

    /// Adds (or replaces) subscription `name`. A replaced subscription without a table
    /// keeps its position, so replacing it loses nothing.
    pub fn add(
        &mut self,
        name: &str,
        filters: FilterSpec,
        table: Option<TableHandle>,
        callback: Option<Callback>,
    ) -> Result<(), FilterError> {
        self.check(&filters)?;
        let sub = Sub {
            name: name.to_owned(),
            filters,
            table,
            callback,
            epoch: None,
            last: 0,
            live: false,
        };
        match self.subs.iter_mut().find(|s| s.name == name) {
            // A table starts from a snapshot; without one the position carries over.
            Some(old) if sub.table.is_none() => {
                let (epoch, last) = (old.epoch.take(), old.last);
                *old = Sub { epoch, last, ..sub };
            }
            Some(old) => *old = sub,
            None => self.subs.push(sub),
        }
        Ok(())
    }

    /// Checks filters as the server will.
    pub fn check(&self, filters: &FilterSpec) -> Result<(), FilterError> {
        Filter::from_spec(filters, self.max_symbols.unwrap_or(usize::MAX)).map(drop)
    }

    /// Changes the filters of `name`; false when there is no such subscription.
    pub fn set_filters(&mut self, name: &str, filters: FilterSpec) -> Result<bool, FilterError> {
        self.check(&filters)?;
        Ok(match self.subs.iter_mut().find(|s| s.name == name) {
            Some(sub) => {
                sub.filters = filters;
                if sub.table.is_some() {
                    // Rows kept under the old filters say nothing of the new ones.
                    sub.epoch = None;
                }
                true
            }
            None => false,
        })
    }

    /// Removes `name`; false when there was no such subscription.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.subs.len();
        self.subs.retain(|s| s.name != name);
        self.subs.len() != before
    }

    /// The subscription names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.subs.iter().map(|s| s.name.as_str())
    }

    /// The live table of `name`, if it keeps one.
    pub fn table(&self, name: &str) -> Option<TableHandle> {
        self.subs
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.table.clone())
    }

    /// Caps the symbols a filter may hold (the server's `max_filter_symbols`).
    pub fn set_max_symbols(&mut self, max: usize) {
        self.max_symbols = Some(max);
    }

    /// The subscribe message for `name`. With `resume`, from its position when it has
    /// one (on a new connection); without, the server's subscription is replaced in
    /// place and goes on from where it stood (a change of filters on a live connection).
    /// With no position, a table asks for a snapshot.
    pub fn subscribe_message(&mut self, name: &str, resume: bool) -> Option<String> {
        self.next_id += 1;
        let id = format!("sub-{}", self.next_id);
        let sub = self.subs.iter_mut().find(|s| s.name == name)?;
        sub.live = false;
        let mut data = json!({"subscription": sub.name, "filters": sub.filters});
        match sub.position() {
            Some(_) if !resume => {}
            Some((since, epoch)) => {
                data["since"] = json!(since);
                data["epoch"] = json!(epoch);
            }
            None if sub.table.is_some() => data["snapshot"] = json!(true),
            None => {}
        }
        self.pending.insert(id.clone(), sub.name.clone());
        Some(json!({"type": "subscribe", "id": id, "data": data}).to_string())
    }

    /// A fresh subscribe with a snapshot for `name`, which gives up its position: for a
    /// table that can no longer be kept exact by replay.
    fn resnapshot_message(&mut self, name: &str) -> Option<String> {
        let sub = self.subs.iter_mut().find(|s| s.name == name)?;
        sub.epoch = None;
        self.subscribe_message(name, false)
    }

    /// The unsubscribe message for `name`.
    pub fn unsubscribe_message(name: &str) -> String {
        json!({"type": "unsubscribe", "data": {"subscription": name}}).to_string()
    }

    /// Every subscribe message a new connection needs, in the order they were added.
    pub fn on_connect(&mut self) -> Vec<String> {
        self.pending.clear();
        let names: Vec<String> = self.subs.iter().map(|s| s.name.clone()).collect();
        names
            .iter()
            .filter_map(|n| self.subscribe_message(n, true))
            .collect()
    }

    /// The connection ended: nothing is live until subscribed again.
    pub fn on_disconnect(&mut self) {
        self.pending.clear();
        for sub in &mut self.subs {
            sub.live = false;
        }
    }

    /// The subscription a subscribe request id was for.
    pub fn request_subscription(&mut self, id: &str) -> Option<String> {
        self.pending.remove(id)
    }

    /// A `subscribed` reply. Returns the events to report and any message to send (a
    /// fresh snapshot for a table after a gap).
    pub fn on_subscribed(
        &mut self,
        s: Subscribed,
        id: Option<&str>,
    ) -> (Vec<Event>, Option<String>) {
        if let Some(id) = id {
            self.pending.remove(id);
        }
        let Some(sub) = self.subs.iter_mut().find(|x| x.name == s.subscription) else {
            return (Vec::new(), None);
        };
        let mut events = Vec::new();
        let mut send = None;
        match sub
            .position()
            .map(|(since, epoch)| (since, epoch.to_owned()))
        {
            Some((since, epoch)) if !s.recovered => {
                let gap = Event::Gap {
                    subscription: sub.name.clone(),
                    since,
                    epoch: epoch.clone(),
                    server_epoch: s.epoch.clone(),
                };
                if epoch != s.epoch || since > s.seq {
                    // A new run numbers from 1 again: everything retained is new to us.
                    sub.last = 0;
                }
                sub.epoch = Some(s.epoch.clone());
                call(sub, &gap);
                events.push(gap);
                if sub.table.is_some() {
                    let name = sub.name.clone();
                    send = self.resnapshot_message(&name);
                }
            }
            Some(_) => {}
            None => {
                sub.epoch = Some(s.epoch.clone());
                sub.last = s.seq;
            }
        }
        if let Some(sub) = self.subs.iter_mut().find(|x| x.name == s.subscription) {
            sub.live = true;
            let ev = Event::Subscribed(s);
            call(sub, &ev);
            events.push(ev);
        }
        (events, send)
    }

    /// A `snapshot`: resets the table and moves the position to its `seq`.
    pub fn on_snapshot(
        &mut self,
        subscription: &str,
        seq: u64,
        results: Vec<ResultMessage>,
    ) -> Option<Event> {
        let sub = self.subs.iter_mut().find(|s| s.name == subscription)?;
        if let Some(table) = &sub.table {
            table.lock().reset(seq, &results);
        }
        sub.last = sub.last.max(seq);
        let ev = Event::Snapshot {
            subscription: subscription.to_owned(),
            seq,
            results,
        };
        call(sub, &ev);
        Some(ev)
    }

    /// A `result`: routed to each of its subscriptions (`subscriptions`, and `left` for
    /// those it drops out of) that has not had it yet. Returns the result with both lists
    /// narrowed to those, or `None` when none takes it (a duplicate, or for a subscription
    /// removed meanwhile).
    pub fn on_result(&mut self, mut r: ResultMessage) -> Option<Event> {
        let takers = self.first_time(&r.subscriptions, r.seq);
        let leavers = self.first_time(&r.left, r.seq);
        for (names, leaving) in [(&takers, false), (&leavers, true)] {
            for name in names {
                let table = self.subs.iter().find(|s| s.name == *name);
                if let Some(table) = table.and_then(|s| s.table.as_ref()) {
                    let mut table = table.lock();
                    if leaving {
                        table.leave(&r);
                    } else {
                        table.apply(&r);
                    }
                }
            }
        }
        // The other live subscriptions did not match this result: they stand at it too, so
        // a quiet filter resumes from here rather than from its own last match, which the
        // server's history may no longer reach.
        for sub in &mut self.subs {
            if sub.live && sub.epoch.is_some() {
                sub.last = sub.last.max(r.seq);
            }
        }
        if takers.is_empty() && leavers.is_empty() {
            return None;
        }
        r.subscriptions = takers;
        r.left = leavers;
        let ev = Event::Result(r);
        if let Event::Result(r) = &ev {
            for name in r.subscriptions.iter().chain(&r.left) {
                if let Some(sub) = self.subs.iter_mut().find(|s| s.name == *name) {
                    call(sub, &ev);
                }
            }
        }
        Some(ev)
    }

    /// The subscriptions among `names` that have not had result `seq` yet, each moved to
    /// it.
    fn first_time(&mut self, names: &[String], seq: u64) -> Vec<String> {
        let mut fresh = Vec::with_capacity(names.len());
        for name in names {
            let Some(sub) = self.subs.iter_mut().find(|s| s.name == *name) else {
                continue;
            };
            if seq <= sub.last && sub.epoch.is_some() {
                continue;
            }
            sub.last = seq;
            fresh.push(name.clone());
        }
        fresh
    }

    /// Where `name` stands: its run and last result.
    pub fn position(&self, name: &str) -> Option<(u64, String)> {
        let sub = self.subs.iter().find(|s| s.name == name)?;
        sub.position().map(|(seq, epoch)| (seq, epoch.to_owned()))
    }

    /// Calls `name`'s callback with an event about it (an error answering its subscribe).
    pub fn notify(&mut self, name: &str, ev: &Event) {
        if let Some(sub) = self.subs.iter_mut().find(|s| s.name == name) {
            call(sub, ev);
        }
    }
}

fn call(sub: &mut Sub, ev: &Event) {
    if let Some(cb) = &mut sub.callback {
        cb(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds a subscription with a live table and no filters.
    fn add_table(m: &mut SubscriptionManager, name: &str) {
        m.add(
            name,
            FilterSpec::default(),
            Some(TableHandle::default()),
            None,
        )
        .unwrap();
    }
    use serde_json::Value;

    fn result(
        seq: u64,
        event: EventKind,
        symbol: &str,
        scan: &str,
        subs: &[&str],
    ) -> ResultMessage {
        ResultMessage {
            seq,
            event,
            symbol: symbol.to_owned(),
            scan: scan.to_owned(),
            score: seq as f64,
            price: 10.0,
            change_pct: 1.0,
            volume: 100,
            volume_ratio: 2.0,
            rsi: None,
            source_ts: None,
            adhoc: false,
            subscriptions: subs.iter().map(|s| (*s).to_owned()).collect(),
            left: Vec::new(),
            timestamp: String::new(),
        }
    }

    fn new(seq: u64, subs: &[&str]) -> ResultMessage {
        result(seq, EventKind::New, "AAPL", "volume_spike", subs)
    }

    fn subscribed(name: &str, epoch: &str, seq: u64, recovered: bool) -> Subscribed {
        Subscribed {
            subscription: name.to_owned(),
            epoch: epoch.to_owned(),
            seq,
            recovered,
            replayed: 0,
        }
    }

    fn parse(msg: &str) -> Value {
        serde_json::from_str(msg).expect("subscribe messages are JSON")
    }

    /// A callback that keeps every event it is called with.
    fn recorder() -> (Arc<Mutex<Vec<Event>>>, Callback) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        let cb: Callback = Box::new(move |ev: &Event| kept.lock().unwrap().push(ev.clone()));
        (seen, cb)
    }

    fn seqs(seen: &Arc<Mutex<Vec<Event>>>) -> Vec<u64> {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|ev| match ev {
                Event::Result(r) => Some(r.seq),
                _ => None,
            })
            .collect()
    }

    fn scans(names: &[&str]) -> FilterSpec {
        FilterSpec {
            scans: Some(names.iter().map(|s| (*s).to_owned()).collect()),
            ..FilterSpec::default()
        }
    }

    #[test]
    fn first_connect_has_no_position_and_the_next_resumes_from_subscribed() {
        let mut m = SubscriptionManager::new();
        m.add("main", scans(&["volume_spike"]), None, None).unwrap();
        let sent = m.on_connect();
        assert_eq!(sent.len(), 1);
        let msg = parse(&sent[0]);
        assert_eq!(msg["type"], "subscribe");
        assert_eq!(msg["data"]["subscription"], "main");
        assert_eq!(msg["data"]["filters"]["scans"][0], "volume_spike");
        // Nothing to resume from, and no table to fill: neither a position nor a snapshot.
        assert!(msg["data"].get("since").is_none());
        assert!(msg["data"].get("epoch").is_none());
        assert!(msg["data"].get("snapshot").is_none());
        // The request id leads back to the subscription it was for.
        let id = msg["id"].as_str().unwrap();
        assert_eq!(m.request_subscription(id).as_deref(), Some("main"));

        let (events, send) = m.on_subscribed(subscribed("main", "e1", 10, true), None);
        assert_eq!(send, None);
        assert_eq!(
            events,
            vec![Event::Subscribed(subscribed("main", "e1", 10, true))]
        );
        assert_eq!(m.position("main"), Some((10, "e1".to_owned())));

        m.on_disconnect();
        let msg = parse(&m.on_connect()[0]);
        assert_eq!(msg["data"]["since"], 10);
        assert_eq!(msg["data"]["epoch"], "e1");
        assert!(msg["data"].get("snapshot").is_none());
    }

    #[test]
    fn a_table_asks_for_a_snapshot_only_without_a_position() {
        let mut m = SubscriptionManager::new();
        add_table(&mut m, "t");
        let msg = parse(&m.on_connect()[0]);
        assert_eq!(msg["data"]["snapshot"], true);
        assert!(msg["data"].get("since").is_none());

        m.on_subscribed(subscribed("t", "e1", 7, true), None);
        // With a position, replay keeps the table exact: no snapshot.
        let msg = parse(&m.on_connect()[0]);
        assert_eq!(msg["data"]["since"], 7);
        assert_eq!(msg["data"]["epoch"], "e1");
        assert!(msg["data"].get("snapshot").is_none());
    }

    #[test]
    fn on_connect_sends_every_subscription_in_order_with_distinct_ids() {
        let mut m = SubscriptionManager::new();
        for name in ["b", "a", "c"] {
            m.add(name, FilterSpec::default(), None, None).unwrap();
        }
        let sent: Vec<Value> = m.on_connect().iter().map(|s| parse(s)).collect();
        let names: Vec<&str> = sent
            .iter()
            .map(|m| m["data"]["subscription"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "a", "c"]);
        let ids: Vec<&str> = sent.iter().map(|m| m["id"].as_str().unwrap()).collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        // A disconnect forgets the unanswered requests.
        m.on_disconnect();
        assert_eq!(m.request_subscription(ids[0]), None);
    }

    #[test]
    fn a_result_goes_only_to_existing_subscriptions_and_their_callbacks() {
        let mut m = SubscriptionManager::new();
        let (seen_a, cb_a) = recorder();
        m.add("a", FilterSpec::default(), None, Some(cb_a)).unwrap();
        let (seen_c, cb_c) = recorder();
        m.add("c", FilterSpec::default(), None, Some(cb_c)).unwrap();

        let ev = m.on_result(new(1, &["a", "b"])).expect("a takes it");
        match &ev {
            Event::Result(r) => {
                assert_eq!(r.subscriptions, ["a"]);
                assert_eq!(r.seq, 1);
            }
            other => panic!("expected a result, got {other:?}"),
        }
        assert_eq!(*seen_a.lock().unwrap(), vec![ev]);
        // Not listed: its callback stays quiet.
        assert!(seen_c.lock().unwrap().is_empty());

        // Nobody left to take it.
        assert_eq!(m.on_result(new(2, &["b"])), None);
        assert_eq!(m.on_result(new(3, &[])), None);
    }

    #[test]
    fn duplicates_are_dropped_per_subscription() {
        let mut m = SubscriptionManager::new();
        let (seen_a, cb_a) = recorder();
        m.add("a", FilterSpec::default(), None, Some(cb_a)).unwrap();
        let (seen_b, cb_b) = recorder();
        m.add("b", FilterSpec::default(), None, Some(cb_b)).unwrap();
        m.on_subscribed(subscribed("a", "e1", 10, true), None);
        m.on_subscribed(subscribed("b", "e1", 20, true), None);

        // At or before where each stands: already had, or stood for by `subscribed`.
        assert_eq!(m.on_result(new(10, &["a"])), None);
        assert_eq!(m.on_result(new(5, &["a", "b"])), None);
        assert!(seqs(&seen_a).is_empty());

        // 15 is new to a, old to b: only a takes it.
        let Some(Event::Result(r)) = m.on_result(new(15, &["a", "b"])) else {
            panic!("a takes 15");
        };
        assert_eq!(r.subscriptions, ["a"]);
        assert_eq!(m.position("a"), Some((15, "e1".to_owned())));
        assert_eq!(m.position("b"), Some((20, "e1".to_owned())));

        // The same result again is a duplicate for both.
        assert_eq!(m.on_result(new(15, &["a", "b"])), None);

        let Some(Event::Result(r)) = m.on_result(new(21, &["a", "b"])) else {
            panic!("both take 21");
        };
        assert_eq!(r.subscriptions, ["a", "b"]);
        assert_eq!(seqs(&seen_a), [15, 21]);
        assert_eq!(seqs(&seen_b), [21]);
        assert_eq!(m.position("a"), Some((21, "e1".to_owned())));
        assert_eq!(m.position("b"), Some((21, "e1".to_owned())));
    }

    #[test]
    fn an_unrecovered_resume_in_a_new_run_reports_a_gap_and_starts_from_one() {
        let mut m = SubscriptionManager::new();
        let (seen, cb) = recorder();
        m.add("main", FilterSpec::default(), None, Some(cb))
            .unwrap();
        m.on_subscribed(subscribed("main", "e1", 10, true), None);
        m.on_result(new(12, &["main"])).unwrap();

        // The server restarted: run e2, its own numbering.
        let (events, send) = m.on_subscribed(subscribed("main", "e2", 3, false), None);
        let gap = Event::Gap {
            subscription: "main".to_owned(),
            since: 12,
            epoch: "e1".to_owned(),
            server_epoch: "e2".to_owned(),
        };
        assert_eq!(
            events,
            vec![
                gap.clone(),
                Event::Subscribed(subscribed("main", "e2", 3, false))
            ]
        );
        // No table: replay of the new run is all it needs.
        assert_eq!(send, None);
        assert_eq!(m.position("main"), Some((0, "e2".to_owned())));
        // The callback hears the gap before the new subscription, after what came before.
        assert_eq!(seen.lock().unwrap()[2..], [gap, events[1].clone()]);

        // Everything the new run retained is new, though numbered below the old position.
        assert!(m.on_result(new(1, &["main"])).is_some());
        assert!(m.on_result(new(2, &["main"])).is_some());
        assert_eq!(m.on_result(new(2, &["main"])), None);
        assert_eq!(seqs(&seen), [12, 1, 2]);
        assert_eq!(m.position("main"), Some((2, "e2".to_owned())));
    }

    #[test]
    fn an_unrecovered_resume_in_the_same_run_keeps_the_position() {
        let mut m = SubscriptionManager::new();
        m.add("main", FilterSpec::default(), None, None).unwrap();
        m.on_subscribed(subscribed("main", "e1", 10, true), None);

        // The history no longer reaches back to 11: results were lost, numbering goes on.
        let (events, _) = m.on_subscribed(subscribed("main", "e1", 500, false), None);
        assert_eq!(
            events[0],
            Event::Gap {
                subscription: "main".to_owned(),
                since: 10,
                epoch: "e1".to_owned(),
                server_epoch: "e1".to_owned(),
            }
        );
        assert_eq!(m.position("main"), Some((10, "e1".to_owned())));
        assert_eq!(m.on_result(new(10, &["main"])), None);
        assert!(m.on_result(new(400, &["main"])).is_some());
    }

    #[test]
    fn a_recovered_resume_is_no_gap() {
        let mut m = SubscriptionManager::new();
        m.add("main", FilterSpec::default(), None, None).unwrap();
        m.on_subscribed(subscribed("main", "e1", 10, true), None);
        m.on_result(new(11, &["main"])).unwrap();
        let (events, send) = m.on_subscribed(subscribed("main", "e1", 30, true), None);
        assert_eq!(
            events,
            vec![Event::Subscribed(subscribed("main", "e1", 30, true))]
        );
        assert_eq!(send, None);
        // The replay of 12..=30 is still to come: the position must not jump to 30.
        assert_eq!(m.position("main"), Some((11, "e1".to_owned())));
        assert!(m.on_result(new(12, &["main"])).is_some());
    }

    #[test]
    fn a_table_after_a_gap_asks_for_a_fresh_snapshot() {
        let mut m = SubscriptionManager::new();
        let table = TableHandle::default();
        m.add("t", FilterSpec::default(), Some(table.clone()), None)
            .unwrap();
        m.on_subscribed(subscribed("t", "e1", 10, true), None);
        m.on_snapshot("t", 10, vec![new(9, &["t"])]);

        let (events, send) = m.on_subscribed(subscribed("t", "e2", 4, false), None);
        assert!(matches!(&events[0], Event::Gap { since: 10, .. }));
        let msg = parse(&send.expect("a table cannot be repaired by replay"));
        assert_eq!(msg["type"], "subscribe");
        assert_eq!(msg["data"]["subscription"], "t");
        assert_eq!(msg["data"]["snapshot"], true);
        assert!(msg["data"].get("since").is_none());
        assert!(msg["data"].get("epoch").is_none());
        assert_eq!(
            m.request_subscription(msg["id"].as_str().unwrap())
                .as_deref(),
            Some("t")
        );
        // Gave up its position: a reconnect now would ask for a snapshot too.
        assert_eq!(m.position("t"), None);

        // The answer to the fresh subscribe, then its snapshot, set things right.
        let (events, send) = m.on_subscribed(subscribed("t", "e2", 4, true), None);
        assert_eq!(events.len(), 1);
        assert_eq!(send, None);
        m.on_snapshot(
            "t",
            4,
            vec![result(2, EventKind::New, "MSFT", "new_high", &["t"])],
        );
        let t = table.lock();
        assert_eq!(t.len(), 1);
        assert!(t.get("MSFT", "new_high").is_some());
        assert_eq!(t.seq, 4);
        drop(t);
        assert_eq!(m.position("t"), Some((4, "e2".to_owned())));
    }

    #[test]
    fn snapshot_and_results_keep_the_table_current() {
        let mut m = SubscriptionManager::new();
        let table = TableHandle::default();
        let (seen, cb) = recorder();
        m.add("t", FilterSpec::default(), Some(table.clone()), Some(cb))
            .unwrap();
        m.on_subscribed(subscribed("t", "e1", 5, true), None);
        let rows = vec![
            result(3, EventKind::New, "AAPL", "volume_spike", &["t"]),
            result(4, EventKind::New, "MSFT", "price_change", &["t"]),
        ];
        let ev = m.on_snapshot("t", 5, rows.clone()).unwrap();
        assert_eq!(
            ev,
            Event::Snapshot {
                subscription: "t".to_owned(),
                seq: 5,
                results: rows,
            }
        );
        assert_eq!(seen.lock().unwrap().last(), Some(&ev));
        assert_eq!(table.lock().len(), 2);
        assert_eq!(table.lock().seq, 5);
        // The snapshot stands for everything up to its seq.
        assert_eq!(m.on_result(new(5, &["t"])), None);

        m.on_result(result(6, EventKind::New, "TSLA", "new_low", &["t"]))
            .unwrap();
        let mut update = result(7, EventKind::Update, "AAPL", "volume_spike", &["t"]);
        update.score = 9.5;
        m.on_result(update).unwrap();
        m.on_result(result(8, EventKind::Clear, "MSFT", "price_change", &["t"]))
            .unwrap();
        {
            let t = table.lock();
            assert_eq!(t.len(), 2);
            assert_eq!(t.get("AAPL", "volume_spike").unwrap().score, 9.5);
            assert_eq!(t.get("AAPL", "volume_spike").unwrap().seq, 7);
            assert!(t.get("TSLA", "new_low").is_some());
            assert!(t.get("MSFT", "price_change").is_none());
            assert_eq!(t.seq, 8);
        }

        // An ad-hoc result moves the position but is no open opportunity.
        let mut adhoc = result(9, EventKind::New, "AMD", "price_change", &["t"]);
        adhoc.adhoc = true;
        m.on_result(adhoc).unwrap();
        assert!(table.lock().get("AMD", "price_change").is_none());
        assert_eq!(table.lock().seq, 9);

        // A replayed duplicate must not touch the table.
        assert_eq!(
            m.on_result(result(7, EventKind::Clear, "AAPL", "volume_spike", &["t"])),
            None
        );
        assert!(table.lock().get("AAPL", "volume_spike").is_some());
        assert_eq!(table.lock().seq, 9);

        // A later snapshot replaces every row, not merges.
        m.on_snapshot(
            "t",
            20,
            vec![result(19, EventKind::New, "NVDA", "rsi_oversold", &["t"])],
        );
        let t = table.lock();
        assert_eq!(t.len(), 1);
        assert!(t.get("NVDA", "rsi_oversold").is_some());
        assert!(t.get("AAPL", "volume_spike").is_none());
        assert_eq!(t.seq, 20);
        drop(t);
        assert_eq!(m.position("t"), Some((20, "e1".to_owned())));
    }

    #[test]
    fn a_result_that_leaves_a_table_removes_its_row() {
        let mut m = SubscriptionManager::new();
        let table = TableHandle::default();
        let (seen, cb) = recorder();
        m.add("t", FilterSpec::default(), Some(table.clone()), Some(cb))
            .unwrap();
        let (seen_u, cb_u) = recorder();
        m.add("u", FilterSpec::default(), None, Some(cb_u)).unwrap();
        m.on_subscribed(subscribed("t", "e1", 5, true), None);
        m.on_subscribed(subscribed("u", "e1", 5, true), None);
        let row = result(3, EventKind::New, "AAPL", "volume_spike", &[]);
        m.on_snapshot("t", 5, vec![row]);

        // Seq 6 drops out of t's filters and still matches u's.
        let mut update = result(6, EventKind::Update, "AAPL", "volume_spike", &["u"]);
        update.left = vec!["t".to_owned(), "gone".to_owned()];
        let Some(Event::Result(r)) = m.on_result(update) else {
            panic!("t and u take 6");
        };
        assert_eq!(
            (r.subscriptions.as_slice(), r.left.as_slice()),
            (&["u".to_owned()][..], &["t".to_owned()][..])
        );
        assert!(table.lock().is_empty());
        assert_eq!(table.lock().seq, 6);
        assert_eq!(seqs(&seen), [6]);
        assert_eq!(seqs(&seen_u), [6]);
        assert_eq!(m.position("t"), Some((6, "e1".to_owned())));

        // Left alone, and then again as a duplicate: nothing.
        let mut again = result(6, EventKind::Update, "AAPL", "volume_spike", &[]);
        again.left = vec!["t".to_owned()];
        assert_eq!(m.on_result(again), None);
    }

    #[test]
    fn replacing_without_a_table_keeps_the_position() {
        let mut m = SubscriptionManager::new();
        m.add("main", scans(&["volume_spike"]), None, None).unwrap();
        m.on_subscribed(subscribed("main", "e1", 10, true), None);
        m.on_result(new(11, &["main"])).unwrap();

        let (seen, cb) = recorder();
        m.add("main", scans(&["new_high"]), None, Some(cb)).unwrap();
        assert_eq!(m.names().collect::<Vec<_>>(), ["main"]);
        assert_eq!(m.position("main"), Some((11, "e1".to_owned())));
        let msg = parse(&m.on_connect()[0]);
        assert_eq!(msg["data"]["filters"]["scans"][0], "new_high");
        assert_eq!(msg["data"]["since"], 11);
        // The new callback is the one called.
        m.on_result(new(12, &["main"])).unwrap();
        assert_eq!(seqs(&seen), [12]);
    }

    #[test]
    fn replacing_with_a_table_starts_from_a_snapshot() {
        let mut m = SubscriptionManager::new();
        m.add("main", FilterSpec::default(), None, None).unwrap();
        m.on_subscribed(subscribed("main", "e1", 10, true), None);
        let table = TableHandle::default();
        m.add("main", FilterSpec::default(), Some(table), None)
            .unwrap();
        assert_eq!(m.position("main"), None);
        assert!(m.table("main").is_some());
        let msg = parse(&m.on_connect()[0]);
        assert_eq!(msg["data"]["snapshot"], true);
        assert!(msg["data"].get("since").is_none());
    }

    #[test]
    fn new_filters_on_a_table_drop_the_position() {
        let mut m = SubscriptionManager::new();
        add_table(&mut m, "t");
        m.on_subscribed(subscribed("t", "e1", 10, true), None);
        assert_eq!(m.set_filters("t", scans(&["new_low"])), Ok(true));
        assert_eq!(m.position("t"), None);
        let msg = parse(&m.subscribe_message("t", true).unwrap());
        assert_eq!(msg["data"]["snapshot"], true);
        assert_eq!(msg["data"]["filters"]["scans"][0], "new_low");
        assert!(msg["data"].get("since").is_none());

        assert_eq!(m.set_filters("nobody", FilterSpec::default()), Ok(false));
    }

    #[test]
    fn new_filters_without_a_table_go_on_in_place() {
        let mut m = SubscriptionManager::new();
        m.add("main", FilterSpec::default(), None, None).unwrap();
        m.on_subscribed(subscribed("main", "e1", 10, true), None);
        assert_eq!(m.set_filters("main", scans(&["new_low"])), Ok(true));
        assert_eq!(m.position("main"), Some((10, "e1".to_owned())));
        // On a live connection the server replaces it in place: no replay, no snapshot.
        let msg = parse(&m.subscribe_message("main", false).unwrap());
        assert_eq!(msg["data"]["filters"]["scans"][0], "new_low");
        assert!(msg["data"].get("since").is_none());
        assert!(msg["data"].get("epoch").is_none());
        assert!(msg["data"].get("snapshot").is_none());
        assert_eq!(m.subscribe_message("nobody", false), None);
    }

    #[test]
    fn bad_filters_are_refused() {
        let mut m = SubscriptionManager::new();
        let unknown = scans(&["nope"]);
        let empty = FilterSpec {
            symbols: Some(Vec::new()),
            ..FilterSpec::default()
        };
        let inverted = FilterSpec {
            min_price: Some(10.0),
            max_price: Some(5.0),
            ..FilterSpec::default()
        };
        for bad in [&unknown, &empty, &inverted] {
            assert!(
                matches!(m.check(bad), Err(FilterError::Invalid(_))),
                "{bad:?}"
            );
            assert!(m.add("x", bad.clone(), None, None).is_err(), "{bad:?}");
        }
        // Refused filters add nothing.
        assert_eq!(m.names().count(), 0);

        m.add("x", FilterSpec::default(), None, None).unwrap();
        assert!(m.set_filters("x", unknown).is_err());
        assert!(m.check(&FilterSpec::default()).is_ok());
    }

    #[test]
    fn the_symbol_cap_is_checked_once_set() {
        let mut m = SubscriptionManager::new();
        let three = FilterSpec {
            symbols: Some(vec!["A".into(), "B".into(), "C".into()]),
            ..FilterSpec::default()
        };
        assert!(m.check(&three).is_ok());
        m.set_max_symbols(2);
        assert_eq!(
            m.check(&three),
            Err(FilterError::TooManySymbols { given: 3, max: 2 })
        );
    }

    #[test]
    fn a_removed_subscription_takes_nothing() {
        let mut m = SubscriptionManager::new();
        let (seen, cb) = recorder();
        m.add("main", FilterSpec::default(), None, Some(cb))
            .unwrap();
        assert!(m.remove("main"));
        assert!(!m.remove("main"));
        assert_eq!(m.on_result(new(1, &["main"])), None);
        let (events, send) = m.on_subscribed(subscribed("main", "e1", 1, true), None);
        assert!(events.is_empty());
        assert_eq!(send, None);
        assert!(m.on_connect().is_empty());
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn a_quiet_subscription_stands_at_the_connections_last_result() {
        // "rare" matches nothing for a while; results for "all" still tell it how far the
        // connection got, so a resume asks only for what came after them.
        let mut m = SubscriptionManager::new();
        m.add("rare", FilterSpec::default(), None, None).unwrap();
        m.add("all", FilterSpec::default(), None, None).unwrap();
        let _ = m.on_connect();
        m.on_subscribed(subscribed("rare", "e1", 10, true), None);
        m.on_subscribed(subscribed("all", "e1", 10, true), None);
        for seq in 11..=50 {
            m.on_result(new(seq, &["all"]));
        }
        assert_eq!(m.position("rare"), Some((50, "e1".to_owned())));
        let msg = parse(&m.on_connect()[0]);
        assert_eq!(msg["data"]["since"], 50);
        // Not live until its `subscribed` on the new connection: no advance meanwhile.
        m.on_result(new(51, &["all"]));
        assert_eq!(m.position("rare"), Some((50, "e1".to_owned())));
    }
}
