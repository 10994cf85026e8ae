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

    fn apply(&mut self, r: &ResultMessage) {
        let key = (r.symbol.clone(), r.scan.clone());
        match r.event {
            EventKind::New | EventKind::Update => {
                self.rows.insert(key, r.clone());
            }
            EventKind::Clear => {
                self.rows.remove(&key);
            }
        }
        self.seq = r.seq;
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
                if epoch != s.epoch {
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

    /// A `result`: routed to each of its subscriptions that has not had it yet. Returns
    /// the result with `subscriptions` narrowed to those, or `None` when none takes it
    /// (a duplicate, or for a subscription removed meanwhile).
    pub fn on_result(&mut self, mut r: ResultMessage) -> Option<Event> {
        let mut takers = Vec::with_capacity(r.subscriptions.len());
        for name in &r.subscriptions {
            let Some(sub) = self.subs.iter_mut().find(|s| s.name == *name) else {
                continue;
            };
            if r.seq <= sub.last && sub.epoch.is_some() {
                continue;
            }
            sub.last = r.seq;
            if let Some(table) = &sub.table {
                table.lock().apply(&r);
            }
            takers.push(name.clone());
        }
        if takers.is_empty() {
            return None;
        }
        r.subscriptions = takers.clone();
        let ev = Event::Result(r);
        for name in &takers {
            if let Some(sub) = self.subs.iter_mut().find(|s| s.name == *name) {
                call(sub, &ev);
            }
        }
        Some(ev)
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
