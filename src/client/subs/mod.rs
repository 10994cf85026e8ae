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

use serde_json::json;

use super::message::{Event, ResultMessage, Subscribed};
use super::table::TableHandle;
use crate::protocol::{Filter, FilterError, FilterSpec};

/// A caller's per-subscription callback; runs on the client thread.
pub type Callback = Box<dyn FnMut(&Event) + Send>;

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
mod tests;
